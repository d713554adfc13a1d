//! Keep-alive and framing decision tables for requests and responses.

use super::*;

#[test]
fn request_keep_alive_table() {
    // (version, Connection header, keep-alive)
    let table: &[(&str, Option<&str>, bool)] = &[
        ("HTTP/1.1", None, true),
        ("HTTP/1.1", Some("close"), false),
        ("HTTP/1.1", Some("Close"), false),
        ("HTTP/1.1", Some("keep-alive"), true),
        ("HTTP/1.1", Some("keep-alive, close"), false),
        ("HTTP/1.1", Some("upgrade"), true),
        ("HTTP/1.0", None, false),
        ("HTTP/1.0", Some("keep-alive"), true),
        ("HTTP/1.0", Some("Keep-Alive"), true),
        ("HTTP/1.0", Some("close"), false),
        ("HTTP/1.0", Some("keep-alive, close"), false),
        ("HTTP/1.0", Some("foo"), false),
    ];
    for &(version, conn, expected) in table {
        let mut raw = format!("GET / {version}\r\nHost: a\r\n");
        if let Some(c) = conn {
            raw.push_str(&format!("Connection: {c}\r\n"));
        }
        raw.push_str("\r\n");
        let h = req(raw.as_bytes());
        assert_eq!(h.keep_alive(), expected, "{version} {conn:?}");
    }
}

#[test]
fn request_body_framing_table() {
    let table: &[(&str, BodyKind)] = &[
        ("", BodyKind::None),
        ("Content-Length: 0\r\n", BodyKind::Length(0)),
        ("Content-Length: 42\r\n", BodyKind::Length(42)),
        ("Transfer-Encoding: chunked\r\n", BodyKind::Chunked),
        ("Transfer-Encoding: gzip, chunked\r\n", BodyKind::Chunked),
    ];
    for &(hdrs, expected) in table {
        let h = req(format!("POST / HTTP/1.1\r\nHost: a\r\n{hdrs}\r\n").as_bytes());
        assert_eq!(h.body_kind(), expected, "{hdrs:?}");
    }
}

#[test]
fn expect_and_upgrade_detection() {
    let h = req(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n");
    assert!(h.expects_continue());
    // Ignored on HTTP/1.0, whatever its value.
    let h = req(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n");
    assert!(!h.expects_continue());
    let h = req(b"PUT / HTTP/1.0\r\nExpect: other\r\n\r\n");
    assert!(!h.expects_continue());

    let cases: &[(&str, bool)] = &[
        (
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            true,
        ),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, upgrade\r\nUpgrade: h2c\r\n\r\n",
            true,
        ),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
            false,
        ),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n",
            false,
        ),
        (
            "GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            false,
        ),
    ];
    for &(raw, expected) in cases {
        let h = req(raw.as_bytes());
        assert_eq!(h.upgrade_requested(), expected, "{raw:?}");
        assert_eq!(h.upgrade_protocol().is_some(), expected);
    }
    assert_eq!(CONTINUE_100, b"HTTP/1.1 100 Continue\r\n\r\n");
}

#[test]
fn response_framing_table() {
    use BodyKind::*;
    // (request method, upgrade requested, response head, body, keep-alive, tunnel, informational)
    let table: &[(Method, bool, &str, BodyKind, bool, bool, bool)] = &[
        (
            Method::Get,
            false,
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
            Length(5),
            true,
            false,
            false,
        ),
        (
            Method::Head,
            false,
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
            None,
            true,
            false,
            false,
        ),
        (
            Method::Head,
            false,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n",
            None,
            true,
            false,
            false,
        ),
        (
            Method::Get,
            false,
            "HTTP/1.1 204 No Content\r\n",
            None,
            true,
            false,
            false,
        ),
        (
            Method::Get,
            false,
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n",
            None,
            true,
            false,
            false,
        ),
        (
            Method::Get,
            false,
            "HTTP/1.1 100 Continue\r\n",
            None,
            true,
            false,
            true,
        ),
        (
            Method::Get,
            false,
            "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n",
            None,
            true,
            false,
            true,
        ),
        (
            Method::Get,
            true,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n",
            None,
            false,
            true,
            false,
        ),
        (
            Method::Get,
            true,
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n",
            Length(0),
            true,
            false,
            false,
        ),
        (
            Method::Get,
            false,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n",
            Chunked,
            true,
            false,
            false,
        ),
        (
            Method::Get,
            false,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n",
            UntilClose,
            false,
            false,
            false,
        ),
        (
            Method::Get,
            false,
            "HTTP/1.1 200 OK\r\n",
            UntilClose,
            false,
            false,
            false,
        ),
        (
            Method::Get,
            false,
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n",
            Length(1),
            false,
            false,
            false,
        ),
        (
            Method::Get,
            false,
            "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n",
            Length(1),
            false,
            false,
            false,
        ),
        (
            Method::Get,
            false,
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n",
            Length(1),
            true,
            false,
            false,
        ),
        (
            Method::Get,
            false,
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n",
            UntilClose,
            false,
            false,
            false,
        ),
        (
            Method::Get,
            false,
            "HTTP/1.0 200 OK\r\n",
            UntilClose,
            false,
            false,
            false,
        ),
        (
            Method::Connect,
            false,
            "HTTP/1.1 200 OK\r\n",
            None,
            false,
            true,
            false,
        ),
        (
            Method::Post,
            false,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n",
            Length(3),
            true,
            false,
            false,
        ),
    ];
    for &(method, upgrade, head, body, ka, tunnel, info) in table {
        let h = resp(format!("{head}\r\n").as_bytes());
        let f = response_framing(&h, method, upgrade).expect("framing");
        assert_eq!(
            f,
            ResponseFraming {
                body,
                keep_alive: ka,
                tunnel,
                informational: info
            },
            "{method:?} {head:?}"
        );
    }
}

#[test]
fn unexpected_101_and_bad_response_heads() {
    let h = resp(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(
        response_framing(&h, Method::Get, false).map_err(|e| e.kind()),
        Err(ErrorKind::UnexpectedSwitchingProtocols)
    );
    let bad: &[(&[u8], ErrorKind)] = &[
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            ErrorKind::ContentLengthWithTransferEncoding,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            ErrorKind::ConflictingContentLength,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            ErrorKind::InvalidContentLength,
        ),
        (b"HTTP/1.1 20 OK\r\n\r\n", ErrorKind::InvalidStatus),
        (b"HTTP/1.1 600 Odd\r\n\r\n", ErrorKind::InvalidStatus),
        (b"HTTP/1.1 200OK\r\n\r\n", ErrorKind::InvalidStatus),
        (b"HTTP/2.0 200 OK\r\n\r\n", ErrorKind::UnsupportedVersion),
        (b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", ErrorKind::ObsFold),
        (b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", ErrorKind::BareCr),
        (
            b"HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
            ErrorKind::WhitespaceBeforeColon,
        ),
    ];
    for &(raw, kind) in bad {
        assert_eq!(
            parse_response_head(raw, &Limits::default()).map_err(|e| e.kind()),
            Err(kind),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
    // Responses may end lines with a bare LF; the reason phrase may be empty.
    let h = resp(b"HTTP/1.1 200\nX: 1\n\n");
    assert_eq!(
        (h.status(), h.reason(), h.headers().len()),
        (200, &b""[..], 1)
    );
    let h = resp(b"HTTP/1.1 404 \r\n\r\n");
    assert_eq!(h.reason(), b"");
}
