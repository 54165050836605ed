//! `[origin]`: the Origin allow-list, each entry normalized to `scheme://host[:port]`.

use std::net::Ipv6Addr;

use serde::Deserialize;

use super::Problems;

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

/// `[origin]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Allowed origins, normalized: lower case, no default port (`https://x:443` ->
    /// `https://x`). An entry may start its host with `*.`.
    pub allow: Vec<String>,
    /// Whether a request without `Origin` is allowed.
    pub allow_missing: bool,
}

pub(super) fn origin(raw: &OriginSection, problems: &mut Problems) -> Origin {
    let mut allow: Vec<String> = Vec::new();
    for (index, entry) in raw.allow.iter().enumerate() {
        let at = format!("origin.allow[{index}]");
        match normalize_origin(entry) {
            Ok(origin) => {
                if let Some(first) = allow.iter().position(|seen| *seen == origin) {
                    problems.error(
                        at,
                        format!("duplicate origin {entry:?} (also origin.allow[{first}])"),
                    );
                } else {
                    allow.push(origin);
                }
            }
            Err(reason) => problems.error(
                at,
                format!(
                    "{reason}; expected \"https://host[:port]\" (the host may start with \"*.\"), \
                     got {entry:?}"
                ),
            ),
        }
    }
    Origin {
        allow,
        allow_missing: raw.allow_missing,
    }
}

/// RFC 6454 §6.1 serialization: `scheme://host[:port]`, lower case, default port left
/// out. A host may start with the label `*.` followed by at least two labels.
pub(super) fn normalize_origin(entry: &str) -> Result<String, String> {
    let Some((scheme, rest)) = entry.split_once("://") else {
        return Err("missing scheme".to_owned());
    };
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err("the scheme must be http or https".to_owned()),
    };
    if rest.contains(['/', '?', '#', '@']) {
        return Err("an origin has no path, query, fragment or user info".to_owned());
    }
    let authority = split_authority(rest)?;
    let host = match authority.host {
        Host::Ipv6(address) => format!("[{address}]"),
        Host::Name(name) => {
            let name = name.to_ascii_lowercase();
            if let Some(parent) = name.strip_prefix("*.") {
                if !parent.contains('.') {
                    return Err("a wildcard needs at least two labels after \"*.\"".to_owned());
                }
                check_host_name(parent)?;
            } else {
                check_host_name(&name)?;
            }
            name
        }
    };
    Ok(match authority.port {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// A host and optional port, split.
pub(super) struct Authority<'a> {
    pub(super) host: Host<'a>,
    pub(super) port: Option<u16>,
}

pub(super) enum Host<'a> {
    Ipv6(Ipv6Addr),
    Name(&'a str),
}

/// Splits `host[:port]` / `[v6][:port]`; the port, when written, must be 1..=65535.
pub(super) fn split_authority(authority: &str) -> Result<Authority<'_>, String> {
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
pub(super) fn check_host_name(name: &str) -> Result<(), String> {
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
