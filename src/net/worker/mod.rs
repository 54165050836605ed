//! One worker: one `mio::Poll`, its own connections, timers and scratch buffers.
//!
//! The loop: poll → dispatch readiness → revisit connections whose turn was cut short
//! → fire due timers → (when draining) exit once empty or past the grace period.
//! Sockets are registered once for READABLE | WRITABLE, edge-triggered, and never
//! re-registered: a connection that stops reading for backpressure is revisited by hand
//! when its output drains, so steady state costs no `epoll_ctl` per message.

mod accept;
mod drive;
mod handshake;
mod proxy;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Cache};
use crossbeam_channel::{Receiver, Sender};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Waker};

use self::drive::step;
use self::handshake::reject;
use super::conn::{Conn, Phase};
use super::listener::Accept;
use super::principal::Principals;
use super::timer::Timers;
use super::token::{ConnId, Slab, WAKER};
use super::upstream::LegState;
use crate::auth::error::TokenError;
use crate::auth::revocation::{Revocation, RevocationSet};
use crate::auth::verify::Scratch;
use crate::backend::upstream::ResolvedNames;
use crate::clock::Tick;
use crate::gate::decide::Gate;
use crate::gate::limits::{IpTable, SubjectTable};
use crate::gate::reject::Reject;
use crate::metrics::{Metrics, WorkerMetrics};
use crate::proto::error::ProtocolError;
use crate::proto::http::request::HeadReader;
use crate::proto::ws::deflate::{DeflateConfig, MemoryBudget};
use crate::proto::ws::session::{SessionLimits, SessionState};
use crate::{clock, info, warn};

/// Reads per connection per turn before others get theirs (fairness under floods).
const MAX_READS_PER_TURN: usize = 16;

/// The worker's read buffer: one per worker, not per connection. Large enough that a
/// 64 KiB message arrives whole and takes the zero-copy path.
const READ_BUFFER: usize = 256 * 1024;

/// Buffer capacity a busy connection keeps between messages (no allocator round trip per
/// message); more is released after a burst, and everything when the connection idles.
const KEEP_CAPACITY: usize = 256 * 1024;

/// Everything that does not change for one configuration generation.
pub struct Runtime {
    /// The handshake policy.
    pub gate: Gate,
    /// Per-connection WebSocket limits.
    pub session: SessionLimits,
    /// SPEC `limits.handshake_timeout`.
    pub handshake_timeout: Duration,
    /// SPEC `limits.max_request_bytes`.
    pub max_request_bytes: usize,
    /// SPEC `server.shutdown_grace`.
    pub shutdown_grace: Duration,
    /// Token query parameter names, redacted in logs.
    pub token_query_names: Vec<String>,
    /// SPEC `auth.max_token_bytes` (sizes each worker's scratch buffer).
    pub max_token_bytes: usize,
    /// TLS when `[tls]` is configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// SPEC `session.refresh = "message"`.
    pub refresh: bool,
    /// SPEC `session.expiry_notice`.
    pub expiry_notice: Duration,
    /// SPEC `session.max_failed_refreshes`.
    pub max_failed_refreshes: u32,
    /// SPEC `auth.leeway`, whole seconds.
    pub leeway_secs: u64,
    /// Per route, the host and port of each upstream (empty for echo routes); names are
    /// looked up in [`Shared::upstream_names`] at connect time.
    pub upstream_hosts: Vec<Vec<(crate::backend::upstream::UpstreamHost, u16)>>,
    /// `[admin] identity_key`: signs identity headers on `sign_identity` routes (SPEC §5).
    pub identity: Option<Arc<crate::proto::http::client::sign::IdentitySigner>>,
    /// Per route, per upstream: the TLS client side of `wss://` upstreams.
    pub upstream_tls: Vec<Vec<Option<super::tls::UpstreamTls>>>,
    /// Per route, round-robin and health of its upstreams: one view per process, shared
    /// by every worker (SPEC §5; empty balancers for echo routes).
    pub balancers: Vec<crate::backend::upstream::Balancer>,
    /// Cookie names that carry tokens (never forwarded upstream).
    pub token_cookie_names: Vec<String>,
    /// Plain HTTP requests' answers (`serve --demo` only).
    pub plain: Option<Arc<dyn super::plain::PlainResponder>>,
    /// SPEC §10: what permessage-deflate may agree to; `None` when `[compression]` is off.
    pub compression: Option<DeflateConfig>,
}

