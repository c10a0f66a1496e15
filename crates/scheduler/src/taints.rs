//! Taints, tolerations, and the taints a node carries implicitly.
//!
//! TaintToleration filtering and scoring, NodeUnschedulable's bypass and the node-Ready check
//! all reduce to one question: does one of the pod's tolerations match this taint? The
//! tolerations are compiled once per pod so that question costs a few string compares per node.
//!
//! Upstream, the node lifecycle controller turns node conditions into `NoSchedule` taints (Ready
//! False → `node.kubernetes.io/not-ready`, Ready Unknown → `node.kubernetes.io/unreachable`,
//! MemoryPressure/DiskPressure/PIDPressure/NetworkUnavailable True → their taints) and the kubelet
//! registers a new node with the not-ready taint until it reports Ready. skiff has no such
//! controller, so [`condition_taints`] derives the same taints from the node's conditions and the
//! snapshot appends them to the node's own taints. The scheduler then rejects a node that is not
//! Ready with exactly upstream's text, `node(s) had untolerated taint {node.kubernetes.io/not-ready: }`,
//! and a pod that tolerates the taint (DaemonSet pods do) is placed as upstream would place it.

use k8s_openapi::api::core::v1::{Node, Toleration};

pub const TAINT_NODE_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_NODE_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_NODE_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const TAINT_NODE_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
pub const TAINT_NODE_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
pub const TAINT_NODE_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
pub const TAINT_NODE_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// A taint's effect. Anything else the API might carry is `Other` and affects nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
    Other,
}

impl TaintEffect {
    pub fn parse(s: &str) -> TaintEffect {
        match s {
            "NoSchedule" => TaintEffect::NoSchedule,
            "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
            "NoExecute" => TaintEffect::NoExecute,
            _ => TaintEffect::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
            TaintEffect::Other => "",
        }
    }
}

/// One taint of a node (its own or one derived from its conditions).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: TaintEffect,
}

impl Taint {
    pub fn new(key: &str, value: &str, effect: TaintEffect) -> Taint {
        Taint {
            key: key.to_string(),
            value: value.to_string(),
            effect,
        }
    }
}

/// How a toleration compares values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TolOp {
    Equal,
    Exists,
    /// An operator the API does not define: tolerates nothing.
    Invalid,
}

/// A pod toleration, borrowed from the pod and pre-parsed.
#[derive(Debug, Clone, Copy)]
pub struct CompiledToleration<'a> {
    /// Empty matches every key.
    key: &'a str,
    op: TolOp,
    value: &'a str,
    /// `None` matches every effect; `Some(Other)` (an unknown effect string) matches none of the
    /// three known effects.
    effect: Option<TaintEffect>,
}

