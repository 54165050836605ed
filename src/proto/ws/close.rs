//! RFC 6455 §5.5.1 close frame payloads and §7.4 status codes.

use super::frame::{write_header, OpCode};
use crate::proto::error::ProtocolError;

/// RFC 6455 §5.5: a control payload is at most 125 bytes, so a reason is at most 123.
pub const MAX_CLOSE_REASON: usize = 123;

/// RFC 6455 §7.4.1/§7.4.2: may this code appear in a received close frame? (1000-1003, 1007-1014, 3000-4999 yes; 1004-1006, 1015, <1000, 1016-2999, >=5000 no)
pub fn is_valid_received_code(code: u16) -> bool {
    // §7.4.1: 1004 is reserved; 1005, 1006 and 1015 MUST NOT be sent in a close frame.
    // 1012-1014 were registered with IANA after the RFC (restart, try again later, bad
    // gateway). §7.4.2: 0-999 are unused, 1016-2999 are reserved for future revisions,
    // 3000-3999 are registered by libraries and frameworks, 4000-4999 are private use.
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Empty -> Ok(None); 1 byte -> CloseFrameTooShort; bad code -> InvalidCloseCode; reason not UTF-8 -> InvalidCloseReason.
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<(u16, &str)>, ProtocolError> {
    // RFC 6455 §5.5.1: "If there is a body, the first two bytes of the body MUST be a
    // 2-byte unsigned integer (in network byte order) representing a status code".
    let Some((code, reason)) = payload.split_first_chunk::<2>() else {
        return if payload.is_empty() {
            Ok(None)
        } else {
            Err(ProtocolError::CloseFrameTooShort)
        };
    };
    let code = u16::from_be_bytes(*code);
    if !is_valid_received_code(code) {
        return Err(ProtocolError::InvalidCloseCode(code));
    }
    // RFC 6455 §5.5.1: the rest of the body is a UTF-8-encoded reason.
    let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidCloseReason)?;
    Ok(Some((code, reason)))
}

/// Writes a close frame; the reason is cut to at most 123 bytes on a char boundary.
pub fn write_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let reason = fit_reason(reason);
    write_header(out, true, OpCode::Close, 2 + reason.len());
    write_close_payload(out, code, reason);
}

/// Writes a close frame's payload only (code, then the reason cut like [`write_close`]),
/// for callers that frame it themselves (a client leg masks it).
pub fn write_close_payload(out: &mut Vec<u8>, code: u16, reason: &str) {
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(fit_reason(reason).as_bytes());
}

/// RFC 6455 §5.5: a control payload is at most 125 bytes, so a reason at most 123, cut on
/// a char boundary so it stays UTF-8.
fn fit_reason(reason: &str) -> &str {
    let mut cut = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    reason.get(..cut).unwrap_or("")
}

/// Writes a close frame with no body (RFC 6455 §5.5.1: "The Close frame MAY contain a body").
pub fn write_empty_close(out: &mut Vec<u8>) {
    write_header(out, true, OpCode::Close, 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ws::frame::parse_header;

    #[test]
    fn received_code_table() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            assert!(is_valid_received_code(code), "{code}");
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!is_valid_received_code(code), "{code}");
        }
    }

    #[test]
    fn parse_payloads() {
        assert_eq!(parse_close_payload(&[]), Ok(None));
        assert_eq!(
            parse_close_payload(&[0x03]),
            Err(ProtocolError::CloseFrameTooShort)
        );
        assert_eq!(parse_close_payload(&[0x03, 0xE8]), Ok(Some((1000, ""))));
        assert_eq!(parse_close_payload(b"\x03\xE9bye"), Ok(Some((1001, "bye"))));
        assert_eq!(
            parse_close_payload(&[0x03, 0xED]),
            Err(ProtocolError::InvalidCloseCode(1005))
        );
        assert_eq!(
            parse_close_payload(&[0x00, 0x00]),
            Err(ProtocolError::InvalidCloseCode(0))
        );
        // Autobahn 7.5.1: a reason with an encoded surrogate (ED A0 80).
        let bad = b"\x03\xE8\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64";
        assert_eq!(
            parse_close_payload(bad),
            Err(ProtocolError::InvalidCloseReason)
        );
        // The code is judged before the reason.
        assert_eq!(
            parse_close_payload(b"\x00\x01\xff"),
            Err(ProtocolError::InvalidCloseCode(1))
        );
        let utf8 = "κόσμε".as_bytes();
        let mut p = vec![0x0F, 0xA0];
        p.extend_from_slice(utf8);
        assert_eq!(parse_close_payload(&p), Ok(Some((4000, "κόσμε"))));
    }

    #[test]
    fn write_round_trips() {
        let mut out = Vec::new();
        write_close(&mut out, 1000, "");
        assert_eq!(out, [0x88, 0x02, 0x03, 0xE8]);
        out.clear();
        write_close(&mut out, 1008, "rate limit");
        let Ok(Some((h, n))) = parse_header(&out) else {
            panic!("header")
        };
        assert_eq!(
            (h.fin, h.opcode, h.mask, h.payload_len),
            (true, 8, None, 12)
        );
        assert_eq!(
            parse_close_payload(&out[n..]),
            Ok(Some((1008, "rate limit")))
        );
        out.clear();
        write_empty_close(&mut out);
        assert_eq!(out, [0x88, 0x00]);
    }

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        let ascii = "a".repeat(200);
        let mut out = Vec::new();
        write_close(&mut out, 1000, &ascii);
        assert_eq!(out.len(), 2 + 2 + 123);
        assert_eq!(out[1], 125);
        // 'é' is 2 bytes: 61 of them are 122 bytes, the 62nd would cross 123.
        let accents = "é".repeat(100);
        out.clear();
        write_close(&mut out, 1000, &accents);
        assert_eq!(usize::from(out[1]), 2 + 122);
        assert_eq!(
            parse_close_payload(&out[2..]),
            Ok(Some((1000, "é".repeat(61).as_str())))
        );
        // A 4-byte char straddling the limit.
        let s = format!("{}{}", "a".repeat(121), "😀");
        out.clear();
        write_close(&mut out, 1000, &s);
        assert_eq!(usize::from(out[1]), 2 + 121);
    }
}
