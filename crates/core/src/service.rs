//! Services, Endpoints and EndpointSlices as the API server prepares them (Kubernetes 1.32):
//! the v1 defaulting applied to every decoded object, and the registry rules around the linked
//! Service fields: keeping `clusterIP` and `clusterIPs` in step, carrying allocated values over
//! an update that omits them, wiping fields a type change leaves without meaning, and settling
//! `ipFamilies`/`ipFamilyPolicy` before allocation. Allocation itself is the API server's (it
//! holds the pools of [`alloc`]); validation is in `crate::validation` (`validate_service`, ...).
//!
//! A `LoadBalancer` Service is accepted and behaves as a `NodePort` one: node ports are
//! allocated, but nothing provisions a load balancer, so `status.loadBalancer` stays empty and
//! `kubectl get` prints `<pending>` as its EXTERNAL-IP.

pub mod alloc;

use k8s_openapi::api::core::v1::{
    ClientIPConfig, Endpoints, Service, ServiceSpec, SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::validation::{FieldError, FieldPath, validate_service_cluster_ips_related};

pub const TYPE_CLUSTER_IP: &str = "ClusterIP";
pub const TYPE_NODE_PORT: &str = "NodePort";
pub const TYPE_LOAD_BALANCER: &str = "LoadBalancer";
pub const TYPE_EXTERNAL_NAME: &str = "ExternalName";
/// `clusterIP: None`: a headless Service.
pub const CLUSTER_IP_NONE: &str = "None";
pub const IPV4: &str = "IPv4";
pub const IPV6: &str = "IPv6";
pub const SINGLE_STACK: &str = "SingleStack";
pub const PREFER_DUAL_STACK: &str = "PreferDualStack";
pub const REQUIRE_DUAL_STACK: &str = "RequireDualStack";
/// Label that ties an EndpointSlice to its Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages an EndpointSlice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Label that keeps the EndpointSlice mirroring controller away from an Endpoints object.
pub const LABEL_SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
/// Session affinity timeout given to `ClientIP` affinity without one (3 hours).
pub const DEFAULT_CLIENT_IP_TIMEOUT_SECONDS: i32 = 10800;

/// The text of an optional string field, empty when unset.
fn text(o: &Option<String>) -> &str {
    o.as_deref().unwrap_or("")
}

fn spec(svc: &Service) -> &ServiceSpec {
    static EMPTY: std::sync::OnceLock<ServiceSpec> = std::sync::OnceLock::new();
    svc.spec
        .as_ref()
        .unwrap_or_else(|| EMPTY.get_or_init(ServiceSpec::default))
}

/// The Service's `type` (empty before defaulting).
pub fn service_type(svc: &Service) -> &str {
    text(&spec(svc).type_)
}

/// `spec.clusterIPs` as a slice.
pub fn cluster_ips(svc: &Service) -> &[String] {
    spec(svc).cluster_ips.as_deref().unwrap_or_default()
}

/// Kubernetes' v1 defaulting of a Service (`SetDefaults_Service`): `type: ClusterIP`,
/// `sessionAffinity: None` (and the ClientIP timeout), port `protocol: TCP` and `targetPort` =
/// `port`, `externalTrafficPolicy: Cluster` for externally reachable Services,
/// `internalTrafficPolicy: Cluster` except for ExternalName, `allocateLoadBalancerNodePorts:
/// true` and ingress `ipMode: VIP` for LoadBalancer ones. Empty strings count as unset.
pub fn default_service(svc: &mut Service) {
    let spec = svc.spec.get_or_insert_with(ServiceSpec::default);
    if text(&spec.session_affinity).is_empty() {
        spec.session_affinity = Some("None".into());
    }
    match text(&spec.session_affinity) {
        "None" => spec.session_affinity_config = None,
        "ClientIP" => {
            let has_timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .is_some();
            if !has_timeout {
                spec.session_affinity_config = Some(SessionAffinityConfig {
                    client_ip: Some(ClientIPConfig {
                        timeout_seconds: Some(DEFAULT_CLIENT_IP_TIMEOUT_SECONDS),
                    }),
                });
            }
        }
        _ => {}
    }
    if text(&spec.type_).is_empty() {
        spec.type_ = Some(TYPE_CLUSTER_IP.into());
    }
    for port in spec.ports.iter_mut().flatten() {
        if text(&port.protocol).is_empty() {
            port.protocol = Some("TCP".into());
        }
        let unset = match &port.target_port {
            None => true,
            Some(IntOrString::Int(0)) => true,
            Some(IntOrString::String(s)) => s.is_empty(),
            Some(IntOrString::Int(_)) => false,
        };
        if unset {
            port.target_port = Some(IntOrString::Int(port.port));
        }
    }
    if externally_accessible(spec) && text(&spec.external_traffic_policy).is_empty() {
        spec.external_traffic_policy = Some("Cluster".into());
    }
    let ty = text(&spec.type_).to_string();
    if spec.internal_traffic_policy.is_none()
        && matches!(
            ty.as_str(),
            TYPE_NODE_PORT | TYPE_LOAD_BALANCER | TYPE_CLUSTER_IP
        )
    {
        spec.internal_traffic_policy = Some("Cluster".into());
    }
    if ty == TYPE_LOAD_BALANCER {
        if spec.allocate_load_balancer_node_ports.is_none() {
            spec.allocate_load_balancer_node_ports = Some(true);
        }
        let ingress = svc
            .status
            .as_mut()
            .and_then(|s| s.load_balancer.as_mut())
            .and_then(|lb| lb.ingress.as_mut());
        for ing in ingress.into_iter().flatten() {
            if !text(&ing.ip).is_empty() && ing.ip_mode.is_none() {
                ing.ip_mode = Some("VIP".into());
            }
        }
    }
}

/// Whether traffic reaches the Service from outside the cluster: NodePort, LoadBalancer, or
/// ClusterIP with external IPs.
pub fn externally_accessible(spec: &ServiceSpec) -> bool {
    match text(&spec.type_) {
        TYPE_NODE_PORT | TYPE_LOAD_BALANCER => true,
        TYPE_CLUSTER_IP => spec.external_ips.as_ref().is_some_and(|e| !e.is_empty()),
        _ => false,
    }
}

/// v1 defaulting of Endpoints: port `protocol: TCP`.
pub fn default_endpoints(ep: &mut Endpoints) {
    for subset in ep.subsets.iter_mut().flatten() {
        for port in subset.ports.iter_mut().flatten() {
            if text(&port.protocol).is_empty() {
                port.protocol = Some("TCP".into());
            }
        }
    }
}

/// v1 defaulting of an EndpointSlice: port `name: ""` and `protocol: TCP`.
pub fn default_endpoint_slice(slice: &mut EndpointSlice) {
    for port in slice.ports.iter_mut().flatten() {
        if port.name.is_none() {
            port.name = Some(String::new());
        }
        if port.protocol.is_none() {
            port.protocol = Some("TCP".into());
        }
    }
}

/// Every type but ExternalName has a cluster IP (or `None`).
pub fn needs_cluster_ip(svc: &Service) -> bool {
    service_type(svc) != TYPE_EXTERNAL_NAME
}

/// NodePort and LoadBalancer Services have node ports.
pub fn needs_node_port(svc: &Service) -> bool {
    matches!(service_type(svc), TYPE_NODE_PORT | TYPE_LOAD_BALANCER)
}

/// A LoadBalancer Service with `externalTrafficPolicy: Local` has a health-check node port.
pub fn needs_health_check_node_port(svc: &Service) -> bool {
    service_type(svc) == TYPE_LOAD_BALANCER && text(&spec(svc).external_traffic_policy) == "Local"
}

/// Whether node ports are allocated for ports that do not ask for one: always for NodePort,
/// unless `allocateLoadBalancerNodePorts: false` for LoadBalancer.
pub fn should_allocate_node_ports(svc: &Service) -> bool {
    match service_type(svc) {
        TYPE_NODE_PORT => true,
        TYPE_LOAD_BALANCER => spec(svc).allocate_load_balancer_node_ports != Some(false),
        _ => false,
    }
}

/// `clusterIPs: ["None"]`.
pub fn is_headless(svc: &Service) -> bool {
    cluster_ips(svc) == [CLUSTER_IP_NONE]
}

fn has_selector(svc: &Service) -> bool {
    spec(svc).selector.as_ref().is_some_and(|s| !s.is_empty())
}

fn same_cluster_ips(old: &Service, new: &Service) -> bool {
    text(&spec(old).cluster_ip) == text(&spec(new).cluster_ip)
        && cluster_ips(old) == cluster_ips(new)
}

fn ip_families(svc: &Service) -> &[String] {
    spec(svc).ip_families.as_deref().unwrap_or_default()
}

fn ip_family_policy(svc: &Service) -> Option<&str> {
    spec(svc).ip_family_policy.as_deref()
}

fn set_cluster_ips(svc: &mut Service, ips: Option<Vec<String>>) {
    svc.spec.get_or_insert_with(Default::default).cluster_ips = ips.filter(|v| !v.is_empty());
}

/// The non-zero node ports of a Service.
pub fn node_ports(svc: &Service) -> Vec<i32> {
    spec(svc)
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.node_port.filter(|n| *n != 0))
        .collect()
}

