//! Strategic merge patch (`application/strategic-merge-patch+json`), following apimachinery's
//! `strategicpatch.StrategicMergeMapPatch` on the server side:
//!
//! * objects merge recursively; `null` deletes a key;
//! * lists with a merge key merge item by item (`{"$patch": "delete", <key>: ...}` removes an
//!   item, any `{"$patch": "replace"}` item makes the list's other items replace the live list);
//!   lists of scalars with the merge strategy are unions; other lists are replaced;
//! * `{"$patch": "replace"}` in an object replaces it, `{"$patch": "delete"}` empties it;
//! * `$retainKeys: [...]` drops live keys not listed;
//! * `$deleteFromPrimitiveList/<field>: [...]` removes scalars from a merged list;
//! * `$setElementOrder/<field>: [...]` orders the merged list: the listed items in the given
//!   order, interleaved with live-only items, which keep their live position relative to the
//!   listed items that are also live (upstream `normalizeElementOrder` + `mergeSortedSlice`).
//!   Without it, a merged list is ordered the same way by the patch's own order, which puts
//!   newly added items before the live-only ones.
//!
//! Values inserted from the patch are "materialised" (patched onto nothing), so no directive key
//! survives in the result.

use super::PatchError;
use super::schema::{Field, ListMerge, Schema, field_of};
use serde_json::{Map, Value};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

fn invalid(msg: impl Into<String>) -> PatchError {
    PatchError::Invalid(msg.into())
}

/// Applies `patch` to the object `original` under `schema`.
pub(crate) fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    schema: Option<&Schema>,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(directive) = patch.remove(DIRECTIVE) {
        return match directive.as_str() {
            Some("replace") => merge_map(Map::new(), patch, schema),
            Some("delete") => Ok(Map::new()),
            _ => Err(invalid(format!(
                "unknown patch type: {directive} in map: {}",
                Value::Object(patch)
            ))),
        };
    }
    apply_retain_keys(&mut original, &mut patch)?;
    apply_set_element_order(&mut original, &mut patch, schema)?;
    let mut deletions = Vec::new();
    for (key, value) in patch {
        if let Some(list_key) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            deletions.push((list_key.to_string(), value));
            continue;
        }
        if value.is_null() {
            original.remove(&key);
            continue;
        }
        let field = field_of(schema, &key);
        let merged = match original.remove(&key) {
            Some(Value::Object(o)) if value.is_object() => {
                Value::Object(merge_map(o, into_map(value), field.schema)?)
            }
            Some(Value::Array(o)) if value.is_array() => {
                Value::Array(merge_list(o, into_vec(value), field)?)
            }
            _ => materialize(value, field)?,
        };
        original.insert(key, merged);
    }
    for (key, value) in deletions {
        delete_from_primitive_list(&mut original, &key, value)?;
    }
    Ok(original)
}

fn into_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn into_vec(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        _ => Vec::new(),
    }
}

/// The value `patch` produces when there is nothing to patch: directives are applied to an
/// empty object or list, so none survive.
pub(crate) fn materialize(patch: Value, field: Field) -> Result<Value, PatchError> {
    match patch {
        Value::Object(m) => Ok(Value::Object(merge_map(Map::new(), m, field.schema)?)),
        Value::Array(items) => Ok(Value::Array(merge_list(Vec::new(), items, field)?)),
        other => Ok(other),
    }
}

/// `$retainKeys`: every key set in the patch must be listed; live keys not listed are dropped.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), PatchError> {
    let Some(retain) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(invalid("invalid patch format of retainKeys"));
    };
    let listed = |k: &str| retain.iter().any(|v| v.as_str() == Some(k));
    let unlisted_patch_key = patch.iter().any(|(k, v)| {
        !v.is_null()
            && !k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            && !k.starts_with(SET_ELEMENT_ORDER)
            && !listed(k)
    });
    if unlisted_patch_key {
        return Err(invalid("invalid patch format of retainKeys"));
    }
    original.retain(|k, _| listed(k));
    Ok(())
}

/// `$deleteFromPrimitiveList/<key>`: removes the listed scalars from the live list.
fn delete_from_primitive_list(
    original: &mut Map<String, Value>,
    key: &str,
    value: Value,
) -> Result<(), PatchError> {
    let Value::Array(to_delete) = value else {
        return Err(invalid("invalid patch format of primitive list"));
    };
    if let Some(Value::Array(items)) = original.get_mut(key) {
        items.retain(|item| !to_delete.contains(item));
    }
    Ok(())
}

