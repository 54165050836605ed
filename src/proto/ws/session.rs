//! The server side of one WebSocket connection (RFC 6455 §5-§7) as a sans-IO state machine:
//! client bytes and the current time go in, server frames and a deadline come out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::close::{is_valid_received_code, parse_close_payload, write_close, write_empty_close};
use super::deflate::{deliver, PerMessageDeflate, RSV1_FIELD};
use super::frame::{parse_header, write_frame, FrameHeader, OpCode};
use super::mask::apply_mask;
pub use super::message::MessageKind;
use super::message::Reassembly;
use crate::clock::Tick;
use crate::proto::error::ProtocolError;
use crate::rate::Meter;
use cold::Cold;

mod cold;

/// RFC 6455 §5.5: "All control frames MUST have a payload length of 125 bytes or less".
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// RFC 6455 §7.4.1 code 1005 ("no status code was actually present"): what
/// [`Session::close_sent`] and [`Session::close_received`] report for a close frame without a
/// code. It is never written on the wire.
pub const NO_STATUS_CODE: u16 = 1005;

/// Per-connection limits, from the `[limits]` section of the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Largest frame payload accepted (inclusive); larger closes 1009.
    pub max_frame: u64,
    /// Largest reassembled message accepted (inclusive); larger closes 1009.
    pub max_message: u64,
    /// Ping after half of it without a received frame, close 1001 after all of it; zero disables.
    pub idle_timeout: Duration,
    /// Frames received per second (token bucket, burst = rate); 0 = unlimited.
    pub messages_per_sec: u64,
    /// Payload bytes received per second (token bucket, burst = rate); 0 = unlimited.
    pub bytes_per_sec: u64,
    /// Input is not consumed while the pending output holds this many bytes; 0 = no limit.
    pub write_buffer: usize,
    /// How long to wait for the peer's close frame after sending ours.
    pub close_linger: Duration,
}

/// Where the closing handshake stands (RFC 6455 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Messages flow both ways.
    Open,
    /// We sent a close frame; input is parsed and discarded until the peer's close arrives,
    /// the framing breaks, or `close_linger` passes.
    CloseSent,
    /// Both close frames exchanged (or given up on): flush the output, then close TCP.
    Closed,
}

/// A data frame whose header has been consumed and whose payload is still arriving.
#[derive(Debug, Clone, Copy)]
struct PartialFrame {
    /// This frame ends the message.
    fin: bool,
    /// The client's masking key.
    mask: [u8; 4],
    /// Payload bytes of this frame already consumed (mask phase).
    offset: usize,
    /// Payload bytes of this frame still to come.
    remaining: u64,
}

/// What one step of the input loop did.
enum Step {
    /// Progress was made (bytes consumed or state changed); `input[..at]` is consumed.
    Continue(usize),
    /// Nothing more can be done with this input now.
    Stop,
}

/// The server side of one WebSocket connection.
///
/// Call order (the I/O shell drives it, in the style of quinn-proto's `Connection`):
///
/// 1. [`Session::new`] once the 101 response has been queued.
/// 2. When client bytes arrive, append them to the read buffer and call
///    [`Session::handle_input`] with the whole unconsumed buffer and the connection's pending
///    output; then drop the consumed prefix from the read buffer and keep the rest.
///    Call it right away too with bytes that followed the upgrade request in the same read.
/// 3. If the pending output holds `write_buffer` bytes or more, `handle_input` stops early:
///    stop reading the socket, flush, and once the output is below the limit call
///    `handle_input` again with the leftover bytes before reading more.
/// 4. After every call, (re)arm the connection's timer at [`Session::poll_timeout`]; when it
///    passes, call [`Session::handle_timeout`]. A deadline already in the past means "call
///    `handle_timeout` now".
/// 5. For gateway decisions (shutdown 1001, slow consumer 1008, token expiry 4401, ...) call
///    [`Session::close`].
/// 6. Flush the pending output after each call. When [`Session::state`] is
///    [`SessionState::Closed`], flush what is left and close the TCP connection: the server
///    closes first (RFC 6455 §7.1.1). Input given in `Closed` is discarded.
///
/// Output is appended to `out` as whole frames, server frames are never masked, and nothing is
/// ever written after a close frame.
///
/// Memory (issue #15): an idle session is 64 bytes, held inline by its connection. The
/// limits are shared by every session of a configuration; times are [`Tick`]s; the rate
/// buckets keep no rate of their own; and everything an idle connection does not need (a
/// frame or message in progress, permessage-deflate, the closing handshake) lives in one
/// box that exists only while it is needed.
#[derive(Debug)]
pub struct Session {
    /// The limits this connection runs under (shared, as configured).
    limits: Arc<SessionLimits>,
    /// `messages`: one token per received frame.
    messages: Meter,
    /// `bytes`: one token per received payload byte.
    bytes: Meter,
    /// When a frame (or payload bytes) last arrived: the idle clock.
    last_received: Tick,
    /// The code of the close frame we sent.
    close_sent: Option<u16>,
    /// The code of the close frame the peer sent.
    close_received: Option<u16>,
    /// Where the closing handshake stands.
    state: SessionState,
    /// An idle ping has been sent since the last received frame.
    ping_sent: bool,
    /// What only a busy, compressing or closing session needs.
    cold: Option<Box<Cold>>,
}

impl Session {
    /// A session in `Open` state; `now` starts the idle clock and fills the rate buckets.
    /// `limits` may be shared (`Arc<SessionLimits>`) by every session of a configuration.
    pub fn new(limits: impl Into<Arc<SessionLimits>>, now: Instant) -> Session {
        let now = Tick::from(now);
        Session {
            limits: limits.into(),
            messages: Meter::new(now.instant()),
            bytes: Meter::new(now.instant()),
            last_received: now,
            close_sent: None,
            close_received: None,
            state: SessionState::Open,
            ping_sent: false,
            cold: None,
        }
    }

    /// permessage-deflate was negotiated in the 101 (RFC 7692): RSV1 marks compressed
    /// messages, which are inflated within `max_message`; what `on_message` writes is
    /// compressed on its way out. Call before the first [`Session::handle_input`].
    pub fn set_deflate(&mut self, deflate: PerMessageDeflate) {
        self.cold().deflate = Some(Box::new(deflate));
    }

    /// Whether permessage-deflate is on.
    pub fn deflating(&self) -> bool {
        self.cold.as_ref().is_some_and(|c| c.deflate.is_some())
    }

    /// Consume client bytes from `input` (the caller's read buffer; you may unmask it in place).
    /// For each complete data message call `on_message(kind, payload, out)`; `out` is the connection's
    /// pending output to which server frames are appended (the echo backend does
    /// `write_message(out, kind, payload)`). Returns how many bytes of `input` were consumed; the
    /// caller keeps the rest and calls again with more bytes appended.
    ///
    /// Only consumed bytes are ever modified (unmasked), so the unconsumed rest can be handed
    /// back unchanged. `on_message` is never called once a close frame was sent or received.
    pub fn handle_input<F>(
        &mut self,
        input: &mut [u8],
        now: Instant,
        out: &mut Vec<u8>,
        mut on_message: F,
    ) -> usize
    where
        F: FnMut(MessageKind, &[u8], &mut Vec<u8>),
    {
        self.observe(now);
        let mut pos = 0;
        loop {
            let step = match self.state {
                SessionState::Open => self.step_open(input, pos, now, out, &mut on_message),
                SessionState::CloseSent => self.step_closing(input, pos),
                SessionState::Closed => return input.len(),
            };
            match step {
                Step::Continue(at) => pos = at,
                Step::Stop => {
                    self.shed();
                    return pos;
                }
            }
        }
    }

