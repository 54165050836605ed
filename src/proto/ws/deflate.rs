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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::frame::OpCode;
use super::message::MessageKind;
use crate::proto::error::ProtocolError;

/// The extension's registered name (RFC 7692 §7).
pub const EXTENSION: &str = "permessage-deflate";

/// RFC 7692 §7.2.1: the sender removes, and §7.2.2 the receiver appends, these four octets.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The smallest window zlib produces: it cannot honour `server_max_window_bits=8` (it widens
/// an 8-bit window to 9 bits), so such an offer is declined (RFC 7692 §7.1.2.1).
pub const MIN_WINDOW_BITS: u8 = 9;
/// RFC 7692 §7.1.2: the largest LZ77 window, 32 KiB.
pub const MAX_WINDOW_BITS: u8 = 15;

/// zlib's default level: a fair ratio for the JSON this usually carries.
const LEVEL: u32 = 6;

/// Output grows in steps of this much, never past the message limit plus one byte.
const STEP: usize = 16 * 1024;

/// Per-connection buffers larger than this are given back after a message.
const KEEP_CAPACITY: usize = 64 * 1024;

/// What the `[compression]` section allows (SPEC §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateConfig {
    /// The largest LZ77 window we compress with, 9..=15.
    pub server_max_window_bits: u8,
    /// `false`: both directions are negotiated with `*_no_context_takeover`.
    pub context_takeover: bool,
    /// Outgoing messages shorter than this are sent uncompressed.
    pub min_size: usize,
}

/// `Sec-WebSocket-Extensions` does not follow RFC 6455 §9.1, or a permessage-deflate offer
/// breaks RFC 7692 §7.1 (unknown or repeated parameter, invalid value): 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedOffer;

/// The parameters both sides agreed on (RFC 7692 §7.1): what we answer and how we work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// We start every message with a fresh compressor.
    pub server_no_context_takeover: bool,
    /// The client starts every message with a fresh compressor.
    pub client_no_context_takeover: bool,
    /// Our window (9..=15); answered when offered or below 15.
    pub server_max_window_bits: u8,
    /// Whether `server_max_window_bits` goes in the answer.
    pub answer_server_window: bool,
    /// The client's window, answered only when its offer named `client_max_window_bits`.
    pub client_max_window_bits: Option<u8>,
    /// Outgoing messages shorter than this are sent uncompressed.
    pub min_size: usize,
}

impl Agreement {
    /// The `Sec-WebSocket-Extensions` value of the 101 (RFC 7692 §7.1).
    pub fn write_response(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(EXTENSION.as_bytes());
        if self.server_no_context_takeover {
            out.extend_from_slice(b"; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.extend_from_slice(b"; client_no_context_takeover");
        }
        if self.answer_server_window {
            out.extend_from_slice(b"; server_max_window_bits=");
            push_number(out, self.server_max_window_bits);
        }
        if let Some(bits) = self.client_max_window_bits {
            out.extend_from_slice(b"; client_max_window_bits=");
            push_number(out, bits);
        }
    }

    /// Whether any compression state outlives a message on this connection.
    pub fn keeps_state(&self) -> bool {
        !self.server_no_context_takeover || !self.client_no_context_takeover
    }

    /// The window our decompressor needs for the client's messages.
    fn inflate_window(&self) -> u8 {
        self.client_max_window_bits
            .unwrap_or(MAX_WINDOW_BITS)
            .max(MIN_WINDOW_BITS)
    }

    /// Bytes of compression state this connection keeps between messages (0 without
    /// context takeover): what the handshake reserves against [`MemoryBudget`].
    pub fn state_cost(&self) -> usize {
        let mut cost = 0;
        if !self.server_no_context_takeover {
            cost += deflate_cost(self.server_max_window_bits);
        }
        if !self.client_no_context_takeover {
            cost += inflate_cost(self.inflate_window());
        }
        cost
    }
}

/// Heap held by one raw compressor with this window, zlib-rs at memory level 8: the window
/// (2 × 2^bits), its chain table (2 × 2^bits), the 64 KiB hash table, the 64 KiB symbol buffer,
/// and the stream's own state. `tests/deflate_memory.rs` measures it and checks this bound.
pub fn deflate_cost(window_bits: u8) -> usize {
    (4usize << window_bits) + 128 * 1024 + 8 * 1024
}

/// Heap held by one raw decompressor with this window: the window (2^bits plus slack) and
/// the stream's own state (its tables); measured in `tests/deflate_memory.rs`.
pub fn inflate_cost(window_bits: u8) -> usize {
    (1usize << window_bits) + 64 + 12 * 1024
}

fn push_number(out: &mut Vec<u8>, n: u8) {
    if n >= 10 {
        out.push(b'0' + n / 10);
    }
    out.push(b'0' + n % 10);
}

// ---------------------------------------------------------------------------------------
// Negotiation (RFC 7692 §7.1; the header grammar of RFC 6455 §9.1)
// ---------------------------------------------------------------------------------------

/// One parameter's value as written: a token or the inside of a quoted-string.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Token(&'a [u8]),
    Quoted(&'a [u8]),
}

/// One permessage-deflate offer, checked against RFC 7692 §7.1.
#[derive(Debug, Default, Clone, Copy)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: named without a value (RFC 7692 §7.1.2.2 allows it in an offer).
    client_max_window_bits: Option<Option<u8>>,
}

