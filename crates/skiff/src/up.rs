//! `skiff up` and `skiff server`: the API server over the embedded store, plus (as they land)
//! the scheduler, controllers and a local agent, in one process. `skiff scheduler` runs the
//! scheduler alone against any server. Every part other than the API server is an API client,
//! even in-process: it gets a kube client built from the admin kubeconfig `up` writes.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
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
    println!(
        "skiff is ready in {} ms: API server {url}, data in {}",
        started.elapsed().as_millis(),
        data_dir.display()
    );
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
        Some(tokio::spawn(skiff_controllers::node_lifecycle::run(
            client, cfg,
        )))
    } else {
        None
    };
    shutdown_signal().await;
    tracing::info!("shutting down");
    if let Some(c) = controllers {
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

async fn shutdown_signal() {
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
