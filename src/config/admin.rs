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
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: None,
            token_scope: "wsgate:admin".to_owned(),
            revocation_log: None,
            revocation_retention: DurationStr::secs(7 * 86_400),
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
    })
}