/// Keeps `clusterIP` and `clusterIPs` in step (upstream's `normalizeClusterIPs`): an old client
/// sets only the singular field, a new one sets both. On create a lone `clusterIP` fills
/// `clusterIPs`; on update a dropped `clusterIPs` comes back when `clusterIP` is unchanged, a
/// cleared `clusterIP` clears `clusterIPs`, and a changed one replaces it (for validation to
/// reject).
pub fn normalize_cluster_ips(new: &mut Service, old: Option<&Service>) {
    let new_ip = text(&spec(new).cluster_ip).to_string();
    let Some(old) = old else {
        if !new_ip.is_empty() && cluster_ips(new).is_empty() {
            set_cluster_ips(new, Some(vec![new_ip]));
        }
        return;
    };
    let old_ip = text(&spec(old).cluster_ip);
    if !cluster_ips(old).is_empty() && cluster_ips(new).is_empty() && old_ip == new_ip {
        set_cluster_ips(new, Some(cluster_ips(old).to_vec()));
    }
    if old_ip != new_ip && cluster_ips(old) == cluster_ips(new) {
        if !old_ip.is_empty() && new_ip.is_empty() {
            set_cluster_ips(new, None);
        } else {
            set_cluster_ips(new, Some(vec![new_ip]));
        }
    }
}

