//! What the fleet writes to Redis (SPEC §8), sans-IO: key and channel names, and the three
//! kinds of channel message with their parsers. Every parser treats its input as hostile:
//! a payload from the channel or a value under the namespace may have been written by
//! anything that can reach the Redis, so each one is bounded, checked and refused with a
//! [`WireError`] (logged and skipped by the caller), never a panic.
//!
//! | key / channel | type | holds |
//! |---|---|---|
//! | `{ns}:revocation:jti:{jti}` | string, `EXPIREAT keep_until` | a revocation message |
//! | `{ns}:revocation:sub:{before}:{sub}` | string, `EXPIREAT keep_until` | a revocation message |
//! | `{ns}:connections:{node}` | hash `sub → count`, `PEXPIRE lease` | live connections per subject |
//! | `{ns}:alive:{node}` | string, `PX lease` | the node's liveness |
//! | `{ns}:revocations` | channel | revocation messages |
//! | `{ns}:connections` | channel | count messages (changes, heartbeats, full resets) |
//! | `{ns}:auth_failures` | channel | failed-token counts per address |
//!
//! A `sub` entry's key carries its `before`, so that two revocations of one subject with
//! different `before` are two keys and no write can narrow an earlier one (the gateway
//! merges them on load, as
//! [`RevocationSet::insert`](crate::auth::revocation::RevocationSet::insert) does).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::auth::revocation::{Revocation, MAX_ID_BYTES};
use crate::config::is_node_name;

/// Message format version written and read.
pub const VERSION: u64 = 1;

/// Largest channel payload or stored value parsed, in bytes; larger ones are skipped.
pub const MAX_PAYLOAD: usize = 2 * 1024 * 1024;

/// Most entries one count or failure message carries (the writer splits larger batches):
/// with ids of at most [`MAX_ID_BYTES`], a message stays under [`MAX_PAYLOAD`].
pub const MAX_ENTRIES: usize = 1000;

// === names ===

/// The keys and channels of one fleet (`cluster.namespace`) as seen by one node.
#[derive(Debug, Clone)]
pub struct Names {
    namespace: String,
    node: String,
}

impl Names {
    /// Names under `namespace` for the node `node`.
    pub fn new(namespace: &str, node: &str) -> Names {
        Names {
            namespace: namespace.to_owned(),
            node: node.to_owned(),
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The key a revocation is stored under.
    pub fn revocation_key(&self, r: &Revocation) -> String {
        match r {
            Revocation::Jti { jti, .. } => format!("{}:revocation:jti:{jti}", self.namespace),
            Revocation::Sub { sub, before } => {
                format!("{}:revocation:sub:{before}:{sub}", self.namespace)
            }
        }
    }

    /// `SCAN MATCH` pattern of every stored revocation (the namespace holds no glob
    /// character: `config::cluster`).
    pub fn revocation_pattern(&self) -> String {
        format!("{}:revocation:*", self.namespace)
    }

    /// The hash of `node`'s connection counts.
    pub fn connections_key(&self, node: &str) -> String {
        format!("{}:connections:{node}", self.namespace)
    }

    /// The key whose presence says Redis still holds `node`'s state (outside the
    /// connection hashes' `SCAN` pattern).
    pub fn alive_key(&self, node: &str) -> String {
        format!("{}:alive:{node}", self.namespace)
    }

    /// `SCAN MATCH` pattern of every node's connection hash.
    pub fn connections_pattern(&self) -> String {
        format!("{}:connections:*", self.namespace)
    }

    /// The node a connection hash key belongs to.
    pub fn node_of_connections_key<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.namespace.as_str())?
            .strip_prefix(":connections:")
            .filter(|node| is_node_name(node))
    }

    /// The channel revocations are published on.
    pub fn revocations_channel(&self) -> String {
        format!("{}:revocations", self.namespace)
    }

    /// The channel connection counts are published on.
    pub fn connections_channel(&self) -> String {
        format!("{}:connections", self.namespace)
    }

    /// The channel failed-token counts are published on.
    pub fn auth_failures_channel(&self) -> String {
        format!("{}:auth_failures", self.namespace)
    }
}

// === messages ===

/// A revocation as published on `{ns}:revocations` and stored under its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationMessage {
    /// The node that took the `POST /revoke`.
    pub node: String,
    /// Unix milliseconds at publication (for the propagation latency).
    pub at_ms: u64,
    /// What is revoked.
    pub revocation: Revocation,
    /// Unix seconds until which the entry is kept (its TTL in Redis).
    pub keep_until: u64,
}

