//! Which container runtime a node agent uses (`--runtime`), and building it. `auto` picks runc
//! when it can run real containers here (root, runc and the CNI plugins installed) and says why
//! when it falls back to the host runtime.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, ValueEnum};
use skiff_agent::proxy::ProxyConfig;
use skiff_agent::runtime::Runtime;
use skiff_agent::runtime::host::HostRuntime;
use skiff_agent::runtime::runc::{RuncConfig, RuncRuntime};
use skiff_images::ImageStore;

/// The first argument that makes the binary a runc shim (see `skiff_agent::runtime::runc`).
pub const SHIM_SUBCOMMAND: &str = "runc-shim";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// runc when root, runc and the CNI plugins are present; the host runtime otherwise.
    Auto,
    /// Containers as plain processes on the node: no image, no isolation (development).
    Host,
    /// Real containers under runc from OCI images, with pod networking through CNI.
    Runc,
}

#[derive(Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// The container runtime of the node agent.
    #[arg(long, value_enum, default_value_t = Kind::Auto)]
    pub runtime: Kind,
    /// A registry (host[:port]) to pull from over plain HTTP; loopback registries always may.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// The address range of this node's pods (runc runtime).
    #[arg(long, default_value = "10.244.0.0/24")]
    pub pod_cidr: String,
    /// The Linux bridge the node's pods are attached to (runc runtime).
    #[arg(long, default_value = "skiff0")]
    pub cni_bridge: String,
    /// The interface the service proxy puts cluster IPs on (runc runtime; `lo` with a label
    /// where the kernel has no dummy links).
    #[arg(long, default_value = "skiff-svc")]
    pub service_interface: String,
    /// Where the CNI plugins are (runc runtime).
    #[arg(long, default_value = "/usr/lib/cni")]
    pub cni_bin_dir: PathBuf,
}

/// The node's image store, shared by the runc runtime and `skiff image`.
pub fn image_store(agent_state_dir: &Path) -> Result<ImageStore, String> {
    let dir = agent_state_dir.join("images");
    ImageStore::open(&dir)
        .map_err(|e| format!("cannot open the image store {}: {e}", dir.display()))
}

/// The agent's service proxy: node ports on the node IP and 127.0.0.1; cluster IPs too when
/// pods have addresses of their own (runc), since they can then route to them through the node.
pub fn proxy(args: &RuntimeArgs, runtime: &dyn Runtime) -> ProxyConfig {
    ProxyConfig {
        cluster_ip: runtime.name() == "runc",
        dummy_interface: args.service_interface.clone(),
        ..ProxyConfig::default()
    }
}

/// Builds the runtime `args` ask for; the string says which one and why.
pub fn build(
    args: &RuntimeArgs,
    state_dir: &Path,
    node_ip: &str,
) -> Result<(Arc<dyn Runtime>, String), String> {
    let kind = match args.runtime {
        Kind::Auto => match runc_unavailable(args) {
            None => Kind::Runc,
            Some(why) => {
                let rt = host(state_dir, node_ip)?;
                return Ok((rt, format!("host ({why}; --runtime runc to insist)")));
            }
        },
        k => k,
    };
    match kind {
        Kind::Runc => {
            let shim = std::env::current_exe()
                .map_err(|e| format!("cannot find the skiff binary for the runc shim: {e}"))?;
            let cfg = RuncConfig {
                state_dir: state_dir.join("runc"),
                images: image_store(state_dir)?,
                runc_binary: find_in_path("runc").unwrap_or_else(|| PathBuf::from("runc")),
                cni_bin_dir: args.cni_bin_dir.clone(),
                pod_cidr: args.pod_cidr.clone(),
                bridge: args.cni_bridge.clone(),
                cgroup_parent: "skiff".into(),
                node_ip: node_ip.to_string(),
                insecure_registries: args.insecure_registries.clone(),
                shim: vec![
                    shim.to_string_lossy().into_owned(),
                    SHIM_SUBCOMMAND.to_string(),
                ],
            };
            let rt =
                RuncRuntime::new(cfg).map_err(|e| format!("cannot start the runc runtime: {e}"))?;
            Ok((Arc::new(rt), "runc".into()))
        }
        _ => Ok((host(state_dir, node_ip)?, "host".into())),
    }
}

fn host(state_dir: &Path, node_ip: &str) -> Result<Arc<dyn Runtime>, String> {
    let dir = state_dir.join("runtime");
    let rt = HostRuntime::new(dir, node_ip.to_string())
        .map_err(|e| format!("cannot start the host runtime: {e}"))?;
    Ok(Arc::new(rt))
}

/// Why runc cannot be used here, or None when it can.
fn runc_unavailable(args: &RuntimeArgs) -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    if find_in_path("runc").is_none() {
        return Some("runc not found: apt-get install runc".into());
    }
    for plugin in ["bridge", "host-local", "loopback"] {
        if !args.cni_bin_dir.join(plugin).exists() {
            return Some(format!(
                "CNI plugin {plugin} not in {}: apt-get install containernetworking-plugins",
                args.cni_bin_dir.display()
            ));
        }
    }
    None
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
