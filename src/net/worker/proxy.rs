//! Upstream routes (SPEC §5): pick a target, dial it, and relay between the client
//! session and the upstream leg.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::drive::feed_session;
use super::handshake::reject;
use super::{Env, Runtime, MAX_READS_PER_TURN};
use crate::backend::upstream::dial_order;
use crate::config::Backend;
use crate::gate::decide::Identity;
use crate::gate::reject::Reject;
use crate::net::conn::{Conn, Phase};
use crate::net::tls::UpstreamTls;
use crate::net::token::ConnId;
use crate::net::upstream::{self, LegState, Relayed, UpstreamLeg, UPSTREAM_BIT};
use crate::proto::http::client::{random_key, write_upstream_request, ForwardRequest};
use crate::proto::http::fields;
use crate::proto::http::request::{RequestHead, Upgrade};
use crate::proto::http::response::write_switching_protocols_deflate;
use crate::proto::ws::accept::accept_key;
use crate::proto::ws::deflate::{ClientOffer, MemoryBudget, Ticket};
use crate::proto::ws::session::{Session, SessionState};
use crate::{info, warn};

pub(super) fn mark_down(env: &mut Env, route: usize, target: usize, now: Instant) {
    let backoff = match &env.rt.gate.routes.get(route).map(|r| &r.backend) {
        Some(Backend::Upstream { backoff, .. }) => *backoff,
        _ => return,
    };
    if let Some(b) = env.rt.balancers.get(route) {
        b.mark_down(target, now, backoff);
    }
}

/// SPEC §5: a failed connect to `target` (the OS error, or "dns: ..." for a name with no
/// address) is logged with its target and reason, and counted; the caller marks the target
/// down once every address of it failed.
fn connect_failed(
    conn: (u64, SocketAddr),
    env: &mut Env,
    route: usize,
    (target, addr): (usize, Option<SocketAddr>),
    what: &dyn std::fmt::Display,
) {
    log_upstream_failure(conn, env, route, target, addr, what);
    env.metrics.upstream_error();
}

/// SPEC §7: an upstream failure names the target (as configured, and the address
/// dialed when there was one) and what went wrong (the OS error, or the protocol problem).
pub(super) fn log_upstream_failure(
    (serial, peer): (u64, SocketAddr),
    env: &Env,
    route: usize,
    target: usize,
    addr: Option<SocketAddr>,
    what: &dyn std::fmt::Display,
) {
    let url = match env.rt.gate.routes.get(route).map(|r| &r.backend) {
        Some(Backend::Upstream { urls, .. }) => urls.get(target).map(|u| u.url.as_str()),
        _ => None,
    };
    warn!(
        "conn={serial} peer={peer} upstream={} addr={} failed: {what}",
        url.unwrap_or("-"),
        addr.map_or("-".to_string(), |a| a.to_string()),
    );
}

/// Which sockets of a proxied connection the event being handled may have made readable.
/// Readiness is edge-triggered: a socket read to WouldBlock, or drained by a short read,
/// reports new input as a new event, so a step reads only the sockets that may have some
/// (on a busy relay this saves a read that would only say WouldBlock per leg per turn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Woke {
    /// Not an event (a timer, a revisit, a new connection): read both.
    Both,
    /// The client's socket.
    Client,
    /// The upstream's socket.
    Upstream,
    /// Writable only: no new input on either socket (a readable socket's event carries
    /// the readable bit too, as epoll reports the socket's whole state).
    Neither,
}

impl Woke {
    pub(super) fn of(event: &mio::event::Event) -> Woke {
        let input = event.is_readable() || event.is_read_closed() || event.is_error();
        match (input, event.token().0 & UPSTREAM_BIT != 0) {
            (false, _) => Woke::Neither,
            (true, true) => Woke::Upstream,
            (true, false) => Woke::Client,
        }
    }

    /// Forgets what the event may have changed: those sockets are read again.
    pub(super) fn apply(self, leg: &mut UpstreamLeg) {
        match self {
            Woke::Both => {
                leg.quiet = false;
                leg.client_quiet = false;
            }
            Woke::Client => leg.client_quiet = false,
            Woke::Upstream => leg.quiet = false,
            Woke::Neither => {}
        }
    }
}

