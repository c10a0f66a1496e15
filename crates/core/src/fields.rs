//! Which fields each resource supports in field selectors, and their values for an object.
//!
//! The API server stores objects as JSON, so values are read straight from `serde_json::Value`.
//! A field that a resource does not support is a 400 (`field label not supported: <field>`),
//! which is why "unsupported" and "absent" are kept apart in [`field_value`].
//!
//! The supported sets follow the API server's field-label conversions: every resource accepts
//! `metadata.name`; namespaced and unknown resources also accept `metadata.namespace`, while
//! nodes and namespaces (cluster-scoped, with their own conversion) do not.
//!
//! This module also holds the small tolerant JSON accessors shared with the table printers:
//! a missing or wrongly-typed field reads as empty, never panics.

use jiff::Timestamp;
use serde_json::Value;

use crate::selector::FieldSelector;

/// The value of `field` on `obj` for a field selector on `resource` (plural REST name).
///
/// * `None`: the resource does not support the field (answer 400 `field label not supported`).
/// * `Some(None)`: supported, but the object has no value there; it compares as `""`.
/// * `Some(Some(v))`: the value. Booleans the API server renders as `"true"`/`"false"`, and
///   defaults them when absent (`spec.hostNetwork`, `spec.unschedulable` read `"false"`);
///   integers are rendered in decimal (`status.replicas` reads `"0"` when absent).
pub fn field_value(resource: &str, obj: &Value, field: &str) -> Option<Option<String>> {
    match (resource, field) {
        (_, "metadata.name") => Some(opt_str(obj, &["metadata", "name"])),
        ("nodes", "spec.unschedulable") => Some(Some(bool_text(obj, &["spec", "unschedulable"]))),
        ("namespaces", "status.phase") => Some(opt_str(obj, &["status", "phase"])),
        ("nodes" | "namespaces", _) => None,
        (_, "metadata.namespace") => Some(opt_str(obj, &["metadata", "namespace"])),
        ("pods", f) => pod_field(obj, f),
        ("events", f) => event_field(obj, f),
        ("secrets", "type") => Some(opt_str(obj, &["type"])),
        ("services", "spec.clusterIP") => Some(opt_str(obj, &["spec", "clusterIP"])),
        ("services", "spec.type") => Some(opt_str(obj, &["spec", "type"])),
        ("replicationcontrollers" | "replicasets", "status.replicas") => {
            Some(Some(int_at(obj, &["status", "replicas"]).to_string()))
        }
        ("jobs", "status.successful") => {
            Some(Some(int_at(obj, &["status", "succeeded"]).to_string()))
        }
        _ => None,
    }
}

/// Whether `resource` accepts `field` in a field selector.
pub fn supports_field(resource: &str, field: &str) -> bool {
    field_value(resource, &Value::Null, field).is_some()
}

/// Checks every field of `selector` against `resource`; the error is the API server's message
/// for the first unsupported one (`field label not supported: spec.foo`).
pub fn validate_selector(resource: &str, selector: &FieldSelector) -> Result<(), String> {
    match selector
        .requirements()
        .iter()
        .find(|r| !supports_field(resource, &r.field))
    {
        Some(r) => Err(format!("field label not supported: {}", r.field)),
        None => Ok(()),
    }
}

/// Whether `obj` (of `resource`) satisfies `selector`. Unsupported fields compare as empty;
/// call [`validate_selector`] first to reject them.
pub fn matches_selector(resource: &str, obj: &Value, selector: &FieldSelector) -> bool {
    selector.matches(|f| field_value(resource, obj, f).flatten())
}

fn pod_field(obj: &Value, field: &str) -> Option<Option<String>> {
    Some(match field {
        // `spec.host` is an old alias the API server still maps to `spec.nodeName`.
        "spec.nodeName" | "spec.host" => opt_str(obj, &["spec", "nodeName"]),
        "spec.restartPolicy" => opt_str(obj, &["spec", "restartPolicy"]),
        "spec.schedulerName" => opt_str(obj, &["spec", "schedulerName"]),
        "spec.serviceAccountName" => opt_str(obj, &["spec", "serviceAccountName"]),
        "spec.hostNetwork" => Some(bool_text(obj, &["spec", "hostNetwork"])),
        "status.phase" => opt_str(obj, &["status", "phase"]),
        "status.podIP" => Some(pod_ip(obj)).filter(|ip| !ip.is_empty()),
        "status.nominatedNodeName" => opt_str(obj, &["status", "nominatedNodeName"]),
        // Accepted by the API server but never given a value: it always compares as "".
        "status.podIPs" => None,
        _ => return None,
    })
}

