//! permessage-deflate on proxied routes (SPEC §10 "each leg negotiates on its own; the relay
//! inflates and deflates as needed") through real sockets. tungstenite 0.26 has no
//! permessage-deflate, so the upstream is written here: it reads the gateway's upgrade
//! request, answers with the extension answer the test gives, and speaks RFC 7692 with
//! flate2 directly (the same `Client` codec as the client side, independent of the gateway).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

use crate::support::deflate::{frame, json, open_deflate, read_any, Client, OFFER};
use crate::support::*;

/// The offer the gateway makes with the default `[compression]` (no context takeover).
const GATEWAY_OFFER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits";
/// The upstream's acceptance of it.
const FRESH_ANSWER: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// A raw upstream: answers every upgrade with `answer` as its `Sec-WebSocket-Extensions`
/// (none when `None`), reports the offer it got, then hands the socket to `serve`.
fn upstream<F>(
    answer: Option<&'static str>,
    serve: F,
) -> (SocketAddr, crossbeam_channel::Receiver<Option<String>>)
where
    F: Fn(TcpStream) + Send + Sync + 'static,
{
    upstream_answering(move |_| answer.map(str::to_owned), serve)
}

/// Like [`upstream`], with the answer computed from the offer.
fn upstream_answering<A, F>(
    answer: A,
    serve: F,
) -> (SocketAddr, crossbeam_channel::Receiver<Option<String>>)
where
    A: Fn(Option<&str>) -> Option<String> + Send + Sync + 'static,
    F: Fn(TcpStream) + Send + Sync + 'static,
{
    let answer = Arc::new(answer);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = crossbeam_channel::unbounded();
    let serve = Arc::new(serve);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let (tx, serve, answer) = (tx.clone(), serve.clone(), answer.clone());
            std::thread::spawn(move || {
                stream.set_read_timeout(Some(WAIT)).expect("timeout");
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let header = |name: &str| {
                    head.lines()
                        .filter_map(|l| l.split_once(':'))
                        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.trim().to_owned())
                };
                let key = header("sec-websocket-key").expect("a key");
                let offer = header("sec-websocket-extensions");
                let answer = answer(offer.as_deref());
                let _ = tx.send(offer);
                let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
                let mut reply = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
                );
                if let Some(answer) = &answer {
                    reply.push_str(&format!("Sec-WebSocket-Extensions: {answer}\r\n"));
                }
                reply.push_str("\r\n");
                stream.write_all(reply.as_bytes()).expect("101");
                serve(stream);
            });
        }
    });
    (addr, rx)
}

/// `[compression]` on with its defaults, and off.
const ON: &str = "permessage_deflate = true";
const OFF: &str = "permessage_deflate = false";

/// A gateway with one public upstream route at /echo; `compression` is the body of its
/// `[compression]` section.
fn gateway(upstream: SocketAddr, compression: &str, limits: &str) -> Gateway {
    Gateway::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\n[limits]\nper_ip_handshakes = \"1000/s\"\n{limits}\n[[route]]\npath = \"/echo\"\nupstream = [\"ws://{upstream}/echo\"]\npublic = true\n[compression]\n{compression}\n"
    ))
}

/// Waits for the gateway to close the connection, reading whatever it sends.
fn until_closed(mut s: TcpStream) {
    let _ = s.read_to_end(&mut Vec::new());
}

/// An unmasked upstream frame.
fn server_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame(first, payload, None)
}

/// Reads one whole message to the client: (first frame's first byte, the frames' payloads
/// concatenated, number of frames).
fn read_message(s: &mut TcpStream) -> (u8, Vec<u8>, usize) {
    let (first, mut payload) = read_any(s);
    let mut frames = 1;
    let mut fin = first & 0x80 != 0;
    while !fin {
        let (byte, more) = read_any(s);
        assert_eq!(byte & 0x7f, 0, "a continuation without RSV bits");
        payload.extend_from_slice(&more);
        frames += 1;
        fin = byte & 0x80 != 0;
    }
    (first, payload, frames)
}

/// The next frame to the client is a close with `code`.
fn client_closed_with(s: &mut TcpStream, code: u16) {
    loop {
        let (first, payload) = read_any(s);
        if first & 0x0f == 8 {
            assert_eq!(
                u16::from_be_bytes([payload[0], payload[1]]),
                code,
                "{}",
                String::from_utf8_lossy(&payload[2..])
            );
            return;
        }
    }
}