/// What the handshake prepared for an upstream route.
pub(super) struct UpstreamPlan {
    /// One upgrade request per target of the route, by index (SPEC §5: each carries its
    /// own upstream's `Host` and path).
    requests: Vec<Vec<u8>>,
    /// Client headers dropped as forged (counted in `/metrics`).
    pub(super) forged_headers: usize,
    key: [u8; 24],
    offered: Vec<String>,
    client_accept: [u8; 28],
    /// SPEC §10: the permessage-deflate offer in the requests, and what was reserved for it.
    deflate: Option<(ClientOffer, Option<Ticket>)>,
}

/// SPEC §10 "Proxied routes": the offer to the upstream when compression is on for the
/// route. With `context_takeover` the most state an answer can lead to is reserved against
/// `compression.memory` first; past the budget the offer asks for no context takeover
/// instead (which costs no state per connection), so the budget is never overdrawn.
fn deflate_offer(
    rt: &Runtime,
    route: usize,
    budget: &Arc<MemoryBudget>,
) -> Option<(ClientOffer, Option<Ticket>)> {
    let config = rt.compression?;
    if !rt.gate.routes.get(route)?.compression {
        return None;
    }
    let offer = ClientOffer {
        config,
        no_context_takeover: !config.context_takeover,
    };
    match offer.max_cost() {
        0 => Some((offer, None)),
        cost => match budget.reserve(cost) {
            Some(ticket) => Some((offer, Some(ticket))),
            None => Some((
                ClientOffer {
                    no_context_takeover: true,
                    ..offer
                },
                None,
            )),
        },
    }
}

/// Builds the upgrade request for the upstream from the client's request (SPEC §5):
/// query minus token parameters, the client's end-to-end headers minus anything that
/// carries a token or forged identity, `X-Forwarded-For`, `X-Auth-*` from the token.
#[allow(clippy::too_many_arguments)]
pub(super) fn upstream_plan(
    rt: &Runtime,
    route: usize,
    head: &RequestHead<'_, '_>,
    upgrade: &Upgrade<'_>,
    peer: std::net::IpAddr,
    client_tls: bool,
    identity: Option<&Identity>,
    claims_b64: Option<&str>,
    deflate_budget: &Arc<MemoryBudget>,
) -> Result<Option<UpstreamPlan>, Reject> {
    let Some(r) = rt.gate.routes.get(route) else {
        return Ok(None);
    };
    let Backend::Upstream {
        urls,
        sign_identity,
        ..
    } = &r.backend
    else {
        return Ok(None);
    };
    let rng = ring::rand::SystemRandom::new();
    // SPEC §5 `sign_identity`: config validation guarantees the key; without one, 502.
    let signer = match (*sign_identity, &rt.identity) {
        (false, _) => None,
        (true, Some(signer)) => Some(signer),
        (true, None) => return Err(Reject::BadGateway),
    };
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
    let key = random_key(&rng).map_err(|_| Reject::BadGateway)?;
    let deflate = deflate_offer(rt, route, deflate_budget);
    let mut extensions = Vec::new();
    if let Some((offer, _)) = &deflate {
        offer.write(&mut extensions);
    }
    let mut requests = Vec::with_capacity(urls.len());
    let mut forged_headers = 0;
    for url in urls {
        let forward = ForwardRequest {
            upstream_host_header: &url.host_header,
            upstream_path: &url.path,
            client_query: head.query,
            token_query_names: &token_query,
            client_headers: &client_headers,
            token_cookie_names: &token_cookies,
            offered_protocols: &offered_refs,
            client_addr: peer,
            client_tls,
            subject: identity.map(|i| &*i.sub),
            scope: scope.as_deref(),
            claims_b64,
            extensions: deflate.as_ref().map(|_| extensions.as_slice()),
        };
        let mut request = Vec::with_capacity(512);
        forged_headers =
            write_upstream_request(&forward, &key, &mut request).map_err(|_| Reject::BadGateway)?;
        if let Some(signer) = signer {
            // RFC 9421: a fresh nonce per signed request, `created` from the wall clock.
            let mut nonce = [0u8; 16];
            ring::rand::SecureRandom::fill(&rng, &mut nonce).map_err(|_| Reject::BadGateway)?;
            let nonce = base64::engine::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                nonce,
            );
            signer
                .sign_request(&mut request, crate::clock::unix_now(), &nonce)
                .map_err(|_| Reject::BadGateway)?;
        }
        requests.push(request);
    }
    if requests.is_empty() {
        return Err(Reject::BadGateway);
    }
    Ok(Some(UpstreamPlan {
        requests,
        forged_headers,
        key,
        offered,
        client_accept: accept_key(upgrade.key),
        deflate,
    }))
}

