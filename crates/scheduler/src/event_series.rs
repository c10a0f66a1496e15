//! Which event writes the scheduler makes: a new Event, or an update of a repeating one's
//! `series` (the events.k8s.io recorder's aggregation, seen through core/v1, §9.1).
//!
//! Upstream's recorder treats two events as the same ("isomorphic") when they have the same
//! type, action, reason, reporting controller and instance and the same `regarding` object
//! reference, resourceVersion included; the note (message) is not part of the key, so a series
//! keeps the note of its first event. The first occurrence is created; the second turns it into
//! a series `{count: 2, lastObservedTime}` written at once; later repeats only count up in memory
//! and reach the server when the series is flushed. A series ends 6 minutes after its last
//! repeat (its final count is written then) and the next occurrence starts a new Event.
//!
//! Upstream flushes running series every 30 minutes; here the caller flushes more often (every
//! few seconds), so `kubectl describe` shows a current `(xN over …)`. Everything else follows
//! the upstream shape. The event name is `<regarding name>.<hex unix nanoseconds>`, kept unique
//! even when the clock does not move between two events.
//!
//! Pure bookkeeping: time is an argument and writes are returned, not performed.

use jiff::Timestamp;
use std::collections::HashMap;
use std::time::Duration;

/// After this long without a repeat a series is finished.
pub const SERIES_FINISH_TIME: Duration = Duration::from_secs(6 * 60);

/// The object an event is about (`involvedObject` / `regarding`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Regarding {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
}

/// One occurrence, as the scheduler reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    pub regarding: Regarding,
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

/// The isomorphism key (the reporting controller and instance are fixed per book).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventKey {
    pub type_: &'static str,
    pub action: &'static str,
    pub reason: &'static str,
    pub regarding: Regarding,
}

impl Occurrence {
    pub fn key(&self) -> EventKey {
        EventKey {
            type_: self.type_,
            action: self.action,
            reason: self.reason,
            regarding: self.regarding.clone(),
        }
    }
}

/// A write to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// POST a new Event.
    Create {
        key: EventKey,
        name: String,
        occurrence: Occurrence,
        event_time: Timestamp,
    },
    /// PATCH the Event's `series`.
    Series {
        key: EventKey,
        namespace: String,
        name: String,
        count: i32,
        last_observed: Timestamp,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    namespace: String,
    count: i32,
    last_observed: Timestamp,
    /// The create was acknowledged, so the Event can be patched.
    created: bool,
    /// The count moved since the server last saw it.
    dirty: bool,
}

/// Running events and series.
#[derive(Debug, Default)]
pub struct SeriesBook {
    entries: HashMap<EventKey, Entry>,
    last_name_nanos: i128,
}

impl SeriesBook {
    pub fn new() -> SeriesBook {
        SeriesBook::default()
    }

    /// Records an occurrence; returns the write to make now, if any.
    pub fn observe(&mut self, occ: Occurrence, now: Timestamp) -> Option<Write> {
        let key = occ.key();
        if let Some(e) = self.entries.get_mut(&key) {
            e.count = e.count.saturating_add(1);
            e.last_observed = now;
            if e.count == 2 && e.created {
                e.dirty = false;
                return Some(series_write(&key, e));
            }
            e.dirty = true;
            return None;
        }
        let mut nanos = now.as_nanosecond();
        if nanos <= self.last_name_nanos {
            nanos = self.last_name_nanos + 1;
        }
        self.last_name_nanos = nanos;
        let name = format!("{}.{:x}", occ.regarding.name, nanos);
        self.entries.insert(
            key.clone(),
            Entry {
                name: name.clone(),
                namespace: occ.regarding.namespace.clone(),
                count: 1,
                last_observed: now,
                created: false,
                dirty: false,
            },
        );
        Some(Write::Create {
            key,
            name,
            occurrence: occ,
            event_time: now,
        })
    }

    /// The create of `key` was acknowledged; returns the series write that waited for it.
    pub fn created(&mut self, key: &EventKey) -> Option<Write> {
        let e = self.entries.get_mut(key)?;
        e.created = true;
        if e.dirty && e.count > 1 {
            e.dirty = false;
            return Some(series_write(key, e));
        }
        None
    }

    /// A write failed for good (or the Event is gone): forget the entry, so the next occurrence
    /// starts a new Event.
    pub fn forget(&mut self, key: &EventKey) {
        self.entries.remove(key);
    }

