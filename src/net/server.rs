//! Starting and stopping the data plane: runtime from config, listeners (one per address
//! per worker, `SO_REUSEPORT`) and workers. Signals, reloads and the admin listener are the control plane's
//! (`crate::control`), which starts this.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use crossbeam_channel::Sender;

use super::listener;
use super::tls;
use super::worker::{Command, Runtime, Shared, Worker};
use crate::auth::error::TokenError;
use crate::auth::keys::{Alg, Key, KeySet};
use crate::auth::revocation::{RetentionPolicy, RevocationSet};
use crate::auth::verify::{Rules, Verifier};
use crate::backend::upstream::{ResolvedNames, UpstreamHost};
use crate::config::{Config, KeyMaterial};
use crate::gate::decide::Gate;
use crate::gate::limits::{IpBudget, IpTable, SubjectTable};
use crate::gate::origin::OriginPolicy;
use crate::metrics::Metrics;
use crate::proto::ws::deflate::MemoryBudget;
use crate::proto::ws::session::SessionLimits;
use crate::{info, warn};

/// How long the gateway keeps draining a connection after its last bytes (close frame
/// or HTTP rejection) before dropping it without the peer's FIN.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Builds the token verifier from the configured keys (None when there are none).
pub fn build_verifier(config: &Config) -> Result<Option<Verifier>, String> {
    if config.auth.keys.is_empty() && config.auth.providers.is_empty() && config.login.is_none() {
        return Ok(None);
    }
    let mut keys = Vec::with_capacity(config.auth.keys.len() + 1);
    for (i, k) in config.auth.keys.iter().enumerate() {
        let alg = Alg::from_config_name(&k.alg)
            .ok_or_else(|| format!("auth.key[{i}].alg: unknown algorithm {:?}", k.alg))?;
        let key = match &k.material {
            KeyMaterial::Ed25519Spki(der) => Key::ed25519_spki_der(k.kid.clone(), der),
            KeyMaterial::HmacSecret(secret) => Key::hmac(k.kid.clone(), alg, secret),
            KeyMaterial::Spki(der) => Key::from_spki_der(k.kid.clone(), alg, der),
        }
        .map_err(|e| format!("auth.key[{i}] ({}): {e}", k.path.display()))?;
        keys.push(key);
    }
    let keys = KeySet::new(keys).map_err(|e| format!("auth.key: {e}"))?;
    // SPEC §9: each provider's keys (local files are read here, never on a worker).
    let mut providers = crate::config::provider::build_providers(&config.auth.providers, |line| {
        warn!("{line}");
    });
    // SPEC §11: `login.issuer` is treated like a provider's issuer whose set is the login
    // key: that key verifies only tokens whose `iss` is `login.issuer`, and nothing else
    // verifies them.
    if let Some(login) = &config.login {
        let public: [u8; 32] = login
            .public_key
            .as_slice()
            .try_into()
            .map_err(|_| "login.signing_key: not an Ed25519 key".to_owned())?;
        let key = Key::ed25519_raw(Some(login.kid.clone()), public);
        providers.push(crate::auth::keys::Provider::new(
            login.issuer.clone(),
            None,
            Some(vec![Alg::EdDSA]),
            std::sync::Arc::new(crate::auth::keys::ProviderKeys::from_keys(
                &login.issuer,
                vec![key],
            )),
        ));
    }
    let keys = keys
        .with_providers(providers)
        .map_err(|e| format!("auth.provider: {e}"))?;
    Ok(Some(Verifier {
        keys,
        rules: Rules {
            issuer: config.auth.issuer.clone(),
            audience: config.auth.audience.clone(),
            leeway_secs: config.auth.leeway.as_secs(),
            max_token_bytes: config.auth.max_token_bytes,
            max_lifetime_secs: config.auth.max_lifetime.as_secs(),
        },
    }))
}

/// How long revocation entries are kept (SPEC §6).
pub fn retention_policy(config: &Config) -> RetentionPolicy {
    RetentionPolicy {
        leeway_secs: config.auth.leeway.as_secs(),
        retention_secs: config
            .admin
            .as_ref()
            .map_or(7 * 24 * 3600, |a| a.revocation_retention.as_secs()),
    }
}

