//! Steady-state token verification allocates nothing (ARCHITECTURE "Hot path budget").
//! A separate test binary: a `#[global_allocator]` applies to the whole binary.
#![allow(unsafe_code)] // GlobalAlloc is an unsafe trait; this wrapper only counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use wsgate::auth::keys::{Alg, Key, KeySet};
use wsgate::auth::verify::{Rules, Scratch, Verifier};

struct Counting;

thread_local! {
    /// Counting is per thread: allocations of the test harness's other threads (reporting
    /// another test's result meanwhile) are not the verifier's.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

/// True while the current thread counts (false during thread teardown).
fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
/// The counter is global: tests that count run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

// SAFETY: every call is forwarded unchanged to `System`; the wrapper only bumps a counter.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn steady_state_verification_allocates_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let secret = [0x5a; 32];
    let pair = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).expect("keypair");
    let public: [u8; 32] = pair.public_key().as_ref().try_into().expect("32 bytes");
    let verifier = Verifier {
        keys: KeySet::new(vec![
            Key::hmac(Some("hs".into()), Alg::HS256, &secret).expect("hmac"),
            Key::ed25519_raw(Some("ed".into()), public),
        ])
        .expect("keyset"),
        rules: Rules {
            issuer: Some("https://id.example.com".into()),
            audience: Some("wsgate".into()),
            leeway_secs: 30,
            max_token_bytes: 4096,
            // The test tokens' lifetimes are not what is measured here.
            max_lifetime_secs: u64::MAX,
        },
    };
    let payload = r#"{"sub":"alice","exp":2000000000,"iat":1700000000,"nbf":1700000000,"iss":"https://id.example.com","aud":["x","wsgate"],"jti":"j-1","scope":"echo chat","scp":["admin"],"extra":{"a":[1,2,3]}}"#;
    let now = 1_800_000_000;

    let hs_input = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT","kid":"hs"}"#),
        b64(payload.as_bytes())
    );
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, &secret),
        hs_input.as_bytes(),
    );
    let hs_token = format!("{hs_input}.{}", b64(tag.as_ref()));

    let ed_input = format!(
        "{}.{}",
        b64(br#"{"alg":"EdDSA","kid":"ed"}"#),
        b64(payload.as_bytes())
    );
    let ed_token = format!(
        "{ed_input}.{}",
        b64(pair.sign(ed_input.as_bytes()).as_ref())
    );

    let mut scratch = Scratch::new(4096);
    // Warm up (lazy statics inside ring, CPU feature detection, ...).
    for token in [&hs_token, &ed_token] {
        for _ in 0..10 {
            let c = verifier
                .verify(token.as_bytes(), now, &mut scratch)
                .expect("valid");
            assert!(c.has_scope("admin"));
        }
    }

    let mut counts = Vec::new();
    for (name, token) in [("HS256", &hs_token), ("EdDSA", &ed_token)] {
        ALLOCATIONS.store(0, Ordering::SeqCst);
        COUNTING.with(|c| c.set(true));
        let mut ok = 0usize;
        for _ in 0..1000 {
            if let Ok(c) = verifier.verify(token.as_bytes(), now, &mut scratch) {
                if c.sub == "alice" && c.has_scope("echo") && c.exp == 2_000_000_000 {
                    ok += 1;
                }
            }
        }
        COUNTING.with(|c| c.set(false));
        let n = ALLOCATIONS.load(Ordering::SeqCst);
        println!("{name}: {n} allocations for 1000 verifications");
        assert_eq!(ok, 1000);
        counts.push((name, n));
    }
    for (name, n) in counts {
        assert_eq!(n, 0, "{name} verification allocated");
    }
}

