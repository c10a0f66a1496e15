//! The endpoints controller: for every Service with a selector (not ExternalName; headless
//! included) it keeps the core/v1 Endpoints object of the same name and the service's
//! discovery.k8s.io/v1 EndpointSlices in line with the pods the selector picks, so readiness
//! decides who gets traffic. `desired` computes what they should say, `plan` the writes; this
//! module is the loop: watches on services, pods, Endpoints and the slices this controller
//! manages feed a de-duplicating queue of service keys, and workers sync one service at a time.
//!
//! A pod's status write reaches the API as one watch event, which queues the services whose
//! selector matches the pod (old and new labels), and a worker writes the change at once: no
//! batching delay on that path. Everything is re-queued every `resync_period` as a safety net,
//! and after a watch is re-listed.

pub mod cache;
pub mod desired;
pub mod plan;
pub mod queue;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::Resource;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use cache::{Cache, Change, Key};
use desired::{managed_selector, selector_matches};
use plan::{CONTROLLER_NAME, MANAGED_BY_LABEL, SERVICE_NAME_LABEL};
use queue::WorkQueue;

/// Endpoints objects holding a leader-election record are not a service's: never swept.
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

#[derive(Clone, Debug)]
pub struct Config {
    /// Endpoints per EndpointSlice before another slice is started (Kubernetes' default: 100).
    pub max_endpoints_per_slice: usize,
    /// How often every service is queued again, whatever the watches said.
    pub resync_period: Duration,
    /// Services synced concurrently (never the same one twice at once).
    pub workers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_endpoints_per_slice: 100,
            resync_period: Duration::from_secs(30),
            workers: 2,
        }
    }
}

/// Runs the controller with the default configuration until the future is dropped.
pub async fn run(client: kube::Client) {
    run_with(client, Config::default()).await
}

#[derive(Default)]
struct Shared {
    services: Mutex<Cache<Service>>,
    pods: Mutex<Cache<Pod>>,
    endpoints: Mutex<Cache<Endpoints>>,
    slices: Mutex<Cache<EndpointSlice>>,
    queue: WorkQueue<Key>,
    /// Consecutive failures per service, for the retry back-off.
    failures: Mutex<HashMap<Key, u32>>,
}

/// Runs the controller until the future is dropped (which stops every task it started).
pub async fn run_with(client: kube::Client, cfg: Config) {
    let shared = Arc::new(Shared::default());
    let mut tasks = JoinSet::new();
    let (synced_tx, mut synced_rx) = mpsc::channel::<()>(4);
    let managed = format!("{MANAGED_BY_LABEL}={CONTROLLER_NAME}");
    tasks.spawn(watch(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        shared.clone(),
        synced_tx.clone(),
        on_service,
    ));
    tasks.spawn(watch(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        shared.clone(),
        synced_tx.clone(),
        on_pod,
    ));
    tasks.spawn(watch(
        Api::<Endpoints>::all(client.clone()),
        watcher::Config::default(),
        shared.clone(),
        synced_tx.clone(),
        on_endpoints,
    ));
    tasks.spawn(watch(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(&managed),
        shared.clone(),
        synced_tx,
        on_slice,
    ));
    // Nothing is written before every cache has listed once: an empty pod cache would empty
    // every service's endpoints.
    for _ in 0..4 {
        if synced_rx.recv().await.is_none() {
            return;
        }
    }
    tracing::debug!("endpoints controller caches synced");
    enqueue_everything(&shared);
    // Endpoints left behind by services deleted while nothing watched (once, at start).
    let orphans: Vec<Key> = {
        let services = shared.services.lock().unwrap();
        let endpoints = shared.endpoints.lock().unwrap();
        endpoints
            .all()
            .filter(|e| {
                let leader = e
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(LEADER_ANNOTATION));
                !leader && services.get(&cache::key_of(e.as_ref())).is_none()
            })
            .map(|e| cache::key_of(e.as_ref()))
            .collect()
    };
    for k in orphans {
        shared.queue.add(k);
    }
    for _ in 0..cfg.workers.max(1) {
        tasks.spawn(worker(client.clone(), shared.clone(), cfg.clone()));
    }
    let mut tick = tokio::time::interval(cfg.resync_period);
    tick.tick().await;
    loop {
        tick.tick().await;
        enqueue_everything(&shared);
    }
}

