//! `wsgate keygen --alg EdDSA|HS256|HS384|HS512 --out PREFIX` (SPEC §2).

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair as _};

use crate::auth::keys::{pem_encode, Alg, ED25519_SPKI_PREFIX};

/// RFC 8410 §7 PKCS#8 v1 for Ed25519: this prefix, then the 32-byte seed. ring writes
/// v2 (RFC 5958, with the public key), which OpenSSL 3.0 and Python's `cryptography`
/// refuse; v1 is what every JOSE signer reads.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// ring's v2 document: this prefix, the seed, then `81 21 00` and the public key.
const ED25519_PKCS8_V2_PREFIX: [u8; 16] = [
    0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Re-encodes ring's PKCS#8 v2 Ed25519 key as v1 and checks that it still yields `public`.
fn pkcs8_v1(v2: &[u8], public: &[u8]) -> Result<Vec<u8>, String> {
    let seed = v2
        .strip_prefix(&ED25519_PKCS8_V2_PREFIX[..])
        .and_then(|rest| rest.get(..32))
        .ok_or_else(|| "keygen: unexpected PKCS#8 layout from ring".to_owned())?;
    let v1 = [&ED25519_PKCS8_V1_PREFIX[..], seed].concat();
    let again = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&v1)
        .map_err(|_| "keygen: PKCS#8 v1 re-encoding did not parse".to_owned())?;
    if again.public_key().as_ref() != public {
        return Err("keygen: PKCS#8 v1 re-encoding changed the key".into());
    }
    Ok(v1)
}

/// Writes new key files for `alg` next to `out_prefix` and returns their paths:
/// EdDSA: `PREFIX.key.pem` (PKCS#8 `PRIVATE KEY`) and `PREFIX.pub.pem` (SPKI `PUBLIC KEY`);
/// HS256/HS384/HS512: `PREFIX.secret` (32/48/64 random bytes as base64url text and a
/// newline). Files are created with mode 0600 and never overwrite an existing file.
pub fn keygen(alg: Alg, out_prefix: &Path) -> Result<Vec<PathBuf>, String> {
    let rng = SystemRandom::new();
    match alg {
        Alg::EdDSA => {
            let private_path = with_suffix(out_prefix, ".key.pem");
            let public_path = with_suffix(out_prefix, ".pub.pem");
            // Refuse before writing anything when either file is already there.
            for path in [&private_path, &public_path] {
                if fs::symlink_metadata(path).is_ok() {
                    return Err(exists(path));
                }
            }
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| "keygen: the system random generator failed".to_owned())?;
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                .map_err(|_| "keygen: generated key did not parse".to_owned())?;
            let spki = [&ED25519_SPKI_PREFIX[..], pair.public_key().as_ref()].concat();
            let v1 = pkcs8_v1(pkcs8.as_ref(), pair.public_key().as_ref())?;
            write_new(&private_path, pem_encode(&v1, "PRIVATE KEY").as_bytes())?;
            if let Err(e) = write_new(&public_path, pem_encode(&spki, "PUBLIC KEY").as_bytes()) {
                // Do not leave half a key pair behind (we created this file just now).
                let _ = fs::remove_file(&private_path);
                return Err(e);
            }
            Ok(vec![private_path, public_path])
        }
        Alg::HS256 | Alg::HS384 | Alg::HS512 => {
            let path = with_suffix(out_prefix, ".secret");
            let mut secret = [0u8; 64];
            let len = alg.min_secret_len();
            let bytes = secret
                .get_mut(..len)
                .ok_or_else(|| "keygen: secret length".to_owned())?;
            rng.fill(bytes)
                .map_err(|_| "keygen: the system random generator failed".to_owned())?;
            let text = format!("{}\n", URL_SAFE_NO_PAD.encode(&*bytes));
            write_new(&path, text.as_bytes())?;
            Ok(vec![path])
        }
        Alg::ES256 | Alg::RS256 => {
            let private_path = with_suffix(out_prefix, ".key.pem");
            let public_path = with_suffix(out_prefix, ".pub.pem");
            for path in [&private_path, &public_path] {
                if fs::symlink_metadata(path).is_ok() {
                    return Err(exists(path));
                }
            }
            let (pkcs8, spki) = if alg == Alg::ES256 {
                p256_pair(&rng)?
            } else {
                rsa_pair()?
            };
            // The gateway's own loader must accept the public half for this alg.
            crate::auth::keys::Key::from_spki_der(None, alg, &spki)
                .map_err(|e| format!("keygen: generated public key refused: {e}"))?;
            write_new(&private_path, pem_encode(&pkcs8, "PRIVATE KEY").as_bytes())?;
            if let Err(e) = write_new(&public_path, pem_encode(&spki, "PUBLIC KEY").as_bytes()) {
                let _ = fs::remove_file(&private_path);
                return Err(e);
            }
            Ok(vec![private_path, public_path])
        }
        other => Err(format!(
            "keygen: cannot make {other} keys (EdDSA, ES256, RS256, HS256, HS384, HS512)"
        )),
    }
}

