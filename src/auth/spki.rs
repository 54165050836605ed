//! Public keys as SubjectPublicKeyInfo DER (RFC 5280 §4.1.2.7) and their validation:
//! RSA (RFC 8017 A.1.1, RFC 3279 §2.3.1), EC P-256/P-384 (RFC 5480), Ed25519 (RFC 8410).
//! A small, bounded DER reader: definite lengths only, no indexing that can panic.

use std::fmt;

/// The largest RSA modulus ring verifies (8192 bits).
pub const RSA_MAX_BITS: usize = 8192;
/// The smallest RSA modulus accepted (SPEC §9; RFC 7518 §3.3: 2048 bits or larger).
pub const RSA_MIN_BITS: usize = 2048;

/// A public key, validated, in the form ring verifies with.
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA: the big-endian modulus and exponent, without leading zero bytes.
    Rsa {
        /// Modulus.
        n: Box<[u8]>,
        /// Public exponent.
        e: Box<[u8]>,
    },
    /// An EC point on `curve`, uncompressed (`04 || X || Y`, SEC 1 §2.3.3).
    Ec {
        /// The curve.
        curve: Curve,
        /// The uncompressed point.
        point: Box<[u8]>,
    },
    /// A 32-byte Ed25519 public key.
    Ed25519([u8; 32]),
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl PublicKey {
    /// "RSA 2048-bit", "EC P-256", "Ed25519": for messages.
    pub fn describe(&self) -> String {
        match self {
            PublicKey::Rsa { n, .. } => format!("RSA {}-bit", bit_len(n)),
            PublicKey::Ec { curve, .. } => format!("EC {}", curve.name()),
            PublicKey::Ed25519(_) => "Ed25519".to_owned(),
        }
    }

    /// An RSA key from its modulus and exponent (big-endian, leading zeros allowed),
    /// checked: 2048..=8192 bits, odd modulus, odd exponent from 3 to 2^33 - 1 (ring's range).
    pub fn rsa(n: &[u8], e: &[u8]) -> Result<PublicKey, SpkiError> {
        let n = strip_zeros(n);
        let e = strip_zeros(e);
        let bits = bit_len(n);
        if bits < RSA_MIN_BITS {
            return Err(SpkiError::RsaTooSmall(bits));
        }
        if bits > RSA_MAX_BITS {
            return Err(SpkiError::RsaTooLarge(bits));
        }
        if n.last().is_none_or(|b| b & 1 == 0) {
            return Err(SpkiError::RsaModulus);
        }
        let e_bits = bit_len(e);
        if !(2..=33).contains(&e_bits) || e.last().is_none_or(|b| b & 1 == 0) {
            return Err(SpkiError::RsaExponent);
        }
        Ok(PublicKey::Rsa {
            n: n.into(),
            e: e.into(),
        })
    }

    /// An EC key from its uncompressed point, which must lie on `curve`.
    pub fn ec(curve: Curve, point: &[u8]) -> Result<PublicKey, SpkiError> {
        if point.len() != 1 + 2 * curve.coordinate_len() || point.first() != Some(&0x04) {
            return Err(SpkiError::EcPoint);
        }
        if !curve.contains(point) {
            return Err(SpkiError::EcNotOnCurve);
        }
        Ok(PublicKey::Ec {
            curve,
            point: point.into(),
        })
    }
}

/// The EC curves JOSE names for ES256 / ES384 (RFC 7518 §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curve {
    /// NIST P-256 (secp256r1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
}

impl Curve {
    /// The JWK `crv` name.
    pub fn name(&self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        }
    }

    /// Bytes per coordinate.
    pub fn coordinate_len(&self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }

    /// Is the uncompressed `point` a valid public point of this curve (on the curve, not
    /// the identity, coordinates reduced)? ring's public-key validation (SEC 1 §3.2.2.1)
    /// runs as part of an ECDH agreement with a throwaway ephemeral key: it refuses any
    /// point that ECDSA verification would also refuse.
    fn contains(&self, point: &[u8]) -> bool {
        use ring::agreement;
        let algorithm = match self {
            Curve::P256 => &agreement::ECDH_P256,
            Curve::P384 => &agreement::ECDH_P384,
        };
        let rng = ring::rand::SystemRandom::new();
        let Ok(ours) = agreement::EphemeralPrivateKey::generate(algorithm, &rng) else {
            return false;
        };
        let peer = agreement::UnparsedPublicKey::new(algorithm, point);
        agreement::agree_ephemeral(ours, &peer, |_| ()).is_ok()
    }
}

