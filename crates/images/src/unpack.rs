//! Layer unpacking into overlayfs form, and the copy fallback that applies layers onto one tree.
//!
//! Each layer is unpacked alone into its own directory, the way overlayfs wants a lower layer:
//! an OCI whiteout `.wh.NAME` becomes a character device 0/0 named `NAME`, an opaque marker
//! `.wh..wh..opq` becomes the xattr `trusted.overlay.opaque=y` on its directory. Both lists are
//! also kept in the layer's metadata, so the copy fallback (and unprivileged unpacking, where
//! neither device nodes nor `trusted.*` xattrs can be made) deletes by them instead.
//!
//! Safety: entry names with `..` are rejected; every parent directory is resolved inside the
//! layer root, following symlinks the way a chroot would (an absolute link target is taken
//! relative to the root, `..` stops at the root), so no entry is ever written outside it; files
//! are created with `O_EXCL|O_NOFOLLOW` after removing what was there; hard links must point at a
//! non-directory inside the same layer.

use std::collections::{HashMap, VecDeque};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::HashingReader;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const MAX_SYMLINK_FOLLOWS: usize = 40;

/// What unpacking a layer found, kept beside the unpacked tree as `meta.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct LayerMeta {
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// Bytes of regular files written.
    pub size: u64,
    /// Paths (relative, `/`-separated) the layer deletes from the layers below.
    pub whiteouts: Vec<String>,
    /// Directories whose lower contents the layer hides.
    pub opaque: Vec<String>,
    /// Whiteouts and opaque markers were made in overlayfs form (device nodes and trusted
    /// xattrs need root); when false the layer can only be used through the copy fallback.
    pub overlay: bool,
}

/// Wraps `r` in the decompressor its first bytes call for: gzip, zstd, or none.
pub(crate) fn decompress<'a, R: BufRead + 'a>(mut r: R) -> io::Result<Box<dyn Read + 'a>> {
    let head = r.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(r)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) || is_skippable_frame(head) {
        Ok(Box::new(ZstdReader::new(r)))
    } else {
        Ok(Box::new(r))
    }
}

fn is_skippable_frame(head: &[u8]) -> bool {
    head.len() >= 4 && head[0] & 0xf0 == 0x50 && head[1..4] == [0x2a, 0x4d, 0x18]
}

/// A zstd stream of one or more frames (skippable frames skipped), decoded with ruzstd.
struct ZstdReader<R: BufRead> {
    src: R,
    dec: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdReader<R> {
    fn new(src: R) -> Self {
        let mut dec = ruzstd::decoding::FrameDecoder::new();
        // Images compressed with --long use windows up to 128 MiB.
        dec.set_max_window_size(1 << 27);
        ZstdReader {
            src,
            dec,
            in_frame: false,
        }
    }
}

impl<R: BufRead> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        loop {
            if !self.in_frame {
                if self.src.fill_buf()?.is_empty() {
                    return Ok(0);
                }
                match self.dec.init(&mut self.src) {
                    Ok(()) => self.in_frame = true,
                    Err(FrameDecoderError::ReadFrameHeaderError(
                        ReadFrameHeaderError::SkipFrame { length, .. },
                    )) => {
                        io::copy(&mut (&mut self.src).take(length as u64), &mut io::sink())?;
                        continue;
                    }
                    Err(e) => return Err(io::Error::other(format!("zstd: {e}"))),
                }
            }
            if self.dec.can_collect() > 0 {
                return self.dec.read(buf);
            }
            if self.dec.is_finished() {
                self.in_frame = false;
                continue;
            }
            self.dec
                .decode_blocks(
                    &mut self.src,
                    ruzstd::decoding::BlockDecodingStrategy::UptoBytes(1 << 20),
                )
                .map_err(|e| io::Error::other(format!("zstd: {e}")))?;
        }
    }
}

