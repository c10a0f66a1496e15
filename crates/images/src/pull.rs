//! Pulling from a registry with `oci-client`: resolve the reference to a manifest (choosing this
//! node's platform from an index), fetch the config and the layers not already unpacked, verify
//! every blob's sha256, unpack, record. Error texts follow containerd's, which the kubelet
//! shows verbatim.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use skiff_core::image::Reference;
use tokio::io::AsyncWriteExt;

use crate::digest::{Hasher, sha256_hex, sha256_of};
use crate::manifest::{self, Descriptor, Parsed};
use crate::store::{ImageRecord, ImageStore, LayerRef};
use crate::{ImageInfo, PullError, PullOptions};

/// Back-off between attempts after a connection error or a 5xx.
const RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(250), Duration::from_millis(1000)];
/// Layers downloaded (and unpacked) at once.
const PARALLEL_LAYERS: usize = 3;
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

impl ImageStore {
    /// Pulls `image` (normalised, `:latest` when it names no tag or digest) into the store.
    /// Concurrent pulls of the same reference share one download. Blobs already in the store
    /// and layers already unpacked are not fetched again.
    pub async fn pull(&self, image: &str, opts: &PullOptions) -> Result<ImageInfo, PullError> {
        let reference = Reference::parse(image)
            .map_err(|e| {
                PullError::Invalid(format!(
                    "failed to pull and unpack image \"{image}\": parse image name: {e}"
                ))
            })?
            .with_default_tag();
        let key = reference.to_string();
        let fut = {
            let mut inflight = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match inflight.get(&key) {
                Some(f) => f.clone(),
                None => {
                    let store = self.clone();
                    let opts = opts.clone();
                    let k = key.clone();
                    // The pull runs as its own task, so a caller that goes away does not cancel
                    // it for the others waiting on it.
                    let task = tokio::spawn(async move {
                        let r = store.pull_uncached(reference, opts).await;
                        store
                            .inner
                            .inflight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&k);
                        r
                    });
                    let f = async move {
                        task.await.unwrap_or_else(|e| {
                            Err(PullError::Other(format!("pull task failed: {e}")))
                        })
                    }
                    .boxed()
                    .shared();
                    inflight.insert(key, f.clone());
                    f
                }
            }
        };
        fut.await
    }

    async fn pull_uncached(
        &self,
        reference: Reference,
        opts: PullOptions,
    ) -> Result<ImageInfo, PullError> {
        let started = Instant::now();
        let name = reference.to_string();
        let fail = |detail: String| format!("failed to pull and unpack image \"{name}\": {detail}");
        let client = make_client(allows_plain_http(
            &reference.registry,
            &opts.insecure_registries,
        ));
        let oref = match &reference.digest {
            Some(d) => oci_client::Reference::with_digest(
                reference.registry.clone(),
                reference.repository.clone(),
                d.clone(),
            ),
            None => oci_client::Reference::with_tag(
                reference.registry.clone(),
                reference.repository.clone(),
                reference.tag.clone().unwrap_or_else(|| "latest".into()),
            ),
        };
        let auth = match &opts.auth {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        };
        let resolve = |e| map_error(e, &name, Stage::Resolve);

        // Resolve: the reference's manifest or index.
        let (top_body, top_digest) =
            with_retries(|| client.pull_manifest_raw(&oref, &auth, manifest::ACCEPT))
                .await
                .map_err(resolve)?;
        check_body_digest(&top_body, &top_digest).map_err(|e| PullError::Other(fail(e)))?;
        let mut manifests = vec![(top_digest.clone(), top_body.to_vec())];
        let parsed =
            manifest::parse_manifest(&top_body, None).map_err(|e| PullError::Invalid(fail(e)))?;
        let m = match parsed {
            Parsed::Manifest(m) => m,
            Parsed::Index(idx) => {
                let (os, arch) = manifest::host_platform();
                let chosen =
                    manifest::select_platform(&idx.manifests, os, arch).ok_or_else(|| {
                        PullError::NotFound(fail(format!(
                            "no match for platform in manifest {top_digest}: not found"
                        )))
                    })?;
                let child = oref.clone_with_digest(chosen.digest.clone());
                let (body, digest) =
                    with_retries(|| client.pull_manifest_raw(&child, &auth, manifest::ACCEPT))
                        .await
                        .map_err(|e| map_error(e, &name, Stage::Resolve))?;
                check_body_digest(&body, &digest).map_err(|e| PullError::Other(fail(e)))?;
                manifests.push((digest, body.to_vec()));
                match manifest::parse_manifest(&body, None)
                    .map_err(|e| PullError::Invalid(fail(e)))?
                {
                    Parsed::Manifest(m) => m,
                    Parsed::Index(_) => {
                        return Err(PullError::Invalid(fail(
                            "nested image index is not supported".into(),
                        )));
                    }
                }
            }
        };
        manifest::check_image_manifest(&m).map_err(|e| PullError::Invalid(fail(e)))?;
        for d in std::iter::once(&m.config).chain(&m.layers) {
            sha256_hex(&d.digest).map_err(|e| PullError::Invalid(fail(e)))?;
        }
        let manifest_digest = manifests.last().expect("one manifest").0.clone();
        let mut blob_digests: Vec<&str> = manifests.iter().map(|(d, _)| d.as_str()).collect();
        blob_digests.push(&m.config.digest);
        blob_digests.extend(m.layers.iter().map(|l| l.digest.as_str()));
        let _blob_pins = self.pin(&blob_digests, &[]);
        for (d, body) in &manifests {
            self.write_blob(d, body)
                .map_err(|e| PullError::Other(fail(format!("failed to write manifest: {e}"))))?;
        }

        // Config.
        let progress = Arc::new(Progress::new(&name));
        if !self.has_blob(&m.config.digest) {
            self.fetch_blob(&client, &oref, &m.config, &progress, &name)
                .await?;
        }
        let config_body = self
            .read_blob(&m.config.digest)
            .map_err(|e| PullError::Other(fail(e)))?;
        let (config, diff_ids) =
            manifest::parse_config(&config_body).map_err(|e| PullError::Invalid(fail(e)))?;
        if diff_ids.len() != m.layers.len() {
            return Err(PullError::Invalid(fail(format!(
                "mismatched image rootfs and manifest layers: {} diff ids, {} layers",
                diff_ids.len(),
                m.layers.len()
            ))));
        }
        for d in &diff_ids {
            sha256_hex(d).map_err(|e| PullError::Invalid(fail(e)))?;
        }
        let diff_refs: Vec<&str> = diff_ids.iter().map(String::as_str).collect();
        let _layer_pins = self.pin(&[], &diff_refs);

        // Layers: fetch what is not unpacked yet, then unpack it, a few at a time.
        let layer_jobs: Vec<_> = m
            .layers
            .iter()
            .zip(&diff_ids)
            .map(|(desc, diff_id)| self.pull_layer(&client, &oref, desc, diff_id, &progress, &name))
            .collect();
        futures::stream::iter(layer_jobs)
            .buffer_unordered(PARALLEL_LAYERS)
            .try_collect::<Vec<()>>()
            .await?;

        let names = match (&reference.tag, &reference.digest) {
            (Some(_), None) => vec![name.clone()],
            _ => vec![],
        };
        let repo = reference.repository_name();
        let rec = ImageRecord {
            id: m.config.digest.clone(),
            names,
            repo_digests: vec![format!("{repo}@{top_digest}")],
            manifest_digest: Some(manifest_digest),
            config_size: m.config.size.max(0) as u64,
            layers: m
                .layers
                .iter()
                .zip(&diff_ids)
                .map(|(l, d)| LayerRef {
                    digest: l.digest.clone(),
                    size: l.size.max(0) as u64,
                    media_type: l.media_type.clone(),
                    diff_id: d.clone(),
                })
                .collect(),
            config,
            last_used: 0,
        };
        let store = self.clone();
        let info = tokio::task::spawn_blocking(move || store.add_record(rec, Some(&repo)))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
            .map_err(|e| PullError::Other(fail(e)))?;
        tracing::info!(
            image = %name,
            id = %info.id,
            size = info.size_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "pulled image"
        );
        Ok(info)
    }

    /// Makes one layer unpacked: downloads its blob unless present, then unpacks it on the
    /// blocking pool.
    async fn pull_layer(
        &self,
        client: &oci_client::Client,
        oref: &oci_client::Reference,
        desc: &Descriptor,
        diff_id: &str,
        progress: &Progress,
        name: &str,
    ) -> Result<(), PullError> {
        if self.layer_ready(diff_id) {
            return Ok(());
        }
        if !self.has_blob(&desc.digest) {
            self.fetch_blob(client, oref, desc, progress, name).await?;
        }
        let store = self.clone();
        let (diff, digest) = (diff_id.to_string(), desc.digest.clone());
        tokio::task::spawn_blocking(move || store.ensure_layer(&diff, &digest))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
            .map_err(|e| {
                PullError::Other(format!(
                    "failed to pull and unpack image \"{name}\": failed to extract layer {diff_id}: {e}"
                ))
            })
    }

    /// Downloads one blob into the store, checking size and sha256, with retries.
    async fn fetch_blob(
        &self,
        client: &oci_client::Client,
        oref: &oci_client::Reference,
        desc: &Descriptor,
        progress: &Progress,
        name: &str,
    ) -> Result<(), PullError> {
        let mut attempt = 0;
        loop {
            let tmp = self.tmp_path();
            let r = self
                .fetch_blob_once(client, oref, desc, progress, &tmp)
                .await;
            if r.is_err() {
                let _ = tokio::fs::remove_file(&tmp).await;
            }
            match r {
                Ok(()) => return Ok(()),
                Err(e) if attempt < RETRY_DELAYS.len() && e.retryable() => {
                    tracing::debug!(image = name, blob = %desc.digest, error = %e.describe(), "retrying blob download");
                    tokio::time::sleep(RETRY_DELAYS[attempt]).await;
                    attempt += 1;
                }
                Err(FetchError::Registry(e)) => {
                    return Err(map_error(e, name, Stage::Copy));
                }
                Err(e) => {
                    return Err(PullError::Other(format!(
                        "failed to pull and unpack image \"{name}\": failed to copy: {}",
                        e.describe()
                    )));
                }
            }
        }
    }

    async fn fetch_blob_once(
        &self,
        client: &oci_client::Client,
        oref: &oci_client::Reference,
        desc: &Descriptor,
        progress: &Progress,
        tmp: &std::path::Path,
    ) -> Result<(), FetchError> {
        let mut stream = client
            .pull_blob_stream(oref, desc.digest.as_str())
            .await
            .map_err(FetchError::Registry)?;
        let total = if desc.size > 0 {
            desc.size as u64
        } else {
            stream.content_length.unwrap_or(0)
        };
        let file = tokio::fs::File::create(tmp)
            .await
            .map_err(FetchError::Local)?;
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut hasher = Hasher::default();
        let mut done = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(FetchError::Stream)?;
            hasher.update(&chunk);
            done += chunk.len() as u64;
            out.write_all(&chunk).await.map_err(FetchError::Local)?;
            progress.update(&desc.digest, done, total);
        }
        out.flush().await.map_err(FetchError::Local)?;
        let file = out.into_inner();
        file.sync_all().await.map_err(FetchError::Local)?;
        drop(file);
        let got = hasher.finish();
        if got != desc.digest {
            return Err(FetchError::Corrupt(format!(
                "unexpected commit digest {got}, expected {}: failed precondition",
                desc.digest
            )));
        }
        if desc.size > 0 && done != desc.size as u64 {
            return Err(FetchError::Corrupt(format!(
                "unexpected commit size {done}, expected {}: failed precondition",
                desc.size
            )));
        }
        let store = self.clone();
        let (tmp, digest) = (tmp.to_path_buf(), desc.digest.clone());
        tokio::task::spawn_blocking(move || store.commit_blob(&tmp, &digest))
            .await
            .map_err(|e| FetchError::Corrupt(e.to_string()))?
            .map_err(|e| FetchError::Local(std::io::Error::other(e)))
    }
}

