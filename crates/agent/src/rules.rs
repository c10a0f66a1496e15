//! Small Kubernetes predicates that both the status generator and the decisions need, kept in
//! one place so the two can never disagree (restart policy, "should this container be
//! restarted", "has the pod finished terminating").

use k8s_openapi::api::core::v1::{Pod, PodSpec};

use crate::memory::{Op, PodMemory};
use crate::observed::{ContainerRef, InstanceState, ObservedPod};

/// `spec.restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// The pod's policy (`Always` when unset).
    pub fn of(spec: &PodSpec) -> Self {
        match spec.restart_policy.as_deref() {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    /// `shouldRestartOnFailure`: anything but `Never`.
    pub fn restarts_on_failure(self) -> bool {
        self != RestartPolicy::Never
    }
}

/// Every container of the spec: init containers in order, then regular containers.
pub(crate) fn all_containers(spec: &PodSpec) -> impl Iterator<Item = ContainerRef> + use<> {
    let inits = spec.init_containers.as_ref().map_or(0, Vec::len);
    (0..inits)
        .map(ContainerRef::Init)
        .chain((0..spec.containers.len()).map(ContainerRef::App))
}

/// `ShouldContainerBeRestarted` (1.31): never once the pod is deleted (or, here, complete);
/// yes without an instance or when it is created/unknown; no while running; otherwise by the
/// pod's restart policy and the exit code.
pub(crate) fn should_restart(
    pod: &Pod,
    spec: &PodSpec,
    observed: &ObservedPod,
    memory: &PodMemory,
    r: ContainerRef,
) -> bool {
    let state = observed.container(r).current.as_ref().map(|i| &i.state);
    should_restart_state(pod, spec, memory, state)
}

/// [`should_restart`] for a given newest instance state.
pub(crate) fn should_restart_state(
    pod: &Pod,
    spec: &PodSpec,
    memory: &PodMemory,
    state: Option<&InstanceState>,
) -> bool {
    if pod.metadata.deletion_timestamp.is_some() || memory.complete {
        return false;
    }
    match state {
        None | Some(InstanceState::Created | InstanceState::Unknown) => true,
        Some(InstanceState::Running { .. }) => false,
        Some(InstanceState::Exited(e)) => match RestartPolicy::of(spec) {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => e.exit_code != 0,
            RestartPolicy::Always => true,
        },
    }
}

/// Some container instance of the pod is running.
pub(crate) fn any_running(spec: &PodSpec, observed: &ObservedPod) -> bool {
    all_containers(spec).any(|r| observed.container(r).running().is_some())
}

/// A create/start is under way and may still produce a running container.
pub(crate) fn start_in_flight(memory: &PodMemory) -> bool {
    memory
        .init
        .iter()
        .chain(memory.app.iter())
        .any(|c| matches!(c.op, Op::Starting { .. }))
}

/// The agent has finished terminating the pod (it was deleted, or it completed) and nothing runs
/// any more: `getPhase`'s `podIsTerminal`.
pub(crate) fn pod_is_terminal(
    pod: &Pod,
    spec: &PodSpec,
    observed: &ObservedPod,
    memory: &PodMemory,
) -> bool {
    (pod.metadata.deletion_timestamp.is_some() || memory.complete)
        && !any_running(spec, observed)
        && !start_in_flight(memory)
}

/// The termination message file is read up to this many bytes.
pub const TERMINATION_MESSAGE_MAX_BYTES: usize = 4096;
/// `FallbackToLogsOnError` uses at most this many of the last log lines…
pub const TERMINATION_LOG_LINES: usize = 80;
/// …and at most this many bytes of them.
pub const TERMINATION_LOG_BYTES: usize = 2048;

/// `state.terminated.message` from the instance's termination message file (`file`, its first
/// bytes) and, under `terminationMessagePolicy: FallbackToLogsOnError`, when the file is empty
/// and the exit code is not 0, from the end of its CRI log (`log`, called only then). Empty: no
/// message.
pub fn termination_message(
    policy: Option<&str>,
    file: &[u8],
    exit_code: i32,
    log: impl FnOnce() -> Vec<u8>,
) -> String {
    let file = &file[..file.len().min(TERMINATION_MESSAGE_MAX_BYTES)];
    if file.is_empty() && exit_code != 0 && policy == Some("FallbackToLogsOnError") {
        return log_tail(&log(), TERMINATION_LOG_LINES, TERMINATION_LOG_BYTES);
    }
    String::from_utf8_lossy(file).into_owned()
}

/// The content of the last `lines` lines of a CRI log (`<time> <stream> <P|F> <content>`
/// records; partial records are joined), at most its first `max_bytes` bytes (cut at a
/// character boundary).
pub fn log_tail(cri: &[u8], lines: usize, max_bytes: usize) -> String {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    for rec in cri.split(|b| *b == b'\n').filter(|r| !r.is_empty()) {
        let mut parts = rec.splitn(4, |b| *b == b' ');
        let (Some(_), Some(_), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        cur.extend_from_slice(parts.next().unwrap_or_default());
        if tag != b"P" {
            cur.push(b'\n');
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    let start = out.len().saturating_sub(lines);
    let text = String::from_utf8_lossy(&out[start..].concat()).into_owned();
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cri(lines: &[&str]) -> Vec<u8> {
        lines
            .iter()
            .map(|l| format!("2026-01-01T00:00:00.000000000Z stdout F {l}\n"))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn termination_message_from_the_file() {
        let never = || -> Vec<u8> { panic!("the log must not be read") };
        assert_eq!(termination_message(None, b"bye", 0, never), "bye");
        assert_eq!(
            termination_message(Some("File"), b"", 1, never),
            "",
            "File never falls back to the log"
        );
        let big = vec![b'x'; 5000];
        assert_eq!(
            termination_message(Some("File"), &big, 0, never).len(),
            4096
        );
        assert_eq!(
            termination_message(Some("FallbackToLogsOnError"), b"from file", 1, never),
            "from file"
        );
    }

    #[test]
    fn fallback_to_logs_on_error() {
        let log = || cri(&["one", "two"]);
        assert_eq!(
            termination_message(Some("FallbackToLogsOnError"), b"", 2, log),
            "one\ntwo\n"
        );
        // A successful exit does not fall back.
        assert_eq!(
            termination_message(Some("FallbackToLogsOnError"), b"", 0, log),
            ""
        );
    }

    #[test]
    fn log_tail_lines_bytes_and_partials() {
        let many: Vec<String> = (0..100).map(|i| format!("line{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let tail = log_tail(&cri(&refs), 80, 2048);
        assert!(tail.starts_with("line20\n"));
        assert!(tail.ends_with("line99\n"));
        let long = "y".repeat(3000);
        assert_eq!(log_tail(&cri(&[&long]), 80, 2048).len(), 2048);
        let partial = b"t stdout P abc\nt stdout F def\nt stderr F x y\n";
        assert_eq!(log_tail(partial, 80, 2048), "abcdef\nx y\n");
        assert_eq!(log_tail(partial, 1, 2048), "x y\n");
    }
}
