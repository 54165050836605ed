//! The wss rows (`WSGATE_BENCH_ROWS=tls`, issue #15): wsgate with `[tls]` next to
//! tokio-tungstenite behind tokio-rustls (`peers::tt_tls_server`), both with the same
//! rustls `ServerConfig` (ring provider, TLS 1.2 and 1.3, ALPN `http/1.1`: the one
//! `wsgate::net::tls::server_config` builds) and the same self-signed ECDSA P-256
//! certificate for "localhost" (rcgen). Each row is measured over wss and over plain ws
//! on the same kind of server in the same alternation, so the TLS cost is the wss row's
//! server CPU per operation minus the ws row's.
//!
//! The client side is the bench's mio client: a connection of an endpoint with a TLS
//! config carries a `rustls::ClientConnection` ([`TlsConn`]) between its frame buffers and
//! the socket. The client trusts only the generated certificate and keeps no sessions,
//! so every wss handshake is a full one (no resumption).

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection};
use wsgate::proto::ws::frame::OpCode;

use crate::client::{Client, Payload, HANDSHAKE_CONCURRENCY};
use crate::peers::{ROLE_TT, ROLE_TT_TLS};
use crate::report::{Measure, Row};
use crate::servers::{Endpoint, Server};
use crate::{alternate, Res, Settings, ECHO_CONNS, PIPELINE_DEPTH, WSGATE_CONFIG};

/// Env vars that give the tokio-rustls peer its certificate chain and key (PEM files).
pub(crate) const CERT_VAR: &str = "WSGATE_BENCH_TLS_CERT";
pub(crate) const KEY_VAR: &str = "WSGATE_BENCH_TLS_KEY";
/// The name in the certificate, checked by the client and sent as SNI.
const SERVER_NAME: &str = "localhost";

/// One client connection's TLS session.
pub(crate) struct TlsConn {
    conn: ClientConnection,
    /// The server's close_notify or TCP EOF was seen.
    eof: bool,
}

impl TlsConn {
    pub(crate) fn new(config: &Arc<ClientConfig>) -> io::Result<TlsConn> {
        let name = ServerName::try_from(SERVER_NAME).map_err(io::Error::other)?;
        let conn = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
        Ok(TlsConn { conn, eof: false })
    }

    /// Writes TLS records until none are left (true) or the socket is full (false).
    fn write_records(&mut self, sock: &mut TcpStream) -> io::Result<bool> {
        match wsgate::net::tls::flush_records(&mut self.conn, sock) {
            // A connect in progress: the writable edge comes when it completes.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            r => r,
        }
    }

    /// Hands `out[*pos..]` to rustls (which holds it until the handshake is done) and
    /// writes records until the socket is full or nothing is left.
    pub(crate) fn send(
        &mut self,
        sock: &mut TcpStream,
        out: &[u8],
        pos: &mut usize,
    ) -> io::Result<()> {
        loop {
            let n = if *pos < out.len() {
                self.conn.writer().write(&out[*pos..])?
            } else {
                0
            };
            *pos += n;
            if !self.write_records(sock)? || *pos == out.len() || n == 0 {
                return Ok(());
            }
        }
    }

