//! The pod worker: one task per pod bound to this node, carrying out what
//! [`crate::lifecycle::decide`] asks.
//!
//! ```text
//! loop {
//!   observation = cached runtime view (sandbox, newest two instances per container, images)
//!   observation.outcomes = what finished since the last decision (each passed exactly once)
//!   d = decide(pod, observation, memory, now)
//!   spawn each action (completion → outcome + wake-up); record d.events
//!   write pods/status when d.status changed; then ConfirmDeletion → DELETE grace 0, UID precondition
//!   sleep until d.wake_at, an action finishing, a runtime exit or a pod update
//! }
//! ```
//!
//! The worker keeps its own view of the pod's container instances, seeded from the runtime's
//! [`Runtime::list`] when it starts (that is how an agent restart re-adopts running containers
//! instead of starting them again) and updated by its own actions and by the runtime's exit
//! notices, which the agent routes to the pod's worker. A notice that arrives before the start
//! that created the instance has reported is kept until the instance shows up.
//!
//! Rules live in the engine; here are only the I/O and its error handling: every failure is
//! logged and retried, and a worker never panics on purpose (the agent restarts one that does).
//! A pod removed from the API (gone) has its containers stopped and its sandbox removed. A pod
//! that is already Succeeded/Failed and of which the runtime knows nothing (for example after
//! the runtime's state was lost) is left alone: its status is never rewritten.

mod config;
mod handlers;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Pod, PodStatus, Secret};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::lifecycle::{Action, decide};
use crate::memory::{Phase, PodMemory};
use crate::observed::{
    ContainerRef, Exit, ImagePresence, Instance, InstanceState, ObservedPod, Outcome, StartError,
};
use crate::recorder::Recorder;
use crate::rules::all_containers;
use crate::runtime::{ExitNotice, PodRef, Runtime, Sandbox, SandboxConfig};

pub use config::{expand, expand_all};

/// How long a worker sleeps when the engine asks for nothing (a periodic resync).
const RESYNC: Duration = Duration::from_secs(60);
/// Retry delay after a failed status write or deletion.
const WRITE_RETRY: Duration = Duration::from_secs(1);
/// Grace given to containers of a pod that vanished from the API.
const GONE_GRACE: Duration = Duration::from_secs(2);

/// What the runtime tells a worker.
#[derive(Debug, Clone)]
pub enum RuntimeEvent {
    Exit(ExitNotice),
    /// Exit notices were lost (the broadcast lagged): re-read the runtime.
    Resync,
}

/// Everything the workers share.
pub struct WorkerCtx {
    pub client: kube::Client,
    pub runtime: Arc<dyn Runtime>,
    pub recorder: Recorder,
    pub node_name: String,
    pub node_ip: String,
    /// `<state dir>/pods`: per-pod directories (volumes, the pod's identity for orphan cleanup).
    pub pods_dir: PathBuf,
    pub table: Arc<PodTable>,
    /// Image pulls are serialised per node (`serializeImagePulls: true`).
    pub pulls: Semaphore,
}

impl WorkerCtx {
    pub fn new(
        client: kube::Client,
        runtime: Arc<dyn Runtime>,
        recorder: Recorder,
        node_name: String,
        node_ip: String,
        pods_dir: PathBuf,
    ) -> Self {
        WorkerCtx {
            client,
            runtime,
            recorder,
            node_name,
            node_ip,
            pods_dir,
            table: Arc::new(PodTable::default()),
            pulls: Semaphore::new(1),
        }
    }

    /// `<pods dir>/<uid>`.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.pods_dir.join(uid)
    }
}

/// One container instance as the log server needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    pub id: String,
    pub attempt: u32,
    pub running: bool,
}

/// What a worker publishes about its pod for the agent's server.
#[derive(Debug, Clone)]
pub struct PodView {
    pub pod_ref: PodRef,
    /// The status of the last decision (fresher than the API's).
    pub status: PodStatus,
    /// Known instances per container name, oldest first.
    pub instances: HashMap<String, Vec<InstanceView>>,
    /// The names of the pod's containers (init containers included), from its spec.
    pub containers: Vec<String>,
}

/// The pods the workers run, by (namespace, name).
#[derive(Default)]
pub struct PodTable {
    pods: RwLock<HashMap<(String, String), PodView>>,
}

