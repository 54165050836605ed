//! An upstream that breaks the protocol after its 101, or never gives a proper 101.

use super::*;

#[test]
fn upstream_vanishing_without_close_gives_the_client_1014() {
    let up = raw_upstream(|mut up| {
        up.accept();
        match up.mode().as_str() {
            // Echo one message, then close the socket: a plain FIN, no close frame.
            "fin" => {
                if let Ok((first, p)) = up.frame() {
                    let _ = up.send(first, &p);
                }
            }
            // Leave the client's message unread and close: the kernel sends a RST.
            "rst" => {
                let _ = up.send(0x81, b"ready");
                let mut b = [0u8; 1];
                let _ = up.s.peek(&mut b);
            }
            _ => {}
        }
    });
    let gw = gateway(up, Opts::default());

    let mut s = open_mode(&gw, "fin", "amy");
    text(&mut s, "hi");
    assert_eq!(next_text(&mut s), "hi");
    assert_eq!(expect_close(&mut s), (Some(1014), "bad gateway".into()));

    let mut s = open_mode(&gw, "rst", "amy");
    assert_eq!(next_text(&mut s), "ready");
    text(&mut s, "unread");
    assert_eq!(expect_close(&mut s), (Some(1014), "bad gateway".into()));
}

/// Upstream modes that break RFC 6455 after the 101 (the upstream keeps its socket
/// open, so the 1014 is for the garbage, not for an EOF).
const GARBAGE: &[(&str, &str)] = &[
    ("masked", "a masked server frame (RFC 6455 §5.1)"),
    ("rsv1", "RSV1 set without an extension (§5.2)"),
    ("rsv3", "RSV3 set (§5.2)"),
    ("bigping", "a 200-byte ping (§5.5)"),
    ("fragping", "a fragmented ping (§5.5)"),
    ("opcode3", "reserved opcode 0x3 (§5.2)"),
    ("opcodeb", "reserved control opcode 0xB (§5.2)"),
    ("close1", "a close payload of one byte (§5.5.1)"),
    ("close1005", "close code 1005 on the wire (§7.4.1)"),
    ("closeutf8", "a close reason that is not UTF-8 (§5.5.1)"),
    ("with101", "a masked frame in the same write as the 101"),
];

fn garbage_frame(mode: &str) -> Vec<u8> {
    match mode {
        "masked" | "with101" => raw_frame(0x82, b"abc", Some([1, 2, 3, 4])),
        "rsv1" => raw_frame(0x82 | 0x40, b"abc", None),
        "rsv3" => raw_frame(0x82 | 0x10, b"abc", None),
        "bigping" => raw_frame(0x89, &[7u8; 200], None),
        "fragping" => raw_frame(0x09, b"p", None),
        "opcode3" => raw_frame(0x83, b"x", None),
        "opcodeb" => raw_frame(0x8b, b"x", None),
        "close1" => raw_frame(0x88, &[0x03], None),
        "close1005" => raw_frame(0x88, &close_payload(1005, b""), None),
        "closeutf8" => raw_frame(0x88, &close_payload(1000, &[0xff, 0xfe]), None),
        other => panic!("unknown mode {other}"),
    }
}

#[test]
fn upstream_garbage_after_101_gives_1014_and_spares_other_connections() {
    let up = raw_upstream(|mut up| {
        let mode = up.mode();
        if mode == "echo" {
            up.accept();
            let (tx, _rx) = unbounded();
            echo_record(&mut up, &tx);
            return;
        }
        if mode == "with101" {
            let key = up.headers("sec-websocket-key").pop().expect("key");
            let mut bytes = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                std::str::from_utf8(&accept_key(key.as_bytes())).expect("ascii")
            )
            .into_bytes();
            bytes.extend_from_slice(&garbage_frame(&mode));
            let _ = up.s.write_all(&bytes);
        } else {
            up.accept();
            // Wait for the client's first message, so the garbage arrives mid-connection.
            if up.frame().is_err() {
                return;
            }
            let _ = up.s.write_all(&garbage_frame(&mode));
        }
        // Keep the socket open until the gateway drops it.
        up.wait_closed();
    });
    let gw = gateway(up, Opts::default());
    let mut bystanders: Vec<TcpStream> = (0..4)
        .map(|i| open_mode(&gw, "echo", &format!("by{i}")))
        .collect();
    for (mode, what) in GARBAGE {
        let mut s = open_mode(&gw, mode, "gus");
        if *mode != "with101" {
            text(&mut s, "go");
        }
        assert_eq!(
            expect_close(&mut s),
            (Some(1014), "bad gateway".into()),
            "upstream sent {what}"
        );
        for (i, b) in bystanders.iter_mut().enumerate() {
            let m = format!("still here {mode} {i}");
            text(b, &m);
            assert_eq!(next_text(b), m, "bystander {i} after {what}");
        }
    }
    let mut fresh = open_mode(&gw, "echo", "late");
    text(&mut fresh, "fresh");
    assert_eq!(next_text(&mut fresh), "fresh");
}

