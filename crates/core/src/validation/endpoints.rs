//! Validation of Endpoints (core/v1, `ValidateEndpoints`) and EndpointSlices
//! (discovery.k8s.io/v1, `ValidateEndpointSlice`), create and update, with Kubernetes' paths
//! and messages.
//!
//! One deliberate difference: loopback addresses are accepted. Kubernetes refuses them in both
//! kinds, but on a one-machine skiff cluster the API server's advertised address and the pods of
//! the host runtime are 127.0.0.1, and those are exactly what the `kubernetes` Service and the
//! endpoints controller publish.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, Endpoints};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::errors::{FieldError, FieldPath};
use super::meta::{validate_labels, validate_object_meta, validate_object_meta_update};
use super::names::{is_dns1123_label, is_dns1123_subdomain, is_valid_ip, is_valid_port_num};
use super::service::{
    dns1123_label_errors, non_special_ip_errors, protocol_errors, qualified_name_errors,
};

/// Address types an EndpointSlice may be created with.
const ADDRESS_TYPES: [&str; 3] = ["FQDN", "IPv4", "IPv6"];
/// On update the deprecated `IP` type is accepted too.
const ADDRESS_TYPES_UPDATE: [&str; 4] = ["FQDN", "IP", "IPv4", "IPv6"];
const MAX_ENDPOINTS: usize = 1000;
const MAX_ADDRESSES: usize = 100;
const MAX_PORTS: usize = 100;
const MAX_TOPOLOGY_LABELS: usize = 16;

fn node_name_errors(path: &FieldPath, name: &str) -> Vec<FieldError> {
    is_dns1123_subdomain(name)
        .into_iter()
        .map(|m| FieldError::invalid(path, name, m))
        .collect()
}

/// Endpoints validation (`ValidateEndpoints`): a DNS-1123 subdomain name, and every subset with
/// at least one address, valid addresses and valid ports.
pub fn validate_endpoints(ep: &Endpoints) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&ep.metadata, true, is_dns1123_subdomain);
    let subsets_path = FieldPath::new("subsets");
    for (i, ss) in ep.subsets.iter().flatten().enumerate() {
        let path = subsets_path.index(i);
        let addresses = ss.addresses.as_deref().unwrap_or_default();
        let not_ready = ss.not_ready_addresses.as_deref().unwrap_or_default();
        if addresses.is_empty() && not_ready.is_empty() {
            errs.push(FieldError::required(
                &path,
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for (j, a) in addresses.iter().enumerate() {
            errs.extend(address_errors(a, &path.child("addresses").index(j)));
        }
        for (j, a) in not_ready.iter().enumerate() {
            errs.extend(address_errors(a, &path.child("notReadyAddresses").index(j)));
        }
        let ports = ss.ports.as_deref().unwrap_or_default();
        for (j, p) in ports.iter().enumerate() {
            errs.extend(port_errors(
                p,
                ports.len() > 1,
                &path.child("ports").index(j),
            ));
        }
    }
    errs
}

/// Endpoints update: the metadata rules, then [`validate_endpoints`].
pub fn validate_endpoints_update(new: &Endpoints, old: &Endpoints) -> Vec<FieldError> {
    let mut errs = validate_object_meta_update(&new.metadata, &old.metadata);
    errs.extend(validate_endpoints(new));
    errs
}

fn address_errors(a: &EndpointAddress, path: &FieldPath) -> Vec<FieldError> {
    let ip_path = path.child("ip");
    let mut errs: Vec<FieldError> = is_valid_ip(&a.ip)
        .into_iter()
        .map(|m| FieldError::invalid(&ip_path, a.ip.as_str(), m))
        .collect();
    if let Some(h) = a.hostname.as_deref().filter(|h| !h.is_empty()) {
        errs.extend(dns1123_label_errors(&path.child("hostname"), h));
    }
    if let Some(n) = &a.node_name {
        errs.extend(node_name_errors(&path.child("nodeName"), n));
    }
    errs.extend(non_special_ip_errors(&a.ip, &ip_path, true));
    errs
}

fn port_errors(p: &EndpointPort, require_name: bool, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = p.name.as_deref().unwrap_or("");
    if require_name && name.is_empty() {
        errs.push(FieldError::required(path.child("name"), ""));
    } else if !name.is_empty() {
        errs.extend(dns1123_label_errors(&path.child("name"), name));
    }
    for m in is_valid_port_num(i64::from(p.port)) {
        errs.push(FieldError::invalid(path.child("port"), p.port, m));
    }
    errs.extend(protocol_errors(
        &path.child("protocol"),
        p.protocol.as_deref().unwrap_or(""),
    ));
    if let Some(app) = &p.app_protocol {
        errs.extend(qualified_name_errors(&path.child("appProtocol"), app));
    }
    errs
}

fn slice_errors(slice: &EndpointSlice, address_types: &[&str]) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&slice.metadata, true, is_dns1123_subdomain);
    let at = slice.address_type.as_str();
    let at_path = FieldPath::new("addressType");
    if at.is_empty() {
        errs.push(FieldError::required(at_path, ""));
    } else if !address_types.contains(&at) {
        errs.push(FieldError::not_supported(at_path, at, address_types));
    }
    let eps_path = FieldPath::new("endpoints");
    if slice.endpoints.len() > MAX_ENDPOINTS {
        errs.push(FieldError::too_many(
            eps_path,
            Some(slice.endpoints.len()),
            Some(MAX_ENDPOINTS),
        ));
    } else {
        for (i, ep) in slice.endpoints.iter().enumerate() {
            let path = eps_path.index(i);
            let addr_path = path.child("addresses");
            if ep.addresses.is_empty() {
                errs.push(FieldError::required(
                    &addr_path,
                    "must contain at least 1 address",
                ));
            } else if ep.addresses.len() > MAX_ADDRESSES {
                errs.push(FieldError::too_many(
                    &addr_path,
                    Some(ep.addresses.len()),
                    Some(MAX_ADDRESSES),
                ));
            }
            for (j, a) in ep.addresses.iter().enumerate() {
                errs.extend(slice_address_errors(at, a, &addr_path.index(j)));
            }
            if let Some(n) = &ep.node_name {
                errs.extend(node_name_errors(&path.child("nodeName"), n));
            }
            let topo_path = path.child("deprecatedTopology");
            if let Some(topo) = &ep.deprecated_topology {
                if topo.len() > MAX_TOPOLOGY_LABELS {
                    errs.push(FieldError::too_many(
                        &topo_path,
                        Some(topo.len()),
                        Some(MAX_TOPOLOGY_LABELS),
                    ));
                }
                errs.extend(validate_labels(Some(topo), &topo_path));
            }
            if let Some(h) = &ep.hostname {
                errs.extend(dns1123_label_errors(&path.child("hostname"), h));
            }
        }
    }
    let ports_path = FieldPath::new("ports");
    let ports = slice.ports.as_deref().unwrap_or_default();
    if ports.len() > MAX_PORTS {
        errs.push(FieldError::too_many(
            ports_path,
            Some(ports.len()),
            Some(MAX_PORTS),
        ));
        return errs;
    }
    let mut names = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let path = ports_path.index(i);
        let name = p.name.as_deref().unwrap_or("");
        if !name.is_empty() {
            errs.extend(dns1123_label_errors(&path.child("name"), name));
        }
        if !names.insert(name) {
            errs.push(FieldError::duplicate(path.child("name"), name));
        }
        match p.protocol.as_deref() {
            None => errs.push(FieldError::required(path.child("protocol"), "")),
            Some(proto) if !["SCTP", "TCP", "UDP"].contains(&proto) => {
                errs.push(FieldError::not_supported(
                    path.child("protocol"),
                    proto,
                    &["SCTP", "TCP", "UDP"],
                ));
            }
            Some(_) => {}
        }
        if let Some(app) = &p.app_protocol {
            errs.extend(qualified_name_errors(&path.child("appProtocol"), app));
        }
    }
    errs
}

