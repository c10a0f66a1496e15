//! The scheduler as an API client: informers in, decisions, bindings, conditions and events out.
//!
//! This is the only part of the crate that does I/O or reads the clock. It is built as one task
//! that owns all scheduling state ([`ClusterCache`] and [`SchedulingQueue`]) and a few helpers
//! around it, so the hot path takes no lock:
//!
//! ```text
//! pod watcher ──┐                        ┌─▶ bind tasks (≤ max_binds_in_flight) ──┐
//!               ├─▶ channel ─▶ the loop ─┼─▶ status patch tasks                   │
//! node watcher ─┘        ▲               └─▶ recorder (bounded queue) ─▶ Events    │
//!                        └──────────── bind results ◀──────────────────────────────┘
//! ```
//!
//! * Unassigned pods this scheduler is responsible for ([`responsible_for`]) wait in the queue;
//!   bound pods are counted in the cache ([`ClusterCache::observe_bound`] confirms an assumed
//!   pod); deleted or terminated pods leave it ([`ClusterCache::observe_gone`]).
//! * Cluster events move unschedulable pods on ([`SchedulingQueue::on_cluster_event`]): a node
//!   added, a node update a filter can see (not a heartbeat), a counted pod gone, an assumed pod
//!   forgotten after a failed binding.
//! * A cycle pops a pod, decides on the current snapshot, and on success assumes the pod onto the
//!   node at once, so the next decision in a burst already sees the node's room taken, then binds
//!   in a spawned task. A failed binding forgets the assumption and retries after the pod's
//!   back-off. A FitError emits `FailedScheduling`, patches `PodScheduled=False` when it changed,
//!   and parks the pod until a cluster event (or the 5-minute leftover flush).
//! * Nothing is decided before both informers have listed once, so a restart does not report
//!   `no nodes available` for pods that simply have not been matched with the nodes yet.
//! * A re-list after a lost watch is reconciled: pods and nodes known before but absent from the
//!   new list are treated as deleted.

mod informers;
mod recorder;
mod writes;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher;
use tokio::sync::{mpsc, oneshot};

use crate::cache::NodeChange;
use crate::event_series::{Occurrence, Regarding};
use crate::fit_error::{REASON_UNSCHEDULABLE, truncate_event_message};
use crate::pod_status::{
    REASON_SCHEDULER_ERROR, is_terminated, pod_key, pod_scheduled_false_patch,
    pod_update_is_relevant,
};
use crate::queue::{
    DEFAULT_POD_INITIAL_BACKOFF, DEFAULT_POD_MAX_BACKOFF,
    DEFAULT_POD_MAX_IN_UNSCHEDULABLE_PODS_DURATION, Location,
};
use crate::schedule::DEFAULT_SCHEDULER_NAME;
use crate::{
    ClusterCache, PreparedPod, ScheduleOptions, SchedulingQueue, responsible_for, schedule_prepared,
};
use informers::Input;
pub use informers::POD_FIELD_SELECTOR;
pub use recorder::event_body;

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Pods naming this `schedulerName` (absent means `default-scheduler`) are ours.
    pub scheduler_name: String,
    /// `reportingInstance` of the events: `<scheduler name>-<hostname>`.
    pub reporting_instance: String,
    pub options: ScheduleOptions,
    /// Bindings in flight at once; the loop stops deciding while they are all busy.
    pub max_binds_in_flight: usize,
    /// Status patches in flight at once (more wait for a slot).
    pub max_status_writes_in_flight: usize,
    /// Events waiting to be written; more are dropped and counted. 0 turns events off (for
    /// benchmarks that want to see the cost of events).
    pub event_queue_capacity: usize,
    /// Event writes in flight at once.
    pub max_event_writes_in_flight: usize,
    /// How often running event series are written.
    pub series_flush_interval: Duration,
    pub pod_initial_backoff: Duration,
    pub pod_max_backoff: Duration,
    pub pod_max_in_unschedulable: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            scheduler_name: DEFAULT_SCHEDULER_NAME.to_string(),
            reporting_instance: format!("{DEFAULT_SCHEDULER_NAME}-{}", hostname()),
            options: ScheduleOptions::default(),
            max_binds_in_flight: 256,
            max_status_writes_in_flight: 16,
            event_queue_capacity: 1000,
            max_event_writes_in_flight: 32,
            series_flush_interval: Duration::from_secs(5),
            pod_initial_backoff: DEFAULT_POD_INITIAL_BACKOFF,
            pod_max_backoff: DEFAULT_POD_MAX_BACKOFF,
            pod_max_in_unschedulable: DEFAULT_POD_MAX_IN_UNSCHEDULABLE_PODS_DURATION,
        }
    }
}

