//! Payloads and headers relayed through the proxy.

use super::*;

#[test]
fn large_messages_relay_byte_for_byte_both_ways() {
    let (up, rx) = echo_upstream();
    let gw = gateway(
        up,
        Opts::limits("max_frame = \"4MiB\"\nmax_message = \"4MiB\""),
    );
    let mut s = open_mode(&gw, "echo", "xia");
    let big: Vec<u8> = (0..MIB).map(|i| (i * 31 % 251) as u8).collect();
    s.write_all(&client_frame(true, 2, &big)).expect("send");
    let (first, p) = upstream_msg(&rx);
    assert_eq!(first, 0x82, "one final binary frame upstream");
    assert!(p == big, "upstream got {} bytes, not the same", p.len());
    let (h, fin, op, p) = read_frame_from(&mut s);
    assert!(fin && op == 2, "{h:?}");
    assert!(p == big, "client got {} bytes, not the same", p.len());

    // Exactly max_message (4 MiB) is accepted and relayed whole.
    let max: Vec<u8> = (0..4 * MIB).map(|i| (i * 7 % 253) as u8).collect();
    s.write_all(&client_frame(true, 2, &max)).expect("send");
    let (first, p) = upstream_msg(&rx);
    assert_eq!(first, 0x82);
    assert!(p == max, "upstream got {} bytes", p.len());
    let (_, fin, op, p) = read_frame_from(&mut s);
    assert!(fin && op == 2 && p == max, "client got {} bytes", p.len());

    // A large text with multi-byte UTF-8 across the buffer boundaries.
    let text_msg = "é€😀".repeat(MIB / 9);
    s.write_all(&client_frame(true, 1, text_msg.as_bytes()))
        .expect("send");
    let (first, p) = upstream_msg(&rx);
    assert_eq!(first, 0x81);
    assert!(p == text_msg.as_bytes());
    assert_eq!(next_text(&mut s), text_msg);
}

#[test]
fn fragmented_messages_are_relayed_reassembled_upstream() {
    let (tx, rx) = unbounded();
    let up = raw_upstream(move |mut up| {
        up.accept();
        if up.mode() == "fragout" {
            // Upstream → client: fragments with a ping between them.
            let mut b = raw_frame(0x01, b"up-", None);
            b.extend(raw_frame(0x89, b"mid", None));
            b.extend(raw_frame(0x00, b"frag", None));
            b.extend(raw_frame(0x80, b"mented", None));
            let _ = up.s.write_all(&b);
        }
        echo_record(&mut up, &tx);
    });
    let gw = gateway(
        up,
        Opts::limits("max_frame = \"4MiB\"\nmax_message = \"4MiB\""),
    );
    let mut s = open_mode(&gw, "echo", "yan");
    let mut b = client_frame(false, 1, b"hel");
    b.extend(client_frame(true, 9, b"p"));
    b.extend(client_frame(false, 0, "lo wörl".as_bytes()));
    b.extend(client_frame(true, 0, b"d"));
    s.write_all(&b).expect("send");
    assert_eq!(
        upstream_msg(&rx),
        (0x81, "hello wörld".as_bytes().to_vec()),
        "one text frame upstream"
    );
    let (_, _, op, p) = read_frame_from(&mut s);
    assert_eq!((op, p.as_slice()), (10, &b"p"[..]), "the gateway's pong");
    assert_eq!(next_text(&mut s), "hello wörld");

    // A 1.5 MiB binary message in three 512 KiB fragments.
    let part: Vec<u8> = (0..512 * KIB).map(|i| (i % 239) as u8).collect();
    let mut b = client_frame(false, 2, &part);
    b.extend(client_frame(false, 0, &part));
    b.extend(client_frame(true, 0, &part));
    s.write_all(&b).expect("send");
    let (first, p) = upstream_msg(&rx);
    assert_eq!(first, 0x82);
    assert_eq!(p.len(), 3 * part.len());
    assert!(p.chunks(part.len()).all(|c| c == part.as_slice()));
    let (_, fin, op, p) = read_frame_from(&mut s);
    assert!(fin && op == 2 && p.len() == 3 * part.len());

    // Upstream fragments reach the client as fragments, the ping answered upstream.
    let mut s = open_mode(&gw, "fragout", "yan");
    let mut got = Vec::new();
    loop {
        let (_, fin, op, p) = read_frame_from(&mut s);
        assert_ne!(op, 9, "the upstream's ping must not be relayed");
        got.extend(p);
        if fin {
            break;
        }
    }
    assert_eq!(got, b"up-fragmented");
}

#[test]
fn frames_sent_before_the_upstream_101_are_relayed_after_it() {
    let (tx, rx) = unbounded();
    let up = raw_upstream(move |mut up| {
        // Answer late, so the client's frames arrive while the gateway is dialing.
        std::thread::sleep(Duration::from_millis(300));
        up.accept();
        echo_record(&mut up, &tx);
    });
    let gw = gateway(up, Opts::default());
    // In the same write as the request head.
    let mut s = gw.connect();
    let mut bytes =
        upgrade_request(&format!("/chat?access_token={}", chat("zed")), &[]).into_bytes();
    bytes.extend(client_frame(true, 1, b"pipelined"));
    s.write_all(&bytes).expect("send");
    // And in a separate segment while the upstream has not answered yet.
    std::thread::sleep(Duration::from_millis(100));
    text(&mut s, "while dialing");
    let r = read_response(&mut s);
    assert_eq!(r.status, 101, "{r:?}");
    assert_eq!(next_text(&mut s), "pipelined");
    assert_eq!(next_text(&mut s), "while dialing");
    assert_eq!(upstream_msg(&rx), (0x81, b"pipelined".to_vec()));
    assert_eq!(upstream_msg(&rx), (0x81, b"while dialing".to_vec()));
}

