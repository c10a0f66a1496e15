//! The agent's HTTPS server: what the API server proxies `pods/{name}/log` to
//! (`GET /containerLogs/{namespace}/{pod}/{container}`, kubectl-wire §8) and `pods/{name}/exec`
//! to (`GET /exec/{namespace}/{pod}/{container}`, a WebSocket; see [`exec`]), and
//! `pods/{name}/portforward` to (`GET /portForward/{namespace}/{pod}`, SPDY/3.1 tunnelled in a
//! WebSocket or the plain channel protocol; see [`portforward`] and [`spdy`]).
//!
//! The certificate is self-signed, made with rcgen at every start (the API server does not verify
//! it, as Kubernetes does not without `--kubelet-certificate-authority`). Requests must carry
//! `Authorization: Bearer <token>`, the token the agent itself uses against the API server.
//!
//! Logs are the runtime's CRI-format files (`<RFC3339Nano> <stream> <P|F> <text>`), read back
//! the way the kubelet does: which instance is the pod status's current or last-terminated one,
//! `previous` the one before, `tailLines` counts whole lines, `timestamps` keeps the time stamp
//! (re-printed with 9 fraction digits), `sinceSeconds`/`sinceTime` skip older lines,
//! `limitBytes` caps the answer, and `follow` streams until the instance exits. With a
//! WebSocket upgrade the same bytes go out as messages: `v5.channel.k8s.io`/`v4.channel.k8s.io`
//! (channel 1, stdout) or `binary.k8s.io` (raw), then a normal close.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ContainerStatus;
use serde_json::json;

use crate::runtime::Runtime;
use crate::worker::{PodTable, PodView};

pub mod exec;
pub mod portforward;
pub mod spdy;

/// How often a followed log file is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Where and for whom the server listens.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    /// The bearer token requests must carry.
    pub token: String,
    /// Extra names for the certificate (the node name, the node IP).
    pub names: Vec<String>,
}

struct AppState {
    token: String,
    table: Arc<PodTable>,
    runtime: Arc<dyn Runtime>,
}

/// A running server.
pub struct AgentServer {
    pub addr: SocketAddr,
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl AgentServer {
    /// Stops accepting and waits briefly for open requests (followed logs are cut).
    pub async fn shutdown(self) {
        self.handle
            .graceful_shutdown(Some(Duration::from_millis(500)));
        let _ = self.task.await;
    }
}

/// Binds and starts the server; ready when this returns.
pub async fn start(
    cfg: ServerConfig,
    table: Arc<PodTable>,
    runtime: Arc<dyn Runtime>,
) -> std::io::Result<AgentServer> {
    let mut names = vec!["localhost".to_string(), cfg.bind.ip().to_string()];
    names.extend(cfg.names.iter().cloned());
    names.sort();
    names.dedup();
    let key = rcgen::generate_simple_self_signed(names).map_err(std::io::Error::other)?;
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
        key.cert.pem().into_bytes(),
        key.signing_key.serialize_pem().into_bytes(),
    )
    .await?;
    let listener = std::net::TcpListener::bind(cfg.bind)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let state = Arc::new(AppState {
        token: cfg.token,
        table,
        runtime,
    });
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/containerLogs/{namespace}/{pod}/{container}", get(logs))
        .route(
            "/exec/{namespace}/{pod}/{container}",
            get(exec::exec).post(exec::exec),
        )
        .route(
            "/portForward/{namespace}/{pod}",
            get(portforward::port_forward).post(portforward::port_forward),
        )
        .route(
            "/attach/{namespace}/{pod}/{container}",
            get(exec::attach).post(exec::attach),
        )
        .fallback(|| async {
            status_response(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            )
        })
        .with_state(state);
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp_rustls(listener, tls)?.handle(handle.clone());
    let task = tokio::spawn(async move { server.serve(app.into_make_service()).await });
    Ok(AgentServer { addr, handle, task })
}

