//! Strategic merge patch tests; expected results follow apimachinery's `StrategicMergePatch`.

use crate::patch::{PatchError, strategic_merge_patch};
use serde_json::{Value, json};

fn smp(target: Value, patch: Value, kind: &str) -> Value {
    strategic_merge_patch(&target, &patch, kind).unwrap()
}

fn err(target: Value, patch: Value, kind: &str) -> String {
    match strategic_merge_patch(&target, &patch, kind) {
        Err(PatchError::Invalid(m)) => m,
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

fn assert_no_directives(v: &Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                assert!(!k.starts_with('$'), "directive {k} left in result");
                assert_no_directives(v);
            }
        }
        Value::Array(a) => a.iter().for_each(assert_no_directives),
        _ => {}
    }
}

fn live_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"old\":true}\n"}},
        "spec": {
            "containers": [{
                "name": "web", "image": "nginx:1.27",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "imagePullPolicy": "IfNotPresent",
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File"
            }],
            "restartPolicy": "Always",
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]
        },
        "status": {"phase": "Running"}
    })
}

#[test]
fn kubectl_apply_second_time_changes_only_the_image() {
    let patch = json!({
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"new\":true}\n"}},
        "spec": {"$setElementOrder/containers": [{"name": "web"}], "containers": [{"image": "nginx:1.28", "name": "web"}]}
    });
    let out = smp(live_pod(), patch, "Pod");
    let mut expected = live_pod();
    expected["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    expected["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
        json!("{\"new\":true}\n");
    assert_eq!(out, expected);
    assert_no_directives(&out);
}

#[test]
fn kubectl_cordon() {
    let node = json!({"metadata": {"name": "node-1"}, "spec": {"podCIDR": "10.0.0.0/24"}});
    let out = smp(node, json!({"spec": {"unschedulable": true}}), "Node");
    assert_eq!(
        out,
        json!({"metadata": {"name": "node-1"}, "spec": {"podCIDR": "10.0.0.0/24", "unschedulable": true}})
    );
}

#[test]
fn null_deletes_and_maps_merge() {
    let out = smp(
        json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"nodeSelector": {"x": "y"}}}),
        json!({"metadata": {"labels": {"a": null, "c": "3", "d": null}}, "spec": {"nodeSelector": null}}),
        "Pod",
    );
    assert_eq!(
        out,
        json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {}})
    );
}

#[test]
fn keyed_list_items_merge() {
    let live = json!({"spec": {"containers": [{"name": "web", "image": "a", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}});
    let patch = json!({"spec": {"containers": [{"name": "web", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}]}});
    let out = smp(live, patch, "Pod");
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "web", "image": "a", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}])
    );
}

#[test]
fn new_container_without_order_directive_is_prepended() {
    let live =
        json!({"spec": {"containers": [{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]}});
    let out = smp(
        live,
        json!({"spec": {"containers": [{"name": "c", "image": "c"}]}}),
        "Pod",
    );
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "c", "image": "c"}, {"name": "a", "image": "a"}, {"name": "b", "image": "b"}])
    );
}

#[test]
fn set_element_order_places_new_items_before_later_server_only_items() {
    let live =
        json!({"spec": {"containers": [{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]}});
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "a"}, {"name": "c"}],
        "containers": [{"name": "c", "image": "c"}]
    }});
    let out = smp(live, patch, "Pod");
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "a", "image": "a"}, {"name": "c", "image": "c"}, {"name": "b", "image": "b"}])
    );
}

#[test]
fn set_element_order_reorders() {
    let live = json!({"spec": {"containers": [{"name": "a", "image": "a"}, {"name": "b", "image": "b"}, {"name": "c", "image": "c"}]}});
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
        "containers": [{"name": "a", "image": "a2"}]
    }});
    let out = smp(live, patch, "Pod");
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "b", "image": "b"}, {"name": "c", "image": "c"}, {"name": "a", "image": "a2"}])
    );
    let live = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
    let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}});
    assert_eq!(
        smp(live, patch, "Pod")["spec"]["containers"],
        json!([{"name": "b"}, {"name": "a"}])
    );
}

#[test]
fn set_element_order_must_match_the_patch_list() {
    let live = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
        "containers": [{"name": "b", "image": "x"}, {"name": "a", "image": "y"}]
    }});
    assert!(err(live, patch, "Pod").starts_with("The order in patch list:"));
}

