//! The upstream leg: the connection to the chosen endpoint while one is attached — its pool key
//! and spec, the request bytes queued for it (and the copy kept for a replay), the response
//! decoder, its deadline — and the logic that forwards a request, decodes the response into
//! the client's buffer and handles a failed attempt through the retry rule of
//! [`crate::proxy::exchange::retry`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::ErrorReason;
use crate::proxy::exchange::retry;
use crate::proxy::http1::{
    self, BodyKind, ClientInfo, ConnectionHeader, DownstreamResponse, Headers, OutFraming,
    RequestHead, ResponseDecoder, ResponseEvent, TraceBits, UpstreamRequest,
};
use crate::proxy::io::{Action, PoolKey, UpstreamError};

use super::cx::WorkerCx;
use super::snapshot::UpstreamSpec;
use super::{Active, OUT_HIGH_WATER, REPLAY_LIMIT, Stage, UpState};

/// The upstream side of the exchange.
pub(super) struct UpLeg {
    pub(super) state: UpState,
    pub(super) key: Option<PoolKey>,
    /// The endpoint's active-connection gauge while an upstream connection is attached.
    pub(super) active: Option<Arc<crate::metrics::pool::EndpointCell>>,
    pub(super) spec: Option<Arc<UpstreamSpec>>,
    pub(super) reused: bool,
    pub(super) out: Vec<u8>,
    pub(super) pos: usize,
    pub(super) input: Vec<u8>,
    pub(super) resp: Option<ResponseDecoder>,
    /// Storage of the last response head, handed to the next response decoder so response
    /// heads reuse one pair of allocations per connection.
    pub(super) resp_store: Headers,
    /// Everything sent upstream for the current request while it may still be replayed
    /// (`replayable`); the buffer is reused across requests.
    pub(super) replay: Vec<u8>,
    pub(super) replayable: bool,
    pub(super) replays: u8,
    pub(super) started: Instant,
    pub(super) deadline: Option<Instant>,
}

impl UpLeg {
    pub(super) fn new(now: Instant) -> Self {
        UpLeg {
            state: UpState::None,
            key: None,
            active: None,
            spec: None,
            reused: false,
            out: Vec::new(),
            pos: 0,
            input: Vec::new(),
            resp: None,
            resp_store: Headers::default(),
            replay: Vec::new(),
            replayable: false,
            replays: 0,
            started: now,
            deadline: None,
        }
    }
}

impl Active {
    pub(super) fn pending_up(&self) -> usize {
        self.up.out.len() - self.up.pos
    }

