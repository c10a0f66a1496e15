//! Validation of the configuration kinds of core/v1: Secret, ConfigMap and ServiceAccount, on
//! create and on update, with Kubernetes' field paths and messages.
//!
//! The functions expect the API server's internal form: a Secret's `stringData` has already been
//! merged into `data` (see [`merge_string_data`]) and its `type` defaulted, as Kubernetes does
//! while decoding, so keys that came from `stringData` are reported under `data[...]`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};

use super::errors::{FieldError, FieldPath, go_quote};
use super::meta::{validate_object_meta, validate_object_meta_update};
use super::names::{is_config_map_key, is_dns1123_subdomain};

/// The most bytes a Secret's data or a ConfigMap's data plus binaryData may hold (1 MiB).
pub const MAX_SECRET_SIZE: usize = 1024 * 1024;

/// Secret types with rules of their own, and the keys those rules name.
pub const SECRET_TYPE_OPAQUE: &str = "Opaque";
pub const SECRET_TYPE_SERVICE_ACCOUNT_TOKEN: &str = "kubernetes.io/service-account-token";
pub const SECRET_TYPE_DOCKERCFG: &str = "kubernetes.io/dockercfg";
pub const SECRET_TYPE_DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
pub const SECRET_TYPE_BASIC_AUTH: &str = "kubernetes.io/basic-auth";
pub const SECRET_TYPE_SSH_AUTH: &str = "kubernetes.io/ssh-auth";
pub const SECRET_TYPE_TLS: &str = "kubernetes.io/tls";

const SERVICE_ACCOUNT_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
const DOCKERCFG_KEY: &str = ".dockercfg";
const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
const BASIC_AUTH_USERNAME_KEY: &str = "username";
const BASIC_AUTH_PASSWORD_KEY: &str = "password";
const SSH_AUTH_PRIVATE_KEY: &str = "ssh-privatekey";
const TLS_CERT_KEY: &str = "tls.crt";
const TLS_PRIVATE_KEY_KEY: &str = "tls.key";

const IMMUTABLE_SET: &str = "field is immutable when `immutable` is set";
const REDACTED: &str = "<secret contents redacted>";

/// What the v1 → internal conversion of a Secret does: every `stringData` entry is written into
/// `data` (winning over a `data` entry of the same key), `stringData` is dropped, and an empty
/// `type` becomes `Opaque`.
pub fn merge_string_data(secret: &mut Secret) {
    if let Some(string_data) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        for (k, v) in string_data {
            data.insert(k, ByteString(v.into_bytes()));
        }
    }
    if secret.type_.as_deref().unwrap_or_default().is_empty() {
        secret.type_ = Some(SECRET_TYPE_OPAQUE.to_string());
    }
}

/// Secret validation (`ValidateSecret`): a namespaced DNS-1123 subdomain name, valid data keys,
/// at most [`MAX_SECRET_SIZE`] bytes of data, and the keys each well-known type requires.
pub fn validate_secret(secret: &Secret) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&secret.metadata, true, is_dns1123_subdomain);
    let data_path = FieldPath::new("data");
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let mut total = 0;
    for (key, value) in data {
        errs.extend(key_errors(key, &data_path));
        total += value.0.len();
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long(&data_path, MAX_SECRET_SIZE));
    }
    let required = |key: &str| FieldError::required(data_path.key(key), "");
    match secret.type_.as_deref().unwrap_or_default() {
        SECRET_TYPE_SERVICE_ACCOUNT_TOKEN => {
            let named = secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SERVICE_ACCOUNT_NAME_ANNOTATION))
                .is_some_and(|v| !v.is_empty());
            if !named {
                errs.push(FieldError::required(
                    FieldPath::new("metadata")
                        .child("annotations")
                        .key(SERVICE_ACCOUNT_NAME_ANNOTATION),
                    "",
                ));
            }
        }
        SECRET_TYPE_DOCKERCFG | SECRET_TYPE_DOCKER_CONFIG_JSON => {
            let key = if secret.type_.as_deref() == Some(SECRET_TYPE_DOCKERCFG) {
                DOCKERCFG_KEY
            } else {
                DOCKER_CONFIG_JSON_KEY
            };
            match data.get(key) {
                None => errs.push(required(key)),
                Some(bytes) => {
                    if let Some(msg) = go_json_object_error(&bytes.0) {
                        errs.push(FieldError::invalid(data_path.key(key), REDACTED, msg));
                    }
                }
            }
        }
        // Either may be empty, but one of the two must be there.
        SECRET_TYPE_BASIC_AUTH
            if !data.contains_key(BASIC_AUTH_USERNAME_KEY)
                && !data.contains_key(BASIC_AUTH_PASSWORD_KEY) =>
        {
            errs.push(required(BASIC_AUTH_USERNAME_KEY));
            errs.push(required(BASIC_AUTH_PASSWORD_KEY));
        }
        SECRET_TYPE_SSH_AUTH
            if data
                .get(SSH_AUTH_PRIVATE_KEY)
                .is_none_or(|v| v.0.is_empty()) =>
        {
            errs.push(required(SSH_AUTH_PRIVATE_KEY));
        }
        SECRET_TYPE_TLS => {
            for key in [TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY] {
                if !data.contains_key(key) {
                    errs.push(required(key));
                }
            }
        }
        _ => {}
    }
    errs
}

