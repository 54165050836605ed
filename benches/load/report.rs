//! Results: one measurement per server per row, and the printed table.
//!
//! The table has one column group per peer (wsgate, fastwebsockets, tokio-tungstenite):
//! the row's figure, the server's CPU during the window, and the server's CPU per
//! operation in microseconds (server CPU-seconds / operations in the window: messages
//! echoed, or handshakes completed), which is what issue #15 compares.

use std::fmt::Write as _;

use crate::{PROXY_MAX_ADDED_P50_US, PROXY_MIN_RATIO, PROXY_PATH};

/// One measurement of one server.
#[derive(Debug, Clone, Default)]
pub(crate) struct Measure {
    /// The row's figure (messages/s, MB/s, handshakes/s, bytes).
    pub(crate) rate: f64,
    /// Operations per second in the window (messages echoed, handshakes completed): the
    /// denominator of CPU per operation. Zero where it means nothing (memory rows).
    pub(crate) ops: f64,
    /// Median round trip.
    pub(crate) p50_us: Option<f64>,
    /// 99th percentile round trip.
    pub(crate) p99_us: Option<f64>,
    /// Server CPU during the window, in cores (1.0 = one core busy).
    pub(crate) server_cpu: Option<f64>,
    /// Client CPU during the window, in cores.
    pub(crate) client_cpu: Option<f64>,
    /// CPU of the upstream behind a proxy route during the window, in cores.
    pub(crate) upstream_cpu: Option<f64>,
    /// Failed connects or handshakes during the window.
    pub(crate) errors: u64,
    /// Idle rows: growth of the machine's kernel slab per connection (both ends).
    pub(crate) slab_per_conn: Option<f64>,
}

impl Measure {
    /// Server CPU per operation, in microseconds.
    pub(crate) fn us_per_op(&self) -> Option<f64> {
        self.server_cpu
            .filter(|_| self.ops > 0.0)
            .map(|cores| cores / self.ops * 1e6)
    }
}

/// The peers' columns, in print order (uWebSockets only with `WSGATE_BENCH_UWS`).
pub(crate) const COLUMNS: [&str; 4] = ["wsgate", "fastwebsockets", "tokio-tung", "uWebSockets"];

/// One peer's cell of a row.
#[derive(Default, Clone, Copy)]
pub(crate) struct Cell {
    value: Option<f64>,
    cpu: Option<f64>,
    us_per_op: Option<f64>,
}

impl Cell {
    fn of(m: &Measure) -> Cell {
        Cell {
            // NaN: no figure (a peer skipped at that point).
            value: Some(m.rate).filter(|r| r.is_finite()),
            cpu: m.server_cpu,
            us_per_op: m.us_per_op(),
        }
    }

    fn value(v: Option<f64>) -> Cell {
        Cell {
            value: v,
            ..Cell::default()
        }
    }
}

/// One printed line: a cell per column of [`COLUMNS`].
pub(crate) struct Row {
    label: String,
    cells: [Cell; 4],
    client_cpu: String,
    note: String,
}

impl Row {
    /// A rate row over the peers in [`COLUMNS`] order (uWebSockets when measured).
    pub(crate) fn rate(label: &str, ms: &[Measure]) -> Row {
        Row {
            label: label.into(),
            cells: std::array::from_fn(|i| ms.get(i).map_or_else(Cell::default, Cell::of)),
            client_cpu: ms
                .iter()
                .map(|m| pct(m.client_cpu))
                .collect::<Vec<_>>()
                .join("/"),
            note: errors_note(&ms.iter().collect::<Vec<_>>()),
        }
    }

    /// A figure of each peer's measurement (latency, memory), without CPU.
    pub(crate) fn latency(label: &str, ms: &[Measure], f: impl Fn(&Measure) -> Option<f64>) -> Row {
        Row {
            label: label.into(),
            cells: std::array::from_fn(|i| Cell::value(ms.get(i).and_then(&f))),
            client_cpu: String::new(),
            note: String::new(),
        }
    }

