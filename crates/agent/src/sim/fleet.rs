//! The simulated fleet: many nodes in one process, one pod watch, one task running every pod.
//!
//! ```text
//! register N Nodes ─▶ lease loop (each Lease renewed every 10 s, spread evenly; node status
//!                     heartbeat every 5 min)
//! watch all pods ──▶ pods bound to a fleet node ─▶ SimPod (the real engine over data)
//!                                     │
//!              timer queue (one heap for every pod) ─▶ SimPod::run at its wake time
//!                                     │
//!              changed status ─▶ StatusWriter (coalescing: latest status per pod, K writers)
//!              events ─────────▶ Recorder (fleet-wide rate limit, counted drops)
//! ```
//!
//! The loop owns every pod's state, so no lock is taken per pod and no task or timer exists per
//! pod or container. A pod whose status changes several times before a writer gets to it is
//! written once, with its latest status: under load the API server sees fewer, fresher writes,
//! never stale ones. Pods are handled in batches between watch reads so a burst of watch events
//! cannot starve the clock, or the reverse.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeStatus, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::model::{NodeImages, SimPod};
use crate::node::{self, LEASE_NAMESPACE, Machine, NodeConfig};
use crate::recorder::Recorder;

/// Pods run per batch before the loop looks at the watch again.
const BATCH: usize = 4096;
/// How often the fleet logs its progress.
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// The most often a node's newly pulled images are reported.
const IMAGE_REPORT_EVERY: Duration = Duration::from_secs(60);
/// Node status heartbeats (the kubelet's nodeStatusReportFrequency).
const NODE_STATUS_EVERY: u32 = 30;
/// The size a simulated image has (what pulls report and `Node.status.images` shows).
pub const SIM_IMAGE_SIZE: u64 = 4_194_304;

/// The images each node holds, shared by the pod loop (which pulls) and the heartbeats (which
/// report them in `status.images` for the scheduler's image locality).
type SharedImages = Arc<Vec<Mutex<NodeImages>>>;

/// The label every simulated node carries (`kubectl get nodes -l skiff.dev/sim=true`).
pub const SIM_LABEL: &str = "skiff.dev/sim";

/// What the fleet simulates.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Node names are `<prefix><index>`.
    pub name_prefix: String,
    /// Capacity of each node (cpu, memory, pods, …).
    pub capacity: BTreeMap<String, Quantity>,
    /// Concurrent status writes.
    pub status_writers: usize,
    /// Pod events per second the whole fleet writes (more are dropped and counted).
    pub event_qps: f64,
}

impl FleetConfig {
    pub fn node_name(&self, i: usize) -> String {
        format!("{}{i}", self.name_prefix)
    }
}

/// Parses `cpu=32,memory=256Gi,pods=110` into a capacity (Kubernetes quantities).
pub fn parse_capacity(s: &str) -> Result<BTreeMap<String, Quantity>, String> {
    let mut m = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?}: expected RESOURCE=QUANTITY, like cpu=32"))?;
        skiff_core::quantity::Quantity::parse(v.trim())
            .map_err(|e| format!("{item:?}: {v:?} is not a quantity: {e:?}"))?;
        m.insert(k.trim().to_string(), Quantity(v.trim().to_string()));
    }
    for required in ["cpu", "memory", "pods"] {
        if !m.contains_key(required) {
            return Err(format!(
                "the node capacity needs {required} (like cpu=32,memory=256Gi,pods=110)"
            ));
        }
    }
    Ok(m)
}

