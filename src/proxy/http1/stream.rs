//! Connection-level state machines. [`RequestDecoder`] turns the downstream byte stream into
//! request events (pipelining, bodies, upgrades, limits); [`ResponseDecoder`] does the same for
//! one upstream response. Both read from the front of a caller-owned buffer and say how many
//! bytes they consumed; body data is returned as ranges of that buffer (no copy).

use std::ops::Range;

use super::Limits;
use super::body::BodyDecoder;
use super::error::{ErrorKind, Http1Error};
use super::framing::{self, ResponseFraming};
use super::head::{Headers, Method, RequestHead, ResponseHead};
use super::parse::{HeadScanner, Scan, build_request, build_response};

/// One thing that happened on the downstream stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestEvent {
    /// A request head was parsed; its body (if any) follows as `Body` events.
    Head(RequestHead),
    /// Body data: `input[range]` of the buffer passed to this call.
    Body(Range<usize>),
    /// The request (and its body) is complete; the next call parses the next request.
    End,
    /// The request is complete and asked for an upgrade. The decoder pauses (returns
    /// [`RequestEvent::Paused`]) until [`RequestDecoder::resume`]: if the upstream answers 101
    /// the remaining bytes belong to the tunnel, otherwise the core resumes HTTP parsing.
    UpgradeRequested,
    /// Every byte given was used (or is held for an incomplete head): feed more.
    NeedMore,
    /// Waiting for the core's decision on an upgrade; nothing consumed.
    Paused,
    /// The last request said `Connection: close` (or was HTTP/1.0 without keep-alive): no
    /// further request is read on this connection; any further bytes are ignored.
    Closed,
}

/// An event and the bytes of the input it used up (remove them from the buffer's front after
/// handling the event; a `Body` range refers to the input before removal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<E> {
    /// Bytes consumed from the front of the input.
    pub consumed: usize,
    /// What happened.
    pub event: E,
}

#[derive(Debug, Clone)]
enum ReqState {
    Head(HeadScanner),
    Body(BodyDecoder),
    Paused,
    Closed,
    Failed(Http1Error),
}

/// Downstream request stream decoder.
#[derive(Debug, Clone)]
pub struct RequestDecoder {
    limits: Limits,
    keep_trailers: bool,
    state: ReqState,
    keep_alive: bool,
    upgrade: bool,
    trailers: Option<Headers>,
    /// Storage of a head the caller gave back, reused for the next head.
    spare: Headers,
}

impl RequestDecoder {
    /// A decoder at the start of a connection. Trailers of chunked request bodies are kept
    /// when `keep_trailers` (read them with [`RequestDecoder::take_trailers`] after `End`).
    pub fn new(limits: Limits, keep_trailers: bool) -> Self {
        RequestDecoder {
            limits,
            keep_trailers,
            state: ReqState::Head(HeadScanner::default()),
            keep_alive: true,
            upgrade: false,
            trailers: None,
            spare: Headers::default(),
        }
    }

    /// Takes back a head this decoder produced once the caller is done with it, so the next
    /// head is parsed into the same two allocations instead of new ones.
    pub fn recycle(&mut self, head: RequestHead) {
        self.spare = head.into_headers();
    }

