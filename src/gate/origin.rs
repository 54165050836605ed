//! The Origin allowlist (SPEC §3 [origin], §4): exact entries and `*.` subdomain
//! wildcards; scheme and port must match, default ports normalised. One parser,
//! [`parse_origin`] (in `proto::http::origin`), reads both the config's patterns and the
//! requests' `Origin` values.

use crate::proto::http::origin::{parse_origin, parse_origin_parts, OriginParts};

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
        // Borrowed when the host is already canonical (a browser's): no allocation.
        let Ok(OriginParts {
            scheme, host, port, ..
        }) = parse_origin_parts(origin.trim_matches([' ', '\t']), false)
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
    fn the_config_refuses_what_a_request_may_not_carry() {
        for bad in ["https://a.com:+443", "https://a%2ecom", "https://a.com."] {
            assert!(OriginPolicy::new(&[bad.to_owned()], true).is_err(), "{bad}");
        }
    }
}
