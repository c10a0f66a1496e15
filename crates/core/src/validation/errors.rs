//! Kubernetes' per-field validation error (`field.Error` in apimachinery) and the exact text it
//! renders to. kubectl prints these strings verbatim, so the quoting rules matter: string values
//! are Go-quoted (`%q`), numbers and booleans are printed plainly, and the detail follows a colon.

use serde_json::Value;
use std::collections::HashSet;
use std::fmt;

/// Why a field was rejected. Each variant maps 1-1 to a `StatusCause.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    Forbidden,
    TooLong,
    TooMany,
    NotFound,
}

impl ErrorType {
    /// The machine-readable cause reason (`FieldValueRequired`, ...).
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
            ErrorType::NotFound => "FieldValueNotFound",
        }
    }

    /// The human-readable label that starts every message (`Required value`, ...).
    pub fn label(self) -> &'static str {
        match self {
            ErrorType::Required => "Required value",
            ErrorType::Invalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
            ErrorType::NotFound => "Not found",
        }
    }

    /// Types whose message never shows the offending value.
    fn hides_value(self) -> bool {
        matches!(
            self,
            ErrorType::Required | ErrorType::Forbidden | ErrorType::TooLong
        )
    }
}

/// The key of the one-entry JSON object that [`go_literal`] builds.
const GO_LITERAL_KEY: &str = "$goLiteral";

/// Wraps text that must appear in a message exactly as given, unquoted. Kubernetes prints some
/// values with Go's `%#v` or a `String()` method (`core.Taint{Key:"k", ...}`, quantities, times);
/// pass such a rendering as the `bad_value` through this function.
pub fn go_literal(text: impl Into<String>) -> Value {
    let mut map = serde_json::Map::new();
    map.insert(GO_LITERAL_KEY.to_string(), Value::String(text.into()));
    Value::Object(map)
}

/// One validation failure of one field.
///
/// `bad_value` is `None` when the message must not show a value (Go's `omitValue`); `Some(Null)`
/// prints `null`. Values built with [`go_literal`] print verbatim.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub error_type: ErrorType,
    pub field: String,
    pub bad_value: Option<Value>,
    pub detail: String,
}

impl FieldError {
    fn build(
        error_type: ErrorType,
        field: impl Into<String>,
        value: Option<Value>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            error_type,
            field: field.into(),
            bad_value: value,
            detail: detail.into(),
        }
    }

    /// A required value is missing (`Required value`).
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::build(
            ErrorType::Required,
            field,
            Some(Value::String(String::new())),
            detail,
        )
    }

    /// A value is malformed (`Invalid value: "x": detail`).
    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<Value>,
        detail: impl Into<String>,
    ) -> Self {
        Self::build(ErrorType::Invalid, field, Some(value.into()), detail)
    }

    /// A value is not one of an enumeration (`Unsupported value: "x": supported values: "a", "b"`).
    pub fn not_supported(
        field: impl Into<String>,
        value: impl Into<Value>,
        supported: &[&str],
    ) -> Self {
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        Self::build(ErrorType::NotSupported, field, Some(value.into()), detail)
    }

    /// A value that must be unique is repeated (`Duplicate value: "x"`).
    pub fn duplicate(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::build(ErrorType::Duplicate, field, Some(value.into()), "")
    }

    /// A valid value is not allowed here (`Forbidden: detail`).
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::build(
            ErrorType::Forbidden,
            field,
            Some(Value::String(String::new())),
            detail,
        )
    }

    /// A value exceeds a byte length (`Too long: must have at most N bytes`).
    pub fn too_long(field: impl Into<String>, max_bytes: usize) -> Self {
        let detail = format!("must have at most {max_bytes} bytes");
        Self::build(
            ErrorType::TooLong,
            field,
            Some(Value::String(String::new())),
            detail,
        )
    }

    /// A list has too many items (`Too many: 5: must have at most 3 items`).
    pub fn too_many(field: impl Into<String>, actual: Option<usize>, max: Option<usize>) -> Self {
        let detail = match max {
            Some(m) => format!("must have at most {m} items"),
            None => "has too many items".to_string(),
        };
        Self::build(ErrorType::TooMany, field, actual.map(Value::from), detail)
    }

    /// A referenced value does not exist (`Not found: "x"`).
    pub fn not_found(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::build(ErrorType::NotFound, field, Some(value.into()), "")
    }

    /// Replaces the detail (Kubernetes does this for a few `Duplicate`/`NotFound` errors).
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// The cause reason Kubernetes puts in `Status.details.causes[].reason`.
    pub fn reason(&self) -> &'static str {
        self.error_type.reason()
    }

    /// The cause message, exactly as `field.Error.ErrorBody()` renders it.
    pub fn message(&self) -> String {
        let label = self.error_type.label();
        let mut out = match (&self.bad_value, self.error_type.hides_value()) {
            (Some(value), false) => format!("{label}: {}", render_value(value)),
            _ => label.to_string(),
        };
        if !self.detail.is_empty() {
            out.push_str(": ");
            out.push_str(&self.detail);
        }
        out
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message())
    }
}

