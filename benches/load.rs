//! Load bench (`cargo bench --bench load`): the wsgate binary against the idiomatic
//! tokio-tungstenite echo server (`accept_async`, `split`, `try_filter(..).forward(..)`,
//! as in tokio-tungstenite's own `examples/echo-server.rs`), both as child processes with
//! one worker thread, both driven by the same single-threaded mio client that writes raw
//! masked frames and only parses headers of what comes back.
//!
//! Rows: echo round trips (100 connections x 32 B text, one in flight each), pipelined echo
//! (100 connections x 16 in flight x 1 KiB binary), bulk echo (10 connections x 64 KiB
//! binary), handshakes per second (connect, upgrade, close handshake; public route for both
//! servers, HS256 and EdDSA query tokens for wsgate), and resident memory per idle
//! connection at 10,000 connections. Measurements alternate between the two servers;
//! the best of `WSGATE_BENCH_ROUNDS` (default 2) is kept. `WSGATE_BENCH_SECS` (default 3)
//! is the length of each measurement window, after a 0.5 s warm-up. `WSGATE_BENCH_IDLE`
//! (default 10000) sets the idle connection count (0 skips the row), and
//! `WSGATE_BENCH_ROWS=echo,pipelined,bulk,handshake,auth,proxy,idle` picks rows (default all).
//!
//! The proxy rows put the tokio-tungstenite server behind wsgate (an upstream route,
//! `/proxy`) and compare client -> wsgate -> tokio-tungstenite with client ->
//! tokio-tungstenite directly, alternating against the same server process: the 32 B
//! round trip (100 connections, and 1 connection for the unloaded latency) and the
//! pipelined 1 KiB scenario. Their wsgate column is "via wsgate", their tokio-tungstenite
//! column "direct"; every echoed payload is checked byte for byte.
//!
//! The deflate rows (SPEC §10, `WSGATE_BENCH_ROWS=deflate`) echo a 1 KiB JSON text message
//! on a wsgate with `[compression]` on: 100 connections that negotiated permessage-deflate
//! (the client sends the message compressed, the echo comes back compressed and its length
//! is checked) against 100 connections on the same server that did not. tokio-tungstenite
//! 0.26 (the version in Cargo.lock) has no permessage-deflate, so no peer negotiates it:
//! the rows measure wsgate alone, its wsgate column "deflate", its tokio-tung column
//! "plain". They report messages/s, the server's CPU per message and the bytes on the wire
//! per message each way.
//!
//! Each cell also shows the server's CPU use (all its threads, user + system) during the
//! window, and the last column the client's: a server below 100% while the client is at
//! 100% means the row measured the client, not the server.

// A load bench is a clock reader by nature; the sans-IO rule of clippy.toml is for src/.
#![allow(clippy::disallowed_methods)]

use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use wsgate::cli::token::{mint, MintOptions};
use wsgate::proto::ws::frame::{parse_header, write_masked_frame, OpCode, MAX_HEADER_LEN};

/// Env var that turns this executable into the tokio-tungstenite reference server.
const ROLE_VAR: &str = "WSGATE_BENCH_ROLE";
/// The value of [`ROLE_VAR`] for the reference server.
const ROLE_TT: &str = "tt-server";
/// Warm-up before each measurement window.
const WARMUP: Duration = Duration::from_millis(500);
/// Connections of the round-trip and pipelined rows.
const ECHO_CONNS: usize = 100;
/// Messages in flight per connection in the pipelined row.
const PIPELINE_DEPTH: usize = 16;
/// Connections of the bulk row.
const BULK_CONNS: usize = 10;
/// Payload of the bulk row.
const BULK_SIZE: usize = 64 * 1024;
/// Concurrent connectors in the handshake rows.
const HANDSHAKE_CONCURRENCY: usize = 64;
/// Handshakes in flight while opening a set of connections.
const DIAL_CONCURRENCY: usize = 256;
/// Client masking key (servers unmask whatever the key; a constant keeps frames prebuilt).
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// `Sec-WebSocket-Key` of every request (RFC 6455 §1.3 sample nonce).
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// mio tokens carry the slot in their low bits and a generation above it.
const SLOT_BITS: u32 = 20;
/// Mask of the slot bits of a token.
const SLOT_MASK: usize = (1 << SLOT_BITS) - 1;
/// The kernel's USER_HZ: the unit of utime/stime in /proc/<pid>/stat (100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;
/// The config the bench gives wsgate: every limit out of the way, one worker.
const WSGATE_CONFIG: &str = r#"[server]
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

type Res<T> = Result<T, String>;

