//! Test harness: start the real `wsgate` binary on 127.0.0.1:0 with a config written
//! to a fresh directory, find its port from its "listening on" log line, and talk to
//! it through raw sockets or tungstenite.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod deflate;
pub mod raw_inflate;
mod upstream;
pub use upstream::{head_values, raw_upstream, Up};

/// Upper bound for any single wait in a test; a bound, never a synchronisation.
pub const WAIT: Duration = Duration::from_secs(10);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh, unique directory under the system temp dir (removed on drop).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("wsgate-it-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.0.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, contents).expect("write file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_wsgate")
}

/// Runs `wsgate ARGS`, returning (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run wsgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running gateway process.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: TempDir,
    log: Arc<Mutex<String>>,
    lines: crossbeam_channel::Receiver<String>,
}

impl Gateway {
    /// Starts `wsgate serve -c <dir>/wsgate.toml` with `config` (which should listen on
    /// 127.0.0.1:0); `dir` may already hold key files the config names.
    pub fn start_in(dir: TempDir, config: &str) -> Gateway {
        Gateway::start_limited(dir, config, None, &[])
    }

    /// Same, with extra environment variables for the gateway process.
    pub fn start_with_env(dir: TempDir, config: &str, env: &[(&str, &str)]) -> Gateway {
        Gateway::start_limited(dir, config, None, env)
    }

