//! The filter plugins of the default profile, in upstream's order, for one (pod, node) pair.
//!
//! Order (§10.1): NodeUnschedulable, NodeName, TaintToleration, NodeAffinity, NodeResourcesFit.
//! The first plugin that rejects ends the evaluation of the node, so a node contributes the
//! reasons of exactly one plugin; NodeResourcesFit can give several. A node that is not Ready is
//! rejected by TaintToleration through the emulated `node.kubernetes.io/not-ready` (or
//! `unreachable`) taint, see [`crate::taints`].
//!
//! Plugins that are part of the default profile but not implemented here (NodePorts, volume
//! plugins, PodTopologySpread, InterPodAffinity) accept every node.
//!
//! The functions return a small `Copy` [`Rejection`] that points into the node and the pod
//! instead of formatting strings: reason texts are only built when the pod fits nowhere.

use crate::prepared::PreparedPod;
use crate::snapshot::NodeInfo;
use crate::taints::{TaintEffect, tolerated};

pub const ERR_REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const ERR_REASON_NODE_NAME: &str = "node(s) didn't match the requested node name";
pub const ERR_REASON_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub const REASON_TOO_MANY_PODS: &str = "Too many pods";
pub const REASON_INSUFFICIENT_CPU: &str = "Insufficient cpu";
pub const REASON_INSUFFICIENT_MEMORY: &str = "Insufficient memory";
pub const REASON_INSUFFICIENT_EPHEMERAL_STORAGE: &str = "Insufficient ephemeral-storage";

/// The TaintToleration reason. The taint's **value** is printed, not its effect.
pub fn untolerated_taint_reason(key: &str, value: &str) -> String {
    format!("node(s) had untolerated taint {{{key}: {value}}}")
}

/// `Insufficient <resource>` for a scalar resource.
pub fn insufficient_reason(resource: &str) -> String {
    format!("Insufficient {resource}")
}

/// The framework status code of a rejection. Preemption only helps `Unschedulable` nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Could fit if pods were removed (resources).
    Unschedulable,
    /// Removing pods would not help (cordon, node name, taints, affinity).
    UnschedulableAndUnresolvable,
}

/// Which resources NodeResourcesFit found short, in upstream's reason order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shortfall {
    pub too_many_pods: bool,
    pub cpu: bool,
    pub memory: bool,
    pub ephemeral_storage: bool,
    /// Bit `i` set: the pod's `requests.scalar[i]` does not fit (the first 64 scalar resources;
    /// later ones still reject the node but are reported through bit 63).
    pub scalar: u64,
}

impl Shortfall {
    fn is_empty(&self) -> bool {
        *self == Shortfall::default()
    }
}

/// Why a node was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    NodeUnschedulable,
    NodeName,
    /// `node.taints[index]` is a `NoSchedule`/`NoExecute` taint no toleration matches.
    UntoleratedTaint(usize),
    NodeAffinity,
    Resources(Shortfall),
}

impl Rejection {
    pub fn code(&self) -> Code {
        match self {
            Rejection::Resources(_) => Code::Unschedulable,
            _ => Code::UnschedulableAndUnresolvable,
        }
    }

    /// The plugin that rejected.
    pub fn plugin(&self) -> &'static str {
        match self {
            Rejection::NodeUnschedulable => "NodeUnschedulable",
            Rejection::NodeName => "NodeName",
            Rejection::UntoleratedTaint(_) => "TaintToleration",
            Rejection::NodeAffinity => "NodeAffinity",
            Rejection::Resources(_) => "NodeResourcesFit",
        }
    }

    /// The reason texts, as the FailedScheduling message counts them.
    pub fn reasons(&self, pod: &PreparedPod<'_>, node: &NodeInfo) -> Vec<String> {
        match self {
            Rejection::NodeUnschedulable => vec![ERR_REASON_UNSCHEDULABLE.into()],
            Rejection::NodeName => vec![ERR_REASON_NODE_NAME.into()],
            Rejection::UntoleratedTaint(i) => {
                let t = &node.taints[*i];
                vec![untolerated_taint_reason(&t.key, &t.value)]
            }
            Rejection::NodeAffinity => vec![ERR_REASON_NODE_AFFINITY.into()],
            Rejection::Resources(s) => {
                let mut out = Vec::new();
                for (flag, text) in [
                    (s.too_many_pods, REASON_TOO_MANY_PODS),
                    (s.cpu, REASON_INSUFFICIENT_CPU),
                    (s.memory, REASON_INSUFFICIENT_MEMORY),
                    (s.ephemeral_storage, REASON_INSUFFICIENT_EPHEMERAL_STORAGE),
                ] {
                    if flag {
                        out.push(text.to_string());
                    }
                }
                for (i, (name, _)) in pod.requests.scalar.iter().enumerate().take(64) {
                    if s.scalar & (1 << i) != 0 {
                        out.push(insufficient_reason(name));
                    }
                }
                out
            }
        }
    }
}

