//! `pods/exec` and `pods/attach`: the API server checks the request against the pod, then
//! proxies the client's WebSocket upgrade to the agent of the pod's node, as kube-apiserver's
//! upgrade-aware proxy does with kubelets.
//!
//! The agent contract (the same endpoint, token and TLS as `/containerLogs`, see `logs.rs`):
//! `GET /exec/{namespace}/{pod}/{container}?command=..&command=..&stdin=true&stdout=true&stderr=true&tty=true`
//! and `GET /attach/{namespace}/{pod}/{container}?stdin=true&...`, where each of stdin, stdout,
//! stderr and tty is present (as `true`) only when the client asked for it. The request carries
//! the client's `Connection`, `Upgrade`, `Sec-WebSocket-Key`, `Sec-WebSocket-Version` and
//! `Sec-WebSocket-Protocol` headers and `Authorization: Bearer <agent token>`. The agent does the
//! WebSocket handshake and the channel protocol (v5/v4.channel.k8s.io). On `101` the API server
//! answers the client `101` with the agent's `Upgrade`, `Connection`, `Sec-WebSocket-Accept` and
//! `Sec-WebSocket-Protocol`, then copies bytes both ways until either side closes; any other
//! answer (a Status) is relayed as is.
//!
//! `pods/portforward` is proxied the same way to the agent's `GET /portForward/{namespace}/{pod}`
//! (with the `ports` query of the plain WebSocket protocol, if any): kubectl's
//! `SPDY/3.1+portforward.k8s.io` WebSocket carries SPDY frames, which the agent speaks, so the
//! bytes pass through here untouched. The pod must be Running.
//!
//! SPDY upgrades are not spoken here. kubectl tries WebSocket first and retries with SPDY only
//! when that failed, so a SPDY request gets the failure its WebSocket attempt just got
//! (remembered briefly per pod and container), or else a 400 saying SPDY is not supported.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::errors::{ApiError, ApiResult};
use crate::logs::{agent_endpoint, check_log, connect_agent, encode, unreachable};
use crate::query::Params;
use crate::resources;
use crate::rest::{self, Api};

/// Time allowed to reach the agent and read its answer to the upgrade.
const AGENT_TIMEOUT: Duration = Duration::from_secs(15);
/// After one direction of a stream ends, how long the other may still run.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// How long a failed WebSocket attempt is remembered for the SPDY retry that follows it.
const FAILURE_MEMORY: Duration = Duration::from_secs(30);
/// The largest non-101 agent answer relayed (a Status).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The client headers passed to the agent.
const REQUEST_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
];
/// The agent's 101 headers passed to the client.
const RESPONSE_HEADERS: &[&str] = &[
    "upgrade",
    "connection",
    "sec-websocket-accept",
    "sec-websocket-protocol",
];

/// The streaming subresources of pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Exec,
    Attach,
    PortForward,
    /// `pods/log` with a WebSocket upgrade.
    Log,
}

impl Stream {
    fn agent_path(self) -> &'static str {
        match self {
            Stream::Exec => "exec",
            Stream::Attach => "attach",
            Stream::PortForward => "portforward",
            Stream::Log => "containerLogs",
        }
    }
}

/// A streaming request: `/api/v1/namespaces/{ns}/pods/{name}/{exec|attach|portforward}`.
#[derive(Debug, PartialEq, Eq)]
pub struct StreamTarget {
    pub namespace: String,
    pub pod: String,
    pub stream: Stream,
}

/// Recognises the paths of the streaming subresources (they need the raw request, to upgrade).
pub fn streaming_target(path: &str) -> Option<StreamTarget> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["api", "v1", "namespaces", ns, "pods", pod, sub] = segs.as_slice() else {
        return None;
    };
    let stream = match *sub {
        "exec" => Stream::Exec,
        "attach" => Stream::Attach,
        "portforward" => Stream::PortForward,
        _ => return None,
    };
    if ns.is_empty() || pod.is_empty() {
        return None;
    }
    Some(StreamTarget {
        namespace: ns.to_string(),
        pod: pod.to_string(),
        stream,
    })
}

