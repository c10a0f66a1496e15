//! One simulated pod: the real lifecycle engine ([`decide`]) over containers that are data.
//!
//! A [`SimPod`] carries out the engine's actions the way a runtime would, but in memory and on
//! the clock it is given: a pull finishes `pull` later, a start is instant, a process exits when
//! its [`Behaviour`] says, a probe answers from the time since the instance started, SIGTERM ends
//! the process after `term` (or SIGKILL at the end of the grace period). Nothing here reads a
//! clock, spawns or does I/O, so the fleet drives 150,000 of them from one task and tests drive
//! one with a fake clock. Every rule (back-off, restart policy, probes' thresholds, init order,
//! hooks, grace periods, the status) stays in the engine.

use std::collections::HashSet;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Pod, PodStatus};

use super::behaviour::Behaviour;
use crate::events::EventToEmit;
use crate::lifecycle::{Action, decide};
use crate::memory::PodMemory;
use crate::observed::{
    ContainerRef, Exit, ExitReason, ImagePresence, Instance, InstanceState, ObservedPod, Outcome,
    StartError,
};
use crate::probe::{ProbeKind, ProbeOutcome};
use crate::rules::all_containers;

/// Steps at one instant before [`SimPod::run`] gives up settling (a loop in the engine would
/// otherwise spin the fleet).
const MAX_STEPS_PER_RUN: usize = 32;

/// The images a simulated node holds.
pub type NodeImages = HashSet<String>;

/// Something scheduled to happen to the pod's containers.
#[derive(Debug, Clone)]
enum Pending {
    /// The instance's process ends.
    Exit {
        r: ContainerRef,
        attempt: u32,
        code: i32,
        oom: bool,
    },
    /// An action's result reaches the engine.
    Outcome(Outcome),
}

/// What one [`SimPod::run`] produced.
#[derive(Debug, Default)]
pub struct Ran {
    /// The status of the last decision (what the API should show now).
    pub status: PodStatus,
    /// Every decision's events, in order.
    pub events: Vec<EventToEmit>,
    /// The engine asked to delete the pod (write `status` first).
    pub confirm_deletion: bool,
    /// When to run again at the latest (None: only on a change of the pod).
    pub wake_at: Option<Timestamp>,
    /// Decisions taken.
    pub steps: usize,
}

/// A pod on a simulated node.
pub struct SimPod {
    pub pod: Arc<Pod>,
    obs: ObservedPod,
    mem: PodMemory,
    pending: Vec<(Timestamp, Pending)>,
    /// Per container, its behaviour or why the annotation is unreadable.
    behaviours: Vec<(ContainerRef, Result<Behaviour, String>)>,
    /// The pod's ConfirmDeletion has been performed.
    pub deleted: bool,
}

impl SimPod {
    pub fn new(pod: Arc<Pod>, host_ip: &str, pod_ip: String) -> SimPod {
        let mut obs = ObservedPod::for_pod(&pod);
        obs.host_ip = Some(host_ip.to_string());
        obs.pod_ips = vec![pod_ip];
        let mut p = SimPod {
            behaviours: behaviours(&pod),
            pod,
            obs,
            mem: PodMemory::new(),
            pending: Vec::new(),
            deleted: false,
        };
        // The sandbox gets its IP when created; until then none is reported.
        p.obs.sandbox_ready = false;
        p
    }

    /// A newer version of the pod from the API (labels, annotations, deletion).
    pub fn update(&mut self, pod: Arc<Pod>) {
        if pod.metadata.annotations != self.pod.metadata.annotations {
            self.behaviours = behaviours(&pod);
        }
        self.pod = pod;
    }

    fn behaviour(&self, r: ContainerRef) -> Result<&Behaviour, &str> {
        match self.behaviours.iter().find(|(c, _)| *c == r) {
            Some((_, Ok(b))) => Ok(b),
            Some((_, Err(e))) => Err(e),
            None => Err("no such container"),
        }
    }

