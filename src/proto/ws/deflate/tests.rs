use super::offer::*;
use super::*;
use crate::proto::ws::frame::{parse_header, write_frame};

fn config(bits: u8, takeover: bool) -> DeflateConfig {
    DeflateConfig {
        server_max_window_bits: bits,
        context_takeover: takeover,
        min_size: 0,
    }
}

fn answer_to(header: &str, cfg: &DeflateConfig) -> Result<Option<String>, MalformedOffer> {
    Ok(negotiate([header.as_bytes()], cfg)?.map(|a| {
        let mut out = Vec::new();
        a.write_response(&mut out);
        String::from_utf8(out).expect("ascii")
    }))
}

#[test]
fn negotiation_matrix() {
    let off = config(15, false);
    let on = config(15, true);
    let cases: &[(&str, &DeflateConfig, Option<&str>)] = &[
        // What browsers send.
        (
            "permessage-deflate; client_max_window_bits",
            &on,
            Some("permessage-deflate; client_max_window_bits=15"),
        ),
        ("permessage-deflate", &on, Some("permessage-deflate")),
        (
            "permessage-deflate",
            &off,
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        ),
        // RFC 7692 §7.1.1.1: asked for, it must be answered even with takeover on.
        (
            "permessage-deflate; server_no_context_takeover",
            &on,
            Some("permessage-deflate; server_no_context_takeover"),
        ),
        (
            "permessage-deflate; client_no_context_takeover",
            &on,
            Some("permessage-deflate; client_no_context_takeover"),
        ),
        // RFC 7692 §7.1.2.1: the same or a smaller value.
        (
            "permessage-deflate; server_max_window_bits=10",
            &on,
            Some("permessage-deflate; server_max_window_bits=10"),
        ),
        (
            "permessage-deflate; server_max_window_bits=12",
            &config(10, true),
            Some("permessage-deflate; server_max_window_bits=10"),
        ),
        // Our own smaller window is announced unasked; the client's is answered only when named.
        (
            "permessage-deflate",
            &config(11, true),
            Some("permessage-deflate; server_max_window_bits=11"),
        ),
        (
            "permessage-deflate; client_max_window_bits=9",
            &on,
            Some("permessage-deflate; client_max_window_bits=9"),
        ),
        (
            "permessage-deflate; client_max_window_bits=15",
            &config(12, true),
            Some("permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
        ),
        // Quoted values (RFC 7692 §7.1: the unescaped text must be a token).
        (
            "permessage-deflate; server_max_window_bits=\"10\"",
            &on,
            Some("permessage-deflate; server_max_window_bits=10"),
        ),
        // An 8-bit server window is agreed (Autobahn 13.3, 13.5, 13.7 offer it); the gateway
        // then sends uncompressed (see min_size_and_control_frames_go_out_unchanged).
        (
            "permessage-deflate; server_max_window_bits=8",
            &on,
            Some("permessage-deflate; server_max_window_bits=8"),
        ),
        (
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=8, permessage-deflate",
            &config(12, false),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=8"),
        ),
        // First acceptable offer wins; other extensions are skipped.
        (
            "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=9, permessage-deflate; server_max_window_bits=10",
            &on,
            Some("permessage-deflate; server_max_window_bits=9"),
        ),
        ("x-webkit-deflate-frame; max_window_bits=8", &on, None),
        ("PerMessage-Deflate", &on, Some("permessage-deflate")),
        ("permessage-deflate ;client_no_context_takeover ,", &on, Some("permessage-deflate; client_no_context_takeover")),
    ];
    for (header, cfg, expected) in cases {
        let got = answer_to(header, cfg).unwrap_or_else(|_| panic!("{header:?} refused"));
        assert_eq!(got.as_deref(), *expected, "{header:?}");
    }
}

#[test]
fn malformed_offers_are_refused() {
    let on = config(15, true);
    for header in [
        "",
        ",",
        "permessage-deflate; unknown_param",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; client_max_window_bits=abc",
        "permessage-deflate; client_max_window_bits=\"1 0\"",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        "permessage-deflate; server_max_window_bits=\"10",
        "permessage-deflate;",
        "permessage-deflate x",
        "permessage-deflate; =10",
        "perm\u{e9}ssage-deflate",
        // A later malformed offer refuses the request too: the header is one list.
        "permessage-deflate, permessage-deflate; bogus",
    ] {
        assert_eq!(answer_to(header, &on), Err(MalformedOffer), "{header:?}");
    }
    // Several header lines form one list.
    let two = negotiate(
        [
            &b"x-other"[..],
            &b"permessage-deflate; client_no_context_takeover"[..],
        ],
        &on,
    );
    assert!(two.expect("well-formed").is_some());
    assert!(negotiate([&b"x-other"[..], &b"permessage-deflate;;"[..]], &on).is_err());
    // No header at all: nothing to answer.
    assert_eq!(negotiate(std::iter::empty::<&[u8]>(), &on), Ok(None));
}

fn inflate(
    pmd: &mut PerMessageDeflate,
    payload: &[u8],
    max: u64,
) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::new();
    pmd.inflate(payload, max, &mut out).map(|()| out)
}

