//! Services inside the API server, as kube-apiserver's Service registry runs them: cluster IPs
//! from `--service-cluster-ip-range` and node ports from `--service-node-port-range`, allocated
//! before the store write and given back if it fails (a [`Reservation`]), released when a
//! Service is deleted or no longer needs them; and the `kubernetes` Service in `default`, with
//! its Endpoints and EndpointSlice pointing at this server.
//!
//! Allocation state lives in memory behind one lock, rebuilt from the stored Services at start.
//! Only this process writes Services, so the pools and the store agree: a write that failed or
//! was a dry run gives its allocations back, a committed update releases what the old object
//! held and the new one does not.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};
use skiff_core::service::alloc::{AllocError, IpRange, Pool, PortRange};
use skiff_core::service::{
    self as svc_rules, CLUSTER_IP_NONE, LABEL_SERVICE_NAME, LABEL_SKIP_MIRROR,
};
use skiff_core::validation::{FieldError, cluster_ip_allocation_error, node_port_allocation_error};

use crate::errors::{ApiError, ApiResult};
use crate::object;
use crate::query::Params;
use crate::resources::{self, ResourceInfo};
use crate::rest::{self, Api};

/// The Service network of a cluster.
#[derive(Debug, Clone)]
pub struct ServiceNetwork {
    /// `--service-cluster-ip-range`; its first address is the `kubernetes` Service's.
    pub cluster_ip_range: IpRange,
    /// `--service-node-port-range`.
    pub node_port_range: PortRange,
    /// Where the `kubernetes` Service's endpoints point; by default the address the server is
    /// bound to, or 127.0.0.1 when bound to every address.
    pub advertise_address: Option<IpAddr>,
}

/// Kubernetes' default `--service-cluster-ip-range`.
pub const DEFAULT_CLUSTER_IP_RANGE: &str = "10.96.0.0/12";
/// Kubernetes' default `--service-node-port-range`.
pub const DEFAULT_NODE_PORT_RANGE: &str = "30000-32767";

impl Default for ServiceNetwork {
    fn default() -> ServiceNetwork {
        ServiceNetwork::parse(DEFAULT_CLUSTER_IP_RANGE, DEFAULT_NODE_PORT_RANGE)
            .expect("default service network")
    }
}

impl ServiceNetwork {
    /// From the flag values (`10.96.0.0/12`, `30000-32767`).
    pub fn parse(cluster_ip_range: &str, node_port_range: &str) -> Result<ServiceNetwork, String> {
        let cluster_ip_range: IpRange = cluster_ip_range.parse()?;
        if cluster_ip_range.slots() < 8 {
            return Err(format!(
                "the service cluster IP range {cluster_ip_range} is too small"
            ));
        }
        Ok(ServiceNetwork {
            cluster_ip_range,
            node_port_range: node_port_range.parse()?,
            advertise_address: None,
        })
    }

    /// The `kubernetes` Service's cluster IP.
    pub fn kubernetes_service_ip(&self) -> IpAddr {
        self.cluster_ip_range.first()
    }
}

struct Pools {
    ips: Pool,
    ports: Pool,
}

/// The cluster IP and node port allocators.
pub struct Allocators {
    pub network: ServiceNetwork,
    pools: Mutex<Pools>,
}

fn random() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

impl Allocators {
    pub fn new(network: ServiceNetwork) -> Allocators {
        let pools = Pools {
            ips: network.cluster_ip_range.pool(),
            ports: network.node_port_range.pool(),
        };
        Allocators {
            network,
            pools: Mutex::new(pools),
        }
    }

