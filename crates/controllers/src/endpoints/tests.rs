use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::desired::{Desired, desired, endpoint_change, resolve_port};
use super::plan::{
    HEADLESS_LABEL, MAX_ENDPOINTS, OVER_CAPACITY, endpoints_write, slice_labels, slices_plan,
};
use super::retry_delay;

fn svc(extra: Value) -> Service {
    let mut v = json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "svc-uid", "labels": {"tier": "front"}},
        "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10",
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// A running pod labelled app=web on node n1 with IP `ip` (None: no IP yet).
fn pod(name: &str, ip: Option<&str>, ready: bool, extra: Value) -> Pod {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i",
                 "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}]}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
    });
    if let Some(ip) = ip {
        v["status"]["podIP"] = json!(ip);
        v["status"]["podIPs"] = json!([{"ip": ip}]);
    }
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn terminating() -> Value {
    json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 30}})
}

fn compute(s: &Service, pods: &[Pod]) -> Desired {
    let refs: Vec<&Pod> = pods.iter().collect();
    desired(s, &refs)
}

/// The Endpoints subsets as JSON, for compact assertions.
fn subsets(d: &Desired) -> Value {
    serde_json::to_value(&d.subsets).unwrap()
}

fn ips(v: &Value, field: &str) -> Vec<String> {
    v[field]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["ip"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// (ip, ready, serving, terminating) of every slice endpoint, group by group.
fn slice_conditions(d: &Desired) -> Vec<Vec<(String, bool, bool, bool)>> {
    d.slices
        .iter()
        .map(|g| {
            g.endpoints
                .iter()
                .map(|e| {
                    let c = e.conditions.clone().unwrap();
                    (
                        e.addresses[0].clone(),
                        c.ready.unwrap(),
                        c.serving.unwrap(),
                        c.terminating.unwrap(),
                    )
                })
                .collect()
        })
        .collect()
}

#[test]
fn ready_pods_are_addresses_and_others_not_ready_addresses() {
    let d = compute(
        &svc(json!({})),
        &[
            pod("a", Some("10.0.0.2"), true, json!({})),
            pod("b", Some("10.0.0.3"), false, json!({})),
        ],
    );
    let v = subsets(&d);
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(ips(&v[0], "addresses"), ["10.0.0.2"]);
    assert_eq!(ips(&v[0], "notReadyAddresses"), ["10.0.0.3"]);
    assert_eq!(
        v[0]["addresses"][0],
        json!({"ip": "10.0.0.2", "nodeName": "n1",
               "targetRef": {"kind": "Pod", "namespace": "default", "name": "a", "uid": "uid-a"}})
    );
    assert_eq!(
        v[0]["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        slice_conditions(&d),
        [vec![
            ("10.0.0.2".into(), true, true, false),
            ("10.0.0.3".into(), false, false, false)
        ]]
    );
    let g = &d.slices[0];
    assert_eq!(
        serde_json::to_value(&g.ports).unwrap(),
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );
    let e = serde_json::to_value(&g.endpoints[0]).unwrap();
    assert_eq!(
        e,
        json!({"addresses": ["10.0.0.2"], "conditions": {"ready": true, "serving": true, "terminating": false},
               "nodeName": "n1", "targetRef": {"kind": "Pod", "namespace": "default", "name": "a", "uid": "uid-a"}})
    );
}

#[test]
fn terminating_pods_leave_the_endpoints_but_stay_in_slices_to_drain() {
    let d = compute(
        &svc(json!({})),
        &[
            pod("a", Some("10.0.0.2"), true, terminating()),
            pod("b", Some("10.0.0.3"), false, terminating()),
            pod("c", Some("10.0.0.4"), true, json!({})),
        ],
    );
    let v = subsets(&d);
    assert_eq!(ips(&v[0], "addresses"), ["10.0.0.4"]);
    assert!(v[0].get("notReadyAddresses").is_none());
    assert_eq!(
        slice_conditions(&d),
        [vec![
            ("10.0.0.2".into(), false, true, true),
            ("10.0.0.3".into(), false, false, true),
            ("10.0.0.4".into(), true, true, false),
        ]]
    );
    // Only terminating pods: no subsets at all.
    let d = compute(
        &svc(json!({})),
        &[pod("a", Some("10.0.0.2"), true, terminating())],
    );
    assert!(d.subsets.is_empty());
    assert_eq!(d.slices[0].endpoints.len(), 1);
}

#[test]
fn pods_without_ip_or_node_or_that_finished_are_left_out() {
    let pods = [
        pod("no-ip", None, false, json!({})),
        pod(
            "no-node",
            Some("10.0.0.5"),
            true,
            json!({"spec": {"nodeName": null}}),
        ),
        pod(
            "done",
            Some("10.0.0.6"),
            false,
            json!({"status": {"phase": "Succeeded"}}),
        ),
        pod(
            "failed",
            Some("10.0.0.7"),
            false,
            json!({"status": {"phase": "Failed"}}),
        ),
        pod("v6", Some("fd00::1"), true, json!({})),
        pod("ok", Some("10.0.0.8"), true, json!({})),
    ];
    let d = compute(&svc(json!({})), &pods);
    assert_eq!(ips(&subsets(&d)[0], "addresses"), ["10.0.0.8"]);
    assert_eq!(d.slices.len(), 1);
    assert_eq!(d.slices[0].endpoints.len(), 1);
    // Only podIP (no podIPs list) is enough.
    let mut p = pod("old-style", Some("10.0.0.9"), true, json!({}));
    p.status.as_mut().unwrap().pod_ips = None;
    let d = compute(&svc(json!({})), &[p]);
    assert_eq!(ips(&subsets(&d)[0], "addresses"), ["10.0.0.9"]);
}

#[test]
fn selector_namespace_and_service_kind_decide_which_pods_count() {
    let pods = [
        pod(
            "mine",
            Some("10.0.0.2"),
            true,
            json!({"metadata": {"labels": {"app": "web", "extra": "x"}}}),
        ),
        pod(
            "other-app",
            Some("10.0.0.3"),
            true,
            json!({"metadata": {"labels": {"app": "db"}}}),
        ),
        pod(
            "unlabelled",
            Some("10.0.0.4"),
            true,
            json!({"metadata": {"labels": null}}),
        ),
        pod(
            "elsewhere",
            Some("10.0.0.5"),
            true,
            json!({"metadata": {"namespace": "other"}}),
        ),
    ];
    let d = compute(&svc(json!({})), &pods);
    assert_eq!(ips(&subsets(&d)[0], "addresses"), ["10.0.0.2"]);
    // A two-label selector needs both.
    let two = svc(json!({"spec": {"selector": {"app": "web", "extra": "y"}}}));
    assert_eq!(compute(&two, &pods), Desired::default());
    // No selector, an empty one, or ExternalName: not this controller's business.
    let mut empty = svc(json!({}));
    empty.spec.as_mut().unwrap().selector = Some(Default::default());
    for s in [
        svc(json!({"spec": {"selector": null}})),
        empty,
        svc(json!({"spec": {"type": "ExternalName", "externalName": "example.com"}})),
    ] {
        assert!(super::desired::managed_selector(&s).is_none());
        assert_eq!(compute(&s, &pods), Desired::default());
    }
}

#[test]
fn named_target_ports_resolve_per_pod_and_group_subsets() {
    let s = svc(json!({"spec": {"ports": [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
        {"name": "metrics", "port": 9000, "targetPort": "metrics", "protocol": "TCP"},
    ]}}));
    // b names its http port differently (8081) and has no metrics port.
    let b = pod(
        "b",
        Some("10.0.0.3"),
        true,
        json!({"spec": {"containers": [{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 8081}]}]}}),
    );
    let d = compute(
        &s,
        &[pod("a", Some("10.0.0.2"), true, json!({})), b.clone()],
    );
    let v = subsets(&d);
    // Ports offered by the same addresses (same readiness) share a subset: a's http and
    // metrics ports, and b's http port on its own.
    assert_eq!(v.as_array().unwrap().len(), 2, "{v:#}");
    let by_ports: Vec<(Value, Vec<String>)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["ports"].clone(), ips(s, "addresses")))
        .collect();
    assert_eq!(
        by_ports,
        [
            (
                json!([{"name": "http", "port": 8080, "protocol": "TCP"},
                       {"name": "metrics", "port": 9090, "protocol": "TCP"}]),
                vec!["10.0.0.2".to_string()]
            ),
            (
                json!([{"name": "http", "port": 8081, "protocol": "TCP"}]),
                vec!["10.0.0.3".to_string()]
            ),
        ]
    );
    // A not-ready pod offering 8080 and 9090 too: those two ports still share a subset.
    let c = pod("c", Some("10.0.0.4"), false, json!({}));
    let v3 = subsets(&compute(
        &s,
        &[pod("a", Some("10.0.0.2"), true, json!({})), b.clone(), c],
    ));
    assert_eq!(v3.as_array().unwrap().len(), 2);
    assert_eq!(ips(&v3[0], "notReadyAddresses"), ["10.0.0.4"]);
    // A pod with only the metrics port splits them: http:8080 {a}, metrics:9090 {a, m}.
    let m = pod(
        "m",
        Some("10.0.0.5"),
        true,
        json!({"spec": {"containers": [{"name": "c", "image": "i", "ports": [{"name": "metrics", "containerPort": 9090}]}]}}),
    );
    let v4 = subsets(&compute(
        &s,
        &[pod("a", Some("10.0.0.2"), true, json!({})), m],
    ));
    assert_eq!(v4.as_array().unwrap().len(), 2, "{v4:#}");
    assert_eq!(v4[0]["ports"][0]["name"], "http");
    assert_eq!(ips(&v4[0], "addresses"), ["10.0.0.2"]);
    assert_eq!(ips(&v4[1], "addresses"), ["10.0.0.2", "10.0.0.5"]);
    // Slices group pods by the whole set of ports they resolve.
    assert_eq!(d.slices.len(), 2);
    let ports: Vec<Value> = d
        .slices
        .iter()
        .map(|g| serde_json::to_value(&g.ports).unwrap())
        .collect();
    assert!(
        ports.contains(&json!([{"name": "http", "port": 8080, "protocol": "TCP"},
                                   {"name": "metrics", "port": 9090, "protocol": "TCP"}]))
    );
    assert!(ports.contains(&json!([{"name": "http", "port": 8081, "protocol": "TCP"}])));
    // A pod resolving none of the ports: out of the Endpoints, in a port-less slice group.
    let bare = pod(
        "c",
        Some("10.0.0.4"),
        true,
        json!({"spec": {"containers": [{"name": "c", "image": "i"}]}}),
    );
    let d = compute(&s, &[bare]);
    assert!(d.subsets.is_empty());
    assert_eq!(d.slices.len(), 1);
    assert!(d.slices[0].ports.is_empty());
}

