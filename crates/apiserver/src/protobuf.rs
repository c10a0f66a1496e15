//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), which
//! kubectl's typed generators send (`kubectl create namespace`). The envelope is the magic
//! `k8s\0` followed by a `runtime.Unknown` message; inside it, the object's own message.
//!
//! Only the kinds kubectl's generators create for resources served here are decoded, with the
//! fields those generators set: ObjectMeta (name, generateName, namespace, labels, annotations)
//! and Namespace (spec.finalizers), Secret (data, type, stringData, immutable), ConfigMap (data,
//! binaryData, immutable), ServiceAccount (secrets, imagePullSecrets,
//! automountServiceAccountToken) and Service (`kubectl create service`: the whole spec but its
//! status). Anything else is 415.

use serde_json::{Map, Value, json};

use crate::errors::{ApiError, ApiResult};

const MAGIC: &[u8] = b"k8s\0";

/// One protobuf field: its number and its length-delimited payload or varint.
enum Field<'a> {
    Varint(u64),
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
                let v = varint(buf, &mut pos)?;
                out.push((num, Field::Varint(v)));
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
        Field::Varint(_) => None,
    }
}

fn boolean(f: &Field<'_>) -> Option<bool> {
    match f {
        Field::Varint(v) => Some(*v != 0),
        Field::Bytes(_) => None,
    }
}

fn bad(why: &str) -> ApiError {
    ApiError::bad_request(format!("the protobuf body could not be decoded: {why}"))
}

fn map_entry(b: &[u8]) -> Option<(String, String)> {
    let (k, v) = bytes_map_entry(b)?;
    Some((k, String::from_utf8(v).ok()?))
}

/// A `map<string, bytes>` entry; a missing value is empty.
fn bytes_map_entry(b: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut k = String::new();
    let mut v = Vec::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, f) => k = string(&f)?,
            (2, Field::Bytes(b)) => v = b.to_vec(),
            _ => {}
        }
    }
    Some((k, v))
}

/// Base64, the JSON form of protobuf `bytes`.
fn base64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Adds a map field to `obj` when it has entries.
fn put_map(obj: &mut Value, field: &str, map: Map<String, Value>) {
    if !map.is_empty() {
        obj[field] = Value::Object(map);
    }
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

fn secret(raw: &[u8]) -> Option<Value> {
    let mut secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {}});
    let mut data = Map::new();
    let mut string_data = Map::new();
    for (n, f) in fields(raw)? {
        match (n, &f) {
            (1, Field::Bytes(b)) => secret["metadata"] = object_meta(b)?,
            (2, Field::Bytes(b)) => {
                let (k, v) = bytes_map_entry(b)?;
                data.insert(k, json!(base64(&v)));
            }
            (3, Field::Bytes(_)) => {
                let t = string(&f)?;
                if !t.is_empty() {
                    secret["type"] = json!(t);
                }
            }
            (4, Field::Bytes(b)) => {
                let (k, v) = map_entry(b)?;
                string_data.insert(k, json!(v));
            }
            (5, Field::Varint(_)) => secret["immutable"] = json!(boolean(&f)?),
            _ => {}
        }
    }
    put_map(&mut secret, "data", data);
    put_map(&mut secret, "stringData", string_data);
    Some(secret)
}

fn config_map(raw: &[u8]) -> Option<Value> {
    let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}});
    let mut data = Map::new();
    let mut binary = Map::new();
    for (n, f) in fields(raw)? {
        match (n, &f) {
            (1, Field::Bytes(b)) => cm["metadata"] = object_meta(b)?,
            (2, Field::Bytes(b)) => {
                let (k, v) = map_entry(b)?;
                data.insert(k, json!(v));
            }
            (3, Field::Bytes(b)) => {
                let (k, v) = bytes_map_entry(b)?;
                binary.insert(k, json!(base64(&v)));
            }
            (4, Field::Varint(_)) => cm["immutable"] = json!(boolean(&f)?),
            _ => {}
        }
    }
    put_map(&mut cm, "data", data);
    put_map(&mut cm, "binaryData", binary);
    Some(cm)
}

/// A core/v1 `ObjectReference` (kind 1, namespace 2, name 3, uid 4, apiVersion 5,
/// resourceVersion 6, fieldPath 7), empty strings left out.
fn object_reference(raw: &[u8]) -> Option<Value> {
    const NAMES: [&str; 7] = [
        "kind",
        "namespace",
        "name",
        "uid",
        "apiVersion",
        "resourceVersion",
        "fieldPath",
    ];
    let mut r = Map::new();
    for (n, f) in fields(raw)? {
        if let (1..=7, Field::Bytes(_)) = (n, &f) {
            let v = string(&f)?;
            if !v.is_empty() {
                r.insert(NAMES[n as usize - 1].into(), json!(v));
            }
        }
    }
    Some(Value::Object(r))
}

