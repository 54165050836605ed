//! SPEC §6 revocation and §7 observability through the admin listener.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Instant;

use wsgate::control::admin::listener::{HEADER_READ_TIMEOUT, PER_PEER_CONNECTIONS};

use crate::support::*;

const SECRET: &[u8] = b"admin-tests-secret-0123456789abcdef-0123456789";

fn token(sub: &str, jti: &str, scope: &str) -> String {
    jti_token(SECRET, sub, jti, scope, 3600)
}

fn config() -> String {
    config_with("")
}

/// The admin test config with `extra` (whole sections) before the keys.
fn config_with(extra: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
workers = 2
{extra}

[[auth.key]]
alg = "HS256"
secret_file = "hs.secret"

[admin]
listen = "127.0.0.1:0"
revocation_log = "revocations.log"

[[route]]
path = "/echo"
backend = "echo"
scope = ["echo"]
"#
    )
}

fn start(dir: TempDir) -> (Gateway, SocketAddr) {
    start_with(dir, &config())
}

fn start_with(dir: TempDir, config: &str) -> (Gateway, SocketAddr) {
    write_hs_secret(&dir, SECRET);
    let gw = Gateway::start_in(dir, config);
    let addr = admin_addr(&gw);
    (gw, addr)
}

/// One admin request; returns (status, body).
fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, String) {
    admin_from(Ipv4Addr::LOCALHOST, addr, method, path, bearer, body)
}

/// A TCP connection to `addr` from `source` (every 127/8 address is this host).
fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from((source, 0)).into())
        .expect("bind source address");
    socket.connect(&addr.into()).expect("connect admin");
    socket.into()
}

/// One admin request from `source`; returns (status, body).
fn admin_from(
    source: Ipv4Addr,
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, String) {
    exchange(
        connect_from(source, addr),
        &admin_request(method, path, "", bearer, body),
    )
}

fn echo_ok(s: &mut TcpStream) {
    s.write_all(&client_frame(true, 1, b"hi")).expect("send");
    assert_eq!(read_frame(s), (true, 1, b"hi".to_vec()));
}

#[test]
fn health_ready_and_metrics() {
    let (gw, addr) = start(TempDir::new());
    assert_eq!(
        admin(addr, "GET", "/healthz", None, ""),
        (200, "ok\n".into())
    );
    assert_eq!(admin(addr, "GET", "/readyz", None, "").0, 200);
    let _s = open(
        &gw,
        &format!("/echo?access_token={}", token("m", "m1", "echo")),
        &[],
    );
    let (_r, _s2) = request(&gw, upgrade_request("/echo", &[]).as_bytes());
    let (status, text) = admin(addr, "GET", "/metrics", None, "");
    assert_eq!(status, 200);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').expect("sample");
        assert!(value.parse::<f64>().is_ok(), "{line}");
        assert!(name.starts_with("wsgate_"), "{line}");
    }
    assert!(
        text.contains(r#"wsgate_handshakes_total{outcome="accepted",status="101"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"wsgate_auth_failures_total{reason="missing_token"} 1"#),
        "{text}"
    );
    assert!(text.contains("wsgate_open_connections{worker="), "{text}");
}

