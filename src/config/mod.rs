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
//! the cross-field rules of `validate.rs` run over what parsed. A file is only accepted
//! when nothing at all was wrong.

pub mod provider;
mod public_key;
pub mod units;
mod validate;

use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::{DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use self::units::{ByteRate, ByteSize, DurationStr, Rate};

/// The largest config file read (a guard against pointing `-c` at a device or a log).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------
// The serde layer: the file as written.
// ---------------------------------------------------------------------------------------

/// `[server]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// One socket address or an array of them; required (empty means missing).
    #[serde(deserialize_with = "one_or_many")]
    pub listen: Vec<String>,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// Connections past this get 503 at the handshake.
    pub max_connections: usize,
    /// How long SIGTERM waits for connections to close.
    pub shutdown_grace: DurationStr,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: Vec::new(),
            workers: 0,
            max_connections: 100_000,
            shutdown_grace: DurationStr::secs(10),
        }
    }
}

/// `[tls]` as written; both keys are required when the section is present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

/// `[auth]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// When set, `iss` must equal it.
    pub issuer: Option<String>,
    /// When set, `aud` must contain it.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` / `nbf` / `iat`.
    pub leeway: DurationStr,
    /// Token sources in order: `query:NAME`, `protocol`, `header`, `cookie:NAME`.
    pub sources: Vec<String>,
    /// A longer token is refused without being decoded.
    pub max_token_bytes: ByteSize,
    /// SPEC §4: close with 4401/4403 instead of an HTTP status for browsers.
    pub explain_to_browsers: bool,
    /// `[[auth.key]]`.
    pub key: Vec<KeyConfig>,
    /// `[[auth.provider]]` (SPEC §9).
    pub provider: Vec<provider::ProviderConfig>,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            issuer: None,
            audience: None,
            leeway: DurationStr::secs(30),
            sources: ["query:access_token", "query:token", "protocol", "header"]
                .map(String::from)
                .to_vec(),
            max_token_bytes: ByteSize(4 * 1024),
            explain_to_browsers: false,
            key: Vec::new(),
            provider: Vec::new(),
        }
    }
}

/// One `[[auth.key]]` as written; file paths are still relative to the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyConfig {
    /// Key id matched against the token header's `kid`.
    pub kid: Option<String>,
    /// `EdDSA`, `HS256`, `HS384` or `HS512`; required (empty means missing).
    pub alg: String,
    /// SPKI PEM file, for `EdDSA`.
    pub public_key: Option<PathBuf>,
    /// base64url text file, for `HS*`.
    pub secret_file: Option<PathBuf>,
}

/// `[origin]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OriginSection {
    /// Allowed `Origin` values, `https://*.example.com` wildcards included.
    pub allow: Vec<String>,
    /// Whether a request without `Origin` (a non-browser client) is allowed.
    pub allow_missing: bool,
}

impl Default for OriginSection {
    fn default() -> Self {
        OriginSection {
            allow: Vec::new(),
            allow_missing: true,
        }
    }
}

/// `[limits]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// The whole request head must arrive by then.
    pub handshake_timeout: DurationStr,
    /// Request line + headers.
    pub max_request_bytes: ByteSize,
    /// Largest frame payload.
    pub max_frame: ByteSize,
    /// Largest message after reassembly.
    pub max_message: ByteSize,
    /// Ping after half of it, close after all of it.
    pub idle_timeout: DurationStr,
    /// Pending output per connection before backpressure.
    pub write_buffer: ByteSize,
    /// Open connections per client IP.
    pub per_ip_connections: u32,
    /// Upgrade attempts per client IP.
    pub per_ip_handshakes: Rate,
    /// Failed tokens per client IP.
    pub per_ip_auth_failures: Rate,
    /// Open connections per token subject.
    pub per_subject_connections: u32,
    /// Frames received per connection.
    pub messages: Rate,
    /// Payload bytes received per connection.
    pub bytes: ByteRate,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            handshake_timeout: DurationStr::secs(5),
            max_request_bytes: ByteSize(8 * 1024),
            max_frame: ByteSize(1 << 20),
            max_message: ByteSize(1 << 20),
            idle_timeout: DurationStr::secs(60),
            write_buffer: ByteSize(1 << 20),
            per_ip_connections: 256,
            per_ip_handshakes: Rate(50),
            per_ip_auth_failures: Rate(10),
            per_subject_connections: 32,
            messages: Rate(1000),
            bytes: ByteRate(8 << 20),
        }
    }
}