/// State every worker shares.
pub struct Shared {
    /// Connections open in the process (from accept to close).
    pub open: AtomicUsize,
    /// SPEC `server.max_connections`, enforced at accept (SIGHUP may change it).
    pub max_connections: AtomicUsize,
    /// Connections open per worker.
    pub per_worker: Vec<AtomicUsize>,
    /// Connections accepted per worker since start.
    pub accepted_per_worker: Vec<AtomicUsize>,
    /// Per-IP budgets.
    pub ips: IpTable,
    /// Per-subject connection counts.
    pub subjects: SubjectTable,
    /// Shutdown began.
    pub draining: AtomicBool,
    /// Revoked `jti`s and subjects (SPEC §6): an immutable snapshot that the control plane
    /// replaces whole on each revocation; read without a lock at every handshake (through
    /// each worker's [`RevocationCache`]) and refresh.
    pub revocations: Arc<ArcSwap<RevocationSet>>,
    /// Upstream host names' addresses (SPEC §5): an immutable snapshot that the control
    /// plane's resolver (`control::resolve`) replaces whole; read without a lock at each
    /// upstream connect (through each worker's [`NamesCache`]).
    pub upstream_names: Arc<ArcSwap<ResolvedNames>>,
    /// The longest token lifetime (exp - iat) seen, so `sub` entries are kept long enough.
    pub longest_lifetime: AtomicU64,
    /// Counters, one block per worker (SPEC §7).
    pub metrics: Arc<Metrics>,
    /// SPEC §10 `compression.memory`: per-connection compression state, all workers.
    pub deflate_budget: Arc<MemoryBudget>,
}

/// A worker's handle on the revocation snapshot: checking that it is current is one
/// relaxed atomic load while no revocation comes, and it is reloaded when one does.
pub type RevocationCache = Cache<Arc<ArcSwap<RevocationSet>>, Arc<RevocationSet>>;

/// A worker's handle on the upstream names' snapshot, like [`RevocationCache`].
pub type NamesCache = Cache<Arc<ArcSwap<ResolvedNames>>, Arc<ResolvedNames>>;

/// Messages to a worker.
pub enum Command {
    /// First step of graceful shutdown: close this worker's listening sockets, then
    /// acknowledge. [`Command::Drain`] follows once every worker has acknowledged, so a
    /// client that has seen 1001 from one worker finds every listener already closed.
    StopAccepting(Sender<()>),
    /// Begin graceful shutdown.
    Drain,
    /// A revocation to enforce on live connections; the reply is how many were closed.
    Revoke(Revocation, Sender<usize>),
    /// SIGHUP: a new configuration generation for new handshakes; live connections whose
    /// key is gone are closed 4401 "key retired".
    Reload(Arc<Runtime>),
    /// A provider's key set changed (SPEC §9): live connections whose key left the
    /// verifier's keys are closed 4401 "key retired".
    KeysChanged,
}

/// How the control plane and the main thread reach a worker.
pub struct WorkerHandle {
    /// Command queue.
    pub tx: Sender<Command>,
    /// Wakes the worker's poll.
    pub waker: Arc<Waker>,
}

struct Env {
    index: usize,
    rt: Arc<Runtime>,
    /// `rt.session`, shared by every session this worker starts (issue #15: not a copy
    /// per connection); replaced when a reload changes it.
    session_limits: Arc<SessionLimits>,
    shared: Arc<Shared>,
    readbuf: Vec<u8>,
    scratch: Scratch,
    token_buf: Vec<u8>,
    revocations: RevocationCache,
    upstream_names: NamesCache,
    ready: Vec<ConnId>,
    draining: bool,
    /// The live connections' tokens, one record per distinct token, found by `sub` and
    /// by `jti` so that a revocation finds its connections without a scan.
    principals: Principals,
    /// This worker's counters (written only here).
    metrics: Arc<WorkerMetrics>,
    /// For registering upstream sockets from inside a connection's step.
    registry: mio::Registry,
    /// The event being handled also reported the peer's FIN or an error.
    peer_closed_hint: bool,
    /// Which of a proxied connection's sockets the event being handled may have made
    /// readable (`proxy::Woke`).
    woke: proxy::Woke,
}

