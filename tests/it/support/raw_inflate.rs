//! A strict raw DEFLATE reader (RFC 1951 §3.2) for checking what a peer compressed: it
//! decodes a message and fails when a back-reference reaches further than the LZ77 window
//! agreed (RFC 7692 §7.1.2) or than the history the context allows (§7.1.1: none from an
//! earlier message without context takeover). zlib-style inflaters do not catch the first:
//! they accept any distance that falls inside the output of the same call, so a window
//! check through them proves nothing. Slow (bit by bit) and meant for tests only.

/// RFC 1951 §3.2.5: base lengths and extra bits of length codes 257..=285.
const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
/// Base distances and extra bits of distance codes 0..=29.
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// RFC 1951 §3.2.7: the order code length code lengths are sent in.
const CLEN_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Result<u32, String> {
        let byte = self.data.get(self.at / 8).ok_or("truncated stream")?;
        let b = (byte >> (self.at % 8)) & 1;
        self.at += 1;
        Ok(u32::from(b))
    }

    /// `n` bits, least significant first (RFC 1951 §3.1.1).
    fn bits(&mut self, n: u8) -> Result<u32, String> {
        let mut v = 0;
        for i in 0..n {
            v |= self.bit()? << i;
        }
        Ok(v)
    }
}

/// A canonical Huffman code (RFC 1951 §3.2.2), decoded code length by code length.
struct Huffman {
    counts: [u16; 16],
    symbols: Vec<u16>,
}

impl Huffman {
    fn new(lengths: &[u8]) -> Huffman {
        let mut counts = [0u16; 16];
        for &l in lengths {
            counts[usize::from(l)] += 1;
        }
        counts[0] = 0;
        let mut offsets = [0u16; 16];
        for len in 1..15 {
            offsets[len + 1] = offsets[len] + counts[len];
        }
        let mut symbols = vec![0; lengths.len()];
        for (symbol, &l) in lengths.iter().enumerate() {
            if l != 0 {
                symbols[usize::from(offsets[usize::from(l)])] = symbol as u16;
                offsets[usize::from(l)] += 1;
            }
        }
        Huffman { counts, symbols }
    }

    fn decode(&self, bits: &mut Bits<'_>) -> Result<u16, String> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..16 {
            code |= bits.bit()? as i32;
            let count = i32::from(self.counts[len]);
            if code - first < count {
                return self
                    .symbols
                    .get((index + code - first) as usize)
                    .copied()
                    .ok_or_else(|| "bad code".to_string());
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Err("invalid Huffman code".into())
    }
}

/// One direction of a permessage-deflate stream as a strict reader sees it.
pub struct WindowCheck {
    window: usize,
    keep_context: bool,
    history: Vec<u8>,
    /// The longest distance seen so far.
    pub max_distance: usize,
}

impl WindowCheck {
    /// A reader for a peer that must keep within `window_bits` and, unless
    /// `keep_context`, refer to nothing before the message being read.
    pub fn new(window_bits: u8, keep_context: bool) -> WindowCheck {
        WindowCheck {
            window: 1 << window_bits,
            keep_context,
            history: Vec::new(),
            max_distance: 0,
        }
    }

    /// RFC 7692 §7.2.2: reads one message's compressed payload with the tail appended;
    /// returns the inflated message, or why it breaks the agreement.
    pub fn message(&mut self, payload: &[u8]) -> Result<Vec<u8>, String> {
        let mut input = payload.to_vec();
        input.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut bits = Bits {
            data: &input,
            at: 0,
        };
        if !self.keep_context {
            self.history.clear();
        }
        let start = self.history.len();
        let mut out = std::mem::take(&mut self.history);
        let result = self.blocks(&mut bits, &mut out, input.len() * 8);
        let message = out.get(start..).unwrap_or_default().to_vec();
        // Keep at most a full 32 KiB of history.
        let keep_from = out.len().saturating_sub(1 << 15);
        self.history = out.split_off(keep_from);
        result.map(|()| message)
    }

