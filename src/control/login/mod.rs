//! The token service (SPEC §11): log a user in with a name and password, issue access
//! tokens the gateway's own routes accept, rotate refresh tokens, log out, and publish the
//! key. It lives on the control plane's tokio runtime (ARCHITECTURE.md, "Two planes"): its
//! listener ([`http`]) is hyper on that runtime, password hashing runs on the blocking pool
//! behind a semaphore ([`password`]), and the store's disk I/O runs on the blocking pool
//! too ([`store`]). Nothing here runs on a worker's event loop.
//!
//! Pieces: [`users`] (the users file), [`password`] (Argon2id and its bounded pool),
//! [`budget`] (failed logins per user and per address), [`store`] (refresh-token
//! families), [`issue`] (access tokens, JWK Set, discovery), [`http`] (the endpoints).
//!
//! Revocations that the service decides (a reused refresh token, a logout, a removed
//! user) go out through [`Revoke`], the same path as the admin listener's `POST /revoke`:
//! matching handshakes are refused and live connections close with 4403.

pub mod budget;
pub mod cors;
pub mod http;
pub mod issue;
pub mod password;
pub mod store;
pub mod users;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use self::budget::Budget;
use self::issue::Issuer;
use self::password::{Busy, Passwords, MAX_PASSWORD_BYTES};
use self::store::{NewTokens, Revoked, Rotation, Store, StoreError};
use self::users::Directory;
use crate::auth::revocation::Revocation;
use crate::clock;
use crate::config::Config;
use crate::{info, warn};

/// Where revocations decided by the service go: the gateway's revocation path (revocation
/// set, log, live connections). Called on the blocking pool.
pub trait Revoke: Send + Sync + 'static {
    /// Enforces `revocations`.
    fn revoke(&self, revocations: Vec<Revocation>);
}

/// Password checks running at once: one per core, at least 2.
fn hash_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
}

/// Password checks queued behind the running ones before a login is answered 503.
pub const MAX_QUEUED_CHECKS: usize = 64;

/// Most keys each failure-budget table tracks.
pub const MAX_BUDGET_KEYS: usize = 65_536;

/// Counters by outcome, for `/metrics`. Label values are fixed words.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Logins: issued.
    pub login_ok: AtomicU64,
    /// Logins: wrong name or password.
    pub login_failed: AtomicU64,
    /// Logins: over the failure budget (429).
    pub login_limited: AtomicU64,
    /// Logins: refused because the hashing pool or the store was unavailable (503).
    pub login_unavailable: AtomicU64,
    /// Logins: malformed requests.
    pub login_malformed: AtomicU64,
    /// Refreshes: rotated.
    pub refresh_ok: AtomicU64,
    /// Refreshes: `invalid_grant` (unknown, expired, revoked, user gone).
    pub refresh_invalid: AtomicU64,
    /// Refreshes: a spent token presented again (family revoked).
    pub refresh_reused: AtomicU64,
    /// Refreshes: store unavailable or family crowded.
    pub refresh_unavailable: AtomicU64,
    /// Logouts that revoked a family.
    pub logout_revoked: AtomicU64,
}

impl Metrics {
    /// Prometheus text lines.
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::from(
            "# HELP wsgate_login_total Login attempts by outcome.\n# TYPE wsgate_login_total counter\n",
        );
        for (outcome, counter) in [
            ("ok", &self.login_ok),
            ("failed", &self.login_failed),
            ("limited", &self.login_limited),
            ("unavailable", &self.login_unavailable),
            ("malformed", &self.login_malformed),
        ] {
            out.push_str(&format!(
                "wsgate_login_total{{outcome=\"{outcome}\"}} {}\n",
                get(counter)
            ));
        }
        out.push_str("# HELP wsgate_login_refresh_total Refresh-token presentations by outcome.\n# TYPE wsgate_login_refresh_total counter\n");
        for (outcome, counter) in [
            ("ok", &self.refresh_ok),
            ("invalid", &self.refresh_invalid),
            ("reused", &self.refresh_reused),
            ("unavailable", &self.refresh_unavailable),
        ] {
            out.push_str(&format!(
                "wsgate_login_refresh_total{{outcome=\"{outcome}\"}} {}\n",
                get(counter)
            ));
        }
        out.push_str(&format!(
            "# HELP wsgate_login_logout_total Logouts that revoked a family.\n# TYPE wsgate_login_logout_total counter\nwsgate_login_logout_total {}\n",
            get(&self.logout_revoked)
        ));
        out
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What identifies a version of the users file: modification time, length and inode
/// (`wsgate user` replaces the file by a rename, which a new inode shows even when the
/// time and length happen to match).
type FileStamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &std::path::Path) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| {
        (
            m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            m.len(),
            m.ino(),
        )
    })
}

