//! JWS compact serialization (RFC 7515 §7.1): the three segments, canonical base64url into
//! a caller's buffer, and the JOSE header; plus the bounded JSON helpers the claims share.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::{self, DeserializeSeed, Deserializer as _, MapAccess, SeqAccess, Visitor};

use super::error::{MalformedKind, TokenError};
use super::keys::Alg;

/// Deepest JSON nesting accepted anywhere in a header or claims value (serde_json's own
/// limit is 128; ours is lower so that skipping a value never recurses far).
pub const MAX_JSON_DEPTH: usize = 32;
/// Most members accepted in a JOSE header (real headers have fewer than ten).
pub const MAX_HEADER_MEMBERS: usize = 32;

/// The three segments of a compact JWS, borrowed from the token as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments<'t> {
    /// The encoded header.
    pub header: &'t [u8],
    /// The encoded payload.
    pub payload: &'t [u8],
    /// The encoded signature.
    pub signature: &'t [u8],
    /// `header.payload` exactly as received: what the signature covers (RFC 7515 §5.2 step 8).
    pub signing_input: &'t [u8],
}

/// Splits a compact JWS into its three segments without copying.
pub fn split(token: &[u8]) -> Result<Segments<'_>, TokenError> {
    // RFC 7515 §7.1 / §5.2 step 1: exactly three segments separated by two periods.
    let first = token
        .iter()
        .position(|&b| b == b'.')
        .ok_or(TokenError::Malformed(MalformedKind::SegmentCount))?;
    let (header, rest) = token.split_at(first);
    let rest = rest.get(1..).unwrap_or_default();
    let second = rest
        .iter()
        .position(|&b| b == b'.')
        .ok_or(TokenError::Malformed(MalformedKind::SegmentCount))?;
    let (payload, signature) = rest.split_at(second);
    let signature = signature.get(1..).unwrap_or_default();
    if signature.contains(&b'.') {
        return Err(TokenError::Malformed(MalformedKind::SegmentCount));
    }
    // An empty header or payload is not a JWT; an empty signature is an unsigned token
    // (RFC 7515 §A.5 / RFC 8725 §3.2) and is never accepted.
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(TokenError::Malformed(MalformedKind::EmptySegment));
    }
    let signing_input = token
        .get(..header.len() + 1 + payload.len())
        .ok_or(TokenError::Malformed(MalformedKind::SegmentCount))?;
    Ok(Segments {
        header,
        payload,
        signature,
        signing_input,
    })
}

/// The exact decoded length of unpadded base64url text of `encoded_len` characters;
/// a length of 1 mod 4 can encode nothing (RFC 4648 §4).
pub fn decoded_len(encoded_len: usize) -> Result<usize, TokenError> {
    let tail = match encoded_len % 4 {
        0 => 0,
        2 => 1,
        3 => 2,
        _ => return Err(TokenError::Base64),
    };
    Ok(encoded_len / 4 * 3 + tail)
}

/// Decodes one segment into `out` (exactly `decoded_len` bytes long). RFC 7515 §2:
/// base64url without padding; RFC 4648 §3.5: the unused bits of the last symbol must be
/// zero (canonical encoding), so every token has exactly one spelling.
pub fn decode_into(segment: &[u8], out: &mut [u8]) -> Result<(), TokenError> {
    // URL_SAFE_NO_PAD rejects '=', bytes outside A-Z a-z 0-9 - _, and non-zero trailing bits.
    match URL_SAFE_NO_PAD.decode_slice(segment, out) {
        Ok(n) if n == out.len() => Ok(()),
        _ => Err(TokenError::Base64),
    }
}

/// Decodes the three segments into `buf` (header, payload, signature regions in that order)
/// and returns the three decoded slices. `buf` must hold their total, which is at most
/// three quarters of the token's length; a shorter buffer is `TooLarge`.
pub fn decode_segments<'b>(
    segments: &Segments<'_>,
    buf: &'b mut [u8],
) -> Result<Decoded<'b>, TokenError> {
    let header_len = decoded_len(segments.header.len())?;
    let payload_len = decoded_len(segments.payload.len())?;
    let signature_len = decoded_len(segments.signature.len())?;
    let (header, rest) = buf
        .split_at_mut_checked(header_len)
        .ok_or(TokenError::TooLarge)?;
    let (payload, rest) = rest
        .split_at_mut_checked(payload_len)
        .ok_or(TokenError::TooLarge)?;
    let signature = rest.get_mut(..signature_len).ok_or(TokenError::TooLarge)?;
    decode_into(segments.header, header)?;
    decode_into(segments.payload, payload)?;
    decode_into(segments.signature, signature)?;
    Ok(Decoded {
        header,
        payload,
        signature,
    })
}

