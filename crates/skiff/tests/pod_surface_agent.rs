//! The pod surface the agent fills, end to end with `skiff up --runtime runc` and the real
//! kubectl: `activeDeadlineSeconds`, termination messages, `securityContext` users and
//! `runAsNonRoot`, downwardAPI/projected volumes, `resourceFieldRef` env and service links.
//!
//! Like `runc_pods.rs`, these need root, runc, the CNI plugins and docker-registry; without
//! them each test says so and passes without checking anything.

mod common;

use common::eventually;
use common::registry::Registry;
use common::runc::Runc;

#[test]
fn active_deadline_fails_the_pod_and_can_be_lowered() {
    if common::runc::skip() {
        return;
    }
    let reg = Registry::start(None);
    let image = reg.push("busybox", "1");
    let c = Runc::start();
    // `sleep` as PID 1 ignores SIGTERM, so the kill takes the whole grace period and the pod's
    // own reason shows meanwhile.
    c.apply_ok(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: deadline}}
spec:
  activeDeadlineSeconds: 3
  terminationGracePeriodSeconds: 30
  containers: [{{name: c, image: {image}, command: ["sleep", "3600"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: lowered}}
spec:
  activeDeadlineSeconds: 600
  terminationGracePeriodSeconds: 30
  containers: [{{name: c, image: {image}, command: ["sleep", "3600"]}}]
"#
    ));
    c.wait_status("deadline", "DeadlineExceeded", None, 90);
    assert_eq!(c.field("deadline", "{.status.phase}"), "Failed");
    assert_eq!(c.field("deadline", "{.status.reason}"), "DeadlineExceeded");
    assert_eq!(
        c.field("deadline", "{.status.message}"),
        "Pod was active on the node longer than the specified deadline"
    );
    let d = c.wait_describe(
        "deadline",
        "kubelet Pod was active on the node longer than the specified deadline",
        10,
    );
    assert!(d.contains("Normal DeadlineExceeded"), "{d}");
    assert!(d.contains("Stopping container c"), "{d}");

    c.wait_status("lowered", "Running", Some("1/1"), 60);
    c.kubectl(&[
        "patch",
        "pod",
        "lowered",
        "-p",
        r#"{"spec":{"activeDeadlineSeconds":2}}"#,
    ])
    .ok();
    c.wait_status("lowered", "DeadlineExceeded", None, 30);
    assert_eq!(c.field("lowered", "{.status.phase}"), "Failed");
}

#[test]
fn termination_messages_and_security_context() {
    if common::runc::skip() {
        return;
    }
    let reg = Registry::start(None);
    let image = reg.push("busybox", "1");
    let c = Runc::start();
    c.apply_ok(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: msg-file}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: {image}
    command: ["sh", "-c", "printf bye-from-file > /dev/termination-log"]
---
apiVersion: v1
kind: Pod
metadata: {{name: msg-user}}
spec:
  restartPolicy: Never
  securityContext: {{runAsUser: 2000, runAsGroup: 3000, supplementalGroups: [4000]}}
  containers:
  - name: c
    image: {image}
    securityContext: {{runAsUser: 1000}}
    terminationMessagePath: /tmp/custom-msg
    command: ["sh", "-c", "echo uid=$(id -u) gid=$(id -g) groups=$(id -G); printf written-by-1000 > /tmp/custom-msg"]
---
apiVersion: v1
kind: Pod
metadata: {{name: msg-logs}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: {image}
    terminationMessagePolicy: FallbackToLogsOnError
    command: ["sh", "-c", "echo first; echo last; exit 3"]
---
apiVersion: v1
kind: Pod
metadata: {{name: nonroot}}
spec:
  securityContext: {{runAsNonRoot: true}}
  containers: [{{name: c, image: {image}, command: ["sleep", "3600"]}}]
"#
    ));
    let terminated = "{.status.containerStatuses[0].state.terminated.message}";
    c.wait_status("msg-file", "Completed", None, 90);
    assert_eq!(c.field("msg-file", terminated), "bye-from-file");

    c.wait_status("msg-user", "Completed", None, 60);
    assert_eq!(c.field("msg-user", terminated), "written-by-1000");
    let logs = c.logs("msg-user", "c");
    assert!(logs.contains("uid=1000 gid=3000"), "{logs}");
    assert!(logs.contains("4000"), "{logs}");

    c.wait_status("msg-logs", "Error", None, 60);
    assert_eq!(c.field("msg-logs", terminated), "first\nlast\n");

    c.wait_status("nonroot", "CreateContainerConfigError", None, 60);
    let uid = c.field("nonroot", "{.metadata.uid}");
    assert_eq!(
        c.field(
            "nonroot",
            "{.status.containerStatuses[0].state.waiting.message}"
        ),
        format!(
            "container has runAsNonRoot and image will run as root (pod: \"nonroot_default({uid})\", container: c)"
        )
    );
}

