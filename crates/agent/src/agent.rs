//! The agent as a whole: the wiring of the node (registration, Lease, status), the event
//! recorder, the log server, the runtime's exit notices and one worker per pod bound to this
//! node.
//!
//! ```text
//! pod watcher (spec.nodeName=<node>) ──▶ this loop ──▶ one worker per pod UID (watch channel)
//! runtime.exits() ──▶ exit router ──────────────────▶ the pod's worker
//! node task: register, Lease every 10 s, status when changed / every 60 s
//! server: /containerLogs and /exec from what the workers publish
//! proxy: Services and EndpointSlices ──▶ node-port (and cluster-IP) listeners ──▶ pods
//! ```
//!
//! Shutting the agent down ([`AgentHandle::shutdown`]) stops its tasks but leaves containers
//! running: the next start re-adopts them from the runtime's state instead of starting them
//! again. Pods deleted from the API while the agent was down are found after the first list and
//! their containers stopped.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{broadcast, mpsc, watch};

use crate::node::{self, NodeConfig};
use crate::proxy::{self, ProxyConfig, ProxyHandle};
use crate::recorder::Recorder;
use crate::runtime::Runtime;
use crate::server::{self, AgentServer, ServerConfig};
use crate::worker::{self, RuntimeEvent, WorkerCtx, WorkerInputs};

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    /// The node's InternalIP; the log server binds to it.
    pub node_ip: IpAddr,
    /// The agent's state (`<data-dir>/agent` for `skiff up`): the runtime's state under
    /// `runtime/`, the pods' volumes under `pods/`.
    pub state_dir: PathBuf,
    /// Port of the log server (0: any free port; the Node publishes the real one).
    pub server_port: u16,
    /// The bearer token the log server accepts: the one the agent uses against the API server.
    pub token: String,
}

/// A running agent.
pub struct AgentHandle {
    /// Where the log server listens.
    pub server_addr: SocketAddr,
    pub runtime_name: &'static str,
    server: AgentServer,
    proxy: Option<ProxyHandle>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    recorder_task: tokio::task::JoinHandle<()>,
}

impl AgentHandle {
    /// The service proxy, when it runs (its metrics, its listeners).
    pub fn proxy(&self) -> Option<&ProxyHandle> {
        self.proxy.as_ref()
    }

    /// Stops the agent's tasks (pod workers, watch, heartbeats, server). Containers keep
    /// running, to be re-adopted by the next start.
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        self.server.shutdown().await;
        if let Some(p) = self.proxy {
            p.shutdown().await;
        }
        self.recorder_task.abort();
        let _ = self.recorder_task.await;
        tracing::info!("agent stopped");
    }
}

/// The agent.
pub struct Agent;

impl Agent {
    /// Starts the agent with the `host` runtime (`<state dir>/runtime`).
    pub async fn start(client: kube::Client, cfg: AgentConfig) -> Result<AgentHandle, String> {
        let runtime = host_runtime(&cfg)?;
        Agent::start_with_runtime(client, cfg, runtime).await
    }

    /// Starts the agent with any runtime and the service proxy with its default config
    /// (node ports on the node IP and 127.0.0.1, no cluster IPs). Returns once the log server
    /// listens; the node registers in the background.
    pub async fn start_with_runtime(
        client: kube::Client,
        cfg: AgentConfig,
        runtime: Arc<dyn Runtime>,
    ) -> Result<AgentHandle, String> {
        Agent::start_with_proxy(client, cfg, runtime, Some(ProxyConfig::default())).await
    }