#[test]
fn two_ports_offered_by_the_same_pods_share_one_subset() {
    let s = svc(json!({"spec": {"ports": [
        {"name": "metrics", "port": 9000, "targetPort": 9090, "protocol": "TCP"},
        {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
        {"name": "dns", "port": 53, "protocol": "UDP"},
    ]}}));
    let d = compute(
        &s,
        &[
            pod("a", Some("10.0.0.2"), true, json!({})),
            pod("b", Some("10.0.0.3"), false, json!({})),
        ],
    );
    let v = subsets(&d);
    assert_eq!(v.as_array().unwrap().len(), 1);
    // Ports sorted by name; an absent targetPort is the port itself.
    assert_eq!(
        v[0]["ports"],
        json!([{"name": "dns", "port": 53, "protocol": "UDP"},
               {"name": "http", "port": 8080, "protocol": "TCP"},
               {"name": "metrics", "port": 9090, "protocol": "TCP"}])
    );
    assert_eq!(ips(&v[0], "notReadyAddresses"), ["10.0.0.3"]);
    // A named port must match the protocol too.
    let udp = svc(
        json!({"spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "UDP"}]}}),
    );
    let p = pod("a", Some("10.0.0.2"), true, json!({}));
    assert_eq!(resolve_port(&p, &udp.spec.unwrap().ports.unwrap()[0]), None);
}

#[test]
fn sidecar_ports_count_but_other_init_container_ports_do_not() {
    let s = svc(
        json!({"spec": {"ports": [{"name": "p", "port": 80, "targetPort": "proxy", "protocol": "TCP"}]}}),
    );
    let port = &s.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
    let with = |policy: Value| {
        pod(
            "a",
            Some("10.0.0.2"),
            true,
            json!({"spec": {"initContainers": [{"name": "side", "image": "i",
            "restartPolicy": policy, "ports": [{"name": "proxy", "containerPort": 15001}]}]}}),
        )
    };
    assert_eq!(resolve_port(&with(json!("Always")), port), Some(15001));
    assert_eq!(resolve_port(&with(Value::Null), port), None);
}

#[test]
fn publish_not_ready_addresses_lists_everyone_as_ready() {
    let s = svc(json!({"spec": {"publishNotReadyAddresses": true}}));
    let d = compute(
        &s,
        &[
            pod("a", Some("10.0.0.2"), false, json!({})),
            pod("b", Some("10.0.0.3"), true, terminating()),
        ],
    );
    let v = subsets(&d);
    assert_eq!(ips(&v[0], "addresses"), ["10.0.0.2", "10.0.0.3"]);
    assert!(v[0].get("notReadyAddresses").is_none());
    assert_eq!(
        slice_conditions(&d),
        [vec![
            ("10.0.0.2".into(), true, false, false),
            ("10.0.0.3".into(), true, true, true)
        ]]
    );
}

#[test]
fn headless_services_list_pods_even_without_ports() {
    let headless = svc(json!({"spec": {"clusterIP": "None", "ports": null}}));
    let pods = [
        pod(
            "a",
            Some("10.0.0.2"),
            true,
            json!({"spec": {"hostname": "a", "subdomain": "web"}}),
        ),
        pod(
            "b",
            Some("10.0.0.3"),
            false,
            json!({"spec": {"hostname": "b", "subdomain": "other"}}),
        ),
    ];
    let d = compute(&headless, &pods);
    let v = subsets(&d);
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert!(v[0].get("ports").is_none());
    assert_eq!(ips(&v[0], "addresses"), ["10.0.0.2"]);
    assert_eq!(ips(&v[0], "notReadyAddresses"), ["10.0.0.3"]);
    // The hostname is published when the pod's subdomain names the service.
    assert_eq!(v[0]["addresses"][0]["hostname"], "a");
    assert!(v[0]["notReadyAddresses"][0].get("hostname").is_none());
    assert_eq!(d.slices[0].endpoints[0].hostname.as_deref(), Some("a"));
    assert!(d.slices[0].ports.is_empty());
    // Headless with ports behaves like any service.
    let with_ports = svc(json!({"spec": {"clusterIP": "None"}}));
    assert_eq!(
        subsets(&compute(&with_ports, &pods))[0]["ports"][0]["port"],
        8080
    );
    // A service with a cluster IP and no ports: no subsets, but slices still list the pods.
    let portless = svc(json!({"spec": {"ports": null}}));
    let d = compute(&portless, &pods);
    assert!(d.subsets.is_empty());
    assert_eq!(d.slices[0].endpoints.len(), 2);
    // Labels: the headless marker on both kinds of objects.
    let ep = endpoints_write(&headless, &[], None).unwrap();
    assert_eq!(
        ep.metadata
            .labels
            .unwrap()
            .get(HEADLESS_LABEL)
            .map(String::as_str),
        Some("")
    );
    assert!(slice_labels(&headless).contains_key(HEADLESS_LABEL));
    assert!(!slice_labels(&svc(json!({}))).contains_key(HEADLESS_LABEL));
}

#[test]
fn the_result_does_not_depend_on_pod_order() {
    let s = svc(json!({"spec": {"ports": [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
        {"name": "metrics", "port": 9000, "targetPort": "metrics", "protocol": "TCP"},
    ]}}));
    let mut pods: Vec<Pod> = (0..40)
        .map(|i| {
            let extra = if i % 3 == 0 {
                json!({"spec": {"containers": [{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 8081}]}]}})
            } else {
                json!({})
            };
            pod(&format!("p{i}"), Some(&format!("10.0.{}.{}", i % 4, i)), i % 2 == 0, extra)
        })
        .collect();
    let first = serde_json::to_string(&compute(&s, &pods).subsets).unwrap();
    let first_slices = format!("{:?}", compute(&s, &pods).slices);
    for round in 0..5 {
        pods.rotate_left(7);
        if round % 2 == 0 {
            pods.reverse();
        }
        let d = compute(&s, &pods);
        assert_eq!(serde_json::to_string(&d.subsets).unwrap(), first);
        assert_eq!(format!("{:?}", d.slices), first_slices);
    }
}

/// The object as the API would return it: through JSON, with a resourceVersion.
fn stored<T: k8s_openapi::serde::Serialize + k8s_openapi::serde::de::DeserializeOwned>(
    obj: &T,
    rv: &str,
) -> T {
    let mut v = serde_json::to_value(obj).unwrap();
    v["metadata"]["resourceVersion"] = json!(rv);
    serde_json::from_value(v).unwrap()
}

#[test]
fn endpoints_are_written_only_when_they_change() {
    let s = svc(json!({}));
    let mut pods = vec![pod("a", Some("10.0.0.2"), true, json!({}))];
    let d = compute(&s, &pods);
    let created = endpoints_write(&s, &d.subsets, None).unwrap();
    assert_eq!(created.metadata.name.as_deref(), Some("web"));
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(
        serde_json::to_value(&created.metadata.labels).unwrap(),
        json!({"tier": "front"})
    );
    assert!(created.metadata.annotations.is_none());
    let current: Endpoints = stored(&created, "7");
    assert!(endpoints_write(&s, &d.subsets, Some(&current)).is_none());
    // A targetRef resourceVersion (which a user might add) is no difference.
    let mut with_rv = current.clone();
    with_rv.subsets.as_mut().unwrap()[0]
        .addresses
        .as_mut()
        .unwrap()[0]
        .target_ref
        .as_mut()
        .unwrap()
        .resource_version = Some("3".into());
    assert!(endpoints_write(&s, &d.subsets, Some(&with_rv)).is_none());
    // The readiness flip: an update of the same object, resourceVersion kept.
    pods[0] = pod("a", Some("10.0.0.2"), false, json!({}));
    let d2 = compute(&s, &pods);
    let updated = endpoints_write(&s, &d2.subsets, Some(&current)).unwrap();
    assert_eq!(updated.metadata.resource_version.as_deref(), Some("7"));
    let v = serde_json::to_value(&updated.subsets).unwrap();
    assert_eq!(ips(&v[0], "notReadyAddresses"), ["10.0.0.2"]);
    // A label change on the service is copied over; other annotations stay.
    let mut annotated = current.clone();
    annotated.metadata.annotations = Some([("note".to_string(), "x".to_string())].into());
    let relabelled = svc(json!({"metadata": {"labels": {"tier": "back"}}}));
    let u = endpoints_write(&relabelled, &d.subsets, Some(&annotated)).unwrap();
    assert_eq!(u.metadata.labels.unwrap()["tier"], "back");
    assert_eq!(u.metadata.annotations.unwrap()["note"], "x");
    // No pods at all: no subsets field.
    let empty = endpoints_write(&s, &[], Some(&current)).unwrap();
    assert!(empty.subsets.is_none());
    assert!(endpoints_write(&s, &[], Some(&stored(&empty, "8"))).is_none());
}

#[test]
fn endpoints_over_capacity_are_truncated_ready_first() {
    let s = svc(json!({}));
    let pods: Vec<Pod> = (0..1100)
        .map(|i| {
            pod(
                &format!("p{i}"),
                Some(&format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)),
                i >= 200,
                json!({}),
            )
        })
        .collect();
    let d = compute(&s, &pods);
    let e = endpoints_write(&s, &d.subsets, None).unwrap();
    assert_eq!(
        e.metadata.annotations.as_ref().unwrap()[OVER_CAPACITY],
        "truncated"
    );
    let sub = &e.subsets.as_ref().unwrap()[0];
    assert_eq!(sub.addresses.as_ref().unwrap().len(), 900);
    assert_eq!(
        sub.not_ready_addresses.as_ref().unwrap().len(),
        MAX_ENDPOINTS - 900
    );
    let current = stored(&e, "5");
    assert!(endpoints_write(&s, &d.subsets, Some(&current)).is_none());
    // Back under the limit: the annotation goes.
    let d = compute(&s, &pods[..10]);
    let e = endpoints_write(&s, &d.subsets, Some(&current)).unwrap();
    assert!(e.metadata.annotations.is_none());
}

