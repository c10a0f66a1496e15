//! The pod lifecycle engine: one pure function, [`decide`], from (pod, observation, memory, now)
//! to the next actions, the status to report, the events to record and when to be called again.
//!
//! This is the kubelet's pod worker, `computePodActions`/`SyncPod`, the probe workers and the
//! status generator folded into a level-triggered decision. The worker around it only carries
//! actions out through the runtime, reports what finished as [`Outcome`]s, writes the status and
//! events, and sleeps until `wake_at` or the next runtime event. Everything with rules in it —
//! restart policy, back-off, init and sidecar ordering, probes, hooks, termination — lives here
//! and in the modules it calls (`start`, `kill`, [`crate::status`]), and is
//! tested with a fake clock.
//!
//! One call does, in order:
//! 1. **ingest** the outcomes (pull/start/hook/probe results): events, reason cache, back-off;
//! 2. **status**: generated from the observation and memory as they are now, like the kubelet
//!    that writes the status at the start of a sync (so a crash is reported as `Error` before the
//!    `CrashLoopBackOff` decided in step 3 shows up; a changed reason asks for a re-run after
//!    [`STATUS_RESYNC`]);
//! 3. **sync** (the pod runs: sandbox, init containers, regular containers, probe kills) or
//!    **terminate** (deleted or complete: preStop, SIGTERM/SIGKILL, sidecars last, sandbox, final
//!    delete);
//! 4. **probes** that are due.
//!
//! The worker's side of the contract: pass each [`Outcome`] exactly once; take the observation
//! no earlier than the outcomes it carries (an instance reported `Started` must already be in
//! it); write `status` before performing `ConfirmDeletion`; keep one [`PodMemory`] per pod UID.
//!
//! Deliberately left out (for now):
//! * Sandbox recreation after the sandbox dies (`SandboxChanged`, re-running init containers) and
//!   the "do not recreate the sandbox of a finished `Never` pod" rule; the engine creates the
//!   sandbox once.
//! * Container spec changes on a running pod (`Container NAME definition changed, will be
//!   restarted`); only the image is part of the back-off key.
//! * In-place resize, ephemeral containers, evictions other than `activeDeadlineSeconds`,
//!   admission rejections (`OutOfcpu`…), the `ContainerStatusUnknown` synthesis for vanished
//!   containers, `observedGeneration`. The `DeadlineExceeded` event is recorded once, not on
//!   every sync past the deadline.
//! * Image pull secrets: the worker reads them before each pull (I/O) and records
//!   `FailedToRetrieveImagePullSecret` once per pull that misses one, rather than on every sync.
//!   The node's own keyring and credential-provider plugins do not exist.
//! * Shortening the grace period of a kill already in progress (a second, shorter DELETE).
//! * Event aggregation and spam filtering (the event writer's job). Back-off events are emitted
//!   once per blocked period rather than on every 10–15 s sync retry, so counts are lower.
//! * Timing noise: back-off ends are exact (the kubelet only notices them on a later sync), and
//!   probe ticks are anchored at the container start rather than at the pod worker's creation.
//! * Kills do not block other containers' kills; starts are serialized per pod as in the
//!   kubelet (one start, with its pull and postStart hook, at a time), and no start begins while
//!   a kill of the running pod is in progress.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};

use crate::events::{self, EventToEmit};
use crate::kill;
use crate::memory::{KillReason, KillStage, Op, PodMemory, WaitingReason, spec_hash};
use crate::observed::{ContainerRef, InstanceState, ObservedPod, Outcome, StartError};
use crate::probe::{ProbeKind, ProbeOutcome, ProbeResult, ProbeTiming};
use crate::reasons::{
    CREATE_CONTAINER_CONFIG_ERROR, CREATE_CONTAINER_ERROR, POST_START_HOOK_ERROR,
    RUN_CONTAINER_ERROR, classify_pull_error,
};
use crate::rules::{self, RestartPolicy, all_containers};
use crate::start::{self, Start, set_reason};
use crate::status;

/// How long after a start error (config, create, run, never-pull, inspect) the next attempt
/// waits: the kubelet's pod worker retries a failed sync after 10–15 s.
pub const SYNC_RETRY: SignedDuration = SignedDuration::from_secs(10);
/// After a decision changed a container's waiting reason, how soon to run again so the new
/// reason is reported (the kubelet's next sync after a PLEG event, about 1 s).
pub const STATUS_RESYNC: SignedDuration = SignedDuration::from_secs(1);

