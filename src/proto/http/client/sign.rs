//! RFC 9421 HTTP Message Signatures on the upstream upgrade request (SPEC §5
//! `sign_identity`): the gateway signs the derived components and the identity headers it
//! wrote with its Ed25519 key, so that an upstream reachable by another path can tell the
//! gateway's requests from forged ones.
//!
//! Covered, in this order: `@method`, `@authority`, `@path`, `@query`, then those of
//! `x-auth-subject`, `x-auth-scope`, `x-auth-claims` that the request carries; parameters
//! `created`, `expires` (= created + [`VALIDITY_SECS`]), `nonce`, `alg="ed25519"`, `keyid`
//! (the RFC 7638 thumbprint of the public key, also the `kid` of the served JWK). The
//! label is [`LABEL`].

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _};

use super::name_is;

/// The signature's label in `Signature-Input` and `Signature` (RFC 9421 §4).
pub const LABEL: &str = "wsgate";

/// How long a signature is valid after `created`.
pub const VALIDITY_SECS: u64 = 60;

/// The identity headers covered when present, in signing order.
const IDENTITY_HEADERS: [&str; 3] = ["x-auth-subject", "x-auth-scope", "x-auth-claims"];

/// Why a request could not be signed (never for a request `write_upstream_request` wrote).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignError {
    /// The bytes are not one complete HTTP/1.1 request head.
    NotARequest,
    /// No `Host` header (RFC 9421 §2.2.3 needs the authority).
    NoAuthority,
}

/// The gateway's identity key: signs requests, and describes itself as a JWK.
pub struct IdentitySigner {
    key: Ed25519KeyPair,
    keyid: String,
}

impl std::fmt::Debug for IdentitySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentitySigner({})", self.keyid)
    }
}

impl IdentitySigner {
    /// From an Ed25519 private key in PKCS#8 (v1 as OpenSSL writes it, or v2).
    pub fn from_pkcs8(der: &[u8]) -> Result<IdentitySigner, String> {
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| format!("not an Ed25519 PKCS#8 key: {e}"))?;
        let x = URL_SAFE_NO_PAD.encode(key.public_key().as_ref());
        // RFC 7638 §3.2: the required members, lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
        Ok(IdentitySigner {
            key,
            keyid: URL_SAFE_NO_PAD.encode(digest.as_ref()),
        })
    }

    /// The `keyid` parameter: the key's RFC 7638 JWK thumbprint.
    pub fn keyid(&self) -> &str {
        &self.keyid
    }

    /// The public key as a JWK (RFC 8037 §2), served at `/.well-known/identity-key.jwk`.
    pub fn jwk(&self) -> String {
        format!(
            r#"{{"kty":"OKP","crv":"Ed25519","x":"{}","kid":"{}","alg":"EdDSA","use":"sig"}}"#,
            URL_SAFE_NO_PAD.encode(self.key.public_key().as_ref()),
            self.keyid
        )
    }

    /// Signs the request head in `request` (complete, ending in an empty line): any
    /// `Signature` / `Signature-Input` already there (a client's) is removed, then both are
    /// added for [`LABEL`]. `nonce` must be unique per request (base64url of random bytes).
    pub fn sign_request(
        &self,
        request: &mut Vec<u8>,
        created: u64,
        nonce: &str,
    ) -> Result<(), SignError> {
        strip_signature_headers(request)?;
        let (base, params) = signature_base(request, created, nonce, &self.keyid)?;
        let signature = STANDARD.encode(self.key.sign(&base).as_ref());
        // Drop the final empty line, append the two fields, end the head again.
        request.truncate(request.len() - 2);
        for piece in [
            "Signature-Input: ",
            LABEL,
            "=",
            &params,
            "\r\nSignature: ",
            LABEL,
            "=:",
            &signature,
            ":\r\n\r\n",
        ] {
            request.extend_from_slice(piece.as_bytes());
        }
        Ok(())
    }
}

