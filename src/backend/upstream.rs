//! Upstream selection for proxied routes: round-robin over the targets not marked down
//! (SPEC §5 "Upstream selection"), and the addresses a target is dialed at. Pure: the
//! caller passes `now`; the control plane resolves host names (`control::resolve`) and
//! publishes [`ResolvedNames`], which a worker reads at connect time.
//!
//! One balancer per route per process, shared by every worker (atomics, no lock): a
//! failed connect seen by one worker spares the others the same failed connect. Health is
//! per target (the URL), whatever addresses its name has.
//!
//! A target whose name has several addresses: each connect starts at the next address in
//! turn ([`Balancer::turn`]), and a failed connect tries the target's other addresses in
//! order before the target counts as failed ([`dial_order`]).
//!
//! Call order for one client handshake: [`Balancer::pick`] with an empty `exclude`; on a
//! refused or failed connect, [`Balancer::mark_down`] that index and `pick` again with every
//! index tried so far in `exclude`; `None` means every target was tried (502). After an
//! upstream connect succeeds, [`Balancer::mark_up`] clears any earlier mark.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A down mark too long for the clock to represent: down until [`Balancer::mark_up`].
const FOREVER: u64 = u64::MAX;

/// Round-robin over a route's upstreams, skipping the ones marked down while any other is
/// left, and trying the marked ones (soonest to recover first) before giving up.
#[derive(Debug)]
pub struct Balancer {
    /// The instant the marks count from.
    base: Instant,
    /// Per target: nanoseconds after `base` until which it is down (0 or any past value:
    /// up; [`FOREVER`]: until marked up).
    down_until: Vec<AtomicU64>,
    /// Index where the next round-robin scan starts.
    next: AtomicUsize,
    /// Per target: connects so far, which picks the address a connect starts at.
    turns: Vec<AtomicUsize>,
}

impl Balancer {
    /// A balancer over `n_targets` upstreams, all up, the first pick being index 0; marks
    /// count from `base` (any instant not after the first `now` passed in).
    pub fn new(n_targets: usize, base: Instant) -> Balancer {
        Balancer {
            base,
            down_until: (0..n_targets).map(|_| AtomicU64::new(0)).collect(),
            next: AtomicUsize::new(0),
            turns: (0..n_targets).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// Target `i`'s turn for a new connect (0, 1, 2, ... over the process's connects to it):
    /// which of its addresses the connect starts at. 0 for an index out of range.
    pub fn turn(&self, i: usize) -> usize {
        self.turns
            .get(i)
            .map_or(0, |t| t.fetch_add(1, Ordering::Relaxed))
    }

    /// Number of targets.
    pub fn len(&self) -> usize {
        self.down_until.len()
    }

    /// True when the balancer has no targets (every pick is `None`).
    pub fn is_empty(&self) -> bool {
        self.down_until.is_empty()
    }

    /// `t` as nanoseconds after `base` (saturating at both ends).
    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(FOREVER - 1)
    }

    fn until(&self, i: usize) -> u64 {
        self.down_until
            .get(i)
            .map_or(FOREVER, |u| u.load(Ordering::Relaxed))
    }

    /// The target to try next for a handshake that already tried `exclude`: the next one
    /// in round-robin order that is not down at `now`; when every one left is marked down,
    /// the one whose backoff ends first (SPEC §5: a backoff must never turn a recovered
    /// upstream into an outage). `None` when every target is in `exclude`.
    pub fn pick(&self, now: Instant, exclude: &[usize]) -> Option<usize> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        let start = self.next.load(Ordering::Relaxed) % n;
        let now_ns = self.nanos(now);
        let mut soonest: Option<(u64, usize)> = None;
        for i in (0..n).map(|offset| (start + offset) % n) {
            if exclude.contains(&i) {
                continue;
            }
            let until = self.until(i);
            if now_ns >= until {
                // Concurrent picks may race on `next`: the worst case is an uneven turn.
                self.next.store((i + 1) % n, Ordering::Relaxed);
                return Some(i);
            }
            if soonest.is_none_or(|(best, _)| until < best) {
                soonest = Some((until, i));
            }
        }
        soonest.map(|(_, i)| i)
    }

    /// Marks target `i` down from `now` for `backoff` (SPEC `upstream_backoff`). A mark that
    /// already lasts longer is kept. An index out of range is ignored.
    pub fn mark_down(&self, i: usize, now: Instant, backoff: Duration) {
        let Some(target) = self.down_until.get(i) else {
            return;
        };
        let until = match now.checked_add(backoff) {
            Some(until) => self.nanos(until),
            None => FOREVER,
        };
        target.fetch_max(until, Ordering::Relaxed);
    }

