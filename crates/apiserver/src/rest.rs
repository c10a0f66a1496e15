//! The REST layer: routes a request to a resource and verb, and carries out create, get, list,
//! update, patch and delete against the store with Kubernetes' semantics (optimistic
//! concurrency, graceful pod deletion, finalizers, field validation, dry runs).

use std::sync::Arc;

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::{Value, json};
use skiff_core::selector::{FieldSelector, LabelSelector};
use skiff_store::{Store, StoreError};

use crate::errors::{ApiError, ApiResult};
use crate::object::{self, rfc3339};
use crate::query::Params;
use crate::resources::{self, ResourceInfo};
use crate::strategy;
use crate::table;

/// Shared state of the API server.
pub struct Api {
    pub store: Arc<dyn Store>,
    /// `host:port` this server is reached at, for legacy discovery.
    pub server_address: String,
    pub metrics: crate::metrics::Metrics,
    /// The secret the credential the API server presents to each node's agent (pods/log and
    /// friends) is derived from ([`crate::auth::agent_token_for`]).
    pub agent_token: String,
    /// The Service network and its cluster IP and node port allocators.
    pub services: crate::services::Allocators,
}

/// A request resolved to a resource: `/api/v1/namespaces/default/pods/web/status`.
pub struct Target {
    pub info: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

impl Target {
    /// Resolves the path segments after the group version; None when no resource matches.
    pub fn resolve(group: &str, version: &str, segs: &[&str]) -> Option<Target> {
        if segs.first() == Some(&"namespaces")
            && segs.len() >= 3
            && let Some(info) = resources::lookup(group, version, segs[2]).filter(|i| i.namespaced)
        {
            if segs.len() > 5 {
                return None;
            }
            return Some(Target {
                info,
                namespace: Some(segs[1].to_string()),
                name: segs.get(3).map(|s| s.to_string()),
                sub: segs.get(4).map(|s| s.to_string()),
            });
        }
        let info = resources::lookup(group, version, segs.first()?)?;
        if segs.len() > 3 || (info.namespaced && segs.len() > 1) {
            return None;
        }
        Some(Target {
            info,
            namespace: None,
            name: segs.get(1).map(|s| s.to_string()),
            sub: segs.get(2).map(|s| s.to_string()),
        })
    }

    fn key(&self, name: &str) -> String {
        self.info.key(self.namespace.as_deref(), name)
    }
}

/// A response body in JSON with a status code.
pub fn json_response(code: StatusCode, v: &Value) -> Response {
    json_typed(code, v, "application/json")
}

pub fn json_typed(code: StatusCode, v: &Value, content_type: &'static str) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (code, [("content-type", content_type)], body).into_response()
}

fn now() -> Timestamp {
    Timestamp::now()
}

/// Carries out one resource request.
pub async fn serve_resource(
    api: &Arc<Api>,
    target: Target,
    method: &Method,
    params: &Params,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let accept = header(headers, "accept");
    let content_type = header(headers, "content-type");
    let info = target.info;
    if info.namespaced && target.namespace.is_none() && *method != Method::GET {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} {}): name a namespace",
            method.as_str(),
            info.qualified()
        )));
    }
    if let Some(sub) = &target.sub
        && !info.has_subresource(sub)
    {
        return Err(ApiError::no_route());
    }
    match (method.clone(), target.name.is_some(), target.sub.as_deref()) {
        (Method::GET, false, None) if params.flag("watch") => {
            crate::watch::serve_watch(api, &target, params, wants_table(accept)).await
        }
        (Method::GET, false, None) => list(api, &target, params, accept).await,
        (Method::GET, true, None | Some("status")) => get(api, &target, params, accept).await,
        (Method::GET, true, Some("log")) => {
            let ns = target.namespace.as_deref().unwrap_or("default");
            crate::logs::serve_log(api, ns, target.name.as_deref().unwrap_or(""), params).await
        }
        (Method::POST, false, None) if info.resource == "bindings" => {
            let body = decode_body(content_type, body)?;
            bind(api, &target, body, params).await
        }
        (Method::POST, false, None) => {
            let body = decode_body(content_type, body)?;
            create(api, &target, body, params).await
        }
        (Method::POST, true, Some("binding")) => {
            let body = decode_body(content_type, body)?;
            bind(api, &target, body, params).await
        }
        (Method::PUT, true, None | Some("status") | Some("finalize")) => {
            let body = decode_body(content_type, body)?;
            replace(api, &target, body, params).await
        }
        (Method::PATCH, true, None | Some("status")) => {
            patch(api, &target, content_type, body, params).await
        }
        (Method::DELETE, true, None) => {
            let opts = delete_options(body, params)?;
            delete(api, &target, &opts, opts.dry_run).await
        }
        (Method::DELETE, false, None) if info.verbs.contains(&"deletecollection") => {
            let opts = delete_options(body, params)?;
            delete_collection(api, &target, params, &opts).await
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} {})",
            method.as_str(),
            info.qualified()
        ))),
    }
}

pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn wants_table(accept: &str) -> bool {
    table::wants_table(accept)
}

/// Decodes a request body by its content type: JSON, YAML or Kubernetes protobuf.
pub fn decode_body(content_type: &str, body: &[u8]) -> ApiResult<Value> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    match ct {
        "application/vnd.kubernetes.protobuf" => crate::protobuf::decode(body),
        "application/yaml" | "application/apply-patch+yaml" | "text/yaml" => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("the request body is not valid UTF-8"))?;
            serde_saphyr::from_str::<Value>(text)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
        }
        _ => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the request body could not be decoded: json: {e}"))
        }),
    }
}

/// Reads one object; 404 when absent.
pub async fn read(
    api: &Api,
    info: &ResourceInfo,
    key: &str,
    name: &str,
) -> ApiResult<(Value, u64)> {
    match api.store.get(key).await? {
        Some(kv) => {
            let v = object::decode_stored(&kv.value, kv.mod_revision).ok_or_else(|| {
                ApiError::internal(format!("stored object {key} is not valid JSON"))
            })?;
            Ok((v, kv.mod_revision))
        }
        None => Err(ApiError::not_found(&info.qualified(), name)),
    }
}

async fn get(api: &Arc<Api>, t: &Target, params: &Params, accept: &str) -> ApiResult<Response> {
    let name = t.name.as_deref().unwrap_or("");
    let (obj, _) = read(api, t.info, &t.key(name), name).await?;
    if wants_table(accept) {
        let rv = object::resource_version(&obj).unwrap_or("").to_string();
        let tbl = table::table(
            t.info,
            &[obj],
            json!({"resourceVersion": rv}),
            params.include_object(),
            true,
            now(),
        );
        return Ok(json_typed(StatusCode::OK, &tbl, table::TABLE_CONTENT_TYPE));
    }
    Ok(json_response(StatusCode::OK, &obj))
}

/// Whether an object passes the request's label and field selectors.
pub fn selected(
    info: &ResourceInfo,
    obj: &Value,
    labels: Option<&LabelSelector>,
    fields: Option<&FieldSelector>,
) -> bool {
    if let Some(l) = labels
        && !l.matches(&object::labels(obj))
    {
        return false;
    }
    if let Some(f) = fields {
        return f
            .matches(|field| skiff_core::fields::field_value(info.resource, obj, field).flatten());
    }
    true
}

/// A list page: the objects, the store revision, and the key to continue after.
pub struct Page {
    pub items: Vec<Value>,
    pub revision: u64,
    pub continue_after: Option<String>,
}

/// Lists matching objects under the target's prefix, `limit` at a time (0 = all), starting after
/// the key in a continue token.
pub async fn list_page(
    api: &Api,
    info: &ResourceInfo,
    namespace: Option<&str>,
    params: &Params,
) -> ApiResult<Page> {
    let labels = params.label_selector()?;
    let fields = params.field_selector(info)?;
    let limit = params.limit();
    let prefix = info.namespace_prefix(namespace);
    let mut start_after = match params.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => Some(decode_continue(token, &prefix)?),
        None => None,
    };
    let mut items = Vec::new();
    let mut revision = 0;
    loop {
        let batch = if limit == 0 {
            0
        } else {
            (limit - items.len()).max(64)
        };
        let res = api
            .store
            .list(&prefix, start_after.as_deref(), batch)
            .await?;
        if revision == 0 {
            revision = res.revision;
        }
        let n = res.items.len();
        for (i, kv) in res.items.into_iter().enumerate() {
            let Some(obj) = object::decode_stored(&kv.value, kv.mod_revision) else {
                continue;
            };
            if selected(info, &obj, labels.as_ref(), fields.as_ref()) {
                items.push(obj);
            }
            if limit > 0 && items.len() >= limit {
                let more = res.more || i + 1 < n;
                return Ok(Page {
                    items,
                    revision,
                    continue_after: more.then_some(kv.key),
                });
            }
            start_after = Some(kv.key);
        }
        if !res.more {
            return Ok(Page {
                items,
                revision,
                continue_after: None,
            });
        }
    }
}