enum FetchError {
    Registry(OciDistributionError),
    Stream(std::io::Error),
    Local(std::io::Error),
    Corrupt(String),
}

impl FetchError {
    fn retryable(&self) -> bool {
        match self {
            FetchError::Registry(e) => retryable(e),
            FetchError::Stream(_) | FetchError::Corrupt(_) => true,
            FetchError::Local(_) => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            FetchError::Registry(e) => e.to_string(),
            FetchError::Stream(e) => format!("read body: {}", innermost(e)),
            FetchError::Local(e) => format!("write: {e}"),
            FetchError::Corrupt(e) => e.clone(),
        }
    }
}

/// Bytes done and total per blob (short digest), and when the last line was logged.
type ProgressState = (Instant, BTreeMap<String, (u64, u64)>);

/// Rate-limited download progress for one pull: at most one log line a second.
struct Progress {
    name: String,
    state: Mutex<ProgressState>,
}

impl Progress {
    fn new(name: &str) -> Self {
        Progress {
            name: name.to_string(),
            state: Mutex::new((Instant::now(), BTreeMap::new())),
        }
    }

    fn update(&self, digest: &str, done: u64, total: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let short = digest.get(7..19).unwrap_or(digest).to_string();
        s.1.insert(short, (done, total));
        if s.0.elapsed() < PROGRESS_EVERY {
            return;
        }
        s.0 = Instant::now();
        let layers: Vec<String> =
            s.1.iter()
                .filter(|(_, (d, t))| d < t || *t == 0)
                .map(|(k, (d, t))| format!("{k} {d}/{t}"))
                .collect();
        if !layers.is_empty() {
            tracing::info!(image = %self.name, "pulling: {}", layers.join(", "));
        }
    }
}

