//! SPEC §5, RFC 6455 framing through raw sockets: the spirit of Autobahn|Testsuite
//! sections 1-7, 9 and 10 (framing, pings, reserved bits and opcodes, fragmentation, UTF-8,
//! the close handshake, limits), against the echo backend.

use std::io::{Read, Write};

use crate::support::*;

fn gateway() -> Gateway {
    Gateway::start(&echo_config(2, "", ""))
}

/// A connection that broke a rule gets a close frame with `code`, then EOF.
fn assert_fails(gw: &Gateway, bytes: &[u8], code: u16) -> String {
    let mut s = open(gw, "/echo", &[]);
    s.write_all(bytes).expect("send");
    expect_closed_with(&mut s, code)
}

// ------------------------------------------------------------------ RFC 6455 §5.7

#[test]
fn rfc_section_5_7_examples_verbatim() {
    let gw = gateway();
    let mut s = open(&gw, "/echo", &[]);
    // "A single-frame masked text message" ...
    s.write_all(&[
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ])
    .expect("send");
    // ... comes back as "A single-frame unmasked text message".
    let mut got = [0u8; 7];
    s.read_exact(&mut got).expect("echo");
    assert_eq!(got, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);

    // "A fragmented unmasked text message" (sent masked, as a client must): "Hel", "lo".
    let mut frag = raw_frame(0x01, b"Hel", Some(CLIENT_KEY));
    frag.extend(raw_frame(0x80, b"lo", Some(CLIENT_KEY)));
    s.write_all(&frag).expect("send");
    s.read_exact(&mut got).expect("echo");
    assert_eq!(got, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);

    // "Unmasked Ping request and masked Ping response", roles reversed: the masked ping
    // (the example's response bytes with opcode 0x9) gets the unmasked pong.
    s.write_all(&[
        0x89, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ])
    .expect("send");
    s.read_exact(&mut got).expect("pong");
    assert_eq!(got, [0x8a, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);

    // "256 bytes binary message in a single unmasked frame": 0x82 0x7E 0x0100.
    let payload: Vec<u8> = (0..=255u8).collect();
    s.write_all(&client_frame(true, 2, &payload)).expect("send");
    let (header, _, _, p) = read_frame_from(&mut s);
    assert_eq!(header, [0x82, 0x7e, 0x01, 0x00]);
    assert_eq!(p, payload);

    // "64KiB binary message in a single unmasked frame": 0x82 0x7F 0x0000000000010000.
    let payload: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    s.write_all(&client_frame(true, 2, &payload)).expect("send");
    let (header, _, _, p) = read_frame_from(&mut s);
    assert_eq!(
        header,
        [0x82, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
    );
    assert!(p == payload);

    // The first example sent as is (unmasked) is a protocol error from a client.
    let mut s = open(&gw, "/echo", &[]);
    s.write_all(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f])
        .expect("send");
    expect_closed_with(&mut s, 1002);
}

// ------------------------------------------------------ Autobahn 1.x: framing, sizes

#[test]
fn text_and_binary_echo_at_boundary_sizes() {
    let gw = gateway();
    let mut s = open(&gw, "/echo", &[]);
    for len in [0usize, 125, 126, 127, 65535, 65536] {
        // The length is encoded in its minimal form (RFC 6455 §5.2).
        let want_header_len = match len {
            0..=125 => 2,
            126..=65535 => 4,
            _ => 10,
        };
        let text: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        s.write_all(&client_frame(true, 1, &text)).expect("send");
        let (header, fin, op, p) = read_frame_from(&mut s);
        assert!(fin && op == 1, "text {len}");
        assert_eq!(header.len(), want_header_len, "text {len}: {header:?}");
        assert!(p == text, "text {len}");

        let bin: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
        s.write_all(&client_frame(true, 2, &bin)).expect("send");
        let (header, fin, op, p) = read_frame_from(&mut s);
        assert!(fin && op == 2, "binary {len}");
        assert_eq!(header.len(), want_header_len, "binary {len}");
        assert!(p == bin, "binary {len}");
    }
}

#[test]
fn frames_split_into_single_bytes_still_echo() {
    let gw = gateway();
    let mut s = open(&gw, "/echo", &[]);
    let mut bytes = client_frame(true, 1, "split héllo wörld".as_bytes());
    bytes.extend(client_frame(true, 2, &[0u8; 300]));
    for b in &bytes {
        s.write_all(std::slice::from_ref(b)).expect("send");
    }
    let (_, _, op, p) = read_frame_from(&mut s);
    assert_eq!((op, p.as_slice()), (1, "split héllo wörld".as_bytes()));
    let (_, _, op, p) = read_frame_from(&mut s);
    assert_eq!((op, p), (2, vec![0u8; 300]));
}

#[test]
fn many_frames_in_one_write_echo_in_order() {
    let gw = gateway();
    let mut s = open(&gw, "/echo", &[]);
    let mut bytes = Vec::new();
    for i in 0..200u32 {
        bytes.extend(client_frame(true, 1, format!("message {i}").as_bytes()));
    }
    s.write_all(&bytes).expect("send");
    for i in 0..200u32 {
        let (_, _, op, p) = read_frame_from(&mut s);
        assert_eq!(op, 1);
        assert_eq!(p, format!("message {i}").as_bytes());
    }
}

// -------------------------------------------------------------- Autobahn 2.x: pings

#[test]
fn ping_gets_pong_with_same_payload() {
    let gw = gateway();
    let mut s = open(&gw, "/echo", &[]);
    for payload in [
        Vec::new(),
        b"hello".to_vec(),
        (0..125u8).collect::<Vec<u8>>(),
    ] {
        s.write_all(&client_frame(true, 9, &payload)).expect("send");
        let (_, fin, op, p) = read_frame_from(&mut s);
        assert!(fin);
        assert_eq!(op, 0xa, "pong");
        assert_eq!(p, payload);
    }
    // Binary payload, several pings in one write: one pong each, in order.
    let mut bytes = Vec::new();
    for i in 0..10u8 {
        bytes.extend(client_frame(true, 9, &[0xff, 0x00, i]));
    }
    s.write_all(&bytes).expect("send");
    for i in 0..10u8 {
        let (_, _, op, p) = read_frame_from(&mut s);
        assert_eq!((op, p), (0xa, vec![0xff, 0x00, i]));
    }
}

#[test]
fn unsolicited_pong_is_ignored() {
    let gw = gateway();
    let mut s = open(&gw, "/echo", &[]);
    let mut bytes = client_frame(true, 0xa, b"unsolicited");
    bytes.extend(client_frame(true, 0xa, b""));
    bytes.extend(client_frame(true, 1, b"after"));
    s.write_all(&bytes).expect("send");
    // The first frame back is the echo: the pongs got no answer.
    let (_, _, op, p) = read_frame_from(&mut s);
    assert_eq!((op, p.as_slice()), (1, &b"after"[..]));
}

#[test]
fn control_frame_with_126_byte_payload_is_1002() {
    let gw = gateway();
    assert_fails(&gw, &client_frame(true, 9, &[b'x'; 126]), 1002);
    assert_fails(&gw, &client_frame(true, 0xa, &[b'x'; 126]), 1002);
    // Even a 126-byte payload announced with the 16-bit length form.
    assert_fails(&gw, &client_frame(true, 8, &[0x03; 126]), 1002);
}

// ---------------------------------------------------- Autobahn 3.x / 4.x: RSV, opcodes

#[test]
fn unmasked_client_frame_is_1002() {
    let gw = gateway();
    assert_fails(&gw, &raw_frame(0x81, b"Hello", None), 1002);
    assert_fails(&gw, &raw_frame(0x82, b"", None), 1002);
    assert_fails(&gw, &raw_frame(0x89, b"ping", None), 1002);
    // A valid frame first: the rule applies to every frame, not only the first.
    let mut bytes = client_frame(true, 1, b"ok");
    bytes.extend(raw_frame(0x81, b"Hello", None));
    let mut s = open(&gw, "/echo", &[]);
    s.write_all(&bytes).expect("send");
    let (_, _, op, p) = read_frame_from(&mut s);
    assert_eq!((op, p.as_slice()), (1, &b"ok"[..]));
    expect_closed_with(&mut s, 1002);
}

#[test]
fn reserved_bits_are_1002() {
    let gw = gateway();
    for rsv in [0x40u8, 0x20, 0x10, 0x70] {
        assert_fails(
            &gw,
            &raw_frame(0x81 | rsv, b"Hello", Some(CLIENT_KEY)),
            1002,
        );
    }
    // On a control frame, and after a valid echo.
    assert_fails(&gw, &raw_frame(0x89 | 0x20, b"", Some(CLIENT_KEY)), 1002);
    let mut s = open(&gw, "/echo", &[]);
    echo_once(&mut s, 1, b"fine");
    s.write_all(&raw_frame(0x82 | 0x10, b"x", Some(CLIENT_KEY)))
        .expect("send");
    expect_closed_with(&mut s, 1002);
}

#[test]
fn reserved_opcodes_are_1002() {
    let gw = gateway();
    for opcode in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
        let reason = assert_fails(&gw, &client_frame(true, opcode, b"payload"), 1002);
        assert!(!reason.is_empty(), "opcode {opcode}: a reason is given");
    }
}

