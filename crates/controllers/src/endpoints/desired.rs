//! What a Service's endpoints should be, from the Service and the pods in its namespace: the
//! core/v1 Endpoints subsets and the EndpointSlice endpoints grouped by port set. Pure: no I/O,
//! no clock, and the same world always gives the same (sorted) result.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, ObjectReference, Pod, Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort as SlicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A port as a sortable, comparable tuple: (name, port, protocol, appProtocol).
pub type PortKey = (String, i32, String, Option<String>);

/// The endpoints a Service should have.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    /// The Endpoints object's subsets in canonical form (see [`endpoints_subsets`]).
    pub subsets: Vec<EndpointSubset>,
    /// The EndpointSlice endpoints, one group per distinct set of resolved ports, sorted.
    pub slices: Vec<SliceGroup>,
}

/// Endpoints sharing one set of resolved ports (one or more EndpointSlices).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SliceGroup {
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<Endpoint>,
}

/// The selector when this controller keeps the service's endpoints: not ExternalName, and a
/// selector with at least one label (an absent or empty selector means the user manages them).
pub fn managed_selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// Whether a (service) selector picks these labels: every pair present with the same value.
pub fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `clusterIP: None`: the service may have no ports and still list its pods.
pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The facts about a pod that decide whether and how it is an endpoint.
#[derive(Clone, Debug, PartialEq)]
struct Candidate<'a> {
    ip: String,
    node: &'a str,
    /// The pod's Ready condition is True.
    ready: bool,
    /// deletionTimestamp is set.
    terminating: bool,
    pod: &'a Pod,
}

/// A pod is a candidate when it is not terminal (Succeeded/Failed), is bound to a node and has
/// an IPv4 address (the slices this controller writes are IPv4).
fn candidate(pod: &Pod) -> Option<Candidate<'_>> {
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let node = pod
        .spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())?;
    let ip = pod_ipv4(pod)?;
    Some(Candidate {
        ip,
        node,
        ready: pod_ready(pod),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        pod,
    })
}

/// The first IPv4 address of `status.podIPs`, else `status.podIP` when that is IPv4.
pub fn pod_ipv4(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let listed = status.pod_ips.iter().flatten().map(|p| p.ip.as_str());
    listed
        .chain(status.pod_ip.as_deref())
        .find_map(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
        .map(|ip| ip.to_string())
}

/// The pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

fn protocol(sp: &ServicePort) -> &str {
    sp.protocol.as_deref().unwrap_or("TCP")
}

/// The pod's port for a service port: a numeric (or absent) targetPort as is, a named one looked
/// up among the ports of the pod's containers (and sidecars: init containers that restart
/// Always) with the same name and protocol. None when the pod has no such named port.
pub fn resolve_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    let name = match &sp.target_port {
        None => return Some(sp.port),
        Some(IntOrString::Int(n)) => return Some(*n),
        Some(IntOrString::String(name)) => name,
    };
    let spec = pod.spec.as_ref()?;
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name.as_str())
                && p.protocol.as_deref().unwrap_or("TCP") == protocol(sp)
        })
        .map(|p| p.container_port)
}

/// The hostname an endpoint carries: the pod's `spec.hostname` when its `spec.subdomain` names
/// this service (in the same namespace), as DNS for headless services wants.
fn hostname(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let host = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    let same = spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && pod.metadata.namespace == svc.metadata.namespace;
    same.then(|| host.to_string())
}

fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

fn uid(addr: &EndpointAddress) -> &str {
    addr.target_ref
        .as_ref()
        .and_then(|r| r.uid.as_deref())
        .unwrap_or("")
}

fn port_key(p: &EndpointPort) -> PortKey {
    (
        p.name.clone().unwrap_or_default(),
        p.port,
        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
        p.app_protocol.clone(),
    )
}

/// The slice port key (same tuple as [`PortKey`]; an unnamed port has the name "").
pub fn slice_port_key(p: &SlicePort) -> PortKey {
    (
        p.name.clone().unwrap_or_default(),
        p.port.unwrap_or(0),
        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
        p.app_protocol.clone(),
    )
}

