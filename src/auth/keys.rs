//! Configured verification keys, the one algorithm each allows, and key selection
//! (SPEC §4 "Key selection"; RFC 8725 §3.1: the algorithm comes from the key, never the token).

use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use ring::{hmac, signature};

use super::error::TokenError;

/// The fixed DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410 §4): SEQUENCE {
/// SEQUENCE { OID 1.3.101.112 }, BIT STRING (0 unused bits) }, followed by the 32-byte key.
pub const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The smallest HMAC secret accepted for any HS* key (RFC 7518 §3.2: at least the hash size;
/// SPEC §2: at least 32 bytes).
pub const MIN_SECRET_BYTES: usize = 32;

/// A signature algorithm a key is configured for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum Alg {
    /// Ed25519 (RFC 8037 `EdDSA`, RFC 9864 `Ed25519`).
    EdDSA,
    /// HMAC with SHA-256 (RFC 7518 §3.2).
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
}

impl Alg {
    /// Every algorithm, in config-name order.
    pub const ALL: [Alg; 4] = [Alg::EdDSA, Alg::HS256, Alg::HS384, Alg::HS512];

    /// The configuration (and JOSE) name.
    pub fn name(&self) -> &'static str {
        match self {
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
        }
    }

    /// Parses `auth.key.alg` (exact, case-sensitive).
    pub fn from_config_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The algorithm a header `alg` names, if we implement it (exact, case-sensitive;
    /// RFC 7515 §4.1.1: `alg` values are case-sensitive). `Ed25519` is RFC 9864's
    /// fully-specified name for `EdDSA` with Ed25519.
    pub fn from_header(alg: &str) -> Option<Alg> {
        match alg {
            "EdDSA" | "Ed25519" => Some(Alg::EdDSA),
            "HS256" => Some(Alg::HS256),
            "HS384" => Some(Alg::HS384),
            "HS512" => Some(Alg::HS512),
            _ => None,
        }
    }

    /// Does the header `alg` text name this algorithm?
    pub fn accepts_header(&self, alg: &str) -> bool {
        Alg::from_header(alg) == Some(*self)
    }

    /// The exact length of this algorithm's signature in bytes.
    pub fn signature_len(&self) -> usize {
        match self {
            Alg::EdDSA => 64,
            Alg::HS256 => 32,
            Alg::HS384 => 48,
            Alg::HS512 => 64,
        }
    }

    /// True for the HMAC algorithms.
    pub fn is_hmac(&self) -> bool {
        self.hmac_algorithm().is_some()
    }

    /// The ring HMAC algorithm, for HS*.
    pub fn hmac_algorithm(&self) -> Option<hmac::Algorithm> {
        match self {
            Alg::EdDSA => None,
            Alg::HS256 => Some(hmac::HMAC_SHA256),
            Alg::HS384 => Some(hmac::HMAC_SHA384),
            Alg::HS512 => Some(hmac::HMAC_SHA512),
        }
    }

    /// The smallest secret accepted for an HS* key: the hash output size, at least 32.
    pub fn min_secret_len(&self) -> usize {
        self.signature_len().max(MIN_SECRET_BYTES)
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a key could not be built or loaded (configuration time, never per token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// An HMAC secret shorter than its algorithm allows.
    SecretTooShort {
        /// The algorithm.
        alg: Alg,
        /// The secret's length in bytes.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// `Key::hmac` was asked for a non-HMAC algorithm.
    NotHmac(Alg),
    /// The DER is not exactly an Ed25519 SubjectPublicKeyInfo.
    NotEd25519Spki,
    /// No PEM block with the wanted label.
    PemMissing {
        /// The label looked for.
        wanted: String,
        /// The label of the first block found instead, if any.
        found: Option<String>,
    },
    /// The PEM block's body is not standard base64.
    PemBase64,
    /// The secret file is not base64url text.
    SecretEncoding,
    /// The secret file is empty.
    SecretEmpty,
    /// A `kid` configured twice.
    DuplicateKid(String),
    /// A `kid` that is the empty string.
    EmptyKid,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::SecretTooShort { alg, len, min } => write!(
                f,
                "{alg} secret is {len} bytes; at least {min} random bytes are required"
            ),
            KeyError::NotHmac(alg) => write!(f, "{alg} is not an HMAC algorithm"),
            KeyError::NotEd25519Spki => f.write_str(
                "not an Ed25519 public key (expected a PUBLIC KEY in SPKI form, OID 1.3.101.112, 32-byte key)",
            ),
            KeyError::PemMissing { wanted, found: None } => {
                write!(f, "no -----BEGIN {wanted}----- PEM block")
            }
            KeyError::PemMissing {
                wanted,
                found: Some(found),
            } => write!(
                f,
                "no -----BEGIN {wanted}----- PEM block (found a {found} block instead)"
            ),
            KeyError::PemBase64 => f.write_str("PEM body is not valid base64"),
            KeyError::SecretEncoding => {
                f.write_str("secret file is not base64url text (surrounding whitespace is ignored)")
            }
            KeyError::SecretEmpty => f.write_str("secret file is empty"),
            KeyError::DuplicateKid(kid) => write!(f, "kid {kid:?} is configured twice"),
            KeyError::EmptyKid => f.write_str("kid must not be empty"),
        }
    }
}

impl std::error::Error for KeyError {}

/// The verification material of a key.
enum Material {
    /// An HMAC key (ring precomputes the padded inner and outer states).
    Hmac(hmac::Key),
    /// A 32-byte Ed25519 public key.
    Ed25519([u8; 32]),
}

/// One configured key: its optional `kid`, the one algorithm it allows, its material.
pub struct Key {
    /// The key id tokens name in their header (`kid`).
    pub kid: Option<String>,
    /// The only algorithm this key verifies.
    pub alg: Alg,
    /// SPEC §11: the issuer this key is bound to (the token service's key): it verifies
    /// only tokens whose `iss` is this, and no other key verifies those. `None` for the
    /// `[[auth.key]]` keys.
    pub issuer: Option<String>,
    material: Material,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// An HMAC key; the secret must be at least 32 bytes and at least the hash output size
    /// (RFC 7518 §3.2).
    pub fn hmac(kid: Option<String>, alg: Alg, secret: &[u8]) -> Result<Key, KeyError> {
        let algorithm = alg.hmac_algorithm().ok_or(KeyError::NotHmac(alg))?;
        let min = alg.min_secret_len();
        if secret.len() < min {
            return Err(KeyError::SecretTooShort {
                alg,
                len: secret.len(),
                min,
            });
        }
        Ok(Key {
            kid,
            alg,
            issuer: None,
            material: Material::Hmac(hmac::Key::new(algorithm, secret)),
        })
    }

    /// An Ed25519 key from its DER SubjectPublicKeyInfo: exactly the RFC 8410 encoding
    /// (OID 1.3.101.112, no parameters, a 32-byte key), nothing else.
    pub fn ed25519_spki_der(kid: Option<String>, spki_der: &[u8]) -> Result<Key, KeyError> {
        let rest = spki_der
            .strip_prefix(&ED25519_SPKI_PREFIX[..])
            .ok_or(KeyError::NotEd25519Spki)?;
        let public: [u8; 32] = rest.try_into().map_err(|_| KeyError::NotEd25519Spki)?;
        Ok(Key::ed25519_raw(kid, public))
    }

    /// An Ed25519 key from its 32 raw public bytes.
    pub fn ed25519_raw(kid: Option<String>, public: [u8; 32]) -> Key {
        Key {
            kid,
            alg: Alg::EdDSA,
            issuer: None,
            material: Material::Ed25519(public),
        }
    }

    /// This key, bound to `issuer` (SPEC §11).
    pub fn bound_to(mut self, issuer: String) -> Key {
        self.issuer = Some(issuer);
        self
    }

    /// Verifies `signature` over `signing_input` with this key's own algorithm (constant
    /// time for HMAC: ring::hmac::verify). A signature of the wrong length never verifies.
    pub fn verify_signature(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        if signature.len() != self.alg.signature_len() {
            return false;
        }
        match &self.material {
            Material::Hmac(key) => hmac::verify(key, signing_input, signature).is_ok(),
            Material::Ed25519(public) => {
                signature::UnparsedPublicKey::new(&signature::ED25519, public)
                    .verify(signing_input, signature)
                    .is_ok()
            }
        }
    }

    /// The kid for messages: the kid, or `(no kid)`.
    pub fn display_kid(&self) -> &str {
        self.kid.as_deref().unwrap_or("(no kid)")
    }
}

/// The configured keys, in configuration order.
#[derive(Debug)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// Builds the set; a `kid` configured twice, or an empty `kid`, is an error.
    pub fn new(keys: Vec<Key>) -> Result<KeySet, KeyError> {
        for (i, key) in keys.iter().enumerate() {
            let Some(kid) = key.kid.as_deref() else {
                continue;
            };
            if kid.is_empty() {
                return Err(KeyError::EmptyKid);
            }
            let earlier = keys.get(..i).unwrap_or_default();
            if earlier.iter().any(|k| k.kid.as_deref() == Some(kid)) {
                return Err(KeyError::DuplicateKid(kid.to_owned()));
            }
        }
        Ok(KeySet { keys })
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The configured kids, in order (keys without a kid are skipped).
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref())
    }

    /// The key at `index` (as reported by `Claims::key_index`).
    pub fn get(&self, index: usize) -> Option<&Key> {
        self.keys.get(index)
    }

    /// All keys, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Key> {
        self.keys.iter()
    }

    /// Whether some key is bound to `iss` (so that no unbound key may verify its tokens).
    pub fn is_bound_issuer(&self, iss: &str) -> bool {
        self.keys.iter().any(|k| k.issuer.as_deref() == Some(iss))
    }

    /// SPEC §4 "Key selection": by `kid` when the header has one; otherwise the one key whose
    /// algorithm the header names. Either way the key's configured algorithm must be the
    /// header's `alg` (RFC 8725 §3.1). Returns the key's index.
    pub fn select(&self, kid: Option<&str>, header_alg: &str) -> Result<usize, TokenError> {
        match kid {
            Some(kid) => {
                let index = self
                    .keys
                    .iter()
                    .position(|k| k.kid.as_deref() == Some(kid))
                    .ok_or(TokenError::UnknownKid)?;
                let key = self.keys.get(index).ok_or(TokenError::UnknownKid)?;
                // RFC 8725 §3.1: a key is used with exactly one algorithm.
                if !key.alg.accepts_header(header_alg) {
                    return Err(TokenError::AlgKeyMismatch);
                }
                Ok(index)
            }
            None => {
                let mut found = None;
                // A key bound to an issuer is chosen by its kid only (its tokens carry one).
                for (i, key) in self.keys.iter().enumerate() {
                    if key.issuer.is_none() && key.alg.accepts_header(header_alg) {
                        if found.is_some() {
                            return Err(TokenError::AmbiguousKey);
                        }
                        found = Some(i);
                    }
                }
                found.ok_or(TokenError::NoKeyForAlg)
            }
        }
    }
}

