//! Port forwarding on the agent: `GET /portForward/{namespace}/{pod}`, upgraded to a WebSocket.
//! The API server proxies `pods/{name}/portforward` here and splices the bytes, as it does for
//! exec. Two protocols, chosen by `Sec-WebSocket-Protocol`:
//!
//! * **`SPDY/3.1+portforward.k8s.io`** (kubectl 1.30+): each binary message carries the next
//!   piece of a SPDY/3.1 byte stream ([`super::spdy`]). Every forwarded connection is a pair of
//!   client-opened streams with the headers `streamtype` (`error` or `data`), `port` and
//!   `requestid`. The data stream is relayed to `podIP:port`; a failure is written as text on the
//!   error stream, which is closed (FIN) when the connection ends either way. Other streams of the
//!   session go on. PINGs are echoed; received data is acknowledged with WINDOW_UPDATEs once it
//!   has been written to the pod, so the peer's 64 KiB windows never run dry. The peer's windows
//!   for what the agent sends are not enforced (kubectl's SPDY library does not send updates
//!   for every frame it reads either); data frames are at most 32 KiB.
//! * **`portforward.k8s.io`**, and the channel protocols `v4.channel.k8s.io` /
//!   `v5.channel.k8s.io` that kube-rs offers: the ports are in the query (`ports=8080,9090`);
//!   port number `i` has data channel `2i` and error channel `2i+1`, and the first message the
//!   agent sends on each channel is the port, 2 bytes little-endian. One connection to the pod
//!   per port and WebSocket.
//!
//! The agent connects to the pod's IP (`status.podIP`): for runc pods the bridge address, which
//! the node reaches; for host-runtime pods the node's address. A listener bound only to the
//! pod's own loopback (127.0.0.1 inside a runc pod's network namespace) is not reachable this way
//! (the kubelet enters the namespace; the agent does not yet).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade, rejection};
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::spdy::{self, Frame, HeaderCodec};
use super::{AppState, authorized, bad_request, status_response};

/// The SPDY-in-WebSocket protocol kubectl offers.
pub const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
/// The plain WebSocket protocol names served with the channel framing.
const PLAIN: &[&str] = &[
    "portforward.k8s.io",
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
];

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest data frame sent.
const CHUNK: usize = 32 * 1024;

/// Which framing a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Spdy,
    /// The plain channel framing, answered with this protocol name.
    Plain(&'static str),
}

/// The protocol to answer with, from the offered `Sec-WebSocket-Protocol` values.
pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<Mode> {
    let names: Vec<&str> = offered
        .into_iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .collect();
    if names.iter().any(|n| n.eq_ignore_ascii_case(SPDY_TUNNEL)) {
        return Some(Mode::Spdy);
    }
    PLAIN
        .iter()
        .find(|p| names.contains(p))
        .map(|p| Mode::Plain(p))
}

/// `ports=8080,9090` (or repeated `ports=`) from the query.
pub fn parse_ports(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for pair in query.split('&') {
        let Some(v) = pair.strip_prefix("ports=") else {
            continue;
        };
        for p in v.split("%2C").flat_map(|s| s.split(',')) {
            let p = p.trim();
            if p.is_empty() {
                continue;
            }
            match p.parse::<u16>() {
                Ok(n) if n > 0 => ports.push(n),
                _ => return Err(format!("invalid port {p:?}")),
            }
        }
    }
    Ok(ports)
}