/// Unpacks the layer blob at `blob` (gzip, zstd or plain tar) into the empty directory `dest`,
/// checking the uncompressed stream's sha256 against `expected_diff_id` when given.
pub(crate) fn unpack_layer(
    blob: &Path,
    expected_diff_id: Option<&str>,
    dest: &Path,
) -> Result<LayerMeta, String> {
    let f = File::open(blob).map_err(|e| format!("open {}: {e}", blob.display()))?;
    let reader = decompress(BufReader::with_capacity(256 << 10, f))
        .map_err(|e| format!("read {}: {e}", blob.display()))?;
    let mut hashing = HashingReader::new(reader);
    let mut meta = extract(&mut hashing, dest)?;
    // The diff id covers the whole uncompressed stream, padding after the end blocks included.
    io::copy(&mut hashing, &mut io::sink()).map_err(|e| format!("read layer: {e}"))?;
    meta.diff_id = hashing.hasher.finish();
    if let Some(want) = expected_diff_id
        && want != meta.diff_id
    {
        return Err(format!(
            "unexpected diff id {}, expected {want}: failed precondition",
            meta.diff_id
        ));
    }
    Ok(meta)
}

/// Extracts a tar stream into `dest` in overlayfs form. `diff_id` is left empty.
pub(crate) fn extract<R: Read>(reader: R, dest: &Path) -> Result<LayerMeta, String> {
    let mut archive = tar::Archive::new(reader);
    let mut meta = LayerMeta {
        overlay: true,
        ..Default::default()
    };
    let root_owned = is_root();
    // Directories get their mode and times at the end, children first, so that a read-only
    // directory does not block its own entries and writes do not bump its mtime.
    let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
    let entries = archive.entries().map_err(|e| format!("read tar: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("read tar: {e}"))?;
        let raw = entry
            .path()
            .map_err(|e| format!("tar entry name: {e}"))?
            .into_owned();
        let comps = sanitize(&raw)?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let mtime = header.mtime().unwrap_or(0);
        let uid = header.uid().unwrap_or(0) as u32;
        let gid = header.gid().unwrap_or(0) as u32;
        let Some((name, parent)) = comps.split_last() else {
            if kind.is_dir() {
                set_owner(dest, uid, gid, root_owned)?;
                dirs.push((dest.to_path_buf(), mode, mtime));
            }
            continue;
        };
        let name_str = name.to_string_lossy();
        if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
            let pdir = resolve_dir(dest, parent, true)?;
            if name_str == OPAQUE_MARKER {
                meta.opaque.push(rel_string(parent));
                if set_xattr(&pdir, OPAQUE_XATTR, b"y").is_err() {
                    meta.overlay = false;
                }
            } else if hidden.starts_with(WHITEOUT_PREFIX) {
                // Other `.wh..wh.*` names are aufs bookkeeping, not content.
            } else {
                let mut rel: Vec<OsString> = parent.to_vec();
                rel.push(OsString::from(hidden));
                meta.whiteouts.push(rel_string(&rel));
                let target = pdir.join(hidden);
                remove_any(&target)?;
                if mknod(&target, libc::S_IFCHR, 0).is_err() {
                    meta.overlay = false;
                } else {
                    set_owner(&target, uid, gid, root_owned)?;
                }
            }
            continue;
        }
        let pdir = resolve_dir(dest, parent, true)?;
        let target = pdir.join(name);
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_any(&target)?;
                        mkdir(&target)?;
                    }
                    Err(_) => mkdir(&target)?,
                }
                set_owner(&target, uid, gid, root_owned)?;
                apply_pax_xattrs(&mut entry, &target);
                dirs.push((target, mode, mtime));
                continue;
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                remove_any(&target)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)
                    .map_err(|e| format!("create {}: {e}", raw.display()))?;
                let n = io::copy(&mut entry, &mut f)
                    .map_err(|e| format!("write {}: {e}", raw.display()))?;
                meta.size += n;
            }
            T::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| format!("tar entry {}: {e}", raw.display()))?
                    .ok_or_else(|| format!("symlink {} without target", raw.display()))?
                    .into_owned();
                remove_any(&target)?;
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(|e| format!("symlink {}: {e}", raw.display()))?;
            }
            T::Link => {
                let link = entry
                    .link_name()
                    .map_err(|e| format!("tar entry {}: {e}", raw.display()))?
                    .ok_or_else(|| format!("hard link {} without target", raw.display()))?
                    .into_owned();
                let lcomps = sanitize(&link)?;
                let Some((lname, lparent)) = lcomps.split_last() else {
                    return Err(format!("hard link {} to the root", raw.display()));
                };
                let src = resolve_dir(dest, lparent, false)?.join(lname);
                match fs::symlink_metadata(&src) {
                    Ok(m) if !m.is_dir() => {}
                    _ => {
                        return Err(format!(
                            "hard link {} to {}: target missing or a directory",
                            raw.display(),
                            link.display()
                        ));
                    }
                }
                if src != target {
                    remove_any(&target)?;
                    fs::hard_link(&src, &target)
                        .map_err(|e| format!("hard link {}: {e}", raw.display()))?;
                }
                continue;
            }
            T::Char | T::Block | T::Fifo => {
                remove_any(&target)?;
                let (ty, dev) = match kind {
                    T::Char => (libc::S_IFCHR, device(&header)),
                    T::Block => (libc::S_IFBLK, device(&header)),
                    _ => (libc::S_IFIFO, 0),
                };
                if let Err(e) = mknod(&target, ty | mode, dev) {
                    // Unprivileged: device nodes cannot be made; runc supplies /dev anyway.
                    tracing::debug!(path = %raw.display(), error = %e, "skipping device node");
                    continue;
                }
            }
            _ => continue,
        }
        set_owner(&target, uid, gid, root_owned)?;
        if kind != T::Symlink {
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                .map_err(|e| format!("chmod {}: {e}", raw.display()))?;
            apply_pax_xattrs(&mut entry, &target);
        }
        set_mtime(&target, mtime);
    }
    for (dir, mode, mtime) in dirs.iter().rev() {
        fs::set_permissions(dir, fs::Permissions::from_mode(*mode))
            .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
        set_mtime(dir, *mtime);
    }
    Ok(meta)
}

