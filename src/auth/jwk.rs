//! Sans-IO JWK Sets (RFC 7517 §5) and OpenID Connect Discovery documents (OpenID Connect
//! Discovery 1.0 §3, §4.3): bytes in, usable public keys and the reason each other key was
//! skipped out (SPEC §9). Nothing here fetches: `x5c` / `x5u` are never followed.

use std::collections::HashMap;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};

use super::keys::Alg;
use super::spki::{Curve, PublicKey, SpkiError};

/// The largest JWK Set or discovery document accepted (SPEC §9: over 1 MiB is a failed
/// fetch).
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Private key members of RSA (RFC 7518 §6.3.2), EC / OKP (`d`) and symmetric keys (`k`):
/// a key carrying any of them is refused, never used as a public key.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why a whole document was refused (the last good set stays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentError {
    /// Larger than [`MAX_DOCUMENT_BYTES`] (its size).
    TooLarge(usize),
    /// Not JSON (or not UTF-8).
    NotJson,
    /// JSON, but not `{"keys":[...]}`.
    NotKeySet,
    /// JSON, but not a discovery document (not an object, or no string `issuer` /
    /// `jwks_uri`).
    NotDiscovery,
    /// The discovery document's `issuer` is not the configured one (Discovery §4.3).
    IssuerMismatch,
}

impl DocumentError {
    /// A short label for metrics (`reason`).
    pub fn label(&self) -> &'static str {
        match self {
            DocumentError::TooLarge(_) => "too_large",
            DocumentError::NotJson => "not_json",
            DocumentError::NotKeySet => "not_jwks",
            DocumentError::NotDiscovery => "not_discovery",
            DocumentError::IssuerMismatch => "issuer_mismatch",
        }
    }
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DocumentError::TooLarge(len) => write!(
                f,
                "document is {len} bytes; at most {MAX_DOCUMENT_BYTES} are accepted"
            ),
            DocumentError::NotJson => f.write_str("document is not JSON"),
            DocumentError::NotKeySet => {
                f.write_str("document is not a JWK Set (a JSON object with a \"keys\" array)")
            }
            DocumentError::NotDiscovery => f.write_str(
                "document is not an OpenID Connect discovery document (needs string issuer and jwks_uri)",
            ),
            DocumentError::IssuerMismatch => {
                f.write_str("discovery document's issuer is not the configured issuer")
            }
        }
    }
}

impl std::error::Error for DocumentError {}

/// Why one JWK of a set was skipped (the rest of the set is used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Not a JSON object.
    NotObject,
    /// No string `kty`.
    MissingKty,
    /// `kty` is `oct`: symmetric keys are never taken from a JWK Set (SPEC §9).
    Symmetric,
    /// A private key member is present (its name).
    PrivateMember(&'static str),
    /// A `kty` other than RSA, EC, OKP.
    UnsupportedKty(String),
    /// An EC / OKP `crv` other than P-256, P-384, Ed25519.
    UnsupportedCurve(String),
    /// `use` is present and is not `sig` (RFC 7517 §4.2).
    NotForSignatures,
    /// `key_ops` is present and has no `verify` (RFC 7517 §4.3).
    NoVerifyOp,
    /// `kid` is not a non-empty string.
    BadKid,
    /// A required member is missing or not canonical base64url (its name).
    BadMember(&'static str),
    /// `alg` names an algorithm this gateway does not verify from a JWK Set (HS*, none,
    /// unknown).
    UnsupportedAlg(String),
    /// `alg` does not fit the key type (RS256 on an EC key, ...).
    AlgKeyMismatch(String),
    /// The key material was refused (too small, off the curve, ...).
    Key(SpkiError),
    /// Another usable key of the set has the same `kid` (both are skipped).
    DuplicateKid,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NotObject => f.write_str("not a JSON object"),
            SkipReason::MissingKty => f.write_str("no kty"),
            SkipReason::Symmetric => f.write_str("symmetric (oct) keys are never used"),
            SkipReason::PrivateMember(m) => write!(f, "carries the private member {m:?}"),
            SkipReason::UnsupportedKty(k) => write!(f, "unsupported kty {:?}", cut(k)),
            SkipReason::UnsupportedCurve(c) => write!(f, "unsupported crv {:?}", cut(c)),
            SkipReason::NotForSignatures => f.write_str("use is not \"sig\""),
            SkipReason::NoVerifyOp => f.write_str("key_ops does not contain \"verify\""),
            SkipReason::BadKid => f.write_str("kid is not a non-empty string"),
            SkipReason::BadMember(m) => {
                write!(
                    f,
                    "member {m:?} is missing or not base64url of the right size"
                )
            }
            SkipReason::UnsupportedAlg(a) => write!(f, "alg {:?} is not accepted", cut(a)),
            SkipReason::AlgKeyMismatch(a) => {
                write!(f, "alg {:?} does not fit the key type", cut(a))
            }
            SkipReason::Key(e) => e.fmt(f),
            SkipReason::DuplicateKid => f.write_str("another key of the set has the same kid"),
        }
    }
}