    /// Timers: ping after idle_timeout/2 without any received frame (pongs count), close 1001 "idle timeout" after idle_timeout; in CloseSent, Closed after close_linger.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<u8>) {
        self.observe(now);
        match self.state {
            SessionState::Open => {
                let idle = self.limits.idle_timeout;
                if idle.is_zero() {
                    return;
                }
                if deadline_passed(self.last_received.checked_add(idle), now) {
                    let e = ProtocolError::IdleTimeout;
                    self.send_close(e.close_code(), e.reason(), Some(now), out);
                } else if !self.ping_sent
                    && deadline_passed(self.last_received.checked_add(idle / 2), now)
                {
                    // RFC 6455 §5.5.2: a ping may serve as a keepalive; the pong (or any
                    // frame) resets the idle clock.
                    write_frame(out, true, OpCode::Ping, &[]);
                    self.ping_sent = true;
                    // Idle: give the reassembly buffer back.
                    if let Some(cold) = self.cold.as_deref_mut() {
                        cold.message.release();
                    }
                    self.shed();
                }
            }
            SessionState::CloseSent => {
                let linger_end = self
                    .cold
                    .as_ref()
                    .and_then(|c| c.close_sent_at)
                    .and_then(|at| at.checked_add(self.limits.close_linger));
                if deadline_passed(linger_end, now) {
                    self.state = SessionState::Closed;
                }
            }
            SessionState::Closed => {}
        }
    }

    /// The next instant at which [`Session::handle_timeout`] has work to do, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            SessionState::Open => {
                let idle = self.limits.idle_timeout;
                if idle.is_zero() {
                    None
                } else if self.ping_sent {
                    self.last_received.checked_add(idle).map(Tick::instant)
                } else {
                    self.last_received.checked_add(idle / 2).map(Tick::instant)
                }
            }
            SessionState::CloseSent => match self.cold.as_ref().and_then(|c| c.close_sent_at) {
                Some(at) => at.checked_add(self.limits.close_linger).map(Tick::instant),
                // Closed by `close()`, which has no clock: due now (any instant already
                // seen will do), so that the next `handle_timeout` starts the linger at
                // its `now`.
                None => Some(self.last_received.instant()),
            },
            SessionState::Closed => None,
        }
    }

    /// Gateway-initiated close (shutdown 1001 "going away", 1008 "slow consumer", later 4401/4403). No-op unless Open.
    ///
    /// The linger starts at the next call that carries a `now` ([`Session::poll_timeout`]
    /// returns a deadline already due to prompt it).
    pub fn close(&mut self, code: u16, reason: &str, out: &mut Vec<u8>) {
        debug_assert!(
            is_valid_received_code(code),
            "close code {code} may not be sent"
        );
        self.send_close(code, reason, None, out);
    }

    /// Where the closing handshake stands.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// The close code we sent, if any (1005 for a close frame without a code).
    pub fn close_sent(&self) -> Option<u16> {
        self.close_sent
    }

    /// The reason of the close frame we sent ("" when none or not closing).
    pub fn close_sent_reason(&self) -> &str {
        self.cold
            .as_ref()
            .map_or("", |c| c.close_reasons.0.as_str())
    }

    /// The reason of the peer's close frame ("" when none or not received).
    pub fn close_received_reason(&self) -> &str {
        self.cold
            .as_ref()
            .map_or("", |c| c.close_reasons.1.as_str())
    }

    /// The close code the peer sent, if its close frame was received (1005 when it had no code).
    pub fn close_received(&self) -> Option<u16> {
        self.close_received
    }

    /// Bytes held for the message being reassembled (never more than `max_message`).
    pub fn buffered(&self) -> usize {
        self.message().map_or(0, Reassembly::len)
    }

    /// The limits this session runs under.
    pub fn limits(&self) -> &SessionLimits {
        &self.limits
    }

    /// Starts a linger begun by [`Session::close`] at the first `now` after it.
    fn observe(&mut self, now: Instant) {
        // The conversion to a tick is only paid while closing (not per read).
        if self.state == SessionState::CloseSent {
            let cold = self.cold();
            if cold.close_sent_at.is_none() {
                cold.close_sent_at = Some(Tick::from(now));
            }
        }
    }

    /// A frame (or part of one) arrived: the connection is not idle.
    fn touch(&mut self, now: impl Into<Tick>) {
        self.last_received = self.last_received.max(now.into());
        self.ping_sent = false;
    }

    /// Writes our close frame and enters `CloseSent`, unless a close was already sent or received.
    fn send_close(&mut self, code: u16, reason: &str, at: Option<Instant>, out: &mut Vec<u8>) {
        if self.state != SessionState::Open {
            return;
        }
        write_close(out, code, reason);
        self.close_sent = Some(code);
        self.state = SessionState::CloseSent;
        let cold = self.cold();
        if !reason.is_empty() {
            cold.close_reasons.0 = reason.to_owned();
        }
        cold.close_sent_at = at.map(Tick::from);
        // The rest of a half-received frame is discarded before the next header is parsed.
        cold.skip = cold.frame.take().map_or(0, |frame| frame.remaining);
        cold.message.reset();
        if let Some(deflate) = cold.deflate.as_deref_mut() {
            deflate.abandon();
        }
    }

    /// RFC 6455 §7.1.7 "Fail the WebSocket Connection": send the error's close frame and stop
    /// delivering messages.
    fn fail(&mut self, error: ProtocolError, now: Instant, out: &mut Vec<u8>) {
        self.send_close(error.close_code(), error.reason(), Some(now), out);
    }

    /// One step in `Open`: a piece of the current data frame, or one whole header.
    fn step_open<F>(
        &mut self,
        input: &mut [u8],
        pos: usize,
        now: Instant,
        out: &mut Vec<u8>,
        on_message: &mut F,
    ) -> Step
    where
        F: FnMut(MessageKind, &[u8], &mut Vec<u8>),
    {
        // Backpressure: nothing is read while the peer is not reading our output.
        if self.limits.write_buffer > 0 && out.len() >= self.limits.write_buffer {
            return Step::Stop;
        }
        let Some(rest) = input.get_mut(pos..) else {
            return Step::Stop;
        };
        if let Some(frame) = self.frame() {
            return self.continue_frame(frame, rest, pos, now, out, on_message);
        }
        let (header, header_len) = match parse_header(rest) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Step::Stop,
            Err(e) => {
                // The framing is lost; `CloseSent` will see the same error and give up.
                self.fail(e, now, out);
                return Step::Continue(pos);
            }
        };
        let (opcode, mask) = match self.check_header(&header) {
            Ok(checked) => checked,
            Err(e) => {
                // Not consumed: `CloseSent` parses this header again and skips its payload.
                self.fail(e, now, out);
                return Step::Continue(pos);
            }
        };
        if opcode.is_control() {
            self.control_frame(opcode, &header, mask, header_len, rest, pos, now, out)
        } else {
            self.data_frame(
                opcode, &header, mask, header_len, rest, pos, now, out, on_message,
            )
        }
    }

    /// The RFC 6455 rules a client frame header must follow, and our size limits.
    fn check_header(&self, header: &FrameHeader) -> Result<(OpCode, [u8; 4]), ProtocolError> {
        // RFC 6455 §5.2: opcodes 0x3-0x7 and 0xB-0xF are reserved; §10.7: an unknown opcode
        // fails the connection.
        let opcode =
            OpCode::from_u8(header.opcode).ok_or(ProtocolError::ReservedOpcode(header.opcode))?;
        // RFC 6455 §5.2: "RSV1, RSV2, RSV3: MUST be 0 unless an extension is negotiated";
        // RFC 7692 §6: with permessage-deflate RSV1 marks the first frame of a compressed
        // message, never a control frame (§6.1) or a continuation.
        let rsv1_allowed = self.deflating() && matches!(opcode, OpCode::Text | OpCode::Binary);
        if header.rsv & !RSV1_FIELD != 0 || (header.rsv & RSV1_FIELD != 0 && !rsv1_allowed) {
            return Err(ProtocolError::ReservedBitsSet);
        }
        // RFC 6455 §5.1: "The server MUST close the connection upon receiving a frame that is
        // not masked."
        let mask = header.mask.ok_or(ProtocolError::UnmaskedFrame)?;
        let len = header.payload_len;
        if opcode.is_control() {
            // RFC 6455 §5.5: "Control frames themselves MUST NOT be fragmented."
            if !header.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            // RFC 6455 §5.5: control payloads are 125 bytes or less.
            if len > MAX_CONTROL_PAYLOAD {
                return Err(ProtocolError::ControlFrameTooLong);
            }
            return Ok((opcode, mask));
        }
        // RFC 6455 §5.4: fragments of one message are not interleaved with another message;
        // a continuation needs a message in progress, a new message needs none.
        let in_progress = self.message().is_some_and(|m| m.kind().is_some());
        match opcode {
            OpCode::Continuation if !in_progress => {
                return Err(ProtocolError::UnexpectedContinuation)
            }
            OpCode::Text | OpCode::Binary if in_progress => {
                return Err(ProtocolError::ExpectedContinuation)
            }
            _ => {}
        }
        // RFC 6455 §10.4: an endpoint may bound frame and message sizes (1009, §7.4.1). The
        // raw length is judged before anything is reserved for it.
        if len > self.limits.max_frame {
            return Err(ProtocolError::FrameTooBig);
        }
        let declared = if opcode == OpCode::Continuation {
            self.message().map_or(0, Reassembly::declared)
        } else {
            0
        };
        if declared.saturating_add(len) > self.limits.max_message {
            return Err(ProtocolError::MessageTooBig);
        }
        Ok((opcode, mask))
    }

    /// A ping, pong or close frame whose header passed the checks: handled once wholly present.
    #[allow(clippy::too_many_arguments)]
    fn control_frame(
        &mut self,
        opcode: OpCode,
        header: &FrameHeader,
        mask: [u8; 4],
        header_len: usize,
        rest: &mut [u8],
        pos: usize,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Step {
        // check_header bounded the payload to 125 bytes.
        let total = usize::try_from(header.payload_len)
            .ok()
            .and_then(|len| header_len.checked_add(len));
        let Some(frame) = total.and_then(|total| rest.get_mut(..total)) else {
            // RFC 6455 §5.4: control frames may be interleaved; wait for the whole frame.
            return Step::Stop;
        };
        let total = frame.len();
        let Some(payload) = frame.get_mut(header_len..) else {
            return Step::Stop;
        };
        // SPEC §5: `messages` counts every frame received, `bytes` every payload byte.
        // One clock conversion for the two meters and the idle clock.
        let tick = Tick::from(now);
        let (messages, bytes) = (self.limits.messages_per_sec, self.limits.bytes_per_sec);
        if !self.messages.try_take(messages, 1, tick)
            || !self.bytes.try_take(bytes, header.payload_len, tick)
        {
            self.fail(ProtocolError::RateLimited, now, out);
            return Step::Continue(pos);
        }
        self.touch(tick);
        apply_mask(payload, mask, 0);
        match opcode {
            // RFC 6455 §5.5.2/§5.5.3: answer a ping with a pong carrying the same data.
            OpCode::Ping => write_frame(out, true, OpCode::Pong, payload),
            // RFC 6455 §5.5.3: an unsolicited pong needs no response.
            OpCode::Pong => {}
            OpCode::Close => self.receive_close(payload, out),
            // Data opcodes never reach here (is_control()).
            OpCode::Continuation | OpCode::Text | OpCode::Binary => {}
        }
        Step::Continue(pos + total)
    }

    /// RFC 6455 §5.5.1: the peer's close frame while `Open`. We answer and the handshake is done.
    fn receive_close(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        // RFC 6455 §5.5.1: "the endpoint typically echos the status code it received".
        let (sent, received) = match parse_close_payload(payload) {
            Ok(None) => {
                write_empty_close(out);
                (NO_STATUS_CODE, NO_STATUS_CODE)
            }
            Ok(Some((code, reason))) => {
                write_close(out, code, "");
                if !reason.is_empty() {
                    self.cold().close_reasons.1 = reason.to_owned();
                }
                (code, code)
            }
            Err(e) => {
                write_close(out, e.close_code(), e.reason());
                let raw = payload
                    .first_chunk::<2>()
                    .map_or(NO_STATUS_CODE, |c| u16::from_be_bytes(*c));
                (e.close_code(), raw)
            }
        };
        self.close_sent = Some(sent);
        self.close_received = Some(received);
        // RFC 6455 §7.1.1: both closes exchanged; the server closes TCP first.
        self.state = SessionState::Closed;
        if let Some(cold) = self.cold.as_deref_mut() {
            cold.frame = None;
            cold.message.reset();
            if let Some(deflate) = cold.deflate.as_deref_mut() {
                deflate.abandon();
            }
        }
    }

    /// A text, binary or continuation frame whose header passed the checks.
    #[allow(clippy::too_many_arguments)]
    fn data_frame<F>(
        &mut self,
        opcode: OpCode,
        header: &FrameHeader,
        mask: [u8; 4],
        header_len: usize,
        rest: &mut [u8],
        pos: usize,
        now: Instant,
        out: &mut Vec<u8>,
        on_message: &mut F,
    ) -> Step
    where
        F: FnMut(MessageKind, &[u8], &mut Vec<u8>),
    {
        // SPEC §5: `messages` counts every frame received. One clock conversion for the
        // meters and the idle clock.
        let tick = Tick::from(now);
        if !self
            .messages
            .try_take(self.limits.messages_per_sec, 1, tick)
        {
            self.fail(ProtocolError::RateLimited, now, out);
            return Step::Continue(pos);
        }
        let len = header.payload_len;
        let starts = match opcode {
            OpCode::Text => Some(MessageKind::Text),
            OpCode::Binary => Some(MessageKind::Binary),
            _ => None,
        };
        // Fast path: a whole unfragmented message in the input is unmasked in place and
        // handed over as a slice of it, never copied.
        let whole = usize::try_from(len)
            .ok()
            .and_then(|n| header_len.checked_add(n))
            .filter(|&total| total <= rest.len());
        let compressed = header.rsv & RSV1_FIELD != 0;
        if let (Some(kind), true, Some(total)) = (starts, header.fin, whole) {
            let Some(payload) = rest.get_mut(header_len..total) else {
                return Step::Stop;
            };
            if compressed {
                self.touch(tick);
                apply_mask(payload, mask, 0);
                if let Err(e) = self.inflate_and_deliver(kind, Some(payload), now, out, on_message)
                {
                    self.fail(e, now, out);
                }
                return Step::Continue(pos + total);
            }
            if !self.bytes.try_take(self.limits.bytes_per_sec, len, tick) {
                self.fail(ProtocolError::RateLimited, now, out);
                return Step::Continue(pos);
            }
            self.touch(tick);
            apply_mask(payload, mask, 0);
            // RFC 6455 §8.1: a text message must be UTF-8 (1007, §7.4.1).
            if kind == MessageKind::Text && std::str::from_utf8(payload).is_err() {
                self.fail(ProtocolError::InvalidUtf8, now, out);
                return Step::Continue(pos + total);
            }
            deliver(self.deflate_mut(), kind, payload, out, on_message);
            return Step::Continue(pos + total);
        }
        // Streaming path: consume the header now and the payload as it arrives.
        let max_message = self.limits.max_message;
        let cold = self.cold();
        if let Some(kind) = starts {
            match cold.deflate.as_deref_mut() {
                // Reassembled as received (not text yet), inflated at the last frame.
                Some(deflate) if compressed => {
                    deflate.start(kind);
                    cold.message.start(MessageKind::Binary);
                }
                _ => cold.message.start(kind),
            }
        }
        if let Err(e) = cold.message.admit_frame(len, max_message) {
            // Already checked by check_header; kept so the buffer bound never rests on it.
            self.fail(e, now, out);
            return Step::Continue(pos);
        }
        // The idle clock moves when the frame is complete, not per header or chunk: SPEC
        // §5 "no frame received", and a frame dribbled a byte at a time stays idle.
        self.set_frame(Some(PartialFrame {
            fin: header.fin,
            mask,
            offset: 0,
            remaining: len,
        }));
        Step::Continue(pos + header_len)
    }

    /// Consumes whatever payload of the current data frame is in `rest`.
    #[allow(clippy::too_many_arguments)]
    fn continue_frame<F>(
        &mut self,
        frame: PartialFrame,
        rest: &mut [u8],
        pos: usize,
        now: Instant,
        out: &mut Vec<u8>,
        on_message: &mut F,
    ) -> Step
    where
        F: FnMut(MessageKind, &[u8], &mut Vec<u8>),
    {
        let available = u64::try_from(rest.len()).unwrap_or(u64::MAX);
        let Ok(n) = usize::try_from(frame.remaining.min(available)) else {
            return Step::Stop;
        };
        if n == 0 && frame.remaining > 0 {
            return Step::Stop;
        }
        let Some(chunk) = rest.get_mut(..n) else {
            return Step::Stop;
        };
        // SPEC §10: `bytes` counts a compressed message's inflated bytes, at its end.
        let compressed = self.receiving_kind().is_some();
        if n > 0 {
            if !compressed
                && !self
                    .bytes
                    .try_take(self.limits.bytes_per_sec, n as u64, now)
            {
                let remaining = frame.remaining;
                self.fail(ProtocolError::RateLimited, now, out);
                self.cold().skip = remaining;
                return Step::Continue(pos);
            }
            apply_mask(chunk, frame.mask, frame.offset);
            // RFC 6455 §8.1 with fail-fast: the text is validated as it arrives, so invalid
            // UTF-8 in the middle of a huge frame fails before the rest is sent.
            if let Err(e) = self.cold().message.push(chunk) {
                let remaining = frame.remaining - n as u64;
                self.fail(e, now, out);
                self.cold().skip = remaining;
                return Step::Continue(pos + n);
            }
        }
        let remaining = frame.remaining - n as u64;
        if remaining > 0 {
            self.set_frame(Some(PartialFrame {
                remaining,
                offset: frame.offset.wrapping_add(n),
                ..frame
            }));
            return Step::Continue(pos + n);
        }
        self.set_frame(None);
        self.touch(now);
        if frame.fin {
            let delivered = if compressed {
                self.receiving_kind().map_or(Ok(()), |kind| {
                    self.inflate_and_deliver(kind, None, now, out, on_message)
                })
            } else {
                let cold = self.cold();
                cold.message.finish().map(|(kind, payload)| {
                    deliver(cold.deflate.as_deref_mut(), kind, payload, out, on_message)
                })
            };
            if let Err(e) = delivered {
                self.fail(e, now, out);
                return Step::Continue(pos + n);
            }
            self.cold().message.reset();
        }
        Step::Continue(pos + n)
    }

    /// The kind of the compressed message being received.
    fn receiving_kind(&self) -> Option<MessageKind> {
        self.cold
            .as_deref()
            .and_then(|c| c.deflate.as_deref())
            .and_then(PerMessageDeflate::receiving)
    }

    /// A compressed message (`payload`, or the reassembled frames when `None`) is complete.
    fn inflate_and_deliver<F>(
        &mut self,
        kind: MessageKind,
        payload: Option<&[u8]>,
        now: Instant,
        out: &mut Vec<u8>,
        on_message: &mut F,
    ) -> Result<(), ProtocolError>
    where
        F: FnMut(MessageKind, &[u8], &mut Vec<u8>),
    {
        let Some(cold) = self.cold.as_deref_mut() else {
            return Ok(());
        };
        let Some(deflate) = cold.deflate.as_deref_mut() else {
            return Ok(());
        };
        let compressed = match payload {
            Some(p) => p,
            None => cold.message.finish()?.1,
        };
        let bytes = (&mut self.bytes, self.limits.bytes_per_sec);
        let limits = (self.limits.max_message, bytes, now);
        deflate.deliver_compressed(kind, compressed, limits, out, on_message)
    }
}

