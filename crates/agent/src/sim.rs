//! The `sim` runtime: simulated nodes whose pods go through the real lifecycle engine.
//!
//! Only the containers' processes are simulated: what a container does (runs N seconds, exits
//! with code C, fails liveness after N seconds, takes N ms to pull, has a missing image…) is read
//! from the pod's annotations ([`behaviour`]). Each pod is a [`model::SimPod`]: [`crate::decide`]
//! over containers that are data, on the clock it is given. The [`fleet`] runs thousands of
//! nodes and their pods in one process: one pod watch, one loop, one timer queue, coalesced
//! status writes.
//!
//! Unlike `host` and `runc`, the sim does not sit behind [`crate::runtime::Runtime`] with a
//! worker task per pod: at 150,000 pods a task, an async call per action and a status write per
//! decision were the cost to avoid. The engine is the same; the worker is replaced by the fleet's
//! loop and [`model::SimPod`] (the runtime's part, synchronous).

pub mod behaviour;
pub mod fleet;
pub mod model;