fn event_field(obj: &Value, field: &str) -> Option<Option<String>> {
    let involved = |name: &str| opt_str(obj, &["involvedObject", name]);
    Some(match field {
        "involvedObject.kind" => involved("kind"),
        "involvedObject.namespace" => involved("namespace"),
        "involvedObject.name" => involved("name"),
        "involvedObject.uid" => involved("uid"),
        "involvedObject.apiVersion" => involved("apiVersion"),
        "involvedObject.resourceVersion" => involved("resourceVersion"),
        "involvedObject.fieldPath" => involved("fieldPath"),
        "reason" => opt_str(obj, &["reason"]),
        "reportingComponent" => opt_str(obj, &["reportingComponent"]),
        // `source` is source.component, or the reporting controller for new-style events.
        "source" => opt_str(obj, &["source", "component"])
            .filter(|s| !s.is_empty())
            .or_else(|| opt_str(obj, &["reportingComponent"])),
        "type" => opt_str(obj, &["type"]),
        _ => return None,
    })
}

/// A pod's primary IP: `status.podIP`, else `status.podIPs[0].ip`, else empty. (When both are
/// set and differ, the API server treats `podIP` as authoritative.)
pub fn pod_ip(pod: &Value) -> String {
    let ip = str_at(pod, &["status", "podIP"]);
    if !ip.is_empty() {
        return ip.to_string();
    }
    list_at(pod, &["status", "podIPs"])
        .first()
        .map(|first| str_at(first, &["ip"]).to_string())
        .unwrap_or_default()
}

// --- tolerant JSON accessors -----------------------------------------------------------------

/// The value at `path` (object keys), if every step exists and is not `null`.
pub(crate) fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    (!cur.is_null()).then_some(cur)
}

/// The string at `path`, or `""` when absent or not a string.
pub(crate) fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or("")
}

/// The string at `path`, `None` when absent or not a string.
fn opt_str(v: &Value, path: &[&str]) -> Option<String> {
    at(v, path).and_then(Value::as_str).map(str::to_string)
}

/// The integer at `path`, or 0.
pub(crate) fn int_at(v: &Value, path: &[&str]) -> i64 {
    at(v, path).and_then(Value::as_i64).unwrap_or(0)
}

/// The boolean at `path`, or false.
pub(crate) fn bool_at(v: &Value, path: &[&str]) -> bool {
    at(v, path).and_then(Value::as_bool).unwrap_or(false)
}

fn bool_text(v: &Value, path: &[&str]) -> String {
    bool_at(v, path).to_string()
}