    fn pools(&self) -> std::sync::MutexGuard<'_, Pools> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_ip(&self, ip: &str) -> Result<(), AllocError> {
        let slot = ip
            .parse::<IpAddr>()
            .ok()
            .and_then(|ip| self.network.cluster_ip_range.slot_of(ip))
            .ok_or(AllocError::NotInRange)?;
        self.pools().ips.allocate(slot)
    }

    fn next_ip(&self) -> Result<String, AllocError> {
        let slot = self.pools().ips.allocate_next(random())?;
        Ok(self.network.cluster_ip_range.ip_at(slot).to_string())
    }

    fn release_ip(&self, ip: &str) {
        if let Some(slot) = ip
            .parse::<IpAddr>()
            .ok()
            .and_then(|ip| self.network.cluster_ip_range.slot_of(ip))
        {
            self.pools().ips.release(slot);
        }
    }

    fn take_port(&self, port: i32) -> Result<(), AllocError> {
        let slot = self
            .network
            .node_port_range
            .slot_of(i64::from(port))
            .ok_or(AllocError::NotInRange)?;
        self.pools().ports.allocate(slot)
    }

    fn next_port(&self) -> Result<i32, AllocError> {
        let slot = self.pools().ports.allocate_next(random())?;
        Ok(i32::from(self.network.node_port_range.port_at(slot)))
    }

    fn release_port(&self, port: i32) {
        if let Some(slot) = self.network.node_port_range.slot_of(i64::from(port)) {
            self.pools().ports.release(slot);
        }
    }

    /// Whether a cluster IP is taken (for tests and diagnostics).
    pub fn ip_in_use(&self, ip: &str) -> bool {
        ip.parse::<IpAddr>()
            .ok()
            .and_then(|ip| self.network.cluster_ip_range.slot_of(ip))
            .is_some_and(|slot| self.pools().ips.is_used(slot))
    }

    /// Whether a node port is taken.
    pub fn port_in_use(&self, port: i32) -> bool {
        self.network
            .node_port_range
            .slot_of(i64::from(port))
            .is_some_and(|slot| self.pools().ports.is_used(slot))
    }

    /// Records what a stored Service holds (at start).
    fn restore(&self, svc: &Service) {
        let name = svc.metadata.name.as_deref().unwrap_or("");
        for ip in held_ips(svc) {
            if let Err(e) = self.take_ip(&ip) {
                tracing::warn!(service = name, ip, error = ?e, "stored cluster IP not restored");
            }
        }
        for port in held_ports(svc) {
            if let Err(e) = self.take_port(port) {
                tracing::warn!(service = name, port, error = ?e, "stored node port not restored");
            }
        }
    }

    /// Gives back everything a Service held.
    fn release_all(&self, svc: &Service) {
        for ip in held_ips(svc) {
            self.release_ip(&ip);
        }
        for port in held_ports(svc) {
            self.release_port(port);
        }
    }

    fn ip_range_text(&self) -> String {
        self.network.cluster_ip_range.to_string()
    }

    fn port_range_text(&self) -> String {
        self.network.node_port_range.to_string()
    }
}

/// The cluster IPs a Service holds (none for ExternalName and headless Services).
fn held_ips(svc: &Service) -> Vec<String> {
    if !svc_rules::needs_cluster_ip(svc) {
        return Vec::new();
    }
    svc_rules::cluster_ips(svc)
        .iter()
        .filter(|ip| !ip.is_empty() && *ip != CLUSTER_IP_NONE)
        .cloned()
        .collect()
}

