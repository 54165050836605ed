//! The worker's cache of verified tokens (`auth::cache`) seen from the handshake decision:
//! a hit skips only the signature and decoding; revocation, time, the route's scope and a
//! changed verifier (rotation, audience) are decided on every handshake.

use std::sync::atomic::AtomicU64;

use ring::hmac;

use super::decide::{Ctx, Gate};
use super::limits::{IpBudget, IpTable, SubjectTable};
use super::origin::OriginPolicy;
use super::reject::Reject;
use crate::auth::keys::{Alg, Key, KeySet};
use crate::auth::revocation::{RetentionPolicy, Revocation, RevocationSet};
use crate::auth::verify::{Rules, Scratch, Verifier};
use crate::proto::http::request::{parse_head, validate_upgrade, MAX_HEADERS};

const NOW: u64 = 1_900_000_000;
const SECRET: [u8; 32] = [0x42; 32];
const ROTATED: [u8; 32] = [0x43; 32];

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn token(secret: &[u8], claims: &str) -> String {
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT","kid":"hs"}"#),
        b64(claims.as_bytes())
    );
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

fn claims(jti: &str, scope: &str, exp: u64, aud: Option<&str>) -> String {
    let aud = aud.map_or(String::new(), |a| format!(r#","aud":"{a}""#));
    format!(r#"{{"sub":"alice","jti":"{jti}","iat":{NOW},"exp":{exp},"scope":"{scope}"{aud}}}"#)
}

/// Routes /chat (scope chat) and /admin (scope admin), tokens in `access_token`, one
/// HS256 key `hs` with `secret`, and `auth.audience` when given.
fn gate(secret: &[u8], audience: Option<&str>) -> Gate {
    let dir = std::env::temp_dir().join(format!(
        "wsgate-cache-tests-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("hs.secret"), b64(&SECRET)).expect("secret");
    let text = r#"
[server]
listen = ["127.0.0.1:0"]
[[auth.key]]
kid = "hs"
alg = "HS256"
secret_file = "hs.secret"
[[route]]
path = "/chat"
backend = "echo"
scope = ["chat"]
[[route]]
path = "/admin"
backend = "echo"
scope = ["admin"]
"#;
    let config = crate::config::parse_str(text, &dir, "t.toml").expect("config");
    let _ = std::fs::remove_dir_all(&dir);
    let keys = KeySet::new(vec![
        Key::hmac(Some("hs".into()), Alg::HS256, secret).expect("key")
    ])
    .expect("keys");
    let verifier = Verifier {
        keys,
        rules: Rules {
            issuer: None,
            audience: audience.map(Into::into),
            leeway_secs: 30,
            max_token_bytes: 4096,
            max_lifetime_secs: 24 * 3600,
        },
    };
    Gate::new(
        config.routes,
        OriginPolicy::new(&[], true).expect("origin"),
        Some(verifier),
        config.auth.sources,
        false,
        1000,
    )
}

/// One worker's state across handshakes.
struct Worker {
    ips: IpTable,
    subjects: SubjectTable,
    longest: AtomicU64,
    scratch: Scratch,
    token_buf: Vec<u8>,
}

impl Worker {
    fn new() -> Worker {
        Worker {
            ips: IpTable::new(IpBudget {
                connections: 0,
                handshakes_per_sec: 0,
                auth_failures_per_sec: 0,
                ipv6_prefix: 64,
            }),
            subjects: SubjectTable::new(0),
            longest: AtomicU64::new(0),
            scratch: Scratch::new(4096),
            token_buf: Vec::new(),
        }
    }

    /// The decision for `path?access_token=token` at `now_unix`: the status (101 for an
    /// upgrade) and the rejection's reason label.
    fn handshake(
        &mut self,
        gate: &Gate,
        path: &str,
        token: &str,
        now_unix: u64,
        revocations: &RevocationSet,
    ) -> (u16, &'static str) {
        let req = format!(
            "GET {path}?access_token={token} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let head = parse_head(req.as_bytes(), &mut headers).expect("head");
        let upgrade = validate_upgrade(&head).expect("upgrade");
        let mut ctx = Ctx {
            peer: [127, 0, 0, 1].into(),
            now: crate::clock::now(),
            now_unix,
            open_connections: 1,
            draining: false,
            ips: &self.ips,
            subjects: &self.subjects,
            revocations,
            longest_lifetime: &self.longest,
            auth_failure: None,
            scratch: &mut self.scratch,
            token_buf: &mut self.token_buf,
        };
        match gate.decide(&head, &upgrade, &mut ctx) {
            Ok(accept) => {
                if let Some(i) = &accept.identity {
                    self.subjects.release(&i.sub);
                }
                (101, "")
            }
            Err(r) => (r.status(), Reject::reason_label(&r)),
        }
    }

    fn cached(&self) -> usize {
        self.scratch.cache().len()
    }
}

fn no_revocations() -> RevocationSet {
    RevocationSet::new(RetentionPolicy {
        leeway_secs: 30,
        retention_secs: 3600,
    })
}

#[test]
fn a_repeated_token_is_a_hit_and_a_failed_one_is_never_cached() {
    let gate = gate(&SECRET, None);
    let mut w = Worker::new();
    let none = no_revocations();
    let t = token(&SECRET, &claims("j1", "chat", NOW + 600, None));
    assert_eq!(w.handshake(&gate, "/chat", &t, NOW, &none).0, 101);
    assert_eq!(w.cached(), 1);
    assert_eq!(w.handshake(&gate, "/chat", &t, NOW, &none).0, 101);
    assert_eq!(
        w.cached(),
        1,
        "the second handshake is a hit, not a second entry"
    );
    // The same claims under another signature: a different token, verified (and refused).
    let forged = token(&ROTATED, &claims("j1", "chat", NOW + 600, None));
    assert_eq!(w.handshake(&gate, "/chat", &forged, NOW, &none).0, 401);
    // One byte off the cached token: a miss, verified, refused.
    let mut flipped = t.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).expect("ascii");
    assert_eq!(w.handshake(&gate, "/chat", &flipped, NOW, &none).0, 401);
    assert_eq!(w.cached(), 1);
}

#[test]
fn a_cached_token_is_refused_once_revoked() {
    let gate = gate(&SECRET, None);
    let mut w = Worker::new();
    let t = token(&SECRET, &claims("j-revoked", "chat", NOW + 600, None));
    let none = no_revocations();
    assert_eq!(w.handshake(&gate, "/chat", &t, NOW, &none).0, 101);
    assert_eq!(w.cached(), 1);
    // SPEC §6: revocation is checked on every handshake, hit or miss.
    let mut revoked = no_revocations();
    revoked.insert(
        Revocation::Jti {
            jti: "j-revoked".into(),
            exp: Some(NOW + 600),
        },
        NOW + 3600,
    );
    assert_eq!(
        w.handshake(&gate, "/chat", &t, NOW, &revoked),
        (401, "revoked")
    );
    assert_eq!(w.cached(), 1, "refused on a hit");
    // Every token of the subject issued before a moment.
    let mut by_sub = no_revocations();
    by_sub.insert(
        Revocation::Sub {
            sub: "alice".into(),
            before: NOW + 1,
        },
        NOW + 3600,
    );
    assert_eq!(
        w.handshake(&gate, "/chat", &t, NOW, &by_sub),
        (401, "revoked")
    );
}

#[test]
fn a_cached_token_is_refused_once_expired() {
    let gate = gate(&SECRET, None);
    let mut w = Worker::new();
    let none = no_revocations();
    let t = token(&SECRET, &claims("j-exp", "chat", NOW + 60, None));
    assert_eq!(w.handshake(&gate, "/chat", &t, NOW, &none).0, 101);
    assert_eq!(w.cached(), 1);
    // Within the leeway (30 s) it still passes, from the cache.
    assert_eq!(w.handshake(&gate, "/chat", &t, NOW + 80, &none).0, 101);
    // SPEC §3: past exp + leeway it is refused, and its entry goes.
    assert_eq!(
        w.handshake(&gate, "/chat", &t, NOW + 91, &none),
        (401, "expired")
    );
    assert_eq!(w.cached(), 0);
}

#[test]
fn a_cached_token_is_held_to_each_routes_scope() {
    let gate = gate(&SECRET, None);
    let mut w = Worker::new();
    let none = no_revocations();
    let t = token(&SECRET, &claims("j-scope", "chat", NOW + 600, None));
    assert_eq!(w.handshake(&gate, "/chat", &t, NOW, &none).0, 101);
    assert_eq!(w.cached(), 1);
    // The route's rule is checked on the hit: scope "admin" is not in the token.
    assert_eq!(w.handshake(&gate, "/admin", &t, NOW, &none).0, 403);
    assert_eq!(w.handshake(&gate, "/chat", &t, NOW, &none).0, 101);
}

#[test]
fn a_rotated_key_misses_and_verifies_again() {
    let mut w = Worker::new();
    let none = no_revocations();
    let old = token(&SECRET, &claims("j-rot", "chat", NOW + 600, None));
    let before = gate(&SECRET, None);
    assert_eq!(w.handshake(&before, "/chat", &old, NOW, &none).0, 101);
    assert_eq!(w.cached(), 1);
    // SIGHUP with kid "hs" rotated to a new secret: a new verifier, so the cache is
    // emptied and the old token is verified again, against the new key, and refused.
    let after = gate(&ROTATED, None);
    assert_eq!(
        w.handshake(&after, "/chat", &old, NOW, &none),
        (401, "bad_signature")
    );
    assert_eq!(w.cached(), 0);
    let new = token(&ROTATED, &claims("j-rot2", "chat", NOW + 600, None));
    assert_eq!(w.handshake(&after, "/chat", &new, NOW, &none).0, 101);
    assert_eq!(w.cached(), 1);
    // Back to a verifier the cache did not fill: a miss again.
    assert_eq!(w.handshake(&before, "/chat", &new, NOW, &none).0, 401);
}

#[test]
fn a_changed_audience_misses_and_refuses() {
    let mut w = Worker::new();
    let none = no_revocations();
    let t = token(&SECRET, &claims("j-aud", "chat", NOW + 600, Some("app-a")));
    let a = gate(&SECRET, Some("app-a"));
    assert_eq!(w.handshake(&a, "/chat", &t, NOW, &none).0, 101);
    assert_eq!(w.cached(), 1);
    // A reload that asks another audience: the cached acceptance does not carry over.
    let b = gate(&SECRET, Some("app-b"));
    assert_eq!(w.handshake(&b, "/chat", &t, NOW, &none).0, 401);
    assert_eq!(w.cached(), 0);
}
