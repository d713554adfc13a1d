//! Per-worker hot-path counters: the only metric code a data-plane worker touches per request.
//!
//! # Design
//! - Each worker owns one [`WorkerMetrics`]. Its cells live in a `WorkerCells` block aligned to
//!   128 bytes (two cache lines: the adjacent-line prefetcher of x86 pulls pairs), so no two
//!   workers ever write the same line.
//! - Single writer: `WorkerMetrics` is neither `Clone` nor `Sync`, so exactly one thread at a
//!   time can write a worker's cells. An increment is therefore a plain `Relaxed` load and store
//!   (no locked read-modify-write, no fence); the scrape reads with `Relaxed` loads and may see a
//!   value a few increments old, never a torn or lost one.
//! - Fixed shapes: every labelled counter is an array indexed by a label enum
//!   ([`StatusClass`], [`ErrorReason`], ...), latency histograms have fixed buckets
//!   ([`LATENCY_BUCKETS_NANOS`]) and a nanosecond sum. Nothing is hashed and nothing allocates
//!   per request.
//!
//! # Per-route counters
//! Routes are known when a routing table is compiled. The compiler asks the
//! [`RouteRegistry`] to [`intern`](RouteRegistry::intern) each route's metric name and stores
//! the returned [`RouteMetricId`] (a small dense integer) in the compiled route. Ids are stable
//! for the life of the process: the same name always gets the same id, across table versions,
//! and ids are never reused, so counters stay monotonic when routes come and go.
//!
//! A worker keeps its route counters in a `RouteBlock` (chunks of 16 routes × 5 status
//! classes, each chunk 128-byte aligned) that only it writes. When a new table arrives the
//! worker calls [`WorkerMetrics::reserve_routes`] with [`RouteRegistry::len`]; if the block is
//! too small the worker builds a larger one, copies its current values into it and publishes it
//! through an `ArcSwap` that the scrape reads. There is no shared lock: the copy is consistent
//! because the worker is the block's only writer, and the scrape sees either the old block
//! (values not newer than the new one's) or the new one. A request whose id lies beyond the
//! block (a table the worker was not told about) grows the block on the spot: an allocation
//! once per growth, never per request.
//!
//! Memory: 40 bytes per route name ever interned, per worker (rounded up to 16 routes).

use std::cell::Cell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::labels::{ErrorReason, PoolResult, RefuseReason, StatusClass};

/// Upper bounds (inclusive, in nanoseconds) of the latency histogram buckets; a final `+Inf`
/// bucket follows. 0.5 ms … 60 s, covering both fast local upstreams and long polls.
pub const LATENCY_BUCKETS_NANOS: [u64; 16] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
];

/// Number of histogram buckets including the final `+Inf` one.
pub const LATENCY_BUCKETS: usize = LATENCY_BUCKETS_NANOS.len() + 1;

/// Routes per `RouteChunk`; 16 × 5 × 8 bytes = 640 bytes, a multiple of 128.
const ROUTES_PER_CHUNK: usize = 16;

/// Adds `by` to a cell that only the calling worker writes (see the module docs).
#[inline(always)]
fn bump(cell: &AtomicU64, by: u64) {
    cell.store(cell.load(Relaxed).wrapping_add(by), Relaxed);
}

/// Converts a duration to whole nanoseconds, saturating at `u64::MAX` (584 years).
#[inline]
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Atomic cells of one fixed-bucket latency histogram.
#[derive(Debug)]
pub(crate) struct HistogramCells {
    buckets: [AtomicU64; LATENCY_BUCKETS],
    sum_nanos: AtomicU64,
}

impl HistogramCells {
    const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS],
            sum_nanos: AtomicU64::new(0),
        }
    }

    #[inline]
    fn observe(&self, value_nanos: u64) {
        // First bucket whose upper bound is >= the value; LATENCY_BUCKETS_NANOS.len() is +Inf.
        let i = LATENCY_BUCKETS_NANOS.partition_point(|&bound| bound < value_nanos);
        if let Some(cell) = self.buckets.get(i) {
            bump(cell, 1);
        }
        bump(&self.sum_nanos, value_nanos);
    }

    fn add_to(&self, snap: &mut HistogramSnapshot) {
        for (acc, cell) in snap.buckets.iter_mut().zip(&self.buckets) {
            *acc = acc.wrapping_add(cell.load(Relaxed));
        }
        snap.sum_nanos = snap.sum_nanos.wrapping_add(self.sum_nanos.load(Relaxed));
    }
}

