//! More kubectl verbs: replace, patch, wait, single-object watch, get all, dry runs.

mod common;

use common::{Skiff, table};

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  containers:
  - name: web
    image: busybox:1
    ports:
    - containerPort: 8080
";

#[test]
fn replace_and_patch() {
    let s = Skiff::bare();
    let f = s.file("pod.yaml", POD);
    s.kubectl(&["create", "-f", f.to_str().unwrap()]).ok();

    let live = s.kubectl(&["get", "pod", "web", "-o", "yaml"]).ok().stdout;
    let edited = live.replace("app: web", "app: web2");
    let f2 = s.file("live.yaml", &edited);
    assert_eq!(
        s.kubectl(&["replace", "-f", f2.to_str().unwrap()])
            .ok()
            .stdout
            .trim(),
        "pod/web replaced"
    );
    // The same file again carries a stale resourceVersion.
    let stale = s.kubectl(&["replace", "-f", f2.to_str().unwrap()]);
    assert_eq!(stale.code, 1);
    assert!(
        stale
            .stderr
            .contains("Error from server (Conflict): error when replacing")
            && stale.stderr.contains(
                "Operation cannot be fulfilled on pods \"web\": the object has been modified"
            ),
        "{}",
        stale.stderr
    );

    let out = s
        .kubectl(&[
            "patch",
            "pod",
            "web",
            "-p",
            r#"{"metadata":{"labels":{"p":"1"}}}"#,
        ])
        .ok();
    assert_eq!(out.stdout.trim(), "pod/web patched");
    let out = s
        .kubectl(&[
            "patch",
            "pod",
            "web",
            "--type=merge",
            "-p",
            r#"{"metadata":{"labels":{"p":null}}}"#,
        ])
        .ok();
    assert_eq!(out.stdout.trim(), "pod/web patched");
    let out = s
        .kubectl(&[
            "patch",
            "pod",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/metadata/labels/j","value":"2"}]"#,
        ])
        .ok();
    assert_eq!(out.stdout.trim(), "pod/web patched");
    let out = s
        .kubectl(&[
            "patch",
            "pod",
            "web",
            "-p",
            r#"{"metadata":{"labels":{"j":"2"}}}"#,
        ])
        .ok();
    assert_eq!(out.stdout.trim(), "pod/web patched (no change)");
    let labels = s
        .kubectl(&["get", "pod", "web", "-o", "jsonpath={.metadata.labels}"])
        .ok()
        .stdout;
    assert_eq!(labels, r#"{"app":"web2","j":"2"}"#);

    let dry = s
        .kubectl(&["delete", "pod", "web", "--dry-run=server"])
        .ok();
    assert_eq!(dry.stdout.trim(), "pod \"web\" deleted (server dry run)");
    assert_eq!(
        s.kubectl(&["get", "pods", "-o", "name"]).ok().stdout.trim(),
        "pod/web"
    );
}

#[test]
fn wait_for_condition_and_delete() {
    let s = Skiff::bare();
    let f = s.file("pod.yaml", POD);
    s.kubectl(&["create", "-f", f.to_str().unwrap()]).ok();
    let kubeconfig = s.kubeconfig.clone();
    let home = s.dir.path().to_path_buf();
    let waiter = std::thread::spawn(move || {
        common::kubectl_with(
            &kubeconfig,
            &home,
            &["wait", "--for=condition=Ready", "pod/web", "--timeout=30s"],
            None,
        )
    });
    std::thread::sleep(std::time::Duration::from_millis(800));
    // Flip the Ready condition through the status subresource, as an agent would.
    let patch = r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#;
    s.kubectl(&[
        "patch",
        "pod",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        patch,
    ])
    .ok();
    let out = waiter.join().unwrap().ok();
    assert_eq!(out.stdout.trim(), "pod/web condition met");

    let kubeconfig = s.kubeconfig.clone();
    let home = s.dir.path().to_path_buf();
    let waiter = std::thread::spawn(move || {
        common::kubectl_with(
            &kubeconfig,
            &home,
            &["wait", "--for=delete", "pod/web", "--timeout=30s"],
            None,
        )
    });
    std::thread::sleep(std::time::Duration::from_millis(800));
    s.kubectl(&["delete", "pod", "web", "--wait=false"]).ok();
    let out = waiter.join().unwrap().ok();
    assert_eq!(out.stdout.trim(), "pod/web condition met");
}

#[test]
fn get_all_and_several_kinds() {
    let s = Skiff::bare();
    let f = s.file("pod.yaml", POD);
    s.kubectl(&["create", "-f", f.to_str().unwrap()]).ok();
    let all = s.kubectl(&["get", "all"]).ok().stdout;
    // Pods and services are in the "all" category: one table per kind, names prefixed.
    let rows = table(&all);
    assert_eq!(rows[0], ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(rows[1][0], "pod/web");
    let squashed = common::squash(&all);
    assert!(
        squashed.contains("NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE")
            && squashed.contains("service/kubernetes ClusterIP 10.96.0.1 <none> 443/TCP"),
        "{all}"
    );
    let out = s.kubectl(&["get", "po,ns", "-o", "name"]).ok().stdout;
    assert!(
        out.contains("pod/web") && out.contains("namespace/default"),
        "{out}"
    );
    let empty = s.kubectl(&["get", "nodes"]).ok();
    assert_eq!(empty.stderr.trim(), "No resources found");
    let none = s.kubectl(&["get", "events", "-n", "kube-system"]).ok();
    assert_eq!(
        none.stderr.trim(),
        "No resources found in kube-system namespace."
    );
}

#[test]
fn watch_one_pod_sees_its_changes() {
    let s = Skiff::bare();
    let f = s.file("pod.yaml", POD);
    s.kubectl(&["create", "-f", f.to_str().unwrap()]).ok();
    let w = s.watch(&["pod", "web", "-o", "name"]);
    // The first line is the GET; later lines are watch events (kubectl drops the synthetic ADDED).
    w.wait_for(20, "the pod", |l| l == "pod/web");
    s.kubectl(&["label", "pod", "web", "x=1"]).ok();
    common::eventually(20, || (w.lines().len() >= 2).then_some(()));
    assert_eq!(w.lines()[..2], ["pod/web", "pod/web"]);
}

#[test]
fn lists_and_unknown_kinds() {
    let s = Skiff::bare();
    let list = r#"{"apiVersion":"v1","kind":"List","items":[
        {"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"containers":[{"name":"c","image":"x"}]}},
        {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"demo"}}]}"#;
    let out = s.kubectl_stdin(&["create", "-f", "-"], Some(list)).ok();
    assert_eq!(out.stdout.trim(), "pod/a created\nnamespace/demo created");
    let out = s.kubectl_stdin(
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: Pdo\nmetadata:\n  name: x\n"),
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("no matches for kind \"Pdo\" in version \"v1\""),
        "{}",
        out.stderr
    );
}
