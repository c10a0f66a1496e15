//! Services, Endpoints and EndpointSlices with the real kubectl (its `create service` generator
//! sends protobuf) and the kube client: tables, defaulting, validation, cluster IP and node port
//! allocation (conflicts, release, dry runs, restarts) and the `kubernetes` Service.

mod common;

use std::time::Duration;

use common::{Skiff, squash, table};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

const NODE_PORT_SVC: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: np
spec:
  type: NodePort
  selector:
    app: np
  ports:
  - name: http
    port: 80
    targetPort: 8080
    nodePort: 30080
  - name: https
    port: 443
";

/// An EndpointSlice and an Endpoints object for the `web` Service made by
/// `kubectl create service clusterip web --tcp=80:8080` (its port is named `80-8080`).
const WEB_ENDPOINTS: &str = "\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc12
  labels:
    kubernetes.io/service-name: web
    endpointslice.kubernetes.io/managed-by: test
addressType: IPv4
ports:
- name: 80-8080
  port: 8080
  protocol: TCP
endpoints:
- addresses: [10.244.0.5]
  conditions: {ready: true}
- addresses: [10.244.0.6]
  conditions: {ready: true}
---
apiVersion: v1
kind: Endpoints
metadata:
  name: web
subsets:
- addresses: [{ip: 10.244.0.5}, {ip: 10.244.0.6}]
  ports: [{name: 80-8080, port: 8080}]
- addresses: [{ip: 10.244.0.7}, {ip: 10.244.0.8}]
  ports: [{name: 80-8080, port: 8080}]
";

fn in_service_range(ip: &str) -> bool {
    let o: Vec<u8> = ip.split('.').map(|p| p.parse().unwrap()).collect();
    o.len() == 4 && o[0] == 10 && (96..112).contains(&o[1])
}

fn jsonpath(s: &Skiff, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let expr = format!("jsonpath={path}");
    args.extend_from_slice(&["-o", &expr]);
    s.kubectl(&args).ok().stdout
}

