//! SPEC §9 with a real OpenID Provider (npm `oidc-provider`, tests/fixtures/oidc/): discovery
//! and JWK Set fetches on the control plane, every algorithm's tokens through sockets,
//! rotation with "key retired", the unknown-kid refetch rate limit, and 503 + Retry-After
//! while a provider has no usable keys. `scripts/test` runs `npm ci` in the fixture first.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

use crate::support::*;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oidc")
}

/// The fixture's OpenID Provider, driven over stdin/stdout.
struct Idp {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    issuer: String,
}

impl Idp {
    fn start() -> Idp {
        let dir = fixture();
        assert!(
            dir.join("node_modules").is_dir(),
            "run `npm ci` in {} first (scripts/test does)",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn node provider.mjs");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut idp = Idp {
            child,
            stdin,
            stdout,
            issuer: String::new(),
        };
        let hello = idp.line();
        idp.issuer = hello["issuer"].as_str().expect("issuer").to_owned();
        idp
    }

    fn line(&mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("provider output");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("provider said {line:?}: {e}"))
    }

    fn cmd(&mut self, cmd: &str) -> Value {
        writeln!(self.stdin, "{cmd}").expect("provider command");
        let v = self.line();
        assert!(v.get("error").is_none(), "{cmd}: {v}");
        v
    }

    fn token(&mut self, alg: &str) -> String {
        let v = self.cmd(&format!("token {alg} echo"));
        v["token"].as_str().expect("token").to_owned()
    }

    fn jwks_fetches(&mut self) -> u64 {
        self.cmd("stats")["jwks"].as_u64().expect("jwks count")
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(provider: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
workers = 2

[auth]
audience = "wsgate"

[[auth.provider]]
{provider}

[limits]
per_ip_handshakes = "1000000/s"
per_ip_auth_failures = "1000000/s"

[admin]
listen = "127.0.0.1:0"

[[route]]
path = "/echo"
backend = "echo"
scope = ["echo"]
"#
    )
}

/// GET on the admin listener: (status, body).
fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    exchange(
        TcpStream::connect(addr).expect("admin"),
        &format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"),
    )
}

/// A gateway whose one provider is `idp` with `min_refresh`, once its first fetch
/// brought usable keys.
fn gateway_for(idp: &Idp, min_refresh: &str) -> Gateway {
    let gw = Gateway::start(&config(&format!(
        "issuer = \"{}\"\nmin_refresh = \"{min_refresh}\"",
        idp.issuer
    )));
    gw.wait_log("usable keys fetched");
    gw
}

fn attempt(gw: &Gateway, token: &str) -> (Response, TcpStream) {
    let auth = format!("Authorization: Bearer {token}");
    request(gw, upgrade_request("/echo", &[&auth]).as_bytes())
}

/// Polls `f` until it returns Some, within WAIT.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A token's header with `kid` replaced (the signature no longer matters: the kid is
/// looked up first).
fn with_kid(token: &str, kid: &str) -> String {
    let mut parts = token.splitn(2, '.');
    let header = parts.next().expect("header");
    let rest = parts.next().expect("rest");
    let mut h: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("b64")).expect("json");
    h["kid"] = Value::String(kid.to_owned());
    format!(
        "{}.{rest}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&h).expect("json"))
    )
}

#[test]
fn discovery_then_every_algorithm_through_sockets() {
    let mut idp = Idp::start();
    let gw = gateway_for(&idp, "1s");
    let admin = admin_addr(&gw);
    eventually("/readyz 200", || {
        (admin_get(admin, "/readyz").0 == 200).then_some(())
    });
    for alg in ["RS256", "PS256", "ES256", "ES384", "EdDSA"] {
        let token = idp.token(alg);
        let (r, mut s) = attempt(&gw, &token);
        assert_eq!(r.status, 101, "{alg}: {r:?}");
        echo_once(&mut s, 1, alg.as_bytes());
    }
    let stats = idp.cmd("stats");
    assert!(stats["discovery"].as_u64() >= Some(1), "{stats}");
    assert!(stats["jwks"].as_u64() >= Some(1), "{stats}");
    let (_, metrics) = admin_get(admin, "/metrics");
    let up = format!("wsgate_provider_up{{issuer=\"{}\"}} 1", idp.issuer);
    assert!(metrics.contains(&up), "{metrics}");
    let keys = format!("wsgate_provider_keys{{issuer=\"{}\"}} 5", idp.issuer);
    assert!(metrics.contains(&keys), "{metrics}");
    assert!(
        metrics.contains("wsgate_provider_last_fetch_timestamp_seconds{issuer="),
        "{metrics}"
    );
}