/// A `metav1.Status` error answer.
fn status_response(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn bad_request(message: &str) -> Response {
    status_response(StatusCode::BAD_REQUEST, "BadRequest", message)
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    !b.is_empty()
        && a.len() == b.len()
        && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The query of a log request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub tail_lines: Option<usize>,
    pub timestamps: bool,
    pub since: Option<Timestamp>,
    pub limit_bytes: Option<u64>,
}

impl LogOptions {
    fn parse(q: &HashMap<String, String>, now: Timestamp) -> Result<Self, String> {
        let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
        let num = |k: &str| -> Result<Option<i64>, String> {
            q.get(k)
                .filter(|v| !v.is_empty())
                .map(|v| v.parse::<i64>().map_err(|_| format!("invalid {k}: {v:?}")))
                .transpose()
        };
        let mut since = None;
        if let Some(s) = num("sinceSeconds")? {
            if s <= 0 {
                return Err("sinceSeconds must be greater than 0".into());
            }
            since = Some(now - jiff::SignedDuration::from_secs(s));
        }
        if let Some(t) = q.get("sinceTime").filter(|v| !v.is_empty()) {
            since = Some(
                t.parse::<Timestamp>()
                    .map_err(|_| format!("invalid sinceTime: {t:?}"))?,
            );
        }
        let tail_lines = match num("tailLines")? {
            Some(n) if n < 0 => None,
            Some(n) => Some(n as usize),
            None => None,
        };
        let limit_bytes = match num("limitBytes")? {
            Some(n) if n < 1 => return Err("limitBytes must be greater than 0".into()),
            Some(n) => Some(n as u64),
            None => None,
        };
        Ok(LogOptions {
            follow: flag("follow"),
            previous: flag("previous"),
            tail_lines,
            timestamps: flag("timestamps"),
            since,
            limit_bytes,
        })
    }
}

fn find_status<'a>(view: &'a PodView, container: &str) -> Option<&'a ContainerStatus> {
    let s = &view.status;
    s.container_statuses
        .iter()
        .flatten()
        .chain(s.init_container_statuses.iter().flatten())
        .find(|c| c.name == container)
}

/// Which instance's log to serve (the kubelet's `validateContainerLogStatus`): its id.
pub fn pick_instance(
    status: Option<&ContainerStatus>,
    container: &str,
    pod: &str,
    previous: bool,
) -> Result<String, String> {
    let waiting = |reason: &str| {
        format!("container \"{container}\" in pod \"{pod}\" is waiting to start: {reason}")
    };
    let Some(st) = status else {
        return Err(waiting("ContainerCreating"));
    };
    let last_terminated = st
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.container_id.clone())
        .filter(|id| !id.is_empty());
    if previous {
        return last_terminated.ok_or_else(|| {
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")
        });
    }
    let state = st.state.clone().unwrap_or_default();
    if state.running.is_some() {
        if let Some(id) = st.container_id.clone().filter(|id| !id.is_empty()) {
            return Ok(id);
        }
    } else if let Some(t) = &state.terminated {
        if let Some(id) = t
            .container_id
            .clone()
            .or_else(|| st.container_id.clone())
            .filter(|id| !id.is_empty())
        {
            return Ok(id);
        }
    } else if let Some(id) = last_terminated {
        return Ok(id);
    }
    let reason = state
        .waiting
        .and_then(|w| w.reason)
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "ContainerCreating".to_string());
    Err(waiting(&reason))
}