/// Per route, per upstream: the TLS client side of each `wss://` upstream (`None` for
/// `ws://`). Reads the system's roots once when a route has no `upstream_ca`; `wsgate
/// check` reports the same errors (SPEC §2).
#[allow(clippy::type_complexity)]
pub fn upstream_tls(config: &Config) -> Result<Vec<Vec<Option<tls::UpstreamTls>>>, String> {
    let mut system: Option<Arc<rustls::ClientConfig>> = None;
    let mut out = Vec::with_capacity(config.routes.len());
    for (i, r) in config.routes.iter().enumerate() {
        let mut targets = Vec::new();
        if let crate::config::Backend::Upstream { urls, ca, .. } = &r.backend {
            let mut route_config: Option<Arc<rustls::ClientConfig>> = None;
            for (j, u) in urls.iter().enumerate() {
                if !u.secure {
                    targets.push(None);
                    continue;
                }
                let config = match (&route_config, ca) {
                    (Some(c), _) => c.clone(),
                    (None, Some(ca)) => tls::client_config(Some(ca))
                        .map_err(|e| format!("route[{i}].upstream_ca: {e}"))?,
                    (None, None) => match &system {
                        Some(c) => c.clone(),
                        None => tls::client_config(None)
                            .map_err(|e| format!("route[{i}].upstream[{j}]: {e}"))?,
                    },
                };
                if ca.is_none() {
                    system = Some(config.clone());
                }
                route_config = Some(config.clone());
                let name = rustls::pki_types::ServerName::try_from(u.host.as_str())
                    .map_err(|e| format!("route[{i}].upstream[{j}]: {e}"))?
                    .to_owned();
                targets.push(Some(tls::UpstreamTls { config, name }));
            }
        }
        out.push(targets);
    }
    Ok(out)
}

