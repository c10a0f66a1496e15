//! The API through a real client library (kube): list/watch/patch/status semantics, and the
//! errors a client sees for bad requests.

mod common;

use std::time::Duration;

use common::Skiff;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;

fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox:1", "ports": [{"containerPort": 80}]}]},
    }))
    .unwrap()
}

fn api_err(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn list_with_selectors_and_paging() {
    let s = Skiff::bare();
    let pods: Api<Pod> = Api::default_namespaced(s.client().await);
    for i in 0..5 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        pods.create(
            &PostParams::default(),
            &pod(&format!("p{i}"), json!({"tier": tier})),
        )
        .await
        .unwrap();
    }
    let even = pods
        .list(&ListParams::default().labels("tier=even"))
        .await
        .unwrap();
    assert_eq!(even.items.len(), 3);
    let not_even = pods
        .list(&ListParams::default().labels("tier!=even"))
        .await
        .unwrap();
    assert_eq!(not_even.items.len(), 2);
    let set = pods
        .list(&ListParams::default().labels("tier in (odd, none)"))
        .await
        .unwrap();
    assert_eq!(set.items.len(), 2);
    let by_name = pods
        .list(&ListParams::default().fields("metadata.name=p3"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let pending = pods
        .list(&ListParams::default().fields("status.phase=Pending,metadata.name!=p0"))
        .await
        .unwrap();
    assert_eq!(pending.items.len(), 4);
    let bad = pods
        .list(&ListParams::default().fields("spec.nope=x"))
        .await
        .unwrap_err();
    assert_eq!(api_err(bad).0, 400);

    // Paging: 2 at a time, following continue tokens, sees every pod once.
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(2);
    loop {
        let page = pods.list(&lp).await.unwrap();
        names.extend(page.items.iter().map(|p| p.metadata.name.clone().unwrap()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4"]);
}

#[tokio::test]
async fn watch_from_a_resource_version_and_from_zero() {
    let s = Skiff::bare();
    let pods: Api<Pod> = Api::default_namespaced(s.client().await);
    pods.create(&PostParams::default(), &pod("a", json!({"app": "w"})))
        .await
        .unwrap();
    let list = pods.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.clone().unwrap();

    // From the list's revision: only later changes.
    let mut w = pods
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    pods.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
    )
    .await
    .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), w.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Modified(p)) => assert_eq!(p.metadata.labels.unwrap()["x"], "1"),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    pods.delete("a", &DeleteParams::default()).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), w.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Deleted(p)) => assert_eq!(p.metadata.name.unwrap(), "a"),
        other => panic!("expected DELETED, got {other:?}"),
    }

    // From "0": a synthetic ADDED for what exists, then changes.
    pods.create(&PostParams::default(), &pod("b", json!({})))
        .await
        .unwrap();
    let mut w0 = pods
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(Duration::from_secs(5), w0.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Added(p)) => assert_eq!(p.metadata.name.unwrap(), "b"),
        other => panic!("expected ADDED, got {other:?}"),
    }

    // A label selector turns a change that stops matching into DELETED.
    let mut sel = pods
        .watch(&WatchParams::default().labels("app=w2"), "0")
        .await
        .unwrap()
        .boxed();
    pods.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "w2"}}})),
    )
    .await
    .unwrap();
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(5), sel.try_next())
            .await
            .unwrap()
            .unwrap(),
        Some(WatchEvent::Added(_))
    ));
    pods.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(5), sel.try_next())
            .await
            .unwrap()
            .unwrap(),
        Some(WatchEvent::Deleted(_))
    ));
}

