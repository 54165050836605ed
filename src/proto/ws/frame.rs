//! RFC 6455 §5.2 frame headers: a push parser over borrowed bytes, and writers for server
//! (unmasked) and client (masked) frames.

use super::mask::apply_mask;
use crate::proto::error::ProtocolError;

/// RFC 6455 §5.2 opcodes that this crate knows; the others are reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation = 0,
    /// 0x1: first frame of a text message.
    Text = 1,
    /// 0x2: first frame of a binary message.
    Binary = 2,
    /// 0x8: connection close.
    Close = 8,
    /// 0x9: ping.
    Ping = 9,
    /// 0xA: pong.
    Pong = 10,
}

impl OpCode {
    /// The opcode for a raw 4-bit value, or `None` when it is reserved (0x3-0x7, 0xB-0xF).
    pub fn from_u8(raw: u8) -> Option<OpCode> {
        match raw {
            0 => Some(OpCode::Continuation),
            1 => Some(OpCode::Text),
            2 => Some(OpCode::Binary),
            8 => Some(OpCode::Close),
            9 => Some(OpCode::Ping),
            10 => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// RFC 6455 §5.5: control frames have the high bit of the opcode set.
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// A parsed frame header, fields as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the final fragment of a message.
    pub fin: bool,
    /// RSV1..RSV3 as the low 3 bits.
    pub rsv: u8,
    /// The raw 4-bit opcode (may be reserved; see [`OpCode::from_u8`]).
    pub opcode: u8,
    /// The masking key, when the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// The payload length as decoded (never has its top bit set).
    pub payload_len: u64,
}

/// Largest payload length encoded in the 7-bit field.
const MAX_SHORT_LEN: u64 = 125;
/// 7-bit length value announcing a 16-bit extended length.
const LEN_16: u8 = 126;
/// 7-bit length value announcing a 64-bit extended length.
const LEN_64: u8 = 127;
/// The longest possible header: 2 + 8 (length) + 4 (mask).
pub const MAX_HEADER_LEN: usize = 14;

/// Push parser: Ok(None) if incomplete (consumes nothing); Ok(Some((header, header_len))).
pub fn parse_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
    let Some((&[b0, b1], rest)) = buf.split_first_chunk::<2>() else {
        return Ok(None);
    };
    let (payload_len, rest, mut header_len) = match b1 & 0x7f {
        LEN_16 => match rest.split_first_chunk::<2>() {
            Some((len, rest)) => (u64::from(u16::from_be_bytes(*len)), rest, 4),
            None => return Ok(None),
        },
        LEN_64 => match rest.split_first_chunk::<8>() {
            Some((len, rest)) => {
                let len = u64::from_be_bytes(*len);
                // RFC 6455 §5.2: "the most significant bit MUST be 0".
                if len >> 63 != 0 {
                    return Err(ProtocolError::LengthTopBitSet);
                }
                (len, rest, 10)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), rest, 2),
    };
    let mask = if b1 & 0x80 != 0 {
        match rest.first_chunk::<4>() {
            Some(key) => {
                header_len += 4;
                Some(*key)
            }
            None => return Ok(None),
        }
    } else {
        None
    };
    let header = FrameHeader {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 0x7,
        opcode: b0 & 0x0f,
        mask,
        payload_len,
    };
    Ok(Some((header, header_len)))
}

/// Appends a header with the minimal length encoding (RFC 6455 §5.2) and an optional mask key.
fn put_header(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: OpCode,
    payload_len: usize,
    mask: Option<[u8; 4]>,
) {
    let b0 = (u8::from(fin) << 7) | opcode as u8;
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    // usize is at most 64 bits on every supported target.
    let len = payload_len as u64;
    if len <= MAX_SHORT_LEN {
        out.extend_from_slice(&[b0, mask_bit | len as u8]);
    } else if let Ok(len16) = u16::try_from(len) {
        out.extend_from_slice(&[b0, mask_bit | LEN_16]);
        out.extend_from_slice(&len16.to_be_bytes());
    } else {
        out.extend_from_slice(&[b0, mask_bit | LEN_64]);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
}

/// Server frames: unmasked, minimal length encoding.
pub fn write_header(out: &mut Vec<u8>, fin: bool, opcode: OpCode, payload_len: usize) {
    // RFC 6455 §5.1: "A server MUST NOT mask any frames that it sends to the client."
    put_header(out, fin, opcode, payload_len, None);
}

/// Writes a whole server frame (header and payload).
pub fn write_frame(out: &mut Vec<u8>, fin: bool, opcode: OpCode, payload: &[u8]) {
    out.reserve(MAX_HEADER_LEN + payload.len());
    write_header(out, fin, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// Client frames (for tests, fuzzing and the later upstream proxy): masked with `key`.
pub fn write_masked_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    key: [u8; 4],
) {
    out.reserve(MAX_HEADER_LEN + payload.len());
    // RFC 6455 §5.3: a client masks every frame it sends.
    put_header(out, fin, opcode, payload.len(), Some(key));
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(body) = out.get_mut(start..) {
        apply_mask(body, key, 0);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // RFC 6455 §5.7, verbatim.
    /// A single-frame unmasked text message ("Hello").
    pub(crate) const UNMASKED_HELLO: [u8; 7] = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    /// A single-frame masked text message ("Hello").
    pub(crate) const MASKED_HELLO: [u8; 11] = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    /// A fragmented unmasked text message: first frame ("Hel").
    pub(crate) const FRAGMENT_HEL: [u8; 5] = [0x01, 0x03, 0x48, 0x65, 0x6c];
    /// A fragmented unmasked text message: final frame ("lo").
    pub(crate) const FRAGMENT_LO: [u8; 4] = [0x80, 0x02, 0x6c, 0x6f];
    /// Unmasked Ping request with body "Hello".
    pub(crate) const UNMASKED_PING_HELLO: [u8; 7] = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    /// Masked Ping response (Pong) with body "Hello".
    pub(crate) const MASKED_PONG_HELLO: [u8; 11] = [
        0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    /// Header of a 256-byte binary message in a single unmasked frame.
    pub(crate) const BINARY_256_HEADER: [u8; 4] = [0x82, 0x7E, 0x01, 0x00];
    /// Header of a 64KiB binary message in a single unmasked frame.
    pub(crate) const BINARY_64K_HEADER: [u8; 10] =
        [0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00];
    /// The masking key of the §5.7 masked examples.
    pub(crate) const RFC_KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn parse_whole(buf: &[u8]) -> (FrameHeader, usize) {
        match parse_header(buf) {
            Ok(Some(h)) => h,
            other => panic!("expected a header, got {other:?}"),
        }
    }

    #[test]
    fn rfc_unmasked_hello() {
        let (h, n) = parse_whole(&UNMASKED_HELLO);
        assert_eq!(n, 2);
        assert_eq!(
            h,
            FrameHeader {
                fin: true,
                rsv: 0,
                opcode: 1,
                mask: None,
                payload_len: 5
            }
        );
        assert_eq!(&UNMASKED_HELLO[n..], b"Hello");
        let mut out = Vec::new();
        write_frame(&mut out, true, OpCode::Text, b"Hello");
        assert_eq!(out, UNMASKED_HELLO);
    }

    #[test]
    fn rfc_masked_hello() {
        let (h, n) = parse_whole(&MASKED_HELLO);
        assert_eq!(n, 6);
        assert_eq!(
            h,
            FrameHeader {
                fin: true,
                rsv: 0,
                opcode: 1,
                mask: Some(RFC_KEY),
                payload_len: 5
            }
        );
        let mut payload = MASKED_HELLO[n..].to_vec();
        apply_mask(&mut payload, RFC_KEY, 0);
        assert_eq!(payload, b"Hello");
        let mut out = Vec::new();
        write_masked_frame(&mut out, true, OpCode::Text, b"Hello", RFC_KEY);
        assert_eq!(out, MASKED_HELLO);
    }

    #[test]
    fn rfc_fragmented_hel_lo() {
        let (h, n) = parse_whole(&FRAGMENT_HEL);
        assert_eq!(
            h,
            FrameHeader {
                fin: false,
                rsv: 0,
                opcode: 1,
                mask: None,
                payload_len: 3
            }
        );
        assert_eq!(&FRAGMENT_HEL[n..], b"Hel");
        let (h, n) = parse_whole(&FRAGMENT_LO);
        assert_eq!(
            h,
            FrameHeader {
                fin: true,
                rsv: 0,
                opcode: 0,
                mask: None,
                payload_len: 2
            }
        );
        assert_eq!(&FRAGMENT_LO[n..], b"lo");
        let mut out = Vec::new();
        write_frame(&mut out, false, OpCode::Text, b"Hel");
        assert_eq!(out, FRAGMENT_HEL);
        out.clear();
        write_frame(&mut out, true, OpCode::Continuation, b"lo");
        assert_eq!(out, FRAGMENT_LO);
    }

    #[test]
    fn rfc_ping_and_pong() {
        let (h, n) = parse_whole(&UNMASKED_PING_HELLO);
        assert_eq!(
            h,
            FrameHeader {
                fin: true,
                rsv: 0,
                opcode: 9,
                mask: None,
                payload_len: 5
            }
        );
        assert_eq!(&UNMASKED_PING_HELLO[n..], b"Hello");
        let (h, n) = parse_whole(&MASKED_PONG_HELLO);
        assert_eq!(
            h,
            FrameHeader {
                fin: true,
                rsv: 0,
                opcode: 10,
                mask: Some(RFC_KEY),
                payload_len: 5
            }
        );
        assert_eq!(n, 6);
        let mut out = Vec::new();
        write_frame(&mut out, true, OpCode::Ping, b"Hello");
        assert_eq!(out, UNMASKED_PING_HELLO);
        out.clear();
        write_masked_frame(&mut out, true, OpCode::Pong, b"Hello", RFC_KEY);
        assert_eq!(out, MASKED_PONG_HELLO);
    }

    #[test]
    fn rfc_256_and_64k_binary_headers() {
        let (h, n) = parse_whole(&BINARY_256_HEADER);
        assert_eq!(
            (h.fin, h.opcode, h.mask, h.payload_len, n),
            (true, 2, None, 256, 4)
        );
        let mut out = Vec::new();
        write_header(&mut out, true, OpCode::Binary, 256);
        assert_eq!(out, BINARY_256_HEADER);

        let (h, n) = parse_whole(&BINARY_64K_HEADER);
        assert_eq!(
            (h.fin, h.opcode, h.mask, h.payload_len, n),
            (true, 2, None, 65536, 10)
        );
        out.clear();
        write_header(&mut out, true, OpCode::Binary, 65536);
        assert_eq!(out, BINARY_64K_HEADER);

        // Whole frames too.
        let payload = vec![0xAB; 65536];
        out.clear();
        write_frame(&mut out, true, OpCode::Binary, &payload);
        assert_eq!(&out[..10], &BINARY_64K_HEADER);
        assert_eq!(out.len(), 10 + 65536);
    }

    #[test]
    fn length_encoding_boundaries_are_minimal() {
        for (len, header_len) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let mut out = Vec::new();
            write_header(&mut out, true, OpCode::Binary, len);
            assert_eq!(out.len(), header_len, "len {len}");
            let (h, n) = parse_whole(&out);
            assert_eq!((h.payload_len, n), (len as u64, header_len));
        }
    }

    #[test]
    fn incomplete_headers_are_none_at_every_prefix() {
        let mut full = Vec::new();
        put_header(&mut full, true, OpCode::Binary, 70000, Some([1, 2, 3, 4]));
        assert_eq!(full.len(), 14);
        for cut in 0..full.len() {
            assert_eq!(parse_header(&full[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(parse_header(&full).map(|h| h.map(|(_, n)| n)), Ok(Some(14)));
    }

    #[test]
    fn top_bit_of_64_bit_length_is_an_error() {
        let buf = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse_header(&buf), Err(ProtocolError::LengthTopBitSet));
        // Even before the mask key arrives.
        assert_eq!(
            parse_header(&[0x82, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(ProtocolError::LengthTopBitSet)
        );
        // The largest legal length parses.
        let ok = [0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(parse_whole(&ok).0.payload_len, u64::MAX >> 1);
    }

    #[test]
    fn raw_fields_are_reported_not_judged() {
        // RSV bits and reserved opcodes are the session's business, not the parser's.
        let (h, _) = parse_whole(&[0xF3, 0x00]);
        assert_eq!((h.fin, h.rsv, h.opcode), (true, 7, 3));
        // Non-minimal length encodings are accepted (the MUST is on the sender).
        let (h, n) = parse_whole(&[0x82, 0x7E, 0x00, 0x05]);
        assert_eq!((h.payload_len, n), (5, 4));
        assert_eq!(OpCode::from_u8(3), None);
        assert_eq!(OpCode::from_u8(0xB), None);
        assert_eq!(OpCode::from_u8(0xA), Some(OpCode::Pong));
        assert!(OpCode::Close.is_control() && !OpCode::Continuation.is_control());
    }
}