    /// Decodes from the front of `input` (the connection's unconsumed bytes: what was left
    /// last time, plus new bytes). Call again after removing `consumed` bytes until
    /// `NeedMore`, `Paused` or `Closed`. After an error the connection must be answered (see
    /// [`Http1Error::status`]) and closed; the error repeats on further calls.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded<RequestEvent>, Http1Error> {
        let result = self.step(input);
        if let Err(e) = &result {
            self.state = ReqState::Failed(e.clone());
        }
        result
    }

    fn step(&mut self, input: &[u8]) -> Result<Decoded<RequestEvent>, Http1Error> {
        match &mut self.state {
            ReqState::Failed(e) => Err(e.clone()),
            ReqState::Closed => Ok(Decoded {
                consumed: 0,
                event: RequestEvent::Closed,
            }),
            ReqState::Paused => Ok(Decoded {
                consumed: 0,
                event: RequestEvent::Paused,
            }),
            ReqState::Head(scanner) => match scanner.scan(input, &self.limits, true)? {
                Scan::Partial => Ok(Decoded {
                    consumed: 0,
                    event: RequestEvent::NeedMore,
                }),
                Scan::Complete { start, end } => {
                    let bytes = input.get(start..end).unwrap_or_default();
                    let store = std::mem::take(&mut self.spare).refill(bytes);
                    let head = build_request(store, &self.limits)?;
                    self.keep_alive = head.keep_alive();
                    self.upgrade = head.upgrade_requested();
                    self.trailers = None;
                    self.state = ReqState::Body(BodyDecoder::new(
                        head.body_kind(),
                        &self.limits,
                        self.keep_trailers,
                    )?);
                    Ok(Decoded {
                        consumed: end,
                        event: RequestEvent::Head(head),
                    })
                }
            },
            ReqState::Body(body) => {
                let step = body.decode(input)?;
                if !step.data.is_empty() {
                    return Ok(Decoded {
                        consumed: step.consumed,
                        event: RequestEvent::Body(step.data),
                    });
                }
                if !step.done {
                    return Ok(Decoded {
                        consumed: step.consumed,
                        event: RequestEvent::NeedMore,
                    });
                }
                self.trailers = body.take_trailers();
                let event = if self.upgrade {
                    self.state = ReqState::Paused;
                    RequestEvent::UpgradeRequested
                } else {
                    self.state = self.after_request();
                    RequestEvent::End
                };
                Ok(Decoded {
                    consumed: step.consumed,
                    event,
                })
            }
        }
    }

    fn after_request(&self) -> ReqState {
        if self.keep_alive {
            ReqState::Head(HeadScanner::default())
        } else {
            ReqState::Closed
        }
    }

    /// The upstream declined an upgrade (no 101): read the next request as usual.
    pub fn resume(&mut self) {
        if matches!(self.state, ReqState::Paused) {
            self.upgrade = false;
            self.state = self.after_request();
        }
    }

    /// Stop reading requests (the core decided to close after the current response, e.g.
    /// max requests per connection or drain).
    pub fn close(&mut self) {
        if !matches!(self.state, ReqState::Failed(_)) {
            self.state = ReqState::Closed;
        }
    }

    /// Trailers of the last chunked request body (when kept), after `End`.
    pub fn take_trailers(&mut self) -> Option<Headers> {
        self.trailers.take()
    }

    /// True between requests with nothing of the next one received: a close here is clean
    /// (idle keep-alive timeout applies rather than the header-read timeout).
    pub fn is_idle(&self, buffered: &[u8]) -> bool {
        matches!(self.state, ReqState::Head(_)) && only_line_ends(buffered)
    }

    /// The client closed its side with `buffered` bytes unconsumed: `Ok` for a clean close
    /// between requests (or after `Closed`/`Paused`), an error inside a head or a body.
    pub fn finish_eof(&mut self, buffered: &[u8]) -> Result<(), Http1Error> {
        match &mut self.state {
            ReqState::Head(_) if only_line_ends(buffered) => Ok(()),
            ReqState::Head(_) => Err(ErrorKind::IncompleteHead.into()),
            ReqState::Body(b) => b.finish_eof(),
            ReqState::Paused | ReqState::Closed => Ok(()),
            ReqState::Failed(e) => Err(e.clone()),
        }
    }
}

/// Only CR/LF bytes: the empty lines allowed between requests.
fn only_line_ends(buffered: &[u8]) -> bool {
    buffered.iter().all(|&b| b == b'\r' || b == b'\n')
}

/// One thing that happened on an upstream response stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseEvent {
    /// A 1xx head other than 101 (e.g. 100 Continue, 103 Early Hints); the final head follows.
    Informational(ResponseHead),
    /// The final response head and its framing.
    Head(ResponseHead, ResponseFraming),
    /// Body data: `input[range]`.
    Body(Range<usize>),
    /// The response is complete; `keep_alive` says whether the upstream connection may be
    /// pooled.
    End {
        /// The connection may be reused.
        keep_alive: bool,
    },
    /// The response was 101 to an upgrade (or 2xx to CONNECT): the rest of the stream is the
    /// tunnel's; the decoder is done.
    Tunnel,
    /// Feed more bytes.
    NeedMore,
    /// Already ended; nothing consumed.
    Done,
}

#[derive(Debug, Clone)]
enum RespState {
    Head(HeadScanner),
    Body(BodyDecoder, bool),
    Done,
    Failed(Http1Error),
}

