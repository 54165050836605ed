//! What travels with a provider's key set besides the keys (SPEC §9), and the data
//! plane's way to ask the control plane for a fetch.

use std::fmt;
use std::sync::Arc;

/// What the control plane knows about a provider's set when it publishes it (SPEC §9);
/// the verifier reads `usable` and `retry_at_unix`, `/readyz` and `/metrics` the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchStatus {
    /// A set that may verify tokens: fetched (or read) and not stale past `max_stale`.
    pub usable: bool,
    /// Unix seconds of the next fetch attempt (`Retry-After` while not usable).
    pub retry_at_unix: u64,
    /// Unix seconds of the last successful fetch (0: never).
    pub last_fetch_unix: u64,
    /// Failed fetches so far, by reason label.
    pub failures: Vec<(&'static str, u64)>,
}

/// Called with an issuer when a token names a `kid` that its provider's set lacks: the
/// control plane decides whether a fetch may start (at most one per `min_refresh`).
#[derive(Clone)]
pub struct RefetchHook(pub Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl fmt::Debug for RefetchHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefetchHook")
    }
}
