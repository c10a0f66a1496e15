//! Pod validation tests: messages are compared with the exact text Kubernetes produces.

use super::*;
use crate::pod::default_pod;
use crate::validation::invalid_message;
use serde_json::json;

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/// A defaulted pod built from JSON (metadata name/namespace filled in when absent).
fn pod(mut value: serde_json::Value) -> Pod {
    let meta = value["metadata"]
        .as_object_mut()
        .map(|m| m.clone())
        .unwrap_or_default();
    let mut meta = serde_json::Value::Object(meta);
    if meta.get("name").is_none() {
        meta["name"] = json!("web");
    }
    if meta.get("namespace").is_none() {
        meta["namespace"] = json!("default");
    }
    value["metadata"] = meta;
    let mut p: Pod = serde_json::from_value(value).unwrap();
    default_pod(&mut p);
    p
}

fn errors(p: &Pod) -> Vec<String> {
    validate_pod(p).iter().map(|e| e.to_string()).collect()
}

fn one_container(container: serde_json::Value) -> Pod {
    pod(json!({"spec": {"containers": [container]}}))
}

#[test]
fn valid_pod_has_no_errors() {
    let p = pod(json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {
            "containers": [{
                "name": "web", "image": "nginx:1.27",
                "ports": [{"containerPort": 80, "name": "http"}],
                "env": [{"name": "A", "value": "1"}, {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
                "livenessProbe": {"httpGet": {"port": "http"}},
                "readinessProbe": {"tcpSocket": {"port": 80}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]
            }],
            "initContainers": [{"name": "init", "image": "busybox", "command": ["true"]}],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "tolerations": [{"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}]
        }
    }));
    assert_eq!(errors(&p), Vec::<String>::new());
}

#[test]
fn kubectl_example_bad_pod() {
    let p =
        pod(json!({"metadata": {"name": "bad"}, "spec": {"containers": [{"name": "Bad_Name"}]}}));
    let errs = validate_pod(&p);
    assert_eq!(
        errs.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        vec![
            format!("spec.containers[0].name: Invalid value: \"Bad_Name\": {LABEL_MSG}"),
            "spec.containers[0].image: Required value".to_string(),
        ]
    );
    assert_eq!(errs[1].reason(), "FieldValueRequired");
    assert_eq!(errs[0].reason(), "FieldValueInvalid");
    assert_eq!(
        invalid_message("Pod", "bad", &errs),
        format!(
            "Pod \"bad\" is invalid: [spec.containers[0].name: Invalid value: \"Bad_Name\": {LABEL_MSG}, spec.containers[0].image: Required value]"
        )
    );
}

#[test]
fn containers_required() {
    let p = pod(json!({"spec": {"containers": []}}));
    assert_eq!(errors(&p), vec!["spec.containers: Required value"]);
}

#[test]
fn undefaulted_pod_reports_required_fields() {
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": "a", "namespace": "default"},
        "spec": {"containers": [{"name": "a", "image": "x"}]}
    }))
    .unwrap();
    assert_eq!(
        errors(&p),
        vec![
            "spec.terminationGracePeriodSeconds: Required value",
            "spec.containers[0].terminationMessagePolicy: Required value",
            "spec.containers[0].imagePullPolicy: Required value",
            "spec.restartPolicy: Required value",
            "spec.dnsPolicy: Required value",
        ]
    );
}

#[test]
fn duplicate_names_across_containers_and_init_containers() {
    let p = pod(json!({"spec": {
        "containers": [{"name": "web", "image": "a"}, {"name": "web", "image": "b"}],
        "initContainers": [{"name": "web", "image": "c"}]
    }}));
    assert_eq!(
        errors(&p),
        vec![
            "spec.containers[1].name: Duplicate value: \"web\"",
            "spec.initContainers[0].name: Duplicate value: \"web\"",
        ]
    );
}

