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
    // Split exactly as the router does (empty segments dropped), so both see the same request.
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
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

/// What the node authorizer says about one request of a node, before looking at any object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeRule {
    Allow,
    Deny(String),
    /// Allowed if the pod named in the request is bound to this node.
    IfPodOnNode,
}

/// Secrets that hold credentials: never readable with a node's credential.
fn credential_secret(name: &str) -> bool {
    name.starts_with("node-token-") || name.starts_with("bootstrap-token-")
}

/// The node authorizer's rule (pure): reads of everything but credentials and other pods'
/// logs; writes of its own Node, its own Lease, events, and the status and deletion of pods
/// bound to it. `named` is the object's name (from the path, or a create's body).
pub fn node_rule(node: &str, method: &Method, r: &Request, named: Option<&str>) -> NodeRule {
    let own = named == Some(node);
    if *method == Method::GET {
        return match (r.group, r.resource, r.sub) {
            ("", "secrets", _) => match r.name {
                // By name only (as a kubelet reads the Secrets its pods use), never a list or a
                // watch, never a credential.
                Some(n) if !credential_secret(n) => NodeRule::Allow,
                Some(_) => NodeRule::Deny(format!(
                    "node \"{node}\" may not read credentials of the cluster"
                )),
                None => NodeRule::Deny(format!("node \"{node}\" may read Secrets only by name")),
            },
            ("", "pods", Some(sub)) if sub != "status" => NodeRule::Deny(format!(
                "node \"{node}\" may not read pods/{sub} through the API server"
            )),
            _ => NodeRule::Allow,
        };
    }
    match (r.group, r.resource) {
        ("", "nodes") if own && matches!(r.sub, None | Some("status")) => NodeRule::Allow,
        ("", "nodes") => NodeRule::Deny(format!(
            "node \"{node}\" is not allowed to modify node \"{}\"",
            named.unwrap_or_default()
        )),
        ("coordination.k8s.io", "leases") if r.namespace == Some("kube-node-lease") && own => {
            NodeRule::Allow
        }
        ("coordination.k8s.io", "leases") => NodeRule::Deny(format!(
            "node \"{node}\" may only write its own Lease in kube-node-lease"
        )),
        ("" | "events.k8s.io", "events") if r.name.is_some() || *method == Method::POST => {
            NodeRule::Allow
        }
        ("", "pods")
            if r.name.is_some()
                && matches!(
                    (method.clone(), r.sub),
                    (Method::PATCH | Method::PUT, Some("status")) | (Method::DELETE, None)
                ) =>
        {
            NodeRule::IfPodOnNode
        }
        ("", "pods") => NodeRule::Deny(format!(
            "node \"{node}\" can only update pod status for pods with spec.nodeName set to itself"
        )),
        _ => NodeRule::Deny(format!("node \"{node}\" may not write this resource")),
    }
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
    let Some(r) = parse_path(path) else {
        // Not a resource: discovery, version, health, the agent-token endpoint are reads.
        if *method == Method::GET {
            return Ok(());
        }
        return Err(ApiError::forbidden(format!(
            "User \"{}\" cannot {} {path}",
            user.name(),
            verb(method)
        )));
    };
    let named = r
        .name
        .map(String::from)
        .or_else(|| (*method == Method::POST).then(|| body_name(body)).flatten());
    let deny = |why: String| Err(forbidden(user, verb(method), &r, &why));
    match node_rule(node, method, &r, named.as_deref()) {
        NodeRule::Allow => Ok(()),
        NodeRule::Deny(why) => deny(why),
        NodeRule::IfPodOnNode => {
            let bound = match (r.namespace, r.name) {
                (Some(ns), Some(name)) => pod_node(api, ns, name).await,
                _ => None,
            };
            match bound {
                Some(n) if n == *node => Ok(()),
                // Gone already: the request itself answers 404.
                None => Ok(()),
                _ => deny(format!(
                    "node \"{node}\" can only update pod status for pods with spec.nodeName set to itself"
                )),
            }
        }
    }
}

