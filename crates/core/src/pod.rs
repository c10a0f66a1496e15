//! Pod defaulting and validation, as the API server applies them on create and update.
//!
//! [`default_pod`] reproduces the v1 defaulting functions (`pkg/apis/core/v1/defaults.go` and the
//! generated field defaults) plus the Priority admission plugin's `priority: 0`;
//! [`add_default_tolerations`] is the DefaultTolerationSeconds admission plugin; [`qos_class`]
//! computes `status.qosClass`. Validation lives in `crate::validation::pod` and is exposed here
//! as [`validate_pod`] and [`validate_pod_update`]. See shared/spec/pod-lifecycle.md §5.1, §6.1
//! and §11.
//!
//! Not reproduced: rounding resource quantities up to milli-units (the quantity module's
//! canonical text does that when objects are re-serialised) and pod-level resources (feature gate
//! off in 1.33). [`default_service_account`] is the ServiceAccount admission plugin's defaulting
//! only: no token volume is projected, because skiff issues no service-account tokens yet.

use crate::quantity::Quantity;
use crate::validation::FieldError;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, Lifecycle, Pod, PodSecurityContext, PodSpec,
    Probe, ResourceRequirements, Toleration, Volume,
};
use std::collections::BTreeMap;

/// Grace period given to a pod that does not ask for one.
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;
/// How long the default tolerations keep a pod on a not-ready or unreachable node.
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;
/// Taint the node lifecycle controller puts on a node whose kubelet is not ready.
pub const TAINT_NODE_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint the node lifecycle controller puts on a node it cannot reach.
pub const TAINT_NODE_UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// Mode given to secret, config map, downward API and projected volumes without one (0644).
const DEFAULT_VOLUME_MODE: i32 = 0o644;

/// Priority of the built-in priority classes, as the Priority admission plugin resolves them.
const SYSTEM_PRIORITY_CLASSES: [(&str, i32); 2] = [
    ("system-node-critical", 2_000_001_000),
    ("system-cluster-critical", 2_000_000_000),
];

/// Kubernetes' create-time defaulting of a Pod.
///
/// Pod level: `restartPolicy: Always`, `dnsPolicy: ClusterFirst`,
/// `terminationGracePeriodSeconds: 30`, `schedulerName: default-scheduler`,
/// `securityContext: {}`, `enableServiceLinks: true`, and (Priority admission) `priority` and
/// `preemptionPolicy: PreemptLowerPriority` when no priority class is named or for the two
/// system classes. Containers of every kind: `imagePullPolicy` from the image tag,
/// `terminationMessagePath`, `terminationMessagePolicy: File`, port `protocol: TCP`, probe and
/// HTTP action defaults, env `fieldRef.apiVersion: v1`; requests default from limits (regular and
/// init containers); with `hostNetwork`, `hostPort` defaults to `containerPort`. Volumes:
/// `emptyDir: {}` when no source is set, file modes 0644, `hostPath.type: ""`, projected
/// service-account token `expirationSeconds: 3600`.
pub fn default_pod(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    default_pod_fields(spec);
    default_pod_spec(spec);
    for volume in spec.volumes.iter_mut().flatten() {
        default_volume(volume);
    }
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        default_container(c);
    }
    for ec in spec.ephemeral_containers.iter_mut().flatten() {
        default_image_fields(
            &ec.image,
            &mut ec.image_pull_policy,
            &mut ec.termination_message_path,
            &mut ec.termination_message_policy,
        );
        default_ports(ec.ports.iter_mut().flatten());
        default_env(ec.env.iter_mut().flatten());
        for probe in [
            &mut ec.liveness_probe,
            &mut ec.readiness_probe,
            &mut ec.startup_probe,
        ]
        .into_iter()
        .flatten()
        {
            default_probe(probe);
        }
        if let Some(l) = ec.lifecycle.as_mut() {
            default_lifecycle(l);
        }
    }
    default_priority(spec);
    mirror_service_account(spec);
}

/// The deprecated `serviceAccount` field is an alias of `serviceAccountName`: the v1 conversion
/// fills the name from the alias when only the alias is given, and always writes the alias back
/// from the name.
fn mirror_service_account(spec: &mut PodSpec) {
    if spec
        .service_account_name
        .as_deref()
        .unwrap_or_default()
        .is_empty()
        && let Some(alias) = spec.service_account.clone().filter(|a| !a.is_empty())
    {
        spec.service_account_name = Some(alias);
    }
    if let Some(name) = spec.service_account_name.clone().filter(|n| !n.is_empty()) {
        spec.service_account = Some(name);
    }
}

