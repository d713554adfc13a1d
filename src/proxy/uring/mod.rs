//! The io_uring io driver: one ring per worker thread, running [`ConnHandler`]s.
//!
//! [`run`] owns a worker's ring, its listeners (already bound, non-blocking), its upstream
//! pool and its timers, and turns completions into handler callbacks per the driver contract in
//! [`crate::proxy::io`]:
//! - multishot accept per listener; over `max_connections` ([`crate::proxy::io::ConnLimit`]) the connection is
//!   accepted and closed at once and counted;
//! - multishot receive into a provided buffer ring (an idle connection holds no buffer), the
//!   buffer given back right after the handler took the bytes; downstream sockets use a group
//!   of 16 KiB buffers, upstream sockets a group of 64 KiB ones (a large response arrives in
//!   few completions); a side the handler does not want to read keeps its receive armed
//!   (the peer usually sends nothing meanwhile), and bytes that do arrive are kept for the
//!   handler until it asks again and cancel the receive then; a receive that ran out of
//!   buffers (ENOBUFS) waits for the turn to give buffers back and is armed again a group's
//!   worth of sockets at a time, oldest first;
//! - sends copy the handler's `*_out()` bytes into a per-connection send buffer taken from a
//!   worker-wide free list: the handler's own buffer may grow (and move) while the send is in
//!   flight, so the kernel never points into it; the handler keeps the bytes until the send
//!   completes and `*_written(n)` is reported; large downstream output is not copied but
//!   swapped out of the handler (`ConnHandler::lend_downstream_out`) and sent from there;
//! - upstream connects with `IORING_OP_CONNECT` linked to a `LINK_TIMEOUT`;
//! - idle pooled upstream connections keep a `recv(MSG_PEEK)` armed: any completion (data,
//!   EOF, error) marks them stale and they are closed; checkout also peeks;
//! - one ring-wide wait timeout to the earliest deadline (connection timers, pool expiry);
//! - every operation's `user_data` carries (slot, generation, kind); a socket slot is freed
//!   only after all its operations completed, so late completions never touch reused memory;
//! - the worker's [`crate::proxy::stop::StopSignal`] (flag + eventfd polled in the ring)
//!   stops accepting, lets connections finish for the stop grace (`StopSignal::grace`, else
//!   `Tuning::stop_grace`, read when the drain starts), cancels what is left and returns;
//!   while `StopSignal::accepting` is false (an upgraded process before "go") no accept is
//!   armed, and the accepts are armed when it turns true;
//! - https listeners (`ListenerSpec::tls`) wrap each handler in the session TLS layer
//!   ([`crate::proxy::session::tls`]):
//!   the handshake runs before `ConnHandler::new` (bounded by `Tuning::tls_handshake_timeout`),
//!   the driver moves ciphertext only, a flushed close ends with `close_notify`, a failed
//!   session with its alert.
//!
//! All `unsafe` of the driver lives in this module.

mod bufring;
mod driver;
mod probe;
mod slab;
mod timers;

use std::io;
use std::time::Duration;

use crate::proxy::driver::{DriverError, DriverKind, DriverParams, Tuning};
use crate::proxy::io::ConnHandler;

pub use probe::{Support, UringUnavailable, probe};

/// Ring and buffer settings of one worker.
#[derive(Debug, Clone)]
pub struct RingOptions {
    /// Submission queue entries (`io_uring.uring_entries`); the completion queue is twice this.
    pub entries: u32,
    /// Kernel-side submission polling (`io_uring.sqpoll`).
    pub sqpoll: bool,
    /// How long the SQPOLL thread spins before sleeping.
    pub sqpoll_idle: Duration,
    /// Both receive groups are consumed incrementally (`IOU_PBUF_RING_INC`): small receives
    /// share a buffer.
    pub incremental: bool,
    /// Receive buffers in the provided buffer ring (power of two).
    pub recv_buffers: u16,
    /// Size of each receive buffer.
    pub recv_buffer_size: u32,
    /// Receive buffers of upstream sockets, a separate group (power of two).
    pub upstream_recv_buffers: u16,
    /// Size of each upstream receive buffer: large, so a response body arrives in few
    /// completions and is forwarded in few sends.
    pub upstream_recv_buffer_size: u32,
    /// Largest single send (bytes copied from the handler per send).
    pub send_buffer_size: usize,
    /// How long a closing connection may take to flush its last bytes.
    pub flush_timeout: Duration,
    /// After stop, how long open connections may take to finish before they are closed.
    pub drain_timeout: Duration,
    /// After a flushed close: how long to keep reading and discarding what the client still
    /// sends (so the response is not lost to a reset) before closing the socket.
    pub lingering_close: Duration,
    /// Most time a downstream TLS handshake may take.
    pub tls_handshake_timeout: Duration,
    /// Slots of the fixed file table (capped by the open-file limit; 0: none). Sockets whose
    /// slot index is beyond it use their fds.
    pub fixed_files: u32,
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions {
            entries: 4096,
            sqpoll: false,
            sqpoll_idle: Duration::from_millis(1000),
            incremental: false,
            recv_buffers: 512,
            recv_buffer_size: 16 * 1024,
            upstream_recv_buffers: 8,
            upstream_recv_buffer_size: 64 * 1024,
            send_buffer_size: 64 * 1024,
            flush_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            lingering_close: Duration::from_secs(2),
            tls_handshake_timeout: Duration::from_secs(10),
            fixed_files: crate::proxy::driver::DEFAULT_FIXED_FILES,
        }
    }
}