/// A frame the gateway relays without looking at message state: a continuation with no
/// message started. The client must not receive it (RFC 6455 §5.4); the upstream broke
/// the protocol, so the client gets 1014.
#[test]
fn upstream_stray_continuation_is_not_relayed() {
    let up = raw_upstream(|mut up| {
        up.accept();
        if up.frame().is_err() {
            return;
        }
        let bytes = match up.mode().as_str() {
            // §5.4: a continuation frame with no message to continue.
            "stray" => raw_frame(0x80, b"orphan", None),
            // §5.4: a new data frame while a fragmented message is open.
            "interleaved" => {
                let mut b = raw_frame(0x01, b"first half", None);
                b.extend(raw_frame(0x82, b"new message", None));
                b
            }
            // §8.1: a text message must be UTF-8.
            "utf8" => raw_frame(0x81, &[b'o', b'k', 0xc3, 0x28], None),
            _ => return,
        };
        let _ = up.s.write_all(&bytes);
        up.wait_closed();
    });
    let gw = gateway(up, Opts::default());
    let mut report = Vec::new();
    for mode in ["stray", "interleaved", "utf8"] {
        let mut s = open_mode(&gw, mode, "hal");
        text(&mut s, "go");
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut frames = Vec::new();
        let close = loop {
            let mut h = [0u8; 2];
            if s.read_exact(&mut h).is_err() {
                break None;
            }
            let mut p = vec![0u8; usize::from(h[1] & 0x7f)];
            s.read_exact(&mut p).expect("payload");
            if h[0] & 0x0f == 8 {
                break Some((
                    u16::from_be_bytes([p[0], p[1]]),
                    String::from_utf8_lossy(&p[2..]).into_owned(),
                ));
            }
            frames.push((h[0], String::from_utf8_lossy(&p).into_owned()));
        };
        // Only the opening fragment of "interleaved" may have gone out before the error.
        let ok = frames.iter().all(|(first, _)| *first == 0x01)
            && close == Some((1014, "bad gateway".into()));
        report.push(format!(
            "{mode}: client got frames {frames:?} then close {close:?}{}",
            if ok { "" } else { "  <-- wrong" }
        ));
    }
    let report = report.join("\n");
    eprintln!("{report}");
    assert!(!report.contains("wrong"), "{report}");
}

#[test]
fn upstream_pings_are_answered_by_the_gateway_and_client_pings_stay_local() {
    let (tx, rx) = unbounded();
    let up = raw_upstream(move |mut up| {
        up.accept();
        let _ = up.send(0x89, b"up-ping");
        // The pong for our ping must come back masked, before anything else.
        let first = up.frame();
        let _ = tx.send(Ev::Msg(0, format!("{first:?}").into_bytes()));
        echo_record(&mut up, &tx);
    });
    let gw = gateway(up, Opts::default());
    let mut s = open_mode(&gw, "echo", "ivy");
    match rx.recv_timeout(WAIT) {
        Ok(Ev::Msg(0, p)) => {
            let p = String::from_utf8(p).expect("utf8");
            assert_eq!(
                p,
                format!("{:?}", Ok::<_, ()>((0x8au8, b"up-ping".to_vec())))
            );
        }
        other => panic!("{other:?}"),
    }
    // Client ping: answered by the gateway, never reaches the upstream.
    s.write_all(&client_frame(true, 9, b"cli-ping"))
        .expect("ping");
    let (_, _, op, p) = read_frame_from(&mut s);
    assert_eq!((op, p.as_slice()), (10, &b"cli-ping"[..]));
    text(&mut s, "after");
    // The upstream's ping was never relayed: the next frame is the echo.
    let (h, _, op, p) = read_frame_from(&mut s);
    assert_eq!((h[0], op, p.as_slice()), (0x81, 1, &b"after"[..]));
    assert_eq!(upstream_msg(&rx), (0x81, b"after".to_vec()));
}

