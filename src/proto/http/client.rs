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
use crate::proto::ws::accept::accept_key;

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
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || !(b < 0x20 || b == 0x7f)
}

/// RFC 7230 §3.2.3: `OWS = *( SP / HTAB )`.
fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `value` without leading and trailing optional whitespace.
fn trim_ows(value: &[u8]) -> &[u8] {
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
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
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
fn is_forwardable_protocol(protocol: &str) -> bool {
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

// === The response ===

/// Why the upstream's answer is unusable; every variant is answered 502.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// No complete head within [`MAX_RESPONSE_HEAD`] bytes.
    HeadTooLarge,
    /// More than [`MAX_RESPONSE_HEADERS`] header lines.
    TooManyHeaders,
    /// Not a syntactically valid HTTP/1.x response head.
    Malformed,
    /// A 101 in a version other than HTTP/1.1.
    NotHttp11,
    /// A 101 without exactly one `Upgrade: websocket`.
    MissingUpgrade,
    /// A 101 without `Connection: upgrade`.
    MissingConnectionUpgrade,
    /// A 101 whose `Sec-WebSocket-Accept` is missing, repeated or not the one for our key.
    BadAccept,
    /// A 101 that selects an extension (the gateway offers none).
    ExtensionNotOffered,
    /// A 101 that selects a subprotocol the gateway did not offer, or several.
    ProtocolNotOffered,
    /// A refusal whose `Content-Length` is not one decimal number.
    BadContentLength,
}

impl UpstreamError {
    /// The HTTP status the client is answered with.
    pub fn status(&self) -> u16 {
        502
    }

    /// A stable snake_case name for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            UpstreamError::HeadTooLarge => "upstream_head_too_large",
            UpstreamError::TooManyHeaders => "upstream_too_many_headers",
            UpstreamError::Malformed => "upstream_malformed",
            UpstreamError::NotHttp11 => "upstream_not_http11",
            UpstreamError::MissingUpgrade => "upstream_missing_upgrade",
            UpstreamError::MissingConnectionUpgrade => "upstream_missing_connection_upgrade",
            UpstreamError::BadAccept => "upstream_bad_accept",
            UpstreamError::ExtensionNotOffered => "upstream_extension_not_offered",
            UpstreamError::ProtocolNotOffered => "upstream_protocol_not_offered",
            UpstreamError::BadContentLength => "upstream_bad_content_length",
        }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpstreamError::HeadTooLarge => "upstream response head too large",
            UpstreamError::TooManyHeaders => "upstream response has too many header fields",
            UpstreamError::Malformed => "malformed upstream response",
            UpstreamError::NotHttp11 => "upstream 101 is not HTTP/1.1",
            UpstreamError::MissingUpgrade => "upstream 101 lacks Upgrade: websocket",
            UpstreamError::MissingConnectionUpgrade => "upstream 101 lacks Connection: upgrade",
            UpstreamError::BadAccept => "upstream 101 has a wrong Sec-WebSocket-Accept",
            UpstreamError::ExtensionNotOffered => "upstream 101 selects an extension",
            UpstreamError::ProtocolNotOffered => "upstream 101 selects a protocol not offered",
            UpstreamError::BadContentLength => "upstream response has an invalid Content-Length",
        })
    }
}

impl std::error::Error for UpstreamError {}

/// A complete answer from the upstream to the upgrade request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamResponse<'b> {
    /// A valid 101: the subprotocol it selected (one the gateway offered), and where the
    /// WebSocket frames start.
    Switching {
        /// The selected subprotocol, if any.
        protocol: Option<&'b str>,
        /// Length of the head; bytes from here on are frames.
        head_len: usize,
    },
    /// Any other status. The caller relays 4xx and 5xx; anything else is a 502.
    Rejected {
        /// The upstream's status code.
        status: u16,
        /// The body, at most [`MAX_RELAYED_BODY`] bytes; empty without `Content-Length`.
        body: &'b [u8],
        /// The first `WWW-Authenticate` value that is safe to relay.
        www_authenticate: Option<&'b str>,
        /// The first `Retry-After` value that is safe to relay.
        retry_after: Option<&'b str>,
        /// Bytes of the buffer this answer spans (head and relayed body).
        consumed: usize,
    },
}

