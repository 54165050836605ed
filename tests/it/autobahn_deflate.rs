//! Autobahn|Testsuite cases 12.x.x and 13.x.x (permessage-deflate, RFC 7692), ported: the
//! fuzzingclient itself needs Python 2, which this machine does not have (docs/testing.md).
//!
//! Autobahn's client sends, per case, messages of one size (16 B to 128 KiB), compressed and
//! auto-fragmented into frames of 0 (none), 256, 1024, 4096 or 32768 bytes, waits for each
//! echo and compares it byte for byte; 12.x uses its default offer on five data sets, 13.x
//! one data set (JSON text) under seven offers. Here the offers are the exact header values
//! Autobahn's `PerMessageDeflateOffer` writes, the answer is checked the way its client
//! accepts one and against RFC 7692 §7.1, and the client is written here with flate2 (not the
//! gateway's deflate module). That the gateway honours what it answered is checked by a strict
//! reader (support/raw_inflate.rs): every distance within the agreed window, nothing taken
//! from an earlier message under `server_no_context_takeover`. Autobahn sends 1000 messages
//! per case; here each case sends fewer (40 for small sizes down to 2 for large), and every
//! size × fragmentation × offer combination runs.

use std::io::Write;
use std::net::TcpStream;

use crate::support::deflate::{read_any, Client};
use crate::support::raw_inflate::WindowCheck;
use crate::support::*;

/// Autobahn's MSG_SIZES: (payload length, auto-fragment size).
const MSG_SIZES: [(usize, usize); 18] = [
    (16, 0),
    (64, 0),
    (256, 0),
    (1024, 0),
    (4096, 0),
    (8192, 0),
    (16384, 0),
    (32768, 0),
    (65536, 0),
    (131072, 0),
    (8192, 256),
    (16384, 256),
    (32768, 256),
    (65536, 256),
    (131072, 256),
    (131072, 1024),
    (131072, 4096),
    (131072, 32768),
];

/// One client offer as Autobahn builds it: (requestNoContextTakeover, requestMaxWindowBits).
type Offer = (bool, u8);

/// The 13.x categories (autobahn-testsuite 0.8.2 and later): the offers of each client.
const CATEGORIES_13: [&[Offer]; 7] = [
    &[(false, 0)],
    &[(true, 0)],
    &[(false, 9)],
    &[(false, 15)],
    &[(true, 9)],
    &[(true, 15)],
    &[(true, 9), (true, 0), (false, 0)],
];

/// Up to 0.8.1, 13.3, 13.5 and 13.7 asked for 8 bits (RFC 7692 allows 8; zlib cannot
/// compress within it).
const CATEGORIES_13_BEFORE_0_8_2: [&[Offer]; 3] = [
    &[(false, 8)],
    &[(true, 8)],
    &[(true, 8), (true, 0), (false, 0)],
];

/// `PerMessageDeflateOffer.get_extension_string()` with its defaults
/// (accept_no_context_takeover and accept_max_window_bits true): the client's own hints
/// first, then what it asks of the server.
fn offer_string(&(no_context_takeover, max_window_bits): &Offer) -> String {
    let mut s =
        String::from("permessage-deflate; client_no_context_takeover; client_max_window_bits");
    if no_context_takeover {
        s.push_str("; server_no_context_takeover");
    }
    if max_window_bits != 0 {
        s.push_str(&format!("; server_max_window_bits={max_window_bits}"));
    }
    s
}

/// The client's header: its offers joined by ", " (13.7 sends three).
fn offers_header(offers: &[Offer]) -> String {
    let list: Vec<String> = offers.iter().map(offer_string).collect();
    list.join(", ")
}

/// A parsed `Sec-WebSocket-Extensions` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Answer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    client_max_window_bits: Option<u8>,
}

