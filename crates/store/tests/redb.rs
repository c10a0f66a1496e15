//! Runs the conformance suite against [`RedbStore`], plus the behaviour specific to the embedded
//! backend: options for history and fan-out size, persistence across reopen, clean shutdown.

use std::sync::Arc;

use futures::StreamExt;
use skiff_store::{Options, RedbStore, Store, StoreError, conformance};

fn open(dir: &tempfile::TempDir, options: Options) -> RedbStore {
    RedbStore::open_with(&dir.path().join("nested/dir/store.redb"), options).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, Options::default());
    conformance::run_all(Arc::new(store.clone())).await;
    let stats = store.stats();
    assert!(
        stats.commits > 0 && stats.commits <= stats.writes,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_beyond_small_history() {
    let dir = tempfile::tempdir().unwrap();
    let history = 10;
    let store = open(
        &dir,
        Options {
            history,
            ..Options::default()
        },
    );
    conformance::check_compacted(&store, "/c", history as u64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_lags() {
    let dir = tempfile::tempdir().unwrap();
    let capacity = 4;
    let options = Options {
        broadcast_capacity: capacity,
        ..Options::default()
    };
    let store = open(&dir, options);
    conformance::check_lagged(&store, "/l", capacity).await;
    // Other watchers are unaffected.
    let mut watch = store
        .watch("/l", store.current_revision().await.unwrap())
        .await
        .unwrap();
    let kv = store.create("/l/after", vec![]).await.unwrap();
    assert_eq!(conformance::next_event(&mut watch).await.kv, kv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_and_data_persist_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, Options::default());
    let mut last = None;
    for i in 0..5u8 {
        last = Some(store.create(&format!("/p/{i}"), vec![i]).await.unwrap());
    }
    let last = last.unwrap();
    store.delete("/p/0", None).await.unwrap();
    let before = store.current_revision().await.unwrap();
    assert_eq!(before, last.mod_revision + 1);
    drop(store); // stops the writer and releases the file

    let store = open(&dir, Options::default());
    assert_eq!(store.current_revision().await.unwrap(), before);
    assert_eq!(store.get("/p/4").await.unwrap(), Some(last));
    assert_eq!(store.count("/p/").await.unwrap(), 4);
    assert_eq!(store.list("/p/", None, 0).await.unwrap().revision, before);

    // History does not survive a restart.
    let err = store.watch("/p/", before - 1).await.err();
    assert_eq!(
        err,
        Some(StoreError::Compacted {
            requested: before - 1,
            oldest: before
        })
    );
    let mut watch = store.watch("/p/", before).await.unwrap();
    let kv = store.create("/p/new", vec![]).await.unwrap();
    assert_eq!(kv.mod_revision, before + 1, "the counter continues");
    assert_eq!(conformance::next_event(&mut watch).await.kv, kv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_store_ends_watches_and_releases_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, Options::default());
    let clone = store.clone();
    let mut watch = store.watch("/", 0).await.unwrap();
    store.create("/a", vec![]).await.unwrap();
    drop(store);
    // A clone keeps the store alive.
    clone.create("/b", vec![]).await.unwrap();
    drop(clone);
    assert_eq!(watch.next().await.unwrap().unwrap().kv.key, "/a");
    assert_eq!(watch.next().await.unwrap().unwrap().kv.key, "/b");
    assert!(watch.next().await.is_none());
    let store = open(&dir, Options::default());
    assert_eq!(store.count("/").await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_input_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        &dir,
        Options {
            history: 0,
            ..Options::default()
        },
    );
    store.create("", b"empty key".to_vec()).await.unwrap();
    store
        .create("\u{0}\u{10FFFF}", vec![0xff; 100_000])
        .await
        .unwrap();
    assert_eq!(store.count("").await.unwrap(), 2);
    let list = store
        .list("", Some("\u{10FFFF}"), usize::MAX)
        .await
        .unwrap();
    assert!(list.items.is_empty() && !list.more);
    assert!(store.watch("", 0).await.is_err(), "no history kept");
    assert!(store.watch("", u64::MAX).await.is_ok());
    assert_eq!(
        store.update("/x", vec![], Some(0)).await,
        Err(StoreError::NotFound)
    );
}
