//! The Origin allowlist (SPEC §3 [origin], §4): exact entries and `*.` subdomain
//! wildcards; scheme and port must match, default ports normalised.

/// One parsed allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    scheme: String,
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

/// Splits `scheme://host[:port]` (no path, no userinfo) into lowercase parts with the
/// default port filled in. `None` for anything else, including the opaque origin `null`.
fn parse_origin(s: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = s.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    if rest.is_empty() || rest.contains(['/', '@', '?', '#', ' ']) {
        return None;
    }
    let (host, port) = if let Some(stripped) = rest.strip_prefix('[') {
        // IPv6 literal: [::1]:8080
        let (h, after) = stripped.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        (format!("[{}]", h.to_ascii_lowercase()), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), p.parse().ok()?),
            None => (rest.to_ascii_lowercase(), default_port),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some((scheme, host, port))
}

impl OriginPolicy {
    /// Compiles the allowlist; returns the first entry that does not parse.
    pub fn new(allow: &[String], allow_missing: bool) -> Result<OriginPolicy, String> {
        let mut entries = Vec::with_capacity(allow.len());
        for a in allow {
            let (scheme, host, port) =
                parse_origin(a).ok_or_else(|| format!("not an origin: {a:?}"))?;
            let (host, wildcard) = match host.strip_prefix("*.") {
                Some(suffix) if !suffix.is_empty() => (format!(".{suffix}"), true),
                _ => (host, false),
            };
            entries.push(Entry {
                scheme,
                host,
                wildcard,
                port,
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
        let Some((scheme, host, port)) = parse_origin(origin.trim()) else {
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
}
