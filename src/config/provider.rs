//! `[[auth.provider]]` (SPEC §9): an identity provider whose JWK Set verifies the tokens
//! whose `iss` is its `issuer`, and nothing else. The serde layer, its validation (every
//! problem with its key path), and the loading of a local-file JWK Set.
//!
//! This version loads `jwks_uri`s that are local files (a path relative to the config, or
//! a `file://` URL) when the runtime is built (start and SIGHUP), never on a worker;
//! fetching over https and OpenID Connect Discovery come with the control-plane fetcher.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::units::DurationStr;
use super::{read_file_capped, Problems};
use crate::auth::jwk::{self, JwkSet, MAX_DOCUMENT_BYTES};
use crate::auth::keys::{Alg, Provider, ProviderKeys};

/// One `[[auth.provider]]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    /// Must equal the token's `iss`.
    pub issuer: String,
    /// An https URL, a loopback http URL, a `file://` URL or a path; without it,
    /// OpenID Connect Discovery.
    pub jwks_uri: Option<String>,
    /// Overrides `auth.audience` for this provider's tokens.
    pub audience: Option<String>,
    /// Allowlist of algorithms (never `none`, never HS*).
    pub algorithms: Option<Vec<String>>,
    /// Refetch period (default 10m).
    pub refresh: Option<DurationStr>,
    /// Least time between two fetches (default 30s).
    pub min_refresh: Option<DurationStr>,
    /// How long the last good set is kept while the issuer is unreachable (default 24h).
    pub max_stale: Option<DurationStr>,
    /// Trust root for an https `jwks_uri` (default: the system's roots).
    pub ca_file: Option<PathBuf>,
}

/// Where a provider's JWK Set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// An `https://` URL, or an `http://` URL to a loopback address.
    Url(String),
    /// A local file (resolved against the config file's directory).
    File(PathBuf),
    /// OpenID Connect Discovery: `{issuer}/.well-known/openid-configuration`.
    Discovery(String),
}

/// A validated `[[auth.provider]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSettings {
    /// `issuer`.
    pub issuer: String,
    /// Where the keys come from.
    pub source: JwksSource,
    /// `audience`.
    pub audience: Option<String>,
    /// `algorithms`, parsed.
    pub algorithms: Option<Vec<Alg>>,
    /// `refresh`.
    pub refresh: Duration,
    /// `min_refresh`.
    pub min_refresh: Duration,
    /// `max_stale`.
    pub max_stale: Duration,
    /// `ca_file`, resolved.
    pub ca_file: Option<PathBuf>,
}

/// Defaults of SPEC §9.
const DEFAULT_REFRESH: Duration = Duration::from_secs(10 * 60);
const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(30);
const DEFAULT_MAX_STALE: Duration = Duration::from_secs(24 * 3600);
/// The shortest `min_refresh` accepted: a flood of unknown `kid`s must not become a
/// flood of fetches.
const MIN_MIN_REFRESH: Duration = Duration::from_secs(1);

