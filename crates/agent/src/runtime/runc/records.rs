//! The files in a container's directory (`<state>/containers/<id>/`) through which the agent, the
//! shim and a later agent talk:
//!
//! | file | written by | content |
//! | --- | --- | --- |
//! | `meta.json` | agent, before the shim starts | pod, container, attempt, image, log path |
//! | `shim.json` | agent, before the shim starts | what the shim runs ([`ShimSpec`]) |
//! | `config.json` | agent | the OCI runtime spec (the directory is runc's bundle) |
//! | `shim.pid` | shim, first | its pid and start time, to tell whether it still runs |
//! | `started.json` | shim, once `runc start` succeeded | the container's pid and start time |
//! | `exit.json` | shim, last | the exit ([`ExitRecord`]) |
//! | `runc.log` | runc | runc's own messages (JSON lines) |
//!
//! Every file is written atomically (temporary file, fsync, rename).

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::sys;
use crate::observed::{Exit, ExitReason};

pub const META: &str = "meta.json";
pub const SHIM_SPEC: &str = "shim.json";
pub const SHIM_PID: &str = "shim.pid";
pub const STARTED: &str = "started.json";
pub const EXIT: &str = "exit.json";
pub const RUNC_LOG: &str = "runc.log";
pub const INIT_PID: &str = "init.pid";

/// Who a container instance is (`meta.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// `runc://<id>`.
    pub id: String,
    pub namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub container: String,
    pub attempt: u32,
    pub image: String,
    pub image_id: String,
    pub log_path: PathBuf,
    pub cgroups_path: String,
    pub created_at: Timestamp,
}

/// What the shim runs (`shim.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimSpec {
    pub runc: PathBuf,
    /// runc's `--root`.
    pub root: PathBuf,
    /// The runc container id.
    pub id: String,
    /// The CRI log file.
    pub log_path: PathBuf,
    pub cgroups_path: String,
    pub tty: bool,
    pub stdin: bool,
}

/// The shim's own identity (`shim.pid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimPid {
    pub pid: i32,
    pub start_ticks: u64,
}

impl ShimPid {
    pub fn alive(&self) -> bool {
        sys::alive(self.pid, self.start_ticks)
    }
}

/// A started container (`started.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    pub pid: i32,
    pub started_at: Timestamp,
}

/// How a container ended (`exit.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub exit_code: i32,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
    /// The container's cgroup saw an OOM kill.
    pub oom_killed: bool,
}

impl ExitRecord {
    pub fn of(e: &Exit, oom_killed: bool) -> Self {
        ExitRecord {
            exit_code: e.exit_code,
            reason: e.reason.as_str().to_string(),
            message: e.message.clone(),
            started_at: e.started_at,
            finished_at: e.finished_at,
            oom_killed,
        }
    }

    pub fn to_exit(&self) -> Exit {
        let reason = crate::runtime::common::exit_reason(&self.reason);
        Exit {
            exit_code: self.exit_code,
            reason,
            message: self.message.clone(),
            started_at: self.started_at,
            finished_at: self.finished_at,
        }
    }
}

/// The exit of a container whose main process ended with `code`: `OOMKilled` when it was
/// SIGKILLed (137) and its cgroup saw an OOM kill.
pub fn exit_of(
    code: i32,
    oom_killed: bool,
    started_at: Option<Timestamp>,
    finished_at: Timestamp,
) -> Exit {
    let mut e = Exit::code(code, started_at, finished_at);
    if code == 137 && oom_killed {
        e.reason = ExitReason::OOMKilled;
    }
    e
}

pub fn write<T: Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    crate::runtime::common::write_atomic(&dir.join(name), &bytes)
}

pub fn read<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> Option<T> {
    let bytes = std::fs::read(dir.join(name)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The last error runc logged (`--log-format json`), without runc's trailing newline.
pub fn runc_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| matches!(v["level"].as_str(), Some("error" | "fatal" | "panic")))
        .filter_map(|v| v["msg"].as_str().map(|m| m.trim().to_string()))
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_and_oom() {
        let at: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(exit_of(137, true, None, at).reason, ExitReason::OOMKilled);
        assert_eq!(exit_of(137, false, None, at).reason, ExitReason::Error);
        assert_eq!(exit_of(1, true, None, at).reason, ExitReason::Error);
        assert_eq!(exit_of(0, false, None, at).reason, ExitReason::Completed);
        for reason in [
            ExitReason::Completed,
            ExitReason::OOMKilled,
            ExitReason::StartError,
            ExitReason::Other("Unknown".into()),
        ] {
            let e = Exit {
                exit_code: 3,
                reason,
                message: Some("m".into()),
                started_at: Some(at),
                finished_at: at,
            };
            assert_eq!(ExitRecord::of(&e, false).to_exit(), e);
        }
    }

    #[test]
    fn runc_log_errors() {
        let dir = std::env::temp_dir().join(format!(
            "skiff-runc-log-{}",
            crate::runtime::common::random_hex()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("runc.log");
        std::fs::write(
            &log,
            "{\"level\":\"warning\",\"msg\":\"w\"}\nnot json\n{\"level\":\"error\",\"msg\":\"runc create failed: boom\\n\"}\n",
        )
        .unwrap();
        assert_eq!(
            runc_error(&log).as_deref(),
            Some("runc create failed: boom")
        );
        assert_eq!(runc_error(&dir.join("none")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
