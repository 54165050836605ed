//! The gateway side of the admin listener: readiness, metrics, admin-token checks and
//! `POST /revoke` (SPEC §6, §7). The HTTP part is [`super::listener`].
//!
//! Everything here runs on the control plane (the admin listener calls the blocking parts,
//! token checks and revocations, through `spawn_blocking`) and reaches the workers only
//! the two ways the control plane has: a new revocation snapshot (copy-on-write, swapped
//! atomically) and a [`Command::Revoke`] to every worker for the live connections.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::revlog::RevocationLog;
use super::{AdminBackend, AuthFailure, RevokeFailure, Revoked};
use crate::auth::revocation::{Revocation, RevocationSet};
use crate::auth::verify::Scratch;
use crate::clock;
use crate::control::cluster::{Cluster, Readiness};
use crate::control::login::{self, Service};
use crate::control::Workers;
use crate::net::worker::{Command, Runtime, Shared};
use crate::{info, warn};

/// How long `/revoke` waits for the workers to report the connections they closed.
const REVOKE_REPLY: Duration = Duration::from_secs(2);

/// What the admin listener knows of one configuration generation: replaced whole on SIGHUP.
pub struct AdminView {
    /// The configuration generation in force (its keys verify admin tokens).
    pub rt: Arc<Runtime>,
    /// `admin.token_scope`.
    pub token_scope: String,
}

/// What the admin listener reaches in the running gateway.
pub struct GatewayAdmin {
    /// The configuration the admin listener answers with (swapped on SIGHUP).
    view: ArcSwap<AdminView>,
    /// Shared counters and tables; `shared.revocations` is the snapshot the workers load.
    shared: Arc<Shared>,
    /// The revocation path (`POST /revoke` goes through it, so does the token service).
    revoker: Arc<Revoker>,
    /// Listening and keys loaded.
    ready: AtomicBool,
    scratch: Mutex<Scratch>,
    /// The fleet link, with `[cluster]` (SPEC §8).
    cluster: OnceLock<Arc<Cluster>>,
}

impl GatewayAdmin {
    /// Wires the admin view of a running gateway.
    pub fn new(view: AdminView, shared: Arc<Shared>, revoker: Arc<Revoker>) -> GatewayAdmin {
        let scratch = Scratch::new(view.rt.max_token_bytes);
        GatewayAdmin {
            view: ArcSwap::from_pointee(view),
            shared,
            revoker,
            ready: AtomicBool::new(false),
            scratch: Mutex::new(scratch),
            cluster: OnceLock::new(),
        }
    }

    /// Joins the fleet (SPEC §8): revocations posted here are shared through `cluster`, and
    /// `/readyz` and `/metrics` tell its state.
    pub fn join_fleet(&self, cluster: Arc<Cluster>) {
        let _ = self.revoker.cluster.set(Arc::clone(&cluster));
        let _ = self.cluster.set(cluster);
    }

    /// Applies revocations received from the fleet, serialized with `POST /revoke` (the
    /// log's lock); returns the connections closed. Not written to the local log: it
    /// records what was posted here, and Redis keeps the fleet's.
    pub fn apply_fleet(&self, entries: Vec<(Revocation, u64)>) -> usize {
        let _serial = lock(&self.revoker.log);
        apply_entries(&self.shared, &self.revoker.workers, entries)
    }

    /// Publishes a new configuration generation (SIGHUP).
    pub fn publish(&self, view: AdminView) {
        self.view.store(Arc::new(view));
    }

    /// Marks the gateway as listening with its keys loaded (`/readyz`).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl AdminBackend for GatewayAdmin {
    fn ready(&self) -> bool {
        // SPEC §9: not ready until every identity provider has a usable key set.
        let providers_ready = self
            .view
            .load()
            .rt
            .gate
            .verifier()
            .is_none_or(|v| crate::control::issuers::all_usable(&v.keys));
        let fleet_ready = self
            .cluster
            .get()
            .is_none_or(|c| !matches!(c.status().readiness(), Readiness::NotReady(_)));
        self.ready.load(Ordering::Relaxed)
            && !self.shared.draining.load(Ordering::Relaxed)
            && providers_ready
            && fleet_ready
    }