impl PodTable {
    pub fn get(&self, namespace: &str, name: &str) -> Option<PodView> {
        let pods = self.pods.read().unwrap_or_else(|e| e.into_inner());
        pods.get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Publishes a pod's view (its worker does, after every decision).
    pub fn put(&self, view: PodView) {
        let key = (view.pod_ref.namespace.clone(), view.pod_ref.name.clone());
        let mut pods = self.pods.write().unwrap_or_else(|e| e.into_inner());
        pods.insert(key, view);
    }

    fn remove(&self, pod: &PodRef) {
        let key = (pod.namespace.clone(), pod.name.clone());
        let mut pods = self.pods.write().unwrap_or_else(|e| e.into_inner());
        if pods.get(&key).is_some_and(|v| v.pod_ref.uid == pod.uid) {
            pods.remove(&key);
        }
    }
}

/// The inputs of one pod's worker; the agent holds the other ends.
pub struct WorkerInputs {
    /// The latest pod from the watch; None once it is gone from the API. The sender being
    /// dropped means the agent is shutting down.
    pub pod: watch::Receiver<Option<Arc<Pod>>>,
    pub runtime: mpsc::UnboundedReceiver<RuntimeEvent>,
}

/// The identity of a pod for the runtime.
pub fn pod_ref(pod: &Pod) -> PodRef {
    PodRef {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

/// The merge patch of pods/status that writes `status` whole: top-level fields that the `older`
/// statuses had and `status` lacks are set to null (removed), and the pod's UID is a
/// precondition (a pod recreated under the same name is not overwritten).
pub fn status_patch(uid: &str, status: &PodStatus, older: &[Option<&PodStatus>]) -> Value {
    let mut body = serde_json::to_value(status).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut body {
        for old in older.iter().flatten() {
            if let Ok(Value::Object(o)) = serde_json::to_value(old) {
                for k in o.keys() {
                    if !map.contains_key(k) {
                        map.insert(k.clone(), Value::Null);
                    }
                }
            }
        }
    }
    json!({
        "metadata": {"uid": uid},
        "status": body,
    })
}

/// Runs a pod's worker until the pod is finished with (deleted and confirmed, or gone) or the
/// agent shuts down. A worker that panics is started again on the same inputs.
pub async fn run(ctx: Arc<WorkerCtx>, mut inputs: WorkerInputs) {
    use futures::FutureExt;
    let mut last = inputs.pod.borrow().clone();
    loop {
        // A worker restarted after its pod vanished still gets the pod it knew, to clean up.
        let Some(pod) = inputs.pod.borrow().clone().or_else(|| last.clone()) else {
            return;
        };
        last = Some(pod.clone());
        let worker = Worker::new(ctx.clone(), pod);
        let res = std::panic::AssertUnwindSafe(worker.run(&mut inputs))
            .catch_unwind()
            .await;
        match res {
            Ok(()) => return,
            Err(_) => {
                tracing::error!("pod worker panicked; restarting it");
                tokio::time::sleep(WRITE_RETRY).await;
            }
        }
    }
}

/// A message from a finished action.
enum Done {
    Sandbox(Result<Sandbox, String>),
    SandboxRemoved,
    /// A start's outcome with the instance it created, if any (the instance is in the view
    /// before the outcome is passed on).
    Start {
        name: String,
        instance: Option<Instance>,
        outcome: Outcome,
    },
    Exited {
        id: String,
        exit: Exit,
    },
    Outcome(Outcome),
}

struct Worker {
    ctx: Arc<WorkerCtx>,
    pod: Arc<Pod>,
    pod_ref: PodRef,
    memory: PodMemory,
    /// Instances per container name, oldest first (at most the two newest are kept).
    instances: HashMap<String, Vec<Instance>>,
    /// Exits of instances not known yet.
    pending_exits: HashMap<String, Exit>,
    sandbox: Option<Sandbox>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    tasks: JoinSet<()>,
    outcomes: Vec<Outcome>,
    /// The status last written (or the API's, before the first write).
    last_written: Option<PodStatus>,
    /// resourceVersion of the pod after the last status write.
    written_rv: Option<u64>,
    /// ConfirmDeletion was decided; DELETE once the status is written.
    confirm_pending: bool,
    /// A terminal pod the runtime knows nothing of: never touched.
    passive: bool,
}

impl Worker {
    fn new(ctx: Arc<WorkerCtx>, pod: Arc<Pod>) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let pod_ref = pod_ref(&pod);
        Worker {
            ctx,
            last_written: pod.status.clone(),
            pod,
            pod_ref,
            memory: PodMemory::new(),
            instances: HashMap::new(),
            pending_exits: HashMap::new(),
            sandbox: None,
            done_tx,
            done_rx,
            tasks: JoinSet::new(),
            outcomes: Vec::new(),
            written_rv: None,
            confirm_pending: false,
            passive: false,
        }
    }

    fn runtime(&self) -> &dyn Runtime {
        self.ctx.runtime.as_ref()
    }

    async fn run(mut self, inputs: &mut WorkerInputs) {
        self.adopt().await;
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            // The newest pod, or gone.
            let latest = inputs.pod.borrow_and_update().clone();
            match latest {
                Some(p) => self.take_pod(p),
                None => {
                    self.gone().await;
                    return;
                }
            }
            while let Ok(ev) = inputs.runtime.try_recv() {
                self.on_runtime_event(ev).await;
            }
            while let Ok(d) = self.done_rx.try_recv() {
                self.on_done(d);
            }
            while self.tasks.try_join_next().is_some() {}

            let mut wake = None;
            if self.passive && self.pod.metadata.deletion_timestamp.is_some() {
                if self.confirm_deletion().await.is_ok() {
                    self.cleanup().await;
                    return;
                }
                retry_at = Some(tokio::time::Instant::now() + WRITE_RETRY);
            } else if !self.passive {
                match self.step().await {
                    Step::Continue { wake_at, retry } => {
                        wake = wake_at;
                        retry_at = retry.map(|d| tokio::time::Instant::now() + d);
                    }
                    Step::Finished => {
                        self.cleanup().await;
                        return;
                    }
                    Step::Gone => {
                        self.gone().await;
                        return;
                    }
                }
            }

            let now = self.runtime().now();
            let mut deadline = tokio::time::Instant::now() + RESYNC;
            if let Some(w) = wake {
                let d = w.duration_since(now);
                let d = if d.is_negative() {
                    Duration::ZERO
                } else {
                    d.unsigned_abs()
                };
                // A little late rather than early: the engine compares with its own clock.
                deadline = deadline.min(tokio::time::Instant::now() + d + Duration::from_millis(5));
            }
            if let Some(r) = retry_at {
                deadline = deadline.min(r);
            }
            tokio::select! {
                changed = inputs.pod.changed() => {
                    if changed.is_err() {
                        // The agent is shutting down: leave the containers running.
                        self.tasks.abort_all();
                        return;
                    }
                }
                Some(ev) = inputs.runtime.recv() => self.on_runtime_event(ev).await,
                Some(d) = self.done_rx.recv() => self.on_done(d),
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Takes a newer pod from the watch; notices a status someone else wrote.
    fn take_pod(&mut self, p: Arc<Pod>) {
        if Arc::ptr_eq(&p, &self.pod) {
            return;
        }
        let rv = p
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok());
        let newer = match (rv, self.written_rv) {
            (Some(a), Some(b)) => a > b,
            (_, None) => true,
            _ => false,
        };
        if newer && p.status != self.last_written {
            self.last_written = p.status.clone();
        }
        self.pod = p;
    }

    /// Reads what the runtime already has for this pod (an agent restart).
    async fn adopt(&mut self) {
        let uid = self.pod_ref.uid.clone();
        let known: Vec<_> = self
            .runtime()
            .list()
            .await
            .into_iter()
            .filter(|k| k.pod_uid == uid)
            .collect();
        for k in &known {
            self.insert_instance(&k.container, k.instance.clone());
        }
        let terminal = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .and_then(Phase::parse)
            .is_some_and(Phase::is_terminal);
        self.passive = terminal && known.is_empty();
        let running = known
            .iter()
            .any(|k| matches!(k.instance.state, InstanceState::Running { .. }));
        if running {
            match self
                .runtime()
                .create_sandbox(&self.pod_ref, &sandbox_config(&self.pod))
                .await
            {
                Ok(sb) => self.sandbox = Some(sb),
                Err(e) => {
                    tracing::warn!(pod = %self.name(), error = %e, "cannot find the sandbox of a running pod")
                }
            }
            tracing::info!(pod = %self.name(), containers = known.len(), "re-adopted the pod's containers");
        }
        if !self.passive {
            self.write_identity();
        }
        self.publish(self.pod.status.clone().unwrap_or_default());
    }

    /// `<pod dir>/pod.json`: the pod's namespace and name, so an orphan can be cleaned up after
    /// an agent restart even when its pod is gone from the API.
    fn write_identity(&self) {
        let dir = self.ctx.pod_dir(&self.pod_ref.uid);
        let body = json!({"namespace": self.pod_ref.namespace, "name": self.pod_ref.name, "uid": self.pod_ref.uid});
        if let Err(e) = std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(dir.join("pod.json"), body.to_string()))
        {
            tracing::warn!(pod = %self.name(), error = %e, "cannot write the pod's directory");
        }
    }

    fn name(&self) -> String {
        format!("{}/{}", self.pod_ref.namespace, self.pod_ref.name)
    }

    /// One decision and what follows from it.
    async fn step(&mut self) -> Step {
        let pod = self.pod.clone();
        let now = self.runtime().now();
        let mut observed = self.observe(&pod).await;
        observed.outcomes = std::mem::take(&mut self.outcomes);
        let d = decide(&pod, &observed, &mut self.memory, now);
        for a in d.actions {
            if a == Action::ConfirmDeletion {
                self.confirm_pending = true;
            } else {
                self.perform(a);
            }
        }
        for ev in &d.events {
            self.ctx.recorder.record_pod(&pod, ev);
        }
        self.publish(d.status.clone());

        let mut retry = None;
        if self.last_written.as_ref() != Some(&d.status) {
            match self.write_status(&d.status).await {
                Ok(()) => {}
                Err(Write::Gone) => return Step::Gone,
                Err(Write::Retry) => retry = Some(WRITE_RETRY),
            }
        }
        if self.confirm_pending && retry.is_none() {
            match self.confirm_deletion().await {
                Ok(()) => return Step::Finished,
                Err(()) => retry = Some(WRITE_RETRY),
            }
        }
        Step::Continue {
            wake_at: d.wake_at,
            retry,
        }
    }

    /// The observation: sandbox, the newest two instances of each container, image presence.
    async fn observe(&self, pod: &Pod) -> ObservedPod {
        let mut o = ObservedPod::for_pod(pod);
        o.sandbox_ready = self.sandbox.is_some();
        o.host_ip = Some(self.ctx.node_ip.clone());
        o.pod_ips = self.sandbox.iter().map(|s| s.pod_ip.clone()).collect();
        let Some(spec) = pod.spec.as_ref() else {
            return o;
        };
        for r in all_containers(spec) {
            let Some(c) = r.spec(spec) else { continue };
            let list = self.instances.get(&c.name);
            let current = list.and_then(|l| l.last()).cloned();
            let previous = list.and_then(|l| l.iter().rev().nth(1)).cloned();
            let running = current
                .as_ref()
                .is_some_and(|i| i.running_since().is_some());
            let image = if running {
                ImagePresence::Present
            } else {
                self.runtime()
                    .image_status(c.image.as_deref().unwrap_or(""))
                    .await
            };
            let oc = o.container_mut(r);
            oc.current = current;
            oc.previous = previous;
            oc.image = image;
        }
        o
    }

    /// Publishes the pod for the log server.
    fn publish(&self, status: PodStatus) {
        let instances = self
            .instances
            .iter()
            .map(|(name, list)| {
                let views = list
                    .iter()
                    .map(|i| InstanceView {
                        id: i.id.clone(),
                        attempt: i.attempt,
                        running: i.running_since().is_some(),
                    })
                    .collect();
                (name.clone(), views)
            })
            .collect();
        let containers = self
            .pod
            .spec
            .as_ref()
            .map(|spec| {
                all_containers(spec)
                    .filter_map(|r| r.spec(spec).map(|c| c.name.clone()))
                    .collect()
            })
            .unwrap_or_default();
        self.ctx.table.put(PodView {
            pod_ref: self.pod_ref.clone(),
            status,
            instances,
            containers,
        });
    }

    /// PATCHes pods/status with the whole status (fields it no longer has are removed).
    async fn write_status(&mut self, status: &PodStatus) -> Result<(), Write> {
        let patch = status_patch(
            &self.pod_ref.uid,
            status,
            &[self.last_written.as_ref(), self.pod.status.as_ref()],
        );
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.pod_ref.namespace);
        match api
            .patch_status(
                &self.pod_ref.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(p) => {
                self.last_written = Some(status.clone());
                self.written_rv = p
                    .metadata
                    .resource_version
                    .as_deref()
                    .and_then(|v| v.parse().ok());
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Err(Write::Gone),
            Err(kube::Error::Api(s)) if s.code == 409 && s.message.contains("UID") => {
                // Another pod of the same name: ours is gone.
                Err(Write::Gone)
            }
            Err(e) => {
                tracing::warn!(pod = %self.name(), error = %e, "cannot write the pod status; retrying");
                Err(Write::Retry)
            }
        }
    }

    /// DELETE with grace 0 and the pod's UID as precondition: the pod leaves the API.
    async fn confirm_deletion(&mut self) -> Result<(), ()> {
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.pod_ref.namespace);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.pod_ref.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&self.pod_ref.name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => {
                tracing::warn!(pod = %self.name(), error = %e, "cannot confirm the pod's deletion; retrying");
                Err(())
            }
        }
    }

