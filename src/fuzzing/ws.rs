//! Entry points for fuzz targets and the corpus test: each drives a sans-IO core over
//! arbitrary bytes and asserts its invariants (a failed assertion is the finding).

use std::time::{Duration, Instant};

use crate::proto::ws::close::{is_valid_received_code, parse_close_payload};
use crate::proto::ws::deflate::{PerMessageDeflate, RSV1_FIELD};
use crate::proto::ws::frame::{
    parse_header, write_header, write_masked_frame, FrameHeader, OpCode, MAX_HEADER_LEN,
};
use crate::proto::ws::message::MessageKind;
use crate::proto::ws::session::{write_message, Session, SessionLimits, SessionState};

/// The origin of a virtual clock for fuzzing and tests: read once, then only offsets from it
/// are used, so runs stay deterministic.
/// Read through `clock::now`, so that it is never before the base of `clock::Tick`.
pub fn virtual_epoch() -> Instant {
    crate::clock::now()
}

/// Checks the server's output frame by frame, across flushes.
#[derive(Debug, Default)]
pub(super) struct OutputChecker {
    /// A close frame was seen: nothing may follow it.
    closed: bool,
    /// With permessage-deflate: the client's view, inflating what the server compressed.
    pub(super) deflate: Option<PerMessageDeflate>,
}

impl OutputChecker {
    /// Asserts the invariants of server output and "flushes" it.
    fn check_and_flush(&mut self, out: &mut Vec<u8>) {
        let mut rest: &[u8] = out;
        while !rest.is_empty() {
            let Ok(Some((header, header_len))) = parse_header(rest) else {
                panic!("server output is not whole frames: {rest:02x?}");
            };
            let len = usize::try_from(header.payload_len).unwrap_or(usize::MAX);
            let Some(payload) = rest.get(header_len..header_len.saturating_add(len)) else {
                panic!("server output ends inside a frame");
            };
            assert!(!self.closed, "a frame was written after the close frame");
            // RFC 6455 §5.1: a server MUST NOT mask.
            assert_eq!(header.mask, None, "server frame is masked");
            let opcode = OpCode::from_u8(header.opcode);
            // RFC 7692 §6: RSV1 only on (the first frame of) a compressed data message.
            let compressed = header.rsv == RSV1_FIELD
                && self.deflate.is_some()
                && matches!(opcode, Some(OpCode::Text | OpCode::Binary));
            assert!(header.rsv == 0 || compressed, "server frame has RSV bits");
            let mut inflated = Vec::new();
            let payload = match self.deflate.as_mut().filter(|_| compressed) {
                Some(client) => {
                    // RFC 7692 §7.2.1: never empty (an empty message is 0x00); the client's
                    // inflate tolerates an empty payload, so it is checked here.
                    assert!(
                        !payload.is_empty(),
                        "the server sent an empty compressed payload"
                    );
                    let result = client.inflate(payload, u64::MAX, &mut inflated);
                    assert!(result.is_ok(), "the server compressed an invalid stream");
                    &inflated[..]
                }
                None => payload,
            };
            assert!(opcode.is_some(), "server wrote a reserved opcode");
            match opcode {
                Some(OpCode::Close) => {
                    assert!(header.fin && payload.len() <= 125);
                    match parse_close_payload(payload) {
                        Ok(Some((code, _))) => {
                            assert!(is_valid_received_code(code), "close code {code}")
                        }
                        Ok(None) => {}
                        Err(e) => panic!("server wrote an invalid close payload: {e:?}"),
                    }
                    self.closed = true;
                }
                Some(OpCode::Ping | OpCode::Pong) => assert!(header.fin && payload.len() <= 125),
                Some(OpCode::Text) => assert!(
                    std::str::from_utf8(payload).is_ok(),
                    "server wrote invalid text"
                ),
                _ => {}
            }
            rest = rest.get(header_len + len..).unwrap_or(&[]);
        }
        out.clear();
    }
}

/// A minimal I/O shell around a [`Session`] with the echo backend.
pub(super) struct Driver {
    pub(super) session: Session,
    limits: SessionLimits,
    pending: Vec<u8>,
    out: Vec<u8>,
    pub(super) checker: OutputChecker,
    delivered: usize,
}

