//! The API `PodStatus` the agent writes, generated from the observation and the engine's memory
//! exactly as the kubelet does: container statuses (§2), `getPhase` (§1.2) with terminal
//! stickiness, the owned conditions in their fixed order with reasons, messages and
//! transition times (§1.4), and `startTime`.
//!
//! It is separate from the decisions because it is a pure view: [`generate`] never changes
//! anything, and a worker may call it on its own (for example to re-render a status after a
//! failed write).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::memory::{OWNED_CONDITIONS, Phase, PodMemory, whole_seconds};
use crate::observed::{ContainerRef, Exit, InstanceState, ObservedPod};
use crate::probe::{ProbeKind, ProbeResult};
use crate::rules::{self, RestartPolicy};

/// Default waiting reason of a container in a pod without init containers.
pub const CONTAINER_CREATING: &str = "ContainerCreating";
/// Default waiting reason of every container in a pod with init containers.
pub const POD_INITIALIZING: &str = "PodInitializing";

/// The pod status the agent reports now.
pub fn generate(
    pod: &Pod,
    observed: &ObservedPod,
    memory: &PodMemory,
    now: Timestamp,
) -> PodStatus {
    let Some(spec) = pod.spec.as_ref() else {
        return PodStatus::default();
    };
    let old = pod.status.as_ref();
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    let default_reason = if inits.is_empty() {
        CONTAINER_CREATING
    } else {
        POD_INITIALIZING
    };
    let init_statuses: Vec<ContainerStatus> = (0..inits.len())
        .map(|i| {
            container_status(
                pod,
                spec,
                observed,
                memory,
                ContainerRef::Init(i),
                default_reason,
            )
        })
        .collect();
    let mut app_statuses: Vec<ContainerStatus> = (0..spec.containers.len())
        .map(|i| {
            container_status(
                pod,
                spec,
                observed,
                memory,
                ContainerRef::App(i),
                default_reason,
            )
        })
        .collect();

    let terminal = rules::pod_is_terminal(pod, spec, observed, memory);
    let mut phase = get_phase(spec, &init_statuses, &app_statuses, terminal);
    if memory.deadline_exceeded {
        phase = Phase::Failed;
    }
    if !phase.is_terminal() {
        let api = old.and_then(|s| s.phase.as_deref()).and_then(Phase::parse);
        if let Some(p) = memory.terminal_phase.or(api.filter(|p| p.is_terminal())) {
            phase = p;
        } else if terminal {
            // A terminated pod always ends in a terminal phase.
            phase = Phase::Failed;
        }
    }

    let now_s = whole_seconds(now);
    let mut conditions: Vec<PodCondition> = old
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| !OWNED_CONDITIONS.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    let owned = conditions.len();
    let ready_to_start = if observed.sandbox_ready {
        Cond::TRUE
    } else {
        Cond::FALSE
    };
    let initialized = initialized_condition(spec, &init_statuses, &app_statuses, phase);
    let containers_ready = containers_ready_condition(spec, &init_statuses, &app_statuses, phase);
    let ready = ready_condition(spec, &conditions[..owned], &containers_ready);
    for (i, c) in [
        ready_to_start,
        initialized,
        ready,
        containers_ready,
        Cond::TRUE,
    ]
    .into_iter()
    .enumerate()
    {
        let at = match memory.conditions[i] {
            Some((st, at)) if st == c.status => at,
            _ => now_s,
        };
        conditions.push(PodCondition {
            type_: OWNED_CONDITIONS[i].to_string(),
            status: c.status.to_string(),
            reason: c.reason.map(str::to_string),
            message: c.message,
            last_transition_time: Some(Time(at)),
            last_probe_time: None,
            observed_generation: None,
        });
    }

    app_statuses.sort_by(|a, b| a.name.cmp(&b.name));
    let mut init_statuses = init_statuses;
    limit_termination_messages(&mut init_statuses, &mut app_statuses);

    let same_phase = old.and_then(|s| s.phase.as_deref()) == Some(phase.as_str());
    let pod_ips: Vec<PodIP> = if observed.pod_ips.is_empty() {
        old.and_then(|s| s.pod_ips.clone()).unwrap_or_default()
    } else {
        observed
            .pod_ips
            .iter()
            .map(|ip| PodIP { ip: ip.clone() })
            .collect()
    };
    let host_ip = observed
        .host_ip
        .clone()
        .or_else(|| old.and_then(|s| s.host_ip.clone()));
    PodStatus {
        phase: Some(phase.as_str().to_string()),
        conditions: Some(conditions),
        reason: if memory.deadline_exceeded {
            Some(crate::reasons::DEADLINE_EXCEEDED.to_string())
        } else if same_phase {
            old.and_then(|s| s.reason.clone())
        } else {
            None
        },
        message: if memory.deadline_exceeded {
            Some(crate::reasons::DEADLINE_EXCEEDED_MESSAGE.to_string())
        } else if same_phase {
            old.and_then(|s| s.message.clone())
        } else {
            None
        },
        host_ips: host_ip.as_ref().map(|ip| vec![HostIP { ip: ip.clone() }]),
        host_ip,
        pod_ip: pod_ips.first().map(|p| p.ip.clone()),
        pod_ips: (!pod_ips.is_empty()).then_some(pod_ips),
        start_time: memory.start_time.map(Time),
        qos_class: old
            .and_then(|s| s.qos_class.clone())
            .or_else(|| Some(skiff_core::pod::qos_class(spec).to_string())),
        nominated_node_name: old.and_then(|s| s.nominated_node_name.clone()),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        container_statuses: Some(app_statuses),
        ..PodStatus::default()
    }
}