/// Summed values of a latency histogram at scrape time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    pub buckets: [u64; LATENCY_BUCKETS],
    /// Sum of all observations in nanoseconds.
    pub sum_nanos: u64,
}

impl HistogramSnapshot {
    /// Number of observations (equal to the cumulative `+Inf` bucket).
    pub fn count(&self) -> u64 {
        self.buckets.iter().fold(0u64, |a, b| a.wrapping_add(*b))
    }

    /// Sum of all observations in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }
}

/// 16 routes' counters; aligned so that chunks of different workers never share a line.
#[repr(align(128))]
struct RouteChunk {
    rows: [[AtomicU64; StatusClass::COUNT]; ROUTES_PER_CHUNK],
}

impl RouteChunk {
    const fn new() -> Self {
        Self {
            rows: [const { [const { AtomicU64::new(0) }; StatusClass::COUNT] }; ROUTES_PER_CHUNK],
        }
    }
}

/// A worker's per-route request counters, indexed by [`RouteMetricId`].
pub(crate) struct RouteBlock {
    chunks: Box<[RouteChunk]>,
}

impl std::fmt::Debug for RouteBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteBlock")
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl RouteBlock {
    fn with_capacity(routes: usize) -> Self {
        let chunks = routes.div_ceil(ROUTES_PER_CHUNK);
        Self {
            chunks: (0..chunks).map(|_| RouteChunk::new()).collect(),
        }
    }

    fn capacity(&self) -> usize {
        self.chunks.len() * ROUTES_PER_CHUNK
    }

    #[inline]
    fn row(&self, route: usize) -> Option<&[AtomicU64; StatusClass::COUNT]> {
        self.chunks
            .get(route / ROUTES_PER_CHUNK)
            .and_then(|c| c.rows.get(route % ROUTES_PER_CHUNK))
    }

    /// Adds this block's counts into `acc` (indexed by route id).
    fn add_to(&self, acc: &mut [[u64; StatusClass::COUNT]]) {
        for (route, sums) in acc.iter_mut().enumerate() {
            let Some(row) = self.row(route) else { break };
            for (sum, cell) in sums.iter_mut().zip(row) {
                *sum = sum.wrapping_add(cell.load(Relaxed));
            }
        }
    }
}

/// One worker's cells, shared between its [`WorkerMetrics`] (the writer) and the scrape.
#[repr(align(128))]
#[derive(Debug)]
pub(crate) struct WorkerCells {
    connections_accepted: AtomicU64,
    connections_active: AtomicI64,
    connections_parked: AtomicI64,
    refused: [AtomicU64; RefuseReason::COUNT],
    errors: [AtomicU64; ErrorReason::COUNT],
    pool: [AtomicU64; PoolResult::COUNT],
    unrouted: [AtomicU64; StatusClass::COUNT],
    request_duration: HistogramCells,
    upstream_duration: HistogramCells,
    routes: ArcSwap<RouteBlock>,
}

impl WorkerCells {
    pub(crate) fn new(routes: usize) -> Self {
        Self {
            connections_accepted: AtomicU64::new(0),
            connections_active: AtomicI64::new(0),
            connections_parked: AtomicI64::new(0),
            refused: [const { AtomicU64::new(0) }; RefuseReason::COUNT],
            errors: [const { AtomicU64::new(0) }; ErrorReason::COUNT],
            pool: [const { AtomicU64::new(0) }; PoolResult::COUNT],
            unrouted: [const { AtomicU64::new(0) }; StatusClass::COUNT],
            request_duration: HistogramCells::new(),
            upstream_duration: HistogramCells::new(),
            routes: ArcSwap::from_pointee(RouteBlock::with_capacity(routes)),
        }
    }

    /// Adds this worker's values into `snap`.
    pub(crate) fn add_to(&self, snap: &mut DataPlaneSnapshot) {
        fn add_all<const N: usize>(acc: &mut [u64; N], cells: &[AtomicU64; N]) {
            for (a, c) in acc.iter_mut().zip(cells) {
                *a = a.wrapping_add(c.load(Relaxed));
            }
        }
        snap.workers += 1;
        snap.connections_accepted = snap
            .connections_accepted
            .wrapping_add(self.connections_accepted.load(Relaxed));
        snap.connections_active = snap
            .connections_active
            .wrapping_add(self.connections_active.load(Relaxed));
        snap.connections_parked = snap
            .connections_parked
            .wrapping_add(self.connections_parked.load(Relaxed));
        add_all(&mut snap.connections_refused, &self.refused);
        add_all(&mut snap.errors, &self.errors);
        add_all(&mut snap.upstream_pool, &self.pool);
        add_all(&mut snap.unrouted_requests, &self.unrouted);
        self.request_duration.add_to(&mut snap.request_duration);
        self.upstream_duration.add_to(&mut snap.upstream_duration);
        self.routes.load().add_to(&mut snap.route_counts);
    }
}

