//! Container root filesystems: an overlayfs mount of the image's unpacked layers with the
//! container's own upper and work directories, or, when overlayfs cannot be used, a full copy.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::{ImageStore, RootfsLease, now_secs, write_atomic};
use crate::unpack;

const MARKER: &str = ".skiff-rootfs.json";
/// The kernel copies mount data into one page, NUL included: longer option strings fail.
const MOUNT_DATA_MAX: usize = 4095;

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    image_id: String,
    overlay: bool,
}

impl ImageStore {
    /// Prepares `container_dir/rootfs` from `image` and returns its path, to hand to runc.
    /// Uses overlayfs (lower layers from the store, `upper/` and `work/` under
    /// `container_dir`) when the kernel allows and the options fit in a page; otherwise copies
    /// the layers into it. Idempotent: a rootfs already prepared is returned as it is (an
    /// overlay whose mount is gone, e.g. after a reboot, is mounted again over the same upper
    /// directory).
    pub fn prepare_rootfs(&self, image: &str, container_dir: &Path) -> Result<PathBuf, String> {
        fs::create_dir_all(container_dir)
            .map_err(|e| format!("mkdir {}: {e}", container_dir.display()))?;
        let dir = fs::canonicalize(container_dir)
            .map_err(|e| format!("{}: {e}", container_dir.display()))?;
        let rootfs = dir.join("rootfs");
        let marker_path = dir.join(MARKER);
        let marker: Option<Marker> = fs::read(&marker_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());

        // A rootfs prepared before keeps its image's layers even if the image was removed
        // since: they come from its lease then.
        let (image_id, diff_ids, _pins) =
            match marker.as_ref().and_then(|_| self.lease_pinned(&dir)) {
                Some(leased) => leased,
                None => {
                    let (rec, pins) = self.find_record_pinned(image)?;
                    let diff_ids = rec.layers.iter().map(|l| l.diff_id.clone()).collect();
                    (rec.id, diff_ids, pins)
                }
            };
        if let Some(m) = &marker
            && (!m.overlay || is_mountpoint(&rootfs)?)
        {
            self.touch(&image_id, &dir, &diff_ids, m.overlay)?;
            return Ok(rootfs);
        }
        let mut layers = Vec::with_capacity(diff_ids.len());
        for d in &diff_ids {
            let meta = self
                .layer_meta(d)
                .map_err(|e| format!("layer {d} of image {image} is not unpacked: {e}"))?;
            layers.push((self.layer_dir(d)?.join("diff"), meta));
        }
        let overlay_possible =
            self.overlay_enabled() && !layers.is_empty() && layers.iter().all(|(_, m)| m.overlay);
        let overlay_after_reboot = marker.as_ref().is_some_and(|m| m.overlay);
        if overlay_possible || overlay_after_reboot {
            match self.mount_overlay(&dir, &layers) {
                Ok(()) => {
                    write_marker(self, &marker_path, &image_id, true)?;
                    self.touch(&image_id, &dir, &diff_ids, true)?;
                    return Ok(rootfs);
                }
                Err(e) if overlay_after_reboot => return Err(e),
                Err(e) => {
                    tracing::info!(image, error = %e, "overlayfs not usable, copying the image instead");
                }
            }
        }
        // Copy fallback: a fresh directory with every layer applied in order.
        if is_mountpoint(&rootfs)? {
            return Err(format!(
                "{} is mounted but not prepared by skiff",
                rootfs.display()
            ));
        }
        unpack::remove_any(&rootfs)?;
        fs::create_dir(&rootfs).map_err(|e| format!("mkdir {}: {e}", rootfs.display()))?;
        for (diff, meta) in &layers {
            unpack::apply_layer_copy(diff, meta, &rootfs)?;
        }
        write_marker(self, &marker_path, &image_id, false)?;
        self.touch(&image_id, &dir, &diff_ids, false)?;
        Ok(rootfs)
    }