/// A target picked for a dial.
struct Pick {
    target: usize,
    /// Its addresses in dial order, or why it has none ("dns: ...").
    addrs: Result<Vec<SocketAddr>, String>,
}

impl Pick {
    /// The addresses to dial; a target without any (its name does not resolve) is a
    /// failed connect, logged and counted here.
    fn dial_list(self, conn: (u64, SocketAddr), env: &mut Env, route: usize) -> Vec<SocketAddr> {
        let target = self.target;
        self.addrs.unwrap_or_else(|reason| {
            connect_failed(conn, env, route, (target, None), &reason);
            Vec::new()
        })
    }
}

/// The next upstream of `route` not in `tried`: round-robin over those not marked down,
/// else the one that recovers soonest (SPEC §5); its addresses from the resolver's
/// snapshot as it is now (`backend::upstream::dial_order`).
fn next_target(env: &mut Env, route: usize, tried: &[usize], now: Instant) -> Option<Pick> {
    let rt = Arc::clone(&env.rt);
    let balancer = rt.balancers.get(route)?;
    let target = balancer.pick(now, tried)?;
    let (host, port) = rt.upstream_hosts.get(route)?.get(target)?;
    let names = env.upstream_names.load();
    let addrs = dial_order(host, *port, names, balancer.turn(target));
    Some(Pick { target, addrs })
}

/// The TLS client side of `route`'s upstream `target` (`None` for `ws://`).
fn target_tls(env: &Env, route: usize, target: usize) -> Option<UpstreamTls> {
    env.rt.upstream_tls.get(route)?.get(target)?.clone()
}

/// After the leg's connect failed (already logged): its target's next address, else the
/// next upstream of `route` not yet tried; false when every one was tried (the caller
/// answers 502).
fn dial_next(conn: &mut Conn, env: &mut Env, id: ConnId, route: usize, now: Instant) -> bool {
    let Some(leg) = conn.upstream.as_mut() else {
        return false;
    };
    let mut target = leg.target;
    let mut addrs = std::mem::take(&mut leg.spare_addrs);
    loop {
        let tls = target_tls(env, route, target);
        for (k, addr) in addrs.iter().enumerate() {
            let Some(leg) = conn.upstream.as_mut() else {
                return false;
            };
            match leg.reconnect(&env.registry, id, *addr, target, tls.as_ref()) {
                Ok(()) => {
                    leg.spare_addrs = addrs.get(k + 1..).unwrap_or_default().to_vec();
                    return true;
                }
                Err(e) => {
                    let what = format_args!("connect: {e}");
                    connect_failed(
                        (conn.serial, conn.peer),
                        env,
                        route,
                        (target, Some(*addr)),
                        &what,
                    );
                }
            }
        }
        // Every address of `target` failed for this handshake.
        mark_down(env, route, target, now);
        let tried: Vec<usize> = conn
            .upstream
            .as_ref()
            .map(|l| l.tried.clone())
            .unwrap_or_default();
        let Some(pick) = next_target(env, route, &tried, now) else {
            return false;
        };
        if let Some(leg) = conn.upstream.as_mut() {
            leg.tried.push(pick.target);
        }
        target = pick.target;
        addrs = pick.dial_list((conn.serial, conn.peer), env, route);
    }
}

