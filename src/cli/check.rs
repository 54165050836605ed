//! `wsgate check -c FILE` (SPEC §2): validate a config file and report every problem.

use std::io::Write;
use std::path::Path;

use crate::auth::revocation::replay;
use crate::config::{self, Config};
use crate::gate::origin::OriginPolicy;
use crate::net::{server, tls};

/// Loads and validates `path`. Errors go to stderr, one line each, and give 1; otherwise
/// warnings go to stderr (`warning: ...`), a one-line summary to stdout, and it gives 0.
pub fn run_check(path: &Path) -> i32 {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    run_check_to(path, &mut stdout.lock(), &mut stderr.lock())
}

/// [`run_check`] writing to the given streams. Write failures (a closed pipe) are
/// ignored: the exit status still tells the outcome.
pub fn run_check_to(path: &Path, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match config::load(path) {
        Err(errors) => {
            for line in errors.lines() {
                let _ = writeln!(err, "{line}");
            }
            1
        }
        Ok(config) => {
            let file = path.display();
            let refusals = start_refusals(&config);
            if !refusals.is_empty() {
                for r in refusals {
                    let _ = writeln!(err, "{file}: {r}");
                }
                return 1;
            }
            for warning in config.warnings() {
                let _ = writeln!(err, "warning: {file}: {warning}");
            }
            let _ = writeln!(
                out,
                "{file}: OK ({}, {}, {})",
                count(config.server.listen.len(), "listener"),
                count(config.routes.len(), "route"),
                count(
                    config.auth.keys.len() + usize::from(config.login.is_some()),
                    "key"
                ),
            );
            0
        }
    }
}

/// What `serve` would refuse at start in a config that loads, found without binding,
/// fetching or resolving anything (SPEC §2): upstream TLS trust that cannot be built, keys the verifier
/// cannot use, origin patterns, a TLS pair rustls refuses, and a revocation log that
/// cannot be opened or replayed. Binding the listeners is left to `serve`.
pub fn start_refusals(config: &Config) -> Vec<String> {
    let mut refusals = Vec::new();
    if let Err(e) = server::upstream_tls(config) {
        refusals.push(e);
    }
    if let Err(e) = server::build_verifier(config) {
        refusals.push(e);
    }
    if let Err(e) = OriginPolicy::new(&config.origin.allow, config.origin.allow_missing) {
        refusals.push(format!("origin.allow: {e}"));
    }
    if let Some(files) = &config.tls {
        if let Err(e) = tls::server_config(files.cert_chain.clone(), files.key.clone_key()) {
            refusals.push(e);
        }
    }
    if let Some(log) = config
        .admin
        .as_ref()
        .and_then(|a| a.revocation_log.as_ref())
    {
        if let Err(e) = check_revocation_log(log) {
            refusals.push(format!(
                "admin.revocation_log: revocation log {}: {e}",
                log.display()
            ));
        }
    }
    if let Some(login) = &config.login {
        // SPEC §11: `serve` reads the users file and opens the store at start. The store is
        // not opened here (that would lock it under a running gateway): its file must be a
        // writable regular file, or its directory must exist.
        if let Err(e) = crate::control::login::users::read(&login.users) {
            refusals.push(format!("login.users: {e}"));
        }
        if let Err(e) = check_new_or_writable(&login.store) {
            refusals.push(format!(
                "login.store: refresh-token store {}: {e}",
                login.store.display()
            ));
        }
    }
    refusals
}

/// A file `serve` will open for writing: an existing one must be a writable regular file;
/// a new one needs its directory.
fn check_new_or_writable(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => Err("cannot open: not a regular file".into()),
        Ok(meta) if meta.permissions().readonly() => Err("cannot open: read-only".into()),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if dir.is_dir() {
                Ok(())
            } else {
                Err(format!(
                    "cannot open: its directory {} does not exist",
                    dir.display()
                ))
            }
        }
        Err(e) => Err(format!("cannot open: {e}")),
    }
}

