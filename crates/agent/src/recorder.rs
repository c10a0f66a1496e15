//! The agent's event recorder: writes kubelet-style core/v1 Events (spec §9.1, left column) off
//! the workers' path, with the client-side correlation the kubelet's recorder applies (§9.2):
//! aggregation of many distinct messages, dedup of repeats into `count` + `lastTimestamp`
//! (a merge PATCH of the existing Event instead of a new one) and the per-object spam filter.
//!
//! Workers hand events over a bounded channel and never wait: when it is full the event is
//! dropped and counted, as upstream's broadcaster drops events when its queue is full. One task
//! owns the correlation state and writes events one at a time, so a repeat is only ever patched
//! after its Event was created.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::mpsc;

use crate::events::{EventToEmit, EventType};
use crate::memory::whole_seconds;

/// Events waiting to be written; more are dropped.
pub const QUEUE_CAPACITY: usize = 1000;
/// Remembered events for dedup (upstream's LRU size).
const DEDUP_CACHE: usize = 4096;
/// Distinct messages per (object, type, reason) within [`AGGREGATE_WINDOW`] before they are
/// combined into one event.
const AGGREGATE_MAX_MESSAGES: usize = 10;
const AGGREGATE_WINDOW: SignedDuration = SignedDuration::from_secs(600);
/// Spam filter: a token bucket per involved object.
const SPAM_BURST: f64 = 25.0;
const SPAM_REFILL_SECONDS: f64 = 300.0;
/// Attempts per write when the API cannot be reached (not for API errors).
const WRITE_ATTEMPTS: u32 = 3;

/// One event to write.
#[derive(Debug, Clone)]
pub struct Occurrence {
    pub involved: ObjectReference,
    pub type_: EventType,
    pub reason: String,
    pub message: String,
    pub at: Timestamp,
    /// The node that reports it (`source.host`); None: the recorder's own node. A simulated
    /// fleet shares one recorder among its nodes.
    pub host: Option<Arc<str>>,
}

/// Running totals.
#[derive(Debug, Default)]
pub struct RecorderCounters {
    pub created: AtomicU64,
    pub patched: AtomicU64,
    /// Dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Dropped by the spam filter.
    pub filtered: AtomicU64,
    pub errors: AtomicU64,
}

/// Sends events to the recorder task without waiting. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Occurrence>,
    node_name: Arc<str>,
    counters: Arc<RecorderCounters>,
}

impl Recorder {
    /// Starts the recorder task; it ends when every [`Recorder`] is dropped and the queue is
    /// drained.
    pub fn spawn(client: kube::Client, node_name: &str) -> (Recorder, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let counters = Arc::new(RecorderCounters::default());
        let recorder = Recorder {
            tx,
            node_name: Arc::from(node_name),
            counters: counters.clone(),
        };
        let writer = Writer {
            client,
            node_name: node_name.to_string(),
            apis: HashMap::new(),
            correlator: Correlator::default(),
            counters,
        };
        let task = tokio::spawn(writer.run(rx));
        (recorder, task)
    }

    pub fn counters(&self) -> &RecorderCounters {
        &self.counters
    }

    /// Queues an event; drops it (and counts the drop) when the queue is full.
    pub fn record(&self, occ: Occurrence) {
        if self.tx.try_send(occ).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues one of the engine's events about `pod` (container events carry their
    /// `fieldPath`).
    pub fn record_pod(&self, pod: &Pod, ev: &EventToEmit) {
        self.record_pod_on(None, pod, ev);
    }

    /// [`Recorder::record_pod`] as reported by node `host` (None: this recorder's node).
    pub fn record_pod_on(&self, host: Option<Arc<str>>, pod: &Pod, ev: &EventToEmit) {
        let mut involved = pod_reference(pod);
        involved.field_path = ev.container.map(|c| c.field_path(pod));
        self.record(Occurrence {
            involved,
            type_: ev.type_,
            reason: ev.reason.to_string(),
            message: ev.message.clone(),
            at: Timestamp::now(),
            host,
        });
    }

    /// Queues an event about this agent's Node (the kubelet uses the node name as its UID).
    pub fn record_node(&self, type_: EventType, reason: &str, message: String) {
        let name = self.node_name.to_string();
        self.record(Occurrence {
            involved: ObjectReference {
                kind: Some("Node".into()),
                api_version: Some("v1".into()),
                uid: Some(name.clone()),
                name: Some(name),
                ..ObjectReference::default()
            },
            type_,
            reason: reason.to_string(),
            message,
            at: Timestamp::now(),
            host: None,
        });
    }
}

/// `involvedObject` for a pod (without a fieldPath).
pub fn pod_reference(pod: &Pod) -> ObjectReference {
    let m = &pod.metadata;
    ObjectReference {
        kind: Some("Pod".into()),
        api_version: Some("v1".into()),
        namespace: m.namespace.clone(),
        name: m.name.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        field_path: None,
    }
}

/// The identity of an event for dedup: the object (fieldPath included), type, reason, message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DedupKey {
    object: ObjectKey,
    field_path: String,
    type_: &'static str,
    reason: String,
    message: String,
}

