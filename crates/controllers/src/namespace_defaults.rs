//! What every namespace is given: the `default` ServiceAccount (Kubernetes' service-account
//! controller) and the `kube-root-ca.crt` ConfigMap holding the cluster CA (its root CA
//! publisher). Both are level-triggered: they watch namespaces and only the objects they manage
//! (a field selector on the name), and on every change — or every resync period — compare what
//! each live namespace should hold with what it holds, then create or overwrite the difference.
//! A terminating namespace is left alone, as its contents are being deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::Resource;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::Notify;

/// The service account every namespace gets.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// The ConfigMap carrying the cluster CA into every namespace.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// Its one key.
pub const ROOT_CA_KEY: &str = "ca.crt";
/// How often the whole picture is re-checked even without a watch event.
const RESYNC: Duration = Duration::from_secs(30);

/// The namespaces that should hold the managed objects: those not being deleted.
pub fn live_namespaces(namespaces: &[Arc<Namespace>]) -> BTreeSet<String> {
    namespaces
        .iter()
        .filter(|ns| ns.metadata.deletion_timestamp.is_none())
        .filter(|ns| ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating"))
        .filter_map(|ns| ns.metadata.name.clone())
        .collect()
}

/// The live namespaces without a `default` ServiceAccount (one being deleted does not count).
pub fn missing_service_accounts(
    namespaces: &[Arc<Namespace>],
    accounts: &[Arc<ServiceAccount>],
) -> Vec<String> {
    let present: BTreeSet<&str> = accounts
        .iter()
        .filter(|sa| sa.metadata.name.as_deref() == Some(DEFAULT_SERVICE_ACCOUNT))
        .filter(|sa| sa.metadata.deletion_timestamp.is_none())
        .filter_map(|sa| sa.metadata.namespace.as_deref())
        .collect();
    live_namespaces(namespaces)
        .into_iter()
        .filter(|ns| !present.contains(ns.as_str()))
        .collect()
}

/// What the root CA publisher must do in one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaAction {
    Create {
        namespace: String,
    },
    /// The ConfigMap exists with other data: overwrite it (at the resourceVersion seen).
    Update {
        namespace: String,
        resource_version: Option<String>,
    },
}

/// The ConfigMap's data: exactly `ca.crt` = the CA bundle.
pub fn root_ca_data(ca_pem: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(ROOT_CA_KEY.to_string(), ca_pem.to_string())])
}

/// The creates and overwrites that give every live namespace a `kube-root-ca.crt` whose data is
/// exactly `ca.crt` = `ca_pem` and that carries no binary data.
pub fn root_ca_actions(
    namespaces: &[Arc<Namespace>],
    maps: &[Arc<ConfigMap>],
    ca_pem: &str,
) -> Vec<CaAction> {
    let wanted = root_ca_data(ca_pem);
    let by_ns: BTreeMap<&str, &ConfigMap> = maps
        .iter()
        .filter(|cm| cm.metadata.name.as_deref() == Some(ROOT_CA_CONFIG_MAP))
        .filter_map(|cm| Some((cm.metadata.namespace.as_deref()?, cm.as_ref())))
        .collect();
    live_namespaces(namespaces)
        .into_iter()
        .filter_map(|ns| match by_ns.get(ns.as_str()) {
            None => Some(CaAction::Create { namespace: ns }),
            Some(cm) if cm.metadata.deletion_timestamp.is_some() => None,
            Some(cm)
                if cm.data.as_ref() == Some(&wanted)
                    && cm.binary_data.as_ref().is_none_or(|b| b.is_empty()) =>
            {
                None
            }
            Some(cm) => Some(CaAction::Update {
                namespace: ns,
                resource_version: cm.metadata.resource_version.clone(),
            }),
        })
        .collect()
}

