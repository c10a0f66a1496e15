//! Node selection by labels and fields: `nodeSelector`, required and preferred node affinity.
//!
//! A pod's terms are compiled once per scheduling attempt (operators parsed, `Gt`/`Lt` operands
//! turned into integers, invalid requirements marked) so that matching a node is a handful of map
//! look-ups. The semantics are upstream's (component-helpers `nodeaffinity`):
//!
//! * `nodeSelector` is an equality match on every listed label.
//! * Required terms are ORed; within a term, `matchExpressions` and `matchFields` are ANDed. A
//!   term with neither matches nothing; a term whose requirements do not parse (e.g. `In` without
//!   values, `Gt` with a non-integer) matches nothing.
//! * `matchFields` knows one field, `metadata.name`, with `In`/`NotIn` and exactly one value.
//! * Preferred terms with weight 0 or an empty preference are ignored; the score of a node is the
//!   sum of the weights of the terms it matches.
//!
//! It also computes the NodeAffinity PreFilter result: when every required term pins
//! `metadata.name` with `In`, only the named nodes are evaluated at all.

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Pod};
use skiff_core::selector::{label_value_errors, qualified_name_errors};
use std::collections::{BTreeMap, BTreeSet};

/// The one field `matchFields` may use.
pub const OBJECT_NAME_FIELD: &str = "metadata.name";

/// A label requirement, borrowed from the pod.
#[derive(Debug, Clone)]
enum LabelReq<'a> {
    In(&'a str, Vec<&'a str>),
    NotIn(&'a str, Vec<&'a str>),
    Exists(&'a str),
    DoesNotExist(&'a str),
    Gt(&'a str, i64),
    Lt(&'a str, i64),
}

impl LabelReq<'_> {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            LabelReq::In(k, vs) => labels.get(*k).is_some_and(|v| vs.contains(&v.as_str())),
            LabelReq::NotIn(k, vs) => labels.get(*k).is_none_or(|v| !vs.contains(&v.as_str())),
            LabelReq::Exists(k) => labels.contains_key(*k),
            LabelReq::DoesNotExist(k) => !labels.contains_key(*k),
            LabelReq::Gt(k, n) => label_int(labels, k).is_some_and(|v| v > *n),
            LabelReq::Lt(k, n) => label_int(labels, k).is_some_and(|v| v < *n),
        }
    }
}

fn label_int(labels: &BTreeMap<String, String>, key: &str) -> Option<i64> {
    labels.get(key)?.parse::<i64>().ok()
}

/// A field requirement: `metadata.name` equal / not equal to a value.
#[derive(Debug, Clone)]
enum FieldReq<'a> {
    Eq(&'a str, &'a str),
    Ne(&'a str, &'a str),
}

impl FieldReq<'_> {
    fn matches(&self, node_name: &str) -> bool {
        // Only metadata.name exists; any other field reads as "".
        let get = |f: &str| {
            if f == OBJECT_NAME_FIELD {
                node_name
            } else {
                ""
            }
        };
        match self {
            FieldReq::Eq(f, v) => get(f) == *v,
            FieldReq::Ne(f, v) => get(f) != *v,
        }
    }
}

/// One compiled node selector term.
#[derive(Debug, Clone)]
pub struct CompiledTerm<'a> {
    labels: Vec<LabelReq<'a>>,
    fields: Vec<FieldReq<'a>>,
    /// A requirement did not parse: the term matches nothing.
    invalid: bool,
}

