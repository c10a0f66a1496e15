//! The agent's Node: registration, status and heartbeats.
//!
//! On start the agent creates its Node (or, when it exists, updates its labels and status), with
//! the machine's capacity, allocatable (§11), addresses, the agent's log endpoint
//! (`daemonEndpoints.kubeletEndpoint.Port`), `nodeInfo` and the kubelet's conditions (§3.6). Then
//! it renews its Lease in `kube-node-lease` every 10 s (what the node lifecycle controller
//! watches), and every 10 s compares the Node's status with what it would report, writing the
//! status when it differs (for example after the controller marked the node `Unknown`, or the
//! runtime's images changed) or when the last report is 60 s old.
//!
//! `status.images` is the runtime's image list ([`Runtime::list_images`]) as the kubelet
//! reports it: largest first, at most [`MAX_IMAGES`] images of at most [`MAX_NAMES_PER_IMAGE`]
//! names each.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints,
    NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::events::EventType;
use crate::memory::whole_seconds;
use crate::recorder::Recorder;
use crate::runtime::{NodeImage, Runtime};

/// `nodeInfo.kubeletVersion`.
pub const KUBELET_VERSION: &str = "v1.32.0-skiff";
/// The namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// `spec.leaseDurationSeconds` of the node Lease.
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// How often the Lease is renewed and the status checked.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// The status is written at least this often.
pub const STATUS_REPORT: SignedDuration = SignedDuration::from_secs(60);
/// `maxPods`.
pub const MAX_PODS: u32 = 110;
/// `nodeStatusMaxImages`: the most images `status.images` lists.
pub const MAX_IMAGES: usize = 50;
/// The most names listed per image.
pub const MAX_NAMES_PER_IMAGE: usize = 5;
/// The hard eviction threshold `memory.available<100Mi`, subtracted from allocatable memory.
const MEMORY_EVICTION_KI: u64 = 100 * 1024;

/// What the Node says about this agent.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub ip: String,
    /// The agent's HTTPS port (logs).
    pub port: u16,
    /// Measured for `ephemeral-storage`.
    pub state_dir: PathBuf,
    /// `host`, `runc`, `sim`: prefix of `containerRuntimeVersion`.
    pub runtime_name: String,
}

/// The machine, read once.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub cpus: u32,
    pub memory_ki: u64,
    /// Bytes of the state dir's filesystem, when it could be measured.
    pub storage_bytes: Option<u64>,
    pub hostname: String,
    pub os_image: String,
    pub kernel_version: String,
    pub machine_id: String,
    pub boot_id: String,
    pub system_uuid: String,
    pub architecture: String,
}

impl Machine {
    /// Reads the machine's facts from /proc, /sys and /etc (missing ones are left empty).
    pub fn read(state_dir: &Path) -> Machine {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let machine_id = read("/etc/machine-id");
        let system_uuid = Some(read("/sys/class/dmi/id/product_uuid"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| machine_id.clone());
        Machine {
            cpus: cpu_count(),
            memory_ki: mem_total_ki(&read("/proc/meminfo")),
            storage_bytes: filesystem_bytes(state_dir),
            hostname: hostname(),
            os_image: os_image(&read("/etc/os-release")),
            kernel_version: read("/proc/sys/kernel/osrelease"),
            machine_id,
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            system_uuid,
            architecture: go_arch(std::env::consts::ARCH).to_string(),
        }
    }

    /// `status.capacity`.
    pub fn capacity(&self) -> BTreeMap<String, Quantity> {
        let mut m = BTreeMap::new();
        m.insert("cpu".into(), Quantity(self.cpus.to_string()));
        m.insert("memory".into(), Quantity(format!("{}Ki", self.memory_ki)));
        m.insert("pods".into(), Quantity(MAX_PODS.to_string()));
        if let Some(b) = self.storage_bytes {
            m.insert(
                "ephemeral-storage".into(),
                Quantity(format!("{}Ki", b / 1024)),
            );
        }
        m
    }

    /// `status.allocatable`: capacity minus the hard eviction thresholds (memory 100Mi,
    /// nodefs 10%).
    pub fn allocatable(&self) -> BTreeMap<String, Quantity> {
        let mut m = self.capacity();
        m.insert(
            "memory".into(),
            Quantity(format!(
                "{}Ki",
                self.memory_ki.saturating_sub(MEMORY_EVICTION_KI)
            )),
        );
        if let Some(b) = self.storage_bytes {
            m.insert(
                "ephemeral-storage".into(),
                Quantity((b - b / 10).to_string()),
            );
        }
        m
    }
}

/// The machine's hostname (lowercase, as node names are), `localhost` when unknown.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_lowercase())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

fn cpu_count() -> u32 {
    let from_sys = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| count_cpu_list(s.trim()));
    from_sys
        .or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .map(|n| n.get() as u32)
        })
        .unwrap_or(1)
}

