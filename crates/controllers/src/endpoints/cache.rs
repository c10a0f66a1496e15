//! The controller's view of one resource: what the watch delivered plus what the controller
//! itself just wrote (a write is visible at once, before its watch event comes back, so a sync
//! right after a write neither repeats it with a stale resourceVersion nor creates a second
//! slice). resourceVersions are compared as numbers, as skiff's (store revisions) and etcd's are;
//! one that is not a number counts as newer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kube::Resource;

/// (namespace, name).
pub type Key = (String, String);

pub fn key_of<K: Resource>(obj: &K) -> Key {
    (
        obj.meta().namespace.clone().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default(),
    )
}

fn rv<K: Resource>(obj: &K) -> Option<u64> {
    obj.meta().resource_version.as_deref()?.parse().ok()
}

/// `a` is older than `b` (both numeric and smaller).
fn older(a: Option<u64>, b: Option<u64>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a < b)
}

pub struct Cache<K> {
    objects: BTreeMap<Key, Arc<K>>,
    /// Objects listed since the last `Init`, swapped in at `InitDone`.
    relist: Option<BTreeMap<Key, Arc<K>>>,
    /// Objects this controller deleted, with their last resourceVersion: an older version
    /// arriving late is not brought back.
    deleted: HashMap<Key, Option<u64>>,
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Cache {
            objects: BTreeMap::new(),
            relist: None,
            deleted: HashMap::new(),
        }
    }
}

/// What a watch event changed.
#[derive(Debug)]
pub enum Change<K> {
    /// Nothing new (the version is one already seen, e.g. the controller's own write).
    None,
    /// Added or modified: the previous version, if there was one.
    Applied(Option<Arc<K>>),
    /// Removed: the last version.
    Deleted(Arc<K>),
}

impl<K: Resource> Cache<K> {
    pub fn get(&self, key: &Key) -> Option<Arc<K>> {
        self.objects.get(key).cloned()
    }

    /// The objects of one namespace.
    pub fn in_namespace<'a>(&'a self, ns: &'a str) -> impl Iterator<Item = &'a Arc<K>> + 'a {
        self.objects
            .range((ns.to_string(), String::new())..)
            .take_while(move |((n, _), _)| n == ns)
            .map(|(_, v)| v)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<K>> {
        self.objects.values()
    }

    /// A watched object was added or modified (or this controller wrote it).
    pub fn apply(&mut self, obj: K) -> Change<K> {
        let key = key_of(&obj);
        let new_rv = rv(&obj);
        if let Some(gone) = self.deleted.get(&key) {
            if new_rv.is_some() && gone.is_some() && new_rv <= *gone {
                return Change::None;
            }
            self.deleted.remove(&key);
        }
        let obj = Arc::new(obj);
        if let Some(buf) = self.relist.as_mut() {
            buf.insert(key.clone(), obj.clone());
        }
        match self.objects.get(&key) {
            Some(old) if new_rv.is_some() && rv(old.as_ref()) == new_rv => Change::None,
            Some(old) if older(new_rv, rv(old.as_ref())) => Change::None,
            _ => Change::Applied(self.objects.insert(key, obj)),
        }
    }

    /// A watched object was deleted.
    pub fn delete(&mut self, obj: &K) -> Change<K> {
        let key = key_of(obj);
        self.deleted.remove(&key);
        if let Some(buf) = self.relist.as_mut() {
            buf.remove(&key);
        }
        match self.objects.remove(&key) {
            Some(old) => Change::Deleted(old),
            None => Change::None,
        }
    }

    /// This controller deleted the object: it is gone now, whatever the watch says later
    /// about versions up to this one.
    pub fn forget(&mut self, obj: &K) {
        let key = key_of(obj);
        self.objects.remove(&key);
        self.deleted.insert(key, rv(obj));
    }

    /// A (re-)list starts.
    pub fn init(&mut self) {
        self.relist = Some(BTreeMap::new());
    }

    /// A listed object.
    pub fn init_apply(&mut self, obj: K) {
        let key = key_of(&obj);
        if let Some(buf) = self.relist.as_mut() {
            buf.insert(key, Arc::new(obj));
        }
    }

    /// The list is complete: it replaces what was known (objects absent from it are gone).
    /// Returns the objects that were known before.
    pub fn init_done(&mut self) -> BTreeMap<Key, Arc<K>> {
        let fresh = self.relist.take().unwrap_or_default();
        self.deleted.clear();
        std::mem::replace(&mut self.objects, fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn cm(ns: &str, name: &str, rv: &str) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.namespace = Some(ns.into());
        c.metadata.name = Some(name.into());
        c.metadata.resource_version = Some(rv.into());
        c
    }

    #[test]
    fn own_writes_are_visible_and_their_echo_is_no_news() {
        let mut c = Cache::default();
        assert!(matches!(c.apply(cm("a", "x", "5")), Change::Applied(None)));
        // The controller wrote version 7; the watch still has to deliver 6 and 7.
        assert!(matches!(
            c.apply(cm("a", "x", "7")),
            Change::Applied(Some(_))
        ));
        assert!(matches!(c.apply(cm("a", "x", "6")), Change::None));
        assert!(matches!(c.apply(cm("a", "x", "7")), Change::None));
        assert_eq!(
            c.get(&("a".into(), "x".into()))
                .unwrap()
                .metadata
                .resource_version
                .as_deref(),
            Some("7")
        );
        assert!(matches!(
            c.apply(cm("a", "x", "8")),
            Change::Applied(Some(_))
        ));
    }

    #[test]
    fn forgotten_objects_stay_gone_until_a_newer_version() {
        let mut c = Cache::default();
        c.apply(cm("a", "x", "5"));
        c.forget(&cm("a", "x", "5"));
        assert!(c.get(&("a".into(), "x".into())).is_none());
        assert!(matches!(c.apply(cm("a", "x", "5")), Change::None));
        assert!(c.get(&("a".into(), "x".into())).is_none());
        assert!(matches!(c.delete(&cm("a", "x", "5")), Change::None));
        // Recreated under the same name.
        assert!(matches!(c.apply(cm("a", "x", "9")), Change::Applied(None)));
    }

    #[test]
    fn a_relist_replaces_everything_and_namespaces_are_ranges() {
        let mut c = Cache::default();
        c.apply(cm("a", "x", "1"));
        c.apply(cm("a", "y", "2"));
        c.apply(cm("b", "x", "3"));
        c.apply(cm("ab", "x", "3"));
        let names: Vec<_> = c
            .in_namespace("a")
            .map(|o| o.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["x", "y"]);
        c.init();
        c.init_apply(cm("a", "y", "4"));
        // Until the list is done, the old view holds.
        assert_eq!(c.all().count(), 4);
        let before = c.init_done();
        assert_eq!(before.len(), 4);
        assert_eq!(c.all().count(), 1);
        assert_eq!(c.in_namespace("b").count(), 0);
    }
}
