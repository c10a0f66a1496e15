//! What a pod asks of a node, computed once per pod.
//!
//! The filter compares a pod's *effective* requests (§8.3 of the pod-lifecycle spec: app
//! containers plus sidecars, or the peak of the init phase, whichever is larger, plus overhead)
//! with what a node has left. LeastAllocated scoring uses a second figure in which a container
//! that names no cpu or memory request counts as 100m / 200Mi, so a node full of BestEffort pods
//! does not look empty. Both figures come out of one pass over the containers, and quantity
//! strings are parsed here and nowhere else in the hot path.

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use skiff_core::quantity::Quantity;
use std::collections::BTreeMap;

/// CPU a container without a cpu request counts as, for LeastAllocated scoring only (millicores).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory a container without a memory request counts as, for scoring only (bytes).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Amounts of the resources every node has. CPU in millicores, memory and ephemeral storage in
/// bytes, pods as a count. For a node's allocatable, `pods` is the pod capacity; for a node's
/// requested, the number of pods counted on it; for one pod's requests, always 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub pods: i64,
}

impl Resources {
    /// Adds `other` field by field (saturating: absurd quantities must not wrap).
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.ephemeral_storage = self
            .ephemeral_storage
            .saturating_add(other.ephemeral_storage);
        self.pods = self.pods.saturating_add(other.pods);
    }

    /// Subtracts `other` field by field (the inverse of [`Resources::add`]).
    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_sub(other.milli_cpu);
        self.memory = self.memory.saturating_sub(other.memory);
        self.ephemeral_storage = self
            .ephemeral_storage
            .saturating_sub(other.ephemeral_storage);
        self.pods = self.pods.saturating_sub(other.pods);
    }
}

/// Everything the scheduler needs to know about one pod's resource demand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRequests {
    /// Effective requests per §8.3 (what the filter checks and the node's `requested` grows by);
    /// `pods` is 1.
    pub requests: Resources,
    /// The same computation with the 100m / 200Mi defaults applied to every container (init
    /// containers included) that does not name cpu or memory; `ephemeral_storage` and `pods` equal
    /// those of `requests`.
    pub non_zero: Resources,
    /// Extended resources, hugepages and other scalar resources with a non-zero effective
    /// request, sorted by name (value in whole units, rounded up).
    pub scalar: Vec<(String, i64)>,
}

impl PodRequests {
    /// Computes both figures for `pod` in one pass.
    pub fn of(pod: &Pod) -> PodRequests {
        let Some(spec) = pod.spec.as_ref() else {
            return PodRequests {
                requests: ONE_POD,
                non_zero: ONE_POD,
                scalar: Vec::new(),
            };
        };
        let mut total = Amounts::default();
        for c in &spec.containers {
            total.add(&Amounts::of(c));
        }
        // §8.3: sidecars add to the total and stay running for every later init container;
        // a regular init container needs its own request on top of the sidecars started before it.
        let mut sidecars = Amounts::default();
        let mut init_peak = Amounts::default();
        for c in spec.init_containers.iter().flatten() {
            let own = Amounts::of(c);
            if is_sidecar(c) {
                total.add(&own);
                sidecars.add(&own);
                init_peak.max_with(&sidecars);
            } else {
                let mut candidate = own;
                candidate.add(&sidecars);
                init_peak.max_with(&candidate);
            }
        }
        total.max_with(&init_peak);
        if let Some(overhead) = spec.overhead.as_ref() {
            total.add(&Amounts::from_list(Some(overhead)));
        }
        total.finish()
    }

    /// True when the pod requests no cpu, memory, ephemeral storage or scalar resource at all.
    pub fn is_best_effort(&self) -> bool {
        self.requests.milli_cpu == 0
            && self.requests.memory == 0
            && self.requests.ephemeral_storage == 0
            && self.scalar.is_empty()
    }
}

const ONE_POD: Resources = Resources {
    milli_cpu: 0,
    memory: 0,
    ephemeral_storage: 0,
    pods: 1,
};

/// The effective requests of `pod` (§8.3), `pods` = 1.
pub fn pod_requests(pod: &Pod) -> Resources {
    PodRequests::of(pod).requests
}

