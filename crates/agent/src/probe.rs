//! The probe worker of one container × probe kind as a pure state machine (spec §6.1, §6.2):
//! defaults, initial results, thresholds, on-hold after a liveness/startup failure, and the
//! `periodSeconds` ticker turned into "the next probe is due at T".
//!
//! The kubelet runs one goroutine per probe; here the lifecycle engine owns a [`ProbeState`] per
//! container and kind, asks [`ProbeState::is_due`] when it decides, emits a `RunProbe` action,
//! and feeds the outcome back through [`ProbeState::record`]. Running the probe itself (HTTP,
//! TCP, exec) is the worker's job.
//!
//! Scheduling: ticks are anchored at the container's start. Readiness probes first run at
//! `startedAt + initialDelaySeconds` (the kubelet triggers a readiness run at once while a
//! container has no readiness result); liveness and startup probes run on the first tick at or
//! after the initial delay, and never before one period has passed (the kubelet's ticker starts
//! when the pod is added, so the first real probe comes about a period after the start).

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Probe;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    /// All kinds, in the order the engine evaluates them.
    pub const ALL: [ProbeKind; 3] = [
        ProbeKind::Startup,
        ProbeKind::Liveness,
        ProbeKind::Readiness,
    ];

    /// The word event messages start with (`Liveness probe failed: …`).
    pub fn title(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }

    /// The cached result a new container instance starts with.
    pub fn initial_result(self) -> ProbeResult {
        match self {
            ProbeKind::Liveness => ProbeResult::Success,
            ProbeKind::Readiness => ProbeResult::Failure,
            ProbeKind::Startup => ProbeResult::Unknown,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            ProbeKind::Liveness => 0,
            ProbeKind::Readiness => 1,
            ProbeKind::Startup => 2,
        }
    }

    /// The probe of this kind in a container spec.
    pub fn of(self, c: &k8s_openapi::api::core::v1::Container) -> Option<&Probe> {
        match self {
            ProbeKind::Liveness => c.liveness_probe.as_ref(),
            ProbeKind::Readiness => c.readiness_probe.as_ref(),
            ProbeKind::Startup => c.startup_probe.as_ref(),
        }
    }
}

/// The cached result of a probe worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProbeResult {
    #[default]
    Unknown,
    Success,
    Failure,
}

/// What one probe run returned, as the worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    Success,
    /// Counted as a success; emits a `ProbeWarning` event with this output.
    Warning(String),
    /// A failed check, with its output (`HTTP probe failed with statuscode: 500`).
    Failure(String),
    /// The probe could not be run (its result is discarded), with the error text.
    Error(String),
}

/// Probe timing and thresholds with Kubernetes' defaults applied (§6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    pub initial_delay_seconds: i64,
    pub period_seconds: i64,
    pub timeout_seconds: i64,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl ProbeTiming {
    /// Reads a probe, filling unset or invalid (≤ 0) values with the defaults: delay 0, period
    /// 10 s, timeout 1 s, success 1, failure 3.
    pub fn of(p: &Probe) -> Self {
        fn pos(v: Option<i32>, default: i64) -> i64 {
            match v {
                Some(v) if v > 0 => i64::from(v),
                _ => default,
            }
        }
        ProbeTiming {
            initial_delay_seconds: p.initial_delay_seconds.unwrap_or(0).max(0).into(),
            period_seconds: pos(p.period_seconds, 10),
            timeout_seconds: pos(p.timeout_seconds, 1),
            success_threshold: pos(p.success_threshold, 1) as u32,
            failure_threshold: pos(p.failure_threshold, 3) as u32,
        }
    }

    fn period(&self) -> SignedDuration {
        SignedDuration::from_secs(self.period_seconds)
    }
}

/// One probe worker's state for the current instance of a container.
#[derive(Debug, Clone, Default)]
pub struct ProbeState {
    /// The container instance (restart count) this state belongs to.
    attempt: Option<u32>,
    result: ProbeResult,
    last: ProbeResult,
    run: u32,
    on_hold: bool,
    stopped: bool,
    in_flight: bool,
    /// The probe was skipped because the startup probe has not succeeded yet.
    gated: bool,
    next_due: Option<Timestamp>,
}

impl ProbeState {
    /// The instance this state tracks.
    pub fn attempt(&self) -> Option<u32> {
        self.attempt
    }

    /// The cached result.
    pub fn result(&self) -> ProbeResult {
        self.result
    }