/// The three decoded segments, in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded<'b> {
    /// The header JSON bytes.
    pub header: &'b [u8],
    /// The payload bytes.
    pub payload: &'b [u8],
    /// The signature bytes.
    pub signature: &'b [u8],
}

/// The JOSE header fields we read; every other parameter (`jku`, `x5u`, `jwk`, `x5c`,
/// `x5t`, `cty`, ...) is skipped and never used (RFC 8725 §3.10: never fetch keys a token
/// points at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    /// `alg`, verbatim.
    pub alg: Cow<'a, str>,
    /// `kid`, if present.
    pub kid: Option<Cow<'a, str>>,
    /// `typ`, if present (already checked to be a JWT type).
    pub typ: Option<Cow<'a, str>>,
    /// `crit` was present (a non-empty array of strings; we understand no extension).
    pub crit: bool,
    /// `b64`, if present.
    pub b64: Option<bool>,
}

impl Header<'_> {
    /// RFC 7515 / RFC 8725 header rules, in this order: `alg: none` in any case, `crit`,
    /// `b64: false`, an algorithm we do not implement.
    pub fn check(&self) -> Result<Alg, TokenError> {
        // RFC 8725 §3.2: never accept unsigned tokens, whatever the letter case.
        if self.alg.eq_ignore_ascii_case("none") {
            return Err(TokenError::AlgNone);
        }
        // RFC 7515 §4.1.11: a recipient MUST reject a JWS whose `crit` lists an extension
        // it does not understand; we understand none.
        if self.crit {
            return Err(TokenError::UnknownCrit);
        }
        // RFC 7797 §3: `b64: false` signs the raw payload; not supported. (`b64: true`
        // is the ordinary encoding and is tolerated.)
        if self.b64 == Some(false) {
            return Err(TokenError::B64False);
        }
        Alg::from_header(&self.alg).ok_or(TokenError::AlgNotAllowed)
    }
}

/// `typ` values accepted: RFC 7519 §5.1 "JWT", RFC 9068 §2.1 "at+jwt"; RFC 7515 §4.1.9:
/// compared case-insensitively, the "application/" prefix may be present.
fn typ_allowed(typ: &str) -> bool {
    let bare = match typ.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => typ.get(12..).unwrap_or(""),
        _ => typ,
    };
    bare.eq_ignore_ascii_case("JWT") || bare.eq_ignore_ascii_case("at+jwt")
}

/// Parses the decoded header: UTF-8, a single JSON object, no duplicate names.
pub fn parse_header<'a>(bytes: &'a [u8], names: &mut NameSet) -> Result<Header<'a>, TokenError> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| TokenError::Malformed(MalformedKind::NotUtf8))?;
    // RFC 7515 §5.2 step 4: the header must be a JSON object.
    if text.trim_start_matches(is_json_ws).as_bytes().first() != Some(&b'{') {
        return Err(TokenError::HeaderNotObject);
    }
    names.clear();
    let slot = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = de.deserialize_map(HeaderVisitor { names, slot: &slot });
    let header = match parsed {
        Ok(h) => h,
        Err(_) => {
            return Err(slot
                .take()
                .unwrap_or(TokenError::Malformed(MalformedKind::Json)))
        }
    };
    de.end()
        .map_err(|_| TokenError::Malformed(MalformedKind::Json))?;
    Ok(header)
}

/// JSON insignificant whitespace (RFC 8259 §2).
pub(crate) fn is_json_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Records `e` in `slot` (the first error wins) and returns a serde error to unwind with.
pub(crate) fn fail<E: de::Error>(slot: &Cell<Option<TokenError>>, e: TokenError) -> E {
    if slot.get().is_none() {
        slot.set(Some(e));
    }
    E::custom("rejected")
}

/// Header parameter names we read, as bits for duplicate detection.
const H_ALG: u32 = 1;
const H_KID: u32 = 1 << 1;
const H_TYP: u32 = 1 << 2;
const H_CRIT: u32 = 1 << 3;
const H_B64: u32 = 1 << 4;

