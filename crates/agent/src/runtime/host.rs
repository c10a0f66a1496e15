//! The host runtime: each container is its `argv` run as a plain process on the node.
//!
//! It exists for development and for fast lifecycle tests of the agent. It is **not** a
//! container runtime, and its limits are deliberate:
//!
//! * **No images.** [`Runtime::image_status`] is always `Present` and [`Runtime::pull_image`]
//!   succeeds at once with size 0. The image name is only reported back. A container needs a
//!   command (`command` or `args`), since there is no image entrypoint.
//! * **No isolation.** Processes run as the agent's user, on the host's filesystem, network and
//!   pid space. There are no namespaces, no cgroups and no resource limits. The sandbox's pod IP
//!   is the node IP given to [`HostRuntime::new`] (e.g. `127.0.0.1`), so two pods listening on
//!   the same port collide.
//! * **Volumes are not mounted.** Every pod gets a root directory
//!   `<state>/pods/<uid>/root`, exported as `SKIFF_POD_ROOT`. Each mount appears there as a
//!   symlink (`$SKIFF_POD_ROOT/data` → the volume's host path for a mount at `/data`), and its
//!   host path is exported as `SKIFF_MOUNT_<PATH>` (`/var/lib/x` → `SKIFF_MOUNT_VAR_LIB_X`).
//!   Nothing is created at the mount's own absolute path, and `readOnly` is not enforced. A pod
//!   written for Kubernetes that uses `/data` directly sees the host's `/data`, if any.
//!   The termination message file is such a mount: a process writes its message to
//!   `$SKIFF_MOUNT_DEV_TERMINATION_LOG` (for the default `/dev/termination-log`), not to the
//!   path itself. `securityContext` users are ignored (processes run as the agent's user).
//! * **Environment.** The process gets only the container's env, plus `PATH` (containerd's
//!   default), `HOME` (the pod root) and `HOSTNAME` (the pod name) when the env does not set
//!   them, plus the `SKIFF_*` variables above. The working directory is the container's
//!   `workingDir` (which must exist on the host) or the pod root.
//! * **Processes.** Each container runs in its own process group. Stopping sends SIGTERM to the
//!   group, then SIGKILL after the grace period. When the main process exits, what is left of
//!   its group is killed, as a container's processes die with its init process. A process that
//!   leaves the group (`setsid`, daemons) escapes all of this. `exec` (probes and hooks) runs the
//!   command as another host process with the container's env and working directory, in its own
//!   group; what it leaves running is killed when the container exits or on a timeout.
//!   `exec_stream` (`kubectl exec`) does the same with pipes for the streams asked for, or a
//!   pseudo-terminal for `tty` (see `stream`); its group is killed when the session ends
//!   before the command does.
//!   Killed leftovers are no longer the agent's children: the node's init reaps them (where
//!   pid 1 does not reap, as in some CI containers, they stay zombies).
//! * **Logs.** stdout and stderr go through FIFOs under `<state>/containers/<id>/` into the CRI
//!   log file (see [`super::cri_log`]). The process holds its FIFOs open for reading and writing,
//!   so while no agent runs its output is buffered (64 KiB per stream, after which writes block)
//!   instead of failing; a restarted agent resumes copying. An exit is reported once its output
//!   is in the log (at most 5 s later, for a process that escaped its group and keeps the output
//!   open).
//! * **Restarts of the agent.** Each instance is recorded under `<state>/containers/`. A new
//!   [`HostRuntime`] on the same state directory re-adopts processes that are still running (the
//!   pid and its start time in `/proc/<pid>/stat` must match, so a reused pid is not mistaken for
//!   the container) and lists them as running, so they are not started twice. An adopted process
//!   is not a child of the new agent, so its exit status cannot be read: its exit is noticed by
//!   polling `/proc` every 500 ms and reported with exit code **255** and reason
//!   `Other("Unknown")` — unless the previous agent (still alive, e.g. in the same test process)
//!   recorded the real exit. An instance that died while no agent ran and whose exit was not
//!   recorded is listed as [`InstanceState::Unknown`].
//! * **Start failures.** An empty command is `StartError::Create`. A command that cannot be
//!   executed (not found, not executable, a missing working directory) is `StartError::Run` with
//!   containerd's text; the failed instance is kept and listed as exited with code 128 and
//!   reason `StartError`, as containerd reports it, until `remove_container`/`remove_sandbox`.
//! * Exits are broadcast on a channel of 1,024 notices; a receiver that lags loses notices and
//!   should re-`list()`.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::{broadcast, watch};

