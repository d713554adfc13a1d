//! Upstream pool state per (upstream, endpoint): idle pooled connections and active upstream
//! connections, exported as `arc_upstream_pool_idle{upstream,endpoint}` and
//! `arc_upstream_connections_active{upstream,endpoint}` and shown by `/api/v1/upstreams`.
//!
//! # Design
//! - Every worker owns one `WorkerPoolCells`: a map (upstream, endpoint) → [`EndpointCell`]
//!   behind an `ArcSwap`. Only that worker's thread writes its cells; each gauge has exactly one
//!   writer (the pool writes `idle`, the proxy core writes `active`), so an update is a plain
//!   `Relaxed` load and store, never a lock or a locked read-modify-write.
//! - A worker's handles ([`PoolGauges`]) keep a private lookup cache; the shared map is
//!   replaced (copy + insert, published through the `ArcSwap`) only when a worker meets an
//!   (upstream, endpoint) for the first time — never per request.
//! - The scrape and the control API sum every worker's cells at read time
//!   ([`PoolGaugeRegistry::snapshot`]); entries whose sums are all zero are left out, so an
//!   endpoint that left the table disappears once its connections closed. Cells are kept for
//!   the life of the process (a few dozen bytes per endpoint ever seen).

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;

/// The two gauges of one (upstream, endpoint) in one worker.
#[derive(Debug, Default)]
pub struct EndpointCell {
    idle: AtomicI64,
    active: AtomicI64,
}

impl EndpointCell {
    /// Sets the idle pooled connection count (written by the worker's pool only).
    #[inline]
    pub fn set_idle(&self, n: usize) {
        self.idle
            .store(i64::try_from(n).unwrap_or(i64::MAX), Relaxed);
    }

    /// Adds `delta` to the active connection count (written by the worker's proxy core only).
    #[inline]
    pub fn add_active(&self, delta: i64) {
        self.active
            .store(self.active.load(Relaxed).wrapping_add(delta), Relaxed);
    }
}

type Key = (Arc<str>, SocketAddr);
type CellMap = HashMap<Key, Arc<EndpointCell>>;
/// A handle's lookup cache: endpoint → the cells of the upstreams it serves. Endpoints come
/// from the configuration, never from requests: a fast hasher serves (it is probed per request).
type LocalCells =
    HashMap<SocketAddr, Vec<(Arc<str>, Arc<EndpointCell>)>, foldhash::fast::RandomState>;

/// One worker's cells, shared between its [`PoolGauges`] handles and the readers.
#[derive(Debug, Default)]
pub(crate) struct WorkerPoolCells {
    map: ArcSwap<CellMap>,
}

/// Every worker's pool cells.
#[derive(Debug, Default)]
pub struct PoolGaugeRegistry {
    workers: RwLock<Vec<Arc<WorkerPoolCells>>>,
}

/// Summed pool state of one (upstream, endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPoolState {
    pub upstream: Arc<str>,
    pub endpoint: SocketAddr,
    /// Idle keep-alive connections in the pools of all workers.
    pub idle: i64,
    /// Upstream connections attached to a request (or connecting) in all workers.
    pub active: i64,
}

impl PoolGaugeRegistry {
    /// Registers a new worker and returns the cells its handles write.
    pub(crate) fn add_worker(&self) -> Arc<WorkerPoolCells> {
        let cells = Arc::new(WorkerPoolCells::default());
        self.workers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&cells));
        cells
    }

    /// Every worker's gauges summed per (upstream, endpoint), sorted; all-zero entries left out.
    pub fn snapshot(&self) -> Vec<EndpointPoolState> {
        let workers = self
            .workers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut sums: HashMap<Key, (i64, i64)> = HashMap::new();
        for w in &workers {
            for (k, c) in w.map.load().iter() {
                let e = sums.entry(k.clone()).or_default();
                e.0 = e.0.wrapping_add(c.idle.load(Relaxed));
                e.1 = e.1.wrapping_add(c.active.load(Relaxed));
            }
        }
        let mut out: Vec<EndpointPoolState> = sums
            .into_iter()
            .filter(|(_, (idle, active))| *idle != 0 || *active != 0)
            .map(|((upstream, endpoint), (idle, active))| EndpointPoolState {
                upstream,
                endpoint,
                idle,
                active,
            })
            .collect();
        out.sort_by(|a, b| (&a.upstream, a.endpoint).cmp(&(&b.upstream, b.endpoint)));
        out
    }
}

/// A worker's handle on its pool gauges (one for the pool, one for the proxy core). Not `Sync`
/// and not `Send`-shared: it writes from the worker's thread only.
#[derive(Debug)]
pub struct PoolGauges {
    cells: Arc<WorkerPoolCells>,
    local: LocalCells,
    _single_writer: PhantomData<Cell<()>>,
}

