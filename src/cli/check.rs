//! `wsgate check -c FILE` (SPEC §2): validate a config file and report every problem.

use std::io::Write;
use std::path::Path;

use crate::config;

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
            for warning in config.warnings() {
                let _ = writeln!(err, "warning: {file}: {warning}");
            }
            let _ = writeln!(
                out,
                "{file}: OK ({}, {}, {})",
                count(config.server.listen.len(), "listener"),
                count(config.routes.len(), "route"),
                count(config.auth.keys.len(), "key"),
            );
            0
        }
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