fn encode_continue(key: &str, revision: u64) -> String {
    use base64::Engine;
    let raw = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": key}).to_string();
    base64::engine::general_purpose::URL_SAFE.encode(raw)
}

fn decode_continue(token: &str, prefix: &str) -> ApiResult<String> {
    use base64::Engine;
    let bad = || ApiError::bad_request("continue key is not valid: the token could not be decoded");
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let key = v.get("start").and_then(|s| s.as_str()).ok_or_else(bad)?;
    if !key.starts_with(prefix) {
        return Err(bad());
    }
    Ok(key.to_string())
}

async fn list(api: &Arc<Api>, t: &Target, params: &Params, accept: &str) -> ApiResult<Response> {
    let page = list_page(api, t.info, t.namespace.as_deref(), params).await?;
    let mut meta = json!({"resourceVersion": page.revision.to_string()});
    if let Some(k) = &page.continue_after {
        meta["continue"] = json!(encode_continue(k, page.revision));
    }
    if wants_table(accept) {
        let tbl = table::table(
            t.info,
            &page.items,
            meta,
            params.include_object(),
            true,
            now(),
        );
        return Ok(json_typed(StatusCode::OK, &tbl, table::TABLE_CONTENT_TYPE));
    }
    let list = json!({
        "kind": t.info.list_kind(),
        "apiVersion": t.info.api_version(),
        "metadata": meta,
        "items": page.items,
    });
    Ok(json_response(StatusCode::OK, &list))
}

/// Rejects or warns about unknown fields as `fieldValidation` asks; returns warnings.
fn check_unknown_fields(
    info: &ResourceInfo,
    unknown: &[String],
    params: &Params,
) -> ApiResult<Vec<String>> {
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let msgs: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    match params.field_validation() {
        "Strict" => Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            info.kind,
            info.version,
            info.kind,
            msgs.join(", ")
        ))),
        "Ignore" => Ok(Vec::new()),
        _ => Ok(msgs),
    }
}

fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let v = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(h) = axum::http::HeaderValue::from_str(&v) {
            resp.headers_mut().append("warning", h);
        }
    }
    resp
}

fn invalid(
    info: &ResourceInfo,
    name: &str,
    errs: &[skiff_core::validation::FieldError],
) -> ApiError {
    ApiError::invalid(info.kind, info.group, name, errs)
}

/// The namespace of a namespaced object must exist and not be terminating.
async fn check_namespace(api: &Api, info: &ResourceInfo, ns: &str, name: &str) -> ApiResult<()> {
    let ns_info = resources::lookup("", "v1", "namespaces").expect("namespaces");
    match api.store.get(&ns_info.key(None, ns)).await? {
        None => Err(ApiError::not_found("namespaces", ns)),
        Some(kv) => {
            let v: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
            if object::path(&v, "status.phase").and_then(|p| p.as_str()) == Some("Terminating") {
                let mut e = ApiError::forbidden(format!(
                    "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    info.qualified()
                ));
                e.details = Some(json!({"name": name, "kind": info.resource, "causes": [{
                    "reason": "NamespaceTerminating",
                    "message": format!("namespace {ns} is being terminated"),
                    "field": "metadata.namespace"}]}));
                Err(e)
            } else {
                Ok(())
            }
        }
    }
}

/// Creates an object (also used by server-side apply when the object is absent).
pub async fn create_object(
    api: &Api,
    info: &'static ResourceInfo,
    url_namespace: Option<&str>,
    body: Value,
    params: &Params,
) -> ApiResult<(Value, Vec<String>)> {
    let decoded = strategy::decode(info, body)?;
    let warnings = check_unknown_fields(info, &decoded.unknown_fields, params)?;
    let mut obj = decoded.obj;
    if info.namespaced {
        let url_ns = url_namespace.unwrap_or("default");
        match object::namespace(&obj) {
            Some(ns) if ns != url_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                object::meta_mut(&mut obj).insert("namespace".into(), json!(url_ns));
            }
        }
    } else {
        object::meta_mut(&mut obj).remove("namespace");
    }
    if object::name(&obj).is_empty()
        && let Some(g) = object::meta_str(&obj, "generateName").filter(|g| !g.is_empty())
    {
        let name = format!("{g}{}", object::random_suffix());
        object::meta_mut(&mut obj).insert("name".into(), json!(name));
    }
    let t = now();
    strategy::prepare_create(info, &mut obj, t);
    // Cluster IPs and node ports, taken before the write and given back if it does not happen.
    let reservation =
        crate::services::begin_create(&api.services, info, &mut obj, params.dry_run())?;
    let errs = strategy::admit_create(info, &mut obj)?;
    let name = object::name(&obj).to_string();
    if !errs.is_empty() {
        return Err(invalid(info, &name, &errs));
    }
    if info.namespaced {
        let ns = object::namespace(&obj).unwrap_or("default").to_string();
        check_namespace(api, info, &ns, &name).await?;
    }
    let key = info.key(object::namespace(&obj), &name);
    if params.dry_run() {
        if api.store.get(&key).await?.is_some() {
            return Err(ApiError::already_exists(&info.qualified(), &name));
        }
        return Ok((obj, warnings));
    }
    match api.store.create(&key, object::encode_for_store(&obj)).await {
        Ok(kv) => {
            if let Some(r) = reservation {
                r.commit();
            }
            object::set_resource_version(&mut obj, kv.mod_revision);
            Ok((obj, warnings))
        }
        Err(StoreError::AlreadyExists) => Err(ApiError::already_exists(&info.qualified(), &name)),
        Err(e) => Err(e.into()),
    }
}

