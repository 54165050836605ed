//! Loading: unknown keys, every error with its path and line, the entry points.

#![allow(clippy::unwrap_used)]
use super::document::{closest, edit_distance, unknown_key_message};
use super::*;

fn errors(text: &str) -> Vec<String> {
    parse_str(text, Path::new("/nonexistent"), "wsgate.toml")
        .unwrap_err()
        .lines()
}

fn has(lines: &[String], expected: &str) -> bool {
    lines.iter().any(|line| line.contains(expected))
}

const BASE: &str = "[server]\nlisten = \"127.0.0.1:8080\"\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n";

#[test]
fn unknown_keys_are_refused_at_every_level_with_their_path() {
    let cases = [
        ("[serverr]\n", "wsgate.toml: serverr: unknown key (did you mean `server`?); expected one of `server`, `tls`"),
        ("[[routes]]\npath = \"/x\"\n", "routes: unknown key (did you mean `route`?)"),
        ("[tls]\ncert = \"c\"\nkey = \"k\"\nchain = \"x\"\n", "tls.chain: unknown key"),
        ("[auth]\nissuers = \"x\"\n", "auth.issuers: unknown key (did you mean `issuer`?)"),
        ("[[auth.key]]\nalg = \"EdDSA\"\npublic_key = \"k\"\npublickey = \"k\"\n", "auth.key[0].publickey: unknown key (did you mean `public_key`?)"),
        ("[origin]\nallowed = []\n", "origin.allowed: unknown key (did you mean `allow`?)"),
        ("[limits]\nmax_frames = \"1MiB\"\n", "limits.max_frames: unknown key (did you mean `max_frame`?)"),
        ("[session]\nrefresh_mode = \"off\"\n", "session.refresh_mode: unknown key"),
        ("[admin]\nlisten = \"127.0.0.1:9\"\nscope = \"x\"\n", "admin.scope: unknown key"),
        ("[[route]]\npath = \"/q\"\nbackend = \"echo\"\npublic = true\nscopes = [\"a\"]\n", "route[1].scopes: unknown key (did you mean `scope`?)"),
    ];
    for (extra, expected) in cases {
        let lines = errors(&format!("{BASE}{extra}"));
        assert!(has(&lines, expected), "{expected:?} not in {lines:#?}");
    }
    let lines = errors(&format!("nonsense = 1\n{BASE}"));
    assert!(
        has(
            &lines,
            "wsgate.toml: nonsense: unknown key; expected one of `server`"
        ),
        "{lines:#?}"
    );
    // The server section given twice over: unknown keys next to good ones.
    let lines = errors("[server]\nlisten = \"127.0.0.1:8080\"\nlisen = \"x\"\nworker = 2\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n");
    assert!(
        has(&lines, "server.lisen: unknown key (did you mean `listen`?)"),
        "{lines:#?}"
    );
    assert!(
        has(
            &lines,
            "server.worker: unknown key (did you mean `workers`?)"
        ),
        "{lines:#?}"
    );
    assert_eq!(lines.len(), 2, "{lines:#?}");
}

#[test]
fn unknown_key_lines_point_at_the_key() {
    let lines = errors("[server]\nlisten = \"127.0.0.1:8080\"\n\n[limits]\nmax_frame = \"1MiB\"\nmax_fram = \"1MiB\"\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].starts_with("wsgate.toml: limits.max_fram: unknown key"),
        "{}",
        lines[0]
    );
    assert!(lines[0].ends_with("(line 6)"), "{}", lines[0]);
}

#[test]
fn syntax_errors_name_the_line() {
    let lines = errors("[server]\nlisten = \"127.0.0.1:8080\"\nworkers = \n");
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].starts_with("wsgate.toml: TOML syntax: "),
        "{}",
        lines[0]
    );
    assert!(lines[0].ends_with("(line 3)"), "{}", lines[0]);
    let lines = errors("[server\nlisten = 1\n");
    assert_eq!(lines.len(), 1);
    assert!(!lines[0].contains('\n'));
    assert!(
        lines[0].starts_with("wsgate.toml: TOML syntax: invalid table header; expected"),
        "{}",
        lines[0]
    );
    let lines = errors(&format!("\"a\\nb\" = 1\n{BASE}"));
    assert!(
        lines[0].starts_with("wsgate.toml: a\\nb: unknown key"),
        "{}",
        lines[0]
    );
    // A repeated key is a syntax error too: it must not silently override.
    let lines = errors("[server]\nlisten = \"127.0.0.1:8080\"\nlisten = \"127.0.0.1:9\"\n");
    assert!(has(&lines, "duplicate key"), "{lines:#?}");
    assert!(lines[0].ends_with("(line 3)"), "{}", lines[0]);
}

