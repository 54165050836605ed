//! SPEC §5 `wss://` upstreams (#11): rustls on the gateway's client side, SNI and
//! certificate verification from the URL's host, `upstream_ca`.

use std::io::Read;
use std::net::TcpListener;

use crate::support::*;
use crate::upstream::{echo_loop, echo_through, gateway_in, upgrade};

/// A CA and a leaf certificate it signed for `names` (rcgen).
struct Pki {
    ca_pem: String,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

fn pki(names: &[&str]) -> Pki {
    pki_named("wsgate test CA", names)
}

fn pki_named(ca_name: &str, names: &[&str]) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let leaf = CertificateParams::new(names)
        .expect("leaf params")
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf cert");
    Pki {
        ca_pem: ca.pem(),
        chain: vec![leaf.der().clone(), ca.der().clone()],
        key: rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    }
}

/// A wss:// echo upstream (tungstenite over rustls) presenting `pki`'s leaf, bound where
/// the gateway resolves `localhost`. Returns its port and the SNI names it saw.
fn tls_upstream(pki: &Pki) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), pki.key.clone_key())
        .expect("server config"),
    );
    let local = std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 0))
        .expect("resolve localhost")
        .next()
        .expect("an address");
    let listener = TcpListener::bind(local).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let sni: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let seen = sni.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let config = config.clone();
            let seen = seen.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(WAIT));
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, stream);
                // Complete the handshake (or see it refused) before the upgrade.
                while tls.conn.is_handshaking() {
                    if tls.conn.complete_io(&mut tls.sock).is_err() {
                        return;
                    }
                }
                if let Some(name) = tls.conn.server_name() {
                    seen.lock().expect("lock").push(name.to_owned());
                }
                let Ok(mut ws) = tungstenite::accept(tls) else {
                    return;
                };
                echo_loop(&mut ws);
            });
        }
    });
    (port, sni)
}

fn tls_gateway(port: u16, ca_pem: &str) -> Gateway {
    let dir = TempDir::new();
    dir.write("ca.pem", ca_pem);
    gateway_in(
        dir,
        &[format!("wss://localhost:{port}/chat")],
        "",
        "upstream_ca = \"ca.pem\"",
    )
}

#[test]
fn wss_upstream_with_a_certificate_that_verifies_relays_with_sni() {
    let pki = pki(&["localhost"]);
    let (port, sni) = tls_upstream(&pki);
    let gw = tls_gateway(port, &pki.ca_pem);
    for m in ["one", "two"] {
        let (r, mut s) = upgrade(&gw);
        assert_eq!(r.status, 101, "{r:?}\n{}", gw.logs());
        echo_through(&mut s, m);
        let big = "x".repeat(100_000);
        echo_through(&mut s, &big);
    }
    assert_eq!(*sni.lock().expect("lock"), vec!["localhost", "localhost"]);
}

#[test]
fn wss_upstream_with_a_certificate_for_another_name_is_502() {
    let pki = pki(&["other.example"]);
    let (port, _sni) = tls_upstream(&pki);
    let gw = tls_gateway(port, &pki.ca_pem);
    let (r, _s) = upgrade(&gw);
    assert_eq!(r.status, 502, "{r:?}");
    let line = gw.wait_log("failed: connect: tls:");
    assert!(line.contains("not valid for name"), "{line}");
}

#[test]
fn wss_upstream_with_a_certificate_from_an_unknown_ca_is_502() {
    let pki_served = pki(&["localhost"]);
    let trusted = pki_named("another CA", &["localhost"]);
    let (port, _sni) = tls_upstream(&pki_served);
    let gw = tls_gateway(port, &trusted.ca_pem);
    let (r, _s) = upgrade(&gw);
    assert_eq!(r.status, 502, "{r:?}");
    let line = gw.wait_log("failed: connect: tls:");
    assert!(line.contains("UnknownIssuer"), "{line}");
}

#[test]
fn check_accepts_wss_upstreams_and_refuses_an_unreadable_upstream_ca() {
    let dir = TempDir::new();
    dir.write(
        "hs.secret",
        "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA",
    );
    let pki = pki(&["localhost"]);
    dir.write("ca.pem", &pki.ca_pem);
    let config = |ca: &str| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[[auth.key]]\nalg = \"HS256\"\nsecret_file = \"hs.secret\"\n\n\
             [[route]]\npath = \"/chat\"\nupstream = [\"wss://localhost:9443/chat\"]\nupstream_ca = \"{ca}\"\n"
        )
    };
    let good = dir.write("good.toml", config("ca.pem"));
    let (code, out, err) = run(&["check", "-c", good.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}{err}");
    let bad = dir.write("bad.toml", config("missing.pem"));
    let (code, out, err) = run(&["check", "-c", bad.to_str().expect("utf8")]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("route[0].upstream_ca"),
        "{out}{err}"
    );
}

#[test]
fn wss_upstream_that_never_finishes_the_tls_handshake_is_504() {
    // Accepts TCP, reads the ClientHello, never answers.
    let local = std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 0))
        .expect("resolve localhost")
        .next()
        .expect("an address");
    let listener = TcpListener::bind(local).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let _ = stream.read(&mut [0u8; 4096]);
            held.push(stream);
        }
    });
    let pki = pki(&["localhost"]);
    let dir = TempDir::new();
    dir.write("ca.pem", &pki.ca_pem);
    let gw = gateway_in(
        dir,
        &[format!("wss://localhost:{port}/chat")],
        "",
        "upstream_ca = \"ca.pem\"\nupstream_timeout = \"1s\"",
    );
    let started = std::time::Instant::now();
    let (r, _s) = upgrade(&gw);
    assert_eq!(r.status, 504, "{r:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
