//! The score plugins of the default profile and their weights (§10.3, §10.4).
//!
//! Each plugin gives a node 0..=100; TaintToleration and NodeAffinity are then normalised over
//! the feasible nodes of the cycle. The node total is Σ weight × score. Integer math and the
//! one floating-point step (BalancedAllocation, ImageLocality's spread) follow upstream exactly,
//! so the same cluster state yields the same totals.

use crate::prepared::PreparedPod;
use crate::resources::PodRequests;
use crate::snapshot::NodeInfo;
use crate::taints::TaintEffect;

pub const MAX_NODE_SCORE: i64 = 100;

pub const WEIGHT_TAINT_TOLERATION: i64 = 3;
pub const WEIGHT_NODE_AFFINITY: i64 = 2;
pub const WEIGHT_NODE_RESOURCES_FIT: i64 = 1;
pub const WEIGHT_BALANCED_ALLOCATION: i64 = 1;
pub const WEIGHT_IMAGE_LOCALITY: i64 = 1;

const MB: i64 = 1024 * 1024;
/// Below this, an image's presence is worth nothing.
pub const IMAGE_MIN_THRESHOLD: i64 = 23 * MB;
/// Per container: above this, an image's presence is worth the maximum.
pub const IMAGE_MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// NodeResourcesFit with the LeastAllocated strategy (cpu and memory, weight 1 each): per
/// resource `(allocatable − requested) × 100 / allocatable`, 0 when over-committed, then the
/// weighted average. `requested` is the node's scoring requests plus this pod's (containers
/// without requests count 100m / 200Mi). A resource the node has none of is left out.
pub fn least_allocated(pod: &PodRequests, node: &NodeInfo) -> i64 {
    let pairs = [
        (
            node.allocatable.milli_cpu,
            node.non_zero_requested
                .milli_cpu
                .saturating_add(pod.non_zero.milli_cpu),
        ),
        (
            node.allocatable.memory,
            node.non_zero_requested
                .memory
                .saturating_add(pod.non_zero.memory),
        ),
    ];
    let mut score = 0i64;
    let mut weights = 0i64;
    for (alloc, requested) in pairs {
        if alloc == 0 {
            continue;
        }
        score += least_requested_score(requested, alloc);
        weights += 1;
    }
    if weights == 0 { 0 } else { score / weights }
}

/// `(capacity − requested) × 100 / capacity`, or 0 when `requested > capacity`.
pub fn least_requested_score(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    // i128: (capacity − requested) × 100 overflows i64 for memory beyond ~92 PB.
    ((i128::from(capacity - requested) * i128::from(MAX_NODE_SCORE)) / i128::from(capacity)) as i64
}

/// NodeResourcesBalancedAllocation (cpu, memory): with fractions `requested / allocatable`
/// (actual requests including this pod, capped at 1), `score = (1 − |f_cpu − f_mem| / 2) × 100`,
/// truncated. `None` for a pod that requests neither cpu nor memory: upstream skips the plugin
/// for such pods, which gives every node the same 0.
pub fn balanced_allocation(pod: &PodRequests, node: &NodeInfo) -> Option<i64> {
    if pod.requests.milli_cpu == 0 && pod.requests.memory == 0 {
        return None;
    }
    let pairs = [
        (
            node.allocatable.milli_cpu,
            node.requested
                .milli_cpu
                .saturating_add(pod.requests.milli_cpu),
        ),
        (
            node.allocatable.memory,
            node.requested.memory.saturating_add(pod.requests.memory),
        ),
    ];
    let mut fractions = [0f64; 2];
    let mut n = 0;
    for (alloc, requested) in pairs {
        if alloc == 0 {
            continue;
        }
        fractions[n] = (requested as f64 / alloc as f64).min(1.0);
        n += 1;
    }
    let std = if n == 2 {
        ((fractions[0] - fractions[1]) / 2.0).abs()
    } else {
        0.0
    };
    Some(((1.0 - std) * MAX_NODE_SCORE as f64) as i64)
}

/// ImageLocality's contribution of one image: its size scaled by the share of nodes that have it
/// (`int64(size × nodesHaving / totalNodes)`, in floating point as upstream).
pub fn scaled_image_score(size: i64, nodes_having: u32, total_nodes: usize) -> i64 {
    if total_nodes == 0 {
        return 0;
    }
    let spread = f64::from(nodes_having) / total_nodes as f64;
    (size as f64 * spread) as i64
}

