//! Resource names and quantities (`resources.requests`/`limits`, pod overhead, node capacity).

use super::errors::{FieldError, FieldPath, go_literal};
use super::names::is_qualified_name;
use crate::quantity::Quantity;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use std::collections::BTreeMap;

const IS_NEGATIVE_ERROR: &str = "must be greater than or equal to 0";

/// Unprefixed resource names a container may request.
const STANDARD_CONTAINER_RESOURCES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

/// Unprefixed resource names Kubernetes knows at all (`IsStandardResourceName`).
const STANDARD_RESOURCES: [&str; 19] = [
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "storage",
    "requests.storage",
    "services.nodeports",
];

fn is_hugepages(name: &str) -> bool {
    name.starts_with("hugepages-")
}

/// Unprefixed or `kubernetes.io/`-prefixed names.
fn is_native(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

/// A name like `example.com/gpu`: not native, not `requests.`-prefixed, and `requests.<name>`
/// still a qualified name.
fn is_extended(name: &str) -> bool {
    !is_native(name)
        && !name.starts_with("requests.")
        && is_qualified_name(&format!("requests.{name}")).is_empty()
}

/// Requests may be below limits only for native, non-hugepage resources.
fn is_overcommit_allowed(name: &str) -> bool {
    is_native(name) && !is_hugepages(name)
}

/// The text Kubernetes shows for a quantity (`Quantity.String()`): the input when it is already
/// in a canonical shape, otherwise the canonical rendering.
pub(crate) fn quantity_string(raw: &str) -> String {
    let canonical_looking =
        !raw.contains(['.', 'e', 'E', '+']) && !raw.starts_with('0') || raw == "0";
    if canonical_looking {
        return raw.to_string();
    }
    Quantity::parse(raw).map_or_else(|_| raw.to_string(), |q| q.to_string())
}

/// A container resource name (`validateContainerResourceName`).
fn container_resource_name_errors(name: &str, path: &FieldPath) -> Vec<FieldError> {
    let mut errs: Vec<FieldError> = is_qualified_name(name)
        .into_iter()
        .map(|m| FieldError::invalid(path, name, m))
        .collect();
    if errs.is_empty()
        && !name.contains('/')
        && !STANDARD_RESOURCES.contains(&name)
        && !is_hugepages(name)
    {
        errs.push(FieldError::invalid(
            path,
            name,
            "must be a standard resource type or fully qualified",
        ));
    }
    if !name.contains('/') {
        if !STANDARD_CONTAINER_RESOURCES.contains(&name) && !is_hugepages(name) {
            errs.push(FieldError::invalid(
                path,
                name,
                "must be a standard resource for containers",
            ));
        }
    } else if !is_native(name) && !is_extended(name) {
        errs.push(FieldError::invalid(
            path,
            name,
            "doesn't follow extended resource name standard",
        ));
    }
    errs
}

/// A quantity is parseable, non-negative and, for extended resources, whole.
///
/// Kubernetes rejects an unparseable quantity while decoding the request (400); here it is an
/// `Invalid` error on the field, with the parser's message as detail.
pub(crate) fn quantity_value_errors(name: &str, raw: &str, path: &FieldPath) -> Vec<FieldError> {
    let q = match Quantity::parse(raw) {
        Ok(q) => q,
        Err(e) => return vec![FieldError::invalid(path, raw, e.to_string())],
    };
    let mut errs = Vec::new();
    if q.milli_value() < 0 {
        errs.push(FieldError::invalid(
            path,
            quantity_string(raw),
            IS_NEGATIVE_ERROR,
        ));
    }
    if is_extended(name) && q.milli_value() % 1000 != 0 {
        errs.push(FieldError::invalid(
            path,
            go_literal(quantity_string(raw)),
            "must be an integer",
        ));
    }
    errs
}

fn parse_milli(raw: &str) -> Option<i128> {
    Quantity::parse(raw).ok().map(|q| q.milli_value())
}

/// Container (or pod overhead) resource requirements: names, quantities, and requests no
/// larger than limits (equal for resources that cannot be overcommitted).
pub(crate) fn validate_resource_requirements(
    req: Option<&ResourceRequirements>,
    path: &FieldPath,
) -> Vec<FieldError> {
    let empty = BTreeMap::new();
    let limits = req.and_then(|r| r.limits.as_ref()).unwrap_or(&empty);
    let requests = req.and_then(|r| r.requests.as_ref()).unwrap_or(&empty);
    let (lim_path, req_path) = (path.child("limits"), path.child("requests"));
    let mut errs = validate_resource_list(limits, &lim_path);
    for (name, quantity) in requests {
        let key_path = req_path.key(name);
        errs.extend(container_resource_name_errors(name, &key_path));
        errs.extend(quantity_value_errors(name, &quantity.0, &key_path));
        errs.extend(request_vs_limit(
            name,
            &quantity.0,
            limits.get(name),
            &req_path,
            &lim_path,
        ));
    }
    errs
}

/// Names and quantities of a resource list (limits, overhead).
pub(crate) fn validate_resource_list(
    list: &BTreeMap<String, ApiQuantity>,
    path: &FieldPath,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (name, quantity) in list {
        let key_path = path.key(name);
        errs.extend(container_resource_name_errors(name, &key_path));
        errs.extend(quantity_value_errors(name, &quantity.0, &key_path));
    }
    errs
}

fn request_vs_limit(
    name: &str,
    request: &str,
    limit: Option<&ApiQuantity>,
    req_path: &FieldPath,
    lim_path: &FieldPath,
) -> Vec<FieldError> {
    let Some(limit) = limit else {
        if !is_overcommit_allowed(name) {
            return vec![FieldError::required(
                lim_path,
                "Limit must be set for non overcommitable resources",
            )];
        }
        return Vec::new();
    };
    let (Some(r), Some(l)) = (parse_milli(request), parse_milli(&limit.0)) else {
        return Vec::new();
    };
    let limit_text = quantity_string(&limit.0);
    if r != l && !is_overcommit_allowed(name) {
        return vec![FieldError::invalid(
            req_path,
            quantity_string(request),
            format!("must be equal to {name} limit of {limit_text}"),
        )];
    }
    if r > l {
        return vec![FieldError::invalid(
            req_path,
            quantity_string(request),
            format!("must be less than or equal to {name} limit of {limit_text}"),
        )];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reqs(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> ResourceRequirements {
        let list = |items: &[(&str, &str)]| {
            Some(
                items
                    .iter()
                    .map(|(k, v)| (k.to_string(), ApiQuantity(v.to_string())))
                    .collect(),
            )
            .filter(|m: &BTreeMap<String, ApiQuantity>| !m.is_empty())
        };
        ResourceRequirements {
            requests: list(requests),
            limits: list(limits),
            ..Default::default()
        }
    }

    fn strings(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn request_above_limit() {
        let path = FieldPath::new("spec")
            .child("containers")
            .index(0)
            .child("resources");
        let errs =
            validate_resource_requirements(Some(&reqs(&[("cpu", "1")], &[("cpu", "500m")])), &path);
        assert_eq!(
            strings(&errs),
            vec![
                "spec.containers[0].resources.requests: Invalid value: \"1\": must be less than or equal to cpu limit of 500m"
            ]
        );
        let errs = validate_resource_requirements(
            Some(&reqs(&[("cpu", "0.5")], &[("cpu", "0.5")])),
            &path,
        );
        assert!(errs.is_empty());
    }

    #[test]
    fn names_and_values() {
        let path = FieldPath::new("r");
        let errs = validate_resource_requirements(Some(&reqs(&[("gpu", "1")], &[])), &path);
        assert_eq!(
            strings(&errs),
            vec![
                "r.requests[gpu]: Invalid value: \"gpu\": must be a standard resource type or fully qualified",
                "r.requests[gpu]: Invalid value: \"gpu\": must be a standard resource for containers",
            ]
        );
        let errs = validate_resource_requirements(Some(&reqs(&[], &[("memory", "-1Gi")])), &path);
        assert_eq!(
            strings(&errs),
            vec!["r.limits[memory]: Invalid value: \"-1Gi\": must be greater than or equal to 0"]
        );
        let errs =
            validate_resource_requirements(Some(&reqs(&[("example.com/gpu", "500m")], &[])), &path);
        assert_eq!(
            strings(&errs),
            vec![
                "r.requests[example.com/gpu]: Invalid value: 500m: must be an integer",
                "r.limits: Required value: Limit must be set for non overcommitable resources",
            ]
        );
        let errs = validate_resource_requirements(Some(&reqs(&[], &[("cpu", "lots")])), &path);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .to_string()
                .starts_with("r.limits[cpu]: Invalid value: \"lots\": quantities must match")
        );
    }

    #[test]
    fn quantity_text() {
        assert_eq!(quantity_string("500m"), "500m");
        assert_eq!(quantity_string("2Gi"), "2Gi");
        assert_eq!(quantity_string("0.5"), "500m");
        assert_eq!(quantity_string("0"), "0");
    }
}
