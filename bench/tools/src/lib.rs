//! Load generators of the Arc benchmark harness that no packaged tool provides; driven by
//! `bench/arcbench.py`. [`tlsload`] opens TLS 1.3 connections with a full handshake each.

#![forbid(unsafe_code)]

pub mod tlsload;
