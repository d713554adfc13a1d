//! Fuzz target: `arc_gateway::controller::translate::fuzzing::annotations` (see that function for the invariants checked).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    arc_gateway::controller::translate::fuzzing::annotations(data);
});
