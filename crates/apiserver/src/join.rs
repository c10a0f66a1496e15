//! Nodes joining a cluster, kubeadm-style.
//!
//! - `GET /skiff/v1/cluster-info` (no credentials): the cluster's CA certificate. The agent
//!   fetches it over an unverified connection and accepts it only if its SHA-256 matches the
//!   `--ca-cert-hash` it was given (printed by `skiff token create`), then verifies the server
//!   from there on.
//! - `POST /skiff/v1/join {"node": NAME}` with a bootstrap token: stores a fresh credential for
//!   that node (the Secret `kube-system/node-token-NAME`) and returns it with the token the API
//!   server presents to that node's agent (for `kubectl logs`/`exec`), so the agent can tell the
//!   server's calls from anyone else's.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use crate::auth::{NODE_TOKEN_PREFIX, NODE_TOKEN_TYPE};
use crate::errors::{ApiError, ApiResult};
use crate::query::Params;
use crate::rest::{self, Api, json_response};

pub const JOIN_PATH: &str = "/skiff/v1/join";
pub const CLUSTER_INFO_PATH: &str = "/skiff/v1/cluster-info";
/// `GET` (admin or node): the token the API server presents to agents, which an agent started
/// with an existing credential learns here.
pub const AGENT_TOKEN_PATH: &str = "/skiff/v1/agent-token";

/// The body of `cluster-info`.
pub fn cluster_info(ca_pem: &str) -> Response {
    json_response(StatusCode::OK, &json!({"caCert": ca_pem}))
}

/// A random lowercase alphanumeric string of `n` characters.
pub fn random_token(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in uuid::Uuid::new_v4().as_bytes() {
            // 252 = 7 × 36: no modulo bias.
            if *b < 252 && out.len() < n {
                out.push(ALPHABET[(*b % 36) as usize] as char);
            }
        }
    }
    out
}

/// `POST /skiff/v1/join`: the node's new credential. Only the admin may give a node that has
/// joined before a new one (a bootstrap token cannot take over a running node's name).
pub async fn join(api: &Arc<Api>, body: &[u8], admin: bool) -> ApiResult<Response> {
    let req: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the join request is not JSON: {e}")))?;
    let node = req["node"].as_str().unwrap_or("");
    let problems = skiff_core::validation::names::is_dns1123_subdomain(node);
    if !problems.is_empty() {
        return Err(ApiError::bad_request(format!(
            "invalid node name {node:?}: {}",
            problems.join("; ")
        )));
    }
    let secret = random_token(32);
    let name = format!("node-token-{node}");
    let info = crate::resources::lookup("", "v1", "secrets").expect("secrets are served");
    let object = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "kube-system",
                     "labels": {"skiff.dev/node": node}},
        "type": NODE_TOKEN_TYPE,
        "stringData": {"node": node, "token-secret": secret},
    });
    match rest::create_object(
        api,
        info,
        Some("kube-system"),
        object.clone(),
        &Params::default(),
    )
    .await
    {
        Ok(_) => {}
        Err(e) if e.code == 409 && !admin => {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!(
                    "node {node:?} has joined before: delete the Secret kube-system/{name} (or its Node) to let it join again"
                ),
            ));
        }
        Err(e) if e.code == 409 => {
            // A node joining again (a reinstalled host): a new credential replaces the old.
            rest::update_object(
                api,
                info,
                Some("kube-system"),
                &name,
                None,
                rest::Change::Replace(object),
                &Params::default(),
            )
            .await?;
        }
        Err(e) => return Err(e),
    }
    tracing::info!(node, "node joined");
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "token": format!("{NODE_TOKEN_PREFIX}{node}.{secret}"),
            "agentToken": crate::auth::agent_token_for(&api.agent_token, node),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_well_formed() {
        let a = random_token(16);
        let b = random_token(16);
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }
}
