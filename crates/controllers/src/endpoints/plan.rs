//! From the desired endpoints and what the API shows now, the writes to make: the Endpoints
//! object to create or update (or none), and the EndpointSlices to create, update and delete.
//! Pure; an unchanged world plans no write.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointSubset, Endpoints, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::desired::{PortKey, SliceGroup, slice_port_key};

/// `kubernetes.io/service-name`: the service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// `endpointslice.kubernetes.io/managed-by`: who writes a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// The managed-by value of the slices this controller writes (the one Kubernetes' uses).
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// Set (empty) on the Endpoints and slices of a service without a cluster IP.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Set to `truncated` on an Endpoints object whose addresses went over [`MAX_ENDPOINTS`].
pub const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
/// The most addresses an Endpoints object carries (Kubernetes' limit).
pub const MAX_ENDPOINTS: usize = 1000;

/// No cluster IP: `None` (headless) or not set (ExternalName).
fn service_ip_unset(svc: &Service) -> bool {
    matches!(
        svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        None | Some("" | "None")
    )
}

/// The Endpoints object's labels: the service's, plus the headless label when it has no IP.
pub fn endpoints_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.remove(HEADLESS_LABEL);
    if service_ip_unset(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

/// A slice's labels: the service's (minus the reserved ones), the headless label when it has no
/// IP, the service name and the managed-by label.
pub fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = endpoints_labels(svc);
    labels.remove(SERVICE_NAME_LABEL);
    labels.remove(MANAGED_BY_LABEL);
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    labels
}

/// The controller reference a slice carries to its service.
pub fn owner_ref(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Keeps at most [`MAX_ENDPOINTS`] addresses, ready ones first, subset by subset. Returns
/// whether anything was cut.
fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let total: usize = subsets
        .iter()
        .map(|s| {
            s.addresses.as_ref().map_or(0, Vec::len)
                + s.not_ready_addresses.as_ref().map_or(0, Vec::len)
        })
        .sum();
    if total <= MAX_ENDPOINTS {
        return false;
    }
    let mut budget = MAX_ENDPOINTS;
    let mut keep = |list: &mut Option<Vec<EndpointAddress>>| {
        if let Some(v) = list.as_mut() {
            v.truncate(budget);
            budget -= v.len();
            if v.is_empty() {
                *list = None;
            }
        }
    };
    for s in subsets.iter_mut() {
        keep(&mut s.addresses);
    }
    for s in subsets.iter_mut() {
        keep(&mut s.not_ready_addresses);
    }
    true
}

/// Subsets in a form where absent and empty lists, and a targetRef's resourceVersion, do not
/// count as differences.
fn normal_subsets(subsets: Option<&Vec<EndpointSubset>>) -> Vec<EndpointSubset> {
    let addrs = |v: &Option<Vec<EndpointAddress>>| {
        let v: Vec<EndpointAddress> = v
            .iter()
            .flatten()
            .map(|a| {
                let mut a = a.clone();
                if let Some(r) = a.target_ref.as_mut() {
                    r.resource_version = None;
                }
                a
            })
            .collect();
        (!v.is_empty()).then_some(v)
    };
    subsets
        .into_iter()
        .flatten()
        .map(|s| EndpointSubset {
            addresses: addrs(&s.addresses),
            not_ready_addresses: addrs(&s.not_ready_addresses),
            ports: s.ports.clone().filter(|p| !p.is_empty()).map(|ps| {
                ps.into_iter()
                    .map(|mut p| {
                        p.protocol.get_or_insert_with(|| "TCP".into());
                        p
                    })
                    .collect()
            }),
        })
        .filter(|s| s.addresses.is_some() || s.not_ready_addresses.is_some())
        .collect()
}

/// The Endpoints object to write for `svc` (create when `current` is None, else update from
/// `current`, keeping its other metadata and resourceVersion), or None when `current` already
/// says the same.
pub fn endpoints_write(
    svc: &Service,
    subsets: &[EndpointSubset],
    current: Option<&Endpoints>,
) -> Option<Endpoints> {
    let mut subsets = subsets.to_vec();
    let truncated = truncate(&mut subsets);
    let labels = endpoints_labels(svc);
    if let Some(cur) = current {
        let same_subsets = normal_subsets(cur.subsets.as_ref()) == normal_subsets(Some(&subsets));
        let same_labels = cur.metadata.labels.clone().unwrap_or_default() == labels;
        let marked = cur
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(OVER_CAPACITY))
            .is_some_and(|v| v == "truncated");
        if same_subsets && same_labels && marked == truncated {
            return None;
        }
    }
    let mut out = current.cloned().unwrap_or_else(|| Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            ..Default::default()
        },
        subsets: None,
    });
    out.metadata.labels = (!labels.is_empty()).then_some(labels);
    let mut annotations = out.metadata.annotations.take().unwrap_or_default();
    if truncated {
        annotations.insert(OVER_CAPACITY.into(), "truncated".into());
    } else {
        annotations.remove(OVER_CAPACITY);
    }
    out.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    out.subsets = (!subsets.is_empty()).then_some(subsets);
    Some(out)
}

