//! The proxy's pure half: the routing table built from Services and EndpointSlices, which
//! endpoints receive new connections, the round-robin and client-IP affinity choice, and the
//! listeners a table asks for. No I/O, no clock (time is an argument).
//!
//! * A Service contributes one entry per TCP port (`ExternalName` and headless Services, and
//!   UDP/SCTP ports, are not proxied). The entry is keyed by namespace, Service name and port
//!   name (empty for an unnamed port).
//! * Its endpoints come from the EndpointSlices of the same namespace labelled
//!   `kubernetes.io/service-name: <service>`: the slice port whose `name` equals the Service
//!   port's name gives the backend port (the slice carries the resolved target port), and each
//!   endpoint's first address is the backend's address. FQDN slices are ignored.
//! * Backends: the endpoints that are ready (a missing `ready` counts as ready); when none is,
//!   the endpoints that are both serving and terminating (so a Service whose last pods are
//!   shutting down gracefully still answers).
//! * [`Balancer`]: round robin per Service port over the backends; with
//!   `sessionAffinity: ClientIP` a client keeps the backend it last reached for
//!   `timeoutSeconds` (default 10800) while that backend is still one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset.
pub const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10800);
/// Backends tried per connection before giving up.
pub const MAX_TRIES: usize = 3;

/// One port of one Service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePortKey {
    pub namespace: String,
    pub service: String,
    /// The port's name; empty for an unnamed port.
    pub port: String,
}

impl ServicePortKey {
    pub fn new(namespace: &str, service: &str, port: &str) -> Self {
        ServicePortKey {
            namespace: namespace.to_string(),
            service: service.to_string(),
            port: port.to_string(),
        }
    }
}

impl fmt::Display for ServicePortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service)?;
        if !self.port.is_empty() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// An endpoint of a Service port, with its conditions resolved (missing `ready` and `serving`
/// are true, missing `terminating` false).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

impl Endpoint {
    /// A ready endpoint.
    pub fn ready(addr: SocketAddr) -> Self {
        Endpoint {
            addr,
            ready: true,
            serving: true,
            terminating: false,
        }
    }
}

/// What the proxy knows of one Service port.
#[derive(Clone, Debug, PartialEq)]
pub struct ServicePortEntry {
    pub key: ServicePortKey,
    /// The Service port (what cluster-IP listeners listen on).
    pub port: u16,
    /// The node port, for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
    pub cluster_ips: Vec<IpAddr>,
    /// The client-IP affinity timeout, when `sessionAffinity` is `ClientIP`.
    pub affinity: Option<Duration>,
    /// All endpoints, sorted by address.
    pub endpoints: Vec<Endpoint>,
    /// The endpoints that receive new connections, sorted ([`select_backends`]).
    pub backends: Vec<SocketAddr>,
    /// True when `backends` are terminating endpoints (no endpoint is ready).
    pub terminating_fallback: bool,
}

impl ServicePortEntry {
    /// An entry with no node port, cluster IP or affinity: set the fields wanted.
    pub fn new(key: ServicePortKey, port: u16, endpoints: Vec<Endpoint>) -> Self {
        let mut entry = ServicePortEntry {
            key,
            port,
            node_port: None,
            cluster_ips: Vec::new(),
            affinity: None,
            endpoints: Vec::new(),
            backends: Vec::new(),
            terminating_fallback: false,
        };
        entry.set_endpoints(endpoints);
        entry
    }

    /// Replaces the endpoints (de-duplicated by address, sorted) and recomputes the backends.
    pub fn set_endpoints(&mut self, endpoints: Vec<Endpoint>) {
        let mut by_addr: BTreeMap<SocketAddr, Endpoint> = BTreeMap::new();
        for e in endpoints {
            by_addr
                .entry(e.addr)
                .and_modify(|old| {
                    // The same address in two slices (a slice being rewritten): the more
                    // usable view wins.
                    old.ready |= e.ready;
                    old.serving |= e.serving;
                    old.terminating &= e.terminating;
                })
                .or_insert(e);
        }
        self.endpoints = by_addr.into_values().collect();
        let (backends, fallback) = select_backends(&self.endpoints);
        self.backends = backends;
        self.terminating_fallback = fallback;
    }
}

