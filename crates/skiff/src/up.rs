//! `skiff up` and `skiff server`: the API server over the embedded store, plus the scheduler,
//! controllers and a local agent (runc or host runtime), in one process. `skiff scheduler` and
//! `skiff agent` run one part alone against any server. Every part other than the API server is
//! an API client, even in-process: it gets a kube client built from the admin kubeconfig `up`
//! writes.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use skiff_agent::agent::{Agent, AgentConfig};
use skiff_apiserver::ServerConfig;
use skiff_scheduler::runner::SchedulerConfig;
use skiff_store::RedbStore;

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Where the store, certificates and kubeconfig live [default: $XDG_STATE_HOME/skiff or ~/.local/state/skiff]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address the API server listens on.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: IpAddr,
    /// Port of the API server (0 picks a free one).
    #[arg(long, default_value_t = 6443)]
    pub port: u16,
    /// Parts of `up` to leave out (comma-separated: scheduler, controllers, agent).
    #[arg(long, value_delimiter = ',')]
    pub disable: Vec<String>,
    /// Where to write the kubeconfig [default: <data-dir>/kubeconfig].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Seconds a node may stay silent before the node lifecycle controller marks it Unknown.
    #[arg(long, default_value_t = 50)]
    pub node_monitor_grace_period: u64,
    /// Name of the local agent's node [default: the hostname].
    #[arg(long)]
    pub node_name: Option<String>,
    /// Port of the local agent's log server (0 picks a free one; the Node publishes it).
    #[arg(long, default_value_t = 0)]
    pub agent_port: u16,
    /// The range Services' cluster IPs are allocated from (its first address is the
    /// `kubernetes` service's).
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: String,
    /// The range of NodePorts.
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
    #[command(flatten)]
    pub runtime: crate::runtime::RuntimeArgs,
    #[command(flatten)]
    pub sim: crate::sim::SimArgs,
    /// Where the cluster's objects live: `embedded` (redb in the data dir) or `etcd` (shared by
    /// several servers; the scheduler and controllers then run on one of them at a time).
    #[arg(long, value_enum, default_value_t = StoreKind::Embedded)]
    pub store: StoreKind,
    /// etcd's client URLs (comma-separated), with `--store etcd`.
    #[arg(long, value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// The address other hosts reach this server at: put in its certificate and the kubeconfig
    /// [default: --address, or 127.0.0.1 when that is 0.0.0.0].
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    Embedded,
    Etcd,
}

/// How often the etcd history older than one interval is compacted (Kubernetes: 5 minutes).
const ETCD_COMPACTION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

/// Opens the store `args` ask for.
async fn open_store(
    args: &UpArgs,
    data_dir: &std::path::Path,
) -> Result<Arc<dyn skiff_store::Store>, String> {
    match args.store {
        StoreKind::Embedded => {
            if !args.etcd_endpoints.is_empty() {
                return Err("--etcd-endpoints needs --store etcd".into());
            }
            let store_path = data_dir.join("store.redb");
            let store = RedbStore::open(&store_path).map_err(|e| {
                format!(
                    "cannot open the store {}: {e} (is another skiff using this data dir?)",
                    store_path.display()
                )
            })?;
            Ok(Arc::new(store))
        }
        StoreKind::Etcd => {
            if args.etcd_endpoints.is_empty() {
                return Err("--store etcd needs --etcd-endpoints http://HOST:2379[,…]".into());
            }
            let store = skiff_store::EtcdStore::connect(&args.etcd_endpoints)
                .await
                .map_err(|e| e.to_string())?;
            store.spawn_compactor(ETCD_COMPACTION_INTERVAL);
            Ok(Arc::new(store))
        }
    }
}

const PARTS: &[&str] = &["scheduler", "controllers", "agent"];

