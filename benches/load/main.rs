//! Load bench (`cargo bench --bench load`): the wsgate binary against two peers, the
//! idiomatic tokio-tungstenite echo server (`accept_async`, `split`,
//! `try_filter(..).forward(..)`, as in tokio-tungstenite's own `examples/echo-server.rs`)
//! and fastwebsockets' echo server example (hyper upgrade, `FragmentCollector`), all as
//! child processes with one thread serving connections, all driven by the same
//! single-threaded mio client that writes raw masked frames and only parses headers of
//! what comes back (`client.rs`; the peers are in `peers.rs`).
//!
//! Rows: echo round trips (100 connections x 32 B text, one in flight each), pipelined echo
//! (100 connections x 16 in flight x 1 KiB binary), bulk echo (10 connections x 64 KiB
//! binary), handshakes per second (connect, upgrade, close handshake; public route for all
//! servers; HS256 and EdDSA query tokens for wsgate, the EdDSA one twice: a distinct token
//! per handshake, which is the verification's real cost, and one token repeated, which a
//! per-worker cache of verified tokens answers), and resident memory per idle connection at
//! 10,000 connections (public route for all servers; for wsgate also on the HS256 route,
//! with one token for every connection and with a distinct `sub`/`jti` per connection). Measurements alternate between the servers; the best of
//! `WSGATE_BENCH_ROUNDS` (default 2) is kept. `WSGATE_BENCH_SECS` (default 3) is the length
//! of each measurement window, after a 0.5 s warm-up. `WSGATE_BENCH_IDLE` (default 10000)
//! sets the idle connection count, or a list of counts for the scale curve of issue #15
//! (`1000,10000,100000`; 0 skips the rows). Above [`client::PER_SOURCE`] connections the
//! client binds its sockets to 127.0.0.2, 127.0.0.3, ... (one source address per
//! `PER_SOURCE` connections) so that they fit the ephemeral port range; RLIMIT_NOFILE is
//! raised to the hard limit, which must exceed the count (client and each server are
//! separate processes). tokio-tungstenite is skipped above 20,000 idle connections (it
//! holds some 130 KB per connection). And
//! `WSGATE_BENCH_ROWS=echo,pipelined,bulk,handshake,auth,proxy,deflate,tls,idle,scale` picks
//! rows (default all).
//!
//! The tls rows (`tls.rs`) measure wss: wsgate with `[tls]` next to tokio-tungstenite
//! behind tokio-rustls, the same rustls server config (ring) and certificate, each also
//! over plain ws in the same alternation; the TLS cost is the difference of server CPU per
//! operation. The scale rows (`scale.rs`) are the handshake rate while 1,000 / 10,000 /
//! 100,000 (`WSGATE_BENCH_SCALE`) idle connections stay open on the server. A point of the
//! idle or scale rows whose connections do not fit RLIMIT_NOFILE is skipped with the
//! reason printed.
//!
//! The proxy rows put the tokio-tungstenite server behind wsgate (an upstream route,
//! `/proxy`) and compare client -> wsgate -> tokio-tungstenite with client ->
//! tokio-tungstenite directly, alternating against the same server process: the 32 B
//! round trip (100 connections, and 1 connection for the unloaded latency) and the
//! pipelined 1 KiB scenario. Their wsgate column is "via wsgate", their tokio-tungstenite
//! column "direct"; every echoed payload is checked byte for byte.
//!
//! The deflate rows (SPEC §10, `WSGATE_BENCH_ROWS=deflate`, `deflate.rs`) echo a 1 KiB
//! JSON text message on a wsgate with `[compression]` on: 100 connections that negotiated
//! permessage-deflate (sent compressed, the echo comes back compressed and its length is
//! checked) against 100 connections on the same server that did not. tokio-tungstenite
//! 0.26 and fastwebsockets 0.10 have no permessage-deflate, so no peer negotiates it: the
//! rows measure wsgate alone, its wsgate column "deflate", its tokio-tung column "plain":
//! messages/s, the server's CPU per message and the bytes on the wire per message each way.
//!
//! Each cell also shows the server's CPU use (all its threads, user + system) during the
//! window and its CPU per operation (CPU-seconds / messages or handshakes), and the last
//! column the client's CPU: a server below 100% while the client is at 100% means the row
//! measured the client, not the server.

// A load bench is a clock reader by nature; the sans-IO rule of clippy.toml is for src/.
#![allow(clippy::disallowed_methods)]

