//! SPEC §1/§3 `[tls]`: wss:// through rustls, with a self-signed certificate for
//! "localhost" made by rcgen and a rustls client that trusts only it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};

use crate::support::*;

pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

const TLS_SECTION: &str = "\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n";

/// A fresh self-signed certificate for "localhost": (cert PEM, key PEM, cert DER).
pub fn self_signed() -> (String, String, CertificateDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
    let der = CertificateDer::from(ck.cert.der().to_vec());
    (ck.cert.pem(), ck.key_pair.serialize_pem(), der)
}

/// A wss:// gateway with a public /echo route; returns it and its certificate.
fn tls_gateway(workers: usize) -> (Gateway, CertificateDer<'static>) {
    let (cert, key, der) = self_signed();
    let dir = TempDir::new();
    dir.write("cert.pem", cert);
    dir.write("key.pem", key);
    let config = echo_config(workers, "", "") + TLS_SECTION;
    let gw = Gateway::start_in(dir, &config);
    assert!(gw.wait_log("listening on").contains("wss://"));
    (gw, der)
}

/// A TLS client stream to the gateway, trusting only `cert`, for server name localhost.
fn tls_connect(gw: &Gateway, cert: &CertificateDer<'static>) -> TlsStream {
    tls_client(gw.connect(), cert)
}

/// A TLS client over `stream`, trusting only `cert`, for server name localhost.
pub fn tls_client(stream: TcpStream, cert: &CertificateDer<'static>) -> TlsStream {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).expect("trust anchor");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("localhost").expect("server name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client conn");
    rustls::StreamOwned::new(conn, stream)
}

/// Upgrades a TLS stream to /echo with raw bytes; asserts the 101.
fn tls_open(gw: &Gateway, cert: &CertificateDer<'static>) -> TlsStream {
    let mut s = tls_connect(gw, cert);
    s.write_all(upgrade_request("/echo", &[]).as_bytes())
        .expect("request");
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "RFC 6455 §1.3 accept value: {head}"
    );
    s
}

#[test]
fn wss_echo_with_tungstenite_including_200_kib() {
    use tungstenite::Message;
    let (gw, cert) = tls_gateway(2);
    let stream = tls_connect(&gw, &cert);
    let url = format!("wss://localhost:{}/echo", gw.addr.port());
    let (mut ws, resp) = tungstenite::client::client(url, stream).expect("wss handshake");
    assert_eq!(resp.status(), 101);
    let big: Vec<u8> = (0..200 * 1024u32).map(|i| (i % 241) as u8).collect();
    let big_text: String = "wss ✓ ".repeat(200 * 1024 / 8);
    let messages = [
        Message::Text("hello over tls".into()),
        Message::Binary(vec![0u8, 1, 2, 255].into()),
        Message::Binary(big.into()),
        Message::Text(big_text.into()),
        Message::Text("".into()),
    ];
    for m in &messages {
        ws.send(m.clone()).expect("send");
        let got = ws.read().expect("read");
        assert!(&got == m, "echo differs (len {})", m.len());
    }
    close_tungstenite(&mut ws);
}

#[test]
fn wss_pipelined_messages_echo_in_order() {
    // More in flight than one TLS record or socket buffer holds: exercises the
    // gateway's TLS flush loop and backpressure.
    let (gw, cert) = tls_gateway(1);
    let mut s = tls_open(&gw, &cert);
    let mut writer_stream = tls_connect(&gw, &cert);
    // (A second connection open at the same time, idle, on the same worker.)
    writer_stream
        .write_all(upgrade_request("/echo", &[]).as_bytes())
        .expect("request");
    assert!(read_head(&mut writer_stream).starts_with("HTTP/1.1 101"));
    for round in 0..20u32 {
        let mut bytes = Vec::new();
        let sizes = [1usize, 125, 126, 4000, 16 * 1024, 70_000];
        for (i, len) in sizes.iter().enumerate() {
            let payload: Vec<u8> = (0..*len)
                .map(|b| (b as u32 + round + i as u32) as u8)
                .collect();
            bytes.extend(client_frame(true, 2, &payload));
        }
        s.write_all(&bytes).expect("send");
        for (i, len) in sizes.iter().enumerate() {
            let (_, _, op, p) = read_frame_from(&mut s);
            assert_eq!(op, 2);
            let want: Vec<u8> = (0..*len)
                .map(|b| (b as u32 + round + i as u32) as u8)
                .collect();
            assert!(p == want, "round {round} message {i}");
        }
    }
    echo_once(&mut writer_stream, 1, b"the other one still works");
}

