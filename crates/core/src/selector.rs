//! Label and field selectors as the API accepts them in `labelSelector=` and `fieldSelector=`.
//!
//! kubectl sends selectors verbatim (`-l`, `--field-selector`) and the API server parses them, so
//! the accepted syntax, the matching rules and the error texts are observable. Both parsers sort
//! their terms, so the order in which a client wrote them never matters.
//!
//! Label selectors: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, `k>1`, `k<1`,
//! comma-separated, whitespace-tolerant, with keys and values validated like label keys/values.
//! Field selectors: `f=v`, `f==v`, `f!=v`, comma-separated, with `\,` `\=` `\\` escapes in values.

use std::collections::BTreeMap;
use std::fmt;

// ---------------------------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------------------------

/// The operator of one label requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LabelOp {
    In,
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// One `key <op> values` term of a label selector. `values` is sorted and free of duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRequirement {
    pub key: String,
    pub op: LabelOp,
    pub values: Vec<String>,
}

/// A parsed label selector: the AND of its requirements.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
    /// Set for the selector that matches nothing (a nil `spec.selector`).
    nothing: bool,
}

impl LabelSelector {
    /// The selector that matches every object (also what an empty string parses to).
    pub fn everything() -> LabelSelector {
        LabelSelector::default()
    }

