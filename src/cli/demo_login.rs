//! The token service of `wsgate serve --demo` (SPEC §2, §11): one user, `demo`, whose
//! password is generated at start (128 random bits) and printed once; never a fixed
//! password. The login key is generated in memory; the users file and the refresh-token
//! store live in a fresh directory under the system temp dir (mode 0700), removed when the
//! demo ends. The login listener is bound here, on the demo's address with a free port, so
//! that the issuer can be its URL.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair as _};

use crate::config::{FailureRate, Login, SigningKeyDer};
use crate::control::login::password;
use crate::control::login::users::{render, write_atomic, User};

/// The demo's user name.
pub const USER: &str = "demo";
/// The demo user's scope.
const SCOPE: &str = "demo";
/// Access tokens of the demo: short, so that the page's countdown moves.
const ACCESS_TTL: Duration = Duration::from_secs(300);
/// A login lasts a day at most.
const REFRESH_TTL: Duration = Duration::from_secs(86_400);

/// A directory removed (with what it holds) on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    /// A fresh directory `wsgate-demo-<pid>-<random>` under the system temp dir, mode 0700.
    fn create() -> Result<Scratch, String> {
        let mut nonce = [0u8; 8];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| "demo: the system random generator failed".to_owned())?;
        let path = std::env::temp_dir().join(format!(
            "wsgate-demo-{}-{}",
            std::process::id(),
            URL_SAFE_NO_PAD.encode(nonce)
        ));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        // `create`, not `create_all`: a directory that already exists is refused.
        builder
            .create(&path)
            .map_err(|e| format!("demo: cannot create {}: {e}", path.display()))?;
        Ok(Scratch(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The demo's token service, ready to start.
pub struct DemoLogin {
    /// `[login]` of the demo configuration.
    pub login: Login,
    /// The login listener, bound.
    pub listener: std::net::TcpListener,
    /// Its address.
    pub addr: SocketAddr,
    /// The demo user's password (printed once at start, never logged).
    pub password: String,
    /// Holds the users file and the store; removed on drop.
    pub scratch: Scratch,
}

/// Binds the login listener on `ip` (any free port), makes the key, the password, the
/// users file and the store's directory.
pub fn prepare(ip: std::net::IpAddr) -> Result<DemoLogin, String> {
    let listener = std::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .map_err(|e| format!("demo: cannot listen for logins on {ip}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("demo: login listener: {e}"))?;
    let rng = SystemRandom::new();
    let mut secret = [0u8; 16];
    rng.fill(&mut secret)
        .map_err(|_| "demo: the system random generator failed".to_owned())?;
    let password = URL_SAFE_NO_PAD.encode(secret);
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| "demo: the system random generator failed".to_owned())?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| "demo: generated key did not parse".to_owned())?;
    let scratch = Scratch::create()?;
    let users = scratch.path().join("users.toml");
    let user = User {
        name: USER.to_owned(),
        scope: SCOPE.to_owned(),
        password: password::hash(password.as_bytes()).map_err(|e| format!("demo: {e}"))?,
    };
    write_atomic(&users, &render(&[user]))
        .map_err(|e| format!("demo: cannot write {}: {e}", users.display()))?;
    let shown = super::revoke::reach(addr);
    let login = Login {
        listen: addr,
        users,
        signing_key_path: PathBuf::from("(in memory)"),
        signing_key: SigningKeyDer(pkcs8.as_ref().to_vec()),
        public_key: pair.public_key().as_ref().to_vec(),
        kid: "demo-login".to_owned(),
        // The login listener's own URL: the discovery document's URLs point at it.
        issuer: format!("http://{shown}"),
        access_ttl: ACCESS_TTL,
        refresh_ttl: REFRESH_TTL,
        store: scratch.path().join("refresh.db"),
        failures: FailureRate {
            count: 5,
            period: Duration::from_secs(60),
        },
    };
    Ok(DemoLogin {
        login,
        listener,
        addr,
        password,
        scratch,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_start_has_its_own_password_key_and_directory_and_cleans_up() {
        let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        let one = prepare(ip).unwrap();
        let two = prepare(ip).unwrap();
        assert_ne!(one.password, two.password);
        assert_eq!(one.password.len(), 22, "128 bits, base64url");
        assert_ne!(one.login.public_key, two.login.public_key);
        assert_ne!(one.scratch.path(), two.scratch.path());
        assert_ne!(one.addr.port(), 0);
        assert_eq!(one.login.issuer, format!("http://{}", one.addr));
        let users = crate::control::login::users::read(&one.login.users)
            .unwrap()
            .unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].name, USER);
        assert!(password::verify(
            &users[0].password,
            one.password.as_bytes()
        ));
        assert!(!std::fs::read_to_string(&one.login.users)
            .unwrap()
            .contains(&one.password));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(one.scratch.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        let dir = one.scratch.path().to_path_buf();
        drop(one);
        assert!(!dir.exists(), "removed with the demo");
    }
}
