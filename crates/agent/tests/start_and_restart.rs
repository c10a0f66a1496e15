//! A pod's ordinary life: start, crash loop with back-off (and its reset), restart policies.

mod common;

use common::*;
use serde_json::json;
use skiff_agent::{Action, ContainerRef};

fn one(name: &str, policy: &str, image: &str) -> k8s_openapi::api::core::v1::Pod {
    pod(
        name,
        json!({
            "restartPolicy": policy,
            "containers": [{"name": "app", "image": image}],
        }),
    )
}

#[test]
fn pending_to_running_with_pull() {
    let mut sim = Sim::new(
        one("web", "Always", "nginx:1.27"),
        &[("app", Behavior::runs_forever().absent())],
    );
    sim.run_until(30);
    assert_eq!(sim.status_timeline(), ["ContainerCreating", "Running"]);
    let last = sim.steps.last().unwrap();
    assert_eq!(last.ready, "1/1");
    assert_eq!(sim.phase(), "Running");
    let reasons: Vec<_> = sim.events().iter().map(|e| e.2).collect();
    assert_eq!(reasons, ["Pulling", "Pulled", "Created", "Started"]);
    assert_eq!(
        sim.event_messages("Pulled"),
        [
            "Successfully pulled image \"nginx:1.27\" in 993ms (993ms including waiting). Image size: 4190000 bytes."
        ]
    );
    assert_eq!(sim.event_messages("Created"), ["Created container app"]);
    assert_eq!(sim.event_messages("Started"), ["Started container app"]);
    // Conditions in the kubelet's order, all True.
    let conds: Vec<_> = sim
        .status()
        .conditions
        .iter()
        .flatten()
        .map(|c| (c.type_.as_str(), c.status.as_str()))
        .collect();
    assert_eq!(
        conds,
        [
            ("PodReadyToStartContainers", "True"),
            ("Initialized", "True"),
            ("Ready", "True"),
            ("ContainersReady", "True"),
            ("PodScheduled", "True"),
        ]
    );
    let st = sim.container_status("app");
    assert_eq!(st.started, Some(true));
    assert!(st.ready);
    assert_eq!(st.restart_count, 0);
    assert_eq!(sim.status().pod_ip.as_deref(), Some("10.244.0.7"));
    assert_eq!(sim.status().start_time.as_ref().unwrap().0, at(0));
    // Quiescent: nothing scheduled.
    assert_eq!(sim.steps.last().unwrap().decision.wake_at, None);
}

#[test]
fn present_image_is_not_pulled() {
    let mut sim = Sim::new(
        one("web", "Always", "nginx:1.27"),
        &[("app", Behavior::runs_forever())],
    );
    sim.run_until(5);
    assert_eq!(
        sim.event_messages("Pulled"),
        ["Container image \"nginx:1.27\" already present on machine"]
    );
    assert!(
        !sim.actions()
            .iter()
            .any(|(_, a)| matches!(a, Action::PullImage { .. }))
    );
    // The first status the agent writes is ContainerCreating, with the conditions of §1.4.
    let first = &sim.steps[0].decision.status;
    let conds: Vec<_> = first
        .conditions
        .iter()
        .flatten()
        .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_deref()))
        .collect();
    assert_eq!(
        conds,
        [
            ("PodReadyToStartContainers", "False", None),
            ("Initialized", "True", None),
            ("Ready", "False", Some("ContainersNotReady")),
            ("ContainersReady", "False", Some("ContainersNotReady")),
            ("PodScheduled", "True", None),
        ]
    );
    assert_eq!(sim.steps[0].status, "ContainerCreating");
}

#[test]
fn crash_loop_backs_off_to_five_minutes() {
    let mut sim = Sim::new(
        one("crash", "Always", "busybox:1.36"),
        &[("app", Behavior::exits(1, 1))],
    );
    sim.run_until(1500);
    let starts = sim.start_times(ContainerRef::App(0));
    // Each instance runs 1 s; the gap after each exit is the back-off.
    let gaps: Vec<i64> = starts.windows(2).map(|w| w[1] - w[0] - 1).collect();
    assert_eq!(gaps[..8], [0, 10, 20, 40, 80, 160, 300, 300]);

    let uid = "crash_default(uid-crash)";
    let waits = sim.waiting_messages("app");
    let expected: Vec<String> = ["10s", "20s", "40s", "1m20s", "2m40s", "5m0s"]
        .iter()
        .map(|d| format!("back-off {d} restarting failed container=app pod={uid}"))
        .collect();
    assert_eq!(waits[..6], expected[..]);
    assert!(
        sim.event_messages("BackOff")
            .iter()
            .all(|m| m == &format!("Back-off restarting failed container app in pod {uid}"))
    );
    // One BackOff event per blocked restart.
    let episodes = sim
        .status_timeline()
        .iter()
        .filter(|s| *s == "CrashLoopBackOff")
        .count();
    assert_eq!(
        sim.events().iter().filter(|e| e.2 == "BackOff").count(),
        episodes
    );
    assert!(
        sim.events()
            .iter()
            .all(|e| e.2 != "BackOff" || e.1 == "Warning")
    );

    // STATUS alternates Error and CrashLoopBackOff between runs.
    let timeline = sim.status_timeline();
    assert_eq!(
        timeline[..8],
        [
            "ContainerCreating",
            "Running",
            "Error",
            "Running",
            "Error",
            "CrashLoopBackOff",
            "Running",
            "Error"
        ]
    );
    // While in back-off: waiting CrashLoopBackOff, lastState terminated Error, RESTARTS with age.
    let step = sim
        .steps
        .iter()
        .rev()
        .find(|s| s.status == "CrashLoopBackOff")
        .unwrap();
    let st = step
        .decision
        .status
        .container_statuses
        .as_ref()
        .unwrap()
        .first()
        .unwrap();
    let last = st.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(last.exit_code, 1);
    assert_eq!(last.reason.as_deref(), Some("Error"));
    assert!(step.restarts.contains(" ago)"), "{}", step.restarts);
    assert_eq!(step.ready, "0/1");
    assert_eq!(step.decision.status.phase.as_deref(), Some("Running"));
}

