//! Everything derived from the pod alone, computed once per scheduling attempt.
//!
//! Upstream plugins do this in their PreFilter/PreScore steps and stash it in the cycle state;
//! here it is one struct that borrows from the pod, so the per-node filter and score code only
//! compares pre-parsed values.

use crate::node_affinity::{PreFilterNodes, PreferredAffinity, RequiredAffinity, prefilter_nodes};
use crate::resources::PodRequests;
use crate::taints::{CompiledToleration, TAINT_NODE_UNSCHEDULABLE, TaintEffect};
use k8s_openapi::api::core::v1::Pod;

/// A pod, pre-digested for filtering and scoring.
#[derive(Debug, Clone)]
pub struct PreparedPod<'a> {
    pub pod: &'a Pod,
    /// Effective and scoring requests (parsed once).
    pub requests: PodRequests,
    /// `spec.nodeName` when non-empty (NodeName filter).
    pub node_name: Option<&'a str>,
    pub tolerations: Vec<CompiledToleration<'a>>,
    /// Whether the pod tolerates `node.kubernetes.io/unschedulable:NoSchedule` (bypasses
    /// NodeUnschedulable).
    pub tolerates_unschedulable: bool,
    pub required_affinity: RequiredAffinity<'a>,
    pub preferred_affinity: PreferredAffinity<'a>,
    pub prefilter: PreFilterNodes<'a>,
    /// Image names of init and app containers, with `:latest` appended where there is no tag.
    pub images: Vec<String>,
    /// `len(initContainers) + len(containers)` (ImageLocality's threshold scale).
    pub num_containers: usize,
    /// `spec.preemptionPolicy == Never`.
    pub preemption_never: bool,
}

impl<'a> PreparedPod<'a> {
    pub fn new(pod: &'a Pod) -> PreparedPod<'a> {
        let spec = pod.spec.as_ref();
        let tolerations: Vec<CompiledToleration<'a>> = spec
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or(&[])
            .iter()
            .map(CompiledToleration::compile)
            .collect();
        let tolerates_unschedulable = tolerations
            .iter()
            .any(|t| t.tolerates(TAINT_NODE_UNSCHEDULABLE, "", TaintEffect::NoSchedule));
        let init = spec
            .and_then(|s| s.init_containers.as_deref())
            .unwrap_or(&[]);
        let app = spec.map(|s| s.containers.as_slice()).unwrap_or(&[]);
        let images = init
            .iter()
            .chain(app)
            .map(|c| normalized_image_name(c.image.as_deref().unwrap_or("")))
            .collect();
        PreparedPod {
            pod,
            requests: PodRequests::of(pod),
            node_name: spec
                .and_then(|s| s.node_name.as_deref())
                .filter(|n| !n.is_empty()),
            tolerations,
            tolerates_unschedulable,
            required_affinity: RequiredAffinity::of(pod),
            preferred_affinity: PreferredAffinity::of(pod),
            prefilter: prefilter_nodes(pod),
            images,
            num_containers: init.len() + app.len(),
            preemption_never: spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never"),
        }
    }
}

/// Appends `:latest` when the image reference has no tag after its last `/` (ImageLocality's
/// normalisation: `nginx` → `nginx:latest`, `host:5000/app` → `host:5000/app:latest`,
/// `nginx:1.25` unchanged). A digest reference (`app@sha256:…`) contains a `:` after the last `/`
/// and is left as is, like upstream.
pub fn normalized_image_name(name: &str) -> String {
    let colon = name.rfind(':');
    let slash = name.rfind('/');
    let has_tag = match (colon, slash) {
        (Some(c), Some(s)) => c > s,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if has_tag {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_normalisation() {
        assert_eq!(normalized_image_name("nginx"), "nginx:latest");
        assert_eq!(normalized_image_name("nginx:1.25"), "nginx:1.25");
        assert_eq!(
            normalized_image_name("docker.io/library/nginx"),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(
            normalized_image_name("host:5000/app"),
            "host:5000/app:latest"
        );
        assert_eq!(
            normalized_image_name("host:5000/app:v1"),
            "host:5000/app:v1"
        );
        assert_eq!(normalized_image_name("app@sha256:abc"), "app@sha256:abc");
    }
}
