//! The driver-neutral session layer: everything about a connection's life that both io drivers
//! (`proxy::uring`, `proxy::epoll`) need and that is not a syscall, a completion or a buffer.
//!
//! - [`tls`]: downstream TLS as a [`crate::proxy::io::ConnHandler`] wrapper that moves
//!   ciphertext, so a driver serves https listeners without knowing about TLS.
//!
//! Everything here is pure: no sockets, no clock (time is an argument), so each piece is tested
//! without sockets. The drivers keep the syscalls, the completions/readiness and the buffers.

pub mod tls;
