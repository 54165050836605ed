//! The control plane's HTTP client for JWK Sets and discovery documents (SPEC §9): hyper's
//! HTTP/1.1 client connection over tokio, with rustls (ring) for https.
//!
//! The rules of SPEC §9, all enforced here: https, except `http://` to a loopback address;
//! no redirect to another host (a redirect to the same scheme, host and port is followed, at
//! most [`MAX_REDIRECTS`] times); [`FETCH_TIMEOUT`] from connect to the last byte; a body
//! over the caller's limit is refused while it streams, never buffered whole. Nothing here
//! runs on a worker.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// SPEC §9: a fetch has 10 s from connect to last byte.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Same-origin redirects followed before the fetch fails.
pub const MAX_REDIRECTS: usize = 3;

/// Why a fetch failed; [`FetchError::reason`] is the `reason` label of
/// `wsgate_provider_fetch_failures_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The URL is not one SPEC §9 allows (or not a URL).
    Url(String),
    /// No connection (DNS, refused, unreachable).
    Connect(String),
    /// The TLS handshake failed (untrusted certificate, wrong name ...).
    Tls(String),
    /// HTTP-level failure (malformed response, connection closed early).
    Http(String),
    /// A status other than 200.
    Status(u16),
    /// A redirect to another host, or too many redirects.
    Redirect(String),
    /// The body passed the size limit.
    TooLarge,
    /// Connect to last byte took longer than [`FETCH_TIMEOUT`].
    Timeout,
    /// The document was not a usable JWK Set / discovery document.
    Document(String),
    /// A local file could not be read.
    File(String),
}

impl FetchError {
    /// The metric label (a fixed set).
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::Url(_) => "url",
            FetchError::Connect(_) => "connect",
            FetchError::Tls(_) => "tls",
            FetchError::Http(_) => "http",
            FetchError::Status(_) => "status",
            FetchError::Redirect(_) => "redirect",
            FetchError::TooLarge => "too_large",
            FetchError::Timeout => "timeout",
            FetchError::Document(_) => "document",
            FetchError::File(_) => "file",
        }
    }
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Url(e) => write!(f, "bad URL: {e}"),
            FetchError::Connect(e) => write!(f, "cannot connect: {e}"),
            FetchError::Tls(e) => write!(f, "TLS: {e}"),
            FetchError::Http(e) => write!(f, "HTTP: {e}"),
            FetchError::Status(s) => write!(f, "HTTP status {s}"),
            FetchError::Redirect(e) => write!(f, "redirect refused: {e}"),
            FetchError::TooLarge => f.write_str("document over 1 MiB"),
            FetchError::Timeout => write!(f, "no complete answer within {FETCH_TIMEOUT:?}"),
            FetchError::Document(e) => write!(f, "{e}"),
            FetchError::File(e) => write!(f, "{e}"),
        }
    }
}

/// An `https://` URL, or an `http://` URL to a loopback host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// https (else http to loopback).
    pub https: bool,
    /// The host as written (brackets removed from an IPv6 literal).
    pub host: String,
    /// The port (default 443 / 80).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses `text` under SPEC §9's rules.
    pub fn parse(text: &str) -> Result<Url, FetchError> {
        let bad = |why: &str| FetchError::Url(format!("{why}: {:?}", shown(text)));
        let (https, rest) = if let Some(rest) = strip_prefix_ci(text, "https://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ci(text, "http://") {
            (false, rest)
        } else {
            return Err(bad("not an http(s) URL"));
        };
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(split);
        if authority.contains('@') {
            return Err(bad("credentials in URL"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("bad IPv6 literal"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad("bad port"))?,
            None if https => 443,
            None => 80,
        };
        let tail = tail.split('#').next().unwrap_or("");
        if tail.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(bad("bad path"));
        }
        let path = if tail.starts_with('/') {
            tail.to_owned()
        } else {
            format!("/{tail}")
        };
        let url = Url {
            https,
            host: host.to_owned(),
            port,
            path,
        };
        if !https && !url.is_loopback() {
            return Err(bad("http:// is only allowed to loopback addresses"));
        }
        Ok(url)
    }

    /// `localhost`, 127.0.0.0/8 or ::1.
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// Same scheme, host and port.
    fn same_origin(&self, other: &Url) -> bool {
        self.https == other.https
            && self.host.eq_ignore_ascii_case(&other.host)
            && self.port == other.port
    }

    /// The `Host` header value.
    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// A `Location` header resolved against this URL (absolute URL or absolute path).
    fn resolve(&self, location: &str) -> Result<Url, FetchError> {
        if location.starts_with('/') && !location.starts_with("//") {
            let mut next = self.clone();
            next.path = location.to_owned();
            return Ok(next);
        }
        Url::parse(location)
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// Untrusted text cut for a log line.
fn shown(s: &str) -> String {
    s.chars().take(200).collect()
}

/// The TLS client settings for one provider: `ca_file` when set, else the system's roots.
/// Blocking (reads files): call it on the blocking pool.
pub fn client_config(
    ca_file: Option<&std::path::Path>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("ca_file {}: no usable certificate", path.display()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A successful fetch.
#[derive(Debug)]
pub struct Fetched {
    /// The body (at most the caller's limit).
    pub body: Vec<u8>,
    /// `Cache-Control: max-age`, when the response had one.
    pub max_age: Option<Duration>,
}

/// GETs `url` under SPEC §9's rules, refusing a body over `max_bytes`.
pub async fn get(
    url: &str,
    tls: &Arc<rustls::ClientConfig>,
    max_bytes: usize,
) -> Result<Fetched, FetchError> {
    let url = Url::parse(url)?;
    match tokio::time::timeout(FETCH_TIMEOUT, follow(url, tls, max_bytes)).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout),
    }
}

async fn follow(
    mut url: Url,
    tls: &Arc<rustls::ClientConfig>,
    max_bytes: usize,
) -> Result<Fetched, FetchError> {
    for _ in 0..=MAX_REDIRECTS {
        let response = connect_and_get(&url, tls).await?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or(FetchError::Status(status.as_u16()))?;
            let next = url.resolve(location)?;
            // SPEC §9: no redirect to another host.
            if !url.same_origin(&next) {
                return Err(FetchError::Redirect(format!(
                    "to another host ({})",
                    shown(&next.host)
                )));
            }
            url = next;
            continue;
        }
        if status != StatusCode::OK {
            return Err(FetchError::Status(status.as_u16()));
        }
        let max_age = max_age(&response);
        let body = read_capped(response.into_body(), max_bytes).await?;
        return Ok(Fetched { body, max_age });
    }
    Err(FetchError::Redirect("too many redirects".into()))
}

/// `Cache-Control: max-age=N` (RFC 9111 §5.2.2.1); `no-store`/`no-cache` count as 0.
fn max_age<B>(response: &Response<B>) -> Option<Duration> {
    let mut found = None;
    for value in response.headers().get_all(hyper::header::CACHE_CONTROL) {
        let Ok(text) = value.to_str() else { continue };
        for directive in text.split(',') {
            let directive = directive.trim();
            if directive.eq_ignore_ascii_case("no-store")
                || directive.eq_ignore_ascii_case("no-cache")
            {
                found = Some(Duration::ZERO);
            } else if let Some((name, v)) = directive.split_once('=') {
                if name.trim().eq_ignore_ascii_case("max-age") {
                    if let Ok(secs) = v.trim().trim_matches('"').parse::<u64>() {
                        found = Some(found.map_or(Duration::from_secs(secs), |f: Duration| {
                            f.min(Duration::from_secs(secs))
                        }));
                    }
                }
            }
        }
    }
    found
}

/// Reads a body frame by frame; over `max_bytes` is refused at once.
async fn read_capped(mut body: Incoming, max_bytes: usize) -> Result<Vec<u8>, FetchError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| FetchError::Http(e.to_string()))?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > max_bytes {
                return Err(FetchError::TooLarge);
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out)
}

