//! The embedded backend: redb on local disk, writes grouped into durable commits.
//!
//! Why it exists: skiff must run without an external etcd, yet every acknowledged write has to
//! survive a crash and watchers must be able to resume from a revision. A durable commit costs a
//! disk flush (~0.2 ms), so one commit per write would cap throughput at a few thousand writes
//! per second. Instead a single writer thread drains every pending request, applies them all in
//! one redb write transaction and commits once (group commit), then answers each caller.
//!
//! Layout on disk:
//! - table `kv`: key → `create_revision (u64 LE) ‖ mod_revision (u64 LE) ‖ value bytes`;
//! - table `meta`: `"revision"` → the last assigned revision, written in the same transaction
//!   as the writes that consumed it, so the counter continues after a restart.
//!
//! Watch support is in memory: a ring of the most recent events ([`Options::history`]) plus a
//! broadcast channel carrying each committed batch to live watchers. Both are updated under one
//! lock after the commit is durable, so a new watcher that reads the ring and subscribes while
//! holding that lock sees every later event exactly once, in revision order.

use std::collections::VecDeque;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, StorageError,
    TableDefinition,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{
    EventKind, KeyValue, ListResult, Result, Revision, Store, StoreError, WatchEvent, WatchStream,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
/// Bytes of the value header: create_revision and mod_revision, both u64 little-endian.
const HEADER: usize = 16;

/// Tuning knobs of a [`RedbStore`]; [`Options::default`] suits production.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// How many of the most recent events are kept in memory for `watch` to replay. A watch from
    /// an older revision gets [`StoreError::Compacted`]. Each event holds its value (and the
    /// previous value), so memory grows with this times the average object size.
    pub history: usize,
    /// How many committed batches a live watcher may fall behind before it is dropped with
    /// [`StoreError::WatcherLagged`]. One batch is one group commit (one or more events).
    pub broadcast_capacity: usize,
    /// The most write requests applied in one transaction.
    pub max_batch: usize,
    /// Capacity of the request queue in front of the writer thread; callers wait (async) when
    /// it is full.
    pub queue: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            history: 100_000,
            broadcast_capacity: 4_096,
            max_batch: 1_000,
            queue: 8_192,
        }
    }
}

/// Counters of the writer thread, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Durable commits (one per batch).
    pub commits: u64,
    /// Write requests processed, successful or not.
    pub writes: u64,
}

/// The embedded [`Store`]: a redb file with one group-committing writer thread.
///
/// Cheap to clone (an `Arc` inside). Dropping the last clone stops the writer thread after it
/// has committed every request already queued, and closes the database.
///
/// Scans (`list`, `count`) run redb read transactions on tokio's blocking pool
/// (`spawn_blocking`): a large `list` or a `count` walks many pages, which must never stall a
/// tokio worker thread. A point `get` runs inline (see its doc).
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// `None` only while dropping; its drop ends the writer's receive loop.
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
}

/// State shared by the handles, the writer thread and read tasks.
struct Shared {
    db: Database,
    watch: Mutex<WatchHub>,
    /// The last published revision (commit durable and events in the history).
    current: AtomicU64,
    commits: AtomicU64,
    writes: AtomicU64,
}

/// The watch history and the live fan-out, always updated together under one lock.
struct WatchHub {
    /// The most recent events, revisions contiguous and increasing.
    events: VecDeque<Arc<WatchEvent>>,
    /// Every event with a revision greater than this is in `events` (or not yet published).
    start: Revision,
    capacity: usize,
    live: broadcast::Sender<Batch>,
}

/// The events of one commit, shared by every live watcher.
type Batch = Arc<Vec<Arc<WatchEvent>>>;

