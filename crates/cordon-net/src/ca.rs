//! cordon's own certificate authority: made once per user, kept in
//! `$XDG_DATA_HOME/cordon/ca` (the policy denies that directory to every sandbox),
//! and used only where the broker must read a request to swap in a secret.
//! Leaf certificates are made on first use for each name and kept in memory.

use crate::error::NetError;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const CERT_FILE: &str = "ca.pem";
const KEY_FILE: &str = "ca.key";

pub struct CertificateAuthority {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    leaves: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl CertificateAuthority {
    /// The user's CA in `dir`, made there (mode 0700, key 0600) if absent.
    pub fn load_or_create(dir: &Path) -> Result<CertificateAuthority, NetError> {
        let ca_error = |what: &str, e: &dyn std::fmt::Display| NetError::Ca {
            dir: dir.to_path_buf(),
            message: format!("{what}: {e}"),
        };
        let (cert_path, key_path) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        if !key_path.exists() {
            create(dir).map_err(|e| ca_error("cannot create the CA", &e))?;
        }
        let cert_pem =
            fs::read_to_string(&cert_path).map_err(|e| ca_error("cannot read ca.pem", &e))?;
        let key_pem =
            fs::read_to_string(&key_path).map_err(|e| ca_error("cannot read ca.key", &e))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| ca_error("ca.key is unusable", &e))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| ca_error("ca.pem is unusable", &e))?;
        let cert_der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| ca_error("ca.pem holds no certificate", &"empty"))?;
        Ok(CertificateAuthority {
            cert_pem,
            cert_der,
            issuer,
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate, PEM: what the sandbox trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate for `name` signed by this CA, with its key.
    pub fn leaf(&self, name: &str) -> Result<Arc<CertifiedKey>, NetError> {
        let mut leaves = self.leaves.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(leaf) = leaves.get(name) {
            return Ok(leaf.clone());
        }
        let leaf = Arc::new(self.make_leaf(name)?);
        leaves.insert(name.to_string(), leaf.clone());
        Ok(leaf)
    }

    fn make_leaf(&self, name: &str) -> Result<CertifiedKey, NetError> {
        let fail =
            |e: rcgen::Error| NetError::Tls(format!("cannot make a certificate for {name}: {e}"));
        let mut params = CertificateParams::new(vec![name.to_string()]).map_err(fail)?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(fail)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(fail)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key_der)
            .map_err(|e| NetError::Tls(format!("unusable key for {name}: {e}")))?;
        Ok(CertifiedKey::new(
            vec![cert.der().clone(), self.cert_der.clone()],
            signing_key,
        ))
    }
}

/// Makes a fresh CA in `dir`: the key is written first to a temporary name and
/// renamed, so a crash never leaves a certificate without its key.
fn create(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("cordon egress CA ({})", user_label()),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key)?;
    write_private(&dir.join(KEY_FILE), key.serialize_pem().as_bytes(), 0o600)?;
    write_private(&dir.join(CERT_FILE), cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

fn user_label() -> String {
    std::env::var("USER").unwrap_or_else(|_| format!("uid {}", rustix::process::geteuid().as_raw()))
}

/// Writes `bytes` to `path` atomically (temporary file, then rename) with `mode`.
pub(crate) fn write_private(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp: PathBuf = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_loaded_and_signs_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let first = CertificateAuthority::load_or_create(&ca_dir).unwrap();
        let second = CertificateAuthority::load_or_create(&ca_dir).unwrap();
        assert_eq!(first.cert_pem(), second.cert_pem());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(ca_dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is private");
        let leaf = first.leaf("api.example.com").unwrap();
        assert_eq!(leaf.cert.len(), 2);
        assert!(Arc::ptr_eq(&leaf, &first.leaf("api.example.com").unwrap()));
    }
}