#[test]
fn rotation_refetches_the_new_kid_and_retires_the_old_keys_sessions() {
    let mut idp = Idp::start();
    let gw = gateway_for(&idp, "1s");
    let old = idp.token("ES256");
    let (r, mut live) = attempt(&gw, &old);
    assert_eq!(r.status, 101, "{r:?}");
    echo_once(&mut live, 1, b"before");
    let fetches = idp.jwks_fetches();
    idp.cmd("rotate");
    let fresh = idp.token("ES256");
    // The new kid is unknown until the refetch its first use asks for: the handshake waits
    // for that fetch (parked, at most handshake_timeout). Within min_refresh of the start
    // fetch none may start and it is 401 at once, so poll until accepted.
    let (_, mut s) = eventually("new kid accepted", || {
        let (r, s) = attempt(&gw, &fresh);
        (r.status == 101).then_some((r, s))
    });
    echo_once(&mut s, 1, b"after");
    // Exactly one fetch brought the new set, whatever the number of attempts: the one the
    // accepted handshake asked for while it was parked.
    assert_eq!(idp.jwks_fetches(), fetches + 1);
    gw.wait_log("parked: waiting for its provider's key set");
    // The old key left the set: its live session is closed 4401 "key retired".
    let (code, reason) = read_close(&mut live);
    assert_eq!((code, reason.as_str()), (Some(4401), "key retired"));
    // And the old token is refused for new handshakes.
    let (r, _) = attempt(&gw, &old);
    assert_eq!(r.status, 401, "{r:?}");
}

#[test]
fn a_flood_of_unknown_kids_fetches_at_most_once_per_min_refresh() {
    let mut idp = Idp::start();
    let gw = gateway_for(&idp, "30s");
    let before = idp.jwks_fetches();
    let token = idp.token("RS256");
    for i in 0..40 {
        let (r, _) = attempt(&gw, &with_kid(&token, &format!("random-{i}")));
        // SPEC §9: no fetch may start (the last began < min_refresh ago): 401 at once.
        assert_eq!(r.status, 401, "{r:?}");
    }
    // A good token still passes, and the flood caused no fetch at all.
    let (r, _) = attempt(&gw, &token);
    assert_eq!(r.status, 101, "{r:?}");
    assert_eq!(idp.jwks_fetches(), before);
}

#[test]
fn provider_down_at_start_gives_503_with_retry_after_and_readyz_503_then_up_200() {
    // A loopback port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let issuer = format!("http://127.0.0.1:{port}");
    let gw = Gateway::start(&config(&format!(
        "issuer = \"{issuer}\"\nmin_refresh = \"1s\"\nrefresh = \"1m\""
    )));
    let admin = admin_addr(&gw);
    gw.wait_log("fetch failed");
    // A token of that issuer (its signature is never reached).
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"k"}"#);
    let payload = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"iss":"{issuer}","sub":"a","exp":4000000000,"aud":"wsgate","scope":"echo"}}"#
    ));
    let token = format!("{header}.{payload}.c2ln");
    let (r, _) = attempt(&gw, &token);
    assert_eq!(r.status, 503, "{r:?}");
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    let (status, _) = admin_get(admin, "/readyz");
    assert_eq!(status, 503);
    let (_, metrics) = admin_get(admin, "/metrics");
    assert!(
        metrics.contains(&format!("wsgate_provider_up{{issuer=\"{issuer}\"}} 0")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "wsgate_provider_fetch_failures_total{{issuer=\"{issuer}\",reason=\"connect\"}}"
        )),
        "{metrics}"
    );
    // The provider comes up (discovery, then its JWK Set): ready at a next attempt.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("rebind the port");
    // One server answers both requests with one body that is a discovery document and a
    // JWK Set at once.
    let mut both: Value = serde_json::from_str(EC_SET).expect("set");
    both["issuer"] = Value::String(issuer.clone());
    both["jwks_uri"] = Value::String(format!("{issuer}/jwks"));
    let both = both.to_string();
    serve_fixed_on(listener, http_200(&both), None);
    eventually("/readyz 200", || {
        (admin_get(admin, "/readyz").0 == 200).then_some(())
    });
    let (_, metrics) = admin_get(admin, "/metrics");
    assert!(
        metrics.contains(&format!("wsgate_provider_up{{issuer=\"{issuer}\"}} 1")),
        "{metrics}"
    );
}