/// An upstream echo: inflates what the gateway compressed (RSV1), sends each message back
/// compressed when `compress`, plain otherwise.
fn echo(compress: bool, fresh: bool) -> impl Fn(TcpStream) + Send + Sync + 'static {
    move |mut s| {
        let mut codec = Client::new(fresh);
        loop {
            let (first, payload) = read_masked(&mut s);
            match first & 0x0f {
                8 => return,
                1 | 2 => {}
                _ => continue,
            }
            assert_ne!(first & 0x80, 0, "the gateway sends whole messages");
            let message = if first & 0x40 != 0 {
                codec.inflate(&payload)
            } else {
                payload
            };
            let opcode = first & 0x0f;
            let reply = if compress {
                server_frame(0xc0 | opcode, &codec.deflate(&message))
            } else {
                server_frame(0x80 | opcode, &message)
            };
            if s.write_all(&reply).is_err() {
                return;
            }
        }
    }
}

#[test]
fn both_legs_compress_and_the_relay_inflates_and_deflates() {
    let (addr, offers) = upstream(Some(FRESH_ANSWER), |mut s| {
        let mut codec = Client::new(true);
        // A compressed message from the gateway (the client's, inflated and deflated
        // again); it is sent back compressed.
        let (first, payload) = read_masked(&mut s);
        assert_eq!(first, 0xc1, "FIN + RSV1 + text to the upstream");
        let message = codec.inflate(&payload);
        assert_eq!(message, json(60));
        let _ = s.write_all(&server_frame(0xc1, &codec.deflate(&message)));
        // A large plain message in three fragments, then a small one, then the same
        // compressed message in two fragments.
        let big = json(400);
        let thirds: Vec<&[u8]> = big.chunks(big.len() / 3 + 1).collect();
        let _ = s.write_all(&server_frame(0x02, thirds[0]));
        let _ = s.write_all(&server_frame(0x00, thirds[1]));
        let _ = s.write_all(&server_frame(0x80, thirds[2]));
        let _ = s.write_all(&server_frame(0x81, b"tiny"));
        let compressed = codec.deflate(&message);
        let (a, b) = compressed.split_at(compressed.len() / 2);
        let _ = s.write_all(&server_frame(0x41, a));
        let _ = s.write_all(&server_frame(0x89, b"are you there"));
        let _ = s.write_all(&server_frame(0x80, b));
        // The gateway answers the ping (masked, never compressed).
        let (first, payload) = read_masked(&mut s);
        assert_eq!((first, payload.as_slice()), (0x8a, &b"are you there"[..]));
        until_closed(s);
    });
    let gw = gateway(addr, ON, "");
    let (r, mut s) = open_deflate(&gw, OFFER);
    assert_eq!(r.status, 101, "{r:?}");
    assert!(r.header("sec-websocket-extensions").is_some());
    assert_eq!(
        offers.recv_timeout(WAIT).expect("offered"),
        Some(GATEWAY_OFFER.to_owned())
    );
    let mut client = Client::new(true);
    let message = json(60);
    s.write_all(&frame(true, 1, true, &client.deflate(&message)))
        .expect("send");
    let (first, payload, _) = read_message(&mut s);
    assert_eq!(first, 0xc1, "compressed to the client");
    assert!(payload.len() * 3 < message.len());
    assert_eq!(client.inflate(&payload), message);
    // The fragmented plain message comes compressed, fragment by fragment, one stream.
    let (first, payload, frames) = read_message(&mut s);
    assert_eq!(
        (first, frames),
        (0x42, 3),
        "RSV1 on the first fragment only"
    );
    let big = json(400);
    assert!(payload.len() * 3 < big.len());
    assert_eq!(client.inflate(&payload), big);
    // Below min_size: plain.
    assert_eq!(read_message(&mut s), (0x81, b"tiny".to_vec(), 1));
    // The compressed fragments were inflated, then deflated again for the client.
    let (first, payload, frames) = read_message(&mut s);
    assert_eq!((first, frames), (0xc1, 1));
    assert_eq!(client.inflate(&payload), message);
    s.write_all(&frame(true, 8, false, &close_payload(1000, b"")))
        .expect("close");
}