    /// [`Agent::start_with_runtime`] with this service proxy config; `None` runs no proxy. An
    /// empty `nodeport_addresses` means the node IP and 127.0.0.1.
    pub async fn start_with_proxy(
        client: kube::Client,
        cfg: AgentConfig,
        runtime: Arc<dyn Runtime>,
        proxy: Option<ProxyConfig>,
    ) -> Result<AgentHandle, String> {
        let pods_dir = cfg.state_dir.join("pods");
        std::fs::create_dir_all(&pods_dir)
            .map_err(|e| format!("cannot create {}: {e}", pods_dir.display()))?;
        let (recorder, recorder_task) = Recorder::spawn(client.clone(), &cfg.node_name);
        let ctx = Arc::new(WorkerCtx::new(
            client.clone(),
            runtime.clone(),
            recorder.clone(),
            cfg.node_name.clone(),
            cfg.node_ip.to_string(),
            pods_dir,
        ));
        let server = server::start(
            ServerConfig {
                bind: SocketAddr::new(cfg.node_ip, cfg.server_port),
                token: cfg.token.clone(),
                names: vec![cfg.node_name.clone(), node::hostname()],
            },
            ctx.table.clone(),
            runtime.clone(),
        )
        .await
        .map_err(|e| {
            format!(
                "cannot start the agent's server on {}:{}: {e}",
                cfg.node_ip, cfg.server_port
            )
        })?;
        let proxy = match proxy {
            Some(p) => match proxy::start(client.clone(), p.for_node(cfg.node_ip)).await {
                Ok(h) => Some(h),
                Err(e) => {
                    server.shutdown().await;
                    recorder_task.abort();
                    return Err(format!("cannot start the service proxy: {e}"));
                }
            },
            None => None,
        };
        let node_cfg = NodeConfig {
            name: cfg.node_name.clone(),
            ip: cfg.node_ip.to_string(),
            port: server.addr.port(),
            state_dir: cfg.state_dir.clone(),
            runtime_name: runtime.name().to_string(),
        };
        let routes: Routes = Arc::new(Mutex::new(HashMap::new()));
        // Subscribe before any worker reads the runtime, so no exit falls in between.
        let exits = runtime.exits();
        let tasks = vec![
            tokio::spawn(node::run(
                client.clone(),
                node_cfg,
                runtime.clone(),
                recorder,
            )),
            tokio::spawn(route_exits(exits, routes.clone())),
            tokio::spawn(run_pods(client, ctx, routes)),
        ];
        tracing::info!(node = %cfg.node_name, runtime = runtime.name(), server = %server.addr, "agent started");
        Ok(AgentHandle {
            server_addr: server.addr,
            runtime_name: runtime.name(),
            server,
            proxy,
            tasks,
            recorder_task,
        })
    }
}

/// The `host` runtime under `<state dir>/runtime`.
fn host_runtime(cfg: &AgentConfig) -> Result<Arc<dyn Runtime>, String> {
    let dir = cfg.state_dir.join("runtime");
    let rt = crate::runtime::host::HostRuntime::new(dir, cfg.node_ip.to_string())
        .map_err(|e| format!("cannot start the host runtime: {e}"))?;
    Ok(Arc::new(rt))
}

/// Each pod worker's runtime channel, by pod UID.
type Routes = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<RuntimeEvent>>>>;

