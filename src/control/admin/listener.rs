//! The admin listener's I/O: HTTP/1.1 by hyper on the control plane's tokio runtime, around
//! the pure route table ([`super::handle`]).
//!
//! The listener belongs on loopback or a private network, but it must keep answering
//! `/healthz`, `/readyz` and an authorised `POST /revoke` whoever else connects, even one
//! address holding hundreds of idle connections. Every bound is a field of [`Limits`]:
//!
//! - **one request per connection**: every answer carries `Connection: close`, so no idle
//!   keep-alive connection outlives its answer;
//! - **header read timeout** ([`HEADER_READ_TIMEOUT`]): a connection that has not sent a
//!   whole request head by then is closed (hyper's `header_read_timeout`, tokio timer);
//! - **head and body sizes**: a head over [`MAX_HEAD_BYTES`] or with more than
//!   [`MAX_HEADERS`] fields is 431; a body over [`MAX_BODY_BYTES`] is 413, from its
//!   `Content-Length` before any of it is read, or as soon as a chunked body passes it;
//!   a body not received within [`BODY_TIMEOUT`] is 408;
//! - **connection caps**: at most [`PER_PEER_CONNECTIONS`] per client address (IPv6: per
//!   /64) and [`MAX_CONNECTIONS`] in all. A new connection over a cap takes the place of
//!   the oldest *idle* one (accepted, request head not yet complete) of the same address,
//!   or for the global cap of any address; that one is closed without an answer. Only when
//!   every connection in the way is busy with a request is the new one refused, with 503
//!   and `Retry-After: 1`. So a flood of idle connections only ever displaces its own kind:
//!   a prompt request is served from any address, the flooding one included, and a busy
//!   connection is itself bounded by [`CONNECTION_TIMEOUT`];
//! - **no work on the runtime's thread that blocks**: token checks and revocations (fsync,
//!   the workers' replies) run on the blocking pool; a panic there costs its request a 500.
//!
//! Token before body: a `POST /revoke` has its bearer token checked before its body is
//! read, so an unauthenticated client cannot make the listener wait for a body.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv6Addr, Shutdown, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, Notify};

use super::{handle, refused, revoked, AdminBackend, AdminRequest, AdminResponse, TEXT};
use crate::proto::http::fields::trim_ows;

/// A request head must be complete this long after the connection is accepted.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A `POST /revoke` body must be complete this long after its head.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// The most a connection lives from its accept, answer and linger included: the bound on a
/// busy connection (a request being answered cannot be displaced by a new connection).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(15);

/// Longest request head (request line and header lines); more is 431.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Most header lines a request may carry; more is 431.
pub const MAX_HEADERS: usize = 32;

/// Longest request body; more is 413. A revocation is a few hundred bytes of JSON.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Connections one client address (IPv6: one /64) may hold at once.
pub const PER_PEER_CONNECTIONS: usize = 16;

/// Connections the admin listener holds at once, all addresses together.
pub const MAX_CONNECTIONS: usize = 256;

/// Connections the kernel may queue for `accept`.
const BACKLOG: u32 = 1024;

/// After answering, how long input is drained before closing (so that closing over unread
/// input, such as the rest of a refused body, does not reset the connection before the
/// client has read the answer).
const LINGER: Duration = Duration::from_millis(250);

/// Most bytes drained after answering.
const LINGER_BYTES: usize = 128 * 1024;

/// Pause after an accept error such as EMFILE, instead of spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The whole answer to a connection refused at accept (every connection in the way busy).
const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 20\r\nConnection: close\r\nCache-Control: no-store\r\nRetry-After: 1\r\n\r\n\
admin listener busy\n";

/// The admin listener's bounds (module docs); [`Limits::DEFAULT`] is what `serve` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// See [`BODY_TIMEOUT`].
    pub body_timeout: Duration,
    /// See [`CONNECTION_TIMEOUT`].
    pub connection_timeout: Duration,
    /// See [`MAX_HEAD_BYTES`].
    pub max_head_bytes: usize,
    /// See [`MAX_HEADERS`].
    pub max_headers: usize,
    /// See [`MAX_BODY_BYTES`].
    pub max_body_bytes: usize,
    /// See [`PER_PEER_CONNECTIONS`].
    pub per_peer_connections: usize,
    /// See [`MAX_CONNECTIONS`].
    pub max_connections: usize,
}

