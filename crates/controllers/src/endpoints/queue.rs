//! A work queue of keys: a key added many times before a worker takes it is handled once, and a
//! key is never handled by two workers at once (one added while it is being handled is handed
//! out again when that handling is done). No delay on the way: `add` wakes a worker at once.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;

use tokio::sync::Notify;

pub struct WorkQueue<K> {
    inner: Mutex<Inner<K>>,
    ready: Notify,
}

struct Inner<K> {
    order: VecDeque<K>,
    /// Keys waiting to be handled (each is in `order`, or in `active` and re-queued on `done`).
    waiting: HashSet<K>,
    /// Keys a worker is handling.
    active: HashSet<K>,
}

impl<K: Clone + Eq + Hash> Default for WorkQueue<K> {
    fn default() -> Self {
        WorkQueue {
            inner: Mutex::new(Inner {
                order: VecDeque::new(),
                waiting: HashSet::new(),
                active: HashSet::new(),
            }),
            ready: Notify::new(),
        }
    }
}

impl<K: Clone + Eq + Hash> WorkQueue<K> {
    pub fn add(&self, key: K) {
        let mut q = self.inner.lock().unwrap();
        if !q.waiting.insert(key.clone()) {
            return;
        }
        if !q.active.contains(&key) {
            q.order.push_back(key);
            drop(q);
            self.ready.notify_one();
        }
    }

    /// The next key, without waiting.
    pub fn try_take(&self) -> Option<K> {
        let mut q = self.inner.lock().unwrap();
        let key = q.order.pop_front()?;
        q.waiting.remove(&key);
        q.active.insert(key.clone());
        Some(key)
    }

    /// The next key; the caller must call `done` with it when finished.
    pub async fn take(&self) -> K {
        loop {
            if let Some(k) = self.try_take() {
                return k;
            }
            self.ready.notified().await;
        }
    }

    pub fn done(&self, key: &K) {
        let mut q = self.inner.lock().unwrap();
        q.active.remove(key);
        if q.waiting.contains(key) {
            q.order.push_back(key.clone());
            drop(q);
            self.ready.notify_one();
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_deduplicated_and_never_handled_twice_at_once() {
        let q: WorkQueue<&str> = WorkQueue::default();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        assert_eq!(q.try_take(), Some("a"));
        // Added again while being handled: held back until done.
        q.add("a");
        assert_eq!(q.try_take(), Some("b"));
        assert_eq!(q.try_take(), None);
        q.done(&"b");
        assert_eq!(q.try_take(), None);
        q.done(&"a");
        assert_eq!(q.try_take(), Some("a"));
        q.done(&"a");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn take_wakes_up_on_add() {
        let q = std::sync::Arc::new(WorkQueue::<u32>::default());
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.take().await });
        tokio::task::yield_now().await;
        q.add(7);
        assert_eq!(waiter.await.unwrap(), 7);
    }
}