/// ImageLocality's final mapping: clamp the sum to
/// `[23 MiB, 1000 MiB × num_containers]` and scale linearly to 0..=100 (integer division).
pub fn image_locality_priority(sum: i64, num_containers: usize) -> i64 {
    let max_threshold = IMAGE_MAX_CONTAINER_THRESHOLD.saturating_mul(num_containers as i64);
    let sum = if sum < IMAGE_MIN_THRESHOLD {
        IMAGE_MIN_THRESHOLD
    } else if sum > max_threshold {
        max_threshold
    } else {
        sum
    };
    let range = max_threshold - IMAGE_MIN_THRESHOLD;
    if range <= 0 {
        return 0;
    }
    MAX_NODE_SCORE * (sum - IMAGE_MIN_THRESHOLD) / range
}

/// ImageLocality for one node, given the pod's resolved images as `(image id, scaled score)`
/// (one entry per container using an image some node has; duplicates count twice, as upstream).
pub fn image_locality(images: &[(u32, i64)], num_containers: usize, node: &NodeInfo) -> i64 {
    let sum: i64 = images
        .iter()
        .filter(|(id, _)| node.has_image(*id))
        .map(|(_, s)| *s)
        .sum();
    image_locality_priority(sum, num_containers)
}

/// TaintToleration's raw score: the number of `PreferNoSchedule` taints of the node that no
/// toleration with an empty or `PreferNoSchedule` effect matches. Reverse-normalised later.
pub fn intolerable_prefer_no_schedule(pod: &PreparedPod<'_>, node: &NodeInfo) -> i64 {
    if !node.has_prefer_no_schedule {
        return 0;
    }
    node.taints
        .iter()
        .filter(|t| t.effect == TaintEffect::PreferNoSchedule)
        .filter(|t| {
            !pod.tolerations
                .iter()
                .filter(|tol| tol.applies_to_prefer_no_schedule())
                .any(|tol| tol.tolerates(&t.key, &t.value, t.effect))
        })
        .count() as i64
}

/// NodeAffinity's raw score: Σ weights of the preferred terms the node matches. Normalised later.
pub fn preferred_node_affinity(pod: &PreparedPod<'_>, node: &NodeInfo) -> i64 {
    pod.preferred_affinity.score(&node.labels, &node.name)
}

/// Upstream's `DefaultNormalizeScore`: scale so the maximum becomes 100 (`score × 100 / max`);
/// with `reverse`, `100 − that`. When every score is 0, all become 0 (or 100 when reversed).
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0).max(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        let v = MAX_NODE_SCORE * *s / max;
        *s = if reverse { MAX_NODE_SCORE - v } else { v };
    }
}

