//! The agent's `/exec` endpoint with a real WebSocket client over TLS, against the host runtime
//! with real processes: the channel protocol (stdout/stderr frames, stdin and its close, resize,
//! the final Status), the pseudo-terminal, the errors answered before the upgrade, and the
//! command being killed when the client goes away. Timeouts are generous: these run on loaded
//! 2-core machines.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::PodStatus;
use serde_json::{Value, json};
use skiff_agent::runtime::host::HostRuntime;
use skiff_agent::runtime::{ContainerConfig, PodRef, Runtime};
use skiff_agent::server::{self, AgentServer, ServerConfig};
use skiff_agent::worker::{InstanceView, PodTable, PodView};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const PATIENCE: Duration = Duration::from_secs(60);
const TOKEN: &str = "test-token";

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let mut bytes = [0u8; 8];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .unwrap();
        let p = std::env::temp_dir().join(format!(
            "skiff-exec-{tag}-{}-{}",
            std::process::id(),
            u64::from_le_bytes(bytes)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A host runtime with pod `default/p`: container `c` running `sleep`, container `done` exited;
/// the agent's server publishing it.
struct Fixture {
    server: Option<AgentServer>,
    runtime: Arc<HostRuntime>,
    pod: PodRef,
    id: String,
    _dir: TempDir,
}

impl Fixture {
    async fn start(tag: &str) -> Fixture {
        let dir = TempDir::new(tag);
        let runtime = Arc::new(HostRuntime::new(dir.0.clone(), "127.0.0.1".into()).unwrap());
        let pod = PodRef {
            namespace: "default".into(),
            name: "p".into(),
            uid: format!("uid-{tag}"),
        };
        runtime
            .create_sandbox(&pod, &Default::default())
            .await
            .unwrap();
        let config = |name: &str, argv: &[&str]| ContainerConfig {
            name: name.into(),
            image: "busybox:1.36".into(),
            command: argv.iter().map(|s| s.to_string()).collect(),
            args: vec![],
            env: vec![("GREETING".into(), "hello from env".into())],
            working_dir: None,
            attempt: 0,
            mounts: vec![],
            resources: Default::default(),
            tty: false,
            stdin: false,
            security: Default::default(),
        };
        let running = runtime
            .start_container(&pod, &config("c", &["sleep", "300"]))
            .await
            .unwrap();
        let done = runtime
            .start_container(&pod, &config("done", &["true"]))
            .await
            .unwrap();
        let status: PodStatus = serde_json::from_value(json!({
            "phase": "Running",
            "containerStatuses": [
                {"name": "c", "image": "busybox:1.36", "imageID": "", "ready": true,
                 "restartCount": 0, "containerID": running.id,
                 "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}},
                {"name": "done", "image": "busybox:1.36", "imageID": "", "ready": false,
                 "restartCount": 0, "containerID": done.id,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                           "containerID": done.id}}},
            ],
        }))
        .unwrap();
        let table = Arc::new(PodTable::default());
        table.put(PodView {
            pod_ref: pod.clone(),
            status,
            instances: HashMap::from([
                (
                    "c".to_string(),
                    vec![InstanceView {
                        id: running.id.clone(),
                        attempt: 0,
                        running: true,
                    }],
                ),
                (
                    "done".to_string(),
                    vec![InstanceView {
                        id: done.id.clone(),
                        attempt: 0,
                        running: false,
                    }],
                ),
            ]),
            containers: vec!["c".into(), "done".into()],
        });
        let server = server::start(
            ServerConfig {
                bind: "127.0.0.1:0".parse().unwrap(),
                token: TOKEN.into(),
                names: vec![],
            },
            table,
            runtime.clone(),
        )
        .await
        .unwrap();
        Fixture {
            server: Some(server),
            runtime,
            pod,
            id: running.id,
            _dir: dir,
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.server.as_ref().unwrap().addr
    }

    async fn stop(mut self) {
        let _ = self
            .runtime
            .stop_container(&self.pod, &self.id, Duration::from_secs(1))
            .await;
        let _ = self.runtime.remove_sandbox(&self.pod).await;
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

/// The query for `argv` with the given flags.
fn query(argv: &[&str], flags: &[&str]) -> String {
    let mut q: Vec<String> = argv
        .iter()
        .map(|a| {
            let enc: String = a
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            format!("command={enc}")
        })
        .collect();
    q.extend(flags.iter().map(|f| format!("{f}=true")));
    q.join("&")
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

/// Opens an exec WebSocket offering `protocols`; returns it with the protocol the agent chose.
async fn connect(
    addr: std::net::SocketAddr,
    path_and_query: &str,
    protocols: &str,
) -> (Ws, String) {
    let mut req = format!("wss://localhost:{}{path_and_query}", addr.port())
        .into_client_request()
        .unwrap();
    let h = req.headers_mut();
    h.insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    h.insert("sec-websocket-protocol", protocols.parse().unwrap());
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

/// What a session delivered: bytes per channel, and the close code.
#[derive(Debug, Default)]
struct Session {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: Option<Value>,
    close: Option<CloseCode>,
}

impl Session {
    fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Reads frames until the connection ends.
async fn drain(ws: &mut Ws) -> Session {
    let mut s = Session::default();
    let read = async {
        while let Some(m) = ws.next().await {
            // The agent drops the connection after the close handshake without a TLS
            // close_notify, which rustls reports as an error.
            let m = match m {
                Ok(m) => m,
                Err(_) if s.close.is_some() => break,
                Err(e) => panic!("frame: {e}"),
            };
            match m {
                Message::Binary(b) => match b.first() {
                    Some(1) => s.stdout.extend_from_slice(&b[1..]),
                    Some(2) => s.stderr.extend_from_slice(&b[1..]),
                    Some(3) => {
                        assert!(s.status.is_none(), "two status frames");
                        s.status = Some(serde_json::from_slice(&b[1..]).expect("status json"));
                    }
                    other => panic!("unexpected channel {other:?}"),
                },
                Message::Close(f) => {
                    s.close = f.map(|f| f.code);
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("session did not end");
    s
}

/// A plain HTTP request (upgrade headers included) answered without an upgrade: (status, body).
async fn refused(
    addr: std::net::SocketAddr,
    path_and_query: &str,
    token: &str,
    protocol: &str,
) -> (u16, Value) {
    let mut stream = tls(addr).await;
    let req = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(PATIENCE, read).await.expect("answer");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_stderr_and_exit_codes() {
    let f = Fixture::start("codes").await;
    let (mut ws, proto) = connect(
        f.addr(),
        &format!(
            "/exec/default/p/c?{}",
            query(
                &["sh", "-c", "echo out; echo err >&2; echo \"$GREETING\""],
                &["stdout", "stderr"]
            )
        ),
        "v4.channel.k8s.io, v5.channel.k8s.io",
    )
    .await;
    assert_eq!(proto, "v5.channel.k8s.io");
    let s = drain(&mut ws).await;
    assert_eq!(s.out(), "out\nhello from env\n");
    assert_eq!(s.stderr, b"err\n");
    assert_eq!(s.status, Some(json!({"metadata": {}, "status": "Success"})));
    assert_eq!(s.close, Some(CloseCode::Normal));

    // A non-zero exit: the Status kubectl turns into its own exit code. v4 works the same.
    let (mut ws, proto) = connect(
        f.addr(),
        &format!(
            "/exec/default/p/c?{}",
            query(&["sh", "-c", "exit 3"], &["stdout", "stderr"])
        ),
        "v4.channel.k8s.io",
    )
    .await;
    assert_eq!(proto, "v4.channel.k8s.io");
    let s = drain(&mut ws).await;
    assert_eq!(
        s.status,
        Some(json!({
            "metadata": {},
            "status": "Failure",
            "message": "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
        }))
    );

    // A command that cannot start: an InternalError Status after the upgrade.
    let (mut ws, _) = connect(
        f.addr(),
        &format!(
            "/exec/default/p/c?{}",
            query(&["no-such-command-xyz"], &["stdout"])
        ),
        "v5.channel.k8s.io",
    )
    .await;
    let s = drain(&mut ws).await;
    let st = s.status.expect("status");
    assert_eq!(st["reason"], "InternalError");
    let msg = st["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Internal error occurred: error executing command in container: failed to exec in container: failed to start exec")
            && msg.ends_with(
                "OCI runtime exec failed: exec failed: unable to start container process: exec: \"no-such-command-xyz\": executable file not found in $PATH: unknown"
            ),
        "{msg}"
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_until_closed() {
    let f = Fixture::start("stdin").await;
    let (mut ws, _) = connect(
        f.addr(),
        &format!(
            "/exec/default/p/c?{}",
            query(&["cat"], &["stdin", "stdout", "stderr"])
        ),
        "v5.channel.k8s.io",
    )
    .await;
    let mut data = vec![0u8];
    data.extend_from_slice(b"hello-stdin\nsecond line\n");
    ws.send(Message::Binary(data.into())).await.unwrap();
    // v5's close-stream for stdin ends cat.
    ws.send(Message::Binary(vec![255u8, 0].into()))
        .await
        .unwrap();
    let s = drain(&mut ws).await;
    assert_eq!(s.out(), "hello-stdin\nsecond line\n");
    assert_eq!(s.status, Some(json!({"metadata": {}, "status": "Success"})));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_and_resize() {
    let f = Fixture::start("tty").await;
    let (mut ws, _) = connect(
        f.addr(),
        &format!(
            "/exec/default/p/c?{}",
            query(
                &["sh", "-c", "read line; stty size; tty; echo \"TERM=$TERM\""],
                &["stdin", "stdout", "tty"]
            )
        ),
        "v5.channel.k8s.io",
    )
    .await;
    let mut resize = vec![4u8];
    resize.extend_from_slice(br#"{"Width":100,"Height":30}"#);
    ws.send(Message::Binary(resize.into())).await.unwrap();
    let mut line = vec![0u8];
    line.extend_from_slice(b"go\n");
    ws.send(Message::Binary(line.into())).await.unwrap();
    let s = drain(&mut ws).await;
    let out = s.out();
    // The terminal echoes the input and turns \n into \r\n.
    assert!(out.contains("go\r\n"), "{out:?}");
    assert!(out.contains("30 100\r\n"), "{out:?}");
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(out.contains("TERM=xterm\r\n"), "{out:?}");
    assert!(s.stderr.is_empty());
    assert_eq!(s.status, Some(json!({"metadata": {}, "status": "Success"})));
    f.stop().await;
}

/// Whether `pid` still runs (a zombie does not count).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].split_whitespace().next() != Some("Z"))
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_dies_with_the_session() {
    let f = Fixture::start("drop").await;
    let (mut ws, _) = connect(
        f.addr(),
        &format!(
            "/exec/default/p/c?{}",
            query(&["sh", "-c", "echo $$; exec sleep 300"], &["stdout"])
        ),
        "v5.channel.k8s.io",
    )
    .await;
    let mut out = Vec::new();
    let pid: i32 = tokio::time::timeout(PATIENCE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) if b.first() == Some(&1) => {
                    out.extend_from_slice(&b[1..]);
                    if out.ends_with(b"\n") {
                        return String::from_utf8_lossy(&out).trim().parse().unwrap();
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("pid");
    assert!(alive(pid));
    drop(ws);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while alive(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "exec process {pid} outlived its session"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_the_upgrade() {
    let f = Fixture::start("refuse").await;
    let a = f.addr();
    let q = query(&["true"], &["stdout"]);
    let v5 = "v5.channel.k8s.io";

    let (code, body) = refused(a, &format!("/exec/default/p/c?{q}"), "wrong", v5).await;
    assert_eq!((code, body["reason"].as_str()), (401, Some("Unauthorized")));

    let (code, body) = refused(a, &format!("/exec/default/nope/c?{q}"), TOKEN, v5).await;
    assert_eq!(code, 404);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "NotFound");

    let (code, body) = refused(a, &format!("/exec/default/p/nosuch?{q}"), TOKEN, v5).await;
    assert_eq!(code, 400);
    assert_eq!(body["message"], "container nosuch is not valid for pod p");

    let (code, body) = refused(a, &format!("/exec/default/p/done?{q}"), TOKEN, v5).await;
    assert_eq!(code, 400);
    assert_eq!(body["message"], "container not found (\"done\")");

    let (code, body) = refused(a, "/exec/default/p/c?stdout=true", TOKEN, v5).await;
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        "you must specify at least one command for the container"
    );

    let (code, body) = refused(
        a,
        &format!("/exec/default/p/c?{q}"),
        TOKEN,
        "base64.channel.k8s.io",
    )
    .await;
    assert_eq!(code, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("v5.channel.k8s.io"),
        "{body}"
    );

    let (code, body) = refused(a, &format!("/attach/default/p/c?{q}"), TOKEN, v5).await;
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        "attach is not supported by the host runtime yet"
    );
    f.stop().await;
}
