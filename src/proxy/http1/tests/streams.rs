//! Request and response stream decoders: events, pauses, EOF handling.

use super::super::fuzzing::{ResponseStep, drive_response};
use super::*;

fn decode_all(dec: &mut RequestDecoder, input: &[u8]) -> (Vec<RequestEvent>, usize) {
    let mut pos = 0;
    let mut events = Vec::new();
    for _ in 0..64 {
        let d = dec.decode(&input[pos..]).expect("valid");
        let stop = matches!(
            d.event,
            RequestEvent::NeedMore | RequestEvent::Paused | RequestEvent::Closed
        );
        let event = match d.event {
            RequestEvent::Body(r) => RequestEvent::Body(r.start + pos..r.end + pos),
            e => e,
        };
        pos += d.consumed;
        events.push(event);
        if stop {
            break;
        }
    }
    (events, pos)
}

#[test]
fn upgrade_pauses_until_resumed() {
    let input = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello";
    let mut dec = RequestDecoder::new(Limits::default(), false);
    let (events, pos) = decode_all(&mut dec, input);
    assert!(matches!(&events[0], RequestEvent::Head(h) if h.upgrade_requested()));
    assert_eq!(
        &events[1..],
        &[RequestEvent::UpgradeRequested, RequestEvent::Paused]
    );
    // The frame bytes after the head are left for the tunnel.
    assert_eq!(&input[pos..], b"\x81\x05hello");
    assert_eq!(dec.finish_eof(&input[pos..]), Ok(()));

    // Declined upgrade: HTTP parsing goes on.
    let mut dec = RequestDecoder::new(Limits::default(), false);
    let two = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n";
    let (_, pos) = decode_all(&mut dec, two);
    dec.resume();
    let (events, _) = decode_all(&mut dec, &two[pos..]);
    assert!(matches!(&events[0], RequestEvent::Head(h) if h.path() == "/next"));
}

#[test]
fn close_and_eof_rules() {
    let mut dec = RequestDecoder::new(Limits::default(), false);
    let input = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /x HTTP/1.1\r\n";
    let (events, pos) = decode_all(&mut dec, input);
    assert_eq!(events.last(), Some(&RequestEvent::Closed));
    assert_eq!(events[1], RequestEvent::End);
    assert_eq!(dec.finish_eof(&input[pos..]), Ok(()));

    // EOF inside a head or a body is an error; between requests it is clean.
    let mut dec = RequestDecoder::new(Limits::default(), false);
    assert!(dec.is_idle(b"\r\n"));
    assert_eq!(dec.finish_eof(b""), Ok(()));
    assert_eq!(
        dec.finish_eof(b"GET / HT").map_err(|e| e.kind()),
        Err(ErrorKind::IncompleteHead)
    );
    let body = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc";
    let (events, pos) = decode_all(&mut dec, body);
    assert_eq!(events[1], RequestEvent::Body(body.len() - 3..body.len()));
    assert_eq!(pos, body.len());
    assert!(!dec.is_idle(b""));
    assert_eq!(
        dec.finish_eof(b"").map_err(|e| e.kind()),
        Err(ErrorKind::IncompleteBody)
    );

    // The core may stop reading after the current request.
    let mut dec = RequestDecoder::new(Limits::default(), false);
    dec.close();
    assert_eq!(
        dec.decode(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .map(|d| d.event),
        Ok(RequestEvent::Closed)
    );
}

#[test]
fn errors_are_sticky() {
    let mut dec = RequestDecoder::new(Limits::default(), false);
    let bad = b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n";
    let e1 = dec.decode(bad).expect_err("refused");
    assert_eq!(e1.kind(), ErrorKind::ConflictingContentLength);
    assert_eq!(e1.header(), Some("Content-Length"));
    assert_eq!(dec.decode(b"").expect_err("still refused"), e1);
}

#[test]
fn response_decoder_paths() {
    let l = Limits::default();
    let steps = drive_response(
        l,
        Method::Get,
        false,
        &[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"],
    );
    assert!(matches!(&steps[0], ResponseStep::Informational(h) if h.status() == 100));
    assert!(matches!(&steps[1], ResponseStep::Head(h, _) if h.status() == 200));
    assert_eq!(steps[2], ResponseStep::Body(b"ok".to_vec()));
    assert_eq!(steps[3], ResponseStep::End(true));

    // HEAD: Content-Length describes the absent body.
    let steps = drive_response(
        l,
        Method::Head,
        false,
        &[b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"],
    );
    assert_eq!(steps[1], ResponseStep::End(true));

    // Read until close: EOF completes the body, and the connection is not reusable.
    let mut dec = ResponseDecoder::new(l, Method::Get, false);
    let input = b"HTTP/1.1 200 OK\r\n\r\nstream";
    let d = dec.decode(input).expect("head");
    assert!(matches!(d.event, ResponseEvent::Head(_, f) if f.body == BodyKind::UntilClose));
    let d2 = dec.decode(&input[d.consumed..]).expect("body");
    assert_eq!(d2.event, ResponseEvent::Body(0..6));
    assert_eq!(
        dec.decode(b"").map(|d| d.event),
        Ok(ResponseEvent::NeedMore)
    );
    dec.finish_eof().expect("clean end");
    assert_eq!(
        dec.decode(b"").map(|d| d.event),
        Ok(ResponseEvent::End { keep_alive: false })
    );

    // 101 to an upgrade request: tunnel, bytes after the head are left.
    let mut dec = ResponseDecoder::new(l, Method::Get, true);
    let input = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x00";
    let d = dec.decode(input).expect("head");
    assert!(matches!(d.event, ResponseEvent::Head(_, f) if f.tunnel));
    assert_eq!(&input[d.consumed..], b"\x81\x00");
    assert!(dec.is_done());

    // EOF inside a content-length body is an error (502 upstream).
    let mut dec = ResponseDecoder::new(l, Method::Get, false);
    let input = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab";
    let d = dec.decode(input).expect("head");
    dec.decode(&input[d.consumed..]).expect("body");
    assert_eq!(
        dec.finish_eof().map_err(|e| e.kind()),
        Err(ErrorKind::IncompleteBody)
    );
}