#[test]
fn back_off_resets_after_ten_minutes_of_running() {
    // Five quick crashes, then a run of 11 minutes, then quick crashes again.
    let b = Behavior::runs_forever().run(|attempt| match attempt {
        5 => Some((660, 1)),
        _ => Some((1, 1)),
    });
    let mut sim = Sim::new(one("reset", "Always", "busybox:1.36"), &[("app", b)]);
    sim.run_until(2000);
    let starts = sim.start_times(ContainerRef::App(0));
    let gaps: Vec<i64> = starts
        .windows(2)
        .enumerate()
        .map(|(i, w)| w[1] - w[0] - if i == 5 { 660 } else { 1 })
        .collect();
    // 0,10,20,40,80 before the long run; after it the back-off starts over: at once, then 10s.
    assert_eq!(gaps[..8], [0, 10, 20, 40, 80, 0, 10, 20]);
}

#[test]
fn on_failure_restarts_until_success() {
    let b = Behavior::runs_forever().run(|attempt| Some((2, if attempt < 2 { 1 } else { 0 })));
    let mut sim = Sim::new(one("job", "OnFailure", "busybox:1.36"), &[("app", b)]);
    sim.run_until(600);
    assert_eq!(sim.start_times(ContainerRef::App(0)).len(), 3);
    assert_eq!(sim.phase(), "Succeeded");
    let last = sim.steps.last().unwrap();
    assert_eq!(last.status, "Completed");
    assert_eq!(last.ready, "0/1");
    assert_eq!(
        sim.condition("ContainersReady"),
        ("False".into(), Some("PodCompleted".into()), None)
    );
    assert_eq!(sim.condition("Ready").1.as_deref(), Some("PodCompleted"));
    assert_eq!(
        sim.condition("Initialized"),
        ("True".into(), Some("PodCompleted".into()), None)
    );
    assert_eq!(sim.condition("PodReadyToStartContainers").0, "False");
    assert!(sim.actions().iter().any(|(_, a)| *a == Action::KillPod));
    assert_eq!(sim.container_status("app").restart_count, 2);
}

#[test]
fn never_does_not_restart() {
    let mut sim = Sim::new(
        one("once", "Never", "busybox:1.36"),
        &[("app", Behavior::exits(3, 2))],
    );
    sim.run_until(600);
    assert_eq!(sim.start_times(ContainerRef::App(0)).len(), 1);
    assert_eq!(sim.phase(), "Failed");
    assert_eq!(sim.steps.last().unwrap().status, "Error");
    assert_eq!(
        sim.condition("ContainersReady").1.as_deref(),
        Some("PodFailed")
    );
    let t = sim
        .container_status("app")
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (2, Some("Error")));
    assert!(sim.event_messages("BackOff").is_empty());

    let mut ok = Sim::new(
        one("once-ok", "Never", "busybox:1.36"),
        &[("app", Behavior::exits(3, 0))],
    );
    ok.run_until(600);
    assert_eq!(ok.phase(), "Succeeded");
    assert_eq!(ok.steps.last().unwrap().status, "Completed");
}

#[test]
fn completed_container_under_always_is_restarted_with_back_off() {
    let mut sim = Sim::new(
        one("done", "Always", "busybox:1.36"),
        &[("app", Behavior::exits(1, 0))],
    );
    sim.run_until(60);
    let timeline = sim.status_timeline();
    assert!(timeline.contains(&"Completed".to_string()), "{timeline:?}");
    assert!(
        timeline.contains(&"CrashLoopBackOff".to_string()),
        "{timeline:?}"
    );
    assert_eq!(sim.phase(), "Running");
}

#[test]
fn terminal_phase_is_sticky() {
    let mut sim = Sim::new(
        one("sticky", "Never", "busybox:1.36"),
        &[("app", Behavior::exits(1, 0))],
    );
    sim.run_until(10);
    assert_eq!(sim.phase(), "Succeeded");
    // Even if the runtime later reports something running, the phase stays terminal and
    // nothing is started.
    sim.obs.push_instance(
        ContainerRef::App(0),
        skiff_agent::Instance {
            attempt: 1,
            id: "containerd://x".into(),
            image: String::new(),
            image_id: String::new(),
            state: skiff_agent::InstanceState::Running { started_at: at(20) },
        },
    );
    sim.now = at(20);
    let step = sim.step();
    assert_eq!(step.decision.status.phase.as_deref(), Some("Succeeded"));
    assert!(
        !step
            .decision
            .actions
            .iter()
            .any(|a| matches!(a, Action::CreateAndStart { .. }))
    );
    // A fresh memory seeded from the stored status keeps it too.
    let mut fresh = skiff_agent::PodMemory::new();
    let d = skiff_agent::decide(&sim.pod, &sim.obs, &mut fresh, at(30));
    assert_eq!(d.status.phase.as_deref(), Some("Succeeded"));
}