/// Starts the upstream leg after the gate accepted a request for an upstream route.
#[allow(clippy::too_many_arguments)]
pub(super) fn start_upstream(
    conn: &mut Conn,
    env: &mut Env,
    id: ConnId,
    route: usize,
    mut plan: UpstreamPlan,
    now: Instant,
) {
    let timeout = match env.rt.gate.routes.get(route).map(|r| &r.backend) {
        Some(Backend::Upstream { timeout, .. }) => *timeout,
        _ => Duration::from_secs(10),
    };
    let deadline = now + timeout;
    let mut tried = Vec::new();
    loop {
        let Some(pick) = next_target(env, route, &tried, now) else {
            // SPEC §5: no upstream left to try.
            env.metrics.upstream_error();
            reject(conn, env, Reject::BadGateway, None);
            return;
        };
        let target = pick.target;
        tried.push(target);
        let addrs = pick.dial_list((conn.serial, conn.peer), env, route);
        let tls = target_tls(env, route, target);
        for (k, addr) in addrs.iter().enumerate() {
            match UpstreamLeg::connect(
                &env.registry,
                id,
                *addr,
                target,
                tls.as_ref(),
                plan.requests.clone(),
                plan.key,
                plan.offered.clone(),
                plan.client_accept,
                deadline,
            ) {
                Ok(mut leg) => {
                    leg.tried = tried;
                    leg.spare_addrs = addrs.get(k + 1..).unwrap_or_default().to_vec();
                    if let Some((offer, ticket)) = plan.deflate.take() {
                        leg.offer_deflate(offer, ticket);
                    }
                    conn.upstream = Some(Box::new(leg));
                    conn.phase = Phase::Dialing { route };
                    return;
                }
                Err(e) => {
                    let what = format_args!("connect: {e}");
                    connect_failed(
                        (conn.serial, conn.peer),
                        env,
                        route,
                        (target, Some(*addr)),
                        &what,
                    );
                }
            }
        }
        // Every address of `target` failed for this handshake.
        mark_down(env, route, target, now);
    }
}

/// Drives the upstream leg: connect, handshake, relay, close. Returns true when reading
/// the upstream paused because the client's output is over its limit.
pub(super) fn proxy(conn: &mut Conn, env: &mut Env, id: ConnId, now: Instant) -> bool {
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
            Ok(false) => return false,
            Ok(true) => {}
            Err(e) => {
                let Phase::Dialing { route } = conn.phase else {
                    return false;
                };
                let dialed = (leg.target, Some(leg.addr));
                let what = format_args!("connect: {e}");
                connect_failed((conn.serial, conn.peer), env, route, dialed, &what);
                // SPEC §5: the target's next address, else the next upstream, is tried
                // within the same client handshake.
                if !dial_next(conn, env, id, route, now) {
                    reject(conn, env, Reject::BadGateway, None);
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
            if let Some(b) = env.rt.balancers.get(route) {
                b.mark_up(leg.target);
            }
        }
    }
    if leg.flush().is_err() {
        leg.eof = true;
    }
    let max_frame = rt.session.max_frame;
    let mut paused = false;
    let mut reads = 0;
    // What a relay straight from a read found, when not "continue", and what it relayed.
    let mut early = None;
    let mut relayed_bytes = 0;
    loop {
        let Some(leg) = conn.upstream.as_mut() else {
            return false;
        };
        if leg.state == LegState::Done || leg.eof {
            break;
        }
        // An upstream whose pings wait for it to read our pongs (relay stops at
        // write_buffer of them) is read no further; its writable edge resumes us, so no
        // revisit is asked for (it would spin).
        if leg.state == LegState::Open && leg.wbuf.len() >= limit && leg.rbuf.len() >= rbuf_cap {
            break;
        }
        // Backpressure (SPEC §5): read the upstream only while the client's output and
        // the not-yet-relayed bytes are under their bounds (one whole frame may need up
        // to max_frame).
        if leg.state == LegState::Open && (conn.wbuf.len() >= limit || leg.rbuf.len() >= rbuf_cap) {
            paused = true;
            break;
        }
        if leg.quiet {
            break;
        }
        if reads == MAX_READS_PER_TURN {
            env.ready.push(id);
            break;
        }
        reads += 1;
        let mut read_error = None;
        let mut drained = false;
        match leg.read(&mut env.readbuf) {
            Ok(0) => leg.eof = true,
            Ok(n) => {
                let input = &env.readbuf[..n];
                let session_open = matches!(&conn.phase,
                    Phase::Open { session, .. } if session.state() == SessionState::Open);
                if leg.state == LegState::Open
                    && session_open
                    && leg.rbuf.is_empty()
                    && !leg.deflating()
                {
                    // Complete frames go straight from the read to the client's output.
                    let before = conn.wbuf.len();
                    let relayed = leg.relay_read(input, &mut conn.wbuf, limit, max_frame);
                    relayed_bytes += conn.wbuf.len() - before;
                    if !matches!(relayed, Relayed::Continue) {
                        early = Some(relayed);
                    }
                } else {
                    leg.rbuf.extend_from_slice(input);
                }
                // A short read on plain TCP drained the socket (as for the client, drive.rs).
                drained = n < env.readbuf.len() && !leg.is_tls() && !env.peer_closed_hint;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                leg.quiet = true;
                break;
            }
            Err(e) => {
                leg.eof = true;
                read_error = Some(e);
            }
        }
        leg.quiet = drained;
        if leg.state != LegState::Handshaking {
            if drained || early.is_some() {
                break;
            }
            continue;
        }
        let eof = leg.eof;
        let target = leg.target;
        let addr = Some(leg.addr);
        let route = match conn.phase {
            Phase::Dialing { route } => route,
            _ => usize::MAX,
        };
        match leg.answer() {
            upstream::Answer::Pending if eof => {
                let what = match &read_error {
                    Some(e) => format!("handshake: {e}"),
                    None => "handshake: closed before answering".to_string(),
                };
                log_upstream_failure((conn.serial, conn.peer), env, route, target, addr, &what);
                env.metrics.upstream_error();
                reject(conn, env, Reject::BadGateway, None);
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
                reject(conn, env, r, None);
                return false;
            }
            upstream::Answer::Bad => {
                let what = "handshake: not a valid 101 or HTTP answer";
                log_upstream_failure((conn.serial, conn.peer), env, route, target, addr, &what);
                env.metrics.upstream_error();
                reject(conn, env, Reject::BadGateway, None);
                return false;
            }
        }
        if drained {
            break;
        }
    }
    if relayed_bytes > 0 {
        env.metrics.message_out(relayed_bytes as u64);
    }
    relay_upstream(conn, env, early, limit, &mut paused);
    paused
}

