//! SPEC §5 (upstream backend, selection, relay) and §6 on proxied connections: the edge
//! cases. The upstream here is a raw TCP server that does the RFC 6455 server handshake by
//! hand, so that a test controls every byte it sends (garbage, resets, stalls, floods) and
//! sees every frame the gateway sends it (masked, as a client's).
//!
//! This file holds the tokens, the gateway and the raw upstream; the tests are in one
//! file per topic.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use wsgate::proto::ws::accept::accept_key;

use crate::support::*;

mod backpressure;
mod closes;
mod relay;
mod upstream_faults;

const SECRET: &[u8] = b"proxy-edge-secret-0123456789abcdef-0123456789";
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

// ------------------------------------------------------------------------------------
// Tokens and the gateway.

/// An HS256 token for `sub` with a `jti`, valid for `ttl` seconds.
fn token(sub: &str, jti: &str, ttl: u64, scope: &str) -> String {
    jti_token(SECRET, sub, jti, scope, ttl)
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

impl<'a> Opts<'a> {
    /// Only lines inside `[limits]`.
    fn limits(limits: &'a str) -> Self {
        Opts {
            limits,
            ..Opts::default()
        }
    }

    /// Only whole extra sections.
    fn sections(sections: &'a str) -> Self {
        Opts {
            sections,
            ..Opts::default()
        }
    }

    /// Only lines inside the `/chat` route.
    fn route(route: &'a str) -> Self {
        Opts {
            route,
            ..Opts::default()
        }
    }
}

/// A gateway with one upstream route `/chat` → `ws://<up>/chat`.
fn gateway(up: SocketAddr, o: Opts<'_>) -> Gateway {
    let Opts {
        auth,
        limits,
        sections,
        route,
    } = o;
    Gateway::start_in(
        hs_secret_dir(SECRET),
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

/// Opens `/chat?mode=echo` for `sub` on a gateway in front of `echo_upstream()` and
/// checks one round trip: "hi" comes back to the client and reached the upstream.
fn open_echoing(gw: &Gateway, rx: &Receiver<Ev>, sub: &str) -> TcpStream {
    let mut s = open_mode(gw, "echo", sub);
    text(&mut s, "hi");
    assert_eq!(next_text(&mut s), "hi");
    assert_eq!(upstream_msg(rx), (0x81, b"hi".to_vec()));
    s
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
