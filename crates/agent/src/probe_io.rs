//! Running probes and HTTP lifecycle hooks: the I/O behind a `RunProbe` action and an `httpGet`
//! hook (spec §6.3, §7.2). Each helper returns what the kubelet would report, with Go's error
//! texts (`Get "http://10.0.0.5:8080/healthz": dial tcp 10.0.0.5:8080: connect: connection
//! refused`), so events read as they do on a real node.
//!
//! * [`http_get`]: status 200–399 succeeds; a redirect to the same host is followed (at most
//!   10), one to another host ends the probe with a warning (counted as a success); other codes
//!   fail with `HTTP probe failed with statuscode: N`. HTTPS does not verify certificates. The
//!   response body is read up to 10 KiB.
//! * [`tcp_socket`]: the connection opens within the timeout.
//! * [`exec_probe`]: the command exits 0 within the timeout, run through the [`Runtime`].
//! * [`http_hook`]: only transport errors fail a hook; the status code is ignored.
//! * [`grpc_check`]: `grpc.health.v1.Health/Check` answers SERVING (see [`grpc`]).
//!
//! HTTP is plain HTTP/1.1 over one connection per request (`Connection: close`).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::probe::ProbeOutcome;
use crate::runtime::{PodRef, Runtime};

pub mod grpc;
pub use grpc::grpc_check;

/// The `User-Agent` of probes.
pub const PROBE_USER_AGENT: &str = "kube-probe/1.32";
/// The `User-Agent` of lifecycle hooks.
pub const HOOK_USER_AGENT: &str = "kube-lifecycle/1.32";
/// The most of a response body that is read.
pub const MAX_BODY: usize = 10 * 1024;
const MAX_REDIRECTS: usize = 10;
const MAX_HEADER_BYTES: usize = 1024 * 1024;

/// An HTTP GET probe of `scheme://host:port/path`.
pub async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    scheme_https: bool,
    headers: &[(String, String)],
    timeout: Duration,
    user_agent: &str,
) -> ProbeOutcome {
    let first = Target::new(scheme_https, host, port, path);
    let mut stage = Stage::Headers;
    let mut url = first.url();
    let run = async {
        let mut target = first.clone();
        let mut redirects = 0;
        loop {
            stage = Stage::Headers;
            url = target.url();
            let resp = match fetch(&target, headers, user_agent, true, &mut stage).await {
                Ok(r) => r,
                Err(e) => return ProbeOutcome::Failure(e.text(&target.url())),
            };
            let body = String::from_utf8_lossy(&resp.body).into_owned();
            if (300..400).contains(&resp.status)
                && let Some(next) = resp.location.as_deref().and_then(|l| target.resolve(l))
                && next.host.eq_ignore_ascii_case(&first.host)
            {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return ProbeOutcome::Failure(format!(
                        "Get \"{}\": stopped after {MAX_REDIRECTS} redirects",
                        next.url()
                    ));
                }
                target = next;
                continue;
            }
            return match resp.status {
                200..=299 => ProbeOutcome::Success,
                300..=399 => ProbeOutcome::Warning(format!(
                    "Probe terminated redirects, Response body: {body}"
                )),
                code => ProbeOutcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
            };
        }
    };
    let result = tokio::time::timeout(timeout, run).await;
    match result {
        Ok(outcome) => outcome,
        Err(_) => ProbeOutcome::Failure(match stage {
            Stage::Headers => format!(
                "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ),
            Stage::Body => {
                "context deadline exceeded (Client.Timeout or context cancellation while reading body)"
                    .to_string()
            }
        }),
    }
}