mod client;
mod deflate;
mod frames;
mod peers;
mod report;
mod scale;
mod servers;
mod tls;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wsgate::cli::token::{mint, MintOptions};
use wsgate::proto::ws::frame::OpCode;

use client::{Client, Payload, HANDSHAKE_CONCURRENCY};
use peers::{uws_exe, ROLE_FWS, ROLE_TT, UWS_VAR};
use report::{group, pct, print_table, Measure, Row};
use servers::{Endpoint, Server};

/// Env var that turns this executable into one of the peer servers (`peers.rs`).
const ROLE_VAR: &str = "WSGATE_BENCH_ROLE";
/// Distinct EdDSA tokens the "distinct token" row cycles through: far more than a
/// per-worker cache of verified tokens holds, so every handshake of that row verifies.
const DISTINCT_TOKENS: usize = 16_384;
/// Warm-up before each measurement window.
pub(crate) const WARMUP: Duration = Duration::from_millis(500);
/// Connections of the round-trip and pipelined rows.
pub(crate) const ECHO_CONNS: usize = 100;
/// Messages in flight per connection in the pipelined row.
pub(crate) const PIPELINE_DEPTH: usize = 16;
/// Connections of the bulk row.
const BULK_CONNS: usize = 10;
/// Payload of the bulk row.
const BULK_SIZE: usize = 64 * 1024;
/// The config the bench gives wsgate: every limit out of the way, one worker.
pub(crate) const WSGATE_CONFIG: &str = r#"[server]
listen = ["127.0.0.1:0"]
workers = 1

[limits]
messages = "10000000/s"
bytes = "100GiB/s"
max_frame = "16MiB"
max_message = "16MiB"
per_ip_connections = 100000
per_ip_handshakes = "1000000/s"
per_ip_auth_failures = "1000000/s"
per_subject_connections = 100000

[[auth.key]]
kid = "ed"
alg = "EdDSA"
public_key = "ed.pub.pem"

[[auth.key]]
kid = "hs"
alg = "HS256"
secret_file = "hs.secret"

[[route]]
path = "/echo"
backend = "echo"
public = true

[[route]]
path = "/auth"
backend = "echo"
"#;
/// The route appended to [`WSGATE_CONFIG`] once the upstream's address is known.
const PROXY_PATH: &str = "/proxy";
/// What the goals of the proxy rows ask: via/direct throughput at least this...
const PROXY_MIN_RATIO: f64 = 0.60;
/// ...and via p50 minus direct p50 below this, in microseconds.
const PROXY_MAX_ADDED_P50_US: f64 = 50.0;

pub(crate) type Res<T> = Result<T, String>;

