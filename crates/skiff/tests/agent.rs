//! The node agent through the real `skiff up` (host runtime) and the real kubectl: the node,
//! pod lifecycles as `kubectl get pods -w` and `kubectl describe` show them, logs, probes, hooks,
//! deletion, and re-adoption after an agent restart.
//!
//! The host runtime runs containers as plain processes: a pod's volumes appear under
//! `$SKIFF_POD_ROOT` and a mount at `/data` is exported as `$SKIFF_MOUNT_DATA`. Every test ends
//! by deleting its pods ([`Cluster`]), and the harness kills any container process left behind.

mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{Skiff, eventually, squash, table};

/// `kubectl get pods -w`, open before the test creates anything: an unschedulable marker pod
/// (`zz-marker`) makes kubectl print as soon as it has listed.
fn watch_pods(s: &Skiff) -> common::Watch {
    s.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: zz-marker}
spec:
  nodeSelector: {skiff.test/nowhere: "true"}
  containers: [{name: c, image: busybox:1.36, command: ["true"]}]
"#,
    )
    .ok();
    let w = s.watch(&["pods"]);
    w.wait_for(30, "the marker pod", |l| l.starts_with("zz-marker"));
    w
}

/// The STATUS column of the watch lines about `pod`, in order.
fn statuses_of(w: &common::Watch, pod: &str) -> Vec<String> {
    w.lines()
        .iter()
        .filter(|l| l.split_whitespace().next() == Some(pod))
        .filter_map(|l| l.split_whitespace().nth(2).map(String::from))
        .collect()
}

/// A pod with one container running `sh -c SCRIPT`.
fn shell_pod(name: &str, script: &str, extra_spec: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 5
  {extra_spec}
  containers:
  - name: app
    image: busybox:1.36
    command: ["sh", "-c", {script:?}]
"#
    )
}

/// `GET /containerLogs/default/<pod>/<container>?<query>` straight from the agent of the pod's
/// node (what the API server proxies `kubectl logs` to): (HTTP status, body).
fn agent_logs(s: &Skiff, pod: &str, container: &str, query: &str) -> (u16, String) {
    let node = s
        .kubectl(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
        .ok()
        .stdout;
    let port = s
        .kubectl(&[
            "get",
            "node",
            &node,
            "-o",
            "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}",
        ])
        .ok()
        .stdout;
    let out = std::process::Command::new("curl")
        .args(["-sk", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {}", s.agent_token(&node)))
        .arg(format!(
            "https://127.0.0.1:{port}/containerLogs/default/{pod}/{container}?{query}"
        ))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.parse().unwrap_or(0), body.to_string())
}

fn kubelet_version_of(s: &Skiff) -> String {
    s.kubectl(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.nodeInfo.kubeletVersion}",
    ])
    .ok()
    .stdout
}

