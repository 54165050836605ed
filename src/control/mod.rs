//! The control plane (ARCHITECTURE.md, "Two planes"): everything that changes what the
//! workers know, on one small tokio runtime of its own, never on a worker's event loop.
//!
//! Threads: `wsgate-control` runs a current-thread runtime that waits for signals, serves
//! the admin listener ([`admin::listener`]) and runs SIGHUP reloads ([`reload`]); work that
//! blocks (token signature checks, the revocation log's fsync, reading and building a
//! configuration, resolving upstream names ([`resolve`])) goes to the runtime's blocking pool, at most
//! [`BLOCKING_THREADS`] threads, started on demand. The main thread only waits for
//! `wsgate-control` to finish.
//!
//! The one way in to the workers, in two forms:
//! - **snapshots**: immutable values that the control plane replaces whole with an atomic
//!   pointer swap (`arc-swap`) and that a worker loads once per handshake or refresh, with
//!   no lock: the revocation set ([`crate::net::worker::Shared::revocations`]),
//!   replaced copy-on-write by each `POST /revoke`, and each generation's verifier
//!   ([`crate::gate::decide::VerifierCell`]), replaced when a provider's key set changes
//!   ([`issuers`]), and the upstream host names' addresses
//!   ([`crate::net::worker::Shared::upstream_names`]), replaced as records change
//!   ([`resolve`]);
//! - **commands** over each worker's crossbeam channel, followed by a `mio::Waker` wake-up
//!   ([`Workers::broadcast`]): a new configuration generation (`Command::Reload`), a
//!   revocation to enforce on live connections (`Command::Revoke`), a provider's key set
//!   that lost keys (`Command::KeysChanged`: their sessions close 4401), the drain.
//!
//! A worker never waits for the control plane.
//!
//! Start and stop ([`serve`]): the runtime is built and SIGTERM, SIGINT and SIGHUP are
//! registered before any thread starts; the revocation log is replayed; the data plane
//! starts ([`crate::net::server::start`]); the admin listener binds. At SIGTERM or SIGINT
//! the data plane drains (SPEC §6, within `server.shutdown_grace`) while the admin listener
//! still answers (`/readyz` says 503), then the admin listener stops and the runtime ends.

pub mod admin;
pub mod cluster;
pub mod fetch;
mod fleet;
pub mod issuers;
pub mod login;
pub mod reload;
pub mod resolve;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::oneshot;

use self::admin::gateway::{AdminView, GatewayAdmin, Revoker};
use self::admin::listener::{self as admin_listener, Limits};
use self::admin::revlog::RevocationLog;
use self::admin::AdminBackend;
use self::login::Service;
use self::reload::Reloader;
use crate::auth::revocation::RevocationSet;
use crate::clock;
use crate::config::Config;
use crate::net::server::{self, Running};
use crate::net::worker::{Command, Runtime};
use crate::{info, warn};

/// Most threads the control runtime starts for blocking work. Each exists only while there
/// is such work (and a few seconds after); revocations are serialized by the log anyway.
pub const BLOCKING_THREADS: usize = 4;

/// Once the control plane has stopped, how long its runtime waits for blocking work still
/// running (a token check, a reload) before the process goes on exiting.
const STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest wait for the fleet link to leave the fleet at shutdown.
const CLUSTER_LEAVE: Duration = Duration::from_secs(2);

/// Every worker's command queue and waker: the command half of the one way in.
#[derive(Clone)]
pub struct Workers {
    queues: Arc<[(Sender<Command>, Arc<mio::Waker>)]>,
}

impl Workers {
    /// The workers reached through `queues` (one per worker).
    pub fn new(queues: Vec<(Sender<Command>, Arc<mio::Waker>)>) -> Workers {
        Workers {
            queues: queues.into(),
        }
    }

    /// Sends one command (made by `command`, once per worker) to every worker and wakes
    /// it; returns how many workers took theirs (a worker that has exited takes none).
    /// Never blocks: the queues are unbounded, and a command is as rare as an operator's
    /// action.
    pub fn broadcast(&self, mut command: impl FnMut() -> Command) -> usize {
        let mut taken = 0;
        for (queue, waker) in self.queues.iter() {
            if queue.send(command()).is_ok() {
                let _ = waker.wake();
                taken += 1;
            }
        }
        taken
    }
}

/// The signals the control plane waits for.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    /// Registers the handlers; needs the runtime's context.
    fn register() -> std::io::Result<Signals> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }
}

/// What the control thread runs.
struct Plane {
    running: Running,
    reloader: Reloader,
    admin: Option<(tokio::net::TcpListener, Arc<GatewayAdmin>)>,
    /// The fleet link, with `[cluster]` (SPEC §8).
    cluster: Option<Arc<cluster::Cluster>>,
    login: Option<LoginListener>,
}

