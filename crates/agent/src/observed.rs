//! What the worker tells the lifecycle engine: the runtime's view of a pod (sandbox, container
//! instances, image presence) and the one-shot outcomes of actions that finished since the last
//! decision (a pull, a start, a hook, a probe run).
//!
//! Containers are addressed by their place in the spec ([`ContainerRef`]), not by name, so an
//! observation and the actions built from it never copy container names. The per-container
//! vectors run parallel to `spec.initContainers` and `spec.containers`.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

use crate::probe::{ProbeKind, ProbeOutcome};

/// A container of the pod spec: an init container (sidecars included) or a regular container,
/// by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContainerRef {
    Init(usize),
    App(usize),
}

impl ContainerRef {
    /// The container's spec, if the index is in range.
    pub fn spec(self, spec: &PodSpec) -> Option<&Container> {
        match self {
            ContainerRef::Init(i) => spec.init_containers.as_ref()?.get(i),
            ContainerRef::App(i) => spec.containers.get(i),
        }
    }

    /// The container's name (empty when out of range).
    pub fn name(self, spec: &PodSpec) -> &str {
        self.spec(spec).map_or("", |c| c.name.as_str())
    }

    /// The event `fieldPath` for this container: `spec.containers{NAME}` or
    /// `spec.initContainers{NAME}`.
    pub fn field_path(self, pod: &Pod) -> String {
        let name = pod.spec.as_ref().map_or("", |s| self.name(s));
        match self {
            ContainerRef::Init(_) => format!("spec.initContainers{{{name}}}"),
            ContainerRef::App(_) => format!("spec.containers{{{name}}}"),
        }
    }

    /// True for an init container with `restartPolicy: Always` (a sidecar).
    pub fn is_sidecar(self, spec: &PodSpec) -> bool {
        matches!(self, ContainerRef::Init(_))
            && self
                .spec(spec)
                .is_some_and(|c| c.restart_policy.as_deref() == Some("Always"))
    }
}

/// Whether the node has a container's image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ImagePresence {
    /// Not inspected; treated as absent.
    #[default]
    Unknown,
    Present,
    Absent,
    /// The runtime's image-status call failed, with its error text.
    InspectError(String),
}

/// Why a container instance exited, as the runtime reports it (§2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    Completed,
    Error,
    OOMKilled,
    /// The process could not be started (containerd: exit code 128).
    StartError,
    Other(String),
}

impl ExitReason {
    /// The reason text in `state.terminated.reason`.
    pub fn as_str(&self) -> &str {
        match self {
            ExitReason::Completed => "Completed",
            ExitReason::Error => "Error",
            ExitReason::OOMKilled => "OOMKilled",
            ExitReason::StartError => "StartError",
            ExitReason::Other(s) => s,
        }
    }
}

/// A finished container instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub exit_code: i32,
    pub reason: ExitReason,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
}

impl Exit {
    /// An exit with the runtime's usual reason for its code (`Completed` for 0, else `Error`).
    pub fn code(exit_code: i32, started_at: Option<Timestamp>, finished_at: Timestamp) -> Self {
        Exit {
            exit_code,
            reason: if exit_code == 0 {
                ExitReason::Completed
            } else {
                ExitReason::Error
            },
            message: None,
            started_at,
            finished_at,
        }
    }
}

/// The state of one container instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceState {
    /// Created but not started.
    Created,
    Running {
        started_at: Timestamp,
    },
    Exited(Exit),
    /// The runtime cannot tell.
    Unknown,
}

/// One container instance in the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The restart count this instance was created with (CRI `attempt`).
    pub attempt: u32,
    /// `<runtime>://<id>`.
    pub id: String,
    /// The image as the runtime reports it (empty: use the spec's).
    pub image: String,
    pub image_id: String,
    pub state: InstanceState,
}

impl Instance {
    /// When running, its start time.
    pub fn running_since(&self) -> Option<Timestamp> {
        match self.state {
            InstanceState::Running { started_at } => Some(started_at),
            _ => None,
        }
    }

    /// When exited, the exit.
    pub fn exit(&self) -> Option<&Exit> {
        match &self.state {
            InstanceState::Exited(e) => Some(e),
            _ => None,
        }
    }
}

/// The runtime's view of one spec container: its newest instance, the one before (for
/// `lastState`), and whether its image is on the node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedContainer {
    pub image: ImagePresence,
    pub current: Option<Instance>,
    pub previous: Option<Instance>,
}

