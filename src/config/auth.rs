//! `[auth]` and `[[auth.key]]`: token sources, claim rules, and the key material read
//! from disk (SPEC §3, §5).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::SubjectPublicKeyInfoDer;
use serde::Deserialize;

use super::origin::OriginSection;
use super::tls::{pem_problem, warn_if_world_readable};
use super::units::{ByteSize, DurationStr};
use super::{read_file_capped, to_usize, Problems, MAX_KEY_FILE_BYTES};

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
    /// SPEC §3: `exp - iat` (`exp - now` without `iat`) above it is refused.
    pub max_lifetime: DurationStr,
    /// SPEC §4: close with 4401/4403 instead of an HTTP status for browsers.
    pub explain_to_browsers: bool,
    /// `[[auth.key]]`.
    pub key: Vec<KeyConfig>,
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
            max_lifetime: DurationStr::secs(24 * 3600),
            explain_to_browsers: false,
            key: Vec::new(),
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
    /// SPEC §3: the longest lifetime a token may claim (`exp - iat`, or `exp - now`
    /// without `iat`); longer is 401 `invalid_token` at the handshake and on refresh, so
    /// revocation retention always outlives the tokens it revokes.
    pub max_lifetime: Duration,
    /// SPEC §4: explain refusals to browsers with 4401/4403 close codes.
    pub explain_to_browsers: bool,
    /// `[[auth.key]]`, read from disk, in file order; `kid`s are unique.
    pub keys: Vec<LoadedKey>,
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
}