fn main() {
    if std::env::var(ROLE_VAR).as_deref() == Ok(ROLE_TT) {
        tt_server();
        return;
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
struct Settings {
    /// Measurement window.
    window: Duration,
    /// Measurements per server per row (the best is kept).
    rounds: usize,
    /// Connections of the idle-memory row.
    idle: usize,
    /// Rows to run (`WSGATE_BENCH_ROWS`, comma-separated); empty = all.
    only: Vec<String>,
}

impl Settings {
    /// Row names: echo, pipelined, bulk, handshake, auth, proxy, deflate, idle.
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
    let settings = Settings {
        window: Duration::from_secs_f64(env_or("WSGATE_BENCH_SECS", 3.0_f64).max(0.1)),
        rounds: env_or("WSGATE_BENCH_ROUNDS", 2_usize).max(1),
        idle: env_or("WSGATE_BENCH_IDLE", 10_000_usize),
        only: std::env::var("WSGATE_BENCH_ROWS")
            .unwrap_or_default()
            .split(',')
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect(),
    };
    let nofile = raise_nofile();
    print_machine(nofile, &settings);

    let dir = std::env::temp_dir().join(format!("wsgate-load-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = run_in(&dir, &settings);
    let _ = fs::remove_dir_all(&dir);
    result
}

fn run_in(dir: &Path, s: &Settings) -> Res<()> {
    let config = prepare_wsgate(dir)?;
    let (hs_token, ed_token) = (
        mint_token(&dir.join("hs.secret"), "hs")?,
        mint_token(&dir.join("ed.key.pem"), "ed")?,
    );
    let started = Instant::now();
    let mut client = Client::new()?;
    let mut rows: Vec<Row> = Vec::new();
    {
        // The reference server first: it is also the upstream of wsgate's proxy route.
        let tt = Server::tokio_tungstenite()?;
        let proxy_config = proxy_config(dir, tt.addr)?;
        let ws = Server::wsgate(&proxy_config)?;
        println!(
            "servers: wsgate pid {} on {}, tokio-tungstenite pid {} on {} \
             (also wsgate's upstream for {PROXY_PATH})\n",
            ws.pid, ws.addr, tt.pid, tt.addr
        );
        let both = [ws.endpoint("/echo"), tt.endpoint("/echo")];

        if s.wants("echo") {
            let text32 = Payload::new(OpCode::Text, b'x', 32);
            let [w, t] = alternate(s, "echo", &both, |ep| {
                client.echo_row(ep, s.window, ECHO_CONNS, &text32, 1)
            })?;
            let label = "echo 100 conn x 32 B text, 1 in flight: msg/s";
            rows.push(Row::rate(label, &w, &t));
            rows.push(Row::latency("  round trip p50 (us)", &w, &t, |m| m.p50_us));
            rows.push(Row::latency("  round trip p99 (us)", &w, &t, |m| m.p99_us));
        }
        if s.wants("pipelined") {
            let bin1k = Payload::new(OpCode::Binary, 0xa5, 1024);
            let [w, t] = alternate(s, "pipelined", &both, |ep| {
                client.echo_row(ep, s.window, ECHO_CONNS, &bin1k, PIPELINE_DEPTH)
            })?;
            let label = "pipelined 100 conn x 16 x 1 KiB bin: msg/s";
            rows.push(Row::rate(label, &w, &t));
            rows.push(Row::latency("  round trip p50 (us)", &w, &t, |m| m.p50_us));
            rows.push(Row::latency("  round trip p99 (us)", &w, &t, |m| m.p99_us));
        }
        if s.wants("bulk") {
            let bin64k = Payload::new(OpCode::Binary, 0x5a, BULK_SIZE);
            let [w, t] = alternate(s, "bulk", &both, |ep| {
                let mut m = client.echo_row(ep, s.window, BULK_CONNS, &bin64k, 1)?;
                m.rate *= BULK_SIZE as f64 / 1e6;
                Ok(m)
            })?;
            rows.push(Row::rate("bulk 10 conn x 64 KiB bin: MB/s echoed", &w, &t));
            rows.push(Row::latency("  round trip p50 (us)", &w, &t, |m| m.p50_us));
            rows.push(Row::latency("  round trip p99 (us)", &w, &t, |m| m.p99_us));
        }
        if s.wants("handshake") {
            let [w, t] = alternate(s, "handshake", &both, |ep| {
                client.storm_row(ep, s.window, "/echo")
            })?;
            let label = "handshakes/s, public route (64 concurrent)";
            rows.push(Row::rate(label, &w, &t));
        }
        if s.wants("auth") {
            for (label, token) in [
                ("handshakes/s, HS256 query token", &hs_token),
                ("handshakes/s, EdDSA query token", &ed_token),
            ] {
                let target = format!("/auth?access_token={token}");
                let [w] = alternate(s, label, &[ws.endpoint("/auth")], |ep| {
                    client.storm_row(ep, s.window, &target)
                })?;
                rows.push(Row::wsgate_only(label, &w));
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
                rows.push(Row::latency("  round trip p50 (us)", &v, &d, |m| m.p50_us));
                rows.push(Row::latency("  round trip p99 (us)", &v, &d, |m| m.p99_us));
                rows.push(Row::added_p50(&v, &d, p50_goal));
            }
        }
    }
    if s.wants("deflate") {
        deflate_rows(dir, s, &mut client, &mut rows)?;
    }
    if s.idle > 0 && s.wants("idle") {
        // Fresh servers, so that the caches of earlier rows do not hide the cost.
        let mut idle = Vec::new();
        let ws = Server::wsgate(&config)?;
        idle.push(client.idle_row(&ws, s.idle)?);
        drop(ws);
        let tt = Server::tokio_tungstenite()?;
        idle.push(client.idle_row(&tt, s.idle)?);
        drop(tt);
        let label = format!("RSS per idle conn (bytes, {} conns)", group(s.idle as f64));
        rows.push(Row::latency(&label, &idle[0], &idle[1], |m| Some(m.rate)));
    }
    print_table(&rows);
    println!(
        "\nloadavg after: {}  (bench took {:.0} s)",
        loadavg(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

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
fn deflate_rows(dir: &Path, s: &Settings, client: &mut Client, rows: &mut Vec<Row>) -> Res<()> {
    use wsgate::proto::ws::deflate::{negotiate, DeflateConfig, PerMessageDeflate};
    let config = dir.join("wsgate-deflate.toml");
    let text = format!("{WSGATE_CONFIG}\n[compression]\npermessage_deflate = true\n");
    fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
    let ws = Server::wsgate(&config)?;
    let json = json_message(1024);
    // What both sides agree with the default [compression]; the gateway's own codec
    // prepares the client's compressed frame and the exact echo it must send back (no
    // context takeover: every message compresses the same).
    let offer = "permessage-deflate; client_max_window_bits";
    let deflate_config = DeflateConfig {
        server_max_window_bits: 15,
        context_takeover: false,
        min_size: 256,
    };
    let agreement = negotiate([offer.as_bytes()], &deflate_config)
        .map_err(|_| "offer")?
        .ok_or("no agreement")?;
    let mut codec = PerMessageDeflate::new(agreement, None);
    let mut frame = Vec::new();
    codec.deflate_frame(OpCode::Text, &json, true, Some(MASK), &mut frame);
    let mut echo = Vec::new();
    codec.deflate_frame(OpCode::Text, &json, true, None, &mut echo);
    let echo_payload = parse_header(&echo)
        .ok()
        .flatten()
        .map_or(0, |(h, _)| h.payload_len);
    let deflated = Payload {
        frame,
        expect: Expect {
            opcode: 1,
            len: echo_payload,
            fill: None,
            compressed: true,
        },
    };
    let mut plain_frame = Vec::new();
    write_masked_frame(&mut plain_frame, true, OpCode::Text, &json, MASK);
    let plain = Payload {
        frame: plain_frame,
        expect: Expect {
            opcode: 1,
            len: json.len() as u64,
            fill: None,
            compressed: false,
        },
    };
    let pair = [
        Endpoint {
            name: "deflate",
            extensions: Some(offer),
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
    rows.push(Row::rate(
        "deflate 100 conn x 1 KiB JSON deflate | plain: msg/s",
        &d,
        &p,
    ));
    rows.push(Row::latency("  server cpu per message (us)", &d, &p, |m| {
        m.server_cpu.map(|c| c * 1e6 / m.rate.max(1.0))
    }));
    rows.push(Row::latency("  round trip p50 (us)", &d, &p, |m| m.p50_us));
    rows.push(Row::latency("  round trip p99 (us)", &d, &p, |m| m.p99_us));
    let bytes = |label: &str, deflate: usize, plain: usize| Row {
        label: label.into(),
        wsgate: Some(deflate as f64),
        wsgate_cpu: None,
        tt: Some(plain as f64),
        tt_cpu: None,
        client_cpu: String::new(),
        note: String::new(),
    };
    rows.push(bytes(
        "  bytes on the wire per message, to wsgate",
        deflated.frame.len(),
        plain.frame.len(),
    ));
    rows.push(bytes(
        "  bytes on the wire per message, echoed",
        echo.len(),
        plain.frame.len() - MASK.len(),
    ));
    Ok(())
}

/// Runs `f` on each endpoint in turn, `rounds` times, and keeps each endpoint's best.
/// Each measurement is reported on stderr as it completes.
fn alternate<const N: usize>(
    s: &Settings,
    row: &str,
    servers: &[Endpoint; N],
    mut f: impl FnMut(&Endpoint) -> Res<Measure>,
) -> Res<[Measure; N]> {
    let mut best: [Option<Measure>; N] = std::array::from_fn(|_| None);
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
    let mut out = Vec::with_capacity(N);
    for m in best {
        out.push(m.ok_or("no measurement")?);
    }
    out.try_into().map_err(|_| "measurement count".to_string())
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

/// A one-hour token for `sub = bench`, through the library's `token mint`.
fn mint_token(key: &Path, kid: &str) -> Res<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let opts = MintOptions {
        key_file: key.to_path_buf(),
        alg: None,
        kid: Some(kid.to_string()),
        sub: "bench".to_string(),
        ttl_secs: 3600,
        scope: None,
        aud: None,
        iss: None,
        jti: None,
        claims: Vec::new(),
    };
    mint(&opts, now)
}

/// What an echo row sends: one prebuilt frame, and what its echo must look like.
struct Payload {
    /// The masked client frame.
    frame: Vec<u8>,
    /// The echo's expected shape.
    expect: Expect,
}

impl Payload {
    /// `len` bytes of `fill` in one `opcode` frame; echoes are checked for type and length.
    fn new(opcode: OpCode, fill: u8, len: usize) -> Payload {
        let mut frame = Vec::new();
        write_masked_frame(&mut frame, true, opcode, &vec![fill; len], MASK);
        Payload {
            frame,
            expect: Expect {
                opcode: opcode as u8,
                len: len as u64,
                fill: None,
                compressed: false,
            },
        }
    }

    /// Like [`Payload::new`], and every echoed payload byte is checked as well.
    fn checked(opcode: OpCode, fill: u8, len: usize) -> Payload {
        let mut payload = Payload::new(opcode, fill, len);
        payload.expect.fill = Some(fill);
        payload
    }
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
    if let Some(n) = tt_read_buffer() {
        println!("tokio-tungstenite read_buffer_size = {n} (WSGATE_BENCH_TT_READ_BUFFER)");
    }
    println!(
        "both servers: 1 worker thread, loopback; client: 1 thread (mio, raw frames); \
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

// ---------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------

/// One measurement of one server.
#[derive(Debug, Clone, Default)]
struct Measure {
    /// The row's figure (messages/s, MB/s, handshakes/s, bytes).
    rate: f64,
    /// Median round trip.
    p50_us: Option<f64>,
    /// 99th percentile round trip.
    p99_us: Option<f64>,
    /// Server CPU during the window, in cores (1.0 = one core busy).
    server_cpu: Option<f64>,
    /// Client CPU during the window, in cores.
    client_cpu: Option<f64>,
    /// CPU of the upstream behind a proxy route during the window, in cores.
    upstream_cpu: Option<f64>,
    /// Failed connects or handshakes during the window.
    errors: u64,
}

/// One printed line.
struct Row {
    label: String,
    wsgate: Option<f64>,
    wsgate_cpu: Option<f64>,
    tt: Option<f64>,
    tt_cpu: Option<f64>,
    client_cpu: String,
    note: String,
}

impl Row {
    fn rate(label: &str, w: &Measure, t: &Measure) -> Row {
        Row {
            label: label.into(),
            wsgate: Some(w.rate),
            wsgate_cpu: w.server_cpu,
            tt: Some(t.rate),
            tt_cpu: t.server_cpu,
            client_cpu: format!("{}/{}", pct(w.client_cpu), pct(t.client_cpu)),
            note: errors_note(&[w, t]),
        }
    }

    fn latency(label: &str, w: &Measure, t: &Measure, f: impl Fn(&Measure) -> Option<f64>) -> Row {
        Row {
            label: label.into(),
            wsgate: f(w),
            wsgate_cpu: None,
            tt: f(t),
            tt_cpu: None,
            client_cpu: String::new(),
            note: String::new(),
        }
    }

    /// A proxy row's rate: via wsgate (the wsgate column) against direct; the note gives
    /// the upstream's CPU during the via window and, when `goal`, the throughput goal.
    fn proxy_rate(label: &str, via: &Measure, direct: &Measure, goal: bool) -> Row {
        let mut row = Row::rate(label, via, direct);
        let ratio = (direct.rate > 0.0).then(|| via.rate / direct.rate);
        let goal = if goal {
            format!(
                "; goal >= {PROXY_MIN_RATIO:.2}: {}",
                verdict(ratio.map(|r| r >= PROXY_MIN_RATIO))
            )
        } else {
            String::new()
        };
        row.note = format!(
            "  upstream cpu {} via{goal}{}",
            pct(via.upstream_cpu),
            row.note
        );
        row
    }

    /// Via p50 minus direct p50, in the wsgate column; the note gives the latency goal
    /// when `goal`.
    fn added_p50(via: &Measure, direct: &Measure, goal: bool) -> Row {
        let added = via.p50_us.zip(direct.p50_us).map(|(v, d)| v - d);
        let note = if goal {
            format!(
                "  goal < {PROXY_MAX_ADDED_P50_US:.0}: {}",
                verdict(added.map(|a| a < PROXY_MAX_ADDED_P50_US))
            )
        } else {
            String::new()
        };
        Row {
            label: "  added p50 via wsgate (us)".into(),
            wsgate: added,
            wsgate_cpu: None,
            tt: None,
            tt_cpu: None,
            client_cpu: String::new(),
            note,
        }
    }

    fn wsgate_only(label: &str, w: &Measure) -> Row {
        Row {
            label: label.into(),
            wsgate: Some(w.rate),
            wsgate_cpu: w.server_cpu,
            tt: None,
            tt_cpu: None,
            client_cpu: format!("{}/-", pct(w.client_cpu)),
            note: errors_note(&[w]),
        }
    }
}

fn errors_note(ms: &[&Measure]) -> String {
    let errors: u64 = ms.iter().map(|m| m.errors).sum();
    if errors == 0 {
        String::new()
    } else {
        format!("  ({errors} errors)")
    }
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "missed",
        None => "-",
    }
}

fn pct(cores: Option<f64>) -> String {
    cores.map_or("-".into(), |c| format!("{:.0}%", c * 100.0))
}

/// `1234567.8` as `1,234,568` (small values keep one decimal).
fn group(v: f64) -> String {
    if v < 0.0 {
        return format!("-{}", group(-v));
    }
    if v < 100.0 {
        return format!("{v:.1}");
    }
    let digits = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print_table(rows: &[Row]) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<50} {:>12} {:>5} {:>12} {:>5} {:>7}  {:>9}",
        "row", "wsgate", "cpu", "tokio-tung", "cpu", "ws/tt", "client"
    );
    let _ = writeln!(out, "{}", "-".repeat(108));
    for r in rows {
        let cell = |v: Option<f64>| v.map_or("-".into(), group);
        let ratio = match (r.wsgate, r.tt) {
            (Some(w), Some(t)) if t > 0.0 => format!("{:.2}", w / t),
            _ => "-".into(),
        };
        let cpu = |c: Option<f64>| c.map_or(String::new(), |c| pct(Some(c)));
        let _ = writeln!(
            out,
            "{:<50} {:>12} {:>5} {:>12} {:>5} {:>7}  {:>9}{}",
            r.label,
            cell(r.wsgate),
            cpu(r.wsgate_cpu),
            cell(r.tt),
            cpu(r.tt_cpu),
            ratio,
            r.client_cpu,
            r.note
        );
    }
    let _ = writeln!(
        out,
        "cpu: the server's CPU (all threads) during the window, 100% = one core; client: the \
         bench client's CPU (wsgate run / tokio-tungstenite run).\nws/tt: higher is better \
         for rates, lower is better for latency and memory.\nproxy rows: wsgate column = client \
         -> wsgate {PROXY_PATH} -> tokio-tungstenite (cpu: wsgate's; the upstream's is in the \
         note),\n  tokio-tung column = client -> the same tokio-tungstenite directly; ws/tt = \
         via/direct.\ndeflate rows: wsgate alone (tokio-tungstenite 0.26 has no \
         permessage-deflate); wsgate column = connections with the extension, tokio-tung \
         column = the same server without it."
    );
    print!("{out}");
}

// ---------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------

/// A server child process, killed when dropped.
struct Server {
    name: &'static str,
    child: Child,
    pid: u32,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one measurement talks to: a server's address and path, and the processes whose
/// CPU it reports.
struct Endpoint {
    /// Shown in progress lines.
    name: &'static str,
    addr: SocketAddr,
    /// The request target of echo rows.
    path: &'static str,
    /// The process that answers on `addr`.
    pid: u32,
    /// The upstream behind a proxy route (its CPU is reported too).
    upstream_pid: Option<u32>,
    /// `Sec-WebSocket-Extensions` offered by echo rows' connections.
    extensions: Option<&'static str>,
}

impl Server {
    /// This server at `path`.
    fn endpoint(&self, path: &'static str) -> Endpoint {
        Endpoint {
            name: self.name,
            addr: self.addr,
            path,
            pid: self.pid,
            upstream_pid: None,
            extensions: None,
        }
    }

    /// `wsgate serve -c config` with `WSGATE_LOG=warn`; its warnings are relayed to our
    /// stderr. The port (the config says 0) is read from /proc, since the "listening"
    /// line is an info line.
    fn wsgate(config: &Path) -> Res<Server> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wsgate"))
            .arg("serve")
            .arg("-c")
            .arg(config)
            .env("WSGATE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start wsgate: {e}"))?;
        if let Some(stderr) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("[wsgate] {line}");
                }
            });
        }
        let pid = child.id();
        let mut server = Server {
            name: "wsgate",
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(addr) = listening_addr(pid) {
                server.addr = addr;
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("wsgate exited at start: {status}"));
            }
            if Instant::now() > deadline {
                return Err("wsgate is not listening after 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// This executable again, as the reference server; it prints its address, and exits
    /// when its stdin (held by the `Child`) closes.
    fn tokio_tungstenite() -> Res<Server> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut child = Command::new(exe)
            .env(ROLE_VAR, ROLE_TT)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the tokio-tungstenite server: {e}"))?;
        let pid = child.id();
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let mut server = Server {
            name: "tokio-tungstenite",
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        server.addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("tokio-tungstenite server said {line:?}"))?;
        Ok(server)
    }
}

/// The IPv4 TCP socket in LISTEN state that process `pid` holds, from /proc.
fn listening_addr(pid: u32) -> Option<SocketAddr> {
    let mut inodes = HashSet::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        if let Ok(link) = fs::read_link(entry.path()) {
            if let Some(inode) = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
            {
                inodes.insert(inode.to_string());
            }
        }
    }
    let table = fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        if f.get(3) != Some(&"0A") || !inodes.contains(*f.get(9)?) {
            return None;
        }
        let (ip, port) = f.get(1)?.split_once(':')?;
        // The address is the in-memory (network order) u32 printed as a host integer.
        let ip = u32::from_str_radix(ip, 16).ok()?.to_le_bytes();
        let port = u16::from_str_radix(port, 16).ok()?;
        Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
    })
}

/// (user + system) CPU ticks of a process, all threads.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) of proc(5); field 3 is the first after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS of a process, in bytes.
fn rss_bytes(pid: u32) -> Res<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| "no VmRSS".to_string())
}