/// The DER prefix of a P-256 SubjectPublicKeyInfo (RFC 5480): id-ecPublicKey, secp256r1,
/// then the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// An ECDSA P-256 key pair: ring's PKCS#8 (RFC 5915 inside RFC 5208) and the SPKI.
fn p256_pair(rng: &SystemRandom) -> Result<(Vec<u8>, Vec<u8>), String> {
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, rng)
        .map_err(|_| "keygen: the system random generator failed".to_owned())?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), rng)
        .map_err(|_| "keygen: generated key did not parse".to_owned())?;
    let spki = [&P256_SPKI_PREFIX[..], pair.public_key().as_ref()].concat();
    Ok((pkcs8.as_ref().to_vec(), spki))
}

/// A 2048-bit RSA key pair (e = 65537) made by the `rsa` crate, written as PKCS#8
/// (RFC 5208 around RFC 8017 A.1.2) and SPKI, and checked by loading it into ring.
fn rsa_pair() -> Result<(Vec<u8>, Vec<u8>), String> {
    use rsa::traits::{PrivateKeyParts as _, PublicKeyParts as _};
    let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048)
        .map_err(|e| format!("keygen: RSA key generation failed: {e}"))?;
    let [p, q] = key.primes() else {
        return Err("keygen: RSA key has more than two primes".into());
    };
    let (Some(dp), Some(dq), Some(qinv)) = (key.dp(), key.dq(), key.crt_coefficient()) else {
        return Err("keygen: RSA key without CRT values".into());
    };
    let int = |v: &rsa::BigUint| der_integer(&v.to_bytes_be());
    let private = der(
        0x30,
        &[
            der_integer(&[0]),
            int(key.n()),
            int(key.e()),
            int(key.d()),
            int(p),
            int(q),
            int(dp),
            int(dq),
            int(&qinv),
        ]
        .concat(),
    );
    // AlgorithmIdentifier { rsaEncryption, NULL } (RFC 3279 §2.3.1).
    let algorithm = der(
        0x30,
        &[
            der(
                0x06,
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
            ),
            vec![0x05, 0x00],
        ]
        .concat(),
    );
    let pkcs8 = der(
        0x30,
        &[der_integer(&[0]), algorithm.clone(), der(0x04, &private)].concat(),
    );
    let public = der(0x30, &[int(key.n()), int(key.e())].concat());
    let spki = der(
        0x30,
        &[algorithm, der(0x03, &[&[0u8][..], &public].concat())].concat(),
    );
    ring::signature::RsaKeyPair::from_pkcs8(&pkcs8)
        .map_err(|e| format!("keygen: generated RSA key refused by ring: {e}"))?;
    Ok((pkcs8, spki))
}

/// One DER element (X.690 §8.1: definite length, short or long form).
fn der(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = body.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(body);
    out
}

/// A non-negative DER INTEGER from big-endian bytes (minimal, with a 0 when the top bit is
/// set).
fn der_integer(be: &[u8]) -> Vec<u8> {
    let skip = be.iter().take_while(|b| **b == 0).count();
    let mut body = be.get(skip..).unwrap_or_default().to_vec();
    if body.first().is_none_or(|b| b & 0x80 != 0) {
        body.insert(0, 0);
    }
    der(0x02, &body)
}

/// `PREFIX` + `suffix`, without touching any dots already in the prefix.
fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn exists(path: &Path) -> String {
    format!("{}: already exists; not overwriting it", path.display())
}