    /// Plaintext into `buf`. Like a plain socket read under edge-triggered readiness: a
    /// result shorter than `buf` means the socket is drained (`None`: nothing at all);
    /// `Some(0)` is EOF (close_notify, or the TCP FIN without one).
    pub(crate) fn read(
        &mut self,
        sock: &mut TcpStream,
        buf: &mut [u8],
    ) -> io::Result<Option<usize>> {
        let mut filled = 0;
        loop {
            // What rustls already decrypted first: it bounds how much it buffers.
            while filled < buf.len() {
                match self.conn.reader().read(&mut buf[filled..]) {
                    Ok(0) => {
                        self.eof = true;
                        break;
                    }
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        self.eof = true;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if filled == buf.len() || self.eof {
                return Ok(Some(filled));
            }
            match self.conn.read_tls(sock) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::NotConnected =>
                {
                    return Ok((filled > 0).then_some(filled));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                // The alert, if the socket takes it.
                let _ = self.write_records(sock);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Handshake messages (the client Finished) and the plaintext held until then.
            self.write_records(sock)?;
        }
    }
}

/// A self-signed certificate for "localhost" (rcgen, ECDSA P-256) written to
/// `dir/cert.pem` and `dir/key.pem`; returns their paths and a client config that trusts
/// only it, keeps no sessions (every handshake is full) and offers ALPN `http/1.1`.
fn make_cert(dir: &Path) -> Res<(PathBuf, PathBuf, Arc<ClientConfig>)> {
    let ck = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
        .map_err(|e| format!("rcgen: {e}"))?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    fs::write(&cert, ck.cert.pem()).map_err(|e| format!("{}: {e}", cert.display()))?;
    // Owner-only, as wsgate asks of a private key.
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key)
        .and_then(|mut f| f.write_all(ck.key_pair.serialize_pem().as_bytes()))
        .map_err(|e| format!("{}: {e}", key.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ck.cert.der().to_vec()))
        .map_err(|e| format!("trust anchor: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((cert, key, Arc::new(config)))
}

/// The tokio-rustls peer's server config: the PEM files [`CERT_VAR`] and [`KEY_VAR`]
/// name, through the same builder as wsgate's `[tls]`.
pub(crate) fn server_config_from_env() -> Res<Arc<rustls::ServerConfig>> {
    let var = |name: &str| std::env::var_os(name).ok_or(format!("{name} is not set"));
    let (cert, key) = (var(CERT_VAR)?, var(KEY_VAR)?);
    let chain = CertificateDer::pem_file_iter(&cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", Path::new(&cert).display()))?;
    let key = PrivateKeyDer::from_pem_file(&key)
        .map_err(|e| format!("{}: {e}", Path::new(&key).display()))?;
    wsgate::net::tls::server_config(chain, key)
}

/// One blocking TLS handshake to `addr`: what the rows negotiate (protocol, cipher suite,
/// key exchange group), for the printed context.
fn negotiated(addr: std::net::SocketAddr, config: &Arc<ClientConfig>) -> Res<String> {
    let name = ServerName::try_from(SERVER_NAME).map_err(|e| e.to_string())?;
    let mut conn = ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
    let mut sock = std::net::TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
    }
    let or_none = |v: Option<String>| v.unwrap_or_else(|| "none".into());
    Ok(format!(
        "{} {} {}, ALPN {}",
        or_none(conn.protocol_version().map(|v| format!("{v:?}"))),
        or_none(
            conn.negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
        ),
        or_none(
            conn.negotiated_key_exchange_group()
                .map(|g| format!("{:?}", g.name()))
        ),
        or_none(
            conn.alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned())
        )
    ))
}

/// The wss rows: echo 100 x 32 B (1 in flight), pipelined 100 x 16 x 1 KiB, and
/// handshakes/s (64 concurrent: TCP connect, TLS handshake, upgrade, close handshake),
/// for wsgate and tokio-tungstenite, each over wss and over ws in the same alternation.
pub(crate) fn tls_rows(
    dir: &Path,
    plain_config: &Path,
    s: &Settings,
    client: &mut Client,
    rows: &mut Vec<Row>,
) -> Res<()> {
    let (cert, key, tls) = make_cert(dir)?;
    let config = dir.join("wsgate-tls.toml");
    let text = format!("{WSGATE_CONFIG}\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n");
    fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
    let ws_tls = Server::wsgate(&config)?;
    let ws_plain = Server::wsgate(plain_config)?;
    let tt_env = [(CERT_VAR, cert.as_path()), (KEY_VAR, key.as_path())];
    let tt_tls = Server::peer_with("tokio-tungstenite (rustls)", ROLE_TT_TLS, &tt_env)?;
    let tt_plain = Server::peer("tokio-tungstenite", ROLE_TT)?;
    println!(
        "wss rows: wsgate pid {} (wss) and {} (ws), tokio-tungstenite + tokio-rustls pid {} \
         (wss), tokio-tungstenite pid {} (ws); negotiated: wsgate {}; tokio-rustls {}; \
         client: no session resumption (every handshake full)\n",
        ws_tls.pid,
        ws_plain.pid,
        tt_tls.pid,
        tt_plain.pid,
        negotiated(ws_tls.addr, &tls)?,
        negotiated(tt_tls.addr, &tls)?,
    );
    let wss = |server: &Server, name| Endpoint {
        name,
        tls: Some(tls.clone()),
        ..server.endpoint("/echo")
    };
    let eps = [
        wss(&ws_tls, "wsgate wss"),
        Endpoint {
            name: "wsgate ws",
            ..ws_plain.endpoint("/echo")
        },
        wss(&tt_tls, "tokio-tungstenite wss"),
        Endpoint {
            name: "tokio-tungstenite ws",
            ..tt_plain.endpoint("/echo")
        },
    ];
    let text32 = Payload::new(OpCode::Text, b'x', 32);
    let bin1k = Payload::new(OpCode::Binary, 0xa5, 1024);
    let echo_rows = [
        (
            "wss echo 32 B",
            "wss echo 100 conn x 32 B, 1 in flight: msg/s",
            &text32,
            1,
        ),
        (
            "wss pipelined",
            "wss pipelined 100 conn x 16 x 1 KiB: msg/s",
            &bin1k,
            PIPELINE_DEPTH,
        ),
    ];
    for (name, label, payload, depth) in echo_rows {
        let [wt, wp, tt, tp] = alternate(s, name, &eps, |ep| {
            client.echo_row(ep, s.window, ECHO_CONNS, payload, depth)
        })?;
        push_rows(rows, label, [&wt, &wp, &tt, &tp]);
        rows.push(Row::two_values(
            "  wss round trip p50 (us)",
            wt.p50_us,
            tt.p50_us,
        ));
    }
    let [wt, wp, tt, tp] = alternate(s, "wss handshake", &eps, |ep| {
        client.storm_row(ep, s.window, &["/echo".to_string()])
    })?;
    let label = format!("wss handshakes/s, public ({HANDSHAKE_CONCURRENCY} conc.)");
    push_rows(rows, &label, [&wt, &wp, &tt, &tp]);
    Ok(())
}

/// The wss row, the same row over ws, and the TLS cost: server CPU per operation over
/// wss minus over ws, in microseconds.
fn push_rows(rows: &mut Vec<Row>, label: &str, [wt, wp, tt, tp]: [&Measure; 4]) {
    let cost = |tls: &Measure, plain: &Measure| Some(tls.us_per_op()? - plain.us_per_op()?);
    rows.push(Row::two(label, wt, tt));
    rows.push(Row::two("  the same over ws", wp, tp));
    rows.push(Row::two_values(
        "  TLS cost: server us CPU/op, wss - ws",
        cost(wt, wp),
        cost(tt, tp),
    ));
}