#[test]
fn the_node_is_ready_with_the_machines_capacity() {
    let s = Cluster::start();
    assert!(
        s.ready_lines.iter().any(|l| l.contains("runtime: host")),
        "{:?}",
        s.ready_lines
    );
    let row = eventually(30, || {
        let t = table(&s.kubectl(&["get", "nodes", "-o", "wide"]).ok().stdout);
        (t.len() == 2 && t[1][1] == "Ready").then(|| t[1].clone())
    });
    // NAME STATUS ROLES AGE VERSION INTERNAL-IP EXTERNAL-IP OS-IMAGE… KERNEL CONTAINER-RUNTIME
    assert_eq!(row[2], "<none>");
    assert_eq!(row[4], "v1.32.0-skiff");
    assert_eq!(row[5], "127.0.0.1");
    assert_eq!(row.last().unwrap(), "host://0.1.0");
    let node = row[0].clone();
    assert_eq!(kubelet_version_of(&s), "v1.32.0-skiff");

    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .map(|s| {
            s.trim()
                .split(',')
                .map(|p| match p.split_once('-') {
                    Some((a, b)) => b.parse::<u32>().unwrap() - a.parse::<u32>().unwrap() + 1,
                    None => 1,
                })
                .sum::<u32>()
        })
        .unwrap();
    let get = |path: &str| {
        s.kubectl(&["get", "node", &node, "-o", &format!("jsonpath={path}")])
            .ok()
            .stdout
    };
    assert_eq!(get("{.status.capacity.cpu}"), cpus.to_string());
    assert_eq!(get("{.status.capacity.pods}"), "110");
    assert_eq!(get("{.status.allocatable.pods}"), "110");
    let mem_ki: u64 = get("{.status.capacity.memory}")
        .trim_end_matches("Ki")
        .parse()
        .unwrap();
    let alloc_ki: u64 = get("{.status.allocatable.memory}")
        .trim_end_matches("Ki")
        .parse()
        .unwrap();
    assert_eq!(
        mem_ki - alloc_ki,
        100 * 1024,
        "allocatable = capacity - 100Mi"
    );
    assert!(
        get("{.status.daemonEndpoints.kubeletEndpoint.Port}")
            .parse::<u16>()
            .unwrap()
            > 0
    );
    assert_eq!(get("{.metadata.labels.kubernetes\\.io/os}"), "linux");
    assert_eq!(get("{.metadata.labels.kubernetes\\.io/hostname}"), node);

    let d = squash(&s.kubectl(&["describe", "node", &node]).ok().stdout);
    for text in [
        "MemoryPressure False",
        "KubeletHasSufficientMemory kubelet has sufficient memory available",
        "DiskPressure False",
        "KubeletHasNoDiskPressure kubelet has no disk pressure",
        "PIDPressure False",
        "KubeletHasSufficientPID kubelet has sufficient PID available",
        "Ready True",
        "KubeletReady kubelet is posting ready status",
        "InternalIP: 127.0.0.1",
        "Kubelet Version: v1.32.0-skiff",
        "Container Runtime Version: host://0.1.0",
        "Operating System: linux",
        &format!("HolderIdentity: {node}"),
    ] {
        assert!(d.contains(text), "missing {text:?} in:\n{d}");
    }
    let lease = s
        .kubectl(&[
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            &node,
            "-o",
            "jsonpath={.spec.holderIdentity} {.spec.leaseDurationSeconds}",
        ])
        .ok()
        .stdout;
    assert_eq!(lease, format!("{node} 40"));
}

#[test]
fn a_pod_starts_with_the_kubelets_events() {
    let s = Cluster::start();
    let w = watch_pods(&s);
    s.apply(&shell_pod("web", "echo hello; sleep 600", "")).ok();
    let row = s.wait_status("web", "Running", Some("1/1"), 60);
    assert_eq!(row[3], "0");
    w.wait_for(30, "Running 1/1", |l| {
        let c: Vec<&str> = l.split_whitespace().collect();
        c.first() == Some(&"web") && c.get(1) == Some(&"1/1") && c.get(2) == Some(&"Running")
    });
    let statuses = statuses_of(&w, "web");
    let first = |s: &str| statuses.iter().position(|x| x == s);
    let (p, c, r) = (
        first("Pending"),
        first("ContainerCreating"),
        first("Running"),
    );
    assert!(
        p.is_some() && c.is_some() && r.is_some() && p < c && c < r,
        "{statuses:?}"
    );

    let wide = table(&s.kubectl(&["get", "pod", "web", "-o", "wide"]).ok().stdout);
    assert_eq!(wide[1][5], "127.0.0.1", "{wide:?}");
    assert_eq!(s.field("web", "{.status.hostIP}"), "127.0.0.1");
    assert!(
        s.field("web", "{.status.containerStatuses[0].containerID}")
            .starts_with("host://")
    );
    assert_eq!(
        s.field("web", "{.status.containerStatuses[0].started}"),
        "true"
    );
    assert_eq!(s.field("web", "{.status.phase}"), "Running");
    let conds = s.field(
        "web",
        "{range .status.conditions[*]}{.type}={.status} {end}",
    );
    assert_eq!(
        conds.trim(),
        "PodReadyToStartContainers=True Initialized=True Ready=True ContainersReady=True PodScheduled=True"
    );

    let d = s.wait_describe("web", "Started container app", 30);
    let order = [
        "Normal Scheduled",
        "Normal Pulled",
        "Container image \"busybox:1.36\" already present on machine",
        "Normal Created",
        "Created container app",
        "Normal Started",
        "Started container app",
    ];
    for text in order {
        assert!(d.contains(text), "missing {text:?} in:\n{d}");
    }
    assert!(d.contains("kubelet"), "{d}");
    // Container events name their container.
    let paths = s
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=web,reason=Started",
            "-o",
            "jsonpath={.items[*].involvedObject.fieldPath} {.items[*].source.component}",
        ])
        .ok()
        .stdout;
    assert_eq!(paths, "spec.containers{app} kubelet");
}

