//! The current exchange: the request under way on the connection — what its head said
//! ([`RequestFacts`]), where it stands ([`Stage`]), its policy pipeline, its status and access-log
//! record — and the logic that reads requests, decides them through the exchange seam
//! ([`crate::proxy::exchange`]) and answers locally.

use std::time::Instant;

use crate::logging::RequestLog;
use crate::metrics::{ErrorReason, RouteMetricId};
use crate::proxy::exchange::{
    self, Client, Decision, ExchangeState, LocalResponse, Location, Request, RouteView,
};
use crate::proxy::http1::{
    self, ConnectionHeader, DirectResponse, ErrorKind, Http1Error, Method, RequestEvent,
    RequestHead, Version,
};
use crate::routing::Lookup;

use super::cx::WorkerCx;
use super::{Active, DRAIN_IDLE_QUIET, OUT_HIGH_WATER, Stage};

/// What a request head said that the rest of the exchange needs (one `Copy` value, kept whole
/// when the connection parks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RequestFacts {
    pub(super) method: Method,
    /// HTTP/1.0: keep-alive must be announced.
    pub(super) http10: bool,
    pub(super) head_request: bool,
    pub(super) expect_continue: bool,
    pub(super) upgrade: bool,
}

impl RequestFacts {
    /// Before any request.
    pub(super) const NONE: RequestFacts = RequestFacts {
        method: Method::Get,
        http10: false,
        head_request: false,
        expect_continue: false,
        upgrade: false,
    };

    /// The facts of `head`.
    pub(super) fn of(head: &RequestHead) -> RequestFacts {
        let method = head.method();
        RequestFacts {
            method,
            http10: head.version() == Version::Http10,
            head_request: method == Method::Head,
            expect_continue: head.expects_continue(),
            upgrade: head.upgrade_requested(),
        }
    }
}

/// The exchange under way (or the last one, between requests).
pub(super) struct Current {
    pub(super) stage: Stage,
    pub(super) req_done: bool,
    pub(super) keep_alive: bool,
    /// The request under way asked to close the connection (`Connection: close`, or HTTP/1.0
    /// without keep-alive): the client sends nothing after it.
    pub(super) client_close: bool,
    pub(super) facts: RequestFacts,
    /// When the request's head was complete.
    pub(super) started: Instant,
    pub(super) status: u16,
    pub(super) route: Option<RouteMetricId>,
    pub(super) resp_started: bool,
    pub(super) close_delimited: bool,
    /// Access-log fields of the current request.
    pub(super) log: RequestLog,
    /// Where the current request stands in its policy pipeline.
    pub(super) pipeline: ExchangeState,
    /// The head of a request whose pipeline waits ([`Stage::Waiting`]), until it decides.
    pub(super) held: Option<RequestHead>,
    /// When the waiting pipeline is to be asked again.
    pub(super) wait_until: Option<Instant>,
}

impl Current {
    pub(super) fn new(now: Instant) -> Self {
        Current {
            stage: Stage::Idle,
            req_done: false,
            keep_alive: true,
            client_close: false,
            facts: RequestFacts::NONE,
            started: now,
            status: 0,
            route: None,
            resp_started: false,
            close_delimited: false,
            log: RequestLog::new(std::net::SocketAddr::from(([0, 0, 0, 0], 0)), now),
            pipeline: ExchangeState::default(),
            held: None,
            wait_until: None,
        }
    }
}

impl Active {
    pub(super) fn connection_header(&self, close: bool) -> ConnectionHeader {
        if close {
            ConnectionHeader::Close
        } else if self.cur.facts.http10 {
            ConnectionHeader::KeepAlive
        } else {
            ConnectionHeader::Omit
        }
    }