/// Why the ring could not be set up or driven (mapped to [`DriverError`] by [`run`]).
#[derive(Debug, thiserror::Error)]
pub enum UringError {
    #[error(transparent)]
    Unavailable(#[from] UringUnavailable),
    #[error("cannot set up the io_uring ring ({entries} entries): {source}")]
    Setup { entries: u32, source: io::Error },
    #[error("cannot register the receive buffer ring: {0}")]
    BufRing(io::Error),
    #[error("io_uring_enter failed: {0}")]
    Enter(io::Error),
}

impl From<UringError> for DriverError {
    fn from(e: UringError) -> Self {
        let driver = DriverKind::Uring;
        match e {
            UringError::Unavailable(u) => DriverError::Unsupported {
                driver,
                reason: u.to_string(),
            },
            UringError::Setup { source, .. } => DriverError::Setup {
                driver,
                what: "the io_uring ring",
                source,
            },
            UringError::BufRing(source) => DriverError::Setup {
                driver,
                what: "the provided receive buffer ring",
                source,
            },
            UringError::Enter(source) => DriverError::Wait { driver, source },
        }
    }
}

/// Total memory of one worker's provided downstream receive buffers that
/// [`RingOptions::from_tuning`] aims at: the buffer count follows from the buffer size.
/// Without incremental consumption every receive takes a whole buffer (so more buffers are
/// needed) but touches only its first pages; with it receives fill the buffers in turn, so all
/// of this memory becomes resident.
const RECV_BUFFER_BUDGET: usize = 1024 * 1024;
const RECV_BUFFER_BUDGET_INCREMENTAL: usize = 256 * 1024;
/// Upstream receive buffer memory: a separate group of large buffers, so a response body arrives
/// in few completions. Consumed incrementally they hold many small responses at once
/// (4 x 64 KiB takes a batch of 200 responses of 1 KiB); their total also bounds how many body
/// bytes one turn of the loop takes in, which keeps those bytes in cache until they are sent:
/// with 8 x 64 KiB consumed incrementally, or 64 whole buffers, 64 KiB responses cost 10 %
/// more CPU per request. Without incremental consumption every receive takes a whole
/// buffer, and one that finds none ends with ENOBUFS and is armed again.
const UPSTREAM_RECV_BUFFER_BUDGET_INCREMENTAL: usize = 256 * 1024;
const UPSTREAM_RECV_BUFFER_BUDGET: usize = 512 * 1024;

impl RingOptions {
    /// The ring settings for a worker's [`Tuning`]; `incremental` when the kernel consumes
    /// provided buffers incrementally ([`Support::incremental_buffers`]).
    pub fn from_tuning(t: &Tuning, incremental: bool) -> Self {
        let size = t.read_buffer.clamp(4096, 16 * 1024);
        let budget = if incremental {
            RECV_BUFFER_BUDGET_INCREMENTAL
        } else {
            RECV_BUFFER_BUDGET
        };
        let count = (budget / size).clamp(16, 4096).next_power_of_two();
        let up_size = t.read_buffer.clamp(16 * 1024, 64 * 1024);
        let up_budget = if incremental {
            UPSTREAM_RECV_BUFFER_BUDGET_INCREMENTAL
        } else {
            UPSTREAM_RECV_BUFFER_BUDGET
        };
        let up_count = (up_budget / up_size).clamp(4, 4096).next_power_of_two();
        let d = RingOptions::default();
        RingOptions {
            entries: t.uring_entries,
            sqpoll: t.sqpoll,
            incremental,
            recv_buffers: u16::try_from(count).unwrap_or(4096),
            recv_buffer_size: u32::try_from(size).unwrap_or(d.recv_buffer_size),
            upstream_recv_buffers: u16::try_from(up_count).unwrap_or(d.upstream_recv_buffers),
            upstream_recv_buffer_size: u32::try_from(up_size)
                .unwrap_or(d.upstream_recv_buffer_size),
            send_buffer_size: size.max(d.send_buffer_size),
            flush_timeout: t.close_flush_timeout,
            drain_timeout: t.stop_grace,
            lingering_close: t.lingering_close,
            tls_handshake_timeout: t.tls_handshake_timeout,
            fixed_files: t.uring_fixed_files,
            ..d
        }
    }
}

/// Runs one worker's io_uring event loop until `params.stop` fires and connections drained
/// (the [`crate::proxy::driver::DriverEntry`] of the io_uring driver).
///
/// The listeners are already bound (SO_REUSEPORT per worker) and non-blocking; the driver owns
/// and closes them. `params.cx` is lent to every handler callback.
pub fn run<H: ConnHandler>(params: DriverParams<H::Cx>) -> Result<(), DriverError> {
    let DriverParams {
        worker: _,
        listeners,
        conn_limit,
        stop,
        mut cx,
        tuning,
        stats,
    } = params;
    let support = probe().map_err(UringError::from)?;
    let opts = RingOptions::from_tuning(&tuning, support.incremental_buffers);
    let mut d = driver::Driver::<H>::new(
        listeners,
        &conn_limit,
        &stop,
        &mut cx,
        &opts,
        &stats,
        support,
    )?;
    Ok(d.run()?)
}
