//! One client connection: its socket, optional TLS, buffers and protocol phase.
//! The byte-moving half (`read_into`, `flush`) lives here; the decisions live in
//! `proto`, `gate` and `worker`.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mio::net::TcpStream;

use super::principal::Principal;
use super::tls::flush_records;
use crate::clock::Tick;
use crate::proto::http::request::HeadReader;
use crate::proto::ws::session::Session;

/// Where a connection is in its life.
pub enum Phase {
    /// Waiting for the complete upgrade request.
    Handshake {
        /// Incremental end-of-head scanner.
        reader: HeadReader,
        /// When the whole request must have arrived.
        deadline: Tick,
    },
    /// Upgraded: frames both ways.
    Open {
        /// The RFC 6455 state machine (64 bytes while idle, held inline).
        session: Session,
        /// Index of the route in the gate.
        route: usize,
    },
    /// Accepted for an upstream route: waiting for the upstream's answer before the
    /// client gets its 101 (SPEC §5).
    Dialing {
        /// Index of the route in the gate.
        route: usize,
    },
    /// The token names a `kid` its provider's set lacks and a fetch is under way (SPEC
    /// §9): the complete request head waits in `rbuf` until the control plane's
    /// `Command::KeysChanged` or the handshake deadline.
    Parked {
        /// Length of the request head at the start of `rbuf`.
        head_len: usize,
        /// The handshake's deadline (`limits.handshake_timeout` from accept).
        deadline: Tick,
    },
    /// An HTTP rejection is queued; flush it, then close.
    Rejected,
}

/// Result of one read attempt.
pub enum ReadOutcome {
    /// `n` plaintext bytes were placed at the start of the buffer. `drained`: the read
    /// came back short, so the kernel's receive queue is empty (TCP) and nothing readable
    /// is left in TLS either; edge-triggered epoll reports whatever arrives later, so the
    /// read that would only say WouldBlock can be skipped.
    Data { n: usize, drained: bool },
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
    pub rbuf: Buf,
    /// Output not yet handed to the socket (plaintext, before TLS).
    pub wbuf: Buf,
    /// The earliest deadline already in the worker's timer heap.
    pub scheduled: Option<Tick>,
    /// No more output will be produced: flush, shut down the write side, drain, close.
    pub closing: bool,
    /// The write side has been shut down; reads are drained and discarded until
    /// EOF or `linger_until`.
    pub write_shut: bool,
    /// The peer sent EOF.
    pub read_eof: bool,
    /// Deadlines only a closing or backpressured connection has (see [`Conn::linger_until`]
    /// and [`Conn::over_limit_since`]): an idle one pays a pointer.
    pub slow: Option<Box<Slow>>,
    /// Any bytes received at all (408 vs silent close at handshake timeout).
    pub received_any: bool,
    /// The verified identity and its token's deadlines, shared with the worker's other
    /// connections of the same token (per-subject count is released when the conn goes).
    pub identity: Option<Arc<Principal>>,
    /// SPEC §6: `wsgate.expiring` was sent for the current token.
    pub notice_sent: bool,
    /// SPEC §6: in-band refreshes that failed on this connection.
    pub failed_refreshes: u32,
    /// The 101 is queued: drop the output buffer's memory once it is written.
    pub release_wbuf_when_flushed: bool,
    /// The upstream leg on proxied routes.
    pub upstream: Option<Box<super::upstream::UpstreamLeg>>,
    /// When the connection was accepted.
    pub accepted_at: Tick,
    /// The connection's id in logs: unique for the process's life (SPEC §7), never
    /// reused like a slab slot is.
    pub serial: u64,
    /// SPEC §10: permessage-deflate agreed at the handshake of a proxied route, held for
    /// the client's 101 (sent once the upstream answers).
    pub deflate: Option<Box<crate::proto::ws::deflate::PerMessageDeflate>>,
}

/// The part of a connection's state that only closing or backpressure needs.
#[derive(Default)]
pub struct Slow {
    /// When to give up waiting for the peer's FIN.
    pub linger_until: Option<Tick>,
    /// Since when pending output has stayed above `write_buffer`.
    pub over_limit_since: Option<Tick>,
}

/// A connection's buffer (issue #15): 8 bytes and no heap while it holds nothing. Its
/// storage is lent from the worker thread's pool when bytes are written into it and given
/// back by [`Buf::release`] once they are gone, so an idle connection holds no buffer and
/// a busy one costs no allocator round trip per message.
#[derive(Default)]
// Boxed on purpose: the handle is one pointer (8 bytes, 24 for a bare `Vec`), and the box
// travels with its vector through the pool, so lending allocates nothing.
#[allow(clippy::box_collection)]
pub struct Buf(Option<Box<Vec<u8>>>);

/// What an absent buffer reads as.
static EMPTY: Vec<u8> = Vec::new();