/// Runs the filters in order; `Ok` when the node is feasible.
#[inline]
pub fn filter_node(pod: &PreparedPod<'_>, node: &NodeInfo) -> Result<(), Rejection> {
    node_unschedulable(pod, node)?;
    node_name(pod, node)?;
    taint_toleration(pod, node)?;
    node_affinity(pod, node)?;
    node_resources_fit(pod, node)
}

/// NodeUnschedulable: a cordoned node, unless the pod tolerates
/// `node.kubernetes.io/unschedulable:NoSchedule`.
#[inline]
pub fn node_unschedulable(pod: &PreparedPod<'_>, node: &NodeInfo) -> Result<(), Rejection> {
    if node.unschedulable && !pod.tolerates_unschedulable {
        Err(Rejection::NodeUnschedulable)
    } else {
        Ok(())
    }
}

/// NodeName: a pod with `spec.nodeName` only fits that node.
#[inline]
pub fn node_name(pod: &PreparedPod<'_>, node: &NodeInfo) -> Result<(), Rejection> {
    match pod.node_name {
        Some(n) if n != node.name => Err(Rejection::NodeName),
        _ => Ok(()),
    }
}

/// TaintToleration: the first `NoSchedule`/`NoExecute` taint (in node order) that no toleration
/// matches.
#[inline]
pub fn taint_toleration(pod: &PreparedPod<'_>, node: &NodeInfo) -> Result<(), Rejection> {
    for (i, t) in node.taints.iter().enumerate() {
        if matches!(t.effect, TaintEffect::NoSchedule | TaintEffect::NoExecute)
            && !tolerated(&pod.tolerations, t)
        {
            return Err(Rejection::UntoleratedTaint(i));
        }
    }
    Ok(())
}

/// NodeAffinity: `nodeSelector` and required node affinity.
#[inline]
pub fn node_affinity(pod: &PreparedPod<'_>, node: &NodeInfo) -> Result<(), Rejection> {
    if pod.required_affinity.is_empty() || pod.required_affinity.matches(&node.labels, &node.name) {
        Ok(())
    } else {
        Err(Rejection::NodeAffinity)
    }
}

