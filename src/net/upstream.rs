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

use super::tls::{flush_records, UpstreamTls};
use super::token::ConnId;
use crate::proto::http::client::{parse_upstream_response, UpstreamResponse};
use crate::proto::ws::close::{parse_close_payload, write_close_payload};
use crate::proto::ws::deflate::{ClientOffer, PerMessageDeflate, Ticket};
use crate::proto::ws::frame::{parse_header, write_frame, write_masked_frame, OpCode};
use crate::proto::ws::message::MessageKind;
use crate::proto::ws::message::Utf8Validator;

mod compressed;

/// Set in a mio token for events of a connection's upstream socket.
pub const UPSTREAM_BIT: usize = 1 << 63;

/// The token for `id`'s upstream socket.
pub fn upstream_token(id: ConnId) -> Token {
    Token(id.token().0 | UPSTREAM_BIT)
}

/// The TLS client side for a `wss://` target (SPEC §5: SNI and the certificate check
/// from the URL's host).
fn open_tls(tls: Option<&UpstreamTls>) -> io::Result<Option<Box<rustls::ClientConnection>>> {
    tls.map(|t| {
        rustls::ClientConnection::new(t.config.clone(), t.name.clone())
            .map(Box::new)
            .map_err(io::Error::other)
    })
    .transpose()
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
    /// The TLS client side for `wss://` upstreams.
    tls: Option<Box<rustls::ClientConnection>>,
    /// The TCP connect completed (the TLS handshake may still be running).
    tcp_up: bool,
    /// Index of the route's upstream in use.
    pub target: usize,
    /// Targets already tried during this client handshake.
    pub tried: Vec<usize>,
    /// The address dialed.
    pub addr: SocketAddr,
    /// The target's other addresses not yet tried in this handshake, in order.
    pub spare_addrs: Vec<SocketAddr>,
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
    /// An upstream data frame longer than `max_frame`, being relayed in fragments.
    split: Option<Split>,
    /// permessage-deflate on this leg (the offer, then the agreement) and the relay's state
    /// whenever either leg compresses (SPEC §10 "Proxied routes"); `None`: neither does,
    /// and frames pass through ([`UpstreamLeg::relay`]).
    deflate: Option<Box<compressed::Deflating>>,
    /// The gateway's own messages to the client (SPEC §6) held while a relayed upstream
    /// message is in progress toward it (RFC 6455 §5.4: no other data message between
    /// its fragments); at most one of each kind, written right after its final fragment.
    held: Vec<(Notice, Box<[u8]>)>,
    /// The upstream socket was read to WouldBlock (or a short read drained it) and no
    /// readiness event came since: edge-triggered, it needs no read until the next one.
    pub quiet: bool,
    /// The same for the client's socket of this proxied connection.
    pub client_quiet: bool,
}

/// A text message the gateway itself sends the client (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// `wsgate.expiring`.
    Expiring,
    /// `wsgate.refreshed`.
    Refreshed,
    /// `wsgate.refresh_failed`.
    RefreshFailed,
}

/// An upstream data frame longer than `max_frame` whose header was consumed: its payload
/// goes to the client as fragments of at most `max_frame` bytes (SPEC §5: relayed, not
/// refused; RFC 6455 §5.4: an intermediary may re-fragment a message).
#[derive(Debug, Clone, Copy)]
struct Split {
    /// The frame's opcode (the first fragment's; the rest are continuations).
    opcode: OpCode,
    /// The frame ended its message.
    fin: bool,
    /// Payload bytes not yet relayed.
    remaining: u64,
    /// A fragment of it has gone out.
    started: bool,
    /// Its message is text (UTF-8 checked as it goes).
    text: bool,
}

impl UpstreamLeg {
    /// Starts a non-blocking connect to `addr` and registers the socket.
    #[allow(clippy::too_many_arguments)]
    pub fn connect(
        registry: &Registry,
        id: ConnId,
        addr: SocketAddr,
        target: usize,
        tls: Option<&UpstreamTls>,
        requests: Vec<Vec<u8>>,
        key: [u8; 24],
        offered: Vec<String>,
        client_accept: [u8; 28],
        deadline: Instant,
    ) -> io::Result<UpstreamLeg> {
        let tls = open_tls(tls)?;
        let socket = open_socket(registry, id, addr)?;
        Ok(UpstreamLeg {
            socket,
            tls,
            tcp_up: false,
            target,
            tried: vec![target],
            addr,
            spare_addrs: Vec::new(),
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
            split: None,
            deflate: None,
            held: Vec::new(),
            quiet: false,
            client_quiet: false,
        })
    }

