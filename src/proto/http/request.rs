//! Reading, parsing and validating the HTTP/1.1 upgrade request head (RFC 7230, RFC 6455 §4.2.1).
//!
//! [`HeadReader`] finds the end of the head in a growing buffer, scanning each byte once and
//! refusing early what cannot be an HTTP/1.1 request; [`parse_head`] is a borrowed httparse
//! view of that head; [`validate_upgrade`] applies the WebSocket opening-handshake rules in
//! the order SPEC §4 gives them.

use std::fmt;

use super::fields::{list_tokens, trim_ows};
use crate::proto::ws::accept::is_valid_key;

/// Most header lines a request may carry (SPEC §4: more is 431).
pub const MAX_HEADERS: usize = 64;

/// The only protocol version the gateway speaks on the upgrade request.
const HTTP_VERSION: &[u8; 8] = b"HTTP/1.1";

/// Why a request head was refused. The HTTP answer for each variant is decided in the one
/// status table, `gate::reject` (`Reject::from(HttpError)`); `proto` knows nothing of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// The head (leading CRLFs included) is longer than `max_request_bytes`.
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header lines.
    TooManyHeaders,
    /// Not a syntactically valid HTTP/1.1 request; the reason is a short fixed text.
    Malformed(&'static str),
    /// A well-formed request whose method is not GET.
    MethodNotAllowed,
    /// No `Upgrade` header carrying the `websocket` token.
    MissingUpgrade,
    /// No `Connection` header carrying the `upgrade` token.
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Key` missing, repeated or not 16 bytes of canonical base64.
    BadKey,
    /// `Sec-WebSocket-Version` missing, repeated or not `13`.
    UnsupportedVersion,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::HeadTooLarge => f.write_str("request head too large"),
            HttpError::TooManyHeaders => f.write_str("too many header fields"),
            HttpError::Malformed(reason) => write!(f, "malformed request: {reason}"),
            HttpError::MethodNotAllowed => f.write_str("method not allowed"),
            HttpError::MissingUpgrade => f.write_str("missing Upgrade: websocket"),
            HttpError::MissingConnectionUpgrade => f.write_str("missing Connection: upgrade"),
            HttpError::BadKey => f.write_str("missing or invalid Sec-WebSocket-Key"),
            HttpError::UnsupportedVersion => f.write_str("unsupported Sec-WebSocket-Version"),
        }
    }
}

impl std::error::Error for HttpError {}

// === HeadReader ===

/// Where the scan of the head stands; each state names what the next byte may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Before the request line: an empty line (CRLF) or the first byte of the method.
    Preamble,
    /// Saw CR of an empty line before the request line.
    PreambleCr,
    /// Inside the method token.
    Method,
    /// After the SP that ends the method: the first byte of the request target.
    TargetStart,
    /// Inside the request target.
    Target,
    /// Matched this many bytes of `HTTP/1.1`.
    Version(u8),
    /// After `HTTP/1.1`: the CR ending the request line.
    RequestLineEnd,
    /// Saw the CR ending the request line or a header line.
    LineCr,
    /// At the start of a header line, or of the empty line that ends the head.
    LineStart,
    /// Inside a header line.
    Line,
    /// Saw the CR of the empty line that ends the head.
    EndCr,
}

/// Finds the end of the request head in a buffer that grows as bytes arrive, looking at each
/// byte once, and refuses at the first byte what cannot be an HTTP/1.1 request.
///
/// Call [`HeadReader::poll`] with the whole buffer received so far after each read. The
/// buffer must only grow between calls (its earlier bytes unchanged).
#[derive(Debug, Clone)]
pub struct HeadReader {
    /// Bytes of the buffer already scanned.
    scanned: usize,
    scan: Scan,
    /// Set once `poll` has returned a head length or an error; later polls repeat it.
    outcome: Option<Result<usize, HttpError>>,
}

impl Default for HeadReader {
    fn default() -> Self {
        Self::new()
    }
}

/// RFC 7230 §3.2.6: `tchar`, the bytes of a token (the method is one).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 3986 §2: the bytes a request target may hold (visible ASCII; no spaces, no controls,
/// no raw non-ASCII, which must be percent-encoded).
fn is_target_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

impl HeadReader {
    /// A reader for a new connection.
    pub fn new() -> Self {
        HeadReader {
            scanned: 0,
            scan: Scan::Preamble,
            outcome: None,
        }
    }

    /// Scans the bytes added to `buf` since the last call. Returns `Ok(Some(head_len))` once
    /// the head (through its final CRLFCRLF) is complete, `Ok(None)` while more is needed.
    /// Bytes after `head_len` belong to the WebSocket and stay with the caller. Fails with
    /// `HeadTooLarge` once more than `max_request_bytes` arrived without a complete head, and
    /// with `Malformed` at the first byte that cannot belong to an HTTP/1.1 request head.
    pub fn poll(
        &mut self,
        buf: &[u8],
        max_request_bytes: usize,
    ) -> Result<Option<usize>, HttpError> {
        if let Some(outcome) = self.outcome {
            return outcome.map(Some);
        }
        // SPEC §4: "request line + headers over `max_request_bytes` (leading CRLFs count)" is
        // 431. Bytes past the limit are never scanned: a head ending there is too large anyway.
        let limit = buf.len().min(max_request_bytes);
        let new = buf.get(self.scanned..limit).unwrap_or_default();
        for (offset, &b) in new.iter().enumerate() {
            let at = self.scanned + offset;
            match self.step(b) {
                Ok(false) => {}
                Ok(true) => return self.finish(Ok(at + 1)).map(Some),
                Err(e) => return self.finish(Err(e)).map(Some),
            }
        }
        self.scanned = self.scanned.max(limit);
        if buf.len() > max_request_bytes {
            return self.finish(Err(HttpError::HeadTooLarge)).map(Some);
        }
        Ok(None)
    }

    fn finish(&mut self, outcome: Result<usize, HttpError>) -> Result<usize, HttpError> {
        self.outcome = Some(outcome);
        outcome
    }

    /// Advances over one byte; `Ok(true)` when it is the last byte of the head.
    fn step(&mut self, b: u8) -> Result<bool, HttpError> {
        const BARE_CR: HttpError = HttpError::Malformed("CR not followed by LF");
        const BARE_LF: HttpError = HttpError::Malformed("LF not preceded by CR");
        let next = match (self.scan, b) {
            // RFC 7230 §3.5: "a server that is expecting to receive and parse a request-line
            // SHOULD ignore at least one empty line (CRLF) received prior to the request-line".
            (Scan::Preamble, b'\r') => Scan::PreambleCr,
            (Scan::PreambleCr, b'\n') => Scan::Preamble,
            (Scan::PreambleCr, _) => return Err(BARE_CR),
            // RFC 7230 §3.1.1: `request-line = method SP request-target SP HTTP-version CRLF`,
            // `method = token`. A TLS ClientHello (0x16) or binary garbage fails right here.
            (Scan::Preamble, b) if is_tchar(b) => Scan::Method,
            (Scan::Preamble, _) => return Err(HttpError::Malformed("not an HTTP request")),
            (Scan::Method, b) if is_tchar(b) => Scan::Method,
            (Scan::Method, b' ') => Scan::TargetStart,
            (Scan::Method, _) => return Err(HttpError::Malformed("invalid method")),
            (Scan::TargetStart | Scan::Target, b) if is_target_byte(b) => Scan::Target,
            (Scan::Target, b' ') => Scan::Version(0),
            (Scan::TargetStart | Scan::Target, _) => {
                return Err(HttpError::Malformed("invalid request target"))
            }
            // SPEC §4: anything but HTTP/1.1 (HTTP/1.0, the HTTP/2 preface "PRI * HTTP/2.0")
            // is refused as soon as its version byte differs.
            (Scan::Version(matched), b) => {
                let matched = usize::from(matched);
                if HTTP_VERSION.get(matched) != Some(&b) {
                    return Err(HttpError::Malformed("not HTTP/1.1"));
                }
                match u8::try_from(matched + 1) {
                    Ok(n) if usize::from(n) < HTTP_VERSION.len() => Scan::Version(n),
                    _ => Scan::RequestLineEnd,
                }
            }
            (Scan::RequestLineEnd, b'\r') => Scan::LineCr,
            (Scan::RequestLineEnd, _) => return Err(HttpError::Malformed("not HTTP/1.1")),
            // RFC 7230 §3.5 lets a recipient accept a bare LF as a line end; the gateway does
            // not, so that it and every backend agree on where each line ends.
            (Scan::LineCr, b'\n') => Scan::LineStart,
            (Scan::LineCr, _) => return Err(BARE_CR),
            (Scan::LineStart, b'\r') => Scan::EndCr,
            (Scan::EndCr, b'\n') => return Ok(true),
            (Scan::EndCr, _) => return Err(BARE_CR),
            (Scan::LineStart | Scan::Line, b'\n') => return Err(BARE_LF),
            (Scan::Line, b'\r') => Scan::LineCr,
            // Header syntax proper is httparse's job once the head is complete.
            (Scan::LineStart | Scan::Line, _) => Scan::Line,
        };
        self.scan = next;
        Ok(false)
    }
}

// === RequestHead ===

/// A parsed request head, borrowing the received bytes and the caller's header array.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'h, 'b> {
    /// The method token, e.g. `GET`.
    pub method: &'b str,
    /// The request target as sent.
    pub target: &'b str,
    /// The target before any '?' (and before any '#').
    pub path: &'b str,
    /// The target after the first '?', without a `#fragment`.
    pub query: Option<&'b str>,
    /// Every header line, in order.
    pub headers: &'h [httparse::Header<'b>],
}

