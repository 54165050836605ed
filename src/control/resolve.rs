//! Upstream host names (SPEC §5; issue #18): resolved on the control plane, never at
//! config build time and never on a worker, and followed as their records change, as
//! nginx's `resolver` and Envoy's strict DNS do.
//!
//! Every host name of every route's upstream URLs (IP literals need none) is looked up on
//! the control runtime's blocking pool (getaddrinfo, so `/etc/hosts` and the system's
//! resolver configuration apply), at most [`CONCURRENT_LOOKUPS`] at a time, each waited
//! for at most [`LOOKUP_TIMEOUT`]. The answers are published whole as a
//! [`ResolvedNames`] snapshot (`arc-swap`) that each worker reads at connect time.
//!
//! Schedule, per name:
//! - a good answer is looked up again after [`REFRESH`], so a changed record is followed;
//! - a failed lookup is retried after [`RETRY_MIN`], doubling on each further failure up
//!   to [`RETRY_MAX`];
//! - a name that resolved before and now fails keeps its last good addresses (as nginx
//!   does) and a warning is logged; a name that never resolved has no address, and its
//!   connects fail with reason "dns: ..." (the next upstream is tried; SPEC §5).
//!
//! `serve` looks every name up once before it listens, waiting at most
//! [`LOOKUP_TIMEOUT`]; a failure is logged and retried, never a refused start. A SIGHUP
//! reload looks up the new configuration's new names the same way before the workers get
//! it, and forgets the names no route uses any more. `wsgate check` resolves nothing.
//!
//! Each failed lookup counts in `wsgate_upstream_dns_failures_total` (SPEC §7).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{Notify, Semaphore};

use crate::backend::upstream::{NameAnswer, ResolvedNames};
use crate::config::Config;
use crate::net::server::{upstream_hosts, UpstreamNames};
use crate::{clock, info, warn};

/// How long a good answer is used before the name is looked up again.
pub const REFRESH: Duration = Duration::from_secs(30);

/// The first retry after a failed lookup; each further failure doubles it.
pub const RETRY_MIN: Duration = Duration::from_secs(1);

/// The longest wait between retries of a failing name.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// How long one lookup is waited for (a lookup that takes longer is a failure; its thread
/// finishes on its own).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Most lookups running at once: they hold blocking-pool threads (see
/// [`super::BLOCKING_THREADS`]), which revocations and reloads also need.
pub const CONCURRENT_LOOKUPS: usize = 2;

/// A lookup's outcome: the addresses, or why there are none.
pub type LookupFuture = Pin<Box<dyn Future<Output = Result<Vec<IpAddr>, String>> + Send>>;

/// How a host name becomes addresses: the system's resolver in `serve`, a fake in tests.
pub trait Lookup: Send + Sync + 'static {
    /// Looks `name` up. The resolver bounds how long it waits ([`LOOKUP_TIMEOUT`]).
    fn lookup(&self, name: &str) -> LookupFuture;
}

/// getaddrinfo (through `std`'s `ToSocketAddrs`) on the blocking pool.
pub struct SystemLookup {
    permits: Arc<Semaphore>,
}

impl SystemLookup {
    /// At most [`CONCURRENT_LOOKUPS`] lookups at a time.
    pub fn new() -> SystemLookup {
        SystemLookup {
            permits: Arc::new(Semaphore::new(CONCURRENT_LOOKUPS)),
        }
    }
}

impl Default for SystemLookup {
    fn default() -> SystemLookup {
        SystemLookup::new()
    }
}

impl Lookup for SystemLookup {
    fn lookup(&self, name: &str) -> LookupFuture {
        let permits = Arc::clone(&self.permits);
        let name = name.to_owned();
        Box::pin(async move {
            let permit = permits
                .acquire_owned()
                .await
                .map_err(|_| "resolver stopped".to_owned())?;
            let task = tokio::task::spawn_blocking(move || {
                // Held until getaddrinfo returns, even when the wait for it timed out.
                let _permit = permit;
                std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), 0))
                    .map(|addrs| addrs.map(|a| a.ip()).collect::<Vec<_>>())
            });
            match task.await {
                Ok(Ok(addrs)) => Ok(addrs),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("lookup failed: internal error".to_owned()),
            }
        })
    }
}