/// Everything the controller writes for `svc`, from all pods (those of other namespaces and those
/// the selector does not pick are ignored here, so callers may pass a superset).
pub fn desired(svc: &Service, pods: &[&Pod]) -> Desired {
    let Some(selector) = managed_selector(svc) else {
        return Desired::default();
    };
    let mut picked: Vec<Candidate<'_>> = pods
        .iter()
        .filter(|p| p.metadata.namespace == svc.metadata.namespace)
        .filter(|p| {
            selector_matches(
                selector,
                p.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()),
            )
        })
        .filter_map(|p| candidate(p))
        .collect();
    picked.sort_by(|a, b| {
        (a.ip.as_str(), a.pod.metadata.uid.as_deref())
            .cmp(&(b.ip.as_str(), b.pod.metadata.uid.as_deref()))
    });
    Desired {
        subsets: endpoints_subsets(svc, &picked),
        slices: slice_groups(svc, &picked),
    }
}

/// The Endpoints subsets in canonical form. A terminating pod is left out (unless the service
/// publishes not-ready addresses, which also puts every address under `addresses`); the others
/// go to `addresses` when Ready, `notReadyAddresses` otherwise. Each service port is resolved
/// per pod, then ports offered by exactly the same addresses (with the same readiness) share a
/// subset. Addresses are sorted by IP then pod UID, ports by (name, port, protocol), subsets by
/// their ports. A headless service without ports gets one port-less subset; any other service
/// without ports gets none.
fn endpoints_subsets(svc: &Service, picked: &[Candidate<'_>]) -> Vec<EndpointSubset> {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish = spec.publish_not_ready_addresses.unwrap_or(false);
    let eligible: Vec<(&Candidate<'_>, EndpointAddress, bool)> = picked
        .iter()
        .filter(|c| publish || !c.terminating)
        .map(|c| {
            let addr = EndpointAddress {
                ip: c.ip.clone(),
                hostname: hostname(c.pod, svc),
                node_name: Some(c.node.to_string()),
                target_ref: Some(target_ref(c.pod)),
            };
            (c, addr, publish || c.ready)
        })
        .collect();
    let ports = spec.ports.unwrap_or_default();
    if ports.is_empty() {
        if !is_headless(svc) || eligible.is_empty() {
            return Vec::new();
        }
        let all: Vec<(EndpointAddress, bool)> =
            eligible.into_iter().map(|(_, a, r)| (a, r)).collect();
        return vec![subset(all, Vec::new())];
    }
    // port → (ip, uid) → (address, ready); not ready wins when one address appears twice.
    type Offer = BTreeMap<(String, String), (EndpointAddress, bool)>;
    let mut by_port: BTreeMap<PortKey, (EndpointPort, Offer)> = BTreeMap::new();
    for sp in &ports {
        for (c, addr, ready) in &eligible {
            let Some(num) = resolve_port(c.pod, sp) else {
                continue;
            };
            let port = EndpointPort {
                name: sp.name.clone().filter(|n| !n.is_empty()),
                port: num,
                protocol: Some(protocol(sp).to_string()),
                app_protocol: sp.app_protocol.clone(),
            };
            let entry = by_port
                .entry(port_key(&port))
                .or_insert_with(|| (port, BTreeMap::new()));
            let slot = entry
                .1
                .entry((addr.ip.clone(), uid(addr).to_string()))
                .or_insert_with(|| (addr.clone(), *ready));
            slot.1 &= *ready;
        }
    }
    // Ports offered by the same addresses (same readiness) share a subset.
    // (who offers it: ip, uid, ready) → the ports they offer, and the addresses themselves.
    type Shape = Vec<(String, String, bool)>;
    let mut groups: Vec<(Shape, Vec<EndpointPort>, Offer)> = Vec::new();
    for (_, (port, offer)) in by_port {
        let shape: Shape = offer
            .iter()
            .map(|((ip, uid), (_, ready))| (ip.clone(), uid.clone(), *ready))
            .collect();
        match groups.iter_mut().find(|g| g.0 == shape) {
            Some(g) => g.1.push(port),
            None => groups.push((shape, vec![port], offer)),
        }
    }
    let mut out: Vec<EndpointSubset> = groups
        .into_iter()
        .map(|(_, ports, offer)| subset(offer.into_values().collect(), ports))
        .collect();
    out.sort_by_key(|s| s.ports.iter().flatten().map(port_key).collect::<Vec<_>>());
    out
}

/// One subset from (address, ready) pairs already sorted by IP and UID, and its ports.
fn subset(addrs: Vec<(EndpointAddress, bool)>, mut ports: Vec<EndpointPort>) -> EndpointSubset {
    let (ready, not_ready): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|(_, r)| *r);
    let strip = |v: Vec<(EndpointAddress, bool)>| {
        let v: Vec<EndpointAddress> = v.into_iter().map(|(a, _)| a).collect();
        (!v.is_empty()).then_some(v)
    };
    ports.sort_by_key(port_key);
    EndpointSubset {
        addresses: strip(ready),
        not_ready_addresses: strip(not_ready),
        ports: (!ports.is_empty()).then_some(ports),
    }
}

/// The slice endpoints: every candidate pod, terminating ones included (that is how proxies
/// drain), with `serving` = Ready condition True, `terminating` = deletionTimestamp set and
/// `ready` = serving and not terminating (always true when the service publishes not-ready
/// addresses). Pods are grouped by the ports they resolve (in the service's port order);
/// groups are sorted by their ports, endpoints by IP then pod UID.
fn slice_groups(svc: &Service, picked: &[Candidate<'_>]) -> Vec<SliceGroup> {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish = spec.publish_not_ready_addresses.unwrap_or(false);
    let ports = spec.ports.unwrap_or_default();
    let mut groups: BTreeMap<Vec<PortKey>, SliceGroup> = BTreeMap::new();
    for c in picked {
        let resolved: Vec<SlicePort> = ports
            .iter()
            .filter_map(|sp| {
                Some(SlicePort {
                    name: Some(sp.name.clone().unwrap_or_default()),
                    port: Some(resolve_port(c.pod, sp)?),
                    protocol: Some(protocol(sp).to_string()),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        let key: Vec<PortKey> = resolved.iter().map(slice_port_key).collect();
        let endpoint = Endpoint {
            addresses: vec![c.ip.clone()],
            conditions: Some(EndpointConditions {
                ready: Some(publish || (c.ready && !c.terminating)),
                serving: Some(c.ready),
                terminating: Some(c.terminating),
            }),
            hostname: hostname(c.pod, svc),
            node_name: Some(c.node.to_string()),
            target_ref: Some(target_ref(c.pod)),
            ..Default::default()
        };
        groups
            .entry(key)
            .or_insert_with(|| SliceGroup {
                ports: resolved,
                endpoints: Vec::new(),
            })
            .endpoints
            .push(endpoint);
    }
    groups.into_values().collect()
}

/// Whether a pod update can change some service's endpoints: its labels, addresses, readiness,
/// deletion, phase, node or hostname changed. Other status writes (a restart count, a
/// container state that leaves Ready alone) queue nothing.
pub fn endpoint_change(old: &Pod, new: &Pod) -> bool {
    let status = |p: &Pod| {
        p.status
            .as_ref()
            .map(|s| (s.pod_ip.clone(), s.pod_ips.clone(), s.phase.clone()))
    };
    let spec = |p: &Pod| {
        p.spec
            .as_ref()
            .map(|s| (s.node_name.clone(), s.hostname.clone(), s.subdomain.clone()))
    };
    old.metadata.labels != new.metadata.labels
        || status(old) != status(new)
        || pod_ready(old) != pod_ready(new)
        || old.metadata.deletion_timestamp.is_some() != new.metadata.deletion_timestamp.is_some()
        || spec(old) != spec(new)
}
