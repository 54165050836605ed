//! The admin listener (SPEC §3 `[admin]`, §6 revocation, §7 observability): `/healthz`,
//! `/readyz`, `/metrics` and `POST /revoke`, on the control plane.
//!
//! [`handle`] is the whole route table, pure; [`listener`] is the I/O shell around it: hyper
//! on the control plane's tokio runtime, off the workers' event loops, so that a scrape or a
//! revocation never delays a WebSocket. [`gateway`] is what the table reaches in the running
//! gateway, [`revlog`] the durable revocation log.
//!
//! | request | answer |
//! |---|---|
//! | `GET`/`HEAD /healthz` | 200 `ok`: the process is alive |
//! | `GET`/`HEAD /readyz` | 200 `ready` when listening with keys loaded, else 503 |
//! | `GET`/`HEAD /metrics` | 200, Prometheus text format 0.0.4 ([`crate::metrics`]) |
//! | `GET`/`HEAD /.well-known/identity-key.jwk` | 200, the identity-signing public key (JWK), with `[admin] identity_key`; else 404 |
//! | `POST /revoke` | 200 `{"revoked":true,"closed":N}`; 401 / 403 (token first), then 400 for the body; 503 when the revocation could not be made durable |
//! | another method on those paths | 405 with `Allow` |
//! | another path | 404 |
//! | unreadable HTTP | 400, 411, 413 or 431 ([`listener`]); 408 when a started body stalls |

pub mod gateway;
pub mod listener;
pub mod revlog;

#[cfg(test)]
mod fake;

/// Content type of plain-text answers.
const TEXT: &str = "text/plain; charset=utf-8";

/// Where the identity-signing public key is served (SPEC §5 `sign_identity`).
pub const IDENTITY_KEY_PATH: &str = "/.well-known/identity-key.jwk";

/// RFC 7517 §8.5.1: the media type of one JWK.
const JWK: &str = "application/jwk+json";

/// Content type of `/revoke` answers.
const JSON: &str = "application/json";

/// One admin request, as the route table sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminRequest<'a> {
    /// The method token, as sent (methods are case-sensitive, RFC 9110 §9.1).
    pub method: &'a str,
    /// The request target's path, without its query string.
    pub path: &'a str,
    /// The credentials of an `Authorization: Bearer <token>` header; `None` when absent,
    /// empty, or of another scheme.
    pub bearer: Option<&'a [u8]>,
    /// The request body (empty without one).
    pub body: &'a [u8],
}

/// What the admin server needs from the gateway (implemented in `net/`; a fake in tests).
pub trait AdminBackend: Send + Sync + 'static {
    /// True when the listeners are up and the keys are loaded (`/readyz`).
    fn ready(&self) -> bool;
    /// The Prometheus exposition of every metric (`/metrics`).
    fn metrics_text(&self) -> String;
    /// Verifies the bearer token (`None`: no `Authorization: Bearer`) and its admin scope.
    fn authorize(&self, bearer: Option<&[u8]>) -> Result<(), AuthFailure>;
    /// Applies a revocation from the body as received (the backend parses it, appends it to
    /// the revocation log, counts it in the metrics); returns the connections it closed.
    fn revoke(&self, body: &[u8]) -> Result<usize, RevokeFailure>;
    /// The public key that signs identity headers, as a JWK (SPEC §5 `sign_identity`);
    /// `None` without `[admin] identity_key`.
    fn identity_jwk(&self) -> Option<String> {
        None
    }
}

/// Why a `POST /revoke` is not authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No token, or a token that does not verify (401); the text is a fixed description.
    Unauthorized(&'static str),
    /// A valid token without the admin scope (403).
    Forbidden,
}

/// Why an authorized revocation was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeFailure {
    /// The body is not a revocation (400); the text says why.
    BadRequest(String),
    /// The revocation could not be made durable (503); the text says why.
    Unavailable(String),
}