#[test]
fn logs_tail_timestamps_containers_previous_and_follow() {
    let s = Cluster::start();
    s.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: logs}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: a
    image: busybox:1.36
    command: ["sh", "-c", "echo a-one; echo a-two; echo a-three; sleep 600"]
  - name: b
    image: busybox:1.36
    command: ["sh", "-c", "n=$(cat $SKIFF_POD_ROOT/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > $SKIFF_POD_ROOT/n; echo run-$n; sleep 2; exit 1"]
"#,
    )
    .ok();
    let logs = |args: &[&str]| {
        let mut a = vec!["logs", "logs"];
        a.extend_from_slice(args);
        s.kubectl(&a)
    };
    let probe = logs(&["-c", "a"]);
    assert!(
        !probe
            .stderr
            .contains("the server could not find the requested resource"),
        "the API server does not route pods/{{name}}/log (its resource table lacks the `log` \
         subresource of pods): {}",
        probe.stderr
    );
    let all = eventually(30, || {
        let out = logs(&["-c", "a"]);
        (out.code == 0 && out.stdout.lines().count() == 3).then_some(out.stdout)
    });
    assert_eq!(all, "a-one\na-two\na-three\n");
    assert_eq!(logs(&["-c", "a", "--tail=1"]).ok().stdout, "a-three\n");
    let stamped = logs(&["-c", "a", "--tail=2", "--timestamps"]).ok().stdout;
    let lines: Vec<&str> = stamped.lines().collect();
    assert_eq!(lines.len(), 2, "{stamped}");
    for (line, text) in lines.iter().zip(["a-two", "a-three"]) {
        let (ts, rest) = line.split_once(' ').unwrap();
        assert_eq!(rest, text);
        assert!(
            ts.ends_with('Z') && ts.contains('T') && ts.len() == 30,
            "{ts}"
        );
    }
    // Without -c kubectl picks the first container.
    let out = logs(&[]).ok();
    assert_eq!(out.stdout, "a-one\na-two\na-three\n");

    // The previous instance of a container that restarted.
    let err = logs(&["-c", "a", "--previous"]);
    assert_ne!(err.code, 0);
    assert!(
        err.stderr
            .contains("previous terminated container \"a\" in pod \"logs\" not found"),
        "{}",
        err.stderr
    );
    let prev = eventually(60, || {
        let out = logs(&["-c", "b", "--previous"]);
        (out.code == 0 && out.stdout.starts_with("run-")).then_some(out.stdout)
    });
    assert!(
        prev.trim()
            .trim_start_matches("run-")
            .parse::<u32>()
            .is_ok(),
        "{prev}"
    );

    // follow: streams until the container exits.
    s.apply(&shell_pod(
        "follow",
        "sleep 1; for i in 1 2 3; do echo line-$i; sleep 1; done",
        "restartPolicy: Never",
    ))
    .ok();
    s.wait_status("follow", "Running", None, 60);
    let started = Instant::now();
    let out = s.kubectl(&["logs", "-f", "follow"]).ok();
    assert_eq!(out.stdout, "line-1\nline-2\nline-3\n");
    assert!(started.elapsed() < Duration::from_secs(60));
    s.wait_status("follow", "Completed", None, 30);
    assert_eq!(
        s.kubectl(&["logs", "follow"]).ok().stdout,
        "line-1\nline-2\nline-3\n"
    );
}

#[test]
fn the_log_endpoint_wants_the_token_and_says_why_it_cannot_serve() {
    let s = Cluster::start();
    let port = eventually(30, || {
        let p = s
            .kubectl(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={.items[0].status.daemonEndpoints.kubeletEndpoint.Port}",
            ])
            .ok()
            .stdout;
        p.parse::<u16>().ok()
    });
    let curl = |auth: Option<&str>, path: &str| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sk", "-w", "\n%{http_code}"]);
        if let Some(t) = auth {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        cmd.arg(format!("https://127.0.0.1:{port}{path}"));
        let out = cmd.output().expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(curl(None, "/containerLogs/default/x/y").ends_with("\n401"));
    assert!(curl(Some("wrong"), "/containerLogs/default/x/y").ends_with("\n401"));
    let node = s
        .kubectl(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"])
        .ok()
        .stdout;
    let token = s.agent_token(&node);
    // Another node's token is refused too.
    let other = s.agent_token("another-node");
    assert!(curl(Some(&other), "/containerLogs/default/x/y").ends_with("\n401"));
    // A pod this node does not run (yet).
    let out = curl(Some(&token), "/containerLogs/default/nope/c");
    assert!(out.ends_with("\n400"), "{out}");
    assert!(
        out.contains(
            "container \\\"c\\\" in pod \\\"nope\\\" is waiting to start: ContainerCreating"
        ),
        "{out}"
    );
    // Containers still waiting: their reason.
    s.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: waiter}
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - {name: slow, image: busybox:1.36, command: ["sh", "-c", "sleep 600"]}
  containers:
  - {name: app, image: busybox:1.36, command: ["sh", "-c", "sleep 600"]}
"#,
    )
    .ok();
    s.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: noconfig}
