//! `ProtocolError`: every reason the gateway ends a WebSocket connection, each with the close
//! code and reason it sends. This is the one table from error to close code (RFC 6455 §7.4.1);
//! nothing else picks a code.

/// One variant per RFC 6455 rule broken (plus our limits); each knows its close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// RFC 6455 §5.2: RSV1-3 set without a negotiated extension.
    ReservedBitsSet,
    /// RFC 6455 §5.2: opcode 0x3-0x7 or 0xB-0xF.
    ReservedOpcode(u8),
    /// RFC 6455 §5.1: a client frame without the MASK bit.
    UnmaskedFrame,
    /// RFC 6455 §5.5: a control frame with FIN clear.
    FragmentedControlFrame,
    /// RFC 6455 §5.5: a control frame payload over 125 bytes.
    ControlFrameTooLong,
    /// RFC 6455 §5.4: a continuation frame with no message in progress.
    UnexpectedContinuation,
    /// RFC 6455 §5.4: a new text or binary frame while a fragmented message is in progress.
    ExpectedContinuation,
    /// RFC 6455 §5.2: a 64-bit payload length with its most significant bit set.
    LengthTopBitSet,
    /// Our `max_frame`: a frame payload longer than the limit.
    FrameTooBig,
    /// Our `max_message`: a reassembled message longer than the limit.
    MessageTooBig,
    /// RFC 6455 §8.1: a text message that is not UTF-8.
    InvalidUtf8,
    /// RFC 7692 §7.2.2: a compressed message that is not a valid DEFLATE stream (1007).
    InvalidCompressedData,
    /// RFC 6455 §7.4: a close code that may not appear on the wire.
    InvalidCloseCode(u16),
    /// RFC 6455 §5.5.1: a close payload of exactly one byte.
    CloseFrameTooShort,
    /// RFC 6455 §5.5.1: a close reason that is not UTF-8.
    InvalidCloseReason,
    /// Our `messages` or `bytes` budget (token bucket) exceeded.
    RateLimited,
    /// Our `idle_timeout`: no frame received for that long (even after our ping).
    IdleTimeout,
    /// Our `write_buffer`: pending output stayed over the limit (decided by the I/O shell).
    SlowConsumer,
    /// SIGTERM / SIGINT: the gateway is shutting down (SPEC §6).
    GoingAway,
    /// SPEC §6: the connection's token reached `exp` (+ leeway).
    TokenExpired,
    /// SPEC §4 `explain_to_browsers`: the token's `nbf` is in the future.
    TokenNotYetValid,
    /// SPEC §4 `explain_to_browsers`: the token lacks the route's scope.
    InsufficientScope,
    /// SPEC §6: the connection's token was revoked.
    TokenRevoked,
    /// SPEC §6: the key that signed the connection's token was removed by a reload.
    KeyRetired,
    /// SPEC §6: more failed in-band refreshes than `session.max_failed_refreshes`.
    TooManyFailedRefreshes,
}

/// SPEC §6: 4401 mirrors HTTP 401 ("refresh and reconnect") in the private-use range.
const TOKEN_UNAUTHORIZED: u16 = 4401;
/// SPEC §6: 4403 mirrors HTTP 403 ("do not retry") in the private-use range.
const TOKEN_FORBIDDEN: u16 = 4403;

/// RFC 6455 §7.4.1: 1001, the endpoint is going away.
const GOING_AWAY: u16 = 1001;
/// RFC 6455 §7.4.1: 1002, protocol error.
const PROTOCOL_ERROR: u16 = 1002;
/// RFC 6455 §7.4.1: 1007, data inconsistent with the message type (non-UTF-8 text).
const INVALID_PAYLOAD: u16 = 1007;
/// RFC 6455 §7.4.1: 1008, policy violation.
const POLICY_VIOLATION: u16 = 1008;
/// RFC 6455 §7.4.1: 1009, message too big to process.
const MESSAGE_TOO_BIG: u16 = 1009;

impl ProtocolError {
    /// The close code sent for this error (RFC 6455 §7.4.1).
    pub fn close_code(&self) -> u16 {
        match self {
            ProtocolError::ReservedBitsSet
            | ProtocolError::ReservedOpcode(_)
            | ProtocolError::UnmaskedFrame
            | ProtocolError::FragmentedControlFrame
            | ProtocolError::ControlFrameTooLong
            | ProtocolError::UnexpectedContinuation
            | ProtocolError::ExpectedContinuation
            | ProtocolError::LengthTopBitSet
            | ProtocolError::InvalidCloseCode(_)
            | ProtocolError::CloseFrameTooShort => PROTOCOL_ERROR,
            ProtocolError::InvalidUtf8
            | ProtocolError::InvalidCompressedData
            | ProtocolError::InvalidCloseReason => INVALID_PAYLOAD,
            ProtocolError::FrameTooBig | ProtocolError::MessageTooBig => MESSAGE_TOO_BIG,
            ProtocolError::RateLimited
            | ProtocolError::SlowConsumer
            | ProtocolError::TooManyFailedRefreshes => POLICY_VIOLATION,
            ProtocolError::IdleTimeout | ProtocolError::GoingAway => GOING_AWAY,
            ProtocolError::TokenExpired
            | ProtocolError::TokenNotYetValid
            | ProtocolError::KeyRetired => TOKEN_UNAUTHORIZED,
            ProtocolError::InsufficientScope | ProtocolError::TokenRevoked => TOKEN_FORBIDDEN,
        }
    }

