//! The fleet link's task (SPEC §8): one Redis connection for commands, one subscribed to
//! the fleet's channels, and the loop that reconnects with backoff when either fails.
//!
//! A session, from connect to loss:
//! 1. connect both connections and subscribe (so that nothing published from here on is
//!    missed);
//! 2. load every stored revocation and hand them to the gateway, then every other live
//!    node's connection counts;
//! 3. write this node's own state again in full (its counts, its liveness key, and every
//!    revocation it knows with `SET NX`, so that a Redis that restarted empty or was
//!    flushed gets them back), then the revocations queued while Redis was away;
//! 4. report up, and serve: channel messages, revocations to share, count changes and
//!    failed tokens batched every [`FLUSH_INTERVAL`], the lease renewed every third of
//!    `lease`.
//!
//! Any command error or timeout ends the session: the link reports down, keeps queueing
//! and folding what the gateway reports, and tries again after a backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink};
use redis::{AsyncConnectionConfig, Msg, RedisError};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;
use tokio::time::{timeout, Instant, MissedTickBehavior};

use super::status::{ClusterStatus, LinkState};
use super::view::Fleet;
use super::wire::{CountsMessage, FailuresMessage, Names, RevocationMessage, MAX_ENTRIES};
use super::{Event, Local, Reply, Request, Settings, Shared};
use crate::auth::revocation::Revocation;
use crate::clock;
use crate::{info, warn};

/// How often count changes and failed tokens are written and published.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);

/// Longest wait for a connection, and for any one command's answer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// First and largest pause between connection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Most revocations held for Redis while it is unreachable (about 1 KiB each at most).
pub const MAX_QUEUED: usize = 100_000;

/// Most subjects loaded from one node's hash.
pub(super) const MAX_NODE_SUBJECTS: usize = 10_000_000;

/// Most addresses whose failed tokens wait for the next flush; past it, more addresses
/// are counted locally only.
const MAX_PENDING_ADDRESSES: usize = 10_000;

/// Keys and entries per Redis request while loading or restoring.
pub(super) const BATCH: usize = 1000;

/// A Redis `EXAT` far enough that no entry outlives it in practice, small enough that the
/// server's millisecond arithmetic cannot overflow.
pub(super) const MAX_KEEP_SECS: u64 = 100 * 365 * 86_400;

/// Field-value pairs of one `HSCAN` step.
pub(super) type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// Why a session ended.
pub(super) enum Ended {
    /// The gateway is stopping.
    Stop(Option<oneshot::Sender<()>>),
    /// Redis went away or misbehaved.
    Lost(String),
}

pub(super) fn lost(what: &str, error: RedisError) -> Ended {
    Ended::Lost(format!("{what}: {error}"))
}

pub(super) async fn within<T>(
    what: &str,
    future: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, Ended> {
    match timeout(COMMAND_TIMEOUT, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(lost(what, error)),
        Err(_) => Err(Ended::Lost(format!(
            "{what}: no answer within {COMMAND_TIMEOUT:?}"
        ))),
    }
}

/// Exponential backoff with jitter, so that a fleet does not reconnect in lockstep.
struct Backoff {
    next: Duration,
    seed: u64,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: BACKOFF_MIN,
            seed: RandomState::new().hash_one(0u8) | 1,
        }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    fn pause(&mut self) -> Duration {
        // xorshift64: jitter only, no security role.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        // 75% to 125% of the base.
        let quarter = base.as_millis() as u64 / 4;
        let jitter = if quarter == 0 {
            0
        } else {
            self.seed % (2 * quarter)
        };
        Duration::from_millis(base.as_millis() as u64 - quarter + jitter)
    }
}

/// The task's state; lives as long as the gateway.
pub(super) struct Link {
    pub(super) settings: Settings,
    pub(super) names: Names,
    pub(super) client: redis::Client,
    pub(super) local: Arc<dyn Local>,
    pub(super) status: Arc<ClusterStatus>,
    pub(super) fleet: Fleet,
    pub(super) requests: UnboundedReceiver<Request>,
    pub(super) events: UnboundedReceiver<Event>,
    /// Revocations that could not be written yet, oldest first.
    pub(super) queue: VecDeque<RevocationMessage>,
    /// Subjects whose local count may have changed since the last flush.
    pub(super) dirty: HashSet<Box<str>>,
    /// This node's counts as last written to Redis.
    pub(super) published: HashMap<Box<str>, u32>,
    /// Failed tokens per address since the last flush.
    pub(super) failures: HashMap<IpAddr, u32>,
    /// When a skipped message was last logged (one line per second at most).
    pub(super) last_skip_log: Option<Instant>,
}

