//! Tests of the HTTP/1.1 codec: hostile-input corpus, round trips, split invariance, framing
//! decision tables, serializers, and the fuzz entry points over seeds and mutations.

mod corpus;
mod decisions;
mod differential;
mod fuzz_smoke;
mod roundtrip;
mod serialize;
mod split;
mod streams;

use super::*;

/// Parses a complete request head with default limits, panicking on anything else.
pub(super) fn req(raw: &[u8]) -> RequestHead {
    match parse_request_head(raw, &Limits::default()) {
        Ok(Some((h, n))) => {
            assert_eq!(n, raw.len(), "head length");
            h
        }
        other => panic!("{other:?} for {:?}", String::from_utf8_lossy(raw)),
    }
}

/// Parses a complete response head with default limits.
pub(super) fn resp(raw: &[u8]) -> ResponseHead {
    match parse_response_head(raw, &Limits::default()) {
        Ok(Some((h, n))) => {
            assert_eq!(n, raw.len(), "head length");
            h
        }
        other => panic!("{other:?} for {:?}", String::from_utf8_lossy(raw)),
    }
}