use super::common::{
    EXEC_OUTPUT_CAP, EXEC_OUTPUT_GRACE, check_exec_state, exit_reason, lock, random_hex,
    remove_container_dir, safe_component, sort_known, status_code, wait_exit, write_atomic,
};
use super::cri_log::{self, SharedLog, Stream};
use super::{
    ContainerConfig, ExecProcess, ExecResult, ExecStreams, ExitNotice, Known, PodRef, Pulled,
    Runtime, Sandbox, SandboxConfig,
};
use crate::observed::{Exit, ExitReason, ImagePresence, Instance, InstanceState, StartError};
use crate::probe_io::go_error_text;

mod stream;
mod sys;

use sys::Liveness;

/// containerd's default `PATH` for containers.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The exit code reported for an adopted process whose real exit status cannot be known.
pub const UNKNOWN_EXIT_CODE: i32 = 255;

/// How often adopted processes are checked for their exit.
const ADOPTED_POLL: Duration = Duration::from_millis(500);

/// How long an exit waits for the instance's output to reach the log file.
const LOG_DRAIN: Duration = Duration::from_secs(5);

/// How long a stop or remove waits for an exit after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(60);

const CONTAINERD_START_PREFIX: &str = "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process";

/// The host runtime. See the module documentation for what it does and does not do.
pub struct HostRuntime {
    inner: Arc<Inner>,
    shutdown: watch::Sender<bool>,
}

struct Inner {
    state_dir: PathBuf,
    node_ip: String,
    exits: broadcast::Sender<ExitNotice>,
    /// Every instance known, by full id (`host://…`).
    table: Mutex<HashMap<String, Arc<Entry>>>,
    /// The copying of logs and the polling of adopted processes have been started.
    background_started: AtomicBool,
    shutdown: watch::Receiver<bool>,
}

/// One container instance.
struct Entry {
    /// Directory name under `<state>/containers/`.
    key: String,
    adopted: bool,
    /// The persisted record; its `exit` is the truth about the exit.
    record: Mutex<Record>,
    /// Set once, when the exit is known.
    exit: watch::Sender<Option<Exit>>,
    /// Dead before this runtime started, with no recorded exit.
    lost: AtomicBool,
    /// Process groups of `exec` runs that may have left processes behind.
    exec_groups: Mutex<Vec<i32>>,
}

/// What is kept on disk per instance (`<state>/containers/<key>/record.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: String,
    namespace: String,
    pod_name: String,
    pod_uid: String,
    container: String,
    attempt: u32,
    image: String,
    pid: Option<i32>,
    start_ticks: Option<u64>,
    started_at: Option<Timestamp>,
    env: Vec<(String, String)>,
    working_dir: PathBuf,
    log_path: PathBuf,
    exit: Option<ExitRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ExitRecord {
    exit_code: i32,
    reason: String,
    message: Option<String>,
    started_at: Option<Timestamp>,
    finished_at: Timestamp,
}

impl ExitRecord {
    fn of(e: &Exit) -> Self {
        ExitRecord {
            exit_code: e.exit_code,
            reason: e.reason.as_str().to_string(),
            message: e.message.clone(),
            started_at: e.started_at,
            finished_at: e.finished_at,
        }
    }

    fn to_exit(&self) -> Exit {
        let reason = exit_reason(&self.reason);
        Exit {
            exit_code: self.exit_code,
            reason,
            message: self.message.clone(),
            started_at: self.started_at,
            finished_at: self.finished_at,
        }
    }
}

impl Entry {
    fn new(key: String, record: Record, adopted: bool) -> Arc<Entry> {
        let exit = record.exit.as_ref().map(ExitRecord::to_exit);
        Arc::new(Entry {
            key,
            adopted,
            record: Mutex::new(record),
            exit: watch::channel(exit).0,
            lost: AtomicBool::new(false),
            exec_groups: Mutex::new(Vec::new()),
        })
    }

    fn record(&self) -> Record {
        lock(&self.record).clone()
    }

    fn exited(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }

    fn instance(&self) -> Instance {
        let r = self.record();
        let state = match (self.exited(), self.lost.load(Ordering::SeqCst)) {
            (Some(e), _) => InstanceState::Exited(e),
            (None, true) => InstanceState::Unknown,
            (None, false) => InstanceState::Running {
                started_at: r.started_at.unwrap_or_else(Timestamp::now),
            },
        };
        Instance {
            attempt: r.attempt,
            id: r.id,
            image: r.image,
            image_id: String::new(),
            state,
        }
    }

    /// The process group of the running instance, when its leader is verifiably ours.
    fn live_group(&self) -> Option<i32> {
        if self.exited().is_some() {
            return None;
        }
        let r = lock(&self.record);
        let pid = r.pid?;
        if self.adopted && sys::liveness(pid, r.start_ticks) != Liveness::Alive {
            return None;
        }
        // A child of ours is not reaped before its exit is recorded, so its pid is still ours.
        Some(pid)
    }

    fn kill_exec_groups(&self) {
        for g in lock(&self.exec_groups).drain(..) {
            sys::kill_group(g, libc::SIGKILL);
        }
    }
}

