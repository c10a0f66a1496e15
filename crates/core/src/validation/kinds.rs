//! Create validation of the small built-in kinds: Namespace, Node, core/v1 Event and Lease.

use super::errors::{FieldError, FieldPath, go_literal};
use super::meta::{
    finalizer_name_errors, validate_label_name, validate_object_meta, validate_object_meta_generic,
};
use super::names::{
    is_dns1123_label, is_dns1123_subdomain, is_path_segment_name, is_qualified_name,
    is_valid_label_value,
};
use super::resources::quantity_value_errors;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Taint};
use serde_json::Value;
use std::collections::BTreeSet;

/// Taint effects a node taint (and a toleration) may use.
pub(crate) const TAINT_EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// Namespace create validation: cluster-scoped, name is a DNS-1123 label, `spec.finalizers`
/// are qualified or standard names.
pub fn validate_namespace(ns: &Namespace) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&ns.metadata, false, is_dns1123_label);
    let path = FieldPath::new("spec").child("finalizers");
    let finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_deref())
        .unwrap_or_default();
    for finalizer in finalizers {
        errs.extend(finalizer_name_errors(finalizer, &path));
    }
    errs
}

/// Node create validation: cluster-scoped DNS-1123 subdomain name, taints (reported under
/// `metadata.taints`, as Kubernetes does), capacity/allocatable quantities and pod CIDRs.
pub fn validate_node(node: &Node) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&node.metadata, false, is_dns1123_subdomain);
    let spec = node.spec.as_ref();
    let taints = spec.and_then(|s| s.taints.as_deref()).unwrap_or_default();
    errs.extend(validate_node_taints(
        taints,
        &FieldPath::new("metadata").child("taints"),
    ));
    errs.extend(validate_node_resources(node));
    let cidrs = spec
        .and_then(|s| s.pod_cidrs.as_deref())
        .unwrap_or_default();
    errs.extend(validate_pod_cidrs(cidrs));
    errs
}

/// Taint keys are qualified names, values label values, effects one of [`TAINT_EFFECTS`], and
/// each key/effect pair appears once.
pub(crate) fn validate_node_taints(taints: &[Taint], path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen: BTreeSet<(&str, &str)> = BTreeSet::new();
    for (i, taint) in taints.iter().enumerate() {
        let idx = path.index(i);
        errs.extend(validate_label_name(&taint.key, &idx.child("key")));
        let value = taint.value.as_deref().unwrap_or_default();
        let msgs = is_valid_label_value(value);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(
                idx.child("value"),
                value,
                msgs.join(";"),
            ));
        }
        if taint.effect.is_empty() {
            errs.push(FieldError::required(idx.child("effect"), ""));
        } else if !TAINT_EFFECTS.contains(&taint.effect.as_str()) {
            errs.push(FieldError::not_supported(
                idx.child("effect"),
                taint.effect.as_str(),
                &TAINT_EFFECTS,
            ));
        }
        if !seen.insert((taint.key.as_str(), taint.effect.as_str())) {
            errs.push(
                FieldError::duplicate(&idx, go_literal(go_taint(taint)))
                    .with_detail("taints must be unique by key and effect pair"),
            );
        }
    }
    errs
}

/// Go's `%#v` of a `core.Taint`.
fn go_taint(taint: &Taint) -> String {
    let added = match &taint.time_added {
        Some(t) => format!("time.Date({})", t.0),
        None => "<nil>".to_string(),
    };
    format!(
        "core.Taint{{Key:{}, Value:{}, Effect:{}, TimeAdded:{added}}}",
        super::errors::go_quote(&taint.key),
        super::errors::go_quote(taint.value.as_deref().unwrap_or_default()),
        super::errors::go_quote(&taint.effect)
    )
}

fn validate_node_resources(node: &Node) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let status = node.status.as_ref();
    for (field, list) in [
        ("capacity", status.and_then(|s| s.capacity.as_ref())),
        ("allocatable", status.and_then(|s| s.allocatable.as_ref())),
    ] {
        for (name, quantity) in list.into_iter().flatten() {
            let path = FieldPath::new("status").child(field).child(name);
            errs.extend(quantity_value_errors(name, &quantity.0, &path));
        }
    }
    errs
}

