//! Sans-IO wire formats: the HTTP/1.1 upgrade and RFC 6455 framing.

pub mod error;
pub mod http;
pub mod ws;
