//! Key files: PEM blocks (RFC 7468) and HMAC secret files (SPEC §2).

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use super::keys::KeyError;

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
