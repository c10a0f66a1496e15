//! A gRPC health server over h2c (HTTP/2 with prior knowledge), written on the `h2` crate with
//! hand-written protobuf, for probe tests. `grpc.health.v1.Health/Check` answers:
//!
//! * service `""` or `"ok"`: SERVING (NOT_SERVING once `fail_after` has passed);
//! * `"bad"`: NOT_SERVING;
//! * `"hang"`: never answers (for deadline tests);
//! * any other service: grpc-status NOT_FOUND `unknown service`.
//!
//! Any other method (every method with `no_health`) gets a trailers-only grpc-status
//! UNIMPLEMENTED. Every call is printed on
//! stdout.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::net::TcpListener;

/// The one method served.
pub const CHECK: &str = "/grpc.health.v1.Health/Check";

/// Serves connections from `listener` until the process ends.
/// `no_health`: answer every method, Check too, with UNIMPLEMENTED (a server without the
/// health service).
pub async fn serve(listener: TcpListener, fail_after: Option<Duration>, no_health: bool) {
    let started = Instant::now();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let Ok(mut conn) = h2::server::handshake(tcp).await else {
                return;
            };
            while let Some(Ok((req, respond))) = conn.accept().await {
                let failing = fail_after.is_some_and(|d| started.elapsed() >= d);
                tokio::spawn(handle(req, respond, failing, no_health));
            }
        });
    }
}

async fn handle(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    failing: bool,
    no_health: bool,
) {
    let path = req.uri().path().to_string();
    if path != CHECK || no_health {
        say(format!("call {path}: unimplemented"));
        let (service, method) = path
            .trim_start_matches('/')
            .rsplit_once('/')
            .unwrap_or((path.as_str(), ""));
        let message = if service == "grpc.health.v1.Health" && !no_health {
            format!("unknown method {method} for service {service}")
        } else {
            format!("unknown service {service}")
        };
        let _ = respond.send_response(status_only(12, &message), true);
        return;
    }
    let mut body = req.into_body();
    let mut buf = BytesMut::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
    }
    let service = match buf.get(5..).map(decode_service) {
        Some(Some(s)) if buf[0] == 0 => s,
        _ => {
            let _ = respond.send_response(status_only(13, "bad request message"), true);
            return;
        }
    };
    let status = match service.as_str() {
        "" | "ok" if !failing => 1,
        "" | "ok" | "bad" => 2,
        "hang" => {
            say(format!("check {service:?}: hanging"));
            std::future::pending::<()>().await;
            return;
        }
        _ => {
            say(format!("check {service:?}: unknown service"));
            let _ = respond.send_response(status_only(5, "unknown service"), true);
            return;
        }
    };
    say(format!(
        "check {service:?}: {}",
        if status == 1 {
            "SERVING"
        } else {
            "NOT_SERVING"
        }
    ));
    let head = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .expect("response head");
    let Ok(mut stream) = respond.send_response(head, false) else {
        return;
    };
    // HealthCheckResponse { status = 1 (varint) }, length-prefixed.
    let message = [0u8, 0, 0, 0, 2, 0x08, status];
    let _ = stream.send_data(Bytes::copy_from_slice(&message), false);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let _ = stream.send_trailers(trailers);
}

/// Prints a line on stdout; a closed stdout is not an error.
fn say(line: String) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A trailers-only response carrying `grpc-status` and `grpc-message`.
fn status_only(code: u32, message: &str) -> http::Response<()> {
    let encoded: String = message
        .bytes()
        .map(|b| {
            if (0x20..0x7f).contains(&b) && b != b'%' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .header("grpc-status", code.to_string())
        .header("grpc-message", encoded)
        .body(())
        .expect("status head")
}

/// The `service` (field 1) of a `HealthCheckRequest`; None when the message is malformed.
pub fn decode_service(mut b: &[u8]) -> Option<String> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&x, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(x & 0x7f) << shift;
            if x & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut service = String::new();
    while !b.is_empty() {
        let key = varint(&mut b)?;
        match key & 7 {
            0 => {
                varint(&mut b)?;
            }
            1 => b = b.get(8..)?,
            2 => {
                let n = usize::try_from(varint(&mut b)?).ok()?;
                let v = b.get(..n)?;
                if key >> 3 == 1 {
                    service = String::from_utf8(v.to_vec()).ok()?;
                }
                b = &b[n..];
            }
            5 => b = b.get(4..)?,
            _ => return None,
        }
    }
    Some(service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_decode() {
        assert_eq!(decode_service(&[]), Some(String::new()));
        assert_eq!(
            decode_service(&[0x0a, 3, b'b', b'a', b'd']),
            Some("bad".into())
        );
        assert_eq!(decode_service(&[0x0a, 3, b'b']), None);
        assert_eq!(status_only(12, "a b%").headers()["grpc-message"], "a b%25");
    }
}
