//! Why a token was refused: one variant per rule, each knowing its peer-visible text
//! (`error_description`, RFC 6750 §3) and its metric label. Neither ever carries token data.

use std::fmt;

/// What exactly was malformed (structure, header or claims JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MalformedKind {
    /// Not exactly three `.`-separated segments (RFC 7515 §7.1).
    SegmentCount,
    /// A segment is empty (an empty signature is an unsigned token).
    EmptySegment,
    /// Decoded header or payload is not UTF-8 (RFC 7515 §5.2 steps 3, 8 via RFC 7519 §7.2).
    NotUtf8,
    /// Not valid JSON, or JSON followed by more than whitespace.
    Json,
    /// JSON nested deeper than the parser allows.
    TooDeep,
    /// More object members than the parser allows.
    TooManyMembers,
    /// A header parameter name appears twice (RFC 7515 §4).
    DuplicateHeader,
    /// The header has no `alg` (RFC 7515 §4.1.1).
    MissingAlg,
    /// `alg` is not a string.
    AlgNotString,
    /// `kid` is not a string (RFC 7515 §4.1.4).
    KidNotString,
    /// `typ` is not "JWT" or "at+jwt" (RFC 7519 §5.1, RFC 9068 §2.1).
    Typ,
    /// `crit` is not a non-empty array of strings (RFC 7515 §4.1.11).
    Crit,
    /// `b64` is not a boolean (RFC 7797 §3).
    B64,
    /// `enc` or `zip` in a JWS header: a JWE header (RFC 7516), never a JWS.
    JweHeader,
    /// `scope` / `scp` hold more scopes than the parser keeps.
    TooManyScopes,
}

impl MalformedKind {
    /// A short fixed phrase for logs and `token inspect`.
    pub fn text(&self) -> &'static str {
        match self {
            MalformedKind::SegmentCount => "not exactly three segments",
            MalformedKind::EmptySegment => "empty segment",
            MalformedKind::NotUtf8 => "not UTF-8",
            MalformedKind::Json => "invalid JSON",
            MalformedKind::TooDeep => "JSON nested too deep",
            MalformedKind::TooManyMembers => "too many JSON members",
            MalformedKind::DuplicateHeader => "duplicate header parameter",
            MalformedKind::MissingAlg => "header has no alg",
            MalformedKind::AlgNotString => "alg is not a string",
            MalformedKind::KidNotString => "kid is not a string",
            MalformedKind::Typ => "typ is not JWT or at+jwt",
            MalformedKind::Crit => "crit is not a non-empty array of strings",
            MalformedKind::B64 => "b64 is not a boolean",
            MalformedKind::JweHeader => "JWE header parameter (enc/zip) in a JWS",
            MalformedKind::TooManyScopes => "too many scopes",
        }
    }
}

/// A refused token: one variant per rule of SPEC §4 "Token rules".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Longer than `auth.max_token_bytes`; nothing was decoded.
    TooLarge,
    /// Structure or header is malformed (found before any signature check).
    Malformed(MalformedKind),
    /// A segment is not canonical unpadded base64url (RFC 7515 §2, RFC 4648 §3.5).
    Base64,
    /// The header is JSON but not an object (RFC 7515 §5.2 step 4).
    HeaderNotObject,
    /// `alg` is `none` in any letter case (RFC 8725 §3.2).
    AlgNone,
    /// `alg` names no algorithm this gateway verifies.
    AlgNotAllowed,
    /// `crit` names an extension we do not understand (RFC 7515 §4.1.11).
    UnknownCrit,
    /// `b64: false`, the unencoded payload option (RFC 7797), is not supported.
    B64False,
    /// The header's `kid` names no configured key.
    UnknownKid,
    /// No `kid`, and no configured key has the header's algorithm.
    NoKeyForAlg,
    /// No `kid`, and several configured keys have the header's algorithm.
    AmbiguousKey,
    /// The selected key's configured algorithm differs from the header's (RFC 8725 §3.1).
    AlgKeyMismatch,
    /// The signature does not verify (or has the wrong length).
    BadSignature,
    /// The payload of a correctly signed token is not a JSON object (RFC 7519 §7.2 step 10).
    PayloadNotObject,
    /// The claims of a correctly signed token are malformed JSON.
    PayloadMalformed(MalformedKind),
    /// A claim name appears twice (RFC 7519 §4).
    DuplicateClaim,
    /// No `exp` (SPEC §4: required).
    MissingExp,
    /// No `sub`, or an empty one (SPEC §4: required).
    MissingSub,
    /// A registered claim has the wrong JSON type; the claim's name.
    BadClaimType(&'static str),
    /// `iss` differs from `auth.issuer` (RFC 7519 §4.1.1).
    WrongIssuer,
    /// `aud` does not contain `auth.audience` (RFC 7519 §4.1.3).
    WrongAudience,
    /// `exp` + leeway is past (RFC 7519 §4.1.4).
    Expired,
    /// `nbf` is still ahead beyond leeway (RFC 7519 §4.1.5).
    NotYetValid,
    /// `iat` is ahead beyond leeway (SPEC §4).
    IssuedInFuture,
    /// The token matches a revocation (SPEC §6; checked by the gate, after verification).
    Revoked,
    /// `exp - iat` (or `exp - now` without `iat`) is over `auth.max_lifetime`.
    TooLongLived,
}

