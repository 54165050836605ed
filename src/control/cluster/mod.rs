//! The fleet link (SPEC §8): what several gateways behind one load balancer share through
//! Redis. It runs as one task on the control plane's tokio runtime; nothing here runs on
//! a worker, and a worker never waits for it.
//!
//! - **Revocations**: a `POST /revoke` on any gateway is stored under
//!   `{ns}:revocation:...` with its retention as TTL and published on `{ns}:revocations`
//!   ([`Cluster::share`]); every gateway hands what it receives to [`Local::apply_revocations`]
//!   (the same path as a local revocation: the revocation set, and the close of matching
//!   live connections). At start and after every reconnect the stored ones are loaded
//!   before the link reports up. A revocation that cannot be written is queued and
//!   retried ([`Shared::Queued`]).
//! - **Connection counts**: each node keeps its live connections per subject in the hash
//!   `{ns}:connections:{node}` with a lease (`PEXPIRE`) that it renews every third of
//!   `lease`, and publishes each change (absolute counts, batched every
//!   [`link::FLUSH_INTERVAL`]) and a heartbeat on `{ns}:connections`. Every node folds them
//!   into [`RemoteCounts`]: per subject, the connections on the other live nodes, which the
//!   handshake adds to its local count with no round trip. A node that stops renewing
//!   (killed, or cut off) stops counting `lease` after its last message, everywhere.
//! - **Failed tokens**: each node publishes its failed token verifications per address
//!   every [`link::FLUSH_INTERVAL`] on `{ns}:auth_failures`; the others take them from
//!   their own bucket for that address ([`Local::remote_auth_failures`]), so one budget
//!   drains fleet-wide.
//!
//! How exact the shared limits are: a node learns of another's connections and failures
//! one flush interval plus one Redis hop after they happen (about 20-25 ms on a LAN), so
//! handshakes of one subject that arrive at several gateways within that window can each
//! pass: the fleet-wide cap can be exceeded by at most the handshakes admitted for that
//! subject elsewhere during the window, and every node's view converges right after. The
//! local cap on each node stays exact. Per-address failure budgets drain the same way.
//!
//! While Redis is unreachable, the link reports down ([`ClusterStatus`]): with
//! `on_unavailable = "local"` the gateway serves with local state (other nodes' counts
//! lapse with their leases, revocations posted here are queued), with `"refuse"` new
//! handshakes get 503. Live connections are never closed for it.

mod link;
mod load;
pub mod status;
pub mod view;
pub mod wire;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::sync::oneshot;

pub use self::link::{FLUSH_INTERVAL, MAX_QUEUED};
pub use self::status::{ClusterStatus, LinkState, Readiness};
pub use self::view::{FleetShare, RemoteCounts};

use self::link::Link;
use self::view::Fleet;
use self::wire::{Names, RevocationMessage};
use crate::auth::revocation::Revocation;
use crate::config::{self, OnUnavailable};
use crate::gate::fleet::FleetReporter;
use crate::{clock, info};

/// What the link needs from the gateway it serves. Every method is called from the
/// link's task and must not block: it takes snapshots and sends commands, no more.
pub trait Local: Send + Sync + 'static {
    /// Revocations from the fleet (received, or loaded at start and after a reconnect):
    /// insert them and close the live connections they match (4403), as a local
    /// `POST /revoke` does.
    fn apply_revocations(&self, entries: Vec<(Revocation, u64)>);
    /// Every revocation this gateway enforces, with its `keep_until` (written back to a
    /// Redis that lost them).
    fn known_revocations(&self) -> Vec<(Revocation, u64)>;
    /// This gateway's live connections of `sub`.
    fn subject_count(&self, sub: &str) -> u32;
    /// Every subject with live connections on this gateway.
    fn subject_counts(&self) -> Vec<(Box<str>, u32)>;
    /// Failed token verifications from `ip` on other gateways.
    fn remote_auth_failures(&self, ip: IpAddr, failures: u32);
}