/// An HTTP GET lifecycle hook: `Err` carries the transport error (`Get "…": dial tcp …`); the
/// response's status is ignored. Over HTTPS, a server that answers in plain HTTP is asked again
/// over HTTP, as the kubelet does (which also emits a `LifecycleHTTPFallback` event; this
/// function cannot tell the caller). `timeout: None` waits as long as it takes.
pub async fn http_hook(
    host: &str,
    port: u16,
    path: &str,
    scheme_https: bool,
    headers: &[(String, String)],
    user_agent: &str,
    timeout: Option<Duration>,
) -> Result<(), String> {
    let run = async {
        let mut target = Target::new(scheme_https, host, port, path);
        let mut stage = Stage::Headers;
        match fetch(&target, headers, user_agent, false, &mut stage).await {
            Ok(_) => Ok(()),
            Err(FetchError::HttpOnHttps) => {
                target.https = false;
                fetch(&target, headers, user_agent, false, &mut stage)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.text(&target.url()))
            }
            Err(e) => Err(e.text(&target.url())),
        }
    };
    match timeout {
        None => run.await,
        Some(t) => tokio::time::timeout(t, run).await.unwrap_or_else(|_| {
            let url = Target::new(scheme_https, host, port, path).url();
            Err(format!(
                "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ))
        }),
    }
}

/// A TCP socket probe: success when a connection opens within `timeout`.
pub async fn tcp_socket(host: &str, port: u16, timeout: Duration) -> ProbeOutcome {
    match tokio::time::timeout(timeout, dial(host, port)).await {
        Ok(Ok(_)) => ProbeOutcome::Success,
        Ok(Err(e)) => ProbeOutcome::Failure(e),
        Err(_) => ProbeOutcome::Failure(format!(
            "dial tcp {}: i/o timeout",
            join_host_port(host, port)
        )),
    }
}

/// An exec probe: runs `argv` in the container through the runtime. Exit 0 succeeds; another
/// code fails with the command's output; a timeout fails with `command "…" timed out`; a
/// runtime error (the container is gone) is a probe error.
pub async fn exec_probe(
    runtime: &dyn Runtime,
    pod: &PodRef,
    id: &str,
    argv: &[String],
    timeout: Duration,
) -> ProbeOutcome {
    match runtime.exec(pod, id, argv, Some(timeout)).await {
        Ok(r) if r.timed_out => {
            ProbeOutcome::Failure(format!("command \"{}\" timed out", argv.join(" ")))
        }
        Ok(r) if r.exit_code == 0 => ProbeOutcome::Success,
        Ok(r) => ProbeOutcome::Failure(r.output),
        Err(e) => ProbeOutcome::Error(e),
    }
}

/// An OS error as Go prints it: `connection refused`, not `Connection refused (os error 111)`.
pub(crate) fn go_error_text(e: &io::Error) -> String {
    let s = match e.raw_os_error() {
        Some(code) => {
            let full = io::Error::from_raw_os_error(code).to_string();
            match full.rfind(" (os error") {
                Some(i) => full[..i].to_string(),
                None => full,
            }
        }
        None => e.to_string(),
    };
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().collect::<String>() + chars.as_str(),
        None => s,
    }
}

/// `host:port`, with brackets around an IPv6 address (Go's `net.JoinHostPort`).
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Opens a TCP connection; the error is Go's dial error text.
async fn dial(host: &str, port: u16) -> Result<TcpStream, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => match tokio::net::lookup_host((bare, port)).await {
            Ok(it) => it.collect(),
            Err(_) => return Err(format!("dial tcp: lookup {bare}: no such host")),
        },
    };
    let mut last = format!("dial tcp: lookup {bare}: no such host");
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("dial tcp {a}: connect: {}", go_error_text(&e)),
        }
    }
    Err(last)
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    https: bool,
    host: String,
    port: u16,
    /// Path and query as they appear in the URL (may be empty).
    path: String,
}

impl Target {
    fn new(https: bool, host: &str, port: u16, path: &str) -> Self {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let mut escaped = String::with_capacity(path.len() + 1);
        if !path.is_empty() && !path.starts_with('/') {
            escaped.push('/');
        }
        for b in path.bytes() {
            if b.is_ascii_graphic() {
                escaped.push(b as char);
            } else {
                escaped.push_str(&format!("%{b:02X}"));
            }
        }
        let path = escaped;
        Target {
            https,
            host,
            port,
            path,
        }
    }

    fn url(&self) -> String {
        format!(
            "{}://{}{}",
            if self.https { "https" } else { "http" },
            join_host_port(&self.host, self.port),
            self.path
        )
    }

    /// The request target: the path (at least `/`), without any fragment.
    fn request_target(&self) -> String {
        let p = self.path.split('#').next().unwrap_or("");
        if p.is_empty() {
            "/".to_string()
        } else {
            p.to_string()
        }
    }