/// Something the worker must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the pod sandbox (network namespace, IP). Success shows as
    /// `ObservedPod::sandbox_ready`; failure as [`Outcome::SandboxFailed`].
    CreateSandbox,
    /// Pull an image (policy and back-off already checked). Report
    /// [`Outcome::PullSucceeded`] or [`Outcome::PullFailed`].
    PullImage {
        container: ContainerRef,
        image: String,
    },
    /// Create and start instance `attempt` (its restart count). Report [`Outcome::Started`] or
    /// [`Outcome::StartFailed`] and show the instance in the observation.
    CreateAndStart {
        container: ContainerRef,
        attempt: u32,
    },
    /// Run the postStart hook of a just-started instance. Report
    /// [`Outcome::PostStartFinished`].
    RunPostStart {
        container: ContainerRef,
        attempt: u32,
    },
    /// Run the preStop hook, for at most `grace_seconds`. Report [`Outcome::PreStopFinished`].
    RunPreStop {
        container: ContainerRef,
        attempt: u32,
        grace_seconds: i64,
    },
    /// Stop an instance: stop signal (SIGTERM), then SIGKILL after `grace_seconds`. The exit
    /// shows in the observation. The `Killing` event is already in the decision's events.
    Kill {
        container: ContainerRef,
        attempt: u32,
        grace_seconds: i64,
        reason: KillReason,
    },
    /// Run one probe. Report [`Outcome::Probed`].
    RunProbe {
        container: ContainerRef,
        attempt: u32,
        kind: ProbeKind,
    },
    /// Every container has stopped: tear the sandbox down (`sandbox_ready` becomes false).
    KillPod,
    /// The deleted pod is fully stopped: write this decision's status first, then delete the pod
    /// with grace period 0 (and a UID precondition).
    ConfirmDeletion,
}

/// The result of one decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Actions to perform, in order.
    pub actions: Vec<Action>,
    /// Call [`decide`] again at this time at the latest (earlier on any runtime event, outcome or
    /// pod update). None: nothing is scheduled.
    pub wake_at: Option<Timestamp>,
    /// The status to report (write it when it differs from the last one written).
    pub status: PodStatus,
    /// Events to record on the pod.
    pub events: Vec<EventToEmit>,
}

/// The inputs of one decision.
pub(crate) struct Cx<'a> {
    pub(crate) pod: &'a Pod,
    pub(crate) spec: &'a PodSpec,
    pub(crate) observed: &'a ObservedPod,
    pub(crate) now: Timestamp,
    pub(crate) deleting: bool,
    pub(crate) policy: RestartPolicy,
}

/// What a decision accumulates.
#[derive(Default)]
pub(crate) struct Out {
    pub(crate) actions: Vec<Action>,
    pub(crate) events: Vec<EventToEmit>,
    pub(crate) wake_at: Option<Timestamp>,
    /// A waiting reason changed after the status was generated.
    pub(crate) reason_changed: bool,
}

impl Out {
    /// Asks to be called again at `t` at the latest.
    pub(crate) fn wake(&mut self, t: Timestamp) {
        self.wake_at = Some(self.wake_at.map_or(t, |w| w.min(t)));
    }
}

/// Decides what to do next for one pod. See the module documentation.
pub fn decide(
    pod: &Pod,
    observed: &ObservedPod,
    memory: &mut PodMemory,
    now: Timestamp,
) -> Decision {
    let Some(spec) = pod.spec.as_ref() else {
        return Decision {
            actions: Vec::new(),
            wake_at: None,
            status: PodStatus::default(),
            events: Vec::new(),
        };
    };
    memory.prepare(pod, spec, now);
    let cx = Cx {
        pod,
        spec,
        observed,
        now,
        deleting: pod.metadata.deletion_timestamp.is_some(),
        policy: RestartPolicy::of(spec),
    };
    let mut out = Out::default();

    check_active_deadline(&cx, memory, &mut out);
    ingest(&cx, memory, &mut out);
    kill::settle_kills(&cx, memory);
    track_instances(&cx, memory);
    let status = status::generate(pod, observed, memory, now);
    remember_status(memory, &status);
    out.reason_changed = false;

    if !memory.deletion_confirmed {
        if cx.deleting || memory.complete {
            kill::terminate(&cx, memory, &mut out);
        } else {
            sync(&cx, memory, &mut out);
        }
        run_probes(&cx, memory, &mut out);
    }
    memory.restart_backoff.gc(now);
    memory.image_backoff.gc(now);
    if out.reason_changed {
        out.wake(now + STATUS_RESYNC);
    }
    Decision {
        actions: out.actions,
        wake_at: out.wake_at,
        status,
        events: out.events,
    }
}

