//! The node's image store: pulls from OCI/Docker registries, imports image archives, unpacks
//! layers, prepares container root filesystems (overlayfs, or a copy) and collects garbage.
//!
//! Layout under the store's root:
//! - `blobs/sha256/<hex>`: content-addressed blobs (manifests, configs, compressed layers), each
//!   written to `tmp/` first, fsynced and renamed into place;
//! - `layers/<diff-id hex>/diff`: one unpacked layer in overlayfs form, with `meta.json`
//!   (whiteouts, opaque directories, size) beside it;
//! - `index.json`: the images (names, digests, layers, config, last use) and the root
//!   filesystems handed out, rewritten atomically.
//!
//! Everything but [`ImageStore::pull`] is synchronous disk work: async callers run it on the
//! blocking pool.

mod digest;
mod import;
mod manifest;
mod pull;
mod rootfs;
mod store;
mod unpack;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use rootfs::unescape_mountinfo;
pub use store::ImageStore;

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Username and password (from an image pull secret).
    pub auth: Option<(String, String)>,
    /// `host[:port]` of registries spoken to over plain HTTP. Loopback registries (127.x,
    /// `localhost`, `[::1]`) always are.
    pub insecure_registries: Vec<String>,
}

/// An image in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    /// Normalised references naming it: tags (`127.0.0.1:5000/busybox:1`) and repo digests
    /// (`127.0.0.1:5000/busybox@sha256:…`), as `Node.status.images` lists them.
    pub names: Vec<String>,
    /// `sha256:<config digest hex>`.
    pub id: String,
    /// `registry/repository@sha256:<manifest digest>`: the imageID the kubelet reports. `None`
    /// for an import that had no manifest digest.
    pub repo_digest: Option<String>,
    /// Compressed layers plus config, in bytes.
    pub size_bytes: u64,
    pub config: ImageConfig,
}

/// What a runtime needs from the image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `K=V`.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// Why a pull failed. `Display` is the whole message the kubelet shows after
/// `Failed to pull image "IMG": `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullError {
    /// The registry has no such tag, digest or repository.
    NotFound(String),
    /// The registry refused the credentials (or their absence).
    Unauthorized(String),
    /// The registry could not be reached or failed (connection refused, 5xx, timeouts).
    Unavailable(String),
    /// The reference or what the registry returned is not a usable image.
    Invalid(String),
    Other(String),
}

impl PullError {
    pub fn message(&self) -> &str {
        match self {
            PullError::NotFound(m)
            | PullError::Unauthorized(m)
            | PullError::Unavailable(m)
            | PullError::Invalid(m)
            | PullError::Other(m) => m,
        }
    }
}

impl fmt::Display for PullError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for PullError {}

/// The rootfs directory `prepare_rootfs` uses under a container directory.
pub fn rootfs_path(container_dir: &Path) -> PathBuf {
    container_dir.join("rootfs")
}