spec:
  containers:
  - name: app
    image: busybox:1.36
    command: ["sh", "-c", "sleep 600"]
    env: [{name: X, valueFrom: {configMapKeyRef: {name: missing, key: k}}}]
"#,
    )
    .ok();
    s.wait_status("waiter", "Init:0/1", None, 60);
    let out = eventually(30, || {
        let out = curl(Some(&token), "/containerLogs/default/waiter/app");
        out.contains("waiting to start").then_some(out)
    });
    assert!(out.ends_with("\n400"), "{out}");
    assert!(
        out.contains(
            "container \\\"app\\\" in pod \\\"waiter\\\" is waiting to start: PodInitializing"
        ),
        "{out}"
    );
    s.wait_status("noconfig", "CreateContainerConfigError", None, 60);
    assert_eq!(
        s.field(
            "noconfig",
            "{.status.containerStatuses[0].state.waiting.message}"
        ),
        "configmap \"missing\" not found"
    );
    let out = curl(Some(&token), "/containerLogs/default/noconfig/app");
    assert!(
        out.contains("is waiting to start: CreateContainerConfigError"),
        "{out}"
    );
    let d = s.wait_describe("noconfig", "Error: configmap \"missing\" not found", 30);
    assert!(d.contains("Warning Failed"), "{d}");
}