/// `activeDeadlineSeconds` (the kubelet's active-deadline handler): once `startTime + deadline`
/// has passed, the pod is done — every container is killed with the usual grace period and the
/// phase becomes `Failed` with reason `DeadlineExceeded`. The deadline is read from the current
/// spec on every decision, so setting or lowering it on a running pod takes effect at once.
fn check_active_deadline(cx: &Cx, memory: &mut PodMemory, out: &mut Out) {
    if memory.deadline_exceeded || memory.terminal_phase.is_some() || cx.deleting {
        return;
    }
    let (Some(secs), Some(start)) = (cx.spec.active_deadline_seconds, memory.start_time) else {
        return;
    };
    let deadline = start + SignedDuration::from_secs(secs);
    if cx.now >= deadline {
        memory.deadline_exceeded = true;
        memory.complete = true;
        out.events.push(events::deadline_exceeded());
    } else {
        out.wake(deadline);
    }
}

/// Stores what the status says that later statuses depend on: condition transition times and a
/// terminal phase (which is sticky).
fn remember_status(memory: &mut PodMemory, status: &PodStatus) {
    for c in status.conditions.iter().flatten() {
        if let Some(i) = crate::memory::OWNED_CONDITIONS
            .iter()
            .position(|t| *t == c.type_)
        {
            let st = match c.status.as_str() {
                "True" => "True",
                "False" => "False",
                _ => "Unknown",
            };
            let at = c
                .last_transition_time
                .as_ref()
                .map(|t| t.0)
                .unwrap_or_default();
            memory.conditions[i] = Some((st, at));
        }
    }
    if let Some(p) = status
        .phase
        .as_deref()
        .and_then(crate::memory::Phase::parse)
        .filter(|p| p.is_terminal())
    {
        memory.terminal_phase = Some(p);
        memory.complete = true;
    }
}