/// An answer of the service, before HTTP rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
    /// `Retry-After` seconds, when set.
    pub retry_after: Option<u64>,
}

impl Answer {
    fn json(status: u16, body: serde_json::Value) -> Answer {
        Answer {
            status,
            body: body.to_string(),
            retry_after: None,
        }
    }

    /// An OAuth error answer (RFC 6749 §5.2 shape).
    pub fn error(status: u16, error: &str, description: &str) -> Answer {
        Answer::json(
            status,
            serde_json::json!({"error": error, "error_description": description}),
        )
    }

    fn retry(mut self, seconds: u64) -> Answer {
        self.retry_after = Some(seconds.max(1));
        self
    }

    fn unavailable() -> Answer {
        Answer::error(503, "temporarily_unavailable", "try again shortly").retry(1)
    }

    fn tokens(tokens: &NewTokens, expires_in: u64) -> Answer {
        // RFC 6749 §5.1.
        Answer::json(
            200,
            serde_json::json!({
                "access_token": tokens.issued.access_token,
                "token_type": "Bearer",
                "expires_in": expires_in,
                "refresh_token": tokens.refresh_token,
            }),
        )
    }
}

/// The running token service.
pub struct Service {
    issuer: Issuer,
    users_path: PathBuf,
    users: RwLock<Arc<Directory>>,
    users_seen: Mutex<FileStamp>,
    passwords: Passwords,
    store: Arc<Store>,
    budget: Mutex<Budget>,
    revoker: Arc<dyn Revoke>,
    refresh_ttl: u64,
    /// Counters by outcome.
    pub metrics: Metrics,
}

impl Service {
    /// Starts the service of `config.login` (None without `[login]`): reads the users
    /// file, opens the store (an error names it), applies the subject revocations that
    /// `user remove` recorded while the gateway was down. Blocking: call it before the
    /// runtime serves, or on its blocking pool.
    pub fn start(
        config: &Config,
        revoker: Arc<dyn Revoke>,
    ) -> Result<Option<Arc<Service>>, String> {
        let Some(login) = &config.login else {
            return Ok(None);
        };
        let store = Store::open(&login.store, clock::unix_now())
            .map_err(|e| format!("login.store: cannot open the refresh-token store: {e}"))?;
        Service::new(config, revoker, store).map(Some)
    }

    /// The service of `config.login` over an opened `store` (blocking, as [`Service::start`]).
    pub fn new(
        config: &Config,
        revoker: Arc<dyn Revoke>,
        store: Store,
    ) -> Result<Arc<Service>, String> {
        let login = config
            .login
            .as_ref()
            .ok_or_else(|| "no [login] section".to_owned())?;
        let issuer = Issuer::new(login, config.auth.audience.clone())?;
        let users = read_directory(&login.users)?;
        let passwords =
            Passwords::new(hash_threads(), MAX_QUEUED_CHECKS).map_err(|e| format!("login: {e}"))?;
        let service = Service {
            issuer,
            users_path: login.users.clone(),
            users_seen: Mutex::new(stamp(&login.users)),
            users: RwLock::new(Arc::new(users)),
            passwords,
            store: Arc::new(store),
            budget: Mutex::new(Budget::new(
                login.failures,
                MAX_BUDGET_KEYS,
                config.limits.ipv6_prefix,
            )),
            revoker,
            refresh_ttl: login.refresh_ttl.as_secs(),
            metrics: Metrics::default(),
        };
        service.apply_pending()?;
        Ok(Arc::new(service))
    }

