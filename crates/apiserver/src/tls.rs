//! The server's credentials, made on first start in the data dir and reused afterwards: a
//! self-signed CA, a serving certificate for 127.0.0.1/localhost (and extra names) signed by it,
//! and the admin bearer token.

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
    let ca_pem = fs::read_to_string(&ca_cert)?;
    let server_cert = dir.join("server.crt");
    let server_key = dir.join("server.key");
    if !server_cert.exists() || !server_key.exists() {
        let ca_key_pair = KeyPair::from_pem(&fs::read_to_string(&ca_key)?).map_err(other)?;
        let issuer = Issuer::new(ca_params()?, ca_key_pair);
        let key = KeyPair::generate().map_err(other)?;
        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        names.extend(extra_sans.iter().cloned());
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
    }
    let token_path = dir.join("admin.token");
    if !token_path.exists() {
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        write_private(&token_path, &token)?;
    }
    Ok(Pki {
        dir: dir.to_path_buf(),
        ca_pem,
        cert_pem: fs::read_to_string(&server_cert)?,
        key_pem: fs::read_to_string(&server_key)?,
        admin_token: fs::read_to_string(&token_path)?.trim().to_string(),
    })
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
    }
}
