//! Entry point for the upstream response fuzz target and its corpus test: the parser of the
//! upstream's answer to the upgrade request (SPEC §5; RFC 6455 §4.1 client side).

use crate::proto::http::client::{
    parse_upstream_response, UpstreamResponse, KEY_LEN, MAX_RELAYED_BODY, MAX_RESPONSE_HEAD,
};
use crate::proto::ws::deflate::{ClientOffer, DeflateConfig, Role};

/// RFC 6455 §1.3's sample key: seeds answer with its accept value
/// (`s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`) to reach the 101 checks.
const KEY: &[u8; KEY_LEN] = b"dGhlIHNhbXBsZSBub25jZQ==";

/// Protocols the request may have offered; the first input byte picks a subset.
const PROTOCOLS: [&str; 3] = ["chat", "superchat", "v2.chat"];

/// The first byte picks the offered protocols (bits 0-2), whether permessage-deflate was
/// offered (bit 3) and in which mode (bit 4), and a split point (bits 5-7); the rest is
/// what the upstream sent. Panics when an invariant breaks: a complete answer lies within
/// the input, is the same whatever follows it and however it was split, selects only an
/// offered protocol and an extension only when one was offered and within what the offer
/// reserved, relays a bounded body and only header values safe to write back.
pub fn fuzz_upstream_response(data: &[u8]) {
    let Some((&selector, buf)) = data.split_first() else {
        return;
    };
    let offered: Vec<&str> = PROTOCOLS
        .iter()
        .enumerate()
        .filter(|(i, _)| selector & (1 << i) != 0)
        .map(|(_, p)| *p)
        .collect();
    let deflate = (selector & 0b1000 != 0).then_some(ClientOffer {
        config: DeflateConfig {
            server_max_window_bits: 15,
            context_takeover: selector & 0b1_0000 == 0,
            min_size: 256,
        },
        no_context_takeover: selector & 0b1_0000 != 0,
    });
    let deflate = deflate.as_ref();
    let whole = parse_upstream_response(buf, KEY, &offered, deflate);
    // A prefix that is already a complete answer must be the whole input's answer.
    let split = usize::from(selector >> 5) * (buf.len() / 8 + 1);
    if let Some(prefix) = buf.get(..split) {
        if let Ok(Some(early)) = parse_upstream_response(prefix, KEY, &offered, deflate) {
            assert_eq!(
                Ok(Some(early)),
                whole,
                "a complete prefix answered otherwise"
            );
        }
    }
    let Ok(Some(answer)) = whole else {
        if whole == Ok(None) {
            assert!(buf.len() <= MAX_RESPONSE_HEAD + MAX_RELAYED_BODY);
        }
        return;
    };
    // Frames (or anything) after the answer change nothing.
    let mut longer = buf.to_vec();
    longer.extend_from_slice(b"\x81\x05hello\r\n\r\nHTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(
        parse_upstream_response(&longer, KEY, &offered, deflate),
        Ok(Some(answer)),
        "bytes after a complete answer changed it"
    );
    match answer {
        UpstreamResponse::Switching {
            protocol,
            extension,
            head_len,
        } => {
            assert!(head_len <= buf.len() && head_len <= MAX_RESPONSE_HEAD);
            assert!(protocol.is_none_or(|p| offered.contains(&p)));
            if let Some(agreement) = extension {
                let Some(offer) = deflate else {
                    panic!("an extension accepted that was never offered");
                };
                // Never more state than the offer reserved before it was sent.
                assert!(agreement.state_cost_as(Role::Client) <= offer.max_cost());
                if offer.no_context_takeover {
                    assert!(
                        agreement.server_no_context_takeover
                            && agreement.client_no_context_takeover
                    );
                }
            }
        }
        UpstreamResponse::Rejected {
            status,
            body,
            www_authenticate,
            retry_after,
            consumed,
        } => {
            assert_ne!(status, 101);
            assert!(consumed <= buf.len());
            assert!(body.len() <= MAX_RELAYED_BODY);
            assert_eq!(buf.get(consumed - body.len()..consumed), Some(body));
            // These go into the client's response head: no line breaks, no controls.
            for value in [www_authenticate, retry_after].into_iter().flatten() {
                assert!(
                    value
                        .bytes()
                        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80),
                    "unsafe header value relayed: {value:?}"
                );
            }
        }
    }
}
