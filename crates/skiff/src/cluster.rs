//! Commands for clusters beyond one machine: `skiff token create` (a bootstrap token and the
//! `skiff agent` command that joins a node with it) and `skiff migrate` (an embedded store
//! copied into etcd).

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use skiff_store::{EtcdStore, RedbStore, Store};

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a bootstrap token and print the `skiff agent` command that joins a node with it.
    Create(TokenCreate),
}

#[derive(Args, Debug)]
pub struct TokenCreate {
    /// The admin kubeconfig of the cluster (`<data-dir>/kubeconfig`).
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// How long the token may be used to join (Go-style: 30m, 24h; 0 = forever).
    #[arg(long, default_value = "24h")]
    pub ttl: String,
}

pub async fn token(cmd: TokenCommand) -> Result<(), String> {
    let TokenCommand::Create(args) = cmd;
    let ttl = skiff_core::duration::parse_duration(&args.ttl).map_err(|e| format!("--ttl: {e}"))?;
    let yaml = std::fs::read_to_string(&args.kubeconfig)
        .map_err(|e| format!("cannot read {}: {e}", args.kubeconfig.display()))?;
    let kc = kube::config::Kubeconfig::from_yaml(&yaml)
        .map_err(|e| format!("cannot read the kubeconfig: {e}"))?;
    let cluster = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .ok_or("the kubeconfig names no cluster")?;
    let server = cluster
        .server
        .clone()
        .ok_or("the kubeconfig names no server")?;
    let ca_b64 = cluster
        .certificate_authority_data
        .clone()
        .ok_or("the kubeconfig has no certificate-authority-data")?;
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(ca_b64.trim())
        .map_err(|e| format!("the kubeconfig's CA is not base64: {e}"))?;
    let hash = skiff_apiserver::tls::ca_cert_hash(&String::from_utf8_lossy(&ca_pem))
        .map_err(|e| e.to_string())?;
    let client = crate::up::client_from_kubeconfig(&yaml).await?;
    let id = skiff_apiserver::join::random_token(6);
    let secret = skiff_apiserver::join::random_token(16);
    let mut data = serde_json::json!({
        "token-id": id, "token-secret": secret,
        "usage-bootstrap-authentication": "true",
        "description": "made by skiff token create",
    });
    if ttl > jiff::SignedDuration::ZERO {
        data["expiration"] = (jiff::Timestamp::now() + ttl).to_string().into();
    }
    let obj: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "type": skiff_apiserver::auth::BOOTSTRAP_TOKEN_TYPE,
        "stringData": data,
    }))
    .map_err(|e| e.to_string())?;
    Api::<Secret>::namespaced(client, "kube-system")
        .create(&PostParams::default(), &obj)
        .await
        .map_err(|e| format!("cannot create the token: {e}"))?;
    println!("skiff agent --server {server} --token {id}.{secret} --ca-cert-hash {hash}");
    Ok(())
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The data dir of the embedded store to copy (`skiff up --data-dir`); stop that skiff first.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The etcd to copy into (comma-separated http:// URLs). It must not hold a skiff cluster yet.
    #[arg(long, value_delimiter = ',', required = true)]
    pub etcd_endpoints: Vec<String>,
}

/// `skiff migrate`: every key of an embedded store into an empty etcd, values unchanged.
pub async fn migrate(args: MigrateArgs) -> Result<(), String> {
    let path = args.data_dir.join("store.redb");
    if !path.exists() {
        return Err(format!("no embedded store at {}", path.display()));
    }
    let from = RedbStore::open(&path).map_err(|e| {
        format!(
            "cannot open {}: {e} (stop the skiff that uses it first)",
            path.display()
        )
    })?;
    let to = EtcdStore::connect(&args.etcd_endpoints)
        .await
        .map_err(|e| e.to_string())?;
    let existing = to.count("/registry/").await.map_err(|e| e.to_string())?;
    if existing > 0 {
        return Err(format!(
            "etcd already holds {existing} objects under /registry/: migrate into an empty etcd"
        ));
    }
    let mut copied = 0u64;
    let mut after: Option<String> = None;
    let started = std::time::Instant::now();
    let mut last_report = std::time::Instant::now();
    loop {
        let page = from
            .list("/", after.as_deref(), 500)
            .await
            .map_err(|e| e.to_string())?;
        for kv in &page.items {
            match to.create(&kv.key, kv.value.clone()).await {
                Ok(_) => copied += 1,
                Err(skiff_store::StoreError::AlreadyExists) => {
                    to.update(&kv.key, kv.value.clone(), None)
                        .await
                        .map_err(|e| format!("cannot write {}: {e}", kv.key))?;
                    copied += 1;
                }
                Err(e) => return Err(format!("cannot write {}: {e}", kv.key)),
            }
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            eprintln!("  {copied} keys copied…");
            last_report = std::time::Instant::now();
        }
        match (page.more, page.items.last()) {
            (true, Some(last)) => after = Some(last.key.clone()),
            _ => break,
        }
    }
    println!(
        "copied {copied} keys into etcd in {:.1?}; start the servers with --store etcd --etcd-endpoints {}",
        started.elapsed(),
        args.etcd_endpoints.join(",")
    );
    Ok(())
}