    fn blocks(&mut self, bits: &mut Bits<'_>, out: &mut Vec<u8>, end: usize) -> Result<(), String> {
        while bits.at < end {
            let last = bits.bit()? == 1;
            match bits.bits(2)? {
                0 => {
                    // RFC 1951 §3.2.4: stored; skip to the byte boundary.
                    bits.at = bits.at.div_ceil(8) * 8;
                    let len = bits.bits(16)?;
                    let nlen = bits.bits(16)?;
                    if len != !nlen & 0xffff {
                        return Err("stored block LEN/NLEN mismatch".into());
                    }
                    for _ in 0..len {
                        out.push(bits.bits(8)? as u8);
                    }
                }
                1 => {
                    let mut lengths = [0u8; 288];
                    for (i, l) in lengths.iter_mut().enumerate() {
                        *l = match i {
                            0..=143 => 8,
                            144..=255 => 9,
                            256..=279 => 7,
                            _ => 8,
                        };
                    }
                    self.codes(bits, out, &Huffman::new(&lengths), &Huffman::new(&[5; 30]))?;
                }
                2 => {
                    let (lit, dist) = dynamic_tables(bits)?;
                    self.codes(bits, out, &lit, &dist)?;
                }
                _ => return Err("reserved block type 3".into()),
            }
            if last {
                // RFC 7692 §7.2.3.5: BFINAL ends the message's stream.
                break;
            }
        }
        Ok(())
    }

    fn codes(
        &mut self,
        bits: &mut Bits<'_>,
        out: &mut Vec<u8>,
        lit: &Huffman,
        dist: &Huffman,
    ) -> Result<(), String> {
        loop {
            let symbol = lit.decode(bits)?;
            match symbol {
                0..=255 => out.push(symbol as u8),
                256 => return Ok(()),
                _ => {
                    let i = usize::from(symbol - 257);
                    let base = *LENGTH_BASE.get(i).ok_or("bad length code")?;
                    let len = usize::from(base) + bits.bits(LENGTH_EXTRA[i])? as usize;
                    let d = usize::from(dist.decode(bits)?);
                    let base = *DIST_BASE.get(d).ok_or("bad distance code")?;
                    let distance = usize::from(base) + bits.bits(DIST_EXTRA[d])? as usize;
                    self.max_distance = self.max_distance.max(distance);
                    if distance > self.window {
                        return Err(format!(
                            "distance {distance} is beyond the agreed window of {}",
                            self.window
                        ));
                    }
                    if distance > out.len() {
                        return Err(format!(
                            "distance {distance} reaches before the history ({} bytes)",
                            out.len()
                        ));
                    }
                    for _ in 0..len {
                        out.push(out[out.len() - distance]);
                    }
                }
            }
        }
    }
}

/// RFC 1951 §3.2.7: the code lengths of a dynamic block.
fn dynamic_tables(bits: &mut Bits<'_>) -> Result<(Huffman, Huffman), String> {
    let nlen = bits.bits(5)? as usize + 257;
    let ndist = bits.bits(5)? as usize + 1;
    let ncode = bits.bits(4)? as usize + 4;
    let mut clens = [0u8; 19];
    for &i in CLEN_ORDER.iter().take(ncode) {
        clens[i] = bits.bits(3)? as u8;
    }
    let clen = Huffman::new(&clens);
    let mut lengths = Vec::with_capacity(nlen + ndist);
    while lengths.len() < nlen + ndist {
        let symbol = clen.decode(bits)?;
        let (value, repeat) = match symbol {
            0..=15 => (symbol as u8, 1),
            16 => (
                *lengths.last().ok_or("repeat with no previous length")?,
                3 + bits.bits(2)?,
            ),
            17 => (0, 3 + bits.bits(3)?),
            _ => (0, 11 + bits.bits(7)?),
        };
        for _ in 0..repeat {
            lengths.push(value);
        }
    }
    if lengths.len() != nlen + ndist {
        return Err("code lengths overrun".into());
    }
    Ok((
        Huffman::new(&lengths[..nlen]),
        Huffman::new(&lengths[nlen..]),
    ))
}
