//! `kubectl exec` on the agent: `GET /exec/{namespace}/{pod}/{container}?command=…&stdin=…&
//! stdout=…&stderr=…&tty=…`, upgraded to a WebSocket speaking the Kubernetes channel protocol
//! (kubectl-wire §10). The API server proxies `pods/{name}/exec` here and splices the bytes, so
//! the handshake answered here is the one kubectl checks.
//!
//! * **Protocols**: `v5.channel.k8s.io` (preferred) and `v4.channel.k8s.io`; the base64 variants
//!   and the older ones are refused with a 400 Status.
//! * **Frames** are binary messages whose first byte is the channel: 0 stdin (client to agent),
//!   1 stdout, 2 stderr, 3 the final Status (JSON), 4 terminal resize
//!   (`{"Width":W,"Height":H}`), and in v5 255 "close stream" (`255 0` ends stdin).
//! * **The end**: once the command has exited and its output is sent, channel 3 carries
//!   `{"metadata":{},"status":"Success"}` or, for a non-zero exit, a `NonZeroExitCode` Status
//!   whose `ExitCode` cause is the code (kubectl exits with it); then a close frame (1000). A
//!   command that cannot be started gets an `InternalError` Status on channel 3.
//! * **Errors before the upgrade** (no such pod or container, container not running, bad query,
//!   no WebSocket) are plain HTTP answers with a `metav1.Status` body, which the API server
//!   relays.
//! * When the client goes away first, the command's process group is killed (the runtime's
//!   session guard).
//!
//! `/attach/...` takes the same requests but no runtime can attach yet: it answers 400.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection};
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{AppState, authorized, bad_request, find_status, status_response};
use crate::runtime::{ExecStreams, PodRef, Runtime};
use crate::worker::PodView;

/// How long the output may keep coming after the command exited (background processes can hold
/// it open).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// How long the agent waits for the client's close frame after sending its own.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// The largest payload of one output frame.
const FRAME_BYTES: usize = 32 * 1024;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const STATUS: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE_STREAM: u8 = 255;

/// The channel protocols the agent speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V5,
    V4,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V5 => "v5.channel.k8s.io",
            Protocol::V4 => "v4.channel.k8s.io",
        }
    }

    /// The best protocol among those the client offers (`Sec-WebSocket-Protocol`, possibly
    /// several headers of comma-separated names).
    pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<Protocol> {
        let names: Vec<&str> = offered
            .into_iter()
            .flat_map(|h| h.split(','))
            .map(str::trim)
            .collect();
        [Protocol::V5, Protocol::V4]
            .into_iter()
            .find(|p| names.contains(&p.name()))
    }
}

/// The query of an exec request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecRequest {
    /// Parses `command=a&command=b&stdin=true…` (the repeated `command` keeps its order).
    pub fn parse(query: &str) -> Result<ExecRequest, String> {
        let mut r = ExecRequest::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (percent_decode(k)?, percent_decode(v)?);
            let flag = || v == "true" || v == "1";
            match k.as_str() {
                "command" => r.command.push(v),
                "stdin" | "input" => r.stdin = flag(),
                "stdout" | "output" => r.stdout = flag(),
                "stderr" | "error" => r.stderr = flag(),
                "tty" => r.tty = flag(),
                _ => {}
            }
        }
        if r.command.is_empty() {
            return Err("you must specify at least one command for the container".into());
        }
        if !(r.stdin || r.stdout || r.stderr) {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        Ok(r)
    }

    /// The streams the runtime is asked for: with a terminal, stderr is part of its output.
    pub fn streams(&self) -> ExecStreams {
        ExecStreams {
            stdin: self.stdin,
            stdout: self.stdout,
            stderr: self.stderr && !self.tty,
            tty: self.tty,
        }
    }
}

/// Decodes `%XX` escapes and `+` (a space in a form-encoded query).
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("invalid escape in the query: {s:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("the query is not UTF-8: {s:?}"))
}

/// A `metav1.Status` as the status channel carries it (Go's field order, empty fields left out).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChannelStatus {
    metadata: Empty,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
