//! The pod surface the control plane gives every namespace and pod, through the real `skiff up`
//! (no agent) and the real kubectl and kube crate: the `default` ServiceAccount and the
//! `kube-root-ca.crt` ConfigMap in every namespace, pod defaults (service account, QoS class),
//! NoExecute taint eviction, and deletecollection with selectors.

mod common;

use std::time::{Duration, Instant};

use common::{Skiff, eventually, node_object};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::{Value, json};

fn get_json(s: &Skiff, args: &[&str]) -> Option<Value> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    let out = s.kubectl(&a);
    (out.code == 0).then(|| serde_json::from_str(&out.stdout).expect("json"))
}

fn jsonpath(s: &Skiff, args: &[&str], path: &str) -> String {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    let p = format!("jsonpath={path}");
    a.extend_from_slice(&["-o", &p]);
    s.kubectl(&a).ok().stdout
}

#[test]
fn every_namespace_gets_the_default_service_account_and_the_root_ca() {
    let s = Skiff::start();
    let ca = std::fs::read_to_string(s.data_dir().join("pki/ca.crt")).expect("ca.crt");
    s.kubectl(&["create", "namespace", "team"]).ok();
    for ns in ["team", "default", "kube-system"] {
        eventually(10, || {
            get_json(&s, &["serviceaccount", "default", "-n", ns])
        });
        let cm = eventually(10, || {
            get_json(&s, &["configmap", "kube-root-ca.crt", "-n", ns])
        });
        assert_eq!(cm["data"], json!({"ca.crt": ca}), "{ns}");
    }
    // Deleted: made again.
    s.kubectl(&["delete", "serviceaccount", "default", "-n", "team"])
        .ok();
    s.kubectl(&["delete", "configmap", "kube-root-ca.crt", "-n", "team"])
        .ok();
    eventually(10, || {
        get_json(&s, &["serviceaccount", "default", "-n", "team"])
    });
    eventually(10, || {
        get_json(&s, &["configmap", "kube-root-ca.crt", "-n", "team"])
    });
    // Edited: put back.
    s.kubectl(&[
        "patch",
        "configmap",
        "kube-root-ca.crt",
        "-n",
        "team",
        "--type=merge",
        "-p",
        r#"{"data": {"ca.crt": "tampered", "extra": "x"}}"#,
    ])
    .ok();
    eventually(10, || {
        let cm = get_json(&s, &["configmap", "kube-root-ca.crt", "-n", "team"])?;
        (cm["data"] == json!({"ca.crt": ca})).then_some(())
    });
    // A terminating namespace gets nothing new.
    s.kubectl(&["create", "namespace", "doomed"]).ok();
    eventually(10, || {
        get_json(&s, &["serviceaccount", "default", "-n", "doomed"])
    });
    s.kubectl(&["delete", "namespace", "doomed", "--wait=false"])
        .ok();
    eventually(20, || {
        let out = s.kubectl(&["get", "namespace", "doomed"]);
        (out.code != 0).then_some(())
    });
}

fn pod_with_resources(name: &str, resources: Value) -> String {
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "initContainers": [{"name": "init", "image": "busybox", "resources": resources}],
            "containers": [{"name": "c", "image": "busybox", "resources": resources}],
        },
    })
    .to_string()
}

#[test]
fn pods_default_their_service_account_and_get_a_qos_class() {
    let s = Skiff::start();
    // Right after the namespace exists, before any controller made its service account.
    s.kubectl(&["create", "namespace", "fresh"]).ok();
    s.kubectl(&["run", "p", "-n", "fresh", "--image=busybox"])
        .ok();
    assert_eq!(
        jsonpath(
            &s,
            &["pod", "p", "-n", "fresh"],
            "{.spec.serviceAccountName} {.spec.serviceAccount} {.status.qosClass}"
        ),
        "default default BestEffort"
    );
    let named = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "named"},
        "spec": {"serviceAccountName": "builder", "containers": [{"name": "c", "image": "busybox"}]}});
    s.apply(&named.to_string()).ok();
    assert_eq!(
        jsonpath(
            &s,
            &["pod", "named"],
            "{.spec.serviceAccountName} {.spec.serviceAccount}"
        ),
        "builder builder"
    );
    let both = json!({"cpu": "100m", "memory": "64Mi"});
    s.apply(&pod_with_resources(
        "guaranteed",
        json!({"limits": both.clone()}),
    ))
    .ok();
    s.apply(&pod_with_resources(
        "burstable",
        json!({"requests": {"cpu": "50m"}, "limits": both}),
    ))
    .ok();
    s.apply(&pod_with_resources("besteffort", json!({}))).ok();
    for (pod, class) in [
        ("guaranteed", "Guaranteed"),
        ("burstable", "Burstable"),
        ("besteffort", "BestEffort"),
    ] {
        assert_eq!(jsonpath(&s, &["pod", pod], "{.status.qosClass}"), class);
    }
    // A status write that drops qosClass (as an agent's whole-status merge patch may) keeps it.
    s.kubectl(&[
        "patch",
        "pod",
        "burstable",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status": {"qosClass": null, "phase": "Running"}}"#,
    ])
    .ok();
    assert_eq!(
        jsonpath(
            &s,
            &["pod", "burstable"],
            "{.status.phase} {.status.qosClass}"
        ),
        "Running Burstable"
    );
    // Changing it is refused.
    let out = s.kubectl(&[
        "patch",
        "pod",
        "burstable",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status": {"qosClass": "Guaranteed"}}"#,
    ]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains(r#"status.qosClass: Invalid value: "Guaranteed": field is immutable"#),
        "{}",
        out.stderr
    );
}

