//! Real containers end to end: `skiff up --runtime runc` with a real registry (Debian's
//! docker-registry holding a busybox image), runc, CNI bridge networking and cgroups, driven by
//! the real kubectl. Each test runs its own cluster on its own bridge and pod CIDR, and removes
//! its pods and the bridge at the end.
//!
//! These tests need root, runc, the CNI plugins and docker-registry (`scripts/test` installs
//! them); without them each test says so and passes without checking anything.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::cluster::Cluster;
use common::eventually;
use common::registry::Registry;

/// Why this machine cannot run the tests, or None.
fn missing_parts() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    for (what, path) in [
        ("runc", "/usr/sbin/runc"),
        ("the CNI bridge plugin", "/usr/lib/cni/bridge"),
        ("docker-registry", "/usr/bin/docker-registry"),
        ("busybox-static", "/bin/busybox"),
    ] {
        if !PathBuf::from(path).exists() && !in_path(path.rsplit('/').next().unwrap_or(path)) {
            return Some(format!("{what} is not installed"));
        }
    }
    None
}

fn in_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

macro_rules! require_runc {
    () => {
        if let Some(why) = missing_parts() {
            eprintln!("skipping: {why} (scripts/test installs what these tests need)");
            return;
        }
    };
}

/// A bridge name and pod CIDR no other test on this machine holds (a lock file per slot).
struct Net {
    bridge: String,
    cidr: String,
    lock: PathBuf,
}

impl Net {
    fn take() -> Net {
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
                return Net {
                    bridge: format!("skt{n}"),
                    cidr: format!("10.244.{n}.0/24"),
                    lock,
                };
            }
        }
        panic!("no free test network slot (stale /tmp/skiff-test-net-*.lock files?)");
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        let _ = std::fs::remove_file(&self.lock);
    }
}

/// A runc cluster. The cluster drops (deleting its pods) before the network goes.
struct Runc {
    cluster: Cluster,
    _net: Net,
}

