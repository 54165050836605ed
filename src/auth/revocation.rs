//! Token revocation, sans-IO (SPEC §6 "Revocation"): the `POST /revoke` body, the set
//! consulted at every handshake and by live connections, and the log line format with
//! its replay. No clock and no files here: `now_unix` is a parameter, and the file side
//! lives in `admin/revlog.rs`.
//!
//! Two kinds of entry:
//! - `jti`: revokes the one token carrying that `jti`; kept until its `exp` + leeway, or
//!   for `revocation_retention` when no `exp` was given.
//! - `sub`: revokes every token of that subject whose `iat` is strictly before `before`
//!   (a token without `iat` counts as issued at 0); kept until `before` + the longest
//!   token lifetime seen + leeway, at most `revocation_retention` from its insertion.
//!
//! Each entry carries `keep_until` (absolute unix seconds): past it, no token that the
//! entry matches can still be accepted, so the entry may be dropped (`expire`) and left
//! out of a compacted log.
//!
//! Call order for `POST /revoke`: [`Revocation::from_request_body`] →
//! [`RevocationSet::keep_until`] → append [`Revocation::to_log_line`] to the log and
//! fsync → only then [`RevocationSet::insert`] and close matching connections
//! ([`RevocationSet::matches`]) → answer 200. At start: [`replay`] the log and
//! [`RevocationSet::restore`] each entry.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Largest `POST /revoke` body read, in bytes: a 1024-byte id written entirely as
/// `\uXXXX` escapes is 6 KiB, plus the other members.
pub const MAX_REQUEST_BODY: usize = 8 * 1024;

/// Longest `jti` or `sub` accepted, in bytes (after JSON unescaping).
pub const MAX_ID_BYTES: usize = 1024;

/// The log format version this build writes and reads.
pub const LOG_VERSION: u64 = 1;

// === impl Revocation ===

/// One revocation, as posted to `POST /revoke` and written to the log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Revocation {
    /// Revokes the token whose `jti` claim equals `jti`; `exp` is that token's expiry.
    Jti {
        /// The `jti` claim to refuse.
        jti: String,
        /// The token's `exp` when known: the entry can be dropped once it has passed.
        exp: Option<u64>,
    },
    /// Revokes every token of `sub` whose `iat` is strictly before `before`.
    Sub {
        /// The `sub` claim whose older tokens are refused.
        sub: String,
        /// Unix seconds; tokens issued at or after it are not revoked.
        before: u64,
    },
}

impl Revocation {
    /// Parses a `POST /revoke` body; every error is a 400 whose text says which rule broke.
    ///
    /// Accepted: `{"jti":"...","exp":<u64, optional>}` or
    /// `{"sub":"...","before":<u64, default now_unix>}`. Exactly one of `jti` / `sub`;
    /// ids are non-empty strings of at most [`MAX_ID_BYTES`] bytes without control
    /// characters; numbers are non-negative integers (no fraction, no exponent, no
    /// `null`); unknown and duplicate members are refused.
    pub fn from_request_body(body: &[u8], now_unix: u64) -> Result<Revocation, RevocationError> {
        if body.len() > MAX_REQUEST_BODY {
            return Err(RevocationError::BodyTooLarge);
        }
        // Syntax first, so that "not JSON" and "not an object" are told apart.
        if serde_json::from_slice::<IgnoredAny>(body).is_err() {
            return Err(RevocationError::NotJson);
        }
        let first = body
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
        if first != Some(&b'{') {
            return Err(RevocationError::NotObject);
        }
        let fields = match serde_json::from_slice::<BodyParse>(body) {
            Ok(BodyParse(fields)) => fields?,
            // Catch-all: the syntax was checked above and the visitor refuses nothing
            // itself, so this is only reachable through serde_json's nesting limit.
            Err(_) => return Err(RevocationError::NotJson),
        };
        fields.into_revocation(Some(now_unix))
    }

    /// One log line: a JSON object and `'\n'`, carrying the absolute `keep_until`.
    ///
    /// `{"v":1,"jti":"..","exp":..,"keep_until":..}` (no `exp` member when unknown) or
    /// `{"v":1,"sub":"..","before":..,"keep_until":..}`. The id is JSON-escaped, so the
    /// line holds no raw newline.
    pub fn to_log_line(&self, keep_until: u64) -> String {
        match self {
            Revocation::Jti { jti, exp: Some(exp) } => format!(
                "{{\"v\":{LOG_VERSION},\"jti\":{},\"exp\":{exp},\"keep_until\":{keep_until}}}\n",
                json_string(jti)
            ),
            Revocation::Jti { jti, exp: None } => format!(
                "{{\"v\":{LOG_VERSION},\"jti\":{},\"keep_until\":{keep_until}}}\n",
                json_string(jti)
            ),
            Revocation::Sub { sub, before } => format!(
                "{{\"v\":{LOG_VERSION},\"sub\":{},\"before\":{before},\"keep_until\":{keep_until}}}\n",
                json_string(sub)
            ),
        }
    }
}

impl Revocation {
    /// Checks the id rules of a request body on a revocation built elsewhere (a fleet
    /// message, SPEC §8): non-empty, at most [`MAX_ID_BYTES`], no control character.
    pub fn validate(&self) -> Result<(), RevocationError> {
        match self {
            Revocation::Jti { jti, .. } => validate_id(Field::Jti, jti),
            Revocation::Sub { sub, .. } => validate_id(Field::Sub, sub),
        }
    }
}

/// A JSON string literal for `s`, escaped by serde_json. `Value`'s `Display` cannot fail
/// for a string (serialization into memory has no error path), so no unwrap is needed.
fn json_string(s: &str) -> Value {
    Value::String(s.to_owned())
}

/// Whether an id passes the rules shared by the request body and the log.
fn validate_id(field: Field, id: &str) -> Result<(), RevocationError> {
    if id.is_empty() {
        return Err(RevocationError::Empty(field));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(RevocationError::TooLong(field));
    }
    // Control characters (C0, DEL, C1) have no business in an id and would garble logs.
    if id.chars().any(char::is_control) {
        return Err(RevocationError::ControlCharacter(field));
    }
    Ok(())
}

// === request body parsing ===