/// Free buffers a worker thread keeps for its connections.
const POOL_BUFFERS: usize = 32;

/// A buffer with more capacity than this is freed instead of pooled.
const POOL_CAPACITY: usize = 256 * 1024;

thread_local! {
    /// The worker thread's free buffers (each empty, capacity kept).
    #[allow(clippy::vec_box)] // the boxes are `Buf`'s, kept whole (see there)
    static POOL: RefCell<Vec<Box<Vec<u8>>>> = const { RefCell::new(Vec::new()) };
}

impl Buf {
    /// Gives the storage back to the thread's pool if the buffer is empty.
    pub fn release(&mut self) {
        if self.0.as_ref().is_some_and(|b| b.is_empty()) {
            if let Some(buf) = self.0.take() {
                if buf.capacity() <= POOL_CAPACITY {
                    let _ = POOL.try_with(|pool| {
                        let mut pool = pool.borrow_mut();
                        if pool.len() < POOL_BUFFERS {
                            pool.push(buf);
                        }
                    });
                }
            }
        }
    }

    /// Drops the contents and the storage (never pooled: the buffer was large or the
    /// connection is done with it).
    pub fn free(&mut self) {
        self.0 = None;
    }

    /// Whether storage is held.
    pub fn is_held(&self) -> bool {
        self.0.is_some()
    }
}

impl From<Vec<u8>> for Buf {
    fn from(v: Vec<u8>) -> Buf {
        Buf(Some(Box::new(v)))
    }
}

impl Deref for Buf {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        self.0.get_or_insert_with(|| {
            POOL.try_with(|pool| pool.borrow_mut().pop())
                .ok()
                .flatten()
                .unwrap_or_default()
        })
    }
}

/// The next connection id for logs: process-wide, starting at 1, never reused (64 bits
/// do not wrap in the life of a process).
pub fn next_serial() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Conn {
    /// When to give up waiting for the peer's FIN (set once closing).
    pub fn linger_until(&self) -> Option<Tick> {
        self.slow.as_ref().and_then(|s| s.linger_until)
    }

    /// Starts the linger bound at `at` unless one is already running (never extended).
    pub fn start_linger(&mut self, at: Tick) {
        let slow = self.slow.get_or_insert_with(Default::default);
        slow.linger_until.get_or_insert(at);
    }

    /// Since when pending output has stayed above `write_buffer`.
    pub fn over_limit_since(&self) -> Option<Tick> {
        self.slow.as_ref().and_then(|s| s.over_limit_since)
    }

    /// Output is over `write_buffer` at `now`: keeps the earliest such moment.
    pub fn over_limit(&mut self, now: Tick) {
        let slow = self.slow.get_or_insert_with(Default::default);
        slow.over_limit_since.get_or_insert(now);
    }

    /// Output is below `write_buffer` (or the slow-consumer rule has acted).
    pub fn under_limit(&mut self) {
        if let Some(slow) = &mut self.slow {
            slow.over_limit_since = None;
            if slow.linger_until.is_none() {
                self.slow = None;
            }
        }
    }

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
                    Ok(n) => {
                        let drained = n < buf.len();
                        return ReadOutcome::Data { n, drained };
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return ReadOutcome::WouldBlock
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return ReadOutcome::Failed,
                }
            },
            Some(tls) => read_tls_into(tls, &mut self.socket, buf),
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
                if written > 0 {
                    consume_front(&mut self.wbuf, written);
                }
            }
            Some(tls) => {
                loop {
                    if !self.wbuf.is_empty() {
                        let taken = tls.writer().write(&self.wbuf)?;
                        consume_front(&mut self.wbuf, taken);
                    }
                    // Stop when the socket is full or everything has been handed over;
                    // otherwise rustls' buffer was full and is now empty: go again.
                    if !flush_records(tls, &mut self.socket)? || self.wbuf.is_empty() {
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
            let _ = flush_records(tls, &mut self.socket);
        }
        let _ = self.socket.shutdown(Shutdown::Write);
        self.write_shut = true;
    }
}