/// At most 64 characters of a document-controlled string, for messages.
fn cut(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => s.get(..i).unwrap_or(s),
        None => s,
    }
}

/// One usable key of a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    /// `kid`, when present.
    pub kid: Option<String>,
    /// The algorithms this key verifies: the JWK's `alg`, or every algorithm its type
    /// allows (RFC 7518 §3.1) when it has none.
    pub algorithms: Vec<Alg>,
    /// The public key.
    pub key: PublicKey,
}

/// A key that was skipped: its position, its `kid` when readable, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Index in the `keys` array.
    pub index: usize,
    /// Its `kid`, if it had a string one.
    pub kid: Option<String>,
    /// Why.
    pub reason: SkipReason,
}

/// A parsed JWK Set: the usable keys, in document order, and the skipped ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwkSet {
    /// Usable keys.
    pub keys: Vec<Jwk>,
    /// Skipped keys (logged once per fetch).
    pub skipped: Vec<Skipped>,
}

/// Parses a JWK Set document (RFC 7517 §5).
pub fn parse_jwk_set(bytes: &[u8]) -> Result<JwkSet, DocumentError> {
    let root = parse_json(bytes)?;
    let keys = root
        .as_object()
        .and_then(|o| o.get("keys"))
        .and_then(Value::as_array)
        .ok_or(DocumentError::NotKeySet)?;
    let mut set = JwkSet::default();
    let mut usable: Vec<(usize, Jwk)> = Vec::new();
    for (index, value) in keys.iter().enumerate() {
        let kid = value
            .get("kid")
            .and_then(Value::as_str)
            .map(|s| cut(s).to_owned());
        match parse_jwk(value) {
            Ok(jwk) => usable.push((index, jwk)),
            Err(reason) => set.skipped.push(Skipped { index, kid, reason }),
        }
    }
    // SPEC §9: usable keys that share a kid within one set are ambiguous: none is used.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (_, jwk) in &usable {
        if let Some(kid) = jwk.kid.as_deref() {
            *counts.entry(kid).or_default() += 1;
        }
    }
    let duplicated: Vec<String> = counts
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(kid, _)| kid.to_owned())
        .collect();
    for (index, jwk) in usable {
        match jwk.kid.as_ref() {
            Some(kid) if duplicated.contains(kid) => set.skipped.push(Skipped {
                index,
                kid: Some(cut(kid).to_owned()),
                reason: SkipReason::DuplicateKid,
            }),
            _ => set.keys.push(jwk),
        }
    }
    set.skipped.sort_by_key(|s| s.index);
    Ok(set)
}

fn parse_json(bytes: &[u8]) -> Result<Value, DocumentError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(DocumentError::TooLarge(bytes.len()));
    }
    // serde_json bounds nesting (128 levels), so a hostile `[[[[` cannot overflow the stack.
    serde_json::from_slice(bytes).map_err(|_| DocumentError::NotJson)
}