#[test]
fn a_crashing_container_backs_off() {
    let s = Cluster::start();
    let w = watch_pods(&s);
    s.apply(&shell_pod("crash", "echo crashing; exit 1", ""))
        .ok();
    let row = eventually(90, || {
        let row = s.row("crash");
        let restarts: u32 = row.get(3)?.parse().ok()?;
        (row[2] == "CrashLoopBackOff" && restarts >= 2).then_some(row)
    });
    // RESTARTS reads like `2 (5s ago)`.
    assert!(row[4].starts_with('(') && row[5] == "ago)", "{row:?}");
    w.wait_for(30, "Error", |l| {
        l.split_whitespace().nth(2) == Some("Error")
    });
    w.wait_for(30, "CrashLoopBackOff", |l| {
        l.split_whitespace().nth(2) == Some("CrashLoopBackOff")
    });
    let d = s.wait_describe("crash", "Warning BackOff", 30);
    assert!(
        d.contains("Back-off restarting failed container app in pod crash_default("),
        "{d}"
    );
    let waiting = s.field(
        "crash",
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    assert!(
        waiting.starts_with("back-off ")
            && waiting.contains("restarting failed container=app pod=crash_default("),
        "{waiting}"
    );
    assert_eq!(
        s.field(
            "crash",
            "{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "1"
    );
    assert_eq!(
        s.field(
            "crash",
            "{.status.containerStatuses[0].lastState.terminated.reason}"
        ),
        "Error"
    );
    assert_eq!(s.field("crash", "{.status.phase}"), "Running");
    assert_eq!(
        agent_logs(&s, "crash", "app", ""),
        (200, "crashing\n".into())
    );
}

#[test]
fn restart_policies_never_and_on_failure() {
    let s = Cluster::start();
    s.apply(&shell_pod("ok", "echo done", "restartPolicy: Never"))
        .ok();
    s.apply(&shell_pod("fails", "exit 3", "restartPolicy: Never"))
        .ok();
    s.apply(&shell_pod(
        "retry",
        "if [ -e $SKIFF_POD_ROOT/again ]; then exit 0; fi; touch $SKIFF_POD_ROOT/again; exit 1",
        "restartPolicy: OnFailure",
    ))
    .ok();
    let row = s.wait_status("ok", "Completed", Some("0/1"), 60);
    assert_eq!(row[3], "0");
    assert_eq!(s.field("ok", "{.status.phase}"), "Succeeded");
    s.wait_status("fails", "Error", Some("0/1"), 60);
    assert_eq!(s.field("fails", "{.status.phase}"), "Failed");
    assert_eq!(
        s.field(
            "fails",
            "{.status.containerStatuses[0].state.terminated.exitCode}"
        ),
        "3"
    );
    let row = s.wait_status("retry", "Completed", None, 60);
    assert_eq!(row[3], "1", "{row:?}");
    assert_eq!(s.field("retry", "{.status.phase}"), "Succeeded");
    // Finished pods stay finished (and keep their logs).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.row("ok")[2], "Completed");
    assert_eq!(s.row("fails")[3], "0");
    assert_eq!(agent_logs(&s, "ok", "app", ""), (200, "done\n".into()));
    let conds = s.field(
        "ok",
        "{range .status.conditions[*]}{.type}={.status}/{.reason} {end}",
    );
    assert!(conds.contains("Ready=False/PodCompleted"), "{conds}");
}

#[test]
fn init_containers_run_in_order_before_the_app() {
    let s = Cluster::start();
    let w = watch_pods(&s);
    s.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: init}
spec:
  terminationGracePeriodSeconds: 2
  volumes: [{name: data, emptyDir: {}}]
  initContainers:
  - name: first
    image: busybox:1.36
    command: ["sh", "-c", "sleep 1; echo one > $SKIFF_MOUNT_DATA/order"]
    volumeMounts: [{name: data, mountPath: /data}]
  - name: second
    image: busybox:1.36
    command: ["sh", "-c", "sleep 1; echo two >> $SKIFF_MOUNT_DATA/order"]
    volumeMounts: [{name: data, mountPath: /data}]
  containers:
  - name: app
    image: busybox:1.36
    command: ["sh", "-c", "cat $SKIFF_MOUNT_DATA/order; sleep 600"]
    volumeMounts: [{name: data, mountPath: /data}]
"#,
    )
    .ok();
    s.wait_status("init", "Running", Some("1/1"), 60);
    w.wait_for(30, "Running", |l| {
        l.split_whitespace().nth(2) == Some("Running")
    });
    let statuses = statuses_of(&w, "init");
    let first = |s: &str| {
        statuses
            .iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("no {s} in {statuses:?}"))
    };
    assert!(first("Init:0/2") < first("Init:1/2"), "{statuses:?}");
    assert!(first("Init:1/2") < first("PodInitializing"), "{statuses:?}");
    assert!(first("PodInitializing") < first("Running"), "{statuses:?}");
    assert_eq!(
        eventually(30, || {
            let (code, body) = agent_logs(&s, "init", "app", "");
            (code == 200 && !body.is_empty()).then_some(body)
        }),
        "one\ntwo\n"
    );
    assert_eq!(
        s.field(
            "init",
            "{.status.initContainerStatuses[*].state.terminated.reason}"
        ),
        "Completed Completed"
    );

    // A failing init container under restartPolicy Never fails the pod.
    s.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: badinit}
spec:
  restartPolicy: Never
  initContainers:
  - {name: boom, image: busybox:1.36, command: ["sh", "-c", "exit 1"]}
  containers:
  - {name: app, image: busybox:1.36, command: ["sh", "-c", "sleep 600"]}
"#,
    )
    .ok();
    s.wait_status("badinit", "Init:Error", None, 60);
    assert_eq!(s.field("badinit", "{.status.phase}"), "Failed");
}

#[test]
fn a_failing_liveness_probe_restarts_the_container() {
    let s = Cluster::start();
    s.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: live}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: busybox:1.36
    command: ["sh", "-c", "sleep 600"]
    livenessProbe:
      exec: {command: ["sh", "-c", "echo not alive; exit 1"]}
      periodSeconds: 1
      failureThreshold: 2
"#,
    )
    .ok();
    let d = s.wait_describe("live", "Liveness probe failed: not alive", 60);
    assert!(d.contains("Warning Unhealthy"), "{d}");
    let d = s.wait_describe(
        "live",
        "Container app failed liveness probe, will be restarted",
        60,
    );
    assert!(d.contains("Normal Killing"), "{d}");
    let restarts = eventually(90, || {
        let n: u32 = s
            .field("live", "{.status.containerStatuses[0].restartCount}")
            .parse()
            .ok()?;
        (n >= 2).then_some(n)
    });
    assert!(restarts >= 2);
}

