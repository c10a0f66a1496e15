//! The few system calls the host runtime needs: process groups, waiting without reaping,
//! `/proc/<pid>/stat` and FIFOs.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Sends `signal` to every process of the group `pgid`. Returns false when the group no longer
/// exists. Refuses group ids ≤ 1 (`kill(0)` and `kill(-1)` would hit the agent itself or every
/// process of the user).
pub(super) fn kill_group(pgid: i32, signal: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(-pgid, signal) == 0 }
}

/// Whether the process group `pgid` still has members.
pub(super) fn group_exists(pgid: i32) -> bool {
    kill_group(pgid, 0)
}

/// Blocks until the child `pid` has exited and returns its exit code (128 + N when killed by
/// signal N), leaving it unreaped (a zombie) so its pid, and with it its process group id, cannot
/// be reused while the caller cleans up. None when the pid is not a child of this process.
pub(super) fn wait_exit_no_reap(pid: i32) -> Option<i32> {
    if pid <= 0 {
        return None;
    }
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value; waitid only writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            // SAFETY: after a successful waitid for WEXITED the sigchld fields are set.
            let status = unsafe { info.si_status() };
            return Some(match info.si_code {
                libc::CLD_KILLED | libc::CLD_DUMPED => 128 + status,
                _ => status,
            });
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return None;
        }
    }
}

/// The fields of `/proc/<pid>/stat` the runtime uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stat {
    pub state: char,
    pub pgrp: i32,
    /// Start time in clock ticks after boot: with the pid, it names a process uniquely.
    pub start_ticks: u64,
}

pub(super) fn stat(pid: i32) -> Option<Stat> {
    if pid <= 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

pub(super) fn parse_stat(text: &str) -> Option<Stat> {
    // The command name is in parentheses and may itself contain spaces and parentheses.
    let rest = text.get(text.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// What became of a recorded process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Liveness {
    Alive,
    /// Exited, not yet reaped by its parent.
    Zombie,
    /// Gone, or the pid now names another process.
    Gone,
}

pub(super) fn liveness(pid: i32, start_ticks: Option<u64>) -> Liveness {
    match stat(pid) {
        None => Liveness::Gone,
        Some(s) if start_ticks.is_some_and(|t| t != s.start_ticks) => Liveness::Gone,
        Some(s) if s.state == 'Z' || s.state == 'X' => Liveness::Zombie,
        Some(_) => Liveness::Alive,
    }
}

pub(super) fn mkfifo(path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: `c` is a valid NUL-terminated string.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        let line =
            "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.pgrp, 1234);
        assert_eq!(s.start_ticks, 98765);
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[test]
    fn own_process_is_alive() {
        let me = std::process::id() as i32;
        let s = stat(me).unwrap();
        assert_eq!(liveness(me, Some(s.start_ticks)), Liveness::Alive);
        assert_eq!(liveness(me, Some(s.start_ticks + 1)), Liveness::Gone);
        assert_eq!(liveness(-5, None), Liveness::Gone);
        assert!(!kill_group(0, 0) && !kill_group(1, 0) && !kill_group(-3, 0));
    }
}