/// Checks an answer to `offers` as Autobahn's client does (`PerMessageDeflateResponse.parse`:
/// one permessage-deflate element, the four known parameters at most once each, flags
/// without a value, window sizes 9..=15; 8 too for the clients that offered it) and as
/// RFC 7692 §7.1 requires of the server: the answer accepts the first offer (the gateway
/// accepts any well-formed one), so a `server_no_context_takeover` asked for is answered
/// (§7.1.1.1), `server_max_window_bits` asked for is answered with the same or a smaller
/// value (§7.1.2.1), and `client_max_window_bits` only appears when offered (§7.1.2.2; every
/// Autobahn offer names it).
fn check_answer(header: &str, offers: &[Offer]) -> Result<Answer, String> {
    let first = offers.first().ok_or("no offer")?;
    let smallest = if offers.iter().any(|o| o.1 == 8) {
        8
    } else {
        9
    };
    if header.contains(',') {
        return Err(format!("more than one element: {header:?}"));
    }
    let mut parts = header.split(';').map(str::trim);
    if parts.next() != Some("permessage-deflate") {
        return Err(format!("not permessage-deflate: {header:?}"));
    }
    let mut answer = Answer {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: None,
        client_max_window_bits: None,
    };
    let mut seen = Vec::new();
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (param, None),
        };
        if seen.contains(&name) {
            return Err(format!("{name} twice"));
        }
        seen.push(name);
        let bits = || -> Result<u8, String> {
            let v = value.ok_or(format!("{name} without a value"))?;
            let n: u8 = v.parse().map_err(|_| format!("{name}={v}"))?;
            if v.starts_with('0') || !(smallest..=15).contains(&n) {
                return Err(format!("{name}={v} out of range"));
            }
            Ok(n)
        };
        match name {
            "server_no_context_takeover" | "client_no_context_takeover" if value.is_some() => {
                return Err(format!("{name} with a value"))
            }
            "server_no_context_takeover" => answer.server_no_context_takeover = true,
            "client_no_context_takeover" => answer.client_no_context_takeover = true,
            "server_max_window_bits" => answer.server_max_window_bits = Some(bits()?),
            "client_max_window_bits" => answer.client_max_window_bits = Some(bits()?),
            _ => return Err(format!("unknown parameter {name:?}")),
        }
    }
    if first.0 && !answer.server_no_context_takeover {
        return Err("server_no_context_takeover was asked for and not answered".into());
    }
    if first.1 != 0 && answer.server_max_window_bits.is_none_or(|b| b > first.1) {
        return Err(format!(
            "server_max_window_bits={} was asked for, answered {:?}",
            first.1, answer.server_max_window_bits
        ));
    }
    Ok(answer)
}

/// A deterministic pseudo-random sequence (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What a case sends: Autobahn takes successive slices of a data file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Data {
    /// JSON-like UTF-8 text with multi-byte characters (13.x: json_data1; 12.1).
    Json,
    /// Binary records from a small set of templates: compressible, with repeats further
    /// apart than 512 bytes (12.2's bitmap).
    Records,
    /// Random bytes: compression makes them larger (12.5's PDF).
    Noise,
}

/// About 256 KiB of `kind`, twice over (so that a slice may wrap).
fn corpus(kind: Data) -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::new();
    let words = [
        "Größe",
        "price",
        "naïve",
        "€",
        "日本語",
        "symbol",
        "quote",
        "🙂",
        "side",
    ];
    while out.len() < 256 * 1024 {
        match kind {
            Data::Json => {
                let i = out.len();
                let w = words[rng.below(words.len())];
                let v = rng.below(100_000);
                out.extend_from_slice(
                    format!(
                        r#"{{"id":{i},"{w}":{v},"tag":"{}","ok":true}},"#,
                        words[v % 9]
                    )
                    .as_bytes(),
                );
            }
            Data::Records => {
                let template = rng.below(24) as u8;
                let mut record = [0u8; 96];
                for (j, b) in record.iter_mut().enumerate() {
                    *b = template
                        .wrapping_mul(37)
                        .wrapping_add((j as u8).wrapping_mul(11));
                }
                record[rng.below(96)] = rng.next() as u8;
                out.extend_from_slice(&record);
            }
            Data::Noise => out.extend_from_slice(&rng.next().to_le_bytes()),
        }
    }
    let again = out.clone();
    out.extend_from_slice(&again);
    out
}

/// Successive messages of `len` bytes from a corpus (text slices end on a character
/// boundary, so they may be up to 3 bytes shorter).
struct Slicer {
    corpus: Vec<u8>,
    text: bool,
    at: usize,
}

impl Slicer {
    fn new(kind: Data) -> Slicer {
        Slicer {
            corpus: corpus(kind),
            text: kind == Data::Json,
            at: 0,
        }
    }