impl Driver {
    pub(super) fn new(limits: SessionLimits, now: Instant) -> Driver {
        Driver {
            session: Session::new(limits, now),
            limits,
            pending: Vec::new(),
            out: Vec::new(),
            checker: OutputChecker::default(),
            delivered: 0,
        }
    }

    /// Appends `bytes` and runs the session until it consumes nothing more, flushing the
    /// output only when backpressure stops it (so that the stop is exercised).
    pub(super) fn feed(&mut self, bytes: &[u8], now: Instant) {
        self.pending.extend_from_slice(bytes);
        let max_message = self.limits.max_message;
        loop {
            let before = self.pending.clone();
            let was_open = self.session.state() == SessionState::Open;
            let delivered = &mut self.delivered;
            let consumed = self.session.handle_input(
                &mut self.pending,
                now,
                &mut self.out,
                |kind, payload, out| {
                    assert!(was_open, "on_message outside Open");
                    assert!(
                        payload.len() as u64 <= max_message,
                        "message over max_message"
                    );
                    if kind == MessageKind::Text {
                        assert!(
                            std::str::from_utf8(payload).is_ok(),
                            "invalid text delivered"
                        );
                    }
                    *delivered += 1;
                    write_message(out, kind, payload);
                },
            );
            assert!(
                consumed <= self.pending.len(),
                "consumed more than the input"
            );
            assert_eq!(
                self.pending.get(consumed..),
                before.get(consumed..),
                "unconsumed bytes were modified"
            );
            assert!(
                self.session.buffered() as u64 <= max_message,
                "buffer over max_message"
            );
            self.pending.drain(..consumed);
            if consumed == 0 {
                let blocked =
                    self.limits.write_buffer > 0 && self.out.len() >= self.limits.write_buffer;
                self.flush();
                if !blocked || self.session.state() != SessionState::Open {
                    break;
                }
            }
        }
        self.flush();
    }

    pub(super) fn timeout(&mut self, now: Instant) {
        self.session.handle_timeout(now, &mut self.out);
        self.flush();
    }

    fn flush(&mut self) {
        self.checker.check_and_flush(&mut self.out);
        assert_eq!(
            self.checker.closed,
            self.session.close_sent().is_some(),
            "close frame and state disagree"
        );
        if self.session.state() == SessionState::Closed {
            assert_eq!(self.session.poll_timeout(), None);
        }
        if self.session.state() != SessionState::Open {
            assert_eq!(self.session.buffered(), 0);
        }
    }
}

/// Limits for fuzzing: small, so that every limit is reachable; `flags` picks the variants.
pub(super) fn fuzz_limits(flags: u8) -> SessionLimits {
    SessionLimits {
        max_frame: if flags & 0x01 != 0 { 64 } else { 700 },
        max_message: if flags & 0x02 != 0 { 100 } else { 1500 },
        idle_timeout: Duration::from_secs(10),
        messages_per_sec: if flags & 0x04 != 0 { 8 } else { 0 },
        bytes_per_sec: if flags & 0x08 != 0 { 600 } else { 0 },
        write_buffer: if flags & 0x10 != 0 { 40 } else { 4096 },
        close_linger: Duration::from_secs(1),
    }
}

/// Drives a [`Session`] over `data`: byte 0 picks the limits, byte 1 the split point and the
/// chunking of the second part; asserts the session's invariants (see `Driver`).
pub fn fuzz_session(data: &[u8]) {
    let [flags, split_at, body @ ..] = data else {
        return;
    };
    let t0 = virtual_epoch();
    let mut driver = Driver::new(fuzz_limits(*flags), t0);
    let split = usize::from(*split_at) * body.len() / 255;
    let (first, second) = body.split_at(split.min(body.len()));
    driver.feed(first, t0);
    driver.timeout(t0 + Duration::from_secs(6));
    let chunk = match flags >> 5 {
        0 => 1,
        1 => 3,
        2 => 17,
        _ => second.len().max(1),
    };
    for (i, piece) in second.chunks(chunk).enumerate() {
        let now = t0 + Duration::from_secs(6) + Duration::from_millis(i as u64);
        driver.feed(piece, now);
    }
    // Let every timer run out: ping, idle close, linger.
    for secs in [20, 40, 60, 80] {
        driver.timeout(t0 + Duration::from_secs(secs));
    }
    assert_eq!(
        driver.session.state(),
        SessionState::Closed,
        "timers must end every session"
    );
}