    /// SPEC §10: the upgrade request offers permessage-deflate as `offer`, with `ticket`
    /// reserved for the most state an answer can lead to (kept until the upstream answers).
    pub fn offer_deflate(&mut self, offer: ClientOffer, ticket: Option<Ticket>) {
        self.deflate = Some(Box::new(compressed::Deflating::offered(offer, ticket)));
    }

    /// The upstream said 101; `client_deflates`: the client leg negotiated permessage-deflate.
    /// When neither leg compresses the relay passes frames through as they are; otherwise it
    /// reads whole messages and inflates and deflates as each leg agreed.
    pub fn settle_relay(&mut self, client_deflates: bool) {
        let upstream_deflates = self.deflate.as_ref().is_some_and(|d| d.agreed());
        if !upstream_deflates && !client_deflates {
            self.deflate = None;
        } else if self.deflate.is_none() {
            self.deflate = Some(Box::default());
        }
    }

    /// Whether the relay inflates or deflates (either leg negotiated permessage-deflate).
    pub fn deflating(&self) -> bool {
        self.deflate.is_some()
    }

    /// Whether the leg talks TLS (`wss://`): plaintext may wait inside rustls, so a short
    /// read does not prove the socket drained.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether a relayed upstream message is in progress toward the client (a fragment of
    /// it went out, or its header was consumed, and its final fragment did not): the
    /// gateway's own messages must wait ([`UpstreamLeg::hold`]).
    pub fn mid_message(&self) -> bool {
        match &self.deflate {
            Some(d) => d.mid_message(),
            None => self.in_message.is_some(),
        }
    }

    /// Holds the gateway's message `text` of kind `notice` until the relayed message in
    /// progress ends (RFC 6455 §5.4). At most one of each kind waits: a newer one replaces
    /// the older (the client learns the latest state) and goes last.
    pub fn hold(&mut self, notice: Notice, text: &[u8]) {
        self.held.retain(|(n, _)| *n != notice);
        self.held.push((notice, text.into()));
    }

    /// Writes the held messages to `out` (the relayed message just ended), compressed
    /// for a client leg that agreed to permessage-deflate when `min_size` or more.
    fn release_held(&mut self, client: Option<&mut PerMessageDeflate>, out: &mut Vec<u8>) {
        if self.held.is_empty() {
            return;
        }
        let mut client = client;
        for (_, text) in std::mem::take(&mut self.held) {
            match client.as_deref_mut().filter(|c| c.compresses(text.len())) {
                Some(c) => c.deflate_frame(OpCode::Text, &text, true, None, out),
                None => write_frame(out, true, OpCode::Text, &text),
            }
        }
    }

    /// Writes held messages when no relayed message is in progress (any still held after
    /// a relay turn); `client` as in [`UpstreamLeg::relay_deflate`].
    pub fn flush_held(&mut self, client: Option<&mut PerMessageDeflate>, out: &mut Vec<u8>) {
        if !self.mid_message() {
            self.release_held(client, out);
        }
    }

    /// Drops held messages (the client's session is closing: no data message goes out).
    pub fn drop_held(&mut self) {
        self.held = Vec::new();
    }

    /// Replaces the socket with a connect to another target (after a failure).
    pub fn reconnect(
        &mut self,
        registry: &Registry,
        id: ConnId,
        addr: SocketAddr,
        target: usize,
        tls: Option<&UpstreamTls>,
    ) -> io::Result<()> {
        let _ = registry.deregister(&mut self.socket);
        self.tls = open_tls(tls)?;
        self.tcp_up = false;
        self.socket = open_socket(registry, id, addr)?;
        self.target = target;
        self.addr = addr;
        if !self.tried.contains(&target) {
            self.tried.push(target);
        }
        self.state = LegState::Connecting;
        self.wbuf.clear();
        self.rbuf.clear();
        Ok(())
    }