/// Carries values the server allocated over an update that leaves them out (upstream's
/// `patchAllocatedValues`), so re-applying the original manifest succeeds: the cluster IPs, node
/// ports (matched by port name, unless the new object uses that number elsewhere) and the
/// health-check node port.
pub fn patch_allocated_values(new: &mut Service, old: &Service) {
    if needs_cluster_ip(old) && needs_cluster_ip(new) {
        let spec_new = new.spec.get_or_insert_with(Default::default);
        if text(&spec_new.cluster_ip).is_empty() {
            spec_new.cluster_ip = spec(old).cluster_ip.clone();
        }
        if spec_new.cluster_ips.as_ref().is_none_or(|c| c.is_empty())
            && !cluster_ips(old).is_empty()
        {
            spec_new.cluster_ips = Some(cluster_ips(old).to_vec());
        }
    }
    if needs_node_port(old) && needs_node_port(new) {
        let old_used = node_ports(old);
        let new_used = node_ports(new);
        let used: Vec<i32> = old_used
            .iter()
            .copied()
            .filter(|p| new_used.contains(p))
            .collect();
        // By name; a later port of the same name wins, as a Go map assignment does.
        let mut by_name: Vec<(String, i32)> = Vec::new();
        for p in spec(old).ports.iter().flatten() {
            let name = text(&p.name).to_string();
            let np = p.node_port.unwrap_or(0);
            match by_name.iter_mut().find(|(n, _)| *n == name) {
                Some(e) => e.1 = np,
                None => by_name.push((name, np)),
            }
        }
        let spec_new = new.spec.get_or_insert_with(Default::default);
        for p in spec_new.ports.iter_mut().flatten() {
            if p.node_port.unwrap_or(0) == 0 {
                let old_val = by_name
                    .iter()
                    .find(|(n, _)| n == text(&p.name))
                    .map_or(0, |(_, v)| *v);
                if !used.contains(&old_val) {
                    p.node_port = (old_val != 0).then_some(old_val);
                }
            }
        }
    }
    if needs_health_check_node_port(old) && needs_health_check_node_port(new) {
        let spec_new = new.spec.get_or_insert_with(Default::default);
        if spec_new.health_check_node_port.unwrap_or(0) == 0 {
            spec_new.health_check_node_port = spec(old).health_check_node_port;
        }
    }
}

