//! The token bucket under every rate in the gateway (handshakes and auth failures per
//! address in `gate::limits`, messages and bytes per connection in `proto::ws::session`).
//! Pure: every function takes `now`; nothing here reads a clock.

use std::time::{Duration, Instant};

use crate::clock::Tick;

/// A token bucket whose burst equals its per-second rate (SPEC §3: `"50/s"`).
///
/// Tokens are kept in nano-units (1 token = 1e9) so that refill is exact integer
/// arithmetic with no drift and no floating point.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens per second, also the burst size.
    rate: u64,
    meter: Meter,
}

impl TokenBucket {
    /// A full bucket. `rate == 0` means "unlimited": every take succeeds.
    pub fn new(rate: u64, now: Instant) -> Self {
        TokenBucket {
            rate,
            meter: Meter::new(now),
        }
    }

    /// The configured rate (and burst).
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Takes `n` tokens if they are there; returns whether it did.
    pub fn try_take(&mut self, n: u64, now: Instant) -> bool {
        self.meter.try_take(self.rate, n, now)
    }

    /// How long until `n` tokens will be available (zero when they are now).
    pub fn retry_after(&mut self, n: u64, now: Instant) -> Duration {
        self.meter.retry_after(self.rate, n, now)
    }

    /// True when the bucket is full again (nothing to remember about this key).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.meter.is_full(self.rate, now)
    }
}

const NANO: u128 = 1_000_000_000;

/// A token bucket's state without its rate (16 bytes): for state kept per connection,
/// whose rate every connection of a configuration shares (issue #15). Each call passes
/// the rate; the bucket is exact (as [`TokenBucket`]) for rates up to 18,446,744,073 per
/// second, whose whole burst fits in 64 bits of nano-tokens; above that a deficit larger
/// than that is remembered as that.
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    /// Nano-tokens missing from a full bucket at `last`.
    deficit: u64,
    last: Tick,
}

impl Meter {
    /// A full bucket.
    pub fn new(now: Instant) -> Self {
        Meter {
            deficit: 0,
            last: Tick::from(now),
        }
    }

    /// The fill at `now` in nano-tokens, with the bucket's clock moved to `now`.
    fn refill(&mut self, rate: u64, now: impl Into<Tick>) -> u128 {
        let now = now.into();
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        // elapsed_ns * rate tokens-per-second = nano-tokens gained.
        let gained = elapsed.as_nanos().saturating_mul(u128::from(rate));
        let deficit = u128::from(self.deficit).saturating_sub(gained);
        self.deficit = u64::try_from(deficit).unwrap_or(u64::MAX);
        (u128::from(rate) * NANO).saturating_sub(deficit)
    }

    /// Takes `n` tokens if they are there; returns whether it did. `rate == 0` means
    /// "unlimited": every take succeeds. `now` as an `Instant` or, cheaper when the caller
    /// already converted it for another use, a [`Tick`].
    pub fn try_take(&mut self, rate: u64, n: u64, now: impl Into<Tick>) -> bool {
        if rate == 0 {
            return true;
        }
        let level = self.refill(rate, now);
        let need = u128::from(n) * NANO;
        if level >= need {
            let deficit = u128::from(self.deficit) + need;
            self.deficit = u64::try_from(deficit).unwrap_or(u64::MAX);
            true
        } else {
            false
        }
    }

    /// How long until `n` tokens will be available (zero when they are now).
    pub fn retry_after(&mut self, rate: u64, n: u64, now: Instant) -> Duration {
        if rate == 0 {
            return Duration::ZERO;
        }
        let level = self.refill(rate, now);
        let need = u128::from(n.min(rate)) * NANO;
        if level >= need {
            return Duration::ZERO;
        }
        let missing = need - level;
        let nanos = missing.div_ceil(u128::from(rate));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// True when the bucket is full again.
    pub fn is_full(&mut self, rate: u64, now: Instant) -> bool {
        self.refill(rate, now);
        self.deficit == 0
    }
}

/// Whole seconds for a `Retry-After` header: at least 1.
pub fn retry_after_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let t0 = crate::fuzzing::virtual_epoch();
        let mut b = TokenBucket::new(3, t0);
        assert!(b.try_take(1, t0));
        assert!(b.try_take(1, t0));
        assert!(b.try_take(1, t0));
        assert!(!b.try_take(1, t0));
        assert_eq!(b.retry_after(1, t0), Duration::from_nanos(333_333_334));
        let t1 = t0 + Duration::from_millis(334);
        assert!(b.try_take(1, t1));
        assert!(!b.try_take(1, t1));
        // Refill never exceeds the burst.
        let t2 = t1 + Duration::from_secs(100);
        assert!(b.try_take(3, t2));
        assert!(!b.try_take(1, t2));
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let t0 = crate::fuzzing::virtual_epoch();
        let mut b = TokenBucket::new(0, t0);
        for _ in 0..1000 {
            assert!(b.try_take(u64::MAX, t0));
        }
    }

    #[test]
    fn more_than_burst_never_fits() {
        let t0 = crate::fuzzing::virtual_epoch();
        let mut b = TokenBucket::new(10, t0);
        assert!(!b.try_take(11, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
