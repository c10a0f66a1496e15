//! Which pod to try next, and when to retry the ones that did not fit (§10.7).
//!
//! Upstream keeps three places: activeQ (ready to be tried, by priority then enqueue time),
//! backoffQ (failed recently; waits `1s × 2^(attempts−1)`, capped at 10 s) and unschedulablePods
//! (failed, and nothing has changed since). A cluster event (node added or updated, a bound pod
//! deleted, …) moves every unschedulable pod on: to backoffQ if its back-off has not expired yet,
//! else straight to activeQ. A pod that waits more than 5 minutes in unschedulablePods is moved
//! on even without an event. A pod whose attempt failed while an event arrived goes straight to
//! the back-off path instead of waiting for another event.
//!
//! This module is that bookkeeping and nothing else: keys are pod key strings, time is a
//! [`Duration`] since an arbitrary epoch supplied by the caller (a monotonic clock in production,
//! a counter in tests), and the caller decides when to call [`SchedulingQueue::flush`] (upstream
//! flushes backoffQ every second; [`SchedulingQueue::next_wakeup`] says when it matters). The
//! leftover check runs on every flush rather than every 30 s, so a pod moves on within one flush
//! period after its 5 minutes.
//!
//! Heaps hold stale entries after a pod moves; each entry carries the sequence number of the
//! enqueue that created it and is ignored unless it is still the pod's current one.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::Duration;

pub const DEFAULT_POD_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const DEFAULT_POD_MAX_BACKOFF: Duration = Duration::from_secs(10);
pub const DEFAULT_POD_MAX_IN_UNSCHEDULABLE_PODS_DURATION: Duration = Duration::from_secs(5 * 60);

/// Where a pod is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Active,
    Backoff,
    Unschedulable,
    /// Popped and being scheduled; it returns through `mark_*` or leaves through `remove`.
    InFlight,
}

#[derive(Debug, Clone)]
struct PodEntry {
    location: Location,
    /// Scheduling attempts so far (incremented on pop).
    attempts: u32,
    /// When the pod was added, or last failed: orders activeQ and starts the back-off.
    timestamp: Duration,
    priority: i32,
    /// Sequence number of the current heap / map entry.
    seq: u64,
    /// The cluster-event counter when the pod was popped.
    popped_at_event: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ActiveItem {
    priority: i32,
    timestamp: Duration,
    seq: u64,
    key: String,
}

impl Ord for ActiveItem {
    /// Max-heap order: higher priority first, then earlier timestamp, then earlier enqueue.
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.timestamp.cmp(&self.timestamp))
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ActiveItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Pure queueing state for the pods this scheduler is responsible for.
#[derive(Debug, Clone)]
pub struct SchedulingQueue {
    initial_backoff: Duration,
    max_backoff: Duration,
    max_in_unschedulable: Duration,
    pods: HashMap<String, PodEntry>,
    active: BinaryHeap<ActiveItem>,
    /// Min-heap on (expiry, seq).
    backoff: BinaryHeap<Reverse<(Duration, u64, String)>>,
    /// Ordered by (timestamp, seq) for the leftover flush.
    unschedulable: BTreeMap<(Duration, u64), String>,
    next_seq: u64,
    events: u64,
    active_len: usize,
    backoff_len: usize,
}

impl Default for SchedulingQueue {
    fn default() -> Self {
        SchedulingQueue::new(
            DEFAULT_POD_INITIAL_BACKOFF,
            DEFAULT_POD_MAX_BACKOFF,
            DEFAULT_POD_MAX_IN_UNSCHEDULABLE_PODS_DURATION,
        )
    }
}

impl SchedulingQueue {
    pub fn new(
        initial_backoff: Duration,
        max_backoff: Duration,
        max_in_unschedulable: Duration,
    ) -> Self {
        SchedulingQueue {
            initial_backoff,
            max_backoff,
            max_in_unschedulable,
            pods: HashMap::new(),
            active: BinaryHeap::new(),
            backoff: BinaryHeap::new(),
            unschedulable: BTreeMap::new(),
            next_seq: 0,
            events: 0,
            active_len: 0,
            backoff_len: 0,
        }
    }

    /// Back-off after `attempts` attempts: 0 for none, else `initial × 2^(attempts−1)` capped.
    pub fn backoff_duration(&self, attempts: u32) -> Duration {
        if attempts == 0 {
            return Duration::ZERO;
        }
        let mut d = self.initial_backoff;
        for _ in 1..attempts {
            if d > self.max_backoff.saturating_sub(d) {
                return self.max_backoff;
            }
            d += d;
        }
        d.min(self.max_backoff)
    }

