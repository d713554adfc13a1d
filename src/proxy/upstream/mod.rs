//! Upstream connection management that is independent of sockets: the per-worker keep-alive
//! pool ([`pool::Pool`]), generic over the driver's connection handle.

#![forbid(unsafe_code)]

pub mod pool;