fn slice_address_errors(address_type: &str, a: &str, path: &FieldPath) -> Vec<FieldError> {
    match address_type {
        "IP" => is_valid_ip(a)
            .into_iter()
            .map(|m| FieldError::invalid(path, a, m))
            .collect(),
        "IPv4" | "IPv6" => {
            let ok = match address_type {
                "IPv4" => a.parse::<std::net::Ipv4Addr>().is_ok(),
                _ => a.parse::<std::net::Ipv6Addr>().is_ok(),
            };
            let mut errs = Vec::new();
            if !ok {
                errs.push(FieldError::invalid(
                    path,
                    a,
                    format!("must be a valid {address_type} address"),
                ));
            }
            errs.extend(non_special_ip_errors(a, path, true));
            errs
        }
        "FQDN" => fqdn_errors(a, path),
        _ => Vec::new(),
    }
}

/// `IsFullyQualifiedDomainName`: a DNS-1123 subdomain of at least two labels (a trailing dot is
/// allowed).
fn fqdn_errors(name: &str, path: &FieldPath) -> Vec<FieldError> {
    if name.is_empty() {
        return vec![FieldError::required(path, "")];
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let sub = is_dns1123_subdomain(name);
    if !sub.is_empty() {
        return vec![FieldError::invalid(path, name, sub.join(","))];
    }
    if name.split('.').count() < 2 {
        return vec![FieldError::invalid(
            path,
            name,
            "should be a domain with at least two segments separated by dots",
        )];
    }
    for label in name.split('.') {
        let errs = is_dns1123_label(label);
        if !errs.is_empty() {
            return vec![FieldError::invalid(path, label, errs.join(","))];
        }
    }
    Vec::new()
}

/// EndpointSlice validation on create (`ValidateEndpointSliceCreate`): a DNS-1123 subdomain
/// name, `addressType` IPv4, IPv6 or FQDN, at most 1000 endpoints of 1 to 100 addresses of that
/// type, and at most 100 uniquely named ports.
pub fn validate_endpoint_slice(slice: &EndpointSlice) -> Vec<FieldError> {
    slice_errors(slice, &ADDRESS_TYPES)
}

/// EndpointSlice update: the metadata rules, the create rules (the deprecated `IP` address type
/// allowed), and `addressType` is immutable.
pub fn validate_endpoint_slice_update(new: &EndpointSlice, old: &EndpointSlice) -> Vec<FieldError> {
    let mut errs = validate_object_meta_update(&new.metadata, &old.metadata);
    errs.extend(slice_errors(new, &ADDRESS_TYPES_UPDATE));
    if new.address_type != old.address_type {
        errs.push(FieldError::invalid(
            FieldPath::new("addressType"),
            new.address_type.as_str(),
            "field is immutable",
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgs(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| e.to_string()).collect()
    }

    fn endpoints(subsets: serde_json::Value) -> Endpoints {
        let mut ep: Endpoints = serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "default"}, "subsets": subsets}),
        )
        .unwrap();
        crate::service::default_endpoints(&mut ep);
        ep
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        let mut base = json!({"metadata": {"name": "web-abc", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "web"}}, "addressType": "IPv4", "endpoints": []});
        for (k, val) in v.as_object().unwrap() {
            base[k] = val.clone();
        }
        let mut s: EndpointSlice = serde_json::from_value(base).unwrap();
        crate::service::default_endpoint_slice(&mut s);
        s
    }

    #[test]
    fn valid_endpoints() {
        let ep = endpoints(
            json!([{"addresses": [{"ip": "10.244.0.5"}, {"ip": "127.0.0.1"}],
            "notReadyAddresses": [{"ip": "10.244.0.6", "nodeName": "node-1"}],
            "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}]}]),
        );
        assert!(
            validate_endpoints(&ep).is_empty(),
            "{:?}",
            msgs(&validate_endpoints(&ep))
        );
    }

    #[test]
    fn endpoints_rules() {
        let ep = endpoints(json!([
            {"ports": [{"port": 80}]},
            {"addresses": [{"ip": "10.0.0"}, {"ip": "0.0.0.0"}],
             "ports": [{"port": 70000, "protocol": "ICMP"}, {"name": "Bad", "port": 80}]}]));
        assert_eq!(
            msgs(&validate_endpoints(&ep)),
            [
                "subsets[0]: Required value: must specify `addresses` or `notReadyAddresses`",
                "subsets[1].addresses[0].ip: Invalid value: \"10.0.0\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                "subsets[1].addresses[0].ip: Invalid value: \"10.0.0\": must be a valid IP address",
                "subsets[1].addresses[1].ip: Invalid value: \"0.0.0.0\": may not be unspecified (0.0.0.0)",
                "subsets[1].ports[0].name: Required value",
                "subsets[1].ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "subsets[1].ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "subsets[1].ports[1].name: Invalid value: \"Bad\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            ]
        );
    }

    #[test]
    fn valid_slice() {
        let s = slice(json!({"endpoints": [{"addresses": ["10.244.0.5"],
            "conditions": {"ready": true}, "nodeName": "node-1"}],
            "ports": [{"name": "http", "port": 8080}]}));
        assert!(
            validate_endpoint_slice(&s).is_empty(),
            "{:?}",
            msgs(&validate_endpoint_slice(&s))
        );
        let fqdn =
            slice(json!({"addressType": "FQDN", "endpoints": [{"addresses": ["db.example.com"]}]}));
        assert!(validate_endpoint_slice(&fqdn).is_empty());
    }

    #[test]
    fn slice_rules() {
        let s = slice(json!({"addressType": "IP"}));
        assert_eq!(
            msgs(&validate_endpoint_slice(&s)),
            [
                "addressType: Unsupported value: \"IP\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""
            ]
        );
        let s = slice(
            json!({"endpoints": [{"addresses": []}, {"addresses": ["fd00::1"]}],
            "ports": [{"name": "a", "port": 1}, {"name": "a", "port": 2, "protocol": "ICMP"}]}),
        );
        assert_eq!(
            msgs(&validate_endpoint_slice(&s)),
            [
                "endpoints[0].addresses: Required value: must contain at least 1 address",
                "endpoints[1].addresses[0]: Invalid value: \"fd00::1\": must be a valid IPv4 address",
                "ports[1].name: Duplicate value: \"a\"",
                "ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            ]
        );
        let many: Vec<serde_json::Value> = (0..1001)
            .map(|_| json!({"addresses": ["10.0.0.1"]}))
            .collect();
        let s = slice(json!({"endpoints": many}));
        assert_eq!(
            msgs(&validate_endpoint_slice(&s)),
            ["endpoints: Too many: 1001: must have at most 1000 items"]
        );
        let old = slice(json!({}));
        let mut new = slice(json!({"addressType": "IPv6"}));
        new.metadata.resource_version = Some("3".into());
        assert_eq!(
            msgs(&validate_endpoint_slice_update(&new, &old)),
            ["addressType: Invalid value: \"IPv6\": field is immutable"]
        );
    }
}
