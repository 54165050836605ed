//! [auth] and [[auth.key]]: keys, secrets kept out of messages, token sources.

use super::*;

#[test]
fn key_rules() {
    let dir = key_dir("keys");
    dir.write("hs.secret", secret_text(32));
    dir.write(
        "hs48.secret",
        format!(
            "\n {}\n",
            base64::engine::general_purpose::URL_SAFE.encode([1u8; 47])
        ),
    );
    dir.write("hs64.secret", secret_text(64));
    dir.write("short.secret", secret_text(31));
    dir.write("std.secret", "++++////++++////++++////++++////++++////++++");
    dir.write("private.pem", pem("PRIVATE KEY", &[1, 2, 3]));
    dir.write(
        "rsa.pem",
        pem("PUBLIC KEY", &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86]),
    );
    dir.write("empty.pem", "");

    let config = dir
        .parse(&with_keys("[[auth.key]]\nkid = \"a\"\nalg = \"HS256\"\nsecret_file = \"hs.secret\"\n[[auth.key]]\nalg = \"HS512\"\nsecret_file = \"hs64.secret\"\n[[auth.key]]\nalg = \"EdDSA\"\npublic_key = \"ed.pem\""))
        .unwrap();
    assert_eq!(config.auth.keys.len(), 3);
    assert_eq!(config.auth.keys[1].kid, None);
    assert_eq!(
        config.auth.keys[1].material,
        KeyMaterial::HmacSecret(vec![0x5a; 64])
    );

    let cases = [
        ("alg = \"HS256\"\nsecret_file = \"short.secret\"", "auth.key[0].secret_file: "),
        ("alg = \"HS384\"\nsecret_file = \"hs48.secret\"", "HS384 needs at least 48 (RFC 7518 §3.2)"),
        ("alg = \"HS512\"\nsecret_file = \"hs.secret\"", "HS512 needs at least 64"),
        ("alg = \"HS256\"\nsecret_file = \"std.secret\"", "not base64url text"),
        ("alg = \"HS256\"\nsecret_file = \"missing.secret\"", "missing.secret: cannot read: "),
        ("alg = \"HS256\"", "auth.key[0].secret_file: required for alg = \"HS256\""),
        ("alg = \"HS256\"\npublic_key = \"ed.pem\"", "auth.key[0].public_key: alg = \"HS256\" is an HMAC"),
        ("alg = \"EdDSA\"", "auth.key[0].public_key: required for alg = \"EdDSA\""),
        ("alg = \"EdDSA\"\nsecret_file = \"hs.secret\"", "auth.key[0].secret_file: alg = \"EdDSA\" verifies with a public key"),
        ("alg = \"EdDSA\"\npublic_key = \"ed.pem\"\nsecret_file = \"hs.secret\"", "auth.key[0]: set public_key (EdDSA) or secret_file"),
        ("alg = \"EdDSA\"\npublic_key = \"private.pem\"", "holds a private key; give the public key"),
        ("alg = \"EdDSA\"\npublic_key = \"rsa.pem\"", "not an Ed25519 public key"),
        ("alg = \"EdDSA\"\npublic_key = \"empty.pem\"", "no PEM \"PUBLIC KEY\" block found"),
        ("alg = \"EdDSA\"\npublic_key = \"nope.pem\"", "nope.pem: cannot read: "),
        ("alg = \"RS256\"\npublic_key = \"ed.pem\"", "ed.pem: holds an Ed25519 key, but alg = \"RS256\" needs an RSA key"),
        ("alg = \"ES256\"", "auth.key[0].public_key: required for alg = \"ES256\""),
        ("alg = \"PS384\"\npublic_key = \"ed.pem\"\nsecret_file = \"hs.secret\"", "auth.key[0].secret_file: alg = \"PS384\" verifies with a public key"),
        ("alg = \"RS257\"\npublic_key = \"ed.pem\"", "auth.key[0].alg: unknown algorithm \"RS257\"; expected one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256"),
        ("alg = \"none\"", "auth.key[0].alg: \"none\" is never accepted"),
        ("public_key = \"ed.pem\"", "auth.key[0].alg: required"),
        ("kid = \"\"\nalg = \"EdDSA\"\npublic_key = \"ed.pem\"", "auth.key[0].kid: must not be empty"),
    ];
    for (key, expected) in cases {
        assert_error(
            dir.parse(&with_keys(&format!("[[auth.key]]\n{key}"))),
            expected,
        );
    }
    assert_error(
        dir.parse(&with_keys("[[auth.key]]\nkid = \"k\"\nalg = \"EdDSA\"\npublic_key = \"ed.pem\"\n[[auth.key]]\nkid = \"k\"\nalg = \"HS256\"\nsecret_file = \"hs.secret\"")),
        "auth.key[1].kid: duplicate kid \"k\" (also auth.key[0].kid)",
    );
}

