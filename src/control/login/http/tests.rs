//! The login endpoints over real sockets, in process: a current-thread runtime on its own
//! thread serves a listener bound to port 0; the test speaks raw HTTP/1.1 to it.

#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::{bind, serve, Limits, Live};
use crate::auth::revocation::Revocation;
use crate::control::login::password::hash;
use crate::control::login::store::{tests::faulty_store, Store};
use crate::control::login::users::{render, write_atomic, User};
use crate::control::login::{Revoke, Service};

/// Records what the service revokes.
#[derive(Default)]
struct Recorder(Mutex<Vec<Revocation>>);

impl Revoke for Recorder {
    fn revoke(&self, revocations: Vec<Revocation>) {
        self.0.lock().unwrap().extend(revocations);
    }
}

impl Recorder {
    fn take(&self) -> Vec<Revocation> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

struct Answer {
    status: u16,
    head: String,
    body: serde_json::Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// A running login listener.
struct Running {
    addr: SocketAddr,
    service: Arc<Service>,
    recorder: Arc<Recorder>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn request(addr: SocketAddr, raw: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // A refused body may make the server close before reading it all: ignore the error.
    let _ = stream.write_all(raw);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_owned(),
        body: serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    }
}

fn post(addr: SocketAddr, path: &str, content_type: &str, body: &str) -> Answer {
    request(
        addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: login\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

fn login(addr: SocketAddr, user: &str, password: &str) -> Answer {
    let body = serde_json::json!({"username": user, "password": password}).to_string();
    post(addr, "/login", "application/json", &body)
}

fn form(addr: SocketAddr, path: &str, body: &str) -> Answer {
    post(addr, path, "application/x-www-form-urlencoded", body)
}

fn refresh(addr: SocketAddr, token: &str) -> Answer {
    form(
        addr,
        "/token",
        &format!("grant_type=refresh_token&refresh_token={token}"),
    )
}

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wsgate-login-http-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A config with `[login]` in `dir`, users alice (scope "chat echo") and bob.
fn config(dir: &Path, failures: &str) -> crate::config::Config {
    crate::cli::keygen::keygen(crate::auth::keys::Alg::EdDSA, &dir.join("issuer")).unwrap();
    let users = vec![
        User {
            name: "alice".into(),
            scope: "chat echo".into(),
            password: hash(b"alice-password").unwrap(),
        },
        User {
            name: "bob".into(),
            scope: "chat".into(),
            password: hash(b"bob-password").unwrap(),
        },
    ];
    write_atomic(&dir.join("users.toml"), &render(&users)).unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[auth]\naudience = \"wsgate\"\n\
         [login]\nlisten = \"127.0.0.1:0\"\nusers = \"users.toml\"\nsigning_key = \"issuer.key.pem\"\n\
         kid = \"login-1\"\nissuer = \"https://gw.example.com\"\nstore = \"refresh.db\"\nfailures = \"{failures}\"\n\
         [[route]]\npath = \"/public\"\nbackend = \"echo\"\npublic = true\n"
    );
    crate::config::parse_str(&text, dir, "t.toml").unwrap()
}

fn start(config: &crate::config::Config, store: Store) -> Running {
    start_tls(config, store, None)
}

fn start_tls(
    config: &crate::config::Config,
    store: Store,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Running {
    let recorder = Arc::new(Recorder::default());
    let service = Service::new(config, Arc::clone(&recorder) as Arc<dyn Revoke>, store).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
        .unwrap();
    let listener = {
        let _context = runtime.enter();
        bind("127.0.0.1:0".parse().unwrap()).unwrap()
    };
    let addr = listener.local_addr().unwrap();
    let live = Live::new(config, tls).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let serving = Arc::clone(&service);
    std::thread::spawn(move || {
        runtime.block_on(serve(listener, serving, Limits::DEFAULT, live, stopped))
    });
    Running {
        addr,
        service,
        recorder,
        _stop: stop,
    }
}

fn start_in(name: &str, failures: &str) -> Running {
    let dir = dir(name);
    let config = config(&dir, failures);
    let store = Store::open(&dir.join("refresh.db"), crate::clock::unix_now()).unwrap();
    start(&config, store)
}

fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn jti_of(answer: &Answer) -> String {
    claims(answer.body["access_token"].as_str().unwrap())["jti"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn login_refresh_reuse_and_logout() {
    let gw = start_in("flow", "50/m");
    let first = login(gw.addr, "alice", "alice-password");
    assert_eq!(first.status, 200, "{}", first.head);
    assert_eq!(first.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(first.header("pragma").as_deref(), Some("no-cache"));
    assert_eq!(first.body["token_type"], "Bearer");
    assert_eq!(first.body["expires_in"], 300);
    let access = claims(first.body["access_token"].as_str().unwrap());
    assert_eq!(access["sub"], "alice");
    assert_eq!(access["scope"], "chat echo");
    assert_eq!(access["iss"], "https://gw.example.com");
    assert_eq!(access["aud"], "wsgate");
    assert_eq!(
        access["exp"].as_u64().unwrap() - access["iat"].as_u64().unwrap(),
        300
    );
    let refresh1 = first.body["refresh_token"].as_str().unwrap().to_owned();

    // Rotation: new tokens, the old refresh token spent.
    let second = refresh(gw.addr, &refresh1);
    assert_eq!(second.status, 200, "{:?}", second.body);
    assert_eq!(second.header("cache-control").as_deref(), Some("no-store"));
    let refresh2 = second.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh1, refresh2);
    assert!(gw.recorder.take().is_empty());

    // Reuse of the spent token: invalid_grant, the family revoked with both access tokens.
    let reuse = refresh(gw.addr, &refresh1);
    assert_eq!(reuse.status, 400);
    assert_eq!(reuse.body["error"], "invalid_grant");
    let revoked = gw.recorder.take();
    let jtis: Vec<&str> = revoked
        .iter()
        .map(|r| match r {
            Revocation::Jti { jti, exp: Some(_) } => jti.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(jtis, vec![jti_of(&first), jti_of(&second)]);
    // The family is dead: its newest token too.
    assert_eq!(refresh(gw.addr, &refresh2).body["error"], "invalid_grant");
    assert_eq!(gw.service.metrics.refresh_reused.load(Ordering::Relaxed), 1);

    // Logout revokes one family; another device of the same user keeps going.
    let phone = login(gw.addr, "alice", "alice-password");
    let laptop = login(gw.addr, "alice", "alice-password");
    let out = form(
        gw.addr,
        "/logout",
        &format!(
            "refresh_token={}",
            phone.body["refresh_token"].as_str().unwrap()
        ),
    );
    assert_eq!(out.status, 200);
    assert_eq!(
        gw.recorder.take(),
        vec![Revocation::Jti {
            jti: jti_of(&phone),
            exp: claims(phone.body["access_token"].as_str().unwrap())["exp"].as_u64()
        }]
    );
    assert_eq!(
        refresh(gw.addr, phone.body["refresh_token"].as_str().unwrap()).status,
        400
    );
    assert_eq!(
        refresh(gw.addr, laptop.body["refresh_token"].as_str().unwrap()).status,
        200
    );
    // RFC 7009 §2.2: unknown tokens get 200 too; RFC 7009's `token` name works.
    assert_eq!(
        form(gw.addr, "/logout", "refresh_token=unknown").status,
        200
    );
    assert_eq!(
        form(gw.addr, "/logout", &format!("token={}", "A".repeat(43))).status,
        200
    );
    assert!(gw.recorder.take().is_empty());
}

#[test]
fn wrong_credentials_look_the_same_for_known_and_unknown_names() {
    let gw = start_in("uniform", "50/m");
    let wrong = login(gw.addr, "alice", "not-her-password");
    let unknown = login(gw.addr, "mallory", "alice-password");
    let hostile = login(gw.addr, "mal\u{0}lory\n", "x");
    for answer in [&wrong, &unknown, &hostile] {
        assert_eq!(answer.status, 401);
        assert_eq!(answer.body, wrong.body);
        assert_eq!(answer.header("cache-control").as_deref(), Some("no-store"));
    }
    assert_eq!(gw.service.metrics.login_failed.load(Ordering::Relaxed), 3);
}

#[test]
fn failures_budget_refuses_even_the_right_password_with_retry_after() {
    let gw = start_in("budget", "3/m");
    for _ in 0..3 {
        assert_eq!(login(gw.addr, "bob", "wrong-password").status, 401);
    }
    let limited = login(gw.addr, "bob", "bob-password");
    assert_eq!(limited.status, 429);
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    // The address's budget is spent too (unknown names included): alice from here waits.
    assert_eq!(login(gw.addr, "alice", "alice-password").status, 429);
}

#[test]
fn bad_requests_get_their_rfc_6749_answers() {
    let gw = start_in("bad", "50/m");
    let good_body = r#"{"username":"alice","password":"alice-password"}"#;
    // SPEC §11: JSON only; a form post (what a cross-site form sends) is refused.
    assert_eq!(
        post(
            gw.addr,
            "/login",
            "application/x-www-form-urlencoded",
            "username=alice&password=alice-password"
        )
        .status,
        415
    );
    assert_eq!(post(gw.addr, "/login", "text/plain", good_body).status, 415);
    assert_eq!(
        post(
            gw.addr,
            "/login",
            "application/json; charset=utf-8",
            good_body
        )
        .status,
        200
    );
    for bad in [
        "",
        "{",
        "[]",
        r#"{"username":"alice"}"#,
        r#"{"username":1,"password":"x"}"#,
        r#"{"username":"a","password":"b","admin":true}"#,
        r#"{"username":"a","username":"b","password":"c"}"#,
    ] {
        let answer = post(gw.addr, "/login", "application/json", bad);
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (400, Some("invalid_request")),
            "{bad}"
        );
    }
    // A password of 1 MiB: refused from its Content-Length, never read or hashed.
    let huge = format!(
        r#"{{"username":"alice","password":"{}"}}"#,
        "a".repeat(1 << 20)
    );
    assert_eq!(
        post(gw.addr, "/login", "application/json", &huge).status,
        413
    );
    // The same without Content-Length (chunked): cut at the limit.
    let chunked = format!(
        "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{huge}\r\n0\r\n\r\n",
        huge.len()
    );
    assert_eq!(request(gw.addr, chunked.as_bytes()).status, 413);
    for (body, error) in [
        ("refresh_token=x", "invalid_request"),
        (
            "grant_type=password&username=a&password=b",
            "unsupported_grant_type",
        ),
        ("grant_type=refresh_token", "invalid_request"),
        (
            "grant_type=refresh_token&refresh_token=a&refresh_token=b",
            "invalid_request",
        ),
        (
            "grant_type=refresh_token&refresh_token=%zz",
            "invalid_request",
        ),
        (
            "grant_type=refresh_token&refresh_token=nope",
            "invalid_grant",
        ),
    ] {
        let answer = form(gw.addr, "/token", body);
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (400, Some(error)),
            "{body}"
        );
        assert_eq!(answer.header("cache-control").as_deref(), Some("no-store"));
    }
    assert_eq!(
        post(gw.addr, "/token", "application/json", "{}").body["error"],
        "invalid_request"
    );
    assert_eq!(form(gw.addr, "/logout", "").status, 400);
    let get = request(gw.addr, b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        (get.status, get.header("allow").as_deref()),
        (405, Some("POST"))
    );
    assert_eq!(
        request(gw.addr, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n").status,
        404
    );
    assert_eq!(
        request(
            gw.addr,
            b"POST /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        )
        .status,
        405
    );
    assert_eq!(request(gw.addr, b"\x16\x03\x01garbage\r\n\r\n").status, 400);
}

#[test]
fn jwks_and_discovery_verify_issued_tokens() {
    let gw = start_in("jwks", "50/m");
    let jwks = request(
        gw.addr,
        b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(jwks.status, 200);
    let key = &jwks.body["keys"][0];
    assert_eq!(
        (
            key["kty"].as_str(),
            key["crv"].as_str(),
            key["kid"].as_str()
        ),
        (Some("OKP"), Some("Ed25519"), Some("login-1"))
    );
    let discovery = request(
        gw.addr,
        b"GET /.well-known/openid-configuration HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(discovery.body["issuer"], "https://gw.example.com");
    // Verify an issued token with the published key alone (ring, not the gateway's code).
    let token = login(gw.addr, "alice", "alice-password").body["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let x = URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, x)
        .verify(
            signed.as_bytes(),
            &URL_SAFE_NO_PAD.decode(signature).unwrap(),
        )
        .unwrap();
}

#[test]
fn a_store_that_cannot_be_written_answers_503_and_the_token_stays_unspent() {
    let dir = dir("faulty");
    let config = config(&dir, "50/m");
    let (store, fail) = faulty_store(&dir.join("refresh.db"), crate::clock::unix_now());
    let gw = start(&config, store);
    let first = login(gw.addr, "alice", "alice-password");
    assert_eq!(first.status, 200);
    let token = first.body["refresh_token"].as_str().unwrap().to_owned();
    fail.store(true, Ordering::SeqCst);
    let refused = login(gw.addr, "alice", "alice-password");
    assert_eq!(
        (refused.status, refused.body["error"].as_str()),
        (503, Some("temporarily_unavailable"))
    );
    assert!(refused.body.get("access_token").is_none());
    assert_eq!(refresh(gw.addr, &token).status, 503);
    fail.store(false, Ordering::SeqCst);
    // Nothing was spent: the token rotates now, once.
    assert_eq!(refresh(gw.addr, &token).status, 200);
    assert!(gw.recorder.take().is_empty());
}

/// Unknown names cost what known names cost: the median time of a wrong password for a
/// known name and for an unknown one, sampled alternately, stay within a factor of two
/// (without the dummy hash the unknown name would answer about a hundred times faster).
#[test]
fn unknown_users_take_as_long_as_known_ones() {
    let gw = start_in("timing", "1000/s");
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..15 {
        let t = crate::clock::now();
        assert_eq!(login(gw.addr, "alice", "wrong-password").status, 401);
        known.push(t.elapsed());
        let t = crate::clock::now();
        assert_eq!(login(gw.addr, "nobody-here", "wrong-password").status, 401);
        unknown.push(t.elapsed());
    }
    known.sort();
    unknown.sort();
    let (k, u) = (known[7].as_secs_f64(), unknown[7].as_secs_f64());
    eprintln!(
        "median wrong-password answer: known name {:.1} ms, unknown name {:.1} ms",
        k * 1e3,
        u * 1e3
    );
    assert!(u > k / 2.0 && u < k * 2.0, "known {k}s unknown {u}s");
}

/// With `[tls]` the endpoints speak HTTPS; plain HTTP gets no answer.
#[test]
fn https_with_tls() {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    let dir = dir("tls");
    let config = config(&dir, "50/m");
    let store = Store::open(&dir.join("refresh.db"), crate::clock::unix_now()).unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = CertificateDer::from(generated.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.key_pair.serialize_der()));
    let server = crate::net::tls::server_config(vec![cert.clone()], key).unwrap();
    let gw = start_tls(&config, store, Some(server));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(client), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(gw.addr).unwrap());
    let body = r#"{"username":"alice","password":"alice-password"}"#;
    write!(
        tls,
        "POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = Vec::new();
    // The server closes after its answer (a TLS close_notify, or an EOF).
    let _ = tls.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("refresh_token"), "{text}");
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let plain = login(gw.addr, "alice", "alice-password");
    assert_eq!(plain.status, 0);
}