impl<'h, 'b> RequestHead<'h, 'b> {
    /// The value of the first header called `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers_named(name).next()
    }

    /// The values of every header called `name` (ASCII case-insensitive), in order.
    pub fn headers_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'b [u8]> + 's {
        let headers: &'s [httparse::Header<'b>] = self.headers;
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// How many headers are called `name` (ASCII case-insensitive).
    pub fn header_count(&self, name: &str) -> usize {
        self.headers_named(name).count()
    }

    /// The value of the header `name` when it appears exactly once, trimmed of OWS.
    fn single_header(&self, name: &str) -> Option<&'b [u8]> {
        let mut values = self.headers_named(name);
        match (values.next(), values.next()) {
            (Some(value), None) => Some(trim_ows(value)),
            _ => None,
        }
    }

    /// True when some header `name` lists `token` (comma-separated, ASCII case-insensitive).
    fn has_token(&self, name: &str, token: &[u8]) -> bool {
        self.headers_named(name)
            .flat_map(list_tokens)
            .any(|element| element.eq_ignore_ascii_case(token))
    }
}

/// Splits an origin-form target into path and query, dropping any fragment.
fn split_target(target: &str) -> (&str, Option<&str>) {
    // RFC 3986 §3.5: a fragment starts at the first '#', wherever it is.
    let without_fragment = target.split_once('#').map_or(target, |(before, _)| before);
    match without_fragment.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (without_fragment, None),
    }
}

