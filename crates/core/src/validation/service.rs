//! Service validation (Kubernetes 1.32 `ValidateService`, `ValidateServiceUpdate`,
//! `ValidateServiceStatusUpdate`), and the 422 causes of the cluster IP and node port
//! allocators, with Kubernetes' field paths and wording.
//!
//! The functions expect a defaulted Service whose `clusterIPs` were normalized from `clusterIP`
//! (see `crate::service`).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::errors::{FieldError, FieldPath, go_literal, go_quote};
use super::meta::{validate_labels, validate_object_meta, validate_object_meta_update};
use super::names::{
    is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_qualified_name, is_valid_ip,
    is_valid_port_name, is_valid_port_num,
};
use crate::service::alloc::AllocError;
use crate::service::{
    CLUSTER_IP_NONE, TYPE_CLUSTER_IP, TYPE_EXTERNAL_NAME, TYPE_LOAD_BALANCER, TYPE_NODE_PORT,
};

const SUPPORTED_PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];
const SUPPORTED_TYPES: [&str; 4] = [
    TYPE_CLUSTER_IP,
    TYPE_EXTERNAL_NAME,
    TYPE_LOAD_BALANCER,
    TYPE_NODE_PORT,
];
const SUPPORTED_AFFINITIES: [&str; 2] = ["ClientIP", "None"];
const SUPPORTED_FAMILIES: [&str; 2] = ["IPv4", "IPv6"];
const SUPPORTED_FAMILY_POLICIES: [&str; 3] = ["PreferDualStack", "RequireDualStack", "SingleStack"];
const SUPPORTED_TRAFFIC_POLICIES: [&str; 2] = ["Cluster", "Local"];
/// The longest ClientIP session affinity (one day).
const MAX_CLIENT_IP_AFFINITY_SECONDS: i32 = 86400;
const ONLY_LOAD_BALANCER: &str = "may only be used when `type` is 'LoadBalancer'";

fn text(o: &Option<String>) -> &str {
    o.as_deref().unwrap_or("")
}

fn list(o: &Option<Vec<String>>) -> &[String] {
    o.as_deref().unwrap_or_default()
}

fn spec(svc: &Service) -> ServiceSpec {
    svc.spec.clone().unwrap_or_default()
}

fn is_headless(spec: &ServiceSpec) -> bool {
    list(&spec.cluster_ips) == [CLUSTER_IP_NONE]
}

/// The `IsValidIP` check as a field error list.
fn ip_errors(path: &FieldPath, ip: &str) -> Vec<FieldError> {
    is_valid_ip(ip)
        .into_iter()
        .map(|m| FieldError::invalid(path, ip, m))
        .collect()
}

/// `ValidateNonSpecialIP`: an address a Service or endpoint may point at is not unspecified,
/// loopback, link-local or link-local multicast. `allow_loopback` lifts the loopback rule: on
/// a one-machine skiff cluster the API server and host-runtime pods are reached at 127.0.0.1,
/// which Kubernetes would refuse in Endpoints and EndpointSlices.
pub(crate) fn non_special_ip_errors(
    ip: &str,
    path: &FieldPath,
    allow_loopback: bool,
) -> Vec<FieldError> {
    let Ok(addr) = ip.parse::<std::net::IpAddr>() else {
        return vec![FieldError::invalid(path, ip, "must be a valid IP address")];
    };
    let mut errs = Vec::new();
    if addr.is_unspecified() {
        errs.push(FieldError::invalid(
            path,
            ip,
            format!("may not be unspecified ({ip})"),
        ));
    }
    if addr.is_loopback() && !allow_loopback {
        errs.push(FieldError::invalid(
            path,
            ip,
            "may not be in the loopback range (127.0.0.0/8, ::1/128)",
        ));
    }
    let (link_local, link_local_multicast) = match addr {
        std::net::IpAddr::V4(v4) => (v4.is_link_local(), v4.octets()[..3] == [224, 0, 0]),
        std::net::IpAddr::V6(v6) => {
            let seg = v6.segments()[0];
            (seg & 0xffc0 == 0xfe80, seg & 0xff0f == 0xff02)
        }
    };
    if link_local {
        errs.push(FieldError::invalid(
            path,
            ip,
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)",
        ));
    }
    if link_local_multicast {
        errs.push(FieldError::invalid(
            path,
            ip,
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
        ));
    }
    errs
}

/// `ValidateDNS1123Label` on a field.
pub(crate) fn dns1123_label_errors(path: &FieldPath, value: &str) -> Vec<FieldError> {
    is_dns1123_label(value)
        .into_iter()
        .map(|m| FieldError::invalid(path, value, m))
        .collect()
}

