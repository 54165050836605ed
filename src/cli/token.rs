//! `wsgate token mint` and `wsgate token inspect` (SPEC §2).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::hmac;
use ring::signature::Ed25519KeyPair;
use serde_json::Value;

use crate::auth::claims::{parse_claims, ScopeSet, MAX_CLAIMS};
use crate::auth::error::TokenError;
use crate::auth::jws::{self, NameSet, MAX_HEADER_MEMBERS};
use crate::auth::keys::{decode_secret_file, pem_decode, Alg, Key};
use crate::auth::verify::{Scratch, Verifier};

/// What `token mint` puts in a token.
#[derive(Debug, Clone, PartialEq)]
pub struct MintOptions {
    /// `--key`: a PKCS#8 Ed25519 private key PEM, or an HMAC `.secret` file.
    pub key_file: PathBuf,
    /// `--alg`: for a secret file, HS256 (default), HS384 or HS512.
    pub alg: Option<Alg>,
    /// `--kid`: put in the header.
    pub kid: Option<String>,
    /// `--sub`.
    pub sub: String,
    /// `--ttl` in seconds: `exp = now + ttl`.
    pub ttl_secs: u64,
    /// `--scope "a b"`.
    pub scope: Option<String>,
    /// `--aud`.
    pub aud: Option<String>,
    /// `--iss`.
    pub iss: Option<String>,
    /// `--jti`.
    pub jti: Option<String>,
    /// `--claim k=JSON`, in order.
    pub claims: Vec<(String, Value)>,
}

/// Signing material for `sign`.
pub enum SigningKey {
    /// An Ed25519 key pair.
    Ed25519(Ed25519KeyPair),
    /// HMAC secret bytes (the hash comes from the `alg` passed to `sign`).
    Hmac(Vec<u8>),
}

impl SigningKey {
    /// Loads a key file: a `PRIVATE KEY` PEM is Ed25519 (EdDSA); anything else is read as
    /// an HMAC secret (HS256 unless `alg`, or the file name, says HS384 / HS512).
    pub fn load(path: &Path, alg: Option<Alg>) -> Result<(Alg, SigningKey), String> {
        let at = |msg: &str| format!("{}: {msg}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| at(&e.to_string()))?;
        if text.contains("-----BEGIN PRIVATE KEY-----") {
            if let Some(other) = alg.filter(|a| *a != Alg::EdDSA) {
                return Err(at(&format!(
                    "an Ed25519 private key signs EdDSA tokens, not {other}"
                )));
            }
            let der = pem_decode(&text, "PRIVATE KEY").map_err(|e| at(&e.to_string()))?;
            // `maybe_unchecked` also reads PKCS#8 v1 files (openssl genpkey -algorithm ed25519).
            let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                .map_err(|_| at("not an Ed25519 PKCS#8 private key"))?;
            return Ok((Alg::EdDSA, SigningKey::Ed25519(pair)));
        }
        if text.contains("-----BEGIN PUBLIC KEY-----") {
            return Err(at(
                "is a public key; token mint needs the private key (PREFIX.key.pem) or a .secret file",
            ));
        }
        if text.contains("-----BEGIN ") {
            return Err(at(
                "unsupported PEM key: expected an Ed25519 PKCS#8 PRIVATE KEY",
            ));
        }
        let secret = decode_secret_file(&text).map_err(|e| at(&e.to_string()))?;
        // --alg, else the file name's hint, else the length `keygen` writes for each
        // algorithm (48 bytes: HS384, 64: HS512), else HS256.
        let alg = alg
            .or_else(|| alg_from_file_name(path))
            .unwrap_or(match secret.len() {
                48 => Alg::HS384,
                64 => Alg::HS512,
                _ => Alg::HS256,
            });
        if !alg.is_hmac() {
            return Err(at("is not a PEM private key; EdDSA needs PREFIX.key.pem"));
        }
        // The same length rule the gateway applies when it loads the key.
        Key::hmac(None, alg, &secret).map_err(|e| at(&e.to_string()))?;
        Ok((alg, SigningKey::Hmac(secret)))
    }
}

/// HS256 / HS384 / HS512 when the secret's file name says so.
fn alg_from_file_name(path: &Path) -> Option<Alg> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.contains("hs512") {
        Some(Alg::HS512)
    } else if name.contains("hs384") {
        Some(Alg::HS384)
    } else if name.contains("hs256") {
        Some(Alg::HS256)
    } else {
        None
    }
}

