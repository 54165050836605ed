//! The admin listener (SPEC §3 `[admin]`, §6 revocation, §7 observability): `/healthz`,
//! `/readyz`, `/metrics` and `POST /revoke`.
//!
//! [`handle`] is the whole route table, pure; [`spawn`] is the I/O shell around it: a blocking
//! `std::net` listener on its own thread, off the workers' event loops, so that a scrape or a
//! revocation never delays a WebSocket. The listener belongs on loopback, but it must not fall
//! over whoever connects: every connection is bounded in bytes ([`http::MAX_HEAD_BYTES`],
//! [`http::MAX_BODY_BYTES`]) and in time ([`REQUEST_TIMEOUT`] for the whole request), serves
//! one request, answers with `Connection: close`, and a small fixed pool of threads
//! ([`ADMIN_THREADS`]) keeps one slow client from holding `/healthz` for longer than that.
//!
//! | request | answer |
//! |---|---|
//! | `GET`/`HEAD /healthz` | 200 `ok`: the process is alive |
//! | `GET`/`HEAD /readyz` | 200 `ready` when listening with keys loaded, else 503 |
//! | `GET`/`HEAD /metrics` | 200, Prometheus text format 0.0.4 ([`crate::metrics`]) |
//! | `POST /revoke` | 200 `{"revoked":true,"closed":N}`; 401 / 403 (token first), then 400 for the body; 503 when the revocation could not be made durable |
//! | another method on those paths | 405 with `Allow` |
//! | another path | 404 |
//! | unreadable HTTP | 400, 411, 413 or 431 ([`http::AdminHttpError`]); 408 when a started request stalls |

pub mod http;
pub mod revlog;

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use self::http::{AdminHttpError, AdminRequest, MAX_BODY_BYTES, MAX_HEAD_BYTES};
use crate::clock;

/// Threads serving admin connections: two, so one client stalling until [`REQUEST_TIMEOUT`]
/// leaves the other free for `/healthz` and scrapes.
pub const ADMIN_THREADS: usize = 2;

/// Accepted connections waiting for a thread; past it the acceptor answers 503 at once.
pub const ADMIN_QUEUE: usize = 16;

/// The whole request (head and body) must arrive within this time from its accept, time in
/// the queue included: a client that sent nothing by then is dropped, one that sent part of
/// it gets 408. Counting from the accept bounds how long queued slow clients can hold the
/// pool, so a `/healthz` probe waits at most about this long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection whose deadline passed while it waited in the queue gets one read of at most
/// this long, so that a prompt client queued behind slow ones is still answered.
const LATE_READ: Duration = Duration::from_millis(10);

/// Longest a blocked write of the answer may wait for the client to read.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// After answering while input may be unread, how long it is drained (so that closing over it
/// does not reset the connection before the client reads the answer, e.g. a 413 sent while
/// the body still arrives).
const LINGER: Duration = Duration::from_millis(250);

/// Most bytes drained after answering.
const LINGER_BYTES: usize = 128 * 1024;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 8 * 1024;

/// The most a request may occupy: a full head and a full body.
const MAX_REQUEST_BYTES: usize = MAX_HEAD_BYTES + MAX_BODY_BYTES;

/// Pause after an accept error such as EMFILE, instead of spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Longest the self-connect of [`request_stop`] may take.
const WAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// Content type of plain-text answers.
const TEXT: &str = "text/plain; charset=utf-8";

/// Content type of `/revoke` answers.
const JSON: &str = "application/json";

/// What the admin server needs from the gateway (implemented in `net/`; a fake in tests).
pub trait AdminBackend: Send + Sync + 'static {
    /// True when the listeners are up and the keys are loaded (`/readyz`).
    fn ready(&self) -> bool;
    /// The Prometheus exposition of every metric (`/metrics`).
    fn metrics_text(&self) -> String;
    /// Verifies the bearer token (`None`: no `Authorization: Bearer`) and its admin scope.
    fn authorize(&self, bearer: Option<&[u8]>) -> Result<(), AuthFailure>;
    /// Applies a revocation from the body as received (the backend parses it, appends it to
    /// the revocation log, counts it in the metrics); returns the connections it closed.
    fn revoke(&self, body: &[u8]) -> Result<usize, RevokeFailure>;
}

/// Why a `POST /revoke` is not authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No token, or a token that does not verify (401); the text is a fixed description.
    Unauthorized(&'static str),
    /// A valid token without the admin scope (403).
    Forbidden,
}

/// Why an authorized revocation was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeFailure {
    /// The body is not a revocation (400); the text says why.
    BadRequest(String),
    /// The revocation could not be made durable (503); the text says why.
    Unavailable(String),
}