pub(super) async fn port_forward(
    State(state): State<Arc<AppState>>,
    UrlPath((namespace, pod)): UrlPath<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, rejection::WebSocketUpgradeRejection>,
) -> Response {
    if !authorized(&headers, &state.token) {
        return status_response(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let Some(view) = state.table.get(&namespace, &pod) else {
        return status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pods \"{pod}\" not found on this node"),
        );
    };
    let Some(ip) = view
        .status
        .pod_ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok())
    else {
        return bad_request(&format!("pod {pod} has no IP address yet"));
    };
    let Ok(upgrade) = upgrade else {
        return bad_request(
            "port forwarding needs a WebSocket upgrade (SPDY/3.1+portforward.k8s.io or portforward.k8s.io)",
        );
    };
    let offered: Vec<&str> = headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let Some(mode) = negotiate(offered.iter().copied()) else {
        return bad_request(&format!(
            "unsupported port-forward protocol {:?}: the agent speaks {SPDY_TUNNEL} and portforward.k8s.io",
            offered.join(", ")
        ));
    };
    let target = Target {
        ip,
        pod: format!("{namespace}/{pod}"),
    };
    match mode {
        Mode::Spdy => upgrade
            .protocols([SPDY_TUNNEL])
            .on_upgrade(move |ws| spdy_session(ws, target)),
        Mode::Plain(name) => {
            let ports = match parse_ports(query.as_deref().unwrap_or("")) {
                Ok(p) if !p.is_empty() => p,
                Ok(_) => return bad_request("query parameter \"ports\" is required"),
                Err(e) => return bad_request(&e),
            };
            upgrade
                .protocols([name])
                .on_upgrade(move |ws| plain_session(ws, target, ports))
        }
    }
}

#[derive(Clone)]
struct Target {
    ip: IpAddr,
    pod: String,
}

impl Target {
    async fn connect(&self, port: u16) -> Result<TcpStream, String> {
        let addr = std::net::SocketAddr::new(self.ip, port);
        let fail = |e: &dyn std::fmt::Display| {
            format!(
                "error forwarding port {port} to pod {}: failed to connect to {addr}: {e}",
                self.pod
            )
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Ok(Err(e)) => Err(fail(&go_style(&e))),
            Err(_) => Err(fail(&"timed out")),
        }
    }
}

