//! One event dispatch: [`Conn`] (active or parked) implements the driver contract
//! ([`ConnHandler`]); each driver callback becomes one event on the [`Active`] state, followed
//! by the settling every callback ends with (close accounting, parking).

use std::time::Instant;

use crate::metrics::{ErrorReason, PoolResult, RefuseReason};
use crate::proxy::http1::{self, DirectResponse};
use crate::proxy::io::{Action, ConnHandler, ConnInfo, Interest, PoolKey, UpstreamError};

use super::current::RequestFacts;
use super::cx::WorkerCx;
use super::parked::{Parked, Since};
use super::snapshot::ConnLimits;
use super::{Active, GRACE_AFTER, IDLE_GRACE, IN_SLACK, OUT_HIGH_WATER, Stage, UpState};

impl Active {
    pub(super) fn do_on_downstream_data(&mut self, cx: &mut WorkerCx, data: &[u8], now: Instant) {
        if self.life.closed {
            return;
        }
        if self.cur.stage == Stage::Idle && self.down.head_started.is_none() {
            self.down.head_started = Some(now);
        }
        self.down.inbuf.extend_from_slice(data);
        self.process_downstream(cx, now);
    }

    pub(super) fn do_on_downstream_eof(&mut self, cx: &mut WorkerCx, now: Instant) {
        if self.life.closed {
            return;
        }
        self.down.eof = true;
        match self.cur.stage {
            Stage::Idle => self.close(true),
            Stage::Tunnel => self.close(true),
            // A waiting request is decided first; an incomplete one then closes (see
            // `resume_pipeline`).
            Stage::Waiting => {}
            Stage::Local | Stage::Proxy => {
                if !self.cur.req_done {
                    // The request was cut short.
                    cx.metrics.error(ErrorReason::BadRequest);
                    self.close(false);
                }
                // Otherwise the response is finished first, then the connection closes.
            }
        }
        let _ = now;
    }

    pub(super) fn do_on_downstream_error(&mut self, _cx: &mut WorkerCx, _now: Instant) {
        self.close(false);
    }

    pub(super) fn do_on_upstream_connected(
        &mut self,
        cx: &mut WorkerCx,
        reused: bool,
        now: Instant,
    ) {
        if self.up.state != UpState::Connecting {
            return;
        }
        self.up.state = UpState::Connected;
        self.up.reused = reused;
        if let (Some(g), Some(key)) = (cx.metrics.pool.as_mut(), self.up.key.as_ref()) {
            let cell = g.cell(&key.upstream, key.endpoint);
            cell.add_active(1);
            if let Some(old) = self.up.active.replace(cell) {
                old.add_active(-1);
            }
        }
        cx.metrics.upstream_pool(if reused {
            PoolResult::Hit
        } else {
            PoolResult::Miss
        });
        self.arm_upstream(now);
    }

    pub(super) fn do_on_upstream_data(&mut self, cx: &mut WorkerCx, data: &[u8], now: Instant) {
        if self.life.closed || self.up.state != UpState::Connected {
            return;
        }
        if self.cur.stage == Stage::Proxy {
            self.up.deadline = Some(now + self.read_timeout());
        }
        self.take_upstream(cx, data, now);
    }

    pub(super) fn do_on_upstream_eof(&mut self, cx: &mut WorkerCx, now: Instant) {
        if self.life.closed || self.up.state != UpState::Connected {
            return;
        }
        match self.cur.stage {
            Stage::Tunnel => self.close(true),
            Stage::Proxy => {
                let finished = self.up.resp.as_mut().map(|r| r.finish_eof());
                match finished {
                    Some(Ok(())) => {
                        self.process_upstream(cx, now);
                        if self.up.state != UpState::None {
                            // The upstream cannot send more: anything still expected is lost.
                            self.upstream_failed(cx, UpstreamError::Io, now);
                        }
                    }
                    _ => self.upstream_failed(cx, UpstreamError::Io, now),
                }
            }
            Stage::Idle | Stage::Local | Stage::Waiting => self.release_upstream(false),
        }
    }