#[test]
fn a_client_without_the_extension_gets_plain_messages() {
    let (addr, _) = upstream(Some(FRESH_ANSWER), echo(true, true));
    let gw = gateway(addr, ON, "");
    let mut s = open(&gw, "/echo", &[]);
    for n in [1, 60, 2000] {
        let message = json(n);
        s.write_all(&frame(true, 1, false, &message)).expect("send");
        // The upstream got it compressed (its echo inflates RSV1) and answered compressed;
        // the client, which did not negotiate, gets it inflated.
        assert_eq!(read_message(&mut s), (0x81, message, 1));
    }
}

#[test]
fn an_upstream_without_the_extension_gets_plain_messages() {
    let (addr, offers) = upstream(None, |mut s| {
        let (first, payload) = read_masked(&mut s);
        assert_eq!(first, 0x81, "no RSV1 toward an upstream that declined");
        let _ = s.write_all(&server_frame(0x81, &payload));
        until_closed(s);
    });
    let gw = gateway(addr, ON, "");
    let (r, mut s) = open_deflate(&gw, OFFER);
    assert!(r.header("sec-websocket-extensions").is_some());
    assert!(offers.recv_timeout(WAIT).expect("offered").is_some());
    let mut client = Client::new(true);
    let message = json(60);
    s.write_all(&frame(true, 1, true, &client.deflate(&message)))
        .expect("send");
    // The plain echo goes to the client compressed.
    let (first, payload, _) = read_message(&mut s);
    assert_eq!(first, 0xc1);
    assert_eq!(client.inflate(&payload), message);
}

#[test]
fn context_takeover_on_the_upstream_leg() {
    let (addr, offers) = upstream(Some("permessage-deflate"), |mut s| {
        let mut codec = Client::new(false);
        let mut sizes = Vec::new();
        for _ in 0..2 {
            let (first, payload) = read_masked(&mut s);
            assert_eq!(first, 0xc1);
            sizes.push(payload.len());
            let message = codec.inflate(&payload);
            let _ = s.write_all(&server_frame(0xc1, &codec.deflate(&message)));
        }
        // The gateway's compressor kept its window: the second refers to the first.
        let verdict: &[u8] = if sizes[1] * 4 < sizes[0] {
            b"kept"
        } else {
            b"lost"
        };
        let _ = s.write_all(&server_frame(0x81, verdict));
        until_closed(s);
    });
    let gw = gateway(
        addr,
        "permessage_deflate = true\ncontext_takeover = true",
        "",
    );
    let mut s = open(&gw, "/echo", &[]);
    assert_eq!(
        offers.recv_timeout(WAIT).expect("offered"),
        Some("permessage-deflate; client_max_window_bits".to_owned())
    );
    let message = json(20);
    for _ in 0..2 {
        s.write_all(&frame(true, 1, false, &message)).expect("send");
        // The upstream's second message refers back to its first: inflated right.
        assert_eq!(read_message(&mut s), (0x81, message.clone(), 1));
    }
    assert_eq!(read_message(&mut s), (0x81, b"kept".to_vec(), 1));
}

#[test]
fn rsv1_or_bad_deflate_from_the_upstream_is_1014() {
    // RSV1 without the extension agreed on the upstream leg (the client's leg has it).
    let (addr, _) = upstream(None, |mut s| {
        let _ = s.write_all(&server_frame(0xc1, &Client::new(true).deflate(b"Hello")));
        until_closed(s);
    });
    let gw = gateway(addr, ON, "");
    let (_, mut s) = open_deflate(&gw, OFFER);
    client_closed_with(&mut s, 1014);
    // Agreed, but on a continuation, or not DEFLATE at all.
    for bad in [
        [server_frame(0x01, b"ab"), server_frame(0xc0, b"cd")].concat(),
        server_frame(0xc2, &[0xff, 0xff, 0xff]),
    ] {
        let (addr, _) = upstream(Some(FRESH_ANSWER), move |mut s| {
            let _ = s.write_all(&bad);
            until_closed(s);
        });
        let gw = gateway(addr, ON, "");
        let mut s = open(&gw, "/echo", &[]);
        client_closed_with(&mut s, 1014);
    }
}

/// Peak resident memory of process `pid` in KiB (Linux `VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM")
}

