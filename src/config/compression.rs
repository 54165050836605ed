//! `[compression]`: permessage-deflate (SPEC §10, RFC 7692).

use serde::Deserialize;

use super::units::ByteSize;
use super::{to_usize, Problems};
use crate::proto::ws::deflate::{DeflateConfig, MAX_WINDOW_BITS, MIN_WINDOW_BITS};

/// `[compression]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompressionSection {
    /// Negotiate permessage-deflate (default false: the section is optional and off).
    pub permessage_deflate: bool,
    /// The largest window the gateway compresses with, 9..=15.
    pub server_max_window_bits: u8,
    /// `false`: `*_no_context_takeover` both ways, no state kept between messages.
    pub context_takeover: bool,
    /// Outgoing messages smaller than this are sent uncompressed.
    pub min_size: ByteSize,
    /// Ceiling for all per-connection compression state together.
    pub memory: ByteSize,
}

impl Default for CompressionSection {
    fn default() -> Self {
        CompressionSection {
            permessage_deflate: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            context_takeover: false,
            min_size: ByteSize(256),
            memory: ByteSize(256 << 20),
        }
    }
}

/// `[compression]`, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    /// permessage-deflate is negotiated (on routes that do not opt out).
    pub permessage_deflate: bool,
    /// What the negotiation may agree to.
    pub deflate: DeflateConfig,
    /// Ceiling for per-connection compression state; past it new handshakes decline.
    pub memory: usize,
}

impl Default for Compression {
    fn default() -> Self {
        compression(&CompressionSection::default(), &mut Problems::default())
    }
}

pub(super) fn compression(raw: &CompressionSection, problems: &mut Problems) -> Compression {
    let bits = raw.server_max_window_bits;
    if !(MIN_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&bits) {
        problems.error(
            "compression.server_max_window_bits",
            format!(
                "must be {MIN_WINDOW_BITS}..{MAX_WINDOW_BITS} (RFC 7692 allows 8, which zlib \
                 cannot produce), got {bits}"
            ),
        );
    }
    Compression {
        permessage_deflate: raw.permessage_deflate,
        deflate: DeflateConfig {
            server_max_window_bits: bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS),
            context_takeover: raw.context_takeover,
            min_size: to_usize(raw.min_size.0),
        },
        memory: to_usize(raw.memory.0),
    }
}
