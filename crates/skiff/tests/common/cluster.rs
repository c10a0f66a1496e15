//! A `skiff up` with its agent for pod tests, and the questions those tests ask of a pod
//! through the real kubectl (its row, a field, `describe`). Dropping it deletes every pod, so no
//! container outlives the test.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Out, Skiff, squash, table};

/// `skiff up` with its agent; deletes every pod when dropped, so no container outlives the test.
pub struct Cluster(pub Skiff);

impl Cluster {
    pub fn start() -> Cluster {
        Cluster(Skiff::with_agent(&[]))
    }

    /// A cluster whose `skiff up` gets `extra` arguments (e.g. `--runtime runc`).
    pub fn with(extra: &[&str]) -> Cluster {
        Cluster(Skiff::with_agent(extra))
    }

    /// `kubectl exec -it ARGS` under util-linux `script`, which gives kubectl a terminal.
    pub fn exec_tty(&self, args: &str) -> Out {
        let cmd = format!("kubectl exec -it {args}");
        let out = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("script (util-linux) must be on PATH");
        Out {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            code: out.status.code().unwrap_or(-1),
        }
    }

    /// The pod's row in `kubectl get pods`: name, ready, status, restarts….
    pub fn row(&self, pod: &str) -> Vec<String> {
        let out = self.kubectl(&["get", "pod", pod, "--no-headers"]);
        table(&out.stdout).into_iter().next().unwrap_or_default()
    }

    /// Waits until the pod's STATUS is `status` (and READY is `ready`, when given).
    pub fn wait_status(
        &self,
        pod: &str,
        status: &str,
        ready: Option<&str>,
        secs: u64,
    ) -> Vec<String> {
        let mut last = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let row = self.row(pod);
            if row.get(2).map(String::as_str) == Some(status)
                && ready.is_none_or(|r| row.get(1).map(String::as_str) == Some(r))
            {
                return row;
            }
            if !row.is_empty() {
                last = row;
            }
            assert!(
                Instant::now() < deadline,
                "pod {pod} never reached {status} {ready:?}; last row {last:?}\n{}",
                self.describe(pod)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn field(&self, pod: &str, jsonpath: &str) -> String {
        self.kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={jsonpath}")])
            .ok()
            .stdout
    }

    pub fn describe(&self, pod: &str) -> String {
        self.kubectl(&["describe", "pod", pod]).stdout
    }

    /// Waits until `kubectl describe` (whitespace squashed) contains `text`.
    pub fn wait_describe(&self, pod: &str, text: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let d = squash(&self.describe(pod));
            if d.contains(text) {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "describe pod {pod} never showed {text:?}:\n{d}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `kubectl delete pods --all` with a 1 s grace period, waiting up to 30 s; its outcome is
    /// not checked.
    pub fn delete_all_pods(&self) {
        let _ = self.kubectl(&[
            "delete",
            "pods",
            "--all",
            "--grace-period=1",
            "--timeout=30s",
        ]);
    }

    pub fn gone(&self, pod: &str) -> bool {
        let out = self.kubectl(&["get", "pod", pod, "--ignore-not-found", "-o", "name"]);
        out.code == 0 && out.stdout.trim().is_empty()
    }
}

impl std::ops::Deref for Cluster {
    type Target = Skiff;
    fn deref(&self) -> &Skiff {
        &self.0
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut Skiff {
        &mut self.0
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.delete_all_pods();
    }
}