/// CPU ticks (server, client, upstream) at the start of a window.
type Ticks = (Option<u64>, Option<u64>, Option<u64>);

/// CPU use of the server, of this process and of an upstream between two instants.
struct CpuWindow {
    server_pid: u32,
    upstream_pid: Option<u32>,
    start: Option<(Instant, Ticks)>,
}

impl CpuWindow {
    fn new(server_pid: u32, upstream_pid: Option<u32>) -> CpuWindow {
        CpuWindow {
            server_pid,
            upstream_pid,
            start: None,
        }
    }

    fn begin(&mut self) {
        let me = std::process::id();
        let ticks = (
            cpu_ticks(self.server_pid),
            cpu_ticks(me),
            self.upstream_pid.and_then(cpu_ticks),
        );
        self.start = Some((Instant::now(), ticks));
    }

    /// (server cores, client cores, upstream cores) since `begin`.
    fn end(&self) -> (Option<f64>, Option<f64>, Option<f64>) {
        let Some((t0, (s0, c0, u0))) = self.start else {
            return (None, None, None);
        };
        let secs = t0.elapsed().as_secs_f64();
        let cores = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) if secs > 0.0 => {
                Some(b.saturating_sub(a) as f64 / TICKS_PER_SEC / secs)
            }
            _ => None,
        };
        (
            cores(s0, cpu_ticks(self.server_pid)),
            cores(c0, cpu_ticks(std::process::id())),
            cores(u0, self.upstream_pid.and_then(cpu_ticks)),
        )
    }
}

