//! `[limits]`: per-address, per-subject and per-connection budgets (SPEC §3).

use std::time::Duration;

use serde::Deserialize;

use super::units::{ByteRate, ByteSize, DurationStr, Rate};
use super::{to_usize, Problems};

/// `[limits]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// The whole request head must arrive by then.
    pub handshake_timeout: DurationStr,
    /// Request line + headers.
    pub max_request_bytes: ByteSize,
    /// Largest frame payload.
    pub max_frame: ByteSize,
    /// Largest message after reassembly.
    pub max_message: ByteSize,
    /// Ping after half of it, close after all of it.
    pub idle_timeout: DurationStr,
    /// Pending output per connection before backpressure.
    pub write_buffer: ByteSize,
    /// Open connections per client IP.
    pub per_ip_connections: u32,
    /// Upgrade attempts per client IP.
    pub per_ip_handshakes: Rate,
    /// Failed tokens per client IP.
    pub per_ip_auth_failures: Rate,
    /// IPv6 clients are counted per /ipv6_prefix in every per-IP limit (1..=128).
    pub ipv6_prefix: u8,
    /// Open connections per token subject.
    pub per_subject_connections: u32,
    /// Frames received per connection.
    pub messages: Rate,
    /// Payload bytes received per connection.
    pub bytes: ByteRate,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            handshake_timeout: DurationStr::secs(5),
            max_request_bytes: ByteSize(8 * 1024),
            max_frame: ByteSize(1 << 20),
            max_message: ByteSize(1 << 20),
            idle_timeout: DurationStr::secs(60),
            write_buffer: ByteSize(1 << 20),
            per_ip_connections: 256,
            per_ip_handshakes: Rate(50),
            per_ip_auth_failures: Rate(10),
            ipv6_prefix: 64,
            per_subject_connections: 32,
            messages: Rate(1000),
            bytes: ByteRate(8 << 20),
        }
    }
}

/// `[limits]`, resolved. Sizes are inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The whole request head must arrive by then.
    pub handshake_timeout: Duration,
    /// Request line + headers, leading CRLFs included.
    pub max_request_bytes: usize,
    /// Largest frame payload.
    pub max_frame: u64,
    /// Largest message after reassembly.
    pub max_message: u64,
    /// Ping after half of it, close after all of it.
    pub idle_timeout: Duration,
    /// Pending output per connection before backpressure.
    pub write_buffer: usize,
    /// Open connections per client IP.
    pub per_ip_connections: u32,
    /// Upgrade attempts per client IP per second (burst = rate).
    pub per_ip_handshakes: u64,
    /// Failed tokens per client IP per second (burst = rate).
    pub per_ip_auth_failures: u64,
    /// Prefix length by which IPv6 clients are counted in per-IP limits.
    pub ipv6_prefix: u8,
    /// Open connections per token subject.
    pub per_subject_connections: u32,
    /// Frames received per connection per second (burst = rate).
    pub messages: u64,
    /// Payload bytes received per connection per second (burst = rate).
    pub bytes: u64,
}

/// `limits.max_request_bytes` floor: a WebSocket upgrade with a token needs room.
const MIN_REQUEST_BYTES: u64 = 1024;

/// `limits.write_buffer` floor: a control frame and a small message must fit.
const MIN_WRITE_BUFFER: u64 = 4 * 1024;

pub(super) fn limits(raw: &LimitsSection, problems: &mut Problems) -> Limits {
    for (at, value) in [
        ("limits.handshake_timeout", raw.handshake_timeout.0),
        ("limits.idle_timeout", raw.idle_timeout.0),
    ] {
        if value.is_zero() {
            problems.error(at, "must be more than 0s");
        }
    }
    for (at, value, minimum) in [
        (
            "limits.max_request_bytes",
            raw.max_request_bytes,
            MIN_REQUEST_BYTES,
        ),
        ("limits.max_frame", raw.max_frame, 1),
        ("limits.max_message", raw.max_message, 1),
        ("limits.write_buffer", raw.write_buffer, MIN_WRITE_BUFFER),
    ] {
        if value.0 < minimum {
            problems.error(
                at,
                format!("must be at least {}, got {value}", ByteSize(minimum)),
            );
        }
        if usize::try_from(value.0).is_err() {
            problems.error(
                at,
                format!("{value} does not fit in memory on this machine"),
            );
        }
    }
    for (at, value) in [
        ("limits.per_ip_connections", raw.per_ip_connections),
        (
            "limits.per_subject_connections",
            raw.per_subject_connections,
        ),
    ] {
        if value == 0 {
            problems.error(
                at,
                "must be at least 1 (use a large value to effectively disable)",
            );
        }
    }
    Limits {
        handshake_timeout: raw.handshake_timeout.0,
        max_request_bytes: to_usize(raw.max_request_bytes.0),
        max_frame: raw.max_frame.0,
        max_message: raw.max_message.0,
        idle_timeout: raw.idle_timeout.0,
        write_buffer: to_usize(raw.write_buffer.0),
        per_ip_connections: raw.per_ip_connections,
        per_ip_handshakes: raw.per_ip_handshakes.0,
        per_ip_auth_failures: raw.per_ip_auth_failures.0,
        ipv6_prefix: ipv6_prefix(raw.ipv6_prefix, problems),
        per_subject_connections: raw.per_subject_connections,
        messages: raw.messages.0,
        bytes: raw.bytes.0,
    }
}

/// SPEC §3 `limits.ipv6_prefix`: 1 to 128 (the default 64 when out of range, reported).
fn ipv6_prefix(prefix: u8, problems: &mut Problems) -> u8 {
    if (1..=128).contains(&prefix) {
        return prefix;
    }
    problems.error(
        "limits.ipv6_prefix",
        format!("must be from 1 to 128, got {prefix}"),
    );
    64
}
