//! Pure rate and count limits. Every function takes `now`; nothing here reads a clock.
//! The token bucket itself lives in the bottom layer ([`crate::rate`]) because
//! `proto::ws::session` meters messages with it too.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::{IpAddr, Ipv6Addr};
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
    /// The IPv6 prefix length entries are keyed by, fixed for the table's life: open
    /// connections are counted under their key, so a reload must not re-key them.
    ipv6_prefix: u8,
}

/// The address a client's per-IP budgets are kept under (SPEC §3 `limits.ipv6_prefix`):
/// an IPv4 address as is (an IPv4-mapped IPv6 address as its IPv4 form, as a dual-stack
/// listener reports IPv4 clients); an IPv6 address with everything past its first
/// `ipv6_prefix` bits zeroed, because one subscriber usually holds a whole /64 (RFC 6177)
/// and could otherwise pick a fresh address for every connection. `ipv6_prefix` is clamped
/// to 1..=128.
pub fn budget_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let prefix = u32::from(ipv6_prefix.clamp(1, 128));
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
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
    /// IPv6 clients share budgets per this prefix length (see [`budget_key`]); only the
    /// value given to [`IpTable::new`] is used.
    pub ipv6_prefix: u8,
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

    /// Replaces the budgets (SIGHUP); existing buckets keep their rate until refilled. The
    /// IPv6 prefix stays the one the table was built with (a restart changes it).
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
            ipv6_prefix: budget.ipv6_prefix,
        }
    }

    /// The IPv6 prefix length the table keys by (fixed at construction).
    pub fn ipv6_prefix(&self) -> u8 {
        self.ipv6_prefix
    }

    /// The key `ip` is counted under.
    fn key(&self, ip: IpAddr) -> IpAddr {
        budget_key(ip, self.ipv6_prefix)
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
        let ip = self.key(ip);
        let mut shard = self.shard(&ip);
        let e = self.entry(&mut shard, ip, now);
        e.connections = e.connections.saturating_add(1);
    }

    /// SPEC §4, at accept: counts a new connection from `ip` unless that would pass
    /// `per_ip_connections` (0 = no limit); false = close it at once, uncounted.
    pub fn try_connection_opened(&self, ip: IpAddr, now: Instant) -> bool {
        let ip = self.key(ip);
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
        let ip = self.key(ip);
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
        let ip = self.key(ip);
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
        let ip = self.key(ip);
        let mut shard = self.shard(&ip);
        let e = self.entry(&mut shard, ip, now);
        e.auth_failures.retry_after(1, now).is_zero()
    }

    /// Records one failed token verification from `ip`.
    pub fn auth_failed(&self, ip: IpAddr, now: Instant) {
        let ip = self.key(ip);
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
            ipv6_prefix: 64,
        }
    }

    fn key(ip: &str, prefix: u8) -> String {
        budget_key(ip.parse().expect("ip"), prefix).to_string()
    }

    #[test]
    fn budget_keys_per_ipv6_prefix_and_ipv4_address() {
        assert_eq!(key("10.0.0.1", 64), "10.0.0.1");
        assert_eq!(key("10.0.0.1", 1), "10.0.0.1");
        // A dual-stack listener reports IPv4 clients as mapped addresses.
        assert_eq!(key("::ffff:10.0.0.1", 64), "10.0.0.1");
        assert_eq!(key("2001:db8:1:2:3:4:5:6", 64), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2:ffff::1", 64), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2:3:4:5:6", 48), "2001:db8:1::");
        assert_eq!(key("2001:db8:1:2:3:4:5:6", 56), "2001:db8:1::");
        assert_eq!(key("2001:db8:1:2ff:3:4:5:6", 56), "2001:db8:1:200::");
        assert_eq!(key("2001:db8:1:2:3:4:5:6", 128), "2001:db8:1:2:3:4:5:6");
        assert_eq!(key("2001:db8:1:2:3:4:5:6", 127), "2001:db8:1:2:3:4:5:6");
        assert_eq!(key("2001:db8:1:2:3:4:5:7", 127), "2001:db8:1:2:3:4:5:6");
        assert_eq!(key("ffff::1", 1), "8000::");
        assert_eq!(key("7fff::1", 1), "::");
        // Out of range is clamped, never a panic.
        assert_eq!(key("2001:db8::1", 0), "::");
        assert_eq!(key("2001:db8::1", 200), "2001:db8::1");
        assert_eq!(key("::1", 64), "::");
    }

    #[test]
    fn ipv6_clients_of_one_prefix_share_every_budget() {
        let t0 = crate::fuzzing::virtual_epoch();
        let t = IpTable::new(budget());
        let a: IpAddr = "2001:db8:0:1::a".parse().expect("ip");
        let b: IpAddr = "2001:db8:0:1:ffff::b".parse().expect("ip");
        let other: IpAddr = "2001:db8:0:2::a".parse().expect("ip");
        // Connections: two from one /64, a third from another address of it is over.
        t.connection_opened(a, t0);
        t.connection_opened(b, t0);
        t.connection_opened(b, t0);
        assert_eq!(t.admit_handshake(a, t0), Err(IpRefusal::Connections));
        assert_eq!(t.admit_handshake(other, t0), Ok(()));
        t.connection_closed(a, t0);
        assert_eq!(t.admit_handshake(b, t0), Ok(()));
        // Auth failures of one address count for the whole prefix.
        assert!(t.auth_allowed(b, t0));
        t.auth_failed(a, t0);
        assert!(
            !t.auth_allowed(b, t0),
            "an in-band refresh shares the prefix's budget"
        );
        assert!(matches!(
            t.admit_handshake(b, t0),
            Err(IpRefusal::AuthFailures(_))
        ));
        // At accept (SPEC §4): the cap counts the prefix, not the address.
        let t = IpTable::new(budget());
        assert!(t.try_connection_opened(a, t0));
        assert!(t.try_connection_opened(b, t0));
        assert!(!t.try_connection_opened(b, t0));
        assert!(t.try_connection_opened(other, t0));
        t.connection_closed(a, t0);
        assert!(t.try_connection_opened(b, t0));
        // Handshakes: the bucket (3/s) is shared too.
        let t = IpTable::new(budget());
        for ip in [a, b, a] {
            assert_eq!(t.admit_handshake(ip, t0), Ok(()));
        }
        assert!(matches!(
            t.admit_handshake(b, t0),
            Err(IpRefusal::Handshakes(_))
        ));
        // A /128 budget separates them again; the prefix is fixed at construction.
        let t = IpTable::new(IpBudget {
            ipv6_prefix: 128,
            ..budget()
        });
        t.set_budget(budget());
        for ip in [a, a, a] {
            assert_eq!(t.admit_handshake(ip, t0), Ok(()));
        }
        assert_eq!(t.admit_handshake(b, t0), Ok(()));
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
