//! The login listener (SPEC §11): HTTP/1.1 by hyper on the control plane's runtime.
//!
//! | request | answer |
//! |---|---|
//! | `POST /login`, `application/json` `{"username","password"}` | 200 tokens; 401 `invalid_grant`; 429 + `Retry-After`; 415 for another content type |
//! | `POST /token`, form `grant_type=refresh_token&refresh_token=...` | 200 tokens; 400 `invalid_grant` / `invalid_request` / `unsupported_grant_type` (RFC 6749 §5.2) |
//! | `POST /logout`, form `refresh_token=...` (or RFC 7009's `token=...`) | 200 `{}` whether or not the token was known |
//! | `GET /.well-known/jwks.json`, `GET /.well-known/openid-configuration` | 200 JSON, `Access-Control-Allow-Origin: *` |
//! | `OPTIONS /login` (`/token`, `/logout`) with `Origin` (a CORS preflight) | 204 with CORS headers for an allowed origin; 403 otherwise |
//! | a `POST` above with an `Origin` outside `[origin] allow` | 403 `invalid_request`, nothing done |
//!
//! With `[tls]` the listener speaks HTTPS with the data listeners' certificate; a SIGHUP
//! reload replaces it here too ([`Live`]), for the connections accepted afterwards. The TLS
//! handshake must complete within [`Limits::header_read_timeout`].
//!
//! CORS ([`super::cors`]): the token endpoints answer browsers of the gateway's `[origin]`
//! allowlist (also replaced by a reload), and refuse (403) a request from any other origin.
//!
//! Token answers carry `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 §5.1);
//! every answer carries `Connection: close` (one request per connection). Bounds: a
//! request head must arrive within [`Limits::header_read_timeout`] (hyper's
//! `header_read_timeout`), a body within [`Limits::body_timeout`] and at most
//! [`Limits::max_body_bytes`] long (413, from `Content-Length` before reading); at most
//! [`Limits::max_connections`] connections at once (past it: 503 at accept); every
//! connection ends within [`Limits::connection_timeout`]. Nothing here logs a request
//! body, a token or a password.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, Semaphore};

use arc_swap::ArcSwap;

use super::cors::{self, Caller};
use super::{Answer, Service};
use crate::config::Config;
use crate::gate::origin::OriginPolicy;
use crate::proto::http::fields::percent_decode;

/// What a SIGHUP reload changes in a running login listener: its certificate (with `[tls]`)
/// and the Origin allowlist of its CORS answers. Read once per connection or request,
/// without a lock.
pub struct Live {
    /// `None`: plain HTTP, for the listener's life.
    tls: Option<ArcSwap<rustls::ServerConfig>>,
    origins: ArcSwap<OriginPolicy>,
}

impl Live {
    /// The listener's settings: `tls` when `[tls]` is on, origins of `config.origin`.
    pub fn new(
        config: &Config,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<Arc<Live>, String> {
        Ok(Arc::new(Live {
            tls: tls.map(ArcSwap::new),
            origins: ArcSwap::from_pointee(origin_policy(config)?),
        }))
    }

    /// Whether the listener speaks HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Publishes a reloaded configuration: its origins, and its certificate when both the
    /// listener and `tls` are TLS (a listener does not switch between HTTP and HTTPS: that
    /// takes a restart). Returns false when `config` changes what only a restart changes.
    pub fn reload(&self, config: &Config, tls: Option<Arc<rustls::ServerConfig>>) -> bool {
        if let Ok(policy) = origin_policy(config) {
            self.origins.store(Arc::new(policy));
        }
        match (&self.tls, tls) {
            (Some(current), Some(fresh)) => {
                current.store(fresh);
                true
            }
            (None, None) => true,
            _ => false,
        }
    }
}

/// The allowlist of `config.origin` (already validated: an error here is internal).
fn origin_policy(config: &Config) -> Result<OriginPolicy, String> {
    OriginPolicy::new(&config.origin.allow, config.origin.allow_missing)
        .map_err(|e| format!("origin.allow: {e}"))
}

/// The login listener's bounds (module docs); [`Limits::DEFAULT`] is what `serve` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request head must be complete this long after the accept.
    pub header_read_timeout: Duration,
    /// A body must be complete this long after its head.
    pub body_timeout: Duration,
    /// The most a connection lives.
    pub connection_timeout: Duration,
    /// Longest body; more is 413.
    pub max_body_bytes: usize,
    /// Longest request head; more is 431.
    pub max_head_bytes: usize,
    /// Most header lines.
    pub max_headers: usize,
    /// Connections at once.
    pub max_connections: usize,
}

impl Limits {
    /// 5 s for the head and for the body, 30 s in all (a login waits for a password
    /// check), 16 KiB of body, 8 KiB of head in at most 32 lines, 1024 connections.
    pub const DEFAULT: Limits = Limits {
        header_read_timeout: Duration::from_secs(5),
        body_timeout: Duration::from_secs(5),
        connection_timeout: Duration::from_secs(30),
        max_body_bytes: 16 * 1024,
        max_head_bytes: 8 * 1024,
        max_headers: 32,
        max_connections: 1024,
    };
}