// ------------------------------------------------------- Autobahn 5.x: fragmentation

#[test]
fn fragmented_message_with_interleaved_ping() {
    let gw = gateway();
    let mut s = open(&gw, "/echo", &[]);
    let mut bytes = client_frame(false, 1, b"frag1 ");
    bytes.extend(client_frame(true, 9, b"ping!"));
    bytes.extend(client_frame(false, 0, b"frag2 "));
    bytes.extend(client_frame(true, 0, b"frag3"));
    s.write_all(&bytes).expect("send");
    // The pong comes first, then the whole message as one frame.
    let (_, fin, op, p) = read_frame_from(&mut s);
    assert_eq!((fin, op, p.as_slice()), (true, 0xa, &b"ping!"[..]));
    let (_, fin, op, p) = read_frame_from(&mut s);
    assert_eq!(
        (fin, op, p.as_slice()),
        (true, 1, &b"frag1 frag2 frag3"[..])
    );

    // The same, one frame per write, the ping answered before the message completes.
    s.write_all(&client_frame(false, 2, &[1, 2, 3]))
        .expect("send");
    s.write_all(&client_frame(true, 9, b"")).expect("send");
    let (_, _, op, p) = read_frame_from(&mut s);
    assert_eq!((op, p.len()), (0xa, 0));
    s.write_all(&client_frame(false, 0, &[])).expect("send");
    s.write_all(&client_frame(true, 0xa, b"pong in between"))
        .expect("send");
    s.write_all(&client_frame(true, 0, &[4, 5])).expect("send");
    let (_, _, op, p) = read_frame_from(&mut s);
    assert_eq!((op, p), (2, vec![1, 2, 3, 4, 5]));
}