    /// Resolves a `Location` header against this target.
    fn resolve(&self, location: &str) -> Option<Target> {
        let location = location.trim();
        let (https, rest) = if let Some(r) = strip_prefix_ci(location, "http://") {
            (false, Some(r))
        } else if let Some(r) = strip_prefix_ci(location, "https://") {
            (true, Some(r))
        } else if let Some(r) = location.strip_prefix("//") {
            (self.https, Some(r))
        } else {
            (self.https, None)
        };
        match rest {
            Some(rest) => {
                let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                let (authority, path) = rest.split_at(split);
                let default_port = if https { 443 } else { 80 };
                let (host, port) = split_authority(authority, default_port)?;
                Some(Target::new(https, &host, port, path))
            }
            None => {
                let path = if location.starts_with('/') {
                    location.to_string()
                } else {
                    let base = self.path.split(['?', '#']).next().unwrap_or("");
                    let dir = match base.rfind('/') {
                        Some(i) => &base[..=i],
                        None => "/",
                    };
                    format!("{dir}{location}")
                };
                Some(Target {
                    path,
                    ..self.clone()
                })
            }
        }
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `host[:port]` or `[v6][:port]`.
fn split_authority(authority: &str, default_port: u16) -> Option<(String, u16)> {
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &rest[..end];
        let port = match rest[end + 1..].strip_prefix(':') {
            Some(p) if !p.is_empty() => p.parse().ok()?,
            _ => default_port,
        };
        return Some((host.to_string(), port));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() => (h, p.parse().ok()?),
        Some((h, _)) => (h, default_port),
        None => (authority, default_port),
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// How far a request got (for the timeout text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Headers,
    Body,
}

#[derive(Debug)]
enum FetchError {
    /// Before a response: printed as `Get "<url>": <text>`.
    Transport(String),
    /// Reading the body failed: printed as is.
    Body(String),
    /// An HTTPS request was answered in plain HTTP.
    HttpOnHttps,
}

impl FetchError {
    fn text(&self, url: &str) -> String {
        match self {
            FetchError::Transport(t) => format!("Get \"{url}\": {t}"),
            FetchError::Body(t) => t.clone(),
            FetchError::HttpOnHttps => {
                format!("Get \"{url}\": http: server gave HTTP response to HTTPS client")
            }
        }
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
}

/// One GET request on a new connection.
async fn fetch(
    t: &Target,
    headers: &[(String, String)],
    user_agent: &str,
    read_body: bool,
    stage: &mut Stage,
) -> Result<Response, FetchError> {
    let tcp = dial(&t.host, t.port).await.map_err(FetchError::Transport)?;
    let addrs = match (tcp.local_addr(), tcp.peer_addr()) {
        (Ok(l), Ok(p)) => format!("{l}->{p}"),
        _ => join_host_port(&t.host, t.port),
    };
    let request = build_request(t, headers, user_agent);
    if !t.https {
        return exchange(tcp, &request, &addrs, read_body, stage).await;
    }
    let Some(config) = tls_config() else {
        return Err(FetchError::Transport(
            "https probes are not supported by this agent: no TLS configuration".into(),
        ));
    };
    let name = match rustls::pki_types::ServerName::try_from(t.host.clone()) {
        Ok(n) => n,
        Err(_) => match tcp.peer_addr() {
            Ok(p) => rustls::pki_types::ServerName::IpAddress(p.ip().into()),
            Err(e) => return Err(FetchError::Transport(go_error_text(&e))),
        },
    };
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
            match inner {
                Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) => {
                    FetchError::HttpOnHttps
                }
                Some(r) => FetchError::Transport(format!("tls: {r}")),
                None => {
                    FetchError::Transport(format!("read tcp {addrs}: read: {}", go_error_text(&e)))
                }
            }
        })?;
    exchange(tls, &request, &addrs, read_body, stage).await
}

