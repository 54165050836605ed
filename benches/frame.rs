//! RFC 6455 §5.2 framing: header decode (and encode) in each length form, ns per header;
//! and a whole `Session::handle_input` over 16 pipelined masked 1 KiB text frames echoed
//! back, in bytes per second.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use wsgate::backend::echo;
use wsgate::fuzzing::virtual_epoch;
use wsgate::proto::ws::frame::{parse_header, write_header, write_masked_frame, OpCode};
use wsgate::proto::ws::session::{Session, SessionLimits, SessionState};

/// The §5.7 example key.
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Frames per `handle_input` call in the session bench.
const PIPELINED: usize = 16;

/// Payload bytes per frame in the session bench.
const PAYLOAD: usize = 1024;

/// A masked client header (what the server decodes) for a payload of `len` bytes.
fn client_header(len: usize) -> Vec<u8> {
    let mut frame = Vec::new();
    write_masked_frame(&mut frame, true, OpCode::Binary, &vec![0; len], KEY);
    frame.truncate(frame.len() - len);
    frame
}

fn header(c: &mut Criterion) {
    // One payload length per encoding of RFC 6455 §5.2: 7-bit, 16-bit and 64-bit.
    let forms = [(5usize, "7bit"), (1024, "16bit"), (100_000, "64bit")];
    let mut group = c.benchmark_group("frame_header");
    for (len, label) in forms {
        let bytes = client_header(len);
        let parsed = parse_header(&bytes).expect("valid header");
        assert_eq!(
            parsed.map(|(h, n)| (h.payload_len, n)),
            Some((len as u64, bytes.len()))
        );
        group.bench_with_input(
            BenchmarkId::new("parse_header", label),
            &bytes,
            |b, bytes| {
                b.iter(|| parse_header(black_box(bytes)));
            },
        );
        let mut out = Vec::with_capacity(16);
        group.bench_with_input(BenchmarkId::new("write_header", label), &len, |b, &len| {
            b.iter(|| {
                out.clear();
                write_header(&mut out, true, OpCode::Binary, black_box(len));
                black_box(&out);
            });
        });
    }
    group.finish();
}

/// A 1 KiB text payload, mostly ASCII with some two-byte characters so that UTF-8
/// validation sees both.
fn text_payload() -> Vec<u8> {
    let mut text = String::new();
    while text.len() + "κόσμε hello ".len() <= PAYLOAD {
        text.push_str("κόσμε hello ");
    }
    while text.len() < PAYLOAD {
        text.push('.');
    }
    text.into_bytes()
}

fn limits() -> SessionLimits {
    SessionLimits {
        max_frame: 64 * 1024,
        max_message: 64 * 1024,
        idle_timeout: Duration::from_secs(60),
        messages_per_sec: 0,
        bytes_per_sec: 0,
        write_buffer: 0,
        close_linger: Duration::from_secs(1),
    }
}

fn session(c: &mut Criterion) {
    let payload = text_payload();
    let mut input = Vec::new();
    for i in 0..PIPELINED {
        let key = (i as u32).wrapping_mul(0x9e37_79b9).to_be_bytes();
        write_masked_frame(&mut input, true, OpCode::Text, &payload, key);
    }

    let now = virtual_epoch();
    let mut session = Session::new(limits(), now);
    let mut out = Vec::with_capacity(PIPELINED * (PAYLOAD + 4));

    // Sanity check: every frame is consumed and echoed, and the session stays open.
    let mut check = input.clone();
    assert_eq!(
        session.handle_input(&mut check, now, &mut out, echo::on_message),
        input.len()
    );
    assert_eq!(out.len(), PIPELINED * (PAYLOAD + 4));
    assert_eq!(session.state(), SessionState::Open);

    let mut group = c.benchmark_group("session");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("echo_16x1KiB_text", |b| {
        // The session unmasks in place, so each call gets a fresh masked copy (not timed).
        b.iter_batched_ref(
            || input.clone(),
            |buf| {
                out.clear();
                let consumed = session.handle_input(buf, now, &mut out, echo::on_message);
                black_box((consumed, out.len()))
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
    assert_eq!(session.state(), SessionState::Open);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = header, session
}
criterion_main!(benches);