/// The object an event is about (kind, namespace, name, uid, apiVersion).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ObjectKey {
    kind: String,
    namespace: String,
    name: String,
    uid: String,
    api_version: String,
}

impl ObjectKey {
    fn of(r: &ObjectReference) -> Self {
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        ObjectKey {
            kind: s(&r.kind),
            namespace: s(&r.namespace),
            name: s(&r.name),
            uid: s(&r.uid),
            api_version: s(&r.api_version),
        }
    }
}

/// A written event that repeats update.
#[derive(Debug, Clone)]
struct Seen {
    namespace: String,
    name: String,
    count: i32,
}

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    at: Timestamp,
}

/// What to write for an occurrence.
#[derive(Debug, Clone, PartialEq)]
enum Write {
    Create {
        key: DedupKey,
        event: Box<Event>,
    },
    Patch {
        key: DedupKey,
        namespace: String,
        name: String,
        count: i32,
        last: Timestamp,
    },
}

/// The correlation state (§9.2), pure: aggregation, dedup, spam filter.
#[derive(Default)]
struct Correlator {
    /// Distinct messages per (object, type, reason), with the window's start.
    aggregate: HashMap<(ObjectKey, &'static str, String), (Timestamp, HashSet<String>)>,
    seen: HashMap<DedupKey, Seen>,
    order: VecDeque<DedupKey>,
    buckets: HashMap<ObjectKey, Bucket>,
}

impl Correlator {
    /// Decides what to write for `occ` (None: filtered as spam).
    fn observe(&mut self, node: &str, mut occ: Occurrence) -> Option<Write> {
        let object = ObjectKey::of(&occ.involved);
        let type_ = occ.type_.as_str();

        // 1. Aggregation: too many distinct messages for one (object, type, reason).
        let agg_key = (object.clone(), type_, occ.reason.clone());
        let entry = self
            .aggregate
            .entry(agg_key)
            .or_insert_with(|| (occ.at, HashSet::new()));
        if occ.at.duration_since(entry.0) > AGGREGATE_WINDOW {
            *entry = (occ.at, HashSet::new());
        }
        if entry.1.len() < AGGREGATE_MAX_MESSAGES {
            entry.1.insert(occ.message.clone());
        }
        if entry.1.len() >= AGGREGATE_MAX_MESSAGES && !entry.1.contains(&occ.message) {
            occ.message = format!("(combined from similar events): {}", occ.message);
        }

        // 3. Spam filter (applied to every occurrence, repeats included).
        let bucket = self.buckets.entry(object.clone()).or_insert(Bucket {
            tokens: SPAM_BURST,
            at: occ.at,
        });
        let elapsed = occ.at.duration_since(bucket.at).as_secs_f64().max(0.0);
        bucket.tokens = (bucket.tokens + elapsed / SPAM_REFILL_SECONDS).min(SPAM_BURST);
        bucket.at = occ.at;
        if bucket.tokens < 1.0 {
            return None;
        }
        bucket.tokens -= 1.0;

        // 2. Dedup: a repeat becomes a PATCH of the existing Event.
        let key = DedupKey {
            object,
            field_path: occ.involved.field_path.clone().unwrap_or_default(),
            type_,
            reason: occ.reason.clone(),
            message: if occ.message.starts_with("(combined from similar events): ") {
                // Combined events share one Event per (object, type, reason).
                String::from("(combined)")
            } else {
                occ.message.clone()
            },
        };
        let at = whole_seconds(occ.at);
        if let Some(s) = self.seen.get_mut(&key) {
            s.count += 1;
            return Some(Write::Patch {
                key,
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                count: s.count,
                last: at,
            });
        }
        let namespace = occ
            .involved
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let name = format!(
            "{}.{:x}",
            occ.involved.name.as_deref().unwrap_or(""),
            occ.at.as_nanosecond()
        );
        self.remember(
            key.clone(),
            Seen {
                namespace: namespace.clone(),
                name: name.clone(),
                count: 1,
            },
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace),
                ..ObjectMeta::default()
            },
            involved_object: occ.involved,
            reason: Some(occ.reason),
            message: Some(occ.message),
            type_: Some(type_.to_string()),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some(node.to_string()),
            }),
            first_timestamp: Some(Time(at)),
            last_timestamp: Some(Time(at)),
            count: Some(1),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(node.to_string()),
            ..Event::default()
        };
        Some(Write::Create {
            key,
            event: Box::new(event),
        })
    }

    fn remember(&mut self, key: DedupKey, seen: Seen) {
        if self.seen.insert(key.clone(), seen).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > DEDUP_CACHE {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }

    /// The Event behind `key` is gone (expired) or could not be written: forget it, so the next
    /// repeat creates a new one.
    fn forget(&mut self, key: &DedupKey) {
        self.seen.remove(key);
        self.order.retain(|k| k != key);
    }

    /// Drops aggregation windows and spam buckets of objects not heard of for a long time.
    fn gc(&mut self, now: Timestamp) {
        self.aggregate
            .retain(|_, (start, _)| now.duration_since(*start) <= AGGREGATE_WINDOW);
        let full = SignedDuration::from_secs_f64(SPAM_BURST * SPAM_REFILL_SECONDS);
        self.buckets.retain(|_, b| now.duration_since(b.at) <= full);
    }
}

