//! Secrets, ConfigMaps and ServiceAccounts with the real kubectl (its generators send protobuf
//! bodies) and through the kube client (list, watch, selectors).

mod common;

use std::time::Duration;

use common::{Skiff, squash, table};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;

fn decode64(s: &str) -> String {
    use base64::Engine;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .expect("base64"),
    )
    .expect("utf-8")
}

#[test]
fn kubectl_create_generators_and_get() {
    let s = Skiff::bare();
    let out = s
        .kubectl(&["create", "secret", "generic", "s", "--from-literal=a=b"])
        .ok();
    assert_eq!(out.stdout.trim(), "secret/s created");
    let out = s
        .kubectl(&[
            "create",
            "secret",
            "docker-registry",
            "reg",
            "--docker-server=127.0.0.1:5000",
            "--docker-username=u",
            "--docker-password=p",
        ])
        .ok();
    assert_eq!(out.stdout.trim(), "secret/reg created");
    s.kubectl(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=x=1",
        "--from-literal=y=2",
    ])
    .ok();
    let out = s.kubectl(&["create", "serviceaccount", "robot"]).ok();
    assert_eq!(out.stdout.trim(), "serviceaccount/robot created");
    let again = s.kubectl(&["create", "sa", "robot"]);
    assert_eq!(again.code, 1);
    assert!(
        again
            .stderr
            .contains("serviceaccounts \"robot\" already exists"),
        "{}",
        again.stderr
    );

    let rows = table(&s.kubectl(&["get", "secrets"]).ok().stdout);
    assert_eq!(rows[0], ["NAME", "TYPE", "DATA", "AGE"]);
    assert_eq!(rows[1][..3], ["reg", "kubernetes.io/dockerconfigjson", "1"]);
    assert_eq!(rows[2][..3], ["s", "Opaque", "1"]);
    let rows = table(&s.kubectl(&["get", "cm"]).ok().stdout);
    assert_eq!(rows[0], ["NAME", "DATA", "AGE"]);
    assert_eq!(rows[1][..2], ["cfg", "2"]);
    let rows = table(&s.kubectl(&["get", "sa"]).ok().stdout);
    assert_eq!(rows[0], ["NAME", "SECRETS", "AGE"]);
    assert_eq!(rows[1][..2], ["robot", "0"]);

    let a = s
        .kubectl(&["get", "secret", "s", "-o", "jsonpath={.data.a}"])
        .ok()
        .stdout;
    assert_eq!(decode64(&a), "b");
    let cfg = s
        .kubectl(&[
            "get",
            "secret",
            "reg",
            "-o",
            r"jsonpath={.data.\.dockerconfigjson}",
        ])
        .ok()
        .stdout;
    let cfg: serde_json::Value = serde_json::from_str(&decode64(&cfg)).unwrap();
    assert_eq!(cfg["auths"]["127.0.0.1:5000"]["username"], "u");
    assert_eq!(cfg["auths"]["127.0.0.1:5000"]["password"], "p");
    let x = s
        .kubectl(&["get", "cm", "cfg", "-o", "jsonpath={.data.x}"])
        .ok()
        .stdout;
    assert_eq!(x, "1");

    // Field and label selectors.
    let rows = table(
        &s.kubectl(&["get", "secrets", "--field-selector", "type=Opaque"])
            .ok()
            .stdout,
    );
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1][0], "s");
    s.kubectl(&["label", "cm", "cfg", "tier=web"]).ok();
    let out = s
        .kubectl(&["get", "cm", "-l", "tier=web", "-o", "name"])
        .ok();
    assert_eq!(out.stdout.trim(), "configmap/cfg");
}

