//! JSON merge patch (RFC 7396), JSON patch (RFC 6902) and strategic merge patch.
//!
//! `kubectl label`/`annotate` send merge patches, `kubectl patch --type=json` JSON patches, and
//! `kubectl apply` (client side), `edit`, `cordon` and plain `kubectl patch` strategic merge
//! patches, whose list semantics depend on per-kind metadata (`patch/schema.rs`). A plain merge
//! patch would replace a pod's `containers` list and lose everything the patch does not repeat,
//! so the API server needs all three. [`apply_merge`] is the simplified merge used for
//! server-side apply.

mod apply;
mod schema;
mod strategic;

use serde_json::{Map, Value};

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch is malformed or does not fit the object (400 or 422).
    #[error("{0}")]
    Invalid(String),
    /// A JSON patch `test` operation failed.
    #[error("{0}")]
    Conflict(String),
}

/// RFC 7396 (`application/merge-patch+json`): objects merge recursively, `null` deletes,
/// everything else (lists included) replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// RFC 6902 (`application/json-patch+json`). The document is left unchanged when any operation
/// fails. A malformed patch or a bad path is `Invalid`; a failed `test` is `Conflict`.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let ops: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| PatchError::Invalid(e.to_string()))?;
    json_patch::patch(target, &ops).map_err(|e| match e.kind {
        json_patch::PatchErrorKind::TestFailed => PatchError::Conflict(e.to_string()),
        _ => PatchError::Invalid(e.to_string()),
    })
}

/// `application/strategic-merge-patch+json` for a built-in `kind` (`Pod`, `Node`, `Namespace`,
/// `Event`, `Lease`, `Service`, workloads, ...). Unknown kinds have no merge keys, so their
/// lists are replaced as with a merge patch (directives are still honoured). The result never
/// contains a directive key (`$patch`, `$retainKeys`, `$setElementOrder/...`,
/// `$deleteFromPrimitiveList/...`).
pub fn strategic_merge_patch(
    target: &Value,
    patch: &Value,
    kind: &str,
) -> Result<Value, PatchError> {
    let (Value::Object(original), Value::Object(patch)) = (target, patch) else {
        return Err(PatchError::Invalid("invalid JSON document".to_string()));
    };
    let merged = strategic::merge_map(original.clone(), patch.clone(), schema::for_kind(kind))?;
    let mut result = Value::Object(merged);
    strategic::strip_directives(&mut result);
    Ok(result)
}