/// Processes every `$setElementOrder/<key>` directive together with the patch list of the same
/// key (which is consumed here).
fn apply_set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    schema: Option<&Schema>,
) -> Result<(), PatchError> {
    let order_keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for order_key in order_keys {
        let order = patch.remove(&order_key).unwrap_or(Value::Null);
        let Value::Array(order) = order else {
            return Err(invalid("invalid patch format of setElementOrder list"));
        };
        let key = &order_key[SET_ELEMENT_ORDER.len()..];
        if key.is_empty() {
            return Err(invalid("invalid patch format of setElementOrder list"));
        }
        let field = field_of(schema, key);
        let live = match original.get(key) {
            None => None,
            Some(Value::Array(items)) => Some(items.clone()),
            Some(_) => {
                return Err(invalid(format!(
                    "expected a slice, but received a map or scalar for {key}"
                )));
            }
        };
        let patch_list = match patch.remove(key) {
            None => None,
            Some(Value::Array(items)) => Some(items),
            Some(_) => return Err(invalid(format!("expected a slice for {key} in the patch"))),
        };
        let merge_key = field.merge_key();
        if let Some(items) = &patch_list {
            check_order_consistency(items, &order, merge_key)?;
        }
        let merged = match (live.clone(), patch_list) {
            (Some(l), Some(p)) => merge_list(l, p, field)?,
            (Some(l), None) => l,
            (None, Some(p)) => merge_list(Vec::new(), p, field)?,
            (None, None) => continue,
        };
        let ordered = if field.list == ListMerge::Replace {
            merged
        } else {
            let (in_order, server_only): (Vec<Value>, Vec<Value>) = merged
                .into_iter()
                .partition(|item| position(&order, item, merge_key).is_some());
            normalize_order(
                in_order,
                server_only,
                &order,
                live.as_deref().unwrap_or_default(),
                merge_key,
            )
        };
        original.insert(key.to_string(), Value::Array(ordered));
    }
    Ok(())
}

/// The patch list's items (other than deletions) must appear in the `$setElementOrder` list,
/// in the same relative order.
fn check_order_consistency(
    items: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
) -> Result<(), PatchError> {
    let mut oi = 0;
    for item in items.iter().filter(|i| i.get(DIRECTIVE).is_none()) {
        let k = identity(item, merge_key)?;
        loop {
            let Some(o) = order.get(oi) else {
                return Err(invalid(format!(
                    "The order in patch list:\n{}\n doesn't match $setElementOrder list:\n{}\n",
                    Value::Array(items.to_vec()),
                    Value::Array(order.to_vec())
                )));
            };
            oi += 1;
            if identity(o, merge_key)? == k {
                break;
            }
        }
    }
    Ok(())
}

/// What identifies a list item: its merge-key value, or the item itself for scalars.
fn identity<'a>(item: &'a Value, merge_key: Option<&str>) -> Result<&'a Value, PatchError> {
    match merge_key {
        None => Ok(item),
        Some(k) => item.get(k).ok_or_else(|| no_merge_key(item, k)),
    }
}

fn no_merge_key(item: &Value, key: &str) -> PatchError {
    invalid(format!(
        "map: {item} does not contain declared merge key: {key}"
    ))
}

/// The index of `item` in `list` by identity (first match).
fn position(list: &[Value], item: &Value, merge_key: Option<&str>) -> Option<usize> {
    let id = match merge_key {
        None => Some(item),
        Some(k) => item.get(k),
    };
    list.iter().position(|v| match merge_key {
        None => Some(v) == id,
        Some(k) => v.get(k) == id,
    })
}

/// Merges two lists according to the field's strategy.
pub(crate) fn merge_list(
    live: Vec<Value>,
    patch: Vec<Value>,
    field: Field,
) -> Result<Vec<Value>, PatchError> {
    if field.list == ListMerge::Replace {
        return patch
            .into_iter()
            .map(|item| materialize(item, item_field(field)))
            .collect();
    }
    if live.is_empty() && patch.is_empty() {
        return Ok(live);
    }
    let maps = element_kind(&live, &patch)?;
    if !maps {
        return Ok(merge_scalar_list(live, patch));
    }
    let Some(key) = field.merge_key() else {
        return Err(invalid("cannot merge lists without merge key for type map"));
    };
    let (live, patch) = apply_list_directives(live, patch, key, field)?;
    let mut merged = live.clone();
    for item in &patch {
        let id = identity(item, Some(key))?;
        match merged.iter().position(|m| m.get(key) == Some(id)) {
            Some(i) => {
                let current = std::mem::take(&mut merged[i]);
                merged[i] = Value::Object(merge_map(
                    into_map(current),
                    into_map(item.clone()),
                    field.schema,
                )?);
            }
            None => merged.push(materialize(item.clone(), item_field(field))?),
        }
    }
    let (in_patch, server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|m| position(&patch, m, Some(key)).is_some());
    Ok(normalize_order(
        in_patch,
        server_only,
        &patch,
        &live,
        Some(key),
    ))
}

