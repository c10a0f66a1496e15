//! The scheduler's view of the cluster: one pre-digested [`NodeInfo`] per node.
//!
//! Filtering and scoring run once per pod against thousands of nodes, so everything that depends
//! only on the node is computed when the node changes, not when a pod is scheduled: quantities
//! are parsed, condition taints derived, the sums of the requests of the pods on the node kept up
//! to date, image names interned. A scheduling cycle then reads plain integers.
//!
//! Invariants (kept by every `&mut self` method; `NodeInfo` is only handed out by shared
//! reference):
//! * `nodes[index[name]].name == name` for every node, and `index` has exactly one entry per node.
//! * For every node, `requested`, `non_zero_requested` and `requested_scalar` are the sums of the
//!   [`PodRequests`] passed to [`Snapshot::add_pod`] minus those passed to
//!   [`Snapshot::remove_pod`] for that node; `requested.pods` is the number of such pods. Assumed
//!   pods (placed but not yet bound) count exactly like bound ones.
//! * `images[id].nodes` is the number of nodes whose `images` contain `id`; an image name is in
//!   `image_index` exactly when that number is positive. The size recorded for a name is the one
//!   reported by the first node that had it (upstream keeps one size per name the same way).
//! * `generation` grows on every change; each node remembers the generation of its last change.
//!
//! Node indices are stable until [`Snapshot::remove_node`], which moves the last node into the
//! removed node's slot.

use crate::resources::{PodRequests, Resources, is_scalar_resource_name};
use crate::taints::{Taint, TaintEffect, condition_taints, node_is_ready};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use skiff_core::quantity::Quantity;
use std::collections::{BTreeMap, HashMap};

/// Everything the filters and scores read about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The node's `spec.taints` followed by the `NoSchedule` taints its conditions imply (see
    /// [`crate::taints`]), without duplicates.
    pub taints: Vec<Taint>,
    /// Whether any taint has effect `PreferNoSchedule` (lets scoring skip the taint walk).
    pub has_prefer_no_schedule: bool,
    /// `spec.unschedulable` (`kubectl cordon`).
    pub unschedulable: bool,
    /// Whether the Ready condition is `True`.
    pub ready: bool,
    /// `status.allocatable` (or `status.capacity` when allocatable is absent, as the API server
    /// defaults it).
    pub allocatable: Resources,
    /// Allocatable scalar resources (extended, hugepages), sorted by name.
    pub allocatable_scalar: Vec<(String, i64)>,
    /// Σ effective requests of the pods on the node; `pods` is their number.
    pub requested: Resources,
    /// Σ scoring requests (100m / 200Mi defaults) of the pods on the node.
    pub non_zero_requested: Resources,
    /// Σ scalar requests of the pods on the node, sorted by name.
    pub requested_scalar: Vec<(String, i64)>,
    /// Interned ids of the image names the node reports, sorted.
    pub(crate) images: Vec<u32>,
    /// Snapshot generation of the last change to this node.
    pub generation: u64,
}

impl NodeInfo {
    /// Number of pods counted on the node (bound and assumed).
    pub fn pod_count(&self) -> i64 {
        self.requested.pods
    }

    /// Allocatable amount of a scalar resource (0 when the node does not have it).
    pub fn allocatable_scalar(&self, name: &str) -> i64 {
        lookup(&self.allocatable_scalar, name)
    }

    /// Requested amount of a scalar resource.
    pub fn requested_scalar(&self, name: &str) -> i64 {
        lookup(&self.requested_scalar, name)
    }

    /// Whether `other` describes the node the same way for filtering and scoring: labels, taints,
    /// cordon, readiness, allocatable and images. Counted pods and generations are ignored, so a
    /// heartbeat that only moves a condition's timestamps compares equal.
    pub fn same_for_scheduling(&self, other: &NodeInfo) -> bool {
        self.labels == other.labels
            && self.taints == other.taints
            && self.unschedulable == other.unschedulable
            && self.ready == other.ready
            && self.allocatable == other.allocatable
            && self.allocatable_scalar == other.allocatable_scalar
            && self.images == other.images
    }