pub(super) fn agreement(takeover: bool) -> Agreement {
    negotiate([&b"permessage-deflate"[..]], &config(15, takeover))
        .expect("valid")
        .expect("accepted")
}

/// RFC 7692 §7.2.3.1: "Hello" in one compressed frame.
pub(super) const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
/// RFC 7692 §7.2.3.2: the second "Hello" with the LZ77 window taken over.
pub(super) const HELLO_AGAIN: [u8; 5] = [0xf2, 0x00, 0x11, 0x00, 0x00];

#[test]
fn rfc_7692_inflate_vectors() {
    let mut pmd = PerMessageDeflate::new(agreement(true), None);
    assert_eq!(inflate(&mut pmd, &HELLO, 1024), Ok(b"Hello".to_vec()));
    // §7.2.3.2: with context takeover the second message refers back to the first.
    assert_eq!(inflate(&mut pmd, &HELLO_AGAIN, 1024), Ok(b"Hello".to_vec()));
    // Without it, the same bytes refer to a window that is gone.
    let mut fresh = PerMessageDeflate::new(agreement(false), None);
    assert_eq!(inflate(&mut fresh, &HELLO, 1024), Ok(b"Hello".to_vec()));
    assert!(inflate(&mut fresh, &HELLO_AGAIN, 1024).is_err());
    // §7.2.3.3: a block with no compression.
    let stored = [
        0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
    ];
    assert_eq!(inflate(&mut fresh, &stored, 1024), Ok(b"Hello".to_vec()));
    // §7.2.3.4: fragments are one stream: the payloads concatenated.
    let (first, second) = ([0xf2, 0x48, 0xcd], [0xc9, 0xc9, 0x07, 0x00]);
    let joined = [&first[..], &second[..]].concat();
    assert_eq!(inflate(&mut fresh, &joined, 1024), Ok(b"Hello".to_vec()));
    // §7.2.3.5: BFINAL set; the stream ends and the next message starts a new one.
    let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
    let mut kept = PerMessageDeflate::new(agreement(true), None);
    assert_eq!(inflate(&mut kept, &bfinal, 1024), Ok(b"Hello".to_vec()));
    assert_eq!(inflate(&mut kept, &HELLO, 1024), Ok(b"Hello".to_vec()));
    // §7.2.3.6: an empty payload is an empty message.
    assert_eq!(inflate(&mut kept, &[0x00], 1024), Ok(vec![]));
    assert_eq!(inflate(&mut kept, &[], 1024), Ok(vec![]));
    // An empty payload leaves the context as it was: §7.2.3.2 still refers back to "Hello".
    let mut kept = PerMessageDeflate::new(agreement(true), None);
    assert_eq!(inflate(&mut kept, &HELLO, 1024), Ok(b"Hello".to_vec()));
    assert_eq!(inflate(&mut kept, &[], 1024), Ok(vec![]));
    assert_eq!(
        inflate(&mut kept, &HELLO_AGAIN, 1024),
        Ok(b"Hello".to_vec())
    );
}

pub(super) fn deflated_frames(pmd: &mut PerMessageDeflate, messages: &[&[u8]]) -> Vec<Vec<u8>> {
    messages
        .iter()
        .map(|m| {
            let mut staging = Vec::new();
            write_frame(&mut staging, true, OpCode::Text, m);
            let mut out = Vec::new();
            pmd.send_staged(&mut staging, &mut out);
            out
        })
        .collect()
}