/// The node ports (health-check one included) a Service holds.
fn held_ports(svc: &Service) -> Vec<i32> {
    let mut ports = svc_rules::node_ports(svc);
    if let Some(hc) = svc
        .spec
        .as_ref()
        .and_then(|s| s.health_check_node_port)
        .filter(|p| *p != 0)
    {
        ports.push(hc);
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// What one Service write took from the pools. Dropped without [`Reservation::commit`] (the
/// write failed or was refused), it gives back what it took; committed, it releases what the old
/// object held and the new one does not. A dry run gives everything back either way.
pub struct Reservation<'a> {
    alloc: &'a Allocators,
    dry_run: bool,
    taken_ips: Vec<String>,
    taken_ports: Vec<i32>,
    freed_ips: Vec<String>,
    freed_ports: Vec<i32>,
    done: bool,
}

impl<'a> Reservation<'a> {
    fn new(alloc: &'a Allocators, dry_run: bool) -> Reservation<'a> {
        Reservation {
            alloc,
            dry_run,
            taken_ips: Vec::new(),
            taken_ports: Vec::new(),
            freed_ips: Vec::new(),
            freed_ports: Vec::new(),
            done: false,
        }
    }

    /// The write was stored.
    pub fn commit(mut self) {
        self.done = true;
        if self.dry_run {
            self.give_back();
            return;
        }
        for ip in &self.freed_ips {
            self.alloc.release_ip(ip);
        }
        for port in &self.freed_ports {
            self.alloc.release_port(*port);
        }
    }

    fn give_back(&self) {
        for ip in &self.taken_ips {
            self.alloc.release_ip(ip);
        }
        for port in &self.taken_ports {
            self.alloc.release_port(*port);
        }
    }

    fn take_ip(&mut self, ip: &str) -> Result<(), AllocError> {
        self.alloc.take_ip(ip)?;
        self.taken_ips.push(ip.to_string());
        Ok(())
    }

    fn next_ip(&mut self) -> ApiResult<String> {
        // Only a full range stops a free pick.
        let ip = self
            .alloc
            .next_ip()
            .map_err(|_| ApiError::internal("failed to allocate a serviceIP: range is full"))?;
        self.taken_ips.push(ip.clone());
        Ok(ip)
    }

    fn take_port(&mut self, port: i32) -> Result<(), AllocError> {
        self.alloc.take_port(port)?;
        self.taken_ports.push(port);
        Ok(())
    }

    fn next_port(&mut self) -> ApiResult<i32> {
        let port = self
            .alloc
            .next_port()
            .map_err(|_| ApiError::internal("failed to allocate a nodePort: range is full"))?;
        self.taken_ports.push(port);
        Ok(port)
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.give_back();
        }
    }
}

fn from_value<T: serde::de::DeserializeOwned>(v: &Value) -> ApiResult<T> {
    serde_json::from_value(v.clone()).map_err(|e| ApiError::internal(e.to_string()))
}

fn to_value<T: serde::Serialize>(t: &T) -> ApiResult<Value> {
    serde_json::to_value(t).map_err(|e| ApiError::internal(e.to_string()))
}

fn invalid(svc: &Service, errs: &[FieldError]) -> ApiError {
    ApiError::invalid(
        "Service",
        "",
        svc.metadata.name.as_deref().unwrap_or(""),
        errs,
    )
}

/// Allocates a Service's cluster IPs: the requested ones, or free ones.
fn alloc_cluster_ips(alloc: &Allocators, svc: &mut Service, r: &mut Reservation) -> ApiResult<()> {
    if !svc_rules::needs_cluster_ip(svc) || svc_rules::is_headless(svc) {
        return Ok(());
    }
    let spec = svc.spec.get_or_insert_with(Default::default);
    let families = spec.ip_families.clone().unwrap_or_default();
    let mut ips = spec.cluster_ips.clone().unwrap_or_default();
    for i in 0..families.len().max(1) {
        if i >= ips.len() {
            ips.push(String::new());
        }
        if ips[i].is_empty() {
            ips[i] = r.next_ip()?;
        } else if let Err(e) = r.take_ip(&ips[i]) {
            let requested = spec.cluster_ips.clone().unwrap_or_default();
            let err = cluster_ip_allocation_error(&requested, &ips[i], e, &alloc.ip_range_text());
            return Err(invalid(svc, &[err]));
        }
    }
    spec.cluster_ip = ips.first().cloned();
    spec.cluster_ips = Some(ips);
    Ok(())
}

/// Node ports of a new Service (upstream's `initNodePorts`): ports of the same number share one
/// node port, a requested one must be free and in range, the others get free ones.
fn alloc_node_ports_create(
    alloc: &Allocators,
    svc: &mut Service,
    r: &mut Reservation,
) -> ApiResult<()> {
    if !svc_rules::needs_node_port(svc) {
        return Ok(());
    }
    let allocate_unrequested = svc_rules::should_allocate_node_ports(svc);
    let mut ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut by_port: Vec<(i32, i32)> = Vec::new();
    for i in 0..ports.len() {
        let requested = ports[i].node_port.unwrap_or(0);
        if requested == 0 && !allocate_unrequested {
            continue;
        }
        let number = ports[i].port;
        let shared = by_port.iter().find(|(p, _)| *p == number).map(|(_, n)| *n);
        let fail = |idx: usize, np: i32, e: AllocError, svc: &Service| {
            invalid(
                svc,
                &[node_port_allocation_error(
                    idx,
                    np,
                    e,
                    &alloc.port_range_text(),
                )],
            )
        };
        match shared {
            None => {
                // A later port of the same number may carry the request.
                let wanted = ports[i..]
                    .iter()
                    .find(|p| p.port == number && p.node_port.unwrap_or(0) != 0)
                    .and_then(|p| p.node_port);
                let np = match wanted {
                    Some(np) => {
                        r.take_port(np).map_err(|e| fail(i, np, e, svc))?;
                        np
                    }
                    None => r.next_port()?,
                };
                ports[i].node_port = Some(np);
                by_port.push((number, np));
            }
            Some(np) if requested == 0 => ports[i].node_port = Some(np),
            Some(np) if requested != np => {
                r.take_port(requested)
                    .map_err(|e| fail(i, requested, e, svc))?;
            }
            Some(_) => {}
        }
    }
    svc.spec.get_or_insert_with(Default::default).ports = Some(ports);
    Ok(())
}

/// Node ports of an updated Service (upstream's `updateNodePorts`): ports it newly asks for are
/// taken, unset ones get free ports, and old ones it no longer uses are released on commit.
fn alloc_node_ports_update(
    alloc: &Allocators,
    new: &mut Service,
    old: &Service,
    r: &mut Reservation,
) -> ApiResult<()> {
    let old_numbers = svc_rules::node_ports(old);
    let allocate_unrequested = svc_rules::should_allocate_node_ports(new);
    let mut ports = new
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut seen: Vec<(String, i32)> = Vec::new();
    let mut taken_here: Vec<i32> = Vec::new();
    for (i, port) in ports.iter_mut().enumerate() {
        let requested = port.node_port.unwrap_or(0);
        if requested == 0 && !allocate_unrequested {
            continue;
        }
        let np = if requested != 0 {
            if !old_numbers.contains(&requested) && !taken_here.contains(&requested) {
                r.take_port(requested).map_err(|e| {
                    invalid(
                        old,
                        &[node_port_allocation_error(
                            i,
                            requested,
                            e,
                            &alloc.port_range_text(),
                        )],
                    )
                })?;
                taken_here.push(requested);
            }
            requested
        } else {
            let np = r.next_port()?;
            port.node_port = Some(np);
            np
        };
        let protocol = port.protocol.clone().unwrap_or_default();
        if seen.contains(&(protocol.clone(), np)) {
            return Err(ApiError::internal(format!(
                "duplicate nodePort: {{{protocol} {np}}}"
            )));
        }
        seen.push((protocol, np));
    }
    new.spec.get_or_insert_with(Default::default).ports = Some(ports);
    let new_numbers = svc_rules::node_ports(new);
    r.freed_ports
        .extend(old_numbers.into_iter().filter(|p| !new_numbers.contains(p)));
    Ok(())
}

/// The health-check node port of a LoadBalancer Service with `externalTrafficPolicy: Local`.
fn alloc_health_check_port(
    alloc: &Allocators,
    svc: &mut Service,
    r: &mut Reservation,
) -> ApiResult<()> {
    if !svc_rules::needs_health_check_node_port(svc) {
        return Ok(());
    }
    let spec = svc.spec.get_or_insert_with(Default::default);
    match spec.health_check_node_port.filter(|p| *p != 0) {
        // Upstream answers a 500 here, with the allocator's words.
        Some(p) => r.take_port(p).map_err(|e| {
            let why = node_port_allocation_error(0, p, e, &alloc.port_range_text()).detail;
            ApiError::internal(format!(
                "failed to allocate requested HealthCheck NodePort {p}: {why}"
            ))
        }),
        None => {
            spec.health_check_node_port = Some(r.next_port()?);
            Ok(())
        }
    }
}

/// Before a Service is created: its cluster IP fields are settled and checked, then its cluster
/// IPs and node ports allocated (upstream's `beginCreate`). Errors are 422s naming the field.
pub fn begin_create<'a>(
    alloc: &'a Allocators,
    info: &ResourceInfo,
    obj: &mut Value,
    dry_run: bool,
) -> ApiResult<Option<Reservation<'a>>> {
    if info.kind != "Service" {
        return Ok(None);
    }
    let mut svc: Service = from_value(obj)?;
    svc_rules::normalize_cluster_ips(&mut svc, None);
    let family = alloc.network.cluster_ip_range.family();
    let errs = svc_rules::init_ip_families(&mut svc, None, family);
    if !errs.is_empty() {
        return Err(invalid(&svc, &errs));
    }
    let mut r = Reservation::new(alloc, dry_run);
    alloc_cluster_ips(alloc, &mut svc, &mut r)?;
    alloc_node_ports_create(alloc, &mut svc, &mut r)?;
    alloc_health_check_port(alloc, &mut svc, &mut r)?;
    *obj = to_value(&svc)?;
    Ok(Some(r))
}