/// RFC 7230 §3.2.6 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A cursor over one header value.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.skip_space();
        if self.peek() == Some(b) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn token(&mut self) -> Result<&'a [u8], MalformedOffer> {
        self.skip_space();
        let start = self.at;
        while self.peek().is_some_and(is_tchar) {
            self.at += 1;
        }
        self.bytes
            .get(start..self.at)
            .filter(|t| !t.is_empty())
            .ok_or(MalformedOffer)
    }

    /// RFC 7230 §3.2.6 quoted-string, after its opening quote; returns the raw inside.
    fn quoted(&mut self) -> Result<&'a [u8], MalformedOffer> {
        let start = self.at;
        loop {
            match self.peek() {
                None => return Err(MalformedOffer),
                Some(b'"') => {
                    let inside = self.bytes.get(start..self.at).ok_or(MalformedOffer)?;
                    self.at += 1;
                    return Ok(inside);
                }
                Some(b'\\') => self.at += 2,
                Some(b) if b == b'\t' || b >= 0x20 && b != 0x7f => self.at += 1,
                Some(_) => return Err(MalformedOffer),
            }
        }
    }

    fn value(&mut self) -> Result<Value<'a>, MalformedOffer> {
        self.skip_space();
        if self.peek() == Some(b'"') {
            self.at += 1;
            self.quoted().map(Value::Quoted)
        } else {
            self.token().map(Value::Token)
        }
    }
}

/// RFC 7692 §7.1.2: a window size is 1*DIGIT in 8..=15 with no leading zero; inside a
/// quoted-string the unescaped text must be such a token (RFC 7692 §7.1 last paragraph).
fn window_bits(value: Value<'_>) -> Result<u8, MalformedOffer> {
    let mut digits = [0u8; 2];
    let mut n = 0;
    let mut push = |b: u8| -> Result<(), MalformedOffer> {
        let slot = digits.get_mut(n).ok_or(MalformedOffer)?;
        *slot = b;
        n += 1;
        Ok(())
    };
    match value {
        Value::Token(t) => t.iter().try_for_each(|&b| push(b))?,
        Value::Quoted(q) => {
            let mut escaped = false;
            for &b in q {
                if b == b'\\' && !escaped {
                    escaped = true;
                    continue;
                }
                escaped = false;
                push(b)?;
            }
        }
    }
    let value = match digits.get(..n) {
        Some([d]) if d.is_ascii_digit() => d - b'0',
        Some([b'1', d]) if d.is_ascii_digit() => 10 + (d - b'0'),
        _ => return Err(MalformedOffer),
    };
    if (8..=15).contains(&value) {
        Ok(value)
    } else {
        Err(MalformedOffer)
    }
}

