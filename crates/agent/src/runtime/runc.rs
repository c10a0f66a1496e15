//! The runc runtime: real containers from OCI images, run by `runc`, one pod sandbox per pod.
//!
//! * **Sandbox.** No pause process: a dedicated thread unshares a network, IPC and UTS namespace
//!   (hostname set), and bind mounts of its namespace files under `<state>/pods/<uid>/ns/` (a
//!   private mount of its own) keep them alive once it has ended. CNI plugins are run directly:
//!   `loopback` for `lo`, then `bridge` (the configured bridge, the pods' gateway, hairpin on,
//!   no masquerade) with `host-local` addresses from the pod CIDR, leases under `<state>/cni`.
//!   `hostNetwork` pods keep the node's network and UTS namespaces (pod IP = node IP) and get an
//!   IPC namespace of their own. Each pod has `/etc/hosts`, `/etc/hostname` and
//!   `/etc/resolv.conf` (a copy of the node's) in its directory, bound into every container.
//!   The sandbox record `sandbox.json` (written last) keeps what `remove_sandbox` needs, so a
//!   pod is removed from the on-disk state alone, after an agent restart too.
//! * **Containers.** The rootfs comes from the image store (`prepare_rootfs`); the container's
//!   directory `<state>/containers/<id>/` is runc's bundle (see `runc/spec.rs` for `config.json`:
//!   Kubernetes' command/args rule, env, user, mounts, cgroup `/<parent>/pod<uid>/<id>` with
//!   the resources, containerd's default capabilities and masked paths). Every runc call uses
//!   `--root <state>/runc-state`, so other runc users' containers are never touched.
//! * **Shim.** Each container is supervised by a shim process (see `runc/shim.rs`), started detached
//!   as `<shim argv prefix> <container dir>`: it runs `runc create`/`runc start`, reaps the
//!   container's init as a subreaper, writes its output to the CRI log file, reads the OOM
//!   count before `runc delete`, and writes `exit.json`. Containers and their logs survive an
//!   agent restart; an exit that happens while no agent runs is still recorded.
//! * **Exits.** The agent awaits the shims it started; containers re-adopted by a new runtime
//!   (same state directory) are polled every 200 ms for their exit record, only while such
//!   containers exist. Each exit is broadcast once (1,024 notices; a lagging receiver should
//!   re-`list()`); start failures are not broadcast, as with the host runtime. A shim that dies
//!   without an exit record makes an exit with code 255 and reason `Unknown` (its container is
//!   killed). An instance whose shim was gone, without an exit record, when the runtime started
//!   is listed as [`InstanceState::Unknown`].
//! * **Start failures.** An empty command is `StartError::Create("no command specified")`; a
//!   failed `runc create` (e.g. `exec: "nope": executable file not found in $PATH`) is
//!   `StartError::Run` with containerd's text, and the instance is kept as exited with code 128
//!   and reason `StartError`.
//! * **OOM.** Exit code 137 with an OOM kill counted by the container's memory cgroup
//!   (`memory.oom_control` on v1, `memory.events` on v2) is `OOMKilled`.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use jiff::Timestamp;
use skiff_images::{ImageStore, PullOptions};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::{broadcast, watch};

use super::common::{
    self, EXEC_OUTPUT_CAP, EXEC_OUTPUT_GRACE, lock, random_hex, read_fd, remove_container_dir,
    safe_component, sort_known, status_code, wait_exit, write_fd,
};
use super::{
    ContainerConfig, ExecProcess, ExecResult, ExecStreams, ExitNotice, Known, NodeImage, PodRef,
    Pulled, Runtime, Sandbox, SandboxConfig,
};
use crate::observed::{Exit, ExitReason, ImagePresence, Instance, InstanceState, StartError};

mod cgroups;
mod cni;
mod records;
mod sandbox;
mod shim;
mod spec;
mod sys;

use records::{ExitRecord, Meta, ShimPid, ShimSpec, Started};
use sandbox::SandboxRecord;
pub use shim::shim_main;

/// The exit code reported when a container's real exit status cannot be known.
pub const UNKNOWN_EXIT_CODE: i32 = 255;

/// How often re-adopted containers are checked for their exit record.
const ADOPTED_POLL: Duration = Duration::from_millis(200);

/// How often a start checks whether the shim has started the container.
const START_POLL: Duration = Duration::from_millis(10);

/// The longest a start may take (image unpacking is done before; this is runc create/start).
const START_LIMIT: Duration = Duration::from_secs(300);

/// How long a stop or remove waits for an exit after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(60);

/// Where to find things and how to build pods; see [`RuncConfig::new`] for the defaults.
#[derive(Clone)]
pub struct RuncConfig {
    /// `<data-dir>/runc`: container bundles, pod directories, logs, runc's state, CNI leases.
    pub state_dir: PathBuf,
    pub images: ImageStore,
    pub runc_binary: PathBuf,
    /// Where the CNI plugins are (`bridge`, `host-local`, `loopback`).
    pub cni_bin_dir: PathBuf,
    pub pod_cidr: String,
    /// The pods' bridge (at most 15 characters).
    pub bridge: String,
    /// The cgroup every pod's cgroup is created under (`/<parent>/pod<uid>/<container>`).
    pub cgroup_parent: String,
    pub node_ip: String,
    /// Registries spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// The argv prefix that runs the shim; the container directory is appended
    /// (`skiff runc-shim <dir>`).
    pub shim: Vec<String>,
}

impl RuncConfig {
    /// The defaults: runc from `PATH`, CNI plugins in `/usr/lib/cni`, pods in `10.244.0.0/24` on
    /// bridge `skiff0`, cgroups under `/skiff`, no insecure registries.
    pub fn new(state_dir: PathBuf, images: ImageStore, node_ip: String, shim: Vec<String>) -> Self {
        RuncConfig {
            state_dir,
            images,
            runc_binary: find_in_path("runc").unwrap_or_else(|| PathBuf::from("runc")),
            cni_bin_dir: PathBuf::from("/usr/lib/cni"),
            pod_cidr: "10.244.0.0/24".to_string(),
            bridge: "skiff0".to_string(),
            cgroup_parent: "skiff".to_string(),
            node_ip,
            insecure_registries: Vec::new(),
            shim,
        }
    }
}