/// One JWK (RFC 7517 §4, RFC 7518 §6, RFC 8037 §2) to a usable key, or why not.
pub fn parse_jwk(value: &Value) -> Result<Jwk, SkipReason> {
    let jwk = value.as_object().ok_or(SkipReason::NotObject)?;
    let kty = jwk
        .get("kty")
        .and_then(Value::as_str)
        .ok_or(SkipReason::MissingKty)?;
    if kty == "oct" {
        return Err(SkipReason::Symmetric);
    }
    if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| jwk.contains_key(**m)) {
        return Err(SkipReason::PrivateMember(member));
    }
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(kid)) if !kid.is_empty() => Some(kid.clone()),
        Some(_) => return Err(SkipReason::BadKid),
    };
    // RFC 7517 §4.2: `use` "sig" for signatures.
    if let Some(usage) = jwk.get("use") {
        if usage.as_str() != Some("sig") {
            return Err(SkipReason::NotForSignatures);
        }
    }
    // RFC 7517 §4.3: `key_ops` lists what the key may do.
    if let Some(ops) = jwk.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verify {
            return Err(SkipReason::NoVerifyOp);
        }
    }
    let key = match kty {
        "RSA" => {
            let n = member(jwk, "n", None)?;
            let e = member(jwk, "e", None)?;
            PublicKey::rsa(&n, &e).map_err(SkipReason::Key)?
        }
        "EC" => {
            let crv = jwk
                .get("crv")
                .and_then(Value::as_str)
                .ok_or(SkipReason::BadMember("crv"))?;
            let curve = match crv {
                "P-256" => Curve::P256,
                "P-384" => Curve::P384,
                other => return Err(SkipReason::UnsupportedCurve(other.to_owned())),
            };
            let len = curve.coordinate_len();
            let x = member(jwk, "x", Some(len))?;
            let y = member(jwk, "y", Some(len))?;
            let point = [&[0x04][..], &x, &y].concat();
            PublicKey::ec(curve, &point).map_err(SkipReason::Key)?
        }
        "OKP" => {
            let crv = jwk
                .get("crv")
                .and_then(Value::as_str)
                .ok_or(SkipReason::BadMember("crv"))?;
            if crv != "Ed25519" {
                return Err(SkipReason::UnsupportedCurve(crv.to_owned()));
            }
            let x = member(jwk, "x", Some(32))?;
            let x: [u8; 32] = x.try_into().map_err(|_| SkipReason::BadMember("x"))?;
            PublicKey::Ed25519(x)
        }
        other => return Err(SkipReason::UnsupportedKty(other.to_owned())),
    };
    let algorithms = match jwk.get("alg") {
        None => Alg::ALL
            .into_iter()
            .filter(|a| !a.is_hmac() && a.fits(&key))
            .collect(),
        Some(Value::String(name)) => {
            // RFC 8037 §3.1 `EdDSA`, RFC 9864 `Ed25519`; never HS* or none from a set.
            let alg = match Alg::from_header(name) {
                Some(alg) if !alg.is_hmac() => alg,
                _ => return Err(SkipReason::UnsupportedAlg(name.clone())),
            };
            if !alg.fits(&key) {
                return Err(SkipReason::AlgKeyMismatch(name.clone()));
            }
            vec![alg]
        }
        Some(_) => return Err(SkipReason::UnsupportedAlg("(not a string)".into())),
    };
    Ok(Jwk {
        kid,
        algorithms,
        key,
    })
}

/// A base64url member (RFC 7518 §6: unpadded), of exactly `len` bytes when given.
fn member(
    jwk: &Map<String, Value>,
    name: &'static str,
    len: Option<usize>,
) -> Result<Vec<u8>, SkipReason> {
    let text = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or(SkipReason::BadMember(name))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| SkipReason::BadMember(name))?;
    if bytes.is_empty() || len.is_some_and(|len| bytes.len() != len) {
        return Err(SkipReason::BadMember(name));
    }
    Ok(bytes)
}

/// Parses an OpenID Connect discovery document (Discovery §3) for `issuer`: its `issuer`
/// must equal the configured one exactly (§4.3); returns its `jwks_uri`.
pub fn parse_discovery(bytes: &[u8], issuer: &str) -> Result<String, DocumentError> {
    let root = parse_json(bytes)?;
    let doc = root.as_object().ok_or(DocumentError::NotDiscovery)?;
    let found = doc
        .get("issuer")
        .and_then(Value::as_str)
        .ok_or(DocumentError::NotDiscovery)?;
    if found != issuer {
        return Err(DocumentError::IssuerMismatch);
    }
    doc.get("jwks_uri")
        .and_then(Value::as_str)
        .filter(|uri| !uri.is_empty())
        .map(str::to_owned)
        .ok_or(DocumentError::NotDiscovery)
}