    pub(super) fn do_on_upstream_error(
        &mut self,
        cx: &mut WorkerCx,
        err: UpstreamError,
        now: Instant,
    ) {
        if self.life.closed || self.up.state == UpState::None {
            return;
        }
        self.upstream_failed(cx, err, now);
    }

    pub(super) fn do_on_timer(&mut self, cx: &mut WorkerCx, now: Instant) {
        if self.life.closed {
            return;
        }
        if let Some(d) = self.up.deadline
            && now >= d
        {
            self.up.deadline = None;
            if self.cur.stage == Stage::Proxy && !self.cur.resp_started {
                self.up.resp = None;
                self.respond_error(cx, 504, ErrorReason::UpstreamTimeout, now);
            } else {
                cx.metrics.error(ErrorReason::UpstreamTimeout);
                self.close(true);
            }
            return;
        }
        if self.cur.stage == Stage::Waiting {
            if self.cur.wait_until.is_some_and(|t| now >= t) {
                self.resume_pipeline(cx, now);
            }
            return;
        }
        if self.cur.stage == Stage::Idle {
            match self.down.head_started {
                Some(t) if now >= t + self.id.limits.header_read_timeout => {
                    cx.metrics.error(ErrorReason::HeaderReadTimeout);
                    self.cur.keep_alive = false;
                    self.cur.status = 408;
                    let body = b"408 Request Timeout\n";
                    http1::write_direct_response(
                        &mut self.down.out,
                        &DirectResponse {
                            status: 408,
                            content_type: "text/plain; charset=utf-8",
                            body,
                            close: true,
                            head_request: false,
                            extra_headers: &[],
                        },
                    );
                    self.close(true);
                }
                None if now >= self.idle_deadline() => self.close(true),
                _ => {}
            }
        }
    }

    pub(super) fn do_downstream_written(&mut self, cx: &mut WorkerCx, n: usize, now: Instant) {
        self.cur.log.wrote(n);
        let lent = n.min(self.down.lent);
        self.down.lent -= lent;
        let n = n - lent;
        self.down.pos = (self.down.pos + n).min(self.down.out.len());
        if self.down.pos == self.down.out.len() {
            self.down.out.clear();
            self.down.pos = 0;
        } else if self.down.pos > OUT_HIGH_WATER {
            self.down.out.drain(..self.down.pos);
            self.down.pos = 0;
        }
        if self.life.closed {
            return;
        }
        // A response in progress may have stopped at the high-water mark with all its bytes
        // already consumed (its end is decoded from no further input), so it resumes here
        // even when nothing is buffered from the upstream.
        let resume = match self.cur.stage {
            Stage::Proxy => self.up.resp.is_some() || !self.up.input.is_empty(),
            Stage::Tunnel => !self.up.input.is_empty(),
            _ => false,
        };
        if resume {
            self.process_upstream(cx, now);
        }
    }

    pub(super) fn do_upstream_written(&mut self, cx: &mut WorkerCx, n: usize, now: Instant) {
        self.up.pos = (self.up.pos + n).min(self.up.out.len());
        if self.up.pos == self.up.out.len() {
            self.up.out.clear();
            self.up.pos = 0;
        } else if self.up.pos > OUT_HIGH_WATER {
            self.up.out.drain(..self.up.pos);
            self.up.pos = 0;
        }
        if self.life.closed {
            return;
        }
        if self.cur.stage == Stage::Proxy && !self.cur.resp_started {
            self.arm_upstream(now);
        }
        if !self.down.inbuf.is_empty() {
            self.process_downstream(cx, now);
        }
    }

    pub(super) fn on_downstream_data(&mut self, cx: &mut WorkerCx, data: &[u8], now: Instant) {
        self.do_on_downstream_data(cx, data, now);
        self.settle(cx);
    }

