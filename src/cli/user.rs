//! `wsgate user add|remove|list` (SPEC §11): the users file of `[login]`.
//!
//! `add` reads the password from a prompt when stdin is a terminal (twice, not echoed),
//! else one line of stdin; it stores only the Argon2id hash. `remove` deletes the entry
//! and revokes the user's tokens: it posts `{"sub":NAME,"before":now+1}` to the admin listener (as
//! `wsgate revoke` does, with a 60-second admin token signed by the login key), so that
//! live sockets close 4403 and refresh tokens die; when the gateway is not running it
//! records the revocation in the refresh-token store, applied at the next start.

use std::io::{BufRead as _, IsTerminal as _};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use super::revoke::{post, reach};
use super::run::Failure;
use super::token::{mint, MintOptions};
use crate::clock;
use crate::config::{Config, Login};
use crate::control::login::issue::Issuer;
use crate::control::login::password::{hash, MAX_PASSWORD_BYTES, MIN_PASSWORD_BYTES};
use crate::control::login::store::Store;
use crate::control::login::users::{check_name, check_scope, read, render, write_atomic, User};

fn failure(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        code: 1,
    }
}

fn login_section<'c>(config_path: &Path, config: &'c Config) -> Result<&'c Login, Failure> {
    config.login.as_ref().ok_or_else(|| {
        failure(format!(
            "{}: no [login] section: users belong to the token service",
            config_path.display()
        ))
    })
}

fn users_of(login: &Login) -> Result<Vec<User>, Failure> {
    read(&login.users)
        .map(Option::unwrap_or_default)
        .map_err(|e| failure(format!("login.users: {e}")))
}