fn device(h: &tar::Header) -> libc::dev_t {
    let major = h.device_major().ok().flatten().unwrap_or(0);
    let minor = h.device_minor().ok().flatten().unwrap_or(0);
    libc::makedev(major, minor)
}

/// The normal components of an entry name: leading `/` and `.` dropped, `..` rejected.
pub(crate) fn sanitize(p: &Path) -> Result<Vec<OsString>, String> {
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(x) => out.push(x.to_os_string()),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "path traversal in tar entry {:?}: \"..\" is not allowed",
                    p.display().to_string()
                ));
            }
            Component::Prefix(_) => return Err(format!("bad tar entry name {}", p.display())),
        }
    }
    Ok(out)
}

fn rel_string(comps: &[OsString]) -> String {
    comps
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn join(root: &Path, comps: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    for c in comps {
        p.push(c);
    }
    p
}

/// Resolves the directory `comps` under `root` as if `root` were `/`: symlinks are followed but
/// can never leave `root`. Missing directories are created (0755) when `create`.
pub(crate) fn resolve_dir(
    root: &Path,
    comps: &[OsString],
    create: bool,
) -> Result<PathBuf, String> {
    let mut stack: Vec<OsString> = Vec::new();
    let mut queue: VecDeque<OsString> = comps.iter().cloned().collect();
    let mut follows = 0;
    while let Some(c) = queue.pop_front() {
        if c == ".." {
            stack.pop();
            continue;
        }
        if c == "." || c.is_empty() {
            continue;
        }
        let cur = join(root, &stack).join(&c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                follows += 1;
                if follows > MAX_SYMLINK_FOLLOWS {
                    return Err(format!(
                        "too many levels of symbolic links at {}",
                        cur.display()
                    ));
                }
                let target = fs::read_link(&cur).map_err(|e| format!("{}: {e}", cur.display()))?;
                if target.is_absolute() {
                    stack.clear();
                }
                let parts: Vec<OsString> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(x) => Some(x.to_os_string()),
                        Component::ParentDir => Some(OsString::from("..")),
                        _ => None,
                    })
                    .collect();
                for p in parts.into_iter().rev() {
                    queue.push_front(p);
                }
            }
            Ok(m) if m.is_dir() => stack.push(c),
            Ok(_) => return Err(format!("{}: not a directory", cur.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                mkdir(&cur)?;
                stack.push(c);
            }
            Err(e) => return Err(format!("{}: {e}", cur.display())),
        }
    }
    Ok(join(root, &stack))
}

