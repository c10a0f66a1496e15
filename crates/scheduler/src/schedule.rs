//! One scheduling decision: a pod and a snapshot in, a node or a [`FitError`] out.
//!
//! The cycle follows upstream's `schedulePod`: PreFilter (NodeAffinity's node-name pinning),
//! filter nodes starting at a rotating index until enough feasible nodes are found (§10.6), score
//! them (unless exactly one is feasible), pick the highest total with ties broken uniformly at
//! random. When nothing fits, the rejection histogram and the preemption message become the
//! FitError. There is no I/O and no clock; randomness comes from the caller's seed.

use crate::filter::filter_node;
use crate::fit_error::{
    Diagnosis, FitError, PREEMPTION_POLICY_NEVER, preemption_message, prefilter_excluded_reason,
};
use crate::node_affinity::{ERR_REASON_CONFLICT, PreFilterNodes};
use crate::prepared::PreparedPod;
use crate::resources::PodRequests;
use crate::score::{
    WEIGHT_BALANCED_ALLOCATION, WEIGHT_IMAGE_LOCALITY, WEIGHT_NODE_AFFINITY,
    WEIGHT_NODE_RESOURCES_FIT, WEIGHT_TAINT_TOLERATION, balanced_allocation, image_locality,
    intolerable_prefer_no_schedule, least_allocated, normalize_one, preferred_node_affinity,
    scaled_image_score,
};
use crate::snapshot::Snapshot;
use k8s_openapi::api::core::v1::Pod;

/// The scheduler name pods get when they name none.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// Below this many nodes every node is examined; it is also the floor of the sample.
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The floor of the adaptive percentage.
pub const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;

/// Tunables of a cycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScheduleOptions {
    /// `percentageOfNodesToScore`; 0 means adaptive (`max(5, 50 − n/125)`).
    pub percentage_of_nodes_to_score: u32,
}

/// A successful decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Index of the chosen node in the snapshot the decision was made on.
    pub node_index: usize,
    pub node_name: String,
    /// Where the next cycle should start filtering.
    pub next_start_index: usize,
    /// Nodes the filters ran on (feasible + rejected).
    pub evaluated: usize,
    /// Feasible nodes found (at most the sample size).
    pub feasible: usize,
    /// The winning weighted total; `None` when a single feasible node was taken unscored.
    pub score: Option<i64>,
    /// The pod's requests, to pass to [`Snapshot::add_pod`] when assuming.
    pub requests: PodRequests,
}

/// How many feasible nodes to find before scoring (upstream's `numFeasibleNodesToFind`).
/// `percentage` 0 is adaptive.
pub fn num_feasible_nodes_to_find(num_all_nodes: usize, percentage: u32) -> usize {
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND {
        return num_all_nodes;
    }
    let mut p = percentage as usize;
    if p == 0 {
        p = 50usize
            .saturating_sub(num_all_nodes / 125)
            .max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND);
    }
    let n = num_all_nodes * p / 100;
    n.max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Whether this scheduler should place the pod: it names `scheduler_name` (an absent or empty
/// `schedulerName` means `default-scheduler`), has no `nodeName` yet, has no scheduling gates,
/// and has not terminated (upstream's informer drops Succeeded/Failed pods). A pod being deleted
/// is still "ours"; upstream skips it at the start of the cycle with a `FailedScheduling` event
/// (`skip schedule deleting pod: NS/NAME`), which is the loop's business.
pub fn responsible_for(pod: &Pod, scheduler_name: &str) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let name = spec
        .scheduler_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_SCHEDULER_NAME);
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    name == scheduler_name
        && spec.node_name.as_deref().unwrap_or("").is_empty()
        && spec.scheduling_gates.as_ref().is_none_or(|g| g.is_empty())
        && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Schedules one pod with the default options (adaptive sampling).
pub fn schedule_one(
    pod: &Pod,
    snapshot: &Snapshot,
    start_index: usize,
    rng_seed: u64,
) -> Result<Placement, FitError> {
    let prepared = PreparedPod::new(pod);
    schedule_prepared(
        &prepared,
        snapshot,
        start_index,
        rng_seed,
        &ScheduleOptions::default(),
    )
}