impl<'a> CompiledTerm<'a> {
    /// Compiles a term; `None` for an empty term (no expressions and no fields), which upstream
    /// drops.
    pub fn compile(term: &'a NodeSelectorTerm) -> Option<CompiledTerm<'a>> {
        let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
        let fields = term.match_fields.as_deref().unwrap_or(&[]);
        if exprs.is_empty() && fields.is_empty() {
            return None;
        }
        let mut out = CompiledTerm {
            labels: Vec::with_capacity(exprs.len()),
            fields: Vec::with_capacity(fields.len()),
            invalid: false,
        };
        for r in exprs {
            match compile_label_req(r) {
                Some(req) => out.labels.push(req),
                None => out.invalid = true,
            }
        }
        for r in fields {
            match compile_field_req(r) {
                Some(req) => out.fields.push(req),
                None => out.invalid = true,
            }
        }
        Some(out)
    }

    /// Whether the node (its labels and name) satisfies every requirement of the term.
    pub fn matches(&self, labels: &BTreeMap<String, String>, node_name: &str) -> bool {
        !self.invalid
            && self.labels.iter().all(|r| r.matches(labels))
            && self.fields.iter().all(|r| r.matches(node_name))
    }
}

fn compile_label_req(r: &NodeSelectorRequirement) -> Option<LabelReq<'_>> {
    if !qualified_name_errors(&r.key).is_empty() {
        return None;
    }
    let values: Vec<&str> = r.values.iter().flatten().map(String::as_str).collect();
    let valid_values = || values.iter().all(|v| label_value_errors(v).is_empty());
    let int_operand = || match values.as_slice() {
        [v] => v.parse::<i64>().ok(),
        _ => None,
    };
    let key = r.key.as_str();
    match r.operator.as_str() {
        "In" if !values.is_empty() && valid_values() => Some(LabelReq::In(key, values)),
        "NotIn" if !values.is_empty() && valid_values() => Some(LabelReq::NotIn(key, values)),
        "Exists" if values.is_empty() => Some(LabelReq::Exists(key)),
        "DoesNotExist" if values.is_empty() => Some(LabelReq::DoesNotExist(key)),
        "Gt" => int_operand().map(|n| LabelReq::Gt(key, n)),
        "Lt" => int_operand().map(|n| LabelReq::Lt(key, n)),
        _ => None,
    }
}

fn compile_field_req(r: &NodeSelectorRequirement) -> Option<FieldReq<'_>> {
    let values = r.values.as_deref().unwrap_or(&[]);
    let [value] = values else {
        return None;
    };
    match r.operator.as_str() {
        "In" => Some(FieldReq::Eq(&r.key, value)),
        "NotIn" => Some(FieldReq::Ne(&r.key, value)),
        _ => None,
    }
}

/// `nodeSelector` plus required node affinity, ready to match nodes.
#[derive(Debug, Clone, Default)]
pub struct RequiredAffinity<'a> {
    node_selector: Option<&'a BTreeMap<String, String>>,
    /// `None` when the pod has no required node affinity; `Some(terms)` otherwise (possibly
    /// empty, which matches nothing).
    terms: Option<Vec<CompiledTerm<'a>>>,
}

