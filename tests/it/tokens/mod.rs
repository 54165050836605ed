//! SPEC §4 token rows and the attack catalogue, through real sockets: keys made by
//! `wsgate keygen`, tokens signed here with `wsgate::cli::token::sign` (or over hand-built
//! signing input for tokens the library would never produce).
//!
//! This file holds the keys, configs and request helpers; the tests are in one file per
//! topic.

use std::io::{ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};
use wsgate::auth::keys::{pem_decode, Alg};
use wsgate::cli::token::{sign, SigningKey};

use crate::support::*;

mod abuse_limits;
mod algorithms;
mod asymmetric;
mod claims;
mod encoding;
mod leaks;
mod origin;
mod sources;

// ---------------------------------------------------------------------------------------
// Keys, tokens, configs
// ---------------------------------------------------------------------------------------

/// Header of an ordinary EdDSA token for key "ed".
pub const ED_HEADER: &str = r#"{"alg":"EdDSA","typ":"JWT","kid":"ed"}"#;
/// Header of an ordinary HS256 token for key "hs".
pub const HS_HEADER: &str = r#"{"alg":"HS256","typ":"JWT","kid":"hs"}"#;

/// Wall-clock now, unix seconds (the gateway reads the same clock).
pub use crate::support::now_unix as now;

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
