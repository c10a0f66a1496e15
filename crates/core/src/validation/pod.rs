//! Pod create validation with Kubernetes' field paths and messages (`ValidatePodCreate` and the
//! parts of `ValidatePodSpec` that matter for hand-written pods). It expects a defaulted pod:
//! like the API server, it reports `Required value` for fields that defaulting fills in.
//!
//! Covered: metadata; containers / initContainers / ephemeralContainers (names, duplicates,
//! image, terminationMessagePolicy, imagePullPolicy, ports, env, envFrom, volumeMounts,
//! volumeDevices, resources, probes, lifecycle, restartPolicy, security-context ID ranges);
//! volumes (names, duplicates, one source, the common sources' required fields); restartPolicy,
//! dnsPolicy, dnsConfig, nodeSelector, pod securityContext (IDs, fsGroupChangePolicy, seccomp,
//! shareProcessNamespace, hostUsers), readinessGates, schedulingGates, serviceAccountName,
//! nodeName, activeDeadlineSeconds, hostname, subdomain, tolerations, hostAliases,
//! priorityClassName, runtimeClassName, preemptionPolicy, overhead, os, host-network ports,
//! host port conflicts, the mirror-pod annotation, and image whitespace.
//!
//! Skipped (accepted without checks): affinity and topologySpreadConstraints, resourceClaims and
//! container resource claims, pod-level resources, resizePolicy, sysctls, the container
//! securityContext beyond user/group ranges (capabilities, privileged, procMount, AppArmor,
//! SELinux, Windows options and the OS-specific field restrictions), volume sources other than
//! emptyDir/hostPath/secret/configMap/persistentVolumeClaim/nfs (only "exactly one source" is
//! checked for them), projected/downwardAPI item details, env `resourceFieldRef.divisor`,
//! mountPropagation/recursiveReadOnly, hugepage sizing, seccomp/AppArmor annotations and the
//! service-account token projection rule. A negative `terminationGracePeriodSeconds` is
//! accepted, as in Kubernetes (which only warns).
//!
//! This file holds the pod-level rules; `pod/containers.rs` the per-container ones and
//! `pod/volumes.rs` the volume ones.

mod containers;
mod volumes;

use super::errors::{FieldError, FieldPath};
use super::kinds::TAINT_EFFECTS;
use super::meta::{id_range_errors, validate_label_name, validate_labels, validate_object_meta};
use super::names::{
    inclusive_range_error, is_dns1123_label, is_dns1123_subdomain,
    is_dns1123_subdomain_with_underscore, is_qualified_name, is_valid_ip, is_valid_label_value,
};
use super::resources::validate_resource_list;
use containers::{
    validate_containers, validate_ephemeral_containers, validate_host_network_ports,
    validate_init_containers,
};
use k8s_openapi::api::core::v1::{Pod, PodDNSConfig, PodSecurityContext, PodSpec, Toleration};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use volumes::validate_volumes;

const IS_NEGATIVE_ERROR: &str = "must be greater than or equal to 0";
const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
const MAX_INT32: i64 = 2_147_483_647;

/// What the rest of the spec needs to know about a (valid) volume.
#[derive(Clone, Copy)]
struct VolumeInfo {
    /// Backed by a PVC (plain or ephemeral): may be used as a block device.
    pvc: bool,
    /// An image volume: subPath is not allowed.
    image: bool,
}

type Volumes = BTreeMap<String, VolumeInfo>;

fn s(o: &Option<String>) -> &str {
    o.as_deref().unwrap_or_default()
}

fn list<T>(o: &Option<Vec<T>>) -> &[T] {
    o.as_deref().unwrap_or_default()
}

