//! `activeDeadlineSeconds`: the pod is killed once `startTime + deadline` has passed and ends
//! `Failed` with reason `DeadlineExceeded`; the deadline may be set or lowered on a running pod.

mod common;

use common::*;
use serde_json::json;
use skiff_agent::Action;

const MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

fn sleeper(name: &str, deadline: Option<i64>, grace: i64) -> k8s_openapi::api::core::v1::Pod {
    let mut spec = json!({
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": grace,
        "containers": [
            {"name": "app", "image": "busybox:1.36"},
            {"name": "side", "image": "busybox:1.36"},
        ],
    });
    if let Some(d) = deadline {
        spec["activeDeadlineSeconds"] = json!(d);
    }
    pod(name, spec)
}

#[test]
fn pod_past_its_deadline_is_killed_and_fails() {
    let mut sim = Sim::new(
        sleeper("dl", Some(5), 3),
        &[
            ("app", Behavior::runs_forever().on_term(OnTerm::Ignore)),
            ("side", Behavior::runs_forever()),
        ],
    );
    sim.run_until(60);
    // The event once, at the deadline (startTime is T0).
    let ev: Vec<_> = sim
        .events()
        .into_iter()
        .filter(|e| e.2 == "DeadlineExceeded")
        .collect();
    assert_eq!(ev, [(5, "Normal", "DeadlineExceeded", MESSAGE.to_string())]);
    // Every container gets the usual kill with the pod's grace period.
    let kills: Vec<_> = sim
        .actions()
        .into_iter()
        .filter_map(|(t, a)| match a {
            Action::Kill { grace_seconds, .. } => Some((t, grace_seconds)),
            _ => None,
        })
        .collect();
    assert_eq!(kills, [(5, 3), (5, 3)]);
    assert_eq!(
        sim.event_messages("Killing"),
        ["Stopping container app", "Stopping container side"]
    );
    let st = sim.status();
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    assert_eq!(st.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(st.message.as_deref(), Some(MESSAGE));
    // kubectl shows the pod's reason while the containers stop, then the killed container's
    // own reason (as with the kubelet); nothing is restarted.
    assert_eq!(
        sim.status_changes(),
        [
            (0, "ContainerCreating".to_string()),
            (0, "Running".to_string()),
            (5, "DeadlineExceeded".to_string()),
            // `side` stopped at once, `app` (ignoring SIGTERM) still runs.
            (5, "NotReady".to_string()),
            (8, "Error".to_string()),
        ]
    );
    assert_eq!(sim.start_times(sim.find("app")), [0]);
    assert!(sim.mem.deadline_exceeded());
    // The sandbox goes once everything stopped (app ignores SIGTERM: SIGKILL at 5 + 3).
    let kill_pod: Vec<_> = sim
        .actions()
        .into_iter()
        .filter(|(_, a)| *a == Action::KillPod)
        .map(|(t, _)| t)
        .collect();
    assert_eq!(kill_pod, [8]);
}

#[test]
fn no_deadline_runs_on() {
    let mut sim = Sim::new(
        sleeper("nodl", None, 3),
        &[
            ("app", Behavior::runs_forever()),
            ("side", Behavior::runs_forever()),
        ],
    );
    sim.run_until(600);
    assert_eq!(sim.phase(), "Running");
    assert!(sim.event_messages("DeadlineExceeded").is_empty());
}

#[test]
fn deadline_set_or_lowered_on_a_running_pod() {
    // Set on a pod that had none, at 20 s, to 30 s: fires at startTime + 30.
    let mut sim = Sim::new(
        sleeper("set", None, 1),
        &[
            ("app", Behavior::runs_forever()),
            ("side", Behavior::runs_forever()),
        ],
    );
    sim.run_until(20);
    assert_eq!(sim.phase(), "Running");
    sim.pod.spec.as_mut().unwrap().active_deadline_seconds = Some(30);
    sim.run_until(100);
    let ev: Vec<_> = sim
        .events()
        .into_iter()
        .filter(|e| e.2 == "DeadlineExceeded")
        .map(|e| e.0)
        .collect();
    assert_eq!(ev, [30]);
    assert_eq!(sim.phase(), "Failed");

    // Lowered from 1000 to 10 at 40 s: already past, so it fires at once.
    let mut sim = Sim::new(
        sleeper("lower", Some(1000), 1),
        &[
            ("app", Behavior::runs_forever()),
            ("side", Behavior::runs_forever()),
        ],
    );
    sim.run_until(40);
    assert_eq!(sim.phase(), "Running");
    sim.pod.spec.as_mut().unwrap().active_deadline_seconds = Some(10);
    sim.run_until(100);
    let ev: Vec<_> = sim
        .events()
        .into_iter()
        .filter(|e| e.2 == "DeadlineExceeded")
        .map(|e| e.0)
        .collect();
    assert_eq!(ev, [40]);
    let st = sim.status();
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    assert_eq!(st.reason.as_deref(), Some("DeadlineExceeded"));
}

#[test]
fn a_finished_pod_is_not_failed_by_its_deadline() {
    let mut spec = json!({
        "restartPolicy": "Never",
        "activeDeadlineSeconds": 10,
        "containers": [{"name": "app", "image": "busybox:1.36"}],
    });
    spec["terminationGracePeriodSeconds"] = json!(1);
    let mut sim = Sim::new(pod("done", spec), &[("app", Behavior::exits(3, 0))]);
    sim.run_until(100);
    assert_eq!(sim.phase(), "Succeeded");
    assert!(sim.event_messages("DeadlineExceeded").is_empty());
}
