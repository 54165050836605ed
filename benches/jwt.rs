//! Token verification at the handshake: `Verifier::verify` (split, base64url, header,
//! key selection, signature, claims) of valid HS256 and EdDSA tokens with one reused
//! `Scratch`, each next to ring's raw verify of the same signing input: the difference is
//! what the JWS and claims layers cost.

use std::hint::black_box;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion};
use ring::hmac;
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use wsgate::auth::keys::{Alg, Key, KeySet};
use wsgate::auth::verify::{Rules, Scratch, Verifier};

/// The verifier's clock, unix seconds.
const NOW: u64 = 1_700_000_000;
/// An HS256 secret of the minimum length.
const HS_SECRET: [u8; 32] = [0x5a; 32];
/// The Ed25519 seed.
const ED_SEED: [u8; 32] = [0x07; 32];
/// SPEC §3 default `max_token_bytes`.
const MAX_TOKEN_BYTES: usize = 4096;

/// Claims of a typical access token: issuer, audience, subject, times, scopes, id.
fn payload() -> String {
    format!(
        r#"{{"iss":"https://issuer.example.com","aud":"wsgate","sub":"user-4242","iat":{},"exp":{},"scope":"chat:read chat:write","jti":"8f14e45f-ceea-467f-a0e6-1b2c3d4e5f60"}}"#,
        NOW - 60,
        NOW + 3600
    )
}

/// `base64url(header) "." base64url(payload)`, the JWS signing input.
fn signing_input(header: &str) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload())
    )
}

/// `signing_input "." base64url(signature)`.
fn token(input: &str, signature: &[u8]) -> String {
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn jwt(c: &mut Criterion) {
    let ed_pair = Ed25519KeyPair::from_seed_unchecked(&ED_SEED).expect("Ed25519 seed");
    let ed_public: [u8; 32] = ed_pair
        .public_key()
        .as_ref()
        .try_into()
        .expect("32-byte Ed25519 public key");
    let hs_key = hmac::Key::new(hmac::HMAC_SHA256, &HS_SECRET);

    let verifier = Verifier {
        keys: KeySet::new(vec![
            Key::ed25519_raw(Some("ed-1".into()), ed_public),
            Key::hmac(Some("hs-1".into()), Alg::HS256, &HS_SECRET).expect("HS256 key"),
        ])
        .expect("key set"),
        rules: Rules {
            issuer: Some("https://issuer.example.com".into()),
            audience: Some("wsgate".into()),
            leeway_secs: 30,
            max_token_bytes: MAX_TOKEN_BYTES,
            // The test tokens' lifetimes are not what is measured here.
            max_lifetime_secs: u64::MAX,
        },
    };
    let mut scratch = Scratch::new(MAX_TOKEN_BYTES);

    let hs_input = signing_input(r#"{"alg":"HS256","typ":"JWT","kid":"hs-1"}"#);
    let hs_tag = hmac::sign(&hs_key, hs_input.as_bytes());
    let hs_token = token(&hs_input, hs_tag.as_ref());

    let ed_input = signing_input(r#"{"alg":"EdDSA","typ":"JWT","kid":"ed-1"}"#);
    let ed_sig = ed_pair.sign(ed_input.as_bytes());
    let ed_token = token(&ed_input, ed_sig.as_ref());
    let ed_verify_key = UnparsedPublicKey::new(&ED25519, ed_public);

    // The tokens must take the success path, or the bench would time an early refusal.
    for t in [&hs_token, &ed_token] {
        let claims = verifier
            .verify(t.as_bytes(), NOW, &mut scratch)
            .expect("bench token verifies");
        assert_eq!(claims.sub, "user-4242");
    }

    let mut group = c.benchmark_group("jwt_hs256");
    group.bench_function("verifier", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(hs_token.as_bytes()), NOW, &mut scratch)
                .is_ok()
        });
    });
    group.bench_function("ring_hmac_verify", |b| {
        b.iter(|| {
            hmac::verify(
                &hs_key,
                black_box(hs_input.as_bytes()),
                black_box(hs_tag.as_ref()),
            )
            .is_ok()
        });
    });
    group.finish();

    let mut group = c.benchmark_group("jwt_eddsa");
    group.bench_function("verifier", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(ed_token.as_bytes()), NOW, &mut scratch)
                .is_ok()
        });
    });
    group.bench_function("ring_ed25519_verify", |b| {
        b.iter(|| {
            ed_verify_key
                .verify(black_box(ed_input.as_bytes()), black_box(ed_sig.as_ref()))
                .is_ok()
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = jwt
}
criterion_main!(benches);