/// Validates every `[[auth.provider]]`; `static_issuer` is `auth.issuer`.
pub(crate) fn providers(
    raw: &[ProviderConfig],
    static_issuer: Option<&str>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Vec<ProviderSettings> {
    let mut out: Vec<ProviderSettings> = Vec::new();
    for (index, p) in raw.iter().enumerate() {
        let at = format!("auth.provider[{index}]");
        if let Some(first) = raw
            .get(..index)
            .unwrap_or_default()
            .iter()
            .position(|q| q.issuer == p.issuer && !p.issuer.is_empty())
        {
            problems.error(
                format!("{at}.issuer"),
                format!(
                    "issuer {:?} is configured twice (also auth.provider[{first}].issuer)",
                    p.issuer
                ),
            );
        }
        if let Some(settings) = provider(p, &at, static_issuer, base_dir, problems) {
            out.push(settings);
        }
    }
    out
}

fn provider(
    p: &ProviderConfig,
    at: &str,
    static_issuer: Option<&str>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<ProviderSettings> {
    let mut ok = true;
    if p.issuer.is_empty() {
        problems.error(
            format!("{at}.issuer"),
            "required: the exact `iss` of this provider's tokens",
        );
        ok = false;
    } else if static_issuer == Some(p.issuer.as_str()) {
        // SPEC §9: tokens of a provider's issuer are verified by its keys only, so static
        // keys under the same issuer would never verify anything.
        problems.error(
            format!("{at}.issuer"),
            "equals auth.issuer: that issuer's tokens are verified by this provider's keys \
             only, so the [[auth.key]] keys would never verify any token",
        );
        ok = false;
    }
    if p.audience.as_deref() == Some("") {
        problems.error(
            format!("{at}.audience"),
            "must not be empty (leave it out to use auth.audience)",
        );
        ok = false;
    }
    let source = match p.jwks_uri.as_deref() {
        None => match url_kind(&p.issuer) {
            Some(UrlKind::Https | UrlKind::LoopbackHttp) => {
                JwksSource::Discovery(jwk::discovery_url(&p.issuer))
            }
            _ => {
                if !p.issuer.is_empty() {
                    problems.error(
                        format!("{at}.jwks_uri"),
                        "required unless issuer is an https URL (OpenID Connect Discovery \
                         fetches {issuer}/.well-known/openid-configuration)",
                    );
                }
                ok = false;
                JwksSource::Discovery(String::new())
            }
        },
        Some("") => {
            problems.error(format!("{at}.jwks_uri"), "must not be empty");
            ok = false;
            JwksSource::File(PathBuf::new())
        }
        Some(uri) => match jwks_source(uri, base_dir) {
            Ok(source) => source,
            Err(message) => {
                problems.error(format!("{at}.jwks_uri"), message);
                ok = false;
                JwksSource::File(PathBuf::new())
            }
        },
    };
    let algorithms = match &p.algorithms {
        None => None,
        Some(names) if names.is_empty() => {
            problems.error(
                format!("{at}.algorithms"),
                "must not be empty (leave it out to allow every algorithm the keys allow)",
            );
            ok = false;
            None
        }
        Some(names) => {
            let mut algs = Vec::new();
            for (j, name) in names.iter().enumerate() {
                let here = format!("{at}.algorithms[{j}]");
                match Alg::from_config_name(name) {
                    _ if name.eq_ignore_ascii_case("none") => {
                        problems.error(here, "\"none\" is never accepted");
                        ok = false;
                    }
                    Some(alg) if alg.is_hmac() => {
                        problems.error(
                            here,
                            format!("{alg} is never taken from a JWK Set (symmetric keys are not published)"),
                        );
                        ok = false;
                    }
                    Some(alg) => algs.push(alg),
                    None => {
                        problems.error(
                            here,
                            format!(
                                "unknown algorithm {name:?}; expected RS256, RS384, RS512, \
                                 PS256, PS384, PS512, ES256, ES384 or EdDSA"
                            ),
                        );
                        ok = false;
                    }
                }
            }
            Some(algs)
        }
    };
    let refresh = p.refresh.map_or(DEFAULT_REFRESH, |d| d.0);
    let min_refresh = p.min_refresh.map_or(DEFAULT_MIN_REFRESH, |d| d.0);
    let max_stale = p.max_stale.map_or(DEFAULT_MAX_STALE, |d| d.0);
    if min_refresh < MIN_MIN_REFRESH {
        problems.error(format!("{at}.min_refresh"), "must be at least 1s");
        ok = false;
    }
    if refresh < min_refresh {
        problems.error(
            format!("{at}.refresh"),
            format!(
                "{} is shorter than min_refresh ({})",
                DurationStr(refresh),
                DurationStr(min_refresh)
            ),
        );
        ok = false;
    }
    if max_stale < refresh {
        problems.error(
            format!("{at}.max_stale"),
            format!(
                "{} is shorter than refresh ({}): a set would go stale before its next fetch",
                DurationStr(max_stale),
                DurationStr(refresh)
            ),
        );
        ok = false;
    }
    let ca_file = p.ca_file.as_ref().map(|f| base_dir.join(f));
    if let Some(path) = &ca_file {
        if !matches!(source, JwksSource::Url(_) | JwksSource::Discovery(_)) {
            problems.warn(format!("{at}.ca_file: unused, jwks_uri is a local file"));
        } else if !path.is_file() {
            problems.error(
                format!("{at}.ca_file"),
                format!("{}: not a readable file", path.display()),
            );
            ok = false;
        }
    }
    ok.then(|| ProviderSettings {
        issuer: p.issuer.clone(),
        source,
        audience: p.audience.clone(),
        algorithms,
        refresh,
        min_refresh,
        max_stale,
        ca_file,
    })
}

/// What a URL's scheme and host allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UrlKind {
    Https,
    LoopbackHttp,
    OtherHttp,
}

/// `https://host...` or `http://host...`: which, and whether an http host is loopback.
/// None for anything else (or a URL without a host, or with userinfo).
fn url_kind(uri: &str) -> Option<UrlKind> {
    let (scheme, rest) = uri.split_once("://")?;
    let authority = rest
        .split(['/', '?', '#'])
        .next()
        .filter(|a| !a.is_empty() && !a.contains('@'))?;
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split(']').next()?
    } else {
        authority.split(':').next()?
    };
    if host.is_empty() || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    if scheme.eq_ignore_ascii_case("https") {
        return Some(UrlKind::Https);
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return None;
    }
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    Some(if loopback {
        UrlKind::LoopbackHttp
    } else {
        UrlKind::OtherHttp
    })
}