/// One event loop.
pub struct Worker {
    poll: Poll,
    rx: Receiver<Command>,
    conns: Slab<Conn>,
    timers: Timers,
    env: Env,
    drain_deadline: Option<Instant>,
    /// This worker's listening sockets (`SO_REUSEPORT`, one per `server.listen`).
    accept: Accept,
}

impl Worker {
    /// Creates worker `index`, accepting on `listeners`, and the handle to reach it.
    pub fn new(
        index: usize,
        rt: Arc<Runtime>,
        shared: Arc<Shared>,
        mut listeners: Vec<mio::net::TcpListener>,
    ) -> io::Result<(Worker, WorkerHandle)> {
        let poll = Poll::new()?;
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(l, super::token::listener(i), Interest::READABLE)?;
        }
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let scratch = Scratch::new(rt.max_token_bytes);
        let metrics = shared.metrics.workers[index].clone();
        let registry = poll.registry().try_clone()?;
        let revocations = Cache::new(Arc::clone(&shared.revocations));
        let upstream_names = Cache::new(Arc::clone(&shared.upstream_names));
        let session_limits = Arc::new(rt.session);
        Ok((
            Worker {
                poll,
                rx,
                conns: Slab::default(),
                timers: Timers::default(),
                env: Env {
                    index,
                    rt,
                    session_limits,
                    shared,
                    readbuf: vec![0; READ_BUFFER],
                    revocations,
                    upstream_names,
                    scratch,
                    token_buf: Vec::new(),
                    ready: Vec::new(),
                    draining: false,
                    principals: Principals::default(),
                    metrics,
                    registry,
                    peer_closed_hint: false,
                    woke: proxy::Woke::Both,
                },
                drain_deadline: None,
                accept: Accept::new(listeners),
            },
            WorkerHandle { tx, waker },
        ))
    }

    /// Runs until drained.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut revisit: Vec<ConnId> = Vec::new();
        loop {
            let now = clock::now();
            let mut deadline = self.timers.next_deadline().map(Tick::instant);
            if let Some(d) = self.drain_deadline {
                deadline = Some(deadline.map_or(d, |t| t.min(d)));
            }
            if let Some(d) = self.accept_deadline() {
                deadline = Some(deadline.map_or(d, |t| t.min(d)));
            }
            let timeout = if !self.env.ready.is_empty() {
                Some(Duration::ZERO)
            } else {
                deadline.map(|d| d.saturating_duration_since(now))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                crate::error!("worker {}: poll failed: {e}", self.env.index);
                return;
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    self.commands();
                } else if let Some(i) = super::token::listener_index(event.token()) {
                    self.accept(i);
                } else {
                    // Readiness is a hint: the step reads and writes until WouldBlock. A
                    // peer that also closed (FIN / RST in the same edge) must be read to
                    // EOF: no later edge will report it.
                    self.env.peer_closed_hint = event.is_read_closed() || event.is_error();
                    self.env.woke = proxy::Woke::of(event);
                    self.drive(ConnId::from_token(event.token()), false);
                    self.env.peer_closed_hint = false;
                    self.env.woke = proxy::Woke::Both;
                }
            }
            self.accept_again();
            std::mem::swap(&mut revisit, &mut self.env.ready);
            for id in revisit.drain(..) {
                self.drive(id, false);
            }
            let now = clock::now();
            while let Some(id) = self.timers.pop_due(Tick::from(now)) {
                self.drive(id, true);
            }
            if self.env.draining
                && (self.conns.is_empty() || self.drain_deadline.is_some_and(|d| now >= d))
            {
                for id in self.conns.ids() {
                    self.remove(id);
                }
                return;
            }
        }
    }

    fn commands(&mut self) {
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Command::StopAccepting(ack) => {
                    self.accept.close();
                    let _ = ack.send(());
                }
                Command::Drain => self.drain(),
                Command::Reload(rt) => self.reload(rt),
                Command::KeysChanged => {
                    self.retire_keys();
                    self.wake_parked();
                }
                Command::Revoke(r, reply) => {
                    let closed = self.revoke(&r);
                    let _ = reply.send(closed);
                }
            }
        }
    }

    fn add(&mut self, socket: TcpStream, peer: SocketAddr) {
        let now = clock::now();
        let shared = &self.env.shared;
        shared.per_worker[self.env.index].fetch_add(1, Ordering::Relaxed);
        shared.accepted_per_worker[self.env.index].fetch_add(1, Ordering::Relaxed);
        let tls = match &self.env.rt.tls {
            Some(cfg) => match rustls::ServerConnection::new(cfg.clone()) {
                Ok(c) => Some(Box::new(c)),
                Err(e) => {
                    warn!("peer={peer} tls setup failed: {e}");
                    self.release_counts(peer, None, now);
                    return;
                }
            },
            None => None,
        };
        let deadline = Tick::from(now + self.env.rt.handshake_timeout);
        self.env.metrics.connection_opened();
        let id = self.conns.insert_with(|_| Conn {
            socket,
            peer,
            tls,
            phase: Phase::Handshake {
                reader: HeadReader::default(),
                deadline,
            },
            rbuf: Default::default(),
            wbuf: Default::default(),
            scheduled: None,
            closing: false,
            write_shut: false,
            read_eof: false,
            slow: None,
            received_any: false,
            identity: None,
            upstream: None,
            notice_sent: false,
            failed_refreshes: 0,
            release_wbuf_when_flushed: false,
            accepted_at: Tick::from(now),
            serial: super::conn::next_serial(),
            deflate: None,
        });
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if let Err(e) = self.poll.registry().register(
            &mut conn.socket,
            id.token(),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("peer={peer} register failed: {e}");
            self.remove(id);
            return;
        }
        info!(
            "conn={} peer={peer} worker={} accepted",
            conn.serial, self.env.index
        );
        if self.env.draining {
            self.remove(id);
            return;
        }
        self.timers.schedule(deadline, id);
        if let Some(conn) = self.conns.get_mut(id) {
            conn.scheduled = Some(deadline);
        }
        // Data may already be waiting; edge-triggered registration reports it, but a
        // first pass costs one read and avoids depending on that.
        self.drive(id, false);
    }

    fn drain(&mut self) {
        if self.env.draining {
            return;
        }
        self.env.draining = true;
        // SPEC §6: no new connections once draining.
        self.accept.close();
        let now = clock::now();
        self.drain_deadline = Some(now + self.env.rt.shutdown_grace);
        for id in self.conns.ids() {
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
            match &mut conn.phase {
                Phase::Handshake { .. } | Phase::Dialing { .. } | Phase::Parked { .. } => {
                    // Not upgraded yet: SPEC §4 "draining" is 503.
                    reject(conn, &self.env, Reject::Draining, None);
                }
                Phase::Open { session, .. } => {
                    // SPEC §6: SIGTERM closes every connection with 1001 "going away".
                    let why = ProtocolError::GoingAway;
                    session.close(why.close_code(), why.reason(), &mut conn.wbuf);
                }
                Phase::Rejected => {}
            }
            self.drive(id, false);
        }
    }

    /// Closes this worker's live connections that `r` matches with 4403 "token revoked".
    fn revoke(&mut self, r: &Revocation) -> usize {
        let candidates = self.env.principals.candidates(r);
        let mut closed = 0;
        for id in candidates {
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
            let Some(identity) = &conn.identity else {
                continue;
            };
            if !RevocationSet::matches(r, identity.jti.as_deref(), &identity.sub, identity.iat) {
                continue;
            }
            match &mut conn.phase {
                Phase::Open { session, .. } if session.state() == SessionState::Open => {
                    let why = ProtocolError::TokenRevoked;
                    session.close(why.close_code(), why.reason(), &mut conn.wbuf);
                }
                // Still waiting for the upstream's 101: the client never gets one.
                Phase::Dialing { .. } => {
                    let r = Reject::InvalidToken {
                        description: TokenError::Revoked.description(),
                        reason: TokenError::Revoked.reason_label(),
                    };
                    reject(conn, &self.env, r, None);
                }
                _ => continue,
            }
            closed += 1;
            self.drive(id, false);
        }
        closed
    }

    fn reload(&mut self, rt: Arc<Runtime>) {
        let old = std::mem::replace(&mut self.env.rt, rt);
        if *self.env.session_limits != self.env.rt.session {
            self.env.session_limits = Arc::new(self.env.rt.session);
        }
        if self.env.rt.max_token_bytes > self.env.scratch.max_token_bytes() {
            self.env.scratch = Scratch::new(self.env.rt.max_token_bytes);
        }
        // A reload is rare and operator-driven: a pass over this worker's connections
        // is the simplest correct way to find the retired keys' sessions, and to move each
        // connection's route index to the new route table (by path: indexes may shift).
        let keys = self.env.rt.gate.key_fingerprints();
        let (mut retired, mut unrouted) = (0usize, 0usize);
        for id in self.conns.ids() {
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
            let route = match &mut conn.phase {
                Phase::Open { route, .. } | Phase::Dialing { route } => route,
                _ => continue,
            };
            let new_index = old.gate.routes.get(*route).and_then(|r| {
                self.env
                    .rt
                    .gate
                    .routes
                    .iter()
                    .position(|n| n.path == r.path)
            });
            match (new_index, &mut conn.phase) {
                (Some(i), phase) => {
                    if let Phase::Open { route, .. } | Phase::Dialing { route } = phase {
                        *route = i;
                    }
                }
                // The reload removed this route: the connection goes with it.
                (None, Phase::Open { session, .. }) => {
                    let why = ProtocolError::GoingAway;
                    session.close(why.close_code(), why.reason(), &mut conn.wbuf);
                    unrouted += 1;
                    self.drive(id, false);
                    continue;
                }
                (None, _) => {
                    reject(conn, &self.env, Reject::NoRoute, None);
                    unrouted += 1;
                    self.drive(id, false);
                    continue;
                }
            }
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
            let Phase::Open { session, .. } = &mut conn.phase else {
                continue;
            };
            let Some(identity) = &conn.identity else {
                continue;
            };
            if session.state() == SessionState::Open && !keys.contains(&identity.key) {
                let why = ProtocolError::KeyRetired;
                session.close(why.close_code(), why.reason(), &mut conn.wbuf);
                retired += 1;
                self.drive(id, false);
            }
        }
        info!(
            "worker {}: configuration reloaded; {retired} connections closed (key retired), {unrouted} (route removed)",
            self.env.index
        );
    }

    /// Closes the open sessions whose key is no longer among the verifier's keys (a
    /// provider's new set dropped it, SPEC §9). Rare: a pass over the connections.
    fn retire_keys(&mut self) {
        let keys = self.env.rt.gate.key_fingerprints();
        let mut retired = 0usize;
        for id in self.conns.ids() {
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
            let Phase::Open { session, .. } = &mut conn.phase else {
                continue;
            };
            let Some(identity) = &conn.identity else {
                continue;
            };
            if session.state() == SessionState::Open && !keys.contains(&identity.key) {
                let why = ProtocolError::KeyRetired;
                session.close(why.close_code(), why.reason(), &mut conn.wbuf);
                retired += 1;
                self.drive(id, false);
            }
        }
        if retired > 0 {
            info!(
                "worker {}: key set changed; {retired} connections closed (key retired)",
                self.env.index
            );
        }
    }

    /// A provider's fetch finished (SPEC §9): every parked handshake is decided again with
    /// the verifier in force (accepted with the new key, or 401 when its `kid` is still
    /// unknown and no fetch may start).
    fn wake_parked(&mut self) {
        let now = clock::now();
        for id in self.conns.ids() {
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
            let Phase::Parked { head_len, deadline } = conn.phase else {
                continue;
            };
            conn.phase = Phase::Handshake {
                reader: HeadReader::default(),
                deadline,
            };
            handshake::handshake(conn, &mut self.env, id, head_len, now);
            self.drive(id, false);
        }
    }

    /// One pass over a connection: timers (if `timer`), reads, processing, writes,
    /// close bookkeeping and rescheduling.
    fn drive(&mut self, id: ConnId, timer: bool) {
        let now = clock::now();
        let Some(conn) = self.conns.get_mut(id) else {
            return; // stale event or timer for a closed connection
        };
        if timer {
            conn.scheduled = None;
        }
        // A bug must cost one connection, never the worker and its other clients.
        let env = &mut self.env;
        let keep = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            step(conn, env, id, now, timer)
        })) {
            Ok(keep) => keep,
            Err(_) => {
                crate::error!("conn={} dropped after an internal error", conn.serial);
                false
            }
        };
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if !keep {
            self.remove(id);
            return;
        }
        // Issue #15: buffers with nothing left in them go back to the worker's pool.
        conn.wbuf.release();
        conn.rbuf.release();
        if let Some(next) = next_deadline(conn, &self.env.rt) {
            if conn.scheduled.is_none_or(|s| next < s) {
                self.timers.schedule(next, id);
                conn.scheduled = Some(next);
            }
        }
    }

    fn remove(&mut self, id: ConnId) {
        let Some(mut conn) = self.conns.remove(id) else {
            return;
        };
        // No `deregister` for the client socket: closing it (the drop below) takes it out
        // of the epoll set, one `epoll_ctl` per connection saved (nothing duplicates it).
        if let Some(leg) = &mut conn.upstream {
            // Whatever ended the client's side (a reset included), the upstream hears
            // 1001 "going away" rather than a bare EOF (SPEC §5), best effort.
            if leg.state == LegState::Open {
                leg.send_close(1001, "going away");
                let _ = leg.flush();
            }
            let _ = self.poll.registry().deregister(&mut leg.socket);
        }
        let now = clock::now();
        let (sent, received) = match &conn.phase {
            Phase::Open { session, .. } => (session.close_sent(), session.close_received()),
            _ => (None, None),
        };
        self.env.metrics.connection_closed();
        if matches!(conn.phase, Phase::Open { .. }) {
            // 1006: the connection ended without any close frame (RFC 6455 §7.1.5).
            self.env.metrics.close(sent.or(received).unwrap_or(1006));
            info!(
                "conn={} peer={} closed sent={} received={} after={}ms",
                conn.serial,
                conn.peer,
                sent.map_or("-".to_string(), |c| c.to_string()),
                received.map_or("-".to_string(), |c| c.to_string()),
                now.saturating_duration_since(conn.accepted_at.instant())
                    .as_millis()
            );
        }
        if let Some(principal) = &conn.identity {
            self.env.principals.release(id, principal);
        }
        self.env.shared.per_worker[self.env.index].fetch_sub(1, Ordering::Relaxed);
        self.release_counts(conn.peer, conn.identity.as_ref().map(|i| &*i.sub), now);
    }

    fn release_counts(&self, peer: SocketAddr, sub: Option<&str>, now: Instant) {
        let shared = &self.env.shared;
        shared.open.fetch_sub(1, Ordering::Relaxed);
        shared.ips.connection_closed(peer.ip(), now);
        if let Some(sub) = sub {
            shared.subjects.release(sub);
        }
    }
}

