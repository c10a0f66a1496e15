//! What the engine remembers about a pod between decisions: back-off entries, the reason cache
//! (why a container is waiting), operations under way, kills in progress, probe workers and
//! the last conditions written.
//!
//! The kubelet keeps this state in several managers (back-off, reason cache, probe manager,
//! status manager, pod worker). Here it is one plain value the worker owns per pod and passes to
//! [`crate::lifecycle::decide`], so a decision is a function of (pod, observation, memory, now)
//! and a test can inspect everything. Losing it (agent restart) is safe: running containers are
//! adopted as started, back-offs start over.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, PodSpec};

use crate::backoff::{BackOff, BackOffEntry};
use crate::observed::ContainerRef;
use crate::probe::{ProbeKind, ProbeState};

/// The restart back-off key: the container and a hash of the parts of its spec that can change
/// (name and image), so a new image starts a fresh back-off.
pub type RestartKey = (ContainerRef, u64);

/// Why a container is waiting, as the last start attempt left it (the kubelet's reason cache).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingReason {
    pub reason: &'static str,
    pub message: String,
}

/// A step of a container start that is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Op {
    #[default]
    Idle,
    /// `PullImage` issued for the start of instance `attempt`.
    Pulling { attempt: u32 },
    /// The pull succeeded; create next.
    Pulled { attempt: u32 },
    /// `CreateAndStart` issued.
    Starting { attempt: u32 },
    /// `RunPostStart` issued; the instance is running but not yet reported as such.
    PostStart { attempt: u32 },
}

impl Op {
    /// True while the runtime is working on it (the pod's sync is "blocked").
    pub(crate) fn in_flight(self) -> bool {
        matches!(
            self,
            Op::Pulling { .. } | Op::Starting { .. } | Op::PostStart { .. }
        )
    }
}

/// Why a container is being killed; decides the `Killing` message and the grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// Pod deletion or completion: `Stopping container NAME`.
    Stop,
    /// Liveness probe failure (`restart`: the policy restarts it).
    Liveness { restart: bool },
    /// Startup probe failure.
    Startup { restart: bool },
    /// The postStart hook failed: message `FailedPostStartHook`.
    PostStartHook,
}

/// Where a kill is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KillStage {
    /// The preStop hook runs; it may use the whole grace period.
    PreStop { since: Timestamp, done: bool },
    /// A sidecar waits for the containers that must stop before it.
    WaitTurn { since: Timestamp },
    /// `Kill` (SIGTERM, SIGKILL after `grace`) issued or about to be.
    Stop { sent: bool },
}

/// A kill in progress for one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kill {
    pub(crate) attempt: u32,
    pub(crate) reason: KillReason,
    /// Seconds of grace left.
    pub(crate) grace: i64,
    /// Wait for the sidecar termination order.
    pub(crate) ordered: bool,
    pub(crate) stage: KillStage,
}

/// Per-container memory.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContainerMemory {
    pub(crate) reason: Option<WaitingReason>,
    pub(crate) op: Op,
    pub(crate) kill: Option<Kill>,
    pub(crate) probes: [ProbeState; 3],
    /// The instance killed by a liveness/startup failure with a restart planned in the same
    /// sync: its restart is judged against the instance before it (as the kubelet does).
    pub(crate) restart_after_kill: Option<u32>,
    /// After a start error, the next attempt waits until then (the kubelet's sync retry).
    pub(crate) retry_at: Option<Timestamp>,
    /// The last image pull error, `"<ErrName>: <message>"`, for the ImagePullBackOff message.
    pub(crate) pull_error: Option<String>,
    /// A waiting reason to record once instance `.0` has stopped (the failed postStart hook's
    /// error: the kubelet records it after the kill that follows the hook).
    pub(crate) reason_after_kill: Option<(u32, WaitingReason)>,
}

impl ContainerMemory {
    pub(crate) fn probe(&self, kind: ProbeKind) -> &ProbeState {
        &self.probes[kind.index()]
    }

    pub(crate) fn probe_mut(&mut self, kind: ProbeKind) -> &mut ProbeState {
        &mut self.probes[kind.index()]
    }

    /// The instance `attempt` is still in its postStart phase (hook running, or being killed
    /// because the hook failed): the API keeps showing it as waiting.
    pub(crate) fn hides(&self, attempt: u32) -> bool {
        self.op == (Op::PostStart { attempt })
            || self
                .kill
                .is_some_and(|k| k.attempt == attempt && k.reason == KillReason::PostStartHook)
    }
}

/// Sandbox bookkeeping.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SandboxMemory {
    pub(crate) creating: bool,
    pub(crate) retry_at: Option<Timestamp>,
    pub(crate) stop_sent: bool,
}

/// The condition types the agent owns, in the order it writes them (§1.4).
pub const OWNED_CONDITIONS: [&str; 5] = [
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
    "PodScheduled",
];

/// A pod phase the engine distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "Pending" => Phase::Pending,
            "Running" => Phase::Running,
            "Succeeded" => Phase::Succeeded,
            "Failed" => Phase::Failed,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// Everything the engine remembers about one pod.