struct Writer {
    client: kube::Client,
    node_name: String,
    apis: HashMap<String, Api<Event>>,
    correlator: Correlator,
    counters: Arc<RecorderCounters>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Occurrence>) {
        let mut last_gc = Timestamp::now();
        while let Some(occ) = rx.recv().await {
            let now = Timestamp::now();
            if now.duration_since(last_gc) > SignedDuration::from_secs(60) {
                self.correlator.gc(now);
                last_gc = now;
            }
            let host = occ.host.clone();
            let node = host.as_deref().unwrap_or(&self.node_name);
            let Some(write) = self.correlator.observe(node, occ) else {
                self.counters.filtered.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            self.write(write).await;
        }
    }

    fn api(&mut self, namespace: &str) -> Api<Event> {
        self.apis
            .entry(namespace.to_string())
            .or_insert_with(|| Api::namespaced(self.client.clone(), namespace))
            .clone()
    }

    async fn write(&mut self, write: Write) {
        match write {
            Write::Create { key, event } => {
                let ns = event.metadata.namespace.clone().unwrap_or_default();
                let api = self.api(&ns);
                let pp = PostParams::default();
                match with_retries(|| api.create(&pp, &event)).await {
                    Ok(_) => {
                        self.counters.created.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        self.counters.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, reason = ?event.reason, "cannot write event");
                        self.correlator.forget(&key);
                    }
                }
            }
            Write::Patch {
                key,
                namespace,
                name,
                count,
                last,
            } => {
                let api = self.api(&namespace);
                let patch = json!({"count": count, "lastTimestamp": Time(last)});
                let (pp, patch) = (PatchParams::default(), Patch::Merge(&patch));
                let res = with_retries(|| api.patch(&name, &pp, &patch)).await;
                match res {
                    Ok(_) => {
                        self.counters.patched.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        // Gone (expired after an hour) or unwritable: the next repeat starts a
                        // new Event.
                        if !is_not_found(&e) {
                            self.counters.errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(error = %e, "cannot update event");
                        }
                        self.correlator.forget(&key);
                    }
                }
            }
        }
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Runs a write, retrying a few times when the API could not be reached (API errors are final).
async fn with_retries<T, F, Fut>(mut f: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f().await {
            Err(kube::Error::Api(s)) => return Err(kube::Error::Api(s)),
            Err(e) if attempt < WRITE_ATTEMPTS => {
                tracing::debug!(error = %e, "event write failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occ(name: &str, reason: &str, message: &str, at: i64) -> Occurrence {
        Occurrence {
            involved: ObjectReference {
                kind: Some("Pod".into()),
                api_version: Some("v1".into()),
                namespace: Some("default".into()),
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                field_path: Some("spec.containers{c}".into()),
                ..ObjectReference::default()
            },
            type_: EventType::Warning,
            reason: reason.into(),
            message: message.into(),
            at: Timestamp::from_second(1_750_000_000 + at).unwrap(),
            host: None,
        }
    }

    #[test]
    fn first_event_is_created_in_kubelet_shape() {
        let mut c = Correlator::default();
        let Some(Write::Create { event, .. }) = c.observe("node-1", occ("p", "BackOff", "m", 0))
        else {
            panic!("expected a create");
        };
        assert!(event.metadata.name.as_deref().unwrap().starts_with("p."));
        assert_eq!(event.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(event.count, Some(1));
        assert_eq!(
            event.source.as_ref().unwrap().component.as_deref(),
            Some("kubelet")
        );
        assert_eq!(
            event.source.as_ref().unwrap().host.as_deref(),
            Some("node-1")
        );
        assert_eq!(event.reporting_component.as_deref(), Some("kubelet"));
        assert_eq!(event.reporting_instance.as_deref(), Some("node-1"));
        assert_eq!(
            event.involved_object.field_path.as_deref(),
            Some("spec.containers{c}")
        );
        assert_eq!(event.first_timestamp, event.last_timestamp);
        assert!(event.event_time.is_none());
    }

    #[test]
    fn repeats_patch_the_count() {
        let mut c = Correlator::default();
        let Some(Write::Create { event, .. }) = c.observe("n", occ("p", "BackOff", "m", 0)) else {
            panic!()
        };
        let name = event.metadata.name.clone().unwrap();
        match c.observe("n", occ("p", "BackOff", "m", 5)) {
            Some(Write::Patch { name: n, count, .. }) => {
                assert_eq!(n, name);
                assert_eq!(count, 2);
            }
            other => panic!("{other:?}"),
        }
        // Another message or another container is a new event.
        assert!(matches!(
            c.observe("n", occ("p", "BackOff", "other", 6)),
            Some(Write::Create { .. })
        ));
        let mut o = occ("p", "BackOff", "m", 7);
        o.involved.field_path = Some("spec.containers{d}".into());
        assert!(matches!(c.observe("n", o), Some(Write::Create { .. })));
    }

    #[test]
    fn many_distinct_messages_are_combined() {
        let mut c = Correlator::default();
        for i in 0..9 {
            let w = c.observe("n", occ("p", "Unhealthy", &format!("m{i}"), i));
            assert!(matches!(w, Some(Write::Create { .. })));
        }
        let Some(Write::Create { event, .. }) = c.observe("n", occ("p", "Unhealthy", "m9", 10))
        else {
            panic!()
        };
        assert_eq!(event.message.as_deref(), Some("m9"));
        let Some(Write::Create { event, .. }) = c.observe("n", occ("p", "Unhealthy", "m10", 11))
        else {
            panic!()
        };
        assert_eq!(
            event.message.as_deref(),
            Some("(combined from similar events): m10")
        );
        // Further new messages update the combined event.
        assert!(matches!(
            c.observe("n", occ("p", "Unhealthy", "m11", 12)),
            Some(Write::Patch { count: 2, .. })
        ));
    }

    #[test]
    fn spam_filter_allows_a_burst_then_one_per_five_minutes() {
        let mut c = Correlator::default();
        let mut written = 0;
        for i in 0..40 {
            if c.observe("n", occ("p", "BackOff", "m", i)).is_some() {
                written += 1;
            }
        }
        assert_eq!(written, 25);
        assert!(c.observe("n", occ("p", "BackOff", "m", 40 + 300)).is_some());
        assert!(c.observe("n", occ("p", "BackOff", "m", 341)).is_none());
        // Another object has its own bucket.
        assert!(c.observe("n", occ("q", "BackOff", "m", 341)).is_some());
    }
}