/// Counts a Linux CPU list such as `0-3,6,8-9`.
fn count_cpu_list(s: &str) -> Option<u32> {
    let mut n = 0;
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                n += b.checked_sub(a)? + 1;
            }
            None => {
                part.parse::<u32>().ok()?;
                n += 1;
            }
        }
    }
    (n > 0).then_some(n)
}

/// `MemTotal` of /proc/meminfo, in KiB.
fn mem_total_ki(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `PRETTY_NAME` of /etc/os-release.
fn os_image(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".to_string())
}

/// Go's GOARCH for Rust's target arch.
pub fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// Total bytes of the filesystem holding `dir`.
fn filesystem_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a valid NUL-terminated string and `st` points to writable memory of the
    // right type; statvfs only writes into it.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)]
    let bytes = (st.f_blocks as u64).saturating_mul(st.f_frsize as u64);
    (bytes > 0).then_some(bytes)
}

/// The conditions the agent reports (kubelet order), all healthy.
fn conditions(now: Timestamp, old: Option<&NodeStatus>) -> Vec<NodeCondition> {
    let want = [
        (
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        (
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        (
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        (
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
    ];
    let now = Time(whole_seconds(now));
    want.iter()
        .map(|(type_, status, reason, message)| {
            let previous = old
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == *type_));
            let transition = previous
                .filter(|c| c.status == *status)
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            NodeCondition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: Some(reason.to_string()),
                message: Some(message.to_string()),
                last_heartbeat_time: Some(now.clone()),
                last_transition_time: Some(transition),
            }
        })
        .collect()
}

/// `status.images` from the runtime's images: largest first (stable for equal sizes), at most
/// [`MAX_IMAGES`], each with at most [`MAX_NAMES_PER_IMAGE`] names; nameless images are left out.
pub fn node_images(images: &[NodeImage]) -> Vec<ContainerImage> {
    let mut list: Vec<&NodeImage> = images.iter().filter(|i| !i.names.is_empty()).collect();
    list.sort_by_key(|i| std::cmp::Reverse(i.size_bytes));
    list.into_iter()
        .take(MAX_IMAGES)
        .map(|i| ContainerImage {
            names: Some(i.names.iter().take(MAX_NAMES_PER_IMAGE).cloned().collect()),
            size_bytes: Some(i.size_bytes.min(i64::MAX as u64) as i64),
        })
        .collect()
}

/// The status the agent reports, given the runtime's images and what the Node shows now (for
/// transition times).
pub fn desired_status(
    cfg: &NodeConfig,
    m: &Machine,
    images: &[NodeImage],
    now: Timestamp,
    old: Option<&NodeStatus>,
) -> NodeStatus {
    NodeStatus {
        capacity: Some(m.capacity()),
        allocatable: Some(m.allocatable()),
        conditions: Some(conditions(now, old)),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: cfg.ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: m.hostname.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(cfg.port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            machine_id: m.machine_id.clone(),
            system_uuid: m.system_uuid.clone(),
            boot_id: m.boot_id.clone(),
            kernel_version: m.kernel_version.clone(),
            os_image: m.os_image.clone(),
            container_runtime_version: format!(
                "{}://{}",
                cfg.runtime_name,
                env!("CARGO_PKG_VERSION")
            ),
            kubelet_version: KUBELET_VERSION.into(),
            kube_proxy_version: String::new(),
            operating_system: "linux".into(),
            architecture: m.architecture.clone(),
            ..NodeSystemInfo::default()
        }),
        images: Some(node_images(images)),
        ..NodeStatus::default()
    }
}

