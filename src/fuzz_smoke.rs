//! Deterministic mutation runs of the fuzz entry points (`*::fuzzing` in the rooms), so their
//! invariants are checked on every `cargo test`; the real fuzzer lives in `fuzz/`. Every room's
//! smoke test (the codec's `proxy::http1::tests::fuzz_smoke` too) uses this generator.

/// Deterministic xorshift64* generator.
pub(crate) struct XorShift(pub(crate) u64);

impl XorShift {
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to five byte-level mutations of `seed`: flip, delete, insert a dictionary token, copy
/// a span, truncate, insert a random byte.
pub(crate) fn mutate(rng: &mut XorShift, seed: &[u8], dict: &[&[u8]]) -> Vec<u8> {
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
            2 if !dict.is_empty() => {
                let i = rng.below(v.len() + 1);
                let ins = dict[rng.below(dict.len())];
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

/// Runs `target` on every seed, then on `mutations` mutated seeds (fixed generator seed).
pub(crate) fn run(
    seeds: &[Vec<u8>],
    dict: &[&[u8]],
    mutations: usize,
    mut target: impl FnMut(&[u8]),
) {
    for s in seeds {
        target(s);
    }
    let mut rng = XorShift(0x0005_eed0_fa4c_1234);
    for _ in 0..mutations {
        let seed = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed, dict);
        target(&input);
    }
}
