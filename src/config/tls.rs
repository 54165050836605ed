//! `[tls]`: the certificate chain and private key files, read and checked at load time.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use super::{read_file_capped, Problems, MAX_KEY_FILE_BYTES};

/// `[tls]` as written; both keys are required when the section is present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

/// `[tls]`: the certificate chain and key, parsed, checked to match each other.
#[derive(Debug)]
pub struct TlsFiles {
    /// Leaf first; never empty.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The private key (its `Debug` does not show the key).
    pub key: PrivateKeyDer<'static>,
    /// Where the chain was read from (for SIGHUP reloads).
    pub cert_path: PathBuf,
    /// Where the key was read from (for SIGHUP reloads).
    pub key_path: PathBuf,
}

impl Clone for TlsFiles {
    fn clone(&self) -> Self {
        TlsFiles {
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
            cert_path: self.cert_path.clone(),
            key_path: self.key_path.clone(),
        }
    }
}

/// Largest certificate chain file read.
const MAX_CERT_FILE_BYTES: u64 = 1 << 20;

pub(super) fn tls_files(
    raw: &TlsSection,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<TlsFiles> {
    let cert_path = required_path(
        raw.cert.as_deref(),
        "tls.cert",
        "a PEM certificate chain file",
        base_dir,
        problems,
    );
    let key_path = required_path(
        raw.key.as_deref(),
        "tls.key",
        "a PEM private key file",
        base_dir,
        problems,
    );
    let cert_chain = cert_path
        .as_deref()
        .and_then(|path| read_cert_chain(path, problems));
    let key = key_path
        .as_deref()
        .and_then(|path| read_private_key(path, problems));
    let (cert_chain, key, cert_path, key_path) = (cert_chain?, key?, cert_path?, key_path?);

    // The same check rustls makes when the listener starts, made here so that `check`
    // catches a key that does not belong to the certificate.
    let provider = rustls::crypto::ring::default_provider();
    if let Err(error) =
        rustls::sign::CertifiedKey::from_der(cert_chain.clone(), key.clone_key(), &provider)
    {
        let (at, message) = match error {
            rustls::Error::InconsistentKeys(_) => (
                "tls.key",
                format!(
                    "{} does not match the certificate in {}",
                    key_path.display(),
                    cert_path.display()
                ),
            ),
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => (
                "tls.cert",
                format!(
                    "{}: the first certificate is not a valid X.509 certificate",
                    cert_path.display()
                ),
            ),
            rustls::Error::General(_) => (
                "tls.key",
                format!(
                    "{}: unsupported or malformed private key (RSA, ECDSA P-256/P-384 and \
                     Ed25519 are supported)",
                    key_path.display()
                ),
            ),
            other => (
                "tls.key",
                format!(
                    "{} with {}: {other}",
                    key_path.display(),
                    cert_path.display()
                ),
            ),
        };
        problems.error(at, message);
        return None;
    }
    Some(TlsFiles {
        cert_chain,
        key,
        cert_path,
        key_path,
    })
}

/// A path that must be set, resolved against the config file's directory.
fn required_path(
    path: Option<&Path>,
    at: &str,
    what: &str,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<PathBuf> {
    match path {
        Some(path) if !path.as_os_str().is_empty() => Some(base_dir.join(path)),
        _ => {
            problems.error(at, format!("required: {what}"));
            None
        }
    }
}

fn read_cert_chain(path: &Path, problems: &mut Problems) -> Option<Vec<CertificateDer<'static>>> {
    let bytes = match read_file_capped(path, MAX_CERT_FILE_BYTES) {
        Ok(bytes) => bytes,
        Err(error) => {
            problems.error("tls.cert", format!("{}: {error}", path.display()));
            return None;
        }
    };
    let chain = match CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>() {
        Ok(chain) => chain,
        Err(error) => {
            problems.error(
                "tls.cert",
                format!("{}: {}", path.display(), pem_problem(&error)),
            );
            return None;
        }
    };
    if chain.is_empty() {
        problems.error(
            "tls.cert",
            format!("{}: no PEM \"CERTIFICATE\" block found", path.display()),
        );
        return None;
    }
    Some(chain)
}

fn read_private_key(path: &Path, problems: &mut Problems) -> Option<PrivateKeyDer<'static>> {
    let bytes = match read_file_capped(path, MAX_KEY_FILE_BYTES) {
        Ok(bytes) => bytes,
        Err(error) => {
            problems.error("tls.key", format!("{}: {error}", path.display()));
            return None;
        }
    };
    warn_if_world_readable(path, "tls.key", problems);
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Some(key),
        Err(pem::Error::NoItemsFound) => {
            problems.error(
                "tls.key",
                format!(
                    "{}: no PEM private key found (expected a \"PRIVATE KEY\", \
                     \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block)",
                    path.display()
                ),
            );
            None
        }
        Err(error) => {
            problems.error(
                "tls.key",
                format!("{}: {}", path.display(), pem_problem(&error)),
            );
            None
        }
    }
}

/// Describes a PEM error without quoting the file (it may hold a private key).
pub(super) fn pem_problem(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line".to_owned(),
        pem::Error::IllegalSectionStart { .. } => "malformed PEM BEGIN line".to_owned(),
        pem::Error::Base64Decode(_) => "a PEM block is not valid base64".to_owned(),
        pem::Error::Io(error) => format!("read error: {error}"),
        pem::Error::NoItemsFound => "no PEM block of the expected type".to_owned(),
        pem::Error::SectionTooLarge => "a PEM block is too large".to_owned(),
        _ => "malformed PEM".to_owned(),
    }
}

/// Warns when a secret file can be read by every local user.
pub(super) fn warn_if_world_readable(path: &Path, at: &str, problems: &mut Problems) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(metadata) = std::fs::metadata(path) {
            if metadata.permissions().mode() & 0o007 != 0 {
                problems.warn(format!(
                    "{at}: {} is accessible to all local users (chmod o-rwx)",
                    path.display()
                ));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (path, at, problems);
}
