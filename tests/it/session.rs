//! SPEC §6 on live connections: expiry close, `wsgate.expiring`, in-band refresh.

use std::io::Write;
use std::time::Duration;

use crate::support::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-session-tests";

fn token(sub: &str, ttl: u64, scope: &str) -> String {
    let now = now_unix();
    let payload = format!(
        r#"{{"sub":"{sub}","iat":{now},"exp":{},"scope":"{scope}"}}"#,
        now + ttl
    );
    hs256(SECRET, HS256_HEADER_KID_HS, &payload)
}

/// A gateway with `leeway = "0s"` and `[session]` lines `session`.
fn gateway(session: &str) -> Gateway {
    start("leeway = \"0s\"", "", session)
}

/// A gateway with `[limits]` lines `limits` and `[session]` lines `session`.
fn gateway_with(limits: &str, session: &str) -> Gateway {
    start("", limits, session)
}

/// One echo route `/echo` needing scope "echo", with lines inside `[auth]`, `[limits]`
/// and `[session]`.
fn start(auth: &str, limits: &str, session: &str) -> Gateway {
    Gateway::start_in(
        hs_secret_dir(SECRET),
        &format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
workers = 2

[auth]
{auth}

[[auth.key]]
kid = "hs"
alg = "HS256"
secret_file = "hs.secret"

[limits]
{limits}

[session]
{session}

[[route]]
path = "/echo"
backend = "echo"
scope = ["echo"]
"#
        ),
    )
}

fn text(s: &mut std::net::TcpStream, msg: &str) {
    s.write_all(&client_frame(true, 1, msg.as_bytes()))
        .expect("send");
}

fn next_text(s: &mut std::net::TcpStream) -> String {
    loop {
        let (_, op, p) = read_frame(s);
        match op {
            1 => return String::from_utf8(p).expect("utf8"),
            9 | 10 => continue,
            8 => panic!("unexpected close {:?}", p),
            _ => panic!("unexpected opcode {op}"),
        }
    }
}

#[test]
fn connection_closes_4401_when_the_token_expires() {
    let gw = gateway(r#"refresh = "off""#);
    let t = token("alice", 2, "echo");
    let mut s = open(&gw, &format!("/echo?access_token={t}"), &[]);
    text(&mut s, "still here");
    assert_eq!(next_text(&mut s), "still here");
    let started = std::time::Instant::now();
    let (code, reason) = read_close(&mut s);
    assert_eq!(code, Some(4401));
    assert_eq!(reason, "token expired");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!gw.logs().contains(&t), "token must never be logged");
}