/// The service account a pod runs as when it names none.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// The annotation that marks a mirror pod (a static pod's reflection in the API).
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The defaulting half of the ServiceAccount admission plugin: a pod that names no service
/// account runs as `default` (`serviceAccount` mirrors it); mirror pods are left alone.
///
/// Not reproduced: the plugin's lookup of the account (Kubernetes refuses the pod with 403
/// Forbidden, `error looking up service account <ns>/<name>: serviceaccount "<name>" not
/// found`, after retrying for about a second when the name is `default`) and the projected
/// `kube-api-access-*` token volume. skiff issues no tokens, so nothing would be mounted from the
/// account, and a pod created right after its namespace (before the service-account controller
/// made `default`) is accepted rather than refused — `kubectl create ns x; kubectl run -n x` works.
pub fn default_service_account(pod: &mut Pod) {
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_POD_ANNOTATION));
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    if !mirror
        && spec
            .service_account_name
            .as_deref()
            .unwrap_or_default()
            .is_empty()
    {
        spec.service_account_name = Some(DEFAULT_SERVICE_ACCOUNT.to_string());
    }
    mirror_service_account(spec);
}

/// `SetDefaults_Pod`: requests from limits, service links, host-network ports.
fn default_pod_fields(spec: &mut PodSpec) {
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        if let Some(r) = c.resources.as_mut() {
            default_requests_from_limits(r);
        }
    }
    spec.enable_service_links.get_or_insert(true);
    if spec.host_network == Some(true) {
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            for port in c.ports.iter_mut().flatten() {
                if port.host_port.unwrap_or(0) == 0 {
                    port.host_port = Some(port.container_port);
                }
            }
        }
    }
}

/// Every resource with a limit but no request gets `request = limit`.
fn default_requests_from_limits(r: &mut ResourceRequirements) {
    let Some(limits) = r.limits.as_ref() else {
        return;
    };
    let requests = r.requests.get_or_insert_with(BTreeMap::new);
    for (name, limit) in limits {
        requests
            .entry(name.clone())
            .or_insert_with(|| limit.clone());
    }
}

/// `SetDefaults_PodSpec`.
fn default_pod_spec(spec: &mut PodSpec) {
    set_if_empty(&mut spec.dns_policy, "ClusterFirst");
    set_if_empty(&mut spec.restart_policy, "Always");
    spec.security_context
        .get_or_insert_with(PodSecurityContext::default);
    spec.termination_grace_period_seconds
        .get_or_insert(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS);
    set_if_empty(&mut spec.scheduler_name, "default-scheduler");
}

fn set_if_empty(field: &mut Option<String>, value: &str) {
    if field.as_deref().unwrap_or_default().is_empty() {
        *field = Some(value.to_string());
    }
}

/// The Priority admission plugin for a cluster without custom priority classes: no class
/// resolves to priority 0, the two system classes to their fixed values. Any other class name
/// is left alone (Kubernetes would look it up and reject the pod if it does not exist).
fn default_priority(spec: &mut PodSpec) {
    if spec.priority.is_some() {
        return;
    }
    let class = spec.priority_class_name.as_deref().unwrap_or_default();
    let priority = if class.is_empty() {
        0
    } else {
        match SYSTEM_PRIORITY_CLASSES
            .iter()
            .find(|(name, _)| *name == class)
        {
            Some((_, p)) => *p,
            None => return,
        }
    };
    spec.priority = Some(priority);
    set_if_empty(&mut spec.preemption_policy, "PreemptLowerPriority");
}

fn default_container(c: &mut Container) {
    default_image_fields(
        &c.image,
        &mut c.image_pull_policy,
        &mut c.termination_message_path,
        &mut c.termination_message_policy,
    );
    default_ports(c.ports.iter_mut().flatten());
    default_env(c.env.iter_mut().flatten());
    for probe in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        default_probe(probe);
    }
    if let Some(l) = c.lifecycle.as_mut() {
        default_lifecycle(l);
    }
}