/// The whole answer to a connection past `max_connections`.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
Content-Length: 62\r\nConnection: close\r\nCache-Control: no-store\r\nRetry-After: 1\r\n\r\n\
{\"error\":\"temporarily_unavailable\",\"error_description\":\"busy\"}";

/// Pause after an accept error such as EMFILE.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Binds the login listener (port 0: any free port); in the serving runtime's context.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serves `listener` (HTTPS when `live` has TLS) until `stop` fires or its sender is
/// dropped.
pub async fn serve(
    listener: TcpListener,
    service: Arc<Service>,
    limits: Limits,
    live: Arc<Live>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(false)
        .max_headers(limits.max_headers)
        .max_buf_size((2 * limits.max_head_bytes).max(8 * 1024))
        .title_case_headers(true);
    let http = Arc::new(http);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut stop => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) =>
            {
                continue
            }
            Err(_) => {
                tokio::select! {
                    biased;
                    _ = &mut stop => return,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            let _ = stream.try_write(BUSY);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let http = Arc::clone(&http);
        let service = Arc::clone(&service);
        // The certificate in force at the accept (a reload affects later connections).
        let tls = live
            .tls
            .as_ref()
            .map(|config| tokio_rustls::TlsAcceptor::from(config.load_full()));
        let live = Arc::clone(&live);
        tokio::spawn(async move {
            let _slot = slot;
            let handler = service_fn(move |request| {
                respond(
                    request,
                    Arc::clone(&service),
                    Arc::clone(&live),
                    peer.ip(),
                    limits,
                )
            });
            let work = async {
                match tls {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), handler).await;
                    }
                    Some(acceptor) => {
                        let accepted = tokio::time::timeout(
                            limits.header_read_timeout,
                            acceptor.accept(stream),
                        )
                        .await;
                        if let Ok(Ok(stream)) = accepted {
                            let _ = http.serve_connection(TokioIo::new(stream), handler).await;
                        }
                    }
                }
            };
            let _ = tokio::time::timeout(limits.connection_timeout, work).await;
        });
    }
}

/// The kind of body a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    Form,
}

/// Answers one request.
async fn respond(
    request: Request<Incoming>,
    service: Arc<Service>,
    live: Arc<Live>,
    peer: IpAddr,
    limits: Limits,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let get = parts.method == Method::GET || parts.method == Method::HEAD;
    let post = parts.method == Method::POST;
    let public = |body: String| {
        let mut response = render(
            Answer {
                status: 200,
                body,
                retry_after: None,
            },
            Cache::Public,
        );
        cors::apply_public(response.headers_mut());
        response
    };
    match path {
        "/.well-known/jwks.json" if get => return Ok(public(service.issuer().jwks())),
        "/.well-known/openid-configuration" if get => {
            return Ok(public(service.issuer().discovery()))
        }
        "/login" | "/token" | "/logout" => {
            let caller = cors::caller(&parts.headers, &live.origins.load());
            let preflight = parts.method == Method::OPTIONS && caller != Caller::NoOrigin;
            let answer = match &caller {
                Caller::Refused => Answer::error(403, "invalid_request", "origin not allowed"),
                Caller::Allowed(_) if preflight => Answer {
                    status: 204,
                    body: String::new(),
                    retry_after: None,
                },
                _ if !post => {
                    let mut response = with_allow(
                        render(
                            Answer::error(405, "invalid_request", "method not allowed"),
                            Cache::NoStore,
                        ),
                        "POST",
                    );
                    cors::apply(response.headers_mut(), &caller);
                    return Ok(response);
                }
                _ => token_endpoint(path, parts.headers, body, &service, peer, &limits).await,
            };
            let mut response = render(answer, Cache::NoStore);
            if preflight && matches!(caller, Caller::Allowed(_)) {
                response.headers_mut().remove(header::CONTENT_TYPE);
                cors::apply_preflight(response.headers_mut());
            }
            cors::apply(response.headers_mut(), &caller);
            return Ok(response);
        }
        _ => {}
    }
    let answer = match path {
        "/.well-known/jwks.json" | "/.well-known/openid-configuration" => {
            return Ok(with_allow(
                render(
                    Answer::error(405, "invalid_request", "method not allowed"),
                    Cache::NoStore,
                ),
                "GET, HEAD",
            ));
        }
        _ => Answer::error(404, "not_found", "no such endpoint"),
    };
    Ok(render(answer, Cache::NoStore))
}

