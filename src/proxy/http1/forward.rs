//! Serialization of forwarded heads: the upstream request (hop-by-hop headers removed,
//! X-Forwarded-*, X-Request-ID, W3C traceparent, optional Host/path rewrite) and the
//! downstream response (hop-by-hop removed, Connection decided by the core).

use core::net::IpAddr;
use std::io::Write as _;
use std::ops::Range;

use super::encode::{
    push_header, push_header_u64, push_header_value, push_parsed_header, push_status_line,
};
use super::head::BodyKind;
use super::head::{Field, Headers, RequestHead, ResponseHead};
use super::syntax::{
    is_nonzero_lower_hex, is_target_byte, list_elements, push_hex_fixed, trim_ows,
};

/// How the framing headers (Content-Length / Transfer-Encoding) of a forwarded head are
/// written. Received CL/TE headers are always dropped first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFraming {
    /// Same framing as received: the body bytes are relayed verbatim (a chunked body with its
    /// chunk framing). Duplicate Content-Length headers are written once.
    Keep,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked` (other received codings kept before it).
    Chunked,
    /// No framing header: no body, or (responses) a body delimited by closing.
    Omit,
}

/// The downstream client, for X-Forwarded-*.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo<'a> {
    /// The peer's address (after PROXY protocol, if any).
    pub addr: IpAddr,
    /// The peer is a trusted proxy: its X-Forwarded-For is extended and its
    /// X-Forwarded-Proto/-Host/-Port are kept; otherwise all four are replaced.
    pub trusted: bool,
    /// `http` or `https`.
    pub proto: &'a str,
    /// The listener port the request arrived on.
    pub port: u16,
}

/// Random bits for a new trace, when the request carries no valid `traceparent`.
#[derive(Debug, Clone, Copy)]
pub struct TraceBits {
    /// New trace id (an all-zero value is made non-zero).
    pub trace_id: u128,
    /// New parent (span) id (an all-zero value is made non-zero).
    pub span_id: u64,
    /// The sampled flag of a started trace.
    pub sampled: bool,
}

/// What to change while forwarding a request head upstream.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamRequest<'a> {
    /// Framing headers to write.
    pub framing: OutFraming,
    /// The request is an upgrade being tunnelled: keep `Upgrade` and send
    /// `Connection: upgrade`.
    pub tunnel: bool,
    /// Host rewrite (`upstream-vhost`); `None` keeps the client's authority.
    pub host: Option<&'a [u8]>,
    /// Path (and query) rewrite; `None` sends the origin-form target received.
    pub path: Option<&'a [u8]>,
    /// Client facts for X-Forwarded-*; `None` leaves those headers untouched.
    pub client: Option<ClientInfo<'a>>,
    /// Random bits for a generated X-Request-ID; `None` leaves X-Request-ID untouched.
    pub request_id: Option<u128>,
    /// Random bits for a started trace; `None` leaves traceparent/tracestate untouched.
    pub trace: Option<TraceBits>,
    /// More headers to add at the end (header rules, auth results...).
    pub extra_headers: &'a [(&'a str, &'a [u8])],
}

impl Default for UpstreamRequest<'_> {
    fn default() -> Self {
        UpstreamRequest {
            framing: OutFraming::Keep,
            tunnel: false,
            host: None,
            path: None,
            client: None,
            request_id: None,
            trace: None,
            extra_headers: &[],
        }
    }
}

/// Where the request id and traceparent sent upstream sit in the output buffer (for logs and
/// for echoing X-Request-ID downstream).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// The X-Request-ID value written, as a range of the output buffer.
    pub request_id: Option<Range<usize>>,
    /// The traceparent value written, as a range of the output buffer.
    pub traceparent: Option<Range<usize>>,
}

/// What a received header name means to the forwarders: one length switch and at most two
/// comparisons per header instead of a comparison against every special name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameKind {
    Host,
    /// `Upgrade`: hop-by-hop, kept only for tunnels.
    Upgrade,
    /// Headers that describe one connection and never cross a proxy (RFC 9110 §7.6.1), plus
    /// the framing headers which [`OutFraming`] rewrites.
    HopByHop,
    Connection,
    Expect,
    ForwardedFor,
    /// X-Forwarded-Proto / -Host / -Port.
    ForwardedOther,
    RequestId,
    Traceparent,
    Tracestate,
    Other,
}

/// Classifies a header name (case-insensitive).
#[inline]
fn classify(name: &[u8]) -> NameKind {
    let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
    match name.len() {
        2 if is(b"te") => NameKind::HopByHop,
        4 if is(b"host") => NameKind::Host,
        6 if is(b"expect") => NameKind::Expect,
        7 if is(b"upgrade") => NameKind::Upgrade,
        7 if is(b"trailer") => NameKind::HopByHop,
        10 if is(b"connection") => NameKind::Connection,
        10 if is(b"keep-alive") => NameKind::HopByHop,
        10 if is(b"tracestate") => NameKind::Tracestate,
        11 if is(b"traceparent") => NameKind::Traceparent,
        12 if is(b"x-request-id") => NameKind::RequestId,
        14 if is(b"content-length") => NameKind::HopByHop,
        15 if is(b"x-forwarded-for") => NameKind::ForwardedFor,
        16 if is(b"proxy-connection") => NameKind::HopByHop,
        16 if is(b"x-forwarded-host") || is(b"x-forwarded-port") => NameKind::ForwardedOther,
        17 if is(b"transfer-encoding") => NameKind::HopByHop,
        17 if is(b"x-forwarded-proto") => NameKind::ForwardedOther,
        _ => NameKind::Other,
    }
}

/// True when `name` is listed as a connection option in any Connection header.
fn listed_in_connection(headers: &Headers, name: &[u8]) -> bool {
    headers
        .fields
        .iter()
        .filter(|f| f.name.get(&headers.buf).eq_ignore_ascii_case(b"connection"))
        .any(|f| list_elements(f.value.get(&headers.buf)).any(|t| t.eq_ignore_ascii_case(name)))
}

/// The lengths of the names that Connection headers list, as a bit set (bit 63 stands for 63
/// and longer), leaving out names every forwarder drops anyway (hop-by-hop ones). A header
/// whose name length is not in the set cannot be listed, so the list scan is skipped for it;
/// a response's usual `Connection: keep-alive` gives an empty set.
fn listed_lengths(headers: &Headers) -> u64 {
    let mut set = 0u64;
    for f in &headers.fields {
        if !f.name.get(&headers.buf).eq_ignore_ascii_case(b"connection") {
            continue;
        }
        let v = f.value.get(&headers.buf);
        let mut add = |t: &[u8]| {
            if !t.is_empty()
                && !matches!(
                    classify(t),
                    NameKind::HopByHop | NameKind::Connection | NameKind::Upgrade
                )
            {
                set |= length_bit(t.len());
            }
        };
        // The usual value is one option: no list iteration for it.
        if v.contains(&b',') {
            list_elements(v).for_each(add);
        } else {
            add(trim_ows(v));
        }
    }
    set
}

/// The bit of [`listed_lengths`] for a name of `len` bytes.
#[inline]
fn length_bit(len: usize) -> u64 {
    1u64 << len.min(63)
}

/// Copies received header lines to the output, merging lines that sit next to each other in
/// the received head into one append. Anything else written to `out` must come after
/// [`Verbatim::flush`].
struct Verbatim {
    start: usize,
    end: usize,
}

impl Verbatim {
    fn new() -> Self {
        Verbatim { start: 0, end: 0 }
    }

    /// Forwards field `f` of `headers` as `Name: value\r\n`.
    #[inline]
    fn field(&mut self, out: &mut Vec<u8>, headers: &Headers, f: &Field) {
        let buf = &headers.buf;
        let (ns, ne) = (f.name.start as usize, f.name.end as usize);
        let (vs, ve) = (f.value.start as usize, f.value.end as usize);
        // The received line is already `Name: value\r\n` (single space, no trailing
        // whitespace, CRLF): it can be copied as it stands.
        if buf.get(ne..vs) == Some(b": ") && buf.get(ve..ve + 2) == Some(b"\r\n") {
            if ns == self.end && self.end > self.start {
                self.end = ve + 2;
            } else {
                self.flush(out, buf);
                self.start = ns;
                self.end = ve + 2;
            }
            return;
        }
        self.flush(out, buf);
        push_parsed_header(out, f.name.get(buf), f.value.get(buf));
    }

    /// Appends `name: value` on its own (after the pending run) and returns where its value
    /// landed in `out`, for headers whose value the caller reports back.
    fn push_tracked(
        &mut self,
        out: &mut Vec<u8>,
        buf: &[u8],
        name: &[u8],
        value: &[u8],
    ) -> std::ops::Range<usize> {
        self.flush(out, buf);
        let start = out.len() + name.len() + 2;
        push_parsed_header(out, name, value);
        start..out.len() - 2
    }

    /// Appends the pending run of lines.
    #[inline]
    fn flush(&mut self, out: &mut Vec<u8>, buf: &[u8]) {
        if self.end > self.start {
            out.extend_from_slice(buf.get(self.start..self.end).unwrap_or_default());
        }
        self.start = 0;
        self.end = 0;
    }
}

/// A request id received from a client is kept when it is short visible ASCII without list
/// or quoting characters.
fn valid_request_id(v: &[u8]) -> bool {
    (1..=128).contains(&v.len())
        && v.iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && !matches!(b, b'"' | b',' | b';' | b'\\'))
}

/// W3C trace-context `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`, lowercase, ids not all
/// zero, version `ff` invalid; a higher version may append `-...` fields.
pub fn valid_traceparent(v: &[u8]) -> bool {
    let (Some(version), Some(trace), Some(parent), Some(flags)) =
        (v.get(0..2), v.get(3..35), v.get(36..52), v.get(53..55))
    else {
        return false;
    };
    let lower_hex = |s: &[u8]| {
        s.iter()
            .all(|&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower_hex(version) || version == b"ff" || !lower_hex(flags) {
        return false;
    }
    if [v.get(2), v.get(35), v.get(52)]
        .iter()
        .any(|&c| c != Some(&b'-'))
    {
        return false;
    }
    if !is_nonzero_lower_hex(trace, 32) || !is_nonzero_lower_hex(parent, 16) {
        return false;
    }
    match version {
        b"00" => v.len() == 55,
        _ => v.len() == 55 || v.get(55) == Some(&b'-'),
    }
}

/// Appends the textual form of `addr` (IPv4 without the formatting machinery; it is written
/// for every forwarded request).
fn push_ip(out: &mut Vec<u8>, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        // Writing to a Vec cannot fail.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends `bytes` as a request target, percent-encoding anything that is not allowed there.
fn push_target(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.is_empty() {
        out.push(b'/');
        return;
    }
    for &b in bytes {
        if is_target_byte(b) {
            out.push(b);
        } else {
            out.push(b'%');
            push_hex_fixed(out, u128::from(b), 2);
        }
    }
}

/// Writes the framing headers of `out_framing` given the received framing.
fn push_framing(
    out: &mut Vec<u8>,
    out_framing: OutFraming,
    received: BodyKind,
    received_length: Option<u64>,
    headers: &Headers,
) {
    let push_te = |out: &mut Vec<u8>, must_end_chunked: bool| {
        let mut any = false;
        let mut last_chunked = false;
        for v in headers.get_all("transfer-encoding") {
            push_header(out, "Transfer-Encoding", v);
            any = true;
            last_chunked = list_elements(v)
                .last()
                .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        }
        if must_end_chunked && !(any && last_chunked) {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
    };
    match out_framing {
        OutFraming::Keep => match (received, received_length) {
            (BodyKind::Chunked, _) | (BodyKind::UntilClose, _)
                if headers.contains("transfer-encoding") =>
            {
                push_te(out, false)
            }
            (_, Some(n)) => push_header_u64(out, "Content-Length", n),
            (BodyKind::Length(n), None) => push_header_u64(out, "Content-Length", n),
            _ => {}
        },
        OutFraming::Length(n) => push_header_u64(out, "Content-Length", n),
        OutFraming::Chunked => push_te(out, true),
        OutFraming::Omit => {}
    }
}

/// Appends the request head to send upstream (HTTP/1.1, origin-form target, Host first).
/// Dropped: hop-by-hop headers (Connection, Keep-Alive, Proxy-Connection, TE, Trailer,
/// Upgrade unless tunnelling, and every header Connection names), the received framing
/// headers (rewritten per [`OutFraming`]) and `Expect` (Arc answers `100-continue` itself).
/// Returns where the request id and traceparent values landed in `out`.
pub fn write_request_head(
    out: &mut Vec<u8>,
    head: &RequestHead,
    opts: &UpstreamRequest<'_>,
) -> Written {
    let headers = head.headers();
    let mut written = Written::default();

    out.extend_from_slice(head.method_bytes());
    out.push(b' ');
    match opts.path {
        Some(p) => push_target(out, p),
        None => out.extend_from_slice(head.path_bytes()),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let original_host = head.authority_bytes();
    match opts.host {
        Some(h) => push_header_value(out, b"Host", h),
        // The parser checked the authority (host characters only).
        None => push_parsed_header(out, b"Host", original_host),
    }

    // One pass finds what the per-header decisions depend on.
    let mut has_connection = false;
    let (mut tps, mut tp) = (0usize, &b""[..]);
    let (mut ids, mut id) = (0usize, &b""[..]);
    for f in &headers.fields {
        match classify(f.name.get(&headers.buf)) {
            NameKind::Connection => has_connection = true,
            NameKind::Traceparent => {
                tps += 1;
                tp = f.value.get(&headers.buf);
            }
            NameKind::RequestId => {
                ids += 1;
                id = f.value.get(&headers.buf);
            }
            _ => {}
        }
    }
    // Most requests carry no Connection header: then no name can be listed in one, and the
    // per-header scan of the list is skipped.
    let listed = if has_connection {
        listed_lengths(headers)
    } else {
        0
    };
    let keep_trace = opts.trace.is_none() || (tps == 1 && valid_traceparent(tp));
    let keep_request_id = opts.request_id.is_none() || (ids == 1 && valid_request_id(id));
    let client = opts.client;
    let trusted = client.is_some_and(|c| c.trusted);

    let buf = &headers.buf;
    let mut copy = Verbatim::new();
    for f in &headers.fields {
        let name = f.name.get(buf);
        let kind = classify(name);
        match kind {
            NameKind::Host => continue,
            NameKind::Upgrade => {
                if opts.tunnel {
                    copy.field(out, headers, f);
                }
                continue;
            }
            NameKind::HopByHop | NameKind::Connection => continue,
            // Arc answers `Expect: 100-continue` itself (see `CONTINUE_100`); forwarding it
            // would make the upstream send a second interim response.
            NameKind::Expect => continue,
            _ => {}
        }
        if listed & length_bit(name.len()) != 0 && listed_in_connection(headers, name) {
            continue;
        }
        match kind {
            NameKind::ForwardedFor if client.is_some() => continue,
            NameKind::ForwardedOther if client.is_some() && !trusted => continue,
            NameKind::RequestId => {
                if keep_request_id {
                    let at = copy.push_tracked(out, buf, name, f.value.get(buf));
                    if opts.request_id.is_some() {
                        written.request_id = Some(at);
                    }
                }
                continue;
            }
            NameKind::Traceparent => {
                if keep_trace {
                    let at = copy.push_tracked(out, buf, name, f.value.get(buf));
                    if opts.trace.is_some() {
                        written.traceparent = Some(at);
                    }
                }
                continue;
            }
            NameKind::Tracestate if !keep_trace => continue,
            _ => {}
        }
        copy.field(out, headers, f);
    }
    copy.flush(out, buf);

    if opts.tunnel {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    }
    push_framing(
        out,
        opts.framing,
        head.body_kind(),
        match head.body_kind() {
            BodyKind::Length(n) => Some(n),
            _ => None,
        },
        headers,
    );

    if let Some(c) = client {
        out.extend_from_slice(b"X-Forwarded-For: ");
        if trusted {
            for v in headers.get_all("x-forwarded-for") {
                if list_elements(v).next().is_some() && v.iter().all(|&b| b >= 0x20 && b != 0x7f) {
                    out.extend_from_slice(v);
                    out.extend_from_slice(b", ");
                }
            }
        }
        push_ip(out, c.addr);
        out.extend_from_slice(b"\r\n");
        if !(trusted && headers.contains("x-forwarded-proto")) {
            push_header_value(out, b"X-Forwarded-Proto", c.proto.as_bytes());
        }
        if !(trusted && headers.contains("x-forwarded-host")) {
            push_parsed_header(out, b"X-Forwarded-Host", original_host);
        }
        if !(trusted && headers.contains("x-forwarded-port")) {
            push_header_u64(out, "X-Forwarded-Port", u64::from(c.port));
        }
    }
    if let (Some(bits), false) = (opts.request_id, keep_request_id) {
        out.extend_from_slice(b"X-Request-ID: ");
        let start = out.len();
        push_hex_fixed(out, bits, 32);
        written.request_id = Some(start..out.len());
        out.extend_from_slice(b"\r\n");
    }
    if let (Some(t), false) = (opts.trace, keep_trace) {
        out.extend_from_slice(b"traceparent: 00-");
        let start = out.len() - 3;
        push_hex_fixed(out, t.trace_id.max(1), 32);
        out.push(b'-');
        push_hex_fixed(out, u128::from(t.span_id.max(1)), 16);
        out.extend_from_slice(if t.sampled { b"-01" } else { b"-00" });
        written.traceparent = Some(start..out.len());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in opts.extra_headers {
        push_header(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    written
}

/// The Connection header of a response sent downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionHeader {
    /// No Connection header (HTTP/1.1 keep-alive).
    Omit,
    /// `Connection: close`: the connection ends after this response.
    Close,
    /// `Connection: keep-alive` (for HTTP/1.0 clients that asked for it).
    KeepAlive,
    /// `Connection: upgrade`, keeping the `Upgrade` header (101 tunnels).
    Upgrade,
}

/// What to change while forwarding a response head downstream.
#[derive(Debug, Clone, Copy)]
pub struct DownstreamResponse<'a> {
    /// Framing headers to write.
    pub framing: OutFraming,
    /// Connection header to write.
    pub connection: ConnectionHeader,
    /// More headers (`Server`, `Date`, HSTS, X-Request-ID...).
    pub extra_headers: &'a [(&'a str, &'a [u8])],
}

/// Appends the response head to send downstream: `HTTP/1.1`, the received status and reason,
/// headers without hop-by-hop ones, framing and Connection as asked.
pub fn write_response_head(out: &mut Vec<u8>, head: &ResponseHead, opts: &DownstreamResponse<'_>) {
    let headers = head.headers();
    let reason = head.reason();
    if reason.is_empty() {
        push_status_line(
            out,
            head.status(),
            super::encode::reason_phrase(head.status()).as_bytes(),
        );
    } else {
        push_status_line(out, head.status(), reason);
    }
    let upgrade = opts.connection == ConnectionHeader::Upgrade;
    let buf = &headers.buf;
    let listed = listed_lengths(headers);
    let mut copy = Verbatim::new();
    for f in &headers.fields {
        let name = f.name.get(buf);
        match classify(name) {
            NameKind::Upgrade => {
                if upgrade {
                    copy.field(out, headers, f);
                }
                continue;
            }
            NameKind::HopByHop | NameKind::Connection => continue,
            _ => {}
        }
        if listed & length_bit(name.len()) != 0 && listed_in_connection(headers, name) {
            continue;
        }
        copy.field(out, headers, f);
    }
    copy.flush(out, buf);
    match opts.connection {
        ConnectionHeader::Omit => {}
        ConnectionHeader::Close => out.extend_from_slice(b"Connection: close\r\n"),
        ConnectionHeader::KeepAlive => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        ConnectionHeader::Upgrade => out.extend_from_slice(b"Connection: upgrade\r\n"),
    }
    let received = match (head.chunked, head.content_length) {
        (Some(true), _) => BodyKind::Chunked,
        (Some(false), _) => BodyKind::UntilClose,
        (None, Some(n)) => BodyKind::Length(n),
        (None, None) => BodyKind::None,
    };
    push_framing(out, opts.framing, received, head.content_length, headers);
    for (name, value) in opts.extra_headers {
        push_header(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
#[path = "tests/forward_reference.rs"]
mod reference;
