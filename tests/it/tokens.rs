//! SPEC §4 token rows and the attack catalogue, through real sockets: keys made by
//! `wsgate keygen`, tokens signed here with `wsgate::cli::token::sign` (or over hand-built
//! signing input for tokens the library would never produce).

use std::io::{ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};
use wsgate::auth::keys::{pem_decode, Alg};
use wsgate::cli::token::{sign, SigningKey};

use crate::support::*;

// ---------------------------------------------------------------------------------------
// Keys, tokens, configs
// ---------------------------------------------------------------------------------------

/// Header of an ordinary EdDSA token for key "ed".
pub const ED_HEADER: &str = r#"{"alg":"EdDSA","typ":"JWT","kid":"ed"}"#;
/// Header of an ordinary HS256 token for key "hs".
pub const HS_HEADER: &str = r#"{"alg":"HS256","typ":"JWT","kid":"hs"}"#;

/// Wall-clock now, unix seconds (the gateway reads the same clock).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The signing halves of the keys `wsgate keygen` wrote as `DIR/ed.*` and `DIR/hs.secret`.
pub struct Keys {
    /// Private half of kid "ed".
    pub ed: SigningKey,
    /// Secret of kid "hs".
    pub hs: SigningKey,
    /// The raw 32 bytes of the Ed25519 public key.
    pub ed_public_raw: Vec<u8>,
    /// The SPKI DER of the Ed25519 public key.
    pub ed_public_der: Vec<u8>,
    /// The PEM text of the Ed25519 public key file.
    pub ed_public_pem: String,
}

/// Runs `wsgate keygen` for an EdDSA pair `DIR/ed` and an HS256 secret `DIR/hs`.
pub fn make_keys(dir: &TempDir) -> Keys {
    for (alg, name) in [("EdDSA", "ed"), ("HS256", "hs")] {
        let out = dir.path().join(name);
        let (code, stdout, stderr) = run(&["keygen", "--alg", alg, "--out", path_str(&out)]);
        assert_eq!(code, 0, "keygen {alg}: {stdout}{stderr}");
    }
    let (alg, ed) = SigningKey::load(&dir.path().join("ed.key.pem"), None).expect("ed key");
    assert_eq!(alg, Alg::EdDSA);
    let (alg, hs) = SigningKey::load(&dir.path().join("hs.secret"), None).expect("hs key");
    assert_eq!(alg, Alg::HS256);
    let ed_public_pem = std::fs::read_to_string(dir.path().join("ed.pub.pem")).expect("pub");
    let ed_public_der = pem_decode(&ed_public_pem, "PUBLIC KEY").expect("spki");
    let ed_public_raw = ed_public_der.get(12..).expect("raw key").to_vec();
    assert_eq!(ed_public_raw.len(), 32);
    Keys {
        ed,
        hs,
        ed_public_raw,
        ed_public_der,
        ed_public_pem,
    }
}

/// A path as &str (temp paths are UTF-8).
pub fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

impl Keys {
    /// `header_json` and `payload_json` verbatim, signed with the Ed25519 key.
    pub fn ed_raw(&self, header_json: &str, payload_json: &str) -> String {
        sign(Alg::EdDSA, &self.ed, header_json, payload_json).expect("sign EdDSA")
    }

    /// `header_json` and `payload_json` verbatim, signed with the HS256 secret.
    pub fn hs_raw(&self, header_json: &str, payload_json: &str) -> String {
        sign(Alg::HS256, &self.hs, header_json, payload_json).expect("sign HS256")
    }

    /// An ordinary EdDSA token (kid "ed") with these claims.
    pub fn ed_token(&self, claims: &Value) -> String {
        self.ed_raw(ED_HEADER, &claims.to_string())
    }

    /// An ordinary HS256 token (kid "hs") with these claims.
    pub fn hs_token(&self, claims: &Value) -> String {
        self.hs_raw(HS_HEADER, &claims.to_string())
    }

    /// `signing_input` (any text, not re-encoded) + "." + a valid signature over it.
    pub fn sign_input(&self, alg: Alg, signing_input: &str) -> String {
        let signature: Vec<u8> = match (alg, &self.ed, &self.hs) {
            (Alg::EdDSA, SigningKey::Ed25519(pair), _) => {
                pair.sign(signing_input.as_bytes()).as_ref().to_vec()
            }
            (Alg::HS256, _, SigningKey::Hmac(secret)) => ring::hmac::sign(
                &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
                signing_input.as_bytes(),
            )
            .as_ref()
            .to_vec(),
            _ => panic!("unsupported {alg}"),
        };
        format!("{signing_input}.{}", b64(&signature))
    }
}

/// Unpadded base64url.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Ordinary claims: `sub`, `iat = now`, `exp = now + 10m`, `scope`.
pub fn claims(sub: &str, scope: &str) -> Value {
    let t = now();
    json!({"sub": sub, "iat": t, "exp": t + 600, "scope": scope})
}

/// `v` with `key` set to `value` (`Value::Null` removes it).
pub fn with(mut v: Value, key: &str, value: Value) -> Value {
    let map = v.as_object_mut().expect("object");
    if value.is_null() {
        map.remove(key);
    } else {
        map.insert(key.to_owned(), value);
    }
    v
}

/// Limits high enough that a test's many quick attempts never hit the per-IP budgets.
pub const LIMITS_OFF: &str =
    "[limits]\nper_ip_handshakes = \"1000000/s\"\nper_ip_auth_failures = \"1000000/s\"\n";

/// The config of every test: keys "ed" (EdDSA) and "hs" (HS256), routes /echo (scope
/// echo), /open (no scope), /public (public) and /chat (protocols chat.v1). `auth` goes
/// into `[auth]`; `extra` holds further sections ([origin], [limits]).
pub fn config(auth: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
workers = 2

[auth]
{auth}

[[auth.key]]
kid = "ed"
alg = "EdDSA"
public_key = "ed.pub.pem"

[[auth.key]]
kid = "hs"
alg = "HS256"
secret_file = "hs.secret"

{extra}

[[route]]
path = "/echo"
backend = "echo"
scope = ["echo"]

[[route]]
path = "/open"
backend = "echo"

[[route]]
path = "/public"
backend = "echo"
public = true

[[route]]
path = "/chat"
backend = "echo"
protocols = ["chat.v1"]
"#
    )
}

/// Makes keys in a fresh directory and starts the gateway there.
pub fn start(auth: &str, extra: &str) -> (Gateway, Keys) {
    let dir = TempDir::new();
    let keys = make_keys(&dir);
    let gw = Gateway::start_in(dir, &config(auth, extra));
    (gw, keys)
}

// ---------------------------------------------------------------------------------------
// Request helpers
// ---------------------------------------------------------------------------------------

fn attempt(gw: &Gateway, path: &str, headers: &[&str]) -> (Response, TcpStream) {
    request(gw, upgrade_request(path, headers).as_bytes())
}