/// RS256 and ES256 (SPEC §9): our verification path allocates nothing of its own. ring's
/// ECDSA verification allocates nothing at all; ring 0.17's RSA verification allocates its
/// big-number storage on every call (the modulus is re-parsed per signature), so for RS256
/// the count must equal what ring's own raw verify costs, measured here the same way.
#[test]
fn asymmetric_verification_adds_no_allocation_over_ring() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    use ring::rand::SystemRandom;
    use ring::signature::{
        EcdsaKeyPair, RsaKeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
        ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
    };
    use wsgate::auth::keys::pem_decode;

    let data = |name: &str| {
        std::fs::read_to_string(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR")))
            .expect("test data")
    };
    let rng = SystemRandom::new();
    let rsa_pkcs8 = pem_decode(&data("wsgate-test-rsa2048.key.pem"), "PRIVATE KEY").expect("pem");
    let rsa = RsaKeyPair::from_pkcs8(&rsa_pkcs8).expect("rsa");
    let rsa_spki = pem_decode(&data("wsgate-test-rsa2048.pub.pem"), "PUBLIC KEY").expect("pem");
    let ec_pkcs8 = pem_decode(&data("rfc7515-a3-es256.key.pem"), "PRIVATE KEY").expect("pem");
    let ec =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &ec_pkcs8, &rng).expect("ec");
    let ec_spki = pem_decode(&data("rfc7515-a3-es256.pub.pem"), "PUBLIC KEY").expect("pem");

    let verifier = Verifier {
        keys: KeySet::new(vec![
            Key::from_spki_der(Some("rs".into()), Alg::RS256, &rsa_spki).expect("rs key"),
            Key::from_spki_der(Some("es".into()), Alg::ES256, &ec_spki).expect("es key"),
        ])
        .expect("keyset"),
        rules: Rules {
            issuer: None,
            audience: Some("wsgate".into()),
            leeway_secs: 30,
            max_token_bytes: 4096,
            max_lifetime_secs: u64::MAX,
        },
    };
    let payload =
        r#"{"sub":"alice","exp":2000000000,"iat":1700000000,"aud":"wsgate","scope":"echo"}"#;
    let now = 1_800_000_000;
    let rs_input = format!(
        "{}.{}",
        b64(br#"{"alg":"RS256","kid":"rs"}"#),
        b64(payload.as_bytes())
    );
    let mut rs_sig = vec![0; rsa.public().modulus_len()];
    rsa.sign(&RSA_PKCS1_SHA256, &rng, rs_input.as_bytes(), &mut rs_sig)
        .expect("sign");
    let rs_token = format!("{rs_input}.{}", b64(&rs_sig));
    let es_input = format!(
        "{}.{}",
        b64(br#"{"alg":"ES256","kid":"es"}"#),
        b64(payload.as_bytes())
    );
    let es_sig = ec.sign(&rng, es_input.as_bytes()).expect("sign");
    let es_token = format!("{es_input}.{}", b64(es_sig.as_ref()));

    // The raw ring verifications, over the same bytes.
    let rsa_public = rsa.public().as_ref().to_vec();
    let ring_rs = || {
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &rsa_public)
            .verify(rs_input.as_bytes(), &rs_sig)
            .is_ok()
    };
    let ec_point = ec_spki.get(ec_spki.len() - 65..).expect("point").to_vec();
    let ring_es = || {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &ec_point)
            .verify(es_input.as_bytes(), es_sig.as_ref())
            .is_ok()
    };

    let mut scratch = Scratch::new(4096);
    for _ in 0..10 {
        for token in [&rs_token, &es_token] {
            assert!(verifier.verify(token.as_bytes(), now, &mut scratch).is_ok());
        }
        assert!(ring_rs() && ring_es());
    }
    let count = |f: &mut dyn FnMut() -> bool| {
        ALLOCATIONS.store(0, Ordering::SeqCst);
        COUNTING.with(|c| c.set(true));
        let mut ok = 0usize;
        for _ in 0..100 {
            if f() {
                ok += 1;
            }
        }
        COUNTING.with(|c| c.set(false));
        assert_eq!(ok, 100);
        ALLOCATIONS.load(Ordering::SeqCst)
    };
    let ours_rs = count(&mut || {
        verifier
            .verify(rs_token.as_bytes(), now, &mut scratch)
            .is_ok_and(|c| c.sub == "alice" && c.has_scope("echo"))
    });
    let raw_rs = count(&mut || ring_rs());
    let ours_es = count(&mut || {
        verifier
            .verify(es_token.as_bytes(), now, &mut scratch)
            .is_ok_and(|c| c.sub == "alice" && c.has_scope("echo"))
    });
    let raw_es = count(&mut || ring_es());
    println!("RS256: {ours_rs} allocations per 100 verifications (ring alone: {raw_rs})");
    println!("ES256: {ours_es} allocations per 100 verifications (ring alone: {raw_es})");
    assert_eq!(raw_es, 0, "ring's ECDSA verify allocated");
    assert_eq!(ours_es, 0, "ES256 verification allocated");
    assert_eq!(
        ours_rs, raw_rs,
        "RS256 verification allocated beyond ring's own"
    );
}

