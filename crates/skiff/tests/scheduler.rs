//! The scheduler, end to end: the real `skiff up` (which runs the scheduler as an API client),
//! nodes created through the API with capacity and a Ready condition (no agent), and the real
//! kubectl reading back bindings, the PodScheduled condition and the events.
//!
//! No assertion depends on speed: every wait is an `eventually` with a generous limit.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Skiff, eventually, node_object, squash, table};
use serde_json::json;

const WAIT: u64 = 30;

fn pod_json(name: &str, cpu: &str, memory: &str, extra: serde_json::Value) -> String {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "registry.local/app:v1",
            "resources": {"requests": {"cpu": cpu, "memory": memory}}}]},
    });
    if let (Some(spec), Some(extra)) = (pod["spec"].as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    pod.to_string()
}

fn create_pod(s: &Skiff, name: &str, cpu: &str, memory: &str, spec_extra: serde_json::Value) {
    s.kubectl_stdin(
        &["create", "-f", "-"],
        Some(&pod_json(name, cpu, memory, spec_extra)),
    )
    .ok();
}

fn jsonpath(s: &Skiff, pod: &str, path: &str) -> String {
    s.kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
        .ok()
        .stdout
}

fn node_of(s: &Skiff, pod: &str) -> String {
    jsonpath(s, pod, "{.spec.nodeName}")
}

/// Waits until the pod is bound and returns its node.
fn wait_bound(s: &Skiff, pod: &str) -> String {
    eventually(WAIT, || Some(node_of(s, pod)).filter(|n| !n.is_empty()))
}

/// `status/reason/message` of the PodScheduled condition.
fn pod_scheduled(s: &Skiff, pod: &str) -> String {
    jsonpath(
        s,
        pod,
        r#"{range .status.conditions[?(@.type=="PodScheduled")]}{.status}/{.reason}/{.message}{end}"#,
    )
}

