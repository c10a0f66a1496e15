//! Test harness: starts the real `skiff` binary on a free port with its own data dir, and runs
//! the real `kubectl` against it with its own HOME (so discovery caches never leak between tests).

#![allow(dead_code)]

pub mod cluster;
pub mod registry;
pub mod runc;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Skiff {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub server: String,
    extra_args: Vec<String>,
    /// Run the local agent (tests written before it existed run without one, so their
    /// clusters have no node they did not create).
    agent: bool,
    /// Everything `skiff up` printed before it was ready.
    pub ready_lines: Vec<String>,
}

#[derive(Debug)]
pub struct Out {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl Out {
    /// Panics with both streams when the command failed.
    pub fn ok(self) -> Out {
        assert_eq!(
            self.code, 0,
            "command failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Skiff {
    /// Starts `skiff up` with a fresh data dir.
    pub fn start() -> Skiff {
        Skiff::start_with(&[])
    }

    /// A bare API server: `skiff up` with the scheduler, controllers and agent switched off, so
    /// objects change only when the test changes them.
    pub fn bare() -> Skiff {
        Skiff::start_with(&["--disable", "scheduler,controllers,agent"])
    }

    /// `skiff up` without its agent, plus `extra` arguments.
    pub fn start_with(extra: &[&str]) -> Skiff {
        Skiff::build(extra, false)
    }

    /// `skiff up` with its local agent (host runtime), plus `extra` arguments.
    pub fn with_agent(extra: &[&str]) -> Skiff {
        Skiff::build(extra, true)
    }

    fn build(extra: &[&str], agent: bool) -> Skiff {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Skiff {
            child: None,
            kubeconfig: dir.path().join("data/kubeconfig"),
            dir,
            server: String::new(),
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            agent,
            ready_lines: Vec::new(),
        };
        s.launch();
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the binary (again) on the same data dir and waits until it says it is ready.
    pub fn launch(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
        cmd.arg("up")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--port", "0"]);
        cmd.args(&self.extra_args);
        if !self.agent {
            cmd.args(["--disable", "agent"]);
        } else if !self.extra_args.iter().any(|a| a == "--runtime") {
            // Agent tests run plain processes unless they ask for real containers.
            cmd.args(["--runtime", "host"]);
        }
        // SKIFF_TEST_STDERR=1 shows the server's log (with SKIFF_LOG's level) when debugging.
        let stderr = if std::env::var_os("SKIFF_TEST_STDERR").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        cmd.stdout(Stdio::piped()).stderr(stderr).env(
            "SKIFF_LOG",
            std::env::var("SKIFF_LOG").unwrap_or_else(|_| "warn".into()),
        );
        let mut child = cmd.spawn().expect("start skiff");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut server = String::new();
        self.ready_lines.clear();
        for line in lines.by_ref() {
            let line = line.expect("read skiff stdout");
            self.ready_lines.push(line.clone());
            if let Some(rest) = line.split("API server ").nth(1) {
                server = rest.split(',').next().unwrap_or("").to_string();
            }
            if line.starts_with("export KUBECONFIG=") {
                break;
            }
            assert!(Instant::now() < deadline, "skiff did not become ready");
        }
        assert!(!server.is_empty(), "skiff exited before it was ready");
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.server = server;
        self.child = Some(child);
    }

    /// Sends SIGKILL and waits for the process to go.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits: the clean shutdown path.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        unsafe_kill(c.id() as i32, 15);
        c.wait().ok()
    }

    /// Runs kubectl with this cluster's kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Out {
        self.kubectl_stdin(args, None)
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Out {
        kubectl_with(&self.kubeconfig, self.dir.path(), args, stdin)
    }

    /// A `kube` client for this cluster.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config");
        kube::Client::try_from(cfg).expect("client")
    }

    /// Writes a file under the test's temp dir and returns its path.
    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).expect("write file");
        p
    }
}

impl Drop for Skiff {
    fn drop(&mut self) {
        self.kill9();
        kill_leftover_containers(self.dir.path());
    }
}