    /// Unmounts (lazily when busy) and removes what [`ImageStore::prepare_rootfs`] made under
    /// `container_dir` — `rootfs/`, `upper/`, `work/` — and releases the image's layers.
    /// Idempotent; nothing there is fine. Anything still mounted below `container_dir` is
    /// unmounted first, so nothing is ever deleted through a mount.
    pub fn release_rootfs(&self, container_dir: &Path) -> Result<(), String> {
        let dir = match fs::canonicalize(container_dir) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.drop_lease(container_dir)?;
                return Ok(());
            }
            Err(e) => return Err(format!("{}: {e}", container_dir.display())),
        };
        let mut mounts: Vec<PathBuf> = mount_points()?
            .into_iter()
            .filter(|m| m.starts_with(&dir))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in mounts {
            unmount(&m)?;
        }
        for name in ["rootfs", "upper", "work", MARKER] {
            unpack::remove_any(&dir.join(name))?;
        }
        self.drop_lease(&dir)
    }

    fn mount_overlay(
        &self,
        dir: &Path,
        layers: &[(PathBuf, unpack::LayerMeta)],
    ) -> Result<(), String> {
        let rootfs = dir.join("rootfs");
        let upper = dir.join("upper");
        let work = dir.join("work");
        for d in [&rootfs, &upper, &work] {
            fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
        }
        // overlayfs wants the topmost layer first.
        let lowers: Vec<String> = layers
            .iter()
            .rev()
            .map(|(p, _)| p.to_string_lossy().into_owned())
            .collect();
        let paths = lowers
            .iter()
            .map(String::as_str)
            .chain([upper.to_str().unwrap_or(","), work.to_str().unwrap_or(",")]);
        for p in paths {
            if p.contains([',', ':', '\\']) {
                return Err(format!("path {p:?} cannot be given to overlayfs"));
            }
        }
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            upper.display(),
            work.display()
        );
        if data.len() > MOUNT_DATA_MAX {
            return Err(format!(
                "overlayfs options for {} layers are {} bytes, over the one-page limit",
                layers.len(),
                data.len()
            ));
        }
        mount("overlay", &rootfs, "overlay", &data)
            .map_err(|e| format!("mount overlay on {}: {e}", rootfs.display()))
    }

    /// Records the lease and the image's last use.
    fn touch(
        &self,
        image_id: &str,
        dir: &Path,
        diff_ids: &[String],
        overlay: bool,
    ) -> Result<(), String> {
        let mut idx = self.index();
        idx.rootfs.insert(
            dir.to_string_lossy().into_owned(),
            RootfsLease {
                image_id: image_id.to_string(),
                diff_ids: diff_ids.to_vec(),
                overlay,
            },
        );
        if let Some(r) = idx.images.iter_mut().find(|r| r.id == image_id) {
            r.last_used = now_secs();
        }
        self.save_index(&idx)
    }

    fn drop_lease(&self, dir: &Path) -> Result<(), String> {
        let mut idx = self.index();
        if idx.rootfs.remove(&*dir.to_string_lossy()).is_some() {
            self.save_index(&idx)?;
        }
        Ok(())
    }
}

fn write_marker(
    store: &ImageStore,
    path: &Path,
    image_id: &str,
    overlay: bool,
) -> Result<(), String> {
    let body = serde_json::to_vec(&Marker {
        image_id: image_id.to_string(),
        overlay,
    })
    .map_err(|e| e.to_string())?;
    write_atomic(&store.tmp_path(), path, &body)
}

fn cstr(s: &[u8]) -> Result<CString, String> {
    CString::new(s).map_err(|_| "NUL in mount argument".to_string())
}

fn mount(source: &str, target: &Path, fstype: &str, data: &str) -> io::Result<()> {
    let src = cstr(source.as_bytes()).map_err(io::Error::other)?;
    let tgt = cstr(target.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let fst = cstr(fstype.as_bytes()).map_err(io::Error::other)?;
    let dat = cstr(data.as_bytes()).map_err(io::Error::other)?;
    // SAFETY: valid NUL-terminated strings for the duration of the call.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fst.as_ptr(),
            0,
            dat.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unmounts `p`, detaching it lazily when busy. Not mounted is fine.
fn unmount(p: &Path) -> Result<(), String> {
    let c = cstr(p.as_os_str().as_bytes())?;
    // SAFETY: valid path.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EBUSY) => {
            // SAFETY: valid path.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
                Ok(())
            } else {
                Err(format!(
                    "unmount {}: {}",
                    p.display(),
                    io::Error::last_os_error()
                ))
            }
        }
        Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
        _ => Err(format!("unmount {}: {e}", p.display())),
    }
}

fn is_mountpoint(p: &Path) -> Result<bool, String> {
    Ok(mount_points()?.iter().any(|m| m == p))
}

/// Mount points of this mount namespace, from `/proc/self/mountinfo`.
fn mount_points() -> Result<Vec<PathBuf>, String> {
    let text = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("read /proc/self/mountinfo: {e}"))?;
    Ok(parse_mountinfo(&text))
}

fn parse_mountinfo(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m).to_string_lossy().into_owned()))
        .collect()
}

/// Undoes the `\ooo` escapes of a `/proc/self/mountinfo` field (space, tab, newline and
/// backslash are escaped so). The bytes as they are, not necessarily UTF-8.
pub fn unescape_mountinfo(s: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    std::ffi::OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo() {
        let text = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    40 22 0:40 / /tmp/a\\040b rw - overlay overlay rw,lowerdir=/x\n";
        let m = parse_mountinfo(text);
        assert_eq!(m, vec![PathBuf::from("/"), PathBuf::from("/tmp/a b")]);
        assert_eq!(unescape_mountinfo("a\\134b"), "a\\b");
        assert_eq!(unescape_mountinfo("end\\04"), "end\\04");
    }
}
