//! Container validation shared by regular, init and ephemeral containers: names, image,
//! ports, environment, volume mounts and devices, resources, probes and lifecycle hooks.

use super::{
    IS_NEGATIVE_ERROR, Volumes, descending_path_errors, enum_errors, label_errors, list,
    qualified_name_errors, s, subdomain_errors,
};
use crate::validation::errors::{FieldError, FieldPath};
use crate::validation::meta::id_range_errors;
use crate::validation::names::{
    is_config_map_key, is_dns1123_subdomain, is_http_header_name, is_relaxed_env_var_name,
    is_valid_port_name, is_valid_port_num, mask_trailing_dash,
};
use crate::validation::resources::validate_resource_requirements;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvFromSource, EnvVar, EnvVarSource, EphemeralContainer, ExecAction,
    GRPCAction, HTTPGetAction, Lifecycle, LifecycleHandler, ObjectFieldSelector, PodSpec, Probe,
    SleepAction, TCPSocketAction, VolumeDevice, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn validate_containers(
    containers: &[Container],
    vols: &Volumes,
    grace: Option<i64>,
    path: &FieldPath,
) -> Vec<FieldError> {
    if containers.is_empty() {
        return vec![FieldError::required(path, "")];
    }
    let mut errs = Vec::new();
    let mut names = BTreeSet::new();
    for (i, c) in containers.iter().enumerate() {
        let idx = path.index(i);
        errs.extend(validate_container_common(c, vols, &idx));
        if !names.insert(c.name.as_str()) {
            errs.push(FieldError::duplicate(idx.child("name"), c.name.as_str()));
        }
        errs.extend(validate_lifecycle_and_probes(c, grace, &idx));
        if c.restart_policy.is_some() {
            errs.push(FieldError::forbidden(
                idx.child("restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    errs.extend(host_port_conflicts(containers, path));
    errs
}

fn validate_lifecycle_and_probes(
    c: &Container,
    grace: Option<i64>,
    path: &FieldPath,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(lifecycle) = &c.lifecycle {
        errs.extend(validate_lifecycle(
            lifecycle,
            grace,
            &path.child("lifecycle"),
        ));
    }
    if let Some(p) = &c.liveness_probe {
        errs.extend(validate_probe(p, true, &path.child("livenessProbe")));
    }
    if let Some(p) = &c.readiness_probe {
        errs.extend(validate_probe(p, false, &path.child("readinessProbe")));
        if let Some(t) = p.termination_grace_period_seconds {
            errs.push(FieldError::invalid(
                path.child("readinessProbe")
                    .child("terminationGracePeriodSeconds"),
                t,
                "must not be set for readinessProbes",
            ));
        }
    }
    if let Some(p) = &c.startup_probe {
        errs.extend(validate_probe(p, true, &path.child("startupProbe")));
    }
    errs
}

pub(super) fn validate_init_containers(
    spec: &PodSpec,
    vols: &Volumes,
    grace: Option<i64>,
    path: &FieldPath,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut names: BTreeSet<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    for (i, c) in list(&spec.init_containers).iter().enumerate() {
        let idx = path.index(i);
        errs.extend(validate_container_common(c, vols, &idx));
        let sidecar = match c.restart_policy.as_deref() {
            None => false,
            Some("Always") => true,
            Some(other) => {
                errs.push(FieldError::not_supported(
                    idx.child("restartPolicy"),
                    other,
                    &["Always"],
                ));
                false
            }
        };
        if names.contains(c.name.as_str()) {
            errs.push(FieldError::duplicate(idx.child("name"), c.name.as_str()));
        } else if !c.name.is_empty() {
            names.insert(c.name.as_str());
        }
        errs.extend(host_port_conflicts(std::slice::from_ref(c), path));
        if sidecar {
            errs.extend(validate_lifecycle_and_probes(c, grace, &idx));
        } else {
            errs.extend(forbidden_on_init(c, &idx));
        }
    }
    errs
}

/// Lifecycle hooks and probes are not allowed on init containers that run to completion.
fn forbidden_on_init(c: &Container, path: &FieldPath) -> Vec<FieldError> {
    let fields = [
        ("lifecycle", c.lifecycle.is_some()),
        ("livenessProbe", c.liveness_probe.is_some()),
        ("readinessProbe", c.readiness_probe.is_some()),
        ("startupProbe", c.startup_probe.is_some()),
    ];
    fields
        .iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| {
            FieldError::forbidden(
                path.child(name),
                "may not be set for init containers without restartPolicy=Always",
            )
        })
        .collect()
}

pub(super) fn validate_ephemeral_containers(
    spec: &PodSpec,
    vols: &Volumes,
    path: &FieldPath,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let others: BTreeSet<&str> = spec
        .containers
        .iter()
        .chain(list(&spec.init_containers))
        .map(|c| c.name.as_str())
        .collect();
    let mut all = others.clone();
    for (i, ec) in list(&spec.ephemeral_containers).iter().enumerate() {
        let idx = path.index(i);
        let c = ephemeral_as_container(ec);
        errs.extend(validate_container_common(&c, vols, &idx));
        if !all.insert(ec.name.as_str()) {
            errs.push(FieldError::duplicate(idx.child("name"), ec.name.as_str()));
        }
        let target = s(&ec.target_container_name);
        if !target.is_empty() && !others.contains(target) {
            errs.push(FieldError::not_found(
                idx.child("targetContainerName"),
                target,
            ));
        }
        let disallowed = [
            ("ports", ec.ports.is_some()),
            ("resources", ec.resources.is_some()),
            ("livenessProbe", ec.liveness_probe.is_some()),
            ("readinessProbe", ec.readiness_probe.is_some()),
            ("startupProbe", ec.startup_probe.is_some()),
            ("lifecycle", ec.lifecycle.is_some()),
        ];
        for (name, _) in disallowed.iter().filter(|(_, set)| *set) {
            errs.push(FieldError::forbidden(
                idx.child(name),
                "cannot be set for an Ephemeral Container",
            ));
        }
    }
    errs
}

/// The container view of an ephemeral container (they share all validated fields).
fn ephemeral_as_container(ec: &EphemeralContainer) -> Container {
    Container {
        args: ec.args.clone(),
        command: ec.command.clone(),
        env: ec.env.clone(),
        env_from: ec.env_from.clone(),
        image: ec.image.clone(),
        image_pull_policy: ec.image_pull_policy.clone(),
        lifecycle: ec.lifecycle.clone(),
        liveness_probe: ec.liveness_probe.clone(),
        name: ec.name.clone(),
        ports: ec.ports.clone(),
        readiness_probe: ec.readiness_probe.clone(),
        resize_policy: ec.resize_policy.clone(),
        resources: ec.resources.clone(),
        restart_policy: ec.restart_policy.clone(),
        security_context: ec.security_context.clone(),
        startup_probe: ec.startup_probe.clone(),
        stdin: ec.stdin,
        stdin_once: ec.stdin_once,
        termination_message_path: ec.termination_message_path.clone(),
        termination_message_policy: ec.termination_message_policy.clone(),
        tty: ec.tty,
        volume_devices: ec.volume_devices.clone(),
        volume_mounts: ec.volume_mounts.clone(),
        working_dir: ec.working_dir.clone(),
    }
}

/// `validateContainerCommon`: everything every kind of container is checked for.
fn validate_container_common(c: &Container, vols: &Volumes, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if c.name.is_empty() {
        errs.push(FieldError::required(path.child("name"), ""));
    } else {
        errs.extend(label_errors(&c.name, &path.child("name")));
    }
    if s(&c.image).is_empty() {
        errs.push(FieldError::required(path.child("image"), ""));
    }
    errs.extend(enum_errors(
        s(&c.termination_message_policy),
        &["File", "FallbackToLogsOnError"],
        &path.child("terminationMessagePolicy"),
    ));
    errs.extend(validate_ports(list(&c.ports), &path.child("ports")));
    errs.extend(validate_env(list(&c.env), &path.child("env")));
    errs.extend(validate_env_from(list(&c.env_from), &path.child("envFrom")));
    errs.extend(validate_volume_mounts(c, vols, &path.child("volumeMounts")));
    errs.extend(validate_volume_devices(
        c,
        vols,
        &path.child("volumeDevices"),
    ));
    errs.extend(enum_errors(
        s(&c.image_pull_policy),
        &["Always", "IfNotPresent", "Never"],
        &path.child("imagePullPolicy"),
    ));
    errs.extend(validate_resource_requirements(
        c.resources.as_ref(),
        &path.child("resources"),
    ));
    if let Some(sc) = &c.security_context {
        let sp = path.child("securityContext");
        if let Some(u) = sc.run_as_user {
            errs.extend(id_range_errors(u, &sp.child("runAsUser")));
        }
        if let Some(g) = sc.run_as_group {
            errs.extend(id_range_errors(g, &sp.child("runAsGroup")));
        }
    }
    errs
}

fn validate_ports(ports: &[ContainerPort], path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let idx = path.index(i);
        let name = s(&port.name);
        if !name.is_empty() {
            let msgs = is_valid_port_name(name);
            if !msgs.is_empty() {
                errs.extend(
                    msgs.into_iter()
                        .map(|m| FieldError::invalid(idx.child("name"), name, m)),
                );
            } else if !names.insert(name) {
                errs.push(FieldError::duplicate(idx.child("name"), name));
            }
        }
        if port.container_port == 0 {
            errs.push(FieldError::required(idx.child("containerPort"), ""));
        } else {
            for m in is_valid_port_num(port.container_port.into()) {
                errs.push(FieldError::invalid(
                    idx.child("containerPort"),
                    port.container_port,
                    m,
                ));
            }
        }
        if let Some(hp) = port.host_port.filter(|p| *p != 0) {
            for m in is_valid_port_num(hp.into()) {
                errs.push(FieldError::invalid(idx.child("hostPort"), hp, m));
            }
        }
        errs.extend(enum_errors(
            s(&port.protocol),
            &["SCTP", "TCP", "UDP"],
            &idx.child("protocol"),
        ));
    }
    errs
}

/// Host ports (protocol/hostIP/port) must not collide across the given containers.
fn host_port_conflicts(containers: &[Container], path: &FieldPath) -> Vec<FieldError> {
    let mut seen = BTreeSet::new();
    let mut errs = Vec::new();
    for (ci, c) in containers.iter().enumerate() {
        for (pi, port) in list(&c.ports).iter().enumerate() {
            let Some(hp) = port.host_port.filter(|p| *p != 0) else {
                continue;
            };
            let key = format!("{}/{}/{hp}", s(&port.protocol), s(&port.host_ip));
            if !seen.insert(key.clone()) {
                errs.push(FieldError::duplicate(
                    path.index(ci).child("ports").index(pi).child("hostPort"),
                    key,
                ));
            }
        }
    }
    errs
}

/// With `hostNetwork`, a pod's container ports must use the same host port.
pub(super) fn validate_host_network_ports(spec: &PodSpec, path: &FieldPath) -> Vec<FieldError> {
    if spec.host_network != Some(true) {
        return Vec::new();
    }
    let mut errs = Vec::new();
    for (ci, c) in spec.containers.iter().enumerate() {
        for (pi, port) in list(&c.ports).iter().enumerate() {
            let hp = port.host_port.unwrap_or(0);
            if hp != port.container_port {
                errs.push(FieldError::invalid(
                    path.child("containers")
                        .index(ci)
                        .child("ports")
                        .index(pi)
                        .child("hostPort"),
                    hp,
                    "must match `containerPort` when `hostNetwork` is true",
                ));
            }
        }
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// Environment

fn validate_env(vars: &[EnvVar], path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, ev) in vars.iter().enumerate() {
        let idx = path.index(i);
        if ev.name.is_empty() {
            errs.push(FieldError::required(idx.child("name"), ""));
        } else {
            for m in is_relaxed_env_var_name(&ev.name) {
                errs.push(FieldError::invalid(idx.child("name"), ev.name.as_str(), m));
            }
        }
        if let Some(from) = &ev.value_from {
            errs.extend(validate_env_value_from(
                from,
                !s(&ev.value).is_empty(),
                &idx.child("valueFrom"),
            ));
        }
    }
    errs
}

const ENV_FIELD_PATHS: [&str; 9] = [
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

const RESOURCE_FIELD_PATHS: [&str; 6] = [
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

fn validate_env_value_from(
    from: &EnvVarSource,
    has_value: bool,
    path: &FieldPath,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut sources = 0;
    if let Some(f) = &from.field_ref {
        sources += 1;
        errs.extend(validate_object_field_selector(f, &path.child("fieldRef")));
    }
    if let Some(r) = &from.resource_field_ref {
        sources += 1;
        let rp = path.child("resourceFieldRef");
        if r.resource.is_empty() {
            errs.push(FieldError::required(rp.child("resource"), ""));
        } else if !RESOURCE_FIELD_PATHS.contains(&r.resource.as_str())
            && !r.resource.starts_with("requests.hugepages-")
            && !r.resource.starts_with("limits.hugepages-")
        {
            errs.push(FieldError::not_supported(
                rp.child("resource"),
                r.resource.as_str(),
                &RESOURCE_FIELD_PATHS,
            ));
        }
    }
    if let Some(k) = &from.config_map_key_ref {
        sources += 1;
        errs.extend(key_selector_errors(
            &k.name,
            &k.key,
            &path.child("configMapKeyRef"),
        ));
    }
    if let Some(k) = &from.secret_key_ref {
        sources += 1;
        errs.extend(key_selector_errors(
            &k.name,
            &k.key,
            &path.child("secretKeyRef"),
        ));
    }
    if sources == 0 {
        errs.push(FieldError::invalid(
            path,
            "",
            "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
        ));
    } else if has_value {
        errs.push(FieldError::invalid(
            path,
            "",
            "may not be specified when `value` is not empty",
        ));
    } else if sources > 1 {
        errs.push(FieldError::invalid(
            path,
            "",
            "may not have more than one field specified at a time",
        ));
    }
    errs
}

fn validate_object_field_selector(f: &ObjectFieldSelector, path: &FieldPath) -> Vec<FieldError> {
    let version = s(&f.api_version);
    if version.is_empty() {
        return vec![FieldError::required(path.child("apiVersion"), "")];
    }
    if f.field_path.is_empty() {
        return vec![FieldError::required(path.child("fieldPath"), "")];
    }
    let fp = f.field_path.as_str();
    if version != "v1" {
        let detail = format!("error converting fieldPath: unsupported pod version: {version}");
        return vec![FieldError::invalid(path.child("fieldPath"), fp, detail)];
    }
    if let Some((base, subscript)) = split_subscript(fp) {
        return match base {
            "metadata.annotations" => qualified_name_errors(&subscript.to_lowercase(), path),
            "metadata.labels" => qualified_name_errors(subscript, path),
            _ => {
                let detail = format!(
                    "error converting fieldPath: field label does not support subscript: {fp}"
                );
                vec![FieldError::invalid(path.child("fieldPath"), fp, detail)]
            }
        };
    }
    const CONVERTIBLE: [&str; 5] = [
        "metadata.annotations",
        "metadata.labels",
        "spec.restartPolicy",
        "spec.schedulerName",
        "status.phase",
    ];
    if !ENV_FIELD_PATHS.contains(&fp) && !CONVERTIBLE.contains(&fp) && fp != "spec.host" {
        let detail = format!("error converting fieldPath: field label not supported: {fp}");
        return vec![FieldError::invalid(path.child("fieldPath"), fp, detail)];
    }
    let internal = if fp == "spec.host" {
        "spec.nodeName"
    } else {
        fp
    };
    if ENV_FIELD_PATHS.contains(&internal) {
        Vec::new()
    } else {
        vec![FieldError::not_supported(
            path.child("fieldPath"),
            internal,
            &ENV_FIELD_PATHS,
        )]
    }
}

/// `metadata.labels['key']` → (`metadata.labels`, `key`).
fn split_subscript(fp: &str) -> Option<(&str, &str)> {
    let (base, rest) = fp.split_once("['")?;
    let key = rest.strip_suffix("']")?;
    Some((base, key))
}

fn key_selector_errors(name: &str, key: &str, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = subdomain_errors(name, &path.child("name"));
    if key.is_empty() {
        errs.push(FieldError::required(path.child("key"), ""));
    } else {
        for m in is_config_map_key(key) {
            errs.push(FieldError::invalid(path.child("key"), key, m));
        }
    }
    errs
}

fn validate_env_from(sources: &[EnvFromSource], path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, ev) in sources.iter().enumerate() {
        let idx = path.index(i);
        let prefix = s(&ev.prefix);
        if !prefix.is_empty() {
            for m in is_relaxed_env_var_name(prefix) {
                errs.push(FieldError::invalid(idx.child("prefix"), prefix, m));
            }
        }
        let mut count = 0;
        for (field, name) in [
            (
                "configMapRef",
                ev.config_map_ref.as_ref().map(|r| r.name.as_str()),
            ),
            ("secretRef", ev.secret_ref.as_ref().map(|r| r.name.as_str())),
        ] {
            let Some(name) = name else { continue };
            count += 1;
            let np = idx.child(field).child("name");
            if name.is_empty() {
                errs.push(FieldError::required(np, ""));
            } else {
                errs.extend(
                    is_dns1123_subdomain(&mask_trailing_dash(name))
                        .into_iter()
                        .map(|m| FieldError::invalid(&np, name, m)),
                );
            }
        }
        if count == 0 {
            errs.push(FieldError::invalid(
                path,
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        } else if count > 1 {
            errs.push(FieldError::invalid(
                path,
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// Volume mounts and devices

fn validate_volume_mounts(c: &Container, vols: &Volumes, path: &FieldPath) -> Vec<FieldError> {
    let devices: BTreeMap<&str, &str> = list(&c.volume_devices)
        .iter()
        .map(|d: &VolumeDevice| (d.name.as_str(), d.device_path.as_str()))
        .collect();
    let mut errs = Vec::new();
    let mut mount_points = BTreeSet::new();
    for (i, m) in list(&c.volume_mounts).iter().enumerate() {
        let idx = path.index(i);
        errs.extend(mount_errors(
            m,
            vols,
            &devices,
            &mut mount_points,
            &idx,
            path,
        ));
    }
    errs
}

fn mount_errors<'a>(
    m: &'a VolumeMount,
    vols: &Volumes,
    devices: &BTreeMap<&str, &str>,
    mount_points: &mut BTreeSet<&'a str>,
    idx: &FieldPath,
    list_path: &FieldPath,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if m.name.is_empty() {
        errs.push(FieldError::required(idx.child("name"), ""));
    }
    if !vols.contains_key(&m.name) {
        errs.push(FieldError::not_found(idx.child("name"), m.name.as_str()));
    }
    if m.mount_path.is_empty() {
        errs.push(FieldError::required(idx.child("mountPath"), ""));
    }
    if !mount_points.insert(m.mount_path.as_str()) {
        errs.push(FieldError::invalid(
            idx.child("mountPath"),
            m.mount_path.as_str(),
            "must be unique",
        ));
    }
    if devices.contains_key(m.name.as_str()) {
        errs.push(FieldError::invalid(
            idx.child("name"),
            m.name.as_str(),
            "must not already exist in volumeDevices",
        ));
    }
    if devices.values().any(|p| *p == m.mount_path) {
        errs.push(FieldError::invalid(
            idx.child("mountPath"),
            m.mount_path.as_str(),
            "must not already exist as a path in volumeDevices",
        ));
    }
    let (sub_path, sub_expr) = (s(&m.sub_path), s(&m.sub_path_expr));
    if vols.get(&m.name).is_some_and(|v| v.image) {
        for (field, value) in [("subPath", sub_path), ("subPathExpr", sub_expr)] {
            if !value.is_empty() {
                errs.push(FieldError::invalid(
                    idx.child(field),
                    value,
                    "not allowed in image volume sources",
                ));
            }
        }
    }
    if !sub_path.is_empty() {
        errs.extend(descending_path_errors(
            sub_path,
            &list_path.child("subPath"),
        ));
    }
    if !sub_expr.is_empty() {
        if !sub_path.is_empty() {
            errs.push(FieldError::invalid(
                idx.child("subPathExpr"),
                sub_expr,
                "subPathExpr and subPath are mutually exclusive",
            ));
        }
        errs.extend(descending_path_errors(
            sub_expr,
            &list_path.child("subPathExpr"),
        ));
    }
    errs
}

fn validate_volume_devices(c: &Container, vols: &Volumes, path: &FieldPath) -> Vec<FieldError> {
    let mounts: BTreeMap<&str, &str> = list(&c.volume_mounts)
        .iter()
        .map(|m| (m.name.as_str(), m.mount_path.as_str()))
        .collect();
    let mut errs = Vec::new();
    let (mut names, mut paths) = (BTreeSet::new(), BTreeSet::new());
    for (i, d) in list(&c.volume_devices).iter().enumerate() {
        let idx = path.index(i);
        let (name, dev_path) = (d.name.as_str(), d.device_path.as_str());
        if name.is_empty() {
            errs.push(FieldError::required(idx.child("name"), ""));
        }
        if names.contains(name) {
            errs.push(FieldError::invalid(
                idx.child("name"),
                name,
                "must be unique",
            ));
        }
        match vols.get(name) {
            Some(v) if !v.pvc => errs.push(FieldError::invalid(
                idx.child("name"),
                name,
                "can only use volume source type of PersistentVolumeClaim or Ephemeral for block mode",
            )),
            Some(_) => {}
            None => errs.push(FieldError::not_found(idx.child("name"), name)),
        }
        if dev_path.is_empty() {
            errs.push(FieldError::required(idx.child("devicePath"), ""));
        }
        if paths.contains(dev_path) {
            errs.push(FieldError::invalid(
                idx.child("devicePath"),
                dev_path,
                "must be unique",
            ));
        }
        if !dev_path.is_empty() && dev_path.split('/').any(|p| p == "..") {
            errs.push(FieldError::invalid(
                idx.child("devicePath"),
                dev_path,
                "can not contain backsteps ('..')",
            ));
        } else {
            paths.insert(dev_path);
        }
        if mounts.contains_key(name) {
            errs.push(FieldError::invalid(
                idx.child("name"),
                name,
                "must not already exist in volumeMounts",
            ));
        }
        if mounts.values().any(|p| *p == dev_path) {
            errs.push(FieldError::invalid(
                idx.child("devicePath"),
                dev_path,
                "must not already exist as a path in volumeMounts",
            ));
        }
        if !name.is_empty() {
            names.insert(name);
        }
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// Probes and lifecycle hooks

/// The action fields shared by probes and lifecycle handlers.
struct Handler<'a> {
    exec: Option<&'a ExecAction>,
    http_get: Option<&'a HTTPGetAction>,
    tcp_socket: Option<&'a TCPSocketAction>,
    grpc: Option<&'a GRPCAction>,
    sleep: Option<&'a SleepAction>,
}

fn validate_handler(h: &Handler, grace: Option<i64>, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen = 0;
    let mut step = |name: &str, set: bool, check: &dyn Fn(&FieldPath) -> Vec<FieldError>| {
        if !set {
            return;
        }
        let p = path.child(name);
        if seen > 0 {
            errs.push(FieldError::forbidden(
                p,
                "may not specify more than 1 handler type",
            ));
        } else {
            seen += 1;
            errs.extend(check(&p));
        }
    };
    step("exec", h.exec.is_some(), &|p| {
        if h.exec.is_some_and(|e| list(&e.command).is_empty()) {
            vec![FieldError::required(p.child("command"), "")]
        } else {
            Vec::new()
        }
    });
    step("httpGet", h.http_get.is_some(), &|p| {
        h.http_get
            .map(|g| http_get_errors(g, p))
            .unwrap_or_default()
    });
    step("tcpSocket", h.tcp_socket.is_some(), &|p| {
        h.tcp_socket
            .map(|t| port_errors(&t.port, &p.child("port")))
            .unwrap_or_default()
    });
    step("grpc", h.grpc.is_some(), &|p| {
        h.grpc
            .map(|g| port_errors(&IntOrString::Int(g.port), &p.child("port")))
            .unwrap_or_default()
    });
    step("sleep", h.sleep.is_some(), &|p| {
        h.sleep
            .map(|sl| sleep_errors(sl, grace, p))
            .unwrap_or_default()
    });
    if seen == 0 {
        errs.push(FieldError::required(path, "must specify a handler type"));
    }
    errs
}

fn http_get_errors(g: &HTTPGetAction, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if s(&g.path).is_empty() {
        errs.push(FieldError::required(path.child("path"), ""));
    }
    errs.extend(port_errors(&g.port, &path.child("port")));
    let scheme = s(&g.scheme);
    if scheme != "HTTP" && scheme != "HTTPS" {
        errs.push(FieldError::not_supported(
            path.child("scheme"),
            scheme,
            &["HTTP", "HTTPS"],
        ));
    }
    for header in list(&g.http_headers) {
        for m in is_http_header_name(&header.name) {
            errs.push(FieldError::invalid(
                path.child("httpHeaders"),
                header.name.as_str(),
                m,
            ));
        }
    }
    errs
}

/// A port given as a number (1..65535) or an IANA service name.
fn port_errors(port: &IntOrString, path: &FieldPath) -> Vec<FieldError> {
    match port {
        IntOrString::Int(n) => is_valid_port_num((*n).into())
            .into_iter()
            .map(|m| FieldError::invalid(path, *n, m))
            .collect(),
        IntOrString::String(name) => is_valid_port_name(name)
            .into_iter()
            .map(|m| FieldError::invalid(path, name.as_str(), m))
            .collect(),
    }
}

fn sleep_errors(sl: &SleepAction, grace: Option<i64>, path: &FieldPath) -> Vec<FieldError> {
    match grace {
        Some(g) if sl.seconds < 0 || sl.seconds > g => vec![FieldError::invalid(
            path,
            sl.seconds,
            format!("must be non-negative and less than terminationGracePeriodSeconds ({g})"),
        )],
        _ => Vec::new(),
    }
}

fn validate_lifecycle(l: &Lifecycle, grace: Option<i64>, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (name, handler) in [("postStart", &l.post_start), ("preStop", &l.pre_stop)] {
        if let Some(h) = handler {
            errs.extend(validate_handler(
                &lifecycle_handler(h),
                grace,
                &path.child(name),
            ));
        }
    }
    errs
}

fn lifecycle_handler(h: &LifecycleHandler) -> Handler<'_> {
    Handler {
        exec: h.exec.as_ref(),
        http_get: h.http_get.as_ref(),
        tcp_socket: h.tcp_socket.as_ref(),
        grpc: None,
        sleep: h.sleep.as_ref(),
    }
}

/// A probe's handler and thresholds; `success_must_be_one` for liveness and startup probes.
fn validate_probe(p: &Probe, success_must_be_one: bool, path: &FieldPath) -> Vec<FieldError> {
    let handler = Handler {
        exec: p.exec.as_ref(),
        http_get: p.http_get.as_ref(),
        tcp_socket: p.tcp_socket.as_ref(),
        grpc: p.grpc.as_ref(),
        sleep: None,
    };
    let mut errs = validate_handler(&handler, None, path);
    let numbers = [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("periodSeconds", p.period_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ];
    for (field, value) in numbers {
        let value = value.unwrap_or(0);
        if value < 0 {
            errs.push(FieldError::invalid(
                path.child(field),
                value,
                IS_NEGATIVE_ERROR,
            ));
        }
    }
    if let Some(t) = p.termination_grace_period_seconds.filter(|t| *t <= 0) {
        errs.push(FieldError::invalid(
            path.child("terminationGracePeriodSeconds"),
            t,
            "must be greater than 0",
        ));
    }
    let success = p.success_threshold.unwrap_or(0);
    if success_must_be_one && success != 1 {
        errs.push(FieldError::invalid(
            path.child("successThreshold"),
            success,
            "must be 1",
        ));
    }
    errs
}