#[test]
fn a_provider_file_written_late_turns_503_into_ready() {
    let dir = TempDir::new();
    let gw = Gateway::start_in(
        dir,
        &config(
            "issuer = \"https://late.example\"\njwks_uri = \"late.jwks.json\"\nmin_refresh = \"1s\"\nrefresh = \"2s\"",
        ),
    );
    let admin = admin_addr(&gw);
    assert_eq!(admin_get(admin, "/readyz").0, 503);
    // Not JSON: still a failed fetch.
    gw.dir.write("late.jwks.json", "<html>");
    gw.wait_log("fetch failed");
    assert_eq!(admin_get(admin, "/readyz").0, 503);
    // A usable set (RFC 7517 A.1's EC key).
    gw.dir.write(
        "late.jwks.json",
        r#"{"keys":[{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM","use":"sig","kid":"1"}]}"#,
    );
    eventually("/readyz 200", || {
        (admin_get(admin, "/readyz").0 == 200).then_some(())
    });
    // A document over 1 MiB afterwards: a failed fetch, the last good set kept.
    let big = format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(1 << 20));
    gw.dir.write("late.jwks.json", &big);
    eventually("a failed fetch of the large set", || {
        gw.logs()
            .lines()
            .filter(|l| l.contains("fetch failed"))
            .nth(1)
            .map(|_| ())
    });
    assert_eq!(admin_get(admin, "/readyz").0, 200);
}