/// Removes every `Signature` and `Signature-Input` field (any case, `_` for `-`) from a
/// complete request head.
fn strip_signature_headers(request: &mut Vec<u8>) -> Result<(), SignError> {
    if !request.ends_with(b"\r\n\r\n") {
        return Err(SignError::NotARequest);
    }
    let mut out = Vec::with_capacity(request.len());
    for (index, line) in request[..request.len() - 2]
        .split_inclusive(|&b| b == b'\n')
        .enumerate()
    {
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        let drop = index > 0 && (name_is(name, "signature") || name_is(name, "signature-input"));
        if !drop {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    *request = out;
    Ok(())
}

/// RFC 9421 §2.5: the signature base of `request` (a complete head) and the
/// `@signature-params` value (the `Signature-Input` member's value).
pub fn signature_base(
    request: &[u8],
    created: u64,
    nonce: &str,
    keyid: &str,
) -> Result<(Vec<u8>, String), SignError> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(request) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(SignError::NotARequest),
    }
    let (Some(method), Some(target)) = (parsed.method, parsed.path) else {
        return Err(SignError::NotARequest);
    };
    // RFC 9421 §2.2.6 / §2.2.7: the path, and the query with its leading `?` (a lone `?`
    // when there is none).
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, format!("?{query}")),
        None => (target, "?".to_owned()),
    };
    // §2.2.3: the authority, lowercased (the Host the gateway wrote).
    let authority = field_value(parsed.headers, "host")
        .ok_or(SignError::NoAuthority)?
        .to_ascii_lowercase();
    let mut base = Vec::with_capacity(256);
    let mut covered = String::from(r#"("@method" "@authority" "@path" "@query""#);
    for (name, value) in [
        ("@method", method.as_bytes()),
        ("@authority", &authority[..]),
        ("@path", path.as_bytes()),
        ("@query", query.as_bytes()),
    ] {
        push_line(&mut base, name, value);
    }
    for name in IDENTITY_HEADERS {
        if let Some(value) = field_value(parsed.headers, name) {
            push_line(&mut base, name, &value);
            covered.push_str(" \"");
            covered.push_str(name);
            covered.push('"');
        }
    }
    covered.push(')');
    let params = format!(
        r#"{covered};created={created};expires={};nonce="{nonce}";alg="ed25519";keyid="{keyid}""#,
        created.saturating_add(VALIDITY_SECS)
    );
    // §2.5: the last line is `"@signature-params": ` and the value, with no newline after.
    base.extend_from_slice(b"\"@signature-params\": ");
    base.extend_from_slice(params.as_bytes());
    Ok((base, params))
}

/// `"<name>": <value>\n` (RFC 9421 §2.5 step 2).
fn push_line(base: &mut Vec<u8>, name: &str, value: &[u8]) {
    base.push(b'"');
    base.extend_from_slice(name.as_bytes());
    base.extend_from_slice(b"\": ");
    base.extend_from_slice(value);
    base.push(b'\n');
}

