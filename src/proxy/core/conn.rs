//! The downstream connection state machine (see the parent module doc).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::logging::{AccessLogger, RequestLog};
use crate::metrics::{ErrorReason, PoolResult, RefuseReason, RouteMetricId, WorkerMetrics};
use crate::proxy::exchange::{
    self, Balancer, Client, Decision, ExchangeState, LocalResponse, Location, Request, RouteView,
    retry,
};
use crate::proxy::http1::{
    self, BodyKind, ClientInfo, ConnectionHeader, DirectResponse, DownstreamResponse, ErrorKind,
    Headers, Http1Error, Method, OutFraming, RequestDecoder, RequestEvent, RequestHead,
    ResponseDecoder, ResponseEvent, TraceBits, UpstreamRequest, Version,
};
use crate::proxy::io::{Action, ConnHandler, ConnInfo, Interest, PoolKey, UpstreamError};
use crate::routing::Lookup;

use super::snapshot::{ConnLimits, SharedSnapshot, UpstreamSpec, Views};

/// Output buffered per side before the other side stops being read (back-pressure bound).
const OUT_HIGH_WATER: usize = 64 * 1024;
/// Downstream input buffered beyond the head limit before reading pauses (pipelined requests).
const IN_SLACK: usize = 16 * 1024;
/// Smallest pending downstream output lent to the driver instead of copied.
const LEND_MIN: usize = 16 * 1024;
/// A request is replayed on a fresh connection (after a pooled one failed before answering)
/// only while everything sent upstream for it fits in this many bytes.
const REPLAY_LIMIT: usize = 64 * 1024;
/// During drain, an idle keep-alive connection closes once it has been quiet this long. A
/// client that is actively using its connection sends its next request within this time and
/// gets it answered with `Connection: close` instead of having its connection closed under a
/// request in flight; one that has been quiet longer closes at once. A fresh connection gets
/// the same time for its first request.
const DRAIN_IDLE_QUIET: Duration = Duration::from_secs(1);
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

/// Worker-wide context lent to every connection of one worker (never shared across workers).
pub struct WorkerCx {
    views: Views,
    pub metrics: WorkerMetrics,
    /// This worker's access-log ring (off unless [`WorkerCx::with_access_log`]).
    pub access: AccessLogger,
    /// Endpoint choice (round robin per upstream), per worker.
    balancer: Balancer,
    rng: u64,
    /// Set once the worker drains: every connection opened from now on closes after its first
    /// response.
    draining: bool,
    /// States of parked connections kept for the next connection that becomes active. Boxed:
    /// a connection holds its state by pointer, and handing one over moves only that.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<Active>>,
    /// The limits the latest parked connection refers to.
    parked_limits: Option<Arc<ConnLimits>>,
}

impl WorkerCx {
    pub fn new(shared: SharedSnapshot, metrics: WorkerMetrics, seed: u64) -> Self {
        WorkerCx {
            views: Views::new(shared),
            metrics,
            access: AccessLogger::off(),
            balancer: Balancer::default(),
            rng: seed | 1,
            draining: false,
            spare: Vec::new(),
            parked_limits: None,
        }
    }

    /// Whether the worker is draining.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Sends this worker's access-log records to `access`.
    pub fn with_access_log(mut self, access: AccessLogger) -> Self {
        self.access = access;
        self
    }

    /// The shared snapshot handle this worker reads from.
    pub fn shared(&self) -> &SharedSnapshot {
        self.views.shared()
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: request ids and trace ids need uniqueness, not secrecy.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Whether `key` is still an endpoint of its upstream in the latest snapshot, with the same
    /// TLS settings (a connection made plain, or with other SNI/verification, is not reused).
    fn endpoint_current(&self, key: &PoolKey) -> bool {
        self.views
            .shared()
            .load()
            .upstreams
            .get(&*key.upstream)
            .is_some_and(|u| u.endpoints.contains(&key.endpoint) && u.tls == key.tls)
    }
}

/// Where the current exchange stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
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
enum UpState {
    None,
    Connecting,
    Connected,
}

/// The full state of a downstream connection with an exchange under way (or about to start).
/// An idle keep-alive connection gives it back to its worker ([`Conn`] parks, after
/// [`IDLE_GRACE`] once it has been reused) and keeps only what [`Parked`] holds.
struct Active {
    info: ConnInfo,
    started: Instant,
    limits: ConnLimits,

    inbuf: Vec<u8>,
    req: RequestDecoder,
    down_out: Vec<u8>,
    down_pos: usize,
    /// Bytes lent to the driver (`lend_downstream_out`) and not yet reported written; they
    /// were sent before anything now in `down_out`.
    down_lent: usize,
    idle_since: Instant,
    head_started: Option<Instant>,

    stage: Stage,
    req_done: bool,
    keep_alive: bool,
    /// The request under way asked to close the connection (`Connection: close`, or HTTP/1.0
    /// without keep-alive): the client sends nothing after it.
    client_close: bool,
    client_http10: bool,
    method: Method,
    head_request: bool,
    expect_continue: bool,
    upgrade: bool,
    requests: u64,
    req_started: Instant,
    status: u16,
    route: Option<RouteMetricId>,
    resp_started: bool,
    close_delimited: bool,

    up_state: UpState,
    up_key: Option<PoolKey>,
    /// The endpoint's active-connection gauge while an upstream connection is attached.
    up_active: Option<Arc<crate::metrics::pool::EndpointCell>>,
    up_spec: Option<Arc<UpstreamSpec>>,
    up_reused: bool,
    up_out: Vec<u8>,
    up_pos: usize,
    up_in: Vec<u8>,
    resp: Option<ResponseDecoder>,
    /// Storage of the last response head, handed to the next response decoder so response
    /// heads reuse one pair of allocations per connection.
    resp_store: Headers,
    /// Everything sent upstream for the current request while it may still be replayed
    /// (`replayable`); the buffer is reused across requests.
    replay: Vec<u8>,
    replayable: bool,
    replays: u8,
    up_started: Instant,
    up_deadline: Option<Instant>,