/// [`Conn::read_into`] on TLS. rustls reads a socket 4 KiB at a time (its deframer's
/// `READ_SIZE`), so one `recv` into the upper half of `buf`, fed to rustls from memory,
/// takes a whole batch of records in one system call where `read_tls` on the socket would
/// take four per 16 KiB. Plaintext is never longer than its records, so what one `recv`
/// brings decrypts into the lower half.
fn read_tls_into(
    tls: &mut rustls::ServerConnection,
    socket: &mut TcpStream,
    buf: &mut [u8],
) -> ReadOutcome {
    let (plain, cipher) = buf.split_at_mut(buf.len() / 2);
    // The socket's last read in this call came back short: its queue is empty.
    let mut socket_drained = false;
    loop {
        // Plaintext already decrypted comes first.
        match tls.reader().read(plain) {
            Ok(0) => return ReadOutcome::Eof,
            Ok(n) => {
                // `n < plain.len()`: rustls' plaintext is used up, and what it still holds
                // of records is at most an incomplete one.
                let drained = socket_drained && n < plain.len();
                return ReadOutcome::Data { n, drained };
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if socket_drained {
                    // Only part of a record arrived: the rest is a new event.
                    return ReadOutcome::WouldBlock;
                }
            }
            Err(_) => return ReadOutcome::Failed,
        }
        let got = match socket.read(cipher) {
            Ok(0) => return ReadOutcome::Eof,
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return ReadOutcome::Failed,
        };
        socket_drained = got < cipher.len();
        let mut fed = cipher.get(..got).unwrap_or_default();
        let mut n = 0;
        while !fed.is_empty() {
            match tls.read_tls(&mut fed) {
                Ok(0) => break, // close_notify came: rustls takes nothing more
                Ok(_) => {}
                Err(_) => return ReadOutcome::Failed,
            }
            if tls.process_new_packets().is_err() {
                // Send the alert rustls queued, best effort, then give up.
                let _ = tls.write_tls(socket);
                return ReadOutcome::Failed;
            }
            // The TLS handshake may need to answer before any plaintext exists.
            if tls.wants_write() {
                let _ = flush_records(tls, socket);
            }
            // Take the plaintext out as it comes, so rustls' received-plaintext limit
            // never refuses the rest of the batch.
            while let Some(room) = plain.get_mut(n..).filter(|r| !r.is_empty()) {
                match tls.reader().read(room) {
                    Ok(k) if k > 0 => n += k,
                    _ => break,
                }
            }
        }
        if n > 0 {
            // (`plain` is never filled by one batch; if it were, rustls would hold more.)
            let drained = socket_drained && n < plain.len();
            return ReadOutcome::Data { n, drained };
        }
        // Handshake records or part of a record only: look again (above).
    }
}

/// Drops the first `n` bytes; the common case (everything written) is a plain clear.
fn consume_front(buf: &mut Vec<u8>, n: usize) {
    if n >= buf.len() {
        buf.clear();
    } else if n > 0 {
        buf.drain(..n);
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::*;
    use crate::net::token::ConnId;
    use crate::proto::ws::session::Session;

    /// Issue #15: where an idle connection's bytes go (printed with `--nocapture`), and
    /// bounds so that a field added carelessly shows up here first. mio's `TcpStream`
    /// carries a selector id in debug builds (16 bytes instead of 4).
    #[test]
    fn an_idle_connection_in_bytes() {
        let conn = size_of::<Conn>();
        let rows = [
            ("Conn (in the slab slot, with its 4-byte generation)", conn),
            (
                "  Phase (Open: the Session inline, and the route)",
                size_of::<Phase>(),
            ),
            ("  Session", size_of::<Session>()),
            ("  mio TcpStream", size_of::<TcpStream>()),
            ("  peer SocketAddr", size_of::<SocketAddr>()),
            ("  rbuf / wbuf (Buf)", size_of::<Buf>()),
            (
                "  Option<Tick> (scheduled; accepted_at is a Tick)",
                size_of::<Option<Tick>>(),
            ),
            (
                "  identity Option<Arc<Principal>>",
                size_of::<Option<Arc<Principal>>>(),
            ),
            (
                "  slow Option<Box<Slow>> (linger, backpressure)",
                size_of::<Option<Box<Slow>>>(),
            ),
            (
                "timer heap entry (Tick, ConnId)",
                size_of::<(Tick, ConnId)>(),
            ),
            (
                "token record (shared by a token's connections)",
                size_of::<Principal>(),
            ),
        ];
        for (what, bytes) in rows {
            println!("{what}: {bytes} B");
        }
        assert_eq!(size_of::<Session>(), 72);
        assert_eq!(size_of::<Phase>(), 80);
        assert_eq!(size_of::<Buf>(), 8);
        assert_eq!(size_of::<Option<Tick>>(), 8);
        assert_eq!(size_of::<(Tick, ConnId)>(), 16);
        let bound = if cfg!(debug_assertions) { 224 } else { 208 };
        assert!(conn <= bound, "Conn is {conn} bytes (bound {bound})");
    }

    #[test]
    fn buffers_are_lent_and_given_back_empty() {
        let mut buf = Buf::default();
        assert!(!buf.is_held() && buf.is_empty());
        buf.extend_from_slice(b"bytes in flight");
        assert!(buf.is_held());
        // Not empty: kept.
        buf.release();
        assert!(buf.is_held());
        buf.clear();
        let capacity = buf.capacity();
        buf.release();
        assert!(!buf.is_held(), "an empty buffer goes back to the pool");
        // The next one written to on this thread reuses its storage.
        let mut next = Buf::default();
        next.push(1);
        assert_eq!(next.capacity(), capacity);
        next.free();
        assert!(!next.is_held());
    }
}