#[test]
fn a_decompression_bomb_from_the_upstream_is_1009_to_both_legs() {
    // 24 MiB of zeros in about 24 KiB: twenty-four times max_message.
    let bomb = Arc::new(Client::new(true).deflate(&vec![0u8; 24 << 20]));
    assert!(bomb.len() < 64 * 1024);
    let (closes_tx, closes) = crossbeam_channel::unbounded();
    let (addr, _) = upstream(Some(FRESH_ANSWER), move |mut s| {
        // The first message decides: "bomb" gets the bomb, anything else an echo.
        let (first, payload) = read_masked(&mut s);
        let message = if first & 0x40 != 0 {
            Client::new(true).inflate(&payload)
        } else {
            payload
        };
        if message == b"bomb" {
            let _ = s.write_all(&server_frame(0xc2, &bomb));
            let (first, payload) = read_masked(&mut s);
            assert_eq!(first & 0x0f, 8);
            let _ = closes_tx.send(u16::from_be_bytes([payload[0], payload[1]]));
            return;
        }
        let _ = s.write_all(&server_frame(0x81, &message));
        echo(true, true)(s);
    });
    let gw = gateway(addr, ON, "max_message = \"1MiB\"");
    let (_, mut victim) = open_deflate(&gw, OFFER);
    let mut victim_client = Client::new(true);
    let message = json(30);
    victim
        .write_all(&frame(true, 1, false, &message))
        .expect("send");
    let (first, payload, _) = read_message(&mut victim);
    assert_eq!(first, 0xc1);
    assert_eq!(victim_client.inflate(&payload), message);
    let before = peak_rss_kib(gw.child.id());
    for _ in 0..3 {
        let mut attacker = open(&gw, "/echo", &[]);
        attacker
            .write_all(&frame(true, 1, false, b"bomb"))
            .expect("send");
        client_closed_with(&mut attacker, 1009);
        // SPEC §5: a close the gateway decides goes to both legs.
        assert_eq!(closes.recv_timeout(WAIT), Ok(1009));
        // The victim keeps its compressed echo.
        victim
            .write_all(&frame(true, 1, true, &victim_client.deflate(&message)))
            .expect("send");
        let (first, payload, _) = read_message(&mut victim);
        assert_eq!(first, 0xc1);
        assert_eq!(victim_client.inflate(&payload), message);
    }
    // Never inflated whole: the peak grew by far less than one bomb (24 MiB).
    let after = peak_rss_kib(gw.child.id());
    assert!(
        after - before < 12 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
}

#[test]
fn an_answer_the_gateway_did_not_offer_is_502() {
    for (compression, answer) in [
        // Compression off for the route: nothing was offered.
        (false, "permessage-deflate"),
        // Another extension.
        (true, "x-webkit-deflate-frame"),
        // The gateway asked for no context takeover; the upstream did not agree.
        (true, "permessage-deflate"),
        // RFC 7692 §7.1: an unknown parameter.
        (
            true,
            "permessage-deflate; server_no_context_takeover; bogus=1",
        ),
    ] {
        let (addr, _) = upstream(Some(answer), |_| {});
        let gw = gateway(addr, if compression { ON } else { OFF }, "");
        let (r, _) = request(&gw, upgrade_request("/echo", &[]).as_bytes());
        assert_eq!(r.status, 502, "{answer}");
    }
}

#[test]
fn the_upstream_offer_keeps_within_the_memory_budget() {
    // Context takeover: an offer that lets the upstream keep its context reserves the most
    // state an answer can lead to (compressor 372 KiB + decompressor 48 KiB at window 15).
    // With room for one such reservation, the next offer asks for no context takeover.
    let (addr, offers) = upstream(
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        until_closed,
    );
    let gw = gateway(
        addr,
        "permessage_deflate = true\ncontext_takeover = true\nmemory = \"600KiB\"",
        "",
    );
    let full = Some("permessage-deflate; client_max_window_bits".to_owned());
    let fresh = Some(GATEWAY_OFFER.to_owned());
    let first = open(&gw, "/echo", &[]);
    assert_eq!(offers.recv_timeout(WAIT).expect("offered"), full);
    // The answer keeps no state: the reservation is given back whole, so the next
    // connection's offer fits again.
    let second = open(&gw, "/echo", &[]);
    assert_eq!(offers.recv_timeout(WAIT).expect("offered"), full);
    drop((first, second));
    // This upstream keeps its context whenever the offer lets it.
    let (addr, offers) = upstream_answering(
        |offer| {
            Some(if offer?.contains("server_no_context_takeover") {
                FRESH_ANSWER.to_owned()
            } else {
                "permessage-deflate".to_owned()
            })
        },
        until_closed,
    );
    let gw = gateway(
        addr,
        "permessage_deflate = true\ncontext_takeover = true\nmemory = \"600KiB\"",
        "",
    );
    let mut first = open(&gw, "/echo", &[]);
    assert_eq!(offers.recv_timeout(WAIT).expect("offered"), full);
    // This answer keeps both contexts: the budget is held, the next offer asks for none.
    let second = open(&gw, "/echo", &[]);
    assert_eq!(offers.recv_timeout(WAIT).expect("offered"), fresh);
    drop(second);
    // Once the first connection is gone its reservation comes back.
    first
        .write_all(&frame(true, 8, false, &close_payload(1000, b"")))
        .expect("close");
    client_closed_with(&mut first, 1000);
    drop(first);
    let recovered = (0..100).any(|_| {
        let s = open(&gw, "/echo", &[]);
        let offer = offers.recv_timeout(WAIT).expect("offered");
        drop(s);
        offer == full
    });
    assert!(recovered, "the reservation was never given back");
}

#[test]
fn large_upstream_messages_are_relayed_in_pieces_within_the_bounds() {
    // A plain frame four times max_frame goes to a client that negotiated the extension as
    // compressed fragments (one piece of max_frame at a time), which inflate to the whole;
    // a compressed message whose compressed form passes max_message is 1009 before any of
    // it is inflated.
    let big = json(5000);
    let sent = big.clone();
    let (addr, _) = upstream(Some(FRESH_ANSWER), move |mut s| {
        let (_, payload) = read_masked(&mut s);
        if payload == b"big" {
            let _ = s.write_all(&server_frame(0x81, &sent));
        } else {
            let junk = vec![0xa5u8; 40 * 1024];
            let _ = s.write_all(&server_frame(0x42, &junk));
            let _ = s.write_all(&server_frame(0x80, &junk));
        }
        until_closed(s);
    });
    let gw = gateway(addr, ON, "max_frame = \"64KiB\"\nmax_message = \"64KiB\"");
    assert!(big.len() > 4 * 64 * 1024);
    let (_, mut s) = open_deflate(&gw, OFFER);
    s.write_all(&frame(true, 1, false, b"big")).expect("send");
    let (first, payload, frames) = read_message(&mut s);
    assert_eq!(first, 0x41, "RSV1 on the first fragment");
    assert!(frames >= 4, "{frames} frames");
    assert!(payload.len() * 3 < big.len());
    assert_eq!(Client::new(true).inflate(&payload), big);
    let (_, mut s) = open_deflate(&gw, OFFER);
    s.write_all(&frame(true, 1, false, b"junk")).expect("send");
    client_closed_with(&mut s, 1009);
}

/// xorshift64: the same sequence on both sides of a test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }
}