fn service_account(raw: &[u8]) -> Option<Value> {
    let mut sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {}});
    let mut secrets = Vec::new();
    let mut pull = Vec::new();
    for (n, f) in fields(raw)? {
        match (n, &f) {
            (1, Field::Bytes(b)) => sa["metadata"] = object_meta(b)?,
            (2, Field::Bytes(b)) => secrets.push(object_reference(b)?),
            // A LocalObjectReference: only its name (field 1).
            (3, Field::Bytes(b)) => {
                let mut name = String::new();
                for (n, f) in fields(b)? {
                    if n == 1 {
                        name = string(&f)?;
                    }
                }
                pull.push(json!({"name": name}));
            }
            (4, Field::Varint(_)) => {
                sa["automountServiceAccountToken"] = json!(boolean(&f)?);
            }
            _ => {}
        }
    }
    if !secrets.is_empty() {
        sa["secrets"] = json!(secrets);
    }
    if !pull.is_empty() {
        sa["imagePullSecrets"] = json!(pull);
    }
    Some(sa)
}

fn int32(f: &Field<'_>) -> Option<i64> {
    match f {
        // int32 values travel as sign-extended varints.
        Field::Varint(v) => Some(i64::from(*v as i64 as i32)),
        Field::Bytes(_) => None,
    }
}

/// An `intstr.IntOrString` (type 1: 0 int, 1 string; intVal 2; strVal 3), as JSON.
fn int_or_string(raw: &[u8]) -> Option<Value> {
    let (mut ty, mut int_val, mut str_val) = (0, 0, String::new());
    for (n, f) in fields(raw)? {
        match n {
            1 => ty = int32(&f)?,
            2 => int_val = int32(&f)?,
            3 => str_val = string(&f)?,
            _ => {}
        }
    }
    Some(if ty == 1 {
        json!(str_val)
    } else {
        json!(int_val)
    })
}

/// A core/v1 `ServicePort`: name 1, protocol 2, port 3, targetPort 4, nodePort 5,
/// appProtocol 6 (a pointer, so sent only when set).
fn service_port(raw: &[u8]) -> Option<Value> {
    let mut p = json!({"port": 0});
    for (n, f) in fields(raw)? {
        match (n, &f) {
            (1, Field::Bytes(_)) => put_str(&mut p, "name", string(&f)?),
            (2, Field::Bytes(_)) => put_str(&mut p, "protocol", string(&f)?),
            (3, Field::Varint(_)) => p["port"] = json!(int32(&f)?),
            (4, Field::Bytes(b)) => p["targetPort"] = int_or_string(b)?,
            (5, Field::Varint(_)) => {
                let np = int32(&f)?;
                if np != 0 {
                    p["nodePort"] = json!(np);
                }
            }
            (6, Field::Bytes(_)) => p["appProtocol"] = json!(string(&f)?),
            _ => {}
        }
    }
    Some(p)
}

/// Sets a string field unless empty (Go's `omitempty` on a plain string).
fn put_str(obj: &mut Value, field: &str, v: String) {
    if !v.is_empty() {
        obj[field] = json!(v);
    }
}

