//! The per-key exponential back-off the kubelet uses for container restarts (CrashLoopBackOff)
//! and for image pulls (ImagePullBackOff), spec pod-lifecycle.md §4.2.
//!
//! It exists as its own type because both back-offs share one subtle rule set: an entry doubles
//! on every `next` up to a cap, resets once the event being judged happened more than twice the
//! cap after the last update, and the two "am I in back-off" questions compare different times
//! (`since`: now against an event time; `since_update`: an event time against the last update).
//! Time is always an argument; there is no jitter (the kubelet's instances use none).
//!
//! Entries live in a small vector: a pod has a handful of keys, so a linear scan beats hashing
//! and costs no allocation once the key exists.

use std::borrow::Borrow;

use jiff::{SignedDuration, Timestamp};

/// Initial container restart back-off (`backOffPeriod`).
pub const CONTAINER_BACKOFF_INITIAL: SignedDuration = SignedDuration::from_secs(10);
/// Maximum container restart back-off (`MaxContainerBackOff`).
pub const CONTAINER_BACKOFF_MAX: SignedDuration = SignedDuration::from_secs(300);
/// Initial image pull back-off.
pub const IMAGE_BACKOFF_INITIAL: SignedDuration = SignedDuration::from_secs(10);
/// Maximum image pull back-off (`MaxImageBackOff`).
pub const IMAGE_BACKOFF_MAX: SignedDuration = SignedDuration::from_secs(300);

/// One key's state: the current back-off and when it was last updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackOffEntry {
    pub backoff: SignedDuration,
    pub last_update: Timestamp,
}

/// Exponential back-off per key (client-go `flowcontrol.Backoff` semantics, without jitter).
#[derive(Debug, Clone)]
pub struct BackOff<K> {
    initial: SignedDuration,
    max: SignedDuration,
    entries: Vec<(K, BackOffEntry)>,
}

impl<K> BackOff<K> {
    /// A back-off starting at `initial` and doubling up to `max`.
    pub fn new(initial: SignedDuration, max: SignedDuration) -> Self {
        BackOff {
            initial,
            max,
            entries: Vec::new(),
        }
    }

    /// The kubelet's container restart back-off: 10 s doubling to 5 min.
    pub fn container() -> Self {
        Self::new(CONTAINER_BACKOFF_INITIAL, CONTAINER_BACKOFF_MAX)
    }

    /// The kubelet's image pull back-off: 10 s doubling to 5 min.
    pub fn image() -> Self {
        Self::new(IMAGE_BACKOFF_INITIAL, IMAGE_BACKOFF_MAX)
    }

    /// The cap.
    pub fn max(&self) -> SignedDuration {
        self.max
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no key has an entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// An entry is stale when the event being judged is more than 2×max after its last update.
    fn expired(&self, event_time: Timestamp, last_update: Timestamp) -> bool {
        event_time.duration_since(last_update) > self.max * 2
    }

    fn find<Q>(&self, key: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.entries.iter().position(|(k, _)| k.borrow() == key)
    }

    /// The entry for `key`, if any (expired or not).
    pub fn entry<Q>(&self, key: &Q) -> Option<BackOffEntry>
    where
        K: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.find(key).map(|i| self.entries[i].1)
    }

    /// `Next(key, eventTime)`: start at `initial` (no entry, or the entry is stale relative to
    /// `event_time`), otherwise double up to `max`. The update time is always `now`.
    pub fn next<Q>(&mut self, key: &Q, event_time: Timestamp, now: Timestamp)
    where
        K: Borrow<Q>,
        Q: PartialEq + ToOwned<Owned = K> + ?Sized,
    {
        match self.find(key) {
            Some(i) => {
                let e = self.entries[i].1;
                let backoff = if self.expired(event_time, e.last_update) {
                    self.initial
                } else {
                    (e.backoff * 2).min(self.max)
                };
                self.entries[i].1 = BackOffEntry {
                    backoff,
                    last_update: now,
                };
            }
            None => self.entries.push((
                key.to_owned(),
                BackOffEntry {
                    backoff: self.initial,
                    last_update: now,
                },
            )),
        }
    }

