//! `skiff bench`: benchmarks that start their own in-process server on a temporary data dir and
//! drive it through the real client library (kube), as a user's tools would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Subcommand;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use skiff_apiserver::ServerConfig;
use skiff_store::RedbStore;

mod pod_start;
mod proxy;
mod sim;
mod startup;

#[derive(Subcommand)]
pub enum Which {
    /// Pod creates per second with concurrent clients, and watch delivery latency.
    Api {
        /// Pods to create.
        #[arg(long, default_value_t = 20_000)]
        pods: usize,
        /// Concurrent clients (tasks sharing connections).
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Connections the clients are spread over.
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// Scheduler throughput through the API: N nodes and M pods created through the API, the
    /// scheduler in-process as an API client; pods/s from the first create to the last binding
    /// seen on a watch, and create → bound latency.
    Scheduler {
        /// Nodes to create (32 cpu, 256 Gi, 110 pods each, Ready).
        #[arg(long, default_value_t = 5_000)]
        nodes: usize,
        /// Pods to create.
        #[arg(long, default_value_t = 10_000)]
        pods: usize,
        /// Concurrent pod creators.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Connections the creators are spread over.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Bindings the scheduler keeps in flight.
        #[arg(long, default_value_t = 256)]
        binds_in_flight: usize,
        /// Give up waiting for bindings after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Do not write Scheduled events (shows what the event writes cost).
        #[arg(long)]
        no_events: bool,
        /// Create every pod before the scheduler starts, then time from its start to the last
        /// binding: the scheduler's own rate, without competing pod creates.
        #[arg(long)]
        backlog: bool,
    },
    /// Pod start latency on one node with a real runtime: create → Running seen on a watch, for
    /// pods created one after another with the image already present.
    PodStart(pod_start::PodStart),
    /// The service proxy's cost: requests/s and latency directly and through a NodePort, with
    /// kept-alive connections and with a connection per request.
    Proxy(proxy::ProxyBench),
    /// Simulated nodes at scale: N nodes, M pods with a mix of behaviours (readiness flips,
    /// crash loops); time until every pod runs, steady pod transitions/s, process RSS.
    Sim(sim::SimBench),
    /// `skiff up` (a child process): time to serving, time to a Ready node, idle RSS and CPU.
    Up(startup::UpBench),
    /// The standard suite, one benchmark after another, with a summary table.
    Suite(startup::Suite),
}

pub async fn run(which: Which) -> Result<(), String> {
    match which {
        Which::Api {
            pods,
            concurrency,
            connections,
        } => api(pods, concurrency, connections).await,
        Which::Scheduler {
            nodes,
            pods,
            concurrency,
            connections,
            binds_in_flight,
            timeout,
            no_events,
            backlog,
        } => {
            scheduler(SchedulerBench {
                nodes,
                pods,
                concurrency,
                connections,
                binds_in_flight,
                timeout: Duration::from_secs(timeout),
                events: !no_events,
                backlog,
            })
            .await
        }
        Which::PodStart(b) => pod_start::run(b).await,
        Which::Proxy(b) => proxy::run(b).await,
        Which::Sim(b) => sim::run(b).await,
        Which::Up(b) => startup::up(b).await,
        Which::Suite(s) => startup::suite(s).await,
    }
}

async fn client_for(server: &skiff_apiserver::RunningServer) -> Result<kube::Client, String> {
    let url = format!("https://127.0.0.1:{}", server.addr.port());
    let kc = crate::kubeconfig::render(&url, &server.pki.ca_pem, &server.pki.admin_token);
    let kc: kube::config::Kubeconfig =
        kube::config::Kubeconfig::from_yaml(&kc).map_err(|e| e.to_string())?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    kube::Client::try_from(cfg).map_err(|e| e.to_string())
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1", "command": ["sleep", "3600"],
                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
    }))
    .expect("pod")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn api(pods: usize, concurrency: usize, connections: usize) -> Result<(), String> {
    let dir = tempfile_dir()?;
    let server = start_server(&dir).await?;
    let mut clients = Vec::new();
    for _ in 0..connections.max(1) {
        clients.push(client_for(&server).await?);
    }

    // The watcher records when each pod's ADDED event arrives.
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let watch_api: Api<Pod> = Api::namespaced(clients[0].clone(), "default");
    let mut stream = watch_api
        .watch(&WatchParams::default().timeout(290), "0")
        .await
        .map_err(|e| e.to_string())?
        .boxed();
    let (s2, l2) = (sent.clone(), latencies.clone());
    let watcher = tokio::spawn(async move {
        let mut seen = 0;
        while let Some(Ok(ev)) = stream.next().await {
            if let WatchEvent::Added(p) = ev {
                let name = p.metadata.name.unwrap_or_default();
                let t0 = s2.lock().expect("lock").get(&name).copied();
                if let Some(t0) = t0 {
                    l2.lock().expect("lock").push(t0.elapsed());
                }
                seen += 1;
                if seen == pods {
                    return;
                }
            }
        }
    });

    eprintln!(
        "creating {pods} pods with {concurrency} concurrent clients over {connections} connections..."
    );
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let create_lat: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let api: Api<Pod> = Api::namespaced(clients[i % clients.len()].clone(), "default");
        let (next, sent, create_lat) = (next.clone(), sent.clone(), create_lat.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= pods {
                    return Ok::<(), String>(());
                }
                let name = format!("bench-{n}");
                let t0 = Instant::now();
                sent.lock().expect("lock").insert(name.clone(), t0);
                api.create(&PostParams::default(), &pod(&name))
                    .await
                    .map_err(|e| e.to_string())?;
                create_lat.lock().expect("lock").push(t0.elapsed());
                if n % 5000 == 4999 {
                    eprintln!("  {} pods created", n + 1);
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let elapsed = start.elapsed();
    let _ = tokio::time::timeout(Duration::from_secs(60), watcher).await;
    let mut c = create_lat.lock().expect("lock").clone();
    let mut w = latencies.lock().expect("lock").clone();
    c.sort();
    w.sort();
    println!("pods created:            {pods}");
    println!("elapsed:                 {:.2?}", elapsed);
    println!(
        "creates/s:               {:.0}",
        pods as f64 / elapsed.as_secs_f64()
    );
    println!(
        "create latency p50/p99:  {:.2?} / {:.2?}",
        percentile(&c, 0.5),
        percentile(&c, 0.99)
    );
    println!("watch events received:   {}", w.len());
    println!(
        "create→watch p50/p99:    {:.2?} / {:.2?}",
        percentile(&w, 0.5),
        percentile(&w, 0.99)
    );
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// An API server on the embedded store in `dir`, on a free loopback port.
async fn start_server(dir: &std::path::Path) -> Result<skiff_apiserver::RunningServer, String> {
    let store = RedbStore::open(&dir.join("store.redb")).map_err(|e| e.to_string())?;
    let cfg = ServerConfig {
        pki_dir: dir.join("pki"),
        bind: "127.0.0.1:0".parse().expect("addr"),
        extra_sans: vec![],
        network: Default::default(),
    };
    skiff_apiserver::start(cfg, Arc::new(store))
        .await
        .map_err(|e| e.to_string())
}

fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    let d = std::env::temp_dir().join(format!("skiff-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    Ok(d)
}

struct SchedulerBench {
    nodes: usize,
    pods: usize,
    concurrency: usize,
    connections: usize,
    binds_in_flight: usize,
    timeout: Duration,
    events: bool,
    backlog: bool,
}

/// A bench node: 32 cpu, 256 Gi, 110 pods, Ready, a few images (some nodes have the app images).
fn bench_node(i: usize) -> k8s_openapi::api::core::v1::Node {
    let mut images =
        vec![serde_json::json!({"names": ["registry.local/pause:3.9"], "sizeBytes": 300_000})];
    for (k, name) in ["web:v1", "api:v2", "db:16"].iter().enumerate() {
        if (i + k).is_multiple_of(k + 2) {
            images.push(serde_json::json!({"names": [format!("registry.local/{name}")], "sizeBytes": (200i64 + 150 * k as i64) << 20}));
        }
    }
    let name = format!("node-{i:05}");
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "topology.kubernetes.io/zone": format!("zone-{}", i % 3),
        }},
        "status": {
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "500Gi"},
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "500Gi"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status"}],
            "images": images,
        }
    }))
    .expect("node")
}

