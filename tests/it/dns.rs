//! Upstream host names (#18, SPEC §2 and §5): resolved by the control plane, never a
//! reason to refuse a start; a name that does not resolve fails its connects like a
//! refused one ("dns: ..."), and the next upstream is tried. Names use `localhost` (from
//! /etc/hosts) and the reserved `.invalid` TLD (RFC 6761 §6.4), so no test needs a network.

use std::net::TcpListener;

use crate::support::*;
use crate::upstream::{echo_on, echo_through, gateway_in, metric, upgrade};

/// A WebSocket echo upstream bound where `localhost` resolves; its port.
fn localhost_upstream() -> u16 {
    let listener = bind_localhost();
    let port = listener.local_addr().expect("addr").port();
    echo_on(listener);
    port
}

const NOWHERE: &str = "ws://no-such-upstream.invalid:9/chat";

#[test]
fn an_upstream_named_localhost_serves() {
    let port = localhost_upstream();
    let gw = gateway_in(
        TempDir::new(),
        &[format!("ws://localhost:{port}/chat")],
        "",
        "",
    );
    gw.wait_log("dns: localhost resolves to ");
    for m in ["one", "two"] {
        let (r, mut s) = upgrade(&gw);
        assert_eq!(r.status, 101, "{r:?}\n{}", gw.logs());
        echo_through(&mut s, m);
    }
    assert_eq!(metric(&gw, "wsgate_upstream_dns_failures_total"), 0);
}

#[test]
fn an_unresolvable_upstream_does_not_stop_the_start_and_gives_502_naming_it() {
    // Gateway::start_in panics unless the gateway comes to listen.
    let gw = gateway_in(TempDir::new(), &[NOWHERE.to_owned()], "", "");
    let warning = gw.wait_log("dns: no-such-upstream.invalid: ");
    assert!(
        warning.contains("its upstreams fail until it resolves (retry in 1s)"),
        "{warning}"
    );
    // The control plane retries in the background, backing off.
    let retry = gw.wait_log("(retry in 2s)");
    assert!(retry.contains("dns: no-such-upstream.invalid: "), "{retry}");
    let (r, _s) = upgrade(&gw);
    assert_eq!(r.status, 502, "{r:?}");
    let line = gw.wait_log(&format!("upstream={NOWHERE} addr=- failed: dns: "));
    assert!(line.contains("conn="), "{line}");
    assert!(metric(&gw, "wsgate_upstream_dns_failures_total") >= 1);
    // The failed target and the 502 itself.
    assert_eq!(metric(&gw, "wsgate_upstream_errors_total"), 2);
    // SPEC §2: `check` resolves nothing, and what `serve` starts with, it accepts.
    let config = gw.dir.path().join("wsgate.toml");
    let (status, out, err) = run(&["check", "-c", config.to_str().expect("utf-8 path")]);
    assert_eq!(status, 0, "{out}{err}");
    assert!(!err.contains("dns"), "{err}");
}

#[test]
fn one_unresolvable_and_one_good_upstream_serve_through_the_good_one() {
    let port = localhost_upstream();
    let gw = gateway_in(
        TempDir::new(),
        &[NOWHERE.to_owned(), format!("ws://localhost:{port}/chat")],
        "",
        "",
    );
    for i in 0..4 {
        let (r, mut s) = upgrade(&gw);
        assert_eq!(r.status, 101, "handshake {i}: {r:?}\n{}", gw.logs());
        echo_through(&mut s, "hi");
    }
    // The unresolvable one was tried once, then marked down (SPEC §5 upstream_backoff).
    assert_eq!(metric(&gw, "wsgate_upstream_errors_total"), 1);
    gw.wait_log(&format!("upstream={NOWHERE} addr=- failed: dns: "));
}

