//! The node lifecycle controller: notices nodes whose agent stopped reporting (no Lease renewal
//! and no status heartbeat for the grace period), marks their conditions Unknown, taints them as
//! Kubernetes does (`node.kubernetes.io/unreachable` / `not-ready`, NoSchedule and NoExecute),
//! marks their pods not ready, and removes the taints when the node reports Ready again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The conditions the controller turns Unknown when a node goes silent.
const MONITORED: &[&str] = &["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

#[derive(Clone, Debug)]
pub struct Config {
    /// How long a node may stay silent before it is marked Unknown (Kubernetes 1.32: 50 s).
    pub grace_period: Duration,
    /// How often nodes are checked (Kubernetes: 5 s).
    pub monitor_period: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            grace_period: Duration::from_secs(50),
            monitor_period: Duration::from_secs(5),
        }
    }
}

/// When each node was last heard from, by this controller's own clock: a change of the Lease's
/// renewTime or of the Ready condition's heartbeat counts, whatever clock the node keeps.
#[derive(Default, Debug)]
pub struct HealthTracker {
    seen: HashMap<String, Probe>,
}

#[derive(Debug, Clone, PartialEq)]
struct Probe {
    renew: Option<Timestamp>,
    heartbeat: Option<Timestamp>,
    at: Timestamp,
}

impl HealthTracker {
    /// Records what the node shows now; a first sight counts as hearing from it.
    pub fn observe(
        &mut self,
        node: &str,
        renew: Option<Timestamp>,
        heartbeat: Option<Timestamp>,
        now: Timestamp,
    ) {
        match self.seen.get_mut(node) {
            Some(p) if p.renew == renew && p.heartbeat == heartbeat => {}
            Some(p) => {
                *p = Probe {
                    renew,
                    heartbeat,
                    at: now,
                }
            }
            None => {
                self.seen.insert(
                    node.to_string(),
                    Probe {
                        renew,
                        heartbeat,
                        at: now,
                    },
                );
            }
        }
    }

    pub fn is_silent(&self, node: &str, now: Timestamp, grace: Duration) -> bool {
        self.seen.get(node).is_some_and(|p| {
            now.duration_since(p.at)
                > SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX)
        })
    }

    pub fn forget_missing(&mut self, present: &[String]) {
        self.seen.retain(|k, _| present.contains(k));
    }
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// The conditions a silent node should show, or None when they already do.
pub fn silent_conditions(node: &Node, now: Timestamp) -> Option<Vec<NodeCondition>> {
    let existing = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let t = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::from_second(now.as_second()).unwrap_or(now),
    );
    let mut out = existing.clone();
    let mut changed = false;
    for kind in MONITORED {
        match out.iter_mut().find(|c| c.type_ == *kind) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(t.clone());
                changed = true;
            }
            None => {
                out.push(NodeCondition {
                    type_: kind.to_string(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: Some(t.clone()),
                    last_transition_time: Some(t.clone()),
                });
                changed = true;
            }
        }
    }
    changed.then_some(out)
}

/// The node's taints with the lifecycle taints made to match its Ready condition: Unknown →
/// unreachable, False → not-ready, True → neither. None when nothing changes.
pub fn desired_taints(node: &Node, now: Timestamp) -> Option<Vec<Taint>> {
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let wanted_key = match ready_condition(node).map(|c| c.status.as_str()) {
        Some("Unknown") => Some(UNREACHABLE),
        Some("False") => Some(NOT_READY),
        _ => None,
    };
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| {
            let ours = t.key == UNREACHABLE || t.key == NOT_READY;
            !ours || Some(t.key.as_str()) == wanted_key
        })
        .cloned()
        .collect();
    if let Some(key) = wanted_key {
        for effect in ["NoSchedule", "NoExecute"] {
            if !out.iter().any(|t| t.key == key && t.effect == effect) {
                out.push(Taint {
                    key: key.to_string(),
                    effect: effect.to_string(),
                    value: None,
                    time_added: (effect == "NoExecute").then(|| {
                        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                            Timestamp::from_second(now.as_second()).unwrap_or(now),
                        )
                    }),
                });
            }
        }
    }
    (out != current).then_some(out)
}

