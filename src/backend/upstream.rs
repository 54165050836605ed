//! Upstream selection for proxied routes: round-robin over the targets not marked down
//! (SPEC §5 "Upstream selection"). Pure: the caller passes `now`; addresses are resolved at
//! config load and live with the caller, indexed like the balancer's targets.
//!
//! One balancer per route per process, shared by every worker (atomics, no lock): a
//! failed connect seen by one worker spares the others the same failed connect.
//!
//! Call order for one client handshake: [`Balancer::pick`] with an empty `exclude`; on a
//! refused or failed connect, [`Balancer::mark_down`] that index and `pick` again with every
//! index tried so far in `exclude`; `None` means every target was tried (502). After an
//! upstream connect succeeds, [`Balancer::mark_up`] clears any earlier mark.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
}

impl Balancer {
    /// A balancer over `n_targets` upstreams, all up, the first pick being index 0; marks
    /// count from `base` (any instant not after the first `now` passed in).
    pub fn new(n_targets: usize, base: Instant) -> Balancer {
        Balancer {
            base,
            down_until: (0..n_targets).map(|_| AtomicU64::new(0)).collect(),
            next: AtomicUsize::new(0),
        }
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
}
