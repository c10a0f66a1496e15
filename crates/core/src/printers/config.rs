//! The tables of the configuration kinds: secrets (NAME TYPE DATA AGE), configmaps
//! (NAME DATA AGE) and serviceaccounts (NAME SECRETS AGE). DATA and SECRETS are integer cells
//! (the number of entries), declared as strings, as the real server does.

use jiff::Timestamp;
use serde_json::Value;

use super::{AGE_DESC, Column, col, creation_age, name, name_col};
use crate::fields::{at, str_at};

/// Entries in the map (or list) at `path`; 0 when absent or of another shape.
fn count(obj: &Value, path: &[&str]) -> i64 {
    match at(obj, path) {
        Some(Value::Object(m)) => m.len() as i64,
        Some(Value::Array(a)) => a.len() as i64,
        _ => 0,
    }
}

pub(super) fn secret_columns() -> Vec<Column> {
    vec![
        name_col(0),
        col(
            "Type",
            "The kind of secret (its `type`), which decides the keys it must hold.",
            0,
        ),
        col("Data", "How many keys the secret's data holds.", 0),
        col("Age", AGE_DESC, 0),
    ]
}

pub(super) fn secret_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj).into(),
        str_at(obj, &["type"]).into(),
        count(obj, &["data"]).into(),
        creation_age(obj, now).into(),
    ]
}

pub(super) fn config_map_columns() -> Vec<Column> {
    vec![
        name_col(0),
        col(
            "Data",
            "How many keys the config map holds, in data and binaryData together.",
            0,
        ),
        col("Age", AGE_DESC, 0),
    ]
}

pub(super) fn config_map_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj).into(),
        (count(obj, &["data"]) + count(obj, &["binaryData"])).into(),
        creation_age(obj, now).into(),
    ]
}

pub(super) fn service_account_columns() -> Vec<Column> {
    vec![
        name_col(0),
        col(
            "Secrets",
            "How many secrets the service account lists (its `secrets`).",
            0,
        ),
        col("Age", AGE_DESC, 0),
    ]
}

pub(super) fn service_account_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj).into(),
        count(obj, &["secrets"]).into(),
        creation_age(obj, now).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::{columns, row_cells, ts};
    use serde_json::json;

    #[test]
    fn secrets() {
        let now = ts("2026-01-01T00:10:00Z");
        let s = json!({"metadata": {"name": "reg", "creationTimestamp": "2026-01-01T00:00:00Z"},
                       "type": "kubernetes.io/dockerconfigjson",
                       "data": {".dockerconfigjson": "e30="}});
        assert_eq!(
            row_cells("secrets", &s, now),
            vec![
                json!("reg"),
                json!("kubernetes.io/dockerconfigjson"),
                json!(1),
                json!("10m")
            ]
        );
        let names: Vec<_> = columns("secrets").iter().map(|c| c.name).collect();
        assert_eq!(names, ["Name", "Type", "Data", "Age"]);
    }

    #[test]
    fn config_maps_count_both_maps() {
        let now = ts("2026-01-01T00:00:30Z");
        let cm = json!({"metadata": {"name": "cfg", "creationTimestamp": "2026-01-01T00:00:00Z"},
                        "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(
            row_cells("configmaps", &cm, now),
            vec![json!("cfg"), json!(3), json!("30s")]
        );
        let names: Vec<_> = columns("configmaps").iter().map(|c| c.name).collect();
        assert_eq!(names, ["Name", "Data", "Age"]);
    }

    #[test]
    fn service_accounts() {
        let now = ts("2026-01-01T02:00:00Z");
        let sa = json!({"metadata": {"name": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
                        "secrets": [{"name": "t"}]});
        assert_eq!(
            row_cells("serviceaccounts", &sa, now),
            vec![json!("default"), json!(1), json!("120m")]
        );
        let names: Vec<_> = columns("serviceaccounts").iter().map(|c| c.name).collect();
        assert_eq!(names, ["Name", "Secrets", "Age"]);
    }
}