fn lease_renew(lease: Option<&Lease>) -> Option<Timestamp> {
    lease?.spec.as_ref()?.renew_time.as_ref().map(|t| t.0)
}

/// Runs the controller until the task is dropped.
pub async fn run(client: kube::Client, cfg: Config) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let (node_reader, node_writer) = reflector::store();
    let (lease_reader, lease_writer) = reflector::store();
    let node_stream = reflector(
        node_writer,
        watcher(nodes.clone(), watcher::Config::default()),
    )
    .default_backoff()
    .applied_objects();
    let lease_stream = reflector(lease_writer, watcher(leases, watcher::Config::default()))
        .default_backoff()
        .applied_objects();
    tokio::spawn(node_stream.for_each(|_| async {}));
    tokio::spawn(lease_stream.for_each(|_| async {}));
    let mut tracker = HealthTracker::default();
    let mut tick = tokio::time::interval(cfg.monitor_period);
    loop {
        tick.tick().await;
        let now = Timestamp::now();
        let all: Vec<Arc<Node>> = node_reader.state();
        let leases: HashMap<String, Arc<Lease>> = lease_reader
            .state()
            .into_iter()
            .filter_map(|l| Some((l.metadata.name.clone()?, l)))
            .collect();
        let names: Vec<String> = all.iter().filter_map(|n| n.metadata.name.clone()).collect();
        tracker.forget_missing(&names);
        for node in all {
            let Some(name) = node.metadata.name.clone() else {
                continue;
            };
            let heartbeat =
                ready_condition(&node).and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
            tracker.observe(
                &name,
                lease_renew(leases.get(&name).map(|l| l.as_ref())),
                heartbeat,
                now,
            );
            if let Err(e) = reconcile(&client, &nodes, &node, &tracker, &cfg, now).await {
                tracing::warn!(node = %name, error = %e, "node lifecycle update failed; will retry");
            }
        }
    }
}

async fn reconcile(
    client: &kube::Client,
    nodes: &Api<Node>,
    node: &Node,
    tracker: &HealthTracker,
    cfg: &Config,
    now: Timestamp,
) -> Result<(), kube::Error> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut node = node.clone();
    if tracker.is_silent(&name, now, cfg.grace_period)
        && let Some(conds) = silent_conditions(&node, now)
    {
        tracing::info!(node = %name, "node stopped reporting; marking its conditions Unknown");
        let patch = json!({"status": {"conditions": conds}});
        node = nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await?;
        mark_pods_not_ready(client, &name, now).await?;
    }
    if let Some(taints) = desired_taints(&node, now) {
        let patch = json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"taints": taints},
        });
        nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }
    Ok(())
}

