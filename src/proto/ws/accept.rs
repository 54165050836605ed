//! `Sec-WebSocket-Key` validation and the `Sec-WebSocket-Accept` answer (RFC 6455 §4.2.1, §4.2.2).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// RFC 6455 §1.3: the GUID appended to the client's key before hashing.
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Length of a valid `Sec-WebSocket-Key`: 16 bytes in padded base64.
const KEY_LEN: usize = 24;

/// Number of bytes a valid key decodes to (RFC 6455 §4.1: "a randomly selected 16-byte value").
const KEY_DECODED_LEN: usize = 16;

/// `Sec-WebSocket-Accept` for `sec_websocket_key`: base64(SHA-1(key + GUID)), with no allocation.
pub fn accept_key(sec_websocket_key: &[u8]) -> [u8; 28] {
    // RFC 6455 §4.2.2 step 5.4: concatenate the key (as sent) with the GUID, SHA-1, base64.
    let mut hasher = Sha1::new();
    hasher.update(sec_websocket_key);
    hasher.update(WEBSOCKET_GUID);
    let digest: [u8; 20] = hasher.finalize().into();
    let mut out = [0u8; 28];
    // 20 bytes always encode to exactly 4 * ceil(20 / 3) = 28 padded characters, which is the
    // size of `out`, so this cannot fail; the result is checked in debug builds and by the
    // RFC vector test.
    let written = STANDARD.encode_slice(digest, &mut out);
    debug_assert!(matches!(written, Ok(28)));
    out
}

/// True when `key` is canonical padded base64 that decodes to exactly 16 bytes.
pub fn is_valid_key(key: &[u8]) -> bool {
    // RFC 6455 §4.1: "The request MUST include a header field with the name
    // |Sec-WebSocket-Key|. The value of this header field MUST be a nonce consisting of a
    // randomly selected 16-byte value that has been base64-encoded". 16 bytes encode to 22
    // characters plus "==" padding; anything else is not such a value.
    if key.len() != KEY_LEN {
        return false;
    }
    // `STANDARD` requires canonical padding and rejects non-zero trailing bits, so a key that
    // decodes but is not the one encoding of its 16 bytes (e.g. "...Q==" vs "...R==") fails.
    let mut decoded = [0u8; 18];
    matches!(
        STANDARD.decode_slice(key, &mut decoded),
        Ok(KEY_DECODED_LEN)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_section_1_3_vector() {
        // RFC 6455 §1.3, verbatim: "the server would ... return the value
        // "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in the |Sec-WebSocket-Accept| header field".
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn rfc6455_vector_key_is_valid() {
        assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
    }

    #[test]
    fn accept_of_other_key_differs() {
        assert_ne!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZR=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn valid_keys_of_all_zero_and_all_one_bytes() {
        assert!(is_valid_key(b"AAAAAAAAAAAAAAAAAAAAAA=="));
        assert!(is_valid_key(b"/////////////////////w=="));
    }

    #[test]
    fn bad_lengths() {
        assert!(!is_valid_key(b""));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ="));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ"));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ==="));
        // 15 and 17 decoded bytes, correctly encoded.
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25j"));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQAB"));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZUFB"));
        // 18 bytes: 24 characters without padding, decodes to more than 16.
        assert!(!is_valid_key(b"AAAAAAAAAAAAAAAAAAAAAAAA"));
    }

    #[test]
    fn bad_characters() {
        // base64url alphabet is not the standard one.
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZ-=="));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25j_Q=="));
        // Whitespace and stray bytes inside.
        assert!(!is_valid_key(b"dGhlIHNhbXBs ZSBub25jZQ="));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ\r\n"));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ\0="));
        assert!(!is_valid_key("dGhlIHNhbXBsZSBub25jZé=".as_bytes()));
        // Padding in the middle.
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBu=25jZQ=="));
    }

    #[test]
    fn non_canonical_padding_and_trailing_bits() {
        // Same 16 bytes with non-zero trailing bits: 'R' = 0b010001, low 4 bits must be 0.
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZR=="));
        assert!(!is_valid_key(b"AAAAAAAAAAAAAAAAAAAAAB=="));
        assert!(!is_valid_key(b"/////////////////////x=="));
        // Padding replaced by other characters or only half present.
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=A"));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQA="));
    }
}