    pub(super) fn on_downstream_eof(&mut self, cx: &mut WorkerCx, now: Instant) {
        self.do_on_downstream_eof(cx, now);
        self.settle(cx);
    }

    pub(super) fn on_downstream_error(&mut self, cx: &mut WorkerCx, now: Instant) {
        self.do_on_downstream_error(cx, now);
        self.settle(cx);
    }

    pub(super) fn on_upstream_connected(&mut self, cx: &mut WorkerCx, reused: bool, now: Instant) {
        self.do_on_upstream_connected(cx, reused, now);
        self.settle(cx);
    }

    pub(super) fn on_upstream_data(&mut self, cx: &mut WorkerCx, data: &[u8], now: Instant) {
        self.do_on_upstream_data(cx, data, now);
        self.settle(cx);
    }

    pub(super) fn on_upstream_eof(&mut self, cx: &mut WorkerCx, now: Instant) {
        self.do_on_upstream_eof(cx, now);
        self.settle(cx);
    }

    pub(super) fn on_upstream_error(
        &mut self,
        cx: &mut WorkerCx,
        err: UpstreamError,
        now: Instant,
    ) {
        self.do_on_upstream_error(cx, err, now);
        self.settle(cx);
    }

    pub(super) fn on_timer(&mut self, cx: &mut WorkerCx, now: Instant) {
        self.do_on_timer(cx, now);
        self.settle(cx);
    }

    pub(super) fn downstream_written(&mut self, cx: &mut WorkerCx, n: usize, now: Instant) {
        self.do_downstream_written(cx, n, now);
        self.settle(cx);
    }

    pub(super) fn upstream_written(&mut self, cx: &mut WorkerCx, n: usize, now: Instant) {
        self.do_upstream_written(cx, n, now);
        self.settle(cx);
    }

    pub(super) fn poll_action(&mut self) -> Option<Action> {
        let mut action = self.life.actions.pop_front()?;
        if let Action::CloseDownstream { linger, .. } = &mut action {
            *linger = !self.client_done();
        }
        Some(action)
    }

    pub(super) fn interest(&self) -> Interest {
        if self.life.closed {
            return Interest::default();
        }
        let down_room = self.pending_down() < OUT_HIGH_WATER;
        Interest {
            downstream_read: !self.down.eof
                && down_room
                && self.pending_up() < OUT_HIGH_WATER
                && self.down.inbuf.len() < self.id.limits.codec.max_head + IN_SLACK,
            upstream_read: self.up.state == UpState::Connected
                && down_room
                && self.up.input.len() < OUT_HIGH_WATER,
        }
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        if self.life.closed {
            return None;
        }
        let down = match self.cur.stage {
            Stage::Idle => Some(match (self.down.head_started, self.life.park_at) {
                (Some(t), _) => t + self.id.limits.header_read_timeout,
                (None, Some(park)) => self.idle_deadline().min(park),
                (None, None) => self.idle_deadline(),
            }),
            Stage::Waiting => self.cur.wait_until,
            _ => None,
        };
        match (down, self.up.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.life.closed
    }

    pub(super) fn on_drain(&mut self, cx: &mut WorkerCx, now: Instant) {
        self.start_drain(now);
        self.settle(cx);
    }
}

/// The parked form is deliberately the large variant: it is what an idle connection keeps
/// inline, while the much larger active state lives behind a pointer.
#[allow(clippy::large_enum_variant)]
enum State {
    Active(Box<Active>),
    Parked(Parked),
    /// Only while switching between the two.
    Vacant,
}

/// One downstream connection. Once it has waited [`IDLE_GRACE`] for its next request with
/// nothing buffered (a connection that has served fewer than [`GRACE_AFTER`] requests does not
/// wait) it is *parked*: its buffers, decoders and upstream state go back to the worker (a
/// bounded list of spare states, reused by the next connection that receives bytes), so an
/// idle keep-alive connection costs only a few hundred bytes, while one kept busy by its
/// client never pays for parking and unparking between its requests. A new connection starts
/// parked.
pub struct Conn {
    state: State,
}

impl Conn {
    /// The active state, taking the connection out of its parked form first.
    fn active(&mut self, cx: &mut WorkerCx, now: Instant) -> &mut Active {
        if let State::Parked(_) = self.state
            && let State::Parked(p) = std::mem::replace(&mut self.state, State::Vacant)
        {
            cx.metrics.connection_unparked();
            let mut a = match cx.take_spare() {
                Some(a) => a,
                None => Box::new(Active::blank(*p.limits, now)),
            };
            a.unpark(p);
            a.life.park_at = Some(now);
            self.state = State::Active(a);
        }
        if let State::Vacant = self.state {
            // Not reachable (only ever seen inside the swap above); a fresh, closed-looking
            // state keeps this total.
            self.state = State::Active(Box::new(Active::blank(ConnLimits::default(), now)));
        }
        match &mut self.state {
            State::Active(a) => a,
            State::Parked(_) | State::Vacant => unreachable!("made active above"),
        }
    }

