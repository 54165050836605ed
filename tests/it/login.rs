//! SPEC §11, the token service, through the real binary and real sockets: `user add` →
//! `serve` → `POST /login` → a token route with the access token → `POST /token` rotates →
//! replaying the spent refresh token revokes its family and the live socket closes 4403 →
//! `/logout` closes another family's socket while a third stays open → `user remove`
//! closes the user's last socket through the admin listener.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};

use crate::support::*;

/// `wsgate ARGS` with `stdin` as its standard input: (exit code, stdout, stderr).
pub(crate) fn run_with_stdin(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wsgate");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config() -> String {
    r#"[server]
listen = "127.0.0.1:0"
workers = 2

[admin]
listen = "127.0.0.1:ADMIN_PORT"
revocation_log = "revocations.log"

[login]
listen = "127.0.0.1:0"
users = "users.toml"
signing_key = "issuer.key.pem"
issuer = "https://login.test"
store = "refresh.db"
failures = "100/m"

[origin]
allow = ["http://app.test:8080"]

[[route]]
path = "/chat"
backend = "echo"
scope = ["chat"]
"#
    .replace("ADMIN_PORT", &fixed_port().to_string())
}

/// A directory with the login key, the config and users alice, bob and carol (scope chat).
fn setup() -> (TempDir, String) {
    let dir = TempDir::new();
    let key = dir.path().join("issuer");
    let (code, out, err) = run(&[
        "keygen",
        "--alg",
        "EdDSA",
        "--out",
        key.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let text = config();
    let cfg = dir.write("wsgate.toml", &text);
    let cfg = cfg.to_str().expect("utf-8").to_owned();
    for name in ["alice", "bob", "carol"] {
        let (code, out, err) = run_with_stdin(
            &["user", "add", name, "--scope", "chat", "-c", &cfg],
            &format!("{name}-password\n"),
        );
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains(&format!("added {name}")), "{out}");
    }
    let users = std::fs::read_to_string(dir.path().join("users.toml")).expect("users file");
    assert!(users.contains("$argon2id$v=19$m=19456,t=2,p=1$"), "{users}");
    assert!(!users.contains("alice-password"), "never plaintext");
    let (code, out, _) = run(&["user", "list", "-c", &cfg]);
    assert_eq!(
        (code, out.as_str()),
        (0, "alice\tchat\nbob\tchat\ncarol\tchat\n")
    );
    (dir, text)
}

/// The address after `what listening on ` in the gateway's log.
pub(crate) fn listener(gw: &Gateway, what: &str) -> SocketAddr {
    let needle = format!("{what} listening on ");
    gw.wait_log(&needle)
        .split(needle.as_str())
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .expect("listen address")
}

/// One HTTP/1.1 request (a `Host` is added); returns (status, head, body).
fn exchange(
    addr: SocketAddr,
    request_line: &str,
    headers: &[&str],
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut head = format!("{request_line}\r\nHost: login.test\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    write!(s, "{head}\r\n{body}").expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head.to_owned(), body.to_owned())
}

/// One HTTP/1.1 POST; returns (status, JSON body).
fn post(addr: SocketAddr, path: &str, content_type: &str, body: &str) -> (u16, serde_json::Value) {
    let content_type = format!("Content-Type: {content_type}");
    let (status, _, body) = exchange(
        addr,
        &format!("POST {path} HTTP/1.1"),
        &[&content_type],
        body,
    );
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// The value of header `name` in `head` (case-insensitive), if present.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Logs in; returns (access token, refresh token).
pub(crate) fn login(addr: SocketAddr, user: &str) -> (String, String) {
    let body = serde_json::json!({"username": user, "password": format!("{user}-password")});
    let (status, answer) = post(addr, "/login", "application/json", &body.to_string());
    assert_eq!(status, 200, "{answer}");
    tokens(&answer)
}

pub(crate) fn tokens(answer: &serde_json::Value) -> (String, String) {
    (
        answer["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned(),
        answer["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_owned(),
    )
}

pub(crate) fn refresh(addr: SocketAddr, token: &str) -> (u16, serde_json::Value) {
    post(
        addr,
        "/token",
        "application/x-www-form-urlencoded",
        &format!("grant_type=refresh_token&refresh_token={token}"),
    )
}

/// Opens /chat with `access` as a bearer token and checks that it echoes.
pub(crate) fn connect(gw: &Gateway, access: &str) -> TcpStream {
    let mut s = open(gw, "/chat", &[&format!("Authorization: Bearer {access}")]);
    echo_once(&mut s, 1, b"hello");
    s
}

#[test]
fn login_connect_rotate_reuse_logout_and_remove_through_the_real_binary() {
    let (dir, text) = setup();
    let cfg = dir.path().join("wsgate.toml");
    let cfg = cfg.to_str().expect("utf-8").to_owned();
    let gw = Gateway::start_in(dir, &text);
    let login_addr = listener(&gw, "login");

    // Log in, connect with the access token.
    let (access1, refresh1) = login(login_addr, "alice");
    let mut first = connect(&gw, &access1);

    // Rotation: new tokens; the new access token connects too.
    let (status, answer) = refresh(login_addr, &refresh1);
    assert_eq!(status, 200, "{answer}");
    let (access2, refresh2) = tokens(&answer);
    let mut second = connect(&gw, &access2);

    // The spent refresh token again: invalid_grant, and every access token of the family is
    // revoked; both live sockets close 4403 before the answer arrives.
    let (status, answer) = refresh(login_addr, &refresh1);
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    expect_closed_with(&mut first, 4403);
    expect_closed_with(&mut second, 4403);
    assert_eq!(refresh(login_addr, &refresh2).0, 400, "the family is dead");
    let (refused, _) = request(
        &gw,
        upgrade_request("/chat", &[&format!("Authorization: Bearer {access2}")]).as_bytes(),
    );
    assert_eq!(refused.status, 401);

    // Two more families: logging one out closes its socket only.
    let (phone_access, phone_refresh) = login(login_addr, "alice");
    let (laptop_access, laptop_refresh) = login(login_addr, "alice");
    let (bob_access, _) = login(login_addr, "bob");
    let mut phone = connect(&gw, &phone_access);
    let mut laptop = connect(&gw, &laptop_access);
    let mut bob = connect(&gw, &bob_access);
    let (status, _) = post(
        login_addr,
        "/logout",
        "application/x-www-form-urlencoded",
        &format!("refresh_token={phone_refresh}"),
    );
    assert_eq!(status, 200);
    expect_closed_with(&mut phone, 4403);
    echo_once(&mut laptop, 1, b"still here");
    echo_once(&mut bob, 1, b"still here");
    assert_eq!(refresh(login_addr, &laptop_refresh).0, 200);

    // `user remove` while the gateway runs: the admin listener closes bob's socket.
    let (code, out, err) = run(&["user", "remove", "bob", "-c", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("revoked bob's tokens"), "{out}");
    expect_closed_with(&mut bob, 4403);
    echo_once(&mut laptop, 1, b"alice unaffected");
    let body = serde_json::json!({"username": "bob", "password": "bob-password"});
    assert_eq!(
        post(login_addr, "/login", "application/json", &body.to_string()).0,
        401
    );
    // `user add` while the gateway runs: the very next login sees the new user (every
    // login looks whether the users file changed), and a login right before it did not.
    let dave = serde_json::json!({"username": "dave", "password": "dave-password"});
    assert_eq!(
        post(login_addr, "/login", "application/json", &dave.to_string()).0,
        401
    );
    let (code, out, err) = run_with_stdin(
        &["user", "add", "dave", "--scope", "chat", "-c", &cfg],
        "dave-password\n",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        post(login_addr, "/login", "application/json", &dave.to_string()).0,
        200
    );

    // The published key verifies the tokens (what another service would fetch).
    let (status, _, jwks) = exchange(login_addr, "GET /.well-known/jwks.json HTTP/1.1", &[], "");
    let jwks: serde_json::Value = serde_json::from_str(&jwks).expect("json");
    assert_eq!(status, 200);
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    // Login metrics on the admin listener, by outcome.
    let admin = listener(&gw, "admin");
    let metrics = {
        let mut s = TcpStream::connect(admin).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n")
            .expect("send");
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("answer");
        raw
    };
    for line in [
        "wsgate_login_total{outcome=\"ok\"} 5",
        "wsgate_login_total{outcome=\"failed\"} 2",
        "wsgate_login_refresh_total{outcome=\"ok\"} 2",
        "wsgate_login_refresh_total{outcome=\"reused\"} 1",
        "wsgate_login_refresh_total{outcome=\"invalid\"} 1",
        "wsgate_login_logout_total 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    // No token or password reached the log.
    let logs = gw.logs();
    for secret in [
        &access1,
        &refresh1,
        &refresh2,
        &phone_refresh,
        "alice-password",
    ] {
        assert!(!logs.contains(secret), "a secret in the log:\n{logs}");
    }
}

#[test]
fn user_remove_while_the_gateway_is_down_is_applied_at_its_next_start() {
    let (dir, text) = setup();
    let cfg = dir.path().join("wsgate.toml");
    let cfg = cfg.to_str().expect("utf-8").to_owned();
    let gw = Gateway::start_in(dir, &text);
    let login_addr = listener(&gw, "login");
    let (_, carol_refresh) = login(login_addr, "carol");
    let mut gw = gw;
    gw.signal(15);
    assert_eq!(gw.wait_exit(), Some(0));
    let dir = std::mem::replace(&mut gw.dir, TempDir(std::path::PathBuf::new()));
    drop(gw);
    // The gateway is gone; its admin port refuses.
    let (code, out, err) = run(&["user", "remove", "carol", "-c", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("applied at the gateway's next start"), "{out}");
    let (code, _, err) = run(&["user", "remove", "carol", "-c", &cfg]);
    assert_eq!(code, 1);
    assert!(err.contains("no user \"carol\""), "{err}");
    let gw = Gateway::start_in(dir, &text);
    let login_addr = listener(&gw, "login");
    gw.wait_log("removed while the gateway was down");
    assert_eq!(refresh(login_addr, &carol_refresh).0, 400);
}

#[test]
fn a_store_that_cannot_be_opened_stops_the_start_naming_it() {
    let (dir, text) = setup();
    let text = text.replace(
        "store = \"refresh.db\"",
        "store = \"missing-dir/refresh.db\"",
    );
    let cfg = dir.write("wsgate.toml", &text);
    let out = Command::new(bin())
        .args(["serve", "-c"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("login.store") && err.contains("missing-dir/refresh.db"),
        "{err}"
    );
}

#[test]
fn cors_answers_only_the_origins_of_the_gateway_allowlist() {
    let (dir, text) = setup();
    let gw = Gateway::start_in(dir, &text);
    let login_addr = listener(&gw, "login");
    let allowed = "Origin: http://app.test:8080";
    let other = "Origin: http://evil.test:8080";
    let preflight = |path: &str, origin: &str| {
        exchange(
            login_addr,
            &format!("OPTIONS {path} HTTP/1.1"),
            &[
                origin,
                "Access-Control-Request-Method: POST",
                "Access-Control-Request-Headers: content-type",
            ],
            "",
        )
    };
    // The preflight of an allowed origin, for each token endpoint.
    for path in ["/login", "/token", "/logout"] {
        let (status, head, _) = preflight(path, allowed);
        assert_eq!(status, 204, "{path}: {head}");
        assert_eq!(
            header(&head, "access-control-allow-origin"),
            Some("http://app.test:8080"),
            "{head}"
        );
        assert_eq!(header(&head, "access-control-allow-methods"), Some("POST"));
        assert_eq!(
            header(&head, "access-control-allow-headers"),
            Some("content-type")
        );
        assert_eq!(header(&head, "access-control-max-age"), Some("600"));
        assert_eq!(header(&head, "vary"), Some("Origin"));
        assert_eq!(header(&head, "access-control-allow-credentials"), None);
        // Another origin: refused, no CORS header at all.
        let (status, head, _) = preflight(path, other);
        assert_eq!(status, 403, "{path}: {head}");
        assert!(
            !head.to_ascii_lowercase().contains("access-control-"),
            "{head}"
        );
        assert_eq!(header(&head, "vary"), Some("Origin"));
    }
    // The actual POST from the allowed origin: processed, with its CORS headers.
    let body = serde_json::json!({"username": "alice", "password": "alice-password"}).to_string();
    let json = "Content-Type: application/json";
    let (status, head, answer) =
        exchange(login_addr, "POST /login HTTP/1.1", &[json, allowed], &body);
    assert_eq!(status, 200, "{head}{answer}");
    assert_eq!(
        header(&head, "access-control-allow-origin"),
        Some("http://app.test:8080")
    );
    assert_eq!(header(&head, "vary"), Some("Origin"));
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("json");
    let (access, refresh_token) = tokens(&answer);
    let form = "Content-Type: application/x-www-form-urlencoded";
    let rotate = format!("grant_type=refresh_token&refresh_token={refresh_token}");
    // From another origin: refused before anything happens; the refresh token stays
    // unspent (it still rotates below), and no CORS header lets the page read the 403.
    let (status, head, _) = exchange(login_addr, "POST /token HTTP/1.1", &[form, other], &rotate);
    assert_eq!(status, 403, "{head}");
    assert_eq!(header(&head, "access-control-allow-origin"), None);
    let (status, head, _) = exchange(
        login_addr,
        "POST /login HTTP/1.1",
        &[json, "Origin: null"],
        &body,
    );
    assert_eq!(status, 403, "{head}");
    // Without Origin (not a browser), served as before; then from the allowed origin.
    let (status, head, rotated) = exchange(
        login_addr,
        "POST /token HTTP/1.1",
        &[form, allowed],
        &rotate,
    );
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        header(&head, "access-control-allow-origin"),
        Some("http://app.test:8080")
    );
    let rotated: serde_json::Value = serde_json::from_str(&rotated).expect("json");
    let (_, live_refresh) = tokens(&rotated);
    let logout = format!("refresh_token={live_refresh}");
    // A logout from another origin does nothing; from the allowed one, it ends the family.
    let (status, _, _) = exchange(login_addr, "POST /logout HTTP/1.1", &[form, other], &logout);
    assert_eq!(status, 403);
    let bearer = format!("Authorization: Bearer {access}");
    assert_eq!(
        request(&gw, upgrade_request("/chat", &[&bearer]).as_bytes())
            .0
            .status,
        101
    );
    let (status, head, _) = exchange(
        login_addr,
        "POST /logout HTTP/1.1",
        &[form, allowed],
        &logout,
    );
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        header(&head, "access-control-allow-origin"),
        Some("http://app.test:8080")
    );
    assert_eq!(
        request(&gw, upgrade_request("/chat", &[&bearer]).as_bytes())
            .0
            .status,
        401
    );
    // SIGHUP: the login listener follows the new allowlist.
    gw.dir.write(
        "wsgate.toml",
        text.replace("http://app.test:8080", "http://app2.test:8080"),
    );
    gw.signal(1);
    gw.wait_log("reloaded ");
    assert_eq!(preflight("/login", "Origin: http://app2.test:8080").0, 204);
    assert_eq!(preflight("/login", allowed).0, 403);
    // The public documents: any origin may read them.
    for path in [
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
    ] {
        let (status, head, _) = exchange(login_addr, &format!("GET {path} HTTP/1.1"), &[other], "");
        assert_eq!(status, 200, "{head}");
        assert_eq!(header(&head, "access-control-allow-origin"), Some("*"));
    }
}

/// `GET /.well-known/jwks.json` over TLS trusting only `cert`; the error when the
/// handshake (or anything after it) fails.
fn jwks_over_tls(
    addr: SocketAddr,
    cert: &rustls::pki_types::CertificateDer<'static>,
) -> Result<String, std::io::Error> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut s = crate::tls::tls_client(stream, cert);
    s.write_all(b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    Ok(raw)
}

#[test]
fn sighup_reloads_the_login_listener_certificate_too() {
    let dir = TempDir::new();
    let key = dir.path().join("issuer");
    let (code, out, err) = run(&[
        "keygen",
        "--alg",
        "EdDSA",
        "--out",
        key.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (cert, key, old) = crate::tls::self_signed();
    dir.write("cert.pem", cert);
    dir.write("key.pem", key);
    let text = config() + "\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n";
    let gw = Gateway::start_in(dir, &text);
    assert!(gw.wait_log("login listening on").contains("(https)"));
    let login_addr = listener(&gw, "login");
    let answer = jwks_over_tls(login_addr, &old)
        .unwrap_or_else(|e| panic!("HTTPS with the first certificate: {e}; log:\n{}", gw.logs()));
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let (cert, key, new) = crate::tls::self_signed();
    gw.dir.write("cert.pem", cert);
    gw.dir.write("key.pem", key);
    gw.signal(1);
    // Published to the login listener before this line is logged.
    gw.wait_log("reloaded ");
    let answer = jwks_over_tls(login_addr, &new)
        .unwrap_or_else(|e| panic!("HTTPS with the new certificate: {e}; log:\n{}", gw.logs()));
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(
        jwks_over_tls(login_addr, &old).is_err(),
        "the old certificate is still served by the login listener"
    );
}
