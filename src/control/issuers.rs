//! SPEC §9 on the control plane: each `[[auth.provider]]`'s JWK Set, fetched (over
//! [`super::fetch`], or read from a local file on the blocking pool) on a schedule, and
//! published to the workers as a new verifier snapshot. Nothing here runs on a worker.
//!
//! Schedule, per provider (one task, so never more than one fetch in flight):
//! - the first fetch at start; after a success the next after `refresh`, or after the
//!   response's `Cache-Control: max-age` when shorter, but never before `min_refresh`;
//! - after a failure the next attempt after `min_refresh`, doubling up to `refresh`;
//! - the last good set keeps verifying for `max_stale` after its fetch; past that (or
//!   before any success) the provider's tokens get 503 + `Retry-After` (the seconds until
//!   the next attempt), and `/readyz` is 503;
//! - a token naming a `kid` that the set lacks asks for a fetch ([`RefetchHook`]); one
//!   starts only when the last began at least `min_refresh` ago, so a flood of random
//!   `kid`s costs at most one fetch per `min_refresh`.
//!
//! Publishing: the verifier cell of the configuration generation in force gets a new
//! snapshot ([`KeySet::with_provider_keys`]); when a key left the set, every worker gets
//! `Command::KeysChanged` and closes the sessions that key verified (4401 "key retired").

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::fetch::{self, FetchError};
use super::Workers;
use crate::auth::jwk::{self, JwkSet, MAX_DOCUMENT_BYTES};
use crate::auth::keys::{FetchStatus, KeySet, ProviderKeys, RefetchHook};
use crate::auth::verify::Verifier;
use crate::clock;
use crate::config::provider::{read_jwks_file, JwksSource, ProviderSettings};
use crate::gate::decide::VerifierCell;
use crate::net::worker::{Command, Runtime};
use crate::{info, warn};

/// The providers' fetch tasks and where they publish.
pub struct Issuers {
    inner: Arc<Inner>,
}

struct Inner {
    workers: Workers,
    /// The verifier cell of the generation in force (replaced on SIGHUP).
    cell: Mutex<Option<VerifierCell>>,
    /// Per issuer: its task and state.
    tasks: Mutex<HashMap<String, Task>>,
}

struct Task {
    settings: ProviderSettings,
    kick: Arc<Flight>,
    state: Arc<Mutex<State>>,
    handle: tokio::task::AbortHandle,
}

/// One provider's schedule and last result.
struct State {
    /// What was last published (keys and status).
    keys: Arc<ProviderKeys>,
    /// When the last fetch began.
    last_start: Option<Instant>,
    /// When the last good set was fetched.
    good_at: Option<Instant>,
    /// The current retry interval after failures (None: the last fetch succeeded).
    backoff: Option<Duration>,
    /// When the next fetch is due.
    next: Instant,
    /// Failures so far, by reason.
    failures: BTreeMap<&'static str, u64>,
}

/// What a worker's refetch request reads and writes, without a lock: whether a fetch is
/// under way, when the last began, and the provider task's wake-up.
struct Flight {
    notify: Notify,
    in_flight: AtomicBool,
    /// Milliseconds since `base` when the last fetch began (`u64::MAX`: never).
    last_start_ms: AtomicU64,
    base: Instant,
    min_refresh: Duration,
}