pub async fn run(args: UpArgs, server_only: bool) -> Result<(), String> {
    let started = Instant::now();
    for d in &args.disable {
        if !PARTS.contains(&d.as_str()) {
            return Err(format!(
                "--disable {d}: unknown part; the parts are {}",
                PARTS.join(", ")
            ));
        }
    }
    let run_scheduler = !args.disable.iter().any(|d| d == "scheduler");
    let run_controllers = !args.disable.iter().any(|d| d == "controllers");
    let run_agent = !server_only && !args.disable.iter().any(|d| d == "agent");
    let sim = if server_only {
        None
    } else {
        args.sim.config()?
    };
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(crate::default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create the data dir {}: {e}", data_dir.display()))?;
    let store = open_store(&args, &data_dir).await?;
    let cfg = ServerConfig {
        pki_dir: data_dir.join("pki"),
        bind: SocketAddr::new(args.address, args.port),
        extra_sans: [Some(args.address), args.advertise_address]
            .into_iter()
            .flatten()
            .filter(|a| !a.is_unspecified())
            .map(|a| a.to_string())
            .collect(),
        network: skiff_apiserver::ServiceNetwork::parse(
            &args.service_cluster_ip_range,
            &args.service_node_port_range,
        )?,
    };
    let server = skiff_apiserver::start(cfg, store).await.map_err(|e| {
        format!("cannot start the API server on {}:{}: {e} (use --port to pick another port, or --port 0 for any free one)", args.address, args.port)
    })?;
    let host = match args.advertise_address {
        Some(a) => a.to_string(),
        None if args.address.is_unspecified() => "127.0.0.1".to_string(),
        None => args.address.to_string(),
    };
    let url = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("https://[{host}]:{}", server.addr.port()),
        _ => format!("https://{host}:{}", server.addr.port()),
    };
    let kubeconfig_path = args
        .kubeconfig
        .clone()
        .unwrap_or_else(|| data_dir.join("kubeconfig"));
    let kc = crate::kubeconfig::render(&url, &server.pki.ca_pem, &server.pki.admin_token);
    crate::kubeconfig::write(&kubeconfig_path, &kc).map_err(|e| {
        format!(
            "cannot write the kubeconfig {}: {e}",
            kubeconfig_path.display()
        )
    })?;
    // The agent is a client like any other; its node registers in the background.
    let agent = if run_agent {
        let client = client_from_kubeconfig(&kc).await?;
        let node_ip = if args.address.is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            args.address
        };
        let cfg = AgentConfig {
            node_name: args
                .node_name
                .clone()
                .unwrap_or_else(skiff_agent::node::hostname),
            node_ip,
            state_dir: data_dir.join("agent"),
            server_port: args.agent_port,
            token: String::new(),
        };
        let name = cfg.node_name.clone();
        // What the API server presents to this node's agent.
        let cfg = AgentConfig {
            token: skiff_apiserver::auth::agent_token_for(&server.pki.agent_token, &name),
            ..cfg
        };
        let (runtime, why) =
            crate::runtime::build(&args.runtime, &cfg.state_dir, &node_ip.to_string())?;
        let proxy = crate::runtime::proxy(&args.runtime, runtime.as_ref());
        let handle = Agent::start_with_proxy(client, cfg, runtime, Some(proxy)).await?;
        Some((handle, name, why))
    } else {
        None
    };
    println!(
        "skiff is ready in {} ms: API server {url}, data in {}",
        started.elapsed().as_millis(),
        data_dir.display()
    );
    if let Some((a, name, why)) = &agent {
        println!(
            "agent: node {name}, runtime: {why}, logs on https://{}",
            a.server_addr
        );
    }
    if let Some(cfg) = &sim {
        println!(
            "simulated nodes: {} ({}0 … {}{}), registering in the background",
            cfg.nodes,
            cfg.name_prefix,
            cfg.name_prefix,
            cfg.nodes - 1
        );
    }
    println!("export KUBECONFIG={}", kubeconfig_path.display());
    tracing::info!(server = %url, kubeconfig = %kubeconfig_path.display(), "ready");
    let parts = Parts {
        kubeconfig: kc.clone(),
        scheduler: run_scheduler,
        controllers: run_controllers,
        node_monitor_grace_period: args.node_monitor_grace_period,
        ca_pem: server.pki.ca_pem.clone(),
    };
    // On a shared store several servers run; the scheduler and controllers run on the one
    // that holds the leader Lease.
    let (stop_control_plane, stopped) = tokio::sync::oneshot::channel::<()>();
    let control_plane = if !(run_scheduler || run_controllers) {
        None
    } else if args.store == StoreKind::Etcd {
        let client = client_from_kubeconfig(&kc).await?;
        Some(tokio::spawn(run_when_leading(client, parts, stopped)))
    } else {
        let running = parts.start().await?;
        Some(tokio::spawn(async move {
            let _ = stopped.await;
            running.stop().await;
        }))
    };
    let fleet = match sim {
        Some(cfg) => Some(crate::sim::spawn(client_from_kubeconfig(&kc).await?, cfg)),
        None => None,
    };
    shutdown_signal().await;
    tracing::info!("shutting down");
    if let Some(f) = fleet {
        crate::sim::stop(f).await;
    }
    if let Some((a, _, _)) = agent {
        // Containers keep running; the next `up` on this data dir re-adopts them.
        a.shutdown().await;
    }
    if let Some(c) = control_plane {
        // Stops the parts and hands the leader Lease over at once (no 15 s wait for others).
        let _ = stop_control_plane.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), c).await;
    }
    server.shutdown().await;
    Ok(())
}