#[test]
fn token_inspect_fetches_and_says_what_it_fetched() {
    let mut idp = Idp::start();
    let dir = TempDir::new();
    let cfg = dir.write(
        "wsgate.toml",
        config(&format!("issuer = \"{}\"", idp.issuer)),
    );
    let token = idp.token("ES384");
    let (code, out, err) = run(&[
        "token",
        "inspect",
        "-c",
        cfg.to_str().expect("path"),
        &token,
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let fetched = format!(
        "fetched provider \"{}\" keys from discovery at ",
        idp.issuer
    );
    assert!(out.contains(&fetched), "{out}");
    assert!(out.contains("5 usable"), "{out}");
}

/// Node's `jose` (OpenSSL) as a second implementation, one command per run.
fn jose(args: &[&str]) -> Value {
    let out = Command::new("node")
        .arg("jose.mjs")
        .args(args)
        .current_dir(fixture())
        .output()
        .expect("node jose.mjs");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("jose said {text:?}: {e}"))
}

/// A token `jose` signs over `payload` with the private key file `key`.
fn jose_token(key: &str, alg: &str, kid: &str, payload: &str) -> String {
    let v = jose(&["sign", key, alg, kid, payload]);
    v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_owned()
}

#[test]
fn jose_signs_with_wsgate_keys_and_verifies_wsgate_tokens() {
    let dir = TempDir::new();
    for (alg, prefix) in [("RS256", "rs"), ("ES256", "es")] {
        let out = dir.0.join(prefix);
        let (code, _, err) = run(&["keygen", "--alg", alg, "--out", out.to_str().expect("path")]);
        assert_eq!(code, 0, "{err}");
    }
    let path = |name: &str| dir.0.join(name).to_str().expect("path").to_owned();
    let (rs_key, rs_pub, es_key) = (path("rs.key.pem"), path("rs.pub.pem"), path("es.key.pem"));
    let gw = Gateway::start_in(
        dir,
        r#"
[server]
listen = ["127.0.0.1:0"]

[[auth.key]]
kid = "rs"
alg = "RS256"
public_key = "rs.pub.pem"

[[auth.key]]
kid = "es"
alg = "ES256"
public_key = "es.pub.pem"

[[route]]
path = "/echo"
backend = "echo"
scope = ["echo"]
"#,
    );
    let now = now_unix();
    let payload = format!(
        r#"{{"sub":"alice","scope":"echo","iat":{now},"exp":{}}}"#,
        now + 600
    );
    for (key, alg, kid) in [(&rs_key, "RS256", "rs"), (&es_key, "ES256", "es")] {
        let token = jose_token(key, alg, kid, &payload);
        let (r, mut s) = attempt(&gw, &token);
        assert_eq!(r.status, 101, "{alg} from jose: {r:?}");
        echo_once(&mut s, 1, alg.as_bytes());
    }
    let (code, token, err) = run(&[
        "token", "mint", "--key", &rs_key, "--kid", "rs", "--sub", "bob", "--ttl", "5m",
    ]);
    assert_eq!(code, 0, "{err}");
    let verified = jose(&["verify", &rs_pub, "RS256", token.trim()]);
    assert_eq!(verified["payload"]["sub"], "bob", "{verified}");
}

#[test]
fn the_same_kid_under_two_issuers_verifies_only_its_own_issuers_tokens() {
    let dir = TempDir::new();
    for prefix in ["a", "b"] {
        let out = dir.0.join(prefix);
        let (code, _, err) = run(&[
            "keygen",
            "--alg",
            "ES256",
            "--out",
            out.to_str().expect("path"),
        ]);
        assert_eq!(code, 0, "{err}");
    }
    let path = |name: &str| dir.0.join(name).to_str().expect("path").to_owned();
    // Each provider publishes kid "k", with a key of its own.
    for prefix in ["a", "b"] {
        let jwk = jose(&["jwk", &path(&format!("{prefix}.pub.pem")), "ES256", "k"]);
        dir.write(
            &format!("{prefix}.jwks.json"),
            serde_json::json!({ "keys": [jwk] }).to_string(),
        );
    }
    let a_key = path("a.key.pem");
    let gw = Gateway::start_in(
        dir,
        r#"
[server]
listen = ["127.0.0.1:0"]

[auth]
audience = "wsgate"

[[auth.provider]]
issuer = "https://a.example"
jwks_uri = "a.jwks.json"

[[auth.provider]]
issuer = "https://b.example"
jwks_uri = "b.jwks.json"

[[route]]
path = "/echo"
backend = "echo"
scope = ["echo"]
"#,
    );
    let now = now_unix();
    let signed_by_a = |iss: &str| {
        let payload = format!(
            r#"{{"iss":"{iss}","aud":"wsgate","sub":"s","scope":"echo","iat":{now},"exp":{}}}"#,
            now + 600
        );
        jose_token(&a_key, "ES256", "k", &payload)
    };
    let (r, _) = attempt(&gw, &signed_by_a("https://a.example"));
    assert_eq!(r.status, 101, "{r:?}");
    // A's key, B's issuer, the same kid: B's "k" is another key, so the signature fails.
    let (r, _) = attempt(&gw, &signed_by_a("https://b.example"));
    assert_eq!(r.status, 401, "{r:?}");
    // And an issuer that is no provider's never reaches a provider's keys.
    let (r, _) = attempt(&gw, &signed_by_a("https://c.example"));
    assert_eq!(r.status, 401, "{r:?}");
}

/// A one-answer-fits-all HTTP server on loopback (optionally TLS): every request gets
/// `response`; returns its port.
fn serve_fixed(response: Vec<u8>, tls: Option<Arc<rustls::ServerConfig>>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    serve_fixed_on(listener, response, tls)
}

/// [`serve_fixed`] on a listener the caller bound.
fn serve_fixed_on(
    listener: std::net::TcpListener,
    response: Vec<u8>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> u16 {
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let response = response.clone();
            let tls = tls.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(WAIT));
                let answer = |s: &mut dyn ReadWrite| {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                        match s.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let _ = s.write_all(&response);
                    let _ = s.flush();
                };
                match tls {
                    Some(cfg) => {
                        let conn = rustls::ServerConnection::new(cfg).expect("tls conn");
                        let mut s = rustls::StreamOwned::new(conn, stream);
                        answer(&mut s);
                        s.conn.send_close_notify();
                        let _ = s.flush();
                    }
                    None => answer(&mut stream),
                }
            });
        }
    });
    port
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn http_200(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// RFC 7517 A.1's EC public key as a JWK Set.
const EC_SET: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM","use":"sig","kid":"1"}]}"#;

/// The provider's failure counter for `reason` appears in /metrics.
fn wait_failure(admin: SocketAddr, issuer: &str, reason: &str) {
    let want =
        format!("wsgate_provider_fetch_failures_total{{issuer=\"{issuer}\",reason=\"{reason}\"}}");
    eventually(&want, || {
        admin_get(admin, "/metrics").1.contains(&want).then_some(())
    });
}

#[test]
fn redirects_to_another_host_and_oversized_sets_are_failed_fetches() {
    // 127.0.0.1 -> localhost: another host, never followed (SPEC §9).
    let redirect = serve_fixed(
        b"HTTP/1.1 302 Found\r\nLocation: http://localhost:9/jwks\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
        None,
    );
    let big = format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat((1 << 20) + 10));
    let oversized = serve_fixed(http_200(&big), None);
    let gw = Gateway::start(&config(&format!(
        "issuer = \"https://r.example\"\njwks_uri = \"http://127.0.0.1:{redirect}/jwks\"\n\
         min_refresh = \"1s\"\n\n[[auth.provider]]\nissuer = \"https://big.example\"\n\
         jwks_uri = \"http://127.0.0.1:{oversized}/jwks\"\nmin_refresh = \"1s\""
    )));
    let admin = admin_addr(&gw);
    wait_failure(admin, "https://r.example", "redirect");
    wait_failure(admin, "https://big.example", "too_large");
    assert_eq!(admin_get(admin, "/readyz").0, 503);
}