/// Applies the outcomes of finished actions.
fn ingest(cx: &Cx, memory: &mut PodMemory, out: &mut Out) {
    for o in &cx.observed.outcomes {
        match o {
            Outcome::SandboxFailed { message } => {
                memory.sandbox.creating = false;
                memory.sandbox.retry_at = Some(cx.now + SYNC_RETRY);
                out.events.push(events::sandbox_failed(message));
            }
            Outcome::PullSucceeded {
                container,
                pull_time,
                total_time,
                image_size,
            } => {
                let r = *container;
                let cm = memory.container_mut(r);
                if let Op::Pulling { attempt } = cm.op {
                    cm.op = Op::Pulled { attempt };
                    cm.pull_error = None;
                    let image = image_of(cx, r);
                    out.events.push(events::pulled(
                        r,
                        image,
                        *pull_time,
                        *total_time,
                        *image_size,
                    ));
                }
            }
            Outcome::PullFailed { container, error } => {
                let r = *container;
                if !matches!(memory.container(r).op, Op::Pulling { .. }) {
                    continue;
                }
                let image = image_of(cx, r);
                memory.image_backoff.next(image, cx.now, cx.now);
                let (name, message) = classify_pull_error(image, error);
                out.events.push(events::pull_failed(r, image, error));
                out.events.push(events::start_failed(r, name));
                let cm = memory.container_mut(r);
                cm.op = Op::Idle;
                cm.pull_error = Some(format!("{name}: {message}"));
                set_reason(cm, out, name, message);
            }
            Outcome::Started { container, attempt } => {
                let r = *container;
                let cm = memory.container_mut(r);
                if cm.op != (Op::Starting { attempt: *attempt }) {
                    continue;
                }
                let Some(c) = r.spec(cx.spec) else { continue };
                out.events.push(events::created(r, &c.name));
                out.events.push(events::started(r, &c.name));
                let has_post_start = c.lifecycle.as_ref().is_some_and(|l| l.post_start.is_some());
                if has_post_start {
                    cm.op = Op::PostStart { attempt: *attempt };
                    out.actions.push(Action::RunPostStart {
                        container: r,
                        attempt: *attempt,
                    });
                } else {
                    cm.op = Op::Idle;
                    cm.reason = None;
                }
            }
            Outcome::StartFailed {
                container,
                attempt,
                error,
            } => {
                let r = *container;
                if memory.container(r).op != (Op::Starting { attempt: *attempt }) {
                    continue;
                }
                let name = r.name(cx.spec);
                let (reason, message) = match error {
                    StartError::Config(m) => (CREATE_CONTAINER_CONFIG_ERROR, m),
                    StartError::Create(m) => (CREATE_CONTAINER_ERROR, m),
                    StartError::Run(m) => {
                        out.events.push(events::created(r, name));
                        (RUN_CONTAINER_ERROR, m)
                    }
                };
                out.events.push(events::start_failed(r, message));
                let cm = memory.container_mut(r);
                cm.op = Op::Idle;
                cm.retry_at = Some(cx.now + SYNC_RETRY);
                set_reason(cm, out, reason, message.clone());
            }
            Outcome::PostStartFinished {
                container,
                attempt,
                error,
            } => {
                let r = *container;
                if memory.container(r).op != (Op::PostStart { attempt: *attempt }) {
                    continue;
                }
                let cm = memory.container_mut(r);
                cm.op = Op::Idle;
                match error {
                    None => cm.reason = None,
                    Some(detail) => {
                        out.events.push(events::post_start_failed(r));
                        let running = cx
                            .observed
                            .container(r)
                            .running()
                            .is_some_and(|i| i.attempt == *attempt);
                        if !running {
                            set_reason(cm, out, POST_START_HOOK_ERROR, detail.clone());
                        } else {
                            cm.reason_after_kill = Some((
                                *attempt,
                                WaitingReason {
                                    reason: POST_START_HOOK_ERROR,
                                    message: detail.clone(),
                                },
                            ));
                            kill::begin_kill(
                                cx,
                                memory,
                                out,
                                r,
                                *attempt,
                                KillReason::PostStartHook,
                                false,
                            );
                        }
                    }
                }
            }
            Outcome::PreStopFinished {
                container,
                attempt,
                error,
            } => {
                let r = *container;
                let cm = memory.container_mut(r);
                if let Some(k) = cm.kill.as_mut()
                    && k.attempt == *attempt
                    && let KillStage::PreStop { since, done: false } = k.stage
                {
                    k.stage = KillStage::PreStop { since, done: true };
                    if error.is_some() {
                        out.events.push(events::pre_stop_failed(r));
                    }
                }
            }
            Outcome::Probed {
                container,
                attempt,
                kind,
                result,
            } => {
                let r = *container;
                let Some(probe) = r.spec(cx.spec).and_then(|c| kind.of(c)) else {
                    continue;
                };
                let st = memory.container_mut(r).probe_mut(*kind);
                if st.attempt() != Some(*attempt) || !st.in_flight() {
                    continue;
                }
                match result {
                    ProbeOutcome::Success => {}
                    ProbeOutcome::Warning(o) => out.events.push(events::probe_warning(r, *kind, o)),
                    ProbeOutcome::Failure(o) => out.events.push(events::probe_failed(r, *kind, o)),
                    ProbeOutcome::Error(e) => out.events.push(events::probe_errored(r, *kind, e)),
                }
                st.record(*kind, result, cx.now, &ProbeTiming::of(probe));
            }
        }
    }
}

fn image_of<'a>(cx: &Cx<'a>, r: ContainerRef) -> &'a str {
    r.spec(cx.spec)
        .and_then(|c| c.image.as_deref())
        .unwrap_or("")
}

/// Starts the probe workers of instances that began running since the last decision.
fn track_instances(cx: &Cx, memory: &mut PodMemory) {
    for r in all_containers(cx.spec) {
        let Some(c) = r.spec(cx.spec) else { continue };
        let Some(inst) = cx.observed.container(r).running() else {
            continue;
        };
        let Some(started_at) = inst.running_since() else {
            continue;
        };
        let cm = memory.container_mut(r);
        for kind in ProbeKind::ALL {
            if let Some(p) = kind.of(c) {
                let st = cm.probe_mut(kind);
                if st.attempt() != Some(inst.attempt) {
                    st.start(kind, inst.attempt, started_at, &ProbeTiming::of(p));
                }
            }
        }
    }
}

/// The cached probe result of an instance (the kind's initial value when the worker has not
/// seen this instance yet).
fn probe_result(memory: &PodMemory, r: ContainerRef, kind: ProbeKind, attempt: u32) -> ProbeResult {
    let st = memory.container(r).probe(kind);
    if st.attempt() == Some(attempt) {
        st.result()
    } else {
        kind.initial_result()
    }
}