    /// A run is under way.
    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// When the next run is due (None once stopped or on hold).
    pub fn next_due(&self) -> Option<Timestamp> {
        if self.stopped || self.on_hold {
            None
        } else {
            self.next_due
        }
    }

    /// Starts tracking a new container instance that started running at `started_at`: the
    /// result goes back to the kind's initial value and the schedule restarts.
    pub fn start(&mut self, kind: ProbeKind, attempt: u32, started_at: Timestamp, t: &ProbeTiming) {
        let delay = t.initial_delay_seconds;
        let first = match kind {
            ProbeKind::Readiness => delay,
            ProbeKind::Liveness | ProbeKind::Startup => {
                let ticks = ((delay + t.period_seconds - 1) / t.period_seconds).max(1);
                ticks * t.period_seconds
            }
        };
        *self = ProbeState {
            attempt: Some(attempt),
            result: kind.initial_result(),
            next_due: Some(started_at + SignedDuration::from_secs(first)),
            ..ProbeState::default()
        };
    }

    /// True when a run should start now.
    pub fn is_due(&self, now: Timestamp) -> bool {
        !self.in_flight && self.next_due().is_some_and(|d| now >= d)
    }

    /// Records that a run was started at `now` and moves the schedule to the next tick.
    pub fn mark_started(&mut self, now: Timestamp, t: &ProbeTiming) {
        self.in_flight = true;
        self.advance_past(now, t);
    }

    /// Moves `next_due` to the first tick strictly after `now`.
    fn advance_past(&mut self, now: Timestamp, t: &ProbeTiming) {
        let Some(mut due) = self.next_due else {
            return;
        };
        let period = t.period();
        if due <= now {
            let behind = now.duration_since(due).as_secs() / t.period_seconds;
            due += period * (behind as i32 + 1);
            while due <= now {
                due += period;
            }
        }
        self.next_due = Some(due);
    }

    /// The probe was skipped because the startup probe has not succeeded; no wake-up is
    /// needed for it until that changes.
    pub fn mark_gated(&mut self) {
        self.gated = true;
    }

    /// Whether the probe is currently skipped by startup gating.
    pub fn is_gated(&self) -> bool {
        self.gated
    }

    /// The startup gate opened: resume on the schedule's next tick at or after `now`.
    pub fn ungate(&mut self, now: Timestamp, t: &ProbeTiming) {
        if self.gated {
            self.gated = false;
            if self.next_due.is_some_and(|d| d < now) {
                self.advance_past(now, t);
            }
        }
    }

    /// Applies a finished run. Returns true when the cached result changed. Errors are
    /// discarded; warnings count as successes. A liveness or startup failure that reaches the
    /// threshold puts the worker on hold until a new instance starts.
    pub fn record(
        &mut self,
        kind: ProbeKind,
        outcome: &ProbeOutcome,
        now: Timestamp,
        t: &ProbeTiming,
    ) -> bool {
        self.in_flight = false;
        if self.next_due.is_some_and(|d| d <= now) {
            self.advance_past(now, t);
        }
        let r = match outcome {
            ProbeOutcome::Error(_) => return false,
            ProbeOutcome::Success | ProbeOutcome::Warning(_) => ProbeResult::Success,
            ProbeOutcome::Failure(_) => ProbeResult::Failure,
        };
        if self.last == r {
            self.run += 1;
        } else {
            self.last = r;
            self.run = 1;
        }
        let threshold = match r {
            ProbeResult::Failure => t.failure_threshold,
            _ => t.success_threshold,
        };
        if self.run < threshold {
            return false;
        }
        let changed = self.result != r;
        self.result = r;
        if r == ProbeResult::Failure && kind != ProbeKind::Readiness {
            self.on_hold = true;
            self.run = 0;
        }
        changed
    }

    /// The pod is being deleted: liveness and startup workers report success and stop.
    pub fn quiet_shutdown(&mut self) {
        self.result = ProbeResult::Success;
        self.stopped = true;
        self.in_flight = false;
    }