/// The token service's listener, the service, and what a reload changes in the listener
/// (its certificate with `[tls]`, its CORS origins).
type LoginListener = (
    tokio::net::TcpListener,
    Arc<Service>,
    Arc<login::http::Live>,
);

/// How often the token service deletes expired refresh-token families.
const LOGIN_SWEEP: Duration = Duration::from_secs(3600);

/// `wsgate serve`: starts the data plane and the control plane, and runs until SIGTERM or
/// SIGINT, then shuts down gracefully (SPEC §6).
pub fn serve(config: &Config, config_path: Option<&Path>) -> Result<(), String> {
    let control = Control::new()?;
    let rt = server::build_runtime(config)?;
    control.start(config, config_path, rt, None)?.wait()
}

/// The control plane before anything starts: its runtime and the signal handlers.
pub struct Control {
    runtime: tokio::runtime::Runtime,
    signals: Signals,
    /// The login listener, when the caller bound it (`serve --demo`).
    login_listener: Option<std::net::TcpListener>,
}

impl Control {
    /// Builds the runtime and registers SIGTERM, SIGINT and SIGHUP. Call it before any
    /// other thread starts, so that none of them meets SIGHUP with its default disposition,
    /// which would kill the process.
    pub fn new() -> Result<Control, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(BLOCKING_THREADS)
            .thread_name("wsgate-control-blocking")
            .build()
            .map_err(|e| format!("control plane: cannot start its runtime: {e}"))?;
        // Signal handlers register with this runtime's reactor.
        let signals = {
            let _context = runtime.enter();
            Signals::register().map_err(|e| format!("signals: {e}"))?
        };
        Ok(Control {
            runtime,
            signals,
            login_listener: None,
        })
    }

    /// Serves `[login]` on `listener`, bound by the caller (`serve --demo` needs the port
    /// before it builds the configuration), instead of binding `login.listen`.
    pub fn with_login_listener(mut self, listener: std::net::TcpListener) -> Control {
        self.login_listener = Some(listener);
        self
    }

    /// Replays the revocation log, starts the data plane with `rt` (from
    /// [`server::build_runtime`]) on `listeners`, or on `server.listen` bound once the log
    /// is replayed when `None` (`serve --demo` binds first), and binds the admin listener.
    /// `config_path` is what SIGHUP reloads (`None`: nothing).
    pub fn start(
        self,
        config: &Config,
        config_path: Option<&Path>,
        rt: Runtime,
        listeners: Option<Vec<mio::net::TcpListener>>,
    ) -> Result<Started, String> {
        let Control {
            runtime,
            signals,
            login_listener,
        } = self;
        // Upstream host names are looked up once before anything listens (each waited for
        // a bounded time); a name that fails is retried, never a refused start (#18).
        let resolver = resolve::Resolver::new(Arc::new(resolve::SystemLookup::new()));
        runtime.block_on(resolver.follow(&resolve::names_of(config)));
        let plane = {
            // The admin socket registers with this runtime's reactor.
            let _context = runtime.enter();
            start(config, config_path, rt, listeners, login_listener, resolver)?
        };
        Ok(Started {
            runtime,
            signals,
            plane,
        })
    }
}

/// A started gateway: the data plane runs, the signals are not yet awaited.
pub struct Started {
    runtime: tokio::runtime::Runtime,
    signals: Signals,
    plane: Plane,
}

impl Started {
    /// The data listeners' bound addresses, in order (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.plane.running.local_addrs
    }

    /// Runs the control plane on a thread of its own until SIGTERM or SIGINT, then shuts
    /// everything down gracefully (SPEC §6).
    pub fn wait(self) -> Result<(), String> {
        let Started {
            runtime,
            signals,
            plane,
        } = self;
        let control = std::thread::Builder::new()
            .name("wsgate-control".into())
            .spawn(move || {
                runtime.block_on(run(plane, signals));
                runtime.shutdown_timeout(STOP_TIMEOUT);
            })
            .map_err(|e| format!("control plane: cannot start its thread: {e}"))?;
        control
            .join()
            .map_err(|_| "control plane: its thread panicked".to_owned())
    }
}