/// Wipes what a type change leaves without meaning, unless the client changed it in the same
/// update (upstream's `dropTypeDependentFields`): cluster IPs and IP families when moving to
/// ExternalName, node ports when leaving NodePort/LoadBalancer, the health-check node port,
/// `allocateLoadBalancerNodePorts`, `loadBalancerClass`, `externalTrafficPolicy`, and the
/// load-balancer status of a Service that is no longer a LoadBalancer.
pub fn drop_type_dependent_fields(new: &mut Service, old: &Service) {
    let was_lb = service_type(old) == TYPE_LOAD_BALANCER;
    let wipe_ips = needs_cluster_ip(old) && !needs_cluster_ip(new);
    let same_ips = same_cluster_ips(old, new);
    let same_families = ip_families(old) == ip_families(new);
    let same_policy = ip_family_policy(old) == ip_family_policy(new);
    let wipe_ports = needs_node_port(old) && !needs_node_port(new) && {
        let old_ports = node_ports(old);
        node_ports(new).iter().all(|p| old_ports.contains(p))
    };
    let wipe_hc = needs_health_check_node_port(old)
        && !needs_health_check_node_port(new)
        && spec(old).health_check_node_port == spec(new).health_check_node_port;
    let new_is_lb = service_type(new) == TYPE_LOAD_BALANCER;
    let wipe_etp = externally_accessible(spec(old))
        && !externally_accessible(spec(new))
        && spec(old).external_traffic_policy == spec(new).external_traffic_policy;
    let old_spec = spec(old).clone();
    let s = new.spec.get_or_insert_with(Default::default);
    if wipe_ips {
        if same_ips {
            s.cluster_ip = None;
            s.cluster_ips = None;
        }
        if same_families {
            s.ip_families = None;
        }
        if same_policy {
            s.ip_family_policy = None;
        }
    }
    if wipe_ports {
        for p in s.ports.iter_mut().flatten() {
            p.node_port = None;
        }
    }
    if wipe_hc {
        s.health_check_node_port = None;
    }
    if was_lb && !new_is_lb {
        if let (Some(a), Some(b)) = (
            old_spec.allocate_load_balancer_node_ports,
            s.allocate_load_balancer_node_ports,
        ) && a == b
        {
            s.allocate_load_balancer_node_ports = None;
        }
        if old_spec.load_balancer_class == s.load_balancer_class {
            s.load_balancer_class = None;
        }
    }
    if wipe_etp {
        s.external_traffic_policy = None;
    }
    if !new_is_lb && let Some(status) = new.status.as_mut() {
        status.load_balancer = Some(Default::default());
    }
}

/// Whether an update of a PreferDualStack Service leaves its IP fields alone, in which case they
/// are not re-derived.
fn unchanged_prefer_dual_stack(new: &Service, old: Option<&Service>) -> bool {
    let Some(old) = old else { return false };
    let Some(policy) = ip_family_policy(new) else {
        return false;
    };
    service_type(old) == service_type(new)
        && needs_cluster_ip(new)
        && policy == PREFER_DUAL_STACK
        && ip_family_policy(old).is_none_or(|p| p == PREFER_DUAL_STACK)
        && same_cluster_ips(old, new)
        && ip_families(old) == ip_families(new)
}

fn family_of(ip: &str) -> &'static str {
    if ip.contains(':') { IPV6 } else { IPV4 }
}

fn other_family(f: &str) -> &'static str {
    if f == IPV4 { IPV6 } else { IPV4 }
}

