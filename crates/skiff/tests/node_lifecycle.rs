//! The node lifecycle controller through the real `skiff up`: a node whose agent stops reporting
//! turns NotReady/Unknown and is tainted; reporting again clears the taints.

mod common;

use common::{Skiff, eventually, squash, table};

#[test]
fn a_silent_node_goes_unknown_and_is_tainted() {
    let s = Skiff::start_with(&["--disable", "scheduler", "--node-monitor-grace-period", "2"]);
    let node = serde_json::json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "status": {"capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                   "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                   "message": "kubelet is posting ready status",
                                   "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                                   "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    });
    let f = s.file("node.json", &node.to_string());
    s.kubectl(&["create", "-f", f.to_str().unwrap()]).ok();
    assert_eq!(
        table(&s.kubectl(&["get", "nodes"]).ok().stdout)[1][1],
        "Ready"
    );

    // Nothing renews the node's lease: after the grace period it is Unknown.
    let row = eventually(30, || {
        let t = table(&s.kubectl(&["get", "nodes"]).ok().stdout);
        (t[1][1] == "NotReady").then(|| t[1].clone())
    });
    assert_eq!(row[0], "n1");
    let d = squash(&s.kubectl(&["describe", "node", "n1"]).ok().stdout);
    assert!(d.contains("Ready Unknown"), "{d}");
    assert!(
        d.contains("NodeStatusUnknown Kubelet stopped posting node status."),
        "{d}"
    );
    let taints = eventually(30, || {
        let t = s
            .kubectl(&[
                "get",
                "node",
                "n1",
                "-o",
                "jsonpath={range .spec.taints[*]}{.key}:{.effect} {end}",
            ])
            .ok()
            .stdout;
        t.contains("NoExecute").then_some(t)
    });
    assert_eq!(
        taints.trim(),
        "node.kubernetes.io/unreachable:NoSchedule node.kubernetes.io/unreachable:NoExecute"
    );

    // The node reports Ready again (as its agent would): the taints go.
    let patch = r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","message":"kubelet is posting ready status","lastHeartbeatTime":"2026-01-01T00:10:00Z"}]}}"#;
    s.kubectl(&["patch", "node", "n1", "--subresource=status", "-p", patch])
        .ok();
    eventually(30, || {
        let t = s
            .kubectl(&["get", "node", "n1", "-o", "jsonpath={.spec.taints}"])
            .ok()
            .stdout;
        (!t.contains("unreachable")).then_some(())
    });
}