impl Inner {
    fn containers_dir(&self) -> PathBuf {
        self.state_dir.join("containers")
    }

    fn entry_dir(&self, key: &str) -> PathBuf {
        self.containers_dir().join(key)
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.state_dir.join("pods").join(safe_component(uid))
    }

    fn find(&self, id: &str) -> Option<Arc<Entry>> {
        lock(&self.table).get(id).cloned()
    }

    fn persist(&self, entry: &Entry, record: &Record) {
        let _ = write_record(&self.entry_dir(&entry.key), record);
    }

    /// Records the exit of an instance (once): on disk, for waiters, and as a notice.
    fn finish(&self, entry: &Entry, exit: Exit) {
        let notice = {
            let mut r = lock(&entry.record);
            if entry.exited().is_some() {
                return;
            }
            r.exit = Some(ExitRecord::of(&exit));
            self.persist(entry, &r);
            entry.lost.store(false, Ordering::SeqCst);
            entry.exit.send_replace(Some(exit.clone()));
            ExitNotice {
                pod_uid: r.pod_uid.clone(),
                container: r.container.clone(),
                id: r.id.clone(),
                exit,
            }
        };
        entry.kill_exec_groups();
        let _ = self.exits.send(notice);
    }
}

/// The env var naming a mount's host path: `/var/lib/x` → `SKIFF_MOUNT_VAR_LIB_X`.
pub fn mount_env_name(container_path: &str) -> String {
    let mut s = String::new();
    for c in container_path.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_uppercase());
        } else if !s.is_empty() && !s.ends_with('_') {
            s.push('_');
        }
    }
    while s.ends_with('_') {
        s.pop();
    }
    if s.is_empty() {
        s.push_str("ROOT");
    }
    format!("SKIFF_MOUNT_{s}")
}

fn write_record(dir: &Path, record: &Record) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
    write_atomic(&dir.join("record.json"), &bytes)
}

fn read_record(dir: &Path) -> Option<Record> {
    let bytes = std::fs::read(dir.join("record.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn start_error_text(detail: &str) -> String {
    format!("{CONTAINERD_START_PREFIX}: {detail}: unknown")
}

/// The runc text for a command that could not be executed.
fn exec_error_detail(program: &str, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound if program.contains('/') => {
            format!("exec: \"{program}\": stat {program}: no such file or directory")
        }
        io::ErrorKind::NotFound => {
            format!("exec: \"{program}\": executable file not found in $PATH")
        }
        io::ErrorKind::PermissionDenied => format!("exec: \"{program}\": permission denied"),
        _ => format!("exec: \"{program}\": {}", go_error_text(e)),
    }
}

impl HostRuntime {
    /// A host runtime keeping its state (records, FIFOs, pod roots, logs) under `state_dir`, and
    /// reporting `node_ip` as every pod's IP. Instances recorded by an earlier runtime on the same
    /// directory are re-adopted (see the module documentation).
    pub fn new(state_dir: PathBuf, node_ip: String) -> io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        for d in ["containers", "pods", "logs"] {
            std::fs::create_dir_all(state_dir.join(d))?;
        }
        // Records hold the containers' env (secrets included).
        std::fs::set_permissions(
            state_dir.join("containers"),
            std::fs::Permissions::from_mode(0o700),
        )?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            state_dir,
            node_ip,
            exits: broadcast::channel(1024).0,
            table: Mutex::new(HashMap::new()),
            background_started: AtomicBool::new(false),
            shutdown: shutdown_rx,
        });
        inner.load()?;
        let rt = HostRuntime {
            inner,
            shutdown: shutdown_tx,
        };
        rt.ensure_background();
        Ok(rt)
    }

    /// The directory the runtime keeps its state in.
    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    /// The pod's root directory (`SKIFF_POD_ROOT`), where its mounts appear as symlinks.
    pub fn pod_root(&self, pod: &PodRef) -> PathBuf {
        self.inner.pod_dir(&pod.uid).join("root")
    }

    /// The pid of a running instance's main process (also its process group id).
    pub fn pid(&self, id: &str) -> Option<i32> {
        let e = self.inner.find(id)?;
        e.live_group()
    }

    /// Starts copying the logs of adopted instances and watching for their exits, once, as soon
    /// as a tokio runtime is available.
    fn ensure_background(&self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        if self.inner.background_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let adopted: Vec<Arc<Entry>> = lock(&self.inner.table)
            .values()
            .filter(|e| e.adopted && e.exited().is_none() && !e.lost.load(Ordering::SeqCst))
            .cloned()
            .collect();
        for entry in adopted {
            let r = entry.record();
            let dir = self.inner.entry_dir(&entry.key);
            let done = spawn_pumps(&self.inner, &dir, &r.log_path);
            tokio::spawn(watch_adopted(self.inner.clone(), entry, done));
        }
    }

    fn lookup(&self, id: &str) -> Result<Arc<Entry>, String> {
        self.inner
            .find(id)
            .ok_or_else(|| format!("container \"{id}\" not found"))
    }

    /// Records a created instance that could not be started (exit 128, `StartError`).
    fn record_start_failure(&self, key: &str, mut record: Record, message: &str) {
        let now = Timestamp::now();
        record.exit = Some(ExitRecord {
            exit_code: 128,
            reason: ExitReason::StartError.as_str().to_string(),
            message: Some(message.to_string()),
            started_at: None,
            finished_at: now,
        });
        let dir = self.inner.entry_dir(key);
        let _ = write_record(&dir, &record);
        let id = record.id.clone();
        let entry = Entry::new(key.to_string(), record, false);
        lock(&self.inner.table).insert(id, entry);
    }

    /// SIGKILLs a running instance and waits for its exit.
    async fn kill_now(&self, entry: &Entry) -> Option<Exit> {
        if let Some(e) = entry.exited() {
            return Some(e);
        }
        if entry.lost.load(Ordering::SeqCst) {
            let exit = unknown_exit(
                &entry.record(),
                "the process was gone when the agent started",
            );
            self.inner.finish(entry, exit.clone());
            return Some(exit);
        }
        if let Some(g) = entry.live_group() {
            sys::kill_group(g, libc::SIGKILL);
        }
        wait_exit(&entry.exit, KILL_WAIT).await
    }
}

