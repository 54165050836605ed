//! Entry points for fuzz targets and the corpus test: each feeds one byte slice through a
//! sans-IO component and asserts its invariants.

use std::sync::OnceLock;

use ring::hmac;

use crate::auth::keys::{Alg, Key, KeySet};
use crate::auth::verify::{Rules, Scratch, Verifier};

/// The fixed HS256 secret of [`fuzz_jws`]'s key set (kid `hs`).
pub const FUZZ_HS256_SECRET: [u8; 32] = *b"wsgate-fuzz-hs256-secret-32bytes";
/// The fixed Ed25519 public key of [`fuzz_jws`]'s key set (kid `ed`): RFC 8037 A.2 `x`.
pub const FUZZ_ED25519_PUBLIC: [u8; 32] = [
    0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a,
    0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a,
];
/// `max_token_bytes` for fuzzing (larger than the default so deep inputs are reached).
const FUZZ_MAX_TOKEN_BYTES: usize = 16 * 1024;
/// The `now` of every fuzz verification.
const FUZZ_NOW: u64 = 1_800_000_000;

fn fuzz_verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        // Fixed inputs, independent of the fuzz data: a 32-byte secret is a valid HS256
        // key and the two kids are distinct, so neither `expect` can fire.
        let hs = Key::hmac(Some("hs".into()), Alg::HS256, &FUZZ_HS256_SECRET)
            .expect("32-byte HS256 secret");
        let keys = vec![Key::ed25519_raw(Some("ed".into()), FUZZ_ED25519_PUBLIC), hs];
        Verifier {
            keys: KeySet::new(keys).expect("distinct kids"),
            rules: Rules {
                issuer: None,
                audience: Some("wsgate".into()),
                leeway_secs: 30,
                max_token_bytes: FUZZ_MAX_TOKEN_BYTES,
                max_lifetime_secs: 24 * 3600,
            },
        }
    })
}

/// Verifies `data` as a token against a fixed HS256 + EdDSA key set, then again as the
/// payload of a token correctly signed with the HS256 key (so the claims parser is reached
/// by every input). Panics when an invariant breaks: an accepted token has a non-empty
/// `sub` and an `exp` after now; the scratch buffer never grows.
pub fn fuzz_jws(data: &[u8]) {
    let verifier = fuzz_verifier();
    let mut scratch = Scratch::new(FUZZ_MAX_TOKEN_BYTES);
    let capacity = scratch.max_token_bytes();
    check(verifier.verify(data, FUZZ_NOW, &mut scratch));
    assert_eq!(scratch.max_token_bytes(), capacity);

    // The same bytes as claims of a signed token.
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let mut token = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","kid":"hs"}"#);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(data));
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, &FUZZ_HS256_SECRET),
        token.as_bytes(),
    );
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(tag.as_ref()));
    let result = verifier.verify(token.as_bytes(), FUZZ_NOW, &mut scratch);
    if !data.is_empty() && token.len() <= FUZZ_MAX_TOKEN_BYTES {
        // Correctly signed: any refusal is about the claims.
        if let Err(e) = &result {
            assert!(
                e.signature_was_valid(),
                "{e:?} for a correctly signed token"
            );
        }
    }
    check(result);
    assert_eq!(scratch.max_token_bytes(), capacity);
}

fn check(result: Result<crate::auth::verify::Claims<'_>, crate::auth::error::TokenError>) {
    match result {
        Ok(claims) => {
            assert!(!claims.sub.is_empty(), "accepted without sub");
            assert!(
                claims.exp.saturating_add(30) > FUZZ_NOW,
                "accepted after exp"
            );
            assert!(claims.scopes().all(|s| !s.is_empty() && !s.contains(' ')));
        }
        Err(e) => {
            assert!(!e.description().is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_jws_corpus() {
        let vectors = [
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/rfc7515-a1-hs256.jwt"
            )),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/rfc7515-a1-hs256.tampered-header.jwt"
            )),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/rfc8037-a4-ed25519.jwt"
            )),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/wsgate-eddsa-valid.jwt"
            )),
        ];
        for v in vectors {
            fuzz_jws(v.trim().as_bytes());
            fuzz_jws(v.as_bytes());
        }
        let deep = format!(
            r#"{{"sub":"a","exp":1900000000,"x":{}}}"#,
            "[".repeat(10_000)
        );
        for input in [
            &b""[..],
            b".",
            b"..",
            b"{}",
            br#"{"sub":"a","exp":1900000000,"aud":"wsgate"}"#,
            br#"{"sub":"a","exp":1900000000,"aud":"wsgate","scope":"a  b","scp":["c"]}"#,
            br#"{"sub":"","exp":1900000000,"aud":"wsgate"}"#,
            br#"{"sub":"a","exp":1e999}"#,
            b"\xff\xfe",
            deep.as_bytes(),
        ] {
            fuzz_jws(input);
        }
    }

    #[test]
    fn the_fuzz_key_is_rfc8037s() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        assert_eq!(
            URL_SAFE_NO_PAD.encode(FUZZ_ED25519_PUBLIC),
            "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        );
        assert_eq!(fuzz_verifier().keys.len(), 2);
    }
}
