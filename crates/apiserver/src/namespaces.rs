//! Namespace lifecycle: the namespaces that always exist, and deletion through the `kubernetes`
//! finalizer: a deleted namespace turns Terminating, everything in it is deleted (pods through
//! their normal graceful path), and the namespace itself goes once it is empty.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::errors::{ApiError, ApiResult};
use crate::object::{self, rfc3339};
use crate::query::Params;
use crate::resources::{self, RESOURCES};
use crate::rest::{self, Api, DeleteOptions};

/// Namespaces created at first start; the first three may never be deleted.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];
const UNDELETABLE: &[&str] = &["default", "kube-system", "kube-public"];

fn ns_info() -> &'static resources::ResourceInfo {
    resources::lookup("", "v1", "namespaces").expect("namespaces")
}

/// Creates the system namespaces that are missing.
pub async fn ensure_system_namespaces(api: &Api) -> ApiResult<()> {
    for ns in SYSTEM_NAMESPACES {
        if api.store.get(&ns_info().key(None, ns)).await?.is_some() {
            continue;
        }
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns,
            "labels": {"kubernetes.io/metadata.name": ns}}});
        match rest::create_object(api, ns_info(), None, body, &Params::default()).await {
            Ok(_) => {}
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// DELETE on a namespace: marks it Terminating and starts emptying it.
pub async fn begin_delete(api: &Api, mut ns: Value, rv: u64, dry_run: bool) -> ApiResult<Value> {
    let name = object::name(&ns).to_string();
    if UNDELETABLE.contains(&name.as_str()) {
        return Err(ApiError::forbidden(format!(
            "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
        )));
    }
    if object::is_deleting(&ns) || dry_run {
        return Ok(ns);
    }
    object::meta_mut(&mut ns).insert("deletionTimestamp".into(), json!(rfc3339(Timestamp::now())));
    object::meta_mut(&mut ns).insert("deletionGracePeriodSeconds".into(), json!(0));
    ns["status"]["phase"] = json!("Terminating");
    let kv = api
        .store
        .update(
            &ns_info().key(None, &name),
            object::encode_for_store(&ns),
            Some(rv),
        )
        .await;
    match kv {
        Ok(kv) => object::set_resource_version(&mut ns, kv.mod_revision),
        Err(skiff_store::StoreError::Conflict { .. }) => {
            return Err(ApiError::modified("namespaces", &name));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(ns)
}

/// Deletes what a terminating namespace holds; true once it holds nothing.
async fn empty_namespace(api: &Api, ns: &str) -> ApiResult<bool> {
    let mut empty = true;
    for info in RESOURCES.iter().filter(|r| r.namespaced && r.stored()) {
        let page = rest::list_page(api, info, Some(ns), &Params::default()).await?;
        for obj in page.items {
            empty = false;
            if object::is_deleting(&obj) {
                continue;
            }
            let name = object::name(&obj).to_string();
            match rest::delete_object(api, info, Some(ns), &name, &DeleteOptions::default(), false)
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(empty)
}

/// One pass over terminating namespaces: empty them, then remove the finalizer and the namespace.
pub async fn finalize_pass(api: &Api) -> ApiResult<()> {
    let page = rest::list_page(api, ns_info(), None, &Params::default()).await?;
    for ns in page.items.iter().filter(|n| object::is_deleting(n)) {
        let name = object::name(ns).to_string();
        if !empty_namespace(api, &name).await? {
            continue;
        }
        let finalize = |current: &Value| -> ApiResult<Value> {
            let mut v = current.clone();
            v["spec"]["finalizers"] = json!([]);
            Ok(v)
        };
        match rest::update_object(
            api,
            ns_info(),
            None,
            &name,
            Some("finalize"),
            rest::Change::Patch(&finalize),
            &Params::default(),
        )
        .await
        {
            Ok(_) => {}
            Err(e) if e.code == 404 => continue,
            Err(e) => return Err(e),
        }
        // A create that passed its namespace check just before the deletion started may have
        // landed since the namespace was found empty: look once more.
        if !empty_namespace(api, &name).await? {
            continue;
        }
        // With no finalizer left, the namespace goes.
        if let Some(kv) = api.store.get(&ns_info().key(None, &name)).await? {
            let v: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
            let spec_empty = v
                .pointer("/spec/finalizers")
                .and_then(|f| f.as_array())
                .is_none_or(|f| f.is_empty());
            if spec_empty && object::finalizers(&v).is_empty() {
                match api
                    .store
                    .delete(&ns_info().key(None, &name), Some(kv.mod_revision))
                    .await
                {
                    Ok(_) | Err(skiff_store::StoreError::NotFound) => {}
                    Err(skiff_store::StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(())
}

/// Runs the namespace finalizer: woken by namespace changes, and every second while any
/// namespace is terminating (pods on nodes take their grace period to go).
pub async fn run_finalizer(api: Arc<Api>) {
    let prefix = ns_info().prefix();
    loop {
        let rev = api.store.current_revision().await.unwrap_or(0);
        if let Err(e) = finalize_pass(&api).await {
            tracing::warn!(error = %e.message, "namespace finalizer pass failed");
        }
        let mut watch = match api.store.watch(&prefix, rev).await {
            Ok(w) => w,
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let terminating = {
            let page = rest::list_page(&api, ns_info(), None, &Params::default()).await;
            page.map(|p| p.items.iter().any(object::is_deleting))
                .unwrap_or(true)
        };
        let wait = if terminating {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(60)
        };
        let _ = tokio::time::timeout(wait, futures::StreamExt::next(&mut watch)).await;
    }
}
