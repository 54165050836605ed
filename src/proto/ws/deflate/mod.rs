//! permessage-deflate (RFC 7692), sans-IO: the `Sec-WebSocket-Extensions` offers and our
//! answer (§7.1), bounded inflation of received messages and compression of sent ones
//! (§7.2), and the memory budget that per-connection compression state is counted against.
//!
//! DEFLATE itself is `flate2` on the `zlib-rs` backend (raw streams with window bits).
//! Compression state comes from one of two places:
//! - a context that is not taken over (`*_no_context_takeover`) needs no state between
//!   messages: the worker thread's pool lends a compressor or decompressor for the length of
//!   one call and resets it;
//! - a context that is taken over lives with the connection, allocated at its first
//!   compressed message, and was reserved against the global [`MemoryBudget`] at the
//!   handshake ([`Ticket`]).

use std::cell::RefCell;
use std::time::Instant;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::frame::OpCode;
use super::message::MessageKind;
use crate::proto::error::ProtocolError;
use crate::rate::Meter;

/// The extension's registered name (RFC 7692 §7).
pub const EXTENSION: &str = "permessage-deflate";

/// RFC 7692 §7.2.1: the sender removes, and §7.2.2 the receiver appends, these four octets.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The smallest window zlib compresses with: it cannot honour `server_max_window_bits=8` (it
/// widens an 8-bit window to 9 bits), so with such an agreement the gateway sends every
/// message uncompressed, which RFC 7692 §6 allows (RSV1 clear), and keeps no compressor.
pub const MIN_WINDOW_BITS: u8 = 9;
/// RFC 7692 §7.1.2: the largest LZ77 window, 32 KiB.
pub const MAX_WINDOW_BITS: u8 = 15;

/// zlib's default level: a fair ratio for the JSON this usually carries.
const LEVEL: u32 = 6;

/// Output grows in steps of this much, never past the message limit plus one byte.
const STEP: usize = 16 * 1024;

/// Per-connection buffers larger than this are given back after a message.
const KEEP_CAPACITY: usize = 64 * 1024;

mod answer;
mod offer;

pub use answer::{accept_answer, BadAnswer, ClientOffer};
pub use offer::{
    deflate_cost, inflate_cost, negotiate, negotiate_within, Agreement, DeflateConfig,
    MalformedOffer, MemoryBudget, Role, Ticket,
};
// ---------------------------------------------------------------------------------------
// The worker's pool: state for contexts that are not taken over
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Pool {
    /// One decompressor with the widest window (it decodes any narrower stream too).
    inflate: Option<Decompress>,
    /// One compressor per window size, 9..=15.
    deflate: [Option<Compress>; 7],
}

thread_local! {
    /// Per worker thread; lent for one call and reset before it goes back.
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

fn new_inflater(window_bits: u8) -> Decompress {
    Decompress::new_with_window_bits(false, window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS))
}

fn new_deflater(window_bits: u8) -> Compress {
    Compress::new_with_window_bits(
        Compression::new(LEVEL),
        false,
        window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS),
    )
}

// ---------------------------------------------------------------------------------------
// One connection's side of the extension
// ---------------------------------------------------------------------------------------

/// The extension on one connection: the agreement, and context state when taken over.
/// Buffers for the message being inflated and the frames being compressed are the worker
/// thread's ([`with_buffers`]), so an idle connection holds none.
#[derive(Debug)]
pub struct PerMessageDeflate {
    agreement: Agreement,
    /// Which end of the connection the gateway is (whose parameters are ours).
    role: Role,
    /// The peer's context, when taken over; allocated at its first compressed message.
    inflater: Option<Box<Decompress>>,
    /// Our context, when taken over; allocated at our first compressed message.
    deflater: Option<Box<Compress>>,
    /// The reservation for the two above.
    _ticket: Option<Ticket>,
    /// The kind of the compressed message being received (its frames are reassembled
    /// compressed, then inflated at the last one).
    receiving: Option<MessageKind>,
}

