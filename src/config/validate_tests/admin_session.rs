//! [session] and [admin].

use super::*;

#[test]
fn admin_defaults_when_only_listen_is_given() {
    let dir = TempDir::new("admin");
    let config = dir
        .parse(&format!(
            "{MINIMAL}\n[admin]\nlisten = \"127.0.0.1:9090\"\n"
        ))
        .unwrap();
    let admin = config.admin.unwrap();
    assert_eq!(admin.token_scope, "wsgate:admin");
    assert_eq!(admin.revocation_retention, Duration::from_secs(7 * 86_400));
    assert_eq!(admin.revocation_log, None);
    assert!(config
        .warnings
        .iter()
        .any(|w| w.contains("no revocation_log")));
}

#[test]
fn session_and_admin_rules() {
    let dir = TempDir::new("session");
    assert_error(
        dir.parse(&format!("{MINIMAL}[session]\nrefresh = \"poll\"\n")),
        "session.refresh: expected \"message\" or \"off\", got \"poll\"",
    );
    assert_error(
        dir.parse(&format!("{MINIMAL}[session]\non_expiry = \"warn\"\n")),
        "session.on_expiry: expected \"close\"",
    );
    assert_eq!(
        dir.parse(&format!("{MINIMAL}[session]\nrefresh = \"off\"\n"))
            .unwrap()
            .session
            .refresh,
        Refresh::Off
    );
    assert_error(
        dir.parse(&format!("{MINIMAL}[admin]\ntoken_scope = \"x\"\n")),
        "admin.listen: required",
    );
    assert_error(
        dir.parse(&format!("{MINIMAL}[admin]\nlisten = \"nope\"\n")),
        "admin.listen: expected an IP address and port",
    );
    assert_error(
        dir.parse(&format!("{MINIMAL}[admin]\nlisten = \"127.0.0.1:8080\"\n")),
        "admin.listen: 127.0.0.1:8080 overlaps server.listen[0]",
    );
    assert_error(
        dir.parse(&format!(
            "{MINIMAL}[admin]\nlisten = \"127.0.0.1:9\"\ntoken_scope = \"a b\"\n"
        )),
        "admin.token_scope: \"a b\" is not a scope",
    );
    let config = dir
        .parse(&format!(
            "{MINIMAL}[admin]\nlisten = \"0.0.0.0:9090\"\nrevocation_log = \"r.log\"\n"
        ))
        .unwrap();
    let leeway = dir
        .parse(&format!("{MINIMAL}[auth]\nleeway = \"1h\"\n"))
        .unwrap();
    assert!(leeway
        .warnings()
        .iter()
        .any(|w| w.starts_with("auth.leeway: 1h of allowed clock skew")));
    let warnings = config.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("admin.listen: 0.0.0.0:9090 is not a loopback address")),
        "{warnings:#?}"
    );
}