impl KeyMaterial {
    /// The raw 32-byte Ed25519 public key inside the SPKI, for `ring::signature`.
    pub fn ed25519_public_key(&self) -> Option<&[u8]> {
        match self {
            KeyMaterial::Ed25519Spki(der) => der.get(ED25519_SPKI_PREFIX.len()..),
            KeyMaterial::HmacSecret(_) => None,
        }
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyMaterial::Ed25519Spki(der) => f.debug_tuple("Ed25519Spki").field(der).finish(),
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

/// `auth.max_token_bytes` ceiling.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// `auth.leeway` past this gets a warning.
const MAX_QUIET_LEEWAY: Duration = Duration::from_secs(5 * 60);

/// The algorithms `auth.key[].alg` may name.
const ALGORITHMS: &str = "EdDSA, HS256, HS384, HS512";

/// base64url, padded or not (SPEC §2: the `.secret` file format).
const BASE64URL_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub(super) fn auth(
    raw: &AuthSection,
    origin: &OriginSection,
    base_dir: &Path,
    problems: &mut Problems,
) -> Auth {
    for (at, value) in [
        ("auth.issuer", &raw.issuer),
        ("auth.audience", &raw.audience),
    ] {
        if value.as_deref() == Some("") {
            problems.error(at, "must not be empty (leave it out to skip the check)");
        }
    }
    if raw.leeway.0 > MAX_QUIET_LEEWAY {
        problems.warn(format!(
            "auth.leeway: {} of allowed clock skew lets every token live that much longer",
            raw.leeway
        ));
    }
    let max_token_bytes = raw.max_token_bytes.0;
    if max_token_bytes == 0 || max_token_bytes > MAX_TOKEN_BYTES {
        problems.error(
            "auth.max_token_bytes",
            format!(
                "must be between 1B and {}, got {}",
                ByteSize(MAX_TOKEN_BYTES),
                raw.max_token_bytes
            ),
        );
    }
    if raw.max_lifetime.0.as_secs() == 0 {
        problems.error(
            "auth.max_lifetime",
            format!(
                "must be at least 1s, got {} (every token would be refused)",
                raw.max_lifetime
            ),
        );
    }
    Auth {
        issuer: raw.issuer.clone(),
        audience: raw.audience.clone(),
        leeway: raw.leeway.0,
        sources: sources(&raw.sources, origin, problems),
        max_token_bytes: to_usize(max_token_bytes),
        max_lifetime: raw.max_lifetime.0,
        explain_to_browsers: raw.explain_to_browsers,
        keys: keys(&raw.key, base_dir, problems),
    }
}

fn sources(raw: &[String], origin: &OriginSection, problems: &mut Problems) -> Vec<Source> {
    if raw.is_empty() {
        problems.error(
            "auth.sources",
            "must list at least one of \"query:NAME\", \"protocol\", \"header\", \"cookie:NAME\"",
        );
    }
    let mut sources: Vec<Source> = Vec::new();
    for (index, text) in raw.iter().enumerate() {
        let at = format!("auth.sources[{index}]");
        let source = match text.split_once(':') {
            None if text == "protocol" => Source::Protocol,
            None if text == "header" => Source::Header,
            Some((kind @ ("query" | "cookie"), name)) => {
                if name.is_empty() || !name.bytes().all(is_name_byte) {
                    problems.error(
                        at,
                        format!(
                            "{kind}:NAME needs a name of letters, digits, '_', '.' or '-', got {text:?}"
                        ),
                    );
                    continue;
                }
                if kind == "query" {
                    Source::Query(name.to_owned())
                } else {
                    Source::Cookie(name.to_owned())
                }
            }
            _ => {
                problems.error(
                    at,
                    format!(
                        "unknown source {text:?}; expected \"query:NAME\", \"protocol\", \
                         \"header\" or \"cookie:NAME\""
                    ),
                );
                continue;
            }
        };
        if sources.contains(&source) {
            problems.error(at, format!("duplicate source {text:?}"));
            continue;
        }
        // SPEC §4: cookies ride along on cross-site requests, so a cookie token is only
        // safe when the Origin check refuses every other site and origin-less requests.
        if matches!(source, Source::Cookie(_)) && (origin.allow.is_empty() || origin.allow_missing)
        {
            problems.error(
                at,
                format!(
                    "{text} needs a non-empty origin.allow and origin.allow_missing = false: \
                     cookies ride along on cross-site requests"
                ),
            );
        }
        sources.push(source);
    }
    sources
}

/// `[A-Za-z0-9_.-]`: the characters of a `query:` / `cookie:` source name.
fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-')
}

fn keys(raw: &[KeyConfig], base_dir: &Path, problems: &mut Problems) -> Vec<LoadedKey> {
    let mut kids: HashMap<&str, usize> = HashMap::new();
    let mut keys = Vec::new();
    for (index, key) in raw.iter().enumerate() {
        let at = format!("auth.key[{index}]");
        if let Some(kid) = key.kid.as_deref() {
            if kid.is_empty() {
                problems.error(
                    format!("{at}.kid"),
                    "must not be empty (leave it out for no kid)",
                );
            } else if let Some(first) = kids.insert(kid, index) {
                problems.error(
                    format!("{at}.kid"),
                    format!("duplicate kid {kid:?} (also auth.key[{first}].kid)"),
                );
            }
        }
        if let Some(loaded) = load_key(key, &at, base_dir, problems) {
            keys.push(loaded);
        }
    }
    keys
}

/// Checks a key's algorithm and file keys, and reads the file.
fn load_key(
    key: &KeyConfig,
    at: &str,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<LoadedKey> {
    // RFC 7518 §3.2: "A key of the same size as the hash output ... or larger MUST be
    // used" with HS256 / HS384 / HS512.
    let min_secret_bytes = match key.alg.as_str() {
        "EdDSA" => None,
        "HS256" => Some(32),
        "HS384" => Some(48),
        "HS512" => Some(64),
        "" => {
            problems.error(
                format!("{at}.alg"),
                format!("required: one of {ALGORITHMS}"),
            );
            return None;
        }
        "none" => {
            // RFC 8725 §3.1 / SPEC §4: `none` can never be accepted.
            problems.error(
                format!("{at}.alg"),
                format!("\"none\" is never accepted; expected one of {ALGORITHMS}"),
            );
            return None;
        }
        other => {
            problems.error(
                format!("{at}.alg"),
                format!("unknown algorithm {other:?}; expected one of {ALGORITHMS}"),
            );
            return None;
        }
    };
    let alg = key.alg.as_str();
    match (&key.public_key, &key.secret_file, min_secret_bytes) {
        (Some(_), Some(_), _) => {
            problems.error(
                at,
                "set public_key (EdDSA) or secret_file (HS256/HS384/HS512), not both",
            );
            None
        }
        (None, None, None) => {
            problems.error(
                format!("{at}.public_key"),
                "required for alg = \"EdDSA\": an SPKI PEM file (PREFIX.pub.pem from wsgate keygen)",
            );
            None
        }
        (None, None, Some(_)) => {
            problems.error(
                format!("{at}.secret_file"),
                format!("required for alg = {alg:?}: a base64url text file (PREFIX.secret from wsgate keygen)"),
            );
            None
        }
        (None, Some(_), None) => {
            problems.error(
                format!("{at}.secret_file"),
                "alg = \"EdDSA\" verifies with a public key: use public_key, not secret_file",
            );
            None
        }
        (Some(_), None, Some(_)) => {
            problems.error(
                format!("{at}.public_key"),
                format!("alg = {alg:?} is an HMAC: use secret_file, not public_key"),
            );
            None
        }
        (Some(file), None, None) => {
            let path = base_dir.join(file);
            let at = format!("{at}.public_key");
            let der = read_ed25519_spki(&path, &at, problems)?;
            Some(LoadedKey {
                kid: key.kid.clone(),
                alg: alg.to_owned(),
                material: KeyMaterial::Ed25519Spki(der),
                path,
            })
        }
        (None, Some(file), Some(min_bytes)) => {
            let path = base_dir.join(file);
            let at = format!("{at}.secret_file");
            let secret = read_hmac_secret(&path, alg, min_bytes, &at, problems)?;
            Some(LoadedKey {
                kid: key.kid.clone(),
                alg: alg.to_owned(),
                material: KeyMaterial::HmacSecret(secret),
                path,
            })
        }
    }
}

/// Reads a `PUBLIC KEY` PEM file holding an Ed25519 key (RFC 8410 §4).
fn read_ed25519_spki(path: &Path, at: &str, problems: &mut Problems) -> Option<Vec<u8>> {
    let bytes = match read_file_capped(path, MAX_KEY_FILE_BYTES) {
        Ok(bytes) => bytes,
        Err(error) => {
            problems.error(at, format!("{}: {error}", path.display()));
            return None;
        }
    };
    let spki = match SubjectPublicKeyInfoDer::from_pem_slice(&bytes) {
        Ok(spki) => spki,
        Err(pem::Error::NoItemsFound) => {
            let is_private = bytes.windows(11).any(|window| window == b"PRIVATE KEY");
            let message = if is_private {
                "holds a private key; give the public key (PREFIX.pub.pem from wsgate keygen)"
            } else {
                "no PEM \"PUBLIC KEY\" block found"
            };
            problems.error(at, format!("{}: {message}", path.display()));
            return None;
        }
        Err(error) => {
            problems.error(at, format!("{}: {}", path.display(), pem_problem(&error)));
            return None;
        }
    };
    let der: &[u8] = spki.as_ref();
    if der.len() != ED25519_SPKI_PREFIX.len() + 32 || !der.starts_with(&ED25519_SPKI_PREFIX) {
        problems.error(
            at,
            format!(
                "{}: not an Ed25519 public key (expected an RFC 8410 SubjectPublicKeyInfo, \
                 OID 1.3.101.112)",
                path.display()
            ),
        );
        return None;
    }
    Some(der.to_vec())
}

/// Reads an HMAC secret: base64url text, padded or not, surrounding whitespace ignored.
/// Errors never quote the file.
fn read_hmac_secret(
    path: &Path,
    alg: &str,
    min_bytes: usize,
    at: &str,
    problems: &mut Problems,
) -> Option<Vec<u8>> {
    let bytes = match read_file_capped(path, MAX_KEY_FILE_BYTES) {
        Ok(bytes) => bytes,
        Err(error) => {
            problems.error(at, format!("{}: {error}", path.display()));
            return None;
        }
    };
    warn_if_world_readable(path, at, problems);
    let Ok(secret) = BASE64URL_ANY_PADDING.decode(bytes.trim_ascii()) else {
        problems.error(
            at,
            format!(
                "{}: not base64url text (A-Z a-z 0-9 - _, optional '=' padding, on one line)",
                path.display()
            ),
        );
        return None;
    };
    if secret.len() < min_bytes {
        problems.error(
            at,
            format!(
                "{}: the secret is {} bytes; {alg} needs at least {min_bytes} (RFC 7518 §3.2)",
                path.display(),
                secret.len()
            ),
        );
        return None;
    }
    Some(secret)
}
