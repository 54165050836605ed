//! RFC 7692 §7.1 from the client's side (SPEC §10 "Proxied routes: each leg negotiates on its
//! own"): the offer the gateway makes to an upstream, and the check of the upstream's answer.

use super::offer::{parse_value, Offer};
use super::{deflate_cost, inflate_cost, Agreement, DeflateConfig, MalformedOffer};
use super::{EXTENSION, MAX_WINDOW_BITS, MIN_WINDOW_BITS};

/// The offer the gateway sends an upstream. It names only what the gateway can honour
/// within `compression.memory`: `client_max_window_bits` (the upstream may narrow our
/// window; zlib honours any width, and below 9 bits we send uncompressed), and, when no
/// state may be kept between messages, both `*_no_context_takeover`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOffer {
    /// `[compression]` as configured.
    pub config: DeflateConfig,
    /// The offer asks for `server_no_context_takeover; client_no_context_takeover` (the
    /// configuration says so, or the memory budget had no room for context state).
    pub no_context_takeover: bool,
}

/// The upstream's `Sec-WebSocket-Extensions` answer is one the gateway cannot accept: an
/// extension it did not offer, two answers, a malformed or unknown parameter, or a
/// configuration the offer excluded (RFC 7692 §7.1: the client fails the connection; here:
/// 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadAnswer;

impl From<MalformedOffer> for BadAnswer {
    fn from(_: MalformedOffer) -> BadAnswer {
        BadAnswer
    }
}

impl ClientOffer {
    /// The `Sec-WebSocket-Extensions` value of the upgrade request.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(EXTENSION.as_bytes());
        if self.no_context_takeover {
            // RFC 7692 §7.1.1.1: the upstream must start each message afresh; §7.1.1.2: we
            // say we will too.
            out.extend_from_slice(b"; server_no_context_takeover; client_no_context_takeover");
        }
        // RFC 7692 §7.1.2.2: without it the upstream may not limit our window.
        out.extend_from_slice(b"; client_max_window_bits");
    }

    /// The most compression state any acceptable answer can make the connection keep: what
    /// is reserved against `compression.memory` before the offer is sent.
    pub fn max_cost(&self) -> usize {
        if self.no_context_takeover {
            return 0;
        }
        deflate_cost(self.window_bits()) + inflate_cost(MAX_WINDOW_BITS)
    }

    /// The widest window we compress with.
    fn window_bits(&self) -> u8 {
        self.config
            .server_max_window_bits
            .clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS)
    }

    /// What an accepted answer means for the gateway (as the client): the agreement, with
    /// our own choices folded in (no takeover of our context when configured so; our window
    /// never wider than configured).
    fn agreement(&self, answer: &Offer) -> Agreement {
        let ours = self.window_bits();
        Agreement {
            server_no_context_takeover: answer.server_no_context_takeover,
            // RFC 7692 §7.1.1.2: a client may always refrain from taking over its context.
            client_no_context_takeover: answer.client_no_context_takeover
                || self.no_context_takeover
                || !self.config.context_takeover,
            server_max_window_bits: answer.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS),
            answer_server_window: false,
            client_max_window_bits: Some(
                answer
                    .client_max_window_bits
                    .flatten()
                    .map_or(ours, |asked| asked.min(ours)),
            ),
            min_size: self.config.min_size,
        }
    }
}