/// Signs `header_json` and `payload_json` (used verbatim) into a compact JWS with `alg`.
/// The header's own `alg` text is not looked at (tests use this to build hostile tokens).
pub fn sign(
    alg: Alg,
    key: &SigningKey,
    header_json: &str,
    payload_json: &str,
) -> Result<String, String> {
    let mut token = URL_SAFE_NO_PAD.encode(header_json);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(payload_json));
    let signature: Vec<u8> = match (alg.hmac_algorithm(), key) {
        (None, SigningKey::Ed25519(pair)) => pair.sign(token.as_bytes()).as_ref().to_vec(),
        (Some(hash), SigningKey::Hmac(secret)) => {
            hmac::sign(&hmac::Key::new(hash, secret), token.as_bytes())
                .as_ref()
                .to_vec()
        }
        _ => return Err(format!("{alg} cannot sign with this kind of key")),
    };
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(token)
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// Mints a token: header `{"alg","typ":"JWT","kid"}`, claims `sub`, `iat = now`,
/// `exp = now + ttl`, then `iss`, `aud`, `scope`, `jti` and every `--claim`, in order.
/// The result is checked against the gateway's own claims parser before it is returned.
pub fn mint(opts: &MintOptions, now_unix: u64) -> Result<String, String> {
    if opts.sub.is_empty() {
        return Err("--sub: must not be empty".into());
    }
    if opts.sub.chars().any(char::is_control) {
        return Err("--sub: must not contain control characters".into());
    }
    if opts.kid.as_deref() == Some("") {
        return Err("--kid: must not be empty".into());
    }
    if let Some(scope) = &opts.scope {
        let mut check = ScopeSet::with_capacity(scope.len());
        check.insert_all(scope).map_err(|_| {
            "--scope: scopes are space-separated printable ASCII without quotes or backslashes"
                .to_owned()
        })?;
    }
    let exp = now_unix
        .checked_add(opts.ttl_secs)
        .ok_or_else(|| "--ttl: too large".to_owned())?;
    let given = [
        ("iss", opts.iss.is_some(), "--iss"),
        ("aud", opts.aud.is_some(), "--aud"),
        ("scope", opts.scope.is_some(), "--scope"),
        ("jti", opts.jti.is_some(), "--jti"),
    ];
    for (i, (name, _)) in opts.claims.iter().enumerate() {
        if name.is_empty() {
            return Err("--claim: the claim name is empty (use --claim name=JSON)".into());
        }
        if matches!(name.as_str(), "sub" | "exp" | "iat") {
            return Err(format!(
                "--claim {name}: may not override sub, exp or iat (use --sub / --ttl)"
            ));
        }
        if let Some((_, _, flag)) = given.iter().find(|(n, set, _)| *set && n == name) {
            return Err(format!("--claim {name}: conflicts with {flag}"));
        }
        if opts
            .claims
            .get(..i)
            .unwrap_or_default()
            .iter()
            .any(|(n, _)| n == name)
        {
            return Err(format!("--claim {name}: given twice"));
        }
    }

    let (alg, key) = SigningKey::load(&opts.key_file, opts.alg)?;
    let mut header = format!("{{\"alg\":{},\"typ\":\"JWT\"", json_str(alg.name()));
    if let Some(kid) = &opts.kid {
        let _ = write!(header, ",\"kid\":{}", json_str(kid));
    }
    header.push('}');

    let mut payload = format!(
        "{{\"sub\":{},\"iat\":{now_unix},\"exp\":{exp}",
        json_str(&opts.sub)
    );
    for (name, value) in [
        ("iss", &opts.iss),
        ("aud", &opts.aud),
        ("scope", &opts.scope),
        ("jti", &opts.jti),
    ] {
        if let Some(v) = value {
            let _ = write!(payload, ",\"{name}\":{}", json_str(v));
        }
    }
    for (name, value) in &opts.claims {
        let _ = write!(payload, ",{}:{value}", json_str(name));
    }
    payload.push('}');

    // Never print a token that the gateway's own parser would refuse.
    let mut names = NameSet::with_capacity(payload.len(), MAX_CLAIMS);
    let mut scopes = ScopeSet::with_capacity(payload.len());
    parse_claims(payload.as_bytes(), None, &mut names, &mut scopes)
        .map_err(|e| format!("--claim: the resulting claims would be rejected: {e}"))?;

    sign(alg, &key, &header, &payload)
}

