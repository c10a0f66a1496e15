//! What the scheduler writes into a pod's status, and which pod changes it reacts to.
//!
//! After a failed attempt upstream sets `PodScheduled=False` with the reason (`Unschedulable` for
//! a FitError, `SchedulerError` for anything else) and the full message, and writes it only when
//! it differs from what the pod already shows: repeated identical failures do not rewrite the
//! pod (the event is re-emitted instead). `lastTransitionTime` moves only when the status value
//! changes. The write is a strategic merge patch of `status.conditions` (merge key `type`), so
//! conditions owned by others are left alone.
//!
//! Pure: the time is an argument.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

/// `PodScheduled=False` reason after a scheduling error that is not a FitError (a failed binding).
pub const REASON_SCHEDULER_ERROR: &str = "SchedulerError";
pub const CONDITION_POD_SCHEDULED: &str = "PodScheduled";

/// RFC 3339 with second precision, as `metav1.Time` serialises.
pub fn rfc3339_seconds(t: Timestamp) -> String {
    let secs = t.as_second();
    Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| t.to_string())
}

/// RFC 3339 with microseconds, as `metav1.MicroTime` serialises (`eventTime`,
/// `series.lastObservedTime`).
pub fn rfc3339_micros(t: Timestamp) -> String {
    let secs = rfc3339_seconds(t);
    let micros = t.subsec_microsecond().max(0);
    // `secs` ends with `Z`; put the fraction before it.
    format!("{}.{micros:06}Z", secs.trim_end_matches('Z'))
}

/// The strategic merge patch body for `pods/status` that sets `PodScheduled=False` with
/// `reason` and `message`, or `None` when the pod already shows exactly that.
pub fn pod_scheduled_false_patch(
    pod: &Pod,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> Option<Value> {
    let existing = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == CONDITION_POD_SCHEDULED));
    let mut transition = rfc3339_seconds(now);
    if let Some(c) = existing
        && c.status == "False"
    {
        if c.reason.as_deref() == Some(reason) && c.message.as_deref() == Some(message) {
            return None;
        }
        if let Some(t) = &c.last_transition_time {
            transition = rfc3339_seconds(t.0);
        }
    }
    Some(json!({"status": {"conditions": [{
        "type": CONDITION_POD_SCHEDULED,
        "status": "False",
        "lastProbeTime": null,
        "lastTransitionTime": transition,
        "reason": reason,
        "message": message,
    }]}}))
}

/// Whether an update of a pending pod can change a scheduling decision, so an unschedulable pod
/// should be retried (upstream compares the pods without resourceVersion, generation, status,
/// managedFields and finalizers).
pub fn pod_update_is_relevant(old: &Pod, new: &Pod) -> bool {
    old.spec != new.spec
        || old.metadata.labels != new.metadata.labels
        || old.metadata.annotations != new.metadata.annotations
        || old.metadata.deletion_timestamp != new.metadata.deletion_timestamp
}

/// `namespace/name`, the key pods go by in the queue and the cache.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// A pod the scheduler no longer needs to count: it ran to completion or failed.
pub fn is_terminated(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn pod(conditions: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Pending", "conditions": conditions},
        }))
        .unwrap()
    }

    #[test]
    fn time_formats() {
        let t = at("2026-11-25T10:11:12.345678901Z");
        assert_eq!(rfc3339_seconds(t), "2026-11-25T10:11:12Z");
        assert_eq!(rfc3339_micros(t), "2026-11-25T10:11:12.345678Z");
        assert_eq!(
            rfc3339_micros(at("2026-11-25T10:11:12Z")),
            "2026-11-25T10:11:12.000000Z"
        );
    }

    #[test]
    fn first_failure_sets_the_condition() {
        let now = at("2026-11-25T10:00:00.5Z");
        let patch =
            pod_scheduled_false_patch(&pod(json!([])), "Unschedulable", "0/1 nodes", now).unwrap();
        assert_eq!(
            patch,
            json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False",
                "lastProbeTime": null, "lastTransitionTime": "2026-11-25T10:00:00Z",
                "reason": "Unschedulable", "message": "0/1 nodes"}]}})
        );
    }

    #[test]
    fn unchanged_is_not_rewritten_and_transition_time_is_kept() {
        let existing = json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "old", "lastTransitionTime": "2026-11-25T09:00:00Z"}]);
        let p = pod(existing);
        let now = at("2026-11-25T10:00:00Z");
        assert!(pod_scheduled_false_patch(&p, "Unschedulable", "old", now).is_none());
        let patch = pod_scheduled_false_patch(&p, "Unschedulable", "new", now).unwrap();
        assert_eq!(
            patch["status"]["conditions"][0]["lastTransitionTime"],
            "2026-11-25T09:00:00Z"
        );
        assert_eq!(patch["status"]["conditions"][0]["message"], "new");
        // From True (e.g. a pod unbound by hand) the transition time moves.
        let p = pod(json!([{"type": "PodScheduled", "status": "True",
            "lastTransitionTime": "2026-11-25T09:00:00Z"}]));
        let patch = pod_scheduled_false_patch(&p, "Unschedulable", "m", now).unwrap();
        assert_eq!(
            patch["status"]["conditions"][0]["lastTransitionTime"],
            "2026-11-25T10:00:00Z"
        );
    }

    #[test]
    fn relevant_updates() {
        let a = pod(json!([]));
        let mut b = a.clone();
        b.status.as_mut().unwrap().phase = Some("Pending".into());
        b.metadata.resource_version = Some("9".into());
        assert!(!pod_update_is_relevant(&a, &b));
        b.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
        assert!(pod_update_is_relevant(&a, &b));
        assert_eq!(pod_key(&a), "ns/p");
        assert!(!is_terminated(&a));
    }
}
