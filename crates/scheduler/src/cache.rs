//! The snapshot plus the pods counted in it, including the ones the scheduler has only assumed.
//!
//! After a decision the scheduler does not wait for the binding to come back through the watch:
//! it *assumes* the pod onto the node at once, so the next decision in a burst already sees the
//! node's resources as taken. The binding then either shows up as a bound pod (the assumption is
//! confirmed and the pod is not counted twice) or fails (the assumption is forgotten and the
//! resources freed). This type keeps that bookkeeping pure; the loop feeds it informer events.
//!
//! Invariant: the snapshot counts exactly the cached pods (assumed or bound) whose node is in the
//! snapshot, each once, with the requests it was cached with. A pod seen on a node the snapshot
//! does not have yet is remembered and counted when the node arrives.

use crate::resources::PodRequests;
use crate::snapshot::Snapshot;
use k8s_openapi::api::core::v1::Node;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
struct CachedPod {
    node: String,
    requests: PodRequests,
    assumed: bool,
}

/// Why an assumption was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheError {
    /// The pod is already assumed or bound.
    AlreadyCached,
    /// The node is not in the snapshot.
    NoSuchNode,
}

/// What [`ClusterCache::apply_node`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeChange {
    Added,
    /// A field the filters or scores read changed.
    Updated,
    /// Nothing a scheduling decision reads changed (e.g. a heartbeat).
    Unchanged,
}

/// Snapshot + pod ledger.
#[derive(Debug, Clone, Default)]
pub struct ClusterCache {
    snapshot: Snapshot,
    pods: HashMap<String, CachedPod>,
}

impl ClusterCache {
    pub fn new() -> ClusterCache {
        ClusterCache::default()
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Adds or updates a node; a new node starts with the cached pods that name it.
    pub fn upsert_node(&mut self, node: &Node) -> usize {
        let name = node.metadata.name.as_deref().unwrap_or("");
        let is_new = self.snapshot.node_index(name).is_none();
        let idx = self.snapshot.upsert_node(node);
        if is_new {
            for p in self.pods.values().filter(|p| p.node == name) {
                self.snapshot.add_pod(idx, &p.requests);
            }
        }
        idx
    }

    /// [`ClusterCache::upsert_node`], telling whether the change can make a pod that did not fit
    /// fit now: a new node, or an update of a field the filters read (upstream's NodeAdd and
    /// NodeUpdate cluster events). A heartbeat that changes nothing else is not such a change.
    pub fn apply_node(&mut self, node: &Node) -> NodeChange {
        let name = node.metadata.name.as_deref().unwrap_or("");
        let before = self.snapshot.get(name).cloned();
        let idx = self.upsert_node(node);
        match before {
            None => NodeChange::Added,
            Some(b) if b.same_for_scheduling(&self.snapshot.nodes()[idx]) => NodeChange::Unchanged,
            Some(_) => NodeChange::Updated,
        }
    }

    /// Every cached pod: `(key, node, assumed)`.
    pub fn pods(&self) -> impl Iterator<Item = (&str, &str, bool)> {
        self.pods
            .iter()
            .map(|(k, p)| (k.as_str(), p.node.as_str(), p.assumed))
    }

    /// Removes a node. Its pods stay cached and are counted again if the node comes back.
    pub fn remove_node(&mut self, name: &str) -> bool {
        self.snapshot.remove_node(name).is_some()
    }

    /// Counts an in-flight decision: `key` is placed on `node` until confirmed or forgotten.
    pub fn assume(
        &mut self,
        key: &str,
        node: &str,
        requests: PodRequests,
    ) -> Result<(), CacheError> {
        if self.pods.contains_key(key) {
            return Err(CacheError::AlreadyCached);
        }
        let idx = self
            .snapshot
            .node_index(node)
            .ok_or(CacheError::NoSuchNode)?;
        self.snapshot.add_pod(idx, &requests);
        self.pods.insert(
            key.to_string(),
            CachedPod {
                node: node.to_string(),
                requests,
                assumed: true,
            },
        );
        Ok(())
    }

    /// The binding failed: stop counting an assumed pod. Returns false if it was not assumed.
    pub fn forget(&mut self, key: &str) -> bool {
        if !self.pods.get(key).is_some_and(|p| p.assumed) {
            return false;
        }
        self.uncount(key);
        true
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|p| p.assumed)
    }