// ---------------------------------------------------------------------------------------
// The reference server
// ---------------------------------------------------------------------------------------

/// `WSGATE_BENCH_TT_READ_BUFFER`: a read buffer size for the reference server (tungstenite
/// zeroes the whole free part of its read buffer before every read, 128 KiB by default).
fn tt_read_buffer() -> Option<usize> {
    std::env::var("WSGATE_BENCH_TT_READ_BUFFER")
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

/// tokio-tungstenite's echo server example, on a one-worker multi-thread runtime, with
/// TCP_NODELAY like wsgate's accepted sockets.
fn tt_server() {
    // The parent holds our stdin; when it goes away, so do we.
    std::thread::spawn(|| {
        let _ = io::copy(&mut io::stdin(), &mut io::sink());
        std::process::exit(0);
    });
    // tungstenite's default read buffer (128 KiB) unless WSGATE_BENCH_TT_READ_BUFFER says.
    let config = tt_read_buffer().map(|n| WebSocketConfig::default().read_buffer_size(n));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tt-server: runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(async {
        use futures_util::{future, StreamExt, TryStreamExt};
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("tt-server: bind: {e}");
                std::process::exit(1);
            }
        };
        match listener.local_addr() {
            Ok(addr) => println!("listening on {addr}"),
            Err(e) => {
                eprintln!("tt-server: {e}");
                std::process::exit(1);
            }
        }
        let _ = io::stdout().flush();
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // EMFILE and friends: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, config).await
                else {
                    return;
                };
                let (write, read) = ws.split();
                let _ = read
                    .try_filter(|msg| future::ready(msg.is_text() || msg.is_binary()))
                    .forward(write)
                    .await;
            });
        }
    });
}