    actions: VecDeque<Action>,
    closed: bool,
    close_counted: bool,
    down_eof: bool,
    /// The process drains: the response under way (or the next one) says `Connection: close`
    /// and the connection ends after it.
    draining: bool,
    /// During drain, when an idle connection that never sent a request gives up.
    drain_idle_by: Option<Instant>,
    /// When this connection, idle and parkable since the end of a callback, parks (see
    /// [`IDLE_GRACE`]); `None` while it is not parkable. Set when it first settles parkable,
    /// cleared when it stops being so; a connection just taken out of its parked form gets
    /// the time it was taken out, so that it parks again at once when nothing came of it.
    park_at: Option<Instant>,
    /// Access-log fields of the current request.
    log: RequestLog,
    /// Where the current request stands in its policy pipeline.
    ex: ExchangeState,
    /// The head of a request whose pipeline waits ([`Stage::Waiting`]), until it decides.
    held: Option<RequestHead>,
    /// When the waiting pipeline is to be asked again.
    wait_until: Option<Instant>,
}

impl Active {
    fn pending_down(&self) -> usize {
        self.down_out.len() - self.down_pos + self.down_lent
    }

    fn pending_up(&self) -> usize {
        self.up_out.len() - self.up_pos
    }

    /// Keeps a copy of bytes queued for the upstream while the request may still be replayed.
    fn keep_for_replay(replay: &mut Vec<u8>, replayable: &mut bool, bytes: &[u8]) {
        if !*replayable {
            return;
        }
        if replay.len() + bytes.len() <= REPLAY_LIMIT {
            replay.extend_from_slice(bytes);
        } else {
            *replayable = false;
            replay.clear();
        }
    }

    /// Queues `inbuf[range]` for the upstream without an intermediate copy.
    fn forward_input(&mut self, range: std::ops::Range<usize>) {
        let bytes = self.inbuf.get(range).unwrap_or_default();
        self.up_out.extend_from_slice(bytes);
        Self::keep_for_replay(&mut self.replay, &mut self.replayable, bytes);
    }

    /// Counts the close once, at the end of the callback that closed the connection.
    fn settle(&mut self, cx: &mut WorkerCx) {
        if self.closed && !self.close_counted {
            self.close_counted = true;
            cx.metrics.connection_closed();
        }
    }

    fn release_upstream(&mut self, reusable: bool) {
        if self.up_state != UpState::None {
            self.actions.push_back(Action::ReleaseUpstream { reusable });
            self.up_state = UpState::None;
        }
        if let Some(cell) = self.up_active.take() {
            cell.add_active(-1);
        }
        self.up_deadline = None;
    }

    fn close(&mut self, flush: bool) {
        if self.closed {
            return;
        }
        self.release_upstream(false);
        // `linger` is settled when the driver takes the action (`poll_action`), once the
        // callback has consumed the input it was decoding.
        self.actions.push_back(Action::CloseDownstream {
            flush,
            linger: true,
        });
        self.closed = true;
        self.head_started = None;
    }

    /// Whether the client can send nothing more: its request asked for the close, was read to
    /// its end, and nothing followed it. Closing then needs no lingering read.
    fn client_done(&self) -> bool {
        self.client_close
            && self.req_done
            && self.inbuf.is_empty()
            && !matches!(self.stage, Stage::Tunnel | Stage::Idle)
    }

    /// Whether the response being started must end the connection.
    fn must_close_after(&self, now: Instant) -> bool {
        !self.keep_alive
            || self.draining
            || self.down_eof
            || self
                .limits
                .max_requests_per_connection
                .is_some_and(|m| self.requests + 1 >= m)
            || self
                .limits
                .max_connection_age
                .is_some_and(|age| now.saturating_duration_since(self.started) >= age)
    }

    /// When an idle connection (no request bytes buffered) closes.
    fn idle_deadline(&self) -> Instant {
        let idle = self.idle_since + self.limits.idle_timeout;
        match self.drain_idle_by {
            Some(t) => idle.min(t),
            None => idle,
        }
    }

    /// Drain reached this connection: an idle keep-alive connection closes (with a FIN, so the
    /// client retries elsewhere) once it has been quiet for [`DRAIN_IDLE_QUIET`] — at once when
    /// it already was; a request arriving before that is answered with `Connection: close`. A
    /// busy connection ends after the response under way, which carries `Connection: close`
    /// when its head is not written yet. A tunnel keeps going until the driver's deadline.
    fn start_drain(&mut self, now: Instant) {
        if self.closed || self.draining {
            return;
        }
        self.draining = true;
        if self.stage == Stage::Idle && self.inbuf.is_empty() {
            let quiet_from = if self.requests > 0 {
                self.idle_since
            } else {
                now
            };
            let by = quiet_from + DRAIN_IDLE_QUIET;
            if now >= by {
                self.close(true);
            } else {
                self.drain_idle_by = Some(by);
            }
        }
    }

    fn connection_header(&self, close: bool) -> ConnectionHeader {
        if close {
            ConnectionHeader::Close
        } else if self.client_http10 {
            ConnectionHeader::KeepAlive
        } else {
            ConnectionHeader::Omit
        }
    }

    /// Arc's own response to the current request.
    fn respond_local(
        &mut self,
        cx: &mut WorkerCx,
        status: u16,
        content_type: &str,
        body: &[u8],
        extra: &[(&str, &[u8])],
        now: Instant,
    ) {
        // A client waiting for `100 Continue` may never send its body: close after answering.
        let close = self.must_close_after(now) || (self.expect_continue && !self.req_done);
        // The header list lives on the stack for the usual shapes (no or one extra header).
        let keep_alive: (&str, &[u8]) = ("Connection", b"keep-alive");
        let mut small = [keep_alive; 2];
        let grown: Vec<(&str, &[u8])>;
        let extra_headers: &[(&str, &[u8])] = if !self.client_http10 || close {
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
            &mut self.down_out,
            &DirectResponse {
                status,
                content_type,
                body,
                close,
                head_request: self.head_request,
                extra_headers,
            },
        );
        self.status = status;
        self.resp_started = true;
        if close {
            self.keep_alive = false;
        }
        self.release_upstream(false);
        self.stage = Stage::Local;
        if self.req_done {
            self.finish_exchange(cx, now);
        }
    }