#[test]
fn a_readiness_probe_flips_ready() {
    let s = Cluster::start();
    let rootfile = s.dir.path().join("root-of-ready");
    s.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: ready}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: busybox:1.36
    env: [{{name: ROOTFILE, value: "{rootfile}"}}]
    command: ["sh", "-c", "echo $SKIFF_POD_ROOT > $ROOTFILE; sleep 600"]
    readinessProbe:
      exec: {{command: ["sh", "-c", "test -e $SKIFF_POD_ROOT/ready"]}}
      periodSeconds: 1
"#,
        rootfile = rootfile.display()
    ))
    .ok();
    s.wait_status("ready", "Running", Some("0/1"), 60);
    let root = eventually(30, || {
        std::fs::read_to_string(&rootfile)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    });
    let flag = std::path::Path::new(&root).join("ready");
    std::fs::write(&flag, "").unwrap();
    s.wait_status("ready", "Running", Some("1/1"), 30);
    assert_eq!(
        s.field("ready", "{.status.conditions[?(@.type==\"Ready\")].status}"),
        "True"
    );
    std::fs::remove_file(&flag).unwrap();
    s.wait_status("ready", "Running", Some("0/1"), 30);
    let d = s.wait_describe("ready", "Readiness probe failed", 10);
    assert!(d.contains("Warning Unhealthy"), "{d}");
    assert_eq!(
        s.field("ready", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
}

#[test]
fn http_and_tcp_probes() {
    assert!(
        std::path::Path::new("/bin/busybox").exists(),
        "this test serves HTTP with busybox httpd"
    );
    let s = Cluster::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    s.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: busybox:1.36
    command: ["sh", "-c", "echo ok > $SKIFF_POD_ROOT/index.html; exec /bin/busybox httpd -f -p 127.0.0.1:{port} -h $SKIFF_POD_ROOT"]
    ports: [{{name: http, containerPort: {port}}}]
    readinessProbe:
      httpGet: {{path: /index.html, port: http}}
      periodSeconds: 1
    livenessProbe:
      tcpSocket: {{port: {port}}}
      periodSeconds: 1
  - name: probe-missing
    image: busybox:1.36
    command: ["sh", "-c", "sleep 600"]
    readinessProbe:
      httpGet: {{path: /missing, port: {port}, host: 127.0.0.1}}
      periodSeconds: 1
"#
    ))
    .ok();
    let d = s.wait_describe(
        "web",
        "Readiness probe failed: HTTP probe failed with statuscode: 404",
        60,
    );
    assert!(d.contains("Warning Unhealthy"), "{d}");
    eventually(30, || {
        let ready = s.field(
            "web",
            "{.status.containerStatuses[?(@.name==\"app\")].ready}",
        );
        (ready == "true").then_some(())
    });
    // Still 1/2: the other container's probe keeps failing; the TCP liveness probe passes.
    std::thread::sleep(Duration::from_secs(3));
    let row = s.row("web");
    assert_eq!(
        (row[1].as_str(), row[2].as_str(), row[3].as_str()),
        ("1/2", "Running", "0")
    );
}

#[test]
fn hooks_run_after_start_and_before_stop() {
    let s = Cluster::start();
    let marks = s.dir.path().join("marks");
    let pod = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: hooks}}
spec:
  terminationGracePeriodSeconds: 10
  containers:
  - name: app
    image: busybox:1.36
    env: [{{name: MARKS, value: "{marks}"}}]
    command: ["sh", "-c", "trap 'echo term >> $MARKS; exit 0' TERM; while true; do sleep 0.1; done"]
    lifecycle:
      postStart:
        exec: {{command: ["sh", "-c", "echo poststart >> $(MARKS)"]}}
      preStop:
        exec: {{command: ["sh", "-c", "echo prestop >> $MARKS; sleep 2"]}}
"#,
        marks = marks.display()
    );
    s.apply(&pod).ok();
    s.wait_status("hooks", "Running", Some("1/1"), 60);
    assert_eq!(std::fs::read_to_string(&marks).unwrap(), "poststart\n");

    let w = watch_pods(&s);
    let deleted_at = Instant::now();
    let del = s.kubectl(&["delete", "pod", "hooks", "--wait=false"]).ok();
    assert!(del.stdout.contains("deleted"), "{}", del.stdout);
    eventually(30, || {
        statuses_of(&w, "hooks")
            .contains(&"Terminating".to_string())
            .then_some(())
    });
    eventually(60, || s.gone("hooks").then_some(()));
    // preStop ran first (and took its 2 s), then SIGTERM.
    assert_eq!(
        std::fs::read_to_string(&marks).unwrap(),
        "poststart\nprestop\nterm\n"
    );
    assert!(deleted_at.elapsed() >= Duration::from_secs(2));
    let events = s
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=hooks,reason=Killing",
            "-o",
            "jsonpath={.items[*].message}",
        ])
        .ok()
        .stdout;
    assert_eq!(events, "Stopping container app");

    // A failing postStart hook kills the container.
    s.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: badhook}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: busybox:1.36
    command: ["sh", "-c", "sleep 600"]
    lifecycle:
      postStart:
        exec: {command: ["sh", "-c", "echo nope; exit 1"]}