/// The parts of a server other than the API server itself, all API clients.
struct Parts {
    kubeconfig: String,
    scheduler: bool,
    controllers: bool,
    node_monitor_grace_period: u64,
    ca_pem: String,
}

/// Started parts; stopping aborts them.
struct Running {
    scheduler: Option<skiff_scheduler::runner::SchedulerHandle>,
    controllers: Vec<tokio::task::JoinHandle<()>>,
}

impl Parts {
    async fn start(&self) -> Result<Running, String> {
        let scheduler = if self.scheduler {
            let client = client_from_kubeconfig(&self.kubeconfig).await?;
            Some(skiff_scheduler::runner::start(
                client,
                SchedulerConfig::default(),
            ))
        } else {
            None
        };
        let mut controllers = Vec::new();
        if self.controllers {
            let client = client_from_kubeconfig(&self.kubeconfig).await?;
            let cfg = skiff_controllers::node_lifecycle::Config {
                grace_period: std::time::Duration::from_secs(self.node_monitor_grace_period),
                monitor_period: std::time::Duration::from_secs(
                    self.node_monitor_grace_period.clamp(1, 5),
                ),
            };
            controllers = vec![
                tokio::spawn(skiff_controllers::node_lifecycle::run(client.clone(), cfg)),
                tokio::spawn(skiff_controllers::endpoints::run(client.clone())),
                tokio::spawn(skiff_controllers::namespace_defaults::run_service_accounts(
                    client.clone(),
                )),
                tokio::spawn(
                    skiff_controllers::namespace_defaults::run_root_ca_publisher(
                        client.clone(),
                        self.ca_pem.clone(),
                    ),
                ),
                tokio::spawn(skiff_controllers::taint_eviction::run(client)),
            ];
        }
        Ok(Running {
            scheduler,
            controllers,
        })
    }
}

impl Running {
    async fn stop(self) {
        for c in &self.controllers {
            c.abort();
        }
        if let Some(s) = self.scheduler {
            s.shutdown().await;
        }
    }
}

