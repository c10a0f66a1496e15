//! `skiff bench`: benchmarks that start their own in-process server on a temporary data dir and
//! drive it through the real client library (kube), as a user's tools would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Subcommand;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use skiff_apiserver::ServerConfig;
use skiff_store::RedbStore;

#[derive(Subcommand)]
pub enum Which {
    /// Pod creates per second with concurrent clients, and watch delivery latency.
    Api {
        /// Pods to create.
        #[arg(long, default_value_t = 20_000)]
        pods: usize,
        /// Concurrent clients (tasks sharing connections).
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Connections the clients are spread over.
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
}

pub async fn run(which: Which) -> Result<(), String> {
    match which {
        Which::Api {
            pods,
            concurrency,
            connections,
        } => api(pods, concurrency, connections).await,
    }
}

async fn client_for(server: &skiff_apiserver::RunningServer) -> Result<kube::Client, String> {
    let url = format!("https://127.0.0.1:{}", server.addr.port());
    let kc = crate::kubeconfig::render(&url, &server.pki.ca_pem, &server.pki.admin_token);
    let kc: kube::config::Kubeconfig =
        kube::config::Kubeconfig::from_yaml(&kc).map_err(|e| e.to_string())?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    kube::Client::try_from(cfg).map_err(|e| e.to_string())
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1", "command": ["sleep", "3600"],
                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
    }))
    .expect("pod")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn api(pods: usize, concurrency: usize, connections: usize) -> Result<(), String> {
    let dir = tempfile_dir()?;
    let store = RedbStore::open(&dir.join("store.redb")).map_err(|e| e.to_string())?;
    let cfg = ServerConfig {
        pki_dir: dir.join("pki"),
        bind: "127.0.0.1:0".parse().expect("addr"),
        extra_sans: vec![],
    };
    let server = skiff_apiserver::start(cfg, Arc::new(store))
        .await
        .map_err(|e| e.to_string())?;
    let mut clients = Vec::new();
    for _ in 0..connections.max(1) {
        clients.push(client_for(&server).await?);
    }

    // The watcher records when each pod's ADDED event arrives.
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let watch_api: Api<Pod> = Api::namespaced(clients[0].clone(), "default");
    let mut stream = watch_api
        .watch(&WatchParams::default().timeout(290), "0")
        .await
        .map_err(|e| e.to_string())?
        .boxed();
    let (s2, l2) = (sent.clone(), latencies.clone());
    let watcher = tokio::spawn(async move {
        let mut seen = 0;
        while let Some(Ok(ev)) = stream.next().await {
            if let WatchEvent::Added(p) = ev {
                let name = p.metadata.name.unwrap_or_default();
                let t0 = s2.lock().expect("lock").get(&name).copied();
                if let Some(t0) = t0 {
                    l2.lock().expect("lock").push(t0.elapsed());
                }
                seen += 1;
                if seen == pods {
                    return;
                }
            }
        }
    });

    eprintln!(
        "creating {pods} pods with {concurrency} concurrent clients over {connections} connections..."
    );
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let create_lat: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let api: Api<Pod> = Api::namespaced(clients[i % clients.len()].clone(), "default");
        let (next, sent, create_lat) = (next.clone(), sent.clone(), create_lat.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= pods {
                    return Ok::<(), String>(());
                }
                let name = format!("bench-{n}");
                let t0 = Instant::now();
                sent.lock().expect("lock").insert(name.clone(), t0);
                api.create(&PostParams::default(), &pod(&name))
                    .await
                    .map_err(|e| e.to_string())?;
                create_lat.lock().expect("lock").push(t0.elapsed());
                if n % 5000 == 4999 {
                    eprintln!("  {} pods created", n + 1);
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let elapsed = start.elapsed();
    let _ = tokio::time::timeout(Duration::from_secs(60), watcher).await;
    let mut c = create_lat.lock().expect("lock").clone();
    let mut w = latencies.lock().expect("lock").clone();
    c.sort();
    w.sort();
    println!("pods created:            {pods}");
    println!("elapsed:                 {:.2?}", elapsed);
    println!(
        "creates/s:               {:.0}",
        pods as f64 / elapsed.as_secs_f64()
    );
    println!(
        "create latency p50/p99:  {:.2?} / {:.2?}",
        percentile(&c, 0.5),
        percentile(&c, 0.99)
    );
    println!("watch events received:   {}", w.len());
    println!(
        "create→watch p50/p99:    {:.2?} / {:.2?}",
        percentile(&w, 0.5),
        percentile(&w, 0.99)
    );
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    let d = std::env::temp_dir().join(format!("skiff-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    Ok(d)
}
