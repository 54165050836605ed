//! SPEC §9: RS*, PS*, ES* static keys, key confusion across key types, and
//! [[auth.provider]] JWK Sets.

use super::*;

/// A test data file's bytes.
fn data_file(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Loads a test data private key for `sign`.
fn data_key(name: &str, alg: Alg) -> SigningKey {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let (got, key) = SigningKey::load(&path, Some(alg)).expect("signing key");
    assert_eq!(got, alg);
    key
}

/// A gateway with keys "rs" (RS256), "ps" (PS256, same RSA key), "es" (ES256, the RFC
/// 7515 A.3 key) and "es384" (ES384) besides the usual "ed" and "hs".
fn start_asymmetric() -> (Gateway, Keys) {
    let dir = TempDir::new();
    let keys = make_keys(&dir);
    dir.write("rsa.pub.pem", data_file("wsgate-test-rsa2048.pub.pem"));
    dir.write("es.pub.pem", data_file("rfc7515-a3-es256.pub.pem"));
    dir.write("es384.pub.pem", data_file("wsgate-test-p384.pub.pem"));
    let extra = format!(
        "[[auth.key]]
kid = \"rs\"
alg = \"RS256\"
public_key = \"rsa.pub.pem\"

[[auth.key]]
kid = \"ps\"
alg = \"PS256\"
public_key = \"rsa.pub.pem\"

[[auth.key]]
kid = \"es\"
alg = \"ES256\"
public_key = \"es.pub.pem\"

[[auth.key]]
kid = \"es384\"
alg = \"ES384\"
public_key = \"es384.pub.pem\"

{LIMITS_OFF}"
    );
    let text = config("", &extra);
    let gw = Gateway::start_in(dir, &text);
    (gw, keys)
}

#[test]
fn rs256_ps256_es256_es384_tokens_are_accepted() {
    let (gw, _k) = start_asymmetric();
    let p = claims("alice", "echo").to_string();
    let rsa_rs = data_key("wsgate-test-rsa2048.key.pem", Alg::RS256);
    let es = data_key("rfc7515-a3-es256.key.pem", Alg::ES256);
    let es384 = data_key("wsgate-test-p384.key.pem", Alg::ES384);
    for (alg, key, kid) in [
        (Alg::RS256, &rsa_rs, "rs"),
        (Alg::PS256, &rsa_rs, "ps"),
        (Alg::ES256, &es, "es"),
        (Alg::ES384, &es384, "es384"),
    ] {
        let header = format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"{kid}"}}"#);
        let token = sign(alg, key, &header, &p).expect("sign");
        good(&gw, &token);
        let (r, s) = accepted(&gw, &format!("/echo?access_token={token}"), &[]);
        assert_no_token(&r, &token);
        close(s);
        // Without kid: the one key of that algorithm.
        let token = sign(alg, key, &format!(r#"{{"alg":"{alg}"}}"#), &p).expect("sign");
        good(&gw, &token);
        // Tampered payload: refused.
        let other = claims("mallory", "echo").to_string();
        let forged = format!(
            "{}.{}.{}",
            token.split('.').next().expect("h"),
            b64(&other),
            token.rsplit('.').next().expect("s")
        );
        bad_because(&gw, &forged, "invalid signature");
    }
}

/// 401 invalid_token for a key-setup refusal: SPEC §4's uniform "invalid signature" on
/// the wire (the precise reason is only in the log).
fn refused_as_key_setup(gw: &Gateway, token: &str) {
    assert_eq!(bad(gw, token), "invalid signature");
}

#[test]
fn key_confusion_across_key_types_is_refused() {
    let (gw, _k) = start_asymmetric();
    let p = claims("alice", "echo").to_string();
    let rsa_pem = data_file("wsgate-test-rsa2048.pub.pem");
    let rsa_der =
        pem_decode(std::str::from_utf8(&rsa_pem).expect("pem"), "PUBLIC KEY").expect("der");
    let es_pem = data_file("rfc7515-a3-es256.pub.pem");
    // HS256 keyed with the RSA / EC public key's bytes (PEM text and DER), naming the
    // asymmetric key's kid or none.
    for secret in [rsa_pem.clone(), rsa_der.clone(), es_pem.clone()] {
        let key = SigningKey::Hmac(secret);
        for header in [
            r#"{"alg":"HS256","kid":"rs"}"#,
            r#"{"alg":"HS256","kid":"es"}"#,
            r#"{"alg":"HS256","kid":"ps"}"#,
        ] {
            let token = sign(Alg::HS256, &key, header, &p).expect("sign");
            refused_as_key_setup(&gw, &token);
        }
    }
    let rsa = data_key("wsgate-test-rsa2048.key.pem", Alg::RS256);
    let es = data_key("rfc7515-a3-es256.key.pem", Alg::ES256);
    // RS256 against the EC key, ES256 against the RSA key, RS256 against the PS256 key
    // (same RSA key, other padding), ES384 against the P-256 key.
    for (alg, key, header) in [
        (Alg::RS256, &rsa, r#"{"alg":"RS256","kid":"es"}"#),
        (Alg::ES256, &es, r#"{"alg":"ES256","kid":"rs"}"#),
        (Alg::RS256, &rsa, r#"{"alg":"RS256","kid":"ps"}"#),
        (Alg::PS256, &rsa, r#"{"alg":"PS256","kid":"rs"}"#),
        (Alg::ES256, &es, r#"{"alg":"ES384","kid":"es"}"#),
    ] {
        let token = sign(alg, key, header, &p).expect("sign");
        refused_as_key_setup(&gw, &token);
    }
}

#[test]
fn weak_or_mismatched_public_keys_are_refused_at_load() {
    for (alg, file, expected) in [
        (
            "RS256",
            "wsgate-test-rsa1024.pub.pem",
            "RSA modulus is 1024 bits; at least 2048 bits are required",
        ),
        (
            "ES256",
            "wsgate-test-rsa2048.pub.pem",
            "holds an RSA 2048-bit key, but alg = \"ES256\" needs an EC P-256 key",
        ),
        (
            "ES384",
            "rfc7515-a3-es256.pub.pem",
            "holds an EC P-256 key, but alg = \"ES384\" needs an EC P-384 key",
        ),
        (
            "RS256",
            "rfc7515-a3-es256.pub.pem",
            "holds an EC P-256 key, but alg = \"RS256\" needs an RSA key",
        ),
    ] {
        let dir = TempDir::new();
        dir.write("k.pem", data_file(file));
        let cfg = dir.write(
            "wsgate.toml",
            format!(
                "[server]\nlisten = [\"127.0.0.1:0\"]\n[[auth.key]]\nkid = \"k\"\nalg = \"{alg}\"\npublic_key = \"k.pem\"\n[[route]]\npath = \"/e\"\nbackend = \"echo\"\n"
            ),
        );
        let (code, stdout, stderr) = run(&["check", "-c", path_str(&cfg)]);
        assert_eq!(code, 1, "{alg} {file}: {stdout}{stderr}");
        let all = format!("{stdout}{stderr}");
        assert!(all.contains("auth.key[0].public_key"), "{all}");
        assert!(all.contains(expected), "{alg} {file}: {all}");
    }
}

// ---------------------------------------------------------------------------------------
// SPEC §9: [[auth.provider]] with a local JWK Set file; selection by (iss, kid)
// ---------------------------------------------------------------------------------------

/// An EC public key file's point as JWK members (`x`, `y`).
fn ec_jwk(pem_file: &str, kid: &str, coordinate: usize) -> Value {
    let pem = data_file(pem_file);
    let der = pem_decode(std::str::from_utf8(&pem).expect("pem"), "PUBLIC KEY").expect("der");
    let point = &der[der.len() - (1 + 2 * coordinate)..];
    assert_eq!(point[0], 4);
    let crv = if coordinate == 32 { "P-256" } else { "P-384" };
    json!({
        "kty": "EC", "crv": crv, "kid": kid, "use": "sig",
        "x": b64(&point[1..1 + coordinate]), "y": b64(&point[1 + coordinate..]),
    })
}

const ISS_A: &str = "https://a.example/realms/app";
const ISS_B: &str = "https://b.example";

/// Providers A (P-256 key "k1", path relative to the config) and B (P-384 key "k1",
/// file:// URL, ES384 only), beside the static "ed" and "hs" keys.
fn start_providers() -> (Gateway, Keys) {
    let dir = TempDir::new();
    let keys = make_keys(&dir);
    let a_jwks = json!({"keys": [
        ec_jwk("rfc7515-a3-es256.pub.pem", "k1", 32),
        // Skipped, never used: a symmetric key and one with a private member.
        {"kty": "oct", "kid": "hs", "k": b64([7u8; 32])},
    ]});
    dir.write("a.jwks.json", a_jwks.to_string());
    let b_path = dir.write(
        "b.jwks.json",
        json!({"keys": [ec_jwk("wsgate-test-p384.pub.pem", "k1", 48)]}).to_string(),
    );
    let extra = format!(
        "[[auth.provider]]
issuer = \"{ISS_A}\"
jwks_uri = \"a.jwks.json\"

[[auth.provider]]
issuer = \"{ISS_B}\"
jwks_uri = \"file://{}\"
algorithms = [\"ES384\"]
audience = \"api\"

{LIMITS_OFF}",
        path_str(&b_path)
    );
    let gw = Gateway::start_in(dir, &config("", &extra));
    (gw, keys)
}

#[test]
fn provider_tokens_are_verified_by_their_issuers_keys_only() {
    let (gw, k) = start_providers();
    let es256 = data_key("rfc7515-a3-es256.key.pem", Alg::ES256);
    let es384 = data_key("wsgate-test-p384.key.pem", Alg::ES384);
    let with_iss = |iss: &str| with(claims("alice", "echo"), "iss", json!(iss)).to_string();
    let b_claims = with(
        with(claims("bob", "echo"), "iss", json!(ISS_B)),
        "aud",
        json!("api"),
    )
    .to_string();
    let h256 = r#"{"alg":"ES256","typ":"JWT","kid":"k1"}"#;
    let h384 = r#"{"alg":"ES384","typ":"JWT","kid":"k1"}"#;

    // Each provider's own tokens.
    good(
        &gw,
        &sign(Alg::ES256, &es256, h256, &with_iss(ISS_A)).expect("sign"),
    );
    good(
        &gw,
        &sign(Alg::ES256, &es256, r#"{"alg":"ES256"}"#, &with_iss(ISS_A)).expect("sign"),
    );
    good(
        &gw,
        &sign(Alg::ES384, &es384, h384, &b_claims).expect("sign"),
    );
    // B's audience overrides auth.audience (unset): a B token without "api" is refused.
    let no_aud = with_iss(ISS_B);
    bad(&gw, &sign(Alg::ES384, &es384, h384, &no_aud).expect("sign"));

    // Same kid, other issuer: A's key never verifies B's tokens, nor B's key A's.
    let forged_b = with(
        with(claims("mallory", "echo"), "iss", json!(ISS_B)),
        "aud",
        json!("api"),
    );
    refused_as_key_setup_or_signature(
        &gw,
        &sign(Alg::ES256, &es256, h256, &forged_b.to_string()).expect("sign"),
    );
    refused_as_key_setup_or_signature(
        &gw,
        &sign(Alg::ES384, &es384, h384, &with_iss(ISS_A)).expect("sign"),
    );
    // A provider's token is never verified by a static key.
    bad(&gw, &k.ed_raw(ED_HEADER, &with_iss(ISS_A)));
    bad(&gw, &k.hs_raw(HS_HEADER, &with_iss(ISS_B)));
    // The skipped oct key "hs" of A's set never verifies anything.
    let oct = SigningKey::Hmac(vec![7u8; 32]);
    bad(
        &gw,
        &sign(
            Alg::HS256,
            &oct,
            r#"{"alg":"HS256","kid":"hs"}"#,
            &with_iss(ISS_A),
        )
        .expect("sign"),
    );
    // A provider's key never verifies a token of another (or no) issuer.
    for iss in [
        None,
        Some("https://c.example"),
        Some("https://a.example/realms/app/"),
    ] {
        let c = match iss {
            Some(iss) => with_iss(iss),
            None => claims("alice", "echo").to_string(),
        };
        bad(&gw, &sign(Alg::ES256, &es256, h256, &c).expect("sign"));
    }
    // Static keys still verify tokens of no provider.
    good(&gw, &k.ed_token(&claims("carol", "echo")));
}

/// 401 invalid_token for a key-setup or signature refusal: "invalid signature" (SPEC §4).
fn refused_as_key_setup_or_signature(gw: &Gateway, token: &str) {
    assert_eq!(bad(gw, token), "invalid signature");
}

#[test]
fn provider_config_errors_name_their_keys() {
    let dir = TempDir::new();
    let cfg = dir.write(
        "wsgate.toml",
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[auth]\nissuer = \"https://x.example\"\n\
         [[auth.provider]]\nissuer = \"https://x.example\"\njwks_uri = \"http://10.1.2.3/certs\"\nalgorithms = [\"HS256\"]\n\
         [[auth.provider]]\nissuer = \"https://y.example\"\njwks_uri = \"missing.json\"\nrefresh = \"5s\"\n\
         [[route]]\npath = \"/e\"\nbackend = \"echo\"\n",
    );
    let (code, stdout, stderr) = run(&["check", "-c", path_str(&cfg)]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let all = format!("{stdout}{stderr}");
    for expected in [
        "auth.provider[0].issuer: equals auth.issuer",
        "auth.provider[0].jwks_uri: http:// is only allowed to loopback",
        "auth.provider[0].algorithms[0]: HS256 is never taken from a JWK Set",
        "auth.provider[1].refresh: 5s is shorter than min_refresh (30s)",
    ] {
        assert!(all.contains(expected), "{expected}: {all}");
    }
    // `check` fetches nothing and reads no JWK Set: a missing local file is not its error.
    assert!(!all.contains("missing.json"), "{all}");
}

#[test]
fn token_inspect_explains_provider_and_asymmetric_tokens() {
    let (gw, k) = start_providers();
    let cfg = gw.dir.path().join("wsgate.toml");
    let es256 = data_key("rfc7515-a3-es256.key.pem", Alg::ES256);
    let claims_a = with(claims("alice", "echo"), "iss", json!(ISS_A)).to_string();
    let good_token = sign(
        Alg::ES256,
        &es256,
        r#"{"alg":"ES256","kid":"k1"}"#,
        &claims_a,
    )
    .expect("sign");
    let (code, stdout, stderr) = run(&["token", "inspect", "-c", path_str(&cfg), &good_token]);
    let all = format!("{stdout}{stderr}");
    assert_eq!(code, 0, "{all}");
    assert!(all.contains("is an [[auth.provider]]"), "{all}");
    assert!(all.contains("verifies with key \"k1\" (ES256)"), "{all}");
    // A static key's signature on a provider token: refused, and why.
    let forged = k.ed_raw(ED_HEADER, &claims_a);
    let (code, stdout, stderr) = run(&["token", "inspect", "-c", path_str(&cfg), &forged]);
    let all = format!("{stdout}{stderr}");
    assert_eq!(code, 1, "{all}");
    assert!(
        all.contains("kid \"ed\" is not configured (configured: k1 (ES256))"),
        "{all}"
    );
}