/// The members of a body, each checked as it is read.
#[derive(Default)]
struct BodyFields {
    jti: Option<String>,
    sub: Option<String>,
    exp: Option<u64>,
    before: Option<u64>,
}

impl BodyFields {
    /// The shape rules: exactly one id, and only the number that goes with it.
    /// `default_before` is `Some(now)` for a request; the log must state `before`.
    fn into_revocation(self, default_before: Option<u64>) -> Result<Revocation, RevocationError> {
        match (self.jti, self.sub) {
            (Some(_), Some(_)) => Err(RevocationError::BothJtiAndSub),
            (None, None) => Err(RevocationError::NeitherJtiNorSub),
            (Some(jti), None) => {
                if self.before.is_some() {
                    return Err(RevocationError::BeforeWithJti);
                }
                Ok(Revocation::Jti { jti, exp: self.exp })
            }
            (None, Some(sub)) => {
                if self.exp.is_some() {
                    return Err(RevocationError::ExpWithSub);
                }
                match self.before.or(default_before) {
                    Some(before) => Ok(Revocation::Sub { sub, before }),
                    None => Err(RevocationError::Missing(Field::Before)),
                }
            }
        }
    }
}

/// Deserialization result that keeps our own error, so that serde's messages (which may
/// quote input) never reach the wire.
struct BodyParse(Result<BodyFields, RevocationError>);

impl<'de> Deserialize<'de> for BodyParse {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(BodyVisitor).map(BodyParse)
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = Result<BodyFields, RevocationError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = BodyFields::default();
        // Every member is consumed even after an error (serde_json insists on reaching
        // the closing brace); the first error in document order is the one reported.
        let mut first_error = None;
        while let Some(key) = map.next_key::<String>()? {
            let outcome = match key.as_str() {
                "jti" => set_id(&mut fields.jti, Field::Jti, map.next_value()?),
                "sub" => set_id(&mut fields.sub, Field::Sub, map.next_value()?),
                "exp" => set_time(&mut fields.exp, Field::Exp, map.next_value()?),
                "before" => set_time(&mut fields.before, Field::Before, map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    Err(RevocationError::UnknownField)
                }
            };
            if let Err(error) = outcome {
                first_error.get_or_insert(error);
            }
        }
        Ok(match first_error {
            Some(error) => Err(error),
            None => Ok(fields),
        })
    }
}

fn set_id(slot: &mut Option<String>, field: Field, value: Value) -> Result<(), RevocationError> {
    if slot.is_some() {
        return Err(RevocationError::Duplicate(field));
    }
    let Value::String(id) = value else {
        return Err(RevocationError::NotAString(field));
    };
    validate_id(field, &id)?;
    *slot = Some(id);
    Ok(())
}

fn set_time(slot: &mut Option<u64>, field: Field, value: Value) -> Result<(), RevocationError> {
    if slot.is_some() {
        return Err(RevocationError::Duplicate(field));
    }
    // `as_u64` is `Some` only for a non-negative integer literal that fits in 64 bits:
    // `-1`, `1.5`, `1e9`, `1.0`, `null` and strings are all refused.
    match value.as_u64() {
        Some(seconds) => {
            *slot = Some(seconds);
            Ok(())
        }
        None => Err(RevocationError::NotAnInteger(field)),
    }
}

// === errors ===

/// A member of a revocation, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `jti`.
    Jti,
    /// `sub`.
    Sub,
    /// `exp`.
    Exp,
    /// `before`.
    Before,
}

impl Field {
    /// The member's JSON name.
    pub fn name(&self) -> &'static str {
        match self {
            Field::Jti => "jti",
            Field::Sub => "sub",
            Field::Exp => "exp",
            Field::Before => "before",
        }
    }
}

/// A refused revocation: one variant per rule. From `POST /revoke` all are the client's
/// fault and answer 400 with the `Display` text (which never quotes the input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationError {
    /// Body longer than [`MAX_REQUEST_BODY`].
    BodyTooLarge,
    /// Not a single JSON value (syntax error, trailing data, empty, not UTF-8).
    NotJson,
    /// JSON, but not an object.
    NotObject,
    /// A member other than `jti`, `sub`, `exp`, `before`.
    UnknownField,
    /// A member appears twice (which one would count is ambiguous).
    Duplicate(Field),
    /// `jti` / `sub` is not a string.
    NotAString(Field),
    /// `exp` / `before` is not a non-negative integer.
    NotAnInteger(Field),
    /// `jti` / `sub` is the empty string.
    Empty(Field),
    /// `jti` / `sub` is longer than [`MAX_ID_BYTES`].
    TooLong(Field),
    /// `jti` / `sub` contains a control character.
    ControlCharacter(Field),
    /// Neither `jti` nor `sub`.
    NeitherJtiNorSub,
    /// Both `jti` and `sub`: one request revokes one thing.
    BothJtiAndSub,
    /// `before` goes with `sub`, not with `jti`.
    BeforeWithJti,
    /// `exp` goes with `jti`, not with `sub`.
    ExpWithSub,
    /// A member that must be present is missing (only in a log line: `before`).
    Missing(Field),
}

impl RevocationError {
    /// HTTP status for `POST /revoke`: every rule here is the client's.
    pub fn status(&self) -> u16 {
        400
    }
}

impl fmt::Display for RevocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RevocationError::BodyTooLarge => {
                write!(f, "body is larger than {MAX_REQUEST_BODY} bytes")
            }
            RevocationError::NotJson => f.write_str("body is not valid JSON"),
            RevocationError::NotObject => f.write_str("body is not a JSON object"),
            RevocationError::UnknownField => {
                f.write_str("unknown member (allowed: jti, exp, sub, before)")
            }
            RevocationError::Duplicate(field) => write!(f, "{} appears twice", field.name()),
            RevocationError::NotAString(field) => write!(f, "{} must be a string", field.name()),
            RevocationError::NotAnInteger(field) => write!(
                f,
                "{} must be a non-negative integer (unix seconds)",
                field.name()
            ),
            RevocationError::Empty(field) => write!(f, "{} is empty", field.name()),
            RevocationError::TooLong(field) => {
                write!(f, "{} is longer than {MAX_ID_BYTES} bytes", field.name())
            }
            RevocationError::ControlCharacter(field) => {
                write!(f, "{} contains a control character", field.name())
            }
            RevocationError::NeitherJtiNorSub => f.write_str("give jti or sub"),
            RevocationError::BothJtiAndSub => f.write_str("give jti or sub, not both"),
            RevocationError::BeforeWithJti => f.write_str("before goes with sub, not jti"),
            RevocationError::ExpWithSub => f.write_str("exp goes with jti, not sub"),
            RevocationError::Missing(field) => write!(f, "{} is missing", field.name()),
        }
    }
}

