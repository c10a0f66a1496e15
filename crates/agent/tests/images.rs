//! Image pull policies, pull failures and the image pull back-off.

mod common;

use common::*;
use serde_json::json;
use skiff_agent::{Action, ContainerRef, StartError};

const NOT_FOUND: &str = "rpc error: code = NotFound desc = failed to pull and unpack image \"docker.io/library/nginx:nope\": failed to resolve reference \"docker.io/library/nginx:nope\": docker.io/library/nginx:nope: not found";

fn pulls(sim: &Sim) -> Vec<i64> {
    sim.actions()
        .into_iter()
        .filter_map(|(t, a)| matches!(a, Action::PullImage { .. }).then_some(t))
        .collect()
}

#[test]
fn bad_tag_alternates_err_image_pull_and_image_pull_back_off() {
    let p = pod(
        "bad",
        json!({"containers": [{"name": "app", "image": "nginx:nope"}]}),
    );
    let b = Behavior::runs_forever()
        .absent()
        .pull(|_| Err(NOT_FOUND.to_string()));
    let mut sim = Sim::new(p, &[("app", b)]);
    sim.run_until(200);
    // Pull attempts 1 s long; after each failure the back-off doubles (10, 20, 40, 80 s).
    assert_eq!(pulls(&sim), [0, 11, 32, 73, 154]);
    let timeline = sim.status_timeline();
    assert_eq!(
        timeline[..5],
        [
            "ContainerCreating",
            "ErrImagePull",
            "ImagePullBackOff",
            "ErrImagePull",
            "ImagePullBackOff"
        ]
    );
    let events: Vec<(&str, &str, String)> = sim
        .events()
        .into_iter()
        .take(6)
        .map(|(_, t, r, m)| (t, r, m))
        .collect();
    assert_eq!(
        events,
        [
            (
                "Normal",
                "Pulling",
                "Pulling image \"nginx:nope\"".to_string()
            ),
            (
                "Warning",
                "Failed",
                format!("Failed to pull image \"nginx:nope\": {NOT_FOUND}")
            ),
            ("Warning", "Failed", "Error: ErrImagePull".to_string()),
            (
                "Normal",
                "BackOff",
                "Back-off pulling image \"nginx:nope\"".to_string()
            ),
            ("Warning", "Failed", "Error: ImagePullBackOff".to_string()),
            (
                "Normal",
                "Pulling",
                "Pulling image \"nginx:nope\"".to_string()
            ),
        ]
    );
    let waits = sim.waiting_messages("app");
    assert_eq!(waits[0], NOT_FOUND);
    assert_eq!(
        waits[1],
        format!("Back-off pulling image \"nginx:nope\": ErrImagePull: {NOT_FOUND}")
    );
    assert!(sim.start_times(ContainerRef::App(0)).is_empty());
    assert_eq!(sim.phase(), "Pending");
    let backoff = sim.mem.image_backoff("nginx:nope").unwrap();
    assert_eq!(backoff.backoff.as_secs(), 160);
}

#[test]
fn pull_succeeds_after_failures() {
    let p = pod(
        "flaky",
        json!({"containers": [{"name": "app", "image": "nginx:1.27"}]}),
    );
    let b = Behavior::runs_forever().absent().pull(|n| {
        if n < 2 {
            Err("dial tcp: i/o timeout".into())
        } else {
            Ok(())
        }
    });
    let mut sim = Sim::new(p, &[("app", b)]);
    sim.run_until(100);
    assert_eq!(pulls(&sim), [0, 11, 32]);
    assert_eq!(sim.start_times(ContainerRef::App(0)), [33]);
    assert_eq!(sim.steps.last().unwrap().status, "Running");
}

#[test]
fn never_policy_with_missing_image() {
    let p = pod(
        "never",
        json!({"containers": [{"name": "app", "image": "local/app:dev", "imagePullPolicy": "Never"}]}),
    );
    let mut sim = Sim::new(p, &[("app", Behavior::runs_forever().absent())]);
    sim.run_until(25);
    assert!(pulls(&sim).is_empty());
    let msg = "Container image \"local/app:dev\" is not present with pull policy of Never";
    // Retried on each sync retry (every 10 s).
    assert_eq!(sim.event_messages("ErrImageNeverPull"), vec![msg; 3]);
    assert_eq!(
        sim.event_messages("Failed"),
        vec!["Error: ErrImageNeverPull"; 3]
    );
    assert_eq!(
        sim.status_timeline(),
        ["ContainerCreating", "ErrImageNeverPull"]
    );
    assert_eq!(sim.waiting_messages("app"), [msg]);
    // The image shows up: the next retry starts the container.
    sim.obs.container_mut(ContainerRef::App(0)).image = skiff_agent::ImagePresence::Present;
    sim.run_until(40);
    assert_eq!(sim.start_times(ContainerRef::App(0)), [30]);
}