/// Parses a complete head (as delimited by [`HeadReader`]) into `headers`.
pub fn parse_head<'h, 'b>(
    head: &'b [u8],
    headers: &'h mut [httparse::Header<'b>; MAX_HEADERS],
) -> Result<RequestHead<'h, 'b>, HttpError> {
    let mut request = httparse::Request::new(&mut headers[..]);
    let parsed = match request.parse(head) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err(HttpError::Malformed("incomplete head")),
        // SPEC §4: "more than 64 header lines" is 431.
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(e) => return Err(HttpError::Malformed(httparse_reason(e))),
    };
    if parsed != head.len() {
        return Err(HttpError::Malformed("bytes after the head"));
    }
    let httparse::Request {
        method,
        path,
        version,
        headers,
    } = request;
    // SPEC §4: anything that is not an HTTP/1.1 request line is 400 (httparse also takes 1.0).
    if version != Some(1) {
        return Err(HttpError::Malformed("not HTTP/1.1"));
    }
    let (Some(method), Some(target)) = (method, path) else {
        return Err(HttpError::Malformed("incomplete request line"));
    };
    let (path, query) = split_target(target);
    let headers: &'h [httparse::Header<'b>] = headers;
    Ok(RequestHead {
        method,
        target,
        path,
        query,
        headers,
    })
}

