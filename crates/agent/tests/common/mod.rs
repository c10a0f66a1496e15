//! A deterministic fake runtime and worker loop for scenario tests: it performs the engine's
//! actions instantly or after scripted delays, feeds outcomes back, writes each decision's
//! status into the pod (as the API would store it) and advances a fake clock to the next wake-up
//! or runtime event.

#![allow(dead_code)]

use std::collections::HashMap;
use std::rc::Rc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use serde_json::{Value, json};
use skiff_agent::{
    Action, ContainerRef, Decision, Exit, ExitReason, ImagePresence, Instance, InstanceState,
    ObservedPod, Outcome, PodMemory, ProbeKind, ProbeOutcome, StartError, decide,
};

pub const T0: i64 = 1_750_000_000;

pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(T0 + secs).unwrap()
}

pub fn secs_of(t: Timestamp) -> i64 {
    t.as_second() - T0
}

/// A pod as the API server would hand it to the agent: defaulted, bound to node-1, Pending,
/// `PodScheduled=True`.
pub fn pod(name: &str, spec: Value) -> Pod {
    let mut pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": format!("uid-{name}"),
            "creationTimestamp": at(0).to_string(),
        },
        "spec": spec,
    }))
    .unwrap();
    skiff_core::pod::default_pod(&mut pod);
    let spec = pod.spec.as_mut().unwrap();
    spec.node_name = Some("node-1".into());
    pod.status = Some(
        serde_json::from_value(json!({
            "phase": "Pending",
            "qosClass": "BestEffort",
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": at(0).to_string()}],
        }))
        .unwrap(),
    );
    pod
}

/// How the runtime treats SIGTERM.
#[derive(Clone, Copy, Debug)]
pub enum OnTerm {
    /// Exits after `secs` with `code`.
    Exit { secs: i64, code: i32 },
    /// Ignores it: SIGKILL at the end of the grace period (exit 137).
    Ignore,
}

type RunFn = Rc<dyn Fn(u32) -> Option<(i64, i32)>>;
type PullFn = Rc<dyn Fn(u32) -> Result<(), String>>;
type ProbeFn = Rc<dyn Fn(ProbeKind, u32, i64) -> ProbeOutcome>;
type StartFn = Rc<dyn Fn(u32) -> Option<StartError>>;
type HookFn = Rc<dyn Fn(u32) -> (i64, Option<String>)>;

/// What one container does in the fake runtime.
#[derive(Clone)]
pub struct Behavior {
    /// For instance `attempt`: (seconds it runs, exit code), or None to run until killed.
    pub run: RunFn,
    /// Whether the node has the image at the start.
    pub image_present: bool,
    /// Result of the n-th pull (0-based) of this container's image.
    pub pull: PullFn,
    pub pull_secs: i64,
    /// A probe's result: (kind, attempt, seconds since the instance started).
    pub probe: ProbeFn,
    pub start_error: StartFn,
    /// postStart: (seconds, error) for instance `attempt`.
    pub post_start: HookFn,
    pub pre_stop_secs: i64,
    pub on_term: OnTerm,
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            run: Rc::new(|_| None),
            image_present: true,
            pull: Rc::new(|_| Ok(())),
            pull_secs: 1,
            probe: Rc::new(|_, _, _| ProbeOutcome::Success),
            start_error: Rc::new(|_| None),
            post_start: Rc::new(|_| (0, None)),
            pre_stop_secs: 0,
            on_term: OnTerm::Exit { secs: 0, code: 0 },
        }
    }
}

impl Behavior {
    pub fn runs_forever() -> Self {
        Behavior::default()
    }

    pub fn exits(secs: i64, code: i32) -> Self {
        Behavior {
            run: Rc::new(move |_| Some((secs, code))),
            ..Behavior::default()
        }
    }

    pub fn run(mut self, f: impl Fn(u32) -> Option<(i64, i32)> + 'static) -> Self {
        self.run = Rc::new(f);
        self
    }

    pub fn probe(mut self, f: impl Fn(ProbeKind, u32, i64) -> ProbeOutcome + 'static) -> Self {
        self.probe = Rc::new(f);
        self
    }

    pub fn pull(mut self, f: impl Fn(u32) -> Result<(), String> + 'static) -> Self {
        self.pull = Rc::new(f);
        self
    }

    pub fn post_start(mut self, f: impl Fn(u32) -> (i64, Option<String>) + 'static) -> Self {
        self.post_start = Rc::new(f);
        self
    }

