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
use std::time::Duration;

use common::eventually;
use common::registry::Registry;
use common::runc::Runc;

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
    if common::runc::skip() {
        return;
    }
    let reg = Registry::start(None);
    let image = reg.push("busybox", "1");
    let c = Runc::start();
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
    let prefix = c.slot.pod_cidr().rsplit_once('.').unwrap().0.to_string();
    assert!(
        ip.starts_with(&prefix),
        "pod IP {ip} not in {}",
        c.slot.pod_cidr()
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
    if common::runc::skip() {
        return;
    }
    let reg = Registry::start(None);
    let image = reg.push("busybox", "1");
    let c = Runc::start();
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
    if common::runc::skip() {
        return;
    }
    let reg = Registry::start(None);
    let image = reg.push("busybox", "1");
    let c = Runc::start();
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
    if common::runc::skip() {
        return;
    }
    let reg = Registry::start(None);
    let image = reg.push("busybox", "1");
    let c = Runc::start();
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
    if common::runc::skip() {
        return;
    }
    let reg = Registry::start(None);
    reg.push("busybox", "1");
    let image = format!("{}/busybox:later", reg.host());
    let missing_repo = format!("{}/nothing:1", reg.host());
    let c = Runc::start();
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
    if common::runc::skip() {
        return;
    }
    let reg = Registry::start(Some("alice:s3cret"));
    let image = reg.push("busybox", "1");
    let c = Runc::start();
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
    if common::runc::skip() {
        return;
    }
    let reg = Registry::start(None);
    let c = Runc::start();
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
    if common::runc::skip() {
        return;
    }
    let reg = Registry::start(None);
    let image = reg.push("busybox", "1");
    let c = Runc::start();
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
    if common::runc::skip() {
        return;
    }
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
    let c = Runc::start();
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

#[test]
fn deleted_pods_leave_no_sandbox_mount_or_cgroup_behind() {
    if common::runc::skip() {
        return;
    }
    let reg = Registry::start(None);
    let image = reg.push("busybox", "1");
    let c = Runc::start();
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
            let left = c.leftovers();
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

#[test]
fn kubectl_run_with_args_shows_container_creating_then_running() {
    if common::runc::skip() {
        return;
    }
    let reg = Registry::start(None);
    let image = reg.push("busybox", "1");
    let c = Runc::start();
    // Watch the collection (a watch on one named pod fails while it does not exist yet); an
    // unschedulable marker pod makes kubectl print as soon as it has listed.
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: zz-marker}
spec:
  nodeSelector: {skiff.test/nowhere: "true"}
  containers: [{name: c, image: busybox:1.36}]
"#,
    )
    .ok();
    let w = c.watch(&["pods"]);
    w.wait_for(30, "the marker pod", |l| l.starts_with("zz-marker"));
    // `kubectl run IMG -- ARGS` sets args only: the image's (empty) entrypoint + the args.
    c.kubectl(&[
        "run",
        "web",
        &format!("--image={image}"),
        "--",
        "httpd",
        "-f",
        "-p",
        "8080",
    ])
    .ok();
    let web = |l: &str| l.split_whitespace().next() == Some("web");
    w.wait_for(90, "Running", |l| {
        web(l) && l.split_whitespace().nth(2) == Some("Running")
    });
    let statuses: Vec<String> = w
        .lines()
        .iter()
        .filter(|l| web(l))
        .filter_map(|l| l.split_whitespace().nth(2).map(String::from))
        .collect();
    assert!(
        statuses.iter().any(|s| s == "ContainerCreating"),
        "{statuses:?}"
    );
    let ip = c.field("web", "{.status.podIP}");
    let body = eventually(20, || http_get(&ip, 8080, "/"));
    assert!(body.starts_with("HTTP/1."), "{body}");
}