/// `ValidatePodCreate`: metadata and spec, plus the create-only rules (no ephemeral containers,
/// no nodeName while scheduling gates remain).
pub(crate) fn validate_pod(pod: &Pod) -> Vec<FieldError> {
    let mut errs = validate_pod_metadata_and_spec(pod);
    let default_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    let path = FieldPath::new("spec");
    if !list(&spec.ephemeral_containers).is_empty() {
        errs.push(FieldError::forbidden(
            path.child("ephemeralContainers"),
            "cannot be set on create",
        ));
    }
    if !s(&spec.node_name).is_empty() && !list(&spec.scheduling_gates).is_empty() {
        errs.push(FieldError::forbidden(
            path.child("nodeName"),
            "cannot be set until all schedulingGates have been cleared",
        ));
    }
    errs
}

/// The checks shared by create and update (`validatePodMetadataAndSpec`).
pub(crate) fn validate_pod_metadata_and_spec(pod: &Pod) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&pod.metadata, true, is_dns1123_subdomain);
    let default_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    if let Some(mirror) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MIRROR_POD_ANNOTATION))
        && s(&spec.node_name).is_empty()
    {
        errs.push(FieldError::invalid(
            FieldPath::new("metadata")
                .child("annotations")
                .key(MIRROR_POD_ANNOTATION),
            mirror.as_str(),
            "must set spec.nodeName if mirror pod annotation is set",
        ));
    }
    let path = FieldPath::new("spec");
    errs.extend(validate_pod_spec(spec, &path));
    for (field, containers) in [
        ("containers", &spec.containers[..]),
        ("initContainers", list(&spec.init_containers)),
    ] {
        for (i, c) in containers.iter().enumerate() {
            let image = s(&c.image);
            if image.len() != image.trim().len() {
                errs.push(FieldError::invalid(
                    path.child(field).index(i).child("image"),
                    image,
                    "must not have leading or trailing whitespace",
                ));
            }
        }
    }
    errs
}

/// `ValidatePodSpec` (the covered subset, in Kubernetes' order).
fn validate_pod_spec(spec: &PodSpec, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if spec.termination_grace_period_seconds.is_none() {
        errs.push(FieldError::required(
            path.child("terminationGracePeriodSeconds"),
            "",
        ));
    }
    let grace = spec.termination_grace_period_seconds;
    let (volumes, volume_errs) = validate_volumes(list(&spec.volumes), &path.child("volumes"));
    errs.extend(volume_errs);
    errs.extend(validate_containers(
        &spec.containers,
        &volumes,
        grace,
        &path.child("containers"),
    ));
    errs.extend(validate_init_containers(
        spec,
        &volumes,
        grace,
        &path.child("initContainers"),
    ));
    errs.extend(validate_ephemeral_containers(
        spec,
        &volumes,
        &path.child("ephemeralContainers"),
    ));
    errs.extend(validate_host_network_ports(spec, path));
    errs.extend(enum_errors(
        s(&spec.restart_policy),
        &["Always", "OnFailure", "Never"],
        &path.child("restartPolicy"),
    ));
    errs.extend(enum_errors(
        s(&spec.dns_policy),
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        &path.child("dnsPolicy"),
    ));
    errs.extend(validate_labels(
        spec.node_selector.as_ref(),
        &path.child("nodeSelector"),
    ));
    errs.extend(validate_pod_security_context(spec, path));
    errs.extend(validate_dns_config(
        spec.dns_config.as_ref(),
        s(&spec.dns_policy),
        &path.child("dnsConfig"),
    ));
    errs.extend(validate_gates(spec, path));
    errs.extend(validate_host_users(spec, path));
    errs.extend(validate_spec_names(spec, path));
    errs.extend(validate_tolerations(
        list(&spec.tolerations),
        &path.child("tolerations"),
    ));
    errs.extend(validate_host_aliases(spec, &path.child("hostAliases")));
    errs.extend(validate_spec_tail(spec, path));
    errs
}

/// An enumerated field: empty is `Required`, anything else unknown is `NotSupported`.
fn enum_errors(value: &str, supported: &[&str], path: &FieldPath) -> Vec<FieldError> {
    if value.is_empty() {
        vec![FieldError::required(path, "")]
    } else if supported.contains(&value) {
        Vec::new()
    } else {
        vec![FieldError::not_supported(path, value, supported)]
    }
}