struct HeaderVisitor<'n> {
    names: &'n mut NameSet,
    slot: &'n Cell<Option<TokenError>>,
}

impl<'de> Visitor<'de> for HeaderVisitor<'_> {
    type Value = Header<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JOSE header object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Header<'de>, A::Error> {
        let slot = self.slot;
        let malformed = |k| fail::<A::Error>(slot, TokenError::Malformed(k));
        let mut seen = 0u32;
        let mut members = 0usize;
        let mut alg = None;
        let mut kid = None;
        let mut typ = None;
        let mut crit = false;
        let mut b64 = None;
        while let Some(name) = map.next_key_seed(NameSeed)? {
            members += 1;
            if members > MAX_HEADER_MEMBERS {
                return Err(malformed(MalformedKind::TooManyMembers));
            }
            let bit = match name.as_ref() {
                "alg" => H_ALG,
                "kid" => H_KID,
                "typ" => H_TYP,
                "crit" => H_CRIT,
                "b64" => H_B64,
                other => {
                    // RFC 7515 §4: header parameter names MUST be unique; we reject
                    // duplicates rather than keep the last one.
                    if !self.names.insert(other).map_err(malformed)? {
                        return Err(malformed(MalformedKind::DuplicateHeader));
                    }
                    // RFC 7516 §4.1.2 / §4.1.3: `enc` and `zip` only exist in JWE headers.
                    if other == "enc" || other == "zip" {
                        return Err(malformed(MalformedKind::JweHeader));
                    }
                    map.next_value_seed(Skip { depth: 1, slot })?;
                    continue;
                }
            };
            if seen & bit != 0 {
                return Err(malformed(MalformedKind::DuplicateHeader));
            }
            seen |= bit;
            match bit {
                H_ALG => {
                    let v = map.next_value_seed(AnyScalar { slot })?.into_str();
                    alg = Some(v.ok_or_else(|| malformed(MalformedKind::AlgNotString))?);
                }
                H_KID => {
                    // RFC 7515 §4.1.4: `kid` is a case-sensitive string.
                    let v = map.next_value_seed(AnyScalar { slot })?.into_str();
                    kid = Some(v.ok_or_else(|| malformed(MalformedKind::KidNotString))?);
                }
                H_TYP => {
                    let v = map.next_value_seed(AnyScalar { slot })?.into_str();
                    match v {
                        Some(t) if typ_allowed(&t) => typ = Some(t),
                        _ => return Err(malformed(MalformedKind::Typ)),
                    }
                }
                H_CRIT => {
                    // RFC 7515 §4.1.11: a non-empty array of names.
                    let list = map.next_value_seed(StrListSeed {
                        slot,
                        each: |_: &str| true,
                    })?;
                    if !matches!(
                        list,
                        StrList::Array {
                            count: 1..,
                            all_ok: true
                        }
                    ) {
                        return Err(malformed(MalformedKind::Crit));
                    }
                    crit = true;
                }
                _ => match map.next_value_seed(AnyScalar { slot })? {
                    Scalar::Bool(v) => b64 = Some(v),
                    _ => return Err(malformed(MalformedKind::B64)),
                },
            }
        }
        let alg = alg.ok_or_else(|| malformed(MalformedKind::MissingAlg))?;
        Ok(Header {
            alg,
            kid,
            typ,
            crit,
            b64,
        })
    }
}

/// The member names seen in one JSON object, for duplicate detection without allocation:
/// names are copied into a buffer whose capacity is fixed when the scratch is made.
#[derive(Debug)]
pub struct NameSet {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl NameSet {
    /// Room for `max_bytes` of names and `max_names` names; never grows past them.
    pub fn with_capacity(max_bytes: usize, max_names: usize) -> NameSet {
        NameSet {
            bytes: Vec::with_capacity(max_bytes),
            ends: Vec::with_capacity(max_names),
        }
    }