/// Decoder of one upstream response (reset it for the next request on a pooled connection).
#[derive(Debug, Clone)]
pub struct ResponseDecoder {
    limits: Limits,
    method: Method,
    upgrade_requested: bool,
    state: RespState,
    /// Storage of a head the caller gave back, reused for the next head.
    spare: Headers,
}

impl ResponseDecoder {
    /// A decoder for the response to a request with `method`, which did (or not) ask for an
    /// upgrade. `limits.max_body` applies to the response body (pass `None` for no limit).
    pub fn new(limits: Limits, method: Method, upgrade_requested: bool) -> Self {
        ResponseDecoder {
            limits,
            method,
            upgrade_requested,
            state: RespState::Head(HeadScanner::default()),
            spare: Headers::default(),
        }
    }

    /// Like [`ResponseDecoder::new`], parsing the head into `store` (a head's storage given
    /// back with [`ResponseHead::into_headers`]) instead of new allocations.
    pub fn with_storage(
        limits: Limits,
        method: Method,
        upgrade_requested: bool,
        store: Headers,
    ) -> Self {
        ResponseDecoder {
            spare: store,
            ..Self::new(limits, method, upgrade_requested)
        }
    }

    /// Takes back a head this decoder produced (an interim 1xx head, before the final one).
    pub fn recycle(&mut self, head: ResponseHead) {
        self.spare = head.into_headers();
    }

    /// Decodes from the front of `input`, like [`RequestDecoder::decode`]. Errors mean a bad
    /// upstream response (answer 502, do not pool the connection).
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded<ResponseEvent>, Http1Error> {
        let result = self.step(input);
        if let Err(e) = &result {
            self.state = RespState::Failed(e.clone());
        }
        result
    }

    fn step(&mut self, input: &[u8]) -> Result<Decoded<ResponseEvent>, Http1Error> {
        match &mut self.state {
            RespState::Failed(e) => Err(e.clone()),
            RespState::Done => Ok(Decoded {
                consumed: 0,
                event: ResponseEvent::Done,
            }),
            RespState::Head(scanner) => match scanner.scan(input, &self.limits, false)? {
                Scan::Partial => Ok(Decoded {
                    consumed: 0,
                    event: ResponseEvent::NeedMore,
                }),
                Scan::Complete { start, end } => {
                    let bytes = input.get(start..end).unwrap_or_default();
                    let store = std::mem::take(&mut self.spare).refill(bytes);
                    let head = build_response(store)?;
                    let framing =
                        framing::response_framing(&head, self.method, self.upgrade_requested)?;
                    let event = if framing.informational {
                        self.state = RespState::Head(HeadScanner::default());
                        ResponseEvent::Informational(head)
                    } else if framing.tunnel {
                        self.state = RespState::Done;
                        ResponseEvent::Head(head, framing)
                    } else {
                        self.state = RespState::Body(
                            BodyDecoder::new(framing.body, &self.limits, true)?,
                            framing.keep_alive,
                        );
                        ResponseEvent::Head(head, framing)
                    };
                    Ok(Decoded {
                        consumed: end,
                        event,
                    })
                }
            },
            RespState::Body(body, keep_alive) => {
                let keep_alive = *keep_alive;
                let step = body.decode(input)?;
                if !step.data.is_empty() {
                    return Ok(Decoded {
                        consumed: step.consumed,
                        event: ResponseEvent::Body(step.data),
                    });
                }
                if !step.done {
                    return Ok(Decoded {
                        consumed: step.consumed,
                        event: ResponseEvent::NeedMore,
                    });
                }
                self.state = RespState::Done;
                Ok(Decoded {
                    consumed: step.consumed,
                    event: ResponseEvent::End { keep_alive },
                })
            }
        }
    }

    /// The upstream closed: completes a read-until-close body (then the next `decode` gives
    /// `End { keep_alive: false }`); an error inside a head or another body.
    pub fn finish_eof(&mut self) -> Result<(), Http1Error> {
        match &mut self.state {
            RespState::Body(b, _) => b.finish_eof(),
            RespState::Done => Ok(()),
            RespState::Head(_) => Err(ErrorKind::IncompleteHead.into()),
            RespState::Failed(e) => Err(e.clone()),
        }
    }

    /// The response's body kind is known and complete (`End` was returned).
    pub fn is_done(&self) -> bool {
        matches!(self.state, RespState::Done)
    }
}