    /// Arc's own response to the current request.
    pub(super) fn respond_local(
        &mut self,
        cx: &mut WorkerCx,
        status: u16,
        content_type: &str,
        body: &[u8],
        extra: &[(&str, &[u8])],
        now: Instant,
    ) {
        // A client waiting for `100 Continue` may never send its body: close after answering.
        let close =
            self.must_close_after(now) || (self.cur.facts.expect_continue && !self.cur.req_done);
        // The header list lives on the stack for the usual shapes (no or one extra header).
        let keep_alive: (&str, &[u8]) = ("Connection", b"keep-alive");
        let mut small = [keep_alive; 2];
        let grown: Vec<(&str, &[u8])>;
        let extra_headers: &[(&str, &[u8])] = if !self.cur.facts.http10 || close {
            extra
        } else if let [one] = extra {
            small[0] = *one;
            &small
        } else if extra.is_empty() {
            small.get(..1).unwrap_or_default()
        } else {
            grown = extra.iter().copied().chain([keep_alive]).collect();
            &grown
        };
        http1::write_direct_response(
            &mut self.down.out,
            &DirectResponse {
                status,
                content_type,
                body,
                close,
                head_request: self.cur.facts.head_request,
                extra_headers,
            },
        );
        self.cur.status = status;
        self.cur.resp_started = true;
        if close {
            self.cur.keep_alive = false;
        }
        self.release_upstream(false);
        self.cur.stage = Stage::Local;
        if self.cur.req_done {
            self.finish_exchange(cx, now);
        }
    }

    pub(super) fn respond_error(
        &mut self,
        cx: &mut WorkerCx,
        status: u16,
        reason: ErrorReason,
        now: Instant,
    ) {
        cx.metrics.error(reason);
        self.cur.log.error(reason);
        let body = format!("{status} {}\n", http1::reason_phrase(status));
        self.respond_local(
            cx,
            status,
            "text/plain; charset=utf-8",
            body.as_bytes(),
            &[],
            now,
        );
    }

    /// A downstream protocol error: answer it (when nothing was sent yet) and close.
    pub(super) fn codec_error(&mut self, cx: &mut WorkerCx, err: &Http1Error, now: Instant) {
        let reason = match err.kind() {
            ErrorKind::HeadTooLarge => ErrorReason::HeadTooLarge,
            ErrorKind::TooManyHeaders => ErrorReason::TooManyHeaders,
            ErrorKind::BodyTooLarge => ErrorReason::BodyTooLarge,
            _ => ErrorReason::BadRequest,
        };
        cx.metrics.error(reason);
        if self.cur.stage == Stage::Idle && cx.access.is_on() {
            self.cur
                .log
                .begin(now, "", "", "", self.pending_down() as u64);
        }
        self.cur.log.error(reason);
        if self.cur.resp_started || self.cur.stage == Stage::Proxy && self.cur.req_done {
            // A response is under way: nothing sensible can follow it.
            self.close(true);
            return;
        }
        let status = err.status();
        let body = format!("{status} {}\n", http1::reason_phrase(status));
        http1::write_direct_response(
            &mut self.down.out,
            &DirectResponse {
                status,
                content_type: "text/plain; charset=utf-8",
                body: body.as_bytes(),
                close: true,
                head_request: false,
                extra_headers: &[],
            },
        );
        self.cur.status = status;
        self.record(cx, now);
        self.close(true);
    }

    pub(super) fn record(&mut self, cx: &mut WorkerCx, now: Instant) {
        let elapsed = now.saturating_duration_since(self.cur.started);
        cx.metrics
            .request_done(self.cur.route, self.cur.status, elapsed);
        if cx.access.is_on() {
            let pending = self.pending_down() as u64;
            if let Some(rec) = self
                .cur
                .log
                .finish(now, self.cur.status, self.cur.route, pending)
            {
                cx.access.push(rec);
            }
        }
    }

    /// Both sides of the exchange are complete: account it and get ready for the next request
    /// (the caller goes on decoding buffered input).
    pub(super) fn finish_exchange(&mut self, cx: &mut WorkerCx, now: Instant) {
        self.record(cx, now);
        self.id.requests += 1;
        if !self.cur.keep_alive || self.cur.close_delimited || self.down.eof {
            self.close(true);
            return;
        }
        self.cur.stage = Stage::Idle;
        self.cur.resp_started = false;
        self.cur.req_done = false;
        self.down.idle_since = now;
        self.down.head_started = None;
        if self.life.draining {
            // The drain began after this response's head went out promising keep-alive (a
            // head written while draining says `Connection: close` and ends above): the client
            // may already be sending its next request. Closing now would cut that request
            // without an answer; instead the connection waits, like every idle one in a drain,
            // up to [`DRAIN_IDLE_QUIET`] for it and answers it with `Connection: close`.
            let by = now + DRAIN_IDLE_QUIET;
            self.life.drain_idle_by = Some(self.life.drain_idle_by.map_or(by, |t| t.max(by)));
        }
    }

