//! The control plane (ARCHITECTURE.md, "Two planes"): everything that changes what the
//! workers know, on a tokio runtime of its own, never on a worker's event loop.

pub mod login;
