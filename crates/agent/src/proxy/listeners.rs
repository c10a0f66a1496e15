//! The proxy's I/O half: one task keeps the listener set equal to what the routing table asks
//! for ([`routing::desired_listeners`]), and every accepted connection is relayed to a backend
//! the [`Balancer`] picks.
//!
//! * A table change opens the new listeners and closes the ones no longer wanted; connections
//!   already relayed are separate tasks and keep going. A bind that fails is retried every
//!   few seconds.
//! * With `cluster_ip`, each cluster IP is put on the dummy interface before its listeners
//!   bind and removed after they close. Addresses the interface carried before the proxy
//!   started are removed once the first real table arrives (not before, so a restart does not
//!   drop them while the watches list).
//! * A connection reads the table when it arrives, so a backend that left gets no new
//!   connection; it tries up to [`MAX_TRIES`] backends with a 1 s connect timeout each, then
//!   relays both ways with half-close (`copy_bidirectional`). With no backend, or none
//!   reachable, the client's connection is reset.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::dummy;
use super::metrics::{PortCounters, ProxyMetrics};
use super::routing::{self, BackendChange, Balancer, MAX_TRIES, RoutingTable, ServicePortKey};
use super::{ProxyConfig, stopped};

/// How long a connect to one backend may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often failed binds (and failed address changes) are retried, and stale affinities swept.
const RETRY_EVERY: Duration = Duration::from_secs(5);

/// What connection tasks share.
pub(crate) struct Shared {
    pub table: watch::Receiver<Arc<RoutingTable>>,
    pub balancer: Mutex<Balancer>,
    pub metrics: ProxyMetrics,
    pub stop: watch::Receiver<bool>,
}

struct Open {
    key: ServicePortKey,
    task: JoinHandle<()>,
}

/// The listener set and the cluster IPs put on the dummy interface.
struct Listeners {
    cfg: ProxyConfig,
    shared: Arc<Shared>,
    open: BTreeMap<SocketAddr, Open>,
    /// Binds that failed, with the error last logged (logged again only when it changes).
    failed: BTreeMap<SocketAddr, String>,
    /// Cluster IPs this proxy put on the interface.
    assigned: BTreeSet<IpAddr>,
    /// Addresses found on the interface at start, removed after the first table change.
    stale: Option<BTreeSet<IpAddr>>,
    /// Where cluster IPs go (None: cluster IPs are not served).
    iface: Option<dummy::Iface>,
    open_tx: watch::Sender<BTreeSet<SocketAddr>>,
}

/// Keeps the listeners following the table until `stop`; then closes them all and removes the
/// cluster IPs it added.
pub(crate) async fn run(
    cfg: ProxyConfig,
    shared: Arc<Shared>,
    mut table_rx: watch::Receiver<Arc<RoutingTable>>,
    mut stop: watch::Receiver<bool>,
    open_tx: watch::Sender<BTreeSet<SocketAddr>>,
    stale: BTreeSet<IpAddr>,
    iface: Option<dummy::Iface>,
) {
    let mut l = Listeners {
        stale: iface.is_some().then_some(stale),
        iface,
        cfg,
        shared,
        open: BTreeMap::new(),
        failed: BTreeMap::new(),
        assigned: BTreeSet::new(),
        open_tx,
    };
    let mut previous = Arc::new(RoutingTable::default());
    let mut first = true;
    loop {
        let table = table_rx.borrow_and_update().clone();
        if !first && let Some(stale) = l.stale.take() {
            l.remove_stale(stale).await;
        }
        first = false;
        for change in routing::backend_changes(&previous, &table) {
            log_change(change);
        }
        l.shared
            .balancer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(&table, Instant::now());
        l.reconcile(&table).await;
        previous = table;
        tokio::select! {
            changed = table_rx.changed() => {
                if changed.is_err() {
                    // The table's source is gone: keep serving the last table until stopped.
                    stopped(&mut stop).await;
                    break;
                }
            }
            _ = tokio::time::sleep(RETRY_EVERY) => {}
            _ = stopped(&mut stop) => break,
        }
    }
    l.close_all().await;
}

fn log_change(change: BackendChange) {
    match change {
        BackendChange::NoBackends(key) => {
            tracing::warn!(service = %key, "service port has no ready endpoints; its connections are refused")
        }
        BackendChange::Restored(key, n) => {
            tracing::info!(service = %key, backends = n, "service port has ready endpoints again")
        }
        BackendChange::TerminatingFallback(key, n) => tracing::info!(
            service = %key,
            backends = n,
            "no ready endpoint; sending new connections to terminating endpoints that still serve"
        ),
    }
}

