//! The acceptor: one thread, one `Poll`, every listener. It accepts until WouldBlock,
//! counts the connection (process-wide and per IP, SPEC §4: "per_ip_connections counts a
//! connection from its accept"), and hands the socket to the next worker round-robin
//! over a crossbeam channel, waking that worker's poll once per batch.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use super::worker::{Command, Shared, WorkerHandle};
use crate::clock;
use crate::error;

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
                    let _ = socket.set_nodelay(true);
                    self.shared.open.fetch_add(1, Ordering::Relaxed);
                    self.shared.ips.connection_opened(peer.ip(), clock::now());
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
                Err(e) => {
                    error!("acceptor: accept failed: {e}; retrying shortly");
                    return true;
                }
            }
        }
    }
}
