//! Pulls from a real registry (Debian's docker-registry on 127.0.0.1).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use skiff_images::{ImageStore, PullError, PullOptions};

fn store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = ImageStore::open(&dir.path().join("images")).unwrap();
    (dir, s)
}

fn blob_count(root: &Path) -> usize {
    std::fs::read_dir(root.join("images/blobs/sha256"))
        .unwrap()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_status_list_rootfs() {
    let reg = Registry::start(None);
    let image = busybox_image();
    let manifest_digest = reg.push("busybox", "1", &image);
    let name = reg.image_ref("busybox", "1");
    let (dir, s) = store();

    // Two concurrent pulls of one reference share a download.
    let opts = PullOptions::default();
    let (a, b) = tokio::join!(s.pull(&name, &opts), s.pull(&name, &opts));
    let info = a.unwrap();
    assert_eq!(b.unwrap(), info);
    assert_eq!(info.id, image.config_digest);
    let repo_digest = format!("{}/busybox@{manifest_digest}", reg.addr);
    assert_eq!(info.repo_digest.as_deref(), Some(repo_digest.as_str()));
    assert!(info.names.contains(&name), "{:?}", info.names);
    assert!(info.names.contains(&repo_digest), "{:?}", info.names);
    let expected_size: u64 = image.blobs.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(info.size_bytes, expected_size);
    assert!(info.size_bytes > 500_000);
    assert_eq!(info.config.cmd, vec!["sh"]);
    assert_eq!(info.config.working_dir.as_deref(), Some("/"));

    // Found locally by every name, without the network.
    for n in [
        name.as_str(),
        repo_digest.as_str(),
        info.id.as_str(),
        &info.id[7..],
    ] {
        assert_eq!(s.status(n).unwrap().as_ref(), Some(&info), "{n}");
    }
    assert_eq!(s.status(&reg.image_ref("busybox", "2")).unwrap(), None);
    assert_eq!(s.list(), vec![info.clone()]);

    // A second pull downloads nothing.
    let blobs = blob_count(dir.path());
    let t = Instant::now();
    let again = s.pull(&name, &opts).await.unwrap();
    assert_eq!(again, info);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(blob_count(dir.path()), blobs);

    // The same content under another tag: one image, two names.
    reg.push("busybox", "latest", &image);
    let other = s
        .pull(&format!("{}/busybox", reg.addr), &opts)
        .await
        .unwrap();
    assert_eq!(other.id, info.id);
    assert_eq!(s.list().len(), 1);
    assert!(
        s.list()[0]
            .names
            .contains(&reg.image_ref("busybox", "latest"))
    );

    // A rootfs to run: overlayfs over the unpacked layer.
    let cdir = dir.path().join("containers/c1");
    let rootfs = s.prepare_rootfs(&name, &cdir).unwrap();
    assert_eq!(rootfs, cdir.canonicalize().unwrap().join("rootfs"));
    assert!(rootfs.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(rootfs.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let out = std::process::Command::new("chroot")
        .arg(&rootfs)
        .args(["/bin/sh", "-c", "echo hi > /tmp/x && cat /tmp/x"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    let mounted = mounts_under(&cdir.canonicalize().unwrap());
    assert_eq!(mounted, vec![rootfs.clone()], "expected an overlay mount");
    // Idempotent.
    assert_eq!(s.prepare_rootfs(&name, &cdir).unwrap(), rootfs);
    assert_eq!(mounts_under(&cdir.canonicalize().unwrap()).len(), 1);
    // The write went to the container's upper directory, not the shared layer.
    assert!(cdir.join("upper/tmp/x").is_file());

    // Removing the image while the rootfs is prepared keeps its layers.
    s.remove(&name).unwrap();
    assert!(s.status(&name).unwrap().is_none());
    assert!(rootfs.join("bin/busybox").is_file());
    assert_eq!(s.prepare_rootfs(&name, &cdir).unwrap(), rootfs);
    // Mount gone (a reboot): prepared again over the same upper directory.
    let status = std::process::Command::new("umount")
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(!rootfs.join("bin/busybox").exists());
    assert_eq!(s.prepare_rootfs(&name, &cdir).unwrap(), rootfs);
    assert_eq!(std::fs::read(rootfs.join("tmp/x")).unwrap(), b"hi\n");

    s.release_rootfs(&cdir).unwrap();
    assert!(mounts_under(&cdir.canonicalize().unwrap()).is_empty());
    assert!(!cdir.join("rootfs").exists());
    assert!(!cdir.join("upper").exists());
    s.release_rootfs(&cdir).unwrap();
    s.release_rootfs(&dir.path().join("never-made")).unwrap();
    // Now nothing holds the layers.
    s.gc(u64::MAX, 0, &[]).unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path().join("images/layers"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(blob_count(dir.path()), 0);
}

#[tokio::test]
async fn missing_tag_and_repository() {
    let reg = Registry::start(None);
    reg.push("busybox", "1", &busybox_image());
    let (_dir, s) = store();
    for name in [
        reg.image_ref("busybox", "nope"),
        reg.image_ref("nothere", "1"),
    ] {
        let err = s.pull(&name, &PullOptions::default()).await.unwrap_err();
        assert_eq!(
            err,
            PullError::NotFound(format!(
                "failed to pull and unpack image \"{name}\": failed to resolve reference \"{name}\": {name}: not found"
            ))
        );
    }
    // Short names are normalised in the message.
    let err = s
        .pull(&format!("{}/busybox", reg.addr), &PullOptions::default())
        .await
        .unwrap_err();
    let full = format!("{}/busybox:latest", reg.addr);
    assert!(
        err.to_string()
            .starts_with(&format!("failed to pull and unpack image \"{full}\"")),
        "{err}"
    );
    let err = s
        .pull("Bad/Name", &PullOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::Invalid(_)), "{err}");
}

#[tokio::test]
async fn registry_down() {
    let port = free_port();
    let (_dir, s) = store();
    let name = format!("127.0.0.1:{port}/busybox:1");
    let err = s.pull(&name, &PullOptions::default()).await.unwrap_err();
    let PullError::Unavailable(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(
        msg.starts_with(&format!(
            "failed to pull and unpack image \"{name}\": failed to resolve reference \"{name}\": failed to do request: "
        )),
        "{msg}"
    );
    assert!(
        msg.ends_with(&format!(
            "dial tcp 127.0.0.1:{port}: connect: connection refused"
        )),
        "{msg}"
    );
}

#[tokio::test]
async fn basic_auth() {
    let reg = Registry::start(Some(("alice", "s3cret")));
    let image = busybox_image();
    reg.push("private/busybox", "1", &image);
    let name = reg.image_ref("private/busybox", "1");
    let (_dir, s) = store();

    let err = s.pull(&name, &PullOptions::default()).await.unwrap_err();
    let PullError::Unauthorized(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(msg.starts_with(&format!("failed to pull and unpack image \"{name}\": failed to resolve reference \"{name}\": pull access denied, repository does not exist or may require authorization: ")), "{msg}");
    assert!(msg.contains("401 Unauthorized"), "{msg}");

    let bad = PullOptions {
        auth: Some(("alice".into(), "wrong".into())),
        ..Default::default()
    };
    let err = s.pull(&name, &bad).await.unwrap_err();
    assert!(matches!(err, PullError::Unauthorized(_)), "{err:?}");

    let good = PullOptions {
        auth: Some(("alice".into(), "s3cret".into())),
        ..Default::default()
    };
    let info = s.pull(&name, &good).await.unwrap();
    assert_eq!(info.id, image.config_digest);
}

#[tokio::test]
async fn whiteouts_through_overlay_and_copy() {
    let reg = Registry::start(None);
    let base = layer_tar(&[
        Entry::Dir("etc/", 0o755),
        Entry::File("etc/group", b"root:x:0:\n", 0o644),
        Entry::File("etc/passwd", b"root:x:0:0::/:/bin/sh\n", 0o644),
        Entry::Dir("var/", 0o755),
        Entry::Dir("var/cache/", 0o755),
        Entry::File("var/cache/old", b"old", 0o644),
        Entry::File("bin/tool", b"#!/bin/sh\n", 0o755),
    ]);
    let top = layer_tar(&[
        Entry::Dir("etc/", 0o755),
        Entry::File("etc/.wh.group", b"", 0o644),
        Entry::Dir("var/cache/", 0o755),
        Entry::File("var/cache/.wh..wh..opq", b"", 0o644),
        Entry::File("var/cache/new", b"new", 0o644),
        Entry::Symlink("bin/tool2", "tool"),
    ]);
    let image = build_image(vec![base, top], &["sh"]);
    reg.push("layered", "v1", &image);
    let name = reg.image_ref("layered", "v1");
    let (dir, s) = store();
    s.pull(&name, &PullOptions::default()).await.unwrap();

    let check = |rootfs: &Path| {
        assert!(rootfs.join("etc/passwd").is_file());
        assert!(
            !rootfs.join("etc/group").exists(),
            "whiteout must hide etc/group"
        );
        assert!(
            !rootfs.join("var/cache/old").exists(),
            "opaque dir must hide old"
        );
        assert_eq!(std::fs::read(rootfs.join("var/cache/new")).unwrap(), b"new");
        assert!(rootfs.join("bin/tool2").is_file());
        let names: Vec<_> = std::fs::read_dir(rootfs.join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["passwd"]);
    };
    let c1 = dir.path().join("c-overlay");
    let rootfs = s.prepare_rootfs(&name, &c1).unwrap();
    assert_eq!(mounts_under(&c1.canonicalize().unwrap()).len(), 1);
    check(&rootfs);
    s.release_rootfs(&c1).unwrap();

    // The copy fallback gives the same tree.
    s.set_overlay(false);
    let c2 = dir.path().join("c-copy");
    let rootfs = s.prepare_rootfs(&name, &c2).unwrap();
    assert!(mounts_under(&c2.canonicalize().unwrap()).is_empty());
    check(&rootfs);
    assert_eq!(s.prepare_rootfs(&name, &c2).unwrap(), rootfs);
    s.release_rootfs(&c2).unwrap();
    assert!(!c2.join("rootfs").exists());
}
