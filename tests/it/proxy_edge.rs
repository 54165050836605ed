//! SPEC §5 (upstream backend, selection, relay) and §6 on proxied connections: the edge
//! cases. The upstream here is a raw TCP server that does the RFC 6455 server handshake by
//! hand, so that a test controls every byte it sends (garbage, resets, stalls, floods) and
//! sees every frame the gateway sends it (masked, as a client's).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use wsgate::auth::keys::Alg;
use wsgate::cli::token::{sign, SigningKey};
use wsgate::proto::ws::accept::accept_key;

use crate::support::*;

const SECRET: &[u8] = b"proxy-edge-secret-0123456789abcdef-0123456789";
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

// ------------------------------------------------------------------------------------
// Tokens and the gateway.

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// An HS256 token for `sub` with a `jti`, valid for `ttl` seconds.
fn token(sub: &str, jti: &str, ttl: u64, scope: &str) -> String {
    let now = now_unix();
    sign(
        Alg::HS256,
        &SigningKey::Hmac(SECRET.to_vec()),
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &format!(
            r#"{{"sub":"{sub}","jti":"{jti}","iat":{},"exp":{},"scope":"{scope}"}}"#,
            now - 5,
            now + ttl
        ),
    )
    .expect("sign")
}

/// A chat token valid for an hour.
fn chat(sub: &str) -> String {
    token(sub, &format!("{sub}-jti"), 3600, "chat")
}

/// Extra configuration: lines inside `[auth]`, inside `[limits]`, whole extra sections,
/// and lines inside the `/chat` route.
#[derive(Default)]
struct Opts<'a> {
    auth: &'a str,
    limits: &'a str,
    sections: &'a str,
    route: &'a str,
}

/// A gateway with one upstream route `/chat` → `ws://<up>/chat`.
fn gateway(up: SocketAddr, o: Opts<'_>) -> Gateway {
    use base64::Engine as _;
    let dir = TempDir::new();
    dir.write(
        "hs.secret",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET),
    );
    let Opts {
        auth,
        limits,
        sections,
        route,
    } = o;
    Gateway::start_in(
        dir,
        &format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
workers = 2

[auth]
{auth}

[[auth.key]]
alg = "HS256"
secret_file = "hs.secret"

[limits]
per_ip_handshakes = "1000/s"
{limits}

{sections}

[[route]]
path = "/chat"
upstream = ["ws://{up}/chat"]
scope = ["chat"]
{route}
"#
        ),
    )
}

/// Opens `/chat?mode=<mode>` with a fresh token for `sub`.
fn open_mode(gw: &Gateway, mode: &str, sub: &str) -> TcpStream {
    open(
        gw,
        &format!("/chat?mode={mode}&access_token={}", chat(sub)),
        &[],
    )
}

/// Sends one masked text message.
fn text(s: &mut TcpStream, m: &str) {
    s.write_all(&client_frame(true, 1, m.as_bytes()))
        .expect("send");
}

/// The next data frame (first byte, payload), skipping pings and pongs; panics on close.
fn next_data(s: &mut TcpStream) -> (u8, Vec<u8>) {
    loop {
        let (header, _, op, p) = read_frame_from(s);
        match op {
            9 | 10 => continue,
            8 => panic!("unexpected close {p:?}"),
            _ => return (header[0], p),
        }
    }
}

fn next_text(s: &mut TcpStream) -> String {
    let (first, p) = next_data(s);
    assert_eq!(first, 0x81, "expected one text frame");
    String::from_utf8(p).expect("utf8")
}

/// The gateway's resident set size in KiB (Linux /proc).
fn rss_kib(gw: &Gateway) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", gw.child.id())).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

// ------------------------------------------------------------------------------------
// The raw upstream.

/// One connection to the raw upstream, after the gateway's request head was read.
struct Up {
    s: TcpStream,
    head: String,
}

impl Up {
    /// The request target the gateway sent.
    fn target(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }

    /// The `mode` query parameter (tests pick the upstream's behaviour with it).
    fn mode(&self) -> String {
        self.target()
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("mode="))
            .unwrap_or("echo")
            .to_string()
    }

    /// Every value of header `name`, in order.
    fn headers(&self, name: &str) -> Vec<String> {
        head_values(&self.head, name)
    }

    /// Answers the upgrade with a correct 101.
    fn accept(&mut self) {
        let key = self
            .headers("sec-websocket-key")
            .pop()
            .expect("gateway sent a key");
        let accept = accept_key(key.as_bytes());
        let resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            std::str::from_utf8(&accept).expect("ascii")
        );
        self.s.write_all(resp.as_bytes()).expect("write 101");
    }

    /// One frame from the gateway: (first byte, unmasked payload). The gateway is the
    /// client of this leg, so every frame must be masked (RFC 6455 §5.1).
    fn frame(&mut self) -> io::Result<(u8, Vec<u8>)> {
        let mut h = [0u8; 2];
        self.s.read_exact(&mut h)?;
        assert_ne!(h[1] & 0x80, 0, "frames to the upstream must be masked");
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.s.read_exact(&mut b)?;
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                self.s.read_exact(&mut b)?;
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut key = [0u8; 4];
        self.s.read_exact(&mut key)?;
        let mut p = vec![0; len];
        self.s.read_exact(&mut p)?;
        for (i, b) in p.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
        Ok((h[0], p))
    }

    /// Sends one unmasked frame with first byte `first`.
    fn send(&mut self, first: u8, payload: &[u8]) -> io::Result<()> {
        self.s.write_all(&raw_frame(first, payload, None))
    }

    /// Waits (bounded) until the gateway closes this socket; true on EOF or reset.
    fn wait_closed(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match self.s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// Every value of header `name` in a request head, in order.
fn head_values(head: &str, name: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// Starts a raw upstream; each connection runs `handler` on its own thread once the
/// gateway's request head has arrived.
fn raw_upstream(handler: impl Fn(Up) + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let handler = Arc::new(handler);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { break };
            let handler = handler.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(WAIT));
                let _ = s.set_write_timeout(Some(WAIT));
                let _ = s.set_nodelay(true);
                // Byte by byte: nothing after the head may be consumed here.
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * KIB {
                    match s.read(&mut b) {
                        Ok(1) => head.push(b[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                handler(Up { s, head });
            });
        }
    });
    addr
}

/// What an upstream saw after its 101.
#[derive(Debug, Clone, PartialEq)]
enum Ev {
    /// A data frame: first byte, payload.
    Msg(u8, Vec<u8>),
    /// A close frame: code (None when empty) and reason.
    Close(Option<u16>, String),
    /// EOF without a close frame.
    Eof,
    /// A read error (reset, timeout).
    Err(io::ErrorKind),
}

/// Records every frame the gateway sends until a close, EOF or error; echoes data frames
/// back unmasked with their first byte, answers pings, answers the close.
fn echo_record(up: &mut Up, tx: &Sender<Ev>) {
    loop {
        match up.frame() {
            Ok((first, p)) => match first & 0x0f {
                8 => {
                    let ev = if p.len() >= 2 {
                        Ev::Close(
                            Some(u16::from_be_bytes([p[0], p[1]])),
                            String::from_utf8_lossy(&p[2..]).into_owned(),
                        )
                    } else {
                        Ev::Close(None, String::new())
                    };
                    let _ = tx.send(ev);
                    let _ = up.send(0x88, &p);
                    return;
                }
                9 => {
                    let _ = up.send(0x8a, &p);
                }
                10 => {}
                _ => {
                    let _ = tx.send(Ev::Msg(first, p.clone()));
                    if up.send(first, &p).is_err() {
                        return;
                    }
                }
            },
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                let _ = tx.send(Ev::Eof);
                return;
            }
            Err(e) => {
                let _ = tx.send(Ev::Err(e.kind()));
                return;
            }
        }
    }
}