fn bench_pod(i: usize) -> Pod {
    let image = ["web:v1", "api:v2", "db:16", "other:1"][i % 4];
    let cpu = ["50m", "100m", "250m"][i % 3];
    let mem = ["64Mi", "128Mi", "256Mi"][i % 3];
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("sched-{i}"), "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "app", "image": format!("registry.local/{image}"),
                 "resources": {"requests": {"cpu": cpu, "memory": mem}}}]},
    }))
    .expect("pod")
}

fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Starts the scheduler in-process (its own connection) and waits until it has listed every
/// node. Returns it with the process RSS before and after.
async fn start_scheduler(
    server: &skiff_apiserver::RunningServer,
    b: &SchedulerBench,
) -> Result<(skiff_scheduler::runner::SchedulerHandle, u64, u64), String> {
    use skiff_scheduler::runner::SchedulerConfig;
    let rss_before = rss_bytes().unwrap_or(0);
    let defaults = SchedulerConfig::default();
    let sched = skiff_scheduler::runner::start(
        client_for(server).await?,
        SchedulerConfig {
            max_binds_in_flight: b.binds_in_flight.max(1),
            event_queue_capacity: if b.events {
                defaults.event_queue_capacity
            } else {
                0
            },
            ..defaults
        },
    );
    let t0 = Instant::now();
    let stats = loop {
        match sched.stats().await {
            Some(s) if s.synced && s.nodes == b.nodes => break s,
            Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            None => return Err("the scheduler stopped".into()),
        }
    };
    eprintln!(
        "  scheduler synced {} nodes, {} pods queued, in {:.2?}",
        stats.nodes,
        stats.queued,
        t0.elapsed()
    );
    Ok((sched, rss_before, rss_bytes().unwrap_or(0)))
}