#[test]
fn wss_record_cut_across_two_writes_is_read_when_its_rest_arrives() {
    // The gateway stops reading once a read came back short and rustls holds only part
    // of a record: the rest is a new readiness event. Here the first write carries a
    // whole record (a ping) and half of the next one; the pong proves that write was
    // read, and only then does the record's second half go.
    let (gw, cert) = tls_gateway(1);
    let mut s = tls_open(&gw, &cert);
    let mut records = |frame: Vec<u8>| {
        s.conn.writer().write_all(&frame).expect("plaintext");
        let mut out = Vec::new();
        while s.conn.wants_write() {
            s.conn.write_tls(&mut out).expect("records");
        }
        out
    };
    let ping = records(client_frame(true, 9, b"p"));
    let data = records(client_frame(true, 1, b"cut in two"));
    let half = data.len() / 2;
    let mut first = ping;
    first.extend_from_slice(&data[..half]);
    s.sock.write_all(&first).expect("first write");
    let (_, fin, op, p) = read_frame_from(&mut s);
    assert_eq!((fin, op, p.as_slice()), (true, 10, &b"p"[..]));
    s.sock.write_all(&data[half..]).expect("second write");
    let (_, fin, op, p) = read_frame_from(&mut s);
    assert_eq!((fin, op, p.as_slice()), (true, 1, &b"cut in two"[..]));
}

#[test]
fn wss_protocol_error_closes_1002_with_close_notify() {
    let (gw, cert) = tls_gateway(2);
    let mut s = tls_open(&gw, &cert);
    echo_once(&mut s, 1, b"fine");
    s.write_all(&raw_frame(0x81, b"unmasked", None))
        .expect("send");
    let (code, _) = expect_close(&mut s);
    assert_eq!(code, Some(1002));
    // A clean end of the TLS stream (close_notify), not a truncation error.
    expect_eof(&mut s);
}

#[test]
fn wss_close_handshake_ends_cleanly() {
    let (gw, cert) = tls_gateway(2);
    let mut s = tls_open(&gw, &cert);
    s.write_all(&client_frame(true, 8, &close_payload(1000, b"bye")))
        .expect("send");
    expect_closed_with(&mut s, 1000);
}

#[test]
fn plain_http_on_the_tls_port_gets_no_upgrade() {
    let (gw, cert) = tls_gateway(2);
    let mut s = gw.connect();
    s.write_all(upgrade_request("/echo", &[]).as_bytes())
        .expect("send");
    // Whatever comes back (a TLS alert, or nothing), it is not a 101, and the socket
    // is closed without waiting for the handshake timeout.
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                assert!(
                    !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                    "the gateway kept the plain-text connection open"
                );
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains("101"), "got {text:?}");
    assert!(
        !text.starts_with("HTTP/"),
        "plaintext HTTP on a TLS port: {text:?}"
    );
    // The listener still serves TLS clients.
    let mut ok = tls_open(&gw, &cert);
    echo_once(&mut ok, 1, b"after the plain one");
}

#[test]
fn tls_client_that_never_finishes_handshake_is_dropped() {
    let (cert, key, der) = self_signed();
    let dir = TempDir::new();
    dir.write("cert.pem", cert);
    dir.write("key.pem", key);
    let config = echo_config(1, "", "handshake_timeout = \"500ms\"") + TLS_SECTION;
    let gw = Gateway::start_in(dir, &config);
    // TCP only, no ClientHello: closed after handshake_timeout.
    let mut s = gw.connect();
    let start = std::time::Instant::now();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("unexpected {n} bytes"),
        Err(e) => assert!(
            e.kind() == std::io::ErrorKind::ConnectionReset,
            "not closed: {e}"
        ),
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    // Other clients are unaffected.
    let mut ok = tls_open(&gw, &der);
    echo_once(&mut ok, 2, &[1, 2, 3]);
}

