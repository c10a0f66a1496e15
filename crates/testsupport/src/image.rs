//! An OCI image layout holding one dynamically linked binary and what it needs to run in a
//! container with nothing else: each shared library `ldd` lists and the dynamic loader, at
//! their host paths. The layout is what `skiff image import` reads: `oci-layout`, `index.json`
//! (the image named by the `io.containerd.image.name` annotation), and `blobs/sha256/` with the
//! gzip layer, the config and the manifest.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

/// The name the `grpc-health` image is imported under.
pub const GRPC_HEALTH_IMAGE: &str = "skiff.test/grpc-health:1";

/// Writes a layout to `dir` of an image `name` whose entrypoint is `binary`, copied to
/// `target` (an absolute path in the image).
pub fn write_layout(binary: &Path, target: &str, name: &str, dir: &Path) -> Result<(), String> {
    let mut files: Vec<(String, PathBuf, u32)> = vec![(
        target.trim_start_matches('/').to_string(),
        binary.to_path_buf(),
        0o755,
    )];
    for lib in shared_libraries(binary)? {
        files.push((
            lib.trim_start_matches('/').to_string(),
            PathBuf::from(&lib),
            0o755,
        ));
    }
    let layer = layer_tar(&files)?;
    let diff_id = sha256_hex(&layer);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer).map_err(|e| e.to_string())?;
    let layer_gz = gz.finish().map_err(|e| e.to_string())?;

    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| format!("{}: {e}", blobs.display()))?;
    let put = |bytes: &[u8]| -> Result<(String, usize), String> {
        let hex = sha256_hex(bytes);
        std::fs::write(blobs.join(&hex), bytes).map_err(|e| e.to_string())?;
        Ok((format!("sha256:{hex}"), bytes.len()))
    };
    let (layer_digest, layer_size) = put(&layer_gz)?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Entrypoint": [target], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
    });
    let (config_digest, config_size) = put(config.to_string().as_bytes())?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": layer_size,
        }],
    });
    let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes())?;
    let tag = name.rsplit_once(':').map_or("latest", |(_, t)| t);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The absolute paths of the shared libraries and loader `ldd` reports for `binary` (none for
/// a static binary).
pub fn shared_libraries(binary: &Path) -> Result<Vec<String>, String> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "not a dynamic executable"
        return Ok(Vec::new());
    }
    Ok(parse_ldd(&text))
}

/// The paths in `ldd` output: `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x…)`; the vDSO has no file.
pub fn parse_ldd(text: &str) -> Vec<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            out.insert(p.to_string());
        }
    }
    out.into_iter().collect()
}

/// A tar of `files` (path in the image, source, mode), following symlinks, with a directory
/// entry for every parent.
fn layer_tar(files: &[(String, PathBuf, u32)]) -> Result<Vec<u8>, String> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = BTreeSet::new();
    for d in ["etc", "tmp", "proc", "dev", "sys"] {
        dirs.insert(d.to_string());
    }
    for (path, _, _) in files {
        let mut p = Path::new(path).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_string_lossy().into_owned());
            p = d.parent();
        }
    }
    for d in &dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(if d == "tmp" { 0o1777 } else { 0o755 });
        h.set_size(0);
        h.set_mtime(0);
        b.append_data(&mut h, format!("{d}/"), std::io::empty())
            .map_err(|e| e.to_string())?;
    }
    for (path, source, mode) in files {
        let data = std::fs::read(source).map_err(|e| format!("{}: {e}", source.display()))?;
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(*mode);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, path, data.as_slice())
            .map_err(|e| e.to_string())?;
    }
    b.into_inner().map_err(|e| e.to_string())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `grpc-health` binary of this workspace's build: next to the binaries of the calling
/// test (`<target>/<profile>/`), built with `cargo build -p skiff-testsupport` when missing or
/// older than this crate's sources (a `-p <other>` test run does not build it). `exe_dir` is
/// the directory of a binary of the same profile (`CARGO_BIN_EXE_…`'s parent, or the test
/// binary's `deps/` parent).
pub fn grpc_health_binary(exe_dir: &Path) -> PathBuf {
    static BUILT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let bin = exe_dir.join("grpc-health");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let sources = Path::new(env!("CARGO_MANIFEST_DIR"));
    let newest_source = [
        "Cargo.toml",
        "src/lib.rs",
        "src/health.rs",
        "src/image.rs",
        "src/bin/grpc-health.rs",
    ]
    .iter()
    .filter_map(|f| modified(&sources.join(f)))
    .max();
    let stale = match (modified(&bin), newest_source) {
        (None, _) => true,
        (Some(b), Some(s)) => b < s,
        (Some(_), None) => false,
    };
    if stale {
        let profile = exe_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("debug");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "skiff-testsupport", "--bin", "grpc-health"]);
        cmd.current_dir(sources);
        if profile != "debug" {
            cmd.args(["--profile", profile]);
        }
        if let Some(target) = exe_dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        let status = cmd.status().expect("run cargo build for grpc-health");
        assert!(status.success(), "cargo build -p skiff-testsupport failed");
    }
    bin
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }
}