    pub(crate) fn has_image(&self, id: u32) -> bool {
        self.images.binary_search(&id).is_ok()
    }
}

fn lookup(list: &[(String, i64)], name: &str) -> i64 {
    list.binary_search_by(|(n, _)| n.as_str().cmp(name))
        .map(|i| list[i].1)
        .unwrap_or(0)
}

/// One interned image name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageState {
    pub name: String,
    /// Size in bytes as first reported.
    pub size: i64,
    /// Number of nodes reporting this name.
    pub nodes: u32,
}

/// All nodes, indexable by position and by name, plus cluster-wide image spread.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    images: Vec<ImageState>,
    image_index: HashMap<String, u32>,
    free_image_ids: Vec<u32>,
    generation: u64,
}

impl Snapshot {
    pub fn new() -> Snapshot {
        Snapshot::default()
    }

    /// Builds a snapshot from nodes (no pods counted yet).
    pub fn from_nodes<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Snapshot {
        let mut s = Snapshot::new();
        for n in nodes {
            s.upsert_node(n);
        }
        s
    }

    pub fn num_nodes(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn node(&self, index: usize) -> Option<&NodeInfo> {
        self.nodes.get(index)
    }

    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn get(&self, name: &str) -> Option<&NodeInfo> {
        self.node_index(name).map(|i| &self.nodes[i])
    }

    /// Grows on every change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The interned id and state of an image name, if any node reports it.
    pub fn image(&self, name: &str) -> Option<(u32, &ImageState)> {
        let id = *self.image_index.get(name)?;
        Some((id, &self.images[id as usize]))
    }

    /// Adds a node or replaces the node-derived fields of an existing one, keeping the pods
    /// counted on it. Returns the node's index.
    pub fn upsert_node(&mut self, node: &Node) -> usize {
        let name = node.metadata.name.clone().unwrap_or_default();
        self.generation += 1;
        let images = self.intern_node_images(node);
        let fresh = node_fields(node, name.clone(), images, self.generation);
        match self.index.get(&name) {
            Some(&i) => {
                let old = std::mem::replace(&mut self.nodes[i], fresh);
                self.release_images(&old.images);
                let n = &mut self.nodes[i];
                n.requested = old.requested;
                n.non_zero_requested = old.non_zero_requested;
                n.requested_scalar = old.requested_scalar;
                i
            }
            None => {
                let i = self.nodes.len();
                self.nodes.push(fresh);
                self.index.insert(name, i);
                i
            }
        }
    }

    /// Removes a node; the last node takes its index. Returns the removed node.
    pub fn remove_node(&mut self, name: &str) -> Option<NodeInfo> {
        let i = self.index.remove(name)?;
        self.generation += 1;
        let removed = self.nodes.swap_remove(i);
        if let Some(moved) = self.nodes.get(i) {
            self.index.insert(moved.name.clone(), i);
        }
        self.release_images(&removed.images);
        Some(removed)
    }

    /// Counts a pod on a node (bound, or assumed by the scheduler). Returns false if there is no
    /// node at `index`.
    pub fn add_pod(&mut self, index: usize, pod: &PodRequests) -> bool {
        self.generation += 1;
        let generation = self.generation;
        let Some(n) = self.nodes.get_mut(index) else {
            return false;
        };
        n.requested.add(&pod.requests);
        n.non_zero_requested.add(&pod.non_zero);
        for (name, v) in &pod.scalar {
            add_scalar(&mut n.requested_scalar, name, *v);
        }
        n.generation = generation;
        true
    }

    /// Stops counting a pod on a node (deleted, or an assumed pod whose binding failed).
    pub fn remove_pod(&mut self, index: usize, pod: &PodRequests) -> bool {
        self.generation += 1;
        let generation = self.generation;
        let Some(n) = self.nodes.get_mut(index) else {
            return false;
        };
        n.requested.sub(&pod.requests);
        n.non_zero_requested.sub(&pod.non_zero);
        for (name, v) in &pod.scalar {
            add_scalar(&mut n.requested_scalar, name, -*v);
        }
        n.generation = generation;
        true
    }

    /// Rough heap + inline footprint in bytes (for capacity planning, not accounting).
    pub fn approx_memory_bytes(&self) -> usize {
        let s = |x: &String| x.capacity();
        let mut total = std::mem::size_of::<Snapshot>();
        total += self.nodes.capacity() * std::mem::size_of::<NodeInfo>();
        for n in &self.nodes {
            total += s(&n.name);
            // BTreeMap nodes: entries plus roughly 50% slack.
            total += n
                .labels
                .iter()
                .map(|(k, v)| s(k) + s(v) + 48 + 24)
                .sum::<usize>();
            total += n.taints.capacity() * std::mem::size_of::<Taint>();
            total += n
                .taints
                .iter()
                .map(|t| s(&t.key) + s(&t.value))
                .sum::<usize>();
            for list in [&n.allocatable_scalar, &n.requested_scalar] {
                total += list.capacity() * std::mem::size_of::<(String, i64)>();
                total += list.iter().map(|(k, _)| s(k)).sum::<usize>();
            }
            total += n.images.capacity() * 4;
        }
        // HashMap<String, usize>: key + value + control byte, ~1/0.875 load.
        total += self.index.capacity() * (std::mem::size_of::<(String, usize)>() + 1);
        total += self.index.keys().map(s).sum::<usize>();
        total += self.images.capacity() * std::mem::size_of::<ImageState>();
        total += self.images.iter().map(|i| s(&i.name)).sum::<usize>();
        total += self.image_index.capacity() * (std::mem::size_of::<(String, u32)>() + 1);
        total += self.image_index.keys().map(s).sum::<usize>();
        total
    }

    /// Interns the node's image names, bumping their node counts; returns the sorted, deduplicated
    /// ids.
    fn intern_node_images(&mut self, node: &Node) -> Vec<u32> {
        let mut ids: Vec<u32> = Vec::new();
        let images = node.status.as_ref().and_then(|s| s.images.as_deref());
        for image in images.unwrap_or(&[]) {
            let size = image.size_bytes.unwrap_or(0);
            for name in image.names.iter().flatten() {
                let id = match self.image_index.get(name) {
                    Some(&id) => id,
                    None => {
                        let state = ImageState {
                            name: name.clone(),
                            size,
                            nodes: 0,
                        };
                        let id = match self.free_image_ids.pop() {
                            Some(id) => {
                                self.images[id as usize] = state;
                                id
                            }
                            None => {
                                self.images.push(state);
                                u32::try_from(self.images.len() - 1).unwrap_or(u32::MAX)
                            }
                        };
                        self.image_index.insert(name.clone(), id);
                        id
                    }
                };
                if let Err(pos) = ids.binary_search(&id) {
                    ids.insert(pos, id);
                    self.images[id as usize].nodes += 1;
                }
            }
        }
        ids
    }

    fn release_images(&mut self, ids: &[u32]) {
        for &id in ids {
            let state = &mut self.images[id as usize];
            state.nodes -= 1;
            if state.nodes == 0 {
                let name = std::mem::take(&mut state.name);
                self.image_index.remove(&name);
                self.free_image_ids.push(id);
            }
        }
    }
}

fn add_scalar(list: &mut Vec<(String, i64)>, name: &str, v: i64) {
    match list.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
        Ok(i) => list[i].1 = list[i].1.saturating_add(v),
        Err(i) => list.insert(i, (name.to_string(), v)),
    }
}