/// The labels the agent puts on its Node.
pub fn labels(cfg: &NodeConfig, m: &Machine) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), cfg.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), m.architecture.clone()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "beta.kubernetes.io/arch".to_string(),
            m.architecture.clone(),
        ),
    ])
}

/// True when `old` says something else than `new` (heartbeat times aside).
fn status_differs(old: &NodeStatus, new: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        (
            s.capacity,
            s.allocatable,
            s.conditions,
            s.addresses,
            s.daemon_endpoints,
            s.node_info,
            s.images.unwrap_or_default(),
        )
    };
    strip(old) != strip(new)
}

/// Registers the node and keeps its Lease and status fresh; runs until aborted. Errors are
/// logged and retried.
pub async fn run(
    client: kube::Client,
    cfg: NodeConfig,
    runtime: Arc<dyn Runtime>,
    recorder: Recorder,
) {
    let machine = {
        let dir = cfg.state_dir.clone();
        tokio::task::spawn_blocking(move || Machine::read(&dir))
            .await
            .unwrap_or_else(|_| Machine::read(Path::new("/")))
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    recorder.record_node(EventType::Normal, "Starting", "Starting kubelet.".into());

    let mut retry = Duration::from_millis(200);
    let mut uid = loop {
        let images = runtime.list_images().await;
        match register(&nodes, &cfg, &machine, &images, &recorder).await {
            Ok(u) => break u,
            Err(e) => {
                tracing::warn!(node = %cfg.name, error = %e, "cannot register the node; retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(7));
            }
        }
    };
    let mut last_report = Some(Timestamp::now());
    tracing::info!(node = %cfg.name, "node registered");
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if let Err(e) = renew_lease(&leases, &cfg.name, uid.as_deref()).await {
            tracing::warn!(node = %cfg.name, error = %e, "cannot renew the node lease");
        }
        let images = runtime.list_images().await;
        match sync_status(&nodes, &cfg, &machine, &images, last_report, &recorder).await {
            Ok(Sync::Written(u)) => {
                uid = u.or(uid);
                last_report = Some(Timestamp::now());
            }
            Ok(Sync::Unchanged) => {}
            Err(e) => tracing::warn!(node = %cfg.name, error = %e, "cannot update the node status"),
        }
        tick.tick().await;
    }
}

/// Creates the Node, or updates an existing one's labels and status. Returns its UID.
async fn register(
    nodes: &Api<Node>,
    cfg: &NodeConfig,
    m: &Machine,
    images: &[NodeImage],
    recorder: &Recorder,
) -> Result<Option<String>, kube::Error> {
    let now = Timestamp::now();
    let node = Node {
        metadata: ObjectMeta {
            name: Some(cfg.name.clone()),
            labels: Some(labels(cfg, m)),
            annotations: Some(BTreeMap::from([(
                "volumes.kubernetes.io/controller-managed-attach-detach".to_string(),
                "true".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        status: Some(desired_status(cfg, m, images, now, None)),
        ..Node::default()
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(created) => {
            announce_conditions(recorder, &cfg.name);
            Ok(created.metadata.uid)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let patch = json!({"metadata": {"labels": labels(cfg, m)}});
            nodes
                .patch(&cfg.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            let existing = nodes.get_status(&cfg.name).await?;
            let was_ready = is_ready(existing.status.as_ref());
            let status = desired_status(cfg, m, images, now, existing.status.as_ref());
            let written = write_status(nodes, &cfg.name, &status).await?;
            if !was_ready {
                announce_conditions(recorder, &cfg.name);
            }
            Ok(written.metadata.uid)
        }
        Err(e) => Err(e),
    }
}

fn is_ready(status: Option<&NodeStatus>) -> bool {
    status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The kubelet's node events when its conditions (re)appear.
fn announce_conditions(recorder: &Recorder, node: &str) {
    for reason in [
        "NodeHasSufficientMemory",
        "NodeHasNoDiskPressure",
        "NodeHasSufficientPID",
        "NodeReady",
    ] {
        recorder.record_node(
            EventType::Normal,
            reason,
            format!("Node {node} status is now: {reason}"),
        );
    }
}

async fn write_status(
    nodes: &Api<Node>,
    name: &str,
    status: &NodeStatus,
) -> Result<Node, kube::Error> {
    let patch = json!({"status": status});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

enum Sync {
    Written(Option<String>),
    Unchanged,
}

/// Writes the status when it differs from the Node's or the last report is old; re-registers a
/// Node that was deleted.
async fn sync_status(
    nodes: &Api<Node>,
    cfg: &NodeConfig,
    m: &Machine,
    images: &[NodeImage],
    last_report: Option<Timestamp>,
    recorder: &Recorder,
) -> Result<Sync, kube::Error> {
    let now = Timestamp::now();
    let existing = match nodes.get_status(&cfg.name).await {
        Ok(n) => n,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            tracing::info!(node = %cfg.name, "the node was deleted; registering it again");
            return register(nodes, cfg, m, images, recorder)
                .await
                .map(Sync::Written);
        }
        Err(e) => return Err(e),
    };
    let desired = desired_status(cfg, m, images, now, existing.status.as_ref());
    let stale = last_report.is_none_or(|t| now.duration_since(t) >= STATUS_REPORT);
    let differs = existing
        .status
        .as_ref()
        .is_none_or(|old| status_differs(old, &desired));
    if !stale && !differs {
        return Ok(Sync::Unchanged);
    }
    if differs && !is_ready(existing.status.as_ref()) {
        recorder.record_node(
            EventType::Normal,
            "NodeReady",
            format!("Node {} status is now: NodeReady", cfg.name),
        );
    }
    let written = write_status(nodes, &cfg.name, &desired).await?;
    Ok(Sync::Written(written.metadata.uid))
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, a MicroTime.
fn micro_time(t: Timestamp) -> String {
    let secs = Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string();
    format!(
        "{}.{:06}Z",
        secs.trim_end_matches('Z'),
        t.subsec_microsecond().max(0)
    )
}

/// Renews (or creates) `kube-node-lease/<node>`.
pub async fn renew_lease(
    leases: &Api<Lease>,
    node: &str,
    node_uid: Option<&str>,
) -> Result<(), kube::Error> {
    let now = micro_time(Timestamp::now());
    let patch = json!({"spec": {
        "holderIdentity": node,
        "leaseDurationSeconds": LEASE_DURATION_SECONDS,
        "renewTime": now,
    }});
    match leases
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": node, "namespace": LEASE_NAMESPACE},
                "spec": {
                    "holderIdentity": node,
                    "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                    "renewTime": now,
                },
            }))
            .map_err(kube::Error::SerdeError)?;
            let mut lease = lease;
            if let Some(uid) = node_uid {
                lease.metadata.owner_references = Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: node.to_string(),
                    uid: uid.to_string(),
                    ..OwnerReference::default()
                }]);
            }
            match leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            cpus: 4,
            memory_ki: 8_000_000,
            storage_bytes: Some(100 * 1024 * 1024 * 1024),
            hostname: "box".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            kernel_version: "6.1.0".into(),
            machine_id: "m".into(),
            boot_id: "b".into(),
            system_uuid: "u".into(),
            architecture: "amd64".into(),
        }
    }

    fn cfg() -> NodeConfig {
        NodeConfig {
            name: "box".into(),
            ip: "127.0.0.1".into(),
            port: 10250,
            state_dir: PathBuf::from("/tmp"),
            runtime_name: "host".into(),
        }
    }

    #[test]
    fn parses_machine_files() {
        assert_eq!(count_cpu_list("0-3"), Some(4));
        assert_eq!(count_cpu_list("0-3,6,8-9"), Some(7));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(
            mem_total_ki("MemTotal:       16318412 kB\nMemFree: 1 kB\n"),
            16318412
        );
        assert_eq!(
            os_image("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
    }

    #[test]
    fn capacity_and_allocatable() {
        let m = machine();
        let cap = m.capacity();
        assert_eq!(cap["cpu"].0, "4");
        assert_eq!(cap["memory"].0, "8000000Ki");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(cap["ephemeral-storage"].0, "104857600Ki");
        let alloc = m.allocatable();
        assert_eq!(alloc["memory"].0, "7897600Ki");
        assert_eq!(alloc["cpu"].0, "4");
        assert_eq!(alloc["ephemeral-storage"].0, "96636764160");
    }

    #[test]
    fn status_has_kubelet_conditions_and_endpoint() {
        let now = Timestamp::from_second(1_750_000_000).unwrap();
        let s = desired_status(&cfg(), &machine(), &[], now, None);
        let conds = s.conditions.clone().unwrap();
        let summary: Vec<_> = conds
            .iter()
            .map(|c| {
                (
                    c.type_.as_str(),
                    c.status.as_str(),
                    c.reason.as_deref().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                ("PIDPressure", "False", "KubeletHasSufficientPID"),
                ("Ready", "True", "KubeletReady"),
            ]
        );
        assert_eq!(
            conds[3].message.as_deref(),
            Some("kubelet is posting ready status")
        );
        let port = s
            .daemon_endpoints
            .as_ref()
            .unwrap()
            .kubelet_endpoint
            .as_ref();
        assert_eq!(port.unwrap().port, 10250);
        let info = s.node_info.as_ref().unwrap();
        assert_eq!(info.kubelet_version, "v1.32.0-skiff");
        assert_eq!(info.container_runtime_version, "host://0.1.0");

        // A later heartbeat keeps the transition times and differs only in heartbeats.
        let later = desired_status(
            &cfg(),
            &machine(),
            &[],
            now + SignedDuration::from_secs(30),
            Some(&s),
        );
        assert!(!status_differs(&s, &later));
        let c = &later.conditions.as_ref().unwrap()[3];
        assert_eq!(c.last_transition_time, conds[3].last_transition_time);
        assert_ne!(c.last_heartbeat_time, conds[3].last_heartbeat_time);

        // A node marked Unknown by the controller differs.
        let mut unknown = s.clone();
        unknown.conditions.as_mut().unwrap()[3].status = "Unknown".into();
        assert!(status_differs(&unknown, &later));
    }

    #[test]
    fn images_largest_first_capped() {
        let img = |n: usize, size: u64| NodeImage {
            names: (0..n).map(|k| format!("img{size}-{k}")).collect(),
            size_bytes: size,
        };
        let mut list: Vec<NodeImage> = (1..=60).map(|s| img(1, s)).collect();
        list.push(img(7, 1000));
        list.push(img(0, 5000));
        let out = node_images(&list);
        assert_eq!(out.len(), MAX_IMAGES);
        assert_eq!(out[0].size_bytes, Some(1000));
        assert_eq!(
            out[0].names.as_deref().unwrap(),
            [
                "img1000-0",
                "img1000-1",
                "img1000-2",
                "img1000-3",
                "img1000-4"
            ]
        );
        assert_eq!(out[1].size_bytes, Some(60));
        assert_eq!(out[49].size_bytes, Some(12));
        assert!(out.windows(2).all(|w| w[0].size_bytes >= w[1].size_bytes));

        // A changed image list makes the status differ.
        let now = Timestamp::from_second(1_750_000_000).unwrap();
        let a = desired_status(&cfg(), &machine(), &[], now, None);
        let b = desired_status(&cfg(), &machine(), &list, now, Some(&a));
        assert!(status_differs(&a, &b));
        assert_eq!(b.images.as_ref().unwrap().len(), MAX_IMAGES);
    }

    #[test]
    fn micro_times() {
        let t = Timestamp::from_second(1_750_000_000).unwrap() + SignedDuration::from_micros(1234);
        assert_eq!(micro_time(t), "2025-06-15T15:06:40.001234Z");
    }
}
