//! Fuzz entry for configuration parsing: arbitrary text through the whole loader.

use std::path::Path;

/// Parses `data` as a config file. Invariants: no panic; an accepted config has a
/// listener and a route; every reported problem is one non-empty line that starts with
/// the file's label (so an operator can always tell which file and key are at fault).
pub fn fuzz_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Relative key paths resolve under a directory that does not exist: no real file
    // is read because of fuzz input, except absolute paths, which the loader caps.
    let base = Path::new("/nonexistent-wsgate-fuzz");
    match crate::config::parse_str(text, base, "fuzz.toml") {
        Ok(config) => {
            assert!(
                !config.server.listen.is_empty(),
                "accepted without a listener"
            );
            assert!(!config.routes.is_empty(), "accepted without a route");
        }
        Err(errors) => {
            let shown = errors.to_string();
            assert!(!shown.trim().is_empty(), "rejected without a reason");
            for line in shown.lines() {
                assert!(
                    line.starts_with("fuzz.toml"),
                    "error line without its file: {line}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds() {
        fuzz_config(b"[server]\nlisten = [\"127.0.0.1:0\"]\n[[route]]\npath = \"/e\"\nbackend = \"echo\"\npublic = true\n");
        fuzz_config(b"[server]\nlisten = 5\n[[route]]\npath = 1\n");
        fuzz_config(b"[[[[");
        fuzz_config(b"");
        fuzz_config(b"[limits]\nmax_frame = \"99999999999999999999GiB\"\n");
    }
}