fn build_request(t: &Target, headers: &[(String, String)], user_agent: &str) -> Vec<u8> {
    let clean = |s: &str| -> String { s.chars().filter(|c| *c != '\r' && *c != '\n').collect() };
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut req = format!("GET {} HTTP/1.1\r\n", t.request_target());
    if !has("Host") {
        req.push_str(&format!("Host: {}\r\n", join_host_port(&t.host, t.port)));
    }
    if !has("User-Agent") {
        req.push_str(&format!("User-Agent: {}\r\n", clean(user_agent)));
    }
    if !has("Accept") {
        req.push_str("Accept: */*\r\n");
    }
    for (n, v) in headers {
        let n = clean(n);
        if n.is_empty() || n.eq_ignore_ascii_case("Connection") {
            continue;
        }
        req.push_str(&format!("{n}: {}\r\n", clean(v)));
    }
    req.push_str("Connection: close\r\n\r\n");
    req.into_bytes()
}

/// Sends the request and reads the response.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    request: &[u8],
    addrs: &str,
    read_body: bool,
    stage: &mut Stage,
) -> Result<Response, FetchError> {
    let io_err = |op: &str, e: io::Error| {
        FetchError::Transport(format!("{op} tcp {addrs}: {op}: {}", go_error_text(&e)))
    };
    s.write_all(request).await.map_err(|e| io_err("write", e))?;
    s.flush().await.map_err(|e| io_err("write", e))?;
    let mut r = BufReader { s, buf: Vec::new() };
    let (status, head) = loop {
        let head = r.read_head().await.map_err(|e| match e {
            HeadError::Eof => FetchError::Transport("EOF".into()),
            HeadError::UnexpectedEof => FetchError::Transport("unexpected EOF".into()),
            HeadError::TooLarge => FetchError::Transport(format!(
                "net/http: server response headers exceeded {MAX_HEADER_BYTES} bytes; aborted"
            )),
            HeadError::Io(e) => io_err("read", e),
        })?;
        let status = parse_status(&head).ok_or_else(|| {
            let first = head.lines().next().unwrap_or("");
            FetchError::Transport(format!(
                "net/http: HTTP/1.x transport connection broken: malformed HTTP response {first:?}"
            ))
        })?;
        // Interim responses (100 Continue, 103 Early Hints) precede the real one.
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        break (status, head);
    };
    *stage = Stage::Body;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let location = header("Location");
    let mut body = Vec::new();
    if read_body && status != 204 && status != 304 {
        let chunked =
            header("Transfer-Encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = header("Content-Length").and_then(|v| v.parse::<usize>().ok());
        let res = if chunked {
            r.read_chunked(&mut body).await
        } else {
            r.read_to(&mut body, length).await
        };
        res.map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => FetchError::Body("unexpected EOF".into()),
            _ => FetchError::Body(format!("read tcp {addrs}: read: {}", go_error_text(&e))),
        })?;
    }
    Ok(Response {
        status,
        location,
        body,
    })
}

fn parse_status(head: &str) -> Option<u16> {
    let line = head.lines().next()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

enum HeadError {
    Eof,
    UnexpectedEof,
    TooLarge,
    Io(io::Error),
}

struct BufReader<S> {
    s: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + Unpin> BufReader<S> {
    async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        loop {
            match self.s.read(&mut chunk).await {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A TLS peer that closes without close_notify has still ended the stream.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads a header block (status line and headers) and consumes it.
    async fn read_head(&mut self) -> Result<String, HeadError> {
        loop {
            if let Some((end, skip)) = find_head_end(&self.buf) {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + skip);
                return Ok(head);
            }
            if self.buf.len() > MAX_HEADER_BYTES {
                return Err(HeadError::TooLarge);
            }
            match self.fill().await {
                Ok(0) if self.buf.is_empty() => return Err(HeadError::Eof),
                Ok(0) => return Err(HeadError::UnexpectedEof),
                Ok(_) => {}
                Err(e) => return Err(HeadError::Io(e)),
            }
        }
    }

    /// Reads a body of `length` bytes (or up to the end of the stream), keeping at most
    /// [`MAX_BODY`] bytes.
    async fn read_to(&mut self, body: &mut Vec<u8>, length: Option<usize>) -> io::Result<()> {
        let want = length.map_or(MAX_BODY, |l| l.min(MAX_BODY));
        while self.buf.len() < want {
            if self.fill().await? == 0 {
                if length.is_some() {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                break;
            }
        }
        let n = want.min(self.buf.len());
        body.extend_from_slice(&self.buf[..n]);
        self.buf.drain(..n);
        Ok(())
    }

    /// Reads a chunked body, keeping at most [`MAX_BODY`] bytes.
    async fn read_chunked(&mut self, body: &mut Vec<u8>) -> io::Result<()> {
        loop {
            let line = self.read_line().await?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, "malformed chunked encoding")
            })?;
            if size == 0 {
                return Ok(());
            }
            let keep = size.min(MAX_BODY - body.len());
            let mut left = size;
            while left > 0 {
                if self.buf.is_empty() && self.fill().await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let n = left.min(self.buf.len());
                let room = keep.saturating_sub(size - left);
                body.extend_from_slice(&self.buf[..n.min(room)]);
                self.buf.drain(..n);
                left -= n;
            }
            self.read_line().await?;
            if body.len() >= MAX_BODY {
                return Ok(());
            }
        }
    }

    async fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&self.buf[..i])
                    .trim_end()
                    .to_string();
                self.buf.drain(..=i);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEADER_BYTES {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
            if self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// The end of a header block: its length and the length of the blank line after it.
fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// The probes' TLS client (built once): it accepts any certificate, as the kubelet's probes do.
fn tls_config() -> Option<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<Option<Arc<rustls::ClientConfig>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| insecure_client_config().map(Arc::new))
        .clone()
}