#[test]
fn fragmented_ping_is_1002() {
    let gw = gateway();
    assert_fails(&gw, &client_frame(false, 9, b"frag"), 1002);
    // Also in the middle of a fragmented message.
    let mut bytes = client_frame(false, 1, b"a");
    bytes.extend(client_frame(false, 9, b"p"));
    assert_fails(&gw, &bytes, 1002);
}

#[test]
fn continuation_without_a_message_is_1002() {
    let gw = gateway();
    assert_fails(&gw, &client_frame(true, 0, b"orphan"), 1002);
    assert_fails(&gw, &client_frame(false, 0, b"orphan"), 1002);
    // After a complete message, a continuation has nothing to continue.
    let mut s = open(&gw, "/echo", &[]);
    echo_once(&mut s, 1, b"done");
    s.write_all(&client_frame(true, 0, b"late")).expect("send");
    expect_closed_with(&mut s, 1002);
}

#[test]
fn new_message_during_fragmented_message_is_1002() {
    let gw = gateway();
    let mut bytes = client_frame(false, 1, b"first ");
    bytes.extend(client_frame(true, 1, b"second"));
    assert_fails(&gw, &bytes, 1002);
    let mut bytes = client_frame(false, 2, b"first ");
    bytes.extend(client_frame(false, 0, b"more"));
    bytes.extend(client_frame(true, 2, b"second"));
    assert_fails(&gw, &bytes, 1002);
}

// ---------------------------------------------------------------- Autobahn 6.x: UTF-8

#[test]
fn invalid_utf8_text_is_1007() {
    let gw = gateway();
    // Autobahn 6.3.1: "κόσμε" then a UTF-16 surrogate (ED A0 80), then more text.
    let bad = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited";
    assert_fails(&gw, &client_frame(true, 1, bad), 1007);
    for bad in [
        &b"\xff"[..],
        b"\xc0\x80",         // overlong NUL
        b"\xf4\x90\x80\x80", // above U+10FFFF
        b"abc\xf0\x9f\x98",  // truncated at the end of the message
        b"\x80",             // lone continuation byte
    ] {
        assert_fails(&gw, &client_frame(true, 1, bad), 1007);
    }
    // Binary messages are not validated.
    let mut s = open(&gw, "/echo", &[]);
    echo_once(&mut s, 2, b"\xff\xfe\xed\xa0\x80");
}

#[test]
fn invalid_utf8_fails_fast_before_the_frame_ends() {
    let gw = gateway();
    for prefix in [
        &b"valid text, then \xff"[..],
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0", // surrogate: fails at A0
        b"\xf4\x90",                                             // above U+10FFFF: fails at 90
    ] {
        let mut s = open(&gw, "/echo", &[]);
        // A header announcing 64 KiB of text, then only the first bytes.
        let mut bytes = vec![0x81, 0xff];
        bytes.extend_from_slice(&65536u64.to_be_bytes());
        bytes.extend_from_slice(&CLIENT_KEY);
        bytes.extend(
            prefix
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ CLIENT_KEY[i % 4]),
        );
        s.write_all(&bytes).expect("send");
        // The close arrives although the other ~64 KiB were never sent.
        let (code, _) = expect_close(&mut s);
        assert_eq!(code, Some(1007), "prefix {prefix:?}");
        expect_eof(&mut s);
    }
    // Fail-fast in a later fragment too: a valid first fragment, then a continuation
    // announcing 64 KiB whose first bytes are invalid.
    let mut s = open(&gw, "/echo", &[]);
    let mut bytes = client_frame(false, 1, "κόσμε".as_bytes());
    bytes.extend_from_slice(&[0x80, 0xff]);
    bytes.extend_from_slice(&65536u64.to_be_bytes());
    bytes.extend_from_slice(&CLIENT_KEY);
    bytes.extend(
        b"ok\xf8"
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ CLIENT_KEY[i % 4]),
    );
    s.write_all(&bytes).expect("send");
    expect_closed_with(&mut s, 1007);
}

