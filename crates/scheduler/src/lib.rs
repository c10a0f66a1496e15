//! The scheduler's decision core: a pod and a snapshot of the nodes in, a node or a FailedScheduling
//! explanation out.
//!
//! Everything here is pure (no I/O, no clock, no global randomness) so the Kubernetes rules can be
//! unit-tested to the byte and a scheduling decision costs microseconds. The loop that watches
//! the API, binds pods and emits events lives elsewhere and drives these pieces:
//!
//! * [`snapshot`] / [`cache`]: per-node aggregates kept up to date as nodes and pods change,
//!   including pods the scheduler has assumed but not yet seen bound.
//! * [`schedule`]: one decision ([`schedule::schedule_one`]), built from [`filter`] and [`score`].
//! * [`fit_error`]: the `0/N nodes are available: …` message.
//! * [`queue`]: back-off and retry bookkeeping for pods that did not fit.
//!
//! The rules follow kube-scheduler 1.31/1.32 with the default profile; see
//! `/work/shared/spec/pod-lifecycle.md` §8.3, §10, §11.

pub mod cache;
pub mod filter;
pub mod fit_error;
pub mod node_affinity;
pub mod prepared;
pub mod queue;
pub mod resources;
pub mod schedule;
pub mod score;
pub mod snapshot;
pub mod taints;

pub use cache::ClusterCache;
pub use fit_error::FitError;
pub use prepared::PreparedPod;
pub use queue::SchedulingQueue;
pub use resources::{PodRequests, Resources};
pub use schedule::{Placement, ScheduleOptions, responsible_for, schedule_one, schedule_prepared};
pub use snapshot::{NodeInfo, Snapshot};