    /// Like `start_with_env`, with the process's file-descriptor limit (RLIMIT_NOFILE) set
    /// to `nofile` when given (through `sh -c 'ulimit -n N && exec ...'`, so the child's
    /// pid is the gateway's).
    pub fn start_limited(
        dir: TempDir,
        config: &str,
        nofile: Option<u32>,
        env: &[(&str, &str)],
    ) -> Gateway {
        let cfg = dir.write("wsgate.toml", config);
        let mut command = match nofile {
            None => Command::new(bin()),
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin());
                c
            }
        };
        let mut child = command
            .args(["serve", "-c"])
            .arg(&cfg)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wsgate");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = crossbeam_channel::unbounded();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("log lock").push_str(&line);
                sink.lock().expect("log lock").push('\n');
                let _ = tx.send(line);
            }
        });
        let addr = loop {
            match rx.recv_timeout(WAIT) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let a = rest.split_whitespace().next().expect("addr");
                        break a.parse().expect("listen addr");
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    panic!(
                        "gateway did not start ({status:?}); log:\n{}",
                        log.lock().expect("log lock")
                    );
                }
            }
        };
        Gateway {
            child,
            addr,
            dir,
            log,
            lines: rx,
        }
    }

    /// Starts with a config and no extra files.
    pub fn start(config: &str) -> Gateway {
        Gateway::start_in(TempDir::new(), config)
    }

    /// Everything logged so far.
    pub fn logs(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits (bounded) for a log line containing `needle`; returns it.
    pub fn wait_log(&self, needle: &str) -> String {
        if let Some(l) = self.logs().lines().find(|l| l.contains(needle)) {
            return l.to_string();
        }
        // One deadline for the whole wait: a gateway that keeps logging other lines must
        // not keep the wait alive forever.
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => panic!("no log line containing {needle:?}; log:\n{}", self.logs()),
            }
        }
    }

    /// Waits (bounded) until `n` log lines contain `needle`.
    pub fn wait_log_count(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let seen = self.logs().lines().filter(|l| l.contains(needle)).count();
            if seen >= n {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if self.lines.recv_timeout(left).is_err() {
                panic!(
                    "{seen} of {n} log lines containing {needle:?}; log:\n{}",
                    self.logs()
                );
            }
        }
    }

    /// Waits (bounded) until each of `workers` workers has logged its `nth` configuration
    /// reload. The control plane logs "reloaded" once it has sent the new configuration;
    /// each worker takes it on its next loop turn, so a handshake right after "reloaded"
    /// can still meet the old configuration on a worker that has not got to it.
    pub fn wait_workers_reloaded(&self, workers: usize, nth: usize) {
        for w in 0..workers {
            self.wait_log_count(&format!("worker {w}: configuration reloaded"), nth);
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// A raw TCP connection with read/write timeouts.
    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        s.set_write_timeout(Some(WAIT)).expect("timeout");
        s.set_nodelay(true).expect("nodelay");
        s
    }

    /// Sends a signal to the gateway process.
    pub fn signal(&self, sig: i32) {
        // SAFETY-free: plain libc call through std's process id.
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits (bounded) for exit; returns the exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st.code();
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal valid upgrade request for `path` with extra header lines.
pub fn upgrade_request(path: &str, extra: &[&str]) -> String {
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for h in extra {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r
}

/// A parsed HTTP response head plus body (read until the head, then Content-Length).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads an HTTP response head from any stream, byte by byte (nothing after the head is
/// consumed), up to EOF at the latest; returns it as text.
pub fn read_head<R: Read>(s: &mut R) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => buf.push(byte[0]),
            Err(e) => panic!(
                "reading response head: {e}; got {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Reads one HTTP response from `s`. For a 101, stops after the head.
pub fn read_response(s: &mut TcpStream) -> Response {
    let text = read_head(s);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut resp = Response {
        status,
        headers,
        body: String::new(),
    };
    if status != 101 {
        let len: usize = resp
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        s.read_exact(&mut body).expect("body");
        resp.body = String::from_utf8_lossy(&body).into_owned();
    }
    resp
}

/// Sends `req` on a new connection and reads the response.
pub fn request(gw: &Gateway, req: &[u8]) -> (Response, TcpStream) {
    let mut s = gw.connect();
    s.write_all(req).expect("send request");
    let r = read_response(&mut s);
    (r, s)
}

/// Reads until EOF (bounded by the socket timeout); true if the peer closed cleanly.
pub fn reads_to_eof(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// A masked client frame.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// One server frame: (first byte, payload). Panics if the frame is masked.
pub(crate) fn read_any(s: &mut TcpStream) -> (u8, Vec<u8>) {
    read_raw_frame(s, false)
}

/// One frame from the gateway acting as a client (to an upstream): (first byte, payload
/// unmasked). Panics unless it is masked (RFC 6455 §5.3).
pub(crate) fn read_masked(s: &mut TcpStream) -> (u8, Vec<u8>) {
    read_raw_frame(s, true)
}

/// One frame whose mask bit must be `masked`: (first byte, payload, unmasked).
fn read_raw_frame(s: &mut TcpStream, masked: bool) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).expect("frame header");
    if masked {
        assert_ne!(h[1] & 0x80, 0, "client frames are masked");
    } else {
        assert_eq!(h[1] & 0x80, 0, "server frames must not be masked");
    }
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).expect("len16");
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).expect("len64");
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut key = [0u8; 4];
    if masked {
        s.read_exact(&mut key).expect("mask");
    }
    let mut payload = vec![0; len];
    s.read_exact(&mut payload).expect("payload");
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
    (h[0], payload)
}

/// One server frame: (fin, opcode, payload). Panics if the frame is masked.
pub fn read_frame(s: &mut TcpStream) -> (bool, u8, Vec<u8>) {
    let (first, payload) = read_any(s);
    (first & 0x80 != 0, first & 0x0f, payload)
}

/// Reads frames until a close frame; returns its code (None for an empty close).
pub fn read_close(s: &mut TcpStream) -> (Option<u16>, String) {
    loop {
        let (_, op, p) = read_frame(s);
        if op == 8 {
            if p.len() >= 2 {
                return (
                    Some(u16::from_be_bytes([p[0], p[1]])),
                    String::from_utf8_lossy(&p[2..]).into_owned(),
                );
            }
            return (None, String::new());
        }
    }
}

/// Opens a WebSocket with raw bytes; asserts the 101.
pub fn open(gw: &Gateway, path: &str, extra: &[&str]) -> TcpStream {
    let (r, s) = request(gw, upgrade_request(path, extra).as_bytes());
    assert_eq!(r.status, 101, "expected 101, got {r:?}");
    s
}

// ------------------------------------------------------------------------------------
// HS256 tokens and the admin listener, shared by the files that sign their own tokens.

/// Seconds since the Unix epoch (for `iat` and `exp`).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The JOSE header of a plain HS256 token.
pub const HS256_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// The same, with `kid = "hs"`.
pub const HS256_HEADER_KID_HS: &str = r#"{"alg":"HS256","typ":"JWT","kid":"hs"}"#;

/// An HS256 token over `payload` (claims JSON) with `header`, signed with `secret`.
pub fn hs256(secret: &[u8], header: &str, payload: &str) -> String {
    wsgate::cli::token::sign(
        wsgate::auth::keys::Alg::HS256,
        &wsgate::cli::token::SigningKey::Hmac(secret.to_vec()),
        header,
        payload,
    )
    .expect("sign")
}

/// An HS256 token for `sub` with a `jti` and a `scope`, issued 10 s ago and valid for
/// `ttl` more seconds.
pub fn jti_token(secret: &[u8], sub: &str, jti: &str, scope: &str, ttl: u64) -> String {
    let now = now_unix();
    let payload = format!(
        r#"{{"sub":"{sub}","jti":"{jti}","iat":{},"exp":{},"scope":"{scope}"}}"#,
        now - 10,
        now + ttl
    );
    hs256(secret, HS256_HEADER, &payload)
}

/// Writes `hs.secret` (base64url of `secret`) into `dir`, for
/// `secret_file = "hs.secret"`.
pub fn write_hs_secret(dir: &TempDir, secret: &[u8]) {
    use base64::Engine as _;
    dir.write(
        "hs.secret",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
    );
}

/// A fresh directory holding `hs.secret` (see `write_hs_secret`).
pub fn hs_secret_dir(secret: &[u8]) -> TempDir {
    let dir = TempDir::new();
    write_hs_secret(&dir, secret);
    dir
}

/// The admin listener's address, from its "admin listening on" log line.
pub fn admin_addr(gw: &Gateway) -> SocketAddr {
    gw.wait_log("admin listening on ")
        .split("admin listening on ")
        .nth(1)
        .and_then(|a| a.split_whitespace().next())
        // In the JSON log format the address ends inside a JSON string.
        .map(|a| a.trim_end_matches(['"', ',', '}']))
        .expect("admin addr")
        .parse()
        .expect("addr")
}

/// An admin request: `extra` header lines (each ending in CRLF) after `Host`, then the
/// bearer token when given, `Content-Length` and `body`.
pub fn admin_request(
    method: &str,
    path: &str,
    extra: &str,
    bearer: Option<&str>,
    body: &str,
) -> String {
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{extra}{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Sends `request` on `s` and reads the answer until the listener closes; returns
/// (status, body).
pub fn exchange(mut s: TcpStream, request: &str) -> (u16, String) {
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(request.as_bytes()).expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

// ------------------------------------------------------------------------------------
// Helpers for frames.rs, lifecycle.rs and tls.rs (generic over the stream so that the
// same checks run over TLS).

/// A client frame with an explicit first byte (FIN, RSV bits, opcode), masked with
/// `mask` when given; the length is encoded in its minimal form.
pub fn raw_frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![first];
    let bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(bit | len as u8);
    } else if len <= 0xffff {
        out.push(bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// The mask key `client_frame` uses.
pub const CLIENT_KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A close frame body: the code in network byte order, then the reason bytes.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// One server frame from any stream: (header bytes, fin, opcode, payload).
/// Panics if the frame is masked or has RSV bits set.
pub fn read_frame_from<R: Read>(s: &mut R) -> (Vec<u8>, bool, u8, Vec<u8>) {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).expect("frame header");
    assert_eq!(h[1] & 0x80, 0, "server frames must not be masked");
    assert_eq!(h[0] & 0x70, 0, "server frames must not set RSV bits");
    let mut header = h.to_vec();
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).expect("len16");
            header.extend_from_slice(&b);
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).expect("len64");
            header.extend_from_slice(&b);
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0; len];
    s.read_exact(&mut payload).expect("payload");
    (header, h[0] & 0x80 != 0, h[0] & 0x0f, payload)
}

/// The next server frame must be a close frame: returns (code, reason), None for an
/// empty close. Panics on any other frame.
pub fn expect_close<R: Read>(s: &mut R) -> (Option<u16>, String) {
    let (_, fin, op, p) = read_frame_from(s);
    assert!(fin, "close frames are never fragmented");
    assert_eq!(
        op, 8,
        "expected a close frame, got opcode {op} payload {p:?}"
    );
    if p.is_empty() {
        return (None, String::new());
    }
    assert!(p.len() >= 2, "a close body has at least a code: {p:?}");
    let reason = std::str::from_utf8(&p[2..]).expect("close reason is UTF-8");
    (Some(u16::from_be_bytes([p[0], p[1]])), reason.to_string())
}

/// The peer's next read must be a clean EOF (bounded by the socket timeout).
pub fn expect_eof<R: Read>(s: &mut R) {
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected EOF, got {n} more bytes: {:?}", &buf[..n]),
        Err(e) => panic!("expected EOF, got error {e}"),
    }
}

