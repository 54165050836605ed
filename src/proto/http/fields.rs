//! Borrowing helpers for header field values and query strings: lists, parameters, cookies,
//! percent-decoding and log redaction.

/// The value written in place of a secret query parameter's value by [`redact_query`].
pub const REDACTED: &str = "REDACTED";

/// RFC 7230 §3.2.3: `OWS = *( SP / HTAB )`.
fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `value` without leading and trailing optional whitespace (SP / HTAB).
pub fn trim_ows(value: &[u8]) -> &[u8] {
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

/// The elements of a comma-separated header list, trimmed of OWS, empty elements skipped.
pub fn list_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    // RFC 7230 §7: `#element` lists; "a recipient MUST accept empty list elements", which
    // carry no value and are skipped.
    value
        .split(|b| *b == b',')
        .map(trim_ows)
        .filter(|element| !element.is_empty())
}

/// The `name=value` pairs of a query string, split on '&' then on the first '=' (raw, not
/// decoded). Empty segments are skipped; a segment without '=' has an empty value.
pub fn query_params(query: &str) -> impl Iterator<Item = (&str, &str)> + '_ {
    query
        .split('&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| segment.split_once('=').unwrap_or((segment, "")))
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `s` (RFC 3986 §2.1; '+' stays '+'). Borrows `s` unchanged when it holds no
/// '%'; otherwise decodes into `scratch`. A '%' not followed by two hex digits is an error.
#[allow(clippy::result_unit_err)] // the one failure needs no detail; callers map it to their own error
pub fn percent_decode<'a>(s: &'a str, scratch: &'a mut Vec<u8>) -> Result<&'a [u8], ()> {
    let bytes = s.as_bytes();
    if !bytes.contains(&b'%') {
        return Ok(bytes);
    }
    scratch.clear();
    scratch.reserve(bytes.len());
    let mut rest = bytes.iter();
    while let Some(&b) = rest.next() {
        if b == b'%' {
            // RFC 3986 §2.1: `pct-encoded = "%" HEXDIG HEXDIG`.
            let high = rest.next().and_then(|c| hex_value(*c)).ok_or(())?;
            let low = rest.next().and_then(|c| hex_value(*c)).ok_or(())?;
            scratch.push(high << 4 | low);
        } else {
            scratch.push(b);
        }
    }
    Ok(scratch.as_slice())
}

/// The `name=value` pairs of a `Cookie` header ("a=b; c=d"), trimmed; a value in double
/// quotes is returned without them. Pairs with no '=' or an empty name are skipped.
pub fn cookies(value: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
    // RFC 6265 §4.2.1: `cookie-string = cookie-pair *( ";" SP cookie-pair )`,
    // `cookie-pair = cookie-name "=" cookie-value`,
    // `cookie-value = *cookie-octet / ( DQUOTE *cookie-octet DQUOTE )`.
    value.split(|b| *b == b';').filter_map(|pair| {
        let mut parts = pair.splitn(2, |b| *b == b'=');
        let name = trim_ows(parts.next()?);
        let value = trim_ows(parts.next()?);
        if name.is_empty() {
            return None;
        }
        let value = match value {
            [b'"', inner @ .., b'"'] => inner,
            _ => value,
        };
        Some((name, value))
    })
}

/// True when `raw`, percent-decoded (a bad escape is compared literally), equals `want`
/// ignoring ASCII case. Allocates nothing.
fn decoded_name_matches(raw: &str, want: &str) -> bool {
    let mut decoded = raw.as_bytes();
    let mut want = want.as_bytes().iter();
    loop {
        let (byte, rest) = match decoded {
            [] => return want.next().is_none(),
            [first, rest @ ..] => match (*first, rest) {
                (b'%', [high, low, after @ ..]) => match (hex_value(*high), hex_value(*low)) {
                    (Some(high), Some(low)) => (high << 4 | low, after),
                    _ => (b'%', rest),
                },
                (b, _) => (b, rest),
            },
        };
        match want.next() {
            Some(w) if w.eq_ignore_ascii_case(&byte) => decoded = rest,
            _ => return false,
        }
    }
}

/// The segments of a query string with the separator that precedes each (`None` for the
/// first). SPEC §4 "Query parameters": tokens are read only from `&`-separated parameters,
/// but redaction and stripping split on `;` as well, so that `x=1;access_token=<jwt>` is two
/// segments here.
pub fn query_segments(query: &str) -> impl Iterator<Item = (Option<char>, &str)> + '_ {
    let mut rest = Some(query);
    let mut before: Option<char> = None;
    std::iter::from_fn(move || {
        let current = rest?;
        let separator = before;
        match current.find(['&', ';']) {
            Some(i) => {
                before = current[i..].chars().next();
                rest = Some(&current[i + 1..]);
                Some((separator, &current[..i]))
            }
            None => {
                rest = None;
                Some((separator, current))
            }
        }
    })
}

