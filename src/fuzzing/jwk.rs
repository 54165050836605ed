//! Entry points for the JWK Set and discovery document fuzz targets (SPEC §9).

use crate::auth::jwk::{parse_discovery, parse_jwk_set, MAX_DOCUMENT_BYTES};
use crate::auth::keys::{Key, ProviderKeys};
use crate::auth::spki::PublicKey;

/// The issuer every discovery input is checked against.
const FUZZ_ISSUER: &str = "https://id.example.com/realms/app";

/// Parses `data` as a JWK Set. Invariants: a document over the size bound is refused; an
/// accepted set's keys each allow at least one algorithm, never an HMAC one, and fit it;
/// no two usable keys share a kid; every key builds a verifier key; usable + skipped keys
/// never outnumber the document's entries (each entry is one or the other).
pub fn fuzz_jwk_set(data: &[u8]) {
    let Ok(set) = parse_jwk_set(data) else {
        return;
    };
    assert!(data.len() <= MAX_DOCUMENT_BYTES);
    let mut kids = std::collections::HashSet::new();
    for jwk in &set.keys {
        assert!(!jwk.algorithms.is_empty());
        for alg in &jwk.algorithms {
            assert!(!alg.is_hmac(), "an HMAC algorithm from a JWK Set");
            assert!(alg.fits(&jwk.key));
            assert!(Key::public(jwk.kid.clone(), *alg, jwk.key.clone()).is_ok());
        }
        if let PublicKey::Rsa { n, .. } = &jwk.key {
            assert!(n.len() * 8 >= crate::auth::spki::RSA_MIN_BITS);
        }
        if let Some(kid) = &jwk.kid {
            assert!(!kid.is_empty());
            assert!(
                kids.insert(kid.clone()),
                "two usable keys share kid {kid:?}"
            );
        }
    }
    let keys = ProviderKeys::from_jwk_set(FUZZ_ISSUER, &set);
    assert_eq!(keys.len(), set.keys.len());
}

/// Parses `data` as a discovery document for a fixed issuer. Invariant: an accepted
/// document names that issuer exactly and a non-empty `jwks_uri`.
pub fn fuzz_discovery(data: &[u8]) {
    if let Ok(uri) = parse_discovery(data, FUZZ_ISSUER) {
        assert!(!uri.is_empty());
        let doc: serde_json::Value = serde_json::from_slice(data).expect("accepted means JSON");
        assert_eq!(
            doc.get("issuer").and_then(serde_json::Value::as_str),
            Some(FUZZ_ISSUER)
        );
    }
}
