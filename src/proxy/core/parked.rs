//! The parked form: what an idle keep-alive connection keeps of its [`Active`] state (no
//! buffers, no decoder, no upstream), and the moves between the two forms.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::RouteMetricId;
use crate::proxy::http1::RequestDecoder;
use crate::proxy::io::ConnInfo;

use super::current::RequestFacts;
use super::snapshot::ConnLimits;
use super::{Active, SPARE_BUF_MAX, Stage, UpState};

/// What an idle keep-alive connection keeps of its [`Active`] state: no buffers, no decoder,
/// no upstream — only what the next exchange needs from the previous ones.
pub(super) struct Parked {
    pub(super) info: ConnInfo,
    /// Shared by the worker's parked connections with the same limits (see
    /// [`WorkerCx::shared_limits`]).
    pub(super) limits: Arc<ConnLimits>,
    pub(super) started: Instant,
    pub(super) idle_since: Since,
    pub(super) req_started: Since,
    pub(super) drain_idle_by: Option<Since>,
    pub(super) requests: u64,
    pub(super) route: Option<RouteMetricId>,
    pub(super) status: u16,
    /// What the last request's head said (read again by nothing but kept exact).
    pub(super) facts: RequestFacts,
    pub(super) draining: bool,
}

impl Parked {
    pub(super) fn idle_deadline(&self) -> Instant {
        let idle = self.idle_since.at(self.started) + self.limits.idle_timeout;
        match self.drain_idle_by {
            Some(t) => idle.min(t.at(self.started)),
            None => idle,
        }
    }
}

/// A time no earlier than a connection's start, kept by a parked connection as nanoseconds
/// since that start: 8 bytes instead of an `Instant`'s 16, exact to the nanosecond, and a
/// niche so that `Option<Since>` is 8 bytes too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Since(std::num::NonZeroU64);

impl Since {
    /// `t` relative to `base` (a `t` before `base` counts as `base`).
    pub(super) fn of(t: Instant, base: Instant) -> Since {
        let nanos = u64::try_from(t.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX);
        Since(std::num::NonZeroU64::MIN.saturating_add(nanos))
    }

    /// The time again, given the same `base`.
    pub(super) fn at(self, base: Instant) -> Instant {
        let nanos = self.0.get() - 1;
        base.checked_add(Duration::from_nanos(nanos))
            .unwrap_or(base)
    }
}

/// A placeholder `ConnInfo` left behind in a spare state (allocates nothing).
pub(super) fn vacant_info() -> ConnInfo {
    let any = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    ConnInfo {
        peer: any,
        local: any,
        listener: 0,
        tls: false,
        sni: None,
    }
}

impl Active {
    /// Whether the connection sits between requests with nothing buffered, nothing to write
    /// and nothing attached: its state can be parked.
    pub(super) fn parkable(&self) -> bool {
        !self.life.closed
            && self.cur.stage == Stage::Idle
            && self.cur.held.is_none()
            && self.cur.keep_alive
            && !self.down.eof
            && !self.cur.req_done
            && !self.cur.resp_started
            && self.down.head_started.is_none()
            && self.down.inbuf.is_empty()
            && self.down.out.is_empty()
            && self.down.lent == 0
            && self.up.out.is_empty()
            && self.up.input.is_empty()
            && self.up.state == UpState::None
            && self.up.active.is_none()
            && self.up.deadline.is_none()
            && self.up.resp.is_none()
            && self.life.actions.is_empty()
            && self.down.req.is_idle(&[])
    }

    /// Moves the per-connection part out, leaving a spare state for another connection.
    pub(super) fn park(&mut self, limits: Arc<ConnLimits>) -> Parked {
        let shrink = |b: &mut Vec<u8>| {
            b.clear();
            if b.capacity() > SPARE_BUF_MAX {
                *b = Vec::new();
            }
        };
        shrink(&mut self.up.replay);
        shrink(&mut self.down.inbuf);
        shrink(&mut self.down.out);
        shrink(&mut self.up.out);
        shrink(&mut self.up.input);
        self.down.pos = 0;
        self.up.pos = 0;
        // The access-log record stays here with the spare state: it holds nothing between
        // requests, and an idle connection would otherwise keep its ~700 bytes.
        Parked {
            info: std::mem::replace(&mut self.id.info, vacant_info()),
            limits,
            started: self.id.started,
            idle_since: Since::of(self.down.idle_since, self.id.started),
            req_started: Since::of(self.cur.started, self.id.started),
            drain_idle_by: self
                .life
                .drain_idle_by
                .map(|t| Since::of(t, self.id.started)),
            requests: self.id.requests,
            route: self.cur.route,
            status: self.cur.status,
            facts: self.cur.facts,
            draining: self.life.draining,
        }
    }

    /// Takes a parked connection back into this (spare) state: the exact state it had when it
    /// parked, except for storage capacities.
    pub(super) fn unpark(&mut self, p: Parked) {
        if p.limits.codec != self.id.limits.codec || !self.down.req.is_idle(&[]) {
            self.down.req = RequestDecoder::new(p.limits.codec, false);
        }
        self.cur.log.rebind(p.info.peer);
        self.id.info = p.info;
        self.id.started = p.started;
        self.id.limits = *p.limits;
        self.down.idle_since = p.idle_since.at(p.started);
        self.down.head_started = None;
        self.cur.stage = Stage::Idle;
        self.cur.req_done = false;
        self.cur.keep_alive = true;
        self.cur.client_close = false;
        self.cur.facts = p.facts;
        self.id.requests = p.requests;
        self.cur.started = p.req_started.at(p.started);
        self.cur.status = p.status;
        self.cur.route = p.route;
        self.cur.resp_started = false;
        self.cur.close_delimited = false;
        self.up.state = UpState::None;
        self.up.reused = false;
        self.up.replayable = false;
        self.up.replays = 0;
        self.up.deadline = None;
        self.life.closed = false;
        self.life.close_counted = false;
        self.down.eof = false;
        self.life.draining = p.draining;
        self.life.drain_idle_by = p.drain_idle_by.map(|t| t.at(p.started));
    }
}

#[cfg(test)]
mod since_tests {
    use super::Since;
    use std::time::{Duration, Instant};

    #[test]
    fn since_round_trips_to_the_nanosecond_in_eight_bytes() {
        assert_eq!(std::mem::size_of::<Option<Since>>(), 8);
        let base = Instant::now();
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_millis(1234),
            Duration::from_secs(86_400 * 400) + Duration::from_nanos(7),
        ] {
            assert_eq!(Since::of(base + d, base).at(base), base + d, "{d:?}");
        }
        // A time before the base counts as the base.
        let later = base + Duration::from_secs(5);
        assert_eq!(Since::of(base, later).at(later), later);
    }
}
