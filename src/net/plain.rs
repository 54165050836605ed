//! A hook for plain HTTP requests on a data-plane listener. Only `serve --demo` sets one
//! (its page at `GET /`, SPEC §2); every configured gateway answers such requests as
//! failed WebSocket handshakes (SPEC §4).

use std::net::IpAddr;

use crate::proto::http::request::RequestHead;

/// Answers requests that are not WebSocket upgrades.
pub trait PlainResponder: Send + Sync {
    /// The complete HTTP/1.1 response (with `Connection: close`) for this request, or
    /// `None` to handle it as a WebSocket handshake. Runs on a worker's event loop: it
    /// must not block.
    fn respond(&self, head: &RequestHead<'_, '_>, peer: IpAddr) -> Option<Vec<u8>>;
}