"#,
    )
    .ok();
    let d = s.wait_describe("badhook", "Warning FailedPostStartHook", 60);
    assert!(d.contains("PostStartHook failed"), "{d}");
    s.wait_describe("badhook", "Normal Killing", 30);
    let waiting = eventually(60, || {
        let m = s.field(
            "badhook",
            "{.status.containerStatuses[0].state.waiting.reason}",
        );
        (m == "PostStartHookError" || m == "CrashLoopBackOff").then_some(m)
    });
    assert!(!waiting.is_empty());
}

#[test]
fn a_container_ignoring_sigterm_is_killed_after_the_grace_period() {
    let s = Cluster::start();
    let pidfile = s.dir.path().join("pid");
    s.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: stubborn}}
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: app
    image: busybox:1.36
    command: ["sh", "-c", "trap '' TERM; echo $$$$ > {pid}; while true; do sleep 0.1; done"]
"#,
        pid = pidfile.display()
    ))
    .ok();
    s.wait_status("stubborn", "Running", Some("1/1"), 60);
    let pid = eventually(30, || {
        std::fs::read_to_string(&pidfile)
            .ok()?
            .trim()
            .parse::<u32>()
            .ok()
    });
    let deleted_at = Instant::now();
    s.kubectl(&["delete", "pod", "stubborn", "--wait=false"])
        .ok();
    assert_eq!(s.row("stubborn")[2], "Terminating");
    eventually(60, || s.gone("stubborn").then_some(()));
    assert!(
        deleted_at.elapsed() >= Duration::from_secs(3),
        "SIGKILL came before the grace period"
    );
    eventually(10, || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
}

#[test]
fn an_agent_restart_readopts_running_pods() {
    let mut s = Cluster::start();
    s.apply(&shell_pod("keep", "echo kept; sleep 600", "")).ok();
    s.wait_status("keep", "Running", Some("1/1"), 60);
    let id = s.field("keep", "{.status.containerStatuses[0].containerID}");
    assert!(id.starts_with("host://"));
    s.kill9();
    s.launch();
    // The restarted agent reports again and finds the container still running.
    std::thread::sleep(Duration::from_secs(3));
    let row = s.wait_status("keep", "Running", Some("1/1"), 30);
    assert_eq!(row[3], "0");
    assert_eq!(
        s.field("keep", "{.status.containerStatuses[0].containerID}"),
        id
    );
    assert_eq!(
        s.field("keep", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
    assert_eq!(agent_logs(&s, "keep", "app", ""), (200, "kept\n".into()));
    let started = s
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=keep,reason=Started",
            "-o",
            "jsonpath={.items[*].count}",
        ])
        .ok()
        .stdout;
    assert_eq!(started, "1", "the container was started again");
    // The adopted container is stopped on deletion.
    s.kubectl(&["delete", "pod", "keep", "--grace-period=2"])
        .ok();
    assert!(s.gone("keep"));
}

/// A `skiff agent` process joining a cluster's server.
struct RemoteAgent {
    cmd: Vec<std::ffi::OsString>,
    child: Option<std::process::Child>,
}

impl RemoteAgent {
    fn new(s: &Skiff, node: &str, state: &std::path::Path) -> RemoteAgent {
        let mut cmd: Vec<std::ffi::OsString> = [
            "agent",
            "--server",
            &s.server,
            "--token",
            &s.admin_token(),
            "--node-name",
            node,
            "--port",
            "0",
            "--runtime",
            "host",
            "--ca-file",
        ]
        .iter()
        .map(|a| a.into())
        .collect();
        cmd.push(s.data_dir().join("pki/ca.crt").into());
        cmd.push("--state-dir".into());
        cmd.push(state.into());
        let mut a = RemoteAgent { cmd, child: None };
        a.start();
        a
    }

