//! Stopping containers and winding a pod down (spec §7.4, §8.2): the `Killing` event, the
//! grace period (deletion grace, probe-level override, pod default), the preStop hook counted
//! against it, the sidecar termination order, the 2 s minimum, then sandbox teardown and the
//! final delete.
//!
//! A kill is a small state machine per instance ([`KillStage`]) because its steps wait on the
//! runtime (the hook) or on other containers (sidecar order); each decision advances it.

use jiff::SignedDuration;
use k8s_openapi::api::core::v1::Container;
use skiff_core::pod::DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS;

use crate::events;
use crate::lifecycle::{Action, Cx, Out};
use crate::memory::{Kill, KillReason, KillStage, Op, PodMemory};
use crate::observed::ContainerRef;
use crate::rules::{self, all_containers};

/// The runtime always gets at least this many seconds between SIGTERM and SIGKILL.
pub const MIN_GRACE_SECONDS: i64 = 2;

/// `setTerminationGracePeriod`: the deletion grace when the pod is being deleted, else the
/// probe-level override for probe kills, else the pod's `terminationGracePeriodSeconds`.
fn grace_for(cx: &Cx, c: &Container, reason: KillReason) -> i64 {
    if let Some(g) = cx.pod.metadata.deletion_grace_period_seconds {
        return g;
    }
    let probe = match reason {
        KillReason::Liveness { .. } => c.liveness_probe.as_ref(),
        KillReason::Startup { .. } => c.startup_probe.as_ref(),
        _ => None,
    };
    probe
        .and_then(|p| p.termination_grace_period_seconds)
        .or(cx.spec.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS)
}

/// The `Killing` event message.
fn message(name: &str, reason: KillReason, sidecar: bool) -> String {
    let (what, restart) = match reason {
        KillReason::Stop => return format!("Stopping container {name}"),
        KillReason::PostStartHook => return "FailedPostStartHook".to_string(),
        KillReason::Liveness { restart } => ("liveness", restart),
        KillReason::Startup { restart } => ("startup", restart),
    };
    if sidecar {
        // The kubelet's init-container path adds no "will be restarted" suffix.
        return format!("Init container {name} failed {what} probe");
    }
    let suffix = if restart { ", will be restarted" } else { "" };
    format!("Container {name} failed {what} probe{suffix}")
}

/// Starts killing instance `attempt` of `r` (once per instance): emits `Killing`, then runs the
/// preStop hook if there is one and grace left.
pub(crate) fn begin_kill(
    cx: &Cx,
    memory: &mut PodMemory,
    out: &mut Out,
    r: ContainerRef,
    attempt: u32,
    reason: KillReason,
    ordered: bool,
) {
    let Some(c) = r.spec(cx.spec) else {
        return;
    };
    let cm = memory.container_mut(r);
    if cm.kill.is_some_and(|k| k.attempt == attempt) {
        return;
    }
    let grace = grace_for(cx, c, reason);
    let sidecar = r.is_sidecar(cx.spec);
    out.events
        .push(events::killing(r, message(&c.name, reason, sidecar)));
    if matches!(
        reason,
        KillReason::Liveness { restart: true } | KillReason::Startup { restart: true }
    ) {
        cm.restart_after_kill = Some(attempt);
    }
    let has_pre_stop = c.lifecycle.as_ref().is_some_and(|l| l.pre_stop.is_some());
    let stage = if has_pre_stop && grace > 0 {
        out.actions.push(Action::RunPreStop {
            container: r,
            attempt,
            grace_seconds: grace,
        });
        KillStage::PreStop {
            since: cx.now,
            done: false,
        }
    } else if ordered && grace > 0 {
        KillStage::WaitTurn { since: cx.now }
    } else {
        KillStage::Stop { sent: false }
    };
    cm.kill = Some(Kill {
        attempt,
        reason,
        grace,
        ordered,
        stage,
    });
}

/// A sidecar may stop once every regular container, every regular init container and every
/// sidecar after it in spec order has stopped.
fn sidecar_turn(cx: &Cx, r: ContainerRef) -> bool {
    let ContainerRef::Init(i) = r else {
        return true;
    };
    all_containers(cx.spec).all(|o| {
        let must_wait = match o {
            ContainerRef::App(_) => true,
            ContainerRef::Init(j) => j > i || !o.is_sidecar(cx.spec),
        };
        !must_wait || cx.observed.container(o).running().is_none()
    })
}

fn whole_secs_since(since: jiff::Timestamp, now: jiff::Timestamp) -> i64 {
    now.duration_since(since).as_secs().max(0)
}

