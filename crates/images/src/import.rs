//! Importing images from an OCI image layout (a directory or a tar of one) or a `docker save`
//! archive (`manifest.json` + `repositories`, layers as tars; newer Docker writes both forms,
//! and the Docker manifest is preferred for its `RepoTags`).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use skiff_core::image::Reference;

use crate::ImageInfo;
use crate::digest::{HashingReader, sha256_hex};
use crate::manifest::{self, Descriptor, Manifest, Parsed};
use crate::store::{ImageRecord, ImageStore, LayerRef, PinGuard};
use crate::unpack;

const NAME_ANNOTATION: &str = "io.containerd.image.name";
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Where the archive's files are: a directory, or a tar whose files were all copied into the
/// blob store as they were read (by their sha256).
enum Source {
    Dir(PathBuf),
    Tar(HashMap<String, (String, u64)>),
}

struct Import<'a> {
    store: &'a ImageStore,
    src: Source,
    pins: Vec<PinGuard>,
}

impl ImageStore {
    /// Imports every image of an OCI image layout directory, an OCI layout tar, or a
    /// `docker save` tar (optionally gzipped). Names come from the
    /// `io.containerd.image.name` / `org.opencontainers.image.ref.name` annotations (a bare
    /// tag there names nothing) or Docker's `RepoTags`; unnamed images are found by id.
    pub fn import(&self, path: &Path) -> Result<Vec<ImageInfo>, String> {
        let mut imp = Import {
            store: self,
            src: Source::Dir(path.to_path_buf()),
            pins: Vec::new(),
        };
        if !path.is_dir() {
            let files = imp.ingest_tar(path)?;
            imp.src = Source::Tar(files);
        }
        if imp.exists("manifest.json") {
            imp.docker_archive()
        } else if imp.exists("index.json") {
            imp.oci_layout()
        } else {
            Err(format!(
                "{}: neither an OCI image layout (index.json) nor a docker archive (manifest.json)",
                path.display()
            ))
        }
    }
}