async fn logs(
    State(state): State<Arc<AppState>>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !authorized(&headers, &state.token) {
        return status_response(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let opts = match LogOptions::parse(&q, Timestamp::now()) {
        Ok(o) => o,
        Err(e) => return bad_request(&e),
    };
    let Some(view) = state.table.get(&namespace, &pod) else {
        // Bound to this node but not picked up yet.
        return bad_request(&format!(
            "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
        ));
    };
    let id = match pick_instance(
        find_status(&view, &container),
        &container,
        &pod,
        opts.previous,
    ) {
        Ok(id) => id,
        Err(e) => return bad_request(&e),
    };
    let Some(inst) = view
        .instances
        .get(&container)
        .and_then(|l| l.iter().find(|i| i.id == id))
        .cloned()
    else {
        return bad_request(&format!(
            "container \"{container}\" in pod \"{pod}\" is not available"
        ));
    };
    let path = state
        .runtime
        .log_path(&view.pod_ref, &container, inst.attempt);
    let follow = opts.follow && inst.running;
    let reader = LogReader::new(path, opts);
    let websocket = match upgrade {
        Ok(up) => {
            let offered = headers
                .get_all("sec-websocket-protocol")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>();
            match LogProtocol::negotiate(offered.iter().copied()) {
                Some(p) => Some((up, p)),
                None => {
                    return bad_request(&format!(
                        "unsupported log streaming protocol {:?}: the agent speaks v5.channel.k8s.io, v4.channel.k8s.io and binary.k8s.io",
                        offered.join(", ")
                    ));
                }
            }
        }
        Err(_) => None,
    };
    let follow_state = Follow {
        reader,
        table: state.table.clone(),
        namespace,
        pod,
        container,
        id,
        first: true,
        ended: !follow,
    };
    if let Some((up, protocol)) = websocket {
        return up
            .protocols([protocol.name()])
            .on_upgrade(move |ws| log_session(ws, protocol, follow_state));
    }
    if !follow {
        let reader = follow_state.reader;
        let out = tokio::task::spawn_blocking(move || {
            let mut r = reader;
            r.read_all()
        })
        .await
        .unwrap_or_default();
        return (StatusCode::OK, [("content-type", "text/plain")], out).into_response();
    }
    let stream = futures::stream::unfold(follow_state, |mut f| async move {
        let chunk = f.next_chunk().await?;
        Some((Ok::<Bytes, std::io::Error>(chunk), f))
    });
    (
        StatusCode::OK,
        [("content-type", "text/plain")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The WebSocket protocols a log can be streamed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogProtocol {
    /// `v5.channel.k8s.io` / `v4.channel.k8s.io`: binary messages whose first byte is the
    /// channel, 1 (stdout) for the log.
    Channel(&'static str),
    /// `binary.k8s.io`: the log bytes as binary messages.
    Binary,
}

impl LogProtocol {
    pub fn name(self) -> &'static str {
        match self {
            LogProtocol::Channel(n) => n,
            LogProtocol::Binary => "binary.k8s.io",
        }
    }

    /// The first protocol the agent speaks, in the client's order of preference.
    pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<LogProtocol> {
        offered
            .into_iter()
            .flat_map(|h| h.split(','))
            .map(str::trim)
            .find_map(|n| match n {
                "v5.channel.k8s.io" => Some(LogProtocol::Channel("v5.channel.k8s.io")),
                "v4.channel.k8s.io" => Some(LogProtocol::Channel("v4.channel.k8s.io")),
                "binary.k8s.io" => Some(LogProtocol::Binary),
                _ => None,
            })
    }

    fn message(self, chunk: &[u8]) -> Message {
        let mut b = Vec::with_capacity(chunk.len() + 1);
        if let LogProtocol::Channel(_) = self {
            b.push(exec::STDOUT);
        }
        b.extend_from_slice(chunk);
        Message::Binary(Bytes::from(b))
    }
}

/// A log over a WebSocket: the chunks as messages, then a normal close. A client that goes
/// away ends it.
async fn log_session(ws: WebSocket, protocol: LogProtocol, mut follow: Follow) {
    use futures::{SinkExt, StreamExt};
    let (mut sink, mut incoming) = ws.split();
    let mut client_gone = tokio::spawn(async move {
        while let Some(Ok(m)) = incoming.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    });
    let send = async {
        while let Some(chunk) = follow.next_chunk().await {
            if sink.send(protocol.message(&chunk)).await.is_err() {
                return;
            }
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: 1000,
                reason: "".into(),
            })))
            .await;
    };
    tokio::select! {
        _ = send => {
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut client_gone).await;
        }
        _ = &mut client_gone => {}
    }
    client_gone.abort();
}

/// A followed log: new lines as they are written, until the instance exits.
struct Follow {
    reader: LogReader,
    table: Arc<PodTable>,
    namespace: String,
    pod: String,
    container: String,
    id: String,
    first: bool,
    ended: bool,
}

impl Follow {
    fn still_running(&self) -> bool {
        self.table
            .get(&self.namespace, &self.pod)
            .and_then(|v| v.instances.get(&self.container).cloned())
            .is_some_and(|l| l.iter().any(|i| i.id == self.id && i.running))
    }

    /// The next non-empty chunk; None when the log ends.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            // `ended` from the start: one read of what is there (a log not followed).
            if (self.ended && !self.first) || self.reader.limit_reached() {
                return None;
            }
            if !self.ended && !self.still_running() {
                // Let the runtime flush the last lines, then read them.
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.ended = true;
            }
            let first = std::mem::replace(&mut self.first, false);
            let out = if first {
                self.reader.read_all()
            } else {
                self.reader.read_new()
            };
            if !out.is_empty() {
                return Some(Bytes::from(out));
            }
            if self.ended {
                return None;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
}

/// One CRI log record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record<'a> {
    time: &'a str,
    /// The record ends a line (`F`), rather than being part of one (`P`).
    full: bool,
    text: &'a [u8],
}

/// Parses `<time> <stream> <tag> <text>`; a line not in that shape is kept whole.
fn parse_record(line: &[u8]) -> Record<'_> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let (Some(time), Some(_stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
        return Record {
            time: "",
            full: true,
            text: line,
        };
    };
    let text = parts.next().unwrap_or_default();
    let time = std::str::from_utf8(time).unwrap_or("");
    Record {
        time,
        full: !tag.split(|b| *b == b':').any(|t| t == b"P"),
        text,
    }
}

