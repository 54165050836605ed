//! One worker: one `mio::Poll`, its own connections, timers and scratch buffers.
//!
//! The loop: poll → dispatch readiness → revisit connections whose turn was cut short
//! → fire due timers → (when draining) exit once empty or past the grace period.
//! Sockets are registered once for READABLE | WRITABLE, edge-triggered, and never
//! re-registered: a connection that stops reading for backpressure is revisited by hand
//! when its output drains, so steady state costs no `epoll_ctl` per message.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Cache};
use crossbeam_channel::{Receiver, Sender};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Waker};

use super::clock;
use super::conn::{Conn, Phase, ReadOutcome};
use super::timer::Timers;
use super::token::{ConnId, Slab, WAKER};
use super::upstream::{self, LegState, Relayed, UpstreamLeg};
use crate::auth::error::TokenError;
use crate::auth::revocation::{Revocation, RevocationSet};
use crate::auth::verify::Scratch;
use crate::backend::upstream::Balancer;
use crate::config::Backend;
use crate::gate::decide::{Ctx, Gate, Identity, REFRESH_PREFIX};
use crate::gate::limits::{IpTable, SubjectTable};
use crate::gate::reject::Reject;
use crate::metrics::{Metrics, WorkerMetrics};
use crate::proto::error::ProtocolError;
use crate::proto::http::client::{random_key, write_upstream_request, ForwardRequest};
use crate::proto::http::fields;
use crate::proto::http::request::{parse_head, validate_upgrade, HeadReader, RequestHead, Upgrade};
use crate::proto::http::response::write_switching_protocols;
use crate::proto::ws::accept::accept_key;
use crate::proto::ws::session::{write_message, MessageKind, Session, SessionLimits, SessionState};
use crate::{info, warn};

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
    /// SPEC `auth.leeway`, whole seconds.
    pub leeway_secs: u64,
    /// Per route, the resolved address of each upstream (empty for echo routes).
    pub upstream_addrs: Vec<Vec<SocketAddr>>,
    /// Cookie names that carry tokens (never forwarded upstream).
    pub token_cookie_names: Vec<String>,
}

/// State every worker and the acceptor share.
pub struct Shared {
    /// Connections open in the process (from accept to close).
    pub open: AtomicUsize,
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
    /// The longest token lifetime (exp - iat) seen, so `sub` entries are kept long enough.
    pub longest_lifetime: AtomicU64,
    /// Counters, one block per worker (SPEC §7).
    pub metrics: Arc<Metrics>,
}

/// A worker's handle on the revocation snapshot: checking that it is current is one
/// relaxed atomic load while no revocation comes, and it is reloaded when one does.
pub type RevocationCache = Cache<Arc<ArcSwap<RevocationSet>>, Arc<RevocationSet>>;

/// Messages to a worker.
pub enum Command {
    /// A freshly accepted socket.
    Conn(TcpStream, SocketAddr),
    /// Begin graceful shutdown.
    Drain,
    /// A revocation to enforce on live connections; the reply is how many were closed.
    Revoke(Revocation, Sender<usize>),
    /// SIGHUP: a new configuration generation for new handshakes; live connections whose
    /// key is gone are closed 4401 "key retired".
    Reload(Arc<Runtime>),
}

/// How the acceptor and the main thread reach a worker.
pub struct WorkerHandle {
    /// Command queue.
    pub tx: Sender<Command>,
    /// Wakes the worker's poll.
    pub waker: Arc<Waker>,
}

struct Env {
    index: usize,
    rt: Arc<Runtime>,
    shared: Arc<Shared>,
    readbuf: Vec<u8>,
    scratch: Scratch,
    token_buf: Vec<u8>,
    revocations: RevocationCache,
    ready: Vec<ConnId>,
    draining: bool,
    /// Live connections by token subject and by `jti`, so a revocation finds its
    /// connections without a scan.
    by_sub: HashMap<Box<str>, Vec<ConnId>>,
    by_jti: HashMap<Box<str>, Vec<ConnId>>,
    /// This worker's counters (written only here).
    metrics: Arc<WorkerMetrics>,
    /// For registering upstream sockets from inside a connection's step.
    registry: mio::Registry,
    /// Per route: round-robin and health of its upstreams (this worker's view).
    balancers: Vec<Balancer>,
    /// The event being handled also reported the peer's FIN or an error.
    peer_closed_hint: bool,
}

/// One event loop.
pub struct Worker {
    poll: Poll,
    rx: Receiver<Command>,
    conns: Slab<Conn>,
    timers: Timers,
    env: Env,
    drain_deadline: Option<Instant>,
}