/// A refused upgrade: exact status, `Connection: close`, socket closed after the response.
fn refused(gw: &Gateway, path: &str, headers: &[&str], status: u16) -> Response {
    let (r, mut s) = attempt(gw, path, headers);
    assert_eq!(r.status, status, "{path} {headers:?}: {r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    assert!(reads_to_eof(&mut s), "socket closed after the response");
    r
}

/// 401 with `WWW-Authenticate: Bearer error="invalid_token", error_description="..."`;
/// returns the description.
fn invalid_token(gw: &Gateway, path: &str, headers: &[&str]) -> String {
    let r = refused(gw, path, headers, 401);
    let w = r.header("www-authenticate").expect("WWW-Authenticate");
    let prefix = "Bearer error=\"invalid_token\", error_description=\"";
    assert!(w.starts_with(prefix) && w.ends_with('"'), "{w:?}");
    let description = w[prefix.len()..w.len() - 1].to_owned();
    assert!(!description.is_empty());
    assert!(!description.contains('"') && !description.contains('\\'));
    description
}

/// A token in the Authorization header is refused with 401 invalid_token.
fn bad(gw: &Gateway, token: &str) -> String {
    invalid_token(gw, "/open", &[&format!("Authorization: Bearer {token}")])
}

/// SPEC §4: the precise reason (as `wsgate token inspect` words it) → the uniform
/// `error_description` on the wire and the reason label the log keeps.
fn wire_and_label(precise: &str) -> (&str, Option<&'static str>) {
    match precise {
        "unknown key id" => ("invalid signature", Some("unknown_kid")),
        "duplicate claim" => ("invalid claims", Some("duplicate_claim")),
        "token too large" => ("malformed token", Some("too_large")),
        "token issued in the future" => ("invalid claims", Some("issued_in_future")),
        "token has no exp" => ("invalid claims", Some("missing_exp")),
        "token has no sub" => ("invalid claims", Some("missing_sub")),
        "token is not canonical base64url" => ("malformed token", Some("base64")),
        "unsupported critical header parameter" => ("malformed token", Some("unknown_crit")),
        other => (other, None),
    }
}

/// Same, expecting this reason: the wire reads its uniform description (SPEC §4), the
/// gateway's log the precise reason.
fn bad_because(gw: &Gateway, token: &str, precise: &str) {
    let (wire, label) = wire_and_label(precise);
    assert_eq!(bad(gw, token), wire, "token {token}");
    if let Some(label) = label {
        gw.wait_log(&format!("status=401 reason={label}"));
    }
}

/// Sends a text message and expects it back (skipping a `wsgate.expiring` notice, SPEC §6,
/// which a token close to its `exp` gets at once).
fn echo(s: &mut TcpStream, msg: &str) {
    s.write_all(&client_frame(true, 1, msg.as_bytes()))
        .expect("send");
    loop {
        let frame = read_frame(s);
        if frame.1 == 1 && frame.2.starts_with(b"{\"type\":\"wsgate.expiring\"") {
            continue;
        }
        assert_eq!(frame, (true, 1, msg.as_bytes().to_vec()));
        return;
    }
}

/// 101 on `path`, then one echoed message.
fn accepted(gw: &Gateway, path: &str, headers: &[&str]) -> (Response, TcpStream) {
    let (r, mut s) = attempt(gw, path, headers);
    assert_eq!(r.status, 101, "{path} {headers:?}: {r:?}");
    echo(&mut s, "hello");
    (r, s)
}

/// A token in the Authorization header on /open is accepted.
fn good(gw: &Gateway, token: &str) {
    accepted(gw, "/open", &[&format!("Authorization: Bearer {token}")]);
}

/// Closes an open WebSocket cleanly and waits for the server's close.
fn close(mut s: TcpStream) {
    s.write_all(&client_frame(true, 8, &1000u16.to_be_bytes()))
        .expect("close");
    let (code, _) = read_close(&mut s);
    assert_eq!(code, Some(1000));
    let _ = reads_to_eof(&mut s);
}

/// Every byte as %XX.
fn percent_encode_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// No part of `token` in the response's headers or body.
fn assert_no_token(r: &Response, token: &str) {
    let text = format!("{:?}{}", r.headers, r.body);
    for part in token.split('.').filter(|p| p.len() >= 8) {
        assert!(!text.contains(part), "token segment leaked: {r:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Valid tokens, every source
// ---------------------------------------------------------------------------------------

#[test]
fn valid_tokens_from_query_and_header_sources_then_echo() {
    let (gw, k) = start("", LIMITS_OFF);
    let c = claims("alice", "echo");
    for token in [k.ed_token(&c), k.hs_token(&c)] {
        for (path, headers) in [
            (format!("/echo?access_token={token}"), vec![]),
            (format!("/echo?room=7&token={token}&x=y"), vec![]),
            (
                "/echo".to_owned(),
                vec![format!("Authorization: Bearer {token}")],
            ),
            // RFC 6750 §2.1 / RFC 9110: the scheme is case-insensitive.
            (
                "/echo".to_owned(),
                vec![format!("authorization: bearer {token}")],
            ),
        ] {
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            let (r, s) = accepted(&gw, &path, &headers);
            assert_eq!(r.header("sec-websocket-protocol"), None);
            assert_no_token(&r, &token);
            close(s);
        }
    }
}

#[test]
fn protocol_source_selects_a_real_protocol_and_never_echoes_the_bearer_entry() {
    let (gw, k) = start("", LIMITS_OFF);
    let c = claims("alice", "");
    for token in [k.ed_token(&c), k.hs_token(&c)] {
        // The bearer entry first or last: chat.v1 is selected, the bearer entry never.
        for offer in [
            format!("Sec-WebSocket-Protocol: bearer.{token}, chat.v1"),
            format!("Sec-WebSocket-Protocol: chat.v1, bearer.{token}"),
            format!("Sec-WebSocket-Protocol: other.v9, bearer.{token}, chat.v1"),
        ] {
            let (r, s) = accepted(&gw, "/chat", &[&offer]);
            assert_eq!(r.header("sec-websocket-protocol"), Some("chat.v1"), "{r:?}");
            assert_no_token(&r, &token);
            close(s);
        }
        // Two header lines: the same.
        let (r, _s) = accepted(
            &gw,
            "/chat",
            &[
                &format!("Sec-WebSocket-Protocol: bearer.{token}"),
                "Sec-WebSocket-Protocol: chat.v1",
            ],
        );
        assert_eq!(r.header("sec-websocket-protocol"), Some("chat.v1"));
        // Only the bearer entry: no Sec-WebSocket-Protocol in the 101 at all.
        let (r, _s) = accepted(
            &gw,
            "/chat",
            &[&format!("Sec-WebSocket-Protocol: bearer.{token}")],
        );
        assert_eq!(r.header("sec-websocket-protocol"), None, "{r:?}");
        assert_no_token(&r, &token);
        // A route listing no protocols selects the first offered non-bearer entry.
        let (r, _s) = accepted(
            &gw,
            "/open",
            &[&format!(
                "Sec-WebSocket-Protocol: bearer.{token}, foo.v2, bar"
            )],
        );
        assert_eq!(r.header("sec-websocket-protocol"), Some("foo.v2"), "{r:?}");
        assert_no_token(&r, &token);
    }
}

#[test]
fn cookie_source_with_a_closed_origin_policy() {
    let (gw, k) = start(
        "sources = [\"cookie:sess\"]",
        &format!(
            "[origin]\nallow = [\"https://app.example.com\"]\nallow_missing = false\n{LIMITS_OFF}"
        ),
    );
    let c = claims("alice", "echo");
    for token in [k.ed_token(&c), k.hs_token(&c)] {
        let cookie = format!("Cookie: theme=dark; sess={token}; lang=en");
        let (r, s) = accepted(&gw, "/echo", &["Origin: https://app.example.com", &cookie]);
        assert_no_token(&r, &token);
        close(s);
        // A quoted cookie value (RFC 6265 §4.1.1) is the same token.
        let quoted = format!("Cookie: sess=\"{token}\"");
        accepted(&gw, "/echo", &["Origin: https://app.example.com", &quoted]);
        // Without Origin: 403 before the token is looked at.
        refused(&gw, "/echo", &[&cookie], 403);
        // The other sources are not configured here: a query or header token is no token.
        let r = refused(
            &gw,
            &format!("/echo?access_token={token}"),
            &["Origin: https://app.example.com"],
            401,
        );
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let r = refused(
            &gw,
            "/echo",
            &[
                "Origin: https://app.example.com",
                "Cookie: other=1",
                &format!("Authorization: Bearer {token}"),
            ],
            401,
        );
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        // Two cookies of that name: 400.
        let two = format!("Cookie: sess={token}; sess={token}");
        let r = refused(
            &gw,
            "/echo",
            &["Origin: https://app.example.com", &two],
            400,
        );
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer error=\"invalid_request\"")
        );
    }
}

#[test]
fn public_route_needs_no_token() {
    let (gw, _k) = start("", LIMITS_OFF);
    accepted(&gw, "/public", &[]);
    // Token rows are skipped entirely on a public route.
    accepted(&gw, "/public?access_token=garbage", &[]);
}

// ---------------------------------------------------------------------------------------
// No token, several tokens
// ---------------------------------------------------------------------------------------

#[test]
fn no_token_is_401_bearer() {
    let (gw, _k) = start("", LIMITS_OFF);
    for headers in [
        vec![],
        vec!["Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l"],
        vec!["Authorization: Bearer "],
        vec!["Sec-WebSocket-Protocol: chat.v1"],
        vec!["Cookie: access_token=x"],
    ] {
        let r = refused(&gw, "/echo", &headers, 401);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{headers:?}");
    }
    // A query parameter that is not a configured source is no token.
    let r = refused(&gw, "/echo?jwt=abc.def.ghi", &[], 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
}

#[test]
fn more_than_one_token_is_400_invalid_request() {
    let (gw, k) = start("", LIMITS_OFF);
    let t = k.ed_token(&claims("alice", "echo"));
    let u = k.hs_token(&claims("alice", "echo"));
    let auth_t = format!("Authorization: Bearer {t}");
    let auth_u = format!("Authorization: Bearer {u}");
    let proto_t = format!("Sec-WebSocket-Protocol: bearer.{t}, chat.v1");
    let cases: Vec<(String, Vec<&str>)> = vec![
        // query + header
        (format!("/echo?access_token={t}"), vec![&auth_t]),
        // the same query parameter twice, the same token
        (format!("/echo?access_token={t}&access_token={t}"), vec![]),
        // two query sources
        (format!("/echo?access_token={t}&token={u}"), vec![]),
        // query + protocol
        (format!("/echo?token={t}"), vec![&proto_t]),
        // header + protocol
        ("/echo".to_owned(), vec![&auth_t, &proto_t]),
        // two Authorization headers
        ("/echo".to_owned(), vec![&auth_t, &auth_u]),
    ];
    for (path, headers) in &cases {
        let r = refused(&gw, path, headers, 400);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer error=\"invalid_request\""),
            "{path} {headers:?}"
        );
        assert_no_token(&r, &t);
        assert_no_token(&r, &u);
    }
    // Two bearer entries in Sec-WebSocket-Protocol.
    let r = refused(
        &gw,
        "/chat",
        &[&format!(
            "Sec-WebSocket-Protocol: bearer.{t}, bearer.{u}, chat.v1"
        )],
        400,
    );
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer error=\"invalid_request\"")
    );
    // One valid token plus garbage in another source is still two tokens.
    let r = refused(&gw, "/echo?access_token=garbage", &[&auth_t], 400);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer error=\"invalid_request\"")
    );
}