    /// The earliest scheduled happening.
    pub fn next_pending(&self) -> Option<Timestamp> {
        self.pending.iter().map(|(t, _)| *t).min()
    }

    /// Decides and acts until nothing more happens at `now`.
    pub fn run(&mut self, now: Timestamp, images: &mut NodeImages) -> Ran {
        let mut ran = Ran::default();
        loop {
            self.apply_due(now, images);
            self.refresh_images(images);
            let d = decide(&self.pod, &self.obs, &mut self.mem, now);
            self.obs.outcomes.clear();
            ran.steps += 1;
            ran.events.extend(d.events);
            ran.status = d.status;
            let acted = !d.actions.is_empty();
            for a in &d.actions {
                if matches!(a, Action::ConfirmDeletion) {
                    ran.confirm_deletion = true;
                    self.deleted = true;
                }
                self.perform(a, now, images);
            }
            let pending = self.next_pending();
            // An action changes the observation at once (a sandbox made, an outcome due now):
            // the engine looks again; it never repeats an action still in flight.
            let again = acted;
            if !again || self.deleted || ran.steps >= MAX_STEPS_PER_RUN {
                ran.wake_at = match (d.wake_at, pending) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if ran.steps >= MAX_STEPS_PER_RUN {
                    // Come back a little later rather than spin.
                    ran.wake_at = Some(now + SignedDuration::from_millis(100));
                }
                return ran;
            }
        }
    }

    /// Moves what is due into the observation.
    fn apply_due(&mut self, now: Timestamp, images: &mut NodeImages) {
        if !self.pending.iter().any(|(t, _)| *t <= now) {
            return;
        }
        let mut due: Vec<(Timestamp, Pending)> = Vec::new();
        self.pending.retain(|(t, p)| {
            if *t <= now {
                due.push((*t, p.clone()));
                false
            } else {
                true
            }
        });
        due.sort_by_key(|(t, _)| *t);
        for (t, p) in due {
            match p {
                Pending::Exit {
                    r,
                    attempt,
                    code,
                    oom,
                } => {
                    let c = self.obs.container_mut(r);
                    if let Some(cur) = c.current.as_mut()
                        && cur.attempt == attempt
                        && let InstanceState::Running { started_at } = cur.state
                    {
                        let mut exit = Exit::code(code, Some(started_at), t);
                        if oom {
                            exit.reason = ExitReason::OOMKilled;
                        }
                        cur.state = InstanceState::Exited(exit);
                    }
                }
                Pending::Outcome(o) => {
                    if let Outcome::PullSucceeded { container, .. } = &o
                        && let Some(c) = container.spec(self.pod.spec.as_ref().expect("spec"))
                    {
                        images.insert(c.image.clone().unwrap_or_default());
                    }
                    self.obs.outcomes.push(o);
                }
            }
        }
    }

    /// Image presence as the node holds it now (a pull by another pod counts).
    fn refresh_images(&mut self, images: &NodeImages) {
        let Some(spec) = self.pod.spec.as_ref() else {
            return;
        };
        for r in all_containers(spec) {
            let image = r
                .spec(spec)
                .and_then(|c| c.image.as_deref())
                .unwrap_or_default();
            let present = images.contains(image);
            self.obs.container_mut(r).image = if present {
                ImagePresence::Present
            } else {
                ImagePresence::Absent
            };
        }
    }

    fn schedule(&mut self, at: Timestamp, p: Pending) {
        self.pending.push((at, p));
    }

    fn since_start(&self, r: ContainerRef, now: Timestamp) -> Option<SignedDuration> {
        let started = self.obs.container(r).current.as_ref()?.running_since()?;
        Some(now.duration_since(started))
    }