/// Waits until the pod shows PodScheduled=False with this message.
fn wait_unschedulable(s: &Skiff, pod: &str, message: &str) {
    let want = format!("False/Unschedulable/{message}");
    let deadline = Instant::now() + Duration::from_secs(WAIT);
    loop {
        let got = pod_scheduled(s, pod);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "PodScheduled of {pod}:\n got  {got:?}\n want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn describe(s: &Skiff, pod: &str) -> String {
    squash(&s.kubectl(&["describe", "pod", pod]).ok().stdout)
}

#[test]
fn binds_a_pod_to_the_node_with_room() {
    let s = Skiff::start();
    s.create_node(node_object("node-1", "500m", "8Gi", json!({})));
    s.create_node(node_object("node-2", "4", "1Gi", json!({})));
    s.create_node(node_object("node-3", "4", "8Gi", json!({})));
    create_pod(&s, "web", "1", "2Gi", json!({}));
    assert_eq!(wait_bound(&s, "web"), "node-3");
    assert_eq!(
        eventually(WAIT, || Some(pod_scheduled(&s, "web"))
            .filter(|c| c.starts_with("True"))),
        "True//"
    );
    // kubectl get pods: still Pending (no agent runs it), on node-3.
    let rows = table(&s.kubectl(&["get", "pods", "-o", "wide"]).ok().stdout);
    assert_eq!(rows[1][0], "web");
    assert_eq!(rows[1][2], "Pending");
    assert_eq!(rows[1][6], "node-3");
    let d = eventually(WAIT, || {
        Some(describe(&s, "web")).filter(|d| d.contains("Scheduled"))
    });
    assert!(
        d.contains(
            "Events: Type Reason Age From Message ---- ------ ---- ---- ------- Normal Scheduled"
        ),
        "{d}"
    );
    assert!(
        d.contains("default-scheduler Successfully assigned default/web to node-3"),
        "{d}"
    );
}

#[test]
fn a_pod_too_big_for_every_node_stays_pending() {
    let s = Skiff::start();
    for i in 1..=3 {
        s.create_node(node_object(&format!("node-{i}"), "4", "8Gi", json!({})));
    }
    create_pod(&s, "huge", "8", "2Gi", json!({}));
    let msg = "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.";
    wait_unschedulable(&s, "huge", msg);
    assert_eq!(node_of(&s, "huge"), "");
    let rows = table(&s.kubectl(&["get", "pod", "huge"]).ok().stdout);
    assert_eq!(rows[1][2], "Pending");
    let d = eventually(WAIT, || {
        Some(describe(&s, "huge")).filter(|d| d.contains("FailedScheduling"))
    });
    assert!(
        d.contains("Warning FailedScheduling") && d.contains(&format!("default-scheduler {msg}")),
        "{d}"
    );
    assert!(d.contains("PodScheduled False"), "{d}");
    // kubectl get events: one row for the pod, with a real LAST SEEN.
    let ev = s.kubectl(&["get", "events"]).ok().stdout;
    let row = ev
        .lines()
        .find(|l| l.contains("pod/huge"))
        .unwrap_or_else(|| panic!("{ev}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert!(cells[0].ends_with('s') || cells[0].ends_with('m'), "{row}");
    assert_eq!(&cells[1..4], &["Warning", "FailedScheduling", "pod/huge"]);
    assert!(squash(row).ends_with(msg), "{row}");
    // The event's shape (events.k8s.io recorder through core/v1).
    let raw = s
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=huge",
            "-o",
            "json",
        ])
        .ok()
        .stdout;
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let e = &v["items"][0];
    assert_eq!(e["reportingComponent"], "default-scheduler");
    assert!(
        e["reportingInstance"]
            .as_str()
            .unwrap()
            .starts_with("default-scheduler-")
    );
    assert_eq!(e["action"], "Scheduling");
    assert_eq!(e["involvedObject"]["kind"], "Pod");
    assert!(e["eventTime"].as_str().unwrap().len() == "2026-01-01T00:00:00.000000Z".len());
    assert!(e["metadata"]["name"].as_str().unwrap().starts_with("huge."));
}

#[test]
fn deleting_a_pod_makes_room_for_a_pending_one() {
    let s = Skiff::start();
    s.create_node(node_object("node-1", "2", "8Gi", json!({})));
    create_pod(&s, "first", "1500m", "1Gi", json!({}));
    assert_eq!(wait_bound(&s, "first"), "node-1");
    create_pod(&s, "second", "1500m", "1Gi", json!({}));
    wait_unschedulable(
        &s,
        "second",
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.",
    );
    // No agent runs the pod, so nothing would finish a graceful deletion: delete it at once
    // (what the kubelet's confirmation does). A terminating pod still holds its room.
    s.kubectl(&["delete", "pod", "first", "--grace-period=0", "--force"])
        .ok();
    assert_eq!(wait_bound(&s, "second"), "node-1");
}

#[test]
fn a_new_node_makes_room_for_a_pending_pod() {
    let s = Skiff::start();
    create_pod(&s, "waiting", "1", "1Gi", json!({}));
    wait_unschedulable(&s, "waiting", "no nodes available to schedule pods");
    s.create_node(node_object("node-1", "4", "8Gi", json!({})));
    assert_eq!(wait_bound(&s, "waiting"), "node-1");
}

#[test]
fn uncordoning_a_node_makes_room_for_a_pending_pod() {
    let s = Skiff::start();
    s.create_node(node_object(
        "node-1",
        "4",
        "8Gi",
        json!({"spec": {"unschedulable": true}}),
    ));
    create_pod(&s, "waiting", "1", "1Gi", json!({}));
    wait_unschedulable(
        &s,
        "waiting",
        "0/1 nodes are available: 1 node(s) were unschedulable. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
    );
    s.kubectl(&["uncordon", "node-1"]).ok();
    assert_eq!(wait_bound(&s, "waiting"), "node-1");
}

#[test]
fn image_locality_prefers_the_node_that_has_the_image() {
    let s = Skiff::start();
    s.create_node(node_object("node-a", "8", "16Gi", json!({})));
    s.create_node(node_object(
        "node-b",
        "8",
        "16Gi",
        json!({"status": {"images": [{"names": ["registry.local/app:v1"], "sizeBytes": 800u64 << 20}]}}),
    ));
    s.create_node(node_object("node-c", "8", "16Gi", json!({})));
    for i in 0..3 {
        let name = format!("app-{i}");
        create_pod(&s, &name, "100m", "128Mi", json!({}));
        assert_eq!(wait_bound(&s, &name), "node-b", "pod {name}");
    }
}

#[test]
fn an_untolerated_taint_keeps_a_pod_pending() {
    let s = Skiff::start();
    s.create_node(node_object(
        "node-1",
        "4",
        "8Gi",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
    ));
    create_pod(&s, "plain", "100m", "64Mi", json!({}));
    let msg = "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";
    wait_unschedulable(&s, "plain", msg);
    let d = eventually(WAIT, || {
        Some(describe(&s, "plain")).filter(|d| d.contains("FailedScheduling"))
    });
    assert!(d.contains(msg), "{d}");
    create_pod(
        &s,
        "tolerant",
        "100m",
        "64Mi",
        json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}),
    );
    assert_eq!(wait_bound(&s, "tolerant"), "node-1");
    assert_eq!(node_of(&s, "plain"), "");
}

