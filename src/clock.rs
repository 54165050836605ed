//! The one place that reads the clock. Everything else takes `now` as a parameter
//! (clippy.toml forbids `Instant::now` and `SystemTime::now` elsewhere).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Monotonic time, for deadlines.
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    Instant::now()
}

/// Seconds since the Unix epoch, for token `exp` / `nbf` / `iat`.
#[allow(clippy::disallowed_methods)]
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch, for the publication time of fleet messages (SPEC §8).
#[allow(clippy::disallowed_methods)]
pub fn unix_now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