#[test]
fn expiring_notice_then_refresh_moves_the_deadline() {
    let gw = gateway(
        r#"refresh = "message"
expiry_notice = "60s""#,
    );
    let short = token("bob", 3, "echo");
    let mut s = open(&gw, &format!("/echo?access_token={short}"), &[]);
    // Inside the notice window from the start: the notice comes at once.
    let notice: serde_json::Value = serde_json::from_str(&next_text(&mut s)).expect("json");
    assert_eq!(notice["type"], "wsgate.expiring");
    let old_exp = notice["exp"].as_u64().expect("exp");

    // A refresh for another subject is refused and the old deadline stands.
    text(
        &mut s,
        &format!(
            r#"{{"type":"wsgate.refresh","token":"{}"}}"#,
            token("mallory", 3600, "echo")
        ),
    );
    let failed: serde_json::Value = serde_json::from_str(&next_text(&mut s)).expect("json");
    assert_eq!(failed["type"], "wsgate.refresh_failed");
    assert_eq!(failed["reason"], "invalid claims");

    // Lacking the route's scope: refused too.
    text(
        &mut s,
        &format!(
            r#"{{"type":"wsgate.refresh","token":"{}"}}"#,
            token("bob", 3600, "other")
        ),
    );
    let failed: serde_json::Value = serde_json::from_str(&next_text(&mut s)).expect("json");
    assert_eq!(failed["reason"], "insufficient scope");

    let long = token("bob", 3600, "echo");
    text(
        &mut s,
        &format!(r#"{{"type":"wsgate.refresh","token":"{long}"}}"#),
    );
    let ok: serde_json::Value = serde_json::from_str(&next_text(&mut s)).expect("json");
    assert_eq!(ok["type"], "wsgate.refreshed");
    assert!(ok["exp"].as_u64().expect("exp") > old_exp + 3000);

    // Past the first token's exp the connection still echoes.
    while now_unix() <= old_exp + 1 {
        text(&mut s, "ping");
        assert_eq!(next_text(&mut s), "ping");
        std::thread::sleep(Duration::from_millis(250));
    }
    text(&mut s, "after");
    assert_eq!(next_text(&mut s), "after");
}

#[test]
fn refresh_messages_are_ordinary_when_refresh_is_off() {
    let gw = gateway(r#"refresh = "off""#);
    let t = token("carol", 3600, "echo");
    let mut s = open(&gw, &format!("/echo?access_token={t}"), &[]);
    let msg = r#"{"type":"wsgate.refresh","token":"x"}"#;
    text(&mut s, msg);
    assert_eq!(next_text(&mut s), msg);
}

#[test]
fn a_bad_refresh_is_answered_and_not_echoed() {
    let gw = gateway(
        r#"refresh = "message"
max_failed_refreshes = 10"#,
    );
    let t = token("dave", 3600, "echo");
    let mut s = open(&gw, &format!("/echo?access_token={t}"), &[]);
    text(&mut s, r#"{"type":"wsgate.refresh","token":"not.a.token"}"#);
    let failed: serde_json::Value = serde_json::from_str(&next_text(&mut s)).expect("json");
    assert_eq!(failed["type"], "wsgate.refresh_failed");
    text(&mut s, r#"{"type":"wsgate.refresh" garbage"#);
    let failed: serde_json::Value = serde_json::from_str(&next_text(&mut s)).expect("json");
    assert_eq!(failed["reason"], "malformed token");
    // SPEC §6: JSON whitespace between the leading tokens (json.dumps writes this).
    text(
        &mut s,
        r#"{"type": "wsgate.refresh", "token": "not.a.token"}"#,
    );
    let failed: serde_json::Value = serde_json::from_str(&next_text(&mut s)).expect("json");
    assert_eq!(failed["type"], "wsgate.refresh_failed");
    let good = token("dave", 7200, "echo");
    text(
        &mut s,
        &format!("{{ \"type\" : \"wsgate.refresh\",\n \"token\": \"{good}\" }}"),
    );
    let ok: serde_json::Value = serde_json::from_str(&next_text(&mut s)).expect("json");
    assert_eq!(ok["type"], "wsgate.refreshed");
    // SPEC §3 auth.max_lifetime (default 24h) holds on refresh too.
    let too_long = token("dave", 48 * 3600, "echo");
    text(
        &mut s,
        &format!(r#"{{"type":"wsgate.refresh","token":"{too_long}"}}"#),
    );
    let failed: serde_json::Value = serde_json::from_str(&next_text(&mut s)).expect("json");
    assert_eq!(failed["type"], "wsgate.refresh_failed");
    assert_eq!(failed["reason"], "invalid claims");
    text(&mut s, "ordinary");
    assert_eq!(next_text(&mut s), "ordinary");
}

fn token_with(kid: &str, secret: &[u8], sub: &str) -> String {
    let now = now_unix();
    let payload = format!(
        r#"{{"sub":"{sub}","iat":{now},"exp":{},"scope":"echo"}}"#,
        now + 3600
    );
    hs256(
        secret,
        &format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#),
        &payload,
    )
}

fn two_key_config(keys: &[&str]) -> String {
    let mut cfg = String::from(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\n\n[[route]]\npath = \"/echo\"\nbackend = \"echo\"\nscope = [\"echo\"]\n",
    );
    for k in keys {
        cfg.push_str(&format!(
            "\n[[auth.key]]\nkid = \"{k}\"\nalg = \"HS256\"\nsecret_file = \"{k}.secret\"\n"
        ));
    }
    cfg
}

#[test]
fn sighup_retires_removed_keys_and_keeps_the_rest() {
    use base64::Engine as _;
    let a = b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec();
    let b = b"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".to_vec();
    let dir = TempDir::new();
    let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    dir.write("a.secret", enc.encode(&a));
    dir.write("b.secret", enc.encode(&b));
    let gw = Gateway::start_in(dir, &two_key_config(&["a", "b"]));
    let mut sa = open(
        &gw,
        &format!("/echo?access_token={}", token_with("a", &a, "ann")),
        &[],
    );
    let mut sb = open(
        &gw,
        &format!("/echo?access_token={}", token_with("b", &b, "ben")),
        &[],
    );

    // A broken config is reported and changes nothing.
    gw.dir.write("wsgate.toml", "this is not toml = = =");
    gw.signal(1);
    gw.wait_log("reload failed");
    text(&mut sb, "b still open");
    assert_eq!(next_text(&mut sb), "b still open");

    // Key b removed: its session closes 4401 "key retired"; a's stays.
    gw.dir.write("wsgate.toml", two_key_config(&["a"]));
    gw.signal(1);
    let (code, reason) = read_close(&mut sb);
    assert_eq!((code, reason.as_str()), (Some(4401), "key retired"));
    text(&mut sa, "a still open");
    assert_eq!(next_text(&mut sa), "a still open");
    // New handshakes with key b are refused now, on either worker (b's 4401 shows only
    // that the worker holding it has taken the reload).
    gw.wait_workers_reloaded(2, 1);
    let (r, _) = request(
        &gw,
        upgrade_request(
            &format!("/echo?access_token={}", token_with("b", &b, "ben")),
            &[],
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 401);
}

#[test]
fn sighup_follows_routes_by_path_and_closes_removed_ones() {
    let cfg = |routes: &[&str]| {
        let mut c = String::from("[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\n");
        for r in routes {
            c.push_str(&format!(
                "\n[[route]]\npath = \"{r}\"\nbackend = \"echo\"\npublic = true\n"
            ));
        }
        c
    };
    let gw = Gateway::start(&cfg(&["/a", "/b", "/c"]));
    let mut on_b = open(&gw, "/b", &[]);
    let mut on_c = open(&gw, "/c", &[]);
    // /b removed, /c moves from index 2 to index 0.
    gw.dir.write("wsgate.toml", cfg(&["/c", "/a"]));
    gw.signal(1);
    let (code, reason) = read_close(&mut on_b);
    assert_eq!((code, reason.as_str()), (Some(1001), "going away"));
    text(&mut on_c, "still routed");
    assert_eq!(next_text(&mut on_c), "still routed");
    gw.wait_log("1 (route removed)");
}

fn refresh_frame(token: &str) -> Vec<u8> {
    client_frame(
        true,
        1,
        format!(r#"{{"type":"wsgate.refresh","token":"{token}"}}"#).as_bytes(),
    )
}

#[test]
fn failed_refreshes_spend_the_address_auth_budget() {
    // SPEC §6: a failed refresh counts against per_ip_auth_failures; past it a refresh is
    // refused ("too many failures") before any signature is checked, even a valid one.
    let gw = gateway_with(
        "per_ip_auth_failures = \"1/s\"",
        "max_failed_refreshes = 10",
    );
    let t = token("gina", 3600, "echo");
    let mut s = open(&gw, &format!("/echo?access_token={t}"), &[]);
    // Forged (right shape, wrong key), then a valid one, in one write: both are handled
    // in the same instant, well inside the bucket's one-second refill.
    let forged = {
        // One character in the middle of the signature changed: still canonical
        // base64url, never the original (the last character only carries padding bits).
        let f = token("gina", 7200, "echo");
        let at = f.rfind('.').expect("signature") + 10;
        let c = if &f[at..=at] == "A" { "B" } else { "A" };
        format!("{}{}{}", &f[..at], c, &f[at + 1..])
    };
    let valid = token("gina", 7200, "echo");
    let mut both = refresh_frame(&forged);
    both.extend_from_slice(&refresh_frame(&valid));
    s.write_all(&both).expect("send");
    let first: serde_json::Value = serde_json::from_str(&next_text(&mut s)).expect("json");
    assert_eq!(first["type"], "wsgate.refresh_failed", "{first}");
    assert_ne!(first["reason"], "too many failures", "{first}");
    let second: serde_json::Value = serde_json::from_str(&next_text(&mut s)).expect("json");
    assert_eq!(second["type"], "wsgate.refresh_failed", "{second}");
    assert_eq!(second["reason"], "too many failures", "{second}");
    // The connection itself stays usable.
    text(&mut s, "still here");
    assert_eq!(next_text(&mut s), "still here");
}

#[test]
fn one_failed_refresh_past_the_connection_budget_closes_1008() {
    let gw = gateway_with(
        "per_ip_auth_failures = \"1000/s\"",
        "max_failed_refreshes = 2",
    );
    let t = token("hal", 3600, "echo");
    let mut s = open(&gw, &format!("/echo?access_token={t}"), &[]);
    for _ in 0..2 {
        text(&mut s, r#"{"type":"wsgate.refresh","token":"not.a.token"}"#);
        let v: serde_json::Value = serde_json::from_str(&next_text(&mut s)).expect("json");
        assert_eq!(v["type"], "wsgate.refresh_failed", "{v}");
    }
    // The third failure closes; a message in the same write is not echoed.
    let mut last = refresh_frame("still.not.a.token");
    last.extend_from_slice(&client_frame(true, 1, b"after"));
    s.write_all(&last).expect("send");
    let v: serde_json::Value = serde_json::from_str(&next_text(&mut s)).expect("json");
    assert_eq!(v["type"], "wsgate.refresh_failed", "{v}");
    assert_eq!(
        read_close(&mut s),
        (Some(1008), "too many failed refreshes".to_string())
    );
}
