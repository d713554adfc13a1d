//! Upstream connection management that is independent of sockets: the per-worker keep-alive
//! pool ([`pool::Pool`]), generic over the driver's connection handle.

pub mod pool;
