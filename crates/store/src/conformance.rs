//! A backend-independent conformance suite for [`Store`] implementations.
//!
//! Why it exists: the API server is written against the [`Store`] contract only, so every backend
//! (the embedded redb one, etcd later) must behave the same. Each check is a `pub async fn` that
//! panics with a message on a violation; a backend's tests call [`run_all`] and, for behaviour
//! that needs special setup, [`check_compacted`] and [`check_lagged`].
//!
//! The checks expect to be the only writers of the store while they run (some compare global
//! revisions) and keys under their `root` to be absent at the start. They need a multi-threaded
//! tokio runtime.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::{EventKind, Revision, Store, StoreError, WatchEvent, WatchStream};

/// How long a check waits for an expected watch event.
const WAIT: Duration = Duration::from_secs(20);

/// Runs every check that needs no special store configuration, under the root `/conformance`.
pub async fn run_all(store: Arc<dyn Store>) {
    let root = "/conformance";
    check_crud(&*store, &format!("{root}/crud")).await;
    check_errors(&*store, &format!("{root}/errors")).await;
    check_revisions(&*store, &format!("{root}/revisions")).await;
    check_list_paging(&*store, &format!("{root}/list")).await;
    check_prefix_isolation(&*store, &format!("{root}/iso")).await;
    check_watch_events(&*store, &format!("{root}/watch")).await;
    check_watch_no_gap(store.clone(), &format!("{root}/gap")).await;
    check_races(store.clone(), &format!("{root}/race")).await;
    check_concurrent_creates(store.clone(), &format!("{root}/many"), 50, 2_000).await;
}

/// Waits for the next event of a watch; panics on an error, the end of the stream or a timeout.
pub async fn next_event(watch: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(WAIT, watch.next()).await {
        Ok(Some(Ok(ev))) => ev,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended unexpectedly"),
        Err(_) => panic!("no watch event within {WAIT:?}"),
    }
}

/// Create, get, update (with and without a precondition), delete, re-create.
pub async fn check_crud(store: &dyn Store, root: &str) {
    let key = format!("{root}/a");
    assert_eq!(store.get(&key).await.unwrap(), None);

    let created = store.create(&key, b"v1".to_vec()).await.unwrap();
    assert_eq!(created.key, key);
    assert_eq!(created.value, b"v1");
    assert!(created.create_revision > 0);
    assert_eq!(created.create_revision, created.mod_revision);
    assert!(store.current_revision().await.unwrap() >= created.mod_revision);
    assert_eq!(store.get(&key).await.unwrap(), Some(created.clone()));

    let updated = store
        .update(&key, b"v2".to_vec(), Some(created.mod_revision))
        .await
        .unwrap();
    assert_eq!(updated.value, b"v2");
    assert_eq!(updated.create_revision, created.create_revision);
    assert!(updated.mod_revision > created.mod_revision);
    let updated = store.update(&key, b"v3".to_vec(), None).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), Some(updated.clone()));

    let deleted = store
        .delete(&key, Some(updated.mod_revision))
        .await
        .unwrap();
    assert_eq!(deleted.value, b"v3", "delete returns the last value");
    assert_eq!(deleted.create_revision, created.create_revision);
    assert!(deleted.mod_revision > updated.mod_revision);
    assert_eq!(store.get(&key).await.unwrap(), None);

    let again = store.create(&key, b"v4".to_vec()).await.unwrap();
    assert!(again.create_revision > deleted.mod_revision);
    assert_eq!(store.delete(&key, None).await.unwrap().value, b"v4");
}

/// AlreadyExists, NotFound and Conflict, which change nothing and consume no revision.
pub async fn check_errors(store: &dyn Store, root: &str) {
    let key = format!("{root}/a");
    let missing = format!("{root}/missing");
    let kv = store.create(&key, b"x".to_vec()).await.unwrap();
    let rev = store.current_revision().await.unwrap();

    let err = store.create(&key, b"y".to_vec()).await.unwrap_err();
    assert_eq!(err, StoreError::AlreadyExists);
    let err = store.update(&missing, b"y".to_vec(), None).await;
    assert_eq!(err.unwrap_err(), StoreError::NotFound);
    assert_eq!(
        store.delete(&missing, None).await.unwrap_err(),
        StoreError::NotFound
    );
    let stale = Some(kv.mod_revision + 1000);
    let conflict = StoreError::Conflict {
        current: kv.mod_revision,
    };
    let err = store.update(&key, b"y".to_vec(), stale).await.unwrap_err();
    assert_eq!(err, conflict);
    assert_eq!(store.delete(&key, stale).await.unwrap_err(), conflict);
    let err = store.update(&missing, b"y".to_vec(), Some(1)).await;
    assert_eq!(err.unwrap_err(), StoreError::NotFound);

    assert_eq!(store.get(&key).await.unwrap(), Some(kv));
    assert_eq!(store.get(&missing).await.unwrap(), None);
    assert_eq!(
        store.current_revision().await.unwrap(),
        rev,
        "failed writes must not consume revisions"
    );
}