/// The revocation log opens and replays as `serve` would open it, without creating it:
/// an existing file must be a readable, writable log; a new one needs its directory.
fn check_revocation_log(log: &Path) -> Result<(), String> {
    match std::fs::metadata(log) {
        Ok(meta) if !meta.is_file() => Err("cannot open: not a regular file".into()),
        Ok(meta) => {
            if meta.permissions().readonly() {
                return Err("cannot open: read-only".into());
            }
            let contents = std::fs::read(log).map_err(|e| format!("cannot read: {e}"))?;
            replay(&contents)
                .map(|_| ())
                .map_err(|e| format!("cannot replay: {e}"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = match log.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if dir.is_dir() {
                Ok(())
            } else {
                Err(format!(
                    "cannot open: its directory {} does not exist",
                    dir.display()
                ))
            }
        }
        Err(e) => Err(format!("cannot open: {e}")),
    }
}

/// "1 route", "3 routes".
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn check(name: &str, text: &str) -> (i32, String, String) {
        let dir = std::env::temp_dir().join(format!("wsgate-check-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wsgate.toml");
        std::fs::write(&path, text).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = run_check_to(&path, &mut out, &mut err);
        let _ = std::fs::remove_dir_all(&dir);
        let path = path.display().to_string();
        let out = String::from_utf8(out)
            .unwrap()
            .replace(&path, "wsgate.toml");
        let err = String::from_utf8(err)
            .unwrap()
            .replace(&path, "wsgate.toml");
        (status, out, err)
    }

    #[test]
    fn a_good_file_gives_a_summary_and_warnings() {
        let (status, out, err) = check(
            "good",
            "[server]\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n[[route]]\npath = \"/public/prices\"\nbackend = \"echo\"\npublic = true\n",
        );
        assert_eq!(status, 0);
        assert_eq!(out, "wsgate.toml: OK (2 listeners, 1 route, 0 keys)\n");
        assert_eq!(err, "warning: wsgate.toml: route[0]: public = true: no token is required on /public/prices\n");
    }

    #[test]
    fn a_bad_file_lists_every_error_and_gives_1() {
        let (status, out, err) = check("bad", "[server]\nlisten = \"x\"\n[[route]]\npath = \"p\"\nbackend = \"echo\"\npublic = true\n");
        assert_eq!(status, 1);
        assert_eq!(out, "");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{err}");
        assert!(
            lines[0].starts_with("wsgate.toml: server.listen[0]: expected an IP address"),
            "{err}"
        );
        assert_eq!(
            lines[1],
            "wsgate.toml: route[0].path: must start with '/' (line 4)"
        );
    }

    #[test]
    fn whatever_serve_refuses_at_start_check_refuses() {
        let base = "[server]\nlisten = [\"127.0.0.1:1\"]\n";
        // A wss:// upstream whose upstream_ca is PEM but not a certificate rustls can use.
        let ca =
            std::env::temp_dir().join(format!("wsgate-check-{}-bad-ca.pem", std::process::id()));
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let (status, _, err) = check(
            "wss",
            &format!("{base}[[route]]\npath = \"/p\"\nupstream = [\"wss://10.0.0.1/x\"]\nupstream_ca = {:?}\npublic = true\n", ca.display().to_string()),
        );
        let _ = std::fs::remove_file(&ca);
        assert_eq!(status, 1);
        assert!(
            err.starts_with("wsgate.toml: route[0].upstream_ca: not a usable CA certificate"),
            "{err}"
        );
        // An upstream host that does not resolve is not check's business (nothing resolves).
        let (status, out, err) = check(
            "dns",
            &format!("{base}[[route]]\npath = \"/p\"\nupstream = [\"ws://no-such-host.invalid/x\"]\npublic = true\n"),
        );
        assert_eq!(status, 0, "{err}");
        assert!(out.contains("OK"), "{out}");
        let (status, _, err) = check(
            "revlog-dir",
            &format!("{base}[admin]\nlisten = \"127.0.0.1:2\"\nrevocation_log = \"missing/dir/rev.log\"\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n"),
        );
        assert_eq!(status, 1);
        assert!(
            err.starts_with("wsgate.toml: admin.revocation_log: revocation log "),
            "{err}"
        );
        assert!(err.contains("missing/dir does not exist"), "{err}");
    }

    #[test]
    fn a_corrupt_revocation_log_is_refused_and_a_good_one_is_not_touched() {
        let dir = std::env::temp_dir().join(format!("wsgate-check-{}-revlog", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wsgate.toml");
        std::fs::write(&path, "[server]\nlisten = [\"127.0.0.1:1\"]\n[admin]\nlisten = \"127.0.0.1:2\"\nrevocation_log = \"rev.log\"\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n").unwrap();
        let run = || {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let status = run_check_to(&path, &mut out, &mut err);
            (status, String::from_utf8(err).unwrap())
        };
        assert_eq!(run().0, 0);
        assert!(!dir.join("rev.log").exists(), "check creates nothing");
        std::fs::write(dir.join("rev.log"), "this is not a revocation\n").unwrap();
        let (status, err) = run();
        assert_eq!(status, 1);
        assert!(err.contains("cannot replay"), "{err}");
        std::fs::remove_file(dir.join("rev.log")).unwrap();
        std::fs::create_dir(dir.join("rev.log")).unwrap();
        let (status, err) = run();
        assert_eq!(status, 1);
        assert!(err.contains("not a regular file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_file_gives_1() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = run_check_to(Path::new("/nonexistent/wsgate.toml"), &mut out, &mut err);
        assert_eq!(status, 1);
        let err = String::from_utf8(err).unwrap();
        assert!(
            err.starts_with("/nonexistent/wsgate.toml: cannot read: "),
            "{err}"
        );
    }
}