#[test]
fn create_service_and_get_tables() {
    let s = Skiff::bare();
    let out = s
        .kubectl(&["create", "service", "clusterip", "web", "--tcp=80:8080"])
        .ok();
    assert_eq!(out.stdout.trim(), "service/web created");
    let rows = table(&s.kubectl(&["get", "svc"]).ok().stdout);
    assert_eq!(
        rows[0],
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert_eq!(
        rows[1][..5],
        ["kubernetes", "ClusterIP", "10.96.0.1", "<none>", "443/TCP"]
    );
    assert_eq!(rows[2][0], "web");
    assert_eq!(rows[2][1], "ClusterIP");
    assert!(in_service_range(&rows[2][2]), "{:?}", rows[2]);
    assert_eq!(rows[2][3..5], ["<none>", "80/TCP"]);
    let wide = table(&s.kubectl(&["get", "svc", "-o", "wide"]).ok().stdout);
    assert_eq!(wide[0].last().unwrap(), "SELECTOR");
    assert_eq!(wide[1].last().unwrap(), "<none>");
    assert_eq!(wide[2].last().unwrap(), "app=web");
    // Defaults, as kubectl -o yaml shows them.
    let spec = jsonpath(
        &s,
        &["svc", "web"],
        "{.spec.sessionAffinity} {.spec.ipFamilyPolicy} {.spec.ipFamilies} {.spec.internalTrafficPolicy} {.spec.ports[0].protocol} {.spec.ports[0].targetPort} {.spec.ports[0].name}",
    );
    assert_eq!(spec, "None SingleStack [\"IPv4\"] Cluster TCP 8080 80-8080");
    // Headless and ExternalName services print as Kubernetes prints them.
    s.kubectl(&[
        "create",
        "service",
        "clusterip",
        "hl",
        "--clusterip=None",
        "--tcp=5432",
    ])
    .ok();
    s.kubectl(&[
        "create",
        "service",
        "externalname",
        "db",
        "--external-name=db.example.com",
    ])
    .ok();
    let out = squash(&s.kubectl(&["get", "svc", "hl", "db"]).ok().stdout);
    assert!(out.contains("hl ClusterIP None <none> 5432/TCP"), "{out}");
    assert!(
        out.contains("db ExternalName <none> db.example.com <none>"),
        "{out}"
    );
    // Field selectors Kubernetes supports on services.
    let names = s
        .kubectl(&[
            "get",
            "svc",
            "--field-selector",
            "spec.type=ExternalName",
            "-o",
            "name",
        ])
        .ok()
        .stdout;
    assert_eq!(names.trim(), "service/db");
    let names = s
        .kubectl(&[
            "get",
            "svc",
            "-A",
            "--field-selector",
            "metadata.name=kubernetes,metadata.namespace=default",
            "-o",
            "name",
        ])
        .ok()
        .stdout;
    assert_eq!(names.trim(), "service/kubernetes");
}

#[test]
fn apply_node_port_service() {
    let s = Skiff::bare();
    let out = s.apply(NODE_PORT_SVC).ok();
    assert_eq!(out.stdout.trim(), "service/np created");
    let ports = jsonpath(&s, &["svc", "np"], "{.spec.ports[1].nodePort}");
    let https: i32 = ports.trim().parse().unwrap();
    assert!((30000..=32767).contains(&https));
    let rows = table(&s.kubectl(&["get", "svc", "np"]).ok().stdout);
    assert_eq!(rows[1][1], "NodePort");
    assert_eq!(rows[1][3], "<none>");
    assert_eq!(rows[1][4], format!("80:30080/TCP,443:{https}/TCP"));
    assert_eq!(
        jsonpath(&s, &["svc", "np"], "{.spec.externalTrafficPolicy}"),
        "Cluster"
    );
    // Applying the same manifest again keeps the allocated values.
    assert_eq!(
        s.apply(NODE_PORT_SVC).ok().stdout.trim(),
        "service/np unchanged"
    );
    let labelled = NODE_PORT_SVC.replace("  name: np\n", "  name: np\n  labels: {tier: fe}\n");
    assert_eq!(
        s.apply(&labelled).ok().stdout.trim(),
        "service/np configured"
    );
    assert_eq!(
        jsonpath(&s, &["svc", "np"], "{.spec.ports[*].nodePort}"),
        format!("30080 {https}")
    );
    // A strategic merge patch merges ports by number.
    s.kubectl(&[
        "patch",
        "svc",
        "np",
        "-p",
        r#"{"spec":{"ports":[{"port":443,"targetPort":8443}]}}"#,
    ])
    .ok();
    assert_eq!(
        jsonpath(&s, &["svc", "np"], "{.spec.ports[*].targetPort}"),
        "8080 8443"
    );
    // LoadBalancer: node ports, no external IP.
    let lb = NODE_PORT_SVC
        .replace("name: np", "name: lb")
        .replace("NodePort", "LoadBalancer")
        .replace("nodePort: 30080", "nodePort: 30081");
    s.apply(&lb).ok();
    let rows = table(&s.kubectl(&["get", "svc", "lb"]).ok().stdout);
    assert_eq!(
        (rows[1][1].as_str(), rows[1][3].as_str()),
        ("LoadBalancer", "<pending>")
    );
    assert!(rows[1][4].starts_with("80:30081/TCP,443:"), "{:?}", rows[1]);
}

#[test]
fn describe_and_endpoint_tables() {
    let s = Skiff::bare();
    s.kubectl(&["create", "service", "clusterip", "web", "--tcp=80:8080"])
        .ok();
    let out = s.apply(WEB_ENDPOINTS).ok();
    assert!(
        out.stdout
            .contains("endpointslice.discovery.k8s.io/web-abc12 created")
            && out.stdout.contains("endpoints/web created"),
        "{}",
        out.stdout
    );
    let d = s.kubectl(&["describe", "svc", "web"]).ok().stdout;
    let d = squash(&d);
    assert!(
        d.contains(
            "Port: 80-8080 80/TCP TargetPort: 8080/TCP Endpoints: 10.244.0.5:8080,10.244.0.6:8080"
        ),
        "{d}"
    );
    let d = squash(&s.kubectl(&["describe", "svc", "kubernetes"]).ok().stdout);
    let port = s.server.rsplit(':').next().unwrap().to_string();
    assert!(d.contains(&format!("Endpoints: 127.0.0.1:{port}")), "{d}");

    let rows = table(&s.kubectl(&["get", "endpoints"]).ok().stdout);
    assert_eq!(rows[0], ["NAME", "ENDPOINTS", "AGE"]);
    let ep = format!("127.0.0.1:{port}");
    assert_eq!(rows[1][..2], ["kubernetes", ep.as_str()]);
    assert_eq!(
        rows[2][..5],
        [
            "web",
            "10.244.0.5:8080,10.244.0.6:8080,10.244.0.7:8080",
            "+",
            "1",
            "more..."
        ]
    );
    let rows = table(&s.kubectl(&["get", "endpointslices"]).ok().stdout);
    assert_eq!(
        rows[0],
        ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    );
    assert_eq!(
        rows[1][..4],
        ["kubernetes", "IPv4", port.as_str(), "127.0.0.1"]
    );
    assert_eq!(
        rows[2][..4],
        ["web-abc12", "IPv4", "8080", "10.244.0.5,10.244.0.6"]
    );
    let both = s
        .kubectl(&[
            "get",
            "ep,endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
        ])
        .ok();
    assert!(
        both.stdout
            .contains("endpointslice.discovery.k8s.io/web-abc12"),
        "{}",
        both.stdout
    );
    // The kubernetes EndpointSlice is labelled the way kube-apiserver labels it.
    assert_eq!(
        jsonpath(&s, &["endpointslice", "kubernetes"], "{.metadata.labels}"),
        r#"{"kubernetes.io/service-name":"kubernetes"}"#
    );
    // An Endpoints object goes with its Service.
    s.kubectl(&["delete", "svc", "web"]).ok();
    let left = s.kubectl(&["get", "endpoints", "web"]);
    assert_eq!(left.code, 1, "{}", left.stdout);
    assert!(left.stderr.contains("endpoints \"web\" not found"));
    // Bad endpoints are refused with Kubernetes' causes.
    let bad = s.apply(
        "apiVersion: v1\nkind: Endpoints\nmetadata: {name: bad}\nsubsets:\n- addresses: [{ip: 10.0.0}]\n  ports: [{port: 70000}]\n",
    );
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains(
            "subsets[0].addresses[0].ip: Invalid value: \"10.0.0\": must be a valid IP address"
        ) && bad.stderr.contains(
            "subsets[0].ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"
        ),
        "{}",
        bad.stderr
    );
    let bad = s.apply(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: bad}\naddressType: IPX\nendpoints: []\n",
    );
    assert!(
        bad.stderr.contains("addressType: Unsupported value: \"IPX\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""),
        "{}",
        bad.stderr
    );
}