fn existing(slice: &EndpointSlice, name: &str, rv: &str) -> Arc<EndpointSlice> {
    let mut s: EndpointSlice = stored(slice, rv);
    s.metadata.name = Some(name.into());
    Arc::new(s)
}

#[test]
fn a_service_without_endpoints_gets_one_placeholder_slice() {
    let s = svc(json!({}));
    let d = compute(&s, &[]);
    let plan = slices_plan(&s, &d.slices, &[], 100);
    assert_eq!(plan.create.len(), 1);
    let slice = &plan.create[0];
    assert_eq!(slice.metadata.generate_name.as_deref(), Some("web-"));
    assert!(slice.endpoints.is_empty());
    assert_eq!(slice.address_type, "IPv4");
    assert_eq!(
        serde_json::to_value(&slice.metadata.labels).unwrap(),
        json!({"tier": "front", "kubernetes.io/service-name": "web",
               "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"})
    );
    assert_eq!(
        serde_json::to_value(&slice.metadata.owner_references).unwrap(),
        json!([{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "svc-uid",
                "controller": true, "blockOwnerDeletion": true}])
    );
    let have = [existing(slice, "web-abcde", "3")];
    assert!(slices_plan(&s, &d.slices, &have, 100).is_empty());
    // The first pod arrives: the placeholder is filled in place.
    let d = compute(&s, &[pod("a", Some("10.0.0.2"), true, json!({}))]);
    let plan = slices_plan(&s, &d.slices, &have, 100);
    assert!(plan.create.is_empty() && plan.delete.is_empty());
    assert_eq!(plan.update.len(), 1);
    assert_eq!(plan.update[0].metadata.name.as_deref(), Some("web-abcde"));
    assert_eq!(
        plan.update[0].metadata.resource_version.as_deref(),
        Some("3")
    );
    assert_eq!(plan.update[0].endpoints.len(), 1);
}