/// `[cluster]` with the node's name settled.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Redis URL (may hold a password; never logged as is).
    pub redis: String,
    /// This node's name.
    pub node: String,
    /// Key and channel prefix.
    pub namespace: String,
    /// Lease of this node's counts.
    pub lease: Duration,
    /// What handshakes get while Redis is unreachable.
    pub on_unavailable: OnUnavailable,
}

impl Settings {
    /// The settings of `[cluster]`; without a `node`, `hostname:port` with the port of
    /// the first bound listener.
    pub fn new(cluster: &config::Cluster, port: u16) -> Settings {
        Settings {
            redis: cluster.redis.clone(),
            node: cluster
                .node
                .clone()
                .unwrap_or_else(|| default_node(&hostname(), port)),
            namespace: cluster.namespace.clone(),
            lease: cluster.lease,
            on_unavailable: cluster.on_unavailable,
        }
    }
}

/// The machine's host name (Linux), or `localhost`.
fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| {
            let text = std::fs::read_to_string(path).ok()?;
            let name = text.trim();
            (!name.is_empty()).then(|| name.to_owned())
        })
        .unwrap_or_else(|| "localhost".to_owned())
}

/// `host:port`, cut to a valid node name.
fn default_node(host: &str, port: u16) -> String {
    let host: String = host
        .chars()
        .filter(char::is_ascii_graphic)
        .take(config::MAX_NODE_BYTES - 6)
        .collect();
    let host = if host.is_empty() {
        "localhost".to_owned()
    } else {
        host
    };
    format!("{host}:{port}")
}

/// Longest wait of [`Cluster::share_blocking`] (a Redis command's timeout, and some).
pub const SHARE_WAIT: Duration = Duration::from_secs(3);

/// What became of a revocation handed to [`Cluster::share`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    /// Stored in Redis and published to the fleet.
    Published,
    /// Redis is unreachable: queued, written and published once it is back.
    Queued,
    /// The queue is full ([`MAX_QUEUED`]): enforced on this gateway only.
    NotShared,
}

impl Shared {
    /// The word for the `/revoke` answer.
    pub fn as_str(&self) -> &'static str {
        match self {
            Shared::Published => "published",
            Shared::Queued => "queued",
            Shared::NotShared => "not shared",
        }
    }
}

/// Where the link answers a [`Request::Share`].
pub(crate) type Reply = Box<dyn FnOnce(Shared) + Send>;

pub(crate) enum Request {
    Share(RevocationMessage, Reply),
    Stop(oneshot::Sender<()>),
}

pub(crate) enum Event {
    Subject(Box<str>),
    AuthFailure(IpAddr),
}

/// What a worker holds to report to the link (as the share's [`FleetReporter`]): sends on
/// an unbounded channel, never waits.
#[derive(Debug, Clone)]
pub struct Reporter {
    events: UnboundedSender<Event>,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Event")
    }
}

impl FleetReporter for Reporter {
    /// The local count of `sub` changed (a connection opened or closed); the link reads
    /// the current count at its next flush.
    fn subject_changed(&self, sub: &str) {
        let _ = self.events.send(Event::Subject(sub.into()));
    }

    /// A token from `ip` (already reduced to its `ipv6_prefix` network) failed here.
    fn auth_failed(&self, ip: IpAddr) {
        let _ = self.events.send(Event::AuthFailure(ip));
    }
}

/// The running fleet link.
pub struct Cluster {
    requests: UnboundedSender<Request>,
    reporter: Reporter,
    status: Arc<ClusterStatus>,
    share: Arc<FleetShare>,
    node: String,
}

