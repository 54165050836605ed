//! The client side of the upstream WebSocket upgrade (RFC 6455 §4.1): the request the gateway
//! sends to an upstream on behalf of an authenticated client (SPEC §5 "upstream backend"), and
//! a push parser for the upstream's answer.
//!
//! Call order for one upstream connection: [`random_key`]; [`write_upstream_request`] into the
//! upstream's output buffer; after each read, [`parse_upstream_response`] over every byte
//! received so far, until it returns `Some`. On `Switching`, the bytes from `head_len` on are
//! WebSocket frames; on `Rejected` or an error, the upstream connection is closed and the
//! client is answered (the relayed status, or 502).
//!
//! Query token parameters are matched as log redaction matches them (SPEC §4 "Query
//! parameters"): segments split on `&` and `;`, names percent-decoded and case-folded, so
//! `x=1;access_token=...`, `ACCESS_TOKEN=...` and `access%5Ftoken=...` never reach an upstream
//! even though the gateway reads a token only from the exact `&`-separated name. Token
//! cookies are matched by their exact name, as `fields::cookies` finds them.

use std::fmt;
use std::io::Write as _;
use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::rand::SecureRandom;

use crate::proto::http::fields::{is_token_segment, query_segments};
mod response;
pub mod sign;

pub use response::{parse_upstream_response, UpstreamError, UpstreamResponse};

/// Longest upstream response head accepted (status line, headers, final CRLF); past it, 502.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Most header lines an upstream response may carry.
pub const MAX_RESPONSE_HEADERS: usize = 64;

/// Most bytes of a refusing upstream's body that are relayed to the client.
pub const MAX_RELAYED_BODY: usize = 4 * 1024;

/// Length of a `Sec-WebSocket-Key`: 16 bytes in padded base64.
pub const KEY_LEN: usize = 24;

/// Header fields that are never forwarded upstream, by lowercase name (compared with
/// [`name_is`]: `_` read as `-`, ASCII case folded).
const NOT_FORWARDED: &[&str] = &[
    // RFC 7230 §6.1 and RFC 2616 §13.5.1: hop-by-hop fields, meaningful only on the client's
    // connection to the gateway (Proxy-Connection is the legacy non-standard one).
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    // The gateway writes its own.
    "host",
    "x-forwarded-for",
    // A GET upgrade has no body; a length would desynchronise the upstream's parser.
    "content-length",
    // SPEC §5: the token reaches the upstream by no path.
    "authorization",
];

/// Forwarding headers a client could forge (SPEC §5): the gateway is the first trusted hop,
/// so whatever a client claims about its address, host or scheme is dropped, and counted.
/// The gateway writes its own `X-Forwarded-For`, `X-Forwarded-Host` and `X-Forwarded-Proto`.
const FORGEABLE_FORWARDING: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// Prefixes (lowercase) of header names that are never forwarded upstream.
const NOT_FORWARDED_PREFIXES: &[&str] = &[
    // RFC 6455 §4.1: the key, version, protocols and extensions are the gateway's own offer on
    // its own connection; the client's are answered by the gateway.
    "sec-websocket-",
];

/// Prefix (lowercase) of the identity headers: the gateway's word; a client's would be forged
/// (SPEC §5). Dropped and counted.
const IDENTITY_PREFIX: &str = "x-auth-";

/// `b` as header names are compared for forwarding (SPEC §5): ASCII lowercase, `_` read as
/// `-`, because CGI, WSGI, Rack and PHP expose both `X-Auth-Subject` and `X_Auth_Subject` as
/// `HTTP_X_AUTH_SUBJECT`.
fn fold_name_byte(b: u8) -> u8 {
    if b == b'_' {
        b'-'
    } else {
        b.to_ascii_lowercase()
    }
}

/// True when the header name `name` equals the lowercase `canonical` under [`fold_name_byte`].
pub fn name_is(name: &[u8], canonical: &str) -> bool {
    name.len() == canonical.len()
        && name
            .iter()
            .zip(canonical.bytes())
            .all(|(a, b)| fold_name_byte(*a) == b)
}

/// True when the header name `name` starts with the lowercase `prefix` under
/// [`fold_name_byte`].
fn name_starts_with(name: &[u8], prefix: &str) -> bool {
    name.get(..prefix.len())
        .is_some_and(|start| name_is(start, prefix))
}

/// Why a client header is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drop {
    /// Hop-by-hop or the gateway's own (every upgrade carries some): not counted.
    Routine,
    /// A forged identity or forwarding header, or an `_` spelling of any refused name:
    /// counted in `/metrics` (SPEC §5).
    Forged,
}

/// Why the upgrade request could not be written; every variant is answered 502.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardError {
    /// The upstream path or the client's query holds a byte a request target cannot carry.
    InvalidTarget,
    /// The upstream `Host` value is empty or holds a byte a host cannot.
    InvalidHost,
    /// The subject, scope or claims holds a control character or surrounding whitespace:
    /// written, it could split or alter headers; dropped, the upstream would not see it.
    InvalidIdentity,
    /// The system's random source failed to produce a `Sec-WebSocket-Key`.
    RandomUnavailable,
}

impl ForwardError {
    /// The HTTP status the client is answered with.
    pub fn status(&self) -> u16 {
        502
    }

    /// A stable snake_case name for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            ForwardError::InvalidTarget => "upstream_invalid_target",
            ForwardError::InvalidHost => "upstream_invalid_host",
            ForwardError::InvalidIdentity => "upstream_invalid_identity",
            ForwardError::RandomUnavailable => "random_unavailable",
        }
    }
}

impl fmt::Display for ForwardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ForwardError::InvalidTarget => "upstream request target holds an invalid byte",
            ForwardError::InvalidHost => "upstream Host is empty or invalid",
            ForwardError::InvalidIdentity => "identity value cannot be carried in a header",
            ForwardError::RandomUnavailable => "random source failed",
        })
    }
}

impl std::error::Error for ForwardError {}