    fn start(&mut self) {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(&self.cmd)
            .env("SKIFF_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start skiff agent");
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RemoteAgent {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[test]
fn skiff_agent_joins_a_remote_server() {
    // A cluster without its own agent; a separate `skiff agent` process joins it.
    let s = Skiff::start_with(&[]);
    let state = s.dir.path().join("remote-agent");
    let mut agent = RemoteAgent::new(&s, "remote", &state);
    eventually(60, || {
        let t = table(&s.kubectl(&["get", "nodes"]).ok().stdout);
        (t.len() == 2 && t[1][0] == "remote" && t[1][1] == "Ready").then_some(())
    });
    let pidfile = s.dir.path().join("far.pid");
    s.apply(&shell_pod(
        "far",
        &format!(
            "echo $$$$ > {}; echo from-remote; sleep 600",
            pidfile.display()
        ),
        "",
    ))
    .ok();
    eventually(60, || {
        let row = table(&s.kubectl(&["get", "pod", "far", "--no-headers"]).stdout)
            .into_iter()
            .next()?;
        (row[2] == "Running" && row[1] == "1/1").then_some(())
    });
    assert_eq!(
        s.kubectl(&["get", "pod", "far", "-o", "jsonpath={.spec.nodeName}"])
            .ok()
            .stdout,
        "remote"
    );
    let logs = eventually(30, || {
        let (code, body) = agent_logs(&s, "far", "app", "");
        (code == 200 && !body.is_empty()).then_some(body)
    });
    assert_eq!(logs, "from-remote\n");

    // The pod is force-deleted while its agent is down: the agent stops it when it comes back.
    let pid = eventually(30, || {
        std::fs::read_to_string(&pidfile)
            .ok()?
            .trim()
            .parse::<u32>()
            .ok()
    });
    agent.kill9();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    s.kubectl(&["delete", "pod", "far", "--grace-period=0", "--force"])
        .ok();
    agent.start();
    eventually(60, || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
}

#[test]
fn env_from_config_maps_secrets_and_fields_and_a_missing_key() {
    let s = Cluster::start();
    s.kubectl(&["create", "configmap", "cfg", "--from-literal=colour=blue"])
        .ok();
    s.kubectl(&[
        "create",
        "secret",
        "generic",
        "sec",
        "--from-literal=pass=s3cret",
    ])
    .ok();
    s.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: envs, labels: {tier: front}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:1.36
    command: ["sh", "-c", "echo colour=$COLOUR pass=$PASS pod=$POD tier=$TIER; sleep 600"]
    env:
    - {name: COLOUR, valueFrom: {configMapKeyRef: {name: cfg, key: colour}}}
    - {name: PASS, valueFrom: {secretKeyRef: {name: sec, key: pass}}}
    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: TIER, valueFrom: {fieldRef: {fieldPath: "metadata.labels['tier']"}}}
---
apiVersion: v1
kind: Pod
metadata: {name: nokey}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:1.36
    command: ["sh", "-c", "sleep 600"]
    env: [{name: X, valueFrom: {configMapKeyRef: {name: cfg, key: size}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: nosecretkey}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:1.36
    command: ["sh", "-c", "sleep 600"]
    env: [{name: X, valueFrom: {secretKeyRef: {name: sec, key: user}}}]
"#,
    )
    .ok();
    s.wait_status("envs", "Running", None, 60);
    let logs = eventually(20, || {
        let out = s.kubectl(&["logs", "envs"]).stdout;
        (!out.is_empty()).then_some(out)
    });
    assert_eq!(logs.trim(), "colour=blue pass=s3cret pod=envs tier=front");
    s.wait_status("nokey", "CreateContainerConfigError", Some("0/1"), 60);
    assert_eq!(
        s.field(
            "nokey",
            "{.status.containerStatuses[0].state.waiting.message}"
        ),
        "couldn't find key size in ConfigMap default/cfg"
    );
    s.wait_status("nosecretkey", "CreateContainerConfigError", Some("0/1"), 60);
    assert_eq!(
        s.field(
            "nosecretkey",
            "{.status.containerStatuses[0].state.waiting.message}"
        ),
        "couldn't find key user in Secret default/sec"
    );
    // Adding the key lets the pod start, as the kubelet retries the container's config.
    s.kubectl(&[
        "patch",
        "configmap",
        "cfg",
        "--type=merge",
        "-p",
        r#"{"data":{"size":"xl"}}"#,
    ])
    .ok();
    s.wait_status("nokey", "Running", Some("1/1"), 60);
}
