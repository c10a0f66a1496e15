//! `skiff bench pod-start`: pod start latency on one real node. An in-process API server,
//! scheduler and agent (with the runtime asked for); the image is pulled once beforehand, then pods
//! are created one after another and each one's create → `Running` (seen on a watch) is timed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use skiff_agent::agent::{Agent, AgentConfig};
use skiff_apiserver::ServerConfig;
use skiff_store::RedbStore;
use tokio::sync::Mutex;

use super::{client_for, percentile, tempfile_dir};

#[derive(Args, Debug)]
pub struct PodStart {
    /// Pods to start.
    #[arg(long, default_value_t = 100)]
    pub pods: usize,
    /// Delete each pod (grace period 0) once it runs, before creating the next: a create/delete
    /// churn; at the end, report what the runtime left behind (mounts, cgroups, pod dirs).
    #[arg(long)]
    pub delete_each: bool,
    /// The image every pod runs (`sleep 3600`); pulled once before timing starts.
    #[arg(long, default_value = "busybox:1")]
    pub image: String,
    #[command(flatten)]
    pub runtime: crate::runtime::RuntimeArgs,
}

pub async fn run(b: PodStart) -> Result<(), String> {
    let dir = tempfile_dir()?;
    let store = RedbStore::open(&dir.join("store.redb")).map_err(|e| e.to_string())?;
    let cfg = ServerConfig {
        pki_dir: dir.join("pki"),
        bind: "127.0.0.1:0".parse().expect("address"),
        extra_sans: vec![],
        network: Default::default(),
    };
    let server = skiff_apiserver::start(cfg, Arc::new(store))
        .await
        .map_err(|e| e.to_string())?;
    let client = client_for(&server).await?;
    let scheduler = skiff_scheduler::runner::start(client.clone(), Default::default());
    let agent_cfg = AgentConfig {
        node_name: "bench-node".into(),
        node_ip: "127.0.0.1".parse().expect("address"),
        state_dir: dir.join("agent"),
        server_port: 0,
        token: skiff_apiserver::auth::agent_token_for(&server.pki.agent_token, "bench-node"),
    };
    let (runtime, why) = crate::runtime::build(&b.runtime, &agent_cfg.state_dir, "127.0.0.1")?;
    println!("runtime: {why}");
    let agent = Agent::start_with_proxy(client.clone(), agent_cfg, runtime, None).await?;
    let result = measure(&client, &b).await;
    if b.delete_each && result.is_ok() {
        report_leftovers(&dir.join("agent")).await;
    }
    println!("cleaning up");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let _ = pods
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        match pods.list(&ListParams::default()).await {
            Ok(l) if l.items.is_empty() => break,
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    agent.shutdown().await;
    scheduler.shutdown().await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn bench_pod(name: &str, image: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "pod-start"}},
        "spec": {"terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"],
                                 "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}]},
    }))
    .expect("pod")
}

async fn measure(client: &kube::Client, b: &PodStart) -> Result<(), String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = nodes.list(&ListParams::default()).await.is_ok_and(|l| {
            l.items.iter().any(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
        });
        if ready {
            break;
        }
        if Instant::now() > deadline {
            return Err("the node did not become Ready in 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let running: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let notify = Arc::new(tokio::sync::Notify::new());
    let mut stream = pods
        .watch(&WatchParams::default().labels("app=pod-start"), "0")
        .await
        .map_err(|e| e.to_string())?
        .boxed();
    let (r, n) = (running.clone(), notify.clone());
    let watcher = tokio::spawn(async move {
        while let Some(ev) = stream.next().await {
            let (WatchEvent::Added(p) | WatchEvent::Modified(p)) = (match ev {
                Ok(e) => e,
                Err(_) => break,
            }) else {
                continue;
            };
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            if phase == Some("Running") {
                let name = p.metadata.name.unwrap_or_default();
                r.lock().await.entry(name).or_insert_with(Instant::now);
                n.notify_waiters();
            }
        }
    });
    let wait_running = |name: String, limit: Duration| {
        let (running, notify) = (running.clone(), notify.clone());
        async move {
            let deadline = Instant::now() + limit;
            loop {
                let notified = notify.notified();
                if let Some(t) = running.lock().await.get(&name) {
                    return Ok(*t);
                }
                if tokio::time::timeout_at(deadline.into(), notified)
                    .await
                    .is_err()
                {
                    return Err(format!("pod {name} was not Running after {limit:?}"));
                }
            }
        }
    };
    // Warm-up: pulls the image (and creates the CNI bridge) before anything is timed.
    println!("warm-up: pulling {}", b.image);
    let pp = PostParams::default();
    pods.create(&pp, &bench_pod("warm-up", &b.image))
        .await
        .map_err(|e| e.to_string())?;
    wait_running("warm-up".into(), Duration::from_secs(300)).await?;
    let force = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    if b.delete_each {
        pods.delete("warm-up", &force)
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut latencies = Vec::with_capacity(b.pods);
    for i in 0..b.pods {
        let name = format!("pod-{i}");
        let sent = Instant::now();
        pods.create(&pp, &bench_pod(&name, &b.image))
            .await
            .map_err(|e| e.to_string())?;
        let at = wait_running(name, Duration::from_secs(60)).await?;
        latencies.push(at.saturating_duration_since(sent));
        if b.delete_each {
            pods.delete(&format!("pod-{i}"), &force)
                .await
                .map_err(|e| e.to_string())?;
        }
        if (i + 1) % 10 == 0 || (b.delete_each && (i + 1) % 100 == 0) {
            println!("{} / {} pods running", i + 1, b.pods);
        }
    }
    watcher.abort();
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "pod start (create → Running on a watch), {} pods one after another: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.9)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
    );
    Ok(())
}

/// After a churn: waits (up to 2 minutes) for the runtime to remove every deleted pod, then
/// prints what is left under the agent's state: pod directories, mounts, pod cgroups.
async fn report_leftovers(agent_dir: &std::path::Path) {
    let pods_dir = agent_dir.join("runc/pods");
    let count_pods = || std::fs::read_dir(&pods_dir).map_or(0, |d| d.count());
    let deadline = Instant::now() + Duration::from_secs(120);
    while count_pods() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let needle = agent_dir.to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(4)
                .is_some_and(|m| m.starts_with(&needle))
        })
        .count();
    let cgroups = std::fs::read_dir("/sys/fs/cgroup/memory/skiff").map_or(0, |d| {
        d.flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("pod"))
            .count()
    });
    println!(
        "left behind after the churn: {} pod dirs, {mounts} mounts under the agent's state, {cgroups} pod memory cgroups",
        count_pods()
    );
}
