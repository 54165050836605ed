//! The one place that reads the clock. Everything else takes `now` as a parameter
//! (clippy.toml forbids `Instant::now` and `SystemTime::now` elsewhere).

use std::num::NonZeroU64;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Monotonic time, for deadlines.
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    // The time base is fixed before the first instant is handed out, so that every
    // instant this crate sees converts to a `Tick` exactly.
    base();
    Instant::now()
}

/// A point in monotonic time packed into 8 bytes: nanoseconds since the process's time
/// base (584 years of range), for state kept per connection (issue #15: an idle
/// connection's memory). [`Tick::from`] and [`Tick::instant`] convert exactly for every
/// instant from [`now`] on; an instant before the base (more than a year before the
/// first call to [`now`]) is clamped to it. `Option<Tick>` is 8 bytes too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tick(NonZeroU64);

impl Tick {
    /// The tick `nanos` past the base (stored plus one, so that zero is free for `None`).
    fn at(nanos: u64) -> Option<Tick> {
        nanos.checked_add(1).and_then(NonZeroU64::new).map(Tick)
    }

    /// Nanoseconds since the time base.
    pub fn nanos(self) -> u64 {
        self.0.get() - 1
    }

    /// The instant this tick stands for.
    pub fn instant(self) -> Instant {
        // u64 nanoseconds past the base never overflow `Instant` (584 years).
        base() + Duration::from_nanos(self.nanos())
    }

    /// The later of two ticks.
    pub fn max(self, other: Tick) -> Tick {
        Tick(self.0.max(other.0))
    }

    /// `self + d`, `None` past the range (as `Instant::checked_add`).
    pub fn checked_add(self, d: Duration) -> Option<Tick> {
        u64::try_from(d.as_nanos())
            .ok()
            .and_then(|n| self.nanos().checked_add(n))
            .and_then(Tick::at)
    }

    /// Time from `earlier` to `self`, zero when `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Tick) -> Duration {
        Duration::from_nanos(self.0.get().saturating_sub(earlier.0.get()))
    }
}

impl From<Instant> for Tick {
    fn from(at: Instant) -> Tick {
        let since = at.saturating_duration_since(base());
        let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX - 1);
        Tick::at(nanos.min(u64::MAX - 1)).unwrap_or(Tick(NonZeroU64::MAX))
    }
}

/// The time base of [`Tick`]: a year before the first reading of the clock where the
/// platform's monotonic clock can express that (Linux can), so that instants computed
/// backwards from [`now`] (tests on a virtual clock do) still convert exactly.
#[allow(clippy::disallowed_methods)]
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(|| {
        let now = Instant::now();
        [365 * 24 * 3600, 24 * 3600, 3600, 0]
            .into_iter()
            .find_map(|secs| now.checked_sub(Duration::from_secs(secs)))
            .unwrap_or(now)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_convert_exactly_and_order_like_instants() {
        let t0 = now();
        let t1 = t0 + Duration::from_nanos(1_500_000_001);
        let (a, b) = (Tick::from(t0), Tick::from(t1));
        assert_eq!(a.instant(), t0);
        assert_eq!(b.instant(), t1);
        assert!(a < b);
        assert_eq!(
            b.saturating_duration_since(a),
            Duration::from_nanos(1_500_000_001)
        );
        assert_eq!(a.saturating_duration_since(b), Duration::ZERO);
        assert_eq!(a.checked_add(Duration::from_nanos(1_500_000_001)), Some(b));
        assert_eq!(a.checked_add(Duration::MAX), None);
        assert_eq!(a.max(b), b);
        assert_eq!(std::mem::size_of::<Option<Tick>>(), 8);
        // Backwards from now, within the base's margin (Linux): still exact.
        if let Some(earlier) = t0.checked_sub(Duration::from_secs(60)) {
            assert_eq!(Tick::from(earlier).instant(), earlier);
        }
    }
}
