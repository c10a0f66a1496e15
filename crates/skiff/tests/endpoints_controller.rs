//! The endpoints controller through the real `skiff up` and the real kubectl: pods bound to a
//! node (no agent: the test writes their status as an agent would), a Service, and the
//! Endpoints and EndpointSlices that follow readiness, termination, labels and deletion.

mod common;

use std::time::{Duration, Instant};

use common::{Skiff, eventually, node_object};
use serde_json::{Value, json};

/// `skiff up` without an agent, with node n1 (which nothing heartbeats: the node lifecycle
/// controller is given an hour before it would mark n1's pods not ready).
fn start() -> Skiff {
    let s = Skiff::start_with(&["--node-monitor-grace-period", "3600"]);
    s.create_node(node_object("n1", "4", "8Gi", json!({})));
    s
}

/// A pod bound to n1 with the given labels and a container port named `http` (8080), plus
/// `metrics` (9090) when asked.
fn pod_yaml(name: &str, app: &str, metrics: bool) -> String {
    let extra = if metrics {
        "\n        - name: metrics\n          containerPort: 9090"
    } else {
        ""
    };
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: {app}
spec:
  nodeName: n1
  containers:
    - name: c
      image: busybox
      ports:
        - name: http
          containerPort: 8080{extra}
"
    )
}

/// Writes the pod's status as its agent would: Running, the IP, and the Ready condition.
fn set_status(s: &Skiff, pod: &str, ip: &str, ready: bool) {
    let patch = json!({"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
    }});
    s.kubectl(&[
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ])
    .ok();
}

fn set_ready(s: &Skiff, pod: &str, ready: bool) {
    let patch = json!({"status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    s.kubectl(&[
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ])
    .ok();
}