#[test]
fn https_jwks_uri_with_ca_file() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
    let cert = rustls::pki_types::CertificateDer::from(ck.cert.der().to_vec());
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.key_pair.serialize_der()).expect("key");
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("server config");
    let port = serve_fixed(http_200(EC_SET), Some(Arc::new(server)));
    let dir = TempDir::new();
    dir.write("ca.pem", ck.cert.pem());
    // Trusted through ca_file: fetched.
    let gw = Gateway::start_in(
        dir,
        &config(&format!(
            "issuer = \"https://tls.example\"\njwks_uri = \"https://localhost:{port}/jwks\"\nca_file = \"ca.pem\"\n\n\
             [[auth.provider]]\nissuer = \"https://untrusted.example\"\njwks_uri = \"https://localhost:{port}/jwks\"\nmin_refresh = \"1s\""
        )),
    );
    let admin = admin_addr(&gw);
    let up = "wsgate_provider_up{issuer=\"https://tls.example\"} 1";
    eventually(up, || {
        admin_get(admin, "/metrics").1.contains(up).then_some(())
    });
    // The same server without ca_file (system roots only): the TLS handshake fails.
    wait_failure(admin, "https://untrusted.example", "tls");
}

#[test]
fn a_set_stale_past_max_stale_turns_its_tokens_into_503() {
    let dir = TempDir::new();
    dir.write("p.jwks.json", EC_SET);
    let gw = Gateway::start_in(
        dir,
        &config(
            "issuer = \"https://stale.example\"\njwks_uri = \"p.jwks.json\"\n\
             min_refresh = \"1s\"\nrefresh = \"1s\"\nmax_stale = \"2s\"",
        ),
    );
    let admin = admin_addr(&gw);
    eventually("/readyz 200", || {
        (admin_get(admin, "/readyz").0 == 200).then_some(())
    });
    // The provider breaks: the last good set is kept for max_stale, then dropped.
    gw.dir.write("p.jwks.json", "not json");
    gw.wait_log("keeping the last good key set");
    eventually("/readyz 503", || {
        (admin_get(admin, "/readyz").0 == 503).then_some(())
    });
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"1"}"#);
    let payload = URL_SAFE_NO_PAD
        .encode(r#"{"iss":"https://stale.example","sub":"a","exp":4000000000,"aud":"wsgate"}"#);
    let (r, _) = attempt(&gw, &format!("{header}.{payload}.c2ln"));
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.header("retry-after").is_some(), "{r:?}");
    // Fixed again: usable at the next attempt.
    gw.dir.write("p.jwks.json", EC_SET);
    eventually("/readyz 200 again", || {
        (admin_get(admin, "/readyz").0 == 200).then_some(())
    });
}