/// Connection counts of one node, on `{ns}:connections`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountsMessage {
    /// The node whose counts these are.
    pub node: String,
    /// Its lease, in milliseconds: its counts stop counting this long after its last
    /// message.
    pub lease_ms: u64,
    /// The node's earlier counts are forgotten first (a full state follows, in this
    /// message and the ones after it).
    pub reset: bool,
    /// Absolute counts per subject (0: none left); empty in a heartbeat.
    pub counts: Vec<(String, u32)>,
}

/// Failed token verifications per address since the node's last message, on
/// `{ns}:auth_failures`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailuresMessage {
    /// The node where they failed.
    pub node: String,
    /// Failures per address (already reduced to the `ipv6_prefix` network).
    pub failures: Vec<(IpAddr, u32)>,
}

/// Why a payload was skipped. `Display` never quotes the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Larger than [`MAX_PAYLOAD`].
    TooLarge,
    /// Not JSON of the expected shape.
    Shape,
    /// A `v` other than [`VERSION`].
    Version,
    /// The node name is not one.
    Node,
    /// A revocation breaks a rule of `POST /revoke` (id, jti/sub, exp/before).
    Revocation,
    /// A subject id breaks the id rules.
    Subject,
    /// Not an IP address.
    Address,
    /// More than [`MAX_ENTRIES`] entries.
    TooManyEntries,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WireError::TooLarge => "payload too large",
            WireError::Shape => "not a message of the expected shape",
            WireError::Version => "unknown message version",
            WireError::Node => "bad node name",
            WireError::Revocation => "bad revocation",
            WireError::Subject => "bad subject id",
            WireError::Address => "bad address",
            WireError::TooManyEntries => "too many entries",
        })
    }
}

#[derive(Serialize, Deserialize)]
struct RevocationJson {
    v: u64,
    node: String,
    at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    before: Option<u64>,
    keep_until: u64,
}

#[derive(Serialize, Deserialize)]
struct CountsJson {
    v: u64,
    node: String,
    lease_ms: u64,
    #[serde(default)]
    reset: bool,
    counts: Vec<(String, u32)>,
}

#[derive(Serialize, Deserialize)]
struct FailuresJson {
    v: u64,
    node: String,
    failures: Vec<(String, u32)>,
}

/// Serializing these plain structs into memory cannot fail; an empty object would be
/// skipped by every reader.
fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

fn from_json<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, WireError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(WireError::TooLarge);
    }
    // Read the version first so that a newer format is named as such.
    #[derive(Deserialize)]
    struct Probe {
        v: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(payload).map_err(|_| WireError::Shape)?;
    if probe.v.and_then(|v| v.as_u64()) != Some(VERSION) {
        return Err(WireError::Version);
    }
    serde_json::from_slice(payload).map_err(|_| WireError::Shape)
}

fn check_node(node: &str) -> Result<(), WireError> {
    if is_node_name(node) {
        Ok(())
    } else {
        Err(WireError::Node)
    }
}

fn check_subject(sub: &str) -> Result<(), WireError> {
    let probe = Revocation::Sub {
        sub: sub.to_owned(),
        before: 0,
    };
    if sub.len() <= MAX_ID_BYTES && probe.validate().is_ok() {
        Ok(())
    } else {
        Err(WireError::Subject)
    }
}

impl RevocationMessage {
    /// The JSON published and stored.
    pub fn to_json(&self) -> String {
        let (jti, exp, sub, before) = match &self.revocation {
            Revocation::Jti { jti, exp } => (Some(jti.clone()), *exp, None, None),
            Revocation::Sub { sub, before } => (None, None, Some(sub.clone()), Some(*before)),
        };
        to_json(&RevocationJson {
            v: VERSION,
            node: self.node.clone(),
            at_ms: self.at_ms,
            jti,
            exp,
            sub,
            before,
            keep_until: self.keep_until,
        })
    }

    /// Parses a published or stored revocation.
    pub fn parse(payload: &[u8]) -> Result<RevocationMessage, WireError> {
        let json: RevocationJson = from_json(payload)?;
        check_node(&json.node)?;
        let revocation = match (json.jti, json.sub) {
            (Some(jti), None) if json.before.is_none() => Revocation::Jti { jti, exp: json.exp },
            (None, Some(sub)) if json.exp.is_none() => match json.before {
                Some(before) => Revocation::Sub { sub, before },
                None => return Err(WireError::Revocation),
            },
            _ => return Err(WireError::Revocation),
        };
        revocation.validate().map_err(|_| WireError::Revocation)?;
        Ok(RevocationMessage {
            node: json.node,
            at_ms: json.at_ms,
            revocation,
            keep_until: json.keep_until,
        })
    }
}

