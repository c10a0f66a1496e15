//! Test support for skiff's end-to-end tests.
//!
//! * [`health`]: a tiny gRPC health server (`grpc.health.v1.Health/Check` over h2c), run as
//!   the `grpc-health` binary: `grpc-health --port N [--fail-after SECS]`.
//! * [`etcd`]: a real etcd on free loopback ports, for the etcd store's and API's tests.
//! * [`skip_because`]: how a test without the parts it needs skips — or fails under CI.
//! * [`image`]: an OCI image layout holding a binary and the shared libraries it needs
//!   (`grpc-health oci-layout DIR [NAME]` packages itself), for `skiff image import`.
//!
//! Tests in other packages cannot ask Cargo for this package's binary
//! (`CARGO_BIN_EXE_grpc-health` exists only in this package's own tests), so they find it next
//! to their own binaries: `<target>/<profile>/grpc-health`, built by `cargo build`/`nextest
//! --workspace`, or built on demand by the test with `cargo build -p skiff-testsupport`.

pub mod etcd;
pub mod health;
pub mod image;

/// A test that needs parts this machine lacks (root, runc, etcd…): under CI (`CI=true`, as
/// `.ci/run` runs) that is a failure, so CI never passes a test that checked nothing; elsewhere
/// the test says why and passes without checking.
pub fn skip_because(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{why}: under CI every test must run (scripts/test installs what tests need)");
    }
    eprintln!("skipping: {why} (scripts/test installs what this test needs)");
}
