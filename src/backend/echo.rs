//! The built-in `echo` backend: every message comes back as sent (type and payload).

use crate::proto::ws::message::MessageKind;
use crate::proto::ws::session::write_message;

/// Answers one complete message by appending the same message to `out`.
pub fn on_message(kind: MessageKind, payload: &[u8], out: &mut Vec<u8>) {
    write_message(out, kind, payload);
}
