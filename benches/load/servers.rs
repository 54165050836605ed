//! The servers under test as child processes, and what /proc says about them (listening
//! address, CPU ticks, resident memory).

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Res, ROLE_VAR};

/// The kernel's USER_HZ: the unit of utime/stime in /proc/<pid>/stat (100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// A server child process, killed when dropped.
pub(crate) struct Server {
    pub(crate) name: &'static str,
    child: Child,
    pub(crate) pid: u32,
    pub(crate) addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one measurement talks to: a server's address and path, and the processes whose
/// CPU it reports.
pub(crate) struct Endpoint {
    /// Shown in progress lines.
    pub(crate) name: &'static str,
    pub(crate) addr: SocketAddr,
    /// The request target of echo rows.
    pub(crate) path: &'static str,
    /// The process that answers on `addr`.
    pub(crate) pid: u32,
    /// The upstream behind a proxy route (its CPU is reported too).
    pub(crate) upstream_pid: Option<u32>,
    /// `Sec-WebSocket-Extensions` offered by echo rows' connections.
    pub(crate) extensions: Option<&'static str>,
    /// wss: the client's TLS config (`crate::tls`); `None` is plain ws.
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

impl Server {
    /// This server at `path`.
    pub(crate) fn endpoint(&self, path: &'static str) -> Endpoint {
        Endpoint {
            name: self.name,
            addr: self.addr,
            path,
            pid: self.pid,
            upstream_pid: None,
            extensions: None,
            tls: None,
        }
    }

    /// `wsgate serve -c config` with `WSGATE_LOG=warn`; its warnings are relayed to our
    /// stderr. The port (the config says 0) is read from /proc, since the "listening"
    /// line is an info line.
    pub(crate) fn wsgate(config: &Path) -> Res<Server> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wsgate"))
            .arg("serve")
            .arg("-c")
            .arg(config)
            .env("WSGATE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start wsgate: {e}"))?;
        if let Some(stderr) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("[wsgate] {line}");
                }
            });
        }
        let pid = child.id();
        let mut server = Server {
            name: "wsgate",
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(addr) = listening_addr(pid) {
                server.addr = addr;
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("wsgate exited at start: {status}"));
            }
            if Instant::now() > deadline {
                return Err("wsgate is not listening after 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// An external echo server binary (`exe PORT`, as uWebSockets' BenchEcho): a free port
    /// is found by binding 127.0.0.1:0 and releasing it, then the server is ready once it
    /// accepts a TCP connection (within 10 s).
    pub(crate) fn external(name: &'static str, exe: &Path) -> Res<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("free port: {e}"))?
            .port();
        let child = Command::new(exe)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {name} ({}): {e}", exe.display()))?;
        let pid = child.id();
        let mut server = Server {
            name,
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(server.addr).is_ok() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("{name} exited at start: {status}"));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{name} is not listening on {} after 10 s",
                    server.addr
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// This executable again, as the peer server `role` (see `crate::peers`); it prints
    /// its address, and exits when its stdin (held by the `Child`) closes.
    pub(crate) fn peer(name: &'static str, role: &str) -> Res<Server> {
        Server::peer_with(name, role, &[])
    }

    /// [`Server::peer`] with more environment variables (the TLS peer's PEM files).
    pub(crate) fn peer_with(name: &'static str, role: &str, env: &[(&str, &Path)]) -> Res<Server> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut child = Command::new(exe)
            .env(ROLE_VAR, role)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the {name} server: {e}"))?;
        let pid = child.id();
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let mut server = Server {
            name,
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        server.addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("{name} server said {line:?}"))?;
        Ok(server)
    }
}

/// The IPv4 TCP socket in LISTEN state that process `pid` holds, from /proc.
fn listening_addr(pid: u32) -> Option<SocketAddr> {
    let mut inodes = HashSet::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        if let Ok(link) = fs::read_link(entry.path()) {
            if let Some(inode) = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
            {
                inodes.insert(inode.to_string());
            }
        }
    }
    let table = fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        if f.get(3) != Some(&"0A") || !inodes.contains(*f.get(9)?) {
            return None;
        }
        let (ip, port) = f.get(1)?.split_once(':')?;
        // The address is the in-memory (network order) u32 printed as a host integer.
        let ip = u32::from_str_radix(ip, 16).ok()?.to_le_bytes();
        let port = u16::from_str_radix(port, 16).ok()?;
        Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
    })
}

/// (user + system) CPU ticks of a process, all threads.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) of proc(5); field 3 is the first after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS of a process, in bytes.
pub(crate) fn rss_bytes(pid: u32) -> Res<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| "no VmRSS".to_string())
}

/// The kernel's slab memory, whole machine (`Slab:` of /proc/meminfo), in bytes: where
/// socket structures live, which no process's RSS counts.
pub(crate) fn slab_bytes() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("Slab:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// CPU ticks (server, client, upstream) at the start of a window.
type Ticks = (Option<u64>, Option<u64>, Option<u64>);

/// CPU use of the server, of this process and of an upstream between two instants.
pub(crate) struct CpuWindow {
    server_pid: u32,
    upstream_pid: Option<u32>,
    start: Option<(Instant, Ticks)>,
}

impl CpuWindow {
    pub(crate) fn new(server_pid: u32, upstream_pid: Option<u32>) -> CpuWindow {
        CpuWindow {
            server_pid,
            upstream_pid,
            start: None,
        }
    }

    pub(crate) fn begin(&mut self) {
        let me = std::process::id();
        let ticks = (
            cpu_ticks(self.server_pid),
            cpu_ticks(me),
            self.upstream_pid.and_then(cpu_ticks),
        );
        self.start = Some((Instant::now(), ticks));
    }

    /// (server cores, client cores, upstream cores) since `begin`.
    pub(crate) fn end(&self) -> (Option<f64>, Option<f64>, Option<f64>) {
        let Some((t0, (s0, c0, u0))) = self.start else {
            return (None, None, None);
        };
        let secs = t0.elapsed().as_secs_f64();
        let cores = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) if secs > 0.0 => {
                Some(b.saturating_sub(a) as f64 / TICKS_PER_SEC / secs)
            }
            _ => None,
        };
        (
            cores(s0, cpu_ticks(self.server_pid)),
            cores(c0, cpu_ticks(std::process::id())),
            cores(u0, self.upstream_pid.and_then(cpu_ticks)),
        )
    }
}