/// True when the query segment `segment` ("name=value" or "name") is a token parameter: its
/// name, percent-decoded and ignoring ASCII case, is one of `token_names`. The one test for
/// both log redaction and upstream stripping.
pub fn is_token_segment<S: AsRef<str>>(segment: &str, token_names: &[S]) -> bool {
    let name = segment.split_once('=').map_or(segment, |(name, _)| name);
    token_names
        .iter()
        .any(|token| decoded_name_matches(name, token.as_ref()))
}

/// True when `value` looks like a JWS compact serialization (three base64url segments, the
/// first one a JSON object's encoding): redacted in logs whatever its parameter's name.
fn is_jws_shaped(value: &str) -> bool {
    let mut parts = value.split('.');
    let header = parts.next().unwrap_or_default();
    let segments = 1 + parts.by_ref().take(3).count();
    // "eyJ" is base64url for `{"`; a percent-encoded `=` or `.` could hide the shape from
    // the byte test below, so an escaped value starting like a JWS header counts too.
    header.starts_with("eyJ")
        && (segments == 3 || value.contains('%'))
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.%=".contains(&b))
}

/// Appends `query` to `out` with the value of every token parameter ([`is_token_segment`])
/// and every JWS-shaped value replaced by [`REDACTED`]. Segments are split on `&` and `;`
/// ([`query_segments`]); separators are kept as sent.
pub fn redact_query<S: AsRef<str>>(query: &str, secret_names: &[S], out: &mut String) {
    for (separator, segment) in query_segments(query) {
        if let Some(separator) = separator {
            out.push(separator);
        }
        match segment.split_once('=') {
            Some((name, value))
                if is_token_segment(segment, secret_names) || is_jws_shaped(value) =>
            {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(segment),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(value: &[u8]) -> Vec<&[u8]> {
        list_tokens(value).collect()
    }

    #[test]
    fn list_tokens_trims_and_skips_empty() {
        assert_eq!(
            tokens(b"keep-alive, Upgrade"),
            vec![&b"keep-alive"[..], b"Upgrade"]
        );
        assert_eq!(tokens(b" a ,\tb\t,, ,c,"), vec![&b"a"[..], b"b", b"c"]);
        assert!(tokens(b"").is_empty());
        assert!(tokens(b" , ,\t,").is_empty());
        assert_eq!(tokens(b"upgrade"), vec![&b"upgrade"[..]]);
        // Inner spaces stay: they are part of the element.
        assert_eq!(tokens(b"a b, c"), vec![&b"a b"[..], b"c"]);
        assert_eq!(
            tokens("chat.v1, bearer.x=y,ü".as_bytes()),
            vec![&b"chat.v1"[..], b"bearer.x=y", "ü".as_bytes()]
        );
    }

    #[test]
    fn trim_ows_edges() {
        assert_eq!(trim_ows(b""), b"");
        assert_eq!(trim_ows(b"  \t "), b"");
        assert_eq!(trim_ows(b" x "), b"x");
        assert_eq!(trim_ows(b"x"), b"x");
        assert_eq!(trim_ows(b"\r x\n"), b"\r x\n");
    }

    #[test]
    fn query_params_odd_input() {
        let all = |q| query_params(q).collect::<Vec<_>>();
        assert!(all("").is_empty());
        assert!(all("&&&").is_empty());
        assert_eq!(all("a=1&b=2&"), vec![("a", "1"), ("b", "2")]);
        assert_eq!(all("&a=1&&b"), vec![("a", "1"), ("b", "")]);
        assert_eq!(all("t=x=y==&=v"), vec![("t", "x=y=="), ("", "v")]);
        assert_eq!(all("é=ü&a="), vec![("é", "ü"), ("a", "")]);
        assert_eq!(all("a=1;b=2"), vec![("a", "1;b=2")]);
    }

    #[test]
    fn percent_decode_borrows_without_percent() {
        let mut scratch = Vec::new();
        let s = "eyJhbGciOiJFZERTQSJ9.e30.sig+x";
        let decoded = percent_decode(s, &mut scratch);
        assert_eq!(decoded.map(<[u8]>::as_ptr), Ok(s.as_ptr()));
        assert!(scratch.is_empty());
    }

    #[test]
    fn percent_decode_decodes_into_scratch() {
        let mut scratch = b"old".to_vec();
        assert_eq!(
            percent_decode("a%2Eb%2ec%20d+e%25", &mut scratch),
            Ok(&b"a.b.c d+e%"[..])
        );
        let mut scratch = Vec::new();
        assert_eq!(percent_decode("%C3%BC", &mut scratch), Ok("ü".as_bytes()));
        let mut scratch = Vec::new();
        assert_eq!(percent_decode("%00%ff", &mut scratch), Ok(&[0u8, 0xff][..]));
        let mut scratch = Vec::new();
        assert_eq!(percent_decode("", &mut scratch), Ok(&b""[..]));
        let mut scratch = Vec::new();
        assert_eq!(percent_decode("ü%41", &mut scratch), Ok("üA".as_bytes()));
    }

    #[test]
    fn percent_decode_rejects_bad_escapes() {
        for bad in [
            "%", "a%", "%4", "a%4", "%G1", "%1G", "%%41", "%-1", "%ü1", "x%2",
        ] {
            let mut scratch = Vec::new();
            assert_eq!(percent_decode(bad, &mut scratch), Err(()), "{bad:?}");
        }
    }

    fn all_cookies(value: &[u8]) -> Vec<(&[u8], &[u8])> {
        cookies(value).collect()
    }

    #[test]
    fn cookies_odd_input() {
        assert!(all_cookies(b"").is_empty());
        assert!(all_cookies(b";;; ;").is_empty());
        assert_eq!(
            all_cookies(b"a=b; c=d"),
            vec![(&b"a"[..], &b"b"[..]), (b"c", b"d")]
        );
        assert_eq!(
            all_cookies(b"a=b;c=d;"),
            vec![(&b"a"[..], &b"b"[..]), (b"c", b"d")]
        );
        // '=' inside the value, a pair without '=', an empty name, an empty value.
        assert_eq!(
            all_cookies(b"tok=x.y=z==; flag; =v; e="),
            vec![(&b"tok"[..], &b"x.y=z=="[..]), (b"e", b"")]
        );
        // Quoted value, lone quote, OWS around both parts.
        assert_eq!(
            all_cookies(b" q = \"v v\" ; r=\"; s=\"\""),
            vec![(&b"q"[..], &b"v v"[..]), (b"r", b"\""), (b"s", b"")]
        );
        assert_eq!(
            all_cookies("ü=é".as_bytes()),
            vec![("ü".as_bytes(), "é".as_bytes())]
        );
    }

    fn redact(query: &str, names: &[&str]) -> String {
        let mut out = String::from(">");
        redact_query(query, names, &mut out);
        out
    }

    #[test]
    fn redact_query_replaces_only_secret_values() {
        let names = ["access_token", "token"];
        assert_eq!(
            redact("room=1&access_token=eyJ.abc.def&token=x=y&z=2", &names),
            ">room=1&access_token=REDACTED&token=REDACTED&z=2"
        );
        // Repeated, re-cased and percent-encoded names are all redacted.
        assert_eq!(
            redact("token=a&TOKEN=b&access%5Ftoken=c&%74oken=d", &names),
            ">token=REDACTED&TOKEN=REDACTED&access%5Ftoken=REDACTED&%74oken=REDACTED"
        );
        // Prefixes and suffixes of a secret name are not the name.
        assert_eq!(
            redact("tokens=a&my_token=b&toke=c", &names),
            ">tokens=a&my_token=b&toke=c"
        );
    }

    #[test]
    fn redact_query_odd_input() {
        let names = ["token"];
        assert_eq!(redact("", &names), ">");
        assert_eq!(redact("&&", &names), ">&&");
        assert_eq!(redact("token", &names), ">token");
        assert_eq!(redact("token=", &names), ">token=REDACTED");
        assert_eq!(redact("a=1&token=x&", &names), ">a=1&token=REDACTED&");
        assert_eq!(redact("é=ü&token=ü", &names), ">é=ü&token=REDACTED");
        assert_eq!(
            redact("%=x&tok%en=y&token%=z", &names),
            ">%=x&tok%en=y&token%=z"
        );
        assert_eq!(redact("token=x", &[]), ">token=x");
    }

    #[test]
    fn redact_query_splits_on_semicolons_too() {
        let names = ["access_token", "token"];
        // SPEC §4 "Query parameters": `;` separates for redaction.
        assert_eq!(
            redact("x=1;access_token=eyJ.abc.def", &names),
            ">x=1;access_token=REDACTED"
        );
        assert_eq!(
            redact("a=1&b=2;TOKEN=s;c=3&token=t", &names),
            ">a=1&b=2;TOKEN=REDACTED;c=3&token=REDACTED"
        );
        assert_eq!(redact(";;&", &names), ">;;&");
        assert_eq!(redact("token=a;b", &names), ">token=REDACTED;b");
    }

    #[test]
    fn redact_query_hides_jws_shaped_values_under_any_name() {
        let names = ["access_token"];
        assert_eq!(
            redact("id=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln&x=1", &names),
            ">id=REDACTED&x=1"
        );
        assert_eq!(
            redact("id=eyJhbGciOiJIUzI1NiJ9%2Eeyb%2Ec2ln", &names),
            ">id=REDACTED"
        );
        // Two segments, or not starting like a JSON header: not a JWS.
        assert_eq!(redact("v=a.b.c&w=eyJx.y", &names), ">v=a.b.c&w=eyJx.y");
    }

    #[test]
    fn query_segments_keep_separators() {
        let segs: Vec<_> = query_segments("a=1;b&c=").collect();
        assert_eq!(segs, [(None, "a=1"), (Some(';'), "b"), (Some('&'), "c=")]);
        let segs: Vec<_> = query_segments("").collect();
        assert_eq!(segs, [(None, "")]);
        let segs: Vec<_> = query_segments("&").collect();
        assert_eq!(segs, [(None, ""), (Some('&'), "")]);
    }

    #[test]
    fn decoded_name_matching() {
        assert!(decoded_name_matches("token", "token"));
        assert!(decoded_name_matches("To%4Ben", "token"));
        assert!(!decoded_name_matches("tok", "token"));
        assert!(!decoded_name_matches("token%", "token"));
        assert!(!decoded_name_matches("", "token"));
        assert!(decoded_name_matches("", ""));
        assert!(decoded_name_matches("%2", "%2"));
    }
}
