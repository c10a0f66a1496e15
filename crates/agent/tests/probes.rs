//! Liveness, readiness and startup probes.

mod common;

use common::*;
use serde_json::json;
use skiff_agent::{Action, ContainerRef, KillReason, ProbeKind, ProbeOutcome};

fn probed(name: &str, probes: serde_json::Value) -> k8s_openapi::api::core::v1::Pod {
    let mut c = json!({"name": "app", "image": "nginx:1.27"});
    for (k, v) in probes.as_object().unwrap() {
        c[k] = v.clone();
    }
    pod(name, json!({"containers": [c]}))
}

fn probe_runs(sim: &Sim, kind: ProbeKind) -> Vec<i64> {
    sim.actions()
        .into_iter()
        .filter_map(|(t, a)| match a {
            Action::RunProbe { kind: k, .. } if k == kind => Some(t),
            _ => None,
        })
        .collect()
}

#[test]
fn failing_liveness_restarts_through_back_off() {
    let p = probed(
        "live",
        json!({"livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}}}),
    );
    let fail = |_: ProbeKind, _: u32, _: i64| {
        ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into())
    };
    let mut sim = Sim::new(
        p,
        &[(
            "app",
            Behavior::runs_forever()
                .probe(fail)
                .on_term(OnTerm::Exit { secs: 0, code: 143 }),
        )],
    );
    sim.run_until(35);
    // Default period 10 s, failure threshold 3: probes at 10, 20, 30, then the kill.
    assert_eq!(probe_runs(&sim, ProbeKind::Liveness), [10, 20, 30]);
    assert_eq!(
        sim.event_messages("Unhealthy"),
        vec!["Liveness probe failed: HTTP probe failed with statuscode: 500"; 3]
    );
    assert_eq!(
        sim.event_messages("Killing"),
        ["Container app failed liveness probe, will be restarted"]
    );
    let kill = sim
        .actions()
        .into_iter()
        .find_map(|(t, a)| match a {
            Action::Kill {
                grace_seconds,
                reason,
                ..
            } => Some((t, grace_seconds, reason)),
            _ => None,
        })
        .unwrap();
    assert_eq!(kill, (30, 30, KillReason::Liveness { restart: true }));
    // Restarted at once, restart count 1, lastState the killed instance.
    assert_eq!(sim.start_times(ContainerRef::App(0)), [0, 30]);
    let st = sim.container_status("app");
    assert_eq!(st.restart_count, 1);
    assert_eq!(
        st.last_state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        143
    );
    assert_eq!(sim.steps.last().unwrap().restarts, "1 (0s ago)");

    // It keeps failing: each kill goes through the back-off, until CrashLoopBackOff.
    sim.run_until(400);
    let starts = sim.start_times(ContainerRef::App(0));
    let gaps: Vec<i64> = starts.windows(2).map(|w| w[1] - w[0] - 30).collect();
    assert_eq!(gaps[..5], [0, 0, 0, 0, 10]);
    assert!(
        sim.status_timeline()
            .contains(&"CrashLoopBackOff".to_string())
    );
    assert!(
        sim.waiting_messages("app")
            .iter()
            .any(|m| m.starts_with("back-off 40s restarting failed container=app"))
    );
}

#[test]
fn liveness_with_restart_policy_never_is_not_restarted() {
    let p = pod(
        "live-never",
        json!({
            "restartPolicy": "Never",
            "containers": [
                {"name": "app", "image": "nginx:1.27",
                 "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]}, "failureThreshold": 1, "periodSeconds": 5}},
                {"name": "log", "image": "busybox:1.36"},
            ],
        }),
    );
    let fail = |_: ProbeKind, _: u32, _: i64| {
        ProbeOutcome::Failure("cat: can't open '/tmp/healthy': No such file or directory\n".into())
    };
    let mut sim = Sim::new(
        p,
        &[
            (
                "app",
                Behavior::runs_forever().probe(fail).on_term(OnTerm::Ignore),
            ),
            ("log", Behavior::runs_forever()),
        ],
    );
    sim.run_until(100);
    assert_eq!(
        sim.event_messages("Killing"),
        ["Container app failed liveness probe"]
    );
    assert_eq!(sim.start_times(ContainerRef::App(0)), [0]);
    let t = sim
        .container_status("app")
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(t.exit_code, 137);
    // The other container keeps the pod running.
    assert_eq!(sim.phase(), "Running");
    assert_eq!(sim.steps.last().unwrap().status, "Error");
    assert_eq!(sim.steps.last().unwrap().ready, "1/2");
}

#[test]
fn liveness_failure_of_the_last_container_under_never_stops_the_pod() {
    // With nothing left to keep or restart, the kubelet kills the whole pod instead (KillPod),
    // so the event is the plain stop message.
    let mut p = probed(
        "live-never-one",
        json!({"livenessProbe": {"exec": {"command": ["true"]}, "failureThreshold": 1, "periodSeconds": 5}}),
    );
    p.spec.as_mut().unwrap().restart_policy = Some("Never".into());
    let fail = |_: ProbeKind, _: u32, _: i64| ProbeOutcome::Failure(String::new());
    let mut sim = Sim::new(
        p,
        &[(
            "app",
            Behavior::runs_forever().probe(fail).on_term(OnTerm::Ignore),
        )],
    );
    sim.run_until(100);
    assert_eq!(sim.event_messages("Killing"), ["Stopping container app"]);
    assert_eq!(sim.phase(), "Failed");
    assert!(sim.actions().iter().any(|(_, a)| *a == Action::KillPod));
}

#[test]
fn readiness_flips_ready_and_conditions() {
    let p = probed(
        "ready",
        json!({"readinessProbe": {"httpGet": {"path": "/ready", "port": 80}, "periodSeconds": 5}}),
    );
    // Not ready for the first 10 s, ready until 40 s, then failing.
    let probe = |_: ProbeKind, _: u32, since: i64| {
        if (10..40).contains(&since) {
            ProbeOutcome::Success
        } else {
            ProbeOutcome::Failure("Get \"http://10.244.0.7:80/ready\": dial tcp 10.244.0.7:80: connect: connection refused".into())
        }
    };
    let mut sim = Sim::new(p, &[("app", Behavior::runs_forever().probe(probe))]);
    sim.run_until(30);
    assert_eq!(
        probe_runs(&sim, ProbeKind::Readiness),
        [0, 5, 10, 15, 20, 25, 30]
    );
    let ready_at: Vec<(i64, String)> = {
        let mut v: Vec<(i64, String)> = Vec::new();
        for s in &sim.steps {
            if v.last().map(|(_, r)| r) != Some(&s.ready) {
                v.push((s.at, s.ready.clone()));
            }
        }
        v
    };
    assert_eq!(ready_at, [(0, "0/1".to_string()), (10, "1/1".to_string())]);
    assert_eq!(sim.condition("Ready"), ("True".into(), None, None));
    assert_eq!(
        sim.condition("ContainersReady"),
        ("True".into(), None, None)
    );
    let ready_since = sim.status().conditions.as_ref().unwrap()[2]
        .last_transition_time
        .clone()
        .unwrap()
        .0;
    assert_eq!(ready_since, at(10));

    sim.run_until(60);
    // Threshold 3 failures: 40, 45, 50 → not ready at 50.
    assert_eq!(sim.steps.last().unwrap().ready, "0/1");
    assert_eq!(sim.steps.last().unwrap().status, "Running");
    assert_eq!(
        sim.condition("Ready"),
        (
            "False".into(),
            Some("ContainersNotReady".into()),
            Some("containers with unready status: [app]".into())
        )
    );
    let not_ready_since = sim.status().conditions.as_ref().unwrap()[2]
        .last_transition_time
        .clone()
        .unwrap()
        .0;
    assert_eq!(not_ready_since, at(50));
    // Readiness never restarts anything.
    assert!(sim.event_messages("Killing").is_empty());
    assert_eq!(sim.phase(), "Running");
    // Failures at 0 and 5, then from 40 on (40, 45, 50, 55, 60).
    assert_eq!(sim.event_messages("Unhealthy").len(), 2 + 5);
}

#[test]
fn startup_probe_gates_liveness_and_readiness() {
    let p = probed(
        "startup",
        json!({
            "startupProbe": {"httpGet": {"path": "/started", "port": 80}, "periodSeconds": 5, "failureThreshold": 10},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 80}},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 80}},
        }),
    );
    let probe = |kind: ProbeKind, _: u32, since: i64| match kind {
        ProbeKind::Startup if since < 15 => {
            ProbeOutcome::Failure("HTTP probe failed with statuscode: 503".into())
        }
        _ => ProbeOutcome::Success,
    };
    let mut sim = Sim::new(p, &[("app", Behavior::runs_forever().probe(probe))]);
    sim.run_until(60);
    assert_eq!(probe_runs(&sim, ProbeKind::Startup), [5, 10, 15]);
    // Nothing else probes before the container has started (15 s).
    assert!(
        probe_runs(&sim, ProbeKind::Liveness)
            .iter()
            .all(|t| *t > 15)
    );
    assert!(
        probe_runs(&sim, ProbeKind::Readiness)
            .iter()
            .all(|t| *t > 15)
    );
    assert_eq!(probe_runs(&sim, ProbeKind::Liveness)[0], 20);
    let started: Vec<(i64, Option<bool>)> = sim
        .steps
        .iter()
        .map(|s| {
            (
                s.at,
                s.decision.status.container_statuses.as_ref().unwrap()[0].started,
            )
        })
        .collect();
    assert!(started.iter().all(|(t, s)| *t >= 15 || *s == Some(false)));
    assert!(started.iter().all(|(t, s)| *t <= 15 || *s == Some(true)));
    assert_eq!(sim.steps.last().unwrap().ready, "1/1");
}

