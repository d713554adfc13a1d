//! Random name parts for Kubernetes objects, shared by the test environment (per-test
//! namespaces) and the emulator (`generateName`). A leaf module: it imports nothing from this
//! crate, so both may use it without importing each other.

use rand::Rng;

/// `n` random characters from the alphabet Kubernetes uses for `generateName` suffixes
/// (no vowels, no characters that read alike), valid in any DNS label.
pub fn random_suffix(n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}
