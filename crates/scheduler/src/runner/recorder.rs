//! The event recorder: writes `Scheduled` / `FailedScheduling` Events through the core/v1 API in
//! the shape the events.k8s.io recorder produces (§9.1, right column), off the scheduling path.
//!
//! The loop hands occurrences over a bounded channel and never waits: when the channel is full
//! the occurrence is dropped and counted, as upstream's broadcaster drops events when its queue
//! (1000) is full. One task owns the [`SeriesBook`] (which repeats become `series` updates) and
//! keeps a bounded number of writes in flight; it flushes running series every few seconds.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::Counters;
use crate::event_series::{EventKey, Occurrence, SeriesBook, Write};
use crate::pod_status::rfc3339_micros;

/// Sends occurrences to the recorder task without waiting.
#[derive(Clone)]
pub struct Recorder {
    /// None when events are turned off.
    tx: Option<mpsc::Sender<Occurrence>>,
    counters: Arc<Counters>,
}

impl Recorder {
    /// Queues an occurrence; drops it (and counts the drop) when the queue is full.
    pub fn record(&self, occ: Occurrence) {
        if let Some(tx) = &self.tx
            && tx.try_send(occ).is_err()
        {
            self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Settings of the recorder task.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    pub reporting_controller: String,
    pub reporting_instance: String,
    pub queue_capacity: usize,
    pub max_in_flight: usize,
    pub flush_interval: Duration,
}

/// Starts the recorder task; it ends when every [`Recorder`] is dropped and its writes are done.
/// A queue capacity of 0 turns events off (no task).
pub fn spawn(
    client: kube::Client,
    cfg: RecorderConfig,
    counters: Arc<Counters>,
) -> (Recorder, Option<tokio::task::JoinHandle<()>>) {
    if cfg.queue_capacity == 0 {
        let recorder = Recorder { tx: None, counters };
        return (recorder, None);
    }
    let (tx, rx) = mpsc::channel(cfg.queue_capacity);
    let recorder = Recorder {
        tx: Some(tx),
        counters: counters.clone(),
    };
    let task = tokio::spawn(run(client, cfg, counters, rx));
    (recorder, Some(task))
}

enum Outcome {
    Created(EventKey),
    Patched,
    /// Failed for good: forget the entry.
    Failed(EventKey, String),
}

async fn run(
    client: kube::Client,
    cfg: RecorderConfig,
    counters: Arc<Counters>,
    mut rx: mpsc::Receiver<Occurrence>,
) {
    let mut book = SeriesBook::new();
    let mut in_flight = FuturesUnordered::new();
    // Writes waiting for a free slot (series updates and creates released by acknowledgements).
    let mut backlog: VecDeque<Write> = VecDeque::new();
    let mut flush = tokio::time::interval(cfg.flush_interval);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let apis: HashMap<String, Api<Event>> = HashMap::new();
    let mut ctx = WriteCtx {
        client,
        cfg: cfg.clone(),
        apis,
    };
    let mut open = true;
    loop {
        while in_flight.len() < cfg.max_in_flight
            && let Some(w) = backlog.pop_front()
        {
            in_flight.push(ctx.write(w));
        }
        if !open && in_flight.is_empty() && backlog.is_empty() {
            return;
        }
        let can_take = open && in_flight.len() < cfg.max_in_flight;
        tokio::select! {
            occ = rx.recv(), if can_take => match occ {
                Some(occ) => {
                    if let Some(w) = book.observe(occ, Timestamp::now()) {
                        backlog.push_back(w);
                    }
                }
                None => open = false,
            },
            Some(outcome) = in_flight.next(), if !in_flight.is_empty() => match outcome {
                Outcome::Created(key) => {
                    counters.events_created.fetch_add(1, Ordering::Relaxed);
                    if let Some(w) = book.created(&key) {
                        backlog.push_back(w);
                    }
                }
                Outcome::Patched => {
                    counters.events_patched.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Failed(key, message) => {
                    counters.event_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %message, "cannot write event");
                    book.forget(&key);
                }
            },
            _ = flush.tick() => {
                backlog.extend(book.flush(Timestamp::now()));
            }
        }
    }
}

struct WriteCtx {
    client: kube::Client,
    cfg: RecorderConfig,
    apis: HashMap<String, Api<Event>>,
}

impl WriteCtx {
    fn api(&mut self, namespace: &str) -> Api<Event> {
        self.apis
            .entry(namespace.to_string())
            .or_insert_with(|| Api::namespaced(self.client.clone(), namespace))
            .clone()
    }

    fn write(&mut self, w: Write) -> futures::future::BoxFuture<'static, Outcome> {
        match w {
            Write::Create {
                key,
                name,
                occurrence,
                event_time,
            } => {
                let api = self.api(&occurrence.regarding.namespace);
                let body = event_body(&self.cfg, &name, &occurrence, event_time);
                Box::pin(async move {
                    let ev: Event = match serde_json::from_value(body) {
                        Ok(ev) => ev,
                        Err(e) => return Outcome::Failed(key, e.to_string()),
                    };
                    match api.create(&PostParams::default(), &ev).await {
                        Ok(_) => Outcome::Created(key),
                        Err(e) => Outcome::Failed(key, e.to_string()),
                    }
                })
            }
            Write::Series {
                key,
                namespace,
                name,
                count,
                last_observed,
            } => {
                let api = self.api(&namespace);
                let patch = json!({"series": {
                    "count": count,
                    "lastObservedTime": rfc3339_micros(last_observed),
                }});
                Box::pin(async move {
                    match api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => Outcome::Patched,
                        Err(e) => Outcome::Failed(key, e.to_string()),
                    }
                })
            }
        }
    }
}

/// The core/v1 Event for a new occurrence: `eventTime` set, `first/lastTimestamp` and `source`
/// empty, `reportingComponent`/`reportingInstance` naming the scheduler.
pub fn event_body(
    cfg: &RecorderConfig,
    name: &str,
    occ: &Occurrence,
    event_time: Timestamp,
) -> Value {
    let r = &occ.regarding;
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": r.namespace},
        "involvedObject": {
            "kind": r.kind,
            "namespace": r.namespace,
            "name": r.name,
            "uid": r.uid,
            "apiVersion": r.api_version,
            "resourceVersion": r.resource_version,
        },
        "reason": occ.reason,
        "message": occ.note,
        "type": occ.type_,
        "eventTime": rfc3339_micros(event_time),
        "action": occ.action,
        "reportingComponent": cfg.reporting_controller,
        "reportingInstance": cfg.reporting_instance,
    })
}