/// A core/v1 `ServiceSpec`, with the field numbers of k8s.io/api's generated.proto.
fn service_spec(raw: &[u8]) -> Option<Value> {
    const PLAIN_STRINGS: [(u64, &str); 6] = [
        (3, "clusterIP"),
        (4, "type"),
        (7, "sessionAffinity"),
        (8, "loadBalancerIP"),
        (10, "externalName"),
        (11, "externalTrafficPolicy"),
    ];
    const POINTER_STRINGS: [(u64, &str); 4] = [
        (17, "ipFamilyPolicy"),
        (21, "loadBalancerClass"),
        (22, "internalTrafficPolicy"),
        (23, "trafficDistribution"),
    ];
    const STRING_LISTS: [(u64, &str); 4] = [
        (5, "externalIPs"),
        (9, "loadBalancerSourceRanges"),
        (18, "clusterIPs"),
        (19, "ipFamilies"),
    ];
    let mut spec = json!({});
    let mut ports = Vec::new();
    let mut selector = Map::new();
    let mut lists: Vec<(&str, Vec<Value>)> = Vec::new();
    for (n, f) in fields(raw)? {
        if let Some((_, name)) = PLAIN_STRINGS.iter().find(|(k, _)| *k == n) {
            put_str(&mut spec, name, string(&f)?);
            continue;
        }
        if let Some((_, name)) = POINTER_STRINGS.iter().find(|(k, _)| *k == n) {
            spec[*name] = json!(string(&f)?);
            continue;
        }
        if let Some((_, name)) = STRING_LISTS.iter().find(|(k, _)| *k == n) {
            let item = json!(string(&f)?);
            match lists.iter_mut().find(|(l, _)| l == name) {
                Some((_, items)) => items.push(item),
                None => lists.push((name, vec![item])),
            }
            continue;
        }
        match (n, &f) {
            (1, Field::Bytes(b)) => ports.push(service_port(b)?),
            (2, Field::Bytes(b)) => {
                let (k, v) = map_entry(b)?;
                selector.insert(k, json!(v));
            }
            (12, Field::Varint(_)) => {
                let p = int32(&f)?;
                if p != 0 {
                    spec["healthCheckNodePort"] = json!(p);
                }
            }
            (13, Field::Varint(v)) if *v != 0 => {
                spec["publishNotReadyAddresses"] = json!(true);
            }
            (14, Field::Bytes(b)) => {
                let mut config = json!({});
                for (n, f) in fields(b)? {
                    if let (1, Field::Bytes(c)) = (n, &f) {
                        let mut client_ip = json!({});
                        for (n, f) in fields(c)? {
                            if n == 1 {
                                client_ip["timeoutSeconds"] = json!(int32(&f)?);
                            }
                        }
                        config["clientIP"] = client_ip;
                    }
                }
                spec["sessionAffinityConfig"] = config;
            }
            (20, Field::Varint(_)) => {
                spec["allocateLoadBalancerNodePorts"] = json!(boolean(&f)?);
            }
            _ => {}
        }
    }
    if !ports.is_empty() {
        spec["ports"] = json!(ports);
    }
    put_map(&mut spec, "selector", selector);
    for (name, items) in lists {
        spec[name] = json!(items);
    }
    Some(spec)
}

