//! `[cluster]`: a fleet of gateways sharing revocations, per-subject connection counts and
//! failed-token budgets through Redis (SPEC §8). Without the section every gateway is on
//! its own.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::units::DurationStr;
use super::Problems;

/// Longest `cluster.node`, in bytes (it is part of a Redis key and of every message).
pub const MAX_NODE_BYTES: usize = 128;

/// Longest `cluster.namespace`, in bytes.
pub const MAX_NAMESPACE_BYTES: usize = 64;

/// Shortest `cluster.lease`: renewals run every third of it, and a lease much shorter than
/// a second would turn one slow Redis reply into a node declared dead.
pub const MIN_LEASE: Duration = Duration::from_secs(1);

/// Longest `cluster.lease`: a dead gateway's connections keep counting this long.
pub const MAX_LEASE: Duration = Duration::from_secs(3600);

/// `[cluster]` as written; `redis` is required when the section is present.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// `redis://[user:pass@]host[:port][/db]`, `rediss://...` (TLS) or `redis+unix:///path`.
    pub redis: Option<String>,
    /// This gateway's name in the fleet; default `hostname:port` (the first listener's).
    pub node: Option<String>,
    /// Key and channel prefix.
    pub namespace: String,
    /// How long this node's connection counts outlive it if it dies.
    pub lease: DurationStr,
    /// `"local"` or `"refuse"`: what handshakes get while Redis is unreachable.
    pub on_unavailable: String,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            redis: None,
            node: None,
            namespace: "wsgate".to_owned(),
            lease: DurationStr::secs(15),
            on_unavailable: "local".to_owned(),
        }
    }
}

/// `[cluster]`, resolved.
#[derive(Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The Redis URL as written (it may hold a password: never printed, see `Debug`).
    pub redis: String,
    /// This gateway's name; `None`: `hostname:port`, named once the listeners are bound
    /// (a `:0` port is only known then).
    pub node: Option<String>,
    /// Key and channel prefix.
    pub namespace: String,
    /// Lease of this node's connection counts.
    pub lease: Duration,
    /// What handshakes get while Redis is unreachable.
    pub on_unavailable: OnUnavailable,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("redis", &redacted_url(&self.redis))
            .field("node", &self.node)
            .field("namespace", &self.namespace)
            .field("lease", &self.lease)
            .field("on_unavailable", &self.on_unavailable)
            .finish()
    }
}

/// `cluster.on_unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// Keep serving with local state (local caps, local revocations queued for Redis).
    Local,
    /// Answer new handshakes 503 until Redis is back.
    Refuse,
}

/// The URL with any password replaced by `***`, for logs and errors.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => format!("{scheme}://{authority}{path}"),
    }
}

