//! SPEC §5 upstream routes: a real upstream WebSocket server (tungstenite) behind wsgate.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tungstenite::handshake::server::{Request, Response};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

use crate::support::*;

const SECRET: &[u8] = b"proxy-tests-secret-0123456789abcdef-0123456789";

/// What an upstream saw of one connection.
#[derive(Debug, Default, Clone)]
struct Seen {
    uri: String,
    headers: Vec<(String, String)>,
    messages: Vec<Message>,
    close: Option<(u16, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An echo upstream that records what it saw; `close_with` makes it close after the
/// first message with that code.
fn upstream(
    close_with: Option<u16>,
    name: &'static str,
) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let seen = log.clone();
    let join = std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let seen = seen.clone();
            std::thread::spawn(move || serve_one(stream, seen, close_with, name));
        }
    });
    (addr, log, join)
}

#[allow(clippy::result_large_err)] // tungstenite's callback signature
fn serve_one(stream: TcpStream, seen: Arc<Mutex<Vec<Seen>>>, close_with: Option<u16>, name: &str) {
    let _ = stream.set_read_timeout(Some(WAIT));
    let mut record = Seen::default();
    let cb = |req: &Request, mut resp: Response| {
        record.uri = req.uri().to_string();
        record.headers = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        if let Some(p) = req.headers().get("sec-websocket-protocol") {
            let first = p
                .to_str()
                .unwrap_or("")
                .split(',')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            if !first.is_empty() {
                resp.headers_mut()
                    .insert("sec-websocket-protocol", first.parse().expect("hv"));
            }
        }
        Ok(resp)
    };
    let Ok(mut ws) = tungstenite::accept_hdr(stream, cb) else {
        return;
    };
    let index = {
        let mut s = seen.lock().expect("lock");
        s.push(record);
        s.len() - 1
    };
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => {
                seen.lock().expect("lock")[index].close =
                    frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                let _ = ws.flush();
                break;
            }
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                seen.lock().expect("lock")[index].messages.push(m.clone());
                let reply = match &m {
                    Message::Text(t) => Message::Text(format!("{name}:{}", t.as_str()).into()),
                    other => other.clone(),
                };
                if ws.send(reply).is_err() {
                    break;
                }
                if let Some(code) = close_with {
                    let _ = ws.close(Some(CloseFrame {
                        code: CloseCode::from(code),
                        reason: "upstream says bye".into(),
                    }));
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

fn token(sub: &str, scope: &str) -> String {
    let now = now_unix();
    hs256(
        SECRET,
        HS256_HEADER,
        &format!(
            r#"{{"sub":"{sub}","iat":{now},"exp":{},"scope":"{scope}"}}"#,
            now + 3600
        ),
    )
}

fn gateway(upstreams: &[SocketAddr], extra_route: &str) -> Gateway {
    let list: Vec<String> = upstreams
        .iter()
        .map(|a| format!("\"ws://{a}/chat\""))
        .collect();
    Gateway::start_in(
        hs_secret_dir(SECRET),
        &format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
workers = 2

[[auth.key]]
alg = "HS256"
secret_file = "hs.secret"

[origin]
allow = ["https://app.example.com"]

[[route]]
path = "/chat"
upstream = [{}]
scope = ["chat"]
forward_claims = true
{extra_route}
"#,
            list.join(", ")
        ),
    )
}

fn text(s: &mut TcpStream, m: &str) {
    s.write_all(&client_frame(true, 1, m.as_bytes()))
        .expect("send");
}

fn next_text(s: &mut TcpStream) -> String {
    loop {
        let (_, op, p) = read_frame(s);
        match op {
            1 => return String::from_utf8(p).expect("utf8"),
            8 => panic!("unexpected close {p:?}"),
            _ => {}
        }
    }
}

#[test]
fn identity_forwarded_token_stripped_and_messages_relayed() {
    let (up, seen, _j) = upstream(None, "u1");
    let gw = gateway(&[up], "");
    let t = token("alice", "chat extra");
    let path = format!("/chat?room=7&access_token={t}&x=1");
    let mut s = open(
        &gw,
        &path,
        &[
            "X-Auth-Subject: mallory",
            "x-auth-scope: admin",
            "Origin: https://app.example.com",
            "X-Custom: kept",
            "Sec-WebSocket-Protocol: chat.v1",
        ],
    );
    text(&mut s, "hello");
    assert_eq!(next_text(&mut s), "u1:hello");
    s.write_all(&client_frame(true, 2, &[0, 1, 2, 255]))
        .expect("send");
    assert_eq!(read_frame(&mut s), (true, 2, vec![0, 1, 2, 255]));

    let seen = seen.lock().expect("lock")[0].clone();
    assert_eq!(seen.uri, "/chat?room=7&x=1", "token parameter stripped");
    assert_eq!(seen.header("x-auth-subject"), Some("alice"));
    assert_eq!(seen.header("x-auth-scope"), Some("chat extra"));
    let claims_segment = t.split('.').nth(1).expect("payload");
    assert_eq!(seen.header("x-auth-claims"), Some(claims_segment));
    assert_eq!(seen.header("origin"), Some("https://app.example.com"));
    assert_eq!(seen.header("x-custom"), Some("kept"));
    assert!(seen
        .header("x-forwarded-for")
        .is_some_and(|v| v.contains("127.0.0.1")));
    assert_eq!(
        seen.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("x-auth-subject"))
            .count(),
        1,
        "forged X-Auth-Subject dropped"
    );
    for (k, v) in &seen.headers {
        assert!(!v.contains(&t), "token leaked upstream in {k}");
    }
    assert!(!gw.logs().contains(&t));
}