    fn readiness_note(&self) -> Option<&'static str> {
        match self.cluster.get()?.status().readiness() {
            Readiness::Ready => None,
            Readiness::Degraded(note) | Readiness::NotReady(note) => Some(note),
        }
    }

    fn identity_jwk(&self) -> Option<String> {
        self.view
            .load()
            .rt
            .identity
            .as_ref()
            .map(|signer| signer.jwk())
    }

    fn metrics_text(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        self.shared.metrics.render(&mut out);
        if let Some(v) = self.view.load().rt.gate.verifier() {
            crate::control::issuers::render_metrics(&v.keys, &mut out);
        }
        if let Some(cluster) = self.cluster.get() {
            cluster.status().render(&mut out);
        }
        out.push_str(&self.revoker.login_metrics());
        out
    }

    /// A bearer token verified by the gateway's own keys and rules, not revoked, with
    /// `admin.token_scope`.
    fn authorize(&self, bearer: Option<&[u8]>) -> Result<(), AuthFailure> {
        let token = bearer.ok_or(AuthFailure::Unauthorized("missing token"))?;
        let view = self.view.load();
        let rt = &view.rt;
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
        let revoked = self.shared.revocations.load().is_revoked(
            claims.jti.as_deref(),
            &claims.sub,
            claims.iat,
        );
        if revoked {
            return Err(AuthFailure::Unauthorized("token revoked"));
        }
        if !claims.has_scope(&view.token_scope) {
            return Err(AuthFailure::Forbidden);
        }
        Ok(())
    }

    /// Parses the body and applies it through the revocation path ([`Revoker::apply`]).
    fn revoke(&self, body: &[u8]) -> Result<Revoked, RevokeFailure> {
        let r = Revocation::from_request_body(body, clock::unix_now())
            .map_err(|e| RevokeFailure::BadRequest(e.to_string()))?;
        self.revoker.apply(r)
    }
}

/// The gateway's one revocation path (SPEC §6): make durable (fsync) → publish the new
/// snapshot → close matching connections on every worker. `POST /revoke` uses it, and so
/// does the token service (SPEC §11: a reused refresh token, a logout, a removed user). It
/// exists with or without an admin listener.
pub struct Revoker {
    shared: Arc<Shared>,
    workers: Workers,
    /// The durable log (None: revocations are kept in memory only). Its lock also makes
    /// revocations one at a time, so the log's order is the snapshots' order.
    log: Mutex<Option<RevocationLog>>,
    /// The token service, when `[login]` is on: a subject revocation also ends its refresh
    /// tokens.
    login: OnceLock<Weak<Service>>,
    /// The fleet link, with `[cluster]` (SPEC §8): revocations are shared through it.
    cluster: OnceLock<Arc<Cluster>>,
}

impl Revoker {
    /// The path into the running gateway's revocation snapshot, log and workers.
    pub fn new(shared: Arc<Shared>, workers: Workers, log: Option<RevocationLog>) -> Revoker {
        Revoker {
            shared,
            workers,
            log: Mutex::new(log),
            login: OnceLock::new(),
            cluster: OnceLock::new(),
        }
    }

