//! The driver-neutral session layer: everything about a connection's life that both io drivers
//! (`proxy::uring`, `proxy::epoll`) need and that is not a syscall, a completion or a buffer.
//!
//! - [`tls`]: downstream TLS as a [`crate::proxy::io::ConnHandler`] wrapper that moves
//!   ciphertext, so a driver serves https listeners without knowing about TLS.
//! - [`upstream`]: the upstream leg — the reuse rule and the upstream TLS handshake.
//! - [`pool`]: the worker's idle upstream pool with its sweeping (idle expiry, endpoints that
//!   left the routing table) and the liveness-probe rule at checkout.
//! - [`close`]: the flush/linger state machine of a closing downstream connection.
//! - [`drain`]: the drain sequence and its clock.
//!
//! Everything here is pure: no sockets, no clock (time is an argument), so each piece is tested
//! without sockets. The drivers keep the syscalls, the completions/readiness and the buffers.

#![forbid(unsafe_code)]
// Pure room: no clock, sockets or threads outside tests (clippy.toml).
#![cfg_attr(not(test), deny(clippy::disallowed_methods))]

pub mod close;
pub mod drain;
pub mod pool;
pub mod tls;
pub mod upstream;
