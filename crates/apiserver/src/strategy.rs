//! Per-kind rules the REST layer applies around storage: typed decoding (with unknown-field
//! detection for `fieldValidation`), create-time preparation, defaulting, validation, and what an
//! update of the main resource or of a subresource may change. The rules themselves live in
//! `skiff_core`; this file only routes each kind to them.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Binding, ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use skiff_core::validation::FieldError;

use crate::errors::{ApiError, ApiResult};
use crate::object::{self, rfc3339};
use crate::resources::ResourceInfo;

/// An object after a typed round trip, and the fields the typed form did not know.
pub struct Decoded {
    pub obj: Value,
    pub unknown_fields: Vec<String>,
}

/// Decodes `body` as the resource's kind: checks apiVersion/kind, drops fields the kind does not
/// have (reporting them), and fails with Kubernetes' 400 message on type errors.
pub fn decode(info: &ResourceInfo, mut body: Value) -> ApiResult<Decoded> {
    let kind = info.kind;
    if !body.is_object() {
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{}\" cannot be handled as a {kind}: the request body must be a JSON object",
            info.version
        )));
    }
    let api_version = info.api_version();
    if let Some(v) = body
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .filter(|v| !v.is_empty())
        && v != api_version
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({v}) does not match the expected API version ({api_version})"
        )));
    }
    if let Some(k) = body
        .get("kind")
        .and_then(|v| v.as_str())
        .filter(|v| !v.is_empty())
        && k != kind
    {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {kind}): kind {k:?} does not match {kind:?}"
        )));
    }
    body["apiVersion"] = json!(api_version);
    body["kind"] = json!(kind);
    let typed = match kind {
        "Pod" => roundtrip::<Pod>(&body),
        "Node" => roundtrip::<Node>(&body),
        "Namespace" => roundtrip::<Namespace>(&body),
        "Event" => roundtrip::<Event>(&body),
        "Lease" => roundtrip::<Lease>(&body),
        "Binding" => roundtrip::<Binding>(&body),
        "Secret" => roundtrip::<Secret>(&body),
        "ConfigMap" => roundtrip::<ConfigMap>(&body),
        "ServiceAccount" => roundtrip::<ServiceAccount>(&body),
        "Service" => roundtrip::<Service>(&body),
        "Endpoints" => roundtrip::<Endpoints>(&body),
        "EndpointSlice" => roundtrip::<EndpointSlice>(&body),
        _ => Ok(body.clone()),
    }
    .map_err(|e| {
        ApiError::bad_request(format!(
            "{kind} in version \"{}\" cannot be handled as a {kind}: {e}",
            info.version
        ))
    })?;
    let mut unknown_fields = Vec::new();
    unknown(&body, &typed, "", &mut unknown_fields);
    let obj = to_internal(kind, typed)?;
    Ok(Decoded {
        obj,
        unknown_fields,
    })
}

/// What Kubernetes' decoding does besides the typed round trip, for the kinds where that
/// changes the object: a Secret's `stringData` is written into `data` and dropped, and its
/// `type` defaults to `Opaque`; Services, Endpoints and EndpointSlices get their v1 defaults.
/// Every body (create, update, patch result, apply) goes through it.
fn to_internal(kind: &str, obj: Value) -> ApiResult<Value> {
    use skiff_core::service as svc;
    match kind {
        "Secret" => {
            let mut secret: Secret = from_value(&obj)?;
            skiff_core::validation::merge_string_data(&mut secret);
            to_value(&secret)
        }
        "Service" => {
            let mut s: Service = from_value(&obj)?;
            svc::default_service(&mut s);
            to_value(&s)
        }
        "Endpoints" => {
            let mut e: Endpoints = from_value(&obj)?;
            svc::default_endpoints(&mut e);
            to_value(&e)
        }
        "EndpointSlice" => {
            let mut e: EndpointSlice = from_value(&obj)?;
            svc::default_endpoint_slice(&mut e);
            to_value(&e)
        }
        _ => Ok(obj),
    }
}