/// Before a Service update is validated and stored (upstream's `PrepareForUpdate` and
/// `beginUpdate`): fields a type change leaves without meaning are wiped, allocated values the
/// client left out are carried over, cluster IP fields settled, and cluster IPs and node ports
/// allocated or marked for release.
pub fn begin_update<'a>(
    alloc: &'a Allocators,
    info: &ResourceInfo,
    sub: Option<&str>,
    new_obj: &mut Value,
    old_obj: &Value,
    dry_run: bool,
) -> ApiResult<Option<Reservation<'a>>> {
    if info.kind != "Service" || sub.is_some() {
        return Ok(None);
    }
    let mut new: Service = from_value(new_obj)?;
    let old: Service = from_value(old_obj)?;
    svc_rules::drop_type_dependent_fields(&mut new, &old);
    svc_rules::patch_allocated_values(&mut new, &old);
    svc_rules::normalize_cluster_ips(&mut new, Some(&old));
    let family = alloc.network.cluster_ip_range.family();
    let errs = svc_rules::init_ip_families(&mut new, Some(&old), family);
    if !errs.is_empty() {
        return Err(invalid(&new, &errs));
    }
    let mut r = Reservation::new(alloc, dry_run);
    let (old_needs, new_needs) = (
        svc_rules::needs_cluster_ip(&old),
        svc_rules::needs_cluster_ip(&new),
    );
    if !old_needs && new_needs {
        alloc_cluster_ips(alloc, &mut new, &mut r)?;
    } else if old_needs && !new_needs {
        r.freed_ips.extend(held_ips(&old));
    }
    if svc_rules::needs_node_port(&old) && !svc_rules::needs_node_port(&new) {
        r.freed_ports.extend(svc_rules::node_ports(&old));
    }
    if svc_rules::needs_node_port(&new) {
        alloc_node_ports_update(alloc, &mut new, &old, &mut r)?;
    }
    let old_hc = old
        .spec
        .as_ref()
        .and_then(|s| s.health_check_node_port)
        .filter(|p| *p != 0);
    match (
        svc_rules::needs_health_check_node_port(&old),
        svc_rules::needs_health_check_node_port(&new),
    ) {
        (false, true) => alloc_health_check_port(alloc, &mut new, &mut r)?,
        (true, false) => r.freed_ports.extend(old_hc),
        _ => {}
    }
    *new_obj = to_value(&new)?;
    Ok(Some(r))
}

