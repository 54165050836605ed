//! The refresh-token store (SPEC §11): families of opaque refresh tokens in `redb`, an
//! embedded ACID key-value store (copy-on-write B-trees, a checksummed commit, `fsync` on
//! every commit by default), so that a crash loses no committed rotation and never leaves
//! half of one.
//!
//! Layout (three tables in one file):
//! - `tokens`: SHA-256 of a refresh token (32 bytes) → family id (16 bytes), state (1 byte:
//!   0 live, 1 spent), the family's absolute expiry (8 bytes, big-endian unix seconds).
//!   Tokens are 256 random bits, so a plain hash is enough: the store never holds one.
//! - `families`: family id → JSON `{"sub","created","expires","revoked","access":[[jti,exp]..]}`:
//!   the access tokens issued from it that have not expired yet, so that a family's
//!   revocation revokes them too.
//! - `pending`: `sub` → unix seconds: subject revocations recorded by `wsgate user remove`
//!   while the gateway was not running, applied at its next start.
//!
//! Every operation is one write transaction, committed before its caller answers: a
//! rotation marks the presented token spent, adds the new one and records the new access
//! token in one commit, or does nothing at all (the answer is then 503 and the presented
//! token stays live). After an I/O error the database is closed and opened again (with
//! redb's repair) by the next operation. Expired families and tokens are swept (at start
//! and periodically); the file is compacted at start.
//!
//! Blocking: every method does disk I/O; call them on the blocking pool.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use redb::{Database, ReadableTable as _, ReadableTableMetadata as _, TableDefinition};
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};

const TOKENS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tokens");
const FAMILIES: TableDefinition<&[u8], &str> = TableDefinition::new("families");
const PENDING: TableDefinition<&str, u64> = TableDefinition::new("pending");

/// Most unexpired access tokens one family may have issued; a rotation past it is
/// refused (429) until the oldest expires. Rotating hundreds of times within one
/// `access_ttl` is a broken or hostile client, and the list must stay bounded.
pub const MAX_LIVE_ACCESS: usize = 256;

/// Bytes of randomness in a refresh token (SPEC §11: 256 bits).
pub const REFRESH_TOKEN_BYTES: usize = 32;

/// Length of a refresh token as text (unpadded base64url of 32 bytes).
pub const REFRESH_TOKEN_CHARS: usize = 43;

const LIVE: u8 = 0;
const SPENT: u8 = 1;

/// The store could not be read or written; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn fail(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// An access token that an operation issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The compact JWS.
    pub access_token: String,
    /// Its `jti`.
    pub jti: String,
    /// Its `exp`.
    pub exp: u64,
}

/// What a login or a rotation hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTokens {
    /// The access token.
    pub issued: Issued,
    /// The new refresh token (shown once, stored hashed).
    pub refresh_token: String,
}

/// A family that was revoked: whose, and its access tokens still unexpired `(jti, exp)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Revoked {
    /// The family's subject.
    pub sub: String,
    /// Its unexpired access tokens.
    pub access: Vec<(String, u64)>,
}

/// The outcome of presenting a refresh token to `POST /token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// Spent the presented token; here are the new ones.
    Rotated(NewTokens),
    /// Unknown, expired, or of a revoked family (`invalid_grant`).
    Invalid,
    /// A spent token presented again: its family is revoked now (`invalid_grant`).
    Reused(Revoked),
    /// The family's user no longer exists: its family is revoked now (`invalid_grant`).
    UserGone(Revoked),
    /// The family has [`MAX_LIVE_ACCESS`] unexpired access tokens; retry after so many
    /// seconds. Nothing changed.
    Crowded(u64),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Family {
    sub: String,
    created: u64,
    expires: u64,
    revoked: bool,
    access: Vec<(String, u64)>,
}

impl Family {
    fn live_access(&self, now: u64) -> Vec<(String, u64)> {
        self.access
            .iter()
            .filter(|(_, exp)| *exp > now)
            .cloned()
            .collect()
    }
}