/// Sequential writes get consecutive revisions, and `current_revision` follows them.
pub async fn check_revisions(store: &dyn Store, root: &str) {
    let mut last = store.current_revision().await.unwrap();
    for i in 0..20 {
        let key = format!("{root}/{}", i % 5);
        let kv = if i < 5 {
            store.create(&key, vec![i]).await.unwrap()
        } else {
            store.update(&key, vec![i], None).await.unwrap()
        };
        assert_eq!(kv.mod_revision, last + 1, "revisions are consecutive");
        last = kv.mod_revision;
        assert_eq!(store.current_revision().await.unwrap(), last);
    }
}

/// `list` is in key order and pages with `start_after`/`limit`/`more`; `count` agrees.
pub async fn check_list_paging(store: &dyn Store, root: &str) {
    let prefix = format!("{root}/");
    let keys: Vec<String> = (0..25).map(|i| format!("{prefix}k{i:02}")).collect();
    // Insert out of order to prove the order comes from the keys.
    for key in keys.iter().rev() {
        store.create(key, key.as_bytes().to_vec()).await.unwrap();
    }
    store.create(&format!("{root}0"), vec![]).await.unwrap(); // just outside the prefix

    let all = store.list(&prefix, None, 0).await.unwrap();
    let names: Vec<&str> = all.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(names, keys.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!all.more);
    assert_eq!(all.revision, store.current_revision().await.unwrap());
    assert_eq!(store.count(&prefix).await.unwrap(), 25);

    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let page = store.list(&prefix, cursor.as_deref(), 10).await.unwrap();
        pages.push((page.items.len(), page.more));
        cursor = page.items.last().map(|kv| kv.key.clone());
        paged.extend(page.items);
        if !page.more {
            break;
        }
    }
    assert_eq!(pages, vec![(10, true), (10, true), (5, false)]);
    assert_eq!(paged, all.items);

    let exact = store.list(&prefix, None, 25).await.unwrap();
    assert_eq!((exact.items.len(), exact.more), (25, false));
    let last = store.list(&prefix, Some(&keys[24]), 10).await.unwrap();
    assert!(last.items.is_empty() && !last.more);
    let before = store.list(&prefix, Some("/"), 3).await.unwrap();
    assert_eq!(before.items, all.items[..3]);
    assert!(before.more);
    let mid = store.list(&prefix, Some(&keys[9]), 0).await.unwrap();
    assert_eq!(mid.items, all.items[10..]);
}

/// `/pods/` never sees `/podsx/` or `/pod`, in list, count and watch.
pub async fn check_prefix_isolation(store: &dyn Store, root: &str) {
    let pods = format!("{root}/pods/");
    let rev = store.current_revision().await.unwrap();
    let mut watch = store.watch(&pods, rev).await.unwrap();
    for key in ["pods/a", "podsx/c", "pod", "pods/b", "pods"] {
        store
            .create(&format!("{root}/{key}"), vec![])
            .await
            .unwrap();
    }
    let listed = store.list(&pods, None, 0).await.unwrap();
    let names: Vec<String> = listed.items.into_iter().map(|kv| kv.key).collect();
    assert_eq!(names, [format!("{pods}a"), format!("{pods}b")]);
    assert_eq!(store.count(&pods).await.unwrap(), 2);
    assert_eq!(store.count(&format!("{root}/podsx/")).await.unwrap(), 1);
    assert_eq!(store.count(&format!("{root}/pod")).await.unwrap(), 5);
    assert_eq!(next_event(&mut watch).await.kv.key, format!("{pods}a"));
    assert_eq!(next_event(&mut watch).await.kv.key, format!("{pods}b"));
}

