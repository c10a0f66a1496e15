//! Simulated nodes at small scale: `skiff up --sim-nodes 50` (no local agent), driven by the
//! real kubectl. The pods go through the real lifecycle engine; their containers' behaviour
//! comes from `sim.skiff.dev/behaviour` annotations.

mod common;

use common::cluster::Cluster;
use common::{Skiff, eventually, squash, table};

fn sim_cluster(nodes: usize) -> Cluster {
    let n = nodes.to_string();
    let c = Cluster(Skiff::start_with(&[
        "--sim-nodes",
        &n,
        "--sim-node-capacity",
        "cpu=8,memory=16Gi,pods=30",
    ]));
    // Every simulated node registers and is Ready.
    eventually(60, || {
        let out = c.kubectl(&["get", "nodes", "-l", "skiff.dev/sim=true", "--no-headers"]);
        let rows = table(&out.stdout);
        (rows.len() == nodes && rows.iter().all(|r| r[1] == "Ready")).then_some(())
    });
    c
}

fn pod_yaml(name: &str, behaviour: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  annotations:
    sim.skiff.dev/behaviour: \"{behaviour}\"
spec:
  terminationGracePeriodSeconds: 3
{extra_spec}"
    )
}

const ONE_CONTAINER: &str = "  containers:
  - name: c
    image: registry.example/app:1
";

#[test]
fn simulated_nodes_look_like_real_ones_and_run_many_pods() {
    let c = sim_cluster(50);
    let node = c
        .kubectl(&["get", "node", "sim-7", "-o", "json"])
        .ok()
        .stdout;
    let node: serde_json::Value = serde_json::from_str(&node).unwrap();
    assert_eq!(node["status"]["allocatable"]["pods"], "30");
    assert_eq!(node["status"]["capacity"]["cpu"], "8");
    assert_eq!(
        node["metadata"]["labels"]["kubernetes.io/hostname"],
        "sim-7"
    );
    // Heartbeats: every simulated node holds a Lease that is renewed.
    let lease = |n: &str| {
        c.kubectl(&[
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            n,
            "-o",
            "jsonpath={.spec.renewTime}",
        ])
        .stdout
    };
    let first = eventually(20, || Some(lease("sim-49")).filter(|t| !t.is_empty()));
    eventually(30, || (lease("sim-49") != first).then_some(()));

    // examples/sim/load.yaml: 1,000 pods, more than 30 nodes' worth of cpu, so the scheduler
    // spreads them; the steady ones all run, the ones without an image never start.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/sim/load.yaml");
    c.kubectl(&["create", "-f", example]).ok();
    let rows = |sel: &str| {
        let out = c.kubectl(&["get", "pods", "-l", sel, "-o", "wide", "--no-headers"]);
        table(&out.stdout)
    };
    let nodes_used = eventually(180, || {
        let rows = rows("kind=steady");
        let running: Vec<&Vec<String>> = rows
            .iter()
            .filter(|r| r[2] == "Running" && r[1] == "1/1")
            .collect();
        let nodes: std::collections::HashSet<&str> =
            running.iter().map(|r| r[6].as_str()).collect();
        (running.len() == 700).then_some(nodes.len())
    });
    assert!(
        nodes_used >= 30,
        "steady pods spread over {nodes_used} nodes"
    );
    eventually(60, || {
        rows("kind=noimage")
            .iter()
            .all(|r| r[2] == "ErrImagePull" || r[2] == "ImagePullBackOff")
            .then_some(())
    });
    // Nodes report the images their pods pulled (what the scheduler's image locality reads).
    eventually(30, || {
        let out = c
            .kubectl(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={.items[*].status.images[*].names[0]}",
            ])
            .stdout;
        out.contains("registry.example/app-0:1").then_some(())
    });
    // A pod IP each, distinct.
    let ips = c
        .kubectl(&[
            "get",
            "pods",
            "-l",
            "kind=steady",
            "-o",
            "jsonpath={.items[*].status.podIP}",
        ])
        .ok()
        .stdout;
    let ips: std::collections::HashSet<&str> = ips.split_whitespace().collect();
    assert_eq!(ips.len(), 700);
    // Deleting them: each goes through termination and the fleet confirms the deletion.
    c.kubectl(&["delete", "pods", "-l", "app=sim-load", "--wait=false"])
        .ok();
    eventually(120, || {
        let out = c.kubectl(&["get", "pods", "-l", "app=sim-load", "--no-headers"]);
        out.stdout.trim().is_empty().then_some(())
    });
}