/// A whole public handshake through the sans-IO path, as the worker runs it (head reader,
/// parse, validate, decide, accept key, the 101 into a reused buffer): allocations per
/// handshake, and the same for a token handshake answered from the worker's cache of
/// verified tokens (whose `Identity` is the connection's own, owned, so it allocates).
#[test]
fn a_whole_public_handshake_allocates_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    use std::sync::atomic::AtomicU64;
    use wsgate::auth::revocation::{RetentionPolicy, RevocationSet};
    use wsgate::gate::decide::Ctx;
    use wsgate::gate::limits::{IpBudget, IpTable, SubjectTable};
    use wsgate::proto::http::request::{parse_head, validate_upgrade, HeadReader, MAX_HEADERS};
    use wsgate::proto::http::response::write_switching_protocols;
    use wsgate::proto::ws::accept::accept_key;

    let dir = std::env::temp_dir().join(format!("wsgate-alloc-hs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let text = r#"
[server]
listen = ["127.0.0.1:0"]
[origin]
allow = ["https://app.example.com"]
[[route]]
path = "/echo"
backend = "echo"
public = true
"#;
    let config = wsgate::config::parse_str(text, &dir, "alloc.toml").expect("config");
    let rt = wsgate::net::server::build_runtime(&config).expect("runtime");
    let _ = std::fs::remove_dir_all(&dir);
    let request = b"GET /echo HTTP/1.1\r\nHost: gateway.example.com\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\nOrigin: https://app.example.com\r\n\r\n";
    let ips = IpTable::new(IpBudget {
        connections: 0,
        handshakes_per_sec: 0,
        auth_failures_per_sec: 0,
        ipv6_prefix: 64,
    });
    let subjects = SubjectTable::new(0);
    let revocations = RevocationSet::new(RetentionPolicy {
        leeway_secs: 30,
        retention_secs: 3600,
    });
    let longest = AtomicU64::new(0);
    let mut scratch = Scratch::new(4096);
    let mut token_buf = Vec::new();
    let mut out = Vec::with_capacity(256);
    let now = wsgate::fuzzing::virtual_epoch();
    let mut one = || -> bool {
        let Some(head_len) = HeadReader::new().poll(request, 8192).ok().flatten() else {
            return false;
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let Ok(head) = parse_head(&request[..head_len], &mut headers) else {
            return false;
        };
        let Ok(upgrade) = validate_upgrade(&head) else {
            return false;
        };
        let mut ctx = Ctx {
            peer: [127, 0, 0, 1].into(),
            now,
            now_unix: 1_800_000_000,
            open_connections: 1,
            draining: false,
            ips: &ips,
            subjects: &subjects,
            revocations: &revocations,
            longest_lifetime: &longest,
            auth_failure: None,
            scratch: &mut scratch,
            token_buf: &mut token_buf,
        };
        let accept = match rt.gate.decide(&head, &upgrade, &mut ctx) {
            Ok(a) => a,
            Err(r) => panic!("refused: {}", r.reason_label()),
        };
        out.clear();
        write_switching_protocols(&mut out, &accept_key(upgrade.key), accept.protocol);
        out.starts_with(b"HTTP/1.1 101 ")
    };
    for _ in 0..10 {
        assert!(one(), "the request must upgrade");
    }
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.with(|c| c.set(true));
    let mut ok = 0;
    for _ in 0..100 {
        if one() {
            ok += 1;
        }
    }
    COUNTING.with(|c| c.set(false));
    assert_eq!(ok, 100);
    let n = ALLOCATIONS.load(Ordering::SeqCst);
    println!("public handshake: {n} allocations per 100");
    assert_eq!(n, 0, "a public handshake allocated");
}
