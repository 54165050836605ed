//! Issue #10 hardening, through real sockets: forged identity and forwarding headers
//! (SPEC §5), per-target upstream requests, `;` in query redaction and stripping (SPEC §4),
//! uniform error descriptions, Origin strictness, log quoting (SPEC §7), IPv6 budgets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use crossbeam_channel::{unbounded, Receiver};
use wsgate::auth::keys::Alg;
use wsgate::cli::token::{sign, SigningKey};

use crate::support::*;

const SECRET: &[u8] = b"harden-tests-secret-0123456789abcdef-01234567";

fn token_with(header: &str, sub: &str) -> String {
    let now = now_unix();
    hs256(
        SECRET,
        header,
        &format!(
            r#"{{"sub":{},"iat":{now},"exp":{},"scope":"chat"}}"#,
            serde_json::to_string(sub).expect("json"),
            now + 3600
        ),
    )
}

fn token(sub: &str) -> String {
    token_with(HS256_HEADER, sub)
}

/// An upstream that records each upgrade request head, answers 101, then holds the
/// connection until the gateway closes it.
fn recording_upstream() -> (SocketAddr, Receiver<String>) {
    let (tx, rx) = unbounded();
    let addr = raw_upstream(move |mut up| {
        let _ = tx.send(up.head.clone());
        up.accept();
        up.wait_closed();
    });
    (addr, rx)
}

fn metrics(gw: &Gateway) -> String {
    let mut s = TcpStream::connect(admin_addr(gw)).expect("connect admin");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {text}"))
}

/// A gateway with one upstream route `/chat` over `upstreams` (full URLs).
fn proxy_gateway(upstreams: &[String], extra: &str) -> Gateway {
    let list: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
    Gateway::start_in(
        hs_secret_dir(SECRET),
        &format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
workers = 1

[admin]
listen = "127.0.0.1:0"

[[auth.key]]
alg = "HS256"
secret_file = "hs.secret"

[[route]]
path = "/chat"
upstream = [{}]
scope = ["chat"]
{extra}
"#,
            list.join(", ")
        ),
    )
}

// === item 1: forged identity and forwarding headers (SPEC §5) ===

#[test]
fn underscore_identity_and_client_forwarding_headers_never_reach_the_upstream() {
    let (up, heads) = recording_upstream();
    let gw = proxy_gateway(&[format!("ws://{up}/chat")], "");
    let before = metric(&metrics(&gw), "wsgate_upstream_forged_headers_total");
    let t = token("alice");
    let mut s = open(
        &gw,
        &format!("/chat?access_token={t}"),
        &[
            "X_Auth_Subject: admin",
            "x_auth_scope: admin",
            "X-AUTH_CLAIMS: e30",
            "Forwarded: for=6.6.6.6;proto=https;host=evil.example",
            "X-Real-IP: 6.6.6.6",
            "X_Real_IP: 6.6.6.6",
            "X-Forwarded-Host: evil.example",
            "X-Forwarded-Proto: https",
            "X_Forwarded_For: 6.6.6.6",
            "X_Custom: kept",
        ],
    );
    let head = heads.recv_timeout(WAIT).expect("upstream saw the request");
    let h = |name: &str| head_values(&head, name);
    assert_eq!(h("x-auth-subject"), ["alice"], "{head}");
    assert_eq!(h("x-auth-scope"), ["chat"], "{head}");
    assert!(h("x-auth-claims").is_empty(), "{head}");
    assert!(h("forwarded").is_empty(), "{head}");
    assert!(
        h("x-real-ip").is_empty() && h("x_real_ip").is_empty(),
        "{head}"
    );
    assert_eq!(h("x-forwarded-for"), ["127.0.0.1"], "{head}");
    assert_eq!(h("x-forwarded-host"), ["localhost"], "{head}");
    assert_eq!(h("x-forwarded-proto"), ["http"], "{head}");
    assert_eq!(h("x_custom"), ["kept"], "{head}");
    for forged in ["admin", "6.6.6.6", "evil.example", "e30"] {
        assert!(
            !head.contains(forged),
            "{forged} reached the upstream:\n{head}"
        );
    }
    assert!(!head.contains(&t));
    drop(s.write_all(&client_frame(true, 8, &[0x03, 0xe8])));
    let after = metric(&metrics(&gw), "wsgate_upstream_forged_headers_total");
    assert_eq!(after - before, 9, "each forged header counted");
}