// ------------------------------------------------------------------------------------
// Upstream failures before the 101.

#[test]
fn upstream_that_never_answers_the_upgrade_is_504_after_upstream_timeout() {
    let (tx, rx) = unbounded();
    let up = raw_upstream(move |mut up| {
        let started = Instant::now();
        let closed = up.wait_closed();
        let _ = tx.send((closed, started.elapsed()));
    });
    let gw = gateway(up, Opts::route(r#"upstream_timeout = "500ms""#));
    for round in 0..2 {
        let started = Instant::now();
        let (r, _s) = request(
            &gw,
            upgrade_request(&format!("/chat?access_token={}", chat("jo")), &[]).as_bytes(),
        );
        let took = started.elapsed();
        assert_eq!(r.status, 504, "round {round}: {r:?}");
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_secs(3),
            "round {round}: answered after {took:?}"
        );
        // The gateway hangs up on the upstream with its answer to the client.
        let (closed, held) = rx.recv_timeout(WAIT).expect("upstream connection ends");
        assert!(closed, "the gateway never closed the upstream socket");
        assert!(held < Duration::from_secs(3), "held {held:?}");
    }
}

#[test]
fn upstream_answering_garbage_instead_of_http_is_502() {
    let up = raw_upstream(|mut up| {
        match up.mode().as_str() {
            // Not HTTP at all, and the socket stays open: the first line is enough.
            "ssh" => {
                let _ = up.s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n");
                up.wait_closed();
            }
            // Binary junk with an end-of-head, then close.
            "junk" => {
                let _ = up.s.write_all(b"\x00\x01\x02garbage\xff\r\n\r\n");
            }
            // A few bytes then EOF: no complete answer.
            "short" => {
                let _ = up.s.write_all(b"HTTP/1.1 10");
            }
            // A 101 with a wrong accept value.
            "badaccept" => {
                let _ = up.s.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                );
                up.wait_closed();
            }
            // A 200 is no upgrade (and not a 4xx/5xx to relay).
            "ok200" => {
                let _ =
                    up.s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
                up.wait_closed();
            }
            // An HTTP/2 server preface-ish answer.
            "h2" => {
                let _ = up.s.write_all(&[0, 0, 0x12, 4, 0, 0, 0, 0, 0]);
                up.wait_closed();
            }
            _ => {}
        }
    });
    let gw = gateway(up, Opts::route(r#"upstream_timeout = "5s""#));
    for mode in ["ssh", "junk", "short", "badaccept", "ok200", "h2"] {
        let started = Instant::now();
        let (r, _s) = request(
            &gw,
            upgrade_request(
                &format!("/chat?mode={mode}&access_token={}", chat("kim")),
                &[],
            )
            .as_bytes(),
        );
        assert_eq!(r.status, 502, "{mode}: {r:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{mode}: waited {:?} (the upstream timeout, not the garbage, ended it)",
            started.elapsed()
        );
        assert!(
            !r.body.contains("SSH") && !r.body.contains("garbage"),
            "{r:?}"
        );
    }
}

#[test]
fn frames_in_the_same_write_as_the_upstream_101_reach_the_client() {
    let up = raw_upstream(|mut up| {
        let key = up.headers("sec-websocket-key").pop().expect("key");
        let mut bytes = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            std::str::from_utf8(&accept_key(key.as_bytes())).expect("ascii")
        )
        .into_bytes();
        bytes.extend(raw_frame(0x81, b"welcome", None));
        if up.mode() == "bye" {
            bytes.extend(raw_frame(0x88, &close_payload(4000, b"nope"), None));
        }
        let _ = up.s.write_all(&bytes);
        if up.mode() == "eof" {
            return; // 101, one message, FIN
        }
        up.wait_closed();
    });
    let gw = gateway(up, Opts::default());
    let mut s = open_mode(&gw, "bye", "eve");
    assert_eq!(next_text(&mut s), "welcome");
    assert_eq!(expect_close(&mut s), (Some(4000), "nope".into()));
    let mut s = open_mode(&gw, "eof", "eve");
    assert_eq!(next_text(&mut s), "welcome");
    assert_eq!(expect_close(&mut s), (Some(1014), "bad gateway".into()));
}