struct Empty {}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
struct Details {
    causes: Vec<Cause>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
struct Cause {
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    message: String,
}

impl ChannelStatus {
    /// What the status channel says once `argv` ended with `result` (its exit code, or why it
    /// could not run).
    pub fn of(argv: &[String], result: &Result<i32, String>) -> ChannelStatus {
        match result {
            Ok(0) => ChannelStatus {
                metadata: Empty {},
                status: "Success",
                message: None,
                reason: None,
                details: None,
                code: None,
            },
            Ok(code) => ChannelStatus {
                metadata: Empty {},
                status: "Failure",
                // The runtime's error (containerd's wording) inside the kubelet's.
                message: Some(format!(
                    "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                    argv.join(" ")
                )),
                reason: Some("NonZeroExitCode"),
                details: Some(Details {
                    causes: vec![Cause {
                        reason: Some("ExitCode"),
                        message: code.to_string(),
                    }],
                }),
                code: None,
            },
            Err(e) => {
                let inner = format!("error executing command in container: {e}");
                ChannelStatus {
                    metadata: Empty {},
                    status: "Failure",
                    message: Some(format!("Internal error occurred: {inner}")),
                    reason: Some("InternalError"),
                    details: Some(Details {
                        causes: vec![Cause {
                            reason: None,
                            message: inner,
                        }],
                    }),
                    code: Some(500),
                }
            }
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A terminal size from a resize frame's JSON (`{"Width":W,"Height":H}`): (columns, rows).
pub fn parse_resize(payload: &[u8]) -> Option<(u16, u16)> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let dim = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_u64)
            .map(|n| n.min(u64::from(u16::MAX)) as u16)
    };
    Some((dim("Width")?, dim("Height")?))
}

/// The running instance of `container` to exec in: the one the last computed status shows
/// running, else the newest running one the worker knows.
fn running_instance(view: &PodView, container: &str) -> Option<String> {
    let list = view.instances.get(container)?;
    let is_running = |id: &str| list.iter().any(|i| i.id == id && i.running);
    let from_status = find_status(view, container)
        .filter(|st| st.state.as_ref().is_some_and(|s| s.running.is_some()))
        .and_then(|st| st.container_id.clone())
        .filter(|id| is_running(id));
    from_status.or_else(|| list.iter().rev().find(|i| i.running).map(|i| i.id.clone()))
}

/// Why a request is refused before any streaming: an HTTP status with a `metav1.Status` body.
struct Refusal {
    code: StatusCode,
    reason: &'static str,
    message: String,
}

impl Refusal {
    fn bad_request(message: String) -> Refusal {
        Refusal {
            code: StatusCode::BAD_REQUEST,
            reason: "BadRequest",
            message,
        }
    }

