//! Sans-IO HTTP/1.1 for the WebSocket upgrade: reading and validating the request head,
//! writing the 101 and plain-text error answers.
//!
//! Call order for one connection: append received bytes to a buffer and call
//! [`request::HeadReader::poll`] until it returns the head length; then
//! [`request::parse_head`] on those bytes, [`request::validate_upgrade`] on the result, and
//! either [`response::write_switching_protocols`] or `gate::reject::Reject::from(HttpError).write(..)`.

pub mod client;
pub mod fields;
pub mod origin;
pub mod request;
pub mod response;

pub use request::{
    parse_head, validate_upgrade, HeadReader, HttpError, RequestHead, Upgrade, MAX_HEADERS,
};