/// Decodes the first PEM block labelled `label` (RFC 7468) to DER: standard base64,
/// whitespace (line breaks) inside the body tolerated, text around the block ignored.
pub fn pem_decode(text: &str, label: &str) -> Result<Vec<u8>, KeyError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let missing = || KeyError::PemMissing {
        wanted: label.to_owned(),
        found: first_pem_label(text).map(str::to_owned),
    };
    let start = text.find(&begin).ok_or_else(missing)? + begin.len();
    let body_and_rest = text.get(start..).ok_or_else(missing)?;
    let stop = body_and_rest.find(&end).ok_or_else(missing)?;
    let body = body_and_rest.get(..stop).ok_or_else(missing)?;
    let compact: Vec<u8> = body.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    STANDARD.decode(compact).map_err(|_| KeyError::PemBase64)
}

/// The label of the first `-----BEGIN X-----` line, for error messages.
fn first_pem_label(text: &str) -> Option<&str> {
    let after = text.split_once("-----BEGIN ")?.1;
    let label = after.split_once("-----")?.0;
    (label.len() <= 64 && !label.contains('\n')).then_some(label)
}

/// Decodes an HMAC secret file: base64url text (padded or not) after trimming surrounding
/// whitespace (SPEC §2). The standard alphabet (`+` `/`, as `openssl rand -base64` writes)
/// is accepted too, but not a mix of both.
pub fn decode_secret_file(text: &str) -> Result<Vec<u8>, KeyError> {
    let text = text.trim_ascii();
    if text.is_empty() {
        return Err(KeyError::SecretEmpty);
    }
    let url = text.contains(['-', '_']);
    let standard = text.contains(['+', '/']);
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let engine = match (url, standard) {
        (true, true) => return Err(KeyError::SecretEncoding),
        (false, true) => GeneralPurpose::new(&alphabet::STANDARD, config),
        _ => GeneralPurpose::new(&alphabet::URL_SAFE, config),
    };
    engine.decode(text).map_err(|_| KeyError::SecretEncoding)
}

