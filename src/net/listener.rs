//! The acceptor: one thread, one `Poll`, every listener. It accepts until WouldBlock,
//! counts the connection (process-wide and per IP, SPEC §4: "per_ip_connections counts a
//! connection from its accept"), and hands the socket to the next worker round-robin
//! over a crossbeam channel, waking that worker's poll once per batch.
//!
//! SPEC §4, at accept, before a byte is read: a connection past `max_connections` or
//! `per_ip_connections` is closed at once, without a response. At the process's
//! file-descriptor limit (EMFILE, or ENFILE for the system's) the pending connection
//! would stay in the backlog and every readiness report would fail the same way; the
//! acceptor keeps one descriptor in reserve (libuv's and nginx's "EMFILE trick"): it
//! closes the reserve, accepts and closes one pending connection, and reopens the
//! reserve, so each pending connection costs one accept and the loop ends at
//! WouldBlock. When even that fails, it waits `ACCEPT_RETRY` instead of spinning.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use super::worker::{Command, Shared, WorkerHandle};
use crate::clock;
use crate::{error, warn};

/// Token of the acceptor's stop waker.
const STOP: Token = Token(usize::MAX);
/// After a failed accept (EMFILE, ENFILE, ENOMEM) retry after this long instead of
/// spinning; the pending connections stay in the kernel's backlog meanwhile.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Binds a non-blocking listener with SO_REUSEADDR and a deep backlog.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// The accepting thread's state.
pub struct Acceptor {
    poll: Poll,
    listeners: Vec<TcpListener>,
    workers: Vec<WorkerHandle>,
    shared: Arc<Shared>,
    next: usize,
    /// A descriptor held in reserve for accepting-and-closing at the fd limit.
    reserve: Option<File>,
    /// When the last "descriptor limit" warning was logged (one a second at most).
    warned_at: Option<std::time::Instant>,
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

impl Acceptor {
    /// Registers the listeners; returns the acceptor and the waker that stops it.
    pub fn new(
        mut listeners: Vec<TcpListener>,
        workers: Vec<WorkerHandle>,
        shared: Arc<Shared>,
    ) -> io::Result<(Acceptor, Arc<Waker>)> {
        let poll = Poll::new()?;
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry().register(l, Token(i), Interest::READABLE)?;
        }
        let stop = Arc::new(Waker::new(poll.registry(), STOP)?);
        Ok((
            Acceptor {
                poll,
                listeners,
                workers,
                shared,
                next: 0,
                reserve: open_reserve(),
                warned_at: None,
            },
            stop,
        ))
    }

    /// Accepts until stopped through the waker; then the listeners close, so new
    /// connection attempts are refused by the kernel.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let mut retry = false;
        let mut woken = vec![false; self.workers.len()];
        loop {
            let timeout = retry.then_some(ACCEPT_RETRY);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("acceptor: poll failed: {e}");
                return;
            }
            if events.iter().any(|e| e.token() == STOP) {
                return;
            }
            retry = false;
            if self.reserve.is_none() {
                self.reserve = open_reserve();
            }
            // Edge-triggered: every listener is drained whether or not it was named.
            for i in 0..self.listeners.len() {
                retry |= self.accept_all(i, &mut woken);
            }
            for (w, flag) in woken.iter_mut().enumerate() {
                if std::mem::take(flag) {
                    let _ = self.workers[w].waker.wake();
                }
            }
        }
    }

    /// Accepts everything pending on listener `i`. Returns true if it must be retried.
    fn accept_all(&mut self, i: usize, woken: &mut [bool]) -> bool {
        loop {
            match self.listeners[i].accept() {
                Ok((socket, peer)) => {
                    // SPEC §4: the caps apply at accept; past either the socket is closed
                    // at once (dropped), no byte read or written.
                    let max = self.shared.max_connections.load(Ordering::Relaxed);
                    if self.shared.open.load(Ordering::Relaxed) >= max {
                        drop(socket);
                        continue;
                    }
                    if !self
                        .shared
                        .ips
                        .try_connection_opened(peer.ip(), clock::now())
                    {
                        drop(socket);
                        continue;
                    }
                    let _ = socket.set_nodelay(true);
                    self.shared.open.fetch_add(1, Ordering::Relaxed);
                    let w = self.next % self.workers.len();
                    self.next = self.next.wrapping_add(1);
                    if self.workers[w]
                        .tx
                        .send(Command::Conn(socket, peer))
                        .is_err()
                    {
                        // That worker is gone (shutting down): undo the counts.
                        self.shared.open.fetch_sub(1, Ordering::Relaxed);
                        self.shared.ips.connection_closed(peer.ip(), clock::now());
                        continue;
                    }
                    woken[w] = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) if out_of_descriptors(&e) && self.reserve.is_some() => {
                    self.warn_limit(&e);
                    // Free the reserve, take one pending connection and close it.
                    self.reserve = None;
                    let taken = self.listeners[i].accept();
                    // The accepted socket is closed before the reserve is reopened in
                    // its place.
                    let done = match taken {
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
                    if let Some(retry) = done {
                        return retry;
                    }
                }
                Err(e) if out_of_descriptors(&e) => {
                    // No reserve (it could not be reopened): wait rather than spin.
                    self.warn_limit(&e);
                    return true;
                }
                Err(e) => {
                    error!("acceptor: accept failed: {e}; retrying shortly");
                    return true;
                }
            }
        }
    }
}

impl Acceptor {
    /// Logs that the descriptor limit was hit, at most once a second.
    fn warn_limit(&mut self, e: &io::Error) {
        let now = clock::now();
        if self
            .warned_at
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            self.warned_at = Some(now);
            warn!("acceptor: {e}: at the file-descriptor limit, closing new connections at once (raise `ulimit -n`)");
        }
    }
}