/// Kills (SIGKILL, by pid) processes whose environment names a path under `dir`: containers
/// of the host runtime (their `SKIFF_POD_ROOT` is under the data dir) left by a test that
/// ended without deleting its pods.
pub fn kill_leftover_containers(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let Ok(env) = std::fs::read(p.path().join("environ")) else {
            continue;
        };
        let hit = env.split(|b| *b == 0).any(|kv| {
            String::from_utf8_lossy(kv).starts_with("SKIFF_POD_ROOT=")
                && String::from_utf8_lossy(kv).contains(&needle)
        });
        if hit {
            unsafe_kill(pid, 9);
        }
    }
}

fn unsafe_kill(pid: i32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

pub fn kubectl_with(kubeconfig: &Path, home: &Path, args: &[&str], stdin: Option<&str>) -> Out {
    use std::io::Write;
    let mut cmd = Command::new("kubectl");
    cmd.args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().expect("kubectl must be on PATH");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("kubectl output");
    Out {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

/// Polls `f` until it returns Some, for at most `secs` seconds.
pub fn eventually<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {secs}s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Splits kubectl table output into rows of whitespace-separated cells (header included).
pub fn table(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

/// Collapses runs of whitespace to one space, for assertions on aligned output.
pub fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A Node object with capacity = allocatable (`cpu`, `memory`, 110 pods) and `Ready=True`;
/// `extra` is merged in (e.g. `{"spec": {"taints": [...]}}` or `{"metadata": {"labels": ...}}`).
pub fn node_object(
    name: &str,
    cpu: &str,
    memory: &str,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut node = serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status"}],
        },
    });
    merge_json(&mut node, extra);
    node
}

fn merge_json(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge_json(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

impl Skiff {
    /// Creates a node (status included) through the API with the kube client, from a
    /// synchronous test.
    pub fn create_node(&self, node: serde_json::Value) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let nodes: kube::Api<k8s_openapi::api::core::v1::Node> =
                kube::Api::all(self.client().await);
            let node: k8s_openapi::api::core::v1::Node =
                serde_json::from_value(node).expect("node object");
            nodes
                .create(&kube::api::PostParams::default(), &node)
                .await
                .expect("create node");
        });
    }
}

impl Skiff {
    /// `kubectl apply -f -` with `yaml`.
    pub fn apply(&self, yaml: &str) -> Out {
        self.kubectl_stdin(&["apply", "-f", "-"], Some(yaml))
    }

    /// The token the API server presents to `node`'s agent (what that agent's server accepts).
    pub fn agent_token(&self, node: &str) -> String {
        let secret =
            std::fs::read_to_string(self.data_dir().join("pki/agent.token")).expect("agent token");
        skiff_apiserver::auth::agent_token_for(secret.trim(), node)
    }

    /// The admin bearer token `up` made.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("pki/admin.token"))
            .expect("admin token")
            .trim()
            .to_string()
    }

    /// Starts `kubectl get <args> -w` in the background, collecting its lines.
    pub fn watch(&self, args: &[&str]) -> Watch {
        let mut cmd = Command::new("kubectl");
        cmd.arg("get")
            .args(args)
            .arg("-w")
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().expect("kubectl must be on PATH");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (sink, flag) = (lines.clone(), started.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                sink.lock().unwrap().push(line);
            }
        });
        let flag = started.clone();
        std::thread::spawn(move || {
            // `No resources found…` also means the list is done and the watch is open.
            for line in BufReader::new(stderr).lines() {
                if line.is_err() {
                    break;
                }
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
        Watch {
            child,
            lines,
            started,
        }
    }
}

/// A background `kubectl get … -w`.
pub struct Watch {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    started: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Watch {
    /// Waits until kubectl has listed (printed anything, on stdout or stderr), so that what
    /// happens next is seen as watch events.
    pub fn wait_listed(&self, secs: u64) {
        eventually(secs, || {
            self.started
                .load(std::sync::atomic::Ordering::SeqCst)
                .then_some(())
        });
    }

    /// The lines printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until some line satisfies `f`.
    pub fn wait_for(&self, secs: u64, what: &str, f: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if self.lines().iter().any(|l| f(l)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "watch never showed {what}; it printed:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
