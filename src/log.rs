//! The one logging function. One line per event on stderr. It receives only what it
//! prints: callers pass the request target through [`redacted_target`], and a token is
//! never an argument.
//!
//! Lines are `key=value` words (SPEC §7). Every field a client controls (the request
//! target, `sub`) is written through [`Q`]: quoted, with `"`, `\` and the control,
//! bidirectional and line-separator characters escaped as `\uXXXX`, and cut at
//! [`MAX_FIELD_BYTES`], so that no client can end a line, forge a field or reorder what a
//! terminal shows. A quoted field is a valid JSON string. With `WSGATE_LOG_FORMAT=json` each
//! line is written as one JSON object instead: `level`, one member per `key=value` word,
//! and the remaining words as `msg`.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// Longest client-controlled field written, in bytes of its value before escaping (SPEC §7).
pub const MAX_FIELD_BYTES: usize = 256;

/// True when `c` is written escaped inside a quoted field (SPEC §7): C0 and C1 controls,
/// DEL, the line and paragraph separators, and the bidirectional marks, embeddings,
/// overrides and isolates (which reorder what a terminal shows), plus `"` and `\`.
fn must_escape(c: char) -> bool {
    matches!(
        c,
        '\u{0}'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '"'
            | '\\'
    )
}

/// A client-controlled log field: displayed quoted, escaped and cut (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct Q<'a>(pub &'a str);

impl fmt::Display for Q<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut end = self.0.len().min(MAX_FIELD_BYTES);
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        let value = &self.0[..end];
        f.write_str("\"")?;
        let mut start = 0;
        for (i, c) in value.char_indices() {
            if must_escape(c) {
                f.write_str(&value[start..i])?;
                match c {
                    '"' => f.write_str("\\\"")?,
                    '\\' => f.write_str("\\\\")?,
                    _ => write!(f, "\\u{:04x}", u32::from(c))?,
                }
                start = i + c.len_utf8();
            }
        }
        f.write_str(&value[start..])?;
        f.write_str("\"")
    }
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Per-connection events (accepted, upgraded, closed).
    Info = 0,
    /// Rejections and peer misbehaviour.
    Warn = 1,
    /// Failures of the gateway itself.
    Error = 2,
}

/// An optional client-controlled field: [`Q`] when present, `-` when absent.
#[derive(Debug, Clone, Copy)]
pub struct QOpt<'a>(pub Option<&'a str>);

impl fmt::Display for QOpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => Q(value).fmt(f),
            None => f.write_str("-"),
        }
    }
}

static MIN_LEVEL: AtomicU8 = AtomicU8::new(0);
static JSON: AtomicBool = AtomicBool::new(false);

/// Writes one JSON object per line from now on (`WSGATE_LOG_FORMAT=json`).
pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// Sets the lowest level printed (from `WSGATE_LOG=info|warn|error`).
pub fn set_min_level(level: Level) {
    MIN_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Reads `WSGATE_LOG` once at start.
pub fn init_from_env() {
    let level = match std::env::var("WSGATE_LOG").as_deref() {
        Ok("warn") => Level::Warn,
        Ok("error") => Level::Error,
        _ => Level::Info,
    };
    set_min_level(level);
    set_json(std::env::var("WSGATE_LOG_FORMAT").as_deref() == Ok("json"));
}

/// Whether a line at `level` would be printed.
pub fn enabled(level: Level) -> bool {
    level as u8 >= MIN_LEVEL.load(Ordering::Relaxed)
}

/// Writes an info line whatever `WSGATE_LOG` says (startup facts such as the bound
/// addresses, which operators and tests read), in the configured format.
pub fn always(args: fmt::Arguments<'_>) {
    write_line(Level::Info, args);
}

/// Writes one line to stderr, prefixed with the level.
pub fn line(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    write_line(level, args);
}

fn write_line(level: Level, args: fmt::Arguments<'_>) {
    let tag = match level {
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    };
    let buf = if JSON.load(Ordering::Relaxed) {
        let mut line = json_line(tag, &args.to_string());
        line.push('\n');
        line
    } else {
        // A message is one line whatever a non-client field holds (an OS error, a path).
        let mut line = format!("wsgate {tag}: {args}").replace(['\n', '\r'], " ");
        line.push('\n');
        line
    };
    let _ = std::io::stderr().lock().write_all(buf.as_bytes());
}

/// The next word of `rest` (after leading spaces): a bare run of non-space bytes, where a
/// `"` starts a quoted part that runs to its closing unescaped `"` (spaces included).
/// Returns the word and what follows it.
fn next_word(rest: &str) -> Option<(&str, &str)> {
    let rest = rest.trim_start_matches(' ');
    if rest.is_empty() {
        return None;
    }
    let bytes = rest.as_bytes();
    let mut i = 0;
    let mut quoted = false;
    while i < bytes.len() {
        match (bytes[i], quoted) {
            (b'\\', true) => i += 1,
            (b'"', _) => quoted = !quoted,
            (b' ', false) => break,
            _ => {}
        }
        i += 1;
    }
    let end = i.min(bytes.len());
    Some((&rest[..end], &rest[end..]))
}

/// A field value as a JSON string: a quoted [`Q`] value is one already; a bare one is encoded.
fn json_value(value: &str) -> String {
    let is_quoted = value.len() >= 2
        && value.starts_with('"')
        && value.ends_with('"')
        && serde_json::from_str::<String>(value).is_ok();
    if is_quoted {
        value.to_owned()
    } else {
        serde_json::Value::from(value).to_string()
    }
}

/// One text line (`key=value` words and free words) as a JSON object (SPEC §7
/// `WSGATE_LOG_FORMAT=json`): `level`, then each field in order, then `msg` from the
/// free words. A key seen twice keeps its first value.
fn json_line(level: &str, message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 32);
    out.push_str("{\"level\":");
    out.push_str(&json_value(level));
    let mut keys: Vec<&str> = vec!["level", "msg"];
    let mut free: Vec<&str> = Vec::new();
    let mut rest = message;
    while let Some((word, after)) = next_word(rest) {
        rest = after;
        let field = word.split_once('=').filter(|(key, _)| {
            !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        });
        match field {
            Some((key, value)) if !keys.contains(&key) => {
                keys.push(key);
                out.push(',');
                out.push_str(&json_value(key));
                out.push(':');
                out.push_str(&json_value(value));
            }
            _ => free.push(word),
        }
    }
    out.push_str(",\"msg\":");
    out.push_str(&json_value(&free.join(" ")));
    out.push('}');
    out
}

