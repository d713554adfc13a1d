//! The fuzz entry points over the seed corpus and deterministic pseudo-random mutations, so
//! their invariants are checked on every test run (the real fuzzer lives in `fuzz/`). The
//! generator and mutations are the shared ones of `crate::fuzz_smoke`.

use super::super::fuzzing;

/// Bytes that matter to the grammar, so mutations hit interesting paths more often.
const INTERESTING: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"\0",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"0",
    b"f",
    b"\r\n\r\n",
    b"Content-Length: 3\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Host: a\r\n",
    b"Connection: close\r\n",
    b"Connection: upgrade\r\nUpgrade: x\r\n",
    b"HTTP/1.0",
    b"ffffffffffffffffff",
    b"0\r\n\r\n",
    b"GET / HTTP/1.1\r\n",
];

/// Mutations per target and run (bounded so the suite stays fast).
const MUTATIONS: usize = 20_000;

fn run(target: fn(&[u8])) {
    crate::fuzz_smoke::run(&fuzzing::seeds(), INTERESTING, MUTATIONS, target);
}

#[test]
fn fuzz_request_seeds_and_mutations() {
    run(fuzzing::request);
}

#[test]
fn fuzz_chunked_seeds_and_mutations() {
    run(fuzzing::chunked);
}

#[test]
fn fuzz_response_seeds_and_mutations() {
    run(fuzzing::response);
}

/// Found by the `chunked` target in CI: trailer fields read without a space after the colon
/// (`A:`), at the head limit. The encoder writes `A: `, one byte longer per field; the
/// re-encoded body must still decode to the same data and trailers.
#[test]
fn fuzz_chunked_regression_trailers_at_the_head_limit() {
    const INPUT: &[u8] = &[
        37, 49, 48, 59, 101, 34, 13, 10, 48, 49, 50, 51, 52, 55, 54, 49, 97, 61, 53, 66, 99, 100,
        101, 102, 13, 10, 48, 13, 10, 65, 58, 13, 10, 67, 58, 53, 134, 134, 134, 134, 134, 134,
        134, 134, 134, 134, 134, 134, 255, 66, 134, 134, 134, 134, 134, 134, 50, 104, 113, 34, 13,
        10, 67, 58, 50, 104, 134, 134, 134, 134, 134, 134, 134, 134, 134, 134, 134, 134, 150, 134,
        134, 134, 134, 134, 134, 134, 134, 134, 104, 47, 13, 10, 13, 10, 255, 255,
    ];
    super::super::fuzzing::chunked(INPUT);
}
