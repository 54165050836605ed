//! `[server]`: listen addresses and worker count (SPEC §3).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::units::DurationStr;
use super::Problems;

/// `[server]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// One socket address or an array of them; required (empty means missing).
    #[serde(deserialize_with = "one_or_many")]
    pub listen: Vec<String>,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// Connections past this get 503 at the handshake.
    pub max_connections: usize,
    /// How long SIGTERM waits for connections to close.
    pub shutdown_grace: DurationStr,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: Vec::new(),
            workers: 0,
            max_connections: 100_000,
            shutdown_grace: DurationStr::secs(10),
        }
    }
}

/// Accepts `"addr"` or `["addr", ...]`.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct OneOrMany;

    impl<'de> Visitor<'de> for OneOrMany {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a socket address like \"0.0.0.0:8080\" or an array of them")
        }

        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Vec<String>, E> {
            Ok(vec![value.to_owned()])
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut all = Vec::new();
            while let Some(one) = seq.next_element::<String>()? {
                all.push(one);
            }
            Ok(all)
        }
    }

    deserializer.deserialize_any(OneOrMany)
}

/// `[server]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Listening addresses, at least one, none overlapping.
    pub listen: Vec<SocketAddr>,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// Connections past this get 503.
    pub max_connections: usize,
    /// How long SIGTERM waits.
    pub shutdown_grace: Duration,
}

/// Most worker threads accepted.
const MAX_WORKERS: usize = 1024;

pub(super) fn server(raw: &ServerSection, problems: &mut Problems) -> Server {
    if raw.listen.is_empty() {
        problems.error(
            "server.listen",
            "required: one or more addresses like \"0.0.0.0:8080\"",
        );
    }
    let mut listen: Vec<SocketAddr> = Vec::new();
    for (index, text) in raw.listen.iter().enumerate() {
        let at = format!("server.listen[{index}]");
        let Some(address) = socket_address(&at, text, problems) else {
            continue;
        };
        if let Some(other) = listen.iter().position(|seen| overlaps(*seen, address)) {
            problems.error(
                at,
                format!(
                    "{address} overlaps server.listen[{other}] ({})",
                    listen[other]
                ),
            );
            continue;
        }
        listen.push(address);
    }
    if raw.workers > MAX_WORKERS {
        problems.error(
            "server.workers",
            format!(
                "at most {MAX_WORKERS} (0 = one per core), got {}",
                raw.workers
            ),
        );
    }
    if raw.max_connections == 0 {
        problems.error("server.max_connections", "must be at least 1");
    }
    Server {
        listen,
        workers: raw.workers,
        max_connections: raw.max_connections,
        shutdown_grace: raw.shutdown_grace.0,
    }
}

/// Parses `ip:port`; host names are refused (a listener binds an address, no DNS here).
pub(super) fn socket_address(at: &str, text: &str, problems: &mut Problems) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(address) => Some(address),
        Err(_) => {
            problems.error(
                at,
                format!(
                    "expected an IP address and port like \"0.0.0.0:8080\" or \"[::]:8080\" \
                     (host names are not resolved), got {text:?}"
                ),
            );
            None
        }
    }
}

/// Two listeners that could not both bind: same port and family, and the same IP or a
/// wildcard. Port 0 (an ephemeral port each) never overlaps.
pub(super) fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}