impl CountsMessage {
    /// The JSON published.
    pub fn to_json(&self) -> String {
        to_json(&CountsJson {
            v: VERSION,
            node: self.node.clone(),
            lease_ms: self.lease_ms,
            reset: self.reset,
            counts: self.counts.clone(),
        })
    }

    /// Parses a published count message.
    pub fn parse(payload: &[u8]) -> Result<CountsMessage, WireError> {
        let json: CountsJson = from_json(payload)?;
        check_node(&json.node)?;
        if json.counts.len() > MAX_ENTRIES {
            return Err(WireError::TooManyEntries);
        }
        for (sub, _) in &json.counts {
            check_subject(sub)?;
        }
        Ok(CountsMessage {
            node: json.node,
            lease_ms: json.lease_ms,
            reset: json.reset,
            counts: json.counts,
        })
    }
}

impl FailuresMessage {
    /// The JSON published.
    pub fn to_json(&self) -> String {
        to_json(&FailuresJson {
            v: VERSION,
            node: self.node.clone(),
            failures: self
                .failures
                .iter()
                .map(|(ip, n)| (ip.to_string(), *n))
                .collect(),
        })
    }

    /// Parses a published failure message.
    pub fn parse(payload: &[u8]) -> Result<FailuresMessage, WireError> {
        let json: FailuresJson = from_json(payload)?;
        check_node(&json.node)?;
        if json.failures.len() > MAX_ENTRIES {
            return Err(WireError::TooManyEntries);
        }
        let failures = json
            .failures
            .into_iter()
            .map(|(ip, n)| ip.parse().map(|ip| (ip, n)).map_err(|_| WireError::Address))
            .collect::<Result<_, _>>()?;
        Ok(FailuresMessage {
            node: json.node,
            failures,
        })
    }
}