/// Queues every service and every service some managed slice names.
fn enqueue_everything(shared: &Shared) {
    let mut keys: BTreeSet<Key> = shared
        .services
        .lock()
        .unwrap()
        .all()
        .map(|s| cache::key_of(s.as_ref()))
        .collect();
    keys.extend(
        shared
            .slices
            .lock()
            .unwrap()
            .all()
            .filter_map(|s| slice_service(s)),
    );
    for k in keys {
        shared.queue.add(k);
    }
}

/// The service a slice belongs to (its `kubernetes.io/service-name` label).
fn slice_service(slice: &EndpointSlice) -> Option<Key> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((
        slice.metadata.namespace.clone().unwrap_or_default(),
        name.clone(),
    ))
}

/// Feeds one watch into `on_event`; signals `synced` after the first complete list. kube's
/// watcher re-lists after errors (with back-off) and reports it as Init … InitDone.
async fn watch<K>(
    api: Api<K>,
    wc: watcher::Config,
    shared: Arc<Shared>,
    synced: mpsc::Sender<()>,
    on_event: fn(&Shared, watcher::Event<K>),
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    let mut synced = Some(synced);
    let mut stream = std::pin::pin!(watcher(api, wc).default_backoff());
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(ev) => {
                let done = matches!(ev, watcher::Event::InitDone);
                on_event(&shared, ev);
                if done && let Some(tx) = synced.take() {
                    let _ = tx.send(()).await;
                }
            }
            Err(e) => {
                tracing::debug!(kind = %K::kind(&Default::default()), error = %e, "endpoints controller watch failed; retrying")
            }
        }
    }
}

fn on_service(shared: &Shared, ev: watcher::Event<Service>) {
    let mut c = shared.services.lock().unwrap();
    match ev {
        watcher::Event::Apply(svc) => {
            let key = cache::key_of(&svc);
            if !matches!(c.apply(svc), Change::None) {
                shared.queue.add(key);
            }
        }
        watcher::Event::Delete(svc) => {
            c.delete(&svc);
            shared.queue.add(cache::key_of(&svc));
        }
        watcher::Event::Init => c.init(),
        watcher::Event::InitApply(svc) => c.init_apply(svc),
        watcher::Event::InitDone => {
            // Services gone during a lost watch are among the ones known before.
            let before = c.init_done();
            let keys: Vec<Key> = before
                .into_keys()
                .chain(c.all().map(|s| cache::key_of(s.as_ref())))
                .collect();
            drop(c);
            for k in keys {
                shared.queue.add(k);
            }
        }
    }
}

/// The services (keys) in `ns` whose selector picks `labels`.
fn services_selecting(shared: &Shared, ns: &str, labels: &BTreeMap<String, String>) -> Vec<Key> {
    shared
        .services
        .lock()
        .unwrap()
        .in_namespace(ns)
        .filter(|s| managed_selector(s).is_some_and(|sel| selector_matches(sel, labels)))
        .map(|s| cache::key_of(s.as_ref()))
        .collect()
}

fn labels_of(pod: &Pod) -> BTreeMap<String, String> {
    pod.metadata.labels.clone().unwrap_or_default()
}

fn on_pod(shared: &Shared, ev: watcher::Event<Pod>) {
    let (ns, mut label_sets) = match ev {
        watcher::Event::Apply(pod) => {
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let labels = labels_of(&pod);
            let change = shared.pods.lock().unwrap().apply(pod.clone());
            match change {
                Change::Applied(Some(old)) if !desired::endpoint_change(&old, &pod) => return,
                Change::Applied(Some(old)) => (ns, vec![labels, labels_of(&old)]),
                Change::Applied(None) => (ns, vec![labels]),
                _ => return,
            }
        }
        watcher::Event::Delete(pod) => {
            let change = shared.pods.lock().unwrap().delete(&pod);
            let Change::Deleted(old) = change else {
                return;
            };
            (
                old.metadata.namespace.clone().unwrap_or_default(),
                vec![labels_of(&old)],
            )
        }
        watcher::Event::Init => return shared.pods.lock().unwrap().init(),
        watcher::Event::InitApply(pod) => return shared.pods.lock().unwrap().init_apply(pod),
        watcher::Event::InitDone => {
            // Pods gone during a lost watch leave no event: look at every service.
            shared.pods.lock().unwrap().init_done();
            return enqueue_everything(shared);
        }
    };
    label_sets.dedup();
    let keys: BTreeSet<Key> = label_sets
        .iter()
        .flat_map(|l| services_selecting(shared, &ns, l))
        .collect();
    for k in keys {
        shared.queue.add(k);
    }
}

