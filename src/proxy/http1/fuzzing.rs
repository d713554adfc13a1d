//! Fuzz entry points (also run by the unit tests over a seed corpus and pseudo-random
//! mutations). Each must never panic on any input; it panics only when an invariant of the
//! codec is broken, which is what the fuzzer reports.