fn httparse_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid request line",
        httparse::Error::TooManyHeaders => "too many header fields",
        httparse::Error::Version => "not HTTP/1.1",
    }
}

// === validate_upgrade ===

/// What a valid WebSocket upgrade request carries for the rest of the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upgrade<'b> {
    /// `Sec-WebSocket-Key`, trimmed, valid per [`is_valid_key`].
    pub key: &'b [u8],
    /// `Origin`, trimmed, when present.
    pub origin: Option<&'b str>,
}

/// Checks the RFC 6455 §4.2.1 opening-handshake rules, in SPEC §4's order.
pub fn validate_upgrade<'b>(head: &RequestHead<'_, 'b>) -> Result<Upgrade<'b>, HttpError> {
    // RFC 6455 §4.2.1 item 1: "An HTTP/1.1 or higher GET request". SPEC §4: any other method
    // on a well-formed request is 405, whatever its headers. Methods are case-sensitive
    // (RFC 7230 §3.1.1).
    if head.method != "GET" {
        return Err(HttpError::MethodNotAllowed);
    }
    // RFC 6455 §4.2.1 item 1: "including a Request-URI" that is a resource name; RFC 7230
    // §5.3.1: origin-form is `absolute-path [ "?" query ]`.
    if !head.target.starts_with('/') {
        return Err(HttpError::Malformed("request target not in origin-form"));
    }
    // RFC 7230 §5.4: "A server MUST respond with a 400 (Bad Request) status code to any
    // HTTP/1.1 request message that lacks a Host header field and to any request message
    // that contains more than one Host header field".
    if head.header_count("host") != 1 {
        return Err(HttpError::Malformed("Host missing or repeated"));
    }
    // RFC 9112 §6.3 / SPEC §4: a GET upgrade has no body. Framing headers on it would
    // make the bytes after the head ambiguous (body or frames?): refused, whatever value.
    if head.header_count("content-length") > 0 || head.header_count("transfer-encoding") > 0 {
        return Err(HttpError::Malformed("body framing on an upgrade request"));
    }
    // RFC 6455 §4.2.1 item 3: "An |Upgrade| header field containing the value "websocket",
    // treated as an ASCII case-insensitive value".
    if !head.has_token("upgrade", b"websocket") {
        return Err(HttpError::MissingUpgrade);
    }
    // RFC 6455 §4.2.1 item 4: "A |Connection| header field that includes the token "Upgrade",
    // treated as an ASCII case-insensitive value".
    if !head.has_token("connection", b"upgrade") {
        return Err(HttpError::MissingConnectionUpgrade);
    }
    // RFC 6455 §4.2.1 item 5: "A |Sec-WebSocket-Key| header field with a base64-encoded value
    // that, when decoded, is 16 bytes in length"; §11.3.1: it MUST NOT appear more than once.
    let key = match head.single_header("sec-websocket-key") {
        Some(key) if is_valid_key(key) => key,
        _ => return Err(HttpError::BadKey),
    };
    // RFC 6455 §4.2.1 item 6: "A |Sec-WebSocket-Version| header field, with a value of 13";
    // §4.2.2: otherwise answer 426 with the versions supported.
    if head.single_header("sec-websocket-version") != Some(b"13") {
        return Err(HttpError::UnsupportedVersion);
    }
    // RFC 6454 §7.3: "the user agent MUST NOT include more than one Origin header field".
    let mut origins = head.headers_named("origin");
    let origin = match (origins.next(), origins.next()) {
        (None, _) => None,
        (Some(value), None) => Some(
            std::str::from_utf8(trim_ows(value))
                .map_err(|_| HttpError::Malformed("Origin is not UTF-8"))?,
        ),
        (Some(_), Some(_)) => return Err(HttpError::Malformed("Origin repeated")),
    };
    Ok(Upgrade { key, origin })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn upgrade_request(extra: &str) -> String {
        format!(
            "GET /chat?room=1&access_token=abc#frag HTTP/1.1\r\n\
             Host: server.example.com\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\n\
             Sec-WebSocket-Version: 13\r\n\
             {extra}\r\n"
        )
    }

    /// Replaces the first line starting with `prefix` (a header name and colon) by `line`
    /// ("" removes it).
    fn with_line(request: &str, prefix: &str, line: &str) -> String {
        let mut out = String::new();
        let mut done = false;
        for l in request.split_inclusive("\r\n") {
            if !done && l.starts_with(prefix) {
                done = true;
                if !line.is_empty() {
                    out.push_str(line);
                    out.push_str("\r\n");
                }
            } else {
                out.push_str(l);
            }
        }
        assert!(done, "no line {prefix}");
        out
    }

    fn read_all(data: &[u8], max: usize) -> Result<Option<usize>, HttpError> {
        HeadReader::new().poll(data, max)
    }

    fn validate(request: &str) -> Result<(), HttpError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let head_len =
            read_all(request.as_bytes(), 8192)?.ok_or(HttpError::Malformed("partial"))?;
        let head = parse_head(&request.as_bytes()[..head_len], &mut headers)?;
        validate_upgrade(&head).map(|_| ())
    }

    // --- HeadReader ---

    #[test]
    fn finds_head_end_and_keeps_trailing_bytes() {
        let request = upgrade_request("");
        let mut data = request.clone().into_bytes();
        data.extend_from_slice(b"\x81\x85frame");
        assert_eq!(read_all(&data, 8192), Ok(Some(request.len())));
    }

    #[test]
    fn byte_by_byte_matches_one_chunk() {
        let request = upgrade_request("");
        let data = request.as_bytes();
        let mut reader = HeadReader::new();
        for end in 0..data.len() {
            assert_eq!(reader.poll(&data[..end], 8192), Ok(None), "at {end}");
        }
        assert_eq!(reader.poll(data, 8192), Ok(Some(data.len())));
        // Later polls repeat the outcome, even with more bytes.
        let mut more = data.to_vec();
        more.extend_from_slice(b"\r\n\r\n");
        assert_eq!(reader.poll(&more, 8192), Ok(Some(data.len())));
    }

    #[test]
    fn crlfcrlf_split_at_every_point() {
        let data = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for split in 0..=data.len() {
            let mut reader = HeadReader::new();
            let first = reader.poll(&data[..split], 8192);
            let result = match first {
                Ok(None) => reader.poll(data, 8192),
                other => other,
            };
            assert_eq!(result, Ok(Some(data.len())), "split {split}");
        }
    }

    #[test]
    fn leading_crlfs_are_skipped_and_counted() {
        let data = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(read_all(data, 8192), Ok(Some(data.len())));
        assert_eq!(read_all(data, data.len()), Ok(Some(data.len())));
        assert_eq!(read_all(data, data.len() - 1), Err(HttpError::HeadTooLarge));
        // Nothing but empty lines: still waiting, until the limit.
        assert_eq!(read_all(b"\r\n\r\n\r\n", 8192), Ok(None));
        assert_eq!(read_all(b"\r\n\r\n\r\n", 4), Err(HttpError::HeadTooLarge));
    }

    #[test]
    fn size_limit_is_inclusive() {
        let data = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(read_all(data, data.len()), Ok(Some(data.len())));
        assert_eq!(read_all(data, data.len() - 1), Err(HttpError::HeadTooLarge));
        assert_eq!(read_all(data, 0), Err(HttpError::HeadTooLarge));
        // Extra bytes after a head that fits do not count against it.
        let mut more = data.to_vec();
        more.extend_from_slice(&[0u8; 100]);
        assert_eq!(read_all(&more, data.len()), Ok(Some(data.len())));
    }

    #[test]
    fn too_large_without_end() {
        let mut data = b"GET / HTTP/1.1\r\nX: ".to_vec();
        data.resize(100, b'a');
        assert_eq!(read_all(&data, 100), Ok(None));
        data.push(b'a');
        assert_eq!(read_all(&data, 100), Err(HttpError::HeadTooLarge));
        // Incrementally: the poll that passes the limit fails.
        let mut reader = HeadReader::new();
        assert_eq!(reader.poll(&data[..50], 100), Ok(None));
        assert_eq!(reader.poll(&data, 100), Err(HttpError::HeadTooLarge));
        assert_eq!(reader.poll(&data, 100), Err(HttpError::HeadTooLarge));
    }

    #[test]
    fn tls_client_hello_rejected_at_first_bytes() {
        let hello = [
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ];
        assert_eq!(
            read_all(&hello[..2], 8192),
            Err(HttpError::Malformed("not an HTTP request"))
        );
    }

    #[test]
    fn http2_preface_rejected_before_line_end() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let mut reader = HeadReader::new();
        assert_eq!(reader.poll(&preface[..11], 8192), Ok(None));
        assert_eq!(
            reader.poll(&preface[..12], 8192),
            Err(HttpError::Malformed("not HTTP/1.1"))
        );
    }

    #[test]
    fn other_versions_rejected() {
        for data in [
            &b"GET / HTTP/1.0\r\n"[..],
            b"GET / HTTP/1.10\r\n",
            b"GET / http/1.1\r\n",
            b"GET / HTTP/2\r\n",
            b"GET /\r\n",
        ] {
            assert!(
                matches!(read_all(data, 8192), Err(HttpError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn garbage_and_bad_request_lines_rejected_early() {
        for data in [
            &b"\x00\x01\x02"[..],
            b" GET / HTTP/1.1",
            b"\n",
            b"\r\rGET",
            b"GE\x7fT",
            b"GET  / HTTP/1.1",
            b"GET /a\tb HTTP/1.1",
            b"GET /\xc3\xa9 HTTP/1.1",
            b"GET / HTTP/1.1 \r\n",
            b"GET / HTTP/1.1\n",
            b"GET / HTTP/1.1\r\r",
            b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\rX",
            b"GET / HTTP/1.1\r\nHost: a\rX\r\n\r\n",
        ] {
            assert!(
                matches!(read_all(data, 8192), Err(HttpError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn empty_input_waits() {
        assert_eq!(read_all(b"", 8192), Ok(None));
        assert_eq!(read_all(b"GET", 8192), Ok(None));
        assert_eq!(read_all(b"GET / HTTP/1.", 8192), Ok(None));
    }

    #[test]
    fn shrinking_buffer_does_not_panic() {
        let mut reader = HeadReader::new();
        assert_eq!(reader.poll(b"GET / HTTP/1.1\r\n", 8192), Ok(None));
        assert_eq!(reader.poll(b"GET", 8192), Ok(None));
    }

    // --- parse_head ---

    #[test]
    fn parses_method_target_path_query_headers() {
        let request = upgrade_request("Origin: https://app.example.com\r\n");
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let head = parse_head(request.as_bytes(), &mut headers).expect("valid head");
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/chat?room=1&access_token=abc#frag");
        assert_eq!(head.path, "/chat");
        assert_eq!(head.query, Some("room=1&access_token=abc"));
        assert_eq!(head.headers.len(), 6);
        assert_eq!(head.header("HOST"), Some(&b"server.example.com"[..]));
        assert_eq!(head.header("x-missing"), None);
        assert_eq!(head.header_count("upgrade"), 1);
        let upgrade = validate_upgrade(&head).expect("valid upgrade");
        assert_eq!(upgrade.key, KEY.as_bytes());
        assert_eq!(upgrade.origin, Some("https://app.example.com"));
    }

    #[test]
    fn repeated_headers_in_order() {
        let request = "GET / HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\nX-B: 3\r\nX-A: 4\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let head = parse_head(request.as_bytes(), &mut headers).expect("valid head");
        let values: Vec<&[u8]> = head.headers_named("X-a").collect();
        assert_eq!(values, vec![&b"1"[..], b"2", b"4"]);
        assert_eq!(head.header_count("x-A"), 3);
        assert_eq!(head.header("x-a"), Some(&b"1"[..]));
    }

    #[test]
    fn target_splitting() {
        for (target, path, query) in [
            ("/", "/", None),
            ("/a?", "/a", Some("")),
            ("/a?b?c=d", "/a", Some("b?c=d")),
            ("/a#x?y", "/a", None),
            ("/a?q#", "/a", Some("q")),
            ("*", "*", None),
        ] {
            assert_eq!(split_target(target), (path, query), "{target}");
        }
    }

    #[test]
    fn too_many_headers() {
        let mut request = String::from("GET / HTTP/1.1\r\n");
        for i in 0..MAX_HEADERS {
            request.push_str(&format!("X-{i}: v\r\n"));
        }
        let ok = format!("{request}\r\n");
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        assert!(parse_head(ok.as_bytes(), &mut headers).is_ok());
        let over = format!("{request}X-last: v\r\n\r\n");
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        assert_eq!(
            parse_head(over.as_bytes(), &mut headers).err(),
            Some(HttpError::TooManyHeaders)
        );
    }

    #[test]
    fn parse_errors_are_malformed() {
        for head in [
            &b"GET / HTTP/1.0\r\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nBad Name: a\r\n\r\n",
            b"GET / HTTP/1.1\r\n: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
            b"GET / HTTP/1.1\r\n folded: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n\r\nextra",
            b"",
        ] {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            assert!(
                matches!(parse_head(head, &mut headers), Err(HttpError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    // --- validate_upgrade ---

    #[test]
    fn valid_upgrade_variants() {
        let base = upgrade_request("");
        for (prefix, line) in [
            ("Upgrade:", "Upgrade: WebSocket"),
            ("Upgrade:", "Upgrade: h2c, websocket"),
            ("Upgrade:", "upgrade:   websocket  "),
            ("Connection:", "Connection: keep-alive, Upgrade"),
            ("Connection:", "connection: UPGRADE"),
            ("Sec-WebSocket-Version:", "Sec-WebSocket-Version:  13 "),
        ] {
            let request = with_line(&base, prefix, line);
            assert_eq!(validate(&request), Ok(()), "{line}");
        }
        // Several Upgrade / Connection lines.
        let request = with_line(&base, "Upgrade:", "Upgrade: h2c\r\nUpgrade: websocket");
        assert_eq!(validate(&request), Ok(()));
        let request = with_line(
            &base,
            "Connection:",
            "Connection: keep-alive\r\nConnection: upgrade",
        );
        assert_eq!(validate(&request), Ok(()));
        // Leading empty lines and data after the head.
        let request = format!("\r\n{base}\x01\x02abcd");
        assert_eq!(validate(&request), Ok(()));
    }

    #[test]
    fn other_methods_are_405_even_without_upgrade_headers() {
        for request in [
            "POST /chat HTTP/1.1\r\nHost: a\r\n\r\n",
            "get / HTTP/1.1\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        ] {
            assert_eq!(
                validate(request),
                Err(HttpError::MethodNotAllowed),
                "{request}"
            );
        }
        let put = upgrade_request("").replacen("GET", "PUT", 1);
        assert_eq!(validate(&put), Err(HttpError::MethodNotAllowed));
    }

    #[test]
    fn target_must_be_origin_form() {
        for target in ["*", "http://a/chat", "chat", "a:443"] {
            let request =
                upgrade_request("").replacen("/chat?room=1&access_token=abc#frag", target, 1);
            assert!(
                matches!(validate(&request), Err(HttpError::Malformed(_))),
                "{target}"
            );
        }
    }

    #[test]
    fn host_exactly_once() {
        let base = upgrade_request("");
        let none = with_line(&base, "Host:", "");
        assert!(matches!(validate(&none), Err(HttpError::Malformed(_))));
        let twice = with_line(&base, "Host:", "Host: a\r\nhost: a");
        assert!(matches!(validate(&twice), Err(HttpError::Malformed(_))));
    }

    #[test]
    fn missing_upgrade() {
        let base = upgrade_request("");
        for line in [
            "",
            "Upgrade: h2c",
            "Upgrade: websockets",
            "Upgrade: websocket/13",
            "Upgrade: ",
            "Upgrade: web socket",
        ] {
            let request = with_line(&base, "Upgrade:", line);
            assert_eq!(validate(&request), Err(HttpError::MissingUpgrade), "{line}");
        }
        // Upgrade is checked before Connection.
        let request = with_line(&with_line(&base, "Upgrade:", ""), "Connection:", "");
        assert_eq!(validate(&request), Err(HttpError::MissingUpgrade));
    }

    #[test]
    fn missing_connection_upgrade() {
        let base = upgrade_request("");
        for line in [
            "",
            "Connection: keep-alive",
            "Connection: upgrades",
            "Connection: close upgrade",
            "Connection:",
        ] {
            let request = with_line(&base, "Connection:", line);
            assert_eq!(
                validate(&request),
                Err(HttpError::MissingConnectionUpgrade),
                "{line}"
            );
        }
    }

    #[test]
    fn bad_key() {
        let base = upgrade_request("");
        for line in [
            String::new(),
            "Sec-WebSocket-Key: ".to_owned(),
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ".to_owned(),
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==".to_owned(),
            "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
            format!("Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Key: {KEY}"),
            format!("Sec-WebSocket-Key: {KEY}, {KEY}"),
        ] {
            let request = with_line(&base, "Sec-WebSocket-Key:", &line);
            assert_eq!(validate(&request), Err(HttpError::BadKey), "{line}");
        }
        // The key is checked before the version.
        let request = with_line(
            &with_line(&base, "Sec-WebSocket-Key:", ""),
            "Sec-WebSocket-Version:",
            "",
        );
        assert_eq!(validate(&request), Err(HttpError::BadKey));
    }

    #[test]
    fn unsupported_version() {
        let base = upgrade_request("");
        for line in [
            "",
            "Sec-WebSocket-Version: 8",
            "Sec-WebSocket-Version: 13, 8",
            "Sec-WebSocket-Version: 013",
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13",
            "Sec-WebSocket-Version:",
        ] {
            let request = with_line(&base, "Sec-WebSocket-Version:", line);
            assert_eq!(
                validate(&request),
                Err(HttpError::UnsupportedVersion),
                "{line}"
            );
        }
    }

    #[test]
    fn origin_rules() {
        let twice = upgrade_request("Origin: https://a\r\nOrigin: https://a\r\n");
        assert!(matches!(validate(&twice), Err(HttpError::Malformed(_))));
        let mut not_utf8 = upgrade_request("Origin: https://\u{ff}\r\n").into_bytes();
        // Make the value invalid UTF-8 (the format! above wrote U+00FF as two bytes).
        let pos = not_utf8
            .windows(2)
            .position(|w| w == "\u{ff}".as_bytes())
            .expect("marker present");
        not_utf8.splice(pos..pos + 2, [0xffu8]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let head_len = read_all(&not_utf8, 8192).expect("reads").expect("complete");
        let head = parse_head(&not_utf8[..head_len], &mut headers).expect("parses");
        assert!(matches!(
            validate_upgrade(&head),
            Err(HttpError::Malformed(_))
        ));
        let none = upgrade_request("");
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let head = parse_head(none.as_bytes(), &mut headers).expect("parses");
        assert_eq!(validate_upgrade(&head).map(|u| u.origin), Ok(None));
    }

    #[test]
    fn body_framing_on_the_upgrade_is_refused() {
        // RFC 9112 §6.3: a GET upgrade has no body; SPEC §4: 400 for either header, any value.
        for extra in [
            "Content-Length: 0\r\n",
            "Content-Length: 5\r\n",
            "Transfer-Encoding: chunked\r\n",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "transfer-encoding: identity\r\n",
        ] {
            assert!(
                matches!(
                    validate(&upgrade_request(extra)),
                    Err(HttpError::Malformed(_))
                ),
                "{extra:?}"
            );
        }
        // A header merely named alike is no framing header.
        assert_eq!(validate(&upgrade_request("Content-Lengthy: 5\r\n")), Ok(()));
        // Method first: a POST with a body is still 405.
        let post = upgrade_request("Content-Length: 5\r\n").replacen("GET", "POST", 1);
        assert_eq!(validate(&post), Err(HttpError::MethodNotAllowed));
    }
}
