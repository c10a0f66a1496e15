//! Pod update validation (`ValidatePodUpdate`): a pod's spec is immutable except container and
//! init-container images, `activeDeadlineSeconds` (set, or lowered), additions to `tolerations`
//! (existing ones may only change `tolerationSeconds`), removal of scheduling gates, and
//! `terminationGracePeriodSeconds` going from a negative value to 1.
//!
//! Both pods must be defaulted (the API server defaults every decoded object), otherwise fields
//! filled in by defaulting count as changes. Specs are compared the way Kubernetes' semantic
//! equality does: empty and absent lists/maps are equal, quantities compare by value.
//! Not covered: the node-selector/affinity additions allowed while a pod is scheduling-gated,
//! and the AppArmor annotation rules. The `Forbidden` message omits the spec diff Kubernetes
//! appends after its first line.

use super::errors::{FieldError, FieldPath};
use super::meta::validate_object_meta_update;
use super::names::inclusive_range_error;
use super::pod::{validate_pod_metadata_and_spec, validate_tolerations};
use crate::quantity::Quantity;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Toleration};
use serde_json::Value;

const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
const MAX_INT32: i64 = 2_147_483_647;

/// The fields a pod update may change, as listed in the `Forbidden` message.
const UPDATABLE_POD_SPEC_FIELDS: [&str; 5] = [
    "`spec.containers[*].image`",
    "`spec.initContainers[*].image`",
    "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
];

/// Keys whose empty-object value equals absence (Go maps and non-pointer structs).
const EMPTY_OBJECT_IS_ABSENT: [&str; 5] = [
    "nodeSelector",
    "overhead",
    "limits",
    "requests",
    "resources",
];

/// Keys whose values are resource lists (compared by quantity value).
const RESOURCE_LISTS: [&str; 3] = ["limits", "requests", "overhead"];

pub(crate) fn validate_pod_update(new: &Pod, old: &Pod) -> Vec<FieldError> {
    let mut errs = validate_object_meta_update(&new.metadata, &old.metadata);
    errs.extend(validate_pod_metadata_and_spec(new));
    errs.extend(mirror_annotation_errors(new, old));
    let default_spec = PodSpec::default();
    let new_spec = new.spec.as_ref().unwrap_or(&default_spec);
    let old_spec = old.spec.as_ref().unwrap_or(&default_spec);
    let path = FieldPath::new("spec");

    let lists = [
        (
            "containers",
            &new_spec.containers[..],
            &old_spec.containers[..],
        ),
        (
            "initContainers",
            list(&new_spec.init_containers),
            list(&old_spec.init_containers),
        ),
    ];
    for (field, new_list, old_list) in lists {
        let (container_errs, stop) =
            container_update_errors(new_list, old_list, &path.child(field));
        errs.extend(container_errs);
        if stop {
            return errs;
        }
    }
    match deadline_errors(
        new_spec.active_deadline_seconds,
        old_spec.active_deadline_seconds,
        &path,
    ) {
        Err(e) => {
            errs.push(e);
            return errs;
        }
        Ok(Some(e)) => errs.push(e),
        Ok(None) => {}
    }
    errs.extend(toleration_update_errors(
        list(&new_spec.tolerations),
        list(&old_spec.tolerations),
        &path.child("tolerations"),
    ));
    errs.extend(scheduling_gate_errors(
        new_spec,
        old_spec,
        &path.child("schedulingGates"),
    ));
    if !specs_equal(&munge(new_spec, old_spec), old_spec) {
        errs.push(FieldError::forbidden(
            path,
            format!(
                "pod updates may not change fields other than {}",
                UPDATABLE_POD_SPEC_FIELDS.join(",")
            ),
        ));
    }
    errs
}

fn list<T>(o: &Option<Vec<T>>) -> &[T] {
    o.as_deref().unwrap_or_default()
}

/// The container count may not change; every image must stay set and unpadded.
/// The flag is true when validation must stop here.
fn container_update_errors(
    new: &[Container],
    old: &[Container],
    path: &FieldPath,
) -> (Vec<FieldError>, bool) {
    if new.len() != old.len() {
        return (
            vec![FieldError::forbidden(
                path,
                "pod updates may not add or remove containers",
            )],
            true,
        );
    }
    let mut errs = Vec::new();
    for (i, c) in new.iter().enumerate() {
        let image = c.image.as_deref().unwrap_or_default();
        if image.is_empty() {
            errs.push(FieldError::required(path.index(i).child("image"), ""));
        }
        if image.trim().len() != image.len() {
            errs.push(FieldError::invalid(
                path.index(i).child("image"),
                image,
                "must not have leading or trailing whitespace",
            ));
        }
    }
    (errs, false)
}