#[test]
fn check_names_tls_cert_when_it_is_missing() {
    let (_, key, _) = self_signed();
    let dir = TempDir::new();
    dir.write("key.pem", key);
    let cfg = dir.write("wsgate.toml", echo_config(1, "", "") + TLS_SECTION);
    let (code, stdout, stderr) = run(&["check", "-c", cfg.to_str().expect("utf-8 path")]);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("tls.cert"), "{all}");
    assert!(!all.contains("panicked"), "{all}");
}

#[test]
fn check_names_tls_key_when_it_does_not_match() {
    let (cert, _, _) = self_signed();
    let (_, other_key, _) = self_signed();
    let dir = TempDir::new();
    dir.write("cert.pem", cert);
    dir.write("key.pem", other_key);
    let cfg = dir.write("wsgate.toml", echo_config(1, "", "") + TLS_SECTION);
    let (code, stdout, stderr) = run(&["check", "-c", cfg.to_str().expect("utf-8 path")]);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("tls.key"), "{all}");
}

#[test]
fn check_accepts_a_good_tls_pair() {
    let (cert, key, _) = self_signed();
    let dir = TempDir::new();
    dir.write("cert.pem", cert);
    dir.write("key.pem", key);
    let cfg = dir.write("wsgate.toml", echo_config(1, "", "") + TLS_SECTION);
    let (code, stdout, stderr) = run(&["check", "-c", cfg.to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
}

#[test]
fn sigterm_closes_wss_connections_1001_cleanly() {
    let (mut gw, cert) = tls_gateway(1);
    let mut s = tls_open(&gw, &cert);
    echo_once(&mut s, 1, b"before");
    gw.signal(15);
    let (code, reason) = expect_close(&mut s);
    assert_eq!((code, reason.as_str()), (Some(1001), "going away"));
    s.write_all(&client_frame(true, 8, &close_payload(1001, b"")))
        .expect("close reply");
    // close_notify, then EOF: not a truncated TLS stream.
    expect_eof(&mut s);
    assert_eq!(gw.wait_exit(), Some(0));
}

#[test]
fn sighup_reloads_the_certificate_without_dropping_connections() {
    // SPEC §3 [tls]: "reloaded on SIGHUP without dropping connections".
    let (gw, old) = tls_gateway(1);
    let mut live = tls_open(&gw, &old);
    let (cert, key, new) = self_signed();
    gw.dir.write("cert.pem", cert);
    gw.dir.write("key.pem", key);
    gw.signal(1);
    // The reload is handed to the workers before this line, ahead of any new socket.
    gw.wait_log("reloaded ");
    let mut s = tls_open(&gw, &new);
    echo_once(&mut s, 1, b"new certificate");
    // A client trusting only the old certificate no longer gets through.
    let mut stale = tls_connect(&gw, &old);
    let upgraded = stale
        .write_all(upgrade_request("/echo", &[]).as_bytes())
        .is_ok()
        && read_head_opt(&mut stale).is_some();
    assert!(!upgraded, "the old certificate is still served");
    // The connection made under the old certificate is still open.
    echo_once(&mut live, 1, b"still here");
}

#[test]
fn bad_certificate_reload_keeps_the_old_one() {
    let (gw, cert) = tls_gateway(1);
    let mut live = tls_open(&gw, &cert);
    let (_, other_key, _) = self_signed();
    // A key that does not match the certificate: the reload must be refused.
    gw.dir.write("key.pem", other_key);
    gw.signal(1);
    let line = gw.wait_log("reload failed");
    assert!(line.contains("tls.key"), "{line}");
    let mut s = tls_open(&gw, &cert);
    echo_once(&mut s, 1, b"old certificate still served");
    echo_once(&mut live, 1, b"still here");
}

/// Like `read_head`, but None on any error (a failed TLS handshake).
fn read_head_opt<R: Read>(s: &mut R) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) => return None,
            Ok(_) => buf.push(byte[0]),
            Err(_) => return None,
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}