/// Parses `data` as a frame header; asserts header_len <= data.len(), that the push parser is
/// consistent on prefixes, and that write_header round-trips for server frames.
pub fn fuzz_frame_header(data: &[u8]) {
    let parsed = parse_header(data);
    let (header, header_len) = match parsed {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            assert!(
                data.len() < MAX_HEADER_LEN,
                "a {MAX_HEADER_LEN}-byte buffer always holds a header"
            );
            return;
        }
        Err(e) => {
            assert_eq!(e, crate::proto::error::ProtocolError::LengthTopBitSet);
            return;
        }
    };
    assert!((2..=MAX_HEADER_LEN).contains(&header_len) && header_len <= data.len());
    assert!(header.payload_len >> 63 == 0);
    // Trailing bytes never change the result; shorter prefixes are incomplete.
    let head = data.get(..header_len).unwrap_or(&[]);
    assert_eq!(parse_header(head), Ok(Some((header, header_len))));
    for cut in 0..header_len {
        assert_eq!(parse_header(data.get(..cut).unwrap_or(&[])), Ok(None));
    }
    let Some(opcode) = OpCode::from_u8(header.opcode) else {
        return;
    };
    let Ok(len) = usize::try_from(header.payload_len) else {
        return;
    };
    let mut out = Vec::new();
    write_header(&mut out, header.fin, opcode, len);
    let minimal = match header.payload_len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    };
    assert_eq!(
        out.len(),
        minimal,
        "server headers use the minimal length encoding"
    );
    let expected = FrameHeader {
        rsv: 0,
        mask: None,
        ..header
    };
    assert_eq!(parse_header(&out), Ok(Some((expected, minimal))));
    if header.rsv == 0 && header.mask.is_none() && header_len == minimal {
        assert_eq!(
            out, head,
            "a canonical server header is written back byte for byte"
        );
    }
    // Client frames round-trip too (small payloads only).
    if len <= 4096 {
        let key = header.mask.unwrap_or([1, 2, 3, 4]);
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        out.clear();
        write_masked_frame(&mut out, header.fin, opcode, &payload, key);
        let with_mask = FrameHeader {
            mask: Some(key),
            ..expected
        };
        assert_eq!(parse_header(&out), Ok(Some((with_mask, minimal + 4))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: deterministic, no dependencies.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    const TEXTS: [&str; 6] = [
        "Hello",
        "κόσμε",
        "😀 emoji",
        "",
        "Hello-µ@ßöäüàá-UTF-8!!",
        "\u{10FFFF}",
    ];
    const CODES: [u16; 12] = [
        1000, 1001, 1002, 1005, 1006, 1011, 1016, 3000, 4999, 5000, 0, 999,
    ];

    /// A mostly well-formed client stream, with occasional violations of every kind.
    fn random_stream(rng: &mut Rng) -> Vec<u8> {
        let mut out = Vec::new();
        let frames = 1 + rng.below(12);
        for _ in 0..frames {
            let opcode = match rng.below(20) {
                0..=4 => OpCode::Text,
                5..=8 => OpCode::Binary,
                9..=12 => OpCode::Continuation,
                13..=15 => OpCode::Ping,
                16 => OpCode::Pong,
                _ => OpCode::Close,
            };
            let fin = !rng.chance(30);
            let mut payload = match opcode {
                OpCode::Text | OpCode::Continuation if rng.chance(70) => {
                    let text = TEXTS[rng.below(TEXTS.len() as u64) as usize];
                    text.repeat(1 + rng.below(40) as usize).into_bytes()
                }
                OpCode::Close => {
                    let mut p = CODES[rng.below(CODES.len() as u64) as usize]
                        .to_be_bytes()
                        .to_vec();
                    p.extend_from_slice(TEXTS[rng.below(TEXTS.len() as u64) as usize].as_bytes());
                    p.truncate(rng.below(p.len() as u64 + 1) as usize);
                    p
                }
                _ => {
                    let len = match rng.below(10) {
                        0 => 126 + rng.below(5),
                        1 => 600 + rng.below(200),
                        _ => rng.below(40),
                    };
                    rng.bytes(len as usize)
                }
            };
            // Occasionally cut a text payload inside a character, or corrupt a byte.
            if rng.chance(10) && !payload.is_empty() {
                let i = rng.below(payload.len() as u64) as usize;
                payload[i] = rng.next() as u8;
            }
            if rng.chance(5) {
                payload.truncate(rng.below(payload.len() as u64 + 1) as usize);
            }
            let start = out.len();
            let key = (rng.next() as u32).to_ne_bytes();
            write_masked_frame(&mut out, fin, opcode, &payload, key);
            // Rare header violations: RSV bits, reserved opcodes, no mask, huge lengths.
            match rng.below(40) {
                0 => out[start] |= 0x10 << rng.below(3),
                1 => out[start] = (out[start] & 0xF0) | [3u8, 7, 0xB, 0xF][rng.below(4) as usize],
                2 => out[start + 1] &= 0x7F,
                3 => {
                    out.truncate(start);
                    out.extend_from_slice(&[0x82, 0xFF]);
                    out.extend_from_slice(&(rng.next() | (1 << 40)).to_be_bytes());
                    out.extend_from_slice(&key);
                }
                _ => {}
            }
        }
        out
    }

    fn drive_in_random_chunks(rng: &mut Rng, stream: &[u8], flags: u8) {
        let t0 = virtual_epoch();
        let mut driver = Driver::new(fuzz_limits(flags), t0);
        let mut rest = stream;
        let mut now = t0;
        while !rest.is_empty() {
            let size = match rng.below(4) {
                0 => 1,
                1 => 1 + rng.below(8) as usize,
                2 => 1 + rng.below(200) as usize,
                _ => rest.len(),
            };
            let (piece, tail) = rest.split_at(size.min(rest.len()));
            driver.feed(piece, now);
            rest = tail;
            now += Duration::from_millis(rng.below(300));
            if rng.chance(5) {
                driver.timeout(now);
            }
            if rng.chance(2) {
                // A gateway decision (shutdown, slow consumer) at any point, even mid-frame.
                driver.session.close(1001, "going away", &mut driver.out);
                driver.flush();
            }
        }
        for secs in [20, 40, 60, 80] {
            driver.timeout(now + Duration::from_secs(secs));
        }
        assert_eq!(driver.session.state(), SessionState::Closed);
    }

    #[test]
    fn random_streams_keep_the_invariants() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut delivered = 0;
        for round in 0..3000 {
            let stream = random_stream(&mut rng);
            let flags = rng.next() as u8;
            drive_in_random_chunks(&mut rng, &stream, flags);
            // Truncated at a random point.
            let cut = rng.below(stream.len() as u64 + 1) as usize;
            drive_in_random_chunks(&mut rng, &stream[..cut], flags);
            // Through the fuzz entry point too.
            let mut data = vec![flags, rng.next() as u8];
            data.extend_from_slice(&stream);
            fuzz_session(&data);
            if round % 100 == 0 {
                let t0 = virtual_epoch();
                let mut d = Driver::new(fuzz_limits(0), t0);
                d.feed(&stream, t0);
                delivered += d.delivered;
            }
        }
        assert!(delivered > 0, "the generator reaches message delivery");
    }

    #[test]
    fn random_bytes_keep_the_invariants() {
        let mut rng = Rng(0x0123_4567_89AB_CDEF);
        for _ in 0..3000 {
            let len = rng.below(300) as usize;
            let mut data = rng.bytes(len);
            // Set the mask bit often so that random bytes get past the first header.
            if data.len() > 3 && rng.chance(70) {
                data[3] |= 0x80;
            }
            fuzz_session(&data);
            let flags = rng.next() as u8;
            drive_in_random_chunks(&mut rng, &data, flags);
            fuzz_frame_header(&data);
        }
    }

    #[test]
    fn frame_header_round_trips() {
        let mut rng = Rng(42);
        for _ in 0..20_000 {
            let len = rng.below(16) as usize;
            fuzz_frame_header(&rng.bytes(len));
        }
        for bytes in [
            &[0x81u8, 0x05][..],
            &[0x82, 0x7E, 0x01, 0x00],
            &[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0],
            &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d],
            &[0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0],
            &[0x82, 0x7E, 0x00, 0x05],
            &[0x8F, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
        ] {
            fuzz_frame_header(bytes);
        }
    }

    #[test]
    fn fuzz_entry_points_accept_anything_short() {
        fuzz_session(&[]);
        fuzz_session(&[0]);
        fuzz_session(&[0xFF, 0xFF]);
        fuzz_frame_header(&[]);
        fuzz_frame_header(&[0x81]);
    }
}