/// The candidate nodes of a cycle after PreFilter.
enum Candidates {
    All(usize),
    Only(Vec<usize>),
}

impl Candidates {
    fn len(&self) -> usize {
        match self {
            Candidates::All(n) => *n,
            Candidates::Only(v) => v.len(),
        }
    }

    #[inline]
    fn get(&self, i: usize) -> usize {
        match self {
            Candidates::All(_) => i,
            Candidates::Only(v) => v[i],
        }
    }
}

/// Schedules an already prepared pod.
pub fn schedule_prepared(
    pod: &PreparedPod<'_>,
    snapshot: &Snapshot,
    start_index: usize,
    rng_seed: u64,
    options: &ScheduleOptions,
) -> Result<Placement, FitError> {
    let num_all = snapshot.num_nodes();
    if num_all == 0 {
        return Err(FitError::no_nodes(start_index));
    }
    let nodes = snapshot.nodes();

    // PreFilter.
    let candidates = match &pod.prefilter {
        PreFilterNodes::All => Candidates::All(num_all),
        PreFilterNodes::Only(names) => Candidates::Only(
            names
                .iter()
                .filter_map(|n| snapshot.node_index(n))
                .collect(),
        ),
        PreFilterNodes::Conflict => {
            return Err(FitError {
                num_all_nodes: num_all,
                pre_filter_msg: Some(ERR_REASON_CONFLICT.to_string()),
                reasons: Default::default(),
                post_filter_msg: Some(post_filter(pod, num_all, 0, num_all)),
                unschedulable_plugins: vec!["NodeAffinity"],
                evaluated: 0,
                next_start_index: start_index % num_all,
            });
        }
    };

    // Filter, from the rotating start, until enough feasible nodes are found.
    let len = candidates.len();
    let to_find = num_feasible_nodes_to_find(len, options.percentage_of_nodes_to_score);
    let mut feasible: Vec<usize> = Vec::with_capacity(to_find.min(len));
    let mut diagnosis = Diagnosis::default();
    let start = if len == 0 { 0 } else { start_index % len };
    let mut processed = 0;
    for i in 0..len {
        if feasible.len() >= to_find {
            break;
        }
        let mut pos = start + i;
        if pos >= len {
            pos -= len;
        }
        let idx = candidates.get(pos);
        let node = &nodes[idx];
        processed += 1;
        match filter_node(pod, node) {
            Ok(()) => feasible.push(idx),
            Err(r) => diagnosis.record(&r, node),
        }
    }
    let next_start_index = (start_index + processed) % num_all;

    if feasible.is_empty() {
        let excluded = num_all - len;
        let mut reasons = diagnosis.histogram(pod);
        let mut plugins = diagnosis.plugins();
        if excluded > 0 {
            *reasons
                .entry(prefilter_excluded_reason(&["NodeAffinity"]))
                .or_insert(0) += excluded;
            if !plugins.contains(&"NodeAffinity") {
                plugins.push("NodeAffinity");
                plugins.sort_unstable();
            }
        }
        let no_victims = diagnosis.rejected - diagnosis.unresolvable;
        let not_helpful = diagnosis.unresolvable + excluded;
        return Err(FitError {
            num_all_nodes: num_all,
            pre_filter_msg: None,
            reasons,
            post_filter_msg: Some(post_filter(pod, num_all, no_victims, not_helpful)),
            unschedulable_plugins: plugins,
            evaluated: processed,
            next_start_index,
        });
    }

    let (chosen, score) = if feasible.len() == 1 {
        (feasible[0], None)
    } else {
        let (i, s) = select_host(pod, snapshot, &feasible, rng_seed);
        (i, Some(s))
    };
    Ok(Placement {
        node_index: chosen,
        node_name: nodes[chosen].name.clone(),
        next_start_index,
        evaluated: processed,
        feasible: feasible.len(),
        score,
        requests: pod.requests.clone(),
    })
}