    /// While connecting: Ok(true) once connected (and, for `wss://`, the TLS handshake
    /// done with a certificate that verified), Ok(false) while in progress, the reason when
    /// the connect failed (the OS error of a refused or unreachable connect, the TLS alert
    /// or certificate error): try another upstream.
    pub fn poll_connected(&mut self) -> io::Result<bool> {
        if !self.tcp_up {
            // mio: after a writable event, `take_error` then `peer_addr` tell the outcome.
            match self.socket.take_error() {
                Ok(Some(e)) | Err(e) => return Err(e),
                Ok(None) => {}
            }
            match self.socket.peer_addr() {
                Ok(_) => self.tcp_up = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        if let Some(tls) = &mut self.tls {
            if !tls_handshake(tls, &mut self.socket).map_err(io::Error::other)? {
                return Ok(false);
            }
        }
        let Some(request) = self.requests.get_mut(self.target).map(std::mem::take) else {
            // No request for this target: treat as a failed connect (never built so).
            return Err(io::Error::other("no upgrade request for this upstream"));
        };
        self.state = LegState::Handshaking;
        self.wbuf = request;
        self.requests = Vec::new();
        Ok(true)
    }

    /// Writes what the socket takes. Err: the upstream is gone.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.state == LegState::Connecting {
            return Ok(());
        }
        let written = match &mut self.tls {
            None => {
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
                written
            }
            Some(tls) => {
                let mut written = 0;
                loop {
                    if written < self.wbuf.len() {
                        written += tls.writer().write(&self.wbuf[written..])?;
                    }
                    // Stop when the socket is full or everything has been handed over;
                    // otherwise rustls' buffer was full and is now empty: go again.
                    if !flush_records(tls, &mut self.socket)? || written >= self.wbuf.len() {
                        break;
                    }
                }
                written
            }
        };
        if written >= self.wbuf.len() {
            self.wbuf.clear();
            if self.state == LegState::Closing && self.tls.as_ref().is_none_or(|t| !t.wants_write())
            {
                if let Some(tls) = &mut self.tls {
                    tls.send_close_notify();
                    let _ = flush_records(tls, &mut self.socket);
                }
                let _ = self.socket.shutdown(Shutdown::Write);
            }
        } else if written > 0 {
            self.wbuf.drain(..written);
        }
        Ok(())
    }

