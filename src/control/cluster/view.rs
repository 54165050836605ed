//! The fleet's connection counts as one node sees them (SPEC §8 `per_subject_connections`):
//! [`Fleet`], owned by the cluster task, keeps every other node's counts with its lease;
//! [`RemoteCounts`] is the sum over the other live nodes per subject, which a worker reads
//! at the handshake (one shard lock, no Redis round trip, no allocation).
//!
//! Counts are absolute per (node, subject), so a message applied twice or late changes
//! nothing, and a node that stops sending (dead, or cut off from us) stops counting when
//! its lease runs out.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::wire::CountsMessage;

const SHARDS: usize = 16;

/// Per subject, the connections that the other live nodes of the fleet hold.
#[derive(Debug)]
pub struct RemoteCounts {
    shards: Vec<Mutex<HashMap<Box<str>, u32>>>,
    hasher: RandomState,
}

impl Default for RemoteCounts {
    fn default() -> Self {
        RemoteCounts {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
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

    /// Number of subjects with connections elsewhere.
    pub fn subjects(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().map(|map| map.len()).unwrap_or(0))
            .sum()
    }

    fn change(&self, sub: &str, from: u32, to: u32) {
        if from == to {
            return;
        }
        let mut shard = self.shard(sub);
        match shard.get_mut(sub) {
            Some(total) => {
                *total = total.saturating_sub(from).saturating_add(to);
                if *total == 0 {
                    shard.remove(sub);
                }
            }
            None if to > from => {
                shard.insert(sub.into(), to - from);
            }
            None => {}
        }
    }
}

#[derive(Debug)]
struct NodeCounts {
    counts: HashMap<Box<str>, u32>,
    expires: Instant,
}

/// Every other node's counts and lease; feeds [`RemoteCounts`].
#[derive(Debug)]
pub struct Fleet {
    me: String,
    nodes: HashMap<String, NodeCounts>,
    remote: std::sync::Arc<RemoteCounts>,
}

impl Fleet {
    /// The fleet seen from node `me`, publishing into `remote`.
    pub fn new(me: &str, remote: std::sync::Arc<RemoteCounts>) -> Fleet {
        Fleet {
            me: me.to_owned(),
            nodes: HashMap::new(),
            remote,
        }
    }

    /// Applies a count message (this node's own are ignored): the sender's lease starts
    /// again from `now`.
    pub fn apply(&mut self, message: &CountsMessage, now: Instant) {
        if message.node == self.me {
            return;
        }
        let lease = Duration::from_millis(message.lease_ms);
        if message.reset {
            self.forget(&message.node);
        }
        let node = self
            .nodes
            .entry(message.node.clone())
            .or_insert_with(|| NodeCounts {
                counts: HashMap::new(),
                expires: now,
            });
        node.expires = now.checked_add(lease).unwrap_or(now);
        for (sub, count) in &message.counts {
            set(&self.remote, node, sub, *count);
        }
    }

    /// Counts loaded from the node's hash, whose lease ends at `expires`; replaces what
    /// was known of that node.
    pub fn load(&mut self, node: &str, counts: &[(String, u32)], expires: Instant) {
        if node == self.me {
            return;
        }
        self.forget(node);
        let entry = self.nodes.entry(node.to_owned()).or_insert(NodeCounts {
            counts: HashMap::new(),
            expires,
        });
        for (sub, count) in counts {
            set(&self.remote, entry, sub, *count);
        }
    }

    /// Drops the nodes whose lease has run out; returns their names.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let dead: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, node)| node.expires <= now)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &dead {
            self.forget(name);
        }
        dead
    }

    /// Forgets every node (before a full reload).
    pub fn clear(&mut self) {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in names {
            self.forget(&name);
        }
    }

    /// Nodes currently counted.
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    fn forget(&mut self, name: &str) {
        if let Some(node) = self.nodes.remove(name) {
            for (sub, count) in node.counts {
                self.remote.change(&sub, count, 0);
            }
        }
    }
}