/// The node-derived part of a `NodeInfo` (pods not counted).
fn node_fields(node: &Node, name: String, images: Vec<u32>, generation: u64) -> NodeInfo {
    let status = node.status.as_ref();
    let list = status
        .and_then(|s| s.allocatable.as_ref())
        .or_else(|| status.and_then(|s| s.capacity.as_ref()));
    let (allocatable, allocatable_scalar) = parse_allocatable(list);

    let spec = node.spec.as_ref();
    let mut taints: Vec<Taint> = spec
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
        .iter()
        .map(|t| Taint {
            key: t.key.clone(),
            value: t.value.clone().unwrap_or_default(),
            effect: TaintEffect::parse(&t.effect),
        })
        .collect();
    for t in condition_taints(node) {
        if !taints
            .iter()
            .any(|o| o.key == t.key && o.effect == t.effect)
        {
            taints.push(t);
        }
    }
    let has_prefer_no_schedule = taints
        .iter()
        .any(|t| t.effect == TaintEffect::PreferNoSchedule);

    NodeInfo {
        name,
        labels: node.metadata.labels.clone().unwrap_or_default(),
        taints,
        has_prefer_no_schedule,
        unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
        ready: node_is_ready(node),
        allocatable,
        allocatable_scalar,
        requested: Resources::default(),
        non_zero_requested: Resources::default(),
        requested_scalar: Vec::new(),
        images,
        generation,
    }
}