/// Termination messages share this many bytes per pod, divided evenly across its containers.
pub const POD_TERMINATION_MESSAGE_BUDGET: usize = 12 * 1024;

/// Cuts each `state`/`lastState` termination message to the pod's per-container share of
/// [`POD_TERMINATION_MESSAGE_BUDGET`] (at a character boundary), as the kubelet's status
/// manager does before writing.
pub fn limit_termination_messages(init: &mut [ContainerStatus], app: &mut [ContainerStatus]) {
    let n = init.len() + app.len();
    if n == 0 {
        return;
    }
    let share = POD_TERMINATION_MESSAGE_BUDGET / n;
    for st in init.iter_mut().chain(app.iter_mut()) {
        for state in [st.state.as_mut(), st.last_state.as_mut()]
            .into_iter()
            .flatten()
        {
            if let Some(m) = state.terminated.as_mut().and_then(|t| t.message.as_mut())
                && m.len() > share
            {
                let mut end = share;
                while !m.is_char_boundary(end) {
                    end -= 1;
                }
                m.truncate(end);
            }
        }
    }
}

fn time(t: Timestamp) -> Time {
    Time(whole_seconds(t))
}

fn waiting(reason: Option<&str>, message: Option<&str>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: reason.map(str::to_string),
            message: message.map(str::to_string),
        }),
        ..ContainerState::default()
    }
}

fn terminated(e: &Exit, id: &str) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: e.exit_code,
            reason: Some(e.reason.as_str().to_string()),
            message: e.message.clone(),
            started_at: e.started_at.map(time),
            finished_at: Some(time(e.finished_at)),
            container_id: Some(id.to_string()),
            signal: None,
        }),
        ..ContainerState::default()
    }
}

