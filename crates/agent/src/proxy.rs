//! The service proxy: a user-space L4 (TCP) load balancer on each agent, in the way of the old
//! userspace kube-proxy.
//!
//! ```text
//! Service + EndpointSlice watchers ──▶ RoutingTable (watch channel) ──▶ listener set
//!   (proxy::informer, via the API)       (proxy::routing, pure)          (proxy::listeners)
//! client ──▶ node port / cluster IP listener ──▶ Balancer picks ──▶ backend (≤ 3 tries, 1 s each)
//! ```
//!
//! * [`routing`] is pure: the table of Service ports and their endpoints, which endpoints take
//!   new connections (ready ones; serving-and-terminating ones when none is ready), round robin
//!   per Service port and `sessionAffinity: ClientIP`.
//! * Listeners: every NodePort and LoadBalancer Service gets a TCP listener per node port on
//!   each of [`ProxyConfig::nodeport_addresses`]. ClusterIP listeners exist only with
//!   [`ProxyConfig::cluster_ip`]: each cluster IP is then added as a host address to a dummy
//!   interface ([`ProxyConfig::dummy_interface`], created if missing; needs root and iproute2)
//!   and the proxy listens on `clusterIP:port`. Without it, cluster IPs are not served on this
//!   node (a pod can still reach a Service through a node port).
//! * Only TCP is proxied: UDP and SCTP Service ports are ignored. External IPs and load
//!   balancer ingress IPs are not listened on. `externalTrafficPolicy` and
//!   `internalTrafficPolicy` are not applied (every endpoint is a backend, any node).
//! * The table can come from the API ([`start`]) or from the caller ([`serve`]).
//! * Counters: [`ProxyMetrics`] (Prometheus text from [`ProxyMetrics::render`]).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;

mod dummy;
mod informer;
mod listeners;
pub mod metrics;
pub mod routing;

pub use listeners::CONNECT_TIMEOUT;
pub use metrics::{PortSnapshot, ProxyMetrics};
pub use routing::{Endpoint, RoutingTable, ServicePortEntry, ServicePortKey};

/// The default dummy interface for cluster IPs.
pub const DEFAULT_DUMMY_INTERFACE: &str = "skiff-svc";

/// How the proxy runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Where node ports listen. Empty: `127.0.0.1` only when calling [`start`] or [`serve`]
    /// directly; the agent fills in its node IP and `127.0.0.1`
    /// ([`ProxyConfig::default_nodeport_addresses`]).
    pub nodeport_addresses: Vec<IpAddr>,
    /// Serve cluster IPs: put them on the dummy interface and listen on them (root only).
    pub cluster_ip: bool,
    /// The dummy interface carrying the cluster IPs.
    pub dummy_interface: String,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            nodeport_addresses: Vec::new(),
            cluster_ip: false,
            dummy_interface: DEFAULT_DUMMY_INTERFACE.to_string(),
        }
    }
}

impl ProxyConfig {
    /// The node-port addresses of a node: its IP, and 127.0.0.1 when different. Never the
    /// unspecified address (`0.0.0.0`, `::`).
    pub fn default_nodeport_addresses(node_ip: IpAddr) -> Vec<IpAddr> {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut out = Vec::new();
        if !node_ip.is_unspecified() {
            out.push(node_ip);
        }
        if node_ip != lo {
            out.push(lo);
        }
        out
    }

    /// This config with, if it names none, the node's default node-port addresses.
    pub fn for_node(mut self, node_ip: IpAddr) -> Self {
        if self.nodeport_addresses.is_empty() {
            self.nodeport_addresses = Self::default_nodeport_addresses(node_ip);
        }
        self
    }
}

/// A running proxy.
pub struct ProxyHandle {
    stop: watch::Sender<bool>,
    listeners_task: JoinHandle<()>,
    watch_task: Option<JoinHandle<()>>,
    metrics: ProxyMetrics,
    open: watch::Receiver<BTreeSet<SocketAddr>>,
    table: watch::Receiver<Arc<RoutingTable>>,
}

impl ProxyHandle {
    /// The proxy's counters.
    pub fn metrics(&self) -> &ProxyMetrics {
        &self.metrics
    }

