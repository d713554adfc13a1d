//! The proxy core: one downstream connection's HTTP/1.1 proxy logic over the sans-IO codec —
//! route lookup, Arc's own responses, upstream choice, request/response streaming with bounded
//! buffers, keep-alive, pipelining, upgrades, limits and timeouts. It implements
//! [`ConnHandler`](crate::proxy::io::ConnHandler), so both io drivers run exactly this logic;
//! it makes no syscalls and takes time as an argument.
//!
//! The files are split by the state they own, each with the logic that drives it:
//! - this file — `Active`, which composes the parts below, and the limits they share;
//! - [`identity`] — what a connection *is*: identity (peer, start, limits, requests served) and
//!   life (closing, draining, parking, actions for the driver);
//! - [`current`] — the current exchange: what the head said (`RequestFacts`), its stage, its
//!   policy pipeline through the protocol-neutral seam ([`crate::proxy::exchange`]), local
//!   answers, the access-log record;
//! - [`upstream`] — the upstream leg: pool key, queued request bytes and replay copy, response
//!   decoding, deadlines, failed attempts;
//! - [`buffers`] — the downstream buffers and request decoder; [`parked`] — the parked form
//!   an idle keep-alive connection shrinks to;
//! - [`dispatch`] — the one event dispatch: `Conn` implements the driver contract and turns
//!   every callback into one event on the active (or parked) state;
//! - [`cx`] — the worker context lent to every call.

#![forbid(unsafe_code)]
// Pure room: no clock, sockets or threads outside tests (clippy.toml).
#![cfg_attr(not(test), deny(clippy::disallowed_methods))]

mod buffers;
mod current;
mod cx;
mod dispatch;
pub mod fuzzing;
mod identity;
mod parked;
pub mod snapshot;
mod upstream;

pub use cx::WorkerCx;
pub use dispatch::Conn;
pub use snapshot::{ConnLimits, SharedSnapshot, Snapshot, UpstreamSpec, View, Views};

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use buffers::Downstream;
use current::Current;
use identity::{Identity, Life};
use upstream::UpLeg;

/// During drain, an idle keep-alive connection closes once it has been quiet this long. A
/// client that is actively using its connection sends its next request within this time and
/// gets it answered with `Connection: close` instead of having its connection closed under a
/// request in flight; one that has been quiet longer closes at once. A fresh connection gets
/// the same time for its first request.
const DRAIN_IDLE_QUIET: Duration = Duration::from_secs(1);

/// Output buffered per side before the other side stops being read (back-pressure bound).
const OUT_HIGH_WATER: usize = 64 * 1024;

/// Downstream input buffered beyond the head limit before reading pauses (pipelined requests).
const IN_SLACK: usize = 16 * 1024;

/// Smallest pending downstream output lent to the driver instead of copied.
const LEND_MIN: usize = 16 * 1024;

/// A request is replayed on a fresh connection (after a pooled one failed before answering)
/// only while everything sent upstream for it fits in this many bytes.
const REPLAY_LIMIT: usize = 64 * 1024;

/// Most idle-connection states a worker keeps for reuse; beyond this they are freed.
const SPARE_MAX: usize = 32;

/// A buffer larger than this is freed rather than kept with a spare state (a large body
/// grew it; the next exchange most likely needs far less).
const SPARE_BUF_MAX: usize = 128 * 1024;

/// How long a keep-alive connection that has been reused (it has served [`GRACE_AFTER`]
/// requests) stays idle with its active state before it parks. Under load the next request
/// follows a response within a client round trip (well under a millisecond on a local network),
/// so a busy connection never parks and pays no park/unpark per request; a connection that is
/// really idle gives its state back this soon, a delay no one notices in memory use. What the
/// grace holds is bounded by the request rate: only connections answered within the last 50 ms
/// keep their state (about 5 KiB each plus buffers).
pub const IDLE_GRACE: Duration = Duration::from_millis(50);

/// Requests a connection must have served before it idles in [`IDLE_GRACE`]; until then it
/// parks as soon as it is idle. A connection that sent one request may well send no other (a
/// probe, a client holding it open): a burst of those would otherwise keep a state each for
/// the grace, and the memory they took stays with the process after they park. A second
/// request shows the client reuses its connection.
pub const GRACE_AFTER: u64 = 2;

/// Where the current exchange stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Waiting for a request head.
    Idle,
    /// Arc answered itself; the rest of the request body (if any) is read and dropped.
    Local,
    /// A request policy asked to wait (`Active::wait_until`); the head is held and the body
    /// is not read on until the pipeline decides.
    Waiting,
    /// Proxying to an upstream.
    Proxy,
    /// A 101 turned the connection into a byte tunnel.
    Tunnel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UpState {
    None,
    Connecting,
    Connected,
}

/// The full state of a downstream connection with an exchange under way (or about to start).
/// An idle keep-alive connection gives it back to its worker ([`super::Conn`] parks, after
/// [`IDLE_GRACE`] once it has been reused) and keeps only what [`Parked`] holds.
struct Active {
    id: Identity,
    life: Life,
    down: Downstream,
    cur: Current,
    up: UpLeg,
}

impl Active {
    /// A fresh state with no connection in it yet.
    fn blank(limits: ConnLimits, now: Instant) -> Self {
        Active {
            id: Identity {
                info: parked::vacant_info(),
                started: now,
                limits,
                requests: 0,
            },
            life: Life {
                actions: VecDeque::with_capacity(4),
                closed: false,
                close_counted: false,
                draining: false,
                drain_idle_by: None,
                park_at: None,
            },
            down: Downstream::new(limits, now),
            cur: Current::new(now),
            up: UpLeg::new(now),
        }
    }
}

#[cfg(test)]
mod tests;