/// The discovery URL for `issuer` (Discovery §4.1: `/.well-known/openid-configuration`
/// appended after removing a trailing `/`).
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{
        EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING,
        ECDSA_P384_SHA384_FIXED_SIGNING,
    };
    use serde_json::json;

    /// RFC 7515 A.2's RSA modulus (2048 bits).
    const RSA_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
    /// RFC 7515 A.3's P-256 point.
    const EC_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const EC_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    /// RFC 8037 A.2's Ed25519 public key.
    const OKP_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    fn rsa() -> Value {
        json!({"kty": "RSA", "kid": "r", "n": RSA_N, "e": "AQAB"})
    }
    fn ec() -> Value {
        json!({"kty": "EC", "kid": "e", "crv": "P-256", "x": EC_X, "y": EC_Y})
    }
    fn okp() -> Value {
        json!({"kty": "OKP", "kid": "o", "crv": "Ed25519", "x": OKP_X})
    }
    fn with(mut v: Value, key: &str, value: Value) -> Value {
        if let Some(o) = v.as_object_mut() {
            if value.is_null() {
                o.remove(key);
            } else {
                o.insert(key.to_owned(), value);
            }
        }
        v
    }
    fn skip(v: Value) -> SkipReason {
        parse_jwk(&v).expect_err("must be skipped")
    }
    fn set(keys: Vec<Value>) -> JwkSet {
        parse_jwk_set(json!({ "keys": keys }).to_string().as_bytes()).expect("a set")
    }

    #[test]
    fn usable_keys_and_their_algorithms() {
        let r = parse_jwk(&rsa()).expect("rsa");
        assert_eq!(r.kid.as_deref(), Some("r"));
        assert_eq!(
            r.algorithms,
            [
                Alg::RS256,
                Alg::RS384,
                Alg::RS512,
                Alg::PS256,
                Alg::PS384,
                Alg::PS512
            ]
        );
        let e = parse_jwk(&ec()).expect("ec");
        assert_eq!(e.algorithms, [Alg::ES256]);
        let o = parse_jwk(&okp()).expect("okp");
        assert_eq!(o.algorithms, [Alg::EdDSA]);
        assert_eq!(
            o.key,
            PublicKey::Ed25519(
                URL_SAFE_NO_PAD
                    .decode(OKP_X)
                    .expect("x")
                    .try_into()
                    .expect("32")
            )
        );
        // `alg` narrows to one algorithm; RFC 9864's Ed25519 name is EdDSA.
        assert_eq!(
            parse_jwk(&with(rsa(), "alg", json!("PS384")))
                .expect("ps")
                .algorithms,
            [Alg::PS384]
        );
        assert_eq!(
            parse_jwk(&with(okp(), "alg", json!("Ed25519")))
                .expect("ed")
                .algorithms,
            [Alg::EdDSA]
        );
        // use sig and key_ops with verify are fine; x5c / x5u / unknown members ignored.
        let full = with(
            with(
                with(
                    with(ec(), "use", json!("sig")),
                    "key_ops",
                    json!(["verify", "sign"]),
                ),
                "x5u",
                json!("https://evil.example/x"),
            ),
            "x5c",
            json!(["MIIB"]),
        );
        assert!(parse_jwk(&full).is_ok());
        // No kid is allowed.
        assert_eq!(
            parse_jwk(&with(ec(), "kid", Value::Null))
                .expect("no kid")
                .kid,
            None
        );
        // P-384.
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).expect("k");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("p");
        let point = pair.public_key().as_ref();
        let p384 = json!({"kty": "EC", "crv": "P-384", "x": URL_SAFE_NO_PAD.encode(&point[1..49]), "y": URL_SAFE_NO_PAD.encode(&point[49..])});
        assert_eq!(parse_jwk(&p384).expect("p384").algorithms, [Alg::ES384]);
    }

    #[test]
    fn every_skip_reason() {
        assert_eq!(skip(json!("x")), SkipReason::NotObject);
        assert_eq!(skip(json!({"n": RSA_N})), SkipReason::MissingKty);
        assert_eq!(
            skip(json!({"kty": "oct", "k": "AAAA"})),
            SkipReason::Symmetric
        );
        assert_eq!(skip(json!({"kty": "oct"})), SkipReason::Symmetric);
        for m in PRIVATE_MEMBERS {
            assert_eq!(
                skip(with(rsa(), m, json!("AQAB"))),
                SkipReason::PrivateMember(m),
                "{m}"
            );
        }
        assert_eq!(
            skip(with(ec(), "d", json!("AA"))),
            SkipReason::PrivateMember("d")
        );
        assert_eq!(
            skip(with(okp(), "d", json!("AA"))),
            SkipReason::PrivateMember("d")
        );
        assert_eq!(
            skip(with(rsa(), "kty", json!("RSA-PSS"))),
            SkipReason::UnsupportedKty("RSA-PSS".into())
        );
        assert_eq!(
            skip(with(ec(), "crv", json!("P-521"))),
            SkipReason::UnsupportedCurve("P-521".into())
        );
        assert_eq!(
            skip(with(ec(), "crv", json!("secp256k1"))),
            SkipReason::UnsupportedCurve("secp256k1".into())
        );
        assert_eq!(
            skip(with(okp(), "crv", json!("X25519"))),
            SkipReason::UnsupportedCurve("X25519".into())
        );
        assert_eq!(
            skip(with(ec(), "crv", Value::Null)),
            SkipReason::BadMember("crv")
        );
        assert_eq!(
            skip(with(rsa(), "use", json!("enc"))),
            SkipReason::NotForSignatures
        );
        assert_eq!(
            skip(with(rsa(), "use", json!(1))),
            SkipReason::NotForSignatures
        );
        assert_eq!(
            skip(with(rsa(), "key_ops", json!(["sign"]))),
            SkipReason::NoVerifyOp
        );
        assert_eq!(
            skip(with(rsa(), "key_ops", json!("verify"))),
            SkipReason::NoVerifyOp
        );
        assert_eq!(
            skip(with(rsa(), "key_ops", json!([]))),
            SkipReason::NoVerifyOp
        );
        assert_eq!(skip(with(rsa(), "kid", json!(7))), SkipReason::BadKid);
        assert_eq!(skip(with(rsa(), "kid", json!(""))), SkipReason::BadKid);
        assert_eq!(
            skip(with(rsa(), "n", Value::Null)),
            SkipReason::BadMember("n")
        );
        assert_eq!(
            skip(with(rsa(), "e", json!("AQAB="))),
            SkipReason::BadMember("e")
        );
        assert_eq!(
            skip(with(rsa(), "n", json!("a+b/"))),
            SkipReason::BadMember("n")
        );
        assert_eq!(
            skip(with(ec(), "x", json!(&EC_X[..40]))),
            SkipReason::BadMember("x")
        );
        assert_eq!(
            skip(with(okp(), "x", json!("AAAA"))),
            SkipReason::BadMember("x")
        );
        // RSA modulus under 2048 bits.
        let short = URL_SAFE_NO_PAD.encode(&URL_SAFE_NO_PAD.decode(RSA_N).expect("n")[..128]);
        assert!(matches!(
            skip(with(rsa(), "n", json!(short))),
            SkipReason::Key(SpkiError::RsaTooSmall(_))
        ));
        // EC point off the curve.
        let mut y = URL_SAFE_NO_PAD.decode(EC_Y).expect("y");
        y[31] ^= 1;
        assert_eq!(
            skip(with(ec(), "y", json!(URL_SAFE_NO_PAD.encode(&y)))),
            SkipReason::Key(SpkiError::EcNotOnCurve)
        );
        // alg: never HS* or none; must fit the key type.
        for alg in ["HS256", "none", "RS1", "ES512"] {
            assert_eq!(
                skip(with(rsa(), "alg", json!(alg))),
                SkipReason::UnsupportedAlg(alg.into()),
                "{alg}"
            );
        }
        assert_eq!(
            skip(with(rsa(), "alg", json!(1))),
            SkipReason::UnsupportedAlg("(not a string)".into())
        );
        assert_eq!(
            skip(with(rsa(), "alg", json!("ES256"))),
            SkipReason::AlgKeyMismatch("ES256".into())
        );
        assert_eq!(
            skip(with(ec(), "alg", json!("RS256"))),
            SkipReason::AlgKeyMismatch("RS256".into())
        );
        assert_eq!(
            skip(with(ec(), "alg", json!("ES384"))),
            SkipReason::AlgKeyMismatch("ES384".into())
        );
        assert_eq!(
            skip(with(okp(), "alg", json!("ES256"))),
            SkipReason::AlgKeyMismatch("ES256".into())
        );
        // Every reason reads as text.
        assert!(!SkipReason::DuplicateKid.to_string().is_empty());
    }

    #[test]
    fn a_set_keeps_usable_keys_and_skips_ambiguous_kids() {
        let s = set(vec![
            rsa(),
            json!({"kty": "oct", "kid": "h", "k": "AAAA"}),
            ec(),
            with(okp(), "kid", json!("r")),
            with(ec(), "kid", Value::Null),
        ]);
        let kids: Vec<_> = s.keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, [Some("e"), None]);
        let skipped: Vec<_> = s
            .skipped
            .iter()
            .map(|k| (k.index, k.kid.as_deref(), k.reason.clone()))
            .collect();
        assert_eq!(
            skipped,
            [
                (0, Some("r"), SkipReason::DuplicateKid),
                (1, Some("h"), SkipReason::Symmetric),
                (3, Some("r"), SkipReason::DuplicateKid),
            ]
        );
        // An unusable key does not make a usable one with the same kid ambiguous.
        let s = set(vec![
            rsa(),
            with(with(rsa(), "use", json!("enc")), "kid", json!("r")),
        ]);
        assert_eq!(s.keys.len(), 1);
        assert_eq!(s.skipped[0].reason, SkipReason::NotForSignatures);
        // Empty set: fine (no usable key).
        assert_eq!(set(vec![]), JwkSet::default());
    }

    #[test]
    fn document_errors() {
        assert_eq!(parse_jwk_set(b"not json"), Err(DocumentError::NotJson));
        assert_eq!(parse_jwk_set(b"{\"keys\":[}"), Err(DocumentError::NotJson));
        assert_eq!(parse_jwk_set(b"\xff\xfe"), Err(DocumentError::NotJson));
        assert_eq!(parse_jwk_set(b""), Err(DocumentError::NotJson));
        for doc in [
            "[]",
            "{}",
            "{\"keys\":{}}",
            "{\"keys\":null}",
            "\"keys\"",
            "{\"Keys\":[]}",
        ] {
            assert_eq!(
                parse_jwk_set(doc.as_bytes()),
                Err(DocumentError::NotKeySet),
                "{doc}"
            );
        }
        let mut big = b"{\"keys\":[],\"pad\":\"".to_vec();
        big.resize(MAX_DOCUMENT_BYTES, b'a');
        big.extend_from_slice(b"\"}");
        assert_eq!(
            parse_jwk_set(&big),
            Err(DocumentError::TooLarge(MAX_DOCUMENT_BYTES + 2))
        );
        // Exactly at the limit: parsed.
        big.truncate(MAX_DOCUMENT_BYTES - 2);
        big.extend_from_slice(b"\"}");
        assert_eq!(parse_jwk_set(&big), Ok(JwkSet::default()));
        // Deep nesting is an error, not a stack overflow.
        let deep = format!(
            "{{\"keys\":[{}{}]}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(parse_jwk_set(deep.as_bytes()), Err(DocumentError::NotJson));
        for e in [
            DocumentError::TooLarge(1),
            DocumentError::NotJson,
            DocumentError::NotKeySet,
            DocumentError::NotDiscovery,
            DocumentError::IssuerMismatch,
        ] {
            assert!(!e.to_string().is_empty() && !e.label().is_empty());
        }
    }

    #[test]
    fn discovery_documents() {
        let iss = "https://id.example.com/realms/app";
        let doc = json!({"issuer": iss, "jwks_uri": "https://id.example.com/realms/app/certs", "other": [1]});
        assert_eq!(
            parse_discovery(doc.to_string().as_bytes(), iss),
            Ok("https://id.example.com/realms/app/certs".into())
        );
        for other in [
            "https://id.example.com/realms/app/",
            "https://ID.example.com/realms/app",
            "https://evil.example/realms/app",
            "",
        ] {
            let doc = json!({"issuer": other, "jwks_uri": "https://x/certs"});
            assert_eq!(
                parse_discovery(doc.to_string().as_bytes(), iss),
                Err(DocumentError::IssuerMismatch),
                "{other}"
            );
        }
        for doc in [
            json!({"jwks_uri": "https://x"}),
            json!({"issuer": iss}),
            json!({"issuer": iss, "jwks_uri": ""}),
            json!({"issuer": iss, "jwks_uri": 5}),
            json!([iss]),
        ] {
            assert_eq!(
                parse_discovery(doc.to_string().as_bytes(), iss),
                Err(DocumentError::NotDiscovery),
                "{doc}"
            );
        }
        assert_eq!(parse_discovery(b"<html>", iss), Err(DocumentError::NotJson));
        assert_eq!(
            discovery_url("https://a.example/r/"),
            "https://a.example/r/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://a.example"),
            "https://a.example/.well-known/openid-configuration"
        );
    }

    #[test]
    fn the_p256_key_of_ring_round_trips() {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("k");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("p");
        let point = pair.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])});
        assert_eq!(
            parse_jwk(&jwk).expect("usable").key,
            PublicKey::Ec {
                curve: Curve::P256,
                point: point.into()
            }
        );
    }
}