    /// The addresses listened on now.
    pub fn listeners(&self) -> BTreeSet<SocketAddr> {
        self.open.borrow().clone()
    }

    /// Follows the addresses listened on.
    pub fn listeners_watch(&self) -> watch::Receiver<BTreeSet<SocketAddr>> {
        self.open.clone()
    }

    /// The routing table in use.
    pub fn table(&self) -> Arc<RoutingTable> {
        self.table.borrow().clone()
    }

    /// Stops the watches, closes the listeners, cuts the relayed connections and removes the
    /// cluster IPs this proxy added (the dummy interface stays).
    pub async fn shutdown(self) {
        if let Some(t) = self.watch_task {
            t.abort();
            let _ = t.await;
        }
        let _ = self.stop.send(true);
        let _ = self.listeners_task.await;
        tracing::info!("service proxy stopped");
    }
}

/// Starts the proxy fed by the API: Services and EndpointSlices in all namespaces. Returns at
/// once; listeners open when the watches have listed.
pub async fn start(client: kube::Client, cfg: ProxyConfig) -> Result<ProxyHandle, String> {
    let (tx, rx) = watch::channel(Arc::new(RoutingTable::default()));
    let mut handle = serve(cfg, rx).await?;
    handle.watch_task = Some(tokio::spawn(informer::run(client, tx)));
    Ok(handle)
}

/// Starts the proxy on a routing table the caller publishes (tests, or another source). The
/// listeners follow every value sent; the current one is served at once.
pub async fn serve(
    mut cfg: ProxyConfig,
    table: watch::Receiver<Arc<RoutingTable>>,
) -> Result<ProxyHandle, String> {
    if cfg.nodeport_addresses.is_empty() {
        cfg.nodeport_addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    }
    let mut seen = BTreeSet::new();
    cfg.nodeport_addresses.retain(|a| seen.insert(*a));
    let mut iface = None;
    let stale: BTreeSet<IpAddr> = if cfg.cluster_ip {
        let name = cfg.dummy_interface.as_str();
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            return Err(format!("invalid dummy interface name {name:?}"));
        }
        let found = dummy::ensure_interface(name)
            .await
            .map_err(|e| format!("cannot set up the dummy interface {name}: {e}"))?;
        let stale = dummy::addresses(&found)
            .await
            .map_err(|e| format!("cannot read the addresses of {}: {e}", found.dev))?
            .into_iter()
            .collect();
        iface = Some(found);
        stale
    } else {
        BTreeSet::new()
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics = ProxyMetrics::new(table.clone());
    let shared = Arc::new(listeners::Shared {
        table: table.clone(),
        balancer: Mutex::default(),
        metrics: metrics.clone(),
        stop: stop_rx.clone(),
    });
    let (open_tx, open_rx) = watch::channel(BTreeSet::new());
    tracing::info!(
        nodeport_addresses = ?cfg.nodeport_addresses,
        cluster_ip = cfg.cluster_ip,
        interface = %cfg.dummy_interface,
        "service proxy started"
    );
    let listeners_task = tokio::spawn(listeners::run(
        cfg,
        shared,
        table.clone(),
        stop_rx,
        open_tx,
        stale,
        iface,
    ));
    Ok(ProxyHandle {
        stop: stop_tx,
        listeners_task,
        watch_task: None,
        metrics,
        open: open_rx,
        table,
    })
}

/// Resolves when `stop` turns true; never if its sender is gone (a dropped handle leaves the
/// proxy running, as a dropped agent handle leaves the agent).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_nodeport_addresses() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let node: IpAddr = "192.168.1.20".parse().unwrap();
        assert_eq!(
            ProxyConfig::default_nodeport_addresses(node),
            vec![node, lo]
        );
        assert_eq!(ProxyConfig::default_nodeport_addresses(lo), vec![lo]);
        assert_eq!(
            ProxyConfig::default_nodeport_addresses("0.0.0.0".parse().unwrap()),
            vec![lo]
        );
        let cfg = ProxyConfig {
            nodeport_addresses: vec![node],
            ..ProxyConfig::default()
        };
        assert_eq!(cfg.clone().for_node(lo), cfg);
        assert_eq!(ProxyConfig::default().dummy_interface, "skiff-svc");
        assert!(!ProxyConfig::default().cluster_ip);
    }
}
