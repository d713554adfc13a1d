//! The data plane. [`http1`] is the sans-IO HTTP/1.1 codec every io driver shares: bytes and
//! time in, parsed heads, body events and serialized bytes out. No module under `proxy` other
//! than the io drivers (and the listener binding and worker set that start them) may touch
//! sockets or read the clock. [`tls`] terminates TLS over in-memory buffers (rustls), so the
//! drivers keep moving raw bytes.
//!
//! Around the drivers: [`driver`] is the contract a driver implements and receives, [`listener`]
//! binds the sockets it accepts on, [`stop`] is its link to the supervisor (stop, accept gate,
//! heartbeats), and [`worker`] spawns the drivers on worker threads. The drivers import the
//! first three, never [`worker`] (`tests/architecture.rs` checks it).

pub mod core;
pub mod driver;
pub mod epoll;
pub mod exchange;
pub mod http1;
pub mod io;
pub mod listener;
pub mod session;
pub mod stop;
pub mod tls;
pub mod upstream;
// Submission/completion queue entries point at buffers the kernel reads and writes.
#[allow(unsafe_code)]
pub mod uring;
pub mod worker;