/// The preemption PostFilter's message.
fn post_filter(
    pod: &PreparedPod<'_>,
    num_all: usize,
    no_victims: usize,
    not_helpful: usize,
) -> String {
    if pod.preemption_never {
        format!("preemption: {PREEMPTION_POLICY_NEVER}")
    } else {
        preemption_message(num_all, no_victims, not_helpful)
    }
}

/// Raw per-node scores before normalisation.
struct Raw {
    /// Σ weight × score of the plugins that need no normalisation.
    base: i64,
    taint: i64,
    affinity: i64,
}

/// Scores the feasible nodes and picks the best; ties are broken uniformly at random by
/// reservoir sampling. Returns the node index and its total.
fn select_host(
    pod: &PreparedPod<'_>,
    snapshot: &Snapshot,
    feasible: &[usize],
    seed: u64,
) -> (usize, i64) {
    let nodes = snapshot.nodes();
    let total_nodes = snapshot.num_nodes();
    let images: Vec<(u32, i64)> = pod
        .images
        .iter()
        .filter_map(|name| {
            snapshot
                .image(name)
                .map(|(id, st)| (id, scaled_image_score(st.size, st.nodes, total_nodes)))
        })
        .collect();
    let use_affinity = !pod.preferred_affinity.is_empty();
    let req = &pod.requests;

    let mut raw: Vec<Raw> = Vec::with_capacity(feasible.len());
    let (mut max_taint, mut max_affinity) = (0i64, 0i64);
    for &idx in feasible {
        let node = &nodes[idx];
        let mut base = WEIGHT_NODE_RESOURCES_FIT * least_allocated(req, node);
        base += WEIGHT_BALANCED_ALLOCATION * balanced_allocation(req, node).unwrap_or(0);
        if !images.is_empty() {
            base += WEIGHT_IMAGE_LOCALITY * image_locality(&images, pod.num_containers, node);
        }
        let taint = intolerable_prefer_no_schedule(pod, node);
        let affinity = if use_affinity {
            preferred_node_affinity(pod, node)
        } else {
            0
        };
        max_taint = max_taint.max(taint);
        max_affinity = max_affinity.max(affinity);
        raw.push(Raw {
            base,
            taint,
            affinity,
        });
    }

    let mut rng = Rng::new(seed);
    let mut best = i64::MIN;
    let mut chosen = feasible[0];
    let mut ties = 0u64;
    for (r, &idx) in raw.iter().zip(feasible) {
        let total = r.base
            + WEIGHT_TAINT_TOLERATION * normalize_one(r.taint, max_taint, true)
            + WEIGHT_NODE_AFFINITY * normalize_one(r.affinity, max_affinity, false);
        if total > best {
            best = total;
            chosen = idx;
            ties = 1;
        } else if total == best {
            ties += 1;
            if rng.below(ties) == 0 {
                chosen = idx;
            }
        }
    }
    (chosen, best)
}