/// `2006-01-02T15:04:05.000000000Z`: Go's RFC3339NanoFixed, as the kubelet prints timestamps.
fn fixed_nanos(time: &str) -> String {
    match time.parse::<Timestamp>() {
        Ok(t) => {
            let secs = Timestamp::from_second(t.as_second())
                .unwrap_or(t)
                .to_string();
            format!(
                "{}.{:09}Z",
                secs.trim_end_matches('Z'),
                t.subsec_nanosecond().max(0)
            )
        }
        Err(_) => time.to_string(),
    }
}

/// Reads a CRI log file and formats it for a client, remembering where it stopped.
struct LogReader {
    path: PathBuf,
    opts: LogOptions,
    /// Bytes of the file consumed (whole lines only).
    offset: u64,
    /// The next record starts a line (for the timestamp prefix).
    at_line_start: bool,
    written: u64,
}

impl LogReader {
    fn new(path: PathBuf, opts: LogOptions) -> Self {
        LogReader {
            path,
            opts,
            offset: 0,
            at_line_start: true,
            written: 0,
        }
    }

    fn limit_reached(&self) -> bool {
        self.opts.limit_bytes.is_some_and(|l| self.written >= l)
    }

    /// Whole lines of the file from `offset`.
    fn read_lines_from(path: &Path, offset: u64) -> Vec<u8> {
        let Ok(mut f) = std::fs::File::open(path) else {
            return Vec::new();
        };
        if f.seek(SeekFrom::Start(offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        match buf.iter().rposition(|b| *b == b'\n') {
            Some(end) => {
                buf.truncate(end + 1);
                buf
            }
            None => Vec::new(),
        }
    }

    /// Everything so far, with `tailLines` and the since filter applied.
    fn read_all(&mut self) -> Vec<u8> {
        let buf = Self::read_lines_from(&self.path, 0);
        self.offset = buf.len() as u64;
        let records: Vec<Record> = buf
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(parse_record)
            .collect();
        let records = self.since_filter(records);
        let start = match self.opts.tail_lines {
            Some(n) => tail_start(&records, n),
            None => 0,
        };
        self.format(&records[start..])
    }

    /// Lines added since the last read.
    fn read_new(&mut self) -> Vec<u8> {
        let buf = Self::read_lines_from(&self.path, self.offset);
        self.offset += buf.len() as u64;
        let records: Vec<Record> = buf
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(parse_record)
            .collect();
        let records = self.since_filter(records);
        self.format(&records)
    }

    fn since_filter<'a>(&self, records: Vec<Record<'a>>) -> Vec<Record<'a>> {
        let Some(since) = self.opts.since else {
            return records;
        };
        records
            .into_iter()
            .filter(|r| r.time.parse::<Timestamp>().map_or(true, |t| t >= since))
            .collect()
    }

