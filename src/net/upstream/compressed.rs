//! The relay from the upstream to the client when either leg negotiated permessage-deflate
//! (SPEC §10 "Proxied routes: each leg negotiates on its own; the relay inflates and
//! deflates as needed"). Frames are read one piece (at most `max_frame` bytes) at a time:
//!
//! - a message the upstream compressed (RSV1 on its first frame, only when this leg agreed
//!   to the extension) is reassembled as received, at most `max_message` bytes, and inflated
//!   at its last frame into the worker's buffer, stopping the moment it passes
//!   `max_message` (1009 to both legs); it goes to the client as one frame, compressed when
//!   the client leg agreed and it is `min_size` or more;
//! - an uncompressed message is relayed piece by piece: each piece is one frame to the
//!   client, compressed (RFC 7692 §7.2.1 across fragments: RSV1 on the first, the tail
//!   removed from the last) when the client leg agreed and the message's first frame is
//!   `min_size` or more, so an upstream message of any length costs at most one piece.
//!
//! Invalid DEFLATE data, RSV1 where RFC 7692 §6 forbids it, or text that is not UTF-8 are
//! the upstream's fault: the client gets 1014 (`Relayed::Broken`).

use super::{LegState, Relayed, UpstreamLeg};
use crate::proto::error::ProtocolError;
use crate::proto::ws::close::parse_close_payload;
use crate::proto::ws::deflate::RSV1_FIELD;
use crate::proto::ws::deflate::{Agreement, ClientOffer, PerMessageDeflate, Role, Ticket};
use crate::proto::ws::frame::{parse_header, write_frame, write_masked_frame, OpCode};
use crate::proto::ws::message::{MessageKind, Utf8Validator};

/// RFC 6455 §5.5: control frame payloads are at most 125 bytes.
const MAX_CONTROL_PAYLOAD: usize = 125;

/// permessage-deflate on the upstream leg, and the relay's state.
#[derive(Debug, Default)]
pub(super) struct Deflating {
    /// Sent in the upgrade request, with what was reserved for it; gone once answered.
    offer: Option<(ClientOffer, Option<Ticket>)>,
    /// The extension as the upstream accepted it.
    ext: Option<PerMessageDeflate>,
    /// The upstream data frame whose payload is being read.
    frame: Option<Frame>,
    /// The upstream message in progress.
    message: Option<Message>,
    /// A compressed upstream message in several pieces, as received (at most `max_message`
    /// bytes; freed at its end).
    compressed: Vec<u8>,
}

/// An upstream data frame whose header was consumed.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// It ends its message.
    fin: bool,
    /// Payload bytes not yet read.
    remaining: u64,
}

/// An upstream message in progress.
#[derive(Debug, Clone, Copy)]
struct Message {
    kind: MessageKind,
    /// The upstream compressed it (RSV1 on its first frame).
    compressed: bool,
    /// It goes to the client compressed, piece by piece (decided at its first frame).
    deflated: bool,
    /// A frame of it went to the client.
    sent: bool,
}

impl Deflating {
    /// `offer` was made with `ticket` reserved for it.
    pub(super) fn offered(offer: ClientOffer, ticket: Option<Ticket>) -> Deflating {
        Deflating {
            offer: Some((offer, ticket)),
            ..Deflating::default()
        }
    }

    /// The offer awaiting the upstream's answer.
    pub(super) fn offer(&self) -> Option<ClientOffer> {
        self.offer.as_ref().map(|(offer, _)| *offer)
    }

    /// The upstream answered: the extension is on when it accepted (`agreement`); the
    /// reservation shrinks to what the agreement keeps between messages.
    pub(super) fn answered(&mut self, agreement: Option<Agreement>) {
        let ticket = self.offer.take().and_then(|(_, ticket)| ticket);
        self.ext = agreement.map(|agreement| {
            let cost = agreement.state_cost_as(Role::Client);
            let ticket = ticket.and_then(|ticket| ticket.shrink(cost));
            PerMessageDeflate::client(agreement, ticket)
        });
    }

    /// Whether the upstream accepted the extension.
    pub(super) fn agreed(&self) -> bool {
        self.ext.is_some()
    }

    /// A relayed message is in progress toward the client: a frame of it went out and
    /// its last did not (RFC 6455 §5.4; the client leg's compressor is mid-message too).
    pub(super) fn mid_message(&self) -> bool {
        self.message.is_some_and(|m| m.sent)
    }

    /// The extension, when agreed.
    pub(super) fn extension(&mut self) -> Option<&mut PerMessageDeflate> {
        self.ext.as_mut()
    }

