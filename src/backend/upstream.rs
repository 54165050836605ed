//! Upstream selection for proxied routes: round-robin over the targets not marked down
//! (SPEC §5 "Upstream selection"). Pure: the caller passes `now`; addresses are resolved at
//! config load and live with the caller, indexed like the balancer's targets.
//!
//! Call order for one client handshake: [`Balancer::pick`] with an empty `exclude`; on a
//! refused or failed connect, [`Balancer::mark_down`] that index and `pick` again with every
//! index tried so far in `exclude`; `None` means none is left (502). After an upstream 101,
//! [`Balancer::mark_up`] clears any earlier mark.

use std::time::{Duration, Instant};

/// Health of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// Eligible for selection.
    Up,
    /// Skipped while `now` is before this instant.
    DownUntil(Instant),
    /// Marked down with a backoff too long for `Instant` to represent: skipped until
    /// [`Balancer::mark_up`].
    DownUntilMarkedUp,
}

/// One upstream of a route, by its index in the route's `upstream` list.
#[derive(Debug, Clone)]
struct Target {
    health: Health,
}

/// Round-robin over a route's upstreams, skipping the ones marked down.
#[derive(Debug, Clone)]
pub struct Balancer {
    targets: Vec<Target>,
    /// Index where the next round-robin scan starts.
    next: usize,
}

impl Balancer {
    /// A balancer over `n_targets` upstreams, all up, the first pick being index 0.
    pub fn new(n_targets: usize) -> Balancer {
        Balancer {
            targets: vec![Target { health: Health::Up }; n_targets],
            next: 0,
        }
    }

    /// Number of targets.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// True when the balancer has no targets (every pick is `None`).
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The next target in round-robin order that is not down at `now` and not in `exclude`
    /// (the indices already tried for this client handshake); `None` when none is left.
    pub fn pick(&mut self, now: Instant, exclude: &[usize]) -> Option<usize> {
        let n = self.targets.len();
        if n == 0 {
            return None;
        }
        let start = self.next % n;
        // SPEC §5: "round-robin over upstreams not marked down; ... none left → 502". A target
        // that is down is not tried as a last resort: its backoff is the operator's choice.
        let chosen = (0..n)
            .map(|offset| (start + offset) % n)
            .find(|i| !exclude.contains(i) && !self.is_down(*i, now))?;
        self.next = (chosen + 1) % n;
        Some(chosen)
    }

    /// Marks target `i` down from `now` for `backoff` (SPEC `upstream_backoff`). A mark that
    /// already lasts longer is kept. An index out of range is ignored.
    pub fn mark_down(&mut self, i: usize, now: Instant, backoff: Duration) {
        let Some(target) = self.targets.get_mut(i) else {
            return;
        };
        let new = match now.checked_add(backoff) {
            Some(until) => Health::DownUntil(until),
            None => Health::DownUntilMarkedUp,
        };
        target.health = match (target.health, new) {
            (Health::DownUntilMarkedUp, _) => Health::DownUntilMarkedUp,
            (Health::DownUntil(old), Health::DownUntil(until)) if old > until => {
                Health::DownUntil(old)
            }
            _ => new,
        };
    }

    /// Clears any down mark on target `i` (it answered). An index out of range is ignored.
    pub fn mark_up(&mut self, i: usize) {
        if let Some(target) = self.targets.get_mut(i) {
            target.health = Health::Up;
        }
    }

    /// True when target `i` is marked down at `now` (its backoff ends at the instant it was
    /// marked down until, which is up again). An index out of range counts as down.
    pub fn is_down(&self, i: usize, now: Instant) -> bool {
        match self.targets.get(i).map(|t| t.health) {
            Some(Health::Up) => false,
            Some(Health::DownUntil(until)) => now < until,
            Some(Health::DownUntilMarkedUp) | None => true,
        }
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

    fn picks(b: &mut Balancer, now: Instant, count: usize) -> Vec<Option<usize>> {
        (0..count).map(|_| b.pick(now, &[])).collect()
    }

    #[test]
    fn round_robin_order() {
        let now = base();
        let mut b = Balancer::new(3);
        assert_eq!(b.len(), 3);
        assert!(!b.is_empty());
        assert_eq!(
            picks(&mut b, now, 7),
            [0, 1, 2, 0, 1, 2, 0].map(Some).to_vec()
        );
    }

    #[test]
    fn single_target_always_picked() {
        let now = base();
        let mut b = Balancer::new(1);
        assert_eq!(picks(&mut b, now, 3), vec![Some(0); 3]);
    }

    #[test]
    fn empty_balancer_picks_none() {
        let now = base();
        let mut b = Balancer::new(0);
        assert!(b.is_empty());
        assert_eq!(b.pick(now, &[]), None);
        b.mark_down(0, now, BACKOFF);
        b.mark_up(0);
        assert!(b.is_down(0, now));
    }

    #[test]
    fn skips_down_targets() {
        let now = base();
        let mut b = Balancer::new(3);
        b.mark_down(1, now, BACKOFF);
        assert!(b.is_down(1, now));
        assert!(!b.is_down(0, now));
        assert_eq!(picks(&mut b, now, 5), [0, 2, 0, 2, 0].map(Some).to_vec());
    }

    #[test]
    fn round_robin_continues_after_the_skipped_one() {
        let now = base();
        let mut b = Balancer::new(4);
        assert_eq!(b.pick(now, &[]), Some(0));
        b.mark_down(1, now, BACKOFF);
        b.mark_down(2, now, BACKOFF);
        assert_eq!(b.pick(now, &[]), Some(3));
        assert_eq!(b.pick(now, &[]), Some(0));
    }

    #[test]
    fn backoff_expires_exactly_at_its_end() {
        let now = base();
        let mut b = Balancer::new(2);
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
        let mut b = Balancer::new(1);
        b.mark_down(0, now, Duration::ZERO);
        assert!(!b.is_down(0, now));
        assert_eq!(b.pick(now, &[]), Some(0));
    }

    #[test]
    fn longer_mark_is_kept_shorter_one_does_not_shorten_it() {
        let now = base();
        let mut b = Balancer::new(1);
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
        let mut b = Balancer::new(2);
        b.mark_down(0, now, BACKOFF);
        b.mark_up(0);
        assert!(!b.is_down(0, now));
        assert_eq!(b.pick(now, &[]), Some(0));
    }

    #[test]
    fn unrepresentable_backoff_lasts_until_marked_up() {
        let now = base();
        let mut b = Balancer::new(2);
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
        let mut b = Balancer::new(3);
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
        let mut b = Balancer::new(3);
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
    fn all_down_picks_none_until_one_recovers() {
        let now = base();
        let mut b = Balancer::new(3);
        for i in 0..3 {
            b.mark_down(i, now, BACKOFF);
        }
        assert_eq!(b.pick(now, &[]), None);
        assert_eq!(b.pick(now + BACKOFF / 2, &[]), None);
        b.mark_up(2);
        assert_eq!(b.pick(now, &[]), Some(2));
        assert_eq!(b.pick(now, &[]), Some(2));
        assert_eq!(
            picks(&mut b, now + BACKOFF, 3),
            [0, 1, 2].map(Some).to_vec()
        );
    }

    #[test]
    fn out_of_range_indices() {
        let now = base();
        let mut b = Balancer::new(2);
        b.mark_down(5, now, BACKOFF);
        b.mark_up(5);
        assert!(b.is_down(5, now));
        assert_eq!(picks(&mut b, now, 3), [0, 1, 0].map(Some).to_vec());
    }
}