/// Secret update validation (`ValidateSecretUpdate`): the metadata update rules, `type` is
/// immutable, an immutable Secret keeps its data and stays immutable, and the new object must
/// be a valid Secret.
pub fn validate_secret_update(new: &Secret, old: &Secret) -> Vec<FieldError> {
    let mut errs = validate_object_meta_update(&new.metadata, &old.metadata);
    let (new_type, old_type) = (
        new.type_.as_deref().unwrap_or_default(),
        old.type_.as_deref().unwrap_or_default(),
    );
    if new_type != old_type {
        errs.push(FieldError::invalid("type", new_type, "field is immutable"));
    }
    if old.immutable == Some(true) {
        if new.immutable != Some(true) {
            errs.push(FieldError::forbidden("immutable", IMMUTABLE_SET));
        }
        if !same_map(new.data.as_ref(), old.data.as_ref()) {
            errs.push(FieldError::forbidden("data", IMMUTABLE_SET));
        }
    }
    errs.extend(validate_secret(new));
    errs
}

/// ConfigMap validation (`ValidateConfigMap`): a namespaced DNS-1123 subdomain name, valid keys
/// in `data` and `binaryData`, no key in both, and at most [`MAX_SECRET_SIZE`] bytes in all.
pub fn validate_config_map(cm: &ConfigMap) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&cm.metadata, true, is_dns1123_subdomain);
    let (data_path, binary_path) = (FieldPath::new("data"), FieldPath::new("binaryData"));
    let empty_data = BTreeMap::new();
    let empty_binary = BTreeMap::new();
    let data = cm.data.as_ref().unwrap_or(&empty_data);
    let binary = cm.binary_data.as_ref().unwrap_or(&empty_binary);
    let mut total = 0;
    for (key, value) in data {
        errs.extend(key_errors(key, &data_path));
        if binary.contains_key(key) {
            errs.push(FieldError::invalid(
                data_path.key(key),
                key.as_str(),
                "duplicate of key present in binaryData",
            ));
        }
        total += value.len();
    }
    for (key, value) in binary {
        errs.extend(key_errors(key, &binary_path));
        total += value.0.len();
    }
    if total > MAX_SECRET_SIZE {
        // Kubernetes reports this against the whole object: an empty field path.
        errs.push(FieldError::too_long("", MAX_SECRET_SIZE));
    }
    errs
}

/// ConfigMap update validation (`ValidateConfigMapUpdate`).
pub fn validate_config_map_update(new: &ConfigMap, old: &ConfigMap) -> Vec<FieldError> {
    let mut errs = validate_object_meta_update(&new.metadata, &old.metadata);
    if old.immutable == Some(true) {
        if new.immutable != Some(true) {
            errs.push(FieldError::forbidden("immutable", IMMUTABLE_SET));
        }
        if !same_map(new.data.as_ref(), old.data.as_ref()) {
            errs.push(FieldError::forbidden("data", IMMUTABLE_SET));
        }
        if !same_map(new.binary_data.as_ref(), old.binary_data.as_ref()) {
            errs.push(FieldError::forbidden("binaryData", IMMUTABLE_SET));
        }
    }
    errs.extend(validate_config_map(new));
    errs
}

/// ServiceAccount validation: only the metadata (a namespaced DNS-1123 subdomain name).
pub fn validate_service_account(sa: &ServiceAccount) -> Vec<FieldError> {
    validate_object_meta(&sa.metadata, true, is_dns1123_subdomain)
}

/// ServiceAccount update validation.
pub fn validate_service_account_update(
    new: &ServiceAccount,
    old: &ServiceAccount,
) -> Vec<FieldError> {
    let mut errs = validate_object_meta_update(&new.metadata, &old.metadata);
    errs.extend(validate_service_account(new));
    errs
}