/// The machine's hostname (for `reportingInstance`), `localhost` when it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Running totals, readable while the scheduler runs.
#[derive(Debug, Default)]
pub struct Counters {
    /// Scheduling cycles run.
    pub attempts: AtomicU64,
    /// Bindings acknowledged.
    pub scheduled: AtomicU64,
    /// Cycles that ended in a FitError.
    pub unschedulable: AtomicU64,
    pub bind_errors: AtomicU64,
    pub status_patches: AtomicU64,
    pub status_patch_errors: AtomicU64,
    pub events_created: AtomicU64,
    pub events_patched: AtomicU64,
    /// Events dropped because the recorder's queue was full.
    pub events_dropped: AtomicU64,
    pub event_errors: AtomicU64,
}

impl Counters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// A point-in-time view of the loop's state.
#[derive(Debug, Clone, Default)]
pub struct CacheStats {
    /// Both informers have listed once.
    pub synced: bool,
    pub nodes: usize,
    /// Pods counted on nodes (bound and assumed).
    pub cached_pods: usize,
    /// Pods in the queue (any location).
    pub queued: usize,
    pub active: usize,
    pub backoff: usize,
    pub unschedulable: usize,
    pub binds_in_flight: usize,
    /// [`crate::Snapshot::approx_memory_bytes`].
    pub snapshot_bytes: usize,
}

enum Control {
    Stats(oneshot::Sender<CacheStats>),
}