    fn insert_instance(&mut self, container: &str, mut instance: Instance) {
        if let Some(exit) = self.pending_exits.remove(&instance.id)
            && !matches!(instance.state, InstanceState::Exited(_))
        {
            instance.state = InstanceState::Exited(exit);
        }
        let known_exited = self.instances.get(container).is_some_and(|l| {
            l.iter()
                .any(|i| i.id == instance.id && matches!(i.state, InstanceState::Exited(_)))
        });
        if !known_exited && let InstanceState::Exited(exit) = instance.state.clone() {
            let exit = self.with_termination_message(container, instance.attempt, exit);
            instance.state = InstanceState::Exited(exit);
        }
        let list = self.instances.entry(container.to_string()).or_default();
        if let Some(existing) = list.iter_mut().find(|i| i.id == instance.id) {
            if !matches!(existing.state, InstanceState::Exited(_)) {
                *existing = instance;
            }
        } else {
            list.push(instance);
        }
        list.sort_by_key(|i| i.attempt);
        // Keep the two newest (state and lastState); remove older exited ones from the runtime.
        while list.len() > 2 {
            let old = list.remove(0);
            if old.running_since().is_some() {
                list.insert(0, old);
                break;
            }
            let runtime = self.ctx.runtime.clone();
            let pod = self.pod_ref.clone();
            self.tasks.spawn(async move {
                if let Err(e) = runtime.remove_container(&pod, &old.id).await {
                    tracing::debug!(error = %e, "cannot remove an old container instance");
                }
            });
        }
    }

