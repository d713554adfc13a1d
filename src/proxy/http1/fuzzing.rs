//! Fuzz entry points (also run by the unit tests over a seed corpus and pseudo-random
//! mutations). Each must never panic on any input; it panics only when an invariant of the
//! codec is broken, which is what the fuzzer reports.

use super::syntax::trim_ows;
use super::{
    BodyDecoder, BodyKind, ChunkedEncoder, ErrorKind, Headers, Limits, Method, RequestDecoder,
    RequestEvent, RequestHead, ResponseDecoder, ResponseEvent, ResponseFraming, ResponseHead,
    UpstreamRequest, parse_request_head, write_request_head,
};

/// Inputs longer than this are not also fed one byte at a time (keeps each run fast).
const BYTEWISE_MAX: usize = 2048;

/// What a request stream produced, with body data merged so splits compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestStep {
    /// A head.
    Head(Box<RequestHead>),
    /// Body bytes (consecutive `Body` events merged).
    Body(Vec<u8>),
    /// `End`.
    End,
    /// `UpgradeRequested` (the driver then resumes, as if the upstream declined).
    Upgrade,
    /// `Closed`.
    Closed,
    /// An error (the stream stops).
    Error(ErrorKind),
    /// The verdict of `finish_eof` after the last byte, and how many bytes were left.
    Eof(Option<ErrorKind>, usize),
}

/// Feeds `pieces` in order to a [`RequestDecoder`] the way a driver does (one buffer, consumed
/// bytes removed from the front) and records what happened. Panics if the decoder breaks its
/// contract (consumes more than given, a body range outside the consumed bytes, no progress).
pub fn drive_requests(limits: Limits, pieces: &[&[u8]]) -> Vec<RequestStep> {
    let mut dec = RequestDecoder::new(limits, true);
    let mut buf: Vec<u8> = Vec::new();
    let mut steps = Vec::new();
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    for piece in pieces {
        buf.extend_from_slice(piece);
        // Each iteration consumes bytes or moves the state machine on: bounded.
        let mut budget = 4 * total + 64;
        loop {
            budget -= 1;
            assert!(budget > 0, "request decoder makes no progress");
            let d = match dec.decode(&buf) {
                Ok(d) => d,
                Err(e) => {
                    assert_eq!(dec.decode(&buf).err(), Some(e.clone()), "error not sticky");
                    steps.push(RequestStep::Error(e.kind()));
                    return steps;
                }
            };
            assert!(d.consumed <= buf.len(), "consumed more than given");
            let mut stop = false;
            match d.event {
                RequestEvent::Head(h) => {
                    assert!(d.consumed > 0);
                    check_request_head(&h, &limits);
                    steps.push(RequestStep::Head(Box::new(h)));
                }
                RequestEvent::Body(r) => {
                    assert!(!r.is_empty() && r.end <= d.consumed, "body range {r:?}");
                    let data = buf.get(r).unwrap_or_default();
                    match steps.last_mut() {
                        Some(RequestStep::Body(v)) => v.extend_from_slice(data),
                        _ => steps.push(RequestStep::Body(data.to_vec())),
                    }
                }
                RequestEvent::End => steps.push(RequestStep::End),
                RequestEvent::UpgradeRequested => {
                    steps.push(RequestStep::Upgrade);
                    dec.resume();
                }
                RequestEvent::NeedMore => stop = true,
                RequestEvent::Paused => panic!("paused after resume"),
                RequestEvent::Closed => {
                    if steps.last() != Some(&RequestStep::Closed) {
                        steps.push(RequestStep::Closed);
                    }
                    stop = true;
                }
            }
            buf.drain(..d.consumed);
            if stop {
                break;
            }
        }
    }
    let eof = dec.finish_eof(&buf).err().map(|e| e.kind());
    steps.push(RequestStep::Eof(eof, buf.len()));
    steps
}