#[test]
fn invalid_services_are_refused() {
    let s = Skiff::bare();
    let bad = s.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec:\n  selector: {app: x}\n  ports:\n  - port: 0\n  - port: 80\n    targetPort: Bad_Name\n    protocol: ICMP\n",
    );
    assert_eq!(bad.code, 1);
    for cause in [
        "The Service \"bad\" is invalid:",
        "* spec.ports[0].name: Required value",
        "* spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
        "* spec.ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        "* spec.ports[1].targetPort: Invalid value: \"Bad_Name\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
    ] {
        assert!(
            bad.stderr.contains(cause),
            "missing {cause:?} in\n{}",
            bad.stderr
        );
    }
    let dup = s.kubectl(&[
        "create",
        "service",
        "clusterip",
        "dup",
        "--tcp=80:80,443,443",
    ]);
    assert!(
        dup.stderr.contains("spec.ports[2].name: Duplicate value: \"443\"")
            && dup.stderr.contains("spec.ports[2]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:443"),
        "{}",
        dup.stderr
    );
    let en = s.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: en}\nspec:\n  type: ExternalName\n  clusterIP: 10.96.0.77\n",
    );
    assert!(
        en.stderr
            .contains("spec.clusterIPs: Forbidden: may not be set for ExternalName services")
            && en.stderr.contains("spec.externalName: Required value"),
        "{}",
        en.stderr
    );
    let np = s.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: cip}\nspec:\n  ports: [{port: 80, nodePort: 30001}]\n",
    );
    assert!(
        np.stderr.contains(
            "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"
        ),
        "{}",
        np.stderr
    );
    let name = s.kubectl(&["create", "service", "clusterip", "1web", "--tcp=80"]);
    assert!(
        name.stderr.contains("metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character"),
        "{}",
        name.stderr
    );
    // Nothing of the refused services was kept.
    let rows = table(&s.kubectl(&["get", "svc"]).ok().stdout);
    assert_eq!(rows.len(), 2, "{rows:?}");
}