    /// The selector that matches no object (Kubernetes' `labels.Nothing()`, used for a nil
    /// `metav1.LabelSelector`).
    pub fn nothing() -> LabelSelector {
        LabelSelector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// Parses the `labelSelector=` query syntax. Errors read like the API server's, e.g.
    /// `unable to parse requirement: found '', expected: in, notin, =, ==, !=, gt, lt`.
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let tokens = lex(s);
        let mut parser = Parser { tokens, pos: 0 };
        let mut requirements = parser.parse_all()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Converts a `metav1.LabelSelector` (matchLabels + matchExpressions). An empty one selects
    /// everything; callers map an absent selector to [`LabelSelector::nothing`] themselves.
    pub fn from_spec(
        sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    ) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            requirements.push(new_requirement(k, LabelOp::Equals, vec![v.clone()], false)?);
        }
        for expr in sel.match_expressions.iter().flatten() {
            let op = match expr.operator.as_str() {
                "In" => LabelOp::In,
                "NotIn" => LabelOp::NotIn,
                "Exists" => LabelOp::Exists,
                "DoesNotExist" => LabelOp::DoesNotExist,
                other => return Err(format!("{other:?} is not a valid label selector operator")),
            };
            let values = expr.values.clone().unwrap_or_default();
            requirements.push(new_requirement(&expr.key, op, values, false)?);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// A selector requiring exactly these labels (`spec.selector` of services and RCs).
    pub fn from_labels(labels: &BTreeMap<String, String>) -> LabelSelector {
        let requirements = labels
            .iter()
            .map(|(k, v)| LabelRequirement {
                key: k.clone(),
                op: LabelOp::Equals,
                values: vec![v.clone()],
            })
            .collect();
        LabelSelector {
            requirements,
            nothing: false,
        }
    }

    /// Whether every requirement holds for `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True when the selector does not restrict anything.
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[LabelRequirement] {
        &self.requirements
    }
}

impl LabelRequirement {
    /// Kubernetes matching: `in`/`=` need the key present with one of the values; `notin`/`!=`
    /// also match when the key is absent; `gt`/`lt` compare both sides as integers.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.op {
            LabelOp::In | LabelOp::Equals | LabelOp::DoubleEquals => {
                value.is_some_and(|v| self.values.contains(v))
            }
            LabelOp::NotIn | LabelOp::NotEquals => value.is_none_or(|v| !self.values.contains(v)),
            LabelOp::Exists => value.is_some(),
            LabelOp::DoesNotExist => value.is_none(),
            LabelOp::GreaterThan | LabelOp::LessThan => {
                let Some(have) = value.and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let Some(want) = self.values.first().and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                if self.op == LabelOp::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for LabelRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.op == LabelOp::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let values = self.values.join(",");
        match self.op {
            LabelOp::Exists | LabelOp::DoesNotExist => Ok(()),
            LabelOp::In => write!(f, " in ({values})"),
            LabelOp::NotIn => write!(f, " notin ({values})"),
            LabelOp::Equals => write!(f, "={values}"),
            LabelOp::DoubleEquals => write!(f, "=={values}"),
            LabelOp::NotEquals => write!(f, "!={values}"),
            LabelOp::GreaterThan => write!(f, ">{values}"),
            LabelOp::LessThan => write!(f, "<{values}"),
        }
    }
}

/// The canonical selector text (requirements sorted by key, joined with `,`).
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Builds a requirement, validating it the way the API server does. `from_text` selects the
/// error paths used for text selectors (the key was already validated by the parser).
fn new_requirement(
    key: &str,
    op: LabelOp,
    mut values: Vec<String>,
    from_text: bool,
) -> Result<LabelRequirement, String> {
    let mut errs = Vec::new();
    if !from_text && let Some(e) = key_error("key", key) {
        errs.push(e);
    }
    match op {
        LabelOp::In | LabelOp::NotIn if values.is_empty() => errs.push(invalid_list(
            "values",
            &values,
            "for 'in', 'notin' operators, values set can't be empty",
        )),
        LabelOp::Equals | LabelOp::DoubleEquals | LabelOp::NotEquals if values.len() != 1 => errs
            .push(invalid_list(
                "values",
                &values,
                "exact-match compatibility requires one single value",
            )),
        LabelOp::Exists | LabelOp::DoesNotExist if !values.is_empty() => errs.push(invalid_list(
            "values",
            &values,
            "values set must be empty for exists and does not exist",
        )),
        LabelOp::GreaterThan | LabelOp::LessThan => {
            if values.len() != 1 {
                errs.push(invalid_list(
                    "values",
                    &values,
                    "for 'Gt', 'Lt' operators, exactly one value is required",
                ));
            }
            for (i, v) in values.iter().enumerate() {
                if v.parse::<i64>().is_err() {
                    errs.push(invalid(
                        &format!("values[{i}]"),
                        v,
                        "for 'Gt', 'Lt' operators, the value must be an integer",
                    ));
                }
            }
        }
        _ => {}
    }
    for (i, v) in values.iter().enumerate() {
        let problems = label_value_errors(v);
        if !problems.is_empty() {
            errs.push(invalid(
                &format!("values[{i}][{key}]"),
                v,
                &problems.join("; "),
            ));
        }
    }
    if !errs.is_empty() {
        return Err(aggregate(errs));
    }
    values.sort();
    values.dedup();
    Ok(LabelRequirement {
        key: key.to_string(),
        op,
        values,
    })
}

/// `key` validated as a label key, as a field error at `path`.
fn key_error(path: &str, key: &str) -> Option<String> {
    let problems = qualified_name_errors(key);
    (!problems.is_empty()).then(|| invalid(path, key, &problems.join("; ")))
}

/// Formats a field.Invalid error for a string value.
fn invalid(path: &str, value: &str, detail: &str) -> String {
    format!("{path}: Invalid value: {value:?}: {detail}")
}

/// Formats a field.Invalid error for a list value (Go prints it as a `[]string` literal).
fn invalid_list(path: &str, values: &[String], detail: &str) -> String {
    let shown = if values.is_empty() {
        "[]string(nil)".to_string()
    } else {
        let items: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
        format!("[]string{{{}}}", items.join(", "))
    };
    format!("{path}: Invalid value: {shown}: {detail}")
}

/// Joins several errors the way an aggregate error prints (`[a, b]`; a single error alone).
fn aggregate(mut errs: Vec<String>) -> String {
    errs.dedup();
    if errs.len() == 1 {
        errs.remove(0)
    } else {
        format!("[{}]", errs.join(", "))
    }
}

// --- label key / value validation ------------------------------------------------------------

/// Problems with `key` as a qualified name (`[prefix/]name`), as Kubernetes words them;
/// empty when valid. Label keys and annotation keys use this rule.
pub fn qualified_name_errors(key: &str) -> Vec<String> {
    crate::validation::is_qualified_name(key)
}

/// Problems with `value` as a label value, as Kubernetes words them; empty when valid.
pub fn label_value_errors(value: &str) -> Vec<String> {
    crate::validation::is_valid_label_value(value)
}

// --- lexer -------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    End,
    OpenPar,
    ClosePar,
    Comma,
    Not,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    In,
    NotIn,
    Ident,
}

/// A token and the text it was read from (used in error messages).
#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    text: String,
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn symbol(text: &str) -> Option<Tok> {
    Some(match text {
        "(" => Tok::OpenPar,
        ")" => Tok::ClosePar,
        "," => Tok::Comma,
        "!" => Tok::Not,
        "=" => Tok::Eq,
        "==" => Tok::DoubleEq,
        "!=" => Tok::NotEq,
        ">" => Tok::Gt,
        "<" => Tok::Lt,
        _ => return None,
    })
}