#[test]
fn kubectl_create_tls_secret_and_typed_rules() {
    let s = Skiff::bare();
    let key = rcgen::generate_simple_self_signed(vec!["example.com".to_string()]).unwrap();
    let crt = s.file("tls.crt", &key.cert.pem());
    let pem = s.file("tls.key", &key.signing_key.serialize_pem());
    s.kubectl(&[
        "create",
        "secret",
        "tls",
        "t",
        &format!("--cert={}", crt.display()),
        &format!("--key={}", pem.display()),
    ])
    .ok();
    let rows = table(&s.kubectl(&["get", "secret", "t"]).ok().stdout);
    assert_eq!(rows[1][..3], ["t", "kubernetes.io/tls", "2"]);

    // `type` is immutable.
    let out = s.kubectl(&[
        "patch",
        "secret",
        "t",
        "--type=merge",
        "-p",
        r#"{"type":"Opaque"}"#,
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            r#"The Secret "t" is invalid: type: Invalid value: "Opaque": field is immutable"#
        ),
        "{}",
        out.stderr
    );

    // A type's required keys.
    let out = s.kubectl(&[
        "create",
        "secret",
        "generic",
        "auth",
        "--type=kubernetes.io/basic-auth",
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            r#"Secret "auth" is invalid: [data[username]: Required value, data[password]: Required value]"#
        ),
        "{}",
        out.stderr
    );
    let out = s.kubectl(&[
        "create",
        "secret",
        "generic",
        "dcfg",
        "--type=kubernetes.io/dockerconfigjson",
        r#"--from-literal=.dockerconfigjson={"auths":"#,
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            r#"data[.dockerconfigjson]: Invalid value: "<secret contents redacted>": unexpected end of JSON input"#
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn kubectl_describe() {
    let s = Skiff::bare();
    s.kubectl(&["create", "secret", "generic", "s", "--from-literal=a=bcd"])
        .ok();
    s.kubectl(&["create", "configmap", "cfg", "--from-literal=x=hello"])
        .ok();
    s.kubectl(&["create", "sa", "robot"]).ok();

    let out = squash(&s.kubectl(&["describe", "secret", "s"]).ok().stdout);
    assert!(out.contains("Name: s Namespace: default"), "{out}");
    assert!(out.contains("Type: Opaque"), "{out}");
    assert!(out.contains("a: 3 bytes"), "{out}");
    let out = squash(&s.kubectl(&["describe", "configmap", "cfg"]).ok().stdout);
    assert!(out.contains("Name: cfg"), "{out}");
    assert!(out.contains("x: ---- hello"), "{out}");
    assert!(out.contains("Events: <none>"), "{out}");
    let out = squash(&s.kubectl(&["describe", "sa", "robot"]).ok().stdout);
    assert!(out.contains("Name: robot"), "{out}");
    assert!(out.contains("Tokens: <none>"), "{out}");
    assert!(out.contains("Events: <none>"), "{out}");
}

const APPLIED: &str = "apiVersion: v1
kind: Secret
metadata:
  name: applied
stringData:
  user: admin
  password: first
";

const BAD_CM: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: bad
data:
  bad key: x
  both: z
binaryData:
  both: eQ==
";

const IMMUTABLE_CM: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: frozen
data:
  a: \"1\"
immutable: true
";

#[test]
fn kubectl_apply_validation_and_delete() {
    let s = Skiff::bare();
    // stringData is merged into data (base64) and not kept.
    let out = s.apply(APPLIED).ok();
    assert_eq!(out.stdout.trim(), "secret/applied created");
    let live: serde_json::Value = serde_json::from_str(
        &s.kubectl(&["get", "secret", "applied", "-o", "json"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(live["type"], "Opaque");
    assert!(live.get("stringData").is_none(), "{live}");
    assert_eq!(decode64(live["data"]["user"].as_str().unwrap()), "admin");
    assert_eq!(
        decode64(live["data"]["password"].as_str().unwrap()),
        "first"
    );
    let out = s.apply(&APPLIED.replace("first", "second")).ok();
    assert_eq!(out.stdout.trim(), "secret/applied configured");
    let pw = s
        .kubectl(&[
            "get",
            "secret",
            "applied",
            "-o",
            "jsonpath={.data.password}",
        ])
        .ok()
        .stdout;
    assert_eq!(decode64(&pw), "second");

    // Invalid keys: 422 with Kubernetes' messages.
    let out = s.apply(BAD_CM);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(r#"The ConfigMap "bad" is invalid: "#)
            && out.stderr.contains(
                r#"* data[bad key]: Invalid value: "bad key": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"#
            )
            && out.stderr.contains(
                r#"* data[both]: Invalid value: "both": duplicate of key present in binaryData"#
            ),
        "{}",
        out.stderr
    );

    // Immutable: data may not change, immutable may not be unset; labels may.
    s.apply(IMMUTABLE_CM).ok();
    let out = s.apply(&IMMUTABLE_CM.replace("\"1\"", "\"2\""));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            r#"The ConfigMap "frozen" is invalid: data: Forbidden: field is immutable when `immutable` is set"#
        ),
        "{}",
        out.stderr
    );
    let out = s.kubectl(&[
        "patch",
        "cm",
        "frozen",
        "--type=merge",
        "-p",
        r#"{"immutable":false}"#,
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("immutable: Forbidden: field is immutable when `immutable` is set"),
        "{}",
        out.stderr
    );
    s.kubectl(&["label", "cm", "frozen", "x=y"]).ok();

    // Delete, one and all.
    assert_eq!(
        s.kubectl(&["delete", "secret", "applied"])
            .ok()
            .stdout
            .trim(),
        "secret \"applied\" deleted"
    );
    s.kubectl(&["create", "cm", "other", "--from-literal=k=v"])
        .ok();
    s.kubectl(&["delete", "cm", "--all"]).ok();
    let out = s.kubectl(&["get", "cm,secrets"]).ok();
    assert!(out.stdout.trim().is_empty(), "{}", out.stdout);
    let out = s.kubectl(&["get", "secret", "applied"]);
    assert!(
        out.stderr
            .contains(r#"Error from server (NotFound): secrets "applied" not found"#),
        "{}",
        out.stderr
    );
}

async fn next_event<S, T>(w: &mut S) -> Option<T>
where
    S: futures::TryStream<Ok = T, Error = kube::Error> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(5), w.try_next())
        .await
        .expect("a watch event in time")
        .unwrap()
}

fn config_map(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "data": {"k": "v"},
    }))
    .unwrap()
}

#[tokio::test]
async fn config_maps_list_and_watch_through_kube() {
    let s = Skiff::bare();
    let client = s.client().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for (name, app) in [("a", "x"), ("b", "y"), ("c", "x")] {
        cms.create(
            &PostParams::default(),
            &config_map(name, json!({"app": app})),
        )
        .await
        .unwrap();
    }
    let list = cms
        .list(&ListParams::default().labels("app=x"))
        .await
        .unwrap();
    let names: Vec<_> = list
        .items
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["a", "c"]);
    let paged = cms.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(paged.items.len(), 2);
    assert!(paged.metadata.continue_.is_some());

    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut w = cms
        .watch(&WatchParams::default().labels("app=x"), &rv)
        .await
        .unwrap()
        .boxed();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Strategic(json!({"data": {"k2": "v2"}})),
    )
    .await
    .unwrap();
    // A change to an object the selector does not match is not seen.
    cms.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "w"}})),
    )
    .await
    .unwrap();
    cms.delete("c", &DeleteParams::default()).await.unwrap();
    match next_event(&mut w).await {
        Some(WatchEvent::Modified(cm)) => {
            assert_eq!(cm.metadata.name.as_deref(), Some("a"));
            assert_eq!(cm.data.unwrap()["k2"], "v2");
        }
        other => panic!("expected MODIFIED a, got {other:?}"),
    }
    match next_event(&mut w).await {
        Some(WatchEvent::Deleted(cm)) => assert_eq!(cm.metadata.name.as_deref(), Some("c")),
        other => panic!("expected DELETED c, got {other:?}"),
    }

    // Secrets through the same client: stringData is merged, and server-side apply works.
    let secrets: Api<Secret> = Api::default_namespaced(client);
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "ssa"},
        "stringData": {"token": "abc"},
    }))
    .unwrap();
    let applied = secrets
        .patch("ssa", &PatchParams::apply("test"), &Patch::Apply(&secret))
        .await
        .unwrap();
    assert_eq!(applied.type_.as_deref(), Some("Opaque"));
    assert!(applied.string_data.is_none());
    assert_eq!(applied.data.unwrap()["token"].0, b"abc");
}