#[test]
fn utf8_valid_across_fragment_boundaries() {
    let gw = gateway();
    let mut s = open(&gw, "/echo", &[]);
    // U+1D11E MUSICAL SYMBOL G CLEF, F0 9D 84 9E, cut between two fragments ...
    let mut bytes = client_frame(false, 1, b"a\xf0\x9d");
    bytes.extend(client_frame(true, 0, b"\x84\x9eb"));
    s.write_all(&bytes).expect("send");
    let (_, _, op, p) = read_frame_from(&mut s);
    assert_eq!((op, p.as_slice()), (1, "a\u{1d11e}b".as_bytes()));
    // ... and one byte per fragment, with empty fragments and a ping in between.
    let mut bytes = client_frame(false, 1, b"\xf0");
    bytes.extend(client_frame(false, 0, b"\x9d"));
    bytes.extend(client_frame(false, 0, b""));
    bytes.extend(client_frame(true, 9, b"p"));
    bytes.extend(client_frame(false, 0, b"\x84"));
    bytes.extend(client_frame(true, 0, b"\x9e"));
    s.write_all(&bytes).expect("send");
    let (_, _, op, _) = read_frame_from(&mut s);
    assert_eq!(op, 0xa);
    let (_, _, op, p) = read_frame_from(&mut s);
    assert_eq!((op, p.as_slice()), (1, "\u{1d11e}".as_bytes()));
    // Each message starts its own validation: a message ending mid-sequence fails.
    let mut bytes = client_frame(false, 1, b"a\xf0\x9d");
    bytes.extend(client_frame(true, 0, b"\x84"));
    s.write_all(&bytes).expect("send");
    expect_closed_with(&mut s, 1007);
}

// ------------------------------------------------------- Autobahn 7.x: the close handshake

#[test]
fn close_with_code_and_reason_is_echoed_then_tcp_closes() {
    let gw = gateway();
    let mut s = open(&gw, "/echo", &[]);
    echo_once(&mut s, 1, b"before");
    s.write_all(&client_frame(true, 8, &close_payload(1000, b"bye now")))
        .expect("send");
    let (code, _) = expect_close(&mut s);
    assert_eq!(code, Some(1000));
    // The server closes TCP first (RFC 6455 §7.1.1).
    expect_eof(&mut s);
}

#[test]
fn data_after_close_is_not_answered() {
    let gw = gateway();
    let mut s = open(&gw, "/echo", &[]);
    let mut bytes = client_frame(true, 8, &close_payload(1000, b""));
    bytes.extend(client_frame(true, 1, b"after close"));
    bytes.extend(client_frame(true, 9, b"ping after close"));
    s.write_all(&bytes).expect("send");
    expect_closed_with(&mut s, 1000);
}

#[test]
fn empty_close_gets_empty_close() {
    let gw = gateway();
    let mut s = open(&gw, "/echo", &[]);
    s.write_all(&client_frame(true, 8, b"")).expect("send");
    let (_, fin, op, p) = read_frame_from(&mut s);
    assert_eq!((fin, op, p.len()), (true, 8, 0));
    expect_eof(&mut s);
}

#[test]
fn close_with_one_byte_payload_is_1002() {
    let gw = gateway();
    assert_fails(&gw, &client_frame(true, 8, &[0x03]), 1002);
}

#[test]
fn close_with_invalid_code_is_1002() {
    let gw = gateway();
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        let mut s = open(&gw, "/echo", &[]);
        s.write_all(&client_frame(true, 8, &close_payload(code, b"")))
            .expect("send");
        let (got, reason) = expect_close(&mut s);
        assert_eq!(got, Some(1002), "code {code}: {reason}");
        expect_eof(&mut s);
    }
}

#[test]
fn close_with_valid_codes_is_echoed() {
    let gw = gateway();
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
    ] {
        let mut s = open(&gw, "/echo", &[]);
        s.write_all(&client_frame(true, 8, &close_payload(code, b"reason")))
            .expect("send");
        let (got, _) = expect_close(&mut s);
        assert_eq!(got, Some(code));
        expect_eof(&mut s);
    }
}

#[test]
fn close_with_invalid_utf8_reason_is_1007() {
    let gw = gateway();
    assert_fails(
        &gw,
        &client_frame(
            true,
            8,
            &close_payload(1000, b"\xce\xba\xe1\xbd\xb9\xed\xa0\x80"),
        ),
        1007,
    );
    assert_fails(
        &gw,
        &client_frame(true, 8, &close_payload(1000, b"\xff")),
        1007,
    );
}

#[test]
fn close_with_max_reason_is_echoed() {
    let gw = gateway();
    // 2 + 123 = 125 bytes: the largest close frame.
    let mut s = open(&gw, "/echo", &[]);
    s.write_all(&client_frame(true, 8, &close_payload(1000, &[b'r'; 123])))
        .expect("send");
    expect_closed_with(&mut s, 1000);
}

#[test]
fn close_in_the_middle_of_a_fragmented_message() {
    let gw = gateway();
    let mut s = open(&gw, "/echo", &[]);
    let mut bytes = client_frame(false, 1, b"never ");
    bytes.extend(client_frame(true, 8, &close_payload(1000, b"")));
    bytes.extend(client_frame(true, 0, b"finished"));
    s.write_all(&bytes).expect("send");
    // The half message is dropped, never echoed.
    expect_closed_with(&mut s, 1000);
}

// ------------------------------------------------------------------- Autobahn 9.x: limits