#[test]
fn crash_loop_image_failures_probes_and_init_containers() {
    let c = sim_cluster(5);
    let mut yaml = pod_yaml("crash", "run=1s exit=2", ONE_CONTAINER);
    yaml.push_str("---\n");
    yaml.push_str(&pod_yaml("noimage", "image-missing", ONE_CONTAINER));
    yaml.push_str("---\n");
    yaml.push_str(&pod_yaml(
        "flaky",
        "readiness-flip=4s liveness-fail-after=12s",
        "  containers:
  - name: c
    image: app:1
    readinessProbe:
      exec: {command: [check]}
      periodSeconds: 1
      failureThreshold: 1
    livenessProbe:
      exec: {command: [check]}
      periodSeconds: 2
      failureThreshold: 2
",
    ));
    yaml.push_str("---\n");
    yaml.push_str(
        "apiVersion: v1
kind: Pod
metadata:
  name: inits
  annotations:
    sim.skiff.dev/behaviour.first: run=2s
    sim.skiff.dev/behaviour.second: run=2s
spec:
  initContainers:
  - {name: first, image: app:1}
  - {name: second, image: app:1}
  containers:
  - {name: c, image: app:1}
",
    );
    c.apply(&yaml).ok();

    // The crash loop: Error, then CrashLoopBackOff with the real back-off message.
    c.wait_status("crash", "CrashLoopBackOff", Some("0/1"), 30);
    let waiting = c.field(
        "crash",
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    assert!(
        waiting.starts_with("back-off 10s restarting failed container=c pod=crash_default("),
        "{waiting}"
    );
    let d = c.wait_describe(
        "crash",
        "Back-off restarting failed container c in pod crash_default(",
        10,
    );
    assert!(
        d.contains("Last State: Terminated Reason: Error Exit Code: 2"),
        "{d}"
    );
    let restarts = c.row("crash")[3].clone();
    assert!(
        restarts.starts_with('1') || restarts.starts_with('2'),
        "{restarts}"
    );

    // A missing image: ErrImagePull then ImagePullBackOff, with the pull error in events.
    c.wait_status("noimage", "ImagePullBackOff", Some("0/1"), 30);
    let d = c.wait_describe("noimage", "Error: ErrImagePull", 10);
    assert!(d.contains("registry.example/app:1: not found"), "{d}");

    // Init containers run one after the other, then the app container.
    c.wait_status("inits", "Init:1/2", None, 20);
    c.wait_status("inits", "Running", Some("1/1"), 20);
    let started = squash(&c.field(
        "inits",
        "{.status.initContainerStatuses[*].state.terminated.reason}",
    ));
    assert_eq!(started, "Completed Completed");

    // Readiness flips READY without restarts; liveness failing restarts the container.
    c.wait_status("flaky", "Running", Some("1/1"), 20);
    c.wait_status("flaky", "Running", Some("0/1"), 20);
    c.wait_status("flaky", "Running", Some("1/1"), 20);
    let d = c.wait_describe(
        "flaky",
        "Container c failed liveness probe, will be restarted",
        40,
    );
    assert!(
        d.contains("Readiness probe failed: simulated readiness probe failure"),
        "{d}"
    );
    eventually(20, || (c.row("flaky")[3] != "0").then_some(()));
}

#[test]
fn grace_periods_take_their_time() {
    let c = sim_cluster(2);
    c.apply(&pod_yaml(
        "slow-stop",
        "ignore-term",
        "  containers:
  - name: c
    image: app:1
",
    ))
    .ok();
    c.wait_status("slow-stop", "Running", Some("1/1"), 20);
    let t = std::time::Instant::now();
    c.kubectl(&["delete", "pod", "slow-stop", "--wait=false"])
        .ok();
    c.wait_status("slow-stop", "Terminating", None, 10);
    eventually(20, || c.gone("slow-stop").then_some(()));
    // terminationGracePeriodSeconds is 3 and SIGTERM is ignored: SIGKILL after 3 s.
    assert!(t.elapsed().as_secs_f64() >= 2.5, "{:?}", t.elapsed());
}

#[test]
fn bad_sim_arguments_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "up",
            "--port",
            "0",
            "--sim-nodes",
            "3",
            "--sim-node-capacity",
            "cpu=4",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--sim-node-capacity") && err.contains("memory"),
        "{err}"
    );
}
