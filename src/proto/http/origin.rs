//! RFC 6454 serialized origins (SPEC §4 "Origins"): the one grammar for the config's
//! `origin.allow` patterns and the requests' `Origin` values. Matching against the
//! allowlist is `gate::origin`'s.

use std::net::{Ipv4Addr, Ipv6Addr};

/// An origin parsed by [`parse_origin`]: lower case, the port always filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// "http" or "https".
    pub scheme: &'static str,
    /// LDH labels, an IPv4 literal, or a bracketed IPv6 literal in its canonical form. For a
    /// wildcard pattern, the part after `*.`.
    pub host: String,
    /// A config pattern `*.host`: one or more labels before `host`, never `host` itself.
    pub wildcard: bool,
    /// The port, the scheme's default when none was written.
    pub port: u16,
}

impl Origin {
    /// RFC 6454 §6.1 serialization: `scheme://host[:port]`, the default port left out.
    pub fn serialize(&self) -> String {
        let star = if self.wildcard { "*." } else { "" };
        if self.port == default_port(self.scheme) {
            format!("{}://{star}{}", self.scheme, self.host)
        } else {
            format!("{}://{star}{}:{}", self.scheme, self.host, self.port)
        }
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" {
        443
    } else {
        80
    }
}

/// RFC 1035 §2.3.4 / RFC 5890 §2.3.1: an LDH label: 1 to 63 letters, digits and hyphens,
/// neither first nor last a hyphen.
fn is_ldh_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

/// A lowercase host name of LDH labels or a dotted-quad IPv4 literal (a name whose last
/// label is numeric must be one, as the WHATWG URL parser reads it).
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("missing host".to_owned());
    }
    if name.len() > 253 || !name.split('.').all(is_ldh_label) {
        return Err(format!(
            "{name:?} is not a valid host name (LDH labels, no empty label or trailing dot)"
        ));
    }
    let last = name.rsplit('.').next().unwrap_or_default();
    if last.bytes().all(|b| b.is_ascii_digit()) && name.parse::<Ipv4Addr>().is_err() {
        return Err(format!("{name:?} is not a valid IPv4 address"));
    }
    Ok(())
}

/// Parses an RFC 6454 serialized origin, `scheme://host[:port]` (SPEC §4 "Origins"), the one
/// grammar for `origin.allow` patterns (`allow_wildcard`: a host may start with `*.`
/// followed by at least two labels) and runtime `Origin` values. Scheme `http` or `https`;
/// a host of LDH labels or an IP literal (no empty label, no trailing dot, no `*` except a
/// pattern's first label, no percent-escape, no userinfo, path, query, fragment, control
/// character, whitespace or non-ASCII byte); an optional port of decimal digits, 1 to
/// 65535, without leading zeros. The error says why, for `wsgate check`.
pub fn parse_origin(text: &str, allow_wildcard: bool) -> Result<Origin, String> {
    let parts = parse_origin_parts(text, allow_wildcard)?;
    Ok(Origin {
        scheme: parts.scheme,
        host: parts.host.into_owned(),
        wildcard: parts.wildcard,
        port: parts.port,
    })
}

/// An [`Origin`] whose host borrows from the text when it is already in its canonical
/// form (lower case, not an IPv6 literal): what a browser sends, checked without an
/// allocation on every handshake.
pub struct OriginParts<'a> {
    /// "http" or "https".
    pub scheme: &'static str,
    /// As [`Origin::host`].
    pub host: std::borrow::Cow<'a, str>,
    /// As [`Origin::wildcard`].
    pub wildcard: bool,
    /// As [`Origin::port`].
    pub port: u16,
}

/// [`parse_origin`] without copying a host that is already canonical.
pub fn parse_origin_parts(text: &str, allow_wildcard: bool) -> Result<OriginParts<'_>, String> {
    use std::borrow::Cow;
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err("missing scheme".to_owned());
    };
    let scheme = if scheme.eq_ignore_ascii_case("http") {
        "http"
    } else if scheme.eq_ignore_ascii_case("https") {
        "https"
    } else {
        return Err("the scheme must be http or https".to_owned());
    };
    if rest.contains(['/', '?', '#', '@']) {
        return Err("an origin has no path, query, fragment or user info".to_owned());
    }
    if let Some(bad) = rest
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '[' | ']' | '*')))
    {
        return Err(if bad.is_ascii() {
            format!("{bad:?} cannot appear in an origin")
        } else {
            "write an international host name in its xn-- (punycode) form".to_owned()
        });
    }
    let (host, port_text) = if let Some(bracketed) = rest.strip_prefix('[') {
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
        (Cow::Owned(format!("[{address}]")), port)
    } else {
        let (name, port) = match rest.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (rest, None),
        };
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            (Cow::Owned(name.to_ascii_lowercase()), port)
        } else {
            (Cow::Borrowed(name), port)
        }
    };
    let port = match port_text {
        None => default_port(scheme),
        Some(digits) => {
            let canonical = digits.bytes().all(|b| b.is_ascii_digit())
                && !digits.starts_with('0')
                && !digits.is_empty();
            match digits.parse::<u16>() {
                Ok(port) if canonical => port,
                _ => return Err(format!("bad port {digits:?} (1 to 65535)")),
            }
        }
    };
    let (host, wildcard) = match host.strip_prefix("*.") {
        Some(parent) if allow_wildcard => {
            if !parent.contains('.') {
                return Err("a wildcard needs at least two labels after \"*.\"".to_owned());
            }
            (Cow::Owned(parent.to_owned()), true)
        }
        _ => (host, false),
    };
    if host.contains('*') {
        return Err("'*' is only allowed as the whole first label (\"*.example.com\")".to_owned());
    }
    if !host.starts_with('[') {
        check_name(&host)?;
        if wildcard && host.parse::<Ipv4Addr>().is_ok() {
            return Err("a wildcard cannot precede an IP address".to_owned());
        }
    }
    Ok(OriginParts {
        scheme,
        host,
        wildcard,
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_parser_for_patterns_and_values() {
        assert_eq!(
            parse_origin("https://*.Example.com:443", true).map(|o| o.serialize()),
            Ok("https://*.example.com".to_owned())
        );
        assert!(parse_origin("https://*.example.com", false).is_err());
        assert!(parse_origin("https://*.com", true).is_err());
        assert!(parse_origin("https://*.1.2.3.4", true).is_err());
        assert_eq!(
            parse_origin("http://[0:0::1]:80", false).map(|o| o.serialize()),
            Ok("http://[::1]".to_owned())
        );
        assert_eq!(
            parse_origin("http://a.com:8080", false).map(|o| (o.host, o.port)),
            Ok(("a.com".to_owned(), 8080))
        );
        for bad in ["https://a.com:+443", "https://a%2ecom", "https://a.com."] {
            assert!(parse_origin(bad, true).is_err(), "{bad}");
        }
        let long_label = format!("https://{}.com", "a".repeat(64));
        assert!(parse_origin(&long_label, false).is_err());
    }
}