/// NodeResourcesFit (§10.2): the pod-count check always runs; each resource is checked only if
/// the pod requests more than 0 of it, against allocatable minus what the node's pods (bound and
/// assumed) already request.
#[inline]
pub fn node_resources_fit(pod: &PreparedPod<'_>, node: &NodeInfo) -> Result<(), Rejection> {
    let req = &pod.requests.requests;
    let alloc = &node.allocatable;
    let used = &node.requested;
    let mut s = Shortfall {
        too_many_pods: used.pods + 1 > alloc.pods,
        ..Shortfall::default()
    };
    if req.milli_cpu > 0 && req.milli_cpu > alloc.milli_cpu.saturating_sub(used.milli_cpu) {
        s.cpu = true;
    }
    if req.memory > 0 && req.memory > alloc.memory.saturating_sub(used.memory) {
        s.memory = true;
    }
    if req.ephemeral_storage > 0
        && req.ephemeral_storage
            > alloc
                .ephemeral_storage
                .saturating_sub(used.ephemeral_storage)
    {
        s.ephemeral_storage = true;
    }
    for (i, (name, want)) in pod.requests.scalar.iter().enumerate() {
        let free = node
            .allocatable_scalar(name)
            .saturating_sub(node.requested_scalar(name));
        if *want > free {
            s.scalar |= 1 << i.min(63);
        }
    }
    if s.is_empty() {
        Ok(())
    } else {
        Err(Rejection::Resources(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::PodRequests;
    use crate::snapshot::Snapshot;
    use crate::snapshot::tests::{node, node_json};
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        if spec.get("containers").is_none() {
            spec["containers"] = json!([{"name": "c", "image": "x"}]);
        }
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    fn cpu_pod(cpu: &str) -> Pod {
        pod(
            json!({"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": cpu}}}]}),
        )
    }

    fn one(n: k8s_openapi::api::core::v1::Node) -> Snapshot {
        Snapshot::from_nodes(&[n])
    }

    fn run(p: &Pod, s: &Snapshot) -> Result<(), Rejection> {
        filter_node(&PreparedPod::new(p), s.node(0).unwrap())
    }

    fn reasons(p: &Pod, s: &Snapshot) -> Vec<String> {
        let pp = PreparedPod::new(p);
        match filter_node(&pp, s.node(0).unwrap()) {
            Ok(()) => vec![],
            Err(r) => r.reasons(&pp, s.node(0).unwrap()),
        }
    }

    fn tainted(taints: serde_json::Value) -> Snapshot {
        one(node_json(json!({
            "metadata": {"name": "n"},
            "spec": {"taints": taints},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]},
        })))
    }

    #[test]
    fn cordoned_node_is_rejected_unless_tolerated() {
        let mut n = node("n", "4", "8Gi");
        n.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        let s = one(n);
        assert_eq!(run(&pod(json!({})), &s), Err(Rejection::NodeUnschedulable));
        assert_eq!(
            reasons(&pod(json!({})), &s),
            vec!["node(s) were unschedulable"]
        );
        let tol = pod(
            json!({"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}),
        );
        assert_eq!(run(&tol, &s), Ok(()));
        let all = pod(json!({"tolerations": [{"operator": "Exists"}]}));
        assert_eq!(run(&all, &s), Ok(()));
        assert_eq!(
            Rejection::NodeUnschedulable.code(),
            Code::UnschedulableAndUnresolvable
        );
    }

    #[test]
    fn node_name_must_match() {
        let s = one(node("n", "4", "8Gi"));
        assert_eq!(
            run(&pod(json!({"nodeName": "other"})), &s),
            Err(Rejection::NodeName)
        );
        assert_eq!(
            reasons(&pod(json!({"nodeName": "other"})), &s),
            vec!["node(s) didn't match the requested node name"]
        );
        assert_eq!(run(&pod(json!({"nodeName": "n"})), &s), Ok(()));
    }

    #[test]
    fn taints_print_key_and_value() {
        let s = tainted(
            json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]),
        );
        assert_eq!(
            reasons(&pod(json!({})), &s),
            vec!["node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"]
        );
        let s = tainted(json!([{"key": "dedicated", "value": "db", "effect": "NoExecute"}]));
        assert_eq!(
            reasons(&pod(json!({})), &s),
            vec!["node(s) had untolerated taint {dedicated: db}"]
        );
        // Equal needs the value; Exists does not; effect must match when given.
        let eq =
            pod(json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db"}]}));
        assert_eq!(run(&eq, &s), Ok(()));
        let wrong = pod(
            json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "web"}]}),
        );
        assert!(run(&wrong, &s).is_err());
        let ex = pod(
            json!({"tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}]}),
        );
        assert_eq!(run(&ex, &s), Ok(()));
        let other_effect = pod(
            json!({"tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]}),
        );
        assert!(run(&other_effect, &s).is_err());
    }

    #[test]
    fn prefer_no_schedule_does_not_filter_and_first_untolerated_taint_is_reported() {
        let s = tainted(json!([
            {"key": "soft", "effect": "PreferNoSchedule"},
            {"key": "a", "value": "1", "effect": "NoSchedule"},
            {"key": "b", "value": "2", "effect": "NoSchedule"},
        ]));
        assert_eq!(
            run(&pod(json!({})), &s),
            Err(Rejection::UntoleratedTaint(1))
        );
        let tol_a = pod(json!({"tolerations": [{"key": "a", "operator": "Exists"}]}));
        assert_eq!(
            reasons(&tol_a, &s),
            vec!["node(s) had untolerated taint {b: 2}"]
        );
    }

    #[test]
    fn not_ready_node_reads_as_the_not_ready_taint() {
        let s = one(node_json(json!({
            "metadata": {"name": "n"},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "False"}]},
        })));
        assert_eq!(
            reasons(&pod(json!({})), &s),
            vec!["node(s) had untolerated taint {node.kubernetes.io/not-ready: }"]
        );
        // DaemonSet-style toleration.
        let ds = pod(
            json!({"tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"}]}),
        );
        assert_eq!(run(&ds, &s), Ok(()));
        // The default NoExecute toleration (300 s) does not cover NoSchedule.
        let default_tol = pod(
            json!({"tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]}),
        );
        assert!(run(&default_tol, &s).is_err());
    }

    #[test]
    fn affinity_rejection() {
        let s = one(node("n", "4", "8Gi"));
        let p = pod(json!({"nodeSelector": {"disk": "ssd"}}));
        assert_eq!(run(&p, &s), Err(Rejection::NodeAffinity));
        assert_eq!(
            reasons(&p, &s),
            vec!["node(s) didn't match Pod's node affinity/selector"]
        );
    }

    #[test]
    fn plugin_order_first_failure_wins() {
        let mut n = node_json(json!({
            "metadata": {"name": "n"},
            "spec": {"unschedulable": true, "taints": [{"key": "t", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }));
        let p = pod(
            json!({"nodeSelector": {"x": "y"}, "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "8"}}}]}),
        );
        assert_eq!(run(&p, &one(n.clone())), Err(Rejection::NodeUnschedulable));
        n.spec.as_mut().unwrap().unschedulable = None;
        assert_eq!(
            run(&p, &one(n.clone())),
            Err(Rejection::UntoleratedTaint(0))
        );
        n.spec.as_mut().unwrap().taints = None;
        assert_eq!(run(&p, &one(n.clone())), Err(Rejection::NodeAffinity));
        n.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
        assert!(matches!(run(&p, &one(n)), Err(Rejection::Resources(_))));
    }

    #[test]
    fn resources_several_reasons_in_order() {
        let s = one(node("n", "1", "1Gi"));
        let p = pod(
            json!({"containers": [{"name": "c", "image": "x", "resources": {"requests": {
            "cpu": "2", "memory": "2Gi", "ephemeral-storage": "200Gi", "example.com/gpu": "1"}}}]}),
        );
        assert_eq!(
            reasons(&p, &s),
            vec![
                "Insufficient cpu",
                "Insufficient memory",
                "Insufficient ephemeral-storage",
                "Insufficient example.com/gpu"
            ]
        );
        assert_eq!(run(&p, &s).unwrap_err().code(), Code::Unschedulable);
    }

    #[test]
    fn fit_counts_what_is_already_requested() {
        let mut s = one(node("n", "1", "1Gi"));
        assert_eq!(run(&cpu_pod("600m"), &s), Ok(()));
        let first = PodRequests::of(&cpu_pod("600m"));
        s.add_pod(0, &first);
        assert_eq!(reasons(&cpu_pod("600m"), &s), vec!["Insufficient cpu"]);
        assert_eq!(run(&cpu_pod("400m"), &s), Ok(()));
        s.remove_pod(0, &first);
        assert_eq!(run(&cpu_pod("600m"), &s), Ok(()));
    }

    #[test]
    fn too_many_pods_and_best_effort() {
        let n = node_json(json!({
            "metadata": {"name": "n"},
            "status": {"allocatable": {"cpu": "0", "memory": "0", "pods": "2"},
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }));
        let mut s = one(n);
        let be = pod(json!({}));
        // A BestEffort pod fits any node with a free pod slot, even with no cpu/memory left.
        assert_eq!(run(&be, &s), Ok(()));
        let r = PodRequests::of(&be);
        s.add_pod(0, &r);
        assert_eq!(run(&be, &s), Ok(()));
        s.add_pod(0, &r);
        assert_eq!(reasons(&be, &s), vec!["Too many pods"]);
        // Too many pods comes first, then the resources.
        assert_eq!(
            reasons(&cpu_pod("1"), &s),
            vec!["Too many pods", "Insufficient cpu"]
        );
    }

    #[test]
    fn extended_resources_check_against_node_scalars() {
        let n = node_json(json!({
            "metadata": {"name": "n"},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110", "example.com/gpu": "2"},
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }));
        let mut s = one(n);
        let gpu = |q: &str| {
            pod(
                json!({"containers": [{"name": "c", "image": "x", "resources": {"requests": {"example.com/gpu": q}}}]}),
            )
        };
        assert_eq!(run(&gpu("2"), &s), Ok(()));
        assert_eq!(reasons(&gpu("3"), &s), vec!["Insufficient example.com/gpu"]);
        s.add_pod(0, &PodRequests::of(&gpu("1")));
        assert_eq!(reasons(&gpu("2"), &s), vec!["Insufficient example.com/gpu"]);
        // A node without the resource at all.
        let s = one(node("m", "4", "8Gi"));
        assert_eq!(reasons(&gpu("1"), &s), vec!["Insufficient example.com/gpu"]);
    }
}
