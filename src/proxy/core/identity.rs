//! What a connection *is*: its identity (who connected where, since when, under which limits,
//! how many requests it served) and its life (closing, draining, parking, the actions queued for
//! the driver), and the [`Active`] state that composes them with the other parts — the current
//! exchange ([`super::current`]), the downstream buffers ([`super::buffers`]) and the upstream
//! leg ([`super::upstream`]). Each part lives in its own file with the logic that owns it.

use std::collections::VecDeque;
use std::time::Instant;

use crate::logging::RequestLog;
use crate::proxy::io::{Action, ConnInfo};

use super::cx::WorkerCx;
use super::snapshot::ConnLimits;
use super::{Active, DRAIN_IDLE_QUIET, Stage};

/// Who the connection is: fixed at accept (the limits follow the snapshot of each request).
pub(super) struct Identity {
    pub(super) info: ConnInfo,
    pub(super) started: Instant,
    pub(super) limits: ConnLimits,
    /// Requests answered so far.
    pub(super) requests: u64,
}

/// Where the connection stands in its life, and what it asked its driver to do.
pub(super) struct Life {
    pub(super) actions: VecDeque<Action>,
    pub(super) closed: bool,
    pub(super) close_counted: bool,
    /// The process drains: the response under way (or the next one) says `Connection: close`
    /// and the connection ends after it.
    pub(super) draining: bool,
    /// During drain, when an idle connection that never sent a request gives up.
    pub(super) drain_idle_by: Option<Instant>,
    /// When this connection, idle and parkable since the end of a callback, parks (see
    /// [`super::IDLE_GRACE`]); `None` while it is not parkable. Set when it first settles parkable,
    /// cleared when it stops being so; a connection just taken out of its parked form gets
    /// the time it was taken out, so that it parks again at once when nothing came of it.
    pub(super) park_at: Option<Instant>,
}

impl Active {
    pub(super) fn create(cx: &mut WorkerCx, info: ConnInfo, now: Instant) -> Self {
        let limits = cx.views.latest().snapshot.limits;
        cx.metrics.connection_opened();
        let mut conn = Active::blank(limits, now);
        conn.cur.log = RequestLog::new(info.peer, now);
        conn.id.info = info;
        if cx.draining {
            conn.start_drain(now);
        }
        conn
    }

    /// Counts the close once, at the end of the callback that closed the connection.
    pub(super) fn settle(&mut self, cx: &mut WorkerCx) {
        if self.life.closed && !self.life.close_counted {
            self.life.close_counted = true;
            cx.metrics.connection_closed();
        }
    }

    pub(super) fn close(&mut self, flush: bool) {
        if self.life.closed {
            return;
        }
        self.release_upstream(false);
        // `linger` is settled when the driver takes the action (`poll_action`), once the
        // callback has consumed the input it was decoding.
        self.life.actions.push_back(Action::CloseDownstream {
            flush,
            linger: true,
        });
        self.life.closed = true;
        self.down.head_started = None;
    }

    /// Whether the client can send nothing more: its request asked for the close, was read to
    /// its end, and nothing followed it. Closing then needs no lingering read.
    pub(super) fn client_done(&self) -> bool {
        self.cur.client_close
            && self.cur.req_done
            && self.down.inbuf.is_empty()
            && !matches!(self.cur.stage, Stage::Tunnel | Stage::Idle)
    }

    /// Whether the response being started must end the connection.
    pub(super) fn must_close_after(&self, now: Instant) -> bool {
        !self.cur.keep_alive
            || self.life.draining
            || self.down.eof
            || self
                .id
                .limits
                .max_requests_per_connection
                .is_some_and(|m| self.id.requests + 1 >= m)
            || self
                .id
                .limits
                .max_connection_age
                .is_some_and(|age| now.saturating_duration_since(self.id.started) >= age)
    }

    /// When an idle connection (no request bytes buffered) closes.
    pub(super) fn idle_deadline(&self) -> Instant {
        let idle = self.down.idle_since + self.id.limits.idle_timeout;
        match self.life.drain_idle_by {
            Some(t) => idle.min(t),
            None => idle,
        }
    }

    /// Drain reached this connection: an idle keep-alive connection closes (with a FIN, so the
    /// client retries elsewhere) once it has been quiet for [`DRAIN_IDLE_QUIET`] — at once when
    /// it already was; a request arriving before that is answered with `Connection: close`. A
    /// busy connection ends after the response under way, which carries `Connection: close`
    /// when its head is not written yet. A tunnel keeps going until the driver's deadline.
    pub(super) fn start_drain(&mut self, now: Instant) {
        if self.life.closed || self.life.draining {
            return;
        }
        self.life.draining = true;
        if self.cur.stage == Stage::Idle && self.down.inbuf.is_empty() {
            let quiet_from = if self.id.requests > 0 {
                self.down.idle_since
            } else {
                now
            };
            let by = quiet_from + DRAIN_IDLE_QUIET;
            if now >= by {
                self.close(true);
            } else {
                self.life.drain_idle_by = Some(by);
            }
        }
    }
}
