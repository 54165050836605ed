//! A fake [`AdminBackend`] for the route table's and the listener's tests.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{AdminBackend, AuthFailure, RevokeFailure};
use crate::metrics::Metrics;

pub const ADMIN_TOKEN: &[u8] = b"admin.token.sig";
pub const USER_TOKEN: &[u8] = b"user.token.sig";

/// A backend whose answers are fixed by the token and the body; it records revocations.
#[derive(Default)]
pub struct Fake {
    pub not_ready: AtomicBool,
    pub panic_on_metrics: AtomicBool,
    pub revoke_calls: AtomicUsize,
    pub bodies: Mutex<Vec<Vec<u8>>>,
}

impl AdminBackend for Fake {
    fn ready(&self) -> bool {
        !self.not_ready.load(Ordering::Relaxed)
    }

    fn metrics_text(&self) -> String {
        if self.panic_on_metrics.load(Ordering::Relaxed) {
            panic!("metrics backend failure (expected by the test)");
        }
        let metrics = Metrics::new(2, &["expired"]);
        if let Some(worker) = metrics.workers.first() {
            worker.handshake(101);
        }
        let mut text = String::new();
        metrics.render(&mut text);
        text
    }

    fn authorize(&self, bearer: Option<&[u8]>) -> Result<(), AuthFailure> {
        match bearer {
            None => Err(AuthFailure::Unauthorized("missing token")),
            Some(ADMIN_TOKEN) => Ok(()),
            Some(USER_TOKEN) => Err(AuthFailure::Forbidden),
            Some(_) => Err(AuthFailure::Unauthorized("bad \"signature\"\\ é")),
        }
    }

    fn revoke(&self, body: &[u8]) -> Result<usize, RevokeFailure> {
        self.revoke_calls.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut bodies) = self.bodies.lock() {
            bodies.push(body.to_vec());
        }
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| RevokeFailure::BadRequest(format!("body is not JSON: {e}")))?;
        match value.get("jti").and_then(serde_json::Value::as_str) {
            Some("disk-full") => Err(RevokeFailure::Unavailable(
                "revocation log not writable".to_owned(),
            )),
            Some(_) => Ok(2),
            None => Err(RevokeFailure::BadRequest("needs jti or sub".to_owned())),
        }
    }
}