impl TokenError {
    /// The six peer-visible descriptions (SPEC §4 table), in [`TokenError::description`]'s
    /// order of use.
    pub const DESCRIPTIONS: [&'static str; 6] = [
        "malformed token",
        "invalid signature",
        "token expired",
        "token not yet valid",
        "token revoked",
        "invalid claims",
    ];

    /// The fixed, peer-visible `error_description` (RFC 6750 §3 charset: no `"` or `\`): one
    /// of [`TokenError::DESCRIPTIONS`]. SPEC §4: everything about the key setup (unknown
    /// `kid`, alg/key mismatch, several candidate keys, no key) reads "invalid signature",
    /// so that a peer learns nothing about which keys exist; [`TokenError::detail`] and
    /// [`TokenError::reason_label`] keep the precise reason for logs and metrics.
    pub fn description(&self) -> &'static str {
        match self {
            TokenError::TooLarge
            | TokenError::Malformed(_)
            | TokenError::Base64
            | TokenError::HeaderNotObject
            | TokenError::UnknownCrit
            | TokenError::B64False => "malformed token",
            TokenError::AlgNone
            | TokenError::AlgNotAllowed
            | TokenError::UnknownKid
            | TokenError::NoKeyForAlg
            | TokenError::AmbiguousKey
            | TokenError::AlgKeyMismatch
            | TokenError::BadSignature => "invalid signature",
            TokenError::PayloadNotObject
            | TokenError::PayloadMalformed(_)
            | TokenError::DuplicateClaim
            | TokenError::MissingExp
            | TokenError::MissingSub
            | TokenError::BadClaimType(_)
            | TokenError::WrongIssuer
            | TokenError::WrongAudience
            | TokenError::IssuedInFuture
            | TokenError::TooLongLived => "invalid claims",
            TokenError::Expired => "token expired",
            TokenError::NotYetValid => "token not yet valid",
            TokenError::Revoked => "token revoked",
        }
    }

    /// The precise reason, for logs, metrics help and `wsgate token inspect`; never sent to a
    /// peer (see [`TokenError::description`]).
    pub fn detail(&self) -> &'static str {
        match self {
            TokenError::TooLarge => "token too large",
            TokenError::Malformed(_) => "malformed token",
            TokenError::Base64 => "token is not canonical base64url",
            TokenError::HeaderNotObject => "token header is not a JSON object",
            TokenError::AlgNone => "unsigned token (alg none)",
            TokenError::AlgNotAllowed => "token algorithm not allowed",
            TokenError::UnknownCrit => "unsupported critical header parameter",
            TokenError::B64False => "unencoded payload (b64 false) not supported",
            TokenError::UnknownKid => "unknown key id",
            TokenError::NoKeyForAlg => "no key for the token algorithm",
            TokenError::AmbiguousKey => "several keys match: token needs a kid",
            TokenError::AlgKeyMismatch => "token algorithm does not match its key",
            TokenError::BadSignature => "invalid signature",
            TokenError::PayloadNotObject => "token payload is not a JSON object",
            TokenError::PayloadMalformed(_) => "malformed token claims",
            TokenError::DuplicateClaim => "duplicate claim",
            TokenError::MissingExp => "token has no exp",
            TokenError::MissingSub => "token has no sub",
            TokenError::BadClaimType(name) => match *name {
                "exp" => "invalid exp claim",
                "nbf" => "invalid nbf claim",
                "iat" => "invalid iat claim",
                "sub" => "invalid sub claim",
                "iss" => "invalid iss claim",
                "aud" => "invalid aud claim",
                "jti" => "invalid jti claim",
                "scope" => "invalid scope claim",
                "scp" => "invalid scp claim",
                _ => "invalid claim",
            },
            TokenError::WrongIssuer => "wrong issuer",
            TokenError::WrongAudience => "wrong audience",
            TokenError::Expired => "token expired",
            TokenError::NotYetValid => "token not yet valid",
            TokenError::IssuedInFuture => "token issued in the future",
            TokenError::Revoked => "token revoked",
            TokenError::TooLongLived => "token lifetime over auth.max_lifetime",
        }
    }

    /// Every `reason_label`, plus the gateway's own token failures (for the metrics
    /// registry's fixed label set).
    pub const REASON_LABELS: [&'static str; 30] = [
        "too_large",
        "malformed",
        "base64",
        "header_not_object",
        "alg_none",
        "alg_not_allowed",
        "unknown_crit",
        "b64_false",
        "unknown_kid",
        "no_key_for_alg",
        "ambiguous_key",
        "alg_key_mismatch",
        "bad_signature",
        "payload_not_object",
        "payload_malformed",
        "duplicate_claim",
        "missing_exp",
        "missing_sub",
        "bad_claim_type",
        "wrong_issuer",
        "wrong_audience",
        "expired",
        "not_yet_valid",
        "issued_in_future",
        "revoked",
        "too_long_lived",
        "missing_token",
        "multiple_tokens",
        "insufficient_scope",
        "no_keys",
    ];

    /// The snake_case label for the `auth failures by reason` metric (SPEC §7).
    pub fn reason_label(&self) -> &'static str {
        match self {
            TokenError::TooLarge => "too_large",
            TokenError::Malformed(_) => "malformed",
            TokenError::Base64 => "base64",
            TokenError::HeaderNotObject => "header_not_object",
            TokenError::AlgNone => "alg_none",
            TokenError::AlgNotAllowed => "alg_not_allowed",
            TokenError::UnknownCrit => "unknown_crit",
            TokenError::B64False => "b64_false",
            TokenError::UnknownKid => "unknown_kid",
            TokenError::NoKeyForAlg => "no_key_for_alg",
            TokenError::AmbiguousKey => "ambiguous_key",
            TokenError::AlgKeyMismatch => "alg_key_mismatch",
            TokenError::BadSignature => "bad_signature",
            TokenError::PayloadNotObject => "payload_not_object",
            TokenError::PayloadMalformed(_) => "payload_malformed",
            TokenError::DuplicateClaim => "duplicate_claim",
            TokenError::MissingExp => "missing_exp",
            TokenError::MissingSub => "missing_sub",
            TokenError::BadClaimType(_) => "bad_claim_type",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::IssuedInFuture => "issued_in_future",
            TokenError::Revoked => "revoked",
            TokenError::TooLongLived => "too_long_lived",
        }
    }

    /// True when the error was found after the signature verified with a configured key
    /// (the claims were checked): the token is authentic, only its content is refused.
    pub fn signature_was_valid(&self) -> bool {
        matches!(
            self,
            TokenError::PayloadNotObject
                | TokenError::PayloadMalformed(_)
                | TokenError::DuplicateClaim
                | TokenError::MissingExp
                | TokenError::MissingSub
                | TokenError::BadClaimType(_)
                | TokenError::WrongIssuer
                | TokenError::WrongAudience
                | TokenError::Expired
                | TokenError::NotYetValid
                | TokenError::IssuedInFuture
                | TokenError::Revoked
                | TokenError::TooLongLived
        )
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Malformed(k) | TokenError::PayloadMalformed(k) => {
                write!(f, "{}: {}", self.detail(), k.text())
            }
            _ => f.write_str(self.detail()),
        }
    }
}

