//! The bench client: one thread, one mio poll, raw masked frames; only the headers of
//! what comes back are parsed (payloads are checked where a row asks).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};
use wsgate::proto::ws::frame::{write_masked_frame, OpCode};

pub(crate) use crate::frames::Payload;
use crate::frames::{FrameReader, Seen};

use crate::report::Measure;
use crate::servers::{rss_bytes, slab_bytes, CpuWindow, Endpoint, Server};
use crate::tls::TlsConn;
use crate::{Res, WARMUP};

/// Concurrent connectors in the handshake rows.
pub(crate) const HANDSHAKE_CONCURRENCY: usize = 64;
/// Connections per loopback source address when a set is larger than this: connection i
/// of a set binds 127.0.0.(first + i / PER_SOURCE) before connecting, `first` moving on
/// with every set (see `Client::next_source`), so that more connections than the
/// ephemeral port range (~28k per source address) fit. Well under it: Linux hands out one
/// parity of the range first (odd ports to bind, even ones to connect) and scans the whole
/// half on every call once that half is full (seen here: 19,000 connections from
/// 127.0.0.1 cut every further connect() to some 100 per second), and ports of an earlier
/// set linger in TIME_WAIT. `WSGATE_BENCH_PER_SOURCE` overrides it.
pub(crate) const PER_SOURCE: usize = 5_000;