impl Limits {
    /// The limits of the module docs.
    pub const DEFAULT: Limits = Limits {
        header_read_timeout: HEADER_READ_TIMEOUT,
        body_timeout: BODY_TIMEOUT,
        connection_timeout: CONNECTION_TIMEOUT,
        max_head_bytes: MAX_HEAD_BYTES,
        max_headers: MAX_HEADERS,
        max_body_bytes: MAX_BODY_BYTES,
        per_peer_connections: PER_PEER_CONNECTIONS,
        max_connections: MAX_CONNECTIONS,
    };
}

/// Binds the admin listener on `addr` (port 0: any free port). Must run in the context of
/// the tokio runtime that will serve it.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As std's `TcpListener::bind` does on Unix: a restart can bind at once over the old
    // process's connections in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Serves `listener` until `stop` fires (or its sender is dropped). Connections still open
/// then end with the runtime.
pub async fn serve(
    listener: TcpListener,
    backend: Arc<dyn AdminBackend>,
    limits: Limits,
    mut stop: oneshot::Receiver<()>,
) {
    let table = Arc::new(Mutex::new(Table::default()));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(false)
        .max_headers(limits.max_headers)
        .max_header_size(limits.max_head_bytes)
        // hyper's floor for its read buffer is 8 KiB; the head limit is `max_header_size`.
        .max_buf_size((2 * limits.max_head_bytes).max(8 * 1024))
        .title_case_headers(true);
    let http = Arc::new(http);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut stop => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let admitted = lock(&table).admit(
                    peer_key(peer.ip()),
                    limits.per_peer_connections,
                    limits.max_connections,
                );
                match admitted {
                    Some(slot) => {
                        tokio::spawn(connection(
                            stream,
                            slot,
                            Arc::clone(&table),
                            Arc::clone(&http),
                            Arc::clone(&backend),
                            limits,
                        ));
                    }
                    // A fresh socket's send buffer takes this small answer whole; a
                    // non-blocking write gives up otherwise.
                    None => {
                        let _ = stream.try_write(BUSY);
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) => {}
            // EMFILE, ENFILE, ENOBUFS...: resources may come back; wait rather than spin.
            Err(_) => {
                tokio::select! {
                    biased;
                    _ = &mut stop => return,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

/// One connection, from its admission to its close: one request, one answer, a short
/// linger; ended early when a newer connection takes its place while it is idle.
async fn connection(
    stream: TcpStream,
    slot: Slot,
    table: Arc<Mutex<Table>>,
    http: Arc<http1::Builder>,
    backend: Arc<dyn AdminBackend>,
    limits: Limits,
) {
    let _release = Release {
        table,
        key: slot.key,
        id: slot.id,
    };
    let _ = stream.set_nodelay(true);
    let state = Arc::clone(&slot.state);
    let service = service_fn(move |request| {
        respond(request, Arc::clone(&backend), Arc::clone(&state), limits)
    });
    let served = async {
        // `without_shutdown`: once the answer is written, the socket comes back for the
        // linger instead of being closed over unread input.
        let parts = http
            .serve_connection(TokioIo::new(stream), service)
            .without_shutdown()
            .await;
        if let Ok(parts) = parts {
            linger(parts.io.into_inner()).await;
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(limits.connection_timeout, served) => {}
        () = slot.state.evict.notified() => {}
    }
}

/// Answers one request.
async fn respond(
    request: Request<Incoming>,
    backend: Arc<dyn AdminBackend>,
    state: Arc<ConnState>,
    limits: Limits,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // The head is complete: from now on this connection is busy, not idle.
    state.busy.store(true, Ordering::Relaxed);
    let (parts, body) = request.into_parts();
    let method = parts.method.as_str();
    let path = parts.uri.path();
    let answer = match head_fields(parts.version, &parts.headers) {
        Err(e) => e.answer(),
        Ok(bearer) if method == "POST" && path == "/revoke" => {
            revoke(&parts.headers, bearer, body, backend, limits).await
        }
        Ok(bearer) => {
            // No other route reads a body; what the client sent is drained by the linger.
            let request = AdminRequest {
                method,
                path,
                bearer: bearer.as_deref(),
                body: &[],
            };
            // A panicking backend costs this request a 500, not the listener.
            catch_unwind(AssertUnwindSafe(|| handle(&request, &*backend)))
                .unwrap_or_else(|_| internal_error())
        }
    };
    Ok(render(answer))
}

/// `POST /revoke`: framing, then the token (on the blocking pool), then the body, then the
/// revocation (on the blocking pool).
async fn revoke(
    headers: &HeaderMap,
    bearer: Option<Vec<u8>>,
    body: Incoming,
    backend: Arc<dyn AdminBackend>,
    limits: Limits,
) -> AdminResponse {
    if let Err(e) = body_framing(headers, limits.max_body_bytes) {
        return e.answer();
    }
    let had_token = bearer.is_some();
    let checker = Arc::clone(&backend);
    match blocking(move || checker.authorize(bearer.as_deref())).await {
        None => return internal_error(),
        Some(Err(failure)) => return refused(failure, had_token),
        Some(Ok(())) => {}
    }
    let body = match read_body(body, &limits).await {
        Ok(body) => body,
        Err(e) => return e.answer(),
    };
    match blocking(move || backend.revoke(&body)).await {
        None => internal_error(),
        Some(outcome) => revoked(outcome),
    }
}

/// Runs `work` on the runtime's blocking pool; `None` when it panicked.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(work).await.ok()
}

/// Reads a whole body of at most `limits.max_body_bytes`, within `limits.body_timeout`.
async fn read_body(body: Incoming, limits: &Limits) -> Result<Bytes, HttpError> {
    let collected = tokio::time::timeout(
        limits.body_timeout,
        Limited::new(body, limits.max_body_bytes).collect(),
    )
    .await;
    match collected {
        Err(_) => Err(HttpError::BodyTimeout),
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(HttpError::BodyTooLarge),
        // The client closed or broke the framing mid-body.
        Ok(Err(_)) => Err(HttpError::IncompleteBody),
    }
}

/// Reads and discards what the client still sends, until it closes, [`LINGER`] passes or
/// [`LINGER_BYTES`] were read, after telling it the answer is complete (FIN).
async fn linger(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).shutdown(Shutdown::Write);
    let drain = async {
        let mut chunk = [0u8; 8 * 1024];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => drained += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// An answer as a hyper response: `Content-Type`, `Connection: close`,
/// `Cache-Control: no-store`, the extra headers (hyper adds `Content-Length` and `Date`,
/// and leaves the content out of an answer to HEAD, RFC 9110 §9.3.2).
fn render(answer: AdminResponse) -> Response<Full<Bytes>> {
    let (status, extra, body, content_type) = answer;
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    // Health, readiness and metrics answers are live values; revocation answers are private.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (name, value) in extra {
        // A value with a control character (none of ours has one) is left out whole.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::try_from(value),
        ) {
            headers.append(name, value);
        }
    }
    response
}

/// The answer when the backend panicked.
fn internal_error() -> AdminResponse {
    (500, Vec::new(), b"internal error\n".to_vec(), TEXT)
}

/// Why a request is refused before the route table sees it; each knows its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HttpError {
    /// An HTTP/1.1 request without a `Host` header.
    MissingHost,
    /// More than one `Host` header.
    RepeatedHost,
    /// More than one `Authorization` header.
    RepeatedAuthorization,
    /// A POST without `Content-Length` or a chunked body.
    LengthRequired,
    /// A body over the limit.
    BodyTooLarge,
    /// The body did not arrive in time.
    BodyTimeout,
    /// The client stopped before the end of its body.
    IncompleteBody,
}

impl HttpError {
    /// The status, and the short fixed text of the body.
    fn status_and_reason(self) -> (u16, &'static str) {
        match self {
            // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to
            // any HTTP/1.1 request message that lacks a Host header field and to any
            // request message that contains more than one Host header field line".
            HttpError::MissingHost => (400, "missing Host header"),
            HttpError::RepeatedHost => (400, "more than one Host header"),
            HttpError::RepeatedAuthorization => (400, "more than one Authorization header"),
            // RFC 9110 §15.5.12: 411 asks for a `Content-Length`.
            HttpError::LengthRequired => (411, "POST needs a Content-Length"),
            // RFC 9110 §15.5.14.
            HttpError::BodyTooLarge => (413, "request body too large (at most 64 KiB)"),
            // RFC 9110 §15.5.9.
            HttpError::BodyTimeout => (408, "request timeout"),
            HttpError::IncompleteBody => (400, "incomplete request"),
        }
    }

    fn answer(self) -> AdminResponse {
        let (status, reason) = self.status_and_reason();
        (status, Vec::new(), format!("{reason}\n").into_bytes(), TEXT)
    }
}

/// Checks `Host` and returns the bearer token of the one `Authorization` header, if any.
fn head_fields(version: Version, headers: &HeaderMap) -> Result<Option<Vec<u8>>, HttpError> {
    match headers.get_all(header::HOST).iter().count() {
        0 if version == Version::HTTP_11 => return Err(HttpError::MissingHost),
        0 | 1 => {}
        _ => return Err(HttpError::RepeatedHost),
    }
    let mut authorizations = headers.get_all(header::AUTHORIZATION).iter();
    let Some(authorization) = authorizations.next() else {
        return Ok(None);
    };
    if authorizations.next().is_some() {
        return Err(HttpError::RepeatedAuthorization);
    }
    Ok(bearer(authorization.as_bytes()).map(<[u8]>::to_vec))
}

/// The token of an `Authorization` value, when it is `Bearer <token>`.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    // RFC 6750 §2.1: `credentials = "Bearer" 1*SP b64token`; RFC 9110 §11.1: the scheme is
    // case-insensitive. Another scheme, or no token, is "no bearer token" (then 401).
    let value = trim_ows(value);
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let token = trim_ows(rest);
    (!token.is_empty()).then_some(token)
}

/// A `POST` body must be framed (hyper has already refused an invalid `Content-Length`, a
/// transfer coding other than chunked, and decided between the two, RFC 9112 §6.3), and a
/// declared length must fit the limit.
fn body_framing(headers: &HeaderMap, max_body_bytes: usize) -> Result<(), HttpError> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Ok(());
    }
    let Some(length) = headers.get(header::CONTENT_LENGTH) else {
        // RFC 9112 §6.3 (7): without Transfer-Encoding or Content-Length a request has no
        // body; a POST is how a body is sent here, so ask for its length.
        return Err(HttpError::LengthRequired);
    };
    // hyper accepted it as `1*DIGIT`; one too large for u64 is too large for us as well.
    let fits = std::str::from_utf8(length.as_bytes())
        .ok()
        .and_then(|digits| digits.parse::<u64>().ok())
        .is_some_and(|length| length <= max_body_bytes as u64);
    if fits {
        Ok(())
    } else {
        Err(HttpError::BodyTooLarge)
    }
}