/// The upstream's messages of [`random_traffic_round_trips_through_the_relay`]: (opcode,
/// payload, compressed by the upstream, fragments).
fn random_messages(seed: u64) -> Vec<(u8, Vec<u8>, bool, usize)> {
    let mut rng = Rng(seed);
    (0..40)
        .map(|_| {
            let len = match rng.below(20) {
                0 => rng.below(3) * 150_000 + 60_000,
                1..=5 => 2_000 + rng.below(40_000),
                _ => rng.below(2_000),
            };
            let text = rng.below(2) == 0;
            // ASCII for text (valid UTF-8 however it is split), patterned bytes otherwise.
            let payload: Vec<u8> = (0..len)
                .map(|i| {
                    if text {
                        b"{\"k\":12, \"v\":\"abcabc\"}"[(i + rng.below(3)) % 22]
                    } else {
                        (i % 251) as u8 ^ (rng.below(4) as u8)
                    }
                })
                .collect();
            let compressed = len > 0 && rng.below(2) == 0;
            let fragments = 1 + rng.below(4);
            (if text { 1 } else { 2 }, payload, compressed, fragments)
        })
        .collect()
}

#[test]
fn random_traffic_round_trips_through_the_relay() {
    // Every mix the relay meets: compressed or not by the upstream, one to four fragments
    // (compressed data split anywhere), pings between fragments, frames over max_frame;
    // the client with or without the extension, with or without context takeover.
    for (seed, client_offers, takeover) in [
        (7, true, false),
        (11, false, false),
        (13, true, true),
        (17, false, true),
    ] {
        let (addr, _) = upstream_answering(
            move |offer| {
                offer?;
                Some(
                    if takeover {
                        "permessage-deflate"
                    } else {
                        FRESH_ANSWER
                    }
                    .to_owned(),
                )
            },
            move |mut s| {
                let mut codec = Client::new(!takeover);
                let mut rng = Rng(seed ^ 0xabcdef);
                for (opcode, payload, compressed, fragments) in random_messages(seed) {
                    let data = if compressed {
                        codec.deflate(&payload)
                    } else {
                        payload
                    };
                    let size = data.len() / fragments + 1;
                    let pieces: Vec<&[u8]> = if data.is_empty() {
                        vec![&[]]
                    } else {
                        data.chunks(size).collect()
                    };
                    for (i, piece) in pieces.iter().enumerate() {
                        let fin = if i + 1 == pieces.len() { 0x80 } else { 0 };
                        let first = if i == 0 {
                            opcode | if compressed { 0x40 } else { 0 }
                        } else {
                            0
                        };
                        if s.write_all(&server_frame(fin | first, piece)).is_err() {
                            return;
                        }
                        if rng.below(4) == 0 {
                            let _ = s.write_all(&server_frame(0x89, b"ping"));
                        }
                    }
                }
                until_closed(s);
            },
        );
        let compression = if takeover {
            "permessage_deflate = true\ncontext_takeover = true"
        } else {
            ON
        };
        let gw = gateway(
            addr,
            compression,
            "max_frame = \"64KiB\"\nmax_message = \"1MiB\"",
        );
        let mut s = if client_offers {
            open_deflate(&gw, OFFER).1
        } else {
            open(&gw, "/echo", &[])
        };
        let mut client = Client::new(!takeover);
        for (i, (opcode, payload, _, _)) in random_messages(seed).into_iter().enumerate() {
            let (first, data, _) = read_message(&mut s);
            assert_eq!(first & 0x0f, opcode, "message {i}");
            let got = if first & 0x40 != 0 {
                assert!(client_offers, "RSV1 to a client without the extension");
                client.inflate(&data)
            } else {
                data
            };
            assert!(
                got == payload,
                "seed {seed} message {i}: {} bytes, expected {}",
                got.len(),
                payload.len()
            );
        }
    }
}

