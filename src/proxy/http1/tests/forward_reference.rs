//! The request/response head forwarders as first written (one comparison per special name,
//! one append per piece), kept as the reference the single-pass forwarders must reproduce byte
//! for byte, with differential tests over generated heads.

use super::super::head::{Headers, RequestHead, ResponseHead};
use super::super::syntax::{is_field_byte, is_tchar};
use super::super::{Limits, parse_request_head, parse_response_head};
use super::*;

/// The former `push_parsed_header` (name as `&str`).
fn push_parsed_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    debug_assert!(!name.is_empty() && name.bytes().all(is_tchar));
    debug_assert!(value.iter().all(|&b| is_field_byte(b)));
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Headers that describe one connection and never cross a proxy (RFC 9110 §7.6.1), plus the
/// framing headers which [`OutFraming`] rewrites.
fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "content-length",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// True when `name` is listed as a connection option in any Connection header.
fn listed_in_connection(headers: &Headers, name: &str) -> bool {
    headers
        .get_all("connection")
        .any(|v| list_elements(v).any(|t| t.eq_ignore_ascii_case(name.as_bytes())))
}

/// Appends the request head to send upstream (HTTP/1.1, origin-form target, Host first).
/// Dropped: hop-by-hop headers (Connection, Keep-Alive, Proxy-Connection, TE, Trailer,
/// Upgrade unless tunnelling, and every header Connection names), the received framing
/// headers (rewritten per [`OutFraming`]) and `Expect` (Arc answers `100-continue` itself).
/// Returns where the request id and traceparent values landed in `out`.
fn reference_write_request_head(
    out: &mut Vec<u8>,
    head: &RequestHead,
    opts: &UpstreamRequest<'_>,
) -> Written {
    let headers = head.headers();
    let mut written = Written::default();

    out.extend_from_slice(head.method_str().as_bytes());
    out.push(b' ');
    match opts.path {
        Some(p) => push_target(out, p),
        None => out.extend_from_slice(head.path().as_bytes()),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let original_host = head.authority().unwrap_or("").as_bytes();
    push_header(out, "Host", opts.host.unwrap_or(original_host));

    let keep_trace = opts.trace.is_none() || {
        let mut tps = headers.get_all("traceparent");
        matches!((tps.next(), tps.next()), (Some(v), None) if valid_traceparent(v))
    };
    let keep_request_id = opts.request_id.is_none() || {
        let mut ids = headers.get_all("x-request-id");
        matches!((ids.next(), ids.next()), (Some(v), None) if valid_request_id(v))
    };
    let client = opts.client;
    let trusted = client.is_some_and(|c| c.trusted);
    // Most requests carry no Connection header: then no name can be listed in one, and the
    // per-header scan of the list is skipped.
    let has_connection = headers.contains("connection");

    for h in headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            continue;
        }
        if is_hop_by_hop(name) {
            if opts.tunnel && name.eq_ignore_ascii_case("upgrade") {
                push_parsed_header(out, name, h.value);
            }
            continue;
        }
        // Arc answers `Expect: 100-continue` itself (see `CONTINUE_100`); forwarding it would
        // make the upstream send a second interim response.
        if (has_connection && listed_in_connection(headers, name))
            || name.eq_ignore_ascii_case("expect")
        {
            continue;
        }
        if client.is_some() {
            if name.eq_ignore_ascii_case("x-forwarded-for") {
                continue;
            }
            if !trusted
                && ["x-forwarded-proto", "x-forwarded-host", "x-forwarded-port"]
                    .iter()
                    .any(|x| name.eq_ignore_ascii_case(x))
            {
                continue;
            }
        }
        if name.eq_ignore_ascii_case("x-request-id") {
            if keep_request_id {
                let start = out.len() + name.len() + 2;
                push_parsed_header(out, name, h.value);
                if opts.request_id.is_some() {
                    written.request_id = Some(start..out.len() - 2);
                }
            }
            continue;
        }
        if name.eq_ignore_ascii_case("traceparent") {
            if keep_trace {
                let start = out.len() + name.len() + 2;
                push_parsed_header(out, name, h.value);
                if opts.trace.is_some() {
                    written.traceparent = Some(start..out.len() - 2);
                }
            }
            continue;
        }
        if name.eq_ignore_ascii_case("tracestate") && !keep_trace {
            continue;
        }
        push_parsed_header(out, name, h.value);
    }

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
            push_header(out, "X-Forwarded-Proto", c.proto.as_bytes());
        }
        if !(trusted && headers.contains("x-forwarded-host")) {
            push_header(out, "X-Forwarded-Host", original_host);
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

/// Appends the response head to send downstream: `HTTP/1.1`, the received status and reason,
/// headers without hop-by-hop ones, framing and Connection as asked.
fn reference_write_response_head(
    out: &mut Vec<u8>,
    head: &ResponseHead,
    opts: &DownstreamResponse<'_>,
) {
    let headers = head.headers();
    let reason = head.reason();
    if reason.is_empty() {
        push_status_line(
            out,
            head.status(),
            super::super::encode::reason_phrase(head.status()).as_bytes(),
        );
    } else {
        push_status_line(out, head.status(), reason);
    }
    let upgrade = opts.connection == ConnectionHeader::Upgrade;
    let has_connection = headers.contains("connection");
    for h in headers.iter() {
        if is_hop_by_hop(h.name) {
            if upgrade && h.name.eq_ignore_ascii_case("upgrade") {
                push_parsed_header(out, h.name, h.value);
            }
            continue;
        }
        if has_connection && listed_in_connection(headers, h.name) {
            continue;
        }
        push_parsed_header(out, h.name, h.value);
    }
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

/// Header lines the generated heads draw from: every special name in several spellings,
/// lines that cannot be copied verbatim (no space, more spaces, trailing whitespace, empty
/// values) and ordinary ones.
const LINES: &[&str] = &[
    "User-Agent: t/1",
    "accept: */*",
    "Accept-Encoding:gzip",
    "X-Pad:   spaced  ",
    "X-Empty:",
    "X-Empty2: ",
    "Connection: keep-alive",
    "connection: close, X-Private",
    "CONNECTION: Upgrade",
    "Connection: cookie, x-empty2",
    "Connection: te, x-pad, Keep-Alive",
    "Connection: close",
    "Close: x",
    "Connection: user-agent",
    "Connection: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA: y",
    "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB: z",
    "X-Private: secret",
    "Keep-Alive: 5",
    "Proxy-Connection: x",
    "TE: trailers",
    "Trailer: X",
    "Upgrade: websocket",
    "Expect: 100-continue",
    "X-Forwarded-For: 10.0.0.1",
    "x-forwarded-proto: http",
    "X-Forwarded-Host: h",
    "X-FORWARDED-PORT: 1",
    "X-Request-ID: abc-123",
    "x-request-id: bad\"id",
    "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "Traceparent: 00-00000000000000000000000000000000-b7ad6b7169203331-01",
    "tracestate: a=b",
    "Cookie: a=b; c=d",
    "x-te: no",
    "Host2: h",
];

fn generated(seed: u64, n: usize) -> Vec<Vec<&'static str>> {
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            let count = (next() % 8) as usize;
            (0..count)
                .map(|_| LINES[(next() % LINES.len() as u64) as usize])
                .collect()
        })
        .collect()
}

