//! gRPC probes against the `grpc-health` test server (crates/testsupport) run as a plain
//! process on 127.0.0.1: every outcome and its kubelet text. And, on the fake clock, the probe
//! behaviours issue 9 asks about: restart counts only grow across liveness restarts, a
//! readiness probe's initial delay holds Ready back, and readiness never restarts a container.
//!
//! The server binary is found next to this test's binary (`<target>/<profile>/grpc-health`,
//! built by a workspace build) or built with `cargo build -p skiff-testsupport` when missing.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use skiff_agent::probe_io::grpc_check;
use skiff_agent::{ContainerRef, ProbeKind, ProbeOutcome};

const ONE: Duration = Duration::from_secs(1);

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // <target>/<profile>/deps/grpc_probe-<hash>
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap();
    skiff_testsupport::image::grpc_health_binary(profile_dir)
}

fn server(args: &[&str]) -> Server {
    let mut child = Command::new(binary())
        .args(["--port", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start grpc-health");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    // Keep reading what the server prints, so its writes never fail.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let port = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    Server { child, port }
}

fn failure(text: &str) -> ProbeOutcome {
    ProbeOutcome::Failure(text.to_string())
}

#[tokio::test]
async fn serving_and_not_serving() {
    let s = server(&[]);
    assert_eq!(
        grpc_check("127.0.0.1", s.port, "", ONE).await,
        ProbeOutcome::Success
    );
    assert_eq!(
        grpc_check("127.0.0.1", s.port, "ok", ONE).await,
        ProbeOutcome::Success
    );
    assert_eq!(
        grpc_check("127.0.0.1", s.port, "bad", ONE).await,
        failure("service unhealthy (responded with \"NOT_SERVING\")")
    );
    assert_eq!(
        grpc_check("127.0.0.1", s.port, "other", ONE).await,
        failure(
            "error: health rpc probe failed: rpc error: code = NotFound desc = unknown service"
        )
    );
}

#[tokio::test]
async fn fail_after_turns_not_serving() {
    let s = server(&["--fail-after", "1"]);
    assert_eq!(
        grpc_check("127.0.0.1", s.port, "", ONE).await,
        ProbeOutcome::Success
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        grpc_check("127.0.0.1", s.port, "", ONE).await,
        failure("service unhealthy (responded with \"NOT_SERVING\")")
    );
}

#[tokio::test]
async fn a_server_without_the_health_service() {
    let s = server(&["--no-health"]);
    assert_eq!(
        grpc_check("127.0.0.1", s.port, "", ONE).await,
        failure(
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): unknown service grpc.health.v1.Health"
        )
    );
}

#[tokio::test]
async fn connection_refused_times_out_connecting() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let start = Instant::now();
    assert_eq!(
        grpc_check("127.0.0.1", port, "", ONE).await,
        failure(&format!(
            "timeout: failed to connect service \"127.0.0.1:{port}\" within 1s: context deadline exceeded"
        ))
    );
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_silent_peer_times_out_connecting() {
    // Accepts TCP connections and never says a word.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    assert_eq!(
        grpc_check("127.0.0.1", port, "", ONE).await,
        failure(&format!(
            "timeout: failed to connect service \"127.0.0.1:{port}\" within 1s: context deadline exceeded"
        ))
    );
    hold.abort();
}

