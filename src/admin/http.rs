//! The admin listener's HTTP/1.1, sans-IO: a push parser for one request with its body, and
//! a writer for complete `Connection: close` responses.
//!
//! One request per connection: bytes after the request (pipelining) are never parsed. Sizes
//! are bounded before anything is buffered past them: the head by [`MAX_HEAD_BYTES`], the body
//! by [`MAX_BODY_BYTES`] as soon as `Content-Length` is known.

use crate::proto::http::fields::trim_ows;
use crate::proto::http::response::{reason_phrase, write_header};
use std::fmt;

/// Longest request head (request line and header lines, with their CRLFs); more is 431.
/// Admin requests are a path and a few headers; this is the gateway's own default head size.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Longest request body; more is 413. A revocation is a few hundred bytes of JSON.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Most header lines a request may carry; more is 431.
pub const MAX_HEADERS: usize = 32;

/// One complete admin request, borrowed from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminRequest<'a> {
    /// The method token, as sent (methods are case-sensitive, RFC 9110 §9.1).
    pub method: &'a str,
    /// The request target without its query string and fragment.
    pub path: &'a str,
    /// The credentials of an `Authorization: Bearer <token>` header; `None` when absent,
    /// empty, or of another scheme.
    pub bearer: Option<&'a [u8]>,
    /// Exactly `Content-Length` bytes (empty without `Content-Length`).
    pub body: &'a [u8],
}

/// Why a request could not be read; each variant knows its status and its reason text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminHttpError {
    /// The head is longer than [`MAX_HEAD_BYTES`].
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header lines.
    TooManyHeaders,
    /// Not a syntactically valid HTTP/1.x request; the reason is a short fixed text.
    Malformed(&'static str),
    /// An HTTP/1.1 request without a `Host` header.
    MissingHost,
    /// More than one `Host` header.
    RepeatedHost,
    /// A `Content-Length` that is not one decimal number.
    InvalidContentLength,
    /// More than one `Content-Length` header.
    RepeatedContentLength,
    /// Both `Transfer-Encoding` and `Content-Length` (a request-smuggling shape).
    TransferEncodingWithContentLength,
    /// A `Transfer-Encoding` (chunked bodies are not supported; send `Content-Length`).
    TransferEncodingNotSupported,
    /// A POST without `Content-Length`.
    LengthRequired,
    /// A `Content-Length` over [`MAX_BODY_BYTES`].
    BodyTooLarge,
    /// More than one `Authorization` header.
    RepeatedAuthorization,
}

impl AdminHttpError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            // RFC 6585 §5.
            AdminHttpError::HeadTooLarge | AdminHttpError::TooManyHeaders => 431,
            AdminHttpError::Malformed(_)
            | AdminHttpError::MissingHost
            | AdminHttpError::RepeatedHost
            | AdminHttpError::InvalidContentLength
            | AdminHttpError::RepeatedContentLength
            | AdminHttpError::TransferEncodingWithContentLength
            | AdminHttpError::RepeatedAuthorization => 400,
            // RFC 9110 §15.5.12: 411 asks for a `Content-Length`.
            AdminHttpError::TransferEncodingNotSupported | AdminHttpError::LengthRequired => 411,
            // RFC 9110 §15.5.14.
            AdminHttpError::BodyTooLarge => 413,
        }
    }

    /// A short fixed text saying what was wrong (the response body, with a final line feed).
    pub fn reason(&self) -> &'static str {
        match self {
            AdminHttpError::HeadTooLarge => "request head too large",
            AdminHttpError::TooManyHeaders => "too many header fields",
            AdminHttpError::Malformed(reason) => reason,
            AdminHttpError::MissingHost => "missing Host header",
            AdminHttpError::RepeatedHost => "more than one Host header",
            AdminHttpError::InvalidContentLength => "invalid Content-Length",
            AdminHttpError::RepeatedContentLength => "more than one Content-Length header",
            AdminHttpError::TransferEncodingWithContentLength => {
                "both Transfer-Encoding and Content-Length"
            }
            AdminHttpError::TransferEncodingNotSupported => {
                "Transfer-Encoding is not supported: send Content-Length"
            }
            AdminHttpError::LengthRequired => "POST needs a Content-Length",
            AdminHttpError::BodyTooLarge => "request body too large (at most 64 KiB)",
            AdminHttpError::RepeatedAuthorization => "more than one Authorization header",
        }
    }
}

impl fmt::Display for AdminHttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason(), self.status())
    }
}

