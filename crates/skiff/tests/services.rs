//! Services end to end: real pods (runc, each with its own IP) behind a Service, the endpoints
//! controller following their readiness, and the agent's proxy balancing connections on the
//! NodePort and the cluster IP, driven by the real kubectl and a plain HTTP client.
//!
//! Needs root, runc, the CNI plugins and docker-registry (`scripts/test` installs them);
//! without them each test says so and passes without checking anything.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::registry::Registry;
use common::runc::Runc;
use common::{eventually, squash};

/// A web pod: httpd serving its own name at `/` and `/healthz` while `/www/healthz` exists.
fn web_pod(name: &str, image: &str, app: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {app}}}}}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: web
    image: {image}
    command: ["sh", "-c", "mkdir -p /www && echo {name} > /www/index.html && touch /www/healthz && exec httpd -f -p 8080 -h /www"]
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe:
      httpGet: {{path: /healthz, port: 8080}}
      periodSeconds: 1
      failureThreshold: 1
    lifecycle:
      preStop:
        exec: {{command: ["sleep", "2"]}}
"#
    )
}

fn service(name: &str, app: &str, node_port: u16) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  type: NodePort
  selector: {{app: {app}}}
  ports: [{{name: http, port: 80, targetPort: http, nodePort: {node_port}}}]
"#
    )
}

/// One HTTP/1.0 GET; the body's first line, or the error.
fn get(addr: &str) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(
        &addr.parse().map_err(|e| format!("{e}"))?,
        Duration::from_secs(2),
    )
    .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(s, "GET / HTTP/1.0\r\n\r\n").map_err(|e| format!("write: {e}"))?;
    let mut r = String::new();
    s.read_to_string(&mut r).map_err(|e| format!("read: {e}"))?;
    if !r.starts_with("HTTP/1.") || !r.contains(" 200 ") {
        return Err(format!("bad response: {r:?}"));
    }
    let body = r.split("\r\n\r\n").nth(1).unwrap_or_default();
    Ok(body.lines().next().unwrap_or_default().to_string())
}

/// How many of `n` requests each backend answered.
fn spread(addr: &str, n: usize) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for _ in 0..n {
        let who = get(addr).unwrap_or_else(|e| panic!("request to {addr} failed: {e}"));
        *m.entry(who).or_insert(0) += 1;
    }
    m
}

fn ip_of(c: &Runc, pod: &str) -> String {
    c.field(pod, "{.status.podIP}")
}