/// Whether `deadline` (None: never) has been reached at `now`.
fn deadline_passed(deadline: Option<Tick>, now: Instant) -> bool {
    deadline.is_some_and(|d| Tick::from(now) >= d)
}

/// Writes a whole data message as one unmasked frame (the echo backend's answer).
pub fn write_message(out: &mut Vec<u8>, kind: MessageKind, payload: &[u8]) {
    let opcode = match kind {
        MessageKind::Text => OpCode::Text,
        MessageKind::Binary => OpCode::Binary,
    };
    write_frame(out, true, opcode, payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::virtual_epoch;
    use crate::proto::ws::close::parse_close_payload;
    use crate::proto::ws::frame::tests::{
        MASKED_HELLO, MASKED_PONG_HELLO, RFC_KEY, UNMASKED_HELLO,
    };
    use crate::proto::ws::frame::write_masked_frame;

    const KEY: [u8; 4] = [0xA1, 0x5E, 0x07, 0xC3];

    fn limits() -> SessionLimits {
        SessionLimits {
            max_frame: 1024,
            max_message: 4096,
            idle_timeout: Duration::from_secs(60),
            messages_per_sec: 0,
            bytes_per_sec: 0,
            write_buffer: 1 << 20,
            close_linger: Duration::from_secs(2),
        }
    }

    /// A frame the server wrote: (opcode, fin, payload).
    type OutFrame = (u8, bool, Vec<u8>);

    /// The test's I/O shell: a read buffer that keeps unconsumed bytes, the output, and the
    /// messages delivered (echoed back like the echo backend).
    struct Peer {
        session: Session,
        pending: Vec<u8>,
        out: Vec<u8>,
        received: Vec<(MessageKind, Vec<u8>)>,
        t0: Instant,
    }

    impl Peer {
        fn new(limits: SessionLimits) -> Peer {
            let t0 = virtual_epoch();
            Peer {
                session: Session::new(limits, t0),
                pending: Vec::new(),
                out: Vec::new(),
                received: Vec::new(),
                t0,
            }
        }

        fn at(&self, secs: u64) -> Instant {
            self.t0 + Duration::from_secs(secs)
        }

        /// Appends `bytes` and runs handle_input once at `now`; returns bytes consumed.
        fn feed_at(&mut self, bytes: &[u8], now: Instant) -> usize {
            self.pending.extend_from_slice(bytes);
            let before = self.pending.clone();
            let received = &mut self.received;
            let n = self.session.handle_input(
                &mut self.pending,
                now,
                &mut self.out,
                |kind, payload, out| {
                    received.push((kind, payload.to_vec()));
                    write_message(out, kind, payload);
                },
            );
            assert!(n <= self.pending.len());
            // Bytes not consumed are handed back untouched.
            assert_eq!(self.pending[n..], before[n..]);
            assert!(self.session.buffered() as u64 <= self.session.limits.max_message);
            self.pending.drain(..n);
            n
        }

        fn feed(&mut self, bytes: &[u8]) -> usize {
            let now = self.t0;
            self.feed_at(bytes, now)
        }

        fn frames(&self) -> Vec<OutFrame> {
            parse_out(&self.out)
        }

        /// The close code of the last frame written, which must be a close.
        fn closed_with(&self) -> Option<u16> {
            let frames = self.frames();
            let (op, _, payload) = frames.last()?;
            if *op != 8 {
                return None;
            }
            match parse_close_payload(payload) {
                Ok(Some((code, _))) => Some(code),
                Ok(None) => Some(NO_STATUS_CODE),
                Err(e) => panic!("server wrote a bad close payload: {e:?}"),
            }
        }

        fn close_reason(&self) -> String {
            let frames = self.frames();
            let payload = &frames.last().expect("a frame").2;
            match parse_close_payload(payload) {
                Ok(Some((_, reason))) => reason.to_owned(),
                other => panic!("{other:?}"),
            }
        }
    }

    /// Parses the server's output; asserts every frame is unmasked and nothing follows a close.
    fn parse_out(mut out: &[u8]) -> Vec<OutFrame> {
        let mut frames = Vec::new();
        while !out.is_empty() {
            let (h, n) = match parse_header(out) {
                Ok(Some(x)) => x,
                other => panic!("server output does not parse: {other:?}"),
            };
            assert_eq!(h.mask, None, "server frames are never masked");
            assert_eq!(h.rsv, 0);
            let end = n + h.payload_len as usize;
            assert!(
                frames.last().is_none_or(|(op, _, _): &OutFrame| *op != 8),
                "frame after close"
            );
            frames.push((h.opcode, h.fin, out[n..end].to_vec()));
            out = &out[end..];
        }
        frames
    }

    fn masked(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        write_masked_frame(&mut v, fin, opcode, payload, KEY);
        v
    }

    /// A masked frame with a raw first byte (for reserved bits and opcodes).
    fn raw(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = masked(true, OpCode::Binary, payload);
        v[0] = b0;
        v
    }

    fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason);
        p
    }

    fn expect_close(input: &[u8], code: u16) -> Peer {
        let mut peer = Peer::new(limits());
        peer.feed(input);
        assert_eq!(peer.closed_with(), Some(code), "input {input:02x?}");
        assert_eq!(peer.session.close_sent(), Some(code));
        assert_ne!(peer.session.state(), SessionState::Open);
        peer
    }

    #[test]
    fn echoes_text_and_binary() {
        let mut peer = Peer::new(limits());
        let mut input = masked(true, OpCode::Text, b"hello");
        input.extend(masked(true, OpCode::Binary, &[0, 1, 2, 255]));
        input.extend(masked(true, OpCode::Text, b""));
        assert_eq!(peer.feed(&input), input.len());
        assert_eq!(
            peer.received,
            vec![
                (MessageKind::Text, b"hello".to_vec()),
                (MessageKind::Binary, vec![0, 1, 2, 255]),
                (MessageKind::Text, vec![])
            ]
        );
        assert_eq!(
            peer.frames(),
            vec![
                (1, true, b"hello".to_vec()),
                (2, true, vec![0, 1, 2, 255]),
                (1, true, vec![])
            ]
        );
        assert_eq!(peer.session.state(), SessionState::Open);
    }

    #[test]
    fn rfc_5_7_masked_hello_is_echoed_as_the_unmasked_example() {
        let mut peer = Peer::new(limits());
        assert_eq!(peer.feed(&MASKED_HELLO), MASKED_HELLO.len());
        assert_eq!(peer.out, UNMASKED_HELLO);
    }

    #[test]
    fn rfc_5_7_fragments_and_ping() {
        let mut peer = Peer::new(limits());
        let mut input = Vec::new();
        write_masked_frame(&mut input, false, OpCode::Text, b"Hel", RFC_KEY);
        write_masked_frame(&mut input, true, OpCode::Ping, b"Hello", RFC_KEY);
        write_masked_frame(&mut input, true, OpCode::Continuation, b"lo", RFC_KEY);
        peer.feed(&input);
        // The pong is the §5.7 unmasked-ping bytes with the pong opcode.
        let mut expected = vec![0x8a, 0x05];
        expected.extend_from_slice(b"Hello");
        expected.extend_from_slice(&UNMASKED_HELLO);
        assert_eq!(peer.out, expected);
        // An unsolicited masked pong (§5.7) is ignored.
        peer.out.clear();
        assert_eq!(peer.feed(&MASKED_PONG_HELLO), MASKED_PONG_HELLO.len());
        assert!(peer.out.is_empty());
    }

    #[test]
    fn fast_path_hands_over_a_slice_of_the_input() {
        let mut session = Session::new(limits(), virtual_epoch());
        let mut input = masked(true, OpCode::Binary, &[7; 300]);
        let range = input.as_ptr_range();
        let mut out = Vec::new();
        let mut seen = false;
        let n = session.handle_input(&mut input, virtual_epoch(), &mut out, |_, payload, _| {
            assert!(range.contains(&payload.as_ptr()), "zero copy");
            assert_eq!(payload, &[7; 300][..]);
            seen = true;
        });
        assert!(seen);
        assert_eq!(n, input.len());
        assert_eq!(
            session.message().map_or(0, Reassembly::capacity),
            0,
            "the message buffer was never touched"
        );
    }

    #[test]
    fn rule_unmasked_frame_is_1002() {
        let peer = expect_close(&UNMASKED_HELLO, 1002);
        assert_eq!(peer.close_reason(), "unmasked frame");
    }

    #[test]
    fn rule_reserved_bits_are_1002() {
        for b0 in [0xC1, 0xA1, 0x91, 0xF2, 0xC9] {
            expect_close(&raw(b0, b"x"), 1002);
        }
    }

    #[test]
    fn rule_reserved_opcodes_are_1002() {
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            let peer = expect_close(&raw(0x80 | op, b""), 1002);
            assert!(peer.received.is_empty());
        }
    }

    #[test]
    fn rule_control_frames_are_short_and_unfragmented() {
        expect_close(&masked(false, OpCode::Ping, b"x"), 1002);
        expect_close(&masked(false, OpCode::Pong, b""), 1002);
        expect_close(
            &masked(false, OpCode::Close, &close_payload(1000, b"")),
            1002,
        );
        expect_close(&masked(true, OpCode::Ping, &[b'p'; 126]), 1002);
        // 125 is fine.
        let mut peer = Peer::new(limits());
        peer.feed(&masked(true, OpCode::Ping, &[b'p'; 125]));
        assert_eq!(peer.frames(), vec![(0xA, true, vec![b'p'; 125])]);
        // A too-long control frame fails on its header, before its payload arrives.
        let frame = masked(true, OpCode::Ping, &[b'p'; 126]);
        let mut peer = Peer::new(limits());
        peer.feed(&frame[..8]);
        assert_eq!(peer.closed_with(), Some(1002));
    }

    #[test]
    fn rule_continuation_needs_a_message_and_messages_do_not_interleave() {
        let p = expect_close(&masked(true, OpCode::Continuation, b"x"), 1002);
        assert_eq!(p.close_reason(), "unexpected continuation");
        expect_close(&masked(false, OpCode::Continuation, b"x"), 1002);
        let mut input = masked(false, OpCode::Text, b"a");
        input.extend(masked(true, OpCode::Text, b"b"));
        let p = expect_close(&input, 1002);
        assert_eq!(p.close_reason(), "expected continuation");
        assert!(p.received.is_empty());
        let mut input = masked(false, OpCode::Binary, b"a");
        input.extend(masked(false, OpCode::Binary, b"b"));
        expect_close(&input, 1002);
    }

    #[test]
    fn rule_length_top_bit_is_1002() {
        let input = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4];
        let peer = expect_close(&input, 1002);
        // The framing is lost: nothing left to wait for.
        assert_eq!(peer.session.state(), SessionState::Closed);
    }

    #[test]
    fn rule_max_frame_is_1009_on_the_header_alone() {
        let mut header = vec![0x82, 0xFF];
        header.extend_from_slice(&(1u64 << 62).to_be_bytes());
        header.extend_from_slice(&KEY);
        let peer = expect_close(&header, 1009);
        assert_eq!(peer.close_reason(), "frame too big");
        assert_eq!(peer.session.buffered(), 0);
        assert_eq!(peer.session.message().map_or(0, Reassembly::capacity), 0);
        // max_frame is inclusive.
        let mut peer = Peer::new(limits());
        peer.feed(&masked(true, OpCode::Binary, &[1; 1024]));
        assert_eq!(peer.received.len(), 1);
        expect_close(&masked(true, OpCode::Binary, &[1; 1025]), 1009);
    }

    #[test]
    fn rule_max_message_is_inclusive_across_fragments() {
        // 4 fragments of 1024 = exactly max_message: accepted.
        let mut input = masked(false, OpCode::Binary, &[1; 1024]);
        input.extend(masked(false, OpCode::Continuation, &[2; 1024]));
        input.extend(masked(false, OpCode::Continuation, &[3; 1024]));
        input.extend(masked(true, OpCode::Continuation, &[4; 1024]));
        let mut peer = Peer::new(limits());
        peer.feed(&input);
        assert_eq!(peer.received.len(), 1);
        assert_eq!(peer.received[0].1.len(), 4096);
        assert_eq!(peer.frames()[0].2.len(), 4096);
        // One more byte: 1009 at the header of the frame that would cross it.
        let mut input = masked(false, OpCode::Binary, &[1; 1024]);
        input.extend(masked(false, OpCode::Continuation, &[2; 1024]));
        input.extend(masked(false, OpCode::Continuation, &[3; 1024]));
        input.extend(masked(false, OpCode::Continuation, &[4; 1024]));
        let crossing = masked(true, OpCode::Continuation, &[5; 1]);
        input.extend_from_slice(&crossing[..6]); // header only
        let peer = expect_close(&input, 1009);
        assert_eq!(peer.close_reason(), "message too big");
        assert!(peer.received.is_empty());
        // A single frame bigger than max_message but within max_frame.
        let mut l = limits();
        l.max_frame = 10_000;
        let mut peer = Peer::new(l);
        peer.feed(&masked(true, OpCode::Text, &[b'a'; 4096]));
        assert_eq!(peer.received.len(), 1);
        peer.feed(&masked(true, OpCode::Text, &[b'a'; 4097]));
        assert_eq!(peer.closed_with(), Some(1009));
    }

    #[test]
    fn rule_invalid_utf8_is_1007() {
        let p = expect_close(&masked(true, OpCode::Text, &[b'a', 0xFF]), 1007);
        assert_eq!(p.close_reason(), "invalid utf-8");
        // Split across fragments: valid pieces, invalid whole.
        let mut input = masked(false, OpCode::Text, &[0xCE]);
        input.extend(masked(true, OpCode::Continuation, &[0x41]));
        expect_close(&input, 1007);
        // Incomplete at the end of the message.
        let mut input = masked(false, OpCode::Text, b"ok");
        input.extend(masked(true, OpCode::Continuation, &[0xE2, 0x82]));
        expect_close(&input, 1007);
        // Valid text split inside a character across fragments is fine.
        let text = "κόσμε".as_bytes();
        let mut input = masked(false, OpCode::Text, &text[..3]);
        input.extend(masked(true, OpCode::Continuation, &text[3..]));
        let mut peer = Peer::new(limits());
        peer.feed(&input);
        assert_eq!(peer.received, vec![(MessageKind::Text, text.to_vec())]);
        // Binary is never validated.
        let mut peer = Peer::new(limits());
        peer.feed(&masked(true, OpCode::Binary, &[0xFF, 0xFE]));
        assert_eq!(peer.received.len(), 1);
    }

    #[test]
    fn fail_fast_utf8_in_the_middle_of_a_frame() {
        // Autobahn 6.4.3: one frame announced whole, sent in chops.
        let mut payload = "κόσμε".as_bytes().to_vec();
        let first = payload.len();
        payload.extend_from_slice(&[0xF4, 0x90, 0x80, 0x80]);
        payload.extend_from_slice(&[b'e'; 900]);
        let frame = masked(true, OpCode::Text, &payload);
        let header_len = 2 + 2 + 4;
        let mut peer = Peer::new(limits());
        // Header and the valid prefix: consumed, nothing written.
        assert_eq!(peer.feed(&frame[..header_len + first]), header_len + first);
        assert!(peer.out.is_empty());
        assert_eq!(peer.session.buffered(), first);
        // Autobahn 6.4.4: the lone F4 is a valid prefix; no verdict yet.
        assert_eq!(
            peer.feed(&frame[header_len + first..header_len + first + 1]),
            1
        );
        assert!(peer.out.is_empty());
        // 0x90 after F4 can never be valid: 1007 now, with 900+ bytes still unsent.
        peer.feed(&frame[header_len + first + 1..header_len + first + 2]);
        assert_eq!(peer.closed_with(), Some(1007));
        assert_eq!(peer.session.state(), SessionState::CloseSent);
        // The rest of the frame is discarded, then the peer's close ends the handshake.
        let written = peer.out.len();
        peer.feed(&frame[header_len + first + 2..]);
        peer.feed(&masked(true, OpCode::Ping, b"late"));
        assert_eq!(peer.out.len(), written, "nothing after our close");
        peer.feed(&masked(true, OpCode::Close, &close_payload(1007, b"")));
        assert_eq!(peer.session.state(), SessionState::Closed);
        assert_eq!(peer.session.close_received(), Some(1007));
        assert!(peer.received.is_empty());
    }

    #[test]
    fn close_payload_rules() {
        expect_close(&masked(true, OpCode::Close, &[0x03]), 1002);
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            let peer = expect_close(
                &masked(true, OpCode::Close, &close_payload(code, b"")),
                1002,
            );
            // The peer's close was received: no need to wait for another one.
            assert_eq!(peer.session.state(), SessionState::Closed);
            assert_eq!(peer.session.close_received(), Some(code));
        }
        let bad_reason = close_payload(1000, &[0xCE, 0xBA, 0xED, 0xA0, 0x80]);
        expect_close(&masked(true, OpCode::Close, &bad_reason), 1007);
    }

    #[test]
    fn close_is_echoed_and_ends_everything() {
        for code in [1000u16, 1001, 1003, 1007, 1011, 3000, 4999] {
            let mut input = masked(true, OpCode::Close, &close_payload(code, b"bye now"));
            input.extend(masked(true, OpCode::Text, b"after close"));
            input.extend(masked(true, OpCode::Ping, b"after close"));
            let mut peer = Peer::new(limits());
            assert_eq!(peer.feed(&input), input.len());
            assert_eq!(peer.frames(), vec![(8, true, code.to_be_bytes().to_vec())]);
            assert_eq!(peer.session.state(), SessionState::Closed);
            assert_eq!(
                (peer.session.close_sent(), peer.session.close_received()),
                (Some(code), Some(code))
            );
            assert!(peer.received.is_empty());
            assert_eq!(peer.session.poll_timeout(), None);
            // Closed: input is discarded, nothing is written.
            assert_eq!(peer.feed(&masked(true, OpCode::Ping, b"x")), 6 + 1);
            peer.session.close(1001, "going away", &mut peer.out);
            assert_eq!(peer.frames().len(), 1);
        }
        // An empty close is answered with an empty close.
        let mut peer = Peer::new(limits());
        peer.feed(&masked(true, OpCode::Close, b""));
        assert_eq!(peer.out, [0x88, 0x00]);
        assert_eq!(peer.session.close_received(), Some(NO_STATUS_CODE));
    }

    #[test]
    fn close_in_the_middle_of_a_fragmented_message_discards_it() {
        // Autobahn 7.1.5.
        let mut input = masked(false, OpCode::Text, b"frag1");
        input.extend(masked(true, OpCode::Close, &close_payload(1000, b"")));
        input.extend(masked(true, OpCode::Continuation, b"frag2"));
        let mut peer = Peer::new(limits());
        peer.feed(&input);
        assert!(peer.received.is_empty());
        assert_eq!(peer.frames(), vec![(8, true, vec![0x03, 0xE8])]);
        assert_eq!(peer.session.buffered(), 0);
    }

    #[test]
    fn messages_before_an_error_are_delivered_in_order() {
        // Autobahn 3.2: a good message, then RSV set, then a ping.
        let mut input = masked(true, OpCode::Text, b"Hello, world!");
        input.extend(raw(0xA1, b"Hello, world!"));
        input.extend(masked(true, OpCode::Ping, b""));
        let mut peer = Peer::new(limits());
        peer.feed(&input);
        let frames = peer.frames();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], (1, true, b"Hello, world!".to_vec()));
        assert_eq!(peer.closed_with(), Some(1002));
        assert_eq!(peer.session.state(), SessionState::CloseSent);
    }

    #[test]
    fn fragmentation_with_interleaved_pings() {
        let mut input = masked(false, OpCode::Text, b"fragment1");
        input.extend(masked(true, OpCode::Ping, b"ping1"));
        input.extend(masked(false, OpCode::Continuation, b"fragment2"));
        input.extend(masked(true, OpCode::Pong, b"unsolicited"));
        input.extend(masked(true, OpCode::Ping, b"ping2"));
        input.extend(masked(true, OpCode::Continuation, b"fragment3"));
        let mut peer = Peer::new(limits());
        assert_eq!(peer.feed(&input), input.len());
        assert_eq!(
            peer.frames(),
            vec![
                (0xA, true, b"ping1".to_vec()),
                (0xA, true, b"ping2".to_vec()),
                (1, true, b"fragment1fragment2fragment3".to_vec())
            ]
        );
    }

    #[test]
    fn control_frames_wait_until_whole() {
        let ping = masked(true, OpCode::Ping, b"12345");
        let mut peer = Peer::new(limits());
        assert_eq!(peer.feed(&ping[..8]), 0);
        assert!(peer.out.is_empty());
        assert_eq!(peer.pending.len(), 8);
        assert_eq!(peer.feed(&ping[8..]), ping.len());
        assert_eq!(peer.frames(), vec![(0xA, true, b"12345".to_vec())]);
    }

    #[test]
    fn data_payload_is_consumed_as_it_arrives() {
        let frame = masked(true, OpCode::Binary, &[9; 500]);
        let mut peer = Peer::new(limits());
        assert_eq!(
            peer.feed(&frame[..1]),
            0,
            "an incomplete header consumes nothing"
        );
        assert_eq!(peer.feed(&frame[1..100]), 100);
        assert_eq!(peer.session.buffered(), 100 - 8);
        assert!(peer.pending.is_empty());
        assert_eq!(peer.feed(&frame[100..]), frame.len() - 100);
        assert_eq!(peer.received, vec![(MessageKind::Binary, vec![9; 500])]);
        assert_eq!(peer.session.buffered(), 0);
    }

    #[test]
    fn byte_by_byte_equals_one_chunk() {
        let mut input = masked(true, OpCode::Text, "héllo wörld".as_bytes());
        input.extend(masked(false, OpCode::Text, "κό".as_bytes()));
        input.extend(masked(true, OpCode::Ping, b"p"));
        input.extend(masked(false, OpCode::Continuation, "σ".as_bytes()));
        input.extend(masked(true, OpCode::Continuation, "με".as_bytes()));
        input.extend(masked(true, OpCode::Binary, &[0xAB; 300]));
        input.extend(masked(true, OpCode::Binary, &[0xCD; 70_000][..1000]));
        input.extend(masked(true, OpCode::Close, &close_payload(1000, b"done")));
        let mut whole = Peer::new(limits());
        assert_eq!(whole.feed(&input), input.len());
        let mut bytewise = Peer::new(limits());
        for b in &input {
            bytewise.feed(std::slice::from_ref(b));
        }
        assert!(bytewise.pending.is_empty());
        assert_eq!(whole.received, bytewise.received);
        assert_eq!(whole.out, bytewise.out);
        assert_eq!(whole.received.len(), 4);
        assert_eq!(whole.session.state(), SessionState::Closed);
        assert_eq!(bytewise.session.state(), SessionState::Closed);
        // The same holds for an error case.
        let mut bad = masked(true, OpCode::Text, b"fine");
        bad.extend(masked(true, OpCode::Text, &[b'x', 0xC0, b'y']));
        let mut whole = Peer::new(limits());
        whole.feed(&bad);
        let mut bytewise = Peer::new(limits());
        for b in &bad {
            bytewise.feed(std::slice::from_ref(b));
        }
        assert_eq!(whole.out, bytewise.out);
        assert_eq!(whole.closed_with(), Some(1007));
    }

    #[test]
    fn rate_limit_on_messages_counts_every_frame() {
        let mut l = limits();
        l.messages_per_sec = 3;
        let mut peer = Peer::new(l);
        let mut input = masked(true, OpCode::Text, b"1");
        input.extend(masked(true, OpCode::Ping, b""));
        input.extend(masked(true, OpCode::Pong, b""));
        input.extend(masked(true, OpCode::Text, b"4"));
        peer.feed(&input);
        assert_eq!(peer.received.len(), 1);
        assert_eq!(peer.closed_with(), Some(1008));
        assert_eq!(peer.close_reason(), "rate limit");
        // The budget refills with time.
        let mut peer = Peer::new(l);
        let three: Vec<u8> = (0..3)
            .flat_map(|_| masked(true, OpCode::Binary, b"x"))
            .collect();
        peer.feed_at(&three, peer.at(0));
        peer.feed_at(&three, peer.at(1));
        assert_eq!(peer.received.len(), 6);
        assert_eq!(peer.session.state(), SessionState::Open);
    }

    #[test]
    fn rate_limit_on_bytes_counts_payload_bytes() {
        let mut l = limits();
        l.bytes_per_sec = 100;
        let mut peer = Peer::new(l);
        peer.feed(&masked(true, OpCode::Binary, &[0; 60]));
        peer.feed(&masked(true, OpCode::Ping, &[0; 40]));
        assert_eq!(peer.session.state(), SessionState::Open);
        peer.feed(&masked(true, OpCode::Binary, &[0; 1]));
        assert_eq!(peer.closed_with(), Some(1008));
        // Streaming frames are charged as their bytes arrive.
        let frame = masked(true, OpCode::Binary, &[0; 150]);
        let mut peer = Peer::new(l);
        peer.feed(&frame[..8 + 90]);
        assert_eq!(peer.session.state(), SessionState::Open);
        peer.feed(&frame[8 + 90..]);
        assert_eq!(peer.closed_with(), Some(1008));
    }

    #[test]
    fn idle_ping_then_close_1001_then_linger() {
        let mut peer = Peer::new(limits());
        let t0 = peer.t0;
        assert_eq!(
            peer.session.poll_timeout(),
            Some(t0 + Duration::from_secs(30))
        );
        peer.session
            .handle_timeout(t0 + Duration::from_secs(29), &mut peer.out);
        assert!(peer.out.is_empty());
        peer.session
            .handle_timeout(t0 + Duration::from_secs(30), &mut peer.out);
        assert_eq!(peer.frames(), vec![(9, true, vec![])]);
        assert_eq!(
            peer.session.poll_timeout(),
            Some(t0 + Duration::from_secs(60))
        );
        // Only one ping per idle period.
        peer.session
            .handle_timeout(t0 + Duration::from_secs(45), &mut peer.out);
        assert_eq!(peer.frames().len(), 1);
        peer.session
            .handle_timeout(t0 + Duration::from_secs(60), &mut peer.out);
        assert_eq!(peer.closed_with(), Some(1001));
        assert_eq!(peer.close_reason(), "idle timeout");
        assert_eq!(peer.session.state(), SessionState::CloseSent);
        assert_eq!(
            peer.session.poll_timeout(),
            Some(t0 + Duration::from_secs(62))
        );
        peer.session
            .handle_timeout(t0 + Duration::from_secs(61), &mut peer.out);
        assert_eq!(peer.session.state(), SessionState::CloseSent);
        peer.session
            .handle_timeout(t0 + Duration::from_secs(62), &mut peer.out);
        assert_eq!(peer.session.state(), SessionState::Closed);
        assert_eq!(peer.session.poll_timeout(), None);
        assert_eq!(peer.frames().len(), 2);
    }

    #[test]
    fn any_frame_resets_the_idle_clock_pongs_included() {
        let mut peer = Peer::new(limits());
        let t0 = peer.t0;
        peer.session
            .handle_timeout(t0 + Duration::from_secs(30), &mut peer.out);
        let pong = masked(true, OpCode::Pong, b"");
        peer.feed_at(&pong, t0 + Duration::from_secs(40));
        assert_eq!(
            peer.session.poll_timeout(),
            Some(t0 + Duration::from_secs(70))
        );
        peer.session
            .handle_timeout(t0 + Duration::from_secs(60), &mut peer.out);
        assert_eq!(peer.frames(), vec![(9, true, vec![])]);
        peer.session
            .handle_timeout(t0 + Duration::from_secs(70), &mut peer.out);
        assert_eq!(peer.frames().len(), 2, "second idle ping");
        assert_eq!(peer.session.state(), SessionState::Open);
        // A zero idle_timeout disables the timers.
        let mut l = limits();
        l.idle_timeout = Duration::ZERO;
        let session = Session::new(l, t0);
        assert_eq!(session.poll_timeout(), None);
    }

    #[test]
    fn linger_after_a_protocol_error() {
        let mut peer = Peer::new(limits());
        let t0 = peer.t0;
        peer.feed_at(&raw(0x83, b""), t0 + Duration::from_secs(5));
        assert_eq!(peer.session.state(), SessionState::CloseSent);
        assert_eq!(
            peer.session.poll_timeout(),
            Some(t0 + Duration::from_secs(7))
        );
        // Data keeps being discarded (no echo, no pong) during the linger.
        let mut more = masked(true, OpCode::Text, b"ignored");
        more.extend(masked(true, OpCode::Ping, b"ignored"));
        assert_eq!(peer.feed_at(&more, t0 + Duration::from_secs(6)), more.len());
        assert_eq!(peer.frames().len(), 1);
        peer.session
            .handle_timeout(t0 + Duration::from_secs(7), &mut peer.out);
        assert_eq!(peer.session.state(), SessionState::Closed);
    }

    #[test]
    fn gateway_close_starts_the_linger_at_the_next_call() {
        let mut peer = Peer::new(limits());
        let t0 = peer.t0;
        peer.feed_at(
            &masked(true, OpCode::Text, b"x"),
            t0 + Duration::from_secs(10),
        );
        peer.session.close(1001, "going away", &mut peer.out);
        assert_eq!(peer.closed_with(), Some(1001));
        assert_eq!(peer.session.close_sent(), Some(1001));
        // Due at once (the session has no clock) ...
        assert_eq!(
            peer.session.poll_timeout(),
            Some(t0 + Duration::from_secs(10))
        );
        peer.session
            .handle_timeout(t0 + Duration::from_secs(50), &mut peer.out);
        // ... and the linger counts from that call.
        assert_eq!(peer.session.state(), SessionState::CloseSent);
        assert_eq!(
            peer.session.poll_timeout(),
            Some(t0 + Duration::from_secs(52))
        );
        // A second close is a no-op.
        peer.session.close(1008, "slow consumer", &mut peer.out);
        assert_eq!(peer.frames().len(), 2);
        assert_eq!(peer.session.close_sent(), Some(1001));
        // The peer's answer completes the handshake.
        peer.feed_at(
            &masked(true, OpCode::Close, &close_payload(1001, b"")),
            t0 + Duration::from_secs(51),
        );
        assert_eq!(peer.session.state(), SessionState::Closed);
        assert_eq!(peer.session.close_received(), Some(1001));
    }

    #[test]
    fn gateway_close_in_the_middle_of_a_frame_skips_its_rest() {
        let frame = masked(true, OpCode::Binary, &[0x88; 300]);
        let mut peer = Peer::new(limits());
        peer.feed(&frame[..50]);
        peer.session.close(1001, "going away", &mut peer.out);
        // The rest of the payload is skipped, never parsed as frame headers.
        let mut rest = frame[50..].to_vec();
        rest.extend(masked(true, OpCode::Close, &close_payload(1001, b"")));
        assert_eq!(peer.feed(&rest), rest.len());
        assert_eq!(peer.session.state(), SessionState::Closed);
        assert_eq!(peer.session.close_received(), Some(1001));
        assert!(peer.received.is_empty());
        assert_eq!(peer.frames().len(), 1);
    }

    #[test]
    fn backpressure_stops_and_resumes() {
        let mut l = limits();
        l.write_buffer = 64;
        let mut peer = Peer::new(l);
        let one = masked(true, OpCode::Binary, &[5; 50]);
        let input: Vec<u8> = (0..10).flat_map(|_| one.clone()).collect();
        // 52 bytes out < 64: a second message is read; 104 >= 64: stop.
        assert_eq!(peer.feed(&input), 2 * one.len());
        assert_eq!(peer.received.len(), 2);
        // Nothing is consumed until the output drains.
        assert_eq!(peer.feed(&[]), 0);
        let mut total = 2;
        while !peer.pending.is_empty() {
            peer.out.clear();
            peer.feed(&[]);
            total = peer.received.len();
        }
        assert_eq!(total, 10);
        // A close waiting behind a full buffer is still answered after the drain.
        peer.out.clear();
        let mut input: Vec<u8> = (0..3).flat_map(|_| one.clone()).collect();
        input.extend(masked(true, OpCode::Close, &close_payload(1000, b"")));
        peer.feed(&input);
        assert_eq!(peer.session.state(), SessionState::Open);
        while peer.session.state() == SessionState::Open {
            peer.out.clear();
            peer.feed(&[]);
        }
        assert_eq!(peer.received.len(), 13);
        assert_eq!(peer.closed_with(), Some(1000));
    }

    #[test]
    fn the_message_buffer_is_reused_and_big_ones_are_released() {
        let mut peer = Peer::new(limits());
        let mut fragmented = masked(false, OpCode::Binary, &[1; 1000]);
        fragmented.extend(masked(true, OpCode::Continuation, &[2; 1000]));
        peer.feed(&fragmented);
        let capacity = peer.session.message().map_or(0, Reassembly::capacity);
        assert!(capacity >= 2000);
        for _ in 0..100 {
            peer.out.clear();
            peer.feed(&fragmented);
            assert_eq!(
                peer.session.message().map_or(0, Reassembly::capacity),
                capacity,
                "no allocation per message"
            );
        }
        let mut l = limits();
        l.max_frame = 1 << 20;
        l.max_message = 1 << 20;
        let mut peer = Peer::new(l);
        let mut big = masked(false, OpCode::Binary, &[1; 200_000]);
        big.extend(masked(true, OpCode::Continuation, &[2; 200_000]));
        peer.feed(&big);
        assert_eq!(peer.received[0].1.len(), 400_000);
        assert_eq!(
            peer.session.message().map_or(0, Reassembly::capacity),
            0,
            "released after a message over RETAINED_CAPACITY"
        );
        // Smaller ones are kept, sized by what the frames declared (no doubling past it).
        let mut peer = Peer::new(l);
        let mut mid = masked(false, OpCode::Binary, &[1; 32_768]);
        mid.extend(masked(true, OpCode::Continuation, &[2; 32_768]));
        peer.feed(&mid);
        assert_eq!(
            peer.session.message().map_or(0, Reassembly::capacity),
            65_536
        );
    }

    #[test]
    fn big_messages_stream_through() {
        // Autobahn 9.1.x / 9.3.x in small: a 4 MiB text frame arriving in 64 KiB reads, and a
        // 1 MiB message in 64-byte fragments.
        let mut l = limits();
        l.max_frame = 16 << 20;
        l.max_message = 16 << 20;
        let text = vec![b'*'; 4 << 20];
        let frame = masked(true, OpCode::Text, &text);
        let mut session = Session::new(l, virtual_epoch());
        let mut out = Vec::new();
        let mut delivered = 0;
        for read in frame.chunks(64 * 1024) {
            let mut read = read.to_vec();
            let n = session.handle_input(
                &mut read,
                virtual_epoch(),
                &mut out,
                |kind, payload, out| {
                    assert_eq!((kind, payload.len()), (MessageKind::Text, 4 << 20));
                    delivered += 1;
                    write_message(out, kind, payload);
                },
            );
            assert_eq!(n, read.len(), "payload is consumed as it arrives");
        }
        assert_eq!(delivered, 1);
        assert_eq!(parse_out(&out)[0].2, text);
        assert_eq!(session.message().map_or(0, Reassembly::capacity), 0);

        let mut input = Vec::new();
        let pieces: Vec<&[u8]> = text[..1 << 20].chunks(64).collect();
        for (i, piece) in pieces.iter().enumerate() {
            let op = if i == 0 {
                OpCode::Text
            } else {
                OpCode::Continuation
            };
            input.extend(masked(i + 1 == pieces.len(), op, piece));
        }
        let mut peer = Peer::new(l);
        assert_eq!(peer.feed(&input), input.len());
        assert_eq!(peer.received.len(), 1);
        assert_eq!(peer.received[0].1.len(), 1 << 20);
    }

    #[test]
    fn write_message_frames_both_kinds() {
        let mut out = Vec::new();
        write_message(&mut out, MessageKind::Text, b"Hello");
        assert_eq!(out, UNMASKED_HELLO);
        out.clear();
        write_message(&mut out, MessageKind::Binary, &[0; 256]);
        assert_eq!(&out[..4], &[0x82, 0x7E, 0x01, 0x00]);
    }
}
