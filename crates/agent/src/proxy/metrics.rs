//! The proxy's counters, and their Prometheus text exposition.
//!
//! Per Service port (labels `namespace`, `service`, `port`):
//!
//! * `skiff_proxy_connections_accepted_total`: connections accepted by its listeners;
//! * `skiff_proxy_connections_failed_total{reason}`: accepted connections closed without
//!   reaching a backend, `reason="no_backends"` (nothing to send them to) or `"connect"` (every
//!   backend tried refused or timed out);
//! * `skiff_proxy_backend_connect_errors_total`: failed backend connects, including those a
//!   retry on another backend made up for;
//! * `skiff_proxy_active_connections`: connections being relayed;
//! * `skiff_proxy_backends`: the backends new connections go to now.
//!
//! And `skiff_proxy_listeners`: the listeners open.
//!
//! The agent has no `/metrics` endpoint yet: [`ProxyMetrics::render`] is what one would serve.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::routing::{RoutingTable, ServicePortKey};

/// The counters of one Service port.
#[derive(Debug, Default)]
pub struct PortCounters {
    pub accepted: AtomicU64,
    pub no_backends: AtomicU64,
    pub connect_failed: AtomicU64,
    pub connect_errors: AtomicU64,
    pub active: AtomicI64,
}

/// A snapshot of one Service port's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortSnapshot {
    pub accepted: u64,
    pub no_backends: u64,
    pub connect_failed: u64,
    pub connect_errors: u64,
    pub active: i64,
}

/// The proxy's metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    ports: Arc<Mutex<BTreeMap<ServicePortKey, Arc<PortCounters>>>>,
    listeners: Arc<AtomicUsize>,
    table: watch::Receiver<Arc<RoutingTable>>,
}

impl ProxyMetrics {
    pub(crate) fn new(table: watch::Receiver<Arc<RoutingTable>>) -> Self {
        ProxyMetrics {
            ports: Arc::default(),
            listeners: Arc::default(),
            table,
        }
    }

    /// The counters of a Service port (created on first use, kept afterwards).
    pub(crate) fn port(&self, key: &ServicePortKey) -> Arc<PortCounters> {
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        ports.entry(key.clone()).or_default().clone()
    }

    pub(crate) fn set_listeners(&self, n: usize) {
        self.listeners.store(n, Ordering::Relaxed);
    }

    /// A Service port's counters now (zeros if it never had a listener).
    pub fn snapshot(&self, key: &ServicePortKey) -> PortSnapshot {
        let ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        ports.get(key).map(|c| snapshot(c)).unwrap_or_default()
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let ports: Vec<(ServicePortKey, PortSnapshot)> = {
            let ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
            ports
                .iter()
                .map(|(k, c)| (k.clone(), snapshot(c)))
                .collect()
        };
        let table = self.table.borrow().clone();
        let mut out = String::new();
        family(
            &mut out,
            "skiff_proxy_connections_accepted_total",
            "counter",
            "Connections accepted per service port.",
        );
        for (k, s) in &ports {
            line(
                &mut out,
                "skiff_proxy_connections_accepted_total",
                k,
                None,
                s.accepted as i64,
            );
        }
        family(
            &mut out,
            "skiff_proxy_connections_failed_total",
            "counter",
            "Accepted connections closed without reaching a backend.",
        );
        for (k, s) in &ports {
            let f = "skiff_proxy_connections_failed_total";
            line(
                &mut out,
                f,
                k,
                Some(("reason", "no_backends")),
                s.no_backends as i64,
            );
            line(
                &mut out,
                f,
                k,
                Some(("reason", "connect")),
                s.connect_failed as i64,
            );
        }
        family(
            &mut out,
            "skiff_proxy_backend_connect_errors_total",
            "counter",
            "Failed connects to backends, retried or not.",
        );
        for (k, s) in &ports {
            line(
                &mut out,
                "skiff_proxy_backend_connect_errors_total",
                k,
                None,
                s.connect_errors as i64,
            );
        }
        family(
            &mut out,
            "skiff_proxy_active_connections",
            "gauge",
            "Connections being relayed per service port.",
        );
        for (k, s) in &ports {
            line(
                &mut out,
                "skiff_proxy_active_connections",
                k,
                None,
                s.active,
            );
        }
        family(
            &mut out,
            "skiff_proxy_backends",
            "gauge",
            "Backends receiving new connections per service port.",
        );
        for e in table.entries() {
            line(
                &mut out,
                "skiff_proxy_backends",
                &e.key,
                None,
                e.backends.len() as i64,
            );
        }
        family(
            &mut out,
            "skiff_proxy_listeners",
            "gauge",
            "Listeners open.",
        );
        let _ = writeln!(
            out,
            "skiff_proxy_listeners {}",
            self.listeners.load(Ordering::Relaxed)
        );
        out
    }
}

fn snapshot(c: &PortCounters) -> PortSnapshot {
    PortSnapshot {
        accepted: c.accepted.load(Ordering::Relaxed),
        no_backends: c.no_backends.load(Ordering::Relaxed),
        connect_failed: c.connect_failed.load(Ordering::Relaxed),
        connect_errors: c.connect_errors.load(Ordering::Relaxed),
        active: c.active.load(Ordering::Relaxed),
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn line(out: &mut String, name: &str, k: &ServicePortKey, extra: Option<(&str, &str)>, v: i64) {
    let _ = write!(
        out,
        "{name}{{namespace=\"{}\",service=\"{}\",port=\"{}\"",
        escape(&k.namespace),
        escape(&k.service),
        escape(&k.port)
    );
    if let Some((l, val)) = extra {
        let _ = write!(out, ",{l}=\"{}\"", escape(val));
    }
    let _ = writeln!(out, "}} {v}");
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::routing::{Endpoint, ServicePortEntry};

    #[test]
    fn renders_counters_and_backends() {
        let key = ServicePortKey::new("default", "web", "http");
        let mut t = RoutingTable::default();
        t.insert(ServicePortEntry::new(
            key.clone(),
            80,
            vec![Endpoint::ready("10.0.0.1:80".parse().unwrap())],
        ));
        let (_tx, rx) = watch::channel(Arc::new(t));
        let m = ProxyMetrics::new(rx);
        let c = m.port(&key);
        c.accepted.fetch_add(3, Ordering::Relaxed);
        c.no_backends.fetch_add(1, Ordering::Relaxed);
        m.set_listeners(2);
        let text = m.render();
        assert!(text.contains(
            "skiff_proxy_connections_accepted_total{namespace=\"default\",service=\"web\",port=\"http\"} 3\n"
        ));
        assert!(text.contains(
            "skiff_proxy_connections_failed_total{namespace=\"default\",service=\"web\",port=\"http\",reason=\"no_backends\"} 1\n"
        ));
        assert!(text.contains(
            "skiff_proxy_backends{namespace=\"default\",service=\"web\",port=\"http\"} 1\n"
        ));
        assert!(text.contains("# TYPE skiff_proxy_active_connections gauge\n"));
        assert!(text.contains("skiff_proxy_listeners 2\n"));
        assert_eq!(m.snapshot(&key).accepted, 3);
    }
}