    /// A proxy row's rate: via wsgate (the wsgate column) against direct (the
    /// tokio-tungstenite column); the note gives the upstream's CPU during the via window
    /// and, when `goal`, the throughput goal.
    pub(crate) fn proxy_rate(label: &str, via: &Measure, direct: &Measure, goal: bool) -> Row {
        let ratio = (direct.rate > 0.0).then(|| via.rate / direct.rate);
        let goal = if goal {
            format!(
                "; goal >= {PROXY_MIN_RATIO:.2}: {}",
                verdict(ratio.map(|r| r >= PROXY_MIN_RATIO))
            )
        } else {
            String::new()
        };
        Row {
            label: label.into(),
            cells: [
                Cell::of(via),
                Cell::default(),
                Cell::of(direct),
                Cell::default(),
            ],
            client_cpu: format!("{}/-/{}", pct(via.client_cpu), pct(direct.client_cpu)),
            note: format!(
                "  upstream cpu {} via{goal}{}",
                pct(via.upstream_cpu),
                errors_note(&[via, direct])
            ),
        }
    }

    /// The deflate row: wsgate with the extension (wsgate column), without it (the
    /// tokio-tungstenite column), uWebSockets with it when measured (its column).
    pub(crate) fn deflate_rate(label: &str, d: &Measure, p: &Measure, u: Option<&Measure>) -> Row {
        let all: Vec<&Measure> = [Some(d), Some(p), u].into_iter().flatten().collect();
        Row {
            label: label.into(),
            cells: [
                Cell::of(d),
                Cell::default(),
                Cell::of(p),
                u.map_or_else(Cell::default, Cell::of),
            ],
            client_cpu: all
                .iter()
                .map(|m| pct(m.client_cpu))
                .collect::<Vec<_>>()
                .join("/"),
            note: errors_note(&all),
        }
    }

    /// Plain figures in all four columns (`None`: no figure).
    pub(crate) fn values4(label: &str, values: [Option<f64>; 4]) -> Row {
        Row {
            label: label.into(),
            cells: values.map(Cell::value),
            client_cpu: String::new(),
            note: String::new(),
        }
    }

    /// Plain figures, one per column (`None`: no figure).
    pub(crate) fn values(label: &str, values: [Option<f64>; 3]) -> Row {
        Row {
            label: label.into(),
            cells: [
                Cell::value(values[0]),
                Cell::value(values[1]),
                Cell::value(values[2]),
                Cell::default(),
            ],
            client_cpu: String::new(),
            note: String::new(),
        }
    }

    /// A pair figure (via, direct) in the wsgate and tokio-tungstenite columns.
    pub(crate) fn pair(
        label: &str,
        via: &Measure,
        direct: &Measure,
        f: impl Fn(&Measure) -> Option<f64>,
    ) -> Row {
        Row {
            label: label.into(),
            cells: [
                Cell::value(f(via)),
                Cell::default(),
                Cell::value(f(direct)),
                Cell::default(),
            ],
            client_cpu: String::new(),
            note: String::new(),
        }
    }

    /// Via p50 minus direct p50, in the wsgate column; the note gives the latency goal
    /// when `goal`.
    pub(crate) fn added_p50(via: &Measure, direct: &Measure, goal: bool) -> Row {
        let added = via.p50_us.zip(direct.p50_us).map(|(v, d)| v - d);
        let note = if goal {
            format!(
                "  goal < {PROXY_MAX_ADDED_P50_US:.0}: {}",
                verdict(added.map(|a| a < PROXY_MAX_ADDED_P50_US))
            )
        } else {
            String::new()
        };
        Row {
            label: "  added p50 via wsgate (us)".into(),
            cells: [
                Cell::value(added),
                Cell::default(),
                Cell::default(),
                Cell::default(),
            ],
            client_cpu: String::new(),
            note,
        }
    }

    /// wsgate's and tokio-tungstenite's measurements in their columns (the wss rows).
    pub(crate) fn two(label: &str, w: &Measure, t: &Measure) -> Row {
        Row {
            label: label.into(),
            cells: [Cell::of(w), Cell::default(), Cell::of(t), Cell::default()],
            client_cpu: format!("{}/-/{}", pct(w.client_cpu), pct(t.client_cpu)),
            note: errors_note(&[w, t]),
        }
    }