#[test]
fn sighup_with_changed_upstreams_follows_the_new_names() {
    let gw = gateway_in(TempDir::new(), &[NOWHERE.to_owned()], "", "");
    let (r, _s) = upgrade(&gw);
    assert_eq!(r.status, 502, "{r:?}");
    let port = localhost_upstream();
    let path = gw.dir.path().join("wsgate.toml");
    let config = std::fs::read_to_string(&path).expect("config");
    let changed = config.replace(NOWHERE, &format!("ws://localhost:{port}/chat"));
    assert_ne!(config, changed);
    gw.dir.write("wsgate.toml", changed);
    gw.signal(libc::SIGHUP);
    // Both workers (upstream::gateway_in starts two): the next handshake may land on
    // either, and one that has not taken the reload still dials the old name (502).
    gw.wait_workers_reloaded(2, 1);
    let (r, mut s) = upgrade(&gw);
    assert_eq!(r.status, 101, "{r:?}\n{}", gw.logs());
    echo_through(&mut s, "after reload");
    // Logged before the answer was published; waited for, because the test's reader of
    // the gateway's stderr may not have caught up with it yet (a lookup that outlasted
    // the reload's bounded wait is logged after "reloaded").
    gw.wait_log("dns: localhost resolves to ");
}

/// The data plane alone (no control plane), in this process, with an address snapshot
/// the test publishes: a route whose one upstream is the name `multi.test`.
fn data_plane(
    port: u16,
) -> (
    wsgate::net::server::Running,
    wsgate::net::server::UpstreamNames,
) {
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    let config = wsgate::config::parse_str(
        &format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\n\
             [[route]]\npath = \"/chat\"\nupstream = [\"ws://multi.test:{port}/chat\"]\npublic = true\n"
        ),
        std::path::Path::new("."),
        "wsgate.toml",
    )
    .expect("config");
    let rt = Arc::new(wsgate::net::server::build_runtime(&config).expect("runtime"));
    let snapshot = Arc::new(arc_swap::ArcSwap::from_pointee(Default::default()));
    let dns_failures = Arc::new(AtomicU64::new(0));
    let shared = wsgate::net::server::UpstreamNames {
        snapshot: Arc::clone(&snapshot),
        dns_failures: Arc::clone(&dns_failures),
    };
    let handle = wsgate::net::server::UpstreamNames {
        snapshot,
        dns_failures,
    };
    let revocations = wsgate::auth::revocation::RevocationSet::new(
        wsgate::net::server::retention_policy(&config),
    );
    let running = wsgate::net::server::start(&config, rt, revocations, shared).expect("data plane");
    (running, handle)
}

fn publish(names: &wsgate::net::server::UpstreamNames, addrs: &[&str]) {
    let mut snapshot = wsgate::backend::upstream::ResolvedNames::default();
    let addrs: Vec<std::net::IpAddr> = addrs.iter().map(|a| a.parse().expect("ip")).collect();
    snapshot.insert(
        "multi.test",
        wsgate::backend::upstream::NameAnswer {
            addrs: addrs.into(),
            error: None,
        },
    );
    names.snapshot.store(std::sync::Arc::new(snapshot));
}

fn upgrade_at(addr: std::net::SocketAddr) -> (Response, std::net::TcpStream) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(upgrade_request("/chat", &[]).as_bytes())
        .expect("send");
    let r = read_response(&mut s);
    (r, s)
}

#[test]
fn a_name_with_several_addresses_spreads_connects_and_fails_over_in_order() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = echo_on(listener);
    let (running, names) = data_plane(port);
    let gateway = running.local_addrs[0];
    // 127.0.0.2 is loopback with nothing listening on the port: a refused connect.
    publish(&names, &["127.0.0.2", "127.0.0.1"]);
    let errors = || running.shared.metrics.total(|w| &w.upstream_errors);
    // Turn 0 starts at 127.0.0.2 (refused), then the same upstream's next address.
    {
        let (r, mut s) = upgrade_at(gateway);
        assert_eq!(r.status, 101, "{r:?}");
        echo_through(&mut s, "failed over");
        assert_eq!(errors(), 1);
    }
    // Turn 1 starts at 127.0.0.1; the upstream was not marked down (one address
    // failed, not the upstream): every handshake is served.
    for _ in 0..3 {
        let (r, mut s) = upgrade_at(gateway);
        assert_eq!(r.status, 101, "{r:?}");
        echo_through(&mut s, "spread");
    }
    assert_eq!(errors(), 2, "turns 0 and 2 start at the refusing address");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 4);
    // A new snapshot is what the next connect reads: only the refusing address → 502.
    publish(&names, &["127.0.0.2"]);
    let (r, s) = upgrade_at(gateway);
    assert_eq!(r.status, 502, "{r:?}");
    drop(s);
    running.shutdown();
}