/// Splits a selector into tokens; the list always ends with `Tok::End`.
fn lex(s: &str) -> Vec<Token> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < chars.len() && is_blank(chars[i]) {
            i += 1;
        }
        if i >= chars.len() {
            out.push(Token {
                tok: Tok::End,
                text: String::new(),
            });
            return out;
        }
        if is_special(chars[i]) {
            // Longest operator first (`==`, `!=`), then the single symbol.
            let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let (tok, len) = match symbol(&two) {
                Some(t) if two.chars().count() == 2 => (t, 2),
                _ => (symbol(&chars[i].to_string()).unwrap_or(Tok::End), 1),
            };
            out.push(Token {
                tok,
                text: chars[i..i + len].iter().collect(),
            });
            i += len;
            continue;
        }
        let start = i;
        while i < chars.len() && !is_special(chars[i]) && !is_blank(chars[i]) {
            i += 1;
        }
        let text: String = chars[start..i].iter().collect();
        let tok = match text.as_str() {
            "in" => Tok::In,
            "notin" => Tok::NotIn,
            _ => Tok::Ident,
        };
        out.push(Token { tok, text });
    }
}

// --- parser ------------------------------------------------------------------------------------

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

/// Whether `in`/`notin` are operators (after a key) or plain identifiers (anywhere else).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Operator,
    Value,
}

impl Parser {
    fn peek(&self, ctx: Ctx) -> (Tok, String) {
        let t = &self.tokens[self.pos.min(self.tokens.len() - 1)];
        (Self::in_context(&t.tok, ctx), t.text.clone())
    }