fn service(raw: &[u8]) -> Option<Value> {
    let mut svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {}});
    for (n, f) in fields(raw)? {
        match (n, &f) {
            (1, Field::Bytes(b)) => svc["metadata"] = object_meta(b)?,
            (2, Field::Bytes(b)) => svc["spec"] = service_spec(b)?,
            // The status is the server's.
            _ => {}
        }
    }
    Some(svc)
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
        ("v1", "Secret") => secret(raw).ok_or_else(|| bad("malformed Secret")),
        ("v1", "ConfigMap") => config_map(raw).ok_or_else(|| bad("malformed ConfigMap")),
        ("v1", "ServiceAccount") => {
            service_account(raw).ok_or_else(|| bad("malformed ServiceAccount"))
        }
        ("v1", "Service") => service(raw).ok_or_else(|| bad("malformed Service")),
        _ => Err(ApiError::unsupported_media_type(&format!(
            "application/vnd.kubernetes.protobuf ({api_version}/{kind}); send this object as JSON or YAML"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    fn varint_bytes(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    /// A length-delimited field.
    fn ld(num: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = varint_bytes((u64::from(num) << 3) | 2);
        out.extend(varint_bytes(payload.len() as u64));
        out.extend_from_slice(payload);
        out
    }

    fn entry(k: &str, v: &[u8]) -> Vec<u8> {
        [ld(1, k.as_bytes()), ld(2, v)].concat()
    }

    /// The envelope kubectl sends around an object's message.
    fn envelope(kind: &str, raw: &[u8]) -> Vec<u8> {
        let tm = [ld(1, b"v1"), ld(2, kind.as_bytes())].concat();
        [
            b"k8s\0".to_vec(),
            ld(1, &tm),
            ld(2, raw),
            ld(3, b""),
            ld(4, b""),
        ]
        .concat()
    }

    fn meta(name: &str) -> Vec<u8> {
        [
            ld(1, name.as_bytes()),
            ld(2, b""),
            ld(3, b"default"),
            ld(11, &entry("app", b"web")),
            ld(12, &entry("note", b"hi")),
        ]
        .concat()
    }

    #[test]
    fn decodes_secrets() {
        let raw = [
            ld(1, &meta("s")),
            ld(2, &entry("bin", &[0, 1, 2])),
            ld(2, &entry("empty", b"")),
            ld(3, b"kubernetes.io/basic-auth"),
            ld(4, &entry("user", b"me")),
            vec![5 << 3, 1],
        ]
        .concat();
        let v = decode(&envelope("Secret", &raw)).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "s", "namespace": "default",
                                "labels": {"app": "web"}, "annotations": {"note": "hi"}},
                   "data": {"bin": "AAEC", "empty": ""}, "type": "kubernetes.io/basic-auth",
                   "stringData": {"user": "me"}, "immutable": true})
        );
        // kubectl always sends type, empty when --type was not given.
        let v = decode(&envelope(
            "Secret",
            &[ld(1, &meta("s")), ld(3, b"")].concat(),
        ))
        .unwrap();
        assert!(v.get("type").is_none() && v.get("data").is_none());
    }

    #[test]
    fn decodes_config_maps() {
        let raw = [
            ld(1, &meta("c")),
            ld(2, &entry("k", b"v")),
            ld(3, &entry("b", &[255])),
            vec![4 << 3, 0],
        ]
        .concat();
        let v = decode(&envelope("ConfigMap", &raw)).unwrap();
        assert_eq!(v["data"], json!({"k": "v"}));
        assert_eq!(v["binaryData"], json!({"b": "/w=="}));
        assert_eq!(v["immutable"], json!(false));
        assert_eq!(v["metadata"]["name"], "c");
    }

    #[test]
    fn decodes_service_accounts() {
        let reference = [ld(1, b"Secret"), ld(3, b"tok"), ld(4, b"")].concat();
        let raw = [
            ld(1, &meta("robot")),
            ld(2, &reference),
            ld(3, &ld(1, b"pull")),
            vec![4 << 3, 0],
        ]
        .concat();
        let v = decode(&envelope("ServiceAccount", &raw)).unwrap();
        assert_eq!(v["secrets"], json!([{"kind": "Secret", "name": "tok"}]));
        assert_eq!(v["imagePullSecrets"], json!([{"name": "pull"}]));
        assert_eq!(v["automountServiceAccountToken"], json!(false));
        assert_eq!(v["metadata"]["name"], "robot");
    }

    #[test]
    fn other_kinds_are_unsupported() {
        let e = decode(&envelope("Pod", &ld(1, &meta("x")))).unwrap_err();
        assert_eq!(e.code, 415);
    }

    fn varint_field(num: u8, v: u64) -> Vec<u8> {
        [varint_bytes(u64::from(num) << 3), varint_bytes(v)].concat()
    }

    #[test]
    fn decodes_kubectl_create_service() {
        // What `kubectl create service nodeport web --tcp=80:8080` sends: every plain field,
        // empty ones included; pointers only when set.
        let target = [varint_field(1, 0), varint_field(2, 8080), ld(3, b"")].concat();
        let port = [
            ld(1, b"80-8080"),
            ld(2, b"TCP"),
            varint_field(3, 80),
            ld(4, &target),
            varint_field(5, 0),
        ]
        .concat();
        let named_target = [varint_field(1, 1), varint_field(2, 0), ld(3, b"http")].concat();
        let port2 = [
            ld(1, b"b"),
            ld(2, b"UDP"),
            varint_field(3, 53),
            ld(4, &named_target),
            varint_field(5, 30053),
            ld(6, b"dns"),
        ]
        .concat();
        let spec = [
            ld(1, &port),
            ld(1, &port2),
            ld(2, &entry("app", b"web")),
            ld(3, b""),
            ld(4, b"NodePort"),
            ld(7, b""),
            ld(8, b""),
            ld(10, b""),
            ld(11, b""),
            varint_field(12, 0),
            varint_field(13, 0),
            ld(17, b"SingleStack"),
            ld(18, b"10.96.0.9"),
            ld(19, b"IPv4"),
        ]
        .concat();
        let status = ld(1, b"");
        let raw = [ld(1, &meta("web")), ld(2, &spec), ld(3, &status)].concat();
        let v = decode(&envelope("Service", &raw)).unwrap();
        assert_eq!(
            v["spec"],
            json!({"type": "NodePort", "selector": {"app": "web"}, "ipFamilyPolicy": "SingleStack",
                   "clusterIPs": ["10.96.0.9"], "ipFamilies": ["IPv4"],
                   "ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080},
                             {"name": "b", "protocol": "UDP", "port": 53, "targetPort": "http",
                              "nodePort": 30053, "appProtocol": "dns"}]})
        );
        assert_eq!(v["metadata"]["name"], "web");
        assert!(v.get("status").is_none());
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert_eq!(decode(b"nope").unwrap_err().code, 400);
        assert_eq!(decode(b"k8s\0\xff\xff\xff").unwrap_err().code, 400);
    }
}
