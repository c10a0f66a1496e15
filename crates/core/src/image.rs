//! Container image references and registry credentials, as the kubelet understands them.
//!
//! Parsing follows Docker's normalisation (the `distribution/reference` grammar the kubelet uses
//! through `ParseNormalizedNamed`): `busybox` is `docker.io/library/busybox`, the first path
//! component is a registry only when it contains `.` or `:`, is `localhost`, or has an upper-case
//! letter; repository paths must be lower case; tags are `[\w][\w.-]{0,127}`; digests are
//! `algorithm:hex` with the hex length of a known algorithm.
//!
//! [`credentials_for`] picks credentials from a `.dockerconfigjson` / `.dockercfg` secret the way
//! the kubelet's keyring does.

use std::fmt;

use base64::Engine as _;

/// Docker Hub's canonical registry name in normalised references.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The host Docker Hub credentials are usually stored under (`https://index.docker.io/v1/`).
pub const DEFAULT_REGISTRY_AUTH_HOST: &str = "index.docker.io";
/// The tag the kubelet adds to an image that names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";

const NAME_TOTAL_LENGTH_MAX: usize = 255;
const TAG_LENGTH_MAX: usize = 128;

/// Why an image reference does not parse. `Display` is the text Docker's parser gives, which the
/// kubelet puts into its `InvalidImageName` events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference format")]
    InvalidFormat,
    #[error("invalid reference format: repository name must be lowercase")]
    NameContainsUppercase,
    #[error("repository name must have at least one component")]
    NameEmpty,
    #[error("repository name must not be more than 255 characters")]
    NameTooLong,
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexRepositoryName(String),
    #[error("invalid checksum digest format")]
    DigestInvalidFormat,
    #[error("invalid checksum digest length")]
    DigestInvalidLength,
    #[error("unsupported digest algorithm")]
    DigestUnsupported,
}

/// A normalised image reference: `registry/repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `docker.io`, `quay.io`, `127.0.0.1:5000`, `localhost` …
    pub registry: String,
    /// The path inside the registry: `library/busybox`, `team/app`.
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<hex>`.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalises an image reference as Docker (and so the kubelet) does.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::NameEmpty);
        }
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ReferenceError::HexRepositoryName(s.to_string()));
        }
        // name[:tag][@digest] — a name never contains '@'.
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (s, None),
        };
        // The tag is after the last ':' that follows the last '/'; a ':' before a '/' is a port.
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(&name_tag[last_slash + i + 1..]),
            ),
            None => (name_tag, None),
        };
        let (registry, path) = split_registry(name);
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::NameContainsUppercase);
        }
        let registry = if registry == DEFAULT_REGISTRY_AUTH_HOST {
            DEFAULT_REGISTRY
        } else {
            registry
        };
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        if registry != DEFAULT_REGISTRY && !valid_registry(registry) {
            return Err(ReferenceError::InvalidFormat);
        }
        if !valid_path(&repository) {
            return Err(ReferenceError::InvalidFormat);
        }
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(ReferenceError::InvalidFormat);
        }
        if let Some(d) = digest {
            validate_digest(d)?;
        }
        if name.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong);
        }
        Ok(Reference {
            registry: registry.to_string(),
            repository,
            tag: tag.map(str::to_string),
            digest: digest.map(str::to_string),
        })
    }

    /// The reference with tag `latest` when it names neither a tag nor a digest (the kubelet's
    /// `applyDefaultImageTag`).
    pub fn with_default_tag(&self) -> Reference {
        let mut r = self.clone();
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some(DEFAULT_TAG.to_string());
        }
        r
    }

    /// `registry/repository`, without tag or digest.
    pub fn repository_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The registry hosts a credential key may name for this image: the registry itself and, for
    /// Docker Hub, also `index.docker.io` and the legacy `https://index.docker.io/v1/`.
    pub fn registry_host_for_credentials(&self) -> Vec<String> {
        if self.registry == DEFAULT_REGISTRY {
            vec![
                DEFAULT_REGISTRY.to_string(),
                DEFAULT_REGISTRY_AUTH_HOST.to_string(),
                format!("https://{DEFAULT_REGISTRY_AUTH_HOST}/v1/"),
            ]
        } else {
            vec![self.registry.clone()]
        }
    }

    /// `registry/repository@digest` when there is a digest, else `registry/repository:tag`
    /// (`latest` when untagged): the form a pull resolves.
    pub fn pull_name(&self) -> String {
        match &self.digest {
            Some(d) => format!("{}@{d}", self.repository_name()),
            None => format!(
                "{}:{}",
                self.repository_name(),
                self.tag.as_deref().unwrap_or(DEFAULT_TAG)
            ),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// Splits `name` into registry and path. The first component is a registry when it contains `.`
/// or `:`, is `localhost`, or is not all lower case; otherwise the registry is Docker Hub.
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DEFAULT_REGISTRY, name),
    }
}

