//! The extension inside the session: RSV1 rules, fragments, bounds, the echo compressed
//! (the negotiation and codec tests are in `tests.rs`).
use super::tests::{agreement, deflated_frames, HELLO};
use super::*;
use crate::fuzzing::virtual_epoch;
use crate::proto::ws::frame::parse_header;
use crate::proto::ws::frame::write_masked_frame;
use crate::proto::ws::session::{write_message, Session, SessionLimits, SessionState};
use std::time::Duration;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn limits() -> SessionLimits {
    SessionLimits {
        max_frame: 64 * 1024,
        max_message: 64 * 1024,
        idle_timeout: Duration::from_secs(60),
        messages_per_sec: 0,
        bytes_per_sec: 0,
        write_buffer: 1 << 20,
        close_linger: Duration::from_secs(2),
    }
}

/// (delivered messages, output frames as (first byte, payload), close code sent).
type Run = (Vec<Vec<u8>>, Vec<(u8, Vec<u8>)>, Option<u16>);

/// A session with the extension, run once over `input`; returns the delivered messages,
/// the server's output frames (first byte, payload) and the close code sent.
fn run(takeover: bool, limits: SessionLimits, input: &[u8]) -> Run {
    let now = virtual_epoch();
    let mut session = Session::new(limits, now);
    session.set_deflate(PerMessageDeflate::new(agreement(takeover), None));
    let mut input = input.to_vec();
    let mut out = Vec::new();
    let mut delivered = Vec::new();
    session.handle_input(&mut input, now, &mut out, |kind, payload, out| {
        delivered.push(payload.to_vec());
        write_message(out, kind, payload);
    });
    let mut frames = Vec::new();
    let mut rest = &out[..];
    while let Ok(Some((h, n))) = parse_header(rest) {
        let end = n + h.payload_len as usize;
        frames.push((rest[0], rest[n..end].to_vec()));
        rest = &rest[end..];
    }
    assert!(rest.is_empty());
    let closed = (session.state() != SessionState::Open)
        .then(|| session.close_sent())
        .flatten();
    (delivered, frames, closed)
}

/// A client frame; `rsv1` sets the compressed bit.
fn frame(fin: bool, opcode: OpCode, rsv1: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_masked_frame(&mut out, fin, opcode, payload, KEY);
    if rsv1 {
        out[0] |= RSV1;
    }
    out
}

#[test]
fn compressed_hello_is_inflated_and_the_echo_compressed() {
    let (delivered, frames, closed) =
        run(false, limits(), &frame(true, OpCode::Text, true, &HELLO));
    assert_eq!(delivered, [b"Hello".to_vec()]);
    assert_eq!(closed, None);
    // RFC 7692 §7.2.3.1 on the way back.
    assert_eq!(frames, [(0xc1, HELLO.to_vec())]);
}

#[test]
fn fragmented_compressed_messages_with_a_ping_between() {
    // RFC 7692 §7.2.3.4: RSV1 on the first frame only.
    let mut input = frame(false, OpCode::Text, true, &[0xf2, 0x48, 0xcd]);
    input.extend(frame(true, OpCode::Ping, false, b"p"));
    input.extend(frame(
        true,
        OpCode::Continuation,
        false,
        &[0xc9, 0xc9, 0x07, 0x00],
    ));
    // Then an uncompressed message on the same connection.
    input.extend(frame(true, OpCode::Binary, false, b"plain"));
    for takeover in [false, true] {
        let (delivered, frames, closed) = run(takeover, limits(), &input);
        assert_eq!(delivered, [b"Hello".to_vec(), b"plain".to_vec()]);
        assert_eq!(closed, None);
        assert_eq!(
            frames[0],
            (0x8a, b"p".to_vec()),
            "the pong is never compressed"
        );
        assert_eq!(frames[1].0, 0xc1);
        assert_eq!(frames[2].0, 0xc2, "echoes are compressed whatever came in");
    }
    // Byte by byte gives the same.
    let now = virtual_epoch();
    let mut session = Session::new(limits(), now);
    session.set_deflate(PerMessageDeflate::new(agreement(true), None));
    let (mut pending, mut out, mut got) = (Vec::new(), Vec::new(), Vec::new());
    for b in &input {
        pending.push(*b);
        let used =
            session.handle_input(&mut pending, now, &mut out, |_, p, _| got.push(p.to_vec()));
        pending.drain(..used);
    }
    assert_eq!(got, [b"Hello".to_vec(), b"plain".to_vec()]);
}