impl ObservedContainer {
    /// No instance and an uninspected image.
    pub const EMPTY: ObservedContainer = ObservedContainer {
        image: ImagePresence::Unknown,
        current: None,
        previous: None,
    };

    /// The current instance, when it is running.
    pub fn running(&self) -> Option<&Instance> {
        self.current
            .as_ref()
            .filter(|i| i.running_since().is_some())
    }
}

/// A start step that failed (§7.1): which step decides the waiting reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// Building the container config failed (`CreateContainerConfigError`), e.g.
    /// `configmap "cfg" not found`.
    Config(String),
    /// The runtime's create call failed (`CreateContainerError`).
    Create(String),
    /// The runtime's start call failed (`RunContainerError`); the container was created.
    Run(String),
}

/// Something that finished since the last decision. Each outcome must be passed to
/// [`crate::lifecycle::decide`] exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `CreateSandbox` failed.
    SandboxFailed { message: String },
    /// `PullImage` succeeded.
    PullSucceeded {
        container: ContainerRef,
        /// Time the runtime spent pulling.
        pull_time: SignedDuration,
        /// Time including any wait in the pull queue.
        total_time: SignedDuration,
        image_size: u64,
    },
    /// `PullImage` failed with the runtime's error text.
    PullFailed {
        container: ContainerRef,
        error: String,
    },
    /// `CreateAndStart` created and started the instance.
    Started {
        container: ContainerRef,
        attempt: u32,
    },
    /// `CreateAndStart` failed.
    StartFailed {
        container: ContainerRef,
        attempt: u32,
        error: StartError,
    },
    /// `RunPostStart` finished; `error` is the detailed failure text (§7.2).
    PostStartFinished {
        container: ContainerRef,
        attempt: u32,
        error: Option<String>,
    },
    /// `RunPreStop` finished (or failed).
    PreStopFinished {
        container: ContainerRef,
        attempt: u32,
        error: Option<String>,
    },
    /// `RunProbe` finished.
    Probed {
        container: ContainerRef,
        attempt: u32,
        kind: ProbeKind,
        result: ProbeOutcome,
    },
}

/// Everything the engine knows about a pod from the node's side.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedPod {
    /// The pod sandbox exists and its network is set up.
    pub sandbox_ready: bool,
    pub host_ip: Option<String>,
    pub pod_ips: Vec<String>,
    /// Parallel to `spec.initContainers`.
    pub init_containers: Vec<ObservedContainer>,
    /// Parallel to `spec.containers`.
    pub containers: Vec<ObservedContainer>,
    /// What finished since the last decision.
    pub outcomes: Vec<Outcome>,
}

impl ObservedPod {
    /// An empty observation sized for the pod's containers.
    pub fn for_pod(pod: &Pod) -> Self {
        let spec = pod.spec.as_ref();
        let inits = spec
            .and_then(|s| s.init_containers.as_ref())
            .map_or(0, Vec::len);
        let apps = spec.map_or(0, |s| s.containers.len());
        ObservedPod {
            init_containers: vec![ObservedContainer::default(); inits],
            containers: vec![ObservedContainer::default(); apps],
            ..ObservedPod::default()
        }
    }

    /// The observation of one container (empty when not reported).
    pub fn container(&self, r: ContainerRef) -> &ObservedContainer {
        let list = match r {
            ContainerRef::Init(_) => &self.init_containers,
            ContainerRef::App(_) => &self.containers,
        };
        let i = match r {
            ContainerRef::Init(i) | ContainerRef::App(i) => i,
        };
        list.get(i).unwrap_or(&ObservedContainer::EMPTY)
    }

    /// Mutable access, growing the list as needed.
    pub fn container_mut(&mut self, r: ContainerRef) -> &mut ObservedContainer {
        let (list, i) = match r {
            ContainerRef::Init(i) => (&mut self.init_containers, i),
            ContainerRef::App(i) => (&mut self.containers, i),
        };
        if list.len() <= i {
            list.resize(i + 1, ObservedContainer::default());
        }
        &mut list[i]
    }

    /// Records a new instance: the current one (if any) becomes the previous one.
    pub fn push_instance(&mut self, r: ContainerRef, instance: Instance) {
        let c = self.container_mut(r);
        c.previous = c.current.take();
        c.current = Some(instance);
    }
}