/// Event contents (Put without/with `prev`, Delete with last value and `prev`), replay from a
/// revision in the middle, and history followed by live events.
pub async fn check_watch_events(store: &dyn Store, root: &str) {
    let prefix = format!("{root}/");
    let key = format!("{prefix}a");
    let start = store.current_revision().await.unwrap();
    let created = store.create(&key, b"1".to_vec()).await.unwrap();
    store.create(&format!("{root}x"), vec![]).await.unwrap(); // not under the prefix
    let updated = store.update(&key, b"2".to_vec(), None).await.unwrap();
    let deleted = store.delete(&key, None).await.unwrap();

    let mut watch = store.watch(&prefix, start).await.unwrap();
    let ev = next_event(&mut watch).await;
    assert_eq!(
        (ev.kind, &ev.kv, &ev.prev),
        (EventKind::Put, &created, &None)
    );
    let ev = next_event(&mut watch).await;
    assert_eq!(ev.kind, EventKind::Put);
    assert_eq!((ev.kv, ev.prev), (updated.clone(), Some(created.clone())));
    let ev = next_event(&mut watch).await;
    assert_eq!(ev.kind, EventKind::Delete);
    assert_eq!((&ev.kv, &ev.prev), (&deleted, &Some(updated.clone())));
    assert_eq!(ev.kv.value, b"2");
    assert_eq!(ev.kv.mod_revision, deleted.mod_revision);

    // Live, after the replayed history.
    let live = store
        .create(&format!("{prefix}b"), b"3".to_vec())
        .await
        .unwrap();
    assert_eq!(next_event(&mut watch).await.kv, live);

    // From the middle: strictly after the creation.
    let mut watch = store.watch(&prefix, created.mod_revision).await.unwrap();
    assert_eq!(next_event(&mut watch).await.kv, updated);
    assert_eq!(next_event(&mut watch).await.kv, deleted);
    assert_eq!(next_event(&mut watch).await.kv, live);

    // From the current revision (and beyond it): live events only.
    let now = store.current_revision().await.unwrap();
    let mut watch = store.watch(&prefix, now).await.unwrap();
    let mut ahead = store.watch(&prefix, now + 1).await.unwrap();
    let first = store.create(&format!("{prefix}c"), vec![]).await.unwrap();
    let second = store.create(&format!("{prefix}d"), vec![]).await.unwrap();
    assert_eq!(next_event(&mut watch).await.kv, first);
    assert_eq!(next_event(&mut watch).await.kv, second);
    assert_eq!(next_event(&mut ahead).await.kv, second);
}

/// Watchers started while many writers run each see exactly the matching acknowledged
/// revisions after their start point: in order, without gap or duplicate.
pub async fn check_watch_no_gap(store: Arc<dyn Store>, root: &str) {
    const WRITERS: usize = 8;
    const KEYS: usize = 60;
    const WATCHERS: u64 = 12;
    let prefix = format!("{root}/w/");
    let sentinel = format!("{prefix}~end");
    let begin = store.current_revision().await.unwrap();

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, prefix, root) = (store.clone(), prefix.clone(), root.to_owned());
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for k in 0..KEYS {
                let key = format!("{prefix}{w}/{k}");
                acked.push(store.create(&key, vec![1]).await.unwrap().mod_revision);
                if k % 2 == 0 {
                    let kv = store.update(&key, vec![2], None).await.unwrap();
                    acked.push(kv.mod_revision);
                }
                if k % 3 == 0 {
                    acked.push(store.delete(&key, None).await.unwrap().mod_revision);
                    // A neighbour outside the prefix, interleaved in the same revisions.
                    store
                        .create(&format!("{root}/x{w}/{k}"), vec![])
                        .await
                        .unwrap();
                }
            }
            acked
        }));
    }

    let (subscribed, mut ready) = tokio::sync::mpsc::channel::<()>(WATCHERS as usize);
    let mut watchers = Vec::new();
    for i in 0..WATCHERS {
        let (store, prefix, sentinel) = (store.clone(), prefix.clone(), sentinel.clone());
        let subscribed = subscribed.clone();
        watchers.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 3)).await;
            let now = store.current_revision().await.unwrap();
            // Some watchers start a little in the past to mix replay and live events.
            let after = now.saturating_sub(i * 5).max(begin);
            let mut watch = store.watch(&prefix, after).await.unwrap();
            subscribed.send(()).await.unwrap();
            let mut seen = Vec::new();
            loop {
                let ev = next_event(&mut watch).await;
                if ev.kv.key == sentinel {
                    return (after, seen);
                }
                seen.push(ev.kv.mod_revision);
            }
        }));
    }

    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    acked.sort_unstable();
    // The sentinel must come after every watcher's start point.
    for _ in 0..WATCHERS {
        ready.recv().await.unwrap();
    }
    store.create(&sentinel, vec![]).await.unwrap();

    for w in watchers {
        let (after, seen) = w.await.unwrap();
        let expected: Vec<Revision> = acked.iter().copied().filter(|r| *r > after).collect();
        assert_eq!(
            seen, expected,
            "watcher after {after} saw a gap, duplicate or reordering"
        );
    }
}

