//! The one typed desired state: what the data plane should serve, whichever source says so.
//!
//! Both sources produce a [`DesiredState`] — routes, upstreams with typed endpoints
//! (`SocketAddr`), their TLS settings, the certificates to serve and the per-connection limits:
//! - the configuration file (standalone mode): [`from_config`], with the DNS resolution of
//!   endpoint names handed in by the caller (the runtime), so this room stays pure;
//! - the Kubernetes controller: its [`ClusterState`] (addresses typed from the EndpointSlice
//!   on) under the configuration's upstream defaults and limits, [`from_cluster`].
//!
//! One builder in the runtime turns a desired state into the data plane's `Snapshot` and
//! `CertStore`; it applies the [`DisabledEndpoints`] the admin room hands in (endpoints the
//! operator took out of load balancing), so nothing ever edits a live snapshot.
//!
//! Pure: no kube types, no sockets, no clock, no file reads (certificate and CA files are named
//! here and read by the builder). Data only; the types the controller hands in live in
//! [`cluster`] so the controller never reaches into the data plane.

#![forbid(unsafe_code)]
// Pure room: no clock, sockets or threads outside tests (clippy.toml).
#![cfg_attr(not(test), deny(clippy::disallowed_methods))]

pub mod cluster;
mod config;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::proxy::core::ConnLimits;
use crate::proxy::io::PoolLimits;
use crate::proxy::tls::UpstreamTlsOptions;
use crate::routing::RouteModel;

pub use cluster::{BackendTls, ClusterState, ExternalName, SecretCert, UpstreamEndpoints};
pub use config::{Unresolved, conn_limits, from_cluster, from_config, upstream, upstream_tls};

/// What the data plane should serve.
#[derive(Debug, Clone, Default)]
pub struct DesiredState {
    /// The routing model to compile.
    pub routes: RouteModel,
    /// Upstreams in declaration order (the order names log keys: `upstreams[i]`).
    pub upstreams: Vec<Upstream>,
    pub certificates: Certificates,
    /// Per-connection limits of the downstream side.
    pub limits: ConnLimits,
}

/// One upstream: where it is and how to talk to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: String,
    /// Resolved endpoints, each once, in the order the source lists them.
    pub endpoints: Vec<SocketAddr>,
    /// TLS towards the endpoints; `None` = plain HTTP. Settings that turn out unusable when
    /// built take the upstream out of service (503), never back to plain HTTP.
    pub tls: Option<UpstreamTlsOptions>,
    pub pool: PoolLimits,
    /// Longest wait for upstream response bytes.
    pub read_timeout: Duration,
    /// Longest wait for the upstream to accept request bytes.
    pub send_timeout: Duration,
}

/// The certificates to serve.
#[derive(Debug, Clone, Default)]
pub struct Certificates {
    /// `tls.default_certificate`; `None` = the running generated default, or a new one.
    pub default: Option<CertPaths>,
    /// `tls.certificates[]`, in order (an unreadable one fails the whole state).
    pub files: Vec<HostCertPaths>,
    /// Certificates already loaded (Kubernetes Secrets), added after the files; one the store
    /// refuses is logged and skipped.
    pub loaded: Vec<SecretCert>,
}

/// A certificate chain and key on disk (absolute paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate on disk with the hosts it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCertPaths {
    pub hosts: Vec<String>,
    pub files: CertPaths,
}

/// Endpoints the operator took out of load balancing (control API), by upstream name. The
/// admin room owns the operator's choice and hands this set in; the snapshot builder leaves
/// these endpoints out of every snapshot it builds, so a choice survives reloads and cluster
/// changes for as long as the endpoint is listed again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DisabledEndpoints {
    by_upstream: BTreeMap<String, BTreeSet<SocketAddr>>,
}

impl DisabledEndpoints {
    /// Takes `endpoint` of `upstream` out (`enabled: false`) or puts it back.
    pub fn set(&mut self, upstream: &str, endpoint: SocketAddr, enabled: bool) {
        if enabled {
            if let Some(set) = self.by_upstream.get_mut(upstream) {
                set.remove(&endpoint);
                if set.is_empty() {
                    self.by_upstream.remove(upstream);
                }
            }
        } else {
            self.by_upstream
                .entry(upstream.to_owned())
                .or_default()
                .insert(endpoint);
        }
    }

    /// Whether `endpoint` of `upstream` is taken out.
    pub fn contains(&self, upstream: &str, endpoint: SocketAddr) -> bool {
        self.by_upstream
            .get(upstream)
            .is_some_and(|s| s.contains(&endpoint))
    }

    /// The endpoints of `upstream` taken out, in address order.
    pub fn of(&self, upstream: &str) -> impl Iterator<Item = SocketAddr> + '_ {
        self.by_upstream
            .get(upstream)
            .into_iter()
            .flatten()
            .copied()
    }

    /// Every `(upstream, endpoint)` taken out, ordered by upstream name then address.
    pub fn iter(&self) -> impl Iterator<Item = (&str, SocketAddr)> + '_ {
        self.by_upstream
            .iter()
            .flat_map(|(name, set)| set.iter().map(move |a| (name.as_str(), *a)))
    }

    /// Whether nothing is taken out.
    pub fn is_empty(&self) -> bool {
        self.by_upstream.is_empty()
    }

    /// `endpoints` without the ones of `upstream` taken out (order kept).
    pub fn apply(&self, upstream: &str, endpoints: &[SocketAddr]) -> Vec<SocketAddr> {
        match self.by_upstream.get(upstream) {
            Some(off) => endpoints
                .iter()
                .copied()
                .filter(|a| !off.contains(a))
                .collect(),
            None => endpoints.to_vec(),
        }
    }
}
