//! The JWT claims set (RFC 7519 §4): one pass over the payload JSON with a custom visitor
//! that rejects duplicate names, checks each registered claim's type and keeps the claims
//! borrowed; then issuer, audience and time.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::de::{Deserializer as _, MapAccess, Visitor};

use super::error::{MalformedKind, TokenError};
use super::jws::{self, fail, AnyScalar, NameSeed, NameSet, Scalar, Skip, StrList, StrListSeed};
use super::keys::Alg;

/// Most members accepted in a claims object.
pub const MAX_CLAIMS: usize = 256;
/// Most distinct scopes kept from `scope` and `scp` together.
pub const MAX_SCOPES: usize = 256;

/// Verified claims, borrowed from the token, the scratch buffer and the verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims<'s> {
    /// `sub`: non-empty, no control characters.
    pub sub: Cow<'s, str>,
    /// `exp`, unix seconds (a fractional NumericDate is rounded down).
    pub exp: u64,
    /// `nbf`, unix seconds (rounded up).
    pub nbf: Option<u64>,
    /// `iat`, unix seconds (rounded down).
    pub iat: Option<u64>,
    /// `jti`.
    pub jti: Option<Cow<'s, str>>,
    /// `iss`.
    pub iss: Option<Cow<'s, str>>,
    /// The `kid` of the key that verified the token (the configured kid; equal to the
    /// header's `kid` when it had one).
    pub kid: Option<&'s str>,
    /// The algorithm that verified the token (the key's configured one).
    pub alg: Alg,
    /// The payload segment as received (unpadded base64url), for `forward_claims`.
    pub payload_b64: &'s str,
    /// Distinct scopes from `scope` then `scp`, single-space separated.
    scopes: &'s str,
    key_fingerprint: u64,
}

impl<'s> Claims<'s> {
    /// Assembles verified claims (used by the verifier after every check passed).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        raw: RawClaims<'s>,
        sub: Cow<'s, str>,
        exp: u64,
        kid: Option<&'s str>,
        alg: Alg,
        payload_b64: &'s str,
        scopes: &'s str,
        key_fingerprint: u64,
    ) -> Claims<'s> {
        Claims {
            sub,
            exp,
            nbf: raw.nbf,
            iat: raw.iat,
            jti: raw.jti,
            iss: raw.iss,
            kid,
            alg,
            payload_b64,
            scopes,
            key_fingerprint,
        }
    }

    /// Claims kept by a worker's cache of verified tokens ([`super::cache`]), borrowed
    /// from the cache entry.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn cached(
        sub: &'s str,
        exp: u64,
        nbf: Option<u64>,
        iat: Option<u64>,
        jti: Option<&'s str>,
        iss: Option<&'s str>,
        kid: Option<&'s str>,
        alg: Alg,
        payload_b64: &'s str,
        scopes: &'s str,
        key_fingerprint: u64,
    ) -> Claims<'s> {
        Claims {
            sub: Cow::Borrowed(sub),
            exp,
            nbf,
            iat,
            jti: jti.map(Cow::Borrowed),
            iss: iss.map(Cow::Borrowed),
            kid,
            alg,
            payload_b64,
            scopes,
            key_fingerprint,
        }
    }

    /// Does the token carry scope `s`? Whole-scope match against the union of `scope`
    /// (space-separated) and `scp` (array); never a substring or prefix.
    pub fn has_scope(&self, s: &str) -> bool {
        !s.is_empty() && self.scopes().any(|have| have == s)
    }

    /// The token's distinct scopes, `scope` first, then `scp`.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scopes.split(' ').filter(|s| !s.is_empty())
    }

    /// The scopes as one space-separated string (e.g. for `X-Auth-Scope`).
    pub fn scope_text(&self) -> &'s str {
        self.scopes
    }

    /// The fingerprint of the key that verified the token ([`super::keys::Key::fingerprint`]):
    /// what a reload or a new key set compares to retire sessions ("key retired").
    pub fn key_fingerprint(&self) -> u64 {
        self.key_fingerprint
    }
}

