//! All I/O: listeners, the per-worker mio event loops, TLS and timers.

pub mod admin;
pub mod conn;
pub mod listener;
pub mod plain;
pub mod server;
pub mod timer;
pub mod tls;
pub mod token;
pub mod upstream;
pub mod worker;

// The clock lives in the bottom layer (`crate::clock`); this alias keeps `super::clock`
// working in net/server.rs and net/admin.rs until the control plane moves them (#20).
pub(crate) use crate::clock;
