//! The fleet's connection counts as one node sees them (SPEC §8 `per_subject_connections`):
//! [`Fleet`], owned by the cluster task, keeps every other node's counts with its lease;
//! [`RemoteCounts`] (in `gate`, where the handshake reads it) is the sum over the other
//! live nodes per subject, which a worker reads at the handshake (one shard lock, no
//! Redis round trip, no allocation).
//!
//! Counts are absolute per (node, subject), so a message applied twice or late changes
//! nothing, and a node that stops sending (dead, or cut off from us) stops counting when
//! its lease runs out.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::wire::CountsMessage;
pub use crate::gate::fleet::{FleetShare, RemoteCounts};

#[derive(Debug)]
struct NodeCounts {
    counts: HashMap<Box<str>, u32>,
    expires: Instant,
}

/// Every other node's counts and lease; feeds the share's [`RemoteCounts`].
#[derive(Debug)]
pub struct Fleet {
    me: String,
    nodes: HashMap<String, NodeCounts>,
    share: std::sync::Arc<FleetShare>,
}

impl Fleet {
    /// The fleet seen from node `me`, publishing into `share`.
    pub fn new(me: &str, share: std::sync::Arc<FleetShare>) -> Fleet {
        Fleet {
            me: me.to_owned(),
            nodes: HashMap::new(),
            share,
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
            set(&self.share.remote, node, sub, *count);
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
            set(&self.share.remote, entry, sub, *count);
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
                self.share.remote.change(&sub, count, 0);
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
        let share = Arc::new(FleetShare::default());
        let remote = &share.remote;
        let mut fleet = Fleet::new("me", Arc::clone(&share));
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
        let share = Arc::new(FleetShare::default());
        let remote = &share.remote;
        let mut fleet = Fleet::new("me", Arc::clone(&share));
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
        let share = Arc::new(FleetShare::default());
        let remote = &share.remote;
        let mut fleet = Fleet::new("me", Arc::clone(&share));
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