/// Logs at info level.
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::log::line($crate::log::Level::Info, format_args!($($t)*)) };
}
/// Logs at warn level.
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::log::line($crate::log::Level::Warn, format_args!($($t)*)) };
}
/// Logs at error level.
#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::log::line($crate::log::Level::Error, format_args!($($t)*)) };
}

/// The request target for a log line: every token-bearing query parameter's value replaced
/// (SPEC §4), then quoted, escaped and cut as a client-controlled field ([`Q`]).
pub fn redacted_target<S: AsRef<str>>(
    path: &str,
    query: Option<&str>,
    token_params: &[S],
) -> String {
    let mut out = String::with_capacity(path.len() + query.map_or(0, str::len) + 1);
    // Path parameters (`/echo;access_token=...`) get the query's redaction too: the path is
    // logged, so no token-shaped segment of it may be.
    match path.split_once(';') {
        Some((before, params)) => {
            out.push_str(before);
            out.push(';');
            crate::proto::http::fields::redact_query(params, token_params, &mut out);
        }
        None => out.push_str(path),
    }
    if let Some(q) = query {
        out.push('?');
        crate::proto::http::fields::redact_query(q, token_params, &mut out);
    }
    Q(&out).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_redacted_in_query_and_path_parameters_then_quoted() {
        let names = ["access_token"];
        assert_eq!(
            redacted_target("/e", Some("a=1;access_token=x&b=2"), &names),
            r#""/e?a=1;access_token=REDACTED&b=2""#
        );
        assert_eq!(
            redacted_target("/e;access_token=x;k=v", None, &names),
            r#""/e;access_token=REDACTED;k=v""#
        );
        assert_eq!(redacted_target("/e", None, &names), r#""/e""#);
    }

    #[test]
    fn quoted_fields_escape_every_listed_character() {
        let nasty = "a\"b\\c\n\r\t\u{0}\u{1b}[31m\u{7f}\u{85}\u{9f}\u{2028}\u{2029}\u{200e}\u{200f}\u{202a}\u{202e}\u{2066}\u{2069}z";
        let q = Q(nasty).to_string();
        assert_eq!(
            q,
            "\"a\\\"b\\\\c\\u000a\\u000d\\u0009\\u0000\\u001b[31m\\u007f\\u0085\\u009f\\u2028\\u2029\\u200e\\u200f\\u202a\\u202e\\u2066\\u2069z\""
        );
        // The quoted field is a JSON string that reads back as the value.
        assert_eq!(
            serde_json::from_str::<String>(&q).ok().as_deref(),
            Some(nasty)
        );
        for c in q.chars() {
            assert!(!must_escape(c) || c == '"' || c == '\\', "{c:?} left raw");
        }
        // Unlisted non-ASCII stays as is.
        assert_eq!(Q("é\u{2027}").to_string(), "\"é\u{2027}\"");
    }

    #[test]
    fn quoted_fields_are_cut_at_256_bytes_on_a_char_boundary() {
        let long = "x".repeat(1000);
        assert_eq!(Q(&long).to_string().len(), MAX_FIELD_BYTES + 2);
        let wide = "é".repeat(200); // 400 bytes, 2 per char
        assert_eq!(Q(&wide).to_string(), format!("\"{}\"", "é".repeat(128)));
        let odd = format!("x{}", "é".repeat(200));
        assert_eq!(Q(&odd).to_string(), format!("\"x{}\"", "é".repeat(127)));
    }

    #[test]
    fn json_lines_are_one_object_with_fields_and_msg() {
        let sub = Q("x\" admin=1 \u{2028}");
        let msg = format!(
            "conn=0.1 peer=127.0.0.1:5 target={} sub={sub} upgraded",
            Q("/e?a=1 b")
        );
        let line = json_line("info", &msg);
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(v["level"], "info");
        assert_eq!(v["conn"], "0.1");
        assert_eq!(v["peer"], "127.0.0.1:5");
        assert_eq!(v["target"], "/e?a=1 b");
        assert_eq!(v["sub"], "x\" admin=1 \u{2028}");
        assert_eq!(v["msg"], "upgraded");
        assert!(v.get("admin").is_none());
        assert!(!line.contains('\n') && !line.contains('\u{2028}'));
        // Free text, odd words and repeated keys stay valid JSON.
        let line = json_line("warn", "reload failed: a=b a=c \"unterminated x=\u{1}");
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(v["a"], "b");
        assert!(v["msg"].as_str().is_some_and(|m| m.contains("a=c")));
    }
}
