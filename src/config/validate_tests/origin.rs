//! [origin]: allowlist entries checked and normalized.

use super::*;
use crate::config::origin::normalize_origin;

#[test]
fn origins_are_checked_and_normalized() {
    assert_eq!(
        normalize_origin("https://App.Example.com").as_deref(),
        Ok("https://app.example.com")
    );
    assert_eq!(
        normalize_origin("https://a.com:443").as_deref(),
        Ok("https://a.com")
    );
    assert_eq!(
        normalize_origin("http://a.com:80").as_deref(),
        Ok("http://a.com")
    );
    assert_eq!(
        normalize_origin("http://a.com:8080").as_deref(),
        Ok("http://a.com:8080")
    );
    assert_eq!(
        normalize_origin("https://*.example.com").as_deref(),
        Ok("https://*.example.com")
    );
    assert_eq!(
        normalize_origin("HTTPS://127.0.0.1:3000").as_deref(),
        Ok("https://127.0.0.1:3000")
    );
    assert_eq!(
        normalize_origin("http://[::1]:3000").as_deref(),
        Ok("http://[::1]:3000")
    );
    for bad in [
        "app.example.com",
        "ftp://a.com",
        "https://a.com/",
        "https://a.com/path",
        "https://a.com?x",
        "https://u@a.com",
        "https://",
        "https://*.com",
        "https://a.*.com",
        "https://*",
        "*",
        "null",
        "https://a.com:0",
        "https://a.com:70000",
        "https://a..com",
        "https://ex ample.com",
        "https://bücher.de",
    ] {
        assert!(normalize_origin(bad).is_err(), "{bad} should be refused");
    }
    let dir = TempDir::new("origin");
    assert_error(
        dir.parse(&format!("{MINIMAL}[origin]\nallow = [\"https://a.com\", \"https://a.com/\"]\n")),
        "origin.allow[1]: an origin has no path, query, fragment or user info; expected \"https://host[:port]\"",
    );
    assert_error(
        dir.parse(&format!(
            "{MINIMAL}[origin]\nallow = [\"https://a.com\", \"https://A.com:443\"]\n"
        )),
        "origin.allow[1]: duplicate origin",
    );
}