/// RFC 7692 §7.1 and RFC 6455 §4.1 item 5, client side: reads every `Sec-WebSocket-Extensions`
/// value of the upstream's 101. `Ok(None)`: no extension is in use. An answer to an offer
/// never made (`offer` is `None`), another extension, a second permessage-deflate element, a
/// malformed or repeated parameter, a `client_max_window_bits` without a value (§7.1.2.2), or
/// one without `server_no_context_takeover` when the offer asked for it (§7.1.1.1) is refused.
pub fn accept_answer<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    offer: Option<&ClientOffer>,
) -> Result<Option<Agreement>, BadAnswer> {
    let mut accepted: Option<Offer> = None;
    let mut bad = false;
    for value in values {
        // An empty field value names no extension (RFC 7230 §7 empty list elements).
        if value.iter().all(|b| matches!(b, b' ' | b'\t' | b',')) {
            continue;
        }
        parse_value(value, &mut |element| match (element, &accepted) {
            (Some(answer), None) => accepted = Some(answer),
            _ => bad = true,
        })?;
    }
    let Some(answer) = accepted else {
        return if bad { Err(BadAnswer) } else { Ok(None) };
    };
    let Some(offer) = offer else {
        return Err(BadAnswer);
    };
    if bad
        || answer.client_max_window_bits == Some(None)
        || (offer.no_context_takeover && !answer.server_no_context_takeover)
    {
        return Err(BadAnswer);
    }
    Ok(Some(offer.agreement(&answer)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ws::deflate::Role;

    fn config(context_takeover: bool) -> DeflateConfig {
        DeflateConfig {
            server_max_window_bits: 12,
            context_takeover,
            min_size: 64,
        }
    }

    fn offer(no_context_takeover: bool) -> ClientOffer {
        ClientOffer {
            config: config(!no_context_takeover),
            no_context_takeover,
        }
    }

    fn accept(
        values: &[&str],
        offer: Option<&ClientOffer>,
    ) -> Result<Option<Agreement>, BadAnswer> {
        accept_answer(values.iter().map(|v| v.as_bytes()), offer)
    }

    #[test]
    fn offers_as_written() {
        let mut out = Vec::new();
        offer(true).write(&mut out);
        assert_eq!(
            out,
            b"permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits"
        );
        out.clear();
        offer(false).write(&mut out);
        assert_eq!(out, b"permessage-deflate; client_max_window_bits");
        assert_eq!(offer(true).max_cost(), 0);
        assert_eq!(offer(false).max_cost(), deflate_cost(12) + inflate_cost(15));
    }

    #[test]
    fn no_answer_is_no_extension() {
        assert_eq!(accept(&[], Some(&offer(true))), Ok(None));
        assert_eq!(accept(&[""], Some(&offer(true))), Ok(None));
        assert_eq!(accept(&[" , "], None), Ok(None));
    }

    #[test]
    fn answers_within_the_offer_are_accepted() {
        let a = accept(
            &["permessage-deflate; server_no_context_takeover; client_no_context_takeover"],
            Some(&offer(true)),
        )
        .expect("valid")
        .expect("agreed");
        assert!(a.server_no_context_takeover && a.client_no_context_takeover);
        // Our window is the configured one, never wider.
        assert_eq!(a.client_max_window_bits, Some(12));
        assert_eq!(a.state_cost_as(Role::Client), 0);
        // The upstream narrows our window, and names its own (RFC 7692 §7.1.2).
        let a = accept(
            &["PerMessage-Deflate ;server_no_context_takeover; client_max_window_bits=10; server_max_window_bits=\"11\""],
            Some(&offer(true)),
        )
        .expect("valid")
        .expect("agreed");
        assert_eq!(a.client_max_window_bits, Some(10));
        assert_eq!(a.server_max_window_bits, 11);
        // We keep no context of our own in this mode even when the answer leaves it open.
        assert!(a.client_no_context_takeover);
        // With context takeover the upstream may keep its context: our inflater's cost.
        let a = accept(&["permessage-deflate"], Some(&offer(false)))
            .expect("valid")
            .expect("agreed");
        assert!(!a.server_no_context_takeover && !a.client_no_context_takeover);
        assert_eq!(
            a.state_cost_as(Role::Client),
            deflate_cost(12) + inflate_cost(15)
        );
        assert!(a.state_cost_as(Role::Client) <= offer(false).max_cost());
        // An 8-bit window for us is agreed (we then send uncompressed).
        let a = accept(
            &["permessage-deflate; client_max_window_bits=8"],
            Some(&offer(false)),
        )
        .expect("valid")
        .expect("agreed");
        assert_eq!(a.client_max_window_bits, Some(8));
        assert_eq!(a.state_cost_as(Role::Client), inflate_cost(15));
    }

    #[test]
    fn answers_the_gateway_did_not_offer_are_refused() {
        let refused: &[(&[&str], Option<ClientOffer>)] = &[
            // Nothing was offered.
            (&["permessage-deflate"], None),
            // Another extension, alone or beside ours.
            (&["x-webkit-deflate-frame"], Some(offer(true))),
            (
                &["permessage-deflate; server_no_context_takeover, x-foo"],
                Some(offer(true)),
            ),
            // Two answers, in one line or two.
            (
                &["permessage-deflate; server_no_context_takeover, permessage-deflate; server_no_context_takeover"],
                Some(offer(true)),
            ),
            (
                &["permessage-deflate; server_no_context_takeover", "permessage-deflate"],
                Some(offer(true)),
            ),
            // We asked the upstream not to keep its context; it did not agree.
            (&["permessage-deflate"], Some(offer(true))),
            // RFC 7692 §7.1.2.2: the answer's client_max_window_bits has a value.
            (
                &["permessage-deflate; client_max_window_bits"],
                Some(offer(false)),
            ),
            // Malformed, unknown, repeated, out of range.
            (&["permessage-deflate; server_max_window_bits=16"], Some(offer(false))),
            (&["permessage-deflate; server_max_window_bits"], Some(offer(false))),
            (&["permessage-deflate; mystery"], Some(offer(false))),
            (
                &["permessage-deflate; client_no_context_takeover; client_no_context_takeover"],
                Some(offer(false)),
            ),
            (&["permessage-deflate;"], Some(offer(false))),
            (&["permessage-deflate; server_no_context_takeover=1"], Some(offer(false))),
            (&["permessage-deflate x"], Some(offer(false))),
        ];
        for (values, offer) in refused {
            assert_eq!(accept(values, offer.as_ref()), Err(BadAnswer), "{values:?}");
        }
    }
}
