//! pods/exec and pods/attach through the API server's upgrade proxy, against a fake node agent
//! run by the test: a TLS listener with a self-signed certificate that checks the bearer token,
//! records what it was asked, answers the WebSocket upgrade and then echoes bytes (or, for the
//! kubectl case, speaks just enough of the v5 channel protocol for `kubectl exec` to finish).
//! The client side is a hand-rolled WebSocket handshake over TLS (HTTP/1.1 in ALPN, as
//! client-go's WebSocket dialer uses), plus the real kubectl.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use common::Skiff;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// `Sec-WebSocket-Accept` for a key (RFC 6455 §4.2.2).
fn accept_for(key: &str) -> String {
    let input = format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, input.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// An HTTP/1.1 message head: the first line and the headers (names lower-cased).
#[derive(Debug, Clone)]
struct Head {
    line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn status(&self) -> u16 {
        self.line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    fn target(&self) -> &str {
        self.line.split_whitespace().nth(1).unwrap_or("")
    }
}

/// Reads up to the end of a message head; returns it and the bytes read past it.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<(Head, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = text.split("\r\n");
            let line = lines.next().unwrap_or("").to_string();
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            return Ok((Head { line, headers }, buf[end + 4..].to_vec()));
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before the end of the head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

// ---------------------------------------------------------------------------------------------
// The fake agent

struct FakeAgent {
    port: u16,
    /// The request heads the agent received, in order.
    seen: Arc<Mutex<Vec<Head>>>,
}

async fn start_agent(token: String) -> FakeAgent {
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = key.cert.der().clone();
    let private =
        PrivateKeyDer::from_pem_slice(key.signing_key.serialize_pem().as_bytes()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], private)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, token, record) = (acceptor.clone(), token.clone(), record.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = agent_connection(tls, &token, &record).await;
                }
            });
        }
    });
    FakeAgent { port, seen }
}

fn status_json(code: u16, reason: &str, message: &str) -> String {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
    .to_string()
}

/// A server-to-client WebSocket frame (unmasked) with a short payload.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![0x80 | opcode, payload.len() as u8];
    f.extend_from_slice(payload);
    f
}

async fn agent_connection(
    mut tls: tokio_rustls::server::TlsStream<TcpStream>,
    token: &str,
    seen: &Mutex<Vec<Head>>,
) -> std::io::Result<()> {
    let (head, early) = read_head(&mut tls).await?;
    seen.lock().unwrap().push(head.clone());
    let reply = |code: u16, text: &str, body: String| {
        format!(
            "HTTP/1.1 {code} {text}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    if head.header("authorization") != Some(&format!("Bearer {token}")) {
        let body = status_json(401, "Unauthorized", "Unauthorized");
        tls.write_all(reply(401, "Unauthorized", body).as_bytes())
            .await?;
        return tls.shutdown().await;
    }
    let path = head.target().to_string();
    if path.starts_with("/exec/default/multi/b") {
        let body = status_json(404, "NotFound", "container b is not running");
        tls.write_all(reply(404, "Not Found", body).as_bytes())
            .await?;
        return tls.shutdown().await;
    }
    let key = head.header("sec-websocket-key").unwrap_or("").to_string();
    let protocol = head
        .header("sec-websocket-protocol")
        .unwrap_or("")
        .split(',')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let switching = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n",
        accept_for(&key)
    );
    tls.write_all(switching.as_bytes()).await?;
    if path.starts_with("/exec/default/kube/") {
        // Just enough of v5.channel.k8s.io: stdout, a Success status, a normal close.
        tls.write_all(&frame(2, b"\x01hello from the agent\n"))
            .await?;
        tls.write_all(&frame(2, b"\x03{\"metadata\":{},\"status\":\"Success\"}"))
            .await?;
        tls.write_all(&frame(8, &[0x03, 0xe8])).await?;
        tls.flush().await?;
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while tls.read(&mut sink).await.unwrap_or(0) > 0 {}
        })
        .await;
        return Ok(());
    }
    // Everything else: echo.
    tls.write_all(&early).await?;
    let (mut r, mut w) = tokio::io::split(tls);
    tokio::io::copy(&mut r, &mut w).await?;
    w.shutdown().await
}

// ---------------------------------------------------------------------------------------------
// The cluster and a raw client

struct Cluster {
    skiff: Skiff,
    agent: FakeAgent,
    addr: String,
    token: String,
    /// What the API server presents to the agent.
    agent_token: String,
}