/// The first executable `name` in `PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The runc runtime. See the module documentation.
pub struct RuncRuntime {
    inner: Arc<Inner>,
    shutdown: watch::Sender<bool>,
}

struct Inner {
    state_dir: PathBuf,
    images: ImageStore,
    runc: PathBuf,
    runc_root: PathBuf,
    network: cni::Network,
    cgroup_parent: String,
    node_ip: String,
    insecure_registries: Vec<String>,
    shim: Vec<String>,
    /// Private cgroup namespaces (cgroup v2 hosts).
    cgroup_ns: bool,
    /// Swap is accounted (cgroup v1 `memory.memsw.*`): a memory limit covers swap too.
    memsw: bool,
    exits: broadcast::Sender<ExitNotice>,
    /// Every instance known, by full id (`runc://…`).
    table: Mutex<HashMap<String, Arc<Entry>>>,
    /// One lock per pod for sandbox creation and removal.
    pod_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    background_started: AtomicBool,
    shutdown: watch::Receiver<bool>,
}

/// One container instance.
struct Entry {
    /// The runc container id (and directory name).
    key: String,
    meta: Meta,
    /// Found running by a new runtime: its exit is polled.
    adopted: bool,
    started: Mutex<Option<Started>>,
    /// Set once, when the exit is known.
    exit: watch::Sender<Option<Exit>>,
    /// Its shim was gone, without an exit record, when the runtime started.
    lost: AtomicBool,
}

impl Entry {
    fn new(key: String, meta: Meta, adopted: bool, exit: Option<Exit>) -> Arc<Entry> {
        Arc::new(Entry {
            key,
            meta,
            adopted,
            started: Mutex::new(None),
            exit: watch::channel(exit).0,
            lost: AtomicBool::new(false),
        })
    }

    fn exited(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }

    fn started(&self) -> Option<Started> {
        *lock(&self.started)
    }

    fn instance(&self) -> Instance {
        let state = match (self.exited(), self.lost.load(Ordering::SeqCst)) {
            (Some(e), _) => InstanceState::Exited(e),
            (None, true) => InstanceState::Unknown,
            (None, false) => match self.started() {
                Some(s) => InstanceState::Running {
                    started_at: s.started_at,
                },
                None => InstanceState::Created,
            },
        };
        Instance {
            attempt: self.meta.attempt,
            id: self.meta.id.clone(),
            image: self.meta.image.clone(),
            image_id: self.meta.image_id.clone(),
            state,
        }
    }
}

