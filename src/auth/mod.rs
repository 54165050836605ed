//! Sans-IO token verification: JWS compact serialization (RFC 7515) carrying JWT claims
//! (RFC 7519), checked with RFC 8725's advice, over borrowed bytes and one reusable buffer.
//!
//! - [`keys`]: configured keys, the algorithm each one allows, and key selection;
//! - [`jws`]: segment split, canonical base64url, the JOSE header;
//! - [`claims`]: the claims object (duplicate names, types, time, issuer, audience, scopes);
//! - [`verify`]: [`verify::Verifier::verify`], the one entry point for a handshake
//!   ([`verify::Verifier::verify_cached`] with a worker's [`cache::TokenCache`]);
//! - [`error`]: [`error::TokenError`], one variant per rule, with its peer-visible text.

pub mod cache;
pub mod claims;
pub mod error;
pub mod jwk;
pub mod jws;
pub mod keys;
pub mod pem;
pub mod provider;
pub mod provider_status;
pub mod revocation;
pub mod spki;
pub mod verify;