    fn respond_error(&mut self, cx: &mut WorkerCx, status: u16, reason: ErrorReason, now: Instant) {
        cx.metrics.error(reason);
        self.log.error(reason);
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
    fn codec_error(&mut self, cx: &mut WorkerCx, err: &Http1Error, now: Instant) {
        let reason = match err.kind() {
            ErrorKind::HeadTooLarge => ErrorReason::HeadTooLarge,
            ErrorKind::TooManyHeaders => ErrorReason::TooManyHeaders,
            ErrorKind::BodyTooLarge => ErrorReason::BodyTooLarge,
            _ => ErrorReason::BadRequest,
        };
        cx.metrics.error(reason);
        if self.stage == Stage::Idle && cx.access.is_on() {
            self.log.begin(now, "", "", "", self.pending_down() as u64);
        }
        self.log.error(reason);
        if self.resp_started || self.stage == Stage::Proxy && self.req_done {
            // A response is under way: nothing sensible can follow it.
            self.close(true);
            return;
        }
        let status = err.status();
        let body = format!("{status} {}\n", http1::reason_phrase(status));
        http1::write_direct_response(
            &mut self.down_out,
            &DirectResponse {
                status,
                content_type: "text/plain; charset=utf-8",
                body: body.as_bytes(),
                close: true,
                head_request: false,
                extra_headers: &[],
            },
        );
        self.status = status;
        self.record(cx, now);
        self.close(true);
    }

    fn record(&mut self, cx: &mut WorkerCx, now: Instant) {
        let elapsed = now.saturating_duration_since(self.req_started);
        cx.metrics.request_done(self.route, self.status, elapsed);
        if cx.access.is_on() {
            let pending = self.pending_down() as u64;
            if let Some(rec) = self.log.finish(now, self.status, self.route, pending) {
                cx.access.push(rec);
            }
        }
    }

    /// Both sides of the exchange are complete: account it and get ready for the next request
    /// (the caller goes on decoding buffered input).
    fn finish_exchange(&mut self, cx: &mut WorkerCx, now: Instant) {
        self.record(cx, now);
        self.requests += 1;
        if !self.keep_alive || self.close_delimited || self.down_eof || self.draining {
            self.close(true);
            return;
        }
        self.stage = Stage::Idle;
        self.resp_started = false;
        self.req_done = false;
        self.idle_since = now;
        self.head_started = None;
    }

    /// Runs the request decoder over buffered downstream input. Never re-entered: everything it
    /// calls only changes state, and the loop picks the next request up itself.
    fn process_downstream(&mut self, cx: &mut WorkerCx, now: Instant) {
        let mut pos = 0;
        while !self.closed {
            if self.stage == Stage::Tunnel {
                if pos < self.inbuf.len() {
                    self.up_out
                        .extend_from_slice(self.inbuf.get(pos..).unwrap_or_default());
                    pos = self.inbuf.len();
                }
                break;
            }
            // One exchange at a time: a pipelined request waits until this one is answered;
            // a request whose policies wait keeps its body buffered until they decide.
            if self.req_done || self.stage == Stage::Waiting || self.pending_up() > OUT_HIGH_WATER {
                break;
            }
            let Some(input) = self.inbuf.get(pos..) else {
                break;
            };
            let decoded = match self.req.decode(input) {
                Ok(d) => d,
                Err(e) => {
                    self.codec_error(cx, &e, now);
                    break;
                }
            };
            let consumed = decoded.consumed;
            let raw_end = (pos + consumed).min(self.inbuf.len());
            let taken = raw_end.saturating_sub(pos);
            match decoded.event {
                RequestEvent::Head(head) => {
                    pos = raw_end;
                    self.start_request(cx, &head, now);
                    if self.stage == Stage::Waiting {
                        self.held = Some(head);
                    } else {
                        self.req.recycle(head);
                    }
                    self.log.read(taken);
                }
                RequestEvent::Body(_) => {
                    if self.stage == Stage::Proxy {
                        self.forward_input(pos..raw_end);
                    }
                    pos = raw_end;
                    self.log.read(taken);
                }
                RequestEvent::End | RequestEvent::UpgradeRequested => {
                    if self.stage == Stage::Proxy && raw_end > pos {
                        self.forward_input(pos..raw_end);
                    }
                    pos = raw_end;
                    self.log.read(taken);
                    self.req_done = true;
                    if self.stage == Stage::Local {
                        self.finish_exchange(cx, now);
                        if self.stage == Stage::Idle {
                            self.req.resume();
                        }
                    }
                }
                RequestEvent::NeedMore => {
                    // Framing bytes of a body cut short by the read (part of a chunk-size
                    // line, a CRLF): relayed verbatim like the data around them.
                    if self.stage == Stage::Proxy && raw_end > pos {
                        self.forward_input(pos..raw_end);
                    }
                    pos = raw_end;
                    self.log.read(taken);
                    break;
                }
                RequestEvent::Paused => break,
                RequestEvent::Closed => {
                    // Bytes after a request that closes the connection are ignored; the client
                    // may still be sending, so the close lingers.
                    self.client_close = false;
                    pos = self.inbuf.len();
                    break;
                }
            }
        }
        if pos > 0 {
            let n = pos.min(self.inbuf.len());
            self.inbuf.drain(..n);
        }
        if self.stage == Stage::Idle && !self.inbuf.is_empty() && self.head_started.is_none() {
            self.head_started = Some(now);
        }
    }

    /// A request head arrived: route it and start answering.
    fn start_request(&mut self, cx: &mut WorkerCx, head: &RequestHead, now: Instant) {
        self.req_started = now;
        self.head_started = None;
        self.req_done = false;
        self.status = 0;
        self.route = None;
        self.resp_started = false;
        self.close_delimited = false;
        self.keep_alive = head.keep_alive();
        self.client_close = !self.keep_alive;
        self.client_http10 = head.version() == Version::Http10;
        self.method = head.method();
        self.head_request = self.method == Method::Head;
        self.expect_continue = head.expects_continue();
        self.upgrade = head.upgrade_requested();
        self.ex.reset();

        if cx.access.is_on() {
            let host = head.authority().or(head.host_header()).unwrap_or("");
            let queued = self.pending_down() as u64;
            self.log
                .begin(now, head.method_str(), host, head.target(), queued);
        }
        self.run_pipeline(cx, head, now);
    }

    /// Looks the request up and runs it through its policy pipeline (again, from where it
    /// stopped, after a wait), then carries out the decision.
    fn run_pipeline(&mut self, cx: &mut WorkerCx, head: &RequestHead, now: Instant) {
        let view = cx.views.latest();
        let snapshot = &view.snapshot;
        self.limits = snapshot.limits;
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
        self.route = entry.map(|e| e.id);
        let policies = entry.map_or(&[][..], |e| &e.policies[..]);
        // Lent out for the call, so the decision borrows nothing of `self`.
        let sni = self.info.sni.take();
        let req = Request {
            method: self.method,
            authority: host,
            path,
            target: head.target(),
            headers: head.headers(),
            client: Client {
                peer: self.info.peer,
                local: self.info.local,
                listener: self.info.listener,
                tls: self.info.tls,
                sni: sni.as_deref(),
            },
        };
        let route = RouteView::of(&found, path);
        match exchange::decide(&req, &route, policies, &mut self.ex, now) {
            Decision::Respond(answer) => self.answer(cx, &answer, now),
            Decision::WaitUntil(at) => {
                self.stage = Stage::Waiting;
                self.wait_until = Some(at);
            }
            Decision::Forward { upstream } => match snapshot.upstreams.get(upstream).cloned() {
                Some(spec) => self.start_proxy(cx, head, spec, now),
                None => self.respond_error(cx, 503, ErrorReason::NoEndpoints, now),
            },
        }
        self.info.sni = sni;
    }

    /// A waiting pipeline's instant came: ask it again with the held head, then go on with
    /// the buffered request body (or the next request).
    fn resume_pipeline(&mut self, cx: &mut WorkerCx, now: Instant) {
        self.wait_until = None;
        let Some(head) = self.held.take() else {
            // Nothing held: nothing can be decided (never reached: a wait always holds).
            self.respond_error(cx, 500, ErrorReason::BadRequest, now);
            return;
        };
        self.stage = Stage::Idle;
        self.run_pipeline(cx, &head, now);
        if self.stage == Stage::Waiting {
            self.held = Some(head);
            return;
        }
        self.req.recycle(head);
        self.process_downstream(cx, now);
        if self.down_eof && !self.req_done && !self.closed {
            // The client ended its side while the request waited, before sending it whole.
            cx.metrics.error(ErrorReason::BadRequest);
            self.close(false);
        }
    }

    /// Carries out a local answer of the pipeline.
    fn answer(&mut self, cx: &mut WorkerCx, answer: &LocalResponse<'_>, now: Instant) {
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

    fn start_proxy(
        &mut self,
        cx: &mut WorkerCx,
        head: &RequestHead,
        spec: Arc<UpstreamSpec>,
        now: Instant,
    ) {
        let Some(endpoint) = cx.balancer.pick(&spec.name, &spec.endpoints) else {
            self.respond_error(cx, 503, ErrorReason::NoEndpoints, now);
            return;
        };
        self.stage = Stage::Proxy;
        self.up_key = Some(PoolKey {
            endpoint,
            upstream: Arc::clone(&spec.name),
            tls: spec.tls.clone(),
        });
        let request_id = u128::from(cx.random()) << 64 | u128::from(cx.random());
        let trace = TraceBits {
            trace_id: u128::from(cx.random()) << 64 | u128::from(cx.random()),
            span_id: cx.random(),
            sampled: false,
        };
        // Without a Host (HTTP/1.0) the request still goes upstream as HTTP/1.1, which needs
        // a non-empty one: name the endpoint, as a client of `http://ip:port/` would.
        let mut host_buf = [0u8; 64];
        let host = match head.authority() {
            Some(a) if !a.is_empty() => None,
            _ => endpoint_authority(&mut host_buf, endpoint),
        };
        let opts = UpstreamRequest {
            framing: OutFraming::Keep,
            tunnel: self.upgrade,
            host,
            client: Some(ClientInfo {
                addr: self.info.peer.ip(),
                trusted: false,
                proto: if self.info.tls { "https" } else { "http" },
                port: self.info.local.port(),
            }),
            request_id: Some(request_id),
            trace: Some(trace),
            ..UpstreamRequest::default()
        };
        self.up_out.clear();
        self.up_pos = 0;
        self.up_in.clear();
        self.replay.clear();
        self.replayable = true;
        self.replays = 0;
        let ids = http1::write_request_head(&mut self.up_out, head, &opts);
        let field = |r: Option<std::ops::Range<usize>>| r.and_then(|r| self.up_out.get(r));
        self.log.proxied(
            endpoint,
            field(ids.request_id).unwrap_or_default(),
            field(ids.traceparent).unwrap_or_default(),
        );
        Self::keep_for_replay(&mut self.replay, &mut self.replayable, &self.up_out);
        let decoder = self.response_decoder();
        self.resp = Some(decoder);
        if self.expect_continue {
            self.down_out.extend_from_slice(http1::CONTINUE_100);
        }
        self.up_spec = Some(spec);
        self.connect(now);
    }

    fn response_decoder(&mut self) -> ResponseDecoder {
        let limits = http1::Limits {
            max_body: None,
            ..self.limits.codec
        };
        let store = std::mem::take(&mut self.resp_store);
        ResponseDecoder::with_storage(limits, self.method, self.upgrade, store)
    }

    fn connect(&mut self, now: Instant) {
        let (Some(key), Some(spec)) = (self.up_key.clone(), self.up_spec.as_ref()) else {
            return;
        };
        self.actions.push_back(Action::ConnectUpstream {
            key,
            limits: spec.pool,
        });
        self.up_state = UpState::Connecting;
        self.up_reused = false;
        self.up_started = now;
        self.log.attempt(now, self.replays);
        self.up_deadline = None;
    }

    /// The upstream deadline: `send_timeout` while request bytes wait to be written,
    /// `read_timeout` while waiting for the response.
    fn arm_upstream(&mut self, now: Instant) {
        let timeout = if self.pending_up() > 0 {
            self.up_spec
                .as_ref()
                .map_or(Duration::from_secs(60), |s| s.send_timeout)
        } else {
            self.read_timeout()
        };
        self.up_deadline = Some(now + timeout);
    }

    fn read_timeout(&self) -> Duration {
        self.up_spec
            .as_ref()
            .map_or(Duration::from_secs(60), |s| s.read_timeout)
    }

    /// The upstream failed before or while answering.
    fn upstream_failed(&mut self, cx: &mut WorkerCx, err: UpstreamError, now: Instant) {
        let was_reused = self.up_reused;
        self.release_upstream(false);
        if self.stage == Stage::Tunnel {
            self.close(true);
            return;
        }
        if self.stage != Stage::Proxy {
            return;
        }
        let attempt = retry::Attempt {
            error: err,
            reused: was_reused,
            replayable: self.replayable,
            replays: self.replays,
            response_started: self.resp_started,
        };
        match retry::after_failure(&attempt) {
            retry::AfterFailure::Retry => {
                // A pooled connection the peer had closed: replay on a fresh one.
                self.replays += 1;
                self.up_out.clear();
                self.up_out.extend_from_slice(&self.replay);
                self.up_pos = 0;
                self.up_in.clear();
                let decoder = self.response_decoder();
                self.resp = Some(decoder);
                self.connect(now);
            }
            retry::AfterFailure::Respond { status, reason } => {
                self.resp = None;
                self.respond_error(cx, status, reason, now);
            }
            retry::AfterFailure::Abort { reason } => {
                // The response is cut short: the client must see the truncation, not a
                // complete answer.
                cx.metrics.error(reason);
                self.log.error(reason);
                self.record(cx, now);
                self.close(true);
            }
        }
    }

    /// Runs the response decoder over buffered upstream input.
    fn process_upstream(&mut self, cx: &mut WorkerCx, now: Instant) {
        // Moved out for the decoding run (nothing it calls touches `up_in`) and put back.
        let input = std::mem::take(&mut self.up_in);
        let used = self.decode_upstream(cx, now, &input);
        self.up_in = input;
        match used {
            Some(n) if n > 0 => {
                let n = n.min(self.up_in.len());
                self.up_in.drain(..n);
            }
            Some(_) => {}
            None => self.up_in.clear(),
        }
        self.after_upstream(cx, now);
    }

    /// Upstream bytes handed over by the driver: decoded straight from `data` when nothing is
    /// buffered (a body chunk is then copied once, into `down_out`); only what the decoder
    /// left over is kept in `up_in`.
    fn take_upstream(&mut self, cx: &mut WorkerCx, data: &[u8], now: Instant) {
        if !self.up_in.is_empty() {
            self.up_in.extend_from_slice(data);
            self.process_upstream(cx, now);
            return;
        }
        if let Some(n) = self.decode_upstream(cx, now, data)
            && let Some(rest) = data.get(n..)
        {
            self.up_in.extend_from_slice(rest);
        }
        self.after_upstream(cx, now);
    }

    /// After a decoding run: an exchange that ended makes room for the next request.
    fn after_upstream(&mut self, cx: &mut WorkerCx, now: Instant) {
        if self.stage == Stage::Idle {
            self.up_in.clear();
            self.process_downstream(cx, now);
        }
    }

    /// Decodes `input` (the buffered upstream bytes); returns how many bytes were used, or
    /// `None` when the rest is to be dropped (the response failed).
    fn decode_upstream(&mut self, cx: &mut WorkerCx, now: Instant, input: &[u8]) -> Option<usize> {
        let mut pos = 0;
        while !self.closed {
            if self.stage == Stage::Tunnel {
                if pos < input.len() {
                    self.down_out
                        .extend_from_slice(input.get(pos..).unwrap_or_default());
                    pos = input.len();
                }
                break;
            }
            if self.stage != Stage::Proxy || self.pending_down() > OUT_HIGH_WATER {
                break;
            }
            let Some(resp) = self.resp.as_mut() else {
                break;
            };
            let rest = input.get(pos..).unwrap_or_default();
            let decoded = match resp.decode(rest) {
                Ok(d) => d,
                Err(_) => {
                    if self.resp_started {
                        cx.metrics.error(ErrorReason::UpstreamInvalidResponse);
                        self.log.error(ErrorReason::UpstreamInvalidResponse);
                        self.record(cx, now);
                        self.close(true);
                    } else {
                        self.resp = None;
                        self.respond_error(cx, 502, ErrorReason::UpstreamInvalidResponse, now);
                    }
                    return None;
                }
            };
            let raw_end = (pos + decoded.consumed).min(input.len());
            match decoded.event {
                ResponseEvent::Informational(head) => {
                    // Arc answered `Expect: 100-continue` itself; other 1xx are passed on.
                    if head.status() != 100 {
                        http1::write_response_head(
                            &mut self.down_out,
                            &head,
                            &DownstreamResponse {
                                framing: OutFraming::Omit,
                                connection: ConnectionHeader::Omit,
                                extra_headers: &[],
                            },
                        );
                    }
                    if let Some(r) = self.resp.as_mut() {
                        r.recycle(head);
                    }
                    pos = raw_end;
                }
                ResponseEvent::Head(head, framing) => {
                    pos = raw_end;
                    self.replayable = false;
                    self.status = head.status();
                    self.resp_started = true;
                    if framing.tunnel {
                        http1::write_response_head(
                            &mut self.down_out,
                            &head,
                            &DownstreamResponse {
                                framing: OutFraming::Omit,
                                connection: ConnectionHeader::Upgrade,
                                extra_headers: &[],
                            },
                        );
                        self.stage = Stage::Tunnel;
                        self.up_deadline = None;
                        self.record(cx, now);
                        self.resp_store = head.into_headers();
                        continue;
                    }
                    let until_close = framing.body == BodyKind::UntilClose;
                    self.close_delimited = until_close;
                    let close = until_close || self.must_close_after(now);
                    if close {
                        self.keep_alive = false;
                    }
                    let connection = self.connection_header(close);
                    http1::write_response_head(
                        &mut self.down_out,
                        &head,
                        &DownstreamResponse {
                            framing: if until_close {
                                OutFraming::Omit
                            } else {
                                OutFraming::Keep
                            },
                            connection,
                            extra_headers: &[],
                        },
                    );
                    self.resp_store = head.into_headers();
                }
                ResponseEvent::Body(_) => {
                    let raw = input.get(pos..raw_end).unwrap_or_default();
                    self.down_out.extend_from_slice(raw);
                    pos = raw_end;
                }
                ResponseEvent::End { keep_alive } => {
                    let raw = input.get(pos..raw_end).unwrap_or_default();
                    self.down_out.extend_from_slice(raw);
                    pos = raw_end;
                    let clean = self.req_done && self.pending_up() == 0 && pos == input.len();
                    // A connection to an endpoint that left the table is not pooled.
                    let current = self.up_key.as_ref().is_some_and(|k| cx.endpoint_current(k));
                    self.release_upstream(keep_alive && clean && current);
                    self.resp = None;
                    cx.metrics
                        .observe_upstream_duration(now.saturating_duration_since(self.up_started));
                    if !self.req_done {
                        // Answered before the request body ended: stop here.
                        self.keep_alive = false;
                    }
                    self.finish_exchange(cx, now);
                    if self.stage == Stage::Idle {
                        self.req.resume();
                    }
                    break;
                }
                ResponseEvent::Tunnel | ResponseEvent::Done => break,
                ResponseEvent::NeedMore => {
                    // Framing bytes of a body cut short by the read (part of a chunk-size
                    // line, a CRLF): relayed verbatim like the data around them.
                    let raw = input.get(pos..raw_end).unwrap_or_default();
                    self.down_out.extend_from_slice(raw);
                    pos = raw_end;
                    break;
                }
            }
        }
        Some(pos)
    }
}

impl Active {
    fn do_on_downstream_data(&mut self, cx: &mut WorkerCx, data: &[u8], now: Instant) {
        if self.closed {
            return;
        }
        if self.stage == Stage::Idle && self.head_started.is_none() {
            self.head_started = Some(now);
        }
        self.inbuf.extend_from_slice(data);
        self.process_downstream(cx, now);
    }

    fn do_on_downstream_eof(&mut self, cx: &mut WorkerCx, now: Instant) {
        if self.closed {
            return;
        }
        self.down_eof = true;
        match self.stage {
            Stage::Idle => self.close(true),
            Stage::Tunnel => self.close(true),
            // A waiting request is decided first; an incomplete one then closes (see
            // `resume_pipeline`).
            Stage::Waiting => {}
            Stage::Local | Stage::Proxy => {
                if !self.req_done {
                    // The request was cut short.
                    cx.metrics.error(ErrorReason::BadRequest);
                    self.close(false);
                }
                // Otherwise the response is finished first, then the connection closes.
            }
        }
        let _ = now;
    }

    fn do_on_downstream_error(&mut self, _cx: &mut WorkerCx, _now: Instant) {
        self.close(false);
    }

    fn do_on_upstream_connected(&mut self, cx: &mut WorkerCx, reused: bool, now: Instant) {
        if self.up_state != UpState::Connecting {
            return;
        }
        self.up_state = UpState::Connected;
        self.up_reused = reused;
        if let (Some(g), Some(key)) = (cx.metrics.pool.as_mut(), self.up_key.as_ref()) {
            let cell = g.cell(&key.upstream, key.endpoint);
            cell.add_active(1);
            if let Some(old) = self.up_active.replace(cell) {
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

    fn do_on_upstream_data(&mut self, cx: &mut WorkerCx, data: &[u8], now: Instant) {
        if self.closed || self.up_state != UpState::Connected {
            return;
        }
        if self.stage == Stage::Proxy {
            self.up_deadline = Some(now + self.read_timeout());
        }
        self.take_upstream(cx, data, now);
    }

    fn do_on_upstream_eof(&mut self, cx: &mut WorkerCx, now: Instant) {
        if self.closed || self.up_state != UpState::Connected {
            return;
        }
        match self.stage {
            Stage::Tunnel => self.close(true),
            Stage::Proxy => {
                let finished = self.resp.as_mut().map(|r| r.finish_eof());
                match finished {
                    Some(Ok(())) => {
                        self.process_upstream(cx, now);
                        if self.up_state != UpState::None {
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

    fn do_on_upstream_error(&mut self, cx: &mut WorkerCx, err: UpstreamError, now: Instant) {
        if self.closed || self.up_state == UpState::None {
            return;
        }
        self.upstream_failed(cx, err, now);
    }

    fn do_on_timer(&mut self, cx: &mut WorkerCx, now: Instant) {
        if self.closed {
            return;
        }
        if let Some(d) = self.up_deadline
            && now >= d
        {
            self.up_deadline = None;
            if self.stage == Stage::Proxy && !self.resp_started {
                self.resp = None;
                self.respond_error(cx, 504, ErrorReason::UpstreamTimeout, now);
            } else {
                cx.metrics.error(ErrorReason::UpstreamTimeout);
                self.close(true);
            }
            return;
        }
        if self.stage == Stage::Waiting {
            if self.wait_until.is_some_and(|t| now >= t) {
                self.resume_pipeline(cx, now);
            }
            return;
        }
        if self.stage == Stage::Idle {
            match self.head_started {
                Some(t) if now >= t + self.limits.header_read_timeout => {
                    cx.metrics.error(ErrorReason::HeaderReadTimeout);
                    self.keep_alive = false;
                    self.status = 408;
                    let body = b"408 Request Timeout\n";
                    http1::write_direct_response(
                        &mut self.down_out,
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

    fn do_downstream_written(&mut self, cx: &mut WorkerCx, n: usize, now: Instant) {
        self.log.wrote(n);
        let lent = n.min(self.down_lent);
        self.down_lent -= lent;
        let n = n - lent;
        self.down_pos = (self.down_pos + n).min(self.down_out.len());
        if self.down_pos == self.down_out.len() {
            self.down_out.clear();
            self.down_pos = 0;
        } else if self.down_pos > OUT_HIGH_WATER {
            self.down_out.drain(..self.down_pos);
            self.down_pos = 0;
        }
        if self.closed {
            return;
        }
        // A response in progress may have stopped at the high-water mark with all its bytes
        // already consumed (its end is decoded from no further input), so it resumes here
        // even when nothing is buffered from the upstream.
        let resume = match self.stage {
            Stage::Proxy => self.resp.is_some() || !self.up_in.is_empty(),
            Stage::Tunnel => !self.up_in.is_empty(),
            _ => false,
        };
        if resume {
            self.process_upstream(cx, now);
        }
    }

    fn do_upstream_written(&mut self, cx: &mut WorkerCx, n: usize, now: Instant) {
        self.up_pos = (self.up_pos + n).min(self.up_out.len());
        if self.up_pos == self.up_out.len() {
            self.up_out.clear();
            self.up_pos = 0;
        } else if self.up_pos > OUT_HIGH_WATER {
            self.up_out.drain(..self.up_pos);
            self.up_pos = 0;
        }
        if self.closed {
            return;
        }
        if self.stage == Stage::Proxy && !self.resp_started {
            self.arm_upstream(now);
        }
        if !self.inbuf.is_empty() {
            self.process_downstream(cx, now);
        }
    }
}

impl Active {
    /// A fresh state with no connection in it yet.
    fn blank(limits: ConnLimits, now: Instant) -> Self {
        Active {
            info: vacant_info(),
            started: now,
            limits,
            inbuf: Vec::new(),
            req: RequestDecoder::new(limits.codec, false),
            down_out: Vec::new(),
            down_pos: 0,
            down_lent: 0,
            idle_since: now,
            head_started: None,
            stage: Stage::Idle,
            req_done: false,
            keep_alive: true,
            client_close: false,
            client_http10: false,
            method: Method::Get,
            head_request: false,
            expect_continue: false,
            upgrade: false,
            requests: 0,
            req_started: now,
            status: 0,
            route: None,
            resp_started: false,
            close_delimited: false,
            up_state: UpState::None,
            up_key: None,
            up_active: None,
            up_spec: None,
            up_reused: false,
            up_out: Vec::new(),
            up_pos: 0,
            up_in: Vec::new(),
            resp: None,
            resp_store: Headers::default(),
            replay: Vec::new(),
            replayable: false,
            replays: 0,
            up_started: now,
            up_deadline: None,
            actions: VecDeque::with_capacity(4),
            closed: false,
            close_counted: false,
            down_eof: false,
            draining: false,
            drain_idle_by: None,
            park_at: None,
            log: RequestLog::new(std::net::SocketAddr::from(([0, 0, 0, 0], 0)), now),
            ex: ExchangeState::default(),
            held: None,
            wait_until: None,
        }
    }

    fn create(cx: &mut WorkerCx, info: ConnInfo, now: Instant) -> Self {
        let limits = cx.views.latest().snapshot.limits;
        cx.metrics.connection_opened();
        let mut conn = Active::blank(limits, now);
        conn.log = RequestLog::new(info.peer, now);
        conn.info = info;
        if cx.draining {
            conn.start_drain(now);
        }
        conn
    }

    fn on_downstream_data(&mut self, cx: &mut WorkerCx, data: &[u8], now: Instant) {
        self.do_on_downstream_data(cx, data, now);
        self.settle(cx);
    }

    fn on_downstream_eof(&mut self, cx: &mut WorkerCx, now: Instant) {
        self.do_on_downstream_eof(cx, now);
        self.settle(cx);
    }

    fn on_downstream_error(&mut self, cx: &mut WorkerCx, now: Instant) {
        self.do_on_downstream_error(cx, now);
        self.settle(cx);
    }

    fn on_upstream_connected(&mut self, cx: &mut WorkerCx, reused: bool, now: Instant) {
        self.do_on_upstream_connected(cx, reused, now);
        self.settle(cx);
    }

    fn on_upstream_data(&mut self, cx: &mut WorkerCx, data: &[u8], now: Instant) {
        self.do_on_upstream_data(cx, data, now);
        self.settle(cx);
    }

    fn on_upstream_eof(&mut self, cx: &mut WorkerCx, now: Instant) {
        self.do_on_upstream_eof(cx, now);
        self.settle(cx);
    }

    fn on_upstream_error(&mut self, cx: &mut WorkerCx, err: UpstreamError, now: Instant) {
        self.do_on_upstream_error(cx, err, now);
        self.settle(cx);
    }

    fn on_timer(&mut self, cx: &mut WorkerCx, now: Instant) {
        self.do_on_timer(cx, now);
        self.settle(cx);
    }

    fn downstream_out(&self) -> &[u8] {
        self.down_out.get(self.down_pos..).unwrap_or_default()
    }

    fn lend_downstream_out(&mut self, buf: &mut Vec<u8>) -> bool {
        // Small writes are cheaper to copy than to swap buffers for.
        if self.down_lent > 0
            || self.down_pos > 0
            || self.down_out.len() < LEND_MIN
            || self.down_out.len() > u32::MAX as usize
            || !buf.is_empty()
        {
            return false;
        }
        std::mem::swap(&mut self.down_out, buf);
        self.down_lent = buf.len();
        true
    }

    fn downstream_written(&mut self, cx: &mut WorkerCx, n: usize, now: Instant) {
        self.do_downstream_written(cx, n, now);
        self.settle(cx);
    }

    fn upstream_out(&self) -> &[u8] {
        if self.up_state == UpState::Connected {
            self.up_out.get(self.up_pos..).unwrap_or_default()
        } else {
            &[]
        }
    }

    fn upstream_written(&mut self, cx: &mut WorkerCx, n: usize, now: Instant) {
        self.do_upstream_written(cx, n, now);
        self.settle(cx);
    }

    fn poll_action(&mut self) -> Option<Action> {
        let mut action = self.actions.pop_front()?;
        if let Action::CloseDownstream { linger, .. } = &mut action {
            *linger = !self.client_done();
        }
        Some(action)
    }

    fn interest(&self) -> Interest {
        if self.closed {
            return Interest::default();
        }
        let down_room = self.pending_down() < OUT_HIGH_WATER;
        Interest {
            downstream_read: !self.down_eof
                && down_room
                && self.pending_up() < OUT_HIGH_WATER
                && self.inbuf.len() < self.limits.codec.max_head + IN_SLACK,
            upstream_read: self.up_state == UpState::Connected
                && down_room
                && self.up_in.len() < OUT_HIGH_WATER,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let down = match self.stage {
            Stage::Idle => Some(match (self.head_started, self.park_at) {
                (Some(t), _) => t + self.limits.header_read_timeout,
                (None, Some(park)) => self.idle_deadline().min(park),
                (None, None) => self.idle_deadline(),
            }),
            Stage::Waiting => self.wait_until,
            _ => None,
        };
        match (down, self.up_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn is_closed(&self) -> bool {
        self.closed
    }

    fn on_drain(&mut self, cx: &mut WorkerCx, now: Instant) {
        self.start_drain(now);
        self.settle(cx);
    }
}

/// Most idle-connection states a worker keeps for reuse; beyond this they are freed.
const SPARE_MAX: usize = 32;
/// A buffer larger than this is freed rather than kept with a spare state (a large body
/// grew it; the next exchange most likely needs far less).
const SPARE_BUF_MAX: usize = 128 * 1024;

/// What an idle keep-alive connection keeps of its [`Active`] state: no buffers, no decoder,
/// no upstream — only what the next exchange needs from the previous ones.
struct Parked {
    info: ConnInfo,
    /// Shared by the worker's parked connections with the same limits (see
    /// [`WorkerCx::shared_limits`]).
    limits: Arc<ConnLimits>,
    started: Instant,
    idle_since: Since,
    req_started: Since,
    drain_idle_by: Option<Since>,
    requests: u64,
    route: Option<RouteMetricId>,
    status: u16,
    method: Method,
    client_http10: bool,
    head_request: bool,
    expect_continue: bool,
    upgrade: bool,
    draining: bool,
}

impl Parked {
    fn idle_deadline(&self) -> Instant {
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
struct Since(std::num::NonZeroU64);

impl Since {
    /// `t` relative to `base` (a `t` before `base` counts as `base`).
    fn of(t: Instant, base: Instant) -> Since {
        let nanos = u64::try_from(t.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX);
        Since(std::num::NonZeroU64::MIN.saturating_add(nanos))
    }

    /// The time again, given the same `base`.
    fn at(self, base: Instant) -> Instant {
        let nanos = self.0.get() - 1;
        base.checked_add(Duration::from_nanos(nanos))
            .unwrap_or(base)
    }
}

/// A placeholder `ConnInfo` left behind in a spare state (allocates nothing).
fn vacant_info() -> ConnInfo {
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
    fn parkable(&self) -> bool {
        !self.closed
            && self.stage == Stage::Idle
            && self.held.is_none()
            && self.keep_alive
            && !self.down_eof
            && !self.req_done
            && !self.resp_started
            && self.head_started.is_none()
            && self.inbuf.is_empty()
            && self.down_out.is_empty()
            && self.down_lent == 0
            && self.up_out.is_empty()
            && self.up_in.is_empty()
            && self.up_state == UpState::None
            && self.up_active.is_none()
            && self.up_deadline.is_none()
            && self.resp.is_none()
            && self.actions.is_empty()
            && self.req.is_idle(&[])
    }

    /// Moves the per-connection part out, leaving a spare state for another connection.
    fn park(&mut self, limits: Arc<ConnLimits>) -> Parked {
        let shrink = |b: &mut Vec<u8>| {
            b.clear();
            if b.capacity() > SPARE_BUF_MAX {
                *b = Vec::new();
            }
        };
        shrink(&mut self.replay);
        shrink(&mut self.inbuf);
        shrink(&mut self.down_out);
        shrink(&mut self.up_out);
        shrink(&mut self.up_in);
        self.down_pos = 0;
        self.up_pos = 0;
        // The access-log record stays here with the spare state: it holds nothing between
        // requests, and an idle connection would otherwise keep its ~700 bytes.
        Parked {
            info: std::mem::replace(&mut self.info, vacant_info()),
            limits,
            started: self.started,
            idle_since: Since::of(self.idle_since, self.started),
            req_started: Since::of(self.req_started, self.started),
            drain_idle_by: self.drain_idle_by.map(|t| Since::of(t, self.started)),
            requests: self.requests,
            route: self.route,
            status: self.status,
            method: self.method,
            client_http10: self.client_http10,
            head_request: self.head_request,
            expect_continue: self.expect_continue,
            upgrade: self.upgrade,
            draining: self.draining,
        }
    }

    /// Takes a parked connection back into this (spare) state: the exact state it had when it
    /// parked, except for storage capacities.
    fn unpark(&mut self, p: Parked) {
        if p.limits.codec != self.limits.codec || !self.req.is_idle(&[]) {
            self.req = RequestDecoder::new(p.limits.codec, false);
        }
        self.log.rebind(p.info.peer);
        self.info = p.info;
        self.started = p.started;
        self.limits = *p.limits;
        self.idle_since = p.idle_since.at(p.started);
        self.head_started = None;
        self.stage = Stage::Idle;
        self.req_done = false;
        self.keep_alive = true;
        self.client_close = false;
        self.client_http10 = p.client_http10;
        self.method = p.method;
        self.head_request = p.head_request;
        self.expect_continue = p.expect_continue;
        self.upgrade = p.upgrade;
        self.requests = p.requests;
        self.req_started = p.req_started.at(p.started);
        self.status = p.status;
        self.route = p.route;
        self.resp_started = false;
        self.close_delimited = false;
        self.up_state = UpState::None;
        self.up_reused = false;
        self.replayable = false;
        self.replays = 0;
        self.up_deadline = None;
        self.closed = false;
        self.close_counted = false;
        self.down_eof = false;
        self.draining = p.draining;
        self.drain_idle_by = p.drain_idle_by.map(|t| t.at(p.started));
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

impl WorkerCx {
    /// A state for a connection about to become active (a spare one when there is one).
    fn take_spare(&mut self) -> Option<Box<Active>> {
        self.spare.pop()
    }

    fn give_spare(&mut self, a: Box<Active>) {
        if self.spare.len() < SPARE_MAX {
            self.spare.push(a);
        }
    }

    /// The limits parked connections refer to: one shared copy per distinct value (they only
    /// change with a reload), so an idle connection keeps a pointer instead of its own copy.
    fn shared_limits(&mut self, limits: &ConnLimits) -> Arc<ConnLimits> {
        match &self.parked_limits {
            Some(l) if **l == *limits => Arc::clone(l),
            _ => {
                let l = Arc::new(*limits);
                self.parked_limits = Some(Arc::clone(&l));
                l
            }
        }
    }

    /// Connection states kept for reuse by this worker (at most a small fixed number).
    pub fn spare_states(&self) -> usize {
        self.spare.len()
    }
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
            a.park_at = Some(now);
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
            a.park_at = None;
            return;
        }
        let at = match a.park_at {
            Some(t) => t,
            None if a.requests < GRACE_AFTER => now,
            None => *a.park_at.insert(now + IDLE_GRACE),
        };
        if now < at {
            return;
        }
        let limits = cx.shared_limits(&a.limits);
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
                method: Method::Get,
                client_http10: false,
                head_request: false,
                expect_continue: false,
                upgrade: false,
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

/// `addr` as a Host value (`ip:port`, `[ipv6]:port`) written into `buf`, without allocating.
fn endpoint_authority(buf: &mut [u8; 64], addr: std::net::SocketAddr) -> Option<&[u8]> {
    use std::io::Write as _;
    let mut rest = &mut buf[..];
    write!(rest, "{addr}").ok()?;
    let n = 64 - rest.len();
    buf.get(..n)
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