/// Characters CNI and cgroup paths accept, for ids made from pod UIDs.
fn id_component(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Inner {
    fn containers_dir(&self) -> PathBuf {
        self.state_dir.join("containers")
    }

    fn container_dir(&self, key: &str) -> PathBuf {
        self.containers_dir().join(key)
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.state_dir.join("pods").join(safe_component(uid))
    }

    fn pod_log_dir(&self, pod: &PodRef) -> PathBuf {
        self.state_dir.join("logs").join(safe_component(&format!(
            "{}_{}_{}",
            pod.namespace, pod.name, pod.uid
        )))
    }

    fn pod_cgroup(&self, uid: &str) -> String {
        format!(
            "/{}/pod{}",
            self.cgroup_parent.trim_matches('/'),
            id_component(uid)
        )
    }

    fn find(&self, id: &str) -> Option<Arc<Entry>> {
        lock(&self.table).get(id).cloned()
    }

    fn runc_cmd(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.runc);
        c.arg("--root")
            .arg(&self.runc_root)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// A runc call whose output does not matter (kill, delete): its error text on failure.
    async fn runc_quiet(&self, args: &[&str]) -> Result<(), String> {
        let out = self
            .runc_cmd()
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
            .await
            .map_err(|e| format!("failed to run {}: {e}", self.runc.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Records the exit of an instance (once), for waiters and, when `notify`, as a notice.
    fn finish(&self, entry: &Entry, exit: Exit, notify: bool) {
        let sent = entry.exit.send_if_modified(|cur| {
            if cur.is_some() {
                return false;
            }
            *cur = Some(exit.clone());
            true
        });
        if !sent {
            return;
        }
        entry.lost.store(false, Ordering::SeqCst);
        if notify {
            let _ = self.exits.send(ExitNotice {
                pod_uid: entry.meta.pod_uid.clone(),
                container: entry.meta.container.clone(),
                id: entry.meta.id.clone(),
                exit,
            });
        }
    }

    /// After the shim of `entry` is gone: its exit record, else an unknown exit (and the
    /// container, unsupervised now, is killed).
    async fn shim_gone(&self, entry: &Entry) {
        let dir = self.container_dir(&entry.key);
        if let Some(r) = records::read::<ExitRecord>(&dir, records::EXIT) {
            let exit = r.to_exit();
            let notify = exit.reason != ExitReason::StartError;
            self.finish(entry, exit, notify);
            return;
        }
        let _ = self.runc_quiet(&["kill", &entry.key, "KILL"]).await;
        let _ = self.runc_quiet(&["delete", "--force", &entry.key]).await;
        let exit = unknown_exit(
            entry.started().map(|s| s.started_at),
            "the container's shim ended without recording its exit",
        );
        let _ = records::write(&dir, records::EXIT, &ExitRecord::of(&exit, false));
        self.finish(entry, exit, true);
    }

    /// Reads what an earlier runtime left under `containers/`.
    fn load(&self) -> io::Result<()> {
        let mut table = lock(&self.table);
        for item in std::fs::read_dir(self.containers_dir())? {
            let Ok(item) = item else { continue };
            let key = item.file_name().to_string_lossy().into_owned();
            let dir = item.path();
            let Some(meta) = records::read::<Meta>(&dir, records::META) else {
                // Never got as far as a start: nothing runs from it.
                let _ = self.images.release_rootfs(&dir);
                let _ = std::fs::remove_dir_all(&dir);
                continue;
            };
            let exit = records::read::<ExitRecord>(&dir, records::EXIT).map(|r| r.to_exit());
            let shim_alive =
                records::read::<ShimPid>(&dir, records::SHIM_PID).is_some_and(|p| p.alive());
            let adopted = exit.is_none() && shim_alive;
            // The shim may have written its exit record between the two reads.
            let exit = exit
                .or_else(|| records::read::<ExitRecord>(&dir, records::EXIT).map(|r| r.to_exit()));
            let id = meta.id.clone();
            let entry = Entry::new(key, meta, adopted && exit.is_none(), exit.clone());
            *lock(&entry.started) = records::read::<Started>(&dir, records::STARTED);
            if exit.is_none() && !shim_alive {
                entry.lost.store(true, Ordering::SeqCst);
            }
            table.insert(id, entry);
        }
        Ok(())
    }

    /// Deletes runc containers of our root that no instance owns.
    fn delete_orphan_containers(&self) {
        let out = std::process::Command::new(&self.runc)
            .arg("--root")
            .arg(&self.runc_root)
            .args(["list", "--format", "json"])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output();
        let Ok(out) = out else { return };
        let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let owned: Vec<String> = lock(&self.table).values().map(|e| e.key.clone()).collect();
        for c in list {
            let Some(id) = c["id"].as_str() else { continue };
            if owned.iter().any(|k| k == id) {
                continue;
            }
            let _ = std::process::Command::new(&self.runc)
                .arg("--root")
                .arg(&self.runc_root)
                .args(["delete", "--force", id])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn unknown_exit(started_at: Option<Timestamp>, why: &str) -> Exit {
    Exit {
        exit_code: UNKNOWN_EXIT_CODE,
        reason: ExitReason::Other("Unknown".to_string()),
        message: Some(why.to_string()),
        started_at,
        finished_at: Timestamp::now(),
    }
}

/// A pod's hostname as the kernel takes it: at most 63 characters, without a trailing `-` or
/// `.` after truncation (the kubelet's rule).
fn pod_hostname(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_string();
    }
    let mut cut = 63;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    name[..cut].trim_end_matches(['-', '.']).to_string()
}

/// The name an image is reported as: the spec's reference, normalised as the kubelet and
/// containerd do (`busybox` → `docker.io/library/busybox:latest`).
/// The kubelet's image garbage collection: every 5 minutes, unused images go when the image file
/// system is more than 85% full, down to 80% (imageGCHighThresholdPercent/LowThresholdPercent).
async fn collect_images(images: ImageStore) {
    let mut tick = tokio::time::interval(Duration::from_secs(300));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let store = images.clone();
        match tokio::task::spawn_blocking(move || store.gc_by_disk(85, 80)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(freed)) => tracing::info!(freed, "image garbage collection freed space"),
            Ok(Err(e)) => tracing::warn!(error = %e, "image garbage collection failed"),
            Err(e) => tracing::warn!(error = %e, "image garbage collection panicked"),
        }
    }
}

fn reported_image_name(requested: &str) -> String {
    skiff_core::image::Reference::parse(requested)
        .map(|r| r.with_default_tag().to_string())
        .unwrap_or_else(|_| requested.to_string())
}

impl RuncRuntime {
    /// Checks the node (root, runc, CNI plugins), prepares the state directory and re-adopts
    /// the containers an earlier runtime left there. Containers of live pods keep running; the
    /// agent removes the sandboxes of pods no longer in the API with `remove_sandbox`.
    pub fn new(config: RuncConfig) -> Result<RuncRuntime, String> {
        if config.shim.is_empty() {
            return Err(
                "the runc runtime needs the command that runs its shim (e.g. `skiff runc-shim`)"
                    .to_string(),
            );
        }
        if !sys::is_root() {
            return Err(
                "the runc runtime must run as root: it creates namespaces, mounts and \
                        cgroups (run the agent as root, or use the host runtime)"
                    .to_string(),
            );
        }
        let runc = if config.runc_binary.components().count() == 1 {
            find_in_path(&config.runc_binary.to_string_lossy())
        } else {
            Some(config.runc_binary.clone()).filter(|p| is_executable(p))
        };
        let Some(runc) = runc else {
            return Err(format!(
                "runc not found ({}): install it: apt-get install runc",
                config.runc_binary.display()
            ));
        };
        let missing = cni::missing_plugins(&config.cni_bin_dir);
        if !missing.is_empty() {
            return Err(format!(
                "CNI plugins {} not found in {}: install them: apt-get install containernetworking-plugins",
                missing.join(", "),
                config.cni_bin_dir.display()
            ));
        }
        if config.bridge.is_empty() || config.bridge.len() > 15 {
            return Err(format!(
                "bridge name {:?} must have 1 to 15 characters",
                config.bridge
            ));
        }
        if config.cgroup_parent.trim_matches('/').is_empty() {
            return Err("the cgroup parent must not be empty".to_string());
        }
        if !config.pod_cidr.contains('/') {
            return Err(format!(
                "pod CIDR {:?} is not a CIDR (e.g. 10.244.0.0/24)",
                config.pod_cidr
            ));
        }
        let state_dir = &config.state_dir;
        for d in ["containers", "pods", "logs", "runc-state", "cni"] {
            std::fs::create_dir_all(state_dir.join(d))
                .map_err(|e| format!("failed to create {}: {e}", state_dir.join(d).display()))?;
        }
        {
            use std::os::unix::fs::PermissionsExt;
            // Bundles hold the containers' env (secrets included).
            let _ = std::fs::set_permissions(
                state_dir.join("containers"),
                std::fs::Permissions::from_mode(0o700),
            );
        }
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            state_dir: state_dir.clone(),
            images: config.images.clone(),
            runc,
            runc_root: state_dir.join("runc-state"),
            network: cni::Network {
                bin_dir: config.cni_bin_dir.clone(),
                bridge: config.bridge.clone(),
                subnet: config.pod_cidr.clone(),
                ipam_dir: state_dir.join("cni"),
            },
            cgroup_parent: config.cgroup_parent.clone(),
            node_ip: config.node_ip.clone(),
            insecure_registries: config.insecure_registries.clone(),
            shim: config.shim.clone(),
            cgroup_ns: cgroups::is_unified(),
            memsw: cgroups::v1_memsw_available(),
            exits: broadcast::channel(1024).0,
            table: Mutex::new(HashMap::new()),
            pod_locks: Mutex::new(HashMap::new()),
            background_started: AtomicBool::new(false),
            shutdown: shutdown_rx,
        });
        inner
            .load()
            .map_err(|e| format!("failed to read {}: {e}", inner.containers_dir().display()))?;
        inner.delete_orphan_containers();
        let rt = RuncRuntime {
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

    /// runc's `--root`.
    pub fn runc_root(&self) -> &Path {
        &self.inner.runc_root
    }

    /// The cgroup (relative to each hierarchy's root) of a pod.
    pub fn pod_cgroup(&self, pod: &PodRef) -> String {
        self.inner.pod_cgroup(&pod.uid)
    }

    /// The pid (on the node) of a running instance's main process.
    pub fn pid(&self, id: &str) -> Option<i32> {
        let e = self.inner.find(id)?;
        if e.exited().is_some() {
            return None;
        }
        e.started().map(|s| s.pid)
    }

    /// Starts polling re-adopted containers for their exits, once, as soon as a tokio runtime
    /// is available.
    fn ensure_background(&self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        if self.inner.background_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let any = lock(&self.inner.table)
            .values()
            .any(|e| e.adopted && e.exited().is_none());
        if any {
            tokio::spawn(poll_adopted(self.inner.clone()));
        }
        tokio::spawn(collect_images(self.inner.images.clone()));
    }

    fn lookup(&self, id: &str) -> Result<Arc<Entry>, String> {
        self.inner
            .find(id)
            .ok_or_else(|| format!("container \"{id}\" not found"))
    }

    /// SIGKILLs a running instance and waits for its exit.
    async fn kill_now(&self, entry: &Entry) -> Option<Exit> {
        if let Some(e) = entry.exited() {
            return Some(e);
        }
        if entry.lost.load(Ordering::SeqCst) {
            let _ = self.inner.runc_quiet(&["kill", &entry.key, "KILL"]).await;
            let _ = self
                .inner
                .runc_quiet(&["delete", "--force", &entry.key])
                .await;
            let exit = unknown_exit(
                entry.started().map(|s| s.started_at),
                "the container's shim was gone when the agent started",
            );
            let dir = self.inner.container_dir(&entry.key);
            let _ = records::write(&dir, records::EXIT, &ExitRecord::of(&exit, false));
            self.inner.finish(entry, exit.clone(), true);
            return Some(exit);
        }
        // Repeated: a container still being created by its shim only exists for runc later.
        let deadline = tokio::time::Instant::now() + KILL_WAIT;
        loop {
            let _ = self.inner.runc_quiet(&["kill", &entry.key, "KILL"]).await;
            if let Some(e) = wait_exit(&entry.exit, Duration::from_secs(1)).await {
                return Some(e);
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
        }
    }

    /// The pod's lock (sandbox creation and removal).
    fn pod_lock(&self, uid: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.inner.pod_locks)
            .entry(uid.to_string())
            .or_default()
            .clone()
    }

    fn forget_pod_lock(&self, uid: &str) {
        let mut locks = lock(&self.inner.pod_locks);
        if locks.get(uid).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(uid);
        }
    }

    /// CNI DEL of a pod (bridge, then loopback), with the configuration it was added with.
    async fn network_down(&self, uid: &str, record: Option<&SandboxRecord>) -> Result<(), String> {
        if record.is_some_and(|r| r.host_network) {
            return Ok(());
        }
        let ns = self.inner.pod_dir(uid).join("ns").join("net");
        let netns = if sys::is_ns_mount(&ns) {
            ns.display().to_string()
        } else {
            String::new()
        };
        let (cid, conf) = match record {
            Some(r) => (
                r.cni_container_id.clone(),
                r.cni_conf
                    .clone()
                    .unwrap_or_else(|| self.inner.network.bridge_conf()),
            ),
            None => (id_component(uid), self.inner.network.bridge_conf()),
        };
        let bin = &self.inner.network.bin_dir;
        cni::invoke(bin, &conf, "DEL", &cid, &netns, "eth0").await?;
        if !netns.is_empty() {
            let _ = cni::invoke(bin, &cni::loopback_conf(), "DEL", &cid, &netns, "lo").await;
        }
        Ok(())
    }

    /// Removes what a sandbox left: network, namespaces, cgroups, the pod directory.
    async fn teardown_sandbox(&self, uid: &str) -> Result<(), String> {
        let pod_dir = self.inner.pod_dir(uid);
        let record: Option<SandboxRecord> = records::read(&pod_dir, "sandbox.json");
        if record.is_some() || pod_dir.exists() {
            self.network_down(uid, record.as_ref()).await?;
        }
        sandbox::remove_namespaces(&pod_dir.join("ns"))?;
        cgroups::remove_tree(&self.inner.pod_cgroup(uid))?;
        match std::fs::remove_dir_all(&pod_dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("failed to remove {}: {e}", pod_dir.display())),
        }
    }

    async fn build_sandbox(&self, pod: &PodRef, config: &SandboxConfig) -> Result<String, String> {
        let pod_dir = self.inner.pod_dir(&pod.uid);
        std::fs::create_dir_all(&pod_dir)
            .map_err(|e| format!("failed to create {}: {e}", pod_dir.display()))?;
        let hostname = pod_hostname(if config.hostname.is_empty() {
            &pod.name
        } else {
            &config.hostname
        });
        let ns_dir = pod_dir.join("ns");
        {
            let ns_dir = ns_dir.clone();
            let hostname = hostname.clone();
            let host_network = config.host_network;
            tokio::task::spawn_blocking(move || {
                sandbox::create_namespaces(&ns_dir, &hostname, host_network)
            })
            .await
            .map_err(|e| format!("the namespace task failed: {e}"))??;
        }
        let cid = id_component(&pod.uid);
        let (pod_ip, cni_conf) = if config.host_network {
            (self.inner.node_ip.clone(), None)
        } else {
            let netns = ns_dir.join("net").display().to_string();
            let bin = &self.inner.network.bin_dir;
            cni::invoke(bin, &cni::loopback_conf(), "ADD", &cid, &netns, "lo").await?;
            let conf = self.inner.network.bridge_conf();
            let result = cni::invoke(bin, &conf, "ADD", &cid, &netns, "eth0").await?;
            let ip = cni::pod_ip(&result)
                .ok_or_else(|| format!("the CNI bridge plugin returned no IP address: {result}"))?;
            (ip, Some(conf))
        };
        let record = SandboxRecord {
            uid: pod.uid.clone(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            hostname,
            host_network: config.host_network,
            pod_ip: pod_ip.clone(),
            cni_container_id: cid,
            cni_conf,
        };
        sandbox::write_pod_files(&pod_dir, &record)?;
        records::write(&pod_dir, "sandbox.json", &record)
            .map_err(|e| format!("failed to write the sandbox record: {e}"))?;
        Ok(pod_ip)
    }

    /// Creates the container's directory, bundle and records; returns its key and the shim
    /// command to run.
    async fn prepare(
        &self,
        pod: &PodRef,
        config: &ContainerConfig,
    ) -> Result<(Arc<Entry>, PathBuf), StartError> {
        let create = |m: String| StartError::Create(m);
        let sandbox_rec: SandboxRecord =
            records::read(&self.inner.pod_dir(&pod.uid), "sandbox.json").ok_or_else(|| {
                create(format!(
                    "the sandbox of pod {}/{} does not exist",
                    pod.namespace, pod.name
                ))
            })?;
        let images = self.inner.images.clone();
        let image = config.image.clone();
        let info = tokio::task::spawn_blocking(move || images.status(&image))
            .await
            .map_err(|e| create(format!("image status failed: {e}")))?
            .map_err(create)?
            .ok_or_else(|| {
                create(format!(
                    "image \"{}\" is not present on the node",
                    config.image
                ))
            })?;
        let img = spec::ImageDefaults {
            entrypoint: info.config.entrypoint.clone(),
            cmd: info.config.cmd.clone(),
            env: info.config.env.clone(),
            working_dir: info.config.working_dir.clone(),
            user: info.config.user.clone(),
        };
        let args = spec::process_args(&config.command, &config.args, &img).map_err(create)?;
        let pod_id = format!("{}_{}({})", pod.name, pod.namespace, pod.uid);
        spec::verify_run_as_non_root(&config.security, img.user.as_deref(), &pod_id, &config.name)
            .map_err(StartError::Config)?;

        // The directory, with a fresh id.
        let (key, dir) = loop {
            let key = random_hex();
            let dir = self.inner.container_dir(&key);
            match std::fs::create_dir(&dir) {
                Ok(()) => break (key, dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(create(format!(
                        "failed to create the container directory: {e}"
                    )));
                }
            }
        };
        let fail = |msg: String| {
            let images = self.inner.images.clone();
            let dir = dir.clone();
            async move {
                let d = dir.clone();
                let _ = tokio::task::spawn_blocking(move || images.release_rootfs(&d)).await;
                let _ = std::fs::remove_dir_all(&dir);
                StartError::Create(msg)
            }
        };

        let rootfs = {
            let images = self.inner.images.clone();
            let image = config.image.clone();
            let d = dir.clone();
            match tokio::task::spawn_blocking(move || images.prepare_rootfs(&image, &d)).await {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => return Err(fail(format!("failed to prepare the rootfs: {e}")).await),
                Err(e) => return Err(fail(format!("failed to prepare the rootfs: {e}")).await),
            }
        };
        let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
        let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
        let user_spec = spec::effective_user(img.user.as_deref(), &config.security);
        let mut user = match spec::resolve_user(Some(&user_spec), &passwd, &group) {
            Ok(u) => u,
            Err(e) => return Err(fail(e).await),
        };
        for g in &config.security.supplemental_groups {
            if let Ok(g) = u32::try_from(*g)
                && g != user.gid
                && !user.additional_gids.contains(&g)
            {
                user.additional_gids.push(g);
            }
        }

        let log_path = self.log_path(pod, &config.name, config.attempt);
        if let Some(parent) = log_path.parent()
            && let Err(e) = std::fs::create_dir_all(parent)
        {
            return Err(fail(format!("failed to create the log directory: {e}")).await);
        }
        let pod_dir = self.inner.pod_dir(&pod.uid);
        let ns_dir = pod_dir.join("ns");
        let namespaces = if sandbox_rec.host_network {
            spec::PodNamespaces {
                net: None,
                ipc: Some(ns_dir.join("ipc")),
                uts: None,
            }
        } else {
            spec::PodNamespaces {
                net: Some(ns_dir.join("net")),
                ipc: Some(ns_dir.join("ipc")),
                uts: Some(ns_dir.join("uts")),
            }
        };
        let hostname = if sandbox_rec.host_network {
            sandbox::node_hostname()
        } else {
            sandbox_rec.hostname.clone()
        };
        let cgroups_path = format!("{}/{key}", self.inner.pod_cgroup(&pod.uid));
        let oci = spec::build(&spec::SpecInput {
            args,
            env: spec::merge_env(&hostname, &img.env, &config.env),
            cwd: spec::working_dir(config.working_dir.as_deref(), img.working_dir.as_deref()),
            user,
            terminal: config.tty,
            rootfs: &rootfs,
            namespaces,
            cgroup_ns: self.inner.cgroup_ns,
            limit_swap: self.inner.memsw,
            pod_files: sandbox::pod_files(&pod_dir),
            volumes: &config.mounts,
            cgroups_path: cgroups_path.clone(),
            resources: &config.resources,
        });
        let id = format!("runc://{key}");
        let meta = Meta {
            id: id.clone(),
            namespace: pod.namespace.clone(),
            pod_name: pod.name.clone(),
            pod_uid: pod.uid.clone(),
            container: config.name.clone(),
            attempt: config.attempt,
            image: reported_image_name(&config.image),
            image_id: info.repo_digest.clone().unwrap_or_else(|| info.id.clone()),
            log_path: log_path.clone(),
            cgroups_path: cgroups_path.clone(),
            created_at: Timestamp::now(),
        };
        let shim_spec = ShimSpec {
            runc: self.inner.runc.clone(),
            root: self.inner.runc_root.clone(),
            id: key.clone(),
            log_path,
            cgroups_path,
            tty: config.tty,
            stdin: config.stdin,
        };
        let written = records::write(&dir, "config.json", &oci)
            .and_then(|()| records::write(&dir, records::SHIM_SPEC, &shim_spec))
            .and_then(|()| records::write(&dir, records::META, &meta));
        if let Err(e) = written {
            return Err(fail(format!("failed to write the container bundle: {e}")).await);
        }
        let entry = Entry::new(key, meta, false, None);
        lock(&self.inner.table).insert(id, entry.clone());
        Ok((entry, dir))
    }
}

impl Drop for RuncRuntime {
    fn drop(&mut self) {
        // Stops the polling of adopted containers. Shims keep running and record exits.
        let _ = self.shutdown.send(true);
    }
}

/// Polls re-adopted containers until none is left running.
async fn poll_adopted(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.clone();
    loop {
        let pending: Vec<Arc<Entry>> = lock(&inner.table)
            .values()
            .filter(|e| e.adopted && e.exited().is_none())
            .cloned()
            .collect();
        if pending.is_empty() {
            return;
        }
        for entry in pending {
            let dir = inner.container_dir(&entry.key);
            if let Some(r) = records::read::<ExitRecord>(&dir, records::EXIT) {
                if entry.started().is_none() {
                    *lock(&entry.started) = records::read::<Started>(&dir, records::STARTED);
                }
                let exit = r.to_exit();
                let notify = exit.reason != ExitReason::StartError;
                inner.finish(&entry, exit, notify);
                continue;
            }
            if entry.started().is_none() {
                *lock(&entry.started) = records::read::<Started>(&dir, records::STARTED);
            }
            let alive =
                records::read::<ShimPid>(&dir, records::SHIM_PID).is_some_and(|p| p.alive());
            if !alive {
                inner.shim_gone(&entry).await;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(ADOPTED_POLL) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// The master side of an exec's terminal, as async streams. Reads end (0 bytes) once the
/// terminal's other side is closed (EIO).
struct PtyMaster(AsyncFd<std::os::fd::OwnedFd>);

impl PtyMaster {
    fn new(fd: std::os::fd::OwnedFd) -> io::Result<Self> {
        use std::os::fd::AsRawFd;
        common::set_nonblocking(fd.as_raw_fd())?;
        // SAFETY: the AsyncFd owns `fd`, so it stays open and the same for its lifetime.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(PtyMaster(fd))
    }
}

impl AsyncRead for PtyMaster {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        use std::os::fd::AsRawFd;
        loop {
            let mut guard = match self.0.poll_read_ready(cx) {
                Poll::Ready(Ok(g)) => g,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            let unfilled = buf.initialize_unfilled();
            let r = guard.try_io(|fd| read_fd(fd.get_ref().as_raw_fd(), unfilled));
            match r {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyMaster {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        use std::os::fd::AsRawFd;
        loop {
            let mut guard = match self.0.poll_write_ready(cx) {
                Poll::Ready(Ok(g)) => g,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            let r = guard.try_io(|fd| write_fd(fd.get_ref().as_raw_fd(), data));
            match r {
                Ok(res) => return Poll::Ready(res),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[async_trait::async_trait]
impl Runtime for RuncRuntime {
    fn name(&self) -> &'static str {
        "runc"
    }

    async fn create_sandbox(
        &self,
        pod: &PodRef,
        config: &SandboxConfig,
    ) -> Result<Sandbox, String> {
        self.ensure_background();
        let pod_lock = self.pod_lock(&pod.uid);
        let guard = pod_lock.lock().await;
        let pod_dir = self.inner.pod_dir(&pod.uid);
        let existing: Option<SandboxRecord> = records::read(&pod_dir, "sandbox.json");
        let result = match existing {
            Some(r)
                if sys::is_ns_mount(&pod_dir.join("ns").join(if r.host_network {
                    "ipc"
                } else {
                    "net"
                })) =>
            {
                Ok(r.pod_ip)
            }
            // Incomplete, or its namespaces are gone (a reboot): start over.
            _ => match self.teardown_sandbox(&pod.uid).await {
                Err(e) => Err(e),
                Ok(()) => match self.build_sandbox(pod, config).await {
                    Ok(ip) => Ok(ip),
                    Err(e) => {
                        if let Err(e2) = self.teardown_sandbox(&pod.uid).await {
                            tracing::warn!(pod = %pod.uid, error = %e2, "cleaning up a failed sandbox");
                        }
                        Err(e)
                    }
                },
            },
        };
        drop(guard);
        drop(pod_lock);
        self.forget_pod_lock(&pod.uid);
        result.map(|pod_ip| Sandbox { pod_ip })
    }

    async fn remove_sandbox(&self, pod: &PodRef) -> Result<(), String> {
        self.ensure_background();
        let pod_lock = self.pod_lock(&pod.uid);
        let guard = pod_lock.lock().await;
        let result = async {
            let ids: Vec<String> = lock(&self.inner.table)
                .iter()
                .filter(|(_, e)| e.meta.pod_uid == pod.uid)
                .map(|(id, _)| id.clone())
                .collect();
            for id in ids {
                self.remove_container(pod, &id).await?;
            }
            self.teardown_sandbox(&pod.uid).await?;
            let logs = self.inner.pod_log_dir(pod);
            match std::fs::remove_dir_all(&logs) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("failed to remove {}: {e}", logs.display())),
            }
        }
        .await;
        drop(guard);
        drop(pod_lock);
        self.forget_pod_lock(&pod.uid);
        result
    }

    async fn image_status(&self, image: &str) -> ImagePresence {
        let images = self.inner.images.clone();
        let image = image.to_string();
        match tokio::task::spawn_blocking(move || images.status(&image)).await {
            Ok(Ok(Some(_))) => ImagePresence::Present,
            Ok(Ok(None)) => ImagePresence::Absent,
            Ok(Err(e)) => ImagePresence::InspectError(e),
            Err(e) => ImagePresence::InspectError(e.to_string()),
        }
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<(String, String)>,
    ) -> Result<Pulled, String> {
        let opts = PullOptions {
            auth,
            insecure_registries: self.inner.insecure_registries.clone(),
        };
        self.inner
            .images
            .pull(image, &opts)
            .await
            .map(|info| Pulled {
                size_bytes: info.size_bytes,
            })
            .map_err(|e| e.to_string())
    }

    async fn list_images(&self) -> Vec<NodeImage> {
        let images = self.inner.images.clone();
        tokio::task::spawn_blocking(move || images.list())
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|i| NodeImage {
                names: i.names,
                size_bytes: i.size_bytes,
            })
            .collect()
    }

    async fn start_container(
        &self,
        pod: &PodRef,
        config: &ContainerConfig,
    ) -> Result<Instance, StartError> {
        self.ensure_background();
        let (entry, dir) = self.prepare(pod, config).await?;

        let mut cmd = tokio::process::Command::new(&self.inner.shim[0]);
        cmd.args(&self.inner.shim[1..])
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: the closure only calls setsid, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(sys::new_session);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let msg = shim::create_failed(&format!(
                    "failed to start the shim {}: {e}",
                    self.inner.shim[0]
                ));
                let exit = Exit {
                    exit_code: 128,
                    reason: ExitReason::StartError,
                    message: Some(msg.clone()),
                    started_at: None,
                    finished_at: Timestamp::now(),
                };
                let _ = records::write(&dir, records::EXIT, &ExitRecord::of(&exit, false));
                self.inner.finish(&entry, exit, false);
                return Err(StartError::Run(msg));
            }
        };
        {
            let inner = self.inner.clone();
            let entry = entry.clone();
            tokio::spawn(async move {
                let _ = child.wait().await;
                inner.shim_gone(&entry).await;
            });
        }

        let deadline = tokio::time::Instant::now() + START_LIMIT;
        loop {
            if let Some(s) = records::read::<Started>(&dir, records::STARTED) {
                *lock(&entry.started) = Some(s);
                return Ok(Instance {
                    state: InstanceState::Running {
                        started_at: s.started_at,
                    },
                    ..entry.instance()
                });
            }
            let exit = entry
                .exited()
                .or_else(|| records::read::<ExitRecord>(&dir, records::EXIT).map(|r| r.to_exit()));
            if let Some(exit) = exit {
                if exit.reason == ExitReason::StartError {
                    self.inner.finish(&entry, exit.clone(), false);
                    return Err(StartError::Run(exit.message.unwrap_or_default()));
                }
                return Ok(Instance {
                    state: InstanceState::Exited(exit),
                    ..entry.instance()
                });
            }
            if tokio::time::Instant::now() > deadline {
                let _ = self.kill_now(&entry).await;
                return Err(StartError::Run(shim::create_failed(&format!(
                    "the container did not start within {START_LIMIT:?}"
                ))));
            }
            tokio::time::sleep(START_POLL).await;
        }
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
        let _ = self.inner.runc_quiet(&["kill", &entry.key, "TERM"]).await;
        if let Some(e) = wait_exit(&entry.exit, grace).await {
            return Ok(e);
        }
        self.kill_now(&entry)
            .await
            .ok_or_else(|| format!("container \"{id}\" did not exit after SIGKILL"))
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
        check_exec_state(&entry)?;
        if argv.first().is_none_or(|p| p.is_empty()) {
            return Err("exec: no command given".into());
        }
        let dir = self.inner.container_dir(&entry.key);
        let tag = &random_hex()[..16];
        let log = dir.join(format!("exec-{tag}.log"));
        let pid_file = dir.join(format!("exec-{tag}.pid"));
        let (reader, writer) = io::pipe().map_err(|e| format!("failed to create a pipe: {e}"))?;
        let writer2 = writer
            .try_clone()
            .map_err(|e| format!("failed to create a pipe: {e}"))?;
        let mut cmd = self.inner.runc_cmd();
        cmd.arg("--log")
            .arg(&log)
            .args(["--log-format", "json", "exec", "--pid-file"])
            .arg(&pid_file)
            .arg(&entry.key)
            .args(argv)
            .stdout(writer)
            .stderr(writer2);
        let spawned = cmd.spawn();
        drop(cmd);
        let mut child = spawned.map_err(|e| format!("failed to run runc exec: {e}"))?;

        let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(reader.into())
            .map_err(|e| format!("failed to read the command's output: {e}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = output.clone();
        let mut collector = tokio::spawn(async move {
            let Ok(mut reader) = reader else { return };
            let mut buf = [0u8; 4096];
            loop {
                let n = match reader.read(&mut buf).await {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => 0,
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
                // runc forwards no SIGKILL: kill the command itself, then runc.
                if let Some(pid) = std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                {
                    sys::kill(pid, libc::SIGKILL);
                }
                let s = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = child.start_kill();
                        child.wait().await
                    }
                };
                (s, true)
            }
        };
        if tokio::time::timeout(EXEC_OUTPUT_GRACE, &mut collector)
            .await
            .is_err()
        {
            collector.abort();
        }
        let runc_error = records::runc_error(&log);
        let _ = std::fs::remove_file(&log);
        let _ = std::fs::remove_file(&pid_file);
        let exit_code =
            status_code(status.map_err(|e| format!("failed to wait for runc exec: {e}"))?);
        if let Some(msg) = runc_error.filter(|_| !timed_out) {
            if entry.exited().is_some() {
                return Err(
                    "failed to exec in container: container is in CONTAINER_EXITED state".into(),
                );
            }
            let not_found = msg.contains("executable file not found")
                || msg.contains("no such file or directory");
            return Ok(ExecResult {
                exit_code: if not_found { 127 } else { 126 },
                output: format!("OCI runtime exec failed: {msg}: unknown"),
                timed_out: false,
            });
        }
        let output = std::mem::take(&mut *lock(&output));
        Ok(ExecResult {
            exit_code,
            output: String::from_utf8_lossy(&output).into_owned(),
            timed_out,
        })
    }

    async fn exec_stream(
        &self,
        _pod: &PodRef,
        id: &str,
        argv: &[String],
        streams: ExecStreams,
    ) -> Result<ExecProcess, String> {
        use std::process::Stdio;
        self.ensure_background();
        let entry = self.lookup(id)?;
        check_exec_state(&entry)?;
        if argv.first().is_none_or(|p| p.is_empty()) {
            return Err("exec: no command given".into());
        }
        let mut cmd = self.inner.runc_cmd();
        cmd.arg("exec");
        if streams.tty {
            // runc copies between its own terminal and the container's: give it one (as its
            // controlling terminal, so a resize reaches it as SIGWINCH).
            let (master, slave) =
                common::openpty().map_err(|e| format!("failed to open a terminal: {e}"))?;
            let dup = |fd: &std::os::fd::OwnedFd| {
                fd.try_clone()
                    .map_err(|e| format!("failed to duplicate the terminal: {e}"))
            };
            cmd.arg("-t")
                .arg(&entry.key)
                .args(argv)
                .stdin(Stdio::from(dup(&slave)?))
                .stdout(Stdio::from(dup(&slave)?))
                .stderr(Stdio::from(slave));
            // SAFETY: the closure calls only setsid and ioctl, which are async-signal-safe.
            unsafe {
                cmd.pre_exec(sys::new_session_with_ctty);
            }
            let spawned = cmd.spawn();
            drop(cmd);
            let mut child = spawned.map_err(|e| format!("failed to run runc exec: {e}"))?;
            let resize_fd = dup(&master)?;
            let reader = PtyMaster::new(dup(&master)?)
                .map_err(|e| format!("failed to watch the terminal: {e}"))?;
            let writer =
                PtyMaster::new(master).map_err(|e| format!("failed to watch the terminal: {e}"))?;
            let resize: Box<dyn Fn(u16, u16) + Send + Sync> = Box::new(move |cols, rows| {
                use std::os::fd::AsRawFd;
                let _ = common::set_winsize(resize_fd.as_raw_fd(), cols, rows);
            });
            return Ok(ExecProcess {
                stdin: streams
                    .stdin
                    .then(|| Box::pin(writer) as Pin<Box<dyn AsyncWrite + Send>>),
                stdout: if streams.stdout {
                    Some(Box::pin(reader))
                } else {
                    // Nobody reads the terminal: drain it, or the command blocks when it fills.
                    tokio::spawn(async move {
                        let mut reader = reader;
                        let mut sink = tokio::io::sink();
                        let _ = tokio::io::copy(&mut reader, &mut sink).await;
                    });
                    None
                },
                stderr: None,
                resize: Some(resize),
                exit: Box::pin(async move {
                    child
                        .wait()
                        .await
                        .map(status_code)
                        .map_err(|e| format!("failed to wait for runc exec: {e}"))
                }),
            });
        }
        let pick = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
        cmd.arg(&entry.key)
            .args(argv)
            .stdin(pick(streams.stdin))
            .stdout(pick(streams.stdout))
            .stderr(pick(streams.stderr));
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("failed to run runc exec: {e}"))?;
        let stdin = child
            .stdin
            .take()
            .map(|s| Box::pin(s) as Pin<Box<dyn AsyncWrite + Send>>);
        let stdout = child
            .stdout
            .take()
            .map(|s| Box::pin(s) as Pin<Box<dyn AsyncRead + Send>>);
        let stderr = child
            .stderr
            .take()
            .map(|s| Box::pin(s) as Pin<Box<dyn AsyncRead + Send>>);
        Ok(ExecProcess {
            stdin,
            stdout,
            stderr,
            resize: None,
            exit: Box::pin(async move {
                child
                    .wait()
                    .await
                    .map(status_code)
                    .map_err(|e| format!("failed to wait for runc exec: {e}"))
            }),
        })
    }

    fn log_path(&self, pod: &PodRef, container: &str, attempt: u32) -> PathBuf {
        self.inner
            .pod_log_dir(pod)
            .join(safe_component(container))
            .join(format!("{attempt}.log"))
    }

    async fn list(&self) -> Vec<Known> {
        self.ensure_background();
        let entries: Vec<Arc<Entry>> = lock(&self.inner.table).values().cloned().collect();
        let mut known: Vec<Known> = entries
            .iter()
            .map(|e| Known {
                pod_uid: e.meta.pod_uid.clone(),
                container: e.meta.container.clone(),
                instance: e.instance(),
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
        let _ = self
            .inner
            .runc_quiet(&["delete", "--force", &entry.key])
            .await;
        let dir = self.inner.container_dir(&entry.key);
        let images = self.inner.images.clone();
        let d = dir.clone();
        tokio::task::spawn_blocking(move || images.release_rootfs(&d))
            .await
            .map_err(|e| format!("failed to release the rootfs of \"{id}\": {e}"))?
            .map_err(|e| format!("failed to release the rootfs of \"{id}\": {e}"))?;
        lock(&self.inner.table).remove(id);
        remove_container_dir(&dir, id)
    }

    fn exits(&self) -> broadcast::Receiver<ExitNotice> {
        self.inner.exits.subscribe()
    }
}

/// Exec needs a running container.
fn check_exec_state(entry: &Entry) -> Result<(), String> {
    common::check_exec_state(entry.exited().is_some(), entry.lost.load(Ordering::SeqCst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_names() {
        assert_eq!(
            reported_image_name("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            reported_image_name("busybox:1.36"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(
            reported_image_name("127.0.0.1:5000/busybox:1"),
            "127.0.0.1:5000/busybox:1"
        );
        assert_eq!(reported_image_name("Bad Name"), "Bad Name");
    }

    #[test]
    fn hostnames() {
        assert_eq!(pod_hostname("web-0"), "web-0");
        let long = format!("{}-b", "a".repeat(62));
        assert_eq!(pod_hostname(&long), "a".repeat(62));
        assert_eq!(pod_hostname(&"x".repeat(70)).len(), 63);
    }

    #[test]
    fn components() {
        assert_eq!(safe_component("a/b"), "a_b");
        assert_eq!(safe_component(".."), "_..");
        assert_eq!(id_component("1234-abcd/x y"), "1234-abcd_x_y");
    }
}