    /// Series writes due now (counts that moved since the last write), and the end of series
    /// (and single events) not repeated for [`SERIES_FINISH_TIME`].
    pub fn flush(&mut self, now: Timestamp) -> Vec<Write> {
        let mut writes = Vec::new();
        let finish = jiff::SignedDuration::try_from(SERIES_FINISH_TIME).unwrap_or_default();
        self.entries.retain(|key, e| {
            if e.dirty && e.created && e.count > 1 {
                e.dirty = false;
                writes.push(series_write(key, e));
            }
            let idle = now.duration_since(e.last_observed);
            // Keep entries whose create has not been acknowledged yet.
            !(e.created && idle > finish)
        });
        writes
    }

    /// Running entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn series_write(key: &EventKey, e: &Entry) -> Write {
    Write::Series {
        key: key.clone(),
        namespace: e.namespace.clone(),
        name: e.name.clone(),
        count: e.count,
        last_observed: e.last_observed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occ(rv: &str, note: &str) -> Occurrence {
        Occurrence {
            regarding: Regarding {
                kind: "Pod",
                api_version: "v1",
                namespace: "default".into(),
                name: "web".into(),
                uid: "u1".into(),
                resource_version: rv.into(),
            },
            type_: "Warning",
            reason: "FailedScheduling",
            action: "Scheduling",
            note: note.into(),
        }
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn count_of(w: &Write) -> i32 {
        match w {
            Write::Series { count, .. } => *count,
            Write::Create { .. } => 1,
        }
    }

    #[test]
    fn first_creates_second_patches_later_ones_wait_for_a_flush() {
        let mut b = SeriesBook::new();
        let w = b.observe(occ("1", "a"), t(0)).unwrap();
        let Write::Create { name, key, .. } = &w else {
            panic!("{w:?}")
        };
        assert_eq!(name, &format!("web.{:x}", t(0).as_nanosecond()));
        assert_eq!(b.created(key), None);
        // The note is not part of the key: a new message repeats the series.
        let w = b.observe(occ("1", "b"), t(1)).unwrap();
        assert_eq!(count_of(&w), 2);
        assert!(
            matches!(&w, Write::Series { name: n, last_observed, .. } if n == name && *last_observed == t(1))
        );
        assert_eq!(b.observe(occ("1", "a"), t(2)), None);
        assert_eq!(b.observe(occ("1", "a"), t(3)), None);
        let flushed = b.flush(t(4));
        assert_eq!(flushed.len(), 1);
        assert_eq!(count_of(&flushed[0]), 4);
        assert!(b.flush(t(5)).is_empty());
        // Another resourceVersion is another event.
        assert!(matches!(
            b.observe(occ("2", "a"), t(6)),
            Some(Write::Create { .. })
        ));
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn series_waits_for_the_create() {
        let mut b = SeriesBook::new();
        let Some(Write::Create { key, .. }) = b.observe(occ("1", "a"), t(0)) else {
            panic!()
        };
        assert_eq!(b.observe(occ("1", "a"), t(1)), None);
        assert!(b.flush(t(2)).is_empty());
        let w = b.created(&key).unwrap();
        assert_eq!(count_of(&w), 2);
    }

    #[test]
    fn names_stay_unique_when_the_clock_stands_still() {
        let mut b = SeriesBook::new();
        let mut names = Vec::new();
        for rv in ["1", "2", "3"] {
            if let Some(Write::Create { name, .. }) = b.observe(occ(rv, "a"), t(0)) {
                names.push(name);
            }
        }
        names.dedup();
        assert_eq!(names.len(), 3);
    }

    #[test]
    fn series_finish_after_six_idle_minutes() {
        let mut b = SeriesBook::new();
        let Some(Write::Create { key, .. }) = b.observe(occ("1", "a"), t(0)) else {
            panic!()
        };
        b.created(&key);
        b.observe(occ("1", "a"), t(10));
        b.observe(occ("1", "a"), t(20));
        assert_eq!(b.flush(t(300)).len(), 1);
        assert_eq!(b.len(), 1);
        assert!(b.flush(t(20 + 361)).is_empty());
        assert!(b.is_empty());
        assert!(matches!(
            b.observe(occ("1", "a"), t(400)),
            Some(Write::Create { .. })
        ));
        b.forget(&key);
        assert!(b.is_empty());
    }
}
