//! gRPC probes (spec §6.3): one unary `grpc.health.v1.Health/Check` call over plain-text HTTP/2
//! (h2c with prior knowledge), hand-rolled on the `h2` crate with hand-written protobuf for the
//! two tiny messages involved:
//!
//! * `HealthCheckRequest { string service = 1; }`
//! * `HealthCheckResponse { ServingStatus status = 1; }` (UNKNOWN 0, SERVING 1, NOT_SERVING 2,
//!   SERVICE_UNKNOWN 3)
//!
//! One deadline (the probe's timeout) covers connecting and the call, as on a kubelet. The
//! connection counts as made once TCP is open and the server has sent its first HTTP/2 bytes
//! (its SETTINGS); until then failures are retried, so a refused connection reports the connect
//! timeout. Outcomes and their texts:
//!
//! * status SERVING: success;
//! * another status: `service unhealthy (responded with "NOT_SERVING")`;
//! * no connection in time: `timeout: failed to connect service "IP:PORT" within 1s: context
//!   deadline exceeded`; an address that cannot be used at all: `error: failed to connect
//!   service at "IP:PORT": <err>`;
//! * the call did not finish in time (or the server said DEADLINE_EXCEEDED): `timeout: health
//!   rpc did not complete within 1s`;
//! * grpc-status UNIMPLEMENTED: `error: this server does not implement the grpc health protocol
//!   (grpc.health.v1.Health): <grpc-message>`;
//! * any other error: `error: health rpc probe failed: rpc error: code = <Code> desc = <text>`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::{PROBE_USER_AGENT, join_host_port};
use crate::probe::ProbeOutcome;

/// The method every gRPC probe calls.
pub const HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// The largest response message accepted.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// gRPC status codes used here.
pub mod code {
    pub const OK: u32 = 0;
    pub const UNKNOWN: u32 = 2;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
}

/// A gRPC probe of `grpc.health.v1.Health/Check` for `service` at `host:port`.
pub async fn grpc_check(host: &str, port: u16, service: &str, timeout: Duration) -> ProbeOutcome {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addr_text = join_host_port(bare, port);
    let addr = match resolve(bare, port).await {
        Ok(a) => a,
        Err(e) => {
            return ProbeOutcome::Failure(format!(
                "error: failed to connect service at {}: {e}",
                quote(&addr_text)
            ));
        }
    };
    let mut connected = false;
    let run = async {
        let conn = connect(addr).await;
        connected = true;
        call(conn, &addr_text, service, timeout).await
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(status)) => health_outcome(status),
        Ok(Err(e)) => ProbeOutcome::Failure(rpc_error_text(&e, timeout)),
        Err(_) if connected => ProbeOutcome::Failure(rpc_timeout_text(timeout)),
        Err(_) => ProbeOutcome::Failure(format!(
            "timeout: failed to connect service {} within {}: context deadline exceeded",
            quote(&addr_text),
            go_duration(timeout)
        )),
    }
}

/// The outcome for a `HealthCheckResponse.status`.
pub fn health_outcome(status: i32) -> ProbeOutcome {
    if status == 1 {
        ProbeOutcome::Success
    } else {
        ProbeOutcome::Failure(format!(
            "service unhealthy (responded with {})",
            quote(&serving_status_name(status))
        ))
    }
}

/// The probe output for a failed call.
pub fn rpc_error_text(e: &RpcStatus, timeout: Duration) -> String {
    match e.code {
        code::UNIMPLEMENTED => format!(
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
            e.message
        ),
        code::DEADLINE_EXCEEDED => rpc_timeout_text(timeout),
        _ => format!("error: health rpc probe failed: {e}"),
    }
}

fn rpc_timeout_text(timeout: Duration) -> String {
    format!(
        "timeout: health rpc did not complete within {}",
        go_duration(timeout)
    )
}

/// A non-OK gRPC status. Displays as Go's status errors do:
/// `rpc error: code = NotFound desc = unknown service`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcStatus {
    pub code: u32,
    pub message: String,
}

impl RpcStatus {
    fn new(code: u32, message: impl Into<String>) -> Self {
        RpcStatus {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for RpcStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rpc error: code = {} desc = {}",
            code_name(self.code),
            self.message
        )
    }
}

