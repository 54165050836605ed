//! SPEC §5 upstreams fit for production (#11): all-down handling with health shared by the
//! workers, wss:// upstreams, large upstream frames.

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
fn gateway_in(dir: TempDir, upstreams: &[String], limits: &str, route: &str) -> Gateway {
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
fn echo_on(listener: TcpListener) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
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

fn echo_loop<S: Read + Write>(ws: &mut tungstenite::WebSocket<S>) {
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

fn upgrade(gw: &Gateway) -> (Response, TcpStream) {
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

fn metric(gw: &Gateway, series: &str) -> u64 {
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

fn echo_through(s: &mut TcpStream, m: &str) {
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