/// `[session]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSection {
    /// Only `"close"`.
    pub on_expiry: String,
    /// `"message"` or `"off"`.
    pub refresh: String,
    /// When `wsgate.expiring` is sent before `exp`.
    pub expiry_notice: DurationStr,
}

impl Default for SessionSection {
    fn default() -> Self {
        SessionSection {
            on_expiry: "close".to_owned(),
            refresh: "message".to_owned(),
            expiry_notice: DurationStr::secs(60),
        }
    }
}

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

/// One `[[route]]` as written. The upstream-only keys stay optional here so that setting
/// them on an `echo` route can be reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// Exact request path; required.
    pub path: Option<String>,
    /// Built-in backend: `"echo"`.
    pub backend: Option<String>,
    /// No token needed.
    pub public: bool,
    /// Scopes a token needs, all of them.
    pub scope: Vec<String>,
    /// Subprotocols this route may select.
    pub protocols: Vec<String>,
    /// `ws://` / `wss://` upstream URLs, round-robin.
    pub upstream: Option<Vec<String>>,
    /// Send `X-Auth-Claims` upstream (default false).
    pub forward_claims: Option<bool>,
    /// How long a failed upstream is skipped (default 10s).
    pub upstream_backoff: Option<DurationStr>,
    /// How long an upstream handshake may take (default 10s).
    pub upstream_timeout: Option<DurationStr>,
}

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
    /// `[[route]]`.
    pub route: Vec<RouteConfig>,
}

/// The keys allowed at the top level of the file.
pub const TOP_LEVEL_KEYS: [&str; 8] = [
    "server", "tls", "auth", "origin", "limits", "session", "admin", "route",
];

/// Accepts `"addr"` or `["addr", ...]`.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct OneOrMany;

    impl<'de> Visitor<'de> for OneOrMany {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a socket address like \"0.0.0.0:8080\" or an array of them")
        }

        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Vec<String>, E> {
            Ok(vec![value.to_owned()])
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut all = Vec::new();
            while let Some(one) = seq.next_element::<String>()? {
                all.push(one);
            }
            Ok(all)
        }
    }

    deserializer.deserialize_any(OneOrMany)
}

// ---------------------------------------------------------------------------------------
// The validated layer.
// ---------------------------------------------------------------------------------------

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
    /// `[[route]]`, in file order; paths are unique.
    pub routes: Vec<Route>,
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

/// `[server]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Listening addresses, at least one, none overlapping.
    pub listen: Vec<SocketAddr>,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// Connections past this get 503.
    pub max_connections: usize,
    /// How long SIGTERM waits.
    pub shutdown_grace: Duration,
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

/// `[auth]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// When set, `iss` must equal it.
    pub issuer: Option<String>,
    /// When set, `aud` must contain it.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` / `nbf` / `iat`.
    pub leeway: Duration,
    /// Token sources, in order; non-empty, no duplicates.
    pub sources: Vec<Source>,
    /// A longer token is 401 `invalid_token`, never decoded.
    pub max_token_bytes: usize,
    /// SPEC §4: explain refusals to browsers with 4401/4403 close codes.
    pub explain_to_browsers: bool,
    /// `[[auth.key]]`, read from disk, in file order; `kid`s are unique.
    pub keys: Vec<LoadedKey>,
    /// `[[auth.provider]]`, validated (their key sets are loaded by the runtime).
    pub providers: Vec<provider::ProviderSettings>,
}

/// Where a token may come from (SPEC §4, "Token sources").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// `query:NAME`: `?NAME=<jwt>`.
    Query(String),
    /// `protocol`: a `bearer.<jwt>` entry in `Sec-WebSocket-Protocol`.
    Protocol,
    /// `header`: `Authorization: Bearer <jwt>`.
    Header,
    /// `cookie:NAME`.
    Cookie(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Query(name) => write!(f, "query:{name}"),
            Source::Protocol => f.write_str("protocol"),
            Source::Header => f.write_str("header"),
            Source::Cookie(name) => write!(f, "cookie:{name}"),
        }
    }
}

/// A verification key read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedKey {
    /// Key id, when configured.
    pub kid: Option<String>,
    /// `"EdDSA"`, `"HS256"`, `"HS384"` or `"HS512"`.
    pub alg: String,
    /// The key itself.
    pub material: KeyMaterial,
    /// The file it came from, resolved against the config file's directory.
    pub path: PathBuf,
}