/// Unix seconds as RFC 3339 UTC (`2026-11-29T10:00:00Z`), by the civil-from-days algorithm.
pub fn rfc3339(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`, restricted to non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// A duration as `1d2h3m4s`, zero units left out (`0s` for zero).
pub fn human_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (n, unit) in [
        (secs / 86_400, "d"),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
    ] {
        if n > 0 {
            let _ = write!(out, "{n}{unit}");
        }
    }
    out
}

/// A time relative to now: "in 5m" / "3m20s ago" / "now".
fn relative(t: u64, now: u64) -> String {
    match t.cmp(&now) {
        std::cmp::Ordering::Greater => format!("in {}", human_duration(t - now)),
        std::cmp::Ordering::Less => format!("{} ago", human_duration(now - t)),
        std::cmp::Ordering::Equal => "now".into(),
    }
}

/// Untrusted text for a terminal: quoted, control characters escaped, long values cut.
fn shown(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", s.get(..cut).unwrap_or(""), s.len()),
        None => format!("{s:?}"),
    }
}

/// A JSON value for a terminal (JSON escapes control characters), long values cut.
fn shown_json(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!(
            "{}... ({} bytes)",
            text.get(..cut).unwrap_or(""),
            text.len()
        ),
        None => text,
    }
}

/// Lenient base64url decoding for display: padding and the standard alphabet accepted.
fn lenient_decode(segment: &str) -> Option<Vec<u8>> {
    let trimmed = segment.trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| STANDARD_NO_PAD.decode(trimmed))
        .ok()
}

/// Decoded JSON for display: pretty when it parses, else escaped text.
fn display_json(out: &mut String, bytes: &[u8]) {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => {
            let pretty = serde_json::to_string_pretty(&v).unwrap_or_default();
            for line in pretty.lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
        Err(_) => match std::str::from_utf8(bytes) {
            Ok(text) => {
                let _ = writeln!(out, "  (not JSON) {}", shown(text));
            }
            Err(_) => {
                let _ = writeln!(out, "  (not UTF-8: {} bytes)", bytes.len());
            }
        },
    }
}

/// One reason a token is refused: the rule (for de-duplication) and a precise sentence.
struct Finding {
    rule: TokenError,
    text: String,
}

/// Decodes `token` for display (even when invalid; the signature is never printed) and says
/// whether `verifier` accepts it at `now_unix`, listing every applicable reason when not.
/// Returns the report and whether the token is accepted. Revocations are not consulted.
pub fn inspect(token: &str, verifier: Option<&Verifier>, now_unix: u64) -> (String, bool) {
    let token = token.trim_ascii();
    let mut out = String::new();
    let segments: Vec<&str> = token.split('.').collect();
    let _ = writeln!(
        out,
        "token: {} bytes, {} segment(s)",
        token.len(),
        segments.len()
    );
    if let Some(header) = segments.first() {
        let _ = writeln!(out, "header:");
        match lenient_decode(header) {
            Some(bytes) => display_json(&mut out, &bytes),
            None => out.push_str("  (not base64url)\n"),
        }
    }
    if let Some(payload) = segments.get(1) {
        let _ = writeln!(out, "payload:");
        match lenient_decode(payload) {
            Some(bytes) => {
                display_json(&mut out, &bytes);
                if let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(&bytes) {
                    for name in ["iat", "nbf", "exp"] {
                        if let Some(t) = claims.get(name).and_then(Value::as_u64) {
                            let _ = writeln!(
                                out,
                                "  {name}: {} ({})",
                                rfc3339(t),
                                relative(t, now_unix)
                            );
                        }
                    }
                }
            }
            None => out.push_str("  (not base64url)\n"),
        }
    }
    if let Some(signature) = segments.get(2) {
        match lenient_decode(signature) {
            Some(bytes) => {
                let _ = writeln!(out, "signature: {} bytes (not shown)", bytes.len());
            }
            None => out.push_str("signature: (not base64url; not shown)\n"),
        }
    }
    let _ = writeln!(out, "now: {}", rfc3339(now_unix));

    let Some(verifier) = verifier else {
        out.push_str(
            "\nverdict: NOT CHECKED: no configuration given (pass -c wsgate.toml to check keys and rules)\n",
        );
        return (out, false);
    };

    let mut findings = diagnose(token.as_bytes(), verifier, now_unix, &mut out);
    let mut scratch = Scratch::new(verifier.rules.max_token_bytes);
    let accepted = match verifier.verify(token.as_bytes(), now_unix, &mut scratch) {
        Ok(claims) => {
            let scopes: Vec<&str> = claims.scopes().collect();
            let _ = writeln!(
                out,
                "\nverdict: ACCEPTED\n  sub: {}\n  scopes: {}\n  key: {} ({})\n  expires: {} ({})",
                shown(&claims.sub),
                if scopes.is_empty() {
                    "(none)".to_owned()
                } else {
                    scopes.join(" ")
                },
                claims.kid.map_or_else(|| "(no kid)".to_owned(), shown),
                claims.alg,
                rfc3339(claims.exp),
                relative(claims.exp, now_unix),
            );
            let _ = writeln!(out, "  (revocations are not checked by inspect)");
            true
        }
        Err(e) => {
            // The verifier is the authority; make sure its reason is listed.
            if !findings
                .iter()
                .any(|f| f.rule.reason_label() == e.reason_label())
            {
                findings.push(Finding {
                    rule: e,
                    text: e.to_string(),
                });
            }
            false
        }
    };
    if !accepted {
        let _ = writeln!(out, "\nverdict: REJECTED");
        for f in &findings {
            let _ = writeln!(out, "  - {}", f.text);
        }
        let mut scratch = Scratch::new(verifier.rules.max_token_bytes);
        if let Err(e) = verifier.verify(token.as_bytes(), now_unix, &mut scratch) {
            let _ = writeln!(
                out,
                "the gateway answers 401 invalid_token, error_description=\"{}\" (first rule broken: {})",
                e.description(),
                e
            );
        }
    }
    (out, accepted)
}

/// Every applicable reason the verifier would refuse `token`, going on past the first.
fn diagnose(token: &[u8], v: &Verifier, now: u64, out: &mut String) -> Vec<Finding> {
    let mut found = Vec::new();
    let mut add = |rule: TokenError, text: String| found.push(Finding { rule, text });
    let max = v.rules.max_token_bytes;
    if token.len() > max {
        add(
            TokenError::TooLarge,
            format!(
                "token is {} bytes, over auth.max_token_bytes ({max}); the gateway does not decode it",
                token.len()
            ),
        );
    }
    let segments = match jws::split(token) {
        Ok(s) => s,
        Err(e) => {
            add(e, format!("{}: a JWS has three non-empty segments", e));
            return found;
        }
    };

    // Canonical base64url, segment by segment; fall back to lenient decoding to go on.
    let mut decoded: [Vec<u8>; 3] = Default::default();
    for (slot, (name, seg)) in decoded.iter_mut().zip([
        ("header", segments.header),
        ("payload", segments.payload),
        ("signature", segments.signature),
    ]) {
        let strict = jws::decoded_len(seg.len()).and_then(|n| {
            let mut buf = vec![0; n];
            jws::decode_into(seg, &mut buf).map(|()| buf)
        });
        match strict {
            Ok(bytes) => *slot = bytes,
            Err(_) => {
                let why = if seg.contains(&b'=') {
                    "it has '=' padding"
                } else if seg.iter().any(|b| matches!(b, b'+' | b'/')) {
                    "it uses the standard alphabet ('+', '/')"
                } else if seg.len() % 4 == 1 {
                    "its length is impossible (1 mod 4)"
                } else if seg
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
                {
                    "its last character has non-zero unused bits (not canonical)"
                } else {
                    "it contains characters outside A-Z a-z 0-9 - _"
                };
                add(
                    TokenError::Base64,
                    format!("{name} segment is not canonical unpadded base64url: {why}"),
                );
                let text = std::str::from_utf8(seg).unwrap_or("");
                *slot = lenient_decode(text).unwrap_or_default();
            }
        }
    }
    let [header_bytes, payload_bytes, signature] = &decoded;

    // Header rules and key selection.
    let mut names = NameSet::with_capacity(
        header_bytes.len().max(payload_bytes.len()),
        MAX_CLAIMS.max(MAX_HEADER_MEMBERS),
    );
    let mut signature_ok = false;
    match jws::parse_header(header_bytes, &mut names) {
        Err(e) => add(e, format!("header: {e}")),
        Ok(header) => {
            let alg = header.alg.as_ref();
            if let Err(e) = header.check() {
                let text = match e {
                    TokenError::AlgNone => format!(
                        "alg is {}: unsigned tokens are never accepted",
                        shown(alg)
                    ),
                    TokenError::UnknownCrit => {
                        "crit lists extensions this gateway does not implement (it implements none)"
                            .to_owned()
                    }
                    TokenError::B64False => {
                        "b64 is false: unencoded payloads (RFC 7797) are not supported".to_owned()
                    }
                    TokenError::AlgNotAllowed => format!(
                        "alg {} is not supported (supported: EdDSA or Ed25519, HS256, HS384, HS512)",
                        shown(alg)
                    ),
                    other => other.to_string(),
                };
                add(e, text);
            }
            if Alg::from_header(alg).is_some() {
                let configured = configured_keys(v);
                match v.keys.select(header.kid.as_deref(), alg) {
                    Err(e) => {
                        let kid = header.kid.as_deref().unwrap_or("");
                        let text = match e {
                            TokenError::UnknownKid => format!(
                                "kid {} is not configured (configured: {configured})",
                                shown(kid)
                            ),
                            TokenError::AlgKeyMismatch => {
                                let key_alg = v
                                    .keys
                                    .iter()
                                    .find(|k| k.kid.as_deref() == Some(kid))
                                    .map_or("?", |k| k.alg.name());
                                format!(
                                    "kid {} is an {key_alg} key, but the token says alg {}",
                                    shown(kid),
                                    shown(alg)
                                )
                            }
                            TokenError::NoKeyForAlg => format!(
                                "the token has no kid and no configured key is {} (configured: {configured})",
                                shown(alg)
                            ),
                            TokenError::AmbiguousKey => format!(
                                "the token has no kid and several configured keys are {} (configured: {configured}); it must name one with kid",
                                shown(alg)
                            ),
                            other => other.to_string(),
                        };
                        add(e, text);
                    }
                    Ok(index) => {
                        if let Some(key) = v.keys.get(index) {
                            let label = format!("{} ({})", shown(key.display_kid()), key.alg);
                            if signature.len() != key.alg.signature_len() {
                                add(
                                    TokenError::BadSignature,
                                    format!(
                                        "signature is {} bytes; {} signatures are {}",
                                        signature.len(),
                                        key.alg,
                                        key.alg.signature_len()
                                    ),
                                );
                            } else if key.verify_signature(segments.signing_input, signature) {
                                signature_ok = true;
                                let _ = writeln!(out, "signature check: verifies with key {label}");
                            } else {
                                add(
                                    TokenError::BadSignature,
                                    format!("signature does not verify with key {label}"),
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    if !signature_ok {
        let _ = writeln!(
            out,
            "signature check: not verified (the claims shown are unauthenticated; checked for diagnosis only)"
        );
    }

    // Claims: the strict parser first (duplicates, types), then each rule on its own.
    let mut scopes = ScopeSet::with_capacity(payload_bytes.len());
    if let Err(e) = parse_claims(
        payload_bytes,
        v.rules.audience.as_deref(),
        &mut names,
        &mut scopes,
    ) {
        add(e, format!("claims: {e}"));
    }
    let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(payload_bytes) else {
        return found;
    };
    let leeway = v.rules.leeway_secs;
    let leeway_text = format!("leeway {}", human_duration(leeway));
    let number = |name: &str| claims.get(name).map(|v| v.as_f64().filter(|f| *f >= 0.0));
    match number("exp") {
        None => add(TokenError::MissingExp, "no exp claim (required)".into()),
        Some(None) => add(
            TokenError::BadClaimType("exp"),
            "exp is not a non-negative number".into(),
        ),
        Some(Some(exp)) => {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let exp = exp.floor() as u64;
            if now >= exp.saturating_add(leeway) {
                add(
                    TokenError::Expired,
                    format!(
                        "expired {} ago at {} ({leeway_text})",
                        human_duration(now - exp),
                        rfc3339(exp)
                    ),
                );
            }
        }
    }
    match claims.get("sub") {
        None => add(TokenError::MissingSub, "no sub claim (required)".into()),
        Some(Value::String(s)) if s.is_empty() => {
            add(TokenError::MissingSub, "sub is empty".into());
        }
        Some(Value::String(_)) => {}
        Some(_) => add(
            TokenError::BadClaimType("sub"),
            "sub is not a string".into(),
        ),
    }
    if let Some(Some(nbf)) = number("nbf") {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let nbf = nbf.ceil() as u64;
        if now.saturating_add(leeway) < nbf {
            add(
                TokenError::NotYetValid,
                format!(
                    "not valid before {} ({}; {leeway_text})",
                    rfc3339(nbf),
                    relative(nbf, now)
                ),
            );
        }
    }
    if let Some(Some(iat)) = number("iat") {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let iat = iat.floor() as u64;
        if iat > now.saturating_add(leeway) {
            add(
                TokenError::IssuedInFuture,
                format!(
                    "issued in the future at {} ({}; {leeway_text})",
                    rfc3339(iat),
                    relative(iat, now)
                ),
            );
        }
    }
    if let Some(issuer) = &v.rules.issuer {
        match claims.get("iss") {
            Some(Value::String(iss)) if iss == issuer => {}
            Some(Value::String(iss)) => add(
                TokenError::WrongIssuer,
                format!(
                    "iss {} is not the configured auth.issuer {}",
                    shown(iss),
                    shown(issuer)
                ),
            ),
            Some(_) => add(TokenError::WrongIssuer, "iss is not a string".into()),
            None => add(
                TokenError::WrongIssuer,
                format!("no iss claim; auth.issuer requires {}", shown(issuer)),
            ),
        }
    }
    if let Some(audience) = &v.rules.audience {
        let contains = match claims.get("aud") {
            Some(Value::String(a)) => Some(a == audience),
            Some(Value::Array(list)) => Some(list.iter().any(|a| a.as_str() == Some(audience))),
            Some(_) => Some(false),
            None => None,
        };
        match contains {
            Some(true) => {}
            Some(false) => add(
                TokenError::WrongAudience,
                format!(
                    "aud {} does not contain the configured auth.audience {}",
                    claims.get("aud").map_or_else(String::new, shown_json),
                    shown(audience)
                ),
            ),
            None => add(
                TokenError::WrongAudience,
                format!("no aud claim; auth.audience requires {}", shown(audience)),
            ),
        }
    }
    found
}

/// "a (EdDSA), b (HS256), (no kid) (HS512)" or "none".
fn configured_keys(v: &Verifier) -> String {
    let list: Vec<String> = v
        .keys
        .iter()
        .map(|k| format!("{} ({})", k.display_kid(), k.alg))
        .collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::KeySet;
    use crate::auth::verify::Rules;
    use crate::cli::keygen::keygen;
    use std::fs;

    const NOW: u64 = 1_798_536_000; // 2026-12-29T09:20:00Z
    const RFC8037_KEY: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/rfc8037-a1-ed25519.key.pem"
    );
    const RFC8037_PUB: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/rfc8037-a4-ed25519.pub.pem"
    );

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wsgate-token-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn opts(key_file: &Path) -> MintOptions {
        MintOptions {
            key_file: key_file.to_owned(),
            alg: None,
            kid: Some("ed-1".into()),
            sub: "alice".into(),
            ttl_secs: 900,
            scope: Some("echo chat".into()),
            aud: None,
            iss: None,
            jti: None,
            claims: Vec::new(),
        }
    }

    fn rfc8037_verifier(kid: Option<&str>) -> Verifier {
        let pem = fs::read_to_string(RFC8037_PUB).expect("pub pem");
        let der = pem_decode(&pem, "PUBLIC KEY").expect("der");
        Verifier {
            keys: KeySet::new(vec![
                Key::ed25519_spki_der(kid.map(Into::into), &der).expect("key")
            ])
            .expect("keyset"),
            rules: Rules {
                issuer: None,
                audience: None,
                leeway_secs: 30,
                max_token_bytes: 4096,
                max_lifetime_secs: u64::MAX,
            },
        }
    }

    #[test]
    fn rfc3339_by_hand() {
        for (t, want) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_300_819_380, "2011-03-22T18:43:00Z"),
            (1_709_164_800, "2024-02-29T00:00:00Z"),
            (NOW, "2026-12-29T09:20:00Z"),
            (4_102_444_800, "2100-01-01T00:00:00Z"),
            (253_402_300_799, "9999-12-31T23:59:59Z"),
        ] {
            assert_eq!(rfc3339(t), want, "{t}");
        }
        // Far future: no panic, no overflow.
        assert!(rfc3339(u64::MAX).ends_with('Z'));
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(30), "30s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(3600), "1h");
        assert_eq!(human_duration(90_061), "1d1h1m1s");
        assert_eq!(relative(NOW + 60, NOW), "in 1m");
        assert_eq!(relative(NOW - 200, NOW), "3m20s ago");
        assert_eq!(relative(NOW, NOW), "now");
    }

    #[test]
    fn mint_eddsa_with_the_rfc8037_key_is_deterministic_and_verifies() {
        let o = opts(Path::new(RFC8037_KEY));
        let token = mint(&o, NOW).expect("mint");
        assert_eq!(
            mint(&o, NOW).expect("mint"),
            token,
            "Ed25519 is deterministic"
        );
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = URL_SAFE_NO_PAD.decode(parts[0]).expect("header");
        assert_eq!(header, br#"{"alg":"EdDSA","typ":"JWT","kid":"ed-1"}"#);
        let payload = URL_SAFE_NO_PAD.decode(parts[1]).expect("payload");
        assert_eq!(
            String::from_utf8(payload).expect("utf8"),
            format!(
                r#"{{"sub":"alice","iat":{NOW},"exp":{},"scope":"echo chat"}}"#,
                NOW + 900
            )
        );
        let v = rfc8037_verifier(Some("ed-1"));
        let mut scratch = Scratch::new(4096);
        let c = v
            .verify(token.as_bytes(), NOW + 10, &mut scratch)
            .expect("valid");
        assert_eq!(c.sub, "alice");
        assert_eq!(c.exp, NOW + 900);
        assert!(c.has_scope("echo") && c.has_scope("chat"));
        // The committed vector is exactly this mint with a far-future lifetime.
        let vector = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/wsgate-eddsa-valid.jwt"
        ))
        .trim();
        let far = MintOptions {
            ttl_secs: 4_102_444_800 - NOW,
            jti: Some("vector-1".into()),
            aud: Some("wsgate".into()),
            iss: Some("https://id.example.com".into()),
            claims: vec![("scp".into(), serde_json::json!(["admin"]))],
            ..o
        };
        assert_eq!(mint(&far, NOW).expect("mint"), vector);
        let mut scratch = Scratch::new(4096);
        let c = v
            .verify(vector.as_bytes(), NOW, &mut scratch)
            .expect("vector valid");
        assert_eq!(c.scopes().collect::<Vec<_>>(), ["echo", "chat", "admin"]);
        let twin = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/wsgate-eddsa-valid.tampered-payload.jwt"
        ))
        .trim();
        let mut scratch = Scratch::new(4096);
        assert_eq!(
            v.verify(twin.as_bytes(), NOW, &mut scratch).err(),
            Some(TokenError::BadSignature)
        );
    }

    #[test]
    fn mint_with_generated_keys() {
        let dir = temp_dir("gen");
        let ed = keygen(Alg::EdDSA, &dir.join("ed")).expect("keygen");
        let token = mint(&opts(&ed[0]), NOW).expect("mint ed");
        let der = pem_decode(&fs::read_to_string(&ed[1]).expect("pub"), "PUBLIC KEY").expect("der");
        let v = Verifier {
            keys: KeySet::new(vec![
                Key::ed25519_spki_der(Some("ed-1".into()), &der).expect("key")
            ])
            .expect("keyset"),
            rules: rfc8037_verifier(None).rules,
        };
        let mut scratch = Scratch::new(4096);
        assert!(v.verify(token.as_bytes(), NOW, &mut scratch).is_ok());

        for (alg, hint, explicit) in [
            (Alg::HS256, "plain", None),
            (Alg::HS384, "legacy-hs384", None),
            (Alg::HS512, "k", Some(Alg::HS512)),
        ] {
            let paths = keygen(alg, &dir.join(hint)).expect("keygen");
            let o = MintOptions {
                alg: explicit,
                kid: None,
                ..opts(&paths[0])
            };
            let token = mint(&o, NOW).expect("mint hs");
            let secret = decode_secret_file(&fs::read_to_string(&paths[0]).expect("secret"))
                .expect("decode");
            let v = Verifier {
                keys: KeySet::new(vec![Key::hmac(None, alg, &secret).expect("key")]).expect("set"),
                rules: rfc8037_verifier(None).rules,
            };
            let mut scratch = Scratch::new(4096);
            let c = v
                .verify(token.as_bytes(), NOW, &mut scratch)
                .expect("valid");
            assert_eq!(c.alg, alg);
            assert_eq!(c.kid, None);
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn mint_refuses_bad_options() {
        let key = Path::new(RFC8037_KEY);
        let cases: Vec<(MintOptions, &str)> = vec![
            (
                MintOptions {
                    claims: vec![("sub".into(), Value::from("root"))],
                    ..opts(key)
                },
                "--claim sub: may not override",
            ),
            (
                MintOptions {
                    claims: vec![("exp".into(), Value::from(1))],
                    ..opts(key)
                },
                "--claim exp",
            ),
            (
                MintOptions {
                    claims: vec![("iat".into(), Value::from(1))],
                    ..opts(key)
                },
                "--claim iat",
            ),
            (
                MintOptions {
                    claims: vec![("scope".into(), Value::from("admin"))],
                    ..opts(key)
                },
                "conflicts with --scope",
            ),
            (
                MintOptions {
                    claims: vec![("x".into(), Value::from(1)), ("x".into(), Value::from(2))],
                    ..opts(key)
                },
                "given twice",
            ),
            (
                MintOptions {
                    claims: vec![("nbf".into(), Value::from("soon"))],
                    ..opts(key)
                },
                "would be rejected",
            ),
            (
                MintOptions {
                    claims: vec![("scp".into(), Value::from("a b"))],
                    ..opts(key)
                },
                "would be rejected",
            ),
            (
                MintOptions {
                    sub: String::new(),
                    ..opts(key)
                },
                "--sub",
            ),
            (
                MintOptions {
                    kid: Some(String::new()),
                    ..opts(key)
                },
                "--kid",
            ),
            (
                MintOptions {
                    scope: Some("a \"b\"".into()),
                    ..opts(key)
                },
                "--scope",
            ),
            (
                MintOptions {
                    ttl_secs: u64::MAX,
                    ..opts(key)
                },
                "--ttl",
            ),
            (
                MintOptions {
                    alg: Some(Alg::HS256),
                    ..opts(key)
                },
                "rfc8037-a1-ed25519.key.pem: an Ed25519 private key signs EdDSA",
            ),
            (
                opts(Path::new(RFC8037_PUB)),
                "rfc8037-a4-ed25519.pub.pem: is a public key",
            ),
            (
                opts(Path::new("/nonexistent/k.secret")),
                "/nonexistent/k.secret: ",
            ),
        ];
        for (o, want) in cases {
            let e = mint(&o, NOW).expect_err(want);
            assert!(e.contains(want), "{e:?} should contain {want:?}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
        // A short secret is refused with the gateway's own rule.
        let dir = temp_dir("short");
        let short = dir.join("short.secret");
        fs::write(&short, "c2hvcnQ\n").expect("write");
        let e = mint(&opts(&short), NOW).expect_err("short");
        assert!(
            e.contains("short.secret") && e.contains("at least 32"),
            "{e}"
        );
        let e = mint(
            &MintOptions {
                alg: Some(Alg::EdDSA),
                ..opts(&short)
            },
            NOW,
        )
        .expect_err("eddsa secret");
        assert!(e.contains("short.secret"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn sign_refuses_mismatched_key_kinds() {
        let key = SigningKey::Hmac(vec![1; 32]);
        assert!(sign(Alg::EdDSA, &key, "{}", "{}").is_err());
        assert!(sign(Alg::HS384, &key, "{}", "{}").is_ok());
    }

    #[test]
    fn inspect_accepted() {
        let token = mint(&opts(Path::new(RFC8037_KEY)), NOW).expect("mint");
        let v = rfc8037_verifier(Some("ed-1"));
        let (report, ok) = inspect(&format!(" {token}\n"), Some(&v), NOW + 100);
        assert!(ok, "{report}");
        assert!(report.contains("verdict: ACCEPTED"), "{report}");
        assert!(report.contains("sub: \"alice\""), "{report}");
        assert!(report.contains("scopes: echo chat"), "{report}");
        assert!(
            report.contains("expires: 2026-12-29T09:35:00Z (in 13m20s)"),
            "{report}"
        );
        assert!(report.contains("\"alg\": \"EdDSA\""), "{report}");
        let signature = token.rsplit('.').next().expect("sig");
        assert!(!report.contains(signature), "signature printed");
    }

    #[test]
    fn inspect_lists_every_reason() {
        let token = mint(
            &MintOptions {
                kid: Some("x".into()),
                ttl_secs: 100,
                ..opts(Path::new(RFC8037_KEY))
            },
            NOW - 300,
        )
        .expect("mint");
        let keys = KeySet::new(vec![
            Key::hmac(Some("a".into()), Alg::HS256, &[1; 32]).expect("a"),
            Key::hmac(Some("b".into()), Alg::HS256, &[2; 32]).expect("b"),
        ])
        .expect("set");
        let v = Verifier {
            keys,
            rules: Rules {
                issuer: Some("https://id".into()),
                audience: Some("wsgate".into()),
                ..rfc8037_verifier(None).rules
            },
        };
        let (report, ok) = inspect(&token, Some(&v), NOW);
        assert!(!ok);
        for want in [
            "verdict: REJECTED",
            "kid \"x\" is not configured (configured: a (HS256), b (HS256))",
            "expired 3m20s ago at 2026-12-29T09:16:40Z (leeway 30s)",
            "no iss claim; auth.issuer requires \"https://id\"",
            "no aud claim; auth.audience requires \"wsgate\"",
            "error_description=\"invalid signature\" (first rule broken: unknown key id)",
        ] {
            assert!(report.contains(want), "missing {want:?} in\n{report}");
        }
        let signature = token.rsplit('.').next().expect("sig");
        assert!(!report.contains(signature));
    }

    #[test]
    fn inspect_structural_problems_and_no_config() {
        let v = rfc8037_verifier(None);
        let good = mint(&opts(Path::new(RFC8037_KEY)), NOW).expect("mint");
        let (report, ok) = inspect(&good, None, NOW);
        assert!(!ok);
        assert!(report.contains("NOT CHECKED"), "{report}");
        let (report, ok) = inspect(&format!("{good}="), Some(&v), NOW);
        assert!(!ok);
        assert!(
            report.contains(
                "signature segment is not canonical unpadded base64url: it has '=' padding"
            ),
            "{report}"
        );
        let (report, ok) = inspect("a.b", Some(&v), NOW);
        assert!(
            !ok && report.contains("three non-empty segments"),
            "{report}"
        );
        let none = format!(
            "{}.{}.AAAA",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            good.split('.').nth(1).expect("p")
        );
        let (report, ok) = inspect(&none, Some(&v), NOW);
        assert!(
            !ok && report.contains("unsigned tokens are never accepted"),
            "{report}"
        );
        let rs = format!(
            "{}.{}.AAAA",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
            good.split('.').nth(1).expect("p")
        );
        let (report, _) = inspect(&rs, Some(&v), NOW);
        assert!(
            report.contains("alg \"RS256\" is not supported"),
            "{report}"
        );
        let hostile = format!(
            "{}.{}.AAAA",
            URL_SAFE_NO_PAD.encode("{\"alg\":\"HS256\",\"kid\":\"\\u001b[31mred\"}"),
            URL_SAFE_NO_PAD.encode("\u{1b}[2J")
        );
        let (report, _) = inspect(&hostile, Some(&v), NOW);
        assert!(
            !report.contains('\u{1b}'),
            "terminal escapes must be neutralised: {report}"
        );
        // Garbage never panics.
        for junk in [
            "",
            ".",
            "..",
            "....",
            "\u{0}",
            "éé.éé.éé",
            &"A".repeat(10_000),
        ] {
            let (_, ok) = inspect(junk, Some(&v), NOW);
            assert!(!ok);
        }
    }
}