/// A running scheduler. Dropping it does not stop it; call [`SchedulerHandle::shutdown`].
pub struct SchedulerHandle {
    control: mpsc::Sender<Control>,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl SchedulerHandle {
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The loop's current state (None once it has stopped).
    pub async fn stats(&self) -> Option<CacheStats> {
        let (tx, rx) = oneshot::channel();
        self.control.send(Control::Stats(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Stops the loop and the informers. Bindings already sent complete on their own.
    pub async fn shutdown(self) {
        self.task.abort();
        let _ = self.task.await;
        let c = &self.counters;
        tracing::info!(
            attempts = Counters::get(&c.attempts),
            scheduled = Counters::get(&c.scheduled),
            unschedulable = Counters::get(&c.unschedulable),
            bind_errors = Counters::get(&c.bind_errors),
            events_created = Counters::get(&c.events_created),
            events_dropped = Counters::get(&c.events_dropped),
            "scheduler stopped"
        );
    }

    /// Waits until the loop ends (it runs until shut down).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Starts the scheduler on `client`.
pub fn start(client: kube::Client, cfg: SchedulerConfig) -> SchedulerHandle {
    let counters = Arc::new(Counters::default());
    let (control_tx, control_rx) = mpsc::channel(8);
    let c = counters.clone();
    let task = tokio::spawn(async move {
        let (input_tx, input_rx) = mpsc::channel(8192);
        let watchers = informers::spawn(client.clone(), input_tx);
        let (recorder, recorder_task) = recorder::spawn(
            client.clone(),
            recorder::RecorderConfig {
                reporting_controller: cfg.scheduler_name.clone(),
                reporting_instance: cfg.reporting_instance.clone(),
                queue_capacity: cfg.event_queue_capacity,
                max_in_flight: cfg.max_event_writes_in_flight,
                flush_interval: cfg.series_flush_interval,
            },
            c.clone(),
        );
        let _guard = AbortOnDrop(watchers.into_iter().chain(recorder_task).collect());
        tracing::info!(scheduler = %cfg.scheduler_name, "scheduler starting");
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let status_slots = Arc::new(tokio::sync::Semaphore::new(
            cfg.max_status_writes_in_flight.max(1),
        ));
        let mut l = Loop {
            queue: SchedulingQueue::new(
                cfg.pod_initial_backoff,
                cfg.pod_max_backoff,
                cfg.pod_max_in_unschedulable,
            ),
            cfg,
            client,
            counters: c,
            recorder,
            cache: ClusterCache::new(),
            pending: HashMap::new(),
            epoch: Instant::now(),
            start_index: 0,
            seed: seed(),
            binds_in_flight: 0,
            done_tx,
            status_slots,
            pods_synced: false,
            nodes_synced: false,
            pod_relist: None,
            node_relist: None,
        };
        l.run(input_rx, done_rx, control_rx).await;
    });
    SchedulerHandle {
        control: control_tx,
        counters,
        task,
    }
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

fn seed() -> u64 {
    let t = Timestamp::now().as_nanosecond() as u64;
    t ^ (u64::from(std::process::id()) << 32)
}

/// The outcome of one binding, sent back to the loop.
struct BindDone {
    key: String,
    node: String,
    regarding: Regarding,
    result: Result<(), writes::WriteError>,
}

/// A pod waiting to be scheduled (or being bound), with its latest object.
struct Pending {
    pod: Arc<Pod>,
}

struct Loop {
    cfg: SchedulerConfig,
    client: kube::Client,
    counters: Arc<Counters>,
    recorder: recorder::Recorder,
    cache: ClusterCache,
    queue: SchedulingQueue,
    pending: HashMap<String, Pending>,
    epoch: Instant,
    start_index: usize,
    seed: u64,
    binds_in_flight: usize,
    done_tx: mpsc::UnboundedSender<BindDone>,
    status_slots: Arc<tokio::sync::Semaphore>,
    pods_synced: bool,
    nodes_synced: bool,
    /// Keys seen since the pod informer started a re-list.
    pod_relist: Option<HashSet<String>>,
    node_relist: Option<HashSet<String>>,
}

/// Decisions made before the loop looks at its inputs again.
const CYCLES_PER_TURN: usize = 256;

impl Loop {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn synced(&self) -> bool {
        self.pods_synced && self.nodes_synced
    }

    fn can_schedule(&self) -> bool {
        self.synced() && self.binds_in_flight < self.cfg.max_binds_in_flight
    }

    async fn run(
        &mut self,
        mut inputs: mpsc::Receiver<Input>,
        mut done: mpsc::UnboundedReceiver<BindDone>,
        mut control: mpsc::Receiver<Control>,
    ) {
        loop {
            // Take in everything already delivered, then decide a batch.
            loop {
                match inputs.try_recv() {
                    Ok(i) => self.on_input(i),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            while let Ok(d) = done.try_recv() {
                self.on_bind_done(d);
            }
            let now = self.now();
            self.queue.flush(now);
            let mut cycles = 0;
            while cycles < CYCLES_PER_TURN && self.can_schedule() {
                let Some(key) = self.queue.pop_active() else {
                    break;
                };
                self.schedule(key);
                cycles += 1;
            }
            if cycles == CYCLES_PER_TURN {
                tokio::task::yield_now().await;
                continue;
            }
            // Nothing more to do now: wait for an input, a binding, or the queue's next timer.
            let wake = if self.can_schedule() {
                self.queue.next_wakeup(self.now())
            } else {
                None
            };
            let sleep = tokio::time::sleep(wake.unwrap_or(Duration::from_secs(3600)));
            tokio::select! {
                i = inputs.recv() => match i {
                    Some(i) => self.on_input(i),
                    None => return,
                },
                Some(d) = done.recv() => self.on_bind_done(d),
                c = control.recv() => match c {
                    Some(Control::Stats(tx)) => { let _ = tx.send(self.stats()); }
                    None => {}
                },
                _ = sleep => {}
            }
        }
    }

    fn stats(&mut self) -> CacheStats {
        CacheStats {
            synced: self.synced(),
            nodes: self.cache.snapshot().num_nodes(),
            cached_pods: self.cache.num_pods(),
            queued: self.queue.len(),
            active: self.queue.len_active(),
            backoff: self.queue.len_backoff(),
            unschedulable: self.queue.len_unschedulable(),
            binds_in_flight: self.binds_in_flight,
            snapshot_bytes: self.cache.snapshot().approx_memory_bytes(),
        }
    }

    // ----- informer events -----

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Pod(ev) => match *ev {
                watcher::Event::Apply(p) => self.on_pod(p),
                watcher::Event::Delete(p) => self.on_pod_gone(&pod_key(&p)),
                watcher::Event::Init => self.pod_relist = Some(HashSet::new()),
                watcher::Event::InitApply(p) => {
                    if let Some(seen) = &mut self.pod_relist {
                        seen.insert(pod_key(&p));
                    }
                    self.on_pod(p);
                }
                watcher::Event::InitDone => self.pod_relist_done(),
            },
            Input::Node(ev) => match *ev {
                watcher::Event::Apply(n) => self.on_node(&n),
                watcher::Event::Delete(n) => self.on_node_gone(n.metadata.name.as_deref()),
                watcher::Event::Init => self.node_relist = Some(HashSet::new()),
                watcher::Event::InitApply(n) => {
                    if let Some(seen) = &mut self.node_relist {
                        seen.insert(n.metadata.name.clone().unwrap_or_default());
                    }
                    self.on_node(&n);
                }
                watcher::Event::InitDone => self.node_relist_done(),
            },
        }
    }

    fn pod_relist_done(&mut self) {
        let seen = self.pod_relist.take().unwrap_or_default();
        let mut gone: Vec<String> = self
            .pending
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        gone.extend(
            self.cache
                .pods()
                .filter(|(k, _, assumed)| !assumed && !seen.contains(*k))
                .map(|(k, _, _)| k.to_string()),
        );
        for key in gone {
            self.on_pod_gone(&key);
        }
        if !self.pods_synced {
            tracing::info!(pods = seen.len(), "pods listed");
        }
        self.pods_synced = true;
    }

    fn node_relist_done(&mut self) {
        let seen = self.node_relist.take().unwrap_or_default();
        let gone: Vec<String> = self
            .cache
            .snapshot()
            .nodes()
            .iter()
            .filter(|n| !seen.contains(&n.name))
            .map(|n| n.name.clone())
            .collect();
        for name in gone {
            self.on_node_gone(Some(&name));
        }
        if !self.nodes_synced {
            tracing::info!(nodes = seen.len(), "nodes listed");
        }
        self.nodes_synced = true;
    }

    fn on_pod(&mut self, pod: Pod) {
        let key = pod_key(&pod);
        if is_terminated(&pod) {
            self.on_pod_gone(&key);
            return;
        }
        let now = self.now();
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty());
        if let Some(node) = node {
            // Bound (by us or anyone): count it; it is no longer waiting.
            if self.pending.remove(&key).is_some() {
                self.queue.remove(&key);
            }
            let requests = crate::PodRequests::of(&pod);
            let freed = self.cache.node_of(&key).is_some_and(|n| n != node);
            self.cache.observe_bound(&key, node, requests);
            if freed {
                self.queue.on_cluster_event(now);
            }
            return;
        }
        if !responsible_for(&pod, &self.cfg.scheduler_name) {
            if self.pending.remove(&key).is_some() {
                self.queue.remove(&key);
            }
            return;
        }
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        let pod = Arc::new(pod);
        if self.cache.is_assumed(&key) {
            // Being bound: keep the newest object, do not queue it again.
            self.pending.insert(key, Pending { pod });
            return;
        }
        match self
            .pending
            .insert(key.clone(), Pending { pod: pod.clone() })
        {
            None => self.queue.push_active_with_priority(&key, priority, now),
            Some(old) => {
                if self.queue.location(&key).is_none() {
                    if !deleting {
                        self.queue.push_active_with_priority(&key, priority, now);
                    }
                } else if pod_update_is_relevant(&old.pod, &pod) {
                    self.queue.on_pod_updated(&key, now);
                }
            }
        }
    }

    fn on_pod_gone(&mut self, key: &str) {
        if self.pending.remove(key).is_some() {
            self.queue.remove(key);
        }
        if self.cache.observe_gone(key) {
            // Room freed: an AssignedPodDelete cluster event.
            self.queue.on_cluster_event(self.now());
        }
    }

    fn on_node(&mut self, node: &Node) {
        match self.cache.apply_node(node) {
            NodeChange::Added | NodeChange::Updated => self.queue.on_cluster_event(self.now()),
            NodeChange::Unchanged => {}
        }
    }

    fn on_node_gone(&mut self, name: Option<&str>) {
        if let Some(name) = name {
            self.cache.remove_node(name);
        }
    }

    // ----- the scheduling cycle -----

    fn schedule(&mut self, key: String) {
        let Some(pod) = self.pending.get(&key).map(|p| p.pod.clone()) else {
            self.queue.remove(&key);
            return;
        };
        self.counters.attempts.fetch_add(1, Ordering::Relaxed);
        if pod.metadata.deletion_timestamp.is_some() {
            let note = format!("skip schedule deleting pod: {key}");
            self.event(&pod, "Warning", "FailedScheduling", "Scheduling", note);
            self.queue.remove(&key);
            return;
        }
        let prepared = PreparedPod::new(&pod);
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let decision = schedule_prepared(
            &prepared,
            self.cache.snapshot(),
            self.start_index,
            self.seed,
            &self.cfg.options,
        );
        match decision {
            Ok(placement) => {
                self.start_index = placement.next_start_index;
                let node = placement.node_name;
                if self.cache.assume(&key, &node, placement.requests).is_err() {
                    // Already counted as bound: nothing left to do for it.
                    self.queue.remove(&key);
                    self.pending.remove(&key);
                    return;
                }
                tracing::debug!(pod = %key, node = %node, evaluated = placement.evaluated,
                    feasible = placement.feasible, "assumed");
                self.spawn_bind(key, &pod, node);
            }
            Err(fit) => {
                self.start_index = fit.next_start_index;
                self.counters.unschedulable.fetch_add(1, Ordering::Relaxed);
                let message = fit.message();
                tracing::debug!(pod = %key, reason = %message, "unschedulable");
                self.event(
                    &pod,
                    "Warning",
                    "FailedScheduling",
                    "Scheduling",
                    fit.event_message(),
                );
                self.write_condition(&pod, REASON_UNSCHEDULABLE, &message);
                self.queue.mark_unschedulable(&key, self.now());
            }
        }
    }

    fn spawn_bind(&mut self, key: String, pod: &Pod, node: String) {
        self.binds_in_flight += 1;
        let client = self.client.clone();
        let tx = self.done_tx.clone();
        let regarding = regarding(pod);
        tokio::spawn(async move {
            let result = writes::bind(
                &client,
                &regarding.namespace,
                &regarding.name,
                &regarding.uid,
                &node,
            )
            .await;
            let _ = tx.send(BindDone {
                key,
                node,
                regarding,
                result,
            });
        });
    }

    fn on_bind_done(&mut self, d: BindDone) {
        self.binds_in_flight = self.binds_in_flight.saturating_sub(1);
        match d.result {
            Ok(()) => {
                self.counters.scheduled.fetch_add(1, Ordering::Relaxed);
                let note = format!(
                    "Successfully assigned {}/{} to {}",
                    d.regarding.namespace, d.regarding.name, d.node
                );
                self.recorder.record(Occurrence {
                    regarding: d.regarding,
                    type_: "Normal",
                    reason: "Scheduled",
                    action: "Binding",
                    note,
                });
                // The watch confirms the assumption (observe_bound) when the bound pod arrives.
                if self.queue.location(&d.key) == Some(Location::InFlight) {
                    self.queue.remove(&d.key);
                    self.pending.remove(&d.key);
                }
            }
            Err(e) => {
                self.counters.bind_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(pod = %d.key, node = %d.node, code = e.code, error = %e.message, "binding failed");
                let now = self.now();
                if self.cache.forget(&d.key) {
                    // The room it held is free again (upstream treats this as AssignedPodDelete).
                    self.queue.on_cluster_event(now);
                }
                if self.queue.location(&d.key) != Some(Location::InFlight) {
                    return;
                }
                let Some(pod) = self.pending.get(&d.key).map(|p| p.pod.clone()) else {
                    self.queue.remove(&d.key);
                    return;
                };
                // DefaultBinder reports the API server's error as it is.
                let message = e.message;
                self.event(
                    &pod,
                    "Warning",
                    "FailedScheduling",
                    "Scheduling",
                    truncate_event_message(&message),
                );
                self.write_condition(&pod, REASON_SCHEDULER_ERROR, &message);
                self.queue.mark_backoff(&d.key, now);
            }
        }
    }

    fn event(
        &self,
        pod: &Pod,
        type_: &'static str,
        reason: &'static str,
        action: &'static str,
        note: String,
    ) {
        self.recorder.record(Occurrence {
            regarding: regarding(pod),
            type_,
            reason,
            action,
            note,
        });
    }

    /// Patches `PodScheduled=False` when the pod does not already show it.
    fn write_condition(&self, pod: &Pod, reason: &str, message: &str) {
        let Some(patch) = pod_scheduled_false_patch(pod, reason, message, Timestamp::now()) else {
            return;
        };
        let r = regarding(pod);
        let client = self.client.clone();
        let slots = self.status_slots.clone();
        let counters = self.counters.clone();
        tokio::spawn(async move {
            let Ok(_permit) = slots.acquire_owned().await else {
                return;
            };
            match writes::patch_pod_status(&client, &r.namespace, &r.name, &patch).await {
                Ok(()) => {
                    counters.status_patches.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    counters.status_patch_errors.fetch_add(1, Ordering::Relaxed);
                    if e.code != 404 {
                        tracing::warn!(pod = %r.name, namespace = %r.namespace, error = %e.message, "cannot update the PodScheduled condition");
                    }
                }
            }
        });
    }
}

/// The event's `involvedObject` for a pod.
fn regarding(pod: &Pod) -> Regarding {
    let m = &pod.metadata;
    Regarding {
        kind: "Pod",
        api_version: "v1",
        namespace: m.namespace.clone().unwrap_or_default(),
        name: m.name.clone().unwrap_or_default(),
        uid: m.uid.clone().unwrap_or_default(),
        resource_version: m.resource_version.clone().unwrap_or_default(),
    }
}
