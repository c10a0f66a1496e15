//! The probe and hook runners of `probe_io` against tiny local servers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_agent::ProbeOutcome;
use skiff_agent::probe_io::{self, HOOK_USER_AGENT, PROBE_USER_AGENT};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

const PATIENCE: Duration = Duration::from_secs(30);

type Requests = Arc<Mutex<Vec<String>>>;

/// Answers each request with `respond(request head)`; records the request heads.
async fn serve<F>(respond: F) -> (u16, Requests)
where
    F: Fn(&str) -> String + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Requests = Arc::default();
    let log = seen.clone();
    let respond = Arc::new(respond);
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            let respond = respond.clone();
            tokio::spawn(async move { answer(s, &log, &*respond).await });
        }
    });
    (port, seen)
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    log: &Requests,
    respond: &(dyn Fn(&str) -> String + Send + Sync),
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        // A TLS handshake on a plain HTTP port: answer as an HTTP server does.
        if buf.first() == Some(&0x16) {
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                .await;
            let _ = s.shutdown().await;
            return;
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    log.lock().unwrap().push(head.clone());
    let _ = s.write_all(respond(&head).as_bytes()).await;
    let _ = s.shutdown().await;
}

fn response(status: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
}

/// A port nothing listens on (bound, then released).
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

async fn get(port: u16, path: &str) -> ProbeOutcome {
    probe_io::http_get(
        "127.0.0.1",
        port,
        path,
        false,
        &[],
        PATIENCE,
        PROBE_USER_AGENT,
    )
    .await
}

#[tokio::test]
async fn http_status_codes() {
    let (port, seen) = serve(|head| {
        if head.starts_with("GET /healthz ") {
            response("200 OK", "", "ok")
        } else if head.starts_with("GET /chunked ") {
            "HTTP/1.1 204 No Content\r\n\r\n".to_string()
        } else {
            response("500 Internal Server Error", "", "boom")
        }
    })
    .await;
    assert_eq!(get(port, "/healthz").await, ProbeOutcome::Success);
    assert_eq!(get(port, "/chunked").await, ProbeOutcome::Success);
    assert_eq!(
        get(port, "/broken").await,
        ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into())
    );
    let first = seen.lock().unwrap()[0].clone();
    assert!(first.starts_with("GET /healthz HTTP/1.1\r\n"), "{first}");
    assert!(
        first.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
        "{first}"
    );
    assert!(
        first.contains("\r\nUser-Agent: kube-probe/1.32\r\n"),
        "{first}"
    );
    assert!(first.contains("\r\nAccept: */*\r\n"), "{first}");

    // User headers are sent, and replace the defaults.
    let (port, seen) = serve(|_| response("200 OK", "", "")).await;
    let headers = vec![
        ("X-Probe".to_string(), "yes".to_string()),
        ("User-Agent".to_string(), "mine".to_string()),
    ];
    let r = probe_io::http_get("127.0.0.1", port, "", false, &headers, PATIENCE, "x").await;
    assert_eq!(r, ProbeOutcome::Success);
    let head = seen.lock().unwrap()[0].clone();
    assert!(head.starts_with("GET / HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nX-Probe: yes\r\n"), "{head}");
    assert!(head.contains("\r\nUser-Agent: mine\r\n"), "{head}");
    assert!(!head.contains("User-Agent: x"), "{head}");
}

#[tokio::test]
async fn http_redirects() {
    let (port, _) = serve(|head| {
        if head.starts_with("GET /old ") {
            response("302 Found", "Location: /new\r\n", "")
        } else if head.starts_with("GET /new ") {
            response("200 OK", "", "")
        } else if head.starts_with("GET /away ") {
            response(
                "301 Moved Permanently",
                "Location: http://example.invalid/x\r\n",
                "moved",
            )
        } else {
            response("302 Found", "Location: /loop\r\n", "")
        }
    })
    .await;
    assert_eq!(get(port, "/old").await, ProbeOutcome::Success);
    assert_eq!(
        get(port, "/away").await,
        ProbeOutcome::Warning("Probe terminated redirects, Response body: moved".into())
    );
    assert_eq!(
        get(port, "/loop").await,
        ProbeOutcome::Failure(format!(
            "Get \"http://127.0.0.1:{port}/loop\": stopped after 10 redirects"
        ))
    );
}

