//! The shim: one small process per container that outlives the agent.
//!
//! Started detached by the agent (own session, stdio on `/dev/null`) as
//! `<shim argv prefix> <container dir>`, it:
//!
//! 1. records its pid (`shim.pid`) and becomes a child subreaper, so the container's init
//!    process, once `runc create` has exited, is re-parented to it and it can read its exit
//!    status;
//! 2. runs `runc create` with pipes as the container's stdout/stderr (or, for a terminal, takes
//!    the terminal's master from runc over a console socket), and `/dev/null` or a pipe it keeps
//!    open as stdin; a failed create is written as a `StartError` exit (code 128) with runc's
//!    message in containerd's words;
//! 3. copies the output, line by line, into the CRI log file ([`crate::runtime::cri_log`]);
//! 4. runs `runc start`, writes `started.json`, and waits for the init process;
//! 5. reads the cgroup's OOM kill count while the cgroup still exists, lets the output drain,
//!    runs `runc delete`, writes `exit.json` and exits.
//!
//! It never reads the agent's memory: everything it needs is in `shim.json`.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::records::{self, ExitRecord, ShimPid, ShimSpec, Started};
use super::{cgroups, sys};
use crate::observed::{Exit, ExitReason};
use crate::runtime::cri_log::{self, LineSplitter, Stream};

/// How long the output may take to drain once the container has exited.
const LOG_DRAIN: Duration = Duration::from_secs(5);

/// How long `runc create` may take to hand over a terminal.
const CONSOLE_WAIT: Duration = Duration::from_secs(120);

/// The start of containerd's text for a container that could not be created or started.
pub const CONTAINERD_CREATE_PREFIX: &str =
    "failed to create containerd task: failed to create shim task: OCI runtime create failed";

/// The shim's entry point: `args` is `[<container dir>]`. Returns the process' exit code.
pub fn shim_main(args: &[String]) -> i32 {
    let Some(dir) = args.first().filter(|d| !d.is_empty()) else {
        eprintln!("usage: runc-shim <container directory>");
        return 2;
    };
    let dir = PathBuf::from(dir);
    match run(&dir) {
        Ok(()) => 0,
        Err(e) => {
            // stdio is /dev/null: leave the reason next to the container's files, and make the
            // start fail with it.
            let _ = std::fs::write(dir.join("shim.err"), format!("{e}\n"));
            if records::read::<ExitRecord>(&dir, records::EXIT).is_none() {
                write_failed(&dir, None, &create_failed(&e));
            }
            1
        }
    }
}

fn runc(spec: &ShimSpec, dir: &Path) -> Command {
    let mut c = Command::new(&spec.runc);
    c.arg("--root")
        .arg(&spec.root)
        .arg("--log")
        .arg(dir.join(records::RUNC_LOG))
        .arg("--log-format")
        .arg("json")
        .current_dir(dir);
    c
}

/// The container's standard streams as the shim holds them.
struct Io {
    /// Read ends of the output (stdout and stderr pipes, or the terminal's master).
    outputs: Vec<(File, Stream)>,
    /// The write end of the stdin pipe, kept open so the container's stdin stays open.
    _stdin: Option<OwnedFd>,
}

