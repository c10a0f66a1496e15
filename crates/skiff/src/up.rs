//! `skiff up` and `skiff server`: the API server over the embedded store, plus (as they land)
//! the scheduler, controllers and a local agent, in one process.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use skiff_apiserver::ServerConfig;
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
    let _ = server_only;
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
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
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