/// A client for one pull (credentials are cached per client, so clients are not shared
/// between pulls with different secrets).
fn make_client(plain_http: bool) -> oci_client::Client {
    install_crypto_provider();
    oci_client::Client::new(ClientConfig {
        protocol: if plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        // Indexes are resolved here, not by oci-client.
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(15)),
        read_timeout: Some(Duration::from_secs(60)),
        user_agent: "skiff",
        ..Default::default()
    })
}

fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Another part of the process may have installed it already; either way ring is it.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Plain HTTP for loopback registries and those listed as insecure.
pub(crate) fn allows_plain_http(registry: &str, insecure: &[String]) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        registry.split(':').next().unwrap_or(registry)
    };
    let loopback = host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback
        || insecure.iter().any(|i| {
            let i = i
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/');
            i == registry || i == host
        })
}

fn check_body_digest(body: &[u8], digest: &str) -> Result<(), String> {
    if digest.starts_with("sha256:") && sha256_of(body) != digest {
        return Err(format!(
            "manifest digest mismatch: got {}, expected {digest}",
            sha256_of(body)
        ));
    }
    Ok(())
}

fn retryable(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(re) => {
            re.is_connect() || re.is_timeout() || re.is_body() || re.is_request()
        }
        OciDistributionError::ServerError { code, .. } => *code >= 500,
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

async fn with_retries<T, F, Fut>(mut f: F) -> Result<T, OciDistributionError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, OciDistributionError>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Err(e) if attempt < RETRY_DELAYS.len() && retryable(&e) => {
                tracing::debug!(error = %e, "retrying registry request");
                tokio::time::sleep(RETRY_DELAYS[attempt]).await;
                attempt += 1;
            }
            r => return r,
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Stage {
    /// Fetching the manifest: containerd's "failed to resolve reference".
    Resolve,
    /// Fetching a blob: containerd's "failed to copy".
    Copy,
}

fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn has_io_kind(e: &(dyn std::error::Error + 'static), kind: std::io::ErrorKind) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == kind)
        {
            return true;
        }
        cur = c.source();
    }
    false
}

fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        parts.push(c.to_string());
        cur = c.source();
    }
    parts.join(": ")
}

