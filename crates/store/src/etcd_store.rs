//! The etcd backend: the [`Store`] contract on etcd v3 (3.4+), for servers that share a cluster.
//!
//! Why it exists: when one machine is not enough, several skiff servers serve one cluster from
//! one etcd, as Kubernetes' API servers do. Every server reads and writes etcd directly; etcd's
//! revision is the store's revision (so it is the API's resourceVersion), creates and
//! conditional updates are etcd transactions comparing `create_revision` / `mod_revision`, and a
//! watch is an etcd watch from `after + 1` with previous values.
//!
//! It speaks etcd's JSON gateway (`/v3/kv/*`, `/v3/watch`: the gRPC API with base64 bytes and
//! int64s as strings) over HTTP/1.1 with hyper, which the tree already has; a gRPC client would
//! add tonic, prost and a `protoc` build step for the same five calls.
//!
//! History: etcd keeps every revision until compacted. [`EtcdStore::spawn_compactor`] compacts
//! what is older than one interval, as Kubernetes' API server does every 5 minutes, coordinated
//! through one key so that several servers compact once per interval between them. A watch from
//! a compacted revision gets [`StoreError::Compacted`] (410 Gone in the API).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{
    EventKind, KeyValue, ListResult, Result, Revision, Store, StoreError, WatchEvent, WatchStream,
};

/// The key the compactors of all servers coordinate through (its value: the revision the next
/// compaction may remove history up to).
const COMPACT_KEY: &str = "/skiff/compact_rev_key";
/// The longest a unary call (range, txn, compaction) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// An etcd v3 cluster as a [`Store`].
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    /// The endpoint that answered last; requests start there and move on when it cannot be
    /// reached.
    current: AtomicUsize,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// Increments the last byte that can be incremented: the end of the range of keys starting
/// with `prefix` (etcd's convention; an empty prefix means every key).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn b64(s: &[u8]) -> String {
    B64.encode(s)
}