impl<'a> RequiredAffinity<'a> {
    pub fn of(pod: &'a Pod) -> RequiredAffinity<'a> {
        let Some(spec) = pod.spec.as_ref() else {
            return RequiredAffinity::default();
        };
        let node_selector = spec.node_selector.as_ref().filter(|m| !m.is_empty());
        let terms = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| {
                na.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|ns| {
                ns.node_selector_terms
                    .iter()
                    .filter_map(CompiledTerm::compile)
                    .collect()
            });
        RequiredAffinity {
            node_selector,
            terms,
        }
    }

    /// True when the pod constrains nothing (the filter can be skipped).
    pub fn is_empty(&self) -> bool {
        self.node_selector.is_none() && self.terms.is_none()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>, node_name: &str) -> bool {
        if let Some(sel) = self.node_selector
            && !sel.iter().all(|(k, v)| labels.get(k) == Some(v))
        {
            return false;
        }
        match &self.terms {
            None => true,
            Some(terms) => terms.iter().any(|t| t.matches(labels, node_name)),
        }
    }
}

/// Preferred node affinity terms with their weights.
#[derive(Debug, Clone, Default)]
pub struct PreferredAffinity<'a> {
    terms: Vec<(i64, CompiledTerm<'a>)>,
}

impl<'a> PreferredAffinity<'a> {
    pub fn of(pod: &'a Pod) -> PreferredAffinity<'a> {
        let terms = pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| {
                na.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .filter(|t| t.weight != 0)
            .filter_map(|t| CompiledTerm::compile(&t.preference).map(|c| (i64::from(t.weight), c)))
            .collect();
        PreferredAffinity { terms }
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Σ weights of the terms the node matches (a term that does not parse counts as no match).
    pub fn score(&self, labels: &BTreeMap<String, String>, node_name: &str) -> i64 {
        self.terms
            .iter()
            .filter(|(_, t)| t.matches(labels, node_name))
            .map(|(w, _)| *w)
            .sum()
    }
}

/// What NodeAffinity's PreFilter says about which nodes to evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreFilterNodes<'a> {
    /// Evaluate every node.
    All,
    /// Evaluate only these node names (each required term pins `metadata.name`).
    Only(BTreeSet<&'a str>),
    /// Each term pins names, but no name satisfies a term (e.g. `In [a]` and `In [b]` ANDed):
    /// the pod fits nowhere and the message is [`ERR_REASON_CONFLICT`].
    Conflict,
}

/// The PreFilter message when the pinned names of every term are contradictory.
pub const ERR_REASON_CONFLICT: &str = "pod affinity terms conflict";

/// Upstream's NodeAffinity PreFilter: a term contributes the intersection of the values of its
/// `metadata.name In` field requirements; the result is the union over terms, unless some term
/// pins no name (then all nodes are candidates).
pub fn prefilter_nodes(pod: &Pod) -> PreFilterNodes<'_> {
    let Some(terms) = pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|ns| &ns.node_selector_terms)
        .filter(|t| !t.is_empty())
    else {
        return PreFilterNodes::All;
    };
    let mut union: BTreeSet<&str> = BTreeSet::new();
    for term in terms {
        let mut names: Option<BTreeSet<&str>> = None;
        for r in term.match_fields.iter().flatten() {
            if r.key == OBJECT_NAME_FIELD && r.operator == "In" {
                let set: BTreeSet<&str> = r.values.iter().flatten().map(String::as_str).collect();
                names = Some(match names {
                    None => set,
                    Some(prev) => prev.intersection(&set).copied().collect(),
                });
            }
        }
        match names {
            None => return PreFilterNodes::All,
            Some(n) => union.extend(n),
        }
    }
    if union.is_empty() {
        PreFilterNodes::Conflict
    } else {
        PreFilterNodes::Only(union)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "c", "image": "x"}]);
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn required(terms: serde_json::Value) -> Pod {
        pod(json!({"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
        }}}))
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> serde_json::Value {
        json!({"matchExpressions": [{"key": key, "operator": op, "values": values}]})
    }

    fn matches(p: &Pod, l: &BTreeMap<String, String>, name: &str) -> bool {
        RequiredAffinity::of(p).matches(l, name)
    }

    #[test]
    fn node_selector_is_equality_on_every_key() {
        let p = pod(json!({"nodeSelector": {"disk": "ssd", "zone": "a"}}));
        assert!(matches(
            &p,
            &labels(&[("disk", "ssd"), ("zone", "a"), ("x", "y")]),
            "n"
        ));
        assert!(!matches(&p, &labels(&[("disk", "ssd")]), "n"));
        assert!(!matches(
            &p,
            &labels(&[("disk", "hdd"), ("zone", "a")]),
            "n"
        ));
        assert!(RequiredAffinity::of(&pod(json!({}))).is_empty());
    }

    #[test]
    fn operators() {
        let l = labels(&[("zone", "a"), ("cores", "16")]);
        assert!(matches(
            &required(json!([expr("zone", "In", &["a", "b"])])),
            &l,
            "n"
        ));
        assert!(!matches(
            &required(json!([expr("zone", "In", &["b"])])),
            &l,
            "n"
        ));
        assert!(!matches(
            &required(json!([expr("zone", "NotIn", &["a"])])),
            &l,
            "n"
        ));
        assert!(matches(
            &required(json!([expr("zone", "NotIn", &["b"])])),
            &l,
            "n"
        ));
        // NotIn matches a node without the label.
        assert!(matches(
            &required(json!([expr("rack", "NotIn", &["r1"])])),
            &l,
            "n"
        ));
        assert!(matches(
            &required(json!([expr("zone", "Exists", &[])])),
            &l,
            "n"
        ));
        assert!(!matches(
            &required(json!([expr("rack", "Exists", &[])])),
            &l,
            "n"
        ));
        assert!(matches(
            &required(json!([expr("rack", "DoesNotExist", &[])])),
            &l,
            "n"
        ));
        assert!(!matches(
            &required(json!([expr("zone", "DoesNotExist", &[])])),
            &l,
            "n"
        ));
        assert!(matches(
            &required(json!([expr("cores", "Gt", &["8"])])),
            &l,
            "n"
        ));
        assert!(!matches(
            &required(json!([expr("cores", "Gt", &["16"])])),
            &l,
            "n"
        ));
        assert!(matches(
            &required(json!([expr("cores", "Lt", &["17"])])),
            &l,
            "n"
        ));
        assert!(!matches(
            &required(json!([expr("cores", "Lt", &["16"])])),
            &l,
            "n"
        ));
        // Gt on a missing or non-integer label is false.
        assert!(!matches(
            &required(json!([expr("rack", "Gt", &["1"])])),
            &l,
            "n"
        ));
        assert!(!matches(
            &required(json!([expr("zone", "Gt", &["1"])])),
            &l,
            "n"
        ));
    }

    #[test]
    fn invalid_requirements_match_nothing() {
        let l = labels(&[("zone", "a"), ("cores", "16")]);
        assert!(!matches(
            &required(json!([expr("zone", "In", &[])])),
            &l,
            "n"
        ));
        assert!(!matches(
            &required(json!([expr("zone", "Exists", &["a"])])),
            &l,
            "n"
        ));
        assert!(!matches(
            &required(json!([expr("cores", "Gt", &["x"])])),
            &l,
            "n"
        ));
        assert!(!matches(
            &required(json!([expr("cores", "Gt", &["1", "2"])])),
            &l,
            "n"
        ));
        assert!(!matches(
            &required(json!([expr("zone", "Bogus", &["a"])])),
            &l,
            "n"
        ));
        // ... but another valid term can still match (terms are ORed).
        let p = required(json!([expr("zone", "In", &[]), expr("zone", "In", &["a"])]));
        assert!(matches(&p, &l, "n"));
    }

    #[test]
    fn terms_are_ored_and_requirements_anded() {
        let p = required(json!([
            {"matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["a"]},
                {"key": "disk", "operator": "In", "values": ["ssd"]},
            ]},
            expr("gpu", "Exists", &[]),
        ]));
        assert!(matches(&p, &labels(&[("zone", "a"), ("disk", "ssd")]), "n"));
        assert!(!matches(&p, &labels(&[("zone", "a")]), "n"));
        assert!(matches(&p, &labels(&[("gpu", "1")]), "n"));
    }

    #[test]
    fn empty_terms_match_nothing() {
        let p = required(json!([{}]));
        assert!(!matches(&p, &labels(&[("a", "b")]), "n"));
        let p = required(json!([]));
        assert!(!matches(&p, &labels(&[]), "n"));
    }

    #[test]
    fn node_selector_and_affinity_are_anded() {
        let mut p = required(json!([expr("zone", "In", &["a"])]));
        p.spec.as_mut().unwrap().node_selector = Some(labels(&[("disk", "ssd")]));
        assert!(matches(&p, &labels(&[("zone", "a"), ("disk", "ssd")]), "n"));
        assert!(!matches(&p, &labels(&[("zone", "a")]), "n"));
    }

    #[test]
    fn match_fields_metadata_name() {
        let p = required(
            json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]),
        );
        assert!(matches(&p, &labels(&[]), "n1"));
        assert!(!matches(&p, &labels(&[]), "n2"));
        assert_eq!(
            prefilter_nodes(&p),
            PreFilterNodes::Only(["n1"].into_iter().collect())
        );
        let p = required(
            json!([{"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]}]),
        );
        assert!(!matches(&p, &labels(&[]), "n1"));
        assert!(matches(&p, &labels(&[]), "n2"));
        assert_eq!(prefilter_nodes(&p), PreFilterNodes::All);
        // Two values are invalid for a field requirement.
        let p = required(
            json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1", "n2"]}]}]),
        );
        assert!(!matches(&p, &labels(&[]), "n1"));
    }

    #[test]
    fn prefilter_union_intersection_and_conflict() {
        let f = |v: &[&str]| json!({"key": "metadata.name", "operator": "In", "values": v});
        let p = required(json!([{"matchFields": [f(&["a"])]}, {"matchFields": [f(&["b"])]}]));
        assert_eq!(
            prefilter_nodes(&p),
            PreFilterNodes::Only(["a", "b"].into_iter().collect())
        );
        let p = required(json!([{"matchFields": [f(&["a"]), f(&["b"])]}]));
        assert_eq!(prefilter_nodes(&p), PreFilterNodes::Conflict);
        let p = required(json!([{"matchFields": [f(&["a"])]}, expr("zone", "In", &["z"])]));
        assert_eq!(prefilter_nodes(&p), PreFilterNodes::All);
        assert_eq!(prefilter_nodes(&pod(json!({}))), PreFilterNodes::All);
    }

    #[test]
    fn preferred_sums_matching_weights() {
        let p = pod(
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 5, "preference": expr("zone", "In", &["a"])},
                {"weight": 3, "preference": expr("disk", "Exists", &[])},
                {"weight": 0, "preference": expr("zone", "In", &["a"])},
                {"weight": 7, "preference": {}},
            ]}}}),
        );
        let pref = PreferredAffinity::of(&p);
        assert_eq!(pref.score(&labels(&[("zone", "a"), ("disk", "x")]), "n"), 8);
        assert_eq!(pref.score(&labels(&[("zone", "a")]), "n"), 5);
        assert_eq!(pref.score(&labels(&[]), "n"), 0);
    }
}