/// host[:port], host being a DNS name, an IPv4 address or a bracketed IPv6 address.
fn valid_registry(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.is_empty() || !v6.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(p) => ("x", Some(p)),
                None => return false,
            },
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        })
}

/// Path components: `[a-z0-9]+` joined by `.`, `_`, `__` or one or more `-`.
fn valid_path(path: &str) -> bool {
    path.split('/').all(valid_path_component)
}

fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= TAG_LENGTH_MAX
        && word(b[0])
        && b[1..].iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

/// `algorithm:hex`: the grammar first (a failure is a format error of the whole reference), then
/// the algorithm and its length.
fn validate_digest(d: &str) -> Result<(), ReferenceError> {
    let Some((alg, hex)) = d.split_once(':') else {
        return Err(ReferenceError::InvalidFormat);
    };
    let alg_ok = !alg.is_empty()
        && alg.split(['+', '.', '_', '-']).all(|c| {
            c.chars().next().is_some_and(|x| x.is_ascii_alphabetic())
                && c.chars().all(|x| x.is_ascii_alphanumeric())
        });
    if !alg_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ReferenceError::InvalidFormat);
    }
    let want = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(ReferenceError::DigestUnsupported),
    };
    if hex.len() != want {
        return Err(ReferenceError::DigestInvalidLength);
    }
    if hex.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ReferenceError::DigestInvalidFormat);
    }
    Ok(())
}

/// Validates a bare digest (`sha256:<64 lower-case hex>`), as found in manifests.
pub fn parse_digest(d: &str) -> Result<(&str, &str), ReferenceError> {
    validate_digest(d).map_err(|e| match e {
        ReferenceError::InvalidFormat => ReferenceError::DigestInvalidFormat,
        e => e,
    })?;
    Ok(d.split_once(':').expect("validated"))
}

/// The username and password a docker config secret holds for `reference`, matched as the
/// kubelet's keyring matches: a key is `host`, `host:port`, `https://host/v1/`, or
/// `host/path` (a path prefix of the repository); Docker Hub images also use the
/// `index.docker.io` entry. Among several matches the longest (reverse-sorted) key wins.
///
/// Takes either the `.dockerconfigjson` shape `{"auths": {KEY: {...}}}` or the legacy
/// `.dockercfg` shape `{KEY: {...}}`; an entry has `auth` (base64 `user:password`) or
/// `username` and `password`.
pub fn credentials_for(
    dockerconfig: &serde_json::Value,
    reference: &Reference,
) -> Option<(String, String)> {
    let entries = match dockerconfig.get("auths").and_then(|a| a.as_object()) {
        Some(auths) => auths,
        None => dockerconfig.as_object()?,
    };
    let mut keyed: Vec<(String, (String, String))> = Vec::new();
    for (key, entry) in entries {
        let Some(creds) = entry_credentials(entry) else {
            continue;
        };
        let Some(k) = keyring_key(key) else {
            continue;
        };
        keyed.push((k, creds));
    }
    // Most specific first, as the kubelet orders its index.
    keyed.sort_by(|a, b| b.0.cmp(&a.0));
    let target = reference.repository_name();
    if let Some((_, c)) = keyed.iter().find(|(k, _)| key_matches(k, &target)) {
        return Some(c.clone());
    }
    if reference.registry == DEFAULT_REGISTRY {
        return keyed
            .iter()
            .find(|(k, _)| k == DEFAULT_REGISTRY_AUTH_HOST)
            .map(|(_, c)| c.clone());
    }
    None
}