/// Campaigns for the control-plane Lease and runs the parts while this server leads; on `stop`,
/// stops them and releases the Lease.
async fn run_when_leading(
    client: kube::Client,
    parts: Parts,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    use skiff_controllers::leader_election;
    let identity = format!(
        "{}_{}",
        skiff_agent::node::hostname(),
        skiff_apiserver::join::random_token(8)
    );
    let cfg = leader_election::Config::new(CONTROL_PLANE_LEASE, &identity);
    let (mut leading, election) = leader_election::run(client.clone(), cfg.clone());
    let mut running: Option<Running> = None;
    loop {
        let lead = *leading.borrow_and_update();
        match (lead, running.is_some()) {
            (true, false) => match parts.start().await {
                Ok(r) => {
                    println!("leading: scheduler and controllers started here ({identity})");
                    running = Some(r);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the scheduler and controllers; retrying")
                }
            },
            (false, true) => {
                if let Some(r) = running.take() {
                    r.stop().await;
                }
                println!("not leading: scheduler and controllers stopped here");
            }
            _ => {}
        }
        // A failed start is tried again while this server still leads.
        let retry = tokio::time::sleep(if lead && running.is_none() {
            cfg.retry_period
        } else {
            std::time::Duration::from_secs(3600)
        });
        tokio::select! {
            changed = leading.changed() => if changed.is_err() { break },
            _ = retry => {}
            _ = &mut stop => break,
        }
    }
    election.abort();
    if let Some(r) = running {
        r.stop().await;
    }
    leader_election::release(&client, &cfg).await;
}

/// The Lease (in kube-system) the servers of one cluster elect their control plane with.
pub const CONTROL_PLANE_LEASE: &str = "skiff-control-plane";

/// A kube client from kubeconfig contents (the admin kubeconfig `up` renders).
pub async fn client_from_kubeconfig(yaml: &str) -> Result<kube::Client, String> {
    let kc = kube::config::Kubeconfig::from_yaml(yaml)
        .map_err(|e| format!("cannot read the kubeconfig: {e}"))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| format!("cannot use the kubeconfig: {e}"))?;
    kube::Client::try_from(cfg).map_err(|e| format!("cannot build a client: {e}"))
}

#[derive(Args, Debug)]
pub struct SchedulerArgs {
    /// The kubeconfig of the cluster to schedule for.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Pods whose spec.schedulerName is this are scheduled (absent means default-scheduler).
    #[arg(long, default_value = skiff_scheduler::schedule::DEFAULT_SCHEDULER_NAME)]
    pub scheduler_name: String,
    /// percentageOfNodesToScore (0 = adaptive, as upstream).
    #[arg(long, default_value_t = 0)]
    pub percentage_of_nodes_to_score: u32,
}

/// `skiff scheduler`: the scheduler alone, against the server the kubeconfig names.
pub async fn run_scheduler(args: SchedulerArgs) -> Result<(), String> {
    let yaml = std::fs::read_to_string(&args.kubeconfig)
        .map_err(|e| format!("cannot read {}: {e}", args.kubeconfig.display()))?;
    let client = client_from_kubeconfig(&yaml).await?;
    let cfg = SchedulerConfig {
        reporting_instance: format!(
            "{}-{}",
            args.scheduler_name,
            skiff_scheduler::runner::hostname()
        ),
        scheduler_name: args.scheduler_name,
        options: skiff_scheduler::ScheduleOptions {
            percentage_of_nodes_to_score: args.percentage_of_nodes_to_score.min(100),
        },
        ..SchedulerConfig::default()
    };
    let handle = skiff_scheduler::runner::start(client, cfg);
    println!("skiff scheduler is running");
    shutdown_signal().await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// URL of the API server (`https://host:port`).
    #[arg(long)]
    pub server: String,
    /// A bootstrap token from `skiff token create` (with --ca-cert-hash: the agent joins and
    /// gets credentials of its own node), or any bearer token of the API server.
    #[arg(long)]
    pub token: String,
    /// The pinned hash of the server's CA (`sha256:…`, printed by `skiff token create`): the
    /// agent fetches the CA and trusts it only if it matches.
    #[arg(long, conflicts_with_all = ["ca_file", "insecure_skip_tls_verify"])]
    pub ca_cert_hash: Option<String>,
    /// Name of this node [default: the hostname].
    #[arg(long)]
    pub node_name: Option<String>,
    /// The agent's state (runtime records, logs, volumes, credentials) [default: <data dir>/agent].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The node's InternalIP, where the log server listens [default: the address that reaches the server].
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// Port of the log server (0 picks a free one).
    #[arg(long, default_value_t = 10250)]
    pub port: u16,
    /// PEM file of the CA that signed the API server's certificate.
    #[arg(long, conflicts_with = "insecure_skip_tls_verify")]
    pub ca_file: Option<PathBuf>,
    /// Do not verify the API server's certificate.
    #[arg(long)]
    pub insecure_skip_tls_verify: bool,
    #[command(flatten)]
    pub runtime: crate::runtime::RuntimeArgs,
}

