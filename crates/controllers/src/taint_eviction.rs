//! NoExecute taint eviction (Kubernetes' taint manager): a pod bound to a node with a `NoExecute`
//! taint it does not tolerate is deleted at once; one that tolerates it for `tolerationSeconds`
//! is deleted that long after the taint appeared (its `timeAdded`, or when this controller first
//! saw it when the taint has none); one that tolerates it without a limit stays. A taint removed
//! before the deadline cancels the eviction, since every pass decides again from what is seen.
//!
//! The decision ([`decide`]) is pure, with the clock passed in; [`run`] is the loop around it.
//! Evictions are ordinary graceful deletes (with the pod's UID as precondition), announced by a
//! `TaintManagerEviction` event and a `DisruptionTarget` condition, as Kubernetes does.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Event, Node, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use tokio::sync::Notify;

/// The component name on the events, as Kubernetes' controller names itself.
pub const COMPONENT: &str = "taint-eviction-controller";
/// How often everything is re-decided without any watch event or deadline.
const RESYNC: Duration = Duration::from_secs(30);

/// A pod to delete now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

/// One pass's outcome: the pods whose time is up, and when the next deadline falls.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Decision {
    pub evict: Vec<Eviction>,
    pub wake_at: Option<Timestamp>,
}

/// When each NoExecute taint without a `timeAdded` was first seen, per node, so that its
/// tolerations count from then.
#[derive(Debug, Default)]
pub struct TaintClock {
    first_seen: BTreeMap<(String, String, String), Timestamp>,
}

impl TaintClock {
    /// Records the taints seen now and forgets those gone (a taint that comes back starts again).
    pub fn observe(&mut self, nodes: &[Arc<Node>], now: Timestamp) {
        let mut present = HashSet::new();
        for node in nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            for t in no_execute_taints(node) {
                let key = (
                    name.clone(),
                    t.key.clone(),
                    t.value.clone().unwrap_or_default(),
                );
                self.first_seen.entry(key.clone()).or_insert(now);
                present.insert(key);
            }
        }
        self.first_seen.retain(|k, _| present.contains(k));
    }

    fn added(&self, node: &str, t: &Taint, now: Timestamp) -> Timestamp {
        if let Some(Time(at)) = &t.time_added {
            return *at;
        }
        let key = (
            node.to_string(),
            t.key.clone(),
            t.value.clone().unwrap_or_default(),
        );
        self.first_seen.get(&key).copied().unwrap_or(now)
    }
}

fn no_execute_taints(node: &Node) -> impl Iterator<Item = &Taint> {
    node.spec
        .iter()
        .flat_map(|s| s.taints.iter().flatten())
        .filter(|t| t.effect == "NoExecute")
}

/// Whether `tol` tolerates `taint`: effect (if set) and key (if set) equal, then `Exists` takes any
/// value and `Equal` (or no operator) the same value.
pub fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = tol.effect.as_deref().filter(|e| !e.is_empty())
        && e != taint.effect
    {
        return false;
    }
    if let Some(k) = tol.key.as_deref().filter(|k| !k.is_empty())
        && k != taint.key
    {
        return false;
    }
    match tol.operator.as_deref().unwrap_or("") {
        "Exists" => true,
        "" | "Equal" => tol.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// When the pod must go because of the node's NoExecute taints: `Some(now-or-earlier)` for a
/// taint it does not tolerate, `Some(added + shortest tolerationSeconds)` for tolerated ones
/// with a limit (zero or negative seconds mean at once), None when it tolerates them all forever.
pub fn deadline(pod: &Pod, node: &Node, clock: &TaintClock, now: Timestamp) -> Option<Timestamp> {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let tolerations: &[Toleration] = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    let mut soonest: Option<Timestamp> = None;
    for taint in no_execute_taints(node) {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        let due = if matching.is_empty() {
            Some(now)
        } else {
            matching
                .iter()
                .filter_map(|t| t.toleration_seconds)
                .min()
                .map(|secs| {
                    let added = clock.added(name, taint, now);
                    added
                        .checked_add(SignedDuration::from_secs(secs.max(0)))
                        .unwrap_or(Timestamp::MAX)
                })
        };
        soonest = match (soonest, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    soonest
}

/// Which pods to delete now and when to look again. Pods already being deleted, unbound pods and
/// pods on nodes that are not (or no longer) there are left alone.
pub fn decide(
    nodes: &[Arc<Node>],
    pods: &[Arc<Pod>],
    clock: &TaintClock,
    now: Timestamp,
) -> Decision {
    let by_name: BTreeMap<&str, &Node> = nodes
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_deref()?, n.as_ref())))
        .collect();
    let mut out = Decision::default();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(node) = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .and_then(|n| by_name.get(n))
        else {
            continue;
        };
        let Some(due) = deadline(pod, node, clock, now) else {
            continue;
        };
        if due <= now {
            out.evict.push(Eviction {
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                name: pod.metadata.name.clone().unwrap_or_default(),
                uid: pod.metadata.uid.clone(),
            });
        } else {
            out.wake_at = Some(out.wake_at.map_or(due, |w| w.min(due)));
        }
    }
    out
}