/// A gRPC code's name as Go prints it.
pub fn code_name(code: u32) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    match NAMES.get(code as usize) {
        Some(n) => (*n).to_string(),
        None => format!("Code({code})"),
    }
}

/// The name of a `ServingStatus` value (the number itself when it has none).
pub fn serving_status_name(status: i32) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        n => n.to_string(),
    }
}

/// A Go `time.Duration` as `%v` prints it (`1s`, `1m30s`, `1h0m0s`, `500ms`).
pub fn go_duration(d: Duration) -> String {
    if d.subsec_nanos() != 0 && d.as_secs() == 0 {
        return format!("{}ms", d.as_millis());
    }
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, (s / 60) % 60, s % 60);
    if h > 0 {
        format!("{h}h{m}m{sec}s")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else {
        format!("{sec}s")
    }
}

/// Go's `%q` of a plain string.
fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// The protobuf encoding of `HealthCheckRequest { service }` (empty for the empty service).
pub fn encode_request(service: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        out.push(0x0a); // field 1, length-delimited
        put_varint(&mut out, service.len() as u64);
        out.extend_from_slice(service.as_bytes());
    }
    out
}

/// Decodes a `HealthCheckResponse`, returning its status (0 when absent). Unknown fields are
/// skipped; the last `status` wins.
pub fn decode_response(mut b: &[u8]) -> Result<i32, String> {
    let mut status = 0i32;
    while !b.is_empty() {
        let key = take_varint(&mut b)?;
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 {
            return Err("proto: invalid field number 0".into());
        }
        match wire {
            0 => {
                let v = take_varint(&mut b)?;
                if field == 1 {
                    status = v as i32;
                }
            }
            1 => b = b.get(8..).ok_or("proto: unexpected end of message")?,
            2 => {
                let n = usize::try_from(take_varint(&mut b)?).map_err(|_| "proto: bad length")?;
                b = b.get(n..).ok_or("proto: unexpected end of message")?;
            }
            5 => b = b.get(4..).ok_or("proto: unexpected end of message")?,
            w => return Err(format!("proto: cannot parse wire type {w}")),
        }
    }
    Ok(status)
}

/// Decodes a `HealthCheckRequest`, returning its service (for test servers).
pub fn decode_request(mut b: &[u8]) -> Result<String, String> {
    let mut service = String::new();
    while !b.is_empty() {
        let key = take_varint(&mut b)?;
        match key & 7 {
            0 => {
                take_varint(&mut b)?;
            }
            1 => b = b.get(8..).ok_or("proto: unexpected end of message")?,
            2 => {
                let n = usize::try_from(take_varint(&mut b)?).map_err(|_| "proto: bad length")?;
                let v = b.get(..n).ok_or("proto: unexpected end of message")?;
                if key >> 3 == 1 {
                    service = String::from_utf8(v.to_vec())
                        .map_err(|_| "proto: string field contains invalid UTF-8")?;
                }
                b = &b[n..];
            }
            5 => b = b.get(4..).ok_or("proto: unexpected end of message")?,
            w => return Err(format!("proto: cannot parse wire type {w}")),
        }
    }
    Ok(service)
}

/// The protobuf encoding of `HealthCheckResponse { status }`.
pub fn encode_response(status: i32) -> Vec<u8> {
    let mut out = Vec::new();
    if status != 0 {
        out.push(0x08); // field 1, varint
        put_varint(&mut out, status as i64 as u64);
    }
    out
}