#[test]
fn delete_and_replace_directives_in_lists() {
    let live = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}});
    let out = smp(
        live.clone(),
        json!({"spec": {"containers": [{"name": "b", "$patch": "delete"}]}}),
        "Pod",
    );
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "a"}, {"name": "c"}])
    );
    let out = smp(
        live,
        json!({"spec": {"containers": [{"name": "x", "image": "i"}, {"$patch": "replace"}]}}),
        "Pod",
    );
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "x", "image": "i"}])
    );
}

#[test]
fn kubectl_apply_removing_a_container() {
    let live = json!({"spec": {"containers": [{"name": "web", "image": "a", "ports": [{"containerPort": 80}]}, {"name": "side", "image": "b"}]}});
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "web"}],
        "containers": [{"$patch": "delete", "name": "side"}]
    }});
    let out = smp(live, patch, "Pod");
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "web", "image": "a", "ports": [{"containerPort": 80}]}])
    );
}

#[test]
fn delete_and_replace_directives_in_maps() {
    let live = json!({"spec": {"securityContext": {"fsGroup": 2, "runAsUser": 5}}});
    let out = smp(
        live.clone(),
        json!({"spec": {"securityContext": {"$patch": "replace", "runAsUser": 1}}}),
        "Pod",
    );
    assert_eq!(out["spec"]["securityContext"], json!({"runAsUser": 1}));
    let out = smp(
        live.clone(),
        json!({"spec": {"securityContext": {"$patch": "delete"}}}),
        "Pod",
    );
    assert_eq!(out["spec"]["securityContext"], json!({}));
    let out = smp(live, json!({"$patch": "replace", "kind": "Pod"}), "Pod");
    assert_eq!(out, json!({"kind": "Pod"}));
    assert!(
        err(json!({}), json!({"spec": {"$patch": "merge"}}), "Pod")
            .starts_with("unknown patch type: \"merge\"")
    );
}

#[test]
fn retain_keys_switches_a_volume_source() {
    let live = json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}, {"name": "w", "emptyDir": {}}]}});
    let patch = json!({"spec": {"volumes": [{"name": "v", "hostPath": {"path": "/x"}, "$retainKeys": ["hostPath", "name"]}]}});
    let out = smp(live, patch, "Pod");
    assert_eq!(
        out["spec"]["volumes"],
        json!([{"name": "v", "hostPath": {"path": "/x"}}, {"name": "w", "emptyDir": {}}])
    );
    let bad = json!({"spec": {"volumes": [{"name": "v", "secret": {}, "$retainKeys": ["name"]}]}});
    let live = json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}});
    assert_eq!(err(live, bad, "Pod"), "invalid patch format of retainKeys");
}

#[test]
fn primitive_merge_lists() {
    let live = json!({"metadata": {"finalizers": ["a", "b"]}});
    let out = smp(
        live.clone(),
        json!({"metadata": {"finalizers": ["c", "a"]}}),
        "Pod",
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));
    let out = smp(
        live.clone(),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
        "Pod",
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["a"]));
    let patch = json!({"metadata": {
        "$setElementOrder/finalizers": ["a", "c"],
        "$deleteFromPrimitiveList/finalizers": ["b"],
        "finalizers": ["c"]
    }});
    let out = smp(live, patch, "Pod");
    assert_eq!(out["metadata"]["finalizers"], json!(["a", "c"]));
    assert_no_directives(&out);
}

