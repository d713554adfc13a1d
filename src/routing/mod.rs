//! Routing table (placeholder being written).