/// A message in gRPC's length-prefixed framing (uncompressed).
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Splits one length-prefixed message off `b`: `Ok(None)` when `b` holds no complete message.
pub fn unframe(b: &[u8]) -> Result<Option<(&[u8], usize)>, String> {
    if b.len() < 5 {
        return Ok(None);
    }
    if b[0] != 0 {
        return Err("grpc: compressed flag set with identity or empty encoding".into());
    }
    let n = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
    if n > MAX_MESSAGE {
        return Err(format!(
            "grpc: received message larger than max ({n} vs. {MAX_MESSAGE})"
        ));
    }
    Ok(b.get(5..5 + n).map(|m| (m, 5 + n)))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(b: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for i in 0..10 {
        let Some((&byte, rest)) = b.split_first() else {
            return Err("proto: unexpected end of message".into());
        };
        *b = rest;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("proto: integer overflow".into())
}

/// `grpc-message` is percent-encoded.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(hex) = b.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The gRPC code for a non-200 HTTP status (gRPC's HTTP-to-status mapping).
fn code_for_http_status(status: u16) -> u32 {
    match status {
        400 => code::INTERNAL,
        401 => 16,
        403 => 7,
        404 => code::UNIMPLEMENTED,
        429 | 502 | 503 | 504 => code::UNAVAILABLE,
        _ => code::UNKNOWN,
    }
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    match tokio::net::lookup_host((host, port)).await {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| format!("dial tcp: lookup {host}: no such host")),
        Err(_) => Err(format!("dial tcp: lookup {host}: no such host")),
    }
}

/// An HTTP/2 connection: the request handle and the task driving the connection (aborted when
/// this is dropped).
struct Conn {
    send: h2::client::SendRequest<Bytes>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Connects until a server answers with HTTP/2; the caller's deadline ends the retries.
async fn connect(addr: SocketAddr) -> Conn {
    let mut pause = Duration::from_millis(50);
    loop {
        if let Some(c) = try_connect(addr).await {
            return c;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

async fn try_connect(addr: SocketAddr) -> Option<Conn> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let _ = tcp.set_nodelay(true);
    let (tx, rx) = oneshot::channel();
    let io = FirstRead {
        inner: tcp,
        spoke: Some(tx),
    };
    let (send, connection) = h2::client::handshake(io).await.ok()?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let conn = Conn { send, driver };
    // The server's preface (SETTINGS) arrived: the connection is up.
    rx.await.ok()?;
    Some(conn)
}

/// The unary call; `Ok` carries `HealthCheckResponse.status`.
async fn call(
    conn: Conn,
    authority: &str,
    service: &str,
    timeout: Duration,
) -> Result<i32, RpcStatus> {
    let unavailable = |e: h2::Error| RpcStatus::new(code::UNAVAILABLE, h2_text(&e));
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://{authority}{HEALTH_CHECK_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", PROBE_USER_AGENT)
        .header(
            "grpc-timeout",
            format!("{}m", timeout.as_millis().clamp(1, 99_999_999)),
        )
        .body(())
        .map_err(|e| RpcStatus::new(code::INTERNAL, e.to_string()))?;
    let mut send = conn.send.clone().ready().await.map_err(unavailable)?;
    let (response, mut body_out) = send.send_request(request, false).map_err(unavailable)?;
    body_out
        .send_data(Bytes::from(frame(&encode_request(service))), true)
        .map_err(unavailable)?;
    let response = response.await.map_err(unavailable)?;
    let (head, mut body) = response.into_parts();
    if head.status != http::StatusCode::OK {
        return Err(RpcStatus::new(
            code_for_http_status(head.status.as_u16()),
            format!(
                "unexpected HTTP status code received from server: {} ({})",
                head.status.as_u16(),
                head.status.canonical_reason().unwrap_or("")
            ),
        ));
    }
    if let Some(s) = status_in(&head.headers) {
        // A trailers-only response.
        return Err(s.unwrap_or_else(|| {
            RpcStatus::new(code::INTERNAL, "server sent OK without a message")
        }));
    }
    let content_type = head
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/grpc") {
        return Err(RpcStatus::new(
            code::UNKNOWN,
            format!("malformed header: unexpected content-type {content_type:?}"),
        ));
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(unavailable)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
        if buf.len() > MAX_MESSAGE + 5 {
            return Err(RpcStatus::new(
                code::RESOURCE_EXHAUSTED,
                "grpc: received message larger than max",
            ));
        }
    }
    let trailers = body.trailers().await.map_err(unavailable)?;
    match trailers.as_ref().and_then(status_in) {
        Some(Some(s)) => return Err(s),
        Some(None) => {}
        None => {
            return Err(RpcStatus::new(
                code::INTERNAL,
                "server closed the stream without sending trailers",
            ));
        }
    }
    let (message, _) = unframe(&buf)
        .map_err(|e| RpcStatus::new(code::INTERNAL, e))?
        .ok_or_else(|| {
            RpcStatus::new(
                code::INTERNAL,
                "cardinality violation: expected <EOF> for non server-streaming RPCs, but received <EOF>",
            )
        })?;
    decode_response(message).map_err(|e| {
        RpcStatus::new(
            code::INTERNAL,
            format!("grpc: failed to unmarshal the received message: {e}"),
        )
    })
}

/// The `grpc-status` in a header block: None when absent, `Some(None)` for OK, `Some(Some(_))`
/// for an error.
fn status_in(h: &http::HeaderMap) -> Option<Option<RpcStatus>> {
    let raw = h.get("grpc-status")?;
    let code = raw
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(code::UNKNOWN);
    if code == code::OK {
        return Some(None);
    }
    let message = h
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some(Some(RpcStatus::new(code, message)))
}

fn h2_text(e: &h2::Error) -> String {
    if let Some(io) = e.get_io() {
        return format!("connection error: desc = \"{}\"", super::go_error_text(io));
    }
    e.to_string()
}

/// A stream that reports, once, that the peer sent its first bytes.
struct FirstRead<S> {
    inner: S,
    spoke: Option<oneshot::Sender<()>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstRead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(())))
            && buf.filled().len() > before
            && let Some(tx) = self.spoke.take()
        {
            let _ = tx.send(());
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstRead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_encoding() {
        assert_eq!(encode_request(""), Vec::<u8>::new());
        assert_eq!(encode_request("ok"), vec![0x0a, 2, b'o', b'k']);
        let long = "s".repeat(200);
        let enc = encode_request(&long);
        assert_eq!(&enc[..3], &[0x0a, 0xc8, 0x01]);
        assert_eq!(decode_request(&enc).unwrap(), long);
        assert_eq!(decode_request(&[]).unwrap(), "");
        assert_eq!(
            frame(&encode_request("ok")),
            vec![0, 0, 0, 0, 4, 0x0a, 2, b'o', b'k']
        );
    }

    #[test]
    fn response_decoding() {
        assert_eq!(decode_response(&[]), Ok(0));
        assert_eq!(decode_response(&[0x08, 1]), Ok(1));
        assert_eq!(decode_response(&encode_response(2)), Ok(2));
        // Unknown fields of every wire type are skipped; the last status wins.
        let msg = [
            0x10, 0x96, 0x01, // field 2 varint
            0x08, 0x02, // status 2
            0x19, 1, 2, 3, 4, 5, 6, 7, 8, // field 3 fixed64
            0x22, 2, b'h', b'i', // field 4 bytes
            0x2d, 1, 2, 3, 4, // field 5 fixed32
            0x08, 0x01, // status 1
        ];
        assert_eq!(decode_response(&msg), Ok(1));
        assert!(decode_response(&[0x08]).is_err());
        assert!(decode_response(&[0x0a, 5, 1]).is_err());
        assert!(decode_response(&[0x0b]).is_err());
        assert_eq!(
            unframe(&[0, 0, 0, 0, 2, 0x08, 1, 9]).unwrap(),
            Some((&[0x08, 1][..], 7))
        );
        assert_eq!(unframe(&[0, 0, 0, 0, 2, 0x08]).unwrap(), None);
        assert!(unframe(&[1, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn messages() {
        assert_eq!(health_outcome(1), ProbeOutcome::Success);
        assert_eq!(
            health_outcome(2),
            ProbeOutcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        assert_eq!(
            health_outcome(0),
            ProbeOutcome::Failure("service unhealthy (responded with \"UNKNOWN\")".into())
        );
        assert_eq!(
            health_outcome(7),
            ProbeOutcome::Failure("service unhealthy (responded with \"7\")".into())
        );
        let one = Duration::from_secs(1);
        assert_eq!(
            rpc_error_text(
                &RpcStatus::new(code::UNIMPLEMENTED, "unknown service grpc.health.v1.Health"),
                one
            ),
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): unknown service grpc.health.v1.Health"
        );
        assert_eq!(
            rpc_error_text(&RpcStatus::new(code::DEADLINE_EXCEEDED, "x"), one),
            "timeout: health rpc did not complete within 1s"
        );
        assert_eq!(
            rpc_error_text(&RpcStatus::new(5, "unknown service"), one),
            "error: health rpc probe failed: rpc error: code = NotFound desc = unknown service"
        );
        assert_eq!(code_name(99), "Code(99)");
        assert_eq!(go_duration(one), "1s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(percent_decode("a%20b%zz%"), "a b%zz%");
        assert_eq!(code_for_http_status(404), code::UNIMPLEMENTED);
    }
}
