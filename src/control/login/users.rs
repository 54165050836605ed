//! The users file (SPEC §11): who may log in, with which scopes, and the Argon2id hash of
//! each password. Written only by `wsgate user add|remove`, read by the login service at
//! start and on SIGHUP.
//!
//! ```toml
//! # wsgate users file (SPEC §11): written by `wsgate user add|remove`; password hashes only.
//! [[user]]
//! name = "alice"
//! scope = "chat echo"
//! password = "$argon2id$v=19$m=19456,t=2,p=1$...$..."
//! ```
//!
//! Writes replace the file atomically (a temporary file in the same directory, fsync,
//! rename, fsync of the directory) with mode 0600, so that a crash leaves the old file or
//! the new one, never half of one.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::password::check_phc;
use crate::auth::claims::ScopeSet;
use crate::config::{read_file_capped, ReadError};

/// Largest users file read.
pub const MAX_USERS_FILE_BYTES: u64 = 16 << 20;

/// Longest user name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// Longest scope string of a user, in bytes.
pub const MAX_SCOPE_BYTES: usize = 1024;

const HEADER: &str = "# wsgate users file (SPEC §11): written by `wsgate user add|remove`; \
password hashes only (Argon2id).\n";

/// One user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The login name; the `sub` of the tokens issued to it.
    pub name: String,
    /// Space-separated scopes put in its access tokens (may be empty).
    #[serde(default)]
    pub scope: String,
    /// Argon2id PHC string.
    pub password: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    user: Vec<User>,
}

/// Whether `name` may be a user name: 1 to [`MAX_NAME_BYTES`] bytes of ASCII letters,
/// digits and `. _ @ + -` (so it is safe as a `sub`, in a log line and in a TOML string;
/// e-mail addresses fit).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!("a user name has 1 to {MAX_NAME_BYTES} bytes"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'+' | b'-'))
    {
        return Err("a user name holds only ASCII letters, digits and . _ @ + -".to_owned());
    }
    Ok(())
}

/// Whether `scope` is a valid space-separated scope list (the rule tokens are parsed by).
pub fn check_scope(scope: &str) -> Result<(), String> {
    if scope.len() > MAX_SCOPE_BYTES {
        return Err(format!("at most {MAX_SCOPE_BYTES} bytes of scopes"));
    }
    let mut set = ScopeSet::with_capacity(scope.len());
    set.insert_all(scope).map_err(|_| {
        "scopes are space-separated printable ASCII without quotes or backslashes".to_owned()
    })
}

/// Parses a users file's text, checking every entry.
pub fn parse(text: &str) -> Result<Vec<User>, String> {
    let file: File = toml::from_str(text).map_err(|e| e.message().trim_end().to_owned())?;
    let mut seen = std::collections::HashSet::new();
    for (index, user) in file.user.iter().enumerate() {
        let at = |what: String| format!("user[{index}]: {what}");
        check_name(&user.name).map_err(at)?;
        check_scope(&user.scope).map_err(at)?;
        check_phc(&user.password).map_err(at)?;
        if !seen.insert(user.name.as_str()) {
            return Err(at(format!("{} is listed twice", user.name)));
        }
    }
    Ok(file.user)
}

/// Reads the users file; a file that does not exist yet holds no users (`Ok(None)`).
pub fn read(path: &Path) -> Result<Option<Vec<User>>, String> {
    let at = |what: String| format!("{}: {what}", path.display());
    let bytes = match read_file_capped(path, MAX_USERS_FILE_BYTES) {
        Ok(bytes) => bytes,
        Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(at(e.to_string())),
    };
    let text = String::from_utf8(bytes).map_err(|_| at("not UTF-8 text".to_owned()))?;
    parse(&text).map(Some).map_err(at)
}

/// The users file's text for `users`.
pub fn render(users: &[User]) -> String {
    let file = File {
        user: users.to_vec(),
    };
    let body = toml::to_string(&file).unwrap_or_default();
    format!("{HEADER}{body}")
}

/// Replaces the file at `path` with `text`, atomically and durably, mode 0600.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "users".to_owned());
    let temp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// The users a running service knows, by name.
#[derive(Debug, Default)]
pub struct Directory {
    by_name: HashMap<String, Entry>,
}

/// One user as the service needs it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Space-separated scopes.
    pub scope: Arc<str>,
    /// The Argon2id PHC string.
    pub password: Arc<str>,
}

impl Directory {
    /// The directory of `users`.
    pub fn new(users: Vec<User>) -> Directory {
        Directory {
            by_name: users
                .into_iter()
                .map(|u| {
                    (
                        u.name,
                        Entry {
                            scope: u.scope.into(),
                            password: u.password.into(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// The user called `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.by_name.get(name)
    }

    /// How many users.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$mdCsQ5yxO1Bj0m0Q6oYq9vQ1Yz2qNfkc1+yxgTXT6cE";

    fn user(name: &str) -> User {
        User {
            name: name.into(),
            scope: "chat echo".into(),
            password: PHC.into(),
        }
    }

    #[test]
    fn names_and_scopes() {
        for good in ["alice", "a", "alice@example.com", "bob.smith+x_1-2"] {
            check_name(good).unwrap();
        }
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        for bad in [
            "",
            "al ice",
            "al\u{0}ice",
            "al\nice",
            "alïce",
            "a\"b",
            "a/b",
            long.as_str(),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_scope("").unwrap();
        check_scope("chat echo").unwrap();
        assert!(check_scope("a\"b").is_err());
        assert!(check_scope("a\u{1}").is_err());
    }

    #[test]
    fn render_then_parse_round_trips_and_parse_refuses_bad_entries() {
        let users = vec![user("alice"), user("bob")];
        let text = render(&users);
        assert!(text.starts_with("# wsgate users file"));
        assert_eq!(parse(&text).unwrap(), users);
        assert_eq!(parse("").unwrap(), Vec::new());
        let twice = render(&[user("alice"), user("alice")]);
        assert!(parse(&twice).unwrap_err().contains("twice"));
        let plain = "[[user]]\nname = \"a\"\npassword = \"hunter22\"\n";
        assert!(parse(plain).unwrap_err().contains("user[0]"));
        let extra = format!("[[user]]\nname = \"a\"\npassword = \"{PHC}\"\nadmin = true\n");
        assert!(parse(&extra).unwrap_err().contains("unknown field"));
        let bad_name = format!("[[user]]\nname = \"a b\"\npassword = \"{PHC}\"\n");
        assert!(parse(&bad_name).is_err());
    }

    #[test]
    fn write_atomic_replaces_with_mode_0600_and_read_sees_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("wsgate-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users.toml");
        let _ = std::fs::remove_file(&path);
        assert_eq!(read(&path).unwrap(), None);
        write_atomic(&path, &render(&[user("alice")])).unwrap();
        write_atomic(&path, &render(&[user("alice"), user("bob")])).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let users = read(&path).unwrap().unwrap();
        assert_eq!(users.len(), 2);
        let directory = Directory::new(users);
        assert_eq!(&*directory.get("bob").unwrap().scope, "chat echo");
        assert!(directory.get("carol").is_none());
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::write(&path, "[[user]]\nname = 1\n").unwrap();
        assert!(read(&path).unwrap_err().contains("users.toml"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