async fn create(api: &Arc<Api>, t: &Target, body: Value, params: &Params) -> ApiResult<Response> {
    let (obj, warnings) = create_object(api, t.info, t.namespace.as_deref(), body, params).await?;
    Ok(with_warnings(
        json_response(StatusCode::CREATED, &obj),
        &warnings,
    ))
}

/// How an update computes the new object from the current one.
pub enum Change<'a> {
    /// PUT: the client's object (its resourceVersion, if any, is a precondition).
    Replace(Value),
    /// PATCH and friends: a function of the current object.
    Patch(&'a (dyn Fn(&Value) -> ApiResult<Value> + Send + Sync)),
}

/// Read-modify-write of one object with optimistic concurrency: a conflict with a concurrent
/// writer is retried unless the client pinned a resourceVersion. Returns the stored object.
pub async fn update_object(
    api: &Api,
    info: &'static ResourceInfo,
    namespace: Option<&str>,
    name: &str,
    sub: Option<&str>,
    change: Change<'_>,
    params: &Params,
) -> ApiResult<(Value, Vec<String>)> {
    let key = info.key(namespace, name);
    for _attempt in 0..16 {
        let (current, current_rv) = read(api, info, &key, name).await?;
        let proposed = match &change {
            Change::Replace(v) => v.clone(),
            Change::Patch(f) => f(&current)?,
        };
        let decoded = strategy::decode(info, proposed)?;
        let warnings = check_unknown_fields(info, &decoded.unknown_fields, params)?;
        let mut new = decoded.obj;
        let body_name = object::name(&new).to_string();
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if let (Some(ns), Some(body_ns)) = (namespace, object::namespace(&new))
            && ns != body_ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        // A uid in the body is a precondition, as in Kubernetes (a writer for an older pod of the
        // same name must not touch the new one).
        let body_uid = object::meta_str(&new, "uid").unwrap_or("");
        let current_uid = object::meta_str(&current, "uid").unwrap_or("");
        if !body_uid.is_empty() && body_uid != current_uid {
            return Err(ApiError::conflict(
                &info.qualified(),
                name,
                &format!(
                    "Precondition failed: UID in precondition: {body_uid}, UID in object meta: {current_uid}"
                ),
            ));
        }
        let pinned = object::resource_version(&new).map(String::from);
        // A patch is re-applied to the fresh object after a conflict (its resourceVersion, if it
        // set one, is checked again); a PUT with a resourceVersion is not retried.
        let retry = matches!(change, Change::Patch(_)) || pinned.is_none();
        if let Some(rv) = &pinned
            && rv != &current_rv.to_string()
        {
            return Err(ApiError::modified(&info.qualified(), name));
        }
        strategy::prepare_update(info, sub, &mut new, &current);
        strategy::default_update(info, &mut new)?;
        let reservation = crate::services::begin_update(
            &api.services,
            info,
            sub,
            &mut new,
            &current,
            params.dry_run(),
        )?;
        let errs = strategy::validate_update(info, sub, &new, &current)?;
        if !errs.is_empty() {
            return Err(invalid(info, name, &errs));
        }
        object::set_resource_version(&mut new, current_rv);
        if new == current || params.dry_run() {
            return Ok((new, warnings));
        }
        // An object being deleted whose last finalizer went away is removed now (a namespace
        // only once its own spec.finalizers are empty too).
        let spec_finalizers_left = info.kind == "Namespace"
            && new
                .pointer("/spec/finalizers")
                .and_then(|f| f.as_array())
                .is_some_and(|f| !f.is_empty());
        if object::is_deleting(&new)
            && !spec_finalizers_left
            && object::finalizers(&new).is_empty()
            && new
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(|g| g.as_i64())
                .unwrap_or(0)
                == 0
        {
            match api.store.delete(&key, Some(current_rv)).await {
                Ok(kv) => {
                    if let Some(r) = reservation {
                        r.commit();
                    }
                    crate::services::after_delete(api, info, &new).await;
                    object::set_resource_version(&mut new, kv.mod_revision);
                    return Ok((new, warnings));
                }
                Err(StoreError::Conflict { .. }) if retry => continue,
                Err(StoreError::Conflict { .. }) => {
                    return Err(ApiError::modified(&info.qualified(), name));
                }
                Err(StoreError::NotFound) => {
                    return Err(ApiError::not_found(&info.qualified(), name));
                }
                Err(e) => return Err(e.into()),
            }
        }
        match api
            .store
            .update(&key, object::encode_for_store(&new), Some(current_rv))
            .await
        {
            Ok(kv) => {
                if let Some(r) = reservation {
                    r.commit();
                }
                object::set_resource_version(&mut new, kv.mod_revision);
                return Ok((new, warnings));
            }
            Err(StoreError::Conflict { .. }) if retry => continue,
            Err(StoreError::Conflict { .. }) => {
                return Err(ApiError::modified(&info.qualified(), name));
            }
            Err(StoreError::NotFound) => return Err(ApiError::not_found(&info.qualified(), name)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::modified(&info.qualified(), name))
}

async fn replace(api: &Arc<Api>, t: &Target, body: Value, params: &Params) -> ApiResult<Response> {
    let name = t.name.as_deref().unwrap_or("");
    let (obj, warnings) = update_object(
        api,
        t.info,
        t.namespace.as_deref(),
        name,
        t.sub.as_deref(),
        Change::Replace(body),
        params,
    )
    .await?;
    Ok(with_warnings(
        json_response(StatusCode::OK, &obj),
        &warnings,
    ))
}

async fn patch(
    api: &Arc<Api>,
    t: &Target,
    content_type: &str,
    body: &[u8],
    params: &Params,
) -> ApiResult<Response> {
    let info = t.info;
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let patch_doc = match ct.as_str() {
        "application/json-patch+json"
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json" => decode_body("application/json", body)?,
        "application/apply-patch+yaml" => decode_body(&ct, body)?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    if ct == "application/apply-patch+yaml" {
        return server_side_apply(api, t, patch_doc, params).await;
    }
    let kind = info.kind;
    let apply = move |current: &Value| -> ApiResult<Value> {
        let mut v = current.clone();
        let res = match ct.as_str() {
            "application/json-patch+json" => {
                skiff_core::patch::json_patch(&mut v, &patch_doc).map(|_| v)
            }
            "application/merge-patch+json" => {
                if !patch_doc.is_object() {
                    return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                }
                skiff_core::patch::merge_patch(&mut v, &patch_doc);
                Ok(v)
            }
            _ => skiff_core::patch::strategic_merge_patch(current, &patch_doc, kind),
        };
        res.map_err(patch_error)
    };
    patch_with(api, t, &apply, params).await
}

/// Applies `change` to the target object through the update path and answers 200 with the result.
async fn patch_with(
    api: &Api,
    t: &Target,
    change: &(dyn Fn(&Value) -> ApiResult<Value> + Send + Sync),
    params: &Params,
) -> ApiResult<Response> {
    let name = t.name.as_deref().unwrap_or("");
    let (obj, warnings) = update_object(
        api,
        t.info,
        t.namespace.as_deref(),
        name,
        t.sub.as_deref(),
        Change::Patch(change),
        params,
    )
    .await?;
    Ok(with_warnings(
        json_response(StatusCode::OK, &obj),
        &warnings,
    ))
}

fn patch_error(e: skiff_core::patch::PatchError) -> ApiError {
    match e {
        skiff_core::patch::PatchError::Invalid(m) => ApiError::bad_request(m),
        skiff_core::patch::PatchError::Conflict(m) => {
            let mut err = ApiError::internal(m);
            err.code = 422;
            err.reason = "Invalid";
            err
        }
    }
}

/// `application/apply-patch+yaml`: creates the object when absent, otherwise merges the applied
/// configuration into it. (Field ownership and apply conflicts are not tracked yet.)
async fn server_side_apply(
    api: &Arc<Api>,
    t: &Target,
    doc: Value,
    params: &Params,
) -> ApiResult<Response> {
    let name = t.name.as_deref().unwrap_or("").to_string();
    let info = t.info;
    if !doc.is_object() {
        return Err(ApiError::bad_request(
            "the apply configuration must be an object",
        ));
    }
    if object::name(&doc) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            object::name(&doc)
        )));
    }
    let key = t.key(&name);
    if api.store.get(&key).await?.is_none() {
        match create_object(api, info, t.namespace.as_deref(), doc.clone(), params).await {
            Ok((obj, warnings)) => {
                return Ok(with_warnings(
                    json_response(StatusCode::CREATED, &obj),
                    &warnings,
                ));
            }
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => return Err(e),
        }
    }
    let kind = info.kind;
    let apply = move |current: &Value| -> ApiResult<Value> {
        let mut applied = doc.clone();
        if let Some(m) = applied.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            m.remove("resourceVersion");
        }
        skiff_core::patch::apply_merge(current, &applied, kind).map_err(patch_error)
    };
    patch_with(api, t, &apply, params).await
}