// ---------------------------------------------------------------------------------------
// Claims: time, issuer, audience
// ---------------------------------------------------------------------------------------

#[test]
fn time_claims_with_default_leeway() {
    let (gw, k) = start("", LIMITS_OFF);
    let t = now();
    let base = json!({"sub": "alice", "iat": t - 3600, "exp": t + 600});
    // exp beyond the 30s leeway.
    bad_because(
        &gw,
        &k.ed_token(&with(base.clone(), "exp", json!(t - 120))),
        "token expired",
    );
    bad_because(
        &gw,
        &k.hs_token(&with(base.clone(), "exp", json!(t - 120))),
        "token expired",
    );
    // exp within the leeway: still accepted.
    good(&gw, &k.ed_token(&with(base.clone(), "exp", json!(t - 5))));
    // nbf in the future beyond leeway / within it.
    bad_because(
        &gw,
        &k.ed_token(&with(base.clone(), "nbf", json!(t + 300))),
        "token not yet valid",
    );
    good(&gw, &k.ed_token(&with(base.clone(), "nbf", json!(t + 5))));
    // iat in the future beyond leeway / within it.
    bad_because(
        &gw,
        &k.ed_token(&with(base.clone(), "iat", json!(t + 300))),
        "token issued in the future",
    );
    good(&gw, &k.ed_token(&with(base.clone(), "iat", json!(t + 5))));
    // exp and sub are required; types are checked.
    bad_because(
        &gw,
        &k.ed_token(&with(base.clone(), "exp", Value::Null)),
        "token has no exp",
    );
    bad_because(
        &gw,
        &k.ed_token(&with(base.clone(), "sub", Value::Null)),
        "token has no sub",
    );
    bad(&gw, &k.ed_token(&with(base.clone(), "sub", json!(""))));
    bad(
        &gw,
        &k.ed_token(&with(base.clone(), "exp", json!((t + 600).to_string()))),
    );
    bad(&gw, &k.ed_token(&with(base.clone(), "sub", json!(42))));
    bad(&gw, &k.ed_token(&with(base.clone(), "nbf", json!("soon"))));
    bad(&gw, &k.ed_token(&with(base.clone(), "exp", json!(-1))));
    bad(
        &gw,
        &k.ed_token(&with(base.clone(), "nbf", json!(u64::MAX))),
    );
    bad(
        &gw,
        &k.ed_token(&with(base.clone(), "iat", json!(u64::MAX))),
    );
    // RFC 7519 §2: a NumericDate may be non-integer.
    good(
        &gw,
        &k.ed_token(&with(base.clone(), "exp", json!(t as f64 + 600.5))),
    );
    good(&gw, &k.ed_token(&base));
}

#[test]
fn huge_exp_is_refused_by_max_lifetime_not_crashed() {
    // SPEC §3 auth.max_lifetime (default 24h): exp - iat (exp - now without iat) above it
    // is 401 invalid_token. An exp far in the future (year 33658) and one at the very top
    // of the u64 range are refused, with or without iat.
    let (gw, k) = start("", LIMITS_OFF);
    let t = now();
    for exp in [999_999_999_999u64, u64::MAX] {
        for token in [
            k.ed_token(&json!({"sub": "alice", "iat": t, "exp": exp})),
            k.ed_token(&json!({"sub": "alice", "exp": exp})),
        ] {
            bad_because(&gw, &token, "invalid claims");
        }
    }
    // Just inside the bound is served; one second over, from iat or from now, is not.
    let day = 24 * 3600;
    good(
        &gw,
        &k.ed_token(&json!({"sub": "alice", "iat": t, "exp": t + day})),
    );
    bad_because(
        &gw,
        &k.ed_token(&json!({"sub": "alice", "iat": t - 10, "exp": t + day})),
        "invalid claims",
    );
    bad_because(
        &gw,
        &k.ed_token(&json!({"sub": "alice", "exp": t + day + 120})),
        "invalid claims",
    );
    // The longest bound the config accepts: the deadline arithmetic must not overflow.
    let (gw, k) = start("max_lifetime = \"36500d\"", LIMITS_OFF);
    let token = k.ed_token(&json!({"sub": "alice", "iat": t, "exp": t + 36_500 * day}));
    let (r, mut s) = attempt(&gw, "/open", &[&format!("Authorization: Bearer {token}")]);
    assert_eq!(r.status, 101, "{r:?}\nlog:\n{}", gw.logs());
    echo(&mut s, "still here");
    bad_because(
        &gw,
        &k.ed_token(&json!({"sub": "alice", "iat": t, "exp": u64::MAX})),
        "invalid claims",
    );
    // The gateway is still up.
    good(&gw, &k.ed_token(&claims("alice", "")));
}

#[test]
fn configured_leeway_is_honoured() {
    let (gw, k) = start("leeway = \"0s\"", LIMITS_OFF);
    let t = now();
    let base = json!({"sub": "alice", "exp": t + 600});
    bad_because(
        &gw,
        &k.ed_token(&with(base.clone(), "exp", json!(t - 5))),
        "token expired",
    );
    bad_because(
        &gw,
        &k.ed_token(&with(base.clone(), "nbf", json!(t + 10))),
        "token not yet valid",
    );
    good(&gw, &k.ed_token(&base));
}