// ---------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------

/// Where a client connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No socket.
    Free,
    /// TCP connect and upgrade request sent, waiting for the 101.
    Dialing,
    /// Upgraded.
    Open,
    /// Our close frame is sent; reading until the server's FIN.
    Closing,
}

/// Server frames: only headers are parsed, payloads are skipped.
#[derive(Default)]
struct FrameReader {
    /// A header split across reads.
    carry: [u8; MAX_HEADER_LEN],
    carry_len: usize,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// The current frame's opcode, FIN bit, RSV1 bit and length.
    opcode: u8,
    fin: bool,
    rsv1: bool,
    len: u64,
    /// Bytes of the current frame's payload that differ from the expected fill.
    wrong: u64,
}

/// What every echoed data frame must be.
#[derive(Debug, Clone, Copy)]
struct Expect {
    /// The opcode that was sent (1 text, 2 binary).
    opcode: u8,
    /// The payload length that was sent.
    len: u64,
    /// The payload's one repeated byte, when the payload is checked.
    fill: Option<u8>,
    /// The echo is compressed (RSV1, RFC 7692 §6) and `len` is its compressed length.
    compressed: bool,
}

/// What a chunk of input completed.
#[derive(Default)]
struct Seen {
    /// Data frames of the expected length.
    data: usize,
    /// A close frame arrived.
    close: bool,
}