    /// Clears any down mark on target `i` (it answered). An index out of range is ignored.
    pub fn mark_up(&self, i: usize) {
        if let Some(target) = self.down_until.get(i) {
            target.store(0, Ordering::Relaxed);
        }
    }

    /// True when target `i` is marked down at `now` (its backoff ends at the instant it was
    /// marked down until, which is up again). An index out of range counts as down.
    pub fn is_down(&self, i: usize, now: Instant) -> bool {
        self.nanos(now) < self.until(i)
    }
}

/// How a target's host is reached: an IP literal needs no resolution; a name is looked up in
/// the control plane's [`ResolvedNames`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamHost {
    /// An IP address as written in the URL.
    Ip(IpAddr),
    /// A host name, resolved by the control plane.
    Name(Box<str>),
}

impl UpstreamHost {
    /// `host` as the config holds it (IPv6 without brackets).
    pub fn new(host: &str) -> UpstreamHost {
        match host.parse::<IpAddr>() {
            Ok(ip) => UpstreamHost::Ip(ip),
            Err(_) => UpstreamHost::Name(host.into()),
        }
    }

    /// The name to resolve, `None` for an IP literal.
    pub fn name(&self) -> Option<&str> {
        match self {
            UpstreamHost::Ip(_) => None,
            UpstreamHost::Name(name) => Some(name),
        }
    }
}

/// What the resolver last learnt of one host name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameAnswer {
    /// The last good addresses, in the resolver's order (empty: never resolved).
    pub addrs: Arc<[IpAddr]>,
    /// Why the latest lookup failed (`None` after a good one). With `addrs` kept, a name
    /// that fails again is still dialed at its last good addresses (as nginx does).
    pub error: Option<Arc<str>>,
}

/// The control plane's snapshot of every upstream host name: published whole through an
/// atomic pointer swap, read by the workers at connect time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedNames {
    names: HashMap<Box<str>, NameAnswer>,
}

impl ResolvedNames {
    /// The answer for `name`, if the resolver has one (a name not looked up yet has none).
    pub fn get(&self, name: &str) -> Option<&NameAnswer> {
        self.names.get(name)
    }

    /// Records `answer` for `name`.
    pub fn insert(&mut self, name: &str, answer: NameAnswer) {
        self.names.insert(name.into(), answer);
    }

    /// Forgets every name `keep` refuses.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.names.retain(|name, _| keep(name));
    }

    /// Number of names known.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when no name is known.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The addresses to dial a target at, in order, for its connect number `turn`
