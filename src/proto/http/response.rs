//! HTTP/1.1 responses the gateway writes: the 101 and complete plain-text answers.
//!
//! Every writer appends to a caller-owned `Vec<u8>` and allocates nothing else. Header values
//! may carry attacker-influenced text (scope names, relayed upstream headers), so control
//! characters, CR and LF among them, are dropped before they reach the wire.

use crate::proto::ws::deflate::Agreement;

/// Content type of every plain-text response body.
const CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// RFC 9110 §15: the reason phrase of a status code; for a code not registered there, the
/// name of its class ("Client Error" for 499).
pub fn reason_phrase(status: u16) -> &'static str {
    registered_reason(status).unwrap_or(match status / 100 {
        1 => "Informational",
        2 => "Successful",
        3 => "Redirection",
        4 => "Client Error",
        _ => "Server Error",
    })
}

fn registered_reason(status: u16) -> Option<&'static str> {
    Some(match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        511 => "Network Authentication Required",
        _ => return None,
    })
}

/// Appends the decimal digits of `n`.
pub fn write_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = n;
    for slot in digits.iter_mut().rev() {
        // `rest % 10` is below 10, so the cast cannot truncate.
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
        start -= 1;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

/// True for bytes that may not appear in a header value we write: controls except HTAB, DEL.
fn is_forbidden_in_field(b: u8) -> bool {
    // RFC 9110 §5.5: "a recipient of CR, LF, or NUL within a field value MUST either reject
    // the message or replace each of those characters with SP"; we drop every control.
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// Appends `value` with every control character (CR, LF, NUL, ...; HTAB kept) dropped.
pub fn write_field_text(out: &mut Vec<u8>, value: &str) {
    out.extend(value.bytes().filter(|b| !is_forbidden_in_field(*b)));
}

/// Appends `value` as an RFC 9110 §5.6.4 quoted-string: `"` and `\` escaped, controls dropped.
pub fn write_quoted_string(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    for b in value.bytes().filter(|b| !is_forbidden_in_field(*b)) {
        // RFC 9110 §5.6.4: `quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )`.
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// Appends one header line `name: value\r\n`, controls dropped from both parts.
pub fn write_header(out: &mut Vec<u8>, name: &str, value: &str) {
    write_field_text(out, name);
    out.extend_from_slice(b": ");
    write_field_text(out, value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `HTTP/1.1 <status> <reason>\r\n`. A status outside 100..=599 is written as 500.
pub fn write_status_line(out: &mut Vec<u8>, status: u16) {
    // RFC 9110 §15: status codes are three digits, classes 1xx to 5xx.
    let status = if (100..=599).contains(&status) {
        status
    } else {
        500
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    write_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends the status line and the fixed headers of a plain-text answer that closes the
/// connection: `Content-Type`, `Content-Length: content_length`, `Connection: close`. The
/// caller then adds its own headers, the empty line and exactly `content_length` body bytes.
pub fn write_plain_head(out: &mut Vec<u8>, status: u16, content_length: usize) {
    write_status_line(out, status);
    write_header(out, "Content-Type", CONTENT_TYPE);
    out.extend_from_slice(b"Content-Length: ");
    write_decimal(out, content_length as u64);
    out.extend_from_slice(b"\r\nConnection: close\r\n");
}

/// Appends the `101 Switching Protocols` answer (RFC 6455 §4.2.2 step 5), with
/// `Sec-WebSocket-Protocol` when a subprotocol was selected.
pub fn write_switching_protocols(out: &mut Vec<u8>, accept: &[u8; 28], protocol: Option<&str>) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept);
    out.extend_from_slice(b"\r\n");
    if let Some(protocol) = protocol {
        write_header(out, "Sec-WebSocket-Protocol", protocol);
    }
    out.extend_from_slice(b"\r\n");
}

/// The 101 of [`write_switching_protocols`] with the `Sec-WebSocket-Extensions` answer of
/// RFC 7692 §7.1 when permessage-deflate was agreed.
pub fn write_switching_protocols_deflate(
    out: &mut Vec<u8>,
    accept: &[u8; 28],
    protocol: Option<&str>,
    deflate: Option<&Agreement>,
) {
    write_switching_protocols(out, accept, protocol);
    if let Some(agreement) = deflate {
        // Reopen the head: drop its final empty line, add the field, close it again.
        out.truncate(out.len().saturating_sub(2));
        out.extend_from_slice(b"Sec-WebSocket-Extensions: ");
        agreement.write_response(out);
        out.extend_from_slice(b"\r\n\r\n");
    }
}

/// Appends a complete HTTP/1.1 plain-text response that closes the connection: status line,
/// `Content-Type`, `Content-Length`, `Connection: close`, `extra_headers`, then `body`.
pub fn write_response(out: &mut Vec<u8>, status: u16, extra_headers: &[(&str, &str)], body: &str) {
    write_plain_head(out, status, body.len());
    for (name, value) in extra_headers {
        write_header(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switching_protocols_without_protocol() {
        let mut out = b"pending".to_vec();
        write_switching_protocols(&mut out, b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", None);
        assert_eq!(
            out,
            b"pendingHTTP/1.1 101 Switching Protocols\r\n\
              Upgrade: websocket\r\n\
              Connection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
              \r\n"
        );
    }

    #[test]
    fn switching_protocols_with_protocol() {
        let mut out = Vec::new();
        write_switching_protocols(&mut out, b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", Some("chat.v1"));
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\n\
              Upgrade: websocket\r\n\
              Connection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
              Sec-WebSocket-Protocol: chat.v1\r\n\
              \r\n"
        );
    }

    #[test]
    fn switching_protocols_strips_injection() {
        let mut out = Vec::new();
        write_switching_protocols(
            &mut out,
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            Some("x\r\nSet-Cookie: a=b"),
        );
        assert!(out.ends_with(b"Sec-WebSocket-Protocol: xSet-Cookie: a=b\r\n\r\n"));
    }

    #[test]
    fn switching_protocols_fits_reserved_capacity() {
        let mut out = Vec::with_capacity(256);
        let before = out.as_ptr();
        write_switching_protocols(&mut out, b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", Some("chat.v1"));
        assert_eq!(out.as_ptr(), before);
    }

    #[test]
    fn response_has_all_parts() {
        let mut out = Vec::new();
        write_response(&mut out, 404, &[("X-A", "1")], "no route\n");
        assert_eq!(
            out,
            b"HTTP/1.1 404 Not Found\r\n\
              Content-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 9\r\n\
              Connection: close\r\n\
              X-A: 1\r\n\
              \r\n\
              no route\n"
        );
    }

    #[test]
    fn response_with_empty_and_unicode_body() {
        let mut out = Vec::new();
        write_response(&mut out, 503, &[], "");
        assert!(out.ends_with(b"Content-Length: 0\r\nConnection: close\r\n\r\n"));
        let mut out = Vec::new();
        write_response(&mut out, 400, &[], "é\n");
        assert!(out.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\né\n".as_bytes()));
    }

    #[test]
    fn header_values_lose_cr_lf_and_controls() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            403,
            &[
                ("X-Scope", "a\r\nSet-Cookie: x=y\0\x7f\tb"),
                ("Bad\r\nName", "v"),
            ],
            "",
        );
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("\r\nX-Scope: aSet-Cookie: x=y\tb\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nBadName: v\r\n"), "{text}");
        assert!(!text.contains("\r\nSet-Cookie"), "{text}");
    }

    #[test]
    fn quoted_string_escapes() {
        let mut out = Vec::new();
        write_quoted_string(&mut out, "a\"b\\c\r\nd\te");
        assert_eq!(out, b"\"a\\\"b\\\\cd\te\"");
        let mut out = Vec::new();
        write_quoted_string(&mut out, "");
        assert_eq!(out, b"\"\"");
    }

    #[test]
    fn status_lines() {
        for (status, line) in [
            (101, "HTTP/1.1 101 Switching Protocols\r\n"),
            (426, "HTTP/1.1 426 Upgrade Required\r\n"),
            (431, "HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            (499, "HTTP/1.1 499 Client Error\r\n"),
            (599, "HTTP/1.1 599 Server Error\r\n"),
            (99, "HTTP/1.1 500 Internal Server Error\r\n"),
            (600, "HTTP/1.1 500 Internal Server Error\r\n"),
        ] {
            let mut out = Vec::new();
            write_status_line(&mut out, status);
            assert_eq!(String::from_utf8_lossy(&out), line);
        }
    }

    #[test]
    fn decimals() {
        for n in [0u64, 7, 10, 99, 100, 12345, u64::MAX] {
            let mut out = Vec::new();
            write_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }
}