impl std::error::Error for RevocationError {}

// === impl RevocationSet ===

/// How long entries are kept: `auth.leeway` and `admin.revocation_retention`, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// `auth.leeway`: a token is accepted until `exp` + leeway.
    pub leeway_secs: u64,
    /// `admin.revocation_retention`: how long a `jti` entry without `exp` is kept, and
    /// the longest any `sub` entry is kept past its insertion.
    pub retention_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct JtiEntry {
    exp: Option<u64>,
    keep_until: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SubEntry {
    before: u64,
    keep_until: u64,
}

/// The live revocations: one map per kind, so a lookup is two hash probes with no
/// allocation. Memory: one entry per revoked `jti` or `sub` (at most
/// [`MAX_ID_BYTES`] each), bounded by `keep_until` through [`RevocationSet::expire`].
#[derive(Debug, Clone)]
pub struct RevocationSet {
    policy: RetentionPolicy,
    jtis: HashMap<String, JtiEntry>,
    subs: HashMap<String, SubEntry>,
    longest_lifetime: u64,
}

impl RevocationSet {
    /// An empty set.
    pub fn new(policy: RetentionPolicy) -> Self {
        RevocationSet {
            policy,
            jtis: HashMap::new(),
            subs: HashMap::new(),
            longest_lifetime: 0,
        }
    }

    /// The retention policy this set was built with.
    pub fn policy(&self) -> RetentionPolicy {
        self.policy
    }

    /// Absolute unix second until which a new entry must be kept.
    ///
    /// - `jti` with `exp`: `exp + leeway` (the token is refused as expired after that).
    /// - `jti` without `exp`: `now + retention`.
    /// - `sub`: a matching token has `iat < before`, so it is dead by
    ///   `before + longest_lifetime + leeway`; capped at `now + retention`, but never
    ///   earlier than `before` (a `before` in the future holds until it arrives). When no
    ///   lifetime has been observed yet, nothing bounds a token's life: `now + retention`.
    pub fn keep_until(&self, r: &Revocation, now_unix: u64) -> u64 {
        // SPEC §6: a jti entry is kept until its exp + leeway, or for
        // revocation_retention without exp; a sub entry until before + the longest token
        // lifetime seen is past (at most revocation_retention).
        let cap = now_unix.saturating_add(self.policy.retention_secs);
        match r {
            Revocation::Jti { exp: Some(exp), .. } => exp.saturating_add(self.policy.leeway_secs),
            Revocation::Jti { exp: None, .. } => cap,
            Revocation::Sub { before, .. } => {
                let by_lifetime = if self.longest_lifetime == 0 {
                    cap
                } else {
                    before
                        .saturating_add(self.longest_lifetime)
                        .saturating_add(self.policy.leeway_secs)
                };
                by_lifetime.min(cap).max(*before)
            }
        }
    }

    /// Adds an entry. Idempotent: a repeated `jti` keeps the later `keep_until` (with its
    /// `exp`); a repeated `sub` keeps the later `before` and the later `keep_until`.
    pub fn insert(&mut self, r: Revocation, keep_until: u64) {
        match r {
            Revocation::Jti { jti, exp } => match self.jtis.entry(jti) {
                Entry::Occupied(mut entry) => {
                    if keep_until > entry.get().keep_until {
                        entry.insert(JtiEntry { exp, keep_until });
                    }
                }
                Entry::Vacant(entry) => {
                    entry.insert(JtiEntry { exp, keep_until });
                }
            },
            Revocation::Sub { sub, before } => match self.subs.entry(sub) {
                Entry::Occupied(mut entry) => {
                    let current = entry.get_mut();
                    current.before = current.before.max(before);
                    current.keep_until = current.keep_until.max(keep_until);
                }
                Entry::Vacant(entry) => {
                    entry.insert(SubEntry { before, keep_until });
                }
            },
        }
    }

    /// Adds an entry replayed from the log, and raises the longest lifetime to the one
    /// that entry was kept for (`keep_until - before - leeway` for a `sub`), so that the
    /// restart does not shorten later `sub` entries while no long token has shown up yet.
    /// It can overestimate (an entry kept by the retention fallback, or two merged
    /// entries), which only keeps later entries longer: the safe direction.
    pub fn restore(&mut self, r: Revocation, keep_until: u64) {
        if let Revocation::Sub { before, .. } = &r {
            let lifetime = keep_until
                .saturating_sub(*before)
                .saturating_sub(self.policy.leeway_secs);
            self.observe_lifetime(lifetime);
        }
        self.insert(r, keep_until);
    }

    /// Records a verified token's lifetime (see [`token_lifetime`]) so `sub` entries are
    /// kept long enough to outlive every token they match.
    pub fn observe_lifetime(&mut self, lifetime_secs: u64) {
        self.longest_lifetime = self.longest_lifetime.max(lifetime_secs);
    }

    /// Longest token lifetime observed (0: none yet).
    pub fn longest_lifetime(&self) -> u64 {
        self.longest_lifetime
    }

    /// Whether a token with these claims is revoked: one `jti` probe and one `sub` probe,
    /// no allocation. SPEC §6: a `sub` entry revokes tokens whose `iat` is *strictly*
    /// before `before` (a token issued in the `before` second itself stands), and a token
    /// without `iat` counts as issued at 0.
    pub fn is_revoked(&self, jti: Option<&str>, sub: &str, iat: Option<u64>) -> bool {
        if let Some(jti) = jti {
            if self.jtis.contains_key(jti) {
                return true;
            }
        }
        match self.subs.get(sub) {
            Some(entry) => iat.unwrap_or(0) < entry.before,
            None => false,
        }
    }

    /// Whether a live connection with these claims (of its current token) matches `r`;
    /// the same rule as [`RevocationSet::is_revoked`] for one entry.
    pub fn matches(r: &Revocation, jti: Option<&str>, sub: &str, iat: Option<u64>) -> bool {
        match r {
            Revocation::Jti { jti: revoked, .. } => jti == Some(revoked.as_str()),
            Revocation::Sub {
                sub: revoked,
                before,
            } => sub == revoked && iat.unwrap_or(0) < *before,
        }
    }

    /// Drops entries whose `keep_until` is before `now_unix`; returns how many.
    pub fn expire(&mut self, now_unix: u64) -> usize {
        let before = self.len();
        self.jtis.retain(|_, entry| entry.keep_until >= now_unix);
        self.subs.retain(|_, entry| entry.keep_until >= now_unix);
        before - self.len()
    }

    /// Number of entries (`jti` and `sub`).
    pub fn len(&self) -> usize {
        self.jtis.len() + self.subs.len()
    }

    /// Whether the set holds no entry.
    pub fn is_empty(&self) -> bool {
        self.jtis.is_empty() && self.subs.is_empty()
    }

    /// Every entry with its `keep_until`, in no particular order (for compaction).
    pub fn entries(&self) -> impl Iterator<Item = (Revocation, u64)> + '_ {
        let jtis = self.jtis.iter().map(|(jti, entry)| {
            let r = Revocation::Jti {
                jti: jti.clone(),
                exp: entry.exp,
            };
            (r, entry.keep_until)
        });
        let subs = self.subs.iter().map(|(sub, entry)| {
            let r = Revocation::Sub {
                sub: sub.clone(),
                before: entry.before,
            };
            (r, entry.keep_until)
        });
        jtis.chain(subs)
    }
}

