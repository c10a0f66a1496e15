//! The proxy's API half: watches Services and EndpointSlices in all namespaces and publishes
//! the routing table built from them, once both have listed, and again on every change that
//! alters it. A re-list after a lost watch replaces what was known (what it no longer lists is
//! gone).

use std::collections::HashMap;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use tokio::sync::watch;

use super::routing::RoutingTable;

/// Objects of one kind by namespace and name, following a watcher's events.
struct Objects<K> {
    items: HashMap<(String, String), K>,
    listing: Option<HashMap<(String, String), K>>,
    synced: bool,
}

impl<K: Resource> Objects<K> {
    fn new() -> Self {
        Objects {
            items: HashMap::new(),
            listing: None,
            synced: false,
        }
    }

    fn id(obj: &K) -> (String, String) {
        let m = obj.meta();
        (
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    }

    /// Applies an event; true when what is known changed.
    fn apply(&mut self, ev: watcher::Event<K>) -> bool {
        match ev {
            watcher::Event::Init => {
                self.listing = Some(HashMap::new());
                false
            }
            watcher::Event::InitApply(mut obj) => {
                obj.meta_mut().managed_fields = None;
                let id = Self::id(&obj);
                self.listing
                    .get_or_insert_with(HashMap::new)
                    .insert(id, obj);
                false
            }
            watcher::Event::InitDone => {
                self.items = self.listing.take().unwrap_or_default();
                self.synced = true;
                true
            }
            watcher::Event::Apply(mut obj) => {
                obj.meta_mut().managed_fields = None;
                self.items.insert(Self::id(&obj), obj);
                true
            }
            watcher::Event::Delete(obj) => self.items.remove(&Self::id(&obj)).is_some(),
        }
    }
}

enum Ev {
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
}

/// Feeds `tx` until the watches end (they retry with back-off, so: until aborted).
pub(crate) async fn run(client: kube::Client, tx: watch::Sender<Arc<RoutingTable>>) {
    let services = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|r| r.map(|e| Ev::Service(Box::new(e))));
    let slices = watcher(
        Api::<EndpointSlice>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|r| r.map(|e| Ev::Slice(Box::new(e))));
    let mut stream = futures::stream::select(services, slices).boxed();
    let mut svcs = Objects::<Service>::new();
    let mut eps = Objects::<EndpointSlice>::new();
    let mut failing = false;
    let mut published = false;
    while let Some(first) = stream.next().await {
        // Apply everything already waiting, then build once.
        let mut changed = false;
        let mut next = Some(first);
        while let Some(item) = next {
            match item {
                Ok(Ev::Service(ev)) => changed |= svcs.apply(*ev),
                Ok(Ev::Slice(ev)) => changed |= eps.apply(*ev),
                Err(e) => {
                    if failing {
                        tracing::debug!(error = %e, "service proxy watch failed; retrying");
                    } else {
                        tracing::warn!(error = %e, "service proxy watch failed; retrying");
                        failing = true;
                    }
                }
            }
            next = stream.next().now_or_never().flatten();
        }
        if changed {
            failing = false;
        }
        if !(changed && svcs.synced && eps.synced) {
            continue;
        }
        let table = RoutingTable::build(svcs.items.values(), eps.items.values());
        if !published {
            // The first table is always announced: it is the sign the watches have listed.
            tracing::info!(
                ports = table.len(),
                "service proxy has listed services and endpoint slices"
            );
            tx.send_replace(Arc::new(table));
            published = true;
            continue;
        }
        tx.send_if_modified(|cur| {
            if **cur == table {
                false
            } else {
                tracing::debug!(ports = table.len(), "service proxy routing table updated");
                *cur = Arc::new(table);
                true
            }
        });
    }
}
