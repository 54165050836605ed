//! Argon2id password hashes (SPEC §11) and the bounded pool that checks them.
//!
//! Parameters are OWASP's first recommendation for Argon2id (Password Storage Cheat
//! Sheet): 19 MiB of memory (`m=19456` KiB), 2 passes (`t=2`), 1 lane (`p=1`), a 16-byte
//! random salt and a 32-byte output, written as a PHC string
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`). Verification compares in constant
//! time (the `password-hash` crate's `Output` equality).
//!
//! Hashing is slow on purpose, so it never runs on an event loop: [`Passwords::check`]
//! runs it on the tokio blocking pool, at most `threads` at once (a semaphore), with at
//! most `max_waiting` checks queued behind them; past that a check is refused at once
//! ([`Busy`], answered 503) instead of queueing without bound.
//!
//! An unknown user is checked against a dummy hash made with the same parameters at
//! start, so that the answer and its timing are the same whether the name exists or not.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use ring::rand::{SecureRandom as _, SystemRandom};
use tokio::sync::Semaphore;

/// OWASP: memory in KiB (19 MiB).
pub const M_COST: u32 = 19 * 1024;
/// OWASP: passes.
pub const T_COST: u32 = 2;
/// OWASP: lanes.
pub const P_COST: u32 = 1;
/// Hash output bytes.
pub const OUTPUT_LEN: usize = 32;
/// Salt bytes (RFC 9106 §3.1 recommends 16).
pub const SALT_LEN: usize = 16;

/// Shortest password `user add` accepts (NIST SP 800-63B §5.1.1.2: at least 8).
pub const MIN_PASSWORD_BYTES: usize = 8;
/// Longest password accepted anywhere; a longer one never reaches Argon2.
pub const MAX_PASSWORD_BYTES: usize = 1024;

fn hasher() -> Argon2<'static> {
    // The parameters are constants within Argon2's bounds: `Params::new` cannot fail here,
    // and `DEFAULT` (the same values) stands in if it ever did.
    let params = Params::new(M_COST, T_COST, P_COST, Some(OUTPUT_LEN)).unwrap_or(Params::DEFAULT);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` with a fresh random salt into a PHC string.
pub fn hash(password: &[u8]) -> Result<String, String> {
    let mut salt = [0u8; SALT_LEN];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| "no randomness from the operating system".to_owned())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| format!("salt: {e}"))?;
    hasher()
        .hash_password(password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| format!("argon2: {e}"))
}

/// Whether `phc` is an Argon2id PHC string this service can verify (users-file check).
pub fn check_phc(phc: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(phc).map_err(|e| format!("not a PHC hash string: {e}"))?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "hash algorithm {} is not argon2id",
            parsed.algorithm.as_str()
        ));
    }
    if parsed.hash.is_none() || parsed.salt.is_none() {
        return Err("hash string without salt or hash".to_owned());
    }
    Params::try_from(&parsed).map_err(|e| format!("argon2 parameters: {e}"))?;
    Ok(())
}

/// Whether `password` matches `phc`, comparing in constant time. A hash that does not
/// parse matches nothing.
pub fn verify(phc: &str, password: &[u8]) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    match PasswordHash::new(phc) {
        Ok(parsed) => hasher().verify_password(password, &parsed).is_ok(),
        Err(_) => false,
    }
}

/// The pool is full: too many checks running and queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// The bounded pool of password checks (module docs).
pub struct Passwords {
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    dummy: Arc<str>,
}

impl Passwords {
    /// A pool running at most `threads` checks at once with at most `max_waiting` queued.
    /// Makes the dummy hash (one Argon2 run), so call it off any event loop.
    pub fn new(threads: usize, max_waiting: usize) -> Result<Passwords, String> {
        let mut random = [0u8; 32];
        SystemRandom::new()
            .fill(&mut random)
            .map_err(|_| "no randomness from the operating system".to_owned())?;
        Ok(Passwords {
            permits: Arc::new(Semaphore::new(threads.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting,
            dummy: hash(&random)?.into(),
        })
    }

    /// Checks `password` against `stored`, or against the dummy hash when the user is
    /// unknown (`None`, which never matches). The same work is done either way.
    pub async fn check(&self, stored: Option<Arc<str>>, password: Vec<u8>) -> Result<bool, Busy> {
        let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
        let _queued = Queued(Arc::clone(&self.waiting));
        if queued >= self.max_waiting {
            return Err(Busy);
        }
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| Busy)?;
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| Arc::clone(&self.dummy));
        let matched = tokio::task::spawn_blocking(move || {
            let matched = verify(&phc, &password);
            drop(permit);
            matched
        })
        .await
        .map_err(|_| Busy)?;
        Ok(known && matched)
    }
}

/// Counts a check out of the queue when it ends, however it ends.
struct Queued(Arc<AtomicUsize>);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let phc = hash(b"correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("correct"));
        check_phc(&phc).unwrap();
        assert!(verify(&phc, b"correct horse"));
        assert!(!verify(&phc, b"correct horsf"));
        assert!(!verify(&phc, b""));
        // Salted: the same password hashes differently each time.
        assert_ne!(phc, hash(b"correct horse").unwrap());
    }

    #[test]
    fn foreign_and_broken_hashes_are_refused() {
        assert!(check_phc("plaintext").is_err());
        assert!(check_phc(
            "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA"
        )
        .is_err());
        assert!(check_phc("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0").is_err());
        assert!(!verify("plaintext", b"plaintext"));
        let long = vec![b'a'; MAX_PASSWORD_BYTES + 1];
        let phc = hash(&long).unwrap();
        assert!(!verify(&phc, &long), "an over-long password never matches");
    }

    #[test]
    fn pool_checks_known_and_unknown_users_and_refuses_past_its_queue() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let phc: Arc<str> = hash(b"secret-pw").unwrap().into();
        let pool = Arc::new(Passwords::new(1, 2).unwrap());
        runtime.block_on(async {
            assert_eq!(
                pool.check(Some(Arc::clone(&phc)), b"secret-pw".to_vec())
                    .await,
                Ok(true)
            );
            assert_eq!(
                pool.check(Some(Arc::clone(&phc)), b"wrong".to_vec()).await,
                Ok(false)
            );
            // An unknown user never matches, whatever the password (even the dummy's).
            assert_eq!(pool.check(None, b"secret-pw".to_vec()).await, Ok(false));
            // Three at once with room for two: one is refused at once.
            let (a, b, c) = tokio::join!(
                pool.check(Some(Arc::clone(&phc)), b"secret-pw".to_vec()),
                pool.check(Some(Arc::clone(&phc)), b"secret-pw".to_vec()),
                pool.check(Some(Arc::clone(&phc)), b"secret-pw".to_vec()),
            );
            let results = [a, b, c];
            assert_eq!(
                results.iter().filter(|r| **r == Err(Busy)).count(),
                1,
                "{results:?}"
            );
            assert_eq!(
                results.iter().filter(|r| **r == Ok(true)).count(),
                2,
                "{results:?}"
            );
            // The queue drained: a later check runs.
            assert_eq!(pool.check(Some(phc), b"secret-pw".to_vec()).await, Ok(true));
        });
    }
}
