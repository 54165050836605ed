//! `[admin]`: the admin listener (SPEC §6-§7): its address, and the revocation log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::route::is_scope_token;
use super::server::{overlaps, socket_address};
use super::units::DurationStr;
use super::Problems;

/// `[admin]` as written; `listen` is required when the section is present.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSection {
    /// Socket address of the admin listener.
    pub listen: Option<String>,
    /// Scope a bearer token needs for `POST /revoke`.
    pub token_scope: String,
    /// Append-only revocation log; without it revocations are kept in memory only.
    pub revocation_log: Option<PathBuf>,
    /// How long a `jti` entry without `exp` is kept.
    pub revocation_retention: DurationStr,
    /// Ed25519 private key (PKCS#8 PEM) that signs identity headers (`sign_identity`).
    pub identity_key: Option<PathBuf>,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: None,
            token_scope: "wsgate:admin".to_owned(),
            revocation_log: None,
            revocation_retention: DurationStr::secs(7 * 86_400),
            identity_key: None,
        }
    }
}

/// `[admin]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// Admin listener address (distinct from every `server.listen`).
    pub listen: SocketAddr,
    /// Scope needed for `POST /revoke`.
    pub token_scope: String,
    /// Append-only revocation log, resolved; `None` keeps revocations in memory only.
    pub revocation_log: Option<PathBuf>,
    /// How long a `jti` entry without `exp` is kept.
    pub revocation_retention: Duration,
    /// The gateway's identity-signing key (SPEC §5 `sign_identity`).
    pub identity_key: Option<IdentityKey>,
}

/// An Ed25519 private key in PKCS#8 DER, checked by ring at load. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentityKey(pub Vec<u8>);

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityKey(..)")
    }
}

/// Largest identity key file read.
const MAX_IDENTITY_KEY_BYTES: u64 = 64 * 1024;

/// Reads `admin.identity_key`: one PEM "PRIVATE KEY" block holding an Ed25519 key.
fn identity_key(path: &Path, problems: &mut Problems) -> Option<IdentityKey> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivatePkcs8KeyDer;
    let at = "admin.identity_key";
    let bytes = match super::read_file_capped(path, MAX_IDENTITY_KEY_BYTES) {
        Ok(bytes) => bytes,
        Err(error) => {
            problems.error(at, format!("{}: {error}", path.display()));
            return None;
        }
    };
    super::tls::warn_if_world_readable(path, at, problems);
    let der = match PrivatePkcs8KeyDer::from_pem_slice(&bytes) {
        Ok(der) => der,
        Err(error) => {
            problems.error(
                at,
                format!(
                    "{}: {} (expected a PKCS#8 \"PRIVATE KEY\" block, as from \
                     `openssl genpkey -algorithm ed25519`)",
                    path.display(),
                    super::tls::pem_problem(&error)
                ),
            );
            return None;
        }
    };
    // OpenSSL writes PKCS#8 v1 (no public key inside): ring checks what it can.
    if ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der()).is_err()
    {
        problems.error(
            at,
            format!("{}: not an Ed25519 private key", path.display()),
        );
        return None;
    }
    Some(IdentityKey(der.secret_pkcs8_der().to_vec()))
}

pub(super) fn admin(
    raw: &AdminSection,
    server_listen: &[SocketAddr],
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<Admin> {
    let Some(text) = raw.listen.as_deref() else {
        problems.error(
            "admin.listen",
            "required: an address like \"127.0.0.1:9090\"",
        );
        return None;
    };
    let listen = socket_address("admin.listen", text, problems)?;
    if let Some(index) = server_listen
        .iter()
        .position(|server| overlaps(*server, listen))
    {
        problems.error(
            "admin.listen",
            format!(
                "{listen} overlaps server.listen[{index}] ({})",
                server_listen[index]
            ),
        );
    }
    if !listen.ip().is_loopback() {
        problems.warn(format!(
            "admin.listen: {listen} is not a loopback address; /healthz, /readyz and /metrics \
             answer without a token there"
        ));
    }
    if !is_scope_token(&raw.token_scope) {
        problems.error(
            "admin.token_scope",
            format!(
                "{:?} is not a scope (printable ASCII, no spaces, quotes or backslashes)",
                raw.token_scope
            ),
        );
    }
    if raw.revocation_log.is_none() {
        problems.warn(
            "admin: no revocation_log: revocations are kept in memory only and a restart forgets them",
        );
    }
    if raw.revocation_retention.0.is_zero() {
        problems.error("admin.revocation_retention", "must be more than 0s");
    }
    Some(Admin {
        listen,
        token_scope: raw.token_scope.clone(),
        revocation_log: raw.revocation_log.as_ref().map(|log| base_dir.join(log)),
        revocation_retention: raw.revocation_retention.0,
        identity_key: raw
            .identity_key
            .as_ref()
            .and_then(|key| identity_key(&base_dir.join(key), problems)),
    })
}
