//! Owned message heads: one copy of the head bytes plus index spans into it, so a parsed head
//! costs two allocations however many headers it has. Also the facts a head alone decides
//! (how its body is delimited, [`BodyKind`]; keep-alive from version and Connection flags),
//! which the framing rules build on: `framing` imports `head`, never the reverse.

/// A byte range inside a head's buffer (heads are bounded by `max_head`, so u32 suffices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Span {
    pub(crate) start: u32,
    pub(crate) end: u32,
}

impl Span {
    pub(crate) fn new(start: usize, end: usize) -> Span {
        Span {
            start: u32::try_from(start).unwrap_or(u32::MAX),
            end: u32::try_from(end).unwrap_or(u32::MAX),
        }
    }

    pub(crate) fn get(self, buf: &[u8]) -> &[u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }
}

/// Bytes that were checked to be ASCII (tokens, targets, hosts), as `&str`; empty if they are
/// not ASCII, which the parser rules out. Cheaper than a UTF-8 validation on these short
/// strings, which are converted several times per request.
#[allow(unsafe_code)]
pub(crate) fn ascii_str(b: &[u8]) -> &str {
    if b.is_ascii() {
        // SAFETY: every ASCII byte sequence is valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(b) }
    } else {
        ""
    }
}

/// HTTP version of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
}

impl Version {
    /// The version as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// Request method. Extension methods are [`Method::Other`]; their text is in
/// [`RequestHead::method_str`]. Methods are case-sensitive (`get` is an extension method).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// GET
    Get,
    /// HEAD: the response never has a body.
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// OPTIONS (the only method allowed with the `*` target)
    Options,
    /// TRACE
    Trace,
    /// PATCH
    Patch,
    /// CONNECT (refused by the request parser; kept for response framing)
    Connect,
    /// Any other token.
    Other,
}

impl Method {
    pub(crate) fn from_bytes(b: &[u8]) -> Method {
        match b {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"PATCH" => Method::Patch,
            b"CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }

    /// Idempotent per RFC 9110 §9.2.2 (retries are safe).
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Put
                | Method::Delete
                | Method::Options
                | Method::Trace
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    pub(crate) name: Span,
    pub(crate) value: Span,
}

/// One header: the name as received (case preserved) and the value without surrounding
/// whitespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Name as received (a token, so ASCII).
    pub name: &'a str,
    /// Value without leading/trailing SP/HTAB; may hold obs-text bytes.
    pub value: &'a [u8],
}

/// An ordered header list backed by one buffer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Headers {
    pub(crate) buf: Vec<u8>,
    pub(crate) fields: Vec<Field>,
}

impl Headers {
    /// Storage for a head about to be parsed: `head`'s bytes, no fields yet.
    pub(crate) fn from_head(head: &[u8]) -> Headers {
        Headers {
            buf: head.to_vec(),
            fields: Vec::with_capacity(16),
        }
    }

    /// Refills this storage with `head`'s bytes (fields cleared), reusing both allocations.
    pub(crate) fn refill(mut self, head: &[u8]) -> Headers {
        self.buf.clear();
        self.buf.extend_from_slice(head);
        self.fields.clear();
        self
    }

    /// Number of header lines.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when there is no header.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The headers in received order.
    pub fn iter(&self) -> impl Iterator<Item = Header<'_>> {
        self.fields.iter().map(|f| Header {
            name: ascii_str(f.name.get(&self.buf)),
            value: f.value.get(&self.buf),
        })
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| f.name.get(&self.buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| f.value.get(&self.buf))
    }

    /// Every value of `name` (case-insensitive), in order. Names are compared as bytes: no
    /// name is turned into a `&str` on the way (lookups run several times per request).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |f| f.name.get(&self.buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| f.value.get(&self.buf))
    }

    /// True when a header `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// True when any `name` header holds `token` as a comma-list element (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name).any(|v| {
            super::syntax::list_elements(v).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
        })
    }
}

/// Flags computed once while parsing, so the core asks cheap questions.
pub(crate) mod flags {
    pub(crate) const CONN_CLOSE: u8 = 1;
    pub(crate) const CONN_KEEP_ALIVE: u8 = 2;
    pub(crate) const CONN_UPGRADE: u8 = 4;
    pub(crate) const EXPECT_CONTINUE: u8 = 8;
    pub(crate) const HAS_UPGRADE: u8 = 16;
    pub(crate) const ABSOLUTE_FORM: u8 = 32;
}

/// A parsed request head, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub(crate) headers: Headers,
    pub(crate) method: Method,
    pub(crate) method_span: Span,
    pub(crate) target: Span,
    pub(crate) path: Span,
    pub(crate) authority: Option<Span>,
    pub(crate) host: Option<Span>,
    pub(crate) version: Version,
    pub(crate) body: BodyKind,
    pub(crate) flags: u8,
}

impl RequestHead {
    /// The method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The method's text as received.
    pub fn method_str(&self) -> &str {
        ascii_str(self.method_span.get(&self.headers.buf))
    }