async fn connect_and_get(
    url: &Url,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Response<Incoming>, FetchError> {
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| FetchError::Connect(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    if url.https {
        let name = ServerName::try_from(url.host.clone())
            .map_err(|_| FetchError::Url(format!("bad host name {:?}", shown(&url.host))))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| FetchError::Tls(e.to_string()))?;
        request(stream, url).await
    } else {
        request(tcp, url).await
    }
}

async fn request<S>(io: S, url: &Url) -> Result<Response<Incoming>, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    // The connection task ends with the response body (or the timeout drops it).
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = Request::get(url.path.as_str())
        .header(hyper::header::HOST, url.host_header())
        .header(hyper::header::ACCEPT, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("wsgate/", env!("CARGO_PKG_VERSION")),
        )
        .header(hyper::header::CONNECTION, "close")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| FetchError::Http(e.to_string()))?;
    sender
        .send_request(request)
        .await
        .map_err(|e| FetchError::Http(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_spec_9() {
        let u = Url::parse("https://id.example.com/realms/app/certs?x=1#frag").expect("url");
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path.as_str()),
            (true, "id.example.com", 443, "/realms/app/certs?x=1")
        );
        let u = Url::parse("http://127.0.0.1:8080").expect("loopback");
        assert_eq!((u.port, u.path.as_str()), (8080, "/"));
        assert_eq!(u.host_header(), "127.0.0.1:8080");
        let u = Url::parse("http://[::1]:9/k").expect("v6 loopback");
        assert_eq!(
            (u.host.as_str(), u.host_header().as_str()),
            ("::1", "[::1]:9")
        );
        assert!(Url::parse("HTTP://LOCALHOST/x").is_ok());
        for bad in [
            "http://10.0.0.1/jwks",
            "http://example.com/jwks",
            "ftp://x/y",
            "https://user:pw@x/y",
            "https:///y",
            "https://x:99999/",
            "https://x/a b",
            "",
        ] {
            assert!(matches!(Url::parse(bad), Err(FetchError::Url(_))), "{bad}");
        }
    }

    #[test]
    fn redirects_resolve_and_compare_origins() {
        let base = Url::parse("https://a.example/x").expect("url");
        let same = base.resolve("/y").expect("path");
        assert!(base.same_origin(&same));
        assert_eq!(same.path, "/y");
        let other = base.resolve("https://b.example/y").expect("abs");
        assert!(!base.same_origin(&other));
        let downgrade = base.resolve("http://localhost/y").expect("abs");
        assert!(!base.same_origin(&downgrade));
        assert!(base.resolve("http://evil.example/").is_err());
    }

    #[test]
    fn cache_control_max_age() {
        let with = |v: &str| {
            let r = Response::builder()
                .header("cache-control", v)
                .body(())
                .expect("response");
            max_age(&r)
        };
        assert_eq!(with("public, max-age=300"), Some(Duration::from_secs(300)));
        assert_eq!(with("max-age=\"60\""), Some(Duration::from_secs(60)));
        assert_eq!(with("no-store"), Some(Duration::ZERO));
        assert_eq!(with("public"), None);
        assert_eq!(with("max-age=abc"), None);
    }
}
