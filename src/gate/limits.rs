//! Pure rate and count limits. Every function takes `now`; nothing here reads a clock.
//! The token bucket itself lives in the bottom layer ([`crate::rate`]) because
//! `proto::ws::session` meters messages with it too.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

pub use crate::rate::{retry_after_secs, TokenBucket};

const SHARDS: usize = 16;

/// What one source address has used.
#[derive(Debug)]
struct IpEntry {
    connections: u32,
    handshakes: TokenBucket,
    auth_failures: TokenBucket,
}

/// Per-IP budgets (SPEC §3 `per_ip_connections`, `per_ip_handshakes`,
/// `per_ip_auth_failures`), sharded so that workers rarely contend. An entry lives while
/// its address has connections or a bucket that is not yet full again; tables are swept
/// when they double, so memory follows the number of active addresses.
#[derive(Debug)]
pub struct IpTable {
    shards: Vec<Mutex<Shard<IpAddr, IpEntry>>>,
    hasher: std::collections::hash_map::RandomState,
    /// Rates and caps; replaced as a whole on reload (new entries use the new rates).
    budget: Mutex<IpBudget>,
}

/// The configured per-IP budgets.
#[derive(Debug, Clone, Copy)]
pub struct IpBudget {
    /// Concurrent connections (handshake included) per address.
    pub connections: u32,
    /// Upgrade attempts per second (burst equal).
    pub handshakes_per_sec: u64,
    /// Failed token verifications per second (burst equal).
    pub auth_failures_per_sec: u64,
}

#[derive(Debug)]
struct Shard<K, V> {
    map: HashMap<K, V>,
    sweep_at: usize,
}

impl<K, V> Default for Shard<K, V> {
    fn default() -> Self {
        Shard {
            map: HashMap::new(),
            sweep_at: 1024,
        }
    }
}

/// Why a per-IP check refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpRefusal {
    /// Too many open connections from this address.
    Connections,
    /// Handshake rate exceeded; retry after this many seconds.
    Handshakes(u64),
    /// Failed-token budget exhausted; retry after this many seconds.
    AuthFailures(u64),
}

impl IpTable {
    /// The budgets in force.
    pub fn budget(&self) -> IpBudget {
        *self
            .budget
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replaces the budgets (SIGHUP); existing buckets keep their rate until refilled.
    pub fn set_budget(&self, budget: IpBudget) {
        *self
            .budget
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = budget;
    }

    /// An empty table with the given budgets.
    pub fn new(budget: IpBudget) -> IpTable {
        IpTable {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: Default::default(),
            budget: Mutex::new(budget),
        }
    }

    fn shard(&self, ip: &IpAddr) -> std::sync::MutexGuard<'_, Shard<IpAddr, IpEntry>> {
        let i = (self.hasher.hash_one(ip) as usize) % SHARDS;
        // A poisoned lock only means another worker panicked mid-update; the counters
        // are still usable, so keep serving rather than cascading the panic.
        self.shards[i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn entry<'a>(
        &self,
        shard: &'a mut Shard<IpAddr, IpEntry>,
        ip: IpAddr,
        now: Instant,
    ) -> &'a mut IpEntry {
        if shard.map.len() >= shard.sweep_at && !shard.map.contains_key(&ip) {
            shard.map.retain(|_, e| {
                e.connections > 0 || !e.handshakes.is_full(now) || !e.auth_failures.is_full(now)
            });
            shard.sweep_at = (shard.map.len() * 2).max(1024);
        }
        let budget = self.budget();
        shard.map.entry(ip).or_insert_with(|| IpEntry {
            connections: 0,
            handshakes: TokenBucket::new(budget.handshakes_per_sec, now),
            auth_failures: TokenBucket::new(budget.auth_failures_per_sec, now),
        })
    }

    /// Counts a newly accepted connection from `ip`.
    pub fn connection_opened(&self, ip: IpAddr, now: Instant) {
        let mut shard = self.shard(&ip);
        let e = self.entry(&mut shard, ip, now);
        e.connections = e.connections.saturating_add(1);
    }

