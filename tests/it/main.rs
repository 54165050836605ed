//! One integration binary: the real `wsgate` binary driven through sockets.

// The harness bounds its waits with the real clock; the product code may not read it.
#![allow(clippy::disallowed_methods)]

mod support;

mod handshake;
mod session;
mod frames;
mod lifecycle;
mod tls;
mod cli;
mod tokens;