/// Key bytes; `Debug` never shows an HMAC secret.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// An Ed25519 SubjectPublicKeyInfo, DER (44 bytes: a fixed 12-byte prefix + the key).
    Ed25519Spki(Vec<u8>),
    /// An HMAC secret: the decoded bytes, at least as long as the hash output.
    HmacSecret(Vec<u8>),
    /// An RSA or EC SubjectPublicKeyInfo, DER, checked against its `alg` (SPEC §9).
    Spki(Vec<u8>),
}

impl KeyMaterial {
    /// The raw 32-byte Ed25519 public key inside the SPKI, for `ring::signature`.
    pub fn ed25519_public_key(&self) -> Option<&[u8]> {
        match self {
            KeyMaterial::Ed25519Spki(der) => der.get(ED25519_SPKI_PREFIX.len()..),
            KeyMaterial::HmacSecret(_) | KeyMaterial::Spki(_) => None,
        }
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyMaterial::Ed25519Spki(der) => f.debug_tuple("Ed25519Spki").field(der).finish(),
            KeyMaterial::Spki(der) => f.debug_tuple("Spki").field(der).finish(),
            KeyMaterial::HmacSecret(secret) => {
                write!(f, "HmacSecret(<{} bytes, redacted>)", secret.len())
            }
        }
    }
}

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410 §4): SEQUENCE,
/// AlgorithmIdentifier { OID 1.3.101.112 }, BIT STRING of 33 bytes (0 unused bits).
pub const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// `[origin]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Allowed origins, normalized: lower case, no default port (`https://x:443` ->
    /// `https://x`). An entry may start its host with `*.`.
    pub allow: Vec<String>,
    /// Whether a request without `Origin` is allowed.
    pub allow_missing: bool,
}

/// `[limits]`, resolved. Sizes are inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The whole request head must arrive by then.
    pub handshake_timeout: Duration,
    /// Request line + headers, leading CRLFs included.
    pub max_request_bytes: usize,
    /// Largest frame payload.
    pub max_frame: u64,
    /// Largest message after reassembly.
    pub max_message: u64,
    /// Ping after half of it, close after all of it.
    pub idle_timeout: Duration,
    /// Pending output per connection before backpressure.
    pub write_buffer: usize,
    /// Open connections per client IP.
    pub per_ip_connections: u32,
    /// Upgrade attempts per client IP per second (burst = rate).
    pub per_ip_handshakes: u64,
    /// Failed tokens per client IP per second (burst = rate).
    pub per_ip_auth_failures: u64,
    /// Open connections per token subject.
    pub per_subject_connections: u32,
    /// Frames received per connection per second (burst = rate).
    pub messages: u64,
    /// Payload bytes received per connection per second (burst = rate).
    pub bytes: u64,
}

/// `[session]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// What happens at `exp` (+ leeway).
    pub on_expiry: OnExpiry,
    /// In-band refresh (SPEC §6).
    pub refresh: Refresh,
    /// When `wsgate.expiring` is sent before `exp`.
    pub expiry_notice: Duration,
}

/// `session.on_expiry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExpiry {
    /// Close with 4401 "token expired".
    Close,
}

/// `session.refresh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// `{"type":"wsgate.refresh","token":"..."}` messages are honoured.
    Message,
    /// No in-band refresh.
    Off,
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

/// One `[[route]]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Exact path, starting with `/`.
    pub path: String,
    /// No token needed (and `scope` is empty).
    pub public: bool,
    /// Scopes a token needs, all of them (RFC 6749 §3.3 scope-tokens).
    pub scope: Vec<String>,
    /// Subprotocols this route may select (RFC 6455 §4.1 tokens).
    pub protocols: Vec<String>,
    /// Where messages go.
    pub backend: Backend,
}

/// A route's backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Every message comes back as sent.
    Echo,
    /// Proxied to upstream WebSocket servers, round-robin.
    Upstream {
        /// At least one.
        urls: Vec<UpstreamUrl>,
        /// Send `X-Auth-Claims`.
        forward_claims: bool,
        /// How long a failed upstream is skipped.
        backoff: Duration,
        /// How long an upstream handshake may take before 504.
        timeout: Duration,
    },
}

/// A parsed `ws://` or `wss://` upstream URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// As written in the config.
    pub url: String,
    /// `wss://`.
    pub secure: bool,
    /// Host name or IP address to connect to (IPv6 without brackets).
    pub host: String,
    /// Port, defaulted to 80 / 443.
    pub port: u16,
    /// The `Host` header value: the authority as written.
    pub host_header: String,
    /// Request path, starting with `/` (`/` when the URL has none); no query.
    pub path: String,
}