impl std::error::Error for FieldError {}

/// The `message` of a 422 `Invalid` Status: `Pod "bad" is invalid: <errors>`, where one error is
/// printed bare and several are joined as `[a, b]` (duplicates dropped), as `errors.NewInvalid`
/// does. `kind` is the qualified kind: `Pod`, or `Lease.coordination.k8s.io` for grouped kinds.
pub fn invalid_message(kind: &str, name: &str, errs: &[FieldError]) -> String {
    let mut seen = HashSet::new();
    let messages: Vec<String> = errs
        .iter()
        .map(|e| e.to_string())
        .filter(|m| seen.insert(m.clone()))
        .collect();
    let aggregate = match messages.len() {
        0 => "<nil>".to_string(),
        1 => messages[0].clone(),
        _ => format!("[{}]", messages.join(", ")),
    };
    format!("{kind} {} is invalid: {aggregate}", go_quote(name))
}

/// Renders a bad value the way `ErrorBody` does for the Go type it would have had.
fn render_value(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => render_number(n),
        Value::String(s) => go_quote(s),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            let quoted: Vec<String> = items
                .iter()
                .map(|v| go_quote(v.as_str().unwrap_or_default()))
                .collect();
            format!("[]string{{{}}}", quoted.join(", "))
        }
        Value::Object(map) if map.len() == 1 && map.contains_key(GO_LITERAL_KEY) => {
            map[GO_LITERAL_KEY].as_str().unwrap_or_default().to_string()
        }
        other => other.to_string(),
    }
}