    /// One piece of the current message's payload; `end`: the message ends with it.
    fn piece(
        &mut self,
        piece: &[u8],
        end: bool,
        (utf8, client, out): (
            &mut Utf8Validator,
            Option<&mut PerMessageDeflate>,
            &mut Vec<u8>,
        ),
        max_message: u64,
    ) -> Result<(), Relayed> {
        let Some(mut message) = self.message else {
            return Ok(());
        };
        if message.compressed {
            return self.compressed_piece(message.kind, piece, end, (client, out), max_message);
        }
        // RFC 6455 §8.1: the client never receives invalid UTF-8 (checked as it goes).
        if message.kind == MessageKind::Text
            && (utf8.feed(piece).is_err() || (end && utf8.finish().is_err()))
        {
            return Err(Relayed::Broken);
        }
        let opcode = if message.sent {
            OpCode::Continuation
        } else {
            opcode_of(message.kind)
        };
        match client.filter(|_| message.deflated) {
            Some(client) => client.deflate_frame(opcode, piece, end, None, out),
            None => write_frame(out, end, opcode, piece),
        }
        message.sent = true;
        self.message = (!end).then_some(message);
        Ok(())
    }

    /// A piece of a message the upstream compressed: kept; at the end, inflated within
    /// `max_message` and sent on whole.
    fn compressed_piece(
        &mut self,
        kind: MessageKind,
        piece: &[u8],
        end: bool,
        (client, out): (Option<&mut PerMessageDeflate>, &mut Vec<u8>),
        max_message: u64,
    ) -> Result<(), Relayed> {
        // SPEC §10: the compressed form is bounded like any message (incompressible data
        // grows a little, so this never refuses what would inflate within the limit by
        // more than a few bytes per 64 KiB).
        let held = self.compressed.len().saturating_add(piece.len());
        if u64::try_from(held).unwrap_or(u64::MAX) > max_message {
            self.compressed = Vec::new();
            return Err(Relayed::Limit(ProtocolError::MessageTooBig));
        }
        // A message in one piece (the usual case) is inflated where it lies, uncopied.
        let whole = end && self.compressed.is_empty();
        if !whole {
            self.compressed.extend_from_slice(piece);
        }
        if !end {
            return Ok(());
        }
        self.message = None;
        let Some(ext) = self.ext.as_mut() else {
            return Err(Relayed::Broken);
        };
        let data = if whole { piece } else { &self.compressed };
        let result = ext.inflate_with(data, max_message, |inflated| {
            send_whole(kind, inflated, client, out)
        });
        // An idle connection holds no reassembly buffer.
        self.compressed = Vec::new();
        match result {
            Ok(sent) => sent,
            // SPEC §10: 1009 the moment the inflated size passes max_message.
            Err(ProtocolError::MessageTooBig) => Err(Relayed::Limit(ProtocolError::MessageTooBig)),
            // Invalid DEFLATE from the upstream: it broke the protocol (1014 to the client).
            Err(_) => Err(Relayed::Broken),
        }
    }
}

fn opcode_of(kind: MessageKind) -> OpCode {
    match kind {
        MessageKind::Text => OpCode::Text,
        MessageKind::Binary => OpCode::Binary,
    }
}

/// An inflated upstream message to the client: one frame, compressed when the client leg
/// agreed and it is `min_size` or more.
fn send_whole(
    kind: MessageKind,
    payload: &[u8],
    client: Option<&mut PerMessageDeflate>,
    out: &mut Vec<u8>,
) -> Result<(), Relayed> {
    // RFC 6455 §8.1, on the inflated data (what the application sees).
    if kind == MessageKind::Text && std::str::from_utf8(payload).is_err() {
        return Err(Relayed::Broken);
    }
    let opcode = opcode_of(kind);
    match client.filter(|c| c.compresses(payload.len())) {
        Some(client) => client.deflate_frame(opcode, payload, true, None, out),
        None => write_frame(out, true, opcode, payload),
    }
    Ok(())
}

impl UpstreamLeg {
    /// Relays the upstream's complete frames in `rbuf` to `client_out` when either leg
    /// compresses (see the module's text), with `client` the client leg's extension. Stops
    /// when `client_out` reaches `limit` (backpressure) or a close arrives; pings are
    /// answered as in [`UpstreamLeg::relay`].
    pub fn relay_deflate(
        &mut self,
        client_out: &mut Vec<u8>,
        client: Option<&mut PerMessageDeflate>,
        limit: usize,
        (max_frame, max_message): (u64, u64),
    ) -> Relayed {
        let Some(mut state) = self.deflate.take() else {
            return self.relay(client_out, limit, max_frame);
        };
        let result = self.pump(
            &mut state,
            client_out,
            client,
            limit,
            (max_frame, max_message),
        );
        self.deflate = Some(state);
        result
    }

