//! The gateway side of the admin listener: readiness, metrics, admin-token checks and
//! `POST /revoke` (SPEC §6, §7). The HTTP part lives in `crate::admin`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crossbeam_channel::Sender;

use super::clock;
use super::worker::{read_lock, Command, Runtime, Shared};
use crate::admin::revlog::RevocationLog;
use crate::admin::{AdminBackend, AuthFailure, RevokeFailure};
use crate::auth::revocation::Revocation;
use crate::auth::verify::Scratch;
use crate::{info, warn};

/// How long `/revoke` waits for the workers to report the connections they closed.
const REVOKE_REPLY: Duration = Duration::from_secs(2);

/// What the admin listener reaches in the running gateway.
pub struct GatewayAdmin {
    /// The configuration generation in force (swapped on SIGHUP).
    pub rt: RwLock<Arc<Runtime>>,
    /// Shared counters and tables.
    pub shared: Arc<Shared>,
    /// Every worker's queue and waker.
    pub workers: Vec<(Sender<Command>, Arc<mio::Waker>)>,
    /// The durable log (None: revocations are kept in memory only).
    pub log: Mutex<Option<RevocationLog>>,
    /// `admin.token_scope`.
    pub token_scope: RwLock<String>,
    /// Listening and keys loaded.
    pub ready: AtomicBool,
    scratch: Mutex<Scratch>,
}

impl GatewayAdmin {
    /// Wires the admin view of a running gateway.
    pub fn new(
        rt: Arc<Runtime>,
        shared: Arc<Shared>,
        workers: Vec<(Sender<Command>, Arc<mio::Waker>)>,
        log: Option<RevocationLog>,
        token_scope: String,
    ) -> GatewayAdmin {
        let scratch = Scratch::new(rt.max_token_bytes);
        GatewayAdmin {
            rt: RwLock::new(rt),
            shared,
            workers,
            log: Mutex::new(log),
            token_scope: RwLock::new(token_scope),
            ready: AtomicBool::new(false),
            scratch: Mutex::new(scratch),
        }
    }

    fn runtime(&self) -> Arc<Runtime> {
        read_lock(&self.rt).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl AdminBackend for GatewayAdmin {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.shared.draining.load(Ordering::Relaxed)
    }

    fn metrics_text(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        self.shared.metrics.render(&mut out);
        out
    }

    /// A bearer token verified by the gateway's own keys and rules, not revoked, with
    /// `admin.token_scope`.
    fn authorize(&self, bearer: Option<&[u8]>) -> Result<(), AuthFailure> {
        let token = bearer.ok_or(AuthFailure::Unauthorized("missing token"))?;
        let rt = self.runtime();
        let verifier = rt
            .gate
            .verifier()
            .ok_or(AuthFailure::Unauthorized("no keys configured"))?;
        let mut scratch = lock(&self.scratch);
        if scratch.max_token_bytes() < rt.max_token_bytes {
            *scratch = Scratch::new(rt.max_token_bytes);
        }
        let claims = verifier
            .verify(token, clock::unix_now(), &mut scratch)
            .map_err(|e| AuthFailure::Unauthorized(e.description()))?;
        let revoked = read_lock(&self.shared.revocations).is_revoked(
            claims.jti.as_deref(),
            &claims.sub,
            claims.iat,
        );
        if revoked {
            return Err(AuthFailure::Unauthorized("token revoked"));
        }
        if !claims.has_scope(&read_lock(&self.token_scope)) {
            return Err(AuthFailure::Forbidden);
        }
        Ok(())
    }

    /// Parse → make durable (fsync) → apply → close matching connections on every worker.
    /// A revocation that could not be written is refused (503), never half-applied.
    fn revoke(&self, body: &[u8]) -> Result<usize, RevokeFailure> {
        let now_unix = clock::unix_now();
        let r = Revocation::from_request_body(body, now_unix)
            .map_err(|e| RevokeFailure::BadRequest(e.to_string()))?;
        // One revocation at a time: the log's order is the set's order.
        let mut log = lock(&self.log);
        let keep_until = {
            let mut set = self
                .shared
                .revocations
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            set.observe_lifetime(self.shared.longest_lifetime.load(Ordering::Relaxed));
            set.keep_until(&r, now_unix)
        };
        if let Some(log) = log.as_mut() {
            log.append(&r.to_log_line(keep_until)).map_err(|e| {
                warn!("revocation log: {e}");
                RevokeFailure::Unavailable("the revocation log could not be written".into())
            })?;
        }
        {
            let mut set = self
                .shared
                .revocations
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            set.insert(r.clone(), keep_until);
            set.expire(now_unix);
            if let Some(log) = log.as_mut() {
                if log.should_compact(set.len()) {
                    if let Err(e) = log.compact(&set) {
                        warn!("revocation log compaction failed (the log is intact): {e}");
                    }
                }
            }
        }
        drop(log);
        self.shared.metrics.revocation();
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut asked = 0;
        for (queue, waker) in &self.workers {
            if queue.send(Command::Revoke(r.clone(), tx.clone())).is_ok() {
                let _ = waker.wake();
                asked += 1;
            }
        }
        let mut closed = 0;
        for _ in 0..asked {
            match rx.recv_timeout(REVOKE_REPLY) {
                Ok(n) => closed += n,
                Err(_) => break,
            }
        }
        let what = match &r {
            Revocation::Jti { .. } => "jti",
            Revocation::Sub { .. } => "sub",
        };
        info!("revoked by {what}; {closed} live connections closed");
        Ok(closed)
    }
}
