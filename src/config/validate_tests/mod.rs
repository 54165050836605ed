//! The cross-field rules and file reading of each section: the shared helpers, the SPEC
//! example and defaults here, one submodule per config section.

#![allow(clippy::unwrap_used)]
use super::*;
use std::time::Duration;

use base64::Engine;
use std::sync::atomic::{AtomicUsize, Ordering};

mod admin_session;
mod auth;
mod compression;
mod limits;
mod origin;
mod route;
mod server;
mod tls;

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
alg = "EdDSA"                  # RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA HS256 HS384 HS512
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

fn with_route(route: &str) -> String {
    format!("[server]\nlisten = \"127.0.0.1:8080\"\n[[auth.key]]\nalg = \"EdDSA\"\npublic_key = \"ed.pem\"\n[[route]]\n{route}\n")
}

fn key_dir(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    dir.write("ed.pem", pem("PUBLIC KEY", &ed25519_spki(3)));
    dir
}

fn with_keys(keys: &str) -> String {
    format!("[server]\nlisten = \"127.0.0.1:8080\"\n{keys}\n[[route]]\npath = \"/a\"\nbackend = \"echo\"\n")
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