/// `host:port` of a URL, the port made explicit as Go's dialer prints it.
fn dial_address(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let has_port = if authority.starts_with('[') {
        authority.contains("]:")
    } else {
        authority.contains(':')
    };
    let host = if has_port {
        authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .to_string()
    } else {
        authority.to_string()
    };
    let addr = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{}", if scheme == "http" { 80 } else { 443 })
    };
    (addr, host.trim_matches(['[', ']']).to_string())
}

/// Describes a transport failure the way Go's HTTP client does.
pub(crate) fn describe_transport(
    url: &str,
    e: &(dyn std::error::Error + 'static),
    timeout: bool,
) -> String {
    let (addr, host) = dial_address(url);
    let text = chain_text(e);
    let cause = if has_io_kind(e, std::io::ErrorKind::ConnectionRefused) {
        format!("dial tcp {addr}: connect: connection refused")
    } else if timeout || has_io_kind(e, std::io::ErrorKind::TimedOut) {
        format!("dial tcp {addr}: i/o timeout")
    } else if text.contains("dns error") || text.contains("failed to lookup address") {
        format!("dial tcp: lookup {host}: no such host")
    } else if text.contains("InvalidContentType") && url.starts_with("https://") {
        "http: server gave HTTP response to HTTPS client".to_string()
    } else if has_io_kind(e, std::io::ErrorKind::ConnectionReset) {
        format!("read tcp {addr}: read: connection reset by peer")
    } else {
        innermost(e)
    };
    format!("failed to do request: Get \"{url}\": {cause}")
}

fn status_text(code: u16) -> &'static str {
    match code {
        400 => "400 Bad Request",
        401 => "401 Unauthorized",
        403 => "403 Forbidden",
        404 => "404 Not Found",
        405 => "405 Method Not Allowed",
        429 => "429 Too Many Requests",
        500 => "500 Internal Server Error",
        502 => "502 Bad Gateway",
        503 => "503 Service Unavailable",
        504 => "504 Gateway Timeout",
        _ => "unexpected status",
    }
}

