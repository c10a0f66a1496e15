//! Kubernetes semantics as pure functions.
//!
//! Nothing in this crate does I/O or reads a clock: time is passed in. Every Kubernetes rule that
//! skiff implements has one home here, so the API server, scheduler and agent agree on it.

pub mod duration;
pub mod fields;
pub mod image;
pub mod patch;
pub mod pod;
pub mod printers;
pub mod quantity;
pub mod selector;
pub mod service;
pub mod validation;
