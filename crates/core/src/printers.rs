//! Server-side table printing (the columns `kubectl get` shows), one function per resource.
//!
//! kubectl 1.32 has no client-side printers for built-in kinds: it asks for a
//! `meta.k8s.io/v1 Table` and prints the cells it gets (shared/spec/kubectl-wire.md §2). So the
//! column sets, the cell text (STATUS, READY, RESTARTS, AGE, ...) and the cell JSON types are
//! what users see. The server always sends the wide (priority 1) cells too; kubectl hides them
//! unless `-o wide`.
//!
//! Objects are read as JSON with tolerant accessors: a malformed object prints with defaults
//! instead of failing the whole list.

mod config;
mod event;
mod node;
mod pod;
pub mod service;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::duration::age;
use crate::fields::{str_at, time_at};

pub use pod::{PodSummary, pod_summary};

/// One column definition of a Table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub type_: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    pub priority: i32,
}

impl Column {
    /// The column as it appears in `columnDefinitions[]`.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.type_,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// A plain string column.
const fn col(name: &'static str, description: &'static str, priority: i32) -> Column {
    Column {
        name,
        type_: "string",
        format: "",
        description,
        priority,
    }
}

/// The `Name` column (format `name`, which makes kubectl print `kind/name` where needed).
const fn name_col(priority: i32) -> Column {
    Column {
        name: "Name",
        type_: "string",
        format: "name",
        description: NAME_DESC,
        priority,
    }
}

const NAME_DESC: &str =
    "Name of the object, unique within its namespace (or cluster-wide for cluster-scoped objects).";
const AGE_DESC: &str = "Time since the object was created (its creationTimestamp), as a short human-readable duration.";

/// Column definitions for a resource (plural REST name), as the real API server serves them.
pub fn columns(resource: &str) -> Vec<Column> {
    match resource {
        "pods" => pod::columns(),
        "nodes" => node::columns(),
        "events" => event::columns(),
        "secrets" => config::secret_columns(),
        "configmaps" => config::config_map_columns(),
        "serviceaccounts" => config::service_account_columns(),
        "namespaces" => vec![
            name_col(0),
            col(
                "Status",
                "The phase of the namespace (Active or Terminating).",
                0,
            ),
            col("Age", AGE_DESC, 0),
        ],
        "leases" => vec![
            name_col(0),
            col(
                "Holder",
                "The identity of the current holder of the lease (spec.holderIdentity).",
                0,
            ),
            col("Age", AGE_DESC, 0),
        ],
        _ => vec![
            name_col(0),
            Column {
                name: "Created At",
                type_: "date",
                format: "",
                description: "The time the object was created (its creationTimestamp), in RFC 3339 form, UTC.",
                priority: 0,
            },
        ],
    }
}

/// The cells of one row, `now` for ages. Cells are serde_json values (strings, or integers where
/// Kubernetes uses ints), one per entry of [`columns`], wide cells included.
pub fn row_cells(resource: &str, obj: &Value, now: Timestamp) -> Vec<Value> {
    match resource {
        "pods" => pod::cells(obj, now),
        "nodes" => node::cells(obj, now),
        "events" => event::cells(obj, now),
        "secrets" => config::secret_cells(obj, now),
        "configmaps" => config::config_map_cells(obj, now),
        "serviceaccounts" => config::service_account_cells(obj, now),
        "namespaces" => vec![
            name(obj).into(),
            str_at(obj, &["status", "phase"]).into(),
            creation_age(obj, now).into(),
        ],
        "leases" => vec![
            name(obj).into(),
            str_at(obj, &["spec", "holderIdentity"]).into(),
            creation_age(obj, now).into(),
        ],
        _ => vec![name(obj).into(), created_at(obj).into()],
    }
}

/// Row conditions (pods: `Completed` for Succeeded/Failed), or None.
pub fn row_conditions(resource: &str, obj: &Value) -> Option<Value> {
    match resource {
        "pods" => pod::row_conditions(obj),
        _ => None,
    }
}

/// `metadata.name`, or empty.
fn name(obj: &Value) -> &str {
    str_at(obj, &["metadata", "name"])
}

/// The AGE cell: time since `metadata.creationTimestamp`, `<unknown>` without one.
fn creation_age(obj: &Value, now: Timestamp) -> String {
    age(now, time_at(obj, &["metadata", "creationTimestamp"]))
}

/// The `Created At` cell of the default table: the creation time in RFC 3339 (whole seconds,
/// UTC); an object without one prints Go's zero time, as the real server does.
fn created_at(obj: &Value) -> String {
    match time_at(obj, &["metadata", "creationTimestamp"]) {
        Some(t) => Timestamp::from_second(t.as_second())
            .unwrap_or(t)
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string(),
        None => "0001-01-01T00:00:00Z".to_string(),
    }
}

#[cfg(test)]
fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_count_matches_columns() {
        let now = ts("2026-01-01T00:00:00Z");
        for r in [
            "pods",
            "nodes",
            "events",
            "namespaces",
            "leases",
            "secrets",
            "configmaps",
            "serviceaccounts",
            "widgets",
        ] {
            assert_eq!(columns(r).len(), row_cells(r, &json!({}), now).len(), "{r}");
            assert_eq!(
                columns(r).len(),
                row_cells(r, &json!("not an object"), now).len(),
                "{r}"
            );
        }
    }

    #[test]
    fn namespaces_and_leases() {
        let now = ts("2026-01-01T01:00:00Z");
        let ns = json!({"metadata": {"name": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
                        "status": {"phase": "Active"}});
        assert_eq!(
            row_cells("namespaces", &ns, now),
            vec![json!("default"), json!("Active"), json!("60m")]
        );
        let names: Vec<_> = columns("namespaces").iter().map(|c| c.name).collect();
        assert_eq!(names, ["Name", "Status", "Age"]);

        let lease = json!({"metadata": {"name": "node-1", "creationTimestamp": "2026-01-01T00:59:30Z"},
                           "spec": {"holderIdentity": "node-1"}});
        assert_eq!(
            row_cells("leases", &lease, now),
            vec![json!("node-1"), json!("node-1"), json!("30s")]
        );
        let no_holder = json!({"metadata": {"name": "x"}});
        assert_eq!(
            row_cells("leases", &no_holder, now),
            vec![json!("x"), json!(""), json!("<unknown>")]
        );
    }

    #[test]
    fn default_table() {
        let cols = columns("widgets");
        assert_eq!(cols[0].name, "Name");
        assert_eq!(cols[0].format, "name");
        assert_eq!(cols[1].name, "Created At");
        assert_eq!(cols[1].type_, "date");
        let cm = json!({"metadata": {"name": "cfg", "creationTimestamp": "2026-03-04T05:06:07Z"}});
        assert_eq!(
            row_cells("widgets", &cm, ts("2026-03-05T00:00:00Z")),
            vec![json!("cfg"), json!("2026-03-04T05:06:07Z")]
        );
        assert_eq!(
            row_cells("widgets", &json!({}), ts("2026-03-05T00:00:00Z"))[1],
            json!("0001-01-01T00:00:00Z")
        );
        assert!(row_conditions("widgets", &cm).is_none());
    }

    #[test]
    fn column_json_shape() {
        let c = &columns("pods")[0];
        assert_eq!(
            c.to_json(),
            json!({"name": "Name", "type": "string", "format": "name",
                   "description": NAME_DESC, "priority": 0})
        );
    }
}