/// Per route, the host and port of each upstream URL, by index (empty for echo routes).
pub fn upstream_hosts(config: &Config) -> Vec<Vec<(UpstreamHost, u16)>> {
    config
        .routes
        .iter()
        .map(|r| match &r.backend {
            crate::config::Backend::Upstream { urls, .. } => urls
                .iter()
                .map(|u| (UpstreamHost::new(&u.host), u.port))
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// Everything a worker needs from one configuration.
pub fn build_runtime(config: &Config) -> Result<Runtime, String> {
    let upstream_tls = upstream_tls(config)?;
    let identity = match config.admin.as_ref().and_then(|a| a.identity_key.as_ref()) {
        Some(key) => Some(Arc::new(
            crate::proto::http::client::sign::IdentitySigner::from_pkcs8(&key.0)
                .map_err(|e| format!("admin.identity_key: {e}"))?,
        )),
        None => None,
    };
    let verifier = build_verifier(config)?;
    let origin = OriginPolicy::new(&config.origin.allow, config.origin.allow_missing)
        .map_err(|e| format!("origin.allow: {e}"))?;
    let l = &config.limits;
    let session = SessionLimits {
        max_frame: l.max_frame,
        max_message: l.max_message,
        idle_timeout: l.idle_timeout,
        messages_per_sec: l.messages,
        bytes_per_sec: l.bytes,
        write_buffer: l.write_buffer,
        close_linger: CLOSE_LINGER,
    };
    let tls = match &config.tls {
        Some(files) => Some(tls::server_config(
            files.cert_chain.clone(),
            files.key.clone_key(),
        )?),
        None => None,
    };
    // Names of token-carrying query parameters (redacted, stripped upstream) and cookies
    // (never forwarded upstream).
    let mut token_query_names = Vec::new();
    let mut token_cookie_names = Vec::new();
    for source in &config.auth.sources {
        match source {
            crate::config::Source::Query(n) => token_query_names.push(n.clone()),
            crate::config::Source::Cookie(n) => token_cookie_names.push(n.clone()),
            crate::config::Source::Protocol | crate::config::Source::Header => {}
        }
    }
    // Upstream host names are resolved by the control plane (`control::resolve`), never at
    // build time: a DNS failure never refuses a configuration (SPEC §2, `check` agrees).
    let upstream_hosts = upstream_hosts(config);
    Ok(Runtime {
        gate: Gate::new(
            config.routes.clone(),
            origin,
            verifier,
            config.auth.sources.clone(),
            config.auth.explain_to_browsers,
            config.server.max_connections,
        ),
        session,
        handshake_timeout: l.handshake_timeout,
        max_request_bytes: l.max_request_bytes,
        shutdown_grace: config.server.shutdown_grace,
        token_query_names,
        max_token_bytes: config.auth.max_token_bytes,
        tls,
        refresh: config.session.refresh == crate::config::Refresh::Message,
        expiry_notice: config.session.expiry_notice,
        max_failed_refreshes: config.session.max_failed_refreshes,
        leeway_secs: config.auth.leeway.as_secs(),
        balancers: upstream_hosts
            .iter()
            .map(|targets| {
                crate::backend::upstream::Balancer::new(targets.len(), crate::clock::now())
            })
            .collect(),
        upstream_hosts,
        upstream_tls,
        identity,
        token_cookie_names,
        plain: None,
        compression: config
            .compression
            .permessage_deflate
            .then_some(config.compression.deflate),
    })
}

/// What the control plane's resolver (`control::resolve`) shares with the data plane.
pub struct UpstreamNames {
    /// The upstream host names' addresses, replaced whole as records change.
    pub snapshot: Arc<ArcSwap<ResolvedNames>>,
    /// Failed lookups so far (`wsgate_upstream_dns_failures_total`).
    pub dns_failures: Arc<AtomicU64>,
}

/// No names resolved and no failures: for a data plane whose routes name no upstream host
/// (tests and benches that start one without the control plane).
impl Default for UpstreamNames {
    fn default() -> Self {
        UpstreamNames {
            snapshot: Arc::new(ArcSwap::from_pointee(ResolvedNames::default())),
            dns_failures: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// A running data plane: the workers started, each accepting on its own listeners.
pub struct Running {
    /// The bound addresses, in `server.listen` order (port 0 resolved).
    pub local_addrs: Vec<SocketAddr>,
    /// Shared counters.
    pub shared: Arc<Shared>,
    workers: Vec<(Sender<Command>, Arc<mio::Waker>, JoinHandle<()>)>,
    grace: Duration,
}

/// Binds every `server.listen` address, in order.
pub fn bind(config: &Config) -> Result<Vec<mio::net::TcpListener>, String> {
    let mut listeners = Vec::with_capacity(config.server.listen.len());
    for (i, addr) in config.server.listen.iter().enumerate() {
        let l = listener::bind(*addr)
            .map_err(|e| format!("server.listen[{i}]: cannot listen on {addr}: {e}"))?;
        listeners.push(l);
    }
    Ok(listeners)
}

/// Binds and starts the workers, with `rt` (from [`build_runtime`]), the revocations in
/// force (replayed from the log before anything listens, SPEC §6) and the upstream names'
/// snapshot that the control plane's resolver keeps current.
pub fn start(
    config: &Config,
    rt: Arc<Runtime>,
    revocations: RevocationSet,
    upstream_names: UpstreamNames,
) -> Result<Running, String> {
    start_on(config, rt, bind(config)?, revocations, upstream_names)
}

/// [`start`] on listeners the caller bound (`serve --demo` binds first, then builds a
/// configuration that names the bound port).
pub fn start_on(
    config: &Config,
    rt: Arc<Runtime>,
    listeners: Vec<mio::net::TcpListener>,
    revocations: RevocationSet,
    upstream_names: UpstreamNames,
) -> Result<Running, String> {
    let mut local_addrs = Vec::with_capacity(listeners.len());
    for (i, l) in listeners.iter().enumerate() {
        local_addrs.push(
            l.local_addr()
                .map_err(|e| format!("server.listen[{i}]: {e}"))?,
        );
    }
    let n = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let l = &config.limits;
    let shared = Arc::new(Shared {
        open: AtomicUsize::new(0),
        max_connections: AtomicUsize::new(config.server.max_connections),
        per_worker: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        accepted_per_worker: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        ips: IpTable::new(IpBudget {
            connections: l.per_ip_connections,
            handshakes_per_sec: l.per_ip_handshakes,
            auth_failures_per_sec: l.per_ip_auth_failures,
            ipv6_prefix: l.ipv6_prefix,
        }),
        subjects: SubjectTable::new(l.per_subject_connections),
        draining: AtomicBool::new(false),
        revocations: Arc::new(ArcSwap::from_pointee(revocations)),
        upstream_names: upstream_names.snapshot,
        longest_lifetime: AtomicU64::new(0),
        metrics: Arc::new(
            Metrics::new(n, &TokenError::REASON_LABELS)
                .with_dns_failures(upstream_names.dns_failures),
        ),
        deflate_budget: MemoryBudget::new(config.compression.memory),
    });
    // Worker 0 takes the bound listeners; every other worker binds its own socket to each
    // bound address (SO_REUSEPORT: the kernel spreads connections over the sockets).
    let mut per_worker = Vec::with_capacity(n);
    per_worker.push(listeners);
    for _ in 1..n {
        let mut own = Vec::with_capacity(local_addrs.len());
        for (i, a) in local_addrs.iter().enumerate() {
            own.push(
                listener::bind(*a)
                    .map_err(|e| format!("server.listen[{i}]: cannot listen on {a}: {e}"))?,
            );
        }
        per_worker.push(own);
    }
    let mut workers = Vec::with_capacity(n);
    for (i, listeners) in per_worker.into_iter().enumerate() {
        let (worker, handle) = Worker::new(i, rt.clone(), shared.clone(), listeners)
            .map_err(|e| format!("worker {i}: {e}"))?;
        let join = std::thread::Builder::new()
            .name(format!("wsgate-worker-{i}"))
            .spawn(move || worker.run())
            .map_err(|e| format!("worker {i}: cannot start thread: {e}"))?;
        workers.push((handle.tx, handle.waker, join));
    }
    for a in &local_addrs {
        let scheme = if rt.tls.is_some() { "wss" } else { "ws" };
        // Always printed, whatever WSGATE_LOG says: tools find the port here.
        crate::log::always(format_args!("listening on {a} ({scheme}://, {n} workers)"));
    }
    Ok(Running {
        local_addrs,
        shared,
        workers,
        grace: config.server.shutdown_grace,
    })
}

impl Running {
    /// Every worker's command queue and waker: how the control plane reaches the workers.
    pub fn queues(&self) -> Vec<(Sender<Command>, Arc<mio::Waker>)> {
        self.workers
            .iter()
            .map(|(tx, waker, _)| (tx.clone(), Arc::clone(waker)))
            .collect()
    }

    /// Graceful shutdown (SPEC §6): each worker stops accepting (closes its listeners),
    /// closes every connection with 1001, and exits within `shutdown_grace`.
    pub fn shutdown(mut self) {
        self.shared.draining.store(true, Ordering::SeqCst);
        // Two steps: every listener is closed before any connection is told 1001, so a
        // client reconnecting on its close cannot land on a worker that has not yet
        // begun to drain.
        let (ack, acks) = crossbeam_channel::unbounded();
        let mut asked = 0;
        for (tx, waker, _) in &self.workers {
            if tx.send(Command::StopAccepting(ack.clone())).is_ok() {
                asked += 1;
                let _ = waker.wake();
            }
        }
        drop(ack);
        // A worker answers at the end of its current loop turn, however long a loaded
        // machine makes that (a debug build's turn over a flood took over a second): a
        // shorter bound would let the 1001s go out before every listener is closed. A
        // worker that has died drops its sender, and `recv` fails at once; one that is
        // stuck would hold the `join` below anyway. The grace bounds the wait.
        let until = crate::clock::now() + self.grace;
        for _ in 0..asked {
            if acks.recv_deadline(until).is_err() {
                break;
            }
        }
        for (tx, waker, _) in &self.workers {
            let _ = tx.send(Command::Drain);
            let _ = waker.wake();
        }
        for (_, _, join) in self.workers.drain(..) {
            let _ = join.join();
        }
        info!("stopped (grace {:?})", self.grace);
    }
}