/// An upstream that echoes and records every connection's frames on one channel.
fn echo_upstream() -> (SocketAddr, Receiver<Ev>) {
    let (tx, rx) = unbounded();
    let addr = raw_upstream(move |mut up| {
        up.accept();
        echo_record(&mut up, &tx);
    });
    (addr, rx)
}

/// The next event that ends the upstream's connection (skipping data frames).
fn upstream_end(rx: &Receiver<Ev>) -> Ev {
    loop {
        match rx.recv_timeout(WAIT) {
            Ok(Ev::Msg(..)) => {}
            Ok(ev) => return ev,
            Err(_) => panic!("the upstream saw neither a close nor EOF"),
        }
    }
}

/// The next data frame the upstream received.
fn upstream_msg(rx: &Receiver<Ev>) -> (u8, Vec<u8>) {
    match rx.recv_timeout(WAIT) {
        Ok(Ev::Msg(first, p)) => (first, p),
        other => panic!("expected a message upstream, got {other:?}"),
    }
}

// ------------------------------------------------------------------------------------
// Upstream failures after the 101.

#[test]
fn upstream_vanishing_without_close_gives_the_client_1014() {
    let up = raw_upstream(|mut up| {
        up.accept();
        match up.mode().as_str() {
            // Echo one message, then close the socket: a plain FIN, no close frame.
            "fin" => {
                if let Ok((first, p)) = up.frame() {
                    let _ = up.send(first, &p);
                }
            }
            // Leave the client's message unread and close: the kernel sends a RST.
            "rst" => {
                let _ = up.send(0x81, b"ready");
                let mut b = [0u8; 1];
                let _ = up.s.peek(&mut b);
            }
            _ => {}
        }
    });
    let gw = gateway(up, Opts::default());

    let mut s = open_mode(&gw, "fin", "amy");
    text(&mut s, "hi");
    assert_eq!(next_text(&mut s), "hi");
    assert_eq!(expect_close(&mut s), (Some(1014), "bad gateway".into()));

    let mut s = open_mode(&gw, "rst", "amy");
    assert_eq!(next_text(&mut s), "ready");
    text(&mut s, "unread");
    assert_eq!(expect_close(&mut s), (Some(1014), "bad gateway".into()));
}

/// Upstream modes that break RFC 6455 after the 101 (the upstream keeps its socket
/// open, so the 1014 is for the garbage, not for an EOF).
const GARBAGE: &[(&str, &str)] = &[
    ("masked", "a masked server frame (RFC 6455 §5.1)"),
    ("rsv1", "RSV1 set without an extension (§5.2)"),
    ("rsv3", "RSV3 set (§5.2)"),
    ("bigping", "a 200-byte ping (§5.5)"),
    ("fragping", "a fragmented ping (§5.5)"),
    ("opcode3", "reserved opcode 0x3 (§5.2)"),
    ("opcodeb", "reserved control opcode 0xB (§5.2)"),
    ("close1", "a close payload of one byte (§5.5.1)"),
    ("close1005", "close code 1005 on the wire (§7.4.1)"),
    ("closeutf8", "a close reason that is not UTF-8 (§5.5.1)"),
    ("with101", "a masked frame in the same write as the 101"),
];

fn garbage_frame(mode: &str) -> Vec<u8> {
    match mode {
        "masked" | "with101" => raw_frame(0x82, b"abc", Some([1, 2, 3, 4])),
        "rsv1" => raw_frame(0x82 | 0x40, b"abc", None),
        "rsv3" => raw_frame(0x82 | 0x10, b"abc", None),
        "bigping" => raw_frame(0x89, &[7u8; 200], None),
        "fragping" => raw_frame(0x09, b"p", None),
        "opcode3" => raw_frame(0x83, b"x", None),
        "opcodeb" => raw_frame(0x8b, b"x", None),
        "close1" => raw_frame(0x88, &[0x03], None),
        "close1005" => raw_frame(0x88, &close_payload(1005, b""), None),
        "closeutf8" => raw_frame(0x88, &close_payload(1000, &[0xff, 0xfe]), None),
        other => panic!("unknown mode {other}"),
    }
}

#[test]
fn upstream_garbage_after_101_gives_1014_and_spares_other_connections() {
    let up = raw_upstream(|mut up| {
        let mode = up.mode();
        if mode == "echo" {
            up.accept();
            let (tx, _rx) = unbounded();
            echo_record(&mut up, &tx);
            return;
        }
        if mode == "with101" {
            let key = up.headers("sec-websocket-key").pop().expect("key");
            let mut bytes = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                std::str::from_utf8(&accept_key(key.as_bytes())).expect("ascii")
            )
            .into_bytes();
            bytes.extend_from_slice(&garbage_frame(&mode));
            let _ = up.s.write_all(&bytes);
        } else {
            up.accept();
            // Wait for the client's first message, so the garbage arrives mid-connection.
            if up.frame().is_err() {
                return;
            }
            let _ = up.s.write_all(&garbage_frame(&mode));
        }
        // Keep the socket open until the gateway drops it.
        up.wait_closed();
    });
    let gw = gateway(up, Opts::default());
    let mut bystanders: Vec<TcpStream> = (0..4)
        .map(|i| open_mode(&gw, "echo", &format!("by{i}")))
        .collect();
    for (mode, what) in GARBAGE {
        let mut s = open_mode(&gw, mode, "gus");
        if *mode != "with101" {
            text(&mut s, "go");
        }
        assert_eq!(
            expect_close(&mut s),
            (Some(1014), "bad gateway".into()),
            "upstream sent {what}"
        );
        for (i, b) in bystanders.iter_mut().enumerate() {
            let m = format!("still here {mode} {i}");
            text(b, &m);
            assert_eq!(next_text(b), m, "bystander {i} after {what}");
        }
    }
    let mut fresh = open_mode(&gw, "echo", "late");
    text(&mut fresh, "fresh");
    assert_eq!(next_text(&mut fresh), "fresh");
}

/// A frame the gateway relays without looking at message state: a continuation with no
/// message started. The client must not receive it (RFC 6455 §5.4); the upstream broke
/// the protocol, so the client gets 1014.
#[test]
fn upstream_stray_continuation_is_not_relayed() {
    let up = raw_upstream(|mut up| {
        up.accept();
        if up.frame().is_err() {
            return;
        }
        let bytes = match up.mode().as_str() {
            // §5.4: a continuation frame with no message to continue.
            "stray" => raw_frame(0x80, b"orphan", None),
            // §5.4: a new data frame while a fragmented message is open.
            "interleaved" => {
                let mut b = raw_frame(0x01, b"first half", None);
                b.extend(raw_frame(0x82, b"new message", None));
                b
            }
            // §8.1: a text message must be UTF-8.
            "utf8" => raw_frame(0x81, &[b'o', b'k', 0xc3, 0x28], None),
            _ => return,
        };
        let _ = up.s.write_all(&bytes);
        up.wait_closed();
    });
    let gw = gateway(up, Opts::default());
    let mut report = Vec::new();
    for mode in ["stray", "interleaved", "utf8"] {
        let mut s = open_mode(&gw, mode, "hal");
        text(&mut s, "go");
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut frames = Vec::new();
        let close = loop {
            let mut h = [0u8; 2];
            if s.read_exact(&mut h).is_err() {
                break None;
            }
            let mut p = vec![0u8; usize::from(h[1] & 0x7f)];
            s.read_exact(&mut p).expect("payload");
            if h[0] & 0x0f == 8 {
                break Some((
                    u16::from_be_bytes([p[0], p[1]]),
                    String::from_utf8_lossy(&p[2..]).into_owned(),
                ));
            }
            frames.push((h[0], String::from_utf8_lossy(&p).into_owned()));
        };
        // Only the opening fragment of "interleaved" may have gone out before the error.
        let ok = frames.iter().all(|(first, _)| *first == 0x01)
            && close == Some((1014, "bad gateway".into()));
        report.push(format!(
            "{mode}: client got frames {frames:?} then close {close:?}{}",
            if ok { "" } else { "  <-- wrong" }
        ));
    }
    let report = report.join("\n");
    eprintln!("{report}");
    assert!(!report.contains("wrong"), "{report}");
}

