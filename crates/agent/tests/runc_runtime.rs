//! The runc runtime with real runc, real CNI plugins and real cgroups. Needs root, runc, the CNI
//! plugins in /usr/lib/cni and /bin/busybox (static); each test prints why and passes when one is
//! missing.
//!
//! * The image is built by the test from /bin/busybox as an OCI layout and imported into an
//!   image store in the test's state directory (no registry).
//! * The shim is this test binary: `<this exe> --exact runc_shim_entry -- skiff-runc-shim <dir>`
//!   runs only the test `runc_shim_entry`, which sees the marker and becomes the shim.
//! * Each test has its own bridge (`sktN`), pod CIDR (`10.244.(100+N).0/24`) and cgroup parent,
//!   and removes them, its state directory and whatever it started at the end.
//!
//! Timeouts are generous and nothing asserts that an operation was fast: these run on loaded
//! 2-core machines.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use skiff_agent::runtime::runc::{RuncConfig, RuncRuntime, shim_main};
use skiff_agent::runtime::{
    ContainerConfig, ExecStreams, ExitNotice, Mount, PodRef, Resources, Runtime, SandboxConfig,
};
use skiff_agent::{ExitReason, ImagePresence, InstanceState, StartError};
use skiff_images::ImageStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

const PATIENCE: Duration = Duration::from_secs(90);
const IMAGE: &str = "skiff.test/busybox:1";
const SHIM_MARKER: &str = "skiff-runc-shim";

/// Not a test: the shim entry point when this binary is started as the shim.
#[test]
fn runc_shim_entry() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == SHIM_MARKER) {
        std::process::exit(shim_main(&args[i + 1..]));
    }
}

fn shim_argv() -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    vec![
        exe.display().to_string(),
        "--exact".into(),
        "runc_shim_entry".into(),
        "--nocapture".into(),
        "--test-threads=1".into(),
        "--".into(),
        SHIM_MARKER.into(),
    ]
}

/// Why the tests cannot run here, if they cannot.
fn unsupported() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if skiff_agent::runtime::runc::find_in_path("runc").is_none() {
        return Some("runc is not installed".into());
    }
    for p in ["bridge", "host-local", "loopback"] {
        if !Path::new("/usr/lib/cni").join(p).exists() {
            return Some(format!("CNI plugin {p} is not installed"));
        }
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox is not installed".into());
    }
    None
}

macro_rules! require_runc {
    () => {
        if let Some(why) = unsupported() {
            skiff_testsupport::skip_because(&why);
            return;
        }
    };
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256_file(p: &Path) -> String {
    run("sha256sum", &[p.to_str().unwrap()])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Builds an OCI image layout of busybox (no entrypoint, no cmd) under `dir`; returns it.
fn build_image(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in run("/bin/busybox", &["--list"]).lines() {
        if applet != "busybox" && !applet.is_empty() {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();

    let layout = dir.join("oci");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let tar = dir.join("layer.tar");
    run(
        "tar",
        &[
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-C",
            rootfs.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ],
    );
    let diff_id = sha256_file(&tar);
    run("gzip", &["-n", "-1", tar.to_str().unwrap()]);
    let gz = dir.join("layer.tar.gz");
    let layer = sha256_file(&gz);
    let layer_size = std::fs::metadata(&gz).unwrap().len();
    std::fs::rename(&gz, blobs.join(&layer)).unwrap();
    let add = |bytes: Vec<u8>| {
        let p = dir.join("blob.tmp");
        std::fs::write(&p, &bytes).unwrap();
        let d = sha256_file(&p);
        std::fs::rename(&p, blobs.join(&d)).unwrap();
        (d, bytes.len())
    };
    let arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    let config = json!({
        "architecture": arch, "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "FROM_IMAGE=yes"],
            "WorkingDir": "/"
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
    });
    let (cfg, cfg_size) = add(serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{cfg}"), "size": cfg_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": format!("sha256:{layer}"), "size": layer_size}],
    });
    let (man, man_size) = add(serde_json::to_vec(&manifest).unwrap());
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{man}"), "size": man_size,
            "annotations": {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "1"},
        }],
    });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    layout
}