/// Every worker's values summed at one scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DataPlaneSnapshot {
    /// Number of registered workers.
    pub workers: usize,
    /// Connections accepted since start.
    pub connections_accepted: u64,
    /// Connections open now.
    pub connections_active: i64,
    /// Open connections idle between requests that hold no buffers now.
    pub connections_parked: i64,
    /// Refused connections, indexed by [`RefuseReason::index`].
    pub connections_refused: [u64; RefuseReason::COUNT],
    /// Errors, indexed by [`ErrorReason::index`].
    pub errors: [u64; ErrorReason::COUNT],
    /// Upstream pool outcomes, indexed by [`PoolResult::index`].
    pub upstream_pool: [u64; PoolResult::COUNT],
    /// Requests without a route, indexed by [`StatusClass::index`].
    pub unrouted_requests: [u64; StatusClass::COUNT],
    /// Route names, indexed by [`RouteMetricId::index`].
    pub route_names: Vec<Arc<str>>,
    /// Requests per route id and status class.
    pub route_counts: Vec<[u64; StatusClass::COUNT]>,
    /// Request latency.
    pub request_duration: HistogramSnapshot,
    /// Upstream latency.
    pub upstream_duration: HistogramSnapshot,
}

impl DataPlaneSnapshot {
    /// Requests counted for the route named `route` with `class` (0 when unknown).
    pub fn route_requests(&self, route: &str, class: StatusClass) -> u64 {
        self.route_names
            .iter()
            .position(|n| &**n == route)
            .and_then(|i| self.route_counts.get(i))
            .and_then(|row| row.get(class.index()))
            .copied()
            .unwrap_or(0)
    }

    /// Errors counted with `reason`.
    pub fn error_count(&self, reason: ErrorReason) -> u64 {
        self.errors.get(reason.index()).copied().unwrap_or(0)
    }
}

/// Stable small integer naming a route in the per-worker request counters (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteMetricId(u32);

impl RouteMetricId {
    /// Rebuilds an id from the raw value a routing table stored.
    pub const fn from_raw(raw: u32) -> Self {
        Self(raw)
    }

    /// The raw value, for storing in a routing table without importing this room.
    pub const fn as_raw(self) -> u32 {
        self.0
    }

    /// The id as an index into per-worker vectors.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

#[derive(Debug, Default)]
struct RouteNames {
    ids: HashMap<Arc<str>, RouteMetricId>,
    names: Vec<Arc<str>>,
}

/// Grow-only map from a route's metric name (the `route` label) to its [`RouteMetricId`].
///
/// Written when a table is compiled and read at scrape time; never on the request path.
#[derive(Debug, Default)]
pub struct RouteRegistry {
    inner: RwLock<RouteNames>,
}

impl RouteRegistry {
    /// Returns the id of `name`, assigning the next free one on first sight.
    pub fn intern(&self, name: &str) -> RouteMetricId {
        if let Some(id) = self.read().ids.get(name) {
            return *id;
        }
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(id) = inner.ids.get(name) {
            return *id;
        }
        // More than u32::MAX distinct names cannot fit in memory first; saturate regardless.
        let id = RouteMetricId(u32::try_from(inner.names.len()).unwrap_or(u32::MAX));
        let name: Arc<str> = Arc::from(name);
        inner.names.push(Arc::clone(&name));
        inner.ids.insert(name, id);
        id
    }

    /// Number of ids handed out; pass it to [`WorkerMetrics::reserve_routes`].
    pub fn len(&self) -> usize {
        self.read().names.len()
    }

    /// Whether no route was interned yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name an id was interned with.
    pub fn name(&self, id: RouteMetricId) -> Option<Arc<str>> {
        self.read().names.get(id.index()).cloned()
    }

