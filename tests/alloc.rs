//! Steady-state token verification allocates nothing (ARCHITECTURE "Hot path budget").
//! A separate test binary: a `#[global_allocator]` applies to the whole binary.
#![allow(unsafe_code)] // GlobalAlloc is an unsafe trait; this wrapper only counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use wsgate::auth::keys::{Alg, Key, KeySet};
use wsgate::auth::verify::{Rules, Scratch, Verifier};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; the wrapper only bumps a counter.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
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
        COUNTING.store(true, Ordering::SeqCst);
        let mut ok = 0usize;
        for _ in 0..1000 {
            if let Ok(c) = verifier.verify(token.as_bytes(), now, &mut scratch) {
                if c.sub == "alice" && c.has_scope("echo") && c.exp == 2_000_000_000 {
                    ok += 1;
                }
            }
        }
        COUNTING.store(false, Ordering::SeqCst);
        let n = ALLOCATIONS.load(Ordering::SeqCst);
        println!("{name}: {n} allocations for 1000 verifications");
        assert_eq!(ok, 1000);
        counts.push((name, n));
    }
    for (name, n) in counts {
        assert_eq!(n, 0, "{name} verification allocated");
    }
}