#[test]
fn unchanged_slices_are_not_rewritten_and_changes_update_in_place() {
    let s = svc(json!({}));
    let mut pods = vec![
        pod("a", Some("10.0.0.2"), true, json!({})),
        pod("b", Some("10.0.0.3"), true, json!({})),
    ];
    let d = compute(&s, &pods);
    let plan = slices_plan(&s, &d.slices, &[], 100);
    let have = [existing(&plan.create[0], "web-x1", "10")];
    assert!(slices_plan(&s, &d.slices, &have, 100).is_empty());
    pods[1] = pod("b", Some("10.0.0.3"), true, terminating());
    let d = compute(&s, &pods);
    let plan = slices_plan(&s, &d.slices, &have, 100);
    assert_eq!(plan.update.len(), 1);
    let c = plan.update[0].endpoints[1].conditions.clone().unwrap();
    assert_eq!(
        (c.ready, c.serving, c.terminating),
        (Some(false), Some(true), Some(true))
    );
}

#[test]
fn slices_split_beyond_the_maximum_and_merge_back() {
    let s = svc(json!({}));
    let pods: Vec<Pod> = (0..250)
        .map(|i| {
            pod(
                &format!("p{i:03}"),
                Some(&format!("10.0.{}.{}", i / 200, i % 200)),
                true,
                json!({}),
            )
        })
        .collect();
    let d = compute(&s, &pods);
    let plan = slices_plan(&s, &d.slices, &[], 100);
    let sizes: Vec<usize> = plan.create.iter().map(|s| s.endpoints.len()).collect();
    assert_eq!(sizes, [100, 100, 50]);
    let have: Vec<Arc<EndpointSlice>> = plan
        .create
        .iter()
        .enumerate()
        .map(|(i, s)| existing(s, &format!("web-{i}"), "4"))
        .collect();
    assert!(slices_plan(&s, &d.slices, &have, 100).is_empty());
    // Down to 30 pods: one slice updated, the other two deleted.
    let d = compute(&s, &pods[..30]);
    let plan = slices_plan(&s, &d.slices, &have, 100);
    assert_eq!(plan.update.len(), 1);
    assert_eq!(plan.update[0].endpoints.len(), 30);
    assert!(plan.create.is_empty());
    let mut gone: Vec<_> = plan
        .delete
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    gone.sort();
    assert_eq!(gone.len(), 2);
    assert!(!gone.contains(plan.update[0].metadata.name.as_ref().unwrap()));
}

