//! Init containers (sequential, retried with back-off, fatal under Never) and sidecars.

mod common;

use common::*;
use serde_json::json;
use skiff_agent::{Action, ContainerRef, ProbeKind, ProbeOutcome};

fn two_inits(policy: &str) -> k8s_openapi::api::core::v1::Pod {
    pod(
        "init",
        json!({
            "restartPolicy": policy,
            "initContainers": [
                {"name": "first", "image": "busybox:1.36"},
                {"name": "second", "image": "busybox:1.36"},
            ],
            "containers": [{"name": "app", "image": "nginx:1.27"}],
        }),
    )
}

#[test]
fn init_containers_run_one_at_a_time() {
    let mut sim = Sim::new(
        two_inits("Always"),
        &[
            ("first", Behavior::exits(5, 0)),
            ("second", Behavior::exits(3, 0)),
            ("app", Behavior::runs_forever().absent()),
        ],
    );
    sim.run_until(60);
    assert_eq!(
        sim.status_timeline(),
        ["Init:0/2", "Init:1/2", "PodInitializing", "Running"]
    );
    assert_eq!(sim.steps.first().unwrap().ready, "0/1");
    assert_eq!(sim.steps.last().unwrap().ready, "1/1");
    assert_eq!(sim.start_times(ContainerRef::Init(0)), [0]);
    assert_eq!(sim.start_times(ContainerRef::Init(1)), [5]);
    // The app's image is pulled after the second init container finished.
    assert_eq!(sim.start_times(ContainerRef::App(0)), [9]);
    let first = &sim.steps[0].decision.status;
    let inits: Vec<_> = first
        .init_container_statuses
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(inits, ["first", "second"]);
    for c in first
        .init_container_statuses
        .iter()
        .flatten()
        .chain(first.container_statuses.iter().flatten())
    {
        let w = c.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(w.reason.as_deref(), Some("PodInitializing"));
    }
    assert_eq!(
        sim.steps[0].decision.status.conditions.as_ref().unwrap()[1]
            .message
            .as_deref(),
        Some("containers with incomplete status: [first second]")
    );
    // Done init containers are ready and terminated Completed.
    let st = sim.container_status("first");
    assert!(st.ready);
    assert_eq!(
        st.state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("Completed")
    );
    assert_eq!(sim.condition("Initialized").0, "True");
    assert_eq!(sim.phase(), "Running");
}

#[test]
fn failing_init_container_is_retried_with_back_off() {
    let mut sim = Sim::new(
        two_inits("Always"),
        &[
            ("first", Behavior::exits(1, 1)),
            ("app", Behavior::runs_forever()),
        ],
    );
    sim.run_until(120);
    let timeline = sim.status_timeline();
    assert_eq!(
        timeline[..5],
        [
            "Init:0/2",
            "Init:Error",
            "Init:0/2",
            "Init:Error",
            "Init:CrashLoopBackOff"
        ]
    );
    let starts = sim.start_times(ContainerRef::Init(0));
    let gaps: Vec<i64> = starts.windows(2).map(|w| w[1] - w[0] - 1).collect();
    assert_eq!(gaps[..3], [0, 10, 20]);
    assert!(sim.start_times(ContainerRef::Init(1)).is_empty());
    assert!(sim.start_times(ContainerRef::App(0)).is_empty());
    assert_eq!(sim.phase(), "Pending");
    let step = sim
        .steps
        .iter()
        .rev()
        .find(|s| s.status == "Init:CrashLoopBackOff")
        .unwrap();
    assert!(
        step.restarts.starts_with(&format!("{}", starts.len() - 1)),
        "{}",
        step.restarts
    );
}

#[test]
fn failing_init_container_under_never_fails_the_pod() {
    let mut sim = Sim::new(
        two_inits("Never"),
        &[
            ("first", Behavior::exits(2, 1)),
            ("app", Behavior::runs_forever()),
        ],
    );
    sim.run_until(120);
    assert_eq!(sim.start_times(ContainerRef::Init(0)).len(), 1);
    assert!(sim.start_times(ContainerRef::App(0)).is_empty());
    assert_eq!(sim.phase(), "Failed");
    assert_eq!(sim.steps.last().unwrap().status, "Init:Error");
    assert!(sim.actions().iter().any(|(_, a)| *a == Action::KillPod));
    assert_eq!(
        sim.condition("ContainersReady").1.as_deref(),
        Some("PodFailed")
    );
    assert_eq!(sim.condition("Initialized").0, "False");
}