/// The worker thread's message buffers: (inflated message, the application's frames).
#[derive(Default)]
struct Buffers {
    inflated: Vec<u8>,
    staging: Vec<u8>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

/// Lends the thread's buffers, emptied, for one call (fresh ones if they are already lent,
/// so that a nested call cannot fail); buffers grown past [`KEEP_CAPACITY`] are given back.
fn with_buffers<R>(f: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>) -> R) -> R {
    BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffers) => {
            let Buffers { inflated, staging } = &mut *buffers;
            inflated.clear();
            staging.clear();
            let result = f(inflated, staging);
            for buffer in [inflated, staging] {
                buffer.clear();
                if buffer.capacity() > KEEP_CAPACITY {
                    *buffer = Vec::new();
                }
            }
            result
        }
        Err(_) => f(&mut Vec::new(), &mut Vec::new()),
    })
}

/// Lends the pool's codecs for one call (none if the pool is already lent).
fn with_pool<R>(f: impl FnOnce(Option<&mut Pool>) -> R) -> R {
    POOL.with(|cell| match cell.try_borrow_mut() {
        Ok(mut pool) => f(Some(&mut pool)),
        Err(_) => f(None),
    })
}

impl PerMessageDeflate {
    /// The connection's side of `agreement`, with the reservation made for it (if any).
    pub fn new(agreement: Agreement, ticket: Option<Ticket>) -> PerMessageDeflate {
        PerMessageDeflate::with_role(agreement, Role::Server, ticket)
    }

    /// The extension on the gateway's connection to an upstream, where it is the client
    /// (SPEC §10 "Proxied routes"): what it sends follows the `client_*` parameters.
    pub fn client(agreement: Agreement, ticket: Option<Ticket>) -> PerMessageDeflate {
        PerMessageDeflate::with_role(agreement, Role::Client, ticket)
    }

    fn with_role(agreement: Agreement, role: Role, ticket: Option<Ticket>) -> PerMessageDeflate {
        PerMessageDeflate {
            agreement,
            role,
            inflater: None,
            deflater: None,
            _ticket: ticket,
            receiving: None,
        }
    }

    /// What was agreed.
    pub fn agreement(&self) -> &Agreement {
        &self.agreement
    }

    /// Whether a whole outgoing message of `len` bytes goes compressed: `min_size` or more,
    /// and a window zlib can keep to (9 bits or more, see [`MIN_WINDOW_BITS`]).
    pub fn compresses(&self, len: usize) -> bool {
        len >= self.agreement.min_size && self.agreement.sending(self.role).1 >= MIN_WINDOW_BITS
    }

    /// A compressed message of `kind` starts (its first frame had RSV1).
    pub fn start(&mut self, kind: MessageKind) {
        self.receiving = Some(kind);
    }

    /// The compressed message in progress, if any.
    pub fn receiving(&self) -> Option<MessageKind> {
        self.receiving
    }

    /// Forgets a compressed message in progress (the connection is closing).
    pub fn abandon(&mut self) {
        self.receiving = None;
    }

    /// RFC 7692 §7.2.2: inflates one whole message (its frames' payloads concatenated) with
    /// the four tail octets appended, into `out` (emptied first). Stops with 1009 the moment
    /// the output passes `max_message`; an invalid stream is 1007.
    pub fn inflate(
        &mut self,
        payload: &[u8],
        max_message: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        self.receiving = None;
        out.clear();
        if payload.is_empty() {
            // Not valid DEFLATE (the tail alone is a truncated stored-block header), but some
            // senders write it for an empty message when their compressor emitted nothing
            // (see `deflate_frame`): an empty message, and the context is left as it is,
            // since feeding the tail would leave it inside a block header and corrupt the
            // next message under context takeover.
            return Ok(());
        }
        let limit = usize::try_from(max_message).unwrap_or(usize::MAX);
        let (fresh, window) = self.agreement.receiving(self.role);
        if fresh {
            with_pool(|pool| {
                let mut spare = None;
                let inflater = match pool {
                    Some(pool) => pool
                        .inflate
                        .get_or_insert_with(|| new_inflater(MAX_WINDOW_BITS)),
                    None => spare.insert(new_inflater(MAX_WINDOW_BITS)),
                };
                let result = inflate_into(inflater, payload, out, limit);
                // No context between messages: the next one (anyone's) starts afresh.
                inflater.reset(false);
                result
            })
        } else {
            let inflater = self
                .inflater
                .get_or_insert_with(|| Box::new(new_inflater(window)));
            let result = inflate_into(inflater, payload, out, limit);
            if result.is_err() {
                inflater.reset(false);
            }
            result
        }
    }

