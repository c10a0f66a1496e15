//! The events the agent records, with their reasons and message texts exactly as the kubelet
//! writes them (spec §5.2, §6.4, §7, §9.4).
//!
//! Every message is built here, so a reader can check the whole catalogue in one file and the
//! decision code never spells a message inline.

use jiff::SignedDuration;

use crate::format::{go_duration, go_quote, truncate_to_millis};
use crate::observed::ContainerRef;
use crate::probe::ProbeKind;

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// An event for the worker to record on the pod (`source.component: kubelet`). Container events
/// carry the container, which becomes `involvedObject.fieldPath`
/// ([`ContainerRef::field_path`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventToEmit {
    pub type_: EventType,
    pub reason: &'static str,
    pub message: String,
    pub container: Option<ContainerRef>,
}

fn normal(c: ContainerRef, reason: &'static str, message: String) -> EventToEmit {
    EventToEmit {
        type_: EventType::Normal,
        reason,
        message,
        container: Some(c),
    }
}

fn warning(c: ContainerRef, reason: &'static str, message: String) -> EventToEmit {
    EventToEmit {
        type_: EventType::Warning,
        reason,
        message,
        container: Some(c),
    }
}

/// `Pulling`: `Pulling image "IMG"`.
pub fn pulling(c: ContainerRef, image: &str) -> EventToEmit {
    normal(c, "Pulling", format!("Pulling image {}", go_quote(image)))
}

/// `Pulled` after a pull.
pub fn pulled(
    c: ContainerRef,
    image: &str,
    pull: SignedDuration,
    total: SignedDuration,
    size: u64,
) -> EventToEmit {
    normal(
        c,
        "Pulled",
        format!(
            "Successfully pulled image {} in {} ({} including waiting). Image size: {} bytes.",
            go_quote(image),
            go_duration(truncate_to_millis(pull)),
            go_duration(truncate_to_millis(total)),
            size
        ),
    )
}

/// `Pulled` when the image is already there.
pub fn already_present(c: ContainerRef, image: &str) -> EventToEmit {
    normal(
        c,
        "Pulled",
        format!(
            "Container image {} already present on machine",
            go_quote(image)
        ),
    )
}

/// Warning `Failed`: `Failed to pull image "IMG": <err>`.
pub fn pull_failed(c: ContainerRef, image: &str, error: &str) -> EventToEmit {
    warning(
        c,
        "Failed",
        format!("Failed to pull image {}: {error}", go_quote(image)),
    )
}

/// Warning `Failed`: `Error: <error name or message>` (every failed start step).
pub fn start_failed(c: ContainerRef, what: &str) -> EventToEmit {
    warning(c, "Failed", format!("Error: {what}"))
}

/// Normal `BackOff`: `Back-off pulling image "IMG"`.
pub fn image_backoff(c: ContainerRef, image: &str) -> EventToEmit {
    normal(c, "BackOff", image_backoff_message(image))
}

/// The base of the ImagePullBackOff event and waiting message.
pub fn image_backoff_message(image: &str) -> String {
    format!("Back-off pulling image {}", go_quote(image))
}

/// Warning `BackOff`: `Back-off restarting failed container NAME in pod POD`.
pub fn restart_backoff(c: ContainerRef, name: &str, pod: &str) -> EventToEmit {
    warning(
        c,
        "BackOff",
        format!("Back-off restarting failed container {name} in pod {pod}"),
    )
}

/// Warning `ErrImageNeverPull`.
pub fn never_pull(c: ContainerRef, message: &str) -> EventToEmit {
    warning(c, "ErrImageNeverPull", message.to_string())
}

/// Warning `InspectFailed`.
pub fn inspect_failed(c: ContainerRef, message: &str) -> EventToEmit {
    warning(c, "InspectFailed", message.to_string())
}

/// `Created`: `Created container NAME` (1.31/1.32 form).
pub fn created(c: ContainerRef, name: &str) -> EventToEmit {
    normal(c, "Created", format!("Created container {name}"))
}

/// `Started`: `Started container NAME`.
pub fn started(c: ContainerRef, name: &str) -> EventToEmit {
    normal(c, "Started", format!("Started container {name}"))
}

/// `Killing` with the kill's message.
pub fn killing(c: ContainerRef, message: String) -> EventToEmit {
    normal(c, "Killing", message)
}

/// Warning `Unhealthy`: `<Kind> probe failed: <output>`.
pub fn probe_failed(c: ContainerRef, kind: ProbeKind, output: &str) -> EventToEmit {
    warning(
        c,
        "Unhealthy",
        format!("{} probe failed: {output}", kind.title()),
    )
}

/// Warning `Unhealthy`: `<Kind> probe errored and resulted in unknown state: <err>`.
pub fn probe_errored(c: ContainerRef, kind: ProbeKind, error: &str) -> EventToEmit {
    warning(
        c,
        "Unhealthy",
        format!(
            "{} probe errored and resulted in unknown state: {error}",
            kind.title()
        ),
    )
}

/// Warning `ProbeWarning`: `<Kind> probe warning: <output>`.
pub fn probe_warning(c: ContainerRef, kind: ProbeKind, output: &str) -> EventToEmit {
    warning(
        c,
        "ProbeWarning",
        format!("{} probe warning: {output}", kind.title()),
    )
}

/// Warning `FailedPostStartHook`: `PostStartHook failed` (details stay out of events).
pub fn post_start_failed(c: ContainerRef) -> EventToEmit {
    warning(c, "FailedPostStartHook", "PostStartHook failed".to_string())
}

/// Warning `FailedPreStopHook`: `PreStopHook failed`.
pub fn pre_stop_failed(c: ContainerRef) -> EventToEmit {
    warning(c, "FailedPreStopHook", "PreStopHook failed".to_string())
}

/// Warning `FailedToRetrieveImagePullSecret` (pod-level) naming the `imagePullSecrets` that
/// could not be read.
pub fn pull_secrets_missing(names: &[String]) -> EventToEmit {
    EventToEmit {
        type_: EventType::Warning,
        reason: "FailedToRetrieveImagePullSecret",
        message: format!(
            "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
            names.join(", ")
        ),
        container: None,
    }
}

/// `DeadlineExceeded` (pod-level): the pod ran past `activeDeadlineSeconds`. The kubelet's
/// active-deadline handler records it as a Normal event.
pub fn deadline_exceeded() -> EventToEmit {
    EventToEmit {
        type_: EventType::Normal,
        reason: crate::reasons::DEADLINE_EXCEEDED,
        message: crate::reasons::DEADLINE_EXCEEDED_MESSAGE.to_string(),
        container: None,
    }
}

/// Warning `FailedCreatePodSandBox` (pod-level).
pub fn sandbox_failed(message: &str) -> EventToEmit {
    EventToEmit {
        type_: EventType::Warning,
        reason: "FailedCreatePodSandBox",
        message: format!("Failed to create pod sandbox: {message}"),
        container: None,
    }
}
