//! The scheduler: a pod and a snapshot of the nodes in, a node or a FailedScheduling explanation
//! out, and the loop that runs it against the API.
//!
//! The crate has two halves, kept apart on purpose:
//!
//! * **The pure core** (every module but [`runner`]): no I/O, no tokio, no clock reads, no global
//!   randomness (time and seeds are arguments), so the Kubernetes rules can be unit-tested to the
//!   byte and a scheduling decision costs microseconds.
//! * **[`runner`]**: the only I/O. An API client that watches pods and nodes, feeds one task that
//!   owns the cache and the queue, binds through `pods/binding`, patches the `PodScheduled`
//!   condition and writes events. It never touches the store: everything goes through the API.
//!
//! The pure pieces:
//!
//! * [`snapshot`] / [`cache`]: per-node aggregates kept up to date as nodes and pods change,
//!   including pods the scheduler has assumed but not yet seen bound.
//! * [`schedule`]: one decision ([`schedule::schedule_one`]), built from [`filter`] and [`score`].
//! * [`fit_error`]: the `0/N nodes are available: …` message.
//! * [`queue`]: back-off and retry bookkeeping for pods that did not fit.
//! * [`pod_status`]: the `PodScheduled=False` patch (only when it changed) and which pod updates
//!   matter.
//! * [`event_series`]: which event writes to make (new Event or `series` update).
//!
//! The rules follow kube-scheduler 1.31/1.32 with the default profile; see
//! `/work/shared/spec/pod-lifecycle.md` §8.3, §10, §11.

pub mod cache;
pub mod event_series;
pub mod filter;
pub mod fit_error;
pub mod node_affinity;
pub mod pod_status;
pub mod prepared;
pub mod queue;
pub mod resources;
pub mod runner;
pub mod schedule;
pub mod score;
pub mod snapshot;
pub mod taints;

pub use cache::{ClusterCache, NodeChange};
pub use fit_error::FitError;
pub use prepared::PreparedPod;
pub use queue::SchedulingQueue;
pub use resources::{PodRequests, Resources};
pub use schedule::{Placement, ScheduleOptions, responsible_for, schedule_one, schedule_prepared};
pub use snapshot::{NodeInfo, Snapshot};
