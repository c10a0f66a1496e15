//! Discovery documents: `/version`, aggregated (apidiscovery.k8s.io/v2) and legacy `/api` and
//! `/apis`, per-group-version resource lists, and the minimal OpenAPI v3 that lets kubectl leave
//! field validation to the server (shared/spec/kubectl-wire.md §1 and §6).

use serde_json::{Value, json};

use crate::resources::{self, ResourceInfo};

pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
pub const AGGREGATED_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// Which aggregated-discovery media type the Accept header asks for, if any.
pub fn aggregated_type(accept: &str) -> Option<&'static str> {
    for part in accept.split(',') {
        let p: String = part.chars().filter(|c| !c.is_whitespace()).collect();
        if p.contains("as=APIGroupDiscoveryList") && p.contains("g=apidiscovery.k8s.io") {
            if p.contains("v=v2beta1") {
                return Some(AGGREGATED_V2BETA1);
            }
            if p.contains("v=v2") {
                return Some(AGGREGATED_V2);
            }
        }
    }
    None
}

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-skiff",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
    })
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn aggregated_resource(r: &ResourceInfo) -> Value {
    let mut v = json!({
        "resource": r.resource,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    if !r.subresources.is_empty() {
        v["subresources"] = r
            .subresources
            .iter()
            .map(|s| {
                json!({
                    "subresource": s.name,
                    "responseKind": {"group": r.group, "version": r.version, "kind": s.kind},
                    "verbs": s.verbs,
                })
            })
            .collect();
    }
    v
}

fn aggregated_group(group: &str, content_type: &str) -> Value {
    let resources: Vec<Value> = resources::in_group_version(group, "v1")
        .map(aggregated_resource)
        .collect();
    let mut item = json!({
        "metadata": {"creationTimestamp": null},
        "versions": [{"version": "v1", "resources": resources, "freshness": "Current"}],
    });
    if !group.is_empty() {
        item["metadata"]["name"] = json!(group);
    }
    let _ = content_type;
    item
}

fn aggregated_list(items: Vec<Value>, content_type: &str) -> Value {
    let api_version = if content_type == AGGREGATED_V2BETA1 {
        "apidiscovery.k8s.io/v2beta1"
    } else {
        "apidiscovery.k8s.io/v2"
    };
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items})
}

/// `/api` as an aggregated document.
pub fn aggregated_core(content_type: &str) -> Value {
    aggregated_list(vec![aggregated_group("", content_type)], content_type)
}

/// `/apis` as an aggregated document.
pub fn aggregated_groups(content_type: &str) -> Value {
    let items = resources::groups()
        .into_iter()
        .map(|g| aggregated_group(g, content_type))
        .collect();
    aggregated_list(items, content_type)
}

/// Legacy `/api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// Legacy `/apis`.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = resources::groups().into_iter().map(api_group).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// Legacy `/apis/<group>`.
pub fn api_group(group: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/v1"), "version": "v1"});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// Legacy `/api/v1` or `/apis/<group>/<version>`; None if that group version is not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let rs: Vec<&ResourceInfo> = resources::in_group_version(group, version).collect();
    if rs.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for r in rs {
        let mut v = json!({
            "name": r.resource,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            v["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            v["categories"] = json!(r.categories);
        }
        list.push(v);
        for s in r.subresources {
            list.push(json!({
                "name": format!("{}/{}", r.resource, s.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": s.kind,
                "verbs": s.verbs,
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    )
}

/// The OpenAPI v3 path name of a group version: `api/v1`, `apis/coordination.k8s.io/v1`.
fn openapi_path(group: &str) -> String {
    if group.is_empty() {
        "api/v1".to_string()
    } else {
        format!("apis/{group}/v1")
    }
}

/// `/openapi/v3`: the index of per-group-version documents.
pub fn openapi_index() -> Value {
    let mut paths = serde_json::Map::new();
    let mut gs = vec![""];
    gs.extend(resources::groups());
    for g in gs {
        let p = openapi_path(g);
        let hash = fnv_hex(&openapi_doc(g).to_string());
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

/// `/openapi/v3/<path>`: one PATCH operation per kind carrying its group-version-kind and the
/// `fieldValidation` parameter, which is what kubectl looks for before it trusts the server to
/// validate fields. It carries no schemas (so `kubectl explain` is not supported).
pub fn openapi_doc(group: &str) -> Value {
    let mut paths = serde_json::Map::new();
    for r in resources::in_group_version(group, "v1") {
        let base = if group.is_empty() {
            "/api/v1".to_string()
        } else {
            format!("/apis/{group}/v1")
        };
        let path = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.resource)
        } else {
            format!("{base}/{}/{{name}}", r.resource)
        };
        // `CoreV1`, `CoordinationV1`, `DiscoveryV1`: the group's first label, capitalised.
        let op_group = match group.split('.').next().filter(|g| !g.is_empty()) {
            None => "CoreV1".to_string(),
            Some(g) => {
                let mut chars = g.chars();
                let first = chars.next().map(|c| c.to_ascii_uppercase());
                format!(
                    "{}{}V1",
                    first.into_iter().collect::<String>(),
                    chars.as_str()
                )
            }
        };
        paths.insert(
            path,
            json!({"patch": {
                "operationId": format!("patch{op_group}{}{}", if r.namespaced { "Namespaced" } else { "" }, r.kind),
                "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                    {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                ],
                "responses": {"200": {"description": "OK"}},
            }}),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}},
    })
}

/// `/openapi/v2`: a minimal OpenAPI v2 document in the protobuf form kubectl reads (gnostic's
/// `openapi_v2.Document` with only `swagger` and `info`). kubectl falls back to it for kinds the
/// v3 documents do not list (a `kind: List` file, say); with no schema for a kind it leaves the
/// validation to the server, which is what happens for every kind here. It is served as
/// `application/octet-stream`, as the real server does: Go cannot parse the `@` in the media type
/// kubectl asks for.
pub fn openapi_v2_protobuf() -> Vec<u8> {
    fn field(num: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(num << 3) | 2, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }
    let mut info = field(1, b"Kubernetes");
    info.extend(field(2, b"v1.32.0"));
    let mut doc = field(1, b"2.0");
    doc.extend(field(2, &info));
    doc
}

/// The group of an OpenAPI v3 document path, if served.
pub fn openapi_group(path: &str) -> Option<&'static str> {
    if path == "api/v1" {
        return Some("");
    }
    let g = path.strip_prefix("apis/")?.strip_suffix("/v1")?;
    resources::groups().into_iter().find(|x| *x == g)
}

fn fnv_hex(s: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016X}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_accept_is_recognised() {
        let accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_type(accept), Some(AGGREGATED_V2));
        assert_eq!(aggregated_type("application/json, */*"), None);
    }

    #[test]
    fn core_list_has_pods_with_short_name_and_category() {
        let l = resource_list("", "v1").unwrap();
        let pods = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods")
            .unwrap();
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        assert!(resource_list("nope", "v1").is_none());
    }

    #[test]
    fn openapi_index_points_at_served_documents() {
        let idx = openapi_index();
        let url = idx["paths"]["apis/coordination.k8s.io/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/apis/coordination.k8s.io/v1?hash="));
        assert_eq!(
            openapi_group("apis/coordination.k8s.io/v1"),
            Some("coordination.k8s.io")
        );
        assert_eq!(openapi_group("apis/apps/v1"), None);
    }
}