#[tokio::test]
async fn watch_from_before_a_restart_is_gone() {
    let mut s = Skiff::bare();
    let pods: Api<Pod> = Api::default_namespaced(s.client().await);
    let created = pods
        .create(&PostParams::default(), &pod("a", json!({})))
        .await
        .unwrap();
    let old_rv = created.metadata.resource_version.unwrap();
    pods.create(&PostParams::default(), &pod("b", json!({})))
        .await
        .unwrap();
    s.stop();
    s.launch();
    let pods: Api<Pod> = Api::default_namespaced(s.client().await);
    let mut w = pods
        .watch(&WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
    {
        Some(Ok(WatchEvent::Error(e))) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        Some(Err(e)) => assert!(
            e.to_string().contains("410") || e.to_string().contains("too old"),
            "{e}"
        ),
        other => panic!("expected a 410 error event, got {other:?}"),
    }
}

#[tokio::test]
async fn patches_of_every_type() {
    let s = Skiff::bare();
    let pods: Api<Pod> = Api::default_namespaced(s.client().await);
    pods.create(&PostParams::default(), &pod("p", json!({"a": "1"})))
        .await
        .unwrap();
    let pp = PatchParams::default();
    // JSON merge patch: null deletes.
    pods.patch(
        "p",
        &pp,
        &Patch::Merge(json!({"metadata": {"labels": {"a": null, "b": "2"}}})),
    )
    .await
    .unwrap();
    // JSON patch.
    let jp: json_patch_types::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/metadata/labels/c", "value": "3"}
    ]))
    .unwrap();
    pods.patch("p", &pp, &Patch::<()>::Json(jp)).await.unwrap();
    // Strategic merge patch: containers merge by name, the image changes and the ports stay.
    let p = pods
        .patch(
            "p",
            &pp,
            &Patch::Strategic(
                json!({"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}),
            ),
        )
        .await
        .unwrap();
    let labels = p.metadata.labels.clone().unwrap();
    assert_eq!(labels.get("a"), None);
    assert_eq!(labels["b"], "2");
    assert_eq!(labels["c"], "3");
    let c = &p.spec.as_ref().unwrap().containers[0];
    assert_eq!(c.image.as_deref(), Some("busybox:2"));
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 80);
    // A change to an immutable field is refused with 422.
    let err = pods
        .patch(
            "p",
            &pp,
            &Patch::Merge(json!({"spec": {"restartPolicy": "Never"}})),
        )
        .await
        .unwrap_err();
    let (code, reason, _) = api_err(err);
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    // Server-side apply creates when absent.
    let ssa = PatchParams::apply("test").force();
    let applied = pods
        .patch("q", &ssa, &Patch::Apply(pod("q", json!({"k": "v"}))))
        .await
        .unwrap();
    assert_eq!(applied.metadata.labels.unwrap()["k"], "v");
}

#[tokio::test]
async fn status_subresource_and_optimistic_concurrency() {
    let s = Skiff::bare();
    let pods: Api<Pod> = Api::default_namespaced(s.client().await);
    let created = pods
        .create(&PostParams::default(), &pod("p", json!({})))
        .await
        .unwrap();
    assert_eq!(
        created.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );

    // Status writes go through /status and leave the spec alone.
    let st = pods
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}, "spec": {"nodeName": "sneaky"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        st.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    assert_eq!(st.spec.as_ref().unwrap().node_name, None);

    // A main-resource update cannot change the status.
    let mut p = pods.get("p").await.unwrap();
    p.status.as_mut().unwrap().phase = Some("Failed".into());
    let replaced = pods.replace("p", &PostParams::default(), &p).await.unwrap();
    assert_eq!(
        replaced.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );

    // A uid in the body is a precondition.
    let err = pods
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"uid": "not-this-pod"}, "status": {"message": "x"}})),
        )
        .await
        .unwrap_err();
    let (code, _, msg) = api_err(err);
    assert_eq!(code, 409);
    assert!(
        msg.contains("Precondition failed: UID in precondition: not-this-pod"),
        "{msg}"
    );

    // A no-op update keeps the resourceVersion; a real change moves it, and a write with the old
    // one is then a 409 Conflict.
    assert_eq!(
        replaced.metadata.resource_version,
        p.metadata.resource_version
    );
    let mut changed = p.clone();
    changed.metadata.labels = Some([("x".to_string(), "1".to_string())].into());
    pods.replace("p", &PostParams::default(), &changed)
        .await
        .unwrap();
    let err = pods
        .replace("p", &PostParams::default(), &p)
        .await
        .unwrap_err();
    let (code, reason, msg) = api_err(err);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert_eq!(
        msg,
        "Operation cannot be fulfilled on pods \"p\": the object has been modified; please apply your changes to the latest version and try again"
    );
}

