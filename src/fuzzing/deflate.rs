//! The session with permessage-deflate negotiated (RFC 7692), under random compressed and
//! uncompressed frames: the bounds hold (nothing delivered or buffered past
//! `max_message`, text always UTF-8), RSV1 rules are kept both ways, and what the server
//! compresses inflates.

use std::time::Duration;

use super::ws::{fuzz_limits, Driver};
use crate::proto::ws::deflate::{negotiate, Agreement, DeflateConfig, PerMessageDeflate, RSV1};
use crate::proto::ws::frame::{write_masked_frame, OpCode};
use crate::proto::ws::session::SessionState;

/// The agreement for `mode`: context takeover (bit 0), a narrow window (bit 1), min_size
/// 0 or 64 (bit 2).
fn agreement(mode: u8) -> Agreement {
    let config = DeflateConfig {
        server_max_window_bits: if mode & 0x02 != 0 { 9 } else { 15 },
        context_takeover: mode & 0x01 != 0,
        min_size: if mode & 0x04 != 0 { 64 } else { 0 },
    };
    let offer: &[u8] = b"permessage-deflate; client_max_window_bits";
    let Ok(Some(agreement)) = negotiate([offer], &config) else {
        panic!("a plain offer is always answered");
    };
    agreement
}

/// The client's side of `agreement`: it inflates what the server sends.
fn client_view(a: &Agreement) -> Agreement {
    Agreement {
        client_no_context_takeover: a.server_no_context_takeover,
        server_no_context_takeover: a.client_no_context_takeover,
        client_max_window_bits: Some(a.server_max_window_bits),
        min_size: 0,
        ..*a
    }
}

/// Turns `script` into client frames: each op is `[control, len, payload...]`; control
/// picks FIN, opcode, RSV1, whether the payload is compressed for real (with the client's
/// own compressor, context kept or not like the agreement) or sent as raw bytes, a
/// repetition factor (bombs), and a byte to corrupt.
fn frames(script: &[u8], agreement: &Agreement) -> Vec<u8> {
    // The client compresses like the server would with the roles swapped.
    let mut sender = PerMessageDeflate::new(
        Agreement {
            server_no_context_takeover: agreement.client_no_context_takeover,
            min_size: 0,
            ..*agreement
        },
        None,
    );
    let mut out = Vec::new();
    let mut rest = script;
    while let [control, len, tail @ ..] = rest {
        let take = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(take);
        rest = next;
        let fin = control & 0x01 == 0;
        let opcode = match (control >> 1) & 0x07 {
            0 | 1 => OpCode::Text,
            2 | 3 => OpCode::Binary,
            4 | 5 => OpCode::Continuation,
            6 => OpCode::Ping,
            _ => OpCode::Close,
        };
        let rsv1 = control & 0x10 != 0;
        let real = control & 0x20 != 0;
        // A bomb: the payload repeated up to 4096 times before compression.
        let repeat = if control & 0x40 != 0 { 4096 } else { 1 };
        let mut body = if real && rsv1 {
            let plain = payload.repeat(repeat);
            let mut staging = Vec::new();
            crate::proto::ws::frame::write_frame(&mut staging, true, OpCode::Binary, &plain);
            let mut framed = Vec::new();
            sender.send_staged(&mut staging, &mut framed);
            let Ok(Some((_, header_len))) = crate::proto::ws::frame::parse_header(&framed) else {
                panic!("our own frame parses");
            };
            framed.get(header_len..).unwrap_or_default().to_vec()
        } else {
            payload.to_vec()
        };
        if control & 0x80 != 0 && !body.is_empty() {
            let i = usize::from(*len) % body.len();
            if let Some(b) = body.get_mut(i) {
                *b ^= 0x5a;
            }
        }
        let start = out.len();
        write_masked_frame(&mut out, fin, opcode, &body, [0x11, 0x22, 0x33, 0x44]);
        if rsv1 {
            if let Some(first) = out.get_mut(start) {
                *first |= RSV1;
            }
        }
    }
    out
}

/// Drives a [`crate::proto::ws::session::Session`] with permessage-deflate over `data`:
/// byte 0 picks the limits (as [`super::fuzz_session`]), byte 1 the agreement, byte 2 the
/// chunking; byte 3 says whether the rest is a frame script (even) or raw bytes (odd).
pub fn fuzz_session_deflate(data: &[u8]) {
    let [flags, mode, chunking, kind, body @ ..] = data else {
        return;
    };
    let agreement = agreement(*mode);
    let input = if kind & 1 == 0 {
        frames(body, &agreement)
    } else {
        body.to_vec()
    };
    let t0 = super::virtual_epoch();
    let mut driver = Driver::new(fuzz_limits(*flags), t0);
    driver
        .session
        .set_deflate(PerMessageDeflate::new(agreement, None));
    driver.checker.deflate = Some(PerMessageDeflate::new(client_view(&agreement), None));
    let chunk = match chunking % 4 {
        0 => 1,
        1 => 7,
        2 => 100,
        _ => input.len().max(1),
    };
    for (i, piece) in input.chunks(chunk).enumerate() {
        driver.feed(piece, t0 + Duration::from_millis(i as u64));
    }
    for secs in [20, 40, 60, 80] {
        driver.timeout(t0 + Duration::from_secs(secs));
    }
    assert_eq!(
        driver.session.state(),
        SessionState::Closed,
        "timers must end every session"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripted_streams_hold_the_bounds() {
        // xorshift64 over many short scripts, every mode.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..300u32 {
            let mut data = vec![
                round as u8,
                (round / 3) as u8,
                (round / 7) as u8,
                (round % 5) as u8 & 0xfe,
            ];
            for _ in 0..(x % 64) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                data.push(x as u8);
            }
            fuzz_session_deflate(&data);
        }
    }

    #[test]
    fn a_compressed_echo_round_trips_through_the_checker() {
        // Text "Hello" compressed for real, FIN, RSV1; then a bomb; every mode.
        for mode in 0..8 {
            fuzz_session_deflate(&[0, mode, 3, 0, 0x30, 5, b'H', b'e', b'l', b'l', b'o']);
            fuzz_session_deflate(&[0, mode, 3, 0, 0x70, 4, b'z', b'z', b'z', b'z']);
        }
    }
}