/// Encodes `der` as a PEM block labelled `label` (64-column lines, trailing newline).
pub fn pem_encode(der: &[u8], label: &str) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    /// RFC 8037 A.2 public key `x`.
    const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    fn rfc8037_public() -> [u8; 32] {
        let v = URL_SAFE_NO_PAD.decode(RFC8037_X).expect("base64url");
        v.try_into().expect("32 bytes")
    }

    #[test]
    fn alg_names_round_trip_and_are_case_sensitive() {
        for a in Alg::ALL {
            assert_eq!(Alg::from_config_name(a.name()), Some(a));
        }
        assert_eq!(Alg::from_config_name("hs256"), None);
        assert_eq!(Alg::from_config_name("Ed25519"), None);
        assert_eq!(Alg::from_config_name("none"), None);
        assert!(Alg::EdDSA.accepts_header("EdDSA"));
        assert!(Alg::EdDSA.accepts_header("Ed25519"));
        assert!(!Alg::EdDSA.accepts_header("eddsa"));
        assert!(!Alg::EdDSA.accepts_header("ED25519"));
        assert!(!Alg::EdDSA.accepts_header("HS256"));
        assert!(Alg::HS256.accepts_header("HS256"));
        assert!(!Alg::HS256.accepts_header("HS384"));
        assert!(!Alg::HS256.accepts_header("hs256"));
        assert!(!Alg::HS256.accepts_header("HS256 "));
    }

    #[test]
    fn hmac_secret_length_rules() {
        assert!(Key::hmac(None, Alg::HS256, &[7; 32]).is_ok());
        assert_eq!(
            Key::hmac(None, Alg::HS256, &[7; 31]).err(),
            Some(KeyError::SecretTooShort {
                alg: Alg::HS256,
                len: 31,
                min: 32
            })
        );
        assert!(Key::hmac(None, Alg::HS384, &[7; 47]).is_err());
        assert!(Key::hmac(None, Alg::HS384, &[7; 48]).is_ok());
        assert!(Key::hmac(None, Alg::HS512, &[7; 63]).is_err());
        assert!(Key::hmac(None, Alg::HS512, &[7; 64]).is_ok());
        assert_eq!(
            Key::hmac(None, Alg::EdDSA, &[7; 64]).err(),
            Some(KeyError::NotHmac(Alg::EdDSA))
        );
    }

    #[test]
    fn spki_must_be_exactly_ed25519() {
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&rfc8037_public());
        let key = Key::ed25519_spki_der(Some("a".into()), &der);
        assert!(key.is_ok());
        // Trailing byte, short key, wrong OID (X25519 1.3.101.110), empty.
        let mut long = der.clone();
        long.push(0);
        assert_eq!(
            Key::ed25519_spki_der(None, &long).err(),
            Some(KeyError::NotEd25519Spki)
        );
        assert!(Key::ed25519_spki_der(None, der.get(..43).unwrap_or_default()).is_err());
        let mut x25519 = der.clone();
        if let Some(b) = x25519.get_mut(8) {
            *b = 0x6e;
        }
        assert!(Key::ed25519_spki_der(None, &x25519).is_err());
        assert!(Key::ed25519_spki_der(None, &[]).is_err());
    }

    #[test]
    fn keyset_rejects_duplicate_and_empty_kids() {
        let a = Key::hmac(Some("a".into()), Alg::HS256, &[1; 32]).expect("valid");
        let b = Key::ed25519_raw(Some("a".into()), rfc8037_public());
        assert_eq!(
            KeySet::new(vec![a, b]).err(),
            Some(KeyError::DuplicateKid("a".into()))
        );
        let e = Key::ed25519_raw(Some(String::new()), rfc8037_public());
        assert_eq!(KeySet::new(vec![e]).err(), Some(KeyError::EmptyKid));
        // Several keys without a kid are fine (selection then goes by alg).
        let n1 = Key::ed25519_raw(None, rfc8037_public());
        let n2 = Key::ed25519_raw(None, rfc8037_public());
        assert!(KeySet::new(vec![n1, n2]).is_ok());
    }

    fn set() -> KeySet {
        let keys = vec![
            Key::ed25519_raw(Some("ed".into()), rfc8037_public()),
            Key::hmac(Some("hs".into()), Alg::HS256, &[1; 32]).expect("valid"),
            Key::hmac(None, Alg::HS512, &[2; 64]).expect("valid"),
            Key::hmac(Some("hs2".into()), Alg::HS256, &[3; 32]).expect("valid"),
        ];
        KeySet::new(keys).expect("valid")
    }

    #[test]
    fn selection_by_kid() {
        let s = set();
        assert_eq!(s.len(), 4);
        assert_eq!(s.kids().collect::<Vec<_>>(), ["ed", "hs", "hs2"]);
        assert_eq!(s.select(Some("ed"), "EdDSA"), Ok(0));
        assert_eq!(s.select(Some("ed"), "Ed25519"), Ok(0));
        assert_eq!(s.select(Some("hs"), "HS256"), Ok(1));
        assert_eq!(
            s.select(Some("ed"), "HS256"),
            Err(TokenError::AlgKeyMismatch)
        );
        assert_eq!(
            s.select(Some("hs"), "HS512"),
            Err(TokenError::AlgKeyMismatch)
        );
        assert_eq!(
            s.select(Some("hs"), "EdDSA"),
            Err(TokenError::AlgKeyMismatch)
        );
        assert_eq!(s.select(Some("nope"), "HS256"), Err(TokenError::UnknownKid));
        assert_eq!(s.select(Some("ED"), "EdDSA"), Err(TokenError::UnknownKid));
        assert_eq!(
            s.select(Some("../../etc/passwd"), "HS256"),
            Err(TokenError::UnknownKid)
        );
        assert_eq!(s.select(Some(""), "HS256"), Err(TokenError::UnknownKid));
    }

    #[test]
    fn selection_without_kid() {
        let s = set();
        assert_eq!(s.select(None, "EdDSA"), Ok(0));
        assert_eq!(s.select(None, "Ed25519"), Ok(0));
        assert_eq!(s.select(None, "HS512"), Ok(2));
        assert_eq!(s.select(None, "HS256"), Err(TokenError::AmbiguousKey));
        assert_eq!(s.select(None, "HS384"), Err(TokenError::NoKeyForAlg));
        assert_eq!(s.select(None, "RS256"), Err(TokenError::NoKeyForAlg));
    }

    #[test]
    fn signatures_of_wrong_length_never_verify() {
        let s = set();
        let hs = s.get(1).expect("key 1");
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &[1; 32]), b"x");
        assert!(hs.verify_signature(b"x", tag.as_ref()));
        assert!(!hs.verify_signature(b"y", tag.as_ref()));
        assert!(!hs.verify_signature(b"x", tag.as_ref().get(..31).unwrap_or_default()));
        assert!(!hs.verify_signature(b"x", &[]));
        let ed = s.get(0).expect("key 0");
        assert!(!ed.verify_signature(b"x", &[0; 64]));
        assert!(!ed.verify_signature(b"x", &[0; 63]));
    }

    #[test]
    fn pem_round_trip_and_errors() {
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&rfc8037_public());
        let pem = pem_encode(&der, "PUBLIC KEY");
        assert_eq!(pem_decode(&pem, "PUBLIC KEY"), Ok(der.clone()));
        // CRLF line endings and text around the block.
        let crlf = format!("comment\r\n{}\r\ntrailer", pem.replace('\n', "\r\n"));
        assert_eq!(pem_decode(&crlf, "PUBLIC KEY"), Ok(der.clone()));
        assert_eq!(
            pem_decode(&pem, "PRIVATE KEY"),
            Err(KeyError::PemMissing {
                wanted: "PRIVATE KEY".into(),
                found: Some("PUBLIC KEY".into())
            })
        );
        assert!(pem_decode("", "PUBLIC KEY").is_err());
        let broken = pem.replace("MCow", "MC*w");
        assert_eq!(pem_decode(&broken, "PUBLIC KEY"), Err(KeyError::PemBase64));
        let no_end = pem.replace("-----END PUBLIC KEY-----", "");
        assert!(pem_decode(&no_end, "PUBLIC KEY").is_err());
    }

    #[test]
    fn secret_file_decoding() {
        let k = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
        let bytes = decode_secret_file(&format!("  {k}\n")).expect("secret");
        assert_eq!(bytes.len(), 64);
        assert_eq!(decode_secret_file(&format!("{k}==")), Ok(bytes.clone()));
        assert_eq!(decode_secret_file("\n \t"), Err(KeyError::SecretEmpty));
        assert_eq!(decode_secret_file("abc def"), Err(KeyError::SecretEncoding));
        assert_eq!(decode_secret_file("a+b-"), Err(KeyError::SecretEncoding));
        // Standard alphabet, padded (openssl rand -base64 32).
        let std_text = STANDARD.encode([0xfb; 32]);
        assert!(std_text.contains('+') || std_text.contains('/'));
        assert_eq!(decode_secret_file(&std_text), Ok(vec![0xfb; 32]));
    }
}
