//! gRPC probes end to end: `skiff up --runtime runc`, the `grpc-health` test server
//! (crates/testsupport) packaged as an OCI image layout of itself and loaded with
//! `skiff image import`, and pods probing it over the pod network.
//!
//! Cargo gives `CARGO_BIN_EXE_grpc-health` only to skiff-testsupport's own tests, so this test
//! finds the binary next to the skiff binary (`<target>/<profile>/grpc-health`, there after a
//! workspace build such as `cargo nextest run --workspace`) and builds it with
//! `cargo build -p skiff-testsupport` when it is missing or older than its sources.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::runc::{Runc, skip};

/// The `grpc-health` binary of this build, built when missing or stale.
fn grpc_health_binary() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_skiff")).parent().unwrap();
    let bin = dir.join("grpc-health");
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testsupport");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let newest = [
        "Cargo.toml",
        "src/lib.rs",
        "src/health.rs",
        "src/image.rs",
        "src/bin/grpc-health.rs",
    ]
    .iter()
    .filter_map(|f| modified(&sources.join(f)))
    .max();
    let stale = match (modified(&bin), newest) {
        (None, _) => true,
        (Some(b), Some(s)) => b < s,
        (Some(_), None) => false,
    };
    if stale {
        let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", "skiff-testsupport", "--bin", "grpc-health"])
            .current_dir(&sources);
        if profile != "debug" {
            cmd.args(["--profile", profile]);
        }
        if let Some(target) = dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        assert!(cmd.status().expect("cargo build").success());
    }
    bin
}

/// Imports `skiff.test/grpc-health:1` into the cluster's node.
fn import_image(c: &Runc) {
    let layout = tempfile::tempdir().unwrap();
    let out = Command::new(grpc_health_binary())
        .arg("oci-layout")
        .arg(layout.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = c.skiff(&["image", "import", layout.path().to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("imported skiff.test/grpc-health:1"),
        "{out:?}"
    );
}

#[test]
fn grpc_probes_mark_ready_and_restart_on_not_serving() {
    if skip() {
        return;
    }
    let c = Runc::start();
    import_image(&c);
    c.apply_ok(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: grpc-ready}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: skiff.test/grpc-health:1
    imagePullPolicy: Never
    args: ["--port", "9090"]
    readinessProbe: {grpc: {port: 9090}, periodSeconds: 1}
    livenessProbe: {grpc: {port: 9090, service: ok}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: grpc-bad}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: skiff.test/grpc-health:1
    imagePullPolicy: Never
    args: ["--port", "9090"]
    livenessProbe: {grpc: {port: 9090, service: bad}, periodSeconds: 1, failureThreshold: 2}
"#,
    );
    c.wait_status("grpc-ready", "Running", Some("1/1"), 60);
    let d = c.wait_describe(
        "grpc-bad",
        r#"Liveness probe failed: service unhealthy (responded with "NOT_SERVING")"#,
        60,
    );
    assert!(d.contains("Unhealthy"), "{d}");
    c.wait_describe(
        "grpc-bad",
        "Container app failed liveness probe, will be restarted",
        60,
    );
    common::eventually(60, || {
        let n: u32 = c
            .field("grpc-bad", "{.status.containerStatuses[0].restartCount}")
            .parse()
            .unwrap_or(0);
        (n >= 1).then_some(())
    });
    // The healthy pod was never restarted and stays ready.
    assert_eq!(
        c.field("grpc-ready", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
    let d = common::squash(&c.describe("grpc-ready"));
    assert!(!d.contains("probe failed"), "{d}");
}