/// What `computePodActions` found.
#[derive(Default)]
struct Plan {
    /// Containers to start, in the order to try them.
    to_start: Vec<ContainerRef>,
    /// Running instances to kill.
    kills: Vec<(ContainerRef, u32, KillReason)>,
}

/// The running pod: sandbox, init containers, regular containers.
fn sync(cx: &Cx, memory: &mut PodMemory, out: &mut Out) {
    if !cx.observed.sandbox_ready {
        let sb = &mut memory.sandbox;
        if sb.creating {
            return;
        }
        if let Some(t) = sb.retry_at {
            if cx.now < t {
                out.wake(t);
                return;
            }
            sb.retry_at = None;
        }
        sb.creating = true;
        out.actions.push(Action::CreateSandbox);
        return;
    }
    memory.sandbox.creating = false;

    let mut plan = Plan::default();
    let Some(initialized) = init_actions(cx, memory, &mut plan) else {
        // An init container failed under restartPolicy Never: the pod is done.
        memory.complete = true;
        kill::terminate(cx, memory, out);
        return;
    };
    if initialized && !app_actions(cx, memory, &mut plan) {
        // Nothing runs and nothing will be restarted: stop what is left (sidecars).
        memory.complete = true;
        kill::terminate(cx, memory, out);
        return;
    }
    for &(r, attempt, reason) in &plan.kills {
        kill::begin_kill(cx, memory, out, r, attempt, reason, false);
    }
    kill::advance_kills(cx, memory, out);
    start_all(cx, memory, out, &plan.to_start);
}

/// `computeInitContainerActions` (sidecar-aware): walks the init containers from the last one
/// with an instance, plans the next one to start, sidecar restarts and sidecar probe kills.
/// Returns whether the pod is initialized, or None when an init container failed under `Never`.
fn init_actions(cx: &Cx, memory: &PodMemory, plan: &mut Plan) -> Option<bool> {
    let inits = cx.spec.init_containers.as_deref().unwrap_or_default();
    if inits.is_empty() {
        return Some(true);
    }
    let mut initialized = (0..cx.spec.containers.len()).any(|i| {
        cx.observed
            .container(ContainerRef::App(i))
            .current
            .as_ref()
            .is_some_and(|c| {
                matches!(
                    c.state,
                    InstanceState::Created | InstanceState::Running { .. }
                )
            })
    });
    let mut previously = initialized;
    let last = inits.len() - 1;
    for i in (0..inits.len()).rev() {
        let r = ContainerRef::Init(i);
        let c = &inits[i];
        let sidecar = r.is_sidecar(cx.spec);
        let Some(cur) = cx.observed.container(r).current.as_ref() else {
            if previously && sidecar {
                plan.to_start.push(r);
            }
            continue;
        };
        if previously && !sidecar {
            continue;
        }
        match &cur.state {
            InstanceState::Created | InstanceState::Unknown => plan.to_start.push(r),
            InstanceState::Running { .. } if sidecar => 'sidecar: {
                if c.startup_probe.is_some() {
                    match probe_result(memory, r, ProbeKind::Startup, cur.attempt) {
                        ProbeResult::Success => {}
                        ProbeResult::Failure => {
                            plan.kills.push((
                                r,
                                cur.attempt,
                                KillReason::Startup { restart: true },
                            ));
                            plan.to_start.push(r);
                            break 'sidecar;
                        }
                        ProbeResult::Unknown => break 'sidecar,
                    }
                }
                if i == last {
                    initialized = true;
                } else if !previously {
                    plan.to_start.push(ContainerRef::Init(i + 1));
                }
                if c.liveness_probe.is_some()
                    && probe_result(memory, r, ProbeKind::Liveness, cur.attempt)
                        == ProbeResult::Failure
                {
                    plan.kills
                        .push((r, cur.attempt, KillReason::Liveness { restart: true }));
                    plan.to_start.push(r);
                }
            }
            InstanceState::Running { .. } => {}
            InstanceState::Exited(e) => {
                if sidecar {
                    plan.to_start.push(r);
                } else if e.exit_code != 0 {
                    if !cx.policy.restarts_on_failure() {
                        plan.to_start.clear();
                        return None;
                    }
                    plan.to_start.push(r);
                } else if i == last {
                    initialized = true;
                } else {
                    plan.to_start.push(ContainerRef::Init(i + 1));
                }
            }
        }
        previously = true;
    }
    if !previously {
        plan.to_start.push(ContainerRef::Init(0));
    }
    plan.to_start.reverse();
    Some(initialized)
}