    /// SPEC §4, at accept: counts a new connection from `ip` unless that would pass
    /// `per_ip_connections` (0 = no limit); false = close it at once, uncounted.
    pub fn try_connection_opened(&self, ip: IpAddr, now: Instant) -> bool {
        let limit = self.budget().connections;
        let mut shard = self.shard(&ip);
        let e = self.entry(&mut shard, ip, now);
        if limit > 0 && e.connections >= limit {
            return false;
        }
        e.connections = e.connections.saturating_add(1);
        true
    }

    /// Uncounts a connection from `ip`.
    pub fn connection_closed(&self, ip: IpAddr, now: Instant) {
        let mut shard = self.shard(&ip);
        if let Some(e) = shard.map.get_mut(&ip) {
            e.connections = e.connections.saturating_sub(1);
            if e.connections == 0 && e.handshakes.is_full(now) && e.auth_failures.is_full(now) {
                shard.map.remove(&ip);
            }
        }
    }

    /// The per-IP step of the handshake (SPEC §4 order: connections, handshakes,
    /// failed-token budget). Takes one handshake token when it passes.
    pub fn admit_handshake(&self, ip: IpAddr, now: Instant) -> Result<(), IpRefusal> {
        let budget = self.budget();
        let mut shard = self.shard(&ip);
        let e = self.entry(&mut shard, ip, now);
        if budget.connections > 0 && e.connections > budget.connections {
            return Err(IpRefusal::Connections);
        }
        if !e.handshakes.try_take(1, now) {
            return Err(IpRefusal::Handshakes(retry_after_secs(
                e.handshakes.retry_after(1, now),
            )));
        }
        let wait = e.auth_failures.retry_after(1, now);
        if !wait.is_zero() {
            return Err(IpRefusal::AuthFailures(retry_after_secs(wait)));
        }
        Ok(())
    }

    /// SPEC §6: whether `ip` may have a token checked now (its failed-token budget is not
    /// exhausted). An in-band refresh asks before any signature is checked; nothing is
    /// taken (only failures take from this budget).
    pub fn auth_allowed(&self, ip: IpAddr, now: Instant) -> bool {
        let mut shard = self.shard(&ip);
        let e = self.entry(&mut shard, ip, now);
        e.auth_failures.retry_after(1, now).is_zero()
    }

    /// Records one failed token verification from `ip`.
    pub fn auth_failed(&self, ip: IpAddr, now: Instant) {
        let mut shard = self.shard(&ip);
        let e = self.entry(&mut shard, ip, now);
        let _ = e.auth_failures.try_take(1, now);
    }

    /// Number of addresses tracked (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.map.len()).unwrap_or(0))
            .sum()
    }
}

/// Live connections per token subject, across all workers (SPEC §3
/// `per_subject_connections`).
#[derive(Debug)]
pub struct SubjectTable {
    shards: Vec<Mutex<HashMap<Box<str>, u32>>>,
    hasher: std::collections::hash_map::RandomState,
    /// The cap; 0 = unlimited.
    pub limit: AtomicUsize,
}

impl SubjectTable {
    /// An empty table.
    pub fn new(limit: u32) -> SubjectTable {
        SubjectTable {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            limit: AtomicUsize::new(limit as usize),
        }
    }