/// Sets Ready=False on the node's pods and records a NodeNotReady event on each.
async fn mark_pods_not_ready(
    client: &kube::Client,
    node: &str,
    now: Timestamp,
) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::all(client.clone());
    let on_node = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    let t = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::from_second(now.as_second()).unwrap_or(now),
    );
    for pod in on_node.items {
        let (Some(ns), Some(name)) = (pod.metadata.namespace.clone(), pod.metadata.name.clone())
        else {
            continue;
        };
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
        if ready.is_none_or(|c| c.status == "False") {
            continue;
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": t}]}});
        api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await?;
        let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &ns);
        let ev = json!({
            "metadata": {"name": format!("{name}.{:x}", now.as_nanosecond())},
            "involvedObject": {"kind": "Pod", "namespace": ns, "name": name, "uid": pod.metadata.uid, "apiVersion": "v1"},
            "reason": "NodeNotReady", "message": "Node is not ready", "type": "Warning",
            "source": {"component": "node-controller"}, "firstTimestamp": t, "lastTimestamp": t, "count": 1,
            "reportingComponent": "node-controller", "reportingInstance": "",
        });
        if let Ok(ev) = serde_json::from_value(ev) {
            let _ = events.create(&PostParams::default(), &ev).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ready: Option<&str>, taints: serde_json::Value) -> Node {
        let mut v = json!({"metadata": {"name": "n1"}, "spec": {"taints": taints}, "status": {"conditions": []}});
        if let Some(s) = ready {
            v["status"]["conditions"] = json!([{"type": "Ready", "status": s, "reason": "KubeletReady",
                "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
        }
        serde_json::from_value(v).unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_node_is_silent_only_after_the_grace_period_without_news() {
        let mut t = HealthTracker::default();
        let grace = Duration::from_secs(50);
        t.observe(
            "n1",
            Some(ts("2026-01-01T00:00:00Z")),
            None,
            ts("2026-01-01T00:00:00Z"),
        );
        assert!(!t.is_silent("n1", ts("2026-01-01T00:00:50Z"), grace));
        assert!(t.is_silent("n1", ts("2026-01-01T00:00:51Z"), grace));
        // A renewal (whatever time the node's clock wrote) resets the clock.
        t.observe(
            "n1",
            Some(ts("2020-01-01T00:00:10Z")),
            None,
            ts("2026-01-01T00:00:52Z"),
        );
        assert!(!t.is_silent("n1", ts("2026-01-01T00:01:30Z"), grace));
        // The same renewal seen again is no news.
        t.observe(
            "n1",
            Some(ts("2020-01-01T00:00:10Z")),
            None,
            ts("2026-01-01T00:01:40Z"),
        );
        assert!(t.is_silent("n1", ts("2026-01-01T00:01:43Z"), grace));
        assert!(!t.is_silent("other", ts("2030-01-01T00:00:00Z"), grace));
    }

    #[test]
    fn silent_nodes_get_unknown_conditions_once() {
        let n = node(Some("True"), json!([]));
        let now = ts("2026-01-01T00:01:00Z");
        let conds = silent_conditions(&n, now).unwrap();
        let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        let pressure = conds.iter().find(|c| c.type_ == "MemoryPressure").unwrap();
        assert_eq!(pressure.reason.as_deref(), Some("NodeStatusNeverUpdated"));
        let mut n2 = n.clone();
        n2.status.as_mut().unwrap().conditions = Some(conds);
        assert!(silent_conditions(&n2, now).is_none());
    }

    #[test]
    fn taints_follow_the_ready_condition() {
        let now = ts("2026-01-01T00:01:00Z");
        let other = json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]);
        let t = desired_taints(&node(Some("Unknown"), other.clone()), now).unwrap();
        let keys: Vec<(String, String)> = t
            .iter()
            .map(|t| (t.key.clone(), t.effect.clone()))
            .collect();
        assert_eq!(
            keys,
            [
                ("dedicated".into(), "NoSchedule".into()),
                (UNREACHABLE.into(), "NoSchedule".into()),
                (UNREACHABLE.into(), "NoExecute".into())
            ]
        );
        assert!(t[2].time_added.is_some() && t[1].time_added.is_none());
        let mut tainted = node(Some("False"), json!(t));
        let t2 = desired_taints(&tainted, now).unwrap();
        assert!(t2.iter().any(|t| t.key == NOT_READY) && !t2.iter().any(|t| t.key == UNREACHABLE));
        tainted.spec.as_mut().unwrap().taints = Some(t2);
        assert!(desired_taints(&tainted, now).is_none());
        tainted
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()[0]
            .status = "True".into();
        assert_eq!(desired_taints(&tainted, now).unwrap().len(), 1);
        assert!(desired_taints(&node(Some("True"), other), now).is_none());
    }
}