/// [`PER_SOURCE`], or `WSGATE_BENCH_PER_SOURCE` when set (at least 1).
fn per_source() -> usize {
    std::env::var("WSGATE_BENCH_PER_SOURCE")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(PER_SOURCE)
        .max(1)
}
/// Handshakes in flight while opening a set of connections.
const DIAL_CONCURRENCY: usize = 256;
/// Client masking key (servers unmask whatever the key; a constant keeps frames prebuilt).
pub(crate) const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// `Sec-WebSocket-Key` of every request (RFC 6455 §1.3 sample nonce).
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// mio tokens carry the slot in their low bits and a generation above it.
const SLOT_BITS: u32 = 20;
/// Mask of the slot bits of a token.
const SLOT_MASK: usize = (1 << SLOT_BITS) - 1;

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
    /// wss: the TLS session between the buffers above and the socket.
    tls: Option<Box<TlsConn>>,
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
            tls: None,
        }
    }

    fn token(&self, slot: usize) -> Token {
        Token(slot | (self.generation << SLOT_BITS))
    }

    /// Starts a TCP connect (and a TLS handshake with `tls`) and queues the upgrade request.
    fn dial(
        &mut self,
        registry: &Registry,
        slot: usize,
        (addr, tls): Dest,
        source: Option<std::net::Ipv4Addr>,
        request: &[u8],
    ) -> io::Result<()> {
        self.drop_socket();
        self.tls = tls.map(TlsConn::new).transpose()?.map(Box::new);
        let mut sock = match source {
            None => TcpStream::connect(addr)?,
            Some(ip) => {
                // socket2: bind the source address, then a non-blocking connect.
                use socket2::{Domain, Protocol, Socket, Type};
                let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
                s.set_nonblocking(true)?;
                s.bind(&SocketAddr::from((ip, 0)).into())?;
                match s.connect(&addr.into()) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                    Err(e) => return Err(e),
                }
                TcpStream::from_std(std::net::TcpStream::from(s))
            }
        };
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
        if let Some(tls) = self.tls.as_mut() {
            tls.send(sock, &self.out, &mut self.out_pos)?;
        }
        // Plain ws (TLS took all of `out` into its session, or the socket is full).
        while self.out_pos < self.out.len() && self.tls.is_none() {
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
        if let Some(tls) = self.tls.as_mut() {
            return tls.read(sock, buf);
        }
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
pub(crate) struct Client {
    poll: Poll,
    events: Events,
    buf: Vec<u8>,
    conns: Vec<Conn>,
    /// The last octet of the next connection set's first source address (127.0.0.x,
    /// 2..=254, in turn): a new set does not take the previous sets' addresses, whose
    /// ports linger in TIME_WAIT toward the same servers (reusing them at once left
    /// connections stalled or closed during the handshake).
    next_source: u8,
}

/// Where a connection goes: the server's address, and the client TLS config for wss.
type Dest<'a> = (SocketAddr, Option<&'a Arc<rustls::ClientConfig>>);

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
    pub(crate) fn new() -> Res<Client> {
        Ok(Client {
            poll: Poll::new().map_err(|e| format!("poll: {e}"))?,
            events: Events::with_capacity(1024),
            buf: vec![0; 256 * 1024],
            conns: Vec::new(),
            next_source: 2,
        })
    }

    fn poll(&mut self, timeout: Duration) -> Res<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(format!("poll: {e}")),
        }
    }

    /// Opens `n` upgraded connections to `ep` at its path (replacing any held), the
    /// requests offering its extensions when it has some.
    fn open_many_with(&mut self, ep: &Endpoint, n: usize) -> Res<()> {
        let request = upgrade_request_with(ep.addr, ep.path, ep.extensions);
        self.open_many_requests((ep.addr, ep.tls.as_ref()), n, &[request])
    }

    /// Opens `n` upgraded connections to `to` (replacing any held), connection `i`
    /// sending `requests[i % requests.len()]`.
    fn open_many_requests(&mut self, to: Dest, n: usize, requests: &[Vec<u8>]) -> Res<()> {
        self.open_many_from(to, n, requests, false)
    }

    /// [`Client::open_many_requests`]; with `spread`, from the next unused source
    /// addresses (127.0.0.2 to .254) even when `n` fits one (127.0.0.1 stays free for
    /// other connections).
    fn open_many_from(
        &mut self,
        to: Dest,
        n: usize,
        requests: &[Vec<u8>],
        spread: bool,
    ) -> Res<()> {
        if requests.is_empty() {
            return Err("no upgrade request".into());
        }
        self.conns.clear();
        self.conns.resize_with(n, Conn::new);
        let per_source = per_source();
        // Source addresses 127.0.0.first ..= 127.0.0.(first + k - 1), within 2..=254.
        let spread = spread || n > per_source;
        let first = if spread {
            let k = n.div_ceil(per_source);
            if k > 253 {
                return Err(format!(
                    "{n} connections need more than 253 source addresses"
                ));
            }
            let mut first = usize::from(self.next_source);
            if first + k > 255 {
                first = 2;
            }
            self.next_source = u8::try_from(first + k)
                .ok()
                .filter(|&x| x <= 254)
                .unwrap_or(2);
            first
        } else {
            0
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut next, mut dialing, mut open) = (0, 0, 0);
        while open < n {
            while dialing < DIAL_CONCURRENCY && next < n {
                self.conns[next]
                    .dial(
                        self.poll.registry(),
                        next,
                        to,
                        spread.then(|| {
                            let k = u8::try_from(first + next / per_source).unwrap_or(u8::MAX);
                            std::net::Ipv4Addr::new(127, 0, 0, k)
                        }),
                        &requests[next % requests.len()],
                    )
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
    pub(crate) fn echo_row(
        &mut self,
        ep: &Endpoint,
        window: Duration,
        conns: usize,
        payload: &Payload,
        depth: usize,
    ) -> Res<Measure> {
        self.open_many_with(ep, conns)?;
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
            ops: received as f64 / window.as_secs_f64(),
            p50_us: quantile(0.50),
            p99_us: quantile(0.99),
            server_cpu: cpu_used.0,
            client_cpu: cpu_used.1,
            upstream_cpu: cpu_used.2,
            ..Measure::default()
        })
    }

    /// Handshake row: `HANDSHAKE_CONCURRENCY` connectors, each looping connect, upgrade,
    /// close handshake, until the window ends. Each connect takes the next of `targets`
    /// in turn (one target: the same request every time).
    pub(crate) fn storm_row(
        &mut self,
        srv: &Endpoint,
        window: Duration,
        targets: &[String],
    ) -> Res<Measure> {
        self.conns.clear();
        self.storm(srv, window, targets)
    }

    /// The scale curve's handshake row: [`Client::storm_row`] at `srv`'s path while `idle`
    /// other upgraded connections to the same server stay open (untouched, from
    /// 127.0.0.2 on, [`PER_SOURCE`] per address).
    pub(crate) fn storm_with_idle(
        &mut self,
        srv: &Endpoint,
        window: Duration,
        idle: usize,
    ) -> Res<Measure> {
        let request = upgrade_request(srv.addr, srv.path);
        // The storm dials from 127.0.0.1: the idle set takes the other addresses.
        self.open_many_from((srv.addr, srv.tls.as_ref()), idle, &[request], true)?;
        let result = self.storm(srv, window, &[srv.path.to_string()]);
        self.conns.clear();
        result
    }

    /// The handshake storm on [`HANDSHAKE_CONCURRENCY`] new slots after the connections
    /// held, which it leaves alone.
    fn storm(&mut self, srv: &Endpoint, window: Duration, targets: &[String]) -> Res<Measure> {
        let to = (srv.addr, srv.tls.as_ref());
        let requests: Vec<Vec<u8>> = targets
            .iter()
            .map(|t| upgrade_request(srv.addr, t))
            .collect();
        if requests.is_empty() {
            return Err("no request target".into());
        }
        let mut turn = 0usize;
        let mut next_request = || {
            turn = turn.wrapping_add(1);
            &requests[turn % requests.len()]
        };
        let base = self.conns.len();
        self.conns
            .resize_with(base + HANDSHAKE_CONCURRENCY, Conn::new);
        let t0 = Instant::now();
        let (start, end) = (t0 + WARMUP, t0 + WARMUP + window);
        let mut cpu = CpuWindow::new(srv.pid, None);
        let cpu_used;
        let (mut measuring, mut completed, mut errors) = (false, 0u64, 0u64);
        let mut first_error: Option<String> = None;
        for slot in base..self.conns.len() {
            self.conns[slot]
                .dial(self.poll.registry(), slot, to, None, next_request())
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
                    if let Err(e) = c.dial(self.poll.registry(), slot, to, None, next_request()) {
                        errors += 1;
                        first_error.get_or_insert(format!("connect: {e}"));
                        c.drop_socket();
                    }
                }
            }
            // Slots whose connect failed outright get another try.
            for (slot, c) in self.conns.iter_mut().enumerate().skip(base) {
                if c.state == State::Free {
                    let _ = c.dial(self.poll.registry(), slot, to, None, next_request());
                }
            }
        }
        self.conns.truncate(base);
        if let Some(e) = &first_error {
            eprintln!("{}: {errors} handshake errors, first: {e}", srv.name);
        }
        Ok(Measure {
            rate: completed as f64 / window.as_secs_f64(),
            ops: completed as f64 / window.as_secs_f64(),
            server_cpu: cpu_used.0,
            client_cpu: cpu_used.1,
            errors,
            ..Measure::default()
        })
    }

    /// Idle row: RSS of the server before and after `n` idle upgraded connections.
    pub(crate) fn idle_row(&mut self, srv: &Server, n: usize) -> Res<Measure> {
        self.idle_row_targets(srv, n, &["/echo".to_string()])
    }

    /// [`Client::idle_row`], connection `i` upgrading at `targets[i % targets.len()]`
    /// (the authenticated rows: one token for all, or one token per connection).
    pub(crate) fn idle_row_targets(
        &mut self,
        srv: &Server,
        n: usize,
        targets: &[String],
    ) -> Res<Measure> {
        let requests: Vec<Vec<u8>> = targets
            .iter()
            .map(|t| upgrade_request(srv.addr, t))
            .collect();
        // Warm-up: one-time allocations (buffers, slab, runtime) are not per connection.
        // It takes the last 100 targets: with `n + 100` distinct tokens the measured
        // connections (targets 0..n) all bring tokens the server has not seen.
        let warm: Vec<Vec<u8>> = requests.iter().rev().take(100).cloned().collect();
        self.open_many_requests((srv.addr, None), 100, &warm)?;
        self.close_all();
        std::thread::sleep(Duration::from_millis(300));
        let (before, slab_before) = (rss_bytes(srv.pid)?, slab_bytes());
        self.open_many_requests((srv.addr, None), n, &requests)?;
        std::thread::sleep(Duration::from_secs(1));
        let (after, slab_after) = (rss_bytes(srv.pid)?, slab_bytes());
        self.conns.clear();
        let per_conn = |b: u64, a: u64| a.saturating_sub(b) as f64 / n.max(1) as f64;
        Ok(Measure {
            rate: per_conn(before, after),
            slab_per_conn: slab_before.zip(slab_after).map(|(b, a)| per_conn(b, a)),
            ..Measure::default()
        })
    }
}