    /// RFC 7692 §7.2.2: a compressed message is complete: inflates it within `max_message`,
    /// counts its inflated bytes against `bytes` (SPEC §10), checks text is UTF-8 (RFC 6455
    /// §8.1), and hands it to `on_message`, whose frames are compressed on their way to `out`.
    pub fn deliver_compressed<F>(
        &mut self,
        kind: MessageKind,
        compressed: &[u8],
        (max_message, (bytes, rate), now): (u64, (&mut Meter, u64), Instant),
        out: &mut Vec<u8>,
        on_message: &mut F,
    ) -> Result<(), ProtocolError>
    where
        F: FnMut(MessageKind, &[u8], &mut Vec<u8>),
    {
        with_buffers(|inflated, staging| {
            self.inflate(compressed, max_message, inflated)?;
            if !bytes.try_take(rate, inflated.len() as u64, now) {
                return Err(ProtocolError::RateLimited);
            }
            if kind == MessageKind::Text && std::str::from_utf8(inflated).is_err() {
                return Err(ProtocolError::InvalidUtf8);
            }
            on_message(kind, inflated, staging);
            self.send_staged(staging, out);
            Ok(())
        })
    }

    /// Compresses the frames the application wrote into `staging` on their way to `out`:
    /// whole data messages of `min_size` bytes or more go out compressed with RSV1 set;
    /// anything else (small messages, control frames) is copied unchanged. Empties `staging`.
    pub fn send_staged(&mut self, staging: &mut Vec<u8>, out: &mut Vec<u8>) {
        let mut rest = staging.as_slice();
        while let Ok(Some((header, header_len))) = super::frame::parse_header(rest) {
            let total = usize::try_from(header.payload_len)
                .ok()
                .and_then(|n| n.checked_add(header_len));
            let Some(frame) = total.and_then(|total| rest.get(..total)) else {
                break;
            };
            let payload = frame.get(header_len..).unwrap_or_default();
            match OpCode::from_u8(header.opcode) {
                Some(opcode @ (OpCode::Text | OpCode::Binary))
                    if header.fin && header.rsv == 0 && self.compresses(payload.len()) =>
                {
                    self.deflate_frame(opcode, payload, true, None, out);
                }
                _ => out.extend_from_slice(frame),
            }
            rest = rest.get(frame.len()..).unwrap_or_default();
        }
        // Never reached with our own frames; kept so that nothing written is lost.
        out.extend_from_slice(rest);
        staging.clear();
    }

