//! Beyond one machine, on one machine: hosts are network namespaces this test makes (ip netns +
//! veths on a bridge of its own). One "host" runs etcd and two `skiff server --store etcd`; two
//! others run `skiff agent`, joined with a bootstrap token and a pinned CA hash. The real kubectl
//! drives it from the root namespace.
//!
//! Checked: both servers serve one cluster; agents join and run pods; a node's credentials
//! cannot touch another node (403); a host whose link is cut goes NotReady and its pods are
//! evicted after their toleration; killing the leading server moves scheduling to the other
//! within the lease duration, with every acknowledged write still there.
//!
//! Needs root, `ip` and etcd (`scripts/test` installs etcd-server); otherwise it says so and
//! passes without checking anything.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Out, eventually, kubectl_with, table};

fn run(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn must(args: &[&str]) {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn missing() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    for bin in ["ip", "etcd"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            return Some(format!("{bin} is not installed"));
        }
    }
    None
}

/// The test's network: a bridge, and a namespace per host with a veth on it.
struct Net {
    n: u32,
    hosts: Vec<String>,
    lock: PathBuf,
}

impl Net {
    fn new(hosts: &[&str]) -> Net {
        // A slot no other run on this machine holds.
        let (n, lock) = (0..50)
            .map(|i| (std::process::id() + i) % 50 + 1)
            .find_map(|n| {
                let lock = std::env::temp_dir().join(format!("skiff-test-mh-{n}.lock"));
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&lock)
                    .ok()
                    .map(|_| (n, lock))
            })
            .expect("a free multi-host slot");
        let net = Net {
            n,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            lock,
        };
        let br = net.bridge();
        let _ = run(&["ip", "link", "del", &br]);
        must(&["ip", "link", "add", &br, "type", "bridge"]);
        must(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", net.ip(254)),
            "dev",
            &br,
        ]);
        must(&["ip", "link", "set", &br, "up"]);
        for (i, h) in hosts.iter().enumerate() {
            let ns = net.ns(h);
            let _ = run(&["ip", "netns", "del", &ns]);
            must(&["ip", "netns", "add", &ns]);
            let (outside, inside) = (net.veth(h), format!("mh{n}i{i}"));
            must(&[
                "ip", "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ]);
            must(&["ip", "link", "set", &inside, "netns", &ns]);
            must(&["ip", "link", "set", &outside, "master", &br]);
            must(&["ip", "link", "set", &outside, "up"]);
            let ip = format!("{}/24", net.ip(i as u32 + 1));
            for cmd in [
                vec!["ip", "addr", "add", &ip, "dev", &inside],
                vec!["ip", "link", "set", &inside, "up"],
                vec!["ip", "link", "set", "lo", "up"],
            ] {
                let mut full = vec!["ip", "netns", "exec", &ns];
                full.extend(cmd);
                must(&full);
            }
        }
        net
    }

    fn bridge(&self) -> String {
        format!("skmh{}", self.n)
    }

    fn ns(&self, host: &str) -> String {
        format!("skmh{}-{host}", self.n)
    }

    fn veth(&self, host: &str) -> String {
        let i = self.hosts.iter().position(|h| h == host).expect("a host");
        format!("mh{}o{i}", self.n)
    }

    /// Address `.last` of the test's /24.
    fn ip(&self, last: u32) -> String {
        format!("10.251.{}.{last}", self.n)
    }

    fn host_ip(&self, host: &str) -> String {
        let i = self.hosts.iter().position(|h| h == host).expect("a host");
        self.ip(i as u32 + 1)
    }

    /// A command run inside `host`'s namespace.
    fn command(&self, host: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(host), program]);
        c
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &self.hosts {
            // Whatever still runs in the host (pods of a killed agent) goes with it.
            let pids = run(&["ip", "netns", "pids", &self.ns(h)]);
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                let _ = run(&["kill", "-9", pid]);
            }
            let _ = run(&["ip", "netns", "del", &self.ns(h)]);
            let _ = run(&["ip", "link", "del", &self.veth(h)]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge()]);
        let _ = std::fs::remove_file(&self.lock);
    }
}