    /// All names, indexed by id.
    pub(crate) fn names(&self) -> Vec<Arc<str>> {
        self.read().names.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, RouteNames> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The metrics handle a data-plane worker owns and writes on its hot path.
///
/// Obtained from [`Metrics::register_worker`](super::Metrics::register_worker). Not `Clone`
/// and not `Sync`: it is the single writer of its cells (see the module docs). Dropping it
/// keeps the worker's counts in the scrape.
#[derive(Debug)]
pub struct WorkerMetrics {
    cells: Arc<WorkerCells>,
    routes: Arc<RouteBlock>,
    /// Per-endpoint active upstream connections (see [`super::pool`]).
    pub pool: Option<super::pool::PoolGauges>,
    _single_writer: PhantomData<Cell<()>>,
}

impl WorkerMetrics {
    pub(crate) fn new(cells: Arc<WorkerCells>) -> Self {
        let routes = cells.routes.load_full();
        Self {
            cells,
            routes,
            pool: None,
            _single_writer: PhantomData,
        }
    }

    /// Attaches the worker's pool gauges.
    pub(crate) fn with_pool(mut self, pool: super::pool::PoolGauges) -> Self {
        self.pool = Some(pool);
        self
    }

    /// A downstream connection was accepted and is now open.
    #[inline]
    pub fn connection_opened(&self) {
        bump(&self.cells.connections_accepted, 1);
        let active = &self.cells.connections_active;
        active.store(active.load(Relaxed).wrapping_add(1), Relaxed);
    }

    /// A connection counted by [`Self::connection_opened`] closed.
    #[inline]
    pub fn connection_closed(&self) {
        let active = &self.cells.connections_active;
        active.store(active.load(Relaxed).wrapping_sub(1), Relaxed);
    }

    /// An open connection went idle and gave its buffers back to the worker.
    #[inline]
    pub fn connection_parked(&self) {
        let parked = &self.cells.connections_parked;
        parked.store(parked.load(Relaxed).wrapping_add(1), Relaxed);
    }

    /// A parked connection took buffers again (bytes arrived, a timer fired, it closed).
    #[inline]
    pub fn connection_unparked(&self) {
        let parked = &self.cells.connections_parked;
        parked.store(parked.load(Relaxed).wrapping_sub(1), Relaxed);
    }

    /// A new connection was refused (not counted as opened).
    #[inline]
    pub fn connection_refused(&self, reason: RefuseReason) {
        if let Some(cell) = self.cells.refused.get(reason.index()) {
            bump(cell, 1);
        }
    }

    /// Arc answered with an error of its own or gave up on a request.
    #[inline]
    pub fn error(&self, reason: ErrorReason) {
        if let Some(cell) = self.cells.errors.get(reason.index()) {
            bump(cell, 1);
        }
    }

    /// An upstream connection was taken from the pool (hit) or opened (miss).
    #[inline]
    pub fn upstream_pool(&self, result: PoolResult) {
        if let Some(cell) = self.cells.pool.get(result.index()) {
            bump(cell, 1);
        }
    }

    /// A response with `status` was sent for a request on `route` (`None`: no route matched or
    /// the request was refused before routing; exported as `route="-"`).
    #[inline]
    pub fn request(&mut self, route: Option<RouteMetricId>, status: u16) {
        let class = StatusClass::from_status(status).index();
        let Some(route) = route else {
            if let Some(cell) = self.cells.unrouted.get(class) {
                bump(cell, 1);
            }
            return;
        };
        if self.routes.row(route.index()).is_none() {
            self.reserve_routes(route.index().saturating_add(1));
        }
        if let Some(cell) = self.routes.row(route.index()).and_then(|r| r.get(class)) {
            bump(cell, 1);
        }
    }

    /// Records the time from the first byte of a request to the end of its response.
    #[inline]
    pub fn observe_request_duration(&self, elapsed: Duration) {
        self.cells.request_duration.observe(nanos(elapsed));
    }

    /// Records the time an upstream took, from sending the request to the end of the response.
    #[inline]
    pub fn observe_upstream_duration(&self, elapsed: Duration) {
        self.cells.upstream_duration.observe(nanos(elapsed));
    }

    /// [`Self::request`] and [`Self::observe_request_duration`] in one call.
    #[inline]
    pub fn request_done(&mut self, route: Option<RouteMetricId>, status: u16, elapsed: Duration) {
        self.request(route, status);
        self.observe_request_duration(elapsed);
    }

    /// Makes room for route ids below `routes`; call it when a new routing table arrives, with
    /// [`RouteRegistry::len`], so the request path never allocates.
    pub fn reserve_routes(&mut self, routes: usize) {
        let current = self.routes.capacity();
        if routes <= current {
            return;
        }
        let grown = RouteBlock::with_capacity(routes.max(current.saturating_mul(2)));
        for route in 0..current {
            if let (Some(old), Some(new)) = (self.routes.row(route), grown.row(route)) {
                for (o, n) in old.iter().zip(new) {
                    n.store(o.load(Relaxed), Relaxed);
                }
            }
        }
        let grown = Arc::new(grown);
        self.cells.routes.store(Arc::clone(&grown));
        self.routes = grown;
    }

    /// How many route ids the current block holds without growing.
    pub fn route_capacity(&self) -> usize {
        self.routes.capacity()
    }
}

/// Compile-time proof that [`WorkerMetrics`] is neither `Sync` nor `Clone` (the single-writer
/// rule): if it were, the trait selection below would be ambiguous and the crate would not build.
const _: () = {
    trait AmbiguousIfSync<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfSync<()> for T {}
    impl<T: ?Sized + Sync> AmbiguousIfSync<u8> for T {}
    trait AmbiguousIfClone<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfClone<()> for T {}
    impl<T: Clone> AmbiguousIfClone<u8> for T {}
    let _ = <WorkerMetrics as AmbiguousIfSync<_>>::check;
    let _ = <WorkerMetrics as AmbiguousIfClone<_>>::check;
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_cache_aligned() {
        assert_eq!(std::mem::align_of::<WorkerCells>(), 128);
        assert_eq!(std::mem::size_of::<WorkerCells>() % 128, 0);
        assert_eq!(std::mem::align_of::<RouteChunk>(), 128);
        assert_eq!(std::mem::size_of::<RouteChunk>() % 128, 0);
    }

    #[test]
    fn worker_metrics_is_send_not_clone_sync() {
        fn is_send<T: Send>() {}
        is_send::<WorkerMetrics>();
        // Not `Sync` / not `Clone`: checked at compile time by the const item above.
    }

    #[test]
    fn histogram_bucket_edges_are_inclusive() {
        let h = HistogramCells::new();
        h.observe(0);
        h.observe(500_000); // exactly the first bound -> first bucket
        h.observe(500_001); // second bucket
        h.observe(60_000_000_000); // last finite bucket
        h.observe(60_000_000_001); // +Inf
        h.observe(u64::MAX / 2); // +Inf
        let mut snap = HistogramSnapshot::default();
        h.add_to(&mut snap);
        assert_eq!(snap.buckets[0], 2);
        assert_eq!(snap.buckets[1], 1);
        assert_eq!(snap.buckets[LATENCY_BUCKETS - 2], 1);
        assert_eq!(snap.buckets[LATENCY_BUCKETS - 1], 2);
        assert_eq!(snap.count(), 6);
    }

    #[test]
    fn route_block_grows_and_keeps_counts() {
        let cells = Arc::new(WorkerCells::new(0));
        let mut w = WorkerMetrics::new(Arc::clone(&cells));
        assert_eq!(w.route_capacity(), 0);
        w.request(Some(RouteMetricId(3)), 200);
        let cap = w.route_capacity();
        assert!(cap >= 4);
        w.request(Some(RouteMetricId(3)), 503);
        w.request(Some(RouteMetricId(40)), 404);
        assert!(w.route_capacity() > cap);
        w.request(Some(RouteMetricId(3)), 204);
        let mut acc = vec![[0u64; StatusClass::COUNT]; 41];
        cells.routes.load().add_to(&mut acc);
        assert_eq!(acc[3], [0, 2, 0, 0, 1]);
        assert_eq!(acc[40], [0, 0, 0, 1, 0]);
        assert_eq!(acc[0], [0; 5]);
    }

    #[test]
    fn reserve_does_not_shrink() {
        let cells = Arc::new(WorkerCells::new(32));
        let mut w = WorkerMetrics::new(cells);
        assert_eq!(w.route_capacity(), 32);
        w.reserve_routes(5);
        assert_eq!(w.route_capacity(), 32);
        w.reserve_routes(33);
        assert_eq!(w.route_capacity(), 64);
    }

    #[test]
    fn registry_interns_stably() {
        let r = RouteRegistry::default();
        let a = r.intern("default/app/0");
        let b = r.intern("default/web/0");
        assert_eq!(r.intern("default/app/0"), a);
        assert_ne!(a, b);
        assert_eq!((a.index(), b.index()), (0, 1));
        assert_eq!(r.len(), 2);
        assert_eq!(r.name(b).as_deref(), Some("default/web/0"));
        assert_eq!(r.name(RouteMetricId(9)), None);
    }

    #[test]
    fn active_connections_go_up_and_down() {
        let cells = Arc::new(WorkerCells::new(0));
        let w = WorkerMetrics::new(Arc::clone(&cells));
        w.connection_opened();
        w.connection_opened();
        w.connection_closed();
        assert_eq!(cells.connections_active.load(Relaxed), 1);
        assert_eq!(cells.connections_accepted.load(Relaxed), 2);
    }
}
