//! API errors rendered as `metav1.Status`, the shape every Kubernetes client decodes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use skiff_core::validation::{FieldError, invalid_message};

/// An error answered to a client: HTTP code, Status reason, message and optional details.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    /// `pods "x" not found`. `qualified` is the resource name with its group (`leases.coordination.k8s.io`).
    pub fn not_found(qualified: &str, name: &str) -> ApiError {
        let (resource, group) = split_qualified(qualified);
        ApiError::new(404, "NotFound", format!("{qualified} \"{name}\" not found"))
            .with_details(json!({"name": name, "group": group, "kind": resource}))
    }

    pub fn already_exists(qualified: &str, name: &str) -> ApiError {
        let (resource, group) = split_qualified(qualified);
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{qualified} \"{name}\" already exists"),
        )
        .with_details(json!({"name": name, "group": group, "kind": resource}))
    }

    pub fn conflict(qualified: &str, name: &str, why: &str) -> ApiError {
        let (resource, group) = split_qualified(qualified);
        ApiError::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {qualified} \"{name}\": {why}"),
        )
        .with_details(json!({"name": name, "group": group, "kind": resource}))
    }

    /// The optimistic-concurrency conflict every client retries on.
    pub fn modified(qualified: &str, name: &str) -> ApiError {
        ApiError::conflict(
            qualified,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 with one cause per field error; `kind` is the object kind (`Pod`).
    pub fn invalid(kind: &str, group: &str, name: &str, errs: &[FieldError]) -> ApiError {
        let causes: Vec<Value> = errs
            .iter()
            .map(|e| json!({"reason": e.reason(), "message": e.message(), "field": e.field}))
            .collect();
        ApiError::new(422, "Invalid", invalid_message(kind, name, errs))
            .with_details(json!({"name": name, "group": group, "kind": kind, "causes": causes}))
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "Forbidden", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type:?})"
            ),
        )
    }

    /// 410 Gone for a watch or list from a compacted revision.
    pub fn expired(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message)
    }

    /// The plain-text-like 404 for paths no resource serves.
    pub fn no_route() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    /// The `Status` object for this error.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            status["details"] = d.clone();
        }
        status
    }
}

fn split_qualified(q: &str) -> (&str, &str) {
    q.split_once('.').unwrap_or((q, ""))
}

impl From<skiff_store::StoreError> for ApiError {
    fn from(e: skiff_store::StoreError) -> ApiError {
        match e {
            skiff_store::StoreError::Compacted { requested, oldest } => {
                ApiError::expired(format!("too old resource version: {requested} ({oldest})"))
            }
            skiff_store::StoreError::NotFound => ApiError::no_route(),
            skiff_store::StoreError::Conflict { .. } => ApiError {
                code: 409,
                reason: "Conflict",
                message: "the object has been modified; please apply your changes to the latest version and try again".into(),
                details: None,
            },
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.status()).unwrap_or_default();
        (code, [("content-type", "application/json")], body).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