    /// Keeps a copy of bytes queued for the upstream while the request may still be replayed.
    pub(super) fn keep_for_replay(replay: &mut Vec<u8>, replayable: &mut bool, bytes: &[u8]) {
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

    pub(super) fn release_upstream(&mut self, reusable: bool) {
        if self.up.state != UpState::None {
            self.life
                .actions
                .push_back(Action::ReleaseUpstream { reusable });
            self.up.state = UpState::None;
        }
        if let Some(cell) = self.up.active.take() {
            cell.add_active(-1);
        }
        self.up.deadline = None;
    }

    pub(super) fn start_proxy(
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
        self.cur.stage = Stage::Proxy;
        self.up.key = Some(PoolKey {
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
            tunnel: self.cur.facts.upgrade,
            host,
            client: Some(ClientInfo {
                addr: self.id.info.peer.ip(),
                trusted: false,
                proto: if self.id.info.tls { "https" } else { "http" },
                port: self.id.info.local.port(),
            }),
            request_id: Some(request_id),
            trace: Some(trace),
            ..UpstreamRequest::default()
        };
        self.up.out.clear();
        self.up.pos = 0;
        self.up.input.clear();
        self.up.replay.clear();
        self.up.replayable = true;
        self.up.replays = 0;
        let ids = http1::write_request_head(&mut self.up.out, head, &opts);
        let field = |r: Option<std::ops::Range<usize>>| r.and_then(|r| self.up.out.get(r));
        self.cur.log.proxied(
            endpoint,
            field(ids.request_id).unwrap_or_default(),
            field(ids.traceparent).unwrap_or_default(),
        );
        Self::keep_for_replay(&mut self.up.replay, &mut self.up.replayable, &self.up.out);
        let decoder = self.response_decoder();
        self.up.resp = Some(decoder);
        if self.cur.facts.expect_continue {
            self.down.out.extend_from_slice(http1::CONTINUE_100);
        }
        self.up.spec = Some(spec);
        self.connect(now);
    }

    pub(super) fn response_decoder(&mut self) -> ResponseDecoder {
        let limits = http1::Limits {
            max_body: None,
            ..self.id.limits.codec
        };
        let store = std::mem::take(&mut self.up.resp_store);
        ResponseDecoder::with_storage(limits, self.cur.facts.method, self.cur.facts.upgrade, store)
    }

    pub(super) fn connect(&mut self, now: Instant) {
        let (Some(key), Some(spec)) = (self.up.key.clone(), self.up.spec.as_ref()) else {
            return;
        };
        self.life.actions.push_back(Action::ConnectUpstream {
            key,
            limits: spec.pool,
        });
        self.up.state = UpState::Connecting;
        self.up.reused = false;
        self.up.started = now;
        self.cur.log.attempt(now, self.up.replays);
        self.up.deadline = None;
    }

    /// The upstream deadline: `send_timeout` while request bytes wait to be written,
    /// `read_timeout` while waiting for the response.
    pub(super) fn arm_upstream(&mut self, now: Instant) {
        let timeout = if self.pending_up() > 0 {
            self.up
                .spec
                .as_ref()
                .map_or(Duration::from_secs(60), |s| s.send_timeout)
        } else {
            self.read_timeout()
        };
        self.up.deadline = Some(now + timeout);
    }

    pub(super) fn read_timeout(&self) -> Duration {
        self.up
            .spec
            .as_ref()
            .map_or(Duration::from_secs(60), |s| s.read_timeout)
    }

    /// The upstream failed before or while answering.
    pub(super) fn upstream_failed(&mut self, cx: &mut WorkerCx, err: UpstreamError, now: Instant) {
        let was_reused = self.up.reused;
        self.release_upstream(false);
        if self.cur.stage == Stage::Tunnel {
            self.close(true);
            return;
        }
        if self.cur.stage != Stage::Proxy {
            return;
        }
        let attempt = retry::Attempt {
            error: err,
            reused: was_reused,
            replayable: self.up.replayable,
            replays: self.up.replays,
            response_started: self.cur.resp_started,
        };
        match retry::after_failure(&attempt) {
            retry::AfterFailure::Retry => {
                // A pooled connection the peer had closed: replay on a fresh one.
                self.up.replays += 1;
                self.up.out.clear();
                self.up.out.extend_from_slice(&self.up.replay);
                self.up.pos = 0;
                self.up.input.clear();
                let decoder = self.response_decoder();
                self.up.resp = Some(decoder);
                self.connect(now);
            }
            retry::AfterFailure::Respond { status, reason } => {
                self.up.resp = None;
                self.respond_error(cx, status, reason, now);
            }
            retry::AfterFailure::Abort { reason } => {
                // The response is cut short: the client must see the truncation, not a
                // complete answer.
                cx.metrics.error(reason);
                self.cur.log.error(reason);
                self.record(cx, now);
                self.close(true);
            }
        }
    }

    /// Runs the response decoder over buffered upstream input.
    pub(super) fn process_upstream(&mut self, cx: &mut WorkerCx, now: Instant) {
        // Moved out for the decoding run (nothing it calls touches `up_in`) and put back.
        let input = std::mem::take(&mut self.up.input);
        let used = self.decode_upstream(cx, now, &input);
        self.up.input = input;
        match used {
            Some(n) if n > 0 => {
                let n = n.min(self.up.input.len());
                self.up.input.drain(..n);
            }
            Some(_) => {}
            None => self.up.input.clear(),
        }
        self.after_upstream(cx, now);
    }

    /// Upstream bytes handed over by the driver: decoded straight from `data` when nothing is
    /// buffered (a body chunk is then copied once, into `down_out`); only what the decoder
    /// left over is kept in `up_in`.
    pub(super) fn take_upstream(&mut self, cx: &mut WorkerCx, data: &[u8], now: Instant) {
        if !self.up.input.is_empty() {
            self.up.input.extend_from_slice(data);
            self.process_upstream(cx, now);
            return;
        }
        if let Some(n) = self.decode_upstream(cx, now, data)
            && let Some(rest) = data.get(n..)
        {
            self.up.input.extend_from_slice(rest);
        }
        self.after_upstream(cx, now);
    }

    /// After a decoding run: an exchange that ended makes room for the next request.
    pub(super) fn after_upstream(&mut self, cx: &mut WorkerCx, now: Instant) {
        if self.cur.stage == Stage::Idle {
            self.up.input.clear();
            self.process_downstream(cx, now);
        }
    }

    /// Decodes `input` (the buffered upstream bytes); returns how many bytes were used, or
    /// `None` when the rest is to be dropped (the response failed).
    pub(super) fn decode_upstream(
        &mut self,
        cx: &mut WorkerCx,
        now: Instant,
        input: &[u8],
    ) -> Option<usize> {
        let mut pos = 0;
        while !self.life.closed {
            if self.cur.stage == Stage::Tunnel {
                if pos < input.len() {
                    self.down
                        .out
                        .extend_from_slice(input.get(pos..).unwrap_or_default());
                    pos = input.len();
                }
                break;
            }
            if self.cur.stage != Stage::Proxy || self.pending_down() > OUT_HIGH_WATER {
                break;
            }
            let Some(resp) = self.up.resp.as_mut() else {
                break;
            };
            let rest = input.get(pos..).unwrap_or_default();
            let decoded = match resp.decode(rest) {
                Ok(d) => d,
                Err(_) => {
                    if self.cur.resp_started {
                        cx.metrics.error(ErrorReason::UpstreamInvalidResponse);
                        self.cur.log.error(ErrorReason::UpstreamInvalidResponse);
                        self.record(cx, now);
                        self.close(true);
                    } else {
                        self.up.resp = None;
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
                            &mut self.down.out,
                            &head,
                            &DownstreamResponse {
                                framing: OutFraming::Omit,
                                connection: ConnectionHeader::Omit,
                                extra_headers: &[],
                            },
                        );
                    }
                    if let Some(r) = self.up.resp.as_mut() {
                        r.recycle(head);
                    }
                    pos = raw_end;
                }
                ResponseEvent::Head(head, framing) => {
                    pos = raw_end;
                    self.up.replayable = false;
                    self.cur.status = head.status();
                    self.cur.resp_started = true;
                    if framing.tunnel {
                        http1::write_response_head(
                            &mut self.down.out,
                            &head,
                            &DownstreamResponse {
                                framing: OutFraming::Omit,
                                connection: ConnectionHeader::Upgrade,
                                extra_headers: &[],
                            },
                        );
                        self.cur.stage = Stage::Tunnel;
                        self.up.deadline = None;
                        self.record(cx, now);
                        self.up.resp_store = head.into_headers();
                        continue;
                    }
                    let until_close = framing.body == BodyKind::UntilClose;
                    self.cur.close_delimited = until_close;
                    let close = until_close || self.must_close_after(now);
                    if close {
                        self.cur.keep_alive = false;
                    }
                    let connection = self.connection_header(close);
                    http1::write_response_head(
                        &mut self.down.out,
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
                    self.up.resp_store = head.into_headers();
                }
                ResponseEvent::Body(_) => {
                    let raw = input.get(pos..raw_end).unwrap_or_default();
                    self.down.out.extend_from_slice(raw);
                    pos = raw_end;
                }
                ResponseEvent::End { keep_alive } => {
                    let raw = input.get(pos..raw_end).unwrap_or_default();
                    self.down.out.extend_from_slice(raw);
                    pos = raw_end;
                    let clean = self.cur.req_done && self.pending_up() == 0 && pos == input.len();
                    // A connection to an endpoint that left the table is not pooled.
                    let current = self.up.key.as_ref().is_some_and(|k| cx.endpoint_current(k));
                    self.release_upstream(keep_alive && clean && current);
                    self.up.resp = None;
                    cx.metrics
                        .observe_upstream_duration(now.saturating_duration_since(self.up.started));
                    if !self.cur.req_done {
                        // Answered before the request body ended: stop here.
                        self.cur.keep_alive = false;
                    }
                    self.finish_exchange(cx, now);
                    if self.cur.stage == Stage::Idle {
                        self.down.req.resume();
                    }
                    break;
                }
                ResponseEvent::Tunnel | ResponseEvent::Done => break,
                ResponseEvent::NeedMore => {
                    // Framing bytes of a body cut short by the read (part of a chunk-size
                    // line, a CRLF): relayed verbatim like the data around them.
                    let raw = input.get(pos..raw_end).unwrap_or_default();
                    self.down.out.extend_from_slice(raw);
                    pos = raw_end;
                    break;
                }
            }
        }
        Some(pos)
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