#[test]
fn foreign_and_stale_slices_are_deleted() {
    let s = svc(json!({}));
    let d = compute(&s, &[pod("a", Some("10.0.0.2"), true, json!({}))]);
    let good = slices_plan(&s, &d.slices, &[], 100).create.remove(0);
    // Owned by an earlier service of the same name.
    let mut old_owner = good.clone();
    old_owner.metadata.owner_references.as_mut().unwrap()[0].uid = "old-uid".into();
    // Ports the service no longer has.
    let mut old_ports = good.clone();
    old_ports.ports.as_mut().unwrap()[0].port = Some(7000);
    let have = [
        existing(&good, "web-good", "1"),
        existing(&old_owner, "web-old", "1"),
        existing(&old_ports, "web-ports", "1"),
    ];
    let plan = slices_plan(&s, &d.slices, &have, 100);
    assert!(plan.create.is_empty() && plan.update.is_empty());
    let mut gone: Vec<_> = plan
        .delete
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    gone.sort();
    assert_eq!(gone, ["web-old", "web-ports"]);
    // A changed service label reaches the slice.
    let relabelled = svc(json!({"metadata": {"labels": {"tier": "back"}}}));
    let plan = slices_plan(&relabelled, &d.slices, &have[..1], 100);
    assert_eq!(plan.update.len(), 1);
    assert_eq!(
        plan.update[0].metadata.labels.as_ref().unwrap()["tier"],
        "back"
    );
}