#[test]
fn rfc_7692_deflate_vectors() {
    // §7.2.3.1 / §7.2.3.2 byte for byte: FIN + RSV1 + text, then the payload without the tail.
    let mut kept = PerMessageDeflate::new(agreement(true), None);
    let frames = deflated_frames(&mut kept, &[b"Hello", b"Hello"]);
    assert_eq!(frames[0], [&[0xc1, 0x07][..], &HELLO].concat());
    assert_eq!(frames[1], [&[0xc1, 0x05][..], &HELLO_AGAIN].concat());
    let mut fresh = PerMessageDeflate::new(agreement(false), None);
    let frames = deflated_frames(&mut fresh, &[b"Hello", b"Hello"]);
    assert_eq!(frames[0], frames[1]);
    assert_eq!(frames[1], [&[0xc1, 0x07][..], &HELLO].concat());
}

/// Inflates `payloads` (frame payloads, tail removed) as one raw DEFLATE stream with a
/// plain `flate2` decompressor, independent of [`PerMessageDeflate::inflate`]: the tail is
/// appended to each (RFC 7692 §7.2.2) and the context kept across them.
fn independent_inflate(window_bits: u8, payloads: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, String> {
    let mut d = Decompress::new_with_window_bits(false, window_bits);
    payloads
        .iter()
        .map(|p| {
            let input = [&p[..], &TAIL[..]].concat();
            let mut out = Vec::with_capacity(1 << 16);
            let before = d.total_in();
            d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
                .map_err(|e| format!("{e}"))?;
            // A whole message ends on a block boundary: every byte is consumed.
            if d.total_in() - before != input.len() as u64 {
                return Err("input left over".into());
            }
            Ok(out)
        })
        .collect()
}

#[test]
fn empty_messages_under_context_takeover_stay_a_valid_stream() {
    // The fuzz crash (session_deflate crash-cadcfdd5): with context takeover, zlib emits
    // nothing for the sync flush of an empty message that follows another sync flush; the
    // server sent an empty payload, whose appended tail (00 00 ff ff) is a truncated
    // stored-block header, and the peer's next message failed ("invalid stored block
    // lengths"). RFC 7692 §7.2.1 step 2 / §7.2.3.6: the empty message is the payload 0x00.
    for bits in MIN_WINDOW_BITS..=MAX_WINDOW_BITS {
        for takeover in [true, false] {
            let a = negotiate([&b"permessage-deflate"[..]], &config(bits, takeover))
                .expect("valid")
                .expect("accepted");
            let mut server = PerMessageDeflate::new(a, None);
            let messages: [&[u8]; 6] = [b"", b"", b"\x02d", b"", b"\x02d", b""];
            let payloads: Vec<Vec<u8>> = deflated_frames(&mut server, &messages)
                .into_iter()
                .map(|frame| {
                    let (header, len) = parse_header(&frame).expect("ok").expect("whole");
                    assert_eq!(header.rsv, RSV1_FIELD);
                    frame[len..].to_vec()
                })
                .collect();
            for p in &payloads {
                assert!(!p.is_empty(), "a compressed payload is never empty");
            }
            assert_eq!(
                payloads[1],
                [0x00],
                "an empty message after a flush is 0x00"
            );
            let inflated = if takeover {
                independent_inflate(bits, &payloads)
            } else {
                payloads
                    .iter()
                    .map(|p| {
                        independent_inflate(bits, std::slice::from_ref(p)).map(|mut v| v.remove(0))
                    })
                    .collect()
            };
            assert_eq!(
                inflated,
                Ok(messages.iter().map(|m| m.to_vec()).collect::<Vec<_>>()),
                "bits {bits} takeover {takeover}"
            );
        }
    }
}

#[test]
fn round_trips_of_every_size_and_window() {
    let text: Vec<u8> = (0..200_000u32)
        .map(|i| b"{\"price\":12.5,\"sym\":\"ABC\"}"[(i % 26) as usize])
        .collect();
    for bits in MIN_WINDOW_BITS..=MAX_WINDOW_BITS {
        for takeover in [false, true] {
            let mut a = negotiate([&b"permessage-deflate"[..]], &config(bits, takeover))
                .expect("valid")
                .expect("accepted");
            // The peer inflates what we send: the client side mirrors our window.
            a.client_max_window_bits = None;
            let mut server = PerMessageDeflate::new(a, None);
            let mut peer = PerMessageDeflate::new(a, None);
            for len in [0, 1, 125, 126, 65_535, 65_536, 200_000] {
                let msg = &text[..len];
                let out = deflated_frames(&mut server, &[msg]).remove(0);
                let (header, header_len) = parse_header(&out).expect("ok").expect("whole");
                assert_eq!(header.rsv, RSV1_FIELD, "RSV1 on a compressed frame");
                assert!(header.fin);
                assert_eq!(header.payload_len as usize, out.len() - header_len);
                let inflated = inflate(&mut peer, &out[header_len..], 1 << 20).expect("inflates");
                assert_eq!(inflated, msg, "bits {bits} takeover {takeover} len {len}");
            }
        }
    }
}

#[test]
fn min_size_and_control_frames_go_out_unchanged() {
    let mut a = agreement(false);
    a.min_size = 10;
    let mut pmd = PerMessageDeflate::new(a, None);
    let mut staging = Vec::new();
    write_frame(&mut staging, true, OpCode::Text, b"short");
    write_frame(&mut staging, true, OpCode::Ping, b"0123456789abcdef");
    write_frame(&mut staging, true, OpCode::Close, &[0x03, 0xe8]);
    let plain = staging.clone();
    let mut out = Vec::new();
    pmd.send_staged(&mut staging, &mut out);
    assert_eq!(out, plain);
    // An 8-bit window is never compressed into, and costs no compressor.
    let mut eight = negotiate(
        [&b"permessage-deflate; server_max_window_bits=8"[..]],
        &config(15, true),
    )
    .expect("valid")
    .expect("accepted");
    eight.min_size = 0;
    assert_eq!(eight.state_cost(), inflate_cost(15));
    let mut pmd8 = PerMessageDeflate::new(eight, None);
    let mut staging = Vec::new();
    write_frame(&mut staging, true, OpCode::Binary, &[7; 300]);
    let plain = staging.clone();
    let mut out = Vec::new();
    pmd8.send_staged(&mut staging, &mut out);
    assert_eq!(out, plain);
    // At min_size it is compressed.
    let mut staging = Vec::new();
    write_frame(&mut staging, true, OpCode::Binary, b"0123456789");
    let mut out = Vec::new();
    pmd.send_staged(&mut staging, &mut out);
    assert_eq!(out[0], 0x80 | RSV1 | 0x2);
}

#[test]
fn a_bomb_stops_at_the_limit_without_inflating_it_whole() {
    // 4 MiB of zeros compress to about 4 KiB.
    let zeros = vec![0u8; 4 << 20];
    let mut sender = PerMessageDeflate::new(agreement(false), None);
    let frame = deflated_frames(&mut sender, &[&zeros]).remove(0);
    let (_, header_len) = parse_header(&frame).expect("ok").expect("whole");
    let bomb = &frame[header_len..];
    assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());
    for takeover in [false, true] {
        let mut pmd = PerMessageDeflate::new(agreement(takeover), None);
        let limit = 100_000u64;
        assert_eq!(
            inflate(&mut pmd, bomb, limit),
            Err(ProtocolError::MessageTooBig)
        );
        // The output never grew past the limit plus the one byte that showed it crossed.
        let mut buffer = Vec::new();
        let result = pmd.inflate(bomb, limit, &mut buffer);
        assert_eq!(result, Err(ProtocolError::MessageTooBig));
        assert!(
            buffer.capacity() <= limit as usize + 1,
            "{}",
            buffer.capacity()
        );
        // Exactly at the limit is accepted (SPEC §3: limits are inclusive).
        let exact = &zeros[..limit as usize];
        let frame = deflated_frames(&mut sender, &[exact]).remove(0);
        let (_, header_len) = parse_header(&frame).expect("ok").expect("whole");
        let mut pmd = PerMessageDeflate::new(agreement(takeover), None);
        assert_eq!(
            inflate(&mut pmd, &frame[header_len..], limit).map(|v| v.len()),
            Ok(exact.len())
        );
        assert_eq!(
            inflate(&mut pmd, &frame[header_len..], limit - 1),
            Err(ProtocolError::MessageTooBig)
        );
    }
}