/// `SetDefaults_Container`: pull policy from the tag, termination message defaults.
fn default_image_fields(
    image: &Option<String>,
    pull_policy: &mut Option<String>,
    message_path: &mut Option<String>,
    message_policy: &mut Option<String>,
) {
    if pull_policy.as_deref().unwrap_or_default().is_empty() {
        *pull_policy =
            Some(default_image_pull_policy(image.as_deref().unwrap_or_default()).to_string());
    }
    set_if_empty(message_path, "/dev/termination-log");
    set_if_empty(message_policy, "File");
}

fn default_ports<'a>(ports: impl Iterator<Item = &'a mut ContainerPort>) {
    for port in ports {
        set_if_empty(&mut port.protocol, "TCP");
    }
}

fn default_env<'a>(env: impl Iterator<Item = &'a mut EnvVar>) {
    for var in env {
        if let Some(f) = var.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            set_if_empty(&mut f.api_version, "v1");
        }
    }
}

/// `SetDefaults_Probe` and the defaults of its actions (pod-lifecycle.md §6.1).
fn default_probe(p: &mut Probe) {
    for (field, default) in [
        (&mut p.timeout_seconds, 1),
        (&mut p.period_seconds, 10),
        (&mut p.success_threshold, 1),
        (&mut p.failure_threshold, 3),
    ] {
        if field.unwrap_or(0) == 0 {
            *field = Some(default);
        }
    }
    if let Some(h) = p.http_get.as_mut() {
        default_http_get(h);
    }
    if let Some(g) = p.grpc.as_mut() {
        g.service.get_or_insert_with(String::new);
    }
}

/// `SetDefaults_HTTPGetAction`: path `/`, scheme `HTTP`.
fn default_http_get(h: &mut HTTPGetAction) {
    set_if_empty(&mut h.path, "/");
    set_if_empty(&mut h.scheme, "HTTP");
}

fn default_lifecycle(l: &mut Lifecycle) {
    for handler in [&mut l.post_start, &mut l.pre_stop].into_iter().flatten() {
        if let Some(h) = handler.http_get.as_mut() {
            default_http_get(h);
        }
    }
}

/// `SetDefaults_Volume` and the defaults of the common sources.
fn default_volume(v: &mut Volume) {
    let name = std::mem::take(&mut v.name);
    if *v == Volume::default() {
        v.empty_dir = Some(Default::default());
    }
    v.name = name;
    if let Some(s) = v.secret.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(c) = v.config_map.as_mut() {
        c.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(d) = v.downward_api.as_mut() {
        d.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
        for item in d.items.iter_mut().flatten() {
            if let Some(f) = item.field_ref.as_mut() {
                set_if_empty(&mut f.api_version, "v1");
            }
        }
    }
    if let Some(h) = v.host_path.as_mut() {
        h.type_.get_or_insert_with(String::new);
    }
    if let Some(p) = v.projected.as_mut() {
        p.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
        for source in p.sources.iter_mut().flatten() {
            if let Some(t) = source.service_account_token.as_mut() {
                t.expiration_seconds.get_or_insert(3600);
            }
            for item in source
                .downward_api
                .iter_mut()
                .flat_map(|d| d.items.iter_mut().flatten())
            {
                if let Some(f) = item.field_ref.as_mut() {
                    set_if_empty(&mut f.api_version, "v1");
                }
            }
        }
    }
}

/// The `imagePullPolicy` Kubernetes defaults for an image (pod-lifecycle.md §5.1): `Always`
/// when the tag is `latest` (explicitly, or because there is neither tag nor digest),
/// otherwise `IfNotPresent` (also for references that do not parse).
pub fn default_image_pull_policy(image: &str) -> &'static str {
    match image_tag(image) {
        Some(tag) if tag == "latest" => "Always",
        _ => "IfNotPresent",
    }
}

/// The tag of an image reference: `Some("latest")` when it has neither tag nor digest,
/// `Some("")` for a digest-only reference, `None` when the reference does not parse.
fn image_tag(image: &str) -> Option<String> {
    if image.is_empty() || image.chars().any(char::is_whitespace) {
        return None;
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let (algo, hex) = d.split_once(':')?;
        if algo.is_empty() || hex.is_empty() {
            return None;
        }
    }
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    if !valid_repository(repo) || tag.is_some_and(|t| !valid_tag(t)) {
        return None;
    }
    Some(match (tag, digest) {
        (Some(t), _) => t.to_string(),
        (None, None) => "latest".to_string(),
        (None, Some(_)) => String::new(),
    })
}