fn mkdir(p: &Path) -> Result<(), String> {
    fs::create_dir(p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
    fs::set_permissions(p, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", p.display()))
}

/// Removes whatever is at `p` (a whole tree for a directory); absent is fine.
pub(crate) fn remove_any(p: &Path) -> Result<(), String> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(p).map_err(|e| format!("remove {}: {e}", p.display()))
        }
        Ok(_) => fs::remove_file(p).map_err(|e| format!("remove {}: {e}", p.display())),
        Err(_) => Ok(()),
    }
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn cpath(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("NUL in path {}", p.display()))
}

fn set_owner(p: &Path, uid: u32, gid: u32, root: bool) -> Result<(), String> {
    match std::os::unix::fs::lchown(p, Some(uid), Some(gid)) {
        Ok(()) => Ok(()),
        // Without root the files stay ours; ownership cannot be reproduced.
        Err(_) if !root => Ok(()),
        Err(e) => Err(format!("chown {}: {e}", p.display())),
    }
}

fn mknod(p: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    let c = cpath(p).map_err(io::Error::other)?;
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::mknod(c.as_ptr(), mode, dev) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(crate) fn set_xattr(p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c = cpath(p).map_err(io::Error::other)?;
    let n = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: valid C strings and a value buffer of the given length.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn get_xattr(p: &Path, name: &OsStr) -> Option<Vec<u8>> {
    let c = cpath(p).ok()?;
    let n = CString::new(name.as_bytes()).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings, buffer of the given length.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

fn list_xattrs(p: &Path) -> Vec<OsString> {
    let Ok(c) = cpath(p) else { return Vec::new() };
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C string, buffer of the given length.
    let r = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r <= 0 {
        return Vec::new();
    }
    buf.truncate(r as usize);
    buf.split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| OsStr::from_bytes(s).to_os_string())
        .collect()
}

/// Sets the file's times to `mtime` without following a symlink. Best effort.
fn set_mtime(p: &Path, mtime: u64) {
    let Ok(c) = cpath(p) else { return };
    let ts = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    let times = [ts, ts];
    // SAFETY: valid path and a two-element timespec array.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        );
    }
}

/// Applies `SCHILY.xattr.*` PAX records (file capabilities and the like). Best effort.
fn apply_pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>, target: &Path) {
    let Ok(Some(exts)) = entry.pax_extensions() else {
        return;
    };
    for ext in exts.flatten() {
        let Ok(key) = ext.key() else { continue };
        if let Some(name) = key.strip_prefix("SCHILY.xattr.")
            && !name.starts_with("trusted.overlay.")
            && let Err(e) = set_xattr(target, name, ext.value_bytes())
        {
            tracing::debug!(path = %target.display(), xattr = name, error = %e, "xattr not set");
        }
    }
}