    fn response(&self) -> Response {
        status_response(self.code, self.reason, &self.message)
    }
}

/// Finds the pod and its running container.
fn target(
    state: &AppState,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<(PodRef, String), Refusal> {
    let Some(view) = state.table.get(namespace, pod) else {
        return Err(Refusal {
            code: StatusCode::NOT_FOUND,
            reason: "NotFound",
            message: format!("pods \"{pod}\" not found on this node"),
        });
    };
    if !view.containers.iter().any(|c| c == container) {
        return Err(Refusal::bad_request(format!(
            "container {container} is not valid for pod {pod}"
        )));
    }
    match running_instance(&view, container) {
        Some(id) => Ok((view.pod_ref.clone(), id)),
        None => Err(Refusal::bad_request(format!(
            "container not found (\"{container}\")"
        ))),
    }
}

/// The offered `Sec-WebSocket-Protocol` names.
fn offered(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

pub(super) async fn exec(
    State(state): State<Arc<AppState>>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, rejection::WebSocketUpgradeRejection>,
) -> Response {
    if !authorized(&headers, &state.token) {
        return status_response(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let req = match ExecRequest::parse(query.as_deref().unwrap_or("")) {
        Ok(r) => r,
        Err(e) => return bad_request(&e),
    };
    let (pod_ref, id) = match target(&state, &namespace, &pod, &container) {
        Ok(t) => t,
        Err(refusal) => return refusal.response(),
    };
    let Ok(upgrade) = upgrade else {
        return bad_request(
            "exec needs a WebSocket upgrade (v5.channel.k8s.io or v4.channel.k8s.io); SPDY is not supported",
        );
    };
    let Some(protocol) = Protocol::negotiate(offered(&headers)) else {
        return bad_request(&format!(
            "unsupported streaming protocol {:?}: the agent speaks v5.channel.k8s.io and v4.channel.k8s.io",
            offered(&headers).join(", ")
        ));
    };
    let runtime = state.runtime.clone();
    upgrade
        .protocols([protocol.name()])
        .on_upgrade(move |ws| session(ws, protocol, runtime, pod_ref, id, req))
}

pub(super) async fn attach(
    State(state): State<Arc<AppState>>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers, &state.token) {
        return status_response(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    if let Err(refusal) = target(&state, &namespace, &pod, &container) {
        return refusal.response();
    }
    bad_request(&format!(
        "attach is not supported by the {} runtime yet",
        state.runtime.name()
    ))
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut b = Vec::with_capacity(data.len() + 1);
    b.push(channel);
    b.extend_from_slice(data);
    Message::Binary(Bytes::from(b))
}

fn close_frame() -> Message {
    Message::Close(Some(CloseFrame {
        code: 1000,
        reason: "".into(),
    }))
}

/// Copies one output stream into frames of `channel`.
fn pump(
    mut reader: std::pin::Pin<Box<dyn AsyncRead + Send>>,
    channel: u8,
    tx: mpsc::Sender<Message>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; FRAME_BYTES];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send(frame(channel, &buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// One exec session over an upgraded connection.
async fn session(
    ws: WebSocket,
    protocol: Protocol,
    runtime: Arc<dyn Runtime>,
    pod: PodRef,
    id: String,
    req: ExecRequest,
) {
    let (mut sink, mut incoming) = ws.split();
    let process = match runtime
        .exec_stream(&pod, &id, &req.command, req.streams())
        .await
    {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(pod = %pod.name, error = %e, "exec could not start");
            let status = ChannelStatus::of(&req.command, &Err(e)).to_json();
            let _ = sink.send(frame(STATUS, status.as_bytes())).await;
            let _ = sink.send(close_frame()).await;
            let _ = tokio::time::timeout(CLOSE_WAIT, async {
                while let Some(Ok(_)) = incoming.next().await {}
            })
            .await;
            return;
        }
    };

    // Everything sent goes through one writer, in order.
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(32);
    let mut writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
    });
    let mut pumps = Vec::new();
    if let Some(out) = process.stdout {
        pumps.push(pump(out, STDOUT, out_tx.clone()));
    }
    if let Some(err) = process.stderr {
        pumps.push(pump(err, STDERR, out_tx.clone()));
    }

    // stdin: frames on channel 0 until `255 0` (v5) or the end of the connection.
    let (in_tx, mut in_rx) = mpsc::channel::<Bytes>(16);
    let stdin_task = process.stdin.map(|mut stdin| {
        tokio::spawn(async move {
            while let Some(data) = in_rx.recv().await {
                if stdin.write_all(&data).await.is_err() {
                    break;
                }
            }
            let _ = stdin.shutdown().await;
        })
    });
    let mut in_tx = stdin_task.is_some().then_some(in_tx);
    let resize = process.resize;
    let mut reader = tokio::spawn(async move {
        while let Some(msg) = incoming.next().await {
            let data = match msg {
                Ok(Message::Binary(b)) => b,
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            let Some((&channel, payload)) = data.split_first() else {
                continue;
            };
            match channel {
                STDIN if !payload.is_empty() => {
                    if let Some(tx) = &in_tx
                        && tx.send(data.slice(1..)).await.is_err()
                    {
                        in_tx = None;
                    }
                }
                RESIZE => {
                    if let (Some(f), Some((cols, rows))) = (&resize, parse_resize(payload)) {
                        f(cols, rows);
                    }
                }
                CLOSE_STREAM if protocol == Protocol::V5 && payload.first() == Some(&STDIN) => {
                    in_tx = None;
                }
                _ => {}
            }
        }
    });

    let mut exit = process.exit;
    let result = tokio::select! {
        r = &mut exit => r,
        _ = &mut reader => {
            // The client went away: dropping the exit kills the command.
            drop(exit);
            for p in &pumps {
                p.abort();
            }
            if let Some(t) = &stdin_task {
                t.abort();
            }
            writer.abort();
            return;
        }
    };
    drop(exit);
    if let Some(t) = &stdin_task {
        t.abort();
    }
    // The output the command wrote before it exited, then the status, then the close.
    let all_output = futures::future::join_all(pumps.iter_mut());
    if tokio::time::timeout(OUTPUT_GRACE, all_output)
        .await
        .is_err()
    {
        for p in &pumps {
            p.abort();
        }
    }
    let status = ChannelStatus::of(&req.command, &result).to_json();
    let _ = out_tx.send(frame(STATUS, status.as_bytes())).await;
    let _ = out_tx.send(close_frame()).await;
    drop(out_tx);
    if tokio::time::timeout(CLOSE_WAIT, &mut writer).await.is_err() {
        writer.abort();
    }
    if tokio::time::timeout(CLOSE_WAIT, &mut reader).await.is_err() {
        reader.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_v5_then_v4() {
        assert_eq!(
            Protocol::negotiate(["v4.channel.k8s.io, v5.channel.k8s.io"]),
            Some(Protocol::V5)
        );
        assert_eq!(
            Protocol::negotiate(["channel.k8s.io", "v4.channel.k8s.io"]),
            Some(Protocol::V4)
        );
        assert_eq!(Protocol::negotiate(["base64.channel.k8s.io"]), None);
        assert_eq!(Protocol::negotiate([]), None);
    }

    #[test]
    fn parses_the_query() {
        let r = ExecRequest::parse(
            "command=sh&command=-c&command=echo+a%20%26%26+exit%203&container=c&stderr=true&stdout=true",
        )
        .unwrap();
        assert_eq!(r.command, ["sh", "-c", "echo a && exit 3"]);
        assert!(r.stdout && r.stderr && !r.stdin && !r.tty);
        let t =
            ExecRequest::parse("command=sh&stdin=true&stdout=true&tty=true&stderr=true").unwrap();
        assert_eq!(
            t.streams(),
            ExecStreams {
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true
            }
        );
        assert_eq!(
            ExecRequest::parse("stdout=true"),
            Err("you must specify at least one command for the container".into())
        );
        assert_eq!(
            ExecRequest::parse("command=ls"),
            Err("you must specify at least 1 of stdin, stdout, stderr".into())
        );
        assert!(ExecRequest::parse("command=%zz&stdout=true").is_err());
    }

    #[test]
    fn status_frames_as_kubectl_reads_them() {
        let argv: Vec<String> = ["sh", "-c", "exit 3"].map(String::from).to_vec();
        assert_eq!(
            ChannelStatus::of(&argv, &Ok(0)).to_json(),
            r#"{"metadata":{},"status":"Success"}"#
        );
        assert_eq!(
            ChannelStatus::of(&argv, &Ok(3)).to_json(),
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
        );
        assert_eq!(
            ChannelStatus::of(&argv, &Err("boom".into())).to_json(),
            r#"{"metadata":{},"status":"Failure","message":"Internal error occurred: error executing command in container: boom","reason":"InternalError","details":{"causes":[{"message":"error executing command in container: boom"}]},"code":500}"#
        );
    }

    #[test]
    fn resize_payloads() {
        assert_eq!(parse_resize(br#"{"Width":80,"Height":24}"#), Some((80, 24)));
        assert_eq!(parse_resize(b"{\"Width\":0,\"Height\":0}\n"), Some((0, 0)));
        assert_eq!(parse_resize(b"nope"), None);
    }
}