/// `DeleteOptions` from the body or the query.
#[derive(Default, Debug)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    /// `dryRun: ["All"]` in the body (kubectl's way) or `?dryRun=All`.
    pub dry_run: bool,
}

fn delete_options(body: &[u8], params: &Params) -> ApiResult<DeleteOptions> {
    let mut opts = DeleteOptions::default();
    if !body.iter().all(|b| b.is_ascii_whitespace()) {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
        opts.grace_period_seconds = v.get("gracePeriodSeconds").and_then(|g| g.as_i64());
        opts.precondition_uid = v
            .pointer("/preconditions/uid")
            .and_then(|u| u.as_str())
            .map(String::from);
        opts.dry_run = v
            .get("dryRun")
            .and_then(|d| d.as_array())
            .is_some_and(|d| d.iter().any(|x| x == "All"));
        opts.precondition_rv = v
            .pointer("/preconditions/resourceVersion")
            .and_then(|u| u.as_str())
            .map(String::from);
    }
    opts.dry_run |= params.dry_run();
    if let Some(g) = params.get("gracePeriodSeconds") {
        opts.grace_period_seconds =
            Some(g.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid gracePeriodSeconds: {g:?}"))
            })?);
    }
    Ok(opts)
}

/// The grace period Kubernetes gives a pod deletion (§7.3): the request's or the spec's, zero for
/// pods not on a node or already finished, and at least 1 when negative.
fn pod_grace(pod: &Value, requested: Option<i64>) -> i64 {
    let scheduled = pod
        .pointer("/spec/nodeName")
        .and_then(|n| n.as_str())
        .is_some_and(|n| !n.is_empty());
    let phase = pod
        .pointer("/status/phase")
        .and_then(|p| p.as_str())
        .unwrap_or("");
    if !scheduled || phase == "Succeeded" || phase == "Failed" {
        return 0;
    }
    let g = requested
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(|g| g.as_i64())
        })
        .unwrap_or(30);
    if g < 0 { 1 } else { g }
}

