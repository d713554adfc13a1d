//! The codec's error type: what was wrong with the bytes, which header carried it, and the
//! status Arc answers with when the bytes came from a client.

use std::fmt;

/// What was wrong with a message. Each kind maps to one response status (see
/// [`ErrorKind::status`]); errors raised while reading an upstream response are answered with
/// 502 by the proxy core whatever their kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A line ended with LF not preceded by CR.
    #[error("bare LF in message head")]
    BareLf,
    /// A CR not followed by LF.
    #[error("bare CR in message head")]
    BareCr,
    /// A NUL byte in the head.
    #[error("NUL byte in message head")]
    NulByte,
    /// A header line starting with whitespace (obsolete line folding).
    #[error("obsolete line folding")]
    ObsFold,
    /// The method is not a token.
    #[error("invalid method")]
    InvalidMethod,
    /// The request target is malformed or not allowed with this method.
    #[error("invalid request target")]
    InvalidTarget,
    /// The HTTP version token is malformed.
    #[error("malformed HTTP version")]
    InvalidVersion,
    /// A well-formed HTTP version other than 1.0 and 1.1.
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
    /// A header name is empty or holds a byte outside `tchar`.
    #[error("invalid header name")]
    InvalidHeaderName,
    /// Whitespace between a header name and its colon.
    #[error("whitespace between header name and colon")]
    WhitespaceBeforeColon,
    /// A header value holds a control byte.
    #[error("invalid header value")]
    InvalidHeaderValue,
    /// HTTP/1.1 request without Host.
    #[error("missing Host header")]
    MissingHost,
    /// More than one Host header.
    #[error("multiple Host headers")]
    DuplicateHost,
    /// The Host value is not `host[:port]`.
    #[error("invalid Host header")]
    InvalidHost,
    /// The absolute-form target names another authority than Host.
    #[error("request target authority differs from Host")]
    HostMismatch,
    /// A Content-Length value that is not 1*DIGIT or overflows.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// Content-Length values that differ.
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    /// Both Content-Length and Transfer-Encoding.
    #[error("both Content-Length and Transfer-Encoding")]
    ContentLengthWithTransferEncoding,
    /// Transfer-Encoding whose final coding is not `chunked`, or `chunked` applied twice.
    #[error("Transfer-Encoding does not end with a single chunked")]
    TransferEncodingNotChunked,
    /// Transfer-Encoding in an HTTP/1.0 request (its framing cannot be trusted).
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    TransferEncodingHttp10,
    /// An empty or malformed Transfer-Encoding list.
    #[error("invalid Transfer-Encoding")]
    InvalidTransferEncoding,
    /// A transfer coding Arc does not know.
    #[error("unsupported transfer coding")]
    UnsupportedTransferCoding,
    /// An `Expect` other than `100-continue`.
    #[error("unsupported expectation")]
    UnsupportedExpectation,
    /// CONNECT: Arc is a reverse proxy, not a forward proxy.
    #[error("CONNECT is not allowed")]
    ConnectRefused,
    /// A chunk-size that is not hex digits.
    #[error("invalid chunk size")]
    InvalidChunkSize,
    /// A chunk-size that does not fit in 64 bits.
    #[error("chunk size overflow")]
    ChunkSizeOverflow,
    /// A chunk-size line longer than Arc accepts (extensions included).
    #[error("chunk extension too long")]
    ChunkLineTooLong,
    /// Broken chunked framing (missing CRLF, bare CR/LF, control bytes in an extension).
    #[error("invalid chunked framing")]
    InvalidChunk,
    /// A malformed trailer section.
    #[error("invalid trailer")]
    InvalidTrailer,
    /// The head is larger than `max_head`.
    #[error("message head too large")]
    HeadTooLarge,
    /// More header (or trailer) lines than `max_headers`.
    #[error("too many headers")]
    TooManyHeaders,
    /// The body is larger than `max_body`.
    #[error("body too large")]
    BodyTooLarge,
    /// The status line of a response is malformed.
    #[error("invalid status line")]
    InvalidStatus,
    /// A 101 answer to a request that asked for no upgrade.
    #[error("unexpected 101 Switching Protocols")]
    UnexpectedSwitchingProtocols,
    /// The peer closed the connection inside a head.
    #[error("connection closed inside a message head")]
    IncompleteHead,
    /// The peer closed the connection before the body's end.
    #[error("connection closed before the end of the body")]
    IncompleteBody,
}

impl ErrorKind {
    /// The status Arc answers a client with for this kind.
    pub fn status(self) -> u16 {
        use ErrorKind::*;
        match self {
            HeadTooLarge | TooManyHeaders => 431,
            BodyTooLarge => 413,
            UnsupportedTransferCoding => 501,
            UnsupportedVersion => 505,
            ConnectRefused => 405,
            UnsupportedExpectation => 417,
            _ => 400,
        }
    }
}

/// A refused message: the [`ErrorKind`] and, when one header caused it, that header's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}{}", HeaderSuffix(.header.as_deref()))]
pub struct Http1Error {
    kind: ErrorKind,
    header: Option<Box<str>>,
}

struct HeaderSuffix<'a>(Option<&'a str>);

impl fmt::Display for HeaderSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(name) => write!(f, " (header `{name}`)"),
            None => Ok(()),
        }
    }
}

/// Longest header name kept in an error (names come from the network).
const MAX_NAME_IN_ERROR: usize = 64;

impl Http1Error {
    /// An error not tied to one header.
    pub fn new(kind: ErrorKind) -> Self {
        Http1Error { kind, header: None }
    }

    /// An error caused by the header `name` (raw bytes from the message; shown lossily,
    /// truncated).
    pub fn with_header(kind: ErrorKind, name: &[u8]) -> Self {
        let name = name.get(..MAX_NAME_IN_ERROR).unwrap_or(name);
        let shown: String = String::from_utf8_lossy(name)
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        Http1Error {
            kind,
            header: Some(shown.into_boxed_str()),
        }
    }

    /// What was wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The offending header's name, when one header caused the error.
    pub fn header(&self) -> Option<&str> {
        self.header.as_deref()
    }

    /// The status Arc answers a client with (see [`ErrorKind::status`]).
    pub fn status(&self) -> u16 {
        self.kind.status()
    }
}

impl From<ErrorKind> for Http1Error {
    fn from(kind: ErrorKind) -> Self {
        Http1Error::new(kind)
    }
}