/// Running totals, readable while the fleet runs.
#[derive(Debug, Default)]
pub struct FleetStats {
    pub nodes_registered: AtomicU64,
    /// Pods the fleet runs now.
    pub pods: AtomicU64,
    /// Of those, pods whose latest status is phase Running with every container ready.
    pub ready: AtomicU64,
    /// Pods that reached phase Running (counted once per pod).
    pub reached_running: AtomicU64,
    /// Engine decisions taken.
    pub decisions: AtomicU64,
    /// Status changes decided (a pod's status differing from its previous one).
    pub transitions: AtomicU64,
    /// Status writes that reached the API server.
    pub status_writes: AtomicU64,
    pub write_errors: AtomicU64,
    /// Pods deleted after their containers stopped.
    pub deletions: AtomicU64,
    pub events_recorded: AtomicU64,
    /// Events over the fleet's rate limit.
    pub events_dropped: AtomicU64,
    pub lease_renewals: AtomicU64,
    pub lease_errors: AtomicU64,
}

/// A started fleet; dropping it does not stop it, [`FleetHandle::shutdown`] does.
pub struct FleetHandle {
    pub stats: Arc<FleetStats>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl FleetHandle {
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Registers the nodes (returns once they all exist) and starts the fleet.
pub async fn start(client: kube::Client, cfg: FleetConfig) -> Result<FleetHandle, String> {
    if cfg.nodes == 0 {
        return Err("a fleet needs at least one node".into());
    }
    let stats = Arc::new(FleetStats::default());
    let cfg = Arc::new(cfg);
    let uids = register_nodes(&client, &cfg, &stats).await?;
    let (recorder, recorder_task) = Recorder::spawn(client.clone(), &cfg.node_name(0));
    let writer = Arc::new(StatusWriter::default());
    let mut tasks = vec![recorder_task];
    for _ in 0..cfg.status_writers.max(1) {
        tasks.push(tokio::spawn(
            writer.clone().run(client.clone(), stats.clone()),
        ));
    }
    let images: SharedImages = Arc::new((0..cfg.nodes).map(|_| Mutex::default()).collect());
    tasks.push(tokio::spawn(run_leases(
        client.clone(),
        cfg.clone(),
        uids,
        stats.clone(),
        images.clone(),
    )));
    let lp = Loop::new(cfg.clone(), writer, recorder, stats.clone(), images);
    tasks.push(tokio::spawn(lp.run(client)));
    Ok(FleetHandle { stats, tasks })
}

/// The host IP of node `i` (172.16.0.0/12).
fn node_ip(i: usize) -> String {
    format!("172.{}.{}.{}", 16 + (i >> 16) % 16, (i >> 8) & 255, i & 255)
}

/// The `n`-th pod IP on node `i` (10.128.0.0/9, a /24 per node).
fn pod_ip(i: usize, n: u64) -> String {
    format!("10.{}.{}.{}", 128 + (i >> 8) % 128, i & 255, 2 + (n % 250))
}

/// The facts a simulated node reports about its "machine".
fn machine(hostname: &str) -> Machine {
    Machine {
        cpus: 0,
        memory_ki: 0,
        storage_bytes: None,
        hostname: hostname.to_string(),
        os_image: "skiff simulated node".into(),
        kernel_version: "sim".into(),
        machine_id: String::new(),
        boot_id: String::new(),
        system_uuid: String::new(),
        architecture: node::go_arch(std::env::consts::ARCH).to_string(),
    }
}

fn node_status(
    cfg: &FleetConfig,
    i: usize,
    now: Timestamp,
    old: Option<&NodeStatus>,
    images: &NodeImages,
) -> NodeStatus {
    let name = cfg.node_name(i);
    let ncfg = NodeConfig {
        name: name.clone(),
        ip: node_ip(i),
        port: 0,
        state_dir: std::path::PathBuf::new(),
        runtime_name: "sim".into(),
    };
    let m = machine(&name);
    let mut images: Vec<crate::runtime::NodeImage> = images
        .iter()
        .map(|i| crate::runtime::NodeImage {
            names: vec![i.clone()],
            size_bytes: SIM_IMAGE_SIZE,
        })
        .collect();
    images.sort_by(|a, b| a.names.cmp(&b.names));
    let mut st = node::desired_status(&ncfg, &m, &images, now, old);
    st.capacity = Some(cfg.capacity.clone());
    st.allocatable = Some(cfg.capacity.clone());
    st
}

/// Creates every node (or takes over an existing one), 32 at a time; returns their UIDs.
async fn register_nodes(
    client: &kube::Client,
    cfg: &Arc<FleetConfig>,
    stats: &Arc<FleetStats>,
) -> Result<Vec<Option<String>>, String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let started = std::time::Instant::now();
    let results: Vec<Result<Option<String>, String>> = futures::stream::iter(0..cfg.nodes)
        .map(|i| {
            let (nodes, cfg, stats) = (nodes.clone(), cfg.clone(), stats.clone());
            async move {
                let name = cfg.node_name(i);
                let mut labels = node::labels(
                    &NodeConfig {
                        name: name.clone(),
                        ip: node_ip(i),
                        port: 0,
                        state_dir: Default::default(),
                        runtime_name: "sim".into(),
                    },
                    &machine(&name),
                );
                labels.insert(SIM_LABEL.into(), "true".into());
                let node = Node {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some(labels.clone()),
                        ..ObjectMeta::default()
                    },
                    status: Some(node_status(
                        &cfg,
                        i,
                        Timestamp::now(),
                        None,
                        &NodeImages::new(),
                    )),
                    ..Node::default()
                };
                let mut attempt = 0;
                let uid = loop {
                    attempt += 1;
                    let res = match nodes.create(&PostParams::default(), &node).await {
                        Ok(n) => Ok(n.metadata.uid),
                        Err(kube::Error::Api(s)) if s.code == 409 => {
                            // Ours from an earlier run: refresh its labels and status.
                            let patch = json!({"metadata": {"labels": labels}});
                            let pp = PatchParams::default();
                            match nodes.patch(&name, &pp, &Patch::Merge(&patch)).await {
                                Ok(n) => {
                                    let st = node_status(
                                        &cfg,
                                        i,
                                        Timestamp::now(),
                                        n.status.as_ref(),
                                        &NodeImages::new(),
                                    );
                                    let body = json!({"status": st});
                                    nodes
                                        .patch_status(&name, &pp, &Patch::Merge(&body))
                                        .await
                                        .map(|n| n.metadata.uid)
                                }
                                Err(e) => Err(e),
                            }
                        }
                        Err(e) => Err(e),
                    };
                    match res {
                        Ok(uid) => break uid,
                        Err(e) if attempt < 5 => {
                            tracing::debug!(node = %name, error = %e, "cannot register; retrying");
                            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                        }
                        Err(e) => return Err(format!("cannot register node {name}: {e}")),
                    }
                };
                let n = stats.nodes_registered.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 1000 == 0 || n as usize == cfg.nodes {
                    tracing::info!(registered = n, of = cfg.nodes, "simulated nodes registered");
                }
                Ok(uid)
            }
        })
        .buffered(32)
        .collect()
        .await;
    let uids = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    tracing::info!(
        nodes = cfg.nodes,
        took_ms = started.elapsed().as_millis() as u64,
        "simulated nodes ready"
    );
    Ok(uids)
}