#[test]
fn issuer_and_audience() {
    let (gw, k) = start(
        "issuer = \"https://id.example.com\"\naudience = \"wsgate\"",
        LIMITS_OFF,
    );
    let base = with(
        with(claims("alice", ""), "iss", json!("https://id.example.com")),
        "aud",
        json!("wsgate"),
    );
    good(&gw, &k.ed_token(&base));
    good(&gw, &k.hs_token(&base));
    // aud as an array containing the audience.
    good(
        &gw,
        &k.ed_token(&with(base.clone(), "aud", json!(["other", "wsgate"]))),
    );
    good(
        &gw,
        &k.ed_token(&with(base.clone(), "aud", json!(["wsgate"]))),
    );
    // Wrong / missing issuer.
    for iss in [
        json!("https://evil.example.com"),
        json!("https://id.example.com/"),
        Value::Null,
        json!(7),
    ] {
        let d = bad(&gw, &k.ed_token(&with(base.clone(), "iss", iss.clone())));
        assert_eq!(d, "invalid claims", "{iss}");
    }
    // Wrong / missing audience; substrings and case never match.
    for aud in [
        json!("other"),
        json!(["other", "x"]),
        json!([]),
        json!("wsgate2"),
        json!("WSGATE"),
        json!("wsgat"),
        Value::Null,
    ] {
        let d = bad(&gw, &k.ed_token(&with(base.clone(), "aud", aud.clone())));
        assert_eq!(d, "invalid claims", "{aud}");
    }
    // The log keeps the precise reasons.
    gw.wait_log("reason=wrong_issuer");
    gw.wait_log("reason=wrong_audience");
}

// ---------------------------------------------------------------------------------------
// Keys and algorithms
// ---------------------------------------------------------------------------------------

