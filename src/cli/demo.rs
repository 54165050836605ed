//! `wsgate serve --demo [--listen ADDR]` (SPEC §2): bind first, then build a
//! configuration that names the bound port, then print the page's URL, a token and a
//! client command.
//!
//! The demo also runs the token service (SPEC §11, [`super::demo_login`]): one user,
//! `demo`, with a password generated at start and printed once. The page logs in through
//! it (another origin: the login listener answers the page's origins through CORS),
//! refreshes in-band with rotated tokens and logs out.
//!
//! The demo is the only place where the data-plane listener answers plain HTTP: `GET /`
//! is a self-contained page (inline HTML, CSS and script; no external asset) and
//! `GET /token` hands that page a fresh demo token (or, with `?expired`, a correctly
//! signed but expired one, to show what a browser sees with `explain_to_browsers`).
//! Anyone who can reach the demo listener can get a demo token, exactly as anyone who
//! can read the terminal can: the key lives in memory for the process's life, signs only
//! the subject `demo-user`, and the demo listens on loopback unless told otherwise.
//! Both routes check `Host` against the listener's own names (a DNS-rebinding page gets
//! 421) and an `Origin`, when sent, against the page's own origins.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ring::signature::{Ed25519KeyPair, KeyPair as _};

use super::run::Failure;
use super::token::{sign, SigningKey};
use crate::auth::keys::{Alg, ED25519_SPKI_PREFIX};
use crate::clock;
use crate::config::{self, Refresh, Source};
use crate::net::plain::PlainResponder;
use crate::net::{listener, server};
use crate::proto::http::request::RequestHead;

/// The default demo address (SPEC §2).
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// The subject every demo token carries.
const SUBJECT: &str = "demo-user";
/// Lifetime of the printed token.
const PRINTED_TTL: u64 = 3600;
/// Lifetime of a token the page fetches: short, so that its countdown and the
/// `wsgate.expiring` notice are visible.
const PAGE_TTL: u64 = 600;
/// The demo's `auth.leeway`, in seconds.
const LEEWAY_SECS: u64 = 30;
/// The page's protocol offered beside the token (SPEC §4: a browser needs one).
const PROTOCOL: &str = "demo";

/// The demo's signer: an in-memory Ed25519 key (kid "demo").
pub struct DemoSigner {
    key: SigningKey,
    leeway_secs: u64,
}

impl DemoSigner {
    /// A fresh random key (expired tokens end `leeway_secs` + 60 s in the past); returns
    /// the signer with its SPKI DER public key.
    pub fn generate(leeway_secs: u64) -> Result<(DemoSigner, Vec<u8>), String> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| "demo: the system random generator failed".to_owned())?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|_| "demo: generated key did not parse".to_owned())?;
        let spki = [&ED25519_SPKI_PREFIX[..], pair.public_key().as_ref()].concat();
        Ok((
            DemoSigner {
                key: SigningKey::Ed25519(pair),
                leeway_secs,
            },
            spki,
        ))
    }

    /// A token for `demo-user` issued at `iat` that expires at `exp`.
    fn token(&self, iat: u64, exp: u64) -> Result<String, String> {
        let payload = serde_json::json!({ "sub": SUBJECT, "iat": iat, "exp": exp });
        sign(
            Alg::EdDSA,
            &self.key,
            r#"{"alg":"EdDSA","typ":"JWT","kid":"demo"}"#,
            &payload.to_string(),
        )
    }

    /// A token valid for `ttl` seconds from `now`; returns it with its `exp`.
    pub fn fresh(&self, now: u64, ttl: u64) -> Result<(String, u64), String> {
        let exp = now + ttl;
        Ok((self.token(now, exp)?, exp))
    }

    /// A correctly signed token that expired a minute beyond the leeway ago.
    pub fn expired(&self, now: u64) -> Result<(String, u64), String> {
        let exp = now.saturating_sub(self.leeway_secs + 60);
        Ok((self.token(exp.saturating_sub(PAGE_TTL), exp)?, exp))
    }
}