/// A kubeconfig for `server` with `tls` (a `certificate-authority-data:` or
/// `insecure-skip-tls-verify:` line) and, when given, a bearer token.
fn agent_kubeconfig(server: &str, tls: &str, token: Option<&str>) -> String {
    let user = match token {
        Some(t) => format!("    token: {t}\n"),
        None => "    {}\n".to_string(),
    };
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: skiff
  cluster:
    server: {server}
    {tls}
users:
- name: skiff
  user:
{user}contexts:
- name: skiff
  context:
    cluster: skiff
    user: skiff
current-context: skiff
"
    )
}

fn ca_data_line(pem: &str) -> String {
    use base64::Engine;
    format!(
        "certificate-authority-data: {}",
        base64::engine::general_purpose::STANDARD.encode(pem)
    )
}

/// The credentials a joined agent keeps in its state dir, so a restart needs no bootstrap token.
#[derive(serde::Serialize, serde::Deserialize)]
struct Credentials {
    server: String,
    node: String,
    token: String,
    #[serde(rename = "caCert")]
    ca_cert: String,
}

async fn get_json(
    client: &kube::Client,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<serde_json::Value, String> {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body)
        .map_err(|e| e.to_string())?;
    let text = client
        .request_text(req)
        .await
        .map_err(|e| format!("{method} {path}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{method} {path}: {e}"))
}

/// Joins with a bootstrap token: fetches the CA, checks it against the pinned hash, and
/// exchanges the bootstrap token for the node's own credential.
async fn join(args: &AgentArgs, pin: &str, node: &str) -> Result<Credentials, String> {
    let anonymous = client_from_kubeconfig(&agent_kubeconfig(
        &args.server,
        "insecure-skip-tls-verify: true",
        None,
    ))
    .await?;
    let info = get_json(
        &anonymous,
        "GET",
        skiff_apiserver::join::CLUSTER_INFO_PATH,
        vec![],
    )
    .await?;
    let ca = info["caCert"]
        .as_str()
        .ok_or("the server's cluster-info has no CA certificate")?
        .to_string();
    let hash = skiff_apiserver::tls::ca_cert_hash(&ca).map_err(|e| e.to_string())?;
    if !hash.eq_ignore_ascii_case(pin.trim()) {
        return Err(format!(
            "the server's CA has hash {hash}, not the --ca-cert-hash {pin}: refusing to join (is --server the right cluster?)"
        ));
    }
    let bootstrap = client_from_kubeconfig(&agent_kubeconfig(
        &args.server,
        &ca_data_line(&ca),
        Some(&args.token),
    ))
    .await?;
    let body = serde_json::to_vec(&serde_json::json!({"node": node})).map_err(|e| e.to_string())?;
    let joined = get_json(&bootstrap, "POST", skiff_apiserver::join::JOIN_PATH, body)
        .await
        .map_err(|e| {
            format!("the server refused to join this node: {e} (is the token valid and unexpired?)")
        })?;
    let token = joined["token"]
        .as_str()
        .ok_or("the join answer has no token")?;
    Ok(Credentials {
        server: args.server.clone(),
        node: node.to_string(),
        token: token.to_string(),
        ca_cert: ca,
    })
}

