//! Leader election on a Lease, as kube-scheduler and kube-controller-manager do: several servers
//! share one cluster, and the scheduler and controllers run on one of them at a time.
//!
//! The Lease (`kube-system/<name>`) names its holder and is renewed every `retry_period`. A
//! candidate takes it over when the holder has not renewed it for `lease_duration` — measured
//! on the candidate's own clock from when it last *saw the record change*, never by comparing
//! the holder's timestamps with its clock (clocks of two hosts differ). Every write is an
//! update with the resourceVersion read, so of two candidates only one wins. A leader that
//! cannot renew within `renew_deadline` steps down before anyone may take over (renew deadline
//! < lease duration), so two leaders never act at once for longer than the clocks' drift.
//!
//! [`decide`] is the whole rule (pure, time passed in); [`run`] does the I/O and publishes
//! whether this process leads on a `watch` channel.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;

/// Timing, with Kubernetes' defaults (15 s, 10 s, 2 s).
#[derive(Debug, Clone)]
pub struct Config {
    /// The Lease's name in kube-system.
    pub name: String,
    /// This candidate's identity (host name and a unique suffix).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Config {
    pub fn new(name: &str, identity: &str) -> Config {
        Config {
            name: name.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What to do with the Lease as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// There is no Lease: create it, holding it.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Its holder let it expire (or released it): take it over.
    TakeOver,
    /// Someone else holds it; look again later.
    Follow { holder: String },
}

/// The decision. `observed_at` is when this candidate last saw the Lease's record change (its
/// holder, renew time or resourceVersion); `now` is this candidate's clock.
pub fn decide(
    spec: Option<&LeaseSpec>,
    me: &str,
    observed_at: Timestamp,
    now: Timestamp,
    lease_duration: Duration,
) -> Step {
    let Some(spec) = spec else {
        return Step::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == me {
        return Step::Renew;
    }
    if holder.is_empty() {
        return Step::TakeOver;
    }
    let duration = spec
        .lease_duration_seconds
        .map(|s| Duration::from_secs(s.max(1) as u64))
        .unwrap_or(lease_duration);
    let expires = observed_at + jiff::SignedDuration::try_from(duration).unwrap_or_default();
    if now >= expires {
        Step::TakeOver
    } else {
        Step::Follow {
            holder: holder.to_string(),
        }
    }
}

/// The Lease spec a holder writes: `transitions` counts changes of holder.
fn held(cfg: &Config, now: Timestamp, acquired: Timestamp, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.lease_duration.as_secs() as i32),
        acquire_time: Some(MicroTime(acquired)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

/// Campaigns and renews forever. The channel says whether this process leads now; it turns
/// false as soon as a renewal is overdue (before the lease could expire for others).
pub fn run(
    client: kube::Client,
    cfg: Config,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let leases: Api<Lease> = Api::namespaced(client, "kube-system");
        // The last record seen and when it was first seen (our clock).
        let mut seen: Option<(String, Timestamp)> = None;
        let mut last_renewed: Option<Timestamp> = None;
        loop {
            let now = Timestamp::now();
            let round = async {
                let current = leases.get_opt(&cfg.name).await?;
                let rv = current
                    .as_ref()
                    .and_then(|l| l.metadata.resource_version.clone())
                    .unwrap_or_default();
                let observed_at = match &seen {
                    Some((r, at)) if *r == rv => *at,
                    _ => {
                        seen = Some((rv.clone(), now));
                        now
                    }
                };
                let spec = current.as_ref().and_then(|l| l.spec.as_ref());
                let step = decide(spec, &cfg.identity, observed_at, now, cfg.lease_duration);
                match step {
                    Step::Follow { holder } => {
                        tracing::debug!(lease = %cfg.name, %holder, "following the leader");
                        Ok(false)
                    }
                    Step::Create => {
                        let lease = Lease {
                            metadata: ObjectMeta {
                                name: Some(cfg.name.clone()),
                                namespace: Some("kube-system".into()),
                                ..ObjectMeta::default()
                            },
                            spec: Some(held(&cfg, now, now, 0)),
                        };
                        leases.create(&PostParams::default(), &lease).await?;
                        Ok::<bool, kube::Error>(true)
                    }
                    Step::Renew | Step::TakeOver => {
                        let mut lease = current.expect("a lease to renew");
                        let old = lease.spec.clone().unwrap_or_default();
                        let (acquired, transitions) = if step == Step::Renew {
                            (
                                old.acquire_time.map(|t| t.0).unwrap_or(now),
                                old.lease_transitions.unwrap_or(0),
                            )
                        } else {
                            (now, old.lease_transitions.unwrap_or(0) + 1)
                        };
                        lease.spec = Some(held(&cfg, now, acquired, transitions));
                        leases
                            .replace(&cfg.name, &PostParams::default(), &lease)
                            .await?;
                        Ok(true)
                    }
                }
            };
            // A round that hangs (a server or store not answering) must not keep a leader
            // leading past its renew deadline: it is cut off, and counts as a failed renewal.
            let result: Result<bool, String> =
                match tokio::time::timeout(cfg.renew_deadline, round).await {
                    Ok(r) => r.map_err(|e: kube::Error| e.to_string()),
                    Err(_) => Err("the round timed out".into()),
                };
            let leading = match result {
                Ok(true) => {
                    if !*tx.borrow() {
                        tracing::info!(lease = %cfg.name, identity = %cfg.identity, "became the leader");
                    }
                    last_renewed = Some(now);
                    true
                }
                Ok(false) => false,
                Err(e) => {
                    tracing::debug!(lease = %cfg.name, error = %e, "leader election round failed");
                    // Still the leader only while the last renewal is within the deadline.
                    last_renewed
                        .is_some_and(|t| now.duration_since(t).unsigned_abs() < cfg.renew_deadline)
                        && *tx.borrow()
                }
            };
            if *tx.borrow() && !leading {
                tracing::warn!(lease = %cfg.name, "lost the leadership");
            }
            tx.send_if_modified(|l| std::mem::replace(l, leading) != leading);
            tokio::time::sleep(cfg.retry_period).await;
        }
    });
    (rx, task)
}

/// Gives the Lease up if this candidate holds it (an empty holder: the next candidate takes it
/// over at once instead of waiting for it to expire).
pub async fn release(client: &kube::Client, cfg: &Config) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let Ok(Some(mut lease)) = leases.get_opt(&cfg.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    match leases
        .replace(&cfg.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => tracing::info!(lease = %cfg.name, "released the leadership"),
        Err(e) => tracing::debug!(lease = %cfg.name, error = %e, "could not release the lease"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_750_000_000 + s).unwrap()
    }

    fn spec(holder: &str, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(at(0))),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn no_lease_is_created_and_ours_is_renewed() {
        let d = Duration::from_secs(15);
        assert_eq!(decide(None, "a", at(0), at(0), d), Step::Create);
        assert_eq!(
            decide(Some(&spec("a", 15)), "a", at(0), at(100), d),
            Step::Renew
        );
    }

    #[test]
    fn another_holder_is_followed_until_its_lease_expires_on_our_clock() {
        let d = Duration::from_secs(15);
        let s = spec("b", 15);
        // Seen changing at t=10: followed until t=25, taken over from then on.
        assert_eq!(
            decide(Some(&s), "a", at(10), at(24), d),
            Step::Follow { holder: "b".into() }
        );
        assert_eq!(decide(Some(&s), "a", at(10), at(25), d), Step::TakeOver);
        // The holder's own renewTime (t=0) does not matter: only when we saw it change.
        assert_eq!(
            decide(Some(&s), "a", at(20), at(30), d),
            Step::Follow { holder: "b".into() }
        );
        // The lease's own duration wins over ours.
        assert_eq!(
            decide(Some(&spec("b", 5)), "a", at(10), at(15), d),
            Step::TakeOver
        );
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let mut s = spec("b", 15);
        s.holder_identity = Some(String::new());
        assert_eq!(
            decide(Some(&s), "a", at(0), at(0), Duration::from_secs(15)),
            Step::TakeOver
        );
    }
}
