//! The FailedScheduling message (§10.5): why a pod fits no node.
//!
//! Clients and humans read this text (`kubectl describe pod`, the PodScheduled condition), so its
//! shape is upstream's to the byte: `0/N nodes are available: ` + the reason histogram, each item
//! `"<count> <reason>"`, sorted as plain byte strings (so `10 …` sorts before `2 …`), joined by
//! `", "`, ending with `.`; then the preemption part. skiff has no pod priorities, so preemption
//! never finds victims: nodes rejected for resources read `No preemption victims found for
//! incoming pod`, nodes rejected for anything else `Preemption is not helpful for scheduling`.
//! With no nodes at all upstream does not build a FitError; it reports
//! `no nodes available to schedule pods`, and so does [`FitError::message`].

use crate::filter::{
    Code, ERR_REASON_NODE_AFFINITY, ERR_REASON_NODE_NAME, ERR_REASON_UNSCHEDULABLE,
    REASON_INSUFFICIENT_CPU, REASON_INSUFFICIENT_EPHEMERAL_STORAGE, REASON_INSUFFICIENT_MEMORY,
    REASON_TOO_MANY_PODS, Rejection, insufficient_reason, untolerated_taint_reason,
};
use crate::prepared::PreparedPod;
use crate::snapshot::NodeInfo;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// What the scheduler reports when the snapshot has no nodes.
pub const ERR_NO_NODES_AVAILABLE: &str = "no nodes available to schedule pods";
/// Event notes longer than this are truncated (the PodScheduled condition keeps the full text).
pub const NOTE_LENGTH_LIMIT: usize = 1024;
pub const PREEMPTION_NO_VICTIMS: &str = "No preemption victims found for incoming pod";
pub const PREEMPTION_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// The preemption message for a pod with `preemptionPolicy: Never`.
pub const PREEMPTION_POLICY_NEVER: &str = "not eligible due to preemptionPolicy=Never.";
/// The PodScheduled condition reason for every FitError (and for the no-nodes case).
pub const REASON_UNSCHEDULABLE: &str = "Unschedulable";

/// The reason given for nodes a PreFilter result excluded, e.g.
/// `node(s) didn't satisfy plugin(s) [NodeAffinity]` (1.32+ wording).
pub fn prefilter_excluded_reason(plugins: &[&str]) -> String {
    format!("node(s) didn't satisfy plugin(s) [{}]", plugins.join(" "))
}

/// Why a pod could not be placed, with everything needed to render the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    /// Nodes in the snapshot.
    pub num_all_nodes: usize,
    /// Set when a PreFilter rejected the pod outright (the histogram is then not printed).
    pub pre_filter_msg: Option<String>,
    /// Reason → number of nodes that reported it.
    pub reasons: BTreeMap<String, usize>,
    /// The PostFilter (preemption) message, already prefixed with `preemption: `.
    pub post_filter_msg: Option<String>,
    /// Plugins that rejected at least one node (for queueing decisions), sorted.
    pub unschedulable_plugins: Vec<&'static str>,
    /// Nodes the filters ran on.
    pub evaluated: usize,
    /// Where the next cycle should start filtering.
    pub next_start_index: usize,
}

impl FitError {
    /// The error for an empty snapshot.
    pub fn no_nodes(next_start_index: usize) -> FitError {
        FitError {
            num_all_nodes: 0,
            pre_filter_msg: None,
            reasons: BTreeMap::new(),
            post_filter_msg: None,
            unschedulable_plugins: Vec::new(),
            evaluated: 0,
            next_start_index,
        }
    }

    /// The full message (PodScheduled condition message; the event uses
    /// [`truncate_event_message`] of it).
    pub fn message(&self) -> String {
        if self.num_all_nodes == 0 {
            return ERR_NO_NODES_AVAILABLE.to_string();
        }
        format_fit_message(
            self.num_all_nodes,
            self.pre_filter_msg.as_deref(),
            self.reasons.iter().map(|(r, c)| (r.as_str(), *c)),
            self.post_filter_msg.as_deref(),
        )
    }

