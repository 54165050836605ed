//! The deflate rows (SPEC §10, `WSGATE_BENCH_ROWS=deflate`): a 1 KiB JSON text message
//! echoed by one wsgate with `[compression]` on, by 100 connections that negotiated
//! permessage-deflate (the client sends the message compressed, the echo comes back
//! compressed and its length is checked) against 100 connections on the same server that
//! did not. The rows measure wsgate alone (its wsgate column "deflate", its tokio-tung
//! column "plain"): messages/s, the server's CPU per message, and the bytes on the wire
//! per message each way.

use std::fs;
use std::path::Path;

use wsgate::proto::ws::deflate::{negotiate, DeflateConfig, PerMessageDeflate};
use wsgate::proto::ws::frame::{parse_header, write_masked_frame, OpCode};

use crate::client::{Client, Payload, MASK};
use crate::report::Row;
use crate::servers::{Endpoint, Server};
use crate::{alternate, Res, Settings, ECHO_CONNS, WSGATE_CONFIG};

/// The size of the JSON message.
const JSON_LEN: usize = 1024;
/// The offer of the deflate connections (what a browser sends, RFC 7692 §7.1.2.2).
const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// A JSON array of small objects, padded with whitespace to exactly `len` bytes.
fn json_message(len: usize) -> Vec<u8> {
    let mut s = String::from("[");
    let mut i = 0;
    loop {
        let item = format!(r#"{{"id":{i},"symbol":"ABC","price":12.5,"side":"buy"}},"#);
        if s.len() + item.len() + 1 > len {
            break;
        }
        s.push_str(&item);
        i += 1;
    }
    s.pop();
    while s.len() + 1 < len {
        s.push(' ');
    }
    s.push(']');
    s.into_bytes()
}

/// SPEC §10 rows: see the module's text.
pub(crate) fn deflate_rows(
    dir: &Path,
    s: &Settings,
    client: &mut Client,
    rows: &mut Vec<Row>,
) -> Res<()> {
    let config = dir.join("wsgate-deflate.toml");
    let text = format!("{WSGATE_CONFIG}\n[compression]\npermessage_deflate = true\n");
    fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
    let ws = Server::wsgate(&config)?;
    let json = json_message(JSON_LEN);
    // What both sides agree with the default [compression]; the gateway's own codec
    // prepares the client's compressed frame and the exact echo it must send back (no
    // context takeover: every message compresses the same).
    let deflate_config = DeflateConfig {
        server_max_window_bits: 15,
        context_takeover: false,
        min_size: 256,
    };
    let agreement = negotiate([OFFER.as_bytes()], &deflate_config)
        .map_err(|_| "malformed offer")?
        .ok_or("no agreement")?;
    let mut frame = Vec::new();
    PerMessageDeflate::client(agreement, None).deflate_frame(
        OpCode::Text,
        &json,
        true,
        Some(MASK),
        &mut frame,
    );
    let mut echo = Vec::new();
    PerMessageDeflate::new(agreement, None).deflate_frame(
        OpCode::Text,
        &json,
        true,
        None,
        &mut echo,
    );
    let echo_payload = parse_header(&echo)
        .ok()
        .flatten()
        .map_or(0, |(h, _)| h.payload_len);
    let deflated = Payload::text_frame(frame, echo_payload, true);
    let mut plain_frame = Vec::new();
    write_masked_frame(&mut plain_frame, true, OpCode::Text, &json, MASK);
    let plain = Payload::text_frame(plain_frame, json.len() as u64, false);
    let pair = [
        Endpoint {
            name: "deflate",
            extensions: Some(OFFER),
            ..ws.endpoint("/echo")
        },
        Endpoint {
            name: "plain",
            ..ws.endpoint("/echo")
        },
    ];
    let [d, p] = alternate(s, "deflate", &pair, |ep| {
        let payload = if ep.extensions.is_some() {
            &deflated
        } else {
            &plain
        };
        client.echo_row(ep, s.window, ECHO_CONNS, payload, 1)
    })?;
    rows.push(Row::pair_rate(
        "deflate 100 conn x 1 KiB JSON: msg/s",
        &d,
        &p,
    ));
    rows.push(Row::pair("  round trip p50 (us)", &d, &p, |m| m.p50_us));
    rows.push(Row::pair("  round trip p99 (us)", &d, &p, |m| m.p99_us));
    let bytes = |label: &str, deflate: usize, plain: usize| {
        Row::values(label, [Some(deflate as f64), None, Some(plain as f64)])
    };
    rows.push(bytes(
        "  bytes on the wire per message, to wsgate",
        deflated.frame().len(),
        plain.frame().len(),
    ));
    rows.push(bytes(
        "  bytes on the wire per message, echoed",
        echo.len(),
        plain.frame().len() - MASK.len(),
    ));
    Ok(())
}