    /// Adds a new pod to activeQ (priority 0). A pod already known is left where it is, except an
    /// unschedulable one, which is treated as updated (see [`SchedulingQueue::on_pod_updated`]).
    pub fn push_active(&mut self, key: &str, now: Duration) {
        self.push_active_with_priority(key, 0, now);
    }

    /// [`SchedulingQueue::push_active`] with a pod priority (higher is popped first).
    pub fn push_active_with_priority(&mut self, key: &str, priority: i32, now: Duration) {
        if self.pods.contains_key(key) {
            self.on_pod_updated(key, now);
            return;
        }
        self.pods.insert(
            key.to_string(),
            PodEntry {
                location: Location::InFlight,
                attempts: 0,
                timestamp: now,
                priority,
                seq: 0,
                popped_at_event: 0,
            },
        );
        self.enqueue_active(key);
    }

    /// Takes the next pod to schedule (highest priority, oldest timestamp), marking it in flight
    /// and counting the attempt.
    pub fn pop_active(&mut self) -> Option<String> {
        while let Some(item) = self.active.pop() {
            let Some(e) = self.pods.get_mut(&item.key) else {
                continue;
            };
            if e.location != Location::Active || e.seq != item.seq {
                continue;
            }
            e.location = Location::InFlight;
            e.attempts += 1;
            e.popped_at_event = self.events;
            self.active_len -= 1;
            return Some(item.key);
        }
        None
    }

    /// The in-flight pod fit nowhere. It waits for a cluster event in unschedulablePods, unless
    /// an event arrived during the attempt, in which case it takes the back-off path at once.
    pub fn mark_unschedulable(&mut self, key: &str, now: Duration) {
        let events = self.events;
        let Some(e) = self.pods.get_mut(key) else {
            return;
        };
        if e.location != Location::InFlight {
            return;
        }
        e.timestamp = now;
        if e.popped_at_event != events {
            self.move_on(key, now);
        } else {
            self.enqueue_unschedulable(key);
        }
    }

    /// The in-flight pod failed for another reason (an error, a failed binding): retry after its
    /// back-off.
    pub fn mark_backoff(&mut self, key: &str, now: Duration) {
        let Some(e) = self.pods.get_mut(key) else {
            return;
        };
        if e.location != Location::InFlight {
            return;
        }
        e.timestamp = now;
        self.move_on(key, now);
    }

    /// A cluster event that may make unschedulable pods schedulable: every unschedulable pod moves
    /// to backoffQ (back-off not expired) or activeQ. In-flight pods remember that it happened.
    pub fn on_cluster_event(&mut self, now: Duration) {
        self.events += 1;
        let keys: Vec<String> = std::mem::take(&mut self.unschedulable)
            .into_values()
            .collect();
        for key in keys {
            self.move_on(&key, now);
        }
    }

    /// The pod object changed (e.g. its tolerations were edited): an unschedulable pod is moved on
    /// as for a cluster event; elsewhere nothing changes.
    pub fn on_pod_updated(&mut self, key: &str, now: Duration) {
        if let Some(e) = self.pods.get(key)
            && e.location == Location::Unschedulable
        {
            self.unschedulable.remove(&(e.timestamp, e.seq));
            self.move_on(key, now);
        }
    }

    /// Moves expired back-offs to activeQ and pods unschedulable for longer than 5 minutes on.
    pub fn flush(&mut self, now: Duration) {
        while let Some(Reverse((expiry, seq, key))) = self.backoff.peek().cloned() {
            let current = self
                .pods
                .get(&key)
                .is_some_and(|e| e.location == Location::Backoff && e.seq == seq);
            if !current {
                self.backoff.pop();
                continue;
            }
            if expiry > now {
                break;
            }
            self.backoff.pop();
            self.backoff_len -= 1;
            self.enqueue_active(&key);
        }
        while let Some((&(ts, seq), _)) = self.unschedulable.iter().next() {
            if now.saturating_sub(ts) <= self.max_in_unschedulable {
                break;
            }
            let key = self.unschedulable.remove(&(ts, seq)).unwrap_or_default();
            self.move_on(&key, now);
        }
    }

