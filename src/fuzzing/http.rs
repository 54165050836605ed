//! Entry points for fuzz targets and the corpus test: each feeds one byte slice through a
//! sans-IO component and asserts its invariants.

use crate::gate::reject::Reject;
use crate::proto::http::request::{parse_head, validate_upgrade, HeadReader, MAX_HEADERS};
use crate::proto::http::response::write_switching_protocols;
use crate::proto::ws::accept::accept_key;

/// `max_request_bytes` when the input is too short to choose one (the SPEC §3 default).
const DEFAULT_MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Feeds `data` through [`HeadReader`] in two chunks and in one, then through
/// [`parse_head`] / [`validate_upgrade`] and the response writers. Panics when an invariant
/// breaks: the head length is within the input, both feedings agree, every answer written is
/// a complete HTTP/1.1 response.
pub fn fuzz_http_request(data: &[u8]) {
    // The first byte picks the split point, the second the size limit (so that 431 is
    // reachable with short inputs); both bytes are also part of the request.
    let split = data
        .first()
        .map_or(0, |b| usize::from(*b) % (data.len() + 1));
    let max_request_bytes = data
        .get(1)
        .map_or(DEFAULT_MAX_REQUEST_BYTES, |b| 16 + usize::from(*b) * 32);

    let mut chunked = HeadReader::new();
    let mut result = chunked.poll(data.get(..split).unwrap_or_default(), max_request_bytes);
    if result == Ok(None) {
        result = chunked.poll(data, max_request_bytes);
    }
    let whole = HeadReader::new().poll(data, max_request_bytes);
    assert_eq!(result, whole, "chunked and one-chunk reads disagree");

    let mut out = Vec::new();
    match whole {
        Ok(None) => {
            assert!(data.len() <= max_request_bytes);
            return;
        }
        Err(e) => Reject::from(e).write(&mut out),
        Ok(Some(head_len)) => {
            assert!(head_len <= data.len());
            assert!(head_len <= max_request_bytes);
            let head = data.get(..head_len).unwrap_or_default();
            assert!(head.ends_with(b"\r\n\r\n"));
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match parse_head(head, &mut headers).and_then(|h| validate_upgrade(&h)) {
                Ok(upgrade) => {
                    let accept = accept_key(upgrade.key);
                    // The Origin stands in for a client-chosen subprotocol: attacker text
                    // that must not break the 101.
                    write_switching_protocols(&mut out, &accept, upgrade.origin);
                }
                Err(e) => Reject::from(e).write(&mut out),
            }
        }
    }
    check_response(&out);
}

/// Asserts `out` is one complete HTTP/1.1 response whose body matches its Content-Length.
fn check_response(out: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(out) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("response does not parse: {other:?}"),
    };
    let content_length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map_or(0, |h| {
            std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(usize::MAX)
        });
    assert_eq!(out.len().checked_sub(head_len), Some(content_length));
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEEDS: &[&[u8]] = &[
        b"",
        b"\x00",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET /chat?access_token=x HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\
          Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\nOrigin: https://a\r\n\r\n\x81\x80abcd",
        b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\
          Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 8\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
    ];

    #[test]
    fn seeds() {
        for seed in SEEDS {
            fuzz_http_request(seed);
        }
    }

    /// A deterministic xorshift generator, so the mutation test needs no dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn mutated_seeds() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for seed in SEEDS {
            for _ in 0..300 {
                let mut data = seed.to_vec();
                let edits = 1 + rng.next() % 4;
                for _ in 0..edits {
                    let r = rng.next();
                    let at = (r >> 8) as usize % (data.len() + 1);
                    match r % 4 {
                        0 if at < data.len() => data[at] = (r >> 32) as u8,
                        1 => data.insert(at, (r >> 40) as u8),
                        2 if at < data.len() => {
                            data.remove(at);
                        }
                        _ => data.insert(at, b"\r\n"[(r >> 16) as usize % 2]),
                    }
                }
                fuzz_http_request(&data);
                // The same bytes after a fixed prefix pick other split points and limits.
                let r = rng.next();
                let mut shifted = vec![(r >> 24) as u8, (r >> 48) as u8];
                shifted.extend_from_slice(&data);
                fuzz_http_request(&shifted);
            }
        }
    }
}