/// `skiff agent`: a node agent joining the server at `--server`.
pub async fn run_agent(args: AgentArgs) -> Result<(), String> {
    let node_name = args
        .node_name
        .clone()
        .unwrap_or_else(skiff_agent::node::hostname);
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| crate::default_data_dir().join("agent"));
    let kc = if let Some(pin) = &args.ca_cert_hash {
        let saved = state_dir.join("credentials.json");
        let creds = match std::fs::read(&saved)
            .ok()
            .and_then(|b| serde_json::from_slice::<Credentials>(&b).ok())
            .filter(|c| c.server == args.server && c.node == node_name)
        {
            Some(c) => c,
            None => {
                let c = join(&args, pin, &node_name).await?;
                std::fs::create_dir_all(&state_dir)
                    .map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
                let json = serde_json::to_string(&c).map_err(|e| e.to_string())?;
                skiff_apiserver::tls::write_private(&saved, &json)
                    .map_err(|e| format!("cannot save {}: {e}", saved.display()))?;
                println!("joined the cluster as node {node_name}");
                c
            }
        };
        agent_kubeconfig(
            &args.server,
            &ca_data_line(&creds.ca_cert),
            Some(&creds.token),
        )
    } else {
        let tls = if let Some(f) = &args.ca_file {
            let pem = std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            ca_data_line(&pem)
        } else if args.insecure_skip_tls_verify {
            "insecure-skip-tls-verify: true".to_string()
        } else {
            return Err(
                "give --ca-cert-hash (from `skiff token create`), --ca-file (the server's CA, <data-dir>/pki/ca.crt) or --insecure-skip-tls-verify"
                    .into(),
            );
        };
        agent_kubeconfig(&args.server, &tls, Some(&args.token))
    };
    let client = client_from_kubeconfig(&kc).await?;
    // What the API server presents when it calls this agent (logs, exec, port-forward).
    let agent_token = get_json(
        &client,
        "GET",
        &format!(
            "{}?node={node_name}",
            skiff_apiserver::join::AGENT_TOKEN_PATH
        ),
        vec![],
    )
    .await
    .map_err(|e| format!("cannot reach the server with these credentials: {e}"))?["agentToken"]
        .as_str()
        .ok_or("the server did not say which token it presents to agents")?
        .to_string();
    let node_ip = match args.node_ip {
        Some(ip) => ip,
        None => local_ip_towards(&args.server).await?,
    };
    let cfg = AgentConfig {
        node_name,
        node_ip,
        state_dir,
        server_port: args.port,
        token: agent_token,
    };
    let name = cfg.node_name.clone();
    let (runtime, why) =
        crate::runtime::build(&args.runtime, &cfg.state_dir, &node_ip.to_string())?;
    let proxy = crate::runtime::proxy(&args.runtime, runtime.as_ref());
    let handle = Agent::start_with_proxy(client, cfg, runtime, Some(proxy)).await?;
    println!(
        "skiff agent is running: node {name}, runtime: {why}, logs on https://{}, server {}",
        handle.server_addr, args.server
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

/// The local address this machine uses to reach the server's host.
async fn local_ip_towards(server: &str) -> Result<IpAddr, String> {
    let rest = server.split_once("://").map_or(server, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_string()
    } else {
        format!("{authority}:443")
    };
    let addr = tokio::net::lookup_host(&with_port)
        .await
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {authority}"))?;
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("address")
    } else {
        "[::]:0".parse().expect("address")
    };
    let sock = std::net::UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    sock.connect(addr).map_err(|e| e.to_string())?;
    Ok(sock.local_addr().map_err(|e| e.to_string())?.ip())
}