/// The next frame is a close with `code`, and TCP is closed after it.
pub fn expect_closed_with<R: Read>(s: &mut R, code: u16) -> String {
    let (got, reason) = expect_close(s);
    assert_eq!(got, Some(code), "close reason {reason:?}");
    expect_eof(s);
    reason
}

/// Sends one masked, unfragmented message and expects it back unchanged as one frame.
pub fn echo_once<S: Read + Write>(s: &mut S, opcode: u8, payload: &[u8]) {
    s.write_all(&client_frame(true, opcode, payload))
        .expect("send");
    let (_, fin, op, p) = read_frame_from(s);
    assert!(fin);
    assert_eq!(op, opcode);
    assert!(p == payload, "echo of {} bytes differs", payload.len());
}

/// Closes a tungstenite client and reads until the close handshake ends; any data
/// message after our close fails the test.
pub fn close_tungstenite<S: Read + Write>(ws: &mut tungstenite::WebSocket<S>) {
    ws.close(None).expect("close");
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(_)) => {}
            Ok(m) => panic!("unexpected {m:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("close: {e}"),
        }
    }
}

/// A public echo route at /echo with `workers` workers; `server` and `limits` are extra
/// lines for those sections (per_ip_handshakes is raised so that tests may open many
/// connections quickly).
pub fn echo_config(workers: usize, server: &str, limits: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
workers = {workers}
{server}

[limits]
per_ip_handshakes = "1000/s"
{limits}

[[route]]
path = "/echo"
backend = "echo"
public = true
"#
    )
}

