//! The upstream leg of a proxied connection (SPEC §5 "upstream backend"): a non-blocking
//! connect inside the worker's loop, the client side of the upgrade, and the relay of
//! frames both ways with backpressure. The leg belongs to its client connection: one
//! slab entry, one `ConnId`, the leg's socket registered under the same id with
//! [`UPSTREAM_BIT`] set.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use ring::rand::SecureRandom;

use super::token::ConnId;
use crate::proto::http::client::{parse_upstream_response, UpstreamResponse};
use crate::proto::ws::close::{parse_close_payload, write_close_payload};
use crate::proto::ws::frame::{parse_header, write_masked_frame, OpCode};
use crate::proto::ws::message::MessageKind;
use crate::proto::ws::message::Utf8Validator;

/// Set in a mio token for events of a connection's upstream socket.
pub const UPSTREAM_BIT: usize = 1 << 63;

/// The token for `id`'s upstream socket.
pub fn upstream_token(id: ConnId) -> Token {
    Token(id.token().0 | UPSTREAM_BIT)
}

/// A non-blocking connect to `addr`, registered under `id`'s upstream token.
fn open_socket(registry: &Registry, id: ConnId, addr: SocketAddr) -> io::Result<TcpStream> {
    let mut socket = TcpStream::connect(addr)?;
    let _ = socket.set_nodelay(true);
    registry.register(
        &mut socket,
        upstream_token(id),
        Interest::READABLE | Interest::WRITABLE,
    )?;
    Ok(socket)
}

/// Where the leg stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegState {
    /// TCP connect in progress.
    Connecting,
    /// Upgrade request sent (or being sent); waiting for the upstream's answer.
    Handshaking,
    /// Frames flow both ways.
    Open,
    /// A close frame went out (ours or the relayed one); no more data frames.
    Closing,
    /// The upstream is gone or finished.
    Done,
}

/// The upstream half of a proxied connection.
pub struct UpstreamLeg {
    /// The socket to the upstream.
    pub socket: TcpStream,
    /// Index of the route's upstream in use.
    pub target: usize,
    /// Targets already tried during this client handshake.
    pub tried: Vec<usize>,
    /// Where the leg stands.
    pub state: LegState,
    /// The upgrade request for each target of the route, by index (SPEC §5: each names its
    /// own upstream's `Host` and path); the connected target's is sent, all are freed then.
    pub requests: Vec<Vec<u8>>,
    /// Our `Sec-WebSocket-Key` to the upstream.
    pub key: [u8; 24],
    /// The client's non-token subprotocols, offered to the upstream.
    pub offered: Vec<String>,
    /// The `Sec-WebSocket-Accept` owed to the client once the upstream says 101.
    pub client_accept: [u8; 28],
    /// Bytes from the upstream not yet relayed (a partial frame).
    pub rbuf: Vec<u8>,
    /// Bytes for the upstream not yet written.
    pub wbuf: Vec<u8>,
    /// `upstream_timeout`: the upgrade must be answered by then.
    pub deadline: Instant,
    /// The upstream sent EOF.
    pub eof: bool,
    /// Our close frame to the upstream is queued.
    pub close_sent: bool,
    /// Masking keys, drawn from the system CSPRNG in batches (RFC 6455 §5.3: keys must
    /// be unpredictable; one syscall per 256 frames instead of one per frame).
    keys: [u8; 1024],
    keys_used: usize,
    /// A fragmented upstream message is in progress (RFC 6455 §5.4), and whether it is
    /// text (validated as it is relayed, so the client never receives invalid UTF-8).
    in_message: Option<bool>,
    utf8: Utf8Validator,
}

impl UpstreamLeg {
    /// Starts a non-blocking connect to `addr` and registers the socket.
    #[allow(clippy::too_many_arguments)]
    pub fn connect(
        registry: &Registry,
        id: ConnId,
        addr: SocketAddr,
        target: usize,
        requests: Vec<Vec<u8>>,
        key: [u8; 24],
        offered: Vec<String>,
        client_accept: [u8; 28],
        deadline: Instant,
    ) -> io::Result<UpstreamLeg> {
        let socket = open_socket(registry, id, addr)?;
        Ok(UpstreamLeg {
            socket,
            target,
            tried: vec![target],
            state: LegState::Connecting,
            requests,
            key,
            offered,
            client_accept,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            deadline,
            eof: false,
            close_sent: false,
            keys: [0; 1024],
            keys_used: 1024,
            in_message: None,
            utf8: Utf8Validator::default(),
        })
    }