/// Invariants of an accepted request head: its serialization upstream parses back to the same
/// request (hop-by-hop headers aside), and httparse reads the same head.
fn check_request_head(h: &RequestHead, limits: &Limits) {
    assert!(h.raw().len() <= limits.max_head);
    assert!(h.headers().len() <= limits.max_headers);
    assert_ne!(h.method(), Method::Connect);

    let mut out = Vec::new();
    write_request_head(&mut out, h, &UpstreamRequest::default());
    let relaxed = Limits {
        max_head: usize::MAX,
        max_headers: usize::MAX,
        max_body: None,
    };
    let (again, used) = match parse_request_head(&out, &relaxed) {
        Ok(Some(x)) => x,
        other => panic!("re-serialized head refused: {other:?}\n{:?}", out),
    };
    assert_eq!(used, out.len());
    assert_eq!(again.method_str(), h.method_str());
    assert_eq!(again.path(), h.path());
    assert_eq!(again.body_kind(), h.body_kind());
    assert_eq!(
        again.host_header().unwrap_or(""),
        h.authority().unwrap_or("")
    );
    assert_eq!(end_to_end(again.headers()), end_to_end(h.headers()));

    // Differential check against httparse on exactly the head bytes.
    let mut slots = [httparse::EMPTY_HEADER; 128];
    if h.headers().len() <= slots.len() {
        let mut req = httparse::Request::new(&mut slots);
        match req.parse(h.raw()) {
            Ok(httparse::Status::Complete(n)) => assert_eq!(n, h.raw().len()),
            other => panic!("httparse disagrees: {other:?} on {:?}", h.raw()),
        }
        assert_eq!(req.method, Some(h.method_str()));
        assert_eq!(req.path, Some(h.target()));
        assert_eq!(req.headers.len(), h.headers().len());
        for (a, b) in req.headers.iter().zip(h.headers().iter()) {
            assert_eq!(a.name, b.name);
            assert_eq!(trim_ows(a.value), b.value);
        }
    }
}

/// Headers that survive forwarding, in order (names lowercased).
fn end_to_end(h: &Headers) -> Vec<(String, Vec<u8>)> {
    const DROPPED: &[&str] = &[
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "content-length",
        "upgrade",
        "expect",
    ];
    h.iter()
        .filter(|x| !DROPPED.iter().any(|d| x.name.eq_ignore_ascii_case(d)))
        .filter(|x| !h.has_token("connection", x.name))
        .map(|x| (x.name.to_ascii_lowercase(), x.value.to_vec()))
        .collect()
}

/// Ways to cut `data`: whole, two data-derived cuts, and (when short) byte by byte.
fn cuttings(data: &[u8]) -> Vec<Vec<&[u8]>> {
    let mut out = vec![vec![data]];
    let h = data.iter().fold(0x9e37_79b9u32, |acc, &b| {
        acc.rotate_left(5) ^ u32::from(b).wrapping_mul(0x0100_0193)
    });
    if !data.is_empty() {
        let a = (h as usize) % data.len();
        let b = ((h >> 16) as usize) % data.len();
        let (lo, hi) = (a.min(b), a.max(b));
        out.push(vec![&data[..lo], &data[lo..hi], &data[hi..]]);
    }
    if data.len() <= BYTEWISE_MAX {
        out.push(data.chunks(1).collect());
    }
    out
}

/// Limits picked by the first input byte, so small limits get exercised too.
fn limits_for(selector: u8) -> Limits {
    match selector % 4 {
        0 => Limits::default(),
        1 => Limits {
            max_head: 64,
            max_headers: 3,
            max_body: Some(16),
        },
        2 => Limits {
            max_head: 512,
            max_headers: 8,
            max_body: Some(0),
        },
        _ => Limits {
            max_head: 4096,
            max_headers: 100,
            max_body: Some(1 << 20),
        },
    }
}

/// Fuzz target: the downstream request stream. The first byte picks the limits; the rest is
/// the stream. Any split of the stream must give the same events.
pub fn request(data: &[u8]) {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };
    let limits = limits_for(sel);
    let mut reference: Option<Vec<RequestStep>> = None;
    for pieces in cuttings(stream) {
        let steps = drive_requests(limits, &pieces);
        for s in &steps {
            if let RequestStep::Error(k) = s {
                assert!(
                    matches!(k.status(), 400 | 405 | 413 | 417 | 431 | 501 | 505),
                    "{k:?}"
                );
            }
        }
        match &reference {
            None => reference = Some(steps),
            Some(r) => assert_eq!(r, &steps, "split changed the result"),
        }
    }
}