#[test]
fn secrets_never_reach_an_error_message() {
    let dir = key_dir("secret-leak");
    // Not base64url ('+' and '/'): the error must not quote any of it.
    let secret = "SuperSecret+Value/ThatMustNotLeak+0123456789abcdef";
    dir.write("bad.secret", secret);
    let short = secret_text(8);
    dir.write("short.secret", &short);
    for file in ["bad.secret", "short.secret"] {
        let result = dir.parse(&with_keys(&format!(
            "[[auth.key]]\nalg = \"HS256\"\nsecret_file = \"{file}\""
        )));
        let text = result.unwrap_err().to_string();
        assert!(
            !text.contains("SuperSecret") && !text.contains("ThatMust"),
            "{text}"
        );
        assert!(!text.contains(&short), "{text}");
    }
    let config = {
        dir.write("ok.secret", secret_text(40));
        dir.parse(&with_keys(
            "[[auth.key]]\nalg = \"HS256\"\nsecret_file = \"ok.secret\"",
        ))
        .unwrap()
    };
    let debug = format!("{config:?}");
    assert!(
        debug.contains("HmacSecret(<40 bytes, redacted>)"),
        "{debug}"
    );
    assert!(!debug.contains("90, 90"), "{debug}");
}

#[test]
fn sources_rules() {
    let dir = key_dir("sources");
    let parse = |sources: &str, origin: &str| {
        dir.parse(&format!(
            "[server]\nlisten = \"127.0.0.1:8080\"\n[auth]\nsources = {sources}\n[[auth.key]]\nalg = \"EdDSA\"\npublic_key = \"ed.pem\"\n{origin}\n[[route]]\npath = \"/a\"\nbackend = \"echo\"\n"
        ))
    };
    let config = parse("[\"query:jwt\", \"protocol\", \"header\"]", "").unwrap();
    assert_eq!(
        config.auth.sources,
        vec![
            Source::Query("jwt".into()),
            Source::Protocol,
            Source::Header
        ]
    );
    assert_error(parse("[]", ""), "auth.sources: must list at least one");
    assert_error(
        parse("[\"query:\"]", ""),
        "auth.sources[0]: query:NAME needs a name",
    );
    assert_error(
        parse("[\"query:a b\"]", ""),
        "auth.sources[0]: query:NAME needs a name",
    );
    assert_error(
        parse("[\"cookie\"]", ""),
        "auth.sources[0]: unknown source \"cookie\"",
    );
    assert_error(
        parse("[\"bearer\"]", ""),
        "auth.sources[0]: unknown source \"bearer\"",
    );
    assert_error(parse("[\"Header\"]", ""), "auth.sources[0]: unknown source");
    assert_error(
        parse("[\"header\", \"header\"]", ""),
        "auth.sources[1]: duplicate source \"header\"",
    );
    assert_error(
        parse("[\"query:t\", \"query:t\"]", ""),
        "auth.sources[1]: duplicate source",
    );
}

#[test]
fn cookie_source_needs_a_closed_origin_policy() {
    let dir = key_dir("cookie");
    let parse = |origin: &str| {
        dir.parse(&format!(
            "[server]\nlisten = \"127.0.0.1:8080\"\n[auth]\nsources = [\"cookie:session\", \"header\"]\n[[auth.key]]\nalg = \"EdDSA\"\npublic_key = \"ed.pem\"\n{origin}\n[[route]]\npath = \"/a\"\nbackend = \"echo\"\n"
        ))
    };
    // SPEC §4: cookie:NAME only with a non-empty origin.allow and allow_missing = false.
    let expected = "auth.sources[0]: cookie:session needs a non-empty origin.allow and origin.allow_missing = false";
    assert_error(parse(""), expected);
    assert_error(parse("[origin]\nallow_missing = false"), expected);
    assert_error(
        parse("[origin]\nallow = [\"https://app.example.com\"]"),
        expected,
    );
    assert_error(
        parse("[origin]\nallow = [\"https://app.example.com\"]\nallow_missing = true"),
        expected,
    );
    let config =
        parse("[origin]\nallow = [\"https://app.example.com\"]\nallow_missing = false").unwrap();
    assert_eq!(config.auth.sources[0], Source::Cookie("session".into()));
}
