//! RFC 7692 §7.1: reading the client's offers, our answer, and the memory budget that an
//! answer keeping compression state is reserved against.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{EXTENSION, MAX_WINDOW_BITS, MIN_WINDOW_BITS};

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
    pub(super) fn inflate_window(&self) -> u8 {
        self.client_max_window_bits
            .unwrap_or(MAX_WINDOW_BITS)
            .max(MIN_WINDOW_BITS)
    }

    /// How the gateway compresses when it is `role`: (no context takeover, window bits).
    /// RFC 7692 names the parameters by role: the server's are ours on a client's
    /// connection, the client's are ours on the connection to an upstream.
    pub(super) fn sending(&self, role: Role) -> (bool, u8) {
        match role {
            Role::Server => (self.server_no_context_takeover, self.server_max_window_bits),
            Role::Client => (
                self.client_no_context_takeover,
                self.client_max_window_bits.unwrap_or(MAX_WINDOW_BITS),
            ),
        }
    }

    /// How the peer compresses what the gateway receives as `role`: (no context takeover,
    /// the window our decompressor needs).
    pub(super) fn receiving(&self, role: Role) -> (bool, u8) {
        match role {
            Role::Server => (self.client_no_context_takeover, self.inflate_window()),
            Role::Client => (
                self.server_no_context_takeover,
                self.server_max_window_bits.max(MIN_WINDOW_BITS),
            ),
        }
    }

    /// Bytes of compression state this connection keeps between messages (0 without
    /// context takeover): what the handshake reserves against [`MemoryBudget`].
    pub fn state_cost(&self) -> usize {
        self.state_cost_as(Role::Server)
    }

    /// [`Agreement::state_cost`] for the gateway as `role`.
    pub fn state_cost_as(&self, role: Role) -> usize {
        let mut cost = 0;
        let (fresh, bits) = self.sending(role);
        if !fresh && bits >= MIN_WINDOW_BITS {
            cost += deflate_cost(bits);
        }
        let (fresh, bits) = self.receiving(role);
        if !fresh {
            cost += inflate_cost(bits);
        }
        cost
    }
}

/// Which end of a connection the gateway is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// On a client's connection.
    Server,
    /// On its connection to an upstream (SPEC §10 "Proxied routes").
    Client,
}

/// Heap held by one raw compressor with this window, zlib-rs at memory level 8: the window
/// and its chain table (4 × 2^bits together) and about 243 KiB that do not depend on it (the
/// hash table, the symbol buffer, the stream state). `tests/deflate_memory.rs` measures it
/// and checks that this is never below what is held.
pub fn deflate_cost(window_bits: u8) -> usize {
    (4usize << window_bits) + 244 * 1024
}

/// Heap held by one raw decompressor: zlib-rs allocates the full 32 KiB window whatever the
/// window bits, plus its tables and state (measured: 46.4 KiB).
pub fn inflate_cost(_window_bits: u8) -> usize {
    48 * 1024
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

/// One permessage-deflate element (an offer, or an upstream's answer), checked against
/// RFC 7692 §7.1.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Offer {
    pub(super) server_no_context_takeover: bool,
    pub(super) client_no_context_takeover: bool,
    pub(super) server_max_window_bits: Option<u8>,
    /// `Some(None)`: named without a value (RFC 7692 §7.1.2.2 allows it in an offer).
    pub(super) client_max_window_bits: Option<Option<u8>>,
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

/// Parses every element of one header value, calling `on_element` for each: `Some` for a
/// permessage-deflate element, `None` for another extension (whose syntax was checked).
pub(super) fn parse_value(
    value: &[u8],
    on_element: &mut dyn FnMut(Option<Offer>),
) -> Result<(), MalformedOffer> {
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
        on_element(ours.then_some(offer));
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
        parse_value(value, &mut |element| {
            if let (None, Some(offer)) = (&chosen, element) {
                chosen = answer(&offer, config);
            }
        })?;
    }
    Ok(chosen)
}

/// Our answer to one offer (every well-formed offer is acceptable; `None` is kept for
/// offers a later version may decline).
fn answer(offer: &Offer, config: &DeflateConfig) -> Option<Agreement> {
    let ours = config
        .server_max_window_bits
        .clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
    // RFC 7692 §7.1.2.1: the same or a smaller value. 8 is accepted, and then nothing is
    // compressed on the way out (zlib cannot keep within 256 bytes).
    let server_max_window_bits = offer.server_max_window_bits.map_or(ours, |a| a.min(ours));
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
    limit: AtomicUsize,
    used: AtomicUsize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit: AtomicUsize::new(limit),
            used: AtomicUsize::new(0),
        })
    }

    /// A new ceiling (SIGHUP); reservations already made are kept.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Reserves `bytes` if they fit; released when the ticket drops.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Ticket> {
        let limit = self.limit.load(Ordering::Relaxed);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= limit)
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

impl Ticket {
    /// Gives back all but `bytes` of the reservation (an upstream answered with less state
    /// than the offer could have led to); `None` when nothing is left reserved.
    pub fn shrink(mut self, bytes: usize) -> Option<Ticket> {
        let give_back = self.bytes.saturating_sub(bytes);
        self.budget.used.fetch_sub(give_back, Ordering::AcqRel);
        self.bytes -= give_back;
        (self.bytes > 0).then_some(self)
    }
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