impl std::ops::Deref for Runc {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl Drop for Runc {
    /// Deletes the pods and waits for the agent to remove their sandboxes (mounts, cgroups,
    /// veths) before the cluster stops: containers outlive a stopped agent by design.
    fn drop(&mut self) {
        let _ = self.kubectl(&[
            "delete",
            "pods",
            "--all",
            "--grace-period=1",
            "--timeout=30s",
        ]);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !leftovers(self).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn runc_cluster() -> Runc {
    let net = Net::take();
    let cluster = Cluster::with(&[
        "--runtime",
        "runc",
        "--pod-cidr",
        &net.cidr,
        "--cni-bridge",
        &net.bridge,
    ]);
    Runc { cluster, _net: net }
}

impl Runc {
    fn apply_ok(&self, yaml: &str) {
        self.apply(yaml).ok();
    }

    fn logs(&self, pod: &str, container: &str) -> String {
        self.kubectl(&["logs", pod, "-c", container]).stdout
    }

    fn wait_logs(&self, pod: &str, container: &str, text: &str, secs: u64) -> String {
        eventually(secs, || {
            let l = self.logs(pod, container);
            l.contains(text).then_some(l)
        })
    }

    fn skiff(&self, args: &[&str]) -> common::Out {
        let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .output()
            .expect("run skiff");
        common::Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// GET `path` from `ip:port` over plain HTTP/1.0; the whole response.
fn http_get(ip: &str, port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().ok()?,
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

#[test]
fn a_pod_pulls_its_image_shares_an_emptydir_and_serves_http_at_its_ip() {
    require_runc!();
    let reg = Registry::start(None);
    let image = reg.push("busybox", "1");
    let c = runc_cluster();
    c.apply_ok(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  initContainers:
  - name: init
    image: {image}
    command: ["sh", "-c", "echo hello-from-init > /www/index.html"]
    volumeMounts: [{{name: www, mountPath: /www}}]
  containers:
  - name: web
    image: {image}
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    volumeMounts: [{{name: www, mountPath: /www}}]
    readinessProbe:
      httpGet: {{path: /, port: 8080}}
      periodSeconds: 1
  volumes: [{{name: www, emptyDir: {{}}}}]
"#
    ));
    c.wait_status("web", "Running", Some("1/1"), 90);
    let ip = c.field("web", "{.status.podIP}");
    let prefix = c._net.cidr.rsplit_once('.').unwrap().0.to_string();
    assert!(
        ip.starts_with(&prefix),
        "pod IP {ip} not in {}",
        c._net.cidr
    );
    let body = eventually(20, || http_get(&ip, 8080, "/"));
    assert!(body.contains("hello-from-init"), "{body}");

    let d = c.wait_describe("web", "Successfully pulled image", 10);
    assert!(d.contains(&format!("Pulling image \"{image}\"")), "{d}");
    assert!(
        d.contains(&format!("Successfully pulled image \"{image}\" in "))
            && d.contains("Image size: "),
        "{d}"
    );
    // The app container found the image already pulled by the init container.
    assert!(
        d.contains(&format!(
            "Container image \"{image}\" already present on machine"
        )),
        "{d}"
    );
    let image_id = c.field("web", "{.status.containerStatuses[0].imageID}");
    assert!(
        image_id.starts_with(&format!("{}/busybox@sha256:", reg.host())),
        "imageID {image_id}"
    );
    assert_eq!(
        c.field("web", "{.status.containerStatuses[0].image}"),
        image
    );

    // A second pod on the node: no pull at all.
    c.apply_ok(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: second}}
spec:
  containers: [{{name: c, image: {image}, command: ["sleep", "3600"]}}]
"#
    ));
    c.wait_status("second", "Running", None, 60);
    let d = c.wait_describe("second", "already present on machine", 10);
    assert!(!d.contains("Pulling image"), "{d}");

    // The node reports the image for the scheduler's ImageLocality.
    let images = eventually(30, || {
        let out = c.kubectl(&["get", "nodes", "-o", "jsonpath={.items[0].status.images}"]);
        out.stdout.contains(&image).then_some(out.stdout)
    });
    assert!(images.contains("sizeBytes"), "{images}");
}

#[test]
fn containers_of_a_pod_share_localhost_and_the_pods_hostname() {
    require_runc!();
    let reg = Registry::start(None);
    let image = reg.push("busybox", "1");
    let c = runc_cluster();
    c.apply_ok(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: duo}}
spec:
  containers:
  - name: server
    image: {image}
    command: ["httpd", "-f", "-p", "8080", "-h", "/etc"]
  - name: client
    image: {image}
    command: ["sh", "-c", "until wget -q -O- http://127.0.0.1:8080/hostname; do sleep 0.2; done; echo; echo host=$(hostname); sleep 3600"]
"#
    ));
    c.wait_status("duo", "Running", Some("2/2"), 90);
    let logs = c.wait_logs("duo", "client", "host=duo", 30);
    assert!(
        logs.starts_with("duo"),
        "client fetched /etc/hostname: {logs}"
    );
}

#[test]
fn image_defaults_env_and_working_dir_apply_as_in_kubernetes() {
    require_runc!();
    let reg = Registry::start(None);
    let image = reg.push("busybox", "1");
    let c = runc_cluster();
    c.apply_ok(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: defaults}}
spec:
  restartPolicy: Never
  containers:
  - name: image-cmd
    image: {image}
  - name: env
    image: {image}
    command: ["sh", "-c"]
    args: ["echo dir=$(pwd) path=$PATH greeting=$GREETING"]
    workingDir: /tmp
    env: [{{name: GREETING, value: "hi $(USER_NAME)"}}, {{name: USER_NAME, value: x}}]
"#
    ));
    // The image's cmd is `sh` with no input: it exits 0 at once.
    c.wait_status("defaults", "Completed", None, 90);
    let logs = c.logs("defaults", "env");
    assert!(
        logs.contains("dir=/tmp path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin greeting=hi $(USER_NAME)"),
        "{logs}"
    );
}

#[test]
fn a_container_over_its_memory_limit_is_oomkilled() {
    require_runc!();
    let reg = Registry::start(None);
    let image = reg.push("busybox", "1");
    let c = runc_cluster();
    c.apply_ok(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: hog}}
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: {image}
    command: ["sh", "-c", "echo start; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"]
    resources:
      limits: {{memory: 20Mi, cpu: 500m}}