/// Concurrent conflicting writes (likely grouped into one commit): exactly one create of a key
/// and one update per expected revision wins, the others fail alone, and only winners consume
/// revisions.
pub async fn check_races(store: Arc<dyn Store>, root: &str) {
    const RACERS: usize = 20;
    let key = format!("{root}/k");
    let before = store.current_revision().await.unwrap();
    let creates = (0..RACERS).map(|i| {
        let (store, key) = (store.clone(), key.clone());
        tokio::spawn(async move { store.create(&key, vec![i as u8]).await })
    });
    let results = futures::future::join_all(creates).await;
    let won: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(won.iter().filter(|r| r.is_ok()).count(), 1, "{won:?}");
    assert!(
        won.iter()
            .all(|r| r.is_ok() || r == &Err(StoreError::AlreadyExists))
    );
    let created = store.get(&key).await.unwrap().unwrap();
    assert_eq!(created.mod_revision, before + 1);

    let updates = (0..RACERS).map(|i| {
        let (store, key) = (store.clone(), key.clone());
        let expected = Some(created.mod_revision);
        tokio::spawn(async move { store.update(&key, vec![i as u8], expected).await })
    });
    let results = futures::future::join_all(updates).await;
    let won: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
    let winner = won
        .iter()
        .find_map(|r| r.as_ref().ok())
        .expect("one update wins");
    let conflict = Err(StoreError::Conflict {
        current: winner.mod_revision,
    });
    assert!(won.iter().all(|r| r.is_ok() || r == &conflict), "{won:?}");
    assert_eq!(won.iter().filter(|r| r.is_ok()).count(), 1);
    assert_eq!(store.current_revision().await.unwrap(), before + 2);
}

/// `total` creates from `tasks` concurrent tasks all succeed with distinct revisions.
pub async fn check_concurrent_creates(
    store: Arc<dyn Store>,
    root: &str,
    tasks: usize,
    total: usize,
) {
    let prefix = format!("{root}/");
    let per_task = total / tasks;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (store, prefix) = (store.clone(), prefix.clone());
        handles.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..per_task {
                let kv = store
                    .create(&format!("{prefix}{t:03}-{i:05}"), vec![0; 64])
                    .await
                    .unwrap();
                revs.push(kv.mod_revision);
            }
            revs
        }));
    }
    let mut revs = Vec::new();
    for h in handles {
        revs.extend(h.await.unwrap());
    }
    let n = per_task * tasks;
    revs.sort_unstable();
    revs.dedup();
    assert_eq!(revs.len(), n, "every create gets its own revision");
    assert_eq!(store.count(&prefix).await.unwrap(), n as u64);
    let listed = store.list(&prefix, None, 0).await.unwrap();
    assert_eq!(listed.items.len(), n);
    assert!(listed.revision >= *revs.last().unwrap());
}

/// For a store that retains at most `history` events: a watch from further back fails with
/// `Compacted`, and a watch from the `oldest` it reports works.
pub async fn check_compacted(store: &dyn Store, root: &str, history: u64) {
    let now = fill_history(store, root, history).await;
    check_compacted_since(store, root, history, now).await;
}

/// Writes `history + 20` keys under `root`; returns the revision after them. A backend that
/// compacts on request (etcd) compacts to `now - history` next, then calls
/// [`check_compacted_since`].
pub async fn fill_history(store: &dyn Store, root: &str, history: u64) -> Revision {
    for i in 0..history + 20 {
        store.create(&format!("{root}/{i}"), vec![]).await.unwrap();
    }
    store.current_revision().await.unwrap()
}

/// The second half of [`check_compacted`], once history before `now - history` is gone.
pub async fn check_compacted_since(store: &dyn Store, root: &str, history: u64, now: Revision) {
    let requested = now - history - 10;
    let err = store.watch(root, requested).await.err();
    let Some(StoreError::Compacted {
        requested: got,
        oldest,
    }) = err
    else {
        panic!("expected Compacted for a watch from {requested}, got {err:?}");
    };
    assert_eq!(got, requested);
    assert!(oldest > requested && oldest <= now, "oldest {oldest}");
    let mut watch = store.watch(root, oldest).await.unwrap();
    assert_eq!(next_event(&mut watch).await.kv.mod_revision, oldest + 1);
    assert!(store.watch(root, now).await.is_ok());
}

/// For a store whose live watchers may fall at most `capacity` commits behind: a watcher that
/// does not read gets `WatcherLagged` once, then its stream ends.
pub async fn check_lagged(store: &dyn Store, root: &str, capacity: usize) {
    let now = store.current_revision().await.unwrap();
    let mut watch = store.watch(root, now).await.unwrap();
    for i in 0..capacity * 2 + 10 {
        store.create(&format!("{root}/{i}"), vec![]).await.unwrap();
    }
    let mut events = 0;
    loop {
        match tokio::time::timeout(WAIT, watch.next()).await {
            Ok(Some(Ok(_))) => events += 1,
            Ok(Some(Err(StoreError::WatcherLagged))) => break,
            other => panic!("expected WatcherLagged, got {other:?} after {events} events"),
        }
        assert!(events <= capacity * 2 + 10, "never lagged");
    }
    let end = tokio::time::timeout(WAIT, watch.next()).await;
    assert!(
        matches!(end, Ok(None)),
        "the stream ends after WatcherLagged"
    );
}
