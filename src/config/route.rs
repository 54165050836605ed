//! `[[route]]`: paths, their token rules and their backend (echo or an upstream URL).

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use serde::Deserialize;

use super::units::DurationStr;
use super::Problems;

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
    /// PEM file of the CAs that `wss://` upstreams' certificates must chain to (default:
    /// the system's roots).
    pub upstream_ca: Option<PathBuf>,
    /// Sign the identity headers sent upstream (RFC 9421; default false).
    pub sign_identity: Option<bool>,
    /// `false`: this route never negotiates permessage-deflate (SPEC §10; default true).
    pub compression: Option<bool>,
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
    /// permessage-deflate may be negotiated here when `[compression]` turns it on.
    pub compression: bool,
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
        /// Trust anchors for `wss://` upstreams (`upstream_ca`); `None`: the system's roots.
        ca: Option<Vec<CertificateDer<'static>>>,
        /// Sign the identity headers (RFC 9421, SPEC §5 `sign_identity`).
        sign_identity: bool,
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

// Errors.

pub(super) fn routes(raw: &[RouteConfig], base_dir: &Path, problems: &mut Problems) -> Vec<Route> {
    if raw.is_empty() {
        problems.error("route", "at least one [[route]] is required");
    }
    let mut paths: HashMap<&str, usize> = HashMap::new();
    let mut routes = Vec::new();
    for (index, route) in raw.iter().enumerate() {
        let at = format!("route[{index}]");
        let path = match route.path.as_deref() {
            None => {
                problems.error(
                    format!("{at}.path"),
                    "required: an exact path like \"/echo\"",
                );
                String::new()
            }
            Some(path) => {
                if let Some(problem) = route_path_problem(path) {
                    problems.error(format!("{at}.path"), problem);
                } else if let Some(first) = paths.insert(path, index) {
                    problems.error(
                        format!("{at}.path"),
                        format!("duplicate path {path:?} (also route[{first}].path)"),
                    );
                }
                path.to_owned()
            }
        };
        if route.public && !route.scope.is_empty() {
            problems.error(
                format!("{at}.scope"),
                "a public route takes no token, so it cannot require a scope \
                 (remove scope, or public = true)",
            );
        }
        check_list(
            &route.scope,
            &format!("{at}.scope"),
            "scope",
            is_scope_token,
            problems,
        );
        check_list(
            &route.protocols,
            &format!("{at}.protocols"),
            "protocol",
            is_token,
            problems,
        );
        for (position, protocol) in route.protocols.iter().enumerate() {
            if protocol
                .get(..7)
                .is_some_and(|p| p.eq_ignore_ascii_case("bearer."))
            {
                problems.error(
                    format!("{at}.protocols[{position}]"),
                    "the \"bearer.\" prefix carries tokens (SPEC §4) and cannot be a route protocol",
                );
            }
        }
        let backend = backend(route, &at, base_dir, problems);
        if route.public {
            problems.warn(format!(
                "{at}: public = true: no token is required on {path}"
            ));
        }
        routes.push(Route {
            path,
            public: route.public,
            scope: route.scope.clone(),
            protocols: route.protocols.clone(),
            backend,
            compression: route.compression.unwrap_or(true),
        });
    }
    routes
}

/// Why a route path is refused, if it is.
fn route_path_problem(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        Some("must start with '/'")
    } else if path.contains('?') {
        Some("must not contain '?': the query string is not part of the match")
    } else if path.contains('#') {
        Some("must not contain '#'")
    } else if !path.is_ascii() {
        Some("must be ASCII (write other characters percent-encoded, as clients send them)")
    } else if path
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        Some("must not contain spaces or control characters")
    } else {
        None
    }
}

