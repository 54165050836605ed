//! SPEC §5 upstreams fit for production (#11): all-down handling with health shared by the
//! workers, large upstream frames, signed identity (wss:// upstreams: `upstream_tls.rs`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use tungstenite::Message;
use wsgate::auth::keys::Alg;
use wsgate::cli::token::{sign, SigningKey};

use crate::support::*;

const SECRET: &[u8] = b"upstream-tests-secret-0123456789abcdef-012345";

fn token(sub: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    sign(
        Alg::HS256,
        &SigningKey::Hmac(SECRET.to_vec()),
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &format!(
            r#"{{"sub":"{sub}","iat":{now},"exp":{},"scope":"chat"}}"#,
            now + 3600
        ),
    )
    .expect("sign")
}

/// A gateway with an admin listener and one route `/chat` over `upstreams` (full URLs).
pub(crate) fn gateway_in(dir: TempDir, upstreams: &[String], limits: &str, route: &str) -> Gateway {
    gateway_with_admin(dir, upstreams, limits, route, "")
}

/// Same, with extra `[admin]` keys.
fn gateway_with_admin(
    dir: TempDir,
    upstreams: &[String],
    limits: &str,
    route: &str,
    admin: &str,
) -> Gateway {
    use base64::Engine as _;
    dir.write(
        "hs.secret",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET),
    );
    let list: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
    Gateway::start_in(
        dir,
        &format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
workers = 2

[[auth.key]]
alg = "HS256"
secret_file = "hs.secret"

[limits]
per_ip_handshakes = "1000/s"
{limits}

[admin]
listen = "127.0.0.1:0"
revocation_log = "revocations.log"
{admin}

[[route]]
path = "/chat"
upstream = [{}]
scope = ["chat"]
{route}
"#,
            list.join(", ")
        ),
    )
}

fn gateway(upstreams: &[String]) -> Gateway {
    gateway_in(TempDir::new(), upstreams, "", "")
}

/// Serves WebSocket echo on `listener`, one thread per connection, counting accepts.
pub(crate) fn echo_on(listener: TcpListener) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(WAIT));
                let Ok(mut ws) = tungstenite::accept(stream) else {
                    return;
                };
                echo_loop(&mut ws);
            });
        }
    });
    accepted
}

