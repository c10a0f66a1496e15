//! The events table: LAST SEEN TYPE REASON OBJECT MESSAGE; wide adds SUBOBJECT and SOURCE
//! (before MESSAGE) and FIRST SEEN, COUNT, NAME (after it), in the real server's column order
//! (shared/spec/pod-lifecycle.md §3.7). Both legacy events (first/lastTimestamp, count) and
//! events.k8s.io-style ones (eventTime, series) print sensibly.

use jiff::Timestamp;
use serde_json::Value;

use super::{col, name, name_col};
use crate::duration::age;
use crate::fields::{at, int_at, str_at, time_at};

pub(super) fn columns() -> Vec<super::Column> {
    let mut name = name_col(1);
    name.description = "Name of the event object.";
    vec![
        col("Last Seen", "Time since the event was last observed.", 0),
        col("Type", "Type of the event (Normal or Warning).", 0),
        col("Reason", "Short machine-readable reason for the event.", 0),
        col(
            "Object",
            "The object the event is about, as kind/name (involvedObject).",
            0,
        ),
        col(
            "Subobject",
            "The part of the object the event is about, e.g. spec.containers{app} (involvedObject.fieldPath).",
            1,
        ),
        col(
            "Source",
            "The component (and host) that reported the event.",
            1,
        ),
        col("Message", "Human-readable description of the event.", 0),
        col("First Seen", "Time since the event was first observed.", 1),
        // The real server declares this column a string but sends an integer cell.
        col("Count", "The number of times the event has occurred.", 1),
        name,
    ]
}

/// LAST SEEN, FIRST SEEN and COUNT, with the fallbacks kubectl users see.
struct Timing {
    last_seen: String,
    first_seen: String,
    count: i64,
}

fn timing(event: &Value, now: Timestamp) -> Timing {
    let first_seen = match time_at(event, &["firstTimestamp"]) {
        Some(t) => age(now, Some(t)),
        None => age(now, time_at(event, &["eventTime"])),
    };
    let mut last_seen = match time_at(event, &["lastTimestamp"]) {
        Some(t) => age(now, Some(t)),
        None => first_seen.clone(),
    };
    let mut count = int_at(event, &["count"]);
    if at(event, &["series"]).is_some() {
        last_seen = age(now, time_at(event, &["series", "lastObservedTime"]));
        count = int_at(event, &["series", "count"]);
    } else if count == 0 {
        count = 1;
    }
    Timing {
        last_seen,
        first_seen,
        count,
    }
}

/// `kind/name` in lower-case kind, or just the kind without a name.
fn object(event: &Value) -> String {
    let kind = str_at(event, &["involvedObject", "kind"]).to_lowercase();
    match str_at(event, &["involvedObject", "name"]) {
        "" => kind,
        n => format!("{kind}/{n}"),
    }
}

/// `component, host`, each falling back to the reporting controller / instance.
fn source(event: &Value) -> String {
    let first_non_empty = |a: &'static [&'static str], b: &'static [&'static str]| {
        let v = str_at(event, a);
        if v.is_empty() { str_at(event, b) } else { v }
    };
    let component = first_non_empty(&["source", "component"], &["reportingComponent"]);
    let host = first_non_empty(&["source", "host"], &["reportingInstance"]);
    if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    }
}

pub(super) fn cells(event: &Value, now: Timestamp) -> Vec<Value> {
    let t = timing(event, now);
    vec![
        t.last_seen.into(),
        str_at(event, &["type"]).into(),
        str_at(event, &["reason"]).into(),
        object(event).into(),
        str_at(event, &["involvedObject", "fieldPath"]).into(),
        source(event).into(),
        str_at(event, &["message"]).trim().into(),
        t.first_seen.into(),
        t.count.into(),
        name(event).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::ts;
    use super::*;
    use serde_json::json;

    const NOW: &str = "2026-01-01T12:00:00Z";

    fn kubelet_event() -> Value {
        json!({
            "metadata": {"name": "web-0.17c0", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web-0",
                               "fieldPath": "spec.containers{app}"},
            "reason": "BackOff", "type": "Warning",
            "message": "  Back-off restarting failed container app \n",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2026-01-01T11:07:00Z", "lastTimestamp": "2026-01-01T11:47:00Z",
            "count": 9, "eventTime": null,
            "reportingComponent": "kubelet", "reportingInstance": "node-1"
        })
    }

    #[test]
    fn legacy_event_row() {
        let cells = super::super::row_cells("events", &kubelet_event(), ts(NOW));
        assert_eq!(
            cells,
            vec![
                json!("13m"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web-0"),
                json!("spec.containers{app}"),
                json!("kubelet, node-1"),
                json!("Back-off restarting failed container app"),
                json!("53m"),
                json!(9),
                json!("web-0.17c0"),
            ]
        );
    }

    #[test]
    fn new_style_event_with_series() {
        let e = json!({
            "metadata": {"name": "web-1.abc"},
            "involvedObject": {"kind": "Pod", "name": "web-1"},
            "reason": "FailedScheduling", "type": "Warning", "message": "0/1 nodes are available.",
            "source": {}, "firstTimestamp": null, "lastTimestamp": null,
            "eventTime": "2026-01-01T11:30:00.123456Z",
            "series": {"count": 4, "lastObservedTime": "2026-01-01T11:58:00.000001Z"},
            "reportingComponent": "default-scheduler", "reportingInstance": "default-scheduler-cp"
        });
        let cells = cells(&e, ts(NOW));
        // 119.999999s: seconds are truncated, never rounded.
        assert_eq!(cells[0], json!("119s"));
        assert_eq!(cells[5], json!("default-scheduler, default-scheduler-cp"));
        assert_eq!(cells[7], json!("29m"));
        assert_eq!(cells[8], json!(4));
    }

    #[test]
    fn singleton_new_style_event() {
        let e = json!({
            "metadata": {"name": "web-1.abd"},
            "involvedObject": {"kind": "Pod", "name": "web-1"},
            "reason": "Scheduled", "type": "Normal",
            "source": {}, "eventTime": "2026-01-01T11:59:50.5Z",
            "reportingComponent": "default-scheduler"
        });
        let cells = cells(&e, ts(NOW));
        assert_eq!(cells[0], json!("9s"));
        assert_eq!(cells[5], json!("default-scheduler"));
        assert_eq!(cells[7], json!("9s"));
        assert_eq!(cells[8], json!(1));
    }

    #[test]
    fn object_without_name_and_missing_times() {
        let e = json!({"involvedObject": {"kind": "Node"}, "count": 0});
        let cells = cells(&e, ts(NOW));
        assert_eq!(cells[3], json!("node"));
        assert_eq!(cells[0], json!("<unknown>"));
        assert_eq!(cells[7], json!("<unknown>"));
        assert_eq!(cells[8], json!(1));
        assert_eq!(cells[5], json!(""));
    }

    #[test]
    fn column_order_and_priorities() {
        let shape: Vec<_> = columns()
            .iter()
            .map(|c| (c.name, c.priority, c.format))
            .collect();
        assert_eq!(
            shape,
            [
                ("Last Seen", 0, ""),
                ("Type", 0, ""),
                ("Reason", 0, ""),
                ("Object", 0, ""),
                ("Subobject", 1, ""),
                ("Source", 1, ""),
                ("Message", 0, ""),
                ("First Seen", 1, ""),
                ("Count", 1, ""),
                ("Name", 1, "name"),
            ]
        );
    }
}
