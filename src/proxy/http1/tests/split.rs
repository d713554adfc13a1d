//! Bodies and pipelines split at every byte offset give the same result as whole input.

use super::super::fuzzing::{RequestStep, drive_body, drive_requests};
use super::*;

const CHUNKED: &[u8] = b"5;name=value;q=\"quoted;x\"\r\nhello\r\n\
1A\r\nabcdefghijklmnopqrstuvwxyz\r\n1 ; ext\r\n!\r\n0;last\r\nX-Checksum: abc\r\nX-Two: 2\r\n\r\nNEXT";

#[test]
fn chunked_body_at_every_split() {
    let whole = drive_body(BodyKind::Chunked, Limits::default(), &[CHUNKED]);
    assert_eq!(whole.error, None);
    assert!(whole.done);
    assert_eq!(whole.data, b"helloabcdefghijklmnopqrstuvwxyz!");
    // The decoder stops at the body's end: what follows is left alone.
    assert_eq!(whole.consumed, CHUNKED.len() - 4);
    let trailers = whole.trailers.clone().expect("trailers");
    assert_eq!(trailers.get("X-checksum"), Some(&b"abc"[..]));

    for cut in 0..=CHUNKED.len() {
        let (a, b) = CHUNKED.split_at(cut);
        assert_eq!(
            drive_body(BodyKind::Chunked, Limits::default(), &[a, b]),
            whole,
            "cut at {cut}"
        );
    }
    for cut1 in 0..CHUNKED.len() {
        for cut2 in cut1..=CHUNKED.len() {
            let pieces = [&CHUNKED[..cut1], &CHUNKED[cut1..cut2], &CHUNKED[cut2..]];
            assert_eq!(
                drive_body(BodyKind::Chunked, Limits::default(), &pieces),
                whole,
                "cuts at {cut1}, {cut2}"
            );
        }
    }
    let bytes: Vec<&[u8]> = CHUNKED.chunks(1).collect();
    assert_eq!(
        drive_body(BodyKind::Chunked, Limits::default(), &bytes),
        whole
    );
}

#[test]
fn dropped_trailers_still_frame() {
    let mut dec = BodyDecoder::new(BodyKind::Chunked, &Limits::default(), false).expect("ok");
    let step = dec.decode(CHUNKED).expect("valid");
    assert_eq!(step.data, 27..32);
    let mut consumed = step.consumed;
    loop {
        let s = dec.decode(&CHUNKED[consumed..]).expect("valid");
        consumed += s.consumed;
        if s.done {
            break;
        }
        assert!(s.consumed > 0);
    }
    assert_eq!(consumed, CHUNKED.len() - 4);
    assert_eq!(dec.take_trailers(), None);
}

fn pipeline() -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n");
    p.extend_from_slice(b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world");
    p.extend_from_slice(b"\r\n"); // a stray CRLF after a body is tolerated
    p.extend_from_slice(b"PUT /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    p.extend_from_slice(b"3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n");
    p.extend_from_slice(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    p.extend_from_slice(b"HEAD /4 HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n");
    p.extend_from_slice(b"GET /5 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    p.extend_from_slice(b"GET /ignored HTTP/1.1\r\nHost: a\r\n\r\n");
    p
}

#[test]
fn pipeline_at_every_split() {
    let p = pipeline();
    let whole = drive_requests(Limits::default(), &[&p]);
    let shape: Vec<String> = whole
        .iter()
        .map(|s| match s {
            RequestStep::Head(h) => format!("head {}", h.path()),
            RequestStep::Body(b) => format!("body {}", String::from_utf8_lossy(b)),
            other => format!("{other:?}"),
        })
        .collect();
    let ignored = b"GET /ignored HTTP/1.1\r\nHost: a\r\n\r\n".len();
    assert_eq!(
        shape,
        vec![
            "head /1".to_string(),
            "End".into(),
            "head /2".into(),
            "body hello world".into(),
            "End".into(),
            "head /3".into(),
            "body abcde".into(),
            "End".into(),
            "head /ws".into(),
            "Upgrade".into(),
            "head /4".into(),
            "End".into(),
            "head /5".into(),
            "End".into(),
            "Closed".into(),
            format!("Eof(None, {ignored})"),
        ]
    );
    for cut in 0..=p.len() {
        let (a, b) = p.split_at(cut);
        assert_eq!(
            drive_requests(Limits::default(), &[a, b]),
            whole,
            "cut at {cut}"
        );
    }
    let bytes: Vec<&[u8]> = p.chunks(1).collect();
    assert_eq!(drive_requests(Limits::default(), &bytes), whole);
    for size in [2, 3, 7, 64] {
        let pieces: Vec<&[u8]> = p.chunks(size).collect();
        assert_eq!(
            drive_requests(Limits::default(), &pieces),
            whole,
            "size {size}"
        );
    }
}

#[test]
fn errors_are_the_same_at_every_split() {
    let inputs: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1x\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: 1\r\n\r\n",
    ];
    let limits = Limits {
        max_headers: 3,
        ..Limits::default()
    };
    for input in inputs {
        let whole = drive_requests(limits, &[input]);
        assert!(
            whole.iter().any(|s| matches!(s, RequestStep::Error(_))),
            "{whole:?}"
        );
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(drive_requests(limits, &[a, b]), whole, "cut at {cut}");
        }
    }
}