/// After an object left the store for good: a Service gives back its cluster IPs and node ports,
/// and its Endpoints object goes with it (as upstream's Service registry does; EndpointSlices
/// are the endpoints controller's to remove).
pub async fn after_delete(api: &Api, info: &'static ResourceInfo, obj: &Value) {
    if info.kind != "Service" {
        return;
    }
    if let Ok(svc) = serde_json::from_value::<Service>(obj.clone()) {
        api.services.release_all(&svc);
    }
    let Some(ep_info) = resources::lookup("", "v1", "endpoints") else {
        return;
    };
    let ns = object::namespace(obj).map(String::from);
    let name = object::name(obj).to_string();
    let res = Box::pin(rest::delete_object(
        api,
        ep_info,
        ns.as_deref(),
        &name,
        &rest::DeleteOptions::default(),
        false,
    ))
    .await;
    if let Err(e) = res
        && e.code != 404
    {
        tracing::warn!(service = name, error = %e.message, "could not delete the service's endpoints");
    }
}

/// Rebuilds the pools from the stored Services.
pub async fn restore(api: &Api) -> ApiResult<()> {
    let info = resources::lookup("", "v1", "services").expect("services");
    let page = rest::list_page(api, info, None, &Params::default()).await?;
    for obj in page.items {
        if let Ok(svc) = serde_json::from_value::<Service>(obj) {
            api.services.restore(&svc);
        }
    }
    Ok(())
}

/// The address the `kubernetes` Service's endpoints publish for a server bound to `bind`.
pub fn advertised_address(network: &ServiceNetwork, bind: SocketAddr) -> IpAddr {
    network.advertise_address.unwrap_or_else(|| {
        if bind.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            bind.ip()
        }
    })
}