#[test]
fn upstream_pings_are_answered_by_the_gateway_and_client_pings_stay_local() {
    let (tx, rx) = unbounded();
    let up = raw_upstream(move |mut up| {
        up.accept();
        let _ = up.send(0x89, b"up-ping");
        // The pong for our ping must come back masked, before anything else.
        let first = up.frame();
        let _ = tx.send(Ev::Msg(0, format!("{first:?}").into_bytes()));
        echo_record(&mut up, &tx);
    });
    let gw = gateway(up, Opts::default());
    let mut s = open_mode(&gw, "echo", "ivy");
    match rx.recv_timeout(WAIT) {
        Ok(Ev::Msg(0, p)) => {
            let p = String::from_utf8(p).expect("utf8");
            assert_eq!(
                p,
                format!("{:?}", Ok::<_, ()>((0x8au8, b"up-ping".to_vec())))
            );
        }
        other => panic!("{other:?}"),
    }
    // Client ping: answered by the gateway, never reaches the upstream.
    s.write_all(&client_frame(true, 9, b"cli-ping"))
        .expect("ping");
    let (_, _, op, p) = read_frame_from(&mut s);
    assert_eq!((op, p.as_slice()), (10, &b"cli-ping"[..]));
    text(&mut s, "after");
    // The upstream's ping was never relayed: the next frame is the echo.
    let (h, _, op, p) = read_frame_from(&mut s);
    assert_eq!((h[0], op, p.as_slice()), (0x81, 1, &b"after"[..]));
    assert_eq!(upstream_msg(&rx), (0x81, b"after".to_vec()));
}

// ------------------------------------------------------------------------------------
// Upstream failures before the 101.

#[test]
fn upstream_that_never_answers_the_upgrade_is_504_after_upstream_timeout() {
    let (tx, rx) = unbounded();
    let up = raw_upstream(move |mut up| {
        let started = Instant::now();
        let closed = up.wait_closed();
        let _ = tx.send((closed, started.elapsed()));
    });
    let gw = gateway(
        up,
        Opts {
            route: r#"upstream_timeout = "500ms""#,
            ..Opts::default()
        },
    );
    for round in 0..2 {
        let started = Instant::now();
        let (r, _s) = request(
            &gw,
            upgrade_request(&format!("/chat?access_token={}", chat("jo")), &[]).as_bytes(),
        );
        let took = started.elapsed();
        assert_eq!(r.status, 504, "round {round}: {r:?}");
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_secs(3),
            "round {round}: answered after {took:?}"
        );
        // The gateway hangs up on the upstream with its answer to the client.
        let (closed, held) = rx.recv_timeout(WAIT).expect("upstream connection ends");
        assert!(closed, "the gateway never closed the upstream socket");
        assert!(held < Duration::from_secs(3), "held {held:?}");
    }
}

#[test]
fn upstream_answering_garbage_instead_of_http_is_502() {
    let up = raw_upstream(|mut up| {
        match up.mode().as_str() {
            // Not HTTP at all, and the socket stays open: the first line is enough.
            "ssh" => {
                let _ = up.s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n");
                up.wait_closed();
            }
            // Binary junk with an end-of-head, then close.
            "junk" => {
                let _ = up.s.write_all(b"\x00\x01\x02garbage\xff\r\n\r\n");
            }
            // A few bytes then EOF: no complete answer.
            "short" => {
                let _ = up.s.write_all(b"HTTP/1.1 10");
            }
            // A 101 with a wrong accept value.
            "badaccept" => {
                let _ = up.s.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                );
                up.wait_closed();
            }
            // A 200 is no upgrade (and not a 4xx/5xx to relay).
            "ok200" => {
                let _ =
                    up.s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
                up.wait_closed();
            }
            // An HTTP/2 server preface-ish answer.
            "h2" => {
                let _ = up.s.write_all(&[0, 0, 0x12, 4, 0, 0, 0, 0, 0]);
                up.wait_closed();
            }
            _ => {}
        }
    });
    let gw = gateway(
        up,
        Opts {
            route: r#"upstream_timeout = "5s""#,
            ..Opts::default()
        },
    );
    for mode in ["ssh", "junk", "short", "badaccept", "ok200", "h2"] {
        let started = Instant::now();
        let (r, _s) = request(
            &gw,
            upgrade_request(
                &format!("/chat?mode={mode}&access_token={}", chat("kim")),
                &[],
            )
            .as_bytes(),
        );
        assert_eq!(r.status, 502, "{mode}: {r:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{mode}: waited {:?} (the upstream timeout, not the garbage, ended it)",
            started.elapsed()
        );
        assert!(
            !r.body.contains("SSH") && !r.body.contains("garbage"),
            "{r:?}"
        );
    }
}

// ------------------------------------------------------------------------------------
// The client goes away.

#[test]
fn client_vanishing_gives_the_upstream_1001_going_away() {
    let (up, rx) = echo_upstream();
    let gw = gateway(up, Opts::default());
    let mut s = open_mode(&gw, "echo", "lee");
    text(&mut s, "hi");
    assert_eq!(next_text(&mut s), "hi");
    assert_eq!(upstream_msg(&rx), (0x81, b"hi".to_vec()));
    drop(s); // FIN, no close frame
    assert_eq!(
        upstream_end(&rx),
        Ev::Close(Some(1001), "going away".into())
    );
}

#[test]
fn client_half_close_gives_the_upstream_1001_going_away() {
    let (up, rx) = echo_upstream();
    let gw = gateway(up, Opts::default());
    let mut s = open_mode(&gw, "echo", "lou");
    text(&mut s, "hi");
    assert_eq!(next_text(&mut s), "hi");
    assert_eq!(upstream_msg(&rx), (0x81, b"hi".to_vec()));
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert_eq!(
        upstream_end(&rx),
        Ev::Close(Some(1001), "going away".into())
    );
}

/// A client that vanishes with unread data in its socket: its kernel answers with a RST,
/// the gateway's read fails, and the connection is dropped without telling the upstream.
#[test]
fn client_reset_gives_the_upstream_1001_going_away() {
    let (up, rx) = echo_upstream();
    let gw = gateway(up, Opts::default());
    let mut s = open_mode(&gw, "echo", "max");
    text(&mut s, "hi");
    assert_eq!(next_text(&mut s), "hi");
    assert_eq!(upstream_msg(&rx), (0x81, b"hi".to_vec()));
    // The echo of this one stays unread in the client's socket: closing it sends a RST.
    text(&mut s, "unread");
    assert_eq!(upstream_msg(&rx), (0x81, b"unread".to_vec()));
    let mut b = [0u8; 1];
    s.peek(&mut b).expect("the echo arrived");
    drop(s);
    assert_eq!(
        upstream_end(&rx),
        Ev::Close(Some(1001), "going away".into())
    );
}