/// Settles `ipFamilyPolicy` and `ipFamilies` before cluster IPs are allocated, on a cluster
/// whose only service range is of `primary` family (upstream's `initIPFamilyFields` with one
/// allocator): the policy defaults to the old one, to RequireDualStack for a headless Service
/// without selector, else SingleStack; families follow the requested cluster IPs, then the
/// cluster's. Returns the errors upstream answers with 422 before any allocation.
pub fn init_ip_families(
    svc: &mut Service,
    old: Option<&Service>,
    primary: &str,
) -> Vec<FieldError> {
    if !needs_cluster_ip(svc) || unchanged_prefer_dual_stack(svc, old) {
        return Vec::new();
    }
    if ip_family_policy(svc).is_none() {
        let policy = match old.and_then(ip_family_policy) {
            Some(p) => p.to_string(),
            None if text(&spec(svc).cluster_ip) == CLUSTER_IP_NONE && !has_selector(svc) => {
                REQUIRE_DUAL_STACK.to_string()
            }
            None => SINGLE_STACK.to_string(),
        };
        svc.spec
            .get_or_insert_with(Default::default)
            .ip_family_policy = Some(policy);
    }
    let errs = validate_service_cluster_ips_related(svc);
    if !errs.is_empty() {
        return errs;
    }
    let spec_path = FieldPath::new("spec");
    let policy_path = spec_path.child("ipFamilyPolicy");
    let policy = ip_family_policy(svc).unwrap_or(SINGLE_STACK).to_string();
    let mut errs = Vec::new();
    if let Some(old) = old {
        if policy == SINGLE_STACK {
            let same_ips = same_cluster_ips(old, svc);
            let same_fams = ip_families(old) == ip_families(svc);
            let s = svc.spec.get_or_insert_with(Default::default);
            if same_ips && let Some(ips) = s.cluster_ips.as_mut() {
                ips.truncate(1);
            }
            if same_fams && let Some(f) = s.ip_families.as_mut() {
                f.truncate(1);
            }
        } else {
            let fewer = |new: usize, old: usize| new > 0 && new < old;
            if fewer(cluster_ips(svc).len(), cluster_ips(old).len()) {
                errs.push(FieldError::invalid(
                    &policy_path,
                    policy.as_str(),
                    "must be 'SingleStack' to release the secondary cluster IP",
                ));
            }
            if fewer(ip_families(svc).len(), ip_families(old).len()) {
                errs.push(FieldError::invalid(
                    &policy_path,
                    policy.as_str(),
                    "must be 'SingleStack' to release the secondary IP family",
                ));
            }
        }
    }
    if policy == SINGLE_STACK {
        if cluster_ips(svc).len() == 2 {
            errs.push(FieldError::invalid(
                &policy_path,
                policy.as_str(),
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
            ));
        }
        if ip_families(svc).len() == 2 {
            errs.push(FieldError::invalid(
                &policy_path,
                policy.as_str(),
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
            ));
        }
    }
    // Families follow the requested cluster IPs.
    let ips = cluster_ips(svc).to_vec();
    let mut families = ip_families(svc).to_vec();
    for (i, ip) in ips.iter().enumerate() {
        if ip == CLUSTER_IP_NONE {
            break;
        }
        let fam = family_of(ip);
        if i >= families.len() {
            if fam != primary {
                errs.push(FieldError::invalid(
                    spec_path.child("clusterIPs").index(i),
                    ips.clone(),
                    format!("{fam} is not configured on this cluster"),
                ));
            } else {
                families.push(fam.to_string());
            }
        }
    }
    if !errs.is_empty() {
        return errs;
    }
    let headless_no_selector = text(&spec(svc).cluster_ip) == CLUSTER_IP_NONE && !has_selector(svc);
    if headless_no_selector {
        if families.is_empty() {
            families.push(primary.to_string());
        }
        if families.len() < 2 && policy != SINGLE_STACK {
            let alt = other_family(&families[0]).to_string();
            families.push(alt);
        }
        svc.spec.get_or_insert_with(Default::default).ip_families = Some(families);
        return Vec::new();
    }
    if policy == REQUIRE_DUAL_STACK {
        errs.push(FieldError::invalid(
            &policy_path,
            policy.as_str(),
            "this cluster is not configured for dual-stack services",
        ));
    }
    for (i, fam) in families.iter().enumerate() {
        if fam != primary {
            errs.push(FieldError::invalid(
                spec_path.child("ipFamilies").index(i),
                fam.as_str(),
                "not configured on this cluster",
            ));
        }
    }
    if !errs.is_empty() {
        return errs;
    }
    if families.is_empty() {
        families.push(primary.to_string());
    }
    svc.spec.get_or_insert_with(Default::default).ip_families = Some(families);
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServicePort;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn port(p: i32) -> ServicePort {
        ServicePort {
            port: p,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_a_minimal_service() {
        let mut s = svc(json!({"metadata": {"name": "web"},
            "spec": {"ports": [{"port": 80}, {"port": 81, "targetPort": "http", "protocol": "UDP"}]}}));
        default_service(&mut s);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v["spec"],
            json!({"type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
                   "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80},
                             {"port": 81, "protocol": "UDP", "targetPort": "http"}]})
        );
    }

    #[test]
    fn defaults_by_type() {
        let mut np = svc(json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}}));
        default_service(&mut np);
        let spec = np.spec.as_ref().unwrap();
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
        assert_eq!(spec.allocate_load_balancer_node_ports, None);
        let mut lb = svc(
            json!({"spec": {"type": "LoadBalancer", "sessionAffinity": "ClientIP"},
            "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}}),
        );
        default_service(&mut lb);
        let v = serde_json::to_value(&lb).unwrap();
        assert_eq!(v["spec"]["allocateLoadBalancerNodePorts"], json!(true));
        assert_eq!(
            v["spec"]["sessionAffinityConfig"],
            json!({"clientIP": {"timeoutSeconds": 10800}})
        );
        assert_eq!(v["status"]["loadBalancer"]["ingress"][0]["ipMode"], "VIP");
        let mut en = svc(json!({"spec": {"type": "ExternalName", "externalName": "x.example"}}));
        default_service(&mut en);
        assert_eq!(en.spec.as_ref().unwrap().internal_traffic_policy, None);
        let mut cip = svc(json!({"spec": {"externalIPs": ["1.2.3.4"]}}));
        default_service(&mut cip);
        assert_eq!(
            cip.spec
                .as_ref()
                .unwrap()
                .external_traffic_policy
                .as_deref(),
            Some("Cluster")
        );
    }

    #[test]
    fn endpoints_and_slices_defaults() {
        let mut ep: Endpoints = serde_json::from_value(json!({"metadata": {"name": "e"},
            "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}))
        .unwrap();
        default_endpoints(&mut ep);
        assert_eq!(
            ep.subsets.unwrap()[0].ports.as_ref().unwrap()[0]
                .protocol
                .as_deref(),
            Some("TCP")
        );
        let mut sl: EndpointSlice = serde_json::from_value(json!({"metadata": {"name": "s"},
            "addressType": "IPv4", "endpoints": [], "ports": [{"port": 80}]}))
        .unwrap();
        default_endpoint_slice(&mut sl);
        let p = &sl.ports.unwrap()[0];
        assert_eq!(
            (p.name.as_deref(), p.protocol.as_deref()),
            (Some(""), Some("TCP"))
        );
    }

    #[test]
    fn normalizes_cluster_ips() {
        let mut s = svc(json!({"spec": {"clusterIP": "10.96.0.5"}}));
        normalize_cluster_ips(&mut s, None);
        assert_eq!(cluster_ips(&s), ["10.96.0.5"]);
        let old = svc(json!({"spec": {"clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5"]}}));
        // An old client that only knows clusterIP changes it: clusterIPs follows, for
        // validation to reject.
        let mut changed = old.clone();
        changed.spec.as_mut().unwrap().cluster_ip = Some("10.96.0.6".into());
        normalize_cluster_ips(&mut changed, Some(&old));
        assert_eq!(cluster_ips(&changed), ["10.96.0.6"]);
        // A client that drops clusterIPs gets them back.
        let mut dropped = old.clone();
        dropped.spec.as_mut().unwrap().cluster_ips = None;
        normalize_cluster_ips(&mut dropped, Some(&old));
        assert_eq!(cluster_ips(&dropped), ["10.96.0.5"]);
        // Clearing clusterIP clears clusterIPs.
        let mut cleared = old.clone();
        cleared.spec.as_mut().unwrap().cluster_ip = None;
        normalize_cluster_ips(&mut cleared, Some(&old));
        assert!(cluster_ips(&cleared).is_empty());
    }

    #[test]
    fn patches_allocated_values() {
        let old = svc(
            json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.5",
            "clusterIPs": ["10.96.0.5"], "ports": [
                {"name": "a", "port": 80, "nodePort": 30001},
                {"name": "b", "port": 81, "nodePort": 30002}]}}),
        );
        let mut new = svc(json!({"spec": {"type": "NodePort", "ports": [
                {"name": "a", "port": 80}, {"name": "b", "port": 81, "nodePort": 30001}]}}));
        patch_allocated_values(&mut new, &old);
        let spec = new.spec.as_ref().unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.5"));
        assert_eq!(cluster_ips(&new), ["10.96.0.5"]);
        // 30001 is now used by "b", so "a" is not given it back.
        let ports = spec.ports.as_ref().unwrap();
        assert_eq!(
            (ports[0].node_port, ports[1].node_port),
            (None, Some(30001))
        );
    }

    #[test]
    fn drops_node_ports_when_leaving_node_port() {
        let old = svc(
            json!({"spec": {"type": "NodePort", "externalTrafficPolicy": "Cluster",
            "ports": [{"port": 80, "nodePort": 30001}]}, "status": {"loadBalancer": {}}}),
        );
        let mut new = old.clone();
        new.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        drop_type_dependent_fields(&mut new, &old);
        let spec = new.spec.as_ref().unwrap();
        assert_eq!(spec.ports.as_ref().unwrap()[0].node_port, None);
        assert_eq!(spec.external_traffic_policy, None);
        // A new node port in the same update is kept, for validation to reject.
        let mut asked = old.clone();
        let s = asked.spec.as_mut().unwrap();
        s.type_ = Some("ClusterIP".into());
        s.ports = Some(vec![ServicePort {
            node_port: Some(30009),
            ..port(80)
        }]);
        drop_type_dependent_fields(&mut asked, &old);
        assert_eq!(asked.spec.unwrap().ports.unwrap()[0].node_port, Some(30009));
        // Moving to ExternalName wipes the cluster IP fields.
        let old = svc(
            json!({"spec": {"type": "ClusterIP", "clusterIP": "10.96.0.5",
            "clusterIPs": ["10.96.0.5"], "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}}),
        );
        let mut en = old.clone();
        en.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        drop_type_dependent_fields(&mut en, &old);
        let s = en.spec.unwrap();
        assert_eq!(
            (
                s.cluster_ip,
                s.cluster_ips,
                s.ip_families,
                s.ip_family_policy
            ),
            (None, None, None, None)
        );
    }

    #[test]
    fn ip_families_on_a_single_stack_cluster() {
        let mut s = svc(json!({"spec": {"type": "ClusterIP", "selector": {"app": "web"}}}));
        assert!(init_ip_families(&mut s, None, IPV4).is_empty());
        let spec = s.spec.as_ref().unwrap();
        assert_eq!(spec.ip_family_policy.as_deref(), Some(SINGLE_STACK));
        assert_eq!(spec.ip_families.as_deref(), Some(&["IPv4".to_string()][..]));
        // Headless without selector: RequireDualStack and both families, as upstream.
        let mut h = svc(json!({"spec": {"type": "ClusterIP", "clusterIP": "None",
            "clusterIPs": ["None"]}}));
        assert!(init_ip_families(&mut h, None, IPV4).is_empty());
        let spec = h.spec.as_ref().unwrap();
        assert_eq!(spec.ip_family_policy.as_deref(), Some(REQUIRE_DUAL_STACK));
        assert_eq!(spec.ip_families.as_ref().unwrap().len(), 2);
        // Dual stack cannot be had.
        let mut d = svc(
            json!({"spec": {"type": "ClusterIP", "ipFamilyPolicy": "RequireDualStack",
            "selector": {"a": "b"}}}),
        );
        let errs = init_ip_families(&mut d, None, IPV4);
        assert_eq!(
            errs[0].to_string(),
            "spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services"
        );
        let mut v6 = svc(json!({"spec": {"type": "ClusterIP", "clusterIP": "fd00::5",
            "clusterIPs": ["fd00::5"]}}));
        let errs = init_ip_families(&mut v6, None, IPV4);
        assert_eq!(
            errs[0].to_string(),
            "spec.clusterIPs[0]: Invalid value: []string{\"fd00::5\"}: IPv6 is not configured on this cluster"
        );
        // ExternalName is left alone.
        let mut en = svc(json!({"spec": {"type": "ExternalName"}}));
        assert!(init_ip_families(&mut en, None, IPV4).is_empty());
        assert_eq!(en.spec.unwrap().ip_family_policy, None);
    }
}