#[test]
fn enumerations() {
    let p = pod(json!({"spec": {
        "restartPolicy": "Sometimes", "dnsPolicy": "Cluster",
        "containers": [{"name": "a", "image": "x", "imagePullPolicy": "Maybe", "terminationMessagePolicy": "Logs"}]
    }}));
    assert_eq!(
        errors(&p),
        vec![
            "spec.containers[0].terminationMessagePolicy: Unsupported value: \"Logs\": supported values: \"File\", \"FallbackToLogsOnError\"",
            "spec.containers[0].imagePullPolicy: Unsupported value: \"Maybe\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            "spec.dnsPolicy: Unsupported value: \"Cluster\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"",
        ]
    );
}

#[test]
fn ports() {
    let p = one_container(json!({"name": "a", "image": "x", "ports": [
        {"containerPort": 0},
        {"containerPort": 70000, "name": "HTTP"},
        {"containerPort": 80, "name": "web", "protocol": "ICMP"},
        {"containerPort": 81, "name": "web", "hostPort": 8080},
        {"containerPort": 82, "hostPort": 8080}
    ]}));
    assert_eq!(
        errors(&p),
        vec![
            "spec.containers[0].ports[0].containerPort: Required value",
            "spec.containers[0].ports[1].name: Invalid value: \"HTTP\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
            "spec.containers[0].ports[1].name: Invalid value: \"HTTP\": must contain at least one letter (a-z)",
            "spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.containers[0].ports[2].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            "spec.containers[0].ports[3].name: Duplicate value: \"web\"",
            "spec.containers[0].ports[4].hostPort: Duplicate value: \"TCP//8080\"",
        ]
    );
}

#[test]
fn host_network_requires_matching_host_port() {
    let p = pod(
        json!({"spec": {"hostNetwork": true, "containers": [{"name": "a", "image": "x",
        "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}),
    );
    assert_eq!(
        errors(&p),
        vec![
            "spec.containers[0].ports[0].hostPort: Invalid value: 8080: must match `containerPort` when `hostNetwork` is true"
        ]
    );
}

#[test]
fn env_and_env_from() {
    let p = one_container(json!({"name": "a", "image": "x",
        "env": [
            {"name": ""},
            {"name": "A=B"},
            {"name": "X", "value": "v", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "Y", "valueFrom": {"fieldRef": {"fieldPath": "status.phase"}}},
            {"name": "Z", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}},
            {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}
        ],
        "envFrom": [{"prefix": "P_"}]
    }));
    assert_eq!(
        errors(&p),
        vec![
            "spec.containers[0].env[0].name: Required value",
            "spec.containers[0].env[1].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='",
            "spec.containers[0].env[2].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty",
            "spec.containers[0].env[3].valueFrom.fieldRef.fieldPath: Unsupported value: \"status.phase\": supported values: \"metadata.name\", \"metadata.namespace\", \"metadata.uid\", \"spec.nodeName\", \"spec.serviceAccountName\", \"status.hostIP\", \"status.hostIPs\", \"status.podIP\", \"status.podIPs\"",
            "spec.containers[0].env[4].valueFrom.fieldRef.fieldPath: Invalid value: \"spec.bogus\": error converting fieldPath: field label not supported: spec.bogus",
            "spec.containers[0].envFrom: Invalid value: \"\": must specify one of: `configMapRef` or `secretRef`",
        ]
    );
}

#[test]
fn resources() {
    let p = one_container(json!({"name": "a", "image": "x",
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "500m", "memory": "1Gi"}}}));
    assert_eq!(
        errors(&p),
        vec![
            "spec.containers[0].resources.requests: Invalid value: \"1\": must be less than or equal to cpu limit of 500m"
        ]
    );
}

#[test]
fn probes() {
    let p = one_container(json!({"name": "a", "image": "x",
        "livenessProbe": {"exec": {"command": ["true"]}, "successThreshold": 2},
        "readinessProbe": {},
        "startupProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": 0}, "initialDelaySeconds": -1}
    }));
    assert_eq!(
        errors(&p),
        vec![
            "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
            "spec.containers[0].readinessProbe: Required value: must specify a handler type",
            "spec.containers[0].startupProbe.tcpSocket: Forbidden: may not specify more than 1 handler type",
            "spec.containers[0].startupProbe.initialDelaySeconds: Invalid value: -1: must be greater than or equal to 0",
        ]
    );
}