struct TokenRecord {
    family: [u8; 16],
    state: u8,
    expires: u64,
}

impl TokenRecord {
    fn encode(&self) -> [u8; 25] {
        let mut out = [0u8; 25];
        out[..16].copy_from_slice(&self.family);
        out[16] = self.state;
        out[17..].copy_from_slice(&self.expires.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<TokenRecord> {
        let family: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
        let state = *bytes.get(16)?;
        let expires = u64::from_be_bytes(bytes.get(17..25)?.try_into().ok()?);
        Some(TokenRecord {
            family,
            state,
            expires,
        })
    }
}

/// SHA-256 of a refresh token's text: the key it is stored under.
fn token_key(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// Whether `token` has the shape of a refresh token this store issues.
fn well_formed(token: &str) -> bool {
    token.len() == REFRESH_TOKEN_CHARS
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn random<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError("no randomness from the operating system".into()))?;
    Ok(bytes)
}

type Opener = Box<dyn Fn() -> Result<Database, redb::DatabaseError> + Send + Sync>;

/// The refresh-token store (module docs).
pub struct Store {
    path: PathBuf,
    db: Mutex<Option<Database>>,
    opener: Opener,
}

impl Store {
    /// Opens (creating when missing) the store at `path`, sweeps what expired and compacts
    /// the file. The error names the file.
    pub fn open(path: &Path, now: u64) -> Result<Store, String> {
        let owned = path.to_path_buf();
        Store::with_opener(path, now, Box::new(move || Database::create(&owned)))
    }

    fn with_opener(path: &Path, now: u64, opener: Opener) -> Result<Store, String> {
        let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let mut db = opener().map_err(|e| at(&e))?;
        let store = {
            // Creates the tables, so that reads never meet a missing one.
            let txn = db.begin_write().map_err(|e| at(&e))?;
            txn.open_table(TOKENS).map_err(|e| at(&e))?;
            txn.open_table(FAMILIES).map_err(|e| at(&e))?;
            txn.open_table(PENDING).map_err(|e| at(&e))?;
            txn.commit().map_err(|e| at(&e))?;
            db.compact().map_err(|e| at(&e))?;
            Store {
                path: path.to_path_buf(),
                db: Mutex::new(Some(db)),
                opener,
            }
        };
        store.sweep(now).map_err(|e| at(&e))?;
        Ok(store)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Option<Database>> {
        self.db
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `op` in one write transaction, committing when it returns `Ok((value, true))`
    /// and aborting on `Ok((value, false))`. After a storage error the database is closed,
    /// to be opened again (repaired) by the next call.
    fn write<T>(
        &self,
        op: impl FnOnce(&redb::WriteTransaction) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.lock();
        if guard.is_none() {
            *guard = Some((self.opener)().map_err(fail)?);
        }
        let Some(db) = guard.as_ref() else {
            return Err(StoreError("store closed".into()));
        };
        let result = (|| {
            let txn = db.begin_write().map_err(fail)?;
            let (value, commit) = op(&txn)?;
            if commit {
                txn.commit().map_err(fail)?;
            } else {
                txn.abort().map_err(fail)?;
            }
            Ok(value)
        })();
        if result.is_err() {
            // Whatever failed may have left redb refusing every later call
            // (`PreviousIo`): start afresh next time.
            *guard = None;
        }
        result
    }

    /// A login: a new family for `sub`, living `refresh_ttl` seconds from `now`, with its
    /// first refresh token and the access token `issue` makes. Committed before it returns.
    pub fn login(
        &self,
        sub: &str,
        now: u64,
        refresh_ttl: u64,
        issue: impl FnOnce() -> Result<Issued, StoreError>,
    ) -> Result<NewTokens, StoreError> {
        let family_id = random::<16>()?;
        let refresh = URL_SAFE_NO_PAD.encode(random::<REFRESH_TOKEN_BYTES>()?);
        let issued = issue()?;
        let expires = now.saturating_add(refresh_ttl);
        let family = Family {
            sub: sub.to_owned(),
            created: now,
            expires,
            revoked: false,
            access: vec![(issued.jti.clone(), issued.exp)],
        };
        let json = serde_json::to_string(&family).map_err(fail)?;
        self.write(|txn| {
            txn.open_table(FAMILIES)
                .map_err(fail)?
                .insert(family_id.as_slice(), json.as_str())
                .map_err(fail)?;
            let record = TokenRecord {
                family: family_id,
                state: LIVE,
                expires,
            };
            txn.open_table(TOKENS)
                .map_err(fail)?
                .insert(token_key(&refresh).as_slice(), record.encode().as_slice())
                .map_err(fail)?;
            Ok(((), true))
        })?;
        Ok(NewTokens {
            issued,
            refresh_token: refresh,
        })
    }

    /// `POST /token`: spends `presented` and issues new tokens (from `issue`, given the
    /// family's `sub`; `None` when that user no longer exists), or says why not.
    pub fn rotate(
        &self,
        presented: &str,
        now: u64,
        issue: impl FnOnce(&str) -> Option<Result<Issued, StoreError>>,
    ) -> Result<Rotation, StoreError> {
        if !well_formed(presented) {
            return Ok(Rotation::Invalid);
        }
        let key = token_key(presented);
        let next = URL_SAFE_NO_PAD.encode(random::<REFRESH_TOKEN_BYTES>()?);
        self.write(|txn| {
            let mut tokens = txn.open_table(TOKENS).map_err(fail)?;
            let mut families = txn.open_table(FAMILIES).map_err(fail)?;
            let record = match tokens.get(key.as_slice()).map_err(fail)? {
                Some(value) => TokenRecord::decode(value.value()),
                None => None,
            };
            let Some(record) = record else {
                return Ok((Rotation::Invalid, false));
            };
            let family = match families.get(record.family.as_slice()).map_err(fail)? {
                Some(json) => serde_json::from_str::<Family>(json.value()).ok(),
                None => None,
            };
            let Some(mut family) = family else {
                return Ok((Rotation::Invalid, false));
            };
            if family.revoked || family.expires <= now {
                return Ok((Rotation::Invalid, false));
            }
            let revoke = |family: &mut Family| -> Result<Revoked, StoreError> {
                family.revoked = true;
                let revoked = Revoked {
                    sub: family.sub.clone(),
                    access: family.live_access(now),
                };
                Ok(revoked)
            };
            if record.state != LIVE {
                // RFC 9700 §4.14.2: reuse of a rotated refresh token revokes the family.
                let revoked = revoke(&mut family)?;
                let json = serde_json::to_string(&family).map_err(fail)?;
                families
                    .insert(record.family.as_slice(), json.as_str())
                    .map_err(fail)?;
                return Ok((Rotation::Reused(revoked), true));
            }
            let issued = match issue(&family.sub) {
                None => {
                    let revoked = revoke(&mut family)?;
                    let json = serde_json::to_string(&family).map_err(fail)?;
                    families
                        .insert(record.family.as_slice(), json.as_str())
                        .map_err(fail)?;
                    return Ok((Rotation::UserGone(revoked), true));
                }
                Some(issued) => issued?,
            };
            family.access = family.live_access(now);
            if family.access.len() >= MAX_LIVE_ACCESS {
                let first_expiry = family
                    .access
                    .iter()
                    .map(|(_, exp)| *exp)
                    .min()
                    .unwrap_or(now);
                return Ok((
                    Rotation::Crowded(first_expiry.saturating_sub(now).max(1)),
                    false,
                ));
            }
            family.access.push((issued.jti.clone(), issued.exp));
            let json = serde_json::to_string(&family).map_err(fail)?;
            families
                .insert(record.family.as_slice(), json.as_str())
                .map_err(fail)?;
            let spent = TokenRecord {
                state: SPENT,
                ..record
            };
            tokens
                .insert(key.as_slice(), spent.encode().as_slice())
                .map_err(fail)?;
            let fresh = TokenRecord {
                state: LIVE,
                ..spent
            };
            tokens
                .insert(token_key(&next).as_slice(), fresh.encode().as_slice())
                .map_err(fail)?;
            Ok((
                Rotation::Rotated(NewTokens {
                    issued,
                    refresh_token: next.clone(),
                }),
                true,
            ))
        })
    }

    /// `POST /logout`: revokes the family of `presented` (spent or live). `None` when the
    /// token is unknown, expired or its family already revoked.
    pub fn logout(&self, presented: &str, now: u64) -> Result<Option<Revoked>, StoreError> {
        if !well_formed(presented) {
            return Ok(None);
        }
        let key = token_key(presented);
        self.write(|txn| {
            let tokens = txn.open_table(TOKENS).map_err(fail)?;
            let mut families = txn.open_table(FAMILIES).map_err(fail)?;
            let record = match tokens.get(key.as_slice()).map_err(fail)? {
                Some(value) => TokenRecord::decode(value.value()),
                None => None,
            };
            let Some(record) = record else {
                return Ok((None, false));
            };
            let family = match families.get(record.family.as_slice()).map_err(fail)? {
                Some(json) => serde_json::from_str::<Family>(json.value()).ok(),
                None => None,
            };
            let Some(mut family) = family.filter(|f| !f.revoked && f.expires > now) else {
                return Ok((None, false));
            };
            family.revoked = true;
            let json = serde_json::to_string(&family).map_err(fail)?;
            families
                .insert(record.family.as_slice(), json.as_str())
                .map_err(fail)?;
            Ok((
                Some(Revoked {
                    sub: family.sub.clone(),
                    access: family.live_access(now),
                }),
                true,
            ))
        })
    }

    /// Revokes every live family of `sub` (a removed user, a subject revocation); returns
    /// their unexpired access tokens.
    pub fn revoke_subject(&self, sub: &str, now: u64) -> Result<Revoked, StoreError> {
        self.write(|txn| {
            let mut families = txn.open_table(FAMILIES).map_err(fail)?;
            let mut hit = Vec::new();
            for entry in families.iter().map_err(fail)? {
                let (id, json) = entry.map_err(fail)?;
                if let Ok(family) = serde_json::from_str::<Family>(json.value()) {
                    if family.sub == sub && !family.revoked && family.expires > now {
                        hit.push((id.value().to_vec(), family));
                    }
                }
            }
            let mut revoked = Revoked {
                sub: sub.to_owned(),
                access: Vec::new(),
            };
            for (id, mut family) in hit {
                family.revoked = true;
                revoked.access.extend(family.live_access(now));
                let json = serde_json::to_string(&family).map_err(fail)?;
                families
                    .insert(id.as_slice(), json.as_str())
                    .map_err(fail)?;
            }
            Ok((revoked, true))
        })
    }

    /// Records a subject revocation to apply at the next start (`wsgate user remove` while
    /// the gateway is not running).
    pub fn add_pending(&self, sub: &str, before: u64) -> Result<(), StoreError> {
        self.write(|txn| {
            txn.open_table(PENDING)
                .map_err(fail)?
                .insert(sub, before)
                .map_err(fail)?;
            Ok(((), true))
        })
    }

    /// Takes the pending subject revocations (they are gone once this returns).
    pub fn take_pending(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.write(|txn| {
            let mut pending = txn.open_table(PENDING).map_err(fail)?;
            let mut all = Vec::new();
            for entry in pending.iter().map_err(fail)? {
                let (sub, before) = entry.map_err(fail)?;
                all.push((sub.value().to_owned(), before.value()));
            }
            pending.retain(|_, _| false).map_err(fail)?;
            Ok((all, true))
        })
    }

    /// Deletes families and tokens whose absolute expiry has passed; returns how many
    /// families went.
    pub fn sweep(&self, now: u64) -> Result<usize, StoreError> {
        self.write(|txn| {
            let mut families = txn.open_table(FAMILIES).map_err(fail)?;
            let before = families.len().map_err(fail)?;
            families
                .retain(|_, json| {
                    serde_json::from_str::<Family>(json).is_ok_and(|f| f.expires > now)
                })
                .map_err(fail)?;
            let swept = before.saturating_sub(families.len().map_err(fail)?);
            txn.open_table(TOKENS)
                .map_err(fail)?
                .retain(|_, value| TokenRecord::decode(value).is_some_and(|r| r.expires > now))
                .map_err(fail)?;
            Ok((usize::try_from(swept).unwrap_or(usize::MAX), true))
        })
    }

    /// How many families and tokens are stored (for tests and metrics).
    pub fn counts(&self) -> Result<(u64, u64), StoreError> {
        self.write(|txn| {
            let families = txn
                .open_table(FAMILIES)
                .map_err(fail)?
                .len()
                .map_err(fail)?;
            let tokens = txn.open_table(TOKENS).map_err(fail)?.len().map_err(fail)?;
            Ok(((families, tokens), false))
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A file backend whose writes and syncs fail while `fail` is set (a full or broken
    /// disk).
    #[derive(Debug)]
    pub(crate) struct Faulty {
        inner: redb::backends::FileBackend,
        fail: Arc<AtomicBool>,
    }

    impl redb::StorageBackend for Faulty {
        fn len(&self) -> std::io::Result<u64> {
            self.inner.len()
        }
        fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
            self.inner.read(offset, len)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.check()?;
            self.inner.set_len(len)
        }
        fn sync_data(&self, eventual: bool) -> std::io::Result<()> {
            self.check()?;
            self.inner.sync_data(eventual)
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.check()?;
            self.inner.write(offset, data)
        }
    }

    impl Faulty {
        fn check(&self) -> std::io::Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("injected: no space left on device"));
            }
            Ok(())
        }
    }

    /// A store at `path` whose disk fails while the returned flag is set.
    pub(crate) fn faulty_store(path: &Path, now: u64) -> (Store, Arc<AtomicBool>) {
        let fail = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&fail);
        let owned = path.to_path_buf();
        let opener: Opener = Box::new(move || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&owned)?;
            let backend = Faulty {
                inner: redb::backends::FileBackend::new(file)?,
                fail: Arc::clone(&flag),
            };
            Database::builder().create_with_backend(backend)
        });
        (Store::with_opener(path, now, opener).unwrap(), fail)
    }

    pub(crate) fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wsgate-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("refresh.db")
    }