fn bound_pod(name: &str, node: &str, grace: i64, tolerations: Value) -> String {
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "nodeName": node, "terminationGracePeriodSeconds": grace, "tolerations": tolerations,
            "containers": [{"name": "c", "image": "busybox"}],
        },
    })
    .to_string()
}

fn exists(s: &Skiff, pod: &str) -> bool {
    s.kubectl(&["get", "pod", pod]).code == 0
}

#[test]
fn noexecute_taints_evict_pods_that_do_not_tolerate_them() {
    let s = Skiff::start_with(&["--node-monitor-grace-period", "3600"]);
    s.create_node(node_object("n1", "4", "8Gi", json!({})));
    s.create_node(node_object("n2", "4", "8Gi", json!({})));
    let kv = |secs: Option<i64>| {
        let mut t = json!({"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute"});
        if let Some(secs) = secs {
            t["tolerationSeconds"] = json!(secs);
        }
        json!([t])
    };
    s.apply(&bound_pod("plain", "n1", 0, json!([]))).ok();
    s.apply(&bound_pod("graceful", "n1", 30, json!([]))).ok();
    s.apply(&bound_pod("brief", "n1", 0, kv(Some(2)))).ok();
    s.apply(&bound_pod("forever", "n1", 0, kv(None))).ok();
    s.apply(&bound_pod("cancelled", "n2", 0, kv(Some(3)))).ok();
    // The DefaultTolerationSeconds admission.
    assert_eq!(
        jsonpath(
            &s,
            &["pod", "plain"],
            "{range .spec.tolerations[*]}{.key}={.tolerationSeconds} {end}"
        ),
        "node.kubernetes.io/not-ready=300 node.kubernetes.io/unreachable=300 "
    );
    // n2's taint goes again well before the 3 s its pod tolerates it.
    s.kubectl(&["taint", "nodes", "n2", "k=v:NoExecute"]).ok();
    std::thread::sleep(Duration::from_millis(800));
    s.kubectl(&["taint", "nodes", "n2", "k=v:NoExecute-"]).ok();
    let tainted = Instant::now();
    s.kubectl(&["taint", "nodes", "n1", "k=v:NoExecute"]).ok();
    assert!(exists(&s, "brief"), "tolerated for 2 s");
    eventually(5, || (!exists(&s, "plain")).then_some(()));
    let graceful = eventually(5, || {
        let p = get_json(&s, &["pod", "graceful"])?;
        p["metadata"]["deletionTimestamp"].is_string().then_some(p)
    });
    let conditions = graceful["status"]["conditions"].as_array().cloned();
    assert!(
        conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c["type"] == "DisruptionTarget" && c["reason"] == "DeletionByTaintManager"),
        "{graceful}"
    );
    eventually(10, || (!exists(&s, "brief")).then_some(()));
    let took = tainted.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "evicted after {took:?}"
    );
    std::thread::sleep(Duration::from_secs(4));
    assert!(exists(&s, "forever"), "tolerates the taint forever");
    assert!(exists(&s, "cancelled"), "the taint went before its time");
    let events = s
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "reason=TaintManagerEviction",
            "-o",
            "jsonpath={range .items[*]}{.message};{end}",
        ])
        .ok()
        .stdout;
    for pod in ["plain", "graceful", "brief"] {
        assert!(
            events.contains(&format!("Marking for deletion Pod default/{pod};")),
            "{events}"
        );
    }
    assert!(!events.contains("forever"), "{events}");
}