    /// Forgets every name, keeping the storage.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// Adds `name`; false when it was already there. Errs when the fixed room is full.
    pub fn insert(&mut self, name: &str) -> Result<bool, MalformedKind> {
        let mut start = 0;
        for &end in &self.ends {
            if self.bytes.get(start..end) == Some(name.as_bytes()) {
                return Ok(false);
            }
            start = end;
        }
        if self.ends.len() == self.ends.capacity()
            || self.bytes.capacity() - self.bytes.len() < name.len()
        {
            return Err(MalformedKind::TooManyMembers);
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.ends.push(self.bytes.len());
        Ok(true)
    }
}

/// A JSON object member name, borrowed when it has no escapes.
pub(crate) struct NameSeed;

impl<'de> DeserializeSeed<'de> for NameSeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(StrVisitor)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// Any JSON value, skipped without allocation; nesting deeper than [`MAX_JSON_DEPTH`] is
/// an error (recursion is bounded, so a hostile `[[[[...` cannot overflow the stack).
pub(crate) struct Skip<'a> {
    pub(crate) depth: usize,
    pub(crate) slot: &'a Cell<Option<TokenError>>,
}

impl<'de> DeserializeSeed<'de> for Skip<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= MAX_JSON_DEPTH {
            return Err(fail(
                self.slot,
                TokenError::Malformed(MalformedKind::TooDeep),
            ));
        }
        let inner = || Skip {
            depth: self.depth + 1,
            slot: self.slot,
        };
        while seq.next_element_seed(inner())?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.depth >= MAX_JSON_DEPTH {
            return Err(fail(
                self.slot,
                TokenError::Malformed(MalformedKind::TooDeep),
            ));
        }
        // Duplicate names inside nested objects are not looked for (they are never read).
        while map
            .next_key_seed(Skip {
                depth: self.depth + 1,
                slot: self.slot,
            })?
            .is_some()
        {
            map.next_value_seed(Skip {
                depth: self.depth + 1,
                slot: self.slot,
            })?;
        }
        Ok(())
    }
}

/// One JSON value as the claim and header rules see it: scalars kept (strings borrowed when
/// unescaped), arrays and objects skipped with the depth bound.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar<'de> {
    Str(Cow<'de, str>),
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Null,
    Array,
    Object,
}

impl<'de> Scalar<'de> {
    /// The string, if it is one.
    pub(crate) fn into_str(self) -> Option<Cow<'de, str>> {
        match self {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Reads any value as a [`Scalar`].
pub(crate) struct AnyScalar<'a> {
    pub(crate) slot: &'a Cell<Option<TokenError>>,
}

impl<'de> DeserializeSeed<'de> for AnyScalar<'_> {
    type Value = Scalar<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AnyScalar<'_> {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::I64(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::U64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::F64(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Skip {
            depth: 1,
            slot: self.slot,
        }
        .visit_seq(seq)
        .map(|()| Scalar::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Skip {
            depth: 1,
            slot: self.slot,
        }
        .visit_map(map)
        .map(|()| Scalar::Object)
    }
}

/// What a string-or-array-of-strings value turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrList {
    /// A single string; whether `each` accepted it.
    Single(bool),
    /// An array: how many elements, and whether each was a string that `each` accepted.
    Array { count: usize, all_ok: bool },
    /// Any other JSON type.
    Other,
}

/// A string or an array of strings, each passed to `each` (which says whether it is
/// acceptable). Non-string elements make `all_ok` false.
pub(crate) struct StrListSeed<'a, F> {
    pub(crate) slot: &'a Cell<Option<TokenError>>,
    pub(crate) each: F,
}

impl<'de, F: FnMut(&str) -> bool> DeserializeSeed<'de> for StrListSeed<'_, F> {
    type Value = StrList;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<StrList, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: FnMut(&str) -> bool> Visitor<'de> for StrListSeed<'_, F> {
    type Value = StrList;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array of strings")
    }

    fn visit_str<E: de::Error>(mut self, v: &str) -> Result<StrList, E> {
        Ok(StrList::Single((self.each)(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<StrList, A::Error> {
        let mut all_ok = true;
        let mut count = 0usize;
        while let Some(v) = seq.next_element_seed(AnyScalar { slot: self.slot })? {
            count += 1;
            match v {
                Scalar::Str(s) if (self.each)(&s) => {}
                _ => all_ok = false,
            }
        }
        Ok(StrList::Array { count, all_ok })
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<StrList, E> {
        Ok(StrList::Other)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<StrList, E> {
        Ok(StrList::Other)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<StrList, E> {
        Ok(StrList::Other)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<StrList, E> {
        Ok(StrList::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<StrList, E> {
        Ok(StrList::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<StrList, A::Error> {
        Skip {
            depth: 1,
            slot: self.slot,
        }
        .visit_map(map)
        .map(|()| StrList::Other)
    }
}