/// A process whose stdout lines are kept; killed when dropped.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let stderr = if std::env::var_os("SKIFF_TEST_STDERR").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let mut child = cmd
            .env(
                "SKIFF_LOG",
                std::env::var("SKIFF_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        Proc { child, lines }
    }

    fn said(&self, what: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|l| l.contains(what))
    }

    fn wait_for(&self, what: &str, secs: u64) {
        eventually(secs, || self.said(what).then_some(()));
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn server(net: &Net, data: &Path, port: u16, etcd: &str) -> Proc {
    let ip = net.host_ip("ctl");
    let mut cmd = net.command("ctl", env!("CARGO_BIN_EXE_skiff"));
    cmd.arg("server")
        .arg("--data-dir")
        .arg(data)
        .args(["--address", &ip, "--port", &port.to_string()])
        .args(["--store", "etcd", "--etcd-endpoints", etcd])
        .args(["--node-monitor-grace-period", "20"]);
    let p = Proc::spawn(cmd);
    p.wait_for("export KUBECONFIG=", 30);
    p
}

#[test]
fn servers_on_etcd_agents_on_other_hosts_node_loss_and_failover() {
    if let Some(why) = missing() {
        skiff_testsupport::skip_because(&why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let net = Net::new(&["ctl", "a1", "a2"]);
    let ctl = net.host_ip("ctl");

    // etcd on the control host.
    let etcd_url = format!("http://{ctl}:2379");
    let mut etcd_cmd = net.command("ctl", "etcd");
    etcd_cmd
        .arg("--data-dir")
        .arg(dir.path().join("etcd"))
        .args(["--listen-client-urls", &etcd_url])
        .args(["--advertise-client-urls", &etcd_url])
        .args(["--listen-peer-urls", &format!("http://{ctl}:2380")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://{ctl}:2380"),
        ])
        .args(["--initial-cluster", &format!("default=http://{ctl}:2380")]);
    let _etcd = Proc::spawn(etcd_cmd);
    eventually(20, || {
        std::net::TcpStream::connect((ctl.as_str(), 2379)).ok()
    });

    // Two servers on the one etcd: one cluster (the second adopts the first's credentials).
    let mut s1 = server(&net, &dir.path().join("s1"), 6443, &etcd_url);
    let mut s2 = server(&net, &dir.path().join("s2"), 6444, &etcd_url);
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let kc1 = dir.path().join("s1/kubeconfig");
    let kc2 = dir.path().join("s2/kubeconfig");
    let k1 = |args: &[&str]| kubectl_with(&kc1, &home, args, None);
    let k2 = |args: &[&str]| kubectl_with(&kc2, &home, args, None);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("s1/pki/ca.crt")).unwrap(),
        std::fs::read_to_string(dir.path().join("s2/pki/ca.crt")).unwrap()
    );
    k1(&["create", "namespace", "shared"]).ok();
    assert!(
        k2(&["get", "namespace", "shared"])
            .ok()
            .stdout
            .contains("shared")
    );

    // Join both agents with one bootstrap token; a wrong pin is refused.
    let join = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["token", "create", "--kubeconfig"])
        .arg(&kc1)
        .output()
        .unwrap();
    assert!(
        join.status.success(),
        "{}",
        String::from_utf8_lossy(&join.stderr)
    );
    let join = String::from_utf8_lossy(&join.stdout).trim().to_string();
    let words: Vec<&str> = join.split_whitespace().collect();
    let arg = |flag: &str| words[words.iter().position(|w| *w == flag).unwrap() + 1].to_string();
    let (token, hash) = (arg("--token"), arg("--ca-cert-hash"));
    assert!(hash.starts_with("sha256:"), "{join}");
    let agent_in = |host: &str, server_port: u16, pin: &str, state: &str| {
        let mut cmd = net.command(host, env!("CARGO_BIN_EXE_skiff"));
        cmd.args(["agent", "--server", &format!("https://{ctl}:{server_port}")])
            .args(["--token", &token, "--ca-cert-hash", pin])
            .args(["--node-name", host, "--runtime", "host", "--port", "0"])
            .arg("--state-dir")
            .arg(dir.path().join(state));
        cmd
    };
    let agent = |host: &str, server_port: u16, pin: &str| {
        agent_in(host, server_port, pin, &format!("agent-{host}"))
    };
    let bad = agent("a1", 6443, &format!("sha256:{}", "0".repeat(64)))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("refusing to join"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let a1 = Proc::spawn(agent("a1", 6443, &hash));
    let mut a2 = Proc::spawn(agent("a2", 6444, &hash));
    a1.wait_for("skiff agent is running", 30);
    a2.wait_for("skiff agent is running", 30);
    eventually(40, || {
        let rows = table(&k1(&["get", "nodes", "--no-headers"]).stdout);
        (rows.len() == 2 && rows.iter().all(|r| r[1] == "Ready")).then_some(())
    });

    // A node's own credentials: its own Node yes, another's no.
    let creds: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("agent-a1/credentials.json")).unwrap(),
    )
    .unwrap();
    let node_token = creds["token"].as_str().unwrap();
    let as_a1 = |args: &[&str]| -> Out {
        let mut a = vec!["--token", node_token];
        a.extend_from_slice(args);
        kubectl_with(&kc1, &home, &a, None)
    };
    as_a1(&["label", "node", "a1", "checked=yes"]).ok();
    let denied = as_a1(&["label", "node", "a2", "checked=yes"]);
    assert_ne!(denied.code, 0);
    assert!(
        denied
            .stderr
            .contains("node \"a1\" is not allowed to modify node \"a2\""),
        "{denied:?}"
    );
    let denied = as_a1(&["create", "configmap", "x", "--from-literal=a=b"]);
    assert!(
        denied.stderr.contains("Forbidden") || denied.stderr.contains("forbidden"),
        "{denied:?}"
    );
    assert!(as_a1(&["get", "pods", "-A"]).code == 0);
    // …and no credentials of the cluster: not another node's token, not the Secrets list.
    let stolen = as_a1(&["get", "secret", "-n", "kube-system", "node-token-a2"]);
    assert!(
        stolen.stderr.contains("may not read credentials"),
        "{stolen:?}"
    );
    let listed = as_a1(&["get", "secrets", "-A"]);
    assert!(
        listed.stderr.contains("may read Secrets only by name"),
        "{listed:?}"
    );
    // A bootstrap token cannot take over a node that has joined.
    let takeover = agent_in("a1", 6443, &hash, "intruder").output().unwrap();
    assert!(!takeover.status.success());
    assert!(
        String::from_utf8_lossy(&takeover.stderr).contains("has joined before"),
        "{}",
        String::from_utf8_lossy(&takeover.stderr)
    );

    // Pods on both hosts, each evicted 5 s after its node becomes unreachable.
    for host in ["a1", "a2"] {
        let yaml = format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: on-{host}, namespace: shared}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {host}}}
  terminationGracePeriodSeconds: 1
  tolerations:
  - {{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 5}}
  containers:
  - name: c
    image: busybox
    command: [sh, -c, 'echo hello from {host}; sleep 600']
