//! From first run to production (SPEC §2): `init` writes a config that `check` accepts and
//! `serve` serves; a token minted as `init` prints is accepted; `revoke` as printed
//! closes the live connection 4403; every file under `examples/` passes `check`.

use std::path::Path;

use crate::support::*;

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[test]
fn init_check_serve_mint_connect_revoke() {
    let dir = TempDir::new();
    let d = path_str(dir.path()).to_owned();
    let (code, out, err) = run(&["init", &d]);
    assert_eq!(code, 0, "{out}{err}");
    for step in [
        "serve -c ",
        "token mint --key ",
        "node --experimental-websocket",
        "revoke -c ",
    ] {
        assert!(out.contains(step), "{step} missing from:\n{out}");
    }
    let cfg_path = dir.path().join("wsgate.toml");
    let key = dir.path().join("keys/gateway.key.pem");
    assert!(dir.path().join("keys/gateway.pub.pem").is_file());

    // Never overwrites.
    let before = std::fs::read_to_string(&cfg_path).expect("config");
    let (code, _, err) = run(&["init", &d]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read_to_string(&cfg_path).expect("config"), before);

    let (code, out, err) = run(&["check", "-c", path_str(&cfg_path)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("OK (1 listener, 1 route, 1 key)"), "{out}");
    assert_eq!(err, "");

    // Served as written, but on free ports.
    let admin_port = fixed_port();
    let config = before
        .replace(
            "listen = [\"127.0.0.1:8080\"]",
            "listen = [\"127.0.0.1:0\"]",
        )
        .replace(
            "listen = \"127.0.0.1:9090\"",
            &format!("listen = \"127.0.0.1:{admin_port}\""),
        );
    assert_ne!(config, before);
    let gw = Gateway::start_in(dir, &config);
    let key = path_str(&key).to_owned();
    let cfg = path_str(&gw.dir.path().join("wsgate.toml")).to_owned();

    let (code, token, err) = run(&[
        "token", "mint", "--key", &key, "--kid", "main", "--sub", "alice", "--ttl", "15m",
        "--scope", "echo", "--jti", "alice-1",
    ]);
    assert_eq!(code, 0, "{err}");
    let auth = format!("Authorization: Bearer {}", token.trim());
    let mut live = open(&gw, "/echo", &[&auth]);
    echo_once(&mut live, 1, b"hello");

    // A token without the route's scope is refused.
    let (_, unscoped, _) = run(&[
        "token", "mint", "--key", &key, "--kid", "main", "--sub", "bob", "--ttl", "1m",
    ]);
    let (r, _) = request(
        &gw,
        upgrade_request(
            "/echo",
            &[&format!("Authorization: Bearer {}", unscoped.trim())],
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 403);

    // revoke: usage and authentication failures first.
    let (code, _, err) = run(&["revoke", "-c", &cfg, "--jti", "alice-1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("WSGATE_ADMIN_TOKEN"), "{err}");
    let (code, _, err) = run(&[
        "revoke",
        "-c",
        &cfg,
        "--jti",
        "alice-1",
        "--token",
        token.trim(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("answered 403"), "{err}");
    let (code, _, err) = run(&["revoke", "-c", &cfg, "--exp", "5", "--key", &key]);
    assert_eq!(code, 2, "{err}");

    // As init printed it: the live connection is closed 4403 "token revoked".
    let (code, out, err) = run(&[
        "revoke", "-c", &cfg, "--jti", "alice-1", "--key", &key, "--kid", "main",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let answer: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON answer");
    assert_eq!(answer, serde_json::json!({"revoked": true, "closed": 1}));
    assert_eq!(expect_closed_with(&mut live, 4403), "token revoked");
    let (r, _) = request(&gw, upgrade_request("/echo", &[&auth]).as_bytes());
    assert_eq!(r.status, 401);
    assert!(
        gw.dir.path().join("data/revocations.log").is_file(),
        "the revocation is logged"
    );
}

#[test]
fn revoke_without_an_admin_listener_or_with_none_running_exits_1() {
    let dir = TempDir::new();
    let cfg = dir.write(
        "wsgate.toml",
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[[route]]\npath = \"/e\"\nbackend = \"echo\"\npublic = true\n",
    );
    let (code, _, err) = run(&["revoke", "-c", path_str(&cfg), "--sub", "a", "--token", "x"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no [admin] section"), "{err}");
    let port = fixed_port();
    let cfg = dir.write(
        "down.toml",
        format!("[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:{port}\"\n[[route]]\npath = \"/e\"\nbackend = \"echo\"\npublic = true\n"),
    );
    let (code, _, err) = run(&["revoke", "-c", path_str(&cfg), "--sub", "a", "--token", "x"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "wsgate: revoke: admin listener 127.0.0.1:{port} (admin.listen): "
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn every_example_config_passes_check() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (code, out, err) = run(&["check", "-c", path_str(&path)]);
            assert_eq!(code, 0, "{}: {out}{err}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} example configs");
}

#[test]
fn help_points_at_the_demo_and_init() {
    let (code, out, _) = run(&["help"]);
    assert_eq!(code, 0);
    assert!(out.contains("wsgate serve --demo"), "{out}");
    assert!(out.contains("wsgate init DIR"), "{out}");
    let (code, out, _) = run(&["help", "revoke"]);
    assert_eq!(code, 0);
    assert!(out.contains("--jti"), "{out}");
}

#[test]
fn the_demo_binds_first_and_a_busy_port_prints_no_token() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, out, err) = run(&["serve", "--demo", "--listen", &addr]);
    assert_eq!(code, 1);
    assert_eq!(out, "", "nothing printed for a port that is taken");
    assert!(
        err.starts_with(&format!("wsgate: --listen: cannot listen on {addr}: ")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, _, err) = run(&["serve", "-c", "x.toml", "--listen", &addr]);
    assert_eq!(code, 2, "{err}");
}

/// A child process killed on drop (also when an assertion fails).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `serve --demo` on a free port: returns the child and the bound address, read from
/// the printed page URL (printed only once listening).
fn start_demo() -> (Killed, std::net::SocketAddr) {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(bin())
        .args(["serve", "--demo", "--listen", "127.0.0.1:0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn demo");
    let stdout = child.stdout.take().expect("stdout");
    let child = Killed(child);
    let mut lines = std::io::BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the demo printed its page URL")
            .expect("stdout line");
        if let Some(url) = line.split("Open in a browser:").nth(1) {
            let host = url
                .trim()
                .trim_start_matches("http://")
                .trim_end_matches('/');
            break host.parse().expect("page address");
        }
    };
    (child, addr)
}

fn demo_request(addr: std::net::SocketAddr, req: &str) -> (Response, std::net::TcpStream) {
    use std::io::Write as _;
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(req.as_bytes()).expect("send");
    let r = read_response(&mut s);
    (r, s)
}

#[test]
fn the_demo_serves_its_page_and_accepts_only_its_own_origins() {
    let (_demo, addr) = start_demo();
    let port = addr.port();
    let (page, _) = demo_request(
        addr,
        &format!("GET / HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"),
    );
    assert_eq!(page.status, 200);
    assert!(page.body.contains("new WebSocket("), "{}", page.body);
    assert!(page.header("content-security-policy").is_some());
    let (rebound, _) = demo_request(
        addr,
        &format!("GET /token HTTP/1.1\r\nHost: attacker.example:{port}\r\n\r\n"),
    );
    assert_eq!(rebound.status, 421);
    let (minted, _) = demo_request(
        addr,
        &format!("GET /token HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"),
    );
    assert_eq!(minted.status, 200);
    let token: serde_json::Value = serde_json::from_str(&minted.body).expect("JSON");
    let token = token["token"].as_str().expect("token").to_owned();
    let protocol = format!("Sec-WebSocket-Protocol: demo, bearer.{token}");
    for (origin, status) in [
        (format!("http://127.0.0.1:{port}"), 101),
        (format!("http://localhost:{port}"), 101),
        ("http://127.0.0.1:1".to_owned(), 403),
        ("https://evil.example".to_owned(), 403),
    ] {
        let origin_line = format!("Origin: {origin}");
        let (r, _) = demo_request(addr, &upgrade_request("/echo", &[&protocol, &origin_line]));
        assert_eq!(r.status, status, "{origin}");
        if status == 101 {
            assert_eq!(r.header("sec-websocket-protocol"), Some("demo"));
        }
    }
    // Without Origin (the printed Node.js command): accepted.
    let (r, mut s) = demo_request(addr, &upgrade_request("/echo", &[&protocol]));
    assert_eq!(r.status, 101);
    echo_once(&mut s, 1, b"hi");
}
