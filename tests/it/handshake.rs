//! SPEC §4 rows that need no token, through real sockets.

use std::io::{Read, Write};

use crate::support::*;

/// A public echo route and a protected one, with generous limits.
pub fn public_config(extra: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
workers = 2

[[route]]
path = "/echo"
backend = "echo"
public = true
{extra}
"#
    )
}

#[test]
fn upgrade_and_echo_with_tungstenite() {
    let gw = Gateway::start(&public_config(""));
    let (mut ws, resp) = tungstenite::connect(gw.url("/echo")).expect("connect");
    assert_eq!(resp.status(), 101);
    ws.send(tungstenite::Message::Text("hello".into()))
        .expect("send");
    assert_eq!(
        ws.read().expect("read"),
        tungstenite::Message::Text("hello".into())
    );
    ws.send(tungstenite::Message::Binary(vec![0u8, 1, 2, 255].into()))
        .expect("send");
    assert_eq!(
        ws.read().expect("read"),
        tungstenite::Message::Binary(vec![0u8, 1, 2, 255].into())
    );
    close_tungstenite(&mut ws);
}

#[test]
fn accept_key_is_rfc6455_section_1_3() {
    let gw = Gateway::start(&public_config(""));
    let (r, _s) = request(&gw, upgrade_request("/echo", &[]).as_bytes());
    assert_eq!(r.status, 101);
    // RFC 6455 §1.3: key "dGhlIHNhbXBsZSBub25jZQ==" -> this accept value.
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(r.header("sec-websocket-protocol"), None);
}

fn assert_rejected(gw: &Gateway, req: &[u8], status: u16) -> Response {
    let (r, mut s) = request(gw, req);
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    assert!(reads_to_eof(&mut s), "socket closed after the response");
    r
}

#[test]
fn malformed_requests_get_400() {
    let gw = Gateway::start(&public_config(""));
    // Not HTTP/1.1 at all: a TLS ClientHello on a plain port, the HTTP/2 preface.
    assert_rejected(
        &gw,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage-garbage",
        400,
    );
    assert_rejected(&gw, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400);
    assert_rejected(&gw, b"GET /echo HTTP/1.0\r\nHost: x\r\n\r\n", 400);
    // Missing Upgrade / Connection / key; bad key.
    let no_upgrade = upgrade_request("/echo", &[]).replace("Upgrade: websocket\r\n", "");
    assert_rejected(&gw, no_upgrade.as_bytes(), 400);
    let no_conn = upgrade_request("/echo", &[]).replace("Connection: Upgrade\r\n", "");
    assert_rejected(&gw, no_conn.as_bytes(), 400);
    let bad_key = upgrade_request("/echo", &[]).replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=");
    assert_rejected(&gw, bad_key.as_bytes(), 400);
}

#[test]
fn body_framing_on_the_upgrade_gets_400() {
    // RFC 9112 §6.3, SPEC §4: a GET upgrade has no body; bytes after the head are frames,
    // so a framing header would make them ambiguous. Refused, and the "body" never
    // reaches the echo backend as frames.
    let gw = Gateway::start(&public_config(""));
    let frame = client_frame(true, 1, b"smuggled");
    for extra in [
        "Content-Length: 14",
        "Transfer-Encoding: chunked",
        "Content-Length: 14\r\nTransfer-Encoding: chunked",
        "Content-Length: 0",
    ] {
        let mut req = upgrade_request("/echo", &[extra]).into_bytes();
        req.extend_from_slice(&frame);
        let r = assert_rejected(&gw, &req, 400);
        assert_eq!(r.header("connection"), Some("close"), "{extra}");
    }
}

#[test]
fn connection_ids_in_logs_are_never_reused() {
    // SPEC §7: a connection id is unique for the process's life, although a worker
    // reuses the slot of a closed connection for the next one.
    let gw = Gateway::start(&public_config("").replace("workers = 2", "workers = 1"));
    for _ in 0..5 {
        let mut s = open(&gw, "/echo", &[]);
        s.write_all(&client_frame(true, 8, &[0x03, 0xe8]))
            .expect("close");
        assert_eq!(read_close(&mut s).0, Some(1000));
        assert!(reads_to_eof(&mut s));
    }
    // The fifth accept is logged after the other four (ids count from 1 per process).
    gw.wait_log("worker=0 accepted");
    let fifth = gw.wait_log("conn=5 ");
    assert!(fifth.contains("accepted"), "{fifth}");
    let logs = gw.logs();
    let accepted: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(" accepted"))
        .filter_map(|l| l.split("conn=").nth(1)?.split(' ').next())
        .collect();
    assert_eq!(accepted.len(), 5, "{logs}");
    let mut unique = accepted.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 5, "ids reused: {accepted:?}");
}

#[test]
fn method_version_and_route() {
    let gw = Gateway::start(&public_config(""));
    let post = upgrade_request("/echo", &[]).replacen("GET", "POST", 1);
    let r = assert_rejected(&gw, post.as_bytes(), 405);
    assert_eq!(r.header("allow"), Some("GET"));
    let v8 = upgrade_request("/echo", &[]).replace("Version: 13", "Version: 8");
    let r = assert_rejected(&gw, v8.as_bytes(), 426);
    assert_eq!(r.header("sec-websocket-version"), Some("13"));
    assert_rejected(&gw, upgrade_request("/nope", &[]).as_bytes(), 404);
    // The query string is not part of the route match.
    let (r, _s) = request(&gw, upgrade_request("/echo?x=1", &[]).as_bytes());
    assert_eq!(r.status, 101);
}

