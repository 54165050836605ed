//! Message reassembly (RFC 6455 §5.4) with streaming UTF-8 validation (§8.1) that fails on
//! the first invalid byte, even in the middle of a frame.

use crate::proto::error::ProtocolError;

/// The type of a data message (RFC 6455 §5.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// UTF-8 text (opcode 0x1), already validated.
    Text,
    /// Arbitrary bytes (opcode 0x2).
    Binary,
}

/// After a message with more capacity than this, the buffer is released at once. Smaller
/// buffers are kept between messages (no allocator round trip per message in steady
/// state) and released when the connection goes idle ([`Reassembly::release`]).
pub const RETAINED_CAPACITY: usize = 256 * 1024;

/// Streaming UTF-8 validator: keeps at most 3 bytes of an incomplete sequence between chunks.
#[derive(Debug, Clone, Default)]
pub struct Utf8Validator {
    /// The start of a sequence cut by a chunk boundary.
    pending: [u8; 4],
    /// How many bytes of `pending` are in use (0..=3).
    pending_len: usize,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next chunk; fails as soon as a byte makes the text invalid.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ProtocolError> {
        let mut chunk = chunk;
        // First complete the sequence left over from the previous chunk, byte by byte
        // (at most 3 more bytes: no UTF-8 sequence is longer than 4).
        while self.pending_len > 0 {
            let Some((&byte, rest)) = chunk.split_first() else {
                return Ok(());
            };
            chunk = rest;
            let Some(slot) = self.pending.get_mut(self.pending_len) else {
                // pending_len <= 3 always (see below), so the slot exists.
                return Err(ProtocolError::InvalidUtf8);
            };
            *slot = byte;
            self.pending_len += 1;
            let sequence = self.pending.get(..self.pending_len).unwrap_or(&[]);
            match std::str::from_utf8(sequence) {
                Ok(_) => self.pending_len = 0,
                // The new byte can never continue this sequence: fail now.
                Err(e) if e.error_len().is_some() => return Err(ProtocolError::InvalidUtf8),
                // Still a valid prefix; a 4-byte prefix is always complete or invalid, so
                // this leaves pending_len <= 3.
                Err(_) if self.pending_len < 4 => {}
                Err(_) => return Err(ProtocolError::InvalidUtf8),
            }
        }
        match std::str::from_utf8(chunk) {
            Ok(_) => Ok(()),
            // error_len() == None: the chunk ends inside a sequence that is still a valid
            // prefix (std rejects prefixes that can never complete, such as F4 90 or ED A0).
            Err(e) if e.error_len().is_none() => {
                let tail = chunk.get(e.valid_up_to()..).unwrap_or(&[]);
                match self.pending.get_mut(..tail.len()) {
                    Some(slot) if tail.len() < 4 => {
                        slot.copy_from_slice(tail);
                        self.pending_len = tail.len();
                        Ok(())
                    }
                    _ => Err(ProtocolError::InvalidUtf8),
                }
            }
            Err(_) => Err(ProtocolError::InvalidUtf8),
        }
    }

    /// Ends the message: an incomplete sequence at the end is an error. Resets the validator.
    pub fn finish(&mut self) -> Result<(), ProtocolError> {
        let complete = self.pending_len == 0;
        self.pending_len = 0;
        if complete {
            Ok(())
        } else {
            Err(ProtocolError::InvalidUtf8)
        }
    }

    /// Forgets any pending bytes (a new message starts).
    pub fn reset(&mut self) {
        self.pending_len = 0;
    }
}

/// A data message being reassembled from its frames, in a buffer reused across messages.
#[derive(Debug, Default)]
pub struct Reassembly {
    /// The message in progress, if any.
    kind: Option<MessageKind>,
    /// Sum of the declared payload lengths of the frames accepted so far.
    declared: u64,
    /// The payload received so far (unmasked).
    buffer: Vec<u8>,
    /// Validates text messages as their bytes arrive.
    utf8: Utf8Validator,
}

impl Reassembly {
    /// An empty reassembly buffer (allocates nothing until the first fragment).
    pub fn new() -> Self {
        Self::default()
    }

    /// The kind of the message in progress, if one is.
    pub fn kind(&self) -> Option<MessageKind> {
        self.kind
    }