impl Import<'_> {
    /// Copies every regular file of the tar into the blob store.
    fn ingest_tar(&mut self, path: &Path) -> Result<HashMap<String, (String, u64)>, String> {
        let f = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
        let reader = unpack::decompress(BufReader::with_capacity(256 << 10, f))
            .map_err(|e| format!("read {}: {e}", path.display()))?;
        let mut archive = tar::Archive::new(reader);
        let mut files = HashMap::new();
        let entries = archive
            .entries()
            .map_err(|e| format!("read {}: {e}", path.display()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| format!("read {}: {e}", path.display()))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let raw = entry
                .path()
                .map_err(|e| format!("tar entry name: {e}"))?
                .into_owned();
            let rel = rel_key(&raw)?;
            let (digest, size) = self.copy_into_store(&mut entry)?;
            files.insert(rel, (digest, size));
        }
        Ok(files)
    }

    /// Streams `r` into the blob store under its sha256 (pinned until the import ends).
    fn copy_into_store(&mut self, r: &mut dyn Read) -> Result<(String, u64), String> {
        let tmp = self.store.tmp_path();
        let result = (|| {
            let mut out =
                File::create(&tmp).map_err(|e| format!("create {}: {e}", tmp.display()))?;
            let mut hr = HashingReader::new(r);
            io::copy(&mut hr, &mut out).map_err(|e| format!("copy: {e}"))?;
            out.sync_all().map_err(|e| format!("sync: {e}"))?;
            let digest = hr.hasher.finish();
            self.pins.push(self.store.pin(&[&digest], &[]));
            if !self.store.has_blob(&digest) {
                self.store.commit_blob(&tmp, &digest)?;
            }
            Ok((digest, hr.count))
        })();
        let _ = fs::remove_file(&tmp);
        result
    }

    fn dir_path(&self, rel: &str) -> Result<PathBuf, String> {
        let Source::Dir(d) = &self.src else {
            unreachable!("directory source")
        };
        let comps = unpack::sanitize(Path::new(rel))?;
        let mut p = d.clone();
        p.extend(comps);
        Ok(p)
    }

    fn exists(&self, rel: &str) -> bool {
        match &self.src {
            Source::Dir(_) => self.dir_path(rel).is_ok_and(|p| p.is_file()),
            Source::Tar(files) => files.contains_key(rel),
        }
    }

    fn read(&self, rel: &str) -> Result<Vec<u8>, String> {
        match &self.src {
            Source::Dir(_) => {
                let p = self.dir_path(rel)?;
                fs::read(&p).map_err(|e| format!("read {}: {e}", p.display()))
            }
            Source::Tar(files) => {
                let key = rel_key(Path::new(rel))?;
                let (d, _) = files
                    .get(&key)
                    .ok_or_else(|| format!("{rel} missing from the archive"))?;
                self.store.read_blob(d)
            }
        }
    }

    /// Makes sure the file `rel` is in the blob store; returns its digest and size, checked
    /// against `expect` when given.
    fn ingest(&mut self, rel: &str, expect: Option<&str>) -> Result<(String, u64), String> {
        let (digest, size) = match &self.src {
            Source::Tar(files) => {
                let key = rel_key(Path::new(rel))?;
                files
                    .get(&key)
                    .cloned()
                    .ok_or_else(|| format!("{rel} missing from the archive"))?
            }
            Source::Dir(_) => {
                let p = self.dir_path(rel)?;
                if let Some(d) = expect
                    && self.store.has_blob(d)
                {
                    self.pins.push(self.store.pin(&[d], &[]));
                    let size = fs::metadata(self.store.blob_path(d)?).map_or(0, |m| m.len());
                    return Ok((d.to_string(), size));
                }
                let mut f = File::open(&p).map_err(|e| format!("open {}: {e}", p.display()))?;
                self.copy_into_store(&mut f)?
            }
        };
        if let Some(want) = expect
            && want != digest
        {
            return Err(format!(
                "{rel}: content digest {digest} does not match {want}"
            ));
        }
        Ok((digest, size))
    }

    fn oci_layout(&mut self) -> Result<Vec<ImageInfo>, String> {
        let body = self.read("index.json")?;
        let index: manifest::Index =
            serde_json::from_slice(&body).map_err(|e| format!("index.json: {e}"))?;
        let (os, arch) = manifest::host_platform();
        let mut out = Vec::new();
        for desc in &index.manifests {
            if let Some(p) = &desc.platform
                && (p.os != os || p.architecture != arch)
            {
                continue;
            }
            let names = names_from_annotations(&desc.annotations);
            out.push(self.oci_descriptor(desc, &desc.digest, names, 0)?);
        }
        if out.is_empty() {
            return Err(format!("index.json lists no image for {os}/{arch}"));
        }
        Ok(out)
    }

    fn oci_descriptor(
        &mut self,
        desc: &Descriptor,
        top_digest: &str,
        names: Vec<String>,
        depth: usize,
    ) -> Result<ImageInfo, String> {
        if depth > 2 {
            return Err("image index nested too deeply".into());
        }
        let rel = blob_rel(&desc.digest)?;
        let (digest, _) = self.ingest(&rel, Some(&desc.digest))?;
        let body = self.store.read_blob(&digest)?;
        let media = (!desc.media_type.is_empty()).then_some(desc.media_type.as_str());
        match manifest::parse_manifest(&body, media)? {
            Parsed::Index(idx) => {
                let (os, arch) = manifest::host_platform();
                let child = manifest::select_platform(&idx.manifests, os, arch)
                    .ok_or_else(|| {
                        format!(
                            "no match for platform in manifest {}: not found",
                            desc.digest
                        )
                    })?
                    .clone();
                let mut names = names;
                for n in names_from_annotations(&child.annotations) {
                    if !names.contains(&n) {
                        names.push(n);
                    }
                }
                self.oci_descriptor(&child, top_digest, names, depth + 1)
            }
            Parsed::Manifest(m) => self.oci_manifest(&m, &desc.digest, top_digest, names),
        }
    }

    fn oci_manifest(
        &mut self,
        m: &Manifest,
        manifest_digest: &str,
        top_digest: &str,
        names: Vec<String>,
    ) -> Result<ImageInfo, String> {
        manifest::check_image_manifest(m)?;
        let (config_digest, _) =
            self.ingest(&blob_rel(&m.config.digest)?, Some(&m.config.digest))?;
        let (config, diff_ids) = manifest::parse_config(&self.store.read_blob(&config_digest)?)?;
        if diff_ids.len() != m.layers.len() {
            return Err("mismatched image rootfs and manifest layers".into());
        }
        let mut layers = Vec::new();
        for (l, diff_id) in m.layers.iter().zip(&diff_ids) {
            self.pins.push(self.store.pin(&[], &[diff_id]));
            if !self.store.layer_ready(diff_id) {
                self.ingest(&blob_rel(&l.digest)?, Some(&l.digest))?;
                self.store.ensure_layer(diff_id, &l.digest)?;
            }
            layers.push(LayerRef {
                digest: l.digest.clone(),
                size: l.size.max(0) as u64,
                media_type: l.media_type.clone(),
                diff_id: diff_id.clone(),
            });
        }
        let mut repo_digests: Vec<String> = Vec::new();
        for n in &names {
            if let Ok(r) = Reference::parse(n) {
                let d = format!("{}@{top_digest}", r.repository_name());
                if !repo_digests.contains(&d) {
                    repo_digests.push(d);
                }
            }
        }
        let prefer = names
            .first()
            .and_then(|n| Reference::parse(n).ok())
            .map(|r| r.repository_name());
        let rec = ImageRecord {
            id: m.config.digest.clone(),
            names,
            repo_digests,
            manifest_digest: Some(manifest_digest.to_string()),
            config_size: m.config.size.max(0) as u64,
            layers,
            config,
            last_used: 0,
        };
        self.store.add_record(rec, prefer.as_deref())
    }

    fn docker_archive(&mut self) -> Result<Vec<ImageInfo>, String> {
        let body = self.read("manifest.json")?;
        let entries: Vec<DockerEntry> =
            serde_json::from_slice(&body).map_err(|e| format!("manifest.json: {e}"))?;
        if entries.is_empty() {
            return Err("manifest.json lists no image".into());
        }
        let mut out = Vec::new();
        for entry in entries {
            let (config_digest, config_size) = self.ingest(&entry.config, None)?;
            let (config, diff_ids) =
                manifest::parse_config(&self.store.read_blob(&config_digest)?)?;
            if diff_ids.len() != entry.layers.len() {
                return Err(format!(
                    "{}: mismatched image rootfs and manifest layers",
                    entry.config
                ));
            }
            let mut layers = Vec::new();
            for (path, diff_id) in entry.layers.iter().zip(&diff_ids) {
                sha256_hex(diff_id)?;
                self.pins.push(self.store.pin(&[], &[diff_id]));
                let (digest, size) = self.ingest(path, None)?;
                if !self.store.layer_ready(diff_id) {
                    self.store.ensure_layer(diff_id, &digest)?;
                }
                layers.push(LayerRef {
                    media_type: layer_media_type(&self.store.blob_path(&digest)?),
                    digest,
                    size,
                    diff_id: diff_id.clone(),
                });
            }
            let names: Vec<String> = entry
                .repo_tags
                .unwrap_or_default()
                .iter()
                .filter_map(|t| match Reference::parse(t) {
                    Ok(r) => Some(r.with_default_tag().to_string()),
                    Err(e) => {
                        tracing::warn!(tag = %t, error = %e, "ignoring an invalid RepoTag");
                        None
                    }
                })
                .collect();
            let prefer = names
                .first()
                .and_then(|n| Reference::parse(n).ok())
                .map(|r| r.repository_name());
            let rec = ImageRecord {
                id: config_digest,
                names,
                repo_digests: Vec::new(),
                manifest_digest: None,
                config_size,
                layers,
                config,
                last_used: 0,
            };
            out.push(self.store.add_record(rec, prefer.as_deref())?);
        }
        Ok(out)
    }
}