/// The array at `path`, or an empty slice.
pub(crate) fn list_at<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The RFC 3339 timestamp at `path`, `None` when absent or unparsable.
pub(crate) fn time_at(v: &Value, path: &[&str]) -> Option<Timestamp> {
    str_at(v, path).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web-0", "namespace": "default"},
            "spec": {"nodeName": "node-1", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                     "serviceAccountName": "default"},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}]}
        })
    }

    #[test]
    fn pod_fields() {
        let p = pod();
        let v = |f: &str| field_value("pods", &p, f);
        assert_eq!(v("metadata.name"), Some(Some("web-0".into())));
        assert_eq!(v("metadata.namespace"), Some(Some("default".into())));
        assert_eq!(v("spec.nodeName"), Some(Some("node-1".into())));
        assert_eq!(v("spec.host"), Some(Some("node-1".into())));
        assert_eq!(v("spec.restartPolicy"), Some(Some("Always".into())));
        assert_eq!(
            v("spec.schedulerName"),
            Some(Some("default-scheduler".into()))
        );
        assert_eq!(v("spec.serviceAccountName"), Some(Some("default".into())));
        assert_eq!(v("spec.hostNetwork"), Some(Some("false".into())));
        assert_eq!(v("status.phase"), Some(Some("Running".into())));
        assert_eq!(v("status.podIP"), Some(Some("10.0.0.5".into())));
        assert_eq!(v("status.nominatedNodeName"), Some(None));
        assert_eq!(v("status.podIPs"), Some(None));
        assert_eq!(v("spec.containers"), None);
        assert_eq!(v("metadata.labels"), None);
    }

    #[test]
    fn pod_ip_fallbacks() {
        let only_list = json!({"status": {"podIPs": [{"ip": "fd00::1"}, {"ip": "10.1.1.1"}]}});
        assert_eq!(pod_ip(&only_list), "fd00::1");
        assert_eq!(pod_ip(&json!({})), "");
        assert_eq!(field_value("pods", &json!({}), "status.podIP"), Some(None));
        let host = json!({"spec": {"hostNetwork": true}});
        assert_eq!(
            field_value("pods", &host, "spec.hostNetwork"),
            Some(Some("true".into()))
        );
    }

    #[test]
    fn event_fields() {
        let e = json!({
            "metadata": {"name": "web-0.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web-0", "uid": "u1",
                               "apiVersion": "v1", "resourceVersion": "12", "fieldPath": "spec.containers{app}"},
            "reason": "Pulled", "type": "Normal", "source": {"component": "kubelet", "host": "node-1"},
            "reportingComponent": "kubelet"
        });
        let v = |f: &str| field_value("events", &e, f);
        assert_eq!(v("involvedObject.kind"), Some(Some("Pod".into())));
        assert_eq!(v("involvedObject.namespace"), Some(Some("default".into())));
        assert_eq!(v("involvedObject.name"), Some(Some("web-0".into())));
        assert_eq!(v("involvedObject.uid"), Some(Some("u1".into())));
        assert_eq!(v("involvedObject.apiVersion"), Some(Some("v1".into())));
        assert_eq!(v("involvedObject.resourceVersion"), Some(Some("12".into())));
        assert_eq!(
            v("involvedObject.fieldPath"),
            Some(Some("spec.containers{app}".into()))
        );
        assert_eq!(v("reason"), Some(Some("Pulled".into())));
        assert_eq!(v("type"), Some(Some("Normal".into())));
        assert_eq!(v("source"), Some(Some("kubelet".into())));
        assert_eq!(v("reportingComponent"), Some(Some("kubelet".into())));
        assert_eq!(v("message"), None);

        let scheduler = json!({"source": {}, "reportingComponent": "default-scheduler"});
        assert_eq!(
            field_value("events", &scheduler, "source"),
            Some(Some("default-scheduler".into()))
        );
        assert_eq!(
            field_value("events", &scheduler, "involvedObject.namespace"),
            Some(None)
        );
    }

    #[test]
    fn cluster_scoped_fields() {
        let n = json!({"metadata": {"name": "node-1"}, "spec": {"unschedulable": true}});
        assert_eq!(
            field_value("nodes", &n, "spec.unschedulable"),
            Some(Some("true".into()))
        );
        assert_eq!(
            field_value("nodes", &json!({}), "spec.unschedulable"),
            Some(Some("false".into()))
        );
        assert_eq!(
            field_value("nodes", &n, "metadata.name"),
            Some(Some("node-1".into()))
        );
        assert_eq!(field_value("nodes", &n, "metadata.namespace"), None);
        let ns = json!({"metadata": {"name": "kube-system"}, "status": {"phase": "Active"}});
        assert_eq!(
            field_value("namespaces", &ns, "status.phase"),
            Some(Some("Active".into()))
        );
        assert_eq!(field_value("namespaces", &ns, "metadata.namespace"), None);
        assert_eq!(field_value("namespaces", &ns, "name"), None);
    }

    #[test]
    fn other_resources() {
        let l = json!({"metadata": {"name": "node-1", "namespace": "kube-node-lease"}});
        assert_eq!(
            field_value("leases", &l, "metadata.name"),
            Some(Some("node-1".into()))
        );
        assert_eq!(
            field_value("leases", &l, "metadata.namespace"),
            Some(Some("kube-node-lease".into()))
        );
        assert_eq!(field_value("leases", &l, "spec.holderIdentity"), None);
        assert_eq!(
            field_value("widgets.example.com", &l, "metadata.name"),
            Some(Some("node-1".into()))
        );
        assert_eq!(field_value("widgets.example.com", &l, "spec.size"), None);
        assert_eq!(
            field_value("secrets", &json!({"type": "Opaque"}), "type"),
            Some(Some("Opaque".into()))
        );
        assert_eq!(
            field_value("replicasets", &json!({}), "status.replicas"),
            Some(Some("0".into()))
        );
    }

    #[test]
    fn selector_helpers() {
        let p = pod();
        let ok = FieldSelector::parse("status.phase=Running,spec.nodeName=node-1").unwrap();
        assert!(validate_selector("pods", &ok).is_ok());
        assert!(matches_selector("pods", &p, &ok));
        let nominated = FieldSelector::parse("status.nominatedNodeName=").unwrap();
        assert!(matches_selector("pods", &p, &nominated));
        let other = FieldSelector::parse("spec.nodeName!=node-1").unwrap();
        assert!(!matches_selector("pods", &p, &other));
        let bad = FieldSelector::parse("status.phase=Running,spec.foo=bar").unwrap();
        assert_eq!(
            validate_selector("pods", &bad),
            Err("field label not supported: spec.foo".to_string())
        );
        let ns = FieldSelector::parse("metadata.namespace=default").unwrap();
        assert_eq!(
            validate_selector("nodes", &ns),
            Err("field label not supported: metadata.namespace".to_string())
        );
    }

    #[test]
    fn accessors_tolerate_bad_shapes() {
        let v = json!({"a": {"b": 3, "c": "x", "d": null, "t": "2026-01-01T00:00:00Z"}});
        assert_eq!(str_at(&v, &["a", "b"]), "");
        assert_eq!(str_at(&v, &["a", "c"]), "x");
        assert_eq!(int_at(&v, &["a", "c"]), 0);
        assert_eq!(int_at(&v, &["a", "b"]), 3);
        assert!(at(&v, &["a", "d"]).is_none());
        assert!(list_at(&v, &["a"]).is_empty());
        assert!(time_at(&v, &["a", "t"]).is_some());
        assert!(time_at(&v, &["a", "c"]).is_none());
        assert!(!bool_at(&json!("str"), &["x"]));
    }
}