    fn next(&mut self, ctx: Ctx) -> (Tok, String) {
        let t = self.peek(ctx);
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn in_context(tok: &Tok, ctx: Ctx) -> Tok {
        match (tok, ctx) {
            (Tok::In | Tok::NotIn, Ctx::Value) => Tok::Ident,
            _ => tok.clone(),
        }
    }

    fn parse_all(&mut self) -> Result<Vec<LabelRequirement>, String> {
        let mut reqs = Vec::new();
        loop {
            let (tok, text) = self.peek(Ctx::Value);
            match tok {
                Tok::Ident | Tok::Not => {
                    let r = self
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    let (after, after_text) = self.next(Ctx::Value);
                    match after {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => {
                            let (t2, l2) = self.peek(Ctx::Value);
                            if t2 != Tok::Ident && t2 != Tok::Not {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => {
                            return Err(format!(
                                "found '{after_text}', expected: ',' or 'end of string'"
                            ));
                        }
                    }
                }
                Tok::End => return Ok(reqs),
                _ => {
                    return Err(format!(
                        "found '{text}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<LabelRequirement, String> {
        let mut negated = false;
        let (mut tok, mut text) = self.next(Ctx::Value);
        if tok == Tok::Not {
            negated = true;
            (tok, text) = self.next(Ctx::Value);
        }
        if tok != Tok::Ident {
            return Err(format!("found '{text}', expected: identifier"));
        }
        let key = text;
        if let Some(e) = key_error("<nil>", &key) {
            return Err(e);
        }
        // `!key` takes no operator: whatever follows it is left for the caller, which then
        // reports it as an unexpected token.
        if negated {
            return new_requirement(&key, LabelOp::DoesNotExist, Vec::new(), true);
        }
        let (following, _) = self.peek(Ctx::Value);
        if following == Tok::End || following == Tok::Comma {
            return new_requirement(&key, LabelOp::Exists, Vec::new(), true);
        }
        let op = self.operator()?;
        let values = match op {
            LabelOp::In | LabelOp::NotIn => self.value_set()?,
            _ => vec![self.exact_value()?],
        };
        new_requirement(&key, op, values, true)
    }

    fn operator(&mut self) -> Result<LabelOp, String> {
        let (tok, text) = self.next(Ctx::Operator);
        Ok(match tok {
            Tok::In => LabelOp::In,
            Tok::NotIn => LabelOp::NotIn,
            Tok::Eq => LabelOp::Equals,
            Tok::DoubleEq => LabelOp::DoubleEquals,
            Tok::NotEq => LabelOp::NotEquals,
            Tok::Gt => LabelOp::GreaterThan,
            Tok::Lt => LabelOp::LessThan,
            _ => {
                return Err(format!(
                    "found '{text}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            }
        })
    }

    /// `(a,b,c)`; empty entries (`()`, `(,a)`, `(a,,b)`) stand for the empty value.
    fn value_set(&mut self) -> Result<Vec<String>, String> {
        let (tok, text) = self.next(Ctx::Value);
        if tok != Tok::OpenPar {
            return Err(format!("found '{text}' expected: '('"));
        }
        let (first, first_text) = self.peek(Ctx::Value);
        match first {
            Tok::ClosePar => {
                self.next(Ctx::Value);
                return Ok(vec![String::new()]);
            }
            Tok::Ident | Tok::Comma => {}
            _ => {
                return Err(format!(
                    "found '{first_text}', expected: ',', ')' or identifier"
                ));
            }
        }
        let mut values = Vec::new();
        let mut expect_value = true;
        loop {
            let (tok, text) = self.next(Ctx::Value);
            match tok {
                Tok::Ident if expect_value => {
                    values.push(text);
                    expect_value = false;
                    let (t2, l2) = self.peek(Ctx::Value);
                    if t2 != Tok::Comma && t2 != Tok::ClosePar {
                        return Err(format!("found '{l2}', expected: ',' or ')'"));
                    }
                }
                Tok::Comma => {
                    if expect_value {
                        values.push(String::new());
                    }
                    expect_value = true;
                }
                Tok::ClosePar => {
                    if expect_value {
                        values.push(String::new());
                    }
                    return Ok(values);
                }
                _ => return Err(format!("found '{text}', expected: ',', or identifier")),
            }
        }
    }

    /// The single value after `=`, `==`, `!=`, `>`, `<` (empty when the term ends right there).
    fn exact_value(&mut self) -> Result<String, String> {
        let (tok, _) = self.peek(Ctx::Value);
        if tok == Tok::End || tok == Tok::Comma {
            return Ok(String::new());
        }
        let (tok, text) = self.next(Ctx::Value);
        if tok == Tok::Ident {
            Ok(text)
        } else {
            Err(format!("found '{text}', expected: identifier"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------------------------

/// The operator of a field requirement (`=` and `==` are the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldOp {
    Equals,
    NotEquals,
}

/// One `field <op> value` term; `value` is unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub op: FieldOp,
    pub value: String,
}

/// A parsed field selector: the AND of its requirements.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses the `fieldSelector=` syntax. Terms are split on unescaped commas and sorted, and
    /// empty terms are skipped. Field names are taken literally (no whitespace trimming, as in
    /// Kubernetes); values may be empty and use `\,` `\=` `\\` escapes.
    pub fn parse(s: &str) -> Result<FieldSelector, String> {
        let mut terms = split_terms(s);
        terms.sort();
        let mut requirements = Vec::new();
        for term in terms.iter().filter(|t| !t.is_empty()) {
            let Some((field, op, raw)) = split_term(term) else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                ));
            };
            requirements.push(FieldRequirement {
                field: field.to_string(),
                op,
                value: unescape_value(raw)?,
            });
        }
        Ok(FieldSelector { requirements })
    }

    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether every requirement holds; `get` returns a field's value, and a field it returns
    /// `None` for compares as the empty string.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| {
            let have = get(&r.field).unwrap_or_default();
            match r.op {
                FieldOp::Equals => have == r.value,
                FieldOp::NotEquals => have != r.value,
            }
        })
    }

    /// The value `field` must equal, when the selector pins it with `=` (e.g. `spec.nodeName`).
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.op == FieldOp::Equals)
            .map(|r| r.value.as_str())
    }
}

/// The canonical text, with values re-escaped.
impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match r.op {
                FieldOp::Equals => "=",
                FieldOp::NotEquals => "!=",
            };
            write!(f, "{}{op}{}", r.field, escape_value(&r.value))?;
        }
        Ok(())
    }
}

/// Splits on commas that are not escaped by a backslash; escapes stay in the terms.
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits a term at the first operator (`!=`, then `==`, then `=` at each position).
fn split_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op_text, op) in [
            ("!=", FieldOp::NotEquals),
            ("==", FieldOp::Equals),
            ("=", FieldOp::Equals),
        ] {
            if let Some(value) = rest.strip_prefix(op_text) {
                return Some((&term[..i], op, value));
            }
        }
    }
    None
}

