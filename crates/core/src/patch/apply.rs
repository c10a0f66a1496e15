//! The merge behind server-side apply, simplified: the applied configuration is merged into the
//! live object with the same per-kind list keys as strategic merge patch, but nothing absent
//! from the applied configuration is removed (no field ownership is tracked).
//!
//! Objects merge recursively; lists with a merge key merge item by item (live items not in the
//! applied list stay, in place; new items are appended in applied order); lists of scalars with
//! the merge strategy become the live items followed by the new applied ones; all other lists
//! and scalars take the applied value. An explicit `null` removes the field.

use super::PatchError;
use super::schema::{Field, ListMerge, Schema, field_of};
use super::strategic::strip_directives;
use serde_json::{Map, Value};

pub(crate) fn apply_map(
    live: &mut Map<String, Value>,
    applied: &Map<String, Value>,
    schema: Option<&Schema>,
) -> Result<(), PatchError> {
    for (key, value) in applied {
        if value.is_null() {
            live.remove(key);
            continue;
        }
        let field = field_of(schema, key);
        match (live.get_mut(key), value) {
            (Some(Value::Object(l)), Value::Object(a)) => apply_map(l, a, field.schema)?,
            (Some(Value::Array(l)), Value::Array(a)) => apply_list(l, a, field)?,
            _ => {
                let mut v = value.clone();
                strip_directives(&mut v);
                live.insert(key.clone(), v);
            }
        }
    }
    Ok(())
}

fn apply_list(live: &mut Vec<Value>, applied: &[Value], field: Field) -> Result<(), PatchError> {
    match field.list {
        ListMerge::ByKey(key) if applied.iter().chain(live.iter()).all(Value::is_object) => {
            for item in applied {
                let id = item.get(key).ok_or_else(|| {
                    PatchError::Invalid(format!(
                        "map: {item} does not contain declared merge key: {key}"
                    ))
                })?;
                match live.iter_mut().find(|l| l.get(key) == Some(id)) {
                    Some(Value::Object(existing)) => apply_map(
                        existing,
                        item.as_object().unwrap_or(&Map::new()),
                        field.schema,
                    )?,
                    _ => live.push(clean(item)),
                }
            }
        }
        ListMerge::Set => {
            for item in applied {
                if !live.contains(item) {
                    live.push(clean(item));
                }
            }
        }
        _ => *live = applied.iter().map(clean).collect(),
    }
    Ok(())
}

fn clean(v: &Value) -> Value {
    let mut v = v.clone();
    strip_directives(&mut v);
    v
}