/// What the gateway knows about the client's request (all borrowed from the client's parsed
/// head and the route).
#[derive(Debug, Clone)]
pub struct ForwardRequest<'a> {
    /// `Host`: the upstream's authority as configured (e.g. "10.0.0.5:9000").
    pub upstream_host_header: &'a str,
    /// The upstream URL's path, possibly with its own query (e.g. "/chat"); empty means "/".
    pub upstream_path: &'a str,
    /// The client's query string (without '?'); token parameters are removed.
    pub client_query: Option<&'a str>,
    /// Names of the query parameters that carry tokens (removed, exact raw match).
    pub token_query_names: &'a [&'a str],
    /// Every header line of the client's request, in order.
    pub client_headers: &'a [(&'a str, &'a [u8])],
    /// Names of the cookies that carry tokens (removed from `Cookie`, exact match).
    pub token_cookie_names: &'a [&'a str],
    /// The client's non-token subprotocols, already filtered by the route's list.
    pub offered_protocols: &'a [&'a str],
    /// The client's address, appended to `X-Forwarded-For`.
    pub client_addr: IpAddr,
    /// The client reached the gateway over TLS: `X-Forwarded-Proto: https` (else `http`).
    pub client_tls: bool,
    /// `X-Auth-Subject`: the token's `sub`.
    pub subject: Option<&'a str>,
    /// `X-Auth-Scope`: the token's scopes, space-separated.
    pub scope: Option<&'a str>,
    /// `X-Auth-Claims`: the token's payload segment as received (only with `forward_claims`).
    pub claims_b64: Option<&'a str>,
    /// `Sec-WebSocket-Extensions`: the gateway's own offer to the upstream (SPEC §10
    /// "Proxied routes"), written by `proto::ws::deflate::ClientOffer::write`.
    pub extensions: Option<&'a [u8]>,
}

// === Byte classes ===

/// RFC 7230 §3.2.6: `tchar`, the bytes of a token (header names, subprotocols).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 7230 §3.2.6: `token = 1*tchar`.
fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|b| is_tchar(*b))
}

/// RFC 3986 §2: the bytes a request target may hold as sent (visible ASCII).
fn is_target_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// RFC 7230 §3.2: `field-content` bytes: anything but control characters (HTAB allowed).
/// CR, LF and NUL in particular would split or truncate the header.
pub(super) fn is_field_byte(b: u8) -> bool {
    b == b'\t' || !(b < 0x20 || b == 0x7f)
}

/// RFC 7230 §3.2.3: `OWS = *( SP / HTAB )`.
fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `value` without leading and trailing optional whitespace.
pub(super) fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !is_ows(*b))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(*b))
        .map_or(start, |i| i + 1);
    value.get(start..end).unwrap_or_default()
}

/// The elements of a comma-separated header list, trimmed, empty elements skipped
/// (RFC 7230 §7: "a recipient MUST accept empty list elements").
pub(super) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    value
        .split(|b| *b == b',')
        .map(trim_ows)
        .filter(|element| !element.is_empty())
}

/// True when `value` can be written as a header value as is.
fn is_identity_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    // A value with surrounding whitespace would reach the upstream trimmed (RFC 7230 §3.2.4),
    // i.e. as another identity; a control character could split the header.
    bytes.iter().all(|b| *b >= 0x20 && *b != 0x7f) && trim_ows(bytes).len() == bytes.len()
}

// === The request ===

/// The client's query segments that are forwarded, each with the separator that preceded it:
/// every non-empty one that is not a token parameter (SPEC §4 "Query parameters": split on
/// `&` and `;`, names compared percent-decoded and case-folded, the test log redaction uses).
fn forwarded_query<'a>(
    query: Option<&'a str>,
    token_query_names: &'a [&'a str],
) -> impl Iterator<Item = (Option<char>, &'a str)> + 'a {
    query_segments(query.unwrap_or_default()).filter(move |(_, segment)| {
        !segment.is_empty() && !is_token_segment(segment, token_query_names)
    })
}

/// The cookie pairs of one `Cookie` value that are forwarded (trimmed, raw), token cookies and
/// empty pairs skipped.
fn forwarded_cookies<'a>(
    value: &'a [u8],
    token_cookie_names: &'a [&'a str],
) -> impl Iterator<Item = &'a [u8]> + 'a {
    // RFC 6265 §4.2.1: `cookie-string = cookie-pair *( ";" SP cookie-pair )`,
    // `cookie-pair = cookie-name "=" cookie-value`. The name is compared trimmed, exactly as
    // `fields::cookies` (which finds the token) reads it.
    value
        .split(|b| *b == b';')
        .map(trim_ows)
        .filter(move |pair| {
            if pair.is_empty() {
                return false;
            }
            let name = pair.splitn(2, |b| *b == b'=').next().unwrap_or_default();
            let name = trim_ows(name);
            !token_cookie_names
                .iter()
                .any(|token| token.as_bytes() == name)
        })
}

/// True when the subprotocol `protocol` may be offered upstream.
pub(super) fn is_forwardable_protocol(protocol: &str) -> bool {
    // RFC 6455 §4.1: each subprotocol is a token. SPEC §5: the `bearer.` entry never goes
    // upstream; callers remove it, and any spelling of it is refused here again.
    let bearer = protocol
        .as_bytes()
        .get(..7)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"bearer."));
    is_token(protocol.as_bytes()) && !bearer
}

/// Whether the client's header `name` (as sent) is forwarded: `None` when it is, else why
/// not. The fixed lists, the prefixes, and every name the client's `Connection` lists, all
/// compared with `_` read as `-` and case folded ([`name_is`]).
fn drop_reason(name: &str, client_headers: &[(&str, &[u8])]) -> Option<Drop> {
    let bytes = name.as_bytes();
    if name_starts_with(bytes, IDENTITY_PREFIX)
        || FORGEABLE_FORWARDING.iter().any(|n| name_is(bytes, n))
    {
        return Some(Drop::Forged);
    }
    let refused = NOT_FORWARDED.iter().any(|n| name_is(bytes, n))
        || NOT_FORWARDED_PREFIXES
            .iter()
            .any(|prefix| name_starts_with(bytes, prefix))
        // RFC 7230 §6.1: "a proxy or gateway MUST parse a received Connection header field
        // before a message is forwarded and, for each connection-option in this field, remove
        // any header field(s) from the message with the same name as the connection-option".
        || connection_lists(name, client_headers);
    match refused {
        // An `_` spelling of a refused name is nobody's routine header: someone is probing.
        true if bytes.contains(&b'_') => Some(Drop::Forged),
        true => Some(Drop::Routine),
        false => None,
    }
}

/// True when the client's `Connection` header(s) list `name` (compared as [`name_is`]).
fn connection_lists(name: &str, client_headers: &[(&str, &[u8])]) -> bool {
    let name = name.as_bytes();
    client_headers
        .iter()
        .filter(|(n, _)| name_is(n.as_bytes(), "connection"))
        .flat_map(|(_, value)| list_elements(value))
        .any(|option| {
            option.len() == name.len()
                && option
                    .iter()
                    .zip(name)
                    .all(|(a, b)| fold_name_byte(*a) == fold_name_byte(*b))
        })
}

