//! Closes: the client going away, and the closes the gateway decides (SPEC §6) sent to both
//! sides.

use super::*;

#[test]
fn client_vanishing_gives_the_upstream_1001_going_away() {
    let (up, rx) = echo_upstream();
    let gw = gateway(up, Opts::default());
    let s = open_echoing(&gw, &rx, "lee");
    drop(s); // FIN, no close frame
    assert_eq!(
        upstream_end(&rx),
        Ev::Close(Some(1001), "going away".into())
    );
}

#[test]
fn client_half_close_gives_the_upstream_1001_going_away() {
    let (up, rx) = echo_upstream();
    let gw = gateway(up, Opts::default());
    let s = open_echoing(&gw, &rx, "lou");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert_eq!(
        upstream_end(&rx),
        Ev::Close(Some(1001), "going away".into())
    );
}

/// A client that vanishes with unread data in its socket: its kernel answers with a RST,
/// the gateway's read fails, and the connection is dropped without telling the upstream.
#[test]
fn client_reset_gives_the_upstream_1001_going_away() {
    let (up, rx) = echo_upstream();
    let gw = gateway(up, Opts::default());
    let mut s = open_echoing(&gw, &rx, "max");
    // The echo of this one stays unread in the client's socket: closing it sends a RST.
    text(&mut s, "unread");
    assert_eq!(upstream_msg(&rx), (0x81, b"unread".to_vec()));
    let mut b = [0u8; 1];
    s.peek(&mut b).expect("the echo arrived");
    drop(s);
    assert_eq!(
        upstream_end(&rx),
        Ev::Close(Some(1001), "going away".into())
    );
}

// ------------------------------------------------------------------------------------
// Closes the gateway decides (SPEC §6), sent to both sides.

#[test]
fn token_expiry_closes_both_sides_4401() {
    let (up, rx) = echo_upstream();
    let gw = gateway(
        up,
        Opts {
            auth: r#"leeway = "0s""#,
            // With refresh on (the default) a 2 s token gets `wsgate.expiring` at once.
            sections: "[session]\nrefresh = \"off\"\n",
            ..Opts::default()
        },
    );
    let t = token("ned", "ned-1", 2, "chat");
    let mut s = open(&gw, &format!("/chat?access_token={t}"), &[]);
    text(&mut s, "hi");
    assert_eq!(next_text(&mut s), "hi");
    assert_eq!(upstream_msg(&rx), (0x81, b"hi".to_vec()));
    let started = Instant::now();
    assert_eq!(expect_close(&mut s), (Some(4401), "token expired".into()));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        upstream_end(&rx),
        Ev::Close(Some(4401), "token expired".into())
    );
}

fn admin_config() -> &'static str {
    "[admin]\nlisten = \"127.0.0.1:0\"\nrevocation_log = \"revocations.log\"\n"
}

/// POST /revoke with an admin token; returns (status, body).
fn revoke(addr: SocketAddr, body: &str) -> (u16, String) {
    let root = token("root", "root-1", 3600, "wsgate:admin");
    exchange(
        TcpStream::connect(addr).expect("connect admin"),
        &admin_request("POST", "/revoke", "", Some(&root), body),
    )
}

