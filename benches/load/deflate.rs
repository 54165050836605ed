//! The deflate rows (SPEC §10, `WSGATE_BENCH_ROWS=deflate`): a 1 KiB JSON text message
//! echoed by one wsgate with `[compression]` on, by 100 connections that negotiated
//! permessage-deflate (the client sends the message compressed, the echo comes back
//! compressed and its length is checked) against 100 connections on the same server that
//! did not. The rows measure wsgate alone (its wsgate column "deflate", its tokio-tung
//! column "plain"): messages/s, the server's CPU per message, and the bytes on the wire
//! per message each way.
//!
//! With `WSGATE_BENCH_UWS_DEFLATE=/path/to/BenchEchoDeflate` (a uWebSockets echo server
//! built like the `WSGATE_BENCH_UWS` one, see `peers.rs`, but with
//! `.compression = uWS::CompressOptions(uWS::SHARED_COMPRESSOR | uWS::SHARED_DECOMPRESSOR)`
//! and `ws->send(message, opCode, true)`: no context takeover, every echo compressed),
//! uWebSockets joins the row in its own column, measured in the same alternation with the
//! same compressed frames; its echo's compressed length is read once from a probe
//! connection (its compressor is not wsgate's, so the bytes differ) and then checked on
//! every echo.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use wsgate::proto::ws::deflate::{negotiate, DeflateConfig, PerMessageDeflate};
use wsgate::proto::ws::frame::{parse_header, write_masked_frame, OpCode};

use crate::client::{Client, Payload, MASK};
use crate::report::Row;
use crate::servers::{Endpoint, Server};
use crate::{alternate, Res, Settings, ECHO_CONNS, WSGATE_CONFIG};

/// Env var naming a uWebSockets echo binary with permessage-deflate on (module text).
const UWS_DEFLATE_VAR: &str = "WSGATE_BENCH_UWS_DEFLATE";

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
    let uws = match std::env::var_os(UWS_DEFLATE_VAR).filter(|v| !v.is_empty()) {
        Some(exe) => Some(Server::external("uWebSockets deflate", Path::new(&exe))?),
        None => {
            eprintln!(
                "deflate rows: no uWebSockets column; set {UWS_DEFLATE_VAR}=/path/to/BenchEchoDeflate to add it"
            );
            None
        }
    };
    let Some(uws) = uws else {
        let [d, p] = alternate(s, "deflate", &pair, |ep| {
            let payload = if ep.extensions.is_some() {
                &deflated
            } else {
                &plain
            };
            client.echo_row(ep, s.window, ECHO_CONNS, payload, 1)
        })?;
        push_rows(rows, [&d, &p], None, &deflated, &plain, echo.len(), None);
        return Ok(());
    };
    let uws_ep = Endpoint {
        extensions: Some(OFFER),
        ..uws.endpoint("/echo")
    };
    let uws_echo = probe_echo_len(uws_ep.addr, deflated.frame())?;
    let uws_payload = Payload::text_frame(deflated.frame().to_vec(), uws_echo.1, true);
    let [d_ep, p_ep] = pair;
    let three = [d_ep, p_ep, uws_ep];
    let [d, p, u] = alternate(s, "deflate", &three, |ep| {
        let payload = match (ep.extensions.is_some(), ep.pid == uws.pid) {
            (_, true) => &uws_payload,
            (true, false) => &deflated,
            (false, false) => &plain,
        };
        client.echo_row(ep, s.window, ECHO_CONNS, payload, 1)
    })?;
    push_rows(
        rows,
        [&d, &p],
        Some(&u),
        &deflated,
        &plain,
        echo.len(),
        Some(uws_echo.0),
    );
    Ok(())
}

/// The rows: wsgate with the extension (wsgate column), without it (tokio-tung column),
/// uWebSockets with it when measured (its own column).
fn push_rows(
    rows: &mut Vec<Row>,
    [d, p]: [&crate::report::Measure; 2],
    u: Option<&crate::report::Measure>,
    deflated: &Payload,
    plain: &Payload,
    echo_len: usize,
    uws_echo_len: Option<usize>,
) {
    rows.push(Row::deflate_rate(
        "deflate 100 conn x 1 KiB JSON: msg/s",
        d,
        p,
        u,
    ));
    let pick = |f: fn(&crate::report::Measure) -> Option<f64>| [f(d), None, f(p), u.and_then(f)];
    rows.push(Row::values4("  round trip p50 (us)", pick(|m| m.p50_us)));
    rows.push(Row::values4("  round trip p99 (us)", pick(|m| m.p99_us)));
    let to_server = deflated.frame().len() as f64;
    rows.push(Row::values4(
        "  bytes on the wire per message, to the server",
        [
            Some(to_server),
            None,
            Some(plain.frame().len() as f64),
            u.map(|_| to_server),
        ],
    ));
    rows.push(Row::values4(
        "  bytes on the wire per message, echoed",
        [
            Some(echo_len as f64),
            None,
            Some((plain.frame().len() - MASK.len()) as f64),
            uws_echo_len.map(|n| n as f64),
        ],
    ));
}

/// One connection offering [`OFFER`] to `addr`, one `frame` sent: the echo's frame
/// length and its payload length (RSV1 required).
fn probe_echo_len(addr: SocketAddr, frame: &[u8]) -> Res<(usize, u64)> {
    let err = |e: std::io::Error| format!("uWebSockets deflate probe: {e}");
    let mut s = TcpStream::connect(addr).map_err(err)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(err)?;
    let request = format!(
        "GET /echo HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: {OFFER}\r\n\r\n"
    );
    s.write_all(request.as_bytes()).map_err(err)?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).map_err(err)?;
        if n == 0 {
            return Err("uWebSockets deflate probe: closed during the upgrade".into());
        }
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 101") || !head.contains("permessage-deflate") {
        return Err(format!(
            "uWebSockets deflate probe: no permessage-deflate in {:?}",
            head.lines().next().unwrap_or("")
        ));
    }
    got.drain(..head_end);
    s.write_all(frame).map_err(err)?;
    loop {
        if let Ok(Some((h, header_len))) = parse_header(&got) {
            if h.rsv & 0b100 == 0 {
                return Err("uWebSockets deflate probe: the echo is not compressed".into());
            }
            return Ok((header_len + h.payload_len as usize, h.payload_len));
        }
        let n = s.read(&mut buf).map_err(err)?;
        if n == 0 {
            return Err("uWebSockets deflate probe: closed before the echo".into());
        }
        got.extend_from_slice(&buf[..n]);
    }
}
