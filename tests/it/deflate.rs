//! permessage-deflate (SPEC §10, RFC 7692) through real sockets. The client is written here
//! from RFC 7692 §7.2 with flate2 directly (tungstenite 0.26 has no deflate): raw DEFLATE,
//! sync flush, the 0x00 0x00 0xff 0xff tail removed on send and appended on receive.

use std::io::Write;

use crate::support::deflate::{frame, json, open_deflate, read_any, Client, OFFER};
use crate::support::*;

fn config(compression: &str, limits: &str, route: &str) -> String {
    format!(
        "{}\n{route}\n[compression]\npermessage_deflate = true\n{compression}\n",
        echo_config(1, "", limits)
    )
}

#[test]
fn negotiated_without_context_takeover_by_default_and_messages_round_trip() {
    let gw = Gateway::start(&config("", "", ""));
    let (r, mut s) = open_deflate(&gw, OFFER);
    assert_eq!(r.status, 101);
    assert_eq!(
        r.header("sec-websocket-extensions"),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=15")
    );
    let mut client = Client::new(true);
    // RFC 7692 §7.2.3.1's "Hello", compressed; the echo is below min_size: uncompressed.
    s.write_all(&frame(
        true,
        1,
        true,
        &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
    ))
    .expect("send");
    assert_eq!(read_any(&mut s), (0x81, b"Hello".to_vec()));
    // A 3 KiB JSON message: compressed both ways, RSV1 on the echo.
    let message = json(60);
    let compressed = client.deflate(&message);
    assert!(compressed.len() * 3 < message.len());
    for _ in 0..3 {
        s.write_all(&frame(true, 1, true, &compressed))
            .expect("send");
        let (first, payload) = read_any(&mut s);
        assert_eq!(first, 0xc1, "FIN + RSV1 + text");
        assert!(
            payload.len() * 3 < message.len(),
            "{} bytes on the wire",
            payload.len()
        );
        assert_eq!(client.inflate(&payload), message);
    }
    // Fragmented compressed message (RFC 7692 §7.2.3.4): RSV1 on the first frame only,
    // with a ping in between.
    let (a, b) = compressed.split_at(compressed.len() / 2);
    s.write_all(&frame(false, 1, true, a)).expect("send");
    s.write_all(&frame(true, 9, false, b"ping")).expect("send");
    s.write_all(&frame(true, 0, false, b)).expect("send");
    assert_eq!(
        read_any(&mut s),
        (0x8a, b"ping".to_vec()),
        "pongs are never compressed"
    );
    let (first, payload) = read_any(&mut s);
    assert_eq!(first, 0xc1);
    assert_eq!(client.inflate(&payload), message);
    // Uncompressed messages still work on the same connection.
    s.write_all(&frame(true, 2, false, &message)).expect("send");
    let (first, payload) = read_any(&mut s);
    assert_eq!(first, 0xc2);
    assert_eq!(client.inflate(&payload), message);
}

#[test]
fn context_takeover_keeps_the_window_between_messages() {
    let gw = Gateway::start(&config(
        "context_takeover = true\nmin_size = \"0B\"",
        "",
        "",
    ));
    let (r, mut s) = open_deflate(&gw, OFFER);
    assert_eq!(
        r.header("sec-websocket-extensions"),
        Some("permessage-deflate; client_max_window_bits=15")
    );
    let mut client = Client::new(false);
    let message = json(20);
    let first = client.deflate(&message);
    let second = client.deflate(&message);
    // The second refers back to the first: far smaller.
    assert!(
        second.len() * 4 < first.len(),
        "{} vs {}",
        second.len(),
        first.len()
    );
    let mut sizes = Vec::new();
    for payload in [first, second] {
        s.write_all(&frame(true, 1, true, &payload)).expect("send");
        let (byte, echoed) = read_any(&mut s);
        assert_eq!(byte, 0xc1);
        sizes.push(echoed.len());
        assert_eq!(client.inflate(&echoed), message);
    }
    assert!(
        sizes[1] * 4 < sizes[0],
        "the server keeps its context too: {sizes:?}"
    );
}