/// The regular containers: restarts by policy, liveness and startup kills. Returns false when
/// the pod has nothing running and nothing to start (it is complete).
fn app_actions(cx: &Cx, memory: &PodMemory, plan: &mut Plan) -> bool {
    let mut keep = 0;
    let mut starting = false;
    for i in 0..cx.spec.containers.len() {
        let r = ContainerRef::App(i);
        let Some(cur) = cx.observed.container(r).running() else {
            if rules::should_restart(cx.pod, cx.spec, cx.observed, memory, r) {
                plan.to_start.push(r);
                starting = true;
            }
            continue;
        };
        let restart = cx.policy.restarts_on_failure();
        let reason = if probe_result(memory, r, ProbeKind::Liveness, cur.attempt)
            == ProbeResult::Failure
        {
            KillReason::Liveness { restart }
        } else if probe_result(memory, r, ProbeKind::Startup, cur.attempt) == ProbeResult::Failure {
            KillReason::Startup { restart }
        } else {
            keep += 1;
            continue;
        };
        plan.kills.push((r, cur.attempt, reason));
        if restart {
            plan.to_start.push(r);
            starting = true;
        }
    }
    keep > 0 || starting
}

/// Starts containers one at a time, like the kubelet's blocking sync: nothing new while a start
/// or a kill is under way; a blocked regular init container stops the list.
fn start_all(cx: &Cx, memory: &mut PodMemory, out: &mut Out, list: &[ContainerRef]) {
    let busy = memory
        .init
        .iter()
        .chain(memory.app.iter())
        .any(|c| c.op.in_flight() || c.kill.is_some());
    if busy {
        return;
    }
    for &r in list {
        if cx.observed.container(r).running().is_some() {
            continue;
        }
        match start::start_container(cx, memory, out, r) {
            Start::InFlight => return,
            Start::Failed => {
                if matches!(r, ContainerRef::Init(_)) && !r.is_sidecar(cx.spec) {
                    return;
                }
            }
        }
    }
}

/// Issues the probe runs that are due and schedules the next ones (§6.2).
fn run_probes(cx: &Cx, memory: &mut PodMemory, out: &mut Out) {
    let finished = memory.complete || memory.terminal_phase.is_some();
    for r in all_containers(cx.spec) {
        let Some(c) = r.spec(cx.spec) else { continue };
        if c.liveness_probe.is_none() && c.readiness_probe.is_none() && c.startup_probe.is_none() {
            continue;
        }
        let Some(inst) = cx.observed.container(r).running() else {
            continue;
        };
        let attempt = inst.attempt;
        let cm = memory.container_mut(r);
        if cm.op == (Op::PostStart { attempt }) {
            continue;
        }
        let killing = cm.kill.is_some_and(|k| k.attempt == attempt);
        let started = c.startup_probe.is_none()
            || cm.probe(ProbeKind::Startup).result() == ProbeResult::Success;
        for kind in ProbeKind::ALL {
            let Some(p) = kind.of(c) else { continue };
            let t = ProbeTiming::of(p);
            let st = cm.probe_mut(kind);
            if st.attempt() != Some(attempt) {
                continue;
            }
            if cx.deleting && kind != ProbeKind::Readiness {
                st.quiet_shutdown();
                continue;
            }
            if (finished && !cx.deleting) || killing {
                continue;
            }
            match kind {
                ProbeKind::Startup if started => {
                    st.stop();
                    continue;
                }
                ProbeKind::Liveness | ProbeKind::Readiness if !started => {
                    st.mark_gated();
                    continue;
                }
                ProbeKind::Liveness | ProbeKind::Readiness => st.ungate(cx.now, &t),
                ProbeKind::Startup => {}
            }
            if st.is_due(cx.now) {
                out.actions.push(Action::RunProbe {
                    container: r,
                    attempt,
                    kind,
                });
                st.mark_started(cx.now, &t);
            } else if !st.in_flight()
                && let Some(d) = st.next_due()
            {
                out.wake(d);
            }
        }
    }
}

/// The restart back-off key of a container (for inspecting [`PodMemory::restart_backoff`]).
pub fn restart_key(pod: &Pod, r: ContainerRef) -> crate::memory::RestartKey {
    let c = pod.spec.as_ref().and_then(|s| r.spec(s));
    let name = c.map_or("", |c| c.name.as_str());
    let image = c.and_then(|c| c.image.as_deref()).unwrap_or("");
    (r, spec_hash(name, image))
}
