//! RFC 6455 server side, sans-IO: framing, masking, close payloads, message reassembly with
//! streaming UTF-8 validation, the opening-handshake accept key, and the per-connection
//! state machine.

pub mod accept;
pub mod close;
pub mod deflate;
pub mod frame;
pub mod mask;
pub mod message;
pub mod session;