/// The endpoints that receive new connections: the ready ones; if none, those serving and
/// terminating (second value true). Order kept.
pub fn select_backends(endpoints: &[Endpoint]) -> (Vec<SocketAddr>, bool) {
    let ready: Vec<SocketAddr> = endpoints
        .iter()
        .filter(|e| e.ready)
        .map(|e| e.addr)
        .collect();
    if !ready.is_empty() {
        return (ready, false);
    }
    let terminating: Vec<SocketAddr> = endpoints
        .iter()
        .filter(|e| e.serving && e.terminating)
        .map(|e| e.addr)
        .collect();
    let fallback = !terminating.is_empty();
    (terminating, fallback)
}

/// Every proxied Service port.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoutingTable {
    entries: BTreeMap<ServicePortKey, ServicePortEntry>,
}

impl RoutingTable {
    /// The table of these Services and EndpointSlices (all namespaces).
    pub fn build<'a>(
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Self {
        let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let Some(svc) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
                continue;
            }
            let ns = slice.metadata.namespace.as_deref().unwrap_or("default");
            by_service
                .entry((ns, svc.as_str()))
                .or_default()
                .push(slice);
        }
        let mut table = RoutingTable::default();
        for svc in services {
            let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
            let Some(name) = svc.metadata.name.as_deref() else {
                continue;
            };
            let slices = by_service
                .get(&(ns, name))
                .map(Vec::as_slice)
                .unwrap_or_default();
            for entry in service_entries(ns, name, svc, slices) {
                table.insert(entry);
            }
        }
        table
    }

    /// Adds or replaces an entry.
    pub fn insert(&mut self, entry: ServicePortEntry) {
        self.entries.insert(entry.key.clone(), entry);
    }

    pub fn remove(&mut self, key: &ServicePortKey) -> Option<ServicePortEntry> {
        self.entries.remove(key)
    }

    pub fn get(&self, key: &ServicePortKey) -> Option<&ServicePortEntry> {
        self.entries.get(key)
    }

    pub fn get_mut(&mut self, key: &ServicePortKey) -> Option<&mut ServicePortEntry> {
        self.entries.get_mut(key)
    }

    /// The entries in key order.
    pub fn entries(&self) -> impl Iterator<Item = &ServicePortEntry> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The entries of one Service (none for ExternalName and headless Services).
fn service_entries(
    ns: &str,
    name: &str,
    svc: &Service,
    slices: &[&EndpointSlice],
) -> Vec<ServicePortEntry> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if kind == "ExternalName" || spec.cluster_ip.as_deref() == Some("None") {
        return Vec::new();
    }
    let with_node_ports = kind == "NodePort" || kind == "LoadBalancer";
    let mut cluster_ips: Vec<IpAddr> = match spec.cluster_ips.as_ref() {
        Some(ips) if !ips.is_empty() => ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
        _ => spec
            .cluster_ip
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .collect(),
    };
    cluster_ips.dedup();
    let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s as u64))
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });
    let mut out = Vec::new();
    for port in spec.ports.iter().flatten() {
        if !is_tcp(port.protocol.as_deref()) {
            continue;
        }
        let Some(number) = to_port(port.port) else {
            continue;
        };
        let port_name = port.name.as_deref().unwrap_or("");
        let mut entry = ServicePortEntry::new(
            ServicePortKey::new(ns, name, port_name),
            number,
            slice_endpoints(slices, port_name),
        );
        entry.node_port = if with_node_ports {
            port.node_port.and_then(to_port)
        } else {
            None
        };
        entry.cluster_ips = cluster_ips.clone();
        entry.affinity = affinity;
        out.push(entry);
    }
    out
}