impl Flight {
    fn new(min_refresh: Duration) -> Flight {
        Flight {
            notify: Notify::new(),
            in_flight: AtomicBool::new(false),
            last_start_ms: AtomicU64::new(u64::MAX),
            base: Instant::now(),
            min_refresh,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// SPEC §9, called from a worker: true when a fetch is under way, or when one may
    /// start (the last began at least `min_refresh` ago) and was asked for now.
    fn ask(&self) -> bool {
        if self.in_flight.load(Ordering::Acquire) {
            return true;
        }
        let last = self.last_start_ms.load(Ordering::Acquire);
        let min = u64::try_from(self.min_refresh.as_millis()).unwrap_or(u64::MAX);
        if last != u64::MAX && self.now_ms().saturating_sub(last) < min {
            return false;
        }
        self.notify.notify_one();
        true
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Issuers {
    /// Starts a fetch task per provider of `settings`, publishing into `rt`'s verifier.
    /// Call it in the control runtime's context.
    pub fn start(rt: &Runtime, settings: &[ProviderSettings], workers: Workers) -> Issuers {
        let inner = Arc::new(Inner {
            workers,
            cell: Mutex::new(None),
            tasks: Mutex::new(HashMap::new()),
        });
        let issuers = Issuers { inner };
        issuers.adopt(rt, settings);
        issuers
    }

    /// A new configuration generation (SIGHUP): its verifier gets the hook and, for each
    /// provider whose settings did not change, the last published set and the schedule;
    /// the other providers start afresh. Call it before the workers get the generation.
    pub fn adopt(&self, rt: &Runtime, settings: &[ProviderSettings]) {
        let cell = rt.gate.verifier_cell().cloned();
        let mut old = std::mem::take(&mut *lock(&self.inner.tasks));
        for task in old.values() {
            task.handle.abort();
        }
        let mut tasks = HashMap::new();
        let mut kicks = HashMap::new();
        if let Some(cell) = &cell {
            for s in settings {
                let kept = old
                    .remove(&s.issuer)
                    .filter(|t| t.settings == *s)
                    .map(|t| (t.state, t.kick));
                let (state, kick) = match kept {
                    Some((state, kick)) => {
                        let keys = {
                            let mut st = lock(&state);
                            let reread = initial_keys(cell, &s.issuer);
                            // A local file was just reread by the reload: that set wins
                            // when it is usable; otherwise the last good one carries over.
                            if matches!(s.source, JwksSource::File(_)) && reread.status.usable {
                                let status = FetchStatus {
                                    usable: true,
                                    ..st.keys.status.clone()
                                };
                                st.keys = Arc::new(reread.with_status(status));
                            }
                            Arc::clone(&st.keys)
                        };
                        publish_into(cell, &s.issuer, keys);
                        (state, kick)
                    }
                    None => {
                        let keys = initial_keys(cell, &s.issuer);
                        // A set read when the runtime was built (a local file) is a good
                        // fetch: max_stale counts from it, so a file that breaks before
                        // the first scheduled read keeps it (SPEC §9).
                        let good_at = keys.status.usable.then(Instant::now);
                        (
                            Arc::new(Mutex::new(State {
                                keys,
                                last_start: None,
                                good_at,
                                backoff: None,
                                next: Instant::now(),
                                failures: BTreeMap::new(),
                            })),
                            Arc::new(Flight::new(s.min_refresh)),
                        )
                    }
                };
                let handle = tokio::spawn(run(
                    s.clone(),
                    Arc::clone(&state),
                    Arc::clone(&kick),
                    Arc::downgrade(&self.inner),
                ))
                .abort_handle();
                kicks.insert(s.issuer.clone(), Arc::clone(&kick));
                tasks.insert(
                    s.issuer.clone(),
                    Task {
                        settings: s.clone(),
                        kick,
                        state,
                        handle,
                    },
                );
            }
            // The data plane's way to ask for a fetch: a wake-up of the provider's task,
            // which decides (never blocks the worker).
            let kicks = Arc::new(kicks);
            let hook = RefetchHook(Arc::new(move |issuer: &str| {
                kicks.get(issuer).is_some_and(|flight| flight.ask())
            }));
            cell.rcu(|v| Verifier {
                keys: v.keys.with_refetch(hook.clone()),
                rules: v.rules.clone(),
            });
        }
        *lock(&self.inner.cell) = cell;
        *lock(&self.inner.tasks) = tasks;
    }

    /// Stops every task.
    pub fn stop(&self) {
        for task in lock(&self.inner.tasks).values() {
            task.handle.abort();
        }
    }
}

/// A provider's keys as the runtime was built with them (a local file is read there).
fn initial_keys(cell: &VerifierCell, issuer: &str) -> Arc<ProviderKeys> {
    cell.load()
        .keys
        .provider(issuer)
        .map(|p| Arc::clone(p.keys()))
        .unwrap_or_default()
}

/// Publishes `keys` for `issuer` into `cell`; true when a key of the old set is gone.
fn publish_into(cell: &VerifierCell, issuer: &str, keys: Arc<ProviderKeys>) -> bool {
    let before = cell.load().keys.fingerprints();
    cell.rcu(|v| Verifier {
        keys: v
            .keys
            .with_provider_keys(issuer, Arc::clone(&keys))
            .unwrap_or_else(|| v.keys.clone()),
        rules: v.rules.clone(),
    });
    let after = cell.load().keys.fingerprints();
    before.iter().any(|f| !after.contains(f))
}

/// The provider's task: waits for the schedule or a refetch request, fetches, publishes.
async fn run(
    settings: ProviderSettings,
    state: Arc<Mutex<State>>,
    kick: Arc<Flight>,
    inner: Weak<Inner>,
) {
    let tls = match &settings.source {
        JwksSource::File(_) => None,
        JwksSource::Url(_) | JwksSource::Discovery(_) => {
            let ca = settings.ca_file.clone();
            match tokio::task::spawn_blocking(move || fetch::client_config(ca.as_deref())).await {
                Ok(Ok(tls)) => Some(tls),
                Ok(Err(e)) => {
                    warn!("provider {:?}: {e}", settings.issuer);
                    None
                }
                Err(_) => None,
            }
        }
    };
    loop {
        let (next, stale_at, earliest) = {
            let s = lock(&state);
            let stale_at = s
                .good_at
                .filter(|_| s.keys.status.usable)
                .map(|g| g + settings.max_stale);
            (
                s.next,
                stale_at,
                s.last_start.map(|t| t + settings.min_refresh),
            )
        };
        let wake = stale_at.map_or(next, |st| st.min(next));
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {
                if Instant::now() < next {
                    // Stale past max_stale: its tokens get 503 from now on.
                    let keys = {
                        let mut s = lock(&state);
                        let status = status_of(&s, false);
                        s.keys = Arc::new(s.keys.with_status(status));
                        Arc::clone(&s.keys)
                    };
                    warn!(
                        "provider {:?}: key set stale past max_stale; its tokens get 503",
                        settings.issuer
                    );
                    publish(&inner, &settings.issuer, keys, &kick);
                    continue;
                }
            }
            () = kick.notify.notified() => {
                // SPEC §9: an unknown kid starts a fetch only when the last began at
                // least min_refresh ago.
                if earliest.is_some_and(|t| Instant::now() < t) {
                    continue;
                }
            }
        }
        lock(&state).last_start = Some(Instant::now());
        kick.last_start_ms.store(kick.now_ms(), Ordering::Release);
        kick.in_flight.store(true, Ordering::Release);
        let result = fetch_set(&settings, tls.as_ref()).await;
        let keys = {
            let mut s = lock(&state);
            let now = Instant::now();
            match result {
                Ok((set, max_age)) => {
                    for skipped in &set.skipped {
                        warn!(
                            "provider {:?}: key #{} (kid {:?}) skipped: {}",
                            settings.issuer,
                            skipped.index,
                            skipped.kid.as_deref().unwrap_or(""),
                            skipped.reason
                        );
                    }
                    // A shorter max-age wins, down to min_refresh.
                    let wait = max_age
                        .map_or(settings.refresh, |a| a.min(settings.refresh))
                        .max(settings.min_refresh);
                    s.good_at = Some(now);
                    s.backoff = None;
                    s.next = now + wait;
                    let fresh = ProviderKeys::from_jwk_set(&settings.issuer, &set);
                    info!(
                        "provider {:?}: {} usable keys fetched; next fetch in {}s",
                        settings.issuer,
                        fresh.len(),
                        wait.as_secs()
                    );
                    let status = status_of(&s, true);
                    s.keys = Arc::new(fresh.with_status(status));
                }
                Err(e) => {
                    *s.failures.entry(e.reason()).or_insert(0) += 1;
                    let backoff = s.backoff.map_or(settings.min_refresh, |b| {
                        (b * 2).min(settings.refresh).max(settings.min_refresh)
                    });
                    s.backoff = Some(backoff);
                    s.next = now + backoff;
                    let usable = s.good_at.is_some_and(|g| now < g + settings.max_stale);
                    warn!(
                        "provider {:?}: fetch failed ({e}); {}; next attempt in {}s",
                        settings.issuer,
                        if usable {
                            "keeping the last good key set"
                        } else {
                            "no usable keys: its tokens get 503"
                        },
                        backoff.as_secs()
                    );
                    let status = status_of(&s, usable);
                    s.keys = Arc::new(s.keys.with_status(status));
                }
            }
            Arc::clone(&s.keys)
        };
        publish(&inner, &settings.issuer, keys, &kick);
    }
}

/// The status to publish from the schedule state.
fn status_of(s: &State, usable: bool) -> FetchStatus {
    let now_unix = clock::unix_now();
    let until_next = s.next.saturating_duration_since(Instant::now());
    FetchStatus {
        usable,
        retry_at_unix: now_unix + until_next.as_secs().max(1),
        last_fetch_unix: s.good_at.map_or(0, |g| {
            now_unix.saturating_sub(Instant::now().saturating_duration_since(g).as_secs())
        }),
        failures: s.failures.iter().map(|(k, v)| (*k, *v)).collect(),
    }
}

/// Publishes into the generation in force, ends the fetch, and tells every worker: they
/// retire removed keys' sessions and decide their parked handshakes again.
fn publish(inner: &Weak<Inner>, issuer: &str, keys: Arc<ProviderKeys>, flight: &Flight) {
    let cell = inner.upgrade().and_then(|inner| lock(&inner.cell).clone());
    if let Some(cell) = &cell {
        publish_into(cell, issuer, keys);
    }
    flight.in_flight.store(false, Ordering::Release);
    if let Some(inner) = inner.upgrade() {
        inner.workers.broadcast(|| Command::KeysChanged);
    }
}

/// One fetch of the provider's JWK Set (through discovery when configured so), and the
/// max-age of the JWK Set response.
async fn fetch_set(
    s: &ProviderSettings,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<(JwkSet, Option<Duration>), FetchError> {
    let url = match &s.source {
        JwksSource::File(path) => {
            let path = path.clone();
            let set = tokio::task::spawn_blocking(move || read_jwks_file(&path))
                .await
                .map_err(|_| FetchError::File("internal error".into()))?
                .map_err(FetchError::File)?;
            return Ok((set, None));
        }
        JwksSource::Url(url) => url.clone(),
        JwksSource::Discovery(url) => {
            let tls = tls.ok_or_else(|| FetchError::Tls("no TLS settings".into()))?;
            let doc = fetch::get(url, tls, MAX_DOCUMENT_BYTES).await?;
            // OpenID Connect Discovery §4.3: the document's issuer must match exactly.
            jwk::parse_discovery(&doc.body, &s.issuer)
                .map_err(|e| FetchError::Document(format!("discovery document: {e}")))?
        }
    };
    let tls = tls.ok_or_else(|| FetchError::Tls("no TLS settings".into()))?;
    let doc = fetch::get(&url, tls, MAX_DOCUMENT_BYTES).await?;
    let set =
        jwk::parse_jwk_set(&doc.body).map_err(|e| FetchError::Document(format!("JWK Set: {e}")))?;
    Ok((set, doc.max_age))
}

/// `/readyz`: every provider of `keys` has a usable set.
pub fn all_usable(keys: &KeySet) -> bool {
    keys.providers().iter().all(|p| p.keys().status.usable)
}

/// The `/metrics` lines of SPEC §9 for `keys`' providers (Prometheus text format).
pub fn render_metrics(keys: &KeySet, out: &mut String) {
    use std::fmt::Write as _;
    let providers = keys.providers();
    if providers.is_empty() {
        return;
    }
    let label = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let _ = writeln!(
        out,
        "# HELP wsgate_provider_up 1 when the identity provider has a usable key set."
    );
    let _ = writeln!(out, "# TYPE wsgate_provider_up gauge");
    for p in providers {
        let up = u8::from(p.keys().status.usable);
        let _ = writeln!(
            out,
            "wsgate_provider_up{{issuer=\"{}\"}} {up}",
            label(&p.issuer)
        );
    }
    let _ = writeln!(
        out,
        "# HELP wsgate_provider_keys Usable keys in the provider's current set."
    );
    let _ = writeln!(out, "# TYPE wsgate_provider_keys gauge");
    for p in providers {
        let _ = writeln!(
            out,
            "wsgate_provider_keys{{issuer=\"{}\"}} {}",
            label(&p.issuer),
            p.keys().len()
        );
    }
    let _ = writeln!(out, "# HELP wsgate_provider_last_fetch_timestamp_seconds Unix time of the last successful fetch (0: never).");
    let _ = writeln!(
        out,
        "# TYPE wsgate_provider_last_fetch_timestamp_seconds gauge"
    );
    for p in providers {
        let _ = writeln!(
            out,
            "wsgate_provider_last_fetch_timestamp_seconds{{issuer=\"{}\"}} {}",
            label(&p.issuer),
            p.keys().status.last_fetch_unix
        );
    }
    let _ = writeln!(
        out,
        "# HELP wsgate_provider_fetch_failures_total Failed fetches by reason."
    );
    let _ = writeln!(out, "# TYPE wsgate_provider_fetch_failures_total counter");
    for p in providers {
        for (reason, n) in &p.keys().status.failures {
            let _ = writeln!(
                out,
                "wsgate_provider_fetch_failures_total{{issuer=\"{}\",reason=\"{reason}\"}} {n}",
                label(&p.issuer)
            );
        }
    }
}

/// `wsgate token inspect -c FILE` (SPEC §9: it fetches, and says what it fetched): every
/// provider's set fetched once, on a runtime of its own; returns the verifier with them and
/// one line per provider.
pub fn fetch_for_inspect(
    verifier: Verifier,
    settings: &[ProviderSettings],
) -> (Verifier, Vec<String>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return (verifier, vec![format!("cannot fetch provider keys: {e}")]),
    };
    let mut keys = verifier.keys;
    let mut lines = Vec::with_capacity(settings.len());
    for s in settings {
        let source = match &s.source {
            JwksSource::File(path) => format!("file {}", path.display()),
            JwksSource::Url(url) => url.clone(),
            JwksSource::Discovery(url) => format!("discovery at {url}"),
        };
        let tls = match &s.source {
            JwksSource::File(_) => None,
            _ => match fetch::client_config(s.ca_file.as_deref()) {
                Ok(tls) => Some(tls),
                Err(e) => {
                    lines.push(format!("provider {:?}: {e}", s.issuer));
                    continue;
                }
            },
        };
        match runtime.block_on(fetch_set(s, tls.as_ref())) {
            Ok((set, _)) => {
                let fresh = ProviderKeys::from_jwk_set(&s.issuer, &set);
                let kids: Vec<&str> = set.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
                lines.push(format!(
                    "fetched provider {:?} keys from {source}: {} usable (kids: {}), {} skipped",
                    s.issuer,
                    fresh.len(),
                    kids.join(", "),
                    set.skipped.len()
                ));
                if let Some(next) = keys.with_provider_keys(&s.issuer, Arc::new(fresh)) {
                    keys = next;
                }
            }
            Err(e) => lines.push(format!(
                "provider {:?}: fetching {source} failed: {e}",
                s.issuer
            )),
        }
    }
    (
        Verifier {
            keys,
            rules: verifier.rules,
        },
        lines,
    )
}
