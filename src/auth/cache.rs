//! A worker's cache of verified tokens (as Envoy's `jwt_authn` `jwt_cache_config`): a
//! token that verified once is not decoded, parsed and signature-checked again while the
//! same verifier (keys and rules) is in force.
//!
//! What a hit skips is only what the token's bytes and the verifier decide once and for
//! all: structure, base64url, the header, key selection, the signature (RFC 7515 §5.2),
//! the claims' types, the required claims, issuer and audience. What depends on the moment
//! is checked again on every hit: `exp`, `nbf`, `iat` against now with the leeway and the
//! lifetime bound (SPEC §3); and the caller still applies the route's rules (scope) and
//! revocation (SPEC §6) to the claims every time, hit or miss.
//!
//! - Keyed by the exact token bytes: a hash finds the slot, and the whole token is
//!   compared before a hit counts (a hash collision is a miss, never someone else's claims).
//! - Owned by one verifier snapshot: when the verifier in force is another one (SIGHUP, a
//!   key rotated in or retired, a provider's new key set, a changed `issuer`/`audience`),
//!   the whole cache is emptied before anything is looked up.
//! - Only tokens that passed every check are stored; a failure is never cached.
//! - Bounded: at most [`MAX_ENTRIES`] tokens and [`MAX_BYTES`] of tokens and claims per
//!   worker, the oldest entry leaving first (insertion order).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Weak};

use super::claims::Claims;
use super::keys::Alg;
use super::verify::Verifier;

/// Tokens kept per worker.
pub const MAX_ENTRIES: usize = 1024;
/// Bytes kept per worker: the tokens plus their claims' text (plus a fixed charge per
/// entry for its bookkeeping).
pub const MAX_BYTES: usize = 512 * 1024;
/// What one entry costs beyond its text, for [`MAX_BYTES`].
const ENTRY_OVERHEAD: usize = 160;

/// The claims of one verified token, owned.
#[derive(Debug)]
struct Entry {
    hash: u64,
    token: Box<[u8]>,
    sub: Box<str>,
    jti: Option<Box<str>>,
    iss: Option<Box<str>>,
    kid: Option<Box<str>>,
    scopes: Box<str>,
    /// Where the payload segment lies in `token`.
    payload: (usize, usize),
    alg: Alg,
    exp: u64,
    nbf: Option<u64>,
    iat: Option<u64>,
    key_fingerprint: u64,
}

impl Entry {
    fn cost(&self) -> usize {
        ENTRY_OVERHEAD
            + self.token.len()
            + self.sub.len()
            + self.jti.as_ref().map_or(0, |s| s.len())
            + self.iss.as_ref().map_or(0, |s| s.len())
            + self.kid.as_ref().map_or(0, |s| s.len())
            + self.scopes.len()
    }
}

/// The cached, time-independent part of a verified token, borrowed from the cache.
pub(crate) struct Hit<'c> {
    pub(crate) claims: Claims<'c>,
    pub(crate) nbf: Option<u64>,
    pub(crate) iat: Option<u64>,
}

/// One worker's verified tokens (see the module documentation).
#[derive(Debug)]
pub struct TokenCache {
    /// The verifier whose results these are (a `Weak` keeps its allocation, so its address
    /// cannot be taken by another verifier while the cache remembers it).
    owner: Weak<Verifier>,
    hasher: RandomState,
    /// Entries in insertion order, oldest first; a removed entry leaves a hole (None)
    /// that counts against [`MAX_ENTRIES`] until it reaches the front.
    queue: VecDeque<Option<Entry>>,
    /// The sequence number of `queue[0]`.
    front: u64,
    /// Token hash -> sequence number of its entry.
    index: HashMap<u64, u64>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache::with_bounds(MAX_ENTRIES, MAX_BYTES)
    }
}