impl<'a> CompiledToleration<'a> {
    pub fn compile(t: &'a Toleration) -> CompiledToleration<'a> {
        let op = match t.operator.as_deref().unwrap_or("") {
            "" | "Equal" => TolOp::Equal,
            "Exists" => TolOp::Exists,
            _ => TolOp::Invalid,
        };
        let effect = match t.effect.as_deref().unwrap_or("") {
            "" => None,
            e => Some(TaintEffect::parse(e)),
        };
        CompiledToleration {
            key: t.key.as_deref().unwrap_or(""),
            op,
            value: t.value.as_deref().unwrap_or(""),
            effect,
        }
    }

    /// Upstream's `ToleratesTaint`: the effect (if set) and key (if set) must be equal, then
    /// `Exists` matches any value and `Equal` (or no operator) needs equal values.
    pub fn tolerates(&self, key: &str, value: &str, effect: TaintEffect) -> bool {
        if let Some(e) = self.effect
            && (e != effect || e == TaintEffect::Other)
        {
            return false;
        }
        if !self.key.is_empty() && self.key != key {
            return false;
        }
        match self.op {
            TolOp::Equal => self.value == value,
            TolOp::Exists => true,
            TolOp::Invalid => false,
        }
    }

    /// Whether this toleration is considered by TaintToleration scoring (effect empty or
    /// `PreferNoSchedule`).
    pub fn applies_to_prefer_no_schedule(&self) -> bool {
        matches!(self.effect, None | Some(TaintEffect::PreferNoSchedule))
    }
}

/// Whether any of `tolerations` tolerates the taint.
pub fn tolerated(tolerations: &[CompiledToleration<'_>], taint: &Taint) -> bool {
    tolerations
        .iter()
        .any(|t| t.tolerates(&taint.key, &taint.value, taint.effect))
}

/// The `NoSchedule` taints the node lifecycle controller (and, for a node that never reported
/// Ready, the kubelet at registration) would have put on this node, in upstream's order.
pub fn condition_taints(node: &Node) -> Vec<Taint> {
    let conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or(&[]);
    let mut out = Vec::new();
    let mut saw_ready = false;
    for c in conditions {
        let key = match (c.type_.as_str(), c.status.as_str()) {
            ("Ready", status) => {
                saw_ready = true;
                match status {
                    "True" => None,
                    "Unknown" => Some(TAINT_NODE_UNREACHABLE),
                    _ => Some(TAINT_NODE_NOT_READY),
                }
            }
            ("MemoryPressure", "True") => Some(TAINT_NODE_MEMORY_PRESSURE),
            ("DiskPressure", "True") => Some(TAINT_NODE_DISK_PRESSURE),
            ("PIDPressure", "True") => Some(TAINT_NODE_PID_PRESSURE),
            ("NetworkUnavailable", "True") => Some(TAINT_NODE_NETWORK_UNAVAILABLE),
            _ => None,
        };
        if let Some(key) = key {
            out.push(Taint::new(key, "", TaintEffect::NoSchedule));
        }
    }
    if !saw_ready {
        // A node that has not reported Ready yet still carries the kubelet's registration taint.
        out.push(Taint::new(
            TAINT_NODE_NOT_READY,
            "",
            TaintEffect::NoSchedule,
        ));
    }
    out
}

/// Whether the node's Ready condition is `True`.
pub fn node_is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or(&[])
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tol(v: serde_json::Value) -> Toleration {
        serde_json::from_value(v).unwrap()
    }

    fn check(t: serde_json::Value, key: &str, value: &str, effect: TaintEffect) -> bool {
        let t = tol(t);
        CompiledToleration::compile(&t).tolerates(key, value, effect)
    }

    #[test]
    fn equal_operator_needs_same_key_and_value() {
        let t = json!({"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"});
        assert!(check(t.clone(), "k", "v", TaintEffect::NoSchedule));
        assert!(!check(t.clone(), "k", "w", TaintEffect::NoSchedule));
        assert!(!check(t.clone(), "j", "v", TaintEffect::NoSchedule));
        assert!(!check(t, "k", "v", TaintEffect::NoExecute));
        // No operator means Equal; no value equals an empty value.
        assert!(check(json!({"key": "k"}), "k", "", TaintEffect::NoSchedule));
        assert!(!check(
            json!({"key": "k"}),
            "k",
            "x",
            TaintEffect::NoSchedule
        ));
    }

    #[test]
    fn exists_ignores_the_value_and_empty_key_matches_all() {
        assert!(check(
            json!({"key": "k", "operator": "Exists"}),
            "k",
            "anything",
            TaintEffect::NoExecute
        ));
        assert!(check(
            json!({"operator": "Exists"}),
            "any",
            "x",
            TaintEffect::PreferNoSchedule
        ));
        assert!(!check(
            json!({"operator": "Exists", "effect": "NoSchedule"}),
            "any",
            "x",
            TaintEffect::NoExecute
        ));
    }

    #[test]
    fn empty_effect_matches_every_effect() {
        let t = json!({"key": "k", "operator": "Exists"});
        for e in [
            TaintEffect::NoSchedule,
            TaintEffect::PreferNoSchedule,
            TaintEffect::NoExecute,
        ] {
            assert!(check(t.clone(), "k", "", e));
        }
    }

    #[test]
    fn unknown_operator_tolerates_nothing() {
        assert!(!check(
            json!({"key": "k", "operator": "Gt", "value": "1"}),
            "k",
            "1",
            TaintEffect::NoSchedule
        ));
    }

    #[test]
    fn conditions_become_taints() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "status": {"conditions": [
                {"type": "MemoryPressure", "status": "True"},
                {"type": "Ready", "status": "False"},
            ]}
        }))
        .unwrap();
        let keys: Vec<_> = condition_taints(&node).into_iter().map(|t| t.key).collect();
        assert_eq!(keys, vec![TAINT_NODE_MEMORY_PRESSURE, TAINT_NODE_NOT_READY]);
        assert!(!node_is_ready(&node));

        let unknown: Node = serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}
        }))
        .unwrap();
        assert_eq!(condition_taints(&unknown)[0].key, TAINT_NODE_UNREACHABLE);

        let fresh: Node = serde_json::from_value(json!({"metadata": {"name": "n"}})).unwrap();
        assert_eq!(condition_taints(&fresh)[0].key, TAINT_NODE_NOT_READY);

        let ready: Node = serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        assert!(condition_taints(&ready).is_empty());
        assert!(node_is_ready(&ready));
    }
}