impl std::error::Error for TokenError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<TokenError> {
        let kinds = [
            MalformedKind::SegmentCount,
            MalformedKind::EmptySegment,
            MalformedKind::NotUtf8,
            MalformedKind::Json,
            MalformedKind::TooDeep,
            MalformedKind::TooManyMembers,
            MalformedKind::DuplicateHeader,
            MalformedKind::MissingAlg,
            MalformedKind::AlgNotString,
            MalformedKind::KidNotString,
            MalformedKind::Typ,
            MalformedKind::Crit,
            MalformedKind::B64,
            MalformedKind::JweHeader,
            MalformedKind::TooManyScopes,
        ];
        let mut v = vec![
            TokenError::TooLarge,
            TokenError::Base64,
            TokenError::HeaderNotObject,
            TokenError::AlgNone,
            TokenError::AlgNotAllowed,
            TokenError::UnknownCrit,
            TokenError::B64False,
            TokenError::UnknownKid,
            TokenError::NoKeyForAlg,
            TokenError::AmbiguousKey,
            TokenError::AlgKeyMismatch,
            TokenError::BadSignature,
            TokenError::PayloadNotObject,
            TokenError::DuplicateClaim,
            TokenError::MissingExp,
            TokenError::MissingSub,
            TokenError::WrongIssuer,
            TokenError::WrongAudience,
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::IssuedInFuture,
            TokenError::Revoked,
            TokenError::TooLongLived,
        ];
        for k in kinds {
            v.push(TokenError::Malformed(k));
            v.push(TokenError::PayloadMalformed(k));
        }
        for c in [
            "exp", "nbf", "iat", "sub", "iss", "aud", "jti", "scope", "scp", "x",
        ] {
            v.push(TokenError::BadClaimType(c));
        }
        v
    }

    #[test]
    fn descriptions_fit_rfc6750_error_description_charset() {
        // RFC 6750 §3: error-description = *( %x20-21 / %x23-5B / %x5D-7E )
        for e in all() {
            let d = e.description();
            assert!(!d.is_empty());
            assert!(
                d.bytes()
                    .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E)),
                "{d}"
            );
        }
    }

    #[test]
    fn only_the_six_descriptions_reach_the_wire() {
        for e in all() {
            assert!(
                TokenError::DESCRIPTIONS.contains(&e.description()),
                "{e:?}: {}",
                e.description()
            );
        }
        // SPEC §4: the key setup is never told apart on the wire ...
        for e in [
            TokenError::UnknownKid,
            TokenError::AlgKeyMismatch,
            TokenError::AmbiguousKey,
            TokenError::NoKeyForAlg,
            TokenError::BadSignature,
        ] {
            assert_eq!(e.description(), "invalid signature");
        }
        // ... but logs and metrics keep the precise reason.
        assert_eq!(TokenError::UnknownKid.detail(), "unknown key id");
        assert_eq!(TokenError::UnknownKid.to_string(), "unknown key id");
        assert_eq!(TokenError::AmbiguousKey.reason_label(), "ambiguous_key");
        assert_ne!(
            TokenError::AlgKeyMismatch.detail(),
            TokenError::BadSignature.detail()
        );
    }

    #[test]
    fn labels_are_snake_case() {
        for e in all() {
            let l = e.reason_label();
            assert!(l
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()));
        }
    }

    #[test]
    fn signature_was_valid_only_after_the_signature() {
        assert!(TokenError::Expired.signature_was_valid());
        assert!(TokenError::NotYetValid.signature_was_valid());
        assert!(TokenError::IssuedInFuture.signature_was_valid());
        assert!(TokenError::WrongAudience.signature_was_valid());
        assert!(TokenError::WrongIssuer.signature_was_valid());
        assert!(TokenError::MissingSub.signature_was_valid());
        for e in [
            TokenError::TooLarge,
            TokenError::Malformed(MalformedKind::Json),
            TokenError::Base64,
            TokenError::AlgNone,
            TokenError::UnknownKid,
            TokenError::AlgKeyMismatch,
            TokenError::BadSignature,
        ] {
            assert!(!e.signature_was_valid(), "{e:?}");
        }
    }
}