#[test]
fn protocol_selected_by_the_upstream_reaches_the_client() {
    let (up, _seen, _j) = upstream(None, "u1");
    let gw = gateway(&[up], "");
    let t = token("bob", "chat");
    let (r, _s) = request(
        &gw,
        upgrade_request(
            "/chat",
            &[&format!("Sec-WebSocket-Protocol: chat.v2, bearer.{t}")],
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 101, "{r:?}");
    assert_eq!(r.header("sec-websocket-protocol"), Some("chat.v2"));
}

#[test]
fn close_codes_relay_both_ways() {
    let (up, seen, _j) = upstream(None, "u1");
    let gw = gateway(&[up], "");
    let mut s = open(
        &gw,
        &format!("/chat?access_token={}", token("carol", "chat")),
        &[],
    );
    text(&mut s, "x");
    assert_eq!(next_text(&mut s), "u1:x");
    let mut close = vec![0x0f, 0xa0];
    close.extend_from_slice(b"client bye");
    s.write_all(&client_frame(true, 8, &close)).expect("close");
    assert_eq!(read_close(&mut s).0, Some(4000));
    // The upstream saw the client's code and reason as sent (bounded wait).
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(c) = seen.lock().expect("lock")[0].close.clone() {
            assert_eq!(c, (4000, "client bye".to_string()));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "upstream never saw the close"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    let (up2, _seen2, _j2) = upstream(Some(4001), "u2");
    let gw2 = gateway(&[up2], "");
    let mut s = open(
        &gw2,
        &format!("/chat?access_token={}", token("dan", "chat")),
        &[],
    );
    text(&mut s, "y");
    assert_eq!(next_text(&mut s), "u2:y");
    assert_eq!(
        read_close(&mut s),
        (Some(4001), "upstream says bye".to_string())
    );
}

#[test]
fn upstream_down_is_502_and_round_robin_skips_it() {
    // A port with nothing listening.
    let dead = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let gw = gateway(&[dead], "");
    let (r, _s) = request(
        &gw,
        upgrade_request(
            &format!("/chat?access_token={}", token("erin", "chat")),
            &[],
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 502, "{r:?}");
    // SPEC §7: the log names the upstream (as configured and as dialed) and the OS error.
    let line = gw.wait_log("failed: connect:");
    assert!(
        line.contains(&format!("upstream=ws://{dead}/chat")),
        "{line}"
    );
    assert!(line.contains(&format!("addr={dead}")), "{line}");
    assert!(line.contains("refused"), "{line}");

    let (a, _sa, _ja) = upstream(None, "a");
    let (b, _sb, _jb) = upstream(None, "b");
    let gw = gateway(&[a, dead, b], "");
    let mut names = Vec::new();
    for _ in 0..6 {
        let mut s = open(
            &gw,
            &format!("/chat?access_token={}", token("fay", "chat")),
            &[],
        );
        text(&mut s, "who");
        names.push(next_text(&mut s));
    }
    assert!(names.contains(&"a:who".to_string()), "{names:?}");
    assert!(names.contains(&"b:who".to_string()), "{names:?}");
}

#[test]
fn upstream_rejection_is_relayed() {
    // A plain HTTP server that refuses every upgrade with 403.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { break };
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let body = "go away\n";
            let _ = write!(
                s,
                "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\nWWW-Authenticate: Bearer realm=\"up\"\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let gw = gateway(&[addr], "");
    let (r, _s) = request(
        &gw,
        upgrade_request(&format!("/chat?access_token={}", token("gus", "chat")), &[]).as_bytes(),
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.body, "go away\n");
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"up\""));
}

#[test]
fn missing_token_never_reaches_the_upstream() {
    let (up, seen, _j) = upstream(None, "u1");
    let gw = gateway(&[up], "");
    let (r, _s) = request(&gw, upgrade_request("/chat", &[]).as_bytes());
    assert_eq!(r.status, 401);
    assert!(seen.lock().expect("lock").is_empty());
}
