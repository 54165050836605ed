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

    asymmetric(c);
}

/// RS256 (2048-bit) and ES256 (P-256), each next to ring's raw verify of the same input
/// (SPEC §9: the verifier's cost over ring's own should stay under 3 µs).
fn asymmetric(c: &mut Criterion) {
    use ring::rand::SystemRandom;
    use ring::signature::{
        EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
        RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
    };
    use wsgate::auth::keys::pem_decode;
    let data = |name: &str| {
        std::fs::read_to_string(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR")))
            .expect("test data")
    };
    let rng = SystemRandom::new();
    let rsa = RsaKeyPair::from_pkcs8(
        &pem_decode(&data("wsgate-test-rsa2048.key.pem"), "PRIVATE KEY").expect("pem"),
    )
    .expect("rsa");
    let rsa_spki = pem_decode(&data("wsgate-test-rsa2048.pub.pem"), "PUBLIC KEY").expect("pem");
    let ec = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &pem_decode(&data("rfc7515-a3-es256.key.pem"), "PRIVATE KEY").expect("pem"),
        &rng,
    )
    .expect("ec");
    let ec_spki = pem_decode(&data("rfc7515-a3-es256.pub.pem"), "PUBLIC KEY").expect("pem");
    let verifier = Verifier {
        keys: KeySet::new(vec![
            Key::from_spki_der(Some("rs-1".into()), Alg::RS256, &rsa_spki).expect("RS256 key"),
            Key::from_spki_der(Some("es-1".into()), Alg::ES256, &ec_spki).expect("ES256 key"),
        ])
        .expect("key set"),
        rules: Rules {
            issuer: Some("https://issuer.example.com".into()),
            audience: Some("wsgate".into()),
            leeway_secs: 30,
            max_token_bytes: MAX_TOKEN_BYTES,
            max_lifetime_secs: u64::MAX,
        },
    };
    let mut scratch = Scratch::new(MAX_TOKEN_BYTES);

    let rs_input = signing_input(r#"{"alg":"RS256","typ":"JWT","kid":"rs-1"}"#);
    let mut rs_sig = vec![0; rsa.public().modulus_len()];
    rsa.sign(&RSA_PKCS1_SHA256, &rng, rs_input.as_bytes(), &mut rs_sig)
        .expect("sign");
    let rs_token = token(&rs_input, &rs_sig);
    let rsa_public = rsa.public().as_ref().to_vec();
    let rs_verify_key = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &rsa_public);

    let es_input = signing_input(r#"{"alg":"ES256","typ":"JWT","kid":"es-1"}"#);
    let es_sig = ec.sign(&rng, es_input.as_bytes()).expect("sign");
    let es_token = token(&es_input, es_sig.as_ref());
    let ec_point = ec.public_key().as_ref().to_vec();
    let es_verify_key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &ec_point);

    for t in [&rs_token, &es_token] {
        let claims = verifier
            .verify(t.as_bytes(), NOW, &mut scratch)
            .expect("bench token verifies");
        assert_eq!(claims.sub, "user-4242");
    }

    let mut group = c.benchmark_group("jwt_rs256");
    group.bench_function("verifier", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(rs_token.as_bytes()), NOW, &mut scratch)
                .is_ok()
        });
    });
    group.bench_function("ring_rsa_verify", |b| {
        b.iter(|| {
            rs_verify_key
                .verify(black_box(rs_input.as_bytes()), black_box(&rs_sig))
                .is_ok()
        });
    });
    group.finish();

    let mut group = c.benchmark_group("jwt_es256");
    group.bench_function("verifier", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(es_token.as_bytes()), NOW, &mut scratch)
                .is_ok()
        });
    });
    group.bench_function("ring_ecdsa_verify", |b| {
        b.iter(|| {
            es_verify_key
                .verify(black_box(es_input.as_bytes()), black_box(es_sig.as_ref()))
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
