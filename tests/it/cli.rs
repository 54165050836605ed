//! SPEC §2: the command line, driven as a user would (exit codes 0 / 1 / 2, one clear line
//! naming the file, key or flag at fault, never a panic).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::support::*;
use crate::tokens::{config, make_keys, now, path_str, LIMITS_OFF};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

/// No panic, no backtrace, in any output.
fn assert_no_panic(out: &str, err: &str) {
    for text in [out, err] {
        assert!(
            !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
            "{text}"
        );
    }
}

fn keygen(alg: &str, out: &Path) -> (i32, String, String) {
    run(&["keygen", "--alg", alg, "--out", path_str(out)])
}

// ---------------------------------------------------------------------------------------
// keygen
// ---------------------------------------------------------------------------------------

#[test]
fn keygen_eddsa_writes_a_0600_pem_pair_and_never_overwrites() {
    let dir = TempDir::new();
    let prefix = dir.path().join("ed-2026.11");
    let (code, out, err) = keygen("EdDSA", &prefix);
    assert_eq!(code, 0, "{out}{err}");
    let private = dir.path().join("ed-2026.11.key.pem");
    let public = dir.path().join("ed-2026.11.pub.pem");
    assert!(
        out.contains(path_str(&private)) && out.contains(path_str(&public)),
        "{out}"
    );
    for p in [&private, &public] {
        assert_eq!(mode(p), 0o600, "{}", p.display());
    }
    let private_text = std::fs::read_to_string(&private).expect("read");
    let public_text = std::fs::read_to_string(&public).expect("read");
    assert!(
        private_text.starts_with("-----BEGIN PRIVATE KEY-----\n"),
        "{private_text}"
    );
    assert!(
        public_text.starts_with("-----BEGIN PUBLIC KEY-----\n"),
        "{public_text}"
    );

    // Refuses to overwrite: exit 1, names the file, leaves both files as they were.
    let (code, out, err) = keygen("EdDSA", &prefix);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("ed-2026.11.key.pem") && err.contains("exists"),
        "{err}"
    );
    assert_no_panic(&out, &err);
    assert_eq!(
        std::fs::read_to_string(&private).expect("read"),
        private_text
    );
    assert_eq!(std::fs::read_to_string(&public).expect("read"), public_text);
    // Half a pair present: still refused, nothing written.
    std::fs::remove_file(&private).expect("rm");
    let (code, _, err) = keygen("EdDSA", &prefix);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ed-2026.11.pub.pem"), "{err}");
    assert!(!private.exists());
}

#[test]
fn keygen_hmac_writes_a_0600_secret_and_never_overwrites() {
    let dir = TempDir::new();
    for (alg, len) in [("HS256", 32), ("HS384", 48), ("HS512", 64)] {
        let prefix = dir.path().join(alg.to_lowercase());
        let (code, out, err) = keygen(alg, &prefix);
        assert_eq!(code, 0, "{out}{err}");
        let path = dir.path().join(format!("{}.secret", alg.to_lowercase()));
        assert!(out.contains(path_str(&path)), "{out}");
        assert_eq!(mode(&path), 0o600);
        let text = std::fs::read_to_string(&path).expect("read");
        let secret = URL_SAFE_NO_PAD.decode(text.trim()).expect("base64url text");
        assert!(secret.len() >= len.max(32), "{alg}: {} bytes", secret.len());
        let (code, out, err) = keygen(alg, &prefix);
        assert_eq!(code, 1, "{out}{err}");
        assert!(err.contains(".secret") && err.contains("exists"), "{err}");
        assert_no_panic(&out, &err);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), text);
    }
}

#[test]
fn keygen_usage_and_io_errors() {
    let dir = TempDir::new();
    for args in [
        vec!["keygen", "--alg", "PS256", "--out", "x"],
        vec!["keygen", "--alg", "none", "--out", "x"],
        vec!["keygen", "--alg", "EdDSA"],
        vec!["keygen", "--out", "x"],
    ] {
        let (code, out, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert_no_panic(&out, &err);
    }
    // A directory that does not exist: exit 1, naming the file.
    let missing = dir.path().join("no/such/dir/k");
    let (code, out, err) = keygen("HS256", &missing);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("no/such/dir/k.secret"), "{err}");
    assert_no_panic(&out, &err);
}