/// A verified token's lifetime for [`RevocationSet::observe_lifetime`]: `exp - iat`, or
/// `exp - now` without `iat` (what is left of it is all that can be known).
pub fn token_lifetime(exp: u64, iat: Option<u64>, now_unix: u64) -> u64 {
    exp.saturating_sub(iat.unwrap_or(now_unix))
}

// === replay ===

/// What a log held: its entries in order, and where a torn last line starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Every complete line's entry with its `keep_until`, in file order (expired ones
    /// included; the caller skips those).
    pub entries: Vec<(Revocation, u64)>,
    /// Byte offset of a final line with no `'\n'` (a write torn by a crash; it was never
    /// acknowledged, since the newline is written and fsync'd with the rest of the line).
    pub torn_tail: Option<usize>,
    /// Number of complete lines.
    pub lines: usize,
}

/// A log that cannot be replayed: which complete line, and what is wrong with it. This
/// is the operator's (or the disk's) problem, never a client's: the gateway refuses to
/// start rather than forget revocations.
#[derive(Debug)]
pub struct ReplayError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub kind: ReplayErrorKind,
}

/// What is wrong with one log line.
#[derive(Debug)]
pub enum ReplayErrorKind {
    /// Not a JSON object of the v1 shape (syntax, type, unknown or duplicate member).
    Json(serde_json::Error),
    /// No `v` member.
    MissingVersion,
    /// A `v` other than [`LOG_VERSION`] (written by another build).
    UnknownVersion,
    /// The entry breaks a revocation rule (id shape, jti/sub, exp/before).
    Entry(RevocationError),
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: ", self.line)?;
        match &self.kind {
            ReplayErrorKind::Json(error) => write!(f, "not a revocation entry: {error}"),
            ReplayErrorKind::MissingVersion => f.write_str("no \"v\" member"),
            ReplayErrorKind::UnknownVersion => {
                write!(
                    f,
                    "unknown format version (this build reads v{LOG_VERSION})"
                )
            }
            ReplayErrorKind::Entry(error) => write!(f, "bad entry: {error}"),
        }
    }
}

impl std::error::Error for ReplayError {}

/// Only the version, read before the strict parse so a newer format is named as such.
#[derive(Deserialize)]
struct VersionProbe {
    v: Option<Value>,
}

/// A v1 line. Optional members are absent when not applicable; serde's derive refuses
/// duplicate members on its own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineV1 {
    #[allow(dead_code)] // checked by the probe; present so deny_unknown_fields accepts it
    v: u64,
    jti: Option<String>,
    exp: Option<u64>,
    sub: Option<String>,
    before: Option<u64>,
    keep_until: u64,
}

fn parse_log_line(line: &[u8]) -> Result<(Revocation, u64), ReplayErrorKind> {
    let probe: VersionProbe = serde_json::from_slice(line).map_err(ReplayErrorKind::Json)?;
    match probe.v {
        None => return Err(ReplayErrorKind::MissingVersion),
        Some(v) if v.as_u64() == Some(LOG_VERSION) => {}
        Some(_) => return Err(ReplayErrorKind::UnknownVersion),
    }
    let line: LineV1 = serde_json::from_slice(line).map_err(ReplayErrorKind::Json)?;
    // A hand-edited log gets the same id rules as a request.
    if let Some(jti) = &line.jti {
        validate_id(Field::Jti, jti).map_err(ReplayErrorKind::Entry)?;
    }
    if let Some(sub) = &line.sub {
        validate_id(Field::Sub, sub).map_err(ReplayErrorKind::Entry)?;
    }
    let fields = BodyFields {
        jti: line.jti,
        sub: line.sub,
        exp: line.exp,
        before: line.before,
    };
    let revocation = fields
        .into_revocation(None)
        .map_err(ReplayErrorKind::Entry)?;
    Ok((revocation, line.keep_until))
}