pub(crate) fn echo_loop<S: Read + Write>(ws: &mut tungstenite::WebSocket<S>) {
    loop {
        match ws.read() {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(m).is_err() {
                    break;
                }
            }
            Ok(Message::Close(_)) => {
                let _ = ws.flush();
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

/// A loopback address with nothing listening (the port was just released).
fn dead_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

pub(crate) fn upgrade(gw: &Gateway) -> (Response, TcpStream) {
    request(
        gw,
        upgrade_request(&format!("/chat?access_token={}", token("ann")), &[]).as_bytes(),
    )
}

fn admin_addr(gw: &Gateway) -> SocketAddr {
    gw.wait_log("admin listening on ")
        .split("admin listening on ")
        .nth(1)
        .and_then(|a| a.split_whitespace().next())
        .map(|a| a.trim_end_matches(['"', ',', '}']))
        .expect("admin addr")
        .parse()
        .expect("addr")
}

pub(crate) fn metric(gw: &Gateway, series: &str) -> u64 {
    let mut s = TcpStream::connect(admin_addr(gw)).expect("connect admin");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {text}"))
}

pub(crate) fn echo_through(s: &mut TcpStream, m: &str) {
    s.write_all(&client_frame(true, 1, m.as_bytes()))
        .expect("send");
    let (fin, op, payload) = read_frame(s);
    assert_eq!((fin, op, payload.as_slice()), (true, 1, m.as_bytes()));
}

#[test]
fn a_lone_upstream_back_from_a_failure_serves_the_very_next_handshake() {
    let addr = dead_addr();
    // upstream_backoff is 10 s by default: the test would see that outage.
    let gw = gateway(&[format!("ws://{addr}/chat")]);
    let (r, _s) = upgrade(&gw);
    assert_eq!(r.status, 502, "{r:?}");
    // The upstream comes back on the same port, marked down for another 10 s.
    let listener = TcpListener::bind(addr).expect("rebind the upstream's port");
    let accepted = echo_on(listener);
    let (r, mut s) = upgrade(&gw);
    assert_eq!(r.status, 101, "{r:?}");
    echo_through(&mut s, "back");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn every_upstream_down_is_502_only_after_each_was_tried() {
    let gw = gateway(&[
        format!("ws://{}/chat", dead_addr()),
        format!("ws://{}/chat", dead_addr()),
    ]);
    for _ in 0..3 {
        let (r, _s) = upgrade(&gw);
        assert_eq!(r.status, 502, "{r:?}");
    }
    // Each handshake tried both (all marked down, still tried): 3 × 2 failed connects.
    assert_eq!(metric(&gw, "wsgate_upstream_errors_total"), 6);
}

#[test]
fn workers_share_upstream_health() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let live = listener.local_addr().expect("addr");
    let accepted = echo_on(listener);
    let gw = gateway(&[
        format!("ws://{}/chat", dead_addr()),
        format!("ws://{live}/chat"),
    ]);
    // Connections go to the two workers in turn: the first handshake finds the dead one
    // (one failed connect), and no later one on either worker tries it again.
    for i in 0..6 {
        let (r, mut s) = upgrade(&gw);
        assert_eq!(r.status, 101, "handshake {i}: {r:?}");
        echo_through(&mut s, "hi");
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 6);
    assert_eq!(metric(&gw, "wsgate_upstream_errors_total"), 1);
}

/// An upstream that greets every connection with `messages`, then echoes.
fn greeting_upstream(messages: Vec<Message>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let messages = messages.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(WAIT));
                let Ok(mut ws) = tungstenite::accept(stream) else {
                    return;
                };
                for m in messages {
                    // tungstenite writes each message as one frame.
                    if ws.send(m).is_err() {
                        return;
                    }
                }
                echo_loop(&mut ws);
            });
        }
    });
    addr
}

/// Reads one message as frames: (opcode, payload, frame sizes).
fn read_fragments(s: &mut TcpStream) -> (u8, Vec<u8>, Vec<usize>) {
    let (mut fin, opcode, mut payload) = read_frame(s);
    let mut sizes = vec![payload.len()];
    while !fin {
        let (f, op, p) = read_frame(s);
        assert_eq!(op, 0, "a continuation");
        sizes.push(p.len());
        payload.extend_from_slice(&p);
        fin = f;
    }
    (opcode, payload, sizes)
}

#[test]
fn upstream_frames_over_max_frame_are_relayed_in_fragments() {
    const MIB: usize = 1 << 20;
    // 3 MiB of 3-byte characters: the 1 MiB pieces cut characters in half.
    let text = "€".repeat(MIB);
    let binary: Vec<u8> = (0..3 * MIB).map(|i| (i % 251) as u8).collect();
    let up = greeting_upstream(vec![
        Message::Text(text.clone().into()),
        Message::Binary(binary.clone().into()),
        Message::Text("after".into()),
    ]);
    let gw = gateway_in(
        TempDir::new(),
        &[format!("ws://{up}/chat")],
        "max_frame = \"1MiB\"\nmax_message = \"1MiB\"",
        "",
    );
    let (r, mut s) = upgrade(&gw);
    assert_eq!(r.status, 101, "{r:?}");
    let (op, payload, sizes) = read_fragments(&mut s);
    assert_eq!(op, 1);
    assert_eq!(sizes, vec![MIB, MIB, MIB]);
    assert!(payload == text.as_bytes(), "text relayed byte for byte");
    let (op, payload, sizes) = read_fragments(&mut s);
    assert_eq!(op, 2);
    assert_eq!(sizes, vec![MIB; 3]);
    assert!(payload == binary, "binary relayed byte for byte");
    let (op, payload, _) = read_fragments(&mut s);
    assert_eq!((op, payload.as_slice()), (1, b"after".as_slice()));
    // The connection is still good both ways.
    echo_through(&mut s, "still open");
}