    fn perform(&mut self, a: &Action, now: Timestamp, images: &mut NodeImages) {
        match a {
            Action::CreateSandbox => self.obs.sandbox_ready = true,
            Action::PullImage { container, image } => {
                let o = match self.behaviour(*container) {
                    Ok(b) if b.image_missing => (
                        b.pull,
                        Outcome::PullFailed {
                            container: *container,
                            error: format!(
                                "failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": {image}: not found"
                            ),
                        },
                    ),
                    Ok(b) => (
                        b.pull,
                        Outcome::PullSucceeded {
                            container: *container,
                            pull_time: b.pull,
                            total_time: b.pull,
                            image_size: super::fleet::SIM_IMAGE_SIZE,
                        },
                    ),
                    // The start will fail on the annotation; the pull itself works.
                    Err(_) => (
                        SignedDuration::ZERO,
                        Outcome::PullSucceeded {
                            container: *container,
                            pull_time: SignedDuration::ZERO,
                            total_time: SignedDuration::ZERO,
                            image_size: super::fleet::SIM_IMAGE_SIZE,
                        },
                    ),
                };
                if o.0 == SignedDuration::ZERO
                    && let Outcome::PullSucceeded { .. } = o.1
                {
                    images.insert(image.clone());
                }
                self.schedule(now + o.0, Pending::Outcome(o.1));
            }
            Action::CreateAndStart { container, attempt } => {
                let (r, attempt) = (*container, *attempt);
                let b = match self.behaviour(r) {
                    Ok(b) => b.clone(),
                    Err(e) => {
                        let error = StartError::Config(e.to_string());
                        self.schedule(
                            now,
                            Pending::Outcome(Outcome::StartFailed {
                                container: r,
                                attempt,
                                error,
                            }),
                        );
                        return;
                    }
                };
                let uid = self.pod.metadata.uid.as_deref().unwrap_or("");
                let name = r.name(self.pod.spec.as_ref().expect("spec"));
                let id = format!("sim://{}-{name}-{attempt}", &uid[..uid.len().min(8)]);
                self.obs.push_instance(
                    r,
                    Instance {
                        attempt,
                        id,
                        image: String::new(),
                        image_id: String::new(),
                        state: InstanceState::Running { started_at: now },
                    },
                );
                self.schedule(
                    now,
                    Pending::Outcome(Outcome::Started {
                        container: r,
                        attempt,
                    }),
                );
                if let Some((after, code, oom)) = b.own_exit() {
                    self.schedule(
                        now + after,
                        Pending::Exit {
                            r,
                            attempt,
                            code,
                            oom,
                        },
                    );
                }
            }
            Action::RunPostStart { container, attempt } => {
                let (after, error) = match self.behaviour(*container) {
                    Ok(b) => (
                        b.post_start,
                        b.post_start_fail.then(|| {
                            "simulated postStart hook failure (sim.skiff.dev/behaviour: post-start-fail)"
                                .to_string()
                        }),
                    ),
                    Err(_) => (SignedDuration::ZERO, None),
                };
                self.schedule(
                    now + after,
                    Pending::Outcome(Outcome::PostStartFinished {
                        container: *container,
                        attempt: *attempt,
                        error,
                    }),
                );
            }
            Action::RunPreStop {
                container,
                attempt,
                grace_seconds,
            } => {
                let took = self
                    .behaviour(*container)
                    .map(|b| b.pre_stop)
                    .unwrap_or(SignedDuration::ZERO)
                    .min(SignedDuration::from_secs(*grace_seconds));
                self.schedule(
                    now + took,
                    Pending::Outcome(Outcome::PreStopFinished {
                        container: *container,
                        attempt: *attempt,
                        error: None,
                    }),
                );
            }
            Action::Kill {
                container,
                attempt,
                grace_seconds,
                ..
            } => {
                let (r, attempt) = (*container, *attempt);
                // A process still running: its own exit no longer happens; the signal decides.
                let was_running = self
                    .obs
                    .container(r)
                    .current
                    .as_ref()
                    .is_some_and(|i| i.attempt == attempt && i.running_since().is_some());
                if !was_running {
                    return;
                }
                let own = self.pending.iter().find_map(|(t, p)| match p {
                    Pending::Exit {
                        r: pr, attempt: pa, ..
                    } if *pr == r && *pa == attempt => Some(*t),
                    _ => None,
                });
                self.pending.retain(|(_, p)| {
                    !matches!(p, Pending::Exit { r: pr, attempt: pa, .. } if *pr == r && *pa == attempt)
                });
                let grace = SignedDuration::from_secs((*grace_seconds).max(0));
                let (after, code) = match self.behaviour(r) {
                    Ok(b) if !b.ignore_term && b.term <= grace => (b.term, 143),
                    _ => (grace, 137),
                };
                let mut at = now + after;
                let mut code = code;
                if let Some(t) = own
                    && t < at
                {
                    // It was about to end on its own anyway.
                    at = t;
                    code = self.behaviour(r).map(|b| b.exit_code).unwrap_or(0);
                }
                self.schedule(
                    at,
                    Pending::Exit {
                        r,
                        attempt,
                        code,
                        oom: false,
                    },
                );
            }
            Action::RunProbe {
                container,
                attempt,
                kind,
            } => {
                let result = match (
                    self.behaviour(*container),
                    self.since_start(*container, now),
                ) {
                    (Ok(b), Some(since)) => {
                        let pass = match kind {
                            ProbeKind::Liveness => b.live(since),
                            ProbeKind::Readiness => b.ready(since),
                            ProbeKind::Startup => b.started(since),
                        };
                        if pass {
                            ProbeOutcome::Success
                        } else {
                            ProbeOutcome::Failure(format!(
                                "simulated {} probe failure",
                                kind.title().to_lowercase()
                            ))
                        }
                    }
                    (_, None) => ProbeOutcome::Error("container is not running".into()),
                    (Err(e), _) => ProbeOutcome::Error(e.to_string()),
                };
                self.schedule(
                    now,
                    Pending::Outcome(Outcome::Probed {
                        container: *container,
                        attempt: *attempt,
                        kind: *kind,
                        result,
                    }),
                );
            }
            Action::KillPod => self.obs.sandbox_ready = false,
            Action::ConfirmDeletion => {}
        }
    }
}

