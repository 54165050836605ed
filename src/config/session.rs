//! `[session]`: what happens when a connection's token expires, and token refresh.

use std::time::Duration;

use serde::Deserialize;

use super::units::DurationStr;
use super::Problems;

/// `[session]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSection {
    /// Only `"close"`.
    pub on_expiry: String,
    /// `"message"` or `"off"`.
    pub refresh: String,
    /// When `wsgate.expiring` is sent before `exp`.
    pub expiry_notice: DurationStr,
    /// Failed refreshes allowed per connection; one more closes it with 1008.
    pub max_failed_refreshes: u32,
}

impl Default for SessionSection {
    fn default() -> Self {
        SessionSection {
            on_expiry: "close".to_owned(),
            refresh: "message".to_owned(),
            expiry_notice: DurationStr::secs(60),
            max_failed_refreshes: 3,
        }
    }
}

/// `[session]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// What happens at `exp` (+ leeway).
    pub on_expiry: OnExpiry,
    /// In-band refresh (SPEC §6).
    pub refresh: Refresh,
    /// When `wsgate.expiring` is sent before `exp`.
    pub expiry_notice: Duration,
    /// SPEC §6: failed in-band refreshes allowed per connection; one more closes it with
    /// 1008 "too many failed refreshes".
    pub max_failed_refreshes: u32,
}

/// `session.on_expiry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExpiry {
    /// Close with 4401 "token expired".
    Close,
}

/// `session.refresh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// `{"type":"wsgate.refresh","token":"..."}` messages are honoured.
    Message,
    /// No in-band refresh.
    Off,
}

pub(super) fn session(raw: &SessionSection, problems: &mut Problems) -> Session {
    let on_expiry = match raw.on_expiry.as_str() {
        "close" => OnExpiry::Close,
        other => {
            problems.error(
                "session.on_expiry",
                format!("expected \"close\", got {other:?}"),
            );
            OnExpiry::Close
        }
    };
    let refresh = match raw.refresh.as_str() {
        "message" => Refresh::Message,
        "off" => Refresh::Off,
        other => {
            problems.error(
                "session.refresh",
                format!("expected \"message\" or \"off\", got {other:?}"),
            );
            Refresh::Off
        }
    };
    Session {
        on_expiry,
        refresh,
        expiry_notice: raw.expiry_notice.0,
        max_failed_refreshes: raw.max_failed_refreshes,
    }
}