impl PoolGauges {
    pub(crate) fn new(cells: Arc<WorkerPoolCells>) -> Self {
        PoolGauges {
            cells,
            local: LocalCells::default(),
            _single_writer: PhantomData,
        }
    }

    /// Another handle on the same worker's cells (for the other writer of the same worker).
    pub fn sibling(&self) -> PoolGauges {
        PoolGauges::new(Arc::clone(&self.cells))
    }

    /// The cell of (`upstream`, `endpoint`), created on first sight.
    pub fn cell(&mut self, upstream: &Arc<str>, endpoint: SocketAddr) -> Arc<EndpointCell> {
        if let Some(list) = self.local.get(&endpoint)
            && let Some((_, c)) = list.iter().find(|(u, _)| **u == **upstream)
        {
            return Arc::clone(c);
        }
        let key: Key = (Arc::clone(upstream), endpoint);
        let shared = self.cells.map.load();
        let cell = match shared.get(&key) {
            Some(c) => Arc::clone(c),
            None => {
                let c = Arc::new(EndpointCell::default());
                let mut next: CellMap = (**shared).clone();
                next.insert(key, Arc::clone(&c));
                self.cells.map.store(Arc::new(next));
                c
            }
        };
        self.local
            .entry(endpoint)
            .or_default()
            .push((Arc::clone(upstream), Arc::clone(&cell)));
        cell
    }

    /// Sets the idle count of (`upstream`, `endpoint`); a zero for a pair never seen creates
    /// nothing.
    pub fn set_idle(&mut self, upstream: &Arc<str>, endpoint: SocketAddr, n: usize) {
        if n == 0 && !self.known(upstream, endpoint) {
            return;
        }
        self.cell(upstream, endpoint).set_idle(n);
    }

    fn known(&self, upstream: &Arc<str>, endpoint: SocketAddr) -> bool {
        self.local
            .get(&endpoint)
            .is_some_and(|l| l.iter().any(|(u, _)| **u == **upstream))
    }

    /// Sets every known pair's idle count from `count` (used after bulk removals).
    pub fn reset_idle(&mut self, mut count: impl FnMut(&Arc<str>, SocketAddr) -> usize) {
        for (ep, list) in &self.local {
            for (u, c) in list {
                c.set_idle(count(u, *ep));
            }
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    upstream: String,
    endpoint: String,
}

/// Encodes `arc_upstream_pool_idle` and `arc_upstream_connections_active`.
#[derive(Debug)]
pub(crate) struct PoolCollector {
    pub(crate) registry: Arc<PoolGaugeRegistry>,
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let snap = self.registry.snapshot();
        let labels = |s: &EndpointPoolState| EndpointLabels {
            upstream: s.upstream.to_string(),
            endpoint: s.endpoint.to_string(),
        };
        {
            let mut m = encoder.encode_descriptor(
                "arc_upstream_pool_idle",
                "Idle keep-alive upstream connections in the workers' pools, per endpoint.",
                None,
                MetricType::Gauge,
            )?;
            for s in &snap {
                m.encode_family(&labels(s))?.encode_gauge(&s.idle)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "arc_upstream_connections_active",
            "Upstream connections attached to a request (or connecting), per endpoint.",
            None,
            MetricType::Gauge,
        )?;
        for s in &snap {
            m.encode_family(&labels(s))?.encode_gauge(&s.active)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn workers_sum_at_read_time_and_zero_entries_are_hidden() {
        let reg = PoolGaugeRegistry::default();
        let app: Arc<str> = Arc::from("app");
        let mut w1 = PoolGauges::new(reg.add_worker());
        let mut w1_core = w1.sibling();
        let mut w2 = PoolGauges::new(reg.add_worker());
        w1.set_idle(&app, ep(1), 2);
        w2.set_idle(&app, ep(1), 3);
        w1_core.cell(&app, ep(1)).add_active(1);
        w1_core.cell(&app, ep(2)).add_active(1);
        // A zero for a pair never seen creates no entry.
        w2.set_idle(&app, ep(9), 0);
        let snap = reg.snapshot();
        assert_eq!(
            snap,
            vec![
                EndpointPoolState {
                    upstream: Arc::clone(&app),
                    endpoint: ep(1),
                    idle: 5,
                    active: 1
                },
                EndpointPoolState {
                    upstream: Arc::clone(&app),
                    endpoint: ep(2),
                    idle: 0,
                    active: 1
                },
            ]
        );
        w1_core.cell(&app, ep(2)).add_active(-1);
        w1.reset_idle(|_, _| 0);
        let snap = reg.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(
            (snap[0].endpoint, snap[0].idle, snap[0].active),
            (ep(1), 3, 1)
        );
    }
}
