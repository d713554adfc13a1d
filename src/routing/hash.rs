//! The hash map used by the routing table: a seeded multiply-fold hasher, several times
//! cheaper than SipHash on the short host and path keys probed on every request.
//!
//! Keys come from the route model (operators and Ingress authors), never from requests, and
//! each table gets a fresh random seed, so colliding keys cannot be planned ahead.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// Hash map used for host and path keys.
pub(crate) type FastMap<K, V> = HashMap<K, V, SeededState>;

/// Odd constants with well-spread bits (from the fractional parts of π and e).
const K1: u64 = 0x243F_6A88_85A3_08D3;
const K2: u64 = 0xB7E1_5162_8AED_2A6B;

/// Multiplies to 128 bits and folds the halves together: a cheap, well-mixing step.
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    // Truncations are the point here: low half xor high half.
    (full as u64) ^ ((full >> 64) as u64)
}

/// Builds [`FoldHasher`]s from a per-map random seed.
#[derive(Clone, Debug)]
pub(crate) struct SeededState {
    seed: u64,
}

impl Default for SeededState {
    fn default() -> Self {
        SeededState {
            seed: RandomState::new().hash_one(K1),
        }
    }
}

impl BuildHasher for SeededState {
    type Hasher = FoldHasher;

    #[inline]
    fn build_hasher(&self) -> FoldHasher {
        FoldHasher { state: self.seed }
    }
}

/// A streaming multiply-fold hasher over 8-byte words.
#[derive(Clone, Debug)]
pub(crate) struct FoldHasher {
    state: u64,
}

impl FoldHasher {
    #[inline]
    fn absorb(&mut self, word: u64) {
        self.state = fold_mul(self.state ^ word, K1);
    }
}

impl Hasher for FoldHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.absorb(bytes.len() as u64 ^ K2);
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.absorb(u64::from_le_bytes(word));
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            let mut word = [0u8; 8];
            for (dst, src) in word.iter_mut().zip(tail) {
                *dst = *src;
            }
            self.absorb(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.absorb(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.absorb(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.absorb(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        fold_mul(self.state, K2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_hash_equal_and_near_keys_differ() {
        let state = SeededState::default();
        assert_eq!(
            state.hash_one("svc1.example.com"),
            state.hash_one("svc1.example.com")
        );
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            assert!(seen.insert(state.hash_one(format!("svc{i}.example.com"))));
        }
        assert_ne!(state.hash_one("a"), state.hash_one("a\0"));
        assert_ne!(state.hash_one(""), state.hash_one("\0"));
    }

    #[test]
    fn seeds_differ_between_maps() {
        let a = SeededState::default();
        let b = SeededState::default();
        assert_ne!(a.hash_one("/api"), b.hash_one("/api"));
    }
}