impl FrameReader {
    /// Consumes `input`; counts complete frames into `seen`. Data frames must match
    /// `expect` (when given).
    fn feed(&mut self, mut input: &[u8], expect: Option<&Expect>, seen: &mut Seen) -> Res<()> {
        while !input.is_empty() {
            if self.remaining > 0 {
                let k = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                if let Some(fill) = expect.and_then(|e| e.fill) {
                    if matches!(self.opcode, 1 | 2) {
                        self.wrong += input[..k].iter().filter(|&&b| b != fill).count() as u64;
                    }
                }
                self.remaining -= k as u64;
                input = &input[k..];
                if self.remaining == 0 {
                    self.complete(expect, seen)?;
                }
                continue;
            }
            let (header, used) = if self.carry_len == 0 {
                match parse_header(input) {
                    Ok(Some(parsed)) => parsed,
                    Ok(None) => {
                        self.carry[..input.len()].copy_from_slice(input);
                        self.carry_len = input.len();
                        return Ok(());
                    }
                    Err(e) => return Err(format!("bad server frame: {e:?}")),
                }
            } else {
                let take = (MAX_HEADER_LEN - self.carry_len).min(input.len());
                self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&input[..take]);
                match parse_header(&self.carry[..self.carry_len + take]) {
                    Ok(Some((header, len))) => {
                        let used = len - self.carry_len;
                        self.carry_len = 0;
                        (header, used)
                    }
                    // Less than a whole header even with all of `input`.
                    Ok(None) => {
                        self.carry_len += take;
                        return Ok(());
                    }
                    Err(e) => return Err(format!("bad server frame: {e:?}")),
                }
            };
            if header.mask.is_some() {
                return Err("server frame is masked".into());
            }
            input = &input[used..];
            self.opcode = header.opcode;
            self.fin = header.fin;
            self.rsv1 = header.rsv & 0b100 != 0;
            self.len = header.payload_len;
            self.remaining = header.payload_len;
            self.wrong = 0;
            if self.remaining == 0 {
                self.complete(expect, seen)?;
            }
        }
        Ok(())
    }

    fn complete(&mut self, expect: Option<&Expect>, seen: &mut Seen) -> Res<()> {
        match self.opcode {
            0..=2 => {
                if let Some(e) = expect {
                    if self.opcode != e.opcode || !self.fin {
                        return Err(format!(
                            "echo frame opcode {} fin {}, sent opcode {} fin true",
                            self.opcode, self.fin, e.opcode
                        ));
                    }
                    if self.rsv1 != e.compressed {
                        return Err(format!(
                            "echo RSV1 {}, expected {}",
                            self.rsv1, e.compressed
                        ));
                    }
                    if self.len != e.len {
                        return Err(format!("echo of {} bytes, sent {}", self.len, e.len));
                    }
                    if self.wrong > 0 {
                        return Err(format!(
                            "echo of {} bytes has {} bytes that differ from what was sent",
                            self.len, self.wrong
                        ));
                    }
                }
                seen.data += 1;
            }
            8 => seen.close = true,
            _ => {} // ping / pong
        }
        Ok(())
    }
}

/// One client connection.
struct Conn {
    sock: Option<TcpStream>,
    generation: usize,
    state: State,
    /// The response head being received.
    head: Vec<u8>,
    /// Output not yet written, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    frames: FrameReader,
    /// Send times of the messages in flight, oldest first.
    sent_at: VecDeque<Instant>,
}

impl Conn {
    fn new() -> Conn {
        Conn {
            sock: None,
            generation: 0,
            state: State::Free,
            head: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            frames: FrameReader::default(),
            sent_at: VecDeque::new(),
        }
    }

    fn token(&self, slot: usize) -> Token {
        Token(slot | (self.generation << SLOT_BITS))
    }

    /// Starts a TCP connect and queues the upgrade request.
    fn dial(
        &mut self,
        registry: &Registry,
        slot: usize,
        addr: SocketAddr,
        request: &[u8],
    ) -> io::Result<()> {
        self.drop_socket();
        let mut sock = TcpStream::connect(addr)?;
        let _ = sock.set_nodelay(true);
        self.generation = self.generation.wrapping_add(1) & (usize::MAX >> SLOT_BITS);
        registry.register(
            &mut sock,
            self.token(slot),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.sock = Some(sock);
        self.state = State::Dialing;
        self.head.clear();
        self.out.clear();
        self.out.extend_from_slice(request);
        self.out_pos = 0;
        self.frames = FrameReader::default();
        self.sent_at.clear();
        Ok(())
    }

    fn drop_socket(&mut self) {
        self.sock = None;
        self.state = State::Free;
    }

    /// Writes pending output until done or the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        let Some(sock) = self.sock.as_mut() else {
            return Ok(());
        };
        while self.out_pos < self.out.len() {
            match sock.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // A connect in progress: the writable edge comes when it completes.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        Ok(())
    }

    /// One read. `Ok(None)`: nothing more now (the socket is drained once a read comes
    /// back short, since readiness is edge-triggered). `Ok(Some(0))` is EOF.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let Some(sock) = self.sock.as_mut() else {
            return Ok(None);
        };
        loop {
            match sock.read(buf) {
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Dialing: sends the request, reads the response head. Ok(true) once upgraded.
    fn step_dial(&mut self, buf: &mut [u8]) -> Res<bool> {
        self.flush().map_err(|e| format!("connect/write: {e}"))?;
        if !self.out.is_empty() {
            return Ok(false);
        }
        loop {
            let n = match self.read(buf).map_err(|e| format!("handshake read: {e}"))? {
                None => return Ok(false),
                Some(0) => return Err("closed during the handshake".into()),
                Some(n) => n,
            };
            self.head.extend_from_slice(&buf[..n]);
            if let Some(end) = self.head.windows(4).position(|w| w == b"\r\n\r\n") {
                if !self.head.starts_with(b"HTTP/1.1 101 ") {
                    let first = self.head.split(|&b| b == b'\r').next().unwrap_or_default();
                    return Err(format!("answer {:?}", String::from_utf8_lossy(first)));
                }
                let rest = self.head.split_off(end + 4);
                self.head.clear();
                self.state = State::Open;
                let mut seen = Seen::default();
                self.frames.feed(&rest, None, &mut seen)?;
                return Ok(true);
            }
            if n < buf.len() {
                return Ok(false);
            }
        }
    }

    /// Queues our close frame (1000).
    fn start_close(&mut self) -> io::Result<()> {
        let mut payload = [0u8; 2];
        payload.copy_from_slice(&1000u16.to_be_bytes());
        write_masked_frame(&mut self.out, true, OpCode::Close, &payload, MASK);
        self.state = State::Closing;
        self.flush()
    }

    /// Closing: reads until EOF. Ok(true) once the server closed (its close frame seen).
    fn step_closing(&mut self, buf: &mut [u8]) -> Res<bool> {
        self.flush().map_err(|e| format!("close write: {e}"))?;
        let mut seen = Seen::default();
        loop {
            match self.read(buf) {
                Ok(None) => return Ok(false),
                Ok(Some(0)) => {
                    self.drop_socket();
                    return if seen.close || self.frames.opcode == 8 {
                        Ok(true)
                    } else {
                        Err("EOF without a close frame".into())
                    };
                }
                Ok(Some(n)) => self.frames.feed(&buf[..n], None, &mut seen)?,
                Err(e) => {
                    self.drop_socket();
                    return Err(format!("while closing: {e}"));
                }
            }
        }
    }
}

/// The bench client: one thread, one poll, raw frames.
struct Client {
    poll: Poll,
    events: Events,
    buf: Vec<u8>,
    conns: Vec<Conn>,
}

fn slot_of(token: Token) -> (usize, usize) {
    (token.0 & SLOT_MASK, token.0 >> SLOT_BITS)
}

fn upgrade_request(addr: SocketAddr, target: &str) -> Vec<u8> {
    upgrade_request_with(addr, target, None)
}

/// [`upgrade_request`] offering `extensions` when given.
fn upgrade_request_with(addr: SocketAddr, target: &str, extensions: Option<&str>) -> Vec<u8> {
    let offer = extensions.map_or(String::new(), |e| {
        format!("Sec-WebSocket-Extensions: {e}\r\n")
    });
    format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    )
    .into_bytes()
}

