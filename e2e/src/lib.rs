//! End-to-end test ground (being written).
