//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), which
//! kubectl's typed generators send (`kubectl create namespace`). The envelope is the magic
//! `k8s\0` followed by a `runtime.Unknown` message; inside it, the object's own message.
//!
//! Only the kinds kubectl's generators create for resources served here are decoded: Namespace
//! (ObjectMeta name, generateName, labels, annotations; spec.finalizers). Anything else is 415.

use serde_json::{Map, Value, json};

use crate::errors::{ApiError, ApiResult};

const MAGIC: &[u8] = b"k8s\0";

/// One protobuf field: its number and its length-delimited payload or varint.
enum Field<'a> {
    Varint,
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn fields(buf: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let (num, wire) = (tag >> 3, tag & 7);
        match wire {
            0 => {
                varint(buf, &mut pos)?;
                out.push((num, Field::Varint));
            }
            1 => pos += 8,
            2 => {
                let len = varint(buf, &mut pos)? as usize;
                let end = pos.checked_add(len)?;
                out.push((num, Field::Bytes(buf.get(pos..end)?)));
                pos = end;
            }
            5 => pos += 4,
            _ => return None,
        }
    }
    (pos == buf.len()).then_some(out)
}

fn string(f: &Field<'_>) -> Option<String> {
    match f {
        Field::Bytes(b) => String::from_utf8(b.to_vec()).ok(),
        Field::Varint => None,
    }
}

fn bad(why: &str) -> ApiError {
    ApiError::bad_request(format!("the protobuf body could not be decoded: {why}"))
}

fn map_entry(b: &[u8]) -> Option<(String, String)> {
    let fs = fields(b)?;
    let mut k = String::new();
    let mut v = String::new();
    for (n, f) in &fs {
        match n {
            1 => k = string(f)?,
            2 => v = string(f)?,
            _ => {}
        }
    }
    Some((k, v))
}

fn object_meta(b: &[u8]) -> Option<Value> {
    let mut meta = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    for (n, f) in fields(b)? {
        let Field::Bytes(raw) = f else { continue };
        match n {
            1 => _ = meta.insert("name".into(), json!(string(&f)?)),
            2 => _ = meta.insert("generateName".into(), json!(string(&f)?)),
            3 => _ = meta.insert("namespace".into(), json!(string(&f)?)),
            11 => {
                let (k, v) = map_entry(raw)?;
                labels.insert(k, json!(v));
            }
            12 => {
                let (k, v) = map_entry(raw)?;
                annotations.insert(k, json!(v));
            }
            _ => {}
        }
    }
    meta.retain(|_, v| v.as_str() != Some(""));
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    Some(Value::Object(meta))
}

fn namespace(raw: &[u8]) -> Option<Value> {
    let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {}});
    for (n, f) in fields(raw)? {
        let Field::Bytes(b) = f else { continue };
        match n {
            1 => ns["metadata"] = object_meta(b)?,
            2 => {
                let fins: Vec<String> = fields(b)?
                    .iter()
                    .filter(|(n, _)| *n == 1)
                    .filter_map(|(_, f)| string(f))
                    .collect();
                if !fins.is_empty() {
                    ns["spec"] = json!({"finalizers": fins});
                }
            }
            _ => {}
        }
    }
    Some(ns)
}

/// Decodes a protobuf request body to the JSON form of the object.
pub fn decode(body: &[u8]) -> ApiResult<Value> {
    let inner = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("missing the k8s protobuf prefix"))?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, f) in fields(inner).ok_or_else(|| bad("malformed envelope"))? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (n, f) in fields(tm).ok_or_else(|| bad("malformed type meta"))? {
                    match n {
                        1 => api_version = string(&f).unwrap_or_default(),
                        2 => kind = string(&f).unwrap_or_default(),
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => namespace(raw).ok_or_else(|| bad("malformed Namespace")),
        _ => Err(ApiError::unsupported_media_type(&format!(
            "application/vnd.kubernetes.protobuf ({api_version}/{kind}); send this object as JSON or YAML"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_kubectl_create_namespace() {
        // Captured from `kubectl create namespace demo` (shared/spec/kubectl-wire.md §5.6).
        let hex = "6b3873000a0f0a02763112094e616d657370616365121c0a140a0464656d6f12001a00220
            02a0032003800420012001a020a001a002200";
        let hex: String = hex.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let v = decode(&bytes).unwrap();
        assert_eq!(v["kind"], "Namespace");
        assert_eq!(v["metadata"]["name"], "demo");
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert_eq!(decode(b"nope").unwrap_err().code, 400);
        assert_eq!(decode(b"k8s\0\xff\xff\xff").unwrap_err().code, 400);
    }
}
