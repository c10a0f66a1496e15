//! A pod's sandbox without a pause process: its network, IPC and UTS namespaces are created by a
//! short-lived thread and kept alive by bind mounts of the thread's namespace files onto files
//! under `<pod dir>/ns/`; and the files every container of the pod sees at `/etc/hosts`,
//! `/etc/hostname` and `/etc/resolv.conf`.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::sys;

/// The namespaces a pod holds, by their `/proc/<pid>/ns/` names.
pub const NAMESPACES: [&str; 3] = ["net", "ipc", "uts"];

/// What is kept on disk per sandbox (`<pod dir>/sandbox.json`); written last, so its presence
/// means the sandbox is complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub hostname: String,
    pub host_network: bool,
    pub pod_ip: String,
    /// The CNI container id and network configuration the pod was attached with (for DEL).
    pub cni_container_id: String,
    pub cni_conf: Option<Value>,
}

/// Creates the pod's namespaces under `ns_dir`: net, ipc and uts (with `hostname` set), or only
/// ipc for a pod on the host's network.
pub fn create_namespaces(ns_dir: &Path, hostname: &str, host_network: bool) -> Result<(), String> {
    std::fs::create_dir_all(ns_dir)
        .map_err(|e| format!("failed to create {}: {e}", ns_dir.display()))?;
    // The directory becomes its own private mount, so the namespace mounts below neither
    // propagate to other mount namespaces nor receive mounts from them.
    let mounted = sys::mountinfo().iter().any(|m| m.mount_point == ns_dir);
    if !mounted {
        sys::bind_mount(ns_dir, ns_dir)
            .map_err(|e| format!("failed to bind {} onto itself: {e}", ns_dir.display()))?;
    }
    sys::make_private(ns_dir)
        .map_err(|e| format!("failed to make {} private: {e}", ns_dir.display()))?;

    let kinds: Vec<&'static str> = if host_network {
        vec!["ipc"]
    } else {
        NAMESPACES.to_vec()
    };
    for k in &kinds {
        let f = ns_dir.join(k);
        if sys::is_ns_mount(&f) {
            // Left by an earlier attempt: start over.
            let _ = sys::unmount(&f);
        }
        std::fs::File::create(&f).map_err(|e| format!("failed to create {}: {e}", f.display()))?;
    }
    let flags = kinds.iter().fold(0, |acc, k| {
        acc | match *k {
            "net" => libc::CLONE_NEWNET,
            "ipc" => libc::CLONE_NEWIPC,
            _ => libc::CLONE_NEWUTS,
        }
    });
    let dir = ns_dir.to_path_buf();
    let hostname = (!host_network).then(|| hostname.to_string());
    // The thread is dedicated: it leaves the process' namespaces and ends right after.
    let thread = std::thread::Builder::new()
        .name("skiff-pod-ns".into())
        .stack_size(256 * 1024)
        .spawn(move || -> Result<(), String> {
            sys::unshare(flags).map_err(|e| format!("failed to create the pod namespaces: {e}"))?;
            if let Some(h) = &hostname {
                sys::sethostname(h)
                    .map_err(|e| format!("failed to set the hostname {h:?}: {e}"))?;
            }
            let tid = sys::gettid();
            for k in kinds {
                let src = PathBuf::from(format!("/proc/self/task/{tid}/ns/{k}"));
                let dst = dir.join(k);
                sys::bind_mount(&src, &dst)
                    .map_err(|e| format!("failed to bind {} namespace: {e}", dst.display()))?;
            }
            Ok(())
        })
        .map_err(|e| format!("failed to start a namespace thread: {e}"))?;
    thread
        .join()
        .map_err(|_| "the namespace thread panicked".to_string())?
}

/// Unmounts the namespace files and their directory, then removes it. Idempotent.
pub fn remove_namespaces(ns_dir: &Path) -> Result<(), String> {
    let mut errors = Vec::new();
    for k in NAMESPACES {
        let f = ns_dir.join(k);
        for _ in 0..8 {
            match sys::unmount(&f) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    errors.push(format!("failed to unmount {}: {e}", f.display()));
                    break;
                }
            }
        }
    }
    for _ in 0..8 {
        match sys::unmount(ns_dir) {
            Ok(true) => continue,
            Ok(false) => break,
            Err(e) => {
                errors.push(format!("failed to unmount {}: {e}", ns_dir.display()));
                break;
            }
        }
    }
    if errors.is_empty() {
        match std::fs::remove_dir_all(ns_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => errors.push(format!("failed to remove {}: {e}", ns_dir.display())),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// The pod's `/etc/hosts`: localhost entries and the pod's own address.
pub fn hosts_file(pod_ip: &str, hostname: &str) -> String {
    format!(
        "# skiff-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n\
         {pod_ip}\t{hostname}\n"
    )
}

/// The node's hostname.
pub fn node_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Writes `hosts`, `hostname` and `resolv.conf` into `pod_dir`; returns them with the container
/// paths they are bound at.
pub fn write_pod_files(
    pod_dir: &Path,
    record: &SandboxRecord,
) -> Result<Vec<(String, PathBuf)>, String> {
    let (hosts, hostname) = if record.host_network {
        (
            std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
            node_hostname(),
        )
    } else {
        (
            hosts_file(&record.pod_ip, &record.hostname),
            record.hostname.clone(),
        )
    };
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let files = pod_files(pod_dir);
    for ((_, path), content) in files.iter().zip([hosts, format!("{hostname}\n"), resolv]) {
        crate::runtime::common::write_atomic(path, content.as_bytes())
            .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
    }
    Ok(files)
}

/// The pod files and their container paths.
pub fn pod_files(pod_dir: &Path) -> Vec<(String, PathBuf)> {
    vec![
        ("/etc/hosts".to_string(), pod_dir.join("hosts")),
        ("/etc/hostname".to_string(), pod_dir.join("hostname")),
        ("/etc/resolv.conf".to_string(), pod_dir.join("resolv.conf")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_content() {
        let h = hosts_file("10.244.1.5", "web-0");
        assert!(h.starts_with("# skiff-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("\n10.244.1.5\tweb-0\n"));
    }
}
