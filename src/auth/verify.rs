//! The one entry point for a handshake: [`Verifier::verify`], cheap checks first, the
//! signature before any claim, and nothing allocated for a valid token in steady state.

use std::sync::Arc;

use super::cache::TokenCache;
use super::claims::{self, RawClaims, ScopeSet, MAX_CLAIMS};
use super::error::TokenError;
use super::jws::{self, NameSet, MAX_HEADER_MEMBERS};
use super::keys::{Alg, KeySet, Provider};

pub use super::claims::Claims;

/// The claims rules of SPEC §3 `[auth]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// `auth.issuer`: when set, `iss` must equal it.
    pub issuer: Option<String>,
    /// `auth.audience`: when set, `aud` must contain it.
    pub audience: Option<String>,
    /// `auth.leeway` in seconds: clock skew allowed on `exp`, `nbf`, `iat`.
    pub leeway_secs: u64,
    /// `auth.max_token_bytes`: a longer token is refused before anything is decoded.
    pub max_token_bytes: usize,
    /// `auth.max_lifetime` in seconds: `exp - iat` (`exp - now` without `iat`) above it
    /// is refused (SPEC §3); also bounds a far-future `exp`.
    pub max_lifetime_secs: u64,
}

/// The configured keys and rules.
#[derive(Debug)]
pub struct Verifier {
    /// The keys.
    pub keys: KeySet,
    /// The claims rules.
    pub rules: Rules,
}

/// A worker's reusable decode storage, sized once for `max_token_bytes`; a token never
/// makes it grow. It also holds the worker's cache of verified tokens
/// ([`Verifier::verify_cached`]).
#[derive(Debug)]
pub struct Scratch {
    buf: Vec<u8>,
    names: NameSet,
    scopes: ScopeSet,
    cache: TokenCache,
}

impl Scratch {
    /// Storage for tokens of up to `max_token_bytes`.
    pub fn new(max_token_bytes: usize) -> Scratch {
        Scratch {
            // Decoded segments take at most 3/4 of the token's length; the whole length
            // keeps the arithmetic obvious.
            buf: vec![0; max_token_bytes],
            names: NameSet::with_capacity(max_token_bytes, MAX_CLAIMS.max(MAX_HEADER_MEMBERS)),
            scopes: ScopeSet::with_capacity(max_token_bytes),
            cache: TokenCache::default(),
        }
    }

    /// The cache of verified tokens (tests look at it; the verifier fills it).
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    /// Replaces the cache (tests give it small bounds).
    pub fn set_cache(&mut self, cache: TokenCache) {
        self.cache = cache;
    }

    /// The largest token this scratch can decode.
    pub fn max_token_bytes(&self) -> usize {
        self.buf.len()
    }
}

/// A token whose signature verified, before its claims are looked at.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'s> {
    /// The verifying key's fingerprint.
    pub key_fingerprint: u64,
    /// The provider whose key verified it (None: a static `[[auth.key]]`).
    pub provider: Option<&'s Provider>,
    /// The verifying key's configured kid.
    pub kid: Option<&'s str>,
    /// The verifying key's algorithm.
    pub alg: Alg,
    /// The decoded payload (not yet parsed).
    pub payload: &'s [u8],
    /// The payload segment as received.
    pub payload_b64: &'s str,
}