/// Decodes into the typed form and back. A type error names the field it is in, as Go's
/// decoder does (`json: cannot unmarshal ... field spec.containers[0].image`).
fn roundtrip<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, String> {
    let t: T = serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            format!("json: {inner}")
        } else {
            format!("json: cannot unmarshal field {path}: {inner}")
        }
    })?;
    serde_json::to_value(&t).map_err(|e| e.to_string())
}

/// Collects the paths present (and non-null) in `input` but absent from `typed`.
fn unknown(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(i), Value::Object(t)) => {
            for (k, v) in i {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match t.get(k) {
                    None if !v.is_null() => out.push(p),
                    Some(tv) => unknown(v, tv, &p, out),
                    None => {}
                }
            }
        }
        (Value::Array(i), Value::Array(t)) => {
            for (n, (iv, tv)) in i.iter().zip(t.iter()).enumerate() {
                unknown(iv, tv, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

/// Create-time preparation: system metadata, and the status the server owns at creation.
pub fn prepare_create(info: &ResourceInfo, obj: &mut Value, now: Timestamp) {
    let meta = object::meta_mut(obj);
    meta.insert("uid".into(), json!(object::new_uid()));
    meta.insert("creationTimestamp".into(), json!(rfc3339(now)));
    for f in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
        "generation",
    ] {
        meta.remove(f);
    }
    match info.kind {
        "Pod" => {
            let gated = obj
                .pointer("/spec/schedulingGates")
                .and_then(|g| g.as_array())
                .is_some_and(|g| !g.is_empty());
            let mut status = json!({"phase": "Pending"});
            if gated {
                status["conditions"] = json!([{
                    "type": "PodScheduled", "status": "False", "lastProbeTime": null,
                    "lastTransitionTime": rfc3339(now), "reason": "SchedulingGated",
                    "message": "Scheduling is blocked due to non-empty scheduling gates",
                }]);
            }
            obj["status"] = status;
        }
        "Namespace" => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        // The status is the server's (a load balancer would fill it in).
        "Service" => obj["status"] = json!({"loadBalancer": {}}),
        "EndpointSlice" => {
            object::meta_mut(obj).insert("generation".into(), json!(1));
        }
        _ => {}
    }
}

/// Create-time admission: the kind's defaults plus what admission adds (pod service account,
/// tolerations, QoS),
/// then validation. A pod is decoded to its typed form once for all of it (this is the create
/// hot path).
pub fn admit_create(info: &ResourceInfo, obj: &mut Value) -> ApiResult<Vec<FieldError>> {
    if info.kind != "Pod" {
        return validate_create(info, obj);
    }
    let mut pod: Pod = from_value(obj)?;
    skiff_core::pod::default_pod(&mut pod);
    skiff_core::pod::default_service_account(&mut pod);
    skiff_core::pod::add_default_tolerations(&mut pod);
    let qos = skiff_core::pod::qos_class(pod.spec.as_ref().unwrap_or(&Default::default()));
    let errs = skiff_core::pod::validate_pod(&pod);
    *obj = to_value(&pod)?;
    obj["status"]["qosClass"] = json!(qos);
    Ok(errs)
}

/// Defaulting of every decoded update body, as Kubernetes defaults each object it decodes.
pub fn default_update(info: &ResourceInfo, obj: &mut Value) -> ApiResult<()> {
    if info.kind == "Pod" {
        let mut pod: Pod = from_value(obj)?;
        skiff_core::pod::default_pod(&mut pod);
        *obj = to_value(&pod)?;
    }
    Ok(())
}

fn from_value<T: DeserializeOwned>(v: &Value) -> ApiResult<T> {
    serde_json::from_value(v.clone()).map_err(|e| ApiError::internal(e.to_string()))
}

fn to_value<T: Serialize>(t: &T) -> ApiResult<Value> {
    serde_json::to_value(t).map_err(|e| ApiError::internal(e.to_string()))
}

/// Validation of a new object.
pub fn validate_create(info: &ResourceInfo, obj: &Value) -> ApiResult<Vec<FieldError>> {
    use skiff_core::{pod, validation as v};
    Ok(match info.kind {
        "Pod" => pod::validate_pod(&from_value(obj)?),
        "Node" => v::validate_node(&from_value(obj)?),
        "Namespace" => v::validate_namespace(&from_value(obj)?),
        "Event" => v::validate_event(&from_value(obj)?),
        "Lease" => v::validate_lease(&from_value(obj)?),
        "Secret" => v::validate_secret(&from_value(obj)?),
        "ConfigMap" => v::validate_config_map(&from_value(obj)?),
        "ServiceAccount" => v::validate_service_account(&from_value(obj)?),
        "Service" => v::validate_service(&from_value(obj)?),
        "Endpoints" => v::validate_endpoints(&from_value(obj)?),
        "EndpointSlice" => v::validate_endpoint_slice(&from_value(obj)?),
        _ => Vec::new(),
    })
}

/// Validation of an update (the new object against the old one) of the main resource or of the
/// subresource `sub`.
pub fn validate_update(
    info: &ResourceInfo,
    sub: Option<&str>,
    new: &Value,
    old: &Value,
) -> ApiResult<Vec<FieldError>> {
    use skiff_core::{pod, validation as v};
    if info.kind == "Pod" {
        // Covers the metadata rules and the pod's own, as Kubernetes' ValidatePodUpdate does.
        let (new, old): (Pod, Pod) = (from_value(new)?, from_value(old)?);
        let mut errs = pod::validate_pod_update(&new, &old);
        if sub == Some("status") {
            errs.extend(pod::validate_pod_status_update(&new, &old));
        }
        return Ok(errs);
    }
    match info.kind {
        // Their update rules include the metadata and create rules, as in Kubernetes.
        "Secret" => {
            return Ok(v::validate_secret_update(
                &from_value(new)?,
                &from_value(old)?,
            ));
        }
        "ConfigMap" => {
            return Ok(v::validate_config_map_update(
                &from_value(new)?,
                &from_value(old)?,
            ));
        }
        "ServiceAccount" => {
            return Ok(v::validate_service_account_update(
                &from_value(new)?,
                &from_value(old)?,
            ));
        }
        "Service" if sub == Some("status") => {
            return Ok(v::validate_service_status_update(
                &from_value(new)?,
                &from_value(old)?,
            ));
        }
        "Service" => {
            return Ok(v::validate_service_update(
                &from_value(new)?,
                &from_value(old)?,
            ));
        }
        "Endpoints" => {
            return Ok(v::validate_endpoints_update(
                &from_value(new)?,
                &from_value(old)?,
            ));
        }
        "EndpointSlice" => {
            return Ok(v::validate_endpoint_slice_update(
                &from_value(new)?,
                &from_value(old)?,
            ));
        }
        _ => {}
    }
    let new_meta = from_value(new.get("metadata").unwrap_or(&Value::Null))?;
    let old_meta = from_value(old.get("metadata").unwrap_or(&Value::Null))?;
    let mut errs = v::validate_object_meta_update(&new_meta, &old_meta);
    errs.extend(validate_create(info, new)?);
    Ok(errs)
}

/// What an update may change: the main resource keeps the old status, the status subresource
/// keeps the old spec and metadata, `finalize` changes only `spec.finalizers`. System metadata is
/// carried over from the old object either way.
pub fn prepare_update(info: &ResourceInfo, sub: Option<&str>, new: &mut Value, old: &Value) {
    let has_status = matches!(info.kind, "Pod" | "Node" | "Namespace" | "Service");
    match sub {
        Some("status") => {
            let status = new.get("status").cloned();
            let rv = object::resource_version(new).map(String::from);
            *new = old.clone();
            match status {
                Some(s) => new["status"] = s,
                None => {
                    new.as_object_mut().map(|m| m.remove("status"));
                }
            }
            if let Some(rv) = rv {
                object::meta_mut(new).insert("resourceVersion".into(), json!(rv));
            }
            // The QoS class is set once at creation; a status write that omits it keeps it.
            if info.kind == "Pod"
                && new
                    .pointer("/status/qosClass")
                    .is_none_or(|q| q.is_null() || q == "")
                && let Some(q) = old.pointer("/status/qosClass")
            {
                new["status"]["qosClass"] = q.clone();
            }
        }
        Some("finalize") => {
            let finalizers = new.pointer("/spec/finalizers").cloned();
            *new = old.clone();
            new["spec"]["finalizers"] = finalizers.unwrap_or(json!([]));
        }
        _ => {
            if has_status {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        new.as_object_mut().map(|m| m.remove("status"));
                    }
                }
            }
            // A namespace's spec.finalizers change only through `finalize`.
            if info.kind == "Namespace" {
                match old.pointer("/spec/finalizers") {
                    Some(f) => new["spec"]["finalizers"] = f.clone(),
                    None => {
                        if let Some(spec) = new.get_mut("spec").and_then(|s| s.as_object_mut()) {
                            spec.remove("finalizers");
                        }
                    }
                }
            }
        }
    }
    if info.kind == "EndpointSlice" {
        endpoint_slice_generation(new, old);
    }
    let old_meta = object::meta(old).cloned().unwrap_or_default();
    let meta = object::meta_mut(new);
    for f in [
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "name",
    ] {
        match old_meta.get(f) {
            Some(v) => meta.insert(f.into(), v.clone()),
            None => meta.remove(f),
        };
    }
    if meta.get("uid").is_none_or(|u| u.as_str() == Some(""))
        && let Some(u) = old_meta.get("uid")
    {
        meta.insert("uid".into(), u.clone());
    }
}