#[test]
fn invalid_utf8_inside_a_split_upstream_frame_is_1014() {
    let mut bytes = "a".repeat(3000).into_bytes();
    bytes[2500] = 0xff;
    // A raw upstream: tungstenite refuses to send invalid UTF-8 as text.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let up = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read_exact(&mut byte).is_err() {
                return;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let key = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| v.trim().to_string())
            })
            .expect("key");
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let _ = write!(
            stream,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        let _ = stream.write_all(&raw_frame(0x81, &bytes, None));
        let _ = stream.read(&mut [0u8; 64]);
    });
    let gw = gateway_in(
        TempDir::new(),
        &[format!("ws://{up}/chat")],
        "max_frame = \"1KiB\"\nmax_message = \"1KiB\"",
        "",
    );
    let (r, mut s) = upgrade(&gw);
    assert_eq!(r.status, 101, "{r:?}");
    // The first two 1 KiB pieces are valid and relayed; the third is not.
    for _ in 0..2 {
        let (fin, _, p) = read_frame(&mut s);
        assert!(!fin);
        assert_eq!(p.len(), 1024);
    }
    assert_eq!(read_close(&mut s).0, Some(1014));
}

/// What a recording upstream saw: the request target and headers, in order.
type SeenRequest = (String, Vec<(String, String)>);

/// An echo upstream that records each upgrade request.
fn recording_upstream() -> (SocketAddr, crossbeam_channel::Receiver<SeenRequest>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(WAIT));
                #[allow(clippy::result_large_err)] // tungstenite's callback signature
                let cb = |req: &tungstenite::handshake::server::Request,
                          resp: tungstenite::handshake::server::Response| {
                    let headers = req
                        .headers()
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.to_string(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect();
                    let _ = tx.send((req.uri().to_string(), headers));
                    Ok(resp)
                };
                let Ok(mut ws) = tungstenite::accept_hdr(stream, cb) else {
                    return;
                };
                echo_loop(&mut ws);
            });
        }
    });
    (addr, rx)
}

/// A PKCS#8 PEM Ed25519 key and its raw public key.
fn identity_key() -> (String, Vec<u8>) {
    use base64::Engine as _;
    use ring::signature::KeyPair as _;
    let rng = ring::rand::SystemRandom::new();
    let der = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("generate");
    let public = ring::signature::Ed25519KeyPair::from_pkcs8(der.as_ref())
        .expect("key")
        .public_key()
        .as_ref()
        .to_vec();
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("ascii"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    (pem, public)
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect admin");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (
        status,
        text.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
    )
}

/// One `Signature-Input` member: (label, covered component names, parameters).
fn parse_signature_input(value: &str) -> (String, Vec<String>, Vec<(String, String)>) {
    let (label, rest) = value.split_once('=').expect("label");
    let rest = rest.strip_prefix('(').expect("inner list");
    let (inner, params) = rest.split_once(')').expect("inner list end");
    let covered = inner
        .split(' ')
        .map(|c| c.trim_matches('"').to_string())
        .collect();
    let params = params
        .split(';')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').expect("param");
            (k.to_string(), v.to_string())
        })
        .collect();
    (label.to_string(), covered, params)
}

