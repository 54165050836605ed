//! The Origin allowlist (SPEC §3 [origin], §4): exact entries and `*.` subdomain
//! wildcards; scheme and port must match, default ports normalised. One parser,
//! [`parse_origin`], reads both the config's patterns and the requests' `Origin` values.

use std::net::{Ipv4Addr, Ipv6Addr};

/// One parsed allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    scheme: &'static str,
    /// For a wildcard, the suffix including its leading dot (`.example.com`).
    host: String,
    wildcard: bool,
    port: u16,
}

/// The compiled allowlist.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    entries: Vec<Entry>,
    allow_missing: bool,
}

/// Outcome of an Origin check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginVerdict {
    /// Allowed (listed, or absent while `allow_missing`).
    Allowed,
    /// Present and not on the list.
    NotAllowed,
    /// Absent while `allow_missing = false`.
    Missing,
}

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
        (format!("[{address}]"), port)
    } else {
        let (name, port) = match rest.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (rest, None),
        };
        (name.to_ascii_lowercase(), port)
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
            (parent.to_owned(), true)
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
    Ok(Origin {
        scheme,
        host,
        wildcard,
        port,
    })
}

impl OriginPolicy {
    /// Compiles the allowlist; returns the first entry that does not parse.
    pub fn new(allow: &[String], allow_missing: bool) -> Result<OriginPolicy, String> {
        let mut entries = Vec::with_capacity(allow.len());
        for a in allow {
            let origin = parse_origin(a, true).map_err(|e| format!("not an origin: {a:?}: {e}"))?;
            let host = if origin.wildcard {
                format!(".{}", origin.host)
            } else {
                origin.host
            };
            entries.push(Entry {
                scheme: origin.scheme,
                host,
                wildcard: origin.wildcard,
                port: origin.port,
            });
        }
        Ok(OriginPolicy {
            entries,
            allow_missing,
        })
    }

    /// Checks the request's `Origin` header value (None when absent).
    pub fn check(&self, origin: Option<&str>) -> OriginVerdict {
        let Some(origin) = origin else {
            return if self.allow_missing {
                OriginVerdict::Allowed
            } else {
                OriginVerdict::Missing
            };
        };
        // SPEC §4: a value that is not a serialized origin matches no pattern. Only the
        // field's optional whitespace (RFC 9110 §5.5) is trimmed.
        let Ok(Origin {
            scheme, host, port, ..
        }) = parse_origin(origin.trim_matches([' ', '\t']), false)
        else {
            return OriginVerdict::NotAllowed;
        };
        let ok = self.entries.iter().any(|e| {
            e.scheme == scheme
                && e.port == port
                && if e.wildcard {
                    // `*.example.com` matches one or more labels before `.example.com`,
                    // never the apex itself.
                    host.len() > e.host.len() && host.ends_with(&e.host)
                } else {
                    e.host == host
                }
        });
        if ok {
            OriginVerdict::Allowed
        } else {
            OriginVerdict::NotAllowed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], missing: bool) -> OriginPolicy {
        let v: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        OriginPolicy::new(&v, missing).expect("valid test policy")
    }

    #[test]
    fn exact_and_default_ports() {
        let p = policy(&["https://app.example.com"], true);
        assert_eq!(
            p.check(Some("https://app.example.com")),
            OriginVerdict::Allowed
        );
        assert_eq!(
            p.check(Some("https://APP.example.com:443")),
            OriginVerdict::Allowed
        );
        assert_eq!(
            p.check(Some("http://app.example.com")),
            OriginVerdict::NotAllowed
        );
        assert_eq!(
            p.check(Some("https://app.example.com:8443")),
            OriginVerdict::NotAllowed
        );
        assert_eq!(
            p.check(Some("https://app.example.com.evil.com")),
            OriginVerdict::NotAllowed
        );
        assert_eq!(p.check(Some("null")), OriginVerdict::NotAllowed);
        assert_eq!(p.check(None), OriginVerdict::Allowed);
    }

    #[test]
    fn wildcard_never_matches_apex() {
        let p = policy(&["https://*.example.com"], false);
        assert_eq!(
            p.check(Some("https://a.example.com")),
            OriginVerdict::Allowed
        );
        assert_eq!(
            p.check(Some("https://a.b.example.com")),
            OriginVerdict::Allowed
        );
        assert_eq!(
            p.check(Some("https://example.com")),
            OriginVerdict::NotAllowed
        );
        assert_eq!(
            p.check(Some("https://badexample.com")),
            OriginVerdict::NotAllowed
        );
        assert_eq!(p.check(None), OriginVerdict::Missing);
    }

    #[test]
    fn empty_list_refuses_every_origin() {
        let p = policy(&[], true);
        assert_eq!(
            p.check(Some("https://a.example.com")),
            OriginVerdict::NotAllowed
        );
        assert_eq!(p.check(None), OriginVerdict::Allowed);
    }

    #[test]
    fn ipv6_and_ports() {
        let p = policy(&["http://[::1]:8080", "http://localhost:3000"], true);
        assert_eq!(p.check(Some("http://[::1]:8080")), OriginVerdict::Allowed);
        assert_eq!(
            p.check(Some("http://localhost:3000")),
            OriginVerdict::Allowed
        );
        assert_eq!(p.check(Some("http://localhost")), OriginVerdict::NotAllowed);
    }

    #[test]
    fn runtime_values_must_be_serialized_origins() {
        // SPEC §4 "Origins": anything that is not a serialized origin matches no pattern,
        // even one that would match if read leniently.
        let p = policy(
            &[
                "https://app.example.com",
                "https://*.example.com",
                "http://10.0.0.1:8080",
            ],
            true,
        );
        for bad in [
            "https://*.example.com",
            "https://a.*.example.com",
            "https://a..example.com",
            "https://.a.example.com",
            "https://a.example.com.",
            "https://%61pp.example.com",
            "https://app%2eexample.com",
            "https://user@app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://app.example.com?x",
            "https://app.example.com#x",
            "https://app.example.com:+443",
            "https://app.example.com:0443",
            "https://app.example.com:",
            "https://app.example.com:443:443",
            "https://app.example.com:99999",
            "https://app\u{0}.example.com",
            "https://app\t.example.com",
            "https://app .example.com",
            "https://app.example.com\r\n",
            "https://ápp.example.com",
            "https://a_b.example.com",
            "https://-a.example.com",
            "https://a-.example.com",
            "ftp://app.example.com",
            "app.example.com",
            "null",
            "",
            "http://10.0.0.01:8080",
            "http://10.0.0:8080",
            "http://010.0.0.1:8080",
            "http://[::1:8080",
            "http://[::g]:8080",
        ] {
            assert_eq!(p.check(Some(bad)), OriginVerdict::NotAllowed, "{bad:?}");
        }
        for good in [
            "https://app.example.com",
            "HTTPS://App.Example.COM:443",
            "https://x.example.com",
            "https://x-1.y.example.com",
            "http://10.0.0.1:8080",
            " https://app.example.com\t",
        ] {
            assert_eq!(p.check(Some(good)), OriginVerdict::Allowed, "{good:?}");
        }
    }

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
        // The config refuses what a request may not carry.
        for bad in ["https://a.com:+443", "https://a%2ecom", "https://a.com."] {
            assert!(OriginPolicy::new(&[bad.to_owned()], true).is_err(), "{bad}");
        }
        let long_label = format!("https://{}.com", "a".repeat(64));
        assert!(parse_origin(&long_label, false).is_err());
    }
}
