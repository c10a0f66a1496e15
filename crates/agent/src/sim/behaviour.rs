//! What a simulated container does, read from the pod's annotations.
//!
//! A simulated node runs no processes: each container's behaviour is written on the pod, so one
//! manifest describes a whole workload. Two annotations, both optional:
//!
//! * `sim.skiff.dev/behaviour`: applies to every container of the pod;
//! * `sim.skiff.dev/behaviour.<container>`: applies to one container, over the first.
//!
//! The value is a list of `key=value` settings (or bare flags) separated by spaces or commas,
//! e.g. `run=30s exit=1` (runs 30 s, then exits with code 1). Durations are Go-style (`500ms`,
//! `10s`, `2m`, `1h30m`) or plain seconds. The keys:
//!
//! | key | meaning | default |
//! | --- | --- | --- |
//! | `run=D` | the process exits D after it started | runs until killed |
//! | `exit=N` | the exit code when it exits on its own | 0 |
//! | `oom-after=D` | killed by the OOM killer D after start (exit 137, `OOMKilled`) | never |
//! | `pull=D` | an image pull takes D | 0s |
//! | `image-missing` | every pull fails as a missing image (`ErrImagePull`) | pulls succeed |
//! | `liveness-fail-after=D` | liveness probes fail from D after start | always succeed |
//! | `ready-after=D` | readiness probes fail until D after start | always succeed |
//! | `readiness-fail-after=D` | readiness probes fail from D after start | always succeed |
//! | `readiness-flip=D` | readiness alternates: passes for D, fails for D, … | — |
//! | `startup-after=D` | startup probes fail until D after start | always succeed |
//! | `post-start=D` / `post-start-fail` | the postStart hook takes D / fails | 0s, succeeds |
//! | `pre-stop=D` | the preStop hook takes D | 0s |
//! | `term=D` | the process exits (code 143) D after SIGTERM | at once |
//! | `ignore-term` | SIGTERM is ignored: SIGKILL at the end of the grace period (137) | — |
//!
//! A value that cannot be read fails the container's start with `CreateContainerConfigError`
//! and a message naming the annotation, as a bad ConfigMap reference would.

use std::collections::BTreeMap;

use jiff::SignedDuration;
use skiff_core::duration::parse_duration;

/// The annotation for every container of a pod.
pub const POD_ANNOTATION: &str = "sim.skiff.dev/behaviour";

/// What one simulated container does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Behaviour {
    pub run: Option<SignedDuration>,
    pub exit_code: i32,
    pub oom_after: Option<SignedDuration>,
    pub pull: SignedDuration,
    pub image_missing: bool,
    pub liveness_fail_after: Option<SignedDuration>,
    pub ready_after: Option<SignedDuration>,
    pub readiness_fail_after: Option<SignedDuration>,
    pub readiness_flip: Option<SignedDuration>,
    pub startup_after: Option<SignedDuration>,
    pub post_start: SignedDuration,
    pub post_start_fail: bool,
    pub pre_stop: SignedDuration,
    pub term: SignedDuration,
    pub ignore_term: bool,
}

impl Behaviour {
    /// The behaviour of `container` from the pod's annotations: the pod-wide settings, then the
    /// container's own. Err: which annotation is wrong, and why.
    pub fn of(
        annotations: Option<&BTreeMap<String, String>>,
        container: &str,
    ) -> Result<Behaviour, String> {
        let mut b = Behaviour::default();
        let Some(a) = annotations else {
            return Ok(b);
        };
        let own = format!("{POD_ANNOTATION}.{container}");
        for key in [POD_ANNOTATION, own.as_str()] {
            if let Some(v) = a.get(key) {
                b.apply(v)
                    .map_err(|e| format!("invalid annotation {key}={v:?}: {e}"))?;
            }
        }
        Ok(b)
    }