/// A name that must be a DNS-1123 subdomain (`field.Invalid` per message).
fn subdomain_errors(value: &str, path: &FieldPath) -> Vec<FieldError> {
    is_dns1123_subdomain(value)
        .into_iter()
        .map(|m| FieldError::invalid(path, value, m))
        .collect()
}

fn label_errors(value: &str, path: &FieldPath) -> Vec<FieldError> {
    is_dns1123_label(value)
        .into_iter()
        .map(|m| FieldError::invalid(path, value, m))
        .collect()
}

/// serviceAccountName, nodeName, activeDeadlineSeconds, hostname and subdomain.
fn validate_spec_names(spec: &PodSpec, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (field, value) in [
        ("serviceAccountName", &spec.service_account_name),
        ("nodeName", &spec.node_name),
    ] {
        if !s(value).is_empty() {
            errs.extend(subdomain_errors(s(value), &path.child(field)));
        }
    }
    if let Some(deadline) = spec
        .active_deadline_seconds
        .filter(|d| !(1..=MAX_INT32).contains(d))
    {
        errs.push(FieldError::invalid(
            path.child("activeDeadlineSeconds"),
            deadline,
            inclusive_range_error(1, MAX_INT32),
        ));
    }
    for (field, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if !s(value).is_empty() {
            errs.extend(label_errors(s(value), &path.child(field)));
        }
    }
    errs
}

/// priorityClassName, runtimeClassName, preemptionPolicy, overhead and os.
fn validate_spec_tail(spec: &PodSpec, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !s(&spec.priority_class_name).is_empty() {
        errs.extend(subdomain_errors(
            s(&spec.priority_class_name),
            &path.child("priorityClassName"),
        ));
    }
    if let Some(runtime) = &spec.runtime_class_name {
        errs.extend(subdomain_errors(runtime, &path.child("runtimeClassName")));
    }
    if let Some(policy) = &spec.preemption_policy {
        errs.extend(enum_errors(
            policy,
            &["PreemptLowerPriority", "Never"],
            &path.child("preemptionPolicy"),
        ));
    }
    if let Some(overhead) = &spec.overhead {
        errs.extend(validate_resource_list(
            overhead,
            &path.child("overhead").child("limits"),
        ));
    }
    if let Some(os) = &spec.os {
        if os.name.is_empty() {
            errs.push(FieldError::required(
                path.child("os").child("name"),
                "cannot be empty",
            ));
        } else if !["linux", "windows"].contains(&os.name.as_str()) {
            errs.push(FieldError::not_supported(
                path.child("os"),
                os.name.as_str(),
                &["linux", "windows"],
            ));
        }
    }
    errs
}

fn backstep_errors(p: &str, path: &FieldPath) -> Vec<FieldError> {
    if p.split(['/', '\\']).any(|part| part == "..") {
        vec![FieldError::invalid(path, p, "must not contain '..'")]
    } else {
        Vec::new()
    }
}

/// `validateLocalDescendingPath`: relative, without `..` segments.
fn descending_path_errors(p: &str, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if p.starts_with('/') {
        errs.push(FieldError::invalid(path, p, "must be a relative path"));
    }
    errs.extend(backstep_errors(p, path));
    errs
}

