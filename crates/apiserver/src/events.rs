//! Event expiry: like Kubernetes (`--event-ttl`, default 1 h), events are removed an hour after
//! they were last seen, so a busy cluster's event log does not grow without bound.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use crate::object;
use crate::query::Params;
use crate::resources;
use crate::rest::{self, Api, DeleteOptions};

pub const EVENT_TTL: SignedDuration = SignedDuration::from_hours(1);

/// When an event was last seen: its series' last observation, else lastTimestamp, else
/// eventTime, else its creation.
pub fn last_seen(ev: &Value) -> Option<Timestamp> {
    [
        "/series/lastObservedTime",
        "/lastTimestamp",
        "/eventTime",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .find_map(|p| ev.pointer(p)?.as_str()?.parse::<Timestamp>().ok())
}

/// Deletes the events last seen more than `ttl` before `now`; returns how many went.
pub async fn expire(api: &Api, now: Timestamp, ttl: SignedDuration) -> usize {
    let info = resources::lookup("", "v1", "events").expect("events");
    let Ok(page) = rest::list_page(api, info, None, &Params::default()).await else {
        return 0;
    };
    let mut removed = 0;
    for ev in page.items {
        if last_seen(&ev).is_some_and(|t| now.duration_since(t) > ttl) {
            let ns = object::namespace(&ev).map(String::from);
            let name = object::name(&ev).to_string();
            if rest::delete_object(
                api,
                info,
                ns.as_deref(),
                &name,
                &DeleteOptions::default(),
                false,
            )
            .await
            .is_ok()
            {
                removed += 1;
            }
        }
    }
    removed
}

/// Expires events once a minute.
pub async fn run_expiry(api: Arc<Api>) {
    loop {
        let n = expire(&api, Timestamp::now(), EVENT_TTL).await;
        if n > 0 {
            tracing::debug!(removed = n, "expired events");
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn last_seen_prefers_the_series() {
        let ev = json!({"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"},
                        "lastTimestamp": "2026-01-01T00:05:00Z",
                        "series": {"lastObservedTime": "2026-01-01T00:10:00.000000Z"}});
        assert_eq!(last_seen(&ev).unwrap().to_string(), "2026-01-01T00:10:00Z");
        assert!(last_seen(&json!({})).is_none());
    }

    #[tokio::test]
    async fn expire_removes_only_old_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = skiff_store::RedbStore::open(&dir.path().join("s.redb")).unwrap();
        let api = Api {
            store: Arc::new(store),
            server_address: String::new(),
            metrics: crate::metrics::Metrics::new(),
            agent_token: String::new(),
            services: crate::services::Allocators::new(Default::default()),
        };
        crate::namespaces::ensure_system_namespaces(&api)
            .await
            .unwrap();
        let info = resources::lookup("", "v1", "events").unwrap();
        for (name, t) in [
            ("old.1", "2026-01-01T00:00:00Z"),
            ("new.1", "2026-01-01T01:30:00Z"),
        ] {
            let ev = json!({"metadata": {"name": name}, "reason": "R", "message": "m", "type": "Normal",
                "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
                "firstTimestamp": t, "lastTimestamp": t, "count": 1});
            rest::create_object(&api, info, Some("default"), ev, &Params::default())
                .await
                .unwrap();
        }
        let now: Timestamp = "2026-01-01T02:00:00Z".parse().unwrap();
        assert_eq!(expire(&api, now, EVENT_TTL).await, 1);
        let left = rest::list_page(&api, info, Some("default"), &Params::default())
            .await
            .unwrap();
        let names: Vec<&str> = left.items.iter().map(object::name).collect();
        assert_eq!(names, ["new.1"]);
    }
}
