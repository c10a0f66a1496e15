//! Simulated nodes: `skiff up --sim-nodes N` adds them to a one-machine cluster, `skiff sim`
//! runs them against any server. The fleet itself lives in `skiff_agent::sim`.

use std::path::PathBuf;

use clap::Args;
use skiff_agent::sim::fleet::{self, FleetConfig, FleetHandle};

#[derive(Args, Debug, Clone)]
pub struct SimArgs {
    /// Simulated nodes to run (0: none). Their pods go through the real lifecycle engine;
    /// only the containers are simulated, as the pods' `sim.skiff.dev/behaviour` annotations say.
    #[arg(long, default_value_t = 0)]
    pub sim_nodes: usize,
    /// Capacity (and allocatable) of each simulated node.
    #[arg(long, default_value = "cpu=32,memory=256Gi,pods=110")]
    pub sim_node_capacity: String,
    /// Simulated nodes are named PREFIX0, PREFIX1, …
    #[arg(long, default_value = "sim-")]
    pub sim_node_prefix: String,
    /// Concurrent pod status writes of the simulated fleet.
    #[arg(long, default_value_t = 16)]
    pub sim_status_writers: usize,
    /// Pod events per second the simulated fleet writes at most (more are dropped and counted).
    #[arg(long, default_value_t = 200.0)]
    pub sim_event_qps: f64,
}

impl SimArgs {
    /// The fleet these arguments ask for (None: no simulated nodes).
    pub fn config(&self) -> Result<Option<FleetConfig>, String> {
        if self.sim_nodes == 0 {
            return Ok(None);
        }
        let capacity = fleet::parse_capacity(&self.sim_node_capacity)
            .map_err(|e| format!("--sim-node-capacity: {e}"))?;
        if self.sim_node_prefix.is_empty()
            || !self
                .sim_node_prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            return Err(format!(
                "--sim-node-prefix {:?}: node names are lowercase letters, digits, '-' and '.'",
                self.sim_node_prefix
            ));
        }
        if !self.sim_event_qps.is_finite() || self.sim_event_qps <= 0.0 {
            return Err("--sim-event-qps must be more than 0".into());
        }
        Ok(Some(FleetConfig {
            nodes: self.sim_nodes,
            name_prefix: self.sim_node_prefix.clone(),
            capacity,
            status_writers: self.sim_status_writers.max(1),
            event_qps: self.sim_event_qps,
        }))
    }
}

/// Starts the fleet in the background (registering thousands of nodes takes a while; the
/// cluster is usable meanwhile); the task ends with the running fleet's handle.
pub fn spawn(
    client: kube::Client,
    cfg: FleetConfig,
) -> tokio::task::JoinHandle<Option<FleetHandle>> {
    tokio::spawn(async move {
        let nodes = cfg.nodes;
        match fleet::start(client, cfg).await {
            Ok(h) => {
                tracing::info!(nodes, "simulated fleet running");
                Some(h)
            }
            Err(e) => {
                tracing::error!(error = %e, "simulated fleet failed to start");
                None
            }
        }
    })
}

/// Stops a fleet started with [`spawn`].
pub async fn stop(task: tokio::task::JoinHandle<Option<FleetHandle>>) {
    if !task.is_finished() {
        task.abort();
    }
    if let Ok(Some(h)) = task.await {
        h.shutdown().await;
    }
}

#[derive(Args, Debug)]
pub struct SimCommandArgs {
    /// The kubeconfig of the cluster the simulated nodes join.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    #[command(flatten)]
    pub sim: SimArgs,
}

/// `skiff sim`: simulated nodes joining the server a kubeconfig names.
pub async fn run(args: SimCommandArgs) -> Result<(), String> {
    let Some(cfg) = args.sim.config()? else {
        return Err("give --sim-nodes N (how many nodes to simulate)".into());
    };
    let yaml = std::fs::read_to_string(&args.kubeconfig)
        .map_err(|e| format!("cannot read {}: {e}", args.kubeconfig.display()))?;
    let client = crate::up::client_from_kubeconfig(&yaml).await?;
    let nodes = cfg.nodes;
    let handle = fleet::start(client, cfg).await?;
    println!("skiff sim is running: {nodes} simulated nodes");
    crate::up::shutdown_signal().await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}