#[test]
fn a_gateway_answer_waits_for_the_relayed_message_and_its_compressor() {
    // RFC 6455 §5.4 and RFC 7692 §7.2.1: the upstream's message goes to the client
    // compressed fragment by fragment (one DEFLATE stream, context kept between
    // messages); the gateway's answer to a refresh sent meanwhile (a public route: "no
    // token to refresh") waits until that message's last fragment, and is compressed
    // after it with the same context (min_size 1 byte).
    let big = json(200);
    let sent = big.clone();
    let (addr, _) = upstream(None, move |mut s| {
        let (a, b) = sent.split_at(sent.len() / 2);
        let _ = s.write_all(&server_frame(0x01, a));
        // The client's ordinary message after its refresh: the refresh was handled.
        let (first, payload) = read_masked(&mut s);
        assert_eq!((first, payload.as_slice()), (0x81, &b"go on"[..]));
        let _ = s.write_all(&server_frame(0x80, b));
        until_closed(s);
    });
    let gw = gateway(
        addr,
        "permessage_deflate = true\ncontext_takeover = true\nmin_size = \"1B\"",
        "",
    );
    let (r, mut s) = open_deflate(&gw, OFFER);
    assert_eq!(r.status, 101, "{r:?}");
    let mut client = Client::new(false);
    let (first, mut data) = read_any(&mut s);
    assert_eq!(first, 0x41, "RSV1 + text, not final");
    s.write_all(&frame(
        true,
        1,
        false,
        br#"{"type":"wsgate.refresh","token":"x"}"#,
    ))
    .expect("refresh");
    s.write_all(&frame(true, 1, false, b"go on")).expect("send");
    let (first, rest) = read_any(&mut s);
    assert_eq!(first, 0x80, "the relayed message ends first");
    data.extend_from_slice(&rest);
    assert_eq!(client.inflate(&data), big);
    let (first, answer, frames) = read_message(&mut s);
    assert_eq!((first, frames), (0xc1, 1), "the answer, compressed");
    let v: serde_json::Value =
        serde_json::from_slice(&client.inflate(&answer)).expect("json answer");
    assert_eq!(v["type"], "wsgate.refresh_failed", "{v}");
    s.write_all(&frame(true, 8, false, &close_payload(1000, b"")))
        .expect("close");
}
