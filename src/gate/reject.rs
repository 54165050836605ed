//! The one table of HTTP rejections (SPEC §4): every refused handshake is a [`Reject`], and
//! only this file decides its status, headers and body.
//!
//! Bodies are one short plain-text line and never hold any part of a token. Values that may
//! carry outside text (scopes, descriptions, relayed upstream headers) are written through
//! [`crate::proto::http::response`], which drops control characters and escapes quoted-strings.

use crate::proto::http::request::HttpError;
use crate::proto::http::response::{
    write_decimal, write_field_text, write_header, write_plain_head, write_quoted_string,
};

/// A refused handshake, one variant per SPEC §4 outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// Request line + headers over `max_request_bytes`.
    HeadTooLarge,
    /// More than 64 header lines.
    TooManyHeaders,
    /// Something arrived, but not the whole head within `handshake_timeout`.
    HandshakeTimeout,
    /// Not a well-formed HTTP/1.1 upgrade request; the reason is a short fixed text.
    Malformed(&'static str),
    /// A well-formed request with a method other than GET.
    MethodNotAllowed,
    /// No `Upgrade: websocket`.
    MissingUpgrade,
    /// No `Connection: upgrade`.
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Key` missing or invalid.
    BadKey,
    /// `Sec-WebSocket-Version` not 13.
    UnsupportedVersion,
    /// No route for the path.
    NoRoute,
    /// `Origin` not in `origin.allow`.
    OriginNotAllowed,
    /// No `Origin` while `origin.allow_missing = false`.
    OriginMissing,
    /// No token from any configured source.
    MissingToken,
    /// More than one token (two sources, or one source twice).
    MultipleTokens,
    /// The token was refused; `description` is a fixed text that never holds token data.
    InvalidToken {
        /// `error_description` for `WWW-Authenticate` and the body: one of
        /// `TokenError::DESCRIPTIONS` (SPEC §4: uniform on the wire).
        description: &'static str,
        /// The precise reason (a `TokenError::reason_label`), for logs only.
        reason: &'static str,
    },
    /// The token is valid but lacks some scope of the route.
    InsufficientScope {
        /// Every scope the route needs, space-separated.
        scope: String,
    },
    /// A per-IP or per-subject limit, or the failed-token budget, is exhausted.
    RateLimited {
        /// Whole seconds for `Retry-After`.
        retry_after_secs: u64,
    },
    /// `max_connections` reached.
    OverCapacity,
    /// The gateway is shutting down.
    Draining,
    /// The upstream answered its handshake with a non-101 status.
    UpstreamStatus {
        /// The upstream's status (relayed only when in 400..=599).
        status: u16,
        /// The upstream's body.
        body: String,
        /// The upstream's `WWW-Authenticate`, relayed.
        www_authenticate: Option<String>,
        /// The upstream's `Retry-After`, relayed.
        retry_after: Option<String>,
    },
    /// No upstream could be reached, or it answered with something that cannot be relayed.
    BadGateway,
    /// No complete upstream answer within `upstream_timeout`.
    GatewayTimeout,
}

/// Body of a 502.
const BAD_GATEWAY_BODY: &str = "bad gateway\n";

impl From<HttpError> for Reject {
    /// The rejection (status, headers, body) a refused request head is answered with.
    fn from(e: HttpError) -> Reject {
        match e {
            HttpError::HeadTooLarge => Reject::HeadTooLarge,
            HttpError::TooManyHeaders => Reject::TooManyHeaders,
            HttpError::Malformed(reason) => Reject::Malformed(reason),
            HttpError::MethodNotAllowed => Reject::MethodNotAllowed,
            HttpError::MissingUpgrade => Reject::MissingUpgrade,
            HttpError::MissingConnectionUpgrade => Reject::MissingConnectionUpgrade,
            HttpError::BadKey => Reject::BadKey,
            HttpError::UnsupportedVersion => Reject::UnsupportedVersion,
        }
    }
}

impl Reject {
    /// True when an upstream status is relayed as is (otherwise the answer is 502).
    fn relays(status: u16) -> bool {
        // SPEC §5: the upstream's refusal is relayed; only a client or server error is a
        // refusal, anything else (a 2xx or 3xx instead of 101, garbage) is a bad gateway.
        (400..=599).contains(&status)
    }

    /// The HTTP status of this rejection.
    pub fn status(&self) -> u16 {
        match self {
            // SPEC §4: "request line + headers over `max_request_bytes` ..., or more than 64
            // header lines" → 431 (RFC 6585 §5).
            Reject::HeadTooLarge | Reject::TooManyHeaders => 431,
            // SPEC §4: "not arrived within `handshake_timeout`" → 408 if anything was received.
            Reject::HandshakeTimeout => 408,
            Reject::Malformed(_)
            | Reject::MissingUpgrade
            | Reject::MissingConnectionUpgrade
            | Reject::BadKey => 400,
            Reject::MethodNotAllowed => 405,
            // RFC 6455 §4.2.2: a version the server does not understand gets 426 Upgrade
            // Required with the supported versions.
            Reject::UnsupportedVersion => 426,
            Reject::NoRoute => 404,
            Reject::OriginNotAllowed | Reject::OriginMissing => 403,
            // RFC 6750 §3.1: invalid_request is 400, invalid_token 401, insufficient_scope 403.
            Reject::MissingToken | Reject::InvalidToken { .. } => 401,
            Reject::MultipleTokens => 400,
            Reject::InsufficientScope { .. } => 403,
            // RFC 6585 §4.
            Reject::RateLimited { .. } => 429,
            Reject::OverCapacity | Reject::Draining => 503,
            Reject::UpstreamStatus { status, .. } if Self::relays(*status) => *status,
            Reject::UpstreamStatus { .. } | Reject::BadGateway => 502,
            Reject::GatewayTimeout => 504,
        }
    }

    /// A stable snake_case name for metrics and logs.
    pub fn reason_label(&self) -> &'static str {
        match self {
            Reject::HeadTooLarge => "head_too_large",
            Reject::TooManyHeaders => "too_many_headers",
            Reject::HandshakeTimeout => "handshake_timeout",
            Reject::Malformed(_) => "malformed",
            Reject::MethodNotAllowed => "method_not_allowed",
            Reject::MissingUpgrade => "missing_upgrade",
            Reject::MissingConnectionUpgrade => "missing_connection_upgrade",
            Reject::BadKey => "bad_key",
            Reject::UnsupportedVersion => "unsupported_version",
            Reject::NoRoute => "no_route",
            Reject::OriginNotAllowed => "origin_not_allowed",
            Reject::OriginMissing => "origin_missing",
            Reject::MissingToken => "missing_token",
            Reject::MultipleTokens => "multiple_tokens",
            // SPEC §4: logs keep the precise reason; the wire gets the uniform description.
            Reject::InvalidToken { reason, .. } => reason,
            Reject::InsufficientScope { .. } => "insufficient_scope",
            Reject::RateLimited { .. } => "rate_limited",
            Reject::OverCapacity => "over_capacity",
            Reject::Draining => "draining",
            Reject::UpstreamStatus { .. } => "upstream_status",
            Reject::BadGateway => "bad_gateway",
            Reject::GatewayTimeout => "gateway_timeout",
        }
    }

    /// The body, as up to three pieces written one after another.
    fn body(&self) -> [&str; 3] {
        let line = |text| [text, "", ""];
        match self {
            Reject::HeadTooLarge => line("request head too large\n"),
            Reject::TooManyHeaders => line("too many header fields\n"),
            Reject::HandshakeTimeout => line("handshake timeout\n"),
            Reject::Malformed(reason) => ["malformed request: ", reason, "\n"],
            Reject::MethodNotAllowed => line("method not allowed: use GET\n"),
            Reject::MissingUpgrade => line("missing Upgrade: websocket\n"),
            Reject::MissingConnectionUpgrade => line("missing Connection: upgrade\n"),
            Reject::BadKey => line("missing or invalid Sec-WebSocket-Key\n"),
            Reject::UnsupportedVersion => line("unsupported Sec-WebSocket-Version: use 13\n"),
            Reject::NoRoute => line("no route\n"),
            Reject::OriginNotAllowed => line("origin not allowed\n"),
            Reject::OriginMissing => line("origin required\n"),
            Reject::MissingToken => line("missing token\n"),
            Reject::MultipleTokens => line("more than one token\n"),
            Reject::InvalidToken { description, .. } => ["invalid token: ", description, "\n"],
            Reject::InsufficientScope { .. } => line("insufficient scope\n"),
            Reject::RateLimited { .. } => line("too many requests\n"),
            Reject::OverCapacity => line("over capacity\n"),
            Reject::Draining => line("shutting down\n"),
            Reject::UpstreamStatus { status, body, .. } if Self::relays(*status) => {
                [body.as_str(), "", ""]
            }
            Reject::UpstreamStatus { .. } | Reject::BadGateway => line(BAD_GATEWAY_BODY),
            Reject::GatewayTimeout => line("upstream timeout\n"),
        }
    }

    /// Appends the complete HTTP/1.1 response (with `Connection: close`) to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let body = self.body();
        let content_length = body.iter().map(|piece| piece.len()).sum();
        write_plain_head(out, self.status(), content_length);
        match self {
            // RFC 9110 §15.5.6: a 405 "MUST generate an Allow header field".
            Reject::MethodNotAllowed => write_header(out, "Allow", "GET"),
            // RFC 6455 §4.2.2 / §4.4: tell the client which version we speak.
            Reject::UnsupportedVersion => write_header(out, "Sec-WebSocket-Version", "13"),
            // RFC 6750 §3: no token at all gets a challenge without an error code.
            Reject::MissingToken => write_header(out, "WWW-Authenticate", "Bearer"),
            Reject::MultipleTokens => {
                write_header(out, "WWW-Authenticate", "Bearer error=\"invalid_request\"")
            }
            Reject::InvalidToken { description, .. } => {
                out.extend_from_slice(
                    b"WWW-Authenticate: Bearer error=\"invalid_token\", error_description=",
                );
                write_quoted_string(out, description);
                out.extend_from_slice(b"\r\n");
            }
            // RFC 6750 §3.1: insufficient_scope "MAY include the scope attribute with the
            // scope necessary to access the protected resource".
            Reject::InsufficientScope { scope } => {
                out.extend_from_slice(
                    b"WWW-Authenticate: Bearer error=\"insufficient_scope\", scope=",
                );
                write_quoted_string(out, scope);
                out.extend_from_slice(b"\r\n");
            }
            // RFC 6585 §4: a 429 MAY carry Retry-After; SPEC §4 makes it whole seconds, and
            // at least 1 so that a client never reads it as "retry at once".
            Reject::RateLimited { retry_after_secs } => {
                out.extend_from_slice(b"Retry-After: ");
                write_decimal(out, (*retry_after_secs).max(1));
                out.extend_from_slice(b"\r\n");
            }
            // SPEC §5: the upstream's `WWW-Authenticate` / `Retry-After` are relayed.
            Reject::UpstreamStatus {
                status,
                www_authenticate,
                retry_after,
                ..
            } if Self::relays(*status) => {
                if let Some(value) = www_authenticate {
                    write_header(out, "WWW-Authenticate", value);
                }
                if let Some(value) = retry_after {
                    out.extend_from_slice(b"Retry-After: ");
                    write_field_text(out, value);
                    out.extend_from_slice(b"\r\n");
                }
            }
            _ => {}
        }
        out.extend_from_slice(b"\r\n");
        for piece in body {
            out.extend_from_slice(piece.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response parsed back: status, headers (name, value) and body.
    struct Parsed {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Parsed {
        fn header(&self, name: &str) -> Option<&str> {
            let mut found = self
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str());
            let first = found.next();
            assert!(found.next().is_none(), "{name} repeated");
            first
        }
    }

    /// Writes `reject`, parses it with httparse and checks what every rejection must have.
    fn render(reject: &Reject) -> Parsed {
        let mut out = Vec::new();
        reject.write(&mut out);
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(&out) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!(
                "unparsable response {other:?}: {}",
                String::from_utf8_lossy(&out)
            ),
        };
        assert_eq!(response.version, Some(1));
        let status = response.code.expect("status");
        assert_eq!(status, reject.status());
        let reason = response.reason.expect("reason");
        assert!(!reason.is_empty());
        let line = format!("HTTP/1.1 {status} {reason}\r\n");
        assert!(out.starts_with(line.as_bytes()));
        let headers: Vec<(String, String)> = response
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8(h.value.to_vec()).expect("UTF-8 header"),
                )
            })
            .collect();
        let parsed = Parsed {
            status,
            headers,
            body: out[head_len..].to_vec(),
        };
        assert_eq!(parsed.header("Connection"), Some("close"));
        assert_eq!(
            parsed.header("Content-Type"),
            Some("text/plain; charset=utf-8")
        );
        let content_length: usize = parsed
            .header("Content-Length")
            .expect("Content-Length")
            .parse()
            .expect("number");
        assert_eq!(content_length, parsed.body.len());
        assert!(!parsed.body.is_empty());
        assert!(parsed.body.ends_with(b"\n") || matches!(reject, Reject::UpstreamStatus { .. }));
        parsed
    }

    fn check(reject: Reject, status: u16, headers: &[(&str, &str)]) -> Parsed {
        let parsed = render(&reject);
        assert_eq!(parsed.status, status, "{reject:?}");
        for (name, value) in headers {
            assert_eq!(parsed.header(name), Some(*value), "{reject:?} {name}");
        }
        parsed
    }

    fn body(parsed: &Parsed) -> &str {
        std::str::from_utf8(&parsed.body).expect("UTF-8 body")
    }

    #[test]
    fn head_too_large() {
        check(Reject::HeadTooLarge, 431, &[]);
    }

    #[test]
    fn too_many_headers() {
        check(Reject::TooManyHeaders, 431, &[]);
    }

    #[test]
    fn handshake_timeout() {
        check(Reject::HandshakeTimeout, 408, &[]);
    }

    #[test]
    fn malformed() {
        let parsed = check(Reject::Malformed("not HTTP/1.1"), 400, &[]);
        assert_eq!(body(&parsed), "malformed request: not HTTP/1.1\n");
    }

    #[test]
    fn method_not_allowed() {
        let parsed = check(Reject::MethodNotAllowed, 405, &[("Allow", "GET")]);
        assert!(parsed.header("WWW-Authenticate").is_none());
    }

    #[test]
    fn missing_upgrade() {
        check(Reject::MissingUpgrade, 400, &[]);
    }

    #[test]
    fn missing_connection_upgrade() {
        check(Reject::MissingConnectionUpgrade, 400, &[]);
    }

    #[test]
    fn bad_key() {
        check(Reject::BadKey, 400, &[]);
    }

    #[test]
    fn unsupported_version() {
        check(
            Reject::UnsupportedVersion,
            426,
            &[("Sec-WebSocket-Version", "13")],
        );
    }

    #[test]
    fn no_route() {
        check(Reject::NoRoute, 404, &[]);
    }

    #[test]
    fn origin_not_allowed() {
        check(Reject::OriginNotAllowed, 403, &[]);
    }

    #[test]
    fn origin_missing() {
        check(Reject::OriginMissing, 403, &[]);
    }

    #[test]
    fn missing_token() {
        check(Reject::MissingToken, 401, &[("WWW-Authenticate", "Bearer")]);
    }

    #[test]
    fn multiple_tokens() {
        check(
            Reject::MultipleTokens,
            400,
            &[("WWW-Authenticate", "Bearer error=\"invalid_request\"")],
        );
    }

    #[test]
    fn invalid_token() {
        let parsed = check(
            Reject::InvalidToken {
                description: "expired",
                reason: "expired",
            },
            401,
            &[(
                "WWW-Authenticate",
                "Bearer error=\"invalid_token\", error_description=\"expired\"",
            )],
        );
        assert_eq!(body(&parsed), "invalid token: expired\n");
    }

    #[test]
    fn invalid_token_description_is_escaped() {
        check(
            Reject::InvalidToken {
                description: "bad \"kid\" \\ x\r\ny",
                reason: "unknown_kid",
            },
            401,
            &[(
                "WWW-Authenticate",
                "Bearer error=\"invalid_token\", error_description=\"bad \\\"kid\\\" \\\\ xy\"",
            )],
        );
    }

    #[test]
    fn insufficient_scope() {
        let parsed = check(
            Reject::InsufficientScope {
                scope: "chat admin".to_owned(),
            },
            403,
            &[(
                "WWW-Authenticate",
                "Bearer error=\"insufficient_scope\", scope=\"chat admin\"",
            )],
        );
        assert_eq!(body(&parsed), "insufficient scope\n");
    }

    #[test]
    fn insufficient_scope_is_escaped() {
        check(
            Reject::InsufficientScope {
                scope: "a\"b c\\d\r\nSet-Cookie: x".to_owned(),
            },
            403,
            &[(
                "WWW-Authenticate",
                "Bearer error=\"insufficient_scope\", scope=\"a\\\"b c\\\\dSet-Cookie: x\"",
            )],
        );
    }

    #[test]
    fn rate_limited() {
        check(
            Reject::RateLimited {
                retry_after_secs: 7,
            },
            429,
            &[("Retry-After", "7")],
        );
        check(
            Reject::RateLimited {
                retry_after_secs: 0,
            },
            429,
            &[("Retry-After", "1")],
        );
        check(
            Reject::RateLimited {
                retry_after_secs: u64::MAX,
            },
            429,
            &[("Retry-After", "18446744073709551615")],
        );
    }

    #[test]
    fn over_capacity() {
        check(Reject::OverCapacity, 503, &[]);
    }

    #[test]
    fn draining() {
        check(Reject::Draining, 503, &[]);
    }

    #[test]
    fn upstream_status_relayed() {
        let parsed = check(
            Reject::UpstreamStatus {
                status: 401,
                body: "who are you?".to_owned(),
                www_authenticate: Some("Bearer realm=\"up\"".to_owned()),
                retry_after: Some("30".to_owned()),
            },
            401,
            &[
                ("WWW-Authenticate", "Bearer realm=\"up\""),
                ("Retry-After", "30"),
            ],
        );
        assert_eq!(body(&parsed), "who are you?");
        let parsed = check(
            Reject::UpstreamStatus {
                status: 599,
                body: "x".to_owned(),
                www_authenticate: None,
                retry_after: None,
            },
            599,
            &[],
        );
        assert!(parsed.header("WWW-Authenticate").is_none());
        assert!(parsed.header("Retry-After").is_none());
    }

    #[test]
    fn upstream_headers_cannot_inject() {
        let parsed = check(
            Reject::UpstreamStatus {
                status: 429,
                body: "slow down\r\n\r\nHTTP/1.1 200 OK\r\n".to_owned(),
                www_authenticate: Some("Bearer\r\nSet-Cookie: a=b".to_owned()),
                retry_after: Some("5\r\nX: y".to_owned()),
            },
            429,
            &[
                ("WWW-Authenticate", "BearerSet-Cookie: a=b"),
                ("Retry-After", "5X: y"),
            ],
        );
        assert!(parsed.header("Set-Cookie").is_none());
        assert!(parsed.header("X").is_none());
        assert_eq!(body(&parsed), "slow down\r\n\r\nHTTP/1.1 200 OK\r\n");
    }

    #[test]
    fn upstream_status_outside_errors_is_502() {
        for status in [0, 101, 200, 302, 399, 600, 999, u16::MAX] {
            let parsed = check(
                Reject::UpstreamStatus {
                    status,
                    body: "secret upstream body".to_owned(),
                    www_authenticate: Some("Bearer".to_owned()),
                    retry_after: Some("1".to_owned()),
                },
                502,
                &[],
            );
            assert_eq!(body(&parsed), BAD_GATEWAY_BODY);
            assert!(parsed.header("WWW-Authenticate").is_none());
            assert!(parsed.header("Retry-After").is_none());
        }
    }

    #[test]
    fn upstream_status_with_empty_body() {
        let reject = Reject::UpstreamStatus {
            status: 404,
            body: String::new(),
            www_authenticate: None,
            retry_after: None,
        };
        let mut out = Vec::new();
        reject.write(&mut out);
        assert!(out.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
        assert!(out.ends_with(b"Content-Length: 0\r\nConnection: close\r\n\r\n"));
    }

    #[test]
    fn bad_gateway() {
        check(Reject::BadGateway, 502, &[]);
    }

    #[test]
    fn gateway_timeout() {
        check(Reject::GatewayTimeout, 504, &[]);
    }

    #[test]
    fn labels_are_snake_case_and_distinct() {
        let all = [
            Reject::HeadTooLarge,
            Reject::TooManyHeaders,
            Reject::HandshakeTimeout,
            Reject::Malformed("x"),
            Reject::MethodNotAllowed,
            Reject::MissingUpgrade,
            Reject::MissingConnectionUpgrade,
            Reject::BadKey,
            Reject::UnsupportedVersion,
            Reject::NoRoute,
            Reject::OriginNotAllowed,
            Reject::OriginMissing,
            Reject::MissingToken,
            Reject::MultipleTokens,
            Reject::InvalidToken {
                description: "x",
                reason: "bad_signature",
            },
            Reject::InsufficientScope {
                scope: String::new(),
            },
            Reject::RateLimited {
                retry_after_secs: 1,
            },
            Reject::OverCapacity,
            Reject::Draining,
            Reject::UpstreamStatus {
                status: 500,
                body: String::new(),
                www_authenticate: None,
                retry_after: None,
            },
            Reject::BadGateway,
            Reject::GatewayTimeout,
        ];
        let mut labels: Vec<&str> = all.iter().map(Reject::reason_label).collect();
        for label in &labels {
            assert!(label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), all.len());
    }

    // The statuses of the request-head errors (moved from proto/http/request.rs, which
    // asserted 431 for TooManyHeaders and 426 for UnsupportedVersion in its own tests).
    #[test]
    fn every_http_error_maps_to_its_status() {
        for (error, status) in [
            (HttpError::HeadTooLarge, 431),
            (HttpError::TooManyHeaders, 431),
            (HttpError::Malformed("x"), 400),
            (HttpError::MethodNotAllowed, 405),
            (HttpError::MissingUpgrade, 400),
            (HttpError::MissingConnectionUpgrade, 400),
            (HttpError::BadKey, 400),
            (HttpError::UnsupportedVersion, 426),
        ] {
            assert_eq!(Reject::from(error).status(), status, "{error}");
        }
    }
}
