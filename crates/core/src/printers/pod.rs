//! The pods table: NAME READY STATUS RESTARTS AGE, wide IP NODE NOMINATED NODE READINESS GATES.
//!
//! STATUS/READY/RESTARTS follow shared/spec/pod-lifecycle.md §3.2 step by step, including its
//! quirks (the container whose name sorts first wins; RESTARTS counts only the init containers up
//! to the blocking one while initializing; `Terminating` overrides everything but terminal pods).

use std::collections::HashSet;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{AGE_DESC, col, creation_age, name, name_col};
use crate::duration::age;
use crate::fields::{at, bool_at, int_at, list_at, pod_ip, str_at, time_at};

pub(super) fn columns() -> Vec<super::Column> {
    vec![
        name_col(0),
        col(
            "Ready",
            "Ready containers out of all containers (including sidecars) in the pod.",
            0,
        ),
        col(
            "Status",
            "The pod phase, or the most relevant container or pod reason.",
            0,
        ),
        col(
            "Restarts",
            "Total container restarts, and how long ago the last one happened.",
            0,
        ),
        col("Age", AGE_DESC, 0),
        col(
            "IP",
            "The pod's primary IP address, if one is allocated.",
            1,
        ),
        col("Node", "The node the pod is bound to (spec.nodeName).", 1),
        col(
            "Nominated Node",
            "The node the scheduler nominated after preempting pods there (status.nominatedNodeName).",
            1,
        ),
        col(
            "Readiness Gates",
            "Readiness gates whose condition is True, out of all gates in spec.readinessGates.",
            1,
        ),
    ]
}

/// The computed READY / STATUS / RESTARTS of a pod (§3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSummary {
    /// Ready containers (regular and started sidecars).
    pub ready: usize,
    /// Regular containers plus sidecars (init containers with `restartPolicy: Always`).
    pub total: usize,
    /// The STATUS column.
    pub status: String,
    /// Total restarts counted by the algorithm.
    pub restarts: i64,
    /// The latest `lastState.terminated.finishedAt` among the counted containers.
    pub last_restart: Option<Timestamp>,
}

impl PodSummary {
    /// The READY column, `ready/total`.
    pub fn ready_text(&self) -> String {
        format!("{}/{}", self.ready, self.total)
    }

    /// The RESTARTS column: `N`, or `N (AGE ago)` when there were restarts with a known time.
    pub fn restarts_text(&self, now: Timestamp) -> String {
        match self.last_restart {
            Some(t) if self.restarts != 0 => {
                format!("{} ({} ago)", self.restarts, age(now, Some(t)))
            }
            _ => self.restarts.to_string(),
        }
    }
}

/// Restart count and latest restart time over a set of container statuses.
#[derive(Debug, Clone, Copy, Default)]
struct Restarts {
    count: i64,
    last: Option<Timestamp>,
}

impl Restarts {
    fn add(&mut self, status: &Value) {
        self.count += int_at(status, &["restartCount"]);
        let finished = time_at(status, &["lastState", "terminated", "finishedAt"]);
        self.last = self.last.max(finished);
    }
}