fn run(dir: &Path) -> Result<(), String> {
    let me = std::process::id() as i32;
    let ticks = sys::proc_start(me).map_or(0, |(t, _)| t);
    records::write(
        dir,
        records::SHIM_PID,
        &ShimPid {
            pid: me,
            start_ticks: ticks,
        },
    )
    .map_err(|e| format!("failed to write the shim pid: {e}"))?;
    let spec: ShimSpec = records::read(dir, records::SHIM_SPEC)
        .ok_or_else(|| format!("no readable {} in {}", records::SHIM_SPEC, dir.display()))?;
    sys::set_child_subreaper().map_err(|e| format!("failed to become a subreaper: {e}"))?;

    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log_path)
        .map_err(|e| format!("failed to open {}: {e}", spec.log_path.display()))?;
    let log = Arc::new(Mutex::new(log));

    let io = match create(&spec, dir) {
        Ok(x) => x,
        Err(message) => {
            finish_failed(&spec, dir, &message);
            return Ok(());
        }
    };
    let pid: i32 = std::fs::read_to_string(dir.join(records::INIT_PID))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if pid <= 0 {
        finish_failed(
            &spec,
            dir,
            &create_failed("runc create did not report the container's pid"),
        );
        return Ok(());
    }

    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    for (file, stream) in io.outputs {
        let log = log.clone();
        let done = done_tx.clone();
        let _ = std::thread::Builder::new()
            .name("skiff-shim-log".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                copy_output(file, stream, &log);
                drop(done);
            });
    }
    drop(done_tx);

    let start = runc(&spec, dir)
        .arg("start")
        .arg(&spec.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let started_at = Timestamp::now();
    match start {
        Ok(o) if o.status.success() => {}
        other => {
            let detail =
                records::runc_error(&dir.join(records::RUNC_LOG)).unwrap_or_else(|| match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => format!("failed to run runc start: {e}"),
                });
            sys::kill(pid, libc::SIGKILL);
            reap_until(pid);
            finish_failed(&spec, dir, &create_failed(&detail));
            return Ok(());
        }
    }
    let _ = records::write(dir, records::STARTED, &Started { pid, started_at });

    let code = reap_until(pid).unwrap_or(255);
    let finished_at = Timestamp::now();
    // The cgroup goes with `runc delete`: read the OOM count first.
    let oom = cgroups::oom_kills(&spec.cgroups_path).unwrap_or(0) > 0;
    drain(&done_rx);
    delete(&spec, dir);
    let exit = records::exit_of(code, oom, Some(started_at), finished_at);
    records::write(dir, records::EXIT, &ExitRecord::of(&exit, oom))
        .map_err(|e| format!("failed to write the exit record: {e}"))
}

