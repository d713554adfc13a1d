//! Fuzz target: `arc_gateway::proxy::core::fuzzing::conn` (see that function for the schedule format and the
//! invariants checked).
#![no_main]

use std::sync::LazyLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;

/// The virtual clock's start, read once (the core never reads the clock).
static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

fuzz_target!(|data: &[u8]| {
    arc_gateway::proxy::core::fuzzing::conn(data, *BASE);
});
