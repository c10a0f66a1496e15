//! The Kubernetes REST API over the store.
//!
//! The API server is the only component that touches the store; the scheduler, controllers and
//! agents are clients of this API, even when `skiff up` runs them in the same process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use skiff_store::Store;

pub mod auth;
pub mod discovery;
pub mod errors;
pub mod events;
pub mod exec;
pub mod join;
pub mod logs;
pub mod metrics;
pub mod namespaces;
pub mod object;
pub mod protobuf;
pub mod query;
pub mod resources;
pub mod rest;
pub mod services;
pub mod strategy;
pub mod table;
pub mod tls;
pub mod watch;

use errors::ApiError;
use query::Params;
use rest::{Api, Target, json_response, json_typed};
pub use services::ServiceNetwork;

/// The largest request body accepted (Kubernetes' limit is 3 MiB for objects).
const MAX_BODY: usize = 8 * 1024 * 1024;

pub struct ServerConfig {
    /// Where the certificates and token live (`<data-dir>/pki`).
    pub pki_dir: PathBuf,
    pub bind: SocketAddr,
    /// Extra names for the serving certificate.
    pub extra_sans: Vec<String>,
    /// The Service network: `--service-cluster-ip-range`, `--service-node-port-range`, the
    /// address the `kubernetes` service points at. Default: Kubernetes' (`10.96.0.0/12`,
    /// `30000-32767`).
    pub network: ServiceNetwork,
}

struct AppState {
    api: Arc<Api>,
    token: String,
    tokens: auth::TokenCache,
    ca_pem: String,
}

/// A started server.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub pki: tls::Pki,
    pub api: Arc<Api>,
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish briefly, and waits.
    pub async fn shutdown(self) {
        self.handle
            .graceful_shutdown(Some(std::time::Duration::from_secs(2)));
        let _ = self.task.await;
    }
}

/// Starts the HTTPS API server on `cfg.bind` over `store`, ready when this returns.
pub async fn start(cfg: ServerConfig, store: Arc<dyn Store>) -> std::io::Result<RunningServer> {
    let network = cfg.network.clone();
    tls::share_through_store(&cfg.pki_dir, &*store).await?;
    let pki = tls::load_or_create(&cfg.pki_dir, &cfg.extra_sans)?;
    let listener = std::net::TcpListener::bind(cfg.bind)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let advertised = services::advertised_address(&network, addr);
    let api = Arc::new(Api {
        store,
        server_address: addr.to_string(),
        metrics: metrics::Metrics::new(),
        agent_token: pki.agent_token.clone(),
        services: services::Allocators::new(network),
    });
    namespaces::ensure_system_namespaces(&api)
        .await
        .map_err(|e| std::io::Error::other(e.message))?;
    services::restore(&api)
        .await
        .map_err(|e| std::io::Error::other(e.message))?;
    if let Err(e) = services::ensure_kubernetes_service(&api, advertised, addr.port()).await {
        tracing::warn!(error = %e.message, "could not create or update the kubernetes service");
    }
    tokio::spawn(namespaces::run_finalizer(api.clone()));
    tokio::spawn(services::run_reconciler(
        api.clone(),
        advertised,
        addr.port(),
    ));
    tokio::spawn(events::run_expiry(api.clone()));
    let state = Arc::new(AppState {
        api: api.clone(),
        token: pki.admin_token.clone(),
        tokens: auth::TokenCache::default(),
        ca_pem: pki.ca_pem.clone(),
    });
    let app = Router::new().fallback(dispatch).with_state(state);
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
        pki.cert_pem.clone().into_bytes(),
        pki.key_pem.clone().into_bytes(),
    )
    .await?;
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp_rustls(listener, tls)?.handle(handle.clone());
    let task = tokio::spawn(async move { server.serve(app.into_make_service()).await });
    Ok(RunningServer {
        addr,
        pki,
        api,
        handle,
        task,
    })
}

/// The request's bearer token, if any.
fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