enum Op {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Option<Revision>,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<KeyValue>>,
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

fn encode(create_revision: Revision, mod_revision: Revision, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + value.len());
    out.extend_from_slice(&create_revision.to_le_bytes());
    out.extend_from_slice(&mod_revision.to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn decode(key: &str, raw: &[u8]) -> Result<KeyValue> {
    if raw.len() < HEADER {
        return Err(StoreError::Internal(format!(
            "corrupt record for key {key:?}"
        )));
    }
    let (create, rest) = raw.split_at(8);
    let (modr, value) = rest.split_at(8);
    Ok(KeyValue {
        key: key.to_owned(),
        value: value.to_vec(),
        create_revision: u64::from_le_bytes(create.try_into().map_err(internal)?),
        mod_revision: u64::from_le_bytes(modr.try_into().map_err(internal)?),
    })
}

impl RedbStore {
    /// Opens (or creates, with its parent directory) the store at `path` with default options.
    pub fn open(path: &Path) -> Result<RedbStore> {
        Self::open_with(path, Options::default())
    }

    /// Opens (or creates) the store at `path`. Watch history starts empty: a watch from before
    /// the revision at open gets [`StoreError::Compacted`].
    pub fn open_with(path: &Path, options: Options) -> Result<RedbStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(internal)?;
        }
        let db = Database::create(path).map_err(internal)?;
        // Create the tables up front so reads never meet a missing table.
        let txn = db.begin_write().map_err(internal)?;
        let revision = {
            txn.open_table(KV).map_err(internal)?;
            let meta = txn.open_table(META).map_err(internal)?;
            meta.get(META_REVISION)
                .map_err(internal)?
                .map_or(0, |g| g.value())
        };
        txn.commit().map_err(internal)?;

        let (live, _) = broadcast::channel(options.broadcast_capacity.max(1));
        let shared = Arc::new(Shared {
            db,
            watch: Mutex::new(WatchHub {
                events: VecDeque::new(),
                start: revision,
                capacity: options.history,
                live,
            }),
            current: AtomicU64::new(revision),
            commits: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let writer = Writer {
            shared: shared.clone(),
            revision,
            max_batch: options.max_batch.max(1),
        };
        let handle = std::thread::Builder::new()
            .name("skiff-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(internal)?;
        Ok(RedbStore {
            inner: Arc::new(Inner {
                shared,
                requests: Some(tx),
                writer: Some(handle),
            }),
        })
    }

    /// Counters of the writer thread since open.
    pub fn stats(&self) -> StoreStats {
        let s = &self.inner.shared;
        StoreStats {
            commits: s.commits.load(Ordering::Relaxed),
            writes: s.writes.load(Ordering::Relaxed),
        }
    }

    async fn write(&self, op: Op) -> Result<KeyValue> {
        let closed = || StoreError::Internal("store writer has stopped".into());
        let sender = self.inner.requests.as_ref().ok_or_else(closed)?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(Request { op, reply })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Runs `f` with a read transaction on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(ReadTransaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.inner.shared.clone();
        tokio::task::spawn_blocking(move || f(shared.db.begin_read().map_err(internal)?))
            .await
            .map_err(internal)?
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and exit; wait for it so the
        // database file is released when the last handle is gone.
        self.requests.take();
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
    }
}

/// The writer thread's state: it alone assigns revisions.
struct Writer {
    shared: Arc<Shared>,
    /// The last revision committed.
    revision: Revision,
    max_batch: usize,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while rx.blocking_recv_many(&mut batch, self.max_batch) > 0 {
            self.commit_batch(&mut batch);
        }
    }

    /// Applies `batch` in one transaction, commits, publishes the events, answers every caller.
    fn commit_batch(&mut self, batch: &mut Vec<Request>) {
        let shared = self.shared.clone();
        shared
            .writes
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut results = Vec::with_capacity(batch.len());
        let mut revision = self.revision;
        let outcome = (|| -> std::result::Result<(), redb::Error> {
            let mut txn = shared.db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            {
                let mut kv = txn.open_table(KV)?;
                for req in batch.iter() {
                    results.push(apply(&mut kv, &req.op, revision + 1)?);
                    if results.last().is_some_and(|r| r.is_ok()) {
                        revision += 1;
                    }
                }
                if revision != self.revision {
                    txn.open_table(META)?.insert(META_REVISION, revision)?;
                }
            }
            txn.commit()?;
            Ok(())
        })();
        if let Err(e) = outcome {
            tracing::error!(error = %e, "store commit failed");
            for req in batch.drain(..) {
                let _ = req.reply.send(Err(internal(&e)));
            }
            return;
        }
        shared.commits.fetch_add(1, Ordering::Relaxed);
        self.revision = revision;
        let events: Vec<Arc<WatchEvent>> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        if !events.is_empty() {
            shared.publish(events, revision);
        }
        for (req, result) in batch.drain(..).zip(results) {
            let _ = req.reply.send(result.map(|ev| ev.kv.clone()));
        }
    }
}

/// Applies one write at revision `rev` (used only if it succeeds). The outer error is a storage
/// failure that aborts the whole batch; the inner one fails only this request.
fn apply(
    kv: &mut redb::Table<&str, &[u8]>,
    op: &Op,
    rev: Revision,
) -> std::result::Result<Result<Arc<WatchEvent>>, StorageError> {
    let key = match op {
        Op::Create { key, .. } | Op::Update { key, .. } | Op::Delete { key, .. } => key.as_str(),
    };
    let prev = match kv.get(key)? {
        Some(raw) => match decode(key, raw.value()) {
            Ok(prev) => Some(prev),
            Err(e) => return Ok(Err(e)),
        },
        None => None,
    };
    let check = |expected: &Option<Revision>| -> Result<KeyValue> {
        let prev = prev.clone().ok_or(StoreError::NotFound)?;
        match expected {
            Some(want) if *want != prev.mod_revision => Err(StoreError::Conflict {
                current: prev.mod_revision,
            }),
            _ => Ok(prev),
        }
    };
    let event = match op {
        Op::Create { value, .. } => {
            if prev.is_some() {
                return Ok(Err(StoreError::AlreadyExists));
            }
            kv.insert(key, encode(rev, rev, value).as_slice())?;
            let kv = KeyValue {
                key: key.to_owned(),
                value: value.clone(),
                create_revision: rev,
                mod_revision: rev,
            };
            WatchEvent {
                kind: EventKind::Put,
                kv,
                prev: None,
            }
        }
        Op::Update {
            value, expected, ..
        } => {
            let old = match check(expected) {
                Ok(old) => old,
                Err(e) => return Ok(Err(e)),
            };
            kv.insert(key, encode(old.create_revision, rev, value).as_slice())?;
            let kv = KeyValue {
                key: key.to_owned(),
                value: value.clone(),
                create_revision: old.create_revision,
                mod_revision: rev,
            };
            WatchEvent {
                kind: EventKind::Put,
                kv,
                prev: Some(old),
            }
        }
        Op::Delete { expected, .. } => {
            let old = match check(expected) {
                Ok(old) => old,
                Err(e) => return Ok(Err(e)),
            };
            kv.remove(key)?;
            let kv = KeyValue {
                mod_revision: rev,
                ..old.clone()
            };
            WatchEvent {
                kind: EventKind::Delete,
                kv,
                prev: Some(old),
            }
        }
    };
    Ok(Ok(Arc::new(event)))
}

impl Shared {
    fn hub(&self) -> MutexGuard<'_, WatchHub> {
        // A panic while holding the lock cannot leave the hub half-updated in a way that matters
        // more than losing the store, so recover the guard instead of propagating the poison.
        self.watch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes committed events visible to watchers: history first, then live, under one lock.
    fn publish(&self, events: Vec<Arc<WatchEvent>>, revision: Revision) {
        let mut hub = self.hub();
        hub.events.extend(events.iter().cloned());
        while hub.events.len() > hub.capacity {
            if let Some(old) = hub.events.pop_front() {
                hub.start = old.kv.mod_revision;
            }
        }
        self.current.store(revision, Ordering::Release);
        // An error only means nobody is watching.
        let _ = hub.live.send(Arc::new(events));
    }
}

/// The lower bound of a prefix scan that starts strictly after `start_after` when given.
fn scan_start<'a>(prefix: &'a str, start_after: Option<&'a str>) -> Bound<&'a str> {
    match start_after {
        Some(after) if after >= prefix => Bound::Excluded(after),
        _ => Bound::Included(prefix),
    }
}

#[async_trait::async_trait]
impl Store for RedbStore {
    /// A point lookup is answered on the calling thread: it touches a handful of pages that are
    /// almost always in redb's cache, and the hop to the blocking pool cost more than the read
    /// (thread wake-ups were the largest kernel cost in the API benchmark's profile).
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let txn = self.inner.shared.db.begin_read().map_err(internal)?;
        let table = txn.open_table(KV).map_err(internal)?;
        let raw = table.get(key).map_err(internal)?;
        raw.map(|raw| decode(key, raw.value())).transpose()
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListResult> {
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        self.read(move |txn| {
            let revision = txn
                .open_table(META)
                .map_err(internal)?
                .get(META_REVISION)
                .map_err(internal)?
                .map_or(0, |g| g.value());
            let table = txn.open_table(KV).map_err(internal)?;
            let start = scan_start(&prefix, start_after.as_deref());
            let range = table
                .range::<&str>((start, Bound::Unbounded))
                .map_err(internal)?;
            let mut items = Vec::new();
            let mut more = false;
            for entry in range {
                let (k, v) = entry.map_err(internal)?;
                let key = k.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                if limit > 0 && items.len() == limit {
                    more = true;
                    break;
                }
                items.push(decode(key, v.value())?);
            }
            Ok(ListResult {
                items,
                revision,
                more,
            })
        })
        .await
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        let prefix = prefix.to_owned();
        self.read(move |txn| {
            let table = txn.open_table(KV).map_err(internal)?;
            let range = table
                .range::<&str>((Bound::Included(prefix.as_str()), Bound::Unbounded))
                .map_err(internal)?;
            let mut n = 0;
            for entry in range {
                let (k, _) = entry.map_err(internal)?;
                if !k.value().starts_with(prefix.as_str()) {
                    break;
                }
                n += 1;
            }
            Ok(n)
        })
        .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        let key = key.to_owned();
        self.write(Op::Create { key, value }).await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: Option<Revision>,
    ) -> Result<KeyValue> {
        let (key, expected) = (key.to_owned(), expected_mod_revision);
        self.write(Op::Update {
            key,
            value,
            expected,
        })
        .await
    }

    async fn delete(&self, key: &str, expected_mod_revision: Option<Revision>) -> Result<KeyValue> {
        let (key, expected) = (key.to_owned(), expected_mod_revision);
        self.write(Op::Delete { key, expected }).await
    }

    /// `Compacted { requested: after, oldest }` where `oldest` is the smallest `after` the
    /// retained history can still serve.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let prefix = prefix.to_owned();
        let (backlog, rx) = {
            let hub = self.inner.shared.hub();
            if after < hub.start {
                return Err(StoreError::Compacted {
                    requested: after,
                    oldest: hub.start,
                });
            }
            let from = hub.events.partition_point(|e| e.kv.mod_revision <= after);
            let backlog: VecDeque<_> = hub
                .events
                .range(from..)
                .filter(|e| e.kv.key.starts_with(prefix.as_str()))
                .cloned()
                .collect();
            (backlog, hub.live.subscribe())
        };
        let state = WatchState {
            backlog,
            rx,
            prefix,
            after,
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(state, WatchState::next)))
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.inner.shared.current.load(Ordering::Acquire))
    }
}