    /// `IsInBackOffSince(key, eventTime)`: true while `now - event_time` is shorter than the
    /// current back-off (container restarts, `event_time` = the last exit).
    pub fn is_in_backoff_since<Q>(&self, key: &Q, event_time: Timestamp, now: Timestamp) -> bool
    where
        K: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        match self.entry(key) {
            Some(e) if !self.expired(event_time, e.last_update) => {
                now.duration_since(event_time) < e.backoff
            }
            _ => false,
        }
    }

    /// `IsInBackOffSinceUpdate(key, eventTime)`: true while `event_time - last_update` is shorter
    /// than the current back-off (image pulls, `event_time` = now).
    pub fn is_in_backoff_since_update<Q>(&self, key: &Q, event_time: Timestamp) -> bool
    where
        K: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        match self.entry(key) {
            Some(e) if !self.expired(event_time, e.last_update) => {
                event_time.duration_since(e.last_update) < e.backoff
            }
            _ => false,
        }
    }

    /// `Get(key)`: the current back-off (zero without an entry), as printed in messages.
    pub fn get<Q>(&self, key: &Q) -> SignedDuration
    where
        K: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.entry(key).map_or(SignedDuration::ZERO, |e| e.backoff)
    }

    /// Drops entries not updated for more than 2×max.
    pub fn gc(&mut self, now: Timestamp) {
        let limit = self.max * 2;
        self.entries
            .retain(|(_, e)| now.duration_since(e.last_update) <= limit);
    }

    /// Forgets `key`.
    pub fn reset<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        if let Some(i) = self.find(key) {
            self.entries.swap_remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn s(secs: i64) -> SignedDuration {
        SignedDuration::from_secs(secs)
    }

    #[test]
    fn doubles_to_the_cap() {
        let mut b: BackOff<String> = BackOff::container();
        let mut seen = Vec::new();
        for i in 0..8 {
            b.next("k", t(i), t(i));
            seen.push(b.get("k").as_secs());
        }
        assert_eq!(seen, [10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn crash_loop_schedule_with_fake_clock() {
        // A container that crashes the moment it starts: each restart is allowed exactly when
        // the back-off since the last exit has elapsed.
        let mut b: BackOff<String> = BackOff::container();
        let key = "pod_ns_uid_app";
        let mut now = t(0);
        // First exit: no entry, restart at once.
        assert!(!b.is_in_backoff_since(key, now, now));
        b.next(key, now, now);
        let mut gaps = Vec::new();
        for _ in 0..7 {
            let exit = now; // crashes immediately
            let mut waited = 0;
            while b.is_in_backoff_since(key, exit, now) {
                now += s(1);
                waited += 1;
            }
            gaps.push(waited);
            b.next(key, exit, now);
        }
        assert_eq!(gaps, [10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn resets_after_ten_minutes_of_running() {
        let mut b: BackOff<String> = BackOff::container();
        for i in 0..5 {
            b.next("k", t(i), t(i));
        }
        assert_eq!(b.get("k"), s(160));
        let last = t(4);
        // Ran for exactly 600 s after the last update: not yet stale.
        assert!(b.is_in_backoff_since("k", last + s(600), last + s(600)));
        // Exit 601 s after the last update: stale, so not in back-off and the next is 10 s.
        let exit = last + s(601);
        assert!(!b.is_in_backoff_since("k", exit, exit));
        b.next("k", exit, exit);
        assert_eq!(b.get("k"), s(10));
    }

    #[test]
    fn since_update_compares_event_with_last_update() {
        let mut b: BackOff<String> = BackOff::image();
        b.next("img", t(0), t(0));
        assert!(b.is_in_backoff_since_update("img", t(9)));
        assert!(!b.is_in_backoff_since_update("img", t(10)));
        b.next("img", t(10), t(10));
        assert!(b.is_in_backoff_since_update("img", t(29)));
        assert!(!b.is_in_backoff_since_update("img", t(30)));
        assert_eq!(b.get("img"), s(20));
        assert_eq!(b.get("other"), SignedDuration::ZERO);
    }

    #[test]
    fn gc_drops_idle_entries() {
        let mut b: BackOff<String> = BackOff::container();
        b.next("a", t(0), t(0));
        b.next("b", t(500), t(500));
        b.gc(t(600));
        assert_eq!(b.len(), 2);
        b.gc(t(601));
        assert_eq!(b.len(), 1);
        assert!(b.entry("a").is_none());
        b.reset("b");
        assert!(b.is_empty());
    }
}