/// `pods/{name}/log` asked for with a WebSocket upgrade (client libraries do; kubectl does not):
/// proxied like exec to the agent's `/containerLogs`, which streams the log as WebSocket
/// messages (`v5.channel.k8s.io`/`v4.channel.k8s.io` on channel 1, or `binary.k8s.io`).
pub fn log_upgrade_target(path: &str, headers: &HeaderMap) -> Option<StreamTarget> {
    if upgrade_kind(headers) != Upgrade::WebSocket {
        return None;
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["api", "v1", "namespaces", ns, "pods", pod, "log"] = segs.as_slice() else {
        return None;
    };
    if ns.is_empty() || pod.is_empty() {
        return None;
    }
    Some(StreamTarget {
        namespace: ns.to_string(),
        pod: pod.to_string(),
        stream: Stream::Log,
    })
}

/// Serves one streaming request; errors are Status responses.
pub async fn serve(api: &Arc<Api>, req: Request, target: StreamTarget) -> Response {
    serve_inner(api, req, &target)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// What the client asked to upgrade to.
#[derive(Debug, PartialEq, Eq)]
enum Upgrade {
    None,
    WebSocket,
    Spdy,
    Other(String),
}

fn upgrade_kind(headers: &HeaderMap) -> Upgrade {
    let connection_upgrade = headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let upgrade = rest::header(headers, "upgrade").trim();
    if !connection_upgrade || upgrade.is_empty() {
        return Upgrade::None;
    }
    let first = upgrade.split(',').next().unwrap_or("").trim();
    if first.eq_ignore_ascii_case("websocket") {
        Upgrade::WebSocket
    } else if first.to_ascii_lowercase().starts_with("spdy/") {
        Upgrade::Spdy
    } else {
        Upgrade::Other(first.to_string())
    }
}

fn names_at(pod: &Value, pointer: &str) -> Vec<String> {
    pod.pointer(pointer)
        .and_then(|c| c.as_array())
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The checks kube-apiserver makes before it proxies: the pod is not finished, the container
/// is named (or the only one) and exists, the pod is on a node, exec names a command. Returns
/// the container and the node.
fn check_pod(
    pod: &Value,
    name: &str,
    stream: Stream,
    params: &Params,
) -> ApiResult<(String, String)> {
    let phase = pod
        .pointer("/status/phase")
        .and_then(|p| p.as_str())
        .unwrap_or("");
    if phase == "Succeeded" || phase == "Failed" {
        let what = if stream == Stream::Attach {
            "attach to"
        } else {
            "exec into"
        };
        return Err(ApiError::bad_request(format!(
            "cannot {what} a container in a completed pod; current phase is {phase}"
        )));
    }
    let containers = names_at(pod, "/spec/containers");
    let init = names_at(pod, "/spec/initContainers");
    let ephemeral = names_at(pod, "/spec/ephemeralContainers");
    let container = match params.get("container").filter(|c| !c.is_empty()) {
        Some(c) => {
            if ![&containers, &init, &ephemeral]
                .iter()
                .any(|l| l.iter().any(|n| n == c))
            {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )));
            }
            c.to_string()
        }
        None if containers.len() == 1 => containers[0].clone(),
        None if containers.is_empty() => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}"
            )));
        }
        None => {
            let mut msg = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                msg.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            return Err(ApiError::bad_request(msg));
        }
    };
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(|n| n.as_str())
        .unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    if stream == Stream::Exec && !params.pairs.iter().any(|(k, _)| k == "command") {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    Ok((container, node.to_string()))
}

