//! The kubeconfig `skiff up` writes: cluster, user and context all named `skiff`.

use std::path::Path;

use base64::Engine;

/// Renders a kubeconfig for `server` trusting `ca_pem`, authenticating with `token`.
pub fn render(server: &str, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: skiff
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: skiff
  user:
    token: {token}
contexts:
- name: skiff
  context:
    cluster: skiff
    user: skiff
    namespace: default
current-context: skiff
preferences: {{}}
"
    )
}

/// Writes the kubeconfig with owner-only permissions (it holds the admin token).
pub fn write(path: &Path, contents: &str) -> std::io::Result<()> {
    skiff_apiserver::tls::write_private(path, contents)
}
