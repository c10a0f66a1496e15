//! postStart / preStop hooks and graceful deletion.

mod common;

use common::*;
use serde_json::json;
use skiff_agent::{Action, ContainerRef, KillReason};

fn hooked(name: &str, lifecycle: serde_json::Value, grace: i64) -> k8s_openapi::api::core::v1::Pod {
    pod(
        name,
        json!({
            "terminationGracePeriodSeconds": grace,
            "containers": [{"name": "app", "image": "nginx:1.27", "lifecycle": lifecycle}],
        }),
    )
}

fn kills(sim: &Sim) -> Vec<(i64, i64, KillReason)> {
    sim.actions()
        .into_iter()
        .filter_map(|(t, a)| match a {
            Action::Kill {
                grace_seconds,
                reason,
                ..
            } => Some((t, grace_seconds, reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn container_is_not_running_until_post_start_finishes() {
    let p = hooked(
        "post",
        json!({"postStart": {"exec": {"command": ["sh", "-c", "sleep 3"]}}}),
        30,
    );
    let mut sim = Sim::new(
        p,
        &[("app", Behavior::runs_forever().post_start(|_| (3, None)))],
    );
    sim.run_until(10);
    assert_eq!(
        sim.status_changes(),
        [
            (0, "ContainerCreating".to_string()),
            (3, "Running".to_string())
        ]
    );
    assert!(
        sim.actions()
            .iter()
            .any(|(t, a)| *t == 0 && matches!(a, Action::RunPostStart { .. }))
    );
    // While the hook ran, the status said waiting/ContainerCreating with no container id.
    let during = &sim
        .steps
        .iter()
        .find(|s| s.at == 2 || (s.at == 0 && s.decision.actions.is_empty()))
        .unwrap()
        .decision
        .status;
    let st = &during.container_statuses.as_ref().unwrap()[0];
    assert_eq!(
        st.state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("ContainerCreating")
    );
    assert_eq!(st.container_id, None);
    assert_eq!(sim.steps.last().unwrap().ready, "1/1");
}

#[test]
fn failed_post_start_kills_and_restarts() {
    let p = hooked(
        "post-fail",
        json!({"postStart": {"exec": {"command": ["sh", "-c", "exit 1"]}}}),
        30,
    );
    let detail = "Exec lifecycle hook ([sh -c exit 1]) for Container \"app\" in Pod \"post-fail_default(uid-post-fail)\" failed - error: command 'sh -c exit 1' exited with 1: , message: \"\"";
    let b = Behavior::runs_forever()
        .post_start(move |attempt| (1, (attempt == 0).then(|| detail.to_string())))
        .on_term(OnTerm::Exit { secs: 1, code: 137 });
    let mut sim = Sim::new(p, &[("app", b)]);
    sim.run_until(30);
    assert_eq!(
        sim.event_messages("FailedPostStartHook"),
        ["PostStartHook failed"]
    );
    assert_eq!(sim.event_messages("Killing"), ["FailedPostStartHook"]);
    assert_eq!(kills(&sim), [(1, 30, KillReason::PostStartHook)]);
    // ContainerCreating during the hook and the kill, then PostStartHookError, then running.
    assert_eq!(
        sim.status_changes(),
        [
            (0, "ContainerCreating".to_string()),
            (2, "PostStartHookError".to_string()),
            (3, "Running".to_string())
        ]
    );
    assert_eq!(sim.waiting_messages("app"), [detail]);
    assert_eq!(sim.container_status("app").restart_count, 1);
}

#[test]
fn delete_runs_pre_stop_then_stops_with_the_remaining_grace() {
    // preStop sleeps 2 s, grace 5 s, the process ignores SIGTERM: SIGKILL 5 s after the delete.
    let p = hooked(
        "stop",
        json!({"preStop": {"exec": {"command": ["sleep", "2"]}}}),
        30,
    );
    let mut sim = Sim::new(
        p,
        &[(
            "app",
            Behavior::runs_forever().pre_stop(2).on_term(OnTerm::Ignore),
        )],
    );
    sim.run_until(10);
    sim.now = at(10);
    sim.delete(5);
    sim.run_until(100);
    assert_eq!(sim.event_messages("Killing"), ["Stopping container app"]);
    let pre_stop: Vec<_> = sim
        .actions()
        .into_iter()
        .filter(|(_, a)| matches!(a, Action::RunPreStop { .. }))
        .collect();
    assert_eq!(
        pre_stop,
        [(
            10,
            Action::RunPreStop {
                container: ContainerRef::App(0),
                attempt: 0,
                grace_seconds: 5
            }
        )]
    );
    assert_eq!(kills(&sim), [(12, 3, KillReason::Stop)]);
    assert!(sim.deleted);
    let changes = sim.status_changes();
    assert_eq!(
        changes[changes.len() - 2..],
        [(10, "Terminating".to_string()), (15, "Error".to_string())]
    );
    assert_eq!(sim.phase(), "Failed");
    let t = sim
        .container_status("app")
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(t.exit_code, 137);
    assert_eq!(sim.condition("Ready").1.as_deref(), Some("PodFailed"));
    assert_eq!(sim.condition("PodReadyToStartContainers").0, "False");
    // Sandbox down before the deletion is confirmed, with the final status in the same decision.
    let last = sim.steps.last().unwrap();
    assert_eq!(last.decision.actions, [Action::ConfirmDeletion]);
    assert_eq!(last.decision.status.phase.as_deref(), Some("Failed"));
    let kill_pod = sim
        .actions()
        .iter()
        .position(|(_, a)| *a == Action::KillPod)
        .unwrap();
    let confirm = sim
        .actions()
        .iter()
        .position(|(_, a)| *a == Action::ConfirmDeletion)
        .unwrap();
    assert!(kill_pod < confirm);
}

#[test]
fn hanging_pre_stop_uses_up_the_grace_and_leaves_two_seconds() {
    let p = hooked(
        "hang",
        json!({"preStop": {"exec": {"command": ["sleep", "3600"]}}}),
        30,
    );
    let mut sim = Sim::new(
        p,
        &[(
            "app",
            Behavior::runs_forever()
                .pre_stop(3600)
                .on_term(OnTerm::Ignore),
        )],
    );
    sim.run_until(1);
    sim.now = at(1);
    sim.delete(5);
    sim.run_until(100);
    assert_eq!(kills(&sim), [(6, 2, KillReason::Stop)]);
    assert!(sim.deleted);
}

#[test]
fn container_exiting_on_sigterm_completes() {
    let p = hooked("term", json!({}), 30);
    let mut sim = Sim::new(
        p,
        &[(
            "app",
            Behavior::runs_forever().on_term(OnTerm::Exit { secs: 0, code: 0 }),
        )],
    );
    sim.run_until(1);
    sim.now = at(1);
    sim.delete(30);
    sim.run_until(100);
    assert_eq!(kills(&sim), [(1, 30, KillReason::Stop)]);
    assert_eq!(sim.phase(), "Succeeded");
    assert_eq!(sim.steps.last().unwrap().status, "Completed");
    assert_eq!(
        sim.condition("ContainersReady").1.as_deref(),
        Some("PodCompleted")
    );
}

#[test]
fn deleted_pod_in_crash_loop_is_not_restarted() {
    let p = hooked("crash-del", json!({}), 30);
    let mut sim = Sim::new(p, &[("app", Behavior::exits(1, 1))]);
    sim.run_until(5);
    sim.delete(30);
    sim.run_until(200);
    assert!(sim.deleted);
    assert!(
        sim.start_times(ContainerRef::App(0))
            .iter()
            .all(|t| *t <= 5)
    );
    assert!(kills(&sim).is_empty());
    assert_eq!(sim.phase(), "Failed");
    let last = sim.container_status("app");
    assert!(last.state.as_ref().unwrap().terminated.is_some());
}

#[test]
fn deleting_a_pod_that_never_started() {
    let p = hooked("stuck", json!({}), 30);
    let mut sim = Sim::new(
        p,
        &[(
            "app",
            Behavior::runs_forever()
                .absent()
                .pull(|_| Err("not found".into())),
        )],
    );
    sim.run_until(20);
    sim.delete(30);
    sim.run_until(200);
    assert!(sim.deleted);
    assert_eq!(sim.phase(), "Failed");
    assert!(kills(&sim).is_empty());
}

#[test]
fn liveness_kill_uses_the_probe_grace_override() {
    let p = pod(
        "probe-grace",
        json!({
            "containers": [{"name": "app", "image": "nginx:1.27",
                "livenessProbe": {"tcpSocket": {"port": 80}, "failureThreshold": 1, "terminationGracePeriodSeconds": 7}}],
        }),
    );
    let fail = |_: skiff_agent::ProbeKind, _: u32, _: i64| {
        skiff_agent::ProbeOutcome::Failure("dial tcp: connection refused".into())
    };
    let mut sim = Sim::new(
        p,
        &[(
            "app",
            Behavior::runs_forever().probe(fail).on_term(OnTerm::Ignore),
        )],
    );
    sim.run_until(12);
    assert_eq!(
        kills(&sim),
        [(10, 7, KillReason::Liveness { restart: true })]
    );
}