/// `activeDeadlineSeconds` may be set or lowered. `Err` stops validation, as in Kubernetes.
fn deadline_errors(
    new: Option<i64>,
    old: Option<i64>,
    path: &FieldPath,
) -> Result<Option<FieldError>, FieldError> {
    let p = path.child("activeDeadlineSeconds");
    match (new, old) {
        (Some(n), _) if !(0..=MAX_INT32).contains(&n) => Err(FieldError::invalid(
            p,
            n,
            inclusive_range_error(0, MAX_INT32),
        )),
        (Some(n), Some(o)) if o < n => Err(FieldError::invalid(
            p,
            n,
            "must be less than or equal to previous value",
        )),
        (None, Some(_)) => Ok(Some(FieldError::invalid(
            p,
            Value::Null,
            "must not update from a positive integer to nil value",
        ))),
        _ => Ok(None),
    }
}

/// Every old toleration must still be present (its `tolerationSeconds` may change).
fn toleration_update_errors(
    new: &[Toleration],
    old: &[Toleration],
    path: &FieldPath,
) -> Vec<FieldError> {
    let same_except_seconds = |a: &Toleration, b: &Toleration| {
        a.key == b.key && a.operator == b.operator && a.value == b.value && a.effect == b.effect
    };
    for o in old {
        if !new.iter().any(|n| same_except_seconds(o, n)) {
            return vec![FieldError::forbidden(
                path,
                "existing toleration can not be modified except its tolerationSeconds",
            )];
        }
    }
    validate_tolerations(new, path)
}

/// Scheduling gates may only be removed.
fn scheduling_gate_errors(new: &PodSpec, old: &PodSpec, path: &FieldPath) -> Vec<FieldError> {
    let old_names: Vec<&str> = list(&old.scheduling_gates)
        .iter()
        .map(|g| g.name.as_str())
        .collect();
    list(&new.scheduling_gates)
        .iter()
        .enumerate()
        .filter(|(_, g)| !old_names.contains(&g.name.as_str()))
        .map(|(i, g)| {
            FieldError::forbidden(
                path.index(i).child("name"),
                format!(
                    "only deletion is allowed, but found new scheduling gate '{}'",
                    g.name
                ),
            )
        })
        .collect()
}

/// The mirror-pod annotation can be neither added, changed nor removed.
fn mirror_annotation_errors(new: &Pod, old: &Pod) -> Vec<FieldError> {
    let get = |p: &Pod| {
        p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(MIRROR_POD_ANNOTATION))
            .cloned()
    };
    let path = FieldPath::new("metadata")
        .child("annotations")
        .key(MIRROR_POD_ANNOTATION);
    match (get(new), get(old)) {
        (Some(n), Some(o)) if n == o => Vec::new(),
        (None, None) => Vec::new(),
        (Some(_), None) => vec![FieldError::forbidden(
            path,
            "may not add mirror pod annotation",
        )],
        _ => vec![FieldError::forbidden(
            path,
            "may not remove or update mirror pod annotation",
        )],
    }
}

/// `new` with every field an update may change reset to its value in `old`.
fn munge(new: &PodSpec, old: &PodSpec) -> PodSpec {
    let mut m = new.clone();
    for (c, o) in m.containers.iter_mut().zip(&old.containers) {
        c.image = o.image.clone();
    }
    if let (Some(cs), Some(os)) = (m.init_containers.as_mut(), old.init_containers.as_ref()) {
        for (c, o) in cs.iter_mut().zip(os) {
            c.image = o.image.clone();
        }
    }
    m.active_deadline_seconds = old.active_deadline_seconds;
    m.scheduling_gates = old.scheduling_gates.clone();
    m.tolerations = old.tolerations.clone();
    if old.termination_grace_period_seconds.is_some_and(|g| g < 0)
        && m.termination_grace_period_seconds == Some(1)
    {
        m.termination_grace_period_seconds = old.termination_grace_period_seconds;
    }
    m
}

/// Kubernetes' semantic equality of two pod specs.
fn specs_equal(a: &PodSpec, b: &PodSpec) -> bool {
    let normal = |s: &PodSpec| normalize(serde_json::to_value(s).unwrap_or(Value::Null), None);
    normal(a) == normal(b)
}

/// Drops empty lists (and empty maps where Go has a map or value struct) and turns resource
/// quantities into their milli-value, so that equal specs compare equal.
fn normalize(value: Value, key: Option<&str>) -> Value {
    match value {
        Value::Object(map) => {
            let quantities = key.is_some_and(|k| RESOURCE_LISTS.contains(&k));
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let v = if quantities {
                    quantity_value(v)
                } else {
                    normalize(v, Some(&k))
                };
                if is_absent(&v, &k) {
                    continue;
                }
                out.insert(k, v);
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| normalize(v, None)).collect())
        }
        other => other,
    }
}

fn is_absent(v: &Value, key: &str) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty() && EMPTY_OBJECT_IS_ABSENT.contains(&key),
        _ => false,
    }
}

fn quantity_value(v: Value) -> Value {
    match v.as_str().and_then(|s| Quantity::parse(s).ok()) {
        Some(q) => Value::String(format!("{}m", q.milli_value())),
        None => v,
    }
}