/// What the visitor collected, before the required/issuer/audience/time rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawClaims<'a> {
    /// `exp`, if present.
    pub exp: Option<u64>,
    /// `nbf`, if present.
    pub nbf: Option<u64>,
    /// `iat`, if present.
    pub iat: Option<u64>,
    /// `sub`, if present (not yet checked for emptiness).
    pub sub: Option<Cow<'a, str>>,
    /// `iss`, if present.
    pub iss: Option<Cow<'a, str>>,
    /// `jti`, if present.
    pub jti: Option<Cow<'a, str>>,
    /// `aud`: None when absent; Some(contains the configured audience) when present.
    pub aud: Option<bool>,
}

/// The distinct scopes of one token, copied into storage whose capacity is fixed when the
/// scratch is made (no allocation per token).
#[derive(Debug)]
pub struct ScopeSet {
    text: String,
    count: usize,
}

impl ScopeSet {
    /// Room for `max_bytes` of scope text.
    pub fn with_capacity(max_bytes: usize) -> ScopeSet {
        ScopeSet {
            text: String::with_capacity(max_bytes),
            count: 0,
        }
    }

    /// Forgets every scope, keeping the storage.
    pub fn clear(&mut self) {
        self.text.clear();
        self.count = 0;
    }

    /// The scopes, single-space separated.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Adds one scope token unless already present. RFC 6749 §3.3: scope-token =
    /// 1*( %x21 / %x23-5B / %x5D-7E ); anything else (control characters, quotes,
    /// backslash, spaces inside an `scp` entry, non-ASCII) is refused.
    pub fn insert(&mut self, scope: &str) -> Result<(), MalformedKind> {
        if scope.is_empty() || !scope.bytes().all(is_scope_char) {
            return Err(MalformedKind::Json);
        }
        if self.text.split(' ').any(|have| have == scope) {
            return Ok(());
        }
        let needed = scope.len() + usize::from(!self.text.is_empty());
        if self.count >= MAX_SCOPES || self.text.capacity() - self.text.len() < needed {
            return Err(MalformedKind::TooManyScopes);
        }
        if !self.text.is_empty() {
            self.text.push(' ');
        }
        self.text.push_str(scope);
        self.count += 1;
        Ok(())
    }

    /// Adds every token of a space-separated `scope` string (RFC 6749 §3.3; runs of
    /// spaces are tolerated).
    pub fn insert_all(&mut self, scope: &str) -> Result<(), MalformedKind> {
        for token in scope.split(' ').filter(|t| !t.is_empty()) {
            self.insert(token)?;
        }
        Ok(())
    }
}

/// RFC 6749 §3.3 NQCHAR minus space.
fn is_scope_char(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E)
}

/// Parses the decoded payload of a correctly signed token. `audience` is `auth.audience`
/// (matched while parsing so that `aud` arrays need no storage).
pub fn parse_claims<'a>(
    bytes: &'a [u8],
    audience: Option<&str>,
    names: &mut NameSet,
    scopes: &mut ScopeSet,
) -> Result<RawClaims<'a>, TokenError> {
    // RFC 7519 §7.2 step 10: the payload must be a UTF-8 JSON object.
    let text = std::str::from_utf8(bytes).map_err(|_| TokenError::PayloadNotObject)?;
    if text.trim_start_matches(jws::is_json_ws).as_bytes().first() != Some(&b'{') {
        return Err(TokenError::PayloadNotObject);
    }
    names.clear();
    scopes.clear();
    let slot = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = de.deserialize_map(ClaimsVisitor {
        audience,
        names,
        scopes,
        slot: &slot,
    });
    let as_payload = |e: TokenError| match e {
        TokenError::Malformed(k) => TokenError::PayloadMalformed(k),
        other => other,
    };
    let raw = match parsed {
        Ok(raw) => raw,
        Err(_) => {
            let e = slot
                .take()
                .unwrap_or(TokenError::PayloadMalformed(MalformedKind::Json));
            return Err(as_payload(e));
        }
    };
    de.end()
        .map_err(|_| TokenError::PayloadMalformed(MalformedKind::Json))?;
    Ok(raw)
}