impl Drop for HostRuntime {
    fn drop(&mut self) {
        // Stops log copying and the polling of adopted processes. Children keep being waited
        // for (and reaped) by their threads, which record their exits on disk.
        let _ = self.shutdown.send(true);
    }
}

fn unknown_exit(r: &Record, why: &str) -> Exit {
    Exit {
        exit_code: UNKNOWN_EXIT_CODE,
        reason: ExitReason::Other("Unknown".to_string()),
        message: Some(format!(
            "the host runtime cannot read the exit status of a process it did not start: {why}"
        )),
        started_at: r.started_at,
        finished_at: Timestamp::now(),
    }
}

impl Inner {
    /// Reads the records of an earlier runtime.
    fn load(&self) -> io::Result<()> {
        let mut table = lock(&self.table);
        for item in std::fs::read_dir(self.containers_dir())? {
            let Ok(item) = item else { continue };
            let key = item.file_name().to_string_lossy().into_owned();
            let Some(record) = read_record(&item.path()) else {
                continue;
            };
            let id = record.id.clone();
            let entry = if record.exit.is_some() {
                Entry::new(key, record, false)
            } else {
                let alive = record
                    .pid
                    .map(|pid| sys::liveness(pid, record.start_ticks))
                    .unwrap_or(Liveness::Gone);
                let e = Entry::new(key, record, true);
                if alive == Liveness::Gone {
                    e.lost.store(true, Ordering::SeqCst);
                }
                e
            };
            table.insert(id, entry);
        }
        Ok(())
    }
}

/// Opens the instance's FIFOs for reading and copies them into its log file. Returns a receiver
/// that reports disconnection once both copies have ended.
fn spawn_pumps(inner: &Arc<Inner>, dir: &Path, log_path: &Path) -> std::sync::mpsc::Receiver<()> {
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let log = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
    {
        Ok(f) => Arc::new(Mutex::new(f)),
        Err(_) => return done_rx,
    };
    for (name, stream) in [("stdout", Stream::Stdout), ("stderr", Stream::Stderr)] {
        let Ok(reader) = tokio::net::unix::pipe::OpenOptions::new().open_receiver(dir.join(name))
        else {
            continue;
        };
        spawn_pump(inner, reader, stream, log.clone(), done_tx.clone());
    }
    done_rx
}

fn spawn_pump(
    inner: &Arc<Inner>,
    reader: tokio::net::unix::pipe::Receiver,
    stream: Stream,
    log: SharedLog,
    done: std::sync::mpsc::Sender<()>,
) {
    let mut shutdown = inner.shutdown.clone();
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        cri_log::pump(reader, stream, log, stop).await;
        drop(done);
    });
}

/// Waits (bounded) until the log copies of an instance have ended.
fn drain_logs(done: &std::sync::mpsc::Receiver<()>) {
    let deadline = std::time::Instant::now() + LOG_DRAIN;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match done.recv_timeout(left) {
            Ok(()) => continue,
            Err(_) => return,
        }
    }
}