    pub fn absent(mut self) -> Self {
        self.image_present = false;
        self
    }

    pub fn on_term(mut self, t: OnTerm) -> Self {
        self.on_term = t;
        self
    }

    pub fn pre_stop(mut self, secs: i64) -> Self {
        self.pre_stop_secs = secs;
        self
    }
}

enum Pending {
    Exit {
        r: ContainerRef,
        attempt: u32,
        code: i32,
    },
    Outcome(Outcome),
}

/// One decision, as the test saw it.
pub struct Step {
    pub at: i64,
    pub decision: Decision,
    pub ready: String,
    pub status: String,
    pub restarts: String,
}

pub struct Sim {
    pub pod: Pod,
    pub obs: ObservedPod,
    pub mem: PodMemory,
    pub now: Timestamp,
    behaviors: HashMap<String, Behavior>,
    pulls: HashMap<String, u32>,
    pending: Vec<(Timestamp, Pending)>,
    pub steps: Vec<Step>,
    pub deleted: bool,
    next_id: u64,
}

impl Sim {
    pub fn new(pod: Pod, behaviors: &[(&str, Behavior)]) -> Self {
        let mut obs = ObservedPod::for_pod(&pod);
        obs.host_ip = Some("192.168.0.10".into());
        let behaviors: HashMap<String, Behavior> = behaviors
            .iter()
            .map(|(n, b)| (n.to_string(), b.clone()))
            .collect();
        let mut sim = Sim {
            pod,
            obs,
            mem: PodMemory::new(),
            now: at(0),
            behaviors,
            pulls: HashMap::new(),
            pending: Vec::new(),
            steps: Vec::new(),
            deleted: false,
            next_id: 1,
        };
        for r in sim.refs() {
            let present = sim.behavior(r).image_present;
            sim.obs.container_mut(r).image = if present {
                ImagePresence::Present
            } else {
                ImagePresence::Absent
            };
        }
        sim
    }

    pub fn refs(&self) -> Vec<ContainerRef> {
        let spec = self.pod.spec.as_ref().unwrap();
        let inits = spec.init_containers.as_ref().map_or(0, Vec::len);
        (0..inits)
            .map(ContainerRef::Init)
            .chain((0..spec.containers.len()).map(ContainerRef::App))
            .collect()
    }

    pub fn name(&self, r: ContainerRef) -> String {
        r.name(self.pod.spec.as_ref().unwrap()).to_string()
    }

    pub fn find(&self, name: &str) -> ContainerRef {
        self.refs()
            .into_iter()
            .find(|r| self.name(*r) == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    fn behavior(&self, r: ContainerRef) -> Behavior {
        self.behaviors
            .get(&self.name(r))
            .cloned()
            .unwrap_or_default()
    }

    fn schedule(&mut self, after: i64, p: Pending) {
        self.pending
            .push((self.now + SignedDuration::from_secs(after), p));
    }

    /// Deletes the pod through the API with `grace` seconds.
    pub fn delete(&mut self, grace: i64) {
        let m = &mut self.pod.metadata;
        m.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            self.now + SignedDuration::from_secs(grace),
        ));
        m.deletion_grace_period_seconds = Some(grace);
    }

    fn apply_due(&mut self) {
        let now = self.now;
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].0 <= now {
                due.push(self.pending.remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|(t, _)| *t);
        for (t, p) in due {
            match p {
                Pending::Exit { r, attempt, code } => {
                    let c = self.obs.container_mut(r);
                    if let Some(cur) = c.current.as_mut()
                        && cur.attempt == attempt
                        && let InstanceState::Running { started_at } = cur.state
                    {
                        cur.state = InstanceState::Exited(Exit::code(code, Some(started_at), t));
                    }
                }
                Pending::Outcome(o) => {
                    if let Outcome::PullSucceeded { container, .. } = &o {
                        self.obs.container_mut(*container).image = ImagePresence::Present;
                    }
                    self.obs.outcomes.push(o);
                }
            }
        }
    }