/// The top-level `iss` of a payload whose signature is not yet checked, read only to
/// pick the issuer whose keys verify it (SPEC §9: selection by (`iss`, `kid`)). Nothing
/// else is looked at; `None` for anything that is not a JSON object with a string `iss`
/// (the full parse after the signature rejects what is malformed, duplicates included).
pub fn peek_issuer(bytes: &[u8]) -> Option<Cow<'_, str>> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.trim_start_matches(jws::is_json_ws).as_bytes().first() != Some(&b'{') {
        return None;
    }
    let slot = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_map(IssuerVisitor { slot: &slot }).ok()?
}

struct IssuerVisitor<'a> {
    slot: &'a Cell<Option<TokenError>>,
}

impl<'de> Visitor<'de> for IssuerVisitor<'_> {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a claims object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = 0usize;
        let mut iss = None;
        while let Some(name) = map.next_key_seed(NameSeed)? {
            members += 1;
            if members > MAX_CLAIMS {
                return Ok(None);
            }
            if name == "iss" && iss.is_none() {
                // The first `iss` wins here; a second one fails the full parse later.
                iss = Some(
                    map.next_value_seed(AnyScalar { slot: self.slot })?
                        .into_str(),
                );
                continue;
            }
            // serde_json wants the whole object read before the map ends.
            map.next_value_seed(Skip {
                depth: 1,
                slot: self.slot,
            })?;
        }
        Ok(iss.flatten())
    }
}

/// Claim names we read, as bits for duplicate detection.
const C_EXP: u32 = 1;
const C_NBF: u32 = 1 << 1;
const C_IAT: u32 = 1 << 2;
const C_SUB: u32 = 1 << 3;
const C_ISS: u32 = 1 << 4;
const C_AUD: u32 = 1 << 5;
const C_JTI: u32 = 1 << 6;
const C_SCOPE: u32 = 1 << 7;
const C_SCP: u32 = 1 << 8;

fn claim_bit(name: &str) -> Option<(u32, &'static str)> {
    Some(match name {
        "exp" => (C_EXP, "exp"),
        "nbf" => (C_NBF, "nbf"),
        "iat" => (C_IAT, "iat"),
        "sub" => (C_SUB, "sub"),
        "iss" => (C_ISS, "iss"),
        "aud" => (C_AUD, "aud"),
        "jti" => (C_JTI, "jti"),
        "scope" => (C_SCOPE, "scope"),
        "scp" => (C_SCP, "scp"),
        _ => return None,
    })
}

/// How a fractional NumericDate becomes whole seconds: towards the stricter side.
#[derive(Clone, Copy)]
enum Round {
    Down,
    Up,
}

/// RFC 7519 §2 NumericDate: a non-negative JSON number of seconds (fractions allowed).
fn numeric_date(v: &Scalar<'_>, round: Round) -> Option<u64> {
    match *v {
        Scalar::U64(n) => Some(n),
        Scalar::I64(n) => u64::try_from(n).ok(),
        // 2^64: every float below it truncates into a u64; NaN and infinities are outside.
        Scalar::F64(f) if (0.0..18_446_744_073_709_551_616.0).contains(&f) => {
            let whole = match round {
                Round::Down => f.floor(),
                Round::Up => f.ceil(),
            };
            // In range (checked above), so the saturating `as` conversion is exact.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Some(whole as u64)
        }
        _ => None,
    }
}

struct ClaimsVisitor<'c> {
    audience: Option<&'c str>,
    names: &'c mut NameSet,
    scopes: &'c mut ScopeSet,
    slot: &'c Cell<Option<TokenError>>,
}

