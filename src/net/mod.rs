//! All I/O: listeners, the per-worker mio event loops, TLS, timers and the clock.

pub mod clock;
pub mod conn;
pub mod listener;
pub mod server;
pub mod timer;
pub mod tls;
pub mod token;
pub mod upstream;
pub mod worker;