    fn issued(n: u32, exp: u64) -> Result<Issued, StoreError> {
        Ok(Issued {
            access_token: format!("at-{n}"),
            jti: format!("j{n}"),
            exp,
        })
    }

    fn rotated(r: Rotation) -> NewTokens {
        match r {
            Rotation::Rotated(t) => t,
            other => panic!("not rotated: {other:?}"),
        }
    }

    #[test]
    fn login_rotate_reuse_revokes_the_family_and_names_its_live_access_tokens() {
        let path = temp_path("reuse");
        let store = Store::open(&path, 1000).unwrap();
        let first = store
            .login("alice", 1000, 3600, || issued(1, 1300))
            .unwrap();
        assert_eq!(first.refresh_token.len(), REFRESH_TOKEN_CHARS);
        let second = rotated(
            store
                .rotate(&first.refresh_token, 1010, |sub| {
                    assert_eq!(sub, "alice");
                    Some(issued(2, 1310))
                })
                .unwrap(),
        );
        assert_ne!(second.refresh_token, first.refresh_token);
        let third = rotated(
            store
                .rotate(&second.refresh_token, 1020, |_| Some(issued(3, 1320)))
                .unwrap(),
        );
        // The spent first token again: the family is revoked, with every live access token.
        let reuse = store
            .rotate(&first.refresh_token, 1030, |_| panic!("no issue on reuse"))
            .unwrap();
        assert_eq!(
            reuse,
            Rotation::Reused(Revoked {
                sub: "alice".into(),
                access: vec![
                    ("j1".into(), 1300),
                    ("j2".into(), 1310),
                    ("j3".into(), 1320)
                ],
            })
        );
        // The newest token of the family is dead too, and the reuse is reported once.
        assert_eq!(
            store
                .rotate(&third.refresh_token, 1040, |_| Some(issued(4, 1340)))
                .unwrap(),
            Rotation::Invalid
        );
        assert_eq!(
            store.rotate(&first.refresh_token, 1040, |_| None).unwrap(),
            Rotation::Invalid
        );
        // The plaintext token is nowhere in the file.
        drop(store);
        let bytes = std::fs::read(&path).unwrap();
        for token in [
            &first.refresh_token,
            &second.refresh_token,
            &third.refresh_token,
        ] {
            assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()));
        }
    }

    #[test]
    fn refresh_ttl_is_absolute_from_the_login_and_unknown_tokens_are_invalid() {
        let store = Store::open(&temp_path("ttl"), 0).unwrap();
        let t = store.login("bob", 100, 50, || issued(1, 110)).unwrap();
        let t = rotated(
            store
                .rotate(&t.refresh_token, 140, |_| Some(issued(2, 150)))
                .unwrap(),
        );
        // Rotation at 140 did not extend the family past 150.
        assert_eq!(
            store
                .rotate(&t.refresh_token, 150, |_| Some(issued(3, 160)))
                .unwrap(),
            Rotation::Invalid
        );
        for bad in [
            "",
            "short",
            &"A".repeat(43),
            &"é".repeat(21),
            &"A".repeat(44),
        ] {
            assert_eq!(
                store.rotate(bad, 100, |_| Some(issued(9, 1))).unwrap(),
                Rotation::Invalid
            );
            assert_eq!(store.logout(bad, 100).unwrap(), None);
        }
        // Sweeping after the expiry deletes the family and its tokens.
        assert_eq!(store.counts().unwrap(), (1, 2));
        assert_eq!(store.sweep(151).unwrap(), 1);
        assert_eq!(store.counts().unwrap(), (0, 0));
    }

    #[test]
    fn logout_revokes_one_family_only_and_subject_revocation_all() {
        let store = Store::open(&temp_path("logout"), 0).unwrap();
        let phone = store.login("carol", 10, 1000, || issued(1, 100)).unwrap();
        let laptop = store.login("carol", 10, 1000, || issued(2, 100)).unwrap();
        let other = store.login("dave", 10, 1000, || issued(3, 100)).unwrap();
        assert_eq!(
            store.logout(&phone.refresh_token, 20).unwrap(),
            Some(Revoked {
                sub: "carol".into(),
                access: vec![("j1".into(), 100)]
            })
        );
        // Again: already revoked, nothing to say (the HTTP answer is 200 either way).
        assert_eq!(store.logout(&phone.refresh_token, 20).unwrap(), None);
        let laptop = rotated(
            store
                .rotate(&laptop.refresh_token, 30, |_| Some(issued(4, 130)))
                .unwrap(),
        );
        let all = store.revoke_subject("carol", 40).unwrap();
        assert_eq!(all.access, vec![("j2".into(), 100), ("j4".into(), 130)]);
        assert_eq!(
            store
                .rotate(&laptop.refresh_token, 50, |_| Some(issued(5, 150)))
                .unwrap(),
            Rotation::Invalid
        );
        rotated(
            store
                .rotate(&other.refresh_token, 50, |_| Some(issued(6, 150)))
                .unwrap(),
        );
        // Expired access tokens are not reported.
        let gone = store.login("erin", 10, 1000, || issued(7, 60)).unwrap();
        assert_eq!(
            store
                .logout(&gone.refresh_token, 61)
                .unwrap()
                .unwrap()
                .access,
            Vec::new()
        );
    }

    #[test]
    fn a_user_gone_revokes_and_a_crowded_family_waits() {
        let store = Store::open(&temp_path("gone"), 0).unwrap();
        let t = store
            .login("frank", 0, 100_000, || issued(0, 1000))
            .unwrap();
        let mut refresh = t.refresh_token;
        for n in 1..MAX_LIVE_ACCESS as u32 {
            refresh = rotated(
                store
                    .rotate(&refresh, 1, |_| Some(issued(n, 1000 + u64::from(n))))
                    .unwrap(),
            )
            .refresh_token;
        }
        assert_eq!(
            store
                .rotate(&refresh, 2, |_| Some(issued(999, 5000)))
                .unwrap(),
            Rotation::Crowded(998)
        );
        // Nothing changed: the same token rotates once the oldest access token expired.
        refresh = rotated(
            store
                .rotate(&refresh, 1000, |_| Some(issued(1000, 5000)))
                .unwrap(),
        )
        .refresh_token;
        match store.rotate(&refresh, 1001, |_| None).unwrap() {
            Rotation::UserGone(revoked) => assert_eq!(revoked.sub, "frank"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pending_subject_revocations_survive_a_restart_and_are_taken_once() {
        let path = temp_path("pending");
        let store = Store::open(&path, 0).unwrap();
        store.add_pending("gina", 77).unwrap();
        drop(store);
        let store = Store::open(&path, 0).unwrap();
        assert_eq!(store.take_pending().unwrap(), vec![("gina".to_owned(), 77)]);
        assert_eq!(store.take_pending().unwrap(), Vec::new());
    }

    #[test]
    fn a_failing_disk_changes_nothing_and_the_store_recovers() {
        let path = temp_path("faulty");
        let (store, fail) = faulty_store(&path, 0);
        let t = store.login("hana", 0, 1000, || issued(1, 100)).unwrap();
        fail.store(true, Ordering::SeqCst);
        assert!(store.login("hana", 0, 1000, || issued(2, 100)).is_err());
        assert!(store
            .rotate(&t.refresh_token, 1, |_| Some(issued(3, 100)))
            .is_err());
        fail.store(false, Ordering::SeqCst);
        // The presented token stayed live: it rotates now, and only one family exists.
        rotated(
            store
                .rotate(&t.refresh_token, 2, |_| Some(issued(4, 100)))
                .unwrap(),
        );
        assert_eq!(store.counts().unwrap(), (1, 2));
    }

    #[test]
    fn a_store_that_cannot_be_opened_is_an_error_naming_it() {
        let error = Store::open(Path::new("/nonexistent-dir/refresh.db"), 0)
            .err()
            .unwrap();
        assert!(error.contains("/nonexistent-dir/refresh.db"), "{error}");
        // A second open of a store in use is refused (redb locks the file).
        let path = temp_path("locked");
        let _first = Store::open(&path, 0).unwrap();
        let error = Store::open(&path, 0).err().unwrap();
        assert!(error.contains("refresh.db"), "{error}");
    }

    #[test]
    fn concurrent_reuse_of_one_token_lets_exactly_one_rotation_win() {
        let store = Arc::new(Store::open(&temp_path("race"), 0).unwrap());
        let t = store.login("ivan", 0, 1000, || issued(0, 100)).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|n| {
                let store = Arc::clone(&store);
                let token = t.refresh_token.clone();
                std::thread::spawn(move || {
                    store
                        .rotate(&token, 1, |_| Some(issued(n + 1, 100)))
                        .unwrap()
                })
            })
            .collect();
        let outcomes: Vec<Rotation> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let wins = outcomes
            .iter()
            .filter(|o| matches!(o, Rotation::Rotated(_)))
            .count();
        let reuses = outcomes
            .iter()
            .filter(|o| matches!(o, Rotation::Reused(_)))
            .count();
        assert_eq!((wins, reuses), (1, 1), "{outcomes:?}");
        // The winner's new token died with the family.
        let Some(Rotation::Rotated(winner)) = outcomes
            .into_iter()
            .find(|o| matches!(o, Rotation::Rotated(_)))
        else {
            unreachable!()
        };
        assert_eq!(
            store
                .rotate(&winner.refresh_token, 2, |_| Some(issued(99, 100)))
                .unwrap(),
            Rotation::Invalid
        );
    }
}