/// The values of the headers named `name` (ASCII case-insensitive).
fn values<'h, 'b>(
    headers: &'h [httparse::Header<'b>],
    name: &'h str,
) -> impl Iterator<Item = &'b [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// The only value of header `name`, trimmed; `None` when absent or repeated.
fn single_value<'b>(headers: &[httparse::Header<'b>], name: &str) -> Option<&'b [u8]> {
    let mut all = values(headers, name);
    match (all.next(), all.next()) {
        (Some(value), None) => Some(trim_ows(value)),
        _ => None,
    }
}

/// The first value of header `name`, trimmed, that is UTF-8 without control characters (it is
/// relayed to the client as a header).
fn relayable_value<'b>(headers: &[httparse::Header<'b>], name: &str) -> Option<&'b str> {
    values(headers, name)
        .map(trim_ows)
        .filter(|value| !value.is_empty() && value.iter().all(|b| is_field_byte(*b)))
        .find_map(|value| std::str::from_utf8(value).ok())
}

/// Checks a 101 against RFC 6455 §4.1's client rules; the selected subprotocol on success.
fn check_switching<'b>(
    version: u8,
    headers: &[httparse::Header<'b>],
    key: &[u8; KEY_LEN],
    offered: &[&str],
) -> Result<Option<&'b str>, UpstreamError> {
    // RFC 6455 §4.1: the handshake is an HTTP/1.1 exchange; a 101 from HTTP/1.0 is not one.
    if version != 1 {
        return Err(UpstreamError::NotHttp11);
    }
    // RFC 6455 §4.1 item 2: "If the response lacks an |Upgrade| header field or the |Upgrade|
    // header field contains a value that is not an ASCII case-insensitive match for the value
    // "websocket", the client MUST _Fail the WebSocket Connection_."
    match single_value(headers, "upgrade") {
        Some(value) if value.eq_ignore_ascii_case(b"websocket") => {}
        _ => return Err(UpstreamError::MissingUpgrade),
    }
    // RFC 6455 §4.1 item 3: "If the response lacks a |Connection| header field or the
    // |Connection| header field doesn't contain a token that is an ASCII case-insensitive match
    // for the value "Upgrade", the client MUST _Fail the WebSocket Connection_."
    let upgrade = values(headers, "connection")
        .flat_map(list_elements)
        .any(|option| option.eq_ignore_ascii_case(b"upgrade"));
    if !upgrade {
        return Err(UpstreamError::MissingConnectionUpgrade);
    }
    // RFC 6455 §4.1 item 4: "If the response lacks a |Sec-WebSocket-Accept| header field or
    // the |Sec-WebSocket-Accept| contains a value other than the base64-encoded SHA-1 of the
    // concatenation of the |Sec-WebSocket-Key| ... with the string
    // "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" ... the client MUST _Fail the WebSocket
    // Connection_." RFC 6455 §11.3.3: it "MUST NOT appear more than once".
    match single_value(headers, "sec-websocket-accept") {
        Some(value) if value == accept_key(key).as_slice() => {}
        _ => return Err(UpstreamError::BadAccept),
    }
    // RFC 6455 §4.1 item 5: an extension "that was not present in the client's handshake"
    // fails the connection; the gateway offers none.
    if values(headers, "sec-websocket-extensions")
        .flat_map(list_elements)
        .next()
        .is_some()
    {
        return Err(UpstreamError::ExtensionNotOffered);
    }
    // RFC 6455 §4.1 item 6: a subprotocol "that was not present in the client's handshake"
    // fails the connection. RFC 6455 §11.3.4: in a response the header "MUST NOT appear more
    // than once" and holds one value.
    let mut selected = values(headers, "sec-websocket-protocol");
    match (selected.next(), selected.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => {
            let value = trim_ows(value);
            let is_offered = offered
                .iter()
                .any(|p| p.as_bytes() == value && is_forwardable_protocol(p));
            match std::str::from_utf8(value) {
                Ok(protocol) if is_offered => Ok(Some(protocol)),
                _ => Err(UpstreamError::ProtocolNotOffered),
            }
        }
        (Some(_), Some(_)) => Err(UpstreamError::ProtocolNotOffered),
    }
}

