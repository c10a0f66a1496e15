//! `skiff bench sim`: a simulated fleet at scale. An in-process API server, the scheduler, the
//! node lifecycle controller and a simulated fleet (all API clients), then pods created through
//! the API with a mix of behaviours; reports how fast they all start, the steady pod transitions
//! per second, and the process's memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use skiff_agent::sim::fleet::{self, FleetConfig, FleetStats};

use super::{client_for, mib, rss_bytes, start_server, tempfile_dir};

#[derive(clap::Args, Debug, Clone)]
pub struct SimBench {
    /// Simulated nodes (32 cpu, 256 Gi, 110 pods each).
    #[arg(long, default_value_t = 5_000)]
    pub nodes: usize,
    /// Pods to create.
    #[arg(long, default_value_t = 150_000)]
    pub pods: usize,
    /// Percent of the pods whose readiness flips every `--flip-every` (a transition each time).
    #[arg(long, default_value_t = 50)]
    pub flip_percent: usize,
    /// How long a flipping pod stays ready, then not ready.
    #[arg(long, default_value = "10s")]
    pub flip_every: String,
    /// Percent of the pods that crash 20 s after each start (CrashLoopBackOff).
    #[arg(long, default_value_t = 5)]
    pub crash_percent: usize,
    /// Seconds of steady state to measure once every pod has started.
    #[arg(long, default_value_t = 60)]
    pub measure: u64,
    /// Concurrent pod creators.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Concurrent status writes of the fleet.
    #[arg(long, default_value_t = 32)]
    pub status_writers: usize,
    /// Give up waiting for the pods to start after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
}

fn sim_pod(i: usize, b: &SimBench) -> Pod {
    let slot = i % 100;
    let (behaviour, probe) = if slot < b.crash_percent {
        ("run=20s exit=1".to_string(), false)
    } else if slot < b.crash_percent + b.flip_percent {
        (format!("readiness-flip={}", b.flip_every), true)
    } else {
        (String::new(), false)
    };
    let mut container = serde_json::json!({
        "name": "app", "image": format!("registry.local/app-{}:1", i % 8),
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
    });
    if probe {
        container["readinessProbe"] = serde_json::json!({
            "exec": {"command": ["check"]}, "periodSeconds": 2, "failureThreshold": 1,
        });
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("sim-{i}"), "labels": {"app": "sim-bench"},
                     "annotations": {"sim.skiff.dev/behaviour": behaviour}},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 5},
    }))
    .expect("pod")
}

