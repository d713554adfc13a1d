//! Framing decisions of RFC 9112 §6 and §9: how long a body is, whether the connection stays
//! open, and when it turns into a tunnel.

use super::error::{ErrorKind, Http1Error};
use super::head::{BodyKind, Method, ResponseHead, Version, flags, keep_alive};
use super::syntax::{list_elements, trim_ows};

/// What the proxy does with an upstream response, given the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseFraming {
    /// How the body is delimited.
    pub body: BodyKind,
    /// 1xx other than 101: a final response follows on the same connection.
    pub informational: bool,
    /// 101 to an upgrade request (or 2xx to CONNECT): after this head the connection is a
    /// byte tunnel in both directions.
    pub tunnel: bool,
    /// The upstream allows reuse of the connection after this response.
    pub keep_alive: bool,
}

/// Connection option flags of one Connection header value.
pub(crate) fn connection_flags(v: &[u8]) -> u8 {
    // The usual value is one option (`keep-alive`, `close`): no list iteration for it.
    if !v.contains(&b',') {
        return connection_option(trim_ows(v));
    }
    list_elements(v).fold(0, |f, t| f | connection_option(t))
}

/// The flag of one Connection option (0 for other options).
#[inline]
fn connection_option(t: &[u8]) -> u8 {
    match t.len() {
        5 if t.eq_ignore_ascii_case(b"close") => flags::CONN_CLOSE,
        7 if t.eq_ignore_ascii_case(b"upgrade") => flags::CONN_UPGRADE,
        10 if t.eq_ignore_ascii_case(b"keep-alive") => flags::CONN_KEEP_ALIVE,
        _ => 0,
    }
}

/// Transfer codings Arc forwards without understanding them (it only frames on chunked).
const KNOWN_CODINGS: &[&[u8]] = &[b"gzip", b"x-gzip", b"deflate", b"compress", b"x-compress"];

/// Shape of a Transfer-Encoding list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TransferCodings {
    /// The final coding is `chunked` (and `chunked` appears nowhere else).
    pub(crate) final_chunked: bool,
    /// `chunked` appears before the final coding, or more than once.
    pub(crate) misplaced_chunked: bool,
    /// Some coding is not `chunked` nor a known content coding.
    pub(crate) unknown: bool,
}

/// The framing headers requests and responses share, gathered line by line: Upgrade and
/// Connection as head flags, Content-Length and Transfer-Encoding as the body's framing.
#[derive(Default)]
pub(crate) struct FramingFields {
    pub flags: u8,
    pub content_length: Option<u64>,
    pub codings: Option<TransferCodings>,
}

impl FramingFields {
    /// Takes one header line; other names are ignored.
    #[inline]
    pub(crate) fn add(&mut self, name: &[u8], value: &[u8]) -> Result<(), Http1Error> {
        match name.len() {
            7 if name.eq_ignore_ascii_case(b"upgrade") && !value.is_empty() => {
                self.flags |= flags::HAS_UPGRADE;
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                self.flags |= connection_flags(value);
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                add_content_length(&mut self.content_length, value)?;
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                add_transfer_codings(&mut self.codings, value)?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Folds one Transfer-Encoding header value into the running analysis (several headers form
/// one list). Returns `Err` for a syntactically broken list.
pub(crate) fn add_transfer_codings(
    acc: &mut Option<TransferCodings>,
    value: &[u8],
) -> Result<(), Http1Error> {
    let mut any = false;
    for element in list_elements(value) {
        any = true;
        // A coding is a token optionally followed by `;` parameters.
        let mut parts = element.splitn(2, |&b| b == b';');
        let name = super::syntax::trim_ows(parts.next().unwrap_or_default());
        let has_params = parts.next().is_some();
        if name.is_empty() || !name.iter().all(|&b| super::syntax::is_tchar(b)) {
            return Err(Http1Error::with_header(
                ErrorKind::InvalidTransferEncoding,
                b"Transfer-Encoding",
            ));
        }
        let state = acc.get_or_insert(TransferCodings {
            final_chunked: false,
            misplaced_chunked: false,
            unknown: false,
        });
        if state.final_chunked {
            // Something follows a chunked coding.
            state.misplaced_chunked = true;
        }
        if name.eq_ignore_ascii_case(b"chunked") {
            if has_params {
                return Err(Http1Error::with_header(
                    ErrorKind::InvalidTransferEncoding,
                    b"Transfer-Encoding",
                ));
            }
            state.final_chunked = true;
        } else {
            state.final_chunked = false;
            if !KNOWN_CODINGS.iter().any(|k| name.eq_ignore_ascii_case(k)) {
                state.unknown = true;
            }
        }
    }
    if !any {
        return Err(Http1Error::with_header(
            ErrorKind::InvalidTransferEncoding,
            b"Transfer-Encoding",
        ));
    }
    Ok(())
}

/// Folds one Content-Length header value into the running value: identical duplicates (and
/// lists like `5, 5`) merge, as RFC 9112 §6.3 permits; differing ones are refused.
pub(crate) fn add_content_length(acc: &mut Option<u64>, value: &[u8]) -> Result<(), Http1Error> {
    let mut any = false;
    for element in value.split(|&b| b == b',') {
        let element = super::syntax::trim_ows(element);
        let n = super::syntax::parse_decimal(element).ok_or_else(|| {
            Http1Error::with_header(ErrorKind::InvalidContentLength, b"Content-Length")
        })?;
        any = true;
        match *acc {
            Some(prev) if prev != n => {
                return Err(Http1Error::with_header(
                    ErrorKind::ConflictingContentLength,
                    b"Content-Length",
                ));
            }
            _ => *acc = Some(n),
        }
    }
    if !any {
        return Err(Http1Error::with_header(
            ErrorKind::InvalidContentLength,
            b"Content-Length",
        ));
    }
    Ok(())
}

/// Framing of an upstream response to a request with `method`, which did (or not) ask for an
/// upgrade (RFC 9112 §6.3).
pub fn response_framing(
    head: &ResponseHead,
    method: Method,
    upgrade_requested: bool,
) -> Result<ResponseFraming, Http1Error> {
    let status = head.status();
    let ka = keep_alive(head.version(), head.flags());
    if status == 101 {
        if !upgrade_requested {
            return Err(Http1Error::new(ErrorKind::UnexpectedSwitchingProtocols));
        }
        return Ok(ResponseFraming {
            body: BodyKind::None,
            informational: false,
            tunnel: true,
            keep_alive: false,
        });
    }
    if (100..200).contains(&status) {
        return Ok(ResponseFraming {
            body: BodyKind::None,
            informational: true,
            tunnel: false,
            keep_alive: ka,
        });
    }
    if method == Method::Connect && (200..300).contains(&status) {
        return Ok(ResponseFraming {
            body: BodyKind::None,
            informational: false,
            tunnel: true,
            keep_alive: false,
        });
    }
    let no_body = method == Method::Head || status == 204 || status == 304;
    let body = if no_body {
        BodyKind::None
    } else {
        match (head.chunked, head.content_length) {
            // A TE on an HTTP/1.0 response cannot be trusted: read until close.
            (Some(true), _) if head.version() == Version::Http11 => BodyKind::Chunked,
            (Some(_), _) => BodyKind::UntilClose,
            (None, Some(n)) => BodyKind::Length(n),
            (None, None) => BodyKind::UntilClose,
        }
    };
    Ok(ResponseFraming {
        body,
        informational: false,
        tunnel: false,
        keep_alive: ka && body != BodyKind::UntilClose,
    })
}
