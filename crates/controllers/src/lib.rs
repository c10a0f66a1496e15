//! Controllers: level-triggered loops that are clients of the API. Each compares what is asked
//! with what is seen and acts on the difference, so a restart, a lost watch or a repeated event
//! changes nothing. The decisions are pure functions (time passed in); the loops do the I/O.

pub mod endpoints;
pub mod leader_election;
pub mod namespace_defaults;
pub mod node_lifecycle;
pub mod taint_eviction;
