//! A revisioned key-value store with watch-from-revision.
//!
//! The store knows nothing of Kubernetes: it keeps bytes under string keys. Every write gets the
//! next value of one global revision counter (it becomes `resourceVersion` in the API), and a
//! watcher can ask for every change under a prefix after a given revision. The embedded backend
//! ([`redb_store::RedbStore`]) is the default; [`etcd_store::EtcdStore`] implements the same
//! [`Store`] trait on etcd, for several servers sharing one cluster.

use std::pin::Pin;

use futures::Stream;

pub mod conformance;
pub mod etcd_store;
pub mod redb_store;

pub use etcd_store::EtcdStore;
pub use redb_store::{Options, RedbStore, StoreStats};

/// One global, strictly increasing revision. 0 means "no revision".
pub type Revision = u64;

/// A stored value with its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision that created this key (since its last deletion).
    pub create_revision: Revision,
    /// The revision of the last write to this key. For a deleted key in a watch event or a
    /// `delete` result, the revision of the deletion.
    pub mod_revision: Revision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created (`prev` is `None`) or updated (`prev` is the old value).
    Put,
    /// The key was deleted; `kv.value` is the last value it held, `kv.mod_revision` the deletion's revision.
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev: Option<KeyValue>,
}

/// The result of a (possibly paged) list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    /// The store's revision at the time of the read.
    pub revision: Revision,
    /// True when `limit` cut the result short: more keys follow the last one returned.
    pub more: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("key not found")]
    NotFound,
    #[error("key already exists")]
    AlreadyExists,
    /// The key's mod_revision differs from the expected one.
    #[error("conflict: the key was modified (current revision {current})")]
    Conflict { current: Revision },
    /// The requested revision is older than the oldest one the store still has history for.
    #[error("required revision {requested} has been compacted (oldest available {oldest})")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    /// A watcher fell too far behind the writers and was dropped; it must re-list and re-watch.
    #[error("watcher fell behind and was closed")]
    WatcherLagged,
    #[error("store error: {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A stream of changes; an `Err` item ends it (e.g. [`StoreError::WatcherLagged`]).
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

/// The storage contract the API server is written against.
///
/// Writes are durable when they return `Ok`: an acknowledged write survives a crash of the process.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Keys starting with `prefix`, in key order, strictly after `start_after` when given, at most
    /// `limit` of them (0 = no limit).
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListResult>;

    /// Number of keys under `prefix`.
    async fn count(&self, prefix: &str) -> Result<u64>;

    /// Creates `key`; `AlreadyExists` if it is present.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue>;

    /// Replaces the value of an existing `key`; `NotFound` if absent, `Conflict` if
    /// `expected_mod_revision` is given and differs from the key's mod_revision.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: Option<Revision>,
    ) -> Result<KeyValue>;

    /// Deletes `key` and returns its last value (with `mod_revision` = the deletion's revision);
    /// `NotFound` if absent, `Conflict` on a revision mismatch.
    async fn delete(&self, key: &str, expected_mod_revision: Option<Revision>) -> Result<KeyValue>;

    /// Every change under `prefix` with a revision strictly greater than `after`, first the
    /// retained history, then live. `Compacted` when that history is no longer available.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// The revision of the last write.
    async fn current_revision(&self) -> Result<Revision>;
}
