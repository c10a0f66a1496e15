//! The API on the etcd store: `skiff up --store etcd` against a real etcd (started by the test),
//! driven by the real kubectl and the kube crate; and `skiff migrate` from the embedded store.
//! Without etcd installed each test says so and passes without checking anything
//! (`scripts/test` installs etcd-server).

mod common;

use common::{Skiff, eventually, node_object, table};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use skiff_store::{EtcdStore, Store};
use skiff_testsupport::etcd::Etcd;

fn on_etcd(etcd: &Etcd) -> Skiff {
    Skiff::start_with(&["--store", "etcd", "--etcd-endpoints", &etcd.endpoint])
}

#[test]
fn kubectl_and_the_scheduler_on_etcd_and_watches_across_a_restart() {
    let Some(etcd) = Etcd::start() else { return };
    let mut s = on_etcd(&etcd);
    // Objects, conflicts and errors as on the embedded store.
    s.kubectl(&["create", "namespace", "team"]).ok();
    s.kubectl(&[
        "create",
        "configmap",
        "cfg",
        "-n",
        "team",
        "--from-literal=a=1",
    ])
    .ok();
    let dup = s.kubectl(&["create", "configmap", "cfg", "-n", "team"]);
    assert!(
        dup.stderr.contains("configmaps \"cfg\" already exists"),
        "{dup:?}"
    );
    let missing = s.kubectl(&["get", "configmap", "nope", "-n", "team"]);
    assert!(missing.stderr.contains("NotFound"), "{missing:?}");
    s.kubectl(&["label", "configmap", "cfg", "-n", "team", "tier=web"])
        .ok();
    let listed = s
        .kubectl(&[
            "get",
            "configmaps",
            "-n",
            "team",
            "-l",
            "tier=web",
            "-o",
            "name",
        ])
        .ok()
        .stdout;
    assert_eq!(listed.trim(), "configmap/cfg");

    // The scheduler runs (this server leads) and binds a pod to a node.
    s.create_node(node_object("n1", "4", "8Gi", json!({})));
    s.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: team}\nspec: {containers: [{name: c, image: busybox}]}\n",
    )
    .ok();
    eventually(30, || {
        let n = s
            .kubectl(&[
                "get",
                "pod",
                "p",
                "-n",
                "team",
                "-o",
                "jsonpath={.spec.nodeName}",
            ])
            .stdout;
        (n == "n1").then_some(())
    });
    let lease = s
        .kubectl(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            "skiff-control-plane",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .ok()
        .stdout;
    assert!(!lease.is_empty());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A stale resourceVersion is a 409 Conflict; a watch from a resourceVersion replays.
    let rv = rt.block_on(async {
        let cms: Api<ConfigMap> = Api::namespaced(s.client().await, "team");
        let cur = cms.get("cfg").await.unwrap();
        let rv = cur.metadata.resource_version.clone().unwrap();
        let mut changed = cur.clone();
        changed.data = Some([("a".to_string(), "2".to_string())].into());
        cms.replace("cfg", &PostParams::default(), &changed)
            .await
            .unwrap();
        match cms.replace("cfg", &PostParams::default(), &cur).await {
            Err(kube::Error::Api(e)) => assert_eq!(e.code, 409, "{e:?}"),
            other => panic!("expected a conflict, got {other:?}"),
        }
        rv
    });
    // The server restarts: etcd still has the history, so a watch from before the restart
    // replays what happened since (the embedded store answers 410 there).
    s.stop();
    s.launch();
    rt.block_on(async {
        let cms: Api<ConfigMap> = Api::namespaced(s.client().await, "team");
        assert_eq!(
            cms.get("cfg").await.unwrap().data.unwrap()["a"],
            "2",
            "the update survived the restart"
        );
        let mut w = cms
            .watch(&WatchParams::default().timeout(10), &rv)
            .await
            .unwrap()
            .boxed();
        match w.try_next().await.unwrap() {
            Some(WatchEvent::Modified(cm)) => assert_eq!(cm.data.unwrap()["a"], "2"),
            other => panic!("expected the update, got {other:?}"),
        }
        // Once etcd compacted that history, the same watch is 410 Gone.
        let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
            .await
            .unwrap();
        let now = store.current_revision().await.unwrap();
        store.compact(now).await.unwrap();
        let gone = cms.watch(&WatchParams::default().timeout(5), &rv).await;
        let err = match gone {
            Err(e) => e.to_string(),
            Ok(w) => match w.boxed().try_next().await {
                Ok(Some(WatchEvent::Error(e))) => format!("{} {}", e.code, e.message),
                other => panic!("expected 410, got {other:?}"),
            },
        };
        assert!(err.contains("410") || err.contains("too old"), "{err}");
        let all = cms.list(&ListParams::default()).await.unwrap();
        assert_eq!(all.items.len(), 2, "cfg and kube-root-ca.crt");
    });
}

#[test]
fn migrate_copies_an_embedded_cluster_into_etcd() {
    let Some(etcd) = Etcd::start() else { return };
    let mut before = Skiff::start();
    before.kubectl(&["create", "namespace", "moved"]).ok();
    before
        .kubectl(&[
            "create",
            "configmap",
            "kept",
            "-n",
            "moved",
            "--from-literal=k=v",
        ])
        .ok();
    before.create_node(node_object("old-node", "2", "4Gi", json!({})));
    let admin = before.admin_token();
    before.stop();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["migrate", "--etcd-endpoints", &etcd.endpoint, "--data-dir"])
        .arg(before.data_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("copied"));
    // Migrating twice is refused: etcd holds a cluster now.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["migrate", "--etcd-endpoints", &etcd.endpoint, "--data-dir"])
        .arg(before.data_dir())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("empty etcd"));

    // A server on etcd with a fresh data dir serves the same cluster, credentials included.
    let after = on_etcd(&etcd);
    assert_eq!(after.admin_token(), admin);
    let cm = after
        .kubectl(&[
            "get",
            "configmap",
            "kept",
            "-n",
            "moved",
            "-o",
            "jsonpath={.data.k}",
        ])
        .ok()
        .stdout;
    assert_eq!(cm, "v");
    let nodes = table(&after.kubectl(&["get", "nodes", "--no-headers"]).ok().stdout);
    assert!(nodes.iter().any(|r| r[0] == "old-node"), "{nodes:?}");
}

#[test]
fn a_server_stopping_hands_the_control_plane_over_at_once() {
    let Some(etcd) = Etcd::start() else { return };
    let mut first = on_etcd(&etcd);
    let holder = |s: &Skiff| {
        s.kubectl(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            "skiff-control-plane",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .stdout
    };
    let leader = eventually(20, || Some(holder(&first)).filter(|h| !h.is_empty()));
    let second = on_etcd(&etcd);
    // The second follows while the first leads.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(holder(&second), leader);
    // A clean stop releases the Lease: the second takes over well before it would expire (15 s).
    let stopped = std::time::Instant::now();
    first.stop();
    let next = eventually(20, || {
        let h = holder(&second);
        (!h.is_empty() && h != leader).then_some(h)
    });
    assert!(
        stopped.elapsed() < std::time::Duration::from_secs(10),
        "took over after {:?} ({next})",
        stopped.elapsed()
    );
    // And schedules.
    second.create_node(node_object("n1", "4", "8Gi", json!({})));
    second
        .apply("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: busybox}]}\n")
        .ok();
    eventually(30, || {
        let n = second
            .kubectl(&["get", "pod", "p", "-o", "jsonpath={.spec.nodeName}"])
            .stdout;
        (n == "n1").then_some(())
    });
}