/// A repository path: an optional registry host (first component containing `.` or `:`, being
/// `localhost`, or having upper case), then lower-case path components.
fn valid_repository(repo: &str) -> bool {
    let mut parts: Vec<&str> = repo.split('/').collect();
    if parts.len() > 1 {
        let first = parts[0];
        let is_domain = first.contains(['.', ':'])
            || first == "localhost"
            || first.chars().any(|c| c.is_ascii_uppercase());
        if is_domain {
            parts.remove(0);
        }
    }
    !parts.is_empty() && parts.iter().all(|p| valid_path_component(p))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(p: &str) -> bool {
    let b = p.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
        return false;
    }
    b.iter()
        .all(|c| alnum(c) || matches!(c, b'.' | b'_' | b'-'))
        && !p.contains("..")
        && !p.contains("___")
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    let word = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_';
    !b.is_empty()
        && b.len() <= 128
        && word(&b[0])
        && b.iter().all(|c| word(c) || matches!(c, b'.' | b'-'))
}

/// The DefaultTolerationSeconds admission plugin: unless the pod already tolerates them, adds
/// `node.kubernetes.io/not-ready` and `node.kubernetes.io/unreachable` (operator `Exists`,
/// effect `NoExecute`, `tolerationSeconds: 300`), in that order.
pub fn add_default_tolerations(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    let tolerates = |tolerations: &[Toleration], taint: &str| {
        tolerations.iter().any(|t| {
            let key = t.key.as_deref().unwrap_or_default();
            let effect = t.effect.as_deref().unwrap_or_default();
            (key == taint || key.is_empty()) && (effect == "NoExecute" || effect.is_empty())
        })
    };
    for taint in [TAINT_NODE_NOT_READY, TAINT_NODE_UNREACHABLE] {
        if !tolerates(tolerations, taint) {
            tolerations.push(Toleration {
                key: Some(taint.to_string()),
                operator: Some("Exists".to_string()),
                effect: Some("NoExecute".to_string()),
                toleration_seconds: Some(DEFAULT_TOLERATION_SECONDS),
                value: None,
            });
        }
    }
}