/// The address a connection counts against: IPv4 as is (IPv4-mapped IPv6 included), IPv6
/// by its /64, which one client usually holds whole.
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !(u128::from(u64::MAX));
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    // Nothing panics while holding it; a poisoned table is still consistent.
    table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the accept loop and a connection's task share about that connection.
#[derive(Debug, Default)]
struct ConnState {
    /// The request head is complete: the connection may no longer be displaced.
    busy: AtomicBool,
    /// Fired when a newer connection takes this idle one's place.
    evict: Notify,
}

/// An admitted connection.
struct Slot {
    id: u64,
    key: IpAddr,
    state: Arc<ConnState>,
}

/// Removes the connection from the table when its task ends, however it ends.
struct Release {
    table: Arc<Mutex<Table>>,
    key: IpAddr,
    id: u64,
}

impl Drop for Release {
    fn drop(&mut self) {
        lock(&self.table).release(self.key, self.id);
    }
}

/// The open admin connections by address, each address's in the order they were accepted.
/// Bounded: at most `max_connections` entries over at most as many addresses.
#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    total: usize,
    peers: HashMap<IpAddr, Vec<(u64, Arc<ConnState>)>>,
}

impl Table {
    /// Admits a connection from `key`, displacing an idle one when a cap is reached; `None`
    /// when every connection in the way is busy.
    fn admit(&mut self, key: IpAddr, per_peer: usize, max: usize) -> Option<Slot> {
        let held = self.peers.get(&key).map_or(0, Vec::len);
        let room = if held >= per_peer {
            self.evict_oldest_idle(Some(key))
        } else if self.total >= max {
            self.evict_oldest_idle(None)
        } else {
            true
        };
        if !room {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        let state = Arc::new(ConnState::default());
        self.peers
            .entry(key)
            .or_default()
            .push((id, Arc::clone(&state)));
        self.total += 1;
        Some(Slot { id, key, state })
    }

    /// Removes the oldest idle connection (of `only`, or of any address) from the table and
    /// tells its task to close it; false when there is none.
    fn evict_oldest_idle(&mut self, only: Option<IpAddr>) -> bool {
        let mut oldest: Option<(IpAddr, u64)> = None;
        for (key, entries) in &self.peers {
            if only.is_some_and(|only| only != *key) {
                continue;
            }
            // Each address's entries are in admission order: its first idle one is its oldest.
            let first_idle = entries
                .iter()
                .find(|(_, state)| !state.busy.load(Ordering::Relaxed));
            if let Some((id, _)) = first_idle {
                if oldest.is_none_or(|(_, oldest_id)| *id < oldest_id) {
                    oldest = Some((*key, *id));
                }
            }
        }
        let Some((key, id)) = oldest else {
            return false;
        };
        if let Some(state) = self.release(key, id) {
            // A permit is stored if the task is not waiting yet: it ends at its first poll.
            state.evict.notify_one();
        }
        true
    }

    /// Forgets connection `id` of `key`; returns its state if it was still there.
    fn release(&mut self, key: IpAddr, id: u64) -> Option<Arc<ConnState>> {
        let entries = self.peers.get_mut(&key)?;
        let index = entries.iter().position(|(entry, _)| *entry == id)?;
        let (_, state) = entries.remove(index);
        if entries.is_empty() {
            self.peers.remove(&key);
        }
        self.total -= 1;
        Some(state)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{Fake, ADMIN_TOKEN};
    use super::*;
    use crate::clock;
    use std::io::{Read, Write};
    use std::net::Ipv4Addr;
    use std::thread;

    /// A listener on its own current-thread runtime, as `serve` runs it.
    struct Server {
        addr: SocketAddr,
        stop: Option<oneshot::Sender<()>>,
        join: Option<thread::JoinHandle<()>>,
    }

    impl Server {
        fn start(fake: &Arc<Fake>, limits: Limits) -> Server {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("runtime: {e}"));
            let listener = {
                let _context = runtime.enter();
                bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                    .unwrap_or_else(|e| panic!("bind: {e}"))
            };
            let addr = listener
                .local_addr()
                .unwrap_or_else(|e| panic!("local_addr: {e}"));
            let (stop, stopped) = oneshot::channel();
            let backend: Arc<dyn AdminBackend> = Arc::clone(fake) as Arc<dyn AdminBackend>;
            let join = thread::spawn(move || {
                runtime.block_on(serve(listener, backend, limits, stopped));
            });
            Server {
                addr,
                stop: Some(stop),
                join: Some(join),
            }
        }

        fn stop(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(join) = self.join.take() {
                assert!(join.join().is_ok());
            }
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop();
        }
    }

    /// A connection from `source` (any 127/8 address is this host on Linux).
    fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> TcpStreamStd {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .unwrap_or_else(|e| panic!("socket: {e}"));
        socket
            .bind(&SocketAddr::from((source, 0)).into())
            .unwrap_or_else(|e| panic!("bind {source}: {e}"));
        socket
            .connect(&addr.into())
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let stream: TcpStreamStd = socket.into();
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = stream.set_nodelay(true);
        stream
    }

    type TcpStreamStd = std::net::TcpStream;

    fn connect(addr: SocketAddr) -> TcpStreamStd {
        connect_from(Ipv4Addr::LOCALHOST, addr)
    }

    fn read_all(stream: &mut TcpStreamStd) -> String {
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// Sends `bytes` from `source`, reads to the end, and returns the whole answer.
    fn exchange_from(source: Ipv4Addr, addr: SocketAddr, bytes: &[u8]) -> String {
        let mut stream = connect_from(source, addr);
        let _ = stream.write_all(bytes);
        read_all(&mut stream)
    }

    fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
        exchange_from(Ipv4Addr::LOCALHOST, addr, bytes)
    }

    fn status_of(answer: &str) -> Option<u16> {
        answer.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }

    fn body_of(answer: &str) -> &str {
        answer.split_once("\r\n\r\n").map_or("", |(_, body)| body)
    }

    /// The value of header `name` (case-insensitive) in the head of `answer`.
    fn header_of<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
        let head = answer
            .split_once("\r\n\r\n")
            .map_or(answer, |(head, _)| head);
        head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n";

    fn revoke_head(body_len: usize, extra: &str) -> String {
        format!(
            "POST /revoke HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {body_len}\r\n{extra}\r\n",
            String::from_utf8_lossy(ADMIN_TOKEN),
        )
    }

    #[test]
    fn listener_answers_requests() {
        let fake = Arc::new(Fake::default());
        let server = Server::start(&fake, Limits::DEFAULT);
        let addr = server.addr;

        let answer = exchange(addr, HEALTHZ);
        assert_eq!(status_of(&answer), Some(200), "{answer}");
        assert_eq!(header_of(&answer, "connection"), Some("close"), "{answer}");
        assert_eq!(header_of(&answer, "content-length"), Some("3"), "{answer}");
        assert_eq!(header_of(&answer, "cache-control"), Some("no-store"));
        assert_eq!(
            header_of(&answer, "content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(body_of(&answer), "ok\n");

        // HEAD: same head, no body (RFC 9110 §9.3.2).
        let answer = exchange(addr, b"HEAD /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert_eq!(status_of(&answer), Some(200), "{answer}");
        assert_eq!(header_of(&answer, "content-length"), Some("3"), "{answer}");
        assert_eq!(body_of(&answer), "");

        // A revocation, with its body in a second write.
        let body = b"{\"jti\":\"j-42\",\"exp\":2000000000}";
        let mut stream = connect(addr);
        let _ = stream.write_all(revoke_head(body.len(), "").as_bytes());
        let _ = stream.flush();
        let _ = stream.write_all(body);
        let answer = read_all(&mut stream);
        assert_eq!(status_of(&answer), Some(200), "{answer}");
        assert_eq!(header_of(&answer, "content-type"), Some("application/json"));
        assert_eq!(body_of(&answer), "{\"closed\":2,\"revoked\":true}\n");
        let bodies = fake.bodies.lock().map(|b| b.clone()).unwrap_or_default();
        assert_eq!(bodies, vec![body.to_vec()]);

        // A chunked body is read as well.
        let head = revoke_head(0, "").replace("Content-Length: 0", "Transfer-Encoding: chunked");
        let answer = exchange(
            addr,
            format!("{head}5\r\n{{\"jti\r\nc\r\n\":\"chunked\"}}\r\n0\r\n\r\n").as_bytes(),
        );
        assert_eq!(status_of(&answer), Some(200), "{answer}");

        // Unauthorized, with the challenge on the wire, and the token before the body.
        let calls = fake.revoke_calls.load(Ordering::Relaxed);
        let answer = exchange(
            addr,
            b"POST /revoke HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}",
        );
        assert_eq!(status_of(&answer), Some(401), "{answer}");
        assert_eq!(header_of(&answer, "www-authenticate"), Some("Bearer"));
        assert_eq!(fake.revoke_calls.load(Ordering::Relaxed), calls);

        // Garbage and a TLS ClientHello: 400.
        for garbage in [
            &b"\x00\x01garbage\r\n\r\n"[..],
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
        ] {
            let answer = exchange(addr, garbage);
            assert_eq!(status_of(&answer), Some(400), "{answer}");
        }
        // An HTTP/2 preface is not served (hyper closes without an answer).
        let answer = exchange(addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert!(status_of(&answer).is_none_or(|s| s == 400), "{answer}");

        // Framing errors, each with its status.
        let two_hosts = b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
        let no_host = b"GET /healthz HTTP/1.1\r\n\r\n";
        let two_authorizations: &[u8] =
            b"GET /healthz HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n";
        let no_length = b"POST /revoke HTTP/1.1\r\nHost: h\r\n\r\n";
        for (request, status) in [
            (&two_hosts[..], 400),
            (&no_host[..], 400),
            (two_authorizations, 400),
            (&no_length[..], 411),
        ] {
            let answer = exchange(addr, request);
            assert_eq!(
                status_of(&answer),
                Some(status),
                "{}: {answer}",
                String::from_utf8_lossy(request)
            );
        }
        // HTTP/1.0 needs no Host.
        let answer = exchange(addr, b"GET /healthz HTTP/1.0\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.0 200 "), "{answer}");
        assert_eq!(body_of(&answer), "ok\n");

        // A body over the limit: 413 from the head, read by the client while it still sends.
        let over = MAX_BODY_BYTES + 1;
        let mut stream = connect(addr);
        let _ = stream.write_all(revoke_head(over, "").as_bytes());
        let _ = stream.write_all(&vec![b'x'; over]);
        let answer = read_all(&mut stream);
        assert_eq!(status_of(&answer), Some(413), "{answer}");
        // ...and a chunked one as soon as it passes the limit.
        let head = revoke_head(0, "").replace("Content-Length: 0", "Transfer-Encoding: chunked");
        let mut stream = connect(addr);
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(format!("{over:x}\r\n").as_bytes());
        let _ = stream.write_all(&vec![b'x'; over]);
        let answer = read_all(&mut stream);
        assert_eq!(status_of(&answer), Some(413), "{answer}");

        // A head over the limit: 431.
        let long = format!(
            "GET /healthz HTTP/1.1\r\nHost: h\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        let answer = exchange(addr, long.as_bytes());
        assert_eq!(status_of(&answer), Some(431), "{answer}");
        // Too many header lines: 431.
        let many = format!(
            "GET /healthz HTTP/1.1\r\nHost: h\r\n{}\r\n",
            "X-A: 1\r\n".repeat(MAX_HEADERS + 1)
        );
        let answer = exchange(addr, many.as_bytes());
        assert_eq!(status_of(&answer), Some(431), "{answer}");

        // A panicking backend costs its request a 500, not the listener.
        fake.panic_on_metrics.store(true, Ordering::Relaxed);
        for _ in 0..3 {
            let answer = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(status_of(&answer), Some(500), "{answer}");
        }
        fake.panic_on_metrics.store(false, Ordering::Relaxed);
        let answer = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(status_of(&answer), Some(200), "{answer}");
        assert_eq!(
            header_of(&answer, "content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );

        // Pipelined requests: only the first is answered.
        let answer = exchange(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\nGET /readyz HTTP/1.1\r\nHost: h\r\n\r\n",
        );
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
        assert_eq!(body_of(&answer), "ok\n");
    }

    #[test]
    fn a_silent_client_is_closed_at_the_header_timeout_without_delaying_others() {
        let fake = Arc::new(Fake::default());
        let limits = Limits {
            header_read_timeout: Duration::from_millis(300),
            ..Limits::DEFAULT
        };
        let server = Server::start(&fake, limits);
        let started = clock::now();
        let mut silent = connect(server.addr);
        let mut partial = connect(server.addr);
        let _ = partial.write_all(b"GET /healthz HTTP/1.1\r\nHo");

        let answer = exchange(server.addr, HEALTHZ);
        assert_eq!(status_of(&answer), Some(200), "{answer}");
        assert!(clock::now() - started < limits.header_read_timeout);

        // Both are closed without a word once the timeout has passed.
        for stream in [&mut silent, &mut partial] {
            assert_eq!(read_all(stream), "");
        }
        let closed_after = clock::now() - started;
        assert!(
            closed_after >= limits.header_read_timeout,
            "{closed_after:?}"
        );
        assert!(closed_after < Duration::from_secs(5), "{closed_after:?}");
    }

    #[test]
    fn a_stalled_body_is_408() {
        let fake = Arc::new(Fake::default());
        let limits = Limits {
            body_timeout: Duration::from_millis(300),
            ..Limits::DEFAULT
        };
        let server = Server::start(&fake, limits);
        let mut stream = connect(server.addr);
        let _ = stream.write_all(revoke_head(10, "").as_bytes());
        let _ = stream.write_all(b"{\"j");
        let answer = read_all(&mut stream);
        assert_eq!(status_of(&answer), Some(408), "{answer}");
        assert_eq!(fake.revoke_calls.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_idle_flood_displaces_only_its_own_idle_connections() {
        let fake = Arc::new(Fake::default());
        let limits = Limits {
            per_peer_connections: 4,
            max_connections: 8,
            ..Limits::DEFAULT
        };
        let server = Server::start(&fake, limits);
        let started = clock::now();
        // 60 idle connections from one address, every third with half a request head.
        let mut idle: Vec<TcpStreamStd> = (0..60)
            .map(|i| {
                let mut stream = connect(server.addr);
                if i % 3 == 0 {
                    let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHo");
                }
                stream
            })
            .collect();
        // The same address is served: its request takes the oldest idle connection's place.
        let answer = exchange(server.addr, HEALTHZ);
        assert_eq!(status_of(&answer), Some(200), "{answer}");
        // So is another address, and an authorized revocation.
        let other = Ipv4Addr::new(127, 0, 0, 2);
        let answer = exchange_from(other, server.addr, HEALTHZ);
        assert_eq!(status_of(&answer), Some(200), "{answer}");
        let body = b"{\"jti\":\"during-flood\"}";
        let mut request = revoke_head(body.len(), "").into_bytes();
        request.extend_from_slice(body);
        let answer = exchange(server.addr, &request);
        assert_eq!(status_of(&answer), Some(200), "{answer}");
        assert!(clock::now() - started < limits.header_read_timeout);
        // The first flooding connections were closed, without an answer, to make room.
        for stream in idle.iter_mut().take(10) {
            assert_eq!(read_all(stream), "");
        }
        assert!(clock::now() - started < limits.header_read_timeout);
    }

    /// Opens a `POST /revoke` with `Expect: 100-continue` from `source` and waits for the
    /// `100 Continue`: from then on the connection is busy, waiting for its body.
    fn busy_from(source: Ipv4Addr, addr: SocketAddr) -> TcpStreamStd {
        let mut stream = connect_from(source, addr);
        let _ = stream.write_all(revoke_head(22, "Expect: 100-continue\r\n").as_bytes());
        let mut interim = [0u8; 25];
        let _ = stream.read_exact(&mut interim);
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        stream
    }

    #[test]
    fn busy_connections_are_never_displaced_and_a_newcomer_gets_503() {
        let fake = Arc::new(Fake::default());
        let limits = Limits {
            per_peer_connections: 2,
            max_connections: 3,
            ..Limits::DEFAULT
        };
        let server = Server::start(&fake, limits);
        let one = Ipv4Addr::new(127, 0, 0, 1);
        let mut busy = vec![busy_from(one, server.addr), busy_from(one, server.addr)];
        // Per-address cap, every connection busy: refused at once.
        let answer = exchange_from(one, server.addr, HEALTHZ);
        assert_eq!(status_of(&answer), Some(503), "{answer}");
        assert_eq!(header_of(&answer, "retry-after"), Some("1"), "{answer}");
        assert_eq!(body_of(&answer), "admin listener busy\n");
        // Another address still has room under the global cap...
        let two = Ipv4Addr::new(127, 0, 0, 2);
        busy.push(busy_from(two, server.addr));
        // ...until the global cap, all busy, refuses a third address.
        let three = Ipv4Addr::new(127, 0, 0, 3);
        let answer = exchange_from(three, server.addr, HEALTHZ);
        assert_eq!(status_of(&answer), Some(503), "{answer}");
        // The busy connections were kept: each finishes its revocation.
        for mut stream in busy {
            let _ = stream.write_all(b"{\"jti\":\"held-for-now\"}");
            let answer = read_all(&mut stream);
            assert_eq!(status_of(&answer), Some(200), "{answer}");
        }
        assert_eq!(fake.revoke_calls.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn stop_closes_the_listener() {
        let fake = Arc::new(Fake::default());
        let mut server = Server::start(&fake, Limits::DEFAULT);
        let addr = server.addr;
        assert_eq!(status_of(&exchange(addr, HEALTHZ)), Some(200));
        server.stop();
        // Stopped: nothing answers any more.
        let answer = std::net::TcpStream::connect(addr).map(|mut s| {
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            rest
        });
        assert!(answer.map_or(true, |rest| rest.is_empty()));
    }

    #[test]
    fn bind_failure_is_an_error() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let _context = runtime.enter();
        let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0));
        let Ok(addr) = taken.as_ref().map(|l| l.local_addr()) else {
            return;
        };
        let Ok(addr) = addr else { return };
        assert!(bind(addr).is_err());
    }

    #[test]
    fn table_caps_and_displacement() {
        let one: IpAddr = Ipv4Addr::new(10, 0, 0, 1).into();
        let two: IpAddr = Ipv4Addr::new(10, 0, 0, 2).into();
        let mut table = Table::default();
        let a = table.admit(one, 2, 3);
        let b = table.admit(one, 2, 3);
        let (Some(a), Some(b)) = (a, b) else {
            panic!("room for two")
        };
        // Per address: the third displaces the oldest idle one.
        let Some(c) = table.admit(one, 2, 3) else {
            panic!("displaces a")
        };
        assert_eq!(table.total, 2);
        assert!(table.release(one, a.id).is_none(), "a is gone already");
        // A busy connection is never displaced: b is busy, c idle, so c goes.
        b.state.busy.store(true, Ordering::Relaxed);
        let Some(d) = table.admit(one, 2, 3) else {
            panic!("displaces c")
        };
        assert!(table.release(one, c.id).is_none());
        d.state.busy.store(true, Ordering::Relaxed);
        // Both busy: refused.
        assert!(table.admit(one, 2, 3).is_none());
        // Another address fits under the global cap, and the next one displaces it (the
        // oldest idle one of any address).
        let Some(e) = table.admit(two, 2, 3) else {
            panic!("global room")
        };
        let three: IpAddr = Ipv4Addr::new(10, 0, 0, 3).into();
        let Some(f) = table.admit(three, 2, 3) else {
            panic!("displaces e")
        };
        assert!(table.release(two, e.id).is_none());
        f.state.busy.store(true, Ordering::Relaxed);
        assert!(table.admit(two, 2, 3).is_none(), "all busy");
        // Releases free the room, once each.
        assert!(table.release(one, b.id).is_some());
        assert!(table.release(one, b.id).is_none());
        assert!(table.admit(two, 2, 3).is_some());
        assert_eq!(table.total, 3);
        assert!(table.peers.values().all(|entries| !entries.is_empty()));
    }

    #[test]
    fn peers_are_counted_by_address_and_ipv6_by_64() {
        let v4: IpAddr = Ipv4Addr::new(192, 0, 2, 7).into();
        assert_eq!(peer_key(v4), v4);
        let mapped: IpAddr = Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped().into();
        assert_eq!(peer_key(mapped), v4);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap_or(v4);
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap_or(v4);
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap_or(v4);
        assert_eq!(peer_key(a), peer_key(b));
        assert_ne!(peer_key(a), peer_key(c));
        assert_eq!(peer_key(a), "2001:db8:1:2::".parse().unwrap_or(v4));
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b" bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"BEARER abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bearer"), None);
        assert_eq!(bearer(b"Bearerabc"), None);
        assert_eq!(bearer(b"Basic YWxhZGRpbjpvcGVuc2VzYW1l"), None);
    }
}