/// The token the API server presents to `node`'s agent: HMAC-SHA256 of the node's name under
/// the cluster's agent secret, so each agent holds a credential for calls to itself only.
pub fn agent_token_for(secret: &str, node: &str) -> String {
    use sha2::{Digest, Sha256};
    const BLOCK: usize = 64;
    let mut key = secret.as_bytes().to_vec();
    if key.len() > BLOCK {
        key = Sha256::digest(&key).to_vec();
    }
    key.resize(BLOCK, 0);
    let pad = |b: u8| key.iter().map(|k| k ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(node.as_bytes())
        .finalize();
    let mac = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    mac.iter().map(|b| format!("{b:02x}")).collect()
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
    fn empty_segments_cannot_disguise_a_resource() {
        // The router drops empty segments; so does the authorizer.
        let r = parse_path("/api/v1/namespaces//events/secrets/x").unwrap();
        assert_eq!(
            (r.namespace, r.resource, r.name),
            (Some("events"), "secrets", Some("x"))
        );
        assert!(matches!(
            node_rule("n1", &Method::DELETE, &r, Some("x")),
            NodeRule::Deny(_)
        ));
    }

    #[test]
    fn the_node_rule() {
        let rule = |m: Method, path: &str, named: Option<&str>| {
            node_rule("n1", &m, &parse_path(path).unwrap(), named)
        };
        let allow = NodeRule::Allow;
        // Its own Node and Lease; nobody else's.
        assert_eq!(rule(Method::POST, "/api/v1/nodes", Some("n1")), allow);
        assert_eq!(
            rule(Method::PATCH, "/api/v1/nodes/n1/status", Some("n1")),
            allow
        );
        assert!(matches!(
            rule(Method::PATCH, "/api/v1/nodes/n2", Some("n2")),
            NodeRule::Deny(_)
        ));
        assert!(matches!(
            rule(Method::PATCH, "/api/v1/nodes", None),
            NodeRule::Deny(_)
        ));
        assert!(matches!(
            rule(Method::DELETE, "/api/v1/nodes", None),
            NodeRule::Deny(_)
        ));
        let lease = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
        assert_eq!(rule(Method::PUT, &format!("{lease}/n1"), Some("n1")), allow);
        assert!(matches!(
            rule(Method::PUT, &format!("{lease}/n2"), Some("n2")),
            NodeRule::Deny(_)
        ));
        // Pods: status and deletion of its own (checked against the stored pod), nothing else.
        let pod = "/api/v1/namespaces/default/pods/p";
        assert_eq!(
            rule(Method::PATCH, &format!("{pod}/status"), Some("p")),
            NodeRule::IfPodOnNode
        );
        assert_eq!(rule(Method::DELETE, pod, Some("p")), NodeRule::IfPodOnNode);
        assert!(matches!(
            rule(Method::PATCH, pod, Some("p")),
            NodeRule::Deny(_)
        ));
        assert!(matches!(
            rule(Method::POST, "/api/v1/namespaces/default/pods", Some("p")),
            NodeRule::Deny(_)
        ));
        assert!(matches!(
            rule(Method::DELETE, "/api/v1/namespaces/default/pods", None),
            NodeRule::Deny(_)
        ));
        // Events: create and update one; no collection deletes.
        assert_eq!(
            rule(Method::POST, "/api/v1/namespaces/default/events", Some("e")),
            allow
        );
        assert_eq!(
            rule(
                Method::PATCH,
                "/api/v1/namespaces/default/events/e",
                Some("e")
            ),
            allow
        );
        assert!(matches!(
            rule(Method::DELETE, "/api/v1/namespaces/default/events", None),
            NodeRule::Deny(_)
        ));
        // Reads: Secrets by name only, never credentials; no logs or exec of pods.
        assert_eq!(
            rule(
                Method::GET,
                "/api/v1/namespaces/default/secrets/app",
                Some("app")
            ),
            allow
        );
        assert!(matches!(
            rule(Method::GET, "/api/v1/secrets", None),
            NodeRule::Deny(_)
        ));
        assert!(matches!(
            rule(Method::GET, "/api/v1/namespaces/kube-system/secrets", None),
            NodeRule::Deny(_)
        ));
        assert!(matches!(
            rule(
                Method::GET,
                "/api/v1/namespaces/kube-system/secrets/node-token-n2",
                Some("node-token-n2")
            ),
            NodeRule::Deny(_)
        ));
        assert!(matches!(
            rule(Method::GET, &format!("{pod}/log"), Some("p")),
            NodeRule::Deny(_)
        ));
        assert_eq!(rule(Method::GET, "/api/v1/pods", None), allow);
        // Anything else written: no.
        assert!(matches!(
            rule(
                Method::POST,
                "/api/v1/namespaces/default/configmaps",
                Some("c")
            ),
            NodeRule::Deny(_)
        ));
    }

    #[test]
    fn agent_tokens_are_per_node() {
        let a = agent_token_for("secret", "n1");
        assert_eq!(a.len(), 64);
        assert_eq!(a, agent_token_for("secret", "n1"));
        assert_ne!(a, agent_token_for("secret", "n2"));
        assert_ne!(a, agent_token_for("other", "n1"));
        // RFC 4231 test case 2.
        assert_eq!(
            agent_token_for("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
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