/// The checks before a port-forward is proxied: the pod is running on a node. Returns no
/// container and the node.
fn check_forward(pod: &Value, name: &str) -> ApiResult<(String, String)> {
    let phase = pod
        .pointer("/status/phase")
        .and_then(|p| p.as_str())
        .unwrap_or("");
    if phase != "Running" {
        return Err(ApiError::bad_request(format!(
            "pod {name} is not running and cannot be forwarded to; current phase is {phase}"
        )));
    }
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(|n| n.as_str())
        .unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    Ok((String::new(), node.to_string()))
}

/// The agent request's query: the commands, then the streams asked for (port-forward: the
/// ports of the plain WebSocket protocol).
fn agent_query(stream: Stream, params: &Params) -> String {
    let mut q: Vec<String> = Vec::new();
    if stream == Stream::Log {
        for (k, v) in &params.pairs {
            if crate::logs::PASSED.contains(&k.as_str()) && k != "container" {
                q.push(format!("{k}={}", encode(v)));
            }
        }
        return q.join("&");
    }
    if stream == Stream::PortForward {
        for (k, v) in &params.pairs {
            if k == "ports" {
                q.push(format!("ports={}", encode(v)));
            }
        }
        return q.join("&");
    }
    if stream == Stream::Exec {
        for (k, v) in &params.pairs {
            if k == "command" {
                q.push(format!("command={}", encode(v)));
            }
        }
    }
    for f in ["stdin", "stdout", "stderr", "tty"] {
        if params.flag(f) {
            q.push(format!("{f}=true"));
        }
    }
    q.join("&")
}

async fn serve_inner(api: &Arc<Api>, mut req: Request, t: &StreamTarget) -> ApiResult<Response> {
    let method = req.method().clone();
    if method != Method::GET && method != Method::POST {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} pods/{})",
            method.as_str(),
            t.stream.agent_path()
        )));
    }
    let params = Params::parse(req.uri().query());
    let pods = resources::lookup("", "v1", "pods").expect("pods");
    let (pod, _) = rest::read(api, pods, &pods.key(Some(&t.namespace), &t.pod), &t.pod).await?;
    let (container, node_name) = match t.stream {
        Stream::PortForward => check_forward(&pod, &t.pod)?,
        Stream::Log => check_log(&pod, &t.pod, &params)?,
        _ => check_pod(&pod, &t.pod, t.stream, &params)?,
    };
    let key = (
        t.namespace.clone(),
        t.pod.clone(),
        container.clone(),
        t.stream,
    );
    match upgrade_kind(req.headers()) {
        Upgrade::WebSocket => {}
        Upgrade::None => return Err(ApiError::bad_request("Upgrade request required")),
        Upgrade::Spdy => {
            // kubectl's retry after a failed WebSocket attempt: answer with that failure.
            if let Some(failure) = recall_failure(&key) {
                return Ok(failure.response());
            }
            return Err(ApiError::bad_request(
                "SPDY/3.1 upgrades are not supported by this server: exec and attach stream over WebSocket (v5.channel.k8s.io or v4.channel.k8s.io)",
            ));
        }
        Upgrade::Other(p) => {
            return Err(ApiError::bad_request(format!(
                "unsupported upgrade protocol {p:?}: exec and attach stream over WebSocket"
            )));
        }
    }
    let nodes = resources::lookup("", "v1", "nodes").expect("nodes");
    let (node, _) = rest::read(api, nodes, &nodes.key(None, &node_name), &node_name).await?;
    let (host, port) = agent_endpoint(&node).ok_or_else(|| {
        ApiError::bad_request(format!(
            "node {node_name} does not publish an agent endpoint"
        ))
    })?;
    let query = agent_query(t.stream, &params);
    let sep = if query.is_empty() { "" } else { "?" };
    let path = if t.stream == Stream::PortForward {
        format!("/portForward/{}/{}{sep}{query}", t.namespace, t.pod)
    } else {
        format!(
            "/{}/{}/{}/{container}{sep}{query}",
            t.stream.agent_path(),
            t.namespace,
            t.pod,
        )
    };
    let token = crate::auth::agent_token_for(&api.agent_token, &node_name);
    let agent = tokio::time::timeout(
        AGENT_TIMEOUT,
        upgrade_agent(&host, port, &path, &token, req.headers()),
    )
    .await
    .unwrap_or_else(|_| Err(unreachable(&host, port, &"timed out")));
    let mut agent_resp = match agent {
        Ok(r) => r,
        Err(e) => {
            remember_failure(key, Failure::from_error(&e));
            return Err(e);
        }
    };
    if agent_resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        let failure = Failure::from_agent(agent_resp).await;
        remember_failure(key, failure.clone());
        return Ok(failure.response());
    }
    let mut out = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for h in RESPONSE_HEADERS {
        for v in agent_resp.headers().get_all(*h) {
            out = out.header(*h, v.as_bytes());
        }
    }
    let client_upgrade = hyper::upgrade::on(&mut req);
    let agent_upgrade = hyper::upgrade::on(&mut agent_resp);
    let label = format!("{}/{} {container}", t.namespace, t.pod);
    tokio::spawn(async move {
        match tokio::join!(client_upgrade, agent_upgrade) {
            (Ok(client), Ok(agent)) => splice(TokioIo::new(client), TokioIo::new(agent)).await,
            (c, a) => tracing::warn!(
                stream = %label,
                client = ?c.err(),
                agent = ?a.err(),
                "exec/attach/portforward upgrade failed"
            ),
        }
    });
    out.body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Sends the upgrade request to the agent and returns its answer (the connection is driven by a
/// task that keeps it open for the upgrade).
async fn upgrade_agent(
    host: &str,
    port: u16,
    path: &str,
    token: &str,
    client_headers: &HeaderMap,
) -> ApiResult<hyper::Response<hyper::body::Incoming>> {
    let tls = connect_agent(host, port).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| unreachable(host, port, &e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "agent connection ended");
        }
    });
    let mut b = hyper::Request::get(path)
        .header("host", format!("{host}:{port}"))
        .header("authorization", format!("Bearer {token}"));
    for h in REQUEST_HEADERS {
        for v in client_headers.get_all(*h) {
            b = b.header(*h, v.as_bytes());
        }
    }
    let req = b
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| unreachable(host, port, &e))?;
    sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(host, port, &e))
}

