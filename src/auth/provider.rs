//! A `[[auth.provider]]` (SPEC §9): its issuer, claim rules and current key set, and the
//! selection of a key within that set.

use std::sync::Arc;

use super::error::TokenError;
use super::keys::{Alg, Key, ProviderKeys};

/// A `[[auth.provider]]`: its issuer, claim rules and current keys.
#[derive(Debug, Clone)]
pub struct Provider {
    /// `issuer`: equals the `iss` of every token its keys verify.
    pub issuer: String,
    /// `audience`, overriding `auth.audience` for this provider's tokens.
    pub audience: Option<String>,
    /// `algorithms`: when set, the only algorithms its tokens may use.
    pub algorithms: Option<Vec<Alg>>,
    pub(super) keys: Arc<ProviderKeys>,
}

impl Provider {
    /// A provider with its current keys.
    pub fn new(
        issuer: String,
        audience: Option<String>,
        algorithms: Option<Vec<Alg>>,
        keys: Arc<ProviderKeys>,
    ) -> Provider {
        Provider {
            issuer,
            audience,
            algorithms,
            keys,
        }
    }

    /// The current keys.
    pub fn keys(&self) -> &Arc<ProviderKeys> {
        &self.keys
    }

    /// SPEC §9 selection within this provider's set: by `kid` when the header has one;
    /// without, only when exactly one usable key allows the header's `alg`. The `alg` must
    /// be one the key allows and `algorithms` lists; HS* never (a JWK Set has no secrets).
    pub fn select(&self, kid: Option<&str>, header_alg: &str) -> Result<&Key, TokenError> {
        let alg = Alg::from_header(header_alg).ok_or(TokenError::AlgNotAllowed)?;
        if alg.is_hmac() {
            return Err(TokenError::AlgKeyMismatch);
        }
        if let Some(allowed) = &self.algorithms {
            if !allowed.contains(&alg) {
                return Err(TokenError::AlgNotAllowed);
            }
        }
        match kid {
            Some(kid) => {
                let mut known = false;
                for key in self.keys.iter() {
                    if key.kid.as_deref() == Some(kid) {
                        if key.alg == alg {
                            return Ok(key);
                        }
                        known = true;
                    }
                }
                Err(if known {
                    TokenError::AlgKeyMismatch
                } else {
                    TokenError::UnknownKid
                })
            }
            None => {
                let mut found = None;
                for key in self.keys.iter().filter(|k| k.alg == alg) {
                    if found.is_some() {
                        return Err(TokenError::AmbiguousKey);
                    }
                    found = Some(key);
                }
                found.ok_or(TokenError::NoKeyForAlg)
            }
        }
    }
}