/// An EndpointSlice's generation moves on when anything but its metadata, or its labels, change
/// (it has no status), as Kubernetes' EndpointSlice strategy does.
fn endpoint_slice_generation(new: &mut Value, old: &Value) {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
        }
        v
    };
    let old_gen = old
        .pointer("/metadata/generation")
        .and_then(|g| g.as_i64())
        .unwrap_or(0);
    let changed = strip(new) != strip(old)
        || new.pointer("/metadata/labels") != old.pointer("/metadata/labels");
    let generation = if changed { old_gen + 1 } else { old_gen };
    object::meta_mut(new).insert("generation".into(), json!(generation));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static ResourceInfo {
        crate::resources::lookup("", "v1", "pods").unwrap()
    }

    #[test]
    fn pods_are_admitted_with_a_service_account_and_a_qos_class() {
        let mut obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        admit_create(pods(), &mut obj).unwrap();
        assert_eq!(obj["spec"]["serviceAccountName"], "default");
        assert_eq!(obj["spec"]["serviceAccount"], "default");
        assert_eq!(obj["status"]["qosClass"], "BestEffort");
    }

    #[test]
    fn a_status_update_without_qos_class_keeps_it() {
        let old = json!({"metadata": {"name": "p"}, "spec": {},
            "status": {"phase": "Pending", "qosClass": "Burstable"}});
        let mut new = json!({"metadata": {"name": "p"}, "status": {"phase": "Running"}});
        prepare_update(pods(), Some("status"), &mut new, &old);
        assert_eq!(
            new["status"],
            json!({"phase": "Running", "qosClass": "Burstable"})
        );
        let mut new = json!({"metadata": {"name": "p"}, "status": {"qosClass": null}});
        prepare_update(pods(), Some("status"), &mut new, &old);
        assert_eq!(new["status"]["qosClass"], "Burstable");
    }
}