/// The names a browser may use for the demo listener: `host:port` forms for `Host`
/// and `http://host:port` origins.
fn page_hosts(bound: SocketAddr) -> Vec<String> {
    let port = bound.port();
    let mut hosts = vec![bound.to_string()];
    let loopback = match bound.ip() {
        IpAddr::V4(ip) => ip.is_loopback() || ip.is_unspecified(),
        IpAddr::V6(ip) => ip.is_loopback() || ip.is_unspecified(),
    };
    if loopback {
        for h in [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ] {
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
    }
    hosts
}

/// The demo's plain-HTTP routes: `GET /` and `GET /token`.
pub struct DemoPage {
    signer: Arc<DemoSigner>,
    hosts: Vec<String>,
    origins: Vec<String>,
    /// The token service's port, on the same address as the page.
    login_port: u16,
}

impl DemoPage {
    /// The routes for a listener bound at `bound`, whose token service listens on
    /// `login_port` of the same address.
    pub fn new(signer: Arc<DemoSigner>, bound: SocketAddr, login_port: u16) -> DemoPage {
        let hosts = page_hosts(bound);
        let origins = hosts.iter().map(|h| format!("http://{h}")).collect();
        DemoPage {
            signer,
            hosts,
            origins,
            login_port,
        }
    }

    /// The token service's origin as seen from a page served under `host` (`name:port`):
    /// the same name, the login port.
    fn login_origin(&self, host: &str) -> String {
        let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
        format!("http://{name}:{}", self.login_port)
    }

    /// The page's allowed origins (`origin.allow` of the demo).
    pub fn origins(&self) -> &[String] {
        &self.origins
    }

    fn answer(&self, head: &RequestHead<'_, '_>, now: u64) -> Option<Vec<u8>> {
        let page = match head.path {
            "/" | "/index.html" => true,
            "/token" => false,
            _ => return None,
        };
        if head.method != "GET" && head.method != "HEAD" {
            return Some(response(
                "405 Method Not Allowed",
                "text/plain; charset=utf-8",
                "Allow: GET, HEAD\r\n",
                b"method not allowed\n",
            ));
        }
        let mut hosts = head.headers_named("host");
        let host = match (hosts.next(), hosts.next()) {
            (Some(h), None) => std::str::from_utf8(h).unwrap_or("").trim(),
            _ => "",
        };
        let host = self
            .hosts
            .iter()
            .find(|h| h.eq_ignore_ascii_case(host))
            .map(String::as_str);
        let Some(host) = host else {
            // A page served under another name (DNS rebinding) gets nothing.
            return Some(response(
                "421 Misdirected Request",
                "text/plain; charset=utf-8",
                "",
                b"unknown Host for this demo\n",
            ));
        };
        if let Some(origin) = head.header("origin") {
            let origin = std::str::from_utf8(origin).unwrap_or("").trim();
            if !self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
                return Some(response(
                    "403 Forbidden",
                    "text/plain; charset=utf-8",
                    "",
                    b"origin not allowed\n",
                ));
            }
        }
        let mut reply = if page {
            // `host` is one of the listener's own names (checked above), so it is safe to
            // write into the page and its policy.
            let login = self.login_origin(host);
            let csp = format!(
                "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self' ws://{host} {login}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n"
            );
            response(
                "200 OK",
                "text/html; charset=utf-8",
                &csp,
                PAGE_HTML.replace("{{LOGIN_URL}}", &login).as_bytes(),
            )
        } else {
            let minted = if head
                .query
                .is_some_and(|q| q.split('&').any(|p| p == "expired"))
            {
                self.signer.expired(now)
            } else {
                self.signer.fresh(now, PAGE_TTL)
            };
            match minted {
                Ok((token, exp)) => response(
                    "200 OK",
                    "application/json",
                    "",
                    format!(r#"{{"token":"{token}","exp":{exp},"sub":"{SUBJECT}"}}"#).as_bytes(),
                ),
                Err(_) => response(
                    "500 Internal Server Error",
                    "text/plain; charset=utf-8",
                    "",
                    b"signing failed\n",
                ),
            }
        };
        if head.method == "HEAD" {
            if let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
                reply.truncate(end + 4);
            }
        }
        Some(reply)
    }
}

impl PlainResponder for DemoPage {
    fn respond(&self, head: &RequestHead<'_, '_>, _peer: IpAddr) -> Option<Vec<u8>> {
        self.answer(head, clock::unix_now())
    }
}

