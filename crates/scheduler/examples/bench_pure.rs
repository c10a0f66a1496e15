//! Micro benchmark of the pure decision path: 5,000 nodes, 50,000 small pods, each scheduled with
//! `schedule_one` and then assumed onto its node with `Snapshot::add_pod`.
//!
//! Run: `cargo run --release -p skiff-scheduler --example bench_pure`

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;
use skiff_scheduler::{Snapshot, schedule_one};
use std::time::Instant;

const NODES: usize = 5_000;
const PODS: usize = 50_000;

fn node(i: usize) -> Node {
    let mut images = vec![
        json!({"names": ["registry.local/pause:3.9"], "sizeBytes": 300_000}),
        json!({"names": ["registry.local/agent:v1"], "sizeBytes": 120i64 << 20}),
    ];
    // A few application images, spread unevenly.
    for (k, name) in ["web:v1", "api:v2", "db:16", "cache:7"].iter().enumerate() {
        if (i + k).is_multiple_of(k + 2) {
            images.push(json!({"names": [format!("registry.local/{name}")], "sizeBytes": (200i64 + 150 * k as i64) << 20}));
        }
    }
    serde_json::from_value(json!({
        "metadata": {"name": format!("node-{i:05}"), "labels": {
            "kubernetes.io/hostname": format!("node-{i:05}"),
            "topology.kubernetes.io/zone": format!("zone-{}", i % 3),
            "node.kubernetes.io/instance-type": "m5.8xlarge",
        }},
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "500Gi"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "500Gi"},
            "conditions": [{"type": "Ready", "status": "True"}],
            "images": images,
        }
    }))
    .expect("node")
}

fn pod(i: usize) -> Pod {
    let image = ["web:v1", "api:v2", "db:16", "cache:7", "other:1"][i % 5];
    let cpu = ["50m", "100m", "250m"][i % 3];
    let mem = ["64Mi", "128Mi", "256Mi"][i % 3];
    serde_json::from_value(json!({
        "metadata": {"name": format!("pod-{i}"), "namespace": "bench"},
        "spec": {
            "schedulerName": "default-scheduler",
            "containers": [{
                "name": "app",
                "image": format!("registry.local/{image}"),
                "resources": {"requests": {"cpu": cpu, "memory": mem}},
            }],
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            ],
        }
    }))
    .expect("pod")
}

fn main() {
    let nodes: Vec<Node> = (0..NODES).map(node).collect();
    let t0 = Instant::now();
    let mut snapshot = Snapshot::from_nodes(&nodes);
    let build = t0.elapsed();
    let pods: Vec<Pod> = (0..PODS).map(pod).collect();

    let t0 = Instant::now();
    let mut start = 0usize;
    let mut evaluated = 0usize;
    let mut failed = 0usize;
    for (i, p) in pods.iter().enumerate() {
        match schedule_one(p, &snapshot, start, i as u64) {
            Ok(placement) => {
                start = placement.next_start_index;
                evaluated += placement.evaluated;
                snapshot.add_pod(placement.node_index, &placement.requests);
            }
            Err(e) => {
                start = e.next_start_index;
                failed += 1;
            }
        }
    }
    let elapsed = t0.elapsed();

    let counts: Vec<i64> = snapshot.nodes().iter().map(|n| n.pod_count()).collect();
    let max = counts.iter().max().copied().unwrap_or(0);
    let min = counts.iter().min().copied().unwrap_or(0);
    println!(
        "snapshot: {NODES} nodes built in {build:?}, ~{:.1} MiB",
        snapshot.approx_memory_bytes() as f64 / (1024.0 * 1024.0)
    );
    println!(
        "scheduled {} pods ({failed} unschedulable) in {elapsed:?}: {:.0} pods/s, {:.1} µs/pod, {:.0} nodes evaluated/pod",
        PODS - failed,
        PODS as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / PODS as f64,
        evaluated as f64 / (PODS - failed).max(1) as f64,
    );
    println!("pods per node: min {min}, max {max}");
}
