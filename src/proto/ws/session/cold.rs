//! The parts of a [`Session`] an idle connection does without (issue #15): one box made
//! when a frame or message is in progress, permessage-deflate is on or the closing
//! handshake has begun, and dropped again once an open session is back between messages;
//! and the `CloseSent` input step, which lives on it.

use super::{PartialFrame, Session, SessionState, Step, MAX_CONTROL_PAYLOAD, NO_STATUS_CODE};
use crate::clock::Tick;
use crate::proto::ws::deflate::PerMessageDeflate;
use crate::proto::ws::frame::{parse_header, OpCode};
use crate::proto::ws::message::Reassembly;

/// The parts of a session that an idle one does without.
#[derive(Debug, Default)]
pub(super) struct Cold {
    /// When our close frame was sent (`None` in `CloseSent` until the next call with a `now`).
    pub(super) close_sent_at: Option<Tick>,
    /// The reasons of both close frames, kept (only once closing) so a proxy can relay
    /// them as sent: (ours, the peer's).
    pub(super) close_reasons: (String, String),
    /// The data frame whose payload is arriving, in `Open`.
    pub(super) frame: Option<PartialFrame>,
    /// Payload bytes of the current frame still to discard, in `CloseSent`.
    pub(super) skip: u64,
    /// The message being reassembled (a compressed one as received, inflated at its end).
    pub(super) message: Reassembly,
    /// permessage-deflate, when negotiated (RFC 7692).
    pub(super) deflate: Option<Box<PerMessageDeflate>>,
}

impl Cold {
    /// Nothing here is needed any more (an open session between messages).
    pub(super) fn is_idle(&self) -> bool {
        self.frame.is_none()
            && self.skip == 0
            && self.deflate.is_none()
            && self.close_reasons.0.is_empty()
            && self.close_reasons.1.is_empty()
            && self.message.kind().is_none()
            && self.message.capacity() == 0
    }
}

impl Session {
    /// The cold part, made when first needed.
    pub(super) fn cold(&mut self) -> &mut Cold {
        self.cold.get_or_insert_with(Default::default)
    }

    /// permessage-deflate's state, when negotiated (also for a proxy that writes frames to
    /// this connection itself).
    pub fn deflate_mut(&mut self) -> Option<&mut PerMessageDeflate> {
        self.cold
            .as_deref_mut()
            .and_then(|c| c.deflate.as_deref_mut())
    }

    /// The data frame whose payload is arriving.
    pub(super) fn frame(&self) -> Option<PartialFrame> {
        self.cold.as_ref().and_then(|c| c.frame)
    }

    /// Sets (or clears) the data frame whose payload is arriving.
    pub(super) fn set_frame(&mut self, frame: Option<PartialFrame>) {
        if frame.is_some() || self.cold.is_some() {
            self.cold().frame = frame;
        }
    }

    /// The message being reassembled, if any is in progress.
    pub(super) fn message(&self) -> Option<&Reassembly> {
        self.cold.as_deref().map(|c| &c.message)
    }

    /// Drops the cold part once an open session needs none of it.
    pub(super) fn shed(&mut self) {
        if self.state == SessionState::Open && self.cold.as_deref().is_some_and(Cold::is_idle) {
            self.cold = None;
        }
    }

    /// One step in `CloseSent`: discard frames until the peer's close (RFC 6455 §7.1.2: after
    /// sending a close, an endpoint discards further data until the close handshake ends).
    pub(super) fn step_closing(&mut self, input: &mut [u8], pos: usize) -> Step {
        let Some(rest) = input.get(pos..) else {
            return Step::Stop;
        };
        let skip = self.cold.as_ref().map_or(0, |c| c.skip);
        if skip > 0 {
            let available = u64::try_from(rest.len()).unwrap_or(u64::MAX);
            let n = skip.min(available);
            if n == 0 {
                return Step::Stop;
            }
            self.cold().skip -= n;
            // n <= rest.len(), so it fits in usize.
            return Step::Continue(pos + usize::try_from(n).unwrap_or(0));
        }
        match parse_header(rest) {
            Ok(None) => Step::Stop,
            Err(_) => {
                // The framing is lost: the peer's close can no longer be recognized.
                self.state = SessionState::Closed;
                Step::Continue(pos)
            }
            Ok(Some((header, header_len))) => {
                if header.opcode != OpCode::Close as u8 {
                    self.cold().skip = header.payload_len;
                    return Step::Continue(pos + header_len);
                }
                if header.payload_len > MAX_CONTROL_PAYLOAD {
                    self.close_received = Some(NO_STATUS_CODE);
                    self.state = SessionState::Closed;
                    return Step::Continue(pos);
                }
                let total = header_len + header.payload_len as usize;
                let Some(payload) = rest.get(header_len..total) else {
                    return Step::Stop;
                };
                let code = payload.first_chunk::<2>().map_or(NO_STATUS_CODE, |c| {
                    let key = header.mask.unwrap_or([0; 4]);
                    u16::from_be_bytes([c[0] ^ key[0], c[1] ^ key[1]])
                });
                self.close_received = Some(code);
                self.state = SessionState::Closed;
                Step::Continue(pos + total)
            }
        }
    }
}