/// The endpoints the slices give for the port named `port_name`.
fn slice_endpoints(slices: &[&EndpointSlice], port_name: &str) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for slice in slices {
        let Some(number) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == port_name && is_tcp(p.protocol.as_deref()))
            .and_then(|p| p.port)
            .and_then(to_port)
        else {
            continue;
        };
        for e in &slice.endpoints {
            let Some(ip) = e.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
                continue;
            };
            let c = e.conditions.clone().unwrap_or_default();
            out.push(Endpoint {
                addr: SocketAddr::new(ip, number),
                ready: c.ready.unwrap_or(true),
                serving: c.serving.unwrap_or(true),
                terminating: c.terminating.unwrap_or(false),
            });
        }
    }
    out
}

fn is_tcp(protocol: Option<&str>) -> bool {
    protocol.unwrap_or("TCP") == "TCP"
}

fn to_port(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p != 0)
}

/// Which listener serves which Service port: every node port on every node-port address, and
/// (with `cluster_ip`) every cluster IP on the Service port. An address two entries ask for
/// goes to the first in key order; the others are returned as conflicts.
pub fn desired_listeners(
    table: &RoutingTable,
    nodeport_addresses: &[IpAddr],
    cluster_ip: bool,
) -> (
    BTreeMap<SocketAddr, ServicePortKey>,
    Vec<(SocketAddr, ServicePortKey)>,
) {
    let mut out: BTreeMap<SocketAddr, ServicePortKey> = BTreeMap::new();
    let mut conflicts = Vec::new();
    let mut want = |addr: SocketAddr, key: &ServicePortKey| match out.get(&addr) {
        Some(k) if k != key => conflicts.push((addr, key.clone())),
        Some(_) => {}
        None => {
            out.insert(addr, key.clone());
        }
    };
    for entry in table.entries() {
        if let Some(np) = entry.node_port {
            for ip in nodeport_addresses {
                want(SocketAddr::new(*ip, np), &entry.key);
            }
        }
        if cluster_ip {
            for ip in &entry.cluster_ips {
                want(SocketAddr::new(*ip, entry.port), &entry.key);
            }
        }
    }
    (out, conflicts)
}

/// The cluster IPs of the table's Services (what the dummy interface carries).
pub fn desired_cluster_ips(table: &RoutingTable) -> BTreeSet<IpAddr> {
    table
        .entries()
        .flat_map(|e| e.cluster_ips.iter().copied())
        .collect()
}

/// How a Service port's backends changed between two tables (for logs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendChange {
    /// It has no backend (new, or lost its last one).
    NoBackends(ServicePortKey),
    /// It has backends again after having none.
    Restored(ServicePortKey, usize),
    /// It now uses terminating endpoints because none is ready.
    TerminatingFallback(ServicePortKey, usize),
}

/// The changes worth a log line from `old` to `new`.
pub fn backend_changes(old: &RoutingTable, new: &RoutingTable) -> Vec<BackendChange> {
    let mut out = Vec::new();
    for e in new.entries() {
        let before = old.get(&e.key);
        let had = before.map(|b| !b.backends.is_empty());
        let was_fallback = before.is_some_and(|b| b.terminating_fallback);
        if e.backends.is_empty() {
            if had != Some(false) {
                out.push(BackendChange::NoBackends(e.key.clone()));
            }
        } else if e.terminating_fallback {
            if !was_fallback {
                out.push(BackendChange::TerminatingFallback(
                    e.key.clone(),
                    e.backends.len(),
                ));
            }
        } else if had == Some(false) || was_fallback {
            out.push(BackendChange::Restored(e.key.clone(), e.backends.len()));
        }
    }
    out
}

/// The round-robin positions and client-IP affinities, per Service port.
#[derive(Debug, Default)]
pub struct Balancer {
    ports: HashMap<ServicePortKey, PortState>,
}