fn limits_gateway() -> Gateway {
    Gateway::start(&echo_config(
        2,
        "",
        "max_frame = \"1KiB\"\nmax_message = \"2KiB\"",
    ))
}

#[test]
fn max_frame_is_inclusive_and_enforced() {
    let gw = limits_gateway();
    let mut s = open(&gw, "/echo", &[]);
    echo_once(&mut s, 2, &[7u8; 1024]);
    echo_once(&mut s, 1, &[b'a'; 1024]);
    s.write_all(&client_frame(true, 2, &[7u8; 1025]))
        .expect("send");
    expect_closed_with(&mut s, 1009);
    // Judged on the header: the payload never needs to arrive.
    let mut s = open(&gw, "/echo", &[]);
    let mut header = vec![0x82, 0xfe];
    header.extend_from_slice(&1025u16.to_be_bytes());
    header.extend_from_slice(&CLIENT_KEY);
    s.write_all(&header).expect("send");
    expect_closed_with(&mut s, 1009);
}

#[test]
fn max_message_is_inclusive_and_enforced() {
    let gw = limits_gateway();
    let mut s = open(&gw, "/echo", &[]);
    // Exactly 2048 bytes in two fragments: accepted.
    let mut bytes = client_frame(false, 2, &[1u8; 1024]);
    bytes.extend(client_frame(true, 0, &[2u8; 1024]));
    s.write_all(&bytes).expect("send");
    let (_, _, op, p) = read_frame_from(&mut s);
    assert_eq!(op, 2);
    assert_eq!(p.len(), 2048);
    assert!(p[..1024].iter().all(|&b| b == 1) && p[1024..].iter().all(|&b| b == 2));
    // Text too, across three fragments.
    let mut bytes = client_frame(false, 1, &[b'x'; 1000]);
    bytes.extend(client_frame(false, 0, &[b'y'; 1000]));
    bytes.extend(client_frame(true, 0, &[b'z'; 48]));
    s.write_all(&bytes).expect("send");
    let (_, _, op, p) = read_frame_from(&mut s);
    assert_eq!((op, p.len()), (1, 2048));
    // 2049 bytes: 1009.
    let mut bytes = client_frame(false, 2, &[1u8; 1024]);
    bytes.extend(client_frame(false, 0, &[2u8; 1024]));
    bytes.extend(client_frame(true, 0, &[3u8; 1]));
    s.write_all(&bytes).expect("send");
    expect_closed_with(&mut s, 1009);
}

#[test]
fn message_rate_limit_is_1008() {
    let gw = Gateway::start(&echo_config(2, "", "messages = \"5/s\""));
    let mut s = open(&gw, "/echo", &[]);
    let mut bytes = Vec::new();
    for i in 0..6u8 {
        bytes.extend(client_frame(true, 2, &[i]));
    }
    s.write_all(&bytes).expect("send");
    for i in 0..5u8 {
        let (_, _, op, p) = read_frame_from(&mut s);
        assert_eq!((op, p), (2, vec![i]));
    }
    let reason = expect_closed_with(&mut s, 1008);
    assert_eq!(reason, "rate limit");
}

#[test]
fn control_frames_count_against_the_message_rate() {
    let gw = Gateway::start(&echo_config(2, "", "messages = \"5/s\""));
    let mut s = open(&gw, "/echo", &[]);
    let mut bytes = Vec::new();
    for _ in 0..5 {
        bytes.extend(client_frame(true, 0xa, b""));
    }
    bytes.extend(client_frame(true, 9, b"sixth"));
    s.write_all(&bytes).expect("send");
    expect_closed_with(&mut s, 1008);
}

#[test]
fn byte_rate_limit_is_1008() {
    let gw = Gateway::start(&echo_config(2, "", "bytes = \"1KiB/s\""));
    let mut s = open(&gw, "/echo", &[]);
    let mut bytes = client_frame(true, 2, &[0u8; 1024]);
    bytes.extend(client_frame(true, 2, &[0u8; 200]));
    s.write_all(&bytes).expect("send");
    let (_, _, op, p) = read_frame_from(&mut s);
    assert_eq!((op, p.len()), (2, 1024));
    expect_closed_with(&mut s, 1008);
}

#[test]
fn length_with_top_bit_set_is_1002() {
    let gw = gateway();
    let mut bytes = vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 5];
    bytes.extend_from_slice(&CLIENT_KEY);
    bytes.extend_from_slice(b"hello");
    assert_fails(&gw, &bytes, 1002);
    // Even when the rest would fit: only the top bit is set.
    let mut bytes = vec![0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    bytes.extend_from_slice(&CLIENT_KEY);
    assert_fails(&gw, &bytes, 1002);
}

#[test]
fn huge_declared_length_is_1009_not_an_allocation() {
    let gw = gateway();
    // 2^62 bytes announced: judged against max_frame before anything is reserved.
    let mut bytes = vec![0x82, 0xff];
    bytes.extend_from_slice(&(1u64 << 62).to_be_bytes());
    bytes.extend_from_slice(&CLIENT_KEY);
    bytes.extend_from_slice(b"tiny");
    assert_fails(&gw, &bytes, 1009);
}