fn write_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes the request line's target: the upstream path, then the client's query minus token
/// parameters (joined with '&' when the path has a query of its own).
fn write_target(req: &ForwardRequest<'_>, out: &mut Vec<u8>) {
    let path = if req.upstream_path.is_empty() {
        "/"
    } else {
        req.upstream_path
    };
    out.extend_from_slice(path.as_bytes());
    let mut separator: &[u8] = if !path.contains('?') {
        b"?"
    } else if path.ends_with('?') || path.ends_with('&') {
        b""
    } else {
        b"&"
    };
    for (i, (sent, segment)) in forwarded_query(req.client_query, req.token_query_names).enumerate()
    {
        if i > 0 {
            // Kept as the client wrote it, so that the upstream splits as it would have.
            separator = if sent == Some(';') { b";" } else { b"&" };
        }
        out.extend_from_slice(separator);
        out.extend_from_slice(segment.as_bytes());
    }
}

/// Writes one `Cookie` header holding the forwarded pairs of `value`, or nothing if none is left.
fn write_cookie(out: &mut Vec<u8>, value: &[u8], token_cookie_names: &[&str]) {
    let mut pairs = forwarded_cookies(value, token_cookie_names).peekable();
    if pairs.peek().is_none() {
        return;
    }
    out.extend_from_slice(b"Cookie: ");
    for (i, pair) in pairs.enumerate() {
        if i > 0 {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(pair);
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes `X-Forwarded-For`: the client's own entries (when that header is not hop-by-hop for
/// it), then the client's address.
fn write_forwarded_for(req: &ForwardRequest<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"X-Forwarded-For: ");
    // RFC 7230 §6.1: an X-Forwarded-For the client's Connection lists was for this hop only.
    if !connection_lists("x-forwarded-for", req.client_headers) {
        let entries = req
            .client_headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("x-forwarded-for"))
            .filter(|(_, value)| value.iter().all(|b| is_field_byte(*b)))
            .flat_map(|(_, value)| list_elements(value));
        for entry in entries {
            out.extend_from_slice(entry);
            out.extend_from_slice(b", ");
        }
    }
    // An IPv4 client on a dual-stack listener appears as ::ffff:a.b.c.d; upstreams expect the
    // IPv4 form. Writing into a Vec cannot fail.
    let _ = write!(out, "{}", req.client_addr.to_canonical());
    out.extend_from_slice(b"\r\n");
}

/// Writes `X-Forwarded-Host` (the client's `Host`, when it is one visible-ASCII value) and
/// `X-Forwarded-Proto` (the scheme the client used to reach the gateway): the gateway's own,
/// the client's were dropped (SPEC §5).
fn write_forwarded_host_proto(req: &ForwardRequest<'_>, out: &mut Vec<u8>) {
    let mut hosts = req
        .client_headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("host"));
    if let (Some((_, host)), None) = (hosts.next(), hosts.next()) {
        let host = trim_ows(host);
        if !host.is_empty() && host.iter().all(|b| is_target_byte(*b)) {
            write_header(out, "X-Forwarded-Host", host);
        }
    }
    let proto: &[u8] = if req.client_tls { b"https" } else { b"http" };
    write_header(out, "X-Forwarded-Proto", proto);
}