/// An answer: status, extra headers, body, content type.
pub type AdminResponse = (u16, Vec<(&'static str, String)>, Vec<u8>, &'static str);

// === handle ===

/// Routes one request to its answer. Pure: everything it learns comes from `backend`.
///
/// Only `POST /revoke` needs a token, and its token is checked before its body is looked at
/// (401 / 403 come before 400).
pub fn handle(req: &AdminRequest<'_>, backend: &dyn AdminBackend) -> AdminResponse {
    let read_only = matches!(req.method, "GET" | "HEAD");
    match req.path {
        "/healthz" | "/readyz" | "/metrics" if !read_only => method_not_allowed("GET, HEAD"),
        "/healthz" => (200, Vec::new(), b"ok\n".to_vec(), TEXT),
        "/readyz" if backend.ready() => (200, Vec::new(), b"ready\n".to_vec(), TEXT),
        "/readyz" => (503, Vec::new(), b"not ready\n".to_vec(), TEXT),
        "/metrics" => (
            200,
            Vec::new(),
            backend.metrics_text().into_bytes(),
            crate::metrics::CONTENT_TYPE,
        ),
        "/revoke" if req.method != "POST" => method_not_allowed("POST"),
        "/revoke" => revoke(req, backend),
        _ => (404, Vec::new(), b"not found\n".to_vec(), TEXT),
    }
}

/// RFC 9110 §15.5.6: "The origin server MUST generate an Allow header field in a 405
/// response containing a list of the target resource's currently supported methods."
fn method_not_allowed(allow: &'static str) -> AdminResponse {
    (
        405,
        vec![("Allow", allow.to_owned())],
        b"method not allowed\n".to_vec(),
        TEXT,
    )
}

/// `POST /revoke`: token and scope first, then the body.
fn revoke(req: &AdminRequest<'_>, backend: &dyn AdminBackend) -> AdminResponse {
    match backend.authorize(req.bearer) {
        Err(AuthFailure::Unauthorized(description)) => {
            // RFC 6750 §3.1: a request without any credentials gets a challenge without an
            // error code; a token that does not verify gets `invalid_token`.
            let challenge = match req.bearer {
                None => "Bearer".to_owned(),
                Some(_) => format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    description_text(description)
                ),
            };
            (
                401,
                vec![("WWW-Authenticate", challenge)],
                failure_body("unauthorized", description),
                JSON,
            )
        }
        // RFC 6750 §3.1: `insufficient_scope` is answered with 403.
        Err(AuthFailure::Forbidden) => (
            403,
            vec![(
                "WWW-Authenticate",
                "Bearer error=\"insufficient_scope\"".to_owned(),
            )],
            failure_body("forbidden", "token lacks the admin scope"),
            JSON,
        ),
        Ok(()) => match backend.revoke(req.body) {
            Ok(closed) => {
                let body = serde_json::json!({ "revoked": true, "closed": closed });
                (200, Vec::new(), json_bytes(&body), JSON)
            }
            Err(RevokeFailure::BadRequest(reason)) => {
                (400, Vec::new(), failure_body("bad_request", &reason), JSON)
            }
            Err(RevokeFailure::Unavailable(reason)) => {
                (503, Vec::new(), failure_body("unavailable", &reason), JSON)
            }
        },
    }
}

/// `{"revoked":false,"error":<code>,"reason":<text>}` with a final line feed.
fn failure_body(error: &str, reason: &str) -> Vec<u8> {
    json_bytes(&serde_json::json!({ "revoked": false, "error": error, "reason": reason }))
}

/// A JSON value's text with a final line feed.
fn json_bytes(value: &serde_json::Value) -> Vec<u8> {
    let mut body = value.to_string().into_bytes();
    body.push(b'\n');
    body
}

/// `description` reduced to what RFC 6750 §3 allows in `error_description`:
/// `%x20-21 / %x23-5B / %x5D-7E` (printable ASCII without `"` and `\`).
fn description_text(description: &str) -> String {
    description
        .chars()
        .filter(|&c| matches!(c, ' '..='~') && c != '"' && c != '\\')
        .collect()
}

// === spawn ===

