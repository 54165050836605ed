//! Starting and stopping the whole gateway: runtime from config, listeners, workers,
//! the acceptor, and the signal loop on the main thread.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::admin::GatewayAdmin;
use super::listener::{self, Acceptor};
use super::tls;
use super::worker::{Command, Runtime, Shared, Worker};
use crate::admin::revlog::RevocationLog;
use crate::auth::error::TokenError;
use crate::auth::keys::{Alg, Key, KeySet};
use crate::auth::revocation::{RetentionPolicy, RevocationSet};
use crate::auth::verify::{Rules, Verifier};
use crate::config::{Config, KeyMaterial};
use crate::gate::decide::Gate;
use crate::gate::limits::{IpBudget, IpTable, SubjectTable};
use crate::gate::origin::OriginPolicy;
use crate::metrics::Metrics;
use crate::proto::ws::session::SessionLimits;
use crate::{info, warn};

/// How long the gateway keeps draining a connection after its last bytes (close frame
/// or HTTP rejection) before dropping it without the peer's FIN.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Builds the token verifier from the configured keys (None when there are none).
pub fn build_verifier(config: &Config) -> Result<Option<Verifier>, String> {
    if config.auth.keys.is_empty() && config.auth.providers.is_empty() {
        return Ok(None);
    }
    let mut keys = Vec::with_capacity(config.auth.keys.len());
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
    let providers = crate::config::provider::build_providers(&config.auth.providers, |line| {
        warn!("{line}");
    });
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
        },
    }))
}

/// How long revocation entries are kept (SPEC §6).
fn retention_policy(config: &Config) -> RetentionPolicy {
    RetentionPolicy {
        leeway_secs: config.auth.leeway.as_secs(),
        retention_secs: config
            .admin
            .as_ref()
            .map_or(7 * 24 * 3600, |a| a.revocation_retention.as_secs()),
    }
}

/// Everything a worker needs from one configuration.
pub fn build_runtime(config: &Config) -> Result<Runtime, String> {
    let verifier = build_verifier(config)?;
    // What identifies "the same key" across reloads ("key retired").
    let key_fingerprints = verifier
        .as_ref()
        .map(|v| v.keys.fingerprints())
        .unwrap_or_default();
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
    // Upstream addresses are resolved once per configuration (start and SIGHUP), never
    // on the hot path.
    let mut upstream_addrs = Vec::with_capacity(config.routes.len());
    for (i, r) in config.routes.iter().enumerate() {
        let mut addrs = Vec::new();
        if let crate::config::Backend::Upstream { urls, .. } = &r.backend {
            for (j, u) in urls.iter().enumerate() {
                if u.secure {
                    return Err(format!(
                        "route[{i}].upstream[{j}]: wss:// upstreams are not supported in this version; use ws:// on a private network"
                    ));
                }
                let addr = std::net::ToSocketAddrs::to_socket_addrs(&(u.host.as_str(), u.port))
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| {
                        format!("route[{i}].upstream[{j}]: cannot resolve {}", u.host)
                    })?;
                addrs.push(addr);
            }
        }
        upstream_addrs.push(addrs);
    }
    Ok(Runtime {
        gate: Gate::new(
            config.routes.clone(),
            origin,
            verifier,
            config.auth.sources.clone(),
            config.auth.explain_to_browsers,
            config.server.max_connections,
            key_fingerprints,
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
        leeway_secs: config.auth.leeway.as_secs(),
        upstream_addrs,
        token_cookie_names,
    })
}

/// A running gateway (threads started, signals not yet awaited).
pub struct Running {
    /// The bound addresses, in `server.listen` order (port 0 resolved).
    pub local_addrs: Vec<SocketAddr>,
    /// Shared counters.
    pub shared: Arc<Shared>,
    workers: Vec<(
        crossbeam_channel::Sender<Command>,
        Arc<mio::Waker>,
        JoinHandle<()>,
    )>,
    acceptor: Option<(Arc<mio::Waker>, JoinHandle<()>)>,
    grace: Duration,
    listen: Vec<SocketAddr>,
    admin: Option<AdminHandle>,
}