/// Renews every node's Lease once per heartbeat, spread over the interval in slices so the API
/// server sees a steady trickle; every [`NODE_STATUS_EVERY`] rounds also the Ready heartbeat.
async fn run_leases(
    client: kube::Client,
    cfg: Arc<FleetConfig>,
    uids: Vec<Option<String>>,
    stats: Arc<FleetStats>,
    images: SharedImages,
) {
    const SLICES: usize = 50;
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let nodes: Api<Node> = Api::all(client);
    let mut statuses: Vec<Option<NodeStatus>> = vec![None; cfg.nodes];
    // How many images each node's last written status showed, and when: a new image is
    // reported at a heartbeat at most once a minute per node (each report is a Node update
    // every node watcher receives), besides the periodic status.
    let mut reported: Vec<usize> = vec![0; cfg.nodes];
    let mut reported_at: Vec<Option<std::time::Instant>> = vec![None; cfg.nodes];
    let mut tick = tokio::time::interval(node::HEARTBEAT / SLICES as u32);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let per_slice = cfg.nodes.div_ceil(SLICES);
    let mut round: u32 = 0;
    loop {
        for slice in 0..SLICES {
            tick.tick().await;
            let range = (slice * per_slice)..((slice + 1) * per_slice).min(cfg.nodes);
            let report = round % NODE_STATUS_EVERY == NODE_STATUS_EVERY - 1;
            let results: Vec<(usize, Option<NodeStatus>, usize)> = futures::stream::iter(range)
                .map(|i| {
                    let (leases, nodes, cfg, stats) =
                        (leases.clone(), nodes.clone(), cfg.clone(), stats.clone());
                    let uid = uids[i].clone();
                    let old = statuses[i].clone();
                    let held = images[i].lock().map(|s| s.clone()).unwrap_or_default();
                    let report = report
                        || (held.len() != reported[i]
                            && reported_at[i].is_none_or(|t| t.elapsed() >= IMAGE_REPORT_EVERY));
                    let count = if report { held.len() } else { reported[i] };
                    async move {
                        let name = cfg.node_name(i);
                        match node::renew_lease(&leases, &name, uid.as_deref()).await {
                            Ok(()) => stats.lease_renewals.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                tracing::debug!(node = %name, error = %e, "lease renewal failed");
                                stats.lease_errors.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                        if !report {
                            return (i, old, count);
                        }
                        let st = node_status(&cfg, i, Timestamp::now(), old.as_ref(), &held);
                        let body = json!({"status": st});
                        let pp = PatchParams::default();
                        match nodes.patch_status(&name, &pp, &Patch::Merge(&body)).await {
                            Ok(n) => (i, n.status, count),
                            Err(e) => {
                                tracing::debug!(node = %name, error = %e, "node status failed");
                                (i, old, 0)
                            }
                        }
                    }
                })
                .buffer_unordered(16)
                .collect()
                .await;
            for (i, st, count) in results {
                statuses[i] = st;
                if count != reported[i] {
                    reported_at[i] = Some(std::time::Instant::now());
                }
                reported[i] = count;
            }
        }
        round = round.wrapping_add(1);
    }
}

/// One pod the fleet runs.
struct Entry {
    sim: SimPod,
    node: usize,
    /// The status last handed to the writer.
    last_status: Option<PodStatus>,
    /// The wake-up the heap holds for this pod (older heap entries are stale).
    wake: Option<i64>,
    /// Its status has shown phase Running.
    reached_running: bool,
}

/// The fleet's single loop: pods, their timers, the watch.
struct Loop {
    node_index: HashMap<String, usize>,
    node_names: Vec<Arc<str>>,
    images: SharedImages,
    pods_started: Vec<u64>,
    pods: HashMap<String, Entry>,
    timers: BinaryHeap<Reverse<(i64, String)>>,
    /// Pods to run as soon as possible.
    ready: VecDeque<String>,
    writer: Arc<StatusWriter>,
    recorder: Recorder,
    stats: Arc<FleetStats>,
    events: TokenBucket,
    /// Pods seen in the current (re)list, to forget the others when it ends.
    relist: Option<HashSet<String>>,
}

impl Loop {
    fn new(
        cfg: Arc<FleetConfig>,
        writer: Arc<StatusWriter>,
        recorder: Recorder,
        stats: Arc<FleetStats>,
        images: SharedImages,
    ) -> Loop {
        let node_names: Vec<Arc<str>> = (0..cfg.nodes).map(|i| cfg.node_name(i).into()).collect();
        Loop {
            node_index: node_names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.to_string(), i))
                .collect(),
            node_names,
            images,
            pods_started: vec![0; cfg.nodes],
            events: TokenBucket::new(cfg.event_qps),
            pods: HashMap::new(),
            timers: BinaryHeap::new(),
            ready: VecDeque::new(),
            writer,
            recorder,
            stats,
            relist: None,
        }
    }

    async fn run(mut self, client: kube::Client) {
        let pods: Api<Pod> = Api::all(client);
        // Back off between failed (re)lists, as every other watcher here does.
        let mut stream = watcher(pods, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut last_report = std::time::Instant::now();
        let mut last_counts = (0u64, 0u64);
        loop {
            // What the watch has ready (at most a batch), without waiting.
            let mut watch_closed = false;
            for _ in 0..BATCH {
                match futures::FutureExt::now_or_never(stream.try_next()) {
                    Some(Ok(Some(ev))) => self.on_watch(ev),
                    Some(Ok(None)) => {
                        watch_closed = true;
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "fleet pod watch failed; it retries");
                        break;
                    }
                    None => break,
                }
            }
            if watch_closed {
                return;
            }
            let did = self.run_due();
            if last_report.elapsed() >= REPORT_EVERY {
                let s = &self.stats;
                let (t, w) = (
                    s.transitions.load(Ordering::Relaxed),
                    s.status_writes.load(Ordering::Relaxed),
                );
                let secs = last_report.elapsed().as_secs_f64();
                tracing::info!(
                    pods = self.pods.len(),
                    transitions_per_s = ((t - last_counts.0) as f64 / secs) as u64,
                    status_writes_per_s = ((w - last_counts.1) as f64 / secs) as u64,
                    write_queue = self.writer.queued(),
                    events_dropped = s.events_dropped.load(Ordering::Relaxed),
                    "simulated fleet"
                );
                last_counts = (t, w);
                last_report = std::time::Instant::now();
            }
            if did == BATCH {
                tokio::task::yield_now().await;
                continue;
            }
            // Sleep until the next timer or the next watch event.
            let next = self.timers.peek().map(|Reverse((t, _))| *t);
            let sleep = match next {
                Some(t) => {
                    let now = Timestamp::now().as_millisecond();
                    Duration::from_millis((t - now).clamp(0, 1000) as u64)
                }
                None => Duration::from_secs(1),
            };
            tokio::select! {
                ev = stream.try_next() => match ev {
                    Ok(Some(ev)) => self.on_watch(ev),
                    Ok(None) => return,
                    Err(e) => tracing::warn!(error = %e, "fleet pod watch failed; it retries"),
                },
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    fn on_watch(&mut self, ev: watcher::Event<Pod>) {
        match ev {
            watcher::Event::Init => self.relist = Some(HashSet::new()),
            watcher::Event::InitApply(pod) => {
                if let Some(uid) = pod.metadata.uid.clone()
                    && let Some(seen) = self.relist.as_mut()
                {
                    seen.insert(uid);
                }
                self.on_pod(pod);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.relist.take() {
                    let gone: Vec<String> = self
                        .pods
                        .keys()
                        .filter(|u| !seen.contains(*u))
                        .cloned()
                        .collect();
                    for uid in gone {
                        self.forget(&uid);
                    }
                }
            }
            watcher::Event::Apply(pod) => self.on_pod(pod),
            watcher::Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    self.forget(uid);
                }
            }
        }
    }

    fn forget(&mut self, uid: &str) {
        if let Some(e) = self.pods.remove(uid) {
            self.stats.pods.fetch_sub(1, Ordering::Relaxed);
            if e.last_status.as_ref().is_some_and(all_ready) {
                self.stats.ready.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn on_pod(&mut self, pod: Pod) {
        let Some(node) = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .and_then(|n| self.node_index.get(n).copied())
        else {
            return;
        };
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let pod = Arc::new(pod);
        match self.pods.get_mut(&uid) {
            Some(e) => {
                // Our own status writes come back too; only a change the engine reads (spec,
                // deletion, annotations) needs a decision now.
                let old = &e.sim.pod;
                let relevant = old.spec != pod.spec
                    || old.metadata.deletion_timestamp != pod.metadata.deletion_timestamp
                    || old.metadata.deletion_grace_period_seconds
                        != pod.metadata.deletion_grace_period_seconds
                    || old.metadata.annotations != pod.metadata.annotations;
                e.sim.update(pod);
                if relevant && !e.sim.deleted {
                    self.ready.push_back(uid);
                }
            }
            None => {
                let terminal = matches!(
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                );
                if terminal && pod.metadata.deletion_timestamp.is_none() {
                    // Finished before this fleet started: nothing runs, nothing to report.
                    return;
                }
                let n = self.pods_started[node];
                self.pods_started[node] += 1;
                let sim = SimPod::new(pod, &node_ip(node), pod_ip(node, n));
                self.pods.insert(
                    uid.clone(),
                    Entry {
                        sim,
                        node,
                        last_status: None,
                        wake: None,
                        reached_running: false,
                    },
                );
                self.stats.pods.fetch_add(1, Ordering::Relaxed);
                self.ready.push_back(uid);
            }
        }
    }

    /// Runs up to [`BATCH`] pods that are due; returns how many ran.
    fn run_due(&mut self) -> usize {
        let now = Timestamp::now();
        let now_ms = now.as_millisecond();
        let mut ran = 0;
        while ran < BATCH {
            let uid = if let Some(u) = self.ready.pop_front() {
                u
            } else {
                match self.timers.peek() {
                    Some(Reverse((t, _))) if *t <= now_ms => {
                        let Some(Reverse((t, u))) = self.timers.pop() else {
                            break;
                        };
                        // Stale: the pod was rescheduled or is gone.
                        match self.pods.get(&u) {
                            Some(e) if e.wake == Some(t) => u,
                            _ => continue,
                        }
                    }
                    _ => break,
                }
            };
            ran += 1;
            self.run_pod(&uid, now);
        }
        ran
    }

    fn run_pod(&mut self, uid: &str, now: Timestamp) {
        let Some(e) = self.pods.get_mut(uid) else {
            return;
        };
        if e.sim.deleted {
            return;
        }
        let out = {
            let mut held = self.images[e.node]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            e.sim.run(now, &mut held)
        };
        self.stats
            .decisions
            .fetch_add(out.steps as u64, Ordering::Relaxed);
        for ev in &out.events {
            if self.events.take(now) {
                self.recorder
                    .record_pod_on(Some(self.node_names[e.node].clone()), &e.sim.pod, ev);
                self.stats.events_recorded.fetch_add(1, Ordering::Relaxed);
            } else {
                self.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        let changed = e.last_status.as_ref() != Some(&out.status);
        if changed {
            let was = e.last_status.as_ref().is_some_and(all_ready);
            match (was, all_ready(&out.status)) {
                (false, true) => self.stats.ready.fetch_add(1, Ordering::Relaxed),
                (true, false) => self.stats.ready.fetch_sub(1, Ordering::Relaxed),
                _ => 0,
            };
            if !e.reached_running && out.status.phase.as_deref() == Some("Running") {
                e.reached_running = true;
                self.stats.reached_running.fetch_add(1, Ordering::Relaxed);
            }
        }
        if changed || out.confirm_deletion {
            let pod = &e.sim.pod;
            let body = changed.then(|| {
                crate::worker::status_patch(
                    uid,
                    &out.status,
                    &[e.last_status.as_ref(), pod.status.as_ref()],
                )
            });
            if changed {
                self.stats.transitions.fetch_add(1, Ordering::Relaxed);
            }
            self.writer.submit(
                uid,
                pod.metadata.namespace.as_deref().unwrap_or("default"),
                pod.metadata.name.as_deref().unwrap_or(""),
                body,
                out.confirm_deletion,
            );
            e.last_status = Some(out.status);
        }
        e.wake = out.wake_at.map(ceil_ms);
        if let Some(t) = e.wake {
            self.timers.push(Reverse((t, uid.to_string())));
        }
    }
}

/// `t` in whole milliseconds, rounded up: a timer popped at `now_ms >= ceil_ms(t)` finds its
/// pod due (rounding down would run it a fraction of a millisecond early, find nothing to do,
/// and get the same wake-up back — a spin for the rest of the batch).
fn ceil_ms(t: Timestamp) -> i64 {
    let ms = t.as_millisecond();
    match Timestamp::from_millisecond(ms) {
        Ok(floor) if floor < t => ms + 1,
        _ => ms,
    }
}

/// Phase Running and the Ready condition true.
fn all_ready(s: &PodStatus) -> bool {
    s.phase.as_deref() == Some("Running")
        && s.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// A fleet-wide event budget: `qps` per second, a burst of one second's worth.
struct TokenBucket {
    qps: f64,
    tokens: f64,
    at: Option<Timestamp>,
}

impl TokenBucket {
    fn new(qps: f64) -> Self {
        TokenBucket {
            qps,
            tokens: qps,
            at: None,
        }
    }

    fn take(&mut self, now: Timestamp) -> bool {
        if let Some(at) = self.at {
            let secs = now.duration_since(at).as_secs_f64().max(0.0);
            self.tokens = (self.tokens + secs * self.qps).min(self.qps.max(1.0));
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A pod's pending write: its latest status (merge patch body) and whether to delete it after.
struct Job {
    namespace: String,
    name: String,
    status: Option<Value>,
    delete: bool,
}

/// Coalescing status writes: one pending job per pod, the newest status replacing an older one
/// still queued; `K` writer tasks take jobs in arrival order.
#[derive(Default)]
struct StatusWriter {
    state: Mutex<WriterState>,
    notify: Notify,
}

#[derive(Default)]
struct WriterState {
    jobs: HashMap<String, Job>,
    queue: VecDeque<String>,
    /// Pods a writer is writing now: their next job waits, so writes of one pod stay in order.
    in_flight: HashSet<String>,
}

impl StatusWriter {
    fn submit(&self, uid: &str, namespace: &str, name: &str, status: Option<Value>, delete: bool) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match st.jobs.get_mut(uid) {
            Some(job) => {
                if status.is_some() {
                    job.status = status;
                }
                job.delete |= delete;
            }
            None => {
                st.jobs.insert(
                    uid.to_string(),
                    Job {
                        namespace: namespace.to_string(),
                        name: name.to_string(),
                        status,
                        delete,
                    },
                );
                st.queue.push_back(uid.to_string());
                drop(st);
                self.notify.notify_one();
            }
        }
    }

    /// Puts back a job whose write failed, unless a newer status was queued meanwhile (which
    /// then wins; a pending deletion is kept either way).
    fn retry(&self, uid: &str, job: Job) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match st.jobs.get_mut(uid) {
            Some(newer) => {
                newer.delete |= job.delete;
                if newer.status.is_none() {
                    newer.status = job.status;
                }
            }
            None => {
                st.jobs.insert(uid.to_string(), job);
                st.queue.push_back(uid.to_string());
            }
        }
    }

    /// The write of `uid` is over: its next job, if any, may go.
    fn done(&self, uid: &str) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.in_flight.remove(uid);
        let more = !st.queue.is_empty();
        drop(st);
        if more {
            self.notify.notify_one();
        }
    }

    fn queued(&self) -> usize {
        self.state.lock().map(|s| s.queue.len()).unwrap_or(0)
    }

    /// The oldest job of a pod no writer is writing now.
    fn take(&self) -> Option<(String, Job)> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let pos = st.queue.iter().position(|u| !st.in_flight.contains(u))?;
        let uid = st.queue.remove(pos)?;
        let job = st.jobs.remove(&uid)?;
        st.in_flight.insert(uid.clone());
        Some((uid, job))
    }

    async fn run(self: Arc<Self>, client: kube::Client, stats: Arc<FleetStats>) {
        let mut apis: HashMap<String, Api<Pod>> = HashMap::new();
        loop {
            let Some((uid, job)) = self.take() else {
                self.notify.notified().await;
                continue;
            };
            // More work may be queued than one wake-up said: pass the baton.
            if self.queued() > 0 {
                self.notify.notify_one();
            }
            let api = apis
                .entry(job.namespace.clone())
                .or_insert_with(|| Api::namespaced(client.clone(), &job.namespace))
                .clone();
            if let Some(failed) = write(&api, &uid, job, &stats).await {
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.retry(&uid, failed);
            }
            self.done(&uid);
        }
    }
}

/// Writes one pod's status and/or deletes it; returns what is left to retry after a failure.
async fn write(api: &Api<Pod>, uid: &str, mut job: Job, stats: &FleetStats) -> Option<Job> {
    if let Some(body) = &job.status {
        match api
            .patch_status(&job.name, &PatchParams::default(), &Patch::Merge(body))
            .await
        {
            Ok(_) => {
                stats.status_writes.fetch_add(1, Ordering::Relaxed);
                job.status = None;
            }
            // Gone, or another pod under that name now: nothing to write.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return None,
            Err(e) => {
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(pod = %job.name, error = %e, "status write failed; retrying");
                return Some(job);
            }
        }
    }
    if job.delete {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&job.name, &dp).await {
            Ok(_) => {
                stats.deletions.fetch_add(1, Ordering::Relaxed);
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => {
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(pod = %job.name, error = %e, "deletion failed; retrying");
                return Some(job);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_parsing() {
        let c = parse_capacity("cpu=32,memory=256Gi,pods=110").unwrap();
        assert_eq!(c["memory"].0, "256Gi");
        assert!(parse_capacity("cpu=32").unwrap_err().contains("memory"));
        assert!(parse_capacity("cpu=lots,memory=1Gi,pods=1").is_err());
        assert!(parse_capacity("cpu").is_err());
    }

    #[test]
    fn addresses_are_distinct() {
        let ips: HashSet<String> = (0..5000).map(node_ip).collect();
        assert_eq!(ips.len(), 5000);
        let pods: HashSet<String> = (0..300).map(|i| pod_ip(i, 7)).collect();
        assert_eq!(pods.len(), 300);
    }

    #[test]
    fn writer_keeps_only_the_latest_status_per_pod() {
        let w = StatusWriter::default();
        w.submit("u1", "default", "a", Some(json!(1)), false);
        w.submit("u2", "default", "b", Some(json!(2)), false);
        w.submit("u1", "default", "a", Some(json!(3)), true);
        assert_eq!(w.queued(), 2);
        let (uid, job) = w.take().unwrap();
        assert_eq!(uid, "u1");
        assert_eq!(job.status, Some(json!(3)));
        assert!(job.delete);
        assert_eq!(w.take().unwrap().0, "u2");
        assert!(w.take().is_none());
    }

    #[test]
    fn writes_of_one_pod_stay_in_order_and_a_retry_never_beats_a_newer_status() {
        let w = StatusWriter::default();
        w.submit("u1", "default", "a", Some(json!(1)), false);
        let (_, first) = w.take().unwrap();
        // A newer status while the first is being written: held back until it is done.
        w.submit("u1", "default", "a", Some(json!(2)), false);
        assert!(w.take().is_none());
        // The first write failed: its retry does not replace the newer status.
        w.retry("u1", first);
        w.done("u1");
        let (_, next) = w.take().unwrap();
        assert_eq!(next.status, Some(json!(2)));
        w.done("u1");
        // A failed write with nothing newer is retried as it was.
        w.retry("u1", next);
        assert_eq!(w.take().unwrap().1.status, Some(json!(2)));
    }

    #[test]
    fn timers_round_up_to_the_millisecond() {
        let t = Timestamp::from_millisecond(1_750_000_000_123).unwrap();
        assert_eq!(ceil_ms(t), 1_750_000_000_123);
        assert_eq!(
            ceil_ms(t + jiff::SignedDuration::from_nanos(1)),
            1_750_000_000_124
        );
    }

    #[test]
    fn event_budget() {
        let mut b = TokenBucket::new(2.0);
        let t = Timestamp::from_second(1_750_000_000).unwrap();
        assert!(b.take(t));
        assert!(b.take(t));
        assert!(!b.take(t));
        assert!(b.take(t + jiff::SignedDuration::from_millis(600)));
    }
}