impl std::error::Error for AdminHttpError {}

// === parse_request ===

/// Parses one request (head and body) from the start of `buf`.
///
/// `Ok(None)`: the request is not complete yet; call again with more bytes appended.
/// `Ok(Some((request, consumed)))`: `consumed` bytes make the request; any bytes after them
/// are left alone (the admin listener answers one request per connection).
/// Sizes are checked as soon as they are known: a head over [`MAX_HEAD_BYTES`] is refused
/// before its end arrives, and a `Content-Length` over [`MAX_BODY_BYTES`] before the body does.
pub fn parse_request(buf: &[u8]) -> Result<Option<(AdminRequest<'_>, usize)>, AdminHttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(AdminHttpError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(AdminHttpError::TooManyHeaders),
        Err(e) => return Err(AdminHttpError::Malformed(httparse_reason(e))),
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(AdminHttpError::HeadTooLarge);
    }
    let httparse::Request {
        method,
        path,
        version,
        headers,
    } = request;
    // httparse returns Complete only with all three parts; this is the type system's view.
    let (Some(method), Some(target), Some(version)) = (method, path, version) else {
        return Err(AdminHttpError::Malformed("incomplete request line"));
    };
    let headers: &[httparse::Header<'_>] = headers;

    let hosts = count(headers, "host");
    // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any
    // HTTP/1.1 request message that lacks a Host header field and to any request message
    // that contains more than one Host header field line".
    if hosts > 1 {
        return Err(AdminHttpError::RepeatedHost);
    }
    if hosts == 0 && version == 1 {
        return Err(AdminHttpError::MissingHost);
    }

    let content_length = content_length(headers)?;
    let body_len = match content_length {
        Some(len) => len,
        // RFC 9112 §6.3 (7): without Transfer-Encoding or Content-Length a request has no
        // body; §6.3 lets a server answer 411 for a body without Content-Length, and a
        // POST is how a body is sent here.
        None if method == "POST" => return Err(AdminHttpError::LengthRequired),
        None => 0,
    };
    // The body is checked against its limit before any of it is waited for.
    if body_len > MAX_BODY_BYTES {
        return Err(AdminHttpError::BodyTooLarge);
    }
    let bearer = bearer(headers)?;

    // Both terms are bounded (8 KiB and 64 KiB), so the sum cannot overflow.
    let end = head_len + body_len;
    let Some(body) = buf.get(head_len..end) else {
        return Ok(None);
    };
    Ok(Some((
        AdminRequest {
            method,
            path: path_of(target),
            bearer,
            body,
        },
        end,
    )))
}

/// Number of headers named `name` (case-insensitive, RFC 9110 §5.1).
fn count(headers: &[httparse::Header<'_>], name: &str) -> usize {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .count()
}

/// The body length from `Content-Length`, refusing every framing it cannot be sure of.
fn content_length(headers: &[httparse::Header<'_>]) -> Result<Option<usize>, AdminHttpError> {
    let mut lengths = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"));
    let first = lengths.next();
    // RFC 9112 §6.1: "A server MAY reject a request that contains both Content-Length and
    // Transfer-Encoding"; we do, as the two framings disagreeing is how requests are smuggled.
    // Without Content-Length, a transfer coding we do not decode is refused with 411
    // (RFC 9112 §6.3 lets a server ask for Content-Length instead).
    if count(headers, "transfer-encoding") > 0 {
        return Err(if first.is_some() {
            AdminHttpError::TransferEncodingWithContentLength
        } else {
            AdminHttpError::TransferEncodingNotSupported
        });
    }
    let Some(first) = first else {
        return Ok(None);
    };
    // RFC 9110 §8.6 lets a recipient merge identical repeated values; we refuse any repeat.
    if lengths.next().is_some() {
        return Err(AdminHttpError::RepeatedContentLength);
    }
    // RFC 9110 §8.6: `Content-Length = 1*DIGIT`; RFC 9112 §6.3 (5): an invalid value is an
    // unrecoverable framing error and "the server MUST respond with a 400 (Bad Request)".
    let digits = trim_ows(first.value);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(AdminHttpError::InvalidContentLength);
    }
    // Accumulate with a cap: any value past the body limit answers 413, however long.
    let mut length: usize = 0;
    for &digit in digits {
        length = length
            .saturating_mul(10)
            .saturating_add(usize::from(digit - b'0'));
    }
    Ok(Some(length))
}

/// The token of the one `Authorization: Bearer <token>` header, if any.
fn bearer<'b>(headers: &[httparse::Header<'b>]) -> Result<Option<&'b [u8]>, AdminHttpError> {
    let mut authorizations = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("authorization"));
    let Some(authorization) = authorizations.next() else {
        return Ok(None);
    };
    if authorizations.next().is_some() {
        return Err(AdminHttpError::RepeatedAuthorization);
    }
    // RFC 6750 §2.1: `credentials = "Bearer" 1*SP b64token`; RFC 9110 §11.1: the scheme is
    // case-insensitive. Another scheme, or no token, is "no bearer token" (then 401).
    let value = trim_ows(authorization.value);
    let Some((scheme, rest)) = value.split_at_checked(6) else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return Ok(None);
    }
    let token = trim_ows(rest);
    Ok((!token.is_empty()).then_some(token))
}

