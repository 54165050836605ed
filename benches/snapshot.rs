//! The revocation check of a handshake (SPEC §6): how a worker reaches the revocation set,
//! before (`RwLock::read`, a lock shared by every worker) and after (the control plane's
//! `ArcSwap` snapshot, through each worker's `arc_swap::Cache`, as `net::worker` does; and
//! a plain `ArcSwap::load`, as a refresh does), in ns per check.
//!
//! `access_*` rows take the read access alone; `check_*` rows add the lookup itself (two
//! hash probes over a set of 1000 `jti`s and 100 subjects). `*_contended` rows run while
//! another thread reads the same set in a loop, as every worker of a busy gateway does: on
//! the RwLock each read writes the lock's shared reader count; a cached snapshot is only
//! read, and an `ArcSwap::load` writes only this thread's own slot.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::{ArcSwap, Cache};
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
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

type Snapshot = Arc<ArcSwap<RevocationSet>>;

fn rows(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    suffix: &str,
    locked: &RwLock<RevocationSet>,
    snapshot: &Snapshot,
) {
    group.bench_function(format!("access_rwlock_read_{suffix}"), |b| {
        b.iter(|| drop(black_box(locked.read())))
    });
    group.bench_function(format!("access_arcswap_load_{suffix}"), |b| {
        b.iter(|| drop(black_box(snapshot.load())))
    });
    let mut cache = Cache::new(Arc::clone(snapshot));
    group.bench_function(format!("access_cache_load_{suffix}"), |b| {
        b.iter(|| {
            black_box(cache.load());
        })
    });
    group.bench_function(format!("check_rwlock_read_{suffix}"), |b| {
        b.iter(|| {
            let set = locked
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            check(&set)
        })
    });
    group.bench_function(format!("check_arcswap_load_{suffix}"), |b| {
        b.iter(|| check(&snapshot.load()))
    });
    group.bench_function(format!("check_cache_load_{suffix}"), |b| {
        b.iter(|| check(cache.load()))
    });
}

fn revocation_check(c: &mut Criterion) {
    let locked = Arc::new(RwLock::new(populated()));
    let snapshot: Snapshot = Arc::new(ArcSwap::from_pointee(populated()));
    let mut group = c.benchmark_group("revocation_check");
    let set = populated();
    group.bench_function("lookup_only", |b| b.iter(|| check(&set)));
    rows(&mut group, "idle", &locked, &snapshot);

    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (stop, locked, snapshot) = (stop.clone(), locked.clone(), snapshot.clone());
        std::thread::spawn(move || {
            let mut cache = Cache::new(Arc::clone(&snapshot));
            while !stop.load(Ordering::Relaxed) {
                drop(black_box(locked.read()));
                drop(black_box(snapshot.load()));
                black_box(cache.load());
            }
        })
    };
    rows(&mut group, "contended", &locked, &snapshot);
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