#[test]
fn invalid_streams_are_1007() {
    for takeover in [false, true] {
        let mut pmd = PerMessageDeflate::new(agreement(takeover), None);
        // BTYPE = 11 is reserved (RFC 1951 §3.2.3).
        let e = inflate(&mut pmd, &[0xff, 0xff, 0xff], 1024);
        assert_eq!(e, Err(ProtocolError::InvalidCompressedData));
        assert_eq!(ProtocolError::InvalidCompressedData.close_code(), 1007);
        // A stored block whose length check fails.
        let e = inflate(&mut pmd, &[0x00, 0x05, 0x00, 0x00, 0x00, b'H'], 1024);
        assert_eq!(e, Err(ProtocolError::InvalidCompressedData));
        // A distance reaching before the start of a fresh window.
        let mut fresh = PerMessageDeflate::new(agreement(false), None);
        assert_eq!(
            inflate(&mut fresh, &HELLO_AGAIN, 1024),
            Err(ProtocolError::InvalidCompressedData)
        );
        // The pool's decompressor is reset: the next message inflates.
        assert_eq!(inflate(&mut fresh, &HELLO, 1024), Ok(b"Hello".to_vec()));
    }
}

#[test]
fn the_budget_declines_past_its_limit_and_gives_back_on_drop() {
    let on = config(15, true);
    let cost = agreement(true).state_cost();
    assert!(cost > 0);
    assert_eq!(agreement(false).state_cost(), 0);
    let budget = MemoryBudget::new(2 * cost);
    let offer = [&b"permessage-deflate"[..]];
    let first = negotiate_within(offer, &on, &budget).expect("valid");
    let second = negotiate_within(offer, &on, &budget).expect("valid");
    assert!(first.as_ref().and_then(|f| f.1.as_ref()).is_some());
    assert!(second.is_some());
    assert_eq!(budget.used(), 2 * cost);
    // Full: the extension is declined, the handshake goes on.
    assert_eq!(
        negotiate_within(offer, &on, &budget)
            .expect("valid")
            .map(|a| a.0),
        None
    );
    // Without context takeover nothing is reserved, whatever the budget.
    let off = negotiate_within(offer, &config(15, false), &budget).expect("valid");
    assert!(off.is_some_and(|(_, ticket)| ticket.is_none()));
    // A client that keeps no context costs only our side.
    let half = negotiate_within(
        [&b"permessage-deflate; client_no_context_takeover"[..]],
        &on,
        &MemoryBudget::new(usize::MAX),
    )
    .expect("valid")
    .expect("accepted");
    assert_eq!(half.0.state_cost(), deflate_cost(15));
    drop(first);
    assert_eq!(budget.used(), cost);
    assert!(negotiate_within(offer, &on, &budget)
        .expect("valid")
        .is_some());
}