    fn format(&mut self, records: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            if self.opts.timestamps && self.at_line_start {
                out.extend_from_slice(fixed_nanos(r.time).as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(r.text);
            if r.full {
                out.push(b'\n');
            }
            self.at_line_start = r.full;
        }
        if let Some(limit) = self.opts.limit_bytes {
            let room = limit.saturating_sub(self.written) as usize;
            out.truncate(room);
        }
        self.written += out.len() as u64;
        out
    }
}

/// The index of the first record of the last `n` whole lines.
fn tail_start(records: &[Record], n: usize) -> usize {
    if n == 0 {
        return records.len();
    }
    let mut lines = 0;
    let mut i = records.len();
    while i > 0 {
        // A line ends at a full record; count the line that ends at records[i-1].
        let end = i - 1;
        if records[end].full || end == records.len() - 1 {
            lines += 1;
            if lines > n {
                return i;
            }
        }
        i -= 1;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    };

    const LOG: &str = "2026-01-01T00:00:01.5Z stdout F one\n\
                       2026-01-01T00:00:02.000000001Z stderr F two\n\
                       2026-01-01T00:00:03Z stdout P thr\n\
                       2026-01-01T00:00:03.1Z stdout F ee\n\
                       2026-01-01T00:00:04Z stdout F four\n";

    fn reader(opts: LogOptions) -> (LogReader, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "skiff-log-test-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("0.log");
        std::fs::write(&path, LOG).unwrap();
        (LogReader::new(path.clone(), opts), dir)
    }

    fn rand_suffix() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }

    fn read(opts: LogOptions) -> String {
        let (mut r, dir) = reader(opts);
        let out = String::from_utf8(r.read_all()).unwrap();
        let _ = std::fs::remove_dir_all(dir);
        out
    }

    #[test]
    fn plain_tail_timestamps_since_limit() {
        assert_eq!(read(LogOptions::default()), "one\ntwo\nthree\nfour\n");
        let tail = |n| {
            read(LogOptions {
                tail_lines: Some(n),
                ..LogOptions::default()
            })
        };
        assert_eq!(tail(1), "four\n");
        assert_eq!(tail(2), "three\nfour\n");
        assert_eq!(tail(0), "");
        assert_eq!(tail(10), "one\ntwo\nthree\nfour\n");
        assert_eq!(
            read(LogOptions {
                timestamps: true,
                tail_lines: Some(3),
                ..LogOptions::default()
            }),
            "2026-01-01T00:00:02.000000001Z two\n\
             2026-01-01T00:00:03.000000000Z three\n\
             2026-01-01T00:00:04.000000000Z four\n"
        );
        assert_eq!(
            read(LogOptions {
                since: Some("2026-01-01T00:00:02Z".parse().unwrap()),
                ..LogOptions::default()
            }),
            "two\nthree\nfour\n"
        );
        assert_eq!(
            read(LogOptions {
                limit_bytes: Some(6),
                ..LogOptions::default()
            }),
            "one\ntw"
        );
    }