    /// Joins the fleet (SPEC §8): what this path revokes is shared through `cluster`, with
    /// or without an admin listener (the token service revokes through it too, SPEC §11).
    pub fn join_fleet(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// Connects the token service (once).
    pub fn set_login(&self, service: &Arc<Service>) {
        let _ = self.login.set(Arc::downgrade(service));
    }

    fn login(&self) -> Option<Arc<Service>> {
        self.login.get().and_then(Weak::upgrade)
    }

    /// The token service's metrics (empty without one).
    pub fn login_metrics(&self) -> String {
        self.login().map(|s| s.metrics.render()).unwrap_or_default()
    }

    /// Applies one revocation; returns the live connections it closed. A revocation that
    /// could not be written is refused (503), never half-applied. Blocking.
    pub fn apply(&self, r: Revocation) -> Result<Revoked, RevokeFailure> {
        let now_unix = clock::unix_now();
        // One revocation at a time: the log's order is the snapshots' order, and no other
        // writer can publish between our load and our store.
        let mut log = lock(&self.log);
        // Copy-on-write: revocations are rare, handshakes are not; the workers keep reading
        // the old snapshot, without a lock, until the new one is stored whole.
        let mut next = (*self.shared.revocations.load_full()).clone();
        next.observe_lifetime(self.shared.longest_lifetime.load(Ordering::Relaxed));
        let keep_until = next.keep_until(&r, now_unix);
        if let Some(log) = log.as_mut() {
            log.append(&r.to_log_line(keep_until)).map_err(|e| {
                warn!("revocation log: {e}");
                RevokeFailure::Unavailable("the revocation log could not be written".into())
            })?;
        }
        next.insert(r.clone(), keep_until);
        next.expire(now_unix);
        if let Some(log) = log.as_mut() {
            if log.should_compact(next.len()) {
                if let Err(e) = log.compact(&next) {
                    warn!("revocation log compaction failed (the log is intact): {e}");
                }
            }
        }
        // Published before the workers are told: once a worker has taken the command below,
        // every handshake it runs sees the new snapshot (the channel orders the store before
        // its later loads), and a handshake it finished with the old one is a live, indexed
        // connection that the command closes.
        self.shared.revocations.store(Arc::new(next));
        drop(log);
        self.shared.metrics.revocation();
        let (tx, rx) = crossbeam_channel::unbounded();
        let asked = self
            .workers
            .broadcast(|| Command::Revoke(r.clone(), tx.clone()));
        drop(tx);
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
        // SPEC §8: stored in Redis and published to the fleet, or queued while it is away.
        let fleet = self
            .cluster
            .get()
            .map(|cluster| cluster.share_blocking(r.clone(), keep_until).as_str());
        match fleet {
            Some(fleet) => {
                info!("revoked by {what}; {closed} live connections closed; fleet: {fleet}")
            }
            None => info!("revoked by {what}; {closed} live connections closed"),
        }
        // SPEC §11: a subject's refresh tokens die with it (`user remove`, or an operator's
        // `revoke --sub`); `user remove` rewrote the users file before posting, so it is
        // read again now and the removed user cannot log in from this moment on.
        if let (Revocation::Sub { sub, .. }, Some(service)) = (&r, self.login()) {
            if let Err(e) = service.reload_users() {
                warn!("login: users file refused, keeping the previous users: {e}");
            }
            if let Err(e) = service.revoke_subject(sub) {
                warn!("login: the refresh tokens of a revoked subject could not be revoked: {e}");
            }
        }
        Ok(Revoked { closed, fleet })
    }
}

impl login::Revoke for Revoker {
    fn revoke(&self, revocations: Vec<Revocation>) {
        for r in revocations {
            if let Err(e) = self.apply(r) {
                warn!("login: a revocation could not be applied: {e:?}");
            }
        }
    }
}

/// Whether `r` revokes something that `set` does not already: a `jti` not in it, or a
/// `sub` whose `before` is later than the one in force.
fn adds_to(set: &RevocationSet, r: &Revocation) -> bool {
    match r {
        Revocation::Jti { jti, .. } => !set.is_revoked(Some(jti), "", None),
        Revocation::Sub { sub, before } => {
            *before > 0 && !set.is_revoked(None, sub, Some(before - 1))
        }
    }
}

/// Inserts revocations from the fleet into a new snapshot and tells every worker to close
/// what the new ones match (4403, through its indexes); returns how many entries were new.
/// The caller serializes it with every other writer of the snapshot. Never waits for the
/// workers.
pub fn apply_entries(shared: &Shared, workers: &Workers, entries: Vec<(Revocation, u64)>) -> usize {
    let now_unix = clock::unix_now();
    let current = shared.revocations.load_full();
    let fresh: Vec<(Revocation, u64)> = entries
        .into_iter()
        .filter(|(r, keep_until)| *keep_until >= now_unix && adds_to(&current, r))
        .collect();
    if fresh.is_empty() {
        return 0;
    }
    let mut next = (*current).clone();
    for (r, keep_until) in &fresh {
        next.restore(r.clone(), *keep_until);
    }
    next.expire(now_unix);
    // Stored before the workers are told, as for a local revocation (see `revoke`).
    shared.revocations.store(Arc::new(next));
    // Nobody waits for the counts: the workers' replies go nowhere.
    let (tx, _) = crossbeam_channel::unbounded();
    for (r, _) in &fresh {
        workers.broadcast(|| Command::Revoke(r.clone(), tx.clone()));
    }
    fresh.len()
}