    fn apply_exit(&mut self, id: &str, exit: Exit) {
        let found = self.instances.iter().find_map(|(name, list)| {
            list.iter().find(|i| i.id == id).map(|i| {
                (
                    name.clone(),
                    i.attempt,
                    matches!(i.state, InstanceState::Exited(_)),
                )
            })
        });
        let Some((name, attempt, exited)) = found else {
            self.pending_exits.insert(id.to_string(), exit);
            return;
        };
        if exited {
            return;
        }
        let exit = self.with_termination_message(&name, attempt, exit);
        if let Some(i) = self
            .instances
            .get_mut(&name)
            .and_then(|l| l.iter_mut().find(|i| i.id == id))
        {
            i.state = InstanceState::Exited(exit);
        }
    }

    /// `state.terminated.message` of an exited instance, as the kubelet fills it: the
    /// instance's termination message file (see `config::termination_file`), or under
    /// `FallbackToLogsOnError` the end of its log; appended to the runtime's own message.
    fn with_termination_message(&self, container: &str, attempt: u32, mut exit: Exit) -> Exit {
        let Some(c) = self.pod.spec.as_ref().and_then(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .find(|c| c.name == container)
        }) else {
            return exit;
        };
        let file =
            config::termination_file(&self.ctx.pod_dir(&self.pod_ref.uid), container, attempt);
        let content = read_head(&file, crate::rules::TERMINATION_MESSAGE_MAX_BYTES);
        let log_path = self.runtime().log_path(&self.pod_ref, container, attempt);
        let message = crate::rules::termination_message(
            c.termination_message_policy.as_deref(),
            &content,
            exit.exit_code,
            || read_tail(&log_path, 256 * 1024),
        );
        if !message.is_empty() {
            exit.message = Some(match exit.message.take().filter(|m| !m.is_empty()) {
                Some(m) => format!("{m}: {message}"),
                None => message,
            });
        }
        exit
    }

    async fn on_runtime_event(&mut self, ev: RuntimeEvent) {
        match ev {
            RuntimeEvent::Exit(n) => {
                if n.pod_uid == self.pod_ref.uid {
                    self.apply_exit(&n.id, n.exit);
                }
            }
            RuntimeEvent::Resync => {
                let uid = self.pod_ref.uid.clone();
                for k in self.runtime().list().await {
                    if k.pod_uid == uid {
                        self.insert_instance(&k.container, k.instance);
                    }
                }
            }
        }
    }

    fn on_done(&mut self, d: Done) {
        match d {
            Done::Sandbox(Ok(sb)) => self.sandbox = Some(sb),
            Done::Sandbox(Err(message)) => {
                self.outcomes.push(Outcome::SandboxFailed { message });
            }
            Done::SandboxRemoved => self.sandbox = None,
            Done::Start {
                name,
                instance,
                outcome,
            } => {
                if let Some(i) = instance {
                    self.insert_instance(&name, i);
                }
                self.outcomes.push(outcome);
            }
            Done::Exited { id, exit } => self.apply_exit(&id, exit),
            Done::Outcome(o) => self.outcomes.push(o),
        }
    }

    /// The id of instance `attempt` of container `r`.
    fn instance_id(&self, r: ContainerRef, attempt: u32) -> Option<String> {
        let spec = self.pod.spec.as_ref()?;
        let name = r.name(spec);
        self.instances
            .get(name)?
            .iter()
            .rev()
            .find(|i| i.attempt == attempt)
            .map(|i| i.id.clone())
    }

    /// Starts an action; its completion comes back through `done_tx`.
    fn perform(&mut self, a: Action) {
        let ctx = self.ctx.clone();
        let tx = self.done_tx.clone();
        let pod = self.pod.clone();
        let pref = self.pod_ref.clone();
        let pod_ip = self.sandbox.as_ref().map(|s| s.pod_ip.clone());
        match a {
            Action::CreateSandbox => {
                let config = sandbox_config(&pod);
                self.tasks.spawn(async move {
                    let r = ctx.runtime.create_sandbox(&pref, &config).await;
                    if let Err(e) = &r {
                        tracing::warn!(pod = %pref.name, error = %e, "cannot create the pod sandbox");
                    }
                    let _ = tx.send(Done::Sandbox(r));
                });
            }
            Action::PullImage { container, image } => {
                self.tasks.spawn(async move {
                    let asked = tokio::time::Instant::now();
                    let auth = pull_credentials(&ctx, &pod, &image).await;
                    let permit = ctx.pulls.acquire().await;
                    let began = tokio::time::Instant::now();
                    let r = ctx.runtime.pull_image(&image, auth).await;
                    drop(permit);
                    let done = tokio::time::Instant::now();
                    let outcome = match r {
                        Ok(p) => Outcome::PullSucceeded {
                            container,
                            pull_time: signed(done - began),
                            total_time: signed(done - asked),
                            image_size: p.size_bytes,
                        },
                        Err(error) => Outcome::PullFailed { container, error },
                    };
                    let _ = tx.send(Done::Outcome(outcome));
                });
            }
            Action::CreateAndStart { container, attempt } => {
                let pod_dir = ctx.pod_dir(&pref.uid);
                self.tasks.spawn(async move {
                    let Some(c) = pod.spec.as_ref().and_then(|s| container.spec(s)).cloned() else {
                        return;
                    };
                    let env = config::Env {
                        client: &ctx.client,
                        node_name: &ctx.node_name,
                        node_ip: &ctx.node_ip,
                        pod_ip: pod_ip.as_deref(),
                        pod_dir: &pod_dir,
                        allocatable: node_allocatable(&ctx.pods_dir),
                    };
                    let cfg = match config::resolve(&env, &pod, &c, attempt).await {
                        Ok(cfg) => cfg,
                        Err(m) => {
                            let _ = tx.send(Done::Outcome(Outcome::StartFailed {
                                container,
                                attempt,
                                error: StartError::Config(m),
                            }));
                            return;
                        }
                    };
                    let done = match ctx.runtime.start_container(&pref, &cfg).await {
                        Ok(mut instance) => {
                            instance.attempt = attempt;
                            Done::Start {
                                name: c.name.clone(),
                                instance: Some(instance),
                                outcome: Outcome::Started { container, attempt },
                            }
                        }
                        Err(error) => {
                            tracing::info!(pod = %pref.name, container = %c.name, ?error, "container start failed");
                            // A created instance that failed to run stays in the runtime as
                            // exited (`StartError`, 128), as containerd shows it.
                            let instance = if matches!(error, StartError::Run(_)) {
                                ctx.runtime
                                    .list()
                                    .await
                                    .into_iter()
                                    .find(|k| {
                                        k.pod_uid == pref.uid
                                            && k.container == c.name
                                            && k.instance.attempt == attempt
                                    })
                                    .map(|k| k.instance)
                            } else {
                                None
                            };
                            Done::Start {
                                name: c.name.clone(),
                                instance,
                                outcome: Outcome::StartFailed {
                                    container,
                                    attempt,
                                    error,
                                },
                            }
                        }
                    };
                    let _ = tx.send(done);
                });
            }
            Action::RunPostStart { container, attempt } => {
                let id = self.instance_id(container, attempt);
                self.tasks.spawn(async move {
                    let error = match id {
                        Some(id) => handlers::run_hook(
                            &ctx,
                            &pod,
                            &pref,
                            container,
                            &id,
                            pod_ip.as_deref(),
                            true,
                        )
                        .await
                        .err(),
                        None => Some("the container instance is not known".to_string()),
                    };
                    let _ = tx.send(Done::Outcome(Outcome::PostStartFinished {
                        container,
                        attempt,
                        error,
                    }));
                });
            }
            Action::RunPreStop {
                container,
                attempt,
                grace_seconds,
            } => {
                let id = self.instance_id(container, attempt);
                self.tasks.spawn(async move {
                    let grace = Duration::from_secs(grace_seconds.max(0) as u64);
                    let error = match id {
                        Some(id) => {
                            let hook = handlers::run_hook(
                                &ctx,
                                &pod,
                                &pref,
                                container,
                                &id,
                                pod_ip.as_deref(),
                                false,
                            );
                            match tokio::time::timeout(grace, hook).await {
                                Ok(r) => r.err(),
                                Err(_) => Some(
                                    "the preStop hook did not finish within the grace period"
                                        .into(),
                                ),
                            }
                        }
                        None => Some("the container instance is not known".to_string()),
                    };
                    if let Some(e) = &error {
                        tracing::info!(pod = %pref.name, error = %e, "preStop hook failed");
                    }
                    let _ = tx.send(Done::Outcome(Outcome::PreStopFinished {
                        container,
                        attempt,
                        error,
                    }));
                });
            }
            Action::Kill {
                container,
                attempt,
                grace_seconds,
                ..
            } => {
                let Some(id) = self.instance_id(container, attempt) else {
                    tracing::warn!(pod = %self.name(), ?container, attempt, "no instance to kill");
                    return;
                };
                self.tasks.spawn(async move {
                    let grace = Duration::from_secs(grace_seconds.max(0) as u64);
                    let mut delay = Duration::from_millis(500);
                    loop {
                        match ctx.runtime.stop_container(&pref, &id, grace).await {
                            Ok(exit) => {
                                let _ = tx.send(Done::Exited { id, exit });
                                return;
                            }
                            Err(e) => {
                                tracing::warn!(pod = %pref.name, error = %e, "cannot stop a container; retrying");
                                tokio::time::sleep(delay).await;
                                delay = (delay * 2).min(Duration::from_secs(10));
                            }
                        }
                    }
                });
            }
            Action::RunProbe {
                container,
                attempt,
                kind,
            } => {
                let id = self.instance_id(container, attempt);
                self.tasks.spawn(async move {
                    let result = match id {
                        Some(id) => {
                            handlers::run_probe(
                                &ctx,
                                &pod,
                                &pref,
                                container,
                                kind,
                                &id,
                                pod_ip.as_deref(),
                            )
                            .await
                        }
                        None => crate::probe::ProbeOutcome::Error(
                            "the container instance is not known".into(),
                        ),
                    };
                    let _ = tx.send(Done::Outcome(Outcome::Probed {
                        container,
                        attempt,
                        kind,
                        result,
                    }));
                });
            }
            Action::KillPod => {
                // The runtime trait has no "stop sandbox": removing it also removes the pod's
                // containers and logs, which a finished pod that is still in the API keeps
                // showing. So only a deleted pod's sandbox is removed now; a completed pod's
                // goes when the pod leaves the API.
                let deleting = pod.metadata.deletion_timestamp.is_some();
                self.tasks.spawn(async move {
                    let mut delay = Duration::from_millis(500);
                    if deleting {
                        loop {
                            match ctx.runtime.remove_sandbox(&pref).await {
                                Ok(()) => break,
                                Err(e) => {
                                    tracing::warn!(pod = %pref.name, error = %e, "cannot remove the pod sandbox; retrying");
                                    tokio::time::sleep(delay).await;
                                    delay = (delay * 2).min(Duration::from_secs(10));
                                }
                            }
                        }
                    }
                    let _ = tx.send(Done::SandboxRemoved);
                });
            }
            Action::ConfirmDeletion => {}
        }
    }

    /// The pod is gone from the API: stop whatever still runs, then clean up.
    async fn gone(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let uid = self.pod_ref.uid.clone();
        let grace = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .map(|g| Duration::from_secs(g.max(0) as u64))
            .unwrap_or(GONE_GRACE)
            .max(GONE_GRACE);
        let running: Vec<String> = self
            .runtime()
            .list()
            .await
            .into_iter()
            .filter(|k| k.pod_uid == uid && k.instance.running_since().is_some())
            .map(|k| k.instance.id)
            .collect();
        let stops = running
            .iter()
            .map(|id| self.ctx.runtime.stop_container(&self.pod_ref, id, grace));
        for r in futures::future::join_all(stops).await {
            if let Err(e) = r {
                tracing::warn!(pod = %self.name(), error = %e, "cannot stop a container of a deleted pod");
            }
        }
        self.cleanup().await;
    }

    /// The pod is finished with: remove its instances, sandbox and directory.
    async fn cleanup(&mut self) {
        self.tasks.abort_all();
        let uid = self.pod_ref.uid.clone();
        let ids: Vec<String> = self
            .runtime()
            .list()
            .await
            .into_iter()
            .filter(|k| k.pod_uid == uid)
            .map(|k| k.instance.id)
            .collect();
        for id in ids {
            if let Err(e) = self.runtime().remove_container(&self.pod_ref, &id).await {
                tracing::debug!(pod = %self.name(), error = %e, "cannot remove a container");
            }
        }
        if let Err(e) = self.runtime().remove_sandbox(&self.pod_ref).await {
            tracing::warn!(pod = %self.name(), error = %e, "cannot remove the pod sandbox");
        }
        let _ = std::fs::remove_dir_all(self.ctx.pod_dir(&uid));
        self.ctx.table.remove(&self.pod_ref);
        tracing::debug!(pod = %self.name(), "pod worker finished");
    }
}

