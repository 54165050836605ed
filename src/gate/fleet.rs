//! What the fleet link (SPEC §8, `control::cluster`) shares with the handshake, in the
//! decisions layer so that the workers read it without knowing the control plane:
//! per subject, the connections on the other live gateways ([`RemoteCounts`]); whether new
//! handshakes are admitted (`on_unavailable = "refuse"` while Redis is away); and where a
//! worker reports its subject counts and failed tokens ([`FleetReporter`], which only sends
//! on a channel: a worker never waits for the fleet).
//!
//! Without `[cluster]` the share stays empty: no remote count, always admitting, no reporter.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Where workers report what the fleet must know; implemented by the fleet link.
pub trait FleetReporter: Send + Sync + std::fmt::Debug {
    /// `sub`'s local connection count changed.
    fn subject_changed(&self, sub: &str);
    /// A token failed from `key` (the address's budget key, `limits::budget_key`).
    fn auth_failed(&self, key: IpAddr);
}

/// The fleet's state as the handshake reads it.
#[derive(Debug)]
pub struct FleetShare {
    /// Per subject, connections on the other live gateways.
    pub remote: RemoteCounts,
    reporter: OnceLock<Arc<dyn FleetReporter>>,
    admitting: AtomicBool,
}

impl Default for FleetShare {
    fn default() -> Self {
        FleetShare {
            remote: RemoteCounts::default(),
            reporter: OnceLock::new(),
            admitting: AtomicBool::new(true),
        }
    }
}

impl FleetShare {
    /// Connects the fleet link (once; a second call is ignored).
    pub fn set_reporter(&self, reporter: Arc<dyn FleetReporter>) {
        let _ = self.reporter.set(reporter);
    }

    /// Whether a fleet link is connected (else there is nothing to look up or report).
    pub fn active(&self) -> bool {
        self.reporter.get().is_some()
    }

    /// Whether a new handshake may proceed (false: 503, SPEC §8 `on_unavailable = "refuse"`).
    pub fn admits(&self) -> bool {
        self.admitting.load(Ordering::Relaxed)
    }

    /// Set by the fleet link when its state changes.
    pub fn set_admitting(&self, admitting: bool) {
        self.admitting.store(admitting, Ordering::Relaxed);
    }

    /// Reports a changed local count of `sub` (nothing without a fleet).
    pub fn subject_changed(&self, sub: &str) {
        if let Some(reporter) = self.reporter.get() {
            reporter.subject_changed(sub);
        }
    }

    /// Reports a failed token from budget key `key` (nothing without a fleet).
    pub fn auth_failed(&self, key: IpAddr) {
        if let Some(reporter) = self.reporter.get() {
            reporter.auth_failed(key);
        }
    }
}

const SHARDS: usize = 16;

/// Per subject, the connections that the other live nodes of the fleet hold.
#[derive(Debug)]
pub struct RemoteCounts {
    shards: Vec<Mutex<HashMap<Box<str>, u32>>>,
    hasher: RandomState,
    total: AtomicU64,
}

impl Default for RemoteCounts {
    fn default() -> Self {
        RemoteCounts {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            total: AtomicU64::new(0),
        }
    }
}

impl RemoteCounts {
    fn shard(&self, sub: &str) -> MutexGuard<'_, HashMap<Box<str>, u32>> {
        let index = (self.hasher.hash_one(sub) as usize) % SHARDS;
        // A poisoned shard only means a panic elsewhere mid-update; the counts stay usable.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Connections of `sub` on the other live nodes.
    pub fn get(&self, sub: &str) -> u32 {
        self.shard(sub).get(sub).copied().unwrap_or(0)
    }

    /// Connections on the other live nodes, all subjects together.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Number of subjects with connections elsewhere.
    pub fn subjects(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().map(|map| map.len()).unwrap_or(0))
            .sum()
    }

    /// Moves `sub`'s total from one node's `from` to its `to` (the fleet link's side).
    pub fn change(&self, sub: &str, from: u32, to: u32) {
        if from == to {
            return;
        }
        let mut shard = self.shard(sub);
        let (old, new) = match shard.get_mut(sub) {
            Some(total) => {
                let old = *total;
                *total = total.saturating_sub(from).saturating_add(to);
                let new = *total;
                if new == 0 {
                    shard.remove(sub);
                }
                (old, new)
            }
            None if to > from => {
                shard.insert(sub.into(), to - from);
                (0, to - from)
            }
            None => (0, 0),
        };
        drop(shard);
        if new >= old {
            self.total
                .fetch_add(u64::from(new - old), Ordering::Relaxed);
        } else {
            self.total
                .fetch_sub(u64::from(old - new), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl FleetReporter for Recorder {
        fn subject_changed(&self, sub: &str) {
            if let Ok(mut v) = self.0.lock() {
                v.push(format!("sub {sub}"));
            }
        }
        fn auth_failed(&self, key: IpAddr) {
            if let Ok(mut v) = self.0.lock() {
                v.push(format!("ip {key}"));
            }
        }
    }

    #[test]
    fn without_a_fleet_nothing_is_reported_and_everything_admitted() {
        let share = FleetShare::default();
        assert!(share.admits());
        share.subject_changed("alice");
        share.auth_failed("10.0.0.1".parse().expect("ip"));
        assert_eq!(share.remote.get("alice"), 0);
        let recorder = Arc::new(Recorder::default());
        share.set_reporter(recorder.clone());
        share.subject_changed("alice");
        share.auth_failed("10.0.0.1".parse().expect("ip"));
        let seen = recorder.0.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(seen, ["sub alice", "ip 10.0.0.1"]);
        share.set_admitting(false);
        assert!(!share.admits());
    }

    #[test]
    fn remote_totals_move_with_changes() {
        let remote = RemoteCounts::default();
        remote.change("a", 0, 3);
        remote.change("a", 0, 2);
        assert_eq!(remote.get("a"), 5);
        assert_eq!(remote.total(), 5);
        remote.change("a", 3, 1);
        assert_eq!(remote.get("a"), 3);
        remote.change("a", 3, 0);
        assert_eq!(remote.get("a"), 0);
        assert_eq!(remote.subjects(), 0);
        remote.change("b", 4, 0); // unknown: nothing to take
        assert_eq!(remote.subjects(), 0);
        assert_eq!(remote.total(), 0);
    }
}
