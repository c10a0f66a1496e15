//! Measures acknowledged (durable) creates per second from concurrent clients, to check the
//! group commit: `cargo run --release -p skiff-store --example bench [TASKS] [CREATES_PER_TASK]`
//! (defaults 64 and 500; values are 1 KiB, about the size of a small pod).

use std::sync::Arc;
use std::time::Instant;

use skiff_store::{RedbStore, Store};

#[tokio::main]
async fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let tasks = args.next().unwrap_or(64);
    let per_task = args.next().unwrap_or(500);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RedbStore::open(&dir.path().join("bench.redb")).expect("open");
    let shared: Arc<dyn Store> = Arc::new(store.clone());

    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let store = shared.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    let key = format!("/bench/{t:03}/{i:06}");
                    store.create(&key, vec![b'x'; 1024]).await.expect("create");
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
    let secs = start.elapsed().as_secs_f64();
    let total = tasks * per_task;
    let stats = store.stats();
    println!(
        "{total} creates from {tasks} tasks in {secs:.2} s: {:.0} creates/s, {} commits ({:.1} writes/commit)",
        total as f64 / secs,
        stats.commits,
        stats.writes as f64 / stats.commits.max(1) as f64,
    );
}