/// Parses every element of one header value, calling `on_offer` for each permessage-deflate
/// offer (others are skipped after their syntax is checked).
fn parse_value(value: &[u8], on_offer: &mut dyn FnMut(Offer)) -> Result<(), MalformedOffer> {
    let mut c = Cursor {
        bytes: value,
        at: 0,
    };
    let mut elements = 0;
    loop {
        c.skip_space();
        if c.peek().is_none() {
            break;
        }
        // RFC 7230 §7: empty list elements are tolerated.
        if c.eat(b',') {
            continue;
        }
        let name = c.token()?;
        let ours = name.eq_ignore_ascii_case(EXTENSION.as_bytes());
        let mut offer = Offer::default();
        while c.eat(b';') {
            let param = c.token()?;
            let value = if c.eat(b'=') { Some(c.value()?) } else { None };
            if ours {
                accept_param(&mut offer, param, value)?;
            }
        }
        c.skip_space();
        if c.peek().is_some() && !c.eat(b',') {
            return Err(MalformedOffer);
        }
        elements += 1;
        if ours {
            on_offer(offer);
        }
    }
    // RFC 6455 §9.1: `1#extension`, at least one element.
    if elements == 0 {
        return Err(MalformedOffer);
    }
    Ok(())
}

/// RFC 7692 §7: an offer with an unknown parameter, a repeated one or an invalid value is
/// refused (here: the whole request, 400).
fn accept_param(
    offer: &mut Offer,
    name: &[u8],
    value: Option<Value<'_>>,
) -> Result<(), MalformedOffer> {
    let flag = |set: &mut bool| {
        if *set || value.is_some() {
            return Err(MalformedOffer);
        }
        *set = true;
        Ok(())
    };
    if name.eq_ignore_ascii_case(b"server_no_context_takeover") {
        flag(&mut offer.server_no_context_takeover)
    } else if name.eq_ignore_ascii_case(b"client_no_context_takeover") {
        flag(&mut offer.client_no_context_takeover)
    } else if name.eq_ignore_ascii_case(b"server_max_window_bits") {
        // RFC 7692 §7.1.2.1: a value is required.
        if offer.server_max_window_bits.is_some() {
            return Err(MalformedOffer);
        }
        offer.server_max_window_bits = Some(window_bits(value.ok_or(MalformedOffer)?)?);
        Ok(())
    } else if name.eq_ignore_ascii_case(b"client_max_window_bits") {
        // RFC 7692 §7.1.2.2: the value is optional in an offer.
        if offer.client_max_window_bits.is_some() {
            return Err(MalformedOffer);
        }
        offer.client_max_window_bits = Some(value.map(window_bits).transpose()?);
        Ok(())
    } else {
        Err(MalformedOffer)
    }
}

/// RFC 7692 §7.1: reads every `Sec-WebSocket-Extensions` value and answers the first
/// acceptable permessage-deflate offer (`None`: no offer, or none acceptable).
pub fn negotiate<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    config: &DeflateConfig,
) -> Result<Option<Agreement>, MalformedOffer> {
    let mut chosen = None;
    for value in values {
        parse_value(value, &mut |offer| {
            if chosen.is_none() {
                chosen = answer(&offer, config);
            }
        })?;
    }
    Ok(chosen)
}

/// Our answer to one offer, or `None` to decline it.
fn answer(offer: &Offer, config: &DeflateConfig) -> Option<Agreement> {
    let ours = config
        .server_max_window_bits
        .clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
    let server_max_window_bits = match offer.server_max_window_bits {
        // RFC 7692 §7.1.2.1: answer the same or a smaller value, or decline; zlib cannot
        // compress within 8 bits.
        Some(asked) if asked < MIN_WINDOW_BITS => return None,
        Some(asked) => asked.min(ours),
        None => ours,
    };
    Some(Agreement {
        // RFC 7692 §7.1.1.1: a server may add it unasked; it must when asked.
        server_no_context_takeover: offer.server_no_context_takeover || !config.context_takeover,
        // RFC 7692 §7.1.1.2: a server may add it unasked.
        client_no_context_takeover: offer.client_no_context_takeover || !config.context_takeover,
        server_max_window_bits,
        // RFC 7692 §7.1.2.1: a server may limit its own window unasked.
        answer_server_window: offer.server_max_window_bits.is_some()
            || server_max_window_bits < MAX_WINDOW_BITS,
        // RFC 7692 §7.1.2.2: only when offered; the same or a smaller value.
        client_max_window_bits: offer
            .client_max_window_bits
            .map(|asked| asked.unwrap_or(MAX_WINDOW_BITS).min(ours)),
        min_size: config.min_size,
    })
}

