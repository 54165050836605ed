//! One connection's turn: run its state machine on readable / writable / timer events
//! (`step`), feed received frames to its session, and keep its token deadlines (SPEC §5
//! expiry, notice and refresh).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::handshake::{handshake, reject};
use super::proxy::{log_upstream_failure, mark_down, proxy};
use super::{wants_read, Env, Runtime, Shared, KEEP_CAPACITY, MAX_READS_PER_TURN};
use crate::auth::error::TokenError;
use crate::auth::revocation::token_lifetime;
use crate::auth::verify::Scratch;
use crate::clock;
use crate::clock::Tick;
use crate::gate::decide::Identity;
use crate::gate::refresh::is_refresh;
use crate::gate::reject::Reject;
use crate::net::conn::{Conn, Phase, ReadOutcome};
use crate::net::principal::Terms;
use crate::net::token::ConnId;
use crate::net::upstream::{LegState, Notice, UpstreamLeg};
use crate::proto::error::ProtocolError;
use crate::proto::ws::message::MessageKind;
use crate::proto::ws::session::{write_message, SessionState};

pub(super) fn step(conn: &mut Conn, env: &mut Env, id: ConnId, now: Instant, timer: bool) -> bool {
    // `env.rt` is read in place: cloning the `Arc` would cost two atomic operations on
    // a cache line every worker shares, on every event.
    if timer && !on_timer(conn, env, now) {
        return false;
    }
    // Output first: a writable event after backpressure frees room before reading.
    if conn.pending_output() > 0 && conn.flush().is_err() {
        return false;
    }
    if let Some(leg) = &mut conn.upstream {
        env.woke.apply(leg);
        if leg.state != LegState::Connecting && leg.flush().is_err() {
            // The upstream is gone (a reset over unread input): the relay answers 1014.
            leg.eof = true;
        }
    }
    // Input left over from a turn cut short by backpressure goes next.
    if matches!(conn.phase, Phase::Open { .. })
        && !conn.rbuf.is_empty()
        && conn.pending_output() < env.rt.session.write_buffer
    {
        feed_session(conn, env, id, 0, now);
    }
    let mut reads = 0;
    let mut paused = false;
    // The last read left the kernel's receive queue empty (a short read or WouldBlock).
    let mut input_drained = false;
    loop {
        // A proxied client's socket drained since its last event needs no read (proxy.rs
        // `Woke`).
        if conn.upstream.as_ref().is_some_and(|l| l.client_quiet) {
            break;
        }
        if !wants_read(conn, &env.rt) {
            paused = !conn.read_eof;
            break;
        }
        if reads == MAX_READS_PER_TURN {
            env.ready.push(id);
            break;
        }
        reads += 1;
        match conn.read_into(&mut env.readbuf) {
            ReadOutcome::Data { n, drained } => {
                conn.received_any = true;
                on_data(conn, env, id, n, now);
                // A short read drained the socket: edge-triggered epoll reports any later
                // bytes as a new event, so skip the read that would only say WouldBlock
                // (one syscall per message saved). With the peer's FIN or an error
                // reported, read on to see it.
                if drained && !env.peer_closed_hint {
                    input_drained = true;
                    if let Some(leg) = &mut conn.upstream {
                        leg.client_quiet = true;
                    }
                    break;
                }
            }
            ReadOutcome::WouldBlock => {
                input_drained = true;
                if let Some(leg) = &mut conn.upstream {
                    leg.client_quiet = true;
                }
                break;
            }
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
        // The 101 is out: an idle connection keeps no output buffer (back to the pool).
        conn.release_wbuf_when_flushed = false;
        conn.wbuf.release();
    }
    if upstream_paused && pending < env.rt.session.write_buffer {
        env.ready.push(id);
    }
    if pending >= env.rt.session.write_buffer || upstream_pending >= env.rt.session.write_buffer {
        // SPEC §5: write_buffer applies to both legs.
        conn.over_limit(Tick::from(now));
    } else {
        conn.under_limit();
        if pending == 0 && conn.wbuf.capacity() > KEEP_CAPACITY {
            conn.wbuf.free();
        }
        // Reading stopped for backpressure and the output has since drained below
        // its limit: come back next turn (edge-triggered readiness will not repeat).
        if paused && wants_read(conn, &env.rt) {
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
    if conn.closing && input_drained && close_handshake_done(conn) && conn.output_drained() {
        // RFC 6455 §7.1.1: both close frames are exchanged, so the server closes TCP
        // first. Nothing is left unread (a close over unread input would be a reset that
        // can destroy our close frame) and all our bytes are in the kernel, which
        // delivers them before its FIN: close now instead of a shutdown and a turn
        // waiting for the peer's FIN (two syscalls and a wakeup per connection).
        return false;
    }
    if conn.closing {
        // One bound for the whole goodbye: flushing the last bytes to a peer that may
        // not read, then waiting for its FIN. Never extended.
        conn.start_linger(Tick::from(now + env.rt.session.close_linger));
        if !conn.write_shut && conn.output_drained() {
            conn.shutdown_write();
        }
    }
    true
}

/// Handles a fired timer. Returns false to drop the connection.
fn on_timer(conn: &mut Conn, env: &mut Env, now: Instant) -> bool {
    let tick = Tick::from(now);
    if conn.linger_until().is_some_and(|t| tick >= t) {
        return false;
    }
    match &mut conn.phase {
        Phase::Handshake { deadline, .. } if tick >= *deadline => {
            // Slowloris: the whole request must arrive within handshake_timeout.
            if !conn.received_any {
                return false;
            }
            reject(conn, env, Reject::HandshakeTimeout, None);
        }
        Phase::Parked { deadline, .. } if tick >= *deadline => {
            // SPEC §9: parked at most handshake_timeout; the kid is still unknown.
            env.metrics
                .auth_failure(TokenError::UnknownKid.reason_label());
            let r = Reject::InvalidToken {
                description: TokenError::UnknownKid.description(),
                reason: TokenError::UnknownKid.reason_label(),
            };
            reject(conn, env, r, None);
        }
        Phase::Dialing { route } => {
            let route = *route;
            if let Some(leg) = conn.upstream.as_ref().filter(|l| now >= l.deadline) {
                // SPEC §5: no complete answer within upstream_timeout → 504. A target
                // that never even accepted the connection is marked down.
                let what = match leg.state {
                    LegState::Connecting => "connect: no answer within upstream_timeout",
                    _ => "handshake: no answer within upstream_timeout",
                };
                let dialed = Some(leg.addr);
                log_upstream_failure(
                    (conn.serial, conn.peer),
                    env,
                    route,
                    leg.target,
                    dialed,
                    &what,
                );
                if leg.state == LegState::Connecting {
                    mark_down(env, route, leg.target, now);
                }
                env.metrics.upstream_error();
                reject(conn, env, Reject::GatewayTimeout, None);
            }
        }
        Phase::Open { session, .. } => {
            // Idle: a timer fired with nothing pending; give buffer memory back.
            conn.wbuf.release();
            conn.rbuf.release();
            // While its output is over write_buffer the gateway is not reading this
            // peer, so silence proves nothing: the slow-consumer rule decides instead.
            let over_limit_since = conn.slow.as_ref().and_then(|s| s.over_limit_since);
            if over_limit_since.is_none() || session.state() != SessionState::Open {
                session.handle_timeout(now, &mut conn.wbuf);
            }
            if let Some(token) = conn
                .identity
                .as_deref()
                .filter(|_| session.state() == SessionState::Open)
            {
                // Once closing, the session is no longer Open and these are not looked
                // at again.
                if token.token_deadline.is_some_and(|t| tick >= t) {
                    // SPEC §6: at exp (+ leeway), close 4401 "token expired".
                    let why = ProtocolError::TokenExpired;
                    session.close(why.close_code(), why.reason(), &mut conn.wbuf);
                } else if !conn.notice_sent && token.notice_at.is_some_and(|t| tick >= t) {
                    conn.notice_sent = true;
                    let msg = format!(r#"{{"type":"wsgate.expiring","exp":{}}}"#, token.exp);
                    let leg = conn.upstream.as_deref_mut();
                    notify(leg, &mut conn.wbuf, Notice::Expiring, msg.as_bytes());
                }
            }
            if over_limit_since.is_some_and(|t| now >= t.instant() + env.rt.session.idle_timeout) {
                // SPEC §5: output above write_buffer for idle_timeout.
                let why = ProtocolError::SlowConsumer;
                session.close(why.close_code(), why.reason(), &mut conn.wbuf);
                if let Some(slow) = &mut conn.slow {
                    slow.over_limit_since = None;
                }
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
                Err(e) => reject(conn, env, Reject::from(e), None),
            }
        }
        Phase::Open { .. } => feed_session(conn, env, id, n, now),
        // Not read while dialing (wants_read); kept if it arrives anyway.
        Phase::Dialing { .. } | Phase::Parked { .. } => {
            conn.rbuf.extend_from_slice(&env.readbuf[..n])
        }
        // Discarded: after our answer or close, input only needs draining.
        Phase::Rejected => {}
    }
}

/// Feeds the session: `n` new bytes at the start of `env.readbuf`, after any bytes
/// kept in `conn.rbuf`. Complete messages go to the echo backend.
pub(super) fn feed_session(conn: &mut Conn, env: &mut Env, id: ConnId, n: usize, now: Instant) {
    let Phase::Open { session, route } = &mut conn.phase else {
        return;
    };
    let rt = &*env.rt;
    let route = *route;
    let scratch = &mut env.scratch;
    let identity = &mut conn.identity;
    let (notice_sent, failed) = (&mut conn.notice_sent, &mut conn.failed_refreshes);
    let shared = &*env.shared;
    let principals = &mut env.principals;
    let metrics = &*env.metrics;
    let upstream = &mut conn.upstream;
    let peer = conn.peer.ip();
    // SPEC §6: past max_failed_refreshes the connection closes; nothing after the
    // refresh that passed the limit is delivered.
    let mut too_many = false;
    let mut on_message = |kind: MessageKind, payload: &[u8], out: &mut Vec<u8>| {
        if too_many {
            return;
        }
        if rt.refresh && kind == MessageKind::Text && is_refresh(payload) {
            if let Some(current) = identity.as_ref() {
                let live = LiveToken {
                    rt,
                    shared,
                    route,
                    now,
                    peer,
                };
                let (refreshed, reply) = live.refresh(current, payload, scratch);
                let notice = if refreshed.is_some() {
                    Notice::Refreshed
                } else {
                    Notice::RefreshFailed
                };
                notify(upstream.as_deref_mut(), out, notice, reply.as_bytes());
                match refreshed {
                    // The connection moves to its new token's record.
                    Some((new, times)) => {
                        principals.release(id, current);
                        *identity = Some(principals.adopt(id, new, times, terms(rt)));
                        *notice_sent = false;
                    }
                    None => {
                        *failed = failed.saturating_add(1);
                        too_many = *failed > rt.max_failed_refreshes;
                    }
                }
                return;
            }
            // A public route has no token to refresh; SPEC §6: a refresh message is
            // never echoed or forwarded all the same.
            let reply = r#"{"type":"wsgate.refresh_failed","reason":"no token to refresh"}"#;
            notify(
                upstream.as_deref_mut(),
                out,
                Notice::RefreshFailed,
                reply.as_bytes(),
            );
            return;
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
        if used < n {
            // Only a partial frame takes a buffer from the pool.
            conn.rbuf.extend_from_slice(&env.readbuf[used..n]);
        }
    } else {
        conn.rbuf.extend_from_slice(&env.readbuf[..n]);
        let used = session.handle_input(&mut conn.rbuf, now, &mut conn.wbuf, &mut on_message);
        conn.rbuf.drain(..used);
    }
    if too_many {
        let why = ProtocolError::TooManyFailedRefreshes;
        session.close(why.close_code(), why.reason(), &mut conn.wbuf);
        conn.rbuf.free();
    }
    if conn.rbuf.is_empty() && conn.rbuf.capacity() > KEEP_CAPACITY {
        conn.rbuf.free();
    }
}

/// What [`token_times`] computes deadlines with (a token record's terms).
pub(super) fn terms(rt: &Runtime) -> Terms {
    (rt.leeway_secs, rt.refresh.then_some(rt.expiry_notice))
}

/// Sends the gateway's own message `text` to the client (SPEC §6), or, on a proxied
/// connection while a relayed upstream message is in progress toward the client, holds it
/// until that message's final fragment (RFC 6455 §5.4: fragments of one message are not
/// interleaved with another data message).
fn notify(leg: Option<&mut UpstreamLeg>, out: &mut Vec<u8>, notice: Notice, text: &[u8]) {
    match leg.filter(|leg| leg.mid_message()) {
        Some(leg) => leg.hold(notice, text),
        None => write_message(out, MessageKind::Text, text),
    }
}

/// When the token's connection must close, and when to send `wsgate.expiring`.
pub(super) fn token_times(
    rt: &Runtime,
    exp: u64,
    now: Instant,
    now_unix: u64,
) -> (Option<Tick>, Option<Tick>) {
    let notice = rt.refresh.then_some(rt.expiry_notice);
    let (deadline, notice) = deadlines(exp, rt.leeway_secs, notice, now, now_unix);
    (deadline.map(Tick::from), notice.map(Tick::from))
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
    /// The client's address: failed refreshes count against its `per_ip_auth_failures`.
    peer: std::net::IpAddr,
}

impl LiveToken<'_> {
    /// Handles one `wsgate.refresh` message: the new token's identity and deadlines, or
    /// `None` when it failed (the caller counts it against the connection's
    /// `max_failed_refreshes`), and the reply for the client, never for the backend.
    #[allow(clippy::type_complexity)]
    fn refresh(
        &self,
        current: &Identity,
        payload: &[u8],
        scratch: &mut Scratch,
    ) -> (Option<(Identity, (Option<Tick>, Option<Tick>))>, String) {
        let now_unix = clock::unix_now();
        let ips = &self.shared.ips;
        // SPEC §6: past the address's failed-token budget a refresh is refused before any
        // signature is checked.
        let result = if ips.auth_allowed(self.peer, self.now) {
            self.rt
                .gate
                .refresh(self.route, current, payload, now_unix, scratch)
        } else {
            Err("too many failures")
        };
        let result = result.and_then(|new| {
            let revoked =
                self.shared
                    .revocations
                    .load()
                    .is_revoked(new.jti.as_deref(), &new.sub, new.iat);
            if revoked {
                Err("token revoked")
            } else {
                Ok(new)
            }
        });
        let (reply, refreshed) = match result {
            Ok(new) => {
                // Revocation retention keeps `sub` entries for the longest lifetime seen.
                self.shared.longest_lifetime.fetch_max(
                    token_lifetime(new.exp, new.iat, now_unix),
                    Ordering::Relaxed,
                );
                let times = token_times(self.rt, new.exp, self.now, now_unix);
                let reply = format!(r#"{{"type":"wsgate.refreshed","exp":{}}}"#, new.exp);
                (reply, Some((new, times)))
            }
            Err(reason) => {
                // Counts like a failed handshake token (SPEC §6).
                ips.auth_failed(self.peer, self.now);
                let reply = serde_json::json!({"type": "wsgate.refresh_failed", "reason": reason});
                (reply.to_string(), None)
            }
        };
        (refreshed, reply)
    }
}

/// A plain-TCP client connection whose close handshake is complete: our close frame sent
/// and the peer's received. TLS connections keep the graceful path (close_notify, then
/// the peer's), and so do proxied ones (the upstream leg has its own goodbye).
fn close_handshake_done(conn: &Conn) -> bool {
    if conn.tls.is_some() || conn.upstream.is_some() {
        return false;
    }
    matches!(&conn.phase, Phase::Open { session, .. }
        if session.state() == SessionState::Closed && session.close_received().is_some())
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
