//! The opening handshake on a worker: read the head, decide (`gate::decide`), answer
//! 101 or the rejection (SPEC §4), and start the session or the upstream leg.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::drive::{feed_session, terms, token_times};
use super::proxy::{start_upstream, upstream_plan};
use super::{Env, Runtime, Shared};
use crate::gate::decide::{Ctx, Identity, KEY_PENDING};
use crate::gate::reject::Reject;
use crate::net::conn::{Conn, Phase};
use crate::net::token::ConnId;
use crate::proto::http::request::RequestHead;
use crate::proto::http::request::{parse_head, validate_upgrade};
use crate::proto::http::response::write_switching_protocols_deflate;
use crate::proto::ws::accept::accept_key;
use crate::proto::ws::deflate::{negotiate_within, PerMessageDeflate};
use crate::proto::ws::session::Session;
use crate::{clock, info, warn};

/// Queues an HTTP rejection and moves to flushing it.
pub(super) fn reject(conn: &mut Conn, env: &Env, r: Reject, target: Option<&str>) {
    env.metrics.handshake(r.status());
    conn.wbuf.clear();
    r.write(&mut conn.wbuf);
    warn!(
        "conn={} peer={} target={} rejected status={} reason={}",
        conn.serial,
        conn.peer,
        target.unwrap_or("-"),
        r.status(),
        r.reason_label()
    );
    conn.rbuf.free();
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
    conn.identity = identity.map(|identity| {
        let times = token_times(&env.rt, identity.exp, now, now_unix);
        env.principals.adopt(id, identity, times, terms(&env.rt))
    });
}

/// SPEC §10: permessage-deflate when `[compression]` turns it on, the route does not opt
/// out and the client offers it (RFC 7692 §7.1). A malformed offer is 400; a full memory
/// budget declines the extension, never the handshake.
fn negotiate_deflate(
    rt: &Runtime,
    shared: &Shared,
    route: usize,
    head: &RequestHead<'_, '_>,
) -> Result<Option<PerMessageDeflate>, Reject> {
    let Some(config) = rt.compression else {
        return Ok(None);
    };
    if !rt.gate.routes.get(route).is_some_and(|r| r.compression) {
        return Ok(None);
    }
    let offers = head.headers_named("sec-websocket-extensions");
    match negotiate_within(offers, &config, &shared.deflate_budget) {
        Ok(agreed) => {
            Ok(agreed.map(|(agreement, ticket)| PerMessageDeflate::new(agreement, ticket)))
        }
        Err(_) => Err(Reject::Malformed("invalid Sec-WebSocket-Extensions")),
    }
}

/// The request head is complete: parse, decide, answer.
pub(super) fn handshake(conn: &mut Conn, env: &mut Env, id: ConnId, head_len: usize, now: Instant) {
    let rt = env.rt.clone();
    let now_unix = clock::unix_now();
    let outcome = {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let head = match parse_head(&conn.rbuf[..head_len], &mut headers) {
            Ok(h) => h,
            Err(e) => {
                let r = Reject::from(e);
                reject(conn, env, r, None);
                return;
            }
        };
        let target = crate::log::enabled(crate::log::Level::Warn)
            .then(|| crate::log::redacted_target(head.path, head.query, &rt.token_query_names));
        if let Some(response) = rt
            .plain
            .as_ref()
            .and_then(|p| p.respond(&head, conn.peer.ip()))
        {
            conn.wbuf = response.into();
            conn.rbuf.free();
            conn.upstream = None;
            conn.phase = Phase::Rejected;
            conn.closing = true;
            return;
        }
        let upgrade = match validate_upgrade(&head) {
            Ok(u) => u,
            Err(e) => {
                let r = Reject::from(e);
                reject(conn, env, r, target.as_deref());
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
                        conn.tls.is_some(),
                        accept.identity.as_ref(),
                        accept.claims_b64.as_deref(),
                        &env.shared.deflate_budget,
                    )
                } else {
                    Ok(None)
                };
                let plan = plan.and_then(|plan| {
                    let deflate = negotiate_deflate(&rt, &env.shared, accept.route, &head)?;
                    Ok((plan, deflate))
                });
                let (plan, deflate) = match plan {
                    Ok(p) => p,
                    Err(r) => {
                        if let Some(i) = &accept.identity {
                            env.shared.subjects.release(&i.sub);
                        }
                        return reject(conn, env, r, target.as_deref());
                    }
                };
                if plan.is_none() {
                    let key = accept_key(upgrade.key);
                    conn.wbuf.clear();
                    let agreed = deflate.as_ref().map(|d| d.agreement());
                    write_switching_protocols_deflate(
                        &mut conn.wbuf,
                        &key,
                        accept.protocol,
                        agreed,
                    );
                }
                conn.deflate = deflate.map(Box::new);
                Ok((accept.route, accept.identity, accept.explain, target, plan))
            }
            Err(r) => Err((r, target)),
        }
    };
    match outcome {
        // SPEC §9: an unknown kid with a fetch under way waits for it (never blocking the
        // worker): the control plane's `Command::KeysChanged` decides it again.
        Err((Reject::InvalidToken { reason, .. }, _)) if reason == KEY_PENDING => {
            if let Phase::Handshake { deadline, .. } = conn.phase {
                info!(
                    "conn={} peer={} parked: waiting for its provider's key set",
                    conn.serial, conn.peer
                );
                conn.phase = Phase::Parked { head_len, deadline };
            }
        }
        Err((r, target)) => reject(conn, env, r, target.as_deref()),
        Ok((route, identity, _, target, Some(plan))) => {
            // Upstream route: the client's 101 waits for the upstream's (SPEC §5).
            adopt_identity(conn, env, id, identity, now, now_unix);
            conn.rbuf.drain(..head_len);
            info!(
                "conn={} peer={} target={} route={} dialing upstream",
                conn.serial,
                conn.peer,
                target.as_deref().unwrap_or("-"),
                rt.gate.routes[route].path,
            );
            env.metrics.forged_headers(plan.forged_headers);
            start_upstream(conn, env, id, route, plan, now);
        }
        Ok((route, identity, explain, target, None)) => {
            env.metrics.handshake(101);
            let mut session = Session::new(env.session_limits.clone(), now);
            if let Some(deflate) = conn.deflate.take() {
                session.set_deflate(*deflate);
            }
            info!(
                "conn={} peer={} target={} route={} sub={} upgraded",
                conn.serial,
                conn.peer,
                target.as_deref().unwrap_or("-"),
                rt.gate.routes[route].path,
                crate::log::QOpt(identity.as_ref().map(|i| &*i.sub))
            );
            if let Some(why) = explain {
                // auth.explain_to_browsers: tell the script why, then close.
                session.close(why.close_code(), why.reason(), &mut conn.wbuf);
            }
            adopt_identity(conn, env, id, identity, now, now_unix);
            conn.rbuf.drain(..head_len);
            if conn.rbuf.is_empty() {
                // The request head's buffer is not needed by an idle open connection.
                conn.rbuf.free();
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