/// Runs the admin listener on `addr` (port 0: any free port) until `stop` is set and the
/// listener is woken by a connection (see [`request_stop`]).
///
/// Returns the bound address and the acceptor's handle; joining it also waits for the pool
/// threads, which finish the connections already accepted.
pub fn spawn(
    addr: SocketAddr,
    backend: Arc<dyn AdminBackend>,
    stop: Arc<AtomicBool>,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let (queue, receiver) = mpsc::sync_channel::<Accepted>(ADMIN_QUEUE);
    let receiver = Arc::new(Mutex::new(receiver));
    let mut pool = Vec::with_capacity(ADMIN_THREADS);
    for index in 0..ADMIN_THREADS {
        let receiver = Arc::clone(&receiver);
        let backend = Arc::clone(&backend);
        let thread = thread::Builder::new()
            .name(format!("wsgate-admin-{index}"))
            .spawn(move || serve_queue(&receiver, &*backend))?;
        pool.push(thread);
    }
    // If a spawn above or below fails, `queue` is dropped and the pool threads end.
    let acceptor = thread::Builder::new()
        .name("wsgate-admin".to_owned())
        .spawn(move || {
            accept_loop(&listener, &queue, &stop);
            drop(queue);
            for thread in pool {
                let _ = thread.join();
            }
        })?;
    Ok((local, acceptor))
}

/// Sets `stop` and connects to the listener at `local` once, so that a blocked `accept`
/// returns and sees the flag (an unspecified address is reached through loopback).
pub fn request_stop(local: SocketAddr, stop: &AtomicBool) {
    stop.store(true, Ordering::Release);
    let mut target = local;
    match target.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => target.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        IpAddr::V6(ip) if ip.is_unspecified() => target.set_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        _ => {}
    }
    let _ = TcpStream::connect_timeout(&target, WAKE_TIMEOUT);
}

/// Accepts until `stop`, handing each connection to the pool or refusing it when the pool's
/// queue is full.
fn accept_loop(listener: &TcpListener, queue: &SyncSender<Accepted>, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((stream, _peer)) => {
                // The connection that woke us to stop, or one that raced with it.
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let accepted = Accepted {
                    stream,
                    deadline: clock::now() + REQUEST_TIMEOUT,
                };
                match queue.try_send(accepted) {
                    Ok(()) => {}
                    Err(TrySendError::Full(accepted)) => refuse_busy(&accepted.stream),
                    // Every pool thread is gone; nothing could serve another connection.
                    Err(TrySendError::Disconnected(_)) => break,
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) => {}
            // EMFILE, ENFILE, ENOBUFS...: resources may come back; wait rather than spin.
            Err(_) => thread::sleep(ACCEPT_BACKOFF),
        }
    }
}

/// Answers 503 without blocking the acceptor: a fresh socket's send buffer takes this small
/// answer whole, and a non-blocking write gives up otherwise.
fn refuse_busy(stream: &TcpStream) {
    let mut out = Vec::new();
    http::write_response(
        &mut out,
        503,
        TEXT,
        &[("Retry-After", "1")],
        b"admin listener busy\n",
    );
    if stream.set_nonblocking(true).is_ok() {
        let mut stream = stream;
        let _ = stream.write(&out);
    }
}

/// A connection on its way from the acceptor to a pool thread.
#[derive(Debug)]
struct Accepted {
    stream: TcpStream,
    /// When the whole request must have arrived: the accept plus [`REQUEST_TIMEOUT`].
    deadline: Instant,
}

