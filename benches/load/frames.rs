//! What the bench client reads back: server frames, of which only headers are parsed
//! (payloads are checked against a fill byte where a row asks).

use wsgate::proto::ws::frame::{parse_header, write_masked_frame, OpCode, MAX_HEADER_LEN};

use crate::client::MASK;
use crate::Res;

/// What an echo row sends: one prebuilt frame, and what its echo must look like.
pub(crate) struct Payload {
    /// The masked client frame.
    pub(crate) frame: Vec<u8>,
    /// The echo's expected shape.
    pub(crate) expect: Expect,
}

impl Payload {
    /// `len` bytes of `fill` in one `opcode` frame; echoes are checked for type and length.
    pub(crate) fn new(opcode: OpCode, fill: u8, len: usize) -> Payload {
        let mut frame = Vec::new();
        write_masked_frame(&mut frame, true, opcode, &vec![fill; len], MASK);
        Payload {
            frame,
            expect: Expect {
                opcode: opcode as u8,
                len: len as u64,
                fill: None,
                compressed: false,
            },
        }
    }

    /// A prebuilt masked text `frame` whose echo is a text frame of `echo_len` payload
    /// bytes, compressed (RSV1, RFC 7692 §6) when `compressed`.
    pub(crate) fn text_frame(frame: Vec<u8>, echo_len: u64, compressed: bool) -> Payload {
        Payload {
            frame,
            expect: Expect {
                opcode: OpCode::Text as u8,
                len: echo_len,
                fill: None,
                compressed,
            },
        }
    }

    /// The masked frame sent.
    pub(crate) fn frame(&self) -> &[u8] {
        &self.frame
    }

    /// Like [`Payload::new`], and every echoed payload byte is checked as well.
    pub(crate) fn checked(opcode: OpCode, fill: u8, len: usize) -> Payload {
        let mut payload = Payload::new(opcode, fill, len);
        payload.expect.fill = Some(fill);
        payload
    }
}

/// Server frames: only headers are parsed, payloads are skipped.
#[derive(Default)]
pub(crate) struct FrameReader {
    /// A header split across reads.
    carry: [u8; MAX_HEADER_LEN],
    carry_len: usize,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// The current frame's opcode, FIN bit, RSV1 bit and length.
    pub(crate) opcode: u8,
    fin: bool,
    rsv1: bool,
    pub(crate) len: u64,
    /// Bytes of the current frame's payload that differ from the expected fill.
    wrong: u64,
}

/// What every echoed data frame must be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expect {
    /// The opcode that was sent (1 text, 2 binary).
    pub(crate) opcode: u8,
    /// The payload length that was sent.
    pub(crate) len: u64,
    /// The payload's one repeated byte, when the payload is checked.
    pub(crate) fill: Option<u8>,
    /// The echo is compressed (RSV1, RFC 7692 §6) and `len` is its compressed length.
    pub(crate) compressed: bool,
}

/// What a chunk of input completed.
#[derive(Default)]
pub(crate) struct Seen {
    /// Data frames of the expected length.
    pub(crate) data: usize,
    /// A close frame arrived.
    pub(crate) close: bool,
}

impl FrameReader {
    /// Consumes `input`; counts complete frames into `seen`. Data frames must match
    /// `expect` (when given).
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        expect: Option<&Expect>,
        seen: &mut Seen,
    ) -> Res<()> {
        while !input.is_empty() {
            if self.remaining > 0 {
                let k = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                if let Some(fill) = expect.and_then(|e| e.fill) {
                    if matches!(self.opcode, 1 | 2) {
                        self.wrong += input[..k].iter().filter(|&&b| b != fill).count() as u64;
                    }
                }
                self.remaining -= k as u64;
                input = &input[k..];
                if self.remaining == 0 {
                    self.complete(expect, seen)?;
                }
                continue;
            }
            let (header, used) = if self.carry_len == 0 {
                match parse_header(input) {
                    Ok(Some(parsed)) => parsed,
                    Ok(None) => {
                        self.carry[..input.len()].copy_from_slice(input);
                        self.carry_len = input.len();
                        return Ok(());
                    }
                    Err(e) => return Err(format!("bad server frame: {e:?}")),
                }
            } else {
                let take = (MAX_HEADER_LEN - self.carry_len).min(input.len());
                self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&input[..take]);
                match parse_header(&self.carry[..self.carry_len + take]) {
                    Ok(Some((header, len))) => {
                        let used = len - self.carry_len;
                        self.carry_len = 0;
                        (header, used)
                    }
                    // Less than a whole header even with all of `input`.
                    Ok(None) => {
                        self.carry_len += take;
                        return Ok(());
                    }
                    Err(e) => return Err(format!("bad server frame: {e:?}")),
                }
            };
            if header.mask.is_some() {
                return Err("server frame is masked".into());
            }
            input = &input[used..];
            self.opcode = header.opcode;
            self.fin = header.fin;
            self.rsv1 = header.rsv & 0b100 != 0;
            self.len = header.payload_len;
            self.remaining = header.payload_len;
            self.wrong = 0;
            if self.remaining == 0 {
                self.complete(expect, seen)?;
            }
        }
        Ok(())
    }

    fn complete(&mut self, expect: Option<&Expect>, seen: &mut Seen) -> Res<()> {
        match self.opcode {
            0..=2 => {
                if let Some(e) = expect {
                    if self.opcode != e.opcode || !self.fin {
                        return Err(format!(
                            "echo frame opcode {} fin {}, sent opcode {} fin true",
                            self.opcode, self.fin, e.opcode
                        ));
                    }
                    if self.rsv1 != e.compressed {
                        return Err(format!(
                            "echo RSV1 {}, expected {}",
                            self.rsv1, e.compressed
                        ));
                    }
                    if self.len != e.len {
                        return Err(format!("echo of {} bytes, sent {}", self.len, e.len));
                    }
                    if self.wrong > 0 {
                        return Err(format!(
                            "echo of {} bytes has {} bytes that differ from what was sent",
                            self.len, self.wrong
                        ));
                    }
                }
                seen.data += 1;
            }
            8 => seen.close = true,
            _ => {} // ping / pong
        }
        Ok(())
    }
}