// ---------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Entry points.
// ---------------------------------------------------------------------------------------

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
    let mut config = validate::validate(&raw, base_dir, &mut problems);
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
    let mut config = validate::validate(&RawConfig::default(), Path::new(""), &mut problems);
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

// ---------------------------------------------------------------------------------------
// From TOML text to the serde layer, collecting every problem.
// ---------------------------------------------------------------------------------------

/// Parses the text into [`RawConfig`]; `None` only for a TOML syntax error.
fn raw_from_str(text: &str, problems: &mut Problems) -> Option<RawConfig> {
    let root: toml::Table = match toml::from_str(text) {
        Ok(root) => root,
        Err(error) => {
            problems.errors.push(ConfigError {
                path: String::new(),
                message: format!("TOML syntax: {}", error.message().trim_end()),
                line: error.span().map(|span| line_of(text, span.start)),
            });
            return None;
        }
    };
    let mut raw = RawConfig::default();
    for (key, value) in &root {
        match key.as_str() {
            "server" => raw.server = section(value, "server", problems),
            "tls" => raw.tls = Some(section(value, "tls", problems)),
            "auth" => raw.auth = auth_section(value, problems),
            "origin" => raw.origin = section(value, "origin", problems),
            "limits" => raw.limits = section(value, "limits", problems),
            "session" => raw.session = section(value, "session", problems),
            "admin" => raw.admin = Some(section(value, "admin", problems)),
            "route" => raw.route = array_of_tables(value, "route", problems),
            _ => problems.unparsed(key.clone(), unknown_key_message(key, &TOP_LEVEL_KEYS)),
        }
    }
    Some(raw)
}

/// `[auth]`: its `[[auth.key]]` array is taken apart so that each key gets its index.
fn auth_section(value: &toml::Value, problems: &mut Problems) -> AuthSection {
    let Some(table) = value.as_table() else {
        return section(value, "auth", problems);
    };
    let mut rest = table.clone();
    let keys = rest.remove("key");
    let providers = rest.remove("provider");
    let mut auth: AuthSection = section(&toml::Value::Table(rest), "auth", problems);
    if let Some(keys) = keys {
        auth.key = array_of_tables(&keys, "auth.key", problems);
    }
    if let Some(providers) = providers {
        auth.provider = array_of_tables(&providers, "auth.provider", problems);
    }
    auth
}

/// An array of tables (`[[route]]`), each element deserialized on its own as `path[i]`.
fn array_of_tables<T: DeserializeOwned + Default>(
    value: &toml::Value,
    path: &str,
    problems: &mut Problems,
) -> Vec<T> {
    let Some(items) = value.as_array() else {
        problems.unparsed(
            path.to_owned(),
            format!(
                "expected an array of tables ([[{path}]]), found {}",
                value.type_str()
            ),
        );
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| section(item, &format!("{path}[{index}]"), problems))
        .collect()
}

/// Deserializes one table. When that fails, each key is deserialized alone so that every
/// bad key is reported at its own path; the keys that parsed are kept.
fn section<T: DeserializeOwned + Default>(
    value: &toml::Value,
    path: &str,
    problems: &mut Problems,
) -> T {
    let Some(table) = value.as_table() else {
        problems.unparsed(
            path.to_owned(),
            format!("expected a table, found {}", value.type_str()),
        );
        return T::default();
    };
    let whole_error = match T::deserialize(value.clone()) {
        Ok(parsed) => return parsed,
        Err(error) => error,
    };
    let mut good = table.clone();
    for (key, item) in table {
        let mut alone = toml::Table::new();
        alone.insert(key.clone(), item.clone());
        if let Err(error) = T::deserialize(toml::Value::Table(alone)) {
            problems.unparsed(format!("{path}.{key}"), tidy(error.message()));
            good.remove(key);
        }
    }
    if good.len() == table.len() {
        // No key fails alone (every field has a default, so this is not expected).
        problems.unparsed(path.to_owned(), tidy(whole_error.message()));
        return T::default();
    }
    T::deserialize(toml::Value::Table(good)).unwrap_or_default()
}

/// Rewrites serde's wording into the config's: "key", "array", "integer".
fn tidy(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((name, expected)) = rest.split_once("`, ") {
            let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            return unknown_key_message(name, &candidates);
        }
    }
    message
        .trim_end()
        .replace("expected a sequence", "expected an array")
        .replace("expected usize", "expected a non-negative integer")
        .replace(
            "expected u32",
            "expected a non-negative integer (at most 4294967295)",
        )
}