impl TokenCache {
    /// A cache of at most `max_entries` tokens and `max_bytes` (tests use small bounds).
    pub fn with_bounds(max_entries: usize, max_bytes: usize) -> TokenCache {
        TokenCache {
            owner: Weak::new(),
            hasher: RandomState::new(),
            queue: VecDeque::new(),
            front: 0,
            index: HashMap::new(),
            bytes: 0,
            max_entries: max_entries.max(1),
            max_bytes,
        }
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes charged (tokens, claims' text, per-entry overhead).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.queue.clear();
        self.index.clear();
        self.front = 0;
        self.bytes = 0;
    }

    /// Makes `verifier` the owner, emptying the cache if it belonged to another one.
    fn own(&mut self, verifier: &Arc<Verifier>) {
        if self.owner.as_ptr() != Arc::as_ptr(verifier) {
            self.clear();
            self.owner = Arc::downgrade(verifier);
        }
    }

    /// The entry whose token is exactly `token`.
    fn find(&self, token: &[u8]) -> Option<(u64, &Entry)> {
        if self.index.is_empty() {
            return None;
        }
        let seq = *self.index.get(&self.hasher.hash_one(token))?;
        let e = self
            .queue
            .get(usize::try_from(seq.checked_sub(self.front)?).ok()?)?
            .as_ref()?;
        // The whole token, not its hash, decides a hit.
        (*e.token == *token).then_some((seq, e))
    }

    /// The cached claims of exactly `token`, if `verifier` verified it before.
    pub(crate) fn get<'c>(&'c mut self, verifier: &Arc<Verifier>, token: &[u8]) -> Option<Hit<'c>> {
        self.own(verifier);
        let (_, e) = self.find(token)?;
        let payload_b64 = e
            .token
            .get(e.payload.0..e.payload.1)
            .and_then(|p| std::str::from_utf8(p).ok())?;
        Some(Hit {
            claims: Claims::cached(
                &e.sub,
                e.exp,
                e.nbf,
                e.iat,
                e.jti.as_deref(),
                e.iss.as_deref(),
                e.kid.as_deref(),
                e.alg,
                payload_b64,
                &e.scopes,
                e.key_fingerprint,
            ),
            nbf: e.nbf,
            iat: e.iat,
        })
    }

    /// Remembers that `verifier` accepted `token` with `claims` (`claims.payload_b64` is a
    /// part of `token`). A token too large for the byte bound is not kept.
    pub(crate) fn insert(&mut self, verifier: &Arc<Verifier>, token: &[u8], claims: &Claims<'_>) {
        self.own(verifier);
        let payload = {
            let base = token.as_ptr() as usize;
            let p = claims.payload_b64.as_ptr() as usize;
            match p.checked_sub(base) {
                Some(start) if start + claims.payload_b64.len() <= token.len() => {
                    (start, start + claims.payload_b64.len())
                }
                _ => return,
            }
        };
        let entry = Entry {
            hash: self.hasher.hash_one(token),
            token: token.into(),
            sub: claims.sub.as_ref().into(),
            jti: claims.jti.as_deref().map(Into::into),
            iss: claims.iss.as_deref().map(Into::into),
            kid: claims.kid.map(Into::into),
            scopes: claims.scope_text().into(),
            payload,
            alg: claims.alg,
            exp: claims.exp,
            nbf: claims.nbf,
            iat: claims.iat,
            key_fingerprint: claims.key_fingerprint(),
        };
        let cost = entry.cost();
        if cost > self.max_bytes {
            return;
        }
        // A token cached already, or a hash twin: the newer takes its place.
        if let Some(seq) = self.index.get(&entry.hash).copied() {
            self.evict(seq);
        }
        // Oldest first (holes included), until both bounds leave room.
        while self.queue.len() >= self.max_entries || self.bytes + cost > self.max_bytes {
            let front = self.front;
            if self.queue.front().is_none() {
                break; // empty: bytes is 0 and the cost fits (checked above)
            }
            // Takes the front entry out; the hole it leaves is popped with it.
            self.evict(front);
        }
        let seq = self.front + self.queue.len() as u64;
        self.index.insert(entry.hash, seq);
        self.bytes += cost;
        self.queue.push_back(Some(entry));
    }

    /// Takes out the entry with sequence number `seq` (leaving a hole).
    fn evict(&mut self, seq: u64) {
        let Some(i) = seq
            .checked_sub(self.front)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return;
        };
        if let Some(e) = self.queue.get_mut(i).and_then(Option::take) {
            self.bytes -= e.cost();
            if self.index.get(&e.hash) == Some(&seq) {
                self.index.remove(&e.hash);
            }
        }
        // Holes at the front go at once.
        while self.queue.front().is_some_and(Option::is_none) {
            self.queue.pop_front();
            self.front += 1;
        }
    }

    /// Drops the entry of `token`, if any (its time checks failed: it will not pass
    /// again, so it gives its room back).
    pub(crate) fn remove(&mut self, token: &[u8]) {
        if let Some((seq, _)) = self.find(token) {
            self.evict(seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::{Key, KeySet};
    use crate::auth::verify::{Rules, Scratch};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use ring::hmac;

    const NOW: u64 = 1_000_000;
    const SECRET: [u8; 32] = [0x11; 32];

    fn verifier() -> Arc<Verifier> {
        Arc::new(Verifier {
            keys: KeySet::new(vec![
                Key::hmac(Some("hs".into()), Alg::HS256, &SECRET).expect("hmac")
            ])
            .expect("keyset"),
            rules: Rules {
                issuer: None,
                audience: None,
                leeway_secs: 0,
                max_token_bytes: 4096,
                max_lifetime_secs: u64::MAX,
            },
        })
    }

    fn token(jti: usize, exp: u64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","kid":"hs"}"#);
        let claims = format!(r#"{{"sub":"s","jti":"{jti}","exp":{exp},"scope":"a b"}}"#);
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &SECRET),
            input.as_bytes(),
        );
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    fn scratch(entries: usize, bytes: usize) -> Scratch {
        let mut s = Scratch::new(4096);
        s.set_cache(TokenCache::with_bounds(entries, bytes));
        s
    }

    #[test]
    fn a_hit_gives_the_same_claims_as_the_verification() {
        let v = verifier();
        let mut s = scratch(8, MAX_BYTES);
        let t = token(1, NOW + 10);
        let first = format!("{:?}", v.verify(t.as_bytes(), NOW, &mut Scratch::new(4096)));
        let miss = format!(
            "{:?}",
            Verifier::verify_cached(&v, t.as_bytes(), NOW, &mut s)
        );
        assert_eq!(s.cache().len(), 1);
        let hit = format!(
            "{:?}",
            Verifier::verify_cached(&v, t.as_bytes(), NOW, &mut s)
        );
        assert_eq!(first, miss);
        assert_eq!(first, hit);
        assert!(
            hit.contains("jti: Some(\"1\")") && hit.contains("a b"),
            "{hit}"
        );
    }

    #[test]
    fn entries_and_bytes_stay_within_their_bounds_oldest_leaving_first() {
        let v = verifier();
        let mut s = scratch(3, MAX_BYTES);
        let tokens: Vec<String> = (0..5).map(|i| token(i, NOW + 10)).collect();
        for t in &tokens {
            Verifier::verify_cached(&v, t.as_bytes(), NOW, &mut s).expect("valid");
            assert!(s.cache().len() <= 3);
        }
        assert_eq!(s.cache().len(), 3);
        let held = |s: &mut Scratch, t: &str| s.cache().find(t.as_bytes()).is_some();
        assert!(!held(&mut s, &tokens[0]) && !held(&mut s, &tokens[1]));
        assert!(tokens[2..].iter().all(|t| held(&mut s, t)));
        // A byte bound that holds two entries holds two.
        let one = {
            let mut probe = scratch(8, MAX_BYTES);
            Verifier::verify_cached(&v, tokens[0].as_bytes(), NOW, &mut probe).expect("valid");
            probe.cache().bytes()
        };
        let mut s = scratch(100, one * 2 + one / 2);
        for t in &tokens {
            Verifier::verify_cached(&v, t.as_bytes(), NOW, &mut s).expect("valid");
            assert!(s.cache().bytes() <= one * 2 + one / 2);
        }
        assert_eq!(s.cache().len(), 2);
        // An entry larger than the whole bound is not kept (and still verifies).
        let mut tiny = scratch(100, 10);
        Verifier::verify_cached(&v, tokens[0].as_bytes(), NOW, &mut tiny).expect("valid");
        assert!(tiny.cache().is_empty());
    }

    #[test]
    fn removed_entries_leave_holes_that_count_until_they_go() {
        let v = verifier();
        let mut s = scratch(2, MAX_BYTES);
        let a = token(1, NOW + 5);
        let b = token(2, NOW + 100);
        let c = token(3, NOW + 100);
        Verifier::verify_cached(&v, a.as_bytes(), NOW, &mut s).expect("valid");
        Verifier::verify_cached(&v, b.as_bytes(), NOW, &mut s).expect("valid");
        // `a` expires: refused from the cache, and removed.
        assert!(Verifier::verify_cached(&v, a.as_bytes(), NOW + 6, &mut s).is_err());
        assert_eq!(s.cache().len(), 1);
        Verifier::verify_cached(&v, c.as_bytes(), NOW, &mut s).expect("valid");
        assert_eq!(s.cache().len(), 2);
        assert!(s.cache().queue.len() <= 2);
        let total: usize = s.cache().queue.iter().flatten().map(Entry::cost).sum();
        assert_eq!(total, s.cache().bytes());
    }

    #[test]
    fn another_verifier_empties_the_cache() {
        let v1 = verifier();
        let v2 = verifier();
        let mut s = scratch(8, MAX_BYTES);
        let t = token(1, NOW + 10);
        Verifier::verify_cached(&v1, t.as_bytes(), NOW, &mut s).expect("valid");
        assert_eq!(s.cache().len(), 1);
        Verifier::verify_cached(&v2, t.as_bytes(), NOW, &mut s).expect("valid");
        assert_eq!(
            s.cache().len(),
            1,
            "emptied, then filled by v2's verification"
        );
        assert!(s.cache().owner.as_ptr() == Arc::as_ptr(&v2));
    }
}