fn load(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

pub async fn run(b: SimBench) -> Result<(), String> {
    skiff_core::duration::parse_duration(&b.flip_every)
        .map_err(|e| format!("--flip-every: {e}"))?;
    if b.crash_percent + b.flip_percent > 100 {
        return Err("--crash-percent plus --flip-percent is at most 100".into());
    }
    let dir = tempfile_dir()?;
    let server = start_server(&dir).await?;
    let rss_server = rss_bytes().unwrap_or(0);

    // The cluster's parts, each an API client on its own connection.
    let sched = skiff_scheduler::runner::start(client_for(&server).await?, Default::default());
    let lifecycle = tokio::spawn(skiff_controllers::node_lifecycle::run(
        client_for(&server).await?,
        skiff_controllers::node_lifecycle::Config {
            grace_period: Duration::from_secs(50),
            monitor_period: Duration::from_secs(5),
        },
    ));
    eprintln!("registering {} simulated nodes...", b.nodes);
    let t0 = Instant::now();
    let fleet_cfg = FleetConfig {
        nodes: b.nodes,
        name_prefix: "sim-node-".into(),
        capacity: fleet::parse_capacity("cpu=32,memory=256Gi,pods=110")?,
        status_writers: b.status_writers.max(1),
        event_qps: 200.0,
    };
    let fleet = fleet::start(client_for(&server).await?, fleet_cfg).await?;
    let stats = fleet.stats.clone();
    eprintln!("  {} nodes in {:.2?}", b.nodes, t0.elapsed());
    loop {
        match sched.stats().await {
            Some(s) if s.synced && s.nodes == b.nodes => break,
            Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            None => return Err("the scheduler stopped".into()),
        }
    }
    let rss_nodes = rss_bytes().unwrap_or(0);

    // The pods, created from concurrent tasks while the fleet starts them.
    eprintln!("creating {} pods...", b.pods);
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(client_for(&server).await?);
    }
    for i in 0..b.concurrency.max(1) {
        let api: Api<Pod> = Api::namespaced(clients[i % clients.len()].clone(), "default");
        let (next, b) = (next.clone(), b.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= b.pods {
                    return Ok::<(), String>(());
                }
                api.create(&PostParams::default(), &sim_pod(n, &b))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }));
    }
    let creators = tokio::spawn(async move {
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        Ok::<Duration, String>(start.elapsed())
    });

    // Every pod started: on its node, its containers started.
    let deadline = start + Duration::from_secs(b.timeout);
    let mut last_print = Instant::now();
    let started_in = loop {
        let (on_nodes, running) = (load(&stats.pods), load(&stats.reached_running));
        let created = next.load(Ordering::Relaxed).min(b.pods);
        if running as usize >= b.pods {
            break start.elapsed();
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "  {:>5.0}s: created {created}, bound {}, on nodes {on_nodes}, running {running}, status writes {}",
                start.elapsed().as_secs_f64(),
                load(&sched.counters().scheduled),
                load(&stats.status_writes),
            );
            last_print = Instant::now();
        }
        if Instant::now() > deadline {
            return Err(format!(
                "pods did not all start within {}s: created {created}, on nodes {on_nodes}, running {running}",
                b.timeout
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let created_in = creators.await.map_err(|e| e.to_string())??;
    eprintln!("  created in {created_in:.2?}; all Running in {started_in:.2?}");

    // Steady state.
    eprintln!("measuring {} s of steady state...", b.measure);
    let snap = |s: &FleetStats| {
        (
            load(&s.transitions),
            load(&s.status_writes),
            load(&s.decisions),
            load(&s.lease_renewals),
            load(&s.events_recorded),
        )
    };
    let before = snap(&stats);
    let m0 = Instant::now();
    let mut rss_peak = 0;
    while m0.elapsed() < Duration::from_secs(b.measure) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        rss_peak = rss_peak.max(rss_bytes().unwrap_or(0));
        let now = snap(&stats);
        eprintln!(
            "  {:>4.0}s: transitions {}, status writes {}, ready {}",
            m0.elapsed().as_secs_f64(),
            now.0 - before.0,
            now.1 - before.1,
            load(&stats.ready)
        );
    }
    let secs = m0.elapsed().as_secs_f64();
    let after = snap(&stats);

    // Did any node flap? The node lifecycle controller would have marked it Unknown.
    let nodes: Api<Node> = Api::all(clients[0].clone());
    let list = nodes
        .list(&ListParams::default().labels("skiff.dev/sim=true"))
        .await
        .map_err(|e| e.to_string())?;
    let not_ready = list
        .items
        .iter()
        .filter(|n| {
            !n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();

    let per_s = |a: u64, b: u64| (a - b) as f64 / secs;
    println!("simulated nodes:             {}", b.nodes);
    println!(
        "pods:                        {} ({}% readiness flipping every {}, {}% crash looping)",
        b.pods, b.flip_percent, b.flip_every, b.crash_percent
    );
    println!(
        "pod creates:                 {:.2?} ({:.0}/s)",
        created_in,
        b.pods as f64 / created_in.as_secs_f64()
    );
    println!("all pods Running:            {started_in:.2?} after the first create");
    println!(
        "steady state ({secs:.0} s):       {:.0} pod transitions/s decided, {:.0} status writes/s, {:.0} engine decisions/s, {:.0} lease renewals/s, {:.0} events/s",
        per_s(after.0, before.0),
        per_s(after.1, before.1),
        per_s(after.2, before.2),
        per_s(after.3, before.3),
        per_s(after.4, before.4),
    );
    println!(
        "nodes not Ready at the end:  {not_ready} of {}; lease errors {}; status write errors {}; events dropped {}",
        list.items.len(),
        load(&stats.lease_errors),
        load(&stats.write_errors),
        load(&stats.events_dropped)
    );
    println!(
        "process RSS:                 {:.0} MiB server alone, {:.0} MiB with the nodes, {:.0} MiB peak in steady state (server + store + scheduler + fleet + clients)",
        mib(rss_server),
        mib(rss_nodes),
        mib(rss_peak)
    );
    fleet.shutdown().await;
    lifecycle.abort();
    sched.shutdown().await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