impl Link {
    /// Runs until the gateway stops.
    pub(super) async fn run(mut self) {
        let mut backoff = Backoff::new();
        let mut first = true;
        let mut was_up = false;
        loop {
            let ended = self.session(&mut backoff, first, &mut was_up).await;
            first = false;
            let reason = match ended {
                Ended::Stop(done) => {
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
                Ended::Lost(reason) => reason,
            };
            self.status.set_state(LinkState::Down);
            let pause = backoff.pause();
            if was_up {
                warn!("cluster: lost redis ({reason}); serving with local state, reconnecting");
                was_up = false;
            } else if pause >= BACKOFF_MAX / 2 {
                // Logged once the backoff has grown, not at every attempt.
                warn!("cluster: redis unreachable ({reason}); next attempt in {pause:?}");
            }
            if let Some(Ended::Stop(done)) = self.pause(pause).await {
                if let Some(done) = done {
                    let _ = done.send(());
                }
                return;
            }
        }
    }

    /// Waits `pause` while serving the gateway's requests without Redis.
    async fn pause(&mut self, pause: Duration) -> Option<Ended> {
        let deadline = Instant::now() + pause;
        let mut tick = tokio::time::interval(FLUSH_INTERVAL.max(Duration::from_millis(100)));
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return None,
                request = self.requests.recv() => match request {
                    None => return Some(Ended::Stop(None)),
                    Some(Request::Stop(done)) => return Some(Ended::Stop(Some(done))),
                    Some(Request::Share(message, reply)) => reply(self.enqueue(message)),
                },
                Some(event) = self.events.recv() => self.fold(event, false),
                _ = tick.tick() => self.expire_nodes(),
            }
        }
    }

    async fn session(&mut self, backoff: &mut Backoff, first: bool, was_up: &mut bool) -> Ended {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        let mut conn = match within(
            "connect",
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(conn) => conn,
            Err(ended) => return ended,
        };
        let pubsub = match within("connect (subscriber)", self.client.get_async_pubsub()).await {
            Ok(pubsub) => pubsub,
            Err(ended) => return ended,
        };
        let (mut sink, mut stream) = pubsub.split();
        for channel in [
            self.names.revocations_channel(),
            self.names.connections_channel(),
            self.names.auth_failures_channel(),
        ] {
            if let Err(ended) = within("SUBSCRIBE", sink.subscribe(&channel)).await {
                return ended;
            }
        }
        self.status.set_state(LinkState::Loading);
        if !first {
            self.status.reconnected();
        }
        if let Err(ended) = self.start(&mut conn).await {
            return ended;
        }
        self.status.set_state(LinkState::Up);
        *was_up = true;
        backoff.reset();
        info!(
            "cluster: linked to redis as node {:?}: {} other nodes, {} revocations queued",
            self.names.node(),
            self.fleet.nodes(),
            self.queue.len()
        );
        self.serve(&mut conn, &mut sink, &mut stream).await
    }

    /// Steps 2 and 3 of a session.
    async fn start(&mut self, conn: &mut MultiplexedConnection) -> Result<(), Ended> {
        self.load_revocations(conn).await?;
        self.load_counts(conn).await?;
        self.write_state(conn).await?;
        self.drain_queue(conn).await
    }

    async fn serve(
        &mut self,
        conn: &mut MultiplexedConnection,
        sink: &mut PubSubSink,
        stream: &mut redis::aio::PubSubStream,
    ) -> Ended {
        let mut flush = tokio::time::interval(FLUSH_INTERVAL);
        flush.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut renew = tokio::time::interval(self.settings.lease / 3);
        renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
        renew.tick().await; // the first tick is immediate; the state was just written
        loop {
            let step = tokio::select! {
                message = stream.next() => match message {
                    Some(message) => {
                        self.on_message(&message).await;
                        Ok(())
                    }
                    None => Err(Ended::Lost("subscription connection closed".to_owned())),
                },
                request = self.requests.recv() => match request {
                    None => Err(Ended::Stop(None)),
                    Some(Request::Stop(done)) => {
                        self.leave(conn).await;
                        Err(Ended::Stop(Some(done)))
                    }
                    Some(Request::Share(message, reply)) => self.share(conn, message, reply).await,
                },
                Some(event) = self.events.recv() => {
                    self.fold(event, true);
                    Ok(())
                }
                _ = flush.tick() => self.flush(conn).await,
                _ = renew.tick() => self.renew(conn, sink).await,
            };
            if let Err(ended) = step {
                return ended;
            }
        }
    }

    // === revocations ===

    fn enqueue(&mut self, message: RevocationMessage) -> Shared {
        if self.queue.len() >= MAX_QUEUED {
            crate::error!(
                "cluster: {MAX_QUEUED} revocations already wait for redis; this one is enforced here only"
            );
            return Shared::NotShared;
        }
        self.queue.push_back(message);
        self.status.set_queued(self.queue.len());
        Shared::Queued
    }

    async fn share(
        &mut self,
        conn: &mut MultiplexedConnection,
        message: RevocationMessage,
        reply: Reply,
    ) -> Result<(), Ended> {
        // Queued ones go first, so that the fleet sees revocations in posting order.
        if !self.queue.is_empty() {
            reply(self.enqueue(message));
            return self.drain_queue(conn).await;
        }
        match self.store(conn, &message, false).await {
            Ok(()) => {
                reply(Shared::Published);
                Ok(())
            }
            Err(ended) => {
                reply(self.enqueue(message));
                Err(ended)
            }
        }
    }

    /// Writes one revocation with its retention as TTL and publishes it (`only_new`: keep
    /// an existing entry, publish nothing: a restore).
    pub(super) async fn store(
        &self,
        conn: &mut MultiplexedConnection,
        message: &RevocationMessage,
        only_new: bool,
    ) -> Result<(), Ended> {
        let now = clock::unix_now();
        if message.keep_until < now {
            return Ok(()); // nothing left to enforce
        }
        let json = message.to_json();
        let mut pipe = redis::pipe();
        let set = pipe
            .cmd("SET")
            .arg(self.names.revocation_key(&message.revocation))
            .arg(&json);
        if only_new {
            set.arg("NX");
        }
        set.arg("EXAT")
            .arg(message.keep_until.min(now + MAX_KEEP_SECS))
            .ignore();
        if !only_new {
            pipe.cmd("PUBLISH")
                .arg(self.names.revocations_channel())
                .arg(&json)
                .ignore();
        }
        within("SET revocation", pipe.query_async::<()>(conn)).await
    }

    async fn drain_queue(&mut self, conn: &mut MultiplexedConnection) -> Result<(), Ended> {
        while let Some(message) = self.queue.front() {
            let message = message.clone();
            self.store(conn, &message, false).await?;
            self.queue.pop_front();
            self.status.set_queued(self.queue.len());
        }
        Ok(())
    }

    // === connection counts ===

    /// Writes this node's state in full: liveness, every count (a reset for the others),
    /// and the revocations it knows.
    async fn write_state(&mut self, conn: &mut MultiplexedConnection) -> Result<(), Ended> {
        let own = self.names.connections_key(self.names.node());
        let lease_ms = self.lease_ms();
        let counts = self.local.subject_counts();
        self.dirty.clear();
        let mut first = true;
        let mut chunks = counts.chunks(MAX_ENTRIES);
        loop {
            let chunk = chunks.next();
            if chunk.is_none() && !first {
                break;
            }
            let chunk = chunk.unwrap_or(&[]);
            let mut pipe = redis::pipe();
            if first {
                pipe.cmd("DEL").arg(&own).ignore();
                pipe.cmd("SET")
                    .arg(self.alive_key())
                    .arg(1)
                    .arg("PX")
                    .arg(lease_ms)
                    .ignore();
            }
            for (sub, count) in chunk {
                pipe.cmd("HSET").arg(&own).arg(&**sub).arg(*count).ignore();
            }
            pipe.cmd("PEXPIRE").arg(&own).arg(lease_ms).ignore();
            let message = CountsMessage {
                node: self.names.node().to_owned(),
                lease_ms,
                reset: first,
                counts: chunk.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
            };
            pipe.cmd("PUBLISH")
                .arg(self.names.connections_channel())
                .arg(message.to_json())
                .ignore();
            within("write counts", pipe.query_async::<()>(conn)).await?;
            first = false;
        }
        self.published = counts.into_iter().filter(|(_, n)| *n > 0).collect();
        self.restore_revocations(conn).await
    }

    fn fold(&mut self, event: Event, linked: bool) {
        match event {
            Event::Subject(sub) => {
                self.dirty.insert(sub);
            }
            // Failed tokens only matter to the others now: none are kept while cut off.
            Event::AuthFailure(ip) => {
                if linked
                    && (self.failures.len() < MAX_PENDING_ADDRESSES
                        || self.failures.contains_key(&ip))
                {
                    let n = self.failures.entry(ip).or_insert(0);
                    *n = n.saturating_add(1);
                }
            }
        }
    }

    async fn flush(&mut self, conn: &mut MultiplexedConnection) -> Result<(), Ended> {
        self.expire_nodes();
        if !self.dirty.is_empty() {
            let mut changes = Vec::new();
            for sub in std::mem::take(&mut self.dirty) {
                let count = self.local.subject_count(&sub);
                if self.published.get(&sub).copied().unwrap_or(0) != count {
                    changes.push((sub, count));
                }
            }
            let own = self.names.connections_key(self.names.node());
            let lease_ms = self.lease_ms();
            for (index, chunk) in changes.chunks(MAX_ENTRIES).enumerate() {
                let mut pipe = redis::pipe();
                for (sub, count) in chunk {
                    if *count == 0 {
                        pipe.cmd("HDEL").arg(&own).arg(&**sub).ignore();
                    } else {
                        pipe.cmd("HSET").arg(&own).arg(&**sub).arg(*count).ignore();
                    }
                }
                pipe.cmd("PEXPIRE").arg(&own).arg(lease_ms).ignore();
                let message = CountsMessage {
                    node: self.names.node().to_owned(),
                    lease_ms,
                    reset: false,
                    counts: chunk.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
                };
                pipe.cmd("PUBLISH")
                    .arg(self.names.connections_channel())
                    .arg(message.to_json())
                    .ignore();
                if let Err(ended) = within("write counts", pipe.query_async::<()>(conn)).await {
                    // Not written: they are looked at again at the next flush.
                    for (sub, _) in changes.into_iter().skip(index * MAX_ENTRIES) {
                        self.dirty.insert(sub);
                    }
                    return Err(ended);
                }
                for (sub, count) in chunk {
                    if *count == 0 {
                        self.published.remove(sub);
                    } else {
                        self.published.insert(sub.clone(), *count);
                    }
                }
            }
        }
        if !self.failures.is_empty() {
            let failures: Vec<(IpAddr, u32)> = self.failures.drain().collect();
            for chunk in failures.chunks(MAX_ENTRIES) {
                let message = FailuresMessage {
                    node: self.names.node().to_owned(),
                    failures: chunk.to_vec(),
                };
                within(
                    "PUBLISH auth_failures",
                    redis::cmd("PUBLISH")
                        .arg(self.names.auth_failures_channel())
                        .arg(message.to_json())
                        .query_async::<()>(conn),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Renews this node's lease and tells the others it is alive. A liveness key that is
    /// gone means Redis lost this node's state (flushed, restarted, or the lease ran out
    /// during a stall): it is written again in full.
    async fn renew(
        &mut self,
        conn: &mut MultiplexedConnection,
        sink: &mut PubSubSink,
    ) -> Result<(), Ended> {
        let lease_ms = self.lease_ms();
        let own = self.names.connections_key(self.names.node());
        let heartbeat = CountsMessage {
            node: self.names.node().to_owned(),
            lease_ms,
            reset: false,
            counts: Vec::new(),
        };
        let (alive, _, _): (Option<String>, i64, i64) = within(
            "renew lease",
            redis::pipe()
                .cmd("SET")
                .arg(self.alive_key())
                .arg(1)
                .arg("PX")
                .arg(lease_ms)
                .arg("XX")
                .cmd("PEXPIRE")
                .arg(&own)
                .arg(lease_ms)
                .cmd("PUBLISH")
                .arg(self.names.connections_channel())
                .arg(heartbeat.to_json())
                .query_async(conn),
        )
        .await?;
        // The subscriber connection is checked too: a half-open socket would otherwise go
        // unnoticed while no message arrives.
        within("PING (subscriber)", sink.ping::<redis::Value>()).await?;
        if alive.is_none() {
            warn!("cluster: redis lost this node's state (flushed or restarted); writing it again");
            self.write_state(conn).await?;
        }
        Ok(())
    }

    /// A graceful stop: this node's counts stop counting at once, not after the lease.
    async fn leave(&mut self, conn: &mut MultiplexedConnection) {
        let message = CountsMessage {
            node: self.names.node().to_owned(),
            lease_ms: 0,
            reset: true,
            counts: Vec::new(),
        };
        let result = within(
            "leave",
            redis::pipe()
                .cmd("DEL")
                .arg(self.names.connections_key(self.names.node()))
                .arg(self.alive_key())
                .ignore()
                .cmd("PUBLISH")
                .arg(self.names.connections_channel())
                .arg(message.to_json())
                .ignore()
                .query_async::<()>(conn),
        )
        .await;
        if let Err(Ended::Lost(reason)) = result {
            warn!("cluster: could not leave the fleet cleanly ({reason}); its lease will end it");
        }
    }

    fn expire_nodes(&mut self) {
        for node in self.fleet.expire(clock::now()) {
            info!("cluster: node {node:?} stopped renewing its lease; its connections no longer count");
        }
        self.status.set_remote_nodes(self.fleet.nodes());
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.settings.lease.as_millis()).unwrap_or(u64::MAX)
    }

    fn alive_key(&self) -> String {
        self.names.alive_key(self.names.node())
    }

    // === channel messages ===

    async fn on_message(&mut self, message: &Msg) {
        let channel = message.get_channel_name();
        let payload = message.get_payload_bytes();
        if channel == self.names.revocations_channel() {
            match RevocationMessage::parse(payload) {
                Ok(m) if m.node == self.names.node() => {} // applied when posted here
                Ok(m) => {
                    if m.keep_until >= clock::unix_now() {
                        self.apply(vec![(m.revocation, m.keep_until)]).await;
                    }
                    self.status.received();
                    let delay = clock::unix_now_millis().saturating_sub(m.at_ms);
                    self.status.observe_latency_ms(delay);
                }
                Err(e) => self.skip(format_args!("a message on {channel}: {e}")),
            }
        } else if channel == self.names.connections_channel() {
            match CountsMessage::parse(payload) {
                Ok(m) => {
                    self.fleet.apply(&m, clock::now());
                    self.status.set_remote_nodes(self.fleet.nodes());
                }
                Err(e) => self.skip(format_args!("a message on {channel}: {e}")),
            }
        } else if channel == self.names.auth_failures_channel() {
            match FailuresMessage::parse(payload) {
                Ok(m) if m.node == self.names.node() => {}
                Ok(m) => {
                    for (ip, n) in m.failures {
                        self.local.remote_auth_failures(ip, n);
                    }
                }
                Err(e) => self.skip(format_args!("a message on {channel}: {e}")),
            }
        }
    }

    /// Hands revocations to the gateway on the blocking pool (applying one may wait for
    /// the revocation log's lock, held across an fsync by a `POST /revoke`).
    pub(super) async fn apply(&self, entries: Vec<(Revocation, u64)>) {
        let local = Arc::clone(&self.local);
        if tokio::task::spawn_blocking(move || local.apply_revocations(entries))
            .await
            .is_err()
        {
            crate::error!("cluster: applying fleet revocations panicked");
        }
    }

    /// Logs a skipped message or value (at most one line a second) and counts it.
    pub(super) fn skip(&mut self, what: std::fmt::Arguments<'_>) {
        self.status.skipped();
        let now = Instant::now();
        if self
            .last_skip_log
            .is_none_or(|last| now.duration_since(last) >= Duration::from_secs(1))
        {
            self.last_skip_log = Some(now);
            warn!(
                "cluster: skipped {what} ({} skipped so far)",
                self.status.skipped_total()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_resets() {
        let mut backoff = Backoff::new();
        let first = backoff.pause();
        assert!(first >= Duration::from_millis(75) && first <= Duration::from_millis(125));
        let mut last = first;
        for _ in 0..10 {
            last = backoff.pause();
            assert!(last <= BACKOFF_MAX + BACKOFF_MAX / 4);
        }
        assert!(last >= BACKOFF_MAX * 3 / 4, "{last:?}");
        backoff.reset();
        assert!(backoff.pause() <= Duration::from_millis(125));
    }
}
