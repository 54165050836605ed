//! Accepting, on every worker: each worker owns one listening socket per `server.listen`
//! address, all bound with `SO_REUSEPORT`, so the kernel spreads new connections over the
//! workers and no thread hands sockets to another (no channel, no wake-up per batch). A
//! worker accepts until WouldBlock (at most [`ACCEPT_BATCH`] per turn), counts the
//! connection (process-wide and per IP, SPEC §4: "per_ip_connections counts a connection
//! from its accept"; both counts are shared by all workers: `Shared.open` is raised with a
//! compare-and-swap below the cap, the per-IP table is one sharded table) and takes it on.
//!
//! SPEC §4, at accept, before a byte is read: a connection past `max_connections` or
//! `per_ip_connections` is closed at once, without a response. At the process's
//! file-descriptor limit (EMFILE, or ENFILE for the system's) the pending connection
//! would stay in the backlog and every readiness report would fail the same way; each
//! worker keeps one descriptor in reserve (libuv's and nginx's "EMFILE trick"): it
//! closes the reserve, accepts and closes one pending connection, and reopens the
//! reserve, so each pending connection costs one accept and the loop ends at
//! WouldBlock. When even that fails, it retries after `ACCEPT_RETRY` instead of spinning.
//!
//! Linux lets only sockets of the same effective user join a `SO_REUSEPORT` group, so
//! another user's process cannot take a share of the connections.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};

use super::worker::Shared;
use crate::clock;
use crate::{error, warn};

/// After a failed accept (EMFILE, ENFILE, ENOMEM) retry after this long instead of
/// spinning; the pending connections stay in the kernel's backlog meanwhile.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Connections one listener hands over per loop turn before the worker's other
/// connections get theirs (fairness under a connection flood); the rest wait for the
/// next turn, which then does not block in poll.
pub const ACCEPT_BATCH: usize = 128;

/// Binds a non-blocking listener with SO_REUSEADDR, SO_REUSEPORT (each worker binds its
/// own socket to the same address), TCP_NODELAY (Linux copies it to every accepted socket:
/// one `setsockopt` per connection saved) and a deep backlog.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nodelay(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// What [`Accept::next`] found on a listener.
pub enum Accepted {
    /// A connection, counted against the caps: the worker owns it (and its counts) now.
    Conn(TcpStream, SocketAddr),
    /// Nothing pending (WouldBlock): the next readiness edge brings more.
    Drained,
    /// Come back to this listener on the next turn without waiting for an edge: the
    /// batch is used up, or an accept failed and is retried after [`ACCEPT_RETRY`].
    Later,
}

/// One worker's listening sockets and their accept state.
pub struct Accept {
    /// One per `server.listen` address (dropped when the worker drains).
    pub listeners: Vec<TcpListener>,
    /// A descriptor held in reserve for accepting-and-closing at the fd limit.
    reserve: Option<File>,
    /// When the last "descriptor limit" warning was logged (one a second at most).
    warned_at: Option<Instant>,
    /// Connections handed over in this turn, per listener.
    taken: Vec<usize>,
    /// Listeners to come back to on the next turn, and from when (a failed accept
    /// waits [`ACCEPT_RETRY`]; a used-up batch does not wait).
    pub again: Vec<Option<Instant>>,
}

/// Opens the reserve descriptor.
fn open_reserve() -> Option<File> {
    File::open("/dev/null").ok()
}