/// Upstream → client, and the close rules that tie the two legs (SPEC §5 "Relay");
/// `early`: what a relay straight from a read found, when it stopped there.
fn relay_upstream(
    conn: &mut Conn,
    env: &mut Env,
    early: Option<Relayed>,
    limit: usize,
    paused: &mut bool,
) {
    let rt = env.rt.clone();
    let Phase::Open { session, .. } = &mut conn.phase else {
        return;
    };
    let Some(leg) = conn.upstream.as_mut() else {
        return;
    };
    if matches!(leg.state, LegState::Open | LegState::Closing)
        && (early.is_some() || !leg.rbuf.is_empty())
    {
        if session.state() == SessionState::Open {
            let before = conn.wbuf.len();
            let relayed = if let Some(early) = early {
                early
            } else if leg.deflating() {
                // SPEC §10: either leg compresses; the relay inflates and deflates.
                let bounds = (rt.session.max_frame, rt.session.max_message);
                leg.relay_deflate(&mut conn.wbuf, session.deflate_mut(), limit, bounds)
            } else {
                leg.relay(&mut conn.wbuf, limit, rt.session.max_frame)
            };
            match relayed {
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
                Relayed::Limit(why) => {
                    // SPEC §5: a close the gateway decides goes to both legs (below).
                    session.close(why.close_code(), why.reason(), &mut conn.wbuf);
                }
            }
            if session.state() == SessionState::Open {
                // RFC 6455 §5.4: the gateway's own messages held during a relayed message.
                leg.flush_held(session.deflate_mut(), &mut conn.wbuf);
            } else {
                leg.drop_held();
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
    // SPEC §10: each leg negotiated on its own; the client's agreement goes into its 101.
    let deflate = conn.deflate.take();
    if let Some(leg) = conn.upstream.as_mut() {
        leg.settle_relay(deflate.is_some());
    }
    let agreed = deflate.as_ref().map(|d| *d.agreement());
    write_switching_protocols_deflate(&mut conn.wbuf, client_accept, protocol, agreed.as_ref());
    conn.release_wbuf_when_flushed = true;
    info!(
        "conn={} peer={} route={} sub={} upgraded (upstream)",
        conn.serial,
        conn.peer,
        env.rt
            .gate
            .routes
            .get(route)
            .map_or("-", |r| r.path.as_str()),
        crate::log::QOpt(conn.identity.as_ref().map(|i| &*i.sub))
    );
    let mut session = Session::new(env.session_limits.clone(), now);
    if let Some(deflate) = deflate {
        session.set_deflate(*deflate);
    }
    conn.phase = Phase::Open { session, route };
    if !conn.rbuf.is_empty() {
        feed_session(conn, env, id, 0, now);
    }
}