/// One pool thread: serves connections from the queue until the acceptor drops its end.
fn serve_queue(receiver: &Mutex<Receiver<Accepted>>, backend: &dyn AdminBackend) {
    loop {
        // The lock is held only while waiting; serving happens outside it. A poisoned lock
        // (a panic while waiting, which `recv` does not do) still guards a valid receiver.
        let next = match receiver.lock() {
            Ok(receiver) => receiver.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(accepted) = next else {
            return;
        };
        serve(accepted, backend);
    }
}

/// How reading a request ended.
#[derive(Debug)]
enum Ending {
    /// A complete request is at the start of the buffer.
    Complete,
    /// The bytes received cannot be a request we answer; answered with the error's status.
    Refused(AdminHttpError),
    /// [`REQUEST_TIMEOUT`] passed before the request was complete.
    TimedOut,
    /// The client closed its side before the request was complete.
    Closed,
    /// The socket failed.
    Failed,
}

/// Serves one connection: one request, one answer, then close.
fn serve(accepted: Accepted, backend: &dyn AdminBackend) {
    let Accepted {
        mut stream,
        deadline,
    } = accepted;
    let _ = stream.set_nodelay(true);
    if stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err() {
        return;
    }
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut out = Vec::new();
    // Whether the client may have sent bytes we did not read (then drained before closing).
    let unread = match read_request(&mut stream, &mut buf, deadline) {
        Ending::Complete => respond(&buf, backend, &mut out),
        Ending::Refused(e) => {
            let body = format!("{}\n", e.reason());
            http::write_response(&mut out, e.status(), TEXT, &[], body.as_bytes());
            // Reading stopped at the error, maybe in the middle of what the client sends.
            true
        }
        // A connection that never said anything is dropped without a word.
        Ending::TimedOut if buf.is_empty() => return,
        Ending::TimedOut => {
            // A client this slow gets no linger: it would only hold the pool longer.
            http::write_response(&mut out, 408, TEXT, &[], b"request timeout\n");
            false
        }
        Ending::Closed if buf.is_empty() => return,
        Ending::Closed => {
            // The client may still read after closing its write side.
            http::write_response(&mut out, 400, TEXT, &[], b"incomplete request\n");
            false
        }
        Ending::Failed => return,
    };
    if stream.write_all(&out).is_err() {
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    if unread {
        linger(&mut stream);
    }
}

/// Reads into `buf` until it starts with a complete request, the bytes are refused, the
/// client closes, or `deadline` passes.
fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> Ending {
    let mut chunk = [0u8; READ_CHUNK];
    let mut late = false;
    loop {
        // Re-parsing from the start is bounded: the head is at most MAX_HEAD_BYTES, and a
        // request is given REQUEST_TIMEOUT in all.
        match http::parse_request(buf) {
            Ok(Some(_)) => return Ending::Complete,
            Err(e) => return Ending::Refused(e),
            Ok(None) => {}
        }
        // `parse_request` refuses a partial head past MAX_HEAD_BYTES and a body past
        // MAX_BODY_BYTES, so an incomplete request is always below MAX_REQUEST_BYTES; this
        // bound only keeps the buffer finite if that ever changed.
        let room = MAX_REQUEST_BYTES.saturating_sub(buf.len()).min(READ_CHUNK);
        let Some(into) = chunk.get_mut(..room).filter(|into| !into.is_empty()) else {
            return Ending::Refused(AdminHttpError::BodyTooLarge);
        };
        let remaining = match time_left(deadline) {
            Some(remaining) => remaining,
            // Past the deadline (spent in the queue): one short read, for what is already here.
            None if !late => {
                late = true;
                LATE_READ
            }
            None => return Ending::TimedOut,
        };
        if stream.set_read_timeout(Some(remaining)).is_err() {
            return Ending::Failed;
        }
        match stream.read(into) {
            Ok(0) => return Ending::Closed,
            Ok(n) => buf.extend_from_slice(into.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A read timeout is WouldBlock on Unix and TimedOut on Windows.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ending::TimedOut
            }
            Err(_) => return Ending::Failed,
        }
    }
}

/// Answers the complete request at the start of `buf` into `out`; returns whether bytes
/// followed the request (pipelined, left unread).
fn respond(buf: &[u8], backend: &dyn AdminBackend, out: &mut Vec<u8>) -> bool {
    // `read_request` just parsed these same bytes as complete; this is the borrowed view.
    let Ok(Some((request, consumed))) = http::parse_request(buf) else {
        http::write_response(out, 500, TEXT, &[], b"internal error\n");
        return true;
    };
    // A panicking backend costs this request a 500, not the admin thread.
    let answer = catch_unwind(AssertUnwindSafe(|| handle(&request, backend)));
    let (status, headers, body, content_type) =
        answer.unwrap_or_else(|_| (500, Vec::new(), b"internal error\n".to_vec(), TEXT));
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    http::write_response(out, status, content_type, &headers, &body);
    // RFC 9110 §9.3.2: HEAD is answered as GET would be, without the content (the
    // Content-Length of the GET answer stays).
    if request.method == "HEAD" {
        out.truncate(out.len().saturating_sub(body.len()));
    }
    consumed < buf.len()
}

/// Reads and discards what the client still sends, until it closes, [`LINGER`] passes or
/// [`LINGER_BYTES`] were read, so that closing does not reset the connection over unread
/// input before the client has read the answer.
fn linger(stream: &mut TcpStream) {
    let deadline = clock::now() + LINGER;
    let mut chunk = [0u8; READ_CHUNK];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        let Some(remaining) = time_left(deadline) else {
            return;
        };
        if stream.set_read_timeout(Some(remaining)).is_err() {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => drained += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Time until `deadline`, or `None` when it has passed (a zero read timeout is an error).
fn time_left(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(clock::now())
        .filter(|left| !left.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use std::sync::atomic::AtomicUsize;

    const ADMIN_TOKEN: &[u8] = b"admin.token.sig";
    const USER_TOKEN: &[u8] = b"user.token.sig";

    /// A backend whose answers are fixed by the token and the body; it records revocations.
    #[derive(Default)]
    struct Fake {
        not_ready: AtomicBool,
        panic_on_metrics: AtomicBool,
        revoke_calls: AtomicUsize,
        bodies: Mutex<Vec<Vec<u8>>>,
    }

    impl AdminBackend for Fake {
        fn ready(&self) -> bool {
            !self.not_ready.load(Ordering::Relaxed)
        }

        fn metrics_text(&self) -> String {
            if self.panic_on_metrics.load(Ordering::Relaxed) {
                panic!("metrics backend failure (expected by the test)");
            }
            let metrics = Metrics::new(2, &["expired"]);
            if let Some(worker) = metrics.workers.first() {
                worker.handshake(101);
            }
            let mut text = String::new();
            metrics.render(&mut text);
            text
        }

        fn authorize(&self, bearer: Option<&[u8]>) -> Result<(), AuthFailure> {
            match bearer {
                None => Err(AuthFailure::Unauthorized("missing token")),
                Some(ADMIN_TOKEN) => Ok(()),
                Some(USER_TOKEN) => Err(AuthFailure::Forbidden),
                Some(_) => Err(AuthFailure::Unauthorized("bad \"signature\"\\ é")),
            }
        }

        fn revoke(&self, body: &[u8]) -> Result<usize, RevokeFailure> {
            self.revoke_calls.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut bodies) = self.bodies.lock() {
                bodies.push(body.to_vec());
            }
            let value: serde_json::Value = serde_json::from_slice(body)
                .map_err(|e| RevokeFailure::BadRequest(format!("body is not JSON: {e}")))?;
            match value.get("jti").and_then(serde_json::Value::as_str) {
                Some("disk-full") => Err(RevokeFailure::Unavailable(
                    "revocation log not writable".to_owned(),
                )),
                Some(_) => Ok(2),
                None => Err(RevokeFailure::BadRequest("needs jti or sub".to_owned())),
            }
        }
    }

    fn request<'a>(
        method: &'a str,
        path: &'a str,
        bearer: Option<&'a [u8]>,
        body: &'a [u8],
    ) -> AdminRequest<'a> {
        AdminRequest {
            method,
            path,
            bearer,
            body,
        }
    }

    fn header<'r>(answer: &'r AdminResponse, name: &str) -> Option<&'r str> {
        answer
            .1
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(answer: &AdminResponse) -> serde_json::Value {
        assert_eq!(answer.3, JSON);
        assert!(answer.2.ends_with(b"\n"));
        serde_json::from_slice(&answer.2).unwrap_or(serde_json::Value::Null)
    }

    // === route table ===

    #[test]
    fn health_readiness_and_metrics() {
        let fake = Fake::default();
        let answer = handle(&request("GET", "/healthz", None, b""), &fake);
        assert_eq!(
            (answer.0, &answer.2[..], answer.3),
            (200, &b"ok\n"[..], TEXT)
        );
        assert_eq!(
            handle(&request("HEAD", "/healthz", None, b""), &fake).0,
            200
        );

        assert_eq!(handle(&request("GET", "/readyz", None, b""), &fake).0, 200);
        fake.not_ready.store(true, Ordering::Relaxed);
        let answer = handle(&request("GET", "/readyz", None, b""), &fake);
        assert_eq!((answer.0, &answer.2[..]), (503, &b"not ready\n"[..]));
        // Health is about the process, not readiness.
        assert_eq!(handle(&request("GET", "/healthz", None, b""), &fake).0, 200);

        let answer = handle(&request("GET", "/metrics", None, b""), &fake);
        assert_eq!(answer.0, 200);
        assert_eq!(answer.3, "text/plain; version=0.0.4; charset=utf-8");
        let text = String::from_utf8_lossy(&answer.2);
        assert!(text.contains("wsgate_handshakes_total{outcome=\"accepted\",status=\"101\"} 1\n"));
        // No endpoint but /revoke asks for a token, even when one is sent.
        assert_eq!(
            handle(&request("GET", "/metrics", Some(b"junk"), b""), &fake).0,
            200
        );
    }

    #[test]
    fn wrong_method_is_405_with_allow() {
        let fake = Fake::default();
        for (method, path, allow) in [
            ("POST", "/healthz", "GET, HEAD"),
            ("PUT", "/readyz", "GET, HEAD"),
            ("DELETE", "/metrics", "GET, HEAD"),
            ("get", "/metrics", "GET, HEAD"),
            ("GET", "/revoke", "POST"),
            ("HEAD", "/revoke", "POST"),
            ("PUT", "/revoke", "POST"),
        ] {
            let answer = handle(&request(method, path, Some(ADMIN_TOKEN), b"{}"), &fake);
            assert_eq!(answer.0, 405, "{method} {path}");
            assert_eq!(header(&answer, "Allow"), Some(allow), "{method} {path}");
        }
        assert_eq!(fake.revoke_calls.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn unknown_paths_are_404() {
        let fake = Fake::default();
        for path in [
            "/",
            "",
            "*",
            "/healthz/",
            "/HEALTHZ",
            "/revoke/x",
            "/metrics.txt",
            "http://h/healthz",
        ] {
            for method in ["GET", "POST"] {
                let answer = handle(&request(method, path, Some(ADMIN_TOKEN), b"{}"), &fake);
                assert_eq!(answer.0, 404, "{method} {path:?}");
            }
        }
        assert_eq!(fake.revoke_calls.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn revoke_without_token_is_401_with_bare_challenge() {
        let fake = Fake::default();
        let answer = handle(&request("POST", "/revoke", None, b"not json"), &fake);
        assert_eq!(answer.0, 401);
        assert_eq!(header(&answer, "WWW-Authenticate"), Some("Bearer"));
        let body = json(&answer);
        assert_eq!(body["revoked"], false);
        assert_eq!(body["error"], "unauthorized");
        assert_eq!(
            fake.revoke_calls.load(Ordering::Relaxed),
            0,
            "auth before body"
        );
    }

    #[test]
    fn revoke_with_invalid_token_is_401_invalid_token() {
        let fake = Fake::default();
        let answer = handle(
            &request("POST", "/revoke", Some(b"forged"), b"not json"),
            &fake,
        );
        assert_eq!(answer.0, 401);
        // The description loses what RFC 6750 §3 does not allow inside the quotes.
        assert_eq!(
            header(&answer, "WWW-Authenticate"),
            Some("Bearer error=\"invalid_token\", error_description=\"bad signature \"")
        );
        assert_eq!(
            fake.revoke_calls.load(Ordering::Relaxed),
            0,
            "auth before body"
        );
        // The token never appears in the answer.
        assert!(!answer.2.windows(6).any(|w| w == b"forged"));
    }

    #[test]
    fn revoke_without_scope_is_403() {
        let fake = Fake::default();
        let answer = handle(
            &request("POST", "/revoke", Some(USER_TOKEN), b"not json"),
            &fake,
        );
        assert_eq!(answer.0, 403);
        assert_eq!(
            header(&answer, "WWW-Authenticate"),
            Some("Bearer error=\"insufficient_scope\"")
        );
        assert_eq!(json(&answer)["error"], "forbidden");
        assert_eq!(
            fake.revoke_calls.load(Ordering::Relaxed),
            0,
            "scope before body"
        );
    }

    #[test]
    fn revoke_body_outcomes() {
        let fake = Fake::default();
        let admin = Some(ADMIN_TOKEN);

        let answer = handle(
            &request("POST", "/revoke", admin, b"{\"jti\":\"j-1\"}"),
            &fake,
        );
        assert_eq!(answer.0, 200);
        assert_eq!(answer.2, b"{\"closed\":2,\"revoked\":true}\n".to_vec());
        let body = json(&answer);
        assert_eq!(
            (body["revoked"].clone(), body["closed"].clone()),
            (true.into(), 2.into())
        );

        for bad in [&b"not json"[..], b"", b"{\"sub\":1}", b"[]"] {
            let answer = handle(&request("POST", "/revoke", admin, bad), &fake);
            assert_eq!(answer.0, 400, "{:?}", String::from_utf8_lossy(bad));
            let body = json(&answer);
            assert_eq!(body["error"], "bad_request");
            assert!(body["reason"].as_str().is_some_and(|r| !r.is_empty()));
        }

        let answer = handle(
            &request("POST", "/revoke", admin, b"{\"jti\":\"disk-full\"}"),
            &fake,
        );
        assert_eq!(answer.0, 503);
        assert_eq!(json(&answer)["reason"], "revocation log not writable");
        assert_eq!(fake.revoke_calls.load(Ordering::Relaxed), 6);
    }

    // === spawn: real sockets ===

    /// Starts a listener on 127.0.0.1:0 with `fake`.
    fn start(fake: &Arc<Fake>) -> (SocketAddr, Arc<AtomicBool>, JoinHandle<()>) {
        let stop = Arc::new(AtomicBool::new(false));
        let backend: Arc<dyn AdminBackend> = Arc::clone(fake) as Arc<dyn AdminBackend>;
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        match spawn(loopback, backend, Arc::clone(&stop)) {
            Ok((addr, handle)) => (addr, stop, handle),
            Err(e) => panic!("spawn: {e}"),
        }
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect: {e}"));
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        stream
    }

    /// Sends `bytes`, reads to the end, and returns the whole answer.
    fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
        let mut stream = connect(addr);
        let _ = stream.write_all(bytes);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    }

    fn status_of(answer: &str) -> Option<u16> {
        answer.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }

    fn body_of(answer: &str) -> &str {
        answer.split_once("\r\n\r\n").map_or("", |(_, body)| body)
    }

    fn stop_and_join(addr: SocketAddr, stop: &AtomicBool, handle: JoinHandle<()>) {
        request_stop(addr, stop);
        assert!(handle.join().is_ok());
        // Stopped: nothing answers any more.
        let answer = TcpStream::connect(addr).map(|mut s| {
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            rest
        });
        assert!(answer.map_or(true, |rest| rest.is_empty()));
    }

    #[test]
    fn listener_answers_requests() {
        let fake = Arc::new(Fake::default());
        let (addr, stop, handle) = start(&fake);

        let answer = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert_eq!(status_of(&answer), Some(200), "{answer}");
        assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
        assert!(answer.contains("\r\nContent-Length: 3\r\n"), "{answer}");
        assert_eq!(body_of(&answer), "ok\n");

        // HEAD: same head, no body.
        let answer = exchange(addr, b"HEAD /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert_eq!(status_of(&answer), Some(200), "{answer}");
        assert!(answer.contains("\r\nContent-Length: 3\r\n"), "{answer}");
        assert_eq!(body_of(&answer), "");

        // A revocation, with its body in a second write.
        let body = b"{\"jti\":\"j-42\",\"exp\":2000000000}";
        let head = format!(
            "POST /revoke HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            String::from_utf8_lossy(ADMIN_TOKEN),
            body.len()
        );
        let mut stream = connect(addr);
        let _ = stream.write_all(head.as_bytes());
        thread::sleep(Duration::from_millis(50));
        let _ = stream.write_all(body);
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert_eq!(status_of(&answer), Some(200), "{answer}");
        assert_eq!(body_of(&answer), "{\"closed\":2,\"revoked\":true}\n");
        let bodies = fake.bodies.lock().map(|b| b.clone()).unwrap_or_default();
        assert_eq!(bodies, vec![body.to_vec()]);

        // Unauthorized, with the challenge on the wire.
        let answer = exchange(
            addr,
            b"POST /revoke HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}",
        );
        assert_eq!(status_of(&answer), Some(401), "{answer}");
        assert!(
            answer.contains("\r\nWWW-Authenticate: Bearer\r\n"),
            "{answer}"
        );

        // Garbage, a TLS ClientHello, an HTTP/2 preface: 400.
        for garbage in [
            &b"\x00\x01garbage\r\n\r\n"[..],
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            let answer = exchange(addr, garbage);
            assert_eq!(status_of(&answer), Some(400), "{answer}");
        }

        // A body over the limit: 413 from the head, read by the client while it still sends.
        let over = MAX_BODY_BYTES + 1;
        let mut stream = connect(addr);
        let head = format!("POST /revoke HTTP/1.1\r\nHost: h\r\nContent-Length: {over}\r\n\r\n");
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(&vec![b'x'; over]);
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert_eq!(status_of(&answer), Some(413), "{answer}");

        // A head over the limit: 431.
        let long = format!(
            "GET /healthz HTTP/1.1\r\nHost: h\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        let answer = exchange(addr, long.as_bytes());
        assert_eq!(status_of(&answer), Some(431), "{answer}");

        // A client that closes mid-request still gets an answer.
        let mut stream = connect(addr);
        let _ = stream.write_all(b"GET /heal");
        let _ = stream.shutdown(Shutdown::Write);
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert_eq!(status_of(&answer), Some(400), "{answer}");

        // A panicking backend costs its request a 500, not the listener.
        fake.panic_on_metrics.store(true, Ordering::Relaxed);
        for _ in 0..ADMIN_THREADS + 1 {
            let answer = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(status_of(&answer), Some(500), "{answer}");
        }
        fake.panic_on_metrics.store(false, Ordering::Relaxed);
        let answer = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(status_of(&answer), Some(200), "{answer}");
        assert!(
            answer.contains("Content-Type: text/plain; version=0.0.4"),
            "{answer}"
        );

        // Pipelined requests: only the first is answered.
        let answer = exchange(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\nGET /readyz HTTP/1.1\r\nHost: h\r\n\r\n",
        );
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
        assert_eq!(body_of(&answer), "ok\n");

        stop_and_join(addr, &stop, handle);
    }

    #[test]
    fn silent_clients_are_dropped_without_blocking_others() {
        let fake = Arc::new(Fake::default());
        let (addr, stop, handle) = start(&fake);
        let started = clock::now();

        // One silent client does not delay another at all.
        let mut silent = connect(addr);
        thread::sleep(Duration::from_millis(100));
        let answer = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(status_of(&answer), Some(200), "{answer}");
        assert!(
            clock::now() - started < REQUEST_TIMEOUT,
            "waited for the silent client"
        );

        // Every pool thread held by a silent client: the next client waits at most about
        // REQUEST_TIMEOUT (the oldest one's remaining time).
        let mut partial = connect(addr);
        let _ = partial.write_all(b"GET /healthz HTTP/1.1\r\nHo");
        let waiting = clock::now();
        let answer = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(status_of(&answer), Some(200), "{answer}");
        let waited = clock::now() - waiting;
        assert!(
            waited <= REQUEST_TIMEOUT + Duration::from_secs(1),
            "{waited:?}"
        );

        // The silent client was closed without a word after the timeout.
        let mut rest = Vec::new();
        assert!(silent.read_to_end(&mut rest).is_ok());
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
        let dropped_after = clock::now() - started;
        assert!(dropped_after >= REQUEST_TIMEOUT, "{dropped_after:?}");
        assert!(dropped_after <= REQUEST_TIMEOUT * 2, "{dropped_after:?}");

        // The client that sent part of a request got 408.
        let mut answer = String::new();
        let _ = partial.read_to_string(&mut answer);
        assert_eq!(status_of(&answer), Some(408), "{answer}");

        stop_and_join(addr, &stop, handle);
    }

    #[test]
    fn a_full_queue_is_refused_and_drains_by_the_deadline() {
        let fake = Arc::new(Fake::default());
        let (addr, stop, handle) = start(&fake);
        let started = clock::now();
        // Silent clients fill the pool threads and the queue...
        let silent: Vec<TcpStream> = (0..ADMIN_THREADS + ADMIN_QUEUE)
            .map(|_| connect(addr))
            .collect();
        // ...so the next one is answered 503 at once, by the acceptor.
        let answer = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(status_of(&answer), Some(503), "{answer}");
        assert!(answer.contains("\r\nRetry-After: 1\r\n"), "{answer}");
        assert!(clock::now() - started < REQUEST_TIMEOUT);
        // Queued connections share the deadline of their accept: once it has passed, the
        // whole queue is dropped quickly and a new client is served.
        thread::sleep(REQUEST_TIMEOUT + Duration::from_millis(300));
        let answer = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(status_of(&answer), Some(200), "{answer}");
        let waited = clock::now() - started;
        assert!(
            waited < REQUEST_TIMEOUT + Duration::from_millis(1500),
            "{waited:?}"
        );
        drop(silent);
        stop_and_join(addr, &stop, handle);
    }

    #[test]
    fn a_prompt_client_queued_behind_slow_ones_is_still_answered() {
        let fake = Arc::new(Fake::default());
        let (addr, stop, handle) = start(&fake);
        let silent: Vec<TcpStream> = (0..ADMIN_THREADS).map(|_| connect(addr)).collect();
        // Sent at once, but read only after the silent ones time out, past its own deadline.
        let answer = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(status_of(&answer), Some(200), "{answer}");
        drop(silent);
        stop_and_join(addr, &stop, handle);
    }

    #[test]
    fn stop_wakes_an_idle_listener() {
        let fake = Arc::new(Fake::default());
        let (addr, stop, handle) = start(&fake);
        let started = clock::now();
        stop_and_join(addr, &stop, handle);
        assert!(clock::now() - started < REQUEST_TIMEOUT);
        // A listener asked to stop before it starts exits at once.
        let stop = Arc::new(AtomicBool::new(true));
        let backend: Arc<dyn AdminBackend> = fake;
        let spawned = spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), backend, stop);
        assert!(spawned.is_ok_and(|(_, handle)| handle.join().is_ok()));
    }

    #[test]
    fn bind_failure_is_an_error() {
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0));
        let Ok(addr) = taken.as_ref().map(|l| l.local_addr()) else {
            return;
        };
        let Ok(addr) = addr else { return };
        let backend: Arc<dyn AdminBackend> = Arc::new(Fake::default());
        let stop = Arc::new(AtomicBool::new(false));
        assert!(spawn(addr, backend, stop).is_err());
    }
}