/// Runs the controller until the task is dropped.
pub async fn run(client: kube::Client) {
    let wake = Arc::new(Notify::new());
    let (nodes, node_writer) = reflector::store();
    let (pods, pod_writer) = reflector::store();
    let node_stream = reflector(
        node_writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff();
    let pod_stream = reflector(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff();
    for stream in [
        node_stream.map(|_| ()).boxed(),
        pod_stream.map(|_| ()).boxed(),
    ] {
        let wake = wake.clone();
        tokio::spawn(stream.for_each(move |_| {
            wake.notify_one();
            async {}
        }));
    }
    let (Ok(()), Ok(())) = (
        nodes.wait_until_ready().await,
        pods.wait_until_ready().await,
    ) else {
        return;
    };
    let mut clock = TaintClock::default();
    // UIDs already handed a delete, so a lagging cache does not repeat the event.
    let mut evicted: HashSet<String> = HashSet::new();
    loop {
        let now = Timestamp::now();
        let node_list = nodes.state();
        let pod_list = pods.state();
        clock.observe(&node_list, now);
        let decision = decide(&node_list, &pod_list, &clock, now);
        let live: HashSet<&str> = pod_list
            .iter()
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        evicted.retain(|u| live.contains(u.as_str()));
        for ev in decision.evict {
            let key = ev.uid.clone().unwrap_or_default();
            if !key.is_empty() && evicted.contains(&key) {
                continue;
            }
            match evict(&client, &ev, now).await {
                Ok(()) => {
                    evicted.insert(key);
                }
                Err(e) => {
                    tracing::warn!(pod = %format!("{}/{}", ev.namespace, ev.name), error = %e, "taint eviction failed; will retry");
                }
            }
        }
        let timeout = decision
            .wake_at
            .map(|at| {
                let d = at.duration_since(Timestamp::now());
                Duration::try_from(d).unwrap_or_default().min(RESYNC)
            })
            .unwrap_or(RESYNC);
        let _ = tokio::time::timeout(timeout, wake.notified()).await;
    }
}

async fn evict(client: &kube::Client, ev: &Eviction, now: Timestamp) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &ev.namespace);
    let t = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
    tracing::info!(pod = %format!("{}/{}", ev.namespace, ev.name), "evicting a pod that does not tolerate its node's NoExecute taint");
    record_event(client, ev, &t).await;
    let condition = json!({"status": {"conditions": [{
        "type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
        "message": "Taint eviction: deleting the pod because of a NoExecute taint on its node",
        "lastTransitionTime": t,
    }]}});
    if let Err(e) = api
        .patch_status(
            &ev.name,
            &PatchParams::default(),
            &Patch::Strategic(condition),
        )
        .await
    {
        tracing::debug!(error = %e, "cannot add the DisruptionTarget condition");
    }
    let params = DeleteParams {
        preconditions: ev.uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&ev.name, &params).await {
        Ok(_) => Ok(()),
        // Gone already, or replaced by another pod of the same name: nothing to evict.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn record_event(client: &kube::Client, ev: &Eviction, t: &Time) {
    let events: Api<Event> = Api::namespaced(client.clone(), &ev.namespace);
    let value = json!({
        "metadata": {"name": format!("{}.{:x}", ev.name, t.0.as_nanosecond())},
        "involvedObject": {"kind": "Pod", "namespace": ev.namespace, "name": ev.name,
            "uid": ev.uid, "apiVersion": "v1"},
        "reason": "TaintManagerEviction",
        "message": format!("Marking for deletion Pod {}/{}", ev.namespace, ev.name),
        "type": "Normal", "source": {"component": COMPONENT},
        "firstTimestamp": t, "lastTimestamp": t, "count": 1,
        "reportingComponent": COMPONENT, "reportingInstance": "",
    });
    if let Ok(event) = serde_json::from_value::<Event>(value) {
        let _ = events.create(&PostParams::default(), &event).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn node(taints: serde_json::Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "n1"}, "spec": {"taints": taints}}))
                .unwrap(),
        )
    }

    fn pod(name: &str, tolerations: serde_json::Value) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}")},
                "spec": {"nodeName": "n1", "containers": [], "tolerations": tolerations},
            }))
            .unwrap(),
        )
    }

    fn names(d: &Decision) -> Vec<&str> {
        d.evict.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn untolerated_noexecute_taints_evict_at_once() {
        let n = node(json!([{"key": "k", "value": "v", "effect": "NoExecute"}]));
        let pods = [
            pod("bare", json!([])),
            pod("other-key", json!([{"key": "x", "operator": "Exists"}])),
            pod(
                "wrong-value",
                json!([{"key": "k", "value": "w", "effect": "NoExecute"}]),
            ),
            pod(
                "forever",
                json!([{"key": "k", "operator": "Exists", "effect": "NoExecute"}]),
            ),
            pod("everything", json!([{"operator": "Exists"}])),
            pod(
                "noschedule-only",
                json!([{"key": "k", "value": "v", "effect": "NoSchedule"}]),
            ),
        ];
        let mut clock = TaintClock::default();
        let now = ts("2026-01-01T00:00:00Z");
        clock.observe(std::slice::from_ref(&n), now);
        let d = decide(&[n], &pods, &clock, now);
        assert_eq!(
            names(&d),
            ["bare", "other-key", "wrong-value", "noschedule-only"]
        );
        assert_eq!(d.wake_at, None);
    }

    #[test]
    fn toleration_seconds_count_from_the_taint_and_removal_cancels() {
        let tol = json!([{"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute", "tolerationSeconds": 2}]);
        let pods = [pod("p", tol), pod("unrelated-node", json!([]))];
        let pods = [pods[0].clone(), {
            let mut p = (*pods[1]).clone();
            p.spec.as_mut().unwrap().node_name = Some("n2".into());
            Arc::new(p)
        }];
        // No timeAdded: counted from when the controller first saw the taint.
        let n = node(json!([{"key": "k", "value": "v", "effect": "NoExecute"}]));
        let mut clock = TaintClock::default();
        let t0 = ts("2026-01-01T00:00:00Z");
        clock.observe(std::slice::from_ref(&n), t0);
        let d = decide(std::slice::from_ref(&n), &pods, &clock, t0);
        assert!(d.evict.is_empty());
        assert_eq!(d.wake_at, Some(ts("2026-01-01T00:00:02Z")));
        let t1 = ts("2026-01-01T00:00:01Z");
        clock.observe(std::slice::from_ref(&n), t1);
        assert!(
            decide(std::slice::from_ref(&n), &pods, &clock, t1)
                .evict
                .is_empty()
        );
        let t2 = ts("2026-01-01T00:00:02Z");
        clock.observe(std::slice::from_ref(&n), t2);
        assert_eq!(
            names(&decide(std::slice::from_ref(&n), &pods, &clock, t2)),
            ["p"]
        );
        // Removed before the deadline: nothing happens, and a new taint starts a new clock.
        let bare = node(json!([]));
        clock.observe(std::slice::from_ref(&bare), t1);
        assert_eq!(
            decide(std::slice::from_ref(&bare), &pods, &clock, t2),
            Decision::default()
        );
        clock.observe(std::slice::from_ref(&n), t2);
        let d = decide(std::slice::from_ref(&n), &pods, &clock, t2);
        assert!(d.evict.is_empty());
        assert_eq!(d.wake_at, Some(ts("2026-01-01T00:00:04Z")));
    }

    #[test]
    fn time_added_wins_and_the_shortest_toleration_counts() {
        let n = node(json!([
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"},
            {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"},
        ]));
        let defaults = json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        ]);
        let both = json!([
            {"operator": "Exists"},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 10},
        ]);
        let zero = json!([{"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": -5}]);
        let pods = [
            pod("defaults", defaults),
            pod("both", both),
            pod("zero", zero),
        ];
        let mut deleting = (*pod("deleting", json!([]))).clone();
        deleting.metadata.deletion_timestamp = Some(Time(ts("2026-01-01T00:00:00Z")));
        let pods = [
            pods[0].clone(),
            pods[1].clone(),
            pods[2].clone(),
            Arc::new(deleting),
        ];
        let clock = TaintClock::default();
        let now = ts("2026-01-01T00:00:05Z");
        let d = decide(std::slice::from_ref(&n), &pods, &clock, now);
        assert_eq!(names(&d), ["zero"]);
        assert_eq!(d.wake_at, Some(ts("2026-01-01T00:00:10Z")));
        let d = decide(
            std::slice::from_ref(&n),
            &pods,
            &clock,
            ts("2026-01-01T00:05:00Z"),
        );
        assert_eq!(names(&d), ["defaults", "both", "zero"]);
    }
}