    /// Replaces the socket with a connect to another target (after a failure).
    pub fn reconnect(
        &mut self,
        registry: &Registry,
        id: ConnId,
        addr: SocketAddr,
        target: usize,
    ) -> io::Result<()> {
        let _ = registry.deregister(&mut self.socket);
        self.socket = open_socket(registry, id, addr)?;
        self.target = target;
        self.tried.push(target);
        self.state = LegState::Connecting;
        self.wbuf.clear();
        self.rbuf.clear();
        Ok(())
    }

    /// While connecting: Ok(true) once connected, Ok(false) while in progress, the OS
    /// error when the connect failed (refused, unreachable): try another upstream.
    pub fn poll_connected(&mut self) -> io::Result<bool> {
        // mio: after a writable event, `take_error` then `peer_addr` tell the outcome.
        match self.socket.take_error() {
            Ok(Some(e)) | Err(e) => return Err(e),
            Ok(None) => {}
        }
        match self.socket.peer_addr() {
            Ok(_) => {
                let Some(request) = self.requests.get_mut(self.target).map(std::mem::take) else {
                    // No request for this target: treat as a failed connect (never built so).
                    return Err(io::Error::other("no upgrade request for this upstream"));
                };
                self.state = LegState::Handshaking;
                self.wbuf = request;
                self.requests = Vec::new();
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes what the socket takes. Err: the upstream is gone.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.state == LegState::Connecting {
            return Ok(());
        }
        let mut written = 0;
        while written < self.wbuf.len() {
            match self.socket.write(&self.wbuf[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if written >= self.wbuf.len() {
            self.wbuf.clear();
            if self.state == LegState::Closing {
                let _ = self.socket.shutdown(Shutdown::Write);
            }
        } else if written > 0 {
            self.wbuf.drain(..written);
        }
        Ok(())
    }

    /// Reads once into `buf`: Ok(0) at EOF.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.socket.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn mask_key(&mut self) -> [u8; 4] {
        if self.keys_used + 4 > self.keys.len() {
            // A CSPRNG failure leaves the previous (still secret) keys in place; the
            // masking still happens, which is what §5.3 protects.
            let _ = ring::rand::SystemRandom::new().fill(&mut self.keys);
            self.keys_used = 0;
        }
        let mut k = [0u8; 4];
        k.copy_from_slice(&self.keys[self.keys_used..self.keys_used + 4]);
        self.keys_used += 4;
        k
    }

    /// Forwards one complete client message as a masked frame (RFC 6455 §5.1: a client
    /// masks every frame).
    pub fn send_message(&mut self, kind: MessageKind, payload: &[u8]) {
        if self.state != LegState::Open {
            return;
        }
        let opcode = match kind {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        };
        let key = self.mask_key();
        write_masked_frame(&mut self.wbuf, true, opcode, payload, key);
    }

    /// Sends a close to the upstream (once): `code` 1005 means "no status", an empty close.
    pub fn send_close(&mut self, code: u16, reason: &str) {
        if self.close_sent || !matches!(self.state, LegState::Open) {
            return;
        }
        let mut payload = Vec::with_capacity(2 + reason.len());
        // 1005 "no status" is never sent: it means an empty close.
        if code != 1005 {
            write_close_payload(&mut payload, code, reason);
        }
        let key = self.mask_key();
        write_masked_frame(&mut self.wbuf, true, OpCode::Close, &payload, key);
        self.close_sent = true;
        self.state = LegState::Closing;
    }
}

/// What the relay found in the upstream's bytes.
pub enum Relayed {
    /// Keep going.
    Continue,
    /// The upstream closed with this code and reason: relay them to the client.
    Closed(u16, String),
    /// The upstream broke RFC 6455: the client gets 1014.
    Broken,
}

/// The upstream's answer to our upgrade request.
pub enum Answer {
    /// Not complete yet.
    Pending,
    /// 101: select this protocol for the client.
    Switching(Option<String>),
    /// Any other status: relay it.
    Rejected {
        /// The upstream's status.
        status: u16,
        /// Its body (capped).
        body: String,
        /// Its `WWW-Authenticate`.
        www_authenticate: Option<String>,
        /// Its `Retry-After`.
        retry_after: Option<String>,
    },
    /// Malformed, or a wrong accept key: 502.
    Bad,
}

impl UpstreamLeg {
    /// Parses the upstream's answer from `rbuf`; on 101 the head is consumed and the
    /// bytes after it stay in `rbuf` as frames.
    pub fn answer(&mut self) -> Answer {
        let offered: Vec<&str> = self.offered.iter().map(String::as_str).collect();
        let result = match parse_upstream_response(&self.rbuf, &self.key, &offered) {
            Ok(None) => return Answer::Pending,
            Err(_) => return Answer::Bad,
            Ok(Some(UpstreamResponse::Switching { protocol, head_len })) => {
                (Some(protocol.map(str::to_owned)), head_len, None)
            }
            Ok(Some(UpstreamResponse::Rejected {
                status,
                body,
                www_authenticate,
                retry_after,
                consumed,
            })) => (
                None,
                consumed,
                Some(Answer::Rejected {
                    status,
                    body: String::from_utf8_lossy(body).into_owned(),
                    www_authenticate: www_authenticate.map(str::to_owned),
                    retry_after: retry_after.map(str::to_owned),
                }),
            ),
        };
        match result {
            (Some(protocol), head_len, _) => {
                self.rbuf.drain(..head_len);
                self.state = LegState::Open;
                Answer::Switching(protocol)
            }
            (None, _, Some(rejected)) => {
                self.state = LegState::Done;
                rejected
            }
            _ => Answer::Bad,
        }
    }

    /// Relays every complete upstream frame in `rbuf` to `client_out` (data frames as
    /// they are: unmasked server frames are valid for the client), answers pings, and
    /// stops when `client_out` reaches `limit` (backpressure) or a close arrives. A ping
    /// waits in `rbuf` while the pongs already queued for the upstream reach `limit`:
    /// an upstream that pings without reading costs bounded memory, as a client does.
    /// Frames longer than `max_frame` break the leg (bounded memory).
    pub fn relay(&mut self, client_out: &mut Vec<u8>, limit: usize, max_frame: u64) -> Relayed {
        let mut pos = 0;
        let result = loop {
            if client_out.len() >= limit {
                break Relayed::Continue;
            }
            let rest = &self.rbuf[pos..];
            let (header, header_len) = match parse_header(rest) {
                Ok(Some(h)) => h,
                Ok(None) => break Relayed::Continue,
                Err(_) => break Relayed::Broken,
            };
            // RFC 6455 §5.1: a server MUST NOT mask; §5.2: no extension, no RSV bits.
            let Some(op) = OpCode::from_u8(header.opcode) else {
                break Relayed::Broken;
            };
            if header.mask.is_some()
                || header.rsv != 0
                || header.payload_len > max_frame
                || (op.is_control() && (header.payload_len > 125 || !header.fin))
            {
                break Relayed::Broken;
            }
            let total = header_len + header.payload_len as usize;
            let Some(frame) = rest.get(..total) else {
                break Relayed::Continue;
            };
            let payload = &frame[header_len..];
            if op == OpCode::Ping && self.wbuf.len() >= limit {
                break Relayed::Continue;
            }
            match op {
                OpCode::Ping => {
                    let payload = payload.to_vec();
                    let key = self.mask_key();
                    write_masked_frame(&mut self.wbuf, true, OpCode::Pong, &payload, key);
                }
                OpCode::Pong => {}
                OpCode::Close => {
                    let (code, reason) = match parse_close_payload(payload) {
                        Ok(Some((code, reason))) => (code, reason.to_owned()),
                        Ok(None) => (1005, String::new()),
                        Err(_) => break Relayed::Broken,
                    };
                    let echo = payload.to_vec();
                    pos += total;
                    // RFC 6455 §5.5.1: answer the close (once), then no more frames.
                    if !self.close_sent {
                        let key = self.mask_key();
                        write_masked_frame(&mut self.wbuf, true, OpCode::Close, &echo, key);
                        self.close_sent = true;
                    }
                    self.state = LegState::Closing;
                    break Relayed::Closed(code, reason);
                }
                OpCode::Continuation | OpCode::Text | OpCode::Binary => {
                    // RFC 6455 §5.4: a continuation needs a message in progress, a new
                    // message needs none; text must be UTF-8 (§8.1).
                    let text = match (op, self.in_message) {
                        (OpCode::Continuation, Some(text)) => text,
                        (OpCode::Text, None) => true,
                        (OpCode::Binary, None) => false,
                        _ => break Relayed::Broken,
                    };
                    if text {
                        if op == OpCode::Text {
                            self.utf8.reset();
                        }
                        if self.utf8.feed(payload).is_err()
                            || (header.fin && self.utf8.finish().is_err())
                        {
                            break Relayed::Broken;
                        }
                    }
                    self.in_message = if header.fin { None } else { Some(text) };
                    client_out.extend_from_slice(frame);
                }
            }
            pos += total;
        };
        if pos > 0 {
            self.rbuf.drain(..pos);
        }
        result
    }
}