/// Splits frames written by [`PerMessageDeflate::deflate_frame`]: (first byte, payload
/// unmasked), checking the mask bit against `masked`.
fn split_frames(mut bytes: &[u8], masked: bool) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while let Ok(Some((header, len))) = parse_header(bytes) {
        assert_eq!(header.mask.is_some(), masked);
        let end = len + header.payload_len as usize;
        let mut payload = bytes[len..end].to_vec();
        if let Some(key) = header.mask {
            crate::proto::ws::mask::apply_mask(&mut payload, key, 0);
        }
        frames.push((bytes[0], payload));
        bytes = &bytes[end..];
    }
    assert!(bytes.is_empty(), "whole frames only");
    frames
}

/// One message's payload (tail removed) inflated by a plain `flate2` decompressor, whatever
/// its inflated size.
fn inflate_whole(window_bits: u8, payload: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new_with_window_bits(false, window_bits);
    let input = [payload, &TAIL[..]].concat();
    let mut out = Vec::with_capacity(1 << 16);
    while (d.total_in() as usize) < input.len() {
        if out.len() == out.capacity() {
            out.reserve(out.capacity());
        }
        let before = (d.total_in(), out.len());
        d.decompress_vec(
            &input[d.total_in() as usize..],
            &mut out,
            FlushDecompress::Sync,
        )
        .expect("a valid stream");
        assert!(before != (d.total_in(), out.len()), "no progress");
    }
    out
}