    #[test]
    fn follow_reads_only_new_whole_lines() {
        let (mut r, dir) = reader(LogOptions::default());
        assert_eq!(r.read_all().len(), "one\ntwo\nthree\nfour\n".len());
        assert!(r.read_new().is_empty());
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&r.path)
            .unwrap();
        f.write_all(b"2026-01-01T00:00:05Z stdout F five\n2026-01-01T00:00:06Z stdout F si")
            .unwrap();
        assert_eq!(r.read_new(), b"five\n");
        f.write_all(b"x\n").unwrap();
        assert_eq!(r.read_new(), b"six\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn options_from_the_query() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let q: HashMap<String, String> = [
            ("follow", "true"),
            ("tailLines", "3"),
            ("timestamps", "true"),
            ("sinceSeconds", "60"),
            ("limitBytes", "100"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let o = LogOptions::parse(&q, now).unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!(o.tail_lines, Some(3));
        assert_eq!(o.limit_bytes, Some(100));
        assert_eq!(o.since, Some("2026-01-01T00:00:00Z".parse().unwrap()));
        let bad: HashMap<String, String> = [("tailLines".to_string(), "x".to_string())].into();
        assert!(LogOptions::parse(&bad, now).is_err());
    }

    fn status(state: ContainerState, last: Option<&str>) -> ContainerStatus {
        ContainerStatus {
            name: "c".into(),
            container_id: Some("host://cur".into()),
            state: Some(state),
            last_state: Some(ContainerState {
                terminated: last.map(|id| ContainerStateTerminated {
                    container_id: Some(id.into()),
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }
    }

    #[test]
    fn picks_the_instance_like_the_kubelet() {
        let running = ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..ContainerState::default()
        };
        let waiting = |r: &str| ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(r.into()),
                message: None,
            }),
            ..ContainerState::default()
        };
        let s = status(running.clone(), Some("host://old"));
        assert_eq!(
            pick_instance(Some(&s), "c", "p", false),
            Ok("host://cur".into())
        );
        assert_eq!(
            pick_instance(Some(&s), "c", "p", true),
            Ok("host://old".into())
        );
        let s = status(running, None);
        assert_eq!(
            pick_instance(Some(&s), "c", "p", true),
            Err("previous terminated container \"c\" in pod \"p\" not found".into())
        );
        // CrashLoopBackOff: the last terminated instance.
        let s = status(waiting("CrashLoopBackOff"), Some("host://old"));
        assert_eq!(
            pick_instance(Some(&s), "c", "p", false),
            Ok("host://old".into())
        );
        let s = status(waiting("ContainerCreating"), None);
        assert_eq!(
            pick_instance(Some(&s), "c", "p", false),
            Err("container \"c\" in pod \"p\" is waiting to start: ContainerCreating".into())
        );
        assert_eq!(
            pick_instance(None, "c", "p", false),
            Err("container \"c\" in pod \"p\" is waiting to start: ContainerCreating".into())
        );
    }

    #[test]
    fn log_websocket_protocols() {
        assert_eq!(
            LogProtocol::negotiate(["base64.binary.k8s.io, binary.k8s.io, v4.channel.k8s.io"]),
            Some(LogProtocol::Binary)
        );
        assert_eq!(
            LogProtocol::negotiate(["v5.channel.k8s.io", "v4.channel.k8s.io"]),
            Some(LogProtocol::Channel("v5.channel.k8s.io"))
        );
        assert_eq!(LogProtocol::negotiate(["channel.k8s.io"]), None);
        let Message::Binary(b) = LogProtocol::Channel("v4.channel.k8s.io").message(b"hi") else {
            panic!("binary");
        };
        assert_eq!(&b[..], b"\x01hi");
        let Message::Binary(b) = LogProtocol::Binary.message(b"hi") else {
            panic!("binary");
        };
        assert_eq!(&b[..], b"hi");
    }

    #[test]
    fn tokens() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "t"));
        h.insert("authorization", "Bearer t".parse().unwrap());
        assert!(authorized(&h, "t"));
        assert!(!authorized(&h, "u"));
        assert!(!authorized(&h, ""));
    }
}
