mod common;
use common::*;
use serde_json::json;
#[test]
fn show() {
    let p = pod("order", json!({"terminationGracePeriodSeconds": 10,
            "initContainers": [
                {"name": "a-side", "image": "envoy:1.30", "restartPolicy": "Always", "lifecycle": {"preStop": {"exec": {"command": ["sleep","2"]}}}},
                {"name": "b-side", "image": "envoy:1.30", "restartPolicy": "Always"},
            ],
            "containers": [{"name": "app", "image": "nginx:1.27"}]}));
    let mut sim = Sim::new(p, &[
            ("a-side", Behavior::runs_forever().pre_stop(2).on_term(OnTerm::Exit { secs: 1, code: 0 })),
            ("b-side", Behavior::runs_forever().on_term(OnTerm::Exit { secs: 1, code: 0 })),
            ("app", Behavior::runs_forever().on_term(OnTerm::Ignore)),
        ]);
    sim.run_until(10);
    sim.delete(10);
    sim.run_until(100);
    for s in &sim.steps { println!("{:>4} {:<18} {} {:<12} {} acts={:?} wake={:?} ev={:?}", s.at, s.status, s.ready, s.restarts, s.decision.status.phase.as_deref().unwrap_or(""), s.decision.actions, s.decision.wake_at.map(secs_of), s.decision.events.iter().map(|e| (e.reason, e.message.as_str())).collect::<Vec<_>>()); }
}