#[tokio::test]
async fn a_call_that_never_completes_times_out() {
    let s = server(&[]);
    let start = Instant::now();
    assert_eq!(
        grpc_check("127.0.0.1", s.port, "hang", ONE).await,
        failure("timeout: health rpc did not complete within 1s")
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // The server is still fine afterwards.
    assert_eq!(
        grpc_check("127.0.0.1", s.port, "ok", Duration::from_secs(2)).await,
        ProbeOutcome::Success
    );
}

// Probe behaviour on the engine's fake clock.

fn probed(name: &str, probes: serde_json::Value) -> k8s_openapi::api::core::v1::Pod {
    let mut c = json!({"name": "app", "image": "grpc-health:1"});
    for (k, v) in probes.as_object().unwrap() {
        c[k] = v.clone();
    }
    pod(name, json!({"containers": [c]}))
}

/// The READY column over time, one entry per change.
fn ready_changes(sim: &Sim) -> Vec<(i64, String)> {
    let mut v: Vec<(i64, String)> = Vec::new();
    for s in &sim.steps {
        if v.last().map(|(_, r)| r) != Some(&s.ready) {
            v.push((s.at, s.ready.clone()));
        }
    }
    v
}

#[test]
fn restart_counts_only_grow_across_liveness_restarts() {
    let p = probed(
        "live",
        json!({"livenessProbe": {"grpc": {"port": 9090, "service": "bad"}, "periodSeconds": 2, "failureThreshold": 1}}),
    );
    let fail = |_: ProbeKind, _: u32, _: i64| {
        ProbeOutcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
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
    sim.run_until(900);
    let counts: Vec<u32> = sim
        .steps
        .iter()
        .map(|s| {
            s.restarts
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("RESTARTS {:?}", s.restarts))
        })
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "restart counts went down: {counts:?}"
    );
    let starts = sim.start_times(ContainerRef::App(0));
    let last = *counts.last().unwrap();
    assert!(last >= 5, "{counts:?}");
    assert_eq!(last as usize, starts.len() - 1, "one restart per new start");
    assert_eq!(sim.container_status("app").restart_count, last as i32);
    // One liveness kill per restart (the last kill may still wait out its back-off).
    let kills = sim.event_messages("Killing").len();
    assert!(
        kills == starts.len() - 1 || kills == starts.len(),
        "{kills} kills, {} starts",
        starts.len()
    );
    // Every kill is followed by a start with the next count, never a reused one.
    let mut seen: Vec<u32> = counts.clone();
    seen.dedup();
    assert_eq!(seen, (0..=last).collect::<Vec<_>>());
}

#[test]
fn readiness_waits_for_its_initial_delay() {
    let p = probed(
        "ready-delay",
        json!({"readinessProbe": {"grpc": {"port": 9090}, "initialDelaySeconds": 20, "periodSeconds": 5}}),
    );
    let mut sim = Sim::new(
        p,
        &[(
            "app",
            Behavior::runs_forever().probe(|_, _, _| ProbeOutcome::Success),
        )],
    );
    sim.run_until(40);
    let runs: Vec<i64> = sim
        .actions()
        .into_iter()
        .filter_map(|(t, a)| match a {
            skiff_agent::Action::RunProbe {
                kind: ProbeKind::Readiness,
                ..
            } => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(runs.first(), Some(&20), "first readiness run: {runs:?}");
    assert_eq!(
        ready_changes(&sim),
        [(0, "0/1".to_string()), (20, "1/1".to_string())]
    );
    assert_eq!(sim.condition("Ready").0, "True");
}

#[test]
fn failing_readiness_never_restarts() {
    let p = probed(
        "ready-fails",
        json!({"readinessProbe": {"grpc": {"port": 9090}, "initialDelaySeconds": 5, "periodSeconds": 1, "failureThreshold": 1}}),
    );
    let fail = |_: ProbeKind, _: u32, _: i64| {
        ProbeOutcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
    };
    let mut sim = Sim::new(p, &[("app", Behavior::runs_forever().probe(fail))]);
    sim.run_until(600);
    assert_eq!(sim.start_times(ContainerRef::App(0)), [0]);
    assert!(sim.event_messages("Killing").is_empty());
    assert_eq!(sim.container_status("app").restart_count, 0);
    assert_eq!(ready_changes(&sim), [(0, "0/1".to_string())]);
    assert_eq!(sim.phase(), "Running");
    let unhealthy = sim.event_messages("Unhealthy");
    assert!(unhealthy.len() > 100, "{}", unhealthy.len());
    assert!(
        unhealthy
            .iter()
            .all(|m| m
                == "Readiness probe failed: service unhealthy (responded with \"NOT_SERVING\")")
    );
}
