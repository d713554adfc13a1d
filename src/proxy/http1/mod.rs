//! Sans-IO HTTP/1.1 codec shared by the io drivers and the proxy core: bytes in, parsed heads
//! and body events out, serialized heads out. No sockets, no clock, no async runtime.
//!
//! - [`parse_request_head`] / [`parse_response_head`]: strict head parsing into owned heads
//!   (one buffer + spans), limits enforced on partial input.
//! - [`BodyDecoder`] / [`ChunkedEncoder`]: body framing, streaming at any split.
//! - [`RequestDecoder`] / [`ResponseDecoder`]: connection state machines (pipelining,
//!   `Expect: 100-continue`, upgrades).
//! - [`write_request_head`], [`write_response_head`], [`write_direct_response`]: serializers.
//!
//! Policy decisions (RFC 9110 / 9112), all refused with an [`Http1Error`]:
//! - Content-Length with Transfer-Encoding → 400, in requests and responses.
//! - Duplicate Content-Length: identical values (also `5, 5`) are merged into one and forwarded
//!   once; differing values → 400.
//! - Request Transfer-Encoding: the final coding must be `chunked`, appearing once (else 400);
//!   other codings must be known content codings (`gzip`, `deflate`, `compress`, `x-gzip`,
//!   `x-compress`, else 501); `gzip, chunked` is forwarded. Any TE in an HTTP/1.0 request → 400.
//! - Bare LF, bare CR, NUL, obs-fold, whitespace before a colon, invalid names/values → 400.
//!   Response heads may end lines with a bare LF (RFC 9112 §2.2); everything else is as strict.
//! - Request targets: origin-form, absolute-form (`http`/`https`, no userinfo, authority must
//!   match Host, a missing port meaning the scheme's default), `*` with OPTIONS only. Raw
//!   non-ASCII bytes in a target → 400.
//! - CONNECT → 405: Arc is a reverse proxy, never a forward proxy.
//! - `Expect` other than `100-continue` on HTTP/1.1 → 417 (ignored on HTTP/1.0).
//! - Head over `max_head` or more than `max_headers` lines → 431; body over `max_body` → 413.
//! - Versions other than HTTP/1.0 and HTTP/1.1 → 505 (a malformed version → 400).

#![deny(unsafe_code)]
// Pure room: no clock, sockets or threads outside tests (clippy.toml).
#![cfg_attr(not(test), deny(clippy::disallowed_methods))]

mod body;
mod encode;
mod error;
mod forward;
mod framing;
pub mod fuzzing;
mod head;
mod parse;
mod stream;
mod syntax;

#[cfg(test)]
mod tests;

pub use body::{BodyDecoder, BodyStep, ChunkSizeLine, ChunkedEncoder, LAST_CHUNK, MAX_CHUNK_LINE};
pub use encode::{
    CONTINUE_100, DirectResponse, reason_phrase, write_direct_response, write_error_response,
};
pub use error::{ErrorKind, Http1Error};
pub use forward::{
    ClientInfo, ConnectionHeader, DownstreamResponse, OutFraming, TraceBits, UpstreamRequest,
    Written, valid_traceparent, write_request_head, write_response_head,
};
pub use framing::{ResponseFraming, response_framing};
pub use head::{BodyKind, Header, Headers, Method, RequestHead, ResponseHead, Version};
pub use parse::{parse_request_head, parse_response_head};
pub use stream::{Decoded, RequestDecoder, RequestEvent, ResponseDecoder, ResponseEvent};

/// Size limits of the codec (`limits.*` of the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head, request line to final CRLF (431 beyond). Also bounds trailers.
    pub max_head: usize,
    /// Most header lines in a head (431 beyond). Also bounds trailer lines.
    pub max_headers: usize,
    /// Largest body in bytes (413 beyond); `None` = unlimited.
    pub max_body: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 32 * 1024,
            max_headers: 100,
            max_body: None,
        }
    }
}