/// Computes READY, STATUS and RESTARTS for a pod object (JSON), per §3.2.
pub fn pod_summary(pod: &Value) -> PodSummary {
    let init_specs = list_at(pod, &["spec", "initContainers"]);
    let sidecars: HashSet<&str> = init_specs
        .iter()
        .filter(|c| str_at(c, &["restartPolicy"]) == "Always")
        .map(|c| str_at(c, &["name"]))
        .collect();
    let sidecar_specs = init_specs
        .iter()
        .filter(|c| str_at(c, &["restartPolicy"]) == "Always")
        .count();
    let total = list_at(pod, &["spec", "containers"]).len() + sidecar_specs;
    let conditions = list_at(pod, &["status", "conditions"]);

    let mut status = str_at(pod, &["status", "phase"]).to_string();
    let pod_reason = str_at(pod, &["status", "reason"]);
    if !pod_reason.is_empty() {
        status = pod_reason.to_string();
    }
    if conditions.iter().any(|c| {
        str_at(c, &["type"]) == "PodScheduled" && str_at(c, &["reason"]) == "SchedulingGated"
    }) {
        status = "SchedulingGated".to_string();
    }

    let mut ready = 0;
    let mut all = Restarts::default();
    let mut sidecar_restarts = Restarts::default();
    let mut initializing = false;
    for (i, c) in list_at(pod, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        all.add(c);
        let is_sidecar = sidecars.contains(str_at(c, &["name"]));
        if is_sidecar {
            sidecar_restarts.add(c);
        }
        let terminated = at(c, &["state", "terminated"]);
        if terminated.is_some_and(|t| int_at(t, &["exitCode"]) == 0) {
            continue;
        }
        if is_sidecar && bool_at(c, &["started"]) {
            if bool_at(c, &["ready"]) {
                ready += 1;
            }
            continue;
        }
        initializing = true;
        let waiting = str_at(c, &["state", "waiting", "reason"]);
        status = match terminated {
            Some(t) => terminated_reason("Init:", t),
            None if !waiting.is_empty() && waiting != "PodInitializing" => {
                format!("Init:{waiting}")
            }
            None => format!("Init:{i}/{}", init_specs.len()),
        };
        break;
    }

    let mut restarts = all;
    if !initializing || condition_status(conditions, "Initialized") == Some("True") {
        restarts = sidecar_restarts;
        let mut has_running = false;
        for c in list_at(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts.add(c);
            let waiting = str_at(c, &["state", "waiting", "reason"]);
            let terminated = at(c, &["state", "terminated"]);
            if !waiting.is_empty() {
                status = waiting.to_string();
            } else if let Some(t) = terminated {
                status = terminated_reason("", t);
            } else if bool_at(c, &["ready"]) && at(c, &["state", "running"]).is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if status == "Completed" && has_running {
            status = if any_condition_true(conditions, "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    if at(pod, &["metadata", "deletionTimestamp"]).is_some() {
        let phase = str_at(pod, &["status", "phase"]);
        if pod_reason == "NodeLost" {
            status = "Unknown".to_string();
        } else if phase != "Succeeded" && phase != "Failed" {
            status = "Terminating".to_string();
        }
    }

    PodSummary {
        ready,
        total,
        status,
        restarts: restarts.count,
        last_restart: restarts.last,
    }
}

/// `<prefix><reason>`, or `<prefix>Signal:N` / `<prefix>ExitCode:N` when the reason is empty.
fn terminated_reason(prefix: &str, terminated: &Value) -> String {
    let reason = str_at(terminated, &["reason"]);
    if !reason.is_empty() {
        return format!("{prefix}{reason}");
    }
    let signal = int_at(terminated, &["signal"]);
    if signal != 0 {
        format!("{prefix}Signal:{signal}")
    } else {
        format!("{prefix}ExitCode:{}", int_at(terminated, &["exitCode"]))
    }
}

/// The status of the first condition of type `kind`, if there is one.
fn condition_status<'a>(conditions: &'a [Value], kind: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| str_at(c, &["type"]) == kind)
        .map(|c| str_at(c, &["status"]))
}

fn any_condition_true(conditions: &[Value], kind: &str) -> bool {
    conditions
        .iter()
        .any(|c| str_at(c, &["type"]) == kind && str_at(c, &["status"]) == "True")
}

/// `T/N` over `spec.readinessGates`, or `<none>` without gates.
fn readiness_gates(pod: &Value) -> String {
    let gates = list_at(pod, &["spec", "readinessGates"]);
    if gates.is_empty() {
        return "<none>".to_string();
    }
    let conditions = list_at(pod, &["status", "conditions"]);
    let passing = gates
        .iter()
        .filter(|g| condition_status(conditions, str_at(g, &["conditionType"])) == Some("True"))
        .count();
    format!("{passing}/{}", gates.len())
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".to_string()
    } else {
        s.to_string()
    }
}

pub(super) fn cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let summary = pod_summary(pod);
    vec![
        name(pod).into(),
        summary.ready_text().into(),
        summary.status.clone().into(),
        summary.restarts_text(now).into(),
        creation_age(pod, now).into(),
        or_none(&pod_ip(pod)).into(),
        or_none(str_at(pod, &["spec", "nodeName"])).into(),
        or_none(str_at(pod, &["status", "nominatedNodeName"])).into(),
        readiness_gates(pod).into(),
    ]
}

pub(super) fn row_conditions(pod: &Value) -> Option<Value> {
    let (reason, message) = match str_at(pod, &["status", "phase"]) {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!([{
        "type": "Completed",
        "status": "True",
        "reason": reason,
        "message": message,
    }]))
}

#[cfg(test)]
mod tests {
    use super::super::ts;
    use super::*;

    const NOW: &str = "2026-01-01T12:00:00Z";

    /// A pod with the given spec and status, created an hour before NOW.
    fn pod(spec: Value, status: Value) -> Value {
        json!({
            "metadata": {"name": "p", "namespace": "default", "creationTimestamp": "2026-01-01T11:00:00Z"},
            "spec": spec,
            "status": status,
        })
    }