/// One container's status (§2): runtime state, the reason cache for containers that will be
/// restarted, `lastState`, `restartCount`, `started` and `ready`.
fn container_status(
    pod: &Pod,
    spec: &PodSpec,
    observed: &ObservedPod,
    memory: &PodMemory,
    r: ContainerRef,
    default_reason: &str,
) -> ContainerStatus {
    let c: &Container = r.spec(spec).expect("container ref in range");
    let obs = observed.container(r);
    let mem = memory.container(r);
    let spec_image = c.image.clone().unwrap_or_default();
    let mut st = ContainerStatus {
        name: c.name.clone(),
        image: spec_image.clone(),
        image_id: String::new(),
        restart_count: 0,
        ready: false,
        started: Some(false),
        state: Some(waiting(Some(default_reason), None)),
        last_state: Some(ContainerState::default()),
        ..ContainerStatus::default()
    };
    // While its postStart hook runs (or the failed hook's kill), the kubelet still reports the
    // pod as it was before this instance: the instance is not shown yet.
    let (current, previous) = match obs.current.as_ref() {
        Some(cur) if mem.hides(cur.attempt) => (obs.previous.as_ref(), None),
        cur => (cur, obs.previous.as_ref()),
    };
    let mut running = false;
    let mut exited_zero = false;
    if let Some(cur) = current {
        st.restart_count = cur.attempt as i32;
        if let Some((p, e)) = previous.and_then(|p| p.exit().map(|e| (p, e))) {
            st.last_state = Some(terminated(e, &p.id));
        }
        if !cur.image.is_empty() {
            st.image = cur.image.clone();
        }
        st.image_id = cur.image_id.clone();
        st.container_id = Some(cur.id.clone());
        st.state = Some(match &cur.state {
            InstanceState::Running { started_at } => {
                running = true;
                ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(time(*started_at)),
                    }),
                    ..ContainerState::default()
                }
            }
            InstanceState::Created | InstanceState::Unknown => waiting(None, None),
            InstanceState::Exited(e) => {
                exited_zero = e.exit_code == 0;
                terminated(e, &cur.id)
            }
        });
    }

    let regular_init = matches!(r, ContainerRef::Init(_)) && !r.is_sidecar(spec);
    let skip_reason = regular_init && exited_zero;
    if !skip_reason
        && rules::should_restart_state(pod, spec, memory, current.map(|i| &i.state))
        && let Some(reason) = mem.reason.as_ref()
    {
        if st.state.as_ref().is_some_and(|s| s.terminated.is_some()) {
            st.last_state = st.state.take();
        }
        st.state = Some(waiting(Some(reason.reason), Some(&reason.message)));
    }

    let started = running
        && (c.startup_probe.is_none()
            || mem.probe(ProbeKind::Startup).result() == ProbeResult::Success);
    st.started = Some(started);
    st.ready = if regular_init {
        st.state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0)
    } else {
        started
            && (c.readiness_probe.is_none()
                || mem.probe(ProbeKind::Readiness).result() == ProbeResult::Success)
    };
    st
}

fn has_last_termination(st: &ContainerStatus) -> Option<i32> {
    st.last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code)
}

/// `HasAnyRegularContainerStarted`: some regular container is running or terminated.
fn any_regular_started(app: &[ContainerStatus]) -> bool {
    app.iter().any(|s| {
        s.state
            .as_ref()
            .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
    })
}

