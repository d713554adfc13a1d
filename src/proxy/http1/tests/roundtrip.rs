//! parse → serialize → parse keeps the request (minus hop-by-hop headers); chunked encode →
//! decode keeps the data.

use super::super::fuzzing::drive_body;
use super::*;

fn forwarded(h: &RequestHead, opts: &UpstreamRequest<'_>) -> (RequestHead, Vec<u8>) {
    let mut out = Vec::new();
    write_request_head(&mut out, h, opts);
    (req(&out), out)
}

fn names(h: &RequestHead) -> Vec<(String, Vec<u8>)> {
    h.headers()
        .iter()
        .map(|x| (x.name.to_owned(), x.value.to_vec()))
        .collect()
}

#[test]
fn request_round_trip_keeps_end_to_end_headers_in_order() {
    let raw = b"POST /a/b?c=d HTTP/1.1\r\nHost: app.example.com\r\nUser-Agent: t\r\n\
Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
Trailer: X-T\r\nProxy-Connection: keep-alive\r\naccept: */*\r\nContent-Length: 3\r\n\
X-Multi: 1\r\nX-Multi: 2\r\n\r\n";
    let h = req(raw);
    let (again, out) = forwarded(&h, &UpstreamRequest::default());
    assert!(out.starts_with(b"POST /a/b?c=d HTTP/1.1\r\nHost: app.example.com\r\n"));
    assert_eq!(again.method(), Method::Post);
    assert_eq!(again.path(), "/a/b?c=d");
    assert_eq!(again.body_kind(), BodyKind::Length(3));
    assert_eq!(
        names(&again),
        vec![
            ("Host".into(), b"app.example.com".to_vec()),
            ("User-Agent".into(), b"t".to_vec()),
            ("accept".into(), b"*/*".to_vec()),
            ("X-Multi".into(), b"1".to_vec()),
            ("X-Multi".into(), b"2".to_vec()),
            ("Content-Length".into(), b"3".to_vec()),
        ]
    );
    // A second pass changes nothing: the forwarded form is a fixed point.
    let (third, out2) = forwarded(&again, &UpstreamRequest::default());
    assert_eq!(out2, out);
    assert_eq!(names(&third), names(&again));
}

#[test]
fn round_trip_of_http10_and_absolute_form() {
    let h = req(b"GET http://a.example:8080/x?y HTTP/1.1\r\nHost: a.example:8080\r\n\r\n");
    let (again, out) = forwarded(&h, &UpstreamRequest::default());
    assert!(out.starts_with(b"GET /x?y HTTP/1.1\r\nHost: a.example:8080\r\n"));
    assert!(!again.is_absolute_form());

    let h10 = req(b"GET /old HTTP/1.0\r\nX-A: 1\r\n\r\n");
    let (again, out) = forwarded(&h10, &UpstreamRequest::default());
    assert_eq!(again.version(), Version::Http11);
    assert_eq!(out, b"GET /old HTTP/1.1\r\nHost: \r\nX-A: 1\r\n\r\n");
}

#[test]
fn chunked_round_trip_keeps_codings_and_framing() {
    let h = req(b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    let (again, out) = forwarded(&h, &UpstreamRequest::default());
    assert_eq!(again.body_kind(), BodyKind::Chunked);
    assert!(
        out.windows(36)
            .any(|w| w == b"Transfer-Encoding: gzip, chunked\r\n\r\n")
    );
    let (as_len, _) = forwarded(
        &h,
        &UpstreamRequest {
            framing: OutFraming::Length(7),
            ..UpstreamRequest::default()
        },
    );
    assert_eq!(as_len.body_kind(), BodyKind::Length(7));
    assert!(!as_len.headers().contains("transfer-encoding"));
}

#[test]
fn chunked_encode_then_decode() {
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    for piece in [1usize, 2, 15, 16, 17, 255, 256, 4096, 5000] {
        let mut enc = Vec::new();
        for c in data.chunks(piece) {
            ChunkedEncoder::encode_chunk(&mut enc, c);
        }
        ChunkedEncoder::encode_chunk(&mut enc, b""); // no-op: must not end the body
        let trailers = {
            let raw = b"HTTP/1.1 200 OK\r\nX-Sum: 42\r\nX-Other: v\r\n\r\n";
            resp(raw).headers().clone()
        };
        ChunkedEncoder::finish(&mut enc, Some(&trailers));
        let o = drive_body(BodyKind::Chunked, Limits::default(), &[&enc]);
        assert_eq!(o.error, None, "piece {piece}");
        assert!(o.done);
        assert_eq!(o.consumed, enc.len());
        assert_eq!(o.data, data);
        let t = o.trailers.expect("trailers kept");
        assert_eq!(t.get("x-sum"), Some(&b"42"[..]));
        assert_eq!(t.len(), 2);
    }
}

#[test]
fn chunk_size_line_on_the_stack() {
    for (n, s) in [
        (0u64, &b"0\r\n"[..]),
        (1, b"1\r\n"),
        (255, b"ff\r\n"),
        (4096, b"1000\r\n"),
        (u64::MAX, b"ffffffffffffffff\r\n"),
    ] {
        assert_eq!(ChunkedEncoder::size_line(n).as_ref(), s);
    }
    let mut out = Vec::new();
    ChunkedEncoder::finish(&mut out, None);
    assert_eq!(out, LAST_CHUNK);
}
