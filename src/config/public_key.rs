//! `[[auth.key]]` with an asymmetric algorithm (SPEC §9): `public_key` is an SPKI PEM file
//! (RSA, EC P-256/P-384) whose key type must fit `alg`; RSA moduli under 2048 bits are
//! refused here, at load, never per token.

use std::path::Path;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::SubjectPublicKeyInfoDer;

use super::{read_file_capped, KeyConfig, KeyMaterial, LoadedKey, Problems};
use crate::auth::keys::{Alg, Key};

/// Largest public key file read.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// Every name `auth.key[].alg` accepts, in SPEC §9's order.
pub(super) const ALGORITHMS: &str =
    "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, HS384, HS512";

/// RS*, PS* and ES*: the algorithms whose `public_key` this module loads.
pub(super) fn is_public_key_alg(name: &str) -> bool {
    Alg::from_config_name(name)
        .is_some_and(|alg| alg.rsa_parameters().is_some() || matches!(alg, Alg::ES256 | Alg::ES384))
}

/// Loads `key.public_key` for an RS* / PS* / ES* `alg`; every problem is reported with
/// its key path.
pub(super) fn load(
    key: &KeyConfig,
    at: &str,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<LoadedKey> {
    let alg = Alg::from_config_name(&key.alg)?;
    if key.secret_file.is_some() {
        problems.error(
            format!("{at}.secret_file"),
            format!("alg = \"{alg}\" verifies with a public key: use public_key, not secret_file"),
        );
        return None;
    }
    let Some(file) = &key.public_key else {
        problems.error(
            format!("{at}.public_key"),
            format!(
                "required for alg = \"{alg}\": an SPKI PEM file with an {} public key",
                alg.key_type()
            ),
        );
        return None;
    };
    let path = base_dir.join(file);
    let at = format!("{at}.public_key");
    let der = read_spki_pem(&path, &at, problems)?;
    // The same checks the verifier makes when it builds the key: type fits alg, size,
    // point on the curve.
    if let Err(error) = Key::from_spki_der(key.kid.clone(), alg, &der) {
        problems.error(at, format!("{}: {error}", path.display()));
        return None;
    }
    Some(LoadedKey {
        kid: key.kid.clone(),
        alg: alg.name().to_owned(),
        material: KeyMaterial::Spki(der),
        path,
    })
}

/// Reads a `PUBLIC KEY` PEM file: the DER of its first SubjectPublicKeyInfo.
pub(crate) fn read_spki_pem(path: &Path, at: &str, problems: &mut Problems) -> Option<Vec<u8>> {
    let bytes = match read_file_capped(path, MAX_KEY_FILE_BYTES) {
        Ok(bytes) => bytes,
        Err(error) => {
            problems.error(at, format!("{}: {error}", path.display()));
            return None;
        }
    };
    match SubjectPublicKeyInfoDer::from_pem_slice(&bytes) {
        Ok(spki) => Some(spki.as_ref().to_vec()),
        Err(pem::Error::NoItemsFound) => {
            let message = if bytes.windows(11).any(|w| w == b"PRIVATE KEY") {
                "holds a private key; give the public key (PREFIX.pub.pem from wsgate keygen)"
            } else if bytes.windows(14).any(|w| w == b"RSA PUBLIC KEY") {
                "holds a PKCS#1 RSA PUBLIC KEY; give an SPKI PUBLIC KEY \
                 (openssl rsa -RSAPublicKey_in -in FILE -pubout)"
            } else {
                "no PEM \"PUBLIC KEY\" block found"
            };
            problems.error(at, format!("{}: {message}", path.display()));
            None
        }
        Err(_) => {
            problems.error(at, format!("{}: malformed PEM", path.display()));
            None
        }
    }
}
