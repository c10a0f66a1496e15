//! The server's credentials, made on first start in the data dir and reused afterwards: a
//! self-signed CA, a serving certificate for 127.0.0.1/localhost (and extra names) signed by it,
//! the admin bearer token, and the token the API server presents to node agents.
//!
//! The cluster-wide parts (CA, admin token, agent token) are also kept in the store under
//! [`SHARED_KEY`], so several servers on one etcd serve one cluster: the first server to start
//! puts its own there, every other adopts them (and signs its own serving certificate with the
//! shared CA). Like Secrets in Kubernetes' etcd, they are stored unencrypted: protect the store.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

pub struct Pki {
    pub dir: PathBuf,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub admin_token: String,
    /// What the API server presents to node agents (`kubectl logs`, `exec`, port-forward).
    pub agent_token: String,
}

/// The store key of the cluster-wide credentials.
pub const SHARED_KEY: &str = "/skiff/pki/cluster";

/// The files that make up the cluster-wide credentials.
const SHARED_FILES: [(&str, &str); 4] = [
    ("ca.crt", "caCert"),
    ("ca.key", "caKey"),
    ("admin.token", "adminToken"),
    ("agent.token", "agentToken"),
];

fn new_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Makes whichever cluster-wide credential is missing under `dir`.
fn ensure_cluster_credentials(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let ca_cert = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    if !ca_cert.exists() || !ca_key.exists() {
        let key = KeyPair::generate().map_err(other)?;
        let cert = ca_params()?.self_signed(&key).map_err(other)?;
        write_private(&ca_key, &key.serialize_pem())?;
        write_private(&ca_cert, &cert.pem())?;
        let _ = fs::remove_file(dir.join("server.crt"));
    }
    for name in ["admin.token", "agent.token"] {
        let path = dir.join(name);
        if !path.exists() {
            write_private(&path, &new_token())?;
        }
    }
    Ok(())
}

/// Makes the credentials under `dir` the cluster's: adopts those in the store, or puts this
/// server's there when the store has none yet. A changed CA means a new serving certificate.
pub async fn share_through_store(dir: &Path, store: &dyn skiff_store::Store) -> io::Result<()> {
    for _ in 0..3 {
        match store.get(SHARED_KEY).await.map_err(other)? {
            Some(kv) => {
                let v: serde_json::Value = serde_json::from_slice(&kv.value).map_err(other)?;
                fs::create_dir_all(dir)?;
                for (file, field) in SHARED_FILES {
                    let Some(want) = v[field].as_str() else {
                        return Err(other(format!("the stored credentials lack {field}")));
                    };
                    let path = dir.join(file);
                    if fs::read_to_string(&path).ok().as_deref() != Some(want) {
                        write_private(&path, want)?;
                        if file.starts_with("ca.") {
                            let _ = fs::remove_file(dir.join("server.crt"));
                        }
                    }
                }
                return Ok(());
            }
            None => {
                ensure_cluster_credentials(dir)?;
                let mut v = serde_json::Map::new();
                for (file, field) in SHARED_FILES {
                    v.insert(field.into(), fs::read_to_string(dir.join(file))?.into());
                }
                let body = serde_json::to_vec(&v).map_err(other)?;
                match store.create(SHARED_KEY, body).await {
                    Ok(_) => return Ok(()),
                    // Another server got there first: adopt its credentials.
                    Err(skiff_store::StoreError::AlreadyExists) => continue,
                    Err(e) => return Err(other(e)),
                }
            }
        }
    }
    Err(other(
        "could not agree on the cluster's credentials in the store",
    ))
}

/// Writes a file readable by its owner only, atomically (temp file, fsync, rename).
pub fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    fs::rename(tmp, path)
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The CA's parameters; the same each time, so a stored CA key can sign again.
fn ca_params() -> io::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(other)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "skiff-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    Ok(params)
}

/// Loads the credentials under `dir`, creating whatever is missing. `extra_sans` are added to a
/// newly made serving certificate (IP addresses or DNS names).
pub fn load_or_create(dir: &Path, extra_sans: &[String]) -> io::Result<Pki> {
    ensure_cluster_credentials(dir)?;
    let ca_pem = fs::read_to_string(dir.join("ca.crt"))?;
    let server_cert = dir.join("server.crt");
    let server_key = dir.join("server.key");
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    names.extend(extra_sans.iter().cloned());
    names.dedup();
    // The names a certificate was made for: asking for others makes a new one.
    let sans_file = dir.join("server.sans");
    let same_names = fs::read_to_string(&sans_file)
        .ok()
        .is_none_or(|s| s == names.join(","));
    if !server_cert.exists() || !server_key.exists() || !same_names {
        let ca_key_pair =
            KeyPair::from_pem(&fs::read_to_string(dir.join("ca.key"))?).map_err(other)?;
        let issuer = Issuer::new(ca_params()?, ca_key_pair);
        let key = KeyPair::generate().map_err(other)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(other)?;
        for n in &names {
            let san = match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.clone().try_into().map_err(other)?),
            };
            params.subject_alt_names.push(san);
        }
        params
            .distinguished_name
            .push(DnType::CommonName, "skiff-apiserver");
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let cert = params.signed_by(&key, &issuer).map_err(other)?;
        write_private(&server_key, &key.serialize_pem())?;
        write_private(&server_cert, &cert.pem())?;
        write_private(&sans_file, &names.join(","))?;
    }
    Ok(Pki {
        dir: dir.to_path_buf(),
        ca_pem,
        cert_pem: fs::read_to_string(&server_cert)?,
        key_pem: fs::read_to_string(&server_key)?,
        admin_token: fs::read_to_string(dir.join("admin.token"))?
            .trim()
            .to_string(),
        agent_token: fs::read_to_string(dir.join("agent.token"))?
            .trim()
            .to_string(),
    })
}

/// The pin of a CA certificate (PEM): `sha256:` and the hex SHA-256 of its DER bytes, as
/// `skiff token create` prints it and `skiff agent --ca-cert-hash` checks it.
pub fn ca_cert_hash(ca_pem: &str) -> io::Result<String> {
    use base64::Engine;
    use sha2::Digest;
    let b64: String = ca_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(other)?;
    let digest = sha2::Sha256::digest(&der);
    Ok(format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_and_reuses() {
        let d = tempfile::tempdir().unwrap();
        let a = load_or_create(d.path(), &[]).unwrap();
        let b = load_or_create(d.path(), &[]).unwrap();
        assert_eq!(a.ca_pem, b.ca_pem);
        assert_eq!(a.admin_token, b.admin_token);
        assert!(a.cert_pem.contains("BEGIN CERTIFICATE"));
        assert_eq!(a.admin_token.len(), 64);
        assert_ne!(a.agent_token, a.admin_token);
        let h = ca_cert_hash(&a.ca_pem).unwrap();
        assert!(h.starts_with("sha256:") && h.len() == 7 + 64, "{h}");
        // New names: a new serving certificate from the same CA.
        let c = load_or_create(d.path(), &["10.1.2.3".into()]).unwrap();
        assert_ne!(c.cert_pem, a.cert_pem);
        assert_eq!(c.ca_pem, a.ca_pem);
    }
}