#[test]
fn downward_api_projected_volumes_resource_env_and_service_links() {
    if common::runc::skip() {
        return;
    }
    let reg = Registry::start(None);
    let image = reg.push("busybox", "1");
    let c = Runc::start();
    c.kubectl(&["create", "service", "clusterip", "my-svc", "--tcp=80:8080"])
        .ok();
    let svc_ip = c
        .kubectl(&[
            "get",
            "service",
            "my-svc",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .ok()
        .stdout;
    assert!(!svc_ip.is_empty());
    c.kubectl(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=greeting=hello",
    ])
    .ok();
    c.apply_ok(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: info
  labels: {{app: info, tier: web}}
  annotations: {{note: kept}}
spec:
  containers:
  - name: c
    image: {image}
    resources:
      limits: {{cpu: 500m, memory: 64Mi}}
      requests: {{cpu: 250m, memory: 32Mi}}
    env:
    - name: MEM_LIMIT_MI
      valueFrom: {{resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}}}
    - name: CPU_LIMIT_M
      valueFrom: {{resourceFieldRef: {{resource: limits.cpu, divisor: 1m}}}}
    - name: CPU_REQUEST
      valueFrom: {{resourceFieldRef: {{containerName: c, resource: requests.cpu, divisor: 1m}}}}
    - name: MY_SVC_SERVICE_PORT
      value: explicit-wins
    command:
    - sh
    - -c
    - |
      env | sort
      echo "labels<$(cat /etc/podinfo/labels)>"
      echo "name<$(cat /etc/podinfo/name)>"
      echo "mem<$(cat /etc/podinfo/mem)>"
      echo "mode<$(stat -c %a /etc/podinfo/name)>"
      echo "greeting<$(cat /etc/all/greeting)>"
      echo "ns<$(cat /etc/all/ns)>"
      echo "pmode<$(stat -c %a /etc/all/ns)>"
      echo done
      sleep 3600
    volumeMounts:
    - {{name: podinfo, mountPath: /etc/podinfo}}
    - {{name: all, mountPath: /etc/all}}
  volumes:
  - name: podinfo
    downwardAPI:
      items:
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
      - {{path: name, fieldRef: {{fieldPath: metadata.name}}}}
      - {{path: mem, resourceFieldRef: {{containerName: c, resource: limits.memory, divisor: 1Mi}}}}
  - name: all
    projected:
      defaultMode: 0600
      sources:
      - configMap: {{name: cfg}}
      - downwardAPI:
          items: [{{path: ns, fieldRef: {{fieldPath: metadata.namespace}}}}]
"#
    ));
    c.wait_status("info", "Running", Some("1/1"), 90);
    let logs = c.wait_logs("info", "c", "done", 20);
    for want in [
        "MEM_LIMIT_MI=64\n",
        "CPU_LIMIT_M=500\n",
        "CPU_REQUEST=250\n",
        &format!("MY_SVC_SERVICE_HOST={svc_ip}\n"),
        "MY_SVC_SERVICE_PORT=explicit-wins\n",
        "MY_SVC_SERVICE_PORT_80_8080=80\n",
        &format!("MY_SVC_PORT=tcp://{svc_ip}:80\n"),
        &format!("MY_SVC_PORT_80_TCP=tcp://{svc_ip}:80\n"),
        "MY_SVC_PORT_80_TCP_PROTO=tcp\n",
        "MY_SVC_PORT_80_TCP_PORT=80\n",
        &format!("MY_SVC_PORT_80_TCP_ADDR={svc_ip}\n"),
        "KUBERNETES_SERVICE_HOST=",
        "KUBERNETES_SERVICE_PORT=",
        "labels<app=\"info\"\ntier=\"web\">",
        "name<info>",
        "mem<64>",
        "mode<644>",
        "greeting<hello>",
        "ns<default>",
        "pmode<600>",
    ] {
        assert!(logs.contains(want), "missing {want:?} in:\n{logs}");
    }

    // A pod that opts out of service links still gets the kubernetes Service's variables.
    c.apply_ok(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: nolinks}}
spec:
  enableServiceLinks: false
  containers:
  - name: c
    image: {image}
    command: ["sh", "-c", "env | sort; echo done; sleep 3600"]
"#
    ));
    let logs = c.wait_logs("nolinks", "c", "done", 90);
    assert!(!logs.contains("MY_SVC_"), "{logs}");
    assert!(logs.contains("KUBERNETES_SERVICE_HOST="), "{logs}");

    // Status fields the agent reports.
    let ips = eventually(10, || {
        let v = c.field("info", "{.status.hostIP} {.status.hostIPs[0].ip} {.status.podIP} {.status.podIPs[0].ip} {.status.qosClass}");
        (v.split(' ').filter(|s| !s.is_empty()).count() == 5).then_some(v)
    });
    assert!(ips.ends_with("Burstable"), "{ips}");
}
