//! A real registry for tests: Debian's `docker-registry` on 127.0.0.1 at a free port, started by
//! `scripts/testbed-registry.sh` in a temporary directory, holding the busybox image it builds from
//! Debian's busybox-static. Stopped (by its pid file) when dropped.

use std::path::PathBuf;
use std::process::Command;

pub struct Registry {
    dir: tempfile::TempDir,
    pub port: u16,
    auth: Option<String>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/testbed-registry.sh")
}

impl Registry {
    /// Starts a registry; `auth` (`user:password`) turns on htpasswd basic auth.
    pub fn start(auth: Option<&str>) -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let r = Registry {
            dir: tempfile::tempdir().expect("tempdir"),
            port,
            auth: auth.map(String::from),
        };
        r.run(&["start"], &[]);
        r
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes the busybox image as `REPO:TAG`; returns the image reference.
    pub fn push(&self, repo: &str, tag: &str) -> String {
        self.run(&["push"], &[("IMAGE", repo), ("TAG", tag)]);
        format!("{}/{repo}:{tag}", self.host())
    }

    /// The OCI image layout the script built (for `skiff image import`).
    pub fn layout(&self) -> PathBuf {
        self.run(&["build"], &[]);
        self.dir.path().join("oci")
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) {
        let out = Command::new("bash")
            .arg(script())
            .args(args)
            .env("REG_DIR", self.dir.path())
            .env("REG_PORT", self.port.to_string())
            .env("REG_AUTH", self.auth.as_deref().unwrap_or(""))
            .envs(env.iter().copied())
            .output()
            .expect("run testbed-registry.sh");
        assert!(
            out.status.success(),
            "testbed-registry.sh {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .env("REG_DIR", self.dir.path())
            .output();
    }
}