    fn shard<Q: Hash + ?Sized>(
        &self,
        sub: &Q,
    ) -> std::sync::MutexGuard<'_, HashMap<Box<str>, u32>> {
        let i = (self.hasher.hash_one(sub) as usize) % SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one more connection for `sub`, unless it already has the maximum.
    pub fn try_acquire(&self, sub: &str) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        let mut shard = self.shard(sub);
        match shard.get_mut(sub) {
            Some(n) => {
                if limit > 0 && *n as usize >= limit {
                    return false;
                }
                *n += 1;
            }
            None => {
                shard.insert(sub.into(), 1);
            }
        }
        true
    }

    /// Releases one connection of `sub`.
    pub fn release(&self, sub: &str) {
        let mut shard = self.shard(sub);
        if let Some(n) = shard.get_mut(sub) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                shard.remove(sub);
            }
        }
    }

    /// Current count for `sub`.
    pub fn count(&self, sub: &str) -> u32 {
        self.shard(sub).get(sub).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod table_tests {
    use super::*;
    use std::time::Duration;

    fn budget() -> IpBudget {
        IpBudget {
            connections: 2,
            handshakes_per_sec: 3,
            auth_failures_per_sec: 1,
        }
    }

    #[test]
    fn connections_counted_from_accept() {
        let t0 = crate::fuzzing::virtual_epoch();
        let t = IpTable::new(budget());
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        t.connection_opened(ip, t0);
        t.connection_opened(ip, t0);
        assert_eq!(t.admit_handshake(ip, t0), Ok(()));
        t.connection_opened(ip, t0);
        assert_eq!(t.admit_handshake(ip, t0), Err(IpRefusal::Connections));
        t.connection_closed(ip, t0);
        assert_eq!(t.admit_handshake(ip, t0), Ok(()));
    }

    #[test]
    fn handshake_bucket_and_auth_failures() {
        let t0 = crate::fuzzing::virtual_epoch();
        let t = IpTable::new(budget());
        let ip: IpAddr = "10.0.0.2".parse().expect("ip");
        for _ in 0..3 {
            assert_eq!(t.admit_handshake(ip, t0), Ok(()));
        }
        assert_eq!(t.admit_handshake(ip, t0), Err(IpRefusal::Handshakes(1)));
        let t1 = t0 + Duration::from_secs(1);
        t.auth_failed(ip, t1);
        assert_eq!(t.admit_handshake(ip, t1), Err(IpRefusal::AuthFailures(1)));
        let other: IpAddr = "10.0.0.3".parse().expect("ip");
        assert_eq!(t.admit_handshake(other, t1), Ok(()));
        // Entries for addresses with nothing outstanding are dropped.
        let t9 = t1 + Duration::from_secs(9);
        t.connection_opened(ip, t9);
        t.connection_closed(ip, t9);
        assert_eq!(t.tracked(), 1);
    }

    #[test]
    fn accept_refuses_past_the_per_ip_cap_without_counting() {
        let t0 = crate::fuzzing::virtual_epoch();
        let t = IpTable::new(budget());
        let ip: IpAddr = "10.0.0.4".parse().expect("ip");
        assert!(t.try_connection_opened(ip, t0));
        assert!(t.try_connection_opened(ip, t0));
        assert!(!t.try_connection_opened(ip, t0));
        assert!(!t.try_connection_opened(ip, t0));
        // Another address has its own budget.
        assert!(t.try_connection_opened("10.0.0.5".parse().expect("ip"), t0));
        // The refused ones were not counted: one close makes room for one.
        t.connection_closed(ip, t0);
        assert!(t.try_connection_opened(ip, t0));
        assert!(!t.try_connection_opened(ip, t0));
        // 0 = no limit.
        let open = IpTable::new(IpBudget {
            connections: 0,
            ..budget()
        });
        for _ in 0..100 {
            assert!(open.try_connection_opened(ip, t0));
        }
    }

    #[test]
    fn auth_allowed_asks_without_taking() {
        let t0 = crate::fuzzing::virtual_epoch();
        let t = IpTable::new(budget());
        let ip: IpAddr = "10.0.0.6".parse().expect("ip");
        for _ in 0..5 {
            assert!(t.auth_allowed(ip, t0));
        }
        t.auth_failed(ip, t0);
        assert!(!t.auth_allowed(ip, t0));
        assert!(t.auth_allowed("10.0.0.7".parse().expect("ip"), t0));
        assert!(t.auth_allowed(ip, t0 + Duration::from_secs(1)));
    }

    #[test]
    fn subject_cap() {
        let s = SubjectTable::new(2);
        assert!(s.try_acquire("alice"));
        assert!(s.try_acquire("alice"));
        assert!(!s.try_acquire("alice"));
        assert!(s.try_acquire("bob"));
        s.release("alice");
        assert!(s.try_acquire("alice"));
        s.release("bob");
        assert_eq!(s.count("bob"), 0);
    }
}