/// Deletes one object: graceful for pods, through finalizers where present, otherwise at once.
/// Returns the object as it was last stored (or as it now stands, when deletion is pending).
pub async fn delete_object(
    api: &Api,
    info: &'static ResourceInfo,
    namespace: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
    dry_run: bool,
) -> ApiResult<Value> {
    let key = info.key(namespace, name);
    for _attempt in 0..16 {
        let (mut obj, rv) = read(api, info, &key, name).await?;
        if let Some(uid) = &opts.precondition_uid {
            let actual = object::meta_str(&obj, "uid").unwrap_or("");
            if uid != actual {
                return Err(ApiError::conflict(
                    &info.qualified(),
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                    ),
                ));
            }
        }
        if let Some(prv) = &opts.precondition_rv
            && prv != &rv.to_string()
        {
            return Err(ApiError::conflict(
                &info.qualified(),
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {prv}, ResourceVersion in object meta: {rv}"
                ),
            ));
        }
        if info.kind == "Namespace" {
            match crate::namespaces::begin_delete(api, obj, rv, dry_run).await {
                // Someone wrote the namespace in between: read it again.
                Err(e) if e.reason == "Conflict" => continue,
                other => return other,
            }
        }
        let t = now();
        let pending = if object::is_deleting(&obj) {
            // Already being deleted: a later DELETE may only shorten the grace period, and the
            // deadline moves by the difference (Kubernetes keeps the original start).
            let existing = obj
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(|g| g.as_i64())
                .unwrap_or(0);
            let Some(requested) = opts.grace_period_seconds.map(|g| if g < 0 { 1 } else { g })
            else {
                return Ok(obj);
            };
            if requested >= existing {
                return Ok(obj);
            }
            let deadline = obj
                .pointer("/metadata/deletionTimestamp")
                .and_then(|d| d.as_str())
                .and_then(|d| d.parse::<Timestamp>().ok())
                .unwrap_or(t);
            let shortened = deadline - jiff::SignedDuration::from_secs(existing - requested);
            let meta = object::meta_mut(&mut obj);
            meta.insert("deletionTimestamp".into(), json!(rfc3339(shortened)));
            meta.insert("deletionGracePeriodSeconds".into(), json!(requested));
            requested > 0 || !object::finalizers(&obj).is_empty()
        } else {
            let grace = if info.kind == "Pod" {
                pod_grace(&obj, opts.grace_period_seconds)
            } else {
                0
            };
            if grace > 0 || !object::finalizers(&obj).is_empty() {
                let meta = object::meta_mut(&mut obj);
                meta.insert(
                    "deletionTimestamp".into(),
                    json!(rfc3339(t + jiff::SignedDuration::from_secs(grace))),
                );
                meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
                true
            } else {
                false
            }
        };
        if dry_run {
            return Ok(obj);
        }
        let res = if pending {
            api.store
                .update(&key, object::encode_for_store(&obj), Some(rv))
                .await
        } else {
            api.store.delete(&key, Some(rv)).await
        };
        match res {
            Ok(kv) => {
                if !pending {
                    crate::services::after_delete(api, info, &obj).await;
                }
                object::set_resource_version(&mut obj, kv.mod_revision);
                return Ok(obj);
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound) => return Err(ApiError::not_found(&info.qualified(), name)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::modified(&info.qualified(), name))
}

