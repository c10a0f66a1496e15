//! The shape of the reported status: condition order and times, list orders, start time,
//! readiness gates.

mod common;

use common::*;
use jiff::SignedDuration;
use serde_json::json;

#[test]
fn conditions_keep_foreign_ones_first_and_times_only_move_with_status() {
    let mut p = pod(
        "conds",
        json!({
            "readinessGates": [{"conditionType": "example.com/lb"}],
            "containers": [
                {"name": "web", "image": "nginx:1.27"},
                {"name": "api", "image": "nginx:1.27"},
            ],
        }),
    );
    let status = p.status.as_mut().unwrap();
    status.conditions.as_mut().unwrap().insert(
        0,
        serde_json::from_value(
            json!({"type": "DisruptionTarget", "status": "False", "reason": "x"}),
        )
        .unwrap(),
    );
    let mut sim = Sim::new(p, &[]);
    sim.now = at(0) + SignedDuration::from_millis(700);
    sim.run_until(20);
    let st = sim.status();
    let types: Vec<_> = st
        .conditions
        .iter()
        .flatten()
        .map(|c| c.type_.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "DisruptionTarget",
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled"
        ]
    );
    // Containers are ready but the readiness gate's condition is missing.
    assert_eq!(sim.condition("ContainersReady").0, "True");
    assert_eq!(
        sim.condition("Ready"),
        (
            "False".into(),
            Some("ReadinessGatesNotReady".into()),
            Some(
                "corresponding condition of pod readiness gate \"example.com/lb\" does not exist."
                    .into()
            )
        )
    );
    // Sorted by name, not spec order.
    let names: Vec<_> = st
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["api", "web"]);
    // Times are whole seconds; startTime is the first report; PodScheduled keeps the API's time.
    assert_eq!(st.start_time.as_ref().unwrap().0, at(0));
    let cond_time = |t: &str| {
        st.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t)
            .unwrap()
            .last_transition_time
            .clone()
            .unwrap()
            .0
    };
    assert_eq!(cond_time("PodScheduled"), at(0));
    assert_eq!(cond_time("Initialized"), at(0));
    assert_eq!(cond_time("Ready"), at(0));
    let started = st.container_statuses.as_ref().unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .running
        .as_ref()
        .unwrap()
        .started_at
        .clone()
        .unwrap()
        .0;
    assert_eq!(started, at(0));

    // The gate turns True: Ready flips and only its time moves.
    sim.pod
        .status
        .as_mut()
        .unwrap()
        .conditions
        .as_mut()
        .unwrap()
        .push(serde_json::from_value(json!({"type": "example.com/lb", "status": "True"})).unwrap());
    sim.now = at(30);
    sim.step();
    assert_eq!(sim.condition("Ready"), ("True".into(), None, None));
    let st = sim.status();
    let types: Vec<_> = st
        .conditions
        .iter()
        .flatten()
        .map(|c| c.type_.as_str())
        .collect();
    assert_eq!(types[..2], ["DisruptionTarget", "example.com/lb"]);
    let time_of = |t: &str| {
        st.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t)
            .unwrap()
            .last_transition_time
            .clone()
            .unwrap()
            .0
    };
    assert_eq!(time_of("Ready"), at(30));
    assert_eq!(time_of("ContainersReady"), at(0));
    assert_eq!(time_of("PodReadyToStartContainers"), at(0));
    assert_eq!(st.start_time.as_ref().unwrap().0, at(0));
    assert_eq!(sim.steps.last().unwrap().ready, "2/2");
}

#[test]
fn init_statuses_stay_in_spec_order() {
    let p = pod(
        "order",
        json!({
            "initContainers": [
                {"name": "zz", "image": "busybox:1.36"},
                {"name": "aa", "image": "busybox:1.36"},
            ],
            "containers": [{"name": "app", "image": "nginx:1.27"}],
        }),
    );
    let mut sim = Sim::new(
        p,
        &[("zz", Behavior::exits(1, 0)), ("aa", Behavior::exits(1, 0))],
    );
    sim.run_until(10);
    let names: Vec<_> = sim
        .status()
        .init_container_statuses
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["zz", "aa"]);
}

#[test]
fn a_restarted_agent_adopts_running_containers() {
    let p = pod(
        "adopt",
        json!({"containers": [{"name": "app", "image": "nginx:1.27",
        "readinessProbe": {"httpGet": {"path": "/", "port": 80}}}]}),
    );
    let mut sim = Sim::new(p, &[("app", Behavior::runs_forever())]);
    sim.run_until(30);
    assert_eq!(sim.steps.last().unwrap().ready, "1/1");
    // A new agent: fresh memory, same runtime state and stored status.
    sim.mem = skiff_agent::PodMemory::new();
    sim.now = at(40);
    let step = sim.step();
    // Nothing is restarted; readiness starts over (initial Failure) and is probed right away.
    assert!(
        step.decision
            .actions
            .iter()
            .all(|a| matches!(a, skiff_agent::Action::RunProbe { .. }))
    );
    assert_eq!(step.ready, "0/1");
    sim.run_until(45);
    assert_eq!(sim.steps.last().unwrap().ready, "1/1");
    assert_eq!(sim.status().start_time.as_ref().unwrap().0, at(0));
}