/// "unknown key (did you mean `listen`?); expected one of `listen`, `workers`".
fn unknown_key_message(name: &str, candidates: &[&str]) -> String {
    let mut message = String::from("unknown key");
    if let Some(best) = closest(name, candidates) {
        message.push_str(&format!(" (did you mean `{best}`?)"));
    }
    if candidates.is_empty() {
        message.push_str("; this table takes no keys");
    } else {
        let list: Vec<String> = candidates.iter().map(|c| format!("`{c}`")).collect();
        message.push_str("; expected one of ");
        message.push_str(&list.join(", "));
    }
    message
}

/// The candidate within a small edit distance of `name`, if any.
fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|candidate| (edit_distance(name, candidate), *candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Edit distance counting insertions, deletions, substitutions and swaps of two
/// neighbours (optimal string alignment), so `scpoe` is one edit from `scope`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut table = vec![0usize; (a.len() + 1) * width];
    let cell = |i: usize, j: usize| i * width + j;
    for i in 0..=a.len() {
        table[cell(i, 0)] = i;
    }
    for j in 0..=b.len() {
        table[cell(0, j)] = j;
    }
    // Indexing is in bounds: i <= a.len() and j <= b.len() by the loop ranges.
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (table[cell(i - 1, j)] + 1)
                .min(table[cell(i, j - 1)] + 1)
                .min(table[cell(i - 1, j - 1)] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(table[cell(i - 2, j - 2)] + 1);
            }
            table[cell(i, j)] = best;
        }
    }
    table[cell(a.len(), b.len())]
}

// ---------------------------------------------------------------------------------------
// Line numbers: a tree of spans, looked up by key path.
// ---------------------------------------------------------------------------------------

// toml 0.8 (through serde_spanned 0.6) hands a span to a `deserialize_struct` call with
// these names. `toml::Spanned` itself cannot be used: it fails on a table that has no
// span (an implicit `auth` created by `[[auth.key]]`). If a later toml stops answering to
// these names, values simply come back without spans and errors without line numbers.
const SPANNED: &str = "$__serde_spanned_private_Spanned";
const SPAN_START: &str = "$__serde_spanned_private_start";
const SPAN_END: &str = "$__serde_spanned_private_end";
const SPAN_VALUE: &str = "$__serde_spanned_private_value";

/// A value of the document with its byte span, when toml knows it.
struct Located {
    span: Option<Range<usize>>,
    node: Node,
}

/// The shape of the document.
enum Node {
    Table(Vec<(String, Located)>),
    Array(Vec<Located>),
    Scalar,
}

/// Builds a [`Node`] from any value.
struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Node::Table(entries))
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

/// Builds a [`Located`]: the span form when toml offers it, a plain value otherwise.
struct LocatedVisitor;

impl LocatedVisitor {
    fn plain(node: Node) -> Located {
        Located { span: None, node }
    }
}