/// The thread that waits for a child: notices its exit, kills what is left of its group, lets
/// its output reach the log, records the exit, and only then reaps it.
fn wait_child(
    inner: Arc<Inner>,
    entry: Arc<Entry>,
    mut child: std::process::Child,
    done: std::sync::mpsc::Receiver<()>,
) {
    let pid = child.id() as i32;
    let started_at = entry.record().started_at;
    let code = match sys::wait_exit_no_reap(pid) {
        Some(code) => {
            // The leader is a zombie, so its group id cannot have been reused: what is left of
            // the group dies with it, as a container's processes die with its init.
            sys::kill_group(pid, libc::SIGKILL);
            Some(code)
        }
        None => child.wait().ok().map(|s| {
            use std::os::unix::process::ExitStatusExt;
            s.code()
                .or(s.signal().map(|n| 128 + n))
                .unwrap_or(UNKNOWN_EXIT_CODE)
        }),
    };
    drain_logs(&done);
    let exit = match code {
        Some(code) => Exit::code(code, started_at, Timestamp::now()),
        None => unknown_exit(&entry.record(), "waiting for the process failed"),
    };
    inner.finish(&entry, exit);
    let _ = child.wait();
}

/// Polls an adopted process until it is gone, then records its exit.
async fn watch_adopted(inner: Arc<Inner>, entry: Arc<Entry>, done: std::sync::mpsc::Receiver<()>) {
    let mut shutdown = inner.shutdown.clone();
    let (pid, ticks) = {
        let r = entry.record();
        (r.pid.unwrap_or(0), r.start_ticks)
    };
    let mut zombie_polls = 0;
    loop {
        if entry.exited().is_some() {
            return;
        }
        match sys::liveness(pid, ticks) {
            Liveness::Alive => {}
            Liveness::Zombie => {
                // Its parent (an earlier agent in this process, or init) is about to reap it and
                // may record its real exit first.
                zombie_polls += 1;
                if zombie_polls > 10 {
                    break;
                }
            }
            Liveness::Gone => break,
        }
        tokio::select! {
            () = tokio::time::sleep(ADOPTED_POLL) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
    if sys::group_exists(pid) {
        sys::kill_group(pid, libc::SIGKILL);
    }
    let _ = tokio::task::spawn_blocking(move || drain_logs(&done)).await;
    let dir = inner.entry_dir(&entry.key);
    let exit = match read_record(&dir).and_then(|r| r.exit) {
        Some(e) => e.to_exit(),
        None => unknown_exit(&entry.record(), "it was adopted after an agent restart"),
    };
    inner.finish(&entry, exit);
}

#[async_trait::async_trait]
impl Runtime for HostRuntime {
    fn name(&self) -> &'static str {
        "host"
    }

    async fn create_sandbox(
        &self,
        pod: &PodRef,
        _config: &SandboxConfig,
    ) -> Result<Sandbox, String> {
        self.ensure_background();
        let root = self.pod_root(pod);
        std::fs::create_dir_all(&root)
            .map_err(|e| format!("failed to create pod directory {}: {e}", root.display()))?;
        Ok(Sandbox {
            pod_ip: self.inner.node_ip.clone(),
        })
    }

    async fn remove_sandbox(&self, pod: &PodRef) -> Result<(), String> {
        self.ensure_background();
        let ids: Vec<String> = lock(&self.inner.table)
            .iter()
            .filter(|(_, e)| lock(&e.record).pod_uid == pod.uid)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.remove_container(pod, &id).await?;
        }
        let mut errors = Vec::new();
        let log_dir = self
            .inner
            .state_dir
            .join("logs")
            .join(safe_component(&format!(
                "{}_{}_{}",
                pod.namespace, pod.name, pod.uid
            )));
        for dir in [self.inner.pod_dir(&pod.uid), log_dir] {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => errors.push(format!("failed to remove {}: {e}", dir.display())),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    async fn image_status(&self, _image: &str) -> ImagePresence {
        ImagePresence::Present
    }

    async fn pull_image(
        &self,
        _image: &str,
        _auth: Option<(String, String)>,
    ) -> Result<Pulled, String> {
        Ok(Pulled { size_bytes: 0 })
    }

    async fn start_container(
        &self,
        pod: &PodRef,
        config: &ContainerConfig,
    ) -> Result<Instance, StartError> {
        self.ensure_background();
        let argv = config.argv();
        let Some(program) = argv.first().filter(|p| !p.is_empty()) else {
            return Err(StartError::Create(
                "the host runtime needs a command: set command or args in the container spec"
                    .to_string(),
            ));
        };
        let create_err = |what: &str, e: io::Error| StartError::Create(format!("{what}: {e}"));

        // The pod root and its mount links.
        let root = self.pod_root(pod);
        std::fs::create_dir_all(&root)
            .map_err(|e| create_err(&format!("failed to create {}", root.display()), e))?;
        for m in &config.mounts {
            link_mount(&root, m).map_err(|e| {
                create_err(
                    &format!("failed to expose volume at {}", m.container_path),
                    e,
                )
            })?;
        }

        // The log file.
        let log_path = self.log_path(pod, &config.name, config.attempt);
        if let Some(parent) = log_path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| create_err("failed to create the log directory", e))?;
        }
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| create_err("failed to create the log file", e))?;
        let log: SharedLog = Arc::new(Mutex::new(log_file));

        // The instance directory, with its FIFOs.
        let (key, dir) = loop {
            let key = random_hex();
            let dir = self.inner.entry_dir(&key);
            match std::fs::create_dir(&dir) {
                Ok(()) => break (key, dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(create_err("failed to create the container directory", e)),
            }
        };
        let id = format!("host://{key}");
        let fifos = open_fifos(&dir).map_err(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            create_err("failed to create the output fifos", e)
        })?;

        // Env and working directory.
        let mut env: Vec<(String, String)> = Vec::new();
        let set = |env: &mut Vec<(String, String)>, k: &str, v: String| {
            if !config.env.iter().any(|(n, _)| n == k) {
                env.push((k.to_string(), v));
            }
        };
        set(&mut env, "PATH", DEFAULT_PATH.to_string());
        set(&mut env, "HOSTNAME", pod.name.clone());
        set(&mut env, "HOME", root.display().to_string());
        set(&mut env, "SKIFF_POD_ROOT", root.display().to_string());
        for m in &config.mounts {
            set(
                &mut env,
                &mount_env_name(&m.container_path),
                m.host_path.display().to_string(),
            );
        }
        env.extend(config.env.iter().cloned());
        let working_dir = match config.working_dir.as_deref().filter(|w| !w.is_empty()) {
            Some(w) => PathBuf::from(w),
            None => root.clone(),
        };

        let mut record = Record {
            id: id.clone(),
            namespace: pod.namespace.clone(),
            pod_name: pod.name.clone(),
            pod_uid: pod.uid.clone(),
            container: config.name.clone(),
            attempt: config.attempt,
            image: config.image.clone(),
            pid: None,
            start_ticks: None,
            started_at: None,
            env: env.clone(),
            working_dir: working_dir.clone(),
            log_path: log_path.clone(),
            exit: None,
        };

        if !working_dir.is_dir() {
            let msg = start_error_text(&format!(
                "chdir to cwd (\"{}\") set in config.json failed: no such file or directory",
                working_dir.display()
            ));
            self.record_start_failure(&key, record, &msg);
            return Err(StartError::Run(msg));
        }

        let Fifos {
            out_w,
            err_w,
            out_r,
            err_r,
        } = fifos;
        let mut cmd = std::process::Command::new(program);
        cmd.args(&argv[1..])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(&working_dir)
            .stdin(std::process::Stdio::null())
            .stdout(out_w)
            .stderr(err_w);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let started_at = Timestamp::now();
        let spawned = cmd.spawn();
        // Closes our copies of the process's FIFO ends, so the copies see the end of output.
        drop(cmd);
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let msg = start_error_text(&exec_error_detail(program, &e));
                self.record_start_failure(&key, record, &msg);
                return Err(StartError::Run(msg));
            }
        };
        let pid = child.id() as i32;
        record.pid = Some(pid);
        record.start_ticks = sys::stat(pid).map(|s| s.start_ticks);
        record.started_at = Some(started_at);
        let _ = write_record(&dir, &record);
        let entry = Entry::new(key, record, false);
        lock(&self.inner.table).insert(id.clone(), entry.clone());

        let (done_tx, done_rx) = std::sync::mpsc::channel();
        spawn_pump(
            &self.inner,
            out_r,
            Stream::Stdout,
            log.clone(),
            done_tx.clone(),
        );
        spawn_pump(&self.inner, err_r, Stream::Stderr, log, done_tx);

        let inner = self.inner.clone();
        let waiter_entry = entry.clone();
        let spawned = std::thread::Builder::new()
            .name("skiff-host-wait".to_string())
            .stack_size(256 * 1024)
            .spawn(move || wait_child(inner, waiter_entry, child, done_rx));
        if let Err(e) = spawned {
            // The child moved into the failed closure was dropped unwaited; kill and reap it.
            sys::kill_group(pid, libc::SIGKILL);
            // SAFETY: waitpid on our own child pid with a null status pointer.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            let msg = start_error_text(&format!("failed to start a wait thread: {e}"));
            self.inner.finish(
                &entry,
                Exit {
                    exit_code: 128,
                    reason: ExitReason::StartError,
                    message: Some(msg.clone()),
                    started_at: None,
                    finished_at: Timestamp::now(),
                },
            );
            return Err(StartError::Run(msg));
        }
        Ok(Instance {
            attempt: config.attempt,
            id,
            image: config.image.clone(),
            image_id: String::new(),
            state: InstanceState::Running { started_at },
        })
    }

    async fn stop_container(
        &self,
        _pod: &PodRef,
        id: &str,
        grace: Duration,
    ) -> Result<Exit, String> {
        self.ensure_background();
        let entry = self.lookup(id)?;
        if let Some(e) = entry.exited() {
            return Ok(e);
        }
        if entry.lost.load(Ordering::SeqCst) {
            return self
                .kill_now(&entry)
                .await
                .ok_or_else(|| format!("container \"{id}\" did not exit"));
        }
        if let Some(g) = entry.live_group() {
            sys::kill_group(g, libc::SIGTERM);
        }
        if let Some(e) = wait_exit(&entry.exit, grace).await {
            return Ok(e);
        }
        self.kill_now(&entry)
            .await
            .ok_or_else(|| format!("container \"{id}\" did not exit after SIGKILL"))
    }

    async fn exec_stream(
        &self,
        _pod: &PodRef,
        id: &str,
        argv: &[String],
        streams: ExecStreams,
    ) -> Result<ExecProcess, String> {
        self.ensure_background();
        let entry = self.lookup(id)?;
        check_exec_state(entry.exited().is_some(), entry.lost.load(Ordering::SeqCst))?;
        let record = entry.record();
        let working_dir = if record.working_dir.is_dir() {
            record.working_dir.as_path()
        } else {
            Path::new("/")
        };
        let started = stream::spawn(argv, &record.env, working_dir, streams)?;
        let mut groups = lock(&entry.exec_groups);
        // Forget groups that have no processes left, then remember this one, so what the
        // command leaves running dies with the container.
        groups.retain(|g| sys::group_exists(*g));
        groups.push(started.pgid);
        drop(groups);
        if entry.exited().is_some() {
            // The container exited meanwhile: its exec processes go with it.
            entry.kill_exec_groups();
        }
        Ok(started.process)
    }

    async fn exec(
        &self,
        _pod: &PodRef,
        id: &str,
        argv: &[String],
        timeout: Option<Duration>,
    ) -> Result<ExecResult, String> {
        self.ensure_background();
        let entry = self.lookup(id)?;
        check_exec_state(entry.exited().is_some(), entry.lost.load(Ordering::SeqCst))?;
        let Some(program) = argv.first().filter(|p| !p.is_empty()) else {
            return Err("exec: no command given".into());
        };
        let record = entry.record();
        let (reader, writer) = io::pipe().map_err(|e| format!("failed to create a pipe: {e}"))?;
        let writer2 = writer
            .try_clone()
            .map_err(|e| format!("failed to create a pipe: {e}"))?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&argv[1..])
            .env_clear()
            .envs(record.env.iter().map(|(k, v)| (k, v)))
            .current_dir(if record.working_dir.is_dir() {
                record.working_dir.as_path()
            } else {
                Path::new("/")
            })
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .stderr(writer2)
            .process_group(0)
            .kill_on_drop(true);
        let spawned = cmd.spawn();
        drop(cmd);
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let code = if e.kind() == io::ErrorKind::NotFound {
                    127
                } else {
                    126
                };
                return Ok(ExecResult {
                    exit_code: code,
                    output: format!(
                        "OCI runtime exec failed: exec failed: unable to start container process: {}: unknown",
                        exec_error_detail(program, &e)
                    ),
                    timed_out: false,
                });
            }
        };
        let pgid = child.id().map_or(0, |p| p as i32);
        lock(&entry.exec_groups).push(pgid);

        let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(reader.into())
            .map_err(|e| format!("failed to read the command's output: {e}"));
        // Output is collected until the pipe ends; the command's background processes may keep
        // it open, so once the command has exited, what has come so far is taken.
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = output.clone();
        let mut shutdown = self.inner.shutdown.clone();
        let mut collector = tokio::spawn(async move {
            let Ok(mut reader) = reader else { return };
            let mut buf = [0u8; 4096];
            loop {
                let n = tokio::select! {
                    r = reader.read(&mut buf) => match r {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => 0,
                    },
                    _ = shutdown.wait_for(|s| *s) => 0,
                };
                if n == 0 {
                    return;
                }
                let mut out = lock(&sink);
                let room = EXEC_OUTPUT_CAP.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        });

        let status = match timeout {
            Some(t) => tokio::time::timeout(t, child.wait()).await.ok(),
            None => Some(child.wait().await),
        };
        let (status, timed_out) = match status {
            Some(s) => (s, false),
            None => {
                sys::kill_group(pgid, libc::SIGKILL);
                (child.wait().await, true)
            }
        };
        if tokio::time::timeout(EXEC_OUTPUT_GRACE, &mut collector)
            .await
            .is_err()
        {
            collector.abort();
        }
        let output = std::mem::take(&mut *lock(&output));
        // Forget groups that have no processes left.
        lock(&entry.exec_groups).retain(|g| sys::group_exists(*g));
        let exit_code = match status {
            Ok(s) => status_code(s),
            Err(e) => return Err(format!("failed to wait for the command: {e}")),
        };
        Ok(ExecResult {
            exit_code,
            output: String::from_utf8_lossy(&output).into_owned(),
            timed_out,
        })
    }

    fn log_path(&self, pod: &PodRef, container: &str, attempt: u32) -> PathBuf {
        self.inner
            .state_dir
            .join("logs")
            .join(safe_component(&format!(
                "{}_{}_{}",
                pod.namespace, pod.name, pod.uid
            )))
            .join(safe_component(container))
            .join(format!("{attempt}.log"))
    }

    async fn list(&self) -> Vec<Known> {
        self.ensure_background();
        let entries: Vec<Arc<Entry>> = lock(&self.inner.table).values().cloned().collect();
        let mut known: Vec<Known> = entries
            .iter()
            .map(|e| {
                let r = e.record();
                Known {
                    pod_uid: r.pod_uid,
                    container: r.container,
                    instance: e.instance(),
                }
            })
            .collect();
        sort_known(&mut known);
        known
    }

    async fn remove_container(&self, _pod: &PodRef, id: &str) -> Result<(), String> {
        self.ensure_background();
        let Some(entry) = self.inner.find(id) else {
            return Ok(());
        };
        if entry.exited().is_none() && self.kill_now(&entry).await.is_none() {
            return Err(format!("container \"{id}\" did not exit after SIGKILL"));
        }
        entry.kill_exec_groups();
        lock(&self.inner.table).remove(id);
        remove_container_dir(&self.inner.entry_dir(&entry.key), id)
    }

    fn exits(&self) -> broadcast::Receiver<ExitNotice> {
        self.inner.exits.subscribe()
    }
}

