//! The proxy relay's cost per message, for instruction counts (callgrind) and syscall
//! counts (strace) of the gateway alone: `wsgate serve` with one worker and one upstream
//! route, an echo upstream and pipelining clients in this process (threads, blocking
//! sockets), every message going client -> wsgate -> upstream -> wsgate -> client.
//!
//! `WSGATE_RELAY_WRAP` runs the gateway under a wrapper, e.g.
//! `WSGATE_RELAY_WRAP="valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out"`; run it
//! with two message counts and divide the difference of the totals by the difference of
//! the counts (start-up and shutdown cancel out). Knobs: `WSGATE_RELAY_CONNS` (4),
//! `WSGATE_RELAY_DEPTH` messages in flight per connection (16), `WSGATE_RELAY_SIZE` bytes
//! per binary message (1024), `WSGATE_RELAY_MSGS` messages per connection (2000).

// The harness times itself; the gateway's own rule (only src/clock.rs reads the clock)
// is for the gateway.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wsgate::proto::ws::accept::accept_key;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A port free right now (the gateway binds it a moment later).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Reads an HTTP head (up to the blank line) byte by byte.
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).expect("head") == 0 {
            panic!("closed during the handshake");
        }
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// One frame header at the start of `buf`: (header length, payload length, mask).
fn header(buf: &[u8]) -> Option<(usize, usize, Option<[u8; 4]>)> {
    let b1 = *buf.get(1)?;
    let (len, mut at) = match b1 & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let mask = if b1 & 0x80 != 0 {
        let k: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(k)
    } else {
        None
    };
    Some((at, len, mask))
}

fn write_header(out: &mut Vec<u8>, first: u8, len: usize, masked: bool) {
    out.push(first);
    let m = if masked { 0x80 } else { 0 };
    if len < 126 {
        out.push(m | len as u8);
    } else if len < 65536 {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// The echo upstream: each read's complete frames go back unmasked in one write.
fn upstream(listener: TcpListener) {
    for s in listener.incoming() {
        let Ok(mut s) = s else { return };
        std::thread::spawn(move || {
            let head = read_head(&mut s);
            let key = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("sec-websocket-key"))
                .map(|(_, v)| v.trim().to_owned())
                .expect("key");
            let accept = accept_key(key.as_bytes());
            let reply = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                std::str::from_utf8(&accept).expect("ascii")
            );
            s.write_all(reply.as_bytes()).expect("101");
            let _ = s.set_nodelay(true);
            let mut buf = vec![0u8; 256 * 1024];
            let mut have = 0;
            let mut out = Vec::new();
            loop {
                let n = match s.read(&mut buf[have..]) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                have += n;
                let mut pos = 0;
                while let Some((h, len, mask)) = header(&buf[pos..have]) {
                    if pos + h + len > have {
                        break;
                    }
                    let first = buf[pos];
                    if first & 0x0f == 8 {
                        return;
                    }
                    write_header(&mut out, first, len, false);
                    let key = mask.unwrap_or([0; 4]);
                    out.extend(
                        buf[pos + h..pos + h + len]
                            .iter()
                            .enumerate()
                            .map(|(i, b)| b ^ key[i % 4]),
                    );
                    pos += h + len;
                }
                buf.copy_within(pos..have, 0);
                have -= pos;
                if !out.is_empty() {
                    if s.write_all(&out).is_err() {
                        return;
                    }
                    out.clear();
                }
            }
        });
    }
}

/// One client: `msgs` binary messages of `size` bytes, `depth` in flight.
fn client(gw: SocketAddr, msgs: usize, depth: usize, size: usize) {
    let mut s = TcpStream::connect(gw).expect("connect");
    let _ = s.set_nodelay(true);
    s.write_all(
        b"GET /relay HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .expect("upgrade");
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut frame = Vec::new();
    write_header(&mut frame, 0x82, size, true);
    frame.extend_from_slice(&[0x37, 0xfa, 0x21, 0x3d]);
    frame.extend((0..size).map(|i| (i as u8) ^ [0x37, 0xfa, 0x21, 0x3d][i % 4]));
    let mut sent = depth.min(msgs);
    s.write_all(&frame.repeat(sent)).expect("send");
    let mut received = 0;
    let mut buf = vec![0u8; 256 * 1024];
    let mut have = 0;
    while received < msgs {
        let n = s.read(&mut buf[have..]).expect("read");
        assert!(n > 0, "gateway closed");
        have += n;
        let mut pos = 0;
        let mut done = 0;
        while let Some((h, len, _)) = header(&buf[pos..have]) {
            if pos + h + len > have {
                break;
            }
            assert_eq!((buf[pos], len), (0x82, size), "an echoed message");
            pos += h + len;
            done += 1;
        }
        buf.copy_within(pos..have, 0);
        have -= pos;
        received += done;
        let more = done.min(msgs - sent);
        if more > 0 {
            s.write_all(&frame.repeat(more)).expect("send");
            sent += more;
        }
    }
    let _ = s.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let conns = knob("WSGATE_RELAY_CONNS", 4);
    let depth = knob("WSGATE_RELAY_DEPTH", 16);
    let size = knob("WSGATE_RELAY_SIZE", 1024);
    let msgs = knob("WSGATE_RELAY_MSGS", 2000);
    let up = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let up_addr = up.local_addr().expect("addr");
    std::thread::spawn(move || upstream(up));
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("wsgate-relay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nworkers = 1\n[limits]\n\
             per_ip_handshakes = \"100000/s\"\nmessages = \"10000000/s\"\nbytes = \"100GiB/s\"\n\
             max_frame = \"16MiB\"\nmax_message = \"16MiB\"\n\
             [[route]]\npath = \"/relay\"\nupstream = [\"ws://{up_addr}/echo\"]\npublic = true\n"
        ),
    )
    .expect("config");
    let wrap = std::env::var("WSGATE_RELAY_WRAP").unwrap_or_default();
    let mut argv: Vec<String> = wrap.split_whitespace().map(str::to_owned).collect();
    argv.push(env!("CARGO_BIN_EXE_wsgate").to_owned());
    argv.extend(["serve", "-c"].map(str::to_owned));
    argv.push(config.display().to_string());
    let mut child: Child = Command::new(&argv[0])
        .args(&argv[1..])
        .env("WSGATE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start wsgate");
    let gw: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let up_by = Instant::now() + Duration::from_secs(120);
    while TcpStream::connect(gw).is_err() {
        assert!(Instant::now() < up_by, "wsgate did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let start = Instant::now();
    let clients: Vec<_> = (0..conns)
        .map(|_| std::thread::spawn(move || client(gw, msgs, depth, size)))
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    let elapsed = start.elapsed();
    let total = conns * msgs;
    println!(
        "relay: {conns} conn x {depth} in flight x {size} B: {total} messages in {:.3} s ({:.0} msg/s)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