    /// How long until the next flush can move something; `Some(ZERO)` when a pod is ready now,
    /// `None` when nothing is waiting on time.
    pub fn next_wakeup(&mut self, now: Duration) -> Option<Duration> {
        if self.active_len > 0 {
            return Some(Duration::ZERO);
        }
        // Drop stale heads so the answer is exact.
        while let Some(Reverse((_, seq, key))) = self.backoff.peek() {
            let current = self
                .pods
                .get(key)
                .is_some_and(|e| e.location == Location::Backoff && e.seq == *seq);
            if current {
                break;
            }
            self.backoff.pop();
        }
        let backoff = self.backoff.peek().map(|Reverse((t, _, _))| *t);
        // The leftover flush moves a pod once strictly more than the limit has passed.
        let leftover = self
            .unschedulable
            .keys()
            .next()
            .map(|(ts, _)| *ts + self.max_in_unschedulable + Duration::from_nanos(1));
        let at = match (backoff, leftover) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(at.saturating_sub(now))
    }

    /// Forgets a pod (scheduled, deleted, or no longer ours). Returns whether it was known.
    pub fn remove(&mut self, key: &str) -> bool {
        let Some(e) = self.pods.remove(key) else {
            return false;
        };
        match e.location {
            Location::Active => self.active_len -= 1,
            Location::Backoff => self.backoff_len -= 1,
            Location::Unschedulable => {
                self.unschedulable.remove(&(e.timestamp, e.seq));
            }
            Location::InFlight => {}
        }
        true
    }

    pub fn location(&self, key: &str) -> Option<Location> {
        self.pods.get(key).map(|e| e.location)
    }

    pub fn attempts(&self, key: &str) -> Option<u32> {
        self.pods.get(key).map(|e| e.attempts)
    }

    /// When the pod's back-off ends (its last failure plus its back-off).
    pub fn backoff_expiry(&self, key: &str) -> Option<Duration> {
        self.pods
            .get(key)
            .map(|e| e.timestamp + self.backoff_duration(e.attempts))
    }

    /// All pods known to the queue (every location, in flight included).
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn len_active(&self) -> usize {
        self.active_len
    }

    pub fn len_backoff(&self) -> usize {
        self.backoff_len
    }

    pub fn len_unschedulable(&self) -> usize {
        self.unschedulable.len()
    }

