//! The nodes table: NAME STATUS ROLES AGE VERSION, wide INTERNAL-IP EXTERNAL-IP OS-IMAGE
//! KERNEL-VERSION CONTAINER-RUNTIME (shared/spec/pod-lifecycle.md §3.6).

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::Value;

use super::{AGE_DESC, col, creation_age, name, name_col};
use crate::fields::{bool_at, list_at, str_at};

const ROLE_LABEL_PREFIX: &str = "node-role.kubernetes.io/";
const ROLE_LABEL: &str = "kubernetes.io/role";

pub(super) fn columns() -> Vec<super::Column> {
    vec![
        name_col(0),
        col("Status", "The status of the node (its Ready condition).", 0),
        col(
            "Roles",
            "The roles of the node, from its node-role labels.",
            0,
        ),
        col("Age", AGE_DESC, 0),
        col("Version", "The kubelet version reported by the node.", 0),
        col("Internal-IP", "The node's first InternalIP address.", 1),
        col("External-IP", "The node's first ExternalIP address.", 1),
        col("OS-Image", "The OS image reported by the node.", 1),
        col(
            "Kernel-Version",
            "The kernel version reported by the node.",
            1,
        ),
        col(
            "Container-Runtime",
            "The container runtime and version reported by the node.",
            1,
        ),
    ]
}

/// `Ready` / `NotReady` / `Unknown` from the Ready condition (the last one listed wins),
/// plus `,SchedulingDisabled` for a cordoned node.
fn status(node: &Value) -> String {
    let ready = list_at(node, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| str_at(c, &["type"]) == "Ready")
        .map(|c| str_at(c, &["status"]));
    let mut parts = vec![match ready {
        Some("True") => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if bool_at(node, &["spec", "unschedulable"]) {
        parts.push("SchedulingDisabled");
    }
    parts.join(",")
}

/// Sorted roles from `node-role.kubernetes.io/<role>` labels and `kubernetes.io/role`.
fn roles(node: &Value) -> String {
    let mut set = BTreeSet::new();
    if let Some(labels) = node
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
    {
        for (key, value) in labels {
            let value = value.as_str().unwrap_or("");
            if let Some(role) = key.strip_prefix(ROLE_LABEL_PREFIX) {
                if !role.is_empty() {
                    set.insert(role.to_string());
                }
            } else if key == ROLE_LABEL && !value.is_empty() {
                set.insert(value.to_string());
            }
        }
    }
    if set.is_empty() {
        "<none>".to_string()
    } else {
        set.into_iter().collect::<Vec<_>>().join(",")
    }
}

/// The first address of `kind`, or `<none>`.
fn address(node: &Value, kind: &str) -> String {
    list_at(node, &["status", "addresses"])
        .iter()
        .find(|a| str_at(a, &["type"]) == kind)
        .map(|a| str_at(a, &["address"]).to_string())
        .unwrap_or_else(|| "<none>".to_string())
}

/// A `status.nodeInfo` field, or `<unknown>` when empty.
fn info_or_unknown(node: &Value, field: &str) -> String {
    match str_at(node, &["status", "nodeInfo", field]) {
        "" => "<unknown>".to_string(),
        v => v.to_string(),
    }
}

pub(super) fn cells(node: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(node).into(),
        status(node).into(),
        roles(node).into(),
        creation_age(node, now).into(),
        str_at(node, &["status", "nodeInfo", "kubeletVersion"]).into(),
        address(node, "InternalIP").into(),
        address(node, "ExternalIP").into(),
        info_or_unknown(node, "osImage").into(),
        info_or_unknown(node, "kernelVersion").into(),
        info_or_unknown(node, "containerRuntimeVersion").into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::ts;
    use super::*;
    use serde_json::json;

    fn node() -> Value {
        json!({
            "metadata": {"name": "node-1", "creationTimestamp": "2026-01-01T00:00:00Z",
                         "labels": {"node-role.kubernetes.io/control-plane": "",
                                    "node-role.kubernetes.io/": "ignored",
                                    "kubernetes.io/role": "master",
                                    "kubernetes.io/hostname": "node-1"}},
            "spec": {},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"},
                               {"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                "addresses": [{"type": "Hostname", "address": "node-1"},
                              {"type": "InternalIP", "address": "10.0.0.2"},
                              {"type": "InternalIP", "address": "10.0.0.3"}],
                "nodeInfo": {"kubeletVersion": "v1.31.4", "osImage": "Debian GNU/Linux 12 (bookworm)",
                             "kernelVersion": "6.1.0-18-amd64", "containerRuntimeVersion": "containerd://1.7.22"}
            }
        })
    }

    #[test]
    fn full_row() {
        let cells = super::super::row_cells("nodes", &node(), ts("2026-01-03T01:00:00Z"));
        assert_eq!(
            cells,
            vec![
                json!("node-1"),
                json!("Ready"),
                json!("control-plane,master"),
                json!("2d1h"),
                json!("v1.31.4"),
                json!("10.0.0.2"),
                json!("<none>"),
                json!("Debian GNU/Linux 12 (bookworm)"),
                json!("6.1.0-18-amd64"),
                json!("containerd://1.7.22"),
            ]
        );
    }

    #[test]
    fn status_variants() {
        let mut n = node();
        n["spec"]["unschedulable"] = json!(true);
        assert_eq!(status(&n), "Ready,SchedulingDisabled");
        n["status"]["conditions"][1]["status"] = json!("Unknown");
        assert_eq!(status(&n), "NotReady,SchedulingDisabled");
        n["status"]["conditions"][1]["status"] = json!("False");
        n["spec"]["unschedulable"] = json!(false);
        assert_eq!(status(&n), "NotReady");
        n["status"]["conditions"] = json!([]);
        assert_eq!(status(&n), "Unknown");
    }

    #[test]
    fn bare_node() {
        let cells = super::super::row_cells(
            "nodes",
            &json!({"metadata": {"name": "n"}}),
            ts("2026-01-01T00:00:00Z"),
        );
        assert_eq!(
            cells,
            vec![
                json!("n"),
                json!("Unknown"),
                json!("<none>"),
                json!("<unknown>"),
                json!(""),
                json!("<none>"),
                json!("<none>"),
                json!("<unknown>"),
                json!("<unknown>"),
                json!("<unknown>"),
            ]
        );
    }

    #[test]
    fn column_names() {
        let names: Vec<_> = columns().iter().map(|c| (c.name, c.priority)).collect();
        assert_eq!(
            names,
            [
                ("Name", 0),
                ("Status", 0),
                ("Roles", 0),
                ("Age", 0),
                ("Version", 0),
                ("Internal-IP", 1),
                ("External-IP", 1),
                ("OS-Image", 1),
                ("Kernel-Version", 1),
                ("Container-Runtime", 1),
            ]
        );
    }
}
