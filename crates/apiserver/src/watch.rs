//! Watch streams: one JSON event per line over a chunked (or HTTP/2) response, as plain objects
//! or as single-row Tables for `kubectl get -w`. Selectors are applied with Kubernetes' transition
//! rules (an object that stops matching is sent as DELETED, one that starts matching as ADDED).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use jiff::Timestamp;
use serde_json::{Value, json};
use skiff_core::selector::{FieldSelector, LabelSelector};
use skiff_store::{EventKind, StoreError};
use tokio::sync::mpsc;

use crate::errors::{ApiError, ApiResult};
use crate::object;
use crate::query::Params;
use crate::resources::ResourceInfo;
use crate::rest::{self, Api, Target};
use crate::table::{self, IncludeObject};

/// How often a watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);
/// The longest a watch stays open when the client sets no timeout (Kubernetes: 30 to 60 minutes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct Encoder {
    info: &'static ResourceInfo,
    table: bool,
    include: IncludeObject,
    sent_columns: bool,
}

impl Encoder {
    fn event(&mut self, type_: &str, obj: &Value) -> Bytes {
        let object = if self.table {
            let rv = object::resource_version(obj).unwrap_or("").to_string();
            let t = table::table(
                self.info,
                std::slice::from_ref(obj),
                json!({"resourceVersion": rv}),
                self.include,
                !self.sent_columns,
                Timestamp::now(),
            );
            self.sent_columns = true;
            t
        } else {
            obj.clone()
        };
        line(&json!({"type": type_, "object": object}))
    }

    fn bookmark(&self, rv: u64) -> Bytes {
        let obj = json!({
            "kind": self.info.kind, "apiVersion": self.info.api_version(),
            "metadata": {"resourceVersion": rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}},
        });
        line(&json!({"type": "BOOKMARK", "object": obj}))
    }
}

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

fn error_line(e: &ApiError) -> Bytes {
    line(&json!({"type": "ERROR", "object": e.status()}))
}

pub async fn serve_watch(
    api: &Arc<Api>,
    t: &Target,
    params: &Params,
    as_table: bool,
) -> ApiResult<Response> {
    let info = t.info;
    let labels = params.label_selector()?;
    let fields = params.field_selector(info)?;
    let prefix = info.namespace_prefix(t.namespace.as_deref());
    let mut enc = Encoder {
        info,
        table: as_table,
        include: params.include_object(),
        sent_columns: false,
    };
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let bookmarks = params.flag("allowWatchBookmarks");

    // Where to start, and the synthetic ADDED events for "0" or an unset resourceVersion.
    let mut initial = Vec::new();
    let start = match params
        .get("resourceVersion")
        .filter(|r| !r.is_empty() && *r != "0")
    {
        Some(rv) => rv
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?,
        None => {
            let p = Params {
                pairs: params
                    .pairs
                    .iter()
                    .filter(|(k, _)| k == "labelSelector" || k == "fieldSelector")
                    .cloned()
                    .collect(),
            };
            let page = rest::list_page(api, info, t.namespace.as_deref(), &p).await?;
            initial = page.items;
            page.revision
        }
    };
    let stream = match api.store.watch(&prefix, start).await {
        Ok(s) => Ok(s),
        Err(e @ StoreError::Compacted { .. }) => Err(ApiError::from(e)),
        Err(e) => return Err(e.into()),
    };

    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let metrics = api.metrics.clone();
    tokio::spawn(async move {
        metrics.watchers.inc();
        let _guard = scopeguard(metrics.clone());
        // The whole stream, sends included, ends at the timeout: a client that stops reading
        // cannot keep the task (and its place in the store's fan-out) alive.
        let events = async move {
            for obj in &initial {
                if tx.send(enc.event("ADDED", obj)).await.is_err() {
                    return;
                }
            }
            let mut stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(error_line(&e)).await;
                    return;
                }
            };
            let mut tick = tokio::time::interval(BOOKMARK_EVERY);
            tick.tick().await;
            let mut last_rv = start;
            loop {
                tokio::select! {
                    _ = tick.tick(), if bookmarks => {
                        if tx.send(enc.bookmark(last_rv)).await.is_err() { return; }
                    }
                    _ = tx.closed() => return,
                    ev = stream.next() => {
                        let ev = match ev {
                            None => return,
                            Some(Err(StoreError::WatcherLagged)) => {
                                let e = ApiError::expired("the watch fell behind and was closed; please re-list and watch again");
                                let _ = tx.send(error_line(&e)).await;
                                return;
                            }
                            Some(Err(e)) => {
                                let _ = tx.send(error_line(&ApiError::from(e))).await;
                                return;
                            }
                            Some(Ok(ev)) => ev,
                        };
                        last_rv = ev.kv.mod_revision;
                        if let Some((type_, obj)) = transition(info, &ev, labels.as_ref(), fields.as_ref())
                            && tx.send(enc.event(type_, &obj)).await.is_err() { return; }
                    }
                }
            }
        };
        let _ = tokio::time::timeout(timeout, events).await;
    });
    let body = Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<Bytes, std::convert::Infallible>),
    );
    let ct = if as_table {
        table::TABLE_CONTENT_TYPE
    } else {
        "application/json"
    };
    Ok((
        StatusCode::OK,
        [("content-type", ct), ("cache-control", "no-cache, private")],
        body,
    )
        .into_response())
}

struct WatchGuard(crate::metrics::Metrics);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.watchers.dec();
    }
}

fn scopeguard(m: crate::metrics::Metrics) -> WatchGuard {
    WatchGuard(m)
}

/// The event a selected watcher sees for a store change, if any.
fn transition(
    info: &ResourceInfo,
    ev: &skiff_store::WatchEvent,
    labels: Option<&LabelSelector>,
    fields: Option<&FieldSelector>,
) -> Option<(&'static str, Value)> {
    let new = object::decode_stored(&ev.kv.value, ev.kv.mod_revision)?;
    let sel = |o: &Value| rest::selected(info, o, labels, fields);
    // Without selectors every object matches, and the previous value need not be decoded.
    let old_matched = match (labels, fields, ev.prev.as_ref()) {
        (_, _, None) => false,
        (None, None, Some(_)) => true,
        (_, _, Some(p)) => object::decode_stored(&p.value, p.mod_revision).is_some_and(|o| sel(&o)),
    };
    match ev.kind {
        EventKind::Delete => (old_matched || sel(&new)).then_some(("DELETED", new)),
        EventKind::Put => match (old_matched, sel(&new)) {
            (false, true) => Some(("ADDED", new)),
            (true, true) => Some(("MODIFIED", new)),
            (true, false) => Some(("DELETED", new)),
            (false, false) => None,
        },
    }
}