fn option_sets() -> Vec<UpstreamRequest<'static>> {
    let client = |trusted| ClientInfo {
        addr: IpAddr::V4(core::net::Ipv4Addr::new(192, 0, 2, 1)),
        trusted,
        proto: "http",
        port: 80,
    };
    let trace = TraceBits {
        trace_id: 7,
        span_id: 9,
        sampled: true,
    };
    vec![
        UpstreamRequest::default(),
        UpstreamRequest {
            tunnel: true,
            client: Some(client(false)),
            request_id: Some(42),
            trace: Some(trace),
            ..UpstreamRequest::default()
        },
        UpstreamRequest {
            client: Some(client(true)),
            request_id: Some(1),
            host: Some(b"rewritten"),
            path: Some(b"/new path"),
            framing: OutFraming::Length(3),
            extra_headers: &[("X-Extra", b"1")],
            ..UpstreamRequest::default()
        },
    ]
}

#[test]
fn request_heads_are_forwarded_exactly_as_before() {
    let mut compared = 0;
    for lines in generated(0x5DEE_CE66_D1CE_4E5B, 3000) {
        let mut raw = b"GET /p?q=1 HTTP/1.1\r\nHost: app.example\r\n".to_vec();
        for l in &lines {
            raw.extend_from_slice(l.as_bytes());
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"\r\n");
        let Ok(Some((head, _))) = parse_request_head(&raw, &Limits::default()) else {
            continue;
        };
        for opts in option_sets() {
            let (mut new, mut old) = (b"x".to_vec(), b"x".to_vec());
            let w_new = write_request_head(&mut new, &head, &opts);
            let w_old = reference_write_request_head(&mut old, &head, &opts);
            assert_eq!(
                String::from_utf8_lossy(&new),
                String::from_utf8_lossy(&old),
                "{lines:?}"
            );
            assert_eq!(w_new, w_old, "{lines:?}");
            compared += 1;
        }
    }
    assert!(compared > 3000, "only {compared} heads compared");
}

#[test]
fn response_heads_are_forwarded_exactly_as_before() {
    let mut compared = 0;
    for (i, lines) in generated(0x2545_F491_4F6C_DD1D, 3000)
        .into_iter()
        .enumerate()
    {
        let mut raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n".to_vec();
        for l in &lines {
            raw.extend_from_slice(l.as_bytes());
            // Responses may end lines with a bare LF: such lines cannot be copied verbatim.
            raw.extend_from_slice(if i % 5 == 0 { b"\n" } else { b"\r\n" });
        }
        raw.extend_from_slice(b"\r\n");
        let Ok(Some((head, _))) = parse_response_head(&raw, &Limits::default()) else {
            continue;
        };
        for connection in [
            ConnectionHeader::Omit,
            ConnectionHeader::Close,
            ConnectionHeader::Upgrade,
        ] {
            let opts = DownstreamResponse {
                framing: OutFraming::Keep,
                connection,
                extra_headers: &[("Server", b"arc")],
            };
            let (mut new, mut old) = (Vec::new(), Vec::new());
            write_response_head(&mut new, &head, &opts);
            reference_write_response_head(&mut old, &head, &opts);
            assert_eq!(
                String::from_utf8_lossy(&new),
                String::from_utf8_lossy(&old),
                "{lines:?}"
            );
            compared += 1;
        }
    }
    assert!(compared > 3000, "only {compared} heads compared");
}