    /// The issuer (key, JWK Set, discovery).
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// Subject revocations recorded while the gateway was down: revoke their families and
    /// hand them to the revocation path.
    fn apply_pending(&self) -> Result<(), String> {
        let now = clock::unix_now();
        let pending = self
            .store
            .take_pending()
            .map_err(|e| format!("login.store: {}: {e}", self.store.path().display()))?;
        for (sub, before) in pending {
            let revoked = self
                .store
                .revoke_subject(&sub, now)
                .map_err(|e| format!("login.store: {}: {e}", self.store.path().display()))?;
            let mut all = revocations(&revoked);
            all.push(Revocation::Sub {
                sub: sub.clone(),
                before,
            });
            info!("login: user {sub:?} was removed while the gateway was down: its tokens are revoked");
            self.revoker.revoke(all);
        }
        Ok(())
    }

    /// Re-reads the users file (SIGHUP); on error the users stay as they were.
    pub fn reload_users(&self) -> Result<usize, String> {
        let fresh = read_directory(&self.users_path)?;
        let count = fresh.len();
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        *self.users_seen.lock().unwrap_or_else(|p| p.into_inner()) = stamp(&self.users_path);
        Ok(count)
    }

    /// Re-reads the users file when it changed since last seen, looked at on every login
    /// (one `stat` on the blocking pool, next to a password hash), so that `user add` and
    /// `user remove` take effect on the very next login.
    fn refresh_users_if_changed(&self) {
        {
            let seen = self.users_seen.lock().unwrap_or_else(|p| p.into_inner());
            if stamp(&self.users_path) == *seen {
                return;
            }
        }
        match self.reload_users() {
            Ok(count) => info!("login: users file changed: {count} users"),
            Err(e) => {
                warn!("login: users file changed but is refused ({e}); the previous users stay")
            }
        }
    }

