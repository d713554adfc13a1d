//! The data plane. [`http1`] is the sans-IO HTTP/1.1 codec every io driver shares: bytes and
//! time in, parsed heads, body events and serialized bytes out. No module under `proxy` other
//! than the io drivers may touch sockets or read the clock.

pub mod http1;
pub mod io;
pub mod upstream;
pub mod uring;