#[test]
fn lists_without_strategy_are_replaced() {
    let live = live_pod();
    let patch = json!({"spec": {"tolerations": [{"key": "x", "operator": "Exists"}], "containers": [{"name": "web", "args": ["b"]}]}});
    let out = smp(live, patch, "Pod");
    assert_eq!(
        out["spec"]["tolerations"],
        json!([{"key": "x", "operator": "Exists"}])
    );
    assert_eq!(out["spec"]["containers"][0]["args"], json!(["b"]));
    assert_eq!(
        out["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}])
    );
    let taints = json!({"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}});
    let out = smp(
        taints,
        json!({"spec": {"taints": [{"key": "b", "effect": "NoSchedule"}]}}),
        "Node",
    );
    assert_eq!(
        out["spec"]["taints"],
        json!([{"key": "b", "effect": "NoSchedule"}])
    );
}

#[test]
fn unknown_kinds_replace_lists() {
    let live = json!({"spec": {"items": [{"name": "a"}], "finalizers": ["x"]}, "metadata": {"finalizers": ["x"]}});
    let patch = json!({"spec": {"items": [{"name": "b"}]}, "metadata": {"finalizers": ["y"]}});
    let out = smp(live, patch, "Widget");
    assert_eq!(
        out,
        json!({"spec": {"items": [{"name": "b"}], "finalizers": ["x"]}, "metadata": {"finalizers": ["y"]}})
    );
}

#[test]
fn node_and_status_lists_merge_by_type() {
    let live = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "False"}],
                                 "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
    let patch = json!({"status": {
        "$setElementOrder/conditions": [{"type": "Ready"}, {"type": "MemoryPressure"}],
        "conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady"}]
    }});
    let out = smp(live, patch, "Node");
    assert_eq!(
        out["status"]["conditions"],
        json!([{"type": "Ready", "status": "False", "reason": "KubeletNotReady"}, {"type": "MemoryPressure", "status": "False"}])
    );
    assert_eq!(
        out["status"]["addresses"],
        json!([{"type": "InternalIP", "address": "10.0.0.1"}])
    );
}

#[test]
fn ports_merge_by_container_port_inside_containers() {
    let live = json!({"spec": {"containers": [{"name": "web", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}]}]}});
    let patch = json!({"spec": {"containers": [{"name": "web", "ports": [{"containerPort": 443, "name": "https"}]}]}});
    let out = smp(live, patch, "Pod");
    assert_eq!(
        out["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 80, "name": "http"}, {"containerPort": 443, "name": "https"}])
    );
}

#[test]
fn inserted_values_are_materialized() {
    let live = json!({"spec": {"containers": [{"name": "web"}]}});
    let patch = json!({"spec": {
        "initContainers": [{"name": "i", "env": [{"name": "A"}, {"name": "B", "$patch": "delete"}]}, {"name": "gone", "$patch": "delete"}],
        "securityContext": {"$patch": "replace", "runAsUser": 1, "seLinuxOptions": {"$patch": "delete"}},
        "$setElementOrder/volumes": [{"name": "v"}],
        "volumes": [{"name": "v", "emptyDir": {}, "$retainKeys": ["emptyDir", "name"]}]
    }});
    let out = smp(live, patch, "Pod");
    assert_eq!(
        out["spec"],
        json!({
            "containers": [{"name": "web"}],
            "initContainers": [{"name": "i", "env": [{"name": "A"}]}],
            "securityContext": {"runAsUser": 1, "seLinuxOptions": {}},
            "volumes": [{"name": "v", "emptyDir": {}}]
        })
    );
    assert_no_directives(&out);
}

#[test]
fn type_changes_take_the_patch_value() {
    let out = smp(
        json!({"a": {"b": 1}, "c": [1]}),
        json!({"a": "x", "c": {"d": 1}}),
        "Pod",
    );
    assert_eq!(out, json!({"a": "x", "c": {"d": 1}}));
}

#[test]
fn malformed_patches() {
    let live = json!({"spec": {"containers": [{"name": "a"}]}});
    assert_eq!(
        err(
            live.clone(),
            json!({"spec": {"containers": [{"image": "x"}]}}),
            "Pod"
        ),
        "map: {\"image\":\"x\"} does not contain declared merge key: name"
    );
    assert_eq!(
        err(
            live.clone(),
            json!({"spec": {"containers": [{"name": "a", "$patch": "explode"}]}}),
            "Pod"
        ),
        "unknown patch type: \"explode\" in map: {\"$patch\":\"explode\",\"name\":\"a\"}"
    );
    assert_eq!(
        err(
            live.clone(),
            json!({"spec": {"$setElementOrder/containers": "x"}}),
            "Pod"
        ),
        "invalid patch format of setElementOrder list"
    );
    assert_eq!(
        err(
            live.clone(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "x"}}),
            "Pod"
        ),
        "invalid patch format of primitive list"
    );
    assert_eq!(
        err(
            json!({"metadata": {"finalizers": [["a"]]}}),
            json!({"metadata": {"finalizers": ["b"]}}),
            "Pod"
        ),
        "lists of lists are not supported"
    );
    assert!(
        err(live, json!({"spec": {"containers": ["a"]}}), "Pod")
            .starts_with("list element types are not identical")
    );
}