// ---------------------------------------------------------------------------------------
// token mint
// ---------------------------------------------------------------------------------------

fn mint(args: &[&str]) -> String {
    let mut all = vec!["token", "mint"];
    all.extend_from_slice(args);
    let (code, out, err) = run(&all);
    assert_eq!(code, 0, "{args:?}: {out}{err}");
    let token = out.trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "{out}");
    token
}

/// 101 on `path` with the token in the Authorization header, or the response.
fn handshake(gw: &Gateway, path: &str, token: &str) -> Response {
    let (r, _s) = request(
        gw,
        upgrade_request(path, &[&format!("Authorization: Bearer {token}")]).as_bytes(),
    );
    r
}

#[test]
fn minted_tokens_are_accepted_by_the_gateway() {
    let dir = TempDir::new();
    make_keys(&dir);
    for alg in ["HS384", "HS512"] {
        let (code, out, err) = keygen(alg, &dir.path().join(alg.to_lowercase()));
        assert_eq!(code, 0, "{out}{err}");
    }
    let ed = dir.path().join("ed.key.pem");
    let hs = dir.path().join("hs.secret");
    let hs384 = dir.path().join("hs384.secret");
    let hs512 = dir.path().join("hs512.secret");
    let extra = format!(
        "{LIMITS_OFF}\n[[auth.key]]\nkid = \"hs384\"\nalg = \"HS384\"\nsecret_file = \"hs384.secret\"\n\n[[auth.key]]\nkid = \"hs512\"\nalg = \"HS512\"\nsecret_file = \"hs512.secret\"\n"
    );
    let gw = Gateway::start_in(
        dir,
        &config(
            "issuer = \"https://id.example.com\"\naudience = \"wsgate\"",
            &extra,
        ),
    );
    let common = [
        "--sub",
        "alice",
        "--ttl",
        "15m",
        "--scope",
        "chat echo",
        "--iss",
        "https://id.example.com",
        "--aud",
        "wsgate",
        "--jti",
        "j-1",
    ];
    for (key, kid) in [
        (&ed, "ed"),
        (&hs, "hs"),
        (&hs384, "hs384"),
        (&hs512, "hs512"),
    ] {
        let mut args = vec!["--key", path_str(key), "--kid", kid];
        args.extend_from_slice(&common);
        let token = mint(&args);
        assert_eq!(handshake(&gw, "/echo", &token).status, 101, "{kid}");
        // Without --kid the key is found by algorithm (one key of each).
        let mut args = vec!["--key", path_str(key)];
        args.extend_from_slice(&common);
        assert_eq!(
            handshake(&gw, "/echo", &mint(&args)).status,
            101,
            "{kid} no kid"
        );
    }
    // --claim adds claims as JSON: scp as an array grants the scope.
    let token = mint(&[
        "--key",
        path_str(&ed),
        "--kid",
        "ed",
        "--sub",
        "bob",
        "--ttl",
        "1h",
        "--iss",
        "https://id.example.com",
        "--aud",
        "wsgate",
        "--claim",
        r#"scp=["echo"]"#,
        "--claim",
        r#"role="admin""#,
    ]);
    assert_eq!(handshake(&gw, "/echo", &token).status, 101);
    // Without --scope: 403 on /echo; without --iss: 401.
    let token = mint(&[
        "--key",
        path_str(&ed),
        "--kid",
        "ed",
        "--sub",
        "bob",
        "--ttl",
        "1h",
        "--iss",
        "https://id.example.com",
        "--aud",
        "wsgate",
    ]);
    assert_eq!(handshake(&gw, "/echo", &token).status, 403);
    assert_eq!(handshake(&gw, "/open", &token).status, 101);
    let token = mint(&[
        "--key",
        path_str(&ed),
        "--kid",
        "ed",
        "--sub",
        "bob",
        "--ttl",
        "1h",
        "--aud",
        "wsgate",
    ]);
    assert_eq!(handshake(&gw, "/open", &token).status, 401);
}