    /// Whether the pod is counted (assumed or bound).
    pub fn contains(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    /// The node the pod is counted on.
    pub fn node_of(&self, key: &str) -> Option<&str> {
        self.pods.get(key).map(|p| p.node.as_str())
    }

    /// An informer saw the pod bound to `node` (added or updated, not terminated). Confirms an
    /// assumption on the same node; otherwise (re)counts the pod with these requests.
    pub fn observe_bound(&mut self, key: &str, node: &str, requests: PodRequests) {
        if let Some(p) = self.pods.get_mut(key)
            && p.node == node
            && p.requests == requests
        {
            p.assumed = false;
            return;
        }
        self.uncount(key);
        if let Some(idx) = self.snapshot.node_index(node) {
            self.snapshot.add_pod(idx, &requests);
        }
        self.pods.insert(
            key.to_string(),
            CachedPod {
                node: node.to_string(),
                requests,
                assumed: false,
            },
        );
    }

    /// The pod was deleted or terminated: stop counting it.
    pub fn observe_gone(&mut self, key: &str) -> bool {
        self.uncount(key)
    }

    /// Number of cached pods (assumed and bound).
    pub fn num_pods(&self) -> usize {
        self.pods.len()
    }

    fn uncount(&mut self, key: &str) -> bool {
        let Some(p) = self.pods.remove(key) else {
            return false;
        };
        if let Some(idx) = self.snapshot.node_index(&p.node) {
            self.snapshot.remove_pod(idx, &p.requests);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resources;
    use crate::snapshot::tests::node;

    fn req(cpu: i64) -> PodRequests {
        let r = Resources {
            milli_cpu: cpu,
            memory: 0,
            ephemeral_storage: 0,
            pods: 1,
        };
        PodRequests {
            requests: r,
            non_zero: r,
            scalar: vec![],
        }
    }

    fn cpu_on(c: &ClusterCache, n: &str) -> i64 {
        c.snapshot().get(n).unwrap().requested.milli_cpu
    }

    #[test]
    fn assume_confirm_forget() {
        let mut c = ClusterCache::new();
        c.upsert_node(&node("a", "4", "8Gi"));
        c.assume("ns/p", "a", req(500)).unwrap();
        assert_eq!(cpu_on(&c, "a"), 500);
        assert!(c.is_assumed("ns/p"));
        assert_eq!(
            c.assume("ns/p", "a", req(500)),
            Err(CacheError::AlreadyCached)
        );
        assert_eq!(c.assume("ns/q", "zzz", req(1)), Err(CacheError::NoSuchNode));
        // Binding confirmed: not counted twice.
        c.observe_bound("ns/p", "a", req(500));
        assert!(!c.is_assumed("ns/p"));
        assert_eq!(cpu_on(&c, "a"), 500);
        assert!(!c.forget("ns/p"));
        // Another assumption fails to bind.
        c.assume("ns/q", "a", req(300)).unwrap();
        assert_eq!(cpu_on(&c, "a"), 800);
        assert!(c.forget("ns/q"));
        assert_eq!(cpu_on(&c, "a"), 500);
        assert!(c.observe_gone("ns/p"));
        assert_eq!(cpu_on(&c, "a"), 0);
        assert_eq!(c.snapshot().get("a").unwrap().pod_count(), 0);
    }

    #[test]
    fn bound_elsewhere_moves_the_pod() {
        let mut c = ClusterCache::new();
        c.upsert_node(&node("a", "4", "8Gi"));
        c.upsert_node(&node("b", "4", "8Gi"));
        c.assume("p", "a", req(500)).unwrap();
        c.observe_bound("p", "b", req(500));
        assert_eq!(cpu_on(&c, "a"), 0);
        assert_eq!(cpu_on(&c, "b"), 500);
    }

    #[test]
    fn node_changes_that_matter() {
        let mut c = ClusterCache::new();
        let mut n = node("a", "4", "8Gi");
        assert_eq!(c.apply_node(&n), NodeChange::Added);
        assert_eq!(c.apply_node(&n), NodeChange::Unchanged);
        c.assume("p", "a", req(100)).unwrap();
        // A heartbeat (only timestamps move) is not a change; counted pods are kept.
        n.metadata.resource_version = Some("7".into());
        assert_eq!(c.apply_node(&n), NodeChange::Unchanged);
        assert_eq!(cpu_on(&c, "a"), 100);
        n.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        assert_eq!(c.apply_node(&n), NodeChange::Updated);
        let pods: Vec<_> = c.pods().collect();
        assert_eq!(pods, vec![("p", "a", true)]);
    }

    #[test]
    fn pods_before_nodes_and_node_removal() {
        let mut c = ClusterCache::new();
        c.observe_bound("p", "late", req(700));
        c.upsert_node(&node("late", "4", "8Gi"));
        assert_eq!(cpu_on(&c, "late"), 700);
        // Updating the node keeps the count.
        c.upsert_node(&node("late", "8", "8Gi"));
        assert_eq!(cpu_on(&c, "late"), 700);
        assert!(c.remove_node("late"));
        c.upsert_node(&node("late", "4", "8Gi"));
        assert_eq!(cpu_on(&c, "late"), 700);
        assert_eq!(c.num_pods(), 1);
    }
}
