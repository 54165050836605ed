//! Configuration loading (SPEC §3).
//!
//! Two layers:
//! - the serde layer (`*Section`, [`KeyConfig`], [`RouteConfig`], [`RawConfig`]): the file
//!   as written, `deny_unknown_fields` everywhere, defaults exactly as SPEC §3 lists them;
//! - the validated layer ([`Config`] and its parts): resolved values (socket addresses,
//!   `std::time::Duration`, byte counts, key material read from disk, parsed TLS files).
//!
//! Every problem is collected, not just the first: each section, each `[[route]]` and
//! each `[[auth.key]]` is deserialized on its own, and when one fails each of its keys is
//! tried alone, so every bad key is reported with its full path (`route[1].scope`). Then
//! the cross-field rules of each section's file run over what parsed (`validate` below). A file is only accepted
//! when nothing at all was wrong.

mod admin;
mod auth;
mod cluster;
mod compression;
mod document;
mod limits;
mod login;
mod origin;
pub mod provider;
mod public_key;
mod route;
mod server;
mod session;
mod tls;
pub mod units;

use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use self::admin::admin;
use self::auth::auth;
use self::cluster::cluster;
use self::compression::compression;
use self::document::{escape_controls, line_of, locate, one_line, raw_from_str, Located};
use self::limits::limits;
use self::origin::origin;
use self::route::routes;
use self::server::server;
use self::session::session;
use self::tls::tls_files;
use self::units::ByteSize;

pub use self::admin::{Admin, AdminSection, IdentityKey};
pub use self::auth::{
    Auth, AuthSection, KeyConfig, KeyMaterial, LoadedKey, Source, ED25519_SPKI_PREFIX,
};
pub use self::cluster::{
    is_node_name, redacted_url, Cluster, ClusterSection, OnUnavailable, MAX_NODE_BYTES,
};
pub use self::compression::{Compression, CompressionSection};
pub use self::limits::{Limits, LimitsSection};
pub use self::login::{thumbprint, FailureRate, Login, LoginSection, SigningKeyDer};
pub use self::origin::{Origin, OriginSection};
pub use self::route::{Backend, Route, RouteConfig, UpstreamUrl};
pub use self::server::{Server, ServerSection};
pub use self::session::{OnExpiry, Refresh, Session, SessionSection};
pub use self::tls::{TlsFiles, TlsSection};

/// The largest config file read (a guard against pointing `-c` at a device or a log).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The whole file as written. Assembled section by section (see the module doc), so it
/// has no `Deserialize` of its own; [`TOP_LEVEL_KEYS`] lists what it accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawConfig {
    /// `[server]`.
    pub server: ServerSection,
    /// `[tls]`, when present.
    pub tls: Option<TlsSection>,
    /// `[auth]` with its `[[auth.key]]`.
    pub auth: AuthSection,
    /// `[origin]`.
    pub origin: OriginSection,
    /// `[limits]`.
    pub limits: LimitsSection,
    /// `[session]`.
    pub session: SessionSection,
    /// `[admin]`, when present.
    pub admin: Option<AdminSection>,
    /// `[cluster]`, when present.
    pub cluster: Option<ClusterSection>,
    /// `[compression]`.
    pub compression: CompressionSection,
    /// `[[route]]`.
    pub route: Vec<RouteConfig>,
    /// `[login]`, when present.
    pub login: Option<LoginSection>,
}

/// The keys allowed at the top level of the file.
pub const TOP_LEVEL_KEYS: [&str; 11] = [
    "server",
    "tls",
    "auth",
    "origin",
    "limits",
    "session",
    "admin",
    "cluster",
    "compression",
    "route",
    "login",
];

/// A validated configuration: every value resolved, every file read.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for `parse_str`, the label it was given).
    pub source_path: PathBuf,
    /// `[server]`.
    pub server: Server,
    /// `[tls]`: the listeners speak `wss://` when present.
    pub tls: Option<TlsFiles>,
    /// `[auth]` with the loaded keys.
    pub auth: Auth,
    /// `[origin]`.
    pub origin: Origin,
    /// `[limits]`.
    pub limits: Limits,
    /// `[session]`.
    pub session: Session,
    /// `[admin]`, when present.
    pub admin: Option<Admin>,
    /// `[cluster]`, when present: the fleet link (SPEC §8).
    pub cluster: Option<Cluster>,
    /// `[compression]` (SPEC §10).
    pub compression: Compression,
    /// `[[route]]`, in file order; paths are unique.
    pub routes: Vec<Route>,
    /// `[login]`, when present: the token service (SPEC §11).
    pub login: Option<Login>,
    warnings: Vec<String>,
}