    /// The message truncated for the FailedScheduling event.
    pub fn event_message(&self) -> String {
        truncate_event_message(&self.message())
    }
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for FitError {}

/// `0/N nodes are available:` + (` <prefilter msg>.` | ` <sorted histogram>.`) + (` <post>`).
pub fn format_fit_message<'r>(
    num_all_nodes: usize,
    pre_filter_msg: Option<&str>,
    histogram: impl IntoIterator<Item = (&'r str, usize)>,
    post_filter_msg: Option<&str>,
) -> String {
    let mut msg = format!("0/{num_all_nodes} nodes are available:");
    match pre_filter_msg.filter(|m| !m.is_empty()) {
        Some(m) => {
            msg.push(' ');
            msg.push_str(m);
            msg.push('.');
        }
        None => {
            let mut items: Vec<String> = histogram
                .into_iter()
                .filter(|(_, c)| *c > 0)
                .map(|(r, c)| format!("{c} {r}"))
                .collect();
            items.sort();
            if !items.is_empty() {
                msg.push(' ');
                msg.push_str(&items.join(", "));
                msg.push('.');
            }
        }
    }
    if let Some(p) = post_filter_msg.filter(|m| !m.is_empty()) {
        msg.push(' ');
        msg.push_str(p);
    }
    msg
}

/// The preemption PostFilter message when no node has victims:
/// `preemption: 0/N nodes are available: K No preemption victims found for incoming pod, M
/// Preemption is not helpful for scheduling.`
pub fn preemption_message(num_all_nodes: usize, no_victims: usize, not_helpful: usize) -> String {
    let body = format_fit_message(
        num_all_nodes,
        None,
        [
            (PREEMPTION_NO_VICTIMS, no_victims),
            (PREEMPTION_NOT_HELPFUL, not_helpful),
        ],
        None,
    );
    format!("preemption: {body}")
}

/// Upstream's `truncateMessage`: messages over 1024 bytes keep their first 1020 bytes and get
/// `" ..."` appended (cut back to a character boundary, which upstream does not need for its
/// ASCII texts).
pub fn truncate_event_message(msg: &str) -> String {
    if msg.len() <= NOTE_LENGTH_LIMIT {
        return msg.to_string();
    }
    const SUFFIX: &str = " ...";
    let mut end = NOTE_LENGTH_LIMIT - SUFFIX.len();
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{SUFFIX}", &msg[..end])
}

/// Tally of filter rejections during one cycle, without formatting anything until the pod turns
/// out to fit nowhere. Borrows taint strings from the snapshot.
#[derive(Debug, Default)]
pub(crate) struct Diagnosis<'s> {
    unschedulable: usize,
    node_name: usize,
    node_affinity: usize,
    too_many_pods: usize,
    cpu: usize,
    memory: usize,
    ephemeral: usize,
    taints: HashMap<(&'s str, &'s str), usize>,
    /// Per index into the pod's scalar requests.
    scalar: Vec<usize>,
    /// Nodes rejected by a filter.
    pub rejected: usize,
    /// Of those, rejected as UnschedulableAndUnresolvable.
    pub unresolvable: usize,
}

impl<'s> Diagnosis<'s> {
    pub(crate) fn record(&mut self, r: &Rejection, node: &'s NodeInfo) {
        self.rejected += 1;
        if r.code() == Code::UnschedulableAndUnresolvable {
            self.unresolvable += 1;
        }
        match r {
            Rejection::NodeUnschedulable => self.unschedulable += 1,
            Rejection::NodeName => self.node_name += 1,
            Rejection::NodeAffinity => self.node_affinity += 1,
            Rejection::UntoleratedTaint(i) => {
                let t = &node.taints[*i];
                *self
                    .taints
                    .entry((t.key.as_str(), t.value.as_str()))
                    .or_insert(0) += 1;
            }
            Rejection::Resources(s) => {
                self.too_many_pods += usize::from(s.too_many_pods);
                self.cpu += usize::from(s.cpu);
                self.memory += usize::from(s.memory);
                self.ephemeral += usize::from(s.ephemeral_storage);
                let mut bits = s.scalar;
                while bits != 0 {
                    let i = bits.trailing_zeros() as usize;
                    if self.scalar.len() <= i {
                        self.scalar.resize(i + 1, 0);
                    }
                    self.scalar[i] += 1;
                    bits &= bits - 1;
                }
            }
        }
    }