/// RFC 9421 §2.1: the field's values, each trimmed of surrounding whitespace, joined with
/// `", "`; `None` when the field is absent.
fn field_value(headers: &[httparse::Header<'_>], name: &str) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)) {
        let value = h.value.trim_ascii();
        match &mut out {
            None => out = Some(value.to_vec()),
            Some(v) => {
                v.extend_from_slice(b", ");
                v.extend_from_slice(value);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, ED25519};

    /// A fixed test key (PKCS#8 v2 from ring).
    fn signer() -> IdentitySigner {
        let rng = ring::rand::SystemRandom::new();
        let der = Ed25519KeyPair::generate_pkcs8(&rng).expect("generate");
        IdentitySigner::from_pkcs8(der.as_ref()).expect("key")
    }

    const REQUEST: &str = "GET /chat?room=1&x=%20 HTTP/1.1\r\n\
        Host: Up.Example:9000\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Signature: forged=:AAAA:\r\n\
        signature_input: forged=()\r\n\
        X-Auth-Subject: alice\r\n\
        X-Auth-Scope:  chat read \r\n\
        \r\n";

    #[test]
    fn signature_base_follows_rfc9421_section_2_5() {
        let (base, params) =
            signature_base(REQUEST.as_bytes(), 1_700_000_000, "bm9uY2U", "kid-1").expect("base");
        let expected_params = r#"("@method" "@authority" "@path" "@query" "x-auth-subject" "x-auth-scope");created=1700000000;expires=1700000060;nonce="bm9uY2U";alg="ed25519";keyid="kid-1""#;
        assert_eq!(params, expected_params);
        let expected = format!(
            "\"@method\": GET\n\
             \"@authority\": up.example:9000\n\
             \"@path\": /chat\n\
             \"@query\": ?room=1&x=%20\n\
             \"x-auth-subject\": alice\n\
             \"x-auth-scope\": chat read\n\
             \"@signature-params\": {expected_params}"
        );
        assert_eq!(String::from_utf8(base).expect("utf8"), expected);
    }

    #[test]
    fn no_query_is_a_lone_question_mark_and_claims_are_covered_when_sent() {
        let request = "GET /feed HTTP/1.1\r\nHost: h\r\nX-Auth-Subject: s\r\nX-Auth-Scope: \r\nX-Auth-Claims: e30\r\n\r\n";
        let (base, params) = signature_base(request.as_bytes(), 5, "n", "k").expect("base");
        let base = String::from_utf8(base).expect("utf8");
        assert!(base.contains("\"@query\": ?\n"), "{base}");
        assert!(base.contains("\"x-auth-scope\": \n"), "{base}");
        assert!(base.contains("\"x-auth-claims\": e30\n"), "{base}");
        assert!(params.starts_with(
            r#"("@method" "@authority" "@path" "@query" "x-auth-subject" "x-auth-scope" "x-auth-claims");"#
        ));
    }

    #[test]
    fn signed_request_verifies_with_the_public_key_and_client_signatures_are_gone() {
        let signer = signer();
        let mut request = REQUEST.as_bytes().to_vec();
        signer
            .sign_request(&mut request, 1_700_000_000, "bm9uY2U")
            .expect("sign");
        let text = String::from_utf8(request.clone()).expect("utf8");
        assert!(!text.contains("forged"), "{text}");
        assert!(text.ends_with("\r\n\r\n"));
        let input = text
            .lines()
            .find_map(|l| l.strip_prefix("Signature-Input: wsgate="))
            .expect("Signature-Input");
        let sig = text
            .lines()
            .find_map(|l| l.strip_prefix("Signature: wsgate=:"))
            .and_then(|v| v.strip_suffix(':'))
            .map(|v| STANDARD.decode(v).expect("base64"))
            .expect("Signature");
        // The verifier's side: the base rebuilt from what arrived, minus the signature
        // fields themselves (they are not covered).
        let (base, params) =
            signature_base(&request, 1_700_000_000, "bm9uY2U", signer.keyid()).expect("base");
        assert_eq!(params, input);
        let jwk: serde_json::Value = serde_json::from_str(&signer.jwk()).expect("jwk");
        let x = URL_SAFE_NO_PAD
            .decode(jwk["x"].as_str().expect("x"))
            .expect("x");
        assert_eq!(jwk["kid"], signer.keyid());
        UnparsedPublicKey::new(&ED25519, &x)
            .verify(&base, &sig)
            .expect("signature verifies");
        // One byte of a covered component changed: it no longer verifies.
        let tampered = String::from_utf8(base)
            .expect("utf8")
            .replace("alice", "alicf");
        assert!(UnparsedPublicKey::new(&ED25519, &x)
            .verify(tampered.as_bytes(), &sig)
            .is_err());
    }

    #[test]
    fn keyid_is_the_rfc7638_thumbprint() {
        // RFC 8037 appendix A.3: the thumbprint of its example Ed25519 key.
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
        assert_eq!(
            URL_SAFE_NO_PAD.encode(digest.as_ref()),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
        // RFC 8037 A.1's private key d with that x, wrapped as PKCS#8 v1 (RFC 8410 §7).
        let d = URL_SAFE_NO_PAD
            .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .expect("d");
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&d);
        let signer = IdentitySigner::from_pkcs8(&der).expect("key");
        assert_eq!(
            signer.keyid(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn not_a_request_is_refused() {
        assert_eq!(
            signature_base(b"GET / HTTP/1.1\r\n", 0, "n", "k"),
            Err(SignError::NotARequest)
        );
        assert_eq!(
            signature_base(b"GET / HTTP/1.1\r\n\r\n", 0, "n", "k"),
            Err(SignError::NoAuthority)
        );
        let mut partial = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        assert_eq!(
            signer().sign_request(&mut partial, 0, "n"),
            Err(SignError::NotARequest)
        );
    }
}