#[test]
fn only_endpoint_relevant_pod_changes_count() {
    let a = pod("a", Some("10.0.0.2"), true, json!({}));
    let mut restarted = a.clone();
    restarted.status.as_mut().unwrap().container_statuses = Some(vec![Default::default()]);
    assert!(!endpoint_change(&a, &restarted));
    let mut annotated = a.clone();
    annotated.metadata.annotations = Some([("x".to_string(), "y".to_string())].into());
    assert!(!endpoint_change(&a, &annotated));
    assert!(endpoint_change(
        &a,
        &pod("a", Some("10.0.0.2"), false, json!({}))
    ));
    assert!(endpoint_change(
        &a,
        &pod("a", Some("10.0.0.3"), true, json!({}))
    ));
    assert!(endpoint_change(
        &a,
        &pod("a", Some("10.0.0.2"), true, terminating())
    ));
    assert!(endpoint_change(
        &a,
        &pod(
            "a",
            Some("10.0.0.2"),
            true,
            json!({"metadata": {"labels": {"app": "x"}}})
        )
    ));
    assert!(endpoint_change(
        &a,
        &pod(
            "a",
            Some("10.0.0.2"),
            true,
            json!({"status": {"phase": "Failed"}})
        )
    ));
}

#[test]
fn retries_back_off_from_5ms_to_10s() {
    assert_eq!(retry_delay(1).as_millis(), 5);
    assert_eq!(retry_delay(2).as_millis(), 10);
    assert_eq!(retry_delay(5).as_millis(), 80);
    assert_eq!(retry_delay(40).as_millis(), 10_000);
}

#[test]
fn a_port_change_rewrites_the_slice_in_place() {
    let s = svc(json!({}));
    let pods = [pod("a", Some("10.0.0.2"), true, json!({}))];
    let d = compute(&s, &pods);
    let have = [existing(
        &slices_plan(&s, &d.slices, &[], 100).create[0],
        "web-a",
        "2",
    )];
    let moved = svc(
        json!({"spec": {"ports": [{"name": "http", "port": 80, "targetPort": 9090, "protocol": "TCP"}]}}),
    );
    let d = compute(&moved, &pods);
    let plan = slices_plan(&moved, &d.slices, &have, 100);
    assert!(plan.create.is_empty() && plan.delete.is_empty());
    assert_eq!(plan.update[0].metadata.name.as_deref(), Some("web-a"));
    assert_eq!(plan.update[0].ports.as_ref().unwrap()[0].port, Some(9090));
}