/// Why a public key was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpkiError {
    /// Not DER, or not the SubjectPublicKeyInfo structure.
    Der,
    /// An algorithm OID other than rsaEncryption, id-ecPublicKey, Ed25519.
    UnsupportedAlgorithm,
    /// An EC curve other than P-256 / P-384.
    UnsupportedCurve,
    /// RSA modulus below 2048 bits (the size found).
    RsaTooSmall(usize),
    /// RSA modulus above 8192 bits.
    RsaTooLarge(usize),
    /// An even or empty RSA modulus.
    RsaModulus,
    /// An RSA exponent that is even, below 3 or above 2^33 - 1.
    RsaExponent,
    /// An EC point that is not uncompressed or of the wrong length.
    EcPoint,
    /// An EC point that is not on its curve.
    EcNotOnCurve,
}

impl fmt::Display for SpkiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpkiError::Der => f.write_str("not a DER SubjectPublicKeyInfo"),
            SpkiError::UnsupportedAlgorithm => f.write_str(
                "unsupported key type (RSA, EC P-256/P-384 and Ed25519 public keys are supported)",
            ),
            SpkiError::UnsupportedCurve => {
                f.write_str("unsupported EC curve (P-256 and P-384 are supported)")
            }
            SpkiError::RsaTooSmall(bits) => write!(
                f,
                "RSA modulus is {bits} bits; at least {RSA_MIN_BITS} bits are required"
            ),
            SpkiError::RsaTooLarge(bits) => write!(
                f,
                "RSA modulus is {bits} bits; at most {RSA_MAX_BITS} bits are supported"
            ),
            SpkiError::RsaModulus => f.write_str("RSA modulus is not a valid (odd) modulus"),
            SpkiError::RsaExponent => {
                f.write_str("RSA public exponent must be odd, from 3 to 2^33 - 1")
            }
            SpkiError::EcPoint => f.write_str("EC point is not an uncompressed point of its curve"),
            SpkiError::EcNotOnCurve => f.write_str("EC point is not on its curve"),
        }
    }
}

impl std::error::Error for SpkiError {}

/// OID 1.2.840.113549.1.1.1 rsaEncryption (RFC 3279 §2.3.1).
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// OID 1.2.840.10045.2.1 id-ecPublicKey (RFC 5480 §2.1.1).
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// OID 1.2.840.10045.3.1.7 secp256r1 (RFC 5480 §2.1.1.1).
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// OID 1.3.132.0.34 secp384r1 (RFC 5480 §2.1.1.1).
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
/// OID 1.3.101.112 Ed25519 (RFC 8410 §3).
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_NULL: u8 = 0x05;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;

/// Parses a DER SubjectPublicKeyInfo into a validated key.
pub fn parse_spki(der: &[u8]) -> Result<PublicKey, SpkiError> {
    let (spki, rest) = read(der, TAG_SEQUENCE)?;
    if !rest.is_empty() {
        return Err(SpkiError::Der);
    }
    let (algorithm, rest) = read(spki, TAG_SEQUENCE)?;
    let (bits, rest) = read(rest, TAG_BIT_STRING)?;
    if !rest.is_empty() {
        return Err(SpkiError::Der);
    }
    // The key bits: a whole number of bytes (0 unused bits).
    let key = match bits.split_first() {
        Some((0, key)) => key,
        _ => return Err(SpkiError::Der),
    };
    let (oid, params) = read(algorithm, TAG_OID)?;
    if oid == OID_RSA {
        // RFC 3279 §2.3.1: parameters are NULL (some encoders omit them).
        if !(params.is_empty() || params == [TAG_NULL, 0]) {
            return Err(SpkiError::Der);
        }
        let (seq, rest) = read(key, TAG_SEQUENCE)?;
        if !rest.is_empty() {
            return Err(SpkiError::Der);
        }
        let (n, rest) = read_positive(seq)?;
        let (e, rest) = read_positive(rest)?;
        if !rest.is_empty() {
            return Err(SpkiError::Der);
        }
        PublicKey::rsa(n, e)
    } else if oid == OID_EC {
        let (curve, rest) = read(params, TAG_OID)?;
        if !rest.is_empty() {
            return Err(SpkiError::Der);
        }
        let curve = if curve == OID_P256 {
            Curve::P256
        } else if curve == OID_P384 {
            Curve::P384
        } else {
            return Err(SpkiError::UnsupportedCurve);
        };
        PublicKey::ec(curve, key)
    } else if oid == OID_ED25519 {
        // RFC 8410 §3: parameters MUST be absent.
        if !params.is_empty() {
            return Err(SpkiError::Der);
        }
        let key: [u8; 32] = key.try_into().map_err(|_| SpkiError::Der)?;
        Ok(PublicKey::Ed25519(key))
    } else {
        Err(SpkiError::UnsupportedAlgorithm)
    }
}

