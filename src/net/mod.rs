//! All I/O: listeners, the per-worker mio event loops, TLS and timers.

pub mod conn;
pub mod listener;
pub mod plain;
pub mod principal;
pub mod server;
pub mod timer;
pub mod tls;
pub mod token;
pub mod upstream;
pub mod worker;