impl<'de> Visitor<'de> for ClaimsVisitor<'_> {
    type Value = RawClaims<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JWT claims object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawClaims<'de>, A::Error> {
        let slot = self.slot;
        let reject = |e| fail::<A::Error>(slot, e);
        let mut raw = RawClaims {
            exp: None,
            nbf: None,
            iat: None,
            sub: None,
            iss: None,
            jti: None,
            aud: None,
        };
        let mut seen = 0u32;
        let mut members = 0usize;
        while let Some(name) = map.next_key_seed(NameSeed)? {
            members += 1;
            if members > MAX_CLAIMS {
                return Err(reject(TokenError::Malformed(MalformedKind::TooManyMembers)));
            }
            let Some((bit, claim)) = claim_bit(&name) else {
                // RFC 7519 §4: claim names MUST be unique, and parsers either reject duplicates
                // or keep the last; SPEC §4 chooses to reject.
                match self.names.insert(&name) {
                    Ok(true) => {}
                    Ok(false) => return Err(reject(TokenError::DuplicateClaim)),
                    Err(k) => return Err(reject(TokenError::Malformed(k))),
                }
                map.next_value_seed(Skip { depth: 1, slot })?;
                continue;
            };
            if seen & bit != 0 {
                return Err(reject(TokenError::DuplicateClaim));
            }
            seen |= bit;
            let bad = || reject(TokenError::BadClaimType(claim));
            match bit {
                C_EXP | C_NBF | C_IAT => {
                    let v = map.next_value_seed(AnyScalar { slot })?;
                    // exp rounds down, nbf up: a fraction never widens the window.
                    let round = if bit == C_NBF { Round::Up } else { Round::Down };
                    let n = numeric_date(&v, round).ok_or_else(bad)?;
                    match bit {
                        C_EXP => raw.exp = Some(n),
                        C_NBF => raw.nbf = Some(n),
                        _ => raw.iat = Some(n),
                    }
                }
                C_SUB | C_ISS | C_JTI => {
                    let v = map.next_value_seed(AnyScalar { slot })?;
                    let s = v.into_str().ok_or_else(bad)?;
                    match bit {
                        C_SUB => {
                            // `sub` reaches logs and `X-Auth-Subject`: no control characters.
                            if s.chars().any(char::is_control) {
                                return Err(bad());
                            }
                            raw.sub = Some(s);
                        }
                        C_ISS => raw.iss = Some(s),
                        _ => raw.jti = Some(s),
                    }
                }
                C_AUD => {
                    // RFC 7519 §4.1.3: a string or an array of strings.
                    let audience = self.audience;
                    let mut matched = false;
                    let each = |a: &str| {
                        matched |= audience == Some(a);
                        true
                    };
                    match map.next_value_seed(StrListSeed { slot, each })? {
                        StrList::Single(_) | StrList::Array { all_ok: true, .. } => {}
                        _ => return Err(bad()),
                    }
                    raw.aud = Some(matched);
                }
                C_SCOPE => {
                    let v = map.next_value_seed(AnyScalar { slot })?;
                    let s = v.into_str().ok_or_else(bad)?;
                    match self.scopes.insert_all(&s) {
                        Ok(()) => {}
                        Err(MalformedKind::TooManyScopes) => {
                            return Err(reject(TokenError::Malformed(MalformedKind::TooManyScopes)))
                        }
                        Err(_) => return Err(bad()),
                    }
                }
                _ => {
                    // `scp`: an array of scope strings (may be empty).
                    let scopes = &mut *self.scopes;
                    let mut too_many = false;
                    let each = |s: &str| match scopes.insert(s) {
                        Ok(()) => true,
                        Err(k) => {
                            too_many |= k == MalformedKind::TooManyScopes;
                            false
                        }
                    };
                    let v = map.next_value_seed(StrListSeed { slot, each })?;
                    if too_many {
                        return Err(reject(TokenError::Malformed(MalformedKind::TooManyScopes)));
                    }
                    // SPEC §4: an array of strings (an empty one grants nothing).
                    if !matches!(v, StrList::Array { all_ok: true, .. }) {
                        return Err(bad());
                    }
                }
            }
        }
        Ok(raw)
    }
}