#[tokio::test]
async fn binding_and_graceful_deletion() {
    let s = Skiff::bare();
    let client = s.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.create(&PostParams::default(), &pod("p", json!({})))
        .await
        .unwrap();
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
                         "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}});
    let req = http::Request::post("/api/v1/namespaces/default/pods/p/binding")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&binding).unwrap())
        .unwrap();
    let status: serde_json::Value = client.request(req).await.unwrap();
    assert_eq!(status["status"], "Success");
    let p = pods.get("p").await.unwrap();
    assert_eq!(
        p.spec.as_ref().unwrap().node_name.as_deref(),
        Some("node-1")
    );
    let conds = p.status.unwrap().conditions.unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "True")
    );
    // A second binding is a conflict.
    let req = http::Request::post("/api/v1/namespaces/default/pods/p/binding")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&binding).unwrap())
        .unwrap();
    let err = client.request::<serde_json::Value>(req).await.unwrap_err();
    assert_eq!(api_err(err).0, 409);

    // A pod on a node is deleted gracefully: it stays, marked, until deleted with grace 0.
    pods.delete("p", &DeleteParams::default()).await.unwrap();
    let p = pods.get("p").await.unwrap();
    assert!(p.metadata.deletion_timestamp.is_some());
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(30));
    let out = s.kubectl(&["get", "pods", "--no-headers"]).ok();
    assert!(out.stdout.contains("Terminating"), "{}", out.stdout);
    pods.delete("p", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let err = pods.get("p").await.unwrap_err();
    assert_eq!(api_err(err).0, 404);

    // A pod not on a node goes at once.
    pods.create(&PostParams::default(), &pod("q", json!({})))
        .await
        .unwrap();
    pods.delete("q", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_err(pods.get("q").await.unwrap_err()).0, 404);
}