/// The field metadata that applies to one item of a list field.
fn item_field(field: Field) -> Field {
    Field {
        list: ListMerge::Replace,
        schema: field.schema,
    }
}

/// True when the items are objects, false when scalars; mixing them or nesting lists fails.
fn element_kind(live: &[Value], patch: &[Value]) -> Result<bool, PatchError> {
    let mut kind = None;
    for item in live.iter().chain(patch) {
        if item.is_array() {
            return Err(invalid("lists of lists are not supported"));
        }
        let is_map = item.is_object();
        if kind.is_some_and(|k| k != is_map) {
            return Err(invalid(format!(
                "list element types are not identical: {} and {}",
                Value::Array(live.to_vec()),
                Value::Array(patch.to_vec())
            )));
        }
        kind = Some(is_map);
    }
    Ok(kind.unwrap_or(false))
}

/// Union of two scalar lists, ordered like upstream.
fn merge_scalar_list(live: Vec<Value>, patch: Vec<Value>) -> Vec<Value> {
    let mut merged: Vec<Value> = Vec::new();
    for item in live.iter().chain(&patch) {
        if !merged.contains(item) {
            merged.push(item.clone());
        }
    }
    let (in_patch, server_only): (Vec<Value>, Vec<Value>) =
        merged.into_iter().partition(|m| patch.contains(m));
    normalize_order(in_patch, server_only, &patch, &live, None)
}

/// Handles `$patch` items of a keyed list: deletions remove live items, `replace` makes the
/// remaining patch items the whole list. Returns the live list and the plain patch items.
fn apply_list_directives(
    mut live: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
    field: Field,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut plain = Vec::new();
    let mut replace = false;
    for item in patch {
        let Some(directive) = item.get(DIRECTIVE) else {
            plain.push(item);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let id = identity(&item, Some(key))?.clone();
                live.retain(|l| l.get(key) != Some(&id));
            }
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(invalid(
                    "merging lists cannot yet be specified in the patch",
                ));
            }
            _ => {
                return Err(invalid(format!(
                    "unknown patch type: {directive} in map: {item}"
                )));
            }
        }
    }
    if replace {
        let items = plain
            .into_iter()
            .map(|i| materialize(i, item_field(field)))
            .collect::<Result<_, _>>()?;
        return Ok((items, Vec::new()));
    }
    Ok((live, plain))
}

/// Upstream's `normalizeElementOrder`: patch items sorted by `patch_order`, live-only items by
/// `live_order`, then interleaved so each live-only item precedes the first patch item that
/// comes after it in the live list (patch items unknown to the live list come first).
fn normalize_order(
    mut in_patch: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    live_order: &[Value],
    merge_key: Option<&str>,
) -> Vec<Value> {
    sort_by_order(&mut in_patch, patch_order, merge_key);
    sort_by_order(&mut server_only, live_order, merge_key);
    let mut out = Vec::with_capacity(in_patch.len() + server_only.len());
    let (mut left, mut right) = (
        server_only.into_iter().peekable(),
        in_patch.into_iter().peekable(),
    );
    loop {
        match (left.peek(), right.peek()) {
            (Some(l), Some(r)) => {
                let li = position(live_order, l, merge_key);
                let ri = position(live_order, r, merge_key);
                let take_left = matches!((li, ri), (Some(a), Some(b)) if a < b);
                out.extend(if take_left { left.next() } else { right.next() });
            }
            (Some(_), None) => out.extend(left.next()),
            (None, Some(_)) => out.extend(right.next()),
            (None, None) => break,
        }
    }
    out
}

/// Stable sort by position in `order`; items not found keep their relative order at the end.
fn sort_by_order(items: &mut [Value], order: &[Value], merge_key: Option<&str>) {
    items.sort_by_key(|item| position(order, item, merge_key).unwrap_or(usize::MAX));
}

/// Removes any directive key left in a value (defence in depth: materialisation already
/// strips them from everything taken from the patch).
pub(crate) fn strip_directives(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| {
                k != DIRECTIVE
                    && k != RETAIN_KEYS
                    && !k.starts_with(SET_ELEMENT_ORDER)
                    && !k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            });
            map.values_mut().for_each(strip_directives);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