// ---------------------------------------------------------------------------------------
// Memory budget
// ---------------------------------------------------------------------------------------

/// `compression.memory`: the ceiling for all per-connection compression state together.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Reserves `bytes` if they fit; released when the ticket drops.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Ticket> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .ok()?;
        Some(Ticket {
            budget: Arc::clone(self),
            bytes,
        })
    }
}

/// A reservation against a [`MemoryBudget`], given back on drop.
#[derive(Debug)]
pub struct Ticket {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Negotiates and, when the answer keeps state between messages, reserves it: past the
/// budget the extension is declined (SPEC §10), never the handshake.
pub fn negotiate_within<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    config: &DeflateConfig,
    budget: &Arc<MemoryBudget>,
) -> Result<Option<(Agreement, Option<Ticket>)>, MalformedOffer> {
    let Some(agreement) = negotiate(values, config)? else {
        return Ok(None);
    };
    if !agreement.keeps_state() {
        return Ok(Some((agreement, None)));
    }
    Ok(budget
        .reserve(agreement.state_cost())
        .map(|ticket| (agreement, Some(ticket))))
}

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

/// The extension on one connection: the agreement, context state when taken over, and the
/// buffers for the message being inflated and the frames being compressed.
#[derive(Debug)]
pub struct PerMessageDeflate {
    agreement: Agreement,
    /// The client's context, when taken over; allocated at its first compressed message.
    inflater: Option<Box<Decompress>>,
    /// Our context, when taken over; allocated at our first compressed message.
    deflater: Option<Box<Compress>>,
    /// The reservation for the two above.
    _ticket: Option<Ticket>,
    /// The kind of the compressed message being received (its frames are reassembled
    /// compressed, then inflated at the last one).
    receiving: Option<MessageKind>,
    /// The inflated message.
    inflated: Vec<u8>,
    /// Frames the application wrote, before compression.
    staging: Vec<u8>,
}

impl PerMessageDeflate {
    /// The connection's side of `agreement`, with the reservation made for it (if any).
    pub fn new(agreement: Agreement, ticket: Option<Ticket>) -> PerMessageDeflate {
        PerMessageDeflate {
            agreement,
            inflater: None,
            deflater: None,
            _ticket: ticket,
            receiving: None,
            inflated: Vec::new(),
            staging: Vec::new(),
        }
    }

    /// What was agreed.
    pub fn agreement(&self) -> &Agreement {
        &self.agreement
    }

    /// A compressed message of `kind` starts (its first frame had RSV1).
    pub fn start(&mut self, kind: MessageKind) {
        self.receiving = Some(kind);
    }

    /// The compressed message in progress, if any; `take` ends it.
    pub fn receiving(&self) -> Option<MessageKind> {
        self.receiving
    }

    /// Forgets a compressed message in progress (the connection is closing).
    pub fn abandon(&mut self) {
        self.receiving = None;
        self.release();
    }

    /// RFC 7692 §7.2.2: inflates one whole message (its frames' payloads concatenated) with
    /// the four tail octets appended. Stops with 1009 the moment the output passes
    /// `max_message`; an invalid stream is 1007. The result is valid until the next call.
    pub fn inflate(&mut self, payload: &[u8], max_message: u64) -> Result<&[u8], ProtocolError> {
        self.receiving = None;
        self.inflated.clear();
        let limit = usize::try_from(max_message).unwrap_or(usize::MAX);
        if self.agreement.client_no_context_takeover {
            POOL.with(|pool| {
                let mut pool = pool.borrow_mut();
                let inflater = pool
                    .inflate
                    .get_or_insert_with(|| new_inflater(MAX_WINDOW_BITS));
                let result = inflate_into(inflater, payload, &mut self.inflated, limit);
                // No context between messages: the next one (anyone's) starts afresh.
                inflater.reset(false);
                result
            })?;
        } else {
            let window = self.agreement.inflate_window();
            let inflater = self
                .inflater
                .get_or_insert_with(|| Box::new(new_inflater(window)));
            let result = inflate_into(inflater, payload, &mut self.inflated, limit);
            if result.is_err() {
                inflater.reset(false);
            }
            result?;
        }
        Ok(&self.inflated)
    }