fn set(remote: &RemoteCounts, node: &mut NodeCounts, sub: &str, count: u32) {
    let before = match node.counts.entry(sub.into()) {
        Entry::Occupied(mut entry) => {
            let before = *entry.get();
            if count == 0 {
                entry.remove();
            } else {
                entry.insert(count);
            }
            before
        }
        Entry::Vacant(entry) => {
            if count > 0 {
                entry.insert(count);
            }
            0
        }
    };
    remote.change(sub, before, count);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn counts(node: &str, reset: bool, lease_ms: u64, counts: &[(&str, u32)]) -> CountsMessage {
        CountsMessage {
            node: node.to_owned(),
            lease_ms,
            reset,
            counts: counts.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect(),
        }
    }

    #[test]
    fn sums_other_nodes_and_ignores_own() {
        let t0 = crate::fuzzing::virtual_epoch();
        let remote = Arc::new(RemoteCounts::default());
        let mut fleet = Fleet::new("me", Arc::clone(&remote));
        fleet.apply(&counts("a", false, 1000, &[("alice", 2), ("bob", 1)]), t0);
        fleet.apply(&counts("b", false, 1000, &[("alice", 3)]), t0);
        fleet.apply(&counts("me", false, 1000, &[("alice", 50)]), t0);
        assert_eq!(remote.get("alice"), 5);
        assert_eq!(remote.get("bob"), 1);
        assert_eq!(remote.get("carol"), 0);
        // Absolute counts: repeating a message changes nothing; a lower count lowers.
        fleet.apply(&counts("a", false, 1000, &[("alice", 2)]), t0);
        assert_eq!(remote.get("alice"), 5);
        fleet.apply(&counts("a", false, 1000, &[("alice", 0), ("bob", 0)]), t0);
        assert_eq!(remote.get("alice"), 3);
        assert_eq!(remote.get("bob"), 0);
        assert_eq!(remote.subjects(), 1);
        assert_eq!(fleet.nodes(), 2);
    }

    #[test]
    fn leases_expire_and_heartbeats_renew() {
        let t0 = crate::fuzzing::virtual_epoch();
        let remote = Arc::new(RemoteCounts::default());
        let mut fleet = Fleet::new("me", Arc::clone(&remote));
        fleet.apply(&counts("a", false, 1000, &[("alice", 2)]), t0);
        fleet.apply(&counts("b", false, 1000, &[("alice", 1)]), t0);
        let t1 = t0 + Duration::from_millis(900);
        fleet.apply(&counts("a", false, 1000, &[]), t1); // heartbeat
        assert!(fleet.expire(t1).is_empty());
        let t2 = t0 + Duration::from_millis(1000);
        assert_eq!(fleet.expire(t2), ["b"]);
        assert_eq!(remote.get("alice"), 2);
        let t3 = t1 + Duration::from_millis(1000);
        assert_eq!(fleet.expire(t3), ["a"]);
        assert_eq!(remote.get("alice"), 0);
        assert_eq!(remote.subjects(), 0);
    }

    #[test]
    fn reset_and_load_replace_a_node() {
        let t0 = crate::fuzzing::virtual_epoch();
        let remote = Arc::new(RemoteCounts::default());
        let mut fleet = Fleet::new("me", Arc::clone(&remote));
        fleet.apply(&counts("a", false, 1000, &[("alice", 2), ("bob", 4)]), t0);
        fleet.apply(&counts("a", true, 1000, &[("alice", 1)]), t0);
        assert_eq!((remote.get("alice"), remote.get("bob")), (1, 0));
        fleet.load("a", &[("carol".to_owned(), 7)], t0 + Duration::from_secs(1));
        assert_eq!((remote.get("alice"), remote.get("carol")), (0, 7));
        fleet.load("me", &[("carol".to_owned(), 7)], t0);
        assert_eq!(remote.get("carol"), 7);
        fleet.clear();
        assert_eq!(remote.subjects(), 0);
        assert_eq!(fleet.nodes(), 0);
    }
}