/// The required claims, once present: `sub` and `exp`.
pub fn required<'a>(raw: &RawClaims<'a>) -> Result<(Cow<'a, str>, u64), TokenError> {
    // SPEC §4: `exp` is required (RFC 7519 makes it optional; we never accept an
    // unbounded token).
    let exp = raw.exp.ok_or(TokenError::MissingExp)?;
    // SPEC §4: `sub` is required; an empty subject identifies no one.
    let sub = match &raw.sub {
        Some(s) if !s.is_empty() => s.clone(),
        _ => return Err(TokenError::MissingSub),
    };
    Ok((sub, exp))
}

/// RFC 7519 §4.1.1 and §4.1.3: issuer and audience, when configured. Checked before time
/// so that a token meant for someone else is never told to "refresh".
pub fn check_issuer_audience(
    raw: &RawClaims<'_>,
    issuer: Option<&str>,
    audience_configured: bool,
) -> Result<(), TokenError> {
    if let Some(issuer) = issuer {
        if raw.iss.as_deref() != Some(issuer) {
            return Err(TokenError::WrongIssuer);
        }
    }
    // A missing `aud` while an audience is configured is a wrong audience.
    if audience_configured && raw.aud != Some(true) {
        return Err(TokenError::WrongAudience);
    }
    Ok(())
}

/// RFC 7519 §4.1.4, §4.1.5 and SPEC §4, with `leeway` seconds of clock skew: expired when
/// `now >= exp + leeway`; not yet valid when `now + leeway < nbf`; issued in the future
/// when `iat > now + leeway`.
pub fn check_time(
    exp: u64,
    nbf: Option<u64>,
    iat: Option<u64>,
    now: u64,
    leeway: u64,
) -> Result<(), TokenError> {
    if now >= exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    let late_now = now.saturating_add(leeway);
    if nbf.is_some_and(|nbf| late_now < nbf) {
        return Err(TokenError::NotYetValid);
    }
    if iat.is_some_and(|iat| iat > late_now) {
        return Err(TokenError::IssuedInFuture);
    }
    Ok(())
}

