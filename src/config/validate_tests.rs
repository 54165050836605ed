//! The cross-field rules and file reading of each section.

#![allow(clippy::unwrap_used)]
use super::origin::normalize_origin;
use super::route::parse_upstream;
use super::*;
use std::time::Duration;

use base64::Engine;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "wsgate-config-{}-{name}-{unique}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn parse(&self, text: &str) -> Result<Config, ConfigErrors> {
        parse_str(text, &self.0, "wsgate.toml")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|chunk| std::str::from_utf8(chunk).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn ed25519_spki(fill: u8) -> Vec<u8> {
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend([fill; 32]);
    der
}

fn secret_text(len: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vec![0x5a; len])
}

fn messages(result: Result<Config, ConfigErrors>) -> Vec<String> {
    result.unwrap_err().lines()
}

fn assert_error(result: Result<Config, ConfigErrors>, expected: &str) {
    let lines = messages(result);
    assert!(
        lines.iter().any(|line| line.contains(expected)),
        "no error containing {expected:?} in {lines:#?}"
    );
}

const SPEC_EXAMPLE: &str = r#"
[server]
listen = ["0.0.0.0:8080"]      # one or more
workers = 0                    # 0 = one per core
max_connections = 100000       # past it: 503 at the handshake
shutdown_grace = "10s"         # SIGTERM: stop accepting, close 1001 to all, wait this long

[tls]                          # optional; when present the listeners speak wss://
cert = "certs/fullchain.pem"
key  = "certs/privkey.pem"     # reloaded on SIGHUP without dropping connections

[auth]
issuer = "https://id.example.com"   # optional; when set, `iss` must equal it
audience = "wsgate"                 # optional; when set, `aud` (string or array) must contain it
leeway = "30s"                      # clock skew allowed on exp / nbf / iat
sources = ["query:access_token", "query:token", "protocol", "header"]  # also "cookie:NAME"
max_token_bytes = "4KiB"            # a longer token is 401 invalid_token, never decoded
explain_to_browsers = false         # see §4: tell a browser *why* through a close code

[[auth.key]]                   # as many as needed; see "Key selection" in §4
kid = "ed-2026-11"
alg = "EdDSA"                  # EdDSA | HS256 | HS384 | HS512 (later: ES256, RS256 ...)
public_key = "keys/ed-2026-11.pub.pem"

[[auth.key]]
kid = "hs-legacy"
alg = "HS256"
secret_file = "keys/hs-legacy.secret"

[origin]                       # default: allow = [] (any request carrying Origin is refused), allow_missing = true
allow = ["https://app.example.com", "https://*.example.com"]
allow_missing = true           # requests with no Origin (non-browser clients)

[limits]
handshake_timeout = "5s"       # whole request must arrive by then (slowloris)
max_request_bytes = "8KiB"     # request line + headers
max_frame = "1MiB"
max_message = "1MiB"           # after reassembling fragments
idle_timeout = "60s"           # ping after idle_timeout/2 of silence, close after idle_timeout
write_buffer = "1MiB"          # per connection; a slower reader is closed (1008)
per_ip_connections = 256
per_ip_handshakes = "50/s"     # failed + successful upgrade attempts, token bucket
per_ip_auth_failures = "10/s"  # past it: 429 before any signature is checked
per_subject_connections = 32
messages = "1000/s"            # per connection, token bucket with burst = rate
bytes = "8MiB/s"

[session]
on_expiry = "close"            # close 4401 "token expired" at exp (+ leeway)
refresh = "message"            # or "off": in-band refresh, see §6
expiry_notice = "60s"          # send `wsgate.expiring` this long before `exp` when refresh is on

[admin]                        # optional; never on a public interface by default
listen = "127.0.0.1:9090"      # /healthz, /readyz, /metrics, POST /revoke
token_scope = "wsgate:admin"   # POST /revoke needs a bearer token with this scope
revocation_log = "data/revocations.log"  # append-only; replayed at start
revocation_retention = "7d"    # how long a jti entry without `exp` is kept

[[route]]
path = "/echo"                 # exact path; the query string is not part of the match
backend = "echo"
scope = ["echo"]               # all required; from `scope` (space-separated) or `scp` (array)
protocols = ["chat.v1"]        # subprotocols this route may select

[[route]]
path = "/public/prices"
backend = "echo"
public = true                  # no token needed; explicit opt-out, `wsgate check` warns about it

[[route]]
path = "/chat"
upstream = ["ws://10.0.0.5:9000/chat", "ws://10.0.0.6:9000/chat"]  # round-robin over healthy ones
scope = ["chat"]
forward_claims = true
"#;