/// Endpoints changed by someone else are put back, but only those of an existing service: an
/// Endpoints object without a service may be one a user is about to give a service to.
fn on_endpoints(shared: &Shared, ev: watcher::Event<Endpoints>) {
    let key = match ev {
        watcher::Event::Apply(e) => {
            let key = cache::key_of(&e);
            if matches!(shared.endpoints.lock().unwrap().apply(e), Change::None) {
                return;
            }
            key
        }
        watcher::Event::Delete(e) => {
            shared.endpoints.lock().unwrap().delete(&e);
            cache::key_of(&e)
        }
        watcher::Event::Init => return shared.endpoints.lock().unwrap().init(),
        watcher::Event::InitApply(e) => return shared.endpoints.lock().unwrap().init_apply(e),
        watcher::Event::InitDone => {
            shared.endpoints.lock().unwrap().init_done();
            return enqueue_everything(shared);
        }
    };
    if shared.services.lock().unwrap().get(&key).is_some() {
        shared.queue.add(key);
    }
}

fn on_slice(shared: &Shared, ev: watcher::Event<EndpointSlice>) {
    let key = match ev {
        watcher::Event::Apply(s) => {
            let key = slice_service(&s);
            if matches!(shared.slices.lock().unwrap().apply(s), Change::None) {
                return;
            }
            key
        }
        watcher::Event::Delete(s) => {
            shared.slices.lock().unwrap().delete(&s);
            slice_service(&s)
        }
        watcher::Event::Init => return shared.slices.lock().unwrap().init(),
        watcher::Event::InitApply(s) => return shared.slices.lock().unwrap().init_apply(s),
        watcher::Event::InitDone => {
            shared.slices.lock().unwrap().init_done();
            return enqueue_everything(shared);
        }
    };
    if let Some(k) = key {
        shared.queue.add(k);
    }
}

async fn worker(client: kube::Client, shared: Arc<Shared>, cfg: Config) {
    loop {
        let key = shared.queue.take().await;
        let result = sync(&client, &shared, &cfg, &key).await;
        shared.queue.done(&key);
        match result {
            Ok(()) => {
                shared.failures.lock().unwrap().remove(&key);
            }
            Err(e) if namespace_terminating(&e) => {
                // Creates in a namespace being deleted keep failing; the namespace's deletion
                // of the service queues the key again.
                tracing::debug!(namespace = %key.0, service = %key.1, "namespace terminating; endpoints not written");
                shared.failures.lock().unwrap().remove(&key);
            }
            Err(e) => {
                let n = {
                    let mut f = shared.failures.lock().unwrap();
                    let n = f.entry(key.clone()).or_insert(0);
                    *n = n.saturating_add(1);
                    *n
                };
                let conflict = matches!(&e, kube::Error::Api(s) if s.code == 409);
                if conflict {
                    tracing::debug!(namespace = %key.0, service = %key.1, error = %e, "endpoints write conflicted; retrying");
                } else {
                    tracing::warn!(namespace = %key.0, service = %key.1, error = %e, "endpoints sync failed; retrying");
                }
                requeue_later(Arc::downgrade(&shared), key, retry_delay(n));
            }
        }
    }
}

/// 5 ms doubled per consecutive failure, at most 10 s.
pub fn retry_delay(failures: u32) -> Duration {
    let ms = 5u64.saturating_mul(1u64 << failures.saturating_sub(1).min(20));
    Duration::from_millis(ms.min(10_000))
}

fn requeue_later(shared: Weak<Shared>, key: Key, delay: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        if let Some(s) = shared.upgrade() {
            s.queue.add(key);
        }
    });
}