async fn cluster() -> Cluster {
    let skiff = Skiff::bare();
    let token = skiff.admin_token();
    let agent_token = skiff.agent_token("n1");
    let agent = start_agent(agent_token.clone()).await;
    let client = skiff.client().await;
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": agent.port}},
        },
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let pods: kube::Api<Pod> = kube::Api::namespaced(client, "default");
    for (name, containers, node) in [
        ("web", vec!["app"], "n1"),
        ("multi", vec!["a", "b"], "n1"),
        ("kube", vec!["main"], "n1"),
        ("floating", vec!["app"], ""),
        ("done", vec!["app"], "n1"),
    ] {
        let containers: Vec<Value> = containers
            .iter()
            .map(|c| json!({"name": c, "image": "busybox"}))
            .collect();
        let mut spec = json!({"containers": containers});
        if !node.is_empty() {
            spec["nodeName"] = json!(node);
        }
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    pods.patch_status(
        "done",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
    )
    .await
    .unwrap();
    let addr = skiff
        .server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    Cluster {
        skiff,
        agent,
        addr,
        token,
        agent_token,
    }
}

impl Cluster {
    /// A TLS connection to the API server, trusting its CA, offering only HTTP/1.1 (as
    /// client-go's WebSocket dialer does).
    async fn connect(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        let ca = std::fs::read(self.skiff.data_dir().join("pki/ca.crt")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca) {
            roots.add(c.unwrap()).unwrap();
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(&self.addr).await.unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// Sends a request with no body; returns the connection, the response head and the bytes
    /// read past it.
    async fn send(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> (tokio_rustls::client::TlsStream<TcpStream>, Head, Vec<u8>) {
        let mut tls = self.connect().await;
        let mut req = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n",
            self.addr, self.token
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        tls.write_all(req.as_bytes()).await.unwrap();
        let (head, rest) = tokio::time::timeout(Duration::from_secs(20), read_head(&mut tls))
            .await
            .expect("response head in time")
            .unwrap();
        (tls, head, rest)
    }

    /// A request whose answer is not an upgrade: the status and the JSON body.
    async fn status_of(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let (mut tls, head, mut body) = self.send(method, target, headers).await;
        let len: usize = head
            .header("content-length")
            .and_then(|l| l.parse().ok())
            .expect("a content-length");
        while body.len() < len {
            let mut chunk = [0u8; 4096];
            let n = tls.read(&mut chunk).await.unwrap();
            assert!(n > 0, "body cut short");
            body.extend_from_slice(&chunk[..n]);
        }
        (head.status(), serde_json::from_slice(&body[..len]).unwrap())
    }
}

/// Request headers: name and value.
type Headers = &'static [(&'static str, &'static str)];

const WS: Headers = &[
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", KEY),
    (
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io, v4.channel.k8s.io",
    ),
];

const SPDY: Headers = &[
    ("Connection", "Upgrade"),
    ("Upgrade", "SPDY/3.1"),
    ("X-Stream-Protocol-Version", "v5.channel.k8s.io"),
];

/// Upgrades and checks that bytes come back unchanged through the proxy, in several rounds.
async fn upgrade_and_echo(c: &Cluster, target: &str) -> Head {
    let (mut tls, head, rest) = c.send("GET", target, WS).await;
    assert_eq!(head.status(), 101, "{head:?}");
    assert!(rest.is_empty());
    assert_eq!(
        head.header("sec-websocket-accept"),
        Some(accept_for(KEY).as_str())
    );
    assert_eq!(
        head.header("sec-websocket-protocol"),
        Some("v5.channel.k8s.io")
    );
    assert!(
        head.header("upgrade")
            .unwrap()
            .eq_ignore_ascii_case("websocket")
    );
    for round in 0..3 {
        let msg = format!("round {round}: \x00\x01\x7f\u{ff} bytes");
        tls.write_all(msg.as_bytes()).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(10), tls.read_exact(&mut got))
            .await
            .expect("echo in time")
            .unwrap();
        assert_eq!(got, msg.as_bytes());
    }
    // A bigger write crosses several TLS records on both legs.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = tokio::io::split(tls);
    let writer = tokio::spawn(async move {
        w.write_all(&big).await.unwrap();
        (w, big)
    });
    let mut got = vec![0u8; 200_000];
    tokio::time::timeout(Duration::from_secs(20), r.read_exact(&mut got))
        .await
        .expect("big echo in time")
        .unwrap();
    let (_w, big) = writer.await.unwrap();
    assert!(got == big, "the big echo differs");
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_attach_are_spliced_to_the_agent() {
    let c = cluster().await;
    upgrade_and_echo(
        &c,
        "/api/v1/namespaces/default/pods/web/exec?command=sh&command=-c&command=echo%20hi&container=app&stdin=true&stdout=true&stderr=true",
    )
    .await;
    // No container named: the only one is used.
    upgrade_and_echo(
        &c,
        "/api/v1/namespaces/default/pods/web/attach?stdin=true&stdout=true&tty=true",
    )
    .await;

    let seen = c.agent.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[0].line,
        "GET /exec/default/web/app?command=sh&command=-c&command=echo%20hi&stdin=true&stdout=true&stderr=true HTTP/1.1"
    );
    assert_eq!(
        seen[1].line,
        "GET /attach/default/web/app?stdin=true&stdout=true&tty=true HTTP/1.1"
    );
    for h in &seen {
        assert_eq!(
            h.header("authorization"),
            Some(format!("Bearer {}", c.agent_token).as_str())
        );
        assert_eq!(h.header("sec-websocket-key"), Some(KEY));
        assert_eq!(h.header("sec-websocket-version"), Some("13"));
        assert_eq!(
            h.header("sec-websocket-protocol"),
            Some("v5.channel.k8s.io, v4.channel.k8s.io")
        );
        assert!(
            h.header("upgrade")
                .unwrap()
                .eq_ignore_ascii_case("websocket")
        );
        assert!(
            h.header("connection")
                .unwrap()
                .to_ascii_lowercase()
                .contains("upgrade")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_requests_are_checked_before_reaching_the_agent() {
    let c = cluster().await;
    let base = "/api/v1/namespaces/default/pods";
    let cases: &[(&str, &str, Headers, u16, &str)] = &[
        (
            "GET",
            "nope/exec?command=ls",
            WS,
            404,
            "pods \"nope\" not found",
        ),
        (
            "GET",
            "done/exec?command=ls&container=app&stdout=true",
            WS,
            400,
            "cannot exec into a container in a completed pod; current phase is Succeeded",
        ),
        (
            "GET",
            "floating/exec?command=ls&stdout=true",
            WS,
            400,
            "pod floating does not have a host assigned",
        ),
        (
            "GET",
            "multi/exec?command=ls&stdout=true",
            WS,
            400,
            "a container name must be specified for pod multi, choose one of: [a b]",
        ),
        (
            "GET",
            "web/exec?command=ls&container=nope&stdout=true",
            WS,
            400,
            "container nope is not valid for pod web",
        ),
        (
            "GET",
            "web/exec?container=app&stdout=true",
            WS,
            400,
            "you must specify at least 1 command",
        ),
        (
            "GET",
            "web/exec?command=ls&container=app&stdout=true",
            &[],
            400,
            "Upgrade request required",
        ),
        (
            "POST",
            "web/exec?command=ls&container=app&stdout=true",
            SPDY,
            400,
            "SPDY/3.1 upgrades are not supported by this server",
        ),
        ("GET", "web/portforward", WS, 400, "pod web is not running"),
    ];
    for (method, path, headers, code, message) in cases {
        let (status, body) = c
            .status_of(method, &format!("{base}/{path}"), headers)
            .await;
        assert_eq!(status, *code, "{method} {path}: {body}");
        assert_eq!(body["kind"], "Status", "{path}");
        assert_eq!(body["code"], *code, "{path}");
        let got = body["message"].as_str().unwrap_or("");
        assert!(got.starts_with(message), "{path}: {got}");
    }
    assert!(
        c.agent.seen.lock().unwrap().is_empty(),
        "no request may reach the agent"
    );

    // The agent's refusal is relayed as is, and kubectl's SPDY retry that follows gets the
    // same answer instead of a message about SPDY.
    let target = format!("{base}/multi/exec?command=ls&container=b&stdout=true");
    let (status, body) = c.status_of("GET", &target, WS).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (404, Some("container b is not running"))
    );
    let (status, body) = c.status_of("POST", &target, SPDY).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (404, Some("container b is not running"))
    );
    let (status, body) = c.status_of("POST", &target, SPDY).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_goes_through_the_proxy() {
    let c = cluster().await;
    let out =
        tokio::task::block_in_place(|| c.skiff.kubectl(&["exec", "kube", "--", "echo", "hello"]));
    assert_eq!(
        out.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert_eq!(out.stdout, "hello from the agent\n");
    let seen = c.agent.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0]
            .line
            .starts_with("GET /exec/default/kube/main?command=echo&command=hello&"),
        "{}",
        seen[0].line
    );
    assert_eq!(
        seen[0].header("sec-websocket-protocol"),
        Some("v5.channel.k8s.io")
    );
}
