//! Routing: turns a plain route model ([`RouteModel`]) into an immutable, versioned
//! [`RoutingTable`] and answers lookups with Kubernetes Ingress `networking.k8s.io/v1`
//! semantics.
//!
//! This room is pure: no sockets, no async runtime, no clock, no other Arc module. The
//! configuration loader and the Kubernetes translator convert into [`RouteModel`]; the data
//! plane holds an `Arc<RoutingTable>` and calls [`RoutingTable::lookup`] per request.
//!
//! Lookup order: the request host (case-insensitive, port and one trailing dot removed) selects
//! an exact host entry, else a `*.suffix` wildcard entry (exactly one extra label), else the
//! host-less entry. Within the chosen entry: an `Exact` path, else the best of the longest
//! element-wise prefix and the regex routes (longest rule path wins, ties to the prefix, then
//! input order), else the entry's default backend, else the table default, else 404. A
//! request whose host matched an entry never falls through to host-less routes.

#![forbid(unsafe_code)]
// Pure room: no clock, sockets or threads outside tests (clippy.toml).
#![cfg_attr(not(test), deny(clippy::disallowed_methods))]

mod compile;
pub mod fuzzing;
mod hash;
mod host;
mod model;
mod table;

#[cfg(test)]
mod tests;

pub use compile::{Compiled, ProblemKind, RouteProblem, compile};
pub use model::{Backend, HostRules, PathType, RouteModel, RouteRule};
pub use table::{
    ACME_CHALLENGE_PREFIX, HostEntry, Lookup, MatchKind, Route, RouteMatch, RoutingTable,
};