/// A TLS client configuration (ring, safe default protocol versions, no client certificate)
/// that accepts any server certificate, as the kubelet's HTTPS probes do; the handshake
/// signatures are still checked. `None` when no protocol version can be had. Also for tests
/// that talk to the agent's self-signed server.
pub fn insecure_client_config() -> Option<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    Some(config)
}

#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_targets() {
        let t = Target::new(false, "127.0.0.1", 8080, "healthz");
        assert_eq!(t.url(), "http://127.0.0.1:8080/healthz");
        let t = Target::new(true, "::1", 443, "");
        assert_eq!(t.url(), "https://[::1]:443");
        assert_eq!(t.request_target(), "/");
        let t = Target::new(false, "h", 80, "/a b/\u{e9}");
        assert_eq!(t.url(), "http://h:80/a%20b/%C3%A9");
        let t = Target::new(false, "h", 80, "/a/b?x=1");
        assert_eq!(t.request_target(), "/a/b?x=1");
        assert_eq!(t.resolve("c").unwrap().path, "/a/c");
        assert_eq!(t.resolve("/z").unwrap().path, "/z");
        let r = t.resolve("https://other:9443/p").unwrap();
        assert_eq!(
            (r.https, r.host.as_str(), r.port, r.path.as_str()),
            (true, "other", 9443, "/p")
        );
        let r = t.resolve("//[::1]/q").unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.path.as_str()),
            ("::1", 80, "/q")
        );
        assert_eq!(t.resolve("http://:80/"), None);
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status("HTTP/1.1 503 Service Unavailable\r\nA: b"),
            Some(503)
        );
        assert_eq!(parse_status("HTTP/1.0 200"), Some(200));
        assert_eq!(parse_status("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status(""), None);
    }

    #[test]
    fn requests_carry_default_and_user_headers() {
        let t = Target::new(false, "10.0.0.1", 80, "/x");
        let r = String::from_utf8(build_request(&t, &[], PROBE_USER_AGENT)).unwrap();
        assert!(r.starts_with("GET /x HTTP/1.1\r\nHost: 10.0.0.1:80\r\n"));
        assert!(r.contains("User-Agent: kube-probe/1.32\r\n"));
        assert!(r.contains("Accept: */*\r\n"));
        let h = vec![
            ("Host".to_string(), "example.com".to_string()),
            ("Accept".to_string(), "text/plain\r\nEvil: 1".to_string()),
        ];
        let r = String::from_utf8(build_request(&t, &h, PROBE_USER_AGENT)).unwrap();
        assert!(r.contains("Host: example.com\r\n"));
        assert!(!r.contains("Host: 10.0.0.1"));
        assert!(r.contains("Accept: text/plainEvil: 1\r\n"));
        assert!(!r.contains("*/*"));
    }

    #[test]
    fn go_texts() {
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(go_error_text(&e), "connection refused");
        assert_eq!(join_host_port("::1", 80), "[::1]:80");
    }
}