/// `runc create`: the container's streams once it exists (its init waiting to be started), or
/// containerd's message when it could not be created.
fn create(spec: &ShimSpec, dir: &Path) -> Result<Io, String> {
    let pipe = || io::pipe().map_err(|e| format!("failed to create a pipe: {e}"));
    let mut cmd = runc(spec, dir);
    cmd.arg("create")
        .arg("--bundle")
        .arg(dir)
        .arg("--pid-file")
        .arg(dir.join(records::INIT_PID));
    let mut stdin_keep = None;
    let mut outputs = Vec::new();
    // runc's own complaints go to its stderr; with a terminal that is a pipe of its own.
    let mut runc_stderr = None;
    let console = if spec.tty {
        let name = format!("skiff-console-{}", spec.id);
        let addr = <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            name.as_bytes(),
        )
        .map_err(|e| format!("failed to name the console socket: {e}"))?;
        let listener = std::os::unix::net::UnixListener::bind_addr(&addr)
            .map_err(|e| format!("failed to create the console socket: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("failed to set up the console socket: {e}"))?;
        cmd.arg("--console-socket").arg(format!("@{name}"));
        let (r, w) = pipe()?;
        runc_stderr = Some(r);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(w);
        Some(listener)
    } else {
        if spec.stdin {
            let (r, w) = pipe()?;
            cmd.stdin(r);
            stdin_keep = Some(OwnedFd::from(w));
        } else {
            cmd.stdin(Stdio::null());
        }
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        cmd.stdout(out_w).stderr(err_w);
        outputs.push((File::from(OwnedFd::from(out_r)), Stream::Stdout));
        outputs.push((File::from(OwnedFd::from(err_r)), Stream::Stderr));
        None
    };
    cmd.arg(&spec.id);
    let spawned = cmd.spawn();
    // Our copies of the container's ends must go, or the output never ends.
    drop(cmd);
    let mut child = spawned.map_err(|e| create_failed(&format!("failed to run runc: {e}")))?;

    let mut master = None;
    let status = match &console {
        None => child.wait(),
        Some(listener) => {
            let deadline = Instant::now() + CONSOLE_WAIT;
            loop {
                if master.is_none()
                    && let Ok((conn, _)) = listener.accept()
                {
                    // The socket's name is public: only root (runc) may hand over a terminal.
                    if sys::peer_uid(conn.as_raw_fd()) == Some(0) {
                        let _ = conn.set_nonblocking(false);
                        master = sys::recv_fd(conn.as_raw_fd()).ok();
                    }
                }
                match child.try_wait() {
                    Ok(Some(s)) => break Ok(s),
                    Ok(None) if Instant::now() > deadline => {
                        let _ = child.kill();
                        break child.wait();
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                    Err(e) => break Err(e),
                }
            }
        }
    };
    let status = status.map_err(|e| create_failed(&format!("failed to wait for runc: {e}")))?;
    if !status.success() {
        let detail = records::runc_error(&dir.join(records::RUNC_LOG)).unwrap_or_else(|| {
            // Without a log entry, what runc printed (the container never ran).
            let mut text = String::new();
            for (f, _) in &mut outputs {
                text.push_str(&read_available(f));
            }
            if let Some(r) = runc_stderr.take() {
                text.push_str(&read_available(&mut File::from(OwnedFd::from(r))));
            }
            let text = text.trim();
            if text.is_empty() {
                format!("runc create failed: {status}")
            } else {
                text.to_string()
            }
        });
        return Err(create_failed(&detail));
    }
    if let Some(m) = master {
        outputs.push((File::from(m), Stream::Stdout));
    } else if spec.tty {
        return Err(create_failed("runc create did not hand over the terminal"));
    }
    Ok(Io {
        outputs,
        _stdin: stdin_keep,
    })
}

/// What can be read from a pipe right now (at most 64 KiB).
fn read_available(f: &mut File) -> String {
    let _ = crate::runtime::common::set_nonblocking(f.as_raw_fd());
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < 64 * 1024 {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// containerd's text for a container that could not be created or started, around runc's
/// message (e.g. `runc create failed: unable to start container process: exec: "nope": …`).
pub fn create_failed(runc_message: &str) -> String {
    format!("{CONTAINERD_CREATE_PREFIX}: {runc_message}: unknown")
}

/// Records a container that never ran (and removes what runc has of it).
fn finish_failed(spec: &ShimSpec, dir: &Path, message: &str) {
    delete(spec, dir);
    write_failed(dir, None, message);
}

/// Writes the exit of a container that never ran: exit code 128, reason `StartError`.
fn write_failed(dir: &Path, started_at: Option<Timestamp>, message: &str) {
    let exit = Exit {
        exit_code: 128,
        reason: ExitReason::StartError,
        message: Some(message.to_string()),
        started_at,
        finished_at: Timestamp::now(),
    };
    let _ = records::write(dir, records::EXIT, &ExitRecord::of(&exit, false));
}

/// `runc delete --force`, which also removes the container's cgroup.
fn delete(spec: &ShimSpec, dir: &Path) {
    let _ = runc(spec, dir)
        .arg("delete")
        .arg("--force")
        .arg(&spec.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Reaps children (the container's init and any orphan re-parented to us) until `pid` is
/// reaped; its exit code.
fn reap_until(pid: i32) -> Option<i32> {
    loop {
        match sys::wait_any() {
            Some((p, code)) if p == pid => return Some(code),
            Some(_) => continue,
            None => return None,
        }
    }
}

/// Waits (bounded) until every output copy has ended.
fn drain(done: &std::sync::mpsc::Receiver<()>) {
    let deadline = Instant::now() + LOG_DRAIN;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match done.recv_timeout(left) {
            Ok(()) => continue,
            Err(_) => return,
        }
    }
}

/// Copies one output stream into the log file until it ends (a terminal's master ends with
/// EIO once the container's side is closed).
fn copy_output(mut from: File, stream: Stream, log: &Mutex<File>) {
    use std::io::Write;
    let mut splitter = LineSplitter::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        let now = Timestamp::now();
        let mut records = Vec::new();
        let mut emit = |full: bool, c: &[u8]| {
            records.extend(cri_log::format_record(now, stream, full, c));
        };
        if n == 0 {
            splitter.finish(&mut emit);
        } else {
            splitter.push(&buf[..n], &mut emit);
        }
        if !records.is_empty()
            && let Ok(mut f) = log.lock()
        {
            // A full disk drops output rather than stall the container.
            let _ = f.write_all(&records);
        }
        if n == 0 {
            return;
        }
    }
}