/// Both ends of an instance's output FIFOs.
struct Fifos {
    out_w: std::fs::File,
    err_w: std::fs::File,
    out_r: tokio::net::unix::pipe::Receiver,
    err_r: tokio::net::unix::pipe::Receiver,
}

/// Creates `stdout` and `stderr` FIFOs in `dir` and opens them: the process's ends read-write
/// (so writes never fail for want of a reader while no agent runs), then ours, before the
/// process starts, so nothing is lost.
fn open_fifos(dir: &Path) -> io::Result<Fifos> {
    for name in ["stdout", "stderr"] {
        sys::mkfifo(&dir.join(name))?;
    }
    let open_rw = |name: &str| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join(name))
    };
    let open_r =
        |name: &str| tokio::net::unix::pipe::OpenOptions::new().open_receiver(dir.join(name));
    Ok(Fifos {
        out_w: open_rw("stdout")?,
        err_w: open_rw("stderr")?,
        out_r: open_r("stdout")?,
        err_r: open_r("stderr")?,
    })
}

/// Makes a mount visible as `<pod root>/<container path>`, a symlink to its host path.
fn link_mount(root: &Path, m: &super::Mount) -> io::Result<()> {
    let mut link = root.to_path_buf();
    let mut any = false;
    for part in m.container_path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the path must not contain '..'",
                ));
            }
            p => {
                link.push(p);
                any = true;
            }
        }
    }
    if !any {
        // A mount at `/` has nothing to link.
        return Ok(());
    }
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::symlink_metadata(&link) {
        Ok(md) if md.file_type().is_symlink() => std::fs::remove_file(&link)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a link", link.display()),
            ));
        }
        Err(_) => {}
    }
    std::os::unix::fs::symlink(&m.host_path, &link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_env_names() {
        assert_eq!(mount_env_name("/data"), "SKIFF_MOUNT_DATA");
        assert_eq!(
            mount_env_name("/var/lib/my-sql/"),
            "SKIFF_MOUNT_VAR_LIB_MY_SQL"
        );
        assert_eq!(mount_env_name("/"), "SKIFF_MOUNT_ROOT");
        assert_eq!(mount_env_name(""), "SKIFF_MOUNT_ROOT");
    }

    #[test]
    fn safe_components() {
        assert_eq!(safe_component("a/b"), "a_b");
        assert_eq!(safe_component(".."), "_..");
        assert_eq!(safe_component(""), "_");
        assert_eq!(safe_component("ns_name_uid"), "ns_name_uid");
    }

    #[test]
    fn exec_error_details() {
        let nf = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(
            exec_error_detail("foo", &nf),
            "exec: \"foo\": executable file not found in $PATH"
        );
        assert_eq!(
            exec_error_detail("/x/foo", &nf),
            "exec: \"/x/foo\": stat /x/foo: no such file or directory"
        );
    }

    #[test]
    fn exit_records_round_trip() {
        let at: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        for reason in [
            ExitReason::Completed,
            ExitReason::Error,
            ExitReason::OOMKilled,
            ExitReason::StartError,
            ExitReason::Other("Unknown".into()),
        ] {
            let e = Exit {
                exit_code: 3,
                reason,
                message: Some("m".into()),
                started_at: Some(at),
                finished_at: at,
            };
            assert_eq!(ExitRecord::of(&e).to_exit(), e);
        }
    }
}