/// The copy fallback: applies one unpacked layer onto `rootfs` — its whiteouts and opaque
/// directories delete from what the layers below put there, then its tree is copied over
/// (a non-directory replaces whatever was at its path, directories merge).
pub(crate) fn apply_layer_copy(
    layer: &Path,
    meta: &LayerMeta,
    rootfs: &Path,
) -> Result<(), String> {
    for d in &meta.opaque {
        if let Some(dir) = existing_real_path(rootfs, d)
            && fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir())
        {
            for e in fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
                let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
                remove_any(&e.path())?;
            }
        }
    }
    for w in &meta.whiteouts {
        if let Some(p) = existing_real_path(rootfs, w) {
            remove_any(&p)?;
        }
    }
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    copy_tree(layer, rootfs, &mut links, is_root())
}

/// `rootfs/rel` when every parent on the way is a real directory (no symlink followed).
fn existing_real_path(rootfs: &Path, rel: &str) -> Option<PathBuf> {
    let comps = sanitize(Path::new(rel)).ok()?;
    let (name, parents) = comps.split_last()?;
    let mut p = rootfs.to_path_buf();
    for c in parents {
        p.push(c);
        if !fs::symlink_metadata(&p).ok()?.is_dir() {
            return None;
        }
    }
    Some(p.join(name))
}

fn copy_tree(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
    root: bool,
) -> Result<(), String> {
    let rd = fs::read_dir(src).map_err(|e| format!("{}: {e}", src.display()))?;
    for e in rd {
        let e = e.map_err(|e| format!("{}: {e}", src.display()))?;
        let sp = e.path();
        let dp = dst.join(e.file_name());
        let m = fs::symlink_metadata(&sp).map_err(|e| format!("{}: {e}", sp.display()))?;
        let ft = m.file_type();
        if ft.is_char_device() && m.rdev() == 0 {
            continue; // an overlay whiteout, already applied
        }
        if ft.is_dir() {
            match fs::symlink_metadata(&dp) {
                Ok(d) if d.is_dir() => {}
                Ok(_) => {
                    remove_any(&dp)?;
                    mkdir(&dp)?;
                }
                Err(_) => mkdir(&dp)?,
            }
            copy_tree(&sp, &dp, links, root)?;
            copy_attrs(&sp, &dp, &m, root)?;
            continue;
        }
        remove_any(&dp)?;
        if m.nlink() > 1
            && let Some(first) = links.get(&(m.dev(), m.ino()))
        {
            fs::hard_link(first, &dp).map_err(|e| format!("link {}: {e}", dp.display()))?;
            continue;
        }
        if ft.is_file() {
            let mut from = File::open(&sp).map_err(|e| format!("{}: {e}", sp.display()))?;
            let mut to = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&dp)
                .map_err(|e| format!("create {}: {e}", dp.display()))?;
            io::copy(&mut from, &mut to).map_err(|e| format!("copy {}: {e}", dp.display()))?;
        } else if ft.is_symlink() {
            let t = fs::read_link(&sp).map_err(|e| format!("{}: {e}", sp.display()))?;
            std::os::unix::fs::symlink(&t, &dp)
                .map_err(|e| format!("symlink {}: {e}", dp.display()))?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            if mknod(&dp, m.mode(), m.rdev()).is_err() {
                continue;
            }
        } else {
            continue; // sockets
        }
        if m.nlink() > 1 {
            links.insert((m.dev(), m.ino()), dp.clone());
        }
        copy_attrs(&sp, &dp, &m, root)?;
    }
    Ok(())
}

