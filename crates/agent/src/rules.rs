//! Small Kubernetes predicates that both the status generator and the decisions need, kept in
//! one place so the two can never disagree (restart policy, "should this container be
//! restarted", "has the pod finished terminating").

use k8s_openapi::api::core::v1::{Pod, PodSpec};

use crate::memory::{Op, PodMemory};
use crate::observed::{ContainerRef, InstanceState, ObservedPod};

/// `spec.restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// The pod's policy (`Always` when unset).
    pub fn of(spec: &PodSpec) -> Self {
        match spec.restart_policy.as_deref() {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    /// `shouldRestartOnFailure`: anything but `Never`.
    pub fn restarts_on_failure(self) -> bool {
        self != RestartPolicy::Never
    }
}

/// Every container of the spec: init containers in order, then regular containers.
pub(crate) fn all_containers(spec: &PodSpec) -> impl Iterator<Item = ContainerRef> + use<> {
    let inits = spec.init_containers.as_ref().map_or(0, Vec::len);
    (0..inits)
        .map(ContainerRef::Init)
        .chain((0..spec.containers.len()).map(ContainerRef::App))
}

/// `ShouldContainerBeRestarted` (1.31): never once the pod is deleted (or, here, complete);
/// yes without an instance or when it is created/unknown; no while running; otherwise by the
/// pod's restart policy and the exit code.
pub(crate) fn should_restart(
    pod: &Pod,
    spec: &PodSpec,
    observed: &ObservedPod,
    memory: &PodMemory,
    r: ContainerRef,
) -> bool {
    let state = observed.container(r).current.as_ref().map(|i| &i.state);
    should_restart_state(pod, spec, memory, state)
}

/// [`should_restart`] for a given newest instance state.
pub(crate) fn should_restart_state(
    pod: &Pod,
    spec: &PodSpec,
    memory: &PodMemory,
    state: Option<&InstanceState>,
) -> bool {
    if pod.metadata.deletion_timestamp.is_some() || memory.complete {
        return false;
    }
    match state {
        None | Some(InstanceState::Created | InstanceState::Unknown) => true,
        Some(InstanceState::Running { .. }) => false,
        Some(InstanceState::Exited(e)) => match RestartPolicy::of(spec) {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => e.exit_code != 0,
            RestartPolicy::Always => true,
        },
    }
}

/// Some container instance of the pod is running.
pub(crate) fn any_running(spec: &PodSpec, observed: &ObservedPod) -> bool {
    all_containers(spec).any(|r| observed.container(r).running().is_some())
}

/// A create/start is under way and may still produce a running container.
pub(crate) fn start_in_flight(memory: &PodMemory) -> bool {
    memory
        .init
        .iter()
        .chain(memory.app.iter())
        .any(|c| matches!(c.op, Op::Starting { .. }))
}

/// The agent has finished terminating the pod (it was deleted, or it completed) and nothing runs
/// any more: `getPhase`'s `podIsTerminal`.
pub(crate) fn pod_is_terminal(
    pod: &Pod,
    spec: &PodSpec,
    observed: &ObservedPod,
    memory: &PodMemory,
) -> bool {
    (pod.metadata.deletion_timestamp.is_some() || memory.complete)
        && !any_running(spec, observed)
        && !start_in_flight(memory)
}
