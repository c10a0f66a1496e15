//! The system calls the runc runtime and its shim make directly: mounts, namespaces, terminals,
//! reaping, file descriptors passed over sockets, and a few `/proc` reads.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `statfs` magic of the filesystem behind `/proc/<pid>/ns/*` files.
const NSFS_MAGIC: i64 = 0x6e73_6673;

fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `mount --bind src dst`.
pub(crate) fn bind_mount(src: &Path, dst: &Path) -> io::Result<()> {
    let (s, d) = (cstr(src)?, cstr(dst)?);
    // SAFETY: valid NUL-terminated strings; null fstype and data are allowed for MS_BIND.
    check(unsafe {
        libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    })
}

/// `mount --make-private path`.
pub(crate) fn make_private(path: &Path) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: valid NUL-terminated string; only the propagation flag is changed.
    check(unsafe {
        libc::mount(
            std::ptr::null(),
            p.as_ptr(),
            std::ptr::null(),
            libc::MS_PRIVATE,
            std::ptr::null(),
        )
    })
}

/// Lazily unmounts `path`. Ok(false) when nothing was mounted there.
pub(crate) fn unmount(path: &Path) -> io::Result<bool> {
    let p = cstr(path)?;
    // SAFETY: valid NUL-terminated string.
    if unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(false),
        _ => Err(e),
    }
}

/// Whether `path` is a mounted namespace file (a bind mount of `/proc/<pid>/ns/*`).
pub(crate) fn is_ns_mount(path: &Path) -> bool {
    let Ok(p) = cstr(path) else { return false };
    // SAFETY: an all-zero statfs is a valid value; statfs only writes into it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid string and writable struct.
    if unsafe { libc::statfs(p.as_ptr(), &mut st) } != 0 {
        return false;
    }
    st.f_type as i64 == NSFS_MAGIC
}

/// Moves the calling thread into new namespaces.
pub(crate) fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare has no memory-safety preconditions.
    check(unsafe { libc::unshare(flags) })
}

/// Sets the hostname of the calling thread's UTS namespace.
pub(crate) fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe `name`'s bytes.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
}

pub(crate) fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Makes the calling process a subreaper: orphaned descendants are re-parented to it.
pub(crate) fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument.
    check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })
}

/// Reaps one child (blocking). `(pid, exit code)` with 128 + N for a death by signal N; None
/// when there is no child left.
pub(crate) fn wait_any() -> Option<(i32, i32)> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid writable int.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid > 0 {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                continue;
            };
            return Some((pid, code));
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
}

/// In a child between fork and exec: a new session whose controlling terminal is stdin.
/// Async-signal-safe.
pub(crate) fn new_session_with_ctty() -> io::Result<()> {
    // SAFETY: setsid and ioctl are async-signal-safe and take no pointers here.
    unsafe {
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// In a child between fork and exec: a new session. Async-signal-safe.
pub(crate) fn new_session() -> io::Result<()> {
    // SAFETY: setsid is async-signal-safe.
    if unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one file descriptor sent with SCM_RIGHTS over a connected unix socket (runc's
/// `--console-socket` protocol: the terminal's master, with its name as the payload).
pub(crate) fn recv_fd(sock: RawFd) -> io::Result<OwnedFd> {
    let mut payload = [0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    // Room for a few descriptors, 8-byte aligned as cmsghdr needs.
    let mut control = [0u64; 16];
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let n = loop {
        // SAFETY: msg describes valid buffers.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let _ = n;
    // SAFETY: msg was filled by recvmsg; the CMSG helpers walk its control buffer.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                if count > 0 {
                    let fd = std::ptr::read_unaligned(data);
                    for i in 1..count {
                        libc::close(std::ptr::read_unaligned(data.add(i)));
                    }
                    return Ok(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "no file descriptor received on the console socket",
    ))
}

/// The uid of the process at the other end of a connected unix socket.
pub(crate) fn peer_uid(sock: RawFd) -> Option<u32> {
    // SAFETY: an all-zero ucred is valid; getsockopt writes at most `len` bytes into it.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: valid pointers to `cred` and `len`.
    let r = unsafe {
        libc::getsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(cred.uid)
}

/// The start time of a process (clock ticks after boot, field 22 of `/proc/<pid>/stat`), and
/// whether it is a zombie. None when there is no such process.
pub(crate) fn proc_start(pid: i32) -> Option<(u64, bool)> {
    if pid <= 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.get(text.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ticks = fields.get(19)?.parse().ok()?;
    Some((ticks, state == 'Z' || state == 'X'))
}

/// Whether the process `pid` that started at `ticks` is still alive (not a zombie).
pub(crate) fn alive(pid: i32, ticks: u64) -> bool {
    matches!(proc_start(pid), Some((t, false)) if t == ticks)
}

pub(crate) fn kill(pid: i32, signal: i32) {
    if pid > 1 {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, signal) };
    }
}

/// One line of `/proc/self/mountinfo`: where something is mounted, its type and super options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountInfo {
    pub mount_point: std::path::PathBuf,
    pub fstype: String,
    pub super_options: String,
}

pub(crate) fn mountinfo() -> Vec<MountInfo> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default()
}

pub(crate) fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mp) = left.split(' ').nth(4) else {
            continue;
        };
        let mut r = right.split(' ');
        let fstype = r.next().unwrap_or_default().to_string();
        let _source = r.next();
        let super_options = r.next().unwrap_or_default().to_string();
        out.push(MountInfo {
            mount_point: std::path::PathBuf::from(skiff_images::unescape_mountinfo(mp)),
            fstype,
            super_options,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    40 25 0:35 / /sys/fs/cgroup/memory rw,nosuid shared:9 - cgroup cgroup rw,memory\n\
                    garbage\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, Path::new("/mnt/with space"));
        assert_eq!(m[0].fstype, "ext3");
        assert_eq!(m[1].fstype, "cgroup");
        assert_eq!(m[1].super_options, "rw,memory");
    }

    #[test]
    fn own_process_start() {
        let me = std::process::id() as i32;
        let (ticks, zombie) = proc_start(me).unwrap();
        assert!(!zombie);
        assert!(alive(me, ticks));
        assert!(!alive(me, ticks + 1));
        assert_eq!(proc_start(-1), None);
    }
}