    /// The histogram of reasons (texts built here, once).
    pub(crate) fn histogram(&self, pod: &PreparedPod<'_>) -> BTreeMap<String, usize> {
        let mut h = BTreeMap::new();
        let mut put = |reason: String, count: usize| {
            if count > 0 {
                *h.entry(reason).or_insert(0) += count;
            }
        };
        put(ERR_REASON_UNSCHEDULABLE.into(), self.unschedulable);
        put(ERR_REASON_NODE_NAME.into(), self.node_name);
        put(ERR_REASON_NODE_AFFINITY.into(), self.node_affinity);
        put(REASON_TOO_MANY_PODS.into(), self.too_many_pods);
        put(REASON_INSUFFICIENT_CPU.into(), self.cpu);
        put(REASON_INSUFFICIENT_MEMORY.into(), self.memory);
        put(REASON_INSUFFICIENT_EPHEMERAL_STORAGE.into(), self.ephemeral);
        for ((k, v), c) in &self.taints {
            put(untolerated_taint_reason(k, v), *c);
        }
        for (i, c) in self.scalar.iter().enumerate() {
            if let Some((name, _)) = pod.requests.scalar.get(i) {
                put(insufficient_reason(name), *c);
            }
        }
        h
    }

    /// The plugins that rejected at least one node, sorted.
    pub(crate) fn plugins(&self) -> Vec<&'static str> {
        let mut p = Vec::new();
        let resources = self.too_many_pods
            + self.cpu
            + self.memory
            + self.ephemeral
            + self.scalar.iter().sum::<usize>();
        for (count, name) in [
            (self.node_affinity, "NodeAffinity"),
            (self.node_name, "NodeName"),
            (resources, "NodeResourcesFit"),
            (self.unschedulable, "NodeUnschedulable"),
            (self.taints.values().sum::<usize>(), "TaintToleration"),
        ] {
            if count > 0 {
                p.push(name);
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: usize, items: &[(&str, usize)], post: Option<String>) -> String {
        format_fit_message(n, None, items.iter().copied(), post.as_deref())
    }

    #[test]
    fn spec_example_insufficient_cpu() {
        let m = msg(
            3,
            &[("Insufficient cpu", 3)],
            Some(preemption_message(3, 3, 0)),
        );
        assert_eq!(
            m,
            "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
        );
    }

    #[test]
    fn spec_example_taint_and_memory() {
        let m = msg(
            2,
            &[
                (
                    "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }",
                    1,
                ),
                ("Insufficient memory", 1),
            ],
            Some(preemption_message(2, 1, 1)),
        );
        assert_eq!(
            m,
            "0/2 nodes are available: 1 Insufficient memory, 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }. preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn items_sort_as_byte_strings() {
        let m = msg(
            13,
            &[
                ("Insufficient cpu", 2),
                ("node(s) were unschedulable", 10),
                ("Too many pods", 1),
            ],
            None,
        );
        assert_eq!(
            m,
            "0/13 nodes are available: 1 Too many pods, 10 node(s) were unschedulable, 2 Insufficient cpu."
        );
        // Equal counts: capitalised reasons sort before `node(s) ...`.
        let m = msg(
            2,
            &[("node(s) were unschedulable", 1), ("Insufficient cpu", 1)],
            None,
        );
        assert_eq!(
            m,
            "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) were unschedulable."
        );
    }

    #[test]
    fn prefilter_message_replaces_the_histogram() {
        let m = format_fit_message(
            3,
            Some("pod affinity terms conflict"),
            [("ignored", 3)],
            Some(&preemption_message(3, 0, 3)),
        );
        assert_eq!(
            m,
            "0/3 nodes are available: pod affinity terms conflict. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn no_nodes() {
        assert_eq!(
            FitError::no_nodes(0).message(),
            "no nodes available to schedule pods"
        );
    }

    #[test]
    fn truncation() {
        let short = "x".repeat(1024);
        assert_eq!(truncate_event_message(&short), short);
        let long = "y".repeat(2000);
        let t = truncate_event_message(&long);
        assert_eq!(t.len(), 1024);
        assert!(t.ends_with("y ..."));
        assert_eq!(&t[..1020], &long[..1020]);
        // Never splits a character.
        let uni = "é".repeat(600);
        let t = truncate_event_message(&uni);
        assert!(t.len() <= 1024 && t.ends_with(" ..."));
    }

    #[test]
    fn prefilter_reason_text() {
        assert_eq!(
            prefilter_excluded_reason(&["NodeAffinity"]),
            "node(s) didn't satisfy plugin(s) [NodeAffinity]"
        );
    }
}
