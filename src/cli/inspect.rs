//! `wsgate token inspect` (SPEC §2): what a token says, and why this gateway would accept
//! or refuse it.

use std::fmt::Write as _;

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::Value;

use super::token::{human_duration, relative, rfc3339};
use crate::auth::claims::{parse_claims, ScopeSet, MAX_CLAIMS};
use crate::auth::error::TokenError;
use crate::auth::jws::{self, NameSet, MAX_HEADER_MEMBERS};
use crate::auth::keys::{Alg, Key};
use crate::auth::verify::{Scratch, Verifier};

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
                        "alg {} is not supported (supported: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA or Ed25519, HS256, HS384, HS512)",
                        shown(alg)
                    ),
                    other => other.to_string(),
                };
                add(e, text);
            }
            if Alg::from_header(alg).is_some() {
                // SPEC §9: a provider's token is verified by its keys only.
                let provider = crate::auth::claims::peek_issuer(payload_bytes)
                    .and_then(|iss| v.keys.provider(&iss));
                let keys: Vec<&Key> = match provider {
                    Some(p) => {
                        let _ = writeln!(
                            out,
                            "issuer: {} is an [[auth.provider]]; only its keys verify this token ({} usable key(s) loaded)",
                            shown(&p.issuer),
                            p.keys().len()
                        );
                        p.keys().iter().collect()
                    }
                    None => v.keys.iter().collect(),
                };
                let configured = if provider.is_some() {
                    let list: Vec<String> = keys
                        .iter()
                        .map(|k| format!("{} ({})", k.display_kid(), k.alg))
                        .collect();
                    if list.is_empty() {
                        "none".into()
                    } else {
                        list.join(", ")
                    }
                } else {
                    configured_keys(v)
                };
                let selected = match provider {
                    Some(p) => p.select(header.kid.as_deref(), alg),
                    None => v
                        .keys
                        .select(header.kid.as_deref(), alg)
                        .and_then(|i| v.keys.get(i).ok_or(TokenError::UnknownKid)),
                };
                match selected {
                    Err(e) => {
                        let kid = header.kid.as_deref().unwrap_or("");
                        let text = match e {
                            TokenError::UnknownKid => format!(
                                "kid {} is not configured (configured: {configured})",
                                shown(kid)
                            ),
                            TokenError::AlgKeyMismatch => {
                                let key_alg = keys
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
                            TokenError::AlgNotAllowed => format!(
                                "alg {} is not in this provider's algorithms",
                                shown(alg)
                            ),
                            other => other.to_string(),
                        };
                        add(e, text);
                    }
                    Ok(key) => {
                        let label = format!("{} ({})", shown(key.display_kid()), key.alg);
                        if signature.len() != key.signature_len() {
                            add(
                                TokenError::BadSignature,
                                format!(
                                    "signature is {} bytes; {} signatures are {}",
                                    signature.len(),
                                    key.alg,
                                    key.signature_len()
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
    if !signature_ok {
        let _ = writeln!(
            out,
            "signature check: not verified (the claims shown are unauthenticated; checked for diagnosis only)"
        );
    }

    // Claims: the strict parser first (duplicates, types), then each rule on its own.
    // A provider's tokens carry its issuer, and its audience overrides auth.audience.
    let (issuer_rule, audience_rule) = match crate::auth::claims::peek_issuer(payload_bytes)
        .and_then(|iss| v.keys.provider(&iss))
    {
        Some(p) => (
            Some(p.issuer.clone()),
            p.audience.clone().or_else(|| v.rules.audience.clone()),
        ),
        None => (v.rules.issuer.clone(), v.rules.audience.clone()),
    };
    let mut scopes = ScopeSet::with_capacity(payload_bytes.len());
    if let Err(e) = parse_claims(
        payload_bytes,
        audience_rule.as_deref(),
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
    if let Some(issuer) = &issuer_rule {
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
    if let Some(audience) = &audience_rule {
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