    fn directory(&self) -> Arc<Directory> {
        Arc::clone(&self.users.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Revokes every family of `sub` (a subject revocation from the admin listener, or a
    /// removed user) and returns the access tokens to revoke with it. Blocking.
    pub fn revoke_subject(&self, sub: &str) -> Result<Vec<Revocation>, StoreError> {
        self.store
            .revoke_subject(sub, clock::unix_now())
            .map(|revoked| revocations(&revoked))
    }

    /// `POST /login` with its parsed body, from `peer`.
    pub async fn login(
        self: &Arc<Self>,
        peer: IpAddr,
        username: String,
        password: Vec<u8>,
    ) -> Answer {
        {
            let this = Arc::clone(self);
            let _ = tokio::task::spawn_blocking(move || this.refresh_users_if_changed()).await;
        }
        // A name that cannot exist is budgeted and looked up as "" (which no user has), so
        // that hostile names neither grow the budget table nor change the work done.
        let username = if users::check_name(&username).is_ok() {
            username
        } else {
            String::new()
        };
        let now = clock::now();
        let reservation = match self
            .budget
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reserve(&username, peer, now)
        {
            Ok(r) => r,
            Err(exhausted) => {
                bump(&self.metrics.login_limited);
                return Answer::error(
                    429,
                    "too_many_attempts",
                    "too many failed logins; retry later",
                )
                .retry(crate::rate::retry_after_secs(exhausted.retry_after));
            }
        };
        let entry = self.directory().get(&username).cloned();
        let stored = entry.as_ref().map(|e| Arc::clone(&e.password));
        let password = if password.len() > MAX_PASSWORD_BYTES {
            // Never hashed whole; checked like any wrong password so the timing says nothing.
            Vec::new()
        } else {
            password
        };
        let matched = match self.passwords.check(stored, password).await {
            Ok(matched) => matched,
            Err(Busy) => {
                self.budget
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .refund(&reservation, clock::now());
                bump(&self.metrics.login_unavailable);
                return Answer::unavailable();
            }
        };
        let Some(entry) = entry.filter(|_| matched) else {
            bump(&self.metrics.login_failed);
            return Answer::error(401, "invalid_grant", "wrong username or password");
        };
        self.budget
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refund(&reservation, clock::now());
        let this = Arc::clone(self);
        let stored = tokio::task::spawn_blocking(move || {
            let now = clock::unix_now();
            this.store.login(&username, now, this.refresh_ttl, || {
                this.issuer.mint(&username, &entry.scope, now)
            })
        })
        .await;
        match stored {
            Ok(Ok(tokens)) => {
                bump(&self.metrics.login_ok);
                Answer::tokens(&tokens, self.issuer.access_ttl())
            }
            Ok(Err(e)) => {
                warn!(
                    "login: refresh-token store {}: {e}; answered 503",
                    self.store.path().display()
                );
                bump(&self.metrics.login_unavailable);
                Answer::unavailable()
            }
            Err(_) => {
                bump(&self.metrics.login_unavailable);
                Answer::unavailable()
            }
        }
    }

    /// `POST /token` with `grant_type=refresh_token` (RFC 6749 §6).
    pub async fn refresh(self: &Arc<Self>, presented: String) -> Answer {
        let this = Arc::clone(self);
        let outcome = tokio::task::spawn_blocking(move || {
            let now = clock::unix_now();
            let users = this.directory();
            let rotation = this.store.rotate(&presented, now, |sub| {
                let entry = users.get(sub)?;
                Some(this.issuer.mint(sub, &entry.scope, now))
            });
            if let Ok(Rotation::Reused(revoked) | Rotation::UserGone(revoked)) = &rotation {
                this.revoker.revoke(revocations(revoked));
            }
            rotation
        })
        .await;
        let invalid = || {
            Answer::error(
                400,
                "invalid_grant",
                "the refresh token is invalid, expired, revoked or spent",
            )
        };
        match outcome {
            Ok(Ok(Rotation::Rotated(tokens))) => {
                bump(&self.metrics.refresh_ok);
                Answer::tokens(&tokens, self.issuer.access_ttl())
            }
            Ok(Ok(Rotation::Invalid | Rotation::UserGone(_))) => {
                bump(&self.metrics.refresh_invalid);
                invalid()
            }
            Ok(Ok(Rotation::Reused(revoked))) => {
                warn!(
                    "login: a spent refresh token of {:?} was presented again: its family and {} access tokens are revoked",
                    revoked.sub,
                    revoked.access.len()
                );
                bump(&self.metrics.refresh_reused);
                invalid()
            }
            Ok(Ok(Rotation::Crowded(seconds))) => {
                bump(&self.metrics.refresh_unavailable);
                Answer::error(
                    429,
                    "too_many_requests",
                    "too many live access tokens in this session",
                )
                .retry(seconds)
            }
            Ok(Err(e)) => {
                warn!(
                    "login: refresh-token store {}: {e}; answered 503",
                    self.store.path().display()
                );
                bump(&self.metrics.refresh_unavailable);
                Answer::unavailable()
            }
            Err(_) => {
                bump(&self.metrics.refresh_unavailable);
                Answer::unavailable()
            }
        }
    }

    /// `POST /logout` (RFC 7009 §2.2: 200 whether or not the token was known).
    pub async fn logout(self: &Arc<Self>, presented: String) -> Answer {
        let this = Arc::clone(self);
        let outcome = tokio::task::spawn_blocking(move || {
            let revoked = this.store.logout(&presented, clock::unix_now())?;
            if let Some(revoked) = &revoked {
                this.revoker.revoke(revocations(revoked));
            }
            Ok::<_, StoreError>(revoked)
        })
        .await;
        match outcome {
            Ok(Ok(revoked)) => {
                if revoked.is_some() {
                    bump(&self.metrics.logout_revoked);
                }
                Answer::json(200, serde_json::json!({}))
            }
            Ok(Err(e)) => {
                warn!(
                    "login: refresh-token store {}: {e}; answered 503",
                    self.store.path().display()
                );
                Answer::unavailable()
            }
            Err(_) => Answer::unavailable(),
        }
    }

    /// Deletes expired families (the periodic sweep). Blocking.
    pub fn sweep(&self) -> Result<usize, StoreError> {
        self.store.sweep(clock::unix_now())
    }
}

/// The users of `path` (none when it does not exist yet).
fn read_directory(path: &std::path::Path) -> Result<Directory, String> {
    match users::read(path) {
        Ok(Some(users)) => Ok(Directory::new(users)),
        Ok(None) => {
            warn!(
                "login.users: {} does not exist yet: nobody can log in (add users with `wsgate user add`)",
                path.display()
            );
            Ok(Directory::default())
        }
        Err(e) => Err(format!("login.users: {e}")),
    }
}

/// A revoked family's access tokens as revocations (each with its `exp`, so the entry is
/// dropped once the token would have expired anyway).
fn revocations(revoked: &Revoked) -> Vec<Revocation> {
    revoked
        .access
        .iter()
        .map(|(jti, exp)| Revocation::Jti {
            jti: jti.clone(),
            exp: Some(*exp),
        })
        .collect()
}