/// A small xorshift64* generator: deterministic for a seed, good enough to spread ties.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 so that nearby seeds (and 0) give unrelated, non-zero states.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::tests::{node, node_json};
    use k8s_openapi::api::core::v1::Node;
    use serde_json::json;
    use std::collections::BTreeSet;

    fn pod(spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        if spec.get("containers").is_none() {
            spec["containers"] = json!([{"name": "c", "image": "x"}]);
        }
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    fn cpu_pod(cpu: &str) -> Pod {
        pod(
            json!({"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]}),
        )
    }

    fn nodes(n: usize) -> Vec<Node> {
        (0..n).map(|i| node(&format!("n{i}"), "4", "8Gi")).collect()
    }

    #[test]
    fn sampling_counts() {
        assert_eq!(num_feasible_nodes_to_find(0, 0), 0);
        assert_eq!(num_feasible_nodes_to_find(50, 0), 50);
        assert_eq!(num_feasible_nodes_to_find(99, 0), 99);
        // 100 nodes: 50 - 0 = 50% -> 50 -> raised to the floor of 100.
        assert_eq!(num_feasible_nodes_to_find(100, 0), 100);
        // 1000 nodes: 50 - 8 = 42% -> 420.
        assert_eq!(num_feasible_nodes_to_find(1000, 0), 420);
        // 5000 nodes: max(5, 50 - 40) = 10% -> 500.
        assert_eq!(num_feasible_nodes_to_find(5000, 0), 500);
        // 6000 nodes: 50 - 48 = 2 -> 5% -> 300.
        assert_eq!(num_feasible_nodes_to_find(6000, 0), 300);
        // Explicit percentage.
        assert_eq!(num_feasible_nodes_to_find(5000, 30), 1500);
        assert_eq!(num_feasible_nodes_to_find(1000, 5), 100);
    }

    #[test]
    fn stops_after_enough_feasible_nodes_and_rotates() {
        let s = Snapshot::from_nodes(&nodes(5000));
        let p = cpu_pod("100m");
        let r = schedule_one(&p, &s, 4900, 1).unwrap();
        assert_eq!(r.feasible, 500);
        assert_eq!(r.evaluated, 500);
        assert_eq!(r.next_start_index, (4900 + 500) % 5000);
        // The chosen node is among the examined ones (4900..5000 and 0..400).
        assert!(r.node_index >= 4900 || r.node_index < 400);
    }

    #[test]
    fn rejected_nodes_count_as_evaluated() {
        let mut all = nodes(200);
        for n in all.iter_mut().take(50) {
            n.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
                unschedulable: Some(true),
                ..Default::default()
            });
        }
        let s = Snapshot::from_nodes(&all);
        // 200 nodes: 48% -> 96 -> 100 feasible wanted.
        let r = schedule_one(&cpu_pod("100m"), &s, 0, 1).unwrap();
        assert_eq!(r.feasible, 100);
        assert_eq!(r.evaluated, 150);
        assert_eq!(r.next_start_index, 150);
    }

    #[test]
    fn ties_are_spread_by_seed() {
        let s = Snapshot::from_nodes(&nodes(20));
        let p = cpu_pod("100m");
        let picks: BTreeSet<usize> = (0..200)
            .map(|seed| schedule_one(&p, &s, 0, seed).unwrap().node_index)
            .collect();
        // 20 identical nodes, 200 seeds: nearly every node gets picked at least once.
        assert!(picks.len() >= 15, "picks: {picks:?}");
        // Same seed, same answer.
        assert_eq!(
            schedule_one(&p, &s, 0, 7).unwrap().node_index,
            schedule_one(&p, &s, 0, 7).unwrap().node_index
        );
    }

    #[test]
    fn tie_break_is_roughly_uniform() {
        let s = Snapshot::from_nodes(&nodes(4));
        let p = cpu_pod("100m");
        let mut hist = [0usize; 4];
        for seed in 0..4000 {
            hist[schedule_one(&p, &s, 0, seed).unwrap().node_index] += 1;
        }
        for h in hist {
            assert!((850..1150).contains(&h), "{hist:?}");
        }
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node() {
        let mut s = Snapshot::from_nodes(&nodes(3));
        let busy = crate::resources::PodRequests::of(&cpu_pod("3"));
        s.add_pod(0, &busy);
        s.add_pod(1, &busy);
        let r = schedule_one(&cpu_pod("100m"), &s, 0, 3).unwrap();
        assert_eq!(r.node_name, "n2");
        assert!(r.score.is_some());
    }

    #[test]
    fn single_feasible_node_is_taken_unscored() {
        let mut all = nodes(3);
        all[1].metadata.labels = Some([("disk".to_string(), "ssd".to_string())].into());
        let s = Snapshot::from_nodes(&all);
        let r = schedule_one(&pod(json!({"nodeSelector": {"disk": "ssd"}})), &s, 0, 1).unwrap();
        assert_eq!(r.node_name, "n1");
        assert_eq!(r.score, None);
        assert_eq!(r.evaluated, 3);
    }

    #[test]
    fn preferred_affinity_and_prefer_no_schedule_steer_placement() {
        let mut all = nodes(3);
        all[2].metadata.labels = Some([("zone".to_string(), "b".to_string())].into());
        let s = Snapshot::from_nodes(&all);
        let p = pod(
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}}
            ]}}}),
        );
        for seed in 0..20 {
            assert_eq!(schedule_one(&p, &s, 0, seed).unwrap().node_name, "n2");
        }

        let soft = |name: &str| {
            node_json(json!({
                "metadata": {"name": name},
                "spec": {"taints": [{"key": "soft", "effect": "PreferNoSchedule"}]},
                "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                           "conditions": [{"type": "Ready", "status": "True"}]},
            }))
        };
        let s = Snapshot::from_nodes(&[soft("a"), node("b", "4", "8Gi"), soft("c")]);
        for seed in 0..20 {
            assert_eq!(
                schedule_one(&pod(json!({})), &s, 0, seed)
                    .unwrap()
                    .node_name,
                "b"
            );
        }
        // Tolerating it levels the field.
        let tol = pod(
            json!({"tolerations": [{"key": "soft", "operator": "Exists", "effect": "PreferNoSchedule"}]}),
        );
        let picks: BTreeSet<String> = (0..50)
            .map(|seed| schedule_one(&tol, &s, 0, seed).unwrap().node_name)
            .collect();
        assert_eq!(picks.len(), 3);
    }

    #[test]
    fn image_locality_steers_placement() {
        let with_image = |name: &str| {
            node_json(json!({
                "metadata": {"name": name},
                "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                           "conditions": [{"type": "Ready", "status": "True"}],
                           "images": [{"names": ["registry/app:v1"], "sizeBytes": 800i64 * 1024 * 1024}]},
            }))
        };
        let s = Snapshot::from_nodes(&[
            node("a", "4", "8Gi"),
            with_image("b"),
            node("c", "4", "8Gi"),
        ]);
        let p = pod(json!({"containers": [{"name": "c", "image": "registry/app:v1"}]}));
        for seed in 0..20 {
            assert_eq!(schedule_one(&p, &s, 0, seed).unwrap().node_name, "b");
        }
    }

    #[test]
    fn fit_error_insufficient_cpu_on_three_nodes() {
        let s = Snapshot::from_nodes(&nodes(3));
        let e = schedule_one(&cpu_pod("5"), &s, 1, 1).unwrap_err();
        assert_eq!(
            e.message(),
            "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
        );
        assert_eq!(e.evaluated, 3);
        assert_eq!(e.next_start_index, 1);
        assert_eq!(e.unschedulable_plugins, vec!["NodeResourcesFit"]);
    }

    #[test]
    fn fit_error_taint_and_memory() {
        let cp = node_json(json!({
            "metadata": {"name": "cp"},
            "spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }));
        let s = Snapshot::from_nodes(&[cp, node("w", "4", "1Gi")]);
        let p = pod(
            json!({"containers": [{"name": "c", "image": "x", "resources": {"requests": {"memory": "2Gi"}}}]}),
        );
        assert_eq!(
            schedule_one(&p, &s, 0, 1).unwrap_err().message(),
            "0/2 nodes are available: 1 Insufficient memory, 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }. preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn fit_error_counts_sort_as_strings() {
        let mut all = nodes(12);
        for n in all.iter_mut().take(10) {
            n.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
                unschedulable: Some(true),
                ..Default::default()
            });
        }
        let s = Snapshot::from_nodes(&all);
        let e = schedule_one(&cpu_pod("5"), &s, 0, 1).unwrap_err();
        assert_eq!(
            e.message(),
            "0/12 nodes are available: 10 node(s) were unschedulable, 2 Insufficient cpu. preemption: 0/12 nodes are available: 10 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
        );
    }

    #[test]
    fn fit_error_too_many_pods_and_not_ready() {
        let full = node_json(json!({
            "metadata": {"name": "full"},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "0"},
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }));
        let down = node_json(json!({
            "metadata": {"name": "down"},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "False"}]},
        }));
        let s = Snapshot::from_nodes(&[full, down]);
        assert_eq!(
            schedule_one(&pod(json!({})), &s, 0, 1)
                .unwrap_err()
                .message(),
            "0/2 nodes are available: 1 Too many pods, 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }. preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn fit_error_with_no_nodes() {
        let s = Snapshot::new();
        let e = schedule_one(&pod(json!({})), &s, 0, 1).unwrap_err();
        assert_eq!(e.message(), "no nodes available to schedule pods");
    }

    #[test]
    fn preemption_policy_never() {
        let s = Snapshot::from_nodes(&nodes(1));
        let mut p = cpu_pod("5");
        p.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
        assert_eq!(
            schedule_one(&p, &s, 0, 1).unwrap_err().message(),
            "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
        );
    }

    #[test]
    fn daemonset_style_node_pinning() {
        let s = Snapshot::from_nodes(&[
            node("a", "1", "1Gi"),
            node("b", "1", "1Gi"),
            node("c", "1", "1Gi"),
        ]);
        let pinned = |cpu: &str, name: &str| {
            pod(json!({
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [name]}]}
                ]}}},
                "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": cpu}}}],
            }))
        };
        let r = schedule_one(&pinned("100m", "b"), &s, 0, 1).unwrap();
        assert_eq!(r.node_name, "b");
        assert_eq!(r.evaluated, 1);
        let e = schedule_one(&pinned("2", "b"), &s, 0, 1).unwrap_err();
        assert_eq!(
            e.message(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't satisfy plugin(s) [NodeAffinity]. preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling."
        );
        // A name that does not exist.
        let e = schedule_one(&pinned("100m", "zzz"), &s, 0, 1).unwrap_err();
        assert_eq!(
            e.message(),
            "0/3 nodes are available: 3 node(s) didn't satisfy plugin(s) [NodeAffinity]. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn conflicting_name_pins() {
        let s = Snapshot::from_nodes(&nodes(2));
        let p = pod(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": ["n0"]},
                    {"key": "metadata.name", "operator": "In", "values": ["n1"]},
                ]}
            ]}}}}),
        );
        assert_eq!(
            schedule_one(&p, &s, 0, 1).unwrap_err().message(),
            "0/2 nodes are available: pod affinity terms conflict. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn assumed_pods_prevent_overcommit_in_a_burst() {
        let mut s = Snapshot::from_nodes(&nodes(3));
        let p = cpu_pod("1");
        let mut placed = 0;
        for seed in 0..20 {
            match schedule_one(&p, &s, 0, seed) {
                Ok(pl) => {
                    assert!(s.add_pod(pl.node_index, &pl.requests));
                    placed += 1;
                }
                Err(e) => assert!(
                    e.message()
                        .starts_with("0/3 nodes are available: 3 Insufficient cpu.")
                ),
            }
        }
        // 3 nodes × 4 cpu.
        assert_eq!(placed, 12);
        for n in s.nodes() {
            assert_eq!(n.requested.milli_cpu, 4000);
        }
    }

    #[test]
    fn responsibility() {
        assert!(responsible_for(&pod(json!({})), DEFAULT_SCHEDULER_NAME));
        assert!(responsible_for(
            &pod(json!({"schedulerName": "default-scheduler"})),
            "default-scheduler"
        ));
        assert!(!responsible_for(
            &pod(json!({"schedulerName": "other"})),
            "default-scheduler"
        ));
        assert!(responsible_for(
            &pod(json!({"schedulerName": "other"})),
            "other"
        ));
        assert!(!responsible_for(
            &pod(json!({"nodeName": "n"})),
            "default-scheduler"
        ));
        assert!(!responsible_for(
            &pod(json!({"schedulingGates": [{"name": "g"}]})),
            "default-scheduler"
        ));
        assert!(responsible_for(
            &pod(json!({"schedulingGates": []})),
            "default-scheduler"
        ));
        let mut done = pod(json!({}));
        done.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        assert!(!responsible_for(&done, "default-scheduler"));
    }
}