#[test]
fn allocation_conflicts_and_release() {
    let s = Skiff::bare();
    s.kubectl(&[
        "create",
        "service",
        "nodeport",
        "a",
        "--tcp=80:8080",
        "--node-port=30080",
    ])
    .ok();
    let taken = s.kubectl(&[
        "create",
        "service",
        "nodeport",
        "b",
        "--tcp=80:8080",
        "--node-port=30080",
    ]);
    assert_eq!(taken.code, 1);
    assert!(
        taken.stderr.contains("Service \"b\" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"),
        "{}",
        taken.stderr
    );
    let range = s.kubectl(&[
        "create",
        "service",
        "nodeport",
        "b",
        "--tcp=80:8080",
        "--node-port=8080",
    ]);
    assert!(
        range.stderr.contains("spec.ports[0].nodePort: Invalid value: 8080: provided port is not in the valid range. The range of valid ports is 30000-32767"),
        "{}",
        range.stderr
    );
    let ip = s.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: c}\nspec:\n  clusterIP: 10.96.0.1\n  ports: [{port: 80}]\n",
    );
    assert!(
        ip.stderr.contains("The Service \"c\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.96.0.1\"}: failed to allocate IP 10.96.0.1: provided IP is already allocated"),
        "{}",
        ip.stderr
    );
    let ip = s.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: c}\nspec:\n  clusterIP: 10.0.0.1\n  ports: [{port: 80}]\n",
    );
    assert!(
        ip.stderr.contains("spec.clusterIPs: Invalid value: []string{\"10.0.0.1\"}: failed to allocate IP 10.0.0.1: provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12"),
        "{}",
        ip.stderr
    );
    // A requested free address is given.
    s.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: c}\nspec:\n  clusterIP: 10.96.0.20\n  ports: [{port: 80}]\n",
    )
    .ok();
    assert_eq!(
        jsonpath(&s, &["svc", "c"], "{.spec.clusterIPs[0]}"),
        "10.96.0.20"
    );
    // The cluster IP may not change.
    let changed = s.kubectl(&[
        "patch",
        "svc",
        "c",
        "-p",
        r#"{"spec":{"clusterIP":"10.96.0.21"}}"#,
    ]);
    assert_eq!(changed.code, 1);
    assert!(
        changed.stderr.contains("The Service \"c\" is invalid: spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.21\"}: may not change once set"),
        "{}",
        changed.stderr
    );
    // A dry run allocates nothing.
    let dry = s
        .kubectl(&[
            "create",
            "service",
            "nodeport",
            "d",
            "--tcp=80",
            "--node-port=30090",
            "--dry-run=server",
            "-o",
            "name",
        ])
        .ok();
    assert_eq!(dry.stdout.trim(), "service/d");
    s.kubectl(&[
        "create",
        "service",
        "nodeport",
        "d",
        "--tcp=80",
        "--node-port=30090",
    ])
    .ok();
    // Deleting a service frees its node port and cluster IP.
    s.kubectl(&["delete", "svc", "a"]).ok();
    s.kubectl(&[
        "create",
        "service",
        "nodeport",
        "b",
        "--tcp=80:8080",
        "--node-port=30080",
    ])
    .ok();
    s.kubectl(&["delete", "svc", "c"]).ok();
    s.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: c2}\nspec:\n  clusterIP: 10.96.0.20\n  ports: [{port: 80}]\n",
    )
    .ok();
    // Turning a NodePort service into a ClusterIP one releases its node ports.
    s.kubectl(&[
        "patch",
        "svc",
        "d",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ])
    .ok();
    assert_eq!(jsonpath(&s, &["svc", "d"], "{.spec.ports[0].nodePort}"), "");
    s.kubectl(&[
        "create",
        "service",
        "nodeport",
        "e",
        "--tcp=80",
        "--node-port=30090",
    ])
    .ok();
    // Deleting a namespace deletes its services and frees what they held.
    s.kubectl(&["create", "namespace", "tmp"]).ok();
    s.kubectl(&[
        "create",
        "service",
        "nodeport",
        "f",
        "-n",
        "tmp",
        "--tcp=80",
        "--node-port=30100",
    ])
    .ok();
    s.kubectl(&["delete", "namespace", "tmp", "--timeout=30s"])
        .ok();
    s.kubectl(&[
        "create",
        "service",
        "nodeport",
        "f",
        "--tcp=80",
        "--node-port=30100",
    ])
    .ok();
}

