//! rustls server configuration (ring provider). The handshake itself runs inside the
//! worker's event loop, non-blocking, through `rustls::ServerConnection`.

use std::io;
use std::sync::Arc;

use mio::net::TcpStream;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Builds the server config from a certificate chain and its private key.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("tls: certificate and key do not form a usable pair: {e}"))?;
    // WebSocket upgrades are HTTP/1.1 (RFC 6455 §4.1); never negotiate h2.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// What a `wss://` upstream leg needs: the client config (trust anchors) and the name its
/// certificate must carry, which is also the SNI sent (SPEC §5).
#[derive(Clone)]
pub struct UpstreamTls {
    /// Trust anchors and protocol versions.
    pub config: Arc<rustls::ClientConfig>,
    /// The URL's host.
    pub name: rustls::pki_types::ServerName<'static>,
}

/// A client config trusting `ca` (a route's `upstream_ca`) or, without one, the system's
/// roots. Reads the system store (disk): call at configuration load, never on a worker.
pub fn client_config(
    ca: Option<&[CertificateDer<'static>]>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(certs) => {
            for cert in certs {
                roots
                    .add(cert.clone())
                    .map_err(|e| format!("not a usable CA certificate: {e}"))?;
            }
        }
        None => {
            // Certificates the store holds but webpki cannot parse are skipped, as
            // browsers and curl do.
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "no system root certificates found; set upstream_ca on the route".to_owned(),
                );
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // RFC 6455 §4.1: the upgrade is HTTP/1.1.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Writes TLS records until rustls has none left or the socket would block, for either
/// side (the client's server connection, an upstream leg's client connection). Returns
/// whether everything went out.
pub fn flush_records<D>(
    tls: &mut rustls::ConnectionCommon<D>,
    socket: &mut TcpStream,
) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(socket) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