/// The running admin listener.
struct AdminHandle {
    backend: Arc<GatewayAdmin>,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    join: JoinHandle<()>,
}

/// Binds and starts workers and the acceptor.
pub fn start(config: &Config) -> Result<Running, String> {
    let rt = Arc::new(build_runtime(config)?);
    let mut listeners = Vec::new();
    let mut local_addrs = Vec::new();
    for (i, addr) in config.server.listen.iter().enumerate() {
        let l = listener::bind(*addr)
            .map_err(|e| format!("server.listen[{i}]: cannot listen on {addr}: {e}"))?;
        local_addrs.push(
            l.local_addr()
                .map_err(|e| format!("server.listen[{i}]: {e}"))?,
        );
        listeners.push(l);
    }
    let n = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let l = &config.limits;
    // Revocations replayed before anything listens: a restart forgets none (SPEC §6).
    let mut revocations = RevocationSet::new(retention_policy(config));
    let revocation_log = match config
        .admin
        .as_ref()
        .and_then(|a| a.revocation_log.as_ref())
    {
        Some(path) => {
            let (log, report) =
                RevocationLog::open(path, &mut revocations, super::clock::unix_now())
                    .map_err(|e| format!("admin.revocation_log: {e}"))?;
            if let Some(bytes) = report.torn_tail_bytes {
                warn!(
                    "admin.revocation_log: {}: a torn last line ({bytes} bytes, from an interrupted write) was dropped; earlier entries kept",
                    path.display()
                );
            }
            info!(
                "revocation log {}: {} entries replayed, {} expired",
                path.display(),
                report.replayed,
                report.expired
            );
            Some(log)
        }
        None => None,
    };
    let shared = Arc::new(Shared {
        open: AtomicUsize::new(0),
        per_worker: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        accepted_per_worker: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        ips: IpTable::new(IpBudget {
            connections: l.per_ip_connections,
            handshakes_per_sec: l.per_ip_handshakes,
            auth_failures_per_sec: l.per_ip_auth_failures,
        }),
        subjects: SubjectTable::new(l.per_subject_connections),
        draining: AtomicBool::new(false),
        revocations: RwLock::new(revocations),
        longest_lifetime: AtomicU64::new(0),
        metrics: Arc::new(Metrics::new(n, &TokenError::REASON_LABELS)),
    });
    let mut workers = Vec::with_capacity(n);
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let (worker, handle) =
            Worker::new(i, rt.clone(), shared.clone()).map_err(|e| format!("worker {i}: {e}"))?;
        let join = std::thread::Builder::new()
            .name(format!("wsgate-worker-{i}"))
            .spawn(move || worker.run())
            .map_err(|e| format!("worker {i}: cannot start thread: {e}"))?;
        workers.push((handle.tx.clone(), handle.waker.clone(), join));
        handles.push(handle);
    }
    let (acceptor, stop) =
        Acceptor::new(listeners, handles, shared.clone()).map_err(|e| format!("acceptor: {e}"))?;
    let acceptor_join = std::thread::Builder::new()
        .name("wsgate-acceptor".into())
        .spawn(move || acceptor.run())
        .map_err(|e| format!("acceptor: cannot start thread: {e}"))?;
    for a in &local_addrs {
        let scheme = if rt.tls.is_some() { "wss" } else { "ws" };
        // Always printed, whatever WSGATE_LOG says: tools find the port here.
        eprintln!("wsgate info: listening on {a} ({scheme}://, {n} workers)");
    }
    let admin = match &config.admin {
        Some(a) => {
            let backend = Arc::new(GatewayAdmin::new(
                rt.clone(),
                shared.clone(),
                workers
                    .iter()
                    .map(|(tx, w, _)| (tx.clone(), w.clone()))
                    .collect(),
                revocation_log,
                a.token_scope.clone(),
            ));
            let stop = Arc::new(AtomicBool::new(false));
            let (addr, join) = crate::admin::spawn(a.listen, backend.clone(), stop.clone())
                .map_err(|e| format!("admin.listen: cannot listen on {}: {e}", a.listen))?;
            eprintln!("wsgate info: admin listening on {addr}");
            Some(AdminHandle {
                backend,
                addr,
                stop,
                join,
            })
        }
        None => None,
    };
    if let Some(admin) = &admin {
        admin.backend.ready.store(true, Ordering::Relaxed);
    }
    Ok(Running {
        local_addrs,
        shared,
        workers,
        acceptor: Some((stop, acceptor_join)),
        grace: config.server.shutdown_grace,
        listen: config.server.listen.clone(),
        admin,
    })
}