"#
    ));
    c.wait_status("hog", "OOMKilled", None, 120);
    assert_eq!(
        c.field(
            "hog",
            "{.status.containerStatuses[0].state.terminated.reason} {.status.containerStatuses[0].state.terminated.exitCode}"
        ),
        "OOMKilled 137"
    );
    assert_eq!(c.field("hog", "{.status.phase}"), "Failed");
}

#[test]
fn a_missing_tag_backs_off_and_recovers_once_pushed() {
    require_runc!();
    let reg = Registry::start(None);
    reg.push("busybox", "1");
    let image = format!("{}/busybox:later", reg.host());
    let missing_repo = format!("{}/nothing:1", reg.host());
    let c = runc_cluster();
    c.apply_ok(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: later}}
spec:
  containers: [{{name: c, image: {image}, command: ["sleep", "3600"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: norepo}}
spec:
  containers: [{{name: c, image: {missing_repo}, command: ["sleep", "3600"]}}]
"#
    ));
    let d = c.wait_describe("later", "Back-off pulling image", 60);
    assert!(
        d.contains(&format!(
            "Failed to pull image \"{image}\": failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": {image}: not found"
        )),
        "{d}"
    );
    assert!(d.contains("Error: ErrImagePull"), "{d}");
    assert!(d.contains("Error: ImagePullBackOff"), "{d}");
    let status = c.row("later")[2].clone();
    assert!(
        status == "ErrImagePull" || status == "ImagePullBackOff",
        "{status}"
    );
    let d = c.wait_describe("norepo", "Error: ErrImagePull", 60);
    assert!(d.contains(&format!("{missing_repo}: not found")), "{d}");

    // Pushed later: the next retry pulls it and the pod runs, with no help.
    reg.push("busybox", "later");
    c.wait_status("later", "Running", None, 120);
}

#[test]
fn a_private_registry_needs_an_image_pull_secret() {
    require_runc!();
    let reg = Registry::start(Some("alice:s3cret"));
    let image = reg.push("busybox", "1");
    let c = runc_cluster();
    c.apply_ok(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: nocreds}}
spec:
  containers: [{{name: c, image: {image}, command: ["sleep", "3600"]}}]
"#
    ));
    let d = c.wait_describe("nocreds", "Error: ErrImagePull", 60);
    assert!(
        d.contains(&format!("Failed to pull image \"{image}\"")) && d.contains("authoriz"),
        "{d}"
    );
    c.kubectl(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={}", reg.host()),
        "--docker-username=alice",
        "--docker-password=s3cret",
    ])
    .ok();
    c.apply_ok(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: withcreds}}
spec:
  imagePullSecrets: [{{name: regcred}}]
  containers: [{{name: c, image: {image}, command: ["sleep", "3600"]}}]
"#
    ));
    c.wait_status("withcreds", "Running", None, 90);
}

#[test]
fn pull_policy_never_and_invalid_names_are_reported() {
    require_runc!();
    let reg = Registry::start(None);
    let c = runc_cluster();
    let absent = format!("{}/busybox:absent", reg.host());
    c.apply_ok(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: never}}
spec:
  containers: [{{name: c, image: {absent}, imagePullPolicy: Never, command: ["true"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: badname}}
spec:
  containers: [{{name: c, image: "{host}/BadName:1", command: ["true"]}}]
"#,
        host = reg.host()
    ));
    c.wait_status("never", "ErrImageNeverPull", None, 60);
    let d = c.wait_describe(
        "never",
        &format!("Container image \"{absent}\" is not present with pull policy of Never"),
        20,
    );
    assert!(d.contains("Error: ErrImageNeverPull"), "{d}");
    c.wait_status("badname", "InvalidImageName", None, 60);
    let d = c.wait_describe("badname", "Failed to apply default image tag", 20);
    assert!(d.contains("Error: InvalidImageName"), "{d}");
}

#[test]
fn exec_and_exec_probes_run_inside_the_container() {
    require_runc!();
    let reg = Registry::start(None);
    let image = reg.push("busybox", "1");
    let c = runc_cluster();
    c.apply_ok(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: box}}
