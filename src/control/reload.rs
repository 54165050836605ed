//! SIGHUP (SPEC §6): reload keys, certificates, origin lists and limits as one swap.
//!
//! The configuration is read and built on the control runtime's blocking pool (files, key
//! and certificate parsing block); the resolver then looks up the new upstream host names
//! (`super::resolve`), which never refuses a reload; a config that does not
//! load or build is reported and the old one stays. A good one is published: the per-IP
//! and per-subject budgets in place, a `Command::Reload` to every worker (each closes its
//! connections whose key the reload removed with 4401 "key retired" and moves each
//! connection to the new route table), and a new view for the admin listener.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::admin::gateway::{AdminView, GatewayAdmin};
use super::Workers;
use crate::config::Config;
use crate::gate::limits::IpBudget;
use crate::net::server::build_runtime;
use crate::net::worker::{Command, Runtime, Shared};
use crate::{info, warn};

/// Everything a reload changes.
pub struct Reloader {
    /// The configuration file (None: `serve --demo`, nothing to reload).
    pub path: Option<PathBuf>,
    /// `server.listen` at start: a change only takes effect at the next restart.
    pub listen: Vec<SocketAddr>,
    /// `[cluster]` at start: likewise (the fleet link is not restarted by SIGHUP).
    pub cluster: Option<crate::config::Cluster>,
    /// The budgets the workers share.
    pub shared: Arc<Shared>,
    /// The workers, for the new generation.
    pub workers: Workers,
    /// The admin listener's gateway side, when there is one.
    pub admin: Option<Arc<GatewayAdmin>>,
    /// The identity providers' fetch tasks (SPEC §9).
    pub issuers: Arc<super::issuers::Issuers>,
    /// The login listener's certificate and CORS origins, with `[login]` (SPEC §11).
    pub login: Option<Arc<super::login::http::Live>>,
    /// The upstream host names' resolver: it follows the new routes.
    pub resolver: Arc<super::resolve::Resolver>,
}

impl Reloader {
    /// Reloads the configuration file; a failure is logged and changes nothing.
    pub async fn reload(&self) {
        let Some(path) = self.path.clone() else {
            warn!("SIGHUP: nothing to reload (no config file)");
            return;
        };
        let built = tokio::task::spawn_blocking(move || load(&path).map(|built| (path, built)));
        match built.await {
            Ok(Some((path, (config, rt)))) => {
                // New upstream names are looked up (bounded wait) before the workers
                // dial them; names no route uses any more are forgotten.
                self.resolver
                    .follow(&super::resolve::names_of(&config))
                    .await;
                self.apply(&config, rt);
                info!("reloaded {}", path.display());
            }
            // A failure was logged by `load`.
            Ok(None) => {}
            Err(_) => warn!("reload failed, keeping the running configuration: internal error"),
        }
    }

    /// Publishes a configuration that loaded and built.
    pub fn apply(&self, config: &Config, rt: Arc<Runtime>) {
        if config.server.listen != self.listen {
            warn!("reload: server.listen changes take effect at the next restart");
        }
        if config.cluster != self.cluster {
            warn!("reload: [cluster] changes take effect at the next restart");
        }
        let l = &config.limits;
        if l.ipv6_prefix != self.shared.ips.ipv6_prefix() {
            warn!("reload: limits.ipv6_prefix changes take effect at the next restart");
        }
        self.shared.ips.set_budget(IpBudget {
            connections: l.per_ip_connections,
            handshakes_per_sec: l.per_ip_handshakes,
            auth_failures_per_sec: l.per_ip_auth_failures,
            ipv6_prefix: l.ipv6_prefix,
        });
        self.shared
            .subjects
            .limit
            .store(l.per_subject_connections as usize, Ordering::Relaxed);
        self.shared
            .max_connections
            .store(config.server.max_connections, Ordering::Relaxed);
        // The providers' last good sets carry over into the new generation first.
        self.issuers.adopt(&rt, &config.auth.providers);
        self.shared
            .deflate_budget
            .set_limit(config.compression.memory);
        // The login listener takes the new certificate and origins too.
        if let Some(login) = &self.login {
            if !login.reload(config, rt.tls.clone()) {
                warn!("reload: turning [tls] on or off for the login listener takes effect at the next restart");
            }
        }
        self.workers.broadcast(|| Command::Reload(Arc::clone(&rt)));
        if let (Some(admin), Some(cfg)) = (&self.admin, &config.admin) {
            admin.publish(AdminView {
                rt,
                token_scope: cfg.token_scope.clone(),
            });
        }
    }
}

/// Reads and builds the configuration at `path`; logs why not and returns None on failure.
fn load(path: &Path) -> Option<(Config, Arc<Runtime>)> {
    let config = match crate::config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            for line in errors.to_string().lines() {
                warn!("reload failed, keeping the running configuration: {line}");
            }
            return None;
        }
    };
    match build_runtime(&config) {
        Ok(rt) => Some((config, Arc::new(rt))),
        Err(e) => {
            warn!("reload failed, keeping the running configuration: {e}");
            None
        }
    }
}
