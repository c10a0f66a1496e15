//! Streams over a raw WebSocket client (no kubectl), through the API server to the agent of
//! `skiff up` (host runtime): `pods/log` upgraded to a WebSocket (`v4.channel.k8s.io` frames on
//! channel 1, `binary.k8s.io` raw), followed and not, and `pods/exec` with `v4.channel.k8s.io`
//! (stdin, stdout, stderr, the final Status on channel 3).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::cluster::Cluster;
use futures::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

const PATIENCE: Duration = Duration::from_secs(30);

/// A TLS connection to the API server (trusting its CA), HTTP/1.1 only.
async fn tls(c: &Cluster) -> tokio_rustls::client::TlsStream<TcpStream> {
    let ca = std::fs::read(c.data_dir().join("pki/ca.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let addr = c
        .server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let tcp = TcpStream::connect(&addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap()
}

/// Opens `path` as a WebSocket offering `protocol`; returns it and the chosen protocol.
async fn open(c: &Cluster, path: &str, protocol: &str) -> (Ws, String) {
    let url = format!("{}{path}", c.server.trim_end_matches('/')).replace("https://", "wss://");
    let mut req = url.into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert(
        "authorization",
        format!("Bearer {}", c.admin_token()).parse().unwrap(),
    );
    h.insert("sec-websocket-protocol", protocol.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::client_async(req, tls(c).await)
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

/// Messages until `done` or the close: (binary messages, close code).
async fn read_until(ws: &mut Ws, done: impl Fn(&[Vec<u8>]) -> bool) -> (Vec<Vec<u8>>, Option<u16>) {
    let mut got = Vec::new();
    let mut close = None;
    let read = async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Binary(b)) => {
                    got.push(b.to_vec());
                    if done(&got) {
                        break;
                    }
                }
                Ok(Message::Close(f)) => {
                    close = f.map(|f| u16::from(f.code));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    };
    tokio::time::timeout(PATIENCE, read).await.expect("in time");
    (got, close)
}

fn channel_text(frames: &[Vec<u8>], channel: u8) -> String {
    let bytes: Vec<u8> = frames
        .iter()
        .filter(|f| f.first() == Some(&channel))
        .flat_map(|f| f[1..].to_vec())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_exec_over_a_raw_websocket() {
    let c = Cluster::start();
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: talker}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "i=0; while true; do echo line-$i; i=$((i+1)); sleep 0.2; done"]
"#,
    )
    .ok();
    c.wait_status("talker", "Running", None, 60);
    let base = "/api/v1/namespaces/default/pods/talker";

    // Followed, v4 channel frames: channel 1 carries the log as it grows.
    let (mut ws, chosen) = open(
        &c,
        &format!("{base}/log?follow=true&container=main"),
        "v4.channel.k8s.io",
    )
    .await;
    assert_eq!(chosen, "v4.channel.k8s.io");
    let (frames, _) = read_until(&mut ws, |f| channel_text(f, 1).contains("line-8\n")).await;
    assert!(
        frames.iter().all(|f| f.first() == Some(&1)),
        "only channel 1"
    );
    let text = channel_text(&frames, 1);
    assert!(text.starts_with("line-0\nline-1\n"), "{text}");
    let _ = ws.close(None).await;

    // binary.k8s.io: the raw bytes; not followed: what is there, then a normal close.
    let (mut ws, chosen) = open(
        &c,
        &format!("{base}/log?container=main&tailLines=2"),
        "binary.k8s.io",
    )
    .await;
    assert_eq!(chosen, "binary.k8s.io");
    let (frames, close) = read_until(&mut ws, |_| false).await;
    let text = String::from_utf8(frames.concat()).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.starts_with("line-"), "{text}");
    assert_eq!(close, Some(1000));

    // exec with v4.channel.k8s.io: stdin in, stdout and stderr out, the Status on channel 3.
    let (mut ws, chosen) = open(
        &c,
        &format!(
            "{base}/exec?command=sh&command=-c&command=read%20x%3B%20echo%20got-%24x%3B%20echo%20oops%20%3E%262%3B%20exit%203&container=main&stdin=true&stdout=true&stderr=true"
        ),
        "v4.channel.k8s.io",
    )
    .await;
    assert_eq!(chosen, "v4.channel.k8s.io");
    ws.send(Message::Binary(b"\x00abc\n".to_vec().into()))
        .await
        .unwrap();
    let (frames, close) = read_until(&mut ws, |_| false).await;
    assert_eq!(channel_text(&frames, 1), "got-abc\n");
    assert_eq!(channel_text(&frames, 2), "oops\n");
    let status: serde_json::Value =
        serde_json::from_str(&channel_text(&frames, 3)).expect("a Status on channel 3");
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["message"], "3", "{status}");
    assert_eq!(close, Some(1000));

    // A successful command: Success on channel 3.
    let (mut ws, _) = open(
        &c,
        &format!("{base}/exec?command=echo&command=hi&container=main&stdout=true"),
        "v4.channel.k8s.io",
    )
    .await;
    let (frames, _) = read_until(&mut ws, |_| false).await;
    assert_eq!(channel_text(&frames, 1), "hi\n");
    assert_eq!(
        channel_text(&frames, 3),
        r#"{"metadata":{},"status":"Success"}"#
    );
}