impl Running {
    /// SIGHUP (SPEC §6): reload keys, certificates, origin lists and limits as one swap.
    /// A config that does not load or build is reported and the old one stays.
    pub fn reload(&self, path: &std::path::Path) {
        let config = match crate::config::load(path) {
            Ok(c) => c,
            Err(errors) => {
                for line in errors.to_string().lines() {
                    warn!("reload failed, keeping the running configuration: {line}");
                }
                return;
            }
        };
        let rt = match build_runtime(&config) {
            Ok(rt) => Arc::new(rt),
            Err(e) => {
                warn!("reload failed, keeping the running configuration: {e}");
                return;
            }
        };
        if config.server.listen != self.listen {
            warn!("reload: server.listen changes take effect at the next restart");
        }
        let l = &config.limits;
        self.shared.ips.set_budget(IpBudget {
            connections: l.per_ip_connections,
            handshakes_per_sec: l.per_ip_handshakes,
            auth_failures_per_sec: l.per_ip_auth_failures,
        });
        self.shared
            .subjects
            .limit
            .store(l.per_subject_connections as usize, Ordering::Relaxed);
        for (tx, waker, _) in &self.workers {
            let _ = tx.send(Command::Reload(rt.clone()));
            let _ = waker.wake();
        }
        if let (Some(admin), Some(cfg)) = (&self.admin, &config.admin) {
            *admin
                .backend
                .rt
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = rt.clone();
            *admin
                .backend
                .token_scope
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = cfg.token_scope.clone();
        }
        info!("reloaded {}", path.display());
    }

    /// Graceful shutdown (SPEC §6): stop accepting, close every connection with 1001,
    /// wait for the workers at most `shutdown_grace` (they enforce it themselves).
    pub fn shutdown(mut self) {
        self.shared.draining.store(true, Ordering::SeqCst);
        if let Some((stop, join)) = self.acceptor.take() {
            let _ = stop.wake();
            let _ = join.join();
        }
        for (tx, waker, _) in &self.workers {
            let _ = tx.send(Command::Drain);
            let _ = waker.wake();
        }
        for (_, _, join) in self.workers.drain(..) {
            let _ = join.join();
        }
        if let Some(admin) = self.admin.take() {
            crate::admin::request_stop(admin.addr, &admin.stop);
            let _ = admin.join.join();
        }
        info!("stopped (grace {:?})", self.grace);
    }
}

/// `wsgate serve`: runs until SIGTERM or SIGINT, then shuts down gracefully.
pub fn serve(config: &Config, config_path: Option<&std::path::Path>) -> Result<(), String> {
    let config_path = config_path.map(std::path::Path::to_path_buf);
    // Signals are registered before any thread starts so none of them inherits a
    // default disposition that would kill the process on SIGHUP.
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(|e| format!("signals: {e}"))?;
    let running = start(config)?;
    for sig in signals.forever() {
        match sig {
            SIGHUP => match &config_path {
                Some(path) => running.reload(path),
                None => warn!("SIGHUP: nothing to reload (no config file)"),
            },
            _ => {
                info!("signal {sig}: draining");
                break;
            }
        }
    }
    running.shutdown();
    Ok(())
}