/// Writes the files the SPEC example refers to, with a real certificate and key.
fn spec_example_dir() -> TempDir {
    let dir = TempDir::new("spec");
    dir.write(
        "keys/ed-2026-11.pub.pem",
        pem("PUBLIC KEY", &ed25519_spki(7)),
    );
    dir.write("keys/hs-legacy.secret", format!("  {}\n", secret_text(32)));
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    dir.write("certs/fullchain.pem", generated.cert.pem());
    dir.write("certs/privkey.pem", generated.key_pair.serialize_pem());
    dir
}

#[test]
fn spec_example_loads_with_every_value_resolved() {
    let dir = spec_example_dir();
    let config = dir.parse(SPEC_EXAMPLE).unwrap();

    assert_eq!(
        config.server.listen,
        vec!["0.0.0.0:8080".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(config.server.workers, 0);
    assert_eq!(config.server.max_connections, 100_000);
    assert_eq!(config.server.shutdown_grace, Duration::from_secs(10));

    let debug = format!("{config:?}");
    assert!(
        debug.contains("[secret key elided]"),
        "the TLS key must not be printed"
    );
    assert!(
        debug.contains("HmacSecret(<32 bytes, redacted>)"),
        "{debug}"
    );
    let tls = config.tls.as_ref().unwrap();
    assert_eq!(tls.cert_chain.len(), 1);
    assert_eq!(tls.cert_path, dir.0.join("certs/fullchain.pem"));
    assert_eq!(tls.key_path, dir.0.join("certs/privkey.pem"));

    assert_eq!(
        config.auth.issuer.as_deref(),
        Some("https://id.example.com")
    );
    assert_eq!(config.auth.audience.as_deref(), Some("wsgate"));
    assert_eq!(config.auth.leeway, Duration::from_secs(30));
    assert_eq!(
        config.auth.sources,
        vec![
            Source::Query("access_token".into()),
            Source::Query("token".into()),
            Source::Protocol,
            Source::Header
        ]
    );
    assert_eq!(config.auth.max_token_bytes, 4096);
    assert!(!config.auth.explain_to_browsers);
    assert_eq!(config.auth.keys.len(), 2);
    let ed = &config.auth.keys[0];
    assert_eq!(ed.kid.as_deref(), Some("ed-2026-11"));
    assert_eq!(ed.alg, "EdDSA");
    assert_eq!(ed.material, KeyMaterial::Ed25519Spki(ed25519_spki(7)));
    assert_eq!(ed.material.ed25519_public_key(), Some(&[7u8; 32][..]));
    assert_eq!(ed.path, dir.0.join("keys/ed-2026-11.pub.pem"));
    let hs = &config.auth.keys[1];
    assert_eq!(hs.alg, "HS256");
    assert_eq!(hs.material, KeyMaterial::HmacSecret(vec![0x5a; 32]));

    assert_eq!(
        config.origin.allow,
        vec![
            "https://app.example.com".to_owned(),
            "https://*.example.com".to_owned()
        ]
    );
    assert!(config.origin.allow_missing);

    let limits = &config.limits;
    assert_eq!(limits.handshake_timeout, Duration::from_secs(5));
    assert_eq!(limits.max_request_bytes, 8192);
    assert_eq!(limits.max_frame, 1 << 20);
    assert_eq!(limits.max_message, 1 << 20);
    assert_eq!(limits.idle_timeout, Duration::from_secs(60));
    assert_eq!(limits.write_buffer, 1 << 20);
    assert_eq!(limits.per_ip_connections, 256);
    assert_eq!(limits.per_ip_handshakes, 50);
    assert_eq!(limits.per_ip_auth_failures, 10);
    assert_eq!(limits.per_subject_connections, 32);
    assert_eq!(limits.messages, 1000);
    assert_eq!(limits.bytes, 8 << 20);

    assert_eq!(config.session.on_expiry, OnExpiry::Close);
    assert_eq!(config.session.refresh, Refresh::Message);
    assert_eq!(config.session.expiry_notice, Duration::from_secs(60));

    let admin = config.admin.as_ref().unwrap();
    assert_eq!(
        admin.listen,
        "127.0.0.1:9090".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(admin.token_scope, "wsgate:admin");
    assert_eq!(
        admin.revocation_log,
        Some(dir.0.join("data/revocations.log"))
    );
    assert_eq!(admin.revocation_retention, Duration::from_secs(7 * 86_400));

    assert_eq!(config.routes.len(), 3);
    assert_eq!(config.routes[0].path, "/echo");
    assert_eq!(config.routes[0].scope, vec!["echo".to_owned()]);
    assert_eq!(config.routes[0].protocols, vec!["chat.v1".to_owned()]);
    assert_eq!(config.routes[0].backend, Backend::Echo);
    assert!(config.routes[1].public);
    let Backend::Upstream {
        urls,
        forward_claims,
        backoff,
        timeout,
        ..
    } = &config.routes[2].backend
    else {
        panic!("route[2] is an upstream route");
    };
    assert!(*forward_claims);
    assert_eq!(*backoff, Duration::from_secs(10));
    assert_eq!(*timeout, Duration::from_secs(10));
    assert_eq!(urls.len(), 2);
    assert_eq!(urls[0].host, "10.0.0.5");
    assert_eq!(urls[0].port, 9000);
    assert_eq!(urls[0].host_header, "10.0.0.5:9000");
    assert_eq!(urls[0].path, "/chat");
    assert!(!urls[0].secure);
    assert_eq!(config.route("/chat"), Some(&config.routes[2]));

    let warnings = config.warnings();
    assert!(
        warnings.contains(
            &"route[1]: public = true: no token is required on /public/prices".to_owned()
        ),
        "{warnings:#?}"
    );
    assert!(
        !warnings.iter().any(|w| w.starts_with("admin.listen")),
        "{warnings:#?}"
    );
}

/// The smallest valid file: a listener and one public route.
const MINIMAL: &str = "[server]\nlisten = \"127.0.0.1:8080\"\n\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n";

#[test]
fn omitted_values_are_the_spec_defaults() {
    let dir = TempDir::new("defaults");
    let config = dir.parse(MINIMAL).unwrap();
    let spec = spec_example_dir().parse(SPEC_EXAMPLE).unwrap();
    // SPEC §3: "The scalars shown under [server], [auth], [limits] and [session] are
    // the defaults when omitted".
    assert_eq!(config.server.workers, spec.server.workers);
    assert_eq!(config.server.max_connections, spec.server.max_connections);
    assert_eq!(config.server.shutdown_grace, spec.server.shutdown_grace);
    assert_eq!(config.limits, spec.limits);
    assert_eq!(config.session, spec.session);
    assert_eq!(config.auth.leeway, spec.auth.leeway);
    assert_eq!(config.auth.sources, spec.auth.sources);
    assert_eq!(config.auth.max_token_bytes, spec.auth.max_token_bytes);
    assert_eq!(
        config.auth.explain_to_browsers,
        spec.auth.explain_to_browsers
    );
    assert_eq!(config.auth.issuer, None);
    assert_eq!(config.auth.audience, None);
    assert!(config.auth.keys.is_empty());
    // "[origin] default: allow = [], allow_missing = true".
    assert_eq!(
        config.origin,
        Origin {
            allow: Vec::new(),
            allow_missing: true
        }
    );
    assert!(config.tls.is_none());
    assert!(config.admin.is_none());
}

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
fn demo_config_is_the_documented_one() {
    let listen: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let config = crate::config::demo(listen, ed25519_spki(1));
    assert_eq!(config.server.listen, vec![listen]);
    assert_eq!(config.auth.keys.len(), 1);
    assert_eq!(config.auth.keys[0].kid.as_deref(), Some("demo"));
    assert_eq!(config.auth.keys[0].alg, "EdDSA");
    assert_eq!(config.routes.len(), 1);
    assert_eq!(config.routes[0].path, "/echo");
    assert!(!config.routes[0].public);
    assert!(config.routes[0].scope.is_empty());
    assert_eq!(config.routes[0].backend, Backend::Echo);
    assert!(config.origin.allow_missing);
    let defaults = TempDir::new("demo").parse(MINIMAL).unwrap();
    assert_eq!(config.limits, defaults.limits);
    assert_eq!(config.session, defaults.session);
    assert_eq!(config.auth.sources, defaults.auth.sources);
    assert!(config.warnings().is_empty());
}

#[test]
fn listen_takes_one_address_or_several() {
    let dir = TempDir::new("listen");
    let config = dir
        .parse("[server]\nlisten = [\"127.0.0.1:1\", \"[::1]:2\"]\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n")
        .unwrap();
    assert_eq!(config.server.listen.len(), 2);
    assert_error(
        dir.parse(
            "[server]\nlisten = []\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n",
        ),
        "wsgate.toml: server.listen: required",
    );
    assert_error(
        dir.parse("[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n"),
        "wsgate.toml: server.listen: required",
    );
    assert_error(
        dir.parse("[server]\nlisten = [\"127.0.0.1:1\", \"localhost:2\"]\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n"),
        "server.listen[1]: expected an IP address and port",
    );
    assert_error(
        dir.parse("[server]\nlisten = [\"0.0.0.0:8080\", \"127.0.0.1:8080\"]\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n"),
        "server.listen[1]: 127.0.0.1:8080 overlaps server.listen[0]",
    );
    // Port 0 (ephemeral, for tests) may repeat.
    assert!(dir
        .parse("[server]\nlisten = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n")
        .is_ok());
    assert_error(
        dir.parse("[server]\nlisten = 8080\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n"),
        "server.listen: invalid type: integer `8080`, expected a socket address like \"0.0.0.0:8080\" or an array of them",
    );
}

#[test]
fn server_numbers_are_bounded() {
    let dir = TempDir::new("server");
    assert_error(
        dir.parse(&MINIMAL.replace(
            "[server]\n",
            "[server]\nworkers = 5000\nmax_connections = 0\n",
        )),
        "server.workers: at most 1024",
    );
    assert_error(
        dir.parse(&MINIMAL.replace("[server]\n", "[server]\nmax_connections = 0\n")),
        "server.max_connections: must be at least 1",
    );
    assert_error(
        dir.parse(&MINIMAL.replace("[server]\n", "[server]\nworkers = -1\n")),
        "server.workers: invalid value: integer `-1`, expected a non-negative integer",
    );
}

fn with_route(route: &str) -> String {
    format!("[server]\nlisten = \"127.0.0.1:8080\"\n[[auth.key]]\nalg = \"EdDSA\"\npublic_key = \"ed.pem\"\n[[route]]\n{route}\n")
}

fn key_dir(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    dir.write("ed.pem", pem("PUBLIC KEY", &ed25519_spki(3)));
    dir
}

#[test]
fn route_rules() {
    let dir = key_dir("routes");
    assert!(dir
        .parse(&with_route("path = \"/a\"\nbackend = \"echo\""))
        .is_ok());
    assert_error(
        dir.parse(&with_route("path = \"a\"\nbackend = \"echo\"")),
        "wsgate.toml: route[0].path: must start with '/' (line 7)",
    );
    assert_error(
        dir.parse(&with_route("path = \"/a?x=1\"\nbackend = \"echo\"")),
        "route[0].path: must not contain '?'",
    );
    assert_error(
        dir.parse(&with_route("path = \"/a b\"\nbackend = \"echo\"")),
        "route[0].path: must not contain spaces",
    );
    assert_error(
        dir.parse(&with_route("backend = \"echo\"")),
        "route[0].path: required",
    );
    assert_error(
        dir.parse(&with_route(
            "path = \"/a\"\nbackend = \"echo\"\n[[route]]\npath = \"/a\"\nbackend = \"echo\"",
        )),
        "route[1].path: duplicate path \"/a\" (also route[0].path)",
    );
    assert_error(
        dir.parse(&with_route("path = \"/a\"\nbackend = \"redis\"")),
        "route[0].backend: unknown backend \"redis\"",
    );
    assert_error(
        dir.parse(&with_route("path = \"/a\"")),
        "route[0]: needs backend = \"echo\" or upstream",
    );
    assert_error(
        dir.parse(&with_route(
            "path = \"/a\"\nbackend = \"echo\"\nupstream = [\"ws://h:1/\"]",
        )),
        "route[0]: set either backend or upstream, not both",
    );
    assert_error(
        dir.parse(&with_route(
            "path = \"/a\"\nbackend = \"echo\"\nforward_claims = true",
        )),
        "route[0].forward_claims: only applies to routes with upstream",
    );
    assert_error(
        dir.parse(&with_route(
            "path = \"/a\"\nbackend = \"echo\"\npublic = true\nscope = [\"x\"]",
        )),
        "route[0].scope: a public route takes no token",
    );
    assert_error(
        dir.parse(&with_route(
            "path = \"/a\"\nbackend = \"echo\"\nscope = [\"a b\"]",
        )),
        "route[0].scope[0]: \"a b\" is not a valid scope",
    );
    assert_error(
        dir.parse(&with_route(
            "path = \"/a\"\nbackend = \"echo\"\nscope = [\"a\", \"a\"]",
        )),
        "route[0].scope[1]: duplicate scope",
    );
    assert_error(
        dir.parse(&with_route(
            "path = \"/a\"\nbackend = \"echo\"\nprotocols = [\"chat v1\"]",
        )),
        "route[0].protocols[0]: \"chat v1\" is not a valid protocol",
    );
    assert_error(
        dir.parse(&with_route(
            "path = \"/a\"\nbackend = \"echo\"\nprotocols = [\"Bearer.x\"]",
        )),
        "route[0].protocols[0]: the \"bearer.\" prefix",
    );
    assert_error(
        dir.parse(&with_route(
            "path = \"/a\"\nbackend = \"echo\"\nscope = \"echo\"",
        )),
        "route[0].scope: invalid type: string \"echo\", expected an array",
    );
    assert_error(
        dir.parse("[server]\nlisten = \"127.0.0.1:8080\"\n[[auth.key]]\nalg = \"EdDSA\"\npublic_key = \"ed.pem\"\n"),
        "wsgate.toml: route: at least one [[route]] is required",
    );
}

#[test]
fn upstream_urls() {
    let good = parse_upstream("wss://[::1]/feed").unwrap();
    assert_eq!(
        (
            good.secure,
            good.host.as_str(),
            good.port,
            good.path.as_str()
        ),
        (true, "::1", 443, "/feed")
    );
    assert_eq!(good.host_header, "[::1]");
    let good = parse_upstream("ws://backend.internal").unwrap();
    assert_eq!(
        (good.port, good.path.as_str(), good.host.as_str()),
        (80, "/", "backend.internal")
    );
    for bad in [
        "http://h/",
        "ws:/h",
        "ws://",
        "ws://:80/",
        "ws://h:0/",
        "ws://h:99999/",
        "ws://h:x/",
        "ws://user@h/",
        "ws://h/a?b",
        "ws://h/a#b",
        "ws://h/a b",
        "ws://h_1/",
        "ws://[::1/",
        "ws://[nope]:1/",
    ] {
        assert!(parse_upstream(bad).is_err(), "{bad} should be refused");
    }
    let dir = key_dir("upstream");
    assert_error(
        dir.parse(&with_route(
            "path = \"/a\"\nupstream = [\"ws://h:1/\", \"http://h/\"]",
        )),
        "route[0].upstream[1]: the scheme must be ws:// or wss://",
    );
    assert_error(
        dir.parse(&with_route("path = \"/a\"\nupstream = []")),
        "route[0].upstream: must list at least one",
    );
    assert_error(
        dir.parse(&with_route(
            "path = \"/a\"\nupstream = [\"ws://h:1/\"]\nupstream_timeout = \"0s\"",
        )),
        "route[0].upstream_timeout: must be more than 0s",
    );
    let config = dir
        .parse(&with_route("path = \"/a\"\nupstream = [\"ws://h:1/\"]\nupstream_backoff = \"1m\"\nupstream_timeout = \"3s\""))
        .unwrap();
    assert_eq!(
        config.routes[0].backend,
        Backend::Upstream {
            urls: vec![parse_upstream("ws://h:1/").unwrap()],
            forward_claims: false,
            backoff: Duration::from_secs(60),
            timeout: Duration::from_secs(3),
            ca: None,
            sign_identity: false,
        }
    );
}

#[test]
fn a_token_route_needs_a_key() {
    let dir = TempDir::new("nokeys");
    assert_error(
        dir.parse("[server]\nlisten = \"127.0.0.1:8080\"\n[[route]]\npath = \"/p\"\nbackend = \"echo\"\npublic = true\n[[route]]\npath = \"/q\"\nbackend = \"echo\"\n"),
        "wsgate.toml: auth.key: no keys configured but route[1] needs a token",
    );
}

fn with_keys(keys: &str) -> String {
    format!("[server]\nlisten = \"127.0.0.1:8080\"\n{keys}\n[[route]]\npath = \"/a\"\nbackend = \"echo\"\n")
}

#[test]
fn key_rules() {
    let dir = key_dir("keys");
    dir.write("hs.secret", secret_text(32));
    dir.write(
        "hs48.secret",
        format!(
            "\n {}\n",
            base64::engine::general_purpose::URL_SAFE.encode([1u8; 47])
        ),
    );
    dir.write("hs64.secret", secret_text(64));
    dir.write("short.secret", secret_text(31));
    dir.write("std.secret", "++++////++++////++++////++++////++++////++++");
    dir.write("private.pem", pem("PRIVATE KEY", &[1, 2, 3]));
    dir.write(
        "rsa.pem",
        pem("PUBLIC KEY", &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86]),
    );
    dir.write("empty.pem", "");

    let config = dir
        .parse(&with_keys("[[auth.key]]\nkid = \"a\"\nalg = \"HS256\"\nsecret_file = \"hs.secret\"\n[[auth.key]]\nalg = \"HS512\"\nsecret_file = \"hs64.secret\"\n[[auth.key]]\nalg = \"EdDSA\"\npublic_key = \"ed.pem\""))
        .unwrap();
    assert_eq!(config.auth.keys.len(), 3);
    assert_eq!(config.auth.keys[1].kid, None);
    assert_eq!(
        config.auth.keys[1].material,
        KeyMaterial::HmacSecret(vec![0x5a; 64])
    );

    let cases = [
        ("alg = \"HS256\"\nsecret_file = \"short.secret\"", "auth.key[0].secret_file: "),
        ("alg = \"HS384\"\nsecret_file = \"hs48.secret\"", "HS384 needs at least 48 (RFC 7518 §3.2)"),
        ("alg = \"HS512\"\nsecret_file = \"hs.secret\"", "HS512 needs at least 64"),
        ("alg = \"HS256\"\nsecret_file = \"std.secret\"", "not base64url text"),
        ("alg = \"HS256\"\nsecret_file = \"missing.secret\"", "missing.secret: cannot read: "),
        ("alg = \"HS256\"", "auth.key[0].secret_file: required for alg = \"HS256\""),
        ("alg = \"HS256\"\npublic_key = \"ed.pem\"", "auth.key[0].public_key: alg = \"HS256\" is an HMAC"),
        ("alg = \"EdDSA\"", "auth.key[0].public_key: required for alg = \"EdDSA\""),
        ("alg = \"EdDSA\"\nsecret_file = \"hs.secret\"", "auth.key[0].secret_file: alg = \"EdDSA\" verifies with a public key"),
        ("alg = \"EdDSA\"\npublic_key = \"ed.pem\"\nsecret_file = \"hs.secret\"", "auth.key[0]: set public_key (EdDSA) or secret_file"),
        ("alg = \"EdDSA\"\npublic_key = \"private.pem\"", "holds a private key; give the public key"),
        ("alg = \"EdDSA\"\npublic_key = \"rsa.pem\"", "not an Ed25519 public key"),
        ("alg = \"EdDSA\"\npublic_key = \"empty.pem\"", "no PEM \"PUBLIC KEY\" block found"),
        ("alg = \"EdDSA\"\npublic_key = \"nope.pem\"", "nope.pem: cannot read: "),
        ("alg = \"RS256\"\npublic_key = \"ed.pem\"", "auth.key[0].alg: unknown algorithm \"RS256\"; expected one of EdDSA, HS256, HS384, HS512"),
        ("alg = \"none\"", "auth.key[0].alg: \"none\" is never accepted"),
        ("public_key = \"ed.pem\"", "auth.key[0].alg: required"),
        ("kid = \"\"\nalg = \"EdDSA\"\npublic_key = \"ed.pem\"", "auth.key[0].kid: must not be empty"),
    ];
    for (key, expected) in cases {
        assert_error(
            dir.parse(&with_keys(&format!("[[auth.key]]\n{key}"))),
            expected,
        );
    }
    assert_error(
        dir.parse(&with_keys("[[auth.key]]\nkid = \"k\"\nalg = \"EdDSA\"\npublic_key = \"ed.pem\"\n[[auth.key]]\nkid = \"k\"\nalg = \"HS256\"\nsecret_file = \"hs.secret\"")),
        "auth.key[1].kid: duplicate kid \"k\" (also auth.key[0].kid)",
    );
}

#[test]
fn secrets_never_reach_an_error_message() {
    let dir = key_dir("secret-leak");
    // Not base64url ('+' and '/'): the error must not quote any of it.
    let secret = "SuperSecret+Value/ThatMustNotLeak+0123456789abcdef";
    dir.write("bad.secret", secret);
    let short = secret_text(8);
    dir.write("short.secret", &short);
    for file in ["bad.secret", "short.secret"] {
        let result = dir.parse(&with_keys(&format!(
            "[[auth.key]]\nalg = \"HS256\"\nsecret_file = \"{file}\""
        )));
        let text = result.unwrap_err().to_string();
        assert!(
            !text.contains("SuperSecret") && !text.contains("ThatMust"),
            "{text}"
        );
        assert!(!text.contains(&short), "{text}");
    }
    let config = {
        dir.write("ok.secret", secret_text(40));
        dir.parse(&with_keys(
            "[[auth.key]]\nalg = \"HS256\"\nsecret_file = \"ok.secret\"",
        ))
        .unwrap()
    };
    let debug = format!("{config:?}");
    assert!(
        debug.contains("HmacSecret(<40 bytes, redacted>)"),
        "{debug}"
    );
    assert!(!debug.contains("90, 90"), "{debug}");
}

#[test]
fn sources_rules() {
    let dir = key_dir("sources");
    let parse = |sources: &str, origin: &str| {
        dir.parse(&format!(
            "[server]\nlisten = \"127.0.0.1:8080\"\n[auth]\nsources = {sources}\n[[auth.key]]\nalg = \"EdDSA\"\npublic_key = \"ed.pem\"\n{origin}\n[[route]]\npath = \"/a\"\nbackend = \"echo\"\n"
        ))
    };
    let config = parse("[\"query:jwt\", \"protocol\", \"header\"]", "").unwrap();
    assert_eq!(
        config.auth.sources,
        vec![
            Source::Query("jwt".into()),
            Source::Protocol,
            Source::Header
        ]
    );
    assert_error(parse("[]", ""), "auth.sources: must list at least one");
    assert_error(
        parse("[\"query:\"]", ""),
        "auth.sources[0]: query:NAME needs a name",
    );
    assert_error(
        parse("[\"query:a b\"]", ""),
        "auth.sources[0]: query:NAME needs a name",
    );
    assert_error(
        parse("[\"cookie\"]", ""),
        "auth.sources[0]: unknown source \"cookie\"",
    );
    assert_error(
        parse("[\"bearer\"]", ""),
        "auth.sources[0]: unknown source \"bearer\"",
    );
    assert_error(parse("[\"Header\"]", ""), "auth.sources[0]: unknown source");
    assert_error(
        parse("[\"header\", \"header\"]", ""),
        "auth.sources[1]: duplicate source \"header\"",
    );
    assert_error(
        parse("[\"query:t\", \"query:t\"]", ""),
        "auth.sources[1]: duplicate source",
    );
}

#[test]
fn cookie_source_needs_a_closed_origin_policy() {
    let dir = key_dir("cookie");
    let parse = |origin: &str| {
        dir.parse(&format!(
            "[server]\nlisten = \"127.0.0.1:8080\"\n[auth]\nsources = [\"cookie:session\", \"header\"]\n[[auth.key]]\nalg = \"EdDSA\"\npublic_key = \"ed.pem\"\n{origin}\n[[route]]\npath = \"/a\"\nbackend = \"echo\"\n"
        ))
    };
    // SPEC §4: cookie:NAME only with a non-empty origin.allow and allow_missing = false.
    let expected = "auth.sources[0]: cookie:session needs a non-empty origin.allow and origin.allow_missing = false";
    assert_error(parse(""), expected);
    assert_error(parse("[origin]\nallow_missing = false"), expected);
    assert_error(
        parse("[origin]\nallow = [\"https://app.example.com\"]"),
        expected,
    );
    assert_error(
        parse("[origin]\nallow = [\"https://app.example.com\"]\nallow_missing = true"),
        expected,
    );
    let config =
        parse("[origin]\nallow = [\"https://app.example.com\"]\nallow_missing = false").unwrap();
    assert_eq!(config.auth.sources[0], Source::Cookie("session".into()));
}

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

#[test]
fn limits_rules() {
    let dir = TempDir::new("limits");
    let parse = |limits: &str| dir.parse(&format!("{MINIMAL}[limits]\n{limits}\n"));
    assert_error(
        parse("max_frame = \"0B\""),
        "limits.max_frame: must be at least 1B, got 0B",
    );
    assert_error(
        parse("max_message = \"0B\""),
        "limits.max_message: must be at least 1B",
    );
    assert_error(
        parse("max_request_bytes = \"1023B\""),
        "limits.max_request_bytes: must be at least 1KiB, got 1023B",
    );
    assert_error(
        parse("write_buffer = \"2KiB\""),
        "limits.write_buffer: must be at least 4KiB",
    );
    assert_error(
        parse("handshake_timeout = \"0s\""),
        "limits.handshake_timeout: must be more than 0s",
    );
    assert_error(
        parse("idle_timeout = \"0ms\""),
        "limits.idle_timeout: must be more than 0s",
    );
    assert_error(
        parse("per_ip_connections = 0"),
        "limits.per_ip_connections: must be at least 1",
    );
    assert_error(
        parse("per_subject_connections = 0"),
        "limits.per_subject_connections: must be at least 1",
    );
    assert_error(
        parse("messages = \"0/s\""),
        "limits.messages: expected a rate like \"50/s\"",
    );
    assert_error(
        parse("bytes = \"8MB/s\""),
        "limits.bytes: expected a byte rate like \"8MiB/s\"",
    );
    assert_error(
        parse("max_frame = 1048576"),
        "limits.max_frame: invalid type: integer `1048576`, expected a size like \"64KiB\"",
    );
    // max_frame may exceed max_message: not required to be ordered.
    let config = parse("max_frame = \"2MiB\"\nmax_message = \"1MiB\"\nmax_request_bytes = \"1KiB\"\nwrite_buffer = \"4KiB\"").unwrap();
    assert_eq!(
        (config.limits.max_frame, config.limits.max_message),
        (2 << 20, 1 << 20)
    );
    assert_error(
        dir.parse(&format!("{MINIMAL}[auth]\nmax_token_bytes = \"65KiB\"\n")),
        "auth.max_token_bytes: must be between 1B and 64KiB, got 65KiB",
    );
    assert!(dir
        .parse(&format!("{MINIMAL}[auth]\nmax_token_bytes = \"64KiB\"\n"))
        .is_ok());
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

#[test]
fn tls_files_are_read_and_checked() {
    let dir = spec_example_dir();
    let tls_only = |cert: &str, key: &str| {
        dir.parse(&format!(
            "{MINIMAL}[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n"
        ))
    };
    assert!(tls_only("certs/fullchain.pem", "certs/privkey.pem").is_ok());
    let missing = dir.0.join("certs/missing.pem").display().to_string();
    assert_error(
        tls_only("certs/missing.pem", "certs/privkey.pem"),
        &format!("wsgate.toml: tls.cert: {missing}: cannot read: "),
    );
    assert_error(
        tls_only("certs/fullchain.pem", "certs/missing.pem"),
        &format!("wsgate.toml: tls.key: {missing}: cannot read: "),
    );
    assert_error(
        dir.parse(&format!("{MINIMAL}[tls]\ncert = \"certs/fullchain.pem\"\n")),
        "tls.key: required",
    );

    dir.write(
        "certs/garbage.pem",
        pem("CERTIFICATE", b"definitely not DER"),
    );
    assert_error(
        tls_only("certs/garbage.pem", "certs/privkey.pem"),
        "tls.cert: ",
    );
    assert_error(
        tls_only("certs/garbage.pem", "certs/privkey.pem"),
        "the first certificate is not a valid X.509 certificate",
    );
    dir.write("certs/none.pem", "no pem here\n");
    assert_error(
        tls_only("certs/none.pem", "certs/privkey.pem"),
        "no PEM \"CERTIFICATE\" block found",
    );
    dir.write("certs/badkey.pem", pem("PRIVATE KEY", b"not a key"));
    assert_error(
        tls_only("certs/fullchain.pem", "certs/badkey.pem"),
        "tls.key: ",
    );
    assert_error(
        tls_only("certs/fullchain.pem", "certs/none.pem"),
        "tls.key: ",
    );
    let other = rcgen::generate_simple_self_signed(vec!["other".to_owned()]).unwrap();
    dir.write("certs/other.key.pem", other.key_pair.serialize_pem());
    assert_error(
        tls_only("certs/fullchain.pem", "certs/other.key.pem"),
        "does not match the certificate",
    );
    dir.write("certs/truncated.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
    assert_error(
        tls_only("certs/truncated.pem", "certs/privkey.pem"),
        "a PEM block has no END line",
    );
}

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let dir = TempDir::new("many");
    let text = "[server]\nlisten = \"nope\"\nworkers = \"four\"\n\n[limits]\nmax_frame = \"1MB\"\nidle_timeout = \"0s\"\n\n[[route]]\npath = \"a\"\nbackend = \"echo\"\nscpoe = [\"x\"]\n\n[[route]]\npath = \"/b\"\nbackend = \"nope\"\n";
    let errors = dir.parse(text).unwrap_err();
    let lines = errors.lines();
    let expected = [
        "wsgate.toml: server.listen[0]: expected an IP address and port",
        "wsgate.toml: server.workers: invalid type: string \"four\"",
        "wsgate.toml: limits.max_frame: expected a size like \"64KiB\" (units: B, KiB, MiB, GiB), got \"1MB\"",
        "wsgate.toml: limits.idle_timeout: must be more than 0s",
        "wsgate.toml: route[0].path: must start with '/'",
        "wsgate.toml: route[0].scpoe: unknown key (did you mean `scope`?)",
        "wsgate.toml: route[1].backend: unknown backend \"nope\"",
        "wsgate.toml: auth.key: no keys configured but route[0] needs a token",
    ];
    assert_eq!(lines.len(), expected.len(), "{lines:#?}");
    for (line, expected) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(expected),
            "{line:?} should start with {expected:?}"
        );
    }
    assert!(lines[0].ends_with("(line 2)"), "{}", lines[0]);
    assert!(lines[6].ends_with("(line 16)"), "{}", lines[6]);
    assert_eq!(errors.to_string().lines().count(), expected.len());
}

#[test]
fn compression_section_and_route_opt_out() {
    let dir = key_dir("compression");
    let route = "path = \"/a\"\nbackend = \"echo\"";
    // Absent: off, with SPEC §10's values.
    let config = dir.parse(&with_route(route)).unwrap();
    assert!(!config.compression.permessage_deflate);
    assert_eq!(config.compression.deflate.server_max_window_bits, 15);
    assert!(!config.compression.deflate.context_takeover);
    assert_eq!(config.compression.deflate.min_size, 256);
    assert_eq!(config.compression.memory, 256 << 20);
    assert!(config.routes[0].compression);
    let text = format!(
        "{}[compression]\npermessage_deflate = true\nserver_max_window_bits = 10\ncontext_takeover = true\nmin_size = \"1KiB\"\nmemory = \"1MiB\"\n",
        with_route("path = \"/a\"\nbackend = \"echo\"\ncompression = false")
    );
    let config = dir.parse(&text).unwrap();
    assert!(config.compression.permessage_deflate);
    assert_eq!(config.compression.deflate.server_max_window_bits, 10);
    assert!(config.compression.deflate.context_takeover);
    assert_eq!(config.compression.deflate.min_size, 1024);
    assert_eq!(config.compression.memory, 1 << 20);
    assert!(!config.routes[0].compression);
    for bits in [0, 8, 16] {
        assert_error(
            dir.parse(&format!(
                "{}[compression]\nserver_max_window_bits = {bits}\n",
                with_route(route)
            )),
            "compression.server_max_window_bits: must be 9..15",
        );
    }
    assert_error(
        dir.parse(&format!("{}[compression]\nlevel = 9\n", with_route(route))),
        "compression.level",
    );
}