#[test]
fn offers_the_gateway_answers_or_refuses() {
    let gw = Gateway::start(&config(
        "server_max_window_bits = 10",
        "",
        "[[route]]\npath = \"/plain\"\nbackend = \"echo\"\npublic = true\ncompression = false",
    ));
    let cases: &[(&str, u16, Option<&str>)] = &[
        // First offer wins; an 8-bit server window is agreed (Autobahn 13.3 / 13.5 ask it).
        (
            "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=12",
            101,
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=8"),
        ),
        (
            "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12",
            101,
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"),
        ),
        ("Sec-WebSocket-Extensions: x-webkit-deflate-frame", 101, None),
        ("Sec-WebSocket-Extensions: permessage-deflate; unknown=1", 400, None),
        ("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=16", 400, None),
        ("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; server_no_context_takeover", 400, None),
        ("Sec-WebSocket-Extensions: permessage-deflate;;", 400, None),
    ];
    for (offer, status, answer) in cases {
        let (r, _) = open_deflate(&gw, offer);
        assert_eq!(r.status, *status, "{offer}: {r:?}");
        assert_eq!(r.header("sec-websocket-extensions"), *answer, "{offer}");
    }
    // With an 8-bit window the gateway inflates but sends uncompressed (zlib cannot keep
    // within 256 bytes; RFC 7692 §6 lets any message go uncompressed).
    let (r, mut s) = open_deflate(
        &gw,
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8",
    );
    assert_eq!(r.status, 101);
    let message = json(30);
    s.write_all(&frame(true, 1, true, &Client::new(true).deflate(&message)))
        .expect("send");
    assert_eq!(read_any(&mut s), (0x81, message));
    // The route that opts out: no extension, and RSV1 is then a protocol error.
    let (r, mut s) = request(&gw, upgrade_request("/plain", &[OFFER]).as_bytes());
    assert_eq!(
        (r.status, r.header("sec-websocket-extensions")),
        (101, None)
    );
    s.write_all(&frame(
        true,
        1,
        true,
        &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
    ))
    .expect("send");
    expect_closed_with(&mut s, 1002);
    // Compression off: the header is not even read.
    let gw = Gateway::start(&echo_config(1, "", ""));
    let (r, _) = open_deflate(&gw, "Sec-WebSocket-Extensions: permessage-deflate; bogus");
    assert_eq!(
        (r.status, r.header("sec-websocket-extensions")),
        (101, None)
    );
}

#[test]
fn bad_input_closes_with_the_rfc_codes() {
    let gw = Gateway::start(&config(
        "",
        "max_message = \"64KiB\"\nmax_frame = \"64KiB\"",
        "",
    ));
    let open = || {
        let (r, s) = open_deflate(&gw, OFFER);
        assert_eq!(r.status, 101);
        s
    };
    // RSV1 on a control frame, on a continuation: 1002.
    let mut s = open();
    s.write_all(&frame(true, 9, true, b"")).expect("send");
    expect_closed_with(&mut s, 1002);
    let mut s = open();
    let mut client = Client::new(true);
    let c = client.deflate(b"Hello, Hello, Hello");
    s.write_all(&frame(false, 1, true, &c[..2])).expect("send");
    s.write_all(&frame(true, 0, true, &c[2..])).expect("send");
    expect_closed_with(&mut s, 1002);
    // An invalid DEFLATE stream: 1007.
    let mut s = open();
    s.write_all(&frame(true, 2, true, &[0xff, 0xff, 0xff]))
        .expect("send");
    expect_closed_with(&mut s, 1007);
    // Compressed text that inflates to invalid UTF-8: 1007.
    let mut s = open();
    s.write_all(&frame(true, 1, true, &client.deflate(&[b'a', 0xff, b'b'])))
        .expect("send");
    expect_closed_with(&mut s, 1007);
}

