//! Arc (`arc-gateway`): a Kubernetes Ingress controller with an embedded data plane.
//!
//! The crate is split into rooms with hard boundaries (see `ARCHITECTURE.md` in the shared docs):
//! - [`config`] owns the configuration schema, loading (YAML, JSON, TOML), validation and the
//!   restart-required diff;
//! - [`routing`] turns a plain route model into an immutable, versioned [`routing::RoutingTable`]
//!   and answers lookups; it is pure (no sockets, no clock);
//! - [`desired`] is the one typed desired state (routes, upstreams with typed endpoints, TLS
//!   settings, certificates, limits) both the configuration and the controller produce; pure;
//! - [`proxy`] holds the data plane; [`proxy::http1`] is the sans-IO HTTP/1.1 codec;
//! - [`metrics`] owns the prometheus-client registry, typed labels and per-worker counters;
//! - [`admin`] serves `/healthz`, `/readyz`, `/metrics`, the token-protected control API
//!   (`/api/v1`) and the dashboard (`/ui`) on the control-plane runtime;
//! - [`controller`] watches Kubernetes and translates Ingresses into the routing model;
//! - [`crd`] defines the `ArcPolicy` custom resource and prints its CRD (`arc-gateway crdgen`);
//! - [`lifecycle`] owns the process: signals, hot reload, graceful drain, zero-downtime
//!   upgrade, systemd notifications and watchdog;
//! - [`logging`] owns process logs (`tracing`), the access log and rotated log files;
//! - [`xdp`] owns the XDP fast path (deny lists and SYN-flood guard before the network stack).

// Unsafe code is denied crate-wide; the rooms that need none forbid it outright (each room's
// top). Only the io_uring driver and the XDP loader may use it (`proxy::uring`, `xdp`), plus
// one audited function of the HTTP/1 codec (`proxy::http1::head::ascii_str`).
#![deny(unsafe_code)]

pub mod admin;
pub mod config;
pub mod controller;
pub mod crd;
pub mod desired;
#[cfg(test)]
mod fuzz_smoke;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod routing;
pub mod runtime;
// eBPF loading, raw `bpf(2)`/netlink calls and map memory.
#[allow(unsafe_code)]
pub mod xdp;