/// Integers print plainly; floats follow Go's `%v` (shortest `%g`: exponent form below 1e-4 and
/// from 1e6 up).
fn render_number(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    let f = n.as_f64().unwrap_or_default();
    if f == 0.0 || !f.is_finite() {
        return format!("{f}");
    }
    let exp = f.abs().log10().floor() as i32;
    if !(-4..6).contains(&exp) {
        let s = format!("{f:e}");
        let (mantissa, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        let sign = if e < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", e.abs());
    }
    format!("{f}")
}

/// Quotes a string like Go's `strconv.Quote` (`%q`): double quotes, backslash escapes for
/// quotes, backslashes and control characters; printable Unicode is kept as is.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => {
                if (c as u32) <= 0xffff {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A field path as Kubernetes prints it: `spec.containers[0].ports[1].name`,
/// `metadata.annotations[example.com/key]` (map keys are not quoted).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath(String);

impl FieldPath {
    /// A path starting at the top-level field `root` (`"metadata"`, `"spec"`).
    pub fn new(root: &str) -> Self {
        FieldPath(root.to_string())
    }

    /// The path of a named sub-field.
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            FieldPath(name.to_string())
        } else {
            FieldPath(format!("{}.{name}", self.0))
        }
    }

    /// The path of a list element.
    pub fn index(&self, i: usize) -> Self {
        FieldPath(format!("{}[{i}]", self.0))
    }

    /// The path of a map entry.
    pub fn key(&self, key: &str) -> Self {
        FieldPath(format!("{}[{key}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<FieldPath> for String {
    fn from(p: FieldPath) -> String {
        p.0
    }
}

impl From<&FieldPath> for String {
    fn from(p: &FieldPath) -> String {
        p.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn required_hides_value_and_appends_detail() {
        let e = FieldError::required("spec.containers[0].image", "");
        assert_eq!(e.message(), "Required value");
        assert_eq!(e.to_string(), "spec.containers[0].image: Required value");
        assert_eq!(e.reason(), "FieldValueRequired");
        let e = FieldError::required("metadata.name", "name or generateName is required");
        assert_eq!(
            e.message(),
            "Required value: name or generateName is required"
        );
    }

    #[test]
    fn invalid_quotes_strings_and_prints_numbers_plainly() {
        let e = FieldError::invalid("spec.containers[0].name", "Bad_Name", "bad");
        assert_eq!(e.message(), "Invalid value: \"Bad_Name\": bad");
        let e = FieldError::invalid(
            "spec.containers[0].ports[0].containerPort",
            70000,
            "must be between 1 and 65535, inclusive",
        );
        assert_eq!(
            e.message(),
            "Invalid value: 70000: must be between 1 and 65535, inclusive"
        );
        let e = FieldError::invalid("x", true, "");
        assert_eq!(e.message(), "Invalid value: true");
        let e = FieldError::invalid(
            "x",
            Value::Null,
            "must not update from a positive integer to nil value",
        );
        assert_eq!(
            e.message(),
            "Invalid value: null: must not update from a positive integer to nil value"
        );
        assert_eq!(e.reason(), "FieldValueInvalid");
    }

    #[test]
    fn not_supported_lists_quoted_values() {
        let e = FieldError::not_supported(
            "spec.restartPolicy",
            "Sometimes",
            &["Always", "OnFailure", "Never"],
        );
        assert_eq!(
            e.message(),
            "Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
        );
        assert_eq!(e.reason(), "FieldValueNotSupported");
    }

    #[test]
    fn other_types_render_like_kubernetes() {
        assert_eq!(
            FieldError::duplicate("a", "web").message(),
            "Duplicate value: \"web\""
        );
        assert_eq!(
            FieldError::forbidden("spec", "nope").message(),
            "Forbidden: nope"
        );
        assert_eq!(
            FieldError::not_found("a", "vol").message(),
            "Not found: \"vol\""
        );
        assert_eq!(
            FieldError::too_long("metadata.annotations", 262144).message(),
            "Too long: must have at most 262144 bytes"
        );
        assert_eq!(
            FieldError::too_many("a", Some(5), Some(3)).message(),
            "Too many: 5: must have at most 3 items"
        );
        assert_eq!(
            FieldError::too_many("a", None, None).message(),
            "Too many: has too many items"
        );
        assert_eq!(
            FieldError::not_found("a", "x").reason(),
            "FieldValueNotFound"
        );
        assert_eq!(FieldError::too_long("a", 1).reason(), "FieldValueTooLong");
        assert_eq!(
            FieldError::too_many("a", None, None).reason(),
            "FieldValueTooMany"
        );
        assert_eq!(
            FieldError::duplicate("a", 1).reason(),
            "FieldValueDuplicate"
        );
        assert_eq!(
            FieldError::forbidden("a", "").reason(),
            "FieldValueForbidden"
        );
    }

    #[test]
    fn special_values() {
        let e = FieldError::invalid("a", go_literal("500m"), "must be an integer");
        assert_eq!(e.message(), "Invalid value: 500m: must be an integer");
        let e = FieldError::invalid("a", json!(["1.1.1.1", "2.2.2.2"]), "x");
        assert_eq!(
            e.message(),
            "Invalid value: []string{\"1.1.1.1\", \"2.2.2.2\"}: x"
        );
        let e = FieldError::invalid("a", 1.5, "x");
        assert_eq!(e.message(), "Invalid value: 1.5: x");
        let e = FieldError::invalid("a", 1e22, "x");
        assert_eq!(e.message(), "Invalid value: 1e+22: x");
        let e = FieldError::invalid("a", 1e6, "x");
        assert_eq!(e.message(), "Invalid value: 1e+06: x");
        let e = FieldError::invalid("a", 123456.5, "x");
        assert_eq!(e.message(), "Invalid value: 123456.5: x");
    }

    #[test]
    fn go_quote_escapes() {
        assert_eq!(go_quote("a\"b\\c\n\t\u{1}"), "\"a\\\"b\\\\c\\n\\t\\x01\"");
        assert_eq!(go_quote("héllo"), "\"héllo\"");
    }

    #[test]
    fn invalid_message_one_and_many() {
        let one = [FieldError::required("spec.containers[0].image", "")];
        assert_eq!(
            invalid_message("Pod", "bad", &one),
            "Pod \"bad\" is invalid: spec.containers[0].image: Required value"
        );
        let many = [
            FieldError::required("spec.containers[0].image", ""),
            FieldError::invalid("spec.containers[0].name", "Bad_Name", "x"),
            FieldError::required("spec.containers[0].image", ""),
        ];
        assert_eq!(
            invalid_message("Pod", "bad", &many),
            "Pod \"bad\" is invalid: [spec.containers[0].image: Required value, spec.containers[0].name: Invalid value: \"Bad_Name\": x]"
        );
    }

    #[test]
    fn field_paths() {
        let p = FieldPath::new("spec")
            .child("containers")
            .index(0)
            .child("resources")
            .child("limits")
            .key("cpu");
        assert_eq!(p.as_str(), "spec.containers[0].resources.limits[cpu]");
        assert_eq!(FieldPath::new("").child("x").as_str(), "x");
    }
}