/// An answer: status, extra headers, body, content type.
pub type AdminResponse = (u16, Vec<(&'static str, String)>, Vec<u8>, &'static str);

// === handle ===

/// Routes one request to its answer. Pure: everything it learns comes from `backend`.
///
/// Only `POST /revoke` needs a token, and its token is checked before its body is looked at
/// (401 / 403 come before 400).
pub fn handle(req: &AdminRequest<'_>, backend: &dyn AdminBackend) -> AdminResponse {
    let read_only = matches!(req.method, "GET" | "HEAD");
    match req.path {
        "/healthz" | "/readyz" | "/metrics" if !read_only => method_not_allowed("GET, HEAD"),
        "/healthz" => (200, Vec::new(), b"ok\n".to_vec(), TEXT),
        "/readyz" if backend.ready() => (200, Vec::new(), b"ready\n".to_vec(), TEXT),
        "/readyz" => (503, Vec::new(), b"not ready\n".to_vec(), TEXT),
        "/metrics" => (
            200,
            Vec::new(),
            backend.metrics_text().into_bytes(),
            crate::metrics::CONTENT_TYPE,
        ),
        IDENTITY_KEY_PATH if !read_only => method_not_allowed("GET, HEAD"),
        IDENTITY_KEY_PATH => match backend.identity_jwk() {
            Some(jwk) => (200, Vec::new(), jwk.into_bytes(), JWK),
            None => (404, Vec::new(), b"not found\n".to_vec(), TEXT),
        },
        "/revoke" if req.method != "POST" => method_not_allowed("POST"),
        "/revoke" => revoke(req, backend),
        _ => (404, Vec::new(), b"not found\n".to_vec(), TEXT),
    }
}

/// RFC 9110 §15.5.6: "The origin server MUST generate an Allow header field in a 405
/// response containing a list of the target resource's currently supported methods."
fn method_not_allowed(allow: &'static str) -> AdminResponse {
    (
        405,
        vec![("Allow", allow.to_owned())],
        b"method not allowed\n".to_vec(),
        TEXT,
    )
}

/// `POST /revoke`: token and scope first, then the body.
fn revoke(req: &AdminRequest<'_>, backend: &dyn AdminBackend) -> AdminResponse {
    match backend.authorize(req.bearer) {
        Err(failure) => refused(failure, req.bearer.is_some()),
        Ok(()) => revoked(backend.revoke(req.body)),
    }
}

/// The answer to a `POST /revoke` whose token was refused; `had_token`: whether the request
/// carried a bearer token at all.
pub fn refused(failure: AuthFailure, had_token: bool) -> AdminResponse {
    match failure {
        AuthFailure::Unauthorized(description) => {
            // RFC 6750 §3.1: a request without any credentials gets a challenge without an
            // error code; a token that does not verify gets `invalid_token`.
            let challenge = match had_token {
                false => "Bearer".to_owned(),
                true => format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    description_text(description)
                ),
            };
            (
                401,
                vec![("WWW-Authenticate", challenge)],
                failure_body("unauthorized", description),
                JSON,
            )
        }
        // RFC 6750 §3.1: `insufficient_scope` is answered with 403.
        AuthFailure::Forbidden => (
            403,
            vec![(
                "WWW-Authenticate",
                "Bearer error=\"insufficient_scope\"".to_owned(),
            )],
            failure_body("forbidden", "token lacks the admin scope"),
            JSON,
        ),
    }
}

/// The answer to an authorized `POST /revoke`, from what the backend made of its body.
pub fn revoked(outcome: Result<usize, RevokeFailure>) -> AdminResponse {
    match outcome {
        Ok(closed) => {
            let body = serde_json::json!({ "revoked": true, "closed": closed });
            (200, Vec::new(), json_bytes(&body), JSON)
        }
        Err(RevokeFailure::BadRequest(reason)) => {
            (400, Vec::new(), failure_body("bad_request", &reason), JSON)
        }
        Err(RevokeFailure::Unavailable(reason)) => {
            (503, Vec::new(), failure_body("unavailable", &reason), JSON)
        }
    }
}

