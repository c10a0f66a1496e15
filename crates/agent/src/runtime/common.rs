//! Plumbing both runtimes (`host` and `runc`) share: exec's output limits and state checks,
//! path components, the wait for an exit, exit codes and persisted exit reasons, ids, the order
//! of `list_containers`, atomic file writes, container directory removal, and terminals
//! (opening one, its size, non-blocking raw reads and writes of its master side).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use super::Known;
use crate::observed::{Exit, ExitReason};

/// The most output an `exec` keeps.
pub(crate) const EXEC_OUTPUT_CAP: usize = 10 * 1024;

/// How long an `exec` waits for its output to end once its process (or runc) has exited
/// (background processes may keep the pipe open).
pub(crate) const EXEC_OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// A libc return of 0 as `Ok`, anything else as the OS error.
fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Locks `m`, recovering the data of a poisoned lock.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A path component safe to join (no separators, no `.`/`..`).
pub(crate) fn safe_component(s: &str) -> String {
    let c: String = s
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    if c.is_empty() || c == "." || c == ".." {
        format!("_{c}")
    } else {
        c
    }
}

/// Waits for an instance's exit (published on `exit`), up to `limit`.
pub(crate) async fn wait_exit(exit: &watch::Sender<Option<Exit>>, limit: Duration) -> Option<Exit> {
    let mut rx = exit.subscribe();
    let wait = async {
        loop {
            if let Some(e) = rx.borrow_and_update().clone() {
                return Some(e);
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    };
    tokio::time::timeout(limit, wait).await.ok().flatten()
}

/// Exec needs a running container: the CRI's texts for an exited one and for one whose state
/// is unknown (`lost`).
pub(crate) fn check_exec_state(exited: bool, lost: bool) -> Result<(), String> {
    if exited {
        return Err("failed to exec in container: container is in CONTAINER_EXITED state".into());
    }
    if lost {
        return Err("failed to exec in container: container is in CONTAINER_UNKNOWN state".into());
    }
    Ok(())
}

/// The exit code of a finished process (128 + N for a death by signal N).
pub(crate) fn status_code(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code().or(s.signal().map(|n| 128 + n)).unwrap_or(-1)
}

/// The exit reason of a persisted reason text (the inverse of [`ExitReason::as_str`]).
pub(crate) fn exit_reason(text: &str) -> ExitReason {
    match text {
        "Completed" => ExitReason::Completed,
        "Error" => ExitReason::Error,
        "OOMKilled" => ExitReason::OOMKilled,
        "StartError" => ExitReason::StartError,
        other => ExitReason::Other(other.to_string()),
    }
}

/// 64 random hex digits (a container id).
pub(crate) fn random_hex() -> String {
    use std::fmt::Write;
    use std::io::Read;
    let mut bytes = [0u8; 32];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !ok {
        // Fall back on the standard library's randomly keyed hasher.
        use std::hash::{BuildHasher, Hasher};
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            let mut h = std::hash::RandomState::new().build_hasher();
            h.write_usize(i);
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    let mut s = String::with_capacity(64);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The order `list_containers` answers in: by pod UID, container, attempt, id.
pub(crate) fn sort_known(known: &mut [Known]) {
    known.sort_by(|a, b| {
        (&a.pod_uid, &a.container, a.instance.attempt, &a.instance.id).cmp(&(
            &b.pod_uid,
            &b.container,
            b.instance.attempt,
            &b.instance.id,
        ))
    });
}

/// Writes `bytes` to `path` atomically (a temporary file, fsync, rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Removes a container's directory; one already gone is fine.
pub(crate) fn remove_container_dir(dir: &Path, id: &str) -> Result<(), String> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("failed to remove container \"{id}\": {e}")),
    }
}

/// A new pseudo-terminal: (master, slave).
pub(crate) fn openpty() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut master: RawFd = -1;
    let mut slave: RawFd = -1;
    // SAFETY: both out-pointers are valid; name, termios and winsize may be null.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    check(r)?;
    // SAFETY: openpty returned two fresh descriptors we now own.
    let (m, s) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    set_cloexec(m.as_raw_fd())?;
    set_cloexec(s.as_raw_fd())?;
    Ok((m, s))
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) }.min(0))
}

pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) }.min(0))
}

/// Sets a terminal's size.
pub(crate) fn set_winsize(fd: RawFd, cols: u16, rows: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
    check(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) })
}

/// One `read(2)` from `fd` into `buf`.
pub(crate) fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reads at most `buf.len()` bytes into the initialised slice.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One `write(2)` of `data` to `fd`.
pub(crate) fn write_fd(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: writes at most `data.len()` bytes from the slice.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_and_distinct() {
        let a = random_hex();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, random_hex());
    }

    #[test]
    fn exit_reasons_round_trip() {
        for r in [
            ExitReason::Completed,
            ExitReason::Error,
            ExitReason::OOMKilled,
            ExitReason::StartError,
            ExitReason::Other("Signal".into()),
        ] {
            assert_eq!(exit_reason(r.as_str()), r);
        }
    }
}
