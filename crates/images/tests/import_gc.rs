//! Imports (OCI layout directory and tar, docker save archive) and garbage collection, on real
//! files; prepare_rootfs on imported images.

mod common;

use common::*;
use skiff_images::ImageStore;

fn small_image(marker: &str) -> Image {
    let tar = layer_tar(&[
        Entry::Dir("etc/", 0o755),
        Entry::File("etc/marker", marker.as_bytes(), 0o644),
    ]);
    build_image(vec![tar], &["/bin/true"])
}

#[test]
fn import_oci_layout_dir_and_tar() {
    let dir = tempfile::tempdir().unwrap();
    let s = ImageStore::open(&dir.path().join("images")).unwrap();

    let image = busybox_image();
    let layout = dir.path().join("layout");
    write_oci_layout(
        &layout,
        &image,
        serde_json::json!({
            "io.containerd.image.name": "registry.example/tools/busybox:1.36",
            "org.opencontainers.image.ref.name": "1.36"}),
    );
    let infos = s.import(&layout).unwrap();
    assert_eq!(infos.len(), 1);
    let info = &infos[0];
    assert_eq!(info.id, image.config_digest);
    let repo_digest = format!("registry.example/tools/busybox@{}", image.manifest_digest);
    assert_eq!(info.repo_digest.as_deref(), Some(repo_digest.as_str()));
    assert!(
        info.names
            .contains(&"registry.example/tools/busybox:1.36".to_string())
    );
    assert_eq!(
        s.status("registry.example/tools/busybox:1.36")
            .unwrap()
            .unwrap()
            .id,
        info.id
    );

    let c = dir.path().join("c1");
    let rootfs = s
        .prepare_rootfs("registry.example/tools/busybox:1.36", &c)
        .unwrap();
    assert!(rootfs.join("bin/busybox").is_file());
    s.release_rootfs(&c).unwrap();

    // The same layout as a tar, with only a tag as ref name: the image has no name, but is
    // found by id.
    let other = small_image("oci-tar");
    let layout2 = dir.path().join("layout2");
    write_oci_layout(
        &layout2,
        &other,
        serde_json::json!({"org.opencontainers.image.ref.name": "latest"}),
    );
    let tarball = dir.path().join("layout2.tar");
    tar_dir(&layout2, &tarball);
    let infos = s.import(&tarball).unwrap();
    assert_eq!(infos.len(), 1);
    assert!(infos[0].names.is_empty());
    assert_eq!(infos[0].repo_digest, None);
    assert_eq!(
        s.status(&other.config_digest).unwrap().unwrap().id,
        other.config_digest
    );
    assert_eq!(s.list().len(), 2);

    // Importing again changes nothing.
    s.import(&layout).unwrap();
    assert_eq!(s.list().len(), 2);
}

#[test]
fn import_docker_save() {
    let dir = tempfile::tempdir().unwrap();
    let s = ImageStore::open(&dir.path().join("images")).unwrap();
    let image = small_image("docker-save");
    let archive = dir.path().join("save.tar");
    write_docker_save(&archive, &image, &["myapp:v1", "quay.io/team/myapp:v1"]);
    let infos = s.import(&archive).unwrap();
    assert_eq!(infos.len(), 1);
    let info = &infos[0];
    assert_eq!(info.id, image.config_digest);
    assert_eq!(info.repo_digest, None);
    assert_eq!(
        info.names,
        vec![
            "docker.io/library/myapp:v1".to_string(),
            "quay.io/team/myapp:v1".to_string()
        ]
    );
    assert_eq!(info.config.cmd, vec!["/bin/true"]);
    assert!(info.size_bytes > 0);
    assert_eq!(s.status("myapp:v1").unwrap().unwrap().id, info.id);

    let c = dir.path().join("c");
    let rootfs = s.prepare_rootfs("myapp:v1", &c).unwrap();
    assert_eq!(
        std::fs::read(rootfs.join("etc/marker")).unwrap(),
        b"docker-save"
    );
    s.release_rootfs(&c).unwrap();

    // gzip-compressed archives work too.
    let other = small_image("gz");
    let plain = dir.path().join("other.tar");
    write_docker_save(&plain, &other, &["other:1"]);
    let gz = dir.path().join("other.tar.gz");
    std::fs::write(&gz, gzip(&std::fs::read(&plain).unwrap())).unwrap();
    assert_eq!(s.import(&gz).unwrap()[0].id, other.config_digest);

    assert!(s.import(&dir.path().join("missing.tar")).is_err());
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(s.import(&empty).is_err());
}

#[test]
fn gc_removes_unused_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    let s = ImageStore::open(&root).unwrap();
    let mut ids = Vec::new();
    for (i, tag) in ["a:1", "b:1", "c:1"].iter().enumerate() {
        let image = small_image(&format!("image {i}"));
        let archive = dir.path().join(format!("{i}.tar"));
        write_docker_save(&archive, &image, &[tag]);
        ids.push(s.import(&archive).unwrap()[0].id.clone());
        // last_used has one-second resolution.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    // Under the high threshold: only orphans (the archives' manifest.json etc.) go.
    s.gc(u64::MAX, 0, &[]).unwrap();
    assert_eq!(s.list().len(), 3);

    // Usage as the store counts it: blobs plus unpacked layer files.
    let usage = || -> u64 {
        let blobs: u64 = std::fs::read_dir(root.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        let layers: u64 = std::fs::read_dir(root.join("layers"))
            .unwrap()
            .map(|e| {
                let meta: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(e.unwrap().path().join("meta.json")).unwrap(),
                )
                .unwrap();
                meta["size"].as_u64().unwrap()
            })
            .sum();
        blobs + layers
    };
    let count_files = |sub: &str| std::fs::read_dir(root.join(sub)).unwrap().count();
    // Over the threshold by a byte: "a" is the least recently used but in use, so "b" goes,
    // and one removal is enough.
    let before = usage();
    let freed = s.gc(0, before - 1, &["a:1".to_string()]).unwrap();
    assert!(freed > 0);
    assert_eq!(usage(), before - freed);
    let left: Vec<String> = s.list().into_iter().map(|i| i.id).collect();
    assert_eq!(left, vec![ids[0].clone(), ids[2].clone()]);
    // Down to nothing: everything not in use goes.
    let freed = s.gc(0, 1, &["a:1".to_string()]).unwrap();
    assert!(freed > 0);
    let left: Vec<String> = s.list().into_iter().map(|i| i.id).collect();
    assert_eq!(left, vec![ids[0].clone()]);
    assert_eq!(count_files("layers"), 1);
    assert_eq!(count_files("blobs/sha256"), 2); // a's config and layer
    // Everything unused and below nothing: a stays because it is in use.
    assert!(s.status("a:1").unwrap().is_some());
    s.remove("a:1").unwrap();
    assert_eq!(count_files("layers"), 0);
    assert_eq!(count_files("blobs/sha256"), 0);
}