// --------------------------------------------------------------- an independent client

#[test]
fn tungstenite_many_messages_of_varying_sizes_echo_in_order() {
    use tungstenite::Message;
    let gw = gateway();
    let (mut ws, _) = tungstenite::connect(gw.url("/echo")).expect("connect");
    let count = 300usize;
    let make = |i: usize| -> Message {
        let len = (i * 7919) % 70_000 + if i % 10 == 0 { 0 } else { i % 3 };
        if i % 2 == 0 {
            let s: String = "añ€😀xyz"
                .chars()
                .cycle()
                .scan(0usize, |n, c| {
                    *n += c.len_utf8();
                    (*n <= len).then_some(c)
                })
                .collect();
            Message::Text(s.into())
        } else {
            Message::Binary(
                (0..len)
                    .map(|b| (b * 31 + i) as u8)
                    .collect::<Vec<u8>>()
                    .into(),
            )
        }
    };
    // A window of outstanding messages keeps both sides' buffers small (no deadlock
    // with a blocking client that does not read while it writes).
    let window = 8;
    let mut sent = 0;
    let mut received = 0;
    while received < count {
        while sent < count && sent - received < window {
            ws.send(make(sent)).expect("send");
            sent += 1;
        }
        let got = ws.read().expect("read");
        assert!(got == make(received), "message {received} differs");
        received += 1;
    }
    close_tungstenite(&mut ws);
}

// ---------------------------------------------------------------------- isolation

#[test]
fn misbehaving_connection_does_not_disturb_another() {
    let gw = Gateway::start(&echo_config(1, "", ""));
    let mut victim = open(&gw, "/echo", &[]);
    echo_once(&mut victim, 1, b"before");

    // A protocol error on another connection of the same worker.
    let mut bad = open(&gw, "/echo", &[]);
    bad.write_all(&raw_frame(0x81, b"unmasked", None))
        .expect("send");
    expect_closed_with(&mut bad, 1002);
    echo_once(&mut victim, 1, b"after 1002");

    // A half-sent huge frame that never completes.
    let mut stalled = open(&gw, "/echo", &[]);
    let mut bytes = vec![0x82, 0xff];
    bytes.extend_from_slice(&(1u64 << 20).to_be_bytes());
    bytes.extend_from_slice(&CLIENT_KEY);
    bytes.extend_from_slice(&[0u8; 1000]);
    stalled.write_all(&bytes).expect("send");
    echo_once(&mut victim, 2, &[9u8; 70_000]);

    // Garbage before the handshake, and a connection that vanishes mid-frame.
    let mut garbage = gw.connect();
    garbage
        .write_all(b"\x00\xff\x13\x37 not http at all\r\n\r\n")
        .expect("send");
    let r = read_response(&mut garbage);
    assert_eq!(r.status, 400);
    let mut vanish = open(&gw, "/echo", &[]);
    vanish
        .write_all(&client_frame(true, 1, b"partial")[..5])
        .expect("send");
    drop(vanish);
    echo_once(&mut victim, 1, b"still here");

    // The stalled one is still open too (it broke no rule yet).
    stalled.write_all(&[0u8; 16]).expect("send");
    victim
        .write_all(&client_frame(true, 8, &close_payload(1000, b"")))
        .expect("send");
    expect_closed_with(&mut victim, 1000);
}

// ------------------------------------------------ masking and reassembly at odd boundaries

#[test]
fn masking_survives_arbitrary_read_boundaries() {
    let gw = gateway();
    let mut s = open(&gw, "/echo", &[]);
    let keys = [
        [0u8, 0, 0, 0],
        [0xff, 0xff, 0xff, 0xff],
        [0x01, 0x02, 0x03, 0x04],
        [0xa5, 0x5a, 0xc3, 0x3c],
    ];
    for (k, key) in keys.iter().enumerate() {
        for len in [1usize, 3, 5, 7, 125, 126, 1021, 65_537, 100_003] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 13 + k * 7 + 1) as u8).collect();
            let bytes = raw_frame(0x82, &payload, Some(*key));
            // Written in pieces of 1, 2, 3, 5, 7, 11, ... bytes, so that payload chunks
            // start at every offset modulo 4.
            let steps = [1usize, 2, 3, 5, 7, 11, 13, 4093];
            let mut at = 0;
            let mut i = 0;
            while at < bytes.len() {
                let n = steps[i % steps.len()].min(bytes.len() - at);
                s.write_all(&bytes[at..at + n]).expect("send");
                at += n;
                i += 1;
            }
            let (_, _, op, p) = read_frame_from(&mut s);
            assert_eq!(op, 2);
            assert!(p == payload, "key {key:?} len {len}");
        }
    }
}