    /// Runs the request decoder over buffered downstream input. Never re-entered: everything it
    /// calls only changes state, and the loop picks the next request up itself.
    pub(super) fn process_downstream(&mut self, cx: &mut WorkerCx, now: Instant) {
        let mut pos = 0;
        while !self.life.closed {
            if self.cur.stage == Stage::Tunnel {
                if pos < self.down.inbuf.len() {
                    self.up
                        .out
                        .extend_from_slice(self.down.inbuf.get(pos..).unwrap_or_default());
                    pos = self.down.inbuf.len();
                }
                break;
            }
            // One exchange at a time: a pipelined request waits until this one is answered;
            // a request whose policies wait keeps its body buffered until they decide.
            if self.cur.req_done
                || self.cur.stage == Stage::Waiting
                || self.pending_up() > OUT_HIGH_WATER
            {
                break;
            }
            let Some(input) = self.down.inbuf.get(pos..) else {
                break;
            };
            let decoded = match self.down.req.decode(input) {
                Ok(d) => d,
                Err(e) => {
                    self.codec_error(cx, &e, now);
                    break;
                }
            };
            let consumed = decoded.consumed;
            let raw_end = (pos + consumed).min(self.down.inbuf.len());
            let taken = raw_end.saturating_sub(pos);
            match decoded.event {
                RequestEvent::Head(head) => {
                    pos = raw_end;
                    self.start_request(cx, &head, now);
                    if self.cur.stage == Stage::Waiting {
                        self.cur.held = Some(head);
                    } else {
                        self.down.req.recycle(head);
                    }
                    self.cur.log.read(taken);
                }
                RequestEvent::Body(_) => {
                    if self.cur.stage == Stage::Proxy {
                        self.forward_input(pos..raw_end);
                    }
                    pos = raw_end;
                    self.cur.log.read(taken);
                }
                RequestEvent::End | RequestEvent::UpgradeRequested => {
                    if self.cur.stage == Stage::Proxy && raw_end > pos {
                        self.forward_input(pos..raw_end);
                    }
                    pos = raw_end;
                    self.cur.log.read(taken);
                    self.cur.req_done = true;
                    if self.cur.stage == Stage::Local {
                        self.finish_exchange(cx, now);
                        if self.cur.stage == Stage::Idle {
                            self.down.req.resume();
                        }
                    }
                }
                RequestEvent::NeedMore => {
                    // Framing bytes of a body cut short by the read (part of a chunk-size
                    // line, a CRLF): relayed verbatim like the data around them.
                    if self.cur.stage == Stage::Proxy && raw_end > pos {
                        self.forward_input(pos..raw_end);
                    }
                    pos = raw_end;
                    self.cur.log.read(taken);
                    break;
                }
                RequestEvent::Paused => break,
                RequestEvent::Closed => {
                    // Bytes after a request that closes the connection are ignored; the client
                    // may still be sending, so the close lingers.
                    self.cur.client_close = false;
                    pos = self.down.inbuf.len();
                    break;
                }
            }
        }
        if pos > 0 {
            let n = pos.min(self.down.inbuf.len());
            self.down.inbuf.drain(..n);
        }
        if self.cur.stage == Stage::Idle
            && !self.down.inbuf.is_empty()
            && self.down.head_started.is_none()
        {
            self.down.head_started = Some(now);
        }
    }

    /// A request head arrived: route it and start answering.
    pub(super) fn start_request(&mut self, cx: &mut WorkerCx, head: &RequestHead, now: Instant) {
        self.cur.started = now;
        self.down.head_started = None;
        self.cur.req_done = false;
        self.cur.status = 0;
        self.cur.route = None;
        self.cur.resp_started = false;
        self.cur.close_delimited = false;
        self.cur.keep_alive = head.keep_alive();
        self.cur.client_close = !self.cur.keep_alive;
        self.cur.facts = RequestFacts::of(head);
        self.cur.pipeline.reset();

        if cx.access.is_on() {
            let host = head.authority().or(head.host_header()).unwrap_or("");
            let queued = self.pending_down() as u64;
            self.cur
                .log
                .begin(now, head.method_str(), host, head.target(), queued);
        }
        self.run_pipeline(cx, head, now);
    }