/// Routes the runtime's exit notices to the pods' workers; a lagging receiver makes every worker
/// re-read the runtime.
async fn route_exits(mut rx: broadcast::Receiver<crate::runtime::ExitNotice>, routes: Routes) {
    loop {
        match rx.recv().await {
            Ok(n) => {
                let routes = routes.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(tx) = routes.get(&n.pod_uid) {
                    let _ = tx.send(RuntimeEvent::Exit(n));
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "runtime exit notices were lost; resyncing the workers"
                );
                let routes = routes.lock().unwrap_or_else(|e| e.into_inner());
                for tx in routes.values() {
                    let _ = tx.send(RuntimeEvent::Resync);
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

struct WorkerEntry {
    pod_tx: watch::Sender<Option<Arc<Pod>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Watches the pods bound to this node and keeps one worker per pod UID.
async fn run_pods(client: kube::Client, ctx: Arc<WorkerCtx>, routes: Routes) {
    // What the runtime and the pods dir held before any worker ran: the only pods that can be
    // orphans (a pod created after this is never mistaken for one).
    let mut orphan_candidates = Some(orphan_candidates(&ctx).await);
    let api: Api<Pod> = Api::all(client);
    let selector = format!("spec.nodeName={}", ctx.node_name);
    let cfg = watcher::Config::default().fields(&selector);
    let mut stream = watcher(api, cfg).default_backoff().boxed();
    let mut workers: HashMap<String, WorkerEntry> = HashMap::new();
    let mut finishing: Vec<WorkerEntry> = Vec::new();
    let mut listing: Option<HashSet<String>> = None;
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; retrying");
                continue;
            }
        };
        match ev {
            watcher::Event::Init => listing = Some(HashSet::new()),
            watcher::Event::InitApply(pod) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    if let Some(l) = listing.as_mut() {
                        l.insert(uid);
                    }
                    upsert(&ctx, &routes, &mut workers, pod);
                }
            }
            watcher::Event::InitDone => {
                let seen = listing.take().unwrap_or_default();
                let gone: Vec<String> = workers
                    .keys()
                    .filter(|uid| !seen.contains(*uid))
                    .cloned()
                    .collect();
                for uid in gone {
                    remove(&routes, &mut workers, &mut finishing, &uid);
                }
                if let Some(candidates) = orphan_candidates.take() {
                    let orphans: Vec<String> = candidates.difference(&seen).cloned().collect();
                    tokio::spawn(clean_orphans(ctx.clone(), orphans));
                }
            }
            watcher::Event::Apply(pod) => {
                if pod.metadata.uid.is_some() {
                    upsert(&ctx, &routes, &mut workers, pod);
                }
            }
            watcher::Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    remove(&routes, &mut workers, &mut finishing, uid);
                }
            }
        }
    }
}

/// Hands a pod to its worker, starting one for a new UID. A worker that finished (its deletion
/// was confirmed) is not started again for a late update.
fn upsert(
    ctx: &Arc<WorkerCtx>,
    routes: &Routes,
    workers: &mut HashMap<String, WorkerEntry>,
    pod: Pod,
) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let pod = Arc::new(pod);
    if let Some(w) = workers.get(&uid) {
        w.pod_tx.send_replace(Some(pod));
        return;
    }
    let (pod_tx, pod_rx) = watch::channel(Some(pod));
    let (rt_tx, rt_rx) = mpsc::unbounded_channel();
    routes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(uid.clone(), rt_tx);
    let inputs = WorkerInputs {
        pod: pod_rx,
        runtime: rt_rx,
    };
    let task = tokio::spawn(worker::run(ctx.clone(), inputs));
    workers.insert(uid, WorkerEntry { pod_tx, task });
}

/// The pod is gone from the API: its worker stops what still runs and ends. Its entry is kept
/// (in `finishing`) until then, since a dropped sender means "the agent shuts down".
fn remove(
    routes: &Routes,
    workers: &mut HashMap<String, WorkerEntry>,
    finishing: &mut Vec<WorkerEntry>,
    uid: &str,
) {
    if let Some(w) = workers.remove(uid) {
        w.pod_tx.send_replace(None);
        finishing.push(w);
    }
    finishing.retain(|w| !w.task.is_finished());
    routes.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
}

/// The pod UIDs the runtime or the pods dir know of.
async fn orphan_candidates(ctx: &WorkerCtx) -> HashSet<String> {
    let mut uids: HashSet<String> = ctx
        .runtime
        .list()
        .await
        .into_iter()
        .map(|k| k.pod_uid)
        .collect();
    if let Ok(dir) = std::fs::read_dir(&ctx.pods_dir) {
        for e in dir.flatten() {
            if let Some(name) = e.file_name().to_str() {
                uids.insert(name.to_string());
            }
        }
    }
    uids
}

/// After the first list: stops and removes what the runtime still has of pods that are no
/// longer in the API (deleted while the agent was down), and their directories.
async fn clean_orphans(ctx: Arc<WorkerCtx>, orphans: Vec<String>) {
    for uid in orphans {
        worker::clean_orphan(&ctx, &uid).await;
    }
}