impl Config {
    /// Things that are allowed but worth a second look (public routes, an exposed admin
    /// listener...), one line each, without the file name.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    /// The route whose path is exactly `path`.
    pub fn route(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|route| route.path == path)
    }
}

/// One problem in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path, e.g. `route[1].scope`, `auth.key[0].public_key`; empty for the file as a
    /// whole (unreadable, TOML syntax).
    pub path: String,
    /// What is wrong, naming the expected form. Never contains secret material.
    pub message: String,
    /// 1-based line in the config file, when known.
    pub line: Option<usize>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

/// Every problem found in one config file; `Display` writes one line per problem:
/// `wsgate.toml: route[1].path: must start with '/' (line 14)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file label the lines start with.
    pub file: String,
    /// In file order where lines are known, then the rest.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// Each error as one printable line.
    pub fn lines(&self) -> Vec<String> {
        self.errors
            .iter()
            .map(|error| format!("{}: {error}", self.file))
            .collect()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors and warnings while a file is checked.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
    /// Paths whose value failed to deserialize: validation saw a default there, so its
    /// own findings at (or inside) those paths would only repeat the first error.
    unparsed: HashSet<String>,
}

impl Problems {
    /// Records an error at `path`.
    pub(crate) fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        if !self.is_under_unparsed(&path) {
            self.errors.push(ConfigError {
                path,
                message: message.into(),
                line: None,
            });
        }
    }

    /// Whether `path` is, or lies inside, a value that did not deserialize.
    fn is_under_unparsed(&self, path: &str) -> bool {
        self.unparsed.iter().any(|unparsed| {
            path.strip_prefix(unparsed.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        })
    }

    /// Records a value that did not deserialize.
    fn unparsed(&mut self, path: String, message: String) {
        self.unparsed.insert(path.clone());
        self.errors.push(ConfigError {
            path,
            message,
            line: None,
        });
    }

    /// Records a warning line (without the file name).
    pub(crate) fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }

    fn into_errors(self, file: &str, text: &str) -> ConfigErrors {
        let tree = toml::from_str::<Located>(text).ok();
        let mut errors = self.errors;
        for error in &mut errors {
            error.path = escape_controls(&error.path);
            error.message = one_line(&error.message);
            if error.line.is_none() {
                error.line = tree
                    .as_ref()
                    .and_then(|tree| locate(tree, &error.path))
                    .map(|span| line_of(text, span.start));
            }
        }
        // Stable: errors on one line, and errors without a line, keep their order.
        errors.sort_by_key(|error| error.line.unwrap_or(usize::MAX));
        ConfigErrors {
            file: file.to_owned(),
            errors,
        }
    }
}

// Entry points.

/// Reads, parses and validates the config file at `path`. Relative paths inside it are
/// resolved against its directory; key and certificate files are read.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let whole_file_error = |message: String| ConfigErrors {
        file: file.clone(),
        errors: vec![ConfigError {
            path: String::new(),
            message,
            line: None,
        }],
    };
    let bytes = read_file_capped(path, MAX_CONFIG_BYTES)
        .map_err(|error| whole_file_error(error.to_string()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| whole_file_error("not UTF-8 text (TOML files are UTF-8)".to_owned()))?;
    let base_dir = path.parent().unwrap_or(Path::new(""));
    let mut config = parse_str(&text, base_dir, &file)?;
    config.source_path = path.to_path_buf();
    Ok(config)
}

/// Parses and validates config text. `base_dir` resolves relative paths; `file_label`
/// starts each error line and becomes `source_path`.
pub fn parse_str(text: &str, base_dir: &Path, file_label: &str) -> Result<Config, ConfigErrors> {
    let mut problems = Problems::default();
    let raw = match raw_from_str(text, &mut problems) {
        Some(raw) => raw,
        None => return Err(problems.into_errors(file_label, text)),
    };
    let mut config = validate(&raw, base_dir, &mut problems);
    if !problems.errors.is_empty() {
        return Err(problems.into_errors(file_label, text));
    }
    config.source_path = PathBuf::from(file_label);
    config.warnings = problems.warnings;
    Ok(config)
}