fn main() {
    match std::env::var(ROLE_VAR).as_deref() {
        Ok(ROLE_TT) => return peers::tt_server(),
        Ok(ROLE_FWS) => return peers::fws_server(),
        Ok(peers::ROLE_TT_TLS) => return peers::tt_tls_server(),
        _ => {}
    }
    if let Err(e) = run() {
        eprintln!("load bench: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------
// Orchestration
// ---------------------------------------------------------------------------------------

/// Knobs from the environment.
pub(crate) struct Settings {
    /// Measurement window.
    pub(crate) window: Duration,
    /// Measurements per server per row (the best is kept).
    rounds: usize,
    /// Connection counts of the idle-memory rows (`WSGATE_BENCH_IDLE=1000,10000`).
    idle: Vec<usize>,
    /// Idle connection counts of the handshake curve (`WSGATE_BENCH_SCALE`).
    pub(crate) scale: Vec<usize>,
    /// RLIMIT_NOFILE after raising the soft limit to the hard one.
    pub(crate) nofile: u64,
    /// Rows to run (`WSGATE_BENCH_ROWS`, comma-separated); empty = all.
    only: Vec<String>,
}

impl Settings {
    /// Row names: echo, pipelined, bulk, handshake, auth, proxy, deflate, tls, idle, scale.
    fn wants(&self, row: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|r| r == row)
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn run() -> Res<()> {
    let counts = |var: &str, default: &str| -> Vec<usize> {
        std::env::var(var)
            .unwrap_or_else(|_| default.into())
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect()
    };
    let settings = Settings {
        window: Duration::from_secs_f64(env_or("WSGATE_BENCH_SECS", 3.0_f64).max(0.1)),
        rounds: env_or("WSGATE_BENCH_ROUNDS", 2_usize).max(1),
        idle: counts("WSGATE_BENCH_IDLE", "10000"),
        scale: counts("WSGATE_BENCH_SCALE", "1000,10000,100000"),
        nofile: raise_nofile(),
        only: std::env::var("WSGATE_BENCH_ROWS")
            .unwrap_or_default()
            .split(',')
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect(),
    };
    print_machine(settings.nofile, &settings);

    let dir = std::env::temp_dir().join(format!("wsgate-load-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = run_in(&dir, &settings);
    let _ = fs::remove_dir_all(&dir);
    result
}

fn run_in(dir: &Path, s: &Settings) -> Res<()> {
    let config = prepare_wsgate(dir)?;
    let (hs_token, ed_token) = (
        mint_token(&dir.join("hs.secret"), "hs", None)?,
        mint_token(&dir.join("ed.key.pem"), "ed", None)?,
    );
    let started = Instant::now();
    let mut client = Client::new()?;
    let mut rows: Vec<Row> = Vec::new();
    {
        // The reference server first: it is also the upstream of wsgate's proxy route.
        let tt = Server::peer("tokio-tungstenite", ROLE_TT)?;
        let fws = Server::peer("fastwebsockets", ROLE_FWS)?;
        let proxy_config = proxy_config(dir, tt.addr)?;
        let ws = Server::wsgate(&proxy_config)?;
        println!(
            "servers: wsgate pid {} on {}, fastwebsockets pid {} on {}, tokio-tungstenite \
             pid {} on {} (also wsgate's upstream for {PROXY_PATH})\n",
            ws.pid, ws.addr, fws.pid, fws.addr, tt.pid, tt.addr
        );
        let uws = uws_exe()
            .map(|exe| Server::external("uWebSockets", &exe))
            .transpose()?;
        match &uws {
            Some(u) => println!("uWebSockets pid {} on {}\n", u.pid, u.addr),
            None => println!(
                "uWebSockets column: absent; set {UWS_VAR}=/path/to/BenchEcho to add it \
                 (see benches/load/peers.rs)\n"
            ),
        }
        let mut all = vec![
            ws.endpoint("/echo"),
            fws.endpoint("/echo"),
            tt.endpoint("/echo"),
        ];
        all.extend(uws.as_ref().map(|u| u.endpoint("/echo")));

        if s.wants("echo") {
            let text32 = Payload::new(OpCode::Text, b'x', 32);
            let ms = alternate_all(s, "echo", &all, |ep| {
                client.echo_row(ep, s.window, ECHO_CONNS, &text32, 1)
            })?;
            let label = "echo 100 conn x 32 B text, 1 in flight: msg/s";
            rows.push(Row::rate(label, &ms));
            rows.push(Row::latency("  round trip p50 (us)", &ms, |m| m.p50_us));
            rows.push(Row::latency("  round trip p99 (us)", &ms, |m| m.p99_us));
        }
        if s.wants("pipelined") {
            let bin1k = Payload::new(OpCode::Binary, 0xa5, 1024);
            let ms = alternate_all(s, "pipelined", &all, |ep| {
                client.echo_row(ep, s.window, ECHO_CONNS, &bin1k, PIPELINE_DEPTH)
            })?;
            let label = "pipelined 100 conn x 16 x 1 KiB bin: msg/s";
            rows.push(Row::rate(label, &ms));
            rows.push(Row::latency("  round trip p50 (us)", &ms, |m| m.p50_us));
            rows.push(Row::latency("  round trip p99 (us)", &ms, |m| m.p99_us));
        }
        if s.wants("bulk") {
            let bin64k = Payload::new(OpCode::Binary, 0x5a, BULK_SIZE);
            let ms = alternate_all(s, "bulk", &all, |ep| {
                let mut m = client.echo_row(ep, s.window, BULK_CONNS, &bin64k, 1)?;
                // The figure is MB/s; CPU per operation stays per 64 KiB message.
                m.rate *= BULK_SIZE as f64 / 1e6;
                Ok(m)
            })?;
            rows.push(Row::rate("bulk 10 conn x 64 KiB bin: MB/s echoed", &ms));
            rows.push(Row::latency("  round trip p50 (us)", &ms, |m| m.p50_us));
            rows.push(Row::latency("  round trip p99 (us)", &ms, |m| m.p99_us));
        }
        if s.wants("handshake") {
            let ms = alternate_all(s, "handshake", &all, |ep| {
                client.storm_row(ep, s.window, &["/echo".to_string()])
            })?;
            let label = format!("handshakes/s, public route ({HANDSHAKE_CONCURRENCY} conc.)");
            rows.push(Row::rate(&label, &ms));
        }
        if s.wants("auth") {
            let ed_key = dir.join("ed.key.pem");
            let distinct = (0..DISTINCT_TOKENS)
                .map(|i| {
                    let token = mint_token(&ed_key, "ed", Some(format!("bench-{i}")))?;
                    Ok(format!("/auth?access_token={token}"))
                })
                .collect::<Res<Vec<String>>>()?;
            let rows_auth = [
                (
                    "handshakes/s, HS256 query token (repeated)",
                    vec![format!("/auth?access_token={hs_token}")],
                    "  same token every time",
                ),
                (
                    "handshakes/s, EdDSA token, distinct each",
                    distinct,
                    "  cache misses: real verification",
                ),
                (
                    "handshakes/s, EdDSA token, repeated",
                    vec![format!("/auth?access_token={ed_token}")],
                    "  same token: verified-token cache hits",
                ),
            ];
            for (label, targets, note) in rows_auth {
                let [w] = alternate(s, label, &[ws.endpoint("/auth")], |ep| {
                    client.storm_row(ep, s.window, &targets)
                })?;
                rows.push(Row::wsgate_only(label, &w, note));
            }
        }
        if s.wants("proxy") {
            let via = Endpoint {
                name: "via wsgate",
                upstream_pid: Some(tt.pid),
                ..ws.endpoint(PROXY_PATH)
            };
            let pair = [
                via,
                Endpoint {
                    name: "direct",
                    ..tt.endpoint("/echo")
                },
            ];
            // (progress name, row label, connections, payload, depth, which goals apply:
            // throughput ratio, added p50). One connection is latency-bound (its rate is
            // 1 / round trip), and 16 in flight make the p50 a queue, not a hop.
            let text32 = Payload::checked(OpCode::Text, b'x', 32);
            let bin1k = Payload::checked(OpCode::Binary, 0xa5, 1024);
            let scenarios = [
                (
                    "proxy 32 B",
                    "proxy 100 conn x 32 B via wsgate | direct",
                    ECHO_CONNS,
                    &text32,
                    1,
                    (true, true),
                ),
                (
                    "proxy 32 B, 1 conn",
                    "proxy 1 conn x 32 B via wsgate | direct",
                    1,
                    &text32,
                    1,
                    (false, true),
                ),
                (
                    "proxy pipelined",
                    "proxy 100 conn x 16 x 1 KiB via | direct",
                    ECHO_CONNS,
                    &bin1k,
                    PIPELINE_DEPTH,
                    (true, false),
                ),
            ];
            for (name, label, conns, payload, depth, (rate_goal, p50_goal)) in scenarios {
                let [v, d] = alternate(s, name, &pair, |ep| {
                    client.echo_row(ep, s.window, conns, payload, depth)
                })?;
                let label = format!("{label}: msg/s");
                rows.push(Row::proxy_rate(&label, &v, &d, rate_goal));
                rows.push(Row::pair("  round trip p50 (us)", &v, &d, |m| m.p50_us));
                rows.push(Row::pair("  round trip p99 (us)", &v, &d, |m| m.p99_us));
                rows.push(Row::added_p50(&v, &d, p50_goal));
            }
        }
    }
    if s.wants("deflate") {
        deflate::deflate_rows(dir, s, &mut client, &mut rows)?;
    }
    if s.wants("tls") {
        tls::tls_rows(dir, &config, s, &mut client, &mut rows)?;
    }
    if s.wants("idle") {
        for &n in s.idle.iter().filter(|&&n| n > 0) {
            scale::idle_rows(dir, &config, (s, n), &mut client, &mut rows)?;
        }
    }
    if s.wants("scale") {
        scale::handshake_curve(&config, s, &mut client, &mut rows)?;
    }
    print_table(&rows);
    println!(
        "\nloadavg after: {}  (bench took {:.0} s)",
        loadavg(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// [`alternate_all`] for a fixed number of endpoints.
pub(crate) fn alternate<const N: usize>(
    s: &Settings,
    row: &str,
    servers: &[Endpoint; N],
    f: impl FnMut(&Endpoint) -> Res<Measure>,
) -> Res<[Measure; N]> {
    alternate_all(s, row, servers, f)?
        .try_into()
        .map_err(|_| "measurement count".to_string())
}

/// Runs `f` on each endpoint in turn, `rounds` times, and keeps each endpoint's best.
/// Each measurement is reported on stderr as it completes.
pub(crate) fn alternate_all(
    s: &Settings,
    row: &str,
    servers: &[Endpoint],
    mut f: impl FnMut(&Endpoint) -> Res<Measure>,
) -> Res<Vec<Measure>> {
    let mut best: Vec<Option<Measure>> = vec![None; servers.len()];
    for round in 1..=s.rounds {
        for (slot, srv) in best.iter_mut().zip(servers.iter()) {
            let m = f(srv).map_err(|e| format!("{row}, {}: {e}", srv.name))?;
            eprintln!(
                "  {row} / {} / round {round}: {} (server cpu {}{}, client cpu {}{}{})",
                srv.name,
                group(m.rate),
                pct(m.server_cpu),
                m.upstream_cpu.map_or(String::new(), |c| format!(
                    ", upstream cpu {}",
                    pct(Some(c))
                )),
                pct(m.client_cpu),
                m.p50_us
                    .map_or(String::new(), |p| format!(", p50 {p:.0} us")),
                m.p99_us
                    .map_or(String::new(), |p| format!(", p99 {p:.0} us"))
            );
            if slot.as_ref().is_none_or(|b| m.rate > b.rate) {
                *slot = Some(m);
            }
        }
    }
    best.into_iter()
        .map(|m| m.ok_or_else(|| "no measurement".to_string()))
        .collect()
}

/// Key files from `wsgate keygen`, and the config next to them.
fn prepare_wsgate(dir: &Path) -> Res<PathBuf> {
    for (alg, prefix) in [("EdDSA", "ed"), ("HS256", "hs")] {
        let out = dir.join(prefix);
        let status = Command::new(env!("CARGO_BIN_EXE_wsgate"))
            .args(["keygen", "--alg", alg, "--out"])
            .arg(&out)
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("wsgate keygen: {e}"))?;
        if !status.success() {
            return Err(format!("wsgate keygen --alg {alg}: {status}"));
        }
    }
    let config = dir.join("wsgate.toml");
    fs::write(&config, WSGATE_CONFIG).map_err(|e| format!("{}: {e}", config.display()))?;
    Ok(config)
}

/// [`WSGATE_CONFIG`] plus a public route that proxies [`PROXY_PATH`] to the echo server
/// at `upstream`.
fn proxy_config(dir: &Path, upstream: SocketAddr) -> Res<PathBuf> {
    let config = dir.join("wsgate-proxy.toml");
    let text = format!(
        "{WSGATE_CONFIG}\n[[route]]\npath = \"{PROXY_PATH}\"\nupstream = [\"ws://{upstream}/echo\"]\n\
         public = true\n"
    );
    fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
    Ok(config)
}

/// A one-hour token for `sub = bench` (with `jti` when given), through the library's
/// `token mint`.
pub(crate) fn mint_token(key: &Path, kid: &str, jti: Option<String>) -> Res<String> {
    mint_token_for(key, kid, "bench", jti)
}

/// [`mint_token`] for subject `sub`.
pub(crate) fn mint_token_for(key: &Path, kid: &str, sub: &str, jti: Option<String>) -> Res<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let opts = MintOptions {
        key_file: key.to_path_buf(),
        alg: None,
        kid: Some(kid.to_string()),
        sub: sub.to_string(),
        ttl_secs: 3600,
        scope: None,
        aud: None,
        iss: None,
        jti,
        claims: Vec::new(),
    };
    mint(&opts, now)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (inherited by both servers).
/// Returns the resulting soft limit.
#[allow(unsafe_code)]
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the `rlimit` we pass by reference,
    // which lives on this stack frame for the whole call.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

fn print_machine(nofile: u64, s: &Settings) {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("wsgate load bench");
    println!(
        "machine: {nproc} cpus, {model}, linux {}, RLIMIT_NOFILE {nofile}",
        kernel.trim()
    );
    println!("loadavg before: {}", loadavg());
    if let Some(n) = peers::tt_read_buffer() {
        println!("tokio-tungstenite read_buffer_size = {n} (WSGATE_BENCH_TT_READ_BUFFER)");
    }
    println!(
        "all servers: 1 thread serving connections, loopback; client: 1 thread (mio, raw frames); \
         window {:.1} s after {:.1} s warm-up, best of {} alternating rounds",
        s.window.as_secs_f64(),
        WARMUP.as_secs_f64(),
        s.rounds
    );
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
