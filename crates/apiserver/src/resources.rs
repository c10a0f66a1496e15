//! The resource types this server serves, with what discovery publishes about each.
//!
//! One table drives routing, storage keys, discovery (aggregated and legacy) and the OpenAPI
//! document, so adding a resource is adding a row (plus its kind rules in `strategy.rs`).

/// A subresource: its name, the kind it takes or returns, and its verbs.
pub struct Subresource {
    pub name: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

pub struct ResourceInfo {
    pub group: &'static str,
    pub version: &'static str,
    /// Plural REST name: `pods`.
    pub resource: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub verbs: &'static [&'static str],
    pub subresources: &'static [Subresource],
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

pub static RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        group: "",
        version: "v1",
        resource: "bindings",
        singular: "binding",
        kind: "Binding",
        namespaced: true,
        short_names: &[],
        categories: &[],
        verbs: &["create"],
        subresources: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        resource: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        verbs: ALL_VERBS,
        subresources: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        resource: "endpoints",
        singular: "endpoints",
        kind: "Endpoints",
        namespaced: true,
        short_names: &["ep"],
        categories: &[],
        verbs: ALL_VERBS,
        subresources: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        resource: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        verbs: ALL_VERBS,
        subresources: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        resource: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        verbs: &[
            "create", "delete", "get", "list", "patch", "update", "watch",
        ],
        subresources: &[
            Subresource {
                name: "finalize",
                kind: "Namespace",
                verbs: &["update"],
            },
            Subresource {
                name: "status",
                kind: "Namespace",
                verbs: STATUS_VERBS,
            },
        ],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        resource: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        verbs: ALL_VERBS,
        subresources: &[Subresource {
            name: "status",
            kind: "Node",
            verbs: STATUS_VERBS,
        }],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        resource: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        verbs: ALL_VERBS,
        subresources: &[
            Subresource {
                name: "attach",
                kind: "PodAttachOptions",
                verbs: &["create", "get"],
            },
            Subresource {
                name: "binding",
                kind: "Binding",
                verbs: &["create"],
            },
            Subresource {
                name: "exec",
                kind: "PodExecOptions",
                verbs: &["create", "get"],
            },
            Subresource {
                name: "log",
                kind: "Pod",
                verbs: &["get"],
            },
            Subresource {
                name: "portforward",
                kind: "PodPortForwardOptions",
                verbs: &["create", "get"],
            },
            Subresource {
                name: "status",
                kind: "Pod",
                verbs: STATUS_VERBS,
            },
        ],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        resource: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        verbs: ALL_VERBS,
        subresources: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        resource: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        verbs: ALL_VERBS,
        subresources: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        resource: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        categories: &["all"],
        verbs: ALL_VERBS,
        subresources: &[Subresource {
            name: "status",
            kind: "Service",
            verbs: STATUS_VERBS,
        }],
    },
    ResourceInfo {
        group: "coordination.k8s.io",
        version: "v1",
        resource: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        categories: &[],
        verbs: ALL_VERBS,
        subresources: &[],
    },
    ResourceInfo {
        group: "discovery.k8s.io",
        version: "v1",
        resource: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        namespaced: true,
        short_names: &[],
        categories: &[],
        verbs: ALL_VERBS,
        subresources: &[],
    },
];

/// The API groups besides the core one, in discovery order.
pub fn groups() -> Vec<&'static str> {
    let mut gs: Vec<&str> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !gs.contains(&r.group) {
            gs.push(r.group);
        }
    }
    gs
}

pub fn in_group_version(group: &str, version: &str) -> impl Iterator<Item = &'static ResourceInfo> {
    let (group, version) = (group.to_string(), version.to_string());
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

pub fn lookup(group: &str, version: &str, resource: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.resource == resource)
}

impl ResourceInfo {
    /// `v1` or `coordination.k8s.io/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The name used in error messages: `pods`, `leases.coordination.k8s.io`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Whether objects are kept in the store (bindings are not: they act on pods).
    pub fn stored(&self) -> bool {
        self.resource != "bindings"
    }

    /// Store key prefix for all objects of this resource (all namespaces).
    pub fn prefix(&self) -> String {
        format!("/registry/{}/", self.qualified())
    }

    /// Store key prefix for one namespace (or the whole resource when cluster-scoped).
    pub fn namespace_prefix(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("/registry/{}/{}/", self.qualified(), ns),
            _ => self.prefix(),
        }
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("/registry/{}/{}/{}", self.qualified(), ns, name),
            _ => format!("/registry/{}/{}", self.qualified(), name),
        }
    }

    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.iter().any(|s| s.name == name)
    }
}