/// The pod's QoS class (pod-lifecycle.md §11, Kubernetes' `ComputePodQOS`): `BestEffort` when no
/// container (regular or init) requests or limits cpu or memory, `Guaranteed` when every
/// container limits both and the summed requests equal the summed limits, else `Burstable`.
/// Zero and unparseable quantities count as unset.
pub fn qos_class(spec: &PodSpec) -> &'static str {
    let mut requests: BTreeMap<&str, i128> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i128> = BTreeMap::new();
    let mut guaranteed = true;
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let resources = c.resources.as_ref();
        add_compute(&mut requests, resources.and_then(|r| r.requests.as_ref()));
        let found = add_compute(&mut limits, resources.and_then(|r| r.limits.as_ref()));
        if !(found.contains(&"cpu") && found.contains(&"memory")) {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    let requests_match = requests.iter().all(|(name, r)| limits.get(name) == Some(r));
    if guaranteed && requests_match && requests.len() == limits.len() {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Adds the positive cpu and memory quantities of `list` to `sums`; returns the names added.
fn add_compute<'a>(
    sums: &mut BTreeMap<&'a str, i128>,
    list: Option<&'a BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> Vec<&'a str> {
    let mut found = Vec::new();
    for (name, q) in list.into_iter().flatten() {
        if name != "cpu" && name != "memory" {
            continue;
        }
        let milli = Quantity::parse(&q.0).map_or(0, |q| q.milli_value());
        if milli > 0 {
            *sums.entry(name.as_str()).or_insert(0) += milli;
            found.push(name.as_str());
        }
    }
    found
}

/// Create validation with Kubernetes' field paths and messages; see `crate::validation::pod`
/// for what is covered and skipped. Call it on a defaulted pod.
pub fn validate_pod(pod: &Pod) -> Vec<FieldError> {
    crate::validation::pod::validate_pod(pod)
}

/// Update validation (`ValidatePodUpdate`); both pods must be defaulted. Spec changes outside
/// the mutable fields give `spec: Forbidden: pod updates may not change fields other than ...`.
pub fn validate_pod_update(new: &Pod, old: &Pod) -> Vec<FieldError> {
    crate::validation::pod_update::validate_pod_update(new, old)
}

/// What a `pods/status` write may not change beyond [`validate_pod_update`]: the QoS class, set
/// once at creation (`status.qosClass: Invalid value: "...": field is immutable`). The API server
/// fills an omitted class from the old pod before this runs.
pub fn validate_pod_status_update(new: &Pod, old: &Pod) -> Vec<FieldError> {
    let qos = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.qos_class.clone())
            .unwrap_or_default()
    };
    let (new_qos, old_qos) = (qos(new), qos(old));
    // Unlike Kubernetes, a pod stored without a class (none is made so any more) may gain one.
    if new_qos == old_qos || old_qos.is_empty() {
        return Vec::new();
    }
    vec![FieldError::invalid(
        "status.qosClass",
        new_qos,
        "field is immutable",
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn defaulted(value: serde_json::Value) -> serde_json::Value {
        let mut p = pod(value);
        default_pod(&mut p);
        serde_json::to_value(p).unwrap()
    }

    #[test]
    fn pull_policy_from_tag() {
        assert_eq!(default_image_pull_policy("nginx"), "Always");
        assert_eq!(default_image_pull_policy("nginx:latest"), "Always");
        assert_eq!(default_image_pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(
            default_image_pull_policy("registry.k8s.io/pause:3.10"),
            "IfNotPresent"
        );
        assert_eq!(default_image_pull_policy("localhost:5000/app"), "Always");
        assert_eq!(
            default_image_pull_policy("localhost:5000/app:v1"),
            "IfNotPresent"
        );
        assert_eq!(
            default_image_pull_policy("nginx@sha256:abcdef"),
            "IfNotPresent"
        );
        assert_eq!(
            default_image_pull_policy("nginx:latest@sha256:abcdef"),
            "Always"
        );
        assert_eq!(default_image_pull_policy("Nginx"), "IfNotPresent");
        assert_eq!(default_image_pull_policy(""), "IfNotPresent");
        assert_eq!(
            default_image_pull_policy("ghcr.io/org/app-x_y/svc"),
            "Always"
        );
    }

    #[test]
    fn kubectl_run_pod_gets_kubernetes_defaults() {
        let out = defaulted(json!({
            "metadata": {"name": "web2"},
            "spec": {"containers": [{"name": "web2", "image": "nginx", "resources": {}}]}
        }));
        assert_eq!(
            out["spec"],
            json!({
                "containers": [{
                    "name": "web2",
                    "image": "nginx",
                    "imagePullPolicy": "Always",
                    "resources": {},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File"
                }],
                "dnsPolicy": "ClusterFirst",
                "enableServiceLinks": true,
                "preemptionPolicy": "PreemptLowerPriority",
                "priority": 0,
                "restartPolicy": "Always",
                "schedulerName": "default-scheduler",
                "securityContext": {},
                "terminationGracePeriodSeconds": 30
            })
        );
    }

    #[test]
    fn explicit_values_are_kept() {
        let out = defaulted(json!({
            "spec": {
                "restartPolicy": "Never", "dnsPolicy": "Default", "terminationGracePeriodSeconds": 5,
                "enableServiceLinks": false, "priorityClassName": "system-node-critical",
                "containers": [{"name": "c", "image": "nginx:1.27", "imagePullPolicy": "Never"}]
            }
        }));
        assert_eq!(out["spec"]["restartPolicy"], "Never");
        assert_eq!(out["spec"]["dnsPolicy"], "Default");
        assert_eq!(out["spec"]["terminationGracePeriodSeconds"], 5);
        assert_eq!(out["spec"]["enableServiceLinks"], false);
        assert_eq!(out["spec"]["priority"], 2_000_001_000);
        assert_eq!(out["spec"]["containers"][0]["imagePullPolicy"], "Never");
        let out = defaulted(json!({"spec": {"priorityClassName": "custom", "containers": []}}));
        assert!(out["spec"].get("priority").is_none());
    }

    #[test]
    fn ports_probes_and_env() {
        let out = defaulted(json!({
            "spec": {"containers": [{
                "name": "c", "image": "nginx:1.27",
                "ports": [{"containerPort": 80}],
                "livenessProbe": {"httpGet": {"port": 80}},
                "readinessProbe": {"grpc": {"port": 9090}, "periodSeconds": 5},
                "lifecycle": {"preStop": {"httpGet": {"port": "http", "path": "/quit"}}},
                "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
            }]}
        }));
        let c = &out["spec"]["containers"][0];
        assert_eq!(
            c["ports"],
            json!([{"containerPort": 80, "protocol": "TCP"}])
        );
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                   "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(c["readinessProbe"]["periodSeconds"], 5);
        assert_eq!(
            c["readinessProbe"]["grpc"],
            json!({"port": 9090, "service": ""})
        );
        assert_eq!(
            c["lifecycle"]["preStop"]["httpGet"],
            json!({"port": "http", "path": "/quit", "scheme": "HTTP"})
        );
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
    }

    #[test]
    fn requests_default_from_limits() {
        let out = defaulted(json!({
            "spec": {
                "containers": [{"name": "c", "image": "x:1", "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"memory": "64Mi"}}}],
                "initContainers": [{"name": "i", "image": "x:1", "resources": {"limits": {"cpu": "1"}}}]
            }
        }));
        assert_eq!(
            out["spec"]["containers"][0]["resources"]["requests"],
            json!({"cpu": "500m", "memory": "64Mi"})
        );
        assert_eq!(
            out["spec"]["initContainers"][0]["resources"]["requests"],
            json!({"cpu": "1"})
        );
        assert_eq!(
            out["spec"]["initContainers"][0]["terminationMessagePolicy"],
            "File"
        );
    }

    #[test]
    fn host_network_ports_and_volumes() {
        let out = defaulted(json!({
            "spec": {
                "hostNetwork": true,
                "containers": [{"name": "c", "image": "x:1", "ports": [{"containerPort": 8080}, {"containerPort": 53, "hostPort": 5353, "protocol": "UDP"}]}],
                "volumes": [
                    {"name": "scratch"},
                    {"name": "cfg", "configMap": {"name": "app"}},
                    {"name": "sec", "secret": {"secretName": "s"}},
                    {"name": "host", "hostPath": {"path": "/var/log"}},
                    {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}
                ]
            }
        }));
        let ports = &out["spec"]["containers"][0]["ports"];
        assert_eq!(ports[0]["hostPort"], 8080);
        assert_eq!(ports[1]["hostPort"], 5353);
        let vols = &out["spec"]["volumes"];
        assert_eq!(vols[0], json!({"name": "scratch", "emptyDir": {}}));
        assert_eq!(vols[1]["configMap"]["defaultMode"], 420);
        assert_eq!(vols[2]["secret"]["defaultMode"], 420);
        assert_eq!(vols[3]["hostPath"]["type"], "");
        assert_eq!(vols[4]["projected"]["defaultMode"], 420);
        assert_eq!(
            vols[4]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
            3600
        );
    }

    #[test]
    fn service_account_defaults_to_default_and_is_mirrored() {
        let mut p = pod(json!({"spec": {"containers": []}}));
        default_pod(&mut p);
        assert!(p.spec.as_ref().unwrap().service_account_name.is_none());
        default_service_account(&mut p);
        let spec = p.spec.unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some("default"));
        assert_eq!(spec.service_account.as_deref(), Some("default"));
        let mut p = pod(json!({"spec": {"containers": [], "serviceAccount": "builder"}}));
        default_pod(&mut p);
        default_service_account(&mut p);
        let spec = p.spec.unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some("builder"));
        assert_eq!(spec.service_account.as_deref(), Some("builder"));
        let mut p = pod(
            json!({"spec": {"containers": [], "serviceAccountName": "x", "serviceAccount": "old"}}),
        );
        default_service_account(&mut p);
        assert_eq!(p.spec.unwrap().service_account.as_deref(), Some("x"));
        let mut p = pod(
            json!({"metadata": {"annotations": {MIRROR_POD_ANNOTATION: "h"}}, "spec": {"containers": []}}),
        );
        default_service_account(&mut p);
        assert!(p.spec.unwrap().service_account_name.is_none());
    }

    #[test]
    fn qos_class_cannot_change_on_status_updates() {
        let old = pod(json!({"spec": {"containers": []}, "status": {"qosClass": "BestEffort"}}));
        assert!(validate_pod_status_update(&old, &old).is_empty());
        let new = pod(json!({"spec": {"containers": []}, "status": {"qosClass": "Guaranteed"}}));
        let errs = validate_pod_status_update(&new, &old);
        assert_eq!(
            errs[0].to_string(),
            r#"status.qosClass: Invalid value: "Guaranteed": field is immutable"#
        );
    }

    #[test]
    fn default_tolerations() {
        let mut p = pod(json!({"spec": {"containers": []}}));
        add_default_tolerations(&mut p);
        let out = serde_json::to_value(&p).unwrap();
        assert_eq!(
            out["spec"]["tolerations"],
            json!([
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ])
        );
        let mut p = pod(json!({"spec": {"containers": [], "tolerations": [
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}
        ]}}));
        add_default_tolerations(&mut p);
        let t = p.spec.unwrap().tolerations.unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].key.as_deref(), Some("node.kubernetes.io/not-ready"));
        let mut p =
            pod(json!({"spec": {"containers": [], "tolerations": [{"operator": "Exists"}]}}));
        add_default_tolerations(&mut p);
        assert_eq!(p.spec.unwrap().tolerations.unwrap().len(), 1);
    }

    /// (requests, limits) of one container.
    type Resources<'a> = (&'a [(&'a str, &'a str)], &'a [(&'a str, &'a str)]);

    fn spec_with(resources: &[Resources]) -> PodSpec {
        let list = |items: &[(&str, &str)]| {
            Some(
                items
                    .iter()
                    .map(|(k, v)| (k.to_string(), Q(v.to_string())))
                    .collect::<BTreeMap<_, _>>(),
            )
            .filter(|m| !m.is_empty())
        };
        PodSpec {
            containers: resources
                .iter()
                .enumerate()
                .map(|(i, (req, lim))| Container {
                    name: format!("c{i}"),
                    resources: Some(ResourceRequirements {
                        requests: list(req),
                        limits: list(lim),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn qos_classes() {
        assert_eq!(qos_class(&spec_with(&[(&[], &[])])), "BestEffort");
        assert_eq!(
            qos_class(&spec_with(&[(&[("example.com/gpu", "1")], &[])])),
            "BestEffort"
        );
        assert_eq!(
            qos_class(&spec_with(&[(&[("cpu", "100m")], &[])])),
            "Burstable"
        );
        let both = [("cpu", "500m"), ("memory", "128Mi")];
        assert_eq!(qos_class(&spec_with(&[(&both, &both)])), "Guaranteed");
        assert_eq!(
            qos_class(&spec_with(&[(
                &[("cpu", "0.5"), ("memory", "128Mi")],
                &both
            )])),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&spec_with(&[(&both, &both), (&[], &[])])),
            "Burstable"
        );
        assert_eq!(
            qos_class(&spec_with(&[(
                &[("cpu", "100m"), ("memory", "128Mi")],
                &both
            )])),
            "Burstable"
        );
        assert_eq!(
            qos_class(&spec_with(&[(&[], &[("cpu", "1")])])),
            "Burstable"
        );
    }

    #[test]
    fn init_containers_count_towards_the_qos_class() {
        let both: [(&str, &str); 2] = [("cpu", "1"), ("memory", "1Gi")];
        let with_init = |init: Resources| {
            let mut spec = spec_with(&[(&both, &both)]);
            let init_spec = spec_with(&[init]);
            spec.init_containers = Some(init_spec.containers);
            spec
        };
        // An init container without limits spoils Guaranteed.
        assert_eq!(qos_class(&with_init((&[], &[]))), "Burstable");
        assert_eq!(qos_class(&with_init((&both, &both))), "Guaranteed");
        assert_eq!(qos_class(&with_init((&[("cpu", "1")], &[]))), "Burstable");
        // Only an init container asks for something: not BestEffort any more.
        let mut spec = spec_with(&[(&[], &[])]);
        spec.init_containers = Some(spec_with(&[(&[("memory", "1Mi")], &[])]).containers);
        assert_eq!(qos_class(&spec), "Burstable");
    }

    #[test]
    fn defaulted_limits_only_pod_is_guaranteed() {
        let mut p = pod(json!({"spec": {"containers": [{"name": "c", "image": "x:1",
            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}}]}}));
        default_pod(&mut p);
        assert_eq!(qos_class(p.spec.as_ref().unwrap()), "Guaranteed");
    }
}
