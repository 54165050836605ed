//! The scale curve of issue #15: resident memory per idle connection, and the public
//! handshake rate while idle connections are held open, at each of a list of connection
//! counts (`WSGATE_BENCH_IDLE`, default 10000, and `WSGATE_BENCH_SCALE`, default
//! 1000,10000,100000). Past [`crate::client::PER_SOURCE`] connections the client spreads
//! them over 127.0.0.2, 127.0.0.3, ... (the ephemeral port range is per source address);
//! the handshake curve's idle sets always do, so that the handshakes dial from 127.0.0.1
//! alone.
//! A point that needs more file descriptors than RLIMIT_NOFILE allows (client and server
//! are separate processes, each holding every connection) is skipped with the reason.

use std::path::Path;

use crate::client::{Client, HANDSHAKE_CONCURRENCY};
use crate::peers::{uws_exe, ROLE_FWS, ROLE_TT};
use crate::report::{group, Measure, Row};
use crate::servers::Server;
use crate::{alternate_all, mint_token, mint_token_for, Res, Settings};

/// File descriptors a process of the bench holds besides its connections (listener,
/// poll, pipes to the servers, stdio, the runtime's own): a generous allowance.
const FD_SLACK: usize = 64;
/// tokio-tungstenite holds ~130 KB per idle connection: past this many it is skipped.
const TT_MAX_IDLE: usize = 20_000;

/// Whether `n` connections (and the handshake rows' concurrent connectors) fit this
/// process's RLIMIT_NOFILE; the reason when not.
fn fits(s: &Settings, n: usize) -> Result<(), String> {
    let need = n + HANDSHAKE_CONCURRENCY + FD_SLACK;
    if need as u64 <= s.nofile {
        return Ok(());
    }
    Err(format!(
        "skipped: needs about {} file descriptors in the client and as many in the server, \
         RLIMIT_NOFILE is {} (the soft limit already raised to the hard limit; raising the \
         hard limit needs CAP_SYS_RESOURCE)",
        group(need as f64),
        group(s.nofile as f64)
    ))
}

/// The local port range (`/proc/sys/net/ipv4/ip_local_port_range`): ports per source
/// address for outgoing connections.
pub(crate) fn ephemeral_ports() -> Option<(u32, u32)> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = range.split_whitespace().map(|p| p.parse().ok());
    Some((it.next()??, it.next()??))
}

/// Public handshakes/s (64 concurrent connectors) while `n` other idle connections are
/// open on the same server, for each `n` of `WSGATE_BENCH_SCALE`: wsgate, fastwebsockets,
/// tokio-tungstenite (up to [`TT_MAX_IDLE`]) and uWebSockets when given, fresh servers per
/// point; each round opens the idle set again on each server in turn (alternating), runs
/// one window, and drops the set.
pub(crate) fn handshake_curve(
    config: &Path,
    s: &Settings,
    client: &mut Client,
    rows: &mut Vec<Row>,
) -> Res<()> {
    if let Some((lo, hi)) = ephemeral_ports() {
        println!(
            "scale rows: ip_local_port_range {lo}-{hi} ({} ports per source address), \
             RLIMIT_NOFILE {}\n",
            group(f64::from(hi.saturating_sub(lo) + 1)),
            group(s.nofile as f64)
        );
    }
    for &n in s.scale.iter().filter(|&&n| n > 0) {
        let label = format!(
            "handshakes/s, {} idle conns held ({HANDSHAKE_CONCURRENCY} conc.)",
            group(n as f64)
        );
        if let Err(reason) = fits(s, n) {
            eprintln!("{label}: {reason}");
            rows.push(Row::skipped(&label, &reason));
            continue;
        }
        let ws = Server::wsgate(config)?;
        let fws = Server::peer("fastwebsockets", ROLE_FWS)?;
        let tt = (n <= TT_MAX_IDLE)
            .then(|| Server::peer("tokio-tungstenite", ROLE_TT))
            .transpose()?;
        let uws = uws_exe()
            .map(|exe| Server::external("uWebSockets", &exe))
            .transpose()?;
        let mut eps = vec![ws.endpoint("/echo"), fws.endpoint("/echo")];
        eps.extend(tt.as_ref().map(|t| t.endpoint("/echo")));
        eps.extend(uws.as_ref().map(|u| u.endpoint("/echo")));
        let mut ms = alternate_all(s, &label, &eps, |ep| {
            client.storm_with_idle(ep, s.window, n)
        })?;
        if tt.is_none() {
            // No figure in the tokio-tungstenite column.
            let absent = Measure {
                rate: f64::NAN,
                ..Measure::default()
            };
            ms.insert(2, absent);
        }
        rows.push(Row::rate(&label, &ms));
    }
    Ok(())
}

