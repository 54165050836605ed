//! One client connection: its socket, optional TLS, buffers and protocol phase.
//! The byte-moving half (`read_into`, `flush`) lives here; the decisions live in
//! `proto`, `gate` and `worker`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use mio::net::TcpStream;

use crate::gate::decide::Identity;
use crate::proto::http::request::HeadReader;
use crate::proto::ws::session::Session;

/// Where a connection is in its life.
pub enum Phase {
    /// Waiting for the complete upgrade request.
    Handshake {
        /// Incremental end-of-head scanner.
        reader: HeadReader,
        /// When the whole request must have arrived.
        deadline: Instant,
    },
    /// Upgraded: frames both ways.
    Open {
        /// The RFC 6455 state machine.
        session: Box<Session>,
        /// Index of the route in the gate.
        route: usize,
    },
    /// Accepted for an upstream route: waiting for the upstream's answer before the
    /// client gets its 101 (SPEC §5).
    Dialing {
        /// Index of the route in the gate.
        route: usize,
    },
    /// An HTTP rejection is queued; flush it, then close.
    Rejected,
}

/// Result of one read attempt.
pub enum ReadOutcome {
    /// `n` plaintext bytes were placed at the start of the buffer.
    Data(usize),
    /// Nothing more now.
    WouldBlock,
    /// The peer closed its write side (or sent TLS close_notify).
    Eof,
    /// The socket or TLS failed.
    Failed,
}

/// A client connection.
pub struct Conn {
    /// The socket.
    pub socket: TcpStream,
    /// The peer's address.
    pub peer: SocketAddr,
    /// TLS state when the listener speaks wss://.
    pub tls: Option<Box<rustls::ServerConnection>>,
    /// The protocol phase.
    pub phase: Phase,
    /// Received bytes not yet consumed (a partial head or frame header).
    pub rbuf: Vec<u8>,
    /// Output not yet handed to the socket (plaintext, before TLS).
    pub wbuf: Vec<u8>,
    /// The earliest deadline already in the worker's timer heap.
    pub scheduled: Option<Instant>,
    /// No more output will be produced: flush, shut down the write side, drain, close.
    pub closing: bool,
    /// The write side has been shut down; reads are drained and discarded until
    /// EOF or `linger_until`.
    pub write_shut: bool,
    /// When to give up waiting for the peer's FIN.
    pub linger_until: Option<Instant>,
    /// The peer sent EOF.
    pub read_eof: bool,
    /// Since when pending output has stayed above `write_buffer`.
    pub over_limit_since: Option<Instant>,
    /// Any bytes received at all (408 vs silent close at handshake timeout).
    pub received_any: bool,
    /// The verified identity (per-subject count is released when the conn goes).
    pub identity: Option<Identity>,
    /// The 101 is queued: drop the output buffer's memory once it is written.
    pub release_wbuf_when_flushed: bool,
    /// The upstream leg on proxied routes.
    pub upstream: Option<Box<super::upstream::UpstreamLeg>>,
    /// SPEC §6: when the token's `exp` (+ leeway) passes; the connection closes 4401.
    pub token_deadline: Option<Instant>,
    /// SPEC §6: when `wsgate.expiring` is due (refresh on).
    pub notice_at: Option<Instant>,
    /// When the connection was accepted.
    pub accepted_at: Instant,
    /// The connection's id in logs: unique for the process's life (SPEC §7), never
    /// reused like a slab slot is.
    pub serial: u64,
    /// SPEC §6: in-band refreshes that failed on this connection.
    pub failed_refreshes: u32,
    /// SPEC §10: permessage-deflate agreed at the handshake of a proxied route, held for
    /// the client's 101 (sent once the upstream answers).
    pub deflate: Option<Box<crate::proto::ws::deflate::PerMessageDeflate>>,
}

/// The next connection id for logs: process-wide, starting at 1, never reused (64 bits
/// do not wrap in the life of a process).
pub fn next_serial() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Conn {
    /// Bytes queued for the peer, in our buffer and inside TLS.
    pub fn pending_output(&self) -> usize {
        self.wbuf.len()
    }

    /// Reads once into `buf` (plain) or pulls TLS records and returns plaintext.
    pub fn read_into(&mut self, buf: &mut [u8]) -> ReadOutcome {
        match &mut self.tls {
            None => loop {
                match self.socket.read(buf) {
                    Ok(0) => return ReadOutcome::Eof,
                    Ok(n) => return ReadOutcome::Data(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return ReadOutcome::WouldBlock
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return ReadOutcome::Failed,
                }
            },
            Some(tls) => loop {
                // Plaintext already decrypted comes first.
                match tls.reader().read(buf) {
                    Ok(0) => return ReadOutcome::Eof,
                    Ok(n) => return ReadOutcome::Data(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return ReadOutcome::Failed,
                }
                match tls.read_tls(&mut self.socket) {
                    Ok(0) => return ReadOutcome::Eof,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return ReadOutcome::WouldBlock
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return ReadOutcome::Failed,
                }
                if tls.process_new_packets().is_err() {
                    // Send the alert rustls queued, best effort, then give up.
                    let _ = tls.write_tls(&mut self.socket);
                    return ReadOutcome::Failed;
                }
                // The TLS handshake may need to answer before any plaintext exists.
                if tls.wants_write() {
                    let _ = flush_tls(tls, &mut self.socket);
                }
            },
        }
    }

    /// Writes as much pending output as the socket takes. `Err` means the connection
    /// is dead.
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.tls {
            None => {
                let mut written = 0;
                while written < self.wbuf.len() {
                    match self.socket.write(&self.wbuf[written..]) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => written += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                consume_front(&mut self.wbuf, written);
            }
            Some(tls) => {
                loop {
                    if !self.wbuf.is_empty() {
                        let taken = tls.writer().write(&self.wbuf)?;
                        consume_front(&mut self.wbuf, taken);
                    }
                    // Stop when the socket is full or everything has been handed over;
                    // otherwise rustls' buffer was full and is now empty: go again.
                    if !flush_tls(tls, &mut self.socket)? || self.wbuf.is_empty() {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// All output (ours and TLS's) has reached the socket.
    pub fn output_drained(&self) -> bool {
        self.wbuf.is_empty() && self.tls.as_ref().is_none_or(|t| !t.wants_write())
    }

    /// Shuts down the write side once everything queued is out (TLS: close_notify first).
    pub fn shutdown_write(&mut self) {
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            let _ = flush_tls(tls, &mut self.socket);
        }
        let _ = self.socket.shutdown(Shutdown::Write);
        self.write_shut = true;
    }
}

/// Writes TLS records until rustls has none left or the socket would block.
/// Returns whether everything went out.
fn flush_tls(tls: &mut rustls::ServerConnection, socket: &mut TcpStream) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(socket) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Drops the first `n` bytes; the common case (everything written) is a plain clear.
fn consume_front(buf: &mut Vec<u8>, n: usize) {
    if n >= buf.len() {
        buf.clear();
    } else if n > 0 {
        buf.drain(..n);
    }
}