/// The earliest moment this connection needs attention.
fn next_deadline(conn: &Conn, rt: &Runtime) -> Option<Tick> {
    let mut next = conn.linger_until();
    let mut consider = |t: Option<Tick>| {
        if let Some(t) = t {
            next = Some(next.map_or(t, |n: Tick| n.min(t)));
        }
    };
    match &conn.phase {
        Phase::Handshake { deadline, .. } | Phase::Parked { deadline, .. } => {
            consider(Some(*deadline))
        }
        Phase::Open { session, .. } => {
            // While paused for backpressure the idle clock is not consulted (on_timer
            // skips it), so its past-due deadline must not be either: it would spin.
            if conn.over_limit_since().is_none() || session.state() != SessionState::Open {
                consider(session.poll_timeout().map(Tick::from));
            }
            if session.state() == SessionState::Open {
                if let Some(principal) = &conn.identity {
                    consider(principal.token_deadline);
                    if !conn.notice_sent {
                        consider(principal.notice_at);
                    }
                }
            }
        }
        Phase::Dialing { .. } => consider(conn.upstream.as_ref().map(|l| Tick::from(l.deadline))),
        Phase::Rejected => {}
    }
    consider(
        conn.over_limit_since()
            .map(|t| Tick::from(t.instant() + rt.session.idle_timeout)),
    );
    next
}

/// Whether more input should be read now.
fn wants_read(conn: &Conn, rt: &Runtime) -> bool {
    if conn.read_eof {
        return false;
    }
    match &conn.phase {
        // Backpressure: stop reading what feeds an output that is over its limit.
        Phase::Open { session, .. } if session.state() == SessionState::Open => {
            conn.pending_output() < rt.session.write_buffer
                && conn
                    .upstream
                    .as_ref()
                    .is_none_or(|l| l.wbuf.len() < rt.session.write_buffer)
        }
        // Frames that arrive before the upstream's 101 wait in the kernel.
        Phase::Dialing { .. } | Phase::Parked { .. } => false,
        // Handshake: bounded by max_request_bytes below. Closing / rejected: drain and
        // discard so our last bytes are not destroyed by a reset over unread input.
        _ => true,
    }
}