/// Creates or updates the `kubernetes` Service in `default` (cluster IP: the range's first
/// address; port `https` 443 → this server's port) with its Endpoints and EndpointSlice
/// pointing at `address:port`, as kube-apiserver's endpoint reconciler keeps them.
pub async fn ensure_kubernetes_service(api: &Api, address: IpAddr, port: u16) -> ApiResult<()> {
    let service_ip = api.services.network.kubernetes_service_ip().to_string();
    let svc_info = resources::lookup("", "v1", "services").expect("services");
    let ports = json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]);
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": service_ip, "clusterIPs": [service_ip],
                 "sessionAffinity": "None", "ports": ports},
    });
    let fix = |current: &Value| -> ApiResult<Value> {
        let mut v = current.clone();
        v["spec"]["ports"] = ports.clone();
        v["spec"]["type"] = json!("ClusterIP");
        Ok(v)
    };
    ensure(
        api,
        svc_info,
        service,
        &|cur| {
            cur.pointer("/spec/type") == Some(&json!("ClusterIP"))
                && strip_names(cur.pointer("/spec/ports")) == strip_names(Some(&ports))
        },
        &fix,
    )
    .await?;

    let ep_info = resources::lookup("", "v1", "endpoints").expect("endpoints");
    let subsets = json!([{"addresses": [{"ip": address.to_string()}],
                          "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]);
    let labels = json!({LABEL_SKIP_MIRROR: "true"});
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
        "subsets": subsets,
    });
    let fix = |current: &Value| -> ApiResult<Value> {
        let mut v = current.clone();
        v["subsets"] = subsets.clone();
        object::meta_mut(&mut v).insert("labels".into(), labels.clone());
        Ok(v)
    };
    ensure(
        api,
        ep_info,
        endpoints,
        &|cur| {
            cur.get("subsets") == Some(&subsets) && cur.pointer("/metadata/labels") == Some(&labels)
        },
        &fix,
    )
    .await?;

    let slice_info =
        resources::lookup("discovery.k8s.io", "v1", "endpointslices").expect("endpointslices");
    let address_type = if address.is_ipv4() { "IPv4" } else { "IPv6" };
    let endpoints = json!([{"addresses": [address.to_string()], "conditions": {"ready": true}}]);
    let slice_ports = json!([{"name": "https", "port": port, "protocol": "TCP"}]);
    let slice_labels = json!({LABEL_SERVICE_NAME: "kubernetes"});
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": slice_labels},
        "addressType": address_type, "endpoints": endpoints, "ports": slice_ports,
    });
    let current_matches = |cur: &Value| {
        cur.get("endpoints") == Some(&endpoints)
            && cur.get("ports") == Some(&slice_ports)
            && cur.pointer("/metadata/labels") == Some(&slice_labels)
            && cur.get("addressType") == Some(&json!(address_type))
    };
    let fix = |current: &Value| -> ApiResult<Value> {
        let mut v = current.clone();
        v["endpoints"] = endpoints.clone();
        v["ports"] = slice_ports.clone();
        object::meta_mut(&mut v).insert("labels".into(), slice_labels.clone());
        Ok(v)
    };
    // The address type is immutable: a slice of the other family is replaced.
    let key = slice_info.key(Some("default"), "kubernetes");
    if let Some(kv) = api.store.get(&key).await?
        && let Some(cur) = object::decode_stored(&kv.value, kv.mod_revision)
        && cur.get("addressType") != Some(&json!(address_type))
    {
        rest::delete_object(
            api,
            slice_info,
            Some("default"),
            "kubernetes",
            &rest::DeleteOptions::default(),
            false,
        )
        .await?;
    }
    ensure(api, slice_info, slice, &current_matches, &fix).await
}

/// How often the `kubernetes` Service and its endpoints are checked, as kube-apiserver does.
const RECONCILE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Keeps the `kubernetes` Service, Endpoints and EndpointSlice as [`ensure_kubernetes_service`]
/// makes them (recreated if deleted, put back if changed), every 10 s.
pub async fn run_reconciler(api: std::sync::Arc<Api>, address: IpAddr, port: u16) {
    let mut tick = tokio::time::interval(RECONCILE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: start() has just reconciled.
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = ensure_kubernetes_service(&api, address, port).await {
            tracing::warn!(error = %e.message, "could not reconcile the kubernetes service");
        }
    }
}