const ACCESS_DENIED: &str =
    "pull access denied, repository does not exist or may require authorization";

/// Maps an `oci-client` error to the kubelet-visible pull error.
pub(crate) fn map_error(e: OciDistributionError, name: &str, stage: Stage) -> PullError {
    let head = match stage {
        Stage::Resolve => {
            format!(
                "failed to pull and unpack image \"{name}\": failed to resolve reference \"{name}\""
            )
        }
        Stage::Copy => format!("failed to pull and unpack image \"{name}\": failed to copy"),
    };
    let not_found = |url: &str| match stage {
        Stage::Resolve => PullError::NotFound(format!("{head}: {name}: not found")),
        Stage::Copy => PullError::NotFound(format!(
            "{head}: httpReadSeeker: failed open: content at {url} not found: not found"
        )),
    };
    let denied =
        |detail: String| PullError::Unauthorized(format!("{head}: {ACCESS_DENIED}: {detail}"));
    match e {
        OciDistributionError::RegistryError { envelope, url } => {
            use OciErrorCode as C;
            if envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    C::ManifestUnknown | C::NameUnknown | C::NotFound | C::BlobUnknown
                )
            }) {
                return not_found(&url);
            }
            let msg = envelope
                .errors
                .iter()
                .map(|x| {
                    let code = serde_json::to_value(&x.code)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_ascii_lowercase))
                        .unwrap_or_default();
                    format!("{code}: {}", x.message)
                })
                .collect::<Vec<_>>()
                .join("; ");
            if envelope
                .errors
                .iter()
                .any(|x| matches!(x.code, C::Unauthorized | C::Denied))
            {
                return denied(format!("server message: {msg}"));
            }
            if envelope
                .errors
                .iter()
                .any(|x| matches!(x.code, C::Toomanyrequests))
            {
                return PullError::Unavailable(format!(
                    "{head}: unexpected status from GET request to {url}: 429 Too Many Requests: {msg}"
                ));
            }
            PullError::Other(format!(
                "{head}: unexpected status from GET request to {url}: {msg}"
            ))
        }
        OciDistributionError::ServerError { code, url, message } => {
            let status = status_text(code);
            let detail = message.trim();
            let suffix = if detail.is_empty() {
                String::new()
            } else {
                format!(": {}", detail.chars().take(300).collect::<String>())
            };
            match code {
                404 => not_found(&url),
                401 | 403 => denied(format!(
                    "unexpected status from GET request to {url}: {status}"
                )),
                c if c >= 500 || c == 429 => PullError::Unavailable(format!(
                    "{head}: unexpected status from GET request to {url}: {status}{suffix}"
                )),
                _ => PullError::Other(format!(
                    "{head}: unexpected status from GET request to {url}: {code}{suffix}"
                )),
            }
        }
        OciDistributionError::UnauthorizedError { url } => denied(format!(
            "unexpected status from GET request to {url}: 401 Unauthorized"
        )),
        OciDistributionError::AuthenticationFailure(reason) => {
            let reason: String = reason.trim().chars().take(300).collect();
            denied(format!("server message: {reason}"))
        }
        OciDistributionError::RequestError(re) => {
            let url = re.url().map(|u| u.to_string()).unwrap_or_default();
            let timeout = re.is_timeout();
            PullError::Unavailable(format!(
                "{head}: {}",
                describe_transport(&url, &re, timeout)
            ))
        }
        OciDistributionError::DigestError(d) => PullError::Other(format!("{head}: {d}")),
        OciDistributionError::IoError(io) => {
            PullError::Unavailable(format!("{head}: {}", innermost(&io)))
        }
        other => PullError::Other(format!("{head}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::errors::{OciEnvelope, OciError};

    const N: &str = "127.0.0.1:5000/busybox:1";

    fn envelope(code: OciErrorCode, message: &str) -> OciDistributionError {
        OciDistributionError::RegistryError {
            envelope: OciEnvelope {
                errors: vec![OciError {
                    code,
                    message: message.into(),
                    detail: serde_json::Value::Null,
                }],
            },
            url: "http://127.0.0.1:5000/v2/busybox/manifests/1".into(),
        }
    }

    #[test]
    fn not_found_texts() {
        let e = map_error(
            envelope(OciErrorCode::ManifestUnknown, "manifest unknown"),
            N,
            Stage::Resolve,
        );
        assert_eq!(
            e,
            PullError::NotFound(format!(
                "failed to pull and unpack image \"{N}\": failed to resolve reference \"{N}\": {N}: not found"
            ))
        );
        let e = map_error(envelope(OciErrorCode::NameUnknown, "x"), N, Stage::Resolve);
        assert!(matches!(e, PullError::NotFound(_)));
        let e = map_error(
            OciDistributionError::ServerError {
                code: 404,
                url: "u".into(),
                message: String::new(),
            },
            N,
            Stage::Copy,
        );
        assert!(
            e.to_string().contains("failed to copy: httpReadSeeker"),
            "{e}"
        );
    }

    #[test]
    fn auth_texts() {
        let e = map_error(
            OciDistributionError::UnauthorizedError {
                url: "http://r/v2/x/manifests/1".into(),
            },
            N,
            Stage::Resolve,
        );
        let PullError::Unauthorized(m) = e else {
            panic!()
        };
        assert!(m.starts_with(&format!("failed to pull and unpack image \"{N}\": failed to resolve reference \"{N}\": pull access denied, repository does not exist or may require authorization: ")));
        assert!(m.ends_with("401 Unauthorized"));
        let e = map_error(
            envelope(
                OciErrorCode::Denied,
                "requested access to the resource is denied",
            ),
            N,
            Stage::Resolve,
        );
        assert!(
            e.to_string()
                .ends_with("server message: denied: requested access to the resource is denied"),
            "{e}"
        );
        let e = map_error(
            OciDistributionError::AuthenticationFailure(
                "{\"details\":\"incorrect username or password\"}".into(),
            ),
            N,
            Stage::Resolve,
        );
        assert!(matches!(e, PullError::Unauthorized(_)));
    }

    #[test]
    fn server_errors() {
        let e = map_error(
            OciDistributionError::ServerError {
                code: 503,
                url: "http://r/v2/".into(),
                message: "busy".into(),
            },
            N,
            Stage::Resolve,
        );
        assert_eq!(
            e,
            PullError::Unavailable(format!(
                "failed to pull and unpack image \"{N}\": failed to resolve reference \"{N}\": unexpected status from GET request to http://r/v2/: 503 Service Unavailable: busy"
            ))
        );
    }

    #[test]
    fn transport_texts() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let s = describe_transport(
            "http://127.0.0.1:5000/v2/busybox/manifests/1",
            &refused,
            false,
        );
        assert_eq!(
            s,
            "failed to do request: Get \"http://127.0.0.1:5000/v2/busybox/manifests/1\": dial tcp 127.0.0.1:5000: connect: connection refused"
        );
        let other = std::io::Error::other("dns error: failed to lookup address information");
        let s = describe_transport("https://nope.example/v2/", &other, false);
        assert!(
            s.ends_with("dial tcp: lookup nope.example: no such host"),
            "{s}"
        );
        assert_eq!(dial_address("https://[::1]/v2/").0, "[::1]:443");
    }

    /// HTTPS goes through rustls with ring: a TLS handshake against a plain HTTP server fails
    /// cleanly (no crypto-provider panic).
    #[tokio::test]
    async fn https_handshake_failure_is_an_error() {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        });
        let client = make_client(false);
        let oref = oci_client::Reference::with_tag(addr.to_string(), "busybox".into(), "1".into());
        let err = client
            .pull_manifest_raw(&oref, &RegistryAuth::Anonymous, manifest::ACCEPT)
            .await
            .unwrap_err();
        let e = map_error(err, N, Stage::Resolve);
        assert!(matches!(e, PullError::Unavailable(_)), "{e:?}");
        assert!(
            e.to_string().contains(&format!(
                "failed to do request: Get \"https://{addr}/v2/busybox/manifests/1\""
            )),
            "{e}"
        );
    }

    #[test]
    fn store_is_shareable() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<crate::ImageStore>();
    }

    #[test]
    fn plain_http_rules() {
        assert!(allows_plain_http("127.0.0.1:5000", &[]));
        assert!(allows_plain_http("127.1.2.3", &[]));
        assert!(allows_plain_http("localhost:5000", &[]));
        assert!(allows_plain_http("[::1]:5000", &[]));
        assert!(!allows_plain_http("docker.io", &[]));
        assert!(!allows_plain_http("10.0.0.1:5000", &[]));
        assert!(allows_plain_http(
            "10.0.0.1:5000",
            &["10.0.0.1:5000".into()]
        ));
        assert!(allows_plain_http("reg.lan:5000", &["reg.lan".into()]));
        assert!(!allows_plain_http("reg.lan:5000", &["other.lan".into()]));
    }
}
