//! wsgate: a WebSocket security gateway.
//!
//! A sans-IO core and a thin I/O shell (see ARCHITECTURE.md):
//!
//! - [`proto`]: HTTP/1.1 upgrade parsing and RFC 6455 framing, as pure state machines;
//! - [`auth`]: JWS (HMAC, Ed25519) verification over borrowed bytes;
//! - [`gate`]: the handshake decision, cheapest check first, and the one status table;
//! - [`config`]: TOML configuration with units, validated with key paths;
//! - [`net`]: the data plane, the only mio / rustls code: acceptor, per-worker event loops,
//!   timers;
//! - [`control`]: the control plane on one small tokio runtime: signals, SIGHUP reload, the
//!   admin listener (hyper); it reaches the workers only through snapshots and commands;
//! - [`backend`]: what serves an open connection (the built-in echo);
//! - [`cli`]: the command-line subcommands.
//!
//! Data flows one way: socket → `net` → `proto::http` → `gate` (+ `auth`) →
//! `proto::ws::session` → `backend` → `proto::ws::session` → `net` → socket.

pub mod auth;
pub mod backend;
pub mod cli;
pub mod config;
pub mod control;
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
pub mod log;
pub mod metrics;
pub mod net;
pub mod proto;