/// Server-side apply (`application/apply-patch+yaml`, already parsed): merges the applied
/// configuration into the live object with the kind's list keys, keeping every field the
/// applied configuration does not mention. `live` may be `null` when the object does not
/// exist yet. This is a simplification of server-side apply's field ownership: fields a
/// previous apply set and this one omits are not removed, and there are no conflicts.
pub fn apply_merge(live: &Value, applied: &Value, kind: &str) -> Result<Value, PatchError> {
    let mut result = match live {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        _ => return Err(PatchError::Invalid("invalid JSON document".to_string())),
    };
    let Value::Object(applied) = applied else {
        return Err(PatchError::Invalid("invalid JSON document".to_string()));
    };
    apply::apply_map(&mut result, applied, schema::for_kind(kind))?;
    Ok(Value::Object(result))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_labels() {
        let mut pod = json!({"metadata": {"name": "nginx", "labels": {"app": "web", "old": "x"}},
                             "spec": {"containers": [{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]}});
        merge_patch(
            &mut pod,
            &json!({"metadata": {"labels": {"tier": "fe", "old": null}}}),
        );
        assert_eq!(
            pod["metadata"]["labels"],
            json!({"app": "web", "tier": "fe"})
        );
        merge_patch(
            &mut pod,
            &json!({"metadata": {"annotations": {"note": "hi"}}}),
        );
        assert_eq!(pod["metadata"]["annotations"], json!({"note": "hi"}));
        merge_patch(
            &mut pod,
            &json!({"spec": {"containers": [{"name": "a", "image": "a2"}]}}),
        );
        assert_eq!(
            pod["spec"]["containers"],
            json!([{"name": "a", "image": "a2"}])
        );
    }

    #[test]
    fn json_patch_ops() {
        let mut doc = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1}});
        json_patch(
            &mut doc,
            &json!([
                {"op": "add", "path": "/metadata/labels/b", "value": "2"},
                {"op": "replace", "path": "/spec/replicas", "value": 3},
                {"op": "remove", "path": "/metadata/labels/a"}
            ]),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"metadata": {"labels": {"b": "2"}}, "spec": {"replicas": 3}})
        );
    }

    #[test]
    fn json_patch_errors_leave_the_document_alone() {
        let original = json!({"spec": {"replicas": 1}});
        let mut doc = original.clone();
        let err = json_patch(
            &mut doc,
            &json!([{"op": "replace", "path": "/spec/replicas", "value": 2}, {"op": "test", "path": "/spec/replicas", "value": 5}]),
        )
        .unwrap_err();
        assert!(matches!(err, PatchError::Conflict(_)), "{err:?}");
        assert_eq!(doc, original);
        let err =
            json_patch(&mut doc, &json!([{"op": "remove", "path": "/spec/nope"}])).unwrap_err();
        assert!(matches!(err, PatchError::Invalid(_)));
        let err = json_patch(&mut doc, &json!({"op": "add"})).unwrap_err();
        assert!(matches!(err, PatchError::Invalid(_)));
        let err = json_patch(&mut doc, &json!([{"op": "frobnicate", "path": "/a"}])).unwrap_err();
        assert!(matches!(err, PatchError::Invalid(_)));
    }

    #[test]
    fn strategic_rejects_non_objects() {
        assert_eq!(
            strategic_merge_patch(&json!({}), &json!([1]), "Pod"),
            Err(PatchError::Invalid("invalid JSON document".into()))
        );
    }

    #[test]
    fn apply_merge_keeps_live_fields() {
        let live = json!({
            "metadata": {"name": "web", "labels": {"app": "web"}, "resourceVersion": "5"},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                     "terminationMessagePolicy": "File"}],
                     "tolerations": [{"key": "a", "operator": "Exists"}]},
            "status": {"phase": "Running"}
        });
        let applied = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "labels": {"tier": "fe"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.28", "ports": [{"containerPort": 80}]},
                                    {"name": "side", "image": "busybox"}],
                     "tolerations": [{"key": "b", "operator": "Exists"}]}
        });
        let out = apply_merge(&live, &applied, "Pod").unwrap();
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "tier": "fe"})
        );
        assert_eq!(out["metadata"]["resourceVersion"], "5");
        assert_eq!(out["status"]["phase"], "Running");
        assert_eq!(
            out["spec"]["containers"],
            json!([
                {"name": "web", "image": "nginx:1.28", "ports": [{"containerPort": 80, "protocol": "TCP"}], "terminationMessagePolicy": "File"},
                {"name": "side", "image": "busybox"}
            ])
        );
        assert_eq!(
            out["spec"]["tolerations"],
            json!([{"key": "b", "operator": "Exists"}])
        );
        assert_eq!(out["kind"], "Pod");
    }

    #[test]
    fn apply_merge_creates_and_handles_sets_and_nulls() {
        let applied =
            json!({"metadata": {"name": "x", "finalizers": ["a"]}, "spec": {"nodeName": "n"}});
        let created = apply_merge(&Value::Null, &applied, "Pod").unwrap();
        assert_eq!(created, applied);
        let again = json!({"metadata": {"finalizers": ["b", "a"]}, "spec": {"nodeName": null}});
        let out = apply_merge(&created, &again, "Pod").unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(out["spec"], json!({}));
        assert!(apply_merge(&json!(1), &applied, "Pod").is_err());
        let bad = json!({"spec": {"containers": [{"image": "x"}]}});
        let live = json!({"spec": {"containers": [{"name": "a"}]}});
        assert!(apply_merge(&live, &bad, "Pod").is_err());
    }
}