    fn one_container() -> Value {
        json!({"containers": [{"name": "app", "image": "nginx"}]})
    }

    fn two_inits() -> Value {
        json!({"initContainers": [{"name": "i1"}, {"name": "i2"}],
               "containers": [{"name": "app"}]})
    }

    fn running(name: &str, ready: bool) -> Value {
        json!({"name": name, "ready": ready, "restartCount": 0, "started": true,
               "state": {"running": {"startedAt": "2026-01-01T11:00:05Z"}}})
    }

    fn waiting(name: &str, reason: &str) -> Value {
        json!({"name": name, "ready": false, "restartCount": 0,
               "state": {"waiting": {"reason": reason}}})
    }

    fn terminated(name: &str, exit: i64, reason: &str) -> Value {
        json!({"name": name, "ready": false, "restartCount": 0,
               "state": {"terminated": {"exitCode": exit, "reason": reason}}})
    }

    /// (READY, STATUS, RESTARTS) as printed.
    fn summary(p: &Value) -> (String, String, String) {
        let s = pod_summary(p);
        (s.ready_text(), s.status.clone(), s.restarts_text(ts(NOW)))
    }

    fn check(p: Value, ready: &str, status: &str, restarts: &str) {
        assert_eq!(
            summary(&p),
            (ready.to_string(), status.to_string(), restarts.to_string()),
            "{p}"
        );
    }

    #[test]
    fn pending_unscheduled() {
        check(
            pod(one_container(), json!({"phase": "Pending"})),
            "0/1",
            "Pending",
            "0",
        );
    }

    #[test]
    fn container_creating() {
        let st =
            json!({"phase": "Pending", "containerStatuses": [waiting("app", "ContainerCreating")]});
        check(pod(one_container(), st), "0/1", "ContainerCreating", "0");
    }

    #[test]
    fn running_ready_and_not_ready() {
        let st = json!({"phase": "Running", "containerStatuses": [running("app", true)]});
        check(pod(one_container(), st), "1/1", "Running", "0");
        let st = json!({"phase": "Running", "containerStatuses": [running("app", false)]});
        check(pod(one_container(), st), "0/1", "Running", "0");
    }