impl Client {
    fn new() -> Res<Client> {
        Ok(Client {
            poll: Poll::new().map_err(|e| format!("poll: {e}"))?,
            events: Events::with_capacity(1024),
            buf: vec![0; 256 * 1024],
            conns: Vec::new(),
        })
    }

    fn poll(&mut self, timeout: Duration) -> Res<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(format!("poll: {e}")),
        }
    }

    /// Opens `n` upgraded connections to `addr` (replacing any held).
    fn open_many(&mut self, addr: SocketAddr, target: &str, n: usize) -> Res<()> {
        self.open_many_with(addr, target, n, None)
    }

    /// [`Client::open_many`], the requests offering `extensions` when given.
    fn open_many_with(
        &mut self,
        addr: SocketAddr,
        target: &str,
        n: usize,
        extensions: Option<&str>,
    ) -> Res<()> {
        self.conns.clear();
        self.conns.resize_with(n, Conn::new);
        let request = upgrade_request_with(addr, target, extensions);
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut next, mut dialing, mut open) = (0, 0, 0);
        while open < n {
            while dialing < DIAL_CONCURRENCY && next < n {
                self.conns[next]
                    .dial(self.poll.registry(), next, addr, &request)
                    .map_err(|e| format!("connect #{next}: {e}"))?;
                next += 1;
                dialing += 1;
            }
            if Instant::now() > deadline {
                return Err(format!("only {open} of {n} connections upgraded in 60 s"));
            }
            self.poll(Duration::from_millis(100))?;
            for ev in self.events.iter() {
                let (slot, generation) = slot_of(ev.token());
                let Some(c) = self.conns.get_mut(slot) else {
                    continue;
                };
                if c.generation != generation || c.state != State::Dialing {
                    continue;
                }
                if c.step_dial(&mut self.buf)
                    .map_err(|e| format!("connection #{slot}: {e}"))?
                {
                    dialing -= 1;
                    open += 1;
                }
            }
        }
        Ok(())
    }

    /// Close handshake on every connection (bounded), then drops them all. Returns how
    /// many did not complete it (the server's close frame, then EOF, within 2 s), and the
    /// first reason.
    fn close_all(&mut self) -> (usize, Option<String>) {
        let (mut unclean, mut first) = (0, None);
        for c in &mut self.conns {
            if c.state == State::Open {
                if let Err(e) = c.start_close() {
                    unclean += 1;
                    first.get_or_insert(format!("close write: {e}"));
                    c.drop_socket();
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.conns.iter().any(|c| c.state == State::Closing) && Instant::now() < deadline {
            if self.poll(Duration::from_millis(50)).is_err() {
                break;
            }
            for ev in self.events.iter() {
                let (slot, generation) = slot_of(ev.token());
                if let Some(c) = self.conns.get_mut(slot) {
                    if c.generation == generation && c.state == State::Closing {
                        if let Err(e) = c.step_closing(&mut self.buf) {
                            unclean += 1;
                            first.get_or_insert(e);
                        }
                    }
                }
            }
        }
        let stuck = self
            .conns
            .iter()
            .filter(|c| c.state == State::Closing)
            .count();
        if stuck > 0 {
            unclean += stuck;
            first.get_or_insert_with(|| "no close frame and EOF within 2 s".into());
        }
        self.conns.clear();
        (unclean, first)
    }

    /// Echo row: `conns` connections to `ep`, `depth` copies of the payload's frame in
    /// flight on each.
    fn echo_row(
        &mut self,
        ep: &Endpoint,
        window: Duration,
        conns: usize,
        payload: &Payload,
        depth: usize,
    ) -> Res<Measure> {
        self.open_many_with(ep.addr, ep.path, conns, ep.extensions)?;
        let result = self.echo(ep, window, payload, depth);
        let (unclean, first) = self.close_all();
        // After a failed row, unclean closes are expected; after a good one, they are news.
        if result.is_ok() && unclean > 0 {
            eprintln!(
                "{}: {unclean} of {conns} connections failed the close handshake, first: {}",
                ep.name,
                first.unwrap_or_default()
            );
        }
        result
    }

    fn echo(
        &mut self,
        ep: &Endpoint,
        window: Duration,
        payload: &Payload,
        depth: usize,
    ) -> Res<Measure> {
        let (frame, expect) = (&payload.frame[..], &payload.expect);
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
            .map_err(|e| format!("histogram: {e}"))?;
        let t0 = Instant::now();
        let (start, end) = (t0 + WARMUP, t0 + WARMUP + window);
        let mut cpu = CpuWindow::new(ep.pid, ep.upstream_pid);
        let (mut measuring, mut sending) = (false, true);
        let (mut received, mut in_flight) = (0u64, 0usize);
        for c in &mut self.conns {
            for _ in 0..depth {
                c.out.extend_from_slice(frame);
                c.sent_at.push_back(t0);
                in_flight += 1;
            }
            c.flush().map_err(|e| format!("write: {e}"))?;
        }
        let mut cpu_used = (None, None, None);
        loop {
            let now = Instant::now();
            if !measuring && now >= start {
                measuring = true;
                cpu.begin();
            }
            if sending && now >= end {
                sending = false;
                cpu_used = cpu.end();
            }
            if !sending && in_flight == 0 {
                break;
            }
            if !sending && now >= end + Duration::from_secs(5) {
                // Echoes still missing 5 s after the window: a stall, not a slow server.
                return Err(format!(
                    "{in_flight} echoes still missing 5 s after the window ended"
                ));
            }
            self.poll(Duration::from_millis(20))?;
            for ev in self.events.iter() {
                let (slot, generation) = slot_of(ev.token());
                let Some(c) = self.conns.get_mut(slot) else {
                    continue;
                };
                if c.generation != generation || c.state != State::Open {
                    continue;
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    loop {
                        let n = match c.read(&mut self.buf) {
                            Ok(None) => break,
                            Ok(Some(0)) => return Err(format!("server closed connection #{slot}")),
                            Ok(Some(n)) => n,
                            Err(e) => return Err(format!("read #{slot}: {e}")),
                        };
                        let mut seen = Seen::default();
                        c.frames
                            .feed(&self.buf[..n], Some(expect), &mut seen)
                            .map_err(|e| format!("connection #{slot}: {e}"))?;
                        if seen.close {
                            return Err(format!("server sent a close frame on #{slot}"));
                        }
                        let now = Instant::now();
                        let counted = now >= start && now < end;
                        for _ in 0..seen.data {
                            let sent = c.sent_at.pop_front().ok_or("echo of an unsent message")?;
                            in_flight -= 1;
                            if counted {
                                received += 1;
                                if sent >= start {
                                    let ns = now.duration_since(sent).as_nanos();
                                    hist.saturating_record(u64::try_from(ns).unwrap_or(u64::MAX));
                                }
                            }
                            if sending && now < end {
                                c.out.extend_from_slice(frame);
                                c.sent_at.push_back(now);
                                in_flight += 1;
                            }
                        }
                        if n < self.buf.len() {
                            break;
                        }
                    }
                }
                c.flush().map_err(|e| format!("write #{slot}: {e}"))?;
            }
        }
        let quantile = |q: f64| (!hist.is_empty()).then(|| hist.value_at_quantile(q) as f64 / 1e3);
        Ok(Measure {
            rate: received as f64 / window.as_secs_f64(),
            p50_us: quantile(0.50),
            p99_us: quantile(0.99),
            server_cpu: cpu_used.0,
            client_cpu: cpu_used.1,
            upstream_cpu: cpu_used.2,
            errors: 0,
        })
    }

    /// Handshake row: `HANDSHAKE_CONCURRENCY` connectors, each looping connect, upgrade,
    /// close handshake, until the window ends.
    fn storm_row(&mut self, srv: &Endpoint, window: Duration, target: &str) -> Res<Measure> {
        let request = upgrade_request(srv.addr, target);
        self.conns.clear();
        self.conns.resize_with(HANDSHAKE_CONCURRENCY, Conn::new);
        let t0 = Instant::now();
        let (start, end) = (t0 + WARMUP, t0 + WARMUP + window);
        let mut cpu = CpuWindow::new(srv.pid, None);
        let cpu_used;
        let (mut measuring, mut completed, mut errors) = (false, 0u64, 0u64);
        let mut first_error: Option<String> = None;
        for slot in 0..self.conns.len() {
            self.conns[slot]
                .dial(self.poll.registry(), slot, srv.addr, &request)
                .map_err(|e| format!("connect: {e}"))?;
        }
        loop {
            let now = Instant::now();
            if !measuring && now >= start {
                measuring = true;
                cpu.begin();
            }
            if now >= end {
                cpu_used = cpu.end();
                break;
            }
            self.poll(Duration::from_millis(20))?;
            for ev in self.events.iter() {
                let (slot, generation) = slot_of(ev.token());
                let Some(c) = self.conns.get_mut(slot) else {
                    continue;
                };
                if c.generation != generation {
                    continue;
                }
                let step = match c.state {
                    State::Dialing => c.step_dial(&mut self.buf).and_then(|upgraded| {
                        if upgraded {
                            c.start_close().map_err(|e| format!("close write: {e}"))?;
                            c.step_closing(&mut self.buf)
                        } else {
                            Ok(false)
                        }
                    }),
                    State::Closing => c.step_closing(&mut self.buf),
                    State::Free | State::Open => continue,
                };
                let redial = match step {
                    Ok(done) => {
                        let now = Instant::now();
                        if done && now >= start && now < end {
                            completed += 1;
                        }
                        done
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                        if errors > 1000 {
                            return Err(format!(
                                "{errors} failed handshakes, first: {}",
                                first_error.unwrap_or_default()
                            ));
                        }
                        true
                    }
                };
                if redial {
                    if let Err(e) = c.dial(self.poll.registry(), slot, srv.addr, &request) {
                        errors += 1;
                        first_error.get_or_insert(format!("connect: {e}"));
                        c.drop_socket();
                    }
                }
            }
            // Slots whose connect failed outright get another try.
            for (slot, c) in self.conns.iter_mut().enumerate() {
                if c.state == State::Free {
                    let _ = c.dial(self.poll.registry(), slot, srv.addr, &request);
                }
            }
        }
        self.conns.clear();
        if let Some(e) = &first_error {
            eprintln!("{}: {errors} handshake errors, first: {e}", srv.name);
        }
        Ok(Measure {
            rate: completed as f64 / window.as_secs_f64(),
            server_cpu: cpu_used.0,
            client_cpu: cpu_used.1,
            errors,
            ..Measure::default()
        })
    }

    /// Idle row: RSS of the server before and after `n` idle upgraded connections.
    fn idle_row(&mut self, srv: &Server, n: usize) -> Res<Measure> {
        // Warm-up: one-time allocations (buffers, slab, runtime) are not per connection.
        self.open_many(srv.addr, "/echo", 100)?;
        self.close_all();
        std::thread::sleep(Duration::from_millis(300));
        let before = rss_bytes(srv.pid)?;
        self.open_many(srv.addr, "/echo", n)?;
        std::thread::sleep(Duration::from_secs(1));
        let after = rss_bytes(srv.pid)?;
        self.conns.clear();
        Ok(Measure {
            rate: after.saturating_sub(before) as f64 / n.max(1) as f64,
            ..Measure::default()
        })
    }
}