/// EMFILE (process) or ENFILE (system): out of file descriptors.
fn out_of_descriptors(e: &io::Error) -> bool {
    // Linux errno values: ENFILE 23, EMFILE 24.
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// SPEC §4: counts a connection from `peer` if neither cap is reached; false = close it
/// at once, uncounted. Shared by all workers: `open` only ever rises below the cap (one
/// compare-and-swap), so concurrent accepts on several workers cannot pass it together.
fn admit(shared: &Shared, peer: &SocketAddr) -> bool {
    let max = shared.max_connections.load(Ordering::Relaxed);
    if shared
        .open
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .is_err()
    {
        return false;
    }
    if !shared.ips.try_connection_opened(peer.ip(), clock::now()) {
        shared.open.fetch_sub(1, Ordering::Relaxed);
        return false;
    }
    true
}

impl Accept {
    /// The worker's listeners (registered by the worker).
    pub fn new(listeners: Vec<TcpListener>) -> Accept {
        let n = listeners.len();
        Accept {
            listeners,
            reserve: open_reserve(),
            warned_at: None,
            taken: vec![0; n],
            again: vec![None; n],
        }
    }

    /// A new loop turn: every listener gets a fresh batch.
    pub fn new_turn(&mut self) {
        self.taken.iter_mut().for_each(|t| *t = 0);
        if self.reserve.is_none() {
            self.reserve = open_reserve();
        }
    }

    /// Stops accepting: the listening sockets close, so new connection attempts go to
    /// the other workers' sockets, or are refused by the kernel once all are closed.
    pub fn close(&mut self) {
        self.listeners.clear();
        self.taken.clear();
        self.again.clear();
    }

    /// The next connection on listener `i` that passes the caps of SPEC §4 (those past a
    /// cap are closed here, without a byte read or written).
    pub fn next(&mut self, i: usize, shared: &Shared) -> Accepted {
        if i >= self.listeners.len() {
            return Accepted::Drained;
        }
        loop {
            if self.taken[i] >= ACCEPT_BATCH {
                self.again[i] = Some(clock::now());
                return Accepted::Later;
            }
            match self.listeners[i].accept() {
                Ok((socket, peer)) => {
                    self.taken[i] += 1;
                    if !admit(shared, &peer) {
                        drop(socket);
                        continue;
                    }
                    // TCP_NODELAY comes from the listener (see `bind`).
                    return Accepted::Conn(socket, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Accepted::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) if out_of_descriptors(&e) && self.reserve.is_some() => {
                    self.warn_limit(&e);
                    // Free the reserve, take one pending connection and close it.
                    self.reserve = None;
                    let taken = self.listeners[i].accept();
                    // The accepted socket is closed before the reserve is reopened in
                    // its place.
                    let retry = match taken {
                        Ok((socket, _)) => {
                            drop(socket);
                            None
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
                        Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => None,
                        // Still failing (another thread took the descriptor): wait.
                        Err(_) => Some(true),
                    };
                    self.reserve = open_reserve();
                    match retry {
                        None => self.taken[i] += 1,
                        Some(false) => return Accepted::Drained,
                        Some(true) => return self.retry(i),
                    }
                }
                Err(e) if out_of_descriptors(&e) => {
                    // No reserve (it could not be reopened): wait rather than spin.
                    self.warn_limit(&e);
                    return self.retry(i);
                }
                Err(e) => {
                    error!("accept failed: {e}; retrying shortly");
                    return self.retry(i);
                }
            }
        }
    }

    fn retry(&mut self, i: usize) -> Accepted {
        self.again[i] = Some(clock::now() + ACCEPT_RETRY);
        Accepted::Later
    }

    /// Logs that the descriptor limit was hit, at most once a second.
    fn warn_limit(&mut self, e: &io::Error) {
        let now = clock::now();
        if self
            .warned_at
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            self.warned_at = Some(now);
            warn!("{e}: at the file-descriptor limit, closing new connections at once (raise `ulimit -n`)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_sockets_inherit_nodelay_and_siblings_share_the_port() {
        let first = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = first.local_addr().expect("addr");
        // A second worker's socket on the same address (SO_REUSEPORT).
        let second = bind(addr).expect("sibling bind");
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        // A loopback connect is in one of the two backlogs once `connect` returns.
        let accepted = first
            .accept()
            .or_else(|_| second.accept())
            .map(|(s, _)| s)
            .expect("the connection waits on one of the two sockets");
        assert!(accepted.nodelay().expect("nodelay"));
    }
}