#[test]
fn rsv1_rules_are_1002() {
    let bad = [
        // RFC 7692 §6.1: never on a control frame.
        frame(true, OpCode::Ping, true, b""),
        frame(true, OpCode::Close, true, &[0x03, 0xe8]),
        // RFC 7692 §6.1: never on a continuation.
        [
            frame(false, OpCode::Text, true, &[0xf2, 0x48, 0xcd]),
            frame(true, OpCode::Continuation, true, &[0xc9, 0xc9, 0x07, 0x00]),
        ]
        .concat(),
        // RSV2 and RSV3 stay reserved.
        {
            let mut f = frame(true, OpCode::Text, false, b"x");
            f[0] |= 0x20;
            f
        },
        {
            let mut f = frame(true, OpCode::Text, true, &HELLO);
            f[0] |= 0x10;
            f
        },
    ];
    for input in bad {
        let (delivered, _, closed) = run(false, limits(), &input);
        assert!(delivered.is_empty());
        assert_eq!(closed, Some(1002), "{input:02x?}");
    }
    // Without the extension, RSV1 is 1002 too.
    let now = virtual_epoch();
    let mut session = Session::new(limits(), now);
    let mut input = frame(true, OpCode::Text, true, &HELLO);
    session.handle_input(&mut input, now, &mut Vec::new(), |_, _, _| {
        panic!("delivered")
    });
    assert_eq!(session.close_sent(), Some(1002));
}

fn compress(message: &[u8]) -> Vec<u8> {
    let mut sender = PerMessageDeflate::new(agreement(false), None);
    let out = deflated_frames(&mut sender, &[message]).remove(0);
    let (_, n) = parse_header(&out).expect("ok").expect("whole");
    out[n..].to_vec()
}

#[test]
fn bombs_are_1009_in_one_frame_or_many() {
    let bomb = compress(&vec![b'a'; 2 << 20]);
    assert!(bomb.len() < 16 * 1024);
    let (delivered, _, closed) = run(false, limits(), &frame(true, OpCode::Binary, true, &bomb));
    assert!(delivered.is_empty());
    assert_eq!(closed, Some(1009));
    let (first, second) = bomb.split_at(bomb.len() / 2);
    let input = [
        frame(false, OpCode::Binary, true, first),
        frame(true, OpCode::Continuation, false, second),
    ]
    .concat();
    let (delivered, _, closed) = run(true, limits(), &input);
    assert!(delivered.is_empty());
    assert_eq!(closed, Some(1009));
    // Exactly max_message inflated is fine.
    let exact = compress(&vec![b'a'; 64 * 1024]);
    let (delivered, _, closed) = run(true, limits(), &frame(true, OpCode::Binary, true, &exact));
    assert_eq!((delivered[0].len(), closed), (64 * 1024, None));
}

#[test]
fn invalid_streams_and_invalid_text_are_1007() {
    let (_, _, closed) = run(
        false,
        limits(),
        &frame(true, OpCode::Binary, true, &[0xff, 0xff]),
    );
    assert_eq!(closed, Some(1007));
    let bad_utf8 = compress(&[0x48, 0xff, 0x48]);
    let (delivered, _, closed) = run(true, limits(), &frame(true, OpCode::Text, true, &bad_utf8));
    assert!(delivered.is_empty());
    assert_eq!(closed, Some(1007));
    // The same bytes as binary are fine.
    let (delivered, _, closed) = run(
        true,
        limits(),
        &frame(true, OpCode::Binary, true, &bad_utf8),
    );
    assert_eq!((delivered.len(), closed), (1, None));
}

#[test]
fn bytes_counts_inflated_bytes() {
    let small = compress(&[b'z'; 2000]);
    assert!(small.len() < 100);
    let mut l = limits();
    l.bytes_per_sec = 1000;
    let (delivered, _, closed) = run(false, l, &frame(true, OpCode::Binary, true, &small));
    assert!(delivered.is_empty());
    assert_eq!(closed, Some(1008));
    l.bytes_per_sec = 2000;
    let (delivered, _, closed) = run(false, l, &frame(true, OpCode::Binary, true, &small));
    assert_eq!((delivered.len(), closed), (1, None));
}