#[tokio::test]
async fn bad_requests_get_kubernetes_errors_and_store_nothing() {
    let s = Skiff::bare();
    let client = s.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());

    // A Node body sent to the pods collection.
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}});
    let req = http::Request::post("/api/v1/namespaces/default/pods")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&node).unwrap())
        .unwrap();
    let (code, reason, _) = api_err(client.request::<serde_json::Value>(req).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));

    // Malformed JSON.
    let req = http::Request::post("/api/v1/namespaces/default/pods")
        .header("content-type", "application/json")
        .body(b"{\"apiVersion\": ".to_vec())
        .unwrap();
    assert_eq!(
        api_err(client.request::<serde_json::Value>(req).await.unwrap_err()).0,
        400
    );

    // Missing namespace.
    let missing: Api<Pod> = Api::namespaced(client.clone(), "missing");
    let (code, _, msg) = api_err(
        missing
            .create(&PostParams::default(), &pod("p", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (code, msg.as_str()),
        (404, "namespaces \"missing\" not found")
    );

    // Invalid name, with its field cause.
    let (code, reason, msg) = api_err(
        pods.create(&PostParams::default(), &pod("Bad_Name", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(
        msg.starts_with("Pod \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""),
        "{msg}"
    );

    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // No credentials, or wrong ones: 401 and nothing else.
    let mut cfg = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&s.kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    cfg.auth_info.token = Some("wrong".to_string().into());
    let bad: Api<Pod> = Api::default_namespaced(kube::Client::try_from(cfg).unwrap());
    let (code, reason, _) = api_err(bad.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (401, "Unauthorized"));
}

#[tokio::test]
async fn nodes_events_and_leases() {
    let s = Skiff::bare();
    let client = s.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-1", "labels": {"node-role.kubernetes.io/worker": ""}},
        "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
                   "nodeInfo": {"kubeletVersion": "v1.32.0-skiff", "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "", "containerRuntimeVersion": "", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"}}
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let out = common::table(&s.kubectl(&["get", "nodes"]).ok().stdout);
    assert_eq!(out[0], ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    assert_eq!(out[1][..3], ["node-1", "Ready", "worker"]);
    assert_eq!(out[1][4], "v1.32.0-skiff");
    assert_eq!(
        s.kubectl(&["cordon", "node-1"]).ok().stdout.trim(),
        "node/node-1 cordoned"
    );
    let out = common::table(&s.kubectl(&["get", "nodes"]).ok().stdout);
    assert_eq!(out[1][1], "Ready,SchedulingDisabled");

    let events: Api<Event> = Api::default_namespaced(client.clone());
    let ev: Event = serde_json::from_value(json!({
        "metadata": {"name": "x.1"}, "involvedObject": {"kind": "Pod", "name": "x", "namespace": "default", "uid": "u1"},
        "reason": "Testing", "message": "hello", "type": "Normal", "count": 1,
    }))
    .unwrap();
    events.create(&PostParams::default(), &ev).await.unwrap();
    let sel = ListParams::default()
        .fields("involvedObject.uid=u1,involvedObject.namespace=default,involvedObject.name=x");
    assert_eq!(events.list(&sel).await.unwrap().items.len(), 1);
    let sel = ListParams::default().fields("involvedObject.uid=other");
    assert!(events.list(&sel).await.unwrap().items.is_empty());

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "node-1"}, "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40}
    }))
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let got = leases.get("node-1").await.unwrap();
    assert_eq!(got.spec.unwrap().holder_identity.as_deref(), Some("node-1"));
}

#[tokio::test]
async fn health_and_metrics_endpoints() {
    let s = Skiff::bare();
    let client = s.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.list(&ListParams::default()).await.unwrap();
    for path in ["/healthz", "/livez", "/readyz"] {
        let req = http::Request::get(path).body(Vec::new()).unwrap();
        assert_eq!(client.request_text(req).await.unwrap(), "ok");
    }
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.unwrap();
    assert!(
        text.contains("apiserver_request_total{verb=\"GET\",resource=\"pods\",code=\"200\"}"),
        "{text}"
    );
    assert!(
        text.contains("apiserver_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn deletion_edge_cases() {
    let s = Skiff::bare();
    let client = s.client().await;

    // No writes through the all-namespaces collection.
    let req = http::Request::delete("/api/v1/pods")
        .body(Vec::new())
        .unwrap();
    assert_eq!(
        api_err(client.request::<serde_json::Value>(req).await.unwrap_err()).0,
        405
    );

    // A namespace holding a pod that waits for its node stays Terminating, whatever else is
    // written to it meanwhile.
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "t"}})).unwrap();
    nss.create(&PostParams::default(), &ns).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "t");
    pods.create(&PostParams::default(), &pod("p", json!({})))
        .await
        .unwrap();
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
                         "target": {"kind": "Node", "name": "node-1"}});
    let req = http::Request::post("/api/v1/namespaces/t/pods/p/binding")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&binding).unwrap())
        .unwrap();
    client.request::<serde_json::Value>(req).await.unwrap();
    nss.delete("t", &DeleteParams::default()).await.unwrap();
    nss.patch(
        "t",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = nss.get("t").await.unwrap();
    assert_eq!(t.status.unwrap().phase.as_deref(), Some("Terminating"));
    assert!(
        pods.get("p")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );

    // A later DELETE shortens the grace period and moves the deadline by the difference.
    let before = pods.get("p").await.unwrap();
    let deadline = |p: &Pod| p.metadata.deletion_timestamp.as_ref().unwrap().0;
    pods.delete("p", &DeleteParams::default().grace_period(10))
        .await
        .unwrap();
    let after = pods.get("p").await.unwrap();
    assert_eq!(after.metadata.deletion_grace_period_seconds, Some(10));
    assert_eq!(
        deadline(&before).duration_since(deadline(&after)).as_secs(),
        20
    );
    // A longer one changes nothing.
    pods.delete("p", &DeleteParams::default().grace_period(60))
        .await
        .unwrap();
    assert_eq!(
        pods.get("p")
            .await
            .unwrap()
            .metadata
            .deletion_grace_period_seconds,
        Some(10)
    );

    // Once the pod is gone, the namespace goes too.
    pods.delete("p", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    common::eventually(20, || {
        let out = s.kubectl(&["get", "ns", "t"]);
        (out.code == 1).then_some(())
    });
}