#[test]
fn sections_of_the_wrong_shape() {
    let lines = errors("server = 5\nroute = 3\n");
    // Nothing about what is inside them ("server.listen: required", "route: at least one").
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        has(
            &lines,
            "wsgate.toml: server: expected a table, found integer (line 1)"
        ),
        "{lines:#?}"
    );
    assert!(
        has(
            &lines,
            "wsgate.toml: route: expected an array of tables ([[route]]), found integer (line 2)"
        ),
        "{lines:#?}"
    );
    let lines = errors(&format!("{BASE}[auth]\nkey = \"k\"\n"));
    assert!(
        has(
            &lines,
            "auth.key: expected an array of tables ([[auth.key]]), found string"
        ),
        "{lines:#?}"
    );
    let lines = errors(&format!("{BASE}[[auth.key]]\nalg = 5\n"));
    assert!(
        has(
            &lines,
            "auth.key[0].alg: invalid type: integer `5`, expected a string"
        ),
        "{lines:#?}"
    );
    // Only that error: the missing-alg rule does not repeat it.
    assert_eq!(lines.len(), 1, "{lines:#?}");
}

#[test]
fn type_errors_name_the_key_and_the_format() {
    let lines = errors(&format!("{BASE}[limits]\nidle_timeout = \"60\"\nmessages = 5\n[auth]\nexplain_to_browsers = \"yes\"\n"));
    assert!(has(&lines, "limits.idle_timeout: expected a duration like \"30s\" (units: ms, s, m, h, d), got \"60\": the unit is missing"), "{lines:#?}");
    assert!(
        has(
            &lines,
            "limits.messages: invalid type: integer `5`, expected a rate like \"50/s\""
        ),
        "{lines:#?}"
    );
    assert!(
        has(
            &lines,
            "auth.explain_to_browsers: invalid type: string \"yes\", expected a boolean"
        ),
        "{lines:#?}"
    );
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let lines = errors(&format!(
        "{BASE}[limits]\nidle_timeout = 1979-05-27\nmax_frame = 1.5\n"
    ));
    assert!(has(&lines, "limits.idle_timeout: expected a duration like \"30s\" (units: ms, s, m, h, d), got \"1979-05-27\""), "{lines:#?}");
    assert!(
        has(
            &lines,
            "limits.max_frame: invalid type: floating point `1.5`, expected a size"
        ),
        "{lines:#?}"
    );
    assert!(lines[0].ends_with("(line 8)"), "{lines:#?}");
}