#[test]
fn large_text_in_many_fragments_with_chars_cut_everywhere() {
    let gw = gateway();
    let mut s = open(&gw, "/echo", &[]);
    let text: String = "aé€😀".repeat(30_000); // 300 000 bytes, 1-4 byte chars
    let bytes = text.as_bytes();
    // Fragment sizes chosen so that boundaries fall inside chars of every width.
    let cuts = [1usize, 2, 3, 5, 7, 9, 4099, 65_536, 100_001];
    let mut frames = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < bytes.len() {
        let n = cuts[i % cuts.len()].min(bytes.len() - at);
        let opcode = if at == 0 { 1 } else { 0 };
        let fin = at + n == bytes.len();
        frames.extend(client_frame(fin, opcode, &bytes[at..at + n]));
        at += n;
        i += 1;
    }
    let mut writer = s.try_clone().expect("clone");
    let sender = std::thread::spawn(move || writer.write_all(&frames).expect("send"));
    let (_, fin, op, p) = read_frame_from(&mut s);
    sender.join().expect("sender");
    assert!(fin);
    assert_eq!(op, 1);
    assert!(p == bytes, "reassembled text differs");
}

// ------------------------------------------ the close handshake after the gateway's close

/// After the gateway fails a connection, the client's close reply is still recognized
/// (the rest of the offending frame is skipped), as the gateway's log line shows.
#[test]
fn client_close_reply_after_a_gateway_close_is_recognized() {
    // 1009 on the header, then the announced payload, then the client's close.
    let gw = limits_gateway();
    let mut s = open(&gw, "/echo", &[]);
    s.write_all(&client_frame(true, 2, &[7u8; 1025]))
        .expect("send");
    let (code, _) = expect_close(&mut s);
    assert_eq!(code, Some(1009));
    s.write_all(&client_frame(true, 8, &close_payload(1009, b"")))
        .expect("close reply");
    expect_eof(&mut s);
    drop(s);
    let line = gw.wait_log("closed sent=");
    assert!(line.contains("sent=1009 received=1009"), "{line}");

    // 1007 in the middle of a frame, then the rest of that frame, then the close.
    let gw = gateway();
    let mut s = open(&gw, "/echo", &[]);
    let mut payload = b"bad \xff".to_vec();
    payload.extend(std::iter::repeat_n(b'x', 10_000));
    let frame = client_frame(true, 1, &payload);
    s.write_all(&frame[..20]).expect("send");
    let (code, _) = expect_close(&mut s);
    assert_eq!(code, Some(1007));
    s.write_all(&frame[20..]).expect("rest of the frame");
    s.write_all(&client_frame(true, 8, &close_payload(1000, b"")))
        .expect("close reply");
    expect_eof(&mut s);
    drop(s);
    let line = gw.wait_log("closed sent=");
    assert!(line.contains("sent=1007 received=1000"), "{line}");
}

// ------------------------------- Autobahn 2.6, 3.2-3.7, 4.1.3-4.2.5, 5.2, 7.1.2: sequences

/// Autobahn 3.2/3.3 and 4.1.3-4.2.5: a valid message, then a bad frame and a ping in the
/// same write. The message is echoed, the bad frame closes with 1002, and the ping after
/// it is never answered (RFC 6455 §7.1.7: once failing, nothing more is processed).
#[test]
fn a_bad_frame_after_an_echo_fails_before_the_ping_behind_it() {
    let gw = gateway();
    let bad_frames = [
        raw_frame(0x81 | 0x20, b"Hello", Some(CLIENT_KEY)), // 3.2: RSV2
        raw_frame(0x81 | 0x30, b"", Some(CLIENT_KEY)),      // 3.4: RSV3 + RSV2
        raw_frame(0x82 | 0x60, &[0xff; 8], Some(CLIENT_KEY)), // 3.5: binary, RSV1 + RSV2
        raw_frame(0x88 | 0x70, &close_payload(1000, b""), Some(CLIENT_KEY)), // 3.7: close, RSV
        client_frame(true, 5, b""),                         // 4.1.3
        client_frame(true, 6, b"reserved"),                 // 4.1.4
        client_frame(false, 7, b"reserved"),                // 4.1.5
        client_frame(true, 0xb, b""),                       // 4.2.3
        client_frame(true, 0xc, b"reserved"),               // 4.2.4
        client_frame(false, 0xd, b"reserved"),              // 4.2.5
    ];
    for bad in bad_frames {
        let mut s = open(&gw, "/echo", &[]);
        let mut bytes = client_frame(true, 1, b"Hello, world!");
        bytes.extend_from_slice(&bad);
        bytes.extend(client_frame(true, 9, b"never answered"));
        s.write_all(&bytes).expect("send");
        let (_, _, op, p) = read_frame_from(&mut s);
        assert_eq!((op, p.as_slice()), (1, &b"Hello, world!"[..]));
        // The next frame is the close, not a pong.
        expect_closed_with(&mut s, 1002);
    }
}

/// Autobahn 5.2: a fragmented pong is as wrong as a fragmented ping (RFC 6455 §5.5).
#[test]
fn fragmented_pong_is_1002() {
    let gw = gateway();
    let mut bytes = client_frame(false, 0xa, b"frag");
    bytes.extend(client_frame(true, 0, b"ment"));
    assert_fails(&gw, &bytes, 1002);
}