#[test]
fn http_get_probe_details() {
    let p = one_container(json!({"name": "a", "image": "x",
        "readinessProbe": {"httpGet": {"port": "no_such_port", "scheme": "FTP", "httpHeaders": [{"name": "Bad Header", "value": "v"}]},
                           "terminationGracePeriodSeconds": 10}
    }));
    assert_eq!(
        errors(&p),
        vec![
            "spec.containers[0].readinessProbe.httpGet.port: Invalid value: \"no_such_port\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
            "spec.containers[0].readinessProbe.httpGet.scheme: Unsupported value: \"FTP\": supported values: \"HTTP\", \"HTTPS\"",
            "spec.containers[0].readinessProbe.httpGet.httpHeaders: Invalid value: \"Bad Header\": a valid HTTP header must consist of alphanumeric characters or '-' (e.g. 'X-Header-Name', regex used for validation is '[-A-Za-z0-9]+')",
            "spec.containers[0].readinessProbe.terminationGracePeriodSeconds: Invalid value: 10: must not be set for readinessProbes",
        ]
    );
}

#[test]
fn init_container_rules() {
    let p = pod(json!({"spec": {
        "containers": [{"name": "a", "image": "x"}],
        "initContainers": [
            {"name": "i1", "image": "x", "livenessProbe": {"exec": {"command": ["true"]}}, "lifecycle": {"postStart": {"exec": {"command": ["x"]}}}},
            {"name": "i2", "image": "x", "restartPolicy": "OnFailure"},
            {"name": "side", "image": "x", "restartPolicy": "Always", "readinessProbe": {"exec": {"command": ["true"]}}}
        ]
    }}));
    assert_eq!(
        errors(&p),
        vec![
            "spec.initContainers[0].lifecycle: Forbidden: may not be set for init containers without restartPolicy=Always",
            "spec.initContainers[0].livenessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
            "spec.initContainers[1].restartPolicy: Unsupported value: \"OnFailure\": supported values: \"Always\"",
        ]
    );
    let p = one_container(json!({"name": "a", "image": "x", "restartPolicy": "Always"}));
    assert_eq!(
        errors(&p),
        vec!["spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers"]
    );
}

#[test]
fn lifecycle_sleep_bounded_by_grace_period() {
    let p = pod(
        json!({"spec": {"terminationGracePeriodSeconds": 10, "containers": [{"name": "a", "image": "x",
        "lifecycle": {"preStop": {"sleep": {"seconds": 20}}}}]}}),
    );
    assert_eq!(
        errors(&p),
        vec![
            "spec.containers[0].lifecycle.preStop.sleep: Invalid value: 20: must be non-negative and less than terminationGracePeriodSeconds (10)"
        ]
    );
}

#[test]
fn volumes_and_mounts() {
    let p = pod(json!({"spec": {
        "volumes": [
            {"name": "data", "emptyDir": {}},
            {"name": "data", "emptyDir": {}},
            {"name": "Bad", "emptyDir": {}},
            {"name": "two", "emptyDir": {}, "hostPath": {"path": "/x"}},
            {"name": "cfg", "configMap": {"name": ""}}
        ],
        "containers": [{"name": "a", "image": "x", "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "missing", "mountPath": "/data"},
            {"name": "data", "mountPath": "/sub", "subPath": "../x"}
        ]}]
    }}));
    assert_eq!(
        errors(&p),
        vec![
            "spec.volumes[1].name: Duplicate value: \"data\"".to_string(),
            format!("spec.volumes[2].name: Invalid value: \"Bad\": {LABEL_MSG}"),
            "spec.volumes[3].hostPath: Forbidden: may not specify more than 1 volume type".to_string(),
            "spec.volumes[4].configMap.name: Required value".to_string(),
            "spec.containers[0].volumeMounts[1].name: Not found: \"missing\"".to_string(),
            "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/data\": must be unique".to_string(),
            "spec.containers[0].volumeMounts.subPath: Invalid value: \"../x\": must not contain '..'".to_string(),
        ]
    );
}