/// Mount points at or below `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let prefix = dir.display().to_string();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// Every cgroup hierarchy's mount point.
fn cgroup_roots() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut roots: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            let mount_point = left.split(' ').nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .collect();
    roots.sort();
    roots.dedup();
    roots
}

/// cgroup directories below the parent, on any hierarchy.
fn cgroups_under(parent: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for root in cgroup_roots() {
        if let Ok(items) = std::fs::read_dir(root.join(parent)) {
            for i in items.flatten() {
                if i.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(i.path());
                }
            }
        }
    }
    out
}

fn rmdir_tree(dir: &Path) {
    if let Ok(items) = std::fs::read_dir(dir) {
        for i in items.flatten() {
            if i.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&i.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// One test's world: state directory, image store, bridge, CIDR, cgroup parent.
struct Env {
    dir: PathBuf,
    state: PathBuf,
    images: ImageStore,
    bridge: String,
    cidr_prefix: String,
    cgroup_parent: String,
}

impl Env {
    /// `n` (1..=99) keeps tests running in parallel apart.
    fn new(n: u8) -> Env {
        let mut bytes = [0u8; 4];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .unwrap();
        let dir = std::env::temp_dir().join(format!(
            "skiff-runc-{n}-{}-{:08x}",
            std::process::id(),
            u32::from_le_bytes(bytes)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let layout = build_image(&dir.join("image"));
        let images = ImageStore::open(&dir.join("images")).unwrap();
        images.import(&layout).unwrap();
        let env = Env {
            state: dir.join("runc"),
            dir,
            images,
            bridge: format!("skt{n}"),
            cidr_prefix: format!("10.244.{}.", 100 + u32::from(n)),
            cgroup_parent: format!("skiff-test-{n}-{}", std::process::id()),
        };
        // A bridge left by an earlier, interrupted run of this test.
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &env.bridge])
            .stderr(std::process::Stdio::null())
            .status();
        env
    }

    fn config(&self) -> RuncConfig {
        let mut c = RuncConfig::new(
            self.state.clone(),
            self.images.clone(),
            "127.0.0.1".into(),
            shim_argv(),
        );
        c.bridge = self.bridge.clone();
        c.pod_cidr = format!("{}0/24", self.cidr_prefix);
        c.cgroup_parent = self.cgroup_parent.clone();
        c
    }

    fn runtime(&self) -> RuncRuntime {
        RuncRuntime::new(self.config()).unwrap()
    }

    fn runc_list(&self) -> Vec<serde_json::Value> {
        let out = run(
            "runc",
            &[
                "--root",
                self.state.join("runc-state").to_str().unwrap(),
                "list",
                "--format",
                "json",
            ],
        );
        serde_json::from_str(&out).unwrap_or_default()
    }

    /// Asserts that nothing of any pod is left on the node.
    fn assert_no_leftovers(&self) {
        assert_eq!(
            self.runc_list(),
            Vec::<serde_json::Value>::new(),
            "runc containers left"
        );
        assert_eq!(
            mounts_under(&self.state),
            Vec::<String>::new(),
            "mounts left"
        );
        assert_eq!(
            cgroups_under(&self.cgroup_parent),
            Vec::<PathBuf>::new(),
            "cgroups left"
        );
        let pods: Vec<_> = std::fs::read_dir(self.state.join("pods"))
            .unwrap()
            .collect();
        assert!(pods.is_empty(), "pod directories left: {pods:?}");
        let containers: Vec<_> = std::fs::read_dir(self.state.join("containers"))
            .unwrap()
            .collect();
        assert!(
            containers.is_empty(),
            "container directories left: {containers:?}"
        );
        let veths = run("ip", &["-o", "link", "show", "master", &self.bridge]);
        assert!(veths.trim().is_empty(), "veths left on the bridge: {veths}");
        let leases: Vec<String> = std::fs::read_dir(self.state.join("cni/skiff"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        assert!(leases.is_empty(), "leases left: {leases:?}");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let root = self.state.join("runc-state");
        for c in self.runc_list() {
            if let Some(id) = c["id"].as_str() {
                let _ = std::process::Command::new("runc")
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force", id])
                    .status();
            }
        }
        let mut mounts = mounts_under(&self.dir);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = std::process::Command::new("umount")
                .args(["-l", &m])
                .status();
        }
        for root in cgroup_roots() {
            rmdir_tree(&root.join(&self.cgroup_parent));
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pod(name: &str) -> PodRef {
    let mut bytes = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .unwrap();
    PodRef {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("uid-{name}-{:08x}", u32::from_le_bytes(bytes)),
    }
}

fn sandbox(hostname: &str) -> SandboxConfig {
    SandboxConfig {
        hostname: hostname.into(),
        host_network: false,
    }
}

fn config(name: &str, argv: &[&str]) -> ContainerConfig {
    ContainerConfig {
        name: name.into(),
        image: IMAGE.into(),
        command: argv.iter().map(|s| s.to_string()).collect(),
        args: vec![],
        env: vec![],
        working_dir: None,
        attempt: 0,
        mounts: vec![],
        resources: Default::default(),
        tty: false,
        stdin: false,
        security: Default::default(),
    }
}

fn sv(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

async fn next_exit(rx: &mut broadcast::Receiver<ExitNotice>, id: &str) -> ExitNotice {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match rx.recv().await {
                Ok(n) if n.id == id => return n,
                Ok(_) => {}
                Err(e) => panic!("exit channel: {e}"),
            }
        }
    })
    .await
    .expect("no exit notice")
}

/// (stream, tag, content) of each CRI record of a log file.
fn records(path: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let time = parts.next().unwrap();
            assert!(
                time.parse::<jiff::Timestamp>().is_ok(),
                "bad timestamp in {l:?}"
            );
            (
                parts.next().unwrap().to_string(),
                parts.next().unwrap().to_string(),
                parts.next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn http_get(ip: &str, port: u16) -> std::io::Result<String> {
    let addr = format!("{ip}:{port}").parse().unwrap();
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_addresses_and_talk_over_the_network() {
    require_runc!();
    let env = Env::new(1);
    let rt = env.runtime();
    let p = pod("web");
    let sb = rt.create_sandbox(&p, &sandbox("web-host")).await.unwrap();
    assert!(
        sb.pod_ip.starts_with(&env.cidr_prefix),
        "{} not in {}0/24",
        sb.pod_ip,
        env.cidr_prefix
    );
    assert_eq!(
        rt.create_sandbox(&p, &sandbox("web-host")).await.unwrap(),
        sb,
        "create_sandbox is idempotent"
    );
    assert_eq!(rt.image_status(IMAGE).await, ImagePresence::Present);
    let images = rt.list_images().await;
    assert_eq!(images.len(), 1);
    assert!(images[0].names.iter().any(|n| n == IMAGE), "{images:?}");
    assert!(images[0].size_bytes > 0);
    let err = rt
        .pull_image("127.0.0.1:1/nothing:1", None)
        .await
        .unwrap_err();
    assert!(!err.is_empty());
    assert_eq!(
        rt.image_status("skiff.test/absent:1").await,
        ImagePresence::Absent
    );

    let web = rt
        .start_container(
            &p,
            &config(
                "web",
                &[
                    "sh",
                    "-c",
                    "mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p 8080 -h /www",
                ],
            ),
        )
        .await
        .unwrap();
    assert!(web.id.starts_with("runc://"));
    assert_eq!(web.image, IMAGE);
    // The repo digest the import recorded, else the config digest.
    assert!(
        web.image_id.starts_with("skiff.test/busybox@sha256:")
            || web.image_id.starts_with("sha256:"),
        "{}",
        web.image_id
    );
    assert!(matches!(web.state, InstanceState::Running { .. }));

    // The node reaches the pod at its IP.
    let ip = sb.pod_ip.clone();
    let mut body = String::new();
    eventually("httpd answering on the pod IP", || {
        match http_get(&ip, 8080) {
            Ok(b) => {
                body = b;
                true
            }
            Err(_) => false,
        }
    })
    .await;
    assert!(body.starts_with("HTTP/1."), "{body}");
    assert!(body.contains(" 200 "), "{body}");
    assert!(body.contains("hello-from-pod"), "{body}");

    // A second container of the pod reaches the first over localhost, and sees the pod's
    // hostname and /etc/hosts.
    let mut rx = rt.exits();
    let client = rt
        .start_container(
            &p,
            &config(
                "client",
                &[
                    "sh",
                    "-c",
                    "wget -qO- http://127.0.0.1:8080/ && hostname && cat /etc/hosts",
                ],
            ),
        )
        .await
        .unwrap();
    let n = next_exit(&mut rx, &client.id).await;
    assert_eq!(n.exit.exit_code, 0, "{:?}", n.exit);
    assert_eq!(n.container, "client");
    assert_eq!(n.pod_uid, p.uid);
    let out: Vec<String> = records(&rt.log_path(&p, "client", 0))
        .into_iter()
        .map(|r| r.2)
        .collect();
    assert!(out.contains(&"hello-from-pod".to_string()), "{out:?}");
    assert!(out.contains(&"web-host".to_string()), "{out:?}");
    assert!(out.contains(&format!("{}\tweb-host", sb.pod_ip)), "{out:?}");

    // A host-network pod has the node's IP.
    let h = pod("hostnet");
    let hsb = rt
        .create_sandbox(
            &h,
            &SandboxConfig {
                hostname: "ignored".into(),
                host_network: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(hsb.pod_ip, "127.0.0.1");
    let hc = rt
        .start_container(&h, &config("c", &["hostname"]))
        .await
        .unwrap();
    let n = next_exit(&mut rx, &hc.id).await;
    assert_eq!(n.exit.exit_code, 0);
    let node_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let out = records(&rt.log_path(&h, "c", 0));
    assert_eq!(out[0].2, node_name.trim());

    rt.remove_sandbox(&p).await.unwrap();
    rt.remove_sandbox(&h).await.unwrap();
    rt.remove_sandbox(&p).await.unwrap();
    assert!(http_get(&ip, 8080).is_err());
    assert!(!rt.log_path(&p, "client", 0).exists());
    env.assert_no_leftovers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_logs_env_volumes_and_start_errors() {
    require_runc!();
    let env = Env::new(2);
    let rt = env.runtime();
    let p = pod("jobs");
    rt.create_sandbox(&p, &sandbox("jobs")).await.unwrap();
    let mut rx = rt.exits();

    // Exit code, reason and CRI logs of both streams.
    let mut c = config(
        "main",
        &["sh", "-c", "echo out; echo err >&2; printf partial; exit 3"],
    );
    c.attempt = 2;
    let inst = rt.start_container(&p, &c).await.unwrap();
    assert_eq!(inst.attempt, 2);
    let n = next_exit(&mut rx, &inst.id).await;
    assert_eq!(n.exit.exit_code, 3);
    assert_eq!(n.exit.reason, ExitReason::Error);
    assert!(n.exit.started_at.is_some());
    let log = rt.log_path(&p, "main", 2);
    assert!(log.ends_with(format!("default_jobs_{}/main/2.log", p.uid)));
    let mut recs = records(&log);
    recs.sort();
    assert_eq!(
        recs,
        vec![
            ("stderr".into(), "F".into(), "err".into()),
            ("stdout".into(), "F".into(), "out".into()),
            ("stdout".into(), "F".into(), "partial".into()),
        ]
    );
    let listed = rt.list().await;
    let k = listed.iter().find(|k| k.instance.id == inst.id).unwrap();
    assert_eq!(k.container, "main");
    assert_eq!(k.instance.exit().unwrap().exit_code, 3);

    // Env (image, then container; HOSTNAME), working dir, a volume read-write, one read-only.
    let vol = env.dir.join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("in"), "from-host\n").unwrap();
    let mut c = config(
        "env",
        &[
            "sh",
            "-c",
            "echo $FROM_IMAGE $MINE $HOSTNAME $(pwd); cat /ro/in; echo w > /rw/out; echo x > /ro/x || echo ro-refused",
        ],
    );
    c.env = vec![("MINE".into(), "set".into())];
    c.working_dir = Some("/tmp".into());
    c.mounts = vec![
        Mount {
            host_path: vol.clone(),
            container_path: "/rw".into(),
            read_only: false,
        },
        Mount {
            host_path: vol.clone(),
            container_path: "/ro".into(),
            read_only: true,
        },
    ];
    let inst = rt.start_container(&p, &c).await.unwrap();
    let n = next_exit(&mut rx, &inst.id).await;
    assert_eq!(n.exit.exit_code, 0);
    assert_eq!(n.exit.reason, ExitReason::Completed);
    let out: Vec<String> = records(&rt.log_path(&p, "env", 0))
        .into_iter()
        .filter(|r| r.0 == "stdout")
        .map(|r| r.2)
        .collect();
    assert_eq!(out[0], "yes set jobs /tmp");
    assert_eq!(out[1], "from-host");
    assert!(out.iter().any(|l| l == "ro-refused"), "{out:?}");
    assert_eq!(std::fs::read_to_string(vol.join("out")).unwrap(), "w\n");
    assert!(!vol.join("x").exists());

    // A terminal.
    let mut c = config("tty", &["sh", "-c", "tty; echo on-a-tty"]);
    c.tty = true;
    let inst = rt.start_container(&p, &c).await.unwrap();
    let n = next_exit(&mut rx, &inst.id).await;
    assert_eq!(n.exit.exit_code, 0);
    let out: Vec<String> = records(&rt.log_path(&p, "tty", 0))
        .into_iter()
        .map(|r| r.2.trim_end_matches('\r').to_string())
        .collect();
    assert!(out.iter().any(|l| l.starts_with("/dev/pts/")), "{out:?}");
    assert!(out.iter().any(|l| l == "on-a-tty"), "{out:?}");

    // An open stdin that nobody writes to: `read` waits instead of seeing the end.
    let mut c = config("stdin", &["sh", "-c", "read -t 1 x; echo read=$?"]);
    c.stdin = true;
    let inst = rt.start_container(&p, &c).await.unwrap();
    next_exit(&mut rx, &inst.id).await;
    let out = records(&rt.log_path(&p, "stdin", 0));
    assert_ne!(out[0].2, "read=0", "{out:?}");

    // Start failures.
    let err = rt
        .start_container(&p, &config("nope", &["nope"]))
        .await
        .unwrap_err();
    let StartError::Run(msg) = err else {
        panic!("{err:?}")
    };
    assert!(
        msg.contains(r#"exec: "nope": executable file not found in $PATH"#),
        "{msg}"
    );
    assert!(
        msg.starts_with("failed to create containerd task: "),
        "{msg}"
    );
    let listed = rt.list().await;
    let k = listed.iter().find(|k| k.container == "nope").unwrap();
    let e = k
        .instance
        .exit()
        .expect("a failed start is listed as exited");
    assert_eq!(e.exit_code, 128);
    assert_eq!(e.reason, ExitReason::StartError);
    let err = rt
        .start_container(&p, &config("empty", &[]))
        .await
        .unwrap_err();
    assert_eq!(err, StartError::Create("no command specified".into()));
    let mut c = config("absent", &["true"]);
    c.image = "skiff.test/absent:1".into();
    assert!(matches!(
        rt.start_container(&p, &c).await,
        Err(StartError::Create(_))
    ));

    rt.remove_sandbox(&p).await.unwrap();
    env.assert_no_leftovers();

    // What the constructor says when the node lacks something.
    let mut c = env.config();
    c.runc_binary = "/nonexistent/runc".into();
    let e = RuncRuntime::new(c).err().unwrap();
    assert!(e.contains("install it: apt-get install runc"), "{e}");
    let mut c = env.config();
    c.cni_bin_dir = env.dir.join("image");
    let e = RuncRuntime::new(c).err().unwrap();
    assert!(
        e.contains("bridge, host-local, loopback")
            && e.contains("apt-get install containernetworking-plugins"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_is_an_oom_kill_and_resources_reach_cgroups() {
    require_runc!();
    let env = Env::new(3);
    let rt = env.runtime();
    let p = pod("hog");
    rt.create_sandbox(&p, &sandbox("hog")).await.unwrap();
    let mut rx = rt.exits();

    let mut c = config("limited", &["sleep", "1000"]);
    c.resources = Resources {
        cpu_request_millis: Some(250),
        cpu_limit_millis: Some(500),
        memory_limit_bytes: Some(20 << 20),
    };
    let inst = rt.start_container(&p, &c).await.unwrap();
    let key = inst.id.trim_start_matches("runc://");
    let cg = format!("{}/{key}", rt.pod_cgroup(&p));
    let read = |controller: &str, file: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{controller}{cg}/{file}"))
            .map(|s| s.trim().to_string())
    };
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        assert_eq!(read("", "memory.max").unwrap(), (20u64 << 20).to_string());
        assert_eq!(read("", "cpu.max").unwrap(), "50000 100000");
    } else {
        assert_eq!(
            read("memory", "memory.limit_in_bytes").unwrap(),
            (20u64 << 20).to_string()
        );
        if let Ok(swap) = read("memory", "memory.memsw.limit_in_bytes") {
            assert_eq!(swap, (20u64 << 20).to_string(), "the limit covers swap");
        }
        assert_eq!(read("cpu", "cpu.shares").unwrap(), "256");
        assert_eq!(read("cpu", "cpu.cfs_quota_us").unwrap(), "50000");
        assert_eq!(read("cpu", "cpu.cfs_period_us").unwrap(), "100000");
    }
    // A SIGKILL that is not the OOM killer's is an Error.
    let exit = rt
        .stop_container(&p, &inst.id, Duration::from_secs(0))
        .await
        .unwrap();
    assert_eq!(exit.exit_code, 137);
    assert_eq!(exit.reason, ExitReason::Error);

    let mut c = config(
        "hog",
        &[
            "sh",
            "-c",
            r#"x=$(head -c 100000000 /dev/zero | tr "\0" a); echo survived"#,
        ],
    );
    c.resources.memory_limit_bytes = Some(20 << 20);
    let inst = rt.start_container(&p, &c).await.unwrap();
    let n = next_exit(&mut rx, &inst.id).await;
    assert_eq!(
        n.exit.exit_code,
        137,
        "{:?} {:?}",
        n.exit,
        records(&rt.log_path(&p, "hog", 0))
    );
    assert_eq!(n.exit.reason, ExitReason::OOMKilled);

    rt.remove_sandbox(&p).await.unwrap();
    env.assert_no_leftovers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_uses_the_grace_period_then_kills() {
    require_runc!();
    let env = Env::new(4);
    let rt = env.runtime();
    let p = pod("stop");
    rt.create_sandbox(&p, &sandbox("stop")).await.unwrap();
    let mut rx = rt.exits();

    // TERM ignored: KILL after the grace period.
    let inst = rt
        .start_container(
            &p,
            &config(
                "stubborn",
                &["sh", "-c", "trap '' TERM; while true; do sleep 1; done"],
            ),
        )
        .await
        .unwrap();
    let t0 = Instant::now();
    let exit = rt
        .stop_container(&p, &inst.id, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(2));
    assert_eq!(exit.exit_code, 137);
    assert_eq!(next_exit(&mut rx, &inst.id).await.exit, exit);
    // Stopping again reports the same exit.
    assert_eq!(
        rt.stop_container(&p, &inst.id, Duration::from_secs(2))
            .await
            .unwrap(),
        exit
    );

    // TERM handled: a clean exit well before the grace period ends.
    let inst = rt
        .start_container(
            &p,
            &config(
                "polite",
                &[
                    "sh",
                    "-c",
                    "trap 'echo bye; exit 0' TERM; while true; do sleep 0.2; done",
                ],
            ),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let exit = rt
        .stop_container(&p, &inst.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(exit.exit_code, 0);
    let out = records(&rt.log_path(&p, "polite", 0));
    assert_eq!(out.last().unwrap().2, "bye");
    assert!(
        rt.stop_container(&p, "runc://nothing", Duration::ZERO)
            .await
            .is_err()
    );

    rt.remove_sandbox(&p).await.unwrap();
    env.assert_no_leftovers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_interactive_exec() {
    require_runc!();
    let env = Env::new(5);
    let rt = env.runtime();
    let p = pod("exec");
    rt.create_sandbox(&p, &sandbox("exec")).await.unwrap();
    let mut c = config("main", &["sleep", "1000"]);
    c.env = vec![("GREETING".into(), "hi".into())];
    let inst = rt.start_container(&p, &c).await.unwrap();

    let r = rt
        .exec(
            &p,
            &inst.id,
            &sv(&["sh", "-c", "echo $GREETING; echo oops >&2; exit 2"]),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, 2);
    assert!(!r.timed_out);
    assert!(
        r.output.contains("hi\n") && r.output.contains("oops\n"),
        "{:?}",
        r.output
    );

    let t0 = Instant::now();
    let r = rt
        .exec(
            &p,
            &inst.id,
            &sv(&["sleep", "60"]),
            Some(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    assert!(r.timed_out);
    assert!(t0.elapsed() < Duration::from_secs(50));
    let r = rt
        .exec(&p, &inst.id, &sv(&["ps"]), Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(
        !r.output.contains("sleep 60"),
        "the timed-out command is gone: {}",
        r.output
    );

    let r = rt.exec(&p, &inst.id, &sv(&["nope"]), None).await.unwrap();
    assert_eq!(r.exit_code, 127);
    assert_eq!(
        r.output,
        r#"OCI runtime exec failed: exec failed: unable to start container process: exec: "nope": executable file not found in $PATH: unknown"#
    );

    // Interactive: cat echoes stdin until it ends.
    let mut proc = rt
        .exec_stream(
            &p,
            &inst.id,
            &sv(&["cat"]),
            ExecStreams {
                stdin: true,
                stdout: true,
                stderr: true,
                tty: false,
            },
        )
        .await
        .unwrap();
    let mut stdin = proc.stdin.take().unwrap();
    stdin.write_all(b"round trip\n").await.unwrap();
    drop(stdin);
    let mut out = String::new();
    proc.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    assert_eq!(out, "round trip\n");
    assert_eq!(
        tokio::time::timeout(PATIENCE, proc.exit).await.unwrap(),
        Ok(0)
    );

    // With a terminal: the size set by resize is what the command sees.
    let mut proc = rt
        .exec_stream(
            &p,
            &inst.id,
            &sv(&["sh", "-c", "read line; stty size; echo got=$line; exit 4"]),
            ExecStreams {
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true,
            },
        )
        .await
        .unwrap();
    (proc.resize.as_ref().unwrap())(100, 30);
    let mut stdin = proc.stdin.take().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stdin.write_all(b"typed\r").await.unwrap();
    let mut out = Vec::new();
    let mut stdout = proc.stdout.take().unwrap();
    let _ = tokio::time::timeout(PATIENCE, stdout.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("got=typed"), "{out:?}");
    assert!(out.contains("30 100"), "{out:?}");
    assert_eq!(
        tokio::time::timeout(PATIENCE, proc.exit).await.unwrap(),
        Ok(4)
    );

    rt.stop_container(&p, &inst.id, Duration::ZERO)
        .await
        .unwrap();
    let e = rt
        .exec(&p, &inst.id, &sv(&["true"]), None)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        "failed to exec in container: container is in CONTAINER_EXITED state"
    );

    rt.remove_sandbox(&p).await.unwrap();
    env.assert_no_leftovers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_runtime_adopts_running_containers() {
    require_runc!();
    let env = Env::new(6);
    let p = pod("adopt");
    let (id, ip) = {
        let rt = env.runtime();
        let sb = rt.create_sandbox(&p, &sandbox("adopt")).await.unwrap();
        let inst = rt
            .start_container(
                &p,
                &config(
                    "waiter",
                    &["sh", "-c", "echo before; while [ ! -f /tmp/go ]; do sleep 0.1; done; echo after; exit 7"],
                ),
            )
            .await
            .unwrap();
        (inst.id, sb.pod_ip)
    };

    // The agent "restarts".
    let rt = env.runtime();
    let listed = rt.list().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].instance.id, id);
    assert_eq!(listed[0].pod_uid, p.uid);
    assert!(
        matches!(listed[0].instance.state, InstanceState::Running { .. }),
        "{:?}",
        listed[0].instance.state
    );
    assert_eq!(
        rt.create_sandbox(&p, &sandbox("adopt"))
            .await
            .unwrap()
            .pod_ip,
        ip
    );
    let mut rx = rt.exits();
    let r = rt
        .exec(
            &p,
            &id,
            &sv(&["touch", "/tmp/go"]),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, 0, "{}", r.output);
    let n = next_exit(&mut rx, &id).await;
    assert_eq!(n.exit.exit_code, 7);
    assert_eq!(n.exit.reason, ExitReason::Error);
    let out: Vec<String> = records(&rt.log_path(&p, "waiter", 0))
        .into_iter()
        .map(|r| r.2)
        .collect();
    assert_eq!(out, ["before", "after"]);

    // An exit that happens while no runtime runs is found by the next one.
    let inst = rt
        .start_container(&p, &config("quick", &["sh", "-c", "sleep 1; exit 5"]))
        .await
        .unwrap();
    drop(rt);
    // Runtimes come and go until one finds it exited; it is never lost in between.
    let deadline = Instant::now() + PATIENCE;
    let rt = loop {
        let rt = env.runtime();
        let listed = rt.list().await;
        let k = listed.iter().find(|k| k.instance.id == inst.id).unwrap();
        match &k.instance.state {
            InstanceState::Exited(e) => {
                assert_eq!(e.exit_code, 5);
                break rt;
            }
            InstanceState::Running { .. } => {}
            other => panic!("{other:?}"),
        }
        assert!(Instant::now() < deadline, "the exit was never found");
        drop(rt);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // A pod removed after a restart, from the on-disk state alone.
    let rt2 = env.runtime();
    drop(rt);
    rt2.remove_sandbox(&p).await.unwrap();
    env.assert_no_leftovers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_cycles_leave_nothing_behind() {
    require_runc!();
    let env = Env::new(7);
    let rt = env.runtime();
    let mut rx = rt.exits();
    for i in 0..30 {
        let p = pod(&format!("cycle{i}"));
        let sb = rt.create_sandbox(&p, &sandbox("cycle")).await.unwrap();
        assert!(sb.pod_ip.starts_with(&env.cidr_prefix));
        let inst = rt
            .start_container(&p, &config("main", &["sleep", "1000"]))
            .await
            .unwrap();
        if i % 3 == 0 {
            let done = rt
                .start_container(&p, &config("short", &["true"]))
                .await
                .unwrap();
            next_exit(&mut rx, &done.id).await;
        }
        if i == 5 {
            // The network namespace's mount is gone (e.g. unmounted by hand): CNI DEL still
            // releases the address, and the rest is removed.
            let ns = env.state.join("pods").join(&p.uid).join("ns").join("net");
            run("umount", &[ns.to_str().unwrap()]);
        }
        rt.remove_sandbox(&p).await.unwrap();
        assert_eq!(next_exit(&mut rx, &inst.id).await.exit.exit_code, 137);
        rt.remove_sandbox(&p).await.unwrap();
    }
    env.assert_no_leftovers();
}