fn copy_attrs(src: &Path, dst: &Path, m: &fs::Metadata, root: bool) -> Result<(), String> {
    set_owner(dst, m.uid(), m.gid(), root)?;
    if !m.file_type().is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(m.mode() & 0o7777))
            .map_err(|e| format!("chmod {}: {e}", dst.display()))?;
        for name in list_xattrs(src) {
            if name.as_bytes().starts_with(b"trusted.overlay.") {
                continue;
            }
            if let Some(v) = get_xattr(src, &name) {
                let _ = set_xattr(dst, &name.to_string_lossy(), &v);
            }
        }
    }
    set_mtime(dst, m.mtime().max(0) as u64);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::digest::sha256_of;

    /// A tar entry for tests: (name, kind, data or link target, mode).
    pub(crate) enum E<'a> {
        Dir(&'a str),
        File(&'a str, &'a [u8]),
        Sym(&'a str, &'a str),
        Hard(&'a str, &'a str),
    }

    pub(crate) fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(1_000_000);
            let (name, data): (&str, &[u8]) = match e {
                E::Dir(n) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    (n, b"")
                }
                E::File(n, d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    (n, d)
                }
                E::Sym(n, t) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    set_raw(&mut h.as_old_mut().linkname, t);
                    (n, b"")
                }
                E::Hard(n, t) => {
                    h.set_entry_type(tar::EntryType::Link);
                    set_raw(&mut h.as_old_mut().linkname, t);
                    (n, b"")
                }
            };
            // Raw names, so that tests can write what a hostile tar would (`..`).
            set_raw(&mut h.as_old_mut().name, name);
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn set_raw(field: &mut [u8], s: &str) {
        field.fill(0);
        field[..s.len()].copy_from_slice(s.as_bytes());
    }

    fn unpack(entries: &[E<'_>]) -> (tempfile::TempDir, Result<LayerMeta, String>) {
        let dir = tempfile::tempdir().unwrap();
        let data = tar_of(entries);
        let r = extract(&data[..], dir.path());
        (dir, r)
    }

    #[test]
    fn files_dirs_links() {
        let (d, r) = unpack(&[
            E::Dir("etc/"),
            E::File("etc/passwd", b"root"),
            E::Sym("etc/link", "passwd"),
            E::Hard("etc/hard", "etc/passwd"),
            E::File("./usr/bin/tool", b"x"),
        ]);
        let meta = r.unwrap();
        assert_eq!(meta.size, 5);
        assert!(meta.overlay);
        let p = d.path();
        assert_eq!(fs::read(p.join("etc/passwd")).unwrap(), b"root");
        assert_eq!(
            fs::read_link(p.join("etc/link")).unwrap(),
            Path::new("passwd")
        );
        let a = fs::metadata(p.join("etc/passwd")).unwrap();
        let b = fs::metadata(p.join("etc/hard")).unwrap();
        assert_eq!(a.ino(), b.ino());
        assert_eq!(a.mode() & 0o777, 0o644);
        assert_eq!(a.mtime(), 1_000_000);
        assert!(p.join("usr/bin/tool").is_file());
    }

    #[test]
    fn rejects_parent_traversal() {
        let (_d, r) = unpack(&[E::File("../evil", b"x")]);
        assert!(r.unwrap_err().contains("path traversal"));
        let (_d, r) = unpack(&[E::File("a/../../evil", b"x")]);
        assert!(r.is_err());
        let (_d, r) = unpack(&[E::File("a", b"x"), E::Hard("b", "../../etc/passwd")]);
        assert!(r.is_err());
    }

    #[test]
    fn symlink_parents_stay_inside() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap().to_string();
        let (d, r) = unpack(&[
            E::Sym("escape", &target),
            E::File("escape/owned", b"x"),
            E::Sym("up", "../../../../.."),
            E::File("up/owned2", b"y"),
        ]);
        r.unwrap();
        assert!(!outside.path().join("owned").exists());
        // Resolved as if the layer root were "/".
        assert!(
            d.path()
                .join(target.trim_start_matches('/'))
                .join("owned")
                .is_file()
        );
        assert!(d.path().join("owned2").is_file());
        // A file replaced by a symlink is never written through.
        let (_d2, r) = unpack(&[E::Sym("f", &format!("{target}/x")), E::File("f", b"z")]);
        r.unwrap();
        assert!(!outside.path().join("x").exists());
    }

    #[test]
    fn whiteouts_in_overlay_form() {
        let (d, r) = unpack(&[
            E::Dir("etc/"),
            E::File("etc/.wh.hosts", b""),
            E::File("var/cache/.wh..wh..opq", b""),
            E::File("etc/.wh..wh.plnk", b""),
        ]);
        let meta = r.unwrap();
        assert_eq!(meta.whiteouts, vec!["etc/hosts"]);
        assert_eq!(meta.opaque, vec!["var/cache"]);
        assert!(!d.path().join("etc/.wh.hosts").exists());
        assert!(!d.path().join("var/cache/.wh..wh..opq").exists());
        if is_root() {
            assert!(meta.overlay);
            let m = fs::symlink_metadata(d.path().join("etc/hosts")).unwrap();
            assert!(m.file_type().is_char_device());
            assert_eq!(m.rdev(), 0);
            assert_eq!(
                get_xattr(&d.path().join("var/cache"), OsStr::new(OPAQUE_XATTR)).unwrap(),
                b"y"
            );
        }
    }

    #[test]
    fn copy_fallback_applies_whiteouts() {
        let (l1, r1) = unpack(&[
            E::File("etc/hosts", b"h"),
            E::File("etc/keep", b"k"),
            E::File("var/cache/a", b"a"),
            E::Sym("lib", "usr/lib"),
            E::File("data", b"1"),
            E::Hard("data2", "data"),
        ]);
        let (l2, r2) = unpack(&[
            E::File("etc/.wh.hosts", b""),
            E::File("var/cache/.wh..wh..opq", b""),
            E::File("var/cache/b", b"b"),
            E::Dir("lib/"),
            E::File("lib/x", b"x"),
        ]);
        let rootfs = tempfile::tempdir().unwrap();
        apply_layer_copy(l1.path(), &r1.unwrap(), rootfs.path()).unwrap();
        apply_layer_copy(l2.path(), &r2.unwrap(), rootfs.path()).unwrap();
        let p = rootfs.path();
        assert!(!p.join("etc/hosts").exists());
        assert!(p.join("etc/keep").is_file());
        assert!(!p.join("var/cache/a").exists());
        assert!(p.join("var/cache/b").is_file());
        assert!(fs::symlink_metadata(p.join("lib")).unwrap().is_dir());
        assert!(p.join("lib/x").is_file());
        let a = fs::metadata(p.join("data")).unwrap();
        let b = fs::metadata(p.join("data2")).unwrap();
        assert_eq!(a.ino(), b.ino());
    }

    #[test]
    fn diff_id_and_compression() {
        let data = tar_of(&[E::File("hello", b"world")]);
        let diff = sha256_of(&data);
        let dir = tempfile::tempdir().unwrap();
        // gzip
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &data).unwrap();
        let gz = gz.finish().unwrap();
        // zstd, as two frames
        let half = data.len() / 2;
        let mut zst = ruzstd::encoding::compress_to_vec(
            &data[..half],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        zst.extend(ruzstd::encoding::compress_to_vec(
            &data[half..],
            ruzstd::encoding::CompressionLevel::Fastest,
        ));
        for (i, blob) in [data.clone(), gz, zst].into_iter().enumerate() {
            let f = dir.path().join(format!("blob{i}"));
            fs::write(&f, &blob).unwrap();
            let out = dir.path().join(format!("out{i}"));
            fs::create_dir(&out).unwrap();
            let meta = unpack_layer(&f, Some(&diff), &out).unwrap();
            assert_eq!(meta.diff_id, diff);
            assert_eq!(fs::read(out.join("hello")).unwrap(), b"world");
        }
        let f = dir.path().join("blob0");
        let out = dir.path().join("bad");
        fs::create_dir(&out).unwrap();
        let wrong = format!("sha256:{}", "0".repeat(64));
        let err = unpack_layer(&f, Some(&wrong), &out).unwrap_err();
        assert!(err.contains("unexpected diff id"), "{err}");
    }
}