/// Port lists compared without the fields defaulting adds.
fn strip_names(ports: Option<&Value>) -> Vec<(Value, Value, Value)> {
    ports
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["name"].clone(),
                        p["port"].clone(),
                        p["targetPort"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Creates `desired` when absent; otherwise updates it with `fix` unless `matches` says it is
/// already right. Both go through the REST functions a client request uses.
async fn ensure(
    api: &Api,
    info: &'static ResourceInfo,
    desired: Value,
    matches: &(dyn Fn(&Value) -> bool + Send + Sync),
    fix: &(dyn Fn(&Value) -> ApiResult<Value> + Send + Sync),
) -> ApiResult<()> {
    let name = object::name(&desired).to_string();
    let key = info.key(Some("default"), &name);
    match api.store.get(&key).await? {
        None => {
            match rest::create_object(api, info, Some("default"), desired, &Params::default()).await
            {
                Ok(_) => Ok(()),
                Err(e) if e.reason == "AlreadyExists" => Ok(()),
                Err(e) => Err(e),
            }
        }
        Some(kv) => {
            let current = object::decode_stored(&kv.value, kv.mod_revision).unwrap_or_default();
            if matches(&current) {
                return Ok(());
            }
            rest::update_object(
                api,
                info,
                Some("default"),
                &name,
                None,
                rest::Change::Patch(fix),
                &Params::default(),
            )
            .await
            .map(|_| ())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn network(cidr: &str, ports: &str) -> ServiceNetwork {
        ServiceNetwork::parse(cidr, ports).unwrap()
    }

    fn svc(v: Value) -> Service {
        let mut s: Service = serde_json::from_value(v).unwrap();
        svc_rules::default_service(&mut s);
        s
    }

    fn create(alloc: &Allocators, v: Value) -> ApiResult<Value> {
        let info = resources::lookup("", "v1", "services").unwrap();
        let mut obj = serde_json::to_value(svc(v)).unwrap();
        let r = begin_create(alloc, info, &mut obj, false)?.unwrap();
        r.commit();
        Ok(obj)
    }

    #[test]
    fn defaults() {
        let n = ServiceNetwork::default();
        assert_eq!(n.cluster_ip_range.to_string(), "10.96.0.0/12");
        assert_eq!(n.node_port_range.to_string(), "30000-32767");
        assert_eq!(n.kubernetes_service_ip().to_string(), "10.96.0.1");
        assert!(ServiceNetwork::parse("10.0.0.0/30", "1-2").is_err());
        assert_eq!(
            advertised_address(&n, "0.0.0.0:6443".parse().unwrap()).to_string(),
            "127.0.0.1"
        );
        assert_eq!(
            advertised_address(&n, "10.1.2.3:6443".parse().unwrap()).to_string(),
            "10.1.2.3"
        );
    }

    #[test]
    fn create_allocates_and_reports_conflicts() {
        let alloc = Allocators::new(network("10.96.0.0/24", "30000-30099"));
        let obj = create(
            &alloc,
            serde_json::json!({"metadata": {"name": "a"},
            "spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 80, "protocol": "UDP"},
                                                  {"port": 81, "nodePort": 30005}]}}),
        )
        .unwrap();
        let ip = obj["spec"]["clusterIP"].as_str().unwrap().to_string();
        assert_eq!(obj["spec"]["clusterIPs"], serde_json::json!([ip]));
        assert!(alloc.ip_in_use(&ip));
        // Dynamic addresses come from above the static band (16 addresses of a /24).
        let slot = alloc
            .network
            .cluster_ip_range
            .slot_of(ip.parse().unwrap())
            .unwrap();
        assert!(slot >= 16);
        let ports = obj["spec"]["ports"].as_array().unwrap();
        assert_eq!(ports[0]["nodePort"], ports[1]["nodePort"]);
        assert_eq!(ports[2]["nodePort"], 30005);
        assert!(alloc.port_in_use(30005));
        assert_eq!(obj["spec"]["ipFamilies"], serde_json::json!(["IPv4"]));

        let e = create(
            &alloc,
            serde_json::json!({"metadata": {"name": "b"},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30005}]}}),
        )
        .unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "Service \"b\" is invalid: spec.ports[0].nodePort: Invalid value: 30005: provided port is already allocated"
        );
        let e = create(
            &alloc,
            serde_json::json!({"metadata": {"name": "c"},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]}}),
        )
        .unwrap_err();
        assert!(
            e.message.ends_with("provided IP is already allocated"),
            "{}",
            e.message
        );
        let e = create(
            &alloc,
            serde_json::json!({"metadata": {"name": "d"},
            "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}}),
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "Service \"d\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.0.0.1\"}: failed to allocate IP 10.0.0.1: provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/24"
        );
        // A failed create gave back what it took before failing.
        let used_before = alloc.pools().ports.used();
        let e = create(
            &alloc,
            serde_json::json!({"metadata": {"name": "e"},
            "spec": {"type": "NodePort", "ports": [{"name": "x", "port": 90},
                                                  {"name": "y", "port": 91, "nodePort": 30005}]}}),
        )
        .unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(alloc.pools().ports.used(), used_before);
    }

    #[test]
    fn dry_runs_and_dropped_reservations_give_back() {
        let alloc = Allocators::new(network("10.96.0.0/24", "30000-30099"));
        let info = resources::lookup("", "v1", "services").unwrap();
        let mut obj = serde_json::to_value(svc(serde_json::json!({"metadata": {"name": "a"},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30001}]}})))
        .unwrap();
        let r = begin_create(&alloc, info, &mut obj, true).unwrap().unwrap();
        assert!(alloc.port_in_use(30001));
        r.commit();
        assert!(!alloc.port_in_use(30001));
        let mut obj2 = serde_json::to_value(svc(serde_json::json!({"metadata": {"name": "a"},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30001}]}})))
        .unwrap();
        let r = begin_create(&alloc, info, &mut obj2, false)
            .unwrap()
            .unwrap();
        drop(r);
        assert!(!alloc.port_in_use(30001));
        assert_eq!(alloc.pools().ips.used(), 0);
    }

    #[test]
    fn update_to_cluster_ip_releases_node_ports_on_commit() {
        let alloc = Allocators::new(network("10.96.0.0/24", "30000-30099"));
        let info = resources::lookup("", "v1", "services").unwrap();
        let old = create(
            &alloc,
            serde_json::json!({"metadata": {"name": "a"},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30001}]}}),
        )
        .unwrap();
        let mut new = old.clone();
        new["spec"]["type"] = serde_json::json!("ClusterIP");
        let r = begin_update(&alloc, info, None, &mut new, &old, false)
            .unwrap()
            .unwrap();
        assert_eq!(new["spec"]["ports"][0].get("nodePort"), None);
        assert!(new["spec"].get("externalTrafficPolicy").is_none());
        assert!(alloc.port_in_use(30001));
        r.commit();
        assert!(!alloc.port_in_use(30001));
        // Back to NodePort: a fresh port.
        let mut again = new.clone();
        again["spec"]["type"] = serde_json::json!("NodePort");
        again["spec"]["externalTrafficPolicy"] = serde_json::json!("Cluster");
        let r = begin_update(&alloc, info, None, &mut again, &new, false)
            .unwrap()
            .unwrap();
        let np = again["spec"]["ports"][0]["nodePort"].as_i64().unwrap() as i32;
        assert!(alloc.port_in_use(np));
        r.commit();
        // To ExternalName: the cluster IP goes.
        let ip = again["spec"]["clusterIP"].as_str().unwrap().to_string();
        let mut en = again.clone();
        en["spec"]["type"] = serde_json::json!("ExternalName");
        en["spec"]["externalName"] = serde_json::json!("x.example.com");
        let r = begin_update(&alloc, info, None, &mut en, &again, false)
            .unwrap()
            .unwrap();
        r.commit();
        assert!(!alloc.ip_in_use(&ip));
        assert!(!alloc.port_in_use(np));
    }

    #[tokio::test]
    async fn restore_rebuilds_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = skiff_store::RedbStore::open(&dir.path().join("s.redb")).unwrap();
        let api = Api {
            store: Arc::new(store),
            server_address: String::new(),
            metrics: crate::metrics::Metrics::new(),
            agent_token: String::new(),
            services: Allocators::new(ServiceNetwork::default()),
        };
        crate::namespaces::ensure_system_namespaces(&api)
            .await
            .unwrap();
        ensure_kubernetes_service(&api, "127.0.0.1".parse().unwrap(), 6443)
            .await
            .unwrap();
        let info = resources::lookup("", "v1", "services").unwrap();
        let body = serde_json::json!({"metadata": {"name": "np"},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}});
        rest::create_object(&api, info, Some("default"), body, &Params::default())
            .await
            .unwrap();
        assert!(api.services.ip_in_use("10.96.0.1"));
        let fresh = Api {
            store: api.store.clone(),
            server_address: String::new(),
            metrics: crate::metrics::Metrics::new(),
            agent_token: String::new(),
            services: Allocators::new(ServiceNetwork::default()),
        };
        restore(&fresh).await.unwrap();
        assert!(fresh.services.ip_in_use("10.96.0.1"));
        assert!(fresh.services.port_in_use(30080));
        // Running the reconciler again with another port updates in place.
        ensure_kubernetes_service(&fresh, "127.0.0.1".parse().unwrap(), 7443)
            .await
            .unwrap();
        let (svc, _) = rest::read(
            &fresh,
            info,
            &info.key(Some("default"), "kubernetes"),
            "kubernetes",
        )
        .await
        .unwrap();
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 7443);
        assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1");
        // Deleting the NodePort service frees its port.
        rest::delete_object(
            &fresh,
            info,
            Some("default"),
            "np",
            &rest::DeleteOptions::default(),
            false,
        )
        .await
        .unwrap();
        assert!(!fresh.services.port_in_use(30080));
    }
}