/// SPEC §9: https, http only to loopback, or a local file (path or `file://`).
fn jwks_source(uri: &str, base_dir: &Path) -> Result<JwksSource, String> {
    if let Some(path) = uri.strip_prefix("file://") {
        // RFC 8089: file:///abs/path (empty authority) or file://localhost/abs/path.
        let path = path.strip_prefix("localhost").unwrap_or(path);
        if !path.starts_with('/') {
            return Err("a file:// URL must hold an absolute path (file:///path)".into());
        }
        return Ok(JwksSource::File(PathBuf::from(path)));
    }
    if let Some((scheme, _)) = uri.split_once("://") {
        return match url_kind(uri) {
            Some(UrlKind::Https | UrlKind::LoopbackHttp) => Ok(JwksSource::Url(uri.to_owned())),
            Some(UrlKind::OtherHttp) => Err(
                "http:// is only allowed to loopback addresses; use https:// (or a local file)"
                    .into(),
            ),
            None if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http") => {
                Err("not a valid URL (a host, no userinfo, no whitespace)".into())
            }
            None => Err(format!(
                "unsupported scheme {scheme:?}: use https://, a file:// URL or a path"
            )),
        };
    }
    Ok(JwksSource::File(base_dir.join(uri)))
}

/// Reads and parses a local JWK Set file (bounded like a fetched document).
pub fn read_jwks_file(path: &Path) -> Result<JwkSet, String> {
    let bytes = read_file_capped(path, MAX_DOCUMENT_BYTES as u64)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    jwk::parse_jwk_set(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The providers' key sets as the verifier takes them. Local files are read here (start
/// and SIGHUP; never on a worker); a file that cannot be read or parsed, and every URL
/// source (fetched by the control plane in a later version), gives the provider no keys,
/// so its tokens are refused. `report` receives one line per problem and skipped key.
pub fn build_providers(
    settings: &[ProviderSettings],
    mut report: impl FnMut(String),
) -> Vec<Provider> {
    settings
        .iter()
        .map(|s| {
            let keys = match &s.source {
                JwksSource::File(path) => match read_jwks_file(path) {
                    Ok(set) => {
                        for skipped in &set.skipped {
                            report(format!(
                                "provider {:?}: key #{} (kid {:?}) skipped: {}",
                                s.issuer,
                                skipped.index,
                                skipped.kid.as_deref().unwrap_or(""),
                                skipped.reason
                            ));
                        }
                        ProviderKeys::from_jwk_set(&s.issuer, &set)
                    }
                    Err(e) => {
                        report(format!("provider {:?}: no keys: {e}", s.issuer));
                        ProviderKeys::default()
                    }
                },
                JwksSource::Url(url) | JwksSource::Discovery(url) => {
                    report(format!(
                        "provider {:?}: no keys: fetching {url} is not supported in this version (use a local file)",
                        s.issuer
                    ));
                    ProviderKeys::default()
                }
            };
            Provider::new(
                s.issuer.clone(),
                s.audience.clone(),
                s.algorithms.clone(),
                Arc::new(keys),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(p: ProviderConfig) -> Result<ProviderSettings, Vec<String>> {
        let mut problems = Problems::default();
        let out = providers(
            &[p],
            Some("https://static.example"),
            Path::new("/etc/wsgate"),
            &mut problems,
        );
        let errors: Vec<String> = problems.errors.iter().map(|e| e.to_string()).collect();
        if errors.is_empty() {
            Ok(out.into_iter().next().expect("one provider"))
        } else {
            Err(errors)
        }
    }

    fn base() -> ProviderConfig {
        ProviderConfig {
            issuer: "https://id.example.com/realms/app".into(),
            jwks_uri: Some("https://id.example.com/realms/app/certs".into()),
            ..ProviderConfig::default()
        }
    }

    fn error_of(p: ProviderConfig) -> String {
        check(p).expect_err("refused").join("\n")
    }

    #[test]
    fn sources_and_defaults() {
        let s = check(base()).expect("valid");
        assert_eq!(
            s.source,
            JwksSource::Url("https://id.example.com/realms/app/certs".into())
        );
        assert_eq!(
            (s.refresh, s.min_refresh, s.max_stale),
            (DEFAULT_REFRESH, DEFAULT_MIN_REFRESH, DEFAULT_MAX_STALE)
        );
        let with = |uri: &str| {
            check(ProviderConfig {
                jwks_uri: Some(uri.into()),
                ..base()
            })
        };
        assert_eq!(
            with("keys/jwks.json").expect("path").source,
            JwksSource::File("/etc/wsgate/keys/jwks.json".into())
        );
        assert_eq!(
            with("/abs/jwks.json").expect("abs").source,
            JwksSource::File("/abs/jwks.json".into())
        );
        assert_eq!(
            with("file:///srv/jwks.json").expect("file").source,
            JwksSource::File("/srv/jwks.json".into())
        );
        assert_eq!(
            with("file://localhost/srv/j.json").expect("file").source,
            JwksSource::File("/srv/j.json".into())
        );
        for ok in [
            "http://127.0.0.1:8080/certs",
            "http://localhost/certs",
            "http://[::1]:9/c",
            "HTTPS://x.example/c",
        ] {
            assert!(
                matches!(with(ok).expect(ok).source, JwksSource::Url(_)),
                "{ok}"
            );
        }
        let d = check(ProviderConfig {
            jwks_uri: None,
            ..base()
        })
        .expect("discovery");
        assert_eq!(
            d.source,
            JwksSource::Discovery(
                "https://id.example.com/realms/app/.well-known/openid-configuration".into()
            )
        );
    }

    #[test]
    fn every_rule_names_its_key() {
        for (p, expected) in [
            (
                ProviderConfig {
                    issuer: String::new(),
                    ..base()
                },
                "auth.provider[0].issuer: required",
            ),
            (
                ProviderConfig {
                    issuer: "https://static.example".into(),
                    ..base()
                },
                "auth.provider[0].issuer: equals auth.issuer",
            ),
            (
                ProviderConfig {
                    jwks_uri: Some("http://10.0.0.1/certs".into()),
                    ..base()
                },
                "auth.provider[0].jwks_uri: http:// is only allowed to loopback",
            ),
            (
                ProviderConfig {
                    jwks_uri: Some("http://127.0.0.1.evil.example/certs".into()),
                    ..base()
                },
                "only allowed to loopback",
            ),
            (
                ProviderConfig {
                    jwks_uri: Some("ftp://x/certs".into()),
                    ..base()
                },
                "unsupported scheme \"ftp\"",
            ),
            (
                ProviderConfig {
                    jwks_uri: Some("https://user@x/certs".into()),
                    ..base()
                },
                "not a valid URL",
            ),
            (
                ProviderConfig {
                    jwks_uri: Some("file://relative/j.json".into()),
                    ..base()
                },
                "absolute path",
            ),
            (
                ProviderConfig {
                    jwks_uri: Some(String::new()),
                    ..base()
                },
                "jwks_uri: must not be empty",
            ),
            (
                ProviderConfig {
                    issuer: "id.example.com".into(),
                    jwks_uri: None,
                    ..base()
                },
                "auth.provider[0].jwks_uri: required unless issuer is an https URL",
            ),
            (
                ProviderConfig {
                    issuer: "http://id.example.com".into(),
                    jwks_uri: None,
                    ..base()
                },
                "jwks_uri: required unless",
            ),
            (
                ProviderConfig {
                    algorithms: Some(vec!["none".into()]),
                    ..base()
                },
                "auth.provider[0].algorithms[0]: \"none\" is never accepted",
            ),
            (
                ProviderConfig {
                    algorithms: Some(vec!["RS256".into(), "HS256".into()]),
                    ..base()
                },
                "auth.provider[0].algorithms[1]: HS256 is never taken from a JWK Set",
            ),
            (
                ProviderConfig {
                    algorithms: Some(vec!["rs256".into()]),
                    ..base()
                },
                "unknown algorithm \"rs256\"",
            ),
            (
                ProviderConfig {
                    algorithms: Some(vec![]),
                    ..base()
                },
                "algorithms: must not be empty",
            ),
            (
                ProviderConfig {
                    audience: Some(String::new()),
                    ..base()
                },
                "audience: must not be empty",
            ),
            (
                ProviderConfig {
                    min_refresh: Some(DurationStr(Duration::from_millis(500))),
                    ..base()
                },
                "min_refresh: must be at least 1s",
            ),
            (
                ProviderConfig {
                    refresh: Some(DurationStr::secs(10)),
                    ..base()
                },
                "refresh: 10s is shorter than min_refresh (30s)",
            ),
            (
                ProviderConfig {
                    max_stale: Some(DurationStr::secs(60)),
                    ..base()
                },
                "max_stale: 1m is shorter than refresh (10m)",
            ),
            (
                ProviderConfig {
                    ca_file: Some("no-such-ca.pem".into()),
                    ..base()
                },
                "auth.provider[0].ca_file: /etc/wsgate/no-such-ca.pem: not a readable file",
            ),
        ] {
            let e = error_of(p);
            assert!(e.contains(expected), "{expected}: {e}");
        }
        let algs = check(ProviderConfig {
            algorithms: Some(vec!["RS256".into(), "ES256".into(), "EdDSA".into()]),
            ..base()
        })
        .expect("valid");
        assert_eq!(
            algs.algorithms,
            Some(vec![Alg::RS256, Alg::ES256, Alg::EdDSA])
        );
        // Two providers with the same issuer.
        let mut problems = Problems::default();
        providers(&[base(), base()], None, Path::new("/"), &mut problems);
        let e: Vec<String> = problems.errors.iter().map(|e| e.to_string()).collect();
        assert!(e.iter().any(|e| e.contains("auth.provider[1].issuer: issuer \"https://id.example.com/realms/app\" is configured twice (also auth.provider[0].issuer)")), "{e:?}");
    }
}