/// The host names to resolve for `config`: every upstream URL's host that is not an IP
/// literal, each once.
pub fn names_of(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (host, _) in upstream_hosts(config).iter().flatten() {
        if let Some(name) = host.name() {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
    }
    names
}

/// One name's place in the schedule.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When to look it up next.
    due: Instant,
    /// Failed lookups in a row.
    failures: u32,
    /// A lookup of it is running.
    in_flight: bool,
}

/// The resolver's state, without I/O: which names, when each is due, the answers.
#[derive(Debug, Default)]
pub struct Schedule {
    entries: HashMap<Box<str>, Entry>,
    answers: ResolvedNames,
}

impl Schedule {
    /// Follows `names`: a new one is due at `now`, one no longer listed is forgotten
    /// (answer included); the others keep their answers and schedule.
    pub fn follow(&mut self, names: &[String], now: Instant) {
        self.entries
            .retain(|name, _| names.iter().any(|n| **n == **name));
        self.answers
            .retain(|name| names.iter().any(|n| n.as_str() == name));
        for name in names {
            self.entries.entry(name.as_str().into()).or_insert(Entry {
                due: now,
                failures: 0,
                in_flight: false,
            });
        }
    }

    /// The names due at `now` and not being looked up, now marked as being looked up.
    pub fn take_due(&mut self, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        for (name, entry) in &mut self.entries {
            if !entry.in_flight && entry.due <= now {
                entry.in_flight = true;
                due.push(name.to_string());
            }
        }
        due.sort();
        due
    }

    /// The earliest instant a name not being looked up is due (None: no name).
    pub fn next_due(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| !e.in_flight)
            .map(|e| e.due)
            .min()
    }

    /// Records the outcome of `name`'s lookup, finished at `now`, and schedules the next.
    /// A name forgotten meanwhile is ignored. An empty answer is a failure. True when the
    /// lookup failed.
    pub fn record(
        &mut self,
        name: &str,
        result: Result<Vec<IpAddr>, String>,
        now: Instant,
    ) -> bool {
        let Some(entry) = self.entries.get_mut(name) else {
            return result.is_err();
        };
        entry.in_flight = false;
        let previous = self.answers.get(name).cloned().unwrap_or_default();
        match result.map(dedup) {
            Ok(addrs) if !addrs.is_empty() => {
                entry.failures = 0;
                entry.due = now + REFRESH;
                if *previous.addrs != *addrs || previous.error.is_some() {
                    info!("dns: {name} resolves to {}", list(&addrs));
                }
                let answer = NameAnswer {
                    addrs: addrs.into(),
                    error: None,
                };
                self.answers.insert(name, answer);
                false
            }
            outcome => {
                let error = match outcome {
                    Err(e) => e,
                    Ok(_) => "no address".to_owned(),
                };
                entry.failures = entry.failures.saturating_add(1);
                let retry = retry_after(entry.failures);
                entry.due = now + retry;
                // A warning when a streak of failures starts or its reason changes; the
                // repeats go to the info level (and to the metric).
                let news = entry.failures == 1 || previous.error.as_deref() != Some(&*error);
                let keeping = if previous.addrs.is_empty() {
                    "its upstreams fail until it resolves".to_owned()
                } else {
                    format!("keeping its last good addresses {}", list(&previous.addrs))
                };
                let secs = retry.as_secs();
                if news {
                    warn!("dns: {name}: {error}; {keeping} (retry in {secs}s)");
                } else {
                    info!("dns: {name}: {error}; {keeping} (retry in {secs}s)");
                }
                let answer = NameAnswer {
                    addrs: previous.addrs,
                    error: Some(error.into()),
                };
                self.answers.insert(name, answer);
                true
            }
        }
    }

    /// What is known of every name.
    pub fn answers(&self) -> &ResolvedNames {
        &self.answers
    }
}

/// The wait before the next lookup of a name after `failures` failed ones in a row.
fn retry_after(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    RETRY_MIN.saturating_mul(1 << doublings).min(RETRY_MAX)
}