/// A `POST` to `/login`, `/token` or `/logout`.
async fn token_endpoint(
    path: &str,
    headers: HeaderMap,
    body: Incoming,
    service: &Arc<Service>,
    peer: IpAddr,
    limits: &Limits,
) -> Answer {
    let kind = if path == "/login" {
        Kind::Json
    } else {
        Kind::Form
    };
    let body = match read(&headers, body, kind, limits).await {
        Err(answer) => return answer,
        Ok(body) => body,
    };
    match path {
        "/login" => login(service, peer, &body).await,
        "/token" => token(service, &body).await,
        _ => logout(service, &body).await,
    }
}

/// The login body: exactly these two strings.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

async fn login(service: &Arc<Service>, peer: IpAddr, body: &[u8]) -> Answer {
    let Ok(LoginBody { username, password }) = serde_json::from_slice::<LoginBody>(body) else {
        service
            .metrics
            .login_malformed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Answer::error(
            400,
            "invalid_request",
            "expected a JSON object {\"username\":\"...\",\"password\":\"...\"}",
        );
    };
    service.login(peer, username, password.into_bytes()).await
}

async fn token(service: &Arc<Service>, body: &[u8]) -> Answer {
    let form = match Form::parse(body) {
        Ok(form) => form,
        Err(answer) => return answer,
    };
    // RFC 6749 §5.2.
    match form.get("grant_type") {
        None => return Answer::error(400, "invalid_request", "grant_type is missing"),
        Some("refresh_token") => {}
        Some(_) => {
            return Answer::error(
                400,
                "unsupported_grant_type",
                "only grant_type=refresh_token is supported",
            )
        }
    }
    match form.get("refresh_token") {
        Some(token) if !token.is_empty() => service.refresh(token.to_owned()).await,
        _ => Answer::error(400, "invalid_request", "refresh_token is missing"),
    }
}

async fn logout(service: &Arc<Service>, body: &[u8]) -> Answer {
    let form = match Form::parse(body) {
        Ok(form) => form,
        Err(answer) => return answer,
    };
    match form.get("refresh_token").or_else(|| form.get("token")) {
        Some(token) if !token.is_empty() => service.logout(token.to_owned()).await,
        _ => Answer::error(400, "invalid_request", "refresh_token is missing"),
    }
}

/// An `application/x-www-form-urlencoded` body (WHATWG URL §5.1): `+` is a space,
/// percent escapes decoded; a parameter given twice is refused (RFC 6749 §3.2).
struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    fn parse(body: &[u8]) -> Result<Form, Answer> {
        let bad = |what: &str| Answer::error(400, "invalid_request", what);
        let text = std::str::from_utf8(body).map_err(|_| bad("the form is not UTF-8"))?;
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in text.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let decode = |s: &str| -> Result<String, Answer> {
                let spaced = s.replace('+', " ");
                let mut scratch = Vec::new();
                let bytes = percent_decode(&spaced, &mut scratch)
                    .map_err(|()| bad("malformed percent-encoding"))?;
                String::from_utf8(bytes.to_vec()).map_err(|_| bad("the form is not UTF-8"))
            };
            let name = decode(name)?;
            let value = decode(value)?;
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(bad("a parameter is given more than once"));
            }
            pairs.push((name, value));
        }
        Ok(Form { pairs })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Checks the content type and reads the body within the limits.
async fn read(
    headers: &HeaderMap,
    body: Incoming,
    kind: Kind,
    limits: &Limits,
) -> Result<Bytes, Answer> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match (kind, media.as_deref()) {
        (Kind::Json, Some("application/json"))
        | (Kind::Form, Some("application/x-www-form-urlencoded")) => {}
        // SPEC §11: a cross-site form cannot post JSON, so it cannot log a user in.
        (Kind::Json, _) => {
            return Err(Answer::error(
                415,
                "invalid_request",
                "Content-Type must be application/json",
            ));
        }
        (Kind::Form, _) => {
            return Err(Answer::error(
                400,
                "invalid_request",
                "Content-Type must be application/x-www-form-urlencoded",
            ));
        }
    }
    let too_large = || Answer::error(413, "invalid_request", "request body too large");
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
    {
        if length
            .parse::<u64>()
            .map_or(true, |n| n > limits.max_body_bytes as u64)
        {
            return Err(too_large());
        }
    }
    let collected = tokio::time::timeout(
        limits.body_timeout,
        Limited::new(body, limits.max_body_bytes).collect(),
    )
    .await;
    match collected {
        Err(_) => Err(Answer::error(
            408,
            "invalid_request",
            "the body did not arrive in time",
        )),
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(Answer::error(400, "invalid_request", "incomplete body")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cache {
    /// Token answers and errors (RFC 6749 §5.1).
    NoStore,
    /// Key and discovery documents: cacheable for five minutes.
    Public,
}

fn render(answer: Answer, cache: Cache) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(answer.body)));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    match cache {
        Cache::NoStore => {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        }
        Cache::Public => {
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
        }
    }
    if let Some(seconds) = answer.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn with_allow(mut response: Response<Full<Bytes>>, allow: &'static str) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests;