/// What a chunked body produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyOutcome {
    /// Data bytes.
    pub data: Vec<u8>,
    /// Bytes consumed in total.
    pub consumed: usize,
    /// Complete.
    pub done: bool,
    /// Error, if any.
    pub error: Option<ErrorKind>,
    /// Trailers, if kept and present.
    pub trailers: Option<Headers>,
}

/// Feeds `pieces` to a [`BodyDecoder`] of `kind`, driver-style, and records the outcome.
pub fn drive_body(kind: BodyKind, limits: Limits, pieces: &[&[u8]]) -> BodyOutcome {
    let mut out = BodyOutcome {
        data: Vec::new(),
        consumed: 0,
        done: false,
        error: None,
        trailers: None,
    };
    let mut dec = match BodyDecoder::new(kind, &limits, true) {
        Ok(d) => d,
        Err(e) => {
            out.error = Some(e.kind());
            return out;
        }
    };
    let mut buf: Vec<u8> = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        let mut budget = 2 * buf.len() + 8;
        loop {
            budget -= 1;
            assert!(budget > 0, "body decoder makes no progress");
            match dec.decode(&buf) {
                Ok(step) => {
                    assert!(step.consumed <= buf.len());
                    assert!(step.data.end <= step.consumed);
                    out.data
                        .extend_from_slice(buf.get(step.data.clone()).unwrap_or_default());
                    out.consumed += step.consumed;
                    buf.drain(..step.consumed);
                    if step.done {
                        out.done = true;
                        out.trailers = dec.take_trailers();
                        return out;
                    }
                    if step.consumed == 0 || buf.is_empty() {
                        break;
                    }
                }
                Err(e) => {
                    // How many bytes were consumed before the error depends on the split.
                    out.error = Some(e.kind());
                    out.consumed = 0;
                    return out;
                }
            }
        }
    }
    out
}

/// Fuzz target: a chunked body. Every split decodes the same; a complete body re-encoded with
/// [`ChunkedEncoder`] (in other chunk sizes) decodes to the same data and trailers.
pub fn chunked(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let limits = limits_for(sel);
    let mut reference: Option<BodyOutcome> = None;
    for pieces in cuttings(body) {
        let o = drive_body(BodyKind::Chunked, limits, &pieces);
        assert!(o.consumed <= body.len());
        assert!(o.data.len() as u64 <= limits.max_body.unwrap_or(u64::MAX));
        match &reference {
            None => reference = Some(o),
            Some(r) => assert_eq!(r, &o, "split changed the chunked result"),
        }
    }
    let Some(r) = reference else { return };
    if !r.done {
        return;
    }
    let mut enc = Vec::new();
    let step = usize::from(sel % 7) + 1;
    for piece in r.data.chunks(step) {
        ChunkedEncoder::encode_chunk(&mut enc, piece);
    }
    ChunkedEncoder::finish(&mut enc, r.trailers.as_ref());
    // The encoder writes each trailer field as `name: value`: a field read without the space
    // after its colon comes back one byte longer, so the trailer section may grow by one byte
    // per field (and no more) against the head limit.
    let fields = r.trailers.as_ref().map_or(0, |t| t.iter().count());
    let relaxed = Limits {
        max_body: None,
        max_head: limits.max_head.saturating_add(fields),
        ..limits
    };
    let again = drive_body(BodyKind::Chunked, relaxed, &[&enc]);
    assert_eq!(again.error, None, "re-encoded body refused: {enc:?}");
    assert!(again.done);
    assert_eq!(again.consumed, enc.len());
    assert_eq!(again.data, r.data);
    assert_eq!(
        again.trailers.map(|t| t.iter().count()),
        r.trailers.map(|t| t.iter().count())
    );
}

