//! SPEC §8: a fleet of gateways sharing revocations and per-subject counts through a real
//! `redis-server` (Debian's package, which `scripts/test` installs), started by each test
//! on a free loopback port: revoke on one closes on the others, the cap counts the fleet,
//! a killed gateway stops counting after its lease, and a Redis restart drops no socket
//! and loses no revocation.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const SECRET: &[u8] = b"cluster-tests-secret-0123456789abcdef-0123456789";

/// A `redis-server` of this test's own, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        for _ in 0..20 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            if let Some(redis) = Redis::start_on(port) {
                return redis;
            }
        }
        panic!("redis-server would not start (scripts/test installs it)");
    }

    /// `None` when it exits (port taken) before answering a PING.
    fn start_on(port: u16) -> Option<Redis> {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir", "/tmp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test installs it)");
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut pong = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut pong).is_ok()
                    && &pong == b"+PONG\r\n"
                {
                    return Some(Redis { child, port });
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// One command; the first line of the reply (enough for integer and status replies).
    fn command(&self, args: &[&str]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect redis");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        s.write_all(request.as_bytes()).expect("send");
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") {
            s.read_exact(&mut byte).expect("reply");
            reply.push(byte[0]);
        }
        String::from_utf8_lossy(&reply).trim_end().to_owned()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts again, empty, on the same port.
    fn restart(&mut self) {
        self.stop();
        *self = Redis::start_on(self.port).expect("restart on the same port");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn token(sub: &str, jti: &str, scope: &str) -> String {
    jti_token(SECRET, sub, jti, scope, 3600)
}

/// A gateway of the fleet `namespace` on `redis`; returns it and its admin address.
fn gateway(redis: &str, node: &str, namespace: &str, extra: &str) -> (Gateway, SocketAddr) {
    gateway_with(redis, node, namespace, "", extra)
}

/// Same, with more `[limits]` lines.
fn gateway_with(
    redis: &str,
    node: &str,
    namespace: &str,
    limits: &str,
    extra: &str,
) -> (Gateway, SocketAddr) {
    let dir = hs_secret_dir(SECRET);
    let config = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
workers = 2

[[auth.key]]
alg = "HS256"
secret_file = "hs.secret"

[limits]
per_subject_connections = 3
{limits}

[admin]
listen = "127.0.0.1:0"
revocation_log = "revocations.log"

[cluster]
redis = "{redis}"
node = "{node}"
namespace = "{namespace}"
lease = "2s"
{extra}

[[route]]
path = "/echo"
backend = "echo"
scope = ["echo"]
"#
    );
    let gw = Gateway::start_in(dir, &config);
    let addr = admin_addr(&gw);
    (gw, addr)
}

/// One admin request; (status, body).
fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, String) {
    exchange(
        TcpStream::connect(addr).expect("connect admin"),
        &admin_request(method, path, "Connection: close\r\n", bearer, body),
    )
}

