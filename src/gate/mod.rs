//! The handshake decision: route, capacity, limits, Origin, token, scope.

pub mod decide;
pub mod fleet;
pub mod limits;
pub mod origin;
pub mod refresh;
pub mod reject;

#[cfg(test)]
mod cache_tests;