/// What a response stream produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseStep {
    /// 1xx head.
    Informational(Box<ResponseHead>),
    /// Final head.
    Head(Box<ResponseHead>, ResponseFraming),
    /// Body bytes (merged).
    Body(Vec<u8>),
    /// End.
    End(bool),
    /// Tunnel.
    Tunnel,
    /// Error.
    Error(ErrorKind),
    /// `finish_eof` verdict.
    Eof(Option<ErrorKind>),
}

/// Feeds `pieces` to a [`ResponseDecoder`], driver-style.
pub fn drive_response(
    limits: Limits,
    method: Method,
    upgrade: bool,
    pieces: &[&[u8]],
) -> Vec<ResponseStep> {
    let mut dec = ResponseDecoder::new(limits, method, upgrade);
    let mut buf: Vec<u8> = Vec::new();
    let mut steps = Vec::new();
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    for piece in pieces {
        buf.extend_from_slice(piece);
        let mut budget = 4 * total + 64;
        loop {
            budget -= 1;
            assert!(budget > 0, "response decoder makes no progress");
            let d = match dec.decode(&buf) {
                Ok(d) => d,
                Err(e) => {
                    steps.push(ResponseStep::Error(e.kind()));
                    return steps;
                }
            };
            assert!(d.consumed <= buf.len());
            let mut stop = false;
            match d.event {
                ResponseEvent::Informational(h) => {
                    steps.push(ResponseStep::Informational(Box::new(h)))
                }
                ResponseEvent::Head(h, f) => {
                    if f.tunnel {
                        assert_eq!(h.status() == 101, method != Method::Connect);
                    }
                    steps.push(ResponseStep::Head(Box::new(h), f))
                }
                ResponseEvent::Body(r) => {
                    assert!(!r.is_empty() && r.end <= d.consumed);
                    let data = buf.get(r).unwrap_or_default();
                    match steps.last_mut() {
                        Some(ResponseStep::Body(v)) => v.extend_from_slice(data),
                        _ => steps.push(ResponseStep::Body(data.to_vec())),
                    }
                }
                ResponseEvent::End { keep_alive } => {
                    steps.push(ResponseStep::End(keep_alive));
                    stop = true;
                }
                ResponseEvent::Tunnel => {
                    steps.push(ResponseStep::Tunnel);
                    stop = true;
                }
                ResponseEvent::NeedMore => stop = true,
                ResponseEvent::Done => stop = true,
            }
            buf.drain(..d.consumed);
            if stop {
                break;
            }
        }
    }
    let eof = dec.finish_eof().err().map(|e| e.kind());
    steps.push(ResponseStep::Eof(eof));
    steps
}

/// Fuzz target: an upstream response. The first byte picks the limits, the request method
/// (GET/HEAD) and whether an upgrade was requested.
pub fn response(data: &[u8]) {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_body: None,
        ..limits_for(sel)
    };
    let method = if sel & 4 != 0 {
        Method::Head
    } else {
        Method::Get
    };
    let upgrade = sel & 8 != 0;
    let mut reference: Option<Vec<ResponseStep>> = None;
    for pieces in cuttings(stream) {
        let steps = drive_response(limits, method, upgrade, &pieces);
        match &reference {
            None => reference = Some(steps),
            Some(r) => assert_eq!(r, &steps, "split changed the response result"),
        }
    }
}

/// Seed inputs for the fuzz targets (also used by the unit tests). The first byte of each
/// is the selector byte the targets read.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        &b"\x00GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"\x00POST /p?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"\x00POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n",
        b"\x00GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"\x00GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        b"\x01PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 20\r\n\r\n",
        b"\x00GET http://a:80/x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        b"\x00POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
        b"\x00GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        b"\x03OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close, X-A\r\nX-A: 1\r\n\r\n",
        b"\x00a\r\nhello\r\n0\r\n\r\n",
        b"\x00\x31\x30;ext=\"q\"\r\n0123456789abcdef\r\n0\r\nA: b\r\nC: d\r\n\r\n",
        b"\x01ffffffffffffffff0\r\n",
        b"\x00HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"\x00HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"\x08HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x00",
        b"\x04HTTP/1.0 200 OK\nContent-Length: 9\n\n",
        b"\x00HTTP/1.1 200 OK\r\n\r\nuntil close",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect();
    v.push(vec![0]);
    v
}