/// Copies bytes both ways between the client and the agent. When one side stops sending, the
/// other side's write half is shut down; the remaining direction gets [`CLOSE_GRACE`] to finish.
async fn splice<A, B>(client: A, agent: B)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut client_r, mut client_w) = tokio::io::split(client);
    let (mut agent_r, mut agent_w) = tokio::io::split(agent);
    let up = async {
        let _ = tokio::io::copy(&mut client_r, &mut agent_w).await;
        let _ = agent_w.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut agent_r, &mut client_w).await;
        let _ = client_w.shutdown().await;
    };
    tokio::pin!(up, down);
    tokio::select! {
        _ = &mut up => { let _ = tokio::time::timeout(CLOSE_GRACE, down).await; }
        _ = &mut down => { let _ = tokio::time::timeout(CLOSE_GRACE, up).await; }
    }
}

/// A failed upgrade, kept to answer the SPDY retry that follows it.
#[derive(Clone, Debug)]
struct Failure {
    status: StatusCode,
    content_type: String,
    body: Bytes,
}

impl Failure {
    fn from_error(e: &ApiError) -> Failure {
        Failure {
            status: StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            content_type: "application/json".into(),
            body: Bytes::from(serde_json::to_vec(&e.status()).unwrap_or_default()),
        }
    }

    async fn from_agent(resp: hyper::Response<hyper::body::Incoming>) -> Failure {
        let status =
            StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("text/plain")
            .to_string();
        let limited = http_body_util::Limited::new(resp.into_body(), MAX_ERROR_BODY);
        let body = match tokio::time::timeout(AGENT_TIMEOUT, limited.collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            _ => Bytes::new(),
        };
        Failure {
            status,
            content_type,
            body,
        }
    }

