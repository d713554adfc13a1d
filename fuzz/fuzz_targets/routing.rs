//! Fuzz target: `arc_gateway::routing::fuzzing::routing` (see that function for the invariants checked).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    arc_gateway::routing::fuzzing::routing(data);
});