    fn next(&mut self, len: usize) -> Vec<u8> {
        let half = self.corpus.len() / 2;
        let mut end = self.at + len;
        if self.text {
            while std::str::from_utf8(&self.corpus[self.at..end]).is_err() {
                end -= 1;
            }
        }
        let message = self.corpus[self.at..end].to_vec();
        self.at = end % half;
        if self.text {
            while std::str::from_utf8(&self.corpus[self.at..half]).is_err() {
                self.at += 1;
            }
        }
        message
    }
}

/// The gateway as docs/testing.md configures it for an Autobahn run, with compression on.
fn autobahn_gateway(compression: &str) -> Gateway {
    Gateway::start(&format!(
        "{}\n[compression]\npermessage_deflate = true\n{compression}\n",
        echo_config(
            2,
            "",
            "max_frame = \"16MiB\"\nmax_message = \"16MiB\"\nmessages = \"1000000/s\"\nbytes = \"100GiB/s\""
        )
    ))
}

/// Messages per case: Autobahn sends 1000; here fewer as they grow, at least 2 so that
/// context takeover between messages is exercised at every size.
fn count(len: usize) -> usize {
    (65536 / len).clamp(2, 40)
}

/// The client's side of what was agreed (as Autobahn's `PerMessageDeflate` sets itself up
/// from the answer) and the strict reader for what the gateway sends.
fn client_for(answer: &Answer) -> (Client, WindowCheck) {
    let server_bits = answer.server_max_window_bits.unwrap_or(15);
    let client = Client::with(
        answer.client_max_window_bits.unwrap_or(15).max(9),
        server_bits.max(9),
        answer.client_no_context_takeover,
        answer.server_no_context_takeover,
    );
    let check = WindowCheck::new(server_bits, !answer.server_no_context_takeover);
    (client, check)
}

/// Sends one compressed message as Autobahn does: the compressed payload cut into frames
/// of `fragment` bytes (0: one frame), RSV1 on the first only (RFC 7692 §6), each frame
/// with its own mask key.
fn send_compressed(s: &mut TcpStream, opcode: u8, compressed: &[u8], fragment: usize, n: usize) {
    let chunks: Vec<&[u8]> = if fragment == 0 || compressed.len() <= fragment {
        vec![compressed]
    } else {
        compressed.chunks(fragment).collect()
    };
    let mut wire = Vec::with_capacity(compressed.len() + chunks.len() * 14);
    for (i, chunk) in chunks.iter().enumerate() {
        let fin = u8::from(i + 1 == chunks.len()) << 7;
        let first = if i == 0 { fin | 0x40 | opcode } else { fin };
        let key = ((n * 7919 + i) as u32)
            .wrapping_mul(0x9e37_79b9)
            .to_be_bytes();
        wire.extend_from_slice(&raw_frame(first, chunk, Some(key)));
    }
    s.write_all(&wire).expect("send");
}

/// Reads one whole message from the gateway: (opcode, compressed, payload), checking
/// RSV1 only on the first frame and RSV2/RSV3 never (RFC 7692 §6, RFC 6455 §5.2).
fn read_message(s: &mut TcpStream) -> (u8, bool, Vec<u8>) {
    let (first, mut payload) = read_any(s);
    assert_eq!(first & 0x30, 0, "RSV2/RSV3 set: {first:#x}");
    let opcode = first & 0x0f;
    assert!(opcode == 1 || opcode == 2, "a data frame, got {first:#x}");
    let mut fin = first & 0x80 != 0;
    while !fin {
        let (next, more) = read_any(s);
        assert_eq!(next & 0x7f, 0, "a plain continuation, got {next:#x}");
        payload.extend_from_slice(&more);
        fin = next & 0x80 != 0;
    }
    (opcode, first & 0x40 != 0, payload)
}