/// The API refused a create because the namespace is being deleted.
fn namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403
        && s.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")))
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Brings one service's Endpoints and slices in line with its pods (or removes them when the
/// service is gone).
async fn sync(
    client: &kube::Client,
    shared: &Shared,
    cfg: &Config,
    key: &Key,
) -> Result<(), kube::Error> {
    let (ns, name) = (key.0.as_str(), key.1.as_str());
    let svc = shared.services.lock().unwrap().get(key);
    let Some(svc) = svc else {
        return remove(client, shared, key).await;
    };
    if managed_selector(&svc).is_none() {
        // No selector (the user keeps the Endpoints) or ExternalName: nothing to do.
        return Ok(());
    }
    let pods: Vec<Arc<Pod>> = shared
        .pods
        .lock()
        .unwrap()
        .in_namespace(ns)
        .cloned()
        .collect();
    let refs: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
    let want = desired::desired(&svc, &refs);

    let current = shared.endpoints.lock().unwrap().get(key);
    if let Some(obj) = plan::endpoints_write(&svc, &want.subsets, current.as_deref()) {
        let api: Api<Endpoints> = Api::namespaced(client.clone(), ns);
        let written = match &current {
            Some(_) => api.replace(name, &PostParams::default(), &obj).await,
            None => api.create(&PostParams::default(), &obj).await,
        };
        match written {
            Ok(w) => {
                shared.endpoints.lock().unwrap().apply(w);
            }
            Err(e) => {
                if not_found(&e)
                    && let Some(c) = &current
                {
                    shared.endpoints.lock().unwrap().forget(c);
                }
                return Err(e);
            }
        }
    }

    let existing: Vec<Arc<EndpointSlice>> = shared
        .slices
        .lock()
        .unwrap()
        .in_namespace(ns)
        .filter(|s| slice_service(s).is_some_and(|k| &k == key))
        .cloned()
        .collect();
    let plan = plan::slices_plan(&svc, &want.slices, &existing, cfg.max_endpoints_per_slice);
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    // New and updated slices first, then deletions, so no endpoint is missing in between.
    for s in &plan.create {
        let w = api.create(&PostParams::default(), s).await?;
        shared.slices.lock().unwrap().apply(w);
    }
    for s in &plan.update {
        let slice_name = s.metadata.name.clone().unwrap_or_default();
        match api.replace(&slice_name, &PostParams::default(), s).await {
            Ok(w) => {
                shared.slices.lock().unwrap().apply(w);
            }
            Err(e) => {
                if not_found(&e) {
                    shared.slices.lock().unwrap().forget(s);
                }
                return Err(e);
            }
        }
    }
    for s in &plan.delete {
        delete_slice(&api, shared, s).await?;
    }
    Ok(())
}

async fn delete_slice(
    api: &Api<EndpointSlice>,
    shared: &Shared,
    s: &EndpointSlice,
) -> Result<(), kube::Error> {
    let slice_name = s.metadata.name.clone().unwrap_or_default();
    match api.delete(&slice_name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(e) if not_found(&e) => {}
        Err(e) => return Err(e),
    }
    shared.slices.lock().unwrap().forget(s);
    Ok(())
}

/// The service is gone: its Endpoints go, and so do its slices. In Kubernetes the slices go
/// through their ownerReference and the garbage collector; skiff has no garbage collector yet,
/// so this controller deletes them itself.
async fn remove(client: &kube::Client, shared: &Shared, key: &Key) -> Result<(), kube::Error> {
    let (ns, name) = (key.0.as_str(), key.1.as_str());
    let current = shared.endpoints.lock().unwrap().get(key);
    if let Some(ep) = current {
        let leader = ep
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(LEADER_ANNOTATION));
        if !leader {
            let api: Api<Endpoints> = Api::namespaced(client.clone(), ns);
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(e),
            }
            shared.endpoints.lock().unwrap().forget(&ep);
        }
    }
    let slices: Vec<Arc<EndpointSlice>> = shared
        .slices
        .lock()
        .unwrap()
        .in_namespace(ns)
        .filter(|s| slice_service(s).is_some_and(|k| &k == key))
        .cloned()
        .collect();
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    for s in slices {
        delete_slice(&api, shared, &s).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