fn parse_allocatable(
    list: Option<&BTreeMap<String, ApiQuantity>>,
) -> (Resources, Vec<(String, i64)>) {
    let mut r = Resources::default();
    let mut scalar = Vec::new();
    for (name, q) in list.into_iter().flatten() {
        let Ok(q) = Quantity::parse(&q.0) else {
            continue;
        };
        let units = i64::try_from(q.value()).unwrap_or(i64::MAX);
        match name.as_str() {
            "cpu" => r.milli_cpu = i64::try_from(q.milli_value()).unwrap_or(i64::MAX),
            "memory" => r.memory = units,
            "ephemeral-storage" => r.ephemeral_storage = units,
            "pods" => r.pods = units,
            other if is_scalar_resource_name(other) => scalar.push((other.to_string(), units)),
            _ => {}
        }
    }
    (r, scalar)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A Ready node with the given allocatable cpu/memory and 110 pods.
    pub(crate) fn node(name: &str, cpu: &str, memory: &str) -> Node {
        node_json(json!({
            "metadata": {"name": name},
            "status": {
                "allocatable": {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "100Gi"},
                "conditions": [{"type": "Ready", "status": "True"}],
            }
        }))
    }

    pub(crate) fn node_json(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    fn with_images(name: &str, images: serde_json::Value) -> Node {
        let mut n = node(name, "1", "1Gi");
        let v = serde_json::to_value(&n).unwrap();
        let mut v = v;
        v["status"]["images"] = images;
        n = node_json(v);
        n
    }

    fn reqs(cpu: i64, mem: i64) -> PodRequests {
        PodRequests {
            requests: Resources {
                milli_cpu: cpu,
                memory: mem,
                ephemeral_storage: 0,
                pods: 1,
            },
            non_zero: Resources {
                milli_cpu: cpu.max(100),
                memory: mem.max(200 << 20),
                ephemeral_storage: 0,
                pods: 1,
            },
            scalar: vec![("example.com/gpu".into(), 1)],
        }
    }

    #[test]
    fn parses_allocatable_and_falls_back_to_capacity() {
        let s = Snapshot::from_nodes(&[node("a", "32", "256Gi")]);
        let n = s.get("a").unwrap();
        assert_eq!(n.allocatable.milli_cpu, 32_000);
        assert_eq!(n.allocatable.memory, 256 << 30);
        assert_eq!(n.allocatable.pods, 110);
        assert!(n.ready);
        assert!(n.taints.is_empty());

        let cap = node_json(json!({
            "metadata": {"name": "b"},
            "status": {"capacity": {"cpu": "2", "pods": "10", "example.com/gpu": "4"}},
        }));
        let s = Snapshot::from_nodes(&[cap]);
        let n = s.get("b").unwrap();
        assert_eq!(n.allocatable.milli_cpu, 2000);
        assert_eq!(n.allocatable.pods, 10);
        assert_eq!(n.allocatable_scalar("example.com/gpu"), 4);
        // No Ready condition: the registration taint is emulated.
        assert!(!n.ready);
        assert_eq!(n.taints[0].key, crate::taints::TAINT_NODE_NOT_READY);
    }

    #[test]
    fn add_and_remove_pods_keep_sums() {
        let mut s = Snapshot::from_nodes(&[node("a", "4", "8Gi"), node("b", "4", "8Gi")]);
        let g0 = s.generation();
        let i = s.node_index("b").unwrap();
        s.add_pod(i, &reqs(500, 1 << 30));
        s.add_pod(i, &reqs(0, 0));
        let n = s.node(i).unwrap();
        assert_eq!(n.pod_count(), 2);
        assert_eq!(n.requested.milli_cpu, 500);
        assert_eq!(n.non_zero_requested.milli_cpu, 600);
        assert_eq!(n.requested_scalar("example.com/gpu"), 2);
        assert!(s.generation() > g0);
        s.remove_pod(i, &reqs(500, 1 << 30));
        let n = s.node(i).unwrap();
        assert_eq!(n.pod_count(), 1);
        assert_eq!(n.requested.milli_cpu, 0);
        assert_eq!(n.non_zero_requested.memory, 200 << 20);
        assert!(!s.add_pod(99, &reqs(1, 1)));
    }

    #[test]
    fn upsert_keeps_pods_and_remove_reindexes() {
        let mut s = Snapshot::from_nodes(&[
            node("a", "4", "8Gi"),
            node("b", "4", "8Gi"),
            node("c", "4", "8Gi"),
        ]);
        s.add_pod(0, &reqs(100, 0));
        s.upsert_node(&node("a", "8", "8Gi"));
        let a = s.get("a").unwrap();
        assert_eq!(a.allocatable.milli_cpu, 8000);
        assert_eq!(a.requested.milli_cpu, 100);
        assert!(s.remove_node("a").is_some());
        assert_eq!(s.num_nodes(), 2);
        assert_eq!(s.node_index("c"), Some(0));
        assert_eq!(s.node(0).unwrap().name, "c");
        assert_eq!(s.node_index("b"), Some(1));
        assert!(s.remove_node("a").is_none());
    }

    #[test]
    fn image_spread_counts_nodes_per_name() {
        let img = |names: &[&str], size: i64| json!({"names": names, "sizeBytes": size});
        let mut s = Snapshot::from_nodes(&[
            with_images("a", json!([img(&["nginx:1.25", "nginx@sha256:x"], 100)])),
            with_images(
                "b",
                json!([img(&["nginx:1.25"], 999), img(&["redis:7"], 50)]),
            ),
        ]);
        let (_, st) = s.image("nginx:1.25").unwrap();
        assert_eq!((st.size, st.nodes), (100, 2));
        assert_eq!(s.image("redis:7").unwrap().1.nodes, 1);
        s.upsert_node(&with_images("b", json!([])));
        assert_eq!(s.image("nginx:1.25").unwrap().1.nodes, 1);
        assert!(s.image("redis:7").is_none());
        s.remove_node("a");
        assert!(s.image("nginx:1.25").is_none());
        // Freed ids are reused.
        s.upsert_node(&with_images("c", json!([img(&["busybox"], 5)])));
        let (id, _) = s.image("busybox").unwrap();
        assert!(id <= 2);
        assert!(s.get("c").unwrap().has_image(id));
    }

    #[test]
    fn spec_taints_come_first_and_condition_taints_are_not_duplicated() {
        let n = node_json(json!({
            "metadata": {"name": "n"},
            "spec": {"taints": [
                {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"},
                {"key": "dedicated", "value": "db", "effect": "PreferNoSchedule"},
            ]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]},
        }));
        let s = Snapshot::from_nodes(&[n]);
        let n = s.get("n").unwrap();
        assert_eq!(n.taints.len(), 2);
        assert!(n.has_prefer_no_schedule);
    }
}
