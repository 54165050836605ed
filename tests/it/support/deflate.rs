//! The client side of permessage-deflate (RFC 7692 §7.2), written with flate2 directly
//! (tungstenite 0.26 has no deflate): raw DEFLATE, sync flush, the 0x00 0x00 0xff 0xff tail
//! removed on send and appended on receive. Shared by deflate.rs, deflate_proxy.rs and
//! autobahn_deflate.rs.

use std::net::TcpStream;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use super::{raw_frame, request, upgrade_request, Gateway, Response, CLIENT_KEY};

/// What browsers send.
pub(crate) const OFFER: &str =
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits";

/// The client side of the extension.
pub(crate) struct Client {
    compress: Compress,
    decompress: Decompress,
    /// Reset the compressor after each message (`client_no_context_takeover`).
    fresh_compress: bool,
    /// Reset the decompressor after each message (`server_no_context_takeover`).
    fresh_inflate: bool,
}

impl Client {
    /// Both windows 15 bits; `fresh`: no context takeover either way.
    pub(crate) fn new(fresh: bool) -> Client {
        Client::with(15, 15, fresh, fresh)
    }

    /// A client that compresses with a `compress_bits` window and inflates with an
    /// `inflate_bits` one (RFC 7692 §7.1.2: what the answer's `client_max_window_bits` and
    /// `server_max_window_bits` say), resetting each context after every message when told.
    pub(crate) fn with(
        compress_bits: u8,
        inflate_bits: u8,
        fresh_compress: bool,
        fresh_inflate: bool,
    ) -> Client {
        Client {
            compress: Compress::new_with_window_bits(Compression::default(), false, compress_bits),
            decompress: Decompress::new_with_window_bits(false, inflate_bits),
            fresh_compress,
            fresh_inflate,
        }
    }

    /// RFC 7692 §7.2.1: compress, sync flush, remove the tail.
    pub(crate) fn deflate(&mut self, message: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(message.len() + 64);
        let start = self.compress.total_in();
        loop {
            let consumed = (self.compress.total_in() - start) as usize;
            let before = out.len();
            self.compress
                .compress_vec(
                    &message[consumed.min(message.len())..],
                    &mut out,
                    FlushCompress::Sync,
                )
                .expect("compress");
            if out.len() < out.capacity()
                && (self.compress.total_in() - start) as usize >= message.len()
            {
                break;
            }
            if out.len() == before || out.len() == out.capacity() {
                out.reserve(out.capacity() + 64);
            }
        }
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        if self.fresh_compress {
            self.compress.reset();
        }
        out
    }

    /// RFC 7692 §7.2.2: append the tail, inflate.
    pub(crate) fn inflate(&mut self, payload: &[u8]) -> Vec<u8> {
        self.try_inflate(payload).expect("inflate")
    }

    /// [`Client::inflate`], returning zlib's complaint instead of panicking.
    pub(crate) fn try_inflate(&mut self, payload: &[u8]) -> Result<Vec<u8>, String> {
        let mut input = payload.to_vec();
        input.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = Vec::with_capacity(4096);
        let start_in = self.decompress.total_in();
        loop {
            let used = (self.decompress.total_in() - start_in) as usize;
            self.decompress
                .decompress_vec(&input[used..], &mut out, FlushDecompress::Sync)
                .map_err(|e| e.to_string())?;
            if (self.decompress.total_in() - start_in) as usize >= input.len()
                && out.len() < out.capacity()
            {
                break;
            }
            out.reserve(out.capacity());
        }
        if self.fresh_inflate {
            self.decompress.reset(false);
        }
        Ok(out)
    }
}

pub(crate) use super::read_any;

/// A masked client frame with RSV1 set when `compressed`.
pub(crate) fn frame(fin: bool, opcode: u8, compressed: bool, payload: &[u8]) -> Vec<u8> {
    let first = (u8::from(fin) << 7) | (u8::from(compressed) << 6) | opcode;
    raw_frame(first, payload, Some(CLIENT_KEY))
}

/// A JSON array of `n` small records (about 50 bytes each).
pub(crate) fn json(n: usize) -> Vec<u8> {
    let mut s = String::from("[");
    for i in 0..n {
        s.push_str(&format!(
            r#"{{"id":{i},"symbol":"ABC","price":12.5,"side":"buy"}},"#
        ));
    }
    s.push(']');
    s.into_bytes()
}

/// Opens /echo with one extra header line (an offer).
pub(crate) fn open_deflate(gw: &Gateway, offer: &str) -> (Response, TcpStream) {
    request(gw, upgrade_request("/echo", &[offer]).as_bytes())
}
