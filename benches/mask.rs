//! RFC 6455 §5.3 masking throughput: `apply_mask` over 32 B, 1 KiB, 64 KiB and 1 MiB, each
//! next to a plain `copy_from_slice` of the same bytes (the memory-bandwidth baseline).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wsgate::proto::ws::mask::apply_mask;

/// The §5.7 example key.
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Payload sizes: a chat message, a typical frame, a large frame, a large message.
const SIZES: [(usize, &str); 4] = [
    (32, "32B"),
    (1024, "1KiB"),
    (64 * 1024, "64KiB"),
    (1024 * 1024, "1MiB"),
];

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for (size, label) in SIZES {
        let source: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut buf = source.clone();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("apply_mask", label), &size, |b, _| {
            // Masking in place twice is the identity, so the buffer never needs a reset;
            // offset 1 keeps the key rotation on the measured path.
            b.iter(|| apply_mask(black_box(&mut buf), black_box(KEY), black_box(1)));
        });
        let mut dest = vec![0u8; size];
        group.bench_with_input(BenchmarkId::new("copy_from_slice", label), &size, |b, _| {
            b.iter(|| black_box(&mut dest).copy_from_slice(black_box(&source)));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = mask
}
criterion_main!(benches);
