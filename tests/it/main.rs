//! One integration binary: the real `wsgate` binary driven through sockets.

// The harness bounds its waits with the real clock; the product code may not read it.
#![allow(clippy::disallowed_methods)]

mod support;

mod abuse;
mod admin;
mod autobahn_deflate;
mod cli;
mod cluster;
mod corpus;
mod deflate;
mod deflate_proxy;
mod dns;
mod first_run;
mod frames;
mod handshake;
mod harden;
mod lifecycle;
mod login;
mod providers;
mod proxy;
mod proxy_edge;
mod session;
mod tls;
mod tokens;
mod upstream;
mod upstream_tls;