/// The kubelet's `getPhase` (§1.2). `init` is in spec order, `app` parallel to
/// `spec.containers`.
pub fn get_phase(
    spec: &PodSpec,
    init: &[ContainerStatus],
    app: &[ContainerStatus],
    pod_is_terminal: bool,
) -> Phase {
    let (mut pending_init, mut failed_init) = (0, 0);
    let (mut unknown, mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    let init_specs = spec.init_containers.as_deref().unwrap_or_default();
    for (c, st) in init_specs.iter().zip(init) {
        let sidecar = c.restart_policy.as_deref() == Some("Always");
        let state = st.state.clone().unwrap_or_default();
        if !sidecar {
            if state.running.is_some() {
                pending_init += 1;
            } else if let Some(t) = &state.terminated {
                if t.exit_code != 0 {
                    failed_init += 1;
                }
            } else if state.waiting.is_some() {
                match has_last_termination(st) {
                    Some(0) => {}
                    Some(_) => failed_init += 1,
                    None => pending_init += 1,
                }
            } else {
                pending_init += 1;
            }
        } else if state.running.is_some() {
            running += 1;
            if st.started != Some(true) {
                pending_init += 1;
            }
        } else if state.terminated.is_some() {
        } else if state.waiting.is_some() {
            if has_last_termination(st).is_none() {
                pending_init += 1;
                waiting += 1;
            }
        } else {
            pending_init += 1;
            unknown += 1;
        }
    }
    for st in app {
        let Some(state) = st.state.as_ref() else {
            unknown += 1;
            continue;
        };
        if state.running.is_some() {
            running += 1;
        } else if let Some(t) = &state.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if state.waiting.is_some() {
            if has_last_termination(st).is_some() {
                stopped += 1;
            } else {
                waiting += 1;
            }
        } else {
            unknown += 1;
        }
    }
    let policy = RestartPolicy::of(spec);
    if failed_init > 0 && policy == RestartPolicy::Never {
        return Phase::Failed;
    }
    if (pending_init > 0 && !any_regular_started(app)) || waiting > 0 {
        return Phase::Pending;
    }
    if running > 0 && unknown == 0 {
        return Phase::Running;
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        if pod_is_terminal {
            return if stopped == succeeded {
                Phase::Succeeded
            } else {
                Phase::Failed
            };
        }
        return match policy {
            RestartPolicy::Always => Phase::Running,
            _ if stopped == succeeded => Phase::Succeeded,
            RestartPolicy::Never => Phase::Failed,
            _ => Phase::Running,
        };
    }
    Phase::Pending
}

/// A condition before its transition time is known.
struct Cond {
    status: &'static str,
    reason: Option<&'static str>,
    message: Option<String>,
}

impl Cond {
    const TRUE: Cond = Cond {
        status: "True",
        reason: None,
        message: None,
    };
    const FALSE: Cond = Cond {
        status: "False",
        reason: None,
        message: None,
    };

    fn with(status: &'static str, reason: &'static str, message: Option<String>) -> Cond {
        Cond {
            status,
            reason: Some(reason),
            message,
        }
    }
}

/// Go's `%s` of a `[]string`: `[a b c]`.
fn go_list(names: &[&str]) -> String {
    format!("[{}]", names.join(" "))
}

fn initialized_condition(
    spec: &PodSpec,
    init: &[ContainerStatus],
    app: &[ContainerStatus],
    phase: Phase,
) -> Cond {
    if phase == Phase::Succeeded {
        return Cond::with("True", "PodCompleted", None);
    }
    if any_regular_started(app) {
        return Cond::TRUE;
    }
    let init_specs = spec.init_containers.as_deref().unwrap_or_default();
    let incomplete: Vec<&str> = init_specs
        .iter()
        .zip(init)
        .filter(|(c, st)| {
            if c.restart_policy.as_deref() == Some("Always") {
                st.started != Some(true)
            } else {
                !st.ready
            }
        })
        .map(|(c, _)| c.name.as_str())
        .collect();
    if incomplete.is_empty() {
        Cond::TRUE
    } else {
        Cond::with(
            "False",
            "ContainersNotInitialized",
            Some(format!(
                "containers with incomplete status: {}",
                go_list(&incomplete)
            )),
        )
    }
}

fn containers_ready_condition(
    spec: &PodSpec,
    init: &[ContainerStatus],
    app: &[ContainerStatus],
    phase: Phase,
) -> Cond {
    match phase {
        Phase::Succeeded => return Cond::with("False", "PodCompleted", None),
        Phase::Failed => return Cond::with("False", "PodFailed", None),
        _ => {}
    }
    let init_specs = spec.init_containers.as_deref().unwrap_or_default();
    let unready: Vec<&str> = init_specs
        .iter()
        .zip(init)
        .filter(|(c, st)| c.restart_policy.as_deref() == Some("Always") && !st.ready)
        .map(|(c, _)| c.name.as_str())
        .chain(
            spec.containers
                .iter()
                .zip(app)
                .filter(|(_, st)| !st.ready)
                .map(|(c, _)| c.name.as_str()),
        )
        .collect();
    if unready.is_empty() {
        Cond::TRUE
    } else {
        Cond::with(
            "False",
            "ContainersNotReady",
            Some(format!(
                "containers with unready status: {}",
                go_list(&unready)
            )),
        )
    }
}

fn ready_condition(spec: &PodSpec, others: &[PodCondition], containers_ready: &Cond) -> Cond {
    if containers_ready.status != "True" {
        return Cond {
            status: containers_ready.status,
            reason: containers_ready.reason,
            message: containers_ready.message.clone(),
        };
    }
    let mut messages: Vec<String> = Vec::new();
    for gate in spec.readiness_gates.iter().flatten() {
        let t = &gate.condition_type;
        match others.iter().find(|c| &c.type_ == t) {
            None => messages.push(format!(
                "corresponding condition of pod readiness gate \"{t}\" does not exist."
            )),
            Some(c) if c.status != "True" => messages.push(format!(
                "the status of pod readiness gate \"{t}\" is not \"True\", but {}",
                c.status
            )),
            Some(_) => {}
        }
    }
    if messages.is_empty() {
        Cond::TRUE
    } else {
        Cond::with("False", "ReadinessGatesNotReady", Some(messages.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn termination_messages_share_the_pod_budget() {
        use super::*;
        let st = |name: &str, len: usize| ContainerStatus {
            name: name.to_string(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    message: Some("m".repeat(len)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            last_state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    message: Some("é".repeat(len)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut init = vec![st("i", 100)];
        let mut app = vec![st("a", 4096), st("b", 4096)];
        limit_termination_messages(&mut init, &mut app);
        let msg = |s: &ContainerStatus, last: bool| {
            let state = if last { &s.last_state } else { &s.state };
            state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .message
                .clone()
                .unwrap()
        };
        assert_eq!(msg(&init[0], false).len(), 100);
        assert_eq!(msg(&app[0], false).len(), 4096);
        // 4096 two-byte characters: cut to the 4096-byte share, whole characters only.
        assert_eq!(msg(&app[1], true).len(), 4096);
        let mut app = vec![st("a", 7000), st("b", 10)];
        limit_termination_messages(&mut [], &mut app);
        assert_eq!(msg(&app[0], false).len(), 6144);
    }

    use super::*;
    use k8s_openapi::api::core::v1::ContainerStateRunning;

    fn spec(inits: &[(&str, bool)], apps: &[&str], policy: &str) -> PodSpec {
        PodSpec {
            init_containers: Some(
                inits
                    .iter()
                    .map(|(n, sidecar)| Container {
                        name: n.to_string(),
                        restart_policy: sidecar.then(|| "Always".to_string()),
                        ..Container::default()
                    })
                    .collect(),
            ),
            containers: apps
                .iter()
                .map(|n| Container {
                    name: n.to_string(),
                    ..Container::default()
                })
                .collect(),
            restart_policy: Some(policy.to_string()),
            ..PodSpec::default()
        }
    }

    fn running() -> ContainerStatus {
        ContainerStatus {
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..ContainerState::default()
            }),
            started: Some(true),
            ..ContainerStatus::default()
        }
    }

    fn exited(code: i32) -> ContainerStatus {
        ContainerStatus {
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }
    }

    fn waiting_after(code: Option<i32>) -> ContainerStatus {
        ContainerStatus {
            state: Some(waiting(Some("X"), None)),
            last_state: Some(
                code.map_or_else(ContainerState::default, |c| exited(c).state.unwrap()),
            ),
            ..ContainerStatus::default()
        }
    }

    #[test]
    fn phases() {
        let s = spec(&[], &["a"], "Always");
        assert_eq!(
            get_phase(&s, &[], &[waiting_after(None)], false),
            Phase::Pending
        );
        assert_eq!(get_phase(&s, &[], &[running()], false), Phase::Running);
        assert_eq!(get_phase(&s, &[], &[exited(1)], false), Phase::Running);
        assert_eq!(
            get_phase(&s, &[], &[waiting_after(Some(1))], false),
            Phase::Running
        );
        assert_eq!(get_phase(&s, &[], &[exited(0)], true), Phase::Succeeded);
        assert_eq!(get_phase(&s, &[], &[exited(143)], true), Phase::Failed);
        let n = spec(&[], &["a", "b"], "Never");
        assert_eq!(
            get_phase(&n, &[], &[exited(0), exited(1)], false),
            Phase::Failed
        );
        assert_eq!(
            get_phase(&n, &[], &[exited(0), exited(0)], false),
            Phase::Succeeded
        );
        assert_eq!(
            get_phase(&n, &[], &[exited(0), running()], false),
            Phase::Running
        );
        let o = spec(&[], &["a"], "OnFailure");
        assert_eq!(get_phase(&o, &[], &[exited(1)], false), Phase::Running);
        assert_eq!(get_phase(&o, &[], &[exited(0)], false), Phase::Succeeded);
    }

    #[test]
    fn init_phases() {
        let s = spec(&[("i", false)], &["a"], "Never");
        assert_eq!(
            get_phase(&s, &[exited(1)], &[waiting_after(None)], false),
            Phase::Failed
        );
        assert_eq!(
            get_phase(&s, &[running()], &[waiting_after(None)], false),
            Phase::Pending
        );
        let a = spec(&[("i", false)], &["a"], "Always");
        assert_eq!(
            get_phase(&a, &[waiting_after(Some(1))], &[waiting_after(None)], false),
            Phase::Pending
        );
        // Sidecar running, app finished under Never: Running until the sidecar stops.
        let sc = spec(&[("s", true)], &["a"], "Never");
        assert_eq!(
            get_phase(&sc, &[running()], &[exited(0)], false),
            Phase::Running
        );
        assert_eq!(
            get_phase(&sc, &[exited(137)], &[exited(0)], false),
            Phase::Succeeded
        );
    }
}