/// Parses a whole log. Every complete line must be a valid entry: a corrupt one is an
/// error naming its line, never skipped (skipping could forget a revocation). A final
/// line without `'\n'` is a torn write: reported in `torn_tail`, everything before it
/// kept. Empty input is an empty log.
pub fn replay(bytes: &[u8]) -> Result<ReplayReport, ReplayError> {
    let (complete, torn_tail) = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(last) => {
            let end = last + 1; // last < bytes.len(), so end <= bytes.len()
            let complete = bytes.get(..end).unwrap_or(bytes);
            (complete, (end < bytes.len()).then_some(end))
        }
        None => (&[][..], (!bytes.is_empty()).then_some(0)),
    };
    let mut entries = Vec::new();
    let mut lines = 0;
    for (index, line) in complete.split_inclusive(|&b| b == b'\n').enumerate() {
        lines = index + 1;
        let line_bytes = line.strip_suffix(b"\n").unwrap_or(line);
        let entry = parse_log_line(line_bytes).map_err(|kind| ReplayError { line: lines, kind })?;
        entries.push(entry);
    }
    Ok(ReplayReport {
        entries,
        torn_tail,
        lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const POLICY: RetentionPolicy = RetentionPolicy {
        leeway_secs: 30,
        retention_secs: 7 * 86_400,
    };

    fn parse(body: &str) -> Result<Revocation, RevocationError> {
        Revocation::from_request_body(body.as_bytes(), NOW)
    }

    fn jti(id: &str, exp: Option<u64>) -> Revocation {
        Revocation::Jti {
            jti: id.to_owned(),
            exp,
        }
    }

    fn sub(id: &str, before: u64) -> Revocation {
        Revocation::Sub {
            sub: id.to_owned(),
            before,
        }
    }

    // --- request body: accepted forms ---

    #[test]
    fn body_jti_with_and_without_exp() {
        assert_eq!(parse(r#"{"jti":"abc"}"#), Ok(jti("abc", None)));
        assert_eq!(
            parse(r#"{"jti":"abc","exp":1900000000}"#),
            Ok(jti("abc", Some(1_900_000_000)))
        );
        assert_eq!(parse(r#"{"exp":0,"jti":"abc"}"#), Ok(jti("abc", Some(0))));
        assert_eq!(
            parse(r#"{"jti":"abc","exp":18446744073709551615}"#),
            Ok(jti("abc", Some(u64::MAX)))
        );
    }

    #[test]
    fn body_sub_with_and_without_before() {
        assert_eq!(parse(r#"{"sub":"alice"}"#), Ok(sub("alice", NOW)));
        assert_eq!(
            parse(r#"{"sub":"alice","before":12}"#),
            Ok(sub("alice", 12))
        );
        assert_eq!(parse(r#"{"before":0,"sub":"alice"}"#), Ok(sub("alice", 0)));
    }

    #[test]
    fn body_whitespace_escapes_and_unicode() {
        assert_eq!(parse(" \r\n\t{ \"jti\" : \"a\" } \n"), Ok(jti("a", None)));
        // Escaped member names and values are unescaped before any rule applies.
        assert_eq!(
            parse(r#"{"j\u0074i":"\u00e9t\u00e9"}"#),
            Ok(jti("été", None))
        );
        assert_eq!(parse(r#"{"sub":"x\"y\\z/"}"#), Ok(sub("x\"y\\z/", NOW)));
        let max = "é".repeat(MAX_ID_BYTES / 2); // exactly MAX_ID_BYTES bytes
        assert_eq!(parse(&format!(r#"{{"sub":"{max}"}}"#)), Ok(sub(&max, NOW)));
    }

    // --- request body: every refusal ---

    #[test]
    fn body_size_and_syntax() {
        let big = format!(r#"{{"jti":"a","pad":"{}"}}"#, "x".repeat(MAX_REQUEST_BODY));
        assert_eq!(parse(&big), Err(RevocationError::BodyTooLarge));
        for body in [
            "",
            "   ",
            "{",
            r#"{"jti":"a""#,
            r#"{"jti":"a"} x"#,
            r#"{"jti":"a"}{}"#,
            "nope",
            "{'jti':'a'}",
            r#"{"jti":"a",}"#,
        ] {
            assert_eq!(parse(body), Err(RevocationError::NotJson), "{body:?}");
        }
        assert_eq!(
            Revocation::from_request_body(b"{\"jti\":\"\xff\"}", NOW),
            Err(RevocationError::NotJson)
        );
        // Deep nesting: valid JSON, but past serde_json's nesting limit for a value.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(parse(&deep), Err(RevocationError::NotObject));
        let deep_member = format!(r#"{{"jti":{}{}}}"#, "[".repeat(200), "]".repeat(200));
        assert_eq!(parse(&deep_member), Err(RevocationError::NotJson));
        let deep_unknown = format!(r#"{{"x":{}{}}}"#, "[".repeat(200), "]".repeat(200));
        assert_eq!(parse(&deep_unknown), Err(RevocationError::UnknownField));
    }

    #[test]
    fn body_not_an_object() {
        for body in ["[]", r#"["jti","a"]"#, r#""jti""#, "1", "null", "true"] {
            assert_eq!(parse(body), Err(RevocationError::NotObject), "{body:?}");
        }
    }

    #[test]
    fn body_members() {
        use RevocationError::*;
        let cases: &[(&str, RevocationError)] = &[
            (r#"{}"#, NeitherJtiNorSub),
            (r#"{"exp":5}"#, NeitherJtiNorSub),
            (r#"{"jti":"a","sub":"b"}"#, BothJtiAndSub),
            (r#"{"jti":"a","before":5}"#, BeforeWithJti),
            (r#"{"sub":"a","exp":5}"#, ExpWithSub),
            (r#"{"jti":"a","iat":5}"#, UnknownField),
            (r#"{"JTI":"a"}"#, UnknownField),
            (r#"{"jti":"a","jti":"a"}"#, Duplicate(Field::Jti)),
            (r#"{"sub":"a","sub":"b"}"#, Duplicate(Field::Sub)),
            (r#"{"jti":"a","exp":1,"exp":1}"#, Duplicate(Field::Exp)),
            (
                r#"{"sub":"a","before":1,"before":2}"#,
                Duplicate(Field::Before),
            ),
            (r#"{"jti":5}"#, NotAString(Field::Jti)),
            (r#"{"jti":null}"#, NotAString(Field::Jti)),
            (r#"{"sub":["a"]}"#, NotAString(Field::Sub)),
            (r#"{"sub":{"a":1}}"#, NotAString(Field::Sub)),
            (r#"{"jti":""}"#, Empty(Field::Jti)),
            (r#"{"sub":""}"#, Empty(Field::Sub)),
            (r#"{"jti":"a\u0000b"}"#, ControlCharacter(Field::Jti)),
            (r#"{"sub":"a\nb"}"#, ControlCharacter(Field::Sub)),
            (r#"{"sub":"a\u007fb"}"#, ControlCharacter(Field::Sub)),
            (r#"{"sub":"a\u0085b"}"#, ControlCharacter(Field::Sub)),
            (r#"{"jti":"a","exp":-1}"#, NotAnInteger(Field::Exp)),
            (r#"{"jti":"a","exp":1.5}"#, NotAnInteger(Field::Exp)),
            (r#"{"jti":"a","exp":1.0}"#, NotAnInteger(Field::Exp)),
            (r#"{"jti":"a","exp":1e9}"#, NotAnInteger(Field::Exp)),
            (
                r#"{"jti":"a","exp":"1900000000"}"#,
                NotAnInteger(Field::Exp),
            ),
            (r#"{"jti":"a","exp":null}"#, NotAnInteger(Field::Exp)),
            (
                r#"{"jti":"a","exp":18446744073709551616}"#,
                NotAnInteger(Field::Exp),
            ),
            (r#"{"sub":"a","before":-5}"#, NotAnInteger(Field::Before)),
            (r#"{"sub":"a","before":true}"#, NotAnInteger(Field::Before)),
        ];
        for (body, want) in cases {
            assert_eq!(parse(body).as_ref(), Err(want), "{body}");
        }
    }

    #[test]
    fn body_first_error_in_document_order_wins() {
        assert_eq!(
            parse(r#"{"zzz":1,"jti":5}"#),
            Err(RevocationError::UnknownField)
        );
        assert_eq!(
            parse(r#"{"jti":5,"zzz":1}"#),
            Err(RevocationError::NotAString(Field::Jti))
        );
        // A member error beats a shape error found after the whole object is read.
        assert_eq!(
            parse(r#"{"jti":"a","sub":""}"#),
            Err(RevocationError::Empty(Field::Sub))
        );
    }

    #[test]
    fn body_id_length_limit() {
        let long = "a".repeat(MAX_ID_BYTES + 1);
        assert_eq!(
            parse(&format!(r#"{{"jti":"{long}"}}"#)),
            Err(RevocationError::TooLong(Field::Jti))
        );
        let ok = "a".repeat(MAX_ID_BYTES);
        assert_eq!(parse(&format!(r#"{{"jti":"{ok}"}}"#)), Ok(jti(&ok, None)));
    }

    #[test]
    fn errors_are_400_with_text_that_quotes_no_input() {
        let secret = "s3cr3t-value";
        for body in [
            format!(r#"{{"{secret}":1,"jti":"a"}}"#),
            format!(r#"{{"jti":"{secret}","sub":"{secret}"}}"#),
            format!(r#"{{"jti":"{secret}","exp":"{secret}"}}"#),
            secret.to_owned(),
        ] {
            let error = parse(&body).err();
            let Some(error) = error else {
                panic!("{body} was accepted");
            };
            assert_eq!(error.status(), 400);
            let text = error.to_string();
            assert!(!text.is_empty() && !text.contains(secret), "{text}");
        }
        assert_eq!(
            RevocationError::NotAnInteger(Field::Before).to_string(),
            "before must be a non-negative integer (unix seconds)"
        );
    }

    // --- log lines ---

    #[test]
    fn log_line_format() {
        assert_eq!(
            jti("abc", Some(5)).to_log_line(35),
            "{\"v\":1,\"jti\":\"abc\",\"exp\":5,\"keep_until\":35}\n"
        );
        assert_eq!(
            jti("abc", None).to_log_line(7),
            "{\"v\":1,\"jti\":\"abc\",\"keep_until\":7}\n"
        );
        assert_eq!(
            sub("alice", 10).to_log_line(20),
            "{\"v\":1,\"sub\":\"alice\",\"before\":10,\"keep_until\":20}\n"
        );
    }

    #[test]
    fn log_line_escapes_and_round_trips() {
        let entries = [
            (jti("q\"uote\\back/slash", Some(u64::MAX)), u64::MAX),
            (jti("été ✓ 😀", None), 1),
            (sub("line\u{2028}sep", 0), 0),
            // Control characters never pass a request, but the writer escapes them anyway.
            (sub("new\nline\ttab", 3), 4),
        ];
        let mut log = String::new();
        for (r, keep_until) in &entries {
            let line = r.to_log_line(*keep_until);
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            assert!(line.ends_with('\n'));
            log.push_str(&line);
        }
        // The control-character entry is refused on replay, like a request would be.
        let (good, bad) = log.split_at(log.rfind("{\"v\":1,\"sub\":\"new").unwrap_or(0));
        let report = replay(good.as_bytes());
        assert!(
            matches!(&report, Ok(r) if r.entries == entries[..3] && r.lines == 3 && r.torn_tail.is_none()),
            "{report:?}"
        );
        let error = replay(bad.as_bytes()).err();
        assert!(matches!(
            error,
            Some(ReplayError {
                line: 1,
                kind: ReplayErrorKind::Entry(RevocationError::ControlCharacter(Field::Sub))
            })
        ));
    }

    // --- keep_until ---

    #[test]
    fn keep_until_jti() {
        let set = RevocationSet::new(POLICY);
        assert_eq!(set.keep_until(&jti("a", Some(NOW + 900)), NOW), NOW + 930);
        // An exp already past still only needs exp + leeway (the token is dead anyway).
        assert_eq!(set.keep_until(&jti("a", Some(5)), NOW), 35);
        assert_eq!(set.keep_until(&jti("a", Some(u64::MAX)), NOW), u64::MAX);
        assert_eq!(set.keep_until(&jti("a", None), NOW), NOW + 7 * 86_400);
        assert_eq!(set.keep_until(&jti("a", None), u64::MAX - 1), u64::MAX);
    }

    #[test]
    fn keep_until_sub() {
        let mut set = RevocationSet::new(POLICY);
        // Nothing observed yet: no bound on a token's life, so keep for the retention.
        assert_eq!(set.longest_lifetime(), 0);
        assert_eq!(set.keep_until(&sub("a", NOW), NOW), NOW + 7 * 86_400);
        set.observe_lifetime(900);
        set.observe_lifetime(600); // the longest one counts
        assert_eq!(set.longest_lifetime(), 900);
        assert_eq!(set.keep_until(&sub("a", NOW), NOW), NOW + 900 + 30);
        assert_eq!(set.keep_until(&sub("a", NOW - 100), NOW), NOW - 100 + 930);
        // An old `before`: every token it matches is long dead, so already expirable.
        assert_eq!(set.keep_until(&sub("a", 1000), NOW), 1930);
        // Capped at now + retention...
        set.observe_lifetime(30 * 86_400);
        assert_eq!(set.keep_until(&sub("a", NOW), NOW), NOW + 7 * 86_400);
        // ...but never earlier than a `before` still in the future.
        let future = NOW + 10 * 86_400;
        assert_eq!(set.keep_until(&sub("a", future), NOW), future);
        assert_eq!(set.keep_until(&sub("a", u64::MAX), NOW), u64::MAX);
    }

    #[test]
    fn token_lifetime_rules() {
        assert_eq!(token_lifetime(NOW + 900, Some(NOW), NOW + 5), 900);
        assert_eq!(token_lifetime(NOW + 900, None, NOW + 100), 800);
        assert_eq!(token_lifetime(NOW, Some(NOW + 10), NOW), 0);
    }

    // --- lookups ---

    #[test]
    fn is_revoked_by_jti() {
        let mut set = RevocationSet::new(POLICY);
        set.insert(jti("t1", None), NOW);
        assert!(set.is_revoked(Some("t1"), "anyone", Some(NOW)));
        assert!(set.is_revoked(Some("t1"), "other", None));
        assert!(!set.is_revoked(Some("t2"), "anyone", Some(0)));
        assert!(!set.is_revoked(None, "t1", Some(0)));
        assert!(!set.is_revoked(Some("T1"), "anyone", None));
    }

    #[test]
    fn is_revoked_by_sub_strictly_before() {
        let mut set = RevocationSet::new(POLICY);
        set.insert(sub("alice", 1000), NOW);
        assert!(set.is_revoked(None, "alice", Some(999)));
        assert!(set.is_revoked(Some("x"), "alice", Some(0)));
        // Issued in the `before` second itself, or later: not revoked.
        assert!(!set.is_revoked(None, "alice", Some(1000)));
        assert!(!set.is_revoked(None, "alice", Some(1001)));
        // No iat counts as issued at 0: revoked by any before > 0.
        assert!(set.is_revoked(None, "alice", None));
        assert!(!set.is_revoked(None, "bob", Some(0)));
        assert!(!set.is_revoked(None, "alic", None));

        let mut zero = RevocationSet::new(POLICY);
        zero.insert(sub("alice", 0), NOW);
        assert!(!zero.is_revoked(None, "alice", None));
    }

    #[test]
    fn matches_one_entry() {
        let r = jti("t1", Some(5));
        assert!(RevocationSet::matches(&r, Some("t1"), "x", None));
        assert!(!RevocationSet::matches(&r, Some("t2"), "x", None));
        assert!(!RevocationSet::matches(&r, None, "t1", None));
        let r = sub("alice", 1000);
        assert!(RevocationSet::matches(&r, None, "alice", Some(999)));
        assert!(RevocationSet::matches(&r, Some("t1"), "alice", None));
        assert!(!RevocationSet::matches(&r, None, "alice", Some(1000)));
        assert!(!RevocationSet::matches(&r, None, "bob", Some(1)));
    }

    // --- insert / expire ---

    #[test]
    fn insert_is_idempotent() {
        let mut set = RevocationSet::new(POLICY);
        set.insert(jti("t1", Some(100)), 130);
        set.insert(jti("t1", Some(100)), 130);
        assert_eq!(set.len(), 1);
        // A later keep_until wins, with its exp; an earlier one changes nothing.
        set.insert(jti("t1", None), 500);
        set.insert(jti("t1", Some(50)), 80);
        assert_eq!(
            set.entries().collect::<Vec<_>>(),
            vec![(jti("t1", None), 500)]
        );

        set.insert(sub("alice", 1000), 2000);
        set.insert(sub("alice", 900), 3000);
        set.insert(sub("alice", 1100), 1500);
        assert_eq!(set.len(), 2);
        let subs: Vec<_> = set
            .entries()
            .filter(|(r, _)| matches!(r, Revocation::Sub { .. }))
            .collect();
        assert_eq!(subs, vec![(sub("alice", 1100), 3000)]);
        // A jti and a sub with the same text are different entries.
        set.insert(jti("alice", None), 1);
        assert_eq!(set.len(), 3);
    }

    #[test]
    fn expire_drops_only_entries_past_keep_until() {
        let mut set = RevocationSet::new(POLICY);
        assert!(set.is_empty());
        set.insert(jti("old", Some(10)), 40);
        set.insert(jti("edge", None), 100);
        set.insert(sub("gone", 5), 99);
        set.insert(sub("live", 5), 1000);
        assert_eq!(set.expire(100), 2);
        assert_eq!(set.len(), 2);
        assert!(!set.is_revoked(Some("old"), "x", None));
        assert!(set.is_revoked(Some("edge"), "x", None)); // keep_until == now: kept
        assert!(!set.is_revoked(None, "gone", None));
        assert!(set.is_revoked(None, "live", None));
        assert_eq!(set.expire(100), 0);
        assert_eq!(set.expire(1001), 2);
        assert!(set.is_empty());
    }

    #[test]
    fn restore_carries_the_lifetime_across_a_restart() {
        let mut before = RevocationSet::new(POLICY);
        before.observe_lifetime(3600);
        let r = sub("alice", NOW);
        let keep_until = before.keep_until(&r, NOW);
        let mut after = RevocationSet::new(POLICY);
        after.observe_lifetime(60); // a short token seen first after the restart
        after.restore(r.clone(), keep_until);
        assert_eq!(after.longest_lifetime(), 3600);
        assert_eq!(after.keep_until(&sub("bob", NOW), NOW), keep_until);
        // jti entries say nothing about lifetimes.
        after.restore(jti("t", None), u64::MAX);
        assert_eq!(after.longest_lifetime(), 3600);
        assert!(after.is_revoked(None, "alice", Some(NOW - 1)));
    }

    // --- replay ---

    fn log_of(entries: &[(Revocation, u64)]) -> String {
        entries.iter().map(|(r, k)| r.to_log_line(*k)).collect()
    }

    #[test]
    fn replay_good_log() {
        let entries = vec![
            (jti("a", Some(5)), 35),
            (sub("alice", 10), 20),
            (jti("b", None), 99),
            (jti("a", Some(5)), 35), // repeats are fine; insert is idempotent
        ];
        let report = replay(log_of(&entries).as_bytes());
        assert!(
            matches!(&report, Ok(r) if r.entries == entries && r.lines == 4 && r.torn_tail.is_none())
        );
        let empty = replay(b"");
        assert!(
            matches!(empty, Ok(r) if r.entries.is_empty() && r.lines == 0 && r.torn_tail.is_none())
        );
        // Member order and whitespace are free; CRLF endings are JSON whitespace.
        let report = replay(b" { \"keep_until\" : 9 , \"jti\":\"x\", \"v\":1 }\r\n");
        assert!(matches!(&report, Ok(r) if r.entries == vec![(jti("x", None), 9)]));
    }

    #[test]
    fn replay_torn_tail_keeps_earlier_entries() {
        let entries = vec![(jti("a", None), 1), (sub("b", 2), 3)];
        let good = log_of(&entries);
        let full = sub("c", 4).to_log_line(5);
        for cut in 1..full.len() {
            let torn = format!("{good}{}", &full[..cut]);
            let report = replay(torn.as_bytes());
            assert!(
                matches!(&report, Ok(r) if r.entries == entries && r.lines == 2 && r.torn_tail == Some(good.len())),
                "cut {cut}: {report:?}"
            );
        }
        // A torn first line, and zero bytes left by a crash after a size-only update.
        assert!(
            matches!(replay(b"{\"v\":1,\"j"), Ok(r) if r.entries.is_empty() && r.torn_tail == Some(0) && r.lines == 0)
        );
        let zeros = format!("{good}\0\0\0\0");
        assert!(matches!(replay(zeros.as_bytes()), Ok(r) if r.torn_tail == Some(good.len())));
        // Even a tail that parses is torn: without its newline it was never fsync'd whole.
        let no_newline = format!("{good}{}", full.trim_end());
        assert!(
            matches!(replay(no_newline.as_bytes()), Ok(r) if r.entries == entries && r.torn_tail == Some(good.len()))
        );
    }

    fn replay_error(log: &str) -> (usize, ReplayErrorKind) {
        match replay(log.as_bytes()) {
            Ok(report) => panic!("accepted {log:?}: {report:?}"),
            Err(ReplayError { line, kind }) => (line, kind),
        }
    }

    #[test]
    fn replay_corrupt_complete_line_is_an_error_with_its_number() {
        let a = jti("a", None).to_log_line(1);
        let b = sub("b", 2).to_log_line(3);
        let (line, kind) = replay_error(&format!("{a}{{\"v\":1,\"jti\"\n{b}"));
        assert_eq!(line, 2);
        assert!(matches!(kind, ReplayErrorKind::Json(_)));
        // An empty line is not a valid entry either.
        let (line, _) = replay_error(&format!("{a}{b}\n{a}"));
        assert_eq!(line, 3);
        // The error text names the line.
        let text = replay(format!("{a}garbage\n").as_bytes())
            .err()
            .map(|e| e.to_string());
        assert!(
            matches!(&text, Some(t) if t.starts_with("line 2: ")),
            "{text:?}"
        );
        // A corrupt last complete line is still an error, not a torn tail.
        let (line, _) = replay_error(&format!("{a}{b}{{\"v\":1}}\n"));
        assert_eq!(line, 3);
    }

    #[test]
    fn replay_versions() {
        let (line, kind) = replay_error("{\"v\":2,\"jti\":\"a\",\"keep_until\":1,\"new\":true}\n");
        assert_eq!(line, 1);
        assert!(matches!(kind, ReplayErrorKind::UnknownVersion));
        for bad in [
            "{\"v\":\"1\",\"jti\":\"a\",\"keep_until\":1}\n",
            "{\"v\":0,\"jti\":\"a\",\"keep_until\":1}\n",
            "{\"v\":1.0,\"jti\":\"a\",\"keep_until\":1}\n",
        ] {
            assert!(
                matches!(replay_error(bad).1, ReplayErrorKind::UnknownVersion),
                "{bad}"
            );
        }
        assert!(matches!(
            replay_error("{\"jti\":\"a\",\"keep_until\":1}\n").1,
            ReplayErrorKind::MissingVersion
        ));
    }

    #[test]
    fn replay_line_shape_rules() {
        use ReplayErrorKind::{Entry, Json};
        let json = [
            "[1]\n",
            "{\"v\":1,\"jti\":\"a\"}\n", // no keep_until
            "{\"v\":1,\"jti\":\"a\",\"keep_until\":-1}\n", // negative
            "{\"v\":1,\"jti\":\"a\",\"keep_until\":1,\"x\":1}\n", // unknown member
            "{\"v\":1,\"jti\":\"a\",\"jti\":\"b\",\"keep_until\":1}\n", // duplicate
            "{\"v\":1,\"v\":1,\"jti\":\"a\",\"keep_until\":1}\n", // duplicate v
            "{\"v\":1,\"jti\":7,\"keep_until\":1}\n", // wrong type
        ];
        for log in json {
            assert!(matches!(replay_error(log).1, Json(_)), "{log}");
        }
        let entry: &[(&str, RevocationError)] = &[
            (
                "{\"v\":1,\"keep_until\":1}\n",
                RevocationError::NeitherJtiNorSub,
            ),
            (
                "{\"v\":1,\"jti\":\"a\",\"sub\":\"b\",\"before\":1,\"keep_until\":1}\n",
                RevocationError::BothJtiAndSub,
            ),
            (
                "{\"v\":1,\"sub\":\"b\",\"keep_until\":1}\n",
                RevocationError::Missing(Field::Before),
            ),
            (
                "{\"v\":1,\"jti\":\"a\",\"before\":1,\"keep_until\":1}\n",
                RevocationError::BeforeWithJti,
            ),
            (
                "{\"v\":1,\"sub\":\"b\",\"before\":1,\"exp\":1,\"keep_until\":1}\n",
                RevocationError::ExpWithSub,
            ),
            (
                "{\"v\":1,\"jti\":\"\",\"keep_until\":1}\n",
                RevocationError::Empty(Field::Jti),
            ),
        ];
        for (log, want) in entry {
            assert!(
                matches!(replay_error(log).1, Entry(e) if e == *want),
                "{log}"
            );
        }
    }
}