/// The value of an unlabelled metric.
fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let (_, body) = admin(addr, "GET", "/metrics", None, "");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `condition` every 20 ms until it holds; fails at the deadline.
fn eventually(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ready(addr: SocketAddr) -> bool {
    admin(addr, "GET", "/readyz", None, "") == (200, "ready\n".to_owned())
}

fn upgrade_status(gw: &Gateway, token: &str) -> u16 {
    request(
        gw,
        upgrade_request(&format!("/echo?access_token={token}"), &[]).as_bytes(),
    )
    .0
    .status
}

fn echo_ok(s: &mut TcpStream) {
    s.write_all(&client_frame(true, 1, b"hi")).expect("send");
    assert_eq!(read_frame(s), (true, 1, b"hi".to_vec()));
}

#[test]
fn a_revocation_posted_to_one_gateway_closes_on_the_others() {
    let redis = Redis::start();
    let (a, a_admin) = gateway(&redis.url(), "a", "c1", "");
    let (b, b_admin) = gateway(&redis.url(), "b", "c1", "");
    let (c, c_admin) = gateway(&redis.url(), "c", "c1", "");
    eventually("all ready", WAIT, || {
        ready(a_admin) && ready(b_admin) && ready(c_admin)
    });
    let alice = token("alice", "a1", "echo");
    let bob = token("bob", "b1", "echo");
    let mut on_b = open(&b, &format!("/echo?access_token={alice}"), &[]);
    let mut on_c = open(&c, &format!("/echo?access_token={alice}"), &[]);
    let mut bob_on_c = open(&c, &format!("/echo?access_token={bob}"), &[]);
    let root = token("root", "r1", "wsgate:admin");
    let body = format!(r#"{{"sub":"alice","before":{}}}"#, now_unix());
    let (status, answer) = admin(a_admin, "POST", "/revoke", Some(&root), &body);
    assert_eq!(status, 200, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(v["cluster"].as_str(), Some("published"), "{answer}");
    assert_eq!(read_close(&mut on_b), (Some(4403), "token revoked".into()));
    assert_eq!(read_close(&mut on_c), (Some(4403), "token revoked".into()));
    echo_ok(&mut bob_on_c);
    assert_eq!(upgrade_status(&b, &alice), 401);
    assert_eq!(upgrade_status(&c, &alice), 401);
    assert_eq!(metric(b_admin, "wsgate_cluster_up"), Some(1.0));
    assert_eq!(
        metric(c_admin, "wsgate_cluster_revocations_received_total"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            c_admin,
            "wsgate_cluster_revocation_propagation_seconds_count"
        ),
        Some(1.0)
    );
    // A gateway that starts now loads it before it says ready.
    let (d, d_admin) = gateway(&redis.url(), "d", "c1", "");
    eventually("d ready", WAIT, || ready(d_admin));
    assert_eq!(upgrade_status(&d, &alice), 401);
    // Redis flushed: the gateways notice at their next renewal (lease / 3) and write back
    // what they enforce, so a gateway that starts afterwards still refuses alice.
    assert_eq!(redis.command(&["FLUSHALL"]), "+OK");
    let key = format!("c1:revocation:sub:{}:alice", v_before(&body));
    eventually("written back", WAIT, || {
        redis.command(&["EXISTS", &key]) == ":1"
    });
    let (e, e_admin) = gateway(&redis.url(), "e", "c1", "");
    eventually("e ready", WAIT, || ready(e_admin));
    assert_eq!(upgrade_status(&e, &alice), 401);
    drop(a);
}

/// The `before` of a `{"sub":..,"before":N}` body.
fn v_before(body: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(body).expect("json");
    v["before"].as_u64().expect("before")
}

#[test]
fn the_subject_cap_counts_the_fleet_and_a_killed_gateway_stops_counting_after_its_lease() {
    let redis = Redis::start();
    let (mut a, a_admin) = gateway(&redis.url(), "a", "c2", "");
    let (b, b_admin) = gateway(&redis.url(), "b", "c2", "");
    eventually("both ready", WAIT, || ready(a_admin) && ready(b_admin));
    let alice = token("alice", "a1", "echo");
    let path = format!("/echo?access_token={alice}");
    let _one = open(&a, &path, &[]);
    let _two = open(&a, &path, &[]);
    eventually("b counts a's two", WAIT, || {
        metric(b_admin, "wsgate_cluster_remote_connections") == Some(2.0)
    });
    let mut three = open(&b, &path, &[]);
    eventually("a counts b's one", WAIT, || {
        metric(a_admin, "wsgate_cluster_remote_connections") == Some(1.0)
    });
    // per_subject_connections = 3, fleet-wide: a fourth is refused on either gateway.
    assert_eq!(upgrade_status(&b, &alice), 429);
    assert_eq!(upgrade_status(&a, &alice), 429);
    // Another subject is not affected.
    assert_eq!(upgrade_status(&b, &token("bob", "b1", "echo")), 101);

    // SIGKILL: no goodbye. b stops counting a's two within the lease (2 s).
    a.signal(9);
    let killed = Instant::now();
    let _ = a.wait_exit();
    eventually("a's counts lapse on b", WAIT, || {
        metric(b_admin, "wsgate_cluster_remote_connections") == Some(0.0)
    });
    let lapsed = killed.elapsed();
    assert!(lapsed <= Duration::from_millis(3500), "{lapsed:?}");
    let _four = open(&b, &path, &[]);
    let _five = open(&b, &path, &[]);
    assert_eq!(upgrade_status(&b, &alice), 429);
    echo_ok(&mut three);
}

#[test]
fn a_redis_restart_drops_no_socket_and_loses_no_revocation() {
    let mut redis = Redis::start();
    let (_a, a_admin) = gateway(&redis.url(), "a", "c3", "");
    let (b, b_admin) = gateway(&redis.url(), "b", "c3", r#"on_unavailable = "refuse""#);
    eventually("both ready", WAIT, || ready(a_admin) && ready(b_admin));
    let alice = token("alice", "a1", "echo");
    let bob = token("bob", "b1", "echo");
    let mut alice_on_b = open(&b, &format!("/echo?access_token={alice}"), &[]);
    let mut bob_on_b = open(&b, &format!("/echo?access_token={bob}"), &[]);

    redis.stop();
    // "local": serving, degraded; "refuse": not ready, new handshakes 503.
    eventually("a degraded", WAIT, || {
        let (status, body) = admin(a_admin, "GET", "/readyz", None, "");
        status == 200 && body.contains("degraded")
    });
    eventually("b refusing", WAIT, || {
        admin(b_admin, "GET", "/readyz", None, "").0 == 503
    });
    assert_eq!(upgrade_status(&b, &token("carol", "c1", "echo")), 503);
    assert_eq!(metric(a_admin, "wsgate_cluster_up"), Some(0.0));
    echo_ok(&mut alice_on_b);
    echo_ok(&mut bob_on_b);

    // Posted during the outage: enforced on a, queued for the fleet.
    let root = token("root", "r1", "wsgate:admin");
    let (status, answer) = admin(a_admin, "POST", "/revoke", Some(&root), r#"{"jti":"a1"}"#);
    assert_eq!(status, 200, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(v["cluster"].as_str(), Some("queued"), "{answer}");
    echo_ok(&mut alice_on_b);

    // Redis back (empty): the queued revocation reaches b, which closes alice's socket.
    redis.restart();
    assert_eq!(
        read_close(&mut alice_on_b),
        (Some(4403), "token revoked".into())
    );
    echo_ok(&mut bob_on_b);
    eventually("both ready again", WAIT, || {
        ready(a_admin) && ready(b_admin)
    });
    assert_eq!(upgrade_status(&b, &alice), 401);
    assert_eq!(upgrade_status(&b, &token("carol", "c1", "echo")), 101);
}

#[test]
fn failed_tokens_drain_one_budget_per_address_across_the_fleet() {
    let redis = Redis::start();
    let limits = r#"per_ip_auth_failures = "1/s""#;
    let (a, a_admin) = gateway_with(&redis.url(), "a", "c4", limits, "");
    let (b, b_admin) = gateway_with(&redis.url(), "b", "c4", limits, "");
    eventually("both ready", WAIT, || ready(a_admin) && ready(b_admin));
    // Bad tokens on a only.
    assert_eq!(upgrade_status(&a, "not-a-token"), 401);
    // b refuses the same address before checking any token, once a's failure reached it
    // (the budget refills at 1/s, so 429 holds long enough to be seen).
    // A fresh subject each time, so that no per-subject cap can answer 429 instead, and
    // at most ~10 attempts a second, well inside per_ip_handshakes (50/s).
    let mut statuses = Vec::new();
    eventually("b refuses the address", WAIT, || {
        if !statuses.is_empty() {
            std::thread::sleep(Duration::from_millis(80));
        }
        let user = format!("user{}", statuses.len());
        let status = upgrade_status(&b, &token(&user, &user, "echo"));
        statuses.push(status);
        status == 429
    });
    assert!(
        statuses.iter().all(|s| *s == 101 || *s == 429),
        "{statuses:?}"
    );
}

/// A gateway of the fleet `namespace` with a token service (`[login]`) whose key and users
/// are in `dir`; B gets an admin listener (to say when it is ready), A none.
fn login_gateway(redis: &str, node: &str, namespace: &str, dir: TempDir, admin: bool) -> Gateway {
    let admin = if admin {
        "[admin]\nlisten = \"127.0.0.1:0\"\n"
    } else {
        ""
    };
    let config = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
workers = 2

{admin}
[login]
listen = "127.0.0.1:0"
users = "users.toml"
signing_key = "issuer.key.pem"
issuer = "https://login.test"
store = "refresh.db"

[cluster]
redis = "{redis}"
node = "{node}"
namespace = "{namespace}"
lease = "2s"

[[route]]
path = "/chat"
backend = "echo"
scope = ["chat"]
"#
    );
    Gateway::start_in(dir, &config)
}

#[test]
fn a_reused_refresh_token_on_one_gateway_closes_the_family_on_another() {
    use crate::login::{connect, listener, login, refresh, run_with_stdin, tokens};
    let redis = Redis::start();
    // One login key and one users file for the fleet; a store per gateway (redb locks it).
    let a_dir = TempDir::new();
    let key = a_dir.path().join("issuer");
    let (code, out, err) = run(&[
        "keygen",
        "--alg",
        "EdDSA",
        "--out",
        key.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let a = login_gateway(&redis.url(), "a", "c5", a_dir, false);
    let cfg = a.dir.path().join("wsgate.toml");
    let (code, out, err) = run_with_stdin(
        &[
            "user",
            "add",
            "alice",
            "--scope",
            "chat",
            "-c",
            cfg.to_str().expect("utf-8"),
        ],
        "alice-password\n",
    );
    assert_eq!(code, 0, "{out}{err}");
    // SPEC §11: the running gateway re-reads the users file on SIGHUP. (A login also
    // looks whether the file changed, but at most once a second: a login within a
    // second of A's start, as on a quiet machine, was refused "wrong username or
    // password".)
    a.signal(libc::SIGHUP);
    a.wait_log("login: users file re-read: 1 users");
    let b_dir = TempDir::new();
    for file in ["issuer.key.pem", "users.toml"] {
        std::fs::copy(a.dir.path().join(file), b_dir.path().join(file)).expect("copy");
    }
    let b = login_gateway(&redis.url(), "b", "c5", b_dir, true);
    let b_admin = listener(&b, "admin");
    eventually("b ready", WAIT, || ready(b_admin));

    // Log in and rotate on A; the access tokens of the family are used on B.
    let a_login = listener(&a, "login");
    let (first_access, first_refresh) = login(a_login, "alice");
    let (status, answer) = refresh(a_login, &first_refresh);
    assert_eq!(status, 200, "{answer}");
    let (second_access, _) = tokens(&answer);
    let mut first_on_b = connect(&b, &first_access);
    let mut second_on_b = connect(&b, &second_access);
    let (other_access, _) = login(a_login, "alice");
    let mut other_on_b = connect(&b, &other_access);

    // The spent refresh token again, on A: the family is revoked fleet-wide.
    let (status, answer) = refresh(a_login, &first_refresh);
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(
        read_close(&mut first_on_b),
        (Some(4403), "token revoked".into())
    );
    assert_eq!(
        read_close(&mut second_on_b),
        (Some(4403), "token revoked".into())
    );
    // Another family of the same user stays open.
    echo_ok(&mut other_on_b);
}