/// An HS384 / HS512 secret whose file name does not say its algorithm.
#[test]
fn minted_hs384_token_from_a_neutrally_named_secret_is_accepted() {
    let dir = TempDir::new();
    make_keys(&dir);
    let (code, out, err) = keygen("HS384", &dir.path().join("legacy"));
    assert_eq!(code, 0, "{out}{err}");
    let legacy = dir.path().join("legacy.secret");
    let extra = format!(
        "{LIMITS_OFF}\n[[auth.key]]\nkid = \"legacy\"\nalg = \"HS384\"\nsecret_file = \"legacy.secret\"\n"
    );
    let gw = Gateway::start_in(dir, &config("", &extra));
    let token = mint(&[
        "--key",
        path_str(&legacy),
        "--kid",
        "legacy",
        "--sub",
        "alice",
        "--ttl",
        "15m",
    ]);
    let r = handshake(&gw, "/open", &token);
    assert_eq!(r.status, 101, "{r:?}");
}

#[test]
fn mint_errors() {
    let dir = TempDir::new();
    make_keys(&dir);
    let ed = dir.path().join("ed.key.pem");
    let base = [
        "token",
        "mint",
        "--key",
        path_str(&ed),
        "--sub",
        "alice",
        "--ttl",
        "15m",
    ];
    let with = |more: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(more);
        run(&args)
    };
    // A --claim whose value is not JSON: a usage error (exit 2) naming the flag.
    for bad in ["role=admin", "n={", "x=[1,", "y='single'"] {
        let (code, out, err) = with(&["--claim", bad]);
        assert_eq!(code, 2, "{bad}: {out}{err}");
        assert!(err.contains("--claim"), "{err}");
        assert!(out.is_empty(), "no token printed: {out}");
        assert_no_panic(&out, &err);
    }
    // No '=' at all: clap's usage error.
    let (code, out, err) = with(&["--claim", "noequals"]);
    assert_eq!(code, 2, "{out}{err}");
    // Valid JSON that would make a token the gateway refuses: rejected input (exit 1).
    for bad in [r#"sub="root""#, "exp=1", r#"scp="echo""#, r#"aud=1"#] {
        let (code, out, err) = with(&["--claim", bad]);
        assert_eq!(code, 1, "{bad}: {out}{err}");
        assert!(err.contains("--claim"), "{err}");
        assert!(out.is_empty(), "{out}");
        assert_no_panic(&out, &err);
    }
    // Bad ttl: usage.
    let (code, _, err) = run(&[
        "token",
        "mint",
        "--key",
        path_str(&ed),
        "--sub",
        "a",
        "--ttl",
        "15",
    ]);
    assert_eq!(code, 2, "{err}");
    // Missing key file / a public key: exit 1 naming the file.
    let missing = dir.path().join("missing.key.pem");
    let (code, out, err) = run(&[
        "token",
        "mint",
        "--key",
        path_str(&missing),
        "--sub",
        "a",
        "--ttl",
        "1m",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("missing.key.pem"), "{err}");
    let public = dir.path().join("ed.pub.pem");
    let (code, out, err) = run(&[
        "token",
        "mint",
        "--key",
        path_str(&public),
        "--sub",
        "a",
        "--ttl",
        "1m",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("ed.pub.pem"), "{err}");
    assert_no_panic(&out, &err);
}

// ---------------------------------------------------------------------------------------
// token inspect
// ---------------------------------------------------------------------------------------

fn inspect(cfg: Option<&Path>, token: &str) -> (i32, String) {
    let mut args = vec!["token", "inspect"];
    if let Some(c) = cfg {
        args.extend_from_slice(&["-c", path_str(c)]);
    }
    args.push(token);
    let (code, out, err) = run(&args);
    assert_no_panic(&out, &err);
    (code, format!("{out}{err}"))
}

/// The signature segment of `token` appears nowhere in `text`.
fn assert_no_signature(text: &str, token: &str) {
    let sig = token.rsplit('.').next().expect("signature");
    assert!(sig.len() >= 20);
    assert!(!text.contains(sig), "signature printed:\n{text}");
    assert!(
        !text.contains(&sig[..20]),
        "signature prefix printed:\n{text}"
    );
}

#[test]
fn inspect_says_why() {
    let dir = TempDir::new();
    let keys = make_keys(&dir);
    let cfg = dir.write("wsgate.toml", config("", ""));
    let t = now();
    let good =
        keys.ed_token(&serde_json::json!({"sub": "alice-77", "exp": t + 600, "scope": "echo"}));
    let (code, text) = inspect(Some(&cfg), &good);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("alice-77"), "{text}");
    assert!(text.contains("ACCEPTED"), "{text}");
    assert_no_signature(&text, &good);
    let hs = keys.hs_token(&serde_json::json!({"sub": "carol", "exp": t + 600}));
    let (code, text) = inspect(Some(&cfg), &hs);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("carol"), "{text}");
    assert_no_signature(&text, &hs);

    // Expired.
    let expired = keys.ed_token(&serde_json::json!({"sub": "alice-77", "exp": t - 3600}));
    let (code, text) = inspect(Some(&cfg), &expired);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("expired"), "{text}");
    assert!(!text.contains("ACCEPTED"), "{text}");
    assert_no_signature(&text, &expired);
    // Unknown kid: named.
    let unknown = keys.ed_raw(
        r#"{"alg":"EdDSA","kid":"retired-2019"}"#,
        &serde_json::json!({"sub": "alice-77", "exp": t + 600}).to_string(),
    );
    let (code, text) = inspect(Some(&cfg), &unknown);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("retired-2019") && text.contains("kid"),
        "{text}"
    );
    assert_no_signature(&text, &unknown);
    // Bad signature.
    let other_dir = TempDir::new();
    let forged =
        make_keys(&other_dir).ed_token(&serde_json::json!({"sub": "alice-77", "exp": t + 600}));
    let (code, text) = inspect(Some(&cfg), &forged);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("signature"), "{text}");
    assert_no_signature(&text, &forged);
    // alg none.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(r#"{"sub":"x","exp":9999999999}"#)
    );
    let (code, text) = inspect(Some(&cfg), &none);
    assert_eq!(code, 1, "{text}");
    // Garbage.
    let (code, text) = inspect(Some(&cfg), "not-a-token");
    assert_eq!(code, 1, "{text}");
    // Without a config it decodes but cannot judge; it still never prints the signature.
    let (code, text) = inspect(None, &good);
    assert!(text.contains("alice-77"), "{text}");
    assert_no_signature(&text, &good);
    assert_eq!(
        code, 1,
        "documented: inspect without -c gives 1 (not checked): {text}"
    );
    // A config that does not load: exit 1 naming it.
    let missing = dir.path().join("nope.toml");
    let (code, text) = inspect(Some(&missing), &good);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("nope.toml"), "{text}");
}