impl Worker {
    /// Creates worker `index` and the handle to reach it.
    pub fn new(
        index: usize,
        rt: Arc<Runtime>,
        shared: Arc<Shared>,
    ) -> io::Result<(Worker, WorkerHandle)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let scratch = Scratch::new(rt.max_token_bytes);
        let metrics = shared.metrics.workers[index].clone();
        let registry = poll.registry().try_clone()?;
        let balancers = balancers_for(&rt);
        let revocations = Cache::new(Arc::clone(&shared.revocations));
        Ok((
            Worker {
                poll,
                rx,
                conns: Slab::default(),
                timers: Timers::default(),
                env: Env {
                    index,
                    rt,
                    shared,
                    readbuf: vec![0; READ_BUFFER],
                    revocations,
                    scratch,
                    token_buf: Vec::new(),
                    ready: Vec::new(),
                    draining: false,
                    by_sub: HashMap::new(),
                    by_jti: HashMap::new(),
                    metrics,
                    registry,
                    balancers,
                    peer_closed_hint: false,
                },
                drain_deadline: None,
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
            let mut deadline = self.timers.next_deadline();
            if let Some(d) = self.drain_deadline {
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
                } else {
                    // Readiness is a hint: the step reads and writes until WouldBlock. A
                    // peer that also closed (FIN / RST in the same edge) must be read to
                    // EOF: no later edge will report it.
                    self.env.peer_closed_hint = event.is_read_closed() || event.is_error();
                    self.drive(ConnId::from_token(event.token()), false);
                    self.env.peer_closed_hint = false;
                }
            }
            std::mem::swap(&mut revisit, &mut self.env.ready);
            for id in revisit.drain(..) {
                self.drive(id, false);
            }
            let now = clock::now();
            while let Some(id) = self.timers.pop_due(now) {
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
                Command::Conn(socket, peer) => self.add(socket, peer),
                Command::Drain => self.drain(),
                Command::Reload(rt) => self.reload(rt),
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
        let deadline = now + self.env.rt.handshake_timeout;
        self.env.metrics.connection_opened();
        let id = self.conns.insert_with(|_| Conn {
            socket,
            peer,
            tls,
            phase: Phase::Handshake {
                reader: HeadReader::default(),
                deadline,
            },
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            scheduled: None,
            closing: false,
            write_shut: false,
            linger_until: None,
            read_eof: false,
            over_limit_since: None,
            received_any: false,
            identity: None,
            upstream: None,
            release_wbuf_when_flushed: false,
            token_deadline: None,
            notice_at: None,
            accepted_at: now,
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
            "conn={}.{} peer={peer} worker={} accepted",
            self.env.index, id.index, self.env.index
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
        let now = clock::now();
        self.drain_deadline = Some(now + self.env.rt.shutdown_grace);
        for id in self.conns.ids() {
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
            match &mut conn.phase {
                Phase::Handshake { .. } | Phase::Dialing { .. } => {
                    // Not upgraded yet: SPEC §4 "draining" is 503.
                    reject(conn, &self.env, id, Reject::Draining, None);
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
        let candidates: Vec<ConnId> = match r {
            Revocation::Jti { jti, .. } => self.env.by_jti.get(jti.as_str()).cloned(),
            Revocation::Sub { sub, .. } => self.env.by_sub.get(sub.as_str()).cloned(),
        }
        .unwrap_or_default();
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
                    };
                    reject(conn, &self.env, id, r, None);
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
        self.env.balancers = balancers_for(&self.env.rt);
        if self.env.rt.max_token_bytes > self.env.scratch.max_token_bytes() {
            self.env.scratch = Scratch::new(self.env.rt.max_token_bytes);
        }
        // A reload is rare and operator-driven: a pass over this worker's connections
        // is the simplest correct way to find the retired keys' sessions, and to move each
        // connection's route index to the new route table (by path: indexes may shift).
        let keys = self.env.rt.gate.key_fingerprints.clone();
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
                    reject(conn, &self.env, id, Reject::NoRoute, None);
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
                crate::error!(
                    "conn={}.{} dropped after an internal error",
                    env.index,
                    id.index
                );
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
        let _ = self.poll.registry().deregister(&mut conn.socket);
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
                "conn={}.{} peer={} closed sent={} received={} after={}ms",
                self.env.index,
                id.index,
                conn.peer,
                sent.map_or("-".to_string(), |c| c.to_string()),
                received.map_or("-".to_string(), |c| c.to_string()),
                now.saturating_duration_since(conn.accepted_at).as_millis()
            );
        }
        if let Some(identity) = &conn.identity {
            unindex(&mut self.env.by_sub, &identity.sub, id);
            if let Some(jti) = &identity.jti {
                unindex(&mut self.env.by_jti, jti, id);
            }
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

fn index(map: &mut HashMap<Box<str>, Vec<ConnId>>, key: &str, id: ConnId) {
    match map.get_mut(key) {
        Some(ids) => ids.push(id),
        None => {
            map.insert(key.into(), vec![id]);
        }
    }
}

fn unindex(map: &mut HashMap<Box<str>, Vec<ConnId>>, key: &str, id: ConnId) {
    if let Some(ids) = map.get_mut(key) {
        ids.retain(|x| *x != id);
        if ids.is_empty() {
            map.remove(key);
        }
    }
}

/// The earliest moment this connection needs attention.
fn next_deadline(conn: &Conn, rt: &Runtime) -> Option<Instant> {
    let mut next = conn.linger_until;
    let mut consider = |t: Option<Instant>| {
        if let Some(t) = t {
            next = Some(next.map_or(t, |n: Instant| n.min(t)));
        }
    };
    match &conn.phase {
        Phase::Handshake { deadline, .. } => consider(Some(*deadline)),
        Phase::Open { session, .. } => {
            // While paused for backpressure the idle clock is not consulted (on_timer
            // skips it), so its past-due deadline must not be either: it would spin.
            if conn.over_limit_since.is_none() || session.state() != SessionState::Open {
                consider(session.poll_timeout());
            }
            if session.state() == SessionState::Open {
                consider(conn.token_deadline);
                consider(conn.notice_at);
            }
        }
        Phase::Dialing { .. } => consider(conn.upstream.as_ref().map(|l| l.deadline)),
        Phase::Rejected => {}
    }
    consider(conn.over_limit_since.map(|t| t + rt.session.idle_timeout));
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
        Phase::Dialing { .. } => false,
        // Handshake: bounded by max_request_bytes below. Closing / rejected: drain and
        // discard so our last bytes are not destroyed by a reset over unread input.
        _ => true,
    }
}

fn step(conn: &mut Conn, env: &mut Env, id: ConnId, now: Instant, timer: bool) -> bool {
    let rt = env.rt.clone();
    if timer && !on_timer(conn, env, id, now) {
        return false;
    }
    // Output first: a writable event after backpressure frees room before reading.
    if conn.pending_output() > 0 && conn.flush().is_err() {
        return false;
    }
    if let Some(leg) = &mut conn.upstream {
        if leg.state != LegState::Connecting && leg.flush().is_err() {
            // The upstream is gone (a reset over unread input): the relay answers 1014.
            leg.eof = true;
        }
    }
    // Input left over from a turn cut short by backpressure goes next.
    if matches!(conn.phase, Phase::Open { .. })
        && !conn.rbuf.is_empty()
        && conn.pending_output() < rt.session.write_buffer
    {
        feed_session(conn, env, id, 0, now);
    }
    let mut reads = 0;
    let mut paused = false;
    loop {
        if !wants_read(conn, &rt) {
            paused = !conn.read_eof;
            break;
        }
        if reads == MAX_READS_PER_TURN {
            env.ready.push(id);
            break;
        }
        reads += 1;
        match conn.read_into(&mut env.readbuf) {
            ReadOutcome::Data(n) => {
                conn.received_any = true;
                on_data(conn, env, id, n, now);
                // A short read on plain TCP drained the socket: edge-triggered epoll
                // reports any later bytes as a new event, so skip the read that would
                // only say WouldBlock (one syscall per message saved).
                if n < env.readbuf.len() && conn.tls.is_none() && !env.peer_closed_hint {
                    break;
                }
            }
            ReadOutcome::WouldBlock => break,
            ReadOutcome::Eof => {
                conn.read_eof = true;
                break;
            }
            // A proxied client that reset: let the relay tell the upstream first.
            ReadOutcome::Failed if conn.upstream.is_some() => {
                conn.read_eof = true;
                break;
            }
            ReadOutcome::Failed => return false,
        }
    }
    let mut upstream_paused = false;
    if conn.upstream.is_some() {
        upstream_paused = proxy(conn, env, id, now);
    }
    if let Phase::Open { session, .. } = &conn.phase {
        if session.state() != SessionState::Open {
            conn.closing = true;
        }
    }
    if conn.flush().is_err() {
        return false;
    }
    let pending = conn.pending_output();
    let upstream_pending = conn.upstream.as_ref().map_or(0, |l| l.wbuf.len());
    if pending == 0 && conn.release_wbuf_when_flushed {
        // The 101 is out: an idle connection keeps no output buffer.
        conn.release_wbuf_when_flushed = false;
        conn.wbuf = Vec::new();
    }
    if upstream_paused && pending < rt.session.write_buffer {
        env.ready.push(id);
    }
    if pending >= rt.session.write_buffer || upstream_pending >= rt.session.write_buffer {
        // SPEC §5: write_buffer applies to both legs.
        conn.over_limit_since.get_or_insert(now);
    } else {
        conn.over_limit_since = None;
        if pending == 0 && conn.wbuf.capacity() > KEEP_CAPACITY {
            conn.wbuf = Vec::new();
        }
        // Reading stopped for backpressure and the output has since drained below
        // its limit: come back next turn (edge-triggered readiness will not repeat).
        if paused && wants_read(conn, &rt) {
            env.ready.push(id);
        }
    }
    if conn.read_eof {
        // The peer is done sending (a session still Open saw no close frame: an
        // abnormal closure, 1006). It may still be reading: deliver what is queued
        // first, within the linger bound, then go.
        if conn.output_drained() {
            return false;
        }
        conn.closing = true;
    }
    if conn.closing {
        // One bound for the whole goodbye: flushing the last bytes to a peer that may
        // not read, then waiting for its FIN. Never extended.
        conn.linger_until
            .get_or_insert(now + rt.session.close_linger);
        if !conn.write_shut && conn.output_drained() {
            conn.shutdown_write();
        }
    }
    true
}

/// Handles a fired timer. Returns false to drop the connection.
fn on_timer(conn: &mut Conn, env: &mut Env, id: ConnId, now: Instant) -> bool {
    if conn.linger_until.is_some_and(|t| now >= t) {
        return false;
    }
    match &mut conn.phase {
        Phase::Handshake { deadline, .. } if now >= *deadline => {
            // Slowloris: the whole request must arrive within handshake_timeout.
            if !conn.received_any {
                return false;
            }
            reject(conn, env, id, Reject::HandshakeTimeout, None);
        }
        Phase::Dialing { route } => {
            let route = *route;
            if let Some(leg) = conn.upstream.as_ref().filter(|l| now >= l.deadline) {
                // SPEC §5: no complete answer within upstream_timeout → 504. A target
                // that never even accepted the connection is marked down.
                if leg.state == LegState::Connecting {
                    mark_down(env, route, leg.target, now);
                }
                env.metrics.upstream_error();
                reject(conn, env, id, Reject::GatewayTimeout, None);
            }
        }
        Phase::Open { session, .. } => {
            // Idle: a timer fired with nothing pending; give buffer memory back.
            if conn.wbuf.is_empty() && conn.wbuf.capacity() > 0 {
                conn.wbuf = Vec::new();
            }
            if conn.rbuf.is_empty() && conn.rbuf.capacity() > 0 {
                conn.rbuf = Vec::new();
            }
            // While its output is over write_buffer the gateway is not reading this
            // peer, so silence proves nothing: the slow-consumer rule decides instead.
            if conn.over_limit_since.is_none() || session.state() != SessionState::Open {
                session.handle_timeout(now, &mut conn.wbuf);
            }
            if session.state() == SessionState::Open {
                if conn.token_deadline.is_some_and(|t| now >= t) {
                    // SPEC §6: at exp (+ leeway), close 4401 "token expired".
                    let why = ProtocolError::TokenExpired;
                    session.close(why.close_code(), why.reason(), &mut conn.wbuf);
                    conn.token_deadline = None;
                    conn.notice_at = None;
                } else if conn.notice_at.is_some_and(|t| now >= t) {
                    conn.notice_at = None;
                    if let Some(id) = &conn.identity {
                        let msg = format!(r#"{{"type":"wsgate.expiring","exp":{}}}"#, id.exp);
                        write_message(&mut conn.wbuf, MessageKind::Text, msg.as_bytes());
                    }
                }
            }
            if conn
                .over_limit_since
                .is_some_and(|t| now >= t + env.rt.session.idle_timeout)
            {
                // SPEC §5: output above write_buffer for idle_timeout.
                let why = ProtocolError::SlowConsumer;
                session.close(why.close_code(), why.reason(), &mut conn.wbuf);
                conn.over_limit_since = None;
                conn.closing = true;
            }
        }
        _ => {}
    }
    true
}

/// Routes freshly read bytes (at the start of `env.readbuf`) by phase.
fn on_data(conn: &mut Conn, env: &mut Env, id: ConnId, n: usize, now: Instant) {
    match &mut conn.phase {
        Phase::Handshake { reader, .. } => {
            conn.rbuf.extend_from_slice(&env.readbuf[..n]);
            match reader.poll(&conn.rbuf, env.rt.max_request_bytes) {
                Ok(None) => {}
                Ok(Some(head_len)) => handshake(conn, env, id, head_len, now),
                Err(e) => reject(conn, env, id, e.reject(), None),
            }
        }
        Phase::Open { .. } => feed_session(conn, env, id, n, now),
        // Not read while dialing (wants_read); kept if it arrives anyway.
        Phase::Dialing { .. } => conn.rbuf.extend_from_slice(&env.readbuf[..n]),
        // Discarded: after our answer or close, input only needs draining.
        Phase::Rejected => {}
    }
}

/// Feeds the session: `n` new bytes at the start of `env.readbuf`, after any bytes
/// kept in `conn.rbuf`. Complete messages go to the echo backend.
fn feed_session(conn: &mut Conn, env: &mut Env, id: ConnId, n: usize, now: Instant) {
    let Phase::Open { session, route } = &mut conn.phase else {
        return;
    };
    let rt = &*env.rt;
    let route = *route;
    let scratch = &mut env.scratch;
    let identity = &mut conn.identity;
    let times = (&mut conn.token_deadline, &mut conn.notice_at);
    let shared = &*env.shared;
    let by_jti = &mut env.by_jti;
    let metrics = &*env.metrics;
    let upstream = &mut conn.upstream;
    let mut on_message = |kind: MessageKind, payload: &[u8], out: &mut Vec<u8>| {
        if rt.refresh && kind == MessageKind::Text && payload.starts_with(REFRESH_PREFIX) {
            if let Some(current) = identity.as_mut() {
                let old_jti = current.jti.clone();
                let live = LiveToken {
                    rt,
                    shared,
                    route,
                    now,
                };
                live.refresh(current, payload, scratch, out, times.0, times.1);
                if current.jti != old_jti {
                    if let Some(j) = &old_jti {
                        unindex(by_jti, j, id);
                    }
                    if let Some(j) = &current.jti {
                        index(by_jti, j, id);
                    }
                }
                return;
            }
        }
        metrics.message_in(payload.len() as u64);
        match upstream.as_mut() {
            // Proxied: to the upstream as one masked frame (RFC 6455 §5.1).
            Some(leg) => leg.send_message(kind, payload),
            None => {
                crate::backend::echo::on_message(kind, payload, out);
                metrics.message_out(payload.len() as u64);
            }
        }
    };
    if conn.rbuf.is_empty() {
        // Common case: process straight from the worker's buffer, keep only the tail.
        let input = &mut env.readbuf[..n];
        let used = session.handle_input(input, now, &mut conn.wbuf, &mut on_message);
        conn.rbuf.extend_from_slice(&env.readbuf[used..n]);
    } else {
        conn.rbuf.extend_from_slice(&env.readbuf[..n]);
        let used = session.handle_input(&mut conn.rbuf, now, &mut conn.wbuf, &mut on_message);
        conn.rbuf.drain(..used);
    }
    if conn.rbuf.is_empty() && conn.rbuf.capacity() > KEEP_CAPACITY {
        conn.rbuf = Vec::new();
    }
}

/// When the token's connection must close, and when to send `wsgate.expiring`.
fn token_times(
    rt: &Runtime,
    exp: u64,
    now: Instant,
    now_unix: u64,
) -> (Option<Instant>, Option<Instant>) {
    let notice = rt.refresh.then_some(rt.expiry_notice);
    deadlines(exp, rt.leeway_secs, notice, now, now_unix)
}

/// SPEC §6, pure: close at `exp` + leeway; with refresh on, notice `expiry_notice` before
/// `exp` (at once when already inside that window). `None` = never (a far-future `exp`
/// would overflow `Instant`).
fn deadlines(
    exp: u64,
    leeway_secs: u64,
    notice: Option<Duration>,
    now: Instant,
    now_unix: u64,
) -> (Option<Instant>, Option<Instant>) {
    let at = |unix: u64| now.checked_add(Duration::from_secs(unix.saturating_sub(now_unix)));
    let deadline = at(exp.saturating_add(leeway_secs));
    let notice = notice.and_then(|n| at(exp.saturating_sub(n.as_secs())));
    (deadline, notice)
}

/// What a refresh needs besides the connection's own state.
struct LiveToken<'a> {
    rt: &'a Runtime,
    shared: &'a Shared,
    route: usize,
    now: Instant,
}

impl LiveToken<'_> {
    /// Handles one `wsgate.refresh` message; the reply goes to `out`, never to the backend.
    fn refresh(
        &self,
        current: &mut Identity,
        payload: &[u8],
        scratch: &mut Scratch,
        out: &mut Vec<u8>,
        deadline: &mut Option<Instant>,
        notice: &mut Option<Instant>,
    ) {
        let now_unix = clock::unix_now();
        let result = self
            .rt
            .gate
            .refresh(self.route, current, payload, now_unix, scratch)
            .and_then(|new| {
                let revoked = self.shared.revocations.load().is_revoked(
                    new.jti.as_deref(),
                    &new.sub,
                    new.iat,
                );
                if revoked {
                    Err("token revoked")
                } else {
                    Ok(new)
                }
            });
        let reply = match result {
            Ok(new) => {
                let (d, n) = token_times(self.rt, new.exp, self.now, now_unix);
                *deadline = d;
                *notice = n;
                let reply = format!(r#"{{"type":"wsgate.refreshed","exp":{}}}"#, new.exp);
                *current = new;
                reply
            }
            Err(reason) => {
                serde_json::json!({"type": "wsgate.refresh_failed", "reason": reason}).to_string()
            }
        };
        write_message(out, MessageKind::Text, reply.as_bytes());
    }
}

/// Queues an HTTP rejection and moves to flushing it.
fn reject(conn: &mut Conn, env: &Env, id: ConnId, r: Reject, target: Option<&str>) {
    env.metrics.handshake(r.status());
    conn.wbuf.clear();
    r.write(&mut conn.wbuf);
    warn!(
        "conn={}.{} peer={} target={} rejected status={} reason={}",
        env.index,
        id.index,
        conn.peer,
        target.unwrap_or("-"),
        r.status(),
        r.reason_label()
    );
    conn.rbuf = Vec::new();
    // An upstream leg being dialed is abandoned with the request.
    conn.upstream = None;
    conn.phase = Phase::Rejected;
    conn.closing = true;
}

/// The connection takes on its verified identity: token deadlines, and the per-worker
/// indexes that revocation uses.
fn adopt_identity(
    conn: &mut Conn,
    env: &mut Env,
    id: ConnId,
    identity: Option<Identity>,
    now: Instant,
    now_unix: u64,
) {
    if let Some(identity) = &identity {
        let (deadline, notice) = token_times(&env.rt, identity.exp, now, now_unix);
        conn.token_deadline = deadline;
        conn.notice_at = notice;
        index(&mut env.by_sub, &identity.sub, id);
        if let Some(jti) = &identity.jti {
            index(&mut env.by_jti, jti, id);
        }
    }
    conn.identity = identity;
}

/// The request head is complete: parse, decide, answer.
fn handshake(conn: &mut Conn, env: &mut Env, id: ConnId, head_len: usize, now: Instant) {
    let rt = env.rt.clone();
    let now_unix = clock::unix_now();
    let outcome = {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let head = match parse_head(&conn.rbuf[..head_len], &mut headers) {
            Ok(h) => h,
            Err(e) => {
                let r = e.reject();
                reject(conn, env, id, r, None);
                return;
            }
        };
        let target = crate::log::enabled(crate::log::Level::Warn)
            .then(|| crate::log::redacted_target(head.path, head.query, &rt.token_query_names));
        let upgrade = match validate_upgrade(&head) {
            Ok(u) => u,
            Err(e) => {
                let r = e.reject();
                reject(conn, env, id, r, target.as_deref());
                return;
            }
        };
        let mut ctx = Ctx {
            peer: conn.peer.ip(),
            now,
            now_unix,
            open_connections: env.shared.open.load(Ordering::Relaxed),
            draining: env.draining || env.shared.draining.load(Ordering::Relaxed),
            ips: &env.shared.ips,
            subjects: &env.shared.subjects,
            // The revocation snapshot in force, loaded once for this handshake (no lock).
            revocations: env.revocations.load(),
            longest_lifetime: &env.shared.longest_lifetime,
            auth_failure: None,
            scratch: &mut env.scratch,
            token_buf: &mut env.token_buf,
        };
        let decision = rt.gate.decide(&head, &upgrade, &mut ctx);
        if let Some(reason) = ctx.auth_failure {
            env.metrics.auth_failure(reason);
        }
        match decision {
            Ok(accept) => {
                let plan = if accept.explain.is_none() {
                    upstream_plan(
                        &rt,
                        accept.route,
                        &head,
                        &upgrade,
                        conn.peer.ip(),
                        accept.identity.as_ref(),
                        accept.claims_b64.as_deref(),
                    )
                } else {
                    Ok(None)
                };
                let plan = match plan {
                    Ok(p) => p,
                    Err(r) => {
                        if let Some(i) = &accept.identity {
                            env.shared.subjects.release(&i.sub);
                        }
                        return reject(conn, env, id, r, target.as_deref());
                    }
                };
                if plan.is_none() {
                    let key = accept_key(upgrade.key);
                    conn.wbuf.clear();
                    write_switching_protocols(&mut conn.wbuf, &key, accept.protocol);
                }
                Ok((accept.route, accept.identity, accept.explain, target, plan))
            }
            Err(r) => Err((r, target)),
        }
    };
    match outcome {
        Err((r, target)) => reject(conn, env, id, r, target.as_deref()),
        Ok((route, identity, _, target, Some(plan))) => {
            // Upstream route: the client's 101 waits for the upstream's (SPEC §5).
            adopt_identity(conn, env, id, identity, now, now_unix);
            conn.rbuf.drain(..head_len);
            info!(
                "conn={}.{} peer={} target={} route={} dialing upstream",
                env.index,
                id.index,
                conn.peer,
                target.as_deref().unwrap_or("-"),
                rt.gate.routes[route].path,
            );
            start_upstream(conn, env, id, route, plan, now);
        }
        Ok((route, identity, explain, target, None)) => {
            env.metrics.handshake(101);
            let mut session = Box::new(Session::new(rt.session, now));
            info!(
                "conn={}.{} peer={} target={} route={} sub={} upgraded",
                env.index,
                id.index,
                conn.peer,
                target.as_deref().unwrap_or("-"),
                rt.gate.routes[route].path,
                identity.as_ref().map_or("-", |i| &*i.sub)
            );
            if let Some(why) = explain {
                // auth.explain_to_browsers: tell the script why, then close.
                session.close(why.close_code(), why.reason(), &mut conn.wbuf);
            }
            adopt_identity(conn, env, id, identity, now, now_unix);
            conn.rbuf.drain(..head_len);
            if conn.rbuf.is_empty() {
                // The request head's buffer is not needed by an idle open connection.
                conn.rbuf = Vec::new();
            }
            conn.release_wbuf_when_flushed = true;
            conn.phase = Phase::Open { session, route };
            // Bytes that followed the head in the same read are frames (SPEC §4).
            if !conn.rbuf.is_empty() {
                feed_session(conn, env, id, 0, now);
            }
        }
    }
}

// === upstream routes (SPEC §5) ===

/// One balancer per route (empty for echo routes), sized from the runtime.
fn balancers_for(rt: &Runtime) -> Vec<Balancer> {
    rt.upstream_addrs
        .iter()
        .map(|targets| Balancer::new(targets.len()))
        .collect()
}

fn mark_down(env: &mut Env, route: usize, target: usize, now: Instant) {
    let backoff = match &env.rt.gate.routes.get(route).map(|r| &r.backend) {
        Some(Backend::Upstream { backoff, .. }) => *backoff,
        _ => return,
    };
    if let Some(b) = env.balancers.get_mut(route) {
        b.mark_down(target, now, backoff);
    }
}

/// What the handshake prepared for an upstream route.
struct UpstreamPlan {
    request: Vec<u8>,
    key: [u8; 24],
    offered: Vec<String>,
    client_accept: [u8; 28],
}

/// Builds the upgrade request for the upstream from the client's request (SPEC §5):
/// query minus token parameters, the client's end-to-end headers minus anything that
/// carries a token or forged identity, `X-Forwarded-For`, `X-Auth-*` from the token.
fn upstream_plan(
    rt: &Runtime,
    route: usize,
    head: &RequestHead<'_, '_>,
    upgrade: &Upgrade<'_>,
    peer: std::net::IpAddr,
    identity: Option<&Identity>,
    claims_b64: Option<&str>,
) -> Result<Option<UpstreamPlan>, Reject> {
    let Some(r) = rt.gate.routes.get(route) else {
        return Ok(None);
    };
    let Backend::Upstream { urls, .. } = &r.backend else {
        return Ok(None);
    };
    // Every target of a route shares its path and Host in practice; the request is
    // rebuilt per attempt only in its Host line, so use the first target's here and
    // the real one in `start_upstream` (same path rules).
    let url = urls.first().ok_or(Reject::BadGateway)?;
    let mut offered: Vec<String> = Vec::new();
    for value in head.headers_named("sec-websocket-protocol") {
        for p in fields::list_tokens(value) {
            if p.starts_with(b"bearer.") {
                continue;
            }
            let Ok(p) = std::str::from_utf8(p) else {
                continue;
            };
            if r.protocols.is_empty() || r.protocols.iter().any(|a| a == p) {
                offered.push(p.to_owned());
            }
        }
    }
    let client_headers: Vec<(&str, &[u8])> =
        head.headers.iter().map(|h| (h.name, h.value)).collect();
    let token_query: Vec<&str> = rt.token_query_names.iter().map(String::as_str).collect();
    let token_cookies: Vec<&str> = rt.token_cookie_names.iter().map(String::as_str).collect();
    let offered_refs: Vec<&str> = offered.iter().map(String::as_str).collect();
    let scope = identity.map(|i| i.scopes.join(" "));
    let key = random_key(&ring::rand::SystemRandom::new()).map_err(|_| Reject::BadGateway)?;
    let forward = ForwardRequest {
        upstream_host_header: &url.host_header,
        upstream_path: &url.path,
        client_query: head.query,
        token_query_names: &token_query,
        client_headers: &client_headers,
        token_cookie_names: &token_cookies,
        offered_protocols: &offered_refs,
        client_addr: peer,
        subject: identity.map(|i| &*i.sub),
        scope: scope.as_deref(),
        claims_b64,
    };
    let mut request = Vec::with_capacity(512);
    write_upstream_request(&forward, &key, &mut request).map_err(|_| Reject::BadGateway)?;
    Ok(Some(UpstreamPlan {
        request,
        key,
        offered,
        client_accept: accept_key(upgrade.key),
    }))
}

/// The next upstream of `route` that is not marked down and not in `tried`, round-robin.
fn next_target(
    env: &mut Env,
    route: usize,
    tried: &[usize],
    now: Instant,
) -> Option<(usize, SocketAddr)> {
    let target = env.balancers.get_mut(route)?.pick(now, tried)?;
    let addr = *env.rt.upstream_addrs.get(route)?.get(target)?;
    Some((target, addr))
}

/// Connects to the next healthy upstream of `route` not yet tried; false when none is
/// left (the caller answers 502).
fn dial_next(conn: &mut Conn, env: &mut Env, id: ConnId, route: usize, now: Instant) -> bool {
    loop {
        let tried: Vec<usize> = conn
            .upstream
            .as_ref()
            .map(|l| l.tried.clone())
            .unwrap_or_default();
        let Some((target, addr)) = next_target(env, route, &tried, now) else {
            return false;
        };
        let Some(leg) = conn.upstream.as_mut() else {
            return false;
        };
        match leg.reconnect(&env.registry, id, addr, target) {
            Ok(()) => return true,
            Err(_) => {
                env.metrics.upstream_error();
                mark_down(env, route, target, now);
            }
        }
    }
}

/// Starts the upstream leg after the gate accepted a request for an upstream route.
#[allow(clippy::too_many_arguments)]
fn start_upstream(
    conn: &mut Conn,
    env: &mut Env,
    id: ConnId,
    route: usize,
    plan: UpstreamPlan,
    now: Instant,
) {
    let timeout = match env.rt.gate.routes.get(route).map(|r| &r.backend) {
        Some(Backend::Upstream { timeout, .. }) => *timeout,
        _ => Duration::from_secs(10),
    };
    let deadline = now + timeout;
    let mut tried = Vec::new();
    loop {
        let Some((target, addr)) = next_target(env, route, &tried, now) else {
            // SPEC §5: no upstream left to try.
            env.metrics.upstream_error();
            reject(conn, env, id, Reject::BadGateway, None);
            return;
        };
        tried.push(target);
        match UpstreamLeg::connect(
            &env.registry,
            id,
            addr,
            target,
            plan.request.clone(),
            plan.key,
            plan.offered.clone(),
            plan.client_accept,
            deadline,
        ) {
            Ok(mut leg) => {
                leg.tried = tried;
                conn.upstream = Some(Box::new(leg));
                conn.phase = Phase::Dialing { route };
                return;
            }
            Err(_) => {
                env.metrics.upstream_error();
                mark_down(env, route, target, now);
            }
        }
    }
}

/// Drives the upstream leg: connect, handshake, relay, close. Returns true when reading
/// the upstream paused because the client's output is over its limit.
fn proxy(conn: &mut Conn, env: &mut Env, id: ConnId, now: Instant) -> bool {
    let rt = env.rt.clone();
    let limit = rt.session.write_buffer;
    let rbuf_cap = limit.max(
        usize::try_from(rt.session.max_frame)
            .unwrap_or(usize::MAX)
            .saturating_add(14),
    );
    let Some(leg) = conn.upstream.as_mut() else {
        return false;
    };
    if leg.state == LegState::Connecting {
        match leg.poll_connected() {
            Some(false) => return false,
            Some(true) => {}
            None => {
                let Phase::Dialing { route } = conn.phase else {
                    return false;
                };
                let target = leg.target;
                env.metrics.upstream_error();
                mark_down(env, route, target, now);
                // SPEC §5: the next upstream is tried within the same client handshake.
                let request = std::mem::take(&mut leg.request);
                if dial_next(conn, env, id, route, now) {
                    if let Some(leg) = conn.upstream.as_mut() {
                        leg.request = request;
                    }
                } else {
                    reject(conn, env, id, Reject::BadGateway, None);
                }
                return false;
            }
        }
    }
    let Some(leg) = conn.upstream.as_mut() else {
        return false;
    };
    if let Phase::Dialing { route } = conn.phase {
        if leg.state == LegState::Handshaking {
            if let Some(b) = env.balancers.get_mut(route) {
                b.mark_up(leg.target);
            }
        }
    }
    if leg.flush().is_err() {
        leg.eof = true;
    }
    let mut paused = false;
    let mut reads = 0;
    loop {
        let Some(leg) = conn.upstream.as_mut() else {
            return false;
        };
        if leg.state == LegState::Done || leg.eof {
            break;
        }
        // Backpressure (SPEC §5): read the upstream only while the client's output and
        // the not-yet-relayed bytes are under their bounds (one whole frame may need up
        // to max_frame).
        if leg.state == LegState::Open && (conn.wbuf.len() >= limit || leg.rbuf.len() >= rbuf_cap) {
            paused = true;
            break;
        }
        if reads == MAX_READS_PER_TURN {
            env.ready.push(id);
            break;
        }
        reads += 1;
        match leg.read(&mut env.readbuf) {
            Ok(0) => leg.eof = true,
            Ok(n) => leg.rbuf.extend_from_slice(&env.readbuf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(_) => leg.eof = true,
        }
        if leg.state != LegState::Handshaking {
            continue;
        }
        let eof = leg.eof;
        match leg.answer() {
            upstream::Answer::Pending if eof => {
                env.metrics.upstream_error();
                reject(conn, env, id, Reject::BadGateway, None);
                return false;
            }
            upstream::Answer::Pending => {}
            upstream::Answer::Switching(protocol) => {
                let client_accept = leg.client_accept;
                open_proxied(conn, env, id, protocol.as_deref(), &client_accept, now);
            }
            upstream::Answer::Rejected {
                status,
                body,
                www_authenticate,
                retry_after,
            } => {
                let r = Reject::UpstreamStatus {
                    status,
                    body,
                    www_authenticate,
                    retry_after,
                };
                reject(conn, env, id, r, None);
                return false;
            }
            upstream::Answer::Bad => {
                env.metrics.upstream_error();
                reject(conn, env, id, Reject::BadGateway, None);
                return false;
            }
        }
    }
    relay_upstream(conn, env, now, limit, &mut paused);
    paused
}

/// Upstream → client, and the close rules that tie the two legs (SPEC §5 "Relay").
fn relay_upstream(conn: &mut Conn, env: &mut Env, _now: Instant, limit: usize, paused: &mut bool) {
    let rt = env.rt.clone();
    let Phase::Open { session, .. } = &mut conn.phase else {
        return;
    };
    let Some(leg) = conn.upstream.as_mut() else {
        return;
    };
    if matches!(leg.state, LegState::Open | LegState::Closing) && !leg.rbuf.is_empty() {
        if session.state() == SessionState::Open {
            let before = conn.wbuf.len();
            match leg.relay(&mut conn.wbuf, limit, rt.session.max_frame) {
                Relayed::Continue => {}
                Relayed::Closed(code, reason) => {
                    // Relayed as sent; "no status" becomes a plain normal closure.
                    let code = if code == 1005 { 1000 } else { code };
                    session.close(code, &reason, &mut conn.wbuf);
                }
                Relayed::Broken => {
                    env.metrics.upstream_error();
                    session.close(1014, "bad gateway", &mut conn.wbuf);
                    leg.state = LegState::Done;
                }
            }
            if conn.wbuf.len() > before {
                env.metrics.message_out((conn.wbuf.len() - before) as u64);
            }
            if conn.wbuf.len() >= limit && !leg.rbuf.is_empty() {
                *paused = true;
            }
        } else {
            // The client is closing: upstream data has nowhere to go.
            leg.rbuf.clear();
        }
    }
    if leg.eof && session.state() == SessionState::Open {
        // SPEC §5: an upstream that vanishes without a close gives the client 1014.
        env.metrics.upstream_error();
        session.close(1014, "bad gateway", &mut conn.wbuf);
        leg.state = LegState::Done;
    }
    if session.state() != SessionState::Open && leg.state == LegState::Open {
        // The client closed, or the gateway closed it (4401, 4403, 1008, ...): the
        // upstream gets the same code and reason.
        let (code, reason) = match session.close_received() {
            Some(code) => (code, session.close_received_reason()),
            None => (
                session.close_sent().unwrap_or(1005),
                session.close_sent_reason(),
            ),
        };
        leg.send_close(code, reason);
    }
    if conn.read_eof && leg.state == LegState::Open {
        // SPEC §5: a client that vanishes gives the upstream 1001 "going away".
        leg.send_close(1001, "going away");
    }
    if leg.flush().is_err() && leg.state == LegState::Open {
        leg.eof = true;
        if session.state() == SessionState::Open {
            env.metrics.upstream_error();
            session.close(1014, "bad gateway", &mut conn.wbuf);
        }
        leg.state = LegState::Done;
    }
}

/// The upstream said 101: the client gets its 101 with the upstream's protocol, and
/// frames start flowing.
fn open_proxied(
    conn: &mut Conn,
    env: &mut Env,
    id: ConnId,
    protocol: Option<&str>,
    client_accept: &[u8; 28],
    now: Instant,
) {
    let Phase::Dialing { route } = conn.phase else {
        return;
    };
    env.metrics.handshake(101);
    conn.wbuf.clear();
    write_switching_protocols(&mut conn.wbuf, client_accept, protocol);
    conn.release_wbuf_when_flushed = true;
    info!(
        "conn={}.{} peer={} route={} sub={} upgraded (upstream)",
        env.index,
        id.index,
        conn.peer,
        env.rt
            .gate
            .routes
            .get(route)
            .map_or("-", |r| r.path.as_str()),
        conn.identity.as_ref().map_or("-", |i| &*i.sub)
    );
    conn.phase = Phase::Open {
        session: Box::new(Session::new(env.rt.session, now)),
        route,
    };
    if !conn.rbuf.is_empty() {
        feed_session(conn, env, id, 0, now);
    }
}

#[cfg(test)]
mod deadline_tests {
    use super::*;

    #[test]
    fn expiry_and_notice_on_a_virtual_clock() {
        let t0 = crate::fuzzing::virtual_epoch();
        let now_unix = 1_000_000;
        // exp in 120 s, leeway 30 s, notice 60 s before exp.
        let (close, notice) = deadlines(
            now_unix + 120,
            30,
            Some(Duration::from_secs(60)),
            t0,
            now_unix,
        );
        assert_eq!(close, Some(t0 + Duration::from_secs(150)));
        assert_eq!(notice, Some(t0 + Duration::from_secs(60)));
        // Refresh off: no notice.
        assert_eq!(deadlines(now_unix + 120, 30, None, t0, now_unix).1, None);
        // Already inside the notice window: notice now.
        let (_, notice) = deadlines(
            now_unix + 10,
            0,
            Some(Duration::from_secs(60)),
            t0,
            now_unix,
        );
        assert_eq!(notice, Some(t0));
        // Expired but within leeway: close when the leeway ends.
        let (close, _) = deadlines(now_unix - 5, 30, None, t0, now_unix);
        assert_eq!(close, Some(t0 + Duration::from_secs(25)));
        // A refresh moves the deadline to the new exp.
        let (close, _) = deadlines(now_unix + 3600, 30, None, t0, now_unix);
        assert_eq!(close, Some(t0 + Duration::from_secs(3630)));
        // exp near u64::MAX: never, no overflow.
        assert_eq!(deadlines(u64::MAX, 30, None, t0, now_unix).0, None);
    }
}
