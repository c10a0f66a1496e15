//! Starting one container: the restart back-off check (`doBackOff`, §4.2), the image reference,
//! policy and pull back-off checks (`EnsureImageExists`, §5.2), then `CreateAndStart`.
//!
//! The kubelet does all of this inside one blocking call; here each step that needs the runtime
//! becomes an action, and the container's [`Op`] remembers how far its start got, so the next
//! decision continues instead of repeating the checks.

use k8s_openapi::api::core::v1::Container;
use skiff_core::image::Reference;
use skiff_core::pod::default_image_pull_policy;

use crate::events;
use crate::format::{go_duration, go_quote, pod_id};
use crate::lifecycle::{Action, Cx, Out, SYNC_RETRY};
use crate::memory::{ContainerMemory, Op, PodMemory, WaitingReason, spec_hash};
use crate::observed::{ContainerRef, ImagePresence, ObservedContainer};
use crate::reasons::{
    CRASH_LOOP_BACK_OFF, ERR_IMAGE_NEVER_PULL, IMAGE_INSPECT_ERROR, IMAGE_PULL_BACK_OFF,
    INVALID_IMAGE_NAME,
};

/// What became of an attempt to start a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// The runtime is working on it (pull or create issued, or already under way).
    InFlight,
    /// Blocked or failed for now (back-off, image policy, retry delay).
    Failed,
}

/// Sets the reason cache entry; true when it changed. A change during the action phase makes the
/// decision ask for a prompt re-run so the new waiting reason gets reported.
pub(crate) fn set_reason(
    cm: &mut ContainerMemory,
    out: &mut Out,
    reason: &'static str,
    message: String,
) -> bool {
    if cm
        .reason
        .as_ref()
        .is_some_and(|r| r.reason == reason && r.message == message)
    {
        return false;
    }
    cm.reason = Some(WaitingReason { reason, message });
    out.reason_changed = true;
    true
}

/// The exit the restart back-off is judged against: the newest exited instance, except that an
/// instance killed by a probe for an immediate restart is skipped (the kubelet restarts it in the
/// same sync, before it has seen that instance exit).
fn backoff_reference(obs: &ObservedContainer, cm: &ContainerMemory) -> Option<jiff::Timestamp> {
    let cur = obs.current.as_ref()?;
    if cm.restart_after_kill != Some(cur.attempt)
        && let Some(e) = cur.exit()
    {
        return Some(e.finished_at);
    }
    obs.previous
        .as_ref()
        .and_then(|p| p.exit())
        .map(|e| e.finished_at)
}

/// Tries to (re)start container `r` now.
pub(crate) fn start_container(
    cx: &Cx,
    memory: &mut PodMemory,
    out: &mut Out,
    r: ContainerRef,
) -> Start {
    let Some(c) = r.spec(cx.spec) else {
        return Start::Failed;
    };
    let obs = cx.observed.container(r);
    match memory.container(r).op {
        Op::Pulled { attempt } => return create(memory, out, r, attempt),
        op if op.in_flight() => return Start::InFlight,
        _ => {}
    }
    let cm = memory.container_mut(r);
    if let Some(t) = cm.retry_at {
        if cx.now < t {
            out.wake(t);
            return Start::Failed;
        }
        cm.retry_at = None;
    }
    let attempt = obs.current.as_ref().map_or(0, |i| i.attempt + 1);
    let image = c.image.as_deref().unwrap_or("");

    if let Some(ts) = backoff_reference(obs, memory.container(r)) {
        let key = (r, spec_hash(&c.name, image));
        if memory.restart_backoff.is_in_backoff_since(&key, ts, cx.now) {
            let d = memory.restart_backoff.get(&key);
            let pod = pod_id(cx.pod);
            let message = format!(
                "back-off {} restarting failed container={} pod={pod}",
                go_duration(d),
                c.name
            );
            if set_reason(memory.container_mut(r), out, CRASH_LOOP_BACK_OFF, message) {
                out.events.push(events::restart_backoff(r, &c.name, &pod));
            }
            out.wake(ts + d);
            return Start::Failed;
        }
        memory.restart_backoff.next(&key, ts, cx.now);
    }

    match ensure_image(cx, memory, out, r, c, attempt) {
        Image::Ready => create(memory, out, r, attempt),
        Image::Pulling => Start::InFlight,
        Image::Failed => Start::Failed,
    }
}

