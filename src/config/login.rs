//! `[login]`: the token service (SPEC §11): its listener, the users file, the signing key,
//! the issuer, token lifetimes, the refresh-token store and the failed-login budget.
//!
//! The section is optional and, when present, has no default for `listen`, `users`,
//! `signing_key`, `issuer` or `store`: each names something only the operator can choose.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::PrivatePkcs8KeyDer;

use super::server::{overlaps, socket_address};
use super::tls::{pem_problem, warn_if_world_readable};
use super::units::DurationStr;
use super::{read_file_capped, Problems, MAX_KEY_FILE_BYTES};

/// `[login]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginSection {
    /// Socket address of the login listener.
    pub listen: Option<String>,
    /// The users file that `wsgate user add` writes.
    pub users: Option<PathBuf>,
    /// Ed25519 PKCS#8 private key PEM that signs access tokens.
    pub signing_key: Option<PathBuf>,
    /// Header `kid` of issued tokens; default: the key's RFC 7638 thumbprint.
    pub kid: Option<String>,
    /// `iss` of issued tokens.
    pub issuer: Option<String>,
    /// Lifetime of an access token.
    pub access_ttl: DurationStr,
    /// Absolute lifetime of a refresh-token family, from the login.
    pub refresh_ttl: DurationStr,
    /// The durable store of refresh-token families.
    pub store: Option<PathBuf>,
    /// Failed logins allowed per user and per address.
    pub failures: FailureRate,
}

impl Default for LoginSection {
    fn default() -> Self {
        LoginSection {
            listen: None,
            users: None,
            signing_key: None,
            kid: None,
            issuer: None,
            access_ttl: DurationStr::secs(5 * 60),
            refresh_ttl: DurationStr::secs(30 * 86_400),
            store: None,
            failures: FailureRate {
                count: 5,
                period: Duration::from_secs(60),
            },
        }
    }
}

/// `"5/m"`: so many events per second, minute or hour; a bucket of `count` that refills
/// `count` per `period`. Never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureRate {
    /// Events per period, also the burst.
    pub count: u32,
    /// The period: one second, minute or hour.
    pub period: Duration,
}

impl FromStr for FailureRate {
    type Err = String;

    fn from_str(input: &str) -> Result<Self, String> {
        let bad = || {
            format!("expected a rate like \"5/m\" (a whole number per s, m or h), got {input:?}")
        };
        let (count, unit) = input.split_once('/').ok_or_else(bad)?;
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let count: u32 = count.parse().map_err(|_| bad())?;
        let period = match unit {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(format!("{}: a rate must be above zero", bad()));
        }
        Ok(FailureRate { count, period })
    }
}

impl fmt::Display for FailureRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl<'de> Deserialize<'de> for FailureRate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RateVisitor;
        impl Visitor<'_> for RateVisitor {
            type Value = FailureRate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a rate like \"5/m\" (a whole number per s, m or h)")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<FailureRate, E> {
                value.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(RateVisitor)
    }
}

/// PKCS#8 DER of the login signing key. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyDer(pub Vec<u8>);

impl fmt::Debug for SigningKeyDer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKeyDer({} bytes, redacted)", self.0.len())
    }
}

/// `[login]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// Login listener address (distinct from every other listener).
    pub listen: SocketAddr,
    /// The users file, resolved (it may not exist yet: `user add` creates it).
    pub users: PathBuf,
    /// The signing key file, resolved.
    pub signing_key_path: PathBuf,
    /// The signing key (Ed25519 PKCS#8 DER), read at load.
    pub signing_key: SigningKeyDer,
    /// The signing key's public half (32 bytes, RFC 8032).
    pub public_key: Vec<u8>,
    /// Header `kid`: as configured, else the key's RFC 7638 thumbprint.
    pub kid: String,
    /// `iss` of issued tokens.
    pub issuer: String,
    /// Access token lifetime.
    pub access_ttl: Duration,
    /// Refresh-token family lifetime.
    pub refresh_ttl: Duration,
    /// The store file, resolved.
    pub store: PathBuf,
    /// Failed logins per user and per address.
    pub failures: FailureRate,
}

/// What the `[login]` rules need from the rest of the file.
pub(super) struct Around<'a> {
    pub server_listen: &'a [SocketAddr],
    pub admin_listen: Option<SocketAddr>,
    pub auth_issuer: Option<&'a str>,
    /// The `kid`s of `[[auth.key]]`.
    pub static_kids: Vec<&'a str>,
    /// `auth.max_lifetime`.
    pub max_lifetime: Duration,
}

fn required<'a, T>(
    value: &'a Option<T>,
    key: &str,
    example: &str,
    problems: &mut Problems,
) -> Option<&'a T> {
    if value.is_none() {
        problems.error(format!("login.{key}"), format!("required: {example}"));
    }
    value.as_ref()
}

/// RFC 7638 thumbprint of an Ed25519 public key: SHA-256 over the required JWK members in
/// lexicographic order, base64url.
pub fn thumbprint(public: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        b64.encode(public)
    );
    b64.encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    ))
}