spec:
  containers:
  - name: c
    image: {image}
    command: ["sleep", "3600"]
    readinessProbe:
      exec: {{command: ["test", "-f", "/tmp/ready"]}}
      periodSeconds: 1
"#
    ));
    c.wait_status("box", "Running", Some("0/1"), 90);
    let out = c
        .kubectl(&[
            "exec",
            "box",
            "--",
            "sh",
            "-c",
            "hostname; cat /proc/1/cmdline | tr '\\0' ' '",
        ])
        .ok();
    assert_eq!(out.stdout, "box\nsleep 3600 ");
    let out = c.kubectl(&["exec", "box", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.code, 3, "{out:?}");
    let out = c
        .kubectl_stdin(&["exec", "-i", "box", "--", "cat"], Some("piped\n"))
        .ok();
    assert_eq!(out.stdout, "piped\n");
    // A terminal inside the container (runc allocates it in the container's devpts).
    let out = c.exec_tty("box -- sh -c 'tty; echo inside $(hostname)'");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("/dev/pts/"), "{out:?}");
    assert!(out.stdout.contains("inside box"), "{out:?}");
    // The probe looks inside the container's filesystem, not the node's.
    c.kubectl(&["exec", "box", "--", "touch", "/tmp/ready"])
        .ok();
    c.wait_status("box", "Running", Some("1/1"), 30);
}

#[test]
fn skiff_image_import_loads_an_image_without_a_registry() {
    require_runc!();
    // The registry helper only builds the OCI layout here; nothing is pushed or pulled.
    let reg = Registry::start(None);
    let layout = reg.layout();
    // Name the image as `ctr`/`kind load` archives do.
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["manifests"][0]["annotations"]["io.containerd.image.name"] =
        "skiff.test/busybox:imported".into();
    std::fs::write(&index_path, index.to_string()).unwrap();
    let c = runc_cluster();
    let out = c.skiff(&["image", "import", layout.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("imported skiff.test/busybox:imported"),
        "{out:?}"
    );
    let listed = c.skiff(&["image", "ls"]);
    assert_eq!(listed.code, 0, "{listed:?}");
    assert!(listed.stdout.starts_with("IMAGE"), "{listed:?}");
    assert!(
        listed.stdout.contains("skiff.test/busybox:imported"),
        "{listed:?}"
    );
    c.apply_ok(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: imported}
spec:
  containers: [{name: c, image: "skiff.test/busybox:imported", imagePullPolicy: Never, command: ["sleep", "3600"]}]
"#,
    );
    c.wait_status("imported", "Running", None, 60);
}

/// What the runc runtime still holds for the cluster: pod directories, mounts under its state,
/// pod cgroups (memory controller).
fn leftovers(c: &Runc) -> Vec<String> {
    let state = c.data_dir().join("agent/runc");
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

#[test]
fn deleted_pods_leave_no_sandbox_mount_or_cgroup_behind() {
    require_runc!();
    let reg = Registry::start(None);
    let image = reg.push("busybox", "1");
    let c = runc_cluster();
    for round in 0..3 {
        c.apply_ok(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: runs-{round}}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: c, image: {image}, command: ["sleep", "3600"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: done-{round}}}
spec:
  restartPolicy: Never
  containers: [{{name: c, image: {image}, command: ["true"]}}]
"#
        ));
        c.wait_status(&format!("runs-{round}"), "Running", None, 60);
        c.wait_status(&format!("done-{round}"), "Completed", None, 60);
        let uids = c
            .kubectl(&["get", "pods", "-o", "jsonpath={.items[*].metadata.uid}"])
            .ok()
            .stdout;
        c.kubectl(&["delete", "pods", "--all", "--wait"]).ok();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = leftovers(&c);
            if left.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "left behind 30 s after the delete: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        for uid in uids.split_whitespace() {
            for ctl in ["memory", "cpu,cpuacct", "pids"] {
                let dir = PathBuf::from(format!("/sys/fs/cgroup/{ctl}/skiff/pod{uid}"));
                assert!(!dir.exists(), "cgroup left: {}", dir.display());
            }
        }
    }
}