    /// Reads once into `buf` (plaintext, through TLS for `wss://`): Ok(0) at EOF.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            loop {
                match self.socket.read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => return other,
                }
            }
        };
        loop {
            // Plaintext already decrypted comes first.
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // A TCP close without close_notify: the upstream is gone all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match tls.read_tls(&mut self.socket) {
                Ok(0) => return Ok(0),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = tls.process_new_packets() {
                // Send the alert rustls queued, best effort.
                let _ = flush_records(tls, &mut self.socket);
                return Err(io::Error::other(e));
            }
            if tls.wants_write() {
                let _ = flush_records(tls, &mut self.socket);
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
        // SPEC §10: compressed when this leg agreed to it and the message is `min_size` or
        // more (RFC 7692 §7.2.1; RSV1 on its one frame, masked as every client frame).
        match self
            .deflate
            .as_deref_mut()
            .and_then(compressed::Deflating::extension)
        {
            Some(ext) if ext.compresses(payload.len()) => {
                ext.deflate_frame(opcode, payload, true, Some(key), &mut self.wbuf);
            }
            _ => write_masked_frame(&mut self.wbuf, true, opcode, payload, key),
        }
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

/// Drives a client TLS handshake as far as the socket allows: Ok(true) once complete,
/// Ok(false) while waiting for the socket, Err with the reason when it failed (a
/// certificate that does not verify, an alert, a close).
fn tls_handshake(
    tls: &mut rustls::ClientConnection,
    socket: &mut TcpStream,
) -> Result<bool, String> {
    loop {
        flush_records(tls, socket).map_err(|e| format!("tls: {e}"))?;
        if !tls.is_handshaking() {
            return Ok(true);
        }
        if !tls.wants_read() {
            return Ok(false);
        }
        match tls.read_tls(socket) {
            Ok(0) => return Err("tls: connection closed during the handshake".to_owned()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("tls: {e}")),
        }
        if let Err(e) = tls.process_new_packets() {
            // Send the alert rustls queued (e.g. bad_certificate), best effort.
            let _ = flush_records(tls, socket);
            return Err(format!("tls: {e}"));
        }
    }
}

/// What the relay found in the upstream's bytes.
pub enum Relayed {
    /// Keep going.
    Continue,
    /// The upstream closed with this code and reason: relay them to the client.
    Closed(u16, String),
    /// The upstream broke RFC 6455 (or RFC 7692): the client gets 1014.
    Broken,
    /// A message crossed one of the gateway's own bounds (SPEC §10: `max_message` while
    /// inflating): both legs are closed with this error's code.
    Limit(crate::proto::error::ProtocolError),
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
        let deflate_offer = self.deflate.as_ref().and_then(|d| d.offer());
        let mut extension = None;
        let result = match parse_upstream_response(
            &self.rbuf,
            &self.key,
            &offered,
            deflate_offer.as_ref(),
        ) {
            Ok(None) => return Answer::Pending,
            Err(_) => return Answer::Bad,
            Ok(Some(UpstreamResponse::Switching {
                protocol,
                extension: agreed,
                head_len,
            })) => {
                extension = agreed;
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
                if let Some(deflate) = self.deflate.as_deref_mut() {
                    deflate.answered(extension);
                }
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
    /// an upstream that pings without reading costs bounded memory, as a client does. A
    /// data frame longer than `max_frame` is relayed as fragments of `max_frame` bytes, so
    /// the gateway never holds more than one such piece of it (bounded memory).
    pub fn relay(&mut self, client_out: &mut Vec<u8>, limit: usize, max_frame: u64) -> Relayed {
        let rbuf = std::mem::take(&mut self.rbuf);
        let (result, used) = self.relay_from(&rbuf, client_out, limit, max_frame);
        self.rbuf = rbuf;
        if used > 0 {
            self.rbuf.drain(..used);
        }
        result
    }

    /// [`UpstreamLeg::relay`] of bytes just read, while `rbuf` is empty: complete frames go
    /// from `input` straight to `client_out` and only the rest is kept in `rbuf` (one copy
    /// of the relayed bytes instead of two).
    pub fn relay_read(
        &mut self,
        input: &[u8],
        client_out: &mut Vec<u8>,
        limit: usize,
        max_frame: u64,
    ) -> Relayed {
        debug_assert!(self.rbuf.is_empty());
        let (result, used) = self.relay_from(input, client_out, limit, max_frame);
        self.rbuf
            .extend_from_slice(input.get(used..).unwrap_or_default());
        result
    }

    /// The relay over `input`: what it found, and how many bytes of `input` it used.
    fn relay_from(
        &mut self,
        input: &[u8],
        client_out: &mut Vec<u8>,
        limit: usize,
        max_frame: u64,
    ) -> (Relayed, usize) {
        let piece_max = max_frame.max(1);
        let mut pos = 0;
        let result = loop {
            if client_out.len() >= limit {
                break Relayed::Continue;
            }
            if let Some(split) = &mut self.split {
                let want = split.remaining.min(piece_max) as usize;
                let Some(piece) = input.get(pos..pos + want) else {
                    break Relayed::Continue;
                };
                split.remaining -= want as u64;
                let last = split.remaining == 0;
                let fin = last && split.fin;
                if split.text
                    && (self.utf8.feed(piece).is_err() || (fin && self.utf8.finish().is_err()))
                {
                    break Relayed::Broken;
                }
                let opcode = if split.started {
                    OpCode::Continuation
                } else {
                    split.opcode
                };
                write_frame(client_out, fin, opcode, piece);
                split.started = true;
                pos += want;
                if last {
                    self.in_message = if split.fin { None } else { Some(split.text) };
                    self.split = None;
                    if fin {
                        self.release_held(None, client_out);
                    }
                }
                continue;
            }
            let rest = input.get(pos..).unwrap_or_default();
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
                || (op.is_control() && (header.payload_len > 125 || !header.fin))
            {
                break Relayed::Broken;
            }
            if header.payload_len > max_frame {
                // RFC 6455 §5.4: same sequencing rules as a frame relayed whole.
                let text = match (op, self.in_message) {
                    (OpCode::Continuation, Some(text)) => text,
                    (OpCode::Text, None) => true,
                    (OpCode::Binary, None) => false,
                    _ => break Relayed::Broken,
                };
                if op == OpCode::Text {
                    self.utf8.reset();
                }
                self.in_message = Some(text);
                self.split = Some(Split {
                    opcode: op,
                    fin: header.fin,
                    remaining: header.payload_len,
                    started: false,
                    text,
                });
                pos += header_len;
                continue;
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
                    if header.fin && !self.held.is_empty() {
                        self.release_held(None, client_out);
                    }
                }
            }
            pos += total;
        };
        (result, pos)
    }
}