fn behaviours(pod: &Pod) -> Vec<(ContainerRef, Result<Behaviour, String>)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    all_containers(spec)
        .map(|r| {
            (
                r,
                Behaviour::of(pod.metadata.annotations.as_ref(), r.name(spec)),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: i64 = 1_750_000_000;

    fn at(secs: f64) -> Timestamp {
        Timestamp::from_millisecond(T0 * 1000 + (secs * 1000.0) as i64).unwrap()
    }

    fn pod(annotations: serde_json::Value, spec: serde_json::Value) -> Arc<Pod> {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "0123456789abcdef",
                         "annotations": annotations, "creationTimestamp": at(0.0).to_string()},
            "spec": spec,
        }))
        .unwrap();
        skiff_core::pod::default_pod(&mut pod);
        pod.spec.as_mut().unwrap().node_name = Some("sim-1".into());
        Arc::new(pod)
    }

    /// Runs the pod from t=0 to `end` seconds, writing each status into the pod as the API
    /// would; returns (time, STATUS column) at each change and the events' reasons.
    fn drive(p: &mut SimPod, end: f64) -> (Vec<(f64, String)>, Vec<String>) {
        let mut images = NodeImages::new();
        let mut now = at(0.0);
        let mut changes: Vec<(f64, String)> = Vec::new();
        let mut reasons = Vec::new();
        let mut runs = 0;
        while now <= at(end) {
            let ran = p.run(now, &mut images);
            runs += 1;
            assert!(runs < 100_000, "no progress");
            reasons.extend(ran.events.iter().map(|e| e.reason.to_string()));
            let mut with_status = (*p.pod).clone();
            with_status.status = Some(ran.status);
            p.update(Arc::new(with_status));
            let cells = skiff_core::printers::row_cells(
                "pods",
                &serde_json::to_value(&*p.pod).unwrap(),
                now,
            );
            let st = cells[2].as_str().unwrap_or_default().to_string();
            let t = now.duration_since(at(0.0)).as_secs_f64();
            if changes.last().map(|(_, s)| s) != Some(&st) {
                changes.push((t, st));
            }
            match ran.wake_at {
                Some(w) if w > now => now = w,
                Some(_) => now += SignedDuration::from_millis(1),
                None => break,
            }
        }
        (changes, reasons)
    }

    fn restarts(p: &SimPod) -> i32 {
        p.pod
            .status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0]
            .restart_count
    }

    #[test]
    fn crash_loop_follows_the_back_off_curve() {
        let mut p = SimPod::new(
            pod(
                json!({"sim.skiff.dev/behaviour": "run=1s exit=1"}),
                json!({"containers": [{"name": "c", "image": "busybox"}]}),
            ),
            "10.0.0.1",
            "10.244.0.2".into(),
        );
        let (changes, reasons) = drive(&mut p, 700.0);
        // Crashes 1 s after each start. The first crash restarts at once; from the second on,
        // each restart waits 10, 20, 40, 80, 160, then 300 s after the crash.
        let mut gaps = Vec::new();
        let mut crashed_at = None;
        for (t, st) in &changes {
            match st.as_str() {
                "Error" => crashed_at = Some(*t),
                "Running" => {
                    if let Some(c) = crashed_at.take() {
                        gaps.push((t - c).round() as i64);
                    }
                }
                _ => {}
            }
        }
        assert_eq!(&gaps[..6], &[10, 20, 40, 80, 160, 300], "{changes:?}");
        assert!(changes.iter().any(|(_, s)| s == "CrashLoopBackOff"));
        assert!(changes.iter().any(|(_, s)| s == "Error"));
        assert!(reasons.iter().any(|r| r == "BackOff"));
        assert!(restarts(&p) >= 6);
    }

    #[test]
    fn missing_image_is_err_image_pull_then_back_off() {
        let mut p = SimPod::new(
            pod(
                json!({"sim.skiff.dev/behaviour": "image-missing pull=500ms"}),
                json!({"containers": [{"name": "c", "image": "nope:1"}]}),
            ),
            "10.0.0.1",
            "10.244.0.2".into(),
        );
        let (changes, reasons) = drive(&mut p, 60.0);
        let seq: Vec<&str> = changes.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(
            &seq[..3],
            &["ContainerCreating", "ErrImagePull", "ImagePullBackOff"],
            "{changes:?}"
        );
        assert!(reasons.iter().any(|r| r == "Failed"));
        assert!(reasons.iter().any(|r| r == "BackOff"));
    }

    #[test]
    fn liveness_failure_restarts_and_readiness_flips() {
        let mut p = SimPod::new(
            pod(
                json!({"sim.skiff.dev/behaviour": "liveness-fail-after=30s readiness-flip=20s"}),
                json!({"containers": [{"name": "c", "image": "busybox",
                    "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 10},
                    "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 5}}]}),
            ),
            "10.0.0.1",
            "10.244.0.2".into(),
        );
        let mut images = NodeImages::new();
        images.insert("busybox".into());
        let mut now = at(0.0);
        let mut ready_seen = Vec::new();
        let mut reasons = Vec::new();
        while now < at(75.0) {
            let ran = p.run(now, &mut images);
            reasons.extend(ran.events.iter().map(|e| e.reason.to_string()));
            if let Some(cs) = ran.status.container_statuses.as_ref() {
                let r = cs[0].ready;
                if ready_seen.last() != Some(&r) {
                    ready_seen.push(r);
                }
            }
            let mut with_status = (*p.pod).clone();
            with_status.status = Some(ran.status);
            p.update(Arc::new(with_status));
            now = ran
                .wake_at
                .unwrap()
                .max(now + SignedDuration::from_millis(1));
        }
        // Ready from the first probe (at start), not ready after 20 s (flip), ready again…
        assert!(
            ready_seen.starts_with(&[true, false, true]),
            "{ready_seen:?}"
        );
        assert!(reasons.iter().any(|r| r == "Unhealthy"), "{reasons:?}");
        assert!(reasons.iter().any(|r| r == "Killing"), "{reasons:?}");
        assert_eq!(restarts(&p), 1);
    }

    #[test]
    fn init_containers_run_in_order_before_the_app() {
        let mut p = SimPod::new(
            pod(
                json!({"sim.skiff.dev/behaviour.i1": "run=2s", "sim.skiff.dev/behaviour.i2": "run=3s"}),
                json!({"initContainers": [{"name": "i1", "image": "busybox"}, {"name": "i2", "image": "busybox"}],
                       "containers": [{"name": "c", "image": "busybox"}]}),
            ),
            "10.0.0.1",
            "10.244.0.2".into(),
        );
        let (changes, _) = drive(&mut p, 20.0);
        let seq: Vec<(i64, &str)> = changes
            .iter()
            .map(|(t, s)| (t.round() as i64, s.as_str()))
            .collect();
        assert!(seq.contains(&(0, "Init:0/2")), "{seq:?}");
        assert!(seq.contains(&(2, "Init:1/2")), "{seq:?}");
        assert!(
            seq.contains(&(5, "PodInitializing")) || seq.contains(&(5, "Running")),
            "{seq:?}"
        );
        assert_eq!(seq.last().unwrap().1, "Running");
    }

    #[test]
    fn deletion_waits_for_the_grace_period_of_a_term_ignoring_process() {
        let mut p = SimPod::new(
            pod(
                json!({"sim.skiff.dev/behaviour": "ignore-term pre-stop=2s"}),
                json!({"terminationGracePeriodSeconds": 5,
                       "containers": [{"name": "c", "image": "busybox",
                          "lifecycle": {"preStop": {"exec": {"command": ["true"]}}}}]}),
            ),
            "10.0.0.1",
            "10.244.0.2".into(),
        );
        let mut images = NodeImages::new();
        let mut now = at(0.0);
        for _ in 0..10 {
            let ran = p.run(now, &mut images);
            let mut with_status = (*p.pod).clone();
            with_status.status = Some(ran.status);
            p.update(Arc::new(with_status));
            now += SignedDuration::from_secs(1);
        }
        let mut deleting = (*p.pod).clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                now + SignedDuration::from_secs(5),
            ));
        deleting.metadata.deletion_grace_period_seconds = Some(5);
        p.update(Arc::new(deleting));
        let deleted_from = now;
        let mut confirmed = None;
        while confirmed.is_none() && now < deleted_from + SignedDuration::from_secs(30) {
            let ran = p.run(now, &mut images);
            if ran.confirm_deletion {
                confirmed = Some(now);
                let c = &ran.status.container_statuses.unwrap()[0];
                let t = c.state.as_ref().unwrap().terminated.as_ref().unwrap();
                assert_eq!(t.exit_code, 137);
            }
            now = ran.wake_at.unwrap_or(now + SignedDuration::from_secs(1));
        }
        let took = confirmed.unwrap().duration_since(deleted_from).as_secs();
        assert_eq!(took, 5, "killed at the end of the grace period");
    }

    #[test]
    fn a_bad_annotation_is_a_config_error() {
        let mut p = SimPod::new(
            pod(
                json!({"sim.skiff.dev/behaviour": "run=later"}),
                json!({"containers": [{"name": "c", "image": "busybox"}]}),
            ),
            "10.0.0.1",
            "10.244.0.2".into(),
        );
        let (changes, _) = drive(&mut p, 5.0);
        assert!(
            changes
                .iter()
                .any(|(_, s)| s == "CreateContainerConfigError"),
            "{changes:?}"
        );
        let w = p
            .pod
            .status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0]
            .state
            .as_ref()
            .unwrap()
            .waiting
            .clone()
            .unwrap();
        assert!(w.message.unwrap().contains("sim.skiff.dev/behaviour"));
    }
}
