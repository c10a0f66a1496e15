//! Per-kind patch metadata: which lists merge by key and which key, taken from the
//! `patchStrategy`/`patchMergeKey` struct tags of k8s.io/api (core/v1, apps/v1, batch/v1).
//! Fields not listed here are treated like untagged Go fields: objects merge recursively and
//! lists are replaced.

/// How a list field is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListMerge {
    /// No patch strategy: the patch's list replaces the live one.
    Replace,
    /// `patchStrategy:"merge"` with `patchMergeKey`: items are matched by that field.
    ByKey(&'static str),
    /// `patchStrategy:"merge"` on a list of scalars: set union.
    Set,
}

/// Patch metadata of one field: its list strategy, and the schema of its object value (for a
/// map field) or of its items (for a list field).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub list: ListMerge,
    pub schema: Option<&'static Schema>,
}

impl Field {
    /// A field the table knows nothing about.
    pub const UNKNOWN: Field = Field {
        list: ListMerge::Replace,
        schema: None,
    };

    /// The merge key of a by-key list.
    pub fn merge_key(&self) -> Option<&'static str> {
        match self.list {
            ListMerge::ByKey(k) => Some(k),
            _ => None,
        }
    }
}

/// The known fields of one object type.
#[derive(Debug)]
pub(crate) struct Schema {
    fields: &'static [(&'static str, Field)],
}

impl Schema {
    /// The metadata of `name`, or [`Field::UNKNOWN`].
    pub fn field(&self, name: &str) -> Field {
        self.fields
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(Field::UNKNOWN, |(_, f)| *f)
    }
}

/// The metadata of `name` within an optional schema.
pub(crate) fn field_of(schema: Option<&Schema>, name: &str) -> Field {
    schema.map_or(Field::UNKNOWN, |s| s.field(name))
}

const fn object(schema: &'static Schema) -> Field {
    Field {
        list: ListMerge::Replace,
        schema: Some(schema),
    }
}

const fn keyed(key: &'static str, schema: Option<&'static Schema>) -> Field {
    Field {
        list: ListMerge::ByKey(key),
        schema,
    }
}

const SET: Field = Field {
    list: ListMerge::Set,
    schema: None,
};

static OBJECT_META: Schema = Schema {
    fields: &[("finalizers", SET), ("ownerReferences", keyed("uid", None))],
};

static CONTAINER: Schema = Schema {
    fields: &[
        ("ports", keyed("containerPort", None)),
        ("env", keyed("name", None)),
        ("volumeMounts", keyed("mountPath", None)),
        ("volumeDevices", keyed("devicePath", None)),
    ],
};

static POD_SPEC: Schema = Schema {
    fields: &[
        ("volumes", keyed("name", None)),
        ("initContainers", keyed("name", Some(&CONTAINER))),
        ("containers", keyed("name", Some(&CONTAINER))),
        ("ephemeralContainers", keyed("name", Some(&CONTAINER))),
        ("imagePullSecrets", keyed("name", None)),
        ("hostAliases", keyed("ip", None)),
        ("topologySpreadConstraints", keyed("topologyKey", None)),
        ("schedulingGates", keyed("name", None)),
        ("resourceClaims", keyed("name", None)),
    ],
};

static POD_STATUS: Schema = Schema {
    fields: &[
        ("conditions", keyed("type", None)),
        ("podIPs", keyed("ip", None)),
        ("hostIPs", keyed("ip", None)),
        ("resourceClaimStatuses", keyed("name", None)),
    ],
};

static POD: Schema = Schema {
    fields: &[
        ("metadata", object(&OBJECT_META)),
        ("spec", object(&POD_SPEC)),
        ("status", object(&POD_STATUS)),
    ],
};

static POD_TEMPLATE_SPEC: Schema = Schema {
    fields: &[
        ("metadata", object(&OBJECT_META)),
        ("spec", object(&POD_SPEC)),
    ],
};

static NODE_SPEC: Schema = Schema {
    fields: &[("podCIDRs", SET)],
};

static NODE_STATUS: Schema = Schema {
    fields: &[
        ("conditions", keyed("type", None)),
        ("addresses", keyed("type", None)),
    ],
};

static NODE: Schema = Schema {
    fields: &[
        ("metadata", object(&OBJECT_META)),
        ("spec", object(&NODE_SPEC)),
        ("status", object(&NODE_STATUS)),
    ],
};