fn int(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

/// A `KeyValue` from the gateway's JSON (absent fields are zero or empty).
fn kv(v: &Value) -> Result<KeyValue> {
    let key = B64
        .decode(v["key"].as_str().unwrap_or(""))
        .map_err(internal)?;
    let value = match v["value"].as_str() {
        Some(s) => B64.decode(s).map_err(internal)?,
        None => Vec::new(),
    };
    Ok(KeyValue {
        key: String::from_utf8(key).map_err(internal)?,
        value,
        create_revision: int(&v["create_revision"]),
        mod_revision: int(&v["mod_revision"]),
    })
}

fn header_revision(v: &Value) -> Revision {
    int(&v["header"]["revision"])
}

impl EtcdStore {
    /// A store on the etcd cluster at `endpoints` (`http://host:port`, comma-separated or
    /// several). Checks that it answers.
    pub async fn connect(endpoints: &[String]) -> Result<EtcdStore> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .flat_map(|e| e.split(','))
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(StoreError::Internal("no etcd endpoint given".into()));
        }
        for e in &endpoints {
            if !e.starts_with("http://") {
                return Err(StoreError::Internal(format!(
                    "etcd endpoint {e:?}: only http:// endpoints are supported (etcd's client port, e.g. http://127.0.0.1:2379)"
                )));
            }
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let store = EtcdStore {
            inner: Arc::new(Inner {
                endpoints,
                current: AtomicUsize::new(0),
                client,
            }),
        };
        store.current_revision().await.map_err(|e| {
            StoreError::Internal(format!(
                "etcd at {} does not answer: {e}",
                store.inner.endpoints.join(",")
            ))
        })?;
        Ok(store)
    }

    /// POSTs `body` to `path` on the current endpoint, moving to the next endpoint when one
    /// cannot be reached (the request was never sent, so no write is applied twice).
    async fn call(&self, path: &str, body: Value) -> Result<Value> {
        let exchange = async {
            let resp = self.send(path, &body).await?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(internal)?
                .to_bytes();
            Ok::<_, StoreError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                StoreError::Internal(format!(
                    "etcd did not answer {path} within {CALL_TIMEOUT:?}"
                ))
            })??;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::Internal(format!(
                "etcd answered {status} with a body that is not JSON: {e}"
            ))
        })?;
        if !status.is_success() {
            let msg = v["error"]
                .as_str()
                .or(v["message"].as_str())
                .unwrap_or("unknown error");
            return Err(StoreError::Internal(format!("etcd: {msg} ({status})")));
        }
        Ok(v)
    }

    async fn send(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        let n = self.inner.endpoints.len();
        let start = self.inner.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            let req = hyper::Request::post(format!("{}{path}", self.inner.endpoints[idx]))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .map_err(internal)?;
            match self.inner.client.request(req).await {
                Ok(r) => {
                    self.inner.current.store(idx, Ordering::Relaxed);
                    return Ok(r);
                }
                Err(e) if e.is_connect() => last = Some(e),
                Err(e) => return Err(StoreError::Internal(format!("etcd: {e}"))),
            }
        }
        Err(StoreError::Internal(format!(
            "cannot reach etcd at {}: {}",
            self.inner.endpoints.join(","),
            last.map(|e| e.to_string()).unwrap_or_default()
        )))
    }

    /// A transaction: `compare` all true → `success`, else `failure`. Returns (succeeded, the
    /// whole response).
    async fn txn(&self, compare: Value, success: Value, failure: Value) -> Result<(bool, Value)> {
        let v = self
            .call(
                "/v3/kv/txn",
                json!({"compare": compare, "success": success, "failure": failure}),
            )
            .await?;
        Ok((v["succeeded"].as_bool().unwrap_or(false), v))
    }

    /// `op` on the existing key `k` (base64), if its mod_revision is `expected` (when given):
    /// the operation's response and the revision of the write; NotFound or Conflict otherwise.
    async fn conditional(
        &self,
        k: &str,
        expected: Option<Revision>,
        op: Value,
    ) -> Result<(Value, Revision)> {
        let compare = match expected {
            Some(r) => {
                json!([{"target": "MOD", "key": k, "mod_revision": r.to_string(), "result": "EQUAL"}])
            }
            None => {
                json!([{"target": "CREATE", "key": k, "create_revision": "0", "result": "GREATER"}])
            }
        };
        let (ok, mut v) = self
            .txn(compare, json!([op]), json!([{"request_range": {"key": k}}]))
            .await?;
        let resp = v["responses"][0].take();
        if !ok {
            return match resp["response_range"]["kvs"].get(0) {
                None => Err(StoreError::NotFound),
                Some(cur) => Err(StoreError::Conflict {
                    current: kv(cur)?.mod_revision,
                }),
            };
        }
        Ok((resp, header_revision(&v)))
    }

    /// Removes history older than `revision` (etcd's compaction).
    pub async fn compact(&self, revision: Revision) -> Result<()> {
        self.call(
            "/v3/kv/compaction",
            json!({"revision": revision.to_string(), "physical": true}),
        )
        .await
        .map(|_| ())
    }

    /// Every `interval`, compacts history older than the previous interval. Several servers
    /// sharing the etcd take turns through one key, so history is compacted once per interval.
    pub fn spawn_compactor(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut seen: Revision = 0;
            loop {
                tokio::time::sleep(interval).await;
                match store.compact_round(seen).await {
                    Ok(v) => seen = v,
                    Err(e) => tracing::warn!(error = %e, "etcd compaction failed; retrying later"),
                }
            }
        })
    }

    /// One compactor round: if nobody else moved the compaction key since we last saw it (its
    /// mod_revision is `seen`), record the current revision there and compact up to the
    /// revision recorded the round before. Returns the key's new mod_revision.
    async fn compact_round(&self, seen: Revision) -> Result<Revision> {
        let key = b64(COMPACT_KEY.as_bytes());
        let now = self.current_revision().await?;
        let (ok, v) = self
            .txn(
                json!([{"target": "MOD", "key": key, "mod_revision": seen.to_string(), "result": "EQUAL"}]),
                json!([{"request_put": {"key": key, "value": b64(now.to_string().as_bytes()), "prev_kv": true}}]),
                json!([{"request_range": {"key": key}}]),
            )
            .await?;
        let resp = &v["responses"][0];
        if !ok {
            // Another server compacts this round; follow its key.
            let cur = resp["response_range"]["kvs"]
                .get(0)
                .map(kv)
                .transpose()?
                .map_or(0, |k| k.mod_revision);
            return Ok(cur);
        }
        let prev = &resp["response_put"]["prev_kv"];
        if !prev.is_null() {
            let prev = kv(prev)?;
            let upto: Revision = String::from_utf8_lossy(&prev.value).parse().unwrap_or(0);
            if upto > 0 {
                match self.compact(upto).await {
                    Ok(()) => tracing::info!(revision = upto, "etcd history compacted"),
                    // Already compacted past it (by hand, or a restarted round).
                    Err(StoreError::Internal(m)) if m.contains("compacted") => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(header_revision(&v))
    }

    /// Compacted history check for a watch from `after`: a read at revision `after + 1`.
    async fn check_history(&self, prefix: &str, after: Revision) -> Result<()> {
        let res = self
            .call(
                "/v3/kv/range",
                json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix.as_bytes())),
                       "revision": (after + 1).to_string(), "count_only": true}),
            )
            .await;
        match res {
            Err(StoreError::Internal(m)) if m.contains("compacted") => Err(StoreError::Compacted {
                requested: after,
                oldest: self.compact_revision(prefix, after).await,
            }),
            // A revision in the future: the watch waits for it.
            Err(StoreError::Internal(m)) if m.contains("future revision") => Ok(()),
            Err(e) => Err(e),
            Ok(_) => Ok(()),
        }
    }

    /// The revision history was compacted to: etcd tells it when it cancels a watch from a
    /// compacted revision. Falls back to the current revision.
    async fn compact_revision(&self, prefix: &str, after: Revision) -> Revision {
        let probe = async {
            let mut lines = self.open_watch(prefix, after).await.ok()?;
            while let Some(Ok(msg)) = lines.recv().await {
                let c = int(&msg["result"]["compact_revision"]);
                if c > 0 {
                    return Some(c);
                }
            }
            None
        };
        match tokio::time::timeout(Duration::from_secs(5), probe).await {
            Ok(Some(c)) => c,
            _ => self.current_revision().await.unwrap_or(0),
        }
    }

    /// Opens an etcd watch on `prefix` from `after + 1` (with previous values); its messages
    /// arrive on the channel, one JSON object each, until the stream ends or fails.
    async fn open_watch(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<mpsc::Receiver<Result<Value>>> {
        let body = json!({"create_request": {
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix.as_bytes())),
            "start_revision": (after + 1).to_string(),
            "prev_kv": true,
        }});
        let resp = self.send("/v3/watch", &body).await?;
        if !resp.status().is_success() {
            return Err(StoreError::Internal(format!(
                "etcd refused the watch: {}",
                resp.status()
            )));
        }
        let (tx, rx) = mpsc::channel::<Result<Value>>(256);
        tokio::spawn(async move {
            let mut body = resp.into_body();
            let mut buf: Vec<u8> = Vec::new();
            loop {
                // The consumer gone, the connection (and etcd's watcher) goes too, even on a
                // prefix that never changes again.
                let frame = tokio::select! {
                    f = body.frame() => f,
                    _ = tx.closed() => return,
                };
                let data = match frame {
                    Some(Ok(f)) => match f.into_data() {
                        Ok(d) => d,
                        Err(_) => continue,
                    },
                    Some(Err(e)) => {
                        let _ = tx.send(Err(internal(format!("etcd watch: {e}")))).await;
                        return;
                    }
                    None => {
                        let _ = tx.send(Err(internal("etcd closed the watch stream"))).await;
                        return;
                    }
                };
                buf.extend_from_slice(&data);
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let msg = serde_json::from_slice(&line)
                        .map_err(|e| internal(format!("etcd watch: {e}")));
                    let failed = msg.is_err();
                    if tx.send(msg).await.is_err() || failed {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let v = self
            .call("/v3/kv/range", json!({"key": b64(key.as_bytes())}))
            .await?;
        v["kvs"].get(0).map(kv).transpose()
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListResult> {
        // Strictly after `start_after`, and never before the prefix.
        let from = match start_after {
            Some(k) if k.as_bytes() >= prefix.as_bytes() => {
                let mut k = k.as_bytes().to_vec();
                k.push(0);
                k
            }
            _ => prefix.as_bytes().to_vec(),
        };
        let v = self
            .call(
                "/v3/kv/range",
                json!({"key": b64(&from), "range_end": b64(&prefix_end(prefix.as_bytes())),
                       "limit": limit.to_string()}),
            )
            .await?;
        let items = v["kvs"]
            .as_array()
            .map(|a| a.iter().map(kv).collect::<Result<Vec<_>>>())
            .transpose()?
            .unwrap_or_default();
        Ok(ListResult {
            items,
            revision: header_revision(&v),
            more: v["more"].as_bool().unwrap_or(false),
        })
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        let v = self
            .call(
                "/v3/kv/range",
                json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix.as_bytes())),
                       "count_only": true}),
            )
            .await?;
        Ok(int(&v["count"]))
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        let k = b64(key.as_bytes());
        let (ok, v) = self
            .txn(
                json!([{"target": "CREATE", "key": k, "create_revision": "0", "result": "EQUAL"}]),
                json!([{"request_put": {"key": k, "value": b64(&value)}}]),
                json!([]),
            )
            .await?;
        if !ok {
            return Err(StoreError::AlreadyExists);
        }
        let rev = header_revision(&v);
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision: rev,
            mod_revision: rev,
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: Option<Revision>,
    ) -> Result<KeyValue> {
        let k = b64(key.as_bytes());
        let op = json!({"request_put": {"key": k, "value": b64(&value), "prev_kv": true}});
        let (resp, revision) = self.conditional(&k, expected_mod_revision, op).await?;
        let prev = kv(&resp["response_put"]["prev_kv"])?;
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision: prev.create_revision,
            mod_revision: revision,
        })
    }

    async fn delete(&self, key: &str, expected_mod_revision: Option<Revision>) -> Result<KeyValue> {
        let k = b64(key.as_bytes());
        let op = json!({"request_delete_range": {"key": k, "prev_kv": true}});
        let (resp, revision) = self.conditional(&k, expected_mod_revision, op).await?;
        let prev = resp["response_delete_range"]["prev_kvs"]
            .get(0)
            .map(kv)
            .transpose()?
            .ok_or(StoreError::NotFound)?;
        Ok(KeyValue {
            mod_revision: revision,
            ..prev
        })
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        self.check_history(prefix, after).await?;
        let mut lines = self.open_watch(prefix, after).await?;
        let (tx, rx) = mpsc::channel::<Result<WatchEvent>>(1024);
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = lines.recv() => m,
                    _ = tx.closed() => return,
                };
                let Some(msg) = msg else { return };
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let r = &msg["result"];
                if r["canceled"].as_bool() == Some(true) {
                    let compact = int(&r["compact_revision"]);
                    let err = if compact > 0 {
                        StoreError::Compacted {
                            requested: after,
                            oldest: compact,
                        }
                    } else {
                        internal(format!(
                            "etcd canceled the watch on {prefix}: {}",
                            r["cancel_reason"].as_str().unwrap_or("no reason given")
                        ))
                    };
                    let _ = tx.send(Err(err)).await;
                    return;
                }
                if !msg["error"].is_null() {
                    let _ = tx
                        .send(Err(internal(format!("etcd watch: {}", msg["error"]))))
                        .await;
                    return;
                }
                for ev in r["events"].as_array().into_iter().flatten() {
                    let out = watch_event(ev);
                    let failed = out.is_err();
                    if tx.send(out).await.is_err() || failed {
                        return;
                    }
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn current_revision(&self) -> Result<Revision> {
        let v = self
            .call(
                "/v3/kv/range",
                json!({"key": b64(b"/"), "range_end": b64(b"0"), "count_only": true}),
            )
            .await?;
        Ok(header_revision(&v))
    }
}

