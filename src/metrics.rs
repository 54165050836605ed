//! Gateway counters (SPEC §7): one block of atomics per worker, summed at scrape time.
//!
//! Each worker thread writes only its own [`WorkerMetrics`] (Relaxed atomics in a block aligned
//! to its own cache lines, so workers never contend), and the admin thread reads every block
//! when `/metrics` is scraped. Every label value comes from a fixed set known at construction:
//! the HTTP statuses and close codes below, the auth failure reasons given to
//! [`Metrics::new`], and `"other"`; never from request data or tokens. Recording therefore
//! allocates nothing and takes no lock.
//!
//! # Series (the contract for dashboards)
//!
//! | family | type | labels |
//! |---|---|---|
//! | `wsgate_open_connections` | gauge | `worker="0"`: client connections open on that worker, handshake included |
//! | `wsgate_handshakes_total` | counter | `outcome="accepted"` (status 101) or `"rejected"`; `status` one of [`HANDSHAKE_STATUSES`] or `"other"` |
//! | `wsgate_auth_failures_total` | counter | `reason`: one of the labels given to [`Metrics::new`], or `"other"` |
//! | `wsgate_messages_total` | counter | `direction="in"` (from clients) or `"out"` (to clients) |
//! | `wsgate_bytes_total` | counter | `direction="in"` or `"out"`: message payload bytes |
//! | `wsgate_closes_total` | counter | `code`: one of [`CLOSE_CODES`] or `"other"` |
//! | `wsgate_revocations_total` | counter | none: revocations accepted by `POST /revoke` |
//! | `wsgate_upstream_errors_total` | counter | none: failed upstream connects, handshakes and relays |
//! | `wsgate_upstream_forged_headers_total` | counter | none: client headers dropped on the way upstream as forged (SPEC §5) |
//! | `wsgate_upstream_dns_failures_total` | counter | none: failed lookups of upstream host names (the control plane's resolver) |
//!
//! Every series of the fixed sets is rendered, zeros included, so that `rate()` has a start.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// `Content-Type` of the rendered exposition (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Handshake answers counted under their own `status` label; any other is `status="other"`.
pub const HANDSHAKE_STATUSES: [u16; 13] = [
    101, 400, 401, 403, 404, 405, 408, 426, 429, 431, 502, 503, 504,
];

/// Close codes counted under their own `code` label (RFC 6455 §7.4.1 codes 1000-1015, 1006
/// for a connection lost without a close frame, and the gateway's 4401 / 4403); any other is
/// `code="other"`.
pub const CLOSE_CODES: [u16; 18] = [
    1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 1015,
    4401, 4403,
];

/// Most auth failure reason labels a registry keeps apart; further labels count as `"other"`.
/// Sized so the per-worker block stays fixed (no heap slice that could share a cache line
/// with another worker's); `TokenError` has about 30 reasons.
pub const MAX_AUTH_REASONS: usize = 64;

/// The label value of every "not in the fixed set" bucket.
const OTHER: &str = "other";

/// Slot of the "other" bucket in the handshake counters.
const HANDSHAKE_OTHER: usize = HANDSHAKE_STATUSES.len();

/// Slot of the "other" bucket in the close counters.
const CLOSE_OTHER: usize = CLOSE_CODES.len();

/// The slot of `status` in the handshake counters.
fn handshake_slot(status: u16) -> usize {
    HANDSHAKE_STATUSES
        .iter()
        .position(|&known| known == status)
        .unwrap_or(HANDSHAKE_OTHER)
}

/// The slot of `code` in the close counters (the order of [`CLOSE_CODES`]).
fn close_slot(code: u16) -> usize {
    match code {
        1000..=1015 => usize::from(code - 1000),
        4401 => 16,
        4403 => 17,
        _ => CLOSE_OTHER,
    }
}

/// Adds `n` to a counter. Relaxed: counters order nothing, the scrape only needs each value.
fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Adds `n` to the slot `index` of `counters`, if it exists (callers pass an in-range slot).
fn add_at(counters: &[AtomicU64], index: usize, n: u64) {
    if let Some(counter) = counters.get(index) {
        add(counter, n);
    }
}

