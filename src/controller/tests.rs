//! Tests of the controller room.