// ---------------------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------------------

fn check(dir: &TempDir, name: &str, text: &str) -> (i32, String, String) {
    let p = dir.write(name, text);
    let (code, out, err) = run(&["check", "-c", path_str(&p)]);
    assert_no_panic(&out, &err);
    (code, out, err)
}

#[test]
fn check_good_and_bad_configs() {
    let dir = TempDir::new();
    make_keys(&dir);
    let good = config("", LIMITS_OFF);
    let (code, out, err) = check(&dir, "good.toml", &good);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("OK"), "{out}");
    // The public route is a warning, not an error.
    assert!(err.contains("public"), "{err}");

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "route path without '/'",
            good.replacen("path = \"/echo\"", "path = \"echo\"", 1),
            "route[0].path",
        ),
        (
            "unknown key in [limits]",
            good.replace("[limits]\n", "[limits]\nmax_frames = \"1MiB\"\n"),
            "max_frames",
        ),
        (
            "unknown key in a route",
            good.replacen("scope = [\"echo\"]", "scopes = [\"echo\"]", 1),
            "scopes",
        ),
        (
            "unknown key in [auth]",
            good.replace("[auth]\n", "[auth]\nleway = \"30s\"\n"),
            "leway",
        ),
        (
            "bad duration",
            good.replace("[limits]\n", "[limits]\nidle_timeout = \"30 seconds\"\n"),
            "limits.idle_timeout",
        ),
        (
            "missing key file",
            good.replace("ed.pub.pem", "gone.pub.pem"),
            "gone.pub.pem",
        ),
        (
            "cookie source with an open origin policy",
            good.replace("[auth]\n", "[auth]\nsources = [\"cookie:sess\"]\n"),
            "auth.sources[0]",
        ),
        (
            "bad origin entry",
            good.replace(
                "[limits]\n",
                "[origin]\nallow = [\"app.example.com\"]\n\n[limits]\n",
            ),
            "origin.allow[0]",
        ),
        (
            "no routes",
            good[..good.find("[[route]]").expect("routes")].to_owned(),
            "route",
        ),
    ];
    for (what, text, needle) in &cases {
        let (code, out, err) = check(&dir, "bad.toml", text);
        assert_eq!(code, 1, "{what}: {out}{err}");
        assert!(
            err.contains(needle),
            "{what}: expected {needle:?} in:\n{err}"
        );
        assert!(err.contains("bad.toml"), "{what}: file named: {err}");
    }
    // Several problems at once: every one reported.
    let two = good
        .replacen("path = \"/echo\"", "path = \"echo\"", 1)
        .replace("[limits]\n", "[limits]\nmax_frames = \"1MiB\"\n");
    let (code, _, err) = check(&dir, "bad.toml", &two);
    assert_eq!(code, 1);
    assert!(
        err.contains("route[0].path") && err.contains("max_frames"),
        "{err}"
    );
    // TOML syntax error.
    let (code, _, err) = check(&dir, "bad.toml", "[server\nlisten = 1\n");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("bad.toml"), "{err}");
    // Missing file.
    let (code, out, err) = run(&["check", "-c", path_str(&dir.path().join("absent.toml"))]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("absent.toml"), "{err}");
}