#[test]
fn failing_startup_probe_kills_the_container() {
    let p = probed(
        "startup-fail",
        json!({"startupProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 2, "failureThreshold": 2}}),
    );
    let probe = |_: ProbeKind, attempt: u32, _: i64| {
        if attempt == 0 {
            ProbeOutcome::Failure("dial tcp 10.244.0.7:80: connect: connection refused".into())
        } else {
            ProbeOutcome::Success
        }
    };
    let mut sim = Sim::new(p, &[("app", Behavior::runs_forever().probe(probe))]);
    sim.run_until(30);
    assert_eq!(
        sim.event_messages("Killing"),
        ["Container app failed startup probe, will be restarted"]
    );
    assert_eq!(sim.start_times(ContainerRef::App(0)), [0, 4]);
    assert_eq!(sim.steps.last().unwrap().ready, "1/1");
    assert_eq!(sim.container_status("app").restart_count, 1);
}

#[test]
fn probe_errors_and_warnings_are_reported() {
    let p = probed(
        "warn",
        json!({"readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 5}}),
    );
    let probe = |_: ProbeKind, _: u32, since: i64| match since {
        0 => ProbeOutcome::Error("exec: container not running".into()),
        5 => ProbeOutcome::Warning("Probe terminated redirects, Response body: ".into()),
        _ => ProbeOutcome::Success,
    };
    let mut sim = Sim::new(p, &[("app", Behavior::runs_forever().probe(probe))]);
    sim.run_until(12);
    assert_eq!(
        sim.event_messages("Unhealthy"),
        ["Readiness probe errored and resulted in unknown state: exec: container not running"]
    );
    assert_eq!(
        sim.event_messages("ProbeWarning"),
        ["Readiness probe warning: Probe terminated redirects, Response body: "]
    );
    assert_eq!(sim.steps.last().unwrap().ready, "1/1");
}
