//! The fleet link against a real `redis-server` (Debian's package; `scripts/test` installs
//! it): each test starts its own on a free loopback port, never a system service.

use std::collections::HashMap;
use std::net::{IpAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::gate::fleet::FleetReporter;

/// A `redis-server` of this test's own, killed on drop.
pub(crate) struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts one on a free port (retried when another process takes the port first).
    pub(crate) fn start() -> RedisServer {
        for _ in 0..20 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            if let Some(server) = RedisServer::start_on(port) {
                return server;
            }
        }
        panic!("redis-server would not start (is it installed? scripts/test installs it)");
    }

    /// Starts one on `port`; `None` when it exits (port taken) before answering.
    pub(crate) fn start_on(port: u16) -> Option<RedisServer> {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir", "/tmp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test installs it)");
        let deadline = clock::now() + Duration::from_secs(10);
        while clock::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            if let Ok(mut conn) = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            {
                if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                    return Some(RedisServer { child, port });
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Kills it (its data is gone: it saves nothing).
    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again, empty, on the same port.
    pub(crate) fn restart(&mut self) {
        self.stop();
        let again = RedisServer::start_on(self.port).expect("restart on the same port");
        *self = again;
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A plain synchronous connection, to look at and tamper with what is stored.
    pub(crate) fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .expect("connect to the test redis")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway's side, recorded.
#[derive(Default)]
struct FakeLocal {
    revocations: Mutex<Vec<(Revocation, u64)>>,
    counts: Mutex<HashMap<String, u32>>,
    failures: Mutex<HashMap<IpAddr, u32>>,
}

impl FakeLocal {
    fn revoked(&self, r: &Revocation) -> bool {
        self.revocations
            .lock()
            .map(|v| v.iter().any(|(x, _)| x == r))
            .unwrap_or(false)
    }

    fn set_count(&self, sub: &str, n: u32) {
        if let Ok(mut counts) = self.counts.lock() {
            counts.insert(sub.to_owned(), n);
        }
    }

    fn failures_from(&self, ip: IpAddr) -> u32 {
        self.failures
            .lock()
            .map(|f| f.get(&ip).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Local for FakeLocal {
    fn apply_revocations(&self, entries: Vec<(Revocation, u64)>) {
        if let Ok(mut v) = self.revocations.lock() {
            v.extend(entries);
        }
    }
    fn known_revocations(&self) -> Vec<(Revocation, u64)> {
        self.revocations
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }
    fn subject_count(&self, sub: &str) -> u32 {
        self.counts
            .lock()
            .map(|c| c.get(sub).copied().unwrap_or(0))
            .unwrap_or(0)
    }
    fn subject_counts(&self) -> Vec<(Box<str>, u32)> {
        self.counts
            .lock()
            .map(|c| c.iter().map(|(s, n)| (s.as_str().into(), *n)).collect())
            .unwrap_or_default()
    }
    fn remote_auth_failures(&self, ip: IpAddr, failures: u32) {
        if let Ok(mut f) = self.failures.lock() {
            *f.entry(ip).or_insert(0) += failures;
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn settings(url: &str, node: &str, ns: &str) -> Settings {
    Settings {
        redis: url.to_owned(),
        node: node.to_owned(),
        namespace: ns.to_owned(),
        lease: Duration::from_secs(1),
        on_unavailable: OnUnavailable::Local,
    }
}

fn node(
    rt: &tokio::runtime::Runtime,
    url: &str,
    name: &str,
    ns: &str,
) -> (Cluster, Arc<FakeLocal>) {
    let local = Arc::new(FakeLocal::default());
    let cluster = Cluster::start(
        rt.handle(),
        settings(url, name, ns),
        local.clone() as Arc<dyn Local>,
        Arc::default(),
    )
    .expect("start");
    (cluster, local)
}

/// Polls `condition` every 10 ms until it holds; fails the test at the deadline.
async fn eventually(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const WAIT: Duration = Duration::from_secs(10);

fn sub(s: &str, before: u64) -> Revocation {
    Revocation::Sub {
        sub: s.to_owned(),
        before,
    }
}

fn jti(s: &str) -> Revocation {
    Revocation::Jti {
        jti: s.to_owned(),
        exp: None,
    }
}

fn later() -> u64 {
    clock::unix_now() + 3600
}

#[test]
fn a_revocation_shared_on_one_node_reaches_the_others_and_later_starters() {
    let redis = RedisServer::start();
    let rt = runtime();
    rt.block_on(async {
        let (a, _) = node(&rt, &redis.url(), "a", "t1");
        let (b, b_local) = node(&rt, &redis.url(), "b", "t1");
        eventually("both up", WAIT, || a.status().up() && b.status().up()).await;
        let r = sub("alice", 1_800_000_000);
        assert_eq!(a.share(r.clone(), later()).await, Shared::Published);
        eventually("b applies it", WAIT, || b_local.revoked(&r)).await;
        assert_eq!(b.status().received_total(), 1);
        let mut metrics = String::new();
        b.status().render(&mut metrics);
        assert!(metrics.contains("wsgate_cluster_revocation_propagation_seconds_count 1"));
        // Stored with its retention as TTL.
        let ttl: i64 = redis::cmd("TTL")
            .arg("t1:revocation:sub:1800000000:alice")
            .query(&mut redis.conn())
            .expect("TTL");
        assert!((3590..=3600).contains(&ttl), "{ttl}");
        // A node that starts later loads it before it reports up.
        let (c, c_local) = node(&rt, &redis.url(), "c", "t1");
        eventually("c up", WAIT, || c.status().up()).await;
        assert!(c_local.revoked(&r));
        // A's own revocation is not handed back to it.
        assert_eq!(a.status().received_total(), 0);
    });
}

#[test]
fn counts_cross_nodes_and_a_dead_node_stops_counting_after_its_lease() {
    let redis = RedisServer::start();
    let rt = runtime();
    // "b" runs on a runtime of its own, shut down without leaving: a killed gateway.
    let doomed = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (a, a_local) = node(&rt, &redis.url(), "a", "t2");
        let (b, b_local) = node(&doomed, &redis.url(), "b", "t2");
        eventually("both up", WAIT, || a.status().up() && b.status().up()).await;
        a_local.set_count("alice", 2);
        a.reporter().subject_changed("alice");
        b_local.set_count("alice", 3);
        b.reporter().subject_changed("alice");
        let (a_view, b_view) = (a.fleet_share(), b.fleet_share());
        eventually("counts cross", WAIT, || {
            a_view.remote.get("alice") == 3 && b_view.remote.get("alice") == 2
        })
        .await;
        // A count that drops to 0 is removed everywhere.
        a_local.set_count("alice", 0);
        a.reporter().subject_changed("alice");
        eventually("a's count gone", WAIT, || b_view.remote.get("alice") == 0).await;
        // A third node starting now loads b's counts from its hash.
        let (c, _) = node(&rt, &redis.url(), "c", "t2");
        eventually("c up", WAIT, || c.status().up()).await;
        assert_eq!(c.fleet_share().remote.get("alice"), 3);
        // Kill b: no goodbye; its lease (1 s) runs out on a and c.
        drop(b);
        doomed.shutdown_background();
        let killed = tokio::time::Instant::now();
        eventually("b's counts lapse", WAIT, || {
            a_view.remote.get("alice") == 0 && c.fleet_share().remote.get("alice") == 0
        })
        .await;
        assert!(
            killed.elapsed() <= Duration::from_millis(1500),
            "{:?}",
            killed.elapsed()
        );
        // A graceful stop releases at once.
        a_local.set_count("bob", 1);
        a.reporter().subject_changed("bob");
        eventually("bob seen", WAIT, || c.fleet_share().remote.get("bob") == 1).await;
        a.stop(Duration::from_secs(2)).await;
        eventually("a left", Duration::from_millis(500), || {
            c.fleet_share().remote.get("bob") == 0
        })
        .await;
    });
}

#[test]
fn failed_tokens_are_shared() {
    let redis = RedisServer::start();
    let rt = runtime();
    rt.block_on(async {
        let (a, a_local) = node(&rt, &redis.url(), "a", "t3");
        let (b, b_local) = node(&rt, &redis.url(), "b", "t3");
        eventually("both up", WAIT, || a.status().up() && b.status().up()).await;
        let ip: IpAddr = "203.0.113.9".parse().expect("ip");
        for _ in 0..3 {
            a.reporter().auth_failed(ip);
        }
        eventually("b drains its bucket", WAIT, || {
            b_local.failures_from(ip) == 3
        })
        .await;
        assert_eq!(a_local.failures_from(ip), 0);
    });
}

#[test]
fn redis_down_queues_and_restart_delivers() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let rt = runtime();
    rt.block_on(async {
        let (a, _) = node(&rt, &url, "a", "t4");
        let (b, b_local) = node(&rt, &url, "b", "t4");
        eventually("both up", WAIT, || a.status().up() && b.status().up()).await;
        redis.stop();
        eventually("a down", WAIT, || !a.status().up()).await;
        assert!(matches!(a.status().readiness(), Readiness::Degraded(_)));
        assert!(a.status().admits_handshakes());
        let r = jti("during-outage");
        assert_eq!(a.share(r.clone(), later()).await, Shared::Queued);
        assert_eq!(a.status().queued(), 1);
        redis.restart();
        eventually("delivered after reconnect", WAIT, || b_local.revoked(&r)).await;
        eventually("queue drained", WAIT, || a.status().queued() == 0).await;
        let stored: Option<String> = redis::cmd("GET")
            .arg("t4:revocation:jti:during-outage")
            .query(&mut redis.conn())
            .expect("GET");
        assert!(stored.is_some());
        let mut metrics = String::new();
        a.status().render(&mut metrics);
        assert!(
            metrics.contains("wsgate_cluster_reconnects_total 1"),
            "{metrics}"
        );
    });
}

#[test]
fn refuse_mode_and_unreachable_redis_at_start() {
    let rt = runtime();
    rt.block_on(async {
        // Nothing listens on this port once the listener is dropped.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let url = format!("redis://127.0.0.1:{port}/0");
        let local = Arc::new(FakeLocal::default());
        let mut refusing = settings(&url, "r", "t5");
        refusing.on_unavailable = OnUnavailable::Refuse;
        let r =
            Cluster::start(rt.handle(), refusing, local.clone(), Arc::default()).expect("start");
        let l = Cluster::start(
            rt.handle(),
            settings(&url, "l", "t5"),
            local,
            Arc::default(),
        )
        .expect("start");
        eventually("both tried", WAIT, || {
            r.status().state() == LinkState::Down && l.status().state() == LinkState::Down
        })
        .await;
        assert!(!r.status().admits_handshakes());
        assert!(matches!(r.status().readiness(), Readiness::NotReady(_)));
        assert!(l.status().admits_handshakes());
        assert!(matches!(l.status().readiness(), Readiness::Degraded(_)));
    });
}

#[test]
fn malformed_messages_and_wrong_key_types_are_skipped() {
    let redis = RedisServer::start();
    let mut raw = redis.conn();
    let good = RevocationMessage {
        node: "x".to_owned(),
        at_ms: 1,
        revocation: jti("good"),
        keep_until: later(),
    };
    let _: () = redis::pipe()
        .cmd("SET")
        .arg("t6:revocation:jti:good")
        .arg(good.to_json())
        .ignore()
        .cmd("SET")
        .arg("t6:revocation:jti:bad")
        .arg("{not json")
        .ignore()
        .cmd("RPUSH")
        .arg("t6:revocation:jti:list")
        .arg("x")
        .ignore()
        .cmd("SET")
        .arg("t6:connections:ghost")
        .arg("x")
        .ignore()
        .cmd("HSET")
        .arg("t6:connections:nolease")
        .arg("alice")
        .arg("4")
        .ignore()
        .query(&mut raw)
        .expect("seed");
    let rt = runtime();
    rt.block_on(async {
        let (a, a_local) = node(&rt, &redis.url(), "a", "t6");
        eventually("a up", WAIT, || a.status().up()).await;
        assert!(a_local.revoked(&jti("good")));
        assert_eq!(a_local.revocations.lock().map(|v| v.len()).unwrap_or(0), 1);
        assert_eq!(a.fleet_share().remote.get("alice"), 0);
        // The bad JSON, the list, the string and the hash without a lease; nothing else.
        assert_eq!(a.status().skipped_total(), 4);
        let before = a.status().skipped_total();
        for (channel, payload) in [
            ("t6:revocations", "garbage"),
            (
                "t6:revocations",
                r#"{"v":1,"node":"n","at_ms":1,"jti":"","keep_until":1}"#,
            ),
            (
                "t6:connections",
                r#"{"v":1,"node":"n","lease_ms":1000,"counts":[["",1]]}"#,
            ),
            ("t6:auth_failures", r#"{"v":9}"#),
        ] {
            let _: i64 = redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query(&mut raw)
                .expect("publish");
        }
        eventually("skipped", WAIT, || a.status().skipped_total() == before + 4).await;
        assert!(a.status().up());
        // Still working after the garbage.
        let (b, _) = node(&rt, &redis.url(), "b", "t6");
        eventually("b up", WAIT, || b.status().up()).await;
        // a's hash and liveness key are not mistaken for bad values.
        assert_eq!(b.status().skipped_total(), 4);
        assert_eq!(b.share(jti("after"), later()).await, Shared::Published);
        eventually("a got it", WAIT, || a_local.revoked(&jti("after"))).await;
    });
}

#[test]
fn a_flushed_redis_gets_the_fleet_state_back() {
    let redis = RedisServer::start();
    let rt = runtime();
    rt.block_on(async {
        let (a, a_local) = node(&rt, &redis.url(), "a", "t7");
        eventually("a up", WAIT, || a.status().up()).await;
        a_local.set_count("alice", 5);
        a.reporter().subject_changed("alice");
        assert_eq!(a.share(sub("mallory", 7), later()).await, Shared::Published);
        // a's own revocations are what it enforces (the gateway inserts them itself).
        a_local.apply_revocations(vec![(sub("mallory", 7), later())]);
        let _: () = redis::cmd("FLUSHALL")
            .query(&mut redis.conn())
            .expect("flush");
        // Within a renewal (lease / 3) a notices and writes everything again.
        let mut conn = redis.conn();
        eventually("state back", WAIT, || {
            let count: Option<u32> = redis::cmd("HGET")
                .arg("t7:connections:a")
                .arg("alice")
                .query(&mut conn)
                .unwrap_or(None);
            let revocation: Option<String> = redis::cmd("GET")
                .arg("t7:revocation:sub:7:mallory")
                .query(&mut conn)
                .unwrap_or(None);
            count == Some(5) && revocation.is_some()
        })
        .await;
        let (b, b_local) = node(&rt, &redis.url(), "b", "t7");
        eventually("b up", WAIT, || b.status().up()).await;
        assert!(b_local.revoked(&sub("mallory", 7)));
        assert_eq!(b.fleet_share().remote.get("alice"), 5);
    });
}

#[test]
fn default_node_names() {
    assert_eq!(default_node("gw.example", 8080), "gw.example:8080");
    assert_eq!(default_node("", 1), "localhost:1");
    assert_eq!(default_node("a b\u{7}c", 2), "abc:2");
    let long = default_node(&"h".repeat(500), 65535);
    assert!(config::is_node_name(&long), "{long}");
    assert!(config::is_node_name(&default_node(&hostname(), 0)));
}

#[test]
fn a_tls_url_without_a_tls_server_fails_cleanly_and_retries() {
    // rediss:// goes through rustls (the crate's ring provider): a plain listener that
    // closes at once is a failed connection, never a panic.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Detached: it closes whatever connects until the test process ends.
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s);
        }
    });
    let rt = runtime();
    rt.block_on(async {
        let url = format!("rediss://127.0.0.1:{port}/0");
        let local = Arc::new(FakeLocal::default());
        let c = Cluster::start(
            rt.handle(),
            settings(&url, "t", "t8"),
            local,
            Arc::default(),
        )
        .expect("start");
        eventually("down", WAIT, || c.status().state() == LinkState::Down).await;
        assert!(matches!(c.status().readiness(), Readiness::Degraded(_)));
    });
}
