//! Sans-IO HTTP/1.1 codec (placeholder being written).