#[test]
fn oversized_head_gets_431() {
    let gw = Gateway::start(&public_config("[limits]\nmax_request_bytes = \"1KiB\"\n"));
    let big = format!("X-Pad: {}", "a".repeat(2000));
    assert_rejected(&gw, upgrade_request("/echo", &[&big]).as_bytes(), 431);
    let many: Vec<String> = (0..70).map(|i| format!("X-H{i}: v")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let gw2 = Gateway::start(&public_config(""));
    assert_rejected(&gw2, upgrade_request("/echo", &many).as_bytes(), 431);
}

#[test]
fn slowloris_gets_408_or_silent_close() {
    let gw = Gateway::start(&public_config("[limits]\nhandshake_timeout = \"300ms\"\n"));
    // Part of a request, then nothing: 408 after handshake_timeout.
    let mut s = gw.connect();
    s.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let r = read_response(&mut s);
    assert_eq!(r.status, 408);
    assert!(reads_to_eof(&mut s));
    // Nothing at all: closed without a response.
    let mut s = gw.connect();
    let mut buf = [0u8; 64];
    assert_eq!(s.read(&mut buf).expect("eof"), 0);
}

#[test]
fn max_connections_closes_at_accept_without_a_response() {
    // SPEC §4: at accept, before a byte is read, a connection past max_connections is
    // closed at once, with no response. An idle TCP connect counts from its accept.
    let gw = Gateway::start(
        &public_config("").replace("workers = 2", "workers = 2\nmax_connections = 2"),
    );
    let mut a = open(&gw, "/echo", &[]);
    let idle = gw.connect();
    // `connect` returns once the kernel has queued the connection, not once a worker has
    // accepted (and counted) it; with two workers the next connection may land on the
    // other one and be accepted first. The accept is logged right after it is counted.
    let me = idle.local_addr().expect("local addr");
    gw.wait_log(&format!("peer={me} worker="));
    assert!(answer_or_closed(gw.connect(), upgrade_request("/echo", &[]).as_bytes()).is_none());
    // The connections within the cap are served.
    a.write_all(&client_frame(true, 1, b"served"))
        .expect("send");
    assert_eq!(read_frame(&mut a), (true, 1, b"served".to_vec()));
}

#[test]
fn bytes_after_the_head_are_frames() {
    let gw = Gateway::start(&public_config(""));
    let mut req = upgrade_request("/echo", &[]).into_bytes();
    req.extend(client_frame(true, 1, b"early"));
    let (r, mut s) = request(&gw, &req);
    assert_eq!(r.status, 101);
    assert_eq!(read_frame(&mut s), (true, 1, b"early".to_vec()));
}

#[test]
fn connections_land_on_every_worker() {
    // Each worker accepts on its own SO_REUSEPORT socket: the kernel spreads connections
    // by their addresses and ports, so every worker gets some of a few hundred (a worker
    // missing all of 300 has odds of (2/3)^300).
    let gw = Gateway::start(&public_config("").replace("workers = 2", "workers = 3"));
    let mut conns = Vec::new();
    for _ in 0..300 {
        let mut s = open(&gw, "/echo", &[]);
        s.write_all(&client_frame(true, 1, b"here")).expect("send");
        assert_eq!(read_frame(&mut s), (true, 1, b"here".to_vec()));
        conns.push(s);
        let logs = gw.logs();
        if (0..3).all(|w| logs.contains(&format!("worker={w} accepted"))) {
            return;
        }
    }
    panic!("not every worker accepted one of 300 connections");
}

#[test]
fn max_connections_holds_across_workers() {
    // SPEC §4: the cap is the process's, whichever worker accepts: with four workers
    // accepting on their own sockets, exactly `max_connections` are served at once.
    let gw = Gateway::start(
        &public_config("").replace("workers = 2", "workers = 4\nmax_connections = 8"),
    );
    let mut held: Vec<_> = (0..8).map(|_| open(&gw, "/echo", &[])).collect();
    for _ in 0..8 {
        assert!(answer_or_closed(gw.connect(), upgrade_request("/echo", &[]).as_bytes()).is_none());
    }
    for s in &mut held {
        s.write_all(&client_frame(true, 1, b"held")).expect("send");
        assert_eq!(read_frame(s), (true, 1, b"held".to_vec()));
    }
}

#[test]
fn refresh_messages_on_a_public_route_are_never_echoed() {
    // SPEC §6: a message that passes the refresh test is never echoed or forwarded,
    // valid or not; a public route has no token to refresh.
    let gw = Gateway::start(&public_config(""));
    let mut s = open(&gw, "/echo", &[]);
    s.write_all(&client_frame(
        true,
        1,
        br#"{ "type": "wsgate.refresh", "token": "secret.looking.token" }"#,
    ))
    .expect("send");
    let (_, op, p) = read_frame(&mut s);
    assert_eq!(op, 1);
    let v: serde_json::Value = serde_json::from_slice(&p).expect("json");
    assert_eq!(v["type"], "wsgate.refresh_failed", "{v}");
    s.write_all(&client_frame(true, 1, b"ordinary"))
        .expect("send");
    assert_eq!(read_frame(&mut s), (true, 1, b"ordinary".to_vec()));
}