/// Reads an Ed25519 PKCS#8 `PRIVATE KEY` PEM file (what `wsgate keygen --alg EdDSA` writes).
fn read_signing_key(path: &Path, problems: &mut Problems) -> Option<SigningKeyDer> {
    let at = "login.signing_key";
    let bytes = match read_file_capped(path, MAX_KEY_FILE_BYTES) {
        Ok(bytes) => bytes,
        Err(error) => {
            problems.error(at, format!("{}: {error}", path.display()));
            return None;
        }
    };
    let der = match PrivatePkcs8KeyDer::from_pem_slice(&bytes) {
        Ok(der) => der,
        Err(error) => {
            problems.error(at, format!("{}: {}", path.display(), pem_problem(&error)));
            return None;
        }
    };
    // `maybe_unchecked` also reads PKCS#8 v1 files (openssl genpkey -algorithm ed25519).
    if ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der()).is_err()
    {
        problems.error(
            at,
            format!("{}: not an Ed25519 PKCS#8 private key", path.display()),
        );
        return None;
    }
    warn_if_world_readable(path, at, problems);
    Some(SigningKeyDer(der.secret_pkcs8_der().to_vec()))
}

fn refresh_ttl_shorter(raw: &LoginSection) -> bool {
    raw.refresh_ttl.0 < raw.access_ttl.0
}

