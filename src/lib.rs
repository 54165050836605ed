//! wsgate: a WebSocket security gateway.
//!
//! A sans-IO core and a thin I/O shell (see ARCHITECTURE.md). The top-level modules form
//! layers, bottom first; code uses only modules of lower layers (`tests/layers.rs` checks
//! it from the imports, with no circle and no file over 800 lines outside its tests):
//!
//! 1. foundation: [`clock`] (the one place that reads time; `Tick`, an instant in 8
//!    bytes), below [`rate`] (the token bucket) and [`metrics`] (counters; label values
//!    never carry token data);
//! 2. wire: [`proto`]: HTTP/1.1 upgrade parsing (`http/`: request, response, fields,
//!    `origin` (RFC 6454 serialized origins), `client/` the upstream client side) and
//!    RFC 6455 (`ws/`: frame, mask, message, close, accept, session, `deflate/` RFC 7692), as pure state
//!    machines; `proto/error.rs` maps each rule to its close code;
//! 3. tokens: [`auth`] (JWS over borrowed bytes: jws, claims, keys, pem, spki (RSA/EC
//!    public keys), jwk (JWK Sets, discovery documents), verify, revocation);
//! 4. sans-IO services: [`config`] (TOML by section: `server`, `tls`, `auth`, `provider`,
//!    `public_key`, `origin`, `limits`, `session`, `admin`, `cluster`, `route`, each with its rules;
//!    key files are checked with `auth`'s parsers; `document` turns text into sections with
//!    line numbers; `units`), [`log`] (one-line logs, query redaction);
//! 5. decisions: [`gate`] (`decide`, cheapest check first; `limits` per address and
//!    subject; `fleet`, what the fleet link shares with the handshake: other gateways'
//!    counts, admission, where workers report; `origin`; `reject`, the one HTTP status
//!    table, which also renders `proto`'s request errors), [`backend`] (echo, upstream
//!    balancing);
//! 6. data plane: [`net`], the only mio / rustls code: `listener`, `worker/` (`mod.rs`
//!    the loop and the shared state, `drive.rs` a connection's turn and token deadlines,
//!    `handshake.rs`, `proxy.rs` the upstream routes), `conn`, `upstream` (the upstream
//!    leg), `plain` (plain-HTTP answers on the data listener), `timer`, `token`, `tls` and
//!    `server` (building a configuration's runtime, starting and draining the workers);
//! 7. control plane: [`control`], one small tokio runtime that drives the data plane and
//!    reaches the workers only through snapshots (`arc-swap`) and commands: `mod.rs`
//!    (start, signals, shutdown, `Workers::broadcast`), `reload` (SIGHUP), `admin/`
//!    (`listener` the admin HTTP listener on hyper, `gateway` its routes' effects on the
//!    gateway, `revlog` the revocation log), `issuers` (SPEC §9: the identity providers'
//!    fetch schedule, publishing verifier snapshots), `fetch` (its HTTP client, hyper
//!    over tokio-rustls), `resolve` (upstream host names, looked up off the workers and
//!    re-resolved as records change, publishing an address snapshot), `cluster/` (SPEC §8, the fleet link on Redis: `link` the
//!    session loop, `load` what a (re)connect reads, `wire` keys and messages, `view` the
//!    other nodes' counts, `status` readiness and metrics) and `fleet` (what the link
//!    reaches in the running gateway), `login/` (the token service of SPEC §11: users
//!    file, Argon2 pool, refresh-token store, its HTTP endpoints);
//! 8. entry points: [`cli`] (serve, demo, init, check, keygen, token, revoke) and
//!    `fuzzing` (hidden).
//!
//! Data flows one way: socket → `net` → `proto::http` → `gate` (+ `auth`) →
//! `proto::ws::session` → `backend` → `proto::ws::session` → `net` → socket.

pub mod auth;
pub mod backend;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
pub mod log;
pub mod metrics;
pub mod net;
pub mod proto;
pub mod rate;