/// Writes the pod's Ready condition with a kube client and polls the `web` Endpoints until the
/// pod's address is on the matching side: the time from the write to the controller's update.
fn flip_latency(s: &Skiff, pod: &str, ready: bool) -> Duration {
    use k8s_openapi::api::core::v1::{Endpoints, Pod};
    use kube::api::{Api, Patch, PatchParams};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = s.client().await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let eps: Api<Endpoints> = Api::namespaced(client, "default");
        let status = if ready { "True" } else { "False" };
        let patch = json!({"status": {"conditions": [{"type": "Ready", "status": status}]}});
        let t = Instant::now();
        pods.patch_status(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("status patch");
        loop {
            let e = eps.get("web").await.expect("endpoints");
            let on_side = e.subsets.iter().flatten().any(|ss| {
                let list = if ready {
                    &ss.addresses
                } else {
                    &ss.not_ready_addresses
                };
                list.iter()
                    .flatten()
                    .any(|a| a.target_ref.as_ref().and_then(|r| r.name.as_deref()) == Some(pod))
            });
            if on_side {
                return t.elapsed();
            }
            assert!(t.elapsed() < Duration::from_secs(20), "no update");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
}

/// `kubectl get endpoints <name> -o jsonpath=<path>`; None when the object does not exist.
fn endpoints_path(s: &Skiff, name: &str, path: &str) -> Option<String> {
    let out = s.kubectl(&["get", "endpoints", name, "-o", &format!("jsonpath={path}")]);
    (out.code == 0).then(|| out.stdout.trim().to_string())
}

/// Ready and not-ready addresses of the Endpoints object, space-separated.
fn addresses(s: &Skiff, name: &str) -> Option<(String, String)> {
    Some((
        endpoints_path(s, name, "{.subsets[*].addresses[*].ip}")?,
        endpoints_path(s, name, "{.subsets[*].notReadyAddresses[*].ip}")?,
    ))
}

fn wait_addresses(s: &Skiff, name: &str, ready: &str, not_ready: &str) {
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = addresses(s, name);
        if now
            .as_ref()
            .is_some_and(|(r, n)| r == ready && n == not_ready)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "endpoints {name}: wanted ready [{ready}] not ready [{not_ready}], last {last:?}"
        );
        last = now;
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The service's EndpointSlices, as kubectl lists them by the service-name label.
fn slices(s: &Skiff, svc: &str) -> Vec<Value> {
    let out = s
        .kubectl(&[
            "get",
            "endpointslices",
            "-l",
            &format!("kubernetes.io/service-name={svc}"),
            "-o",
            "json",
        ])
        .ok();
    let v: Value = serde_json::from_str(&out.stdout).expect("slice list JSON");
    v["items"].as_array().cloned().unwrap_or_default()
}

/// (ip, ready, serving, terminating) of every endpoint of the service's slices, sorted.
fn slice_endpoints(s: &Skiff, svc: &str) -> Vec<(String, bool, bool, bool)> {
    let mut out: Vec<(String, bool, bool, bool)> = slices(s, svc)
        .iter()
        .flat_map(|sl| sl["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            let c = &e["conditions"];
            (
                e["addresses"][0].as_str().unwrap_or("").to_string(),
                c["ready"].as_bool().unwrap_or(false),
                c["serving"].as_bool().unwrap_or(false),
                c["terminating"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    out.sort();
    out
}

fn wait_slice_endpoints(s: &Skiff, svc: &str, want: &[(&str, bool, bool, bool)]) {
    let want: Vec<(String, bool, bool, bool)> = want
        .iter()
        .map(|(ip, r, sv, t)| (ip.to_string(), *r, *sv, *t))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = slice_endpoints(s, svc);
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "slices of {svc}: wanted {want:?}, have {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const WEB_SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
  labels:
    tier: front
spec:
  selector:
    app: web
  ports:
    - name: http
      port: 80
      targetPort: http
";

#[test]
fn readiness_decides_who_gets_traffic() {
    let s = start();
    s.apply(&pod_yaml("web-1", "web", false)).ok();
    s.apply(&pod_yaml("web-2", "web", false)).ok();
    s.apply(&pod_yaml("other", "db", false)).ok();
    set_status(&s, "web-1", "10.1.0.1", true);
    set_status(&s, "web-2", "10.1.0.2", false);
    set_status(&s, "other", "10.1.0.3", true);
    s.apply(WEB_SERVICE).ok();

    // Ready pods are addresses, the others notReadyAddresses; the named port resolves.
    wait_addresses(&s, "web", "10.1.0.1", "10.1.0.2");
    assert_eq!(
        endpoints_path(&s, "web", "{.subsets[0].ports[0].name}:{.subsets[0].ports[0].port}:{.subsets[0].ports[0].protocol}").unwrap(),
        "http:8080:TCP"
    );
    assert_eq!(
        endpoints_path(&s, "web", "{.subsets[0].addresses[0].nodeName} {.subsets[0].addresses[0].targetRef.kind}/{.subsets[0].addresses[0].targetRef.name}").unwrap(),
        "n1 Pod/web-1"
    );
    assert_eq!(
        endpoints_path(&s, "web", "{.metadata.labels.tier}").unwrap(),
        "front"
    );
    wait_slice_endpoints(
        &s,
        "web",
        &[
            ("10.1.0.1", true, true, false),
            ("10.1.0.2", false, false, false),
        ],
    );
    let list = slices(&s, "web");
    assert_eq!(list.len(), 1);
    let slice = &list[0];
    let slice_name = slice["metadata"]["name"].as_str().unwrap().to_string();
    assert!(slice_name.starts_with("web-"), "{slice_name}");
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(slice["metadata"]["labels"]["tier"], "front");
    let owner = &slice["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["name"].as_str()),
        (Some("Service"), Some("web"))
    );
    assert_eq!(owner["controller"], true);
    assert_eq!(
        slice["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );
    assert_eq!(slice["endpoints"][0]["nodeName"], "n1");
    assert_eq!(slice["endpoints"][0]["targetRef"]["name"], "web-1");
    // kubectl's own table shows them too.
    let table = s.kubectl(&["get", "endpoints", "web"]).ok().stdout;
    assert!(table.contains("10.1.0.1:8080"), "{table}");

    // Nothing changes: nothing is written.
    let ep_rv = endpoints_path(&s, "web", "{.metadata.resourceVersion}").unwrap();
    let slice_rv = slice["metadata"]["resourceVersion"].clone();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        endpoints_path(&s, "web", "{.metadata.resourceVersion}").unwrap(),
        ep_rv
    );
    assert_eq!(
        slices(&s, "web")[0]["metadata"]["resourceVersion"],
        slice_rv
    );

    // The readiness flip reaches the Endpoints quickly.
    let t = Instant::now();
    set_ready(&s, "web-2", true);
    wait_addresses(&s, "web", "10.1.0.1 10.1.0.2", "");
    eprintln!(
        "readiness flip visible through kubectl after {:?}",
        t.elapsed()
    );
    wait_slice_endpoints(
        &s,
        "web",
        &[
            ("10.1.0.1", true, true, false),
            ("10.1.0.2", true, true, false),
        ],
    );
    set_ready(&s, "web-1", false);
    wait_addresses(&s, "web", "10.1.0.2", "10.1.0.1");
    set_ready(&s, "web-1", true);
    wait_addresses(&s, "web", "10.1.0.1 10.1.0.2", "");
    // The same flip timed without kubectl's start-up: status write → Endpoints updated.
    let took = flip_latency(&s, "web-1", false);
    eprintln!("status write to Endpoints update: {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    wait_addresses(&s, "web", "10.1.0.2", "10.1.0.1");
    set_ready(&s, "web-1", true);
    wait_addresses(&s, "web", "10.1.0.1 10.1.0.2", "");

    // A graceful delete: with no agent the pod stays, terminating. It leaves the Endpoints
    // and stays in the slice as serving and terminating, so proxies can drain it.
    s.kubectl(&[
        "delete",
        "pod",
        "web-1",
        "--grace-period=60",
        "--wait=false",
    ])
    .ok();
    wait_addresses(&s, "web", "10.1.0.2", "");
    wait_slice_endpoints(
        &s,
        "web",
        &[
            ("10.1.0.1", false, true, true),
            ("10.1.0.2", true, true, false),
        ],
    );
    assert!(
        s.kubectl(&["get", "pod", "web-1"]).code == 0,
        "the terminating pod is still there"
    );
    s.kubectl(&["delete", "pod", "web-1", "--grace-period=0", "--force"])
        .ok();
    wait_slice_endpoints(&s, "web", &[("10.1.0.2", true, true, false)]);

    // Labels: a pod that stops matching leaves, one that starts matching joins.
    s.kubectl(&["label", "pod", "web-2", "app=db", "--overwrite"])
        .ok();
    wait_addresses(&s, "web", "", "");
    assert_eq!(endpoints_path(&s, "web", "{.subsets}").unwrap(), "");
    wait_slice_endpoints(&s, "web", &[]);
    // No endpoints: one empty placeholder slice remains.
    assert_eq!(slices(&s, "web").len(), 1);
    s.kubectl(&["label", "pod", "other", "app=web", "--overwrite"])
        .ok();
    wait_addresses(&s, "web", "10.1.0.3", "");
    wait_slice_endpoints(&s, "web", &[("10.1.0.3", true, true, false)]);
    assert_eq!(slices(&s, "web").len(), 1);

    // A selector change on the service.
    s.kubectl(&[
        "patch",
        "service",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"selector":{"app":"db"}}}"#,
    ])
    .ok();
    wait_addresses(&s, "web", "10.1.0.2", "");

    // Someone edits the Endpoints by hand: the controller puts them back.
    s.kubectl(&[
        "patch",
        "endpoints",
        "web",
        "--type=merge",
        "-p",
        r#"{"subsets":[{"addresses":[{"ip":"192.0.2.1"}],"ports":[{"port":1}]}]}"#,
    ])
    .ok();
    wait_addresses(&s, "web", "10.1.0.2", "");

    // The service goes: its Endpoints and slices go with it.
    s.kubectl(&["delete", "service", "web"]).ok();
    eventually(20, || {
        endpoints_path(&s, "web", "{.metadata.name}")
            .is_none()
            .then_some(())
    });
    eventually(20, || slices(&s, "web").is_empty().then_some(()));
}

#[test]
fn headless_publish_not_ready_and_selectorless_services() {
    let s = start();
    s.apply(&pod_yaml("db-1", "db", true)).ok();
    s.apply(&pod_yaml("db-2", "db", false)).ok();
    set_status(&s, "db-1", "10.2.0.1", true);
    set_status(&s, "db-2", "10.2.0.2", false);

    // Headless, no ports: one port-less subset; the slice has no ports.
    s.apply(
        "apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  clusterIP: None
  selector:
    app: db
",
    )
    .ok();
    wait_addresses(&s, "db", "10.2.0.1", "10.2.0.2");
    assert_eq!(endpoints_path(&s, "db", "{.subsets[0].ports}").unwrap(), "");
    assert_eq!(
        endpoints_path(&s, "db", "{.metadata.labels}").unwrap(),
        r#"{"service.kubernetes.io/headless":""}"#
    );
    wait_slice_endpoints(
        &s,
        "db",
        &[
            ("10.2.0.1", true, true, false),
            ("10.2.0.2", false, false, false),
        ],
    );

    // publishNotReadyAddresses, and a named port only db-1 has: db-2 is left out of that port.
    s.apply(
        "apiVersion: v1
kind: Service
metadata:
  name: db-peers
spec:
  publishNotReadyAddresses: true
  selector:
    app: db
  ports:
    - name: http
      port: 80
      targetPort: http
    - name: metrics
      port: 9000
      targetPort: metrics
",
    )
    .ok();
    eventually(20, || {
        let v = endpoints_path(&s, "db-peers", "{.subsets}")?;
        let subsets: Value = serde_json::from_str(&v).ok()?;
        let shape: Vec<(Vec<String>, Vec<i64>)> = subsets
            .as_array()?
            .iter()
            .map(|ss| {
                let ips = ss["addresses"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|x| x["ip"].as_str().unwrap().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                let ports = ss["ports"]
                    .as_array()
                    .map(|a| a.iter().map(|p| p["port"].as_i64().unwrap()).collect())
                    .unwrap_or_default();
                (ips, ports)
            })
            .collect();
        (shape
            == vec![
                (vec!["10.2.0.1".into(), "10.2.0.2".into()], vec![8080]),
                (vec!["10.2.0.1".into()], vec![9090]),
            ])
        .then_some(())
    });
    // Two port sets: two slices, every endpoint ready (published).
    eventually(20, || (slices(&s, "db-peers").len() == 2).then_some(()));
    wait_slice_endpoints(
        &s,
        "db-peers",
        &[
            ("10.2.0.1", true, true, false),
            ("10.2.0.2", true, false, false),
        ],
    );

    // A service without a selector: the user's Endpoints are left alone.
    s.apply(
        "apiVersion: v1
kind: Service
metadata:
  name: external
spec:
  ports:
    - port: 5432
---
apiVersion: v1
kind: Endpoints
metadata:
  name: external
subsets:
  - addresses:
      - ip: 192.0.2.10
    ports:
      - port: 5432
",
    )
    .ok();
    let rv = endpoints_path(&s, "external", "{.metadata.resourceVersion}").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        endpoints_path(&s, "external", "{.metadata.resourceVersion}").unwrap(),
        rv
    );
    assert_eq!(
        endpoints_path(&s, "external", "{.subsets[0].addresses[0].ip}").unwrap(),
        "192.0.2.10"
    );
    assert!(slices(&s, "external").is_empty());

    // A namespace with a service goes away cleanly (the controller does not keep recreating
    // the Endpoints it deletes).
    s.kubectl(&["create", "namespace", "temp"]).ok();
    s.kubectl(&[
        "-n",
        "temp",
        "create",
        "service",
        "clusterip",
        "api",
        "--tcp=80:8080",
    ])
    .ok();
    eventually(20, || {
        let out = s.kubectl(&["-n", "temp", "get", "endpointslices", "-o", "name"]);
        (out.code == 0 && !out.stdout.trim().is_empty()).then_some(())
    });
    assert_eq!(
        s.kubectl(&["-n", "temp", "get", "endpoints", "api", "-o", "name"])
            .ok()
            .stdout
            .trim(),
        "endpoints/api"
    );
    s.kubectl(&["delete", "namespace", "temp", "--wait=false"])
        .ok();
    eventually(30, || {
        (s.kubectl(&["get", "namespace", "temp"]).code != 0).then_some(())
    });
}
