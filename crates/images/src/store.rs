//! The store itself: the index of images, content-addressed blobs, unpacked layers, lookups,
//! removal and garbage collection.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::{BoxFuture, Shared};
use serde::{Deserialize, Serialize};
use skiff_core::image::Reference;

use crate::digest::{sha256_hex, sha256_of};
use crate::unpack::{self, LayerMeta};
use crate::{ImageConfig, ImageInfo, PullError};

const INDEX_FILE: &str = "index.json";

/// The node's image store. Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct ImageStore {
    pub(crate) inner: Arc<Inner>,
}

type PullFuture = Shared<BoxFuture<'static, Result<ImageInfo, PullError>>>;

pub(crate) struct Inner {
    pub(crate) root: PathBuf,
    /// The index as last read, with the file's identity then: another process (`skiff image
    /// import` beside a running agent) may change the file, so every access re-reads it when it
    /// changed, under an exclusive `flock` on `index.lock`.
    index: Mutex<CachedIndex>,
    /// Pulls in progress, by normalised reference: later callers await the same one.
    pub(crate) inflight: Mutex<HashMap<String, PullFuture>>,
    /// Blobs (`b:<hex>`) and layers (`l:<hex>`) a pull or import is working with: never
    /// collected, even before an image record refers to them.
    pins: Mutex<HashMap<String, usize>>,
    tmp_counter: AtomicU64,
    overlay: AtomicBool,
}

/// The index file's identity: inode, size and modification time.
type Stamp = (u64, u64, i64, i64);

#[derive(Default)]
struct CachedIndex {
    index: Index,
    stamp: Option<Stamp>,
}

/// The index, locked in this process (mutex) and against other processes (`flock`).
pub(crate) struct IndexGuard<'a> {
    cached: MutexGuard<'a, CachedIndex>,
    _lock: Option<File>,
}

impl std::ops::Deref for IndexGuard<'_> {
    type Target = Index;
    fn deref(&self) -> &Index {
        &self.cached.index
    }
}

impl std::ops::DerefMut for IndexGuard<'_> {
    fn deref_mut(&mut self) -> &mut Index {
        &mut self.cached.index
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// An exclusive `flock` on `path` (created if needed), released when the file is dropped.
fn flock(path: &Path) -> Option<File> {
    use std::os::fd::AsRawFd;
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ok()?;
    loop {
        // SAFETY: a valid open descriptor; flock has no memory effects.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if r == 0 {
            return Some(f);
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return None;
        }
    }
}

fn read_index(path: &Path) -> io::Result<Index> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index::default()),
        Err(e) => Err(e),
    }
}