fn validate_pod_cidrs(cidrs: &[String]) -> Vec<FieldError> {
    let path = FieldPath::new("spec").child("podCIDRs");
    let mut errs = Vec::new();
    let all = serde_json::to_value(cidrs).unwrap_or(Value::Null);
    for (i, cidr) in cidrs.iter().enumerate() {
        if !is_valid_cidr(cidr) {
            errs.push(FieldError::invalid(
                path.index(i),
                all.clone(),
                "must be valid CIDR",
            ));
        }
    }
    if cidrs.len() > 1 {
        let v4 = cidrs.iter().filter(|c| !c.contains(':')).count();
        if cidrs.len() > 2 || v4 != 1 {
            errs.push(FieldError::invalid(
                &path,
                all.clone(),
                "may specify no more than one CIDR for each IP family",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, cidr) in cidrs.iter().enumerate() {
            if !seen.insert(cidr) {
                errs.push(FieldError::duplicate(path.index(i), cidr.as_str()));
            }
        }
    }
    errs
}

fn is_valid_cidr(cidr: &str) -> bool {
    let Some((ip, bits)) = cidr.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits <= 32,
        Ok(std::net::IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

/// core/v1 Event create validation: the metadata checks every object gets (namespaced, name a
/// valid path segment) plus the legacy event rules of the v1 API: without `eventTime` the event
/// namespace must match `involvedObject.namespace` (or be `default`/empty for cluster-scoped
/// objects); with `eventTime` the reporting fields, action and reason are required and bounded.
///
/// As in the API server, the generic metadata checks only run when the event rules passed.
pub fn validate_event(ev: &Event) -> Vec<FieldError> {
    let errs = legacy_event_errors(ev);
    if !errs.is_empty() {
        return errs;
    }
    validate_object_meta_generic(&ev.metadata, true, is_path_segment_name)
}

fn legacy_event_errors(ev: &Event) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ns = ev.metadata.namespace.as_deref().unwrap_or_default();
    let involved_ns = ev.involved_object.namespace.as_deref().unwrap_or_default();
    let involved_path = FieldPath::new("involvedObject").child("namespace");
    if ev.event_time.is_none() {
        let mismatch = if involved_ns.is_empty() {
            !ns.is_empty() && ns != "default"
        } else {
            ns != involved_ns
        };
        if mismatch {
            errs.push(FieldError::invalid(
                involved_path,
                involved_ns,
                "does not match event.namespace",
            ));
        }
    } else {
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            errs.push(FieldError::invalid(
                involved_path,
                involved_ns,
                "does not match event.namespace",
            ));
        }
        errs.extend(reporting_errors(ev));
    }
    for msg in is_dns1123_subdomain(ns) {
        errs.push(FieldError::invalid("namespace", ns, msg));
    }
    errs
}

/// The checks for events that carry `eventTime` (new-style events written through core/v1).
fn reporting_errors(ev: &Event) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let controller = ev.reporting_component.as_deref().unwrap_or_default();
    if controller.is_empty() {
        errs.push(FieldError::required("reportingController", ""));
    }
    for msg in is_qualified_name(controller) {
        errs.push(FieldError::invalid("reportingController", controller, msg));
    }
    let limited = [
        (
            "reportingInstance",
            ev.reporting_instance.as_deref(),
            128,
            true,
        ),
        ("action", ev.action.as_deref(), 128, true),
        ("reason", ev.reason.as_deref(), 128, true),
        ("message", ev.message.as_deref(), 1024, false),
    ];
    for (field, value, limit, required) in limited {
        let value = value.unwrap_or_default();
        if required && value.is_empty() {
            errs.push(FieldError::required(field, ""));
        }
        if value.len() > limit {
            errs.push(FieldError::invalid(
                field,
                "",
                format!("can have at most {limit} characters"),
            ));
        }
    }
    errs
}

/// Lease create validation (coordination.k8s.io/v1): namespaced DNS-1123 subdomain name,
/// positive `leaseDurationSeconds`, non-negative `leaseTransitions`, a known `strategy`, and
/// `preferredHolder` only together with a strategy.
pub fn validate_lease(lease: &Lease) -> Vec<FieldError> {
    let mut errs = validate_object_meta_generic(&lease.metadata, true, is_dns1123_subdomain);
    let Some(spec) = lease.spec.as_ref() else {
        return errs;
    };
    let path = FieldPath::new("spec");
    if let Some(d) = spec.lease_duration_seconds.filter(|d| *d <= 0) {
        errs.push(FieldError::invalid(
            path.child("leaseDurationSeconds"),
            d,
            "must be greater than 0",
        ));
    }
    if let Some(t) = spec.lease_transitions.filter(|t| *t < 0) {
        errs.push(FieldError::invalid(
            path.child("leaseTransitions"),
            t,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(strategy) = spec.strategy.as_deref() {
        errs.extend(lease_strategy_errors(strategy, &path.child("strategy")));
    }
    let preferred = spec.preferred_holder.as_deref().unwrap_or_default();
    if !preferred.is_empty() && spec.strategy.as_deref().unwrap_or_default().is_empty() {
        errs.push(FieldError::forbidden(
            path.child("preferredHolder"),
            "may only be specified if `strategy` is defined",
        ));
    }
    errs
}

fn lease_strategy_errors(strategy: &str, path: &FieldPath) -> Vec<FieldError> {
    const KNOWN: [&str; 1] = ["OldestEmulationVersion"];
    // Kubernetes reports this under `spec.strategy.strategy` (it appends the child twice).
    let path = path.child("strategy");
    if !strategy.contains('/') {
        if KNOWN.contains(&strategy) {
            return Vec::new();
        }
        return vec![FieldError::not_supported(path, strategy, &KNOWN)];
    }
    is_qualified_name(strategy)
        .into_iter()
        .map(|m| FieldError::invalid(&path, strategy, m))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::api::core::v1::{NamespaceSpec, NodeSpec, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

    fn strings(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| e.to_string()).collect()
    }

    fn named(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        }
    }

    #[test]
    fn namespace_name_is_a_label() {
        let ns = Namespace {
            metadata: named("demo"),
            ..Default::default()
        };
        assert!(validate_namespace(&ns).is_empty());
        let ns = Namespace {
            metadata: named("a.b"),
            spec: Some(NamespaceSpec {
                finalizers: Some(vec!["kubernetes".into(), "bad".into()]),
            }),
            ..Default::default()
        };
        assert_eq!(
            strings(&validate_namespace(&ns)),
            vec![
                "metadata.name: Invalid value: \"a.b\": must not contain dots",
                "spec.finalizers: Invalid value: \"bad\": name is neither a standard finalizer name nor is it fully qualified",
            ]
        );
    }

    #[test]
    fn node_taints() {
        let taint = |k: &str, e: &str| Taint {
            key: k.into(),
            effect: e.into(),
            ..Default::default()
        };
        let node = Node {
            metadata: named("node-1"),
            spec: Some(NodeSpec {
                taints: Some(vec![
                    taint("a", "NoSchedule"),
                    taint("a", "NoSchedule"),
                    taint("b", "Sometimes"),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            strings(&validate_node(&node)),
            vec![
                "metadata.taints[1]: Duplicate value: core.Taint{Key:\"a\", Value:\"\", Effect:\"NoSchedule\", TimeAdded:<nil>}: taints must be unique by key and effect pair",
                "metadata.taints[2].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
            ]
        );
    }

    #[test]
    fn node_is_cluster_scoped_and_checks_cidrs() {
        let mut node = Node {
            metadata: named("node-1"),
            ..Default::default()
        };
        node.metadata.namespace = Some("default".into());
        node.spec = Some(NodeSpec {
            pod_cidrs: Some(vec!["10.0.0.0/24".into(), "nope".into()]),
            ..Default::default()
        });
        assert_eq!(
            strings(&validate_node(&node)),
            vec![
                "metadata.namespace: Forbidden: not allowed on this type",
                "spec.podCIDRs[1]: Invalid value: []string{\"10.0.0.0/24\", \"nope\"}: must be valid CIDR",
                "spec.podCIDRs: Invalid value: []string{\"10.0.0.0/24\", \"nope\"}: may specify no more than one CIDR for each IP family",
            ]
        );
    }

    fn event(ns: &str, involved_ns: &str) -> Event {
        Event {
            metadata: ObjectMeta {
                name: Some("web.1234".into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                kind: Some("Pod".into()),
                name: Some("web".into()),
                namespace: Some(involved_ns.into()),
                ..Default::default()
            },
            reason: Some("Scheduled".into()),
            ..Default::default()
        }
    }

    #[test]
    fn legacy_event_namespace_rules() {
        assert!(validate_event(&event("default", "default")).is_empty());
        assert!(validate_event(&event("default", "")).is_empty());
        assert_eq!(
            strings(&validate_event(&event("other", "default"))),
            vec![
                "involvedObject.namespace: Invalid value: \"default\": does not match event.namespace"
            ]
        );
    }

    #[test]
    fn new_style_event_requires_reporting_fields() {
        let mut ev = event("default", "default");
        ev.event_time = Some(MicroTime("2024-05-01T10:00:00Z".parse().unwrap()));
        assert_eq!(
            strings(&validate_event(&ev)),
            vec![
                "reportingController: Required value",
                "reportingController: Invalid value: \"\": name part must be non-empty",
                "reportingController: Invalid value: \"\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                "reportingInstance: Required value",
                "action: Required value",
            ]
        );
    }

    #[test]
    fn lease_spec() {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some("node-1".into()),
                namespace: Some("kube-node-lease".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                lease_duration_seconds: Some(0),
                holder_identity: Some("node-1".into()),
                preferred_holder: Some("x".into()),
                ..Default::default()
            }),
        };
        assert_eq!(
            strings(&validate_lease(&lease)),
            vec![
                "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
                "spec.preferredHolder: Forbidden: may only be specified if `strategy` is defined",
            ]
        );
    }
}