/// Replays the revocation log, starts the data plane and binds the admin listener (in the
/// runtime's context).
fn start(
    config: &Config,
    config_path: Option<&Path>,
    rt: Runtime,
    listeners: Option<Vec<mio::net::TcpListener>>,
    login_listener: Option<std::net::TcpListener>,
    resolver: Arc<resolve::Resolver>,
) -> Result<Plane, String> {
    let rt = Arc::new(rt);
    // Revocations replayed before anything listens: a restart forgets none (SPEC §6).
    let (revocations, log) = replay_revocations(config)?;
    let names = resolver.shared();
    let running = match listeners {
        Some(listeners) => {
            server::start_on(config, Arc::clone(&rt), listeners, revocations, names)?
        }
        None => server::start(config, Arc::clone(&rt), revocations, names)?,
    };
    // Re-resolves the upstream names as they come due, until the runtime stops.
    tokio::spawn(Arc::clone(&resolver).run());
    let workers = Workers::new(running.queues());
    // SPEC §9: the providers' key sets, fetched here and published to the workers.
    let issuers = Arc::new(issuers::Issuers::start(
        &rt,
        &config.auth.providers,
        workers.clone(),
    ));
    let revoker = Arc::new(Revoker::new(
        Arc::clone(&running.shared),
        workers.clone(),
        log,
    ));
    let login = match start_login(config, &revoker, login_listener) {
        Ok(login) => login,
        Err(e) => {
            running.shutdown();
            return Err(e);
        }
    };
    let admin = match &config.admin {
        Some(a) => {
            let listener = match admin_listener::bind(a.listen) {
                Ok(listener) => listener,
                Err(e) => {
                    running.shutdown();
                    return Err(format!("admin.listen: cannot listen on {}: {e}", a.listen));
                }
            };
            let addr = listener.local_addr().unwrap_or(a.listen);
            let backend = Arc::new(GatewayAdmin::new(
                AdminView {
                    rt,
                    token_scope: a.token_scope.clone(),
                },
                Arc::clone(&running.shared),
                Arc::clone(&revoker),
            ));
            crate::log::always(format_args!("admin listening on {addr}"));
            backend.set_ready();
            Some((listener, backend))
        }
        None => None,
    };
    let fleet_admin = admin.as_ref().map(|(_, backend)| Arc::clone(backend));
    let cluster = match fleet::start(config, &running, workers.clone(), fleet_admin) {
        Ok(cluster) => cluster,
        Err(e) => {
            running.shutdown();
            return Err(e);
        }
    };
    if let Some(cluster) = &cluster {
        // Also without an admin listener: the token service's revocations reach the fleet.
        revoker.join_fleet(Arc::clone(cluster));
    }
    let reloader = Reloader {
        login: login.as_ref().map(|(_, _, live)| Arc::clone(live)),
        path: config_path.map(Path::to_path_buf),
        listen: config.server.listen.clone(),
        cluster: config.cluster.clone(),
        shared: Arc::clone(&running.shared),
        workers,
        admin: admin.as_ref().map(|(_, backend)| Arc::clone(backend)),
        issuers,
        resolver,
    };
    Ok(Plane {
        running,
        reloader,
        admin,
        cluster,
        login,
    })
}

/// Starts the token service of `[login]` (SPEC §11) and binds its listener (in the
/// runtime's context): reads the users file, opens the refresh-token store (an error names
/// it and stops the start), applies the revocations `user remove` recorded meanwhile.
fn start_login(
    config: &Config,
    revoker: &Arc<Revoker>,
    bound: Option<std::net::TcpListener>,
) -> Result<Option<LoginListener>, String> {
    let Some(l) = &config.login else {
        return Ok(None);
    };
    // SPEC §11: HTTPS with [tls].
    let tls = match &config.tls {
        Some(files) => Some(crate::net::tls::server_config(
            files.cert_chain.clone(),
            files.key.clone_key(),
        )?),
        None => None,
    };
    let path: Arc<dyn login::Revoke> = Arc::clone(revoker) as Arc<dyn login::Revoke>;
    let Some(service) = Service::start(config, path)? else {
        return Ok(None);
    };
    revoker.set_login(&service);
    let listener = match bound {
        Some(bound) => bound
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(bound)),
        None => login::http::bind(l.listen),
    }
    .map_err(|e| format!("login.listen: cannot listen on {}: {e}", l.listen))?;
    let addr = listener.local_addr().unwrap_or(l.listen);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let live = login::http::Live::new(config, tls)?;
    crate::log::always(format_args!("login listening on {addr} ({scheme})"));
    Ok(Some((listener, service, live)))
}

/// The revocation set in force at start, replayed from `admin.revocation_log` when there is
/// one, and the log to append to.
fn replay_revocations(config: &Config) -> Result<(RevocationSet, Option<RevocationLog>), String> {
    let mut revocations = RevocationSet::new(server::retention_policy(config));
    let Some(path) = config
        .admin
        .as_ref()
        .and_then(|a| a.revocation_log.as_ref())
    else {
        return Ok((revocations, None));
    };
    let (log, report) = RevocationLog::open(path, &mut revocations, clock::unix_now())
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
    Ok((revocations, Some(log)))
}

