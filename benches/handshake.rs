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

/// The whole sans-IO handshake as the worker runs it: find the head, parse, validate,
/// decide (route, capacity, per-IP budget, Origin, token, scope, per-subject), then the
/// accept key and the 101. Public route vs HS256, EdDSA, RS256 (2048-bit) and ES256
/// tokens in the query.
fn whole_handshake(c: &mut Criterion) {
    use base64::Engine as _;
    use std::sync::atomic::AtomicU64;
    use std::sync::RwLock;
    use wsgate::auth::keys::Alg;
    use wsgate::auth::revocation::{RetentionPolicy, RevocationSet};
    use wsgate::auth::verify::Scratch;
    use wsgate::cli::token::{sign, SigningKey};
    use wsgate::gate::decide::Ctx;
    use wsgate::gate::limits::{IpBudget, IpTable, SubjectTable};

    let dir = std::env::temp_dir().join(format!("wsgate-bench-hs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let secret = [7u8; 32];
    std::fs::write(
        dir.join("hs.secret"),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
    )
    .expect("secret");
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("ed25519");
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("pair");
    let mut spki = wsgate::auth::keys::ED25519_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(ring::signature::KeyPair::public_key(&pair).as_ref());
    std::fs::write(
        dir.join("ed.pub.pem"),
        wsgate::auth::keys::pem_encode(&spki, "PUBLIC KEY"),
    )
    .expect("pub");
    let data_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    for (from, to) in [
        ("wsgate-test-rsa2048.pub.pem", "rs.pub.pem"),
        ("rfc7515-a3-es256.pub.pem", "es.pub.pem"),
    ] {
        std::fs::copy(data_dir.join(from), dir.join(to)).expect("public key");
    }
    let text = r#"
[server]
listen = ["127.0.0.1:0"]
[origin]
allow = ["https://app.example.com"]
[[auth.key]]
kid = "hs"
alg = "HS256"
secret_file = "hs.secret"
[[auth.key]]
kid = "ed"
alg = "EdDSA"
public_key = "ed.pub.pem"
[[auth.key]]
kid = "rs"
alg = "RS256"
public_key = "rs.pub.pem"
[[auth.key]]
kid = "es"
alg = "ES256"
public_key = "es.pub.pem"
[[route]]
path = "/chat"
backend = "echo"
scope = ["chat"]
[[route]]
path = "/public"
backend = "echo"
public = true
"#;
    let config = wsgate::config::parse_str(text, &dir, "bench.toml").expect("bench config");
    let rt = wsgate::net::server::build_runtime(&config).expect("runtime");
    let _ = std::fs::remove_dir_all(&dir);

    let now_unix = 1_900_000_000u64;
    let payload = format!(
        r#"{{"sub":"bench","iat":{now_unix},"exp":{},"scope":"chat"}}"#,
        now_unix + 3600
    );
    let hs = sign(
        Alg::HS256,
        &SigningKey::Hmac(secret.to_vec()),
        r#"{"alg":"HS256","typ":"JWT","kid":"hs"}"#,
        &payload,
    )
    .expect("hs token");
    let ed_key = SigningKey::Ed25519(pair);
    let ed = sign(
        Alg::EdDSA,
        &ed_key,
        r#"{"alg":"EdDSA","typ":"JWT","kid":"ed"}"#,
        &payload,
    )
    .expect("ed token");
    // Distinct EdDSA tokens (their `jti` differs), twice as many as a worker's cache of
    // verified tokens holds: cycling through them, every verification is a miss.
    let distinct_ed: Vec<String> = (0..2 * wsgate::auth::cache::MAX_ENTRIES)
        .map(|i| {
            let payload = format!(
                r#"{{"sub":"bench","iat":{now_unix},"exp":{},"scope":"chat","jti":"j{i}"}}"#,
                now_unix + 3600
            );
            sign(
                Alg::EdDSA,
                &ed_key,
                r#"{"alg":"EdDSA","typ":"JWT","kid":"ed"}"#,
                &payload,
            )
            .expect("ed token")
        })
        .collect();
    let (_, rs_key) = SigningKey::load(
        &data_dir.join("wsgate-test-rsa2048.key.pem"),
        Some(Alg::RS256),
    )
    .expect("rsa key");
    let rs = sign(
        Alg::RS256,
        &rs_key,
        r#"{"alg":"RS256","typ":"JWT","kid":"rs"}"#,
        &payload,
    )
    .expect("rs token");
    let (_, es_key) =
        SigningKey::load(&data_dir.join("rfc7515-a3-es256.key.pem"), Some(Alg::ES256))
            .expect("ec key");
    let es = sign(
        Alg::ES256,
        &es_key,
        r#"{"alg":"ES256","typ":"JWT","kid":"es"}"#,
        &payload,
    )
    .expect("es token");
    let request = |target: &str| {
        String::from_utf8_lossy(BROWSER_REQUEST)
            .replacen("/chat?room=lobby", target, 1)
            .into_bytes()
    };
    let public = request("/public?room=lobby");
    let with_hs = request(&format!("/chat?room=lobby&access_token={hs}"));
    let with_ed = request(&format!("/chat?room=lobby&access_token={ed}"));
    let with_rs = request(&format!("/chat?room=lobby&access_token={rs}"));
    let with_es = request(&format!("/chat?room=lobby&access_token={es}"));
    let with_distinct_ed: Vec<Vec<u8>> = distinct_ed
        .iter()
        .map(|t| request(&format!("/chat?room=lobby&access_token={t}")))
        .collect();

    let ips = IpTable::new(IpBudget {
        connections: u32::MAX,
        handshakes_per_sec: 0,
        auth_failures_per_sec: 0,
        ipv6_prefix: 64,
    });
    let subjects = SubjectTable::new(0);
    let set = RevocationSet::new(RetentionPolicy {
        leeway_secs: 30,
        retention_secs: 3600,
    });
    // Today's path: the snapshot the control plane publishes, read once per handshake
    // through the worker's cache; and the lock the workers read before, for comparison.
    let snapshot = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(set.clone()));
    let mut cache = arc_swap::Cache::new(std::sync::Arc::clone(&snapshot));
    let locked = RwLock::new(set);
    let longest = AtomicU64::new(0);
    let mut scratch = Scratch::new(4096);
    let mut token_buf = Vec::new();
    let now = wsgate::fuzzing::virtual_epoch();
    let mut out = Vec::with_capacity(256);
    let mut one = |req: &[u8], revocations: &RevocationSet| -> bool {
        let Some(head_len) = HeadReader::new()
            .poll(req, MAX_REQUEST_BYTES)
            .ok()
            .flatten()
        else {
            return false;
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let Ok(head) = parse_head(&req[..head_len], &mut headers) else {
            return false;
        };
        let Ok(upgrade) = validate_upgrade(&head) else {
            return false;
        };
        let mut ctx = Ctx {
            peer: [127, 0, 0, 1].into(),
            now,
            now_unix,
            open_connections: 1,
            draining: false,
            ips: &ips,
            subjects: &subjects,
            revocations,
            longest_lifetime: &longest,
            auth_failure: None,
            scratch: &mut scratch,
            token_buf: &mut token_buf,
        };
        let Ok(accept) = rt.gate.decide(&head, &upgrade, &mut ctx) else {
            return false;
        };
        if let Some(id) = &accept.identity {
            subjects.release(&id.sub);
        }
        out.clear();
        write_switching_protocols(&mut out, &accept_key(upgrade.key), accept.protocol);
        true
    };
    let none = RevocationSet::new(RetentionPolicy {
        leeway_secs: 30,
        retention_secs: 3600,
    });
    assert!(
        one(&public, &none)
            && one(&with_hs, &none)
            && one(&with_ed, &none)
            && one(&with_rs, &none)
            && one(&with_es, &none),
        "bench requests must pass"
    );
    let mut group = c.benchmark_group("whole_handshake");
    group.bench_function("public_route", |b| {
        b.iter(|| one(black_box(&public), cache.load()))
    });
    group.bench_function("hs256_query_token", |b| {
        b.iter(|| one(black_box(&with_hs), cache.load()))
    });
    group.bench_function("hs256_query_token_rwlock", |b| {
        b.iter(|| {
            let set = locked
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            one(black_box(&with_hs), &set)
        })
    });
    // The same token every time: answered by the worker's cache of verified tokens after
    // the first (time, scope and revocation still checked).
    group.bench_function("eddsa_query_token_repeated_cache_hit", |b| {
        b.iter(|| one(black_box(&with_ed), cache.load()))
    });
    // A distinct token every time: the real verification cost.
    let mut turn = 0usize;
    group.bench_function("eddsa_query_token_distinct_cache_miss", |b| {
        b.iter(|| {
            turn = (turn + 1) % with_distinct_ed.len();
            one(black_box(&with_distinct_ed[turn]), cache.load())
        })
    });
    group.bench_function("rs256_query_token", |b| {
        b.iter(|| one(black_box(&with_rs), cache.load()))
    });
    group.bench_function("es256_query_token", |b| {
        b.iter(|| one(black_box(&with_es), cache.load()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = handshake, whole_handshake
}
criterion_main!(benches);
