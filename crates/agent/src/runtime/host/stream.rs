//! Interactive exec for the host runtime (`kubectl exec`): the command as another host process
//! with the container's env and working directory, with pipes for the streams asked for, or a
//! pseudo-terminal (`openpty`; the process leads a new session with the terminal as its
//! controlling terminal, `TERM=xterm` unless the container sets `TERM`).
//!
//! The process runs in its own process group (with a terminal: its own session, whose id is its
//! group id). When the caller drops the session before the process has exited, the whole group is
//! killed. What it leaves running after a normal exit stays, as in a container, until the
//! container exits.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::sys;
use crate::runtime::common::{self, read_fd, write_fd};
use crate::runtime::{ExecProcess, ExecStreams};

/// How a started exec reports its process group (to be killed with the container).
pub(super) struct Started {
    pub process: ExecProcess,
    pub pgid: i32,
}

/// Starts `argv` with `env` in `working_dir`. `Err` carries the text containerd gives when a
/// command cannot be started (`failed to exec in container: …`).
pub(super) fn spawn(
    argv: &[String],
    env: &[(String, String)],
    working_dir: &Path,
    streams: ExecStreams,
) -> Result<Started, String> {
    let Some(program) = argv.first().filter(|p| !p.is_empty()) else {
        return Err("failed to exec in container: no command given".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(working_dir)
        .kill_on_drop(true);
    let mut pty = None;
    if streams.tty {
        if !env.iter().any(|(k, _)| k == "TERM") {
            cmd.env("TERM", "xterm");
        }
        let (master, slave) = open_pty().map_err(|e| exec_failed(&format!("openpty: {e}")))?;
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| exec_failed(&format!("dup: {e}")))
        };
        cmd.stdin(dup(&slave)?).stdout(dup(&slave)?).stderr(slave);
        // SAFETY: the closure only makes async-signal-safe system calls (setsid, ioctl).
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        pty = Some(master);
    } else {
        let pipe = |on: bool| {
            if on {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            }
        };
        cmd.stdin(pipe(streams.stdin))
            .stdout(pipe(streams.stdout))
            .stderr(pipe(streams.stderr))
            .process_group(0);
    }
    let spawned = cmd.spawn();
    // Closes our copies of the terminal's slave side, so reading the master ends with the
    // process (and whatever else holds the terminal).
    drop(cmd);
    let mut child = spawned.map_err(|e| {
        exec_failed(&format!(
            "exec failed: unable to start container process: {}: unknown",
            super::exec_error_detail(program, &e)
        ))
    })?;
    let pid = child.id().map_or(0, |p| p as i32);

    let mut process = ExecProcess {
        stdin: None,
        stdout: None,
        stderr: None,
        resize: None,
        exit: Box::pin(async { Ok(0) }),
    };
    if let Some(master) = pty {
        // SAFETY: the OwnedFd is owned by the AsyncFd and stays open, the same fd, until it
        // is dropped.
        let master = unsafe { AsyncFd::register(master) }
            .map_err(|e| exec_failed(&format!("cannot watch the terminal: {e}")))?;
        let master = Arc::new(master);
        if streams.stdin {
            process.stdin = Some(Box::pin(PtyIo(master.clone())));
        }
        if streams.stdout || streams.stderr {
            process.stdout = Some(Box::pin(PtyIo(master.clone())));
        }
        let fd = master.clone();
        process.resize = Some(Box::new(move |cols, rows| {
            set_window_size(fd.get_ref(), cols, rows);
        }));
    } else {
        if let Some(s) = child.stdin.take() {
            process.stdin = Some(Box::pin(s));
        }
        if let Some(s) = child.stdout.take() {
            process.stdout = Some(Box::pin(s));
        }
        if let Some(s) = child.stderr.take() {
            process.stderr = Some(Box::pin(s));
        }
    }
    let guard = GroupGuard {
        pgid: pid,
        exited: false,
    };
    process.exit = Box::pin(async move {
        // The whole guard lives in the future (not only the field written below).
        let mut guard = guard;
        let status = child.wait().await;
        guard.exited = true;
        use std::os::unix::process::ExitStatusExt;
        match status {
            Ok(s) => Ok(s.code().or(s.signal().map(|n| 128 + n)).unwrap_or(-1)),
            Err(e) => Err(format!("failed to wait for the command: {e}")),
        }
    });
    Ok(Started { process, pgid: pid })
}

/// containerd's wording for an exec that could not start.
fn exec_failed(detail: &str) -> String {
    format!(
        "failed to exec in container: failed to start exec \"{}\": OCI runtime exec failed: {detail}",
        crate::runtime::common::random_hex()
    )
}

/// Kills the exec's process group when the session goes away before the process exited.
struct GroupGuard {
    pgid: i32,
    exited: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if !self.exited {
            sys::kill_group(self.pgid, libc::SIGKILL);
        }
    }
}

/// A new pseudo-terminal: (master, non-blocking; slave). Both close on exec.
fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    let (master, slave) = common::openpty()?;
    common::set_nonblocking(master.as_raw_fd())?;
    Ok((master, slave))
}

/// `TIOCSWINSZ` on the terminal; zero sizes are ignored.
fn set_window_size(fd: &OwnedFd, cols: u16, rows: u16) {
    if cols == 0 || rows == 0 {
        return;
    }
    let _ = common::set_winsize(fd.as_raw_fd(), cols, rows);
}

/// One direction of the terminal's master side. Reading ends (EOF) once no process holds the
/// slave side any more (the kernel answers EIO).
struct PtyIo(Arc<AsyncFd<OwnedFd>>);

impl AsyncRead for PtyIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let r = guard.try_io(|fd| read_fd(fd.get_ref().as_raw_fd(), unfilled));
            match r {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            let r = guard.try_io(|fd| write_fd(fd.get_ref().as_raw_fd(), data));
            match r {
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
