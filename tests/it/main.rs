//! One integration binary: the real `wsgate` binary driven through sockets.

mod support;

mod handshake;
