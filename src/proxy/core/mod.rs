//! The proxy core: one downstream connection's HTTP/1.1 proxy logic over the sans-IO codec —
//! route lookup, Arc's own responses, upstream choice, request/response streaming with bounded
//! buffers, keep-alive, pipelining, upgrades, limits and timeouts. It implements
//! [`ConnHandler`](crate::proxy::io::ConnHandler), so both io drivers run exactly this logic;
//! it makes no syscalls and takes time as an argument.

#![forbid(unsafe_code)]
// Pure room: no clock, sockets or threads outside tests (clippy.toml).
#![cfg_attr(not(test), deny(clippy::disallowed_methods))]

mod conn;
pub mod snapshot;

pub use conn::{Conn, GRACE_AFTER, IDLE_GRACE, WorkerCx};
pub use snapshot::{ConnLimits, SharedSnapshot, Snapshot, UpstreamSpec, View, Views};

#[cfg(test)]
mod tests;