impl Verifier {
    /// Full check of a compact JWS at `now_unix` (seconds since the epoch): size, structure,
    /// canonical base64url, header rules, key selection, signature, then claims.
    pub fn verify<'s>(
        &'s self,
        token: &'s [u8],
        now_unix: u64,
        scratch: &'s mut Scratch,
    ) -> Result<Claims<'s>, TokenError> {
        self.fit(token, scratch)?;
        let Scratch {
            buf, names, scopes, ..
        } = scratch;
        self.verify_in(token, now_unix, buf, names, scopes)
    }

    /// [`Verifier::verify`] on the scratch's parts (not its cache).
    fn verify_in<'s>(
        &'s self,
        token: &'s [u8],
        now_unix: u64,
        buf: &'s mut [u8],
        names: &'s mut NameSet,
        scopes: &'s mut ScopeSet,
    ) -> Result<Claims<'s>, TokenError> {
        let signed = self.signed(token, buf, names)?;
        // SPEC §9: a provider's `audience` overrides `auth.audience` for its tokens, and
        // its tokens must carry its `issuer`.
        let (issuer, audience) = match signed.provider {
            Some(p) => (
                Some(p.issuer.as_str()),
                p.audience.as_deref().or(self.rules.audience.as_deref()),
            ),
            None => (self.rules.issuer.as_deref(), self.rules.audience.as_deref()),
        };
        let raw = claims::parse_claims(signed.payload, audience, names, scopes)?;
        let (sub, exp) = self.check_claims(&raw, now_unix, issuer, audience.is_some())?;
        let scopes: &'s ScopeSet = scopes;
        Ok(Claims::new(
            raw,
            sub,
            exp,
            signed.kid,
            signed.alg,
            signed.payload_b64,
            scopes.as_str(),
            signed.key_fingerprint,
        ))
    }

    /// [`Verifier::verify`] through the worker's cache of verified tokens
    /// ([`super::cache`]): a token this verifier accepted before skips decoding, parsing
    /// and the signature; its time (`exp`, `nbf`, `iat` with the leeway, and the lifetime
    /// bound, SPEC §3) is checked again now. The caller applies route rules and revocation
    /// to the claims as for any verified token. A verifier other than the one the cache
    /// holds results of (a reload, a key set change) empties it first.
    pub fn verify_cached<'s>(
        this: &'s Arc<Verifier>,
        token: &'s [u8],
        now_unix: u64,
        scratch: &'s mut Scratch,
    ) -> Result<Claims<'s>, TokenError> {
        this.fit(token, scratch)?;
        let Scratch {
            buf,
            names,
            scopes,
            cache,
        } = scratch;
        let times = cache
            .get(this, token)
            .map(|hit| (hit.claims.exp, hit.nbf, hit.iat));
        if let Some((exp, nbf, iat)) = times {
            let rules = &this.rules;
            let timely = claims::check_time(exp, nbf, iat, now_unix, rules.leeway_secs)
                .and_then(|()| claims::check_lifetime(exp, iat, now_unix, rules.max_lifetime_secs));
            if let Err(e) = timely {
                // It will not pass again (expired), or not soon (not yet valid): the
                // entry gives its room back.
                cache.remove(token);
                return Err(e);
            }
            // The entry found a moment ago (nothing ran in between).
            return cache
                .get(this, token)
                .map(|hit| hit.claims)
                .ok_or(TokenError::BadSignature);
        }
        let claims = this.verify_in(token, now_unix, buf, names, scopes)?;
        cache.insert(this, token, &claims);
        Ok(claims)
    }

    /// Checks everything up to and including the signature, and nothing after it.
    pub fn verify_signature<'s>(
        &'s self,
        token: &'s [u8],
        scratch: &'s mut Scratch,
    ) -> Result<Signed<'s>, TokenError> {
        self.fit(token, scratch)?;
        let Scratch { buf, names, .. } = scratch;
        self.signed(token, buf, names)
    }

    /// SPEC §3 `max_token_bytes`: a longer token is refused before anything is decoded.
    fn fit(&self, token: &[u8], scratch: &mut Scratch) -> Result<(), TokenError> {
        if token.len() > self.rules.max_token_bytes {
            return Err(TokenError::TooLarge);
        }
        if scratch.buf.len() < self.rules.max_token_bytes {
            // Only after a reload raised `max_token_bytes` past the size the worker's
            // scratch was made with: resize once, to the new limit.
            *scratch = Scratch::new(self.rules.max_token_bytes);
        }
        Ok(())
    }

    fn signed<'s>(
        &'s self,
        token: &'s [u8],
        buf: &'s mut [u8],
        names: &mut NameSet,
    ) -> Result<Signed<'s>, TokenError> {
        let segments = jws::split(token)?;
        let decoded = jws::decode_segments(&segments, buf)?;
        let header = jws::parse_header(decoded.header, names)?;
        header.check()?;
        // SPEC §9: a token whose `iss` is a provider's issuer is verified by that
        // provider's keys and by nothing else; every other token by the static keys. The
        // `iss` is peeked at (nothing else of the unverified payload is read) only when
        // providers are configured.
        let provider = if self.keys.providers().is_empty() {
            None
        } else {
            claims::peek_issuer(decoded.payload).and_then(|iss| self.keys.provider(&iss))
        };
        let key = match provider {
            Some(p) => {
                // SPEC §9: no usable set -> 503 + Retry-After (a server problem).
                let status = &p.keys().status;
                if !status.usable {
                    return Err(TokenError::KeysUnavailable {
                        retry_at_unix: status.retry_at_unix,
                    });
                }
                match p.select(header.kid.as_deref(), &header.alg) {
                    Ok(key) => key,
                    Err(TokenError::UnknownKid) => {
                        // A rotation may have added it: when a fetch is under way or may
                        // start (at most one per `min_refresh`), the handshake waits for
                        // it; otherwise it is refused at once.
                        return Err(if self.keys.ask_refetch(&p.issuer) {
                            TokenError::KeyPending
                        } else {
                            TokenError::UnknownKid
                        });
                    }
                    Err(e) => return Err(e),
                }
            }
            None => {
                let index = self.keys.select(header.kid.as_deref(), &header.alg)?;
                self.keys.get(index).ok_or(TokenError::UnknownKid)?
            }
        };
        // RFC 7515 §5.2 step 8: over the ASCII `header.payload` exactly as received, with
        // the key's algorithm (never the token's).
        if !key.verify_signature(segments.signing_input, decoded.signature) {
            return Err(TokenError::BadSignature);
        }
        // The payload segment passed the base64url alphabet check, so it is ASCII.
        let payload_b64 = std::str::from_utf8(segments.payload).map_err(|_| TokenError::Base64)?;
        Ok(Signed {
            key_fingerprint: key.fingerprint(),
            provider,
            kid: key.kid.as_deref(),
            alg: key.alg,
            payload: decoded.payload,
            payload_b64,
        })
    }

    /// Required claims, then issuer and audience, then time (RFC 7519 §4.1). The issuer
    /// rule depends on the verifying key: a key bound to an issuer (SPEC §11, the token
    /// service's key) verifies only that issuer's tokens; any other key never verifies a
    /// bound issuer's tokens, and `auth.issuer` applies.
    fn check_claims<'a>(
        &self,
        raw: &RawClaims<'a>,
        now_unix: u64,
        issuer: Option<&str>,
        audience_configured: bool,
    ) -> Result<(std::borrow::Cow<'a, str>, u64), TokenError> {
        let (sub, exp) = claims::required(raw)?;
        claims::check_issuer_audience(raw, issuer, audience_configured)?;
        claims::check_time(exp, raw.nbf, raw.iat, now_unix, self.rules.leeway_secs)?;
        claims::check_lifetime(exp, raw.iat, now_unix, self.rules.max_lifetime_secs)?;
        Ok((sub, exp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::error::MalformedKind;
    use crate::auth::keys::{decode_secret_file, pem_decode, Key, KeyError, ProviderKeys};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use ring::hmac;
    use ring::signature::{Ed25519KeyPair, KeyPair as _};

    /// RFC 8037 A.1 private key `d` (the Ed25519 seed).
    const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
    const HS_SECRET: [u8; 32] = [0x11; 32];
    const NOW: u64 = 1_000_000;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn ed_pair() -> Ed25519KeyPair {
        let seed = URL_SAFE_NO_PAD.decode(RFC8037_D).expect("seed");
        Ed25519KeyPair::from_seed_unchecked(&seed).expect("keypair")
    }

    fn ed_public() -> [u8; 32] {
        ed_pair()
            .public_key()
            .as_ref()
            .try_into()
            .expect("32 bytes")
    }

    fn sign_hs(alg: hmac::Algorithm, secret: &[u8], header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let tag = hmac::sign(&hmac::Key::new(alg, secret), input.as_bytes());
        format!("{input}.{}", b64(tag.as_ref()))
    }

    fn hs256(header: &str, payload: &str) -> String {
        sign_hs(hmac::HMAC_SHA256, &HS_SECRET, header, payload)
    }

    fn eddsa(header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let sig = ed_pair().sign(input.as_bytes());
        format!("{input}.{}", b64(sig.as_ref()))
    }

    fn rules(max_token_bytes: usize) -> Rules {
        Rules {
            issuer: None,
            audience: None,
            leeway_secs: 30,
            max_token_bytes,
            max_lifetime_secs: u64::MAX,
        }
    }

    fn verifier_with(rules: Rules) -> Verifier {
        let keys = KeySet::new(vec![
            Key::ed25519_raw(Some("ed".into()), ed_public()),
            Key::hmac(Some("hs".into()), Alg::HS256, &HS_SECRET).expect("hmac"),
        ])
        .expect("keyset");
        Verifier { keys, rules }
    }

    fn verifier() -> Verifier {
        verifier_with(rules(4096))
    }

    const HS_HEADER: &str = r#"{"alg":"HS256","typ":"JWT","kid":"hs"}"#;
    const ED_HEADER: &str = r#"{"alg":"EdDSA","typ":"JWT","kid":"ed"}"#;
    const CLAIMS: &str = r#"{"sub":"alice","exp":1000100,"iat":999990,"scope":"echo chat"}"#;

    fn check(v: &Verifier, token: &str) -> Result<(String, u64), TokenError> {
        let mut scratch = Scratch::new(v.rules.max_token_bytes);
        v.verify(token.as_bytes(), NOW, &mut scratch)
            .map(|c| (c.sub.into_owned(), c.exp))
    }

    fn err(v: &Verifier, token: &str) -> TokenError {
        check(v, token).expect_err("must be rejected")
    }

    fn payload_with(extra: &str) -> String {
        format!(r#"{{"sub":"alice","exp":1000100{extra}}}"#)
    }

    // --- the happy paths -------------------------------------------------------------

    #[test]
    fn valid_hs256_and_eddsa_tokens_verify() {
        let v = verifier();
        let mut scratch = Scratch::new(4096);
        let t = hs256(HS_HEADER, CLAIMS);
        let c = v.verify(t.as_bytes(), NOW, &mut scratch).expect("valid");
        assert_eq!(c.sub, "alice");
        assert!(matches!(c.sub, std::borrow::Cow::Borrowed(_)));
        assert_eq!(c.exp, 1_000_100);
        assert_eq!(c.iat, Some(999_990));
        assert_eq!(c.kid, Some("hs"));
        assert_eq!(c.alg, Alg::HS256);
        assert_eq!(
            c.key_fingerprint(),
            v.keys.get(1).map_or(0, Key::fingerprint)
        );
        assert_eq!(c.scopes().collect::<Vec<_>>(), ["echo", "chat"]);
        assert_eq!(c.payload_b64, t.split('.').nth(1).expect("payload"));

        let t = eddsa(ED_HEADER, CLAIMS);
        let c = v.verify(t.as_bytes(), NOW, &mut scratch).expect("valid");
        assert_eq!(c.kid, Some("ed"));
        assert_eq!(c.alg, Alg::EdDSA);
        assert_eq!(
            c.key_fingerprint(),
            v.keys.get(0).map_or(0, Key::fingerprint)
        );
    }

    #[test]
    fn without_kid_the_one_key_of_that_alg_is_used() {
        let v = verifier();
        let t = eddsa(r#"{"alg":"EdDSA"}"#, CLAIMS);
        let mut scratch = Scratch::new(4096);
        let c = v.verify(t.as_bytes(), NOW, &mut scratch).expect("valid");
        // Claims carry the verifying key's configured kid.
        assert_eq!(c.kid, Some("ed"));
        assert!(check(&v, &hs256(r#"{"alg":"HS256"}"#, CLAIMS)).is_ok());
        // RFC 9864 fully-specified name.
        assert!(check(&v, &eddsa(r#"{"alg":"Ed25519","kid":"ed"}"#, CLAIMS)).is_ok());
        assert!(check(&v, &eddsa(r#"{"alg":"Ed25519"}"#, CLAIMS)).is_ok());
    }

    #[test]
    fn ambiguous_and_missing_keys_without_kid() {
        let keys = KeySet::new(vec![
            Key::hmac(Some("a".into()), Alg::HS256, &HS_SECRET).expect("hmac"),
            Key::hmac(Some("b".into()), Alg::HS256, &[0x22; 32]).expect("hmac"),
        ])
        .expect("keyset");
        let v = Verifier {
            keys,
            rules: rules(4096),
        };
        assert_eq!(
            err(&v, &hs256(r#"{"alg":"HS256"}"#, CLAIMS)),
            TokenError::AmbiguousKey
        );
        assert_eq!(
            err(&v, &eddsa(r#"{"alg":"EdDSA"}"#, CLAIMS)),
            TokenError::NoKeyForAlg
        );
        assert!(check(&v, &hs256(r#"{"alg":"HS256","kid":"a"}"#, CLAIMS)).is_ok());
        assert_eq!(
            err(&v, &hs256(r#"{"alg":"HS256","kid":"b"}"#, CLAIMS)),
            TokenError::BadSignature
        );
    }

    // --- RFC vectors -----------------------------------------------------------------

    fn data(name: &str) -> String {
        let text = match name {
            "rfc7515-a1-hs256.jwt" => include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/rfc7515-a1-hs256.jwt"
            )),
            "rfc7515-a1-hs256.secret" => include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/rfc7515-a1-hs256.secret"
            )),
            "rfc7515-a1-hs256.tampered-header.jwt" => {
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/data/rfc7515-a1-hs256.tampered-header.jwt"
                ))
            }
            "rfc7515-a1-hs256.tampered-payload.jwt" => {
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/data/rfc7515-a1-hs256.tampered-payload.jwt"
                ))
            }
            "rfc7515-a1-hs256.tampered-signature.jwt" => {
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/data/rfc7515-a1-hs256.tampered-signature.jwt"
                ))
            }
            "rfc8037-a4-ed25519.jwt" => include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/rfc8037-a4-ed25519.jwt"
            )),
            "rfc8037-a4-ed25519.pub.pem" => {
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/data/rfc8037-a4-ed25519.pub.pem"
                ))
            }
            "rfc8037-a4-ed25519.tampered-signature.jwt" => {
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/data/rfc8037-a4-ed25519.tampered-signature.jwt"
                ))
            }
            "rfc8037-a4-ed25519.tampered-payload.jwt" => {
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/data/rfc8037-a4-ed25519.tampered-payload.jwt"
                ))
            }
            _ => panic!("no such vector {name}"),
        };
        text.trim().to_owned()
    }

    fn rfc7515_verifier() -> Verifier {
        let secret = decode_secret_file(&data("rfc7515-a1-hs256.secret")).expect("secret");
        let keys =
            KeySet::new(vec![Key::hmac(None, Alg::HS256, &secret).expect("hmac")]).expect("keyset");
        Verifier {
            keys,
            rules: rules(4096),
        }
    }

    #[test]
    fn rfc7515_a1_hs256_signature_verifies_but_has_no_sub() {
        let v = rfc7515_verifier();
        let token = data("rfc7515-a1-hs256.jwt");
        // The exact RFC text.
        assert_eq!(
            token,
            "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9\
             .eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ\
             .dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        );
        let mut scratch = Scratch::new(4096);
        let signed = v
            .verify_signature(token.as_bytes(), &mut scratch)
            .expect("RFC 7515 A.1 signature verifies");
        assert_eq!(
            signed.payload,
            b"{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}"
        );
        // Before its exp: refused only because our rules require `sub`.
        let mut scratch = Scratch::new(4096);
        let e = v
            .verify(token.as_bytes(), 1_300_819_379, &mut scratch)
            .expect_err("no sub");
        assert_eq!(e, TokenError::MissingSub);
        assert!(e.signature_was_valid());
        for twin in [
            "rfc7515-a1-hs256.tampered-header.jwt",
            "rfc7515-a1-hs256.tampered-payload.jwt",
            "rfc7515-a1-hs256.tampered-signature.jwt",
        ] {
            let t = data(twin);
            let mut scratch = Scratch::new(4096);
            assert_eq!(
                v.verify_signature(t.as_bytes(), &mut scratch).err(),
                Some(TokenError::BadSignature),
                "{twin}"
            );
            let mut scratch = Scratch::new(4096);
            assert_eq!(
                v.verify(t.as_bytes(), 1_300_819_379, &mut scratch).err(),
                Some(TokenError::BadSignature),
                "{twin}"
            );
        }
    }

    fn rfc8037_verifier() -> Verifier {
        let der = pem_decode(&data("rfc8037-a4-ed25519.pub.pem"), "PUBLIC KEY").expect("pem");
        let keys =
            KeySet::new(vec![Key::ed25519_spki_der(None, &der).expect("spki")]).expect("keyset");
        Verifier {
            keys,
            rules: rules(4096),
        }
    }

    #[test]
    fn rfc8037_a4_ed25519_signature_verifies_but_payload_is_not_json() {
        let v = rfc8037_verifier();
        let token = data("rfc8037-a4-ed25519.jwt");
        assert_eq!(
            token,
            "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc\
             .hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
        );
        // The key file holds RFC 8037 A.2's `x`, and it is the public half of A.1's `d`.
        let der = pem_decode(&data("rfc8037-a4-ed25519.pub.pem"), "PUBLIC KEY").expect("pem");
        assert_eq!(der.get(12..), Some(&ed_public()[..]));
        assert_eq!(
            b64(&ed_public()),
            "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        );
        let mut scratch = Scratch::new(4096);
        let signed = v
            .verify_signature(token.as_bytes(), &mut scratch)
            .expect("RFC 8037 A.4 signature verifies");
        assert_eq!(signed.payload, b"Example of Ed25519 signing");
        let mut scratch = Scratch::new(4096);
        assert_eq!(
            v.verify(token.as_bytes(), NOW, &mut scratch).err(),
            Some(TokenError::PayloadNotObject)
        );
        for twin in [
            "rfc8037-a4-ed25519.tampered-signature.jwt",
            "rfc8037-a4-ed25519.tampered-payload.jwt",
        ] {
            let t = data(twin);
            let mut scratch = Scratch::new(4096);
            assert_eq!(
                v.verify(t.as_bytes(), NOW, &mut scratch).err(),
                Some(TokenError::BadSignature),
                "{twin}"
            );
        }
    }

    // --- attack catalogue: alg -------------------------------------------------------

    #[test]
    fn alg_none_in_any_case_is_rejected() {
        let v = verifier();
        for none in ["none", "None", "NONE", "nOnE"] {
            let header = format!(r#"{{"alg":"{none}"}}"#);
            let unsigned = format!("{}.{}.", b64(header.as_bytes()), b64(CLAIMS.as_bytes()));
            assert_eq!(
                err(&v, &unsigned),
                TokenError::Malformed(MalformedKind::EmptySegment),
                "{none}"
            );
            // With some signature bytes, or signed by a real key, still refused.
            let junk = format!("{unsigned}AAAA");
            assert_eq!(err(&v, &junk), TokenError::AlgNone, "{none}");
            let with_kid = format!(r#"{{"alg":"{none}","kid":"hs"}}"#);
            assert_eq!(err(&v, &hs256(&with_kid, CLAIMS)), TokenError::AlgNone);
        }
    }

    #[test]
    fn alg_confusion_hs256_with_the_public_key_as_secret() {
        let v = verifier();
        let public = ed_public();
        let pem = crate::auth::keys::pem_encode(
            &[&crate::auth::keys::ED25519_SPKI_PREFIX[..], &public[..]].concat(),
            "PUBLIC KEY",
        );
        for secret in [&public[..], pem.as_bytes()] {
            // Pointing at the EdDSA key: its algorithm is EdDSA, full stop.
            let t = sign_hs(
                hmac::HMAC_SHA256,
                secret,
                r#"{"alg":"HS256","kid":"ed"}"#,
                CLAIMS,
            );
            assert_eq!(err(&v, &t), TokenError::AlgKeyMismatch);
            // Without a kid: the HS256 key is chosen, and the signature fails.
            let t = sign_hs(hmac::HMAC_SHA256, secret, r#"{"alg":"HS256"}"#, CLAIMS);
            assert_eq!(err(&v, &t), TokenError::BadSignature);
        }
        // Against a gateway with only the EdDSA key: no HS256 key exists at all.
        let only_ed = Verifier {
            keys: KeySet::new(vec![Key::ed25519_raw(None, public)]).expect("keyset"),
            rules: rules(4096),
        };
        let t = sign_hs(hmac::HMAC_SHA256, &public, r#"{"alg":"HS256"}"#, CLAIMS);
        assert_eq!(err(&only_ed, &t), TokenError::NoKeyForAlg);
        let t = sign_hs(
            hmac::HMAC_SHA256,
            pem.as_bytes(),
            r#"{"alg":"HS256"}"#,
            CLAIMS,
        );
        assert_eq!(err(&only_ed, &t), TokenError::NoKeyForAlg);
    }

    #[test]
    fn alg_key_mismatch_and_unsupported_algs() {
        let v = verifier();
        assert_eq!(
            err(&v, &eddsa(r#"{"alg":"EdDSA","kid":"hs"}"#, CLAIMS)),
            TokenError::AlgKeyMismatch
        );
        assert_eq!(
            err(&v, &hs256(r#"{"alg":"HS384","kid":"hs"}"#, CLAIMS)),
            TokenError::AlgKeyMismatch
        );
        // Implemented algorithms that this key does not allow.
        for alg in ["RS256", "ES256", "PS256", "ES384"] {
            let header = format!(r#"{{"alg":"{alg}","kid":"hs"}}"#);
            assert_eq!(
                err(&v, &hs256(&header, CLAIMS)),
                TokenError::AlgKeyMismatch,
                "{alg}"
            );
        }
        for alg in [
            "ES512", "ES256K", "rs256", "hs256", "HS256 ", "eddsa", "", "HS1",
        ] {
            let header = format!(r#"{{"alg":"{alg}","kid":"hs"}}"#);
            assert_eq!(
                err(&v, &hs256(&header, CLAIMS)),
                TokenError::AlgNotAllowed,
                "{alg}"
            );
        }
        assert_eq!(
            err(&v, &hs256(r#"{"kid":"hs"}"#, CLAIMS)),
            TokenError::Malformed(MalformedKind::MissingAlg)
        );
        for alg in ["1", "null", "[\"HS256\"]", "{}", "true"] {
            let header = format!(r#"{{"alg":{alg},"kid":"hs"}}"#);
            assert_eq!(
                err(&v, &hs256(&header, CLAIMS)),
                TokenError::Malformed(MalformedKind::AlgNotString),
                "{alg}"
            );
        }
    }

    #[test]
    fn signature_of_the_wrong_length() {
        let v = verifier();
        let t = hs256(HS_HEADER, CLAIMS);
        let (input, _) = t.rsplit_once('.').expect("three segments");
        for sig in [&[0u8; 16][..], &[0; 31], &[0; 33], &[0; 64]] {
            assert_eq!(
                err(&v, &format!("{input}.{}", b64(sig))),
                TokenError::BadSignature
            );
        }
        // An HS256 tag glued onto an EdDSA header (kid ed): wrong length and wrong key.
        let hs = hs256(ED_HEADER, CLAIMS);
        assert_eq!(err(&v, &hs), TokenError::BadSignature);
    }

    // --- attack catalogue: kid -------------------------------------------------------

    #[test]
    fn unknown_and_hostile_kids() {
        let v = verifier_with(rules(64 * 1024));
        for kid in [
            "nope",
            "../../etc/passwd",
            "HS",
            "hs ",
            "",
            "hs\u{0000}",
            "ed/../hs",
        ] {
            let header = serde_json::json!({"alg":"HS256","kid":kid}).to_string();
            assert_eq!(
                err(&v, &hs256(&header, CLAIMS)),
                TokenError::UnknownKid,
                "{kid:?}"
            );
        }
        let long = "k".repeat(10 * 1024);
        let header = format!(r#"{{"alg":"HS256","kid":"{long}"}}"#);
        assert_eq!(err(&v, &hs256(&header, CLAIMS)), TokenError::UnknownKid);
        // With the default 4 KiB cap the same token is not even decoded.
        assert_eq!(
            err(&verifier(), &hs256(&header, CLAIMS)),
            TokenError::TooLarge
        );
        for kid in ["1", "null", "[\"hs\"]", "{\"a\":1}", "false"] {
            let header = format!(r#"{{"alg":"HS256","kid":{kid}}}"#);
            assert_eq!(
                err(&v, &hs256(&header, CLAIMS)),
                TokenError::Malformed(MalformedKind::KidNotString),
                "{kid}"
            );
        }
        // An escaped kid is compared after unescaping.
        assert!(check(&v, &hs256(r#"{"alg":"HS256","kid":"\u0068s"}"#, CLAIMS)).is_ok());
    }

    // --- attack catalogue: structure and base64url -----------------------------------

    #[test]
    fn segment_count_and_empty_segments() {
        let v = verifier();
        let t = hs256(HS_HEADER, CLAIMS);
        let parts: Vec<&str> = t.split('.').collect();
        let (h, p, s) = (parts[0], parts[1], parts[2]);
        let seg = TokenError::Malformed(MalformedKind::SegmentCount);
        let empty = TokenError::Malformed(MalformedKind::EmptySegment);
        for (token, want) in [
            (format!("{h}.{p}"), seg),
            (format!("{h}.{p}.{s}.{s}"), seg),
            (format!("{h}.{p}.{s}."), seg),
            (format!("{h}{p}{s}"), seg),
            (String::new(), seg),
            (".".into(), seg),
            ("..".into(), empty),
            ("...".into(), seg),
            (format!(".{p}.{s}"), empty),
            (format!("{h}..{s}"), empty),
            (format!("{h}.{p}."), empty),
        ] {
            assert_eq!(err(&v, &token), want, "{token}");
        }
    }

    #[test]
    fn every_truncation_and_every_single_character_change_is_rejected() {
        let v = verifier();
        for t in [hs256(HS_HEADER, CLAIMS), eddsa(ED_HEADER, CLAIMS)] {
            for cut in 0..t.len() {
                assert!(check(&v, &t[..cut]).is_err(), "prefix {cut}");
            }
            let bytes = t.as_bytes();
            for i in 0..bytes.len() {
                for replacement in [b'A', b'B', b'g', b'-', b'_', b'=', b'.', b'+', b' '] {
                    if bytes[i] == replacement {
                        continue;
                    }
                    let mut changed = bytes.to_vec();
                    changed[i] = replacement;
                    let mut scratch = Scratch::new(4096);
                    assert!(
                        v.verify(&changed, NOW, &mut scratch).is_err(),
                        "byte {i} -> {}",
                        replacement as char
                    );
                }
            }
        }
    }

    #[test]
    fn padded_and_non_canonical_base64url() {
        let v = verifier();
        let t = hs256(HS_HEADER, CLAIMS);
        let parts: Vec<&str> = t.split('.').collect();
        let (h, p, s) = (parts[0], parts[1], parts[2]);
        // The HS256 signature is 32 bytes: 43 characters, the last carrying 4 unused bits.
        assert_eq!(s.len(), 43);
        let last = s.as_bytes()[42];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let value = alphabet.iter().position(|&c| c == last).expect("alphabet");
        let non_canonical = alphabet[value | 1] as char;
        assert_ne!(non_canonical as u8, last);
        let s_nc = format!("{}{non_canonical}", &s[..42]);
        for token in [
            format!("{h}.{p}.{s}="),
            format!("{h}.{p}.{s}=="),
            format!("{h}=.{p}.{s}"),
            format!("{h}.{p}=.{s}"),
            format!("{h}.{p}.{s_nc}"),
            format!("{h}.{p}.{s}A"),
            format!("{h}.{p}.{}", s.replace('-', "+").replace('_', "/")),
            format!("{h}.{p}.+{}", &s[1..]),
            format!("{h}.{p}.{} {}", &s[..10], &s[10..]),
            format!("{h}.{p}.{}\n", s),
            format!("{h}A.{p}.{s}"),
        ] {
            let e = err(&v, &token);
            assert!(
                matches!(
                    e,
                    TokenError::Base64
                        | TokenError::BadSignature
                        | TokenError::Malformed(MalformedKind::Json)
                ),
                "{token}: {e:?}"
            );
        }
        // Each of these is refused by the base64url rule itself, before any crypto.
        for token in [
            format!("{h}.{p}.{s}="),
            format!("{h}.{p}.{s_nc}"),
            format!("{h}.{p}.{s}AA"),
            format!("{h}.{p}.+{}", &s[1..]),
            format!("{h}=.{p}.{s}"),
        ] {
            assert_eq!(err(&v, &token), TokenError::Base64, "{token}");
        }
        // A payload segment with a length of 1 mod 4.
        let p1 = format!("{p}{}", "A".repeat((5 - p.len() % 4) % 4));
        assert_eq!(p1.len() % 4, 1);
        assert_eq!(err(&v, &format!("{h}.{p1}.{s}")), TokenError::Base64);
    }

    #[test]
    fn header_must_be_a_utf8_json_object() {
        let v = verifier();
        let p = b64(CLAIMS.as_bytes());
        let s = b64(&[0; 32]);
        for header in [
            "[]",
            "\"HS256\"",
            "42",
            "null",
            "true",
            "\u{feff}{\"alg\":\"HS256\"}",
        ] {
            let token = format!("{}.{p}.{s}", b64(header.as_bytes()));
            assert_eq!(err(&v, &token), TokenError::HeaderNotObject, "{header}");
        }
        for header in [
            "{",
            "{\"alg\":\"HS256\"",
            "{\"alg\":\"HS256\"}x",
            "{\"alg\":\"HS256\"}{}",
        ] {
            let token = format!("{}.{p}.{s}", b64(header.as_bytes()));
            assert_eq!(
                err(&v, &token),
                TokenError::Malformed(MalformedKind::Json),
                "{header}"
            );
        }
        let token = format!("{}.{p}.{s}", b64(b"{\"alg\":\"HS\xff\"}"));
        assert_eq!(
            err(&v, &token),
            TokenError::Malformed(MalformedKind::NotUtf8)
        );
    }

    #[test]
    fn payload_must_be_a_json_object() {
        let v = verifier();
        for payload in [
            "[]",
            "\"alice\"",
            "42",
            "null",
            "[{\"sub\":\"a\",\"exp\":1000100}]",
        ] {
            let e = err(&v, &hs256(HS_HEADER, payload));
            assert_eq!(e, TokenError::PayloadNotObject, "{payload}");
            assert!(e.signature_was_valid());
        }
        assert_eq!(
            err(&v, &hs256(HS_HEADER, "{\"sub\":\"a\",\"exp\":1000100} {}")),
            TokenError::PayloadMalformed(MalformedKind::Json)
        );
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let v = verifier();
        assert_eq!(
            err(
                &v,
                &hs256(HS_HEADER, r#"{"sub":"alice","exp":1000100,"sub":"admin"}"#)
            ),
            TokenError::DuplicateClaim
        );
        assert_eq!(
            err(
                &v,
                &hs256(HS_HEADER, &payload_with(r#","role":"user","role":"admin""#))
            ),
            TokenError::DuplicateClaim
        );
        assert_eq!(
            err(
                &v,
                &hs256(HS_HEADER, &payload_with(r#","scope":"a","scope":"admin""#))
            ),
            TokenError::DuplicateClaim
        );
        // Header: a second `alg` (e.g. "none") never wins silently.
        for header in [
            r#"{"alg":"HS256","kid":"hs","alg":"none"}"#,
            r#"{"alg":"HS256","kid":"hs","kid":"ed"}"#,
            r#"{"alg":"HS256","kid":"hs","x":1,"x":2}"#,
            r#"{"alg":"HS256","kid":"hs","\u0061lg":"HS256"}"#,
        ] {
            assert_eq!(
                err(&v, &hs256(header, CLAIMS)),
                TokenError::Malformed(MalformedKind::DuplicateHeader),
                "{header}"
            );
        }
    }

    #[test]
    fn oversized_tokens_are_not_decoded() {
        let v = verifier_with(rules(600));
        let pad = "x".repeat(600);
        let t = hs256(HS_HEADER, &payload_with(&format!(r#","pad":"{pad}""#)));
        assert!(t.len() > 600);
        assert_eq!(err(&v, &t), TokenError::TooLarge);
        // Garbage over the cap is TooLarge too (nothing is looked at).
        assert_eq!(err(&v, &"!".repeat(601)), TokenError::TooLarge);
        // Exactly at the cap: accepted (the limit is inclusive).
        let base = hs256(HS_HEADER, &payload_with(r#","pad":"""#));
        let mut fill = 0;
        let exact = loop {
            let t = hs256(
                HS_HEADER,
                &payload_with(&format!(r#","pad":"{}""#, "x".repeat(fill))),
            );
            if t.len() >= 600 {
                break t;
            }
            fill += 1;
        };
        assert!(base.len() < 600);
        if exact.len() == 600 {
            assert!(check(&v, &exact).is_ok());
        } else {
            // Base64 grows in steps of 4 characters per 3 bytes; 599 or 601 can happen.
            assert_eq!(err(&v, &exact), TokenError::TooLarge);
        }
    }

    #[test]
    fn deeply_nested_json_is_rejected_without_overflow() {
        let v = verifier_with(rules(64 * 1024));
        let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        // In the header: before any signature work.
        let header = format!(r#"{{"alg":"HS256","kid":"hs","x":{nested}}}"#);
        assert_eq!(
            err(&v, &hs256(&header, CLAIMS)),
            TokenError::Malformed(MalformedKind::TooDeep)
        );
        // In the claims of a signed token.
        let payload = payload_with(&format!(r#","x":{nested}"#));
        assert_eq!(
            err(&v, &hs256(HS_HEADER, &payload)),
            TokenError::PayloadMalformed(MalformedKind::TooDeep)
        );
        // Unterminated nesting.
        let open = format!(r#"{{"alg":"HS256","x":{}"#, "[".repeat(20_000));
        let token = format!("{}.{}.{}", b64(open.as_bytes()), b64(b"{}"), b64(&[0; 32]));
        assert!(check(&v, &token).is_err());
        // A header that is only brackets.
        let token = format!(
            "{}.{}.{}",
            b64("[".repeat(30_000).as_bytes()),
            b64(b"{}"),
            b64(&[0; 32])
        );
        assert_eq!(err(&v, &token), TokenError::HeaderNotObject);
    }

    // --- RS256 / ES256: RFC 7515 A.2 and A.3, key confusion ---------------------------

    const RS_PEM: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/rfc7515-a2-rs256.pub.pem"
    ));
    const ES_PEM: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/rfc7515-a3-es256.pub.pem"
    ));

    fn asym_data(name: &str) -> String {
        let text = match name {
            "rs" => include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/rfc7515-a2-rs256.jwt"
            )),
            "rs-sig" => include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/rfc7515-a2-rs256.tampered-signature.jwt"
            )),
            "rs-payload" => include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/rfc7515-a2-rs256.tampered-payload.jwt"
            )),
            "es" => include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/rfc7515-a3-es256.jwt"
            )),
            "es-sig" => include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/rfc7515-a3-es256.tampered-signature.jwt"
            )),
            "es-payload" => include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/rfc7515-a3-es256.tampered-payload.jwt"
            )),
            _ => panic!("no such vector {name}"),
        };
        text.trim().to_owned()
    }

    fn asym_verifier(alg: Alg, pem: &str) -> Verifier {
        let der = pem_decode(pem, "PUBLIC KEY").expect("pem");
        let key = Key::from_spki_der(None, alg, &der).expect("key fits alg");
        Verifier {
            keys: KeySet::new(vec![key]).expect("keyset"),
            rules: rules(4096),
        }
    }

    #[test]
    fn rfc7515_a2_rs256_and_a3_es256_verify_and_their_twins_do_not() {
        for (alg, pem, good, twins) in [
            (Alg::RS256, RS_PEM, "rs", ["rs-sig", "rs-payload"]),
            (Alg::ES256, ES_PEM, "es", ["es-sig", "es-payload"]),
        ] {
            let v = asym_verifier(alg, pem);
            let token = asym_data(good);
            let mut scratch = Scratch::new(4096);
            let signed = v
                .verify_signature(token.as_bytes(), &mut scratch)
                .expect("RFC signature verifies");
            assert_eq!(signed.alg, alg);
            assert_eq!(
                signed.payload,
                b"{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}"
            );
            let mut scratch = Scratch::new(4096);
            assert_eq!(
                v.verify(token.as_bytes(), 1_300_819_379, &mut scratch)
                    .err(),
                Some(TokenError::MissingSub)
            );
            for twin in twins {
                let t = asym_data(twin);
                let mut scratch = Scratch::new(4096);
                assert_eq!(
                    v.verify_signature(t.as_bytes(), &mut scratch).err(),
                    Some(TokenError::BadSignature),
                    "{twin}"
                );
            }
        }
    }

    #[test]
    fn rsa_and_ec_keys_verify_only_their_own_algorithm() {
        let rs_der = pem_decode(RS_PEM, "PUBLIC KEY").expect("pem");
        let es_der = pem_decode(ES_PEM, "PUBLIC KEY").expect("pem");
        // The SPKI's key type must fit the configured alg.
        for alg in [Alg::ES256, Alg::ES384, Alg::EdDSA, Alg::HS256] {
            assert!(
                matches!(
                    Key::from_spki_der(None, alg, &rs_der),
                    Err(KeyError::WrongKeyType { .. })
                ),
                "{alg}"
            );
        }
        for alg in [Alg::RS256, Alg::PS256, Alg::ES384, Alg::EdDSA] {
            assert!(
                matches!(
                    Key::from_spki_der(None, alg, &es_der),
                    Err(KeyError::WrongKeyType { .. })
                ),
                "{alg}"
            );
        }
        for alg in [
            Alg::RS256,
            Alg::RS384,
            Alg::RS512,
            Alg::PS256,
            Alg::PS384,
            Alg::PS512,
        ] {
            assert!(Key::from_spki_der(None, alg, &rs_der).is_ok(), "{alg}");
        }
        // Classic confusion: HS256 signed with the RSA key's public bytes (the PEM text
        // and the DER), RS256 against the EC key, ES256 against the RSA key.
        let v = Verifier {
            keys: KeySet::new(vec![
                Key::from_spki_der(Some("rsa".into()), Alg::RS256, &rs_der).expect("rsa"),
                Key::from_spki_der(Some("ec".into()), Alg::ES256, &es_der).expect("ec"),
            ])
            .expect("keyset"),
            rules: rules(4096),
        };
        for secret in [RS_PEM.as_bytes(), &rs_der] {
            let forged = sign_hs(
                hmac::HMAC_SHA256,
                secret,
                r#"{"alg":"HS256","kid":"rsa"}"#,
                CLAIMS,
            );
            assert_eq!(err(&v, &forged), TokenError::AlgKeyMismatch);
            let forged = sign_hs(hmac::HMAC_SHA256, secret, r#"{"alg":"HS256"}"#, CLAIMS);
            assert_eq!(err(&v, &forged), TokenError::NoKeyForAlg);
        }
        let rs_sig = asym_data("rs");
        let sig = rs_sig.rsplit('.').next().expect("sig");
        for header in [
            r#"{"alg":"RS256","kid":"ec"}"#,
            r#"{"alg":"PS256","kid":"rsa"}"#,
        ] {
            let t = format!(
                "{}.{}.{sig}",
                b64(header.as_bytes()),
                b64(CLAIMS.as_bytes())
            );
            assert_eq!(err(&v, &t), TokenError::AlgKeyMismatch, "{header}");
        }
        let es_sig = asym_data("es");
        let sig = es_sig.rsplit('.').next().expect("sig");
        let t = format!(
            "{}.{}.{sig}",
            b64(br#"{"alg":"ES256","kid":"rsa"}"#),
            b64(CLAIMS.as_bytes())
        );
        assert_eq!(err(&v, &t), TokenError::AlgKeyMismatch);
        // A signature of the wrong length never reaches ring.
        let t = format!(
            "{}.{}.{}",
            b64(br#"{"alg":"RS256","kid":"rsa"}"#),
            b64(CLAIMS.as_bytes()),
            b64(&[1; 255])
        );
        assert_eq!(err(&v, &t), TokenError::BadSignature);
    }

    #[test]
    fn es384_and_ps256_sign_and_verify() {
        use ring::rand::SystemRandom;
        use ring::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).expect("pkcs8");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("pair");
        let public = crate::auth::spki::PublicKey::ec(
            crate::auth::spki::Curve::P384,
            pair.public_key().as_ref(),
        )
        .expect("point");
        let key = Key::public(Some("p384".into()), Alg::ES384, public).expect("fits");
        let v = Verifier {
            keys: KeySet::new(vec![key]).expect("keyset"),
            rules: rules(4096),
        };
        let input = format!(
            "{}.{}",
            b64(br#"{"alg":"ES384","kid":"p384"}"#),
            b64(CLAIMS.as_bytes())
        );
        let sig = pair.sign(&rng, input.as_bytes()).expect("sign");
        assert_eq!(sig.as_ref().len(), 96);
        let token = format!("{input}.{}", b64(sig.as_ref()));
        assert_eq!(check(&v, &token), Ok(("alice".to_owned(), 1_000_100)));
        let mut bad = sig.as_ref().to_vec();
        bad[95] ^= 1;
        let token = format!("{input}.{}", b64(&bad));
        assert_eq!(err(&v, &token), TokenError::BadSignature);
    }

    // --- SPEC §9 providers: selection by (iss, kid) -----------------------------------

    struct Signer {
        pair: ring::signature::EcdsaKeyPair,
        rng: ring::rand::SystemRandom,
    }

    impl Signer {
        fn new() -> Signer {
            use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .expect("pkcs8");
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .expect("pair");
            Signer { pair, rng }
        }

        fn jwk(&self, kid: Option<&str>) -> serde_json::Value {
            let point = self.pair.public_key().as_ref();
            let mut jwk = serde_json::json!({
                "kty": "EC", "crv": "P-256", "use": "sig",
                "x": b64(point.get(1..33).expect("x")), "y": b64(point.get(33..).expect("y")),
            });
            if let (Some(kid), Some(o)) = (kid, jwk.as_object_mut()) {
                o.insert("kid".into(), kid.into());
            }
            jwk
        }

        fn token(&self, header: &str, payload: &str) -> String {
            let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
            let sig = self.pair.sign(&self.rng, input.as_bytes()).expect("sign");
            format!("{input}.{}", b64(sig.as_ref()))
        }
    }

    fn provider_keys(issuer: &str, jwks: Vec<serde_json::Value>) -> std::sync::Arc<ProviderKeys> {
        let doc = serde_json::json!({ "keys": jwks }).to_string();
        let set = crate::auth::jwk::parse_jwk_set(doc.as_bytes()).expect("set");
        std::sync::Arc::new(ProviderKeys::from_jwk_set(issuer, &set))
    }

    const A: &str = "https://a.example/realms/app";
    const B: &str = "https://b.example";

    fn claims_of(iss: Option<&str>, extra: &str) -> String {
        match iss {
            Some(iss) => payload_with(&format!(r#","iss":"{iss}"{extra}"#)),
            None => payload_with(extra),
        }
    }

    /// Static HS256 key "k1"; providers A and B, each with an ES256 key "k1" of its own.
    fn two_issuers(a: &Signer, b: &Signer) -> Verifier {
        let keys = KeySet::new(vec![
            Key::hmac(Some("k1".into()), Alg::HS256, &HS_SECRET).expect("hmac")
        ])
        .expect("keyset")
        .with_providers(vec![
            Provider::new(
                A.into(),
                None,
                None,
                provider_keys(A, vec![a.jwk(Some("k1"))]),
            ),
            Provider::new(
                B.into(),
                Some("api".into()),
                None,
                provider_keys(B, vec![b.jwk(Some("k1"))]),
            ),
        ])
        .expect("providers");
        Verifier {
            keys,
            rules: rules(4096),
        }
    }

    #[test]
    fn same_kid_two_issuers_each_verifies_only_its_own_tokens() {
        let (a, b) = (Signer::new(), Signer::new());
        let v = two_issuers(&a, &b);
        let es = r#"{"alg":"ES256","kid":"k1"}"#;
        // A's key verifies A's token.
        let t = a.token(es, &claims_of(Some(A), ""));
        let mut scratch = Scratch::new(4096);
        let c = v
            .verify(t.as_bytes(), NOW, &mut scratch)
            .expect("A verifies A");
        assert_eq!(c.iss.as_deref(), Some(A));
        assert_eq!(c.alg, Alg::ES256);
        let fp_a = c.key_fingerprint();
        assert!(v.keys.fingerprints().contains(&fp_a));
        // Signed by A's key but claiming B: B's "k1" is used, and fails.
        let t = a.token(es, &claims_of(Some(B), r#","aud":"api""#));
        assert_eq!(err(&v, &t), TokenError::BadSignature);
        // B's own token (B's audience "api" overrides the unset auth.audience).
        let t = b.token(es, &claims_of(Some(B), r#","aud":"api""#));
        let mut scratch = Scratch::new(4096);
        let c = v
            .verify(t.as_bytes(), NOW, &mut scratch)
            .expect("B verifies B");
        assert_ne!(c.key_fingerprint(), fp_a);
        let t = b.token(es, &claims_of(Some(B), ""));
        assert_eq!(err(&v, &t), TokenError::WrongAudience);
        // A provider's token is never verified by a static key, even one with its kid.
        let t = hs256(r#"{"alg":"HS256","kid":"k1"}"#, &claims_of(Some(A), ""));
        assert_eq!(err(&v, &t), TokenError::AlgKeyMismatch);
        // A provider's key never verifies a token of another (or no) issuer: the static
        // "k1" is selected, and it is HS256.
        for iss in [
            None,
            Some("https://c.example"),
            Some("https://a.example/realms/app/"),
        ] {
            let t = a.token(es, &claims_of(iss, ""));
            assert_eq!(err(&v, &t), TokenError::AlgKeyMismatch, "{iss:?}");
        }
        // Static tokens keep working.
        assert!(check(
            &v,
            &hs256(r#"{"alg":"HS256","kid":"k1"}"#, &claims_of(None, ""))
        )
        .is_ok());
        // Unknown kid within the provider; HS256 and alg/key mismatch from a provider.
        let t = a.token(r#"{"alg":"ES256","kid":"k2"}"#, &claims_of(Some(A), ""));
        assert_eq!(err(&v, &t), TokenError::UnknownKid);
        let t = a.token(r#"{"alg":"ES384","kid":"k1"}"#, &claims_of(Some(A), ""));
        assert_eq!(err(&v, &t), TokenError::AlgKeyMismatch);
        let t = hs256(r#"{"alg":"HS256"}"#, &claims_of(Some(A), ""));
        assert_eq!(err(&v, &t), TokenError::AlgKeyMismatch);
    }

    #[test]
    fn the_same_jwk_under_two_issuers_is_two_keys() {
        let a = Signer::new();
        let ka = provider_keys(A, vec![a.jwk(Some("k"))]);
        let kb = provider_keys(B, vec![a.jwk(Some("k"))]);
        let fa: Vec<u64> = ka.iter().map(Key::fingerprint).collect();
        let fb: Vec<u64> = kb.iter().map(Key::fingerprint).collect();
        assert_eq!(fa.len(), 1);
        assert_ne!(fa, fb);
    }

    #[test]
    fn provider_kidless_selection_allowlist_and_snapshots() {
        let (a, a2) = (Signer::new(), Signer::new());
        let one = KeySet::new(vec![])
            .expect("keyset")
            .with_providers(vec![Provider::new(
                A.into(),
                None,
                Some(vec![Alg::ES256]),
                provider_keys(A, vec![a.jwk(None)]),
            )])
            .expect("providers");
        let v = Verifier {
            keys: one.clone(),
            rules: rules(4096),
        };
        let plain = r#"{"alg":"ES256"}"#;
        assert!(check(&v, &a.token(plain, &claims_of(Some(A), ""))).is_ok());
        // The JWK has no kid: a token naming one finds nothing.
        let t = a.token(r#"{"alg":"ES256","kid":"x"}"#, &claims_of(Some(A), ""));
        assert_eq!(err(&v, &t), TokenError::UnknownKid);
        // Two usable ES256 keys: a token without kid is ambiguous.
        let two = one
            .with_provider_keys(A, provider_keys(A, vec![a.jwk(None), a2.jwk(Some("k2"))]))
            .expect("known issuer");
        let v2 = Verifier {
            keys: two,
            rules: rules(4096),
        };
        assert_eq!(
            err(&v2, &a.token(plain, &claims_of(Some(A), ""))),
            TokenError::AmbiguousKey
        );
        assert!(check(
            &v2,
            &a2.token(r#"{"alg":"ES256","kid":"k2"}"#, &claims_of(Some(A), ""))
        )
        .is_ok());
        // The old snapshot is untouched.
        assert!(check(&v, &a.token(plain, &claims_of(Some(A), ""))).is_ok());
        // Rotation: a set without a's key stops verifying its tokens.
        let rotated = one
            .with_provider_keys(A, provider_keys(A, vec![a2.jwk(Some("k2"))]))
            .expect("known issuer");
        let v3 = Verifier {
            keys: rotated,
            rules: rules(4096),
        };
        assert_eq!(
            err(&v3, &a.token(plain, &claims_of(Some(A), ""))),
            TokenError::BadSignature
        );
        assert!(one
            .with_provider_keys(B, provider_keys(B, vec![]))
            .is_none());
        // `algorithms` allowlist: an RSA key's RS256 is refused when only ES256 is listed.
        let rs = KeySet::new(vec![])
            .expect("keyset")
            .with_providers(vec![Provider::new(
                A.into(),
                None,
                Some(vec![Alg::ES384]),
                provider_keys(A, vec![a.jwk(None)]),
            )])
            .expect("providers");
        let v4 = Verifier {
            keys: rs,
            rules: rules(4096),
        };
        assert_eq!(
            err(&v4, &a.token(plain, &claims_of(Some(A), ""))),
            TokenError::AlgNotAllowed
        );
        // An issuer configured twice.
        assert!(KeySet::new(vec![])
            .expect("keyset")
            .with_providers(vec![
                Provider::new(A.into(), None, None, provider_keys(A, vec![])),
                Provider::new(A.into(), None, None, provider_keys(A, vec![])),
            ])
            .is_err());
    }

    #[test]
    fn peeking_at_the_issuer_reads_nothing_else() {
        use crate::auth::claims::peek_issuer;
        assert_eq!(
            peek_issuer(br#"{"sub":"a","iss":"x"}"#).as_deref(),
            Some("x")
        );
        assert_eq!(peek_issuer(br#"{"iss":"\u0078"}"#).as_deref(), Some("x"));
        assert_eq!(peek_issuer(br#"{"iss":1}"#), None);
        assert_eq!(peek_issuer(br#"{"sub":"a"}"#), None);
        assert_eq!(peek_issuer(br#"["iss"]"#), None);
        assert_eq!(peek_issuer(b"\xff"), None);
        assert_eq!(peek_issuer(br#"{"x":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],"iss":"x"}"#), None);
        // A second `iss` does not get past the full parse after the signature.
        let (a, b) = (Signer::new(), Signer::new());
        let v = two_issuers(&a, &b);
        let t = a.token(
            r#"{"alg":"ES256","kid":"k1"}"#,
            &format!(r#"{{"sub":"a","exp":1000100,"iss":"{A}","iss":"{B}"}}"#),
        );
        assert_eq!(err(&v, &t), TokenError::DuplicateClaim);
    }

    // --- attack catalogue: header parameters -----------------------------------------

    #[test]
    fn crit_b64_typ_and_jwe_parameters() {
        let v = verifier();
        for header in [
            r#"{"alg":"HS256","kid":"hs","crit":["exp"],"exp":1}"#,
            r#"{"alg":"HS256","kid":"hs","crit":["b64"],"b64":false}"#,
            r#"{"alg":"HS256","kid":"hs","crit":["b64"],"b64":true}"#,
            r#"{"alg":"HS256","kid":"hs","crit":["x","y"]}"#,
        ] {
            assert_eq!(
                err(&v, &hs256(header, CLAIMS)),
                TokenError::UnknownCrit,
                "{header}"
            );
        }
        for header in [
            r#"{"alg":"HS256","kid":"hs","crit":[]}"#,
            r#"{"alg":"HS256","kid":"hs","crit":"exp"}"#,
            r#"{"alg":"HS256","kid":"hs","crit":[1]}"#,
            r#"{"alg":"HS256","kid":"hs","crit":null}"#,
        ] {
            assert_eq!(
                err(&v, &hs256(header, CLAIMS)),
                TokenError::Malformed(MalformedKind::Crit),
                "{header}"
            );
        }
        assert_eq!(
            err(
                &v,
                &hs256(r#"{"alg":"HS256","kid":"hs","b64":false}"#, CLAIMS)
            ),
            TokenError::B64False
        );
        // b64: true is the ordinary encoding; tolerated.
        assert!(check(
            &v,
            &hs256(r#"{"alg":"HS256","kid":"hs","b64":true}"#, CLAIMS)
        )
        .is_ok());
        assert_eq!(
            err(
                &v,
                &hs256(r#"{"alg":"HS256","kid":"hs","b64":"false"}"#, CLAIMS)
            ),
            TokenError::Malformed(MalformedKind::B64)
        );
        for typ in [
            "JWT",
            "jwt",
            "at+jwt",
            "AT+JWT",
            "application/jwt",
            "application/at+JWT",
        ] {
            let header = format!(r#"{{"alg":"HS256","kid":"hs","typ":"{typ}"}}"#);
            assert!(check(&v, &hs256(&header, CLAIMS)).is_ok(), "{typ}");
        }
        for typ in ["\"JWS\"", "\"JOSE\"", "\"\"", "\"dpop+jwt\"", "1", "null"] {
            let header = format!(r#"{{"alg":"HS256","kid":"hs","typ":{typ}}}"#);
            assert_eq!(
                err(&v, &hs256(&header, CLAIMS)),
                TokenError::Malformed(MalformedKind::Typ),
                "{typ}"
            );
        }
        for header in [
            r#"{"alg":"HS256","kid":"hs","enc":"A128GCM"}"#,
            r#"{"alg":"HS256","kid":"hs","zip":"DEF"}"#,
        ] {
            assert_eq!(
                err(&v, &hs256(header, CLAIMS)),
                TokenError::Malformed(MalformedKind::JweHeader)
            );
        }
    }

    #[test]
    fn key_pointing_header_parameters_are_ignored() {
        let v = verifier();
        let attacker = Ed25519KeyPair::from_seed_unchecked(&[9; 32]).expect("keypair");
        let x = b64(attacker.public_key().as_ref());
        for header in [
            r#"{"alg":"HS256","kid":"hs","jku":"https://evil.example/jwks.json"}"#.to_owned(),
            r#"{"alg":"HS256","kid":"hs","x5u":"https://evil.example/cert.pem"}"#.to_owned(),
            r#"{"alg":"HS256","kid":"hs","x5c":["MIIB"],"x5t":"abc"}"#.to_owned(),
            format!(
                r#"{{"alg":"HS256","kid":"hs","jwk":{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}}}"#
            ),
        ] {
            // Signed by the configured key: verifies normally.
            assert!(check(&v, &hs256(&header, CLAIMS)).is_ok(), "{header}");
        }
        // Signed by the key embedded in `jwk`: never trusted.
        let header =
            format!(r#"{{"alg":"EdDSA","jwk":{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}}}"#);
        let input = format!("{}.{}", b64(header.as_bytes()), b64(CLAIMS.as_bytes()));
        let token = format!("{input}.{}", b64(attacker.sign(input.as_bytes()).as_ref()));
        assert_eq!(err(&v, &token), TokenError::BadSignature);
    }

    // --- claims ----------------------------------------------------------------------

    #[test]
    fn required_claims_and_their_types() {
        let v = verifier();
        assert_eq!(
            err(&v, &hs256(HS_HEADER, r#"{"exp":1000100}"#)),
            TokenError::MissingSub
        );
        assert_eq!(
            err(&v, &hs256(HS_HEADER, r#"{"sub":"","exp":1000100}"#)),
            TokenError::MissingSub
        );
        assert_eq!(
            err(&v, &hs256(HS_HEADER, r#"{"sub":"a"}"#)),
            TokenError::MissingExp
        );
        assert_eq!(
            err(&v, &hs256(HS_HEADER, r#"{"sub":"a","exp":"1000100"}"#)),
            TokenError::BadClaimType("exp")
        );
        assert_eq!(
            err(&v, &hs256(HS_HEADER, r#"{"sub":7,"exp":1000100}"#)),
            TokenError::BadClaimType("sub")
        );
        // Fractional NumericDate.
        assert!(check(&v, &hs256(HS_HEADER, r#"{"sub":"a","exp":1000100.5}"#)).is_ok());
    }

    #[test]
    fn time_rules() {
        let v = verifier();
        let at = |exp: u64, extra: &str| {
            hs256(HS_HEADER, &format!(r#"{{"sub":"a","exp":{exp}{extra}}}"#))
        };
        // Leeway is 30 s.
        assert_eq!(err(&v, &at(NOW - 30, "")), TokenError::Expired);
        assert_eq!(err(&v, &at(NOW - 1000, "")), TokenError::Expired);
        assert!(check(&v, &at(NOW - 29, "")).is_ok());
        assert!(check(&v, &at(NOW + 1, "")).is_ok());
        assert_eq!(
            err(&v, &at(NOW + 100, &format!(r#","nbf":{}"#, NOW + 31))),
            TokenError::NotYetValid
        );
        assert!(check(&v, &at(NOW + 100, &format!(r#","nbf":{}"#, NOW + 30))).is_ok());
        assert_eq!(
            err(&v, &at(NOW + 100, &format!(r#","iat":{}"#, NOW + 31))),
            TokenError::IssuedInFuture
        );
        assert!(check(&v, &at(NOW + 100, &format!(r#","iat":{}"#, NOW + 30))).is_ok());
        let e = err(&v, &at(NOW - 1000, ""));
        assert!(e.signature_was_valid());
        // Zero leeway.
        let strict = verifier_with(Rules {
            leeway_secs: 0,
            ..rules(4096)
        });
        assert_eq!(err(&strict, &at(NOW, "")), TokenError::Expired);
        assert!(check(&strict, &at(NOW + 1, "")).is_ok());
    }

    #[test]
    fn issuer_and_audience_rules() {
        let v = verifier_with(Rules {
            issuer: Some("https://id.example.com".into()),
            audience: Some("wsgate".into()),
            ..rules(4096)
        });
        let ok = r#","iss":"https://id.example.com","aud":"wsgate""#;
        assert!(check(&v, &hs256(HS_HEADER, &payload_with(ok))).is_ok());
        assert!(check(
            &v,
            &hs256(
                HS_HEADER,
                &payload_with(r#","iss":"https://id.example.com","aud":["other","wsgate"]"#)
            )
        )
        .is_ok());
        for (extra, want) in [
            (
                r#","iss":"https://evil.example.com","aud":"wsgate""#,
                TokenError::WrongIssuer,
            ),
            (r#","aud":"wsgate""#, TokenError::WrongIssuer),
            (
                r#","iss":"https://id.example.com/","aud":"wsgate""#,
                TokenError::WrongIssuer,
            ),
            (
                r#","iss":"https://id.example.com","aud":"WSGATE""#,
                TokenError::WrongAudience,
            ),
            (
                r#","iss":"https://id.example.com","aud":["other"]"#,
                TokenError::WrongAudience,
            ),
            (
                r#","iss":"https://id.example.com","aud":[]"#,
                TokenError::WrongAudience,
            ),
            (
                r#","iss":"https://id.example.com""#,
                TokenError::WrongAudience,
            ),
            (
                r#","iss":"https://id.example.com","aud":"wsgate-x""#,
                TokenError::WrongAudience,
            ),
            (
                r#","iss":"https://id.example.com","aud":[1]"#,
                TokenError::BadClaimType("aud"),
            ),
        ] {
            assert_eq!(
                err(&v, &hs256(HS_HEADER, &payload_with(extra))),
                want,
                "{extra}"
            );
        }
        // Issuer and audience are checked before time: an expired token for someone else
        // is a wrong audience, not an invitation to refresh.
        let t = hs256(
            HS_HEADER,
            r#"{"sub":"a","exp":1,"iss":"https://id.example.com","aud":"other"}"#,
        );
        assert_eq!(err(&v, &t), TokenError::WrongAudience);
    }

    #[test]
    fn scopes_match_whole_words_only() {
        let v = verifier();
        let t = hs256(
            HS_HEADER,
            &payload_with(r#","scope":"echoes  chat:read","scp":["admin.x","echoes"]"#),
        );
        let mut scratch = Scratch::new(4096);
        let c = v.verify(t.as_bytes(), NOW, &mut scratch).expect("valid");
        for s in [
            "echo",
            "ec",
            "echoes ",
            "chat",
            "read",
            "admin",
            "",
            " ",
            "echoes chat:read",
        ] {
            assert!(!c.has_scope(s), "{s:?}");
        }
        for s in ["echoes", "chat:read", "admin.x"] {
            assert!(c.has_scope(s), "{s}");
        }
        assert_eq!(
            c.scopes().collect::<Vec<_>>(),
            ["echoes", "chat:read", "admin.x"]
        );
        assert_eq!(c.scope_text(), "echoes chat:read admin.x");

        let t = hs256(HS_HEADER, &payload_with(r#","scp":["echo"]"#));
        let mut scratch = Scratch::new(4096);
        let c = v.verify(t.as_bytes(), NOW, &mut scratch).expect("valid");
        assert!(c.has_scope("echo"));
        let t = hs256(HS_HEADER, &payload_with(""));
        let mut scratch = Scratch::new(4096);
        let c = v.verify(t.as_bytes(), NOW, &mut scratch).expect("valid");
        assert!(!c.has_scope("echo"));
        assert_eq!(c.scopes().count(), 0);
    }

    // --- scratch ---------------------------------------------------------------------

    #[test]
    fn scratch_never_grows() {
        let v = verifier_with(rules(1024));
        let mut scratch = Scratch::new(1024);
        let caps = |s: &Scratch| (s.buf.capacity(), s.buf.len());
        let before = caps(&scratch);
        let big_scope = (0..100)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let tokens = [
            hs256(HS_HEADER, CLAIMS),
            eddsa(
                ED_HEADER,
                &payload_with(&format!(r#","scope":"{big_scope}""#)),
            ),
            hs256(HS_HEADER, &payload_with(r#","a":1,"b":2,"c":"\u00e9"}"#)),
            "x".repeat(1024),
            "A".repeat(1023) + ".",
        ];
        for t in &tokens {
            let _ = v.verify(t.as_bytes(), NOW, &mut scratch);
            assert_eq!(caps(&scratch), before);
        }
        assert!(check(&v, &tokens[1]).is_ok());
    }

    #[test]
    fn a_small_scratch_is_resized_to_the_rules() {
        let v = verifier();
        let mut scratch = Scratch::new(16);
        let t = hs256(HS_HEADER, CLAIMS);
        assert!(v.verify(t.as_bytes(), NOW, &mut scratch).is_ok());
        assert_eq!(scratch.max_token_bytes(), 4096);
    }
}