    #[test]
    fn crash_loop_with_restart_age() {
        let mut c = waiting("app", "CrashLoopBackOff");
        c["restartCount"] = json!(3);
        c["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error",
                                               "finishedAt": "2026-01-01T11:59:15Z"}});
        let st = json!({"phase": "Running", "containerStatuses": [c]});
        check(
            pod(one_container(), st),
            "0/1",
            "CrashLoopBackOff",
            "3 (45s ago)",
        );
    }

    #[test]
    fn restarts_without_last_state_have_no_age() {
        let mut c = running("app", true);
        c["restartCount"] = json!(2);
        let st = json!({"phase": "Running", "containerStatuses": [c]});
        check(pod(one_container(), st), "1/1", "Running", "2");
    }

    #[test]
    fn error_and_completed() {
        let st = json!({"phase": "Failed", "containerStatuses": [terminated("app", 1, "Error")]});
        check(pod(one_container(), st), "0/1", "Error", "0");
        let st =
            json!({"phase": "Succeeded", "containerStatuses": [terminated("app", 0, "Completed")]});
        check(pod(one_container(), st), "0/1", "Completed", "0");
    }

    #[test]
    fn exit_code_and_signal_without_reason() {
        let st = json!({"phase": "Failed", "containerStatuses": [terminated("app", 3, "")]});
        check(pod(one_container(), st), "0/1", "ExitCode:3", "0");
        let mut c = terminated("app", 137, "");
        c["state"]["terminated"]["signal"] = json!(9);
        let st = json!({"phase": "Failed", "containerStatuses": [c]});
        check(pod(one_container(), st), "0/1", "Signal:9", "0");
    }

    #[test]
    fn init_progress() {
        let st = json!({"phase": "Pending",
            "initContainerStatuses": [waiting("i1", "PodInitializing"), waiting("i2", "PodInitializing")],
            "containerStatuses": [waiting("app", "PodInitializing")]});
        check(pod(two_inits(), st), "0/1", "Init:0/2", "0");

        let st = json!({"phase": "Pending",
            "initContainerStatuses": [running("i1", false), waiting("i2", "PodInitializing")],
            "containerStatuses": [waiting("app", "PodInitializing")]});
        check(pod(two_inits(), st), "0/1", "Init:0/2", "0");

        let st = json!({"phase": "Pending",
            "initContainerStatuses": [terminated("i1", 0, "Completed"), running("i2", false)],
            "containerStatuses": [waiting("app", "PodInitializing")]});
        check(pod(two_inits(), st), "0/1", "Init:1/2", "0");
    }

    #[test]
    fn pod_initializing_after_inits() {
        let st = json!({"phase": "Pending",
            "conditions": [{"type": "Initialized", "status": "True"}],
            "initContainerStatuses": [terminated("i1", 0, "Completed"), terminated("i2", 0, "Completed")],
            "containerStatuses": [waiting("app", "PodInitializing")]});
        check(pod(two_inits(), st), "0/1", "PodInitializing", "0");
    }

    #[test]
    fn init_failures() {
        let st = json!({"phase": "Pending",
            "initContainerStatuses": [terminated("i1", 1, "Error"), waiting("i2", "PodInitializing")],
            "containerStatuses": [waiting("app", "PodInitializing")]});
        check(pod(two_inits(), st), "0/1", "Init:Error", "0");

        let mut i1 = waiting("i1", "CrashLoopBackOff");
        i1["restartCount"] = json!(4);
        i1["lastState"] =
            json!({"terminated": {"exitCode": 1, "finishedAt": "2026-01-01T11:58:00Z"}});
        let mut app = waiting("app", "PodInitializing");
        app["restartCount"] = json!(7);
        let st = json!({"phase": "Pending",
            "initContainerStatuses": [i1, waiting("i2", "PodInitializing")],
            "containerStatuses": [app]});
        // While initializing, only the init containers count toward RESTARTS.
        check(
            pod(two_inits(), st),
            "0/1",
            "Init:CrashLoopBackOff",
            "4 (2m ago)",
        );

        let st = json!({"phase": "Failed",
            "initContainerStatuses": [terminated("i1", 3, "")],
            "containerStatuses": [waiting("app", "PodInitializing")]});
        check(pod(two_inits(), st), "0/1", "Init:ExitCode:3", "0");

        let mut i1 = terminated("i1", 137, "");
        i1["state"]["terminated"]["signal"] = json!(9);
        let st = json!({"phase": "Failed", "initContainerStatuses": [i1]});
        check(pod(two_inits(), st), "0/1", "Init:Signal:9", "0");
    }

    #[test]
    fn terminating_and_node_lost() {
        let mut p = pod(
            one_container(),
            json!({"phase": "Running", "containerStatuses": [running("app", true)]}),
        );
        p["metadata"]["deletionTimestamp"] = json!("2026-01-01T11:59:00Z");
        check(p.clone(), "1/1", "Terminating", "0");

        p["status"]["reason"] = json!("NodeLost");
        check(p, "1/1", "Unknown", "0");

        let mut done = pod(
            one_container(),
            json!({"phase": "Failed", "containerStatuses": [terminated("app", 1, "Error")]}),
        );
        done["metadata"]["deletionTimestamp"] = json!("2026-01-01T11:59:00Z");
        check(done, "0/1", "Error", "0");

        // Terminating overrides container reasons too.
        let mut crashing = pod(
            one_container(),
            json!({"phase": "Running", "containerStatuses": [waiting("app", "CrashLoopBackOff")]}),
        );
        crashing["metadata"]["deletionTimestamp"] = json!("2026-01-01T11:59:00Z");
        check(crashing, "0/1", "Terminating", "0");
    }

    #[test]
    fn scheduling_gated() {
        let st = json!({"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]});
        check(pod(one_container(), st), "0/1", "SchedulingGated", "0");
    }

    #[test]
    fn pod_reason_overrides_phase() {
        let st = json!({"phase": "Failed", "reason": "Evicted"});
        check(pod(one_container(), st), "0/1", "Evicted", "0");
    }

    #[test]
    fn sidecar_counts_in_ready_and_restarts() {
        let spec = json!({
            "initContainers": [{"name": "proxy", "restartPolicy": "Always"}, {"name": "setup"}],
            "containers": [{"name": "app"}]});
        let mut proxy = running("proxy", true);
        proxy["restartCount"] = json!(2);
        proxy["lastState"] =
            json!({"terminated": {"exitCode": 1, "finishedAt": "2026-01-01T11:50:00Z"}});
        let mut setup = terminated("setup", 0, "Completed");
        setup["restartCount"] = json!(5);
        let st = json!({"phase": "Running",
            "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
            "initContainerStatuses": [proxy, setup],
            "containerStatuses": [running("app", true)]});
        // Completed regular init containers no longer count; the sidecar does.
        check(pod(spec.clone(), st), "2/2", "Running", "2 (10m ago)");

        // A sidecar not started yet blocks like a regular init container.
        let st = json!({"phase": "Pending",
            "initContainerStatuses": [waiting("proxy", "PodInitializing"), waiting("setup", "PodInitializing")],
            "containerStatuses": [waiting("app", "PodInitializing")]});
        check(pod(spec, st), "0/2", "Init:0/2", "0");
    }

    #[test]
    fn first_sorted_container_wins() {
        let spec = json!({"containers": [{"name": "b"}, {"name": "a"}, {"name": "c"}]});
        let st = json!({"phase": "Running", "containerStatuses": [
            waiting("a", "ImagePullBackOff"), terminated("b", 1, "Error"), running("c", true)]});
        check(pod(spec, st), "1/3", "ImagePullBackOff", "0");
    }

    #[test]
    fn completed_next_to_running() {
        let spec = json!({"containers": [{"name": "a"}, {"name": "b"}]});
        let statuses = json!([terminated("a", 0, "Completed"), running("b", true)]);
        let st = json!({"phase": "Running", "containerStatuses": statuses,
                        "conditions": [{"type": "Ready", "status": "False"}]});
        check(pod(spec.clone(), st), "1/2", "NotReady", "0");
        let st = json!({"phase": "Running", "containerStatuses": statuses,
                        "conditions": [{"type": "Ready", "status": "True"}]});
        check(pod(spec, st), "1/2", "Running", "0");
    }

    #[test]
    fn restarts_sum_and_latest_time() {
        let spec = json!({"containers": [{"name": "a"}, {"name": "b"}]});
        let mut a = running("a", true);
        a["restartCount"] = json!(1);
        a["lastState"] = json!({"terminated": {"finishedAt": "2026-01-01T10:00:00Z"}});
        let mut b = running("b", true);
        b["restartCount"] = json!(2);
        b["lastState"] = json!({"terminated": {"finishedAt": "2026-01-01T11:55:00Z"}});
        let st = json!({"phase": "Running", "containerStatuses": [a, b]});
        check(pod(spec, st), "2/2", "Running", "3 (5m ago)");
    }

    #[test]
    fn full_row_and_wide_cells() {
        let spec = json!({"containers": [{"name": "app"}], "nodeName": "node-1",
                          "readinessGates": [{"conditionType": "example.com/lb"}, {"conditionType": "x/y"}]});
        let st = json!({"phase": "Running", "podIP": "10.244.0.6", "podIPs": [{"ip": "10.244.0.6"}],
                        "conditions": [{"type": "example.com/lb", "status": "True"}, {"type": "x/y", "status": "False"}],
                        "containerStatuses": [running("app", true)]});
        let cells = super::super::row_cells("pods", &pod(spec, st), ts(NOW));
        assert_eq!(
            cells,
            vec![
                json!("p"),
                json!("1/1"),
                json!("Running"),
                json!("0"),
                json!("60m"),
                json!("10.244.0.6"),
                json!("node-1"),
                json!("<none>"),
                json!("1/2"),
            ]
        );
        let bare = super::super::row_cells("pods", &json!({"metadata": {"name": "q"}}), ts(NOW));
        assert_eq!(
            bare,
            vec![
                json!("q"),
                json!("0/0"),
                json!(""),
                json!("0"),
                json!("<unknown>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
            ]
        );
    }

    #[test]
    fn columns_match_the_real_server() {
        let cols = columns();
        let shape: Vec<_> = cols.iter().map(|c| (c.name, c.type_, c.priority)).collect();
        assert_eq!(
            shape,
            [
                ("Name", "string", 0),
                ("Ready", "string", 0),
                ("Status", "string", 0),
                ("Restarts", "string", 0),
                ("Age", "string", 0),
                ("IP", "string", 1),
                ("Node", "string", 1),
                ("Nominated Node", "string", 1),
                ("Readiness Gates", "string", 1),
            ]
        );
        assert_eq!(cols[0].format, "name");
    }

    #[test]
    fn completed_row_conditions() {
        let ok = pod(one_container(), json!({"phase": "Succeeded"}));
        assert_eq!(
            row_conditions(&ok),
            Some(
                json!([{"type": "Completed", "status": "True", "reason": "Succeeded",
                         "message": "The pod has completed successfully."}])
            )
        );
        let failed = pod(one_container(), json!({"phase": "Failed"}));
        assert_eq!(row_conditions(&failed).unwrap()[0]["reason"], "Failed");
        assert_eq!(
            row_conditions(&failed).unwrap()[0]["message"],
            "The pod failed."
        );
        assert!(row_conditions(&pod(one_container(), json!({"phase": "Running"}))).is_none());
    }
}