/// One Autobahn case: a connection with `offers`, `count(len)` messages of `len` bytes
/// auto-fragmented at `fragment`, each echoed as sent; then a clean close (1000, as
/// Autobahn's expectedClose). Returns the answer.
fn run_case(
    gw: &Gateway,
    (header, offers): (&str, &[Offer]),
    (len, fragment): (usize, usize),
    slicer: &mut Slicer,
) -> Answer {
    let case = format!("offers {header:?}, {len} B, fragments of {fragment}");
    let extension = format!("Sec-WebSocket-Extensions: {header}");
    let (r, mut s) = request(gw, upgrade_request("/echo", &[&extension]).as_bytes());
    assert_eq!(r.status, 101, "{case}: {r:?}");
    let answered = r
        .header("sec-websocket-extensions")
        .unwrap_or_else(|| panic!("{case}: declined, Autobahn reports UNIMPLEMENTED"));
    let answer = check_answer(answered, offers).unwrap_or_else(|e| panic!("{case}: {e}"));
    let (mut client, mut check) = client_for(&answer);
    // flate2 checks the context: a fresh decompressor fails on a distance before the
    // message. It cannot check a window (see raw_inflate.rs): the strict reader does.
    let strict = answer.server_max_window_bits.is_some_and(|b| b < 15);
    let opcode = if slicer.text { 1 } else { 2 };
    for n in 0..count(len) {
        let message = slicer.next(len);
        send_compressed(&mut s, opcode, &client.deflate(&message), fragment, n);
        let (got, compressed, payload) = read_message(&mut s);
        assert_eq!(got, opcode, "{case}: message {n} came back as another type");
        let echoed = if compressed {
            let inflated = client
                .try_inflate(&payload)
                .unwrap_or_else(|e| panic!("{case}: message {n} does not inflate: {e}"));
            if strict {
                let read = check
                    .message(&payload)
                    .unwrap_or_else(|e| panic!("{case}, answer {answered:?}, message {n}: {e}"));
                assert!(read == inflated, "{case}: the strict reader disagrees");
            }
            inflated
        } else {
            payload
        };
        assert!(
            echoed == message,
            "{case}: message {n} ({} bytes) came back different ({} bytes)",
            message.len(),
            echoed.len()
        );
    }
    s.write_all(&raw_frame(
        0x88,
        &close_payload(1000, b""),
        Some(CLIENT_KEY),
    ))
    .expect("close");
    expect_closed_with(&mut s, 1000);
    answer
}

/// Every row of MSG_SIZES under each category's offers, on one data set.
fn run_categories(gw: &Gateway, categories: &[&[Offer]], kind: Data) -> Vec<Answer> {
    let mut answers = Vec::new();
    for offers in categories {
        let mut slicer = Slicer::new(kind);
        let header = offers_header(offers);
        for row in MSG_SIZES {
            answers.push(run_case(gw, (&header, offers), row, &mut slicer));
        }
    }
    answers
}

#[test]
fn autobahn_12_default_offer_on_text_records_and_noise() {
    for takeover in [false, true] {
        let gw = autobahn_gateway(&format!("context_takeover = {takeover}"));
        for kind in [Data::Json, Data::Records, Data::Noise] {
            let answers = run_categories(&gw, &[&[(false, 0)]], kind);
            // The client hinted client_no_context_takeover; the gateway keeps its own
            // context only when configured to.
            assert!(answers
                .iter()
                .all(|a| a.server_no_context_takeover != takeover));
        }
    }
}

#[test]
fn autobahn_13_offers_with_context_takeover_off() {
    let gw = autobahn_gateway("context_takeover = false");
    let answers = run_categories(&gw, &CATEGORIES_13, Data::Json);
    assert!(answers.iter().all(|a| a.server_no_context_takeover));
}

#[test]
fn autobahn_13_offers_with_context_takeover_on() {
    let gw = autobahn_gateway("context_takeover = true");
    let answers = run_categories(&gw, &CATEGORIES_13, Data::Json);
    // 13.1, 13.3 and 13.4 do not ask for server_no_context_takeover: the gateway keeps its
    // context there, and honours the request in the others (RFC 7692 §7.1.1.1).
    let rows = MSG_SIZES.len();
    for (category, chunk) in answers.chunks(rows).enumerate() {
        let asked = CATEGORIES_13[category][0].0;
        assert!(chunk.iter().all(|a| a.server_no_context_takeover == asked));
    }
}

#[test]
fn autobahn_13_offers_of_8_bit_windows_before_0_8_2() {
    for takeover in [false, true] {
        let gw = autobahn_gateway(&format!("context_takeover = {takeover}"));
        run_categories(&gw, &CATEGORIES_13_BEFORE_0_8_2, Data::Json);
    }
}