    /// Looks the request up and runs it through its policy pipeline (again, from where it
    /// stopped, after a wait), then carries out the decision.
    pub(super) fn run_pipeline(&mut self, cx: &mut WorkerCx, head: &RequestHead, now: Instant) {
        let view = cx.views.latest();
        let snapshot = &view.snapshot;
        self.id.limits = snapshot.limits;
        let host = head.authority().or(head.host_header()).unwrap_or("");
        let path = head.path();
        let found = match snapshot.table.lookup(host, path) {
            Lookup::Found(m) => m,
            Lookup::NotFound => {
                self.respond_error(cx, 404, ErrorReason::NoRoute, now);
                return;
            }
        };
        let entry = snapshot.route_ids.get(found.name());
        self.cur.route = entry.map(|e| e.id);
        let policies = entry.map_or(&[][..], |e| &e.policies[..]);
        // Lent out for the call, so the decision borrows nothing of `self`.
        let sni = self.id.info.sni.take();
        let req = Request {
            method: self.cur.facts.method,
            authority: host,
            path,
            target: head.target(),
            headers: head.headers(),
            client: Client {
                peer: self.id.info.peer,
                local: self.id.info.local,
                listener: self.id.info.listener,
                tls: self.id.info.tls,
                sni: sni.as_deref(),
            },
        };
        let route = RouteView::of(&found, path);
        match exchange::decide(&req, &route, policies, &mut self.cur.pipeline, now) {
            Decision::Respond(answer) => self.answer(cx, &answer, now),
            Decision::WaitUntil(at) => {
                self.cur.stage = Stage::Waiting;
                self.cur.wait_until = Some(at);
            }
            Decision::Forward { upstream } => match snapshot.upstreams.get(upstream).cloned() {
                Some(spec) => self.start_proxy(cx, head, spec, now),
                None => self.respond_error(cx, 503, ErrorReason::NoEndpoints, now),
            },
        }
        self.id.info.sni = sni;
    }

    /// A waiting pipeline's instant came: ask it again with the held head, then go on with
    /// the buffered request body (or the next request).
    pub(super) fn resume_pipeline(&mut self, cx: &mut WorkerCx, now: Instant) {
        self.cur.wait_until = None;
        let Some(head) = self.cur.held.take() else {
            // Nothing held: nothing can be decided (never reached: a wait always holds).
            self.respond_error(cx, 500, ErrorReason::BadRequest, now);
            return;
        };
        self.cur.stage = Stage::Idle;
        self.run_pipeline(cx, &head, now);
        if self.cur.stage == Stage::Waiting {
            self.cur.held = Some(head);
            return;
        }
        self.down.req.recycle(head);
        self.process_downstream(cx, now);
        if self.down.eof && !self.cur.req_done && !self.life.closed {
            // The client ended its side while the request waited, before sending it whole.
            cx.metrics.error(ErrorReason::BadRequest);
            self.close(false);
        }
    }

    /// Carries out a local answer of the pipeline.
    pub(super) fn answer(&mut self, cx: &mut WorkerCx, answer: &LocalResponse<'_>, now: Instant) {
        if let Some(reason) = answer.error {
            self.respond_error(cx, answer.status, reason, now);
            return;
        }
        match answer.location {
            None => self.respond_local(
                cx,
                answer.status,
                answer.content_type,
                answer.body,
                &[],
                now,
            ),
            Some(Location::To(to)) => self.respond_local(
                cx,
                answer.status,
                answer.content_type,
                answer.body,
                &[("Location", to.as_bytes())],
                now,
            ),
            Some(Location::Https { host, target }) => {
                let mut location = Vec::with_capacity(8 + host.len() + target.len());
                location.extend_from_slice(b"https://");
                location.extend_from_slice(host.as_bytes());
                location.extend_from_slice(target.as_bytes());
                self.respond_local(
                    cx,
                    answer.status,
                    answer.content_type,
                    answer.body,
                    &[("Location", &location)],
                    now,
                );
            }
        }
    }

    /// Queues `inbuf[range]` for the upstream without an intermediate copy.
    pub(super) fn forward_input(&mut self, range: std::ops::Range<usize>) {
        let bytes = self.down.inbuf.get(range).unwrap_or_default();
        self.up.out.extend_from_slice(bytes);
        Self::keep_for_replay(&mut self.up.replay, &mut self.up.replayable, bytes);
    }
}