/// The declared body length of a refusal: `None` when it has no `Content-Length` body.
fn content_length(status: u16, headers: &[httparse::Header<'_>]) -> Result<usize, UpstreamError> {
    // RFC 7230 §3.3.3 rule 1: 1xx, 204 and 304 responses end at the head.
    if status < 200 || status == 204 || status == 304 {
        return Ok(0);
    }
    // RFC 7230 §3.3.3 rule 3: Transfer-Encoding overrides Content-Length. The gateway does not
    // decode a chunked refusal: it relays the status without the body.
    if values(headers, "transfer-encoding").next().is_some() {
        return Ok(0);
    }
    // RFC 7230 §3.3.2: several Content-Length values (in one list or several lines) are
    // accepted only when all are the same number; §3.3.3 rule 4 makes anything else an error.
    let mut length: Option<usize> = None;
    for element in values(headers, "content-length").flat_map(|v| v.split(|b| *b == b',')) {
        let element = trim_ows(element);
        if element.is_empty() || !element.iter().all(u8::is_ascii_digit) {
            return Err(UpstreamError::BadContentLength);
        }
        // Saturating: any length past MAX_RELAYED_BODY is cut to it anyway.
        let value = element.iter().fold(0usize, |n, d| {
            n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
        });
        match length {
            Some(previous) if previous != value => return Err(UpstreamError::BadContentLength),
            _ => length = Some(value),
        }
    }
    Ok(length.unwrap_or(0))
}

/// Parses the upstream's answer from every byte received so far. `Ok(None)` while the head,
/// or the relayed part of a refusal's body, is incomplete. `offered` is the protocol list the
/// request offered (`ForwardRequest::offered_protocols`).
pub fn parse_upstream_response<'b>(
    buf: &'b [u8],
    key: &[u8; KEY_LEN],
    offered: &[&str],
) -> Result<Option<UpstreamResponse<'b>>, UpstreamError> {
    // Bytes past MAX_RESPONSE_HEAD are never parsed as head: a head ending there is too large.
    let window = buf.get(..MAX_RESPONSE_HEAD).unwrap_or(buf);
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(window) {
        Ok(httparse::Status::Complete(head_len)) => head_len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            return Err(UpstreamError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(UpstreamError::TooManyHeaders),
        Err(_) => return Err(UpstreamError::Malformed),
    };
    // A complete parse always sets the version and code; treat their absence as malformed
    // rather than trusting that.
    let (Some(version), Some(status)) = (response.version, response.code) else {
        return Err(UpstreamError::Malformed);
    };
    let headers: &[httparse::Header<'b>] = response.headers;
    if status == 101 {
        let protocol = check_switching(version, headers, key, offered)?;
        return Ok(Some(UpstreamResponse::Switching { protocol, head_len }));
    }
    // SPEC §5: a non-101 answer is relayed with its body (capped), WWW-Authenticate and
    // Retry-After.
    let body_len = content_length(status, headers)?.min(MAX_RELAYED_BODY);
    let Some(body) = buf.get(head_len..).and_then(|rest| rest.get(..body_len)) else {
        return Ok(None);
    };
    Ok(Some(UpstreamResponse::Rejected {
        status,
        body,
        www_authenticate: relayable_value(headers, "www-authenticate"),
        retry_after: relayable_value(headers, "retry-after"),
        consumed: head_len + body_len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ws::accept::is_valid_key;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// RFC 6455 §1.3's sample key and the accept value the RFC gives for it.
    const KEY: &[u8; KEY_LEN] = b"dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

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

    // === parse_upstream_response ===

    fn switching(extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Accept: {ACCEPT}\r\n\
             {extra}\r\n"
        )
    }

    fn parse<'b>(
        buf: &'b [u8],
        offered: &[&str],
    ) -> Result<Option<UpstreamResponse<'b>>, UpstreamError> {
        parse_upstream_response(buf, KEY, offered)
    }

    /// Every strict prefix of `buf` shorter than `complete` is incomplete.
    fn assert_prefixes_incomplete(buf: &[u8], complete: usize, offered: &[&str]) {
        for end in 0..complete {
            assert_eq!(
                parse(buf.get(..end).unwrap_or_default(), offered),
                Ok(None),
                "prefix of {end} bytes"
            );
        }
    }

    #[test]
    fn switching_without_protocol() {
        // RFC 6455 §1.3's example answer, with the RFC's accept for the RFC's key.
        let head = switching("");
        assert_eq!(
            parse(head.as_bytes(), &[]),
            Ok(Some(UpstreamResponse::Switching {
                protocol: None,
                head_len: head.len()
            }))
        );
        // Offering protocols does not oblige the upstream to select one.
        assert_eq!(
            parse(head.as_bytes(), &["chat"]),
            Ok(Some(UpstreamResponse::Switching {
                protocol: None,
                head_len: head.len()
            }))
        );
        assert_prefixes_incomplete(head.as_bytes(), head.len(), &[]);
    }

    #[test]
    fn switching_with_protocol() {
        // RFC 6455 §1.3: "Sec-WebSocket-Protocol: chat".
        let head = switching("Sec-WebSocket-Protocol: chat\r\n");
        assert_eq!(
            parse(head.as_bytes(), &["superchat", "chat"]),
            Ok(Some(UpstreamResponse::Switching {
                protocol: Some("chat"),
                head_len: head.len()
            }))
        );
        assert_prefixes_incomplete(head.as_bytes(), head.len(), &["superchat", "chat"]);
    }

    #[test]
    fn switching_case_and_whitespace_variants() {
        let head = format!(
            "HTTP/1.1 101 OK\r\n\
             upgrade:   WebSocket  \r\n\
             connection: keep-alive, UPGRADE\r\n\
             sec-websocket-accept:{ACCEPT}\r\n\
             sec-websocket-protocol:  chat.v1 \r\n\
             Sec-WebSocket-Extensions: \r\n\
             \r\n"
        );
        assert_eq!(
            parse(head.as_bytes(), &["chat.v1"]),
            Ok(Some(UpstreamResponse::Switching {
                protocol: Some("chat.v1"),
                head_len: head.len()
            }))
        );
        // Connection split over two lines.
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: keep-alive\r\nConnection: upgrade\r\n\
             Sec-WebSocket-Accept: {ACCEPT}\r\n\r\n"
        );
        assert!(matches!(
            parse(head.as_bytes(), &[]),
            Ok(Some(UpstreamResponse::Switching { .. }))
        ));
    }

    #[test]
    fn bytes_after_switching_head_are_frames() {
        let head = switching("");
        let mut buf = head.clone().into_bytes();
        // An unmasked text frame "hi" and the start of another frame.
        buf.extend_from_slice(&[0x81, 0x02, b'h', b'i', 0x82]);
        match parse(&buf, &[]) {
            Ok(Some(UpstreamResponse::Switching { protocol, head_len })) => {
                assert_eq!(protocol, None);
                assert_eq!(head_len, head.len());
                assert_eq!(
                    buf.get(head_len..),
                    Some(&[0x81, 0x02, b'h', b'i', 0x82][..])
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_or_missing_accept() {
        let cases = [
            // The accept of another key.
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: HSmrc0sMlYUkAGmm5OPpG2HaGWk=\r\n\r\n"
                .to_owned(),
            // Our key echoed instead of its accept.
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                .to_owned(),
            // Missing.
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                .to_owned(),
            // Empty.
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: \r\n\r\n"
                .to_owned(),
            // Case changed (base64 is case-sensitive).
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n\r\n",
                ACCEPT.to_ascii_lowercase()
            ),
            // Repeated, even with the right value (RFC 6455 §11.3.3).
            switching(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n")),
        ];
        for head in cases {
            assert_eq!(
                parse(head.as_bytes(), &[]),
                Err(UpstreamError::BadAccept),
                "{head}"
            );
        }
        // The right accept for another key than the one we sent.
        let other_key = b"x3JJHMbDL1EzLkh9GBhXDw==";
        let head = switching("");
        assert_eq!(
            parse_upstream_response(head.as_bytes(), other_key, &[]),
            Err(UpstreamError::BadAccept)
        );
    }

    #[test]
    fn protocol_not_offered() {
        let cases: [(&str, &[&str]); 7] = [
            ("Sec-WebSocket-Protocol: chat\r\n", &[]),
            ("Sec-WebSocket-Protocol: chat\r\n", &["superchat"]),
            // Case-sensitive, like the offer.
            ("Sec-WebSocket-Protocol: Chat\r\n", &["chat"]),
            // One value only.
            (
                "Sec-WebSocket-Protocol: chat, superchat\r\n",
                &["chat", "superchat"],
            ),
            (
                "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: chat\r\n",
                &["chat"],
            ),
            ("Sec-WebSocket-Protocol: \r\n", &["chat"]),
            // Never offered upstream, so never selectable, even if the caller listed it.
            (
                "Sec-WebSocket-Protocol: bearer.eyJ.x.y\r\n",
                &["bearer.eyJ.x.y"],
            ),
        ];
        for (extra, offered) in cases {
            let head = switching(extra);
            assert_eq!(
                parse(head.as_bytes(), offered),
                Err(UpstreamError::ProtocolNotOffered),
                "{extra:?} {offered:?}"
            );
        }
    }

    #[test]
    fn extension_not_offered() {
        for extra in [
            "Sec-WebSocket-Extensions: permessage-deflate\r\n",
            "Sec-WebSocket-Extensions: ,\r\nSec-WebSocket-Extensions: x\r\n",
        ] {
            let head = switching(extra);
            assert_eq!(
                parse(head.as_bytes(), &[]),
                Err(UpstreamError::ExtensionNotOffered),
                "{extra:?}"
            );
        }
    }

    #[test]
    fn switching_without_upgrade_or_connection() {
        let accept = format!("Sec-WebSocket-Accept: {ACCEPT}\r\n");
        let cases = [
            (
                format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n{accept}\r\n"),
                UpstreamError::MissingUpgrade,
            ),
            (
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n{accept}\r\n"
                ),
                UpstreamError::MissingUpgrade,
            ),
            (
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket, h2c\r\nConnection: Upgrade\r\n{accept}\r\n"
                ),
                UpstreamError::MissingUpgrade,
            ),
            (
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{accept}\r\n"
                ),
                UpstreamError::MissingUpgrade,
            ),
            (
                format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n{accept}\r\n"),
                UpstreamError::MissingConnectionUpgrade,
            ),
            (
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n{accept}\r\n"
                ),
                UpstreamError::MissingConnectionUpgrade,
            ),
            (
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrades\r\n{accept}\r\n"
                ),
                UpstreamError::MissingConnectionUpgrade,
            ),
            (
                format!(
                    "HTTP/1.0 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{accept}\r\n"
                ),
                UpstreamError::NotHttp11,
            ),
        ];
        for (head, expected) in cases {
            assert_eq!(parse(head.as_bytes(), &[]), Err(expected), "{head}");
        }
    }

    #[test]
    fn unauthorized_with_body_and_challenge() {
        let response = "HTTP/1.1 401 Unauthorized\r\n\
                        WWW-Authenticate: Bearer realm=\"chat\", error=\"invalid_token\"\r\n\
                        Content-Type: text/plain\r\n\
                        Content-Length: 13\r\n\
                        \r\n\
                        token refused";
        let expected = UpstreamResponse::Rejected {
            status: 401,
            body: b"token refused",
            www_authenticate: Some("Bearer realm=\"chat\", error=\"invalid_token\""),
            retry_after: None,
            consumed: response.len(),
        };
        assert_eq!(parse(response.as_bytes(), &[]), Ok(Some(expected)));
        // Every prefix, including a complete head with part of the body, is incomplete.
        assert_prefixes_incomplete(response.as_bytes(), response.len(), &[]);
        // Bytes past the body are not consumed.
        let longer = format!("{response}trailing");
        assert_eq!(parse(longer.as_bytes(), &[]), Ok(Some(expected)));
    }

    #[test]
    fn unavailable_with_retry_after_and_no_length() {
        let response = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 30\r\n\r\n";
        assert_eq!(
            parse(response.as_bytes(), &[]),
            Ok(Some(UpstreamResponse::Rejected {
                status: 503,
                body: b"",
                www_authenticate: None,
                retry_after: Some("30"),
                consumed: response.len(),
            }))
        );
        assert_prefixes_incomplete(response.as_bytes(), response.len(), &[]);
        // An HTTP-date Retry-After and an HTTP/1.0 refusal are relayed too.
        let response =
            "HTTP/1.0 429 Too Many Requests\r\nRetry-After: Fri, 31 Dec 1999 23:59:59 GMT\r\n\r\n";
        assert!(matches!(
            parse(response.as_bytes(), &[]),
            Ok(Some(UpstreamResponse::Rejected {
                status: 429,
                retry_after: Some("Fri, 31 Dec 1999 23:59:59 GMT"),
                ..
            }))
        ));
    }

    #[test]
    fn long_body_is_capped() {
        let head = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 10000\r\n\r\n";
        let mut buf = head.as_bytes().to_vec();
        buf.resize(head.len() + MAX_RELAYED_BODY - 1, b'x');
        assert_eq!(parse(&buf, &[]), Ok(None));
        buf.push(b'y');
        match parse(&buf, &[]) {
            Ok(Some(UpstreamResponse::Rejected {
                status,
                body,
                consumed,
                ..
            })) => {
                assert_eq!(status, 500);
                assert_eq!(body.len(), MAX_RELAYED_BODY);
                assert_eq!(body.last(), Some(&b'y'));
                assert_eq!(consumed, head.len() + MAX_RELAYED_BODY);
            }
            other => panic!("{other:?}"),
        }
        // A length too large for any integer is capped the same way.
        let head = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 99999999999999999999999999\r\n\r\n";
        let mut buf = head.as_bytes().to_vec();
        buf.resize(head.len() + MAX_RELAYED_BODY, b'x');
        assert!(matches!(
            parse(&buf, &[]),
            Ok(Some(UpstreamResponse::Rejected { body, .. })) if body.len() == MAX_RELAYED_BODY
        ));
    }

    #[test]
    fn responses_without_a_body() {
        for response in [
            "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
            "HTTP/1.1 100 Continue\r\nContent-Length: 10\r\n\r\n",
            "HTTP/1.1 502 Bad Gateway\r\nTransfer-Encoding: chunked\r\nContent-Length: 10\r\n\r\n",
            "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
        ] {
            assert!(
                matches!(
                    parse(response.as_bytes(), &[]),
                    Ok(Some(UpstreamResponse::Rejected { body: b"", consumed, .. }))
                        if consumed == response.len()
                ),
                "{response}"
            );
        }
    }

    #[test]
    fn content_length_variants() {
        let ok = [
            "Content-Length: 3\r\n",
            "Content-Length: 3, 3\r\n",
            "Content-Length: 3\r\nContent-Length: 3\r\n",
            "Content-Length: 003\r\n",
        ];
        for header in ok {
            let response = format!("HTTP/1.1 404 Not Found\r\n{header}\r\nabcdef");
            assert!(
                matches!(
                    parse(response.as_bytes(), &[]),
                    Ok(Some(UpstreamResponse::Rejected { body: b"abc", .. }))
                ),
                "{header:?}"
            );
        }
        let bad = [
            "Content-Length: abc\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: +3\r\n",
            "Content-Length: 3 4\r\n",
            "Content-Length: \r\n",
            "Content-Length: 3,\r\n",
            "Content-Length: 3, 4\r\n",
            "Content-Length: 3\r\nContent-Length: 4\r\n",
        ];
        for header in bad {
            let response = format!("HTTP/1.1 404 Not Found\r\n{header}\r\nabcdef");
            assert_eq!(
                parse(response.as_bytes(), &[]),
                Err(UpstreamError::BadContentLength),
                "{header:?}"
            );
        }
    }

    #[test]
    fn unsafe_relayed_values_dropped() {
        let mut response = b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer \xff\xfe\r\n\
            WWW-Authenticate: Basic realm=\"x\"\r\nRetry-After: \r\n\r\n"
            .to_vec();
        assert!(matches!(
            parse(&response, &[]),
            Ok(Some(UpstreamResponse::Rejected {
                www_authenticate: Some("Basic realm=\"x\""),
                retry_after: None,
                ..
            }))
        ));
        response.truncate(0);
        response
            .extend_from_slice(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\tx\r\n\r\n");
        assert!(matches!(
            parse(&response, &[]),
            Ok(Some(UpstreamResponse::Rejected {
                www_authenticate: Some("Bearer\tx"),
                ..
            }))
        ));
    }

    #[test]
    fn head_over_limit() {
        // A head that never ends: incomplete up to the limit, an error past it.
        let mut buf = b"HTTP/1.1 101 Switching Protocols\r\nX-Filler: ".to_vec();
        buf.resize(MAX_RESPONSE_HEAD, b'a');
        assert_eq!(parse(&buf, &[]), Ok(None));
        buf.push(b'a');
        assert_eq!(parse(&buf, &[]), Err(UpstreamError::HeadTooLarge));
        // A complete head one byte too long.
        let start = "HTTP/1.1 401 Unauthorized\r\nX-Filler: ";
        let end = "\r\n\r\n";
        let filler = MAX_RESPONSE_HEAD + 1 - start.len() - end.len();
        let head = format!("{start}{}{end}", "a".repeat(filler));
        assert_eq!(head.len(), MAX_RESPONSE_HEAD + 1);
        assert_eq!(
            parse(head.as_bytes(), &[]),
            Err(UpstreamError::HeadTooLarge)
        );
        // Exactly at the limit it is accepted, even with more bytes after it.
        let head = format!("{start}{}{end}", "a".repeat(filler - 1));
        assert_eq!(head.len(), MAX_RESPONSE_HEAD);
        let buf = format!("{head}more");
        assert!(matches!(
            parse(buf.as_bytes(), &[]),
            Ok(Some(UpstreamResponse::Rejected { status: 401, consumed, .. })) if consumed == MAX_RESPONSE_HEAD
        ));
    }

    #[test]
    fn too_many_headers() {
        let mut response = "HTTP/1.1 401 Unauthorized\r\n".to_owned();
        for i in 0..MAX_RESPONSE_HEADERS {
            response.push_str(&format!("X-H{i}: v\r\n"));
        }
        let at_limit = format!("{response}\r\n");
        assert!(matches!(
            parse(at_limit.as_bytes(), &[]),
            Ok(Some(UpstreamResponse::Rejected { status: 401, .. }))
        ));
        response.push_str("X-One-More: v\r\n\r\n");
        assert_eq!(
            parse(response.as_bytes(), &[]),
            Err(UpstreamError::TooManyHeaders)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let cases: [&[u8]; 10] = [
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 1011 OK\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nBad Header: x\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nX: a\rb\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nX: a\0b\r\n\r\n",
            b"\0\0\0\0",
        ];
        for buf in cases {
            assert_eq!(
                parse(buf, &[]),
                Err(UpstreamError::Malformed),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
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
            parse_upstream_response(&answer, &key, req.offered_protocols),
            Ok(Some(UpstreamResponse::Switching {
                protocol: Some("chat"),
                head_len: answer.len()
            }))
        );
    }
}
