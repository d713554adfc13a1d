//! The data plane. [`http1`] is the sans-IO HTTP/1.1 codec every io driver shares: bytes and
//! time in, parsed heads, body events and serialized bytes out. No module under `proxy` other
//! than the io drivers may touch sockets or read the clock. [`tls`] terminates TLS over in-memory
//! buffers (rustls), so the drivers keep moving raw bytes.

pub mod core;
pub mod driver;
pub mod epoll;
pub mod exchange;
pub mod http1;
pub mod io;
pub mod listener;
pub mod stop;
pub mod tls;
pub mod upstream;
// Submission/completion queue entries point at buffers the kernel reads and writes.
#[allow(unsafe_code)]
pub mod uring;
pub mod worker;