    fn response(&self) -> Response {
        (
            self.status,
            [("content-type", self.content_type.clone())],
            self.body.clone(),
        )
            .into_response()
    }
}

type FailureKey = (String, String, String, Stream);

fn failures() -> &'static Mutex<HashMap<FailureKey, (Instant, Failure)>> {
    static FAILURES: OnceLock<Mutex<HashMap<FailureKey, (Instant, Failure)>>> = OnceLock::new();
    FAILURES.get_or_init(Default::default)
}

fn remember_failure(key: FailureKey, failure: Failure) {
    let mut map = failures().lock().unwrap_or_else(|e| e.into_inner());
    map.retain(|_, (at, _)| at.elapsed() < FAILURE_MEMORY);
    map.insert(key, (Instant::now(), failure));
}

fn recall_failure(key: &FailureKey) -> Option<Failure> {
    let mut map = failures().lock().unwrap_or_else(|e| e.into_inner());
    let (at, failure) = map.remove(key)?;
    (at.elapsed() < FAILURE_MEMORY).then_some(failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recognises_streaming_paths() {
        assert_eq!(
            streaming_target("/api/v1/namespaces/default/pods/web/exec"),
            Some(StreamTarget {
                namespace: "default".into(),
                pod: "web".into(),
                stream: Stream::Exec
            })
        );
        assert_eq!(
            streaming_target("/api/v1/namespaces/a/pods/b/portforward").map(|t| t.stream),
            Some(Stream::PortForward)
        );
        assert!(streaming_target("/api/v1/namespaces/a/pods/b/log").is_none());
        assert!(streaming_target("/api/v1/namespaces/a/pods/b").is_none());
        assert!(streaming_target("/api/v1/pods/b/exec").is_none());
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn classifies_upgrades() {
        assert_eq!(upgrade_kind(&headers(&[])), Upgrade::None);
        assert_eq!(
            upgrade_kind(&headers(&[
                ("connection", "Upgrade"),
                ("upgrade", "websocket")
            ])),
            Upgrade::WebSocket
        );
        assert_eq!(
            upgrade_kind(&headers(&[
                ("connection", "keep-alive, upgrade"),
                ("upgrade", "WebSocket")
            ])),
            Upgrade::WebSocket
        );
        assert_eq!(
            upgrade_kind(&headers(&[
                ("connection", "Upgrade"),
                ("upgrade", "SPDY/3.1")
            ])),
            Upgrade::Spdy
        );
        assert_eq!(
            upgrade_kind(&headers(&[("upgrade", "websocket")])),
            Upgrade::None
        );
        assert_eq!(
            upgrade_kind(&headers(&[("connection", "upgrade"), ("upgrade", "h2c")])),
            Upgrade::Other("h2c".into())
        );
    }

    fn pod(containers: &[&str], init: &[&str], node: &str, phase: &str) -> Value {
        let named = |ns: &[&str]| -> Vec<Value> { ns.iter().map(|n| json!({"name": n})).collect() };
        json!({"spec": {"containers": named(containers), "initContainers": named(init), "nodeName": node},
               "status": {"phase": phase}})
    }

    fn check(p: &Value, stream: Stream, query: &str) -> Result<(String, String), String> {
        check_pod(p, "web", stream, &Params::parse(Some(query))).map_err(|e| e.message)
    }

    #[test]
    fn pod_checks() {
        let one = pod(&["app"], &[], "n1", "Running");
        assert_eq!(
            check(&one, Stream::Exec, "command=ls"),
            Ok(("app".into(), "n1".into()))
        );
        assert_eq!(
            check(&one, Stream::Exec, "container=app").unwrap_err(),
            "you must specify at least 1 command"
        );
        assert!(check(&one, Stream::Attach, "stdout=true").is_ok());
        assert_eq!(
            check(&one, Stream::Exec, "command=ls&container=nope").unwrap_err(),
            "container nope is not valid for pod web"
        );
        let two = pod(&["a", "b"], &["setup"], "n1", "Running");
        assert_eq!(
            check(&two, Stream::Exec, "command=ls").unwrap_err(),
            "a container name must be specified for pod web, choose one of: [a b] or one of the init containers: [setup]"
        );
        assert_eq!(
            check(&two, Stream::Exec, "command=ls&container=setup"),
            Ok(("setup".into(), "n1".into()))
        );
        let done = pod(&["app"], &[], "n1", "Succeeded");
        assert_eq!(
            check(&done, Stream::Exec, "command=ls").unwrap_err(),
            "cannot exec into a container in a completed pod; current phase is Succeeded"
        );
        assert_eq!(
            check(&done, Stream::Attach, "").unwrap_err(),
            "cannot attach to a container in a completed pod; current phase is Succeeded"
        );
        let pending = pod(&["app"], &[], "", "Pending");
        assert_eq!(
            check(&pending, Stream::Exec, "command=ls").unwrap_err(),
            "pod web does not have a host assigned"
        );
    }

    #[test]
    fn agent_query_keeps_commands_in_order() {
        let p = Params::parse(Some(
            "command=sh&command=-c&command=echo%20hi&container=app&stderr=true&stdin=1&stdout=true&tty=false",
        ));
        assert_eq!(
            agent_query(Stream::Exec, &p),
            "command=sh&command=-c&command=echo%20hi&stdin=true&stdout=true&stderr=true"
        );
        assert_eq!(
            agent_query(Stream::Attach, &p),
            "stdin=true&stdout=true&stderr=true"
        );
    }

    #[test]
    fn port_forward_and_websocket_logs() {
        let running = pod(&["app"], &[], "n1", "Running");
        assert_eq!(
            check_forward(&running, "web").map_err(|e| e.message),
            Ok((String::new(), "n1".to_string()))
        );
        let pending = pod(&["app"], &[], "n1", "Pending");
        assert_eq!(
            check_forward(&pending, "web").unwrap_err().message,
            "pod web is not running and cannot be forwarded to; current phase is Pending"
        );
        let p = Params::parse(Some("ports=8080,9090&container=x"));
        assert_eq!(agent_query(Stream::PortForward, &p), "ports=8080%2C9090");
        let p = Params::parse(Some(
            "container=app&follow=true&tailLines=3&command=x&insecureSkipTLSVerifyBackend=true",
        ));
        assert_eq!(agent_query(Stream::Log, &p), "follow=true&tailLines=3");
        assert_eq!(
            check_log(&running, "web", &Params::parse(None)).map_err(|e| e.message),
            Ok(("app".to_string(), "n1".to_string()))
        );
        assert_eq!(
            check_log(&running, "web", &Params::parse(Some("container=nope")))
                .unwrap_err()
                .message,
            "container nope is not valid for pod web"
        );
        let ws = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(
            log_upgrade_target("/api/v1/namespaces/a/pods/b/log", &ws).map(|t| t.stream),
            Some(Stream::Log)
        );
        assert!(log_upgrade_target("/api/v1/namespaces/a/pods/b/log", &headers(&[])).is_none());
        assert!(log_upgrade_target("/api/v1/namespaces/a/pods/b/exec", &ws).is_none());
    }

    #[test]
    fn failures_are_remembered_once() {
        let key = (
            "ns".to_string(),
            "p".to_string(),
            "c".to_string(),
            Stream::Exec,
        );
        remember_failure(
            key.clone(),
            Failure::from_error(&ApiError::bad_request("boom")),
        );
        let f = recall_failure(&key).unwrap();
        assert_eq!(f.status, StatusCode::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&f.body).contains("boom"));
        assert!(recall_failure(&key).is_none());
    }
}