#[test]
fn revoke_needs_an_admin_token() {
    let (_gw, addr) = start(TempDir::new());
    assert_eq!(
        admin(addr, "POST", "/revoke", None, r#"{"jti":"x"}"#).0,
        401
    );
    let user = token("u", "u1", "echo");
    assert_eq!(
        admin(addr, "POST", "/revoke", Some(&user), r#"{"jti":"x"}"#).0,
        403
    );
    let root = token("root", "r1", "wsgate:admin");
    assert_eq!(
        admin(addr, "POST", "/revoke", Some(&root), r#"{"nope":1}"#).0,
        400
    );
    assert_eq!(
        admin(addr, "POST", "/revoke", Some(&root), "not json").0,
        400
    );
}

#[test]
fn revocation_closes_live_connections_and_survives_a_restart() {
    let dir = TempDir::new();
    let path = dir.path().to_path_buf();
    let (mut gw, addr) = start(dir);
    let root = token("root", "r1", "wsgate:admin");
    let a1 = token("alice", "a1", "echo");
    let a2 = token("alice", "a2", "echo");
    let b1 = token("bob", "b1", "echo");
    // Four connections spread over both workers.
    let mut c_a1 = open(&gw, &format!("/echo?access_token={a1}"), &[]);
    let mut c_a2 = open(&gw, &format!("/echo?access_token={a2}"), &[]);
    let mut c_a2b = open(&gw, &format!("/echo?access_token={a2}"), &[]);
    let mut c_b1 = open(&gw, &format!("/echo?access_token={b1}"), &[]);

    let (status, body) = admin(addr, "POST", "/revoke", Some(&root), r#"{"jti":"a1"}"#);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (v["revoked"].as_bool(), v["closed"].as_u64()),
        (Some(true), Some(1))
    );
    assert_eq!(read_close(&mut c_a1), (Some(4403), "token revoked".into()));
    echo_ok(&mut c_a2);
    echo_ok(&mut c_b1);
    let (r, _) = request(
        &gw,
        upgrade_request(&format!("/echo?access_token={a1}"), &[]).as_bytes(),
    );
    assert_eq!(r.status, 401);

    // Every token of alice issued before now: both a2 connections, on whichever worker.
    let body = format!(r#"{{"sub":"alice","before":{}}}"#, now_unix());
    let (status, body) = admin(addr, "POST", "/revoke", Some(&root), &body);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["closed"].as_u64(), Some(2));
    assert_eq!(read_close(&mut c_a2).0, Some(4403));
    assert_eq!(read_close(&mut c_a2b).0, Some(4403));
    echo_ok(&mut c_b1);
    assert!(!gw.logs().contains(&a1) && !gw.logs().contains(&root));

    // Restart on the same log: both revocations still hold, bob is still welcome.
    gw.signal(15);
    assert_eq!(gw.wait_exit(), Some(0));
    let dir2 = TempDir::new();
    std::fs::copy(
        path.join("revocations.log"),
        dir2.path().join("revocations.log"),
    )
    .expect("copy log");
    let (gw2, _addr2) = start(dir2);
    gw2.wait_log("2 entries replayed");
    for t in [&a1, &a2] {
        let (r, _) = request(
            &gw2,
            upgrade_request(&format!("/echo?access_token={t}"), &[]).as_bytes(),
        );
        assert_eq!(r.status, 401, "revoked token accepted after restart");
    }
    let mut c = open(&gw2, &format!("/echo?access_token={b1}"), &[]);
    echo_ok(&mut c);
}

#[test]
fn explain_to_browsers_explains_a_revoked_token_with_4403() {
    // SPEC §4: a correctly signed but revoked token, from a page (Origin), is upgraded and
    // closed 4403 "token revoked" so that the page stops reconnecting; without Origin it
    // stays 401.
    let (_gw, addr) = start_with(
        TempDir::new(),
        &config_with(
            "[auth]\nexplain_to_browsers = true\n\n[origin]\nallow = [\"https://app.example.com\"]\n",
        ),
    );
    let gw = &_gw;
    let root = token("root", "r1", "wsgate:admin");
    let gone = token("erin", "e1", "echo");
    let (status, body) = admin(addr, "POST", "/revoke", Some(&root), r#"{"jti":"e1"}"#);
    assert_eq!(status, 200, "{body}");
    let origin = "Origin: https://app.example.com";
    let (r, mut s) = request(
        gw,
        upgrade_request(&format!("/echo?access_token={gone}"), &[origin]).as_bytes(),
    );
    assert_eq!(r.status, 101, "{r:?}");
    assert_eq!(read_close(&mut s), (Some(4403), "token revoked".into()));
    // No Origin: an HTTP status, as before.
    let (r, _) = request(
        gw,
        upgrade_request(&format!("/echo?access_token={gone}"), &[]).as_bytes(),
    );
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .is_some_and(|h| h.contains("token revoked")));
    // A token that is not revoked is served.
    let fine = token("erin", "e2", "echo");
    let mut s = open(gw, &format!("/echo?access_token={fine}"), &[origin]);
    echo_ok(&mut s);
}

/// #10 item 5: one address holding hundreds of idle connections to the admin listener (half
/// of them with part of a request head) keeps neither `/healthz`, `/readyz` nor an
/// authorised `POST /revoke` from answering at once, from another address or from the
/// flooding address itself: a newcomer takes the place of the oldest idle connection.
#[test]
fn admin_answers_during_an_idle_connection_flood() {
    let (gw, addr) = start(TempDir::new());
    let root = token("root", "r1", "wsgate:admin");
    let m1 = token("mallory", "m1", "echo");
    let m2 = token("mallory", "m2", "echo");
    let mut c1 = open(&gw, &format!("/echo?access_token={m1}"), &[]);
    let mut c2 = open(&gw, &format!("/echo?access_token={m2}"), &[]);

    let flooder = Ipv4Addr::LOCALHOST;
    let mut flood: Vec<TcpStream> = (0..300)
        .map(|i| {
            let mut s = connect_from(flooder, addr);
            if i % 2 == 0 {
                s.write_all(b"POST /revoke HTTP/1.1\r\nHost: adm")
                    .expect("send");
            }
            s
        })
        .collect();

    let other = Ipv4Addr::new(127, 0, 0, 2);
    for (source, conn, jti) in [(other, &mut c1, "m1"), (flooder, &mut c2, "m2")] {
        let started = Instant::now();
        assert_eq!(
            admin_from(source, addr, "GET", "/healthz", None, ""),
            (200, "ok\n".into()),
            "from {source}"
        );
        assert_eq!(
            admin_from(source, addr, "GET", "/readyz", None, ""),
            (200, "ready\n".into()),
            "from {source}"
        );
        let body = format!(r#"{{"jti":"{jti}"}}"#);
        let (status, body) = admin_from(source, addr, "POST", "/revoke", Some(&root), &body);
        assert_eq!(status, 200, "from {source}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["closed"].as_u64(), Some(1), "from {source}: {body}");
        let took = started.elapsed();
        assert!(
            took < HEADER_READ_TIMEOUT / 2,
            "from {source}: {took:?}, header timeout {HEADER_READ_TIMEOUT:?}"
        );
        assert_eq!(read_close(conn), (Some(4403), "token revoked".into()));
    }

    // The flood held at most its address's share: its oldest connections were closed, with
    // no answer, as newer ones came.
    for s in flood.iter_mut().take(300 - PER_PEER_CONNECTIONS) {
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    }
}