/// The answer to a DELETE: the object for kinds whose deletion Kubernetes answers with it (pods,
/// namespaces), a Success Status for the others.
fn delete_response(info: &ResourceInfo, obj: &Value) -> Response {
    // An object whose deletion waits on finalizers still exists: the answer is the object.
    let pending = object::is_deleting(obj) && !object::finalizers(obj).is_empty();
    if pending || matches!(info.kind, "Pod" | "Namespace") {
        return json_response(StatusCode::OK, obj);
    }
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": object::name(obj), "group": info.group, "kind": info.resource,
                    "uid": object::meta_str(obj, "uid").unwrap_or("")},
    });
    json_response(StatusCode::OK, &status)
}

async fn delete(
    api: &Arc<Api>,
    t: &Target,
    opts: &DeleteOptions,
    dry_run: bool,
) -> ApiResult<Response> {
    let name = t.name.as_deref().unwrap_or("");
    let obj = delete_object(api, t.info, t.namespace.as_deref(), name, opts, dry_run).await?;
    Ok(delete_response(t.info, &obj))
}

async fn delete_collection(
    api: &Arc<Api>,
    t: &Target,
    params: &Params,
    opts: &DeleteOptions,
) -> ApiResult<Response> {
    let page = list_page(api, t.info, t.namespace.as_deref(), params).await?;
    let mut deleted = Vec::new();
    for obj in page.items {
        let ns = object::namespace(&obj).map(String::from);
        let name = object::name(&obj).to_string();
        match delete_object(api, t.info, ns.as_deref(), &name, opts, opts.dry_run).await {
            Ok(o) => deleted.push(o),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let list = json!({
        "kind": t.info.list_kind(), "apiVersion": t.info.api_version(),
        "metadata": {"resourceVersion": api.store.current_revision().await?.to_string()},
        "items": deleted,
    });
    Ok(json_response(StatusCode::OK, &list))
}

/// `pods/binding` (and the `bindings` collection): assigns a pending pod to a node and records
/// PodScheduled=True, the one write of a pod's spec the scheduler makes.
async fn bind(api: &Arc<Api>, t: &Target, body: Value, params: &Params) -> ApiResult<Response> {
    let binding_info = resources::lookup("", "v1", "bindings").expect("bindings");
    let decoded = strategy::decode(binding_info, body)?;
    check_unknown_fields(binding_info, &decoded.unknown_fields, params)?;
    let binding = decoded.obj;
    let pod_name = t
        .name
        .clone()
        .unwrap_or_else(|| object::name(&binding).to_string());
    let node = binding
        .pointer("/target/name")
        .and_then(|n| n.as_str())
        .unwrap_or("")
        .to_string();
    let target_kind = binding
        .pointer("/target/kind")
        .and_then(|n| n.as_str())
        .unwrap_or("");
    if node.is_empty() || !(target_kind.is_empty() || target_kind == "Node") {
        let errs = vec![skiff_core::validation::FieldError::required(
            "target.name",
            "a binding must name a node",
        )];
        return Err(ApiError::invalid("Binding", "", &pod_name, &errs));
    }
    let pod_info = resources::lookup("", "v1", "pods").expect("pods");
    let ns = t.namespace.clone();
    let binding_uid = binding
        .pointer("/metadata/uid")
        .and_then(|u| u.as_str())
        .map(String::from);
    let node_for_patch = node.clone();
    let assign = move |current: &Value| -> ApiResult<Value> {
        if let Some(uid) = &binding_uid
            && object::meta_str(current, "uid") != Some(uid.as_str())
        {
            return Err(ApiError::conflict(
                "pods",
                object::name(current),
                "the pod UID does not match the binding",
            ));
        }
        if object::is_deleting(current) {
            return Err(ApiError::conflict(
                "pods",
                object::name(current),
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        if let Some(n) = current
            .pointer("/spec/nodeName")
            .and_then(|n| n.as_str())
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::conflict(
                "pods",
                object::name(current),
                &format!(
                    "pod {} is already assigned to node \"{n}\"",
                    object::name(current)
                ),
            ));
        }
        let mut v = current.clone();
        v["spec"]["nodeName"] = json!(node_for_patch);
        Ok(v)
    };
    // spec.nodeName is otherwise immutable: the binding writes the stored object directly.
    let key = pod_info.key(ns.as_deref(), &pod_name);
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    for _ in 0..16 {
        let (current, rv) = read(api, pod_info, &key, &pod_name).await?;
        let mut new = assign(&current)?;
        set_condition(&mut new, "PodScheduled", "True", None, None, now());
        if params.dry_run() {
            return Ok(json_response(StatusCode::CREATED, &status));
        }
        match api
            .store
            .update(&key, object::encode_for_store(&new), Some(rv))
            .await
        {
            Ok(_) => return Ok(json_response(StatusCode::CREATED, &status)),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    // Another writer kept changing the pod; the scheduler retries the binding.
    Err(ApiError::modified("pods", &pod_name))
}

/// Sets a pod condition, keeping lastTransitionTime when the status does not change.
pub fn set_condition(
    pod: &mut Value,
    type_: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
    now: Timestamp,
) {
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    if !pod["status"]["conditions"].is_array() {
        pod["status"]["conditions"] = json!([]);
    }
    let conds = pod["status"]["conditions"].as_array_mut().expect("array");
    let mut c = json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": rfc3339(now)});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    match conds.iter_mut().find(|x| x["type"] == type_) {
        Some(existing) => {
            if existing["status"] == status {
                c["lastTransitionTime"] = existing["lastTransitionTime"].clone();
            }
            *existing = c;
        }
        None => conds.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_paths() {
        let t = Target::resolve(
            "",
            "v1",
            &["namespaces", "default", "pods", "web", "status"],
        )
        .unwrap();
        assert_eq!(t.info.resource, "pods");
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("web"));
        assert_eq!(t.sub.as_deref(), Some("status"));
        let t = Target::resolve("", "v1", &["namespaces", "default"]).unwrap();
        assert_eq!(t.info.resource, "namespaces");
        assert_eq!(t.name.as_deref(), Some("default"));
        let t = Target::resolve("", "v1", &["namespaces", "demo", "finalize"]).unwrap();
        assert_eq!(t.sub.as_deref(), Some("finalize"));
        let t = Target::resolve("", "v1", &["pods"]).unwrap();
        assert!(t.namespace.is_none() && t.name.is_none());
        assert!(Target::resolve("", "v1", &["pods", "web"]).is_none());
        assert!(Target::resolve("", "v1", &["nope"]).is_none());
        let t = Target::resolve(
            "coordination.k8s.io",
            "v1",
            &["namespaces", "kube-node-lease", "leases", "n1"],
        )
        .unwrap();
        assert_eq!(t.info.kind, "Lease");
    }

    #[test]
    fn pod_grace_follows_kubernetes() {
        let unscheduled =
            json!({"spec": {"terminationGracePeriodSeconds": 30}, "status": {"phase": "Pending"}});
        assert_eq!(pod_grace(&unscheduled, None), 0);
        let running = json!({"spec": {"nodeName": "n", "terminationGracePeriodSeconds": 30}, "status": {"phase": "Running"}});
        assert_eq!(pod_grace(&running, None), 30);
        assert_eq!(pod_grace(&running, Some(5)), 5);
        assert_eq!(pod_grace(&running, Some(-3)), 1);
        let done = json!({"spec": {"nodeName": "n"}, "status": {"phase": "Succeeded"}});
        assert_eq!(pod_grace(&done, Some(30)), 0);
    }
}