#[derive(Debug, Default)]
struct PortState {
    next: usize,
    /// Client IP → (backend, last connection).
    sticky: HashMap<IpAddr, (SocketAddr, Instant)>,
}

impl Balancer {
    /// The backends a new connection from `client` tries, in order, at most `max` and each
    /// once: the client's affinity backend if it has a live one, then round robin from the
    /// port's next position (which advances by one per connection).
    pub fn pick(
        &mut self,
        entry: &ServicePortEntry,
        client: IpAddr,
        now: Instant,
        max: usize,
    ) -> Vec<SocketAddr> {
        let backends = &entry.backends;
        let n = backends.len();
        if n == 0 || max == 0 {
            return Vec::new();
        }
        let state = self.ports.entry(entry.key.clone()).or_default();
        let mut out = Vec::with_capacity(max.min(n));
        if let Some(timeout) = entry.affinity
            && let Some((b, last)) = state.sticky.get(&client)
            && now.saturating_duration_since(*last) < timeout
            && backends.contains(b)
        {
            out.push(*b);
        }
        let start = if out.is_empty() {
            let s = state.next % n;
            state.next = s + 1;
            s
        } else {
            // Retries after a failed sticky backend go on from where round robin is.
            state.next % n
        };
        for i in 0..n {
            if out.len() >= max {
                break;
            }
            let b = backends[(start + i) % n];
            if !out.contains(&b) {
                out.push(b);
            }
        }
        out
    }

    /// A connection from `client` reached `backend`: with affinity, the client sticks to it.
    pub fn connected(
        &mut self,
        entry: &ServicePortEntry,
        client: IpAddr,
        backend: SocketAddr,
        now: Instant,
    ) {
        if entry.affinity.is_some() {
            self.ports
                .entry(entry.key.clone())
                .or_default()
                .sticky
                .insert(client, (backend, now));
        }
    }

    /// Forgets the ports no longer in `table`, affinities to backends they no longer have,
    /// and expired affinities.
    pub fn retain(&mut self, table: &RoutingTable, now: Instant) {
        self.ports.retain(|key, state| {
            let Some(entry) = table.get(key) else {
                return false;
            };
            match entry.affinity {
                Some(timeout) => state.sticky.retain(|_, (b, last)| {
                    now.saturating_duration_since(*last) < timeout && entry.backends.contains(b)
                }),
                None => state.sticky.clear(),
            }
            true
        });
    }

