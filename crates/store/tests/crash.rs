//! Acknowledged writes survive `kill -9`: a child process (this test binary, re-executed) creates
//! keys as fast as it can and prints each acknowledged one; the parent kills it and checks that
//! every printed key is in the reopened store.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_store::{RedbStore, Store};

const CHILD_ENV: &str = "SKIFF_STORE_CRASH_CHILD";
const ACK: &str = "ACK ";

/// The child's body: a no-op unless run by `acknowledged_writes_survive_sigkill`.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = Arc::new(RedbStore::open(path.as_ref()).unwrap());
        let mut tasks = Vec::new();
        for t in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0u64.. {
                    let key = format!("/crash/{t:02}/{i:08}");
                    store.create(&key, vec![7; 256]).await.unwrap();
                    println!("{ACK}{key}"); // stdout is line-buffered: one write per line
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(|l| l.ok())
            .filter_map(|l| l.strip_prefix(ACK).map(str::to_owned))
            .collect::<Vec<_>>()
    });
    // Let it write for about a second once it has started.
    let started = Instant::now();
    while !path.exists() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_secs(1));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let acked = reader.join().unwrap();
    assert!(!acked.is_empty(), "the child acknowledged no write");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = RedbStore::open(&path).unwrap();
        for key in &acked {
            assert!(
                store.get(key).await.unwrap().is_some(),
                "lost acknowledged {key}"
            );
        }
        let stored = store.count("/crash/").await.unwrap();
        assert!(stored >= acked.len() as u64);
        eprintln!(
            "{} acknowledged, {stored} stored after SIGKILL",
            acked.len()
        );
    });
}