    fn bump(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// To backoffQ if still backing off, else activeQ. The pod must not be in any queue.
    fn move_on(&mut self, key: &str, now: Duration) {
        let Some(expiry) = self.backoff_expiry(key) else {
            return;
        };
        if expiry > now {
            self.enqueue_backoff(key, expiry);
        } else {
            self.enqueue_active(key);
        }
    }

    fn enqueue_active(&mut self, key: &str) {
        let seq = self.bump();
        let Some(e) = self.pods.get_mut(key) else {
            return;
        };
        e.location = Location::Active;
        e.seq = seq;
        self.active.push(ActiveItem {
            priority: e.priority,
            timestamp: e.timestamp,
            seq,
            key: key.to_string(),
        });
        self.active_len += 1;
    }

    fn enqueue_backoff(&mut self, key: &str, expiry: Duration) {
        let seq = self.bump();
        let Some(e) = self.pods.get_mut(key) else {
            return;
        };
        e.location = Location::Backoff;
        e.seq = seq;
        self.backoff.push(Reverse((expiry, seq, key.to_string())));
        self.backoff_len += 1;
    }

    fn enqueue_unschedulable(&mut self, key: &str) {
        let seq = self.bump();
        let Some(e) = self.pods.get_mut(key) else {
            return;
        };
        e.location = Location::Unschedulable;
        e.seq = seq;
        self.unschedulable
            .insert((e.timestamp, seq), key.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn backoff_sequence() {
        let q = SchedulingQueue::default();
        let seq: Vec<u64> = (1..=7).map(|a| q.backoff_duration(a).as_secs()).collect();
        assert_eq!(seq, vec![1, 2, 4, 8, 10, 10, 10]);
        assert_eq!(q.backoff_duration(0), Duration::ZERO);
        assert_eq!(q.backoff_duration(1000), Duration::from_secs(10));
    }

    #[test]
    fn active_is_fifo_within_a_priority_and_priority_first() {
        let mut q = SchedulingQueue::default();
        q.push_active("a", s(1.0));
        q.push_active("b", s(2.0));
        q.push_active_with_priority("vip", 10, s(3.0));
        q.push_active("c", s(0.5));
        assert_eq!(q.len_active(), 4);
        let order: Vec<String> = std::iter::from_fn(|| q.pop_active()).collect();
        assert_eq!(order, vec!["vip", "c", "a", "b"]);
        assert_eq!(q.len_active(), 0);
        assert_eq!(q.location("a"), Some(Location::InFlight));
        assert_eq!(q.attempts("a"), Some(1));
    }

    #[test]
    fn unschedulable_waits_for_an_event_then_backs_off() {
        let mut q = SchedulingQueue::default();
        q.push_active("p", s(0.0));
        assert_eq!(q.pop_active().as_deref(), Some("p"));
        q.mark_unschedulable("p", s(10.0));
        assert_eq!(q.location("p"), Some(Location::Unschedulable));
        assert_eq!(q.len_unschedulable(), 1);
        q.flush(s(100.0));
        assert_eq!(q.location("p"), Some(Location::Unschedulable));
        // Event within the 1 s back-off: to backoffQ, then active after it expires.
        q.on_cluster_event(s(10.5));
        assert_eq!(q.location("p"), Some(Location::Backoff));
        assert_eq!(q.len_backoff(), 1);
        assert_eq!(q.next_wakeup(s(10.5)), Some(s(0.5)));
        q.flush(s(10.9));
        assert_eq!(q.location("p"), Some(Location::Backoff));
        q.flush(s(11.0));
        assert_eq!(q.location("p"), Some(Location::Active));
        assert_eq!(q.next_wakeup(s(11.0)), Some(Duration::ZERO));
    }

    #[test]
    fn event_after_backoff_expired_goes_straight_to_active() {
        let mut q = SchedulingQueue::default();
        q.push_active("p", s(0.0));
        q.pop_active();
        q.mark_unschedulable("p", s(0.0));
        q.on_cluster_event(s(5.0));
        assert_eq!(q.location("p"), Some(Location::Active));
    }

    #[test]
    fn backoff_grows_with_attempts() {
        let mut q = SchedulingQueue::default();
        q.push_active("p", s(0.0));
        let mut now = 0.0;
        let mut waits = Vec::new();
        for _ in 0..6 {
            assert_eq!(q.pop_active().as_deref(), Some("p"));
            q.mark_backoff("p", s(now));
            let w = q.next_wakeup(s(now)).unwrap();
            waits.push(w.as_secs());
            now += w.as_secs_f64();
            q.flush(s(now));
        }
        assert_eq!(waits, vec![1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn event_during_attempt_skips_the_unschedulable_pool() {
        let mut q = SchedulingQueue::default();
        q.push_active("p", s(0.0));
        q.pop_active();
        q.on_cluster_event(s(0.2));
        q.mark_unschedulable("p", s(0.3));
        assert_eq!(q.location("p"), Some(Location::Backoff));
        assert_eq!(q.backoff_expiry("p"), Some(s(1.3)));
    }

    #[test]
    fn leftover_flush_after_five_minutes() {
        let mut q = SchedulingQueue::default();
        q.push_active("p", s(0.0));
        q.pop_active();
        q.mark_unschedulable("p", s(0.0));
        assert_eq!(
            q.next_wakeup(s(0.0)),
            Some(s(300.0) + Duration::from_nanos(1))
        );
        q.flush(s(300.0));
        assert_eq!(q.location("p"), Some(Location::Unschedulable));
        q.flush(s(300.5));
        assert_eq!(q.location("p"), Some(Location::Active));
        assert_eq!(q.len_unschedulable(), 0);
    }

    #[test]
    fn remove_and_update() {
        let mut q = SchedulingQueue::default();
        q.push_active("a", s(0.0));
        q.push_active("b", s(0.0));
        q.pop_active();
        q.mark_unschedulable("a", s(0.0));
        assert!(q.remove("b"));
        assert_eq!(q.len_active(), 0);
        assert_eq!(q.pop_active(), None);
        assert!(!q.remove("zzz"));
        // Updating an unschedulable pod moves it on (back-off expired after 2 s).
        q.on_pod_updated("a", s(2.0));
        assert_eq!(q.location("a"), Some(Location::Active));
        // push_active of a known pod does not duplicate it.
        q.push_active("a", s(3.0));
        assert_eq!(q.len_active(), 1);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_active().as_deref(), Some("a"));
        assert!(q.remove("a"));
        assert!(q.is_empty());
        assert_eq!(q.next_wakeup(s(5.0)), None);
    }

    #[test]
    fn stale_heap_entries_are_skipped() {
        let mut q = SchedulingQueue::default();
        q.push_active("p", s(0.0));
        q.pop_active();
        q.mark_backoff("p", s(0.0));
        q.remove("p");
        q.push_active("p", s(0.5));
        // The old backoff entry for "p" must not move the new active one.
        q.flush(s(5.0));
        assert_eq!(q.len_active(), 1);
        assert_eq!(q.len_backoff(), 0);
        assert_eq!(q.pop_active().as_deref(), Some("p"));
        assert_eq!(q.pop_active(), None);
    }
}
