//! `pods/log`: the API server finds the pod's node and proxies the request to that node's agent
//! (its HTTPS endpoint from `status.daemonEndpoints.kubeletEndpoint.Port` at the node's
//! InternalIP), streaming the agent's answer back, as the real API server does with kubelets.
//!
//! A `pods/log` request with a WebSocket upgrade is not served here: it is spliced to the
//! agent's `/containerLogs` like exec (see `exec.rs`), and the agent frames the log.
//!
//! The agent's serving certificate is self-signed, so it is not verified here (Kubernetes' default
//! without `--kubelet-certificate-authority`); the request carries the cluster's admin token,
//! which the agent checks.

use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;

use crate::errors::{ApiError, ApiResult};
use crate::query::Params;
use crate::resources;
use crate::rest::{self, Api};

/// The query parameters of pods/log that are passed on to the agent.
pub(crate) const PASSED: &[&str] = &[
    "container",
    "follow",
    "previous",
    "tailLines",
    "timestamps",
    "sinceSeconds",
    "sinceTime",
    "limitBytes",
];

/// Where a node's agent serves: `(host, port)`.
pub(crate) fn agent_endpoint(node: &Value) -> Option<(String, u16)> {
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")?
        .as_u64()? as u16;
    let addrs = node.pointer("/status/addresses")?.as_array()?;
    let pick = |t: &str| {
        addrs
            .iter()
            .find(|a| a["type"] == t)
            .and_then(|a| a["address"].as_str())
            .map(String::from)
    };
    let host = pick("InternalIP").or_else(|| pick("Hostname"))?;
    (port > 0).then_some((host, port))
}

/// The checks of `pods/log` (plain or WebSocket): the container is named (or the only one,
/// init containers counted) and exists, and the pod is on a node. Returns the container and the
/// node.
pub(crate) fn check_log(pod: &Value, name: &str, params: &Params) -> ApiResult<(String, String)> {
    let containers: Vec<String> = ["/spec/containers", "/spec/initContainers"]
        .iter()
        .filter_map(|p| pod.pointer(p)?.as_array().cloned())
        .flatten()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect();
    let container = match params.get("container").filter(|c| !c.is_empty()) {
        Some(c) => c.to_string(),
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    if !containers.contains(&container) {
        return Err(ApiError::bad_request(format!(
            "container {container} is not valid for pod {name}"
        )));
    }
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(|n| n.as_str())
        .unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
        )));
    }
    Ok((container, node.to_string()))
}

pub async fn serve_log(
    api: &Arc<Api>,
    namespace: &str,
    name: &str,
    params: &Params,
) -> ApiResult<Response> {
    let pods = resources::lookup("", "v1", "pods").expect("pods");
    let (pod, _) = rest::read(api, pods, &pods.key(Some(namespace), name), name).await?;
    let (container, node_name) = check_log(&pod, name, params)?;
    let node_name = node_name.as_str();
    let nodes = resources::lookup("", "v1", "nodes").expect("nodes");
    let (node, _) = rest::read(api, nodes, &nodes.key(None, node_name), node_name).await?;
    let (host, port) = agent_endpoint(&node).ok_or_else(|| {
        ApiError::bad_request(format!(
            "node {node_name} does not publish an agent endpoint"
        ))
    })?;
    let mut query: Vec<String> = Vec::new();
    for (k, v) in &params.pairs {
        if PASSED.contains(&k.as_str()) && k != "container" {
            query.push(format!("{k}={}", encode(v)));
        }
    }
    let path = format!(
        "/containerLogs/{namespace}/{name}/{container}{}{}",
        if query.is_empty() { "" } else { "?" },
        query.join("&")
    );
    let token = crate::auth::agent_token_for(&api.agent_token, node_name);
    proxy(&host, port, &path, &token).await
}

pub(crate) fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The error for an agent that cannot be reached.
pub(crate) fn unreachable(host: &str, port: u16, e: &dyn std::fmt::Display) -> ApiError {
    ApiError::internal(format!(
        "error trying to reach the node agent at {host}:{port}: {e}"
    ))
}

/// Opens a TLS connection to an agent (HTTP/1.1 offered through ALPN), without verifying its
/// self-signed certificate.
pub(crate) async fn connect_agent(
    host: &str,
    port: u16,
) -> ApiResult<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| unreachable(host, port, &e))?;
    let mut cfg = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server_name =
        ServerName::try_from(host.to_string()).map_err(|e| unreachable(host, port, &e))?;
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(server_name, tcp)
        .await
        .map_err(|e| unreachable(host, port, &e))
}

/// Sends `GET path` to the agent over HTTPS and streams its answer back unchanged.
async fn proxy(host: &str, port: u16, path: &str, token: &str) -> ApiResult<Response> {
    let unreachable = |e: &dyn std::fmt::Display| unreachable(host, port, e);
    let tls = connect_agent(host, port).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", format!("{host}:{port}"))
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| unreachable(&e))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(&e))?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain")
        .to_string();
    Ok((status, [("content-type", ct)], Body::new(resp.into_body())).into_response())
}

/// Accepts any certificate: the agents' serving certificates are self-signed (see the file doc).
#[derive(Debug)]
struct NoVerify;

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn agent_endpoint_prefers_the_internal_ip() {
        let node = json!({"status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "addresses": [{"type": "Hostname", "address": "box"}, {"type": "InternalIP", "address": "10.1.2.3"}]}});
        assert_eq!(agent_endpoint(&node), Some(("10.1.2.3".to_string(), 10250)));
        assert_eq!(agent_endpoint(&json!({})), None);
    }
}
