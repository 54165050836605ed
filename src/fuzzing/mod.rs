//! Entry points for the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs` are one-liners into
//! these) and for the corpus replay test under `cargo test`. Each feeds one byte slice
//! through a sans-IO component and asserts its invariants, not only "no panic".

mod auth;
mod config;
mod deflate;
mod http;
mod revlog;
mod upstream;
mod ws;

pub use auth::fuzz_jws;
pub use config::fuzz_config;
pub use deflate::fuzz_session_deflate;
pub use http::fuzz_http_request;
pub use revlog::fuzz_revlog;
pub use upstream::fuzz_upstream_response;
pub use ws::{fuzz_frame_header, fuzz_session, virtual_epoch};