#[test]
fn load_reads_the_file_and_resolves_against_its_directory() {
    let dir = std::env::temp_dir().join(format!("wsgate-config-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("wsgate.toml");
    std::fs::write(
        &path,
        format!("{BASE}[admin]\nlisten = \"127.0.0.1:9\"\nrevocation_log = \"data/r.log\"\n"),
    )
    .unwrap();
    let config = load(&path);
    let missing = load(&dir.join("missing.toml"));
    std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
    let not_utf8 = load(&path);
    std::fs::write(&path, vec![b'#'; (MAX_CONFIG_BYTES + 1) as usize]).unwrap();
    let too_large = load(&path);
    let _ = std::fs::remove_dir_all(&dir);

    let config = config.unwrap();
    assert_eq!(config.source_path, path);
    assert_eq!(
        config.admin.unwrap().revocation_log,
        Some(dir.join("data/r.log"))
    );
    let missing = missing.unwrap_err().lines();
    assert_eq!(missing.len(), 1);
    assert!(
        missing[0].ends_with("missing.toml: cannot read: No such file or directory (os error 2)"),
        "{}",
        missing[0]
    );
    assert!(not_utf8
        .unwrap_err()
        .to_string()
        .ends_with("wsgate.toml: not UTF-8 text (TOML files are UTF-8)"));
    assert!(too_large
        .unwrap_err()
        .to_string()
        .ends_with("wsgate.toml: larger than 1MiB"));
}

#[test]
fn parse_str_labels_errors_and_source() {
    let config = parse_str(BASE, Path::new("."), "custom.toml").unwrap();
    assert_eq!(config.source_path, PathBuf::from("custom.toml"));
    let error = parse_str("[server]\n", Path::new("."), "custom.toml").unwrap_err();
    assert_eq!(error.file, "custom.toml");
    assert!(
        error
            .to_string()
            .starts_with("custom.toml: server.listen: required"),
        "{error}"
    );
}

#[test]
fn raw_defaults_are_the_spec_values() {
    let server = ServerSection::default();
    assert_eq!((server.workers, server.max_connections), (0, 100_000));
    assert_eq!(server.shutdown_grace.to_string(), "10s");
    let auth = AuthSection::default();
    assert_eq!(auth.leeway.to_string(), "30s");
    assert_eq!(
        auth.sources,
        ["query:access_token", "query:token", "protocol", "header"]
    );
    assert_eq!(auth.max_token_bytes.to_string(), "4KiB");
    assert_eq!(
        auth.max_lifetime.0,
        std::time::Duration::from_secs(24 * 3600)
    );
    assert!(!auth.explain_to_browsers);
    let limits = LimitsSection::default();
    let shown = [
        limits.handshake_timeout.to_string(),
        limits.max_request_bytes.to_string(),
        limits.max_frame.to_string(),
        limits.max_message.to_string(),
        limits.idle_timeout.to_string(),
        limits.write_buffer.to_string(),
        limits.per_ip_connections.to_string(),
        limits.per_ip_handshakes.to_string(),
        limits.per_ip_auth_failures.to_string(),
        limits.per_subject_connections.to_string(),
        limits.messages.to_string(),
        limits.bytes.to_string(),
    ];
    assert_eq!(
        shown,
        [
            "5s", "8KiB", "1MiB", "1MiB", "1m", "1MiB", "256", "50/s", "10/s", "32", "1000/s",
            "8MiB/s"
        ]
    );
    let session = SessionSection::default();
    assert_eq!(
        (session.on_expiry.as_str(), session.refresh.as_str()),
        ("close", "message")
    );
    assert_eq!(session.expiry_notice.to_string(), "1m");
    let origin = OriginSection::default();
    assert!(origin.allow.is_empty() && origin.allow_missing);
    let admin = AdminSection::default();
    assert_eq!(admin.token_scope, "wsgate:admin");
    assert_eq!(admin.revocation_retention.to_string(), "7d");
}

#[test]
fn suggestions_only_for_near_misses() {
    assert_eq!(closest("lisen", &["listen", "workers"]), Some("listen"));
    assert_eq!(closest("xyz", &["listen", "workers"]), None);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("scpoe", "scope"), 1);
    assert_eq!(edit_distance("same", "same"), 0);
    assert_eq!(
        unknown_key_message("a", &[]),
        "unknown key; this table takes no keys"
    );
}

#[test]
fn line_lookup_follows_paths() {
    let text = "[server]\nlisten = [\"a\",\n  \"b\"]\n[[route]]\npath = \"/a\"\n[[route]]\npath = \"/b\"\n";
    let tree: Located = toml::from_str(text).unwrap();
    let line = |path: &str| locate(&tree, path).map(|span| line_of(text, span.start));
    assert_eq!(line("server.listen[1]"), Some(3));
    assert_eq!(line("route[1].path"), Some(7));
    assert_eq!(line("route[1].missing"), Some(6));
    assert_eq!(line("route[5]"), Some(4));
    assert_eq!(line("nothing"), None);
    // An implicit table (`auth`, made by `[[auth.key]]`) has no span of its own.
    let text = "[[auth.key]]\nalg = \"EdDSA\"\n\n[[auth.key]]\nkid = \"b\"\n";
    let tree: Located = toml::from_str(text).unwrap();
    assert_eq!(
        locate(&tree, "auth.key[1].kid").map(|span| line_of(text, span.start)),
        Some(5)
    );
    assert_eq!(
        locate(&tree, "auth.key[1].alg").map(|span| line_of(text, span.start)),
        Some(4)
    );
    assert_eq!(line(""), None);
}

#[test]
fn max_lifetime_is_read_and_must_be_positive() {
    let c = parse_str(
        &format!("{BASE}[auth]\nmax_lifetime = \"15m\"\n"),
        Path::new("/nonexistent"),
        "wsgate.toml",
    )
    .unwrap();
    assert_eq!(c.auth.max_lifetime, std::time::Duration::from_secs(900));
    let lines = errors(&format!("{BASE}[auth]\nmax_lifetime = \"0s\"\n"));
    assert!(
        has(&lines, "auth.max_lifetime: must be at least 1s"),
        "{lines:#?}"
    );
}