/// Status with `conditions` merged by `type` (Namespace, Service, workloads).
static CONDITIONS_STATUS: Schema = Schema {
    fields: &[("conditions", keyed("type", None))],
};

static NAMESPACE: Schema = Schema {
    fields: &[
        ("metadata", object(&OBJECT_META)),
        ("status", object(&CONDITIONS_STATUS)),
    ],
};

/// Kinds whose only tagged field is in `metadata` (Event, Lease, Endpoints, ConfigMap, ...).
static METADATA_ONLY: Schema = Schema {
    fields: &[("metadata", object(&OBJECT_META))],
};

static SERVICE_SPEC: Schema = Schema {
    fields: &[("ports", keyed("port", None))],
};

static SERVICE: Schema = Schema {
    fields: &[
        ("metadata", object(&OBJECT_META)),
        ("spec", object(&SERVICE_SPEC)),
        ("status", object(&CONDITIONS_STATUS)),
    ],
};

static SERVICE_ACCOUNT: Schema = Schema {
    fields: &[
        ("metadata", object(&OBJECT_META)),
        ("secrets", keyed("name", None)),
        ("imagePullSecrets", keyed("name", None)),
    ],
};

static POD_TEMPLATE: Schema = Schema {
    fields: &[
        ("metadata", object(&OBJECT_META)),
        ("template", object(&POD_TEMPLATE_SPEC)),
    ],
};

/// `spec` of Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, ReplicationController.
static WORKLOAD_SPEC: Schema = Schema {
    fields: &[("template", object(&POD_TEMPLATE_SPEC))],
};

static WORKLOAD: Schema = Schema {
    fields: &[
        ("metadata", object(&OBJECT_META)),
        ("spec", object(&WORKLOAD_SPEC)),
        ("status", object(&CONDITIONS_STATUS)),
    ],
};

static JOB_TEMPLATE: Schema = Schema {
    fields: &[
        ("metadata", object(&OBJECT_META)),
        ("spec", object(&WORKLOAD_SPEC)),
    ],
};

static CRON_JOB_SPEC: Schema = Schema {
    fields: &[("jobTemplate", object(&JOB_TEMPLATE))],
};

static CRON_JOB: Schema = Schema {
    fields: &[
        ("metadata", object(&OBJECT_META)),
        ("spec", object(&CRON_JOB_SPEC)),
    ],
};

/// The schema of a built-in kind, or `None` for kinds without patch metadata (custom
/// resources), which then get merge-patch semantics for lists.
pub(crate) fn for_kind(kind: &str) -> Option<&'static Schema> {
    Some(match kind {
        "Pod" => &POD,
        "Node" => &NODE,
        "Namespace" => &NAMESPACE,
        "Service" => &SERVICE,
        "ServiceAccount" => &SERVICE_ACCOUNT,
        "PodTemplate" => &POD_TEMPLATE,
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => &WORKLOAD,
        "CronJob" => &CRON_JOB,
        "Event"
        | "Lease"
        | "Endpoints"
        | "ConfigMap"
        | "Secret"
        | "PersistentVolumeClaim"
        | "PersistentVolume"
        | "LimitRange"
        | "ResourceQuota" => &METADATA_ONLY,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let pod = for_kind("Pod").unwrap();
        let spec = pod.field("spec").schema;
        let containers = field_of(spec, "containers");
        assert_eq!(containers.list, ListMerge::ByKey("name"));
        assert_eq!(
            field_of(containers.schema, "ports").merge_key(),
            Some("containerPort")
        );
        assert_eq!(field_of(spec, "tolerations").list, ListMerge::Replace);
        assert_eq!(
            field_of(pod.field("metadata").schema, "finalizers").list,
            ListMerge::Set
        );
        assert_eq!(
            field_of(for_kind("Node").unwrap().field("spec").schema, "taints").list,
            ListMerge::Replace
        );
        assert!(for_kind("Widget").is_none());
        let deploy_containers = field_of(
            field_of(
                field_of(
                    for_kind("Deployment").unwrap().field("spec").schema,
                    "template",
                )
                .schema,
                "spec",
            )
            .schema,
            "containers",
        );
        assert_eq!(deploy_containers.merge_key(), Some("name"));
    }
}