/// Whether a process with this pid is alive (a temporary file's owner).
fn alive(pid: &str) -> bool {
    pid.parse::<u32>()
        .is_ok_and(|p| Path::new("/proc").join(p.to_string()).exists())
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Index {
    #[serde(default)]
    pub images: Vec<ImageRecord>,
    /// Root filesystems handed out, by container directory.
    #[serde(default)]
    pub rootfs: BTreeMap<String, RootfsLease>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    /// `sha256:<config digest hex>`.
    pub id: String,
    /// Normalised tagged references.
    #[serde(default)]
    pub names: Vec<String>,
    /// `registry/repository@sha256:…`.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    #[serde(default)]
    pub manifest_digest: Option<String>,
    pub config_size: u64,
    pub layers: Vec<LayerRef>,
    pub config: ImageConfig,
    /// Seconds since the epoch of the last pull or rootfs preparation.
    pub last_used: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LayerRef {
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub media_type: String,
    pub diff_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RootfsLease {
    pub image_id: String,
    pub diff_ids: Vec<String>,
    pub overlay: bool,
}

impl ImageRecord {
    pub(crate) fn size(&self) -> u64 {
        self.config_size + self.layers.iter().map(|l| l.size).sum::<u64>()
    }

    fn info(&self, prefer_repo: Option<&str>) -> ImageInfo {
        let repo_digest = prefer_repo
            .and_then(|repo| {
                self.repo_digests
                    .iter()
                    .find(|d| d.split_once('@').is_some_and(|(r, _)| r == repo))
            })
            .or(self.repo_digests.first())
            .cloned();
        let mut names = self.names.clone();
        names.extend(self.repo_digests.iter().cloned());
        ImageInfo {
            names,
            id: self.id.clone(),
            repo_digest,
            size_bytes: self.size(),
            config: self.config.clone(),
        }
    }

    fn blob_digests(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.id.as_str())
            .chain(self.manifest_digest.as_deref())
            .chain(self.layers.iter().map(|l| l.digest.as_str()))
            .chain(
                self.repo_digests
                    .iter()
                    .filter_map(|d| d.split_once('@').map(|(_, d)| d)),
            )
    }
}

/// How a caller names an image.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Key {
    Id(String),
    Name(String),
    RepoDigest(String),
}

impl Key {
    pub(crate) fn parse(image: &str) -> Result<Key, String> {
        let hexlike = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if let Some(h) = image.strip_prefix("sha256:")
            && hexlike(h)
        {
            return Ok(Key::Id(image.to_ascii_lowercase()));
        }
        if hexlike(image) {
            return Ok(Key::Id(format!("sha256:{}", image.to_ascii_lowercase())));
        }
        let r =
            Reference::parse(image).map_err(|e| format!("invalid image name {image:?}: {e}"))?;
        Ok(match &r.digest {
            Some(d) => Key::RepoDigest(format!("{}@{d}", r.repository_name())),
            None => Key::Name(r.with_default_tag().to_string()),
        })
    }

    fn repository(&self) -> Option<&str> {
        match self {
            Key::Id(_) => None,
            Key::Name(n) => {
                let slash = n.rfind('/').unwrap_or(0);
                Some(match n[slash..].rfind(':') {
                    Some(i) => &n[..slash + i],
                    None => n,
                })
            }
            Key::RepoDigest(d) => d.split_once('@').map(|(r, _)| r),
        }
    }

    fn matches(&self, rec: &ImageRecord) -> bool {
        match self {
            Key::Id(id) => &rec.id == id,
            Key::Name(n) => rec.names.iter().any(|x| x == n),
            Key::RepoDigest(d) => rec.repo_digests.iter().any(|x| x == d),
        }
    }
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unpins on drop.
pub(crate) struct PinGuard {
    inner: Arc<Inner>,
    keys: Vec<String>,
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut pins = lock(&self.inner.pins);
        for k in &self.keys {
            if let Some(n) = pins.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    pins.remove(k);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn io_err(what: &str, p: &Path, e: io::Error) -> String {
    format!("{what} {}: {e}", p.display())
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`, e.g. `<data-dir>/images`.
    pub fn open(root: &Path) -> io::Result<ImageStore> {
        fs::create_dir_all(root.join("blobs/sha256"))?;
        fs::create_dir_all(root.join("layers"))?;
        let tmp = root.join("tmp");
        // Leftovers of interrupted downloads and unpacks: temporary names start with the pid
        // of the process that made them, which may be another one still at work.
        if tmp.exists() {
            for e in fs::read_dir(&tmp)? {
                let e = e?;
                let name = e.file_name();
                let pid = name
                    .to_str()
                    .and_then(|n| n.split('-').next())
                    .unwrap_or("");
                if !alive(pid) {
                    let _ = unpack::remove_any(&e.path());
                }
            }
        }
        fs::create_dir_all(&tmp)?;
        let index_path = root.join(INDEX_FILE);
        let index = CachedIndex {
            stamp: stamp(&index_path),
            index: read_index(&index_path)?,
        };
        Ok(ImageStore {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                index: Mutex::new(index),
                inflight: Mutex::new(HashMap::new()),
                pins: Mutex::new(HashMap::new()),
                tmp_counter: AtomicU64::new(0),
                overlay: AtomicBool::new(true),
            }),
        })
    }

    /// The image `image` names (a reference, normalised first, a repo digest, or an image id),
    /// from the local store only.
    pub fn status(&self, image: &str) -> Result<Option<ImageInfo>, String> {
        let key = Key::parse(image)?;
        let idx = self.index();
        Ok(idx
            .images
            .iter()
            .find(|r| key.matches(r))
            .map(|r| r.info(key.repository())))
    }

    /// Every image in the store.
    pub fn list(&self) -> Vec<ImageInfo> {
        self.index().images.iter().map(|r| r.info(None)).collect()
    }

    /// Removes the image (all its names) and the blobs and layers nothing else uses. Removing
    /// an image that is not there is not an error. Layers under a prepared rootfs stay until
    /// it is released.
    pub fn remove(&self, image: &str) -> Result<(), String> {
        let key = Key::parse(image)?;
        let mut idx = self.index();
        let before = idx.images.len();
        idx.images.retain(|r| !key.matches(r));
        if idx.images.len() == before {
            return Ok(());
        }
        self.save_index(&idx)?;
        self.sweep(&idx)?;
        Ok(())
    }

    /// Kubelet-style image garbage collection. Unreferenced blobs and layers always go; then,
    /// when the store uses more than `high_bytes`, least recently used images that are neither
    /// in `in_use` (names or ids) nor under a prepared rootfs are removed until it uses at most
    /// `low_bytes`. Returns the bytes freed.
    pub fn gc(&self, high_bytes: u64, low_bytes: u64, in_use: &[String]) -> Result<u64, String> {
        let mut idx = self.index();
        let mut freed = self.sweep(&idx)?;
        let mut usage = self.disk_usage()?;
        if usage <= high_bytes {
            return Ok(freed);
        }
        let mut keep: HashSet<String> = idx.rootfs.values().map(|l| l.image_id.clone()).collect();
        for name in in_use {
            if let Ok(key) = Key::parse(name) {
                for r in idx.images.iter().filter(|r| key.matches(r)) {
                    keep.insert(r.id.clone());
                }
            }
        }
        let mut candidates: Vec<(u64, String)> = idx
            .images
            .iter()
            .filter(|r| !keep.contains(&r.id))
            .map(|r| (r.last_used, r.id.clone()))
            .collect();
        candidates.sort();
        for (_, id) in candidates {
            if usage <= low_bytes {
                break;
            }
            idx.images.retain(|r| r.id != id);
            self.save_index(&idx)?;
            let f = self.sweep(&idx)?;
            tracing::info!(image = %id, freed = f, "image garbage collection removed image");
            freed += f;
            usage = usage.saturating_sub(f);
        }
        Ok(freed)
    }

    /// Image garbage collection as the kubelet schedules it: when the file system holding the
    /// store is more than `high_percent` full, unused images (least recently used first; never
    /// one under a prepared rootfs) are removed until it is at most `low_percent` full, or
    /// nothing more can go. Returns the bytes freed.
    pub fn gc_by_disk(&self, high_percent: u64, low_percent: u64) -> Result<u64, String> {
        let (capacity, used) = fs_usage(self.root())?;
        let Some(excess) = bytes_to_free(capacity, used, high_percent, low_percent) else {
            // Unreferenced blobs and layers go in any case.
            let idx = self.index();
            return self.sweep(&idx);
        };
        let usage = self.disk_usage()?;
        tracing::info!(
            capacity,
            used,
            images = usage,
            to_free = excess,
            "image file system above {high_percent}%: collecting unused images"
        );
        self.gc(0, usage.saturating_sub(excess), &[])
    }

    /// Whether [`ImageStore::prepare_rootfs`] may use overlayfs (the default); when off, every
    /// new rootfs is a copy. Root filesystems already prepared are not changed.
    pub fn set_overlay(&self, enabled: bool) {
        self.inner.overlay.store(enabled, Ordering::Relaxed);
    }

    pub(crate) fn overlay_enabled(&self) -> bool {
        self.inner.overlay.load(Ordering::Relaxed)
    }

    // ---- internals shared by pull, import and rootfs ----

    pub(crate) fn index(&self) -> IndexGuard<'_> {
        let mut cached = lock(&self.inner.index);
        let lock_file = flock(&self.root().join("index.lock"));
        let path = self.root().join(INDEX_FILE);
        let now = stamp(&path);
        if now != cached.stamp {
            match read_index(&path) {
                Ok(index) => {
                    cached.index = index;
                    cached.stamp = now;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot re-read the image index; using the last one read")
                }
            }
        }
        IndexGuard {
            cached,
            _lock: lock_file,
        }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.inner.root
    }

    pub(crate) fn save_index(&self, idx: &Index) -> Result<(), String> {
        let body = serde_json::to_vec_pretty(idx).map_err(|e| e.to_string())?;
        let path = self.root().join(INDEX_FILE);
        write_atomic(&self.tmp_path(), &path, &body)
    }

    /// A fresh path under `tmp/` (same file system as blobs and layers, so renames work).
    pub(crate) fn tmp_path(&self) -> PathBuf {
        let n = self.inner.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        self.root()
            .join("tmp")
            .join(format!("{}-{n}-{nanos}", std::process::id()))
    }

    pub(crate) fn blob_path(&self, digest: &str) -> Result<PathBuf, String> {
        Ok(self.root().join("blobs/sha256").join(sha256_hex(digest)?))
    }

    pub(crate) fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// Stores `data` as a blob, checking it hashes to `digest`.
    pub(crate) fn write_blob(&self, digest: &str, data: &[u8]) -> Result<(), String> {
        let got = sha256_of(data);
        if got != digest {
            return Err(format!(
                "unexpected commit digest {got}, expected {digest}: failed precondition"
            ));
        }
        let path = self.blob_path(digest)?;
        if path.is_file() {
            return Ok(());
        }
        write_atomic(&self.tmp_path(), &path, data)
    }

    pub(crate) fn read_blob(&self, digest: &str) -> Result<Vec<u8>, String> {
        let p = self.blob_path(digest)?;
        fs::read(&p).map_err(|e| io_err("read", &p, e))
    }

    /// Moves a verified temp file into the blob store.
    pub(crate) fn commit_blob(&self, tmp: &Path, digest: &str) -> Result<(), String> {
        let path = self.blob_path(digest)?;
        fs::rename(tmp, &path).map_err(|e| io_err("rename", &path, e))?;
        sync_dir(path.parent().expect("blob dir"));
        Ok(())
    }

    pub(crate) fn layer_dir(&self, diff_id: &str) -> Result<PathBuf, String> {
        Ok(self.root().join("layers").join(sha256_hex(diff_id)?))
    }

    pub(crate) fn layer_ready(&self, diff_id: &str) -> bool {
        self.layer_dir(diff_id)
            .is_ok_and(|d| d.join("meta.json").is_file())
    }

    pub(crate) fn layer_meta(&self, diff_id: &str) -> Result<LayerMeta, String> {
        let p = self.layer_dir(diff_id)?.join("meta.json");
        let b = fs::read(&p).map_err(|e| io_err("read", &p, e))?;
        serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", p.display()))
    }

    /// Unpacks the layer blob `digest` as `diff_id` unless already there. Blocking.
    pub(crate) fn ensure_layer(&self, diff_id: &str, digest: &str) -> Result<(), String> {
        if self.layer_ready(diff_id) {
            return Ok(());
        }
        let final_dir = self.layer_dir(diff_id)?;
        let tmp = self.tmp_path();
        let diff = tmp.join("diff");
        fs::create_dir_all(&diff).map_err(|e| io_err("mkdir", &diff, e))?;
        let result = (|| {
            let meta = unpack::unpack_layer(&self.blob_path(digest)?, Some(diff_id), &diff)?;
            let body = serde_json::to_vec(&meta).map_err(|e| e.to_string())?;
            let mut f = File::create(tmp.join("meta.json"))
                .map_err(|e| io_err("create", &tmp.join("meta.json"), e))?;
            f.write_all(&body)
                .and_then(|_| f.sync_all())
                .map_err(|e| io_err("write", &tmp.join("meta.json"), e))?;
            match fs::rename(&tmp, &final_dir) {
                Ok(()) => Ok(()),
                // Another pull unpacked the same layer meanwhile.
                Err(_) if self.layer_ready(diff_id) => unpack::remove_any(&tmp),
                Err(e) => Err(io_err("rename", &final_dir, e)),
            }
        })();
        if result.is_err() {
            let _ = unpack::remove_any(&tmp);
        }
        result
    }

    pub(crate) fn pin(&self, blobs: &[&str], layers: &[&str]) -> PinGuard {
        let keys: Vec<String> = blobs
            .iter()
            .filter_map(|d| sha256_hex(d).ok().map(|h| format!("b:{h}")))
            .chain(
                layers
                    .iter()
                    .filter_map(|d| sha256_hex(d).ok().map(|h| format!("l:{h}"))),
            )
            .collect();
        let mut pins = lock(&self.inner.pins);
        for k in &keys {
            *pins.entry(k.clone()).or_default() += 1;
        }
        PinGuard {
            inner: self.inner.clone(),
            keys,
        }
    }

    /// Adds or merges an image record: its names and repo digests leave any other image (a
    /// moved tag), the record's last use becomes now. Returns the image as seen through
    /// `prefer_repo`.
    pub(crate) fn add_record(
        &self,
        mut rec: ImageRecord,
        prefer_repo: Option<&str>,
    ) -> Result<ImageInfo, String> {
        let mut idx = self.index();
        rec.last_used = now_secs();
        for other in idx.images.iter_mut().filter(|r| r.id != rec.id) {
            other.names.retain(|n| !rec.names.contains(n));
            other.repo_digests.retain(|n| !rec.repo_digests.contains(n));
        }
        let info = match idx.images.iter_mut().find(|r| r.id == rec.id) {
            Some(existing) => {
                for n in rec.names {
                    if !existing.names.contains(&n) {
                        existing.names.push(n);
                    }
                }
                for d in rec.repo_digests {
                    if !existing.repo_digests.contains(&d) {
                        existing.repo_digests.push(d);
                    }
                }
                if rec.manifest_digest.is_some() {
                    existing.manifest_digest = rec.manifest_digest;
                }
                existing.last_used = rec.last_used;
                existing.info(prefer_repo)
            }
            None => {
                let info = rec.info(prefer_repo);
                idx.images.push(rec);
                info
            }
        };
        self.save_index(&idx)?;
        Ok(info)
    }

    /// Deletes blobs and layers no image, prepared rootfs or pin refers to. Returns the bytes
    /// freed. Called with the index locked.
    fn sweep(&self, idx: &Index) -> Result<u64, String> {
        let pins = lock(&self.inner.pins);
        let mut blobs: HashSet<String> = HashSet::new();
        let mut layers: HashSet<String> = HashSet::new();
        for r in &idx.images {
            for d in r.blob_digests() {
                if let Ok(h) = sha256_hex(d) {
                    blobs.insert(h.to_string());
                }
            }
            for l in &r.layers {
                if let Ok(h) = sha256_hex(&l.diff_id) {
                    layers.insert(h.to_string());
                }
            }
        }
        for lease in idx.rootfs.values() {
            for d in &lease.diff_ids {
                if let Ok(h) = sha256_hex(d) {
                    layers.insert(h.to_string());
                }
            }
        }
        let mut freed = 0;
        let bdir = self.root().join("blobs/sha256");
        for e in fs::read_dir(&bdir).map_err(|e| io_err("read", &bdir, e))? {
            let Ok(e) = e else { continue };
            let name = e.file_name().to_string_lossy().into_owned();
            if blobs.contains(&name) || pins.contains_key(&format!("b:{name}")) {
                continue;
            }
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            if fs::remove_file(e.path()).is_ok() {
                freed += size;
            }
        }
        let ldir = self.root().join("layers");
        for e in fs::read_dir(&ldir).map_err(|e| io_err("read", &ldir, e))? {
            let Ok(e) = e else { continue };
            let name = e.file_name().to_string_lossy().into_owned();
            if layers.contains(&name) || pins.contains_key(&format!("l:{name}")) {
                continue;
            }
            let size = layer_size(&e.path());
            unpack::remove_any(&e.path())?;
            freed += size;
        }
        Ok(freed)
    }

    /// Bytes the store uses: blobs plus unpacked layers.
    fn disk_usage(&self) -> Result<u64, String> {
        let mut total = 0;
        let bdir = self.root().join("blobs/sha256");
        for e in fs::read_dir(&bdir).map_err(|e| io_err("read", &bdir, e))? {
            total += e
                .ok()
                .and_then(|e| e.metadata().ok())
                .map_or(0, |m| m.len());
        }
        let ldir = self.root().join("layers");
        for e in fs::read_dir(&ldir)
            .map_err(|e| io_err("read", &ldir, e))?
            .flatten()
        {
            total += layer_size(&e.path());
        }
        Ok(total)
    }

    /// The image id and layers of the rootfs leased to `dir`, pinned.
    pub(crate) fn lease_pinned(&self, dir: &Path) -> Option<(String, Vec<String>, PinGuard)> {
        let idx = self.index();
        let lease = idx.rootfs.get(&*dir.to_string_lossy())?.clone();
        let refs: Vec<&str> = lease.diff_ids.iter().map(String::as_str).collect();
        let pins = self.pin(&[], &refs);
        drop(idx);
        Some((lease.image_id, lease.diff_ids, pins))
    }

    /// The record `image` names, its layers pinned (found and pinned under one lock, so a
    /// concurrent collection cannot take the layers in between).
    pub(crate) fn find_record_pinned(
        &self,
        image: &str,
    ) -> Result<(ImageRecord, PinGuard), String> {
        let key = Key::parse(image)?;
        let idx = self.index();
        let rec = idx
            .images
            .iter()
            .find(|r| key.matches(r))
            .cloned()
            .ok_or_else(|| format!("image \"{image}\" not found"))?;
        let diff_ids: Vec<&str> = rec.layers.iter().map(|l| l.diff_id.as_str()).collect();
        let pins = self.pin(&[], &diff_ids);
        drop(idx);
        Ok((rec, pins))
    }
}

fn layer_size(dir: &Path) -> u64 {
    fs::read(dir.join("meta.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<LayerMeta>(&b).ok())
        .map_or(0, |m| m.size)
}

/// Writes `data` to `tmp`, fsyncs, renames over `dest` and fsyncs the directory.
pub(crate) fn write_atomic(tmp: &Path, dest: &Path, data: &[u8]) -> Result<(), String> {
    let mut f = File::create(tmp).map_err(|e| io_err("create", tmp, e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| io_err("write", tmp, e))?;
    drop(f);
    fs::rename(tmp, dest).map_err(|e| io_err("rename", dest, e))?;
    if let Some(parent) = dest.parent() {
        sync_dir(parent);
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let id = format!("sha256:{}", "a".repeat(64));
        assert_eq!(Key::parse(&id).unwrap(), Key::Id(id.clone()));
        assert_eq!(Key::parse(&"a".repeat(64)).unwrap(), Key::Id(id.clone()));
        assert_eq!(
            Key::parse("busybox").unwrap(),
            Key::Name("docker.io/library/busybox:latest".into())
        );
        assert_eq!(
            Key::parse("127.0.0.1:5000/busybox:1").unwrap(),
            Key::Name("127.0.0.1:5000/busybox:1".into())
        );
        assert_eq!(
            Key::parse(&format!("127.0.0.1:5000/busybox:1@{id}")).unwrap(),
            Key::RepoDigest(format!("127.0.0.1:5000/busybox@{id}"))
        );
        assert_eq!(
            Key::parse("127.0.0.1:5000/busybox:1").unwrap().repository(),
            Some("127.0.0.1:5000/busybox")
        );
        assert!(Key::parse("Bad Name").is_err());
    }

    fn rec(id: &str, names: &[&str], layer: &str) -> ImageRecord {
        ImageRecord {
            id: id.into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            repo_digests: vec![],
            manifest_digest: None,
            config_size: 10,
            layers: vec![LayerRef {
                digest: layer.into(),
                size: 100,
                media_type: String::new(),
                diff_id: layer.into(),
            }],
            config: ImageConfig::default(),
            last_used: 0,
        }
    }

    #[test]
    fn records_move_tags_and_sweep_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let s = ImageStore::open(dir.path()).unwrap();
        let a = sha256_of(b"a");
        let b = sha256_of(b"b");
        let l1 = sha256_of(b"l1");
        s.write_blob(&a, b"a").unwrap();
        s.write_blob(&b, b"b").unwrap();
        s.write_blob(&l1, b"l1").unwrap();
        s.add_record(rec(&a, &["docker.io/library/x:1"], &l1), None)
            .unwrap();
        s.add_record(rec(&b, &["docker.io/library/x:1"], &l1), None)
            .unwrap();
        assert_eq!(s.status("x:1").unwrap().unwrap().id, b);
        assert_eq!(s.status(&a).unwrap().unwrap().names, Vec::<String>::new());
        assert_eq!(s.list().len(), 2);
        // Reopen: the index persisted.
        let s = ImageStore::open(dir.path()).unwrap();
        assert_eq!(s.list().len(), 2);
        s.remove(&a).unwrap();
        s.remove(&a).unwrap();
        assert!(!s.has_blob(&a));
        assert!(s.has_blob(&l1));
        // A pinned orphan survives a sweep.
        let c = sha256_of(b"c");
        s.write_blob(&c, b"c").unwrap();
        let guard = s.pin(&[&c], &[]);
        assert_eq!(s.gc(u64::MAX, 0, &[]).unwrap(), 0);
        assert!(s.has_blob(&c));
        drop(guard);
        assert_eq!(s.gc(u64::MAX, 0, &[]).unwrap(), 1);
        // In use: kept even over the threshold; unused: removed.
        assert_eq!(s.gc(0, 0, &["x:1".to_string()]).unwrap(), 0);
        assert!(s.status("x:1").unwrap().is_some());
        assert!(s.gc(0, 0, &[]).unwrap() > 0);
        assert!(s.list().is_empty());
    }
}

/// Capacity and used bytes of the file system holding `path`.
fn fs_usage(path: &Path) -> Result<(u64, u64), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: statvfs writes only into the zeroed struct we pass; `c` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io_err("statvfs", path, io::Error::last_os_error()));
    }
    let frsize = st.f_frsize as u64;
    let capacity = st.f_blocks as u64 * frsize;
    let free = st.f_bfree as u64 * frsize;
    Ok((capacity, capacity.saturating_sub(free)))
}

/// The kubelet's image GC thresholds: above `high` percent used, free enough to get down to
/// `low` percent. None when below `high`.
fn bytes_to_free(capacity: u64, used: u64, high_percent: u64, low_percent: u64) -> Option<u64> {
    if capacity == 0 || (used as u128) * 100 <= (capacity as u128) * high_percent as u128 {
        return None;
    }
    let target = (capacity as u128 * low_percent as u128 / 100) as u64;
    Some(used.saturating_sub(target))
}

#[cfg(test)]
mod disk_gc_tests {
    use super::bytes_to_free;

    #[test]
    fn thresholds_as_the_kubelet_applies_them() {
        assert_eq!(bytes_to_free(1000, 850, 85, 80), None);
        assert_eq!(bytes_to_free(1000, 851, 85, 80), Some(51));
        assert_eq!(bytes_to_free(1000, 990, 85, 80), Some(190));
        assert_eq!(bytes_to_free(0, 0, 85, 80), None);
        assert_eq!(bytes_to_free(1000, 900, 100, 80), None);
    }
}