// ------------------------------------------------------------------------------------
// Closes the gateway decides (SPEC §6), sent to both sides.

#[test]
fn token_expiry_closes_both_sides_4401() {
    let (up, rx) = echo_upstream();
    let gw = gateway(
        up,
        Opts {
            auth: r#"leeway = "0s""#,
            // With refresh on (the default) a 2 s token gets `wsgate.expiring` at once.
            sections: "[session]\nrefresh = \"off\"\n",
            ..Opts::default()
        },
    );
    let t = token("ned", "ned-1", 2, "chat");
    let mut s = open(&gw, &format!("/chat?access_token={t}"), &[]);
    text(&mut s, "hi");
    assert_eq!(next_text(&mut s), "hi");
    assert_eq!(upstream_msg(&rx), (0x81, b"hi".to_vec()));
    let started = Instant::now();
    assert_eq!(expect_close(&mut s), (Some(4401), "token expired".into()));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        upstream_end(&rx),
        Ev::Close(Some(4401), "token expired".into())
    );
}

fn admin_config() -> &'static str {
    "[admin]\nlisten = \"127.0.0.1:0\"\nrevocation_log = \"revocations.log\"\n"
}

fn admin_addr(gw: &Gateway) -> SocketAddr {
    gw.wait_log("admin listening on ")
        .split("admin listening on ")
        .nth(1)
        .and_then(|a| a.split_whitespace().next())
        .expect("admin addr")
        .parse()
        .expect("addr")
}

/// POST /revoke with an admin token; returns (status, body).
fn revoke(addr: SocketAddr, body: &str) -> (u16, String) {
    let root = token("root", "root-1", 3600, "wsgate:admin");
    let mut s = TcpStream::connect(addr).expect("connect admin");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let req = format!(
        "POST /revoke HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {root}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (
        status,
        resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
    )
}