    /// Stops probing (startup probe after success, terminal pods).
    pub fn stop(&mut self) {
        self.stopped = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn timing(delay: i32, period: i32, failure: i32, success: i32) -> ProbeTiming {
        ProbeTiming::of(&Probe {
            initial_delay_seconds: Some(delay),
            period_seconds: Some(period),
            failure_threshold: Some(failure),
            success_threshold: Some(success),
            ..Probe::default()
        })
    }

    #[test]
    fn defaults() {
        let d = ProbeTiming::of(&Probe::default());
        assert_eq!(
            d,
            ProbeTiming {
                initial_delay_seconds: 0,
                period_seconds: 10,
                timeout_seconds: 1,
                success_threshold: 1,
                failure_threshold: 3
            }
        );
    }

    #[test]
    fn initial_results_and_first_ticks() {
        let tm = timing(0, 10, 3, 1);
        let mut r = ProbeState::default();
        r.start(ProbeKind::Readiness, 0, t(0), &tm);
        assert_eq!(r.result(), ProbeResult::Failure);
        assert!(r.is_due(t(0)));
        let mut l = ProbeState::default();
        l.start(ProbeKind::Liveness, 0, t(0), &tm);
        assert_eq!(l.result(), ProbeResult::Success);
        assert_eq!(l.next_due(), Some(t(10)));
        let mut s = ProbeState::default();
        s.start(ProbeKind::Startup, 0, t(0), &timing(15, 10, 3, 1));
        assert_eq!(s.result(), ProbeResult::Unknown);
        assert_eq!(s.next_due(), Some(t(20)));
        let mut r = ProbeState::default();
        r.start(ProbeKind::Readiness, 0, t(0), &timing(5, 10, 3, 1));
        assert_eq!(r.next_due(), Some(t(5)));
    }

    #[test]
    fn liveness_threshold_and_hold() {
        let tm = timing(0, 10, 3, 1);
        let mut l = ProbeState::default();
        l.start(ProbeKind::Liveness, 0, t(0), &tm);
        let fail = ProbeOutcome::Failure("boom".into());
        for (i, at) in [10, 20].into_iter().enumerate() {
            assert!(l.is_due(t(at)), "tick {i}");
            l.mark_started(t(at), &tm);
            assert!(!l.record(ProbeKind::Liveness, &fail, t(at), &tm));
            assert_eq!(l.result(), ProbeResult::Success);
        }
        l.mark_started(t(30), &tm);
        assert!(l.record(ProbeKind::Liveness, &fail, t(30), &tm));
        assert_eq!(l.result(), ProbeResult::Failure);
        assert_eq!(l.next_due(), None, "on hold");
        l.start(ProbeKind::Liveness, 1, t(40), &tm);
        assert_eq!(l.result(), ProbeResult::Success);
        assert_eq!(l.next_due(), Some(t(50)));
    }

    #[test]
    fn readiness_success_threshold_and_errors() {
        let tm = timing(0, 5, 2, 2);
        let mut r = ProbeState::default();
        r.start(ProbeKind::Readiness, 0, t(0), &tm);
        r.mark_started(t(0), &tm);
        assert!(!r.record(ProbeKind::Readiness, &ProbeOutcome::Success, t(0), &tm));
        r.mark_started(t(5), &tm);
        assert!(!r.record(
            ProbeKind::Readiness,
            &ProbeOutcome::Error("x".into()),
            t(5),
            &tm
        ));
        r.mark_started(t(10), &tm);
        assert!(r.record(
            ProbeKind::Readiness,
            &ProbeOutcome::Warning("redirect".into()),
            t(10),
            &tm
        ));
        assert_eq!(r.result(), ProbeResult::Success);
        r.mark_started(t(15), &tm);
        assert!(!r.record(
            ProbeKind::Readiness,
            &ProbeOutcome::Failure("no".into()),
            t(15),
            &tm
        ));
        r.mark_started(t(20), &tm);
        assert!(r.record(
            ProbeKind::Readiness,
            &ProbeOutcome::Failure("no".into()),
            t(20),
            &tm
        ));
        assert_eq!(r.result(), ProbeResult::Failure);
        assert_eq!(r.next_due(), Some(t(25)), "readiness keeps probing");
    }

    #[test]
    fn slow_runs_skip_missed_ticks_and_gating_realigns() {
        let tm = timing(0, 10, 3, 1);
        let mut l = ProbeState::default();
        l.start(ProbeKind::Liveness, 0, t(0), &tm);
        l.mark_started(t(10), &tm);
        assert_eq!(l.next_due(), Some(t(20)));
        l.record(ProbeKind::Liveness, &ProbeOutcome::Success, t(33), &tm);
        assert_eq!(l.next_due(), Some(t(40)));
        l.mark_gated();
        l.ungate(t(65), &tm);
        assert_eq!(l.next_due(), Some(t(70)));
    }
}
