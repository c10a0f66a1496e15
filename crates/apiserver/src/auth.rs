//! Who is calling, and what they may do.
//!
//! Three kinds of bearer token:
//! - the **admin** token (`<data-dir>/pki/admin.token`, shared by every server of a cluster):
//!   everything;
//! - a **bootstrap token** `<id>.<secret>` (`skiff token create`: the Secret
//!   `kube-system/bootstrap-token-<id>`, type `bootstrap.kubernetes.io/token`, as kubeadm
//!   makes): only `POST /skiff/v1/join`, which hands a new node its own credential;
//! - a **node** token `skiff-node.<node>.<secret>` (the Secret `kube-system/node-token-<node>`,
//!   made by the join): reads, plus writes a kubelet needs about its own node only — its Node
//!   and its status, its Lease, the status and deletion of pods bound to it, events (what
//!   Kubernetes' Node authorizer and NodeRestriction admission allow). Anything else is 403.
//!
//! Tokens found in Secrets are cached for [`CACHE_TTL`], so a revoked token stops working
//! within that time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::Method;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use crate::errors::ApiError;
use crate::rest::Api;

/// How long a token read from a Secret is trusted without reading it again.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// The prefix of node tokens.
pub const NODE_TOKEN_PREFIX: &str = "skiff-node.";
/// The Secret type of a node's credential.
pub const NODE_TOKEN_TYPE: &str = "skiff.dev/node-token";
pub const BOOTSTRAP_TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum User {
    Admin,
    /// A bootstrap token with this id.
    Bootstrap(String),
    /// The agent of this node.
    Node(String),
}

impl User {
    /// The user name Kubernetes would report.
    pub fn name(&self) -> String {
        match self {
            User::Admin => "admin".into(),
            User::Bootstrap(id) => format!("system:bootstrap:{id}"),
            User::Node(n) => format!("system:node:{n}"),
        }
    }
}

/// Tokens read from Secrets, by token.
#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, (User, Instant)>>,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A Secret's `data` key, decoded.
fn secret_data(secret: &Value, key: &str) -> Option<String> {
    let v = secret["data"][key].as_str()?;
    String::from_utf8(B64.decode(v).ok()?).ok()
}

async fn read_secret(api: &Api, name: &str) -> Option<Value> {
    let info = crate::resources::lookup("", "v1", "secrets")?;
    let kv = api
        .store
        .get(&info.key(Some("kube-system"), name))
        .await
        .ok()??;
    serde_json::from_slice(&kv.value).ok()
}

/// Whether a bootstrap token's expiration (RFC 3339) has passed.
fn expired(expiration: Option<&str>, now: jiff::Timestamp) -> bool {
    match expiration {
        None | Some("") => false,
        Some(t) => t.parse::<jiff::Timestamp>().map_or(true, |t| t <= now),
    }
}

/// The user a bearer token stands for; None: no valid token.
pub async fn authenticate(
    api: &Api,
    cache: &TokenCache,
    admin_token: &str,
    token: &str,
) -> Option<User> {
    if constant_time_eq(token.as_bytes(), admin_token.as_bytes()) {
        return Some(User::Admin);
    }
    if let Ok(c) = cache.entries.lock()
        && let Some((u, at)) = c.get(token)
        && at.elapsed() < CACHE_TTL
    {
        return Some(u.clone());
    }
    let user = lookup(api, token).await?;
    if let Ok(mut c) = cache.entries.lock() {
        if c.len() > 10_000 {
            c.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        }
        c.insert(token.to_string(), (user.clone(), Instant::now()));
    }
    Some(user)
}

async fn lookup(api: &Api, token: &str) -> Option<User> {
    if let Some(rest) = token.strip_prefix(NODE_TOKEN_PREFIX) {
        let (node, secret) = rest.rsplit_once('.')?;
        let s = read_secret(api, &format!("node-token-{node}")).await?;
        if s["type"].as_str() != Some(NODE_TOKEN_TYPE) {
            return None;
        }
        let want = secret_data(&s, "token-secret")?;
        let named = secret_data(&s, "node")?;
        return (named == node && constant_time_eq(secret.as_bytes(), want.as_bytes()))
            .then(|| User::Node(node.to_string()));
    }
    let (id, secret) = token.split_once('.')?;
    if id.len() != 6 || secret.len() != 16 {
        return None;
    }
    let s = read_secret(api, &format!("bootstrap-token-{id}")).await?;
    if s["type"].as_str() != Some(BOOTSTRAP_TOKEN_TYPE)
        || secret_data(&s, "token-id").as_deref() != Some(id)
        || secret_data(&s, "usage-bootstrap-authentication").as_deref() != Some("true")
        || expired(
            secret_data(&s, "expiration").as_deref(),
            jiff::Timestamp::now(),
        )
    {
        return None;
    }
    let want = secret_data(&s, "token-secret")?;
    constant_time_eq(secret.as_bytes(), want.as_bytes()).then(|| User::Bootstrap(id.to_string()))
}

/// What a request names: `/api/v1/namespaces/ns/pods/p/status` → (resource "pods", ns, name, sub).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request<'a> {
    pub group: &'a str,
    pub resource: &'a str,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    pub sub: Option<&'a str>,
}

pub fn parse_path(path: &str) -> Option<Request<'_>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _v, rest @ ..] => ("", rest),
        ["apis", g, _v, rest @ ..] => (*g, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, r, more @ ..] => (Some(*ns), [&[*r][..], more].concat()),
        other => (None, other.to_vec()),
    };
    Some(Request {
        group,
        resource: rest.first().copied().unwrap_or(""),
        namespace,
        name: rest.get(1).copied(),
        sub: rest.get(2).copied(),
    })
}