    /// Parks the connection once it has been idle with nothing buffered for [`IDLE_GRACE`]
    /// (at once when it has served fewer than [`GRACE_AFTER`] requests, or when it was parked
    /// before this callback and nothing came of it); until then its deadline includes the park
    /// time, so the driver's timer callback parks it.
    fn settle_idle(&mut self, cx: &mut WorkerCx, now: Instant) {
        let State::Active(a) = &mut self.state else {
            return;
        };
        if !a.parkable() {
            a.life.park_at = None;
            return;
        }
        let at = match a.life.park_at {
            Some(t) => t,
            None if a.id.requests < GRACE_AFTER => now,
            None => *a.life.park_at.insert(now + IDLE_GRACE),
        };
        if now < at {
            return;
        }
        let limits = cx.shared_limits(&a.id.limits);
        let p = a.park(limits);
        if let State::Active(a) = std::mem::replace(&mut self.state, State::Parked(p)) {
            cx.give_spare(a);
        }
        cx.metrics.connection_parked();
    }

    /// Whether the connection is parked (idle, holding no buffers).
    pub fn is_parked(&self) -> bool {
        matches!(self.state, State::Parked(_))
    }

    fn with(
        &mut self,
        cx: &mut WorkerCx,
        now: Instant,
        f: impl FnOnce(&mut Active, &mut WorkerCx),
    ) {
        let a = self.active(cx, now);
        f(a, cx);
        self.settle_idle(cx, now);
    }
}

impl ConnHandler for Conn {
    type Cx = WorkerCx;

    fn new(cx: &mut WorkerCx, info: ConnInfo, now: Instant) -> Self {
        if cx.draining {
            let mut conn = Conn {
                state: State::Active(Box::new(Active::create(cx, info, now))),
            };
            conn.settle_idle(cx, now);
            return conn;
        }
        // Born parked: the state that holds buffers is taken when the first bytes arrive.
        let limits = cx.views.latest().snapshot.limits;
        let limits = cx.shared_limits(&limits);
        cx.metrics.connection_opened();
        cx.metrics.connection_parked();
        Conn {
            state: State::Parked(Parked {
                info,
                limits,
                started: now,
                idle_since: Since::of(now, now),
                req_started: Since::of(now, now),
                drain_idle_by: None,
                requests: 0,
                route: None,
                status: 0,
                facts: RequestFacts::NONE,
                draining: false,
            }),
        }
    }

    fn on_downstream_data(&mut self, cx: &mut WorkerCx, data: &[u8], now: Instant) {
        self.with(cx, now, |a, cx| a.on_downstream_data(cx, data, now));
    }

    fn on_downstream_eof(&mut self, cx: &mut WorkerCx, now: Instant) {
        self.with(cx, now, |a, cx| a.on_downstream_eof(cx, now));
    }