    /// Inflates a whole compressed message (as [`PerMessageDeflate::inflate`], into the
    /// worker thread's buffer) and hands the inflated bytes to `f`.
    pub fn inflate_with<R>(
        &mut self,
        compressed: &[u8],
        max_message: u64,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, ProtocolError> {
        with_buffers(|inflated, _| {
            self.inflate(compressed, max_message, inflated)?;
            Ok(f(inflated))
        })
    }

    /// RFC 7692 §7.2.1: compresses `payload` as one frame of a compressed message, appended
    /// to `out`: RSV1 on the message's first frame (`opcode` Text or Binary, §6), none on a
    /// continuation; masked with `mask` when the gateway is the client (RFC 6455 §5.3).
    /// The last frame (`fin`) has the 0x00 0x00 0xff 0xff tail removed; an earlier one
    /// keeps its sync-flush marker, so the frames' payloads concatenated are the message's
    /// DEFLATE data (§7.2.1 "the payload of a fragmented message is the concatenation").
    /// Without context takeover each frame's data is compressed with a fresh compressor
    /// (a valid stream: its blocks refer back no further than their own input), so no
    /// state is held between frames.
    pub fn deflate_frame(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        fin: bool,
        mask: Option<[u8; 4]>,
        out: &mut Vec<u8>,
    ) {
        // The payload is compressed after room for the longest header, then the header is
        // written in front of it and the payload moved up against it.
        let start = out.len();
        out.resize(start + MAX_HEADER, 0);
        let (fresh, bits) = self.agreement.sending(self.role);
        if fresh {
            with_pool(|pool| {
                let mut spare = None;
                let slot = pool.and_then(|pool| {
                    pool.deflate
                        .get_mut(usize::from(bits.saturating_sub(MIN_WINDOW_BITS)))
                });
                let deflater = match slot {
                    Some(slot) => slot.get_or_insert_with(|| new_deflater(bits)),
                    None => spare.insert(new_deflater(bits)),
                };
                deflate_into(deflater, payload, out);
                deflater.reset();
            });
        } else {
            let deflater = self
                .deflater
                .get_or_insert_with(|| Box::new(new_deflater(bits)));
            deflate_into(deflater, payload, out);
        }
        // RFC 7692 §7.2.1: remove the 0x00 0x00 0xff 0xff the sync flush ended with.
        if !fin {
            // Not the end of the message: the marker stays, the stream goes on.
        } else if out.ends_with(&TAIL) && out.len() >= start + MAX_HEADER + TAIL.len() {
            out.truncate(out.len() - TAIL.len());
        } else if out.len() == start + MAX_HEADER {
            // zlib emits nothing for a sync flush with no input right after another sync
            // flush (an empty message under context takeover): the stream is byte-aligned
            // and does not end with an empty stored block, so RFC 7692 §7.2.1 step 2 appends
            // one (00 00 00 ff ff) and step 3 removes its last four octets, leaving 0x00
            // (§7.2.3.6). An empty payload would be invalid: the peer's appended tail alone
            // is a truncated stored-block header that desynchronises its context.
            out.push(0x00);
        }
        let compressed = out.len() - start - MAX_HEADER;
        let mut head = [0u8; MAX_HEADER];
        let head_len = header_bytes(&mut head, (fin, opcode), compressed, mask);
        out.copy_within(start + MAX_HEADER.., start + head_len);
        if let (Some(dst), Some(src)) = (out.get_mut(start..start + head_len), head.get(..head_len))
        {
            dst.copy_from_slice(src);
        }
        out.truncate(start + head_len + compressed);
        if let (Some(key), Some(data)) = (mask, out.get_mut(start + head_len..)) {
            super::mask::apply_mask(data, key, 0);
        }
    }
}

/// Hands a complete message to the application; with permessage-deflate, the frames it
/// writes are compressed on their way to `out` (RFC 7692 §7.2.1).
pub fn deliver<F>(
    deflate: Option<&mut PerMessageDeflate>,
    kind: MessageKind,
    payload: &[u8],
    out: &mut Vec<u8>,
    on_message: &mut F,
) where
    F: FnMut(MessageKind, &[u8], &mut Vec<u8>),
{
    match deflate {
        None => on_message(kind, payload, out),
        Some(deflate) => with_buffers(|_, staging| {
            on_message(kind, payload, staging);
            deflate.send_staged(staging, out);
        }),
    }
}

/// The longest frame header (RFC 6455 §5.2: 2 + 8 bytes, and a 4-byte masking key).
const MAX_HEADER: usize = 14;

/// RFC 6455 §5.2 header of a data frame of a compressed message: RSV1 set on the first frame
/// (RFC 7692 §6: "the RSV1 bit is set on the first frame of a compressed message"), not on a
/// continuation; the mask bit and key when `mask` is given. Returns its length.
fn header_bytes(
    head: &mut [u8; MAX_HEADER],
    (fin, opcode): (bool, OpCode),
    len: usize,
    mask: Option<[u8; 4]>,
) -> usize {
    let rsv1 = if opcode == OpCode::Continuation {
        0
    } else {
        RSV1
    };
    head[0] = (u8::from(fin) << 7) | rsv1 | opcode as u8;
    let masked = if mask.is_some() { 0x80 } else { 0 };
    let at = if len < 126 {
        head[1] = masked | len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        head[1] = masked | 126;
        head[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        head[1] = masked | 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    match mask {
        Some(key) => {
            head[at..at + 4].copy_from_slice(&key);
            at + 4
        }
        None => at,
    }
}

/// The RSV1 bit in a frame's first byte.
pub const RSV1: u8 = 0x40;

/// RSV1 as it appears in [`super::frame::FrameHeader::rsv`] (RSV1..RSV3 as the low 3 bits).
pub const RSV1_FIELD: u8 = 0b100;

/// Feeds `payload` then the tail to `inflater`, appending to `out` in steps and stopping as
/// soon as `out` passes `limit`.
fn inflate_into(
    inflater: &mut Decompress,
    payload: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), ProtocolError> {
    for input in [payload, &TAIL[..]] {
        let mut consumed = 0;
        loop {
            if out.len() == out.capacity() {
                // Room for at most one byte past the limit: enough to see it crossed.
                // Geometric growth, capped there.
                let room = limit
                    .saturating_add(1)
                    .saturating_sub(out.len())
                    .min(out.len().max(STEP));
                if room == 0 {
                    return Err(ProtocolError::MessageTooBig);
                }
                out.reserve_exact(room);
            }
            let rest = input.get(consumed..).unwrap_or_default();
            let before_in = inflater.total_in();
            let before_out = out.len();
            let status = inflater
                .decompress_vec(rest, out, FlushDecompress::Sync)
                .map_err(|_| ProtocolError::InvalidCompressedData)?;
            consumed += usize::try_from(inflater.total_in() - before_in).unwrap_or(usize::MAX);
            if out.len() > limit {
                return Err(ProtocolError::MessageTooBig);
            }
            match status {
                Status::StreamEnd => {
                    // RFC 7692 §7.2.3.5: a block with BFINAL set ends the stream; what follows
                    // it (padding, the appended tail) is ignored and the next message starts
                    // a new stream.
                    inflater.reset(false);
                    return Ok(());
                }
                Status::Ok | Status::BufError => {
                    let progressed = out.len() > before_out || inflater.total_in() > before_in;
                    if consumed >= input.len() && out.len() < out.capacity() {
                        break;
                    }
                    if !progressed && out.len() < out.capacity() {
                        // Nothing more comes out of this input.
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Compresses `payload` with a sync flush, appending to `out`.
fn deflate_into(deflater: &mut Compress, payload: &[u8], out: &mut Vec<u8>) {
    let mut consumed = 0;
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(payload.len().saturating_sub(consumed) / 2 + 64);
        }
        let rest = payload.get(consumed..).unwrap_or_default();
        let before_in = deflater.total_in();
        let before_out = out.len();
        if deflater
            .compress_vec(rest, out, FlushCompress::Sync)
            .is_err()
        {
            // Only reachable with a misused stream; nothing half-written stays.
            return;
        }
        consumed += usize::try_from(deflater.total_in() - before_in).unwrap_or(usize::MAX);
        // The flush is complete once all input is in and the output was not filled up.
        if consumed >= payload.len() && out.len() < out.capacity() {
            return;
        }
        if out.len() == before_out && deflater.total_in() == before_in && out.len() < out.capacity()
        {
            return;
        }
    }
}

#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod tests;