/// A complete `Connection: close` response.
fn response(status: &str, content_type: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The printed Node.js client: reports open, echoes, errors and the close code and
/// reason; exits 0 only after an echo and a normal close.
/// `token_word` is the token as a shell word (quoted, or `"$TOKEN"`).
pub fn node_command(ws_url: &str, token_word: &str) -> String {
    let script = concat!(
        "const [url, token] = process.argv.slice(1);",
        " const ws = new WebSocket(url, [\"demo\", \"bearer.\" + token]);",
        " let echoed = false;",
        " const timer = setTimeout(() => { console.error(\"timeout: no answer in 10s\"); process.exit(1); }, 10000);",
        " ws.onopen = () => { console.log(\"open, protocol:\", ws.protocol); ws.send(\"hello\"); };",
        " ws.onmessage = (e) => { console.log(\"echo:\", e.data); echoed = true; ws.close(1000, \"done\"); };",
        " ws.onerror = (e) => { console.error(\"error:\", e.message || \"connection failed\", \"(server down? token or origin refused? the gateway log says why)\"); setTimeout(() => process.exit(1), 200); };",
        " ws.onclose = (e) => { clearTimeout(timer); console.log(\"close:\", e.code, e.reason || \"(no reason)\"); process.exit(echoed && e.code === 1000 ? 0 : 1); };",
    );
    format!("node --experimental-websocket -e '{script}' '{ws_url}' {token_word}")
}

/// `serve --demo`.
pub fn serve_demo(listen: Option<SocketAddr>) -> Result<(), Failure> {
    let listen = listen.unwrap_or(DEFAULT_LISTEN);
    let fail = |m: String| Failure {
        message: m,
        code: 1,
    };
    // SPEC §2: bind first; nothing is printed for a port that is taken.
    let control = crate::control::Control::new().map_err(fail)?;
    let bound_listener = listener::bind(listen)
        .map_err(|e| fail(format!("--listen: cannot listen on {listen}: {e}")))?;
    let bound = bound_listener
        .local_addr()
        .map_err(|e| fail(format!("--listen: {listen}: {e}")))?;
    let (signer, spki) = DemoSigner::generate(LEEWAY_SECS).map_err(fail)?;
    let signer = Arc::new(signer);
    let demo_login = super::demo_login::prepare(bound.ip()).map_err(fail)?;
    let mut cfg = config::demo(bound, spki);
    cfg.auth.leeway = std::time::Duration::from_secs(LEEWAY_SECS);
    cfg.login = Some(demo_login.login.clone());
    let page = DemoPage::new(signer.clone(), bound, demo_login.addr.port());
    cfg.origin.allow = page.origins().to_vec();
    // Non-browser clients (the printed command) send no Origin.
    cfg.origin.allow_missing = true;
    cfg.auth.explain_to_browsers = true;
    cfg.session.refresh = Refresh::Message;
    if !cfg.auth.sources.contains(&Source::Protocol) {
        cfg.auth.sources.push(Source::Protocol);
    }
    let mut rt = server::build_runtime(&cfg).map_err(fail)?;
    rt.plain = Some(Arc::new(page));
    let (token, _) = signer.fresh(clock::unix_now(), PRINTED_TTL).map_err(fail)?;
    let super::demo_login::DemoLogin {
        listener: login_listener,
        addr: login_addr,
        password,
        scratch,
        ..
    } = demo_login;
    let started = control
        .with_login_listener(login_listener)
        .start(&cfg, None, rt, Some(vec![bound_listener]))
        .map_err(fail)?;
    // A wildcard address is opened on loopback (browsers refuse 0.0.0.0).
    let shown = super::revoke::reach(bound);
    let page_url = format!("http://{shown}/");
    let ws_url = format!("ws://{shown}/echo");
    if !is_loopback(bound.ip()) {
        crate::warn!(
            "demo: listening on {bound}, not loopback: anyone who can reach it can get a demo token from /token"
        );
    }
    println!("wsgate demo on {bound}: an in-memory Ed25519 key (kid \"demo\"), route /echo, in-band refresh on.");
    println!();
    println!("Open in a browser:  {page_url}");
    println!();
    println!(
        "Log in on the page as user \"{}\" with the password printed here once, generated for this run:",
        super::demo_login::USER
    );
    println!("  {password}");
    println!(
        "(token service: http://{}; users file and refresh-token store in {}, removed at exit)",
        super::revoke::reach(login_addr),
        scratch.path().display()
    );
    println!();
    println!("A token for \"{SUBJECT}\", valid for 1h:");
    println!("  {token}");
    println!();
    println!("Connect from a terminal (Node.js 20.10+; exits 1 on any failure):");
    println!("  {}", node_command(&ws_url, &format!("'{token}'")));
    println!("or with websocat:");
    println!("  websocat --protocol '{PROTOCOL}, bearer.{token}' '{ws_url}'");
    println!();
    println!("Stop with Ctrl-C.");
    let waited = started.wait().map_err(fail);
    drop(scratch);
    waited
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

/// The page at `GET /`: no external asset, everything inline.
const PAGE_HTML: &str = include_str!("demo.html");

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proto::http::request::parse_head;

    fn answer(page: &DemoPage, request: &str) -> Option<String> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let head = parse_head(request.as_bytes(), &mut headers).unwrap();
        page.answer(&head, 1_000_000)
            .map(|r| String::from_utf8(r).unwrap())
    }

    fn page() -> DemoPage {
        let (signer, _) = DemoSigner::generate(30).unwrap();
        DemoPage::new(Arc::new(signer), "127.0.0.1:4321".parse().unwrap(), 4322)
    }

    #[test]
    fn serves_the_page_and_tokens_to_its_own_hosts_only() {
        let page = page();
        assert_eq!(
            page.origins(),
            [
                "http://127.0.0.1:4321",
                "http://localhost:4321",
                "http://[::1]:4321"
            ]
        );
        let ok = answer(&page, "GET / HTTP/1.1\r\nHost: localhost:4321\r\n\r\n").unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("connect-src 'self' ws://localhost:4321 http://localhost:4322;"),
            "{ok}"
        );
        assert!(
            ok.contains(r#"<meta name="wsgate-login" content="http://localhost:4322">"#),
            "{ok}"
        );
        let v6 = answer(&page, "GET / HTTP/1.1\r\nHost: [::1]:4321\r\n\r\n").unwrap();
        assert!(v6.contains("ws://[::1]:4321 http://[::1]:4322;"), "{v6}");
        assert!(ok.contains("<script>"), "{ok}");
        assert!(!ok.contains("src=\"http"), "no external asset");
        let rebound = answer(&page, "GET / HTTP/1.1\r\nHost: evil.example:4321\r\n\r\n").unwrap();
        assert!(rebound.starts_with("HTTP/1.1 421 "), "{rebound}");
        let cross = answer(
            &page,
            "GET /token HTTP/1.1\r\nHost: 127.0.0.1:4321\r\nOrigin: http://evil.example\r\n\r\n",
        )
        .unwrap();
        assert!(cross.starts_with("HTTP/1.1 403 "), "{cross}");
        let post = answer(
            &page,
            "POST /token HTTP/1.1\r\nHost: 127.0.0.1:4321\r\n\r\n",
        )
        .unwrap();
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        assert_eq!(
            answer(&page, "GET /echo HTTP/1.1\r\nHost: 127.0.0.1:4321\r\n\r\n"),
            None
        );
    }

    #[test]
    fn tokens_are_fresh_or_expired_as_asked() {
        let page = page();
        let body = |r: String| {
            let json: serde_json::Value =
                serde_json::from_str(r.split("\r\n\r\n").nth(1).unwrap()).unwrap();
            json
        };
        let fresh = body(
            answer(
                &page,
                "GET /token HTTP/1.1\r\nHost: 127.0.0.1:4321\r\nOrigin: http://127.0.0.1:4321\r\n\r\n",
            )
            .unwrap(),
        );
        assert_eq!(fresh["exp"], 1_000_000 + PAGE_TTL);
        assert_eq!(fresh["sub"], "demo-user");
        let expired = body(
            answer(
                &page,
                "GET /token?expired HTTP/1.1\r\nHost: 127.0.0.1:4321\r\n\r\n",
            )
            .unwrap(),
        );
        assert_eq!(expired["exp"], 1_000_000 - 90);
    }

    #[test]
    fn the_node_command_reports_failures() {
        let c = node_command("ws://127.0.0.1:1/echo", "'t.o.k'");
        for part in [
            "onerror",
            "onclose",
            "e.code",
            "e.reason",
            "process.exit(echoed",
        ] {
            assert!(c.contains(part), "{part} missing from {c}");
        }
        let script = c
            .strip_prefix("node --experimental-websocket -e '")
            .unwrap()
            .split("' 'ws://")
            .next()
            .unwrap();
        assert!(
            !script.contains('\''),
            "the script is one shell word: {script}"
        );
        assert!(c.ends_with("' 'ws://127.0.0.1:1/echo' 't.o.k'"), "{c}");
    }
}