/// A tar member name as a lookup key: `./a//b` → `a/b`; `..` rejected.
fn rel_key(p: &Path) -> Result<String, String> {
    Ok(unpack::sanitize(p)?
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/"))
}

fn blob_rel(digest: &str) -> Result<String, String> {
    Ok(format!("blobs/sha256/{}", sha256_hex(digest)?))
}

fn layer_media_type(blob: &Path) -> String {
    let mut head = [0u8; 4];
    let n = File::open(blob)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    match &head[..n] {
        [0x1f, 0x8b, ..] => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        [0x28, 0xb5, 0x2f, 0xfd] => "application/vnd.oci.image.layer.v1.tar+zstd",
        _ => "application/vnd.docker.image.rootfs.diff.tar",
    }
    .to_string()
}

/// Image names an index entry's annotations give. `org.opencontainers.image.ref.name` names
/// an image only when it is a full reference (has a `/` or `:`); a bare tag names nothing.
fn names_from_annotations(a: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |s: &str| match Reference::parse(s) {
        // A name pinned to a digest is not a tag.
        Ok(r) if r.digest.is_some() => {}
        Ok(r) => {
            let n = r.with_default_tag().to_string();
            if !out.contains(&n) {
                out.push(n);
            }
        }
        Err(e) => tracing::warn!(name = s, error = %e, "ignoring an invalid image name annotation"),
    };
    if let Some(n) = a.get(NAME_ANNOTATION) {
        add(n);
    }
    if let Some(r) = a.get(REF_NAME_ANNOTATION)
        && r.contains(['/', ':'])
    {
        add(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_names() {
        let mut a = BTreeMap::new();
        a.insert(REF_NAME_ANNOTATION.to_string(), "1".to_string());
        assert!(names_from_annotations(&a).is_empty());
        a.insert(REF_NAME_ANNOTATION.to_string(), "busybox:1".to_string());
        assert_eq!(
            names_from_annotations(&a),
            vec!["docker.io/library/busybox:1"]
        );
        a.insert(NAME_ANNOTATION.to_string(), "127.0.0.1:5000/bb".to_string());
        assert_eq!(
            names_from_annotations(&a),
            vec!["127.0.0.1:5000/bb:latest", "docker.io/library/busybox:1"]
        );
        assert_eq!(
            rel_key(Path::new("./blobs//sha256/x")).unwrap(),
            "blobs/sha256/x"
        );
        assert!(rel_key(Path::new("../x")).is_err());
    }
}