/// Each entry passes `valid`, and none repeats.
fn check_list(
    list: &[String],
    at: &str,
    what: &str,
    valid: fn(&str) -> bool,
    problems: &mut Problems,
) {
    for (index, entry) in list.iter().enumerate() {
        if !valid(entry) {
            problems.error(
                format!("{at}[{index}]"),
                format!("{entry:?} is not a valid {what}"),
            );
        } else if let Some(first) = list
            .iter()
            .position(|seen| seen == entry)
            .filter(|&f| f < index)
        {
            problems.error(
                format!("{at}[{index}]"),
                format!("duplicate {what} {entry:?} (also {at}[{first}])"),
            );
        }
    }
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
pub(super) fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// RFC 6455 §4.1 (subprotocols are tokens), RFC 9110 §5.6.2: `token = 1*tchar`.
fn is_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn backend(route: &RouteConfig, at: &str, base_dir: &Path, problems: &mut Problems) -> Backend {
    match (&route.backend, &route.upstream) {
        (Some(_), Some(_)) => {
            problems.error(at, "set either backend or upstream, not both");
            Backend::Echo
        }
        (None, None) => {
            problems.error(
                at,
                "needs backend = \"echo\" or upstream = [\"ws://host:port/path\"]",
            );
            Backend::Echo
        }
        (Some(name), None) => {
            if name != "echo" {
                problems.error(
                    format!("{at}.backend"),
                    format!("unknown backend {name:?}; expected \"echo\" (or upstream = [...] to proxy)"),
                );
            }
            for (key, set) in [
                ("forward_claims", route.forward_claims.is_some()),
                ("upstream_backoff", route.upstream_backoff.is_some()),
                ("upstream_timeout", route.upstream_timeout.is_some()),
                ("upstream_ca", route.upstream_ca.is_some()),
                ("sign_identity", route.sign_identity.is_some()),
            ] {
                if set {
                    problems.error(
                        format!("{at}.{key}"),
                        "only applies to routes with upstream",
                    );
                }
            }
            Backend::Echo
        }
        (None, Some(list)) => {
            if list.is_empty() {
                problems.error(
                    format!("{at}.upstream"),
                    "must list at least one ws:// or wss:// URL",
                );
            }
            let mut urls = Vec::new();
            for (index, url) in list.iter().enumerate() {
                match parse_upstream(url) {
                    Ok(parsed) => urls.push(parsed),
                    Err(reason) => problems.error(
                        format!("{at}.upstream[{index}]"),
                        format!(
                            "{reason}; expected a URL like \"ws://10.0.0.5:9000/chat\" or \
                             \"wss://host/path\", got {url:?}"
                        ),
                    ),
                }
            }
            let timeout = route
                .upstream_timeout
                .map_or(Duration::from_secs(10), |t| t.0);
            if timeout.is_zero() {
                problems.error(format!("{at}.upstream_timeout"), "must be more than 0s");
            }
            Backend::Upstream {
                urls,
                forward_claims: route.forward_claims.unwrap_or(false),
                backoff: route
                    .upstream_backoff
                    .map_or(Duration::from_secs(10), |b| b.0),
                timeout,
                ca: route
                    .upstream_ca
                    .as_deref()
                    .and_then(|path| read_ca(&base_dir.join(path), at, problems)),
                sign_identity: route.sign_identity.unwrap_or(false),
            }
        }
    }
}

/// Largest `upstream_ca` file read.
const MAX_CA_FILE_BYTES: u64 = 1 << 20;

/// Reads `upstream_ca`: one or more PEM certificates (SPEC §5).
fn read_ca(path: &Path, at: &str, problems: &mut Problems) -> Option<Vec<CertificateDer<'static>>> {
    let at = format!("{at}.upstream_ca");
    let bytes = match super::read_file_capped(path, MAX_CA_FILE_BYTES) {
        Ok(bytes) => bytes,
        Err(error) => {
            problems.error(at, format!("{}: {error}", path.display()));
            return None;
        }
    };
    match CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>() {
        Ok(certs) if !certs.is_empty() => Some(certs),
        Ok(_) => {
            problems.error(
                at,
                format!("{}: no PEM \"CERTIFICATE\" block found", path.display()),
            );
            None
        }
        Err(error) => {
            problems.error(
                at,
                format!("{}: {}", path.display(), super::tls::pem_problem(&error)),
            );
            None
        }
    }
}

/// `ws://host[:port][/path]` or `wss://...` (RFC 6455 §3), with no user info, query or
/// fragment: the client's query string is what gets appended.
pub(super) fn parse_upstream(url: &str) -> Result<UpstreamUrl, String> {
    let (secure, rest) = if let Some(rest) = url.strip_prefix("ws://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("wss://") {
        (true, rest)
    } else {
        return Err("the scheme must be ws:// or wss://".to_owned());
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    if path.contains(['?', '#']) {
        return Err("no query or fragment (the client's query string is appended)".to_owned());
    }
    if !path.is_ascii()
        || path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err("the path must be ASCII without spaces".to_owned());
    }
    if authority.contains('@') {
        return Err("user info is not supported".to_owned());
    }
    let parsed = split_authority(authority)?;
    let host = match parsed.host {
        Host::Ipv6(address) => address.to_string(),
        Host::Name(name) => {
            check_host_name(name)?;
            name.to_owned()
        }
    };
    Ok(UpstreamUrl {
        url: url.to_owned(),
        secure,
        host,
        port: parsed.port.unwrap_or(if secure { 443 } else { 80 }),
        host_header: authority.to_owned(),
        path: path.to_owned(),
    })
}

/// A host and optional port, split.
struct Authority<'a> {
    host: Host<'a>,
    port: Option<u16>,
}

enum Host<'a> {
    Ipv6(Ipv6Addr),
    Name(&'a str),
}

/// Splits `host[:port]` / `[v6][:port]`; the port, when written, must be 1..=65535.
fn split_authority(authority: &str) -> Result<Authority<'_>, String> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((address, after)) = bracketed.split_once(']') else {
            return Err("an IPv6 address needs its closing ']'".to_owned());
        };
        let address: Ipv6Addr = address
            .parse()
            .map_err(|_| format!("{address:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| "expected ':port' after the IPv6 address".to_owned())?,
            ),
        };
        (Host::Ipv6(address), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (Host::Name(host), Some(port)),
            None => (Host::Name(authority), None),
        }
    };
    let port = match port {
        None => None,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port != 0 && text.bytes().all(|b| b.is_ascii_digit()) => Some(port),
            _ => return Err(format!("bad port {text:?} (1 to 65535)")),
        },
    };
    if let Host::Name("") = host {
        return Err("missing host".to_owned());
    }
    Ok(Authority { host, port })
}

/// A DNS name or IPv4 address: dot-separated, non-empty labels of `[A-Za-z0-9-]`.
fn check_host_name(name: &str) -> Result<(), String> {
    if name.contains('*') {
        return Err("'*' is only allowed as the whole first label (\"*.example.com\")".to_owned());
    }
    if !name.is_ascii() {
        return Err("write an international host name in its xn-- (punycode) form".to_owned());
    }
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if !labels_ok {
        return Err(format!("{name:?} is not a valid host name"));
    }
    Ok(())
}
