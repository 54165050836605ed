//! CORS for the login listener (Fetch standard, "CORS protocol"): a page on a gateway
//! listener (`serve --demo`, or an application behind an allowed origin) posts to the
//! login endpoints, which are on `login.listen`, another origin.
//!
//! - `POST /login`, `/token`, `/logout`: only origins of the gateway's `[origin]` allowlist,
//!   matched by the same [`OriginPolicy`] as the WebSocket upgrade (SPEC §4: exact entries,
//!   `*.` wildcards by label), answered with the request's own `Origin` in
//!   `Access-Control-Allow-Origin` (never `*`) and `Vary: Origin`. No credentials mode:
//!   tokens travel in the JSON or form body, never in cookies, so no
//!   `Access-Control-Allow-Credentials`.
//! - A request whose `Origin` is not allowed is refused with 403 before anything is done
//!   (no password check, no failure budget spent, no token rotated): the browser would
//!   hide the answer from the page anyway, but a form-encoded `POST /token` or `/logout`
//!   is a "simple" request that reaches the server without a preflight, and an origin
//!   that may not open the socket has no business using its tokens. A request without
//!   `Origin` (curl, a service, a native app) is served as before; a non-browser client
//!   can write any `Origin` it likes, so refusing those would protect nothing.
//! - The preflight (`OPTIONS` with `Origin`) of an allowed origin: 204 with
//!   `Access-Control-Allow-Methods: POST`, `Access-Control-Allow-Headers: content-type`,
//!   `Access-Control-Max-Age`; of another origin: 403 without CORS headers.
//! - `GET /.well-known/jwks.json` and `/.well-known/openid-configuration`:
//!   `Access-Control-Allow-Origin: *`; they are public keys and metadata (what any
//!   verifier may fetch), and a wildcard carries no credentials.

use hyper::header::{self, HeaderMap, HeaderValue};

use crate::gate::origin::{OriginPolicy, OriginVerdict};

/// How long a browser may cache a preflight answer, in seconds (Chromium caps it at 7200).
pub const MAX_AGE_SECS: u32 = 600;

/// What the `Origin` of a request to a token endpoint says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No `Origin`: not a cross-origin browser request; served without CORS headers.
    NoOrigin,
    /// An allowed origin, to be echoed in `Access-Control-Allow-Origin`.
    Allowed(HeaderValue),
    /// An `Origin` (or several) that the allowlist refuses.
    Refused,
}

/// Classifies `headers`' `Origin` against `policy`.
pub fn caller(headers: &HeaderMap, policy: &OriginPolicy) -> Caller {
    let mut values = headers.get_all(header::ORIGIN).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return if headers.contains_key(header::ORIGIN) {
            // RFC 6454 §7.3: at most one Origin field.
            Caller::Refused
        } else {
            Caller::NoOrigin
        };
    };
    let Ok(text) = value.to_str() else {
        return Caller::Refused;
    };
    match policy.check(Some(text)) {
        OriginVerdict::Allowed => Caller::Allowed(value.clone()),
        OriginVerdict::NotAllowed | OriginVerdict::Missing => Caller::Refused,
    }
}

/// Headers of an answer to a token endpoint (actual request or preflight) for `caller`.
pub fn apply(headers: &mut HeaderMap, caller: &Caller) {
    // The answer depends on Origin whatever it was (Fetch §3.2.5 "CORS protocol and HTTP
    // caches").
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    if let Caller::Allowed(origin) = caller {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        // Readable by the page: how long to wait after a 429 or 503.
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Retry-After"),
        );
    }
}

/// The extra headers of an allowed preflight.
pub fn apply_preflight(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(MAX_AGE_SECS),
    );
}

/// The headers of a public document (JWK Set, discovery).
pub fn apply_public(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn policy() -> OriginPolicy {
        OriginPolicy::new(
            &[
                "http://127.0.0.1:8080".to_owned(),
                "https://*.example.com".to_owned(),
            ],
            true,
        )
        .unwrap()
    }

    fn headers(origins: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for o in origins {
            h.append(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn only_listed_origins_are_echoed() {
        let p = policy();
        assert_eq!(caller(&headers(&[]), &p), Caller::NoOrigin);
        assert_eq!(
            caller(&headers(&["http://127.0.0.1:8080"]), &p),
            Caller::Allowed(HeaderValue::from_static("http://127.0.0.1:8080"))
        );
        assert_eq!(
            caller(&headers(&["https://app.example.com"]), &p),
            Caller::Allowed(HeaderValue::from_static("https://app.example.com"))
        );
        for refused in [
            "http://127.0.0.1:8081",
            "https://example.com",
            "http://evil.example",
            "null",
            "*",
            "http://127.0.0.1:8080/",
        ] {
            assert_eq!(
                caller(&headers(&[refused]), &p),
                Caller::Refused,
                "{refused}"
            );
        }
        assert_eq!(
            caller(
                &headers(&["http://127.0.0.1:8080", "http://127.0.0.1:8080"]),
                &p
            ),
            Caller::Refused
        );
        // An empty allowlist refuses every browser origin, as the upgrade does.
        let empty = OriginPolicy::new(&[], true).unwrap();
        assert_eq!(
            caller(&headers(&["http://127.0.0.1:8080"]), &empty),
            Caller::Refused
        );
    }

    #[test]
    fn headers_never_carry_a_wildcard_or_credentials_for_token_endpoints() {
        let mut h = HeaderMap::new();
        apply(
            &mut h,
            &Caller::Allowed(HeaderValue::from_static("http://127.0.0.1:8080")),
        );
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://127.0.0.1:8080"
        );
        assert_eq!(h[header::VARY], "Origin");
        assert!(!h.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
        let mut refused = HeaderMap::new();
        apply(&mut refused, &Caller::Refused);
        assert!(!refused.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(refused[header::VARY], "Origin");
    }
}
