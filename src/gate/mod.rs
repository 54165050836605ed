//! The handshake decision: route, capacity, limits, Origin, token, scope.

pub mod decide;
pub mod limits;
pub mod origin;
pub mod refresh;
pub mod reject;