/// Ends the kills whose instance has stopped, recording any reason that waited for it.
pub(crate) fn settle_kills(cx: &Cx, memory: &mut PodMemory) {
    for r in all_containers(cx.spec) {
        let Some(kill) = memory.container(r).kill else {
            continue;
        };
        let running = cx
            .observed
            .container(r)
            .running()
            .is_some_and(|i| i.attempt == kill.attempt);
        if running {
            continue;
        }
        let cm = memory.container_mut(r);
        cm.kill = None;
        if let Some((attempt, reason)) = cm.reason_after_kill.take()
            && attempt == kill.attempt
        {
            cm.reason = Some(reason);
        }
    }
}

/// Moves every kill forward: preStop finished or timed out, sidecar turn reached, `Kill` issued.
/// A kill ends when its instance is no longer running.
pub(crate) fn advance_kills(cx: &Cx, memory: &mut PodMemory, out: &mut Out) {
    for r in all_containers(cx.spec) {
        let Some(kill) = memory.container(r).kill else {
            continue;
        };
        let running = cx
            .observed
            .container(r)
            .running()
            .is_some_and(|i| i.attempt == kill.attempt);
        if !running {
            memory.container_mut(r).kill = None;
            continue;
        }
        let turn = !kill.ordered || sidecar_turn(cx, r);
        let Some(k) = memory.container_mut(r).kill.as_mut() else {
            continue;
        };
        loop {
            match k.stage {
                KillStage::PreStop { since, done } => {
                    let deadline = since + SignedDuration::from_secs(k.grace);
                    if !done && cx.now < deadline {
                        out.wake(deadline);
                        break;
                    }
                    k.grace = (k.grace - whole_secs_since(since, cx.now)).max(0);
                    k.stage = if k.ordered && k.grace > 0 {
                        KillStage::WaitTurn { since: cx.now }
                    } else {
                        KillStage::Stop { sent: false }
                    };
                }
                KillStage::WaitTurn { since } => {
                    let deadline = since + SignedDuration::from_secs(k.grace);
                    if !turn && cx.now < deadline {
                        out.wake(deadline);
                        break;
                    }
                    k.grace = (k.grace - whole_secs_since(since, cx.now)).max(0);
                    k.stage = KillStage::Stop { sent: false };
                }
                KillStage::Stop { sent } => {
                    if !sent {
                        out.actions.push(Action::Kill {
                            container: r,
                            attempt: k.attempt,
                            grace_seconds: k.grace.max(MIN_GRACE_SECONDS),
                            reason: k.reason,
                        });
                        k.stage = KillStage::Stop { sent: true };
                    }
                    break;
                }
            }
        }
    }
}

/// The pod is being deleted or has completed: stop everything still running (regular
/// containers first, sidecars last in reverse order), then the sandbox, then (deleted pods)
/// confirm the deletion.
pub(crate) fn terminate(cx: &Cx, memory: &mut PodMemory, out: &mut Out) {
    let inits = cx.spec.init_containers.as_ref().map_or(0, Vec::len);
    let order = (0..cx.spec.containers.len())
        .map(ContainerRef::App)
        .chain((0..inits).rev().map(ContainerRef::Init));
    for r in order {
        if let Some(inst) = cx.observed.container(r).running() {
            let ordered = r.is_sidecar(cx.spec);
            begin_kill(cx, memory, out, r, inst.attempt, KillReason::Stop, ordered);
        }
    }
    for cm in memory.init.iter_mut().chain(memory.app.iter_mut()) {
        if matches!(cm.op, Op::Pulled { .. }) {
            cm.op = Op::Idle;
        }
    }
    advance_kills(cx, memory, out);
    if rules::any_running(cx.spec, cx.observed) || rules::start_in_flight(memory) {
        return;
    }
    if cx.observed.sandbox_ready {
        if !memory.sandbox.stop_sent {
            memory.sandbox.stop_sent = true;
            out.actions.push(Action::KillPod);
        }
        return;
    }
    if memory.sandbox.creating {
        return;
    }
    if cx.deleting && !memory.deletion_confirmed {
        memory.deletion_confirmed = true;
        out.actions.push(Action::ConfirmDeletion);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn killing_messages() {
        assert_eq!(
            message("app", KillReason::Stop, false),
            "Stopping container app"
        );
        assert_eq!(
            message("app", KillReason::Liveness { restart: true }, false),
            "Container app failed liveness probe, will be restarted"
        );
        assert_eq!(
            message("app", KillReason::Liveness { restart: false }, false),
            "Container app failed liveness probe"
        );
        assert_eq!(
            message("app", KillReason::Startup { restart: true }, false),
            "Container app failed startup probe, will be restarted"
        );
        assert_eq!(
            message("proxy", KillReason::Liveness { restart: true }, true),
            "Init container proxy failed liveness probe"
        );
        assert_eq!(
            message("app", KillReason::PostStartHook, false),
            "FailedPostStartHook"
        );
    }
}