    fn perform(&mut self, a: &Action) {
        match a {
            Action::CreateSandbox => {
                self.obs.sandbox_ready = true;
                self.obs.pod_ips = vec!["10.244.0.7".into()];
            }
            Action::PullImage { container, image } => {
                let b = self.behavior(*container);
                let n = self.pulls.entry(image.clone()).or_insert(0);
                let result = (b.pull)(*n);
                *n += 1;
                let secs = b.pull_secs;
                let o = match result {
                    Ok(()) => Outcome::PullSucceeded {
                        container: *container,
                        pull_time: SignedDuration::from_millis(secs * 1000 - 7),
                        total_time: SignedDuration::from_millis(secs * 1000 - 7),
                        image_size: 4_190_000,
                    },
                    Err(error) => Outcome::PullFailed {
                        container: *container,
                        error,
                    },
                };
                self.schedule(secs, Pending::Outcome(o));
            }
            Action::CreateAndStart { container, attempt } => {
                let b = self.behavior(*container);
                let id = format!("containerd://{:064x}", self.next_id);
                self.next_id += 1;
                match (b.start_error)(*attempt) {
                    Some(StartError::Run(m)) => {
                        self.obs.push_instance(
                            *container,
                            Instance {
                                attempt: *attempt,
                                id,
                                image: String::new(),
                                image_id: String::new(),
                                state: InstanceState::Exited(Exit {
                                    exit_code: 128,
                                    reason: ExitReason::StartError,
                                    message: Some(m.clone()),
                                    started_at: None,
                                    finished_at: self.now,
                                }),
                            },
                        );
                        self.schedule(
                            0,
                            Pending::Outcome(Outcome::StartFailed {
                                container: *container,
                                attempt: *attempt,
                                error: StartError::Run(m),
                            }),
                        );
                    }
                    Some(e) => self.schedule(
                        0,
                        Pending::Outcome(Outcome::StartFailed {
                            container: *container,
                            attempt: *attempt,
                            error: e,
                        }),
                    ),
                    None => {
                        self.obs.push_instance(
                            *container,
                            Instance {
                                attempt: *attempt,
                                id,
                                image: String::new(),
                                image_id: "sha256:abc".into(),
                                state: InstanceState::Running {
                                    started_at: self.now,
                                },
                            },
                        );
                        self.schedule(
                            0,
                            Pending::Outcome(Outcome::Started {
                                container: *container,
                                attempt: *attempt,
                            }),
                        );
                        if let Some((secs, code)) = (b.run)(*attempt) {
                            self.schedule(
                                secs,
                                Pending::Exit {
                                    r: *container,
                                    attempt: *attempt,
                                    code,
                                },
                            );
                        }
                    }
                }
            }
            Action::RunPostStart { container, attempt } => {
                let (secs, error) = (self.behavior(*container).post_start)(*attempt);
                self.schedule(
                    secs,
                    Pending::Outcome(Outcome::PostStartFinished {
                        container: *container,
                        attempt: *attempt,
                        error,
                    }),
                );
            }
            Action::RunPreStop {
                container, attempt, ..
            } => {
                let secs = self.behavior(*container).pre_stop_secs;
                self.schedule(
                    secs,
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
                let r = *container;
                let attempt = *attempt;
                self.pending.retain(|(_, p)| {
                    !matches!(p, Pending::Exit { r: pr, attempt: pa, .. } if *pr == r && *pa == attempt)
                });
                let (secs, code) = match self.behavior(r).on_term {
                    OnTerm::Exit { secs, code } if secs <= *grace_seconds => (secs, code),
                    _ => (*grace_seconds, 137),
                };
                self.schedule(secs, Pending::Exit { r, attempt, code });
            }
            Action::RunProbe {
                container,
                attempt,
                kind,
            } => {
                let started = self
                    .obs
                    .container(*container)
                    .current
                    .as_ref()
                    .and_then(|i| i.running_since())
                    .unwrap();
                let since = self.now.duration_since(started).as_secs();
                let result = (self.behavior(*container).probe)(*kind, *attempt, since);
                self.schedule(
                    0,
                    Pending::Outcome(Outcome::Probed {
                        container: *container,
                        attempt: *attempt,
                        kind: *kind,
                        result,
                    }),
                );
            }
            Action::KillPod => {
                self.obs.sandbox_ready = false;
            }
            Action::ConfirmDeletion => {
                self.deleted = true;
            }
        }
    }

    /// One decision at the current time; its status is written into the pod.
    pub fn step(&mut self) -> &Step {
        self.apply_due();
        let d = decide(&self.pod, &self.obs, &mut self.mem, self.now);
        self.obs.outcomes.clear();
        self.pod.status = Some(d.status.clone());
        for a in &d.actions {
            self.perform(a);
        }
        let cells = skiff_core::printers::row_cells(
            "pods",
            &serde_json::to_value(&self.pod).unwrap(),
            self.now,
        );
        let text = |v: &Value| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        };
        self.steps.push(Step {
            at: secs_of(self.now),
            ready: text(&cells[1]),
            status: text(&cells[2]),
            restarts: text(&cells[3]),
            decision: d,
        });
        self.steps.last().unwrap()
    }

