//! Test helpers: a real Debian `docker-registry` on 127.0.0.1 (optionally with htpasswd basic
//! auth), images built in Rust (a busybox image from the host's static /bin/busybox, and small
//! hand-made layers), pushed over the registry HTTP API.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

pub fn sha256(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running registry; killed (by its pid) on drop.
pub struct Registry {
    pub addr: String,
    child: Child,
    auth: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start(auth: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut auth_yaml = String::new();
        if let Some((u, p)) = auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .expect("htpasswd (apache2-utils) is required");
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).unwrap();
            auth_yaml = format!(
                "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
                file.display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {addr}\n  secret: skiff-test-secret\n{auth_yaml}",
            dir.path().join("data").display()
        );
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry is required (apt-get install docker-registry)");
        let reg = Registry {
            addr,
            child,
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200 | 401, _)) = http(&reg.addr, "GET", "/v2/", &[], &[]) {
                break;
            }
            assert!(Instant::now() < deadline, "registry did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    fn auth_header(&self) -> Vec<(String, String)> {
        match &self.auth {
            Some((u, p)) => vec![(
                "Authorization".into(),
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                ),
            )],
            None => vec![],
        }
    }

    /// Monolithic upload: POST an upload session, then PUT the bytes with `?digest=`.
    pub fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        let hdrs = self.auth_header();
        let (status, headers) = http(
            &self.addr,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &hdrs,
            &[],
        )
        .unwrap();
        assert_eq!(status, 202, "start upload");
        let loc = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("location"))
            .map(|(_, v)| v.clone())
            .expect("Location");
        let path = match loc.split_once("://") {
            Some((_, rest)) => format!("/{}", rest.split_once('/').unwrap().1),
            None => loc,
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut h = hdrs.clone();
        h.push(("Content-Type".into(), "application/octet-stream".into()));
        let (status, _) = http(
            &self.addr,
            "PUT",
            &format!("{path}{sep}digest={digest}"),
            &h,
            data,
        )
        .unwrap();
        assert_eq!(status, 201, "blob upload");
        digest
    }

    pub fn push_manifest(&self, repo: &str, tag: &str, media_type: &str, body: &[u8]) {
        let mut h = self.auth_header();
        h.push(("Content-Type".into(), media_type.into()));
        let (status, _) = http(
            &self.addr,
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &h,
            body,
        )
        .unwrap();
        assert_eq!(status, 201, "manifest put");
    }

    /// Pushes `image` as `repo:tag`; returns the manifest digest.
    pub fn push(&self, repo: &str, tag: &str, image: &Image) -> String {
        for (_, data) in &image.blobs {
            self.push_blob(repo, data);
        }
        self.push_manifest(repo, tag, OCI_MANIFEST, &image.manifest);
        image.manifest_digest.clone()
    }

    pub fn image_ref(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.addr)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 exchange: status and headers of the response.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok((status, headers))
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// An image's content: config, manifest and blobs (config and layers).
pub struct Image {
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    /// (digest, bytes): config first, then the compressed layers.
    pub blobs: Vec<(String, Vec<u8>)>,
    /// Uncompressed layer tars, in order.
    pub layer_tars: Vec<Vec<u8>>,
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// Builds an OCI image from uncompressed layer tars (gzipped for the manifest).
pub fn build_image(layer_tars: Vec<Vec<u8>>, cmd: &[&str]) -> Image {
    let diff_ids: Vec<String> = layer_tars.iter().map(|t| sha256(t)).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": cmd, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "skiff-images test", "created": "1970-01-01T00:00:00Z"}],
    }))
    .unwrap();
    let config_digest = sha256(&config);
    let mut blobs = vec![(config_digest.clone(), config.clone())];
    let mut layers = Vec::new();
    for t in &layer_tars {
        let gz = gzip(t);
        let d = sha256(&gz);
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": d, "size": gz.len()}));
        blobs.push((d, gz));
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": layers,
    }))
    .unwrap();
    Image {
        manifest_digest: sha256(&manifest),
        config,
        config_digest,
        manifest,
        blobs,
        layer_tars,
    }
}

/// One tar entry of a hand-made layer.
pub enum Entry<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
}

/// A reproducible layer tar: given order, mtime 0, owner 0:0.
pub fn layer_tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            Entry::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            Entry::File(p, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            Entry::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// The busybox rootfs registry.sh builds: /bin/busybox and its applet links, /etc/passwd and
/// group, /tmp (1777), empty /proc, /sys and /dev; sorted, mtime 0, owner 0:0.
pub fn busybox_layer() -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox (busybox-static)");
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    let mut applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::to_string)
        .filter(|a| !a.is_empty() && a != "busybox")
        .collect();
    applets.sort();
    applets.dedup();
    let mut entries: Vec<(String, Entry<'_>)> = Vec::new();
    let links: Vec<String> = applets.iter().map(|a| format!("bin/{a}")).collect();
    entries.push(("bin/".into(), Entry::Dir("bin/", 0o755)));
    entries.push((
        "bin/busybox".into(),
        Entry::File("bin/busybox", &busybox, 0o755),
    ));
    for l in &links {
        entries.push((l.clone(), Entry::Symlink(l, "busybox")));
    }
    entries.push(("dev/".into(), Entry::Dir("dev/", 0o755)));
    entries.push(("etc/".into(), Entry::Dir("etc/", 0o755)));
    entries.push((
        "etc/group".into(),
        Entry::File("etc/group", b"root:x:0:\n", 0o644),
    ));
    entries.push((
        "etc/passwd".into(),
        Entry::File("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
    ));
    entries.push(("proc/".into(), Entry::Dir("proc/", 0o755)));
    entries.push(("sys/".into(), Entry::Dir("sys/", 0o755)));
    entries.push(("tmp/".into(), Entry::Dir("tmp/", 0o1777)));
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let only: Vec<Entry<'_>> = entries.into_iter().map(|(_, e)| e).collect();
    layer_tar(&only)
}

pub fn busybox_image() -> Image {
    build_image(vec![busybox_layer()], &["sh"])
}

/// Writes `image` as an OCI image layout directory, its index entry annotated with `name`.
pub fn write_oci_layout(dir: &Path, image: &Image, annotations: serde_json::Value) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for (d, data) in &image.blobs {
        std::fs::write(blobs.join(hex_of(d)), data).unwrap();
    }
    std::fs::write(blobs.join(hex_of(&image.manifest_digest)), &image.manifest).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": image.manifest_digest,
        "size": image.manifest.len(), "annotations": annotations}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Tars up a directory tree (relative names, sorted).
pub fn tar_dir(dir: &Path, out: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    b.append_dir_all(".", dir).unwrap();
    b.finish().unwrap();
}

/// Writes a `docker save` style archive of `image` (uncompressed layer tars) named `tags`.
pub fn write_docker_save(out: &Path, image: &Image, tags: &[&str]) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
    };
    let config_name = format!("{}.json", hex_of(&image.config_digest));
    add(&config_name, &image.config);
    let mut layer_names = Vec::new();
    for (i, t) in image.layer_tars.iter().enumerate() {
        let name = format!("{:064x}/layer.tar", i + 1);
        add(&name, t);
        layer_names.push(name);
    }
    let manifest =
        serde_json::json!([{"Config": config_name, "RepoTags": tags, "Layers": layer_names}]);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    add("repositories", b"{}");
    b.finish().unwrap();
}

/// Mount points below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir))
        .collect()
}
