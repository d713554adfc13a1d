//! Serializers: forwarding headers, ids, trace context, hop-by-hop removal, responses.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

fn client(trusted: bool) -> ClientInfo<'static> {
    ClientInfo {
        addr: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
        trusted,
        proto: "https",
        port: 8443,
    }
}

fn forward(raw: &[u8], opts: &UpstreamRequest<'_>) -> (RequestHead, Vec<u8>, Written) {
    let h = req(raw);
    let mut out = b"garbage-before".to_vec();
    out.clear();
    let w = write_request_head(&mut out, &h, opts);
    (req(&out), out, w)
}

const WITH_XFF: &[u8] =
    b"GET / HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n\
X-Forwarded-Proto: http\r\nX-Forwarded-Host: spoofed\r\nX-Forwarded-Port: 1\r\n\r\n";

#[test]
fn forwarded_headers_untrusted_peer_replaced() {
    let opts = UpstreamRequest {
        client: Some(client(false)),
        ..UpstreamRequest::default()
    };
    let (h, _, _) = forward(WITH_XFF, &opts);
    let hs = h.headers();
    assert_eq!(hs.get_all("x-forwarded-for").count(), 1);
    assert_eq!(hs.get("x-forwarded-for"), Some(&b"203.0.113.7"[..]));
    assert_eq!(hs.get("x-forwarded-proto"), Some(&b"https"[..]));
    assert_eq!(hs.get("x-forwarded-host"), Some(&b"app.example"[..]));
    assert_eq!(hs.get("x-forwarded-port"), Some(&b"8443"[..]));
    assert_eq!(hs.get_all("x-forwarded-host").count(), 1);
}

#[test]
fn forwarded_headers_trusted_peer_appended() {
    let opts = UpstreamRequest {
        client: Some(client(true)),
        ..UpstreamRequest::default()
    };
    let (h, _, _) = forward(WITH_XFF, &opts);
    let hs = h.headers();
    assert_eq!(
        hs.get("x-forwarded-for"),
        Some(&b"10.0.0.1, 10.0.0.2, 203.0.113.7"[..])
    );
    assert_eq!(hs.get("x-forwarded-proto"), Some(&b"http"[..]));
    assert_eq!(hs.get("x-forwarded-host"), Some(&b"spoofed"[..]));
    assert_eq!(hs.get_all("x-forwarded-for").count(), 1);

    // IPv6 addresses are written without brackets.
    let opts = UpstreamRequest {
        client: Some(ClientInfo {
            addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
            ..client(true)
        }),
        ..UpstreamRequest::default()
    };
    let (h, _, _) = forward(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &opts);
    assert_eq!(h.headers().get("x-forwarded-for"), Some(&b"::1"[..]));
}