#[test]
fn sign_identity_signs_the_upstream_request_per_rfc9421() {
    use base64::Engine as _;
    let (up, seen) = recording_upstream();
    let (pem, public) = identity_key();
    let dir = TempDir::new();
    dir.write("identity.pem", &pem);
    let gw = gateway_with_admin(
        dir,
        &[format!("ws://{up}/chat")],
        "",
        "sign_identity = true\nforward_claims = true",
        "identity_key = \"identity.pem\"",
    );
    // The public key, as upstream authors fetch it.
    let (status, body) = http_get(admin_addr(&gw), "/.well-known/identity-key.jwk");
    assert_eq!(status, 200, "{body}");
    let jwk: serde_json::Value = serde_json::from_str(&body).expect("jwk");
    assert_eq!(
        (jwk["kty"].as_str(), jwk["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str().expect("x"))
        .expect("x");
    assert_eq!(x, public);

    let mut nonces = Vec::new();
    for _ in 0..2 {
        let token = token("alice");
        let (r, mut s) = request(
            &gw,
            upgrade_request(
                &format!("/chat?room=7&access_token={token}"),
                &["Signature: wsgate=:AAAA:", "Signature-Input: wsgate=()"],
            )
            .as_bytes(),
        );
        assert_eq!(r.status, 101, "{r:?}");
        echo_through(&mut s, "signed");
        let (uri, headers) = seen.recv_timeout(WAIT).expect("upstream request");
        let field = |name: &str| -> Vec<&str> {
            headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .collect()
        };
        // The client's own signature fields never arrive.
        let [input] = field("signature-input")[..] else {
            panic!("one Signature-Input: {headers:?}");
        };
        let [signature] = field("signature")[..] else {
            panic!("one Signature: {headers:?}");
        };
        let (label, covered, params) = parse_signature_input(input);
        assert_eq!(label, "wsgate");
        assert_eq!(
            covered,
            [
                "@method",
                "@authority",
                "@path",
                "@query",
                "x-auth-subject",
                "x-auth-scope",
                "x-auth-claims"
            ]
        );
        let param = |k: &str| {
            params
                .iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {k} in {input}"))
        };
        let created: u64 = param("created").parse().expect("created");
        let expires: u64 = param("expires").parse().expect("expires");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        assert!(
            created <= now && now - created < 30,
            "created {created}, now {now}"
        );
        assert_eq!(expires, created + 60);
        assert_eq!(param("alg"), "\"ed25519\"");
        assert_eq!(
            param("keyid"),
            format!("\"{}\"", jwk["kid"].as_str().expect("kid"))
        );
        nonces.push(param("nonce"));

        // RFC 9421 §2.5, rebuilt on the upstream's side from what it received.
        let (path, query) = uri
            .split_once('?')
            .map_or((uri.as_str(), String::new()), |(p, q)| (p, format!("?{q}")));
        assert_eq!(
            query, "?room=7",
            "the token parameter is stripped before signing"
        );
        let mut base = String::new();
        for (name, value) in [
            ("@method", "GET".to_string()),
            ("@authority", field("host")[0].to_ascii_lowercase()),
            ("@path", path.to_string()),
            ("@query", query.clone()),
            ("x-auth-subject", field("x-auth-subject")[0].to_string()),
            ("x-auth-scope", field("x-auth-scope")[0].to_string()),
            ("x-auth-claims", field("x-auth-claims")[0].to_string()),
        ] {
            base.push_str(&format!("\"{name}\": {}\n", value.trim()));
        }
        let (_, params_value) = input.split_once('=').expect("label");
        base.push_str(&format!("\"@signature-params\": {params_value}"));
        assert!(base.contains("\"x-auth-subject\": alice\n"), "{base}");
        let sig = signature
            .strip_prefix("wsgate=:")
            .and_then(|v| v.strip_suffix(':'))
            .map(|v| {
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .expect("base64")
            })
            .expect("Signature member");
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &x)
            .verify(base.as_bytes(), &sig)
            .expect("the signature verifies with the served key");
        let forged = base.replace("alice", "mallory");
        assert!(
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &x)
                .verify(forged.as_bytes(), &sig)
                .is_err()
        );
    }
    assert_ne!(nonces[0], nonces[1], "a fresh nonce per request");
}

#[test]
fn sign_identity_without_an_identity_key_is_refused_and_no_key_serves_no_jwk() {
    let dir = TempDir::new();
    dir.write(
        "hs.secret",
        "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA",
    );
    let cfg = dir.write(
        "wsgate.toml",
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[[auth.key]]\nalg = \"HS256\"\nsecret_file = \"hs.secret\"\n\n\
         [[route]]\npath = \"/chat\"\nupstream = [\"ws://127.0.0.1:9/chat\"]\nsign_identity = true\n",
    );
    let (code, out, err) = run(&["check", "-c", cfg.to_str().expect("utf8")]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("route[0].sign_identity"),
        "{out}{err}"
    );
    let gw = gateway(&["ws://127.0.0.1:9/chat".to_string()]);
    assert_eq!(
        http_get(admin_addr(&gw), "/.well-known/identity-key.jwk").0,
        404
    );
}