    /// The affinity entries kept (for tests and metrics).
    pub fn affinity_count(&self) -> usize {
        self.ports.values().map(|s| s.sticky.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    fn web() -> Service {
        svc(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "type": "NodePort",
                "clusterIP": "10.96.0.10",
                "clusterIPs": ["10.96.0.10"],
                "ports": [
                    {"name": "http", "port": 80, "targetPort": "web", "nodePort": 30080},
                    {"name": "metrics", "port": 9090, "targetPort": 9100},
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                ],
            },
        }))
    }

    fn web_slice(name: &str, endpoints: serde_json::Value) -> EndpointSlice {
        slice(json!({
            "metadata": {"name": name, "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                      {"name": "metrics", "port": 9100}],
            "endpoints": endpoints,
        }))
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn key(port: &str) -> ServicePortKey {
        ServicePortKey::new("default", "web", port)
    }

    #[test]
    fn named_ports_resolve_through_the_slice() {
        let s = web_slice(
            "web-abc",
            json!([
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"]},
            ]),
        );
        let t = RoutingTable::build([&web()], [&s]);
        assert_eq!(t.len(), 2, "the UDP port is not proxied");
        let http = t.get(&key("http")).unwrap();
        assert_eq!(http.port, 80);
        assert_eq!(http.node_port, Some(30080));
        assert_eq!(
            http.cluster_ips,
            vec!["10.96.0.10".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            http.backends,
            vec![sa("10.0.0.1:8080"), sa("10.0.0.2:8080")]
        );
        let metrics = t.get(&key("metrics")).unwrap();
        assert_eq!(metrics.node_port, None);
        assert_eq!(
            metrics.backends,
            vec![sa("10.0.0.1:9100"), sa("10.0.0.2:9100")]
        );
    }

    #[test]
    fn only_slices_of_the_service_and_namespace_count() {
        let mut other_ns = web_slice("web-x", json!([{"addresses": ["10.0.0.9"]}]));
        other_ns.metadata.namespace = Some("other".into());
        let mut unlabelled = web_slice("web-y", json!([{"addresses": ["10.0.0.8"]}]));
        unlabelled.metadata.labels = None;
        let mut fqdn = web_slice("web-z", json!([{"addresses": ["a.example"]}]));
        fqdn.address_type = "FQDN".into();
        let t = RoutingTable::build([&web()], [&other_ns, &unlabelled, &fqdn]);
        assert!(t.get(&key("http")).unwrap().backends.is_empty());
    }

    #[test]
    fn endpoints_merge_across_slices_and_deduplicate() {
        let a = web_slice("web-a", json!([{"addresses": ["10.0.0.2"]}]));
        let b = web_slice(
            "web-b",
            json!([
                {"addresses": ["10.0.0.1"]},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
            ]),
        );
        let t = RoutingTable::build([&web()], [&a, &b]);
        assert_eq!(
            t.get(&key("http")).unwrap().backends,
            vec![sa("10.0.0.1:8080"), sa("10.0.0.2:8080")]
        );
    }

    #[test]
    fn unnamed_port_matches_unnamed_slice_port() {
        let s = svc(json!({
            "metadata": {"name": "one", "namespace": "ns"},
            "spec": {"clusterIP": "10.96.0.2", "ports": [{"port": 80}]},
        }));
        let sl = slice(json!({
            "metadata": {"name": "one-1", "namespace": "ns",
                         "labels": {"kubernetes.io/service-name": "one"}},
            "addressType": "IPv4",
            "ports": [{"port": 8000}],
            "endpoints": [{"addresses": ["10.1.0.1"]}],
        }));
        let t = RoutingTable::build([&s], [&sl]);
        let e = t.get(&ServicePortKey::new("ns", "one", "")).unwrap();
        assert_eq!(e.backends, vec![sa("10.1.0.1:8000")]);
        assert_eq!(e.node_port, None, "ClusterIP has no node port");
        assert_eq!(e.key.to_string(), "ns/one");
    }

    #[test]
    fn headless_and_external_name_are_skipped() {
        let headless = svc(json!({
            "metadata": {"name": "h", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]},
        }));
        let ext = svc(json!({
            "metadata": {"name": "e", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "x.example", "ports": [{"port": 80}]},
        }));
        assert!(RoutingTable::build([&headless, &ext], []).is_empty());
    }

    #[test]
    fn ready_endpoints_only() {
        let s = web_slice(
            "web-a",
            json!([
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false, "serving": false}},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            ]),
        );
        let t = RoutingTable::build([&web()], [&s]);
        let e = t.get(&key("http")).unwrap();
        assert_eq!(e.endpoints.len(), 3);
        assert_eq!(e.backends, vec![sa("10.0.0.1:8080")]);
        assert!(!e.terminating_fallback);
    }

    #[test]
    fn falls_back_to_serving_terminating_endpoints() {
        let s = web_slice(
            "web-a",
            json!([
                {"addresses": ["10.0.0.1"], "conditions": {"ready": false, "serving": false, "terminating": true}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false, "serving": true}},
            ]),
        );
        let t = RoutingTable::build([&web()], [&s]);
        let e = t.get(&key("http")).unwrap();
        assert_eq!(e.backends, vec![sa("10.0.0.2:8080")]);
        assert!(e.terminating_fallback);

        let none = web_slice(
            "web-a",
            json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": false}}]),
        );
        let t = RoutingTable::build([&web()], [&none]);
        let e = t.get(&key("http")).unwrap();
        assert!(e.backends.is_empty());
        assert!(!e.terminating_fallback);
    }

    fn entry(backends: &[&str]) -> ServicePortEntry {
        ServicePortEntry::new(
            key("http"),
            80,
            backends.iter().map(|b| Endpoint::ready(sa(b))).collect(),
        )
    }

    #[test]
    fn round_robin_cycles_and_lists_retries() {
        let e = entry(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
        let mut b = Balancer::default();
        let now = Instant::now();
        let client: IpAddr = "192.168.1.1".parse().unwrap();
        let firsts: Vec<SocketAddr> = (0..6)
            .map(|_| b.pick(&e, client, now, MAX_TRIES)[0])
            .collect();
        assert_eq!(
            firsts,
            vec![
                sa("10.0.0.1:80"),
                sa("10.0.0.2:80"),
                sa("10.0.0.3:80"),
                sa("10.0.0.1:80"),
                sa("10.0.0.2:80"),
                sa("10.0.0.3:80"),
            ]
        );
        assert_eq!(
            b.pick(&e, client, now, MAX_TRIES),
            vec![sa("10.0.0.1:80"), sa("10.0.0.2:80"), sa("10.0.0.3:80")]
        );
        assert_eq!(b.pick(&e, client, now, 2).len(), 2);
        let one = entry(&["10.0.0.1:80"]);
        assert_eq!(
            b.pick(&one, client, now, MAX_TRIES),
            vec![sa("10.0.0.1:80")]
        );
        assert!(b.pick(&entry(&[]), client, now, MAX_TRIES).is_empty());
    }

    #[test]
    fn removed_backend_gets_no_new_connection() {
        let mut e = entry(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
        let mut b = Balancer::default();
        let now = Instant::now();
        let client: IpAddr = "192.168.1.1".parse().unwrap();
        b.pick(&e, client, now, MAX_TRIES);
        e.set_endpoints(vec![
            Endpoint::ready(sa("10.0.0.1:80")),
            Endpoint::ready(sa("10.0.0.3:80")),
        ]);
        for _ in 0..10 {
            let p = b.pick(&e, client, now, MAX_TRIES);
            assert!(!p.contains(&sa("10.0.0.2:80")));
            assert_eq!(p.len(), 2);
        }
    }

    #[test]
    fn client_ip_affinity_sticks_until_timeout_or_removal() {
        let mut e = entry(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
        e.affinity = Some(Duration::from_secs(100));
        let mut b = Balancer::default();
        let t0 = Instant::now();
        let c1: IpAddr = "192.168.1.1".parse().unwrap();
        let c2: IpAddr = "192.168.1.2".parse().unwrap();
        let first = b.pick(&e, c1, t0, MAX_TRIES)[0];
        b.connected(&e, c1, first, t0);
        // Another client moves round robin on; c1 keeps its backend.
        let other = b.pick(&e, c2, t0, MAX_TRIES)[0];
        assert_ne!(other, first);
        for i in 1..5 {
            let now = t0 + Duration::from_secs(i * 10);
            let p = b.pick(&e, c1, now, MAX_TRIES);
            assert_eq!(p[0], first);
            assert_eq!(p.len(), 3, "the others follow as retries");
            b.connected(&e, c1, first, now);
        }
        // Expired: back to round robin.
        let late = t0 + Duration::from_secs(40 + 100);
        let p = b.pick(&e, c1, late, MAX_TRIES);
        assert_ne!(p[0], first);
        // A sticky backend that leaves is not used.
        b.connected(&e, c1, sa("10.0.0.3:80"), late);
        e.set_endpoints(vec![
            Endpoint::ready(sa("10.0.0.1:80")),
            Endpoint::ready(sa("10.0.0.2:80")),
        ]);
        assert!(!b.pick(&e, c1, late, MAX_TRIES).contains(&sa("10.0.0.3:80")));
        let mut table = RoutingTable::default();
        table.insert(e.clone());
        b.retain(&table, late);
        assert_eq!(b.affinity_count(), 0);
    }

    #[test]
    fn affinity_timeout_defaults_to_three_hours() {
        let mut s = web();
        s.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
        let t = RoutingTable::build([&s], []);
        assert_eq!(
            t.get(&key("http")).unwrap().affinity,
            Some(DEFAULT_AFFINITY_TIMEOUT)
        );
        let mut s = web();
        let spec = s.spec.as_mut().unwrap();
        spec.session_affinity = Some("ClientIP".into());
        spec.session_affinity_config =
            serde_json::from_value(json!({"clientIP": {"timeoutSeconds": 60}})).unwrap();
        let t = RoutingTable::build([&s], []);
        assert_eq!(
            t.get(&key("http")).unwrap().affinity,
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            RoutingTable::build([&web()], [])
                .get(&key("http"))
                .unwrap()
                .affinity,
            None
        );
    }

    #[test]
    fn retain_forgets_removed_ports() {
        let e = entry(&["10.0.0.1:80"]);
        let mut b = Balancer::default();
        let now = Instant::now();
        b.pick(&e, "1.2.3.4".parse().unwrap(), now, MAX_TRIES);
        b.retain(&RoutingTable::default(), now);
        assert!(b.ports.is_empty());
    }

    #[test]
    fn listeners_follow_node_ports_and_cluster_ips() {
        let s = web_slice("web-a", json!([{"addresses": ["10.0.0.1"]}]));
        let t = RoutingTable::build([&web()], [&s]);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let node: IpAddr = "192.168.0.5".parse().unwrap();
        let (l, conflicts) = desired_listeners(&t, &[node, lo], false);
        assert!(conflicts.is_empty());
        assert_eq!(
            l.keys().copied().collect::<Vec<_>>(),
            vec![sa("127.0.0.1:30080"), sa("192.168.0.5:30080")]
        );
        assert!(l.values().all(|k| *k == key("http")));
        let (l, _) = desired_listeners(&t, &[lo], true);
        assert_eq!(
            l.keys().copied().collect::<Vec<_>>(),
            vec![
                sa("10.96.0.10:80"),
                sa("10.96.0.10:9090"),
                sa("127.0.0.1:30080")
            ]
        );
        assert_eq!(
            desired_cluster_ips(&t).into_iter().collect::<Vec<_>>(),
            vec!["10.96.0.10".parse::<IpAddr>().unwrap()]
        );
        // Two Services on the same node port: the first keeps it.
        let mut dup = web();
        dup.metadata.name = Some("web2".into());
        let t = RoutingTable::build([&web(), &dup], []);
        let (l, conflicts) = desired_listeners(&t, &[lo], false);
        assert_eq!(l[&sa("127.0.0.1:30080")], key("http"));
        assert_eq!(conflicts.len(), 1);
    }

    #[test]
    fn backend_changes_are_reported_once() {
        let mut old = RoutingTable::default();
        let mut new = RoutingTable::default();
        new.insert(entry(&[]));
        assert_eq!(
            backend_changes(&old, &new),
            vec![BackendChange::NoBackends(key("http"))]
        );
        assert!(backend_changes(&new, &new).is_empty());
        old = new.clone();
        new.insert(entry(&["10.0.0.1:80"]));
        assert_eq!(
            backend_changes(&old, &new),
            vec![BackendChange::Restored(key("http"), 1)]
        );
        old = new.clone();
        let mut e = entry(&[]);
        e.set_endpoints(vec![Endpoint {
            addr: sa("10.0.0.1:80"),
            ready: false,
            serving: true,
            terminating: true,
        }]);
        new.insert(e);
        assert_eq!(
            backend_changes(&old, &new),
            vec![BackendChange::TerminatingFallback(key("http"), 1)]
        );
    }
}