#[test]
fn forwarded_for_appended_token_cookie_stripped_authorization_dropped() {
    let (tx, rx) = unbounded();
    let up = raw_upstream(move |mut up| {
        let _ = tx.send(up.head.clone());
        up.accept();
        let (etx, _erx) = unbounded();
        echo_record(&mut up, &etx);
    });
    let gw = gateway(
        up,
        Opts {
            auth: r#"sources = ["cookie:sess"]"#,
            sections: "[origin]\nallow = [\"https://app.example.com\"]\nallow_missing = false\n",
            ..Opts::default()
        },
    );
    let t = chat("abe");
    let cookie = format!("Cookie: theme=dark; sess={t}; lang=en");
    let headers = [
        "Origin: https://app.example.com",
        cookie.as_str(),
        "X-Forwarded-For: 203.0.113.9",
        "Authorization: Bearer not-a-source-but-never-forwarded",
        "User-Agent: edge-test/1.0",
        "X-Custom: kept",
    ];
    let mut s = open(&gw, "/chat?room=1", &headers);
    text(&mut s, "hi");
    assert_eq!(next_text(&mut s), "hi");
    let head = rx.recv_timeout(WAIT).expect("head");
    let h = |name: &str| head_values(&head, name);
    assert!(head.starts_with("GET /chat?room=1 HTTP/1.1\r\n"), "{head}");
    assert_eq!(h("x-forwarded-for"), ["203.0.113.9, 127.0.0.1"], "{head}");
    assert_eq!(h("cookie"), ["theme=dark; lang=en"], "{head}");
    assert!(h("authorization").is_empty(), "{head}");
    assert_eq!(h("origin"), ["https://app.example.com"]);
    assert_eq!(h("user-agent"), ["edge-test/1.0"]);
    assert_eq!(h("x-custom"), ["kept"]);
    assert_eq!(h("x-auth-subject"), ["abe"]);
    assert_eq!(h("host"), [up_addr_of(&gw)]);
    assert!(!head.contains(&t), "token leaked upstream:\n{head}");
    assert!(!gw.logs().contains(&t), "token logged");

    // A Cookie header holding only the token is not forwarded at all; without a client
    // X-Forwarded-For the gateway starts one.
    let cookie = format!("Cookie: sess={t}");
    let mut s = open(
        &gw,
        "/chat",
        &["Origin: https://app.example.com", cookie.as_str()],
    );
    text(&mut s, "hi");
    assert_eq!(next_text(&mut s), "hi");
    let head = rx.recv_timeout(WAIT).expect("head");
    assert!(head_values(&head, "cookie").is_empty(), "{head}");
    assert_eq!(head_values(&head, "x-forwarded-for"), ["127.0.0.1"]);

    // No Origin with allow_missing = false: 403, the upstream never sees it.
    let (r, _s) = request(
        &gw,
        upgrade_request("/chat", &[&format!("Cookie: sess={t}")]).as_bytes(),
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
}

/// The `host:port` the gateway's config names for the upstream (read back from its
/// config file).
fn up_addr_of(gw: &Gateway) -> String {
    let cfg = std::fs::read_to_string(gw.dir.path().join("wsgate.toml")).expect("config");
    cfg.split("ws://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect("upstream in config")
        .to_string()
}

/// The relay reads a socket only when epoll reports new bytes (edge-triggered), and skips
/// the read after a short one; a frame cut across two writes must still be relayed whole
/// when its second piece arrives. Each second piece is written only after the first piece's
/// effect was seen (an echo came back), so the gateway has read the first piece alone.
#[test]
fn frames_cut_across_two_writes_are_relayed_when_the_rest_arrives_on_both_legs() {
    let tail: Vec<u8> = (0..300).map(|i| b'a' + (i % 26) as u8).collect();
    let up = raw_upstream({
        let tail = tail.clone();
        move |mut up| {
            up.accept();
            // "go": one whole frame and the first bytes of the next, in one write.
            assert_eq!(up.frame().expect("go"), (0x81, b"go".to_vec()));
            let mut first = raw_frame(0x81, b"whole", None);
            let cut = raw_frame(0x81, &tail, None);
            first.extend_from_slice(&cut[..7]);
            up.s.write_all(&first).expect("first piece");
            // The rest of that frame only once the client saw "whole" and said so.
            assert_eq!(up.frame().expect("more"), (0x81, b"more".to_vec()));
            up.s.write_all(&cut[7..]).expect("second piece");
            // Then an echo of whatever comes (the client leg's half of the test).
            while let Ok((first, p)) = up.frame() {
                if first & 0x0f == 8 || up.send(first, &p).is_err() {
                    return;
                }
            }
        }
    });
    let gw = gateway(up, Opts::default());
    let mut s = open_mode(&gw, "cut", "uma");

    // Upstream -> client.
    text(&mut s, "go");
    assert_eq!(next_text(&mut s), "whole");
    text(&mut s, "more");
    assert_eq!(next_text(&mut s).as_bytes(), &tail[..]);

    // Client -> upstream: a whole frame and 3 bytes of the next (inside its 16-bit length).
    let body: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
    let cut = client_frame(true, 2, &body);
    let mut first = client_frame(true, 1, b"ping-pong");
    first.extend_from_slice(&cut[..3]);
    s.write_all(&first).expect("first piece");
    assert_eq!(next_text(&mut s), "ping-pong");
    s.write_all(&cut[3..]).expect("second piece");
    assert_eq!(next_data(&mut s), (0x82, body));
}