/// A qualified name (`field.Invalid` per message).
fn qualified_name_errors(value: &str, path: &FieldPath) -> Vec<FieldError> {
    is_qualified_name(value)
        .into_iter()
        .map(|m| FieldError::invalid(path, value, m))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Pod-level fields

/// `ValidateTolerations`.
pub(crate) fn validate_tolerations(
    tolerations: &[Toleration],
    path: &FieldPath,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, t) in tolerations.iter().enumerate() {
        let idx = path.index(i);
        let (key, op, value, effect) = (s(&t.key), s(&t.operator), s(&t.value), s(&t.effect));
        if !key.is_empty() {
            errs.extend(validate_label_name(key, &idx.child("key")));
        }
        if key.is_empty() && op != "Exists" {
            errs.push(FieldError::invalid(
                idx.child("operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if t.toleration_seconds.is_some() && effect != "NoExecute" {
            errs.push(FieldError::invalid(
                idx.child("effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            "Equal" | "" => {
                let msgs = is_valid_label_value(value);
                if !msgs.is_empty() {
                    errs.push(FieldError::invalid(
                        idx.child("operator"),
                        value,
                        msgs.join(";"),
                    ));
                }
            }
            "Exists" if !value.is_empty() => errs.push(FieldError::invalid(
                idx.child("operator"),
                value,
                "value must be empty when `operator` is 'Exists'",
            )),
            "Exists" => {}
            other => errs.push(FieldError::not_supported(
                idx.child("operator"),
                other,
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() && !TAINT_EFFECTS.contains(&effect) {
            errs.push(FieldError::not_supported(
                idx.child("effect"),
                effect,
                &TAINT_EFFECTS,
            ));
        }
    }
    errs
}

fn validate_host_aliases(spec: &PodSpec, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, alias) in list(&spec.host_aliases).iter().enumerate() {
        let idx = path.index(i);
        for m in is_valid_ip(&alias.ip) {
            errs.push(FieldError::invalid(idx.child("ip"), alias.ip.as_str(), m));
        }
        for (j, host) in list(&alias.hostnames).iter().enumerate() {
            errs.extend(subdomain_errors(host, &idx.child("hostnames").index(j)));
        }
    }
    errs
}

/// readinessGates and schedulingGates: qualified names; scheduling gates unique.
fn validate_gates(spec: &PodSpec, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, gate) in list(&spec.readiness_gates).iter().enumerate() {
        let p = path.child("readinessGates").index(i).child("conditionType");
        errs.extend(qualified_name_errors(&gate.condition_type, &p));
    }
    let mut seen = BTreeSet::new();
    for (i, gate) in list(&spec.scheduling_gates).iter().enumerate() {
        let p = path.child("schedulingGates").index(i);
        errs.extend(qualified_name_errors(&gate.name, &p));
        if !seen.insert(gate.name.as_str()) {
            errs.push(FieldError::duplicate(&p, gate.name.as_str()));
        }
    }
    errs
}

fn validate_pod_security_context(spec: &PodSpec, path: &FieldPath) -> Vec<FieldError> {
    let Some(sc) = &spec.security_context else {
        return Vec::new();
    };
    let sp = path.child("securityContext");
    let mut errs = Vec::new();
    for (field, value) in [
        ("fsGroup", sc.fs_group),
        ("runAsUser", sc.run_as_user),
        ("runAsGroup", sc.run_as_group),
    ] {
        if let Some(v) = value {
            errs.extend(id_range_errors(v, &sp.child(field)));
        }
    }
    for (g, gid) in list(&sc.supplemental_groups).iter().enumerate() {
        errs.extend(id_range_errors(
            *gid,
            &sp.child("supplementalGroups").index(g),
        ));
    }
    if spec.share_process_namespace == Some(true) && spec.host_pid == Some(true) {
        errs.push(FieldError::invalid(
            sp.child("shareProcessNamespace"),
            true,
            "ShareProcessNamespace and HostPID cannot both be enabled",
        ));
    }
    if let Some(policy) = &sc.fs_group_change_policy
        && policy != "Always"
        && policy != "OnRootMismatch"
    {
        errs.push(FieldError::not_supported(
            sp.child("fsGroupChangePolicy"),
            policy.as_str(),
            &["Always", "OnRootMismatch"],
        ));
    }
    errs.extend(seccomp_errors(sc, &sp.child("seccompProfile")));
    errs
}

fn seccomp_errors(sc: &PodSecurityContext, path: &FieldPath) -> Vec<FieldError> {
    let Some(profile) = &sc.seccomp_profile else {
        return Vec::new();
    };
    const TYPES: [&str; 3] = ["Localhost", "RuntimeDefault", "Unconfined"];
    let mut errs = Vec::new();
    match profile.type_.as_str() {
        "" => errs.push(FieldError::required(
            path.child("type"),
            "type is required when seccompProfile is set",
        )),
        t if !TYPES.contains(&t) => {
            errs.push(FieldError::not_supported(path.child("type"), t, &TYPES))
        }
        _ => {}
    }
    let localhost = profile.localhost_profile.as_deref();
    if profile.type_ == "Localhost" {
        match localhost {
            None => errs.push(FieldError::required(
                path.child("localhostProfile"),
                "must be set when seccomp type is Localhost",
            )),
            Some(p) => errs.extend(descending_path_errors(p, &path.child("localhostProfile"))),
        }
    } else if localhost.is_some() {
        let value = serde_json::to_value(profile).unwrap_or(Value::Null);
        errs.push(FieldError::invalid(
            path.child("localhostProfile"),
            value,
            "can only be set when seccomp type is Localhost",
        ));
    }
    errs
}

/// A pod in its own user namespace may not share the host's network, PID or IPC namespaces.
fn validate_host_users(spec: &PodSpec, path: &FieldPath) -> Vec<FieldError> {
    if spec.host_users != Some(false) {
        return Vec::new();
    }
    let detail = "when `pod.Spec.HostUsers` is false";
    [
        ("hostNetwork", spec.host_network),
        ("HostPID", spec.host_pid),
        ("HostIPC", spec.host_ipc),
    ]
    .into_iter()
    .filter(|(_, v)| *v == Some(true))
    .map(|(field, _)| FieldError::forbidden(path.child(field), detail))
    .collect()
}

fn validate_dns_config(
    config: Option<&PodDNSConfig>,
    policy: &str,
    path: &FieldPath,
) -> Vec<FieldError> {
    if policy == "None" {
        let Some(c) = config else {
            return vec![FieldError::required(
                path,
                "must provide `dnsConfig` when `dnsPolicy` is None",
            )];
        };
        if list(&c.nameservers).is_empty() {
            return vec![FieldError::required(
                path.child("nameservers"),
                "must provide at least one DNS nameserver when `dnsPolicy` is None",
            )];
        }
    }
    let Some(c) = config else {
        return Vec::new();
    };
    let mut errs = Vec::new();
    let nameservers = list(&c.nameservers);
    if nameservers.len() > 3 {
        let value = serde_json::to_value(nameservers).unwrap_or(Value::Null);
        errs.push(FieldError::invalid(
            path.child("nameservers"),
            value,
            "must not have more than 3 nameservers",
        ));
    }
    for (i, ns) in nameservers.iter().enumerate() {
        for m in is_valid_ip(ns) {
            errs.push(FieldError::invalid(
                path.child("nameservers").index(i),
                ns.as_str(),
                m,
            ));
        }
    }
    let searches = list(&c.searches);
    let searches_value = serde_json::to_value(searches).unwrap_or(Value::Null);
    if searches.len() > 32 {
        errs.push(FieldError::invalid(
            path.child("searches"),
            searches_value.clone(),
            "must not have more than 32 search paths",
        ));
    }
    if searches.join(" ").len() > 2048 {
        errs.push(FieldError::invalid(
            path.child("searches"),
            searches_value,
            "must not have more than 2048 characters (including spaces) in the search list",
        ));
    }
    for (i, search) in searches.iter().enumerate() {
        if search == "." {
            continue;
        }
        let trimmed = search.strip_suffix('.').unwrap_or(search);
        for m in is_dns1123_subdomain_with_underscore(trimmed) {
            errs.push(FieldError::invalid(
                path.child("searches").index(i),
                trimmed,
                m,
            ));
        }
    }
    for (i, option) in list(&c.options).iter().enumerate() {
        if s(&option.name).is_empty() {
            errs.push(FieldError::required(
                path.child("options").index(i),
                "must not be empty",
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests;
