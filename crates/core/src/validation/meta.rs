//! `metadata` validation shared by every kind: names, namespaces, labels, annotations, owner
//! references and finalizers on create, and the immutable fields on update.

use super::errors::{FieldError, FieldPath, go_literal};
use super::names::{
    inclusive_range_error, is_dns1123_label, is_qualified_name, is_valid_label_value,
    mask_trailing_dash,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Total size of all annotation keys and values (256 KiB).
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

const IS_NEGATIVE_ERROR: &str = "must be greater than or equal to 0";
const FIELD_IMMUTABLE: &str = "field is immutable";

/// Finalizer names that need no domain prefix.
const STANDARD_FINALIZERS: [&str; 3] = ["kubernetes", "orphan", "foregroundDeletion"];

/// Create-time `metadata` validation (apimachinery `ValidateObjectMeta` plus the core API's
/// finalizer-name rule).
///
/// Unlike Kubernetes (which generates the name before validating), an empty `name` with a
/// `generateName` is accepted here so callers may validate before generating; the prefix itself
/// is checked with `name_check` after masking a trailing `-`.
pub fn validate_object_meta(
    meta: &ObjectMeta,
    namespaced: bool,
    name_check: fn(&str) -> Vec<String>,
) -> Vec<FieldError> {
    let mut errs = validate_object_meta_generic(meta, namespaced, name_check);
    errs.extend(kube_finalizer_errors(
        meta.finalizers.as_deref().unwrap_or_default(),
        &FieldPath::new("metadata").child("finalizers"),
    ));
    errs
}

/// `metadata` validation without the core-API finalizer rule (used for non-core groups).
pub(crate) fn validate_object_meta_generic(
    meta: &ObjectMeta,
    namespaced: bool,
    name_check: fn(&str) -> Vec<String>,
) -> Vec<FieldError> {
    let path = FieldPath::new("metadata");
    let mut errs = Vec::new();
    let generate_name = meta.generate_name.as_deref().unwrap_or_default();
    if !generate_name.is_empty() {
        for msg in name_check(&mask_trailing_dash(generate_name)) {
            errs.push(FieldError::invalid(
                path.child("generateName"),
                generate_name,
                msg,
            ));
        }
    }
    let name = meta.name.as_deref().unwrap_or_default();
    if name.is_empty() {
        if generate_name.is_empty() {
            errs.push(FieldError::required(
                path.child("name"),
                "name or generateName is required",
            ));
        }
    } else {
        for msg in name_check(name) {
            errs.push(FieldError::invalid(path.child("name"), name, msg));
        }
    }
    errs.extend(namespace_errors(meta, namespaced, &path));
    errs.extend(common_meta_errors(meta, &path));
    errs
}

fn namespace_errors(meta: &ObjectMeta, namespaced: bool, path: &FieldPath) -> Vec<FieldError> {
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    let ns_path = path.child("namespace");
    match (namespaced, namespace.is_empty()) {
        (true, true) => vec![FieldError::required(ns_path, "")],
        (true, false) => is_dns1123_label(namespace)
            .into_iter()
            .map(|m| FieldError::invalid(&ns_path, namespace, m))
            .collect(),
        (false, false) => vec![FieldError::forbidden(ns_path, "not allowed on this type")],
        (false, true) => Vec::new(),
    }
}

/// Checks shared by create and update: generation, labels, annotations, owners, finalizers.
fn common_meta_errors(meta: &ObjectMeta, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(generation) = meta.generation.filter(|g| *g < 0) {
        errs.push(FieldError::invalid(
            path.child("generation"),
            generation,
            IS_NEGATIVE_ERROR,
        ));
    }
    errs.extend(validate_labels(meta.labels.as_ref(), &path.child("labels")));
    errs.extend(validate_annotations(
        meta.annotations.as_ref(),
        &path.child("annotations"),
    ));
    errs.extend(validate_owner_references(
        meta.owner_references.as_deref().unwrap_or_default(),
        &path.child("ownerReferences"),
    ));
    errs.extend(validate_finalizers(
        meta.finalizers.as_deref().unwrap_or_default(),
        &path.child("finalizers"),
    ));
    errs
}

/// A label (or node selector, taint) key (`ValidateLabelName`).
pub fn validate_label_name(key: &str, path: &FieldPath) -> Vec<FieldError> {
    is_qualified_name(key)
        .into_iter()
        .map(|m| FieldError::invalid(path, key, m))
        .collect()
}

/// A label map: keys are qualified names, values label values; errors point at the map itself.
pub fn validate_labels(
    labels: Option<&BTreeMap<String, String>>,
    path: &FieldPath,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (key, value) in labels.into_iter().flatten() {
        errs.extend(validate_label_name(key, path));
        for msg in is_valid_label_value(value) {
            errs.push(FieldError::invalid(path, value.as_str(), msg));
        }
    }
    errs
}

/// Annotation keys are qualified names (case-insensitively); the total size is capped.
pub fn validate_annotations(
    annotations: Option<&BTreeMap<String, String>>,
    path: &FieldPath,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0usize;
    for (key, value) in annotations.into_iter().flatten() {
        for msg in is_qualified_name(&key.to_lowercase()) {
            errs.push(FieldError::invalid(path, key.as_str(), msg));
        }
        total += key.len() + value.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

fn validate_owner_references(refs: &[OwnerReference], path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut first_controller: Option<String> = None;
    for owner in refs {
        errs.extend(validate_owner_reference(owner, path));
        if owner.controller == Some(true) {
            let current = format!("{}/{}", owner.kind, owner.name);
            match &first_controller {
                Some(first) => errs.push(FieldError::invalid(
                    path,
                    serde_json::to_value(refs).unwrap_or(Value::Null),
                    format!("Only one reference can have Controller set to true. Found \"true\" in references for {first} and {current}"),
                )),
                None => first_controller = Some(current),
            }
        }
    }
    errs
}

fn validate_owner_reference(owner: &OwnerReference, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let (group, version) = match owner.api_version.rsplit_once('/') {
        Some((g, v)) => (g, v),
        None => ("", owner.api_version.as_str()),
    };
    if version.is_empty() {
        errs.push(FieldError::invalid(
            path.child("apiVersion"),
            owner.api_version.as_str(),
            "version must not be empty",
        ));
    }
    if owner.kind.is_empty() {
        errs.push(FieldError::invalid(
            path.child("kind"),
            "",
            "must not be empty",
        ));
    }
    if owner.name.is_empty() {
        errs.push(FieldError::invalid(
            path.child("name"),
            "",
            "must not be empty",
        ));
    }
    if owner.uid.is_empty() {
        errs.push(FieldError::invalid(
            path.child("uid"),
            "",
            "must not be empty",
        ));
    }
    if group.is_empty() && version == "v1" && owner.kind == "Event" {
        errs.push(FieldError::invalid(
            path,
            serde_json::to_value(owner).unwrap_or(Value::Null),
            "/v1, Kind=Event is disallowed from being an owner",
        ));
    }
    errs
}

/// Finalizer names are qualified names; `orphan` and `foregroundDeletion` exclude each other.
fn validate_finalizers(finalizers: &[String], path: &FieldPath) -> Vec<FieldError> {
    let mut errs: Vec<FieldError> = finalizers
        .iter()
        .flat_map(|f| {
            is_qualified_name(f)
                .into_iter()
                .map(move |m| FieldError::invalid(path, f.as_str(), m))
        })
        .collect();
    let has = |name: &str| finalizers.iter().any(|f| f == name);
    if has("orphan") && has("foregroundDeletion") {
        errs.push(FieldError::invalid(
            path,
            serde_json::to_value(finalizers).unwrap_or(Value::Null),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    errs
}

/// Core-API rule: a finalizer without a `/` must be one of the standard names.
pub(crate) fn kube_finalizer_errors(finalizers: &[String], path: &FieldPath) -> Vec<FieldError> {
    finalizers
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.contains('/') && !STANDARD_FINALIZERS.contains(&f.as_str()))
        .map(|(i, f)| {
            FieldError::invalid(
                path.index(i),
                f.as_str(),
                "name is neither a standard finalizer name nor is it fully qualified",
            )
        })
        .collect()
}

/// The finalizer checks of a single named list entry (namespace `spec.finalizers`).
pub(crate) fn finalizer_name_errors(name: &str, path: &FieldPath) -> Vec<FieldError> {
    let mut errs: Vec<FieldError> = is_qualified_name(name)
        .into_iter()
        .map(|m| FieldError::invalid(path, name, m))
        .collect();
    if !name.contains('/') && !STANDARD_FINALIZERS.contains(&name) {
        errs.push(FieldError::invalid(
            path,
            name,
            "name is neither a standard finalizer name nor is it fully qualified",
        ));
    }
    errs
}

/// Update-time `metadata` validation: name, namespace, uid, creationTimestamp,
/// deletionTimestamp and deletionGracePeriodSeconds are immutable, generation may not decrease,
/// the new object must carry a resourceVersion, and no finalizer may be added while the object
/// is being deleted. Labels, annotations, owners and finalizers of `new` are validated again.
pub fn validate_object_meta_update(new: &ObjectMeta, old: &ObjectMeta) -> Vec<FieldError> {
    let mut errs = validate_object_meta_update_generic(new, old);
    errs.extend(kube_finalizer_errors(
        new.finalizers.as_deref().unwrap_or_default(),
        &FieldPath::new("metadata").child("finalizers"),
    ));
    errs
}

pub(crate) fn validate_object_meta_update_generic(
    new: &ObjectMeta,
    old: &ObjectMeta,
) -> Vec<FieldError> {
    let path = FieldPath::new("metadata");
    let mut errs = Vec::new();
    if old.deletion_timestamp.is_some() {
        errs.extend(no_new_finalizers(new, old, &path.child("finalizers")));
    }
    let rv = new.resource_version.as_deref().unwrap_or_default();
    if rv.is_empty() {
        errs.push(FieldError::invalid(
            path.child("resourceVersion"),
            rv,
            "must be specified for an update",
        ));
    }
    let (new_gen, old_gen) = (new.generation.unwrap_or(0), old.generation.unwrap_or(0));
    if new_gen < old_gen {
        errs.push(FieldError::invalid(
            path.child("generation"),
            new_gen,
            "must not be decremented",
        ));
    }
    errs.extend(immutable_str(&new.name, &old.name, &path.child("name")));
    errs.extend(immutable_str(
        &new.namespace,
        &old.namespace,
        &path.child("namespace"),
    ));
    errs.extend(immutable_str(&new.uid, &old.uid, &path.child("uid")));
    errs.extend(immutable_time(
        &new.creation_timestamp,
        &old.creation_timestamp,
        false,
        &path.child("creationTimestamp"),
    ));
    errs.extend(immutable_time(
        &new.deletion_timestamp,
        &old.deletion_timestamp,
        true,
        &path.child("deletionTimestamp"),
    ));
    if new.deletion_grace_period_seconds != old.deletion_grace_period_seconds {
        let value = new
            .deletion_grace_period_seconds
            .map_or(Value::Null, Value::from);
        errs.push(FieldError::invalid(
            path.child("deletionGracePeriodSeconds"),
            value,
            FIELD_IMMUTABLE,
        ));
    }
    errs.extend(validate_labels(new.labels.as_ref(), &path.child("labels")));
    errs.extend(validate_annotations(
        new.annotations.as_ref(),
        &path.child("annotations"),
    ));
    errs.extend(validate_owner_references(
        new.owner_references.as_deref().unwrap_or_default(),
        &path.child("ownerReferences"),
    ));
    errs.extend(validate_finalizers(
        new.finalizers.as_deref().unwrap_or_default(),
        &path.child("finalizers"),
    ));
    errs
}

fn no_new_finalizers(new: &ObjectMeta, old: &ObjectMeta, path: &FieldPath) -> Vec<FieldError> {
    let old_set: BTreeSet<&String> = old.finalizers.iter().flatten().collect();
    let extra: BTreeSet<&String> = new
        .finalizers
        .iter()
        .flatten()
        .filter(|f| !old_set.contains(f))
        .collect();
    if extra.is_empty() {
        return Vec::new();
    }
    let quoted: Vec<String> = extra.iter().map(|f| super::errors::go_quote(f)).collect();
    vec![FieldError::forbidden(
        path,
        format!(
            "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
            quoted.join(", ")
        ),
    )]
}

fn immutable_str(new: &Option<String>, old: &Option<String>, path: &FieldPath) -> Vec<FieldError> {
    let (n, o) = (
        new.as_deref().unwrap_or_default(),
        old.as_deref().unwrap_or_default(),
    );
    if n == o {
        Vec::new()
    } else {
        vec![FieldError::invalid(path, n, FIELD_IMMUTABLE)]
    }
}

/// `pointer` is true for Go `*metav1.Time` fields, whose absence prints as `null`; value fields
/// (creationTimestamp) print the zero time instead.
fn immutable_time(
    new: &Option<Time>,
    old: &Option<Time>,
    pointer: bool,
    path: &FieldPath,
) -> Vec<FieldError> {
    if new == old {
        return Vec::new();
    }
    let value = match new {
        None if pointer => Value::Null,
        t => go_literal(go_time_string(t.as_ref())),
    };
    vec![FieldError::invalid(path, value, FIELD_IMMUTABLE)]
}

/// How Go prints a `metav1.Time` (`2024-05-01 10:00:00 +0000 UTC`); the zero time for `None`.
fn go_time_string(t: Option<&Time>) -> String {
    match t {
        Some(t) => t.0.strftime("%Y-%m-%d %H:%M:%S +0000 UTC").to_string(),
        None => "0001-01-01 00:00:00 +0000 UTC".to_string(),
    }
}

/// Range check used by pod security contexts (user and group IDs).
pub(crate) fn id_range_errors(value: i64, path: &FieldPath) -> Vec<FieldError> {
    if (0..=4_294_967_295).contains(&value) {
        Vec::new()
    } else {
        vec![FieldError::invalid(
            path,
            value,
            inclusive_range_error(0, 4_294_967_295),
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::names::is_dns1123_subdomain;

    fn meta(name: &str, ns: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()).filter(|s| !s.is_empty()),
            namespace: Some(ns.to_string()).filter(|s| !s.is_empty()),
            ..Default::default()
        }
    }

    fn strings(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn name_required_and_format() {
        let errs = validate_object_meta(&meta("", "default"), true, is_dns1123_subdomain);
        assert_eq!(
            strings(&errs),
            vec!["metadata.name: Required value: name or generateName is required"]
        );
        let errs = validate_object_meta(&meta("Bad", "default"), true, is_dns1123_subdomain);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].to_string().starts_with(
                "metadata.name: Invalid value: \"Bad\": a lowercase RFC 1123 subdomain"
            )
        );
    }

    #[test]
    fn generate_name_allows_trailing_dash() {
        let mut m = meta("", "default");
        m.generate_name = Some("web-".into());
        assert!(validate_object_meta(&m, true, is_dns1123_subdomain).is_empty());
        m.generate_name = Some("Web-".into());
        let errs = validate_object_meta(&m, true, is_dns1123_subdomain);
        assert_eq!(errs[0].field, "metadata.generateName");
    }

    #[test]
    fn namespace_rules() {
        let errs = validate_object_meta(&meta("a", ""), true, is_dns1123_subdomain);
        assert_eq!(strings(&errs), vec!["metadata.namespace: Required value"]);
        let errs = validate_object_meta(&meta("a", "x"), false, is_dns1123_subdomain);
        assert_eq!(
            strings(&errs),
            vec!["metadata.namespace: Forbidden: not allowed on this type"]
        );
        let errs = validate_object_meta(&meta("a", "a.b"), true, is_dns1123_subdomain);
        assert_eq!(
            strings(&errs),
            vec!["metadata.namespace: Invalid value: \"a.b\": must not contain dots"]
        );
    }

    #[test]
    fn labels_and_annotations() {
        let mut m = meta("a", "default");
        m.labels = Some(BTreeMap::from([(
            "app".to_string(),
            "bad value".to_string(),
        )]));
        m.annotations = Some(BTreeMap::from([("-x".to_string(), "v".repeat(10))]));
        let errs = validate_object_meta(&m, true, is_dns1123_subdomain);
        assert_eq!(errs.len(), 2);
        assert!(
            errs[0].to_string().starts_with(
                "metadata.labels: Invalid value: \"bad value\": a valid label must be"
            )
        );
        assert!(
            errs[1]
                .to_string()
                .starts_with("metadata.annotations: Invalid value: \"-x\": name part must consist")
        );
        m.labels = None;
        m.annotations = Some(BTreeMap::from([(
            "big".to_string(),
            "v".repeat(TOTAL_ANNOTATION_SIZE_LIMIT),
        )]));
        let errs = validate_object_meta(&m, true, is_dns1123_subdomain);
        assert_eq!(
            strings(&errs),
            vec!["metadata.annotations: Too long: must have at most 262144 bytes"]
        );
    }

    #[test]
    fn finalizers() {
        let mut m = meta("a", "default");
        m.finalizers = Some(vec![
            "kubernetes".into(),
            "example.com/x".into(),
            "custom".into(),
        ]);
        let errs = validate_object_meta(&m, true, is_dns1123_subdomain);
        assert_eq!(
            strings(&errs),
            vec![
                "metadata.finalizers[2]: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"
            ]
        );
    }

    #[test]
    fn owner_references() {
        let mut m = meta("a", "default");
        m.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "ReplicaSet".into(),
            name: String::new(),
            uid: "u".into(),
            ..Default::default()
        }]);
        let errs = validate_object_meta(&m, true, is_dns1123_subdomain);
        assert_eq!(
            strings(&errs),
            vec!["metadata.ownerReferences.name: Invalid value: \"\": must not be empty"]
        );
    }

    #[test]
    fn update_rules() {
        let mut old = meta("a", "default");
        old.uid = Some("u1".into());
        old.resource_version = Some("5".into());
        let mut new = old.clone();
        assert!(validate_object_meta_update(&new, &old).is_empty());
        new.name = Some("b".into());
        new.uid = Some("u2".into());
        new.resource_version = None;
        let errs = validate_object_meta_update(&new, &old);
        assert_eq!(
            strings(&errs),
            vec![
                "metadata.resourceVersion: Invalid value: \"\": must be specified for an update",
                "metadata.name: Invalid value: \"b\": field is immutable",
                "metadata.uid: Invalid value: \"u2\": field is immutable",
            ]
        );
    }

    #[test]
    fn no_finalizers_added_while_deleting() {
        let mut old = meta("a", "default");
        old.resource_version = Some("1".into());
        old.deletion_timestamp = Some(Time("2024-05-01T10:00:00Z".parse().unwrap()));
        let mut new = old.clone();
        new.finalizers = Some(vec!["example.com/x".into()]);
        let errs = validate_object_meta_update(&new, &old);
        assert_eq!(
            strings(&errs),
            vec![
                "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"example.com/x\"}"
            ]
        );
        new.finalizers = None;
        new.deletion_timestamp = None;
        let errs = validate_object_meta_update(&new, &old);
        assert_eq!(errs.len(), 1);
        assert_eq!(
            strings(&errs),
            vec!["metadata.deletionTimestamp: Invalid value: null: field is immutable"]
        );
    }

    #[test]
    fn creation_timestamp_prints_go_time() {
        let mut old = meta("a", "default");
        old.resource_version = Some("1".into());
        let mut new = old.clone();
        new.creation_timestamp = Some(Time("2024-05-01T10:00:00Z".parse().unwrap()));
        let errs = validate_object_meta_update(&new, &old);
        assert_eq!(
            strings(&errs),
            vec![
                "metadata.creationTimestamp: Invalid value: 2024-05-01 10:00:00 +0000 UTC: field is immutable"
            ]
        );
    }
}