#[test]
fn pod_level_fields() {
    let p = pod(json!({"spec": {
        "containers": [{"name": "a", "image": "x"}],
        "activeDeadlineSeconds": 0,
        "nodeName": "Node_1",
        "hostname": "a.b",
        "serviceAccountName": "sa",
        "nodeSelector": {"disk": "ssd ok"},
        "os": {"name": "plan9"},
        "preemptionPolicy": "Sometimes"
    }}));
    let errs = errors(&p);
    assert_eq!(errs.len(), 6, "{errs:#?}");
    assert!(
        errs[0].starts_with("spec.nodeSelector: Invalid value: \"ssd ok\": a valid label must be")
    );
    assert!(
        errs[1].starts_with(
            "spec.nodeName: Invalid value: \"Node_1\": a lowercase RFC 1123 subdomain"
        )
    );
    assert_eq!(
        errs[2],
        "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive"
    );
    assert_eq!(
        errs[3],
        "spec.hostname: Invalid value: \"a.b\": must not contain dots"
    );
    assert_eq!(
        errs[4],
        "spec.preemptionPolicy: Unsupported value: \"Sometimes\": supported values: \"PreemptLowerPriority\", \"Never\""
    );
    assert_eq!(
        errs[5],
        "spec.os: Unsupported value: \"plan9\": supported values: \"linux\", \"windows\""
    );
}

