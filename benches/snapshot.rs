//! The revocation check of a handshake and a refresh (SPEC §6): the worker's read of the
//! revocation set, before (`RwLock::read`) and after (`ArcSwap::load`, the control plane's
//! snapshot), each followed by the lookup itself, in ns per check.
//!
//! `*_idle` rows read alone; `*_contended` rows read while another thread reads the same
//! set in a loop, as every worker of a busy gateway does (on the RwLock that is a shared
//! counter written by every reader; an ArcSwap load writes only this thread's own slot).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, Criterion};
use wsgate::auth::revocation::{RetentionPolicy, Revocation, RevocationSet};

/// A set as a gateway might hold after an incident: 1000 revoked `jti`s, 100 subjects.
fn populated() -> RevocationSet {
    let mut set = RevocationSet::new(RetentionPolicy {
        leeway_secs: 30,
        retention_secs: 7 * 24 * 3600,
    });
    for i in 0..1000 {
        let r = Revocation::Jti {
            jti: format!("jti-{i}"),
            exp: Some(2_000_000_000),
        };
        set.insert(r, 2_000_000_000);
    }
    for i in 0..100 {
        let r = Revocation::Sub {
            sub: format!("user-{i}"),
            before: 1_900_000_000,
        };
        set.insert(r, 2_000_000_000);
    }
    set
}

/// The lookup a handshake makes for a token that is not revoked (the common case: both
/// maps probed).
fn check(set: &RevocationSet) -> bool {
    set.is_revoked(
        Some(black_box("jti-not-revoked")),
        black_box("user-ok"),
        Some(1_950_000_000),
    )
}

fn read_lock(lock: &RwLock<RevocationSet>) -> bool {
    let set = lock.read().unwrap_or_else(|poisoned| poisoned.into_inner());
    check(&set)
}

fn load(snapshot: &ArcSwap<RevocationSet>) -> bool {
    check(&snapshot.load())
}

fn revocation_check(c: &mut Criterion) {
    let locked = Arc::new(RwLock::new(populated()));
    let snapshot = Arc::new(ArcSwap::from_pointee(populated()));
    let mut group = c.benchmark_group("revocation_check");
    group.bench_function("lookup_only", |b| {
        let set = populated();
        b.iter(|| check(&set))
    });
    group.bench_function("rwlock_read_idle", |b| b.iter(|| read_lock(&locked)));
    group.bench_function("arcswap_load_idle", |b| b.iter(|| load(&snapshot)));

    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (stop, locked, snapshot) = (stop.clone(), locked.clone(), snapshot.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                black_box(read_lock(&locked));
                black_box(load(&snapshot));
            }
        })
    };
    group.bench_function("rwlock_read_contended", |b| b.iter(|| read_lock(&locked)));
    group.bench_function("arcswap_load_contended", |b| b.iter(|| load(&snapshot)));
    stop.store(true, Ordering::Relaxed);
    let _ = other.join();
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = revocation_check
}
criterion_main!(benches);
