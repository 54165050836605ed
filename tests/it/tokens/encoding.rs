//! Encoding and structure: base64url, segments, JSON, size, header parameters.

use super::*;

/// The base64url alphabet.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#[test]
fn truncated_padded_and_non_canonical_base64url() {
    let (gw, k) = start("", LIMITS_OFF);
    let p = claims("alice", "echo").to_string();
    let token = k.ed_raw(ED_HEADER, &p);
    good(&gw, &token);
    let (signing_input, sig) = token.rsplit_once('.').expect("three segments");
    assert_eq!(sig.len(), 86);

    // Truncated signature: 85 chars (impossible length), 84 chars (63 bytes).
    bad(&gw, &token[..token.len() - 1]);
    bad(&gw, &token[..token.len() - 2]);
    // Padded signature.
    bad(&gw, &format!("{token}=="));
    bad(&gw, &format!("{token}="));
    // Non-canonical: the last character's 4 unused bits set; decodes leniently to the
    // very same signature bytes.
    let last = *sig.as_bytes().last().expect("last");
    let v = ALPHABET.iter().position(|c| *c == last).expect("alphabet");
    assert_eq!(v & 0x0f, 0, "canonical encoder");
    for bits in [1, 2, 4, 8, 15] {
        let tampered = format!(
            "{signing_input}.{}{}",
            &sig[..85],
            ALPHABET[v | bits] as char
        );
        assert_eq!(
            URL_SAFE_NO_PAD.decode(sig).expect("sig"),
            base64::engine::GeneralPurpose::new(
                &base64::alphabet::URL_SAFE,
                base64::engine::GeneralPurposeConfig::new()
                    .with_encode_padding(false)
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
                    .with_decode_allow_trailing_bits(true)
            )
            .decode(&tampered[signing_input.len() + 1..])
            .expect("lenient"),
        );
        bad_because(&gw, &tampered, "token is not canonical base64url");
    }

    // Validly signed over a non-canonical or padded payload / header segment: the
    // signature verifies over those bytes, so only the encoding rule refuses them.
    let header_seg = b64(ED_HEADER);
    // A payload whose length is not a multiple of 3 has unused bits in its last char.
    let mut payload = p.clone();
    while payload.len() % 3 != 1 {
        payload.insert(payload.len() - 1, ' ');
    }
    let seg = b64(&payload);
    let last = *seg.as_bytes().last().expect("last");
    let v = ALPHABET.iter().position(|c| *c == last).expect("alphabet");
    let non_canonical = format!("{}{}", &seg[..seg.len() - 1], ALPHABET[v | 1] as char);
    let forged = k.sign_input(Alg::EdDSA, &format!("{header_seg}.{non_canonical}"));
    bad_because(&gw, &forged, "token is not canonical base64url");
    // The same payload canonically encoded is fine (control).
    good(
        &gw,
        &k.sign_input(Alg::EdDSA, &format!("{header_seg}.{seg}")),
    );
    // Padded payload ("==" for len % 3 == 1), signed as is.
    let padded = k.sign_input(Alg::EdDSA, &format!("{header_seg}.{seg}=="));
    bad(&gw, &padded);
    // Padded header.
    let mut header = ED_HEADER.to_owned();
    while header.len() % 3 == 0 {
        header.insert(1, ' ');
    }
    let hseg = b64(&header);
    let pad = "=".repeat((4 - hseg.len() % 4) % 4);
    let padded = k.sign_input(Alg::EdDSA, &format!("{hseg}{pad}.{}", b64(&p)));
    bad(&gw, &padded);
    good(
        &gw,
        &k.sign_input(Alg::EdDSA, &format!("{hseg}.{}", b64(&p))),
    );

    // The standard alphabet ('+' '/') instead of the URL-safe one, validly signed.
    let std_seg = (0..64)
        .map(|n| STANDARD_NO_PAD.encode(format!(r#"{{"pad":"{}",{}"#, "~".repeat(n), &p[1..])))
        .find(|s| s.contains('+') || s.contains('/'))
        .expect("a payload whose standard encoding has + or /");
    let forged = k.sign_input(Alg::EdDSA, &format!("{header_seg}.{std_seg}"));
    bad_because(&gw, &forged, "token is not canonical base64url");
}

#[test]
fn extra_missing_and_empty_segments() {
    let (gw, k) = start("", LIMITS_OFF);
    let token = k.ed_token(&claims("alice", "echo"));
    let parts: Vec<&str> = token.split('.').collect();
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    for t in [
        format!("{token}."),
        format!("{token}.{s}"),
        format!("{h}.{p}.{s}.."),
        format!(".{token}"),
        format!("{h}.{p}"),
        format!("{h}..{s}"),
        format!(".{p}.{s}"),
        format!("{h}.{p}."),
        format!("{h}{p}{s}"),
        "..".to_owned(),
        ".".to_owned(),
        "x".to_owned(),
        format!("{h}.{p} .{s}"),
    ] {
        bad(&gw, &t);
    }
    // Segments from different tokens do not combine.
    let other = k.ed_token(&claims("mallory", "echo admin"));
    let o: Vec<&str> = other.split('.').collect();
    bad_because(&gw, &format!("{h}.{}.{s}", o[1]), "invalid signature");
    good(&gw, &token);
}

#[test]
fn json_rules_duplicates_nesting_and_shape() {
    let (gw, k) = start("", LIMITS_OFF);
    let t = now();
    let exp = t + 600;
    // Duplicate claims, plain and disguised by an escape (names compare after unescaping).
    bad_because(
        &gw,
        &k.ed_raw(
            ED_HEADER,
            &format!(r#"{{"sub":"alice","exp":{exp},"sub":"root"}}"#),
        ),
        "duplicate claim",
    );
    bad_because(
        &gw,
        &k.ed_raw(
            ED_HEADER,
            &format!(r#"{{"sub":"alice","exp":{exp},"exp":{}}}"#, exp + 99999),
        ),
        "duplicate claim",
    );
    bad(
        &gw,
        &k.ed_raw(
            ED_HEADER,
            &format!(r#"{{"sub":"alice","exp":{exp},"s\u0075b":"root"}}"#),
        ),
    );
    bad(
        &gw,
        &k.ed_raw(
            ED_HEADER,
            &format!(r#"{{"sub":"alice","exp":{exp},"scope":"a","scope":"echo"}}"#),
        ),
    );
    // Duplicate header parameters, plain and escaped.
    let p = format!(r#"{{"sub":"alice","exp":{exp}}}"#);
    bad(
        &gw,
        &k.ed_raw(r#"{"alg":"EdDSA","kid":"ed","kid":"ed"}"#, &p),
    );
    bad(
        &gw,
        &k.ed_raw(r#"{"alg":"EdDSA","kid":"ed","k\u0069d":"hs"}"#, &p),
    );
    bad(
        &gw,
        &k.ed_raw(r#"{"alg":"EdDSA","alg":"EdDSA","kid":"ed"}"#, &p),
    );
    // An escaped but otherwise ordinary claim name is fine (control).
    good(
        &gw,
        &k.ed_raw(ED_HEADER, &format!(r#"{{"s\u0075b":"alice","exp":{exp}}}"#)),
    );
    good(&gw, &k.ed_raw(ED_HEADER, &p));

    // Deep nesting, in the payload and in the header.
    for depth in [40, 300] {
        let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        bad(
            &gw,
            &k.ed_raw(
                ED_HEADER,
                &format!(r#"{{"sub":"alice","exp":{exp},"x":{nested}}}"#),
            ),
        );
        let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        bad(
            &gw,
            &k.ed_raw(
                ED_HEADER,
                &format!(r#"{{"sub":"alice","exp":{exp},"x":{objects}}}"#),
            ),
        );
        bad(
            &gw,
            &k.ed_raw(&format!(r#"{{"alg":"EdDSA","kid":"ed","x":{nested}}}"#), &p),
        );
    }
    // Moderate nesting in an unknown claim is fine (control).
    good(
        &gw,
        &k.ed_raw(
            ED_HEADER,
            &format!(r#"{{"sub":"alice","exp":{exp},"x":[[[{{"a":[1]}}]]]}}"#),
        ),
    );

    // Not a single JSON object.
    for payload in [
        format!(r#"{{"sub":"alice","exp":{exp}}}{{"sub":"root"}}"#),
        format!(r#"{{"sub":"alice","exp":{exp}}} x"#),
        format!(r#"[{{"sub":"alice","exp":{exp}}}]"#),
        "\"alice\"".to_owned(),
        "null".to_owned(),
        format!(r#"{{"sub":"alice","exp":{exp},}}"#),
        format!("{{\"sub\":\"al\u{0}ice\",\"exp\":{exp}}}"),
        String::new(),
    ] {
        bad(&gw, &k.ed_raw(ED_HEADER, &payload));
    }
    bad(
        &gw,
        &k.sign_input(
            Alg::EdDSA,
            &format!("{}.{}", b64(ED_HEADER), b64([0xff, 0xfe, b'{', b'}'])),
        ),
    );
    for header in [
        "[\"EdDSA\"]",
        "\"EdDSA\"",
        r#"{"kid":"ed"}"#,
        r#"{"alg":"EdDSA","kid":"ed"}x"#,
    ] {
        bad(&gw, &k.ed_raw(header, &p));
    }
}

#[test]
fn oversized_tokens_are_refused_undecoded() {
    let (gw, k) = start("max_token_bytes = \"1KiB\"", LIMITS_OFF);
    let t = now();
    // Find a padding that makes the token exactly 1024 bytes (inclusive limit).
    let token_of = |pad: usize, header: &str| {
        k.ed_raw(
            header,
            &format!(
                r#"{{"sub":"alice","exp":{},"pad":"{}"}}"#,
                t + 600,
                "p".repeat(pad)
            ),
        )
    };
    let mut exact = None;
    'search: for header in [
        ED_HEADER,
        r#"{"alg":"EdDSA","typ":"JWT","kid":"ed" }"#,
        r#"{"alg":"EdDSA","typ":"JWT","kid":"ed"  }"#,
    ] {
        for pad in 600..800 {
            let tok = token_of(pad, header);
            if tok.len() == 1024 {
                exact = Some((pad, header));
                break 'search;
            }
        }
    }
    let (pad, header) = exact.expect("a 1024-byte token");
    good(&gw, &token_of(pad, header));
    // One byte over: find the next length > 1024.
    let over = (pad + 1..pad + 10)
        .map(|n| token_of(n, header))
        .find(|tok| tok.len() > 1024)
        .expect("longer token");
    bad_because(&gw, &over, "token too large");
    // Far over, through each source.
    let big = token_of(3000, header);
    bad_because(&gw, &big, "token too large");
    assert_eq!(
        invalid_token(&gw, &format!("/open?access_token={big}"), &[]),
        "malformed token"
    );
    assert_eq!(
        invalid_token(
            &gw,
            "/open",
            &[&format!("Sec-WebSocket-Protocol: bearer.{big}")]
        ),
        "malformed token"
    );
    // Percent-encoding a token under the limit does not make it too large (the limit is on
    // the decoded token).
    let exact_token = token_of(pad, header);
    let encoded = exact_token.replace('.', "%2E");
    accepted(&gw, &format!("/open?access_token={encoded}"), &[]);
}

#[test]
fn unknown_crit_and_b64_false() {
    let (gw, k) = start("", LIMITS_OFF);
    let p = claims("alice", "echo").to_string();
    for header in [
        r#"{"alg":"EdDSA","kid":"ed","crit":["x-custom"],"x-custom":1}"#,
        r#"{"alg":"EdDSA","kid":"ed","crit":["exp"],"exp":1}"#,
        r#"{"alg":"EdDSA","kid":"ed","crit":["b64"],"b64":true}"#,
    ] {
        bad_because(
            &gw,
            &k.ed_raw(header, &p),
            "unsupported critical header parameter",
        );
    }
    // Malformed crit.
    for header in [
        r#"{"alg":"EdDSA","kid":"ed","crit":[]}"#,
        r#"{"alg":"EdDSA","kid":"ed","crit":"x"}"#,
        r#"{"alg":"EdDSA","kid":"ed","crit":[1]}"#,
    ] {
        bad(&gw, &k.ed_raw(header, &p));
    }
    // RFC 7797 unencoded payload, with and without crit; also signed over the raw payload.
    for header in [
        r#"{"alg":"EdDSA","kid":"ed","b64":false,"crit":["b64"]}"#,
        r#"{"alg":"EdDSA","kid":"ed","b64":false}"#,
        r#"{"alg":"HS256","kid":"hs","b64":false}"#,
    ] {
        bad(&gw, &k.ed_raw(header, &p));
        bad(&gw, &k.hs_raw(header, &p));
        let unencoded = k.sign_input(Alg::EdDSA, &format!("{}.{p}", b64(header)));
        bad(&gw, &unencoded);
    }
    bad(
        &gw,
        &k.ed_raw(r#"{"alg":"EdDSA","kid":"ed","b64":"false"}"#, &p),
    );
    // A JWE header in a JWS.
    bad(
        &gw,
        &k.ed_raw(r#"{"alg":"EdDSA","kid":"ed","enc":"A256GCM"}"#, &p),
    );
    // Explicit typing (RFC 8725 §3.11): another kind of JWT is not an access token.
    for typ in ["secevent+jwt", "dpop+jwt", "JWS", "id_token"] {
        bad(
            &gw,
            &k.ed_raw(
                &format!(r#"{{"alg":"EdDSA","kid":"ed","typ":"{typ}"}}"#),
                &p,
            ),
        );
    }
    for typ in ["JWT", "jwt", "at+jwt", "application/at+jwt"] {
        good(
            &gw,
            &k.ed_raw(
                &format!(r#"{{"alg":"EdDSA","kid":"ed","typ":"{typ}"}}"#),
                &p,
            ),
        );
    }
    // b64: true is the ordinary encoding and is tolerated (control).
    good(
        &gw,
        &k.ed_raw(r#"{"alg":"EdDSA","kid":"ed","b64":true}"#, &p),
    );
}

#[test]
fn jku_x5u_jwk_x5c_are_never_followed() {
    let (gw, k) = start("", LIMITS_OFF);
    let trap = TcpListener::bind("127.0.0.1:0").expect("bind trap");
    trap.set_nonblocking(true).expect("nonblocking");
    let url = format!(
        "http://{}/.well-known/jwks.json",
        trap.local_addr().expect("addr")
    );
    let p = claims("alice", "echo").to_string();
    let attacker_dir = TempDir::new();
    let attacker = make_keys(&attacker_dir);
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&attacker.ed_public_raw)});
    let x5c = json!([STANDARD_NO_PAD.encode(&attacker.ed_public_der)]);
    for field in [
        format!(r#""jku":"{url}""#),
        format!(r#""x5u":"{url}""#),
        format!(r#""jwk":{jwk}"#),
        format!(r#""x5c":{x5c}"#),
        format!(r#""jku":"{url}","jwk":{jwk},"x5u":"{url}""#),
    ] {
        // Signed by the configured key: judged normally, i.e. accepted.
        let (r, s) = accepted(
            &gw,
            "/echo",
            &[&format!(
                "Authorization: Bearer {}",
                k.ed_raw(&format!(r#"{{"alg":"EdDSA","kid":"ed",{field}}}"#), &p)
            )],
        );
        assert_eq!(r.status, 101);
        close(s);
        // Signed by the key the header points at: refused.
        bad_because(
            &gw,
            &attacker.ed_raw(&format!(r#"{{"alg":"EdDSA","kid":"ed",{field}}}"#), &p),
            "invalid signature",
        );
        bad_because(
            &gw,
            &attacker.ed_raw(&format!(r#"{{"alg":"EdDSA",{field}}}"#), &p),
            "invalid signature",
        );
        bad_because(
            &gw,
            &attacker.ed_raw(
                &format!(r#"{{"alg":"EdDSA","kid":"attacker",{field}}}"#),
                &p,
            ),
            "unknown key id",
        );
    }
    // Every handshake above completed; give a fetch a moment to show up, then look.
    std::thread::sleep(Duration::from_millis(300));
    match trap.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("the gateway connected to the jku/x5u URL from {peer}"),
        Err(e) => panic!("accept: {e}"),
    }
}

#[test]
fn percent_encoded_query_tokens() {
    let (gw, k) = start("", LIMITS_OFF);
    let token = k.ed_token(&claims("alice", "echo"));
    // Every byte encoded; only the dots; lower-case hex.
    accepted(
        &gw,
        &format!("/echo?access_token={}", percent_encode_all(&token)),
        &[],
    );
    accepted(
        &gw,
        &format!("/echo?token={}", token.replace('.', "%2E")),
        &[],
    );
    accepted(
        &gw,
        &format!("/echo?token={}", token.replace('.', "%2e")),
        &[],
    );
    // A bad escape is a malformed token, not a crash or a pass.
    invalid_token(&gw, &format!("/echo?access_token={token}%zz"), &[]);
    invalid_token(&gw, &format!("/echo?access_token={token}%"), &[]);
    invalid_token(&gw, &format!("/echo?access_token={token}%4"), &[]);
    // Encoding does not smuggle a second segment separator or a NUL past the rules.
    invalid_token(&gw, &format!("/echo?access_token={token}%2E"), &[]);
    invalid_token(&gw, &format!("/echo?access_token={token}%00"), &[]);
    // '+' is not a space in a token.
    invalid_token(
        &gw,
        &format!("/echo?access_token={}", token.replacen('.', "+", 1)),
        &[],
    );
}
