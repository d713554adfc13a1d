//! What the data plane serves from: an immutable [`Snapshot`] (routing table, upstream
//! endpoints, limits) that the control plane builds and swaps whole, and each worker's view of
//! it.
//!
//! Workers load the shared `ArcSwap<Snapshot>` once per new request; when it changed they wrap
//! it in a fresh worker-local [`View`], so the reference counting done per request touches only
//! that worker's cache lines. A request in flight keeps the view it started with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::metrics::RouteMetricId;
use crate::proxy::exchange::{MAX_ROUTE_POLICIES, RequestPolicy, RoutePolicies};
use crate::proxy::http1;
use crate::proxy::io::PoolLimits;
use crate::routing::RoutingTable;

/// Endpoints and behaviour of one upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSpec {
    pub name: Arc<str>,
    pub endpoints: Vec<SocketAddr>,
    pub pool: PoolLimits,
    /// Longest wait for upstream response bytes.
    pub read_timeout: Duration,
    /// Longest wait for the upstream to accept request bytes.
    pub send_timeout: Duration,
    /// TLS towards the endpoints (`backend-protocol: HTTPS`, `upstreams[].tls`); `None` = plain.
    pub tls: Option<crate::proxy::tls::UpstreamTls>,
}

/// Per-connection limits of the downstream side (`limits.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub codec: http1::Limits,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_requests_per_connection: Option<u64>,
    pub max_connection_age: Option<Duration>,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            codec: http1::Limits::default(),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_requests_per_connection: None,
            max_connection_age: None,
        }
    }
}

/// The empty policy list (most routes).
fn no_policies() -> RoutePolicies {
    Arc::from(Vec::new())
}

/// Hasher of the snapshot's maps: their keys are names from the configuration, never request
/// bytes.
pub type FastState = foldhash::fast::RandomState;

/// Everything a worker needs to serve requests, immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    pub table: RoutingTable,
    /// Upstreams by name (configuration data, looked up per request: a fast hasher serves).
    pub upstreams: HashMap<String, Arc<UpstreamSpec>, FastState>,
    pub limits: ConnLimits,
    /// Per route name: its metric id and its compiled request policies (one lookup per
    /// request serves both).
    pub route_ids: HashMap<String, RouteEntry, FastState>,
}

/// What a worker needs of one route besides its routing entry.
#[derive(Debug, Clone)]
pub struct RouteEntry {
    pub id: RouteMetricId,
    /// The route's request policies, in pipeline order (see [`crate::proxy::exchange`]).
    pub policies: RoutePolicies,
}

impl Snapshot {
    pub fn new(table: RoutingTable, upstreams: Vec<UpstreamSpec>, limits: ConnLimits) -> Self {
        Snapshot {
            table,
            upstreams: upstreams
                .into_iter()
                .map(|u| (u.name.to_string(), Arc::new(u)))
                .collect(),
            limits,
            route_ids: HashMap::default(),
        }
    }

    /// Names route metric ids (interned once per table, not per request).
    pub fn with_route_ids(mut self, intern: impl Fn(&str) -> RouteMetricId) -> Self {
        let mut ids = HashMap::default();
        for host in self.table.hosts() {
            for route in host.routes() {
                ids.entry(route.name().to_string())
                    .or_insert_with(|| RouteEntry {
                        id: intern(route.name()),
                        policies: no_policies(),
                    });
            }
        }
        ids.insert(
            "default-backend".into(),
            RouteEntry {
                id: intern("default-backend"),
                policies: no_policies(),
            },
        );
        self.route_ids = ids;
        self
    }

    /// Gives route `name` these compiled policies (after [`Snapshot::with_route_ids`]).
    /// Refuses more than [`MAX_ROUTE_POLICIES`] and unknown route names.
    pub fn with_route_policies(
        mut self,
        name: &str,
        policies: Vec<Arc<dyn RequestPolicy>>,
    ) -> Result<Self, String> {
        if policies.len() > MAX_ROUTE_POLICIES {
            return Err(format!(
                "route {name}: {} policies, at most {MAX_ROUTE_POLICIES}",
                policies.len()
            ));
        }
        let Some(entry) = self.route_ids.get_mut(name) else {
            return Err(format!("route {name}: no such route in the table"));
        };
        entry.policies = policies.into();
        Ok(self)
    }
}

/// The handle the control plane publishes new snapshots through.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

/// A worker-local wrapper of one snapshot (see the module doc).
#[derive(Debug)]
pub struct View {
    pub snapshot: Arc<Snapshot>,
}

/// A worker's cached view, refreshed when the shared snapshot changes.
#[derive(Debug)]
pub struct Views {
    shared: SharedSnapshot,
    current: Arc<View>,
}

impl Views {
    pub fn new(shared: SharedSnapshot) -> Self {
        let current = Arc::new(View {
            snapshot: shared.load_full(),
        });
        Views { shared, current }
    }

    pub fn shared(&self) -> &SharedSnapshot {
        &self.shared
    }

    /// The view for a new request: the latest snapshot.
    pub fn latest(&mut self) -> Arc<View> {
        let guard = self.shared.load();
        if !Arc::ptr_eq(&guard, &self.current.snapshot) {
            self.current = Arc::new(View {
                snapshot: arc_swap::Guard::into_inner(guard),
            });
        }
        Arc::clone(&self.current)
    }
}
