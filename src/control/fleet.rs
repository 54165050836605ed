//! The gateway's side of the fleet link (SPEC §8): what [`cluster::Local`] reaches in the
//! running gateway, and the link's start with `serve`.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::admin::gateway::{apply_entries, GatewayAdmin};
use super::cluster::{self, Cluster, Settings};
use super::Workers;
use crate::auth::revocation::Revocation;
use crate::clock;
use crate::config::Config;
use crate::net::server::Running;
use crate::net::worker::Shared;

/// The running gateway, as the fleet link sees it.
struct GatewayLocal {
    shared: Arc<Shared>,
    workers: Workers,
    /// Serializes fleet revocations with `POST /revoke` when there is an admin listener.
    admin: Option<Arc<GatewayAdmin>>,
    /// Serializes them when there is none (then nothing else writes the snapshot).
    serial: Mutex<()>,
}

impl cluster::Local for GatewayLocal {
    fn apply_revocations(&self, entries: Vec<(Revocation, u64)>) {
        match &self.admin {
            Some(admin) => {
                admin.apply_fleet(entries);
            }
            None => {
                let _serial = self
                    .serial
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                apply_entries(&self.shared, &self.workers, entries);
            }
        }
    }

    fn known_revocations(&self) -> Vec<(Revocation, u64)> {
        self.shared.revocations.load().entries().collect()
    }

    fn subject_count(&self, sub: &str) -> u32 {
        self.shared.subjects.count(sub)
    }

    fn subject_counts(&self) -> Vec<(Box<str>, u32)> {
        self.shared.subjects.counts()
    }

    fn remote_auth_failures(&self, ip: IpAddr, failures: u32) {
        self.shared
            .ips
            .remote_auth_failures(ip, failures, clock::now());
    }
}

/// Starts the fleet link when the config has `[cluster]` (on the current runtime): the
/// workers' subject table and per-IP table report to it and count with its view, the
/// admin listener shares revocations through it.
pub fn start(
    config: &Config,
    running: &Running,
    workers: Workers,
    admin: Option<Arc<GatewayAdmin>>,
) -> Result<Option<Arc<Cluster>>, String> {
    let Some(cluster_config) = &config.cluster else {
        return Ok(None);
    };
    let port = running.local_addrs.first().map_or(0, |a| a.port());
    let settings = Settings::new(cluster_config, port);
    let share = Arc::clone(running.shared.subjects.fleet());
    running.shared.ips.join_fleet(Arc::clone(&share));
    let local = Arc::new(GatewayLocal {
        shared: Arc::clone(&running.shared),
        workers,
        admin: admin.clone(),
        serial: Mutex::new(()),
    });
    let cluster = Arc::new(Cluster::start(
        &tokio::runtime::Handle::current(),
        settings,
        local,
        share,
    )?);
    if let Some(admin) = admin {
        admin.join_fleet(Arc::clone(&cluster));
    }
    Ok(Some(cluster))
}