/// Normalises one raw score against the maximum of its cycle (same rule as
/// [`default_normalize`], for a single value).
pub fn normalize_one(score: i64, max: i64, reverse: bool) -> i64 {
    let v = if max <= 0 {
        0
    } else {
        MAX_NODE_SCORE * score / max
    };
    if reverse { MAX_NODE_SCORE - v } else { v }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resources;
    use crate::snapshot::Snapshot;
    use crate::snapshot::tests::node;

    fn pod_req(cpu: i64, mem: i64) -> PodRequests {
        let r = Resources {
            milli_cpu: cpu,
            memory: mem,
            ephemeral_storage: 0,
            pods: 1,
        };
        PodRequests {
            requests: r,
            non_zero: r,
            scalar: vec![],
        }
    }

    #[test]
    fn least_allocated_examples() {
        // Upstream's classic example: node 4000m / 10000 bytes, pod 3000m / 5000.
        // cpu: (4000-3000)*100/4000 = 25, memory: (10000-5000)*100/10000 = 50 -> (25+50)/2 = 37
        let mut s = Snapshot::from_nodes(&[node("n", "4", "10000")]);
        assert_eq!(
            least_allocated(&pod_req(3000, 5000), s.node(0).unwrap()),
            37
        );
        // Existing usage counts: +1000m/+2000 -> cpu 0, mem 30 -> 15
        s.add_pod(0, &pod_req(1000, 2000));
        assert_eq!(
            least_allocated(&pod_req(3000, 5000), s.node(0).unwrap()),
            15
        );
        // Over-commit scores 0 for that resource.
        assert_eq!(least_allocated(&pod_req(9000, 0), s.node(0).unwrap()), 40);
    }

    #[test]
    fn least_allocated_uses_non_zero_defaults() {
        let s = Snapshot::from_nodes(&[node("n", "1", "1000Mi")]);
        let be = PodRequests {
            requests: Resources {
                pods: 1,
                ..Default::default()
            },
            non_zero: Resources {
                milli_cpu: 100,
                memory: 200 << 20,
                ephemeral_storage: 0,
                pods: 1,
            },
            scalar: vec![],
        };
        // cpu (1000-100)*100/1000 = 90, memory (1000-200)*100/1000 = 80 -> 85
        assert_eq!(least_allocated(&be, s.node(0).unwrap()), 85);
    }

    #[test]
    fn balanced_allocation_examples() {
        let s = Snapshot::from_nodes(&[node("n", "4", "10000")]);
        // cpu 3000/4000 = 0.75, mem 5000/10000 = 0.5 -> std 0.125 -> 87.5 -> 87
        assert_eq!(
            balanced_allocation(&pod_req(3000, 5000), s.node(0).unwrap()),
            Some(87)
        );
        // Equal fractions -> 100.
        assert_eq!(
            balanced_allocation(&pod_req(2000, 5000), s.node(0).unwrap()),
            Some(100)
        );
        // Fractions are capped at 1: cpu 8000/4000 -> 1, mem 0.0001 -> std 0.49995 -> 50.005 -> 50.
        assert_eq!(
            balanced_allocation(&pod_req(8000, 1), s.node(0).unwrap()),
            Some(50)
        );
        // Best-effort pods are skipped.
        assert_eq!(
            balanced_allocation(&pod_req(0, 0), s.node(0).unwrap()),
            None
        );
    }

    #[test]
    fn image_locality_spec_example() {
        // One container, a 500 MiB image on 2 of 4 nodes -> 250 MiB -> 100*227/977 = 23.
        let scaled = scaled_image_score(500 * MB, 2, 4);
        assert_eq!(scaled, 250 * MB);
        assert_eq!(image_locality_priority(scaled, 1), 23);
        assert_eq!(image_locality_priority(0, 1), 0);
        // Below the minimum threshold: 0; above the max: 100.
        assert_eq!(image_locality_priority(20 * MB, 1), 0);
        assert_eq!(image_locality_priority(5000 * MB, 1), 100);
        // Thresholds scale with the number of containers: 1000 MiB over 2 containers.
        assert_eq!(
            image_locality_priority(1000 * MB, 2),
            100 * (977 * MB) / (1977 * MB)
        );
    }

    #[test]
    fn image_locality_on_a_snapshot() {
        use crate::prepared::PreparedPod;
        use crate::snapshot::tests::node_json;
        use serde_json::json;
        let n = |name: &str, has: bool| {
            let images = if has {
                json!([{"names": ["app:latest"], "sizeBytes": 500 * MB}])
            } else {
                json!([])
            };
            node_json(json!({"metadata": {"name": name}, "status": {
                "allocatable": {"cpu": "1", "memory": "1Gi", "pods": "110"},
                "images": images}}))
        };
        let s = Snapshot::from_nodes(&[n("a", true), n("b", false), n("c", true), n("d", false)]);
        // The spec says `app`; it is normalised to `app:latest` and matches exactly.
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "app"}]}}),
        )
        .unwrap();
        let pp = PreparedPod::new(&pod);
        let images: Vec<(u32, i64)> = pp
            .images
            .iter()
            .filter_map(|name| {
                s.image(name)
                    .map(|(id, st)| (id, scaled_image_score(st.size, st.nodes, s.num_nodes())))
            })
            .collect();
        let scores: Vec<i64> = s
            .nodes()
            .iter()
            .map(|node| image_locality(&images, pp.num_containers, node))
            .collect();
        assert_eq!(scores, vec![23, 0, 23, 0]);
    }

    #[test]
    fn normalisation() {
        let mut v = vec![0, 2, 4];
        default_normalize(&mut v, false);
        assert_eq!(v, vec![0, 50, 100]);
        let mut v = vec![0, 1, 3];
        default_normalize(&mut v, true);
        assert_eq!(v, vec![100, 67, 0]);
        let mut v = vec![0, 0];
        default_normalize(&mut v, true);
        assert_eq!(v, vec![100, 100]);
        let mut v = vec![0, 0];
        default_normalize(&mut v, false);
        assert_eq!(v, vec![0, 0]);
        assert_eq!(normalize_one(1, 3, true), 67);
        assert_eq!(normalize_one(0, 0, true), 100);
    }
}