async fn dispatch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    // The one thing anyone may read: the CA, for agents that pin its hash.
    if req.method() == Method::GET && req.uri().path() == join::CLUSTER_INFO_PATH {
        return join::cluster_info(&state.ca_pem);
    }
    let user = match bearer(&req) {
        Some(t) => auth::authenticate(&state.api, &state.tokens, &state.token, t).await,
        None => None,
    };
    let Some(user) = user else {
        return ApiError::unauthorized().into_response();
    };
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(String::from);
    let params = Params::parse(query.as_deref());
    // exec/attach/portforward (and logs over WebSocket) need the request itself: the
    // connection is upgraded.
    if let Some(target) =
        exec::streaming_target(&path).or_else(|| exec::log_upgrade_target(&path, req.headers()))
    {
        if user != auth::User::Admin {
            let r = auth::parse_path(&path).unwrap_or_default();
            return ApiError::forbidden(format!(
                "User \"{}\" cannot create resource \"pods/{}\" in API group \"\"",
                user.name(),
                r.sub.unwrap_or("exec")
            ))
            .into_response();
        }
        let resp = exec::serve(&state.api, req, target).await;
        record(&state, "CONNECT", "pods".into(), &resp, started);
        return resp;
    }
    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            let mut e = ApiError::bad_request("the request body is too large or could not be read");
            e.code = 413;
            e.reason = "RequestEntityTooLarge";
            return e.into_response();
        }
    };
    if let Err(e) = auth::authorize(&state.api, &user, &method, &path, &body).await {
        record(
            &state,
            verb(&method, &params),
            "forbidden".into(),
            &e.clone().into_response(),
            started,
        );
        return e.into_response();
    }
    if method == Method::GET && path == join::AGENT_TOKEN_PATH {
        // A node learns its own; the admin names the node.
        let node = match &user {
            auth::User::Node(n) => Some(n.clone()),
            _ => params.get("node").map(String::from),
        };
        return match node {
            Some(n) => {
                let token = auth::agent_token_for(&state.api.agent_token, &n);
                json_response(StatusCode::OK, &serde_json::json!({"agentToken": token}))
            }
            None => ApiError::bad_request("name the node: ?node=NAME").into_response(),
        };
    }
    if method == Method::POST && path == join::JOIN_PATH {
        let resp = join::join(&state.api, &body, user == auth::User::Admin)
            .await
            .unwrap_or_else(IntoResponse::into_response);
        record(&state, "POST", "join".into(), &resp, started);
        return resp;
    }
    let (resp, resource) = route(&state.api, &method, &path, &params, &headers, &body).await;
    let resp = resp.unwrap_or_else(IntoResponse::into_response);
    record(&state, verb(&method, &params), resource, &resp, started);
    tracing::debug!(%method, %path, code = resp.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
    resp
}

/// Counts a request and its latency in the metrics.
fn record(state: &AppState, verb: &str, resource: String, resp: &Response, started: Instant) {
    state
        .api
        .metrics
        .requests
        .get_or_create(&metrics::RequestLabels {
            verb: verb.to_string(),
            resource,
            code: resp.status().as_u16().to_string(),
        })
        .inc();
    state
        .api
        .metrics
        .latency
        .get_or_create(&metrics::VerbLabels {
            verb: verb.to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
}

fn verb(method: &Method, params: &Params) -> &'static str {
    match *method {
        Method::GET if params.flag("watch") => "WATCH",
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

fn text(body: &'static str) -> Response {
    (
        StatusCode::OK,
        [("content-type", "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Routes one request; returns the response and the resource it concerned (for metrics).
async fn route(
    api: &Arc<Api>,
    method: &Method,
    path: &str,
    params: &Params,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> (Result<Response, ApiError>, String) {
    let accept = rest::header(headers, "accept");
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let discovery = |v: serde_json::Value| Ok(json_response(StatusCode::OK, &v));
    let r = match segs.as_slice() {
        ["version"] => discovery(discovery::version()),
        ["healthz" | "livez" | "readyz", ..] => Ok(text("ok")),
        ["metrics"] => Ok((
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
            api.metrics.encode(),
        )
            .into_response()),
        ["openapi", "v3"] => discovery(discovery::openapi_index()),
        ["openapi", "v2"] => Ok((
            StatusCode::OK,
            [("content-type", "application/octet-stream")],
            discovery::openapi_v2_protobuf(),
        )
            .into_response()),
        ["openapi", "v3", rest @ ..] => match discovery::openapi_group(&rest.join("/")) {
            Some(g) => discovery(discovery::openapi_doc(g)),
            None => Err(ApiError::no_route()),
        },
        ["api"] => match discovery::aggregated_type(accept) {
            Some(ct) => Ok(json_typed(
                StatusCode::OK,
                &discovery::aggregated_core(ct),
                ct,
            )),
            None => discovery(discovery::api_versions(&api.server_address)),
        },
        ["apis"] => match discovery::aggregated_type(accept) {
            Some(ct) => Ok(json_typed(
                StatusCode::OK,
                &discovery::aggregated_groups(ct),
                ct,
            )),
            None => discovery(discovery::api_group_list()),
        },
        ["api", "v1"] => discovery(discovery::resource_list("", "v1").expect("core")),
        ["apis", g] if resources::groups().contains(g) => discovery(discovery::api_group(g)),
        ["apis", g, v] => match discovery::resource_list(g, v) {
            Some(l) => discovery(l),
            None => Err(ApiError::no_route()),
        },
        ["api", "v1", rest @ ..] => {
            return resource(api, "", "v1", rest, method, params, headers, body).await;
        }
        ["apis", g, v, rest @ ..] => {
            return resource(api, g, v, rest, method, params, headers, body).await;
        }
        _ => Err(ApiError::no_route()),
    };
    (r, String::new())
}

#[allow(clippy::too_many_arguments)]
async fn resource(
    api: &Arc<Api>,
    group: &str,
    version: &str,
    segs: &[&str],
    method: &Method,
    params: &Params,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> (Result<Response, ApiError>, String) {
    match Target::resolve(group, version, segs) {
        None => (Err(ApiError::no_route()), String::new()),
        Some(t) => {
            let name = t.info.resource.to_string();
            (
                rest::serve_resource(api, t, method, params, headers, body).await,
                name,
            )
        }
    }
}
