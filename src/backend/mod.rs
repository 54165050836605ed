//! Backends: what serves a connection once it is open.

pub mod echo;
pub mod upstream;