/// Creates the bench pods from concurrent tasks, noting when each create was sent.
async fn create_pods(
    clients: &[kube::Client],
    b: &SchedulerBench,
    sent: &Arc<Mutex<Vec<Option<Instant>>>>,
) -> Result<Duration, String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    eprintln!(
        "creating {} pods with {} concurrent clients over {} connections...",
        b.pods, b.concurrency, b.connections
    );
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..b.concurrency.max(1) {
        let api: Api<Pod> = Api::namespaced(clients[i % clients.len()].clone(), "default");
        let (next, sent, total) = (next.clone(), sent.clone(), b.pods);
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return Ok::<(), String>(());
                }
                let pod = bench_pod(n);
                sent.lock().expect("lock")[n] = Some(Instant::now());
                api.create(&PostParams::default(), &pod)
                    .await
                    .map_err(|e| e.to_string())?;
                if n % 10_000 == 9_999 {
                    eprintln!("  {} pods created", n + 1);
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let created_in = start.elapsed();
    eprintln!("  all {} pods created in {:.2?}", b.pods, created_in);
    Ok(created_in)
}

/// Watches pods from `rv` and notes when each bench pod is first seen with a node; ends when
/// all are.
fn watch_bindings(
    mut stream: futures::stream::BoxStream<'static, kube::Result<WatchEvent<Pod>>>,
    total: usize,
) -> tokio::task::JoinHandle<Result<Vec<Option<Instant>>, String>> {
    tokio::spawn(async move {
        let mut bound: Vec<Option<Instant>> = vec![None; total];
        let mut n = 0;
        while n < total
            && let Some(ev) = stream.next().await
        {
            let p = match ev {
                Ok(WatchEvent::Added(p) | WatchEvent::Modified(p)) => p,
                Ok(_) => continue,
                Err(e) => return Err(e.to_string()),
            };
            let has_node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty());
            let idx = p
                .metadata
                .name
                .as_deref()
                .and_then(|n| n.strip_prefix("sched-"))
                .and_then(|n| n.parse::<usize>().ok());
            if let (true, Some(i)) = (has_node, idx)
                && i < total
                && bound[i].is_none()
            {
                bound[i] = Some(Instant::now());
                n += 1;
            }
        }
        Ok(bound)
    })
}