#[tokio::test]
async fn http_transport_errors() {
    let port = closed_port().await;
    assert_eq!(
        get(port, "/healthz").await,
        ProbeOutcome::Failure(format!(
            "Get \"http://127.0.0.1:{port}/healthz\": dial tcp 127.0.0.1:{port}: connect: connection refused"
        ))
    );

    // A server that accepts and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let r = probe_io::http_get(
        "127.0.0.1",
        port,
        "/slow",
        false,
        &[],
        Duration::from_secs(1),
        PROBE_USER_AGENT,
    )
    .await;
    assert_eq!(
        r,
        ProbeOutcome::Failure(format!(
            "Get \"http://127.0.0.1:{port}/slow\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        ))
    );
    holder.abort();

    // Not HTTP at all.
    let (port, _) = serve(|_| "SSH-2.0-OpenSSH_9.6\r\n\r\n".to_string()).await;
    match get(port, "/").await {
        ProbeOutcome::Failure(m) => assert!(
            m.contains("malformed HTTP response \"SSH-2.0-OpenSSH_9.6\""),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn tcp_socket_probes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    assert_eq!(
        probe_io::tcp_socket("127.0.0.1", port, PATIENCE).await,
        ProbeOutcome::Success
    );
    drop(listener);
    let port = closed_port().await;
    assert_eq!(
        probe_io::tcp_socket("127.0.0.1", port, PATIENCE).await,
        ProbeOutcome::Failure(format!(
            "dial tcp 127.0.0.1:{port}: connect: connection refused"
        ))
    );
}

#[tokio::test]
async fn http_hooks_fail_only_on_transport_errors() {
    let (port, seen) = serve(|_| response("500 Internal Server Error", "", "")).await;
    let r = probe_io::http_hook(
        "127.0.0.1",
        port,
        "/hook",
        false,
        &[],
        HOOK_USER_AGENT,
        Some(PATIENCE),
    )
    .await;
    assert_eq!(r, Ok(()));
    assert!(
        seen.lock().unwrap()[0].contains("\r\nUser-Agent: kube-lifecycle/1.32\r\n"),
        "{:?}",
        seen.lock().unwrap()
    );
    // HTTPS against a plain HTTP server falls back to HTTP.
    let r = probe_io::http_hook("127.0.0.1", port, "/hook", true, &[], HOOK_USER_AGENT, None).await;
    assert_eq!(r, Ok(()));

    let port = closed_port().await;
    let r = probe_io::http_hook(
        "127.0.0.1",
        port,
        "/hook",
        false,
        &[],
        HOOK_USER_AGENT,
        None,
    )
    .await;
    assert_eq!(
        r,
        Err(format!(
            "Get \"http://127.0.0.1:{port}/hook\": dial tcp 127.0.0.1:{port}: connect: connection refused"
        ))
    );
}

#[tokio::test]
async fn https_probes_do_not_verify_certificates() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        ck.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Requests = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let log = log.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(s).await {
                    answer(tls, &log, &|head: &str| {
                        if head.starts_with("GET /ok ") {
                            response("200 OK", "", "fine")
                        } else {
                            response("503 Service Unavailable", "", "")
                        }
                    })
                    .await;
                }
            });
        }
    });
    let https = |path: &'static str| {
        probe_io::http_get(
            "127.0.0.1",
            port,
            path,
            true,
            &[],
            PATIENCE,
            PROBE_USER_AGENT,
        )
    };
    assert_eq!(https("/ok").await, ProbeOutcome::Success);
    assert_eq!(
        https("/down").await,
        ProbeOutcome::Failure("HTTP probe failed with statuscode: 503".into())
    );
    assert_eq!(seen.lock().unwrap().len(), 2);

    // An HTTPS probe of a plain HTTP server fails as Go's client does.
    let (port, _) = serve(|_| response("200 OK", "", "")).await;
    let r = probe_io::http_get(
        "127.0.0.1",
        port,
        "/x",
        true,
        &[],
        PATIENCE,
        PROBE_USER_AGENT,
    )
    .await;
    assert_eq!(
        r,
        ProbeOutcome::Failure(format!(
            "Get \"https://127.0.0.1:{port}/x\": http: server gave HTTP response to HTTPS client"
        ))
    );
}
