//! The everyday kubectl verbs against a real `skiff up`, asserting on what kubectl prints.

mod common;

use common::{Skiff, eventually, squash, table};

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  containers:
  - name: web
    image: 127.0.0.1:5000/busybox:1
    command: [\"httpd\", \"-f\", \"-p\", \"8080\"]
    ports:
    - containerPort: 8080
";

#[test]
fn version_and_api_resources() {
    let s = Skiff::bare();
    let v = s.kubectl(&["version"]).ok();
    assert!(
        v.stdout.contains("Server Version: v1.32.0-skiff"),
        "{}",
        v.stdout
    );
    let r = s.kubectl(&["api-resources"]).ok();
    let rows = table(&r.stdout);
    assert_eq!(
        rows[0],
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    );
    assert!(
        rows.contains(&vec![
            "pods".into(),
            "po".into(),
            "v1".into(),
            "true".into(),
            "Pod".into()
        ]),
        "{}",
        r.stdout
    );
    assert!(rows.contains(&vec![
        "nodes".into(),
        "no".into(),
        "v1".into(),
        "false".into(),
        "Node".into()
    ]));
    assert!(rows.contains(&vec![
        "namespaces".into(),
        "ns".into(),
        "v1".into(),
        "false".into(),
        "Namespace".into()
    ]));
    assert!(rows.contains(&vec![
        "events".into(),
        "ev".into(),
        "v1".into(),
        "true".into(),
        "Event".into()
    ]));
    assert!(rows.contains(&vec![
        "leases".into(),
        "coordination.k8s.io/v1".into(),
        "true".into(),
        "Lease".into()
    ]));
}

#[test]
fn apply_get_label_annotate_delete_a_pod() {
    let s = Skiff::bare();
    let f = s.file("pod.yaml", POD);
    let f = f.to_str().unwrap();
    assert_eq!(
        s.kubectl(&["apply", "-f", f]).ok().stdout.trim(),
        "pod/web created"
    );
    assert_eq!(
        s.kubectl(&["apply", "-f", f]).ok().stdout.trim(),
        "pod/web unchanged"
    );

    let out = s.kubectl(&["get", "pods"]).ok().stdout;
    let rows = table(&out);
    assert_eq!(rows[0], ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(rows[1][..4], ["web", "0/1", "Pending", "0"]);

    let wide = table(&s.kubectl(&["get", "pods", "-o", "wide"]).ok().stdout);
    assert_eq!(
        wide[0],
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED",
            "NODE",
            "READINESS",
            "GATES"
        ]
    );
    assert_eq!(wide[1][5..], ["<none>", "<none>", "<none>", "<none>"]);

    let all = table(&s.kubectl(&["get", "pods", "-A"]).ok().stdout);
    assert_eq!(all[0][0], "NAMESPACE");
    assert_eq!(all[1][..2], ["default", "web"]);

    let labels = table(&s.kubectl(&["get", "pods", "--show-labels"]).ok().stdout);
    assert_eq!(labels[0].last().unwrap(), "LABELS");
    assert_eq!(labels[1].last().unwrap(), "app=web");

    let yaml = s.kubectl(&["get", "pod", "web", "-o", "yaml"]).ok().stdout;
    for want in [
        "restartPolicy: Always",
        "terminationGracePeriodSeconds: 30",
        "dnsPolicy: ClusterFirst",
        "schedulerName: default-scheduler",
        "imagePullPolicy: IfNotPresent",
        "phase: Pending",
        "qosClass: BestEffort",
        "protocol: TCP",
    ] {
        assert!(yaml.contains(want), "missing {want:?} in\n{yaml}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&s.kubectl(&["get", "pod", "web", "-o", "json"]).ok().stdout).unwrap();
    assert_eq!(json["metadata"]["name"], "web");
    assert!(json["metadata"]["uid"].as_str().unwrap().len() == 36);
    assert!(
        json["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );

    assert_eq!(
        s.kubectl(&["label", "pod", "web", "tier=frontend"])
            .ok()
            .stdout
            .trim(),
        "pod/web labeled"
    );
    assert_eq!(
        s.kubectl(&["annotate", "pod", "web", "note=x"])
            .ok()
            .stdout
            .trim(),
        "pod/web annotated"
    );
    let shown = s
        .kubectl(&[
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.metadata.labels.tier}/{.metadata.annotations.note}",
        ])
        .ok();
    assert_eq!(shown.stdout, "frontend/x");

    let described = squash(&s.kubectl(&["describe", "pod", "web"]).ok().stdout);
    assert!(
        described.contains("Name: web Namespace: default"),
        "{described}"
    );
    assert!(described.contains("Status: Pending"), "{described}");
    assert!(described.contains("Events: <none>"), "{described}");

    assert_eq!(
        s.kubectl(&["delete", "pod", "web"]).ok().stdout.trim(),
        "pod \"web\" deleted"
    );
    let gone = s.kubectl(&["get", "pod", "web"]);
    assert_eq!(gone.code, 1);
    assert_eq!(
        gone.stderr.trim(),
        "Error from server (NotFound): pods \"web\" not found"
    );
}

#[test]
fn apply_changes_keep_other_fields() {
    let s = Skiff::bare();
    let f = s.file("pod.yaml", POD);
    s.kubectl(&["apply", "-f", f.to_str().unwrap()]).ok();
    // A changed image goes through a strategic merge patch; the ports must survive.
    let changed = POD.replace("busybox:1", "busybox:2");
    let f2 = s.file("pod2.yaml", &changed);
    assert_eq!(
        s.kubectl(&["apply", "-f", f2.to_str().unwrap()])
            .ok()
            .stdout
            .trim(),
        "pod/web configured"
    );
    let out = s
        .kubectl(&[
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.spec.containers[0].image} {.spec.containers[0].ports[0].containerPort}",
        ])
        .ok();
    assert_eq!(out.stdout, "127.0.0.1:5000/busybox:2 8080");
}

#[test]
fn server_side_apply_creates_then_updates() {
    let s = Skiff::bare();
    let f = s.file("pod.yaml", POD);
    let f = f.to_str().unwrap();
    assert_eq!(
        s.kubectl(&["apply", "--server-side", "-f", f])
            .ok()
            .stdout
            .trim(),
        "pod/web serverside-applied"
    );
    assert_eq!(
        s.kubectl(&["apply", "--server-side", "-f", f])
            .ok()
            .stdout
            .trim(),
        "pod/web serverside-applied"
    );
    let out = s.kubectl(&["get", "pods", "-o", "name"]).ok();
    assert_eq!(out.stdout.trim(), "pod/web");
}

#[test]
fn namespaces_create_list_delete() {
    let s = Skiff::bare();
    let ns = table(&s.kubectl(&["get", "ns"]).ok().stdout);
    assert_eq!(ns[0], ["NAME", "STATUS", "AGE"]);
    let names: Vec<&str> = ns[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    assert!(ns[1..].iter().all(|r| r[1] == "Active"));

    assert_eq!(
        s.kubectl(&["create", "ns", "demo"]).ok().stdout.trim(),
        "namespace/demo created"
    );
    let pod = POD.replace(
        "name: web\n  labels",
        "name: web\n  namespace: demo\n  labels",
    );
    let f = s.file("pod.yaml", &pod);
    s.kubectl(&["apply", "-f", f.to_str().unwrap()]).ok();
    assert_eq!(
        table(&s.kubectl(&["get", "pods", "-n", "demo"]).ok().stdout).len(),
        2
    );

    assert_eq!(
        s.kubectl(&["delete", "ns", "demo"]).ok().stdout.trim(),
        "namespace \"demo\" deleted"
    );
    let gone = s.kubectl(&["get", "ns", "demo"]);
    assert_eq!(
        gone.stderr.trim(),
        "Error from server (NotFound): namespaces \"demo\" not found"
    );
    let pods = s.kubectl(&["get", "pods", "-n", "demo"]).ok();
    assert_eq!(pods.stderr.trim(), "No resources found in demo namespace.");

    let refused = s.kubectl(&["delete", "ns", "default"]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("Error from server (Forbidden): namespaces \"default\" is forbidden: this namespace may not be deleted"), "{}", refused.stderr);
}

#[test]
fn get_watch_streams_later_changes() {
    let s = Skiff::bare();
    let f = s.file("pod.yaml", POD);
    s.kubectl(&["apply", "-f", f.to_str().unwrap()]).ok();
    let w = s.watch(&["pods"]);
    // The listed pod's row shows the list is done and the watch open.
    w.wait_for(20, "the listed pod", |l| l.starts_with("web "));
    s.kubectl(&["label", "pod", "web", "x=y"]).ok();
    eventually(20, || (w.lines().len() >= 3).then_some(()));
    let lines = w.lines();
    let rows = table(&lines.join("\n"));
    assert_eq!(
        rows[0],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{lines:?}"
    );
    assert_eq!(rows[1][..3], ["web", "0/1", "Pending"]);
    assert_eq!(rows[2][..3], ["web", "0/1", "Pending"]);
}

#[test]
fn events_are_listed_and_described() {
    let s = Skiff::bare();
    let f = s.file("pod.yaml", POD);
    s.kubectl(&["apply", "-f", f.to_str().unwrap()]).ok();
    let uid = s
        .kubectl(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"])
        .ok()
        .stdout;
    let ev = format!(
        "apiVersion: v1
kind: Event
metadata:
  name: web.1
involvedObject:
  kind: Pod
  namespace: default
  name: web
  uid: {uid}
  apiVersion: v1
reason: Scheduled
message: Successfully assigned default/web to node-1
type: Normal
source:
  component: default-scheduler
firstTimestamp: \"2026-01-01T00:00:00Z\"
lastTimestamp: \"2026-01-01T00:00:00Z\"
count: 1
"
    );
    let f = s.file("ev.yaml", &ev);
    assert_eq!(
        s.kubectl(&["create", "-f", f.to_str().unwrap()])
            .ok()
            .stdout
            .trim(),
        "event/web.1 created"
    );
    let rows = table(&s.kubectl(&["get", "events"]).ok().stdout);
    assert_eq!(
        rows[0],
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    );
    assert_eq!(rows[1][1..4], ["Normal", "Scheduled", "pod/web"]);
    let d = squash(&s.kubectl(&["describe", "pod", "web"]).ok().stdout);
    assert!(d.contains("Type Reason Age From Message"), "{d}");
    assert!(d.contains("Normal Scheduled"), "{d}");
    assert!(
        d.contains("default-scheduler Successfully assigned default/web to node-1"),
        "{d}"
    );
}

#[test]
fn errors_look_like_kubernetes() {
    let s = Skiff::bare();
    let nope = s.kubectl(&["get", "pod", "nope"]);
    assert_eq!(nope.code, 1);
    assert_eq!(
        nope.stderr.trim(),
        "Error from server (NotFound): pods \"nope\" not found"
    );

    let f = s.file("pod.yaml", POD);
    s.kubectl(&["create", "-f", f.to_str().unwrap()]).ok();
    let again = s.kubectl(&["create", "-f", f.to_str().unwrap()]);
    assert!(
        again
            .stderr
            .contains("Error from server (AlreadyExists): error when creating"),
        "{}",
        again.stderr
    );
    assert!(
        again.stderr.contains("pods \"web\" already exists"),
        "{}",
        again.stderr
    );

    let bad = "apiVersion: v1
kind: Pod
metadata:
  name: bad
spec:
  containers:
  - name: Bad_Name
  - name: ok
    image: img-a
  - name: ok
    image: img-b
";
    let f = s.file("bad.yaml", bad);
    let out = s.kubectl(&["create", "-f", f.to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("The Pod \"bad\" is invalid:"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("spec.containers[0].image: Required value"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("spec.containers[0].name: Invalid value: \"Bad_Name\""),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("spec.containers[2].name: Duplicate value: \"ok\""),
        "{}",
        out.stderr
    );

    let unknown = POD.replace("spec:\n", "spec:\n  foo: bar\n");
    let f = s.file("unknown.yaml", &unknown);
    let out = s.kubectl(&["create", "-f", f.to_str().unwrap()]);
    assert!(
        out.stderr
            .contains("Error from server (BadRequest): error when creating"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("strict decoding error: unknown field \"spec.foo\""),
        "{}",
        out.stderr
    );

    let nocontainers = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: empty\nspec: {}\n";
    let f = s.file("empty.yaml", nocontainers);
    let out = s.kubectl(&["create", "-f", f.to_str().unwrap()]);
    assert!(
        out.stderr.contains("spec.containers: Required value"),
        "{}",
        out.stderr
    );

    let badname = POD.replace("name: web\n  labels", "name: Web_1\n  labels");
    let f = s.file("badname.yaml", &badname);
    let out = s.kubectl(&["create", "-f", f.to_str().unwrap()]);
    assert!(
        out.stderr
            .contains("metadata.name: Invalid value: \"Web_1\""),
        "{}",
        out.stderr
    );

    let typed = POD.replace("containerPort: 8080", "containerPort: true");
    let f = s.file("typed.yaml", &typed);
    let out = s.kubectl(&["create", "-f", f.to_str().unwrap()]);
    assert!(
        out.stderr
            .contains("Pod in version \"v1\" cannot be handled as a Pod:"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("spec.containers[0].ports[0].containerPort"),
        "{}",
        out.stderr
    );

    let malformed = s.file("malformed.yaml", "apiVersion: v1\nkind: Pod\nmetadata: [\n");
    let out = s.kubectl(&["create", "-f", malformed.to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("error"), "{}", out.stderr);

    // Nothing invalid was stored.
    let names = s.kubectl(&["get", "pods", "-o", "name"]).ok().stdout;
    assert_eq!(names.trim(), "pod/web");

    // Credentials are required.
    let out = s.kubectl(&["--token", "wrong", "get", "pods"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("Unauthorized"), "{}", out.stderr);
}

#[test]
fn restart_reuses_data_and_credentials() {
    let mut s = Skiff::bare();
    let f = s.file("pod.yaml", POD);
    s.kubectl(&["apply", "-f", f.to_str().unwrap()]).ok();
    let kc_before = std::fs::read_to_string(&s.kubeconfig).unwrap();
    let status = s.stop().expect("was running");
    assert!(status.success(), "clean shutdown on SIGTERM: {status:?}");
    s.launch();
    let kc_after = std::fs::read_to_string(&s.kubeconfig).unwrap();
    let token = |kc: &str| {
        kc.lines()
            .find(|l| l.contains("token:"))
            .unwrap()
            .to_string()
    };
    assert_eq!(token(&kc_before), token(&kc_after));
    let out = eventually(10, || {
        let o = s.kubectl(&["get", "pods", "-o", "name"]);
        (o.code == 0).then_some(o.stdout)
    });
    assert_eq!(out.trim(), "pod/web");
}