/// The control thread: the admin listener and the signal loop, then the shutdown.
async fn run(plane: Plane, mut signals: Signals) {
    let Plane {
        running,
        reloader,
        admin,
        cluster,
        login,
    } = plane;
    let (stop_login, login_stopped) = oneshot::channel();
    let login_service = login.as_ref().map(|(_, service, _)| Arc::clone(service));
    let login = login.map(|(listener, service, live)| {
        tokio::spawn(sweep(Arc::clone(&service)));
        tokio::spawn(login::http::serve(
            listener,
            service,
            login::http::Limits::DEFAULT,
            live,
            login_stopped,
        ))
    });
    let (stop_admin, admin_stopped) = oneshot::channel();
    let admin = admin.map(|(listener, backend)| {
        let backend: Arc<dyn AdminBackend> = backend;
        tokio::spawn(admin_listener::serve(
            listener,
            backend,
            Limits::DEFAULT,
            admin_stopped,
        ))
    });
    loop {
        tokio::select! {
            Some(()) = signals.hangup.recv() => {
                reloader.reload().await;
                if let Some(service) = &login_service {
                    reload_users(service).await;
                }
            }
            Some(()) = signals.terminate.recv() => {
                info!("signal {}: draining", SignalKind::terminate().as_raw_value());
                break;
            }
            Some(()) = signals.interrupt.recv() => {
                info!("signal {}: draining", SignalKind::interrupt().as_raw_value());
                break;
            }
            else => break,
        }
    }
    // No new tokens while draining.
    let _ = stop_login.send(());
    if let Some(login) = login {
        let _ = login.await;
    }
    drain(running).await;
    if let Some(cluster) = cluster {
        // Leaves the fleet: this gateway's counts stop counting at once.
        cluster.stop(CLUSTER_LEAVE).await;
    }
    let _ = stop_admin.send(());
    if let Some(admin) = admin {
        let _ = admin.await;
    }
}

/// SIGHUP: the token service re-reads its users file (SPEC §11); a bad file is logged and
/// the users stay as they were.
async fn reload_users(service: &Arc<Service>) {
    let service = Arc::clone(service);
    match tokio::task::spawn_blocking(move || service.reload_users()).await {
        Ok(Ok(count)) => info!("login: users file re-read: {count} users"),
        Ok(Err(e)) => warn!("login: users file refused, keeping the previous users: {e}"),
        Err(_) => warn!("login: users file reload failed: internal error"),
    }
}

/// Deletes expired refresh-token families every [`LOGIN_SWEEP`].
async fn sweep(service: Arc<Service>) {
    let mut every = tokio::time::interval(LOGIN_SWEEP);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate, and the store was swept when it opened.
    every.tick().await;
    loop {
        every.tick().await;
        let service = Arc::clone(&service);
        match tokio::task::spawn_blocking(move || service.sweep()).await {
            Ok(Ok(swept)) if swept > 0 => {
                info!("login: {swept} expired refresh-token families deleted")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!("login: refresh-token store sweep failed: {e}"),
            Err(_) => warn!("login: refresh-token store sweep failed: internal error"),
        }
    }
}

/// Drains the data plane (it joins threads for up to `shutdown_grace`) on a thread of its
/// own, so that the admin listener keeps answering meanwhile and no blocking-pool thread,
/// which a slow revocation may hold, is needed for it.
async fn drain(running: Running) {
    let (done, drained) = oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("wsgate-drain".into())
        .spawn(move || {
            running.shutdown();
            let _ = done.send(());
        });
    match spawned {
        // Err: the thread ended without sending, which only a panic does; nothing to wait for.
        Ok(_) => {
            let _ = drained.await;
        }
        Err(e) => warn!("shutdown: cannot start the drain thread ({e}); exiting at once"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_reaches_every_live_worker_and_wakes_it() {
        let mut polls = Vec::new();
        let mut receivers = Vec::new();
        let mut queues = Vec::new();
        for _ in 0..3 {
            let poll = mio::Poll::new().unwrap_or_else(|e| panic!("poll: {e}"));
            let waker = mio::Waker::new(poll.registry(), mio::Token(7))
                .unwrap_or_else(|e| panic!("waker: {e}"));
            let (tx, rx) = crossbeam_channel::unbounded();
            queues.push((tx, Arc::new(waker)));
            receivers.push(rx);
            polls.push(poll);
        }
        // The third worker has exited: its queue is closed.
        drop(receivers.pop());
        let workers = Workers::new(queues);
        let mut made = 0;
        let taken = workers.broadcast(|| {
            made += 1;
            Command::Drain
        });
        assert_eq!((made, taken), (3, 2));
        for (rx, poll) in receivers.iter().zip(&mut polls) {
            assert!(matches!(rx.try_recv(), Ok(Command::Drain)));
            let mut events = mio::Events::with_capacity(4);
            let polled = poll.poll(&mut events, Some(Duration::ZERO));
            assert!(polled.is_ok());
            assert!(events.iter().any(|e| e.token() == mio::Token(7)), "woken");
        }
    }
}
