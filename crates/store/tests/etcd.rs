//! Runs the conformance suite against [`EtcdStore`] on a real etcd (Debian's etcd-server,
//! started here on free loopback ports with its own data dir), plus compaction.
//!
//! Without an `etcd` binary on PATH each test says so and passes without checking anything
//! (`scripts/test` installs etcd-server, so CI always runs them).

use std::net::TcpListener;
use std::sync::Arc;

use skiff_store::{EtcdStore, Store, conformance};
use skiff_testsupport::etcd::Etcd;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn etcd() -> Option<Etcd> {
    Etcd::start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite() {
    let Some(e) = etcd() else { return };
    let store = EtcdStore::connect(std::slice::from_ref(&e.endpoint))
        .await
        .unwrap();
    conformance::run_all(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_history_is_gone() {
    let Some(e) = etcd() else { return };
    let store = EtcdStore::connect(std::slice::from_ref(&e.endpoint))
        .await
        .unwrap();
    // The suite's compaction check, with etcd compacting all but the last `history` revisions.
    let history = 10;
    let now = conformance::fill_history(&store, "/c", history).await;
    store.compact(now - history).await.unwrap();
    conformance::check_compacted_since(&store, "/c", history, now).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_skipped_and_a_dead_etcd_is_a_clear_error() {
    let Some(e) = etcd() else { return };
    let dead = format!("http://127.0.0.1:{}", free_port());
    let store = EtcdStore::connect(&[format!("{dead},{}", e.endpoint)])
        .await
        .unwrap();
    store.create("/x", b"1".to_vec()).await.unwrap();
    assert_eq!(store.get("/x").await.unwrap().unwrap().value, b"1");
    let err = EtcdStore::connect(&[dead]).await.err().unwrap();
    assert!(err.to_string().contains("does not answer"), "{err}");
    let err = EtcdStore::connect(&["127.0.0.1:2379".into()])
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("http://"), "{err}");
}