/// ([`Balancer::turn`]): an IP literal as written; a name's last good addresses, rotated
/// so that connects spread over them, the others following in order for failover. A name
/// with no address (never resolved) is the reason, as a failed connect reports it
/// ("dns: ..."; SPEC §5: that target is failed and the next one tried).
pub fn dial_order(
    host: &UpstreamHost,
    port: u16,
    names: &ResolvedNames,
    turn: usize,
) -> Result<Vec<SocketAddr>, String> {
    let name = match host {
        UpstreamHost::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, port)]),
        UpstreamHost::Name(name) => name,
    };
    let Some(answer) = names.get(name) else {
        return Err("dns: not resolved yet".to_owned());
    };
    if answer.addrs.is_empty() {
        return Err(format!(
            "dns: {}",
            answer.error.as_deref().unwrap_or("no address")
        ));
    }
    let n = answer.addrs.len();
    Ok(answer
        .addrs
        .iter()
        .cycle()
        .skip(turn % n)
        .take(n)
        .map(|ip| SocketAddr::new(*ip, port))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one clock read of these tests: a fixed base instant, offsets added to it.
    #[allow(clippy::disallowed_methods)]
    fn base() -> Instant {
        Instant::now()
    }

    const BACKOFF: Duration = Duration::from_secs(10);

    fn picks(b: &Balancer, now: Instant, count: usize) -> Vec<Option<usize>> {
        (0..count).map(|_| b.pick(now, &[])).collect()
    }

    #[test]
    fn round_robin_order() {
        let now = base();
        let b = Balancer::new(3, now);
        assert_eq!(b.len(), 3);
        assert!(!b.is_empty());
        assert_eq!(picks(&b, now, 7), [0, 1, 2, 0, 1, 2, 0].map(Some).to_vec());
    }

    #[test]
    fn single_target_always_picked() {
        let now = base();
        let b = Balancer::new(1, now);
        assert_eq!(picks(&b, now, 3), vec![Some(0); 3]);
    }

    #[test]
    fn empty_balancer_picks_none() {
        let now = base();
        let b = Balancer::new(0, now);
        assert!(b.is_empty());
        assert_eq!(b.pick(now, &[]), None);
        b.mark_down(0, now, BACKOFF);
        b.mark_up(0);
        assert!(b.is_down(0, now));
    }

    #[test]
    fn skips_down_targets() {
        let now = base();
        let b = Balancer::new(3, now);
        b.mark_down(1, now, BACKOFF);
        assert!(b.is_down(1, now));
        assert!(!b.is_down(0, now));
        assert_eq!(picks(&b, now, 5), [0, 2, 0, 2, 0].map(Some).to_vec());
    }

    #[test]
    fn round_robin_continues_after_the_skipped_one() {
        let now = base();
        let b = Balancer::new(4, now);
        assert_eq!(b.pick(now, &[]), Some(0));
        b.mark_down(1, now, BACKOFF);
        b.mark_down(2, now, BACKOFF);
        assert_eq!(b.pick(now, &[]), Some(3));
        assert_eq!(b.pick(now, &[]), Some(0));
    }

    #[test]
    fn backoff_expires_exactly_at_its_end() {
        let now = base();
        let b = Balancer::new(2, now);
        b.mark_down(0, now, BACKOFF);
        let just_before = now + BACKOFF - Duration::from_nanos(1);
        assert!(b.is_down(0, just_before));
        assert_eq!(b.pick(just_before, &[]), Some(1));
        assert_eq!(b.pick(just_before, &[]), Some(1));
        let end = now + BACKOFF;
        assert!(!b.is_down(0, end));
        assert_eq!(b.pick(end, &[]), Some(0));
        assert_eq!(b.pick(end, &[]), Some(1));
    }

    #[test]
    fn zero_backoff_is_no_backoff() {
        let now = base();
        let b = Balancer::new(1, now);
        b.mark_down(0, now, Duration::ZERO);
        assert!(!b.is_down(0, now));
        assert_eq!(b.pick(now, &[]), Some(0));
    }

    #[test]
    fn longer_mark_is_kept_shorter_one_does_not_shorten_it() {
        let now = base();
        let b = Balancer::new(1, now);
        b.mark_down(0, now, Duration::from_secs(30));
        b.mark_down(0, now + Duration::from_secs(1), Duration::from_secs(1));
        assert!(b.is_down(0, now + Duration::from_secs(29)));
        // A later, longer mark extends it.
        b.mark_down(0, now + Duration::from_secs(25), Duration::from_secs(10));
        assert!(b.is_down(0, now + Duration::from_secs(34)));
        assert!(!b.is_down(0, now + Duration::from_secs(35)));
    }

    #[test]
    fn mark_up_clears_a_mark() {
        let now = base();
        let b = Balancer::new(2, now);
        b.mark_down(0, now, BACKOFF);
        b.mark_up(0);
        assert!(!b.is_down(0, now));
        assert_eq!(b.pick(now, &[]), Some(0));
    }

    #[test]
    fn unrepresentable_backoff_lasts_until_marked_up() {
        let now = base();
        let b = Balancer::new(2, now);
        b.mark_down(0, now, Duration::MAX);
        assert!(b.is_down(0, now + Duration::from_secs(86_400 * 365)));
        // A short mark afterwards does not shorten it.
        b.mark_down(0, now, BACKOFF);
        assert!(b.is_down(0, now + BACKOFF));
        assert_eq!(b.pick(now, &[]), Some(1));
        b.mark_up(0);
        assert!(!b.is_down(0, now));
    }

    #[test]
    fn exclude_list_skips_tried_targets() {
        let now = base();
        let b = Balancer::new(3, now);
        assert_eq!(b.pick(now, &[0]), Some(1));
        assert_eq!(b.pick(now, &[1, 2]), Some(0));
        assert_eq!(b.pick(now, &[0, 1, 2]), None);
        // Out-of-range and repeated entries in `exclude` are harmless.
        assert_eq!(b.pick(now, &[7, 0, 0]), Some(1));
    }

    #[test]
    fn failover_within_one_handshake() {
        // SPEC §5: a failed connect marks one down and the next is tried in the same handshake.
        let now = base();
        let b = Balancer::new(3, now);
        let mut tried = Vec::new();
        let first = b.pick(now, &tried);
        assert_eq!(first, Some(0));
        b.mark_down(0, now, BACKOFF);
        tried.push(0);
        let second = b.pick(now, &tried);
        assert_eq!(second, Some(1));
        b.mark_down(1, now, BACKOFF);
        tried.push(1);
        assert_eq!(b.pick(now, &tried), Some(2));
        tried.push(2);
        // The third one refused too: none left.
        assert_eq!(b.pick(now, &tried), None);
        // A new handshake skips the two marked down.
        assert_eq!(b.pick(now, &[]), Some(2));
    }

    #[test]
    fn all_down_still_tries_each_soonest_to_recover_first() {
        // SPEC §5: when every upstream is marked down, they are still tried, the one whose
        // backoff ends first, then the next; None only once every one was tried.
        let now = base();
        let b = Balancer::new(3, now);
        b.mark_down(1, now, BACKOFF);
        b.mark_down(2, now, BACKOFF * 2);
        b.mark_down(0, now, BACKOFF * 3);
        let mut tried = Vec::new();
        for expected in [1, 2, 0] {
            assert_eq!(b.pick(now, &tried), Some(expected));
            tried.push(expected);
        }
        assert_eq!(b.pick(now, &tried), None);
        // A lone upstream marked down is still tried for every handshake.
        let lone = Balancer::new(1, now);
        lone.mark_down(0, now, Duration::MAX);
        assert_eq!(lone.pick(now, &[]), Some(0));
        assert_eq!(lone.pick(now, &[0]), None);
    }

    #[test]
    fn a_recovered_target_is_preferred_and_round_robin_resumes() {
        let now = base();
        let b = Balancer::new(3, now);
        for i in 0..3 {
            b.mark_down(i, now, BACKOFF);
        }
        b.mark_up(2);
        assert_eq!(b.pick(now, &[]), Some(2));
        assert_eq!(b.pick(now, &[]), Some(2));
        assert_eq!(picks(&b, now + BACKOFF, 3), [0, 1, 2].map(Some).to_vec());
    }

    #[test]
    fn marks_are_shared_across_threads() {
        let now = base();
        let b = std::sync::Arc::new(Balancer::new(2, now));
        let other = b.clone();
        std::thread::spawn(move || other.mark_down(0, now, BACKOFF))
            .join()
            .expect("join");
        assert!(b.is_down(0, now));
        assert_eq!(picks(&b, now, 2), [1, 1].map(Some).to_vec());
    }

    #[test]
    fn out_of_range_indices() {
        let now = base();
        let b = Balancer::new(2, now);
        b.mark_down(5, now, BACKOFF);
        b.mark_up(5);
        assert!(b.is_down(5, now));
        assert_eq!(picks(&b, now, 3), [0, 1, 0].map(Some).to_vec());
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn ip_literals_need_no_resolution() {
        let names = ResolvedNames::default();
        let v4 = UpstreamHost::new("10.0.0.5");
        assert_eq!(v4, UpstreamHost::Ip(ip("10.0.0.5")));
        assert_eq!(v4.name(), None);
        let v6 = UpstreamHost::new("::1");
        assert_eq!(v6, UpstreamHost::Ip(ip("::1")));
        assert_eq!(
            dial_order(&v6, 9000, &names, 7),
            Ok(vec!["[::1]:9000".parse().expect("addr")])
        );
        assert_eq!(UpstreamHost::new("localhost").name(), Some("localhost"));
    }

    #[test]
    fn a_name_never_resolved_is_a_dns_failure() {
        let host = UpstreamHost::new("api.example");
        let mut names = ResolvedNames::default();
        assert_eq!(
            dial_order(&host, 80, &names, 0),
            Err("dns: not resolved yet".to_owned())
        );
        names.insert(
            "api.example",
            NameAnswer {
                addrs: Arc::new([]),
                error: Some("Name or service not known".into()),
            },
        );
        assert_eq!(
            dial_order(&host, 80, &names, 0),
            Err("dns: Name or service not known".to_owned())
        );
    }

    #[test]
    fn several_addresses_rotate_by_turn_and_keep_the_others_for_failover() {
        let host = UpstreamHost::new("api.example");
        let mut names = ResolvedNames::default();
        names.insert(
            "api.example",
            NameAnswer {
                addrs: Arc::new([ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")]),
                // A failing name keeps its last good addresses and is still dialed.
                error: Some("timed out".into()),
            },
        );
        let order = |turn| {
            dial_order(&host, 81, &names, turn)
                .expect("addresses")
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(order(0), ["10.0.0.1:81", "10.0.0.2:81", "10.0.0.3:81"]);
        assert_eq!(order(1), ["10.0.0.2:81", "10.0.0.3:81", "10.0.0.1:81"]);
        assert_eq!(order(5), ["10.0.0.3:81", "10.0.0.1:81", "10.0.0.2:81"]);
        assert_eq!(order(usize::MAX), order(usize::MAX % 3));
    }

    #[test]
    fn turns_count_per_target() {
        let b = Balancer::new(2, base());
        assert_eq!([b.turn(0), b.turn(0), b.turn(1), b.turn(0)], [0, 1, 0, 2]);
        assert_eq!(b.turn(9), 0);
    }

    #[test]
    fn resolved_names_retain_and_len() {
        let mut names = ResolvedNames::default();
        assert!(names.is_empty());
        names.insert("a", NameAnswer::default());
        names.insert("b", NameAnswer::default());
        names.retain(|n| n == "b");
        assert_eq!(names.len(), 1);
        assert!(names.get("a").is_none() && names.get("b").is_some());
    }
}
