//! HS256 and EdDSA keys: selection, `alg`, and algorithm confusion.

use super::*;

#[test]
fn key_selection() {
    let (gw, k) = start("", LIMITS_OFF);
    let p = claims("alice", "").to_string();
    // Unknown kid, with either key's signature.
    bad_because(
        &gw,
        &k.ed_raw(r#"{"alg":"EdDSA","kid":"nope"}"#, &p),
        "unknown key id",
    );
    bad_because(
        &gw,
        &k.hs_raw(r#"{"alg":"HS256","kid":"ED"}"#, &p),
        "unknown key id",
    );
    // No kid: the one key of the header's algorithm.
    good(&gw, &k.ed_raw(r#"{"alg":"EdDSA"}"#, &p));
    good(&gw, &k.hs_raw(r#"{"alg":"HS256","typ":"JWT"}"#, &p));
    bad(&gw, &k.hs_raw(r#"{"alg":"HS384"}"#, &p));
    // kid and alg compare after JSON unescaping.
    good(
        &gw,
        &k.ed_raw(r#"{"alg":"EdDS\u0041","kid":"\u0065d"}"#, &p),
    );
    bad_because(
        &gw,
        &k.ed_raw(r#"{"alg":"EdDSA","kid":""}"#, &p),
        "unknown key id",
    );
    bad(&gw, &k.ed_raw(r#"{"alg":"EdDSA","kid":null}"#, &p));
    bad(&gw, &k.ed_raw(r#"{"alg":"EdDSA","kid":["ed"]}"#, &p));
    // RFC 9864's fully-specified name for an EdDSA key.
    good(&gw, &k.ed_raw(r#"{"alg":"Ed25519","kid":"ed"}"#, &p));
    good(&gw, &k.ed_raw(r#"{"alg":"Ed25519"}"#, &p));
    // alg / key mismatch: the algorithm comes from the key, never the token.
    bad(&gw, &k.ed_raw(r#"{"alg":"EdDSA","kid":"hs"}"#, &p));
    bad(&gw, &k.hs_raw(r#"{"alg":"HS256","kid":"ed"}"#, &p));
    let hs512 = {
        let SigningKey::Hmac(secret) = &k.hs else {
            unreachable!()
        };
        sign(
            Alg::HS512,
            &SigningKey::Hmac(secret.clone()),
            r#"{"alg":"HS512","kid":"hs"}"#,
            &p,
        )
        .expect("sign")
    };
    bad(&gw, &hs512);
    // Unsupported algorithms.
    for alg in ["RS256", "ES256", "PS256", "HS1", "eddsa", "EDDSA", ""] {
        bad(
            &gw,
            &k.ed_raw(&format!(r#"{{"alg":"{alg}","kid":"ed"}}"#), &p),
        );
    }
    // A signature from the other key.
    let ed = k.ed_raw(r#"{"alg":"EdDSA","kid":"ed"}"#, &p);
    let other_dir = TempDir::new();
    let other = make_keys(&other_dir);
    bad_because(
        &gw,
        &other.ed_raw(r#"{"alg":"EdDSA","kid":"ed"}"#, &p),
        "invalid signature",
    );
    bad_because(
        &gw,
        &other.hs_raw(r#"{"alg":"HS256","kid":"hs"}"#, &p),
        "invalid signature",
    );
    good(&gw, &ed);
}

#[test]
fn alg_none_in_any_case_is_refused() {
    let (gw, k) = start("", LIMITS_OFF);
    let p = claims("alice", "echo").to_string();
    for alg in ["none", "None", "NONE", "nOnE", "none "] {
        for kid in ["", r#","kid":"ed""#, r#","kid":"hs""#] {
            let header = format!(r#"{{"alg":"{alg}"{kid}}}"#);
            let unsigned = format!("{}.{}.", b64(&header), b64(&p));
            bad(&gw, &unsigned);
            // With a signature that would verify under the named key's own algorithm.
            bad(&gw, &k.hs_raw(&header, &p));
            bad(&gw, &k.ed_raw(&header, &p));
            // Unsigned, without the trailing dot.
            bad(&gw, &format!("{}.{}", b64(&header), b64(&p)));
        }
    }
}

#[test]
fn algorithm_confusion_hs256_with_the_ed25519_public_key() {
    let (gw, k) = start("", LIMITS_OFF);
    let p = claims("alice", "echo").to_string();
    // HMAC keyed with what an attacker can see of the Ed25519 key: raw bytes, DER, PEM.
    for secret in [
        k.ed_public_raw.clone(),
        k.ed_public_der.clone(),
        k.ed_public_pem.as_bytes().to_vec(),
        k.ed_public_pem.trim().as_bytes().to_vec(),
    ] {
        let key = SigningKey::Hmac(secret);
        for header in [
            r#"{"alg":"HS256","kid":"ed"}"#,
            r#"{"alg":"HS256"}"#,
            r#"{"alg":"HS256","typ":"JWT","kid":"hs"}"#,
        ] {
            let token = sign(Alg::HS256, &key, header, &p).expect("sign");
            bad(&gw, &token);
            invalid_token(&gw, &format!("/echo?access_token={token}"), &[]);
        }
    }
}
