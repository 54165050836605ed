//! What permessage-deflate costs one connection, measured with a counting allocator (SPEC
//! §10 "say what one connection costs in each mode"), and the check that the estimate the
//! handshake reserves against `compression.memory` is not below what is really held.
//! A separate test binary: a `#[global_allocator]` applies to the whole binary. Bytes are
//! counted per thread, so that what the harness does meanwhile (its "running for over 60
//! seconds" notice on a loaded machine, say) is not charged to the measurement.
#![allow(unsafe_code)] // GlobalAlloc is an unsafe trait; this wrapper only counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use wsgate::proto::ws::deflate::{
    deflate_cost, inflate_cost, negotiate, Agreement, DeflateConfig, PerMessageDeflate,
};
use wsgate::proto::ws::frame::{parse_header, write_frame, OpCode};

struct Counting;

thread_local! {
    /// Bytes this thread allocated minus those it freed. A `const` initialiser with no
    /// destructor: reading it never allocates, so the allocator may use it.
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with` fails only while the thread is being torn down: nothing is measured then.
    let _ = LIVE.try_with(|live| live.set(live.get() + delta));
}

// SAFETY: every call is forwarded unchanged to `System`; the wrapper only adds up sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// What the calling thread holds (allocated and not yet freed by it).
fn live() -> isize {
    LIVE.with(Cell::get)
}

fn agreement(bits: u8, takeover: bool) -> Agreement {
    let config = DeflateConfig {
        server_max_window_bits: bits,
        context_takeover: takeover,
        min_size: 0,
    };
    let offer: &[u8] = b"permessage-deflate; client_max_window_bits";
    negotiate([offer], &config)
        .expect("valid")
        .expect("accepted")
}

/// One 1 KiB JSON message in (compressed by a peer) and its echo out.
fn one_round(pmd: &mut PerMessageDeflate, compressed: &[u8], message: &[u8]) {
    let mut inflated = Vec::new();
    pmd.inflate(compressed, 1 << 20, &mut inflated)
        .expect("inflates");
    assert_eq!(inflated, message);
    let mut staging = Vec::new();
    write_frame(&mut staging, true, OpCode::Text, &inflated);
    let mut out = Vec::new();
    pmd.send_staged(&mut staging, &mut out);
}

fn compressed(message: &[u8], bits: u8) -> Vec<u8> {
    let mut sender = PerMessageDeflate::new(agreement(bits, false), None);
    let mut staging = Vec::new();
    write_frame(&mut staging, true, OpCode::Text, message);
    let mut out = Vec::new();
    sender.send_staged(&mut staging, &mut out);
    let (_, n) = parse_header(&out).expect("ok").expect("whole");
    out[n..].to_vec()
}

#[test]
fn what_one_connection_costs_in_each_mode() {
    let message: Vec<u8> = (0..24)
        .flat_map(|i| format!(r#"{{"id":{i},"symbol":"ABC","price":12.5}},"#).into_bytes())
        .collect();
    let mut report = String::new();
    for bits in [15u8, 12, 9] {
        let input = compressed(&message, bits);
        // Without context takeover: the worker's pool is warmed first (it is paid once per
        // worker thread, not per connection), then a connection costs its own struct only.
        let mut warm = PerMessageDeflate::new(agreement(bits, false), None);
        one_round(&mut warm, &input, &message);
        let before = live();
        let mut pmd = Box::new(PerMessageDeflate::new(agreement(bits, false), None));
        one_round(&mut pmd, &input, &message);
        let without = live() - before;
        drop(pmd);
        // The pool itself, per worker: measured on a fresh thread.
        let (pool_input, pool_message) = (input.clone(), message.clone());
        let pool = std::thread::spawn(move || {
            let before = live();
            let mut pmd = PerMessageDeflate::new(agreement(bits, false), None);
            one_round(&mut pmd, &pool_input, &pool_message);
            drop(pmd);
            live() - before
        })
        .join()
        .expect("pool thread");
        // With context takeover: both contexts live with the connection.
        let input = compressed(&message, bits);
        let a = agreement(bits, true);
        let before = live();
        let mut pmd = Box::new(PerMessageDeflate::new(a, None));
        one_round(&mut pmd, &input, &message);
        let with = live() - before;
        drop(pmd);
        report.push_str(&format!(
            "window {bits}: no context takeover {without} B per connection (+{pool} B per worker); \
             context takeover {with} B per connection (reserved: {})\n",
            a.state_cost()
        ));
        assert!(
            without < 256,
            "no state kept between messages: {without} bytes"
        );
        assert!(with > 0);
        // The reservation is never below what is held.
        assert!(
            with as usize <= a.state_cost(),
            "window {bits}: {with} bytes held, {} reserved",
            a.state_cost()
        );
        // And not wildly above it (the estimate stays honest): within 25 %.
        assert!(
            a.state_cost() <= with as usize + with as usize / 4,
            "window {bits}: {} reserved for {with} bytes held",
            a.state_cost()
        );
        assert_eq!(a.state_cost(), deflate_cost(bits) + inflate_cost(bits));
    }
    println!("{report}");
}