/// `ValidateQualifiedName` on a field.
pub(crate) fn qualified_name_errors(path: &FieldPath, value: &str) -> Vec<FieldError> {
    is_qualified_name(value)
        .into_iter()
        .map(|m| FieldError::invalid(path, value, m))
        .collect()
}

/// A port protocol: required, and TCP, UDP or SCTP.
pub(crate) fn protocol_errors(path: &FieldPath, protocol: &str) -> Vec<FieldError> {
    if protocol.is_empty() {
        vec![FieldError::required(path, "")]
    } else if !SUPPORTED_PROTOCOLS.contains(&protocol) {
        vec![FieldError::not_supported(
            path,
            protocol,
            &SUPPORTED_PROTOCOLS,
        )]
    } else {
        Vec::new()
    }
}

fn not_supported(path: FieldPath, value: &str, supported: &[&str]) -> Vec<FieldError> {
    if supported.contains(&value) {
        Vec::new()
    } else {
        vec![FieldError::not_supported(path, value, supported)]
    }
}

/// Service validation on create (`ValidateService`).
pub fn validate_service(svc: &Service) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&svc.metadata, true, is_dns1035_label);
    let spec = spec(svc);
    let spec_path = FieldPath::new("spec");
    let ty = text(&spec.type_);
    let ports = spec.ports.as_deref().unwrap_or_default();
    let headless = is_headless(&spec);
    if ports.is_empty() && !headless && ty != TYPE_EXTERNAL_NAME {
        errs.push(FieldError::required(spec_path.child("ports"), ""));
    }
    match ty {
        TYPE_LOAD_BALANCER | TYPE_NODE_PORT if headless => {
            errs.push(FieldError::invalid(
                spec_path.child("clusterIPs").index(0),
                CLUSTER_IP_NONE,
                format!("may not be set to 'None' for {ty} services"),
            ));
        }
        TYPE_EXTERNAL_NAME => {
            let forbidden = "may not be set for ExternalName services";
            if !list(&spec.cluster_ips).is_empty() {
                errs.push(FieldError::forbidden(
                    spec_path.child("clusterIPs"),
                    forbidden,
                ));
            }
            if !list(&spec.ip_families).is_empty() {
                errs.push(FieldError::forbidden(
                    spec_path.child("ipFamilies"),
                    forbidden,
                ));
            }
            if spec.ip_family_policy.is_some() {
                errs.push(FieldError::forbidden(
                    spec_path.child("ipFamilyPolicy"),
                    forbidden,
                ));
            }
            // A CNAME may end in a dot.
            let cname = text(&spec.external_name);
            let cname = cname.strip_suffix('.').unwrap_or(cname);
            let path = spec_path.child("externalName");
            if cname.is_empty() {
                errs.push(FieldError::required(path, ""));
            } else {
                for m in is_dns1123_subdomain(cname) {
                    errs.push(FieldError::invalid(&path, cname, m));
                }
            }
        }
        _ => {}
    }
    let ports_path = spec_path.child("ports");
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        errs.extend(service_port_errors(
            port,
            ports.len() > 1,
            &mut names,
            &ports_path.index(i),
        ));
    }
    if let Some(selector) = &spec.selector {
        errs.extend(validate_labels(
            Some(selector),
            &spec_path.child("selector"),
        ));
    }
    let affinity = text(&spec.session_affinity);
    let affinity_path = spec_path.child("sessionAffinity");
    if affinity.is_empty() {
        errs.push(FieldError::required(affinity_path, ""));
    } else {
        errs.extend(not_supported(
            affinity_path,
            affinity,
            &SUPPORTED_AFFINITIES,
        ));
    }
    let config_path = spec_path.child("sessionAffinityConfig");
    match affinity {
        "ClientIP" => errs.extend(client_ip_affinity_errors(&spec, &config_path)),
        "None" if spec.session_affinity_config.is_some() => {
            errs.push(FieldError::forbidden(
                config_path,
                "must not be set when session affinity is None",
            ));
        }
        _ => {}
    }
    errs.extend(validate_service_cluster_ips_related(svc));
    let external_path = spec_path.child("externalIPs");
    for (i, ip) in list(&spec.external_ips).iter().enumerate() {
        let path = external_path.index(i);
        let bad = ip_errors(&path, ip);
        if bad.is_empty() {
            errs.extend(non_special_ip_errors(ip, &path, false));
        } else {
            errs.extend(bad);
        }
    }
    let type_path = spec_path.child("type");
    if ty.is_empty() {
        errs.push(FieldError::required(type_path, ""));
    } else {
        errs.extend(not_supported(type_path, ty, &SUPPORTED_TYPES));
    }
    if ty == TYPE_CLUSTER_IP {
        for (i, port) in ports.iter().enumerate() {
            if port.node_port.unwrap_or(0) != 0 {
                errs.push(FieldError::forbidden(
                    ports_path.index(i).child("nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    // Duplicate node ports and ports, by (protocol, number).
    let mut seen_node_ports = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let np = port.node_port.unwrap_or(0);
        if np == 0 {
            continue;
        }
        if !seen_node_ports.insert((text(&port.protocol).to_string(), np)) {
            errs.push(FieldError::duplicate(
                ports_path.index(i).child("nodePort"),
                np,
            ));
        }
    }
    let mut seen_ports = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let protocol = text(&port.protocol);
        if !seen_ports.insert((protocol.to_string(), port.port)) {
            errs.push(FieldError::duplicate(
                ports_path.index(i),
                go_literal(format!(
                    "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
                    go_quote(protocol),
                    port.port
                )),
            ));
        }
    }
    let ranges = list(&spec.load_balancer_source_ranges);
    if !ranges.is_empty() {
        // Upstream's path really is capitalised here.
        let path = spec_path.child("LoadBalancerSourceRanges");
        if ty != TYPE_LOAD_BALANCER {
            errs.push(FieldError::forbidden(&path, ONLY_LOAD_BALANCER));
        }
        for (i, r) in ranges.iter().enumerate() {
            let r = r.trim();
            if !is_cidr(r) {
                errs.push(FieldError::invalid(
                    path.index(i),
                    r,
                    "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                ));
            }
        }
    }
    if spec.allocate_load_balancer_node_ports.is_some() && ty != TYPE_LOAD_BALANCER {
        errs.push(FieldError::forbidden(
            spec_path.child("allocateLoadBalancerNodePorts"),
            ONLY_LOAD_BALANCER,
        ));
    }
    if ty == TYPE_LOAD_BALANCER && spec.allocate_load_balancer_node_ports.is_none() {
        // Upstream's path lacks `spec.` here.
        errs.push(FieldError::required(
            FieldPath::new("allocateLoadBalancerNodePorts"),
            "",
        ));
    }
    errs.extend(load_balancer_class_errors(&spec, None));
    errs.extend(external_traffic_policy_errors(&spec));
    errs.extend(internal_traffic_policy_errors(&spec));
    if let Some(td) = spec.traffic_distribution.as_deref() {
        errs.extend(not_supported(
            spec_path.child("trafficDistribution"),
            td,
            &["PreferClose"],
        ));
    }
    errs
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, prefix)) = s.split_once('/') else {
        return false;
    };
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    prefix.parse::<u8>().is_ok_and(|p| p <= max) && !prefix.starts_with('+')
}

fn service_port_errors(
    port: &ServicePort,
    require_name: bool,
    names: &mut BTreeSet<String>,
    path: &FieldPath,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = text(&port.name);
    if require_name && name.is_empty() {
        errs.push(FieldError::required(path.child("name"), ""));
    } else if !name.is_empty() {
        errs.extend(dns1123_label_errors(&path.child("name"), name));
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(path.child("name"), name));
        }
    }
    for m in is_valid_port_num(i64::from(port.port)) {
        errs.push(FieldError::invalid(path.child("port"), port.port, m));
    }
    errs.extend(protocol_errors(
        &path.child("protocol"),
        text(&port.protocol),
    ));
    let target_path = path.child("targetPort");
    match &port.target_port {
        Some(IntOrString::String(s)) => {
            for m in is_valid_port_name(s) {
                errs.push(FieldError::invalid(&target_path, s.as_str(), m));
            }
        }
        other => {
            let n = match other {
                Some(IntOrString::Int(n)) => *n,
                _ => 0,
            };
            for m in is_valid_port_num(i64::from(n)) {
                errs.push(FieldError::invalid(&target_path, n, m));
            }
        }
    }
    if let Some(app) = &port.app_protocol {
        errs.extend(qualified_name_errors(&path.child("appProtocol"), app));
    }
    errs
}

fn client_ip_affinity_errors(spec: &ServiceSpec, path: &FieldPath) -> Vec<FieldError> {
    let why = "when session affinity type is ClientIP";
    let Some(config) = &spec.session_affinity_config else {
        return vec![FieldError::required(path, why)];
    };
    let Some(client_ip) = &config.client_ip else {
        return vec![FieldError::required(path.child("clientIP"), why)];
    };
    let timeout_path = path.child("clientIP").child("timeoutSeconds");
    match client_ip.timeout_seconds {
        None => vec![FieldError::required(timeout_path, why)],
        Some(t) if t <= 0 || t > MAX_CLIENT_IP_AFFINITY_SECONDS => vec![FieldError::invalid(
            timeout_path,
            t,
            format!("must be greater than 0 and less than {MAX_CLIENT_IP_AFFINITY_SECONDS}"),
        )],
        Some(_) => Vec::new(),
    }
}

fn load_balancer_class_errors(spec: &ServiceSpec, old: Option<&ServiceSpec>) -> Vec<FieldError> {
    let path = FieldPath::new("spec").child("loadBalancerClass");
    let is_lb = text(&spec.type_) == TYPE_LOAD_BALANCER;
    let mut errs = Vec::new();
    if let Some(old) = old
        && text(&old.type_) == TYPE_LOAD_BALANCER
        && is_lb
        && old.load_balancer_class != spec.load_balancer_class
    {
        let value = spec
            .load_balancer_class
            .as_deref()
            .map_or(serde_json::Value::Null, serde_json::Value::from);
        errs.push(FieldError::invalid(&path, value, "may not change once set"));
    }
    match (&spec.load_balancer_class, is_lb) {
        (Some(class), true) => errs.extend(qualified_name_errors(&path, class)),
        (Some(_), false) => errs.push(FieldError::forbidden(&path, ONLY_LOAD_BALANCER)),
        (None, _) => {}
    }
    errs
}

fn needs_health_check(spec: &ServiceSpec) -> bool {
    text(&spec.type_) == TYPE_LOAD_BALANCER && text(&spec.external_traffic_policy) == "Local"
}

fn external_traffic_policy_errors(spec: &ServiceSpec) -> Vec<FieldError> {
    let spec_path = FieldPath::new("spec");
    let etp_path = spec_path.child("externalTrafficPolicy");
    let etp = text(&spec.external_traffic_policy);
    let mut errs = Vec::new();
    if !crate::service::externally_accessible(spec) {
        if !etp.is_empty() {
            errs.push(FieldError::invalid(
                etp_path,
                etp,
                "may only be set for externally-accessible services",
            ));
        }
    } else if etp.is_empty() {
        errs.push(FieldError::required(etp_path, ""));
    } else {
        errs.extend(not_supported(etp_path, etp, &SUPPORTED_TRAFFIC_POLICIES));
    }
    let hc_path = spec_path.child("healthCheckNodePort");
    let hc = spec.health_check_node_port.unwrap_or(0);
    if !needs_health_check(spec) {
        if hc != 0 {
            errs.push(FieldError::invalid(
                hc_path,
                hc,
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ));
        }
    } else if hc == 0 {
        errs.push(FieldError::required(hc_path, ""));
    } else {
        for m in is_valid_port_num(i64::from(hc)) {
            errs.push(FieldError::invalid(&hc_path, hc, m));
        }
    }
    errs
}

fn internal_traffic_policy_errors(spec: &ServiceSpec) -> Vec<FieldError> {
    let path = FieldPath::new("spec").child("internalTrafficPolicy");
    match &spec.internal_traffic_policy {
        None if matches!(
            text(&spec.type_),
            TYPE_NODE_PORT | TYPE_LOAD_BALANCER | TYPE_CLUSTER_IP
        ) =>
        {
            vec![FieldError::required(path, "")]
        }
        None => Vec::new(),
        Some(p) => not_supported(path, p, &SUPPORTED_TRAFFIC_POLICIES),
    }
}

/// The cluster IP fields checked on their own (`ValidateServiceClusterIPsRelatedFields`), which
/// the API server also runs before allocating: `clusterIPs[0]` matches `clusterIP`, at most two
/// valid addresses (or one `None`), one per family, matching `ipFamilies`, and supported
/// `ipFamilies`/`ipFamilyPolicy` values. Not applied to ExternalName Services.
pub fn validate_service_cluster_ips_related(svc: &Service) -> Vec<FieldError> {
    let spec = spec(svc);
    if text(&spec.type_) == TYPE_EXTERNAL_NAME {
        return Vec::new();
    }
    let spec_path = FieldPath::new("spec");
    let ips_path = spec_path.child("clusterIPs");
    let fam_path = spec_path.child("ipFamilies");
    let ips = list(&spec.cluster_ips);
    let cluster_ip = text(&spec.cluster_ip);
    let mut errs = Vec::new();
    if !cluster_ip.is_empty() {
        if ips.is_empty() {
            errs.push(FieldError::required(&ips_path, ""));
        } else if ips[0] != cluster_ip {
            errs.push(FieldError::invalid(
                &ips_path,
                ips.to_vec(),
                "first value must match `clusterIP`",
            ));
        }
    } else if !ips.is_empty() {
        errs.push(FieldError::invalid(
            &ips_path,
            ips.to_vec(),
            "must be empty when `clusterIP` is not specified",
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, fam) in list(&spec.ip_families).iter().enumerate() {
        if !SUPPORTED_FAMILIES.contains(&fam.as_str()) {
            errs.push(FieldError::not_supported(
                fam_path.index(i),
                fam.as_str(),
                &SUPPORTED_FAMILIES,
            ));
        }
        if !seen.insert(fam) {
            errs.push(FieldError::duplicate(fam_path.index(i), fam.as_str()));
        }
    }
    if let Some(policy) = spec.ip_family_policy.as_deref() {
        errs.extend(not_supported(
            spec_path.child("ipFamilyPolicy"),
            policy,
            &SUPPORTED_FAMILY_POLICIES,
        ));
    }
    let mut invalid_ips = false;
    for (i, ip) in ips.iter().enumerate() {
        if i == 0 && ip == CLUSTER_IP_NONE {
            if ips.len() > 1 {
                invalid_ips = true;
                errs.push(FieldError::invalid(
                    &ips_path,
                    ips.to_vec(),
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        let bad = ip_errors(&ips_path.index(i), ip);
        invalid_ips |= !bad.is_empty();
        errs.extend(bad);
    }
    if ips.len() > 2 {
        errs.push(FieldError::invalid(
            &ips_path,
            ips.to_vec(),
            "may only hold up to 2 values",
        ));
    }
    if invalid_ips {
        return errs;
    }
    if ips.len() > 1 {
        let v6 = ips.iter().filter(|ip| ip.contains(':')).count();
        if ips.len() != 2 || v6 != 1 {
            errs.push(FieldError::invalid(
                &ips_path,
                ips.to_vec(),
                "may specify no more than one IP for each IP family",
            ));
        }
    }
    if !is_headless(&spec) {
        for (i, (ip, fam)) in ips.iter().zip(list(&spec.ip_families)).enumerate() {
            let v6 = ip.contains(':');
            if fam == "IPv4" && v6 {
                errs.push(FieldError::invalid(
                    ips_path.index(i),
                    ip.as_str(),
                    format!("expected an IPv4 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
            if fam == "IPv6" && !v6 {
                errs.push(FieldError::invalid(
                    ips_path.index(i),
                    ip.as_str(),
                    format!("expected an IPv6 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
        }
    }
    errs
}

/// Service validation on update (`ValidateServiceUpdate`): the metadata rules, cluster IPs and
/// the primary IP family may not change once set (except to or from ExternalName), the
/// load-balancer class and the health-check node port are fixed, then [`validate_service`].
pub fn validate_service_update(new: &Service, old: &Service) -> Vec<FieldError> {
    let mut errs = validate_object_meta_update(&new.metadata, &old.metadata);
    let (ns, os) = (spec(new), spec(old));
    let external = |s: &ServiceSpec| text(&s.type_) == TYPE_EXTERNAL_NAME;
    let ips_path = FieldPath::new("spec").child("clusterIPs");
    let fam_path = FieldPath::new("spec").child("ipFamilies");
    let policy_path = FieldPath::new("spec").child("ipFamilyPolicy");
    let single_stack = ns.ip_family_policy.as_deref() == Some("SingleStack");
    let policy_value = || {
        ns.ip_family_policy
            .as_deref()
            .map_or(serde_json::Value::Null, serde_json::Value::from)
    };
    let (new_ips, old_ips) = (list(&ns.cluster_ips), list(&os.cluster_ips));
    let both_headless = is_headless(&ns) && is_headless(&os);
    if !(external(&ns) || external(&os) || both_headless) {
        let changed = "may not change once set";
        if new_ips.len() == old_ips.len() {
            for (i, ip) in old_ips.iter().enumerate() {
                if *ip != new_ips[i] {
                    errs.push(FieldError::invalid(
                        ips_path.index(i),
                        new_ips.to_vec(),
                        changed,
                    ));
                }
            }
        } else if new_ips.len() < old_ips.len() {
            if new_ips.is_empty() {
                errs.push(FieldError::invalid(
                    ips_path.index(0),
                    new_ips.to_vec(),
                    "primary clusterIP can not be unset",
                ));
            }
            if !old_ips.is_empty() && !new_ips.is_empty() && new_ips[0] != old_ips[0] {
                errs.push(FieldError::invalid(
                    ips_path.index(0),
                    new_ips.to_vec(),
                    changed,
                ));
            }
            if new_ips.len() == 1 && !single_stack {
                errs.push(FieldError::invalid(
                    &policy_path,
                    policy_value(),
                    "must be set to 'SingleStack' when releasing the secondary clusterIP",
                ));
            }
        } else if !old_ips.is_empty() && new_ips[0] != old_ips[0] {
            errs.push(FieldError::invalid(
                ips_path.index(0),
                new_ips.to_vec(),
                changed,
            ));
        }
    }
    let (new_fams, old_fams) = (list(&ns.ip_families), list(&os.ip_families));
    if !external(&ns) && !external(&os) && is_headless(&ns) == is_headless(&os) && !is_headless(&ns)
    {
        let changed = "may not change once set";
        if new_fams.len() == old_fams.len() {
            for (i, fam) in old_fams.iter().enumerate() {
                if *fam != new_fams[i] {
                    errs.push(FieldError::invalid(
                        fam_path.index(0),
                        new_fams.to_vec(),
                        changed,
                    ));
                }
            }
        } else if new_fams.len() < old_fams.len() {
            if new_ips.is_empty() {
                errs.push(FieldError::invalid(
                    fam_path.index(0),
                    new_fams.to_vec(),
                    "primary ipFamily can not be unset",
                ));
            }
            if !new_fams.is_empty() && new_fams[0] != old_fams[0] {
                errs.push(FieldError::invalid(
                    fam_path.index(0),
                    new_ips.to_vec(),
                    changed,
                ));
            }
            if new_fams.len() == 1 && !single_stack {
                errs.push(FieldError::invalid(
                    &policy_path,
                    policy_value(),
                    "must be set to 'SingleStack' when releasing the secondary ipFamily",
                ));
            }
        } else if !old_fams.is_empty() && !new_fams.is_empty() && new_fams[0] != old_fams[0] {
            errs.push(FieldError::invalid(
                fam_path.index(0),
                new_ips.to_vec(),
                changed,
            ));
        }
    }
    // The class is checked again (create rules) by validate_service below.
    errs.extend(
        load_balancer_class_errors(&ns, Some(&os))
            .into_iter()
            .filter(|e| e.detail == "may not change once set"),
    );
    if needs_health_check(&os)
        && needs_health_check(&ns)
        && ns.health_check_node_port != os.health_check_node_port
    {
        errs.push(FieldError::forbidden(
            FieldPath::new("spec").child("healthCheckNodePort"),
            "field is immutable",
        ));
    }
    errs.extend(validate_service(new));
    errs
}

/// Validation of a `services/status` write (`ValidateServiceStatusUpdate`): the metadata rules
/// and `status.loadBalancer`, whose ingress only a LoadBalancer Service may have.
pub fn validate_service_status_update(new: &Service, old: &Service) -> Vec<FieldError> {
    let mut errs = validate_object_meta_update(&new.metadata, &old.metadata);
    let ingress_path = FieldPath::new("status")
        .child("loadBalancer")
        .child("ingress");
    let ingress = new
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default();
    if text(&spec(new).type_) != TYPE_LOAD_BALANCER && !ingress.is_empty() {
        errs.push(FieldError::forbidden(
            ingress_path,
            "may only be used when `spec.type` is 'LoadBalancer'",
        ));
        return errs;
    }
    for (i, ing) in ingress.iter().enumerate() {
        let path = ingress_path.index(i);
        let ip = text(&ing.ip);
        if !ip.is_empty() {
            errs.extend(ip_errors(&path.child("ip"), ip));
        }
        match (&ing.ip_mode, ip.is_empty()) {
            (None, false) => errs.push(FieldError::required(
                path.child("ipMode"),
                "must be specified when `ip` is set",
            )),
            (Some(_), true) => errs.push(FieldError::forbidden(
                path.child("ipMode"),
                "may not be specified when `ip` is not set",
            )),
            (Some(mode), false) => {
                errs.extend(not_supported(path.child("ipMode"), mode, &["Proxy", "VIP"]))
            }
            (None, true) => {}
        }
        let host = text(&ing.hostname);
        if !host.is_empty() {
            for m in is_dns1123_subdomain(host) {
                errs.push(FieldError::invalid(path.child("hostname"), host, m));
            }
            if host.parse::<std::net::IpAddr>().is_ok() {
                errs.push(FieldError::invalid(
                    path.child("hostname"),
                    host,
                    "must be a DNS name, not an IP address",
                ));
            }
        }
    }
    errs
}

/// The 422 cause when a requested cluster IP cannot be allocated: the whole `clusterIPs` list
/// is the value, as upstream reports it.
pub fn cluster_ip_allocation_error(
    cluster_ips: &[String],
    ip: &str,
    why: AllocError,
    range: &str,
) -> FieldError {
    let reason = match why {
        AllocError::NotInRange => {
            format!("provided IP is not in the valid range. The range of valid IPs is {range}")
        }
        AllocError::Allocated => "provided IP is already allocated".to_string(),
        AllocError::Full => "range is full".to_string(),
    };
    FieldError::invalid(
        FieldPath::new("spec").child("clusterIPs"),
        cluster_ips.to_vec(),
        format!("failed to allocate IP {ip}: {reason}"),
    )
}

/// The 422 cause when a requested node port cannot be allocated.
pub fn node_port_allocation_error(
    index: usize,
    port: i32,
    why: AllocError,
    range: &str,
) -> FieldError {
    let reason = match why {
        AllocError::NotInRange => {
            format!("provided port is not in the valid range. The range of valid ports is {range}")
        }
        AllocError::Allocated => "provided port is already allocated".to_string(),
        AllocError::Full => "range is full".to_string(),
    };
    FieldError::invalid(
        FieldPath::new("spec")
            .child("ports")
            .index(index)
            .child("nodePort"),
        port,
        reason,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        let mut s: Service = serde_json::from_value(v).unwrap();
        crate::service::default_service(&mut s);
        crate::service::normalize_cluster_ips(&mut s, None);
        s
    }

    fn msgs(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| e.to_string()).collect()
    }

    fn base(spec: serde_json::Value) -> serde_json::Value {
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn a_defaulted_service_is_valid() {
        let s = svc(base(
            json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}),
        ));
        assert!(
            validate_service(&s).is_empty(),
            "{:?}",
            msgs(&validate_service(&s))
        );
        let np = svc(base(
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
        ));
        assert!(validate_service(&np).is_empty());
        let headless = svc(base(json!({"clusterIP": "None"})));
        assert!(validate_service(&headless).is_empty());
        let en = svc(base(
            json!({"type": "ExternalName", "externalName": "db.example.com."}),
        ));
        assert!(
            validate_service(&en).is_empty(),
            "{:?}",
            msgs(&validate_service(&en))
        );
    }

    #[test]
    fn port_rules() {
        let s = svc(base(json!({"ports": [
            {"port": 80},
            {"name": "web", "port": 0, "protocol": "ICMP", "targetPort": "Bad_Name"},
            {"name": "web", "port": 80, "targetPort": 70000},
        ]})));
        let m = msgs(&validate_service(&s));
        assert!(
            m.contains(&"spec.ports[0].name: Required value".to_string()),
            "{m:?}"
        );
        assert!(
            m.contains(
                &"spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive"
                    .to_string()
            )
        );
        assert!(m.contains(&"spec.ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"".to_string()));
        assert!(m.contains(&"spec.ports[1].targetPort: Invalid value: \"Bad_Name\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string()), "{m:?}");
        assert!(m.contains(&"spec.ports[2].name: Duplicate value: \"web\"".to_string()));
        assert!(m.contains(&"spec.ports[2].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive".to_string()));
        assert!(m.contains(&"spec.ports[2]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}".to_string()), "{m:?}");
        let none = svc(base(json!({})));
        assert_eq!(
            msgs(&validate_service(&none)),
            ["spec.ports: Required value"]
        );
    }

    #[test]
    fn type_rules() {
        let s = svc(base(
            json!({"type": "ClusterIP", "ports": [{"port": 80, "nodePort": 30001}]}),
        ));
        assert_eq!(
            msgs(&validate_service(&s)),
            ["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
        );
        let s = svc(base(
            json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]}),
        ));
        assert_eq!(
            msgs(&validate_service(&s)),
            [
                "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services"
            ]
        );
        let s = svc(base(
            json!({"type": "ExternalName", "clusterIP": "10.96.0.9"}),
        ));
        assert_eq!(
            msgs(&validate_service(&s)),
            [
                "spec.clusterIPs: Forbidden: may not be set for ExternalName services",
                "spec.externalName: Required value"
            ]
        );
        let s = svc(base(json!({"type": "Weird", "ports": [{"port": 80}]})));
        let m = msgs(&validate_service(&s));
        assert!(m.contains(&"spec.type: Unsupported value: \"Weird\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"".to_string()), "{m:?}");
        let s = svc(base(
            json!({"ports": [{"port": 80}], "clusterIP": "banana"}),
        ));
        assert_eq!(
            msgs(&validate_service(&s)),
            [
                "spec.clusterIPs[0]: Invalid value: \"banana\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
            ]
        );
    }

    #[test]
    fn metadata_and_selector() {
        let s = svc(json!({"metadata": {"name": "1web", "namespace": "default"},
            "spec": {"ports": [{"port": 80}], "selector": {"app": "bad value"}}}));
        let m = msgs(&validate_service(&s));
        assert!(
            m[0].starts_with("metadata.name: Invalid value: \"1web\": a DNS-1035 label"),
            "{m:?}"
        );
        assert!(
            m[1].starts_with("spec.selector: Invalid value: \"bad value\": a valid label"),
            "{m:?}"
        );
    }

    #[test]
    fn cluster_ip_may_not_change() {
        let mut old = svc(base(
            json!({"ports": [{"port": 80}], "clusterIP": "10.96.0.10"}),
        ));
        old.metadata.resource_version = Some("5".into());
        let mut new = old.clone();
        let s = new.spec.as_mut().unwrap();
        s.cluster_ip = Some("10.96.0.11".into());
        crate::service::normalize_cluster_ips(&mut new, Some(&old));
        assert_eq!(
            msgs(&validate_service_update(&new, &old)),
            [
                "spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.11\"}: may not change once set"
            ]
        );
        // Moving to ExternalName may drop it.
        let mut en = old.clone();
        let s = en.spec.as_mut().unwrap();
        s.type_ = Some("ExternalName".into());
        s.external_name = Some("x.example".into());
        s.internal_traffic_policy = None;
        crate::service::drop_type_dependent_fields(&mut en, &old);
        assert!(
            validate_service_update(&en, &old).is_empty(),
            "{:?}",
            msgs(&validate_service_update(&en, &old))
        );
    }

    #[test]
    fn allocation_errors_read_like_upstream() {
        let e = cluster_ip_allocation_error(
            &["10.0.0.1".into()],
            "10.0.0.1",
            AllocError::NotInRange,
            "10.96.0.0/12",
        );
        assert_eq!(
            e.to_string(),
            "spec.clusterIPs: Invalid value: []string{\"10.0.0.1\"}: failed to allocate IP 10.0.0.1: provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12"
        );
        let e = node_port_allocation_error(0, 8080, AllocError::NotInRange, "30000-32767");
        assert_eq!(
            e.to_string(),
            "spec.ports[0].nodePort: Invalid value: 8080: provided port is not in the valid range. The range of valid ports is 30000-32767"
        );
        let e = node_port_allocation_error(1, 30080, AllocError::Allocated, "30000-32767");
        assert_eq!(
            e.to_string(),
            "spec.ports[1].nodePort: Invalid value: 30080: provided port is already allocated"
        );
    }

    #[test]
    fn load_balancer_status() {
        let old = svc(base(json!({"type": "ClusterIP", "ports": [{"port": 80}]})));
        let mut new = old.clone();
        new.metadata.resource_version = Some("7".into());
        new.status =
            serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}))
                .unwrap();
        assert_eq!(
            msgs(&validate_service_status_update(&new, &old)),
            [
                "status.loadBalancer.ingress: Forbidden: may only be used when `spec.type` is 'LoadBalancer'"
            ]
        );
    }

    #[test]
    fn special_ips() {
        let p = FieldPath::new("x");
        assert!(non_special_ip_errors("10.0.0.1", &p, false).is_empty());
        assert_eq!(non_special_ip_errors("127.0.0.1", &p, false).len(), 1);
        assert!(non_special_ip_errors("127.0.0.1", &p, true).is_empty());
        assert_eq!(
            non_special_ip_errors("0.0.0.0", &p, false)[0].to_string(),
            "x: Invalid value: \"0.0.0.0\": may not be unspecified (0.0.0.0)"
        );
        assert_eq!(non_special_ip_errors("169.254.1.1", &p, false).len(), 1);
        assert_eq!(non_special_ip_errors("224.0.0.5", &p, false).len(), 1);
        assert_eq!(non_special_ip_errors("fe80::1", &p, false).len(), 1);
    }
}
