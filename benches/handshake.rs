//! The opening handshake (RFC 6455 §4.2): parsing and validating a typical browser upgrade
//! request, and writing the 101 answer, in ns per request.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use wsgate::proto::http::request::{
    parse_head, validate_upgrade, HeadReader, Upgrade, MAX_HEADERS,
};
use wsgate::proto::http::response::write_switching_protocols;
use wsgate::proto::ws::accept::accept_key;

/// SPEC §3 default `max_request_bytes`.
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// What a current Chromium sends to open a WebSocket (13 header fields, cookie included).
const BROWSER_REQUEST: &[u8] = b"GET /chat?room=lobby HTTP/1.1\r\n\
Host: gateway.example.com\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: https://app.example.com\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9,fr;q=0.8\r\n\
Cookie: session=5f2c1e9a7b3d4c8e; theme=dark; _ga=GA1.2.1234567890.1700000000\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
\r\n";

/// The whole parse path of one request: find the head, parse it, check the upgrade rules.
fn parse_request(request: &[u8]) -> Option<Upgrade<'_>> {
    let head_len = HeadReader::new().poll(request, MAX_REQUEST_BYTES).ok()??;
    let head = request.get(..head_len)?;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let parsed = parse_head(head, &mut headers).ok()?;
    validate_upgrade(&parsed).ok()
}

fn handshake(c: &mut Criterion) {
    assert!(
        parse_request(BROWSER_REQUEST).is_some(),
        "the bench request must be a valid upgrade"
    );
    let mut group = c.benchmark_group("handshake");
    group.bench_function("head_reader_poll", |b| {
        b.iter(|| HeadReader::new().poll(black_box(BROWSER_REQUEST), MAX_REQUEST_BYTES));
    });
    group.bench_function("parse_and_validate", |b| {
        b.iter(|| parse_request(black_box(BROWSER_REQUEST)));
    });
    let key = b"dGhlIHNhbXBsZSBub25jZQ==";
    let mut out = Vec::with_capacity(256);
    group.bench_function("accept_key_and_101", |b| {
        b.iter(|| {
            out.clear();
            let accept = accept_key(black_box(key));
            write_switching_protocols(&mut out, &accept, None);
            black_box(&out);
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = handshake
}
criterion_main!(benches);