#[test]
fn sidecars_start_in_order_and_keep_running() {
    let p = pod(
        "side",
        json!({
            "restartPolicy": "Never",
            "initContainers": [
                {"name": "proxy", "image": "envoy:1.30", "restartPolicy": "Always",
                 "readinessProbe": {"tcpSocket": {"port": 15000}}},
                {"name": "setup", "image": "busybox:1.36"},
            ],
            "containers": [{"name": "app", "image": "nginx:1.27"}],
        }),
    );
    let mut sim = Sim::new(
        p,
        &[
            (
                "proxy",
                Behavior::runs_forever().on_term(OnTerm::Exit { secs: 1, code: 0 }),
            ),
            ("setup", Behavior::exits(4, 0)),
            ("app", Behavior::exits(30, 0)),
        ],
    );
    sim.run_until(20);
    assert_eq!(sim.start_times(ContainerRef::Init(0)), [0]);
    assert_eq!(sim.start_times(ContainerRef::Init(1)), [0]);
    assert_eq!(sim.start_times(ContainerRef::App(0)), [4]);
    // The sidecar is started before the next init container.
    let order: Vec<_> = sim
        .actions()
        .into_iter()
        .filter_map(|(_, a)| match a {
            Action::CreateAndStart { container, .. } => Some(container),
            _ => None,
        })
        .collect();
    assert_eq!(
        order,
        [
            ContainerRef::Init(0),
            ContainerRef::Init(1),
            ContainerRef::App(0)
        ]
    );
    let last = sim.steps.last().unwrap();
    assert_eq!(last.status, "Running");
    assert_eq!(last.ready, "2/2");
    assert!(
        sim.container_status("proxy")
            .state
            .as_ref()
            .unwrap()
            .running
            .is_some()
    );

    // The app completes: the sidecar is stopped and the pod succeeds.
    sim.run_until(120);
    assert_eq!(sim.phase(), "Succeeded");
    assert_eq!(sim.event_messages("Killing"), ["Stopping container proxy"]);
    assert_eq!(sim.steps.last().unwrap().status, "Completed");
}

#[test]
fn sidecar_with_startup_probe_gates_the_next_init_container() {
    let p = pod(
        "gate",
        json!({
            "initContainers": [
                {"name": "proxy", "image": "envoy:1.30", "restartPolicy": "Always",
                 "startupProbe": {"tcpSocket": {"port": 15000}, "periodSeconds": 2}},
            ],
            "containers": [{"name": "app", "image": "nginx:1.27"}],
        }),
    );
    let probe = |kind: ProbeKind, _: u32, since: i64| {
        assert_eq!(kind, ProbeKind::Startup);
        if since >= 6 {
            ProbeOutcome::Success
        } else {
            ProbeOutcome::Failure("dial tcp 10.244.0.7:15000: connect: connection refused".into())
        }
    };
    let mut sim = Sim::new(
        p,
        &[
            ("proxy", Behavior::runs_forever().probe(probe)),
            ("app", Behavior::runs_forever()),
        ],
    );
    sim.run_until(30);
    assert_eq!(sim.start_times(ContainerRef::App(0)), [6]);
    assert_eq!(
        sim.event_messages("Unhealthy"),
        [
            "Startup probe failed: dial tcp 10.244.0.7:15000: connect: connection refused",
            "Startup probe failed: dial tcp 10.244.0.7:15000: connect: connection refused"
        ]
    );
    assert_eq!(sim.steps.last().unwrap().ready, "2/2");
}

#[test]
fn sidecars_stop_after_regular_containers_on_delete() {
    let p = pod(
        "order",
        json!({
            "terminationGracePeriodSeconds": 10,
            "initContainers": [
                {"name": "a-side", "image": "envoy:1.30", "restartPolicy": "Always"},
                {"name": "b-side", "image": "envoy:1.30", "restartPolicy": "Always"},
            ],
            "containers": [{"name": "app", "image": "nginx:1.27"}],
        }),
    );
    let mut sim = Sim::new(
        p,
        &[
            (
                "a-side",
                Behavior::runs_forever().on_term(OnTerm::Exit { secs: 1, code: 0 }),
            ),
            (
                "b-side",
                Behavior::runs_forever().on_term(OnTerm::Exit { secs: 1, code: 0 }),
            ),
            (
                "app",
                Behavior::runs_forever().on_term(OnTerm::Exit { secs: 3, code: 0 }),
            ),
        ],
    );
    sim.run_until(10);
    assert_eq!(sim.steps.last().unwrap().ready, "3/3");
    sim.delete(10);
    let deleted_at = secs_of(sim.now);
    sim.run_until(100);
    assert!(sim.deleted);
    let kills: Vec<(i64, ContainerRef, i64)> = sim
        .actions()
        .into_iter()
        .filter_map(|(t, a)| match a {
            Action::Kill {
                container,
                grace_seconds,
                ..
            } => Some((t - deleted_at, container, grace_seconds)),
            _ => None,
        })
        .collect();
    // The app first; the later sidecar once the app is gone; the first sidecar last. Waiting
    // counts against each sidecar's grace period.
    assert_eq!(
        kills,
        [
            (0, ContainerRef::App(0), 10),
            (3, ContainerRef::Init(1), 7),
            (4, ContainerRef::Init(0), 6),
        ]
    );
    assert_eq!(sim.phase(), "Succeeded");
}