    fn on_downstream_error(&mut self, cx: &mut WorkerCx, now: Instant) {
        self.with(cx, now, |a, cx| a.on_downstream_error(cx, now));
    }

    fn on_upstream_connected(&mut self, cx: &mut WorkerCx, reused: bool, now: Instant) {
        self.with(cx, now, |a, cx| a.on_upstream_connected(cx, reused, now));
    }

    fn on_upstream_data(&mut self, cx: &mut WorkerCx, data: &[u8], now: Instant) {
        self.with(cx, now, |a, cx| a.on_upstream_data(cx, data, now));
    }

    fn on_upstream_eof(&mut self, cx: &mut WorkerCx, now: Instant) {
        self.with(cx, now, |a, cx| a.on_upstream_eof(cx, now));
    }

    fn on_upstream_error(&mut self, cx: &mut WorkerCx, err: UpstreamError, now: Instant) {
        self.with(cx, now, |a, cx| a.on_upstream_error(cx, err, now));
    }

    fn on_timer(&mut self, cx: &mut WorkerCx, now: Instant) {
        if let State::Parked(p) = &self.state
            && now < p.idle_deadline()
        {
            return;
        }
        self.with(cx, now, |a, cx| a.on_timer(cx, now));
    }

    fn downstream_out(&self) -> &[u8] {
        match &self.state {
            State::Active(a) => a.downstream_out(),
            State::Parked(_) | State::Vacant => &[],
        }
    }

    fn lend_downstream_out(&mut self, buf: &mut Vec<u8>) -> bool {
        match &mut self.state {
            State::Active(a) => a.lend_downstream_out(buf),
            State::Parked(_) | State::Vacant => false,
        }
    }

    fn downstream_written(&mut self, cx: &mut WorkerCx, n: usize, now: Instant) {
        if n == 0 && !matches!(self.state, State::Active(_)) {
            // A settle point for a parked connection: it is already idle.
            return;
        }
        self.with(cx, now, |a, cx| a.downstream_written(cx, n, now));
    }

    fn upstream_out(&self) -> &[u8] {
        match &self.state {
            State::Active(a) => a.upstream_out(),
            State::Parked(_) | State::Vacant => &[],
        }
    }

    fn upstream_written(&mut self, cx: &mut WorkerCx, n: usize, now: Instant) {
        self.with(cx, now, |a, cx| a.upstream_written(cx, n, now));
    }

    fn poll_action(&mut self) -> Option<Action> {
        match &mut self.state {
            State::Active(a) => a.poll_action(),
            State::Parked(_) | State::Vacant => None,
        }
    }

    fn interest(&self) -> Interest {
        match &self.state {
            State::Active(a) => a.interest(),
            State::Parked(_) => Interest {
                downstream_read: true,
                upstream_read: false,
            },
            State::Vacant => Interest::default(),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Active(a) => a.deadline(),
            State::Parked(p) => Some(p.idle_deadline()),
            State::Vacant => None,
        }
    }

    fn is_closed(&self) -> bool {
        match &self.state {
            State::Active(a) => a.is_closed(),
            State::Parked(_) => false,
            State::Vacant => true,
        }
    }

    fn on_refused(cx: &mut WorkerCx) {
        cx.metrics.connection_refused(RefuseReason::MaxConnections);
    }

    fn endpoints_epoch(cx: &mut WorkerCx) -> u64 {
        cx.views.shared().load().table.version()
    }

    fn keep_pooled(cx: &mut WorkerCx, key: &PoolKey) -> bool {
        cx.endpoint_current(key)
    }

    fn pool_gauges(cx: &mut WorkerCx) -> Option<crate::metrics::PoolGauges> {
        cx.metrics.pool.as_ref().map(|g| g.sibling())
    }

    fn begin_drain(cx: &mut WorkerCx) {
        cx.draining = true;
    }

    fn on_drain(&mut self, cx: &mut WorkerCx, now: Instant) {
        self.with(cx, now, |a, cx| a.on_drain(cx, now));
    }
}
