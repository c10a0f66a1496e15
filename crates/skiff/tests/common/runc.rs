//! A `skiff up --runtime runc` cluster for tests: its own bridge, pod CIDR, service CIDR, node
//! port range and service interface (a slot no other test on this machine holds), so tests run
//! in parallel. Dropping it deletes the pods and waits until the agent removed their sandboxes,
//! then removes the bridge.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::Out;
use super::cluster::Cluster;

/// Why this machine cannot run runc tests (root, runc, CNI plugins, docker-registry,
/// busybox-static), or None. Tests call [`skip`].
pub fn missing_parts() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    for p in [
        "/usr/sbin/runc",
        "/usr/lib/cni/bridge",
        "/usr/bin/docker-registry",
        "/bin/busybox",
    ] {
        if !PathBuf::from(p).exists() {
            return Some(format!("{p} is not installed"));
        }
    }
    None
}

/// True (after saying why) when the test cannot run here.
pub fn skip() -> bool {
    match missing_parts() {
        Some(why) => {
            skiff_testsupport::skip_because(&why);
            true
        }
        None => false,
    }
}

/// A network slot: a lock file under /tmp while held.
pub struct Slot {
    pub n: usize,
    lock: PathBuf,
}

impl Slot {
    fn take() -> Slot {
        let start = std::process::id() as usize;
        for i in 0..200 {
            let n = 20 + (start + i) % 200;
            let lock = std::env::temp_dir().join(format!("skiff-test-net-{n}.lock"));
            if std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock)
                .is_ok()
            {
                return Slot { n, lock };
            }
        }
        panic!("no free test network slot (stale /tmp/skiff-test-net-*.lock files?)");
    }

    pub fn bridge(&self) -> String {
        format!("skt{}", self.n)
    }

    pub fn pod_cidr(&self) -> String {
        format!("10.244.{}.0/24", self.n)
    }

    /// The first of this slot's ten node ports.
    pub fn node_port(&self) -> u16 {
        30000 + 10 * self.n as u16
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .output();
        let _ = std::fs::remove_file(&self.lock);
    }
}

/// The cluster drops (deleting its pods) before the slot goes.
pub struct Runc {
    pub cluster: Cluster,
    pub slot: Slot,
}

impl std::ops::Deref for Runc {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl Drop for Runc {
    /// Containers outlive a stopped agent by design: delete the pods and wait until their
    /// sandboxes (mounts, cgroups, veths) are gone before the cluster stops.
    fn drop(&mut self) {
        self.delete_all_pods();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.leftovers().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Runc {
    pub fn start() -> Runc {
        let slot = Slot::take();
        let n = slot.n;
        let cluster = Cluster::with(&[
            "--runtime",
            "runc",
            "--pod-cidr",
            &slot.pod_cidr(),
            "--cni-bridge",
            &slot.bridge(),
            "--service-cluster-ip-range",
            &format!("10.96.{n}.0/24"),
            "--service-node-port-range",
            &format!("{}-{}", slot.node_port(), slot.node_port() + 9),
            "--service-interface",
            &format!("sksvc{n}"),
        ]);
        Runc { cluster, slot }
    }

    pub fn apply_ok(&self, yaml: &str) {
        self.apply(yaml).ok();
    }

    pub fn logs(&self, pod: &str, container: &str) -> String {
        self.kubectl(&["logs", pod, "-c", container]).stdout
    }

    pub fn wait_logs(&self, pod: &str, container: &str, text: &str, secs: u64) -> String {
        super::eventually(secs, || {
            let l = self.logs(pod, container);
            l.contains(text).then_some(l)
        })
    }

    /// Runs the skiff binary with `args` on this cluster's data dir.
    pub fn skiff(&self, args: &[&str]) -> Out {
        let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .output()
            .expect("run skiff");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// What the runc runtime still holds: pod directories and mounts under its state.
    pub fn leftovers(&self) -> Vec<String> {
        let state = self.data_dir().join("agent/runc");
        let mut left: Vec<String> = std::fs::read_dir(state.join("pods"))
            .map(|d| {
                d.flatten()
                    .map(|e| format!("pod dir {}", e.file_name().to_string_lossy()))
                    .collect()
            })
            .unwrap_or_default();
        let needle = state.to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        left.extend(
            mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(4))
                .filter(|m| m.starts_with(&needle))
                .map(|m| format!("mount {m}")),
        );
        left
    }
}