#[derive(Debug, Clone)]
pub struct PodMemory {
    pub(crate) uid: String,
    pub(crate) prepared: bool,
    pub(crate) init: Vec<ContainerMemory>,
    pub(crate) app: Vec<ContainerMemory>,
    pub(crate) restart_backoff: BackOff<RestartKey>,
    pub(crate) image_backoff: BackOff<String>,
    /// Last written (status, lastTransitionTime) per owned condition.
    pub(crate) conditions: [Option<(&'static str, Timestamp)>; 5],
    pub(crate) start_time: Option<Timestamp>,
    pub(crate) terminal_phase: Option<Phase>,
    /// The pod is done (all regular containers finished for good, or an init container failed
    /// under `Never`): what still runs is stopped and nothing restarts.
    pub(crate) complete: bool,
    pub(crate) sandbox: SandboxMemory,
    pub(crate) deletion_confirmed: bool,
    /// `startTime + activeDeadlineSeconds` passed: the pod is killed and ends `Failed` with
    /// reason `DeadlineExceeded`.
    pub(crate) deadline_exceeded: bool,
}

impl Default for PodMemory {
    fn default() -> Self {
        Self::new()
    }
}

impl PodMemory {
    pub fn new() -> Self {
        PodMemory {
            uid: String::new(),
            prepared: false,
            init: Vec::new(),
            app: Vec::new(),
            restart_backoff: BackOff::container(),
            image_backoff: BackOff::image(),
            conditions: [None; 5],
            start_time: None,
            terminal_phase: None,
            complete: false,
            sandbox: SandboxMemory::default(),
            deletion_confirmed: false,
            deadline_exceeded: false,
        }
    }

    /// Sizes the memory for the pod and seeds it from the pod's stored status the first time
    /// (start time, condition transition times, a terminal phase). A different UID starts over.
    pub(crate) fn prepare(&mut self, pod: &Pod, spec: &PodSpec, now: Timestamp) {
        let uid = pod.metadata.uid.as_deref().unwrap_or("");
        if self.uid != uid {
            *self = PodMemory::new();
            self.uid = uid.to_string();
        }
        let inits = spec.init_containers.as_ref().map_or(0, Vec::len);
        if self.init.len() != inits {
            self.init.resize_with(inits, ContainerMemory::default);
        }
        if self.app.len() != spec.containers.len() {
            self.app
                .resize_with(spec.containers.len(), ContainerMemory::default);
        }
        if self.prepared {
            return;
        }
        self.prepared = true;
        let status = pod.status.as_ref();
        self.start_time = Some(
            status
                .and_then(|s| s.start_time.as_ref())
                .map_or_else(|| whole_seconds(now), |t| t.0),
        );
        for c in status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
        {
            if let Some(i) = OWNED_CONDITIONS.iter().position(|t| *t == c.type_) {
                let st = match c.status.as_str() {
                    "True" => "True",
                    "False" => "False",
                    _ => "Unknown",
                };
                let at = c
                    .last_transition_time
                    .as_ref()
                    .map_or_else(|| whole_seconds(now), |t| t.0);
                self.conditions[i] = Some((st, at));
            }
        }
        if let Some(p) = status
            .and_then(|s| s.phase.as_deref())
            .and_then(Phase::parse)
            .filter(|p| p.is_terminal())
        {
            self.terminal_phase = Some(p);
            self.complete = true;
        }
    }

    pub(crate) fn container(&self, r: ContainerRef) -> &ContainerMemory {
        static EMPTY: std::sync::OnceLock<ContainerMemory> = std::sync::OnceLock::new();
        let got = match r {
            ContainerRef::Init(i) => self.init.get(i),
            ContainerRef::App(i) => self.app.get(i),
        };
        got.unwrap_or_else(|| EMPTY.get_or_init(ContainerMemory::default))
    }

    pub(crate) fn container_mut(&mut self, r: ContainerRef) -> &mut ContainerMemory {
        let (list, i) = match r {
            ContainerRef::Init(i) => (&mut self.init, i),
            ContainerRef::App(i) => (&mut self.app, i),
        };
        if list.len() <= i {
            list.resize_with(i + 1, ContainerMemory::default);
        }
        &mut list[i]
    }

    /// The reason cache entry of a container (why it is waiting), if any.
    pub fn waiting_reason(&self, r: ContainerRef) -> Option<&WaitingReason> {
        self.container(r).reason.as_ref()
    }

    /// The restart back-off entry of a container, if any.
    pub fn restart_backoff(&self, key: &RestartKey) -> Option<BackOffEntry> {
        self.restart_backoff.entry(key)
    }

    /// The image pull back-off entry of an image, if any.
    pub fn image_backoff(&self, image: &str) -> Option<BackOffEntry> {
        self.image_backoff.entry(image)
    }

    /// The probe worker state of a container.
    pub fn probe(&self, r: ContainerRef, kind: ProbeKind) -> &ProbeState {
        self.container(r).probe(kind)
    }

    /// The phase the pod reached for good, if terminal.
    pub fn terminal_phase(&self) -> Option<Phase> {
        self.terminal_phase
    }

    /// The pod finished (or failed initialization under `Never`) and is being wound down.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// `ConfirmDeletion` was issued.
    pub fn deletion_confirmed(&self) -> bool {
        self.deletion_confirmed
    }

    /// The pod ran past its `activeDeadlineSeconds`.
    pub fn deadline_exceeded(&self) -> bool {
        self.deadline_exceeded
    }

    /// The first time the agent reported the pod (`status.startTime`).
    pub fn start_time(&self) -> Option<Timestamp> {
        self.start_time
    }
}

/// A timestamp truncated to whole seconds, as the kubelet writes every status time.
pub fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// FNV-1a over the container's name and image: the changeable part of the back-off key.
pub(crate) fn spec_hash(name: &str, image: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain([0u8]).chain(image.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