/// `{"revoked":false,"error":<code>,"reason":<text>}` with a final line feed.
fn failure_body(error: &str, reason: &str) -> Vec<u8> {
    json_bytes(&serde_json::json!({ "revoked": false, "error": error, "reason": reason }))
}

/// A JSON value's text with a final line feed.
fn json_bytes(value: &serde_json::Value) -> Vec<u8> {
    let mut body = value.to_string().into_bytes();
    body.push(b'\n');
    body
}

/// `description` reduced to what RFC 6750 §3 allows in `error_description`:
/// `%x20-21 / %x23-5B / %x5D-7E` (printable ASCII without `"` and `\`).
fn description_text(description: &str) -> String {
    description
        .chars()
        .filter(|&c| matches!(c, ' '..='~') && c != '"' && c != '\\')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::fake::{Fake, ADMIN_TOKEN, USER_TOKEN};
    use super::*;
    use std::sync::atomic::Ordering;

    fn request<'a>(
        method: &'a str,
        path: &'a str,
        bearer: Option<&'a [u8]>,
        body: &'a [u8],
    ) -> AdminRequest<'a> {
        AdminRequest {
            method,
            path,
            bearer,
            body,
        }
    }

    fn header<'r>(answer: &'r AdminResponse, name: &str) -> Option<&'r str> {
        answer
            .1
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(answer: &AdminResponse) -> serde_json::Value {
        assert_eq!(answer.3, JSON);
        assert!(answer.2.ends_with(b"\n"));
        serde_json::from_slice(&answer.2).unwrap_or(serde_json::Value::Null)
    }

    // === route table ===

    #[test]
    fn health_readiness_and_metrics() {
        let fake = Fake::default();
        let answer = handle(&request("GET", "/healthz", None, b""), &fake);
        assert_eq!(
            (answer.0, &answer.2[..], answer.3),
            (200, &b"ok\n"[..], TEXT)
        );
        assert_eq!(
            handle(&request("HEAD", "/healthz", None, b""), &fake).0,
            200
        );

        assert_eq!(handle(&request("GET", "/readyz", None, b""), &fake).0, 200);
        fake.not_ready.store(true, Ordering::Relaxed);
        let answer = handle(&request("GET", "/readyz", None, b""), &fake);
        assert_eq!((answer.0, &answer.2[..]), (503, &b"not ready\n"[..]));
        // Health is about the process, not readiness.
        assert_eq!(handle(&request("GET", "/healthz", None, b""), &fake).0, 200);

        let answer = handle(&request("GET", "/metrics", None, b""), &fake);
        assert_eq!(answer.0, 200);
        assert_eq!(answer.3, "text/plain; version=0.0.4; charset=utf-8");
        let text = String::from_utf8_lossy(&answer.2);
        assert!(text.contains("wsgate_handshakes_total{outcome=\"accepted\",status=\"101\"} 1\n"));
        // No endpoint but /revoke asks for a token, even when one is sent.
        assert_eq!(
            handle(&request("GET", "/metrics", Some(b"junk"), b""), &fake).0,
            200
        );
    }

    #[test]
    fn wrong_method_is_405_with_allow() {
        let fake = Fake::default();
        for (method, path, allow) in [
            ("POST", "/healthz", "GET, HEAD"),
            ("PUT", "/readyz", "GET, HEAD"),
            ("DELETE", "/metrics", "GET, HEAD"),
            ("get", "/metrics", "GET, HEAD"),
            ("GET", "/revoke", "POST"),
            ("HEAD", "/revoke", "POST"),
            ("PUT", "/revoke", "POST"),
        ] {
            let answer = handle(&request(method, path, Some(ADMIN_TOKEN), b"{}"), &fake);
            assert_eq!(answer.0, 405, "{method} {path}");
            assert_eq!(header(&answer, "Allow"), Some(allow), "{method} {path}");
        }
        assert_eq!(fake.revoke_calls.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn unknown_paths_are_404() {
        let fake = Fake::default();
        for path in [
            "/",
            "",
            "*",
            "/healthz/",
            "/HEALTHZ",
            "/revoke/x",
            "/metrics.txt",
            "http://h/healthz",
        ] {
            for method in ["GET", "POST"] {
                let answer = handle(&request(method, path, Some(ADMIN_TOKEN), b"{}"), &fake);
                assert_eq!(answer.0, 404, "{method} {path:?}");
            }
        }
        assert_eq!(fake.revoke_calls.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn revoke_without_token_is_401_with_bare_challenge() {
        let fake = Fake::default();
        let answer = handle(&request("POST", "/revoke", None, b"not json"), &fake);
        assert_eq!(answer.0, 401);
        assert_eq!(header(&answer, "WWW-Authenticate"), Some("Bearer"));
        let body = json(&answer);
        assert_eq!(body["revoked"], false);
        assert_eq!(body["error"], "unauthorized");
        assert_eq!(
            fake.revoke_calls.load(Ordering::Relaxed),
            0,
            "auth before body"
        );
    }

    #[test]
    fn revoke_with_invalid_token_is_401_invalid_token() {
        let fake = Fake::default();
        let answer = handle(
            &request("POST", "/revoke", Some(b"forged"), b"not json"),
            &fake,
        );
        assert_eq!(answer.0, 401);
        // The description loses what RFC 6750 §3 does not allow inside the quotes.
        assert_eq!(
            header(&answer, "WWW-Authenticate"),
            Some("Bearer error=\"invalid_token\", error_description=\"bad signature \"")
        );
        assert_eq!(
            fake.revoke_calls.load(Ordering::Relaxed),
            0,
            "auth before body"
        );
        // The token never appears in the answer.
        assert!(!answer.2.windows(6).any(|w| w == b"forged"));
    }

    #[test]
    fn revoke_without_scope_is_403() {
        let fake = Fake::default();
        let answer = handle(
            &request("POST", "/revoke", Some(USER_TOKEN), b"not json"),
            &fake,
        );
        assert_eq!(answer.0, 403);
        assert_eq!(
            header(&answer, "WWW-Authenticate"),
            Some("Bearer error=\"insufficient_scope\"")
        );
        assert_eq!(json(&answer)["error"], "forbidden");
        assert_eq!(
            fake.revoke_calls.load(Ordering::Relaxed),
            0,
            "scope before body"
        );
    }

    #[test]
    fn revoke_body_outcomes() {
        let fake = Fake::default();
        let admin = Some(ADMIN_TOKEN);

        let answer = handle(
            &request("POST", "/revoke", admin, b"{\"jti\":\"j-1\"}"),
            &fake,
        );
        assert_eq!(answer.0, 200);
        assert_eq!(answer.2, b"{\"closed\":2,\"revoked\":true}\n".to_vec());
        let body = json(&answer);
        assert_eq!(
            (body["revoked"].clone(), body["closed"].clone()),
            (true.into(), 2.into())
        );

        for bad in [&b"not json"[..], b"", b"{\"sub\":1}", b"[]"] {
            let answer = handle(&request("POST", "/revoke", admin, bad), &fake);
            assert_eq!(answer.0, 400, "{:?}", String::from_utf8_lossy(bad));
            let body = json(&answer);
            assert_eq!(body["error"], "bad_request");
            assert!(body["reason"].as_str().is_some_and(|r| !r.is_empty()));
        }

        let answer = handle(
            &request("POST", "/revoke", admin, b"{\"jti\":\"disk-full\"}"),
            &fake,
        );
        assert_eq!(answer.0, 503);
        assert_eq!(json(&answer)["reason"], "revocation log not writable");
        assert_eq!(fake.revoke_calls.load(Ordering::Relaxed), 6);
    }
}