/// SPEC §3 `auth.max_lifetime`: a token may not claim to live longer than `max` seconds,
/// counted from `iat`, or from now when it has none (so a far-future `exp` is bounded
/// too). Revocation retention relies on it: a `sub` entry is kept for the longest
/// lifetime seen, which this caps.
pub fn check_lifetime(exp: u64, iat: Option<u64>, now: u64, max: u64) -> Result<(), TokenError> {
    let from = iat.unwrap_or(now);
    if exp.saturating_sub(from) > max {
        return Err(TokenError::TooLongLived);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Bufs {
        names: NameSet,
        scopes: ScopeSet,
    }

    fn bufs() -> Bufs {
        Bufs {
            names: NameSet::with_capacity(4096, MAX_CLAIMS),
            scopes: ScopeSet::with_capacity(4096),
        }
    }

    fn parse(json: &str) -> Result<(RawClaims<'_>, String), TokenError> {
        let mut b = bufs();
        let raw = parse_claims(json.as_bytes(), Some("wsgate"), &mut b.names, &mut b.scopes)?;
        Ok((raw, b.scopes.as_str().to_owned()))
    }

    #[test]
    fn registered_claims_are_read() {
        let (raw, scopes) = parse(
            r#"{"sub":"alice","exp":200,"nbf":10,"iat":5,"iss":"me","jti":"j1",
                "aud":["x","wsgate"],"scope":"echo  chat","scp":["admin","echo"],
                "other":{"deep":[1,2,{"a":null}]},"n":1.5e3}"#,
        )
        .expect("parses");
        assert_eq!(raw.sub.as_deref(), Some("alice"));
        assert!(matches!(raw.sub, Some(Cow::Borrowed(_))));
        assert_eq!(raw.exp, Some(200));
        assert_eq!(raw.nbf, Some(10));
        assert_eq!(raw.iat, Some(5));
        assert_eq!(raw.iss.as_deref(), Some("me"));
        assert_eq!(raw.jti.as_deref(), Some("j1"));
        assert_eq!(raw.aud, Some(true));
        assert_eq!(scopes, "echo chat admin");
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let (raw, _) = parse(r#"{"s\u0075b":"al\u0069ce","exp":1}"#).expect("parses");
        assert_eq!(raw.sub.as_deref(), Some("alice"));
        assert!(matches!(raw.sub, Some(Cow::Owned(_))));
    }

    #[test]
    fn duplicates_are_rejected_anywhere_at_the_top_level() {
        for json in [
            r#"{"sub":"a","exp":1,"sub":"b"}"#,
            r#"{"sub":"a","exp":1,"exp":2}"#,
            r#"{"sub":"a","exp":1,"s\u0075b":"b"}"#,
            r#"{"sub":"a","exp":1,"role":"u","x":1,"role":"admin"}"#,
            r#"{"sub":"a","exp":1,"r\u006fle":"u","role":"admin"}"#,
            r#"{"scope":"a","sub":"a","exp":1,"scope":"admin"}"#,
            r#"{"aud":"a","sub":"a","exp":1,"aud":"wsgate"}"#,
        ] {
            assert_eq!(
                parse(json).err(),
                Some(TokenError::DuplicateClaim),
                "{json}"
            );
        }
        // The same name inside different nested objects is not a top-level duplicate.
        assert!(parse(r#"{"sub":"a","exp":1,"x":{"k":1},"y":{"k":1}}"#).is_ok());
    }

    #[test]
    fn claim_types_are_checked() {
        let cases = [
            (r#"{"exp":"1"}"#, "exp"),
            (r#"{"exp":null}"#, "exp"),
            (r#"{"exp":-1}"#, "exp"),
            (r#"{"exp":true}"#, "exp"),
            (r#"{"exp":[1]}"#, "exp"),
            (r#"{"nbf":"x"}"#, "nbf"),
            (r#"{"iat":{}}"#, "iat"),
            (r#"{"sub":1}"#, "sub"),
            (r#"{"sub":["a"]}"#, "sub"),
            (r#"{"sub":"a\nb"}"#, "sub"),
            (r#"{"sub":"a\u0000"}"#, "sub"),
            (r#"{"iss":1}"#, "iss"),
            (r#"{"jti":1}"#, "jti"),
            (r#"{"aud":1}"#, "aud"),
            (r#"{"aud":["a",1]}"#, "aud"),
            (r#"{"aud":{"a":1}}"#, "aud"),
            (r#"{"scope":["a"]}"#, "scope"),
            (r#"{"scope":"a \"b"}"#, "scope"),
            (r#"{"scope":"a\tb"}"#, "scope"),
            (r#"{"scope":"a\r\nX-Evil: 1"}"#, "scope"),
            (r#"{"scp":"a b"}"#, "scp"),
            (r#"{"scp":["a b"]}"#, "scp"),
            (r#"{"scp":["a",2]}"#, "scp"),
            (r#"{"scp":[""]}"#, "scp"),
            (r#"{"scp":["é"]}"#, "scp"),
        ];
        for (json, claim) in cases {
            assert_eq!(
                parse(json).err(),
                Some(TokenError::BadClaimType(claim)),
                "{json}"
            );
        }
    }

    #[test]
    fn out_of_range_numbers_are_malformed() {
        assert_eq!(
            parse(r#"{"exp":1e400}"#).err(),
            Some(TokenError::PayloadMalformed(MalformedKind::Json))
        );
    }

    #[test]
    fn numeric_dates_round_towards_strict() {
        let (raw, _) = parse(r#"{"exp":100.9,"nbf":10.1,"iat":5.5}"#).expect("parses");
        assert_eq!(raw.exp, Some(100));
        assert_eq!(raw.nbf, Some(11));
        assert_eq!(raw.iat, Some(5));
        let (raw, _) = parse(r#"{"exp":18446744073709551615}"#).expect("parses");
        assert_eq!(raw.exp, Some(u64::MAX));
    }

    #[test]
    fn empty_scp_and_aud_arrays_are_well_typed() {
        let (raw, scopes) = parse(r#"{"scp":[],"aud":[]}"#).expect("parses");
        assert_eq!(scopes, "");
        assert_eq!(raw.aud, Some(false));
    }

    #[test]
    fn not_an_object() {
        for json in [
            "[]",
            "\"sub\"",
            "42",
            "null",
            "Example of Ed25519 signing",
            "",
        ] {
            assert_eq!(
                parse(json).err(),
                Some(TokenError::PayloadNotObject),
                "{json}"
            );
        }
        let mut b = bufs();
        assert_eq!(
            parse_claims(&[0xff, b'{'], None, &mut b.names, &mut b.scopes).err(),
            Some(TokenError::PayloadNotObject)
        );
    }

    #[test]
    fn malformed_json() {
        for json in [
            "{",
            r#"{"sub":"a",}"#,
            r#"{"sub":"a"} {}"#,
            r#"{"sub":"a"} x"#,
            r#"{"sub":'a'}"#,
            r#"{"a":[1,2}"#,
        ] {
            assert_eq!(
                parse(json).err(),
                Some(TokenError::PayloadMalformed(MalformedKind::Json)),
                "{json}"
            );
        }
        // Trailing whitespace is fine.
        assert!(parse("{\"sub\":\"a\"} \r\n").is_ok());
    }

    #[test]
    fn deep_nesting_is_rejected_without_overflow() {
        let deep = format!(
            r#"{{"sub":"a","x":{}{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert_eq!(
            parse(&deep).err(),
            Some(TokenError::PayloadMalformed(MalformedKind::TooDeep))
        );
        let deep_obj = format!(
            r#"{{"x":{}1{}}}"#,
            r#"{"a":"#.repeat(10_000),
            "}".repeat(10_000)
        );
        assert_eq!(
            parse(&deep_obj).err(),
            Some(TokenError::PayloadMalformed(MalformedKind::TooDeep))
        );
        // Unbalanced: still no overflow.
        let open = format!(r#"{{"x":{}"#, "[".repeat(100_000));
        assert!(parse(&open).is_err());
        // Within the limit is fine.
        let ok = format!(r#"{{"x":{}{}}}"#, "[".repeat(20), "]".repeat(20));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn member_count_is_capped() {
        let mut json = String::from("{");
        for i in 0..=MAX_CLAIMS {
            json.push_str(&format!("\"c{i}\":0,"));
        }
        json.push_str("\"end\":0}");
        let mut b = Bufs {
            names: NameSet::with_capacity(65536, MAX_CLAIMS),
            scopes: ScopeSet::with_capacity(65536),
        };
        assert_eq!(
            parse_claims(json.as_bytes(), None, &mut b.names, &mut b.scopes).err(),
            Some(TokenError::PayloadMalformed(MalformedKind::TooManyMembers))
        );
    }

    #[test]
    fn scope_storage_never_grows() {
        let mut scopes = ScopeSet::with_capacity(8);
        let cap = scopes.text.capacity();
        assert_eq!(scopes.insert_all("abc def"), Ok(()));
        assert_eq!(scopes.insert("ghijk"), Err(MalformedKind::TooManyScopes));
        assert_eq!(scopes.text.capacity(), cap);
        // Duplicates take no room.
        assert_eq!(scopes.insert("abc"), Ok(()));
        assert_eq!(scopes.as_str(), "abc def");
    }

    #[test]
    fn required_claims() {
        let (raw, _) = parse(r#"{"exp":1}"#).expect("parses");
        assert_eq!(required(&raw).err(), Some(TokenError::MissingSub));
        let (raw, _) = parse(r#"{"exp":1,"sub":""}"#).expect("parses");
        assert_eq!(required(&raw).err(), Some(TokenError::MissingSub));
        let (raw, _) = parse(r#"{"sub":"a"}"#).expect("parses");
        assert_eq!(required(&raw).err(), Some(TokenError::MissingExp));
        let (raw, _) = parse(r#"{"sub":"a","exp":7}"#).expect("parses");
        assert_eq!(required(&raw).ok(), Some((Cow::Borrowed("a"), 7)));
    }

    #[test]
    fn issuer_and_audience() {
        let (raw, _) = parse(r#"{"iss":"https://id","aud":"wsgate"}"#).expect("parses");
        assert_eq!(
            check_issuer_audience(&raw, Some("https://id"), true),
            Ok(())
        );
        assert_eq!(
            check_issuer_audience(&raw, Some("https://id/"), true),
            Err(TokenError::WrongIssuer)
        );
        assert_eq!(check_issuer_audience(&raw, None, false), Ok(()));
        let (raw, _) = parse(r#"{"aud":"wsgate2"}"#).expect("parses");
        assert_eq!(
            check_issuer_audience(&raw, None, true),
            Err(TokenError::WrongAudience)
        );
        assert_eq!(
            check_issuer_audience(&raw, Some("x"), false),
            Err(TokenError::WrongIssuer)
        );
        let (raw, _) = parse(r#"{}"#).expect("parses");
        assert_eq!(
            check_issuer_audience(&raw, None, true),
            Err(TokenError::WrongAudience)
        );
        assert_eq!(check_issuer_audience(&raw, None, false), Ok(()));
    }

    #[test]
    fn time_rules_with_leeway() {
        // exp: expired when now >= exp + leeway.
        assert_eq!(check_time(100, None, None, 99, 0), Ok(()));
        assert_eq!(
            check_time(100, None, None, 100, 0),
            Err(TokenError::Expired)
        );
        assert_eq!(check_time(100, None, None, 129, 30), Ok(()));
        assert_eq!(
            check_time(100, None, None, 130, 30),
            Err(TokenError::Expired)
        );
        assert_eq!(check_time(u64::MAX, None, None, u64::MAX - 1, 30), Ok(()));
        // nbf: not yet valid when now + leeway < nbf.
        assert_eq!(check_time(1000, Some(100), None, 70, 30), Ok(()));
        assert_eq!(
            check_time(1000, Some(100), None, 69, 30),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(check_time(1000, Some(100), None, 100, 0), Ok(()));
        assert_eq!(
            check_time(1000, Some(100), None, 99, 0),
            Err(TokenError::NotYetValid)
        );
        // iat: issued in the future when iat > now + leeway.
        assert_eq!(check_time(1000, None, Some(130), 100, 30), Ok(()));
        assert_eq!(
            check_time(1000, None, Some(131), 100, 30),
            Err(TokenError::IssuedInFuture)
        );
        assert_eq!(
            check_time(u64::MAX, None, Some(u64::MAX), u64::MAX - 1, 30),
            Ok(())
        );
    }

    #[test]
    fn lifetime_is_bounded_from_iat_or_from_now() {
        let day = 24 * 3600;
        let now = 1_800_000_000;
        // From iat: exactly the maximum is fine, one second more is not.
        assert_eq!(check_lifetime(now + day, Some(now), now, day), Ok(()));
        assert_eq!(
            check_lifetime(now + day + 1, Some(now), now, day),
            Err(TokenError::TooLongLived)
        );
        // An old iat counts even when little life is left.
        assert_eq!(
            check_lifetime(now + 60, Some(now - 2 * day), now, day),
            Err(TokenError::TooLongLived)
        );
        // Without iat: from now.
        assert_eq!(check_lifetime(now + day, None, now, day), Ok(()));
        assert_eq!(
            check_lifetime(now + day + 1, None, now, day),
            Err(TokenError::TooLongLived)
        );
        // exp near 2^63 or u64::MAX: refused, no overflow.
        for exp in [1u64 << 63, u64::MAX] {
            assert_eq!(
                check_lifetime(exp, None, now, day),
                Err(TokenError::TooLongLived)
            );
            assert_eq!(
                check_lifetime(exp, Some(now), now, day),
                Err(TokenError::TooLongLived)
            );
        }
        // exp before iat: no lifetime at all (check_time judges expiry).
        assert_eq!(check_lifetime(now - 10, Some(now), now, day), Ok(()));
    }
}
