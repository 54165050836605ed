//! Configured verification keys, the one algorithm each allows, and key selection
//! (SPEC §4 "Key selection"; RFC 8725 §3.1: the algorithm comes from the key, never the token).

use std::fmt;
use std::sync::Arc;

use ring::{hmac, signature};

use super::error::TokenError;
use super::jwk::JwkSet;
use super::spki::{Curve, PublicKey, SpkiError};

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
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3).
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256 and MGF1 with SHA-256 (RFC 7518 §3.5).
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA with P-256 and SHA-256 (RFC 7518 §3.4).
    ES256,
    /// ECDSA with P-384 and SHA-384.
    ES384,
}

impl Alg {
    /// Every algorithm, in config-name order.
    pub const ALL: [Alg; 12] = [
        Alg::EdDSA,
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
    ];

    /// The configuration (and JOSE) name.
    pub fn name(&self) -> &'static str {
        match self {
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
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
            "RS256" => Some(Alg::RS256),
            "RS384" => Some(Alg::RS384),
            "RS512" => Some(Alg::RS512),
            "PS256" => Some(Alg::PS256),
            "PS384" => Some(Alg::PS384),
            "PS512" => Some(Alg::PS512),
            "ES256" => Some(Alg::ES256),
            "ES384" => Some(Alg::ES384),
            _ => None,
        }
    }

    /// Does the header `alg` text name this algorithm?
    pub fn accepts_header(&self, alg: &str) -> bool {
        Alg::from_header(alg) == Some(*self)
    }

    /// The exact length of this algorithm's signature in bytes; for RSA it is the
    /// modulus length, which only the key knows ([`Key::signature_len`]): the smallest
    /// modulus (2048 bits) is given here.
    pub fn signature_len(&self) -> usize {
        match self {
            Alg::EdDSA => 64,
            Alg::HS256 => 32,
            Alg::HS384 => 48,
            Alg::HS512 => 64,
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => 256,
            // RFC 7518 §3.4: R || S, each the size of the curve's order.
            Alg::ES256 => 64,
            Alg::ES384 => 96,
        }
    }

    /// The key type this algorithm needs (RFC 7518 §3.1), as a JWK `kty` / `crv` name.
    pub fn key_type(&self) -> &'static str {
        match self {
            Alg::EdDSA => "Ed25519",
            Alg::HS256 | Alg::HS384 | Alg::HS512 => "HMAC secret",
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => "RSA",
            Alg::ES256 => "EC P-256",
            Alg::ES384 => "EC P-384",
        }
    }

    /// Can a public key of this type verify this algorithm? (RFC 8725 §3.1: one key, one
    /// algorithm family; an RSA key is never an HMAC secret, an EC key never RSA.)
    pub fn fits(&self, key: &PublicKey) -> bool {
        match key {
            PublicKey::Rsa { .. } => self.rsa_parameters().is_some(),
            PublicKey::Ec { curve, .. } => {
                matches!(
                    (self, curve),
                    (Alg::ES256, Curve::P256) | (Alg::ES384, Curve::P384)
                )
            }
            PublicKey::Ed25519(_) => *self == Alg::EdDSA,
        }
    }

    /// ring's verification parameters for RS* / PS* (moduli of 2048 to 8192 bits).
    pub fn rsa_parameters(&self) -> Option<&'static signature::RsaParameters> {
        match self {
            Alg::RS256 => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
            Alg::RS384 => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
            Alg::RS512 => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
            Alg::PS256 => Some(&signature::RSA_PSS_2048_8192_SHA256),
            Alg::PS384 => Some(&signature::RSA_PSS_2048_8192_SHA384),
            Alg::PS512 => Some(&signature::RSA_PSS_2048_8192_SHA512),
            _ => None,
        }
    }

    /// True for the HMAC algorithms.
    pub fn is_hmac(&self) -> bool {
        self.hmac_algorithm().is_some()
    }

    /// The ring HMAC algorithm, for HS*.
    pub fn hmac_algorithm(&self) -> Option<hmac::Algorithm> {
        match self {
            Alg::HS256 => Some(hmac::HMAC_SHA256),
            Alg::HS384 => Some(hmac::HMAC_SHA384),
            Alg::HS512 => Some(hmac::HMAC_SHA512),
            _ => None,
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
    /// Two providers with the same `issuer`.
    DuplicateIssuer(String),
    /// The public key itself was refused (not SPKI, too small, off its curve, ...).
    Spki(SpkiError),
    /// The public key's type cannot verify the configured algorithm.
    WrongKeyType {
        /// The configured algorithm.
        alg: Alg,
        /// What the key is ("EC P-256", "RSA 2048-bit", ...).
        found: String,
    },
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
            KeyError::DuplicateIssuer(iss) => write!(f, "issuer {iss:?} is configured twice"),
            KeyError::Spki(e) => e.fmt(f),
            KeyError::WrongKeyType { alg, found } => write!(
                f,
                "holds an {found} key, but alg = \"{alg}\" needs an {} key",
                alg.key_type()
            ),
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
    /// An RSA public key (modulus and exponent, big-endian, no leading zeros).
    Rsa(signature::RsaPublicKeyComponents<Box<[u8]>>),
    /// An uncompressed EC point, already checked to lie on the curve of `algorithm`.
    Ec {
        point: Box<[u8]>,
        algorithm: &'static signature::EcdsaVerificationAlgorithm,
    },
}

/// One configured key: its optional `kid`, the one algorithm it allows, its material.
pub struct Key {
    /// The key id tokens name in their header (`kid`).
    pub kid: Option<String>,
    /// The only algorithm this key verifies.
    pub alg: Alg,
    material: Material,
    fingerprint: u64,
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

/// A stable 64-bit fingerprint of (issuer scope, alg, kid, material): what identifies "the
/// same key" across reloads and fetches (SPEC §6 "key retired"). Never printed.
fn fingerprint(scope: &str, alg: Alg, kid: Option<&str>, material: &[&[u8]]) -> u64 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [
        scope.as_bytes(),
        alg.name().as_bytes(),
        kid.unwrap_or("").as_bytes(),
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    for part in material {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let digest = ctx.finish();
    let mut first = [0u8; 8];
    for (out, byte) in first.iter_mut().zip(digest.as_ref()) {
        *out = *byte;
    }
    u64::from_be_bytes(first)
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
            fingerprint: fingerprint("", alg, kid.as_deref(), &[secret]),
            kid,
            alg,
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
            fingerprint: fingerprint("", Alg::EdDSA, kid.as_deref(), &[&public]),
            kid,
            alg: Alg::EdDSA,
            material: Material::Ed25519(public),
        }
    }

    /// A key from a DER SubjectPublicKeyInfo (RSA, EC P-256/P-384, Ed25519) for `alg`,
    /// whose key type must fit `alg` (RFC 8725 §3.1).
    pub fn from_spki_der(kid: Option<String>, alg: Alg, spki_der: &[u8]) -> Result<Key, KeyError> {
        let public = super::spki::parse_spki(spki_der).map_err(KeyError::Spki)?;
        Key::public(kid, alg, public)
    }

    /// A key from a validated public key for `alg`; the key's type must fit `alg`.
    pub fn public(kid: Option<String>, alg: Alg, public: PublicKey) -> Result<Key, KeyError> {
        if !alg.fits(&public) {
            return Err(KeyError::WrongKeyType {
                alg,
                found: public.describe(),
            });
        }
        let (material, fp) = match public {
            PublicKey::Rsa { n, e } => {
                let fp = fingerprint("", alg, kid.as_deref(), &[&n, &e]);
                (
                    Material::Rsa(signature::RsaPublicKeyComponents { n, e }),
                    fp,
                )
            }
            PublicKey::Ec { curve, point } => {
                let fp = fingerprint("", alg, kid.as_deref(), &[&point]);
                let algorithm = match curve {
                    Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
                    Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
                };
                (Material::Ec { point, algorithm }, fp)
            }
            PublicKey::Ed25519(public) => {
                let fp = fingerprint("", alg, kid.as_deref(), &[&public]);
                (Material::Ed25519(public), fp)
            }
        };
        Ok(Key {
            kid,
            alg,
            material,
            fingerprint: fp,
        })
    }

    /// The same key, its fingerprint scoped to a provider's issuer (a JWK with the same
    /// bytes under two issuers is two keys).
    pub fn scoped_to(mut self, issuer: &str) -> Key {
        self.fingerprint = fingerprint(
            issuer,
            self.alg,
            self.kid.as_deref(),
            &[&self.fingerprint.to_be_bytes()],
        );
        self
    }

    /// The key's fingerprint (stable across reloads for the same key; never printed).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The exact length of this key's signatures (RSA: the modulus length).
    pub fn signature_len(&self) -> usize {
        match &self.material {
            Material::Rsa(rsa) => rsa.n.len(),
            _ => self.alg.signature_len(),
        }
    }

    /// Verifies `signature` over `signing_input` with this key's own algorithm (constant
    /// time for HMAC: ring::hmac::verify). A signature of the wrong length never verifies.
    pub fn verify_signature(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        if signature.len() != self.signature_len() {
            return false;
        }
        match &self.material {
            Material::Hmac(key) => hmac::verify(key, signing_input, signature).is_ok(),
            Material::Ed25519(public) => {
                signature::UnparsedPublicKey::new(&signature::ED25519, public)
                    .verify(signing_input, signature)
                    .is_ok()
            }
            Material::Rsa(rsa) => match self.alg.rsa_parameters() {
                Some(params) => rsa.verify(params, signing_input, signature).is_ok(),
                None => false,
            },
            Material::Ec { point, algorithm } => {
                signature::UnparsedPublicKey::new(*algorithm, point)
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

/// Every verification key, keyed by (issuer, kid) (SPEC §9): the static `[[auth.key]]`
/// keys, in configuration order, verify tokens whose `iss` is no provider's; each
/// provider's keys verify its tokens only. Cloning is cheap (shared, immutable parts), so a
/// new provider key set is published as a new `KeySet` snapshot
/// ([`KeySet::with_provider_keys`]), never by mutating one in use.
#[derive(Debug, Clone)]
pub struct KeySet {
    keys: Arc<[Key]>,
    providers: Arc<[Provider]>,
    refetch: Option<RefetchHook>,
}

/// One provider's keys at one moment (a fetched or loaded JWK Set): immutable, replaced
/// whole. A JWK without `alg` that several algorithms fit appears once per algorithm.
#[derive(Debug, Default)]
pub struct ProviderKeys {
    keys: Arc<[Key]>,
    jwks: usize,
    /// Where this set stands (SPEC §9): usable or not, next attempt, fetch counters.
    pub status: FetchStatus,
}

impl ProviderKeys {
    /// The usable keys of `set`, their fingerprints scoped to `issuer`.
    pub fn from_jwk_set(issuer: &str, set: &JwkSet) -> ProviderKeys {
        let mut keys = Vec::new();
        for jwk in &set.keys {
            for &alg in &jwk.algorithms {
                // `parse_jwk` only lists algorithms that fit the key.
                if let Ok(key) = Key::public(jwk.kid.clone(), alg, jwk.key.clone()) {
                    keys.push(key.scoped_to(issuer));
                }
            }
        }
        ProviderKeys {
            keys: keys.into(),
            jwks: set.keys.len(),
            status: FetchStatus {
                usable: true,
                ..FetchStatus::default()
            },
        }
    }

    /// A set of keys held by the gateway itself (the token service's signing key, SPEC
    /// §11), their fingerprints scoped to `issuer`; always usable.
    pub fn from_keys(issuer: &str, keys: Vec<Key>) -> ProviderKeys {
        let keys: Vec<Key> = keys.into_iter().map(|k| k.scoped_to(issuer)).collect();
        ProviderKeys {
            jwks: keys.len(),
            keys: keys.into(),
            status: FetchStatus {
                usable: true,
                ..FetchStatus::default()
            },
        }
    }

    /// The same keys with another status (the keys themselves are shared by value).
    pub fn with_status(&self, status: FetchStatus) -> ProviderKeys {
        ProviderKeys {
            keys: self.keys.clone(),
            jwks: self.jwks,
            status,
        }
    }

    /// The number of usable JWKs (`wsgate_provider_keys`).
    pub fn len(&self) -> usize {
        self.jwks
    }

    /// True when the set has no usable key.
    pub fn is_empty(&self) -> bool {
        self.jwks == 0
    }

    /// Every key (one per JWK and algorithm).
    pub fn iter(&self) -> impl Iterator<Item = &Key> {
        self.keys.iter()
    }
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
        Ok(KeySet {
            keys: keys.into(),
            providers: Arc::new([]),
            refetch: None,
        })
    }

    /// The same static keys with these providers; an issuer configured twice is an error.
    pub fn with_providers(&self, providers: Vec<Provider>) -> Result<KeySet, KeyError> {
        for (i, p) in providers.iter().enumerate() {
            let earlier = providers.get(..i).unwrap_or_default();
            if earlier.iter().any(|q| q.issuer == p.issuer) {
                return Err(KeyError::DuplicateIssuer(p.issuer.clone()));
            }
        }
        Ok(KeySet {
            keys: self.keys.clone(),
            providers: providers.into(),
            refetch: self.refetch.clone(),
        })
    }

    /// A new snapshot in which `issuer`'s provider has `keys`; everything else is shared.
    /// `None` when no provider has that issuer.
    pub fn with_provider_keys(&self, issuer: &str, keys: Arc<ProviderKeys>) -> Option<KeySet> {
        self.provider(issuer)?;
        let providers: Vec<Provider> = self
            .providers
            .iter()
            .map(|p| {
                let mut p = p.clone();
                if p.issuer == issuer {
                    p.keys = keys.clone();
                }
                p
            })
            .collect();
        Some(KeySet {
            keys: self.keys.clone(),
            providers: providers.into(),
            refetch: self.refetch.clone(),
        })
    }

    /// The same snapshot, asking `hook` for a fetch when a provider's token names a `kid`
    /// its set lacks.
    pub fn with_refetch(&self, hook: RefetchHook) -> KeySet {
        KeySet {
            keys: self.keys.clone(),
            providers: self.providers.clone(),
            refetch: Some(hook),
        }
    }

    /// Tells the control plane that `issuer`'s set lacks a `kid` a token named; true when
    /// a fetch is under way or was just asked for (the caller may wait for it).
    pub fn ask_refetch(&self, issuer: &str) -> bool {
        self.refetch.as_ref().is_some_and(|hook| (hook.0)(issuer))
    }

    /// The provider whose `issuer` is exactly `iss`.
    pub fn provider(&self, iss: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.issuer == iss)
    }

    /// The providers, in configuration order.
    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    /// The fingerprint of every key, static and provider keys alike (a reload or a new
    /// set retires the sessions whose key is no longer among them).
    pub fn fingerprints(&self) -> Vec<u64> {
        let provider_keys = self.providers.iter().flat_map(|p| p.keys.iter());
        self.keys
            .iter()
            .chain(provider_keys)
            .map(Key::fingerprint)
            .collect()
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

    /// The static key at `index` (as returned by [`KeySet::select`]).
    pub fn get(&self, index: usize) -> Option<&Key> {
        self.keys.get(index)
    }

    /// All keys, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Key> {
        self.keys.iter()
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
                for (i, key) in self.keys.iter().enumerate() {
                    if key.alg.accepts_header(header_alg) {
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

pub use super::pem::{decode_secret_file, pem_decode, pem_encode};
pub use super::provider::Provider;
pub use super::provider_status::{FetchStatus, RefetchHook};

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine as _;

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
