//! The failed-login budget (SPEC §11 `failures`): per user name and per client address
//! (IPv6: per `limits.ipv6_prefix` network, as every per-IP limit), each a bucket of `count` that
//! refills `count` per `period` (GCRA: one theoretical arrival time per key). Pure: every
//! call takes `now`.
//!
//! A login attempt *reserves* one failure from both buckets before the password is
//! checked, and gives it back when the password was right. So parallel attempts cannot
//! overrun the budget, and once a bucket is empty even the right password is refused
//! (429 with `Retry-After`) without any hashing. Names that do not exist are budgeted like
//! names that do, so a 429 tells nothing about which names exist.
//!
//! Memory is bounded: each table holds at most `max_keys` entries; entries whose bucket
//! refilled are dropped first, and when a table is still full the attempt is refused
//! (fail closed) rather than the table growing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::FailureRate;
use crate::gate::limits::budget_key;

/// Where the budget says no, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    /// Until one failure is allowed again.
    pub retry_after: Duration,
}

struct Table<K> {
    tat: HashMap<K, Instant>,
    max_keys: usize,
}

impl<K: std::hash::Hash + Eq + Clone> Table<K> {
    /// Takes one failure from `key`'s bucket, or says when one will be there.
    fn take(&mut self, key: &K, rate: FailureRate, now: Instant) -> Result<(), Exhausted> {
        let interval = rate.period / rate.count;
        // GCRA: allowed while the theoretical arrival time is at most `period - interval`
        // ahead of now (a full bucket holds `count`).
        let tolerance = rate.period.saturating_sub(interval);
        if !self.tat.contains_key(key) && self.tat.len() >= self.max_keys {
            self.tat.retain(|_, tat| *tat > now);
            if self.tat.len() >= self.max_keys {
                return Err(Exhausted {
                    retry_after: interval,
                });
            }
        }
        let tat = self.tat.get(key).copied().unwrap_or(now).max(now);
        let ahead = tat.saturating_duration_since(now);
        if ahead > tolerance {
            return Err(Exhausted {
                retry_after: ahead - tolerance,
            });
        }
        self.tat.insert(key.clone(), tat + interval);
        Ok(())
    }

    /// Gives back one failure taken from `key`.
    fn give_back(&mut self, key: &K, rate: FailureRate, now: Instant) {
        let interval = rate.period / rate.count;
        if let Some(tat) = self.tat.get_mut(key) {
            *tat = tat.checked_sub(interval).unwrap_or(now).max(now);
            if *tat <= now {
                self.tat.remove(key);
            }
        }
    }
}

/// The two budgets (module docs).
pub struct Budget {
    rate: FailureRate,
    ipv6_prefix: u8,
    users: Table<String>,
    addresses: Table<IpAddr>,
}

/// A reservation taken by [`Budget::reserve`]; give it back with [`Budget::refund`] when
/// the attempt succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    user: String,
    address: IpAddr,
}

impl Budget {
    /// Budgets of `rate`, each table holding at most `max_keys` keys; IPv6 addresses are
    /// counted per `/ipv6_prefix`.
    pub fn new(rate: FailureRate, max_keys: usize, ipv6_prefix: u8) -> Budget {
        Budget {
            rate,
            ipv6_prefix,
            users: Table {
                tat: HashMap::new(),
                max_keys,
            },
            addresses: Table {
                tat: HashMap::new(),
                max_keys,
            },
        }
    }

    /// Reserves one failure for `user` from `ip`, or says how long until one may be tried.
    pub fn reserve(
        &mut self,
        user: &str,
        ip: IpAddr,
        now: Instant,
    ) -> Result<Reservation, Exhausted> {
        let address = budget_key(ip, self.ipv6_prefix);
        let user = user.to_owned();
        self.addresses.take(&address, self.rate, now)?;
        if let Err(e) = self.users.take(&user, self.rate, now) {
            self.addresses.give_back(&address, self.rate, now);
            return Err(e);
        }
        Ok(Reservation { user, address })
    }

    /// Gives a reservation back (the password was right).
    pub fn refund(&mut self, reservation: &Reservation, now: Instant) {
        self.users.give_back(&reservation.user, self.rate, now);
        self.addresses
            .give_back(&reservation.address, self.rate, now);
    }

    /// Keys tracked (both tables).
    pub fn tracked(&self) -> usize {
        self.users.tat.len() + self.addresses.tat.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn five_per_minute() -> FailureRate {
        "5/m".parse().unwrap()
    }

    #[test]
    fn five_failures_then_429_for_a_user_from_any_address_then_it_refills() {
        let t0 = crate::fuzzing::virtual_epoch();
        let mut budget = Budget::new(five_per_minute(), 100, 64);
        for n in 0..5u8 {
            budget
                .reserve("alice", IpAddr::from([10, 0, 0, n]), t0)
                .unwrap();
        }
        let refused = budget
            .reserve("alice", IpAddr::from([10, 0, 0, 9]), t0)
            .unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(12));
        // Another name from a fresh address is unaffected.
        budget
            .reserve("bob", IpAddr::from([10, 0, 0, 9]), t0)
            .unwrap();
        // One refills every 12 s.
        budget
            .reserve(
                "alice",
                IpAddr::from([10, 0, 1, 1]),
                t0 + Duration::from_secs(12),
            )
            .unwrap();
        assert!(budget
            .reserve(
                "alice",
                IpAddr::from([10, 0, 1, 2]),
                t0 + Duration::from_secs(12)
            )
            .is_err());
    }

    #[test]
    fn an_address_is_budgeted_across_names_and_ipv6_per_64() {
        let t0 = crate::fuzzing::virtual_epoch();
        let mut budget = Budget::new(five_per_minute(), 100, 64);
        for n in 0..5 {
            let ip: IpAddr = format!("2001:db8::{n}").parse().unwrap();
            budget.reserve(&format!("nobody{n}"), ip, t0).unwrap();
        }
        let same_64: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        assert!(budget.reserve("other", same_64, t0).is_err());
        let other_64: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        budget.reserve("other", other_64, t0).unwrap();
    }

    #[test]
    fn refunds_make_right_passwords_free_but_an_empty_bucket_refuses_them() {
        let t0 = crate::fuzzing::virtual_epoch();
        let ip = IpAddr::from([127, 0, 0, 1]);
        let mut budget = Budget::new(five_per_minute(), 100, 64);
        for _ in 0..20 {
            let r = budget.reserve("carol", ip, t0).unwrap();
            budget.refund(&r, t0);
        }
        assert_eq!(budget.tracked(), 0);
        for _ in 0..5 {
            budget.reserve("carol", ip, t0).unwrap();
        }
        // Now even an attempt that would succeed is refused before any check.
        assert!(budget.reserve("carol", ip, t0).is_err());
    }

    #[test]
    fn tables_stay_bounded_and_fail_closed_when_full() {
        let t0 = crate::fuzzing::virtual_epoch();
        let mut budget = Budget::new(five_per_minute(), 3, 64);
        for n in 0..3u8 {
            budget
                .reserve(&format!("u{n}"), IpAddr::from([10, 0, 0, n]), t0)
                .unwrap();
        }
        assert!(budget
            .reserve("u9", IpAddr::from([10, 0, 0, 9]), t0)
            .is_err());
        assert!(budget.tracked() <= 6);
        // Once the entries refilled they make room.
        budget
            .reserve(
                "u9",
                IpAddr::from([10, 0, 0, 9]),
                t0 + Duration::from_secs(13),
            )
            .unwrap();
    }
}