/// Creates `path` (mode 0600, must not exist) and writes `contents`, synced to disk.
fn write_new(path: &Path, contents: &[u8]) -> Result<(), String> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => exists(path),
            _ => format!("{}: {e}", path.display()),
        })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::{decode_secret_file, pem_decode, Key};
    use std::os::unix::fs::PermissionsExt as _;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wsgate-keygen-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn ed25519_private_key_is_pkcs8_v1() {
        let dir = temp_dir("v1");
        let files = keygen(Alg::EdDSA, &dir.join("k")).expect("keygen");
        let text = fs::read_to_string(&files[0]).expect("read");
        let der = pem_decode(&text, "PRIVATE KEY").expect("pem");
        assert_eq!(der.len(), 48);
        assert_eq!(der[..16], ED25519_PKCS8_V1_PREFIX);
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).expect("parses");
        let spki =
            pem_decode(&fs::read_to_string(&files[1]).expect("read"), "PUBLIC KEY").expect("pem");
        assert_eq!(&spki[12..], pair.public_key().as_ref());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn es256_and_rs256_key_pairs_sign_what_the_gateway_verifies() {
        let dir = temp_dir("asym");
        for (alg, name) in [(Alg::ES256, "es"), (Alg::RS256, "rs")] {
            let prefix = dir.join(name);
            let paths = keygen(alg, &prefix).expect("keygen");
            assert_eq!(
                paths,
                [
                    dir.join(format!("{name}.key.pem")),
                    dir.join(format!("{name}.pub.pem"))
                ]
            );
            for p in &paths {
                assert_eq!(mode(p), 0o600, "{}", p.display());
            }
            // token mint reads the private key; the gateway verifies with the public one.
            let (got, signing) =
                crate::cli::token::SigningKey::load(&paths[0], None).expect("loads");
            assert_eq!(got, alg);
            let token =
                crate::cli::token::sign(alg, &signing, &format!(r#"{{"alg":"{alg}"}}"#), "{}")
                    .expect("sign");
            let spki = pem_decode(&fs::read_to_string(&paths[1]).expect("read"), "PUBLIC KEY")
                .expect("pem");
            let key = Key::from_spki_der(None, alg, &spki).expect("gateway accepts it");
            let (input, sig) = token.rsplit_once('.').expect("three segments");
            let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(sig)
                .expect("b64");
            assert!(key.verify_signature(input.as_bytes(), &sig));
            if alg == Alg::RS256 {
                assert_eq!(key.signature_len(), 256);
            }
            // Never overwritten.
            let e = keygen(alg, &prefix).expect_err("exists");
            assert!(e.contains("already exists"), "{e}");
        }
        let _ = fs::remove_dir_all(&dir);
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn eddsa_key_pair_files() {
        let dir = temp_dir("ed");
        let prefix = dir.join("ed-2026.11");
        let paths = keygen(Alg::EdDSA, &prefix).expect("keygen");
        assert_eq!(
            paths,
            [
                dir.join("ed-2026.11.key.pem"),
                dir.join("ed-2026.11.pub.pem")
            ]
        );
        for p in &paths {
            assert_eq!(mode(p), 0o600, "{}", p.display());
        }
        let private = fs::read_to_string(&paths[0]).expect("read");
        let public = fs::read_to_string(&paths[1]).expect("read");
        let pkcs8 = pem_decode(&private, "PRIVATE KEY").expect("pkcs8 pem");
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).expect("pkcs8");
        let spki = pem_decode(&public, "PUBLIC KEY").expect("spki pem");
        assert_eq!(spki.len(), 44);
        assert_eq!(spki.get(12..), Some(pair.public_key().as_ref()));
        assert!(Key::ed25519_spki_der(None, &spki).is_ok());

        // Never overwrite: both files exist, and a half-existing pair is refused too.
        let e = keygen(Alg::EdDSA, &prefix).expect_err("exists");
        assert!(
            e.contains("ed-2026.11.key.pem") && e.contains("already exists"),
            "{e}"
        );
        fs::remove_file(&paths[0]).expect("rm");
        let e = keygen(Alg::EdDSA, &prefix).expect_err("pub exists");
        assert!(e.contains("ed-2026.11.pub.pem"), "{e}");
        assert!(!paths[0].exists(), "no half pair written");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn hmac_secret_files() {
        let dir = temp_dir("hs");
        for (alg, len) in [(Alg::HS256, 32), (Alg::HS384, 48), (Alg::HS512, 64)] {
            let prefix = dir.join(alg.name());
            let paths = keygen(alg, &prefix).expect("keygen");
            assert_eq!(paths, [dir.join(format!("{}.secret", alg.name()))]);
            assert_eq!(mode(&paths[0]), 0o600);
            let text = fs::read_to_string(&paths[0]).expect("read");
            assert!(text.ends_with('\n'));
            assert!(!text.contains('='));
            let secret = decode_secret_file(&text).expect("base64url");
            assert_eq!(secret.len(), len);
            assert!(Key::hmac(None, alg, &secret).is_ok());
            let e = keygen(alg, &prefix).expect_err("exists");
            assert!(e.contains(".secret"), "{e}");
        }
        let e = keygen(Alg::HS256, &dir.join("missing-dir/x")).expect_err("no dir");
        assert!(e.contains("missing-dir/x.secret"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn two_secrets_differ() {
        let dir = temp_dir("rand");
        let a = keygen(Alg::HS256, &dir.join("a")).expect("a");
        let b = keygen(Alg::HS256, &dir.join("b")).expect("b");
        assert_ne!(
            fs::read_to_string(&a[0]).expect("a"),
            fs::read_to_string(&b[0]).expect("b")
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