fn entry_credentials(entry: &serde_json::Value) -> Option<(String, String)> {
    if let Some(auth) = entry.get("auth").and_then(|a| a.as_str())
        && !auth.is_empty()
    {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (u, p) = text.split_once(':')?;
        return Some((u.to_string(), p.to_string()));
    }
    let user = entry.get("username").and_then(|u| u.as_str()).unwrap_or("");
    let pass = entry.get("password").and_then(|p| p.as_str()).unwrap_or("");
    if user.is_empty() && pass.is_empty() {
        return None;
    }
    Some((user.to_string(), pass.to_string()))
}

/// A config key reduced to `host[:port][/path]`: scheme dropped, a leading `/v1/` or `/v2/`
/// path treated as the bare host, trailing `/` dropped.
fn keyring_key(key: &str) -> Option<String> {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() {
        return None;
    }
    let path = path
        .strip_prefix("/v1")
        .or_else(|| path.strip_prefix("/v2"))
        .filter(|p| p.is_empty() || p.starts_with('/'))
        .unwrap_or(path);
    let path = path.trim_end_matches('/');
    Some(format!("{}{path}", host.to_ascii_lowercase()))
}

/// The keyring's URL match: same number of host labels, each matching (a key label may be a
/// `*` glob), the same port (or none on both), and the key's path a prefix of the image's.
fn key_matches(key: &str, target: &str) -> bool {
    let split = |s: &str| -> (String, String) {
        match s.find('/') {
            Some(i) => (s[..i].to_string(), s[i..].to_string()),
            None => (s.to_string(), String::new()),
        }
    };
    let (kh, kp) = split(key);
    let (th, tp) = split(target);
    let host_port = |h: &str| -> (String, String) {
        let (host, port) = if h.starts_with('[') {
            match h.find(']') {
                Some(i) => (&h[..=i], h[i + 1..].strip_prefix(':').unwrap_or("")),
                None => (h, ""),
            }
        } else {
            h.split_once(':').unwrap_or((h, ""))
        };
        (host.to_string(), port.to_string())
    };
    let (kh, kport) = host_port(&kh);
    let (th, tport) = host_port(&th.to_ascii_lowercase());
    if kport != tport {
        return false;
    }
    let kl: Vec<&str> = kh.split('.').collect();
    let tl: Vec<&str> = th.split('.').collect();
    if kl.len() != tl.len() || !kl.iter().zip(&tl).all(|(k, t)| glob_match(k, t)) {
        return false;
    }
    tp.starts_with(&kp)
}

