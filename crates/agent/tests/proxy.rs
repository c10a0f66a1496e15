//! The service proxy against real sockets: tiny TCP backends on loopback, a node-port listener
//! on 127.0.0.1, the routing table fed by the test ([`proxy::serve`]) or, in the last test,
//! through a fake API server serving Services and EndpointSlices ([`proxy::start`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde_json::{Value, json};
use skiff_agent::proxy::{
    self, Endpoint, ProxyConfig, ProxyHandle, RoutingTable, ServicePortEntry, ServicePortKey,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A backend: answers each connection with its id on a line, then echoes until EOF.
struct Backend {
    id: String,
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start(id: &str) -> Backend {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Backend::serve(id, l)
    }

    fn serve(id: &str, l: TcpListener) -> Backend {
        let addr = l.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let (h, name) = (hits.clone(), id.to_string());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                h.fetch_add(1, Ordering::SeqCst);
                let line = format!("{name}\n");
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    if w.write_all(line.as_bytes()).await.is_err() {
                        return;
                    }
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        Backend {
            id: id.to_string(),
            addr,
            hits,
            task,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A loopback port nobody listens on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One request: send a line, half-close, read all. Returns the backend's id and the echo.
async fn request(addr: SocketAddr) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"ping\n").await?;
    s.shutdown().await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .map_err(|_| std::io::Error::other("request timed out"))??;
    let (id, rest) = out
        .split_once('\n')
        .ok_or_else(|| std::io::Error::other(format!("no id line in {out:?}")))?;
    Ok((id.to_string(), rest.to_string()))
}

fn key() -> ServicePortKey {
    ServicePortKey::new("default", "web", "http")
}

fn entry(node_port: u16, endpoints: Vec<Endpoint>) -> ServicePortEntry {
    let mut e = ServicePortEntry::new(key(), 80, endpoints);
    e.node_port = Some(node_port);
    e
}

fn table(entries: Vec<ServicePortEntry>) -> Arc<RoutingTable> {
    let mut t = RoutingTable::default();
    for e in entries {
        t.insert(e);
    }
    Arc::new(t)
}

fn not_ready(addr: SocketAddr) -> Endpoint {
    Endpoint {
        addr,
        ready: false,
        serving: false,
        terminating: false,
    }
}

fn loopback_cfg() -> ProxyConfig {
    ProxyConfig {
        nodeport_addresses: vec![LOOPBACK],
        ..ProxyConfig::default()
    }
}

/// Waits until the proxy listens (or not) on `addr`.
async fn wait_listening(h: &ProxyHandle, addr: SocketAddr, on: bool) {
    let mut w = h.listeners_watch();
    tokio::time::timeout(
        Duration::from_secs(10),
        w.wait_for(|set| set.contains(&addr) == on),
    )
    .await
    .unwrap_or_else(|_| panic!("listener on {addr} never became {on}"))
    .unwrap();
}

async fn serve(t: Arc<RoutingTable>) -> (watch::Sender<Arc<RoutingTable>>, ProxyHandle) {
    let (tx, rx) = watch::channel(t);
    let h = proxy::serve(loopback_cfg(), rx).await.unwrap();
    (tx, h)
}

#[tokio::test]
async fn spreads_over_ready_backends_only() {
    let b: Vec<Backend> =
        futures::future::join_all(["b1", "b2", "b3", "unready"].map(Backend::start)).await;
    let np = free_port();
    let front = SocketAddr::new(LOOPBACK, np);
    let (_tx, h) = serve(table(vec![entry(
        np,
        vec![
            Endpoint::ready(b[0].addr),
            Endpoint::ready(b[1].addr),
            Endpoint::ready(b[2].addr),
            not_ready(b[3].addr),
        ],
    )]))
    .await;
    wait_listening(&h, front, true).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let (id, echo) = request(front).await.unwrap();
        assert_eq!(echo, "ping\n", "half-closed request echoed in full");
        *seen.entry(id).or_default() += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    for backend in &b[..3] {
        assert_eq!(seen[&backend.id], 10, "round robin: {seen:?}");
        assert_eq!(backend.hits(), 10);
    }
    assert_eq!(b[3].hits(), 0, "an unready endpoint gets nothing");
    let m = h.metrics().snapshot(&key());
    assert_eq!(m.accepted, 30);
    assert_eq!(m.no_backends + m.connect_failed, 0);
    let text = h.metrics().render();
    assert!(
        text.contains(
            "skiff_proxy_connections_accepted_total{namespace=\"default\",service=\"web\",port=\"http\"} 30"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "skiff_proxy_backends{namespace=\"default\",service=\"web\",port=\"http\"} 3"
        )
    );
    h.shutdown().await;
    assert!(
        TcpStream::connect(front).await.is_err(),
        "listener closed on shutdown"
    );
}

#[tokio::test]
async fn removed_backend_gets_no_new_connections_but_keeps_open_ones() {
    let b: Vec<Backend> = futures::future::join_all(["b1", "b2", "b3"].map(Backend::start)).await;
    let np = free_port();
    let front = SocketAddr::new(LOOPBACK, np);
    let all: Vec<Endpoint> = b.iter().map(|b| Endpoint::ready(b.addr)).collect();
    let (tx, h) = serve(table(vec![entry(np, all.clone())])).await;
    wait_listening(&h, front, true).await;

    // A long-lived connection.
    let s = TcpStream::connect(front).await.unwrap();
    let mut long = BufReader::new(s);
    let mut line = String::new();
    long.read_line(&mut line).await.unwrap();
    let gone = b
        .iter()
        .position(|b| line == format!("{}\n", b.id))
        .unwrap();

    // Its backend leaves the table.
    let rest: Vec<Endpoint> = all
        .iter()
        .filter(|e| e.addr != b[gone].addr)
        .copied()
        .collect();
    tx.send(table(vec![entry(np, rest)])).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let (id, _) = request(front).await.unwrap();
        assert_ne!(id, b[gone].id, "a removed backend gets no new connection");
        seen.insert(id);
    }
    assert_eq!(seen.len(), 2, "the two others share the load");
    assert_eq!(b[gone].hits(), 1);
    assert_eq!(b.iter().map(Backend::hits).sum::<usize>(), 11);

    // The open connection still works, both ways.
    long.get_mut().write_all(b"still there\n").await.unwrap();
    line.clear();
    long.read_line(&mut line).await.unwrap();
    assert_eq!(line, "still there\n");
    assert_eq!(h.metrics().snapshot(&key()).active, 1);

    // Shutting the proxy down cuts it.
    h.shutdown().await;
    line.clear();
    let n = tokio::time::timeout(Duration::from_secs(5), long.read_line(&mut line))
        .await
        .expect("the relayed connection ends on shutdown")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn dead_backend_is_skipped_without_client_errors() {
    let b: Vec<Backend> = futures::future::join_all(["b1", "b2"].map(Backend::start)).await;
    // A closed port: connects are refused.
    let dead = SocketAddr::new(LOOPBACK, free_port());
    let np = free_port();
    let front = SocketAddr::new(LOOPBACK, np);
    let (tx, h) = serve(table(vec![entry(
        np,
        vec![
            Endpoint::ready(b[0].addr),
            Endpoint::ready(dead),
            Endpoint::ready(b[1].addr),
        ],
    )]))
    .await;
    wait_listening(&h, front, true).await;
    for i in 0..30 {
        let r = request(front).await;
        assert!(r.is_ok(), "request {i} failed: {r:?}");
    }
    assert_eq!(b[0].hits() + b[1].hits(), 30);
    let m = h.metrics().snapshot(&key());
    assert_eq!(m.connect_failed, 0);
    assert_eq!(m.no_backends, 0);
    assert!(m.connect_errors >= 10, "{m:?}");

    // Only dead backends: the client's connection is closed, and counted.
    let dead2 = SocketAddr::new(LOOPBACK, free_port());
    tx.send(table(vec![entry(
        np,
        vec![Endpoint::ready(dead), Endpoint::ready(dead2)],
    )]))
    .unwrap();
    assert!(request(front).await.is_err());
    assert_eq!(h.metrics().snapshot(&key()).connect_failed, 1);
    h.shutdown().await;
}

#[tokio::test]
async fn no_backends_closes_at_once_and_terminating_ones_are_a_fallback() {
    let b = Backend::start("b1").await;
    let np = free_port();
    let front = SocketAddr::new(LOOPBACK, np);
    let (tx, h) = serve(table(vec![entry(np, vec![not_ready(b.addr)])])).await;
    wait_listening(&h, front, true).await;

    let started = std::time::Instant::now();
    let mut s = TcpStream::connect(front).await.unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf))
        .await
        .expect("closed at once");
    assert!(r.is_err() || buf.is_empty(), "{r:?} {buf:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(h.metrics().snapshot(&key()).no_backends, 1);
    assert!(h.metrics().render().contains(
        "skiff_proxy_connections_failed_total{namespace=\"default\",service=\"web\",port=\"http\",reason=\"no_backends\"} 1"
    ));
    assert_eq!(b.hits(), 0);

    // The same endpoint terminating but still serving takes traffic while nothing is ready.
    tx.send(table(vec![entry(
        np,
        vec![Endpoint {
            addr: b.addr,
            ready: false,
            serving: true,
            terminating: true,
        }],
    )]))
    .unwrap();
    let (id, _) = request(front).await.unwrap();
    assert_eq!(id, "b1");
    h.shutdown().await;
}

#[tokio::test]
async fn listeners_follow_the_services() {
    let b = Backend::start("b1").await;
    let (np1, np2) = (free_port(), free_port());
    let (f1, f2) = (
        SocketAddr::new(LOOPBACK, np1),
        SocketAddr::new(LOOPBACK, np2),
    );
    let (tx, h) = serve(table(vec![])).await;
    assert!(h.listeners().is_empty());

    tx.send(table(vec![entry(np1, vec![Endpoint::ready(b.addr)])]))
        .unwrap();
    wait_listening(&h, f1, true).await;
    assert_eq!(request(f1).await.unwrap().0, "b1");

    // An open connection survives its listener's close.
    let mut long = BufReader::new(TcpStream::connect(f1).await.unwrap());
    let mut line = String::new();
    long.read_line(&mut line).await.unwrap();

    // The node port moves: the old listener closes, the new one opens.
    tx.send(table(vec![entry(np2, vec![Endpoint::ready(b.addr)])]))
        .unwrap();
    wait_listening(&h, f2, true).await;
    wait_listening(&h, f1, false).await;
    assert!(TcpStream::connect(f1).await.is_err());
    assert_eq!(request(f2).await.unwrap().0, "b1");
    long.get_mut().write_all(b"x\n").await.unwrap();
    line.clear();
    long.read_line(&mut line).await.unwrap();
    assert_eq!(line, "x\n");

    // A ClusterIP-only Service opens nothing without cluster_ip.
    let mut e = ServicePortEntry::new(
        ServicePortKey::new("default", "inner", ""),
        80,
        vec![Endpoint::ready(b.addr)],
    );
    e.cluster_ips = vec!["10.96.0.10".parse().unwrap()];
    tx.send(table(vec![e])).unwrap();
    wait_listening(&h, f2, false).await;
    assert!(h.listeners().is_empty());
    h.shutdown().await;
    b.task.abort();
}

#[tokio::test]
async fn client_ip_affinity_keeps_one_backend() {
    let b: Vec<Backend> = futures::future::join_all(["b1", "b2", "b3"].map(Backend::start)).await;
    let np = free_port();
    let front = SocketAddr::new(LOOPBACK, np);
    let mut e = entry(np, b.iter().map(|b| Endpoint::ready(b.addr)).collect());
    e.affinity = Some(Duration::from_secs(60));
    let (_tx, h) = serve(table(vec![e])).await;
    wait_listening(&h, front, true).await;
    let first = request(front).await.unwrap().0;
    for _ in 0..10 {
        assert_eq!(request(front).await.unwrap().0, first);
    }
    h.shutdown().await;
}

// ---- Through the API: a fake API server serving Services and EndpointSlices ----

struct FakeApi {
    services: Vec<Value>,
    slices: Vec<Value>,
    events: broadcast::Sender<(&'static str, String)>,
    watches: AtomicUsize,
}

async fn fake_list_or_watch(
    api: Arc<FakeApi>,
    kind: &'static str,
    q: HashMap<String, String>,
) -> Response {
    if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) {
        let rx = api.events.subscribe();
        api.watches.fetch_add(1, Ordering::SeqCst);
        let stream = futures::stream::unfold(rx, move |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok((k, line)) if k == kind => {
                        return Some((Ok::<Bytes, Infallible>(Bytes::from(line + "\n")), rx));
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    let (list_kind, api_version, items) = match kind {
        "services" => ("ServiceList", "v1", api.services.clone()),
        _ => (
            "EndpointSliceList",
            "discovery.k8s.io/v1",
            api.slices.clone(),
        ),
    };
    axum::Json(json!({
        "kind": list_kind,
        "apiVersion": api_version,
        "metadata": {"resourceVersion": "1"},
        "items": items,
    }))
    .into_response()
}

async fn start_fake_api(api: Arc<FakeApi>) -> SocketAddr {
    let app = Router::new()
        .route(
            "/api/v1/services",
            get(
                |State(api): State<Arc<FakeApi>>, Query(q): Query<HashMap<String, String>>| {
                    fake_list_or_watch(api, "services", q)
                },
            ),
        )
        .route(
            "/apis/discovery.k8s.io/v1/endpointslices",
            get(
                |State(api): State<Arc<FakeApi>>, Query(q): Query<HashMap<String, String>>| {
                    fake_list_or_watch(api, "endpointslices", q)
                },
            ),
        )
        .with_state(api);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    addr
}

fn web_service(node_port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default", "resourceVersion": "1"},
        "spec": {
            "type": "NodePort",
            "clusterIP": "10.96.0.10",
            "ports": [{"name": "http", "port": 80, "targetPort": "web", "nodePort": node_port}],
        },
    })
}

fn web_slice(port: u16, endpoints: Value, rv: &str) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-abcde", "namespace": "default", "resourceVersion": rv,
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

/// Two backends on the same port of two loopback addresses (a slice has one port per name).
async fn same_port_backends() -> (Backend, Backend) {
    for _ in 0..20 {
        let l2 = TcpListener::bind("127.0.0.2:0").await.unwrap();
        let port = l2.local_addr().unwrap().port();
        if let Ok(l3) = TcpListener::bind(("127.0.0.3", port)).await {
            return (Backend::serve("pod-a", l2), Backend::serve("pod-b", l3));
        }
    }
    panic!("no common free port on 127.0.0.2 and 127.0.0.3");
}

#[tokio::test]
async fn follows_services_and_endpoint_slices_through_the_api() {
    let (a, b) = same_port_backends().await;
    let port = a.addr.port();
    let np = free_port();
    let front = SocketAddr::new(LOOPBACK, np);
    let (events, _) = broadcast::channel(16);
    let api = Arc::new(FakeApi {
        services: vec![web_service(np)],
        slices: vec![web_slice(
            port,
            json!([
                {"addresses": ["127.0.0.2"], "conditions": {"ready": true}},
                {"addresses": ["127.0.0.3"], "conditions": {"ready": false}},
            ]),
            "1",
        )],
        events,
        watches: AtomicUsize::new(0),
    });
    let addr = start_fake_api(api.clone()).await;
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let h = proxy::start(client, loopback_cfg()).await.unwrap();
    wait_listening(&h, front, true).await;
    for _ in 0..6 {
        assert_eq!(request(front).await.unwrap().0, "pod-a");
    }
    assert_eq!(b.hits(), 0);

    // Both watches are open: pod-b becomes ready.
    tokio::time::timeout(Duration::from_secs(10), async {
        while api.watches.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the proxy watches");
    let modified = json!({"type": "MODIFIED", "object": web_slice(
        port,
        json!([{"addresses": ["127.0.0.2"]}, {"addresses": ["127.0.0.3"]}]),
        "2",
    )});
    api.events
        .send(("endpointslices", modified.to_string()))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while h.table().get(&key()).map(|e| e.backends.len()) != Some(2) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the slice update reaches the table");
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..4 {
        ids.insert(request(front).await.unwrap().0);
    }
    assert_eq!(ids.into_iter().collect::<Vec<_>>(), vec!["pod-a", "pod-b"]);

    // The Service goes: its node port closes.
    let deleted = json!({"type": "DELETED", "object": web_service(np)});
    api.events.send(("services", deleted.to_string())).unwrap();
    wait_listening(&h, front, false).await;
    assert!(h.table().is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn shutdown_with_a_dropped_table_source_still_stops() {
    let np = free_port();
    let front = SocketAddr::new(LOOPBACK, np);
    let b = Backend::start("b1").await;
    let (tx, h) = serve(table(vec![entry(np, vec![Endpoint::ready(b.addr)])])).await;
    wait_listening(&h, front, true).await;
    drop(tx);
    // The last table keeps being served.
    assert_eq!(request(front).await.unwrap().0, "b1");
    tokio::time::timeout(Duration::from_secs(5), h.shutdown())
        .await
        .expect("shutdown returns");
    assert!(TcpStream::connect(front).await.is_err());
}

#[tokio::test]
async fn cluster_ip_mode_rejects_a_bad_interface_name() {
    let (_tx, rx) = watch::channel(table(vec![]));
    let cfg = ProxyConfig {
        cluster_ip: true,
        dummy_interface: "a-name-far-too-long".into(),
        ..loopback_cfg()
    };
    let err = proxy::serve(cfg, rx).await.err().expect("refused");
    assert!(err.contains("invalid dummy interface name"), "{err}");
}

/// Cluster IPs on the dummy interface `skiff-svc-test` (or on `lo` where the kernel has no
/// dummy link type, as the proxy itself falls back): needs root, and removes what it adds.
#[tokio::test]
async fn cluster_ip_listeners_on_a_dummy_interface() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skiff_testsupport::skip_because("cluster IPs need root");
        return;
    }
    let iface = "skiff-svc-test";
    let b = Backend::start("b1").await;
    let cluster_ip: IpAddr = "10.250.0.10".parse().unwrap();
    let front = SocketAddr::new(cluster_ip, 8080);
    let mut e = ServicePortEntry::new(
        ServicePortKey::new("default", "inner", ""),
        8080,
        vec![Endpoint::ready(b.addr)],
    );
    e.cluster_ips = vec![cluster_ip];
    let ip = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap()
    };
    let created = ip(&["link", "add", iface, "type", "dummy"])
        .status
        .success();
    let dev = if created { iface } else { "lo" };
    // Left over by an earlier run (labelled as the proxy labels its addresses): removed once
    // the proxy has its first real table.
    let mut label = if created {
        format!("{dev}:skiff")
    } else {
        format!("{dev}:{iface}")
    };
    label.truncate(15);
    ip(&[
        "addr",
        "replace",
        "10.250.0.11/32",
        "dev",
        dev,
        "label",
        &label,
    ]);
    let (tx, rx) = watch::channel(table(vec![e]));
    let cfg = ProxyConfig {
        cluster_ip: true,
        dummy_interface: iface.into(),
        ..loopback_cfg()
    };
    let h = proxy::serve(cfg, rx).await.unwrap();
    wait_listening(&h, front, true).await;
    assert_eq!(request(front).await.unwrap().0, "b1");
    tx.send(table(vec![])).unwrap();
    wait_listening(&h, front, false).await;
    let out = String::from_utf8_lossy(&ip(&["-o", "addr", "show", "dev", dev]).stdout).into_owned();
    assert!(
        !out.contains("10.250.0.10"),
        "the cluster IP is removed with its Service: {out}"
    );
    assert!(!out.contains("10.250.0.11"), "stale address removed: {out}");
    h.shutdown().await;
    if created {
        ip(&["link", "del", iface]);
    }
}