/// A stored count: a hash value that is not a decimal `u32` is skipped.
pub fn parse_count(value: &[u8]) -> Option<u32> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names::new("fleet", "gw-1")
    }

    #[test]
    fn keys_and_channels() {
        let n = names();
        let jti = Revocation::Jti {
            jti: "a:b*".to_owned(),
            exp: None,
        };
        let sub = Revocation::Sub {
            sub: "alice".to_owned(),
            before: 12,
        };
        assert_eq!(n.revocation_key(&jti), "fleet:revocation:jti:a:b*");
        assert_eq!(n.revocation_key(&sub), "fleet:revocation:sub:12:alice");
        assert_eq!(n.revocation_pattern(), "fleet:revocation:*");
        assert_eq!(n.connections_key("gw-2"), "fleet:connections:gw-2");
        assert_eq!(n.connections_pattern(), "fleet:connections:*");
        assert_eq!(n.alive_key("gw-2"), "fleet:alive:gw-2");
        assert_eq!(
            n.node_of_connections_key("fleet:connections:gw-2"),
            Some("gw-2")
        );
        assert_eq!(n.node_of_connections_key("fleet:connections:"), None);
        assert_eq!(n.node_of_connections_key("other:connections:gw-2"), None);
        assert_eq!(n.revocations_channel(), "fleet:revocations");
        assert_eq!(n.connections_channel(), "fleet:connections");
        assert_eq!(n.auth_failures_channel(), "fleet:auth_failures");
    }

    #[test]
    fn revocation_round_trip() {
        for revocation in [
            Revocation::Jti {
                jti: "j\"1é".to_owned(),
                exp: Some(99),
            },
            Revocation::Jti {
                jti: "j2".to_owned(),
                exp: None,
            },
            Revocation::Sub {
                sub: "alice".to_owned(),
                before: 5,
            },
        ] {
            let message = RevocationMessage {
                node: "gw-1".to_owned(),
                at_ms: 1_800_000_000_123,
                revocation,
                keep_until: 1_800_000_100,
            };
            let json = message.to_json();
            assert_eq!(RevocationMessage::parse(json.as_bytes()), Ok(message));
        }
    }

    #[test]
    fn revocation_refusals() {
        let cases: &[(&str, WireError)] = &[
            ("", WireError::Shape),
            ("not json", WireError::Shape),
            ("[1,2]", WireError::Shape),
            (r#"{"node":"n"}"#, WireError::Version),
            (r#"{"v":2,"node":"n"}"#, WireError::Version),
            (r#"{"v":"1"}"#, WireError::Version),
            (
                r#"{"v":1,"node":"n","at_ms":1,"keep_until":1}"#,
                WireError::Revocation,
            ),
            (
                r#"{"v":1,"node":"n","at_ms":1,"jti":"a","sub":"b","keep_until":1}"#,
                WireError::Revocation,
            ),
            (
                r#"{"v":1,"node":"n","at_ms":1,"sub":"b","keep_until":1}"#,
                WireError::Revocation,
            ),
            (
                r#"{"v":1,"node":"n","at_ms":1,"jti":"a","before":3,"keep_until":1}"#,
                WireError::Revocation,
            ),
            (
                r#"{"v":1,"node":"n","at_ms":1,"jti":"","keep_until":1}"#,
                WireError::Revocation,
            ),
            (
                r#"{"v":1,"node":"n","at_ms":1,"jti":"a\u0000","keep_until":1}"#,
                WireError::Revocation,
            ),
            (
                r#"{"v":1,"node":"a b","at_ms":1,"jti":"a","keep_until":1}"#,
                WireError::Node,
            ),
            (
                r#"{"v":1,"node":"n","at_ms":-1,"jti":"a","keep_until":1}"#,
                WireError::Shape,
            ),
            (
                r#"{"v":1,"node":"n","at_ms":1,"jti":"a","jti":"b","keep_until":1}"#,
                WireError::Shape,
            ),
        ];
        for (payload, want) in cases {
            assert_eq!(
                RevocationMessage::parse(payload.as_bytes()),
                Err(*want),
                "{payload}"
            );
        }
        let long = format!(
            r#"{{"v":1,"node":"n","at_ms":1,"jti":"{}","keep_until":1}}"#,
            "x".repeat(MAX_ID_BYTES + 1)
        );
        assert_eq!(
            RevocationMessage::parse(long.as_bytes()),
            Err(WireError::Revocation)
        );
        let huge = vec![b' '; MAX_PAYLOAD + 1];
        assert_eq!(RevocationMessage::parse(&huge), Err(WireError::TooLarge));
    }

    #[test]
    fn counts_round_trip_and_refusals() {
        let message = CountsMessage {
            node: "gw-1".to_owned(),
            lease_ms: 2000,
            reset: true,
            counts: vec![("alice".to_owned(), 3), ("bob".to_owned(), 0)],
        };
        let json = message.to_json();
        assert_eq!(CountsMessage::parse(json.as_bytes()), Ok(message));
        // `reset` may be left out.
        assert_eq!(
            CountsMessage::parse(br#"{"v":1,"node":"n","lease_ms":5,"counts":[]}"#)
                .map(|m| m.reset),
            Ok(false)
        );
        for (payload, want) in [
            (
                r#"{"v":1,"node":"n","lease_ms":5,"counts":[["a",-1]]}"#,
                WireError::Shape,
            ),
            (
                r#"{"v":1,"node":"n","lease_ms":5,"counts":[["a",4294967296]]}"#,
                WireError::Shape,
            ),
            (
                r#"{"v":1,"node":"n","lease_ms":5,"counts":[["",1]]}"#,
                WireError::Subject,
            ),
            (
                r#"{"v":1,"node":"n","lease_ms":5,"counts":[["a\n",1]]}"#,
                WireError::Subject,
            ),
            (r#"{"v":1,"node":"n","counts":[]}"#, WireError::Shape),
        ] {
            assert_eq!(
                CountsMessage::parse(payload.as_bytes()),
                Err(want),
                "{payload}"
            );
        }
        let many: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("[\"s{i}\",1]")).collect();
        let payload = format!(
            r#"{{"v":1,"node":"n","lease_ms":5,"counts":[{}]}}"#,
            many.join(",")
        );
        assert_eq!(
            CountsMessage::parse(payload.as_bytes()),
            Err(WireError::TooManyEntries)
        );
    }

    #[test]
    fn failures_round_trip_and_refusals() {
        let message = FailuresMessage {
            node: "gw-1".to_owned(),
            failures: vec![
                ("203.0.113.7".parse().expect("ip"), 3),
                ("2001:db8::".parse().expect("ip"), 1),
            ],
        };
        let json = message.to_json();
        assert_eq!(FailuresMessage::parse(json.as_bytes()), Ok(message));
        assert_eq!(
            FailuresMessage::parse(br#"{"v":1,"node":"n","failures":[["nope",1]]}"#),
            Err(WireError::Address)
        );
    }

    #[test]
    fn stored_counts() {
        assert_eq!(parse_count(b"17"), Some(17));
        assert_eq!(parse_count(b"-1"), None);
        assert_eq!(parse_count(b"x"), None);
        assert_eq!(parse_count(b"\xff"), None);
        assert_eq!(parse_count(b"99999999999"), None);
    }
}