fn create(memory: &mut PodMemory, out: &mut Out, r: ContainerRef, attempt: u32) -> Start {
    memory.container_mut(r).op = Op::Starting { attempt };
    out.actions.push(Action::CreateAndStart {
        container: r,
        attempt,
    });
    Start::InFlight
}

enum Image {
    Ready,
    Pulling,
    Failed,
}

/// A start error that is retried on the next sync (10 s later).
fn fail_and_retry(
    cx: &Cx,
    cm: &mut ContainerMemory,
    out: &mut Out,
    reason: &'static str,
    message: String,
) {
    set_reason(cm, out, reason, message);
    let at = cx.now + SYNC_RETRY;
    cm.retry_at = Some(at);
    out.wake(at);
}

/// `EnsureImageExists`: the default tag (a reference that does not parse is
/// `InvalidImageName`), policy checks, the pull back-off, then `PullImage`.
fn ensure_image(
    cx: &Cx,
    memory: &mut PodMemory,
    out: &mut Out,
    r: ContainerRef,
    c: &Container,
    attempt: u32,
) -> Image {
    let image = c.image.as_deref().unwrap_or("");
    if let Err(e) = Reference::parse(image) {
        let message = format!("Failed to apply default image tag {}: {e}", go_quote(image));
        out.events.push(events::inspect_failed(r, &message));
        out.events.push(events::start_failed(r, INVALID_IMAGE_NAME));
        fail_and_retry(
            cx,
            memory.container_mut(r),
            out,
            INVALID_IMAGE_NAME,
            message,
        );
        return Image::Failed;
    }
    let policy = c
        .image_pull_policy
        .as_deref()
        .unwrap_or_else(|| default_image_pull_policy(image));
    let presence = &cx.observed.container(r).image;
    match policy {
        "Never" => {
            if *presence == ImagePresence::Present {
                out.events.push(events::already_present(r, image));
                return Image::Ready;
            }
            let message = format!(
                "Container image {} is not present with pull policy of Never",
                go_quote(image)
            );
            out.events.push(events::never_pull(r, &message));
            out.events
                .push(events::start_failed(r, ERR_IMAGE_NEVER_PULL));
            fail_and_retry(
                cx,
                memory.container_mut(r),
                out,
                ERR_IMAGE_NEVER_PULL,
                message,
            );
            return Image::Failed;
        }
        "IfNotPresent" => match presence {
            ImagePresence::Present => {
                out.events.push(events::already_present(r, image));
                return Image::Ready;
            }
            ImagePresence::InspectError(e) => {
                let message = format!("Failed to inspect image \"\": {e}");
                out.events.push(events::inspect_failed(r, &message));
                out.events
                    .push(events::start_failed(r, IMAGE_INSPECT_ERROR));
                fail_and_retry(
                    cx,
                    memory.container_mut(r),
                    out,
                    IMAGE_INSPECT_ERROR,
                    message,
                );
                return Image::Failed;
            }
            ImagePresence::Absent | ImagePresence::Unknown => {}
        },
        _ => {}
    }

    if memory
        .image_backoff
        .is_in_backoff_since_update(image, cx.now)
    {
        let base = events::image_backoff_message(image);
        let cm = memory.container_mut(r);
        let message = match &cm.pull_error {
            Some(prev) => format!("{base}: {prev}"),
            None => base,
        };
        if set_reason(cm, out, IMAGE_PULL_BACK_OFF, message) {
            out.events.push(events::image_backoff(r, image));
            out.events
                .push(events::start_failed(r, IMAGE_PULL_BACK_OFF));
        }
        if let Some(e) = memory.image_backoff.entry(image) {
            out.wake(e.last_update + e.backoff);
        }
        return Image::Failed;
    }

    out.events.push(events::pulling(r, image));
    memory.container_mut(r).op = Op::Pulling { attempt };
    out.actions.push(Action::PullImage {
        container: r,
        image: image.to_string(),
    });
    Image::Pulling
}