/// The idle rows at `n` connections: RSS per idle connection for every peer on the public
/// route, then wsgate's HS256 route with one token and with one token per connection.
pub(crate) fn idle_rows(
    dir: &Path,
    config: &Path,
    (s, n): (&Settings, usize),
    client: &mut Client,
    rows: &mut Vec<Row>,
) -> Res<()> {
    let label = format!("RSS per idle conn (bytes, {} conns)", group(n as f64));
    if let Err(reason) = fits(s, n) {
        eprintln!("{label}: {reason}");
        rows.push(Row::skipped(&label, &reason));
        return Ok(());
    }
    // Fresh servers, so that the caches of earlier rows do not hide the cost.
    let ws = Server::wsgate(config)?;
    let w = client.idle_row(&ws, n)?;
    drop(ws);
    let fws = Server::peer("fastwebsockets", ROLE_FWS)?;
    let f = client.idle_row(&fws, n)?;
    drop(fws);
    // tokio-tungstenite holds ~130 KB per idle connection: past [`TT_MAX_IDLE`] it is skipped.
    let t = if n <= TT_MAX_IDLE {
        let tt = Server::peer("tokio-tungstenite", ROLE_TT)?;
        client.idle_row(&tt, n)?
    } else {
        Measure {
            rate: f64::NAN,
            ..Measure::default()
        }
    };
    let mut idle = vec![w, f, t];
    if let Some(exe) = uws_exe() {
        let uws = Server::external("uWebSockets", &exe)?;
        idle.push(client.idle_row(&uws, n)?);
    }
    rows.push(Row::latency(&label, &idle, |m| {
        Some(m.rate).filter(|r| r.is_finite())
    }));
    // Socket structures are kernel memory: whole machine, both ends, so noisy on a shared box.
    rows.push(Row::latency(
        "  kernel slab per conn, both ends",
        &idle,
        |m| m.slab_per_conn,
    ));
    // Authenticated idle connections (wsgate only): one HS256 token for all of them,
    // then a distinct sub and jti per connection (each its own verified-token record).
    let hs_key = dir.join("hs.secret");
    let same = vec![format!(
        "/auth?access_token={}",
        mint_token(&hs_key, "hs", None)?
    )];
    // 100 more than connections: the warm-up takes the last 100 (see `idle_row_targets`),
    // so every measured connection brings a token the server has not seen.
    let distinct = (0..n + 100)
        .map(|i| {
            let token = mint_token_for(&hs_key, "hs", &format!("idle-{i}"), Some(format!("j{i}")))?;
            Ok(format!("/auth?access_token={token}"))
        })
        .collect::<Res<Vec<String>>>()?;
    for (label, targets) in [
        ("RSS per idle conn, HS256, one token", same),
        ("RSS per idle conn, HS256, own sub+jti", distinct),
    ] {
        let ws = Server::wsgate(config)?;
        let w = client.idle_row_targets(&ws, n, &targets)?;
        drop(ws);
        rows.push(Row::values(label, [Some(w.rate), None, None]));
    }
    Ok(())
}