#[test]
fn request_id_kept_or_generated() {
    let opts = UpstreamRequest {
        request_id: Some(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
        ..UpstreamRequest::default()
    };
    let (h, out, w) = forward(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &opts);
    assert_eq!(
        h.headers().get("x-request-id"),
        Some(&b"0123456789abcdef0011223344556677"[..])
    );
    assert_eq!(
        &out[w.request_id.expect("range")],
        b"0123456789abcdef0011223344556677"
    );

    let (h, out, w) = forward(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc-123\r\n\r\n",
        &opts,
    );
    assert_eq!(h.headers().get("x-request-id"), Some(&b"abc-123"[..]));
    assert_eq!(&out[w.request_id.expect("range")], b"abc-123");

    // Invalid or duplicated ids are replaced.
    for bad in [
        "X-Request-ID: a b\r\n",
        "X-Request-ID: a\r\nX-Request-ID: b\r\n",
    ] {
        let raw = format!("GET / HTTP/1.1\r\nHost: a\r\n{bad}\r\n");
        let (h, _, _) = forward(raw.as_bytes(), &opts);
        assert_eq!(h.headers().get_all("x-request-id").count(), 1);
        assert_eq!(h.headers().get("x-request-id").map(<[u8]>::len), Some(32));
    }
    // Without bits, X-Request-ID is left alone.
    let (h, _, w) = forward(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-ID: a b\r\n\r\n",
        &UpstreamRequest::default(),
    );
    assert_eq!(h.headers().get("x-request-id"), Some(&b"a b"[..]));
    assert_eq!(w.request_id, None);
}

#[test]
fn traceparent_validation() {
    let good = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert!(valid_traceparent(good));
    assert!(valid_traceparent(
        b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"
    ));
    let bad: &[&[u8]] = &[
        b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        b"",
    ];
    for b in bad {
        assert!(!valid_traceparent(b), "{:?}", String::from_utf8_lossy(b));
    }
}

#[test]
fn traceparent_kept_or_started() {
    let trace = TraceBits {
        trace_id: 0xabc,
        span_id: 0x12,
        sampled: true,
    };
    let opts = UpstreamRequest {
        trace: Some(trace),
        ..UpstreamRequest::default()
    };
    let valid = b"GET / HTTP/1.1\r\nHost: a\r\n\
traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\ntracestate: v=1\r\n\r\n";
    let (h, out, w) = forward(valid, &opts);
    assert_eq!(
        h.headers().get("traceparent"),
        Some(&b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"[..])
    );
    assert_eq!(h.headers().get("tracestate"), Some(&b"v=1"[..]));
    assert_eq!(
        &out[w.traceparent.expect("range")],
        h.headers().get("traceparent").unwrap_or_default()
    );

    let invalid = b"GET / HTTP/1.1\r\nHost: a\r\n\
traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01\r\ntracestate: v=1\r\n\r\n";
    let (h, out, w) = forward(invalid, &opts);
    let started = b"00-00000000000000000000000000000abc-0000000000000012-01";
    assert_eq!(h.headers().get("traceparent"), Some(&started[..]));
    assert_eq!(h.headers().get("tracestate"), None);
    assert_eq!(&out[w.traceparent.expect("range")], started);
    assert!(valid_traceparent(started));

    // All-zero random bits still give a valid trace.
    let zero = UpstreamRequest {
        trace: Some(TraceBits {
            trace_id: 0,
            span_id: 0,
            sampled: false,
        }),
        ..UpstreamRequest::default()
    };
    let (h, _, _) = forward(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &zero);
    let tp = h.headers().get("traceparent").unwrap_or_default();
    assert!(valid_traceparent(tp), "{tp:?}");
    assert!(tp.ends_with(b"-00"));
}

#[test]
fn hop_by_hop_removed_and_tunnel_keeps_upgrade() {
    let raw = b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, X-Private\r\n\
Upgrade: websocket\r\nX-Private: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nSec-WebSocket-Key: k\r\n\
Expect: 100-continue\r\n\r\n";
    let (h, _, _) = forward(raw, &UpstreamRequest::default());
    for gone in [
        "connection",
        "upgrade",
        "x-private",
        "keep-alive",
        "te",
        "expect",
    ] {
        assert!(!h.headers().contains(gone), "{gone} forwarded");
    }
    assert!(h.headers().contains("sec-websocket-key"));

    let (h, _, _) = forward(
        raw,
        &UpstreamRequest {
            tunnel: true,
            ..UpstreamRequest::default()
        },
    );
    assert!(h.upgrade_requested());
    assert_eq!(h.headers().get("upgrade"), Some(&b"websocket"[..]));
    assert_eq!(h.headers().get("connection"), Some(&b"upgrade"[..]));
    assert!(!h.headers().contains("x-private"));
}

#[test]
fn host_and_path_rewrite() {
    let opts = UpstreamRequest {
        host: Some(b"backend.internal:8080"),
        path: Some(b"/new path/\xff?x=1"),
        client: Some(client(false)),
        extra_headers: &[
            ("X-Added", b"yes"),
            ("Bad Name", b"x"),
            ("X-Inject", b"a\r\nEvil: 1"),
        ],
        ..UpstreamRequest::default()
    };
    let (h, out, _) = forward(b"GET /old HTTP/1.1\r\nHost: public.example\r\n\r\n", &opts);
    assert_eq!(h.host_header(), Some("backend.internal:8080"));
    assert_eq!(h.path(), "/new%20path/%ff?x=1");
    assert_eq!(
        h.headers().get("x-forwarded-host"),
        Some(&b"public.example"[..])
    );
    assert_eq!(h.headers().get("x-added"), Some(&b"yes"[..]));
    assert_eq!(h.headers().get("x-inject"), Some(&b"a  Evil: 1"[..]));
    assert!(!h.headers().contains("evil"));
    assert!(!out.windows(8).any(|w| w == b"Bad Name"));
}

#[test]
fn response_head_serialization() {
    let r = resp(b"HTTP/1.0 200 Fine\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\
Keep-Alive: timeout=5\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
    let mut out = Vec::new();
    write_response_head(
        &mut out,
        &r,
        &DownstreamResponse {
            framing: OutFraming::Keep,
            connection: ConnectionHeader::Close,
            extra_headers: &[("Server", b"arc")],
        },
    );
    assert_eq!(
        out,
        b"HTTP/1.1 200 Fine\r\nContent-Type: text/plain\r\nConnection: close\r\n\
Content-Length: 5\r\nServer: arc\r\n\r\n"
    );

    let r = resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
    out.clear();
    write_response_head(
        &mut out,
        &r,
        &DownstreamResponse {
            framing: OutFraming::Chunked,
            connection: ConnectionHeader::Omit,
            extra_headers: &[],
        },
    );
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let again = resp(&out);
    assert_eq!(
        response_framing(&again, Method::Get, false).map(|f| f.body),
        Ok(BodyKind::Chunked)
    );

    let r = resp(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    );
    out.clear();
    write_response_head(
        &mut out,
        &r,
        &DownstreamResponse {
            framing: OutFraming::Omit,
            connection: ConnectionHeader::Upgrade,
            extra_headers: &[],
        },
    );
    assert_eq!(
        out,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    );
}

#[test]
fn direct_and_error_responses() {
    let mut out = Vec::new();
    write_direct_response(
        &mut out,
        &DirectResponse {
            status: 200,
            content_type: "text/plain",
            body: b"Arc is running\n",
            close: false,
            head_request: false,
            extra_headers: &[],
        },
    );
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 15\r\n\r\nArc is running\n"
    );
    out.clear();
    write_direct_response(
        &mut out,
        &DirectResponse {
            status: 308,
            content_type: "",
            body: b"",
            close: true,
            head_request: true,
            extra_headers: &[("Location", b"https://app.example.com/")],
        },
    );
    assert_eq!(
        out,
        b"HTTP/1.1 308 Permanent Redirect\r\nContent-Length: 0\r\nConnection: close\r\n\
Location: https://app.example.com/\r\n\r\n"
    );
    out.clear();
    write_error_response(&mut out, 431, true, false);
    assert_eq!(
        out,
        b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 36\r\nConnection: close\r\n\r\n431 Request Header Fields Too Large\n"
    );
    out.clear();
    write_error_response(&mut out, 404, false, true);
    assert!(out.ends_with(b"Content-Length: 14\r\n\r\n"));
}
