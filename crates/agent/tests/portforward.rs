//! The agent's `/portForward` endpoint with a raw WebSocket client over TLS: SPDY/3.1 in
//! WebSocket (kubectl's `SPDY/3.1+portforward.k8s.io`), spoken by hand with the agent's own frame
//! codec, and the plain channel protocol (`portforward.k8s.io`). The pod's "port" is a TCP echo
//! server of the test on 127.0.0.1, the pod IP.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::PodStatus;
use serde_json::json;
use skiff_agent::runtime::PodRef;
use skiff_agent::runtime::host::HostRuntime;
use skiff_agent::server::spdy::{self, FLAG_FIN, Frame, HeaderCodec};
use skiff_agent::server::{self, AgentServer, ServerConfig};
use skiff_agent::worker::{PodTable, PodView};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const PATIENCE: Duration = Duration::from_secs(30);
const TOKEN: &str = "test-token";

struct Fixture {
    server: AgentServer,
    dir: PathBuf,
}

impl Fixture {
    async fn start(tag: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("skiff-pf-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let runtime = Arc::new(HostRuntime::new(dir.clone(), "127.0.0.1".into()).unwrap());
        let status: PodStatus =
            serde_json::from_value(json!({"phase": "Running", "podIP": "127.0.0.1"})).unwrap();
        let table = Arc::new(PodTable::default());
        table.put(PodView {
            pod_ref: PodRef {
                namespace: "default".into(),
                name: "p".into(),
                uid: format!("uid-{tag}"),
            },
            status,
            instances: HashMap::new(),
            containers: vec!["c".into()],
        });
        let server = server::start(
            ServerConfig {
                bind: "127.0.0.1:0".parse().unwrap(),
                token: TOKEN.into(),
                names: vec![],
            },
            table,
            runtime,
        )
        .await
        .unwrap();
        Fixture { server, dir }
    }

    async fn stop(self) {
        self.server.shutdown().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP echo server; returns its port.
async fn echo_server() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    port
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn tls(addr: std::net::SocketAddr) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut config = skiff_agent::probe_io::insecure_client_config().unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

async fn connect(addr: std::net::SocketAddr, path: &str, protocol: &str) -> (Ws, String) {
    let mut req = format!("wss://localhost:{}{path}", addr.port())
        .into_client_request()
        .unwrap();
    let h = req.headers_mut();
    h.insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    h.insert("sec-websocket-protocol", protocol.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::client_async(req, tls(addr).await)
        .await
        .expect("upgrade");
    let chosen = resp
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (ws, chosen)
}

/// A SPDY client over the WebSocket: frames out in odd-sized messages, frames in.
struct Spdy {
    ws: Ws,
    tx: HeaderCodec,
    rx: HeaderCodec,
    buf: Vec<u8>,
}

impl Spdy {
    async fn send(&mut self, f: Frame) {
        let bytes = spdy::encode(&f, &mut self.tx);
        // Cut the byte stream anywhere: the agent must reassemble frames.
        for piece in bytes.chunks(1000) {
            self.ws
                .send(Message::Binary(Bytes::copy_from_slice(piece)))
                .await
                .unwrap();
        }
    }

    async fn open(&mut self, stream: u32, kind: &str, port: u16, request: u32) {
        let headers = vec![
            ("streamtype".to_string(), kind.to_string()),
            ("port".to_string(), port.to_string()),
            ("requestid".to_string(), request.to_string()),
        ];
        let flags = if kind == "error" { FLAG_FIN } else { 0 };
        self.send(Frame::SynStream {
            stream,
            associated: 0,
            priority: 0,
            flags,
            headers,
        })
        .await;
    }

    async fn next(&mut self) -> Frame {
        let read = async {
            loop {
                if let Some(f) = spdy::decode(&mut self.buf, &mut self.rx).unwrap() {
                    return f;
                }
                match self.ws.next().await {
                    Some(Ok(Message::Binary(b))) => self.buf.extend_from_slice(&b),
                    Some(Ok(_)) => {}
                    other => panic!("the session ended: {other:?}"),
                }
            }
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .expect("a frame in time")
    }
}

/// What arrived per stream until `done` says stop.
#[derive(Default, Debug)]
struct Seen {
    data: HashMap<u32, Vec<u8>>,
    fin: Vec<u32>,
    replies: Vec<u32>,
    window: HashMap<u32, u64>,
    pings: Vec<u32>,
}

impl Seen {
    async fn until(&mut self, s: &mut Spdy, done: impl Fn(&Seen) -> bool) {
        while !done(self) {
            match s.next().await {
                Frame::Data { stream, fin, data } => {
                    self.data.entry(stream).or_default().extend(data);
                    if fin {
                        self.fin.push(stream);
                    }
                }
                Frame::SynReply { stream, .. } => self.replies.push(stream),
                Frame::WindowUpdate { stream, delta } => {
                    *self.window.entry(stream).or_default() += u64::from(delta);
                }
                Frame::Ping { id } => self.pings.push(id),
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spdy_in_websocket_forwards_pairs_of_streams() {
    let f = Fixture::start("spdy").await;
    let echo = echo_server().await;
    let closed = closed_port();
    let (ws, chosen) = connect(
        f.server.addr,
        "/portForward/default/p",
        "SPDY/3.1+portforward.k8s.io",
    )
    .await;
    assert_eq!(chosen, "SPDY/3.1+portforward.k8s.io");
    let mut s = Spdy {
        ws,
        tx: HeaderCodec::new(),
        rx: HeaderCodec::new(),
        buf: Vec::new(),
    };
    let mut seen = Seen::default();

    // Request 0: a closed port. The error stream says why and ends; so does the data stream.
    s.open(1, "error", closed, 0).await;
    s.open(3, "data", closed, 0).await;
    seen.until(&mut s, |v| v.fin.contains(&1) && v.fin.contains(&3))
        .await;
    assert!(seen.replies.contains(&1) && seen.replies.contains(&3));
    let err = String::from_utf8_lossy(&seen.data[&1]).into_owned();
    assert!(
        err.contains(&format!("error forwarding port {closed} to pod default/p"))
            && err.contains("connection refused"),
        "{err}"
    );
    s.send(Frame::RstStream {
        stream: 1,
        status: spdy::RST_CANCEL,
    })
    .await;
    s.send(Frame::RstStream {
        stream: 3,
        status: spdy::RST_CANCEL,
    })
    .await;

    // The same session goes on: request 1 reaches the echo server, beyond the 64 KiB window.
    s.open(5, "error", echo, 1).await;
    s.open(7, "data", echo, 1).await;
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    for chunk in payload.chunks(16 * 1024) {
        s.send(Frame::Data {
            stream: 7,
            fin: false,
            data: chunk.to_vec(),
        })
        .await;
    }
    s.send(Frame::Ping { id: 1 }).await;
    seen.until(&mut s, |v| {
        v.data.get(&7).map_or(0, Vec::len) >= payload.len() && !v.pings.is_empty()
    })
    .await;
    assert_eq!(seen.data[&7], payload);
    assert_eq!(seen.pings, [1]);
    // Every byte the agent wrote to the pod was given back as window.
    seen.until(&mut s, |v| {
        v.window.get(&7).copied().unwrap_or(0) >= payload.len() as u64
    })
    .await;

    // A third pair while the second is open.
    s.open(9, "error", echo, 2).await;
    s.open(11, "data", echo, 2).await;
    s.send(Frame::Data {
        stream: 11,
        fin: true,
        data: b"third".to_vec(),
    })
    .await;
    seen.until(&mut s, |v| v.fin.contains(&11) && v.fin.contains(&9))
        .await;
    assert_eq!(seen.data[&11], b"third");

    // Half-closing the second: the echo server ends, so do both of its streams.
    s.send(Frame::Data {
        stream: 7,
        fin: true,
        data: Vec::new(),
    })
    .await;
    seen.until(&mut s, |v| v.fin.contains(&7) && v.fin.contains(&5))
        .await;
    assert!(seen.data[&5].is_empty(), "no error for request 1");
    assert!(seen.data[&9].is_empty(), "no error for request 2");

    // A stream without the port-forward headers is refused, the session stays.
    s.send(Frame::SynStream {
        stream: 13,
        associated: 0,
        priority: 0,
        flags: 0,
        headers: vec![("streamtype".into(), "data".into())],
    })
    .await;
    match s.next().await {
        Frame::RstStream { stream: 13, status } => assert_eq!(status, spdy::RST_REFUSED_STREAM),
        other => panic!("{other:?}"),
    }
    s.send(Frame::Ping { id: 3 }).await;
    assert_eq!(s.next().await, Frame::Ping { id: 3 });
    let _ = s.ws.close(None).await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_websocket_protocol_uses_channel_pairs() {
    let f = Fixture::start("plain").await;
    let echo = echo_server().await;
    let closed = closed_port();
    let (mut ws, chosen) = connect(
        f.server.addr,
        &format!("/portForward/default/p?ports={echo}%2C{closed}"),
        "portforward.k8s.io",
    )
    .await;
    assert_eq!(chosen, "portforward.k8s.io");
    let mut per_channel: HashMap<u8, Vec<Vec<u8>>> = HashMap::new();
    let next = async |ws: &mut Ws| loop {
        match tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Binary(b))) => return (b[0], b[1..].to_vec()),
            Some(Ok(_)) => {}
            other => panic!("ended: {other:?}"),
        }
    };
    // The port announcements, 2 bytes little-endian, first on each of the four channels.
    for _ in 0..4 {
        let (ch, data) = next(&mut ws).await;
        per_channel.entry(ch).or_default().push(data);
    }
    for (ch, port) in [(0u8, echo), (1, echo), (2, closed), (3, closed)] {
        assert_eq!(per_channel[&ch][0], port.to_le_bytes(), "channel {ch}");
    }
    ws.send(Message::Binary(Bytes::from_static(b"\x00hello")))
        .await
        .unwrap();
    let mut echoed = Vec::new();
    let mut error = String::new();
    while echoed.len() < 5 || error.is_empty() {
        let (ch, data) = next(&mut ws).await;
        match ch {
            0 => echoed.extend(data),
            3 => error = String::from_utf8_lossy(&data).into_owned(),
            other => panic!("channel {other}"),
        }
    }
    assert_eq!(echoed, b"hello");
    assert!(error.contains("connection refused"), "{error}");
    let _ = ws.close(None).await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_the_upgrade() {
    let f = Fixture::start("refuse").await;
    let addr = f.server.addr;
    let status = |path: &'static str, protocol: &'static str| async move {
        let mut req = format!("wss://localhost:{}{path}", addr.port())
            .into_client_request()
            .unwrap();
        let h = req.headers_mut();
        h.insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        h.insert("sec-websocket-protocol", protocol.parse().unwrap());
        match tokio_tungstenite::client_async(req, tls(addr).await).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
            Ok(_) => 101,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(
        status("/portForward/default/nope", "portforward.k8s.io").await,
        404
    );
    assert_eq!(
        status("/portForward/default/p", "v3.channel.k8s.io").await,
        400
    );
    assert_eq!(
        status("/portForward/default/p", "portforward.k8s.io").await,
        400
    );
    f.stop().await;
}