/// One watcher: replayed and received events not yet yielded, then the live subscription.
struct WatchState {
    backlog: VecDeque<Arc<WatchEvent>>,
    rx: broadcast::Receiver<Batch>,
    prefix: String,
    after: Revision,
    done: bool,
}

impl WatchState {
    async fn next(mut self) -> Option<(Result<WatchEvent>, WatchState)> {
        loop {
            if self.done {
                return None;
            }
            if let Some(ev) = self.backlog.pop_front() {
                return Some((Ok(WatchEvent::clone(&ev)), self));
            }
            match self.rx.recv().await {
                Ok(batch) => {
                    let (prefix, after) = (self.prefix.as_str(), self.after);
                    self.backlog.extend(
                        batch
                            .iter()
                            .filter(|e| e.kv.mod_revision > after && e.kv.key.starts_with(prefix))
                            .cloned(),
                    );
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.done = true;
                    return Some((Err(StoreError::WatcherLagged), self));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips() {
        let raw = encode(3, 7, b"hello");
        let kv = decode("/k", &raw).unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision), (3, 7));
        assert_eq!(kv.value, b"hello");
        assert!(matches!(
            decode("/k", &raw[..5]),
            Err(StoreError::Internal(_))
        ));
    }

    #[test]
    fn scan_start_never_goes_before_prefix() {
        assert_eq!(scan_start("/b/", Some("/a")), Bound::Included("/b/"));
        assert_eq!(scan_start("/b/", Some("/b/x")), Bound::Excluded("/b/x"));
        assert_eq!(scan_start("/b/", None), Bound::Included("/b/"));
    }
}