    /// Plain figures in the wsgate and tokio-tungstenite columns.
    pub(crate) fn two_values(label: &str, w: Option<f64>, t: Option<f64>) -> Row {
        Row::values4(label, [w, None, t, None])
    }

    /// A row without figures: `note` says why (a scale point that cannot run here).
    pub(crate) fn skipped(label: &str, note: &str) -> Row {
        Row {
            label: label.into(),
            cells: [Cell::default(); 4],
            client_cpu: String::new(),
            note: format!("  {note}"),
        }
    }

    /// A row only wsgate has (token handshakes); `note` is added to the errors note.
    pub(crate) fn wsgate_only(label: &str, w: &Measure, note: &str) -> Row {
        Row {
            label: label.into(),
            cells: [
                Cell::of(w),
                Cell::default(),
                Cell::default(),
                Cell::default(),
            ],
            client_cpu: format!("{}/-/-", pct(w.client_cpu)),
            note: format!("{}{note}", errors_note(&[w])),
        }
    }
}

fn errors_note(ms: &[&Measure]) -> String {
    let errors: u64 = ms.iter().map(|m| m.errors).sum();
    if errors == 0 {
        String::new()
    } else {
        format!("  ({errors} errors)")
    }
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "missed",
        None => "-",
    }
}

pub(crate) fn pct(cores: Option<f64>) -> String {
    cores.map_or("-".into(), |c| format!("{:.0}%", c * 100.0))
}

/// `1234567.8` as `1,234,568` (small values keep one decimal).
pub(crate) fn group(v: f64) -> String {
    if v < 0.0 {
        return format!("-{}", group(-v));
    }
    if v < 100.0 {
        return format!("{v:.1}");
    }
    let digits = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(crate) fn print_table(rows: &[Row]) {
    let mut out = String::new();
    let _ = write!(out, "{:<46}", "row");
    for name in COLUMNS {
        let _ = write!(out, " {name:>11} {:>5} {:>6}", "cpu", "us/op");
    }
    let _ = writeln!(out, " {:>7}  {:>11}", "ws/tt", "client");
    let _ = writeln!(out, "{}", "-".repeat(46 + COLUMNS.len() * 25 + 22));
    for r in rows {
        let cell = |v: Option<f64>| v.map_or("-".into(), group);
        let cpu = |c: Option<f64>| c.map_or(String::new(), |c| pct(Some(c)));
        let us = |u: Option<f64>| u.map_or(String::new(), |u| format!("{u:.2}"));
        let _ = write!(out, "{:<46}", r.label);
        for c in &r.cells {
            let _ = write!(
                out,
                " {:>11} {:>5} {:>6}",
                cell(c.value),
                cpu(c.cpu),
                us(c.us_per_op)
            );
        }
        let ratio = match (r.cells[0].value, r.cells[2].value) {
            (Some(w), Some(t)) if t > 0.0 => format!("{:.2}", w / t),
            _ => "-".into(),
        };
        let _ = writeln!(out, " {:>7}  {:>11}{}", ratio, r.client_cpu, r.note);
    }
    let _ = writeln!(
        out,
        "cpu: the server's CPU (all threads) during the window, 100% = one core; us/op: server \
         CPU-seconds / operations (messages echoed, handshakes completed) in the window, lower \
         is better;\nclient: the bench client's CPU (wsgate / fastwebsockets / tokio-tungstenite \
         / uWebSockets runs). ws/tt: higher is better for rates, lower for latency and memory.\nproxy rows: \
         wsgate column = client -> wsgate {PROXY_PATH} -> tokio-tungstenite (cpu: wsgate's; the \
         upstream's is in the note),\n  tokio-tung column = client -> the same \
         tokio-tungstenite directly; ws/tt = via/direct.\ndeflate rows: wsgate column = \
         connections with the extension, tokio-tung column = the same wsgate without it, \
         uWebSockets column = its deflating echo (WSGATE_BENCH_UWS_DEFLATE); ws/tt = \
         deflate/plain.\nwss rows: wsgate column = wsgate with [tls], tokio-tung column = tokio-tungstenite \
         behind tokio-rustls (same rustls ServerConfig, ring); \"the same over ws\": the same \
         servers' plain twins in the same alternation."
    );
    print!("{out}");
}
