//! Loading the fleet's stored state at the start of a session, and writing back what a
//! Redis lost (SPEC §8): the revocations under `{ns}:revocation:*` and every other node's
//! connection hash, read in batches with `SCAN` / `HSCAN` so that no reply is unbounded.
//! Values of the wrong type or shape are logged and skipped.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::link::{within, Ended, Fields, Link, BATCH, MAX_KEEP_SECS, MAX_NODE_SUBJECTS};
use super::wire::{parse_count, RevocationMessage};
use crate::auth::revocation::Revocation;
use crate::clock;

/// Most stored revocations loaded; past it the rest are logged and skipped.
pub const MAX_LOADED: usize = 1_000_000;

impl Link {
    pub(super) async fn load_revocations(
        &mut self,
        conn: &mut MultiplexedConnection,
    ) -> Result<(), Ended> {
        let now = clock::unix_now();
        let pattern = self.names.revocation_pattern();
        let mut loaded = Vec::new();
        let mut cursor = 0u64;
        let mut over = false;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = within(
                "SCAN revocations",
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(BATCH)
                    .query_async(conn),
            )
            .await?;
            if !keys.is_empty() && !over {
                let values: Vec<Option<Vec<u8>>> = within(
                    "MGET revocations",
                    redis::cmd("MGET").arg(&keys).query_async(conn),
                )
                .await?;
                for (key, value) in keys.iter().zip(values) {
                    match value {
                        Some(value) => match RevocationMessage::parse(&value) {
                            Ok(m) if m.keep_until >= now => loaded.push(m),
                            Ok(_) => {}
                            Err(e) => self.skip(format_args!("a stored revocation: {e}")),
                        },
                        // Expired since the SCAN, or not a string.
                        None => self.check_type(conn, key, "string").await?,
                    }
                }
                if loaded.len() > MAX_LOADED {
                    crate::error!(
                        "cluster: more than {MAX_LOADED} stored revocations; the rest are skipped"
                    );
                    over = true;
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let from_others = loaded
            .iter()
            .filter(|m| m.node != self.names.node())
            .count();
        for _ in 0..from_others {
            self.status.received();
        }
        let entries: Vec<(Revocation, u64)> = loaded
            .into_iter()
            .map(|m| (m.revocation, m.keep_until))
            .collect();
        if !entries.is_empty() {
            self.apply(entries).await;
        }
        Ok(())
    }

    /// Re-stores every revocation this gateway knows that Redis lacks (after a restart
    /// without persistence, a flush, or revocations from the local log).
    pub(super) async fn restore_revocations(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<(), Ended> {
        let now = clock::unix_now();
        let at_ms = clock::unix_now_millis();
        let known = self.local.known_revocations();
        for chunk in known.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for (revocation, keep_until) in chunk {
                if *keep_until < now {
                    continue;
                }
                let message = RevocationMessage {
                    node: self.names.node().to_owned(),
                    at_ms,
                    revocation: revocation.clone(),
                    keep_until: *keep_until,
                };
                pipe.cmd("SET")
                    .arg(self.names.revocation_key(revocation))
                    .arg(message.to_json())
                    .arg("NX")
                    .arg("EXAT")
                    .arg((*keep_until).min(now + MAX_KEEP_SECS))
                    .ignore();
            }
            within("SET NX revocations", pipe.query_async::<()>(conn)).await?;
        }
        Ok(())
    }

    pub(super) async fn load_counts(
        &mut self,
        conn: &mut MultiplexedConnection,
    ) -> Result<(), Ended> {
        self.fleet.clear();
        let pattern = self.names.connections_pattern();
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = within(
                "SCAN connections",
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(BATCH)
                    .query_async(conn),
            )
            .await?;
            for key in keys {
                self.load_node(conn, &key).await?;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        self.status.set_remote_nodes(self.fleet.nodes());
        Ok(())
    }

    pub(super) async fn load_node(
        &mut self,
        conn: &mut MultiplexedConnection,
        key: &str,
    ) -> Result<(), Ended> {
        let Some(node) = self.names.node_of_connections_key(key) else {
            self.skip(format_args!("a connections key with a bad node name"));
            return Ok(());
        };
        if node == self.names.node() {
            return Ok(());
        }
        let node = node.to_owned();
        let kind: String = within("TYPE", redis::cmd("TYPE").arg(key).query_async(conn)).await?;
        if kind != "hash" {
            if kind != "none" {
                self.skip(format_args!(
                    "the connections key of node {node:?} is a {kind}"
                ));
            }
            return Ok(());
        }
        let pttl: i64 = within("PTTL", redis::cmd("PTTL").arg(key).query_async(conn)).await?;
        if pttl <= 0 {
            // -1: no lease, so nothing would ever stop it counting; -2: gone.
            if pttl == -1 {
                self.skip(format_args!(
                    "the connections of node {node:?} have no lease"
                ));
            }
            return Ok(());
        }
        let expires = clock::now() + Duration::from_millis(pttl as u64);
        let mut counts = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, fields): (u64, Fields) = within(
                "HSCAN",
                redis::cmd("HSCAN")
                    .arg(key)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(BATCH)
                    .query_async(conn),
            )
            .await?;
            for (sub, count) in fields {
                match (String::from_utf8(sub), parse_count(&count)) {
                    (Ok(sub), Some(count)) if counts.len() < MAX_NODE_SUBJECTS => {
                        counts.push((sub, count));
                    }
                    _ => self.skip(format_args!("a bad count in the connections of {node:?}")),
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        self.fleet.load(&node, &counts, expires);
        Ok(())
    }

    /// Logs a key of the wrong type under the namespace (when it still exists).
    pub(super) async fn check_type(
        &mut self,
        conn: &mut MultiplexedConnection,
        key: &[u8],
        expected: &str,
    ) -> Result<(), Ended> {
        let kind: String = within("TYPE", redis::cmd("TYPE").arg(key).query_async(conn)).await?;
        if kind != expected && kind != "none" {
            self.skip(format_args!("a key under the revocations that is a {kind}"));
        }
        Ok(())
    }
}