/// The path of a request target: before the first `?` or `#`.
fn path_of(target: &str) -> &str {
    // RFC 3986 §3.4 / §3.5: the query starts at the first '?', a fragment at the first '#'.
    target
        .split_once(['?', '#'])
        .map_or(target, |(path, _)| path)
}

/// A short fixed text for an httparse error.
fn httparse_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid request line",
        httparse::Error::TooManyHeaders => "too many header fields",
        httparse::Error::Version => "not HTTP/1.0 or HTTP/1.1",
    }
}

// === write_response ===

/// Appends a complete HTTP/1.1 response: status line, `Content-Type`, `Content-Length`,
/// `Connection: close`, `Cache-Control: no-store`, `extra_headers`, the empty line, `body`.
///
/// Control characters (CR and LF among them) are dropped from every header name and value,
/// so no text can add a header line.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
) {
    // RFC 9110 §15: three digits, classes 1xx to 5xx; anything else is written as 500.
    let status = if (100..=599).contains(&status) {
        status
    } else {
        500
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    write_header(out, "Content-Type", content_type);
    write_header(out, "Content-Length", &body.len().to_string());
    write_header(out, "Connection", "close");
    // Health, readiness and metrics answers are live values; revocation answers are private.
    write_header(out, "Cache-Control", "no-store");
    for (name, value) in extra_headers {
        write_header(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &[u8]) -> Result<Option<(AdminRequest<'_>, usize)>, AdminHttpError> {
        parse_request(text)
    }

    fn complete(text: &[u8]) -> (AdminRequest<'_>, usize) {
        match parse_request(text) {
            Ok(Some(parsed)) => parsed,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(text)),
        }
    }

    fn error(text: &[u8]) -> AdminHttpError {
        match parse_request(text) {
            Err(e) => e,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(text)),
        }
    }

    const REVOKE: &[u8] = b"POST /revoke HTTP/1.1\r\nHost: localhost\r\n\
        Authorization: Bearer abc.def.ghi\r\nContent-Length: 13\r\n\r\n{\"jti\":\"j-1\"}";

    #[test]
    fn get_without_body() {
        let text = b"GET /healthz?verbose=1 HTTP/1.1\r\nHost: localhost:9090\r\n\r\n";
        let (request, consumed) = complete(text);
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/healthz");
        assert_eq!(request.bearer, None);
        assert_eq!(request.body, b"");
        assert_eq!(consumed, text.len());
        assert_eq!(
            complete(b"GET /metrics#frag HTTP/1.1\r\nHost: h\r\n\r\n")
                .0
                .path,
            "/metrics"
        );
    }

    #[test]
    fn post_with_body_and_bearer() {
        let (request, consumed) = complete(REVOKE);
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/revoke");
        assert_eq!(request.bearer, Some(&b"abc.def.ghi"[..]));
        assert_eq!(request.body, b"{\"jti\":\"j-1\"}");
        assert_eq!(consumed, REVOKE.len());
    }

    #[test]
    fn every_prefix_is_incomplete() {
        for cut in 0..REVOKE.len() {
            let prefix = REVOKE.get(..cut).unwrap_or_default();
            assert_eq!(parse(prefix), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn pipelined_bytes_are_not_consumed() {
        let mut text = REVOKE.to_vec();
        text.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\ngarbage\x00\xff");
        let (request, consumed) = complete(&text);
        assert_eq!(consumed, REVOKE.len());
        assert_eq!(request.body, b"{\"jti\":\"j-1\"}");
        // A body shorter than the bytes that follow the head: only Content-Length counts.
        let text = b"POST /revoke HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}{}{}";
        let (request, consumed) = complete(text);
        assert_eq!((request.body, consumed), (&b"{}"[..], text.len() - 4));
    }

    #[test]
    fn head_size_limit() {
        // A head of exactly MAX_HEAD_BYTES is accepted (limits are inclusive).
        let base = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: \r\n\r\n".len();
        let pad = "a".repeat(MAX_HEAD_BYTES - base);
        let text = format!("GET / HTTP/1.1\r\nHost: h\r\nX-Pad: {pad}\r\n\r\n");
        assert_eq!(text.len(), MAX_HEAD_BYTES);
        assert_eq!(complete(text.as_bytes()).1, MAX_HEAD_BYTES);
        // One more byte: refused, with or without its end.
        let text = format!("GET / HTTP/1.1\r\nHost: h\r\nX-Pad: a{pad}\r\n\r\n");
        assert_eq!(error(text.as_bytes()), AdminHttpError::HeadTooLarge);
        let endless = format!("GET / HTTP/1.1\r\nHost: h\r\nX-Pad: {pad}{pad}");
        assert_eq!(error(endless.as_bytes()), AdminHttpError::HeadTooLarge);
        // Still incomplete at exactly the limit: keep reading.
        let at_limit = endless.get(..MAX_HEAD_BYTES).unwrap_or_default();
        assert_eq!(parse(at_limit.as_bytes()), Ok(None));
        assert_eq!(AdminHttpError::HeadTooLarge.status(), 431);
    }

    #[test]
    fn too_many_headers() {
        let mut text = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
        for i in 0..MAX_HEADERS {
            text.push_str(&format!("X-{i}: v\r\n"));
        }
        text.push_str("\r\n");
        assert_eq!(error(text.as_bytes()), AdminHttpError::TooManyHeaders);
        assert_eq!(AdminHttpError::TooManyHeaders.status(), 431);
    }

    #[test]
    fn body_size_limit() {
        let head =
            format!("POST /revoke HTTP/1.1\r\nHost: h\r\nContent-Length: {MAX_BODY_BYTES}\r\n\r\n");
        // Exactly the limit: waits for the body, then accepts it.
        assert_eq!(parse(head.as_bytes()), Ok(None));
        let mut text = head.into_bytes();
        text.resize(text.len() + MAX_BODY_BYTES, b' ');
        assert_eq!(complete(&text).0.body.len(), MAX_BODY_BYTES);
        // One byte more: 413 at once, from the head alone.
        let over = format!(
            "POST /revoke HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        assert_eq!(error(over.as_bytes()), AdminHttpError::BodyTooLarge);
        assert_eq!(AdminHttpError::BodyTooLarge.status(), 413);
        // A length that overflows any integer is still just too large.
        let huge = format!(
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
            "9".repeat(60)
        );
        assert_eq!(error(huge.as_bytes()), AdminHttpError::BodyTooLarge);
    }

    #[test]
    fn bad_content_length() {
        for value in ["", "-1", "+1", "1.0", "0x10", "1 2", "12a", "1,1", "١"] {
            let text =
                format!("POST /revoke HTTP/1.1\r\nHost: h\r\nContent-Length: {value}\r\n\r\n");
            assert_eq!(
                error(text.as_bytes()),
                AdminHttpError::InvalidContentLength,
                "{value:?}"
            );
        }
        let text =
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(error(text), AdminHttpError::RepeatedContentLength);
        // Surrounding whitespace is allowed (OWS), leading zeros too.
        let text = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length:  002 \r\n\r\n{}";
        assert_eq!(complete(text).0.body, b"{}");
    }

    #[test]
    fn transfer_encoding_and_missing_length() {
        let chunked = b"POST /revoke HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        assert_eq!(error(chunked), AdminHttpError::TransferEncodingNotSupported);
        assert_eq!(AdminHttpError::TransferEncodingNotSupported.status(), 411);
        let both = b"POST /revoke HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}";
        assert_eq!(
            error(both),
            AdminHttpError::TransferEncodingWithContentLength
        );
        assert_eq!(
            AdminHttpError::TransferEncodingWithContentLength.status(),
            400
        );
        let no_length = b"POST /revoke HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(error(no_length), AdminHttpError::LengthRequired);
        assert_eq!(AdminHttpError::LengthRequired.status(), 411);
        // A GET with a Content-Length carries a body that is read (and ignored by routing).
        let text = b"GET /healthz HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcd";
        let (request, consumed) = complete(text);
        assert_eq!((request.body, consumed), (&b"abc"[..], text.len() - 1));
    }

    #[test]
    fn host_rules() {
        assert_eq!(
            error(b"GET /healthz HTTP/1.1\r\n\r\n"),
            AdminHttpError::MissingHost
        );
        assert_eq!(
            error(b"GET /healthz HTTP/1.1\r\nHost: a\r\nHOST: b\r\n\r\n"),
            AdminHttpError::RepeatedHost
        );
        // HTTP/1.0 needs no Host (probes that speak 1.0 are answered).
        assert_eq!(
            complete(b"GET /healthz HTTP/1.0\r\n\r\n").0.path,
            "/healthz"
        );
    }

    #[test]
    fn malformed_requests() {
        for text in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"GET /healthz HTTP/1.2\r\nHost: h\r\n\r\n",
            b"GET\r\n\r\n",
            b"G T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo st: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\x00\r\n\r\n",
            b"GET / HTTP/1.1\nHost: h\r\r\n\r\n",
            b"\x00\x00\x00\x00",
        ] {
            match parse(text) {
                Err(e) => assert_eq!(
                    e.status(),
                    400,
                    "{:?}: {e:?}",
                    String::from_utf8_lossy(text)
                ),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(text)),
            }
        }
    }

    #[test]
    fn bearer_extraction() {
        let bearer_of = |value: &str| {
            let text = format!("GET / HTTP/1.1\r\nHost: h\r\nAuthorization: {value}\r\n\r\n");
            parse_request(text.as_bytes())
                .map(|parsed| parsed.map(|(r, _)| r.bearer.map(<[u8]>::to_vec)))
        };
        assert_eq!(bearer_of("Bearer a.b.c"), Ok(Some(Some(b"a.b.c".to_vec()))));
        assert_eq!(
            bearer_of("bearer   a.b.c  "),
            Ok(Some(Some(b"a.b.c".to_vec())))
        );
        assert_eq!(bearer_of("BEARER x"), Ok(Some(Some(b"x".to_vec()))));
        assert_eq!(bearer_of("Bearer"), Ok(Some(None)));
        assert_eq!(bearer_of("Bearer   "), Ok(Some(None)));
        assert_eq!(bearer_of("Bearerx.y.z"), Ok(Some(None)));
        assert_eq!(bearer_of("Basic dXNlcjpwYXNz"), Ok(Some(None)));
        assert_eq!(bearer_of(""), Ok(Some(None)));
        let two = b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n";
        assert_eq!(error(two), AdminHttpError::RepeatedAuthorization);
    }

    #[test]
    fn leading_empty_lines_and_http10() {
        // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request line.
        let text = b"\r\nGET /readyz HTTP/1.1\r\nHost: h\r\n\r\n";
        let (request, consumed) = complete(text);
        assert_eq!((request.path, consumed), ("/readyz", text.len()));
    }

    #[test]
    fn response_shape() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            401,
            "application/json",
            &[
                ("WWW-Authenticate", "Bearer"),
                ("X-Evil", "a\r\nSet-Cookie: x=1"),
            ],
            b"{}",
        );
        let text = String::from_utf8_lossy(&out);
        assert_eq!(
            text,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
             Connection: close\r\nCache-Control: no-store\r\nWWW-Authenticate: Bearer\r\n\
             X-Evil: aSet-Cookie: x=1\r\n\r\n{}"
        );
        let mut out = Vec::new();
        write_response(&mut out, 42, "text/plain", &[], b"");
        assert!(out.starts_with(b"HTTP/1.1 500 Internal Server Error\r\n"));
        let mut out = Vec::new();
        write_response(&mut out, 418, "text/plain", &[], b"");
        assert!(out.starts_with(b"HTTP/1.1 418 Client Error\r\n"));
    }

    #[test]
    fn every_error_has_a_status_and_reason() {
        for e in [
            AdminHttpError::HeadTooLarge,
            AdminHttpError::TooManyHeaders,
            AdminHttpError::Malformed("x"),
            AdminHttpError::MissingHost,
            AdminHttpError::RepeatedHost,
            AdminHttpError::InvalidContentLength,
            AdminHttpError::RepeatedContentLength,
            AdminHttpError::TransferEncodingWithContentLength,
            AdminHttpError::TransferEncodingNotSupported,
            AdminHttpError::LengthRequired,
            AdminHttpError::BodyTooLarge,
            AdminHttpError::RepeatedAuthorization,
        ] {
            assert!([400, 411, 413, 431].contains(&e.status()), "{e:?}");
            assert!(!e.reason().is_empty());
            assert!(e.to_string().contains(e.reason()));
        }
    }
}