#[test]
fn key_selection() {
    let (gw, k) = start("", LIMITS_OFF);
    let p = claims("alice", "").to_string();
    // Unknown kid, with either key's signature.
    bad_because(
        &gw,
        &k.ed_raw(r#"{"alg":"EdDSA","kid":"nope"}"#, &p),
        "unknown key id",
    );
    bad_because(
        &gw,
        &k.hs_raw(r#"{"alg":"HS256","kid":"ED"}"#, &p),
        "unknown key id",
    );
    // No kid: the one key of the header's algorithm.
    good(&gw, &k.ed_raw(r#"{"alg":"EdDSA"}"#, &p));
    good(&gw, &k.hs_raw(r#"{"alg":"HS256","typ":"JWT"}"#, &p));
    bad(&gw, &k.hs_raw(r#"{"alg":"HS384"}"#, &p));
    // kid and alg compare after JSON unescaping.
    good(
        &gw,
        &k.ed_raw(r#"{"alg":"EdDS\u0041","kid":"\u0065d"}"#, &p),
    );
    bad_because(
        &gw,
        &k.ed_raw(r#"{"alg":"EdDSA","kid":""}"#, &p),
        "unknown key id",
    );
    bad(&gw, &k.ed_raw(r#"{"alg":"EdDSA","kid":null}"#, &p));
    bad(&gw, &k.ed_raw(r#"{"alg":"EdDSA","kid":["ed"]}"#, &p));
    // RFC 9864's fully-specified name for an EdDSA key.
    good(&gw, &k.ed_raw(r#"{"alg":"Ed25519","kid":"ed"}"#, &p));
    good(&gw, &k.ed_raw(r#"{"alg":"Ed25519"}"#, &p));
    // alg / key mismatch: the algorithm comes from the key, never the token.
    bad(&gw, &k.ed_raw(r#"{"alg":"EdDSA","kid":"hs"}"#, &p));
    bad(&gw, &k.hs_raw(r#"{"alg":"HS256","kid":"ed"}"#, &p));
    let hs512 = {
        let SigningKey::Hmac(secret) = &k.hs else {
            unreachable!()
        };
        sign(
            Alg::HS512,
            &SigningKey::Hmac(secret.clone()),
            r#"{"alg":"HS512","kid":"hs"}"#,
            &p,
        )
        .expect("sign")
    };
    bad(&gw, &hs512);
    // Unsupported algorithms.
    for alg in ["RS256", "ES256", "PS256", "HS1", "eddsa", "EDDSA", ""] {
        bad(
            &gw,
            &k.ed_raw(&format!(r#"{{"alg":"{alg}","kid":"ed"}}"#), &p),
        );
    }
    // A signature from the other key.
    let ed = k.ed_raw(r#"{"alg":"EdDSA","kid":"ed"}"#, &p);
    let other_dir = TempDir::new();
    let other = make_keys(&other_dir);
    bad_because(
        &gw,
        &other.ed_raw(r#"{"alg":"EdDSA","kid":"ed"}"#, &p),
        "invalid signature",
    );
    bad_because(
        &gw,
        &other.hs_raw(r#"{"alg":"HS256","kid":"hs"}"#, &p),
        "invalid signature",
    );
    good(&gw, &ed);
}

#[test]
fn alg_none_in_any_case_is_refused() {
    let (gw, k) = start("", LIMITS_OFF);
    let p = claims("alice", "echo").to_string();
    for alg in ["none", "None", "NONE", "nOnE", "none "] {
        for kid in ["", r#","kid":"ed""#, r#","kid":"hs""#] {
            let header = format!(r#"{{"alg":"{alg}"{kid}}}"#);
            let unsigned = format!("{}.{}.", b64(&header), b64(&p));
            bad(&gw, &unsigned);
            // With a signature that would verify under the named key's own algorithm.
            bad(&gw, &k.hs_raw(&header, &p));
            bad(&gw, &k.ed_raw(&header, &p));
            // Unsigned, without the trailing dot.
            bad(&gw, &format!("{}.{}", b64(&header), b64(&p)));
        }
    }
}

#[test]
fn algorithm_confusion_hs256_with_the_ed25519_public_key() {
    let (gw, k) = start("", LIMITS_OFF);
    let p = claims("alice", "echo").to_string();
    // HMAC keyed with what an attacker can see of the Ed25519 key: raw bytes, DER, PEM.
    for secret in [
        k.ed_public_raw.clone(),
        k.ed_public_der.clone(),
        k.ed_public_pem.as_bytes().to_vec(),
        k.ed_public_pem.trim().as_bytes().to_vec(),
    ] {
        let key = SigningKey::Hmac(secret);
        for header in [
            r#"{"alg":"HS256","kid":"ed"}"#,
            r#"{"alg":"HS256"}"#,
            r#"{"alg":"HS256","typ":"JWT","kid":"hs"}"#,
        ] {
            let token = sign(Alg::HS256, &key, header, &p).expect("sign");
            bad(&gw, &token);
            invalid_token(&gw, &format!("/echo?access_token={token}"), &[]);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Encoding and structure
// ---------------------------------------------------------------------------------------

/// The base64url alphabet.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#[test]
fn truncated_padded_and_non_canonical_base64url() {
    let (gw, k) = start("", LIMITS_OFF);
    let p = claims("alice", "echo").to_string();
    let token = k.ed_raw(ED_HEADER, &p);
    good(&gw, &token);
    let (signing_input, sig) = token.rsplit_once('.').expect("three segments");
    assert_eq!(sig.len(), 86);

    // Truncated signature: 85 chars (impossible length), 84 chars (63 bytes).
    bad(&gw, &token[..token.len() - 1]);
    bad(&gw, &token[..token.len() - 2]);
    // Padded signature.
    bad(&gw, &format!("{token}=="));
    bad(&gw, &format!("{token}="));
    // Non-canonical: the last character's 4 unused bits set; decodes leniently to the
    // very same signature bytes.
    let last = *sig.as_bytes().last().expect("last");
    let v = ALPHABET.iter().position(|c| *c == last).expect("alphabet");
    assert_eq!(v & 0x0f, 0, "canonical encoder");
    for bits in [1, 2, 4, 8, 15] {
        let tampered = format!(
            "{signing_input}.{}{}",
            &sig[..85],
            ALPHABET[v | bits] as char
        );
        assert_eq!(
            URL_SAFE_NO_PAD.decode(sig).expect("sig"),
            base64::engine::GeneralPurpose::new(
                &base64::alphabet::URL_SAFE,
                base64::engine::GeneralPurposeConfig::new()
                    .with_encode_padding(false)
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
                    .with_decode_allow_trailing_bits(true)
            )
            .decode(&tampered[signing_input.len() + 1..])
            .expect("lenient"),
        );
        bad_because(&gw, &tampered, "token is not canonical base64url");
    }

    // Validly signed over a non-canonical or padded payload / header segment: the
    // signature verifies over those bytes, so only the encoding rule refuses them.
    let header_seg = b64(ED_HEADER);
    // A payload whose length is not a multiple of 3 has unused bits in its last char.
    let mut payload = p.clone();
    while payload.len() % 3 != 1 {
        payload.insert(payload.len() - 1, ' ');
    }
    let seg = b64(&payload);
    let last = *seg.as_bytes().last().expect("last");
    let v = ALPHABET.iter().position(|c| *c == last).expect("alphabet");
    let non_canonical = format!("{}{}", &seg[..seg.len() - 1], ALPHABET[v | 1] as char);
    let forged = k.sign_input(Alg::EdDSA, &format!("{header_seg}.{non_canonical}"));
    bad_because(&gw, &forged, "token is not canonical base64url");
    // The same payload canonically encoded is fine (control).
    good(
        &gw,
        &k.sign_input(Alg::EdDSA, &format!("{header_seg}.{seg}")),
    );
    // Padded payload ("==" for len % 3 == 1), signed as is.
    let padded = k.sign_input(Alg::EdDSA, &format!("{header_seg}.{seg}=="));
    bad(&gw, &padded);
    // Padded header.
    let mut header = ED_HEADER.to_owned();
    while header.len() % 3 == 0 {
        header.insert(1, ' ');
    }
    let hseg = b64(&header);
    let pad = "=".repeat((4 - hseg.len() % 4) % 4);
    let padded = k.sign_input(Alg::EdDSA, &format!("{hseg}{pad}.{}", b64(&p)));
    bad(&gw, &padded);
    good(
        &gw,
        &k.sign_input(Alg::EdDSA, &format!("{hseg}.{}", b64(&p))),
    );

    // The standard alphabet ('+' '/') instead of the URL-safe one, validly signed.
    let std_seg = (0..64)
        .map(|n| STANDARD_NO_PAD.encode(format!(r#"{{"pad":"{}",{}"#, "~".repeat(n), &p[1..])))
        .find(|s| s.contains('+') || s.contains('/'))
        .expect("a payload whose standard encoding has + or /");
    let forged = k.sign_input(Alg::EdDSA, &format!("{header_seg}.{std_seg}"));
    bad_because(&gw, &forged, "token is not canonical base64url");
}

#[test]
fn extra_missing_and_empty_segments() {
    let (gw, k) = start("", LIMITS_OFF);
    let token = k.ed_token(&claims("alice", "echo"));
    let parts: Vec<&str> = token.split('.').collect();
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    for t in [
        format!("{token}."),
        format!("{token}.{s}"),
        format!("{h}.{p}.{s}.."),
        format!(".{token}"),
        format!("{h}.{p}"),
        format!("{h}..{s}"),
        format!(".{p}.{s}"),
        format!("{h}.{p}."),
        format!("{h}{p}{s}"),
        "..".to_owned(),
        ".".to_owned(),
        "x".to_owned(),
        format!("{h}.{p} .{s}"),
    ] {
        bad(&gw, &t);
    }
    // Segments from different tokens do not combine.
    let other = k.ed_token(&claims("mallory", "echo admin"));
    let o: Vec<&str> = other.split('.').collect();
    bad_because(&gw, &format!("{h}.{}.{s}", o[1]), "invalid signature");
    good(&gw, &token);
}

#[test]
fn json_rules_duplicates_nesting_and_shape() {
    let (gw, k) = start("", LIMITS_OFF);
    let t = now();
    let exp = t + 600;
    // Duplicate claims, plain and disguised by an escape (names compare after unescaping).
    bad_because(
        &gw,
        &k.ed_raw(
            ED_HEADER,
            &format!(r#"{{"sub":"alice","exp":{exp},"sub":"root"}}"#),
        ),
        "duplicate claim",
    );
    bad_because(
        &gw,
        &k.ed_raw(
            ED_HEADER,
            &format!(r#"{{"sub":"alice","exp":{exp},"exp":{}}}"#, exp + 99999),
        ),
        "duplicate claim",
    );
    bad(
        &gw,
        &k.ed_raw(
            ED_HEADER,
            &format!(r#"{{"sub":"alice","exp":{exp},"s\u0075b":"root"}}"#),
        ),
    );
    bad(
        &gw,
        &k.ed_raw(
            ED_HEADER,
            &format!(r#"{{"sub":"alice","exp":{exp},"scope":"a","scope":"echo"}}"#),
        ),
    );
    // Duplicate header parameters, plain and escaped.
    let p = format!(r#"{{"sub":"alice","exp":{exp}}}"#);
    bad(
        &gw,
        &k.ed_raw(r#"{"alg":"EdDSA","kid":"ed","kid":"ed"}"#, &p),
    );
    bad(
        &gw,
        &k.ed_raw(r#"{"alg":"EdDSA","kid":"ed","k\u0069d":"hs"}"#, &p),
    );
    bad(
        &gw,
        &k.ed_raw(r#"{"alg":"EdDSA","alg":"EdDSA","kid":"ed"}"#, &p),
    );
    // An escaped but otherwise ordinary claim name is fine (control).
    good(
        &gw,
        &k.ed_raw(ED_HEADER, &format!(r#"{{"s\u0075b":"alice","exp":{exp}}}"#)),
    );
    good(&gw, &k.ed_raw(ED_HEADER, &p));

    // Deep nesting, in the payload and in the header.
    for depth in [40, 300] {
        let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        bad(
            &gw,
            &k.ed_raw(
                ED_HEADER,
                &format!(r#"{{"sub":"alice","exp":{exp},"x":{nested}}}"#),
            ),
        );
        let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        bad(
            &gw,
            &k.ed_raw(
                ED_HEADER,
                &format!(r#"{{"sub":"alice","exp":{exp},"x":{objects}}}"#),
            ),
        );
        bad(
            &gw,
            &k.ed_raw(&format!(r#"{{"alg":"EdDSA","kid":"ed","x":{nested}}}"#), &p),
        );
    }
    // Moderate nesting in an unknown claim is fine (control).
    good(
        &gw,
        &k.ed_raw(
            ED_HEADER,
            &format!(r#"{{"sub":"alice","exp":{exp},"x":[[[{{"a":[1]}}]]]}}"#),
        ),
    );

    // Not a single JSON object.
    for payload in [
        format!(r#"{{"sub":"alice","exp":{exp}}}{{"sub":"root"}}"#),
        format!(r#"{{"sub":"alice","exp":{exp}}} x"#),
        format!(r#"[{{"sub":"alice","exp":{exp}}}]"#),
        "\"alice\"".to_owned(),
        "null".to_owned(),
        format!(r#"{{"sub":"alice","exp":{exp},}}"#),
        format!("{{\"sub\":\"al\u{0}ice\",\"exp\":{exp}}}"),
        String::new(),
    ] {
        bad(&gw, &k.ed_raw(ED_HEADER, &payload));
    }
    bad(
        &gw,
        &k.sign_input(
            Alg::EdDSA,
            &format!("{}.{}", b64(ED_HEADER), b64([0xff, 0xfe, b'{', b'}'])),
        ),
    );
    for header in [
        "[\"EdDSA\"]",
        "\"EdDSA\"",
        r#"{"kid":"ed"}"#,
        r#"{"alg":"EdDSA","kid":"ed"}x"#,
    ] {
        bad(&gw, &k.ed_raw(header, &p));
    }
}

#[test]
fn oversized_tokens_are_refused_undecoded() {
    let (gw, k) = start("max_token_bytes = \"1KiB\"", LIMITS_OFF);
    let t = now();
    // Find a padding that makes the token exactly 1024 bytes (inclusive limit).
    let token_of = |pad: usize, header: &str| {
        k.ed_raw(
            header,
            &format!(
                r#"{{"sub":"alice","exp":{},"pad":"{}"}}"#,
                t + 600,
                "p".repeat(pad)
            ),
        )
    };
    let mut exact = None;
    'search: for header in [
        ED_HEADER,
        r#"{"alg":"EdDSA","typ":"JWT","kid":"ed" }"#,
        r#"{"alg":"EdDSA","typ":"JWT","kid":"ed"  }"#,
    ] {
        for pad in 600..800 {
            let tok = token_of(pad, header);
            if tok.len() == 1024 {
                exact = Some((pad, header));
                break 'search;
            }
        }
    }
    let (pad, header) = exact.expect("a 1024-byte token");
    good(&gw, &token_of(pad, header));
    // One byte over: find the next length > 1024.
    let over = (pad + 1..pad + 10)
        .map(|n| token_of(n, header))
        .find(|tok| tok.len() > 1024)
        .expect("longer token");
    bad_because(&gw, &over, "token too large");
    // Far over, through each source.
    let big = token_of(3000, header);
    bad_because(&gw, &big, "token too large");
    assert_eq!(
        invalid_token(&gw, &format!("/open?access_token={big}"), &[]),
        "malformed token"
    );
    assert_eq!(
        invalid_token(
            &gw,
            "/open",
            &[&format!("Sec-WebSocket-Protocol: bearer.{big}")]
        ),
        "malformed token"
    );
    // Percent-encoding a token under the limit does not make it too large (the limit is on
    // the decoded token).
    let exact_token = token_of(pad, header);
    let encoded = exact_token.replace('.', "%2E");
    accepted(&gw, &format!("/open?access_token={encoded}"), &[]);
}

#[test]
fn unknown_crit_and_b64_false() {
    let (gw, k) = start("", LIMITS_OFF);
    let p = claims("alice", "echo").to_string();
    for header in [
        r#"{"alg":"EdDSA","kid":"ed","crit":["x-custom"],"x-custom":1}"#,
        r#"{"alg":"EdDSA","kid":"ed","crit":["exp"],"exp":1}"#,
        r#"{"alg":"EdDSA","kid":"ed","crit":["b64"],"b64":true}"#,
    ] {
        bad_because(
            &gw,
            &k.ed_raw(header, &p),
            "unsupported critical header parameter",
        );
    }
    // Malformed crit.
    for header in [
        r#"{"alg":"EdDSA","kid":"ed","crit":[]}"#,
        r#"{"alg":"EdDSA","kid":"ed","crit":"x"}"#,
        r#"{"alg":"EdDSA","kid":"ed","crit":[1]}"#,
    ] {
        bad(&gw, &k.ed_raw(header, &p));
    }
    // RFC 7797 unencoded payload, with and without crit; also signed over the raw payload.
    for header in [
        r#"{"alg":"EdDSA","kid":"ed","b64":false,"crit":["b64"]}"#,
        r#"{"alg":"EdDSA","kid":"ed","b64":false}"#,
        r#"{"alg":"HS256","kid":"hs","b64":false}"#,
    ] {
        bad(&gw, &k.ed_raw(header, &p));
        bad(&gw, &k.hs_raw(header, &p));
        let unencoded = k.sign_input(Alg::EdDSA, &format!("{}.{p}", b64(header)));
        bad(&gw, &unencoded);
    }
    bad(
        &gw,
        &k.ed_raw(r#"{"alg":"EdDSA","kid":"ed","b64":"false"}"#, &p),
    );
    // A JWE header in a JWS.
    bad(
        &gw,
        &k.ed_raw(r#"{"alg":"EdDSA","kid":"ed","enc":"A256GCM"}"#, &p),
    );
    // Explicit typing (RFC 8725 §3.11): another kind of JWT is not an access token.
    for typ in ["secevent+jwt", "dpop+jwt", "JWS", "id_token"] {
        bad(
            &gw,
            &k.ed_raw(
                &format!(r#"{{"alg":"EdDSA","kid":"ed","typ":"{typ}"}}"#),
                &p,
            ),
        );
    }
    for typ in ["JWT", "jwt", "at+jwt", "application/at+jwt"] {
        good(
            &gw,
            &k.ed_raw(
                &format!(r#"{{"alg":"EdDSA","kid":"ed","typ":"{typ}"}}"#),
                &p,
            ),
        );
    }
    // b64: true is the ordinary encoding and is tolerated (control).
    good(
        &gw,
        &k.ed_raw(r#"{"alg":"EdDSA","kid":"ed","b64":true}"#, &p),
    );
}

#[test]
fn jku_x5u_jwk_x5c_are_never_followed() {
    let (gw, k) = start("", LIMITS_OFF);
    let trap = TcpListener::bind("127.0.0.1:0").expect("bind trap");
    trap.set_nonblocking(true).expect("nonblocking");
    let url = format!(
        "http://{}/.well-known/jwks.json",
        trap.local_addr().expect("addr")
    );
    let p = claims("alice", "echo").to_string();
    let attacker_dir = TempDir::new();
    let attacker = make_keys(&attacker_dir);
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&attacker.ed_public_raw)});
    let x5c = json!([STANDARD_NO_PAD.encode(&attacker.ed_public_der)]);
    for field in [
        format!(r#""jku":"{url}""#),
        format!(r#""x5u":"{url}""#),
        format!(r#""jwk":{jwk}"#),
        format!(r#""x5c":{x5c}"#),
        format!(r#""jku":"{url}","jwk":{jwk},"x5u":"{url}""#),
    ] {
        // Signed by the configured key: judged normally, i.e. accepted.
        let (r, s) = accepted(
            &gw,
            "/echo",
            &[&format!(
                "Authorization: Bearer {}",
                k.ed_raw(&format!(r#"{{"alg":"EdDSA","kid":"ed",{field}}}"#), &p)
            )],
        );
        assert_eq!(r.status, 101);
        close(s);
        // Signed by the key the header points at: refused.
        bad_because(
            &gw,
            &attacker.ed_raw(&format!(r#"{{"alg":"EdDSA","kid":"ed",{field}}}"#), &p),
            "invalid signature",
        );
        bad_because(
            &gw,
            &attacker.ed_raw(&format!(r#"{{"alg":"EdDSA",{field}}}"#), &p),
            "invalid signature",
        );
        bad_because(
            &gw,
            &attacker.ed_raw(
                &format!(r#"{{"alg":"EdDSA","kid":"attacker",{field}}}"#),
                &p,
            ),
            "unknown key id",
        );
    }
    // Every handshake above completed; give a fetch a moment to show up, then look.
    std::thread::sleep(Duration::from_millis(300));
    match trap.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("the gateway connected to the jku/x5u URL from {peer}"),
        Err(e) => panic!("accept: {e}"),
    }
}

#[test]
fn percent_encoded_query_tokens() {
    let (gw, k) = start("", LIMITS_OFF);
    let token = k.ed_token(&claims("alice", "echo"));
    // Every byte encoded; only the dots; lower-case hex.
    accepted(
        &gw,
        &format!("/echo?access_token={}", percent_encode_all(&token)),
        &[],
    );
    accepted(
        &gw,
        &format!("/echo?token={}", token.replace('.', "%2E")),
        &[],
    );
    accepted(
        &gw,
        &format!("/echo?token={}", token.replace('.', "%2e")),
        &[],
    );
    // A bad escape is a malformed token, not a crash or a pass.
    invalid_token(&gw, &format!("/echo?access_token={token}%zz"), &[]);
    invalid_token(&gw, &format!("/echo?access_token={token}%"), &[]);
    invalid_token(&gw, &format!("/echo?access_token={token}%4"), &[]);
    // Encoding does not smuggle a second segment separator or a NUL past the rules.
    invalid_token(&gw, &format!("/echo?access_token={token}%2E"), &[]);
    invalid_token(&gw, &format!("/echo?access_token={token}%00"), &[]);
    // '+' is not a space in a token.
    invalid_token(
        &gw,
        &format!("/echo?access_token={}", token.replacen('.', "+", 1)),
        &[],
    );
}

// ---------------------------------------------------------------------------------------
// Scope
// ---------------------------------------------------------------------------------------

#[test]
fn scopes_are_matched_whole() {
    let (gw, k) = start("", LIMITS_OFF);
    let insufficient = |c: Value| {
        for token in [k.ed_token(&c), k.hs_token(&c)] {
            let r = refused(
                &gw,
                "/echo",
                &[&format!("Authorization: Bearer {token}")],
                403,
            );
            assert_eq!(
                r.header("www-authenticate"),
                Some("Bearer error=\"insufficient_scope\", scope=\"echo\""),
                "{c}"
            );
            assert_no_token(&r, &token);
        }
    };
    let base = claims("alice", "");
    for scope in [
        "",
        "chat",
        "echoes",
        "echo.read",
        "xecho",
        "ECHO",
        "ech",
        "echo,chat",
    ] {
        insufficient(with(base.clone(), "scope", json!(scope)));
    }
    insufficient(with(base.clone(), "scp", json!(["echoes", "chat"])));
    // A space inside one scp entry is not two scopes: refused either way, never 101.
    let odd = k.ed_token(&with(base.clone(), "scp", json!(["echo chat"])));
    let (r, _s) = attempt(&gw, "/echo", &[&format!("Authorization: Bearer {odd}")]);
    assert!(matches!(r.status, 401 | 403), "{r:?}");
    insufficient(with(base.clone(), "scope", Value::Null));
    let ok = |c: Value| {
        accepted(
            &gw,
            "/echo",
            &[&format!("Authorization: Bearer {}", k.ed_token(&c))],
        );
    };
    ok(with(base.clone(), "scope", json!("echo")));
    ok(with(base.clone(), "scope", json!("chat echo admin")));
    ok(with(
        with(base.clone(), "scope", Value::Null),
        "scp",
        json!(["chat", "echo"]),
    ));
    // The union of scope and scp.
    ok(with(
        with(base.clone(), "scope", json!("chat")),
        "scp",
        json!(["echo"]),
    ));
    // A route without scope takes any valid token.
    accepted(
        &gw,
        "/open",
        &[&format!("Authorization: Bearer {}", k.ed_token(&base))],
    );
}

// ---------------------------------------------------------------------------------------
// Origin
// ---------------------------------------------------------------------------------------

#[test]
fn origin_allowlist() {
    let (gw, k) = start(
        "",
        &format!(
            "[origin]\nallow = [\"https://app.example.com\", \"https://*.example.com\"]\nallow_missing = false\n{LIMITS_OFF}"
        ),
    );
    let auth = format!(
        "Authorization: Bearer {}",
        k.ed_token(&claims("alice", "echo"))
    );
    for origin in [
        "https://app.example.com",
        "https://a.example.com",
        "https://deep.sub.example.com",
        "https://app.example.com:443",
        "HTTPS://APP.EXAMPLE.COM",
    ] {
        accepted(&gw, "/echo", &[&format!("Origin: {origin}"), &auth]);
    }
    for origin in [
        "https://example.com",
        "https://evil.com",
        "https://app.example.com.evil.com",
        "https://evilexample.com",
        "http://app.example.com",
        "https://app.example.com:8443",
        "null",
        "https://app.example.com/path",
        "",
    ] {
        refused(&gw, "/echo", &[&format!("Origin: {origin}"), &auth], 403);
    }
    // Missing Origin with allow_missing = false.
    refused(&gw, "/echo", &[&auth], 403);
    // Two Origin headers (RFC 6454 §7.3: never sent by a user agent) are not a way around it.
    let (r, _s) = attempt(
        &gw,
        "/echo",
        &[
            "Origin: https://evil.com",
            "Origin: https://app.example.com",
            &auth,
        ],
    );
    assert!(matches!(r.status, 400 | 403), "{r:?}");
    // Origin applies to public routes too, and comes before the token check.
    refused(&gw, "/public", &["Origin: https://evil.com"], 403);
    refused(&gw, "/echo", &["Origin: https://evil.com"], 403);
    accepted(&gw, "/public", &["Origin: https://x.example.com"]);
}

// ---------------------------------------------------------------------------------------
// explain_to_browsers
// ---------------------------------------------------------------------------------------

#[test]
fn explain_to_browsers_closes_with_4401_and_4403() {
    let (gw, k) = start(
        "explain_to_browsers = true",
        &format!("[origin]\nallow = [\"https://app.example.com\"]\n{LIMITS_OFF}"),
    );
    let origin = "Origin: https://app.example.com";
    let t = now();
    let expired = k.ed_token(&with(claims("alice", "echo"), "exp", json!(t - 120)));
    let early = k.hs_token(&with(claims("alice", "echo"), "nbf", json!(t + 300)));
    let no_scope = k.ed_token(&claims("alice", "chat"));
    let explained = |path: &str, token: &str, code: u16, reason: &str| {
        let (r, mut s) = attempt(
            &gw,
            path,
            &[origin, &format!("Authorization: Bearer {token}")],
        );
        assert_eq!(r.status, 101, "{r:?}");
        assert_no_token(&r, token);
        assert_eq!(read_close(&mut s), (Some(code), reason.to_owned()));
    };
    explained("/echo", &expired, 4401, "token expired");
    explained("/echo", &early, 4401, "token not yet valid");
    explained("/echo", &no_scope, 4403, "insufficient scope");
    // Through the protocol source too (what a browser can actually send): the 101 then
    // selects the real protocol only.
    let (r, mut s) = attempt(
        &gw,
        "/chat",
        &[
            origin,
            &format!("Sec-WebSocket-Protocol: bearer.{expired}, chat.v1"),
        ],
    );
    assert_eq!(r.status, 101);
    assert_eq!(r.header("sec-websocket-protocol"), Some("chat.v1"));
    assert_eq!(read_close(&mut s), (Some(4401), "token expired".to_owned()));

    // Without Origin: the HTTP statuses.
    assert_eq!(
        invalid_token(&gw, "/echo", &[&format!("Authorization: Bearer {expired}")]),
        "token expired"
    );
    let r = refused(
        &gw,
        "/echo",
        &[&format!("Authorization: Bearer {no_scope}")],
        403,
    );
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer error=\"insufficient_scope\", scope=\"echo\"")
    );
    // With Origin, every other failure stays an HTTP status.
    let other_dir = TempDir::new();
    let other = make_keys(&other_dir);
    let forged_expired = other.ed_token(&with(claims("alice", "echo"), "exp", json!(t - 120)));
    assert_eq!(
        invalid_token(
            &gw,
            "/echo",
            &[origin, &format!("Authorization: Bearer {forged_expired}")]
        ),
        "invalid signature"
    );
    let unknown_kid = k.ed_raw(
        r#"{"alg":"EdDSA","kid":"gone"}"#,
        &with(claims("alice", "echo"), "exp", json!(t - 120)).to_string(),
    );
    invalid_token(
        &gw,
        "/echo",
        &[origin, &format!("Authorization: Bearer {unknown_kid}")],
    );
    let r = refused(&gw, "/echo", &[origin], 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    // A disallowed Origin is 403, never an explained 101.
    refused(
        &gw,
        "/echo",
        &[
            "Origin: https://evil.com",
            &format!("Authorization: Bearer {expired}"),
        ],
        403,
    );
    // A good token with Origin is served normally.
    accepted(
        &gw,
        "/echo",
        &[
            origin,
            &format!(
                "Authorization: Bearer {}",
                k.ed_token(&claims("alice", "echo"))
            ),
        ],
    );
}

// ---------------------------------------------------------------------------------------
// Abuse limits
// ---------------------------------------------------------------------------------------

fn assert_429(r: &Response) {
    assert_eq!(r.status, 429, "{r:?}");
    let secs: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert!((1..=60).contains(&secs), "{r:?}");
}

#[test]
fn failed_token_budget_gives_429_before_any_signature_check() {
    let (gw, k) = start(
        "",
        "[limits]\nper_ip_auth_failures = \"2/s\"\nper_ip_handshakes = \"1000/s\"\n",
    );
    let good_token = k.ed_token(&claims("alice", "echo"));
    let forged = k.ed_token(&claims("alice", "echo")).replace(".ey", ".ex");
    invalid_token(
        &gw,
        "/echo",
        &["Authorization: Bearer garbage.garbage.garbage"],
    );
    invalid_token(&gw, "/echo", &[&format!("Authorization: Bearer {forged}")]);
    // Third attempt within the same second, even with a valid token.
    let (r, _s) = attempt(
        &gw,
        "/echo",
        &[&format!("Authorization: Bearer {good_token}")],
    );
    assert_429(&r);
    let (r, _s) = attempt(&gw, "/echo", &["Authorization: Bearer garbage"]);
    assert_429(&r);
    // Public routes are limited by the same per-IP step.
    let (r, _s) = attempt(&gw, "/public", &[]);
    assert_429(&r);
    // The budget refills: a valid token passes again (bounded wait).
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (r, _s) = attempt(
            &gw,
            "/echo",
            &[&format!("Authorization: Bearer {good_token}")],
        );
        if r.status == 101 {
            break;
        }
        assert_429(&r);
        assert!(
            std::time::Instant::now() < deadline,
            "budget never refilled"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn handshake_rate_gives_429() {
    let (gw, k) = start(
        "",
        "[limits]\nper_ip_handshakes = \"3/s\"\nper_ip_auth_failures = \"1000/s\"\n",
    );
    let auth = format!(
        "Authorization: Bearer {}",
        k.ed_token(&claims("alice", "echo"))
    );
    let _a = open(&gw, "/echo", &[&auth]);
    let _b = open(&gw, "/echo", &[&auth]);
    let _c = open(&gw, "/public", &[]);
    let (r, _s) = attempt(&gw, "/echo", &[&auth]);
    assert_429(&r);
    assert_no_token(&r, &auth[22..]);
}

#[test]
fn per_subject_connections() {
    let (gw, k) = start("", &format!("{LIMITS_OFF}per_subject_connections = 1\n"));
    let alice = format!(
        "Authorization: Bearer {}",
        k.ed_token(&claims("alice", "echo"))
    );
    let alice_hs = format!("Authorization: Bearer {}", k.hs_token(&claims("alice", "")));
    let bob = format!(
        "Authorization: Bearer {}",
        k.ed_token(&claims("bob", "echo"))
    );
    let (_, first) = accepted(&gw, "/echo", &[&alice]);
    // The same subject again, on any route, with any key: 429.
    let (r, _s) = attempt(&gw, "/echo", &[&alice]);
    assert_429(&r);
    let (r, _s) = attempt(&gw, "/open", &[&alice_hs]);
    assert_429(&r);
    // Another subject is unaffected.
    let (_, bob_conn) = accepted(&gw, "/echo", &[&bob]);
    // A refused handshake did not count: after the first closes, one more fits.
    close(first);
    let deadline = std::time::Instant::now() + WAIT;
    let again = loop {
        let (r, s) = attempt(&gw, "/echo", &[&alice]);
        if r.status == 101 {
            break s;
        }
        assert_429(&r);
        assert!(
            std::time::Instant::now() < deadline,
            "the subject's slot was never released"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (r, _s) = attempt(&gw, "/echo", &[&alice]);
    assert_429(&r);
    drop(again);
    drop(bob_conn);
    // An abrupt disconnect (no close handshake) releases the slot too.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (r, s) = attempt(&gw, "/echo", &[&alice]);
        if r.status == 101 {
            drop(s);
            break;
        }
        assert_429(&r);
        assert!(
            std::time::Instant::now() < deadline,
            "slot not released after a reset"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// The token never leaks
// ---------------------------------------------------------------------------------------

#[test]
fn token_never_in_logs_or_responses() {
    let (gw, k) = start("", LIMITS_OFF);
    let t = now();
    let good_ed = k.ed_token(&claims("alice", "echo"));
    let good_hs = k.hs_token(&claims("alice", "echo"));
    let expired = k.ed_token(&with(claims("alice", "echo"), "exp", json!(t - 999)));
    let no_scope = k.hs_token(&claims("alice", "chat"));
    let forged = {
        let other_dir = TempDir::new();
        make_keys(&other_dir).ed_token(&claims("alice", "echo"))
    };
    let tokens = [&good_ed, &good_hs, &expired, &no_scope, &forged];
    let mut responses = Vec::new();
    let mut go = |path: String, headers: Vec<String>| {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let (r, _s) = attempt(&gw, &path, &headers);
        responses.push(r);
    };
    go(format!("/echo?room=1&access_token={good_ed}&x=2"), vec![]);
    go(format!("/echo?token={good_hs}"), vec![]);
    go(
        "/echo".into(),
        vec![format!("Authorization: Bearer {good_ed}")],
    );
    go(
        "/chat".into(),
        vec![format!("Sec-WebSocket-Protocol: bearer.{good_hs}, chat.v1")],
    );
    go(format!("/echo?access_token={expired}"), vec![]);
    go(
        format!("/echo?token={}", percent_encode_all(&forged)),
        vec![],
    );
    go(
        "/echo".into(),
        vec![format!("Authorization: Bearer {no_scope}")],
    );
    go(
        format!("/echo?access_token={good_ed}&token={good_hs}"),
        vec![],
    );
    go(format!("/nope?access_token={good_ed}"), vec![]);
    go(
        format!("/chat?access_token={forged}"),
        vec![format!("Sec-WebSocket-Protocol: bearer.{forged}")],
    );
    // A sub that would forge a log line (validly signed) is refused, not logged.
    let forging = k.ed_token(&claims("alice\nwsgate warn: conn=9.9 forged", "echo"));
    go(
        "/echo".into(),
        vec![format!("Authorization: Bearer {forging}")],
    );
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [101, 101, 101, 101, 401, 401, 403, 400, 404, 400, 401]
    );
    for r in &responses {
        for token in tokens {
            assert_no_token(r, token);
        }
    }
    // Wait (bounded) until every handshake has its log line.
    let deadline = std::time::Instant::now() + WAIT;
    while gw.logs().matches("target=").count() < responses.len() {
        assert!(std::time::Instant::now() < deadline, "log:\n{}", gw.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    let logs = gw.logs();
    for token in tokens {
        for part in token.split('.') {
            assert!(
                !logs.contains(part),
                "token segment {part} in the log:\n{logs}"
            );
        }
        assert!(!logs.contains(&percent_encode_all(token)[..60]), "{logs}");
    }
    assert!(logs.contains("access_token=REDACTED"), "{logs}");
    assert!(logs.contains("room=1&access_token=REDACTED&x=2"), "{logs}");
    assert!(logs.contains("token=REDACTED"), "{logs}");
    assert!(!logs.contains("forged"), "{logs}");
}