    /// Takes the staging buffer the application's frames are written to.
    pub fn take_staging(&mut self) -> Vec<u8> {
        let mut staging = std::mem::take(&mut self.staging);
        staging.clear();
        staging
    }

    /// Compresses the frames the application wrote into `staging` on their way to `out`:
    /// whole data messages of `min_size` bytes or more go out compressed with RSV1 set;
    /// anything else (small messages, control frames) is copied unchanged. The buffer is
    /// kept for the next message.
    pub fn send_staged(&mut self, mut staging: Vec<u8>, out: &mut Vec<u8>) {
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
                    if header.fin
                        && header.rsv == 0
                        && payload.len() >= self.agreement.min_size =>
                {
                    self.deflate_message(opcode, payload, out);
                }
                _ => out.extend_from_slice(frame),
            }
            rest = rest.get(frame.len()..).unwrap_or_default();
        }
        // Never reached with our own frames; kept so that nothing written is lost.
        out.extend_from_slice(rest);
        staging.clear();
        if staging.capacity() <= KEEP_CAPACITY {
            self.staging = staging;
        }
        self.release();
    }

    /// RFC 7692 §7.2.1: one compressed message as one frame, RSV1 set, the tail removed.
    fn deflate_message(&mut self, opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
        // The payload is compressed after room for the longest header, then the header is
        // written in front of it and the payload moved up against it.
        let start = out.len();
        out.resize(start + MAX_HEADER, 0);
        if self.agreement.server_no_context_takeover {
            let bits = self.agreement.server_max_window_bits;
            POOL.with(|pool| {
                let mut pool = pool.borrow_mut();
                let slot = pool
                    .deflate
                    .get_mut(usize::from(bits.saturating_sub(MIN_WINDOW_BITS)))
                    .map(|slot| slot.get_or_insert_with(|| new_deflater(bits)));
                if let Some(deflater) = slot {
                    deflate_into(deflater, payload, out);
                    deflater.reset();
                }
            });
        } else {
            let bits = self.agreement.server_max_window_bits;
            let deflater = self
                .deflater
                .get_or_insert_with(|| Box::new(new_deflater(bits)));
            deflate_into(deflater, payload, out);
        }
        // RFC 7692 §7.2.1: remove the 0x00 0x00 0xff 0xff the sync flush ended with.
        if out.ends_with(&TAIL) && out.len() >= start + MAX_HEADER + TAIL.len() {
            out.truncate(out.len() - TAIL.len());
        }
        let compressed = out.len() - start - MAX_HEADER;
        let mut head = [0u8; MAX_HEADER];
        let head_len = header_bytes(&mut head, opcode, compressed);
        out.copy_within(start + MAX_HEADER.., start + head_len);
        if let (Some(dst), Some(src)) = (out.get_mut(start..start + head_len), head.get(..head_len))
        {
            dst.copy_from_slice(src);
        }
        out.truncate(start + head_len + compressed);
    }

    /// Gives back buffers grown by a large message.
    fn release(&mut self) {
        if self.inflated.capacity() > KEEP_CAPACITY {
            self.inflated = Vec::new();
        }
    }
}

/// The longest server frame header (RFC 6455 §5.2: 2 + 8 bytes, no mask).
const MAX_HEADER: usize = 10;

/// RFC 6455 §5.2 header of an unmasked FIN data frame with RSV1 set (RFC 7692 §6: "the RSV1
/// bit is set on the first frame of a compressed message"); returns its length.
fn header_bytes(head: &mut [u8; MAX_HEADER], opcode: OpCode, len: usize) -> usize {
    head[0] = 0x80 | RSV1 | opcode as u8;
    if len < 126 {
        head[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        head[1] = 126;
        head[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
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
#[path = "deflate_tests.rs"]
mod tests;