impl<'de> Visitor<'de> for LocatedVisitor {
    type Value = Located;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Located, E> {
        Ok(Self::plain(Node::Scalar))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Located, E> {
        Ok(Self::plain(Node::Scalar))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Located, E> {
        Ok(Self::plain(Node::Scalar))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Located, E> {
        Ok(Self::plain(Node::Scalar))
    }

    fn visit_str<E>(self, _: &str) -> Result<Located, E> {
        Ok(Self::plain(Node::Scalar))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Located, A::Error> {
        NodeVisitor.visit_seq(seq).map(Self::plain)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Located, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Ok(Self::plain(Node::Table(Vec::new())));
        };
        if first != SPAN_START {
            let mut entries = vec![(first, map.next_value()?)];
            while let Some(key) = map.next_key::<String>()? {
                entries.push((key, map.next_value()?));
            }
            return Ok(Self::plain(Node::Table(entries)));
        }
        let start: usize = map.next_value()?;
        let mut end = start;
        let mut node = Node::Scalar;
        while let Some(key) = map.next_key::<String>()? {
            if key == SPAN_END {
                end = map.next_value()?;
            } else if key == SPAN_VALUE {
                node = map.next_value()?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(Located {
            span: Some(start..end),
            node,
        })
    }
}

impl<'de> Deserialize<'de> for Located {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct(
            SPANNED,
            &[SPAN_START, SPAN_END, SPAN_VALUE],
            LocatedVisitor,
        )
    }
}

/// The span of the deepest value on `path` (`route[1].scope[0]`) that has one.
fn locate(root: &Located, path: &str) -> Option<Range<usize>> {
    if path.is_empty() {
        return None;
    }
    let mut node = root;
    let mut found = None;
    for segment in path.split('.') {
        let mut parts = segment.split('[');
        let key = parts.next().unwrap_or_default();
        let Node::Table(entries) = &node.node else {
            return found;
        };
        let Some((_, child)) = entries.iter().find(|(name, _)| name == key) else {
            return found;
        };
        node = child;
        found = node.span.clone().or(found);
        for index in parts {
            let Some(index) = index
                .strip_suffix(']')
                .and_then(|i| i.parse::<usize>().ok())
            else {
                return found;
            };
            let Node::Array(items) = &node.node else {
                return found;
            };
            let Some(item) = items.get(index) else {
                return found;
            };
            node = item;
            found = node.span.clone().or(found);
        }
    }
    found
}

/// Joins a multi-line message (toml's syntax errors have two lines) into one line.
fn one_line(text: &str) -> String {
    escape_controls(
        &text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// Escapes control characters (a quoted TOML key may contain a newline).
fn escape_controls(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let before = text.as_bytes().get(..offset).unwrap_or(text.as_bytes());
    before.iter().filter(|&&byte| byte == b'\n').count() + 1
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        parse_str(text, Path::new("/nonexistent"), "wsgate.toml")
            .unwrap_err()
            .lines()
    }

    fn has(lines: &[String], expected: &str) -> bool {
        lines.iter().any(|line| line.contains(expected))
    }

    const BASE: &str = "[server]\nlisten = \"127.0.0.1:8080\"\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n";

    #[test]
    fn unknown_keys_are_refused_at_every_level_with_their_path() {
        let cases = [
            ("[serverr]\n", "wsgate.toml: serverr: unknown key (did you mean `server`?); expected one of `server`, `tls`"),
            ("[[routes]]\npath = \"/x\"\n", "routes: unknown key (did you mean `route`?)"),
            ("[tls]\ncert = \"c\"\nkey = \"k\"\nchain = \"x\"\n", "tls.chain: unknown key"),
            ("[auth]\nissuers = \"x\"\n", "auth.issuers: unknown key (did you mean `issuer`?)"),
            ("[[auth.key]]\nalg = \"EdDSA\"\npublic_key = \"k\"\npublickey = \"k\"\n", "auth.key[0].publickey: unknown key (did you mean `public_key`?)"),
            ("[origin]\nallowed = []\n", "origin.allowed: unknown key (did you mean `allow`?)"),
            ("[limits]\nmax_frames = \"1MiB\"\n", "limits.max_frames: unknown key (did you mean `max_frame`?)"),
            ("[session]\nrefresh_mode = \"off\"\n", "session.refresh_mode: unknown key"),
            ("[admin]\nlisten = \"127.0.0.1:9\"\nscope = \"x\"\n", "admin.scope: unknown key"),
            ("[[route]]\npath = \"/q\"\nbackend = \"echo\"\npublic = true\nscopes = [\"a\"]\n", "route[1].scopes: unknown key (did you mean `scope`?)"),
        ];
        for (extra, expected) in cases {
            let lines = errors(&format!("{BASE}{extra}"));
            assert!(has(&lines, expected), "{expected:?} not in {lines:#?}");
        }
        let lines = errors(&format!("nonsense = 1\n{BASE}"));
        assert!(
            has(
                &lines,
                "wsgate.toml: nonsense: unknown key; expected one of `server`"
            ),
            "{lines:#?}"
        );
        // The server section given twice over: unknown keys next to good ones.
        let lines = errors("[server]\nlisten = \"127.0.0.1:8080\"\nlisen = \"x\"\nworker = 2\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n");
        assert!(
            has(&lines, "server.lisen: unknown key (did you mean `listen`?)"),
            "{lines:#?}"
        );
        assert!(
            has(
                &lines,
                "server.worker: unknown key (did you mean `workers`?)"
            ),
            "{lines:#?}"
        );
        assert_eq!(lines.len(), 2, "{lines:#?}");
    }

    #[test]
    fn unknown_key_lines_point_at_the_key() {
        let lines = errors("[server]\nlisten = \"127.0.0.1:8080\"\n\n[limits]\nmax_frame = \"1MiB\"\nmax_fram = \"1MiB\"\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n");
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(
            lines[0].starts_with("wsgate.toml: limits.max_fram: unknown key"),
            "{}",
            lines[0]
        );
        assert!(lines[0].ends_with("(line 6)"), "{}", lines[0]);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let lines = errors("[server]\nlisten = \"127.0.0.1:8080\"\nworkers = \n");
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("wsgate.toml: TOML syntax: "),
            "{}",
            lines[0]
        );
        assert!(lines[0].ends_with("(line 3)"), "{}", lines[0]);
        let lines = errors("[server\nlisten = 1\n");
        assert_eq!(lines.len(), 1);
        assert!(!lines[0].contains('\n'));
        assert!(
            lines[0].starts_with("wsgate.toml: TOML syntax: invalid table header; expected"),
            "{}",
            lines[0]
        );
        let lines = errors(&format!("\"a\\nb\" = 1\n{BASE}"));
        assert!(
            lines[0].starts_with("wsgate.toml: a\\nb: unknown key"),
            "{}",
            lines[0]
        );
        // A repeated key is a syntax error too: it must not silently override.
        let lines = errors("[server]\nlisten = \"127.0.0.1:8080\"\nlisten = \"127.0.0.1:9\"\n");
        assert!(has(&lines, "duplicate key"), "{lines:#?}");
        assert!(lines[0].ends_with("(line 3)"), "{}", lines[0]);
    }

    #[test]
    fn sections_of_the_wrong_shape() {
        let lines = errors("server = 5\nroute = 3\n");
        // Nothing about what is inside them ("server.listen: required", "route: at least one").
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(
            has(
                &lines,
                "wsgate.toml: server: expected a table, found integer (line 1)"
            ),
            "{lines:#?}"
        );
        assert!(has(&lines, "wsgate.toml: route: expected an array of tables ([[route]]), found integer (line 2)"), "{lines:#?}");
        let lines = errors(&format!("{BASE}[auth]\nkey = \"k\"\n"));
        assert!(
            has(
                &lines,
                "auth.key: expected an array of tables ([[auth.key]]), found string"
            ),
            "{lines:#?}"
        );
        let lines = errors(&format!("{BASE}[[auth.key]]\nalg = 5\n"));
        assert!(
            has(
                &lines,
                "auth.key[0].alg: invalid type: integer `5`, expected a string"
            ),
            "{lines:#?}"
        );
        // Only that error: the missing-alg rule does not repeat it.
        assert_eq!(lines.len(), 1, "{lines:#?}");
    }

    #[test]
    fn type_errors_name_the_key_and_the_format() {
        let lines = errors(&format!("{BASE}[limits]\nidle_timeout = \"60\"\nmessages = 5\n[auth]\nexplain_to_browsers = \"yes\"\n"));
        assert!(has(&lines, "limits.idle_timeout: expected a duration like \"30s\" (units: ms, s, m, h, d), got \"60\": the unit is missing"), "{lines:#?}");
        assert!(
            has(
                &lines,
                "limits.messages: invalid type: integer `5`, expected a rate like \"50/s\""
            ),
            "{lines:#?}"
        );
        assert!(
            has(
                &lines,
                "auth.explain_to_browsers: invalid type: string \"yes\", expected a boolean"
            ),
            "{lines:#?}"
        );
        assert_eq!(lines.len(), 3, "{lines:#?}");
        let lines = errors(&format!(
            "{BASE}[limits]\nidle_timeout = 1979-05-27\nmax_frame = 1.5\n"
        ));
        assert!(has(&lines, "limits.idle_timeout: expected a duration like \"30s\" (units: ms, s, m, h, d), got \"1979-05-27\""), "{lines:#?}");
        assert!(
            has(
                &lines,
                "limits.max_frame: invalid type: floating point `1.5`, expected a size"
            ),
            "{lines:#?}"
        );
        assert!(lines[0].ends_with("(line 8)"), "{lines:#?}");
    }

    #[test]
    fn load_reads_the_file_and_resolves_against_its_directory() {
        let dir = std::env::temp_dir().join(format!("wsgate-config-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wsgate.toml");
        std::fs::write(
            &path,
            format!("{BASE}[admin]\nlisten = \"127.0.0.1:9\"\nrevocation_log = \"data/r.log\"\n"),
        )
        .unwrap();
        let config = load(&path);
        let missing = load(&dir.join("missing.toml"));
        std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        let not_utf8 = load(&path);
        std::fs::write(&path, vec![b'#'; (MAX_CONFIG_BYTES + 1) as usize]).unwrap();
        let too_large = load(&path);
        let _ = std::fs::remove_dir_all(&dir);

        let config = config.unwrap();
        assert_eq!(config.source_path, path);
        assert_eq!(
            config.admin.unwrap().revocation_log,
            Some(dir.join("data/r.log"))
        );
        let missing = missing.unwrap_err().lines();
        assert_eq!(missing.len(), 1);
        assert!(
            missing[0]
                .ends_with("missing.toml: cannot read: No such file or directory (os error 2)"),
            "{}",
            missing[0]
        );
        assert!(not_utf8
            .unwrap_err()
            .to_string()
            .ends_with("wsgate.toml: not UTF-8 text (TOML files are UTF-8)"));
        assert!(too_large
            .unwrap_err()
            .to_string()
            .ends_with("wsgate.toml: larger than 1MiB"));
    }

    #[test]
    fn parse_str_labels_errors_and_source() {
        let config = parse_str(BASE, Path::new("."), "custom.toml").unwrap();
        assert_eq!(config.source_path, PathBuf::from("custom.toml"));
        let error = parse_str("[server]\n", Path::new("."), "custom.toml").unwrap_err();
        assert_eq!(error.file, "custom.toml");
        assert!(
            error
                .to_string()
                .starts_with("custom.toml: server.listen: required"),
            "{error}"
        );
    }

    #[test]
    fn raw_defaults_are_the_spec_values() {
        let server = ServerSection::default();
        assert_eq!((server.workers, server.max_connections), (0, 100_000));
        assert_eq!(server.shutdown_grace.to_string(), "10s");
        let auth = AuthSection::default();
        assert_eq!(auth.leeway.to_string(), "30s");
        assert_eq!(
            auth.sources,
            ["query:access_token", "query:token", "protocol", "header"]
        );
        assert_eq!(auth.max_token_bytes.to_string(), "4KiB");
        assert!(!auth.explain_to_browsers);
        let limits = LimitsSection::default();
        let shown = [
            limits.handshake_timeout.to_string(),
            limits.max_request_bytes.to_string(),
            limits.max_frame.to_string(),
            limits.max_message.to_string(),
            limits.idle_timeout.to_string(),
            limits.write_buffer.to_string(),
            limits.per_ip_connections.to_string(),
            limits.per_ip_handshakes.to_string(),
            limits.per_ip_auth_failures.to_string(),
            limits.per_subject_connections.to_string(),
            limits.messages.to_string(),
            limits.bytes.to_string(),
        ];
        assert_eq!(
            shown,
            [
                "5s", "8KiB", "1MiB", "1MiB", "1m", "1MiB", "256", "50/s", "10/s", "32", "1000/s",
                "8MiB/s"
            ]
        );
        let session = SessionSection::default();
        assert_eq!(
            (session.on_expiry.as_str(), session.refresh.as_str()),
            ("close", "message")
        );
        assert_eq!(session.expiry_notice.to_string(), "1m");
        let origin = OriginSection::default();
        assert!(origin.allow.is_empty() && origin.allow_missing);
        let admin = AdminSection::default();
        assert_eq!(admin.token_scope, "wsgate:admin");
        assert_eq!(admin.revocation_retention.to_string(), "7d");
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        assert_eq!(closest("lisen", &["listen", "workers"]), Some("listen"));
        assert_eq!(closest("xyz", &["listen", "workers"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("scpoe", "scope"), 1);
        assert_eq!(edit_distance("same", "same"), 0);
        assert_eq!(
            unknown_key_message("a", &[]),
            "unknown key; this table takes no keys"
        );
    }

    #[test]
    fn line_lookup_follows_paths() {
        let text = "[server]\nlisten = [\"a\",\n  \"b\"]\n[[route]]\npath = \"/a\"\n[[route]]\npath = \"/b\"\n";
        let tree: Located = toml::from_str(text).unwrap();
        let line = |path: &str| locate(&tree, path).map(|span| line_of(text, span.start));
        assert_eq!(line("server.listen[1]"), Some(3));
        assert_eq!(line("route[1].path"), Some(7));
        assert_eq!(line("route[1].missing"), Some(6));
        assert_eq!(line("route[5]"), Some(4));
        assert_eq!(line("nothing"), None);
        // An implicit table (`auth`, made by `[[auth.key]]`) has no span of its own.
        let text = "[[auth.key]]\nalg = \"EdDSA\"\n\n[[auth.key]]\nkid = \"b\"\n";
        let tree: Located = toml::from_str(text).unwrap();
        assert_eq!(
            locate(&tree, "auth.key[1].kid").map(|span| line_of(text, span.start)),
            Some(5)
        );
        assert_eq!(
            locate(&tree, "auth.key[1].alg").map(|span| line_of(text, span.start)),
            Some(4)
        );
        assert_eq!(line(""), None);
    }
}