/// Autobahn 2.6: a 125-byte ping written one byte at a time.
#[test]
fn ping_written_byte_by_byte_gets_its_pong() {
    let gw = gateway();
    let mut s = open(&gw, "/echo", &[]);
    let payload: Vec<u8> = (0..125u8).map(|i| i.wrapping_mul(7)).collect();
    for b in client_frame(true, 9, &payload) {
        s.write_all(&[b]).expect("send");
    }
    let (_, fin, op, p) = read_frame_from(&mut s);
    assert_eq!((fin, op), (true, 0xa));
    assert_eq!(p, payload);
}

/// Autobahn 7.1.2: a second close after the first gets no second answer.
#[test]
fn a_second_close_is_not_answered() {
    let gw = gateway();
    let mut s = open(&gw, "/echo", &[]);
    let mut bytes = client_frame(true, 8, &close_payload(1000, b""));
    bytes.extend(client_frame(true, 8, &close_payload(1001, b"again")));
    s.write_all(&bytes).expect("send");
    expect_closed_with(&mut s, 1000);
}

// ------------------------------- Autobahn 9.x and 10.1.1 under the configuration of a run

/// The gateway as docs/testing.md configures it for an Autobahn run.
fn autobahn_gateway() -> Gateway {
    Gateway::start(&echo_config(
        2,
        "",
        "max_frame = \"16MiB\"\nmax_message = \"16MiB\"\nmessages = \"1000000/s\"\nbytes = \"100GiB/s\"",
    ))
}

/// Reads one whole message whatever its framing: (opcode, payload).
fn read_message(s: &mut std::net::TcpStream) -> (u8, Vec<u8>) {
    let (_, mut fin, op, mut payload) = read_frame_from(s);
    while !fin {
        let (_, more_fin, more_op, more) = read_frame_from(s);
        assert_eq!(more_op, 0, "continuation");
        payload.extend_from_slice(&more);
        fin = more_fin;
    }
    (op, payload)
}

/// Text of `len` bytes with multi-byte characters (ASCII padding keeps the length exact).
fn text_of(len: usize) -> Vec<u8> {
    let mut s = String::with_capacity(len);
    let pieces = ["κόσμε ", "BAsd7sj ", "€ ", "𝄞 "];
    let mut i = 0;
    while s.len() + 8 < len {
        s.push_str(pieces[i % pieces.len()]);
        i += 1;
    }
    while s.len() < len {
        s.push('*');
    }
    s.into_bytes()
}

#[test]
fn autobahn_9_and_10_large_and_many_messages() {
    let gw = autobahn_gateway();
    let mut s = open(&gw, "/echo", &[]);
    // 9.1.6 / 9.2.6: 16 MiB text and binary in one frame (max_message is inclusive).
    let text = text_of(16 << 20);
    let binary: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    for (opcode, payload) in [(1u8, &text), (2, &binary)] {
        s.write_all(&client_frame(true, opcode, payload))
            .expect("send");
        let (op, p) = read_message(&mut s);
        assert_eq!(op, opcode);
        assert!(
            p == *payload,
            "{} bytes back for {}",
            p.len(),
            payload.len()
        );
    }
    // 9.3.1 / 9.4.1: 4 MiB in 64-byte fragments.
    let four = &text_of(4 << 20)[..];
    let mut bytes = Vec::with_capacity(four.len() * 2);
    let chunks: Vec<&[u8]> = four.chunks(64).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let opcode = if i == 0 { 1 } else { 0 };
        bytes.extend(client_frame(i + 1 == chunks.len(), opcode, chunk));
    }
    s.write_all(&bytes).expect("send");
    let (op, p) = read_message(&mut s);
    assert!(op == 1 && p == four);
    // 9.5.1 / 9.6.1: a 1 MiB message written in 64-byte chops.
    for (opcode, payload) in [(1u8, &text_of(1 << 20)[..]), (2, &binary[..1 << 20])] {
        for chop in client_frame(true, opcode, payload).chunks(64) {
            s.write_all(chop).expect("send");
        }
        let (op, p) = read_message(&mut s);
        assert!(op == opcode && p == payload);
    }
    // 9.7.6 / 9.8.6: 1000 messages of 4096 bytes, each waiting for its echo.
    let small_text = text_of(4096);
    for i in 0..1000usize {
        let (opcode, payload) = if i % 2 == 0 {
            (1, &small_text[..])
        } else {
            (2, &binary[i * 64..i * 64 + 4096])
        };
        s.write_all(&client_frame(true, opcode, payload))
            .expect("send");
        let (op, p) = read_message(&mut s);
        assert!(op == opcode && p == payload, "message {i}");
    }
    // 10.1.1: 65536 bytes of text auto-fragmented into 1300-byte frames.
    let message = &text_of(65536)[..];
    let chunks: Vec<&[u8]> = message.chunks(1300).collect();
    let mut bytes = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        bytes.extend(client_frame(
            i + 1 == chunks.len(),
            if i == 0 { 1 } else { 0 },
            chunk,
        ));
    }
    s.write_all(&bytes).expect("send");
    let (op, p) = read_message(&mut s);
    assert!(op == 1 && p == message);
    s.write_all(&client_frame(true, 8, &close_payload(1000, b"")))
        .expect("close");
    expect_closed_with(&mut s, 1000);
}
