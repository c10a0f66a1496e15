//! Durability: every create the server acknowledged is there after a SIGKILL and a restart.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Skiff;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_creates_survive_sigkill() {
    let mut s = Skiff::bare();
    let client = s.client().await;
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..32 {
        let pods: Api<Pod> = Api::default_namespaced(client.clone());
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let name = format!("c-{w}-{n}");
                let p: Pod = serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "spec": {"containers": [{"name": "c", "image": "busybox:1"}]},
                }))
                .unwrap();
                match pods.create(&PostParams::default(), &p).await {
                    Ok(_) => acked.lock().unwrap().push(name),
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.kill9();
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    }
    let acked: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(
        acked.len() > 100,
        "the writers made little progress: {}",
        acked.len()
    );

    s.launch();
    let pods: Api<Pod> = Api::default_namespaced(s.client().await);
    let present: BTreeSet<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    let lost: Vec<&String> = acked.difference(&present).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged creates lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    eprintln!(
        "{} acknowledged, {} present after SIGKILL and restart",
        acked.len(),
        present.len()
    );
}
