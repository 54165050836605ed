//! A raw upstream for proxy tests: a TCP server that does the RFC 6455 server handshake
//! by hand, so that a test controls every byte it sends and sees every frame the gateway
//! sends it (masked, as a client's).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

use wsgate::proto::ws::accept::accept_key;

use super::{raw_frame, WAIT};

/// One connection to the raw upstream, after the gateway's request head was read.
pub struct Up {
    pub s: TcpStream,
    pub head: String,
}

impl Up {
    /// The request target the gateway sent.
    pub fn target(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }

    /// The `mode` query parameter (tests pick the upstream's behaviour with it).
    pub fn mode(&self) -> String {
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
    pub fn headers(&self, name: &str) -> Vec<String> {
        head_values(&self.head, name)
    }

    /// Answers the upgrade with a correct 101.
    pub fn accept(&mut self) {
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
    pub fn frame(&mut self) -> io::Result<(u8, Vec<u8>)> {
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
    pub fn send(&mut self, first: u8, payload: &[u8]) -> io::Result<()> {
        self.s.write_all(&raw_frame(first, payload, None))
    }

    /// Waits (bounded) until the gateway closes this socket; true on EOF or reset.
    pub fn wait_closed(&mut self) -> bool {
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
pub fn head_values(head: &str, name: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// Starts a raw upstream; each connection runs `handler` on its own thread once the
/// gateway's request head has arrived.
pub fn raw_upstream(handler: impl Fn(Up) + Send + Sync + 'static) -> SocketAddr {
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
                while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
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