#[test]
fn revocation_closes_both_sides_4403() {
    let (up, rx) = echo_upstream();
    let gw = gateway(up, Opts::sections(admin_config()));
    let admin = admin_addr(&gw);
    let mut keep = open_mode(&gw, "echo", "oz");
    text(&mut keep, "k");
    assert_eq!(next_text(&mut keep), "k");
    assert_eq!(upstream_msg(&rx), (0x81, b"k".to_vec()));

    let t = token("pat", "pat-1", 3600, "chat");
    let mut s = open(&gw, &format!("/chat?access_token={t}"), &[]);
    text(&mut s, "hi");
    assert_eq!(next_text(&mut s), "hi");
    assert_eq!(upstream_msg(&rx), (0x81, b"hi".to_vec()));

    let (status, body) = revoke(admin, r#"{"jti":"pat-1"}"#);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["closed"].as_u64(), Some(1), "{body}");
    assert_eq!(expect_close(&mut s), (Some(4403), "token revoked".into()));
    assert_eq!(
        upstream_end(&rx),
        Ev::Close(Some(4403), "token revoked".into())
    );
    // The other proxied connection is untouched.
    text(&mut keep, "k2");
    assert_eq!(next_text(&mut keep), "k2");
}

/// A revocation that lands while the gateway is still waiting for the upstream's 101:
/// the connection is not yet `Open`, so `revoke()` skips it, and it opens afterwards
/// with the revoked token.
#[test]
fn revocation_during_the_upstream_handshake_is_enforced() {
    let (heads_tx, heads_rx) = unbounded();
    let (go_tx, go_rx) = unbounded::<()>();
    let up = raw_upstream(move |mut up| {
        let _ = heads_tx.send(());
        // Answer only when the test says so (after the revocation).
        let _ = go_rx.recv_timeout(WAIT);
        up.accept();
        let (tx, _rx) = unbounded();
        echo_record(&mut up, &tx);
    });
    let gw = gateway(up, Opts::sections(admin_config()));
    let admin = admin_addr(&gw);
    let t = token("quinn", "quinn-1", 3600, "chat");
    let mut s = gw.connect();
    s.write_all(upgrade_request(&format!("/chat?access_token={t}"), &[]).as_bytes())
        .expect("send");
    heads_rx
        .recv_timeout(WAIT)
        .expect("upstream got the request");
    let (status, body) = revoke(admin, r#"{"jti":"quinn-1"}"#);
    assert_eq!(status, 200, "{body}");
    go_tx.send(()).expect("go");
    let r = read_response(&mut s);
    if r.status == 101 {
        // Acceptable only if the connection is closed at once as revoked.
        text(&mut s, "alive?");
        let (_, _, op, p) = read_frame_from(&mut s);
        assert_eq!(
            op,
            8,
            "revoked token got a live proxied connection: the upstream answered {:?}",
            String::from_utf8_lossy(&p)
        );
        assert_eq!(u16::from_be_bytes([p[0], p[1]]), 4403);
    } else {
        assert_eq!(r.status, 401, "{r:?}");
    }
}

#[test]
fn in_band_refresh_is_answered_by_the_gateway_and_never_forwarded() {
    let (up, rx) = echo_upstream();
    let gw = gateway(up, Opts::sections("[session]\nrefresh = \"message\"\n"));
    let t = token("rae", "rae-1", 3600, "chat");
    let mut s = open(&gw, &format!("/chat?access_token={t}"), &[]);
    text(&mut s, "before");
    assert_eq!(next_text(&mut s), "before");

    let fresh = token("rae", "rae-2", 7200, "chat");
    text(
        &mut s,
        &format!(r#"{{"type":"wsgate.refresh","token":"{fresh}"}}"#),
    );
    let v: serde_json::Value = serde_json::from_str(&next_text(&mut s)).expect("json");
    assert_eq!(v["type"], "wsgate.refreshed", "{v}");
    assert!(v["exp"].as_u64().expect("exp") >= now_unix() + 7000);

    // A failed refresh is answered too, and not forwarded either.
    text(
        &mut s,
        &format!(
            r#"{{"type":"wsgate.refresh","token":"{}"}}"#,
            token("mallory", "m-1", 3600, "chat")
        ),
    );
    let v: serde_json::Value = serde_json::from_str(&next_text(&mut s)).expect("json");
    assert_eq!(v["type"], "wsgate.refresh_failed", "{v}");

    // SPEC §6: JSON whitespace as common writers produce it (Python's json.dumps) is a
    // refresh message too; valid or not, it never reaches the upstream.
    let spaced = token("rae", "rae-3", 7200, "chat");
    text(
        &mut s,
        &format!(r#"{{ "type": "wsgate.refresh", "token": "{spaced}" }}"#),
    );
    let v: serde_json::Value = serde_json::from_str(&next_text(&mut s)).expect("json");
    assert_eq!(v["type"], "wsgate.refreshed", "{v}");
    text(&mut s, "{\n  \"type\" :\t\"wsgate.refresh\", \"token\": 5}");
    let v: serde_json::Value = serde_json::from_str(&next_text(&mut s)).expect("json");
    assert_eq!(v["type"], "wsgate.refresh_failed", "{v}");

    text(&mut s, "after");
    assert_eq!(next_text(&mut s), "after");
    // Exactly the two ordinary messages reached the upstream, in order.
    assert_eq!(upstream_msg(&rx), (0x81, b"before".to_vec()));
    assert_eq!(upstream_msg(&rx), (0x81, b"after".to_vec()));
    assert!(
        rx.try_recv().is_err(),
        "something else reached the upstream"
    );
    assert!(!gw.logs().contains(&fresh));
    assert!(!gw.logs().contains(&spaced));
}

/// RFC 6455 §5.4: the gateway's own message (here the answer to an in-band refresh) never
/// lands between the fragments of a relayed upstream message; it follows the final one.
#[test]
fn refresh_answer_waits_for_the_relayed_fragmented_message() {
    let (tx, rx) = unbounded();
    let up = raw_upstream(move |mut up| {
        up.accept();
        let _ = up.send(0x01, b"first half, ");
        // The client's ordinary message sent after its refresh: by the time it arrives the
        // gateway has handled the refresh (it handles messages in order).
        let got = up.frame();
        let _ = tx.send(got.map(|(first, p)| Ev::Msg(first, p)).unwrap_or(Ev::Eof));
        let _ = up.send(0x80, b"second half");
        let _ = up.send(0x81, b"next");
        up.wait_closed();
    });
    let gw = gateway(up, Opts::sections("[session]\nrefresh = \"message\"\n"));
    let t = token("ivy", "ivy-1", 3600, "chat");
    let mut s = open(&gw, &format!("/chat?access_token={t}"), &[]);
    assert_eq!(next_data(&mut s), (0x01, b"first half, ".to_vec()));
    let fresh = token("ivy", "ivy-2", 7200, "chat");
    text(
        &mut s,
        &format!(r#"{{"type":"wsgate.refresh","token":"{fresh}"}}"#),
    );
    text(&mut s, "go on");
    assert_eq!(
        rx.recv_timeout(WAIT).expect("upstream read"),
        Ev::Msg(0x81, b"go on".to_vec()),
        "only the ordinary message reaches the upstream"
    );
    assert_eq!(
        next_data(&mut s),
        (0x80, b"second half".to_vec()),
        "the relayed message ends before the gateway's answer"
    );
    let v: serde_json::Value = serde_json::from_str(&next_text(&mut s)).expect("json");
    assert_eq!(v["type"], "wsgate.refreshed", "{v}");
    assert_eq!(next_text(&mut s), "next");
}

// ------------------------------------------------------------------------------------
// More closes the gateway decides.

/// A chat token whose `exp` is `exp` (unix seconds).
fn token_exp(sub: &str, exp: u64) -> String {
    hs256(
        SECRET,
        HS256_HEADER,
        &format!(
            r#"{{"sub":"{sub}","iat":{},"exp":{exp},"scope":"chat"}}"#,
            exp - 60
        ),
    )
}

#[test]
fn client_side_limits_close_both_sides_with_the_same_code() {
    let (up, rx) = echo_upstream();
    let gw = gateway(
        up,
        Opts::limits("max_message = \"1KiB\"\nmessages = \"5/s\""),
    );
    // max_message: 1009 to the client and the same close to the upstream.
    let mut s = open_mode(&gw, "echo", "bea");
    text(&mut s, "ok");
    assert_eq!(next_text(&mut s), "ok");
    assert_eq!(upstream_msg(&rx), (0x81, b"ok".to_vec()));
    s.write_all(&client_frame(true, 2, &[0u8; 1025]))
        .expect("send");
    let (code, reason) = expect_close(&mut s);
    assert_eq!(code, Some(1009));
    assert_eq!(upstream_end(&rx), Ev::Close(Some(1009), reason));

    // messages rate: 1008 "rate limit" to both.
    let mut s = open_mode(&gw, "echo", "bo");
    let mut burst = Vec::new();
    for _ in 0..20 {
        burst.extend(client_frame(true, 1, b"x"));
    }
    s.write_all(&burst).expect("send");
    let got = read_close(&mut s);
    assert_eq!(got, (Some(1008), "rate limit".into()));
    assert_eq!(
        upstream_end(&rx),
        Ev::Close(Some(1008), "rate limit".into())
    );
}

#[test]
fn idle_client_closes_both_sides_1001_idle_timeout() {
    let (up, rx) = echo_upstream();
    let gw = gateway(up, Opts::limits(r#"idle_timeout = "2s""#));
    let mut s = open_mode(&gw, "echo", "cy");
    // Never answer the gateway's ping.
    let got = read_close(&mut s);
    assert_eq!(got, (Some(1001), "idle timeout".into()));
    assert_eq!(
        upstream_end(&rx),
        Ev::Close(Some(1001), "idle timeout".into())
    );
}

#[test]
fn sigterm_closes_both_sides_1001_going_away() {
    let (up, rx) = echo_upstream();
    let mut gw = gateway(up, Opts::default());
    let mut s = open_echoing(&gw, &rx, "di");
    gw.signal(15);
    assert_eq!(expect_close(&mut s), (Some(1001), "going away".into()));
    assert_eq!(
        upstream_end(&rx),
        Ev::Close(Some(1001), "going away".into())
    );
    // Answer the close: the gateway is then free to exit.
    s.write_all(&client_frame(true, 8, &close_payload(1001, b"")))
        .expect("close");
    assert_eq!(gw.wait_exit(), Some(0));
}

#[test]
fn explained_rejection_never_reaches_the_upstream() {
    let (up, rx) = echo_upstream();
    let gw = gateway(
        up,
        Opts {
            auth: "explain_to_browsers = true",
            sections: "[origin]\nallow = [\"https://app.example.com\"]\n",
            ..Opts::default()
        },
    );
    let expired = token_exp("fay", now_unix() - 120);
    let mut s = open(
        &gw,
        &format!("/chat?access_token={expired}"),
        &["Origin: https://app.example.com"],
    );
    assert_eq!(expect_close(&mut s), (Some(4401), "token expired".into()));
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "the upstream saw a connection"
    );
}