/// One etcd watch event as the store's [`WatchEvent`]: a delete carries the last value it held.
fn watch_event(ev: &Value) -> Result<WatchEvent> {
    let mut cur = kv(&ev["kv"])?;
    let prev = if ev["prev_kv"].is_null() {
        None
    } else {
        Some(kv(&ev["prev_kv"])?)
    };
    if ev["type"].as_str() == Some("DELETE") {
        let prev = prev.ok_or_else(|| internal("etcd delete event without its previous value"))?;
        cur.value = prev.value.clone();
        cur.create_revision = prev.create_revision;
        return Ok(WatchEvent {
            kind: EventKind::Delete,
            kv: cur,
            prev: Some(prev),
        });
    }
    Ok(WatchEvent {
        kind: EventKind::Put,
        prev: if cur.create_revision == cur.mod_revision {
            None
        } else {
            prev
        },
        kv: cur,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn events_from_the_gateway() {
        let put: Value = serde_json::from_str(
            r#"{"kv":{"key":"L2EveA==","create_revision":"4","mod_revision":"5","version":"2","value":"eQ=="},
                "prev_kv":{"key":"L2EveA==","create_revision":"4","mod_revision":"4","version":"1","value":"eA=="}}"#,
        )
        .unwrap();
        let e = watch_event(&put).unwrap();
        assert_eq!(e.kind, EventKind::Put);
        assert_eq!(e.kv.key, "/a/x");
        assert_eq!(e.kv.value, b"y");
        assert_eq!(e.prev.unwrap().value, b"x");
        let del: Value = serde_json::from_str(
            r#"{"type":"DELETE","kv":{"key":"L2EvYg==","mod_revision":"3"},
                "prev_kv":{"key":"L2EvYg==","create_revision":"2","mod_revision":"2","version":"1","value":"aGVsbG8="}}"#,
        )
        .unwrap();
        let e = watch_event(&del).unwrap();
        assert_eq!(e.kind, EventKind::Delete);
        assert_eq!(e.kv.value, b"hello");
        assert_eq!(e.kv.mod_revision, 3);
        assert_eq!(e.kv.create_revision, 2);
    }
}