    /// [`RequestHead::method_str`] as bytes (no UTF-8 check).
    pub(crate) fn method_bytes(&self) -> &[u8] {
        self.method_span.get(&self.headers.buf)
    }

    /// [`RequestHead::path`] as bytes (no UTF-8 check).
    pub(crate) fn path_bytes(&self) -> &[u8] {
        let p = self.path.get(&self.headers.buf);
        if p.is_empty() { b"/" } else { p }
    }

    /// [`RequestHead::authority`] as bytes, empty when there is none (no UTF-8 check).
    pub(crate) fn authority_bytes(&self) -> &[u8] {
        self.host
            .or(self.authority)
            .map_or(&[][..], |s| s.get(&self.headers.buf))
    }

    /// The request target as received (origin-, absolute- or asterisk-form).
    pub fn target(&self) -> &str {
        ascii_str(self.target.get(&self.headers.buf))
    }

    /// Path and query in origin-form (`/` for an absolute-form target with an empty path,
    /// `*` for the asterisk form): what is routed on and sent upstream.
    pub fn path(&self) -> &str {
        let p = ascii_str(self.path.get(&self.headers.buf));
        if p.is_empty() { "/" } else { p }
    }

    /// True when the target was in absolute-form (`http://host/path`).
    pub fn is_absolute_form(&self) -> bool {
        self.flags & flags::ABSOLUTE_FORM != 0
    }

    /// The version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The headers, in order, names as received.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The authority the request is for: the Host header, or the absolute-form target's
    /// authority (an HTTP/1.0 request may have neither).
    pub fn authority(&self) -> Option<&str> {
        self.host
            .or(self.authority)
            .map(|s| ascii_str(s.get(&self.headers.buf)))
    }

    /// The Host header value, when present.
    pub fn host_header(&self) -> Option<&str> {
        self.host.map(|s| ascii_str(s.get(&self.headers.buf)))
    }

    /// How the request body is framed.
    pub fn body_kind(&self) -> BodyKind {
        self.body
    }

    /// Whether the client allows another request on this connection (HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub fn keep_alive(&self) -> bool {
        keep_alive(self.version, self.flags)
    }

    /// `Expect: 100-continue` on an HTTP/1.1 request: answer [`super::CONTINUE_100`] before
    /// reading the body.
    pub fn expects_continue(&self) -> bool {
        self.flags & flags::EXPECT_CONTINUE != 0
    }

    /// An HTTP/1.1 request with `Connection: upgrade` and an `Upgrade` header: if the upstream
    /// answers 101 the connection becomes a byte tunnel.
    pub fn upgrade_requested(&self) -> bool {
        self.version == Version::Http11
            && self.flags & flags::CONN_UPGRADE != 0
            && self.flags & flags::HAS_UPGRADE != 0
    }

    /// The `Upgrade` header value (e.g. `websocket`), when an upgrade is requested.
    pub fn upgrade_protocol(&self) -> Option<&[u8]> {
        if self.upgrade_requested() {
            self.headers.get("upgrade")
        } else {
            None
        }
    }

    /// The head's bytes as received (request line to the final CRLF).
    pub fn raw(&self) -> &[u8] {
        &self.headers.buf
    }

    /// Gives the head's storage back (see [`crate::proxy::http1::RequestDecoder::recycle`]).
    pub fn into_headers(self) -> Headers {
        self.headers
    }
}

/// A parsed response head, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub(crate) headers: Headers,
    pub(crate) status: u16,
    pub(crate) reason: Span,
    pub(crate) version: Version,
    pub(crate) content_length: Option<u64>,
    /// `Some(true)` when Transfer-Encoding ends with chunked, `Some(false)` when it is present
    /// with another final coding.
    pub(crate) chunked: Option<bool>,
    pub(crate) flags: u8,
}

impl ResponseHead {
    /// Status code (100..=599).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Reason phrase as received (may be empty; may hold obs-text).
    pub fn reason(&self) -> &[u8] {
        self.reason.get(&self.headers.buf)
    }

    /// The version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The headers, in order.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The Content-Length, when present.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// A 1xx head other than 101: another head follows.
    pub fn is_informational(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// The head's bytes as received.
    pub fn raw(&self) -> &[u8] {
        &self.headers.buf
    }

    pub(crate) fn flags(&self) -> u8 {
        self.flags
    }

    /// Gives the head's storage back (see [`crate::proxy::http1::ResponseDecoder::recycle`]).
    pub fn into_headers(self) -> Headers {
        self.headers
    }
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyKind {
    /// No body.
    None,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: ... chunked`.
    Chunked,
    /// Everything until the peer closes (responses only).
    UntilClose,
}

/// Keep-alive from a version and the Connection flags of a head.
pub(crate) fn keep_alive(version: Version, f: u8) -> bool {
    if f & flags::CONN_CLOSE != 0 {
        return false;
    }
    match version {
        Version::Http11 => true,
        Version::Http10 => f & flags::CONN_KEEP_ALIVE != 0,
    }
}