fn unescape_value(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut escaped = false;
    for c in raw.chars() {
        if escaped {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(format!(
                    "invalid field selector: invalid escape sequence: \\{c}"
                ));
            }
            out.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            ',' | '=' => {
                return Err(format!(
                    "invalid field selector: unescaped character in value: {c}"
                ));
            }
            _ => out.push(c),
        }
    }
    if escaped {
        return Err("invalid field selector: invalid escape sequence: \\".to_string());
    }
    Ok(out)
}

fn escape_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn label_equality_forms() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert!(sel("app=web").matches(&l));
        assert!(sel("app==web").matches(&l));
        assert!(sel("app!=db").matches(&l));
        assert!(!sel("app!=web").matches(&l));
        assert!(sel("missing!=x").matches(&l));
        assert!(!sel("app=db").matches(&l));
        assert!(sel("app=web,tier=front").matches(&l));
        assert!(!sel("app=web,tier=back").matches(&l));
    }

    #[test]
    fn label_set_forms() {
        let l = labels(&[("env", "prod")]);
        assert!(sel("env in (prod,staging)").matches(&l));
        assert!(!sel("env in (dev)").matches(&l));
        assert!(sel("env notin (dev, staging)").matches(&l));
        assert!(!sel("env notin (prod)").matches(&l));
        assert!(sel("other notin (prod)").matches(&l));
        assert!(!sel("other in (prod)").matches(&l));
        assert!(sel("env").matches(&l));
        assert!(!sel("!env").matches(&l));
        assert!(sel("!other").matches(&l));
        assert!(!sel("other").matches(&l));
    }

    #[test]
    fn label_whitespace_and_order() {
        let a = sel("  app = web ,  env in ( a , b ) , !gone ");
        let b = sel("!gone,env in (b,a),app=web");
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "app=web,env in (a,b),!gone");
        assert!(a.matches(&labels(&[("app", "web"), ("env", "b")])));
    }

    #[test]
    fn label_prefixed_keys_and_keywords_as_values() {
        let l = labels(&[("example.com/app", "in")]);
        assert!(sel("example.com/app=in").matches(&l));
        assert!(sel("example.com/app in (in, notin)").matches(&l));
    }

    #[test]
    fn label_empty_values() {
        let l = labels(&[("a", "")]);
        assert!(sel("a=").matches(&l));
        assert!(sel("a in ()").matches(&l));
        assert!(sel("a in (x,)").matches(&l));
        assert!(sel("a=,b!=").matches(&l));
        assert_eq!(sel("a in (,x,,)").requirements()[0].values, vec!["", "x"]);
    }

    #[test]
    fn label_numeric_comparisons() {
        let l = labels(&[("replicas", "5")]);
        assert!(sel("replicas>3").matches(&l));
        assert!(!sel("replicas<3").matches(&l));
        assert!(!sel("missing>3").matches(&l));
        assert!(
            LabelSelector::parse("replicas>x")
                .unwrap_err()
                .contains("the value must be an integer")
        );
    }

    #[test]
    fn label_empty_selector() {
        assert!(sel("").is_empty());
        assert!(sel("  ").is_empty());
        assert!(sel("").matches(&BTreeMap::new()));
        assert!(!LabelSelector::nothing().matches(&BTreeMap::new()));
        assert!(!LabelSelector::nothing().is_empty());
    }

    #[test]
    fn label_errors() {
        let err = |s: &str| LabelSelector::parse(s).unwrap_err();
        assert_eq!(
            err("app in"),
            "unable to parse requirement: found '' expected: '('"
        );
        assert_eq!(
            err("app web"),
            "unable to parse requirement: found 'web', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(err("a=b,"), "found '', expected: identifier after ','");
        assert_eq!(err("a=b c"), "found 'c', expected: ',' or 'end of string'");
        assert_eq!(err("!a=b"), "found '=', expected: ',' or 'end of string'");
        assert_eq!(
            err(",a"),
            "found ',', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            err("a in (b c)"),
            "unable to parse requirement: found 'c', expected: ',' or ')'"
        );
        assert!(err("foo_=bar").starts_with(
            "unable to parse requirement: <nil>: Invalid value: \"foo_\": name part must consist of alphanumeric characters"
        ));
        assert!(err("a/b/c=d").contains("a qualified name must consist of"));
        assert!(err("Example.com/a=b").contains("prefix part a lowercase RFC 1123 subdomain"));
        assert!(err("/a=b").contains("prefix part must be non-empty"));
        assert!(
            err("a=b/c").starts_with(
                "unable to parse requirement: values[0][a]: Invalid value: \"b/c\": a valid label must be an empty string"
            )
        );
        assert!(
            err(&format!("a={}", "x".repeat(64))).contains("must be no more than 63 characters")
        );
        assert!(
            err(&format!("{}=a", "x".repeat(64)))
                .contains("name part must be no more than 63 characters")
        );
    }

    #[test]
    fn label_from_spec() {
        let spec = metav1::LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![
                metav1::LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "In".into(),
                    values: Some(vec!["prod".into(), "staging".into()]),
                },
                metav1::LabelSelectorRequirement {
                    key: "legacy".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        let s = LabelSelector::from_spec(&spec).unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "prod"), ("legacy", "1")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(
            LabelSelector::from_spec(&metav1::LabelSelector::default())
                .unwrap()
                .is_empty()
        );

        let bad = metav1::LabelSelector {
            match_expressions: Some(vec![metav1::LabelSelectorRequirement {
                key: "env".into(),
                operator: "In".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert_eq!(
            LabelSelector::from_spec(&bad).unwrap_err(),
            "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty"
        );
        let bad_op = metav1::LabelSelector {
            match_expressions: Some(vec![metav1::LabelSelectorRequirement {
                key: "env".into(),
                operator: "Like".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert_eq!(
            LabelSelector::from_spec(&bad_op).unwrap_err(),
            "\"Like\" is not a valid label selector operator"
        );
    }

    #[test]
    fn label_from_labels() {
        let s = LabelSelector::from_labels(&labels(&[("run", "nginx")]));
        assert!(s.matches(&labels(&[("run", "nginx"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("run", "web")])));
    }

    fn fsel(s: &str) -> FieldSelector {
        FieldSelector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn getter<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |f: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == f)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn field_basic() {
        let s = fsel("status.phase=Running,spec.nodeName!=node-2");
        assert_eq!(s.requirements().len(), 2);
        let obj = [("status.phase", "Running"), ("spec.nodeName", "node-1")];
        assert!(s.matches(getter(&obj)));
        assert!(!fsel("status.phase==Pending").matches(getter(&obj)));
        assert!(fsel("").is_empty());
        assert!(fsel("").matches(getter(&obj)));
    }

    #[test]
    fn field_empty_values_and_missing_fields() {
        let s = fsel("involvedObject.namespace=");
        assert_eq!(s.requirements()[0].value, "");
        assert!(s.matches(getter(&[])));
        assert!(!s.matches(getter(&[("involvedObject.namespace", "default")])));
        assert!(fsel("spec.nodeName!=").matches(getter(&[("spec.nodeName", "n1")])));
    }

    #[test]
    fn field_order_does_not_matter() {
        let a = fsel("b=2,a=1,c!=3");
        let b = fsel("c!=3,a=1,b=2");
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "a=1,b=2,c!=3");
        assert_eq!(a.requires_exact_match("b"), Some("2"));
        assert_eq!(a.requires_exact_match("c"), None);
    }

    #[test]
    fn field_escaping() {
        let s = fsel(r"metadata.name=a\,b\=c\\d,x=y");
        assert_eq!(s.requirements()[0].value, r"a,b=c\d");
        assert_eq!(s.requirements()[0].field, "metadata.name");
        assert_eq!(s.to_string(), r"metadata.name=a\,b\=c\\d,x=y");
        assert_eq!(fsel(s.to_string().as_str()), s);
    }

    #[test]
    fn field_errors() {
        assert_eq!(
            FieldSelector::parse("status.phase").unwrap_err(),
            "invalid selector: 'status.phase'; can't understand 'status.phase'"
        );
        assert_eq!(
            FieldSelector::parse("a=b=c").unwrap_err(),
            "invalid field selector: unescaped character in value: ="
        );
        assert_eq!(
            FieldSelector::parse(r"a=b\x").unwrap_err(),
            r"invalid field selector: invalid escape sequence: \x"
        );
        assert_eq!(
            FieldSelector::parse(r"a=b\").unwrap_err(),
            r"invalid field selector: invalid escape sequence: \"
        );
    }

    #[test]
    fn field_double_equals_and_skipped_empty_terms() {
        let s = fsel("a==1,,b!=2");
        assert_eq!(
            s.requirements(),
            &[
                FieldRequirement {
                    field: "a".into(),
                    op: FieldOp::Equals,
                    value: "1".into()
                },
                FieldRequirement {
                    field: "b".into(),
                    op: FieldOp::NotEquals,
                    value: "2".into()
                },
            ]
        );
    }
}