/// `*` matches any run of characters, `?` one character; everything else literally.
fn glob_match(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = s.chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0usize, 0usize, None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_hub_normalisation() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("library/busybox"), "docker.io/library/busybox");
        assert_eq!(norm("docker.io/busybox"), "docker.io/library/busybox");
        assert_eq!(
            norm("index.docker.io/busybox:1"),
            "docker.io/library/busybox:1"
        );
        assert_eq!(norm("team/app:v2"), "docker.io/team/app:v2");
        assert_eq!(norm("a/b/c"), "docker.io/a/b/c");
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest, None);
    }

    #[test]
    fn registries() {
        assert_eq!(norm("127.0.0.1:5000/busybox:1"), "127.0.0.1:5000/busybox:1");
        assert_eq!(norm("localhost/busybox"), "localhost/busybox");
        assert_eq!(norm("localhost:5000/a/b:t"), "localhost:5000/a/b:t");
        assert_eq!(norm("quay.io/coreos/etcd:v3"), "quay.io/coreos/etcd:v3");
        assert_eq!(
            norm("registry.k8s.io/pause:3.10"),
            "registry.k8s.io/pause:3.10"
        );
        assert_eq!(norm("[::1]:5000/img"), "[::1]:5000/img");
        // Upper-case first component is a registry host, like Docker's newer parser.
        assert_eq!(norm("Example/app"), "Example/app");
        let r = Reference::parse("127.0.0.1:5000/busybox:1").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "busybox");
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.repository_name(), "127.0.0.1:5000/busybox");
        // A port with no path is a tag on a Hub image.
        assert_eq!(norm("localhost:5000"), "docker.io/library/localhost:5000");
    }

    #[test]
    fn digests() {
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.tag, None);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        let r = Reference::parse(&format!("127.0.0.1:5000/bb:1@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/bb:1@{D}"));
        assert_eq!(r.pull_name(), format!("127.0.0.1:5000/bb@{D}"));
        assert_eq!(
            Reference::parse(&format!(
                "busybox@{}",
                D.to_uppercase().replace("SHA", "sha")
            )),
            Err(ReferenceError::DigestInvalidFormat)
        );
        assert_eq!(
            Reference::parse("busybox@sha256:0123456789abcdef0123456789abcdef0123"),
            Err(ReferenceError::DigestInvalidLength)
        );
        assert_eq!(
            Reference::parse("busybox@md5:0123456789abcdef0123456789abcdef"),
            Err(ReferenceError::DigestUnsupported)
        );
        assert_eq!(
            Reference::parse("busybox@sha256:abc"),
            Err(ReferenceError::InvalidFormat)
        );
        assert_eq!(
            Reference::parse("busybox@"),
            Err(ReferenceError::InvalidFormat)
        );
        assert_eq!(
            Reference::parse(&format!("busybox@{D}@{D}")),
            Err(ReferenceError::InvalidFormat)
        );
        assert_eq!(parse_digest(D).unwrap().0, "sha256");
        assert_eq!(
            parse_digest("sha256:xyz"),
            Err(ReferenceError::DigestInvalidFormat)
        );
    }

    #[test]
    fn errors() {
        use ReferenceError::*;
        let cases: &[(&str, ReferenceError)] = &[
            ("", NameEmpty),
            ("Busybox", NameContainsUppercase),
            ("library/Busybox:1", NameContainsUppercase),
            ("quay.io/Team/app", NameContainsUppercase),
            ("busybox:", InvalidFormat),
            ("busybox:-x", InvalidFormat),
            ("busybox:a b", InvalidFormat),
            ("bu sybox", InvalidFormat),
            ("-busybox", InvalidFormat),
            ("busybox-", InvalidFormat),
            ("a//b", InvalidFormat),
            ("a/", InvalidFormat),
            ("/a", InvalidFormat),
            ("a...b", InvalidFormat),
            ("a___b", InvalidFormat),
            ("http://registry/app", InvalidFormat),
            ("registry:port/app", InvalidFormat),
            ("reg_istry.io/app", InvalidFormat),
            ("-reg.io/app", InvalidFormat),
        ];
        for (s, want) in cases {
            assert_eq!(Reference::parse(s).as_ref(), Err(want), "{s:?}");
        }
        let hex = &D["sha256:".len()..];
        assert!(matches!(Reference::parse(hex), Err(HexRepositoryName(_))));
        let long = format!("a/{}", "b".repeat(260));
        assert_eq!(Reference::parse(&long), Err(NameTooLong));
        let long_tag = format!("a:{}", "t".repeat(129));
        assert_eq!(Reference::parse(&long_tag), Err(InvalidFormat));
        assert!(Reference::parse(&format!("a:{}", "t".repeat(128))).is_ok());
        assert_eq!(
            NameContainsUppercase.to_string(),
            "invalid reference format: repository name must be lowercase"
        );
        assert_eq!(InvalidFormat.to_string(), "invalid reference format");
        assert_eq!(
            DigestInvalidFormat.to_string(),
            "invalid checksum digest format"
        );
    }

    #[test]
    fn separators_and_tags() {
        for ok in [
            "a.b/c",
            "a_b",
            "a__b",
            "a-b",
            "a---b",
            "a.b.c",
            "a0/b1_c2",
            "x:Latest",
            "x:_t",
            "x:1.2-rc.3",
            "x:v1_2",
        ] {
            assert!(Reference::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn default_tag() {
        let r = Reference::parse("busybox").unwrap().with_default_tag();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        let r = Reference::parse("busybox:1").unwrap().with_default_tag();
        assert_eq!(r.to_string(), "docker.io/library/busybox:1");
        let r = Reference::parse(&format!("busybox@{D}"))
            .unwrap()
            .with_default_tag();
        assert_eq!(r.tag, None);
        assert_eq!(
            Reference::parse("busybox").unwrap().pull_name(),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn credential_hosts() {
        let hub = Reference::parse("busybox").unwrap();
        assert!(
            hub.registry_host_for_credentials()
                .contains(&"https://index.docker.io/v1/".to_string())
        );
        let local = Reference::parse("127.0.0.1:5000/x").unwrap();
        assert_eq!(
            local.registry_host_for_credentials(),
            vec!["127.0.0.1:5000"]
        );
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn credentials_by_host_and_port() {
        let cfg = json!({"auths": {
            "127.0.0.1:5000": {"auth": b64("alice:s3cr:et")},
            "127.0.0.1": {"username": "noport", "password": "x"},
            "quay.io": {"username": "bob", "password": "pw"},
        }});
        let r = Reference::parse("127.0.0.1:5000/busybox:1").unwrap();
        assert_eq!(
            credentials_for(&cfg, &r),
            Some(("alice".into(), "s3cr:et".into()))
        );
        let r = Reference::parse("127.0.0.1/busybox:1").unwrap();
        assert_eq!(credentials_for(&cfg, &r).unwrap().0, "noport");
        let r = Reference::parse("127.0.0.1:6000/busybox").unwrap();
        assert_eq!(credentials_for(&cfg, &r), None);
        let r = Reference::parse("quay.io/team/app").unwrap();
        assert_eq!(credentials_for(&cfg, &r).unwrap().0, "bob");
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(credentials_for(&cfg, &r), None);
    }

    #[test]
    fn credentials_docker_hub_and_legacy() {
        let cfg = json!({"auths": {"https://index.docker.io/v1/": {"auth": b64("hub:pw")}}});
        for img in ["busybox", "docker.io/library/busybox", "team/app:1"] {
            let r = Reference::parse(img).unwrap();
            assert_eq!(
                credentials_for(&cfg, &r),
                Some(("hub".into(), "pw".into())),
                "{img}"
            );
        }
        let cfg = json!({"docker.io": {"username": "d", "password": "p"}});
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(credentials_for(&cfg, &r), Some(("d".into(), "p".into())));
        // Legacy .dockercfg shape with scheme and /v2/ path.
        let cfg = json!({"https://reg.example.com/v2/": {"auth": b64("u:p"), "email": "e"}});
        let r = Reference::parse("reg.example.com/a/b").unwrap();
        assert_eq!(credentials_for(&cfg, &r), Some(("u".into(), "p".into())));
        let r = Reference::parse("quay.io/a/b").unwrap();
        assert_eq!(credentials_for(&cfg, &r), None);
    }

    #[test]
    fn credentials_path_prefix_and_glob() {
        let cfg = json!({"auths": {
            "reg.example.com": {"auth": b64("host:1")},
            "reg.example.com/team": {"auth": b64("team:2")},
            "*.corp.example": {"auth": b64("glob:3")},
            "bad": {"auth": "!!!not base64"},
            "empty": {},
        }});
        let r = Reference::parse("reg.example.com/team/app").unwrap();
        assert_eq!(credentials_for(&cfg, &r).unwrap().0, "team");
        let r = Reference::parse("reg.example.com/other/app").unwrap();
        assert_eq!(credentials_for(&cfg, &r).unwrap().0, "host");
        let r = Reference::parse("eu.corp.example/app").unwrap();
        assert_eq!(credentials_for(&cfg, &r).unwrap().0, "glob");
        let r = Reference::parse("a.eu.corp.example/app").unwrap();
        assert_eq!(credentials_for(&cfg, &r), None);
        assert_eq!(credentials_for(&json!("x"), &r), None);
    }

    #[test]
    fn globbing() {
        assert!(glob_match("*", "abc"));
        assert!(glob_match("a*c", "abbbc"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(!glob_match("ab", "abc"));
    }
}
