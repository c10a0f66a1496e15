//! The two writes the scheduling loop makes to pods: the binding, and the `PodScheduled=False`
//! status patch after a failed attempt. Each is one API call; the loop runs them in spawned tasks
//! so a slow write never holds up the next decision.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// Why a write failed, in the words the loop needs.
#[derive(Debug, Clone)]
pub struct WriteError {
    /// HTTP status from the API server, 0 for transport errors.
    pub code: u16,
    /// The server's message (the metav1.Status message) or the transport error.
    pub message: String,
}

impl WriteError {
    fn from_kube(e: kube::Error) -> WriteError {
        match e {
            kube::Error::Api(s) => WriteError {
                code: s.code,
                message: s.message.clone(),
            },
            other => WriteError {
                code: 0,
                message: other.to_string(),
            },
        }
    }
}

/// POST `pods/{name}/binding`: `{metadata: {name, namespace, uid}, target: {kind: Node, name}}`.
/// The UID makes the API server refuse to bind a pod recreated under the same name.
pub async fn bind(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    uid: &str,
    node: &str,
) -> Result<(), WriteError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    api.create_subresource::<Value, Value>("binding", name, &PostParams::default(), &binding)
        .await
        .map(|_| ())
        .map_err(WriteError::from_kube)
}

/// Strategic merge patch of `pods/{name}/status` (the body from
/// [`crate::pod_status::pod_scheduled_false_patch`]).
pub async fn patch_pod_status(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    patch: &Value,
) -> Result<(), WriteError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    api.patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .map(|_| ())
        .map_err(WriteError::from_kube)
}
