//! Configuration (placeholder being written).
