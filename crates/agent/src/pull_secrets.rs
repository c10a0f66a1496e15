//! Image pull credentials from a pod's `imagePullSecrets` (spec §5.3), as rules without I/O: the
//! worker reads the Secrets and passes them here.
//!
//! A Secret counts only with its type's key: `kubernetes.io/dockerconfigjson` with a non-empty
//! `.dockerconfigjson`, or `kubernetes.io/dockercfg` with a non-empty `.dockercfg`. Secrets are
//! tried in the pod's order and the first that holds credentials for the image's registry wins
//! (the runtime takes one set; the kubelet would try each in turn).

use k8s_openapi::api::core::v1::Secret;
use skiff_core::image::{Reference, credentials_for};

pub const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
pub const DOCKERCFG_TYPE: &str = "kubernetes.io/dockercfg";
pub const DOCKERCFG_KEY: &str = ".dockercfg";

/// The docker config a pull secret holds, when it is of a docker config type and parses.
pub fn docker_config(secret: &Secret) -> Option<serde_json::Value> {
    let key = match secret.type_.as_deref() {
        Some(DOCKER_CONFIG_JSON_TYPE) => DOCKER_CONFIG_JSON_KEY,
        Some(DOCKERCFG_TYPE) => DOCKERCFG_KEY,
        _ => return None,
    };
    let bytes = secret.data.as_ref()?.get(key)?;
    if bytes.0.is_empty() {
        return None;
    }
    serde_json::from_slice(&bytes.0).ok()
}

/// The (user, password) to pull `image` with, from the first secret that has credentials for
/// its registry. None for an image reference that does not parse.
pub fn credentials(secrets: &[Secret], image: &str) -> Option<(String, String)> {
    let reference = Reference::parse(image).ok()?;
    secrets
        .iter()
        .filter_map(docker_config)
        .find_map(|cfg| credentials_for(&cfg, &reference))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn secret(type_: &str, key: &str, body: serde_json::Value) -> Secret {
        Secret {
            type_: Some(type_.into()),
            data: Some(
                [(key.to_string(), ByteString(body.to_string().into_bytes()))]
                    .into_iter()
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn picks_the_first_secret_for_the_registry() {
        // "alice:pw1" and "bob:pw2" in base64.
        let quay = secret(
            DOCKER_CONFIG_JSON_TYPE,
            DOCKER_CONFIG_JSON_KEY,
            json!({"auths": {"quay.io": {"auth": "YWxpY2U6cHcx"}}}),
        );
        let hub = secret(
            DOCKERCFG_TYPE,
            DOCKERCFG_KEY,
            json!({"https://index.docker.io/v1/": {"auth": "Ym9iOnB3Mg=="}}),
        );
        let secrets = [quay, hub];
        assert_eq!(
            credentials(&secrets, "quay.io/team/app:1"),
            Some(("alice".into(), "pw1".into()))
        );
        assert_eq!(
            credentials(&secrets, "busybox"),
            Some(("bob".into(), "pw2".into()))
        );
        assert_eq!(credentials(&secrets, "ghcr.io/x/y:1"), None);
        assert_eq!(credentials(&secrets, "Not A Reference"), None);
    }

    #[test]
    fn only_docker_config_types_with_their_key_count() {
        let body = json!({"auths": {"quay.io": {"username": "u", "password": "p"}}});
        let opaque = secret("Opaque", DOCKER_CONFIG_JSON_KEY, body.clone());
        assert_eq!(docker_config(&opaque), None);
        let wrong_key = secret(DOCKER_CONFIG_JSON_TYPE, DOCKERCFG_KEY, body.clone());
        assert_eq!(docker_config(&wrong_key), None);
        let good = secret(DOCKER_CONFIG_JSON_TYPE, DOCKER_CONFIG_JSON_KEY, body);
        assert_eq!(
            credentials(&[opaque, wrong_key, good], "quay.io/a/b:1"),
            Some(("u".into(), "p".into()))
        );
    }
}
