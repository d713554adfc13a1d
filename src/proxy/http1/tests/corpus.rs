//! A table of malformed and hostile requests, each with its verdict.

use super::super::fuzzing::{RequestStep, drive_requests};
use super::*;

/// Expected verdict: accepted, or refused with a kind, a status and (maybe) a header name.
#[derive(Debug, Clone, Copy)]
enum V {
    Ok,
    Err(ErrorKind, u16, Option<&'static str>),
}

use ErrorKind as K;

fn e(k: ErrorKind, status: u16) -> V {
    V::Err(k, status, None)
}

fn eh(k: ErrorKind, status: u16, header: &'static str) -> V {
    V::Err(k, status, Some(header))
}

fn table() -> Vec<(&'static str, Vec<u8>, Limits, V)> {
    let d = Limits::default();
    let small_body = Limits {
        max_body: Some(4),
        ..Limits::default()
    };
    let h = |rest: &str| format!("GET / HTTP/1.1\r\nHost: a\r\n{rest}\r\n").into_bytes();
    let post = |hdrs: &str, body: &str| {
        format!("POST / HTTP/1.1\r\nHost: a\r\n{hdrs}\r\n{body}").into_bytes()
    };
    let chunked = |body: &str| post("Transfer-Encoding: chunked\r\n", body);
    let mut many = String::new();
    for i in 0..101 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    let huge = format!("X-Big: {}\r\n", "a".repeat(33 * 1024));
    let b = |s: &[u8]| s.to_vec();
    vec![
        ("plain GET", h(""), d, V::Ok),
        (
            "leading CRLF tolerated",
            b(b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            d,
            V::Ok,
        ),
        (
            "extension method",
            b(b"get / HTTP/1.1\r\nHost: a\r\n\r\n"),
            d,
            V::Ok,
        ),
        (
            "HTTP/1.0 without Host",
            b(b"GET / HTTP/1.0\r\n\r\n"),
            d,
            V::Ok,
        ),
        (
            "OPTIONS *",
            b(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
            d,
            V::Ok,
        ),
        (
            "absolute-form, default port",
            b(b"GET http://a:80/x HTTP/1.1\r\nHost: A\r\n\r\n"),
            d,
            V::Ok,
        ),
        ("obs-text in a value", h("X: caf\u{e9}\r\n"), d, V::Ok),
        (
            "CL then TE",
            post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", ""),
            d,
            eh(
                K::ContentLengthWithTransferEncoding,
                400,
                "Transfer-Encoding",
            ),
        ),
        (
            "TE then CL",
            post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", ""),
            d,
            e(K::ContentLengthWithTransferEncoding, 400),
        ),
        (
            "differing duplicate CL",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello"),
            d,
            eh(K::ConflictingContentLength, 400, "Content-Length"),
        ),
        (
            "identical duplicate CL merged",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            d,
            V::Ok,
        ),
        (
            "CL list differing",
            post("Content-Length: 5, 6\r\n", "hello"),
            d,
            e(K::ConflictingContentLength, 400),
        ),
        (
            "CL list identical",
            post("Content-Length: 5,5\r\n", "hello"),
            d,
            V::Ok,
        ),
        (
            "CL plus sign",
            post("Content-Length: +5\r\n", "hello"),
            d,
            eh(K::InvalidContentLength, 400, "Content-Length"),
        ),
        (
            "CL negative",
            post("Content-Length: -1\r\n", ""),
            d,
            e(K::InvalidContentLength, 400),
        ),
        (
            "CL hex",
            post("Content-Length: 0x5\r\n", "hello"),
            d,
            e(K::InvalidContentLength, 400),
        ),
        (
            "CL empty",
            post("Content-Length:\r\n", ""),
            d,
            e(K::InvalidContentLength, 400),
        ),
        (
            "CL inner space",
            post("Content-Length: 5 5\r\n", ""),
            d,
            e(K::InvalidContentLength, 400),
        ),
        (
            "CL overflow",
            post("Content-Length: 99999999999999999999\r\n", ""),
            d,
            e(K::InvalidContentLength, 400),
        ),
        (
            "TE final not chunked",
            post("Transfer-Encoding: gzip\r\n", ""),
            d,
            eh(K::TransferEncodingNotChunked, 400, "Transfer-Encoding"),
        ),
        (
            "TE chunked then gzip",
            post("Transfer-Encoding: chunked, gzip\r\n", ""),
            d,
            e(K::TransferEncodingNotChunked, 400),
        ),
        (
            "TE chunked twice",
            post("Transfer-Encoding: chunked, chunked\r\n", ""),
            d,
            e(K::TransferEncodingNotChunked, 400),
        ),
        (
            "TE identity",
            post("Transfer-Encoding: identity\r\n", ""),
            d,
            e(K::TransferEncodingNotChunked, 400),
        ),
        (
            "TE xchunked",
            post("Transfer-Encoding: xchunked\r\n", ""),
            d,
            e(K::TransferEncodingNotChunked, 400),
        ),
        (
            "TE gzip, chunked forwarded",
            post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"),
            d,
            V::Ok,
        ),
        (
            "TE split over two headers",
            post(
                "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            d,
            V::Ok,
        ),
        (
            "TE case-insensitive",
            post("Transfer-Encoding: Chunked\r\n", "0\r\n\r\n"),
            d,
            V::Ok,
        ),
        (
            "TE unknown coding",
            post("Transfer-Encoding: foo, chunked\r\n", ""),
            d,
            eh(K::UnsupportedTransferCoding, 501, "Transfer-Encoding"),
        ),
        (
            "TE chunked with params",
            post("Transfer-Encoding: chunked;q=1\r\n", ""),
            d,
            e(K::InvalidTransferEncoding, 400),
        ),
        (
            "TE empty",
            post("Transfer-Encoding: \r\n", ""),
            d,
            e(K::InvalidTransferEncoding, 400),
        ),
        (
            "TE vertical tab",
            post("Transfer-Encoding: \x0bchunked\r\n", ""),
            d,
            eh(K::InvalidHeaderValue, 400, "Transfer-Encoding"),
        ),
        (
            "TE on HTTP/1.0",
            b(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            d,
            e(K::TransferEncodingHttp10, 400),
        ),
        (
            "TE space before colon",
            post("Transfer-Encoding : chunked\r\n", ""),
            d,
            eh(K::WhitespaceBeforeColon, 400, "Transfer-Encoding"),
        ),
        (
            "chunk size not hex",
            chunked("zz\r\n"),
            d,
            e(K::InvalidChunkSize, 400),
        ),
        (
            "chunk size overflow",
            chunked("1ffffffffffffffff\r\n"),
            d,
            e(K::ChunkSizeOverflow, 400),
        ),
        (
            "chunk size leading space",
            chunked(" 5\r\nhello\r\n0\r\n\r\n"),
            d,
            e(K::InvalidChunkSize, 400),
        ),
        (
            "chunk size negative",
            chunked("-5\r\n"),
            d,
            e(K::InvalidChunkSize, 400),
        ),
        (
            "chunk size 0x prefix",
            chunked("0x5\r\n"),
            d,
            e(K::InvalidChunkSize, 400),
        ),
        (
            "chunk size trailing space without ext",
            chunked("5 \r\nhello\r\n0\r\n\r\n"),
            d,
            e(K::InvalidChunkSize, 400),
        ),
        (
            "chunk size bare LF",
            chunked("5\nhello\r\n0\r\n\r\n"),
            d,
            e(K::InvalidChunkSize, 400),
        ),
        (
            "chunk data too long",
            chunked("5\r\nhelloX\r\n0\r\n\r\n"),
            d,
            e(K::InvalidChunk, 400),
        ),
        (
            "chunk ext with control byte",
            chunked("5;a=\x01\r\nhello\r\n0\r\n\r\n"),
            d,
            e(K::InvalidChunk, 400),
        ),
        (
            "chunk line too long",
            chunked(&format!("5;{}\r\n", "a".repeat(5000))),
            d,
            e(K::ChunkLineTooLong, 400),
        ),
        (
            "chunk ext and trailers accepted",
            chunked("5;a=b;c=\"d\"\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"),
            d,
            V::Ok,
        ),
        (
            "trailer obs-fold",
            chunked("0\r\nX: a\r\n b\r\n\r\n"),
            d,
            e(K::InvalidTrailer, 400),
        ),
        (
            "trailer bad name",
            chunked("0\r\nX Y: a\r\n\r\n"),
            d,
            e(K::InvalidTrailer, 400),
        ),
        ("obs-fold", h("X-A: a\r\n b\r\n"), d, e(K::ObsFold, 400)),
        (
            "obs-fold first header",
            b(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n"),
            d,
            e(K::ObsFold, 400),
        ),
        (
            "bare LF everywhere",
            b(b"GET / HTTP/1.1\nHost: a\n\n"),
            d,
            e(K::BareLf, 400),
        ),
        ("bare LF after a header", h("X: y\n"), d, e(K::BareLf, 400)),
        (
            "bare CR in a value",
            h("X: a\rb\r\n"),
            d,
            eh(K::BareCr, 400, "X"),
        ),
        (
            "bare CR ending a line",
            h("X: a\r\r\n"),
            d,
            e(K::BareCr, 400),
        ),
        (
            "NUL in a value",
            h("X-N: a\0b\r\n"),
            d,
            eh(K::NulByte, 400, "X-N"),
        ),
        (
            "NUL in the target",
            b(b"GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n"),
            d,
            e(K::NulByte, 400),
        ),
        (
            "DEL in a value",
            h("X: a\x7fb\r\n"),
            d,
            e(K::InvalidHeaderValue, 400),
        ),
        (
            "invalid header name",
            h("X(y): 1\r\n"),
            d,
            e(K::InvalidHeaderName, 400),
        ),
        (
            "non-ASCII header name",
            h("X\u{e9}: 1\r\n"),
            d,
            e(K::InvalidHeaderName, 400),
        ),
        (
            "space before colon",
            b(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
            d,
            eh(K::WhitespaceBeforeColon, 400, "Host"),
        ),
        (
            "tab before colon",
            h("X-T\t: a\r\n"),
            d,
            eh(K::WhitespaceBeforeColon, 400, "X-T"),
        ),
        (
            "empty header name",
            h(": a\r\n"),
            d,
            e(K::InvalidHeaderName, 400),
        ),
        (
            "header without colon",
            h("Foo\r\n"),
            d,
            eh(K::InvalidHeaderName, 400, "Foo"),
        ),
        (
            "invalid method",
            b(b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n"),
            d,
            e(K::InvalidMethod, 400),
        ),
        (
            "double space",
            b(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"),
            d,
            e(K::InvalidTarget, 400),
        ),
        (
            "missing version",
            b(b"GET /\r\nHost: a\r\n\r\n"),
            d,
            e(K::InvalidVersion, 400),
        ),
        (
            "lowercase version",
            b(b"GET / http/1.1\r\nHost: a\r\n\r\n"),
            d,
            e(K::InvalidVersion, 400),
        ),
        (
            "HTTP/2.0",
            b(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
            d,
            e(K::UnsupportedVersion, 505),
        ),
        (
            "HTTP/1.2",
            b(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"),
            d,
            e(K::UnsupportedVersion, 505),
        ),
        (
            "HTTP/0.9 style",
            b(b"GET /\r\n\r\n"),
            d,
            e(K::InvalidVersion, 400),
        ),
        (
            "missing Host",
            b(b"GET / HTTP/1.1\r\n\r\n"),
            d,
            e(K::MissingHost, 400),
        ),
        (
            "two Host headers",
            h("Host: b\r\n"),
            d,
            eh(K::DuplicateHost, 400, "Host"),
        ),
        (
            "invalid Host",
            b(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
            d,
            e(K::InvalidHost, 400),
        ),
        (
            "Host with slash",
            b(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
            d,
            e(K::InvalidHost, 400),
        ),
        (
            "absolute-form conflicting Host",
            b(b"GET http://evil/ HTTP/1.1\r\nHost: good\r\n\r\n"),
            d,
            eh(K::HostMismatch, 400, "Host"),
        ),
        (
            "absolute-form port differs",
            b(b"GET http://a:8080/ HTTP/1.1\r\nHost: a\r\n\r\n"),
            d,
            e(K::HostMismatch, 400),
        ),
        (
            "absolute-form userinfo",
            b(b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n"),
            d,
            e(K::InvalidTarget, 400),
        ),
        (
            "unknown scheme",
            b(b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n"),
            d,
            e(K::InvalidTarget, 400),
        ),
        (
            "CONNECT refused",
            b(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
            d,
            e(K::ConnectRefused, 405),
        ),
        (
            "asterisk with GET",
            b(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
            d,
            e(K::InvalidTarget, 400),
        ),
        (
            "raw UTF-8 target",
            b("GET /caf\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n".as_bytes()),
            d,
            e(K::InvalidTarget, 400),
        ),
        (
            "unknown expectation",
            h("Expect: 200-ok\r\n"),
            d,
            eh(K::UnsupportedExpectation, 417, "Expect"),
        ),
        ("head over 32 KiB", h(&huge), d, e(K::HeadTooLarge, 431)),
        (
            "endless line",
            vec![b'a'; 40 * 1024],
            d,
            e(K::HeadTooLarge, 431),
        ),
        ("101 headers", h(&many), d, e(K::TooManyHeaders, 431)),
        (
            "CL over max_body",
            post("Content-Length: 5\r\n", "hello"),
            small_body,
            eh(K::BodyTooLarge, 413, "Content-Length"),
        ),
        (
            "chunked over max_body",
            chunked("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
            small_body,
            e(K::BodyTooLarge, 413),
        ),
        (
            "chunked at max_body",
            chunked("3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n"),
            small_body,
            V::Ok,
        ),
    ]
}

#[test]
fn hostile_request_corpus() {
    let cases = table();
    assert!(cases.len() >= 40, "corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for (name, input, limits, expected) in cases {
        let steps = drive_requests(limits, &[&input]);
        let error = steps.iter().find_map(|s| match s {
            RequestStep::Error(k) => Some(*k),
            _ => None,
        });
        let ok = match expected {
            V::Ok => {
                error.is_none()
                    && matches!(steps.last(), Some(RequestStep::Eof(None, _)))
                    && steps.iter().any(|s| matches!(s, RequestStep::End))
            }
            V::Err(kind, status, header) => {
                let header_ok = match header {
                    None => true,
                    // The named header must be reported by the error itself.
                    Some(h) => named_header(&input, limits).as_deref() == Some(h),
                };
                error == Some(kind) && kind.status() == status && header_ok
            }
        };
        if !ok {
            failures.push(format!("{name}: expected {expected:?}, got {steps:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The header named by the error the decoder raises on `input`.
fn named_header(input: &[u8], limits: Limits) -> Option<String> {
    let mut dec = RequestDecoder::new(limits, false);
    let mut buf = input;
    for _ in 0..16 {
        match dec.decode(buf) {
            Ok(d) => {
                buf = buf.get(d.consumed..)?;
                if matches!(d.event, RequestEvent::NeedMore | RequestEvent::Closed) {
                    return None;
                }
            }
            Err(e) => return e.header().map(str::to_owned),
        }
    }
    None
}

#[test]
fn error_display_names_the_header() {
    let raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\0b\r\n\r\n";
    let err = parse_request_head(raw, &Limits::default()).expect_err("NUL refused");
    assert_eq!(err.kind(), ErrorKind::NulByte);
    assert_eq!(err.status(), 400);
    assert_eq!(err.to_string(), "NUL byte in message head (header `X-Bad`)");
}

#[test]
fn partial_head_is_bounded() {
    let limits = Limits::default();
    // Below the limit without an end: more bytes needed.
    let partial = vec![b'a'; limits.max_head - 1];
    assert_eq!(parse_request_head(&partial, &limits), Ok(None));
    // At the limit without an end: refused even though the head is unfinished.
    let full = vec![b'a'; limits.max_head];
    let err = parse_request_head(&full, &limits).expect_err("431");
    assert_eq!((err.kind(), err.status()), (ErrorKind::HeadTooLarge, 431));
    // A head of exactly max_head bytes is accepted.
    let mut exact = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
    let pad = limits.max_head - exact.len() - 4;
    exact.extend(std::iter::repeat_n(b'v', pad));
    exact.extend_from_slice(b"\r\n\r\n");
    assert_eq!(exact.len(), limits.max_head);
    assert!(matches!(parse_request_head(&exact, &limits), Ok(Some(_))));
    let mut over = exact.clone();
    over.insert(30, b'v');
    assert_eq!(
        parse_request_head(&over, &limits).map_err(|e| e.kind()),
        Err(ErrorKind::HeadTooLarge)
    );
}

#[test]
fn too_many_headers_refused_before_the_head_ends() {
    let limits = Limits {
        max_headers: 2,
        ..Limits::default()
    };
    let partial = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n";
    assert_eq!(
        parse_request_head(partial, &limits).map_err(|e| e.kind()),
        Err(ErrorKind::TooManyHeaders)
    );
    let ok = b"GET / HTTP/1.1\r\nHost: a\r\nB: 2\r\n\r\n";
    assert!(matches!(parse_request_head(ok, &limits), Ok(Some(_))));
}
