//! Recognising an in-band refresh message (SPEC §6) by its leading bytes, and the
//! per-connection failure count that bounds what failed refreshes may cost.

/// SPEC §6: a text message is a refresh message when it is a JSON object whose first
/// member is `"type"` with the value `"wsgate.refresh"`, with any JSON whitespace (RFC
/// 8259 §2: space, tab, LF, CR) between those tokens. Only the leading bytes are looked
/// at: this is all that an ordinary message costs. A message that passes is never echoed
/// or forwarded, whether or not the rest of it is a valid refresh.
pub fn is_refresh(payload: &[u8]) -> bool {
    let mut rest = payload;
    for token in [&b"{"[..], b"\"type\"", b":", b"\"wsgate.refresh\""] {
        rest = skip_ws(rest);
        match rest.strip_prefix(token) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    true
}

fn skip_ws(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\n' | b'\r', rest @ ..] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leading_bytes_with_json_whitespace() {
        for yes in [
            &br#"{"type":"wsgate.refresh","token":"x"}"#[..],
            br#"{"type": "wsgate.refresh", "token": "x"}"#,
            br#"{ "type" : "wsgate.refresh" , "token" : "x" }"#,
            b"\t{\r\n\"type\"\n:\t\"wsgate.refresh\"}",
            br#"{"type":"wsgate.refresh" garbage"#,
            br#"{"type":"wsgate.refresh""#,
        ] {
            assert!(is_refresh(yes), "{}", String::from_utf8_lossy(yes));
        }
        for no in [
            &b""[..],
            b"{",
            br#"{"type":"wsgate.refreshed","exp":1}"#,
            br#"{"type":"wsgate.refresh_failed"}"#,
            br#"{"token":"x","type":"wsgate.refresh"}"#,
            br#"["type","wsgate.refresh"]"#,
            br#"{"type":"WSGATE.REFRESH"}"#,
            // Not JSON whitespace.
            b"{\x0c\"type\":\"wsgate.refresh\"}",
            "{\u{a0}\"type\":\"wsgate.refresh\"}".as_bytes(),
            br#"{'type':'wsgate.refresh'}"#,
            b"hello",
        ] {
            assert!(!is_refresh(no), "{}", String::from_utf8_lossy(no));
        }
    }
}