pub(super) fn login(
    raw: &LoginSection,
    around: &Around<'_>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<Login> {
    let listen = required(
        &raw.listen,
        "listen",
        "an address like \"127.0.0.1:8081\"",
        problems,
    )
    .and_then(|text| socket_address("login.listen", text, problems));
    if let Some(listen) = listen {
        if let Some(index) = around
            .server_listen
            .iter()
            .position(|s| overlaps(*s, listen))
        {
            problems.error(
                "login.listen",
                format!(
                    "{listen} overlaps server.listen[{index}] ({})",
                    around.server_listen[index]
                ),
            );
        }
        if around.admin_listen.is_some_and(|a| overlaps(a, listen)) {
            problems.error("login.listen", format!("{listen} overlaps admin.listen"));
        }
    }
    let users = required(&raw.users, "users", "a file like \"users.toml\"", problems)
        .map(|p| base_dir.join(p));
    let signing_key_path = required(
        &raw.signing_key,
        "signing_key",
        "an Ed25519 PKCS#8 key file like \"keys/issuer.key.pem\" (wsgate keygen --alg EdDSA)",
        problems,
    )
    .map(|p| base_dir.join(p));
    let signing_key = signing_key_path
        .as_ref()
        .and_then(|path| read_signing_key(path, problems));
    if let Some(kid) = &raw.kid {
        if kid.is_empty() || kid.chars().any(|c| c.is_control() || c.is_whitespace()) {
            problems.error(
                "login.kid",
                "must be non-empty, without spaces or control characters",
            );
        }
    }
    let issuer = required(
        &raw.issuer,
        "issuer",
        "a URL like \"https://gw.example.com\"",
        problems,
    );
    if let Some(issuer) = issuer {
        if issuer.is_empty() || issuer.chars().any(|c| c.is_control() || c.is_whitespace()) {
            problems.error(
                "login.issuer",
                "must be non-empty, without spaces or control characters",
            );
        } else if around.auth_issuer == Some(issuer.as_str()) {
            // SPEC §11: the login key alone verifies tokens of `login.issuer`.
            problems.error(
                "login.issuer",
                "must differ from auth.issuer: tokens of login.issuer are verified by the login key only",
            );
        } else if !issuer.starts_with("https://") && !issuer.starts_with("http://") {
            problems.warn(format!(
                "login.issuer: {issuer:?} is not an http(s) URL; OpenID Connect clients expect one"
            ));
        }
    }
    let access_ttl = raw.access_ttl.0;
    if access_ttl.as_secs() == 0 {
        problems.error("login.access_ttl", "must be at least 1s");
    } else if access_ttl > around.max_lifetime {
        problems.error(
            "login.access_ttl",
            format!(
                "{} is longer than auth.max_lifetime ({}): the gateway would refuse its own tokens",
                raw.access_ttl,
                DurationStr(around.max_lifetime)
            ),
        );
    }
    if refresh_ttl_shorter(raw) {
        problems.error("login.refresh_ttl", "must be at least access_ttl");
    }
    let refresh_ttl = raw.refresh_ttl.0;
    let store = required(
        &raw.store,
        "store",
        "a file like \"data/refresh.db\"",
        problems,
    )
    .map(|p| base_dir.join(p));
    let signing_key = signing_key?;
    if let Some(kid) = &raw.kid {
        if let Some(index) = around.static_kids.iter().position(|k| k == kid) {
            problems.error(
                "login.kid",
                format!("{kid:?} is also auth.key[{index}].kid; a kid names one key"),
            );
        }
    }
    let public_key = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&signing_key.0)
        .map(|pair| {
            ring::signature::KeyPair::public_key(&pair)
                .as_ref()
                .to_vec()
        })
        .ok()?;
    Some(Login {
        listen: listen?,
        users: users?,
        signing_key_path: signing_key_path?,
        signing_key,
        public_key: public_key.clone(),
        kid: raw.kid.clone().unwrap_or_else(|| thumbprint(&public_key)),
        issuer: issuer?.clone(),
        access_ttl,
        refresh_ttl,
        store: store?,
        failures: raw.failures,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn failure_rates() {
        assert_eq!(
            "5/m".parse::<FailureRate>().unwrap(),
            FailureRate {
                count: 5,
                period: Duration::from_secs(60)
            }
        );
        assert_eq!(
            "10/s".parse::<FailureRate>().unwrap().period,
            Duration::from_secs(1)
        );
        assert_eq!("3/h".parse::<FailureRate>().unwrap().to_string(), "3/h");
        for bad in [
            "",
            "5",
            "/m",
            "0/m",
            "5/d",
            "-1/m",
            "5 /m",
            "5/min",
            "1.5/m",
            "99999999999/m",
        ] {
            assert!(bad.parse::<FailureRate>().is_err(), "{bad:?} parsed");
        }
    }

    fn config_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("wsgate-login-config-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        crate::cli::keygen::keygen(crate::auth::keys::Alg::EdDSA, &dir.join("issuer")).unwrap();
        dir
    }

    const BASE: &str = "[server]\nlisten = \"127.0.0.1:8080\"\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n";

    fn errors(dir: &Path, login: &str) -> Vec<String> {
        match crate::config::parse_str(&format!("{BASE}{login}"), dir, "w.toml") {
            Ok(_) => Vec::new(),
            Err(e) => e.errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn a_complete_section_resolves_paths_and_keeps_defaults() {
        let dir = config_dir("good");
        let text = format!(
            "{BASE}[login]\nlisten = \"127.0.0.1:8081\"\nusers = \"users.toml\"\n\
             signing_key = \"issuer.key.pem\"\nissuer = \"https://gw.example.com\"\nstore = \"data/refresh.db\"\n"
        );
        let config = crate::config::parse_str(&text, &dir, "w.toml").unwrap();
        let login = config.login.unwrap();
        assert_eq!(login.users, dir.join("users.toml"));
        assert_eq!(login.store, dir.join("data/refresh.db"));
        assert_eq!(login.access_ttl, Duration::from_secs(300));
        assert_eq!(login.refresh_ttl, Duration::from_secs(30 * 86_400));
        assert_eq!(login.failures.to_string(), "5/m");
        assert_eq!(login.kid, thumbprint(&login.public_key));
        assert_eq!(login.public_key.len(), 32);
        assert!(!login.signing_key.0.is_empty());
        // Without the section there is no token service.
        assert!(crate::config::parse_str(BASE, &dir, "w.toml")
            .unwrap()
            .login
            .is_none());
    }

    #[test]
    fn every_problem_is_reported_at_its_key() {
        let dir = config_dir("bad");
        let all = errors(&dir, "[login]\n").join("\n");
        for key in [
            "login.listen",
            "login.users",
            "login.signing_key",
            "login.issuer",
            "login.store",
        ] {
            assert!(all.contains(&format!("{key}: required")), "{key} in {all}");
        }
        let all = errors(
            &dir,
            "[auth]\nissuer = \"https://gw\"\n[login]\nlisten = \"127.0.0.1:8080\"\nusers = \"u\"\n\
             signing_key = \"issuer.pub.pem\"\nissuer = \"https://gw\"\nstore = \"s\"\n\
             access_ttl = \"0s\"\nfailures = \"0/m\"\nkid = \"a b\"\ntypo = 1\n",
        )
        .join("\n");
        for expected in [
            "login.listen: 127.0.0.1:8080 overlaps server.listen[0]",
            "login.signing_key:",
            "login.issuer: must differ from auth.issuer",
            "login.access_ttl: must be at least 1s",
            "login.failures:",
            "login.kid:",
            "login.typo: unknown key",
        ] {
            assert!(all.contains(expected), "{expected:?} in {all}");
        }
        let all = errors(
            &dir,
            "[login]\nlisten = \"127.0.0.1:8081\"\nusers = \"u\"\nsigning_key = \"issuer.key.pem\"\n\
             issuer = \"https://gw\"\nstore = \"s\"\naccess_ttl = \"1h\"\nrefresh_ttl = \"5m\"\n",
        )
        .join("\n");
        assert!(
            all.contains("login.refresh_ttl: must be at least access_ttl"),
            "{all}"
        );
    }

    #[test]
    fn rfc7638_thumbprint_of_the_rfc8037_example_key() {
        use base64::Engine as _;
        // RFC 8037 Appendix A.3 gives this thumbprint for the A.2 public key.
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        assert_eq!(
            thumbprint(&x),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn signing_key_debug_is_redacted() {
        let shown = format!("{:?}", SigningKeyDer(vec![0x42; 48]));
        assert!(shown.contains("48 bytes"), "{shown}");
        assert!(!shown.contains("42") && !shown.contains("66"), "{shown}");
    }
}