#[test]
fn a_decompression_bomb_is_1009_while_a_victim_keeps_echoing() {
    let gw = Gateway::start(&config("", "max_message = \"1MiB\"", ""));
    let (r, mut victim) = open_deflate(&gw, OFFER);
    assert_eq!(r.status, 101);
    let mut victim_client = Client::new(true);
    let message = json(30);
    let mut bomber = Client::new(true);
    // 16 MiB of zeros in about 16 KiB: sixteen times max_message.
    let bomb = bomber.deflate(&vec![0u8; 16 << 20]);
    assert!(bomb.len() < 32 * 1024, "{} bytes", bomb.len());
    for round in 0..4 {
        let (r, mut attacker) = open_deflate(&gw, OFFER);
        assert_eq!(r.status, 101);
        if round % 2 == 0 {
            attacker
                .write_all(&frame(true, 2, true, &bomb))
                .expect("send");
        } else {
            // The same bomb in fragments: counted across them.
            for (i, chunk) in bomb.chunks(bomb.len() / 4 + 1).enumerate() {
                let last = (i + 1) * (bomb.len() / 4 + 1) >= bomb.len();
                let op = if i == 0 { 2 } else { 0 };
                attacker
                    .write_all(&frame(last, op, i == 0, chunk))
                    .expect("send");
            }
        }
        expect_closed_with(&mut attacker, 1009);
        // The victim is unaffected.
        let compressed = victim_client.deflate(&message);
        victim
            .write_all(&frame(true, 1, true, &compressed))
            .expect("send");
        let (first, payload) = read_any(&mut victim);
        assert_eq!(first, 0xc1);
        assert_eq!(victim_client.inflate(&payload), message);
    }
}

#[test]
fn a_full_memory_budget_declines_the_extension_not_the_handshake() {
    // Room for one connection's state with context takeover, not two.
    let gw = Gateway::start(&config(
        "context_takeover = true\nmemory = \"600KiB\"",
        "",
        "",
    ));
    let (r, first) = open_deflate(&gw, OFFER);
    assert_eq!(
        r.header("sec-websocket-extensions"),
        Some("permessage-deflate; client_max_window_bits=15")
    );
    let (r, _second) = open_deflate(&gw, OFFER);
    assert_eq!(
        (r.status, r.header("sec-websocket-extensions")),
        (101, None)
    );
    // The first connection's reservation comes back once it is gone.
    let mut first = first;
    first
        .write_all(&frame(true, 8, false, &close_payload(1000, b"")))
        .expect("send");
    expect_closed_with(&mut first, 1000);
    // Our FIN ends the gateway's linger: the connection and its reservation go.
    drop(first);
    let answered = (0..100).any(|_| {
        let (r, s) = open_deflate(&gw, OFFER);
        drop(s);
        r.header("sec-websocket-extensions").is_some()
    });
    assert!(answered, "the budget was never given back");
}

#[test]
fn proxied_routes_inflate_and_deflate_on_the_client_leg() {
    // The upstream is another gateway's plain echo route (no compression there).
    let upstream = Gateway::start(&echo_config(1, "", ""));
    let gw = Gateway::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\n[limits]\nper_ip_handshakes = \"1000/s\"\n[[route]]\npath = \"/echo\"\nupstream = [\"ws://{}/echo\"]\npublic = true\n[compression]\npermessage_deflate = true\n",
        upstream.addr
    ));
    let (r, mut s) = open_deflate(&gw, OFFER);
    assert_eq!(r.status, 101, "{r:?}");
    assert!(r.header("sec-websocket-extensions").is_some());
    let mut client = Client::new(true);
    let message = json(30);
    s.write_all(&frame(true, 1, true, &client.deflate(&message)))
        .expect("send");
    // The upstream got it inflated (it is a gateway without compression, which would
    // close 1002 on RSV1), and its echo comes back compressed for the client.
    let (first, payload) = read_any(&mut s);
    assert_eq!(first, 0xc1);
    assert_eq!(client.inflate(&payload), message);
}