/// Checks a password's length and that it is one line.
fn check_password(password: &str) -> Result<(), Failure> {
    if password.len() < MIN_PASSWORD_BYTES {
        return Err(failure(format!(
            "user add: the password must have at least {MIN_PASSWORD_BYTES} bytes"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(failure(format!(
            "user add: the password must have at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    if password.contains(['\n', '\r', '\0']) {
        return Err(failure("user add: the password must be one line"));
    }
    Ok(())
}

/// One line of `input` without its line ending; at most `MAX_PASSWORD_BYTES` + 2 bytes
/// are read.
pub fn password_line(input: impl std::io::Read) -> Result<String, Failure> {
    let mut line = Vec::new();
    std::io::BufReader::new(input.take(MAX_PASSWORD_BYTES as u64 + 2))
        .read_until(b'\n', &mut line)
        .map_err(|e| {
            failure(format!(
                "user add: cannot read the password from stdin: {e}"
            ))
        })?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    String::from_utf8(line).map_err(|_| failure("user add: the password is not UTF-8"))
}

fn read_password(name: &str) -> Result<String, Failure> {
    if !std::io::stdin().is_terminal() {
        return password_line(std::io::stdin().lock());
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt)
            .map_err(|e| failure(format!("user add: cannot read the password: {e}")))
    };
    let first = ask(&format!("Password for {name}: "))?;
    check_password(&first)?;
    if ask("Again: ")? != first {
        return Err(failure("user add: the passwords differ"));
    }
    Ok(first)
}

/// `wsgate user add NAME [--scope "a b"] -c FILE`, with the password given.
pub fn add(
    config_path: &Path,
    config: &Config,
    name: &str,
    scope: &str,
    password: Option<String>,
) -> Result<(), Failure> {
    let login = login_section(config_path, config)?;
    check_name(name).map_err(|e| failure(format!("user add: {name:?}: {e}")))?;
    check_scope(scope).map_err(|e| failure(format!("user add: --scope: {e}")))?;
    let mut users = users_of(login)?;
    if users.iter().any(|u| u.name == name) {
        return Err(failure(format!(
            "user add: {name} already exists in {} (remove it first to change its password or scopes)",
            login.users.display()
        )));
    }
    let password = match password {
        Some(password) => password,
        None => read_password(name)?,
    };
    check_password(&password)?;
    let hashed = hash(password.as_bytes()).map_err(|e| failure(format!("user add: {e}")))?;
    users.push(User {
        name: name.to_owned(),
        scope: scope.to_owned(),
        password: hashed,
    });
    write_atomic(&login.users, &render(&users))
        .map_err(|e| failure(format!("login.users: {}: {e}", login.users.display())))?;
    println!(
        "added {name} (scope {scope:?}) to {}; a running gateway reads it at its next login (or on SIGHUP)",
        login.users.display()
    );
    Ok(())
}

/// `wsgate user list -c FILE`.
pub fn list(config_path: &Path, config: &Config) -> Result<(), Failure> {
    let login = login_section(config_path, config)?;
    let users = users_of(login)?;
    if users.is_empty() {
        println!("no users in {}", login.users.display());
    }
    for user in users {
        println!("{}\t{}", user.name, user.scope);
    }
    Ok(())
}

/// `wsgate user remove NAME -c FILE`.
pub fn remove(config_path: &Path, config: &Config, name: &str) -> Result<(), Failure> {
    let login = login_section(config_path, config)?;
    let mut users = users_of(login)?;
    let before = users.len();
    users.retain(|u| u.name != name);
    if users.len() == before {
        return Err(failure(format!(
            "user remove: no user {name:?} in {}",
            login.users.display()
        )));
    }
    write_atomic(&login.users, &render(&users))
        .map_err(|e| failure(format!("login.users: {}: {e}", login.users.display())))?;
    println!("removed {name} from {}", login.users.display());
    revoke_user(config, login, name)
}

/// Revokes `name`'s tokens through the running gateway, or records the revocation for its
/// next start.
fn revoke_user(config: &Config, login: &Login, name: &str) -> Result<(), Failure> {
    let now = clock::unix_now();
    let Some(admin) = &config.admin else {
        return record_pending(
            login,
            name,
            now,
            "there is no [admin] listener to tell a running gateway",
        );
    };
    let addr = reach(admin.listen);
    match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return record_pending(
                login,
                name,
                now,
                &format!("the gateway is not running (nothing listens on {addr})"),
            );
        }
        Err(e) => {
            return Err(failure(format!(
                "user remove: admin listener {addr} (admin.listen): {e}"
            )))
        }
    }
    let issuer = Issuer::new(login, config.auth.audience.clone()).map_err(failure)?;
    let token = mint(
        &MintOptions {
            key_file: login.signing_key_path.clone(),
            alg: None,
            kid: Some(issuer.kid().to_owned()),
            sub: "wsgate-user".into(),
            ttl_secs: 60,
            scope: Some(admin.token_scope.clone()),
            aud: config.auth.audience.clone(),
            iss: Some(login.issuer.clone()),
            jti: None,
            claims: Vec::new(),
        },
        now,
    )
    .map_err(failure)?;
    // `before` is exclusive and in whole seconds: one second past now also covers a token
    // issued within the current second.
    let body = serde_json::json!({ "sub": name, "before": now + 1 }).to_string();
    let answer = post(addr, "/revoke", &token, &body).map_err(|e| {
        failure(format!(
            "user remove: admin listener {addr} (admin.listen): {e}"
        ))
    })?;
    if answer.status != 200 {
        return Err(failure(format!(
            "user remove: admin listener {addr} answered {}: {}",
            answer.status,
            answer.body.lines().next().unwrap_or("")
        )));
    }
    println!("revoked {name}'s tokens: {}", answer.body);
    Ok(())
}

fn record_pending(login: &Login, name: &str, now: u64, why: &str) -> Result<(), Failure> {
    let store = Store::open(&login.store, now).map_err(|e| {
        failure(format!(
            "user remove: {why}, and the refresh-token store cannot be opened to record the revocation: {e}"
        ))
    })?;
    store
        .add_pending(name, now + 1)
        .map_err(|e| failure(format!("user remove: login.store: {e}")))?;
    println!("{why}: the revocation of {name}'s tokens is recorded and applied at the gateway's next start");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn password_line_takes_one_line_without_its_ending() {
        assert_eq!(
            password_line(&b"hunter2hunter2\n"[..]).unwrap(),
            "hunter2hunter2"
        );
        assert_eq!(
            password_line(&b"pw with spaces\r\nsecond line"[..]).unwrap(),
            "pw with spaces"
        );
        assert_eq!(password_line(&b"no newline"[..]).unwrap(), "no newline");
        // A megabyte on stdin is cut, then refused as too long; nothing more is read.
        let long = vec![b'a'; 1 << 20];
        let line = password_line(&long[..]).unwrap();
        assert_eq!(line.len(), MAX_PASSWORD_BYTES + 2);
        assert!(check_password(&line).is_err());
        assert!(check_password("short").is_err());
        check_password("long enough").unwrap();
        assert!(password_line(&[0xff, 0xfe, b'\n'][..]).is_err());
    }
}