    fn pump(
        &mut self,
        state: &mut Deflating,
        out: &mut Vec<u8>,
        mut client: Option<&mut PerMessageDeflate>,
        limit: usize,
        (max_frame, max_message): (u64, u64),
    ) -> Relayed {
        let piece_max = max_frame.max(1);
        let mut pos: usize = 0;
        let result = loop {
            if out.len() >= limit {
                break Relayed::Continue;
            }
            if let Some(frame) = state.frame {
                // At most max_frame bytes at a time, so memory stays bounded whatever the
                // upstream's frame length (SPEC §5).
                let want = usize::try_from(frame.remaining.min(piece_max)).unwrap_or(usize::MAX);
                let Some(piece) = pos
                    .checked_add(want)
                    .and_then(|end| self.rbuf.get(pos..end))
                else {
                    break Relayed::Continue;
                };
                let remaining = frame.remaining - want as u64;
                let end = remaining == 0 && frame.fin;
                let sinks = (&mut self.utf8, client.as_deref_mut(), &mut *out);
                if let Err(stop) = state.piece(piece, end, sinks, max_message) {
                    break stop;
                }
                if end {
                    // The gateway's own messages held for this one go right after it.
                    self.release_held(client.as_deref_mut(), out);
                }
                pos += want;
                state.frame = (remaining > 0).then_some(Frame { remaining, ..frame });
                continue;
            }
            let rest = self.rbuf.get(pos..).unwrap_or_default();
            let (header, header_len) = match parse_header(rest) {
                Ok(Some(h)) => h,
                Ok(None) => break Relayed::Continue,
                Err(_) => break Relayed::Broken,
            };
            let Some(op) = OpCode::from_u8(header.opcode) else {
                break Relayed::Broken;
            };
            // RFC 6455 §5.1: a server MUST NOT mask; §5.2: RSV2 and RSV3 belong to no
            // extension here; RFC 7692 §6: RSV1 marks the first frame of a compressed
            // message, only when this leg agreed to the extension, never a control frame
            // (§6.1) or a continuation.
            let rsv1 = header.rsv & RSV1_FIELD != 0;
            let new_message = matches!(op, OpCode::Text | OpCode::Binary);
            if header.mask.is_some()
                || header.rsv & !RSV1_FIELD != 0
                || (rsv1 && !(new_message && state.agreed()))
                || (op.is_control()
                    && (header.payload_len > MAX_CONTROL_PAYLOAD as u64 || !header.fin))
            {
                break Relayed::Broken;
            }
            if op.is_control() {
                let total = header_len + header.payload_len as usize;
                let Some(payload) = rest.get(header_len..total) else {
                    break Relayed::Continue;
                };
                if op == OpCode::Ping && self.wbuf.len() >= limit {
                    // Our pongs wait for the upstream to read: so does its next ping.
                    break Relayed::Continue;
                }
                let mut copy = [0u8; MAX_CONTROL_PAYLOAD];
                let n = payload.len();
                copy[..n].copy_from_slice(payload);
                pos += total;
                if let Some(stop) = self.control(op, &copy[..n]) {
                    break stop;
                }
                continue;
            }
            // RFC 6455 §5.4: a continuation needs a message in progress, a new message none.
            let kind = match (op, state.message) {
                (OpCode::Continuation, Some(_)) => None,
                (OpCode::Text, None) => Some(MessageKind::Text),
                (OpCode::Binary, None) => Some(MessageKind::Binary),
                _ => break Relayed::Broken,
            };
            if let Some(kind) = kind {
                // SPEC §10 `min_size`, judged on the message's first frame (its whole size
                // when unfragmented).
                let len = usize::try_from(header.payload_len).unwrap_or(usize::MAX);
                let deflated = !rsv1 && client.as_deref().is_some_and(|c| c.compresses(len));
                state.message = Some(Message {
                    kind,
                    compressed: rsv1,
                    deflated,
                    sent: false,
                });
                if kind == MessageKind::Text {
                    self.utf8.reset();
                }
            }
            state.frame = Some(Frame {
                fin: header.fin,
                remaining: header.payload_len,
            });
            pos += header_len;
        };
        if pos > 0 {
            self.rbuf.drain(..pos);
        }
        result
    }

    /// An upstream control frame: a ping is answered, a pong dropped, a close answered
    /// (once) and relayed (RFC 6455 §5.5). `Some` ends the relay's turn.
    fn control(&mut self, op: OpCode, payload: &[u8]) -> Option<Relayed> {
        match op {
            OpCode::Ping => {
                let key = self.mask_key();
                write_masked_frame(&mut self.wbuf, true, OpCode::Pong, payload, key);
                None
            }
            OpCode::Close => {
                let (code, reason) = match parse_close_payload(payload) {
                    Ok(Some((code, reason))) => (code, reason.to_owned()),
                    Ok(None) => (1005, String::new()),
                    Err(_) => return Some(Relayed::Broken),
                };
                // RFC 6455 §5.5.1: answer the close (once), then no more frames.
                if !self.close_sent {
                    let key = self.mask_key();
                    write_masked_frame(&mut self.wbuf, true, OpCode::Close, payload, key);
                    self.close_sent = true;
                }
                self.state = LegState::Closing;
                Some(Relayed::Closed(code, reason))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_an_idle_proxied_connection_holds() {
        // docs/compression.md quotes these: the relay's state on the upstream leg, boxed
        // only when either leg compresses.
        let size = std::mem::size_of::<Deflating>();
        println!(
            "Deflating: {size} B, PerMessageDeflate: {} B",
            std::mem::size_of::<PerMessageDeflate>()
        );
        assert!(size <= 192, "{size} B");
    }
}
