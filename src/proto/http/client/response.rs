//! The upstream's answer to the upgrade request (RFC 6455 §4.1, §4.2.2): a push parser
//! over every byte received so far; `Switching` or the status to relay (SPEC §5).

use std::fmt;

use super::{
    is_field_byte, is_forwardable_protocol, list_elements, trim_ows, KEY_LEN, MAX_RELAYED_BODY,
    MAX_RESPONSE_HEAD, MAX_RESPONSE_HEADERS,
};
use crate::proto::ws::accept::accept_key;
use crate::proto::ws::deflate::{accept_answer, Agreement, ClientOffer};

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
    /// A 101 that selects an extension the gateway did not offer, or answers its
    /// permessage-deflate offer in a way RFC 7692 §7.1 makes the client refuse.
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
            UpstreamError::ExtensionNotOffered => {
                "upstream 101 selects an extension the gateway did not offer"
            }
            UpstreamError::ProtocolNotOffered => "upstream 101 selects a protocol not offered",
            UpstreamError::BadContentLength => "upstream response has an invalid Content-Length",
        })
    }
}

impl std::error::Error for UpstreamError {}

/// A complete answer from the upstream to the upgrade request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamResponse<'b> {
    /// A valid 101: the subprotocol it selected (one the gateway offered), the
    /// permessage-deflate agreement, and where the WebSocket frames start.
    Switching {
        /// The selected subprotocol, if any.
        protocol: Option<&'b str>,
        /// permessage-deflate as the upstream accepted the gateway's offer (RFC 7692 §7.1).
        extension: Option<Agreement>,
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

/// Checks a 101 against RFC 6455 §4.1's client rules; the selected subprotocol and
/// extension on success.
fn check_switching<'b>(
    version: u8,
    headers: &[httparse::Header<'b>],
    key: &[u8; KEY_LEN],
    (offered, deflate): (&[&str], Option<&ClientOffer>),
) -> Result<(Option<&'b str>, Option<Agreement>), UpstreamError> {
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
    // fails the connection; the gateway offers at most permessage-deflate, whose answer
    // RFC 7692 §7.1 checks.
    let extension = accept_answer(values(headers, "sec-websocket-extensions"), deflate)
        .map_err(|_| UpstreamError::ExtensionNotOffered)?;
    // RFC 6455 §4.1 item 6: a subprotocol "that was not present in the client's handshake"
    // fails the connection. RFC 6455 §11.3.4: in a response the header "MUST NOT appear more
    // than once" and holds one value.
    let mut selected = values(headers, "sec-websocket-protocol");
    let protocol = match (selected.next(), selected.next()) {
        (None, _) => None,
        (Some(value), None) => {
            let value = trim_ows(value);
            let is_offered = offered
                .iter()
                .any(|p| p.as_bytes() == value && is_forwardable_protocol(p));
            match std::str::from_utf8(value) {
                Ok(protocol) if is_offered => Some(protocol),
                _ => return Err(UpstreamError::ProtocolNotOffered),
            }
        }
        (Some(_), Some(_)) => return Err(UpstreamError::ProtocolNotOffered),
    };
    Ok((protocol, extension))
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
/// request offered (`ForwardRequest::offered_protocols`), `deflate` its permessage-deflate
/// offer (`ForwardRequest::extensions`), if any.
pub fn parse_upstream_response<'b>(
    buf: &'b [u8],
    key: &[u8; KEY_LEN],
    offered: &[&str],
    deflate: Option<&ClientOffer>,
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
        let (protocol, extension) = check_switching(version, headers, key, (offered, deflate))?;
        return Ok(Some(UpstreamResponse::Switching {
            protocol,
            extension,
            head_len,
        }));
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

    /// RFC 6455 §1.3's sample key and the accept value the RFC gives for it.
    const KEY: &[u8; KEY_LEN] = b"dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

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
        parse_upstream_response(buf, KEY, offered, None)
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
                extension: None,
                head_len: head.len()
            }))
        );
        // Offering protocols does not oblige the upstream to select one.
        assert_eq!(
            parse(head.as_bytes(), &["chat"]),
            Ok(Some(UpstreamResponse::Switching {
                protocol: None,
                extension: None,
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
                extension: None,
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
                extension: None,
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
            Ok(Some(UpstreamResponse::Switching {
                protocol, head_len, ..
            })) => {
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
            parse_upstream_response(head.as_bytes(), other_key, &[], None),
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
    fn permessage_deflate_answer_checked_against_the_offer() {
        use crate::proto::ws::deflate::DeflateConfig;
        let offer = ClientOffer {
            config: DeflateConfig {
                server_max_window_bits: 15,
                context_takeover: false,
                min_size: 256,
            },
            no_context_takeover: true,
        };
        let head = switching(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n",
        );
        match parse_upstream_response(head.as_bytes(), KEY, &[], Some(&offer)) {
            Ok(Some(UpstreamResponse::Switching {
                extension: Some(agreement),
                head_len,
                ..
            })) => {
                assert_eq!(head_len, head.len());
                assert!(agreement.server_no_context_takeover);
                assert_eq!(agreement.min_size, 256);
            }
            other => panic!("{other:?}"),
        }
        assert_prefixes_incomplete(head.as_bytes(), head.len(), &[]);
        // Declining the offer is fine.
        assert!(matches!(
            parse_upstream_response(switching("").as_bytes(), KEY, &[], Some(&offer)),
            Ok(Some(UpstreamResponse::Switching {
                extension: None,
                ..
            }))
        ));
        // RFC 7692 §7.1: answers the client must refuse (502).
        for extra in [
            "Sec-WebSocket-Extensions: permessage-deflate\r\n",
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover, x-other\r\n",
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; bogus\r\n",
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_max_window_bits\r\n",
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; server_max_window_bits=7\r\n",
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n",
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover;\r\n",
        ] {
            let head = switching(extra);
            assert_eq!(
                parse_upstream_response(head.as_bytes(), KEY, &[], Some(&offer)),
                Err(UpstreamError::ExtensionNotOffered),
                "{extra:?}"
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
}