/// The scoring-only variant of [`pod_requests`]: containers without a cpu (memory) request count
/// as 100m (200Mi). A request that is present, even `0`, is kept as written.
pub fn pod_non_zero_requests(pod: &Pod) -> Resources {
    PodRequests::of(pod).non_zero
}

/// Whether `name` is a scalar resource the scheduler accounts for besides cpu, memory,
/// ephemeral-storage and pods: extended resources (`example.com/gpu`), prefixed native resources
/// (`kubernetes.io/...`), hugepages and attachable volumes. Anything else (`storage`, typos
/// without a domain) is ignored, as upstream does.
pub fn is_scalar_resource_name(name: &str) -> bool {
    if name.starts_with("requests.") {
        return false;
    }
    name.contains('/') || name.starts_with("hugepages-") || name.starts_with("attachable-volumes-")
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Parses one quantity, treating garbage as 0 (the API server rejects it on create anyway).
fn milli(q: &ApiQuantity) -> i128 {
    Quantity::parse(&q.0).map(|q| q.milli_value()).unwrap_or(0)
}

/// Running sums in exact milli-units, so rounding happens once at the end as upstream does
/// (`Quantity.Value()` of the summed quantity).
#[derive(Debug, Clone, Default)]
struct Amounts {
    cpu: i128,
    memory: i128,
    ephemeral: i128,
    /// `cpu`/`memory` with the non-zero defaults applied per container.
    cpu_nz: i128,
    memory_nz: i128,
    /// Sorted by name.
    scalar: Vec<(String, i128)>,
}

impl Amounts {
    fn of(c: &Container) -> Amounts {
        let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let mut a = Amounts::from_list(requests);
        let has = |k: &str| requests.is_some_and(|r| r.contains_key(k));
        a.cpu_nz = if has("cpu") {
            a.cpu
        } else {
            i128::from(DEFAULT_MILLI_CPU_REQUEST)
        };
        a.memory_nz = if has("memory") {
            a.memory
        } else {
            i128::from(DEFAULT_MEMORY_REQUEST) * 1000
        };
        a
    }

    /// A resource list without any defaults (`cpu_nz`/`memory_nz` equal the plain values).
    fn from_list(list: Option<&BTreeMap<String, ApiQuantity>>) -> Amounts {
        let mut a = Amounts::default();
        for (name, q) in list.into_iter().flatten() {
            match name.as_str() {
                "cpu" => a.cpu = milli(q),
                "memory" => a.memory = milli(q),
                "ephemeral-storage" => a.ephemeral = milli(q),
                other if is_scalar_resource_name(other) => {
                    // BTreeMap iteration is sorted, so pushing keeps `scalar` sorted.
                    a.scalar.push((other.to_string(), milli(q)));
                }
                _ => {}
            }
        }
        a.cpu_nz = a.cpu;
        a.memory_nz = a.memory;
        a
    }

    fn add(&mut self, o: &Amounts) {
        self.cpu += o.cpu;
        self.memory += o.memory;
        self.ephemeral += o.ephemeral;
        self.cpu_nz += o.cpu_nz;
        self.memory_nz += o.memory_nz;
        merge_scalar(&mut self.scalar, &o.scalar, |a, b| a + b);
    }

    /// Per-resource maximum (each resource independently, as upstream's `maxResourceList`).
    fn max_with(&mut self, o: &Amounts) {
        self.cpu = self.cpu.max(o.cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral = self.ephemeral.max(o.ephemeral);
        self.cpu_nz = self.cpu_nz.max(o.cpu_nz);
        self.memory_nz = self.memory_nz.max(o.memory_nz);
        merge_scalar(&mut self.scalar, &o.scalar, i128::max);
    }

    fn finish(self) -> PodRequests {
        let units = |m: i128| clamp_i64((m + 999).div_euclid(1000));
        let requests = Resources {
            milli_cpu: clamp_i64(self.cpu),
            memory: units(self.memory),
            ephemeral_storage: units(self.ephemeral),
            pods: 1,
        };
        let non_zero = Resources {
            milli_cpu: clamp_i64(self.cpu_nz),
            memory: units(self.memory_nz),
            ..requests
        };
        let scalar = self
            .scalar
            .into_iter()
            .map(|(n, m)| (n, units(m)))
            .filter(|(_, v)| *v != 0)
            .collect();
        PodRequests {
            requests,
            non_zero,
            scalar,
        }
    }
}

/// Combines two name-sorted lists, applying `f` to names present in both.
fn merge_scalar(
    into: &mut Vec<(String, i128)>,
    from: &[(String, i128)],
    f: fn(i128, i128) -> i128,
) {
    for (name, v) in from {
        match into.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => into[i].1 = f(into[i].1, *v),
            // Absent counts as 0 for both sum and max.
            Err(i) => into.insert(i, (name.clone(), f(0, *v))),
        }
    }
}

fn clamp_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    fn c(name: &str, requests: serde_json::Value) -> serde_json::Value {
        json!({"name": name, "image": "x", "resources": {"requests": requests}})
    }

    fn sidecar(name: &str, requests: serde_json::Value) -> serde_json::Value {
        json!({"name": name, "image": "x", "restartPolicy": "Always", "resources": {"requests": requests}})
    }

    const MI: i64 = 1024 * 1024;

    #[test]
    fn sums_app_containers() {
        let p = pod(json!({"containers": [
            c("a", json!({"cpu": "100m", "memory": "64Mi"})),
            c("b", json!({"cpu": "250m", "memory": "1Gi", "ephemeral-storage": "1G"})),
        ]}));
        let r = pod_requests(&p);
        assert_eq!(r.milli_cpu, 350);
        assert_eq!(r.memory, 64 * MI + 1024 * MI);
        assert_eq!(r.ephemeral_storage, 1_000_000_000);
        assert_eq!(r.pods, 1);
    }

    #[test]
    fn init_containers_without_sidecars_take_the_max() {
        // max(max(init), sum(app)) per resource, independently.
        let p = pod(json!({
            "initContainers": [c("i1", json!({"cpu": "2", "memory": "10Mi"})), c("i2", json!({"cpu": "500m", "memory": "1Gi"}))],
            "containers": [c("a", json!({"cpu": "1", "memory": "100Mi"}))],
        }));
        let r = pod_requests(&p);
        assert_eq!(r.milli_cpu, 2000);
        assert_eq!(r.memory, 1024 * MI);
    }

    #[test]
    fn sidecars_add_to_the_total_and_to_later_init_containers() {
        // init: sidecar s1 (200m), regular i1 (1), sidecar s2 (300m), regular i2 (600m)
        // app: 500m.
        // total = 500 + 200 + 300 = 1000
        // init candidates: s1 -> 200; i1 -> 1000 + 200 = 1200; s2 -> 500; i2 -> 600 + 500 = 1100
        // effective = max(1000, 1200) = 1200
        let p = pod(json!({
            "initContainers": [
                sidecar("s1", json!({"cpu": "200m"})),
                c("i1", json!({"cpu": "1"})),
                sidecar("s2", json!({"cpu": "300m"})),
                c("i2", json!({"cpu": "600m"})),
            ],
            "containers": [c("a", json!({"cpu": "500m"}))],
        }));
        assert_eq!(pod_requests(&p).milli_cpu, 1200);

        // Without the big regular init container the total of app + sidecars wins.
        let p = pod(json!({
            "initContainers": [sidecar("s1", json!({"cpu": "200m"})), c("i1", json!({"cpu": "100m"}))],
            "containers": [c("a", json!({"cpu": "500m"}))],
        }));
        assert_eq!(pod_requests(&p).milli_cpu, 700);
    }

    #[test]
    fn overhead_is_added_after_the_max() {
        let p = pod(json!({
            "initContainers": [c("i", json!({"cpu": "1"}))],
            "containers": [c("a", json!({"cpu": "100m"}))],
            "overhead": {"cpu": "250m", "memory": "120Mi"},
        }));
        let r = PodRequests::of(&p);
        assert_eq!(r.requests.milli_cpu, 1250);
        assert_eq!(r.requests.memory, 120 * MI);
        // Overhead counts in the scoring variant too; the app container has no memory request,
        // the init container neither, so each counts 200Mi and the max is 200Mi.
        assert_eq!(r.non_zero.milli_cpu, 1250);
        assert_eq!(r.non_zero.memory, 200 * MI + 120 * MI);
    }

    #[test]
    fn best_effort_pod_requests_nothing_but_scores_as_100m_200mi_per_container() {
        let p = pod(json!({"containers": [
            {"name": "a", "image": "x"},
            {"name": "b", "image": "x"},
        ]}));
        let r = PodRequests::of(&p);
        assert!(r.is_best_effort());
        assert_eq!(
            r.requests,
            Resources {
                pods: 1,
                ..Default::default()
            }
        );
        assert_eq!(r.non_zero.milli_cpu, 200);
        assert_eq!(r.non_zero.memory, 400 * MI);
    }

    #[test]
    fn explicit_zero_request_is_not_defaulted() {
        let p = pod(json!({"containers": [c("a", json!({"cpu": "0"}))]}));
        let r = PodRequests::of(&p);
        assert_eq!(r.non_zero.milli_cpu, 0);
        assert_eq!(r.non_zero.memory, 200 * MI);
    }

    #[test]
    fn non_zero_defaults_apply_per_container_including_init() {
        // app: a (cpu 1, no memory), b (memory 1Gi, no cpu)
        // non-zero app sum: cpu 1000 + 100 = 1100; memory 200Mi + 1Gi
        // init i (no requests): cpu 100, memory 200Mi -> smaller, no effect.
        let p = pod(json!({
            "initContainers": [{"name": "i", "image": "x"}],
            "containers": [c("a", json!({"cpu": "1"})), c("b", json!({"memory": "1Gi"}))],
        }));
        let r = PodRequests::of(&p);
        assert_eq!(r.requests.milli_cpu, 1000);
        assert_eq!(r.requests.memory, 1024 * MI);
        assert_eq!(r.non_zero.milli_cpu, 1100);
        assert_eq!(r.non_zero.memory, 1224 * MI);

        // A big init container without requests is not the max; one with defaults-only is 100m.
        let p = pod(json!({
            "initContainers": [c("i", json!({"memory": "4Gi"}))],
            "containers": [c("a", json!({"cpu": "50m", "memory": "10Mi"}))],
        }));
        let r = PodRequests::of(&p);
        assert_eq!(r.non_zero.milli_cpu, 100); // init's default 100m beats 50m
        assert_eq!(r.non_zero.memory, 4096 * MI);
    }

    #[test]
    fn scalar_resources_follow_the_same_rule() {
        let p = pod(json!({
            "initContainers": [c("i", json!({"example.com/gpu": "2"}))],
            "containers": [
                c("a", json!({"example.com/gpu": "1", "hugepages-2Mi": "4Mi", "storage": "1Gi"})),
                c("b", json!({"example.com/gpu": "0"})),
            ],
        }));
        let r = PodRequests::of(&p);
        assert_eq!(
            r.scalar,
            vec![
                ("example.com/gpu".to_string(), 2),
                ("hugepages-2Mi".to_string(), 4 * MI)
            ]
        );
        assert!(!r.is_best_effort());
    }

    #[test]
    fn fractional_bytes_round_up_once_on_the_total() {
        let p = pod(json!({"containers": [
            c("a", json!({"memory": "1500m"})),
            c("b", json!({"memory": "1500m"})),
        ]}));
        // 1.5 + 1.5 = 3 bytes exactly (rounding per container would give 4).
        assert_eq!(pod_requests(&p).memory, 3);
    }

    #[test]
    fn scalar_names() {
        assert!(is_scalar_resource_name("nvidia.com/gpu"));
        assert!(is_scalar_resource_name("kubernetes.io/something"));
        assert!(is_scalar_resource_name("hugepages-1Gi"));
        assert!(!is_scalar_resource_name("storage"));
        assert!(!is_scalar_resource_name("requests.example.com/x"));
    }
}