/// An I/O error as Go prints it (`connection refused`), without Rust's `(os error N)`.
fn go_style(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or("").to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

// ---------------------------------------------------------------------------------------------
// SPDY/3.1 in WebSocket
// ---------------------------------------------------------------------------------------------

/// What the session reader passes to a forwarded connection's data stream.
enum Inbound {
    Data(Bytes),
    /// The client half-closed the stream (FIN).
    Fin,
}

/// A request id's streams, until both have arrived.
#[derive(Default)]
struct Pair {
    port: u16,
    error: Option<u32>,
    data: Option<u32>,
}

async fn spdy_session(ws: WebSocket, target: Target) {
    let (mut sink, mut incoming) = ws.split();
    // One writer: frames are encoded (and header blocks compressed) in sending order.
    let (out_tx, mut out_rx) = mpsc::channel::<Frame>(64);
    let writer = tokio::spawn(async move {
        let mut codec = HeaderCodec::new();
        while let Some(f) = out_rx.recv().await {
            let last = matches!(f, Frame::GoAway { .. });
            let bytes = spdy::encode(&f, &mut codec);
            if sink
                .send(Message::Binary(Bytes::from(bytes)))
                .await
                .is_err()
            {
                break;
            }
            if last {
                break;
            }
        }
        let _ = sink.close().await;
    });

    let mut codec = HeaderCodec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut inbound: HashMap<u32, mpsc::UnboundedSender<Inbound>> = HashMap::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut relays: HashMap<u32, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut last_stream = 0u32;
    'session: while let Some(msg) = incoming.next().await {
        match msg {
            Ok(Message::Binary(b)) => buf.extend_from_slice(&b),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        }
        loop {
            let frame = match spdy::decode(&mut buf, &mut codec) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(pod = %target.pod, error = %e, "port-forward: bad SPDY frame");
                    let _ = out_tx
                        .send(Frame::GoAway {
                            last_stream,
                            status: spdy::RST_PROTOCOL_ERROR,
                        })
                        .await;
                    break 'session;
                }
            };
            match frame {
                Frame::SynStream {
                    stream, headers, ..
                } => {
                    last_stream = last_stream.max(stream);
                    let kind = spdy::header(&headers, "streamtype").unwrap_or("");
                    let port = spdy::header(&headers, "port").and_then(|p| p.parse::<u16>().ok());
                    let request = spdy::header(&headers, "requestid")
                        .unwrap_or("")
                        .to_string();
                    let (Some(port), "error" | "data") = (port, kind) else {
                        let _ = out_tx
                            .send(Frame::RstStream {
                                stream,
                                status: spdy::RST_REFUSED_STREAM,
                            })
                            .await;
                        continue;
                    };
                    let _ = out_tx
                        .send(Frame::SynReply {
                            stream,
                            fin: false,
                            headers: Vec::new(),
                        })
                        .await;
                    let pair = pairs.entry(request.clone()).or_default();
                    pair.port = port;
                    if kind == "error" {
                        pair.error = Some(stream);
                    } else {
                        pair.data = Some(stream);
                    }
                    if let (Some(error), Some(data)) = (pair.error, pair.data) {
                        pairs.remove(&request);
                        let (tx, rx) = mpsc::unbounded_channel();
                        inbound.insert(data, tx);
                        relays.retain(|_, h| !h.is_finished());
                        relays.insert(
                            data,
                            tokio::spawn(relay_spdy(
                                target.clone(),
                                port,
                                data,
                                error,
                                rx,
                                out_tx.clone(),
                            )),
                        );
                    }
                }
                Frame::Data { stream, fin, data } => {
                    let len = data.len() as u32;
                    match inbound.get(&stream) {
                        Some(tx) => {
                            if !data.is_empty() {
                                let _ = tx.send(Inbound::Data(Bytes::from(data)));
                            }
                            if fin {
                                let _ = tx.send(Inbound::Fin);
                                inbound.remove(&stream);
                            }
                        }
                        // Data nobody reads (the error stream's, or a finished stream's):
                        // give the window back at once.
                        None if len > 0 => {
                            let _ = out_tx
                                .send(Frame::WindowUpdate { stream, delta: len })
                                .await;
                        }
                        None => {}
                    }
                }
                Frame::RstStream { stream, .. } => {
                    inbound.remove(&stream);
                    if let Some(h) = relays.remove(&stream) {
                        h.abort();
                    }
                }
                Frame::Ping { id } => {
                    let _ = out_tx.send(Frame::Ping { id }).await;
                }
                Frame::GoAway { .. } => break 'session,
                Frame::SynReply { .. }
                | Frame::Headers { .. }
                | Frame::Settings { .. }
                | Frame::WindowUpdate { .. }
                | Frame::Unknown { .. } => {}
            }
        }
    }
    for (_, h) in relays {
        h.abort();
    }
    drop(out_tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}

/// One forwarded connection: `data` relayed to the pod's `port`, failures on `error`.
async fn relay_spdy(
    target: Target,
    port: u16,
    data: u32,
    error: u32,
    mut rx: mpsc::UnboundedReceiver<Inbound>,
    out: mpsc::Sender<Frame>,
) {
    let fin = |stream: u32| Frame::Data {
        stream,
        fin: true,
        data: Vec::new(),
    };
    let tcp = match target.connect(port).await {
        Ok(s) => s,
        Err(msg) => {
            tracing::info!(pod = %target.pod, port, error = %msg, "port-forward: connect failed");
            let _ = out
                .send(Frame::Data {
                    stream: error,
                    fin: true,
                    data: msg.into_bytes(),
                })
                .await;
            let _ = out.send(fin(data)).await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let out_up = out.clone();
    let up = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            match m {
                Inbound::Data(b) => {
                    if to_pod.write_all(&b).await.is_err() {
                        break;
                    }
                    let _ = out_up
                        .send(Frame::WindowUpdate {
                            stream: data,
                            delta: b.len() as u32,
                        })
                        .await;
                }
                Inbound::Fin => break,
            }
        }
        let _ = to_pod.shutdown().await;
    });
    let mut chunk = vec![0u8; CHUNK];
    loop {
        match from_pod.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let f = Frame::Data {
                    stream: data,
                    fin: false,
                    data: chunk[..n].to_vec(),
                };
                if out.send(f).await.is_err() {
                    up.abort();
                    return;
                }
            }
        }
    }
    // The pod closed its side: end both streams, so the client finishes this connection.
    let _ = out.send(fin(data)).await;
    let _ = out.send(fin(error)).await;
    // The client's half may still be open; the stream reset (or the session end) stops it.
    let _ = up.await;
}