fn key_errors(key: &str, path: &FieldPath) -> Vec<FieldError> {
    is_config_map_key(key)
        .into_iter()
        .map(|msg| FieldError::invalid(path.key(key), key, msg))
        .collect()
}

/// Map equality where an absent map and an empty one are the same (they are after a round trip
/// through storage).
fn same_map<V: PartialEq>(
    a: Option<&BTreeMap<String, V>>,
    b: Option<&BTreeMap<String, V>>,
) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        (Some(m), None) | (None, Some(m)) => m.is_empty(),
        (None, None) => true,
    }
}

/// Why `bytes` would not unmarshal into a Go `map[string]interface{}`, in the words of Go's
/// `encoding/json`; None when it would (a JSON object, or `null`).
pub fn go_json_object_error(bytes: &[u8]) -> Option<String> {
    let mut s = GoJsonScan { b: bytes, pos: 0 };
    s.skip_space();
    let first = s.peek();
    if let Err(e) = s.value().and_then(|_| s.end()) {
        return Some(e.message());
    }
    let found = match first {
        Some(b'{') | Some(b'n') => return None,
        Some(b'[') => "array",
        Some(b'"') => "string",
        Some(b't' | b'f') => "bool",
        _ => "number",
    };
    Some(format!(
        "json: cannot unmarshal {found} into Go value of type map[string]interface {{}}"
    ))
}

/// A syntax error as Go's scanner words it: the offending byte and where it was met, or the
/// input ending early.
enum GoJsonError {
    End,
    Char(u8, String),
}

impl GoJsonError {
    fn message(&self) -> String {
        match self {
            GoJsonError::End => "unexpected end of JSON input".to_string(),
            GoJsonError::Char(c, context) => {
                format!("invalid character {} {context}", quote_byte(*c))
            }
        }
    }
}

/// Go's `quoteChar`: the byte as a one-character Go literal in single quotes.
fn quote_byte(c: u8) -> String {
    match c {
        b'\'' => "'\\''".to_string(),
        b'"' => "'\"'".to_string(),
        _ => {
            let q = go_quote(&char::from(c).to_string());
            format!("'{}'", &q[1..q.len() - 1])
        }
    }
}

/// A syntax checker over JSON bytes following the states of Go's `encoding/json` scanner, so
/// that the first error found is the one Go reports.
struct GoJsonScan<'a> {
    b: &'a [u8],
    pos: usize,
}

type Scan = Result<(), GoJsonError>;

impl GoJsonScan<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn next(&mut self) -> Result<u8, GoJsonError> {
        let c = self.peek().ok_or(GoJsonError::End)?;
        self.pos += 1;
        Ok(c)
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    /// After the top-level value: only white space may follow.
    fn end(&mut self) -> Scan {
        self.skip_space();
        match self.peek() {
            None => Ok(()),
            Some(c) => Err(GoJsonError::Char(c, "after top-level value".into())),
        }
    }

    fn value(&mut self) -> Scan {
        self.skip_space();
        let c = self.next()?;
        match c {
            b'{' => self.object(),
            b'[' => self.array(),
            b'"' => self.string(),
            b'-' | b'0'..=b'9' => self.number(c),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            _ => Err(GoJsonError::Char(
                c,
                "looking for beginning of value".into(),
            )),
        }
    }

    fn literal(&mut self, name: &str) -> Scan {
        for &want in &name.as_bytes()[1..] {
            let c = self.next()?;
            if c != want {
                let context = format!("in literal {name} (expecting {})", quote_byte(want));
                return Err(GoJsonError::Char(c, context));
            }
        }
        Ok(())
    }