#[test]
fn allocations_survive_a_restart() {
    let mut s = Skiff::bare();
    s.kubectl(&[
        "create",
        "service",
        "nodeport",
        "a",
        "--tcp=80",
        "--node-port=30080",
    ])
    .ok();
    s.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec:\n  clusterIP: 10.96.0.20\n  ports: [{port: 80}]\n",
    )
    .ok();
    let old_port = s.server.rsplit(':').next().unwrap().to_string();
    s.stop();
    s.launch();
    let port = s.server.rsplit(':').next().unwrap().to_string();
    let taken = s.kubectl(&[
        "create",
        "service",
        "nodeport",
        "c",
        "--tcp=80",
        "--node-port=30080",
    ]);
    assert!(
        taken.stderr.contains("provided port is already allocated"),
        "{}",
        taken.stderr
    );
    let ip = s.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: d}\nspec:\n  clusterIP: 10.96.0.20\n  ports: [{port: 80}]\n",
    );
    assert!(
        ip.stderr.contains("provided IP is already allocated"),
        "{}",
        ip.stderr
    );
    // The kubernetes service follows the server to its new port.
    let eps = jsonpath(
        &s,
        &["endpoints", "kubernetes"],
        "{.subsets[0].ports[0].port}",
    );
    assert_eq!(eps, port);
    let target = jsonpath(&s, &["svc", "kubernetes"], "{.spec.ports[0].targetPort}");
    assert_eq!(target, port, "old port was {old_port}");
    assert_eq!(
        jsonpath(&s, &["endpointslice", "kubernetes"], "{.ports[0].port}"),
        port
    );
    assert_eq!(
        jsonpath(&s, &["svc", "kubernetes"], "{.spec.clusterIP}"),
        "10.96.0.1"
    );
}

#[tokio::test]
async fn endpoint_slices_through_the_kube_client() {
    let s = Skiff::bare();
    let slices: Api<EndpointSlice> = Api::default_namespaced(s.client().await);
    let list = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=kubernetes"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].address_type, "IPv4");
    let rv = list.metadata.resource_version.clone().unwrap();
    let mut watch = slices
        .watch(
            &WatchParams::default().labels("kubernetes.io/service-name=web"),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.0.9"], "conditions": {"ready": true}}],
        "ports": [{"port": 8080}],
    }))
    .unwrap();
    let created = slices.create(&PostParams::default(), &slice).await.unwrap();
    // Defaults: port name "" and protocol TCP; generation 1.
    let port = &created.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.protocol.as_deref()),
        (Some(""), Some("TCP"))
    );
    assert_eq!(created.metadata.generation, Some(1));
    let ev = tokio::time::timeout(Duration::from_secs(10), watch.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match ev {
        WatchEvent::Added(o) => assert_eq!(o.metadata.name.as_deref(), Some("web-1")),
        other => panic!("unexpected {other:?}"),
    }
    // A change of endpoints moves the generation on.
    let mut changed = created.clone();
    changed.endpoints[0].addresses = vec!["10.244.0.10".into()];
    let updated = slices
        .replace("web-1", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(updated.metadata.generation, Some(2));
    // The address type may not change.
    let mut v6 = updated.clone();
    v6.address_type = "IPv6".into();
    v6.endpoints[0].addresses = vec!["fd00::10".into()];
    match slices.replace("web-1", &PostParams::default(), &v6).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422);
            assert!(
                e.message
                    .contains("addressType: Invalid value: \"IPv6\": field is immutable"),
                "{}",
                e.message
            );
        }
        other => panic!("expected a 422, got {other:?}"),
    }
    // Field selectors on metadata work for slices too.
    let by_name = slices
        .list(&ListParams::default().fields("metadata.name=web-1"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
}