    /// Applies one annotation value's settings.
    fn apply(&mut self, value: &str) -> Result<(), String> {
        for item in value
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            let (key, val) = match item.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (item, None),
            };
            let dur = || -> Result<SignedDuration, String> {
                let v = val.ok_or_else(|| format!("{key} needs a duration ({key}=10s)"))?;
                parse_duration(v).map_err(|e| format!("{key}: {e}"))
            };
            let flag = || -> Result<bool, String> {
                match val {
                    None | Some("true") => Ok(true),
                    Some("false") => Ok(false),
                    Some(v) => Err(format!("{key} is a flag; {v:?} is not true or false")),
                }
            };
            match key {
                "run" => self.run = Some(dur()?),
                "exit" => {
                    let v = val.ok_or("exit needs a code (exit=1)")?;
                    self.exit_code = v
                        .parse()
                        .map_err(|_| format!("exit: {v:?} is not an exit code"))?;
                }
                "oom-after" => self.oom_after = Some(dur()?),
                "pull" => self.pull = dur()?,
                "image-missing" => self.image_missing = flag()?,
                "liveness-fail-after" => self.liveness_fail_after = Some(dur()?),
                "ready-after" => self.ready_after = Some(dur()?),
                "readiness-fail-after" => self.readiness_fail_after = Some(dur()?),
                "readiness-flip" => {
                    let d = dur()?;
                    if d <= SignedDuration::ZERO {
                        return Err("readiness-flip must be longer than 0s".into());
                    }
                    self.readiness_flip = Some(d);
                }
                "startup-after" => self.startup_after = Some(dur()?),
                "post-start" => self.post_start = dur()?,
                "post-start-fail" => self.post_start_fail = flag()?,
                "pre-stop" => self.pre_stop = dur()?,
                "term" => self.term = dur()?,
                "ignore-term" => self.ignore_term = flag()?,
                other => {
                    return Err(format!(
                        "unknown setting {other:?} (known: run, exit, oom-after, pull, image-missing, \
                         liveness-fail-after, ready-after, readiness-fail-after, readiness-flip, \
                         startup-after, post-start, post-start-fail, pre-stop, term, ignore-term)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether a readiness probe passes `since` after the instance started.
    pub fn ready(&self, since: SignedDuration) -> bool {
        if self.ready_after.is_some_and(|d| since < d) {
            return false;
        }
        if self.readiness_fail_after.is_some_and(|d| since >= d) {
            return false;
        }
        match self.readiness_flip {
            Some(p) => (since.as_millis() / p.as_millis().max(1)) % 2 == 0,
            None => true,
        }
    }

    /// Whether a liveness probe passes `since` after the instance started.
    pub fn live(&self, since: SignedDuration) -> bool {
        self.liveness_fail_after.is_none_or(|d| since < d)
    }

    /// Whether a startup probe passes `since` after the instance started.
    pub fn started(&self, since: SignedDuration) -> bool {
        self.startup_after.is_none_or(|d| since >= d)
    }

    /// When (after its start) the process ends on its own, and how: (after, exit code, OOM).
    pub fn own_exit(&self) -> Option<(SignedDuration, i32, bool)> {
        match (self.run, self.oom_after) {
            (Some(r), Some(o)) if o <= r => Some((o, 137, true)),
            (Some(r), _) => Some((r, self.exit_code, false)),
            (None, Some(o)) => Some((o, 137, true)),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pod_wide_then_container_settings() {
        let a = ann(&[
            (POD_ANNOTATION, "run=10s exit=1, pull=200ms"),
            (
                "sim.skiff.dev/behaviour.side",
                "exit=0 liveness-fail-after=1m",
            ),
        ]);
        let main = Behaviour::of(Some(&a), "main").unwrap();
        assert_eq!(main.run, Some(SignedDuration::from_secs(10)));
        assert_eq!(main.exit_code, 1);
        assert_eq!(main.pull, SignedDuration::from_millis(200));
        let side = Behaviour::of(Some(&a), "side").unwrap();
        assert_eq!(side.exit_code, 0);
        assert_eq!(side.run, Some(SignedDuration::from_secs(10)));
        assert_eq!(
            side.liveness_fail_after,
            Some(SignedDuration::from_secs(60))
        );
        assert_eq!(Behaviour::of(None, "x").unwrap(), Behaviour::default());
    }

    #[test]
    fn bad_values_name_the_annotation() {
        let a = ann(&[("sim.skiff.dev/behaviour.c", "run=soon")]);
        let e = Behaviour::of(Some(&a), "c").unwrap_err();
        assert!(e.contains("sim.skiff.dev/behaviour.c"), "{e}");
        assert!(e.contains("run"), "{e}");
        let a = ann(&[(POD_ANNOTATION, "explode")]);
        assert!(
            Behaviour::of(Some(&a), "c")
                .unwrap_err()
                .contains("unknown setting \"explode\"")
        );
        let a = ann(&[(POD_ANNOTATION, "exit=x")]);
        assert!(Behaviour::of(Some(&a), "c").is_err());
    }

    #[test]
    fn probe_answers_follow_the_clock() {
        let s = SignedDuration::from_secs;
        let b = Behaviour {
            ready_after: Some(s(5)),
            liveness_fail_after: Some(s(30)),
            ..Behaviour::default()
        };
        assert!(!b.ready(s(4)));
        assert!(b.ready(s(5)));
        assert!(b.live(s(29)));
        assert!(!b.live(s(30)));
        let flip = Behaviour {
            readiness_flip: Some(s(10)),
            ..Behaviour::default()
        };
        assert!(flip.ready(s(0)));
        assert!(!flip.ready(s(10)));
        assert!(flip.ready(s(25)));
        let oom = Behaviour {
            run: Some(s(60)),
            oom_after: Some(s(5)),
            ..Behaviour::default()
        };
        assert_eq!(oom.own_exit(), Some((s(5), 137, true)));
    }
}
