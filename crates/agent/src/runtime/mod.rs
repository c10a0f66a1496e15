//! The container runtime behind the agent: one trait, with implementations `host` (plain
//! processes, for development and fast lifecycle tests), and later `runc` (real containers from
//! OCI images) and `sim` (no processes; simulated nodes). The worker drives a runtime only through
//! this trait, and the runtime knows nothing of the API.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use jiff::Timestamp;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::observed::{Exit, ImagePresence, Instance, StartError};

mod common;
pub mod cri_log;
pub mod host;
pub mod runc;

/// Identifies a pod to the runtime.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// Everything the runtime needs to start one container instance, already resolved from the pod
/// spec by the worker (env values expanded, defaults applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerConfig {
    pub name: String,
    pub image: String,
    /// The container's `command`, already `$(VAR)`-expanded. Empty: the image's entrypoint.
    pub command: Vec<String>,
    /// The container's `args`, already `$(VAR)`-expanded. Empty with an empty `command`: the
    /// image's cmd. (Kubernetes: a `command` replaces both the entrypoint and the cmd.)
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// Restart count of this instance (CRI `attempt`); names the log file `<attempt>.log`.
    pub attempt: u32,
    /// Volumes to expose (emptyDir and friends, prepared by the worker).
    pub mounts: Vec<Mount>,
    /// Resource requests and limits, for cgroups.
    pub resources: Resources,
    /// `spec.containers[].tty` / `stdin`: the process gets a terminal / an open stdin.
    pub tty: bool,
    pub stdin: bool,
    /// The effective `securityContext` user settings (container level over pod level).
    pub security: Security,
}

/// What the runtime applies of the pod's and container's `securityContext` (already merged,
/// the container's fields winning). Runtimes without users (host) ignore it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// `runAsUser`: overrides the image's user.
    pub run_as_user: Option<i64>,
    /// `runAsGroup`: overrides the primary group.
    pub run_as_group: Option<i64>,
    /// `runAsNonRoot: true`: refuse to run as uid 0 (`CreateContainerConfigError`).
    pub run_as_non_root: bool,
    /// The pod's `supplementalGroups` then `fsGroup`: extra groups of the process.
    pub supplemental_groups: Vec<i64>,
}

impl ContainerConfig {
    /// `command` then `args`: the argv when the image adds nothing (the host runtime).
    pub fn argv(&self) -> Vec<String> {
        self.command.iter().chain(&self.args).cloned().collect()
    }
}

/// A container's resources as cgroups need them (already parsed from quantities).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// `requests.cpu` in millicores (cgroup cpu shares / weight).
    pub cpu_request_millis: Option<u64>,
    /// `limits.cpu` in millicores (cgroup CFS quota over a 100 ms period).
    pub cpu_limit_millis: Option<u64>,
    /// `limits.memory` in bytes (cgroup memory limit; exceeding it is `OOMKilled`).
    pub memory_limit_bytes: Option<u64>,
}

/// What the sandbox of a pod needs from its spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxConfig {
    /// The pod's hostname (`spec.hostname`, else the pod name), set in its UTS namespace.
    pub hostname: String,
    /// `spec.hostNetwork`: share the node's network namespace instead of getting an IP.
    pub host_network: bool,
}

/// An image the node holds, for `Node.status.images` (the scheduler's ImageLocality).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeImage {
    pub names: Vec<String>,
    pub size_bytes: u64,
}

/// A process started by an interactive exec (`kubectl exec`): its streams and its end.
pub struct ExecProcess {
    /// The process' stdin when asked for.
    pub stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    /// stdout (with a terminal: the terminal's output, stdout and stderr together).
    pub stdout: Option<Pin<Box<dyn AsyncRead + Send>>>,
    /// stderr (never with a terminal).
    pub stderr: Option<Pin<Box<dyn AsyncRead + Send>>>,
    /// Resizes the terminal (columns, rows), when there is one the runtime can resize.
    pub resize: Option<Box<dyn Fn(u16, u16) + Send + Sync>>,
    /// Resolves to the exit code once the process has exited.
    pub exit: Pin<Box<dyn Future<Output = Result<i32, String>> + Send>>,
}

/// How an interactive exec wants its streams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecStreams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub read_only: bool,
}

/// The pod's sandbox: its network identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub pod_ip: String,
}

/// A finished image pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub size_bytes: u64,
}

/// The result of running a command in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    pub exit_code: i32,
    /// Combined stdout and stderr, as probes and hooks report it.
    pub output: String,
    pub timed_out: bool,
}

/// A container instance the runtime knows, for re-adoption after an agent restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub pod_uid: String,
    pub container: String,
    pub instance: Instance,
}

/// A container instance that exited, pushed by the runtime as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitNotice {
    pub pod_uid: String,
    pub container: String,
    pub id: String,
    pub exit: Exit,
}

#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// `host`, `runc`, `sim`: the prefix of container ids (`host://…`).
    fn name(&self) -> &'static str;

    /// Creates (or finds) the pod's sandbox.
    async fn create_sandbox(&self, pod: &PodRef, config: &SandboxConfig)
    -> Result<Sandbox, String>;

    /// Removes the sandbox and everything the pod left (processes, files, mounts).
    async fn remove_sandbox(&self, pod: &PodRef) -> Result<(), String>;

    async fn image_status(&self, image: &str) -> ImagePresence;

    /// Pulls an image, with credentials when given (`user`, `password`).
    async fn pull_image(
        &self,
        image: &str,
        auth: Option<(String, String)>,
    ) -> Result<Pulled, String>;

    /// Creates and starts one instance; returns it running.
    async fn start_container(
        &self,
        pod: &PodRef,
        config: &ContainerConfig,
    ) -> Result<Instance, StartError>;

    /// Stop signal, then SIGKILL after `grace`; returns once the instance has exited.
    async fn stop_container(&self, pod: &PodRef, id: &str, grace: Duration)
    -> Result<Exit, String>;

    /// Runs `argv` inside the container (probes, hooks), for at most `timeout` (None: no limit).
    async fn exec(
        &self,
        pod: &PodRef,
        id: &str,
        argv: &[String],
        timeout: Option<Duration>,
    ) -> Result<ExecResult, String>;

    /// Starts `argv` inside the container with the streams asked for (`kubectl exec`); the
    /// caller pumps the streams and awaits the exit.
    async fn exec_stream(
        &self,
        pod: &PodRef,
        id: &str,
        argv: &[String],
        streams: ExecStreams,
    ) -> Result<ExecProcess, String>;

    /// The images the node holds (`Node.status.images`); none for runtimes without images.
    async fn list_images(&self) -> Vec<NodeImage> {
        Vec::new()
    }

    /// The CRI-format log file of an instance (`<dir>/<pod ns>_<pod name>_<uid>/<container>/<attempt>.log`).
    fn log_path(&self, pod: &PodRef, container: &str, attempt: u32) -> PathBuf;

    /// Every instance the runtime still knows (running or exited), for re-adoption.
    async fn list(&self) -> Vec<Known>;

    /// Removes an exited instance's resources (not its log file).
    async fn remove_container(&self, pod: &PodRef, id: &str) -> Result<(), String>;

    /// Exits as they happen; each is delivered once.
    fn exits(&self) -> tokio::sync::broadcast::Receiver<ExitNotice>;

    /// Current time as the runtime stamps it (tests may fake it).
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}