#[test]
fn traffic_follows_readiness_on_the_node_port_and_the_cluster_ip() {
    if common::runc::skip() {
        return;
    }
    let reg = Registry::start(None);
    let image = reg.push("busybox", "1");
    let c = Runc::start();
    let port = c.slot.node_port();
    for p in ["web-1", "web-2", "web-3"] {
        c.apply(&web_pod(p, &image, "web")).ok();
    }
    c.apply(&service("web", "web", port)).ok();
    for p in ["web-1", "web-2", "web-3"] {
        c.wait_status(p, "Running", Some("1/1"), 90);
    }
    let front = format!("127.0.0.1:{port}");
    // All three ready: all three get traffic.
    let seen = eventually(30, || {
        let m = spread(&front, 30);
        (m.len() == 3).then_some(m)
    });
    assert!(seen.values().all(|n| *n >= 5), "uneven: {seen:?}");

    // kubectl's view: the service, its endpoints and slice, describe.
    let svc = squash(&c.kubectl(&["get", "svc", "web"]).ok().stdout);
    assert!(svc.contains("web NodePort 10."), "{svc}");
    assert!(svc.contains(&format!("80:{port}/TCP")), "{svc}");
    let eps = c
        .kubectl(&[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ])
        .ok()
        .stdout;
    for p in ["web-1", "web-2", "web-3"] {
        assert!(eps.contains(&ip_of(&c, p)), "{p} missing from {eps}");
    }
    let d = squash(&c.kubectl(&["describe", "svc", "web"]).ok().stdout);
    assert!(d.contains(&format!("{}:8080", ip_of(&c, "web-1"))), "{d}");

    // web-2's readiness probe fails: out of rotation, still running, not restarted.
    c.kubectl(&["exec", "web-2", "--", "rm", "/www/healthz"])
        .ok();
    c.wait_status("web-2", "Running", Some("0/1"), 30);
    let ip2 = ip_of(&c, "web-2");
    eventually(30, || {
        let nr = c
            .kubectl(&[
                "get",
                "endpoints",
                "web",
                "-o",
                "jsonpath={.subsets[*].notReadyAddresses[*].ip}",
            ])
            .stdout;
        nr.contains(&ip2).then_some(())
    });
    let ready = c
        .kubectl(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={range .items[*].endpoints[*]}{.addresses[0]}={.conditions.ready} {end}",
        ])
        .ok()
        .stdout;
    assert!(ready.contains(&format!("{ip2}=false")), "{ready}");
    let m = spread(&front, 30);
    assert!(
        !m.contains_key("web-2"),
        "an unready pod got traffic: {m:?}"
    );
    assert_eq!(m.len(), 2, "{m:?}");
    assert_eq!(
        c.field("web-2", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );

    // It passes again: back in rotation.
    c.kubectl(&["exec", "web-2", "--", "touch", "/www/healthz"])
        .ok();
    c.wait_status("web-2", "Running", Some("1/1"), 30);
    eventually(30, || (spread(&front, 30).len() == 3).then_some(()));

    // The cluster IP, from the node and from inside a pod.
    let cluster_ip = c
        .kubectl(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"])
        .ok()
        .stdout;
    let via_ip = eventually(30, || get(&format!("{cluster_ip}:80")).ok());
    assert!(via_ip.starts_with("web-"), "{via_ip}");
    let inside = c
        .kubectl(&[
            "exec",
            "web-1",
            "--",
            "wget",
            "-q",
            "-O-",
            &format!("http://{cluster_ip}/"),
        ])
        .ok()
        .stdout;
    assert!(inside.starts_with("web-"), "{inside}");
}

#[test]
fn no_request_fails_while_the_pods_are_replaced() {
    if common::runc::skip() {
        return;
    }
    let reg = Registry::start(None);
    let image = reg.push("busybox", "1");
    let c = Runc::start();
    let port = c.slot.node_port() + 1;
    for p in ["old-1", "old-2"] {
        c.apply(&web_pod(p, &image, "roll")).ok();
    }
    c.apply(&service("roll", "roll", port)).ok();
    for p in ["old-1", "old-2"] {
        c.wait_status(p, "Running", Some("1/1"), 90);
    }
    let front = format!("127.0.0.1:{port}");
    eventually(30, || (spread(&front, 10).len() == 2).then_some(()));

    // A steady client: one request every 20 ms until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = stop.clone();
        let front = front.clone();
        std::thread::spawn(move || {
            let mut answers: BTreeMap<String, usize> = BTreeMap::new();
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match get(&front) {
                    Ok(who) => *answers.entry(who).or_insert(0) += 1,
                    Err(e) => failures.push(e),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (answers, failures)
        })
    };
    // A rolling replacement: a new pod, ready, then an old one deleted; twice.
    for (new, old) in [("new-1", "old-1"), ("new-2", "old-2")] {
        c.apply(&web_pod(new, &image, "roll")).ok();
        c.wait_status(new, "Running", Some("1/1"), 90);
        c.kubectl(&["delete", "pod", old, "--wait=false"]).ok();
        eventually(60, || c.gone(old).then_some(()));
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    let (answers, failures) = client.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests: {failures:?}",
        failures.len()
    );
    assert!(
        answers.contains_key("new-1") && answers.contains_key("new-2"),
        "{answers:?}"
    );
    let total: usize = answers.values().sum();
    assert!(
        total > 100,
        "too few requests to mean anything: {answers:?}"
    );
}

#[test]
fn the_example_web_service_follows_readiness() {
    if common::runc::skip() {
        return;
    }
    let reg = Registry::start(None);
    let image = reg.push("busybox", "1");
    let c = Runc::start();
    let port = c.slot.node_port();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/web-service.yaml"
    ))
    .unwrap()
    .replace("127.0.0.1:5000/busybox:1", &image)
    .replace("nodePort: 30080", &format!("nodePort: {port}"));
    c.apply(&example).ok();
    for p in ["web-1", "web-2", "web-3"] {
        c.wait_status(p, "Running", Some("1/1"), 90);
    }
    let all = c
        .kubectl(&["get", "svc,endpoints,endpointslices", "--no-headers"])
        .ok()
        .stdout;
    let rows = common::table(&all);
    assert!(
        rows.iter()
            .any(|r| r[0] == "service/web" && r[1] == "NodePort"),
        "{all}"
    );
    assert!(rows.iter().any(|r| r[0] == "endpoints/web"), "{all}");
    assert!(
        rows.iter()
            .any(|r| r[0].starts_with("endpointslice.discovery.k8s.io/web-")),
        "{all}"
    );
    let front = format!("127.0.0.1:{port}");
    // Each pod answers with its hostname (the pod's name).
    eventually(30, || (spread(&front, 30).len() == 3).then_some(()));
    c.kubectl(&["exec", "web-3", "--", "rm", "/www/ready"]).ok();
    c.wait_status("web-3", "Running", Some("0/1"), 30);
    let m = eventually(30, || {
        let m = spread(&front, 30);
        (m.len() == 2).then_some(m)
    });
    assert!(!m.contains_key("web-3"), "{m:?}");
    c.kubectl(&["exec", "web-3", "--", "touch", "/www/ready"])
        .ok();
    eventually(30, || (spread(&front, 30).len() == 3).then_some(()));
}
