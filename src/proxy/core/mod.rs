//! The proxy core: one downstream connection's HTTP/1.1 proxy logic over the sans-IO codec —
//! route lookup, Arc's own responses, upstream choice, request/response streaming with bounded
//! buffers, keep-alive, pipelining, upgrades, limits and timeouts. It implements
//! [`ConnHandler`](crate::proxy::io::ConnHandler), so both io drivers run exactly this logic;
//! it makes no syscalls and takes time as an argument.
//!
//! The files are split by the state they own, each with the logic that drives it:
//! - [`active`] — what a connection *is*: identity (peer, start, limits, requests served) and
//!   life (closing, draining, parking, actions for the driver); `Active` composes the parts;
//! - [`current`] — the current exchange: what the head said (`RequestFacts`), its stage, its
//!   policy pipeline through the protocol-neutral seam ([`crate::proxy::exchange`]), local
//!   answers, the access-log record;
//! - [`upstream`] — the upstream leg: pool key, queued request bytes and replay copy, response
//!   decoding, deadlines, failed attempts;
//! - [`buffers`] — the downstream buffers and request decoder; [`parked`] — the parked form
//!   an idle keep-alive connection shrinks to;
//! - [`dispatch`] — the one event dispatch: `Conn` implements the driver contract and turns
//!   every callback into one event on the active (or parked) state;
//! - [`cx`] — the worker context lent to every call.

mod active;
mod buffers;
mod current;
mod cx;
mod dispatch;
mod parked;
pub mod snapshot;
mod upstream;

pub use cx::WorkerCx;
pub use dispatch::Conn;
pub use parked::{GRACE_AFTER, IDLE_GRACE};
pub use snapshot::{ConnLimits, SharedSnapshot, Snapshot, UpstreamSpec, View, Views};

#[cfg(test)]
mod tests;