impl Listeners {
    async fn reconcile(&mut self, table: &RoutingTable) {
        let (desired, conflicts) =
            routing::desired_listeners(table, &self.cfg.nodeport_addresses, self.cfg.cluster_ip);
        for (addr, key) in conflicts {
            tracing::warn!(%addr, service = %key, "address already taken by another service port; not listening for this one");
        }
        // Close what is no longer wanted (or now belongs to another Service port).
        let closing: Vec<SocketAddr> = self
            .open
            .iter()
            .filter(|(addr, o)| desired.get(addr) != Some(&o.key))
            .map(|(addr, _)| *addr)
            .collect();
        for addr in closing {
            if let Some(o) = self.open.remove(&addr) {
                o.task.abort();
                let _ = o.task.await;
                tracing::info!(%addr, service = %o.key, "listener closed");
            }
        }
        self.failed.retain(|addr, _| desired.contains_key(addr));
        let wanted_ips = match &self.iface {
            Some(_) => routing::desired_cluster_ips(table),
            None => BTreeSet::new(),
        };
        for ip in wanted_ips.difference(&self.assigned.clone()) {
            let Some(iface) = &self.iface else { break };
            match dummy::add_address(iface, *ip).await {
                Ok(()) => {
                    self.assigned.insert(*ip);
                    tracing::info!(cluster_ip = %ip, interface = %iface.dev, "cluster IP added");
                }
                Err(e) => tracing::warn!(cluster_ip = %ip, error = %e, "cannot add the cluster IP"),
            }
        }
        for (addr, key) in &desired {
            if self.open.contains_key(addr) {
                continue;
            }
            if self.cfg.cluster_ip
                && wanted_ips.contains(&addr.ip())
                && !self.assigned.contains(&addr.ip())
            {
                continue;
            }
            match TcpListener::bind(*addr).await {
                Ok(listener) => {
                    self.failed.remove(addr);
                    let task =
                        tokio::spawn(accept_loop(listener, key.clone(), self.shared.clone()));
                    tracing::info!(%addr, service = %key, "listener opened");
                    self.open.insert(
                        *addr,
                        Open {
                            key: key.clone(),
                            task,
                        },
                    );
                }
                Err(e) => {
                    let e = e.to_string();
                    if self.failed.get(addr) != Some(&e) {
                        tracing::warn!(%addr, service = %key, error = %e, "cannot listen; retrying");
                        self.failed.insert(*addr, e);
                    }
                }
            }
        }
        let gone: Vec<IpAddr> = self.assigned.difference(&wanted_ips).copied().collect();
        for ip in gone {
            let Some(iface) = &self.iface else { break };
            match dummy::del_address(iface, ip).await {
                Ok(()) => tracing::info!(cluster_ip = %ip, "cluster IP removed"),
                Err(e) => {
                    tracing::warn!(cluster_ip = %ip, error = %e, "cannot remove the cluster IP")
                }
            }
            self.assigned.remove(&ip);
        }
        self.publish();
    }

    async fn remove_stale(&mut self, stale: BTreeSet<IpAddr>) {
        let Some(iface) = &self.iface else { return };
        for ip in stale {
            if self.assigned.contains(&ip) {
                continue;
            }
            match dummy::del_address(iface, ip).await {
                Ok(()) => tracing::info!(cluster_ip = %ip, "stale cluster IP removed"),
                Err(e) => {
                    tracing::warn!(cluster_ip = %ip, error = %e, "cannot remove a stale cluster IP")
                }
            }
        }
    }

    async fn close_all(&mut self) {
        for (addr, o) in std::mem::take(&mut self.open) {
            o.task.abort();
            let _ = o.task.await;
            tracing::info!(%addr, service = %o.key, "listener closed");
        }
        let assigned = std::mem::take(&mut self.assigned);
        for ip in assigned {
            let Some(iface) = &self.iface else { break };
            if let Err(e) = dummy::del_address(iface, ip).await {
                tracing::warn!(cluster_ip = %ip, error = %e, "cannot remove the cluster IP");
            }
        }
        self.publish();
    }

    fn publish(&self) {
        self.shared.metrics.set_listeners(self.open.len());
        let now: BTreeSet<SocketAddr> = self.open.keys().copied().collect();
        self.open_tx.send_if_modified(|cur| {
            if *cur == now {
                false
            } else {
                *cur = now;
                true
            }
        });
    }
}

async fn accept_loop(listener: TcpListener, key: ServicePortKey, shared: Arc<Shared>) {
    let counters = shared.metrics.port(&key);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                counters.accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(relay(
                    stream,
                    peer,
                    key.clone(),
                    shared.clone(),
                    counters.clone(),
                ));
            }
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(service = %key, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Relays one client connection.
async fn relay(
    mut client: TcpStream,
    peer: SocketAddr,
    key: ServicePortKey,
    shared: Arc<Shared>,
    counters: Arc<PortCounters>,
) {
    let table = shared.table.borrow().clone();
    let Some(entry) = table.get(&key) else {
        counters.no_backends.fetch_add(1, Ordering::Relaxed);
        reset(client);
        return;
    };
    let candidates = shared
        .balancer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pick(entry, peer.ip(), Instant::now(), MAX_TRIES);
    if candidates.is_empty() {
        counters.no_backends.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(service = %key, client = %peer, "no backend; connection reset");
        reset(client);
        return;
    }
    let mut reached = None;
    for addr in &candidates {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                reached = Some((*addr, s));
                break;
            }
            Ok(Err(e)) => {
                counters.connect_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(service = %key, backend = %addr, error = %e, "backend connect failed");
            }
            Err(_) => {
                counters.connect_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(service = %key, backend = %addr, "backend connect timed out");
            }
        }
    }
    let Some((backend, mut server)) = reached else {
        counters.connect_failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(service = %key, client = %peer, tried = candidates.len(), "no backend reachable; connection reset");
        reset(client);
        return;
    };
    shared
        .balancer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .connected(entry, peer.ip(), backend, Instant::now());
    drop(table);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    counters.active.fetch_add(1, Ordering::Relaxed);
    let mut stop = shared.stop.clone();
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut server) => {
            if let Err(e) = r {
                tracing::trace!(service = %key, %backend, error = %e, "relay ended");
            }
        }
        _ = stopped(&mut stop) => {}
    }
    counters.active.fetch_sub(1, Ordering::Relaxed);
}

/// Closes with a RST, so the client sees the refusal at once.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}