/// The gateway process's resident set size in KiB (Linux /proc/PID/status, VmRSS).
pub fn rss_kib(gw: &Gateway) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", gw.child.id())).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// CPU time (user + system, in clock ticks, usually 1/100 s) that process `pid` has used
/// (Linux /proc/PID/stat fields 14 and 15).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // The command name (field 2) may hold spaces; the fields after it follow its ')'.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    utime + stime
}

/// A 429 with a `Retry-After` of 1 to 60 whole seconds (SPEC §4).
pub fn assert_429(r: &Response) {
    assert_eq!(r.status, 429, "{r:?}");
    let secs: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After in whole seconds");
    assert!((1..=60).contains(&secs), "{r:?}");
}

/// Sends `req` on `s` and reads the answer; None when the gateway closed the connection
/// without sending a byte (SPEC §4: a connection past `max_connections` or
/// `per_ip_connections` is closed at accept, with no response).
pub fn answer_or_closed(mut s: TcpStream, req: &[u8]) -> Option<(Response, TcpStream)> {
    // The write may fail when the close (a reset over the unread request) came first.
    let _ = s.write_all(req);
    let mut first = [0u8; 1];
    match s.peek(&mut first) {
        Ok(0) => None,
        Ok(_) => {
            let r = read_response(&mut s);
            Some((r, s))
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ) =>
        {
            None
        }
        Err(e) => panic!("waiting for an answer or a close: {e}"),
    }
}

/// A loopback port for a listener that needs a fixed one (the admin listener, which
/// `wsgate revoke` and `wsgate user remove` find through the config), free when picked.
/// It is taken below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), which
/// `bind(0)` and every outgoing connection draw from: a port from that range that a test
/// frees while it restarts a gateway can meanwhile become the source port of another
/// test's connection, and the restarted gateway then fails to bind it (seen under stress:
/// the restart exited after its login listener came up, and the test got ECONNREFUSED).
pub fn fixed_port() -> u16 {
    const FIRST: usize = 10_000;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<usize>().ok())
        .unwrap_or(32_768);
    let span = ephemeral.saturating_sub(FIRST).max(1);
    // Another test binary picking at the same time starts elsewhere.
    let offset = std::process::id() as usize * 7919;
    for _ in 0..span {
        let port = FIRST + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = u16::try_from(port).expect("a port number");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{ephemeral}");
}

/// A listener bound where the gateway will find `localhost` (its first address from
/// /etc/hosts), on a free port.
pub fn bind_localhost() -> std::net::TcpListener {
    let local = std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 0))
        .expect("resolve localhost")
        .next()
        .expect("an address");
    std::net::TcpListener::bind(local).expect("bind")
}
