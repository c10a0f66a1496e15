//! The scheduler's informers: list+watch of pods (all namespaces, terminated ones excluded by a
//! field selector, as upstream's scheduler does) and of nodes, forwarded as they come into the
//! loop's channel. kube's watcher re-lists after a lost or expired watch; the loop reconciles
//! what it knew against each re-list.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;

/// What the informers deliver.
/// Boxed: a Pod is about 2 KiB inline, and the channel moves many of them.
pub enum Input {
    Pod(Box<watcher::Event<Pod>>),
    Node(Box<watcher::Event<Node>>),
}

/// Field selector of the pod informer (upstream's `status.phase!=Succeeded,status.phase!=Failed`).
pub const POD_FIELD_SELECTOR: &str = "status.phase!=Succeeded,status.phase!=Failed";

/// Starts both watchers; each task ends when the loop's channel closes.
pub fn spawn(client: kube::Client, tx: mpsc::Sender<Input>) -> Vec<tokio::task::JoinHandle<()>> {
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client);
    let pod_tx = tx.clone();
    let pod_task = tokio::spawn(async move {
        let cfg = watcher::Config::default().fields(POD_FIELD_SELECTOR);
        let mut stream = watcher(pods, cfg).default_backoff().boxed();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => {
                    if pod_tx.send(Input::Pod(Box::new(ev))).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
            }
        }
    });
    let node_task = tokio::spawn(async move {
        let mut stream = watcher(nodes, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => {
                    if tx.send(Input::Node(Box::new(ev))).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "node watch failed; retrying"),
            }
        }
    });
    vec![pod_task, node_task]
}
