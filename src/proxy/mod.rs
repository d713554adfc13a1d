//! The data plane. [`http1`] is the sans-IO HTTP/1.1 codec every io driver shares: bytes and
//! time in, parsed heads, body events and serialized bytes out. No module under `proxy` other
//! than the io drivers may touch sockets or read the clock. [`tls`] terminates TLS over in-memory
//! buffers (rustls), so the drivers keep moving raw bytes.

pub mod core;
pub mod epoll;
pub mod http1;
pub mod io;
pub mod session;
pub mod tls;
pub mod upstream;
pub mod uring;
pub mod worker;
