//! Access tokens (SPEC §11): EdDSA JWTs signed with the login key, and the documents that
//! let others verify them: the JWK Set (RFC 7517, an OKP key per RFC 8037) and an OpenID
//! Connect Discovery document (OpenID Connect Discovery 1.0 §3).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde_json::json;

use super::store::{Issued, StoreError};
use crate::config::{Login, ED25519_SPKI_PREFIX};

/// Signs access tokens for one issuer.
pub struct Issuer {
    pair: Ed25519KeyPair,
    kid: String,
    issuer: String,
    audience: Option<String>,
    access_ttl: u64,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// The issuer of `[login]`; `audience` is `auth.audience`.
    pub fn new(login: &Login, audience: Option<String>) -> Result<Issuer, String> {
        let pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(&login.signing_key.0).map_err(|_| {
                format!(
                    "login.signing_key: {}: not an Ed25519 PKCS#8 private key",
                    login.signing_key_path.display()
                )
            })?;
        let kid = login.kid.clone();
        Ok(Issuer {
            pair,
            kid,
            issuer: login.issuer.clone(),
            audience,
            access_ttl: login.access_ttl.as_secs().max(1),
        })
    }

    /// The key id in the tokens' header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Access token lifetime, seconds.
    pub fn access_ttl(&self) -> u64 {
        self.access_ttl
    }

    /// The public key as an SPKI DER (what `[[auth.key]]` files hold).
    pub fn public_spki(&self) -> Vec<u8> {
        let mut spki = ED25519_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(self.pair.public_key().as_ref());
        spki
    }

    /// Signs an access token for `sub` with `scope` (SPEC §11: `sub`, `scope`, `jti`,
    /// `iat`, `exp`, `iss`, and `aud` when `auth.audience` is set).
    pub fn mint(&self, sub: &str, scope: &str, now: u64) -> Result<Issued, StoreError> {
        let mut id = [0u8; 16];
        SystemRandom::new()
            .fill(&mut id)
            .map_err(|_| StoreError("no randomness from the operating system".into()))?;
        let jti = URL_SAFE_NO_PAD.encode(id);
        let exp = now.saturating_add(self.access_ttl);
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": self.kid});
        let mut claims = json!({
            "iss": self.issuer,
            "sub": sub,
            "scope": scope,
            "jti": jti,
            "iat": now,
            "exp": exp,
        });
        if let (Some(aud), Some(map)) = (&self.audience, claims.as_object_mut()) {
            map.insert("aud".into(), json!(aud));
        }
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = self.pair.sign(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
        Ok(Issued {
            access_token: token,
            jti,
            exp,
        })
    }

    /// `GET /.well-known/jwks.json`: the public key as a JWK Set.
    pub fn jwks(&self) -> String {
        json!({"keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref()),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        }]})
        .to_string()
    }

    /// `GET /.well-known/openid-configuration`. Endpoints are under the issuer URL, which
    /// is where the operator publishes this listener.
    pub fn discovery(&self) -> String {
        let base = self.issuer.trim_end_matches('/');
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{base}/.well-known/jwks.json"),
            "token_endpoint": format!("{base}/token"),
            "revocation_endpoint": format!("{base}/logout"),
            "grant_types_supported": ["refresh_token"],
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["EdDSA"],
        })
        .to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::auth::keys::{Key, KeySet};
    use crate::auth::verify::{Rules, Scratch, Verifier};

    /// A `[login]` with a fresh key.
    pub(crate) fn login_config(kid: Option<&str>) -> Login {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let public = pair.public_key().as_ref().to_vec();
        Login {
            listen: "127.0.0.1:0".parse().unwrap(),
            users: "users.toml".into(),
            signing_key_path: "issuer.key.pem".into(),
            signing_key: crate::config::SigningKeyDer(pkcs8.as_ref().to_vec()),
            public_key: public.to_vec(),
            kid: kid.map_or_else(|| crate::config::thumbprint(&public), str::to_owned),
            issuer: "https://gw.example.com".into(),
            access_ttl: std::time::Duration::from_secs(300),
            refresh_ttl: std::time::Duration::from_secs(86_400),
            store: "refresh.db".into(),
            failures: "5/m".parse().unwrap(),
        }
    }

    #[test]
    fn minted_tokens_verify_with_the_gateway_verifier_and_carry_every_claim() {
        let issuer = Issuer::new(&login_config(Some("login-1")), Some("wsgate".into())).unwrap();
        let issued = issuer.mint("alice", "chat echo", 1_000_000).unwrap();
        assert_eq!(issued.exp, 1_000_300);
        let public: [u8; 32] = issuer.public_spki()[ED25519_SPKI_PREFIX.len()..]
            .try_into()
            .unwrap();
        let verifier = Verifier {
            keys: KeySet::new(vec![Key::ed25519_raw(Some("login-1".into()), public)]).unwrap(),
            rules: Rules {
                issuer: Some("https://gw.example.com".into()),
                audience: Some("wsgate".into()),
                leeway_secs: 0,
                max_token_bytes: 4096,
                max_lifetime_secs: 86_400,
            },
        };
        let mut scratch = Scratch::new(4096);
        let verified = verifier
            .verify(issued.access_token.as_bytes(), 1_000_001, &mut scratch)
            .unwrap();
        assert_eq!(verified.sub, "alice");
        let payload = issued.access_token.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(claims["iss"], "https://gw.example.com");
        assert_eq!(claims["aud"], "wsgate");
        assert_eq!(claims["scope"], "chat echo");
        assert_eq!(claims["jti"], issued.jti.as_str());
        assert_eq!(claims["iat"], 1_000_000);
        assert_eq!(claims["exp"], 1_000_300);
        // No audience configured: no `aud`.
        let plain = Issuer::new(&login_config(None), None).unwrap();
        let token = plain.mint("bob", "", 5).unwrap().access_token;
        let claims: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert!(claims.get("aud").is_none());
        // Two tokens never share a jti.
        assert_ne!(
            plain.mint("bob", "", 5).unwrap().jti,
            plain.mint("bob", "", 5).unwrap().jti
        );
    }

    #[test]
    fn jwks_and_discovery_documents() {
        let issuer = Issuer::new(&login_config(None), None).unwrap();
        let jwks: serde_json::Value = serde_json::from_str(&issuer.jwks()).unwrap();
        let key = &jwks["keys"][0];
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["crv"], "Ed25519");
        assert_eq!(key["alg"], "EdDSA");
        assert!(key.get("d").is_none(), "no private member");
        let x = URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap();
        // The default kid is the key's own thumbprint.
        assert_eq!(key["kid"], crate::config::thumbprint(&x).as_str());
        assert_eq!(issuer.kid(), crate::config::thumbprint(&x));
        let discovery: serde_json::Value = serde_json::from_str(&issuer.discovery()).unwrap();
        assert_eq!(discovery["issuer"], "https://gw.example.com");
        assert_eq!(
            discovery["jwks_uri"],
            "https://gw.example.com/.well-known/jwks.json"
        );
        assert_eq!(discovery["token_endpoint"], "https://gw.example.com/token");
    }
}
