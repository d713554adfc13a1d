//! The fuzz entry points over the seed corpus and deterministic pseudo-random mutations, so
//! their invariants are checked on every test run (the real fuzzer lives in `fuzz/`).

use super::super::fuzzing;

/// Deterministic xorshift64* generator.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

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

fn mutate(rng: &mut XorShift, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v.remove(i);
            }
            2 => {
                let i = rng.below(v.len() + 1);
                let ins = INTERESTING[rng.below(INTERESTING.len())];
                v.splice(i..i, ins.iter().copied());
            }
            3 if v.len() > 1 => {
                let a = rng.below(v.len());
                let b = rng.below(v.len());
                let (lo, hi) = (a.min(b), a.max(b));
                let copy = v[lo..hi].to_vec();
                let at = rng.below(v.len() + 1);
                v.splice(at..at, copy);
            }
            4 if v.len() > 1 => {
                let cut = rng.below(v.len());
                v.truncate(cut.max(1));
            }
            _ => {
                let i = rng.below(v.len() + 1);
                v.insert(i, rng.next() as u8);
            }
        }
    }
    v
}

/// Mutations per target and run (bounded so the suite stays fast).
const MUTATIONS: usize = 20_000;

fn run(target: fn(&[u8])) {
    let seeds = fuzzing::seeds();
    for s in &seeds {
        target(s);
    }
    let mut rng = XorShift(0x0005_eed0_fa4c_1234);
    for _ in 0..MUTATIONS {
        let seed = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed);
        target(&input);
    }
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