// ---------------------------------------------------------------------------------------
// usage and serve
// ---------------------------------------------------------------------------------------

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec![],
        vec!["--bogus"],
        vec!["frobnicate"],
        vec!["serve"],
        vec!["serve", "--bogus"],
        vec!["serve", "-c", "a.toml", "--demo"],
        vec!["check"],
        vec!["token"],
        vec!["token", "inspect"],
        vec!["token", "mint", "--sub", "a"],
    ] {
        let (code, out, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(!err.is_empty(), "{args:?}: a usage line on stderr");
        assert_no_panic(&out, &err);
    }
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("serve") && out.contains("keygen"), "{out}");
}

#[test]
fn serve_with_a_missing_or_bad_config_exits_1_naming_it() {
    let dir = TempDir::new();
    let missing = dir.path().join("missing.toml");
    let (code, out, err) = run(&["serve", "-c", path_str(&missing)]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("missing.toml"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert_no_panic(&out, &err);
    let bad = dir.write("bad.toml", "[server]\nlisten = [\"127.0.0.1:0\"]\nworkerz = 2\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n");
    let (code, out, err) = run(&["serve", "-c", path_str(&bad)]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("bad.toml") && err.contains("workerz"), "{err}");
    assert_no_panic(&out, &err);
    // A key file that is not there: named, exit 1, nothing listening.
    let no_key = dir.write(
        "nokey.toml",
        config("", "").replace("ed.pub.pem", "keys/absent.pub.pem"),
    );
    let (code, out, err) = run(&["serve", "-c", path_str(&no_key)]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("absent.pub.pem"), "{err}");
    assert!(!err.contains("listening on"), "{err}");
    assert_no_panic(&out, &err);
}