#[test]
fn always_policy_pulls_on_every_start() {
    let p = pod(
        "latest",
        json!({"containers": [{"name": "app", "image": "busybox"}]}),
    );
    let mut sim = Sim::new(p, &[("app", Behavior::exits(5, 0))]);
    sim.run_until(30);
    // `busybox` defaults to imagePullPolicy Always: pulled even though present, and again
    // for the restart.
    assert_eq!(pulls(&sim).len(), 3);
}

#[test]
fn config_errors_are_retried_every_ten_seconds() {
    let p = pod(
        "cfg",
        json!({"containers": [{"name": "app", "image": "nginx:1.27"}]}),
    );
    let mut b = Behavior::runs_forever();
    // No instance is created, so every try is attempt 0; the ConfigMap appears on the third.
    let tries = std::rc::Rc::new(std::cell::Cell::new(0));
    b.start_error = std::rc::Rc::new(move |attempt| {
        assert_eq!(attempt, 0);
        tries.set(tries.get() + 1);
        (tries.get() < 3).then(|| StartError::Config("configmap \"cfg\" not found".into()))
    });
    let mut sim = Sim::new(p, &[("app", b)]);
    sim.run_until(40);
    assert_eq!(
        sim.actions()
            .iter()
            .filter(|(_, a)| matches!(a, Action::CreateAndStart { .. }))
            .map(|(t, _)| *t)
            .collect::<Vec<_>>(),
        [0, 10, 20]
    );
    assert!(
        sim.status_timeline()
            .contains(&"CreateContainerConfigError".to_string())
    );
    assert!(
        sim.event_messages("Failed")
            .contains(&"Error: configmap \"cfg\" not found".to_string())
    );
    assert_eq!(sim.steps.last().unwrap().status, "Running");
}

#[test]
fn run_container_error_then_crash_loop() {
    let p = pod(
        "noexec",
        json!({"containers": [{"name": "app", "image": "nginx:1.27"}]}),
    );
    let mut b = Behavior::runs_forever();
    let msg = "failed to create containerd task: failed to create shim task: OCI runtime create failed: exec: \"foo\": executable file not found in $PATH: unknown";
    b.start_error = std::rc::Rc::new(move |_| Some(StartError::Run(msg.into())));
    let mut sim = Sim::new(p, &[("app", b)]);
    sim.run_until(60);
    let timeline = sim.status_timeline();
    assert!(
        timeline.contains(&"RunContainerError".to_string()),
        "{timeline:?}"
    );
    assert!(
        timeline.contains(&"CrashLoopBackOff".to_string()),
        "{timeline:?}"
    );
    let st = sim.container_status("app");
    let last = st.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(
        (last.exit_code, last.reason.as_deref()),
        (128, Some("StartError"))
    );
    assert!(sim.event_messages("Created").len() >= 2);
}

#[test]
fn invalid_image_name_is_retried_without_pulling() {
    let p = pod(
        "badname",
        json!({"containers": [{"name": "app", "image": "Nginx:1.27", "imagePullPolicy": "IfNotPresent"}]}),
    );
    let mut sim = Sim::new(p, &[("app", Behavior::runs_forever().absent())]);
    sim.run_until(25);
    assert!(pulls(&sim).is_empty());
    assert!(sim.start_times(ContainerRef::App(0)).is_empty());
    let msg = "Failed to apply default image tag \"Nginx:1.27\": invalid reference format: repository name must be lowercase";
    // Tried at 0, 10 and 20 s (the sync retry), each time with both events.
    assert_eq!(sim.event_messages("InspectFailed"), vec![msg; 3]);
    assert_eq!(
        sim.event_messages("Failed"),
        vec!["Error: InvalidImageName"; 3]
    );
    let warnings: Vec<_> = sim
        .events()
        .into_iter()
        .take(2)
        .map(|(_, t, r, _)| (t, r))
        .collect();
    assert_eq!(
        warnings,
        [("Warning", "InspectFailed"), ("Warning", "Failed")]
    );
    assert_eq!(
        sim.status_timeline(),
        ["ContainerCreating", "InvalidImageName"]
    );
    assert_eq!(sim.waiting_messages("app"), [msg]);
    assert_eq!(sim.phase(), "Pending");
}