#[test]
fn deletecollection_with_selectors_and_lists_across_namespaces() {
    let s = Skiff::start();
    s.kubectl(&["create", "namespace", "other"]).ok();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = s.client().await;
        let all: Api<Pod> = Api::all(client.clone());
        let list = all.list(&ListParams::default()).await.unwrap();
        let mut watch = all
            .watch(
                &WatchParams::default().timeout(20),
                list.metadata.resource_version.as_deref().unwrap_or("0"),
            )
            .await
            .unwrap()
            .boxed();
        for (ns, name, app) in [
            ("default", "a1", "x"),
            ("default", "a2", "x"),
            ("default", "b1", "y"),
            ("default", "c1", "z"),
            ("default", "keep", "w"),
            ("other", "o1", "x"),
        ] {
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"app": app}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            }))
            .unwrap();
            api.create(&PostParams::default(), &pod).await.unwrap();
        }
        // The all-namespaces watch sees pods of both namespaces.
        let mut seen = Vec::new();
        while seen.len() < 6 {
            match watch.try_next().await.unwrap() {
                Some(WatchEvent::Added(p)) => seen.push(format!(
                    "{}/{}",
                    p.metadata.namespace.unwrap(),
                    p.metadata.name.unwrap()
                )),
                Some(_) => {}
                None => panic!("watch ended after {seen:?}"),
            }
        }
        assert!(seen.contains(&"other/o1".to_string()), "{seen:?}");
        let listed = all.list(&ListParams::default()).await.unwrap();
        assert_eq!(listed.items.len(), 6);
        let default: Api<Pod> = Api::namespaced(client.clone(), "default");
        let gone = default
            .delete_collection(
                &DeleteParams::default().grace_period(0),
                &ListParams::default().labels("app=x"),
            )
            .await
            .unwrap();
        let names: Vec<String> = gone
            .left()
            .map(|list| {
                list.items
                    .into_iter()
                    .filter_map(|p| p.metadata.name)
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(names, ["a1", "a2"]);
    });
    s.kubectl(&[
        "delete",
        "pods",
        "-l",
        "app=y",
        "--grace-period=0",
        "--force",
    ])
    .ok();
    s.kubectl(&[
        "delete",
        "--raw",
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dz",
    ])
    .ok();
    eventually(10, || {
        let names = jsonpath(
            &s,
            &["pods", "-A"],
            "{range .items[*]}{.metadata.namespace}/{.metadata.name} {end}",
        );
        (names == "default/keep other/o1 ").then_some(())
    });
}

#[test]
fn clients_write_pod_status_with_put_and_patch_and_tables_follow() {
    let s = Skiff::bare();
    s.create_node(node_object("n1", "4", "8Gi", json!({})));
    s.apply(&bound_pod("st", "n1", 1, json!([]))).ok();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pods: Api<Pod> = Api::namespaced(s.client().await, "default");
        // PUT pods/status: the whole object, with its resourceVersion.
        let mut pod = pods.get_status("st").await.unwrap();
        pod.status = Some(
            serde_json::from_value(json!({
                "phase": "Running",
                "podIP": "10.1.2.3",
                "podIPs": [{"ip": "10.1.2.3"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "c", "image": "busybox", "imageID": "",
                    "ready": true, "restartCount": 4, "started": true,
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}],
            }))
            .unwrap(),
        );
        let put = pods
            .replace_status("st", &PostParams::default(), &pod)
            .await
            .unwrap();
        assert_eq!(put.status.unwrap().pod_ip.as_deref(), Some("10.1.2.3"));
        // A stale resourceVersion is a conflict.
        match pods
            .replace_status("st", &PostParams::default(), &pod)
            .await
        {
            Err(kube::Error::Api(e)) => assert_eq!(e.code, 409, "{e:?}"),
            other => panic!("expected 409, got {other:?}"),
        }
        // The spec is not writable through pods/status.
        let mut cur = pods.get_status("st").await.unwrap();
        cur.spec.as_mut().unwrap().containers[0].image = Some("other:1".into());
        let after = pods
            .replace_status("st", &PostParams::default(), &cur)
            .await
            .unwrap();
        assert_eq!(
            after.spec.unwrap().containers[0].image.as_deref(),
            Some("busybox")
        );
    });
    let row = |s: &Skiff| {
        common::table(
            &s.kubectl(&["get", "pod", "st", "-o", "wide", "--no-headers"])
                .ok()
                .stdout,
        )
        .remove(0)
    };
    let r = row(&s);
    assert_eq!(&r[1..4], ["1/1", "Running", "4"], "{r:?}");
    assert_eq!(r[5], "10.1.2.3", "{r:?}");
    // PATCH pods/status (kubectl --subresource=status): the table follows.
    s.kubectl(&[
        "patch",
        "pod",
        "st",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"containerStatuses":[{"name":"c","image":"busybox","imageID":"","ready":false,"restartCount":5,"state":{"waiting":{"reason":"CrashLoopBackOff"}}}]}}"#,
    ])
    .ok();
    let r = row(&s);
    assert_eq!(&r[1..4], ["0/1", "CrashLoopBackOff", "5"], "{r:?}");
}