/// Reads the slot `index` of `counters` (0 when out of range).
fn read_at(counters: &[AtomicU64], index: usize) -> u64 {
    counters
        .get(index)
        .map_or(0, |counter| counter.load(Ordering::Relaxed))
}

// === impl WorkerMetrics ===

/// The counters of one worker thread; only that worker writes them.
///
/// Aligned to 128 bytes (two cache lines, for adjacent-line prefetch) so that no two
/// workers' blocks share a line. Writes use `fetch_add` rather than load + store, so a block
/// shared by mistake loses no counts; uncontended, that costs a few cycles.
#[derive(Debug)]
#[repr(align(128))]
pub struct WorkerMetrics {
    /// Client connections open on this worker, from accept to close (a gauge).
    pub open_connections: AtomicI64,
    /// Messages received from clients.
    pub messages_in: AtomicU64,
    /// Messages sent to clients.
    pub messages_out: AtomicU64,
    /// Message payload bytes received from clients.
    pub bytes_in: AtomicU64,
    /// Message payload bytes sent to clients.
    pub bytes_out: AtomicU64,
    /// Failed upstream connects, handshakes and relays.
    pub upstream_errors: AtomicU64,
    /// Client headers not forwarded upstream because they were forged (SPEC §5).
    pub forged_headers: AtomicU64,
    /// Handshake answers, by the slots of [`HANDSHAKE_STATUSES`] then "other".
    handshakes: [AtomicU64; HANDSHAKE_STATUSES.len() + 1],
    /// Closes, by the slots of [`CLOSE_CODES`] then "other".
    closes: [AtomicU64; CLOSE_CODES.len() + 1],
    /// Auth failures, by the slots of `auth_reasons` then "other" at `auth_reasons.len()`.
    auth_failures: [AtomicU64; MAX_AUTH_REASONS + 1],
    /// The reason labels, shared with the registry (read-only).
    auth_reasons: Arc<[&'static str]>,
}

impl WorkerMetrics {
    /// A zeroed block counting auth failures under `auth_reasons` (at most [`MAX_AUTH_REASONS`]).
    fn new(auth_reasons: Arc<[&'static str]>) -> WorkerMetrics {
        WorkerMetrics {
            open_connections: AtomicI64::new(0),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            upstream_errors: AtomicU64::new(0),
            forged_headers: AtomicU64::new(0),
            handshakes: [const { AtomicU64::new(0) }; HANDSHAKE_STATUSES.len() + 1],
            closes: [const { AtomicU64::new(0) }; CLOSE_CODES.len() + 1],
            auth_failures: [const { AtomicU64::new(0) }; MAX_AUTH_REASONS + 1],
            auth_reasons,
        }
    }

    /// Counts a connection accepted (the gauge goes up).
    pub fn connection_opened(&self) {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection gone, whatever the reason (the gauge goes down).
    pub fn connection_closed(&self) {
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts a handshake answered with `status`: outcome "accepted" for 101, else "rejected".
    pub fn handshake(&self, status: u16) {
        add_at(&self.handshakes, handshake_slot(status), 1);
    }

    /// Counts a token refused for `reason` (a label given to [`Metrics::new`], else "other").
    pub fn auth_failure(&self, reason: &'static str) {
        add_at(&self.auth_failures, self.auth_slot(reason), 1);
    }

    /// Counts a connection closed with `code` (1006 when it ended without a close frame).
    pub fn close(&self, code: u16) {
        add_at(&self.closes, close_slot(code), 1);
    }

    /// Counts one message of `bytes` payload bytes received from a client.
    pub fn message_in(&self, bytes: u64) {
        add(&self.messages_in, 1);
        add(&self.bytes_in, bytes);
    }

    /// Counts one message of `bytes` payload bytes sent to a client.
    pub fn message_out(&self, bytes: u64) {
        add(&self.messages_out, 1);
        add(&self.bytes_out, bytes);
    }

    /// Counts a failed upstream connect, handshake or relay.
    pub fn upstream_error(&self) {
        add(&self.upstream_errors, 1);
    }

    /// Counts `n` client headers dropped as forged on their way upstream (SPEC §5).
    pub fn forged_headers(&self, n: usize) {
        add(&self.forged_headers, n as u64);
    }

    /// Handshakes answered with `status` (a status outside the fixed set reads "other").
    pub fn handshake_count(&self, status: u16) -> u64 {
        read_at(&self.handshakes, handshake_slot(status))
    }

    /// Closes with `code` (a code outside the fixed set reads "other").
    pub fn close_count(&self, code: u16) -> u64 {
        read_at(&self.closes, close_slot(code))
    }

    /// Auth failures counted under `reason` (an unknown reason reads "other").
    pub fn auth_failure_count(&self, reason: &str) -> u64 {
        read_at(&self.auth_failures, self.auth_slot(reason))
    }

    /// The slot of `reason`: its place in the list, or the "other" slot after the list.
    fn auth_slot(&self, reason: &str) -> usize {
        self.auth_reasons
            .iter()
            .position(|&known| known == reason)
            .unwrap_or(self.auth_reasons.len())
    }
}

// === impl Metrics ===

/// The registry: one [`WorkerMetrics`] per worker plus the process-wide counters.
#[derive(Debug)]
pub struct Metrics {
    /// One block per worker, in worker order (the `worker` label is the index).
    pub workers: Vec<Arc<WorkerMetrics>>,
    /// Revocations accepted by `POST /revoke` (written by the admin thread).
    pub revocations: AtomicU64,
    /// Failed lookups of upstream host names (written by the control plane's resolver).
    pub dns_failures: Arc<AtomicU64>,
    /// The auth failure reason labels, deduplicated, without "other".
    auth_reasons: Arc<[&'static str]>,
}

impl Metrics {
    /// A zeroed registry for `workers` workers, counting auth failures under `auth_reasons`.
    ///
    /// Duplicate labels and `"other"` are dropped; past [`MAX_AUTH_REASONS`] distinct labels
    /// the rest count as `"other"`.
    pub fn new(workers: usize, auth_reasons: &[&'static str]) -> Metrics {
        let mut reasons: Vec<&'static str> = Vec::with_capacity(auth_reasons.len());
        for &reason in auth_reasons {
            if reason != OTHER && !reasons.contains(&reason) && reasons.len() < MAX_AUTH_REASONS {
                reasons.push(reason);
            }
        }
        let auth_reasons: Arc<[&'static str]> = reasons.into();
        Metrics {
            workers: (0..workers)
                .map(|_| Arc::new(WorkerMetrics::new(Arc::clone(&auth_reasons))))
                .collect(),
            revocations: AtomicU64::new(0),
            dns_failures: Arc::new(AtomicU64::new(0)),
            auth_reasons,
        }
    }

    /// This registry, with `counter` as its DNS failure count (the resolver's, which
    /// starts counting before the data plane exists).
    pub fn with_dns_failures(mut self, counter: Arc<AtomicU64>) -> Metrics {
        self.dns_failures = counter;
        self
    }

    /// Counts a revocation accepted by `POST /revoke`.
    pub fn revocation(&self) {
        add(&self.revocations, 1);
    }

    /// The sum over workers of the counter `field` picks (saturating).
    pub fn total(&self, field: impl Fn(&WorkerMetrics) -> &AtomicU64) -> u64 {
        self.sum(|worker| field(worker).load(Ordering::Relaxed))
    }

    /// Handshakes answered with `status`, over all workers.
    pub fn handshake_count(&self, status: u16) -> u64 {
        self.sum(|worker| worker.handshake_count(status))
    }

    /// Closes with `code`, over all workers.
    pub fn close_count(&self, code: u16) -> u64 {
        self.sum(|worker| worker.close_count(code))
    }

    /// Auth failures under `reason`, over all workers.
    pub fn auth_failure_count(&self, reason: &str) -> u64 {
        self.sum(|worker| worker.auth_failure_count(reason))
    }

    /// Appends the Prometheus text exposition (format 0.0.4) of every series to `out`.
    pub fn render(&self, out: &mut String) {
        family(
            out,
            "wsgate_open_connections",
            "gauge",
            "Client connections open, handshake included, per worker.",
        );
        for (index, worker) in self.workers.iter().enumerate() {
            let label = index.to_string();
            sample_start(out, "wsgate_open_connections", &[("worker", &label)]);
            let _ = writeln!(out, " {}", worker.open_connections.load(Ordering::Relaxed));
        }

        family(
            out,
            "wsgate_handshakes_total",
            "counter",
            "Upgrade requests answered, by outcome and HTTP status.",
        );
        let statuses = HANDSHAKE_STATUSES.iter().map(|&s| (Some(s), s.to_string()));
        for (status, label) in statuses.chain([(None, OTHER.to_owned())]) {
            let outcome = if status == Some(101) {
                "accepted"
            } else {
                "rejected"
            };
            let slot = status.map_or(HANDSHAKE_OTHER, handshake_slot);
            let value = self.sum(|worker| read_at(&worker.handshakes, slot));
            sample(
                out,
                "wsgate_handshakes_total",
                &[("outcome", outcome), ("status", &label)],
                value,
            );
        }

        family(
            out,
            "wsgate_auth_failures_total",
            "counter",
            "Tokens refused, by reason.",
        );
        let others = self.auth_reasons.len();
        for (slot, reason) in self.auth_reasons.iter().chain([&OTHER]).enumerate() {
            let slot = slot.min(others);
            let value = self.sum(|worker| read_at(&worker.auth_failures, slot));
            sample(
                out,
                "wsgate_auth_failures_total",
                &[("reason", reason)],
                value,
            );
        }

        family(
            out,
            "wsgate_messages_total",
            "counter",
            "WebSocket messages, by direction (in: from clients, out: to clients).",
        );
        let messages_in = self.total(|worker| &worker.messages_in);
        let messages_out = self.total(|worker| &worker.messages_out);
        sample(
            out,
            "wsgate_messages_total",
            &[("direction", "in")],
            messages_in,
        );
        sample(
            out,
            "wsgate_messages_total",
            &[("direction", "out")],
            messages_out,
        );

        family(
            out,
            "wsgate_bytes_total",
            "counter",
            "WebSocket message payload bytes, by direction (in: from clients, out: to clients).",
        );
        let bytes_in = self.total(|worker| &worker.bytes_in);
        let bytes_out = self.total(|worker| &worker.bytes_out);
        sample(out, "wsgate_bytes_total", &[("direction", "in")], bytes_in);
        sample(
            out,
            "wsgate_bytes_total",
            &[("direction", "out")],
            bytes_out,
        );

        family(
            out,
            "wsgate_closes_total",
            "counter",
            "Client connections closed, by close code (1006: ended without a close frame).",
        );
        let codes = CLOSE_CODES
            .iter()
            .map(|&code| (close_slot(code), code.to_string()));
        for (slot, label) in codes.chain([(CLOSE_OTHER, OTHER.to_owned())]) {
            let value = self.sum(|worker| read_at(&worker.closes, slot));
            sample(out, "wsgate_closes_total", &[("code", &label)], value);
        }

        family(
            out,
            "wsgate_revocations_total",
            "counter",
            "Revocations accepted by POST /revoke.",
        );
        let revocations = self.revocations.load(Ordering::Relaxed);
        sample(out, "wsgate_revocations_total", &[], revocations);

        family(
            out,
            "wsgate_upstream_errors_total",
            "counter",
            "Failed upstream connects, handshakes and relays.",
        );
        let upstream_errors = self.total(|worker| &worker.upstream_errors);
        sample(out, "wsgate_upstream_errors_total", &[], upstream_errors);

        family(
            out,
            "wsgate_upstream_forged_headers_total",
            "counter",
            "Client headers dropped on the way upstream as forged: identity (X-Auth-*), \
             forwarding (Forwarded, X-Real-IP, X-Forwarded-Host/-Proto) or an underscore \
             spelling of a refused name.",
        );
        let forged = self.total(|worker| &worker.forged_headers);
        sample(out, "wsgate_upstream_forged_headers_total", &[], forged);

        family(
            out,
            "wsgate_upstream_dns_failures_total",
            "counter",
            "Failed lookups of upstream host names (each attempt; a failing name is retried).",
        );
        let dns_failures = self.dns_failures.load(Ordering::Relaxed);
        sample(out, "wsgate_upstream_dns_failures_total", &[], dns_failures);
    }

    /// The saturating sum over workers of `value`.
    fn sum(&self, value: impl Fn(&WorkerMetrics) -> u64) -> u64 {
        self.workers
            .iter()
            .fold(0, |total, worker| total.saturating_add(value(worker)))
    }
}

// === exposition format ===

/// Appends the `# HELP` and `# TYPE` lines of a family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    // Exposition format 0.0.4: in HELP text, `\` is written `\\` and a line feed `\n`.
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

/// Appends `name{label="value",...}` (no braces without labels), without the value.
fn sample_start(out: &mut String, name: &str, labels: &[(&str, &str)]) {
    out.push_str(name);
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (index, (label, value)) in labels.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(label);
        out.push_str("=\"");
        // Exposition format 0.0.4: in label values, `\`, `"` and line feed are escaped.
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                _ => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// Appends one sample line of a counter.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    sample_start(out, name, labels);
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    const REASONS: [&str; 4] = ["expired", "bad_signature", "revoked", "unknown_kid"];

    /// One parsed sample: metric name, labels in order, value.
    #[derive(Debug, Clone, PartialEq)]
    struct Sample {
        name: String,
        labels: BTreeMap<String, String>,
        value: f64,
    }

    fn is_name(name: &str) -> bool {
        let mut chars = name.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn is_label_name(name: &str) -> bool {
        let mut chars = name.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    /// Parses `{a="x",b="y"}` (after the name); returns the labels and the rest of the line.
    fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
        let mut labels = BTreeMap::new();
        let Some(mut rest) = text.strip_prefix('{') else {
            return Ok((labels, text));
        };
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                return Ok((labels, after));
            }
            let (name, after) = rest.split_once("=\"").ok_or("label without =\"")?;
            if !is_label_name(name) {
                return Err(format!("bad label name {name:?}"));
            }
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some((i, '"')) => break i,
                    Some((_, '\n')) => return Err("raw line feed in label value".into()),
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                }
            };
            if labels.insert(name.to_owned(), value).is_some() {
                return Err(format!("label {name} repeated"));
            }
            rest = after.get(end + 1..).ok_or("cut")?;
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }

    /// A small parser of the text format: checks every rule the test cares about and returns
    /// the samples plus each family's TYPE.
    fn parse(text: &str) -> Result<(Vec<Sample>, BTreeMap<String, String>), String> {
        if !text.ends_with('\n') {
            return Err("exposition must end with a line feed".into());
        }
        let mut types = BTreeMap::new();
        let mut helps = BTreeSet::new();
        let mut samples = Vec::new();
        let mut seen = BTreeSet::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            if let Some(comment) = line.strip_prefix("# ") {
                let (keyword, rest) = comment.split_once(' ').ok_or("bare comment")?;
                let (name, tail) = rest.split_once(' ').ok_or("comment without text")?;
                if !is_name(name) {
                    return Err(format!("bad family name {name:?}"));
                }
                match keyword {
                    "HELP" => {
                        if !helps.insert(name.to_owned()) {
                            return Err(format!("two HELP lines for {name}"));
                        }
                    }
                    "TYPE" => {
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&tail)
                        {
                            return Err(format!("bad type {tail:?}"));
                        }
                        if types.insert(name.to_owned(), tail.to_owned()).is_some() {
                            return Err(format!("two TYPE lines for {name}"));
                        }
                        current = Some(name.to_owned());
                    }
                    _ => return Err(format!("unexpected comment {line:?}")),
                }
                continue;
            }
            let name_end = line.find(['{', ' ']).ok_or("sample without value")?;
            let name = line.get(..name_end).ok_or("cut")?;
            if !is_name(name) {
                return Err(format!("bad metric name {name:?}"));
            }
            let (labels, rest) = parse_labels(line.get(name_end..).ok_or("cut")?)?;
            let value = rest.strip_prefix(' ').ok_or("no space before value")?;
            let value: f64 = value.parse().map_err(|_| format!("bad value {value:?}"))?;
            // Counters and gauges: the sample name is the family name, and a family's samples
            // follow its TYPE line, grouped.
            if current.as_deref() != Some(name) {
                return Err(format!("sample {name} not under its TYPE line"));
            }
            if !seen.insert((name.to_owned(), format!("{labels:?}"))) {
                return Err(format!("series repeated: {line}"));
            }
            samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
        Ok((samples, types))
    }

    fn rendered(metrics: &Metrics) -> (Vec<Sample>, BTreeMap<String, String>) {
        let mut out = String::new();
        metrics.render(&mut out);
        match parse(&out) {
            Ok(parsed) => parsed,
            Err(e) => panic!("invalid exposition: {e}\n{out}"),
        }
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let found: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.name == name && s.labels == wanted)
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?} in {samples:?}");
        found.first().map_or(f64::NAN, |s| s.value)
    }

    #[test]
    fn close_slots_follow_the_code_list() {
        for (slot, &code) in CLOSE_CODES.iter().enumerate() {
            assert_eq!(close_slot(code), slot, "{code}");
        }
        for code in [0, 999, 1016, 2000, 3000, 4000, 4400, 4402, 4404, u16::MAX] {
            assert_eq!(close_slot(code), CLOSE_OTHER, "{code}");
        }
        assert_eq!(handshake_slot(101), 0);
        assert_eq!(handshake_slot(500), HANDSHAKE_OTHER);
    }

    #[test]
    fn worker_blocks_do_not_share_cache_lines() {
        assert_eq!(std::mem::align_of::<WorkerMetrics>(), 128);
        assert_eq!(std::mem::size_of::<WorkerMetrics>() % 128, 0);
    }

    #[test]
    fn empty_registry_renders_valid_families() {
        let metrics = Metrics::new(0, &[]);
        let (samples, types) = rendered(&metrics);
        let families: Vec<&str> = types.keys().map(String::as_str).collect();
        assert_eq!(
            families,
            [
                "wsgate_auth_failures_total",
                "wsgate_bytes_total",
                "wsgate_closes_total",
                "wsgate_handshakes_total",
                "wsgate_messages_total",
                "wsgate_open_connections",
                "wsgate_revocations_total",
                "wsgate_upstream_dns_failures_total",
                "wsgate_upstream_errors_total",
                "wsgate_upstream_forged_headers_total",
            ]
        );
        assert_eq!(
            types.get("wsgate_open_connections").map(String::as_str),
            Some("gauge")
        );
        assert!(samples.iter().all(|s| s.value == 0.0));
        assert!(!samples.iter().any(|s| s.name == "wsgate_open_connections"));
        assert_eq!(
            value(
                &samples,
                "wsgate_auth_failures_total",
                &[("reason", "other")]
            ),
            0.0
        );
    }

    #[test]
    fn every_fixed_series_is_rendered_once() {
        let metrics = Metrics::new(3, &REASONS);
        let (samples, types) = rendered(&metrics);
        for (name, kind) in &types {
            if name != "wsgate_open_connections" {
                assert_eq!(kind, "counter", "{name}");
                assert!(name.ends_with("_total"), "{name}");
            }
        }
        let count = |name: &str| samples.iter().filter(|s| s.name == name).count();
        assert_eq!(count("wsgate_open_connections"), 3);
        assert_eq!(
            count("wsgate_handshakes_total"),
            HANDSHAKE_STATUSES.len() + 1
        );
        assert_eq!(count("wsgate_closes_total"), CLOSE_CODES.len() + 1);
        assert_eq!(count("wsgate_auth_failures_total"), REASONS.len() + 1);
        assert_eq!(count("wsgate_messages_total"), 2);
        assert_eq!(count("wsgate_bytes_total"), 2);
        assert_eq!(count("wsgate_revocations_total"), 1);
        assert_eq!(count("wsgate_upstream_errors_total"), 1);
        for s in samples
            .iter()
            .filter(|s| s.name == "wsgate_handshakes_total")
        {
            let outcome = s.labels.get("outcome").map(String::as_str);
            let status = s.labels.get("status").map(String::as_str);
            let expected = if status == Some("101") {
                "accepted"
            } else {
                "rejected"
            };
            assert_eq!(outcome, Some(expected), "{s:?}");
        }
    }

    #[test]
    fn counts_add_up_across_workers() {
        let metrics = Metrics::new(3, &REASONS);
        let workers = &metrics.workers;
        for (index, worker) in workers.iter().enumerate() {
            let n = index as u64 + 1; // 1, 2, 3
            for _ in 0..n {
                worker.connection_opened();
                worker.handshake(101);
                worker.handshake(401);
                worker.handshake(500);
                worker.auth_failure("expired");
                worker.auth_failure("not_a_configured_reason");
                worker.close(1000);
                worker.close(4401);
                worker.close(3000);
                worker.message_in(10);
                worker.message_out(100);
                worker.upstream_error();
            }
        }
        if let Some(last) = workers.last() {
            last.connection_closed();
        }
        metrics.revocation();
        metrics.revocation();
        let resolver_count = Arc::new(AtomicU64::new(4));
        let metrics = metrics.with_dns_failures(Arc::clone(&resolver_count));
        resolver_count.fetch_add(1, Ordering::Relaxed);

        let (samples, _) = rendered(&metrics);
        assert_eq!(
            value(&samples, "wsgate_upstream_dns_failures_total", &[]),
            5.0
        );
        let open = |w: &str| value(&samples, "wsgate_open_connections", &[("worker", w)]);
        assert_eq!((open("0"), open("1"), open("2")), (1.0, 2.0, 2.0));
        let hs = |outcome, status| {
            value(
                &samples,
                "wsgate_handshakes_total",
                &[("outcome", outcome), ("status", status)],
            )
        };
        assert_eq!(hs("accepted", "101"), 6.0);
        assert_eq!(hs("rejected", "401"), 6.0);
        assert_eq!(hs("rejected", "other"), 6.0);
        assert_eq!(hs("rejected", "400"), 0.0);
        let auth = |reason| {
            value(
                &samples,
                "wsgate_auth_failures_total",
                &[("reason", reason)],
            )
        };
        assert_eq!(auth("expired"), 6.0);
        assert_eq!(auth("other"), 6.0);
        assert_eq!(auth("revoked"), 0.0);
        let closes = |code| value(&samples, "wsgate_closes_total", &[("code", code)]);
        assert_eq!(
            (closes("1000"), closes("4401"), closes("other")),
            (6.0, 6.0, 6.0)
        );
        assert_eq!(closes("1006"), 0.0);
        let dir = |name, d| value(&samples, name, &[("direction", d)]);
        assert_eq!(dir("wsgate_messages_total", "in"), 6.0);
        assert_eq!(dir("wsgate_messages_total", "out"), 6.0);
        assert_eq!(dir("wsgate_bytes_total", "in"), 60.0);
        assert_eq!(dir("wsgate_bytes_total", "out"), 600.0);
        assert_eq!(value(&samples, "wsgate_revocations_total", &[]), 2.0);
        assert_eq!(value(&samples, "wsgate_upstream_errors_total", &[]), 6.0);

        assert_eq!(metrics.handshake_count(101), 6);
        assert_eq!(metrics.handshake_count(599), 6, "other bucket");
        assert_eq!(metrics.close_count(4401), 6);
        assert_eq!(metrics.auth_failure_count("expired"), 6);
        assert_eq!(metrics.auth_failure_count("whatever"), 6, "other bucket");
        assert_eq!(metrics.total(|w| &w.bytes_in), 60);
    }

    #[test]
    fn reason_labels_are_deduplicated_capped_and_escaped() {
        let many: Vec<&'static str> = (0..MAX_AUTH_REASONS + 5)
            .map(|i| &*Box::leak(format!("reason_{i}").into_boxed_str()))
            .collect();
        let metrics = Metrics::new(1, &many);
        let (samples, _) = rendered(&metrics);
        let reasons = samples
            .iter()
            .filter(|s| s.name == "wsgate_auth_failures_total")
            .count();
        assert_eq!(reasons, MAX_AUTH_REASONS + 1);
        if let Some(worker) = metrics.workers.first() {
            worker.auth_failure(many[MAX_AUTH_REASONS + 1]);
        }
        assert_eq!(metrics.auth_failure_count("other"), 1);

        // Labels are fixed by the caller, but a strange one still renders as valid text.
        let metrics = Metrics::new(1, &["a\"b\\c\nd", "expired", "expired", "other"]);
        if let Some(worker) = metrics.workers.first() {
            worker.auth_failure("a\"b\\c\nd");
        }
        let (samples, _) = rendered(&metrics);
        assert_eq!(
            value(
                &samples,
                "wsgate_auth_failures_total",
                &[("reason", "a\"b\\c\nd")]
            ),
            1.0
        );
        let reasons = samples
            .iter()
            .filter(|s| s.name == "wsgate_auth_failures_total")
            .count();
        assert_eq!(reasons, 3, "duplicate and \"other\" dropped");
    }

    #[test]
    fn parser_rejects_what_it_should() {
        // The test parser itself must catch the mistakes it is there to catch.
        for bad in [
            "wsgate_x 1\n",                                      // no TYPE before the sample
            "# TYPE wsgate_y counter\nwsgate_x 1\n",             // sample under another family
            "# TYPE wsgate_x counter\nwsgate_x{a=\"b} 1\n",      // unterminated label value
            "# TYPE wsgate_x counter\nwsgate_x{a=\"\\q\"} 1\n",  // bad escape
            "# TYPE wsgate_x counter\n9x 1\n",                   // bad name
            "# TYPE wsgate_x counter\nwsgate_x 1",               // no final line feed
            "# TYPE wsgate_x counter\nwsgate_x one\n",           // bad value
            "# TYPE wsgate_x counter\nwsgate_x 1\nwsgate_x 2\n", // repeated series
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn concurrent_workers_and_scrapes() {
        const THREADS: usize = 4;
        const ROUNDS: u64 = 10_000;
        let metrics = Arc::new(Metrics::new(THREADS, &REASONS));
        let mut handles = Vec::new();
        for index in 0..THREADS {
            let worker = metrics.workers.get(index).map(Arc::clone);
            handles.push(std::thread::spawn(move || {
                let Some(worker) = worker else { return };
                for round in 0..ROUNDS {
                    worker.connection_opened();
                    worker.handshake(if round % 2 == 0 { 101 } else { 429 });
                    worker.message_in(3);
                    worker.message_out(5);
                    worker.auth_failure("revoked");
                    worker.close(1001);
                    worker.connection_closed();
                }
            }));
        }
        // Scrape while the workers run: every intermediate rendering is valid.
        let scraper = {
            let metrics = Arc::clone(&metrics);
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let _ = rendered(&metrics);
                }
            })
        };
        for handle in handles {
            assert!(handle.join().is_ok());
        }
        assert!(scraper.join().is_ok());
        let total = THREADS as u64 * ROUNDS;
        assert_eq!(metrics.handshake_count(101), total / 2);
        assert_eq!(metrics.handshake_count(429), total / 2);
        assert_eq!(metrics.total(|w| &w.messages_in), total);
        assert_eq!(metrics.total(|w| &w.bytes_in), 3 * total);
        assert_eq!(metrics.total(|w| &w.bytes_out), 5 * total);
        assert_eq!(metrics.auth_failure_count("revoked"), total);
        assert_eq!(metrics.close_count(1001), total);
        let (samples, _) = rendered(&metrics);
        for index in 0..THREADS {
            let label = index.to_string();
            assert_eq!(
                value(&samples, "wsgate_open_connections", &[("worker", &label)]),
                0.0
            );
        }
    }
}