#[test]
fn node_selector_picks_the_matching_node() {
    let s = Skiff::start();
    s.create_node(node_object("node-1", "4", "8Gi", json!({})));
    s.create_node(node_object(
        "node-2",
        "4",
        "8Gi",
        json!({"metadata": {"labels": {"disk": "ssd"}}}),
    ));
    s.create_node(node_object("node-3", "4", "8Gi", json!({})));
    for i in 0..3 {
        let name = format!("ssd-{i}");
        create_pod(
            &s,
            &name,
            "100m",
            "64Mi",
            json!({"nodeSelector": {"disk": "ssd"}}),
        );
        assert_eq!(wait_bound(&s, &name), "node-2");
    }
    create_pod(
        &s,
        "nvme",
        "100m",
        "64Mi",
        json!({"nodeSelector": {"disk": "nvme"}}),
    );
    wait_unschedulable(
        &s,
        "nvme",
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.",
    );
    // Labelling a node is a cluster event: the pod is retried and lands there.
    s.kubectl(&["label", "node", "node-3", "disk=nvme"]).ok();
    assert_eq!(wait_bound(&s, "nvme"), "node-3");
}

#[test]
fn pods_for_another_scheduler_are_left_alone() {
    let s = Skiff::start();
    s.create_node(node_object("node-1", "4", "8Gi", json!({})));
    create_pod(
        &s,
        "theirs",
        "100m",
        "64Mi",
        json!({"schedulerName": "other-scheduler"}),
    );
    create_pod(&s, "ours", "100m", "64Mi", json!({}));
    // Once a pod created after it is bound, the scheduler has seen the other one too.
    wait_bound(&s, "ours");
    eventually(WAIT, || {
        let ev = s.kubectl(&["get", "events"]).ok().stdout;
        Some(()).filter(|_| ev.contains("pod/ours"))
    });
    assert_eq!(node_of(&s, "theirs"), "");
    assert_eq!(jsonpath(&s, "theirs", "{.status.conditions}"), "");
    let ev = s
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=theirs",
        ])
        .ok();
    assert!(ev.stdout.trim().is_empty(), "{}", ev.stdout);
    assert!(ev.stderr.contains("No resources found"), "{}", ev.stderr);
    let d = describe(&s, "theirs");
    assert!(d.contains("Events: <none>"), "{d}");
}

#[test]
fn a_burst_never_overcommits_a_node() {
    let s = Skiff::start();
    s.create_node(node_object("node-1", "4", "64Gi", json!({})));
    // Ten pods in one JSON stream: kubectl creates them back to back.
    let docs: Vec<String> = (0..10)
        .map(|i| pod_json(&format!("burst-{i}"), "1", "64Mi", json!({})))
        .collect();
    s.kubectl_stdin(&["create", "-f", "-"], Some(&docs.join("\n")))
        .ok();
    let count = |s: &Skiff| -> (usize, usize) {
        let out = s
            .kubectl(&[
                "get",
                "pods",
                "-o",
                r#"jsonpath={range .items[*]}{.spec.nodeName}|{range .status.conditions[?(@.type=="PodScheduled")]}{.status}{end}{"\n"}{end}"#,
            ])
            .ok()
            .stdout;
        let bound = out.lines().filter(|l| l.starts_with("node-1|")).count();
        let refused = out.lines().filter(|l| *l == "|False").count();
        (bound, refused)
    };
    let (bound, refused) = eventually(WAIT, || Some(count(&s)).filter(|(b, r)| b + r == 10));
    assert_eq!((bound, refused), (4, 6));
    // And it stays that way.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(count(&s).0, 4);
}

#[test]
fn repeated_failures_are_aggregated_as_a_series() {
    let s = Skiff::start();
    s.create_node(node_object("node-1", "1", "8Gi", json!({})));
    create_pod(&s, "big", "2", "64Mi", json!({}));
    wait_unschedulable(
        &s,
        "big",
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.",
    );
    // Node label changes are cluster events; the pod is retried (after its back-off) with the
    // same result, which repeats the event instead of creating new ones.
    let mut n = 0;
    let d = eventually(60, || {
        n += 1;
        s.kubectl(&[
            "label",
            "node",
            "node-1",
            &format!("round={n}"),
            "--overwrite",
        ])
        .ok();
        std::thread::sleep(Duration::from_millis(300));
        Some(describe(&s, "big")).filter(|d| d.contains("(x2 over"))
    });
    assert!(d.contains("Warning FailedScheduling"), "{d}");
    let ev = s.kubectl(&["get", "events", "-o", "wide"]).ok().stdout;
    assert!(
        ev.lines()
            .any(|l| l.contains("pod/big") && l.contains("default-scheduler, default-scheduler-")),
        "{ev}"
    );
}

/// `skiff scheduler --kubeconfig` against a server started with `--disable scheduler`.
#[test]
fn the_scheduler_runs_alone_against_a_server() {
    let s = Skiff::start_with(&["--disable", "scheduler"]);
    s.create_node(node_object("node-1", "4", "8Gi", json!({})));
    create_pod(&s, "web", "100m", "64Mi", json!({}));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(node_of(&s, "web"), "", "no scheduler should be running yet");
    let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["scheduler", "--kubeconfig"])
        .arg(&s.kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env("SKIFF_LOG", "warn")
        .spawn()
        .expect("start skiff scheduler");
    let _guard = KillOnDrop(child);
    assert_eq!(wait_bound(&s, "web"), "node-1");
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