"
        );
        kubectl_with(&kc1, &home, &["apply", "-f", "-"], Some(&yaml)).ok();
    }
    for host in ["a1", "a2"] {
        eventually(60, || {
            let row = table(
                &k2(&[
                    "get",
                    "pod",
                    &format!("on-{host}"),
                    "-n",
                    "shared",
                    "--no-headers",
                    "-o",
                    "wide",
                ])
                .stdout,
            );
            (row.first()
                .is_some_and(|r| r[2] == "Running" && r[6] == host))
            .then_some(())
        });
    }
    // Logs come through either server from the agent on its host.
    let logs = eventually(20, || {
        let out = k2(&["logs", "-n", "shared", "on-a1"]);
        (out.code == 0 && !out.stdout.is_empty()).then_some(out.stdout)
    });
    assert_eq!(logs.trim(), "hello from a1");

    // a1's credentials write the status of its own pods only.
    let status = r#"{"status":{"conditions":[{"type":"Ready","status":"False"}]}}"#;
    let mine = as_a1(&[
        "patch",
        "pod",
        "on-a1",
        "-n",
        "shared",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ]);
    assert_eq!(mine.code, 0, "{mine:?}");
    let theirs = as_a1(&[
        "patch",
        "pod",
        "on-a2",
        "-n",
        "shared",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ]);
    assert!(
        theirs
            .stderr
            .contains("can only update pod status for pods with spec.nodeName set to itself"),
        "{theirs:?}"
    );

    // Cut a2's link: NotReady (Unknown), tainted, its pod evicted.
    must(&["ip", "link", "set", &net.veth("a2"), "down"]);
    eventually(60, || {
        let rows = table(&k1(&["get", "node", "a2", "--no-headers"]).stdout);
        rows.first()
            .is_some_and(|r| r[1] == "NotReady")
            .then_some(())
    });
    let taints = k1(&["get", "node", "a2", "-o", "jsonpath={.spec.taints[*].key}"])
        .ok()
        .stdout;
    assert!(
        taints.contains("node.kubernetes.io/unreachable"),
        "{taints}"
    );
    // As on Kubernetes, the eviction is a deletion the unreachable kubelet cannot confirm: the
    // pod shows Terminating (and goes when its node comes back or is removed). The pod on the
    // healthy node stays.
    let evicted_at = Instant::now();
    eventually(60, || {
        let row = table(&k1(&["get", "pod", "on-a2", "-n", "shared", "--no-headers"]).stdout);
        row.first()
            .is_some_and(|r| r[2] == "Terminating")
            .then_some(())
    });
    assert!(
        evicted_at.elapsed() >= Duration::from_secs(3),
        "evicted before its toleration"
    );
    let row = table(&k1(&["get", "pod", "on-a1", "-n", "shared", "--no-headers"]).stdout);
    assert_eq!(row[0][2], "Running", "{row:?}");
    a2.kill();

    // Writes acknowledged by either server, then the leader dies.
    for i in 0..20 {
        let kc = if i % 2 == 0 { &kc1 } else { &kc2 };
        kubectl_with(
            kc,
            &home,
            &["create", "configmap", &format!("w{i}"), "-n", "shared"],
            None,
        )
        .ok();
    }
    let (leader, survivor_kc) = if s1.said("leading:") {
        (&mut s1, &kc2)
    } else {
        s2.wait_for("leading:", 10);
        (&mut s2, &kc1)
    };
    let killed = Instant::now();
    leader.kill();
    let ks = |args: &[&str]| kubectl_with(survivor_kc, &home, args, None);
    ks(&[
        "run",
        "after-failover",
        "-n",
        "shared",
        "--image=busybox",
        "--restart=Never",
        "--overrides",
        r#"{"spec":{"nodeSelector":{"kubernetes.io/hostname":"a1"}}}"#,
        "--",
        "sleep",
        "600",
    ])
    .ok();
    // Scheduled by the other server once the lease (15 s) expires on its clock.
    eventually(45, || {
        let node = ks(&[
            "get",
            "pod",
            "after-failover",
            "-n",
            "shared",
            "-o",
            "jsonpath={.spec.nodeName}",
        ])
        .stdout;
        (node == "a1").then_some(())
    });
    assert!(killed.elapsed() < Duration::from_secs(45));
    let names = ks(&["get", "configmaps", "-n", "shared", "-o", "name"])
        .ok()
        .stdout;
    for i in 0..20 {
        assert!(
            names.contains(&format!("configmap/w{i}\n")),
            "w{i} lost: {names}"
        );
    }
    drop(a1);
}