/// `addrs` without repeats, in order (getaddrinfo answers once per socket type).
fn dedup(addrs: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::with_capacity(addrs.len());
    for a in addrs {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

fn list(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The resolver: a [`Schedule`] driven on the control runtime, publishing to the workers.
pub struct Resolver {
    schedule: Mutex<Schedule>,
    lookup: Arc<dyn Lookup>,
    /// How long one lookup is waited for ([`LOOKUP_TIMEOUT`]).
    timeout: Duration,
    snapshot: Arc<ArcSwap<ResolvedNames>>,
    failures: Arc<AtomicU64>,
    /// Wakes [`Resolver::run`] when the names change.
    changed: Notify,
}

fn lock(m: &Mutex<Schedule>) -> std::sync::MutexGuard<'_, Schedule> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Resolver {
    /// A resolver with no names yet, looking names up with `lookup`.
    pub fn new(lookup: Arc<dyn Lookup>) -> Arc<Resolver> {
        Resolver::with_timeout(lookup, LOOKUP_TIMEOUT)
    }

    /// A resolver that waits at most `timeout` for each lookup.
    pub fn with_timeout(lookup: Arc<dyn Lookup>, timeout: Duration) -> Arc<Resolver> {
        Arc::new(Resolver {
            schedule: Mutex::new(Schedule::default()),
            lookup,
            timeout,
            snapshot: Arc::new(ArcSwap::from_pointee(ResolvedNames::default())),
            failures: Arc::new(AtomicU64::new(0)),
            changed: Notify::new(),
        })
    }

    /// What the data plane reads: the snapshot and the failure counter.
    pub fn shared(&self) -> UpstreamNames {
        UpstreamNames {
            snapshot: Arc::clone(&self.snapshot),
            dns_failures: Arc::clone(&self.failures),
        }
    }

    /// The snapshot as published now.
    pub fn current(&self) -> Arc<ResolvedNames> {
        self.snapshot.load_full()
    }

    /// Follows `names` (start, SIGHUP): forgets the names gone and looks up the new ones
    /// at once, returning when their first answers are published (each waited for at
    /// most [`LOOKUP_TIMEOUT`]).
    pub async fn follow(&self, names: &[String]) {
        self.follow_at(names, &clock::now).await;
    }

    /// [`Resolver::follow`] with the clock given (tests drive a virtual one).
    pub async fn follow_at(&self, names: &[String], now: &(dyn Fn() -> Instant + Sync)) {
        lock(&self.schedule).follow(names, now());
        self.publish();
        self.round(now).await;
        self.changed.notify_one();
    }

    /// Looks up every name due now, then publishes the answers.
    pub async fn round(&self, now: &(dyn Fn() -> Instant + Sync)) {
        let due = lock(&self.schedule).take_due(now());
        if due.is_empty() {
            return;
        }
        let timeout = self.timeout;
        let lookups = due.iter().map(|name| {
            let lookup = self.lookup.lookup(name);
            async move {
                match tokio::time::timeout(timeout, lookup).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("lookup timed out after {timeout:?}")),
                }
            }
        });
        let results = futures_util::future::join_all(lookups).await;
        let at = now();
        {
            let mut schedule = lock(&self.schedule);
            for (name, result) in due.iter().zip(results) {
                if schedule.record(name, result, at) {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.publish();
    }

    /// Publishes the answers when they differ from the snapshot.
    fn publish(&self) {
        let answers = lock(&self.schedule).answers().clone();
        if **self.snapshot.load() != answers {
            self.snapshot.store(Arc::new(answers));
        }
    }

    /// Re-resolves each name when it is due, until the runtime stops.
    pub async fn run(self: Arc<Resolver>) {
        loop {
            self.round(&clock::now).await;
            let next = lock(&self.schedule).next_due();
            let changed = self.changed.notified();
            match next {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                        () = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake resolver: answers from a table the test changes, counting lookups.
    #[derive(Default)]
    struct Fake {
        table: Mutex<HashMap<String, Result<Vec<IpAddr>, String>>>,
        asked: Mutex<Vec<String>>,
    }

    impl Fake {
        fn set(&self, name: &str, answer: Result<&[&str], &str>) {
            let answer = answer
                .map(|addrs| addrs.iter().map(|a| a.parse().expect("ip")).collect())
                .map_err(str::to_owned);
            self.table
                .lock()
                .expect("lock")
                .insert(name.to_owned(), answer);
        }

        fn asked(&self) -> Vec<String> {
            std::mem::take(&mut *self.asked.lock().expect("lock"))
        }
    }

    impl Lookup for Arc<Fake> {
        fn lookup(&self, name: &str) -> LookupFuture {
            self.asked.lock().expect("lock").push(name.to_owned());
            let answer = self
                .table
                .lock()
                .expect("lock")
                .get(name)
                .cloned()
                .unwrap_or_else(|| Err("Name or service not known".to_owned()));
            Box::pin(async move { answer })
        }
    }

    /// A virtual clock: a fixed origin, moved only by the test.
    struct Clock {
        t0: Instant,
        offset: Mutex<Duration>,
    }

    impl Clock {
        fn new() -> Clock {
            Clock {
                t0: crate::fuzzing::virtual_epoch(),
                offset: Mutex::new(Duration::ZERO),
            }
        }
        fn now(&self) -> Instant {
            self.t0 + *self.offset.lock().expect("lock")
        }
        fn advance(&self, by: Duration) {
            *self.offset.lock().expect("lock") += by;
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    fn addrs(r: &Resolver, name: &str) -> Option<(Vec<String>, Option<String>)> {
        r.current().get(name).map(|a| {
            (
                a.addrs.iter().map(IpAddr::to_string).collect(),
                a.error.as_deref().map(str::to_owned),
            )
        })
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_changed_record_is_published_after_the_refresh_interval() {
        let fake = Arc::new(Fake::default());
        fake.set("api.test", Ok(&["10.0.0.1", "10.0.0.1", "10.0.0.2"]));
        let resolver = Resolver::new(Arc::new(Arc::clone(&fake)));
        let clock = Clock::new();
        let now = || clock.now();
        block_on(async {
            resolver.follow_at(&names(&["api.test"]), &now).await;
            // getaddrinfo's repeats (one per socket type) are dropped, order kept.
            assert_eq!(
                addrs(&resolver, "api.test"),
                Some((vec!["10.0.0.1".into(), "10.0.0.2".into()], None))
            );
            assert_eq!(fake.asked(), ["api.test"]);
            fake.set("api.test", Ok(&["10.0.0.3"]));
            // Not due before REFRESH: nothing looked up, the old answer stands.
            clock.advance(REFRESH - Duration::from_millis(1));
            resolver.round(&now).await;
            assert!(fake.asked().is_empty());
            assert_eq!(addrs(&resolver, "api.test").map(|a| a.0.len()), Some(2));
            clock.advance(Duration::from_millis(1));
            resolver.round(&now).await;
            assert_eq!(fake.asked(), ["api.test"]);
            assert_eq!(
                addrs(&resolver, "api.test"),
                Some((vec!["10.0.0.3".into()], None))
            );
        });
        assert_eq!(resolver.failures.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_failing_name_keeps_its_last_good_addresses_and_retries_with_backoff() {
        let fake = Arc::new(Fake::default());
        fake.set("api.test", Ok(&["10.0.0.1"]));
        let resolver = Resolver::new(Arc::new(Arc::clone(&fake)));
        let clock = Clock::new();
        let now = || clock.now();
        block_on(async {
            resolver.follow_at(&names(&["api.test"]), &now).await;
            fake.set("api.test", Err("Temporary failure in name resolution"));
            clock.advance(REFRESH);
            resolver.round(&now).await;
            assert_eq!(
                addrs(&resolver, "api.test"),
                Some((
                    vec!["10.0.0.1".into()],
                    Some("Temporary failure in name resolution".into())
                ))
            );
            // Retries: 1s, 2s, 4s, ... up to RETRY_MAX after each failure.
            let mut waits = Vec::new();
            for _ in 0..7 {
                fake.asked();
                let mut waited = Duration::ZERO;
                loop {
                    clock.advance(Duration::from_millis(500));
                    waited += Duration::from_millis(500);
                    resolver.round(&now).await;
                    if !fake.asked().is_empty() {
                        break;
                    }
                }
                waits.push(waited.as_secs());
            }
            assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
            assert_eq!(
                addrs(&resolver, "api.test").map(|a| a.0),
                Some(vec!["10.0.0.1".into()])
            );
            // Resolving again: the new answer, the error cleared, REFRESH again.
            fake.set("api.test", Ok(&["10.0.0.9"]));
            clock.advance(RETRY_MAX);
            resolver.round(&now).await;
            assert_eq!(
                addrs(&resolver, "api.test"),
                Some((vec!["10.0.0.9".into()], None))
            );
        });
        assert_eq!(resolver.failures.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn a_name_that_never_resolved_has_no_address_and_a_reason() {
        let fake = Arc::new(Fake::default());
        let resolver = Resolver::new(Arc::new(Arc::clone(&fake)));
        let clock = Clock::new();
        let now = || clock.now();
        block_on(resolver.follow_at(&names(&["gone.invalid"]), &now));
        assert_eq!(
            addrs(&resolver, "gone.invalid"),
            Some((vec![], Some("Name or service not known".into())))
        );
        // An empty answer is a failure too.
        fake.set("empty.test", Ok(&[]));
        block_on(resolver.follow_at(&names(&["gone.invalid", "empty.test"]), &now));
        assert_eq!(
            addrs(&resolver, "empty.test"),
            Some((vec![], Some("no address".into())))
        );
        assert_eq!(resolver.failures.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn following_new_names_looks_up_only_the_new_ones_and_forgets_the_old() {
        let fake = Arc::new(Fake::default());
        fake.set("a.test", Ok(&["10.0.0.1"]));
        fake.set("b.test", Ok(&["10.0.0.2"]));
        let resolver = Resolver::new(Arc::new(Arc::clone(&fake)));
        let clock = Clock::new();
        let now = || clock.now();
        block_on(async {
            resolver.follow_at(&names(&["a.test"]), &now).await;
            assert_eq!(fake.asked(), ["a.test"]);
            clock.advance(Duration::from_secs(1));
            resolver
                .follow_at(&names(&["a.test", "b.test"]), &now)
                .await;
            assert_eq!(fake.asked(), ["b.test"]);
            assert!(addrs(&resolver, "b.test").is_some());
            resolver.follow_at(&names(&["b.test"]), &now).await;
            assert!(fake.asked().is_empty());
            assert!(addrs(&resolver, "a.test").is_none());
            assert_eq!(resolver.current().len(), 1);
        });
    }

    #[test]
    fn a_lookup_that_never_answers_is_a_failure_after_the_timeout() {
        struct Never;
        impl Lookup for Never {
            fn lookup(&self, _: &str) -> LookupFuture {
                Box::pin(std::future::pending())
            }
        }
        let resolver = Resolver::with_timeout(Arc::new(Never), Duration::from_millis(20));
        let clock = Clock::new();
        let now = || clock.now();
        block_on(resolver.follow_at(&names(&["slow.test"]), &now));
        assert_eq!(
            addrs(&resolver, "slow.test"),
            Some((vec![], Some("lookup timed out after 20ms".into())))
        );
        assert_eq!(resolver.failures.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn names_of_lists_each_host_name_once_and_no_ip_literal() {
        let config = crate::config::parse_str(
            "[server]\nlisten = [\"127.0.0.1:1\"]\n\
             [[route]]\npath = \"/a\"\nupstream = [\"ws://a.test:1/x\", \"ws://10.0.0.1/x\", \"ws://[::1]:2/\"]\npublic = true\n\
             [[route]]\npath = \"/b\"\nupstream = [\"wss://a.test/y\", \"ws://b.test/\"]\npublic = true\n\
             [[route]]\npath = \"/e\"\nbackend = \"echo\"\npublic = true\n",
            std::path::Path::new("."),
            "wsgate.toml",
        )
        .expect("config");
        assert_eq!(names_of(&config), ["a.test", "b.test"]);
    }

    #[test]
    fn the_system_lookup_reads_etc_hosts() {
        let answer = block_on(SystemLookup::new().lookup("localhost"));
        let addrs = answer.expect("localhost resolves");
        assert!(addrs.iter().all(IpAddr::is_loopback), "{addrs:?}");
        let failed = block_on(SystemLookup::new().lookup("no-such-host.invalid"));
        assert!(failed.is_err());
    }
}