/// The `serve --demo` config: `listen`, one EdDSA key with kid `demo`, route `/echo` on
/// the echo backend with no scope, requests without `Origin` allowed, all else default.
pub fn demo(listen: SocketAddr, ed25519_spki_der: Vec<u8>) -> Config {
    let mut problems = Problems::default();
    let mut config = validate(&RawConfig::default(), Path::new(""), &mut problems);
    // The defaults are valid (tested); what validation said about the missing listen
    // address, route and key is filled in right here.
    config.source_path = PathBuf::from("(demo)");
    config.server.listen = vec![listen];
    config.auth.keys = vec![LoadedKey {
        kid: Some("demo".to_owned()),
        alg: "EdDSA".to_owned(),
        material: KeyMaterial::Ed25519Spki(ed25519_spki_der),
        path: PathBuf::from("(in memory)"),
    }];
    config.origin = Origin {
        allow: Vec::new(),
        allow_missing: true,
    };
    config.routes = vec![Route {
        path: "/echo".to_owned(),
        public: false,
        scope: Vec::new(),
        protocols: Vec::new(),
        backend: Backend::Echo,
        compression: true,
    }];
    config.warnings = Vec::new();
    config
}

/// Why a file could not be read. Its `Display` names neither the file (callers do) nor
/// any of its contents.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The OS refused (missing, permissions, a directory...).
    Io(std::io::Error),
    /// Larger than the cap given.
    TooLarge(u64),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(error) => write!(f, "cannot read: {error}"),
            ReadError::TooLarge(cap) => write!(f, "larger than {}", ByteSize(*cap)),
        }
    }
}

/// Reads at most `cap` bytes of a file; larger files are refused.
pub(crate) fn read_file_capped(path: &Path, cap: u64) -> Result<Vec<u8>, ReadError> {
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let mut bytes = Vec::new();
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if u64::try_from(bytes.len()).map_or(true, |len| len > cap) {
        return Err(ReadError::TooLarge(cap));
    }
    Ok(bytes)
}

// From TOML text to the serde layer, collecting every problem.

/// Largest key or secret file read.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// Builds the validated config. It always returns one (with defaults where a value was
/// bad) so that every rule gets to run; the caller discards it if `problems` has errors.
pub(super) fn validate(raw: &RawConfig, base_dir: &Path, problems: &mut Problems) -> Config {
    let server = server(&raw.server, problems);
    let tls = raw
        .tls
        .as_ref()
        .and_then(|tls| tls_files(tls, base_dir, problems));
    let origin = origin(&raw.origin, problems);
    let auth = auth(&raw.auth, &raw.origin, base_dir, problems);
    let limits = limits(&raw.limits, problems);
    let session = session(&raw.session, problems);
    let admin = raw
        .admin
        .as_ref()
        .and_then(|admin| self::admin(admin, &server.listen, base_dir, problems));
    let cluster = raw.cluster.as_ref().and_then(|c| cluster(c, problems));
    let routes = routes(&raw.route, base_dir, problems);
    // SPEC §5: `sign_identity` signs with `[admin] identity_key`.
    if admin.as_ref().is_none_or(|a| a.identity_key.is_none())
        && raw.admin.as_ref().is_none_or(|a| a.identity_key.is_none())
    {
        if let Some(index) = raw.route.iter().position(|r| r.sign_identity == Some(true)) {
            problems.error(
                format!("route[{index}].sign_identity"),
                "needs [admin] identity_key (an Ed25519 PKCS#8 PEM file)",
            );
        }
    }
    let login = raw.login.as_ref().and_then(|section| {
        let around = self::login::Around {
            server_listen: &server.listen,
            admin_listen: admin.as_ref().map(|a| a.listen),
            auth_issuer: auth.issuer.as_deref(),
            static_kids: auth.keys.iter().filter_map(|k| k.kid.as_deref()).collect(),
            max_lifetime: auth.max_lifetime,
        };
        self::login::login(section, &around, base_dir, problems)
    });
    let compression = compression(&raw.compression, problems);

    // The login key (SPEC §11) verifies the tokens the token service issues.
    if raw.auth.key.is_empty() && raw.auth.provider.is_empty() && raw.login.is_none() {
        if let Some(index) = raw.route.iter().position(|route| !route.public) {
            problems.error(
                "auth.key",
                format!(
                    "no keys configured but route[{index}] needs a token \
                     (add [[auth.key]] or [[auth.provider]], or set public = true on routes that need none)"
                ),
            );
        }
        if raw.admin.is_some() {
            problems.warn(
                "admin: no auth keys are configured, so POST /revoke can never be authorized",
            );
        }
    }

    Config {
        source_path: PathBuf::new(),
        server,
        tls,
        auth,
        origin,
        limits,
        session,
        admin,
        cluster,
        compression,
        routes,
        login,
        warnings: Vec::new(),
    }
}

/// Saturating: a value past `usize::MAX` has already been reported as an error.
fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod validate_tests;
