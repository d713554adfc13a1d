//! Writers for what Arc itself says: header lines, the `100 Continue` line and Arc's own
//! direct/error responses. Everything is appended to a caller-owned, reused `Vec<u8>`.

use super::syntax::{is_field_byte, is_tchar, push_decimal};

/// The interim response sent before reading the body of an `Expect: 100-continue` request.
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Appends `name: value\r\n`. A name that is not a token is skipped and value bytes that could
/// break the framing (CR, LF, NUL, other controls) become spaces, so no caller-provided text
/// can split a message.
pub(crate) fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return;
    }
    push_header_value(out, name.as_bytes(), value);
}

/// [`push_header`] for a name known to be a token (a constant of Arc's): only the value is
/// checked.
pub(crate) fn push_header_value(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    debug_assert!(!name.is_empty() && name.iter().all(|&b| is_tchar(b)));
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    if value.iter().all(|&b| is_field_byte(b)) {
        out.extend_from_slice(value);
    } else {
        out.extend(
            value
                .iter()
                .map(|&b| if is_field_byte(b) { b } else { b' ' }),
        );
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a header taken from a parsed head: the parser already checked that the name is a
/// token and the value holds only field bytes, so neither is scanned again.
pub(crate) fn push_parsed_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    debug_assert!(!name.is_empty() && name.iter().all(|&b| is_tchar(b)));
    debug_assert!(value.iter().all(|&b| is_field_byte(b)));
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `name: n\r\n`.
pub(crate) fn push_header_u64(out: &mut Vec<u8>, name: &str, n: u64) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends `HTTP/1.1 <status> <reason>\r\n`.
pub(crate) fn push_status_line(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    // Three digits always (clamped): written at once with the text around them.
    let s = status.clamp(100, 999);
    let digit = |d: u16| b'0' + (d % 10) as u8;
    out.extend_from_slice(&[
        b'H',
        b'T',
        b'T',
        b'P',
        b'/',
        b'1',
        b'.',
        b'1',
        b' ',
        digit(s / 100),
        digit(s / 10),
        digit(s),
        b' ',
    ]);
    if reason.iter().all(|&b| is_field_byte(b)) {
        out.extend_from_slice(reason);
    } else {
        out.extend_from_slice(reason_phrase(status).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// The standard reason phrase of `status` (empty for codes Arc does not name).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// A response Arc produces itself (errors, `direct_response`, redirects).
#[derive(Debug, Clone, Copy)]
pub struct DirectResponse<'a> {
    /// Status code.
    pub status: u16,
    /// `Content-Type` value (omitted when empty).
    pub content_type: &'a str,
    /// The body.
    pub body: &'a [u8],
    /// Add `Connection: close` (the connection ends after this response).
    pub close: bool,
    /// The request was HEAD: write the head (with the body's Content-Length) but no body.
    pub head_request: bool,
    /// More headers (`Location`, `Server`, `Date`, `Allow`...), written after the fixed ones.
    pub extra_headers: &'a [(&'a str, &'a [u8])],
}

/// Appends a complete response: status line, Content-Type, Content-Length, Connection (when
/// closing), extra headers, then the body.
pub fn write_direct_response(out: &mut Vec<u8>, r: &DirectResponse<'_>) {
    push_status_line(out, r.status, reason_phrase(r.status).as_bytes());
    let bodiless = r.status < 200 || r.status == 204 || r.status == 304;
    if !r.content_type.is_empty() && !bodiless {
        push_header(out, "Content-Type", r.content_type.as_bytes());
    }
    if !bodiless {
        push_header_u64(out, "Content-Length", r.body.len() as u64);
    }
    if r.close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    for (name, value) in r.extra_headers {
        push_header(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    if !r.head_request && !bodiless {
        out.extend_from_slice(r.body);
    }
}

/// Appends Arc's small text error response for `status` (body `<code> <reason>\n`), e.g. for
/// a refused request: `write_error_response(out, err.status(), true, false)`.
pub fn write_error_response(out: &mut Vec<u8>, status: u16, close: bool, head_request: bool) {
    // Error path only: a small allocation keeps this simple.
    let mut body = Vec::with_capacity(48);
    push_decimal(&mut body, u64::from(status));
    body.push(b' ');
    body.extend_from_slice(reason_phrase(status).as_bytes());
    body.push(b'\n');
    write_direct_response(
        out,
        &DirectResponse {
            status,
            content_type: "text/plain; charset=utf-8",
            body: &body,
            close,
            head_request,
            extra_headers: &[],
        },
    );
}