fn forbidden(user: &User, verb: &str, r: &Request, why: &str) -> ApiError {
    let what = match r.sub {
        Some(s) => format!("{}/{s}", r.resource),
        None => r.resource.to_string(),
    };
    let name = match r.name {
        Some(n) => format!("{what} \"{n}\" is forbidden: "),
        None => format!("{what} is forbidden: "),
    };
    let ns = r
        .namespace
        .map(|n| format!(" in the namespace \"{n}\""))
        .unwrap_or_default();
    ApiError::forbidden(format!(
        "{name}User \"{}\" cannot {verb} resource \"{what}\" in API group \"{}\"{ns}: {why}",
        user.name(),
        r.group
    ))
}

fn verb(method: &Method) -> &'static str {
    match *method {
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "access",
    }
}

/// The name in a create's body.
fn body_name(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v["metadata"]["name"].as_str().map(String::from)
}

/// Whether `user` may do this; Err: the 403 to answer.
pub async fn authorize(
    api: &Api,
    user: &User,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Result<(), ApiError> {
    let node = match user {
        User::Admin => return Ok(()),
        User::Bootstrap(_) => {
            if *method == Method::POST && path == crate::join::JOIN_PATH {
                return Ok(());
            }
            let r = parse_path(path).unwrap_or_default();
            return Err(forbidden(
                user,
                verb(method),
                &r,
                "a bootstrap token may only join a node (POST /skiff/v1/join)",
            ));
        }
        User::Node(n) => n,
    };
    if *method == Method::GET {
        return Ok(());
    }
    let Some(r) = parse_path(path) else {
        return Err(ApiError::forbidden(format!(
            "User \"{}\" cannot {} {path}",
            user.name(),
            verb(method)
        )));
    };
    let own_name = |name: Option<String>| name.as_deref() == Some(node.as_str());
    let named = r
        .name
        .map(String::from)
        .or_else(|| (*method == Method::POST).then(|| body_name(body)).flatten());
    match (r.group, r.resource) {
        ("", "nodes") => {
            if own_name(named.clone()) && (r.sub.is_none() || r.sub == Some("status")) {
                return Ok(());
            }
            Err(forbidden(
                user,
                verb(method),
                &r,
                &format!(
                    "node \"{node}\" is not allowed to modify node \"{}\"",
                    named.unwrap_or_default()
                ),
            ))
        }
        ("coordination.k8s.io", "leases") => {
            if r.namespace == Some("kube-node-lease") && own_name(named) {
                return Ok(());
            }
            Err(forbidden(
                user,
                verb(method),
                &r,
                &format!("node \"{node}\" may only write its own Lease in kube-node-lease"),
            ))
        }
        ("" | "events.k8s.io", "events") => Ok(()),
        ("", "pods")
            if matches!(
                (method.clone(), r.sub),
                (Method::PATCH | Method::PUT, Some("status")) | (Method::DELETE, None)
            ) =>
        {
            let bound = match (r.namespace, r.name) {
                (Some(ns), Some(name)) => pod_node(api, ns, name).await,
                _ => None,
            };
            match bound {
                Some(n) if n == *node => Ok(()),
                // Already gone: let the request say 404 itself.
                None if r.name.is_some() => Ok(()),
                _ => Err(forbidden(
                    user,
                    verb(method),
                    &r,
                    &format!(
                        "node \"{node}\" can only update pod status for pods with spec.nodeName set to itself"
                    ),
                )),
            }
        }
        _ => Err(forbidden(
            user,
            verb(method),
            &r,
            &format!("node \"{node}\" may not write this resource"),
        )),
    }
}

/// The node a stored pod is bound to ("" when unscheduled); None when it does not exist.
async fn pod_node(api: &Api, ns: &str, name: &str) -> Option<String> {
    let info = crate::resources::lookup("", "v1", "pods")?;
    let kv = api.store.get(&info.key(Some(ns), name)).await.ok()??;
    let v: Value = serde_json::from_slice(&kv.value).ok()?;
    Some(v["spec"]["nodeName"].as_str().unwrap_or("").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let r = parse_path("/api/v1/namespaces/default/pods/web/status").unwrap();
        assert_eq!(
            r,
            Request {
                group: "",
                resource: "pods",
                namespace: Some("default"),
                name: Some("web"),
                sub: Some("status"),
            }
        );
        let r = parse_path("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1")
            .unwrap();
        assert_eq!(r.resource, "leases");
        assert_eq!(r.name, Some("n1"));
        let r = parse_path("/api/v1/nodes/n2/status").unwrap();
        assert_eq!(
            (r.resource, r.name, r.sub),
            ("nodes", Some("n2"), Some("status"))
        );
        assert!(parse_path("/version").is_none());
    }

    #[test]
    fn expirations() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert!(!expired(None, now));
        assert!(!expired(Some("2026-01-02T00:00:00Z"), now));
        assert!(expired(Some("2025-12-31T00:00:00Z"), now));
        assert!(expired(Some("garbage"), now));
    }

    #[test]
    fn forbidden_messages_name_the_user_and_the_rule() {
        let r = parse_path("/api/v1/nodes/n2").unwrap();
        let e = forbidden(
            &User::Node("n1".into()),
            "patch",
            &r,
            "node \"n1\" is not allowed to modify node \"n2\"",
        );
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "nodes \"n2\" is forbidden: User \"system:node:n1\" cannot patch resource \"nodes\" in API group \"\": node \"n1\" is not allowed to modify node \"n2\""
        );
    }
}