/// The slice writes for one service.
#[derive(Clone, Debug, Default)]
pub struct SlicePlan {
    /// New slices (generateName `<service>-`).
    pub create: Vec<EndpointSlice>,
    /// Existing slices with new contents (name and resourceVersion kept).
    pub update: Vec<EndpointSlice>,
    /// Existing slices to remove.
    pub delete: Vec<Arc<EndpointSlice>>,
}

impl SlicePlan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

fn owned_by(slice: &EndpointSlice, svc: &Service) -> bool {
    let uid = svc.metadata.uid.as_deref().unwrap_or_default();
    slice
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Service" && o.api_version == "v1" && o.uid == uid)
}

fn slice_ports_key(slice: &EndpointSlice) -> Vec<PortKey> {
    slice.ports.iter().flatten().map(slice_port_key).collect()
}

fn normal_endpoints(endpoints: &[Endpoint]) -> Vec<Endpoint> {
    endpoints
        .iter()
        .map(|e| {
            let mut e = e.clone();
            if let Some(r) = e.target_ref.as_mut() {
                r.resource_version = None;
            }
            e
        })
        .collect()
}

/// Whether `slice` already holds exactly `endpoints` with the wanted labels and owner.
fn slice_is(slice: &EndpointSlice, svc: &Service, endpoints: &[Endpoint]) -> bool {
    slice.metadata.labels.clone().unwrap_or_default() == slice_labels(svc)
        && normal_endpoints(&slice.endpoints) == endpoints
}

/// The slices `svc` should have: each group split into slices of at most `max_per_slice`
/// endpoints (a service without endpoints keeps one empty placeholder slice), matched against
/// the existing slices of the same ports: an identical one is left alone, others are updated in
/// name order, missing ones created; existing slices of the service no longer needed as they
/// are are reused for those before being deleted. Slices of another address type or owned by an
/// earlier service of the same name are deleted.
pub fn slices_plan(
    svc: &Service,
    groups: &[SliceGroup],
    existing: &[Arc<EndpointSlice>],
    max_per_slice: usize,
) -> SlicePlan {
    let max = max_per_slice.max(1);
    let placeholder = [SliceGroup::default()];
    let groups = if groups.iter().all(|g| g.endpoints.is_empty()) {
        &placeholder[..]
    } else {
        groups
    };
    let mut plan = SlicePlan::default();
    let mut creates: Vec<(
        &[k8s_openapi::api::discovery::v1::EndpointPort],
        &[Endpoint],
    )> = Vec::new();
    let mut pool: Vec<Arc<EndpointSlice>> = Vec::new();
    for s in existing {
        if s.address_type == "IPv4" && owned_by(s, svc) && s.metadata.deletion_timestamp.is_none() {
            pool.push(s.clone());
        } else {
            plan.delete.push(s.clone());
        }
    }
    pool.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for group in groups {
        let key: Vec<PortKey> = group.ports.iter().map(slice_port_key).collect();
        let mut mine: Vec<Arc<EndpointSlice>> = Vec::new();
        pool.retain(|s| {
            let hit = slice_ports_key(s) == key;
            if hit {
                mine.push(s.clone());
            }
            !hit
        });
        let chunks: Vec<&[Endpoint]> = if group.endpoints.is_empty() {
            vec![&[]]
        } else {
            group.endpoints.chunks(max).collect()
        };
        // Chunks an existing slice already holds need no write.
        let mut todo: Vec<&[Endpoint]> = Vec::new();
        for chunk in chunks {
            match mine.iter().position(|s| slice_is(s, svc, chunk)) {
                Some(i) => {
                    mine.remove(i);
                }
                None => todo.push(chunk),
            }
        }
        let mut reuse = mine.into_iter();
        for chunk in todo {
            match reuse.next() {
                Some(old) => plan.update.push(refill(svc, &old, &group.ports, chunk)),
                None => creates.push((&group.ports[..], chunk)),
            }
        }
        pool.extend(reuse);
    }
    // Slices left over (other ports, or no longer needed) take the place of new ones before
    // anything is deleted: an update instead of a create and a delete.
    pool.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut spare = pool.into_iter();
    for (ports, chunk) in creates {
        match spare.next() {
            Some(old) => plan.update.push(refill(svc, &old, ports, chunk)),
            None => plan.create.push(new_slice(svc, ports, chunk)),
        }
    }
    plan.delete.extend(spare);
    plan
}

/// An existing slice of the service given new contents (name and resourceVersion kept).
fn refill(
    svc: &Service,
    old: &EndpointSlice,
    ports: &[k8s_openapi::api::discovery::v1::EndpointPort],
    endpoints: &[Endpoint],
) -> EndpointSlice {
    let mut s = old.clone();
    s.metadata.labels = Some(slice_labels(svc));
    s.endpoints = endpoints.to_vec();
    s.ports = Some(ports.to_vec());
    s
}

fn new_slice(
    svc: &Service,
    ports: &[k8s_openapi::api::discovery::v1::EndpointPort],
    endpoints: &[Endpoint],
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", svc.metadata.name.as_deref().unwrap_or(""))),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(slice_labels(svc)),
            owner_references: Some(vec![owner_ref(svc)]),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: endpoints.to_vec(),
        ports: Some(ports.to_vec()),
    }
}