enum Step {
    Continue {
        wake_at: Option<Timestamp>,
        retry: Option<Duration>,
    },
    /// Deletion confirmed.
    Finished,
    /// The pod vanished from the API.
    Gone,
}

enum Write {
    Gone,
    Retry,
}

type ResourceList =
    std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>;

/// The node's allocatable resources (read once), for `resourceFieldRef` without a limit.
fn node_allocatable(state_dir: &std::path::Path) -> &'static ResourceList {
    static ALLOCATABLE: std::sync::OnceLock<ResourceList> = std::sync::OnceLock::new();
    ALLOCATABLE.get_or_init(|| crate::node::Machine::read(state_dir).allocatable())
}

/// The first `max` bytes of a file (nothing when it cannot be read).
fn read_head(path: &std::path::Path, max: usize) -> Vec<u8> {
    use std::io::Read;
    let mut buf = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(max as u64).read_to_end(&mut buf);
    }
    buf
}

/// The last `max` bytes of a file, from the first whole line in them.
fn read_tail(path: &std::path::Path, max: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(max);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_err() || f.read_to_end(&mut buf).is_err() {
        return Vec::new();
    }
    if from > 0 {
        let cut = buf
            .iter()
            .position(|b| *b == b'\n')
            .map_or(buf.len(), |i| i + 1);
        buf.drain(..cut);
    }
    buf
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// Stops and removes what the runtime still has of a pod that is no longer in the API (found
/// after an agent restart). The pod's identity comes from its directory.
pub async fn clean_orphan(ctx: &WorkerCtx, uid: &str) {
    let dir = ctx.pod_dir(uid);
    let ident: Option<Value> = std::fs::read_to_string(dir.join("pod.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    let field = |k: &str| {
        ident
            .as_ref()
            .and_then(|v| v[k].as_str())
            .unwrap_or("")
            .to_string()
    };
    let pod = PodRef {
        namespace: field("namespace"),
        name: field("name"),
        uid: uid.to_string(),
    };
    tracing::info!(pod = %format!("{}/{}", pod.namespace, pod.name), uid, "cleaning up a pod that is gone from the API");
    let known: Vec<_> = ctx
        .runtime
        .list()
        .await
        .into_iter()
        .filter(|k| k.pod_uid == uid)
        .collect();
    for k in &known {
        if k.instance.running_since().is_some()
            && let Err(e) = ctx
                .runtime
                .stop_container(&pod, &k.instance.id, GONE_GRACE)
                .await
        {
            tracing::warn!(error = %e, "cannot stop an orphaned container");
        }
        let _ = ctx.runtime.remove_container(&pod, &k.instance.id).await;
    }
    if let Err(e) = ctx.runtime.remove_sandbox(&pod).await {
        tracing::debug!(error = %e, "cannot remove an orphaned sandbox");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Reads the pod's `imagePullSecrets` and picks the credentials for `image`
/// ([`crate::pull_secrets`]). Secrets that cannot be read are skipped, with a
/// `FailedToRetrieveImagePullSecret` event naming them.
async fn pull_credentials(ctx: &WorkerCtx, pod: &Pod, image: &str) -> Option<(String, String)> {
    let names: Vec<String> = pod
        .spec
        .as_ref()?
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return None;
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let mut secrets = Vec::new();
    let mut missing = Vec::new();
    for name in names {
        match api.get(&name).await {
            Ok(s) => secrets.push(s),
            Err(e) => {
                tracing::info!(pod = %pod.metadata.name.as_deref().unwrap_or(""), secret = %name, error = %e, "cannot read an image pull secret");
                missing.push(name);
            }
        }
    }
    if !missing.is_empty() {
        ctx.recorder
            .record_pod(pod, &crate::events::pull_secrets_missing(&missing));
    }
    crate::pull_secrets::credentials(&secrets, image)
}

/// The sandbox settings of a pod: its hostname and whether it uses the node's network.
fn sandbox_config(pod: &Pod) -> SandboxConfig {
    let spec = pod.spec.as_ref();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let hostname = spec
        .and_then(|s| s.hostname.as_deref())
        .filter(|h| !h.is_empty())
        .unwrap_or(name);
    SandboxConfig {
        hostname: hostname
            .chars()
            .take(63)
            .collect::<String>()
            .trim_end_matches(['-', '.'])
            .to_string(),
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
    }
}