    /// The close reason sent with the code: short, ASCII, never more than 123 bytes.
    pub fn reason(&self) -> &'static str {
        match self {
            ProtocolError::ReservedBitsSet => "reserved bits set",
            ProtocolError::ReservedOpcode(_) => "reserved opcode",
            ProtocolError::UnmaskedFrame => "unmasked frame",
            ProtocolError::FragmentedControlFrame => "fragmented control frame",
            ProtocolError::ControlFrameTooLong => "control frame too long",
            ProtocolError::UnexpectedContinuation => "unexpected continuation",
            ProtocolError::ExpectedContinuation => "expected continuation",
            ProtocolError::LengthTopBitSet => "invalid frame length",
            ProtocolError::FrameTooBig => "frame too big",
            ProtocolError::MessageTooBig => "message too big",
            ProtocolError::InvalidUtf8 => "invalid utf-8",
            ProtocolError::InvalidCompressedData => "invalid compressed data",
            ProtocolError::InvalidCloseCode(_) => "invalid close code",
            ProtocolError::CloseFrameTooShort => "close frame too short",
            ProtocolError::InvalidCloseReason => "invalid close reason",
            ProtocolError::RateLimited => "rate limit",
            ProtocolError::IdleTimeout => "idle timeout",
            ProtocolError::SlowConsumer => "slow consumer",
            ProtocolError::GoingAway => "going away",
            ProtocolError::TokenExpired => "token expired",
            ProtocolError::TokenNotYetValid => "token not yet valid",
            ProtocolError::InsufficientScope => "insufficient scope",
            ProtocolError::TokenRevoked => "token revoked",
            ProtocolError::KeyRetired => "key retired",
            ProtocolError::TooManyFailedRefreshes => "too many failed refreshes",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ProtocolError; 25] = [
        ProtocolError::ReservedBitsSet,
        ProtocolError::ReservedOpcode(3),
        ProtocolError::UnmaskedFrame,
        ProtocolError::FragmentedControlFrame,
        ProtocolError::ControlFrameTooLong,
        ProtocolError::UnexpectedContinuation,
        ProtocolError::ExpectedContinuation,
        ProtocolError::LengthTopBitSet,
        ProtocolError::FrameTooBig,
        ProtocolError::MessageTooBig,
        ProtocolError::InvalidUtf8,
        ProtocolError::InvalidCompressedData,
        ProtocolError::InvalidCloseCode(1005),
        ProtocolError::CloseFrameTooShort,
        ProtocolError::InvalidCloseReason,
        ProtocolError::RateLimited,
        ProtocolError::IdleTimeout,
        ProtocolError::SlowConsumer,
        ProtocolError::GoingAway,
        ProtocolError::TokenExpired,
        ProtocolError::TokenNotYetValid,
        ProtocolError::InsufficientScope,
        ProtocolError::TokenRevoked,
        ProtocolError::KeyRetired,
        ProtocolError::TooManyFailedRefreshes,
    ];

    #[test]
    fn codes_follow_the_rfc_table() {
        assert_eq!(ProtocolError::UnmaskedFrame.close_code(), 1002);
        assert_eq!(ProtocolError::ReservedOpcode(0xB).close_code(), 1002);
        assert_eq!(ProtocolError::LengthTopBitSet.close_code(), 1002);
        assert_eq!(ProtocolError::InvalidCloseCode(999).close_code(), 1002);
        assert_eq!(ProtocolError::InvalidUtf8.close_code(), 1007);
        assert_eq!(ProtocolError::InvalidCloseReason.close_code(), 1007);
        assert_eq!(ProtocolError::InvalidCompressedData.close_code(), 1007);
        assert_eq!(ProtocolError::FrameTooBig.close_code(), 1009);
        assert_eq!(ProtocolError::MessageTooBig.close_code(), 1009);
        assert_eq!(ProtocolError::RateLimited.close_code(), 1008);
        assert_eq!(ProtocolError::RateLimited.reason(), "rate limit");
        assert_eq!(ProtocolError::SlowConsumer.close_code(), 1008);
        assert_eq!(ProtocolError::SlowConsumer.reason(), "slow consumer");
        assert_eq!(ProtocolError::IdleTimeout.close_code(), 1001);
        assert_eq!(ProtocolError::IdleTimeout.reason(), "idle timeout");
    }

    #[test]
    fn every_code_is_sendable_and_every_reason_fits() {
        for e in ALL {
            let code = e.close_code();
            // RFC 6455 §7.4.1: codes we may send; §5.5: 2 + reason <= 125.
            assert!(
                matches!(code, 1001 | 1002 | 1007 | 1008 | 1009 | 4401 | 4403),
                "{e:?}"
            );
            assert!(e.reason().len() <= 123 && e.reason().is_ascii(), "{e:?}");
        }
    }
}
