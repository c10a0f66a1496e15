//! `meta.k8s.io/v1` Table responses: what `kubectl get` prints. The columns and cells come from
//! `skiff_core::printers`; this file wraps them with the row objects kubectl needs.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::resources::ResourceInfo;

/// What each row carries besides its cells (`includeObject`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(v: Option<&str>) -> IncludeObject {
        match v {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// Whether the Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|first| {
        let p: String = first.chars().filter(|c| !c.is_whitespace()).collect();
        p.contains("as=Table") && p.contains("g=meta.k8s.io")
    })
}

pub const TABLE_CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

fn columns(resource: &str) -> Vec<skiff_core::printers::Column> {
    skiff_core::printers::service::columns(resource)
        .unwrap_or_else(|| skiff_core::printers::columns(resource))
}

fn cells(resource: &str, obj: &Value, now: Timestamp) -> Vec<Value> {
    skiff_core::printers::service::row_cells(resource, obj, now)
        .unwrap_or_else(|| skiff_core::printers::row_cells(resource, obj, now))
}

pub fn column_definitions(info: &ResourceInfo) -> Value {
    columns(info.resource)
        .into_iter()
        .map(|c| {
            json!({
                "name": c.name, "type": c.type_, "format": c.format,
                "description": c.description, "priority": c.priority,
            })
        })
        .collect()
}

pub fn row(info: &ResourceInfo, obj: &Value, include: IncludeObject, now: Timestamp) -> Value {
    let mut row = json!({"cells": cells(info.resource, obj, now)});
    if let Some(c) = skiff_core::printers::row_conditions(info.resource, obj) {
        row["conditions"] = c;
    }
    match include {
        IncludeObject::None => {}
        IncludeObject::Object => row["object"] = obj.clone(),
        IncludeObject::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
            })
        }
    }
    row
}

/// A Table of `objs`; `list_meta` is the list's metadata (resourceVersion, continue).
pub fn table(
    info: &ResourceInfo,
    objs: &[Value],
    list_meta: Value,
    include: IncludeObject,
    with_columns: bool,
    now: Timestamp,
) -> Value {
    let rows: Vec<Value> = objs.iter().map(|o| row(info, o, include, now)).collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": if with_columns { column_definitions(info) } else { Value::Null },
        "rows": rows,
    })
}
