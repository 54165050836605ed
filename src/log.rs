//! The one logging function. One line per event on stderr. It receives only what it
//! prints: callers pass the request target through [`redacted_target`], and a token is
//! never an argument.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

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

static MIN_LEVEL: AtomicU8 = AtomicU8::new(0);

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
}

/// Whether a line at `level` would be printed.
pub fn enabled(level: Level) -> bool {
    level as u8 >= MIN_LEVEL.load(Ordering::Relaxed)
}

/// Writes one line to stderr, prefixed with the level.
pub fn line(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let tag = match level {
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    };
    let mut buf = Vec::with_capacity(160);
    let _ = writeln!(buf, "wsgate {tag}: {args}");
    let _ = std::io::stderr().lock().write_all(&buf);
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

/// The request target with every token-bearing query parameter's value replaced.
pub fn redacted_target<S: AsRef<str>>(
    path: &str,
    query: Option<&str>,
    token_params: &[S],
) -> String {
    let mut out = String::with_capacity(path.len() + query.map_or(0, str::len) + 1);
    out.push_str(path);
    if let Some(q) = query {
        out.push('?');
        crate::proto::http::fields::redact_query(q, token_params, &mut out);
    }
    out
}
