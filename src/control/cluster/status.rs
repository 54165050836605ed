//! What the fleet link tells `/readyz`, `/metrics` and the handshake (SPEC §8): whether
//! Redis is reachable and loaded, what was received, and how long a revocation took from
//! its publication to its enforcement here. Plain atomics: read from any thread, never a
//! lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use std::sync::Arc;

use crate::config::OnUnavailable;
use crate::gate::fleet::FleetShare;

/// The link's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Started, first connection not yet made.
    Starting = 0,
    /// Connected and subscribed, loading the stored state.
    Loading = 1,
    /// Connected, subscribed and loaded.
    Up = 2,
    /// Redis unreachable (or a command failed); reconnecting with backoff.
    Down = 3,
}

/// What `/readyz` says about the fleet link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Linked and loaded.
    Ready,
    /// Serving with local state (`on_unavailable = "local"`): 200, with this text.
    Degraded(&'static str),
    /// Not ready: 503, with this text.
    NotReady(&'static str),
}

/// Upper bounds of the propagation histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Shared state of the fleet link.
#[derive(Debug)]
pub struct ClusterStatus {
    on_unavailable: OnUnavailable,
    /// Told whether handshakes are admitted at every state change.
    share: Arc<FleetShare>,
    state: AtomicU8,
    /// Whether a first connection attempt has finished (either way).
    tried: AtomicU8,
    received: AtomicU64,
    skipped: AtomicU64,
    queued: AtomicU64,
    reconnects: AtomicU64,
    remote_nodes: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
}

impl ClusterStatus {
    /// A link that has not connected yet; `share` learns whether handshakes are admitted.
    pub fn new(on_unavailable: OnUnavailable, share: Arc<FleetShare>) -> ClusterStatus {
        share.set_admitting(on_unavailable == OnUnavailable::Local);
        ClusterStatus {
            on_unavailable,
            share,
            state: AtomicU8::new(LinkState::Starting as u8),
            tried: AtomicU8::new(0),
            received: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            remote_nodes: AtomicU64::new(0),
            latency_buckets: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_sum_micros: AtomicU64::new(0),
        }
    }

    /// The current state.
    pub fn state(&self) -> LinkState {
        match self.state.load(Ordering::Acquire) {
            0 => LinkState::Starting,
            1 => LinkState::Loading,
            2 => LinkState::Up,
            _ => LinkState::Down,
        }
    }

    pub(super) fn set_state(&self, state: LinkState) {
        if state == LinkState::Up || state == LinkState::Down {
            self.tried.store(1, Ordering::Release);
        }
        self.state.store(state as u8, Ordering::Release);
        self.share.set_admitting(self.admits_handshakes());
    }

    /// Whether Redis is reachable and this node has loaded the fleet's state.
    pub fn up(&self) -> bool {
        self.state() == LinkState::Up
    }

    /// Whether a new handshake may proceed: always with `on_unavailable = "local"`; with
    /// `"refuse"` only while linked (else 503, SPEC §8).
    pub fn admits_handshakes(&self) -> bool {
        self.on_unavailable == OnUnavailable::Local || self.up()
    }

    /// What `/readyz` says. A gateway reports ready only once the stored revocations are
    /// loaded; with `"local"`, a Redis that cannot be reached (after the first attempt)
    /// leaves it serving, degraded.
    pub fn readiness(&self) -> Readiness {
        let tried = self.tried.load(Ordering::Acquire) == 1;
        match (self.state(), self.on_unavailable) {
            (LinkState::Up, _) => Readiness::Ready,
            (LinkState::Starting, _) => Readiness::NotReady("cluster: connecting to redis"),
            (LinkState::Loading, _) if !tried => {
                Readiness::NotReady("cluster: loading revocations from redis")
            }
            (_, OnUnavailable::Local) => Readiness::Degraded(
                "degraded: cluster redis unreachable, serving with local state (local caps, local revocations queued for redis)",
            ),
            (_, OnUnavailable::Refuse) => {
                Readiness::NotReady("cluster: redis unreachable, refusing new handshakes")
            }
        }
    }

    pub(super) fn received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    /// Revocations received from other nodes (published or loaded).
    pub fn received_total(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    pub(super) fn skipped(&self) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// Malformed messages and values skipped.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    pub(super) fn set_queued(&self, queued: usize) {
        self.queued.store(queued as u64, Ordering::Relaxed);
    }

    /// Revocations waiting to be written to Redis.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    pub(super) fn reconnected(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn set_remote_nodes(&self, nodes: usize) {
        self.remote_nodes.store(nodes as u64, Ordering::Relaxed);
    }

    /// Records one publication → enforcement delay, in milliseconds.
    pub(super) fn observe_latency_ms(&self, millis: u64) {
        let seconds = millis as f64 / 1000.0;
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add(millis.saturating_mul(1000), Ordering::Relaxed);
    }

    /// Appends the fleet metrics in Prometheus text format (SPEC §8).
    pub fn render(&self, out: &mut String) {
        let mut gauge = |name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        };
        gauge(
            "wsgate_cluster_up",
            "1 when Redis is reachable and the fleet state is loaded.",
            "gauge",
            u64::from(self.up()),
        );
        gauge(
            "wsgate_cluster_revocations_received_total",
            "Revocations received from other gateways of the fleet.",
            "counter",
            self.received_total(),
        );
        gauge(
            "wsgate_cluster_revocations_queued",
            "Revocations not yet written to Redis (retried).",
            "gauge",
            self.queued(),
        );
        gauge(
            "wsgate_cluster_reconnects_total",
            "Connections to Redis made after the first.",
            "counter",
            self.reconnects.load(Ordering::Relaxed),
        );
        gauge(
            "wsgate_cluster_messages_skipped_total",
            "Malformed fleet messages and stored values, logged and skipped.",
            "counter",
            self.skipped_total(),
        );
        gauge(
            "wsgate_cluster_remote_connections",
            "Connections on the other live gateways, counted against per_subject_connections.",
            "gauge",
            self.share.remote.total(),
        );
        gauge(
            "wsgate_cluster_nodes",
            "Other gateways whose connection counts are counted here.",
            "gauge",
            self.remote_nodes.load(Ordering::Relaxed),
        );
        let name = "wsgate_cluster_revocation_propagation_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from a revocation's publication on another gateway to its enforcement here."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_by_state_and_mode() {
        let local = ClusterStatus::new(OnUnavailable::Local, Arc::default());
        assert!(matches!(local.readiness(), Readiness::NotReady(_)));
        assert!(local.admits_handshakes());
        local.set_state(LinkState::Loading);
        assert!(matches!(local.readiness(), Readiness::NotReady(_)));
        local.set_state(LinkState::Up);
        assert_eq!(local.readiness(), Readiness::Ready);
        local.set_state(LinkState::Down);
        assert!(matches!(local.readiness(), Readiness::Degraded(t) if t.contains("redis")));
        // Reloading after an outage: still serving, still degraded.
        local.set_state(LinkState::Loading);
        assert!(matches!(local.readiness(), Readiness::Degraded(_)));
        assert!(local.admits_handshakes());

        let share = Arc::new(FleetShare::default());
        let refuse = ClusterStatus::new(OnUnavailable::Refuse, Arc::clone(&share));
        assert!(!refuse.admits_handshakes());
        assert!(!share.admits());
        refuse.set_state(LinkState::Up);
        assert!(refuse.admits_handshakes());
        assert!(share.admits());
        refuse.set_state(LinkState::Down);
        assert!(!refuse.admits_handshakes());
        assert!(matches!(refuse.readiness(), Readiness::NotReady(_)));
    }

    #[test]
    fn metrics_text() {
        let status = ClusterStatus::new(OnUnavailable::Local, Arc::default());
        status.set_state(LinkState::Up);
        status.received();
        status.observe_latency_ms(3);
        status.observe_latency_ms(40);
        let mut out = String::new();
        status.render(&mut out);
        assert!(out.contains("\nwsgate_cluster_up 1\n"), "{out}");
        assert!(out.contains("\nwsgate_cluster_revocations_received_total 1\n"));
        let name = "wsgate_cluster_revocation_propagation_seconds";
        assert!(out.contains(&format!("\n{name}_bucket{{le=\"0.0025\"}} 0\n")));
        assert!(out.contains(&format!("\n{name}_bucket{{le=\"0.005\"}} 1\n")));
        assert!(out.contains(&format!("\n{name}_bucket{{le=\"0.05\"}} 2\n")));
        assert!(out.contains(&format!("\n{name}_bucket{{le=\"+Inf\"}} 2\n")));
        assert!(out.contains(&format!("\n{name}_sum 0.043\n")));
        assert!(out.contains(&format!("\n{name}_count 2\n")));
    }
}