/// Reads one DER element with tag `tag`: (contents, what follows).
fn read(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), SpkiError> {
    let (&t, rest) = input.split_first().ok_or(SpkiError::Der)?;
    if t != tag {
        return Err(SpkiError::Der);
    }
    let (&first, rest) = rest.split_first().ok_or(SpkiError::Der)?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form, at most 3 length bytes (16 MiB), minimal (X.690 §10.1).
        let count = usize::from(first & 0x7f);
        if !(1..=3).contains(&count) {
            return Err(SpkiError::Der);
        }
        let (bytes, rest) = rest.split_at_checked(count).ok_or(SpkiError::Der)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if len < 0x80 || bytes.first() == Some(&0) {
            return Err(SpkiError::Der);
        }
        (len, rest)
    };
    rest.split_at_checked(len).ok_or(SpkiError::Der)
}

/// Reads a non-negative DER INTEGER (minimal encoding).
fn read_positive(input: &[u8]) -> Result<(&[u8], &[u8]), SpkiError> {
    let (value, rest) = read(input, TAG_INTEGER)?;
    match value {
        [] => Err(SpkiError::Der),
        [b, ..] if b & 0x80 != 0 => Err(SpkiError::Der),
        [0, b, ..] if b & 0x80 == 0 => Err(SpkiError::Der),
        _ => Ok((value, rest)),
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

/// Bit length of a big-endian unsigned integer.
pub(crate) fn bit_len(bytes: &[u8]) -> usize {
    let bytes = strip_zeros(bytes);
    match bytes.first() {
        None => 0,
        Some(&top) => (bytes.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};

    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = body.len();
        if len < 0x80 {
            out.push(len as u8);
        } else if len < 0x100 {
            out.extend_from_slice(&[0x81, len as u8]);
        } else {
            out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
        }
        out.extend_from_slice(body);
        out
    }

    fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
        let int = |v: &[u8]| {
            let mut b = Vec::new();
            if v.first().is_some_and(|x| x & 0x80 != 0) {
                b.push(0);
            }
            b.extend_from_slice(v);
            tlv(TAG_INTEGER, &b)
        };
        let key = tlv(TAG_SEQUENCE, &[int(n), int(e)].concat());
        let alg = tlv(
            TAG_SEQUENCE,
            &[tlv(TAG_OID, OID_RSA), vec![TAG_NULL, 0]].concat(),
        );
        let bits = tlv(TAG_BIT_STRING, &[&[0u8][..], &key].concat());
        tlv(TAG_SEQUENCE, &[alg, bits].concat())
    }

    fn ec_spki(curve_oid: &[u8], point: &[u8]) -> Vec<u8> {
        let alg = tlv(
            TAG_SEQUENCE,
            &[tlv(TAG_OID, OID_EC), tlv(TAG_OID, curve_oid)].concat(),
        );
        let bits = tlv(TAG_BIT_STRING, &[&[0u8][..], point].concat());
        tlv(TAG_SEQUENCE, &[alg, bits].concat())
    }

    fn p256_point() -> Vec<u8> {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("pkcs8");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("pair");
        pair.public_key().as_ref().to_vec()
    }

    #[test]
    fn rsa_sizes_and_exponents() {
        let mut n = vec![0xc5; 256];
        n[255] = 0x01;
        let ok = parse_spki(&rsa_spki(&n, &[1, 0, 1])).expect("2048-bit key");
        assert_eq!(ok.describe(), "RSA 2048-bit");
        // 2047 bits: top bit clear.
        let mut small = n.clone();
        small[0] = 0x45;
        assert_eq!(
            parse_spki(&rsa_spki(&small, &[1, 0, 1])),
            Err(SpkiError::RsaTooSmall(2047))
        );
        assert_eq!(
            parse_spki(&rsa_spki(&n[..128], &[1, 0, 1])),
            Err(SpkiError::RsaTooSmall(1024))
        );
        let mut even = n.clone();
        even[255] = 0x02;
        assert_eq!(
            parse_spki(&rsa_spki(&even, &[1, 0, 1])),
            Err(SpkiError::RsaModulus)
        );
        assert_eq!(parse_spki(&rsa_spki(&n, &[2])), Err(SpkiError::RsaExponent));
        assert_eq!(parse_spki(&rsa_spki(&n, &[1])), Err(SpkiError::RsaExponent));
        assert!(parse_spki(&rsa_spki(&n, &[3])).is_ok());
        let huge = vec![0xc5; 1025];
        assert_eq!(
            parse_spki(&rsa_spki(&huge, &[3])),
            Err(SpkiError::RsaTooLarge(8200))
        );
    }

    #[test]
    fn ec_points_must_be_on_the_curve() {
        let point = p256_point();
        let key = parse_spki(&ec_spki(OID_P256, &point)).expect("on curve");
        assert_eq!(key.describe(), "EC P-256");
        let mut off = point.clone();
        off[64] ^= 1;
        assert_eq!(
            parse_spki(&ec_spki(OID_P256, &off)),
            Err(SpkiError::EcNotOnCurve)
        );
        // Compressed, short, wrong curve for its length, unknown curve.
        let mut compressed = point[..33].to_vec();
        compressed[0] = 0x02;
        assert_eq!(
            parse_spki(&ec_spki(OID_P256, &compressed)),
            Err(SpkiError::EcPoint)
        );
        assert_eq!(
            parse_spki(&ec_spki(OID_P384, &point)),
            Err(SpkiError::EcPoint)
        );
        assert_eq!(
            parse_spki(&ec_spki(&[0x2b, 0x81, 0x04, 0x00, 0x23], &point)),
            Err(SpkiError::UnsupportedCurve)
        );
        // The identity / all zeros.
        let mut zero = vec![0u8; 65];
        zero[0] = 4;
        assert_eq!(
            parse_spki(&ec_spki(OID_P256, &zero)),
            Err(SpkiError::EcNotOnCurve)
        );
    }

    #[test]
    fn der_structure_is_strict() {
        let point = p256_point();
        let good = ec_spki(OID_P256, &point);
        assert!(parse_spki(&good).is_ok());
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(parse_spki(&trailing), Err(SpkiError::Der));
        for cut in 0..good.len() {
            assert!(parse_spki(&good[..cut]).is_err(), "{cut}");
        }
        assert_eq!(parse_spki(&[]), Err(SpkiError::Der));
        assert_eq!(
            parse_spki(&[0x30, 0x84, 0, 0, 0, 1, 0]),
            Err(SpkiError::Der)
        );
        // Non-minimal long-form length.
        assert_eq!(parse_spki(&[0x30, 0x81, 0x01, 0x00]), Err(SpkiError::Der));
        // Ed25519 with parameters is refused; without, accepted.
        let ed = |params: &[u8]| {
            let alg = tlv(
                TAG_SEQUENCE,
                &[tlv(TAG_OID, OID_ED25519), params.to_vec()].concat(),
            );
            let bits = tlv(TAG_BIT_STRING, &[[0u8].as_slice(), &[9u8; 32]].concat());
            tlv(TAG_SEQUENCE, &[alg, bits].concat())
        };
        assert_eq!(parse_spki(&ed(&[])), Ok(PublicKey::Ed25519([9; 32])));
        assert_eq!(parse_spki(&ed(&[TAG_NULL, 0])), Err(SpkiError::Der));
        // An unknown algorithm (X25519, 1.3.101.110).
        let alg = tlv(TAG_SEQUENCE, &tlv(TAG_OID, &[0x2b, 0x65, 0x6e]));
        let bits = tlv(TAG_BIT_STRING, &[[0u8].as_slice(), &[9u8; 32]].concat());
        assert_eq!(
            parse_spki(&tlv(TAG_SEQUENCE, &[alg, bits].concat())),
            Err(SpkiError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn bit_lengths() {
        assert_eq!(bit_len(&[]), 0);
        assert_eq!(bit_len(&[0, 0]), 0);
        assert_eq!(bit_len(&[1]), 1);
        assert_eq!(bit_len(&[0, 0x80, 0]), 16);
        assert_eq!(bit_len(&[1, 0, 1]), 17);
    }
}