async fn scheduler(b: SchedulerBench) -> Result<(), String> {
    use k8s_openapi::api::core::v1::Node;
    use skiff_scheduler::runner::Counters;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let dir = tempfile_dir()?;
    let server = start_server(&dir).await?;
    let mut clients = Vec::new();
    for _ in 0..b.connections.max(1) {
        clients.push(client_for(&server).await?);
    }

    // Nodes, created concurrently through the API.
    eprintln!("creating {} nodes...", b.nodes);
    let t0 = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..b.concurrency.max(1) {
        let api: Api<Node> = Api::all(clients[i % clients.len()].clone());
        let (next, total) = (next.clone(), b.nodes);
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return Ok::<(), String>(());
                }
                api.create(&PostParams::default(), &bench_node(n))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    eprintln!("  {} nodes in {:.2?}", b.nodes, t0.elapsed());

    // Watch the pods for their bindings, from now on.
    let pods_api: Api<Pod> = Api::namespaced(clients[0].clone(), "default");
    let rv = pods_api
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(|e| e.to_string())?
        .metadata
        .resource_version
        .unwrap_or_default();
    let stream = pods_api
        .watch(&WatchParams::default().timeout(290), &rv)
        .await
        .map_err(|e| e.to_string())?
        .boxed();
    let watcher = watch_bindings(stream, b.pods);
    let sent: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; b.pods]));

    // Streaming (default): the scheduler runs while the pods are created; the clock starts at
    // the first create. Backlog: every pod exists before the scheduler starts; the clock starts
    // with the scheduler.
    let (sched, rss_before, rss_synced, created_in, start) = if b.backlog {
        let created_in = create_pods(&clients, &b, &sent).await?;
        let start = Instant::now();
        let (sched, r0, r1) = start_scheduler(&server, &b).await?;
        (sched, r0, r1, created_in, start)
    } else {
        let (sched, r0, r1) = start_scheduler(&server, &b).await?;
        let start = Instant::now();
        let created_in = create_pods(&clients, &b, &sent).await?;
        (sched, r0, r1, created_in, start)
    };

    let bound = match tokio::time::timeout(b.timeout, watcher).await {
        Ok(r) => r.map_err(|e| e.to_string())??,
        Err(_) => {
            return Err(format!(
                "not every pod was bound within {:?}; scheduled so far: {}",
                b.timeout,
                Counters::get(&sched.counters().scheduled)
            ));
        }
    };
    let sent = sent.lock().expect("lock").clone();
    let last_bound = bound.iter().flatten().max().copied().unwrap_or(start);
    let elapsed = last_bound.duration_since(start);
    let mut lat: Vec<Duration> = sent
        .iter()
        .zip(&bound)
        .filter_map(|(s, b)| Some(b.as_ref()?.duration_since(*s.as_ref()?)))
        .collect();
    lat.sort();
    // Let the recorder drain before reading the event counters.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = sched.stats().await.unwrap_or_default();
    let c = sched.counters();
    let rss_after = rss_bytes().unwrap_or(0);

    let mode = if b.backlog {
        "scheduler start"
    } else {
        "first create"
    };
    println!("nodes:                       {}", b.nodes);
    println!("pods:                        {}", b.pods);
    println!(
        "{mode} → last bound: {:.2?}  ({:.0} pods/s)",
        elapsed,
        b.pods as f64 / elapsed.as_secs_f64()
    );
    println!(
        "creates alone:               {:.2?}  ({:.0} creates/s)",
        created_in,
        b.pods as f64 / created_in.as_secs_f64()
    );
    if !b.backlog {
        println!(
            "create → bound p50 / p99:    {:.2?} / {:.2?}",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        );
    }
    println!(
        "scheduler: attempts {}, bound {}, unschedulable {}, bind errors {}",
        Counters::get(&c.attempts),
        Counters::get(&c.scheduled),
        Counters::get(&c.unschedulable),
        Counters::get(&c.bind_errors)
    );
    println!(
        "events: created {}, series updates {}, dropped (queue full) {}, errors {}{}",
        Counters::get(&c.events_created),
        Counters::get(&c.events_patched),
        Counters::get(&c.events_dropped),
        Counters::get(&c.event_errors),
        if b.events { "" } else { " (events off)" }
    );
    println!(
        "snapshot memory ({} nodes):  {:.1} MiB (estimate)",
        stats.nodes,
        mib(stats.snapshot_bytes as u64)
    );
    println!(
        "process RSS:                 {:.0} MiB before the scheduler, {:.0} MiB synced, {:.0} MiB at the end (server + store + clients + scheduler)",
        mib(rss_before),
        mib(rss_synced),
        mib(rss_after)
    );
    sched.shutdown().await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
