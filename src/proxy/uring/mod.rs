//! The io_uring io driver: one ring per worker thread, running [`ConnHandler`]s.
//!
//! [`run`] owns a worker's ring, its listeners (already bound, non-blocking), its upstream
//! pool and its timers, and turns completions into handler callbacks per the driver contract in
//! [`crate::proxy::io`]:
//! - multishot accept per listener; over `max_connections` ([`ConnLimit`]) the connection is
//!   accepted and closed at once and counted;
//! - multishot receive into a provided buffer ring (an idle connection holds no buffer), the
//!   buffer given back right after the handler took the bytes; a side the handler does not
//!   want to read has its receive cancelled, and bytes that were already in flight are kept
//!   for the handler until it asks again;
//! - sends copy the handler's `*_out()` bytes into a per-connection send buffer taken from a
//!   worker-wide free list: the handler's own buffer may grow (and move) while the send is in
//!   flight, so the kernel never points into it; the handler keeps the bytes until the send
//!   completes and `*_written(n)` is reported;
//! - upstream connects with `IORING_OP_CONNECT` linked to a `LINK_TIMEOUT`;
//! - idle pooled upstream connections keep a `recv(MSG_PEEK)` armed: any completion (data,
//!   EOF, error) marks them stale and they are closed; checkout also peeks;
//! - one ring-wide wait timeout to the earliest deadline (connection timers, pool expiry);
//! - every operation's `user_data` carries (slot, generation, kind); a socket slot is freed
//!   only after all its operations completed, so late completions never touch reused memory;
//! - a [`StopSignal`] (flag + eventfd polled in the ring) stops accepting, lets connections
//!   finish for `drain_timeout`, cancels what is left and returns.
//!
//! All `unsafe` of the driver lives in this module.

mod bufring;
mod driver;
mod probe;
mod slab;
mod timers;

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::proxy::io::{ConnHandler, ConnLimit};

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
    /// Receive buffers in the provided buffer ring (power of two).
    pub recv_buffers: u16,
    /// Size of each receive buffer.
    pub recv_buffer_size: u32,
    /// Largest single send (bytes copied from the handler per send).
    pub send_buffer_size: usize,
    /// How long a closing connection may take to flush its last bytes.
    pub flush_timeout: Duration,
    /// After stop, how long open connections may take to finish before they are closed.
    pub drain_timeout: Duration,
    /// After a flushed close: how long to keep reading and discarding what the client still
    /// sends (so the response is not lost to a reset) before closing the socket.
    pub lingering_close: Duration,
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions {
            entries: 4096,
            sqpoll: false,
            sqpoll_idle: Duration::from_millis(1000),
            recv_buffers: 512,
            recv_buffer_size: 16 * 1024,
            send_buffer_size: 64 * 1024,
            flush_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            lingering_close: Duration::from_secs(2),
        }
    }
}

/// A listening socket handed to the driver (bound, listening, non-blocking).
#[derive(Debug)]
pub struct UringListener {
    pub socket: TcpListener,
    /// Index of the listener in the configuration's `listeners[]` (goes into `ConnInfo`).
    pub index: usize,
}

/// Asks drivers to stop: a flag plus an eventfd each worker's ring polls, so every worker
/// wakes up at once. Shared by all workers.
#[derive(Debug)]
pub struct StopSignal {
    flag: AtomicBool,
    efd: OwnedFd,
}

impl StopSignal {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the returned fd is checked and then owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let efd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(StopSignal {
            flag: AtomicBool::new(false),
            efd,
        })
    }

    /// Sets the flag and wakes every ring polling the eventfd.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::Release);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd. A failure (counter
        // saturated) still leaves the eventfd readable, which is all the rings wait for.
        let _ = unsafe {
            libc::write(
                self.efd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    pub fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.efd.as_raw_fd()
    }
}

/// Counters of one worker's driver, written only by that worker (relaxed), read at scrape.
#[derive(Debug, Default)]
pub struct DriverStats {
    /// Downstream connections accepted and handed to a handler.
    pub accepted: AtomicU64,
    /// Downstream connections accepted and closed at once because of `max_connections`
    /// (or because the worker is stopping).
    pub refused: AtomicU64,
    /// Downstream connections finished.
    pub closed: AtomicU64,
    /// New upstream connections started.
    pub upstream_connects: AtomicU64,
    /// Upstream connects that failed or timed out.
    pub upstream_connect_errors: AtomicU64,
    /// Upstream connections taken from the pool instead of connecting.
    pub pool_reused: AtomicU64,
    /// Idle pooled connections dropped because the peer closed them or sent unexpected bytes.
    pub pool_stale: AtomicU64,
}

impl DriverStats {
    /// Adds one to a counter (only the owning worker writes, so relaxed suffices).
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Why [`run`] failed.
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

/// Runs one worker's io_uring event loop until `stop` is signalled and connections drained.
///
/// `listeners` are already bound (SO_REUSEPORT per worker) and non-blocking; the driver owns
/// and closes them. `cx` is lent to every handler callback.
pub fn run<H: ConnHandler>(
    listeners: Vec<UringListener>,
    limit: &ConnLimit,
    stop: &StopSignal,
    cx: &mut H::Cx,
    opts: &RingOptions,
    stats: &DriverStats,
) -> Result<(), UringError> {
    let support = probe()?;
    let mut d = driver::Driver::<H>::new(listeners, limit, stop, cx, opts, stats, support)?;
    d.run()
}