#[test]
fn tolerations() {
    let p = pod(
        json!({"spec": {"containers": [{"name": "a", "image": "x"}], "tolerations": [
            {"operator": "Equal", "value": "x"},
            {"key": "k", "operator": "Exists", "value": "v"},
            {"key": "k", "operator": "Like"},
            {"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5},
            {"key": "k", "operator": "Exists", "effect": "Never"}
        ]}}),
    );
    assert_eq!(
        errors(&p),
        vec![
            "spec.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            "spec.tolerations[1].operator: Invalid value: \"v\": value must be empty when `operator` is 'Exists'",
            "spec.tolerations[2].operator: Unsupported value: \"Like\": supported values: \"Equal\", \"Exists\"",
            "spec.tolerations[3].effect: Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set",
            "spec.tolerations[4].effect: Unsupported value: \"Never\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
        ]
    );
}

#[test]
fn create_only_rules() {
    let p = pod(json!({"spec": {
        "nodeName": "node-1",
        "schedulingGates": [{"name": "example.com/gate"}],
        "containers": [{"name": "a", "image": "x"}],
        "ephemeralContainers": [{"name": "debug", "image": "busybox", "targetContainerName": "nope"}]
    }}));
    assert_eq!(
        errors(&p),
        vec![
            "spec.ephemeralContainers[0].targetContainerName: Not found: \"nope\"",
            "spec.ephemeralContainers: Forbidden: cannot be set on create",
            "spec.nodeName: Forbidden: cannot be set until all schedulingGates have been cleared",
        ]
    );
}

#[test]
fn image_whitespace_and_dns_none() {
    let p = pod(
        json!({"spec": {"dnsPolicy": "None", "containers": [{"name": "a", "image": " nginx"}]}}),
    );
    assert_eq!(
        errors(&p),
        vec![
            "spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None",
            "spec.containers[0].image: Invalid value: \" nginx\": must not have leading or trailing whitespace",
        ]
    );
}

#[test]
fn metadata_errors_come_first() {
    let p = pod(
        json!({"metadata": {"name": "Web", "labels": {"-x": "y"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}}),
    );
    let errs = errors(&p);
    assert_eq!(errs.len(), 2);
    assert!(errs[0].starts_with("metadata.name: Invalid value: \"Web\""));
    assert!(errs[1].starts_with("metadata.labels: Invalid value: \"-x\": name part must consist"));
}

// -------------------------------------------------------------------------------------------
// Update

fn stored(value: serde_json::Value) -> Pod {
    let mut p = pod(value);
    p.metadata.resource_version = Some("7".into());
    p.metadata.uid = Some("uid-1".into());
    p
}

fn update_errors(new: &Pod, old: &Pod) -> Vec<String> {
    crate::validation::pod_update::validate_pod_update(new, old)
        .iter()
        .map(|e| e.to_string())
        .collect()
}

const FORBIDDEN_UPDATE: &str = "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

fn base() -> serde_json::Value {
    json!({"spec": {"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}], "resources": {}}],
                    "initContainers": [{"name": "init", "image": "busybox:1"}],
                    "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}],
                    "activeDeadlineSeconds": 100}})
}

#[test]
fn image_changes_are_allowed() {
    let old = stored(base());
    let mut new = old.clone();
    let spec = new.spec.as_mut().unwrap();
    spec.containers[0].image = Some("nginx:1.28".into());
    spec.init_containers.as_mut().unwrap()[0].image = Some("busybox:2".into());
    spec.active_deadline_seconds = Some(50);
    spec.tolerations.as_mut().unwrap()[0].toleration_seconds = Some(20);
    spec.tolerations.as_mut().unwrap().push(Toleration {
        key: Some("other".into()),
        operator: Some("Exists".into()),
        ..Default::default()
    });
    assert_eq!(update_errors(&new, &old), Vec::<String>::new());
}

#[test]
fn other_spec_changes_are_forbidden() {
    let old = stored(base());
    let mut new = old.clone();
    new.spec.as_mut().unwrap().containers[0]
        .ports
        .as_mut()
        .unwrap()[0]
        .container_port = 8080;
    assert_eq!(update_errors(&new, &old), vec![FORBIDDEN_UPDATE]);
}

#[test]
fn empty_and_absent_lists_are_equal() {
    let old = stored(base());
    let mut new = old.clone();
    let c = &mut new.spec.as_mut().unwrap().containers[0];
    c.env = Some(vec![]);
    c.resources = None;
    assert_eq!(update_errors(&new, &old), Vec::<String>::new());
}

#[test]
fn container_count_cannot_change() {
    let old = stored(base());
    let mut new = old.clone();
    let extra = new.spec.as_ref().unwrap().containers[0].clone();
    let mut extra = extra;
    extra.name = "side".into();
    new.spec.as_mut().unwrap().containers.push(extra);
    assert_eq!(
        update_errors(&new, &old),
        vec!["spec.containers: Forbidden: pod updates may not add or remove containers"]
    );
}

#[test]
fn active_deadline_rules() {
    let old = stored(base());
    let mut new = old.clone();
    new.spec.as_mut().unwrap().active_deadline_seconds = Some(200);
    assert_eq!(
        update_errors(&new, &old),
        vec![
            "spec.activeDeadlineSeconds: Invalid value: 200: must be less than or equal to previous value"
        ]
    );
    new.spec.as_mut().unwrap().active_deadline_seconds = None;
    assert_eq!(
        update_errors(&new, &old),
        vec![
            "spec.activeDeadlineSeconds: Invalid value: null: must not update from a positive integer to nil value"
        ]
    );
}

#[test]
fn tolerations_cannot_be_removed() {
    let old = stored(base());
    let mut new = old.clone();
    new.spec.as_mut().unwrap().tolerations = None;
    assert_eq!(
        update_errors(&new, &old),
        vec![
            "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"
        ]
    );
}

#[test]
fn negative_grace_period_may_become_one() {
    let mut v = base();
    v["spec"]["terminationGracePeriodSeconds"] = json!(-1);
    let old = stored(v);
    let mut new = old.clone();
    new.spec.as_mut().unwrap().termination_grace_period_seconds = Some(1);
    assert_eq!(update_errors(&new, &old), Vec::<String>::new());
    new.spec.as_mut().unwrap().termination_grace_period_seconds = Some(2);
    assert_eq!(update_errors(&new, &old), vec![FORBIDDEN_UPDATE]);
}

#[test]
fn scheduling_gates_may_only_be_removed() {
    let mut v = base();
    v["spec"]["schedulingGates"] = json!([{"name": "example.com/a"}]);
    let old = stored(v);
    let mut new = old.clone();
    new.spec.as_mut().unwrap().scheduling_gates = None;
    assert_eq!(update_errors(&new, &old), Vec::<String>::new());
    new.spec.as_mut().unwrap().scheduling_gates = Some(vec![
        k8s_openapi::api::core::v1::PodSchedulingGate {
            name: "example.com/a".into(),
        },
        k8s_openapi::api::core::v1::PodSchedulingGate {
            name: "example.com/b".into(),
        },
    ]);
    assert_eq!(
        update_errors(&new, &old),
        vec![
            "spec.schedulingGates[1].name: Forbidden: only deletion is allowed, but found new scheduling gate 'example.com/b'"
        ]
    );
}

#[test]
fn metadata_immutability_and_labels_on_update() {
    let old = stored(base());
    let mut new = old.clone();
    new.metadata.labels = Some([("tier".to_string(), "fe".to_string())].into());
    assert_eq!(update_errors(&new, &old), Vec::<String>::new());
    new.metadata.namespace = Some("other".into());
    assert_eq!(
        update_errors(&new, &old),
        vec!["metadata.namespace: Invalid value: \"other\": field is immutable"]
    );
}

#[test]
fn quantities_compare_by_value() {
    let mut v = base();
    v["spec"]["containers"][0]["resources"] =
        json!({"limits": {"cpu": "1"}, "requests": {"cpu": "1"}});
    let old = stored(v);
    let mut new = old.clone();
    let r = new.spec.as_mut().unwrap().containers[0]
        .resources
        .as_mut()
        .unwrap();
    r.limits.as_mut().unwrap().insert(
        "cpu".into(),
        k8s_openapi::apimachinery::pkg::api::resource::Quantity("1000m".into()),
    );
    assert_eq!(update_errors(&new, &old), Vec::<String>::new());
}

#[test]
fn kubectl_apply_image_change_passes_update_validation() {
    let old = stored(base());
    let live = serde_json::to_value(&old).unwrap();
    let patch = json!({
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}\n"}},
        "spec": {"$setElementOrder/containers": [{"name": "web"}], "containers": [{"image": "nginx:1.28", "name": "web"}]}
    });
    let patched = crate::patch::strategic_merge_patch(&live, &patch, "Pod").unwrap();
    let new: Pod = serde_json::from_value(patched).unwrap();
    assert_eq!(
        new.spec.as_ref().unwrap().containers[0].image.as_deref(),
        Some("nginx:1.28")
    );
    assert_eq!(update_errors(&new, &old), Vec::<String>::new());

    let port_patch =
        json!({"spec": {"containers": [{"name": "web", "ports": [{"containerPort": 8080}]}]}});
    let patched = crate::patch::strategic_merge_patch(&live, &port_patch, "Pod").unwrap();
    let mut new: Pod = serde_json::from_value(patched).unwrap();
    // The API server defaults every decoded object, patched ones included.
    default_pod(&mut new);
    assert_eq!(update_errors(&new, &old), vec![FORBIDDEN_UPDATE]);
}
