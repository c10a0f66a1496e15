//! sha256 helpers: hex digests, a hashing reader, blob file names.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// A running sha256.
#[derive(Default, Clone)]
pub(crate) struct Hasher(Sha256);

impl Hasher {
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    /// `sha256:<hex>`.
    pub(crate) fn finish(self) -> String {
        format!("sha256:{}", hex(&self.0.finalize()))
    }
}

pub(crate) fn sha256_of(data: &[u8]) -> String {
    let mut h = Hasher::default();
    h.update(data);
    h.finish()
}

/// Hashes (and counts) everything read through it.
pub(crate) struct HashingReader<R> {
    pub(crate) inner: R,
    pub(crate) hasher: Hasher,
    pub(crate) count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::default(),
            count: 0,
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// The hex part of a `sha256:<hex>` digest, checked (64 lower-case hex digits), so that it is
/// safe to use as a file name.
pub(crate) fn sha256_hex(digest: &str) -> Result<&str, String> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            Ok(h)
        }
        _ => Err(format!("unsupported or invalid digest {digest:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            sha256_of(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut r = HashingReader::new(&b"abc"[..]);
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(r.count, 3);
        assert_eq!(
            r.hasher.finish(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(sha256_hex("sha256:../../etc").is_err());
        assert!(sha256_hex("sha512:00").is_err());
    }
}