#[test]
fn browser_offers_and_a_narrower_configured_window() {
    // Not an Autobahn case: Autobahn's offers always hint client_no_context_takeover, so
    // they never make the gateway inflate with a context kept between messages; a
    // browser's offer does. With a 10-bit window configured, the gateway limits its own
    // window unasked and the client's because it was offered without a value (RFC 7692
    // §7.1.2.1, §7.1.2.2); the client compresses within it and keeps its context.
    let gw = autobahn_gateway("context_takeover = true\nserver_max_window_bits = 10");
    let cases: [(&str, Offer, &str); 3] = [
        (
            "permessage-deflate; client_max_window_bits",
            (false, 0),
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=10",
        ),
        (
            &offer_string(&(false, 15)),
            (false, 15),
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=10",
        ),
        (
            &offer_string(&(true, 9)),
            (true, 9),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=10",
        ),
    ];
    for (header, offer, expected) in cases {
        let mut slicer = Slicer::new(Data::Records);
        for row in MSG_SIZES {
            let answer = run_case(&gw, (header, &[offer]), row, &mut slicer);
            let written = check_answer(expected, &[offer]).expect("expected answer");
            assert_eq!(answer, written, "{header}");
        }
    }
}

#[test]
fn the_checks_fail_a_gateway_that_breaks_its_answer() {
    // Answers Autobahn's client or RFC 7692 §7.1 refuse.
    for (answer, offers) in [
        (
            "permessage-deflate; server_max_window_bits=12",
            &[(false, 9)][..],
        ),
        ("permessage-deflate", &[(false, 9)]),
        (
            "permessage-deflate; client_max_window_bits=15",
            &[(true, 0)],
        ),
        (
            "permessage-deflate; server_max_window_bits=8",
            &[(false, 9)],
        ),
        (
            "permessage-deflate; server_max_window_bits=09",
            &[(false, 0)],
        ),
        ("permessage-deflate; client_max_window_bits", &[(false, 0)]),
        (
            "permessage-deflate; client_no_context_takeover=1",
            &[(false, 0)],
        ),
        (
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            &[(false, 0)],
        ),
        ("permessage-deflate; mystery", &[(false, 0)]),
        ("permessage-deflate, permessage-deflate", &[(false, 0)]),
        ("x-webkit-deflate-frame", &[(false, 0)]),
    ] {
        assert!(check_answer(answer, offers).is_err(), "{answer:?} passed");
    }
    assert!(check_answer(
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=8",
        &[(true, 8), (false, 0)]
    )
    .is_ok());

    // A 15-bit compressor on data that repeats further apart than 512 bytes: the strict
    // reader refuses it for a 9-bit agreement, and accepts a 9-bit compressor's output.
    let message = Slicer::new(Data::Records).next(16384);
    let wide = Client::with(15, 15, true, true).deflate(&message);
    let mut strict = WindowCheck::new(9, false);
    let refused = strict
        .message(&wide)
        .expect_err("a 15-bit stream read as 9-bit");
    assert!(refused.contains("beyond the agreed window"), "{refused}");
    assert_eq!(
        WindowCheck::new(15, false).message(&wide),
        Ok(message.clone())
    );
    let narrow = Client::with(9, 9, true, true).deflate(&message);
    let mut strict = WindowCheck::new(9, false);
    assert_eq!(strict.message(&narrow), Ok(message.clone()));
    assert!(strict.max_distance <= 512 && strict.max_distance > 64);

    // A message that refers to the one before it: refused by a fresh decompressor and by
    // the strict reader without context, accepted with it.
    let mut sender = Client::with(15, 15, false, false);
    let first = sender.deflate(&message);
    let second = sender.deflate(&message);
    let mut fresh = Client::with(15, 15, true, true);
    assert_eq!(fresh.try_inflate(&first), Ok(message.clone()));
    assert!(fresh.try_inflate(&second).is_err());
    let mut without = WindowCheck::new(15, false);
    assert!(without.message(&first).is_ok() && without.message(&second).is_err());
    let mut with = WindowCheck::new(15, true);
    assert!(with.message(&first).is_ok());
    assert_eq!(with.message(&second), Ok(message));
}