    /// Runs the worker loop until `end` (seconds since T0) or until nothing is left to do.
    pub fn run_until(&mut self, end: i64) {
        let end = at(end);
        let mut same_time = 0;
        loop {
            if self.deleted {
                return;
            }
            let before = self.now;
            let step = self.step();
            let acted = !step.decision.actions.is_empty();
            let wake = step.decision.wake_at;
            let next_pending = self.pending.iter().map(|(t, _)| *t).min();
            let next = if acted || next_pending.is_some_and(|t| t <= self.now) {
                self.now
            } else {
                match (wake, next_pending) {
                    (Some(a), Some(b)) => a.min(b),
                    (Some(a), None) => a,
                    (None, Some(b)) => b,
                    (None, None) => return,
                }
            };
            if next > end {
                self.now = end;
                return;
            }
            assert!(
                next >= self.now,
                "wake_at in the past: {next} < {}",
                self.now
            );
            if next == before {
                same_time += 1;
                assert!(same_time < 100, "decision loop does not settle at {next}");
            } else {
                same_time = 0;
            }
            self.now = next;
        }
    }

    pub fn status(&self) -> &PodStatus {
        self.pod.status.as_ref().unwrap()
    }

    pub fn container_status(&self, name: &str) -> &ContainerStatus {
        let s = self.status();
        s.container_statuses
            .iter()
            .flatten()
            .chain(s.init_container_statuses.iter().flatten())
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no status for {name}"))
    }

    pub fn phase(&self) -> &str {
        self.status().phase.as_deref().unwrap_or("")
    }

    pub fn condition(&self, t: &str) -> (String, Option<String>, Option<String>) {
        let c = self
            .status()
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t)
            .unwrap_or_else(|| panic!("no condition {t}"));
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    /// The STATUS column over time, consecutive duplicates removed.
    pub fn status_timeline(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in &self.steps {
            if out.last() != Some(&s.status) {
                out.push(s.status.clone());
            }
        }
        out
    }

    /// (time, STATUS) at each change.
    pub fn status_changes(&self) -> Vec<(i64, String)> {
        let mut out: Vec<(i64, String)> = Vec::new();
        for s in &self.steps {
            if out.last().map(|(_, st)| st) != Some(&s.status) {
                out.push((s.at, s.status.clone()));
            }
        }
        out
    }

    /// Every event as (time, type, reason, message).
    pub fn events(&self) -> Vec<(i64, &'static str, &'static str, String)> {
        self.steps
            .iter()
            .flat_map(|s| {
                s.decision
                    .events
                    .iter()
                    .map(move |e| (s.at, e.type_.as_str(), e.reason, e.message.clone()))
            })
            .collect()
    }

    /// Messages of the events with this reason.
    pub fn event_messages(&self, reason: &str) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|e| e.2 == reason)
            .map(|e| e.3)
            .collect()
    }

    /// Every action as (time, action).
    pub fn actions(&self) -> Vec<(i64, Action)> {
        self.steps
            .iter()
            .flat_map(|s| s.decision.actions.iter().map(move |a| (s.at, a.clone())))
            .collect()
    }

    /// Times at which instances of `r` were created.
    pub fn start_times(&self, r: ContainerRef) -> Vec<i64> {
        self.actions()
            .into_iter()
            .filter_map(|(t, a)| match a {
                Action::CreateAndStart { container, .. } if container == r => Some(t),
                _ => None,
            })
            .collect()
    }

    /// Every waiting message seen for a container (in order, duplicates removed).
    pub fn waiting_messages(&self, name: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in &self.steps {
            let st = &s.decision.status;
            for c in st
                .container_statuses
                .iter()
                .flatten()
                .chain(st.init_container_statuses.iter().flatten())
                .filter(|c| c.name == name)
            {
                if let Some(m) = c
                    .state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.message.clone())
                    && out.last() != Some(&m)
                {
                    out.push(m);
                }
            }
        }
        out
    }
}