#[test]
fn revocation_closes_both_sides_4403() {
    let (up, rx) = echo_upstream();
    let gw = gateway(
        up,
        Opts {
            sections: admin_config(),
            ..Opts::default()
        },
    );
    let admin = admin_addr(&gw);
    let mut keep = open_mode(&gw, "echo", "oz");
    text(&mut keep, "k");
    assert_eq!(next_text(&mut keep), "k");
    assert_eq!(upstream_msg(&rx), (0x81, b"k".to_vec()));

    let t = token("pat", "pat-1", 3600, "chat");
    let mut s = open(&gw, &format!("/chat?access_token={t}"), &[]);
    text(&mut s, "hi");
    assert_eq!(next_text(&mut s), "hi");
    assert_eq!(upstream_msg(&rx), (0x81, b"hi".to_vec()));

    let (status, body) = revoke(admin, r#"{"jti":"pat-1"}"#);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["closed"].as_u64(), Some(1), "{body}");
    assert_eq!(expect_close(&mut s), (Some(4403), "token revoked".into()));
    assert_eq!(
        upstream_end(&rx),
        Ev::Close(Some(4403), "token revoked".into())
    );
    // The other proxied connection is untouched.
    text(&mut keep, "k2");
    assert_eq!(next_text(&mut keep), "k2");
}

/// A revocation that lands while the gateway is still waiting for the upstream's 101:
/// the connection is not yet `Open`, so `revoke()` skips it, and it opens afterwards
/// with the revoked token.
#[test]
fn revocation_during_the_upstream_handshake_is_enforced() {
    let (heads_tx, heads_rx) = unbounded();
    let (go_tx, go_rx) = unbounded::<()>();
    let up = raw_upstream(move |mut up| {
        let _ = heads_tx.send(());
        // Answer only when the test says so (after the revocation).
        let _ = go_rx.recv_timeout(WAIT);
        up.accept();
        let (tx, _rx) = unbounded();
        echo_record(&mut up, &tx);
    });
    let gw = gateway(
        up,
        Opts {
            sections: admin_config(),
            ..Opts::default()
        },
    );
    let admin = admin_addr(&gw);
    let t = token("quinn", "quinn-1", 3600, "chat");
    let mut s = gw.connect();
    s.write_all(upgrade_request(&format!("/chat?access_token={t}"), &[]).as_bytes())
        .expect("send");
    heads_rx
        .recv_timeout(WAIT)
        .expect("upstream got the request");
    let (status, body) = revoke(admin, r#"{"jti":"quinn-1"}"#);
    assert_eq!(status, 200, "{body}");
    go_tx.send(()).expect("go");
    let r = read_response(&mut s);
    if r.status == 101 {
        // Acceptable only if the connection is closed at once as revoked.
        text(&mut s, "alive?");
        let (_, _, op, p) = read_frame_from(&mut s);
        assert_eq!(
            op,
            8,
            "revoked token got a live proxied connection: the upstream answered {:?}",
            String::from_utf8_lossy(&p)
        );
        assert_eq!(u16::from_be_bytes([p[0], p[1]]), 4403);
    } else {
        assert_eq!(r.status, 401, "{r:?}");
    }
}

#[test]
fn in_band_refresh_is_answered_by_the_gateway_and_never_forwarded() {
    let (up, rx) = echo_upstream();
    let gw = gateway(
        up,
        Opts {
            sections: "[session]\nrefresh = \"message\"\n",
            ..Opts::default()
        },
    );
    let t = token("rae", "rae-1", 3600, "chat");
    let mut s = open(&gw, &format!("/chat?access_token={t}"), &[]);
    text(&mut s, "before");
    assert_eq!(next_text(&mut s), "before");

    let fresh = token("rae", "rae-2", 7200, "chat");
    text(
        &mut s,
        &format!(r#"{{"type":"wsgate.refresh","token":"{fresh}"}}"#),
    );
    let v: serde_json::Value = serde_json::from_str(&next_text(&mut s)).expect("json");
    assert_eq!(v["type"], "wsgate.refreshed", "{v}");
    assert!(v["exp"].as_u64().expect("exp") >= now_unix() + 7000);

    // A failed refresh is answered too, and not forwarded either.
    text(
        &mut s,
        &format!(
            r#"{{"type":"wsgate.refresh","token":"{}"}}"#,
            token("mallory", "m-1", 3600, "chat")
        ),
    );
    let v: serde_json::Value = serde_json::from_str(&next_text(&mut s)).expect("json");
    assert_eq!(v["type"], "wsgate.refresh_failed", "{v}");

    // SPEC §6: JSON whitespace as common writers produce it (Python's json.dumps) is a
    // refresh message too; valid or not, it never reaches the upstream.
    let spaced = token("rae", "rae-3", 7200, "chat");
    text(
        &mut s,
        &format!(r#"{{ "type": "wsgate.refresh", "token": "{spaced}" }}"#),
    );
    let v: serde_json::Value = serde_json::from_str(&next_text(&mut s)).expect("json");
    assert_eq!(v["type"], "wsgate.refreshed", "{v}");
    text(&mut s, "{\n  \"type\" :\t\"wsgate.refresh\", \"token\": 5}");
    let v: serde_json::Value = serde_json::from_str(&next_text(&mut s)).expect("json");
    assert_eq!(v["type"], "wsgate.refresh_failed", "{v}");

    text(&mut s, "after");
    assert_eq!(next_text(&mut s), "after");
    // Exactly the two ordinary messages reached the upstream, in order.
    assert_eq!(upstream_msg(&rx), (0x81, b"before".to_vec()));
    assert_eq!(upstream_msg(&rx), (0x81, b"after".to_vec()));
    assert!(
        rx.try_recv().is_err(),
        "something else reached the upstream"
    );
    assert!(!gw.logs().contains(&fresh));
    assert!(!gw.logs().contains(&spaced));
}

/// RFC 6455 §5.4: the gateway's own message (here the answer to an in-band refresh) never
/// lands between the fragments of a relayed upstream message; it follows the final one.
#[test]
fn refresh_answer_waits_for_the_relayed_fragmented_message() {
    let (tx, rx) = unbounded();
    let up = raw_upstream(move |mut up| {
        up.accept();
        let _ = up.send(0x01, b"first half, ");
        // The client's ordinary message sent after its refresh: by the time it arrives the
        // gateway has handled the refresh (it handles messages in order).
        let got = up.frame();
        let _ = tx.send(got.map(|(first, p)| Ev::Msg(first, p)).unwrap_or(Ev::Eof));
        let _ = up.send(0x80, b"second half");
        let _ = up.send(0x81, b"next");
        up.wait_closed();
    });
    let gw = gateway(
        up,
        Opts {
            sections: "[session]\nrefresh = \"message\"\n",
            ..Opts::default()
        },
    );
    let t = token("ivy", "ivy-1", 3600, "chat");
    let mut s = open(&gw, &format!("/chat?access_token={t}"), &[]);
    assert_eq!(next_data(&mut s), (0x01, b"first half, ".to_vec()));
    let fresh = token("ivy", "ivy-2", 7200, "chat");
    text(
        &mut s,
        &format!(r#"{{"type":"wsgate.refresh","token":"{fresh}"}}"#),
    );
    text(&mut s, "go on");
    assert_eq!(
        rx.recv_timeout(WAIT).expect("upstream read"),
        Ev::Msg(0x81, b"go on".to_vec()),
        "only the ordinary message reaches the upstream"
    );
    assert_eq!(
        next_data(&mut s),
        (0x80, b"second half".to_vec()),
        "the relayed message ends before the gateway's answer"
    );
    let v: serde_json::Value = serde_json::from_str(&next_text(&mut s)).expect("json");
    assert_eq!(v["type"], "wsgate.refreshed", "{v}");
    assert_eq!(next_text(&mut s), "next");
}

// ------------------------------------------------------------------------------------
// Backpressure both ways (SPEC §5 "Output", "write_buffer and backpressure apply to both
// legs").

/// An upstream that completes the handshake and then never reads; it keeps the socket
/// until `release` is set, then closes it with whatever is unread (a reset).
fn stalled_upstream(release: Arc<AtomicBool>) -> SocketAddr {
    raw_upstream(move |mut up| {
        up.accept();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !release.load(Ordering::Relaxed) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// Writes 64 KiB binary messages until a write times out or `cap` bytes are out;
/// returns the bytes written.
fn write_until_stalled(s: &mut TcpStream, cap: usize, stall: Duration) -> usize {
    s.set_write_timeout(Some(stall)).expect("timeout");
    let payload: Vec<u8> = (0..64 * KIB).map(|i| (i % 251) as u8).collect();
    let frame = client_frame(true, 2, &payload);
    let mut written = 0;
    while written < cap {
        let off = written % frame.len();
        match s.write(&frame[off..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => panic!("write failed after {written} bytes: {e}"),
        }
    }
    written
}

#[test]
fn slow_upstream_reader_stalls_the_client_and_memory_stays_bounded() {
    let release = Arc::new(AtomicBool::new(false));
    let up = stalled_upstream(release.clone());
    let gw = gateway(
        up,
        Opts {
            limits: r#"write_buffer = "256KiB""#,
            ..Opts::default()
        },
    );
    let before = rss_kib(&gw);
    let mut s = open_mode(&gw, "stall", "sam");
    let written = write_until_stalled(&mut s, 64 * MIB, Duration::from_millis(1500));
    let after = rss_kib(&gw);
    release.store(true, Ordering::Relaxed);
    eprintln!(
        "slow upstream: client wrote {} KiB of 65536 before stalling; gateway RSS {before} -> {after} KiB",
        written / KIB
    );
    assert!(
        written < 48 * MIB,
        "client wrote {written} bytes: no backpressure"
    );
    assert!(
        after.saturating_sub(before) < 64 * 1024,
        "gateway RSS grew {before} -> {after} KiB"
    );
}

/// The upstream leg stalls (write_buffer full), then the upstream resets its socket. The
/// leg's write fails first (`flush()` → `LegState::Done`), which skips the read that
/// would have noticed EOF, and nothing tells the client.
#[test]
fn upstream_reset_while_its_output_is_queued_gives_the_client_1014() {
    let release = Arc::new(AtomicBool::new(false));
    let up = stalled_upstream(release.clone());
    let gw = gateway(
        up,
        Opts {
            limits: "write_buffer = \"256KiB\"\nidle_timeout = \"6s\"",
            ..Opts::default()
        },
    );
    let mut s = open_mode(&gw, "stall", "tia");
    let written = write_until_stalled(&mut s, 64 * MIB, Duration::from_millis(1000));
    assert!(written < 48 * MIB);
    release.store(true, Ordering::Relaxed); // the upstream closes with unread data: RST
    let reset = Instant::now();
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let got = read_close(&mut s);
    let took = reset.elapsed();
    assert!(
        got == (Some(1014), "bad gateway".into()) && took < Duration::from_secs(3),
        "the client got {got:?} {took:?} after the upstream's reset"
    );
}

/// The client keeps sending while the upstream does not read: the gateway stops reading
/// the client, so the client's silence is the gateway's doing. SPEC §5 applies
/// `write_buffer` to both legs: output stuck above it for `idle_timeout` is 1008 "slow
/// consumer", not an idle client.
#[test]
fn slow_upstream_closes_1008_slow_consumer_not_idle() {
    let release = Arc::new(AtomicBool::new(false));
    let up = stalled_upstream(release.clone());
    let gw = gateway(
        up,
        Opts {
            limits: "write_buffer = \"256KiB\"\nidle_timeout = \"2s\"",
            ..Opts::default()
        },
    );
    let mut s = open_mode(&gw, "stall", "uma");
    // Stalled well before idle_timeout.
    let written = write_until_stalled(&mut s, 64 * MIB, Duration::from_millis(400));
    assert!(written < 48 * MIB, "{written}");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    // (The gateway also pings this client at idle_timeout / 2 although it is sending.)
    let got = read_close(&mut s);
    release.store(true, Ordering::Relaxed);
    assert_eq!(got, (Some(1008), "slow consumer".into()));
}

/// An upstream that writes 64 KiB binary messages as fast as the gateway takes them;
/// another thread records what the gateway sends it (close, EOF).
fn flooding_upstream(written: Arc<AtomicU64>, tx: Sender<Ev>) -> SocketAddr {
    raw_upstream(move |mut up| {
        up.accept();
        let mut reader = Up {
            s: up.s.try_clone().expect("clone"),
            head: String::new(),
        };
        let _ = reader.s.set_read_timeout(Some(Duration::from_secs(30)));
        let tx = tx.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_reader = stop.clone();
        std::thread::spawn(move || {
            echo_record(&mut reader, &tx);
            stop_reader.store(true, Ordering::Relaxed);
        });
        let _ = up.s.set_write_timeout(Some(Duration::from_millis(200)));
        let payload: Vec<u8> = (0..64 * KIB).map(|i| (i % 253) as u8).collect();
        let frame = raw_frame(0x82, &payload, None);
        let mut off = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            match up.s.write(&frame[off..]) {
                Ok(n) => {
                    written.fetch_add(n as u64, Ordering::Relaxed);
                    off = (off + n) % frame.len();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
    })
}

/// A client that never reads while the upstream floods: (upstream bytes written when
/// sampled at 1.5 s, gateway RSS before and at its peak in KiB, what ended the upstream's
/// connection, when) — the client socket is returned unread.
fn flood_an_unread_client(sub: &str) -> (u64, u64, u64, Ev, Duration, TcpStream, Receiver<Ev>) {
    let written = Arc::new(AtomicU64::new(0));
    let (tx, rx) = unbounded();
    let up = flooding_upstream(written.clone(), tx);
    let gw = gateway(
        up,
        Opts {
            limits: "write_buffer = \"256KiB\"\nidle_timeout = \"2s\"",
            ..Opts::default()
        },
    );
    let before = rss_kib(&gw);
    let s = open_mode(&gw, "flood", sub);
    let opened = Instant::now();
    let mut peak = before;
    let mut stalled_at = 0;
    while opened.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(100));
        peak = peak.max(rss_kib(&gw));
        stalled_at = written.load(Ordering::Relaxed);
    }
    let end = upstream_end(&rx);
    let closed_after = opened.elapsed();
    peak = peak.max(rss_kib(&gw));
    eprintln!(
        "unread client: upstream wrote {} KiB by 1.5 s; gateway RSS {before} -> peak {peak} KiB; upstream saw {end:?} after {closed_after:?}",
        stalled_at / 1024
    );
    (stalled_at, before, peak, end, closed_after, s, rx)
}

#[test]
fn slow_client_reader_is_closed_1008_slow_consumer_on_both_sides() {
    let (_, _, _, end, closed_after, mut s, rx) = flood_an_unread_client("val");
    // Output above write_buffer for idle_timeout (2 s): the gateway closes 1008 to both.
    assert_eq!(end, Ev::Close(Some(1008), "slow consumer".into()));
    assert!(
        closed_after < Duration::from_secs(6),
        "closed after {closed_after:?}"
    );
    // What the client finds when it finally reads: the queued data, then the close
    // frame if it made it out before the linger ended, or the end of the connection.
    s.set_read_timeout(Some(Duration::from_secs(8)))
        .expect("timeout");
    let mut data = 0usize;
    let outcome = loop {
        let mut h = [0u8; 2];
        if let Err(e) = s.read_exact(&mut h) {
            break format!("{:?} after {data} bytes of data, no close frame", e.kind());
        }
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                s.read_exact(&mut b).expect("len");
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                s.read_exact(&mut b).expect("len");
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut p = vec![0u8; len];
        if let Err(e) = s.read_exact(&mut p) {
            break format!("{:?} inside a frame after {data} bytes of data", e.kind());
        }
        if h[0] & 0x0f == 8 {
            break format!(
                "close {} {:?} after {data} bytes of data",
                u16::from_be_bytes([p[0], p[1]]),
                String::from_utf8_lossy(&p[2..])
            );
        }
        data += len;
    };
    eprintln!("unread client: when it finally read, the client got {outcome}");
    assert!(
        !outcome.contains("WouldBlock") && !outcome.contains("TimedOut"),
        "the client connection was never ended: {outcome}"
    );
    // The upstream leg is torn down too.
    let after = rx.recv_timeout(WAIT);
    assert!(
        matches!(after, Ok(Ev::Eof) | Ok(Ev::Err(_)) | Err(_)),
        "{after:?}"
    );
}

/// The same flood: the gateway keeps reading the upstream into the leg's `rbuf` while
/// the client's kernel buffers absorb output (16 reads of 64 KiB per turn, relay only up
/// to `write_buffer`), so memory grows to many times `write_buffer` before it stalls.
#[test]
fn slow_client_reader_memory_stays_bounded() {
    let (stalled_at, before, peak, _, _, _s, _rx) = flood_an_unread_client("vic");
    assert!(
        stalled_at < 48 * MIB as u64,
        "the gateway kept reading the upstream: {stalled_at} bytes"
    );
    assert!(
        peak.saturating_sub(before) < 64 * 1024,
        "gateway RSS grew {before} -> {peak} KiB"
    );
}

/// A client that reads, but slower than the upstream writes: every time its output
/// dips below `write_buffer` the gateway reads up to 16 worker-buffer reads from the upstream into
/// the leg's `rbuf`, but relays only up to the limit; the rest piles up in `rbuf`.
#[test]
fn trickling_client_reader_keeps_memory_bounded() {
    let written = Arc::new(AtomicU64::new(0));
    let (tx, _rx) = unbounded();
    let up = flooding_upstream(written.clone(), tx);
    let gw = gateway(
        up,
        Opts {
            limits: r#"write_buffer = "256KiB""#,
            ..Opts::default()
        },
    );
    let before = rss_kib(&gw);
    let mut s = open_mode(&gw, "flood", "wes");
    let started = Instant::now();
    let mut buf = vec![0u8; 16 * KIB];
    let mut read = 0usize;
    let mut peak = before;
    let mut n = 0u32;
    while started.elapsed() < Duration::from_secs(4) {
        read += s.read(&mut buf).expect("read");
        std::thread::sleep(Duration::from_millis(5));
        n += 1;
        if n % 20 == 0 {
            peak = peak.max(rss_kib(&gw));
        }
    }
    peak = peak.max(rss_kib(&gw));
    let up_written = written.load(Ordering::Relaxed) as usize;
    eprintln!(
        "trickle: client read {} KiB, upstream wrote {} KiB, gateway RSS {before} -> peak {peak} KiB",
        read / KIB,
        up_written / KIB
    );
    assert!(
        up_written < read + 48 * MIB,
        "the gateway took {} KiB from the upstream for {} KiB delivered",
        up_written / KIB,
        read / KIB
    );
    assert!(
        peak.saturating_sub(before) < 64 * 1024,
        "gateway RSS grew {before} -> {peak} KiB"
    );
}

// ------------------------------------------------------------------------------------
// Payloads and headers.

#[test]
fn large_messages_relay_byte_for_byte_both_ways() {
    let (up, rx) = echo_upstream();
    let gw = gateway(
        up,
        Opts {
            limits: "max_frame = \"4MiB\"\nmax_message = \"4MiB\"",
            ..Opts::default()
        },
    );
    let mut s = open_mode(&gw, "echo", "xia");
    let big: Vec<u8> = (0..MIB).map(|i| (i * 31 % 251) as u8).collect();
    s.write_all(&client_frame(true, 2, &big)).expect("send");
    let (first, p) = upstream_msg(&rx);
    assert_eq!(first, 0x82, "one final binary frame upstream");
    assert!(p == big, "upstream got {} bytes, not the same", p.len());
    let (h, fin, op, p) = read_frame_from(&mut s);
    assert!(fin && op == 2, "{h:?}");
    assert!(p == big, "client got {} bytes, not the same", p.len());

    // Exactly max_message (4 MiB) is accepted and relayed whole.
    let max: Vec<u8> = (0..4 * MIB).map(|i| (i * 7 % 253) as u8).collect();
    s.write_all(&client_frame(true, 2, &max)).expect("send");
    let (first, p) = upstream_msg(&rx);
    assert_eq!(first, 0x82);
    assert!(p == max, "upstream got {} bytes", p.len());
    let (_, fin, op, p) = read_frame_from(&mut s);
    assert!(fin && op == 2 && p == max, "client got {} bytes", p.len());

    // A large text with multi-byte UTF-8 across the buffer boundaries.
    let text_msg = "é€😀".repeat(MIB / 9);
    s.write_all(&client_frame(true, 1, text_msg.as_bytes()))
        .expect("send");
    let (first, p) = upstream_msg(&rx);
    assert_eq!(first, 0x81);
    assert!(p == text_msg.as_bytes());
    assert_eq!(next_text(&mut s), text_msg);
}

#[test]
fn fragmented_messages_are_relayed_reassembled_upstream() {
    let (tx, rx) = unbounded();
    let up = raw_upstream(move |mut up| {
        up.accept();
        if up.mode() == "fragout" {
            // Upstream → client: fragments with a ping between them.
            let mut b = raw_frame(0x01, b"up-", None);
            b.extend(raw_frame(0x89, b"mid", None));
            b.extend(raw_frame(0x00, b"frag", None));
            b.extend(raw_frame(0x80, b"mented", None));
            let _ = up.s.write_all(&b);
        }
        echo_record(&mut up, &tx);
    });
    let gw = gateway(
        up,
        Opts {
            limits: "max_frame = \"4MiB\"\nmax_message = \"4MiB\"",
            ..Opts::default()
        },
    );
    let mut s = open_mode(&gw, "echo", "yan");
    let mut b = client_frame(false, 1, b"hel");
    b.extend(client_frame(true, 9, b"p"));
    b.extend(client_frame(false, 0, "lo wörl".as_bytes()));
    b.extend(client_frame(true, 0, b"d"));
    s.write_all(&b).expect("send");
    assert_eq!(
        upstream_msg(&rx),
        (0x81, "hello wörld".as_bytes().to_vec()),
        "one text frame upstream"
    );
    let (_, _, op, p) = read_frame_from(&mut s);
    assert_eq!((op, p.as_slice()), (10, &b"p"[..]), "the gateway's pong");
    assert_eq!(next_text(&mut s), "hello wörld");

    // A 1.5 MiB binary message in three 512 KiB fragments.
    let part: Vec<u8> = (0..512 * KIB).map(|i| (i % 239) as u8).collect();
    let mut b = client_frame(false, 2, &part);
    b.extend(client_frame(false, 0, &part));
    b.extend(client_frame(true, 0, &part));
    s.write_all(&b).expect("send");
    let (first, p) = upstream_msg(&rx);
    assert_eq!(first, 0x82);
    assert_eq!(p.len(), 3 * part.len());
    assert!(p.chunks(part.len()).all(|c| c == part.as_slice()));
    let (_, fin, op, p) = read_frame_from(&mut s);
    assert!(fin && op == 2 && p.len() == 3 * part.len());

    // Upstream fragments reach the client as fragments, the ping answered upstream.
    let mut s = open_mode(&gw, "fragout", "yan");
    let mut got = Vec::new();
    loop {
        let (_, fin, op, p) = read_frame_from(&mut s);
        assert_ne!(op, 9, "the upstream's ping must not be relayed");
        got.extend(p);
        if fin {
            break;
        }
    }
    assert_eq!(got, b"up-fragmented");
}

#[test]
fn frames_sent_before_the_upstream_101_are_relayed_after_it() {
    let (tx, rx) = unbounded();
    let up = raw_upstream(move |mut up| {
        // Answer late, so the client's frames arrive while the gateway is dialing.
        std::thread::sleep(Duration::from_millis(300));
        up.accept();
        echo_record(&mut up, &tx);
    });
    let gw = gateway(up, Opts::default());
    // In the same write as the request head.
    let mut s = gw.connect();
    let mut bytes =
        upgrade_request(&format!("/chat?access_token={}", chat("zed")), &[]).into_bytes();
    bytes.extend(client_frame(true, 1, b"pipelined"));
    s.write_all(&bytes).expect("send");
    // And in a separate segment while the upstream has not answered yet.
    std::thread::sleep(Duration::from_millis(100));
    text(&mut s, "while dialing");
    let r = read_response(&mut s);
    assert_eq!(r.status, 101, "{r:?}");
    assert_eq!(next_text(&mut s), "pipelined");
    assert_eq!(next_text(&mut s), "while dialing");
    assert_eq!(upstream_msg(&rx), (0x81, b"pipelined".to_vec()));
    assert_eq!(upstream_msg(&rx), (0x81, b"while dialing".to_vec()));
}

#[test]
fn forwarded_for_appended_token_cookie_stripped_authorization_dropped() {
    let (tx, rx) = unbounded();
    let up = raw_upstream(move |mut up| {
        let _ = tx.send(up.head.clone());
        up.accept();
        let (etx, _erx) = unbounded();
        echo_record(&mut up, &etx);
    });
    let gw = gateway(
        up,
        Opts {
            auth: r#"sources = ["cookie:sess"]"#,
            sections: "[origin]\nallow = [\"https://app.example.com\"]\nallow_missing = false\n",
            ..Opts::default()
        },
    );
    let t = chat("abe");
    let cookie = format!("Cookie: theme=dark; sess={t}; lang=en");
    let headers = [
        "Origin: https://app.example.com",
        cookie.as_str(),
        "X-Forwarded-For: 203.0.113.9",
        "Authorization: Bearer not-a-source-but-never-forwarded",
        "User-Agent: edge-test/1.0",
        "X-Custom: kept",
    ];
    let mut s = open(&gw, "/chat?room=1", &headers);
    text(&mut s, "hi");
    assert_eq!(next_text(&mut s), "hi");
    let head = rx.recv_timeout(WAIT).expect("head");
    let h = |name: &str| head_values(&head, name);
    assert!(head.starts_with("GET /chat?room=1 HTTP/1.1\r\n"), "{head}");
    assert_eq!(h("x-forwarded-for"), ["203.0.113.9, 127.0.0.1"], "{head}");
    assert_eq!(h("cookie"), ["theme=dark; lang=en"], "{head}");
    assert!(h("authorization").is_empty(), "{head}");
    assert_eq!(h("origin"), ["https://app.example.com"]);
    assert_eq!(h("user-agent"), ["edge-test/1.0"]);
    assert_eq!(h("x-custom"), ["kept"]);
    assert_eq!(h("x-auth-subject"), ["abe"]);
    assert_eq!(h("host"), [up_addr_of(&gw)]);
    assert!(!head.contains(&t), "token leaked upstream:\n{head}");
    assert!(!gw.logs().contains(&t), "token logged");

    // A Cookie header holding only the token is not forwarded at all; without a client
    // X-Forwarded-For the gateway starts one.
    let cookie = format!("Cookie: sess={t}");
    let mut s = open(
        &gw,
        "/chat",
        &["Origin: https://app.example.com", cookie.as_str()],
    );
    text(&mut s, "hi");
    assert_eq!(next_text(&mut s), "hi");
    let head = rx.recv_timeout(WAIT).expect("head");
    assert!(head_values(&head, "cookie").is_empty(), "{head}");
    assert_eq!(head_values(&head, "x-forwarded-for"), ["127.0.0.1"]);

    // No Origin with allow_missing = false: 403, the upstream never sees it.
    let (r, _s) = request(
        &gw,
        upgrade_request("/chat", &[&format!("Cookie: sess={t}")]).as_bytes(),
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
}

/// The `host:port` the gateway's config names for the upstream (read back from its
/// config file).
fn up_addr_of(gw: &Gateway) -> String {
    let cfg = std::fs::read_to_string(gw.dir.path().join("wsgate.toml")).expect("config");
    cfg.split("ws://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect("upstream in config")
        .to_string()
}

// ------------------------------------------------------------------------------------
// More closes the gateway decides, and the upstream's first frames.

/// A chat token whose `exp` is `exp` (unix seconds).
fn token_exp(sub: &str, exp: u64) -> String {
    sign(
        Alg::HS256,
        &SigningKey::Hmac(SECRET.to_vec()),
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &format!(
            r#"{{"sub":"{sub}","iat":{},"exp":{exp},"scope":"chat"}}"#,
            exp - 60
        ),
    )
    .expect("sign")
}

#[test]
fn client_side_limits_close_both_sides_with_the_same_code() {
    let (up, rx) = echo_upstream();
    let gw = gateway(
        up,
        Opts {
            limits: "max_message = \"1KiB\"\nmessages = \"5/s\"",
            ..Opts::default()
        },
    );
    // max_message: 1009 to the client and the same close to the upstream.
    let mut s = open_mode(&gw, "echo", "bea");
    text(&mut s, "ok");
    assert_eq!(next_text(&mut s), "ok");
    assert_eq!(upstream_msg(&rx), (0x81, b"ok".to_vec()));
    s.write_all(&client_frame(true, 2, &[0u8; 1025]))
        .expect("send");
    let (code, reason) = expect_close(&mut s);
    assert_eq!(code, Some(1009));
    assert_eq!(upstream_end(&rx), Ev::Close(Some(1009), reason));

    // messages rate: 1008 "rate limit" to both.
    let mut s = open_mode(&gw, "echo", "bo");
    let mut burst = Vec::new();
    for _ in 0..20 {
        burst.extend(client_frame(true, 1, b"x"));
    }
    s.write_all(&burst).expect("send");
    let got = read_close(&mut s);
    assert_eq!(got, (Some(1008), "rate limit".into()));
    assert_eq!(
        upstream_end(&rx),
        Ev::Close(Some(1008), "rate limit".into())
    );
}

#[test]
fn idle_client_closes_both_sides_1001_idle_timeout() {
    let (up, rx) = echo_upstream();
    let gw = gateway(
        up,
        Opts {
            limits: r#"idle_timeout = "2s""#,
            ..Opts::default()
        },
    );
    let mut s = open_mode(&gw, "echo", "cy");
    // Never answer the gateway's ping.
    let got = read_close(&mut s);
    assert_eq!(got, (Some(1001), "idle timeout".into()));
    assert_eq!(
        upstream_end(&rx),
        Ev::Close(Some(1001), "idle timeout".into())
    );
}

#[test]
fn sigterm_closes_both_sides_1001_going_away() {
    let (up, rx) = echo_upstream();
    let mut gw = gateway(
        up,
        Opts {
            sections: "",
            ..Opts::default()
        },
    );
    let mut s = open_mode(&gw, "echo", "di");
    text(&mut s, "hi");
    assert_eq!(next_text(&mut s), "hi");
    assert_eq!(upstream_msg(&rx), (0x81, b"hi".to_vec()));
    gw.signal(15);
    assert_eq!(expect_close(&mut s), (Some(1001), "going away".into()));
    assert_eq!(
        upstream_end(&rx),
        Ev::Close(Some(1001), "going away".into())
    );
    // Answer the close: the gateway is then free to exit.
    s.write_all(&client_frame(true, 8, &close_payload(1001, b"")))
        .expect("close");
    assert_eq!(gw.wait_exit(), Some(0));
}

#[test]
fn frames_in_the_same_write_as_the_upstream_101_reach_the_client() {
    let up = raw_upstream(|mut up| {
        let key = up.headers("sec-websocket-key").pop().expect("key");
        let mut bytes = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            std::str::from_utf8(&accept_key(key.as_bytes())).expect("ascii")
        )
        .into_bytes();
        bytes.extend(raw_frame(0x81, b"welcome", None));
        if up.mode() == "bye" {
            bytes.extend(raw_frame(0x88, &close_payload(4000, b"nope"), None));
        }
        let _ = up.s.write_all(&bytes);
        if up.mode() == "eof" {
            return; // 101, one message, FIN
        }
        up.wait_closed();
    });
    let gw = gateway(up, Opts::default());
    let mut s = open_mode(&gw, "bye", "eve");
    assert_eq!(next_text(&mut s), "welcome");
    assert_eq!(expect_close(&mut s), (Some(4000), "nope".into()));
    let mut s = open_mode(&gw, "eof", "eve");
    assert_eq!(next_text(&mut s), "welcome");
    assert_eq!(expect_close(&mut s), (Some(1014), "bad gateway".into()));
}

#[test]
fn explained_rejection_never_reaches_the_upstream() {
    let (up, rx) = echo_upstream();
    let gw = gateway(
        up,
        Opts {
            auth: "explain_to_browsers = true",
            sections: "[origin]\nallow = [\"https://app.example.com\"]\n",
            ..Opts::default()
        },
    );
    let expired = token_exp("fay", now_unix() - 120);
    let mut s = open(
        &gw,
        &format!("/chat?access_token={expired}"),
        &["Origin: https://app.example.com"],
    );
    assert_eq!(expect_close(&mut s), (Some(4401), "token expired".into()));
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "the upstream saw a connection"
    );
}

#[test]
fn upstream_ping_flood_without_reading_costs_bounded_memory() {
    // #10 item 6: pongs to upstream pings are queued with a byte bound (write_buffer), as
    // client pongs are. An upstream that pings and never reads our pongs stalls instead
    // of growing the gateway's memory.
    const CAP: u64 = 96 * 1024 * 1024;
    let written = Arc::new(AtomicU64::new(0));
    let w = written.clone();
    let (tx, rx) = unbounded();
    let up = raw_upstream(move |mut up| {
        up.accept();
        up.s.set_write_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        // A small send buffer here, so that what the kernel holds is mostly the
        // gateway's receive buffer and the count measures the gateway.
        let _ = socket2::SockRef::from(&up.s).set_send_buffer_size(64 * 1024);
        let ping = raw_frame(0x89, &[0x5a; 125], None);
        let burst: Vec<u8> = ping.repeat(512);
        while w.load(Ordering::Relaxed) < CAP {
            match up.s.write(&burst) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    w.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
        let _ = tx.send(());
        // Keep the socket (unread) until the gateway gives up on it.
        up.wait_closed();
    });
    let gw = gateway(
        up,
        Opts {
            limits: "write_buffer = \"256KiB\"\nidle_timeout = \"30s\"",
            ..Opts::default()
        },
    );
    let before = rss_kib(&gw);
    let _s = open_mode(&gw, "pings", "ping-flood");
    rx.recv_timeout(Duration::from_secs(60))
        .expect("upstream finished writing or stalled");
    let total = written.load(Ordering::Relaxed);
    let after = rss_kib(&gw);
    eprintln!(
        "ping flood: upstream wrote {} KiB before stalling; gateway RSS {before} -> {after} KiB",
        total / 1024
    );
    assert!(
        total < 32 * 1024 * 1024,
        "the gateway kept reading pings: {total} bytes"
    );
    assert!(
        after < before + 32 * 1024,
        "gateway RSS grew from {before} to {after} KiB"
    );
    // Stalled, it waits for the upstream's writable edge rather than spinning: a second
    // of wall time costs far less than a second of CPU.
    let cpu = cpu_ticks(gw.child.id());
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(gw.child.id()) - cpu;
    assert!(
        spent < 50,
        "gateway used {spent} ticks in 1 s while stalled"
    );
}
