//! The host runtime (being written).