    /// Sum of the declared payload lengths of the message's frames so far.
    pub fn declared(&self) -> u64 {
        self.declared
    }

    /// Starts a new message (its first frame was accepted).
    pub fn start(&mut self, kind: MessageKind) {
        self.kind = Some(kind);
        self.declared = 0;
        self.buffer.clear();
        self.utf8.reset();
    }

    /// Accounts a frame header of the message in progress against `max_message` (inclusive).
    pub fn admit_frame(&mut self, payload_len: u64, max_message: u64) -> Result<(), ProtocolError> {
        let total = self.declared.saturating_add(payload_len);
        if total > max_message {
            return Err(ProtocolError::MessageTooBig);
        }
        self.declared = total;
        Ok(())
    }

    /// Appends unmasked payload bytes, validating text as they come.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), ProtocolError> {
        if self.kind == Some(MessageKind::Text) {
            self.utf8.feed(chunk)?;
        }
        let need = self.buffer.len() + chunk.len();
        if need > self.buffer.capacity() {
            // Grow by doubling, but never past what the frames declared so far: a 64 KiB
            // message gets 64 KiB, not 128 KiB. Only bytes that arrived are paid for.
            let declared = usize::try_from(self.declared).unwrap_or(usize::MAX);
            let target = (self.buffer.capacity() * 2).min(declared).max(need);
            self.buffer.reserve_exact(target - self.buffer.len());
        }
        self.buffer.extend_from_slice(chunk);
        Ok(())
    }

    /// The final frame is complete: checks the text ends on a whole character and returns
    /// the message. Call [`Reassembly::reset`] once the message has been handled.
    pub fn finish(&mut self) -> Result<(MessageKind, &[u8]), ProtocolError> {
        let kind = self.kind.unwrap_or(MessageKind::Binary);
        if kind == MessageKind::Text {
            self.utf8.finish()?;
        }
        Ok((kind, &self.buffer))
    }

    /// Ends the message in progress; keeps the buffer unless it grew past
    /// [`RETAINED_CAPACITY`].
    pub fn reset(&mut self) {
        self.kind = None;
        self.declared = 0;
        self.utf8.reset();
        if self.buffer.capacity() > RETAINED_CAPACITY {
            self.buffer = Vec::new();
        } else {
            self.buffer.clear();
        }
    }

    /// Gives the buffer's memory back when no message is in progress (an idle connection).
    pub fn release(&mut self) {
        if self.kind.is_none() {
            self.buffer = Vec::new();
        }
    }

    /// Bytes buffered for the message in progress.
    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// The buffer's capacity (for tests and metrics).
    pub fn capacity(&self) -> usize {
        self.buffer.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(chunks: &[&[u8]]) -> Result<(), ProtocolError> {
        let mut v = Utf8Validator::new();
        for c in chunks {
            v.feed(c)?;
        }
        v.finish()
    }

    /// Feeds `bytes` one at a time; returns the index of the byte that failed.
    fn first_failure(bytes: &[u8]) -> Option<usize> {
        let mut v = Utf8Validator::new();
        for (i, b) in bytes.iter().enumerate() {
            if v.feed(std::slice::from_ref(b)).is_err() {
                return Some(i);
            }
        }
        if v.finish().is_err() {
            return Some(bytes.len());
        }
        None
    }

    #[test]
    fn valid_text_in_any_split() {
        let text = "Hello-µ@ßöäüàá-UTF-8!! κόσμε 😀 \u{10FFFF} \u{FFFF}".as_bytes();
        assert_eq!(feed_all(&[text]), Ok(()));
        for split in 0..=text.len() {
            assert_eq!(
                feed_all(&[&text[..split], &text[split..]]),
                Ok(()),
                "split {split}"
            );
        }
        assert_eq!(first_failure(text), None);
        assert_eq!(feed_all(&[]), Ok(()));
        assert_eq!(feed_all(&[b"", b""]), Ok(()));
    }

    #[test]
    fn fails_on_the_first_invalid_byte() {
        // Autobahn 6.4.x: "κόσμε" then F4 90 80 80 (beyond U+10FFFF).
        let mut bytes = "κόσμε".as_bytes().to_vec();
        let prefix = bytes.len();
        bytes.extend_from_slice(&[0xF4, 0x90, 0x80, 0x80, b'e', b'd']);
        assert_eq!(first_failure(&bytes), Some(prefix + 1));
        // ED A0 80 is a surrogate: fails at A0.
        assert_eq!(first_failure(&[b'a', 0xED, 0xA0, 0x80]), Some(2));
        // Overlong: C0 fails at once; E0 80 at the 80.
        assert_eq!(first_failure(&[0xC0, 0x80]), Some(0));
        assert_eq!(first_failure(&[0xE0, 0x80, 0x80]), Some(1));
        assert_eq!(first_failure(&[0xFF]), Some(0));
        // A continuation byte where a sequence should continue is fine; a new lead is not.
        assert_eq!(first_failure(&[0xE2, 0x82, 0x41]), Some(2));
        // Incomplete at the end fails only at finish.
        assert_eq!(first_failure(&[0xE2, 0x82]), Some(2));
        assert_eq!(first_failure(&[0xF0, 0x9F, 0x98]), Some(3));
    }

    #[test]
    fn whole_chunk_failures_are_immediate() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[b'a', 0xF4, 0x90]), Err(ProtocolError::InvalidUtf8));
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[b'a', 0xF4]), Ok(()));
        assert_eq!(v.feed(&[0x90]), Err(ProtocolError::InvalidUtf8));
        // Pending bytes, then a chunk that completes them and carries more.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xF0, 0x9F]), Ok(()));
        assert_eq!(v.feed(&[0x98, 0x80, b'x', 0xC3]), Ok(()));
        assert_eq!(v.feed(&[0xA9]), Ok(()));
        assert_eq!(v.finish(), Ok(()));
        // finish resets.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xC3]), Ok(()));
        assert_eq!(v.finish(), Err(ProtocolError::InvalidUtf8));
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn agrees_with_std_on_every_short_sequence() {
        // Every 1- and 2-byte input, and a sample of 3-byte ones, split at every point.
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for a in 0..=255u8 {
            inputs.push(vec![a]);
            for b in 0..=255u8 {
                inputs.push(vec![a, b]);
            }
        }
        for a in [0xE0u8, 0xED, 0xEF, 0xF0, 0xF4, 0xF5] {
            for b in 0x70..=0xC0u8 {
                for c in [0x41u8, 0x80, 0xBF, 0xC0] {
                    inputs.push(vec![a, b, c]);
                    inputs.push(vec![a, b, c, 0x80]);
                }
            }
        }
        for input in &inputs {
            let expected = std::str::from_utf8(input).is_ok();
            for split in 0..=input.len() {
                let got = feed_all(&[&input[..split], &input[split..]]).is_ok();
                assert_eq!(got, expected, "{input:02x?} split {split}");
            }
            assert_eq!(
                first_failure(input).is_none(),
                expected,
                "{input:02x?} bytewise"
            );
        }
    }

    #[test]
    fn reassembly_bounds_and_releases() {
        let mut r = Reassembly::new();
        r.start(MessageKind::Binary);
        assert_eq!(r.admit_frame(10, 20), Ok(()));
        assert_eq!(r.admit_frame(10, 20), Ok(()));
        assert_eq!(r.admit_frame(1, 20), Err(ProtocolError::MessageTooBig));
        assert_eq!(
            r.admit_frame(u64::MAX, 20),
            Err(ProtocolError::MessageTooBig)
        );
        r.reset();

        r.start(MessageKind::Text);
        assert_eq!(r.push("κό".as_bytes()), Ok(()));
        assert_eq!(r.push(&[0xCF]), Ok(()));
        assert_eq!(r.finish().map(|(k, _)| k), Err(ProtocolError::InvalidUtf8));
        r.reset();

        r.start(MessageKind::Text);
        assert_eq!(r.push(&[b'a'; 1000]), Ok(()));
        let cap = r.capacity();
        assert_eq!(
            r.finish().map(|(k, p)| (k, p.len())),
            Ok((MessageKind::Text, 1000))
        );
        r.reset();
        assert_eq!(r.capacity(), cap, "small buffers are kept");

        r.start(MessageKind::Binary);
        assert_eq!(r.push(&vec![0u8; RETAINED_CAPACITY + 1]), Ok(()));
        r.reset();
        assert_eq!(r.capacity(), 0, "big buffers are released");
        assert!(r.is_empty() && r.kind().is_none());
    }
}