// ---------------------------------------------------------------------------------------------
// The plain WebSocket protocol
// ---------------------------------------------------------------------------------------------

fn channel_frame(channel: u8, data: &[u8]) -> Message {
    let mut b = Vec::with_capacity(data.len() + 1);
    b.push(channel);
    b.extend_from_slice(data);
    Message::Binary(Bytes::from(b))
}

async fn plain_session(ws: WebSocket, target: Target, ports: Vec<u16>) {
    let (mut sink, mut incoming) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = sink.close().await;
    });
    // The port announcements come first on every channel.
    for (i, port) in ports.iter().enumerate() {
        let le = port.to_le_bytes();
        let _ = out_tx.send(channel_frame((2 * i) as u8, &le)).await;
        let _ = out_tx.send(channel_frame((2 * i + 1) as u8, &le)).await;
    }
    let mut to_pods: Vec<Option<mpsc::UnboundedSender<Bytes>>> = Vec::new();
    let mut tasks = Vec::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        to_pods.push(Some(tx));
        tasks.push(tokio::spawn(relay_plain(
            target.clone(),
            port,
            (2 * i) as u8,
            rx,
            out_tx.clone(),
        )));
    }
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    let ended = futures::future::join_all(tasks);
    tokio::pin!(ended);
    loop {
        tokio::select! {
            _ = &mut ended => break,
            msg = incoming.next() => {
                let data = match msg {
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => continue,
                };
                let Some((&channel, payload)) = data.split_first() else { continue };
                // Data for port i on channel 2i; the error channels carry nothing inbound.
                if channel % 2 == 0
                    && !payload.is_empty()
                    && let Some(Some(tx)) = to_pods.get(usize::from(channel / 2))
                {
                    let _ = tx.send(data.slice(1..));
                }
            }
        }
    }
    for a in &aborts {
        a.abort();
    }
    drop(to_pods);
    let _ = out_tx
        .send(Message::Close(Some(axum::extract::ws::CloseFrame {
            code: 1000,
            reason: "".into(),
        })))
        .await;
    drop(out_tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}

async fn relay_plain(
    target: Target,
    port: u16,
    channel: u8,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    out: mpsc::Sender<Message>,
) {
    let tcp = match target.connect(port).await {
        Ok(s) => s,
        Err(msg) => {
            let _ = out.send(channel_frame(channel + 1, msg.as_bytes())).await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let up = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if to_pod.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = to_pod.shutdown().await;
    });
    let mut chunk = vec![0u8; CHUNK];
    loop {
        match from_pod.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.send(channel_frame(channel, &chunk[..n])).await.is_err() {
                    break;
                }
            }
        }
    }
    up.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert_eq!(negotiate(["SPDY/3.1+portforward.k8s.io"]), Some(Mode::Spdy));
        assert_eq!(
            negotiate(["v5.channel.k8s.io, v4.channel.k8s.io"]),
            Some(Mode::Plain("v5.channel.k8s.io"))
        );
        assert_eq!(
            negotiate(["portforward.k8s.io"]),
            Some(Mode::Plain("portforward.k8s.io"))
        );
        assert_eq!(negotiate(["channel.k8s.io"]), None);
    }

    #[test]
    fn ports_from_the_query() {
        assert_eq!(parse_ports("ports=8080"), Ok(vec![8080]));
        assert_eq!(parse_ports("ports=80%2C443"), Ok(vec![80, 443]));
        assert_eq!(parse_ports("ports=80&ports=81"), Ok(vec![80, 81]));
        assert_eq!(parse_ports(""), Ok(vec![]));
        assert!(parse_ports("ports=x").is_err());
        assert!(parse_ports("ports=0").is_err());
    }

    #[test]
    fn errors_read_like_go() {
        let e = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(go_style(&e), "connection refused");
    }
}
