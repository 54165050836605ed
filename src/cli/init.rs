//! `wsgate init DIR` (SPEC §2): a working starting point. `DIR/wsgate.toml` is the
//! annotated reference (every key with its default and one line on its purpose), with an
//! echo route, an admin listener on loopback and localhost origins; an Ed25519 key pair
//! goes under `DIR/keys/`. Nothing is ever overwritten: any file already there stops
//! `init` before it writes anything.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::auth::keys::Alg;

/// The configuration `init` writes.
pub const CONFIG: &str = include_str!("init.toml");

/// What `init` wrote.
#[derive(Debug)]
pub struct Written {
    /// `DIR/wsgate.toml`.
    pub config: PathBuf,
    /// `DIR/keys/gateway.key.pem` (the signing key: keep it off the gateway host in production).
    pub private_key: PathBuf,
    /// `DIR/keys/gateway.pub.pem`.
    pub public_key: PathBuf,
}

/// Writes the starting point into `dir` (created when missing).
pub fn init(dir: &Path) -> Result<Written, String> {
    let config = dir.join("wsgate.toml");
    let keys = dir.join("keys");
    let prefix = keys.join("gateway");
    let private_key = keys.join("gateway.key.pem");
    let public_key = keys.join("gateway.pub.pem");
    for path in [&config, &private_key, &public_key] {
        if fs::symlink_metadata(path).is_ok() {
            return Err(format!(
                "{}: already exists; init never overwrites (choose another DIR)",
                path.display()
            ));
        }
    }
    for d in [dir.to_path_buf(), keys.clone(), dir.join("data")] {
        fs::create_dir_all(&d).map_err(|e| format!("{}: cannot create: {e}", d.display()))?;
    }
    super::keygen::keygen(Alg::EdDSA, &prefix)?;
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&config)
        .and_then(|mut f| f.write_all(CONFIG.as_bytes()).and_then(|()| f.sync_all()));
    if let Err(e) = written {
        return Err(format!("{}: cannot write: {e}", config.display()));
    }
    Ok(Written {
        config,
        private_key,
        public_key,
    })
}

/// A path as a shell word (single-quoted unless plainly safe).
pub fn shell_word(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:=@,+".contains(c))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// The next three commands (serve, mint, connect) and how to revoke, for `program`.
pub fn next_steps(program: &str, written: &Written) -> String {
    let program = shell_word(program);
    let config = shell_word(&written.config.display().to_string());
    let key = shell_word(&written.private_key.display().to_string());
    let connect = super::demo::node_command("ws://127.0.0.1:8080/echo", "\"$TOKEN\"");
    format!(
        "wrote {config}, {key} and {public}\n\
         \n\
         Next, in one terminal:\n\
         \x20 {program} serve -c {config}\n\
         In another:\n\
         \x20 TOKEN=$({program} token mint --key {key} --kid main --sub alice --ttl 15m --scope echo --jti alice-1)\n\
         \x20 {connect}\n\
         Then revoke that token (a live connection is closed with 4403):\n\
         \x20 {program} revoke -c {config} --jti alice-1 --key {key} --kid main\n",
        public = shell_word(&written.public_key.display().to_string()),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wsgate-init-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn writes_a_config_that_loads_and_never_overwrites() {
        let dir = temp("ok");
        let written = init(&dir).unwrap();
        let config = crate::config::load(&written.config).unwrap();
        assert_eq!(config.routes.len(), 1);
        assert!(config.admin.is_some());
        assert!(config.warnings().is_empty(), "{:?}", config.warnings());
        let again = init(&dir).unwrap_err();
        assert!(
            again.contains("already exists; init never overwrites"),
            "{again}"
        );
        assert_eq!(fs::read_to_string(&written.config).unwrap(), CONFIG);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_reference_holds_the_defaults() {
        let dir = temp("defaults");
        let written = init(&dir).unwrap();
        let reference = crate::config::load(&written.config).unwrap();
        // The same file with every optional line removed: what remains is defaults.
        let minimal = "[server]\nlisten = [\"127.0.0.1:8080\"]\n[[auth.key]]\nkid = \"main\"\nalg = \"EdDSA\"\npublic_key = \"keys/gateway.pub.pem\"\n[admin]\nlisten = \"127.0.0.1:9090\"\nrevocation_log = \"data/revocations.log\"\n[[route]]\npath = \"/echo\"\nbackend = \"echo\"\nscope = [\"echo\"]\n";
        let minimal_path = dir.join("minimal.toml");
        fs::write(&minimal_path, minimal).unwrap();
        let defaults = crate::config::load(&minimal_path).unwrap();
        let show = |c: &crate::config::Config| {
            format!(
                "{:?} {:?} {:?} {} {:?} {} {} {:?} {:?} {:?} {:?} {:?}",
                c.limits,
                c.compression,
                c.session,
                c.server.workers,
                c.server.max_connections,
                c.auth.leeway.as_secs(),
                c.auth.max_token_bytes,
                c.auth.max_lifetime,
                c.auth.sources,
                c.auth.explain_to_browsers,
                c.admin
                    .as_ref()
                    .map(|a| (&a.token_scope, a.revocation_retention)),
                c.routes,
            )
        };
        assert_eq!(show(&reference), show(&defaults));
        assert_eq!(
            reference.server.shutdown_grace,
            defaults.server.shutdown_grace
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_existing_key_stops_it_before_any_write() {
        let dir = temp("key");
        fs::create_dir_all(dir.join("keys")).unwrap();
        fs::write(dir.join("keys/gateway.pub.pem"), "mine").unwrap();
        assert!(init(&dir).unwrap_err().contains("gateway.pub.pem"));
        assert!(!dir.join("wsgate.toml").exists());
        assert!(!dir.join("keys/gateway.key.pem").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_line_of_the_reference_is_annotated() {
        for line in CONFIG.lines() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') || t.starts_with('[') && !t.contains('=') {
                continue;
            }
            assert!(t.contains(" # "), "no comment on {line:?}");
        }
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("a/b.toml"), "a/b.toml");
        assert_eq!(shell_word("my dir/x"), "'my dir/x'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
