//! The node agent (kubelet): a pure decision core, and the I/O around it (worker, node
//! registration and heartbeats, event recorder, log server, runtimes).
//!
//! A worker per pod observes the runtime, asks [`lifecycle::decide`] what to do, performs the
//! actions through the runtime, reports the status and events through the API, and sleeps until
//! the decision's `wake_at` or the next runtime event. All Kubernetes rules of a pod's life —
//! restart policy and back-off, image pull policy, init containers and sidecars, probes, hooks,
//! termination, the status the API shows — are in this crate's pure modules, which do no I/O,
//! spawn nothing and never read a clock (time is an argument), so a simulated runtime can drive
//! thousands of pods through the same engine and tests can use a fake clock.
//!
//! * [`lifecycle`]: [`lifecycle::decide`], the [`lifecycle::Action`]s and the
//!   [`lifecycle::Decision`].
//! * [`observed`]: what the worker reports (container instances, image presence, outcomes).
//! * [`memory`]: what the engine remembers per pod between decisions.
//! * [`status`]: the API `PodStatus` (phase, conditions, container statuses).
//! * [`backoff`]: the per-key exponential back-off (CrashLoopBackOff, ImagePullBackOff).
//! * [`probe`]: the probe worker state machine (thresholds, schedule, startup gating).
//! * [`events`]: the event catalogue; [`reasons`]: waiting reasons; [`mod@format`]: Go-style text.
//! * [`pull_secrets`]: which `imagePullSecrets` credentials an image pull uses.
//! * `start`, `kill`, `rules`: the start pipeline, the kill/termination state machine and the
//!   shared predicates behind `decide`.
//!
//! The I/O side: [`agent`] (wiring), [`worker`] (one task per pod), [`node`] (Node and Lease),
//! [`recorder`] (kubelet-style events), [`server`] (the HTTPS log and exec endpoints the API
//! server proxies to), [`runtime`] (the runtime trait and the `host` runtime), [`probe_io`]
//! (probe and hook I/O).
//!
//! The rules follow the kubelet of Kubernetes 1.31/1.32; see
//! `/work/shared/spec/pod-lifecycle.md` §1, §2, §4–§8, §9.4 and §12.

pub mod backoff;
pub mod events;
pub mod format;
mod kill;
pub mod lifecycle;
pub mod memory;
pub mod observed;
pub mod probe;
pub mod pull_secrets;
pub mod reasons;
mod rules;
pub mod runtime;
mod start;
pub mod status;

pub use kill::MIN_GRACE_SECONDS;
pub use lifecycle::{Action, Decision, decide};
pub use memory::{KillReason, Phase, PodMemory};
pub use observed::{
    ContainerRef, Exit, ExitReason, ImagePresence, Instance, InstanceState, ObservedContainer,
    ObservedPod, Outcome, StartError,
};
pub use probe::{ProbeKind, ProbeOutcome, ProbeResult};
pub use rules::RestartPolicy;
pub mod agent;
pub mod node;
pub mod probe_io;
pub mod proxy;
pub mod recorder;
pub mod server;
pub mod sim;
pub mod worker;