impl Cluster {
    /// Starts the link on `runtime`, feeding `share` (the view the handshake reads, which
    /// reports to the link from then on). It connects in the background:
    /// [`ClusterStatus`] tells when it is up.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        settings: Settings,
        local: Arc<dyn Local>,
        share: Arc<FleetShare>,
    ) -> Result<Cluster, String> {
        let client = redis::Client::open(settings.redis.as_str()).map_err(|_| {
            format!(
                "cluster.redis: not a usable Redis URL: {}",
                config::redacted_url(&settings.redis)
            )
        })?;
        let status = Arc::new(ClusterStatus::new(
            settings.on_unavailable,
            Arc::clone(&share),
        ));
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let names = Names::new(&settings.namespace, &settings.node);
        info!(
            "cluster: node {:?}, redis {}, namespace {:?}, lease {:?}",
            settings.node,
            config::redacted_url(&settings.redis),
            settings.namespace,
            settings.lease
        );
        let node = settings.node.clone();
        let link = Link {
            fleet: Fleet::new(&settings.node, Arc::clone(&share)),
            settings,
            names,
            client,
            local,
            status: Arc::clone(&status),
            requests: requests_rx,
            events: events_rx,
            queue: VecDeque::new(),
            dirty: HashSet::new(),
            published: HashMap::new(),
            failures: HashMap::new(),
            last_skip_log: None,
        };
        runtime.spawn(link.run());
        let reporter = Reporter { events };
        share.set_reporter(Arc::new(reporter.clone()));
        Ok(Cluster {
            requests,
            reporter,
            status,
            share,
            node,
        })
    }

    /// Stores and publishes a revocation that this gateway has applied (SPEC §8); waits
    /// for Redis at most one command timeout, else the revocation is queued.
    pub async fn share(&self, revocation: Revocation, keep_until: u64) -> Shared {
        let message = RevocationMessage {
            node: self.node.clone(),
            at_ms: clock::unix_now_millis(),
            revocation,
            keep_until,
        };
        let (reply, answer) = oneshot::channel();
        let reply: Reply = Box::new(move |shared| {
            let _ = reply.send(shared);
        });
        if self.requests.send(Request::Share(message, reply)).is_err() {
            return Shared::NotShared;
        }
        answer.await.unwrap_or(Shared::NotShared)
    }

    /// [`Cluster::share`] for a thread that may block (the admin listener's blocking
    /// pool), waiting at most [`SHARE_WAIT`]: past it the revocation is still in the link's
    /// hands (written, or queued, once its current step ends) and the answer is `Queued`.
    pub fn share_blocking(&self, revocation: Revocation, keep_until: u64) -> Shared {
        let message = RevocationMessage {
            node: self.node.clone(),
            at_ms: clock::unix_now_millis(),
            revocation,
            keep_until,
        };
        let (reply, answer) = crossbeam_channel::bounded(1);
        let reply: Reply = Box::new(move |shared| {
            let _ = reply.send(shared);
        });
        if self.requests.send(Request::Share(message, reply)).is_err() {
            return Shared::NotShared;
        }
        answer.recv_timeout(SHARE_WAIT).unwrap_or(Shared::Queued)
    }

    /// Leaves the fleet: this node's counts are deleted at once (when Redis answers) and
    /// the link stops. Waits at most `grace`.
    pub async fn stop(&self, grace: Duration) {
        let (done, stopped) = oneshot::channel();
        if self.requests.send(Request::Stop(done)).is_ok() {
            let _ = tokio::time::timeout(grace, stopped).await;
        }
    }

    /// What the workers report through.
    pub fn reporter(&self) -> Reporter {
        self.reporter.clone()
    }

    /// The link's state, for `/readyz`, `/metrics` and the handshake.
    pub fn status(&self) -> Arc<ClusterStatus> {
        Arc::clone(&self.status)
    }

    /// The view the handshake reads: per subject, the connections on the other live
    /// nodes, and whether handshakes are admitted.
    pub fn fleet_share(&self) -> Arc<FleetShare> {
        Arc::clone(&self.share)
    }

    /// This node's name in the fleet.
    pub fn node(&self) -> &str {
        &self.node
    }
}

#[cfg(test)]
mod tests;