/// Starts a reflector for `api` (restricted to objects named `name` when given) that pokes
/// `wake` on every event, and returns its store.
fn watch_into<K>(api: Api<K>, name: Option<&str>, wake: Arc<Notify>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
{
    let (reader, writer) = reflector::store();
    let mut cfg = watcher::Config::default();
    if let Some(name) = name {
        cfg = cfg.fields(&format!("metadata.name={name}"));
    }
    let stream = reflector(writer, watcher(api, cfg)).default_backoff();
    tokio::spawn(stream.for_each(move |_| {
        wake.notify_one();
        async {}
    }));
    reader
}

/// Waits for a watch event or the resync period.
async fn next_pass(wake: &Notify) {
    let _ = tokio::time::timeout(RESYNC, wake.notified()).await;
}

fn already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// The service-account controller: runs until the task is dropped.
pub async fn run_service_accounts(client: kube::Client) {
    let wake = Arc::new(Notify::new());
    let namespaces = watch_into(Api::<Namespace>::all(client.clone()), None, wake.clone());
    let accounts = watch_into(
        Api::<ServiceAccount>::all(client.clone()),
        Some(DEFAULT_SERVICE_ACCOUNT),
        wake.clone(),
    );
    loop {
        next_pass(&wake).await;
        let (Ok(()), Ok(())) = (
            namespaces.wait_until_ready().await,
            accounts.wait_until_ready().await,
        ) else {
            return;
        };
        for ns in missing_service_accounts(&namespaces.state(), &accounts.state()) {
            let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
            let sa: ServiceAccount = match serde_json::from_value(
                json!({"metadata": {"name": DEFAULT_SERVICE_ACCOUNT, "namespace": ns}}),
            ) {
                Ok(sa) => sa,
                Err(_) => continue,
            };
            match api.create(&PostParams::default(), &sa).await {
                Ok(_) => tracing::debug!(namespace = %ns, "created the default service account"),
                // The cache had not seen it yet, or the namespace is going away.
                Err(e) if already_exists(&e) => {}
                Err(e) => {
                    tracing::debug!(namespace = %ns, error = %e, "cannot create the default service account; will retry");
                }
            }
        }
    }
}

/// The root CA publisher: keeps `kube-root-ca.crt` in every namespace equal to `ca_pem`. Runs
/// until the task is dropped.
pub async fn run_root_ca_publisher(client: kube::Client, ca_pem: String) {
    let wake = Arc::new(Notify::new());
    let namespaces = watch_into(Api::<Namespace>::all(client.clone()), None, wake.clone());
    let maps = watch_into(
        Api::<ConfigMap>::all(client.clone()),
        Some(ROOT_CA_CONFIG_MAP),
        wake.clone(),
    );
    loop {
        next_pass(&wake).await;
        let (Ok(()), Ok(())) = (
            namespaces.wait_until_ready().await,
            maps.wait_until_ready().await,
        ) else {
            return;
        };
        for action in root_ca_actions(&namespaces.state(), &maps.state(), &ca_pem) {
            let (ns, rv) = match &action {
                CaAction::Create { namespace } => (namespace.clone(), None),
                CaAction::Update {
                    namespace,
                    resource_version,
                } => (namespace.clone(), resource_version.clone()),
            };
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            let value = json!({
                "metadata": {
                    "name": ROOT_CA_CONFIG_MAP, "namespace": ns, "resourceVersion": rv,
                    "annotations": {"kubernetes.io/description":
                        "The cluster's CA certificate, published in every namespace so that pods can verify the API server."},
                },
                "data": root_ca_data(&ca_pem),
            });
            let Ok(cm) = serde_json::from_value::<ConfigMap>(value) else {
                continue;
            };
            let result = match action {
                CaAction::Create { .. } => api.create(&PostParams::default(), &cm).await,
                CaAction::Update { .. } => {
                    api.replace(ROOT_CA_CONFIG_MAP, &PostParams::default(), &cm)
                        .await
                }
            };
            match result {
                Ok(_) => tracing::debug!(namespace = %ns, "published the root CA"),
                // A stale cache (conflict or already there): the next event brings a new pass.
                Err(e) if matches!(&e, kube::Error::Api(s) if s.code == 409) => {}
                Err(e) => {
                    tracing::debug!(namespace = %ns, error = %e, "cannot publish the root CA; will retry");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str, phase: &str) -> Arc<Namespace> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name}, "status": {"phase": phase}}))
                .unwrap(),
        )
    }

    fn sa(ns: &str, name: &str) -> Arc<ServiceAccount> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}})).unwrap(),
        )
    }

    fn cm(ns: &str, data: serde_json::Value) -> Arc<ConfigMap> {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": ROOT_CA_CONFIG_MAP, "namespace": ns,
                "resourceVersion": "7"}, "data": data}),
            )
            .unwrap(),
        )
    }

    #[test]
    fn every_live_namespace_gets_a_default_service_account() {
        let nss = [
            ns("a", "Active"),
            ns("b", "Active"),
            ns("gone", "Terminating"),
        ];
        assert_eq!(missing_service_accounts(&nss, &[]), ["a", "b"]);
        let sas = [sa("a", "default"), sa("b", "builder")];
        assert_eq!(missing_service_accounts(&nss, &sas), ["b"]);
        let mut deleting = (*sa("b", "default")).clone();
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert_eq!(
            missing_service_accounts(&nss, &[sa("a", "default"), Arc::new(deleting)]),
            ["b"]
        );
        assert!(
            missing_service_accounts(&nss, &[sa("a", "default"), sa("b", "default")]).is_empty()
        );
    }

    #[test]
    fn the_root_ca_is_created_and_restored() {
        let pem = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";
        let nss = [
            ns("a", "Active"),
            ns("b", "Active"),
            ns("c", "Active"),
            ns("t", "Terminating"),
        ];
        let maps = [
            cm("a", json!({"ca.crt": pem})),
            cm("b", json!({"ca.crt": "edited"})),
            cm("t", json!({})),
        ];
        assert_eq!(
            root_ca_actions(&nss, &maps, pem),
            [
                CaAction::Update {
                    namespace: "b".into(),
                    resource_version: Some("7".into())
                },
                CaAction::Create {
                    namespace: "c".into()
                },
            ]
        );
        // An extra key counts as an edit.
        let extra = [cm("a", json!({"ca.crt": pem, "more": "x"}))];
        assert_eq!(root_ca_actions(&nss[..1], &extra, pem).len(), 1);
    }
}