    fn object(&mut self) -> Scan {
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_space();
            let c = self.next()?;
            if c != b'"' {
                return Err(GoJsonError::Char(
                    c,
                    "looking for beginning of object key string".into(),
                ));
            }
            self.string()?;
            self.skip_space();
            let c = self.next()?;
            if c != b':' {
                return Err(GoJsonError::Char(c, "after object key".into()));
            }
            self.value()?;
            self.skip_space();
            match self.next()? {
                b',' => continue,
                b'}' => return Ok(()),
                c => return Err(GoJsonError::Char(c, "after object key:value pair".into())),
            }
        }
    }

    fn array(&mut self) -> Scan {
        self.skip_space();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.value()?;
            self.skip_space();
            match self.next()? {
                b',' => continue,
                b']' => return Ok(()),
                c => return Err(GoJsonError::Char(c, "after array element".into())),
            }
        }
    }

    /// The rest of a string after its opening quote.
    fn string(&mut self) -> Scan {
        loop {
            match self.next()? {
                b'"' => return Ok(()),
                b'\\' => match self.next()? {
                    b'b' | b'f' | b'n' | b'r' | b't' | b'\\' | b'/' | b'"' => {}
                    b'u' => {
                        for _ in 0..4 {
                            let h = self.next()?;
                            if !h.is_ascii_hexdigit() {
                                return Err(GoJsonError::Char(
                                    h,
                                    "in \\u hexadecimal character escape".into(),
                                ));
                            }
                        }
                    }
                    c => return Err(GoJsonError::Char(c, "in string escape code".into())),
                },
                c if c < 0x20 => return Err(GoJsonError::Char(c, "in string literal".into())),
                _ => {}
            }
        }
    }

    /// The rest of a number after its first byte. A number may end the input.
    fn number(&mut self, first: u8) -> Scan {
        let mut c = first;
        if c == b'-' {
            c = self.next()?;
            if !c.is_ascii_digit() {
                return Err(GoJsonError::Char(c, "in numeric literal".into()));
            }
        }
        if c != b'0' {
            while self.peek().is_some_and(|d| d.is_ascii_digit()) {
                self.pos += 1;
            }
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            let d = self.next()?;
            if !d.is_ascii_digit() {
                return Err(GoJsonError::Char(
                    d,
                    "after decimal point in numeric literal".into(),
                ));
            }
            while self.peek().is_some_and(|d| d.is_ascii_digit()) {
                self.pos += 1;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            let mut d = self.next()?;
            if d == b'+' || d == b'-' {
                d = self.next()?;
            }
            if !d.is_ascii_digit() {
                return Err(GoJsonError::Char(
                    d,
                    "in exponent of numeric literal".into(),
                ));
            }
            while self.peek().is_some_and(|d| d.is_ascii_digit()) {
                self.pos += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        }
    }

    fn secret(type_: &str, data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: meta("s"),
            type_: Some(type_.into()),
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn texts(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn string_data_is_merged_and_type_defaulted() {
        let mut s = secret("", &[("a", "old"), ("b", "keep")]);
        s.string_data = Some([("a".to_string(), "new".to_string())].into());
        merge_string_data(&mut s);
        assert!(s.string_data.is_none());
        let data = s.data.unwrap();
        assert_eq!(data["a"].0, b"new");
        assert_eq!(data["b"].0, b"keep");
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
    }

    #[test]
    fn bad_keys_get_kubernetes_messages() {
        let s = secret("Opaque", &[("a b", "x"), ("..", "y")]);
        assert_eq!(
            texts(&validate_secret(&s)),
            [
                "data[..]: Invalid value: \"..\": must not be '..'",
                "data[a b]: Invalid value: \"a b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
            ]
        );
    }

    #[test]
    fn type_specific_rules() {
        let t = |ty: &str, data: &[(&str, &str)]| texts(&validate_secret(&secret(ty, data)));
        assert_eq!(
            t(SECRET_TYPE_TLS, &[("tls.crt", "c")]),
            ["data[tls.key]: Required value"]
        );
        assert_eq!(
            t(SECRET_TYPE_BASIC_AUTH, &[]),
            [
                "data[username]: Required value",
                "data[password]: Required value"
            ]
        );
        assert!(t(SECRET_TYPE_BASIC_AUTH, &[("password", "")]).is_empty());
        assert_eq!(
            t(SECRET_TYPE_SSH_AUTH, &[("ssh-privatekey", "")]),
            ["data[ssh-privatekey]: Required value"]
        );
        assert_eq!(
            t(SECRET_TYPE_DOCKER_CONFIG_JSON, &[]),
            ["data[.dockerconfigjson]: Required value"]
        );
        assert_eq!(
            t(
                SECRET_TYPE_DOCKER_CONFIG_JSON,
                &[(".dockerconfigjson", "{\"auths\":")]
            ),
            [
                "data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": unexpected end of JSON input"
            ]
        );
        assert!(
            t(
                SECRET_TYPE_DOCKER_CONFIG_JSON,
                &[(".dockerconfigjson", "{\"auths\":{}}")]
            )
            .is_empty()
        );
        assert_eq!(
            t(SECRET_TYPE_DOCKERCFG, &[(".dockercfg", "[]")]),
            [
                "data[.dockercfg]: Invalid value: \"<secret contents redacted>\": json: cannot unmarshal array into Go value of type map[string]interface {}"
            ]
        );
        assert_eq!(
            t(SECRET_TYPE_SERVICE_ACCOUNT_TOKEN, &[]),
            ["metadata.annotations[kubernetes.io/service-account.name]: Required value"]
        );
        assert!(t("example.com/custom", &[]).is_empty());
    }

    #[test]
    fn size_limits() {
        let big = "x".repeat(MAX_SECRET_SIZE + 1);
        assert_eq!(
            texts(&validate_secret(&secret("Opaque", &[("k", &big)]))),
            ["data: Too long: must have at most 1048576 bytes"]
        );
        let cm = ConfigMap {
            metadata: meta("c"),
            data: Some([("a".to_string(), big)].into()),
            ..Default::default()
        };
        assert_eq!(
            texts(&validate_config_map(&cm)),
            [": Too long: must have at most 1048576 bytes"]
        );
    }

    #[test]
    fn config_map_duplicate_key() {
        let cm = ConfigMap {
            metadata: meta("c"),
            data: Some([("k".to_string(), "v".to_string())].into()),
            binary_data: Some([("k".to_string(), ByteString(vec![1]))].into()),
            ..Default::default()
        };
        assert_eq!(
            texts(&validate_config_map(&cm)),
            ["data[k]: Invalid value: \"k\": duplicate of key present in binaryData"]
        );
    }

    #[test]
    fn names_are_dns_subdomains() {
        let sa = ServiceAccount {
            metadata: meta("Bad_Name"),
            ..Default::default()
        };
        let errs = validate_service_account(&sa);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "metadata.name");
    }

    #[test]
    fn immutable_objects_keep_their_data() {
        let mut old = secret("Opaque", &[("a", "1")]);
        old.immutable = Some(true);
        old.metadata.resource_version = Some("5".into());
        let mut new = secret("Opaque", &[("a", "2")]);
        new.metadata.resource_version = Some("5".into());
        assert_eq!(
            texts(&validate_secret_update(&new, &old)),
            [
                "immutable: Forbidden: field is immutable when `immutable` is set",
                "data: Forbidden: field is immutable when `immutable` is set",
            ]
        );
        let mut same = old.clone();
        same.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
        assert!(validate_secret_update(&same, &old).is_empty());

        let mut tls = secret(SECRET_TYPE_TLS, &[("tls.crt", ""), ("tls.key", "")]);
        tls.metadata.resource_version = Some("5".into());
        let mut opaque = tls.clone();
        opaque.type_ = Some("Opaque".into());
        assert_eq!(
            texts(&validate_secret_update(&opaque, &tls)),
            ["type: Invalid value: \"Opaque\": field is immutable"]
        );

        let old_cm = ConfigMap {
            metadata: ObjectMeta {
                resource_version: Some("5".into()),
                ..meta("c")
            },
            immutable: Some(true),
            binary_data: Some([("b".to_string(), ByteString(vec![1]))].into()),
            ..Default::default()
        };
        let mut new_cm = old_cm.clone();
        new_cm.binary_data = None;
        new_cm.immutable = None;
        assert_eq!(
            texts(&validate_config_map_update(&new_cm, &old_cm)),
            [
                "immutable: Forbidden: field is immutable when `immutable` is set",
                "binaryData: Forbidden: field is immutable when `immutable` is set",
            ]
        );
    }

    #[test]
    fn go_json_messages() {
        let e = |s: &str| go_json_object_error(s.as_bytes());
        assert_eq!(e("{\"a\": [1, 2.5e3, true, null, \"x\\n\"]}"), None);
        assert_eq!(e(" null "), None);
        assert_eq!(e("").unwrap(), "unexpected end of JSON input");
        assert_eq!(
            e("{a}").unwrap(),
            "invalid character 'a' looking for beginning of object key string"
        );
        assert_eq!(
            e("{\"a\" 1}").unwrap(),
            "invalid character '1' after object key"
        );
        assert_eq!(
            e("{\"a\":1 \"b\"}").unwrap(),
            "invalid character '\"' after object key:value pair"
        );
        assert_eq!(
            e("{} x").unwrap(),
            "invalid character 'x' after top-level value"
        );
        assert_eq!(
            e("{\"a\":tru}").unwrap(),
            "invalid character '}' in literal true (expecting 'e')"
        );
        assert_eq!(
            e("{\"a\":nil}").unwrap(),
            "invalid character 'i' in literal null (expecting 'u')"
        );
        assert_eq!(
            e("{\"a\":1.}").unwrap(),
            "invalid character '}' after decimal point in numeric literal"
        );
        assert_eq!(
            e("'a'").unwrap(),
            "invalid character '\\'' looking for beginning of value"
        );
        assert_eq!(
            e("\"s\"").unwrap(),
            "json: cannot unmarshal string into Go value of type map[string]interface {}"
        );
        assert_eq!(
            e("12").unwrap(),
            "json: cannot unmarshal number into Go value of type map[string]interface {}"
        );
    }
}