#[test]
fn a_message_compressed_across_frames_is_one_stream() {
    // SPEC §10 relay: an upstream message relayed piece by piece, each piece one frame.
    let message: Vec<u8> = (0..40_000u32)
        .flat_map(|i| format!("{{\"n\":{}}},", i % 97).into_bytes())
        .collect();
    for takeover in [false, true] {
        for masked in [false, true] {
            let (mut pmd, bits) = if masked {
                // The gateway as the client of an upstream: the client_* parameters are ours.
                let offer = ClientOffer {
                    config: config(15, takeover),
                    no_context_takeover: !takeover,
                };
                let answer: &[u8] = if takeover {
                    b"permessage-deflate; client_max_window_bits=11"
                } else {
                    b"permessage-deflate; server_no_context_takeover; client_max_window_bits=11"
                };
                let agreement = accept_answer([answer], Some(&offer))
                    .expect("valid")
                    .expect("agreed");
                (PerMessageDeflate::client(agreement, None), 11)
            } else {
                (PerMessageDeflate::new(agreement(takeover), None), 15)
            };
            let mut out = Vec::new();
            for round in 0..2 {
                out.clear();
                let pieces: Vec<&[u8]> = message.chunks(7000).collect();
                for (i, piece) in pieces.iter().enumerate() {
                    let opcode = if i == 0 {
                        OpCode::Binary
                    } else {
                        OpCode::Continuation
                    };
                    let mask = masked.then_some([1, 2, 3, 4]);
                    pmd.deflate_frame(opcode, piece, i + 1 == pieces.len(), mask, &mut out);
                }
                let frames = split_frames(&out, masked);
                assert_eq!(frames.len(), pieces.len());
                // RFC 7692 §6: RSV1 on the first frame only; FIN on the last only.
                assert_eq!(frames[0].0, 0x42);
                assert!(frames[1..frames.len() - 1].iter().all(|f| f.0 == 0x00));
                assert_eq!(frames[frames.len() - 1].0, 0x80);
                let joined: Vec<u8> = frames.iter().flat_map(|f| f.1.clone()).collect();
                assert!(joined.len() * 5 < message.len(), "{} bytes", joined.len());
                // An independent inflater with the agreed window reads it back, round
                // after round (with takeover the second refers to the first).
                if round == 0 || !takeover {
                    let inflated = inflate_whole(bits, &joined);
                    assert_eq!(inflated, message, "takeover {takeover} masked {masked}");
                }
            }
        }
    }
}

#[test]
fn the_client_role_inflates_the_server_parameters() {
    // An upstream with context takeover: its second "Hello" refers back (RFC 7692 §7.2.3.2).
    let offer = ClientOffer {
        config: config(15, true),
        no_context_takeover: false,
    };
    let agreement = accept_answer([&b"permessage-deflate"[..]], Some(&offer))
        .expect("valid")
        .expect("agreed");
    let mut pmd = PerMessageDeflate::client(agreement, None);
    assert_eq!(inflate(&mut pmd, &HELLO, 1024), Ok(b"Hello".to_vec()));
    assert_eq!(inflate(&mut pmd, &HELLO_AGAIN, 1024), Ok(b"Hello".to_vec()));
    // Without it (the no-context-takeover offer), each message stands alone.
    let offer = ClientOffer {
        no_context_takeover: true,
        ..offer
    };
    let answer = b"permessage-deflate; server_no_context_takeover";
    let agreement = accept_answer([&answer[..]], Some(&offer))
        .expect("valid")
        .expect("agreed");
    let mut pmd = PerMessageDeflate::client(agreement, None);
    assert_eq!(agreement.state_cost_as(Role::Client), 0);
    assert_eq!(inflate(&mut pmd, &HELLO, 1024), Ok(b"Hello".to_vec()));
    assert!(inflate(&mut pmd, &HELLO_AGAIN, 1024).is_err());
    // Our window of 8 bits: nothing goes out compressed.
    let agreement = accept_answer(
        [&b"permessage-deflate; server_no_context_takeover; client_max_window_bits=8"[..]],
        Some(&offer),
    )
    .expect("valid")
    .expect("agreed");
    assert!(!PerMessageDeflate::client(agreement, None).compresses(1 << 20));
}

#[test]
fn a_ticket_shrinks_to_what_the_answer_keeps() {
    let budget = MemoryBudget::new(1000);
    let ticket = budget.reserve(600).expect("fits");
    let ticket = ticket.shrink(200).expect("some left");
    assert_eq!(budget.used(), 200);
    assert!(ticket.shrink(0).is_none());
    assert_eq!(budget.used(), 0);
}