/// Writes the upstream upgrade request (SPEC §5 "upstream backend") into `out`, using `key`
/// as its `Sec-WebSocket-Key` (keep it to check the answer's accept). On error nothing is
/// written. Ok holds how many client headers were dropped as forged (identity or forwarding
/// headers, `_` spellings of refused names), for `/metrics`.
pub fn write_upstream_request(
    req: &ForwardRequest<'_>,
    key: &[u8; KEY_LEN],
    out: &mut Vec<u8>,
) -> Result<usize, ForwardError> {
    // RFC 7230 §3.1.1: the request line is split on SP and ends at CRLF; a target byte outside
    // visible ASCII would end it early or smuggle another line.
    let path_ok = req.upstream_path.is_empty() || req.upstream_path.starts_with('/');
    if !path_ok
        || !req.upstream_path.bytes().all(is_target_byte)
        || !req
            .client_query
            .unwrap_or_default()
            .bytes()
            .all(is_target_byte)
    {
        return Err(ForwardError::InvalidTarget);
    }
    // RFC 7230 §5.4: `Host = uri-host [ ":" port ]`, never empty for an http(s) or ws(s) URI.
    let host = req.upstream_host_header.as_bytes();
    if host.is_empty() || !host.iter().all(|b| is_target_byte(*b)) {
        return Err(ForwardError::InvalidHost);
    }
    let identity = [req.subject, req.scope, req.claims_b64];
    if !identity
        .iter()
        .flatten()
        .all(|value| is_identity_value(value))
    {
        return Err(ForwardError::InvalidIdentity);
    }

    // RFC 6455 §4.1: "The method of the request MUST be GET, and the HTTP version MUST be at
    // least 1.1."
    out.extend_from_slice(b"GET ");
    write_target(req, out);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // RFC 6455 §4.1 items 4-9: Host, Upgrade, Connection, Sec-WebSocket-Key, -Version.
    write_header(out, "Host", host);
    write_header(out, "Upgrade", b"websocket");
    write_header(out, "Connection", b"Upgrade");
    write_header(out, "Sec-WebSocket-Key", key);
    write_header(out, "Sec-WebSocket-Version", b"13");
    // RFC 6455 §4.1 item 10: the subprotocols, "in order of preference".
    let mut protocols = req
        .offered_protocols
        .iter()
        .filter(|p| is_forwardable_protocol(p))
        .peekable();
    if protocols.peek().is_some() {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        for (i, protocol) in protocols.enumerate() {
            if i > 0 {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(protocol.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    // RFC 6455 §4.1 item 11 and §9.1: the extensions the gateway itself can honour (the
    // client's own offer was answered by the gateway and is not forwarded).
    if let Some(extensions) = req
        .extensions
        .filter(|e| e.iter().all(|b| is_field_byte(*b)))
    {
        write_header(out, "Sec-WebSocket-Extensions", extensions);
    }
    // SPEC §5: the client's other end-to-end headers go along, in order.
    let mut forged = 0;
    for (name, value) in req.client_headers {
        match drop_reason(name, req.client_headers) {
            Some(Drop::Forged) => {
                forged += 1;
                continue;
            }
            Some(Drop::Routine) => continue,
            None => {}
        }
        if !is_token(name.as_bytes()) || !value.iter().all(|b| is_field_byte(*b)) {
            continue;
        }
        let value = trim_ows(value);
        if name.eq_ignore_ascii_case("cookie") {
            write_cookie(out, value, req.token_cookie_names);
        } else {
            write_header(out, name, value);
        }
    }
    write_forwarded_for(req, out);
    write_forwarded_host_proto(req, out);
    // SPEC §5: identity headers, after the client's (whose X-Auth-* were dropped above).
    if let Some(subject) = req.subject {
        write_header(out, "X-Auth-Subject", subject.as_bytes());
    }
    if let Some(scope) = req.scope {
        write_header(out, "X-Auth-Scope", scope.as_bytes());
    }
    if let Some(claims) = req.claims_b64 {
        write_header(out, "X-Auth-Claims", claims.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    Ok(forged)
}

/// The `Sec-WebSocket-Key` for a 16-byte nonce: its padded base64.
pub fn encode_key(nonce: [u8; 16]) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    // 16 bytes always encode to exactly 4 * ceil(16 / 3) = 24 padded characters, the size of
    // `key`, so this cannot fail; checked in debug builds and by the RFC vector test.
    let written = STANDARD.encode_slice(nonce, &mut key);
    debug_assert!(matches!(written, Ok(KEY_LEN)));
    key
}

/// A fresh `Sec-WebSocket-Key` from `rng`.
pub fn random_key(rng: &dyn SecureRandom) -> Result<[u8; KEY_LEN], ForwardError> {
    // RFC 6455 §4.1 item 7: "a nonce consisting of a randomly selected 16-byte value that has
    // been base64-encoded ... The nonce MUST be selected randomly for each connection."
    let mut nonce = [0u8; 16];
    rng.fill(&mut nonce)
        .map_err(|_| ForwardError::RandomUnavailable)?;
    Ok(encode_key(nonce))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ws::accept::{accept_key, is_valid_key};
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// RFC 6455 §1.3's sample key.
    const KEY: &[u8; KEY_LEN] = b"dGhlIHNhbXBsZSBub25jZQ==";

    const CLIENT_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));

    fn request<'a>(headers: &'a [(&'a str, &'a [u8])]) -> ForwardRequest<'a> {
        ForwardRequest {
            upstream_host_header: "10.0.0.5:9000",
            upstream_path: "/chat",
            client_query: None,
            token_query_names: &["access_token", "token"],
            client_headers: headers,
            token_cookie_names: &["wsgate_token"],
            offered_protocols: &[],
            client_addr: CLIENT_ADDR,
            client_tls: false,
            subject: None,
            scope: None,
            claims_b64: None,
            extensions: None,
        }
    }

    fn write(req: &ForwardRequest<'_>) -> String {
        write_counted(req).0
    }

    /// The written request and the number of headers dropped as forged.
    fn write_counted(req: &ForwardRequest<'_>) -> (String, usize) {
        let mut out = Vec::new();
        let forged = write_upstream_request(req, KEY, &mut out).expect("written");
        let text = String::from_utf8(out).expect("test requests are ASCII");
        assert_well_formed(&text);
        (text, forged)
    }

    /// The written request parses as one complete HTTP/1.1 GET spanning all of it.
    fn assert_well_formed(text: &str) {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut parsed = httparse::Request::new(&mut headers);
        assert_eq!(
            parsed.parse(text.as_bytes()),
            Ok(httparse::Status::Complete(text.len())),
            "{text}"
        );
        assert_eq!(parsed.method, Some("GET"));
        assert_eq!(parsed.version, Some(1));
    }

    /// The header lines of a written request (request line and final CRLF excluded).
    fn header_lines(text: &str) -> Vec<&str> {
        text.split("\r\n")
            .skip(1)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Values of the header `name` (case-insensitive) in a written request.
    fn header_values<'t>(text: &'t str, name: &str) -> Vec<&'t str> {
        header_lines(text)
            .into_iter()
            .filter_map(|line| line.split_once(": "))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }

    fn target_for(path: &str, query: Option<&str>) -> String {
        let headers = [];
        let req = ForwardRequest {
            upstream_path: path,
            client_query: query,
            ..request(&headers)
        };
        let text = write(&req);
        let line = text.split("\r\n").next().unwrap_or_default();
        line.strip_prefix("GET ")
            .and_then(|rest| rest.strip_suffix(" HTTP/1.1"))
            .unwrap_or_default()
            .to_owned()
    }

    fn target(query: &str) -> String {
        target_for("/chat", Some(query))
    }

    // === write_upstream_request ===

    #[test]
    fn typical_request_exact_bytes() {
        let headers: [(&str, &[u8]); 11] = [
            ("Host", b"gw.example.com"),
            ("Upgrade", b"websocket"),
            ("Connection", b"Upgrade"),
            ("Sec-WebSocket-Key", b"x3JJHMbDL1EzLkh9GBhXDw=="),
            ("Sec-WebSocket-Version", b"13"),
            ("Sec-WebSocket-Protocol", b"bearer.eyJ.x.y, chat.v1"),
            ("Origin", b"https://app.example.com"),
            ("User-Agent", b"test/1.0"),
            ("Cookie", b"session=abc; wsgate_token=eyJ.x.y"),
            ("Authorization", b"Bearer eyJ.x.y"),
            ("X-Request-Id", b"42"),
        ];
        let req = ForwardRequest {
            client_query: Some("room=1&access_token=eyJ.x.y&lang=en"),
            offered_protocols: &["chat.v1"],
            subject: Some("alice"),
            scope: Some("chat read"),
            claims_b64: Some("eyJzdWIiOiJhbGljZSJ9"),
            ..request(&headers)
        };
        assert_eq!(
            write(&req),
            "GET /chat?room=1&lang=en HTTP/1.1\r\n\
             Host: 10.0.0.5:9000\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: chat.v1\r\n\
             Origin: https://app.example.com\r\n\
             User-Agent: test/1.0\r\n\
             Cookie: session=abc\r\n\
             X-Request-Id: 42\r\n\
             X-Forwarded-For: 203.0.113.7\r\n\
             X-Forwarded-Host: gw.example.com\r\n\
             X-Forwarded-Proto: http\r\n\
             X-Auth-Subject: alice\r\n\
             X-Auth-Scope: chat read\r\n\
             X-Auth-Claims: eyJzdWIiOiJhbGljZSJ9\r\n\
             \r\n"
        );
    }

    #[test]
    fn the_gateways_extension_offer_replaces_the_clients() {
        // SPEC §10: the client's offer was the gateway's to answer; the upstream gets the
        // gateway's own, after the protocols.
        let headers: [(&str, &[u8]); 2] = [
            (
                "Sec-WebSocket-Extensions",
                b"permessage-deflate; client_max_window_bits",
            ),
            ("Origin", b"https://app.example.com"),
        ];
        let req = ForwardRequest {
            offered_protocols: &["chat.v1"],
            extensions: Some(b"permessage-deflate; server_no_context_takeover"),
            ..request(&headers)
        };
        let text = write(&req);
        assert_eq!(
            header_values(&text, "Sec-WebSocket-Extensions"),
            ["permessage-deflate; server_no_context_takeover"]
        );
        let lines = header_lines(&text);
        let at = |prefix: &str| lines.iter().position(|l| l.starts_with(prefix));
        assert!(at("Sec-WebSocket-Protocol") < at("Sec-WebSocket-Extensions"));
        assert!(at("Sec-WebSocket-Extensions") < at("Origin"));
        // A value that could split the head is never written.
        let req = ForwardRequest {
            extensions: Some(b"permessage-deflate\r\nX-Evil: 1"),
            ..request(&headers)
        };
        assert!(header_values(&write(&req), "Sec-WebSocket-Extensions").is_empty());
    }

    #[test]
    fn minimal_request_exact_bytes() {
        // A public route: no identity, no query, no protocols, no client headers.
        let headers = [];
        assert_eq!(
            write(&request(&headers)),
            "GET /chat HTTP/1.1\r\n\
             Host: 10.0.0.5:9000\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\
             X-Forwarded-For: 203.0.113.7\r\n\
             X-Forwarded-Proto: http\r\n\
             \r\n"
        );
    }

    #[test]
    fn appends_to_existing_output() {
        let headers = [];
        let mut out = b"earlier".to_vec();
        assert_eq!(
            write_upstream_request(&request(&headers), KEY, &mut out).map(|_| ()),
            Ok(())
        );
        assert!(out.starts_with(b"earlierGET /chat HTTP/1.1\r\n"));
    }

    #[test]
    fn token_query_parameter_removed_wherever_it_is() {
        assert_eq!(target("token=a&x=1"), "/chat?x=1");
        assert_eq!(target("x=1&token=a&y=2"), "/chat?x=1&y=2");
        assert_eq!(target("x=1&token=a"), "/chat?x=1");
        assert_eq!(target("token=a"), "/chat");
        assert_eq!(target("token=a&x=1&token=b&access_token=c"), "/chat?x=1");
        // Without a value or with an empty one it is still the token parameter.
        assert_eq!(target("token&x=1"), "/chat?x=1");
        assert_eq!(target("token=&x=1"), "/chat?x=1");
        // A value holding '=' (base64 padding) goes with its parameter.
        assert_eq!(target("token=a.b.c==&x=1"), "/chat?x=1");
    }

    #[test]
    fn token_names_match_decoded_and_case_folded() {
        // SPEC §4: no token-shaped segment is forwarded, whatever its spelling.
        assert_eq!(
            target("access%5Ftoken=a&TOKEN=b&%74oken=c&k=1"),
            "/chat?k=1"
        );
        // `;` separates too, and the client's separators are kept.
        assert_eq!(
            target("x=1;access_token=eyJ.a.b;y=2&z=3"),
            "/chat?x=1;y=2&z=3"
        );
        assert_eq!(target("access_token=a;x=1"), "/chat?x=1");
        // Prefixes, suffixes and values equal to a name are not the name.
        assert_eq!(
            target("tokens=1&my_token=2&toke=3&x=token"),
            "/chat?tokens=1&my_token=2&toke=3&x=token"
        );
    }

    #[test]
    fn query_keeps_order_and_raw_encoding() {
        assert_eq!(
            target("q=a%20b&r=%E2%82%AC+x&z&y=1=2"),
            "/chat?q=a%20b&r=%E2%82%AC+x&z&y=1=2"
        );
        // Empty segments carry nothing and are dropped.
        assert_eq!(target("&&x=1&&token=t&&y=2&"), "/chat?x=1&y=2");
        assert_eq!(target(""), "/chat");
        assert_eq!(target("&"), "/chat");
        assert_eq!(target_for("/chat", None), "/chat");
    }

    #[test]
    fn upstream_path_with_its_own_query() {
        assert_eq!(target_for("/chat?v=2", Some("x=1")), "/chat?v=2&x=1");
        assert_eq!(target_for("/chat?v=2", Some("token=a")), "/chat?v=2");
        assert_eq!(target_for("/chat?v=2", None), "/chat?v=2");
        assert_eq!(target_for("/chat?", Some("x=1&y=2")), "/chat?x=1&y=2");
        assert_eq!(target_for("/chat?v=2&", Some("x=1")), "/chat?v=2&x=1");
        assert_eq!(target_for("", Some("x=1")), "/?x=1");
        assert_eq!(target_for("", None), "/");
        assert_eq!(target_for("/", Some("token=a")), "/");
    }

    #[test]
    fn invalid_target_writes_nothing() {
        let headers = [];
        let cases: [(&str, Option<&str>); 7] = [
            ("chat", None),
            ("/a b", None),
            ("/a\r\nX-Auth-Subject: root", None),
            ("/é", None),
            ("/chat", Some("x=1 HTTP/1.1\r\n")),
            ("/chat", Some("x=\0")),
            ("/chat", Some("x=é")),
        ];
        for (path, query) in cases {
            let req = ForwardRequest {
                upstream_path: path,
                client_query: query,
                ..request(&headers)
            };
            let mut out = b"kept".to_vec();
            assert_eq!(
                write_upstream_request(&req, KEY, &mut out),
                Err(ForwardError::InvalidTarget),
                "{path:?} {query:?}"
            );
            assert_eq!(out, b"kept");
        }
    }

    #[test]
    fn invalid_host_writes_nothing() {
        let headers = [];
        for host in ["", "a b", "h\r\nX: y", "h\0", "hé"] {
            let req = ForwardRequest {
                upstream_host_header: host,
                ..request(&headers)
            };
            let mut out = Vec::new();
            assert_eq!(
                write_upstream_request(&req, KEY, &mut out),
                Err(ForwardError::InvalidHost),
                "{host:?}"
            );
            assert!(out.is_empty());
        }
    }

    #[test]
    fn identity_values_that_cannot_be_headers_are_errors() {
        let headers = [];
        let bad = [
            "alice\r\nX-Auth-Scope: admin",
            "alice\n",
            "al\0ice",
            "a\tb",
            " admin",
            "admin ",
            "\u{7f}",
        ];
        for value in bad {
            for field in 0..3 {
                let base = request(&headers);
                let req = match field {
                    0 => ForwardRequest {
                        subject: Some(value),
                        ..base
                    },
                    1 => ForwardRequest {
                        scope: Some(value),
                        ..base
                    },
                    _ => ForwardRequest {
                        claims_b64: Some(value),
                        ..base
                    },
                };
                let mut out = Vec::new();
                assert_eq!(
                    write_upstream_request(&req, KEY, &mut out),
                    Err(ForwardError::InvalidIdentity),
                    "{value:?} in field {field}"
                );
                assert!(out.is_empty());
            }
        }
    }

    #[test]
    fn identity_values_that_are_fine() {
        let headers = [];
        let req = ForwardRequest {
            subject: Some("user@example.com|42 x"),
            scope: Some(""),
            claims_b64: Some("eyJzdWIiOiJ1In0"),
            ..request(&headers)
        };
        let text = write(&req);
        assert_eq!(
            header_values(&text, "x-auth-subject"),
            ["user@example.com|42 x"]
        );
        assert_eq!(header_values(&text, "x-auth-claims"), ["eyJzdWIiOiJ1In0"]);
        assert!(text.contains("\r\nX-Auth-Scope: \r\n"));
        // Non-ASCII subjects travel as UTF-8 bytes (RFC 7230 obs-text).
        let req = ForwardRequest {
            subject: Some("jürgen"),
            ..request(&headers)
        };
        let mut out = Vec::new();
        assert!(write_upstream_request(&req, KEY, &mut out).is_ok());
        assert!(out
            .windows("X-Auth-Subject: jürgen\r\n".len())
            .any(|w| w == "X-Auth-Subject: jürgen\r\n".as_bytes()));
    }

    #[test]
    fn token_cookie_removed() {
        let cases: [(&[u8], Option<&str>); 9] = [
            (b"a=1; wsgate_token=x; b=2", Some("a=1; b=2")),
            (b"wsgate_token=x; a=1", Some("a=1")),
            (b"a=1; wsgate_token=x", Some("a=1")),
            (b"wsgate_token=x", None),
            (b"wsgate_token=x; wsgate_token=\"y\"", None),
            (b" wsgate_token = x ;", None),
            (b";;a=1;  ; b=2;", Some("a=1; b=2")),
            // Cookie names are case-sensitive; prefixes and suffixes are other cookies.
            (
                b"WSGATE_TOKEN=x; wsgate_token2=y; my_wsgate_token=z",
                Some("WSGATE_TOKEN=x; wsgate_token2=y; my_wsgate_token=z"),
            ),
            (b"", None),
        ];
        for (value, expected) in cases {
            let headers: [(&str, &[u8]); 1] = [("Cookie", value)];
            let text = write(&request(&headers));
            let got = header_values(&text, "cookie");
            assert_eq!(
                got,
                expected.into_iter().collect::<Vec<_>>(),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn several_cookie_headers_each_filtered() {
        let headers: [(&str, &[u8]); 3] = [
            ("Cookie", b"wsgate_token=x"),
            ("X-Between", b"1"),
            ("cookie", b"c=3; wsgate_token=y"),
        ];
        let text = write(&request(&headers));
        assert_eq!(header_values(&text, "cookie"), ["c=3"]);
        let lines = header_lines(&text);
        let between = lines.iter().position(|l| *l == "X-Between: 1");
        let cookie = lines.iter().position(|l| *l == "Cookie: c=3");
        assert!(between < cookie, "{lines:?}");
    }

    #[test]
    fn forbidden_headers_never_forwarded() {
        let headers: [(&str, &[u8]); 30] = [
            ("connection", b"keep-alive, Upgrade, X-Secret, x-other-hop"),
            ("CONNECTION", b"TE"),
            ("Keep-Alive", b"timeout=5"),
            ("Proxy-Connection", b"keep-alive"),
            ("Proxy-Authenticate", b"Basic"),
            ("proxy-authorization", b"Basic dXNlcjpwYXNz"),
            ("TE", b"trailers"),
            ("Trailer", b"X-T"),
            ("Transfer-Encoding", b"chunked"),
            ("UPGRADE", b"websocket"),
            ("Host", b"evil.example"),
            ("Content-Length", b"0"),
            ("authorization", b"Bearer eyJ.x.y"),
            ("AUTHORIZATION", b"Basic x"),
            ("Sec-WebSocket-Key", b"x3JJHMbDL1EzLkh9GBhXDw=="),
            ("sec-websocket-version", b"13"),
            ("Sec-WebSocket-Protocol", b"chat.v1, bearer.eyJ.x.y"),
            ("Sec-WebSocket-Extensions", b"permessage-deflate"),
            ("Sec-WebSocket-Accept", b"forged"),
            ("x-AUTH-subject", b"root"),
            ("X-Auth-Scope", b"admin"),
            ("X-AUTH-CLAIMS", b"e30"),
            ("x-auth-anything", b"1"),
            ("X-Forwarded-For", b"10.9.9.9"),
            ("X-Secret", b"hop"),
            ("X-Other-Hop", b"hop"),
            ("X-Kept", b"1"),
            ("x-authorization-hint", b"kept: not X-Auth-"),
            ("X-Auth", b"kept: not the X-Auth- prefix"),
            ("Sec-Fetch-Mode", b"websocket"),
        ];
        let req = ForwardRequest {
            offered_protocols: &["chat.v1"],
            subject: Some("alice"),
            scope: Some("chat"),
            claims_b64: Some("eyJ9"),
            ..request(&headers)
        };
        let text = write(&req);
        let names: Vec<&str> = header_lines(&text)
            .into_iter()
            .filter_map(|l| l.split_once(": ").map(|(n, _)| n))
            .collect();
        assert_eq!(
            names,
            [
                "Host",
                "Upgrade",
                "Connection",
                "Sec-WebSocket-Key",
                "Sec-WebSocket-Version",
                "Sec-WebSocket-Protocol",
                "X-Kept",
                "x-authorization-hint",
                "X-Auth",
                "Sec-Fetch-Mode",
                "X-Forwarded-For",
                "X-Forwarded-Host",
                "X-Forwarded-Proto",
                "X-Auth-Subject",
                "X-Auth-Scope",
                "X-Auth-Claims",
            ]
        );
        assert_eq!(header_values(&text, "host"), ["10.0.0.5:9000"]);
        assert_eq!(header_values(&text, "x-auth-subject"), ["alice"]);
        assert_eq!(header_values(&text, "x-auth-scope"), ["chat"]);
        assert_eq!(header_values(&text, "sec-websocket-protocol"), ["chat.v1"]);
        assert_eq!(
            header_values(&text, "x-forwarded-for"),
            ["10.9.9.9, 203.0.113.7"]
        );
        assert!(!text.contains("eyJ.x.y"), "the token leaked: {text}");
        assert!(!text.contains("root") && !text.contains("admin"));
    }

    #[test]
    fn forged_identity_headers_dropped_on_public_routes_too() {
        let headers: [(&str, &[u8]); 2] = [("X-Auth-Subject", b"root"), ("x-auth-scope", b"admin")];
        let text = write(&request(&headers));
        assert!(header_values(&text, "x-auth-subject").is_empty());
        assert!(header_values(&text, "x-auth-scope").is_empty());
    }

    #[test]
    fn header_named_in_connection_dropped_with_any_spelling() {
        let headers: [(&str, &[u8]); 4] = [
            ("Connection", b" ,Upgrade,\tx-hop ,,"),
            ("X-HOP", b"1"),
            ("x-hop", b"2"),
            ("Origin", b"https://app.example.com"),
        ];
        let text = write(&request(&headers));
        assert!(header_values(&text, "x-hop").is_empty());
        assert_eq!(header_values(&text, "origin"), ["https://app.example.com"]);
        // Connection listing end-to-end headers removes them too (RFC 7230 §6.1).
        let headers: [(&str, &[u8]); 3] = [
            ("Connection", b"Upgrade, Origin, Cookie"),
            ("Origin", b"https://app.example.com"),
            ("Cookie", b"a=1"),
        ];
        let text = write(&request(&headers));
        assert!(header_values(&text, "origin").is_empty());
        assert!(header_values(&text, "cookie").is_empty());
    }

    #[test]
    fn underscore_and_forwarding_spellings_dropped_and_counted() {
        // SPEC §5: names compared with `_` read as `-` and case folded; CGI/WSGI/Rack/PHP
        // read `X_Auth_Subject` as HTTP_X_AUTH_SUBJECT.
        let headers: [(&str, &[u8]); 16] = [
            ("Host", b"gw.example.com"),
            ("X_Auth_Subject", b"admin"),
            ("x_auth_scope", b"admin"),
            ("X-Auth_Claims", b"e30"),
            ("Authorization", b"Bearer x"),
            ("AUTHORIZATION", b"Bearer y"),
            ("Transfer_Encoding", b"chunked"),
            ("Content_Length", b"5"),
            ("Forwarded", b"for=1.2.3.4;proto=https"),
            ("X-Real-IP", b"1.2.3.4"),
            ("X_Real_Ip", b"1.2.3.4"),
            ("x-forwarded-host", b"evil.example"),
            ("X_Forwarded_Proto", b"https"),
            ("X_Forwarded_For", b"6.6.6.6"),
            ("X_Custom", b"kept"),
            ("Sec_WebSocket_Protocol", b"bearer.x"),
        ];
        let req = ForwardRequest {
            client_tls: true,
            subject: Some("alice"),
            ..request(&headers)
        };
        let (text, forged) = write_counted(&req);
        let client_names: Vec<&str> = header_lines(&text)
            .into_iter()
            .filter_map(|l| l.split_once(": ").map(|(n, _)| n))
            .collect();
        assert_eq!(
            client_names,
            [
                "Host",
                "Upgrade",
                "Connection",
                "Sec-WebSocket-Key",
                "Sec-WebSocket-Version",
                "X_Custom",
                "X-Forwarded-For",
                "X-Forwarded-Host",
                "X-Forwarded-Proto",
                "X-Auth-Subject",
            ]
        );
        assert_eq!(header_values(&text, "x-forwarded-for"), ["203.0.113.7"]);
        assert_eq!(header_values(&text, "x-forwarded-host"), ["gw.example.com"]);
        assert_eq!(header_values(&text, "x-forwarded-proto"), ["https"]);
        assert_eq!(header_values(&text, "x-auth-subject"), ["alice"]);
        // Everything but Host, the two Authorization (the token's own header) and X_Custom.
        assert_eq!(forged, 12);
        // Routine hop-by-hop drops are not counted.
        let routine: [(&str, &[u8]); 3] = [
            ("Connection", b"Upgrade"),
            ("Upgrade", b"websocket"),
            ("Sec-WebSocket-Key", b"x3JJHMbDL1EzLkh9GBhXDw=="),
        ];
        assert_eq!(write_counted(&request(&routine)).1, 0);
    }

    #[test]
    fn connection_listed_names_compare_with_underscores() {
        let headers: [(&str, &[u8]); 3] = [
            ("Connection", b"Upgrade, x_hop"),
            ("X-Hop", b"1"),
            ("X-Other", b"2"),
        ];
        let text = write(&request(&headers));
        assert!(header_values(&text, "x-hop").is_empty(), "{text}");
        assert_eq!(header_values(&text, "x-other"), ["2"]);
    }

    #[test]
    fn name_folding() {
        assert!(name_is(b"X_AUTH-subject", "x-auth-subject"));
        assert!(!name_is(b"x-auth-subjec", "x-auth-subject"));
        assert!(!name_is(b"x.auth-subject", "x-auth-subject"));
        assert!(name_starts_with(b"X_Auth_", "x-auth-"));
        assert!(!name_starts_with(b"X_Aut", "x-auth-"));
    }

    #[test]
    fn header_values_with_control_characters_dropped() {
        let headers: [(&str, &[u8]); 8] = [
            ("X-Evil", b"a\r\nX-Auth-Subject: root"),
            ("X-Lf", b"a\nb"),
            ("X-Cr", b"a\rb"),
            ("X-Nul", b"a\0b"),
            ("X-Del", b"a\x7fb"),
            ("Bad Name", b"1"),
            ("", b"1"),
            ("X-Tab", b"a\tb"),
        ];
        let text = write(&request(&headers));
        let forwarded: Vec<&str> = header_lines(&text)
            .into_iter()
            .filter(|l| l.starts_with("X-") && !l.starts_with("X-Forwarded-"))
            .collect();
        assert_eq!(forwarded, ["X-Tab: a\tb"]);
        assert!(!text.contains("root"));
    }

    #[test]
    fn header_values_trimmed_and_obs_text_kept() {
        let headers: [(&str, &[u8]); 2] = [("X-Pad", b" \t v \t"), ("X-Latin", b"caf\xe9")];
        let mut out = Vec::new();
        assert_eq!(
            write_upstream_request(&request(&headers), KEY, &mut out).map(|_| ()),
            Ok(())
        );
        let find = |needle: &[u8]| out.windows(needle.len()).any(|w| w == needle);
        assert!(find(b"\r\nX-Pad: v\r\n"));
        assert!(find(b"\r\nX-Latin: caf\xe9\r\n"));
    }

    #[test]
    fn forwarded_for_appends_client_address() {
        let xff = |headers: &[(&str, &[u8])], addr: IpAddr| {
            let req = ForwardRequest {
                client_addr: addr,
                ..request(headers)
            };
            let text = write(&req);
            let values = header_values(&text, "x-forwarded-for");
            assert_eq!(values.len(), 1, "{text}");
            values.first().map(|v| v.to_string()).unwrap_or_default()
        };
        assert_eq!(xff(&[], CLIENT_ADDR), "203.0.113.7");
        assert_eq!(
            xff(&[("X-Forwarded-For", b"198.51.100.1")], CLIENT_ADDR),
            "198.51.100.1, 203.0.113.7"
        );
        assert_eq!(
            xff(
                &[
                    ("x-forwarded-for", b"1.1.1.1, 2.2.2.2"),
                    ("X-Other", b"x"),
                    ("X-FORWARDED-FOR", b"3.3.3.3")
                ],
                CLIENT_ADDR
            ),
            "1.1.1.1, 2.2.2.2, 3.3.3.3, 203.0.113.7"
        );
        assert_eq!(
            xff(&[("X-Forwarded-For", b" 1.1.1.1 ,, \t,")], CLIENT_ADDR),
            "1.1.1.1, 203.0.113.7"
        );
        assert_eq!(xff(&[("X-Forwarded-For", b"")], CLIENT_ADDR), "203.0.113.7");
        // A value with CR/LF is dropped like any other header.
        assert_eq!(
            xff(
                &[("X-Forwarded-For", b"1.1.1.1\r\nX-Auth-Subject: root")],
                CLIENT_ADDR
            ),
            "203.0.113.7"
        );
        // Listed in Connection: it was for the gateway's hop only.
        assert_eq!(
            xff(
                &[
                    ("Connection", b"Upgrade, X-Forwarded-For"),
                    ("X-Forwarded-For", b"1.1.1.1")
                ],
                CLIENT_ADDR
            ),
            "203.0.113.7"
        );
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        assert_eq!(xff(&[], v6), "2001:db8::1");
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(xff(&[], mapped), "192.0.2.1");
    }

    #[test]
    fn protocols_offered() {
        let protocols = |offered: &[&str]| {
            let headers = [];
            let req = ForwardRequest {
                offered_protocols: offered,
                ..request(&headers)
            };
            let text = write(&req);
            header_values(&text, "sec-websocket-protocol")
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert!(protocols(&[]).is_empty());
        assert_eq!(protocols(&["chat.v1"]), ["chat.v1"]);
        assert_eq!(protocols(&["chat.v2", "chat.v1"]), ["chat.v2, chat.v1"]);
        // The token entry never goes upstream, whatever its case; non-tokens are skipped.
        assert_eq!(protocols(&["bearer.eyJ.x.y", "chat"]), ["chat"]);
        assert!(protocols(&["Bearer.eyJ.x.y"]).is_empty());
        assert!(protocols(&["BEARER.x"]).is_empty());
        assert_eq!(protocols(&["a b", "", "x,y", "ok", "é"]), ["ok"]);
        // "bearer" alone and "bearerx.y" are ordinary names.
        assert_eq!(protocols(&["bearer", "bearerx.y"]), ["bearer, bearerx.y"]);
    }

    #[test]
    fn key_encoding_rfc_vector() {
        // RFC 6455 §4.1 / §1.3: the nonce "the sample nonce" is sent as this key.
        assert_eq!(&encode_key(*b"the sample nonce"), KEY);
        assert_eq!(&encode_key([0; 16]), b"AAAAAAAAAAAAAAAAAAAAAA==");
    }

    #[test]
    fn random_keys_are_valid_and_fresh() {
        let rng = ring::rand::SystemRandom::new();
        let first = random_key(&rng);
        let second = random_key(&rng);
        assert!(first.is_ok_and(|k| is_valid_key(&k)));
        assert!(second.is_ok_and(|k| is_valid_key(&k)));
        assert_ne!(first, second);
    }

    #[test]
    fn error_answers_and_labels() {
        for e in [
            ForwardError::InvalidTarget,
            ForwardError::InvalidHost,
            ForwardError::InvalidIdentity,
            ForwardError::RandomUnavailable,
        ] {
            assert_eq!(e.status(), 502);
            assert!(!e.label().is_empty() && !e.to_string().is_empty());
        }
        for e in [
            UpstreamError::HeadTooLarge,
            UpstreamError::TooManyHeaders,
            UpstreamError::Malformed,
            UpstreamError::NotHttp11,
            UpstreamError::MissingUpgrade,
            UpstreamError::MissingConnectionUpgrade,
            UpstreamError::BadAccept,
            UpstreamError::ExtensionNotOffered,
            UpstreamError::ProtocolNotOffered,
            UpstreamError::BadContentLength,
        ] {
            assert_eq!(e.status(), 502);
            assert!(e.label().starts_with("upstream_") && !e.to_string().is_empty());
        }
    }

    #[test]
    fn round_trip_with_a_server_computing_the_accept() {
        // The gateway writes a request with a random key; a server answers with the accept
        // of the key it read; the gateway accepts that answer.
        let rng = ring::rand::SystemRandom::new();
        let Ok(key) = random_key(&rng) else {
            panic!("system random failed");
        };
        let headers: [(&str, &[u8]); 1] = [("Sec-WebSocket-Protocol", b"bearer.x, chat")];
        let req = ForwardRequest {
            offered_protocols: &["chat"],
            ..request(&headers)
        };
        let mut out = Vec::new();
        assert!(write_upstream_request(&req, &key, &mut out).is_ok());
        let mut parsed_headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut parsed_headers);
        assert!(matches!(
            parsed.parse(&out),
            Ok(httparse::Status::Complete(_))
        ));
        let sent_key = parsed
            .headers
            .iter()
            .find(|h| h.name == "Sec-WebSocket-Key")
            .map(|h| h.value)
            .unwrap_or_default();
        assert_eq!(sent_key, key.as_slice());
        let accept = accept_key(sent_key);
        let mut answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Protocol: chat\r\nSec-WebSocket-Accept: "
            .to_vec();
        answer.extend_from_slice(&accept);
        answer.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            parse_upstream_response(&answer, &key, req.offered_protocols, None),
            Ok(Some(UpstreamResponse::Switching {
                protocol: Some("chat"),
                extension: None,
                head_len: answer.len()
            }))
        );
    }
}
