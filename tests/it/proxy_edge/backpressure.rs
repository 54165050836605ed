//! Backpressure both ways (SPEC §5 "Output", "write_buffer and backpressure apply to both
//! legs"), and the memory it bounds.

use super::*;

/// An upstream that completes the handshake and then never reads; it keeps the socket
/// until `release` is set, then closes it with whatever is unread (a reset).
fn stalled_upstream(release: Arc<AtomicBool>) -> SocketAddr {
    raw_upstream(move |mut up| {
        up.accept();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !release.load(Ordering::Relaxed) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// A gateway (with `limits`) in front of a `stalled_upstream`, and the flag that
/// releases the upstream.
fn stalled_gateway(limits: &str) -> (Gateway, Arc<AtomicBool>) {
    let release = Arc::new(AtomicBool::new(false));
    let up = stalled_upstream(release.clone());
    (gateway(up, Opts::limits(limits)), release)
}

/// Writes 64 KiB binary messages until a write times out or `cap` bytes are out;
/// returns the bytes written.
fn write_until_stalled(s: &mut TcpStream, cap: usize, stall: Duration) -> usize {
    s.set_write_timeout(Some(stall)).expect("timeout");
    let payload: Vec<u8> = (0..64 * KIB).map(|i| (i % 251) as u8).collect();
    let frame = client_frame(true, 2, &payload);
    let mut written = 0;
    while written < cap {
        let off = written % frame.len();
        match s.write(&frame[off..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => panic!("write failed after {written} bytes: {e}"),
        }
    }
    written
}

#[test]
fn slow_upstream_reader_stalls_the_client_and_memory_stays_bounded() {
    let (gw, release) = stalled_gateway(r#"write_buffer = "256KiB""#);
    let before = rss_kib(&gw);
    let mut s = open_mode(&gw, "stall", "sam");
    let written = write_until_stalled(&mut s, 64 * MIB, Duration::from_millis(1500));
    let after = rss_kib(&gw);
    release.store(true, Ordering::Relaxed);
    eprintln!(
        "slow upstream: client wrote {} KiB of 65536 before stalling; gateway RSS {before} -> {after} KiB",
        written / KIB
    );
    assert!(
        written < 48 * MIB,
        "client wrote {written} bytes: no backpressure"
    );
    assert!(
        after.saturating_sub(before) < 64 * 1024,
        "gateway RSS grew {before} -> {after} KiB"
    );
}

/// The upstream leg stalls (write_buffer full), then the upstream resets its socket. The
/// leg's write fails first (`flush()` → `LegState::Done`), which skips the read that
/// would have noticed EOF, and nothing tells the client.
#[test]
fn upstream_reset_while_its_output_is_queued_gives_the_client_1014() {
    let (gw, release) = stalled_gateway("write_buffer = \"256KiB\"\nidle_timeout = \"6s\"");
    let mut s = open_mode(&gw, "stall", "tia");
    let written = write_until_stalled(&mut s, 64 * MIB, Duration::from_millis(1000));
    assert!(written < 48 * MIB);
    release.store(true, Ordering::Relaxed); // the upstream closes with unread data: RST
    let reset = Instant::now();
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let got = read_close(&mut s);
    let took = reset.elapsed();
    assert!(
        got == (Some(1014), "bad gateway".into()) && took < Duration::from_secs(3),
        "the client got {got:?} {took:?} after the upstream's reset"
    );
}

/// The client keeps sending while the upstream does not read: the gateway stops reading
/// the client, so the client's silence is the gateway's doing. SPEC §5 applies
/// `write_buffer` to both legs: output stuck above it for `idle_timeout` is 1008 "slow
/// consumer", not an idle client.
#[test]
fn slow_upstream_closes_1008_slow_consumer_not_idle() {
    let (gw, release) = stalled_gateway("write_buffer = \"256KiB\"\nidle_timeout = \"2s\"");
    let mut s = open_mode(&gw, "stall", "uma");
    // Stalled well before idle_timeout.
    let written = write_until_stalled(&mut s, 64 * MIB, Duration::from_millis(400));
    assert!(written < 48 * MIB, "{written}");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    // (The gateway also pings this client at idle_timeout / 2 although it is sending.)
    let got = read_close(&mut s);
    release.store(true, Ordering::Relaxed);
    assert_eq!(got, (Some(1008), "slow consumer".into()));
}

/// An upstream that writes 64 KiB binary messages as fast as the gateway takes them;
/// another thread records what the gateway sends it (close, EOF).
fn flooding_upstream(written: Arc<AtomicU64>, tx: Sender<Ev>) -> SocketAddr {
    raw_upstream(move |mut up| {
        up.accept();
        let mut reader = Up {
            s: up.s.try_clone().expect("clone"),
            head: String::new(),
        };
        let _ = reader.s.set_read_timeout(Some(Duration::from_secs(30)));
        let tx = tx.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_reader = stop.clone();
        std::thread::spawn(move || {
            echo_record(&mut reader, &tx);
            stop_reader.store(true, Ordering::Relaxed);
        });
        let _ = up.s.set_write_timeout(Some(Duration::from_millis(200)));
        let payload: Vec<u8> = (0..64 * KIB).map(|i| (i % 253) as u8).collect();
        let frame = raw_frame(0x82, &payload, None);
        let mut off = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            match up.s.write(&frame[off..]) {
                Ok(n) => {
                    written.fetch_add(n as u64, Ordering::Relaxed);
                    off = (off + n) % frame.len();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
    })
}

/// A client that never reads while the upstream floods: (upstream bytes written when
/// sampled at 1.5 s, gateway RSS before and at its peak in KiB, what ended the upstream's
/// connection, when) — the client socket is returned unread.
fn flood_an_unread_client(sub: &str) -> (u64, u64, u64, Ev, Duration, TcpStream, Receiver<Ev>) {
    let written = Arc::new(AtomicU64::new(0));
    let (tx, rx) = unbounded();
    let up = flooding_upstream(written.clone(), tx);
    let gw = gateway(
        up,
        Opts::limits("write_buffer = \"256KiB\"\nidle_timeout = \"2s\""),
    );
    let before = rss_kib(&gw);
    let s = open_mode(&gw, "flood", sub);
    let opened = Instant::now();
    let mut peak = before;
    let mut stalled_at = 0;
    while opened.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(100));
        peak = peak.max(rss_kib(&gw));
        stalled_at = written.load(Ordering::Relaxed);
    }
    let end = upstream_end(&rx);
    let closed_after = opened.elapsed();
    peak = peak.max(rss_kib(&gw));
    eprintln!(
        "unread client: upstream wrote {} KiB by 1.5 s; gateway RSS {before} -> peak {peak} KiB; upstream saw {end:?} after {closed_after:?}",
        stalled_at / 1024
    );
    (stalled_at, before, peak, end, closed_after, s, rx)
}

#[test]
fn slow_client_reader_is_closed_1008_slow_consumer_on_both_sides() {
    let (_, _, _, end, closed_after, mut s, rx) = flood_an_unread_client("val");
    // Output above write_buffer for idle_timeout (2 s): the gateway closes 1008 to both.
    assert_eq!(end, Ev::Close(Some(1008), "slow consumer".into()));
    assert!(
        closed_after < Duration::from_secs(6),
        "closed after {closed_after:?}"
    );
    // What the client finds when it finally reads: the queued data, then the close
    // frame if it made it out before the linger ended, or the end of the connection.
    s.set_read_timeout(Some(Duration::from_secs(8)))
        .expect("timeout");
    let mut data = 0usize;
    let outcome = loop {
        let mut h = [0u8; 2];
        if let Err(e) = s.read_exact(&mut h) {
            break format!("{:?} after {data} bytes of data, no close frame", e.kind());
        }
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                s.read_exact(&mut b).expect("len");
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                s.read_exact(&mut b).expect("len");
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut p = vec![0u8; len];
        if let Err(e) = s.read_exact(&mut p) {
            break format!("{:?} inside a frame after {data} bytes of data", e.kind());
        }
        if h[0] & 0x0f == 8 {
            break format!(
                "close {} {:?} after {data} bytes of data",
                u16::from_be_bytes([p[0], p[1]]),
                String::from_utf8_lossy(&p[2..])
            );
        }
        data += len;
    };
    eprintln!("unread client: when it finally read, the client got {outcome}");
    assert!(
        !outcome.contains("WouldBlock") && !outcome.contains("TimedOut"),
        "the client connection was never ended: {outcome}"
    );
    // The upstream leg is torn down too.
    let after = rx.recv_timeout(WAIT);
    assert!(
        matches!(after, Ok(Ev::Eof) | Ok(Ev::Err(_)) | Err(_)),
        "{after:?}"
    );
}

/// The same flood: the gateway keeps reading the upstream into the leg's `rbuf` while
/// the client's kernel buffers absorb output (16 reads of 64 KiB per turn, relay only up
/// to `write_buffer`), so memory grows to many times `write_buffer` before it stalls.
#[test]
fn slow_client_reader_memory_stays_bounded() {
    let (stalled_at, before, peak, _, _, _s, _rx) = flood_an_unread_client("vic");
    assert!(
        stalled_at < 48 * MIB as u64,
        "the gateway kept reading the upstream: {stalled_at} bytes"
    );
    assert!(
        peak.saturating_sub(before) < 64 * 1024,
        "gateway RSS grew {before} -> {peak} KiB"
    );
}

/// A client that reads, but slower than the upstream writes: every time its output
/// dips below `write_buffer` the gateway reads up to 16 worker-buffer reads from the upstream into
/// the leg's `rbuf`, but relays only up to the limit; the rest piles up in `rbuf`.
#[test]
fn trickling_client_reader_keeps_memory_bounded() {
    let written = Arc::new(AtomicU64::new(0));
    let (tx, _rx) = unbounded();
    let up = flooding_upstream(written.clone(), tx);
    let gw = gateway(up, Opts::limits(r#"write_buffer = "256KiB""#));
    let before = rss_kib(&gw);
    let mut s = open_mode(&gw, "flood", "wes");
    let started = Instant::now();
    let mut buf = vec![0u8; 16 * KIB];
    let mut read = 0usize;
    let mut peak = before;
    let mut n = 0u32;
    while started.elapsed() < Duration::from_secs(4) {
        read += s.read(&mut buf).expect("read");
        std::thread::sleep(Duration::from_millis(5));
        n += 1;
        if n % 20 == 0 {
            peak = peak.max(rss_kib(&gw));
        }
    }
    peak = peak.max(rss_kib(&gw));
    let up_written = written.load(Ordering::Relaxed) as usize;
    eprintln!(
        "trickle: client read {} KiB, upstream wrote {} KiB, gateway RSS {before} -> peak {peak} KiB",
        read / KIB,
        up_written / KIB
    );
    assert!(
        up_written < read + 48 * MIB,
        "the gateway took {} KiB from the upstream for {} KiB delivered",
        up_written / KIB,
        read / KIB
    );
    assert!(
        peak.saturating_sub(before) < 64 * 1024,
        "gateway RSS grew {before} -> {peak} KiB"
    );
}

#[test]
fn upstream_ping_flood_without_reading_costs_bounded_memory() {
    // #10 item 6: pongs to upstream pings are queued with a byte bound (write_buffer), as
    // client pongs are. An upstream that pings and never reads our pongs stalls instead
    // of growing the gateway's memory.
    const CAP: u64 = 96 * 1024 * 1024;
    let written = Arc::new(AtomicU64::new(0));
    let w = written.clone();
    let (tx, rx) = unbounded();
    let up = raw_upstream(move |mut up| {
        up.accept();
        up.s.set_write_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        // A small send buffer here, so that what the kernel holds is mostly the
        // gateway's receive buffer and the count measures the gateway.
        let _ = socket2::SockRef::from(&up.s).set_send_buffer_size(64 * 1024);
        let ping = raw_frame(0x89, &[0x5a; 125], None);
        let burst: Vec<u8> = ping.repeat(512);
        while w.load(Ordering::Relaxed) < CAP {
            match up.s.write(&burst) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    w.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
        let _ = tx.send(());
        // Keep the socket (unread) until the gateway gives up on it.
        up.wait_closed();
    });
    let gw = gateway(
        up,
        Opts::limits("write_buffer = \"256KiB\"\nidle_timeout = \"30s\""),
    );
    let before = rss_kib(&gw);
    let _s = open_mode(&gw, "pings", "ping-flood");
    rx.recv_timeout(Duration::from_secs(60))
        .expect("upstream finished writing or stalled");
    let total = written.load(Ordering::Relaxed);
    let after = rss_kib(&gw);
    eprintln!(
        "ping flood: upstream wrote {} KiB before stalling; gateway RSS {before} -> {after} KiB",
        total / 1024
    );
    assert!(
        total < 32 * 1024 * 1024,
        "the gateway kept reading pings: {total} bytes"
    );
    assert!(
        after < before + 32 * 1024,
        "gateway RSS grew from {before} to {after} KiB"
    );
    // Stalled, it waits for the upstream's writable edge rather than spinning: a second
    // of wall time costs far less than a second of CPU.
    let cpu = cpu_ticks(gw.child.id());
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(gw.child.id()) - cpu;
    assert!(
        spent < 50,
        "gateway used {spent} ticks in 1 s while stalled"
    );
}
