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
    let run_scheduler = !server_only && !args.disable.iter().any(|d| d == "scheduler");
    let run_controllers = !server_only && !args.disable.iter().any(|d| d == "controllers");
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
    let store_path = data_dir.join("store.redb");
    let store = RedbStore::open(&store_path).map_err(|e| {
        format!(
            "cannot open the store {}: {e} (is another skiff using this data dir?)",
            store_path.display()
        )
    })?;
    let cfg = ServerConfig {
        pki_dir: data_dir.join("pki"),
        bind: SocketAddr::new(args.address, args.port),
        extra_sans: vec![args.address.to_string()],
        network: skiff_apiserver::ServiceNetwork::parse(
            &args.service_cluster_ip_range,
            &args.service_node_port_range,
        )?,
    };
    let server = skiff_apiserver::start(cfg, Arc::new(store)).await.map_err(|e| {
        format!("cannot start the API server on {}:{}: {e} (use --port to pick another port, or --port 0 for any free one)", args.address, args.port)
    })?;
    let host = if args.address.is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        args.address.to_string()
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
            token: server.pki.admin_token.clone(),
        };
        let name = cfg.node_name.clone();
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
    let scheduler = if run_scheduler {
        let client = client_from_kubeconfig(&kc).await?;
        Some(skiff_scheduler::runner::start(
            client,
            SchedulerConfig::default(),
        ))
    } else {
        None
    };
    let controllers = if run_controllers {
        let client = client_from_kubeconfig(&kc).await?;
        let cfg = skiff_controllers::node_lifecycle::Config {
            grace_period: std::time::Duration::from_secs(args.node_monitor_grace_period),
            monitor_period: std::time::Duration::from_secs(
                args.node_monitor_grace_period.clamp(1, 5),
            ),
        };
        Some([
            tokio::spawn(skiff_controllers::node_lifecycle::run(client.clone(), cfg)),
            tokio::spawn(skiff_controllers::endpoints::run(client.clone())),
            tokio::spawn(skiff_controllers::namespace_defaults::run_service_accounts(
                client.clone(),
            )),
            tokio::spawn(
                skiff_controllers::namespace_defaults::run_root_ca_publisher(
                    client.clone(),
                    server.pki.ca_pem.clone(),
                ),
            ),
            tokio::spawn(skiff_controllers::taint_eviction::run(client)),
        ])
    } else {
        None
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
    for c in controllers.iter().flatten() {
        c.abort();
    }
    if let Some(s) = scheduler {
        s.shutdown().await;
    }
    server.shutdown().await;
    Ok(())
}

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
    /// Bearer token for the API server; the agent's log server accepts the same token.
    #[arg(long)]
    pub token: String,
    /// Name of this node [default: the hostname].
    #[arg(long)]
    pub node_name: Option<String>,
    /// The agent's state (runtime records, logs, volumes) [default: <data dir>/agent].
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

/// `skiff agent`: a node agent joining the server at `--server`.
pub async fn run_agent(args: AgentArgs) -> Result<(), String> {
    let tls = if let Some(f) = &args.ca_file {
        let pem =
            std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        use base64::Engine;
        format!(
            "certificate-authority-data: {}",
            base64::engine::general_purpose::STANDARD.encode(pem)
        )
    } else if args.insecure_skip_tls_verify {
        "insecure-skip-tls-verify: true".to_string()
    } else {
        return Err(
            "give --ca-file (the server's CA, <data-dir>/pki/ca.crt) or --insecure-skip-tls-verify"
                .into(),
        );
    };
    let kc = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: skiff
  cluster:
    server: {}
    {tls}
users:
- name: skiff
  user:
    token: {}
contexts:
- name: skiff
  context:
    cluster: skiff
    user: skiff
current-context: skiff
",
        args.server, args.token
    );
    let client = client_from_kubeconfig(&kc).await?;
    let node_ip = match args.node_ip {
        Some(ip) => ip,
        None => local_ip_towards(&args.server).await?,
    };
    let cfg = AgentConfig {
        node_name: args
            .node_name
            .clone()
            .unwrap_or_else(skiff_agent::node::hostname),
        node_ip,
        state_dir: args
            .state_dir
            .clone()
            .unwrap_or_else(|| crate::default_data_dir().join("agent")),
        server_port: args.port,
        token: args.token.clone(),
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