// === item 3: one request per target (SPEC §5) ===

#[test]
fn retry_sends_the_next_upstreams_own_host_and_path() {
    let dead = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let (up, heads) = recording_upstream();
    // The first target refuses; the second has another port and another path.
    let gw = proxy_gateway(
        &[format!("ws://{dead}/first"), format!("ws://{up}/second")],
        "",
    );
    let _s = open(
        &gw,
        &format!("/chat?room=7&access_token={}", token("bo")),
        &[],
    );
    let head = heads.recv_timeout(WAIT).expect("second upstream reached");
    assert!(
        head.starts_with("GET /second?room=7 HTTP/1.1\r\n"),
        "{head}"
    );
    assert_eq!(head_values(&head, "host"), [up.to_string()], "{head}");
}

// === item 7: `;` separates for redaction and stripping (SPEC §4) ===

#[test]
fn semicolon_token_segments_are_neither_logged_nor_forwarded() {
    let (up, heads) = recording_upstream();
    let gw = proxy_gateway(&[format!("ws://{up}/chat")], "");
    let t = token("cy");
    let other = token("other");
    // The token is read from the `&` parameter; a `;`-joined token-named segment, a
    // re-cased one and a JWS-shaped value under another name ride along.
    let path =
        format!("/chat?x=1;access_token={other}&access_token={t}&y=2;ACCESS_TOKEN={other};z=3");
    let _s = open(&gw, &path, &[]);
    let head = heads.recv_timeout(WAIT).expect("upstream saw the request");
    assert!(
        head.starts_with("GET /chat?x=1&y=2;z=3 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(!head.contains(&other) && !head.contains(&t), "{head}");
    let line = gw.wait_log("dialing upstream");
    assert!(line.contains("x=1;access_token=REDACTED"), "{line}");
    let logs = gw.logs();
    assert!(!logs.contains(&other) && !logs.contains(&t), "{logs}");
    // Another name holding a JWS-shaped value: redacted in logs.
    let gw = Gateway::start(&echo_config(1, "", ""));
    let (r, _s) = request(
        &gw,
        upgrade_request(&format!("/nowhere?id={t};k=1"), &[]).as_bytes(),
    );
    assert_eq!(r.status, 404);
    let line = gw.wait_log("status=404");
    assert!(!gw.logs().contains(&t), "{line}");
    // A token-named path parameter is redacted too.
    let (r, _s) = request(
        &gw,
        upgrade_request(&format!("/echo;access_token={other}"), &[]).as_bytes(),
    );
    assert_eq!(r.status, 404);
    let line = gw.wait_log("/echo;access_token=REDACTED");
    assert!(!gw.logs().contains(&other), "{line}");
}

// === item 12: uniform error descriptions on the wire (SPEC §4) ===

fn hs(alg: Alg, header: &str, sub: &str) -> String {
    let now = now_unix();
    sign(
        alg,
        &SigningKey::Hmac(SECRET.to_vec()),
        header,
        &format!(r#"{{"sub":"{sub}","iat":{now},"exp":{}}}"#, now + 3600),
    )
    .expect("sign")
}

fn description(gw: &Gateway, token: &str) -> String {
    let (r, _s) = request(
        gw,
        upgrade_request("/echo", &[&format!("Authorization: Bearer {token}")]).as_bytes(),
    );
    assert_eq!(r.status, 401, "{r:?}");
    let w = r.header("www-authenticate").expect("challenge").to_string();
    let prefix = "Bearer error=\"invalid_token\", error_description=\"";
    w.strip_prefix(prefix)
        .and_then(|d| d.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{w}"))
        .to_string()
}

#[test]
fn key_setup_failures_all_read_invalid_signature_and_logs_keep_the_reason() {
    let gw = Gateway::start_in(
        hs_secret_dir(SECRET),
        r#"
[server]
listen = ["127.0.0.1:0"]
workers = 1

[[auth.key]]
kid = "a"
alg = "HS256"
secret_file = "hs.secret"

[[auth.key]]
kid = "b"
alg = "HS256"
secret_file = "hs.secret"

[[route]]
path = "/echo"
backend = "echo"
"#,
    );
    let cases = [
        (
            hs(Alg::HS256, r#"{"alg":"HS256","kid":"zz"}"#, "u"),
            "unknown_kid",
        ),
        (
            hs(Alg::HS384, r#"{"alg":"HS384","kid":"a"}"#, "u"),
            "alg_key_mismatch",
        ),
        (hs(Alg::HS256, r#"{"alg":"HS256"}"#, "u"), "ambiguous_key"),
        (hs(Alg::HS512, r#"{"alg":"HS512"}"#, "u"), "no_key_for_alg"),
        (
            hs(Alg::HS256, r#"{"alg":"HS256","kid":"a"}"#, "u") + "x",
            "bad_signature",
        ),
    ];
    for (token, label) in &cases {
        assert_eq!(description(&gw, token), "invalid signature", "{label}");
        gw.wait_log(&format!("status=401 reason={label}"));
    }
    // An in-band refresh with an unknown kid gets the same uniform reason.
    let good = hs(Alg::HS256, r#"{"alg":"HS256","kid":"a"}"#, "u");
    let mut s = open(&gw, "/echo", &[&format!("Authorization: Bearer {good}")]);
    let refresh = format!(r#"{{"type":"wsgate.refresh","token":"{}"}}"#, cases[0].0);
    s.write_all(&client_frame(true, 1, refresh.as_bytes()))
        .expect("send");
    let (_, op, payload) = read_frame(&mut s);
    assert_eq!(op, 1);
    let v: serde_json::Value = serde_json::from_slice(&payload).expect("json");
    assert_eq!(v["type"], "wsgate.refresh_failed");
    assert_eq!(v["reason"], "invalid signature");
}

// === item 9: Origin strictness (SPEC §4 "Origins") ===

#[test]
fn origins_that_are_not_serialized_origins_are_403() {
    let gw = Gateway::start(&format!(
        "{}\n[origin]\nallow = [\"https://*.example.com\", \"http://127.0.0.1:3000\"]\n",
        echo_config(1, "", "")
    ));
    let status = |origin: &[u8]| {
        let mut req = b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: ".to_vec();
        req.extend_from_slice(origin);
        req.extend_from_slice(b"\r\n\r\n");
        request(&gw, &req).0.status
    };
    assert_eq!(status(b"https://a.example.com"), 101);
    assert_eq!(status(b"https://A.b.Example.com:443"), 101);
    assert_eq!(status(b"http://127.0.0.1:3000"), 101);
    for bad in [
        &b"https://*.example.com"[..],
        b"https://a..example.com",
        b"https://a.example.com.",
        b"https://%61.example.com",
        b"https://a.example.com:+443",
        b"https://a.example.com:0443",
        b"https://u@a.example.com",
        b"https://a.example.com/x",
        b"https://a.example.com\xe2\x80\xae",
        b"http://127.0.0.01:3000",
        b"null",
    ] {
        assert_eq!(status(bad), 403, "{}", String::from_utf8_lossy(bad));
    }
    // A control character is refused earlier, by the HTTP parser (RFC 9110 §5.5).
    assert_eq!(status(b"https://a\x01.example.com"), 400);
}

// === item 10: log injection (SPEC §7) ===

/// A `sub` that tries to start a forged line and to reorder what a terminal shows (control
/// characters proper are refused in `sub` by the token rules).
const NASTY_SUB: &str =
    "eve\u{2028}wsgate info: conn=9.9 sub=\"root\" upgraded\u{202e}\u{200f}\u{2066}\u{2029}\\\": ";

fn token_route_config() -> String {
    r#"
[server]
listen = ["127.0.0.1:0"]
workers = 1

[[auth.key]]
kid = "a"
alg = "HS256"
secret_file = "hs.secret"

[[route]]
path = "/echo"
backend = "echo"
"#
    .to_string()
}

#[test]
fn client_controlled_fields_are_quoted_escaped_and_cut() {
    let gw = Gateway::start_in(hs_secret_dir(SECRET), &token_route_config());
    let t = token(NASTY_SUB);
    let long_query = "q".repeat(600);
    let _s = open(&gw, &format!("/echo?access_token={t}&{long_query}"), &[]);
    let line = gw.wait_log("upgraded");
    let logs = gw.logs();
    for raw in ['\u{2028}', '\u{2029}', '\u{202e}', '\u{200f}', '\u{2066}'] {
        assert!(!logs.contains(raw), "{raw:?} logged raw:\n{logs}");
    }
    // One line per event: the forged "upgraded" never starts a line of its own.
    assert_eq!(
        logs.lines().filter(|l| l.contains("upgraded")).count(),
        1,
        "{logs}"
    );
    assert!(
        line.contains(
            r#"sub="eve\u2028wsgate info: conn=9.9 sub=\"root\" upgraded\u202e\u200f\u2066\u2029\\\": ""#
        ),
        "{line}"
    );
    // The target is quoted and cut at 256 bytes.
    let target = line
        .split("target=")
        .nth(1)
        .and_then(|rest| {
            serde_json::Deserializer::from_str(rest)
                .into_iter::<String>()
                .next()
        })
        .and_then(Result::ok)
        .expect("quoted target");
    assert_eq!(target.len(), 256, "{target}");
    assert!(
        target.starts_with("/echo?access_token=REDACTED&qqq"),
        "{target}"
    );
    assert!(!logs.contains(&t));
}

#[test]
fn json_log_format_writes_one_object_per_line() {
    let gw = Gateway::start_with_env(
        hs_secret_dir(SECRET),
        &token_route_config(),
        &[("WSGATE_LOG_FORMAT", "json")],
    );
    let t = token(NASTY_SUB);
    let _s = open(&gw, &format!("/echo?access_token={t}"), &[]);
    let (r, _s2) = request(&gw, upgrade_request("/nope?x=\u{1}", &[]).as_bytes());
    assert!(r.status == 400 || r.status == 404);
    gw.wait_log("upgraded");
    gw.wait_log("rejected");
    let logs = gw.logs();
    let mut upgraded = 0;
    for line in logs.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
        if v["msg"] == "upgraded" {
            upgraded += 1;
            assert_eq!(v["sub"], NASTY_SUB);
            assert_eq!(v["target"], "/echo?access_token=REDACTED");
        }
    }
    assert_eq!(upgraded, 1, "{logs}");
    assert!(!logs.contains(&t));
}

// === item 13: IPv6 per-prefix budgets (SPEC §3 `limits.ipv6_prefix`) ===

fn ipv6_loopback() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

#[test]
fn ipv6_clients_are_held_to_per_ip_budgets_over_real_sockets() {
    // This machine's only IPv6 addresses (::1 and at most one other) share no prefix, so
    // the /64 grouping itself is covered by gate::limits unit tests; here the IPv6 path
    // is driven end to end.
    if !ipv6_loopback() {
        eprintln!("no IPv6 loopback: skipped");
        return;
    }
    // The token route's config, on [::1] with a one-a-second failure budget.
    let config = token_route_config()
        .replace("127.0.0.1:0", "[::1]:0")
        .replace(
            "workers = 1\n",
            "workers = 1\n\n[limits]\nper_ip_auth_failures = \"1/s\"\nipv6_prefix = 64\n",
        );
    let gw = Gateway::start_in(hs_secret_dir(SECRET), &config);
    assert!(gw.addr.is_ipv6());
    let bad = hs(Alg::HS256, r#"{"alg":"HS256","kid":"a"}"#, "u") + "x";
    let statuses: Vec<u16> = (0..3)
        .map(|_| {
            request(
                &gw,
                upgrade_request("/echo", &[&format!("Authorization: Bearer {bad}")]).as_bytes(),
            )
            .0
            .status
        })
        .collect();
    assert_eq!(statuses[0], 401, "{statuses:?}");
    assert!(statuses[1..].contains(&429), "{statuses:?}");
}

#[test]
fn ipv6_prefix_must_be_1_to_128() {
    for (value, ok) in [
        ("0", false),
        ("129", false),
        ("1", true),
        ("128", true),
        ("56", true),
    ] {
        let dir = TempDir::new();
        let cfg = dir.write(
            "wsgate.toml",
            echo_config(1, "", &format!("ipv6_prefix = {value}")),
        );
        let (code, _out, err) = run(&["check", "-c", cfg.to_str().expect("utf8 path")]);
        assert_eq!(code == 0, ok, "ipv6_prefix = {value}: {err}");
        if !ok {
            assert!(err.contains("limits.ipv6_prefix"), "{err}");
        }
    }
}

#[test]
fn ipv6_prefix_change_on_reload_waits_for_a_restart() {
    let gw = Gateway::start(&echo_config(1, "", "ipv6_prefix = 64"));
    gw.dir
        .write("wsgate.toml", echo_config(1, "", "ipv6_prefix = 48"));
    gw.signal(1); // SIGHUP
    gw.wait_log("limits.ipv6_prefix changes take effect at the next restart");
    gw.wait_log("reloaded");
}