/// Whether `namespace` may prefix keys, channels and `SCAN MATCH` patterns: letters,
/// digits, `_`, `-`, `.`, `:` (no glob character, no space).
fn is_namespace(namespace: &str) -> bool {
    !namespace.is_empty()
        && namespace.len() <= MAX_NAMESPACE_BYTES
        && namespace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// Whether `node` can name a gateway: printable ASCII without spaces.
pub fn is_node_name(node: &str) -> bool {
    !node.is_empty() && node.len() <= MAX_NODE_BYTES && node.bytes().all(|b| b.is_ascii_graphic())
}

pub(super) fn cluster(raw: &ClusterSection, problems: &mut Problems) -> Option<Cluster> {
    let Some(redis) = raw.redis.clone() else {
        problems.error(
            "cluster.redis",
            "required: a URL like \"redis://127.0.0.1:6379/0\"",
        );
        return None;
    };
    // The URL is never quoted back: it may carry a password.
    let scheme = redis.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("redis" | "rediss" | "redis+unix" | "unix") => {
            // Parsing only: no name is resolved and nothing is connected.
            if redis::Client::open(redis.as_str()).is_err() {
                problems.error("cluster.redis", "not a usable Redis URL");
            }
        }
        _ => problems.error(
            "cluster.redis",
            "expected a redis://, rediss:// or redis+unix:// URL",
        ),
    }
    if let Some(node) = &raw.node {
        if !is_node_name(node) {
            problems.error(
                "cluster.node",
                format!("must be 1 to {MAX_NODE_BYTES} printable ASCII characters without spaces"),
            );
        }
    }
    if !is_namespace(&raw.namespace) {
        problems.error(
            "cluster.namespace",
            format!(
                "must be 1 to {MAX_NAMESPACE_BYTES} letters, digits or _ - . : (it prefixes keys and channels)"
            ),
        );
    }
    let lease = raw.lease.0;
    if lease < MIN_LEASE || lease > MAX_LEASE {
        problems.error("cluster.lease", "must be between 1s and 1h");
    }
    let on_unavailable = match raw.on_unavailable.as_str() {
        "local" => OnUnavailable::Local,
        "refuse" => OnUnavailable::Refuse,
        other => {
            problems.error(
                "cluster.on_unavailable",
                format!("expected \"local\" or \"refuse\", got {other:?}"),
            );
            OnUnavailable::Local
        }
    };
    Some(Cluster {
        redis,
        node: raw.node.clone(),
        namespace: raw.namespace.clone(),
        lease,
        on_unavailable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &ClusterSection) -> (Option<Cluster>, Vec<String>) {
        let mut problems = Problems::default();
        let cluster = cluster(raw, &mut problems);
        let errors = problems
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect();
        (cluster, errors)
    }

    fn with_redis(url: &str) -> ClusterSection {
        ClusterSection {
            redis: Some(url.to_owned()),
            ..ClusterSection::default()
        }
    }

    #[test]
    fn defaults() {
        let (cluster, errors) = check(&with_redis("redis://127.0.0.1:6379/0"));
        assert!(errors.is_empty(), "{errors:?}");
        let cluster = cluster.expect("resolved");
        assert_eq!(cluster.namespace, "wsgate");
        assert_eq!(cluster.lease, Duration::from_secs(15));
        assert_eq!(cluster.on_unavailable, OnUnavailable::Local);
        assert_eq!(cluster.node, None);
    }

    #[test]
    fn urls() {
        for good in [
            "redis://127.0.0.1:6379/0",
            "redis://user:pass@host:6380",
            "rediss://redis.example.com",
            "redis+unix:///run/redis.sock",
        ] {
            let (_, errors) = check(&with_redis(good));
            assert!(errors.is_empty(), "{good}: {errors:?}");
        }
        for bad in [
            "http://127.0.0.1:6379",
            "127.0.0.1:6379",
            "",
            "redis://:99999999",
        ] {
            let (_, errors) = check(&with_redis(bad));
            assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
            assert!(errors[0].starts_with("cluster.redis: "), "{errors:?}");
        }
        // A password never reaches an error or a Debug print.
        let (_, errors) = check(&with_redis("http://u:s3cret@h"));
        assert!(!errors[0].contains("s3cret"));
        let (cluster, _) = check(&with_redis("redis://u:s3cret@h:1/2"));
        let printed = format!("{:?}", cluster.expect("resolved"));
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("redis://u:***@h:1/2"), "{printed}");
    }

    #[test]
    fn missing_redis() {
        let (cluster, errors) = check(&ClusterSection::default());
        assert!(cluster.is_none());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("cluster.redis: required"));
    }

    #[test]
    fn every_key_checked() {
        let raw = ClusterSection {
            redis: Some("redis://h".to_owned()),
            node: Some("gw 1".to_owned()),
            namespace: "ws*".to_owned(),
            lease: DurationStr(Duration::from_millis(500)),
            on_unavailable: "drop".to_owned(),
        };
        let (_, errors) = check(&raw);
        let paths: Vec<&str> = errors
            .iter()
            .map(|e| e.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(
            paths,
            [
                "cluster.node",
                "cluster.namespace",
                "cluster.lease",
                "cluster.on_unavailable"
            ]
        );
        let raw = ClusterSection {
            node: Some("gw-1.example:8080".to_owned()),
            namespace: "fleet.a:b-c_d".to_owned(),
            lease: DurationStr::secs(3600),
            on_unavailable: "refuse".to_owned(),
            ..with_redis("redis://h")
        };
        let (cluster, errors) = check(&raw);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            cluster.map(|c| c.on_unavailable),
            Some(OnUnavailable::Refuse)
        );
        let long = ClusterSection {
            node: Some("n".repeat(MAX_NODE_BYTES + 1)),
            namespace: "n".repeat(MAX_NAMESPACE_BYTES + 1),
            ..with_redis("redis://h")
        };
        assert_eq!(check(&long).1.len(), 2);
    }

    #[test]
    fn redaction() {
        assert_eq!(redacted_url("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redacted_url("redis://u:p@h"), "redis://u:***@h");
        assert_eq!(redacted_url("redis://:p@h/3"), "redis://:***@h/3");
        assert_eq!(redacted_url("rediss://u:p:q@x@h"), "rediss://u:***@h");
        assert_eq!(redacted_url("nonsense"), "(not a URL)");
    }
}
