//! Arc's metrics: owns the prometheus-client registry, the typed label sets and the handles
//! the rest of the process writes. It holds no logic of its own.
//!
//! Two kinds of metrics live here:
//! - **Data-plane metrics** are written per request by the workers. Each worker owns a
//!   [`WorkerMetrics`] of plain single-writer atomics (see [`worker`] for the design: fixed
//!   arrays indexed by label enums, fixed-bucket histograms, per-route counters indexed by
//!   [`RouteMetricId`]). Nothing is shared or locked per request; a custom [`Collector`] sums all
//!   workers at scrape time.
//! - **Control-plane metrics** ([`ControlMetrics`]) change rarely (reloads, table swaps, driver
//!   choice) and use prometheus-client's own counters and gauges.
//!
//! # Exported names
//! prometheus-client appends `_total` to counters and the unit to metrics registered with one,
//! so the registered names are the exported ones without those suffixes:
//!
//! | exported | type | labels |
//! |---|---|---|
//! | `arc_requests_total` | counter | `route` (`-` when none matched), `status_class` |
//! | `arc_request_duration_seconds` | histogram | |
//! | `arc_upstream_duration_seconds` | histogram | |
//! | `arc_connections_active` | gauge | |
//! | `arc_connections_idle` | gauge | |
//! | `arc_connections_accepted_total` | counter | |
//! | `arc_connections_refused_total` | counter | `reason` ([`RefuseReason`]) |
//! | `arc_errors_total` | counter | `reason` ([`ErrorReason`]) |
//! | `arc_upstream_pool_total` | counter | `result` (`hit`, `miss`) |
//! | `arc_workers` | gauge | |
//! | `arc_io_driver` | gauge | `driver` (`io_uring`, `epoll`): 1 for the one in use |
//! | `arc_routing_table_version` | gauge | |
//! | `arc_routing_table_compile_seconds` | gauge | |
//! | `arc_config_reload_total` | counter | `result` (`success`, `failure`) |
//! | `arc_xdp_packets_total` | counter | `action` ([`XdpAction`]) |
//! | `arc_xdp_enabled` | gauge | |
//!
//! The Kubernetes controller's metrics (`arc_kube_*`) are listed in [`kube`].
//!
//! `arc_requests_total` series appear once non-zero (there may be thousands of routes); the
//! other labelled families export every label value, zeros included, so `rate()` works from
//! the first scrape.
//!
//! # Adding metrics
//! - A new value of an existing label: one line in the enum in [`labels`].
//! - A new per-request counter: a cell array in `worker::WorkerCells`, a method on
//!   [`WorkerMetrics`], a field in [`DataPlaneSnapshot`], and its encoding in `collector`.
//! - A new control-plane metric (e.g. Kubernetes watch events): a field in [`ControlMetrics`]
//!   registered in [`ControlMetrics::register`], or [`Metrics::register`] from the owning room.
//! - Values that live elsewhere and are read at scrape time (e.g. XDP per-CPU packet counters):
//!   a [`Collector`] passed to [`Metrics::register_collector`].
//!
//! The text format is OpenMetrics 1.0 (see [`OPENMETRICS_CONTENT_TYPE`]).

#![forbid(unsafe_code)]

pub mod collector;
pub mod kube;
pub mod labels;
pub mod pool;
pub mod worker;
pub mod xdp;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry, Unit};

pub use collector::UNROUTED_ROUTE_LABEL;
pub use labels::{
    ErrorReason, IoDriver, PoolResult, RefuseReason, ReloadResult, StatusClass, XdpAction,
};
pub use pool::{EndpointCell, EndpointPoolState, PoolGaugeRegistry, PoolGauges};
pub use worker::{
    DataPlaneSnapshot, HistogramSnapshot, LATENCY_BUCKETS, LATENCY_BUCKETS_NANOS, RouteMetricId,
    RouteRegistry, WorkerMetrics,
};
pub use xdp::XdpMetrics;

use collector::{DataPlane, DataPlaneCollector};
use worker::WorkerCells;

/// Content type of [`Metrics::encode`]'s output: prometheus-client writes the OpenMetrics 1.0
/// text format (`# EOF` terminator, `_total` counter samples), which Prometheus negotiates.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Errors of the metrics room.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The text encoder failed (a metric or collector returned an error).
    #[error("encoding metrics in the OpenMetrics text format failed")]
    Encode(#[from] std::fmt::Error),
}

/// `result` label of `arc_config_reload_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// Outcome of the reload.
    pub result: ReloadResult,
}

/// `driver` label of `arc_io_driver`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriverLabels {
    /// The io driver.
    pub driver: IoDriver,
}

/// Control-plane metrics: rare events, plain prometheus-client types.
#[derive(Debug, Default)]
pub struct ControlMetrics {
    config_reload: Family<ReloadLabels, Counter>,
    routing_table_version: Gauge,
    routing_table_compile_seconds: Gauge<f64, AtomicU64>,
    io_driver: Family<DriverLabels, Gauge>,
}

impl ControlMetrics {
    /// Registers every control-plane metric (and pre-creates each label value's series).
    fn register(&self, registry: &mut Registry) {
        for result in ReloadResult::ALL {
            drop(
                self.config_reload
                    .get_or_create(&ReloadLabels { result: *result }),
            );
        }
        for driver in IoDriver::ALL {
            drop(
                self.io_driver
                    .get_or_create(&DriverLabels { driver: *driver }),
            );
        }
        registry.register(
            "arc_config_reload",
            "Configuration reloads, by result",
            self.config_reload.clone(),
        );
        registry.register(
            "arc_routing_table_version",
            "Version of the routing table the workers serve",
            self.routing_table_version.clone(),
        );
        registry.register_with_unit(
            "arc_routing_table_compile",
            "Time the last routing table took to compile",
            Unit::Seconds,
            self.routing_table_compile_seconds.clone(),
        );
        registry.register(
            "arc_io_driver",
            "The io driver in use (1) and the ones not in use (0)",
            self.io_driver.clone(),
        );
    }

    /// Counts a configuration reload.
    pub fn config_reloaded(&self, result: ReloadResult) {
        self.config_reload
            .get_or_create(&ReloadLabels { result })
            .inc();
    }

    /// Records that a routing table with `version`, compiled in `compile_time`, was swapped in.
    pub fn routing_table_swapped(&self, version: u64, compile_time: Duration) {
        self.routing_table_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
        self.routing_table_compile_seconds
            .set(compile_time.as_secs_f64());
    }

    /// Marks `driver` as the io driver in use.
    pub fn io_driver_selected(&self, driver: IoDriver) {
        for d in IoDriver::ALL {
            self.io_driver
                .get_or_create(&DriverLabels { driver: *d })
                .set(i64::from(*d == driver));
        }
    }

    /// Reloads counted with `result` so far.
    pub fn config_reloads(&self, result: ReloadResult) -> u64 {
        self.config_reload
            .get_or_create(&ReloadLabels { result })
            .get()
    }
}

/// The process's metrics: registry, control-plane handles and the workers' cells.
///
/// Create one at start, share it as `Arc<Metrics>`; workers take a [`WorkerMetrics`] each
/// through [`Metrics::register_worker`], the admin server calls [`Metrics::encode`].
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    control: ControlMetrics,
    plane: Arc<DataPlane>,
    xdp: Arc<XdpMetrics>,
    pool: Arc<PoolGaugeRegistry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Builds the registry with every metric Arc exports.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let control = ControlMetrics::default();
        control.register(&mut registry);
        let plane = Arc::new(DataPlane::default());
        registry.register_collector(Box::new(DataPlaneCollector {
            plane: Arc::clone(&plane),
        }));
        let xdp = Arc::new(XdpMetrics::default());
        registry.register_collector(Box::new(xdp::XdpCollector {
            xdp: Arc::clone(&xdp),
        }));
        let pool = Arc::new(PoolGaugeRegistry::default());
        registry.register_collector(Box::new(pool::PoolCollector {
            registry: Arc::clone(&pool),
        }));
        Self {
            registry: Mutex::new(registry),
            control,
            plane,
            xdp,
            pool,
        }
    }

    /// Control-plane metrics (reloads, table swaps, io driver).
    pub fn control(&self) -> &ControlMetrics {
        &self.control
    }

    /// XDP fast-path totals and attach state, shared with the `xdp` room's counter reader.
    pub fn xdp(&self) -> &Arc<XdpMetrics> {
        &self.xdp
    }

    /// Route name → [`RouteMetricId`] map the routing-table compiler fills.
    pub fn routes(&self) -> &RouteRegistry {
        &self.plane.routes
    }

    /// Creates the hot-path handle of a new worker; its counts stay in the scrape for the life
    /// of the process, even after the handle is dropped.
    pub fn register_worker(&self) -> WorkerMetrics {
        let cells = Arc::new(WorkerCells::new(self.plane.routes.len()));
        self.plane.add_worker(Arc::clone(&cells));
        WorkerMetrics::new(cells).with_pool(PoolGauges::new(self.pool.add_worker()))
    }

    /// Idle pooled and active upstream connections per (upstream, endpoint), summed over the
    /// workers now.
    pub fn pool_snapshot(&self) -> Vec<EndpointPoolState> {
        self.pool.snapshot()
    }

    /// Sums every worker's values now.
    pub fn data_plane_snapshot(&self) -> DataPlaneSnapshot {
        self.plane.snapshot()
    }

    /// Registers a further metric (name without `_total` / unit suffix; prometheus-client ends
    /// the help text with a period itself).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.lock().register(name, help, metric);
    }

    /// Registers a collector read at each scrape.
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        self.lock().register_collector(collector);
    }

    /// Appends every metric in the OpenMetrics text format (with the final `# EOF`) to `out`.
    pub fn encode_into(&self, out: &mut String) -> Result<(), MetricsError> {
        let registry = self.lock();
        prometheus_client::encoding::text::encode(out, &registry)?;
        Ok(())
    }

    /// Every metric in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, MetricsError> {
        let mut out = String::with_capacity(8 * 1024);
        self.encode_into(&mut out)?;
        Ok(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
    }

    #[test]
    fn two_workers_are_summed() {
        let m = Metrics::new();
        let app = m.routes().intern("default/app");
        let mut w1 = m.register_worker();
        let mut w2 = m.register_worker();
        w1.request(Some(app), 200);
        w2.request(Some(app), 201);
        w2.request(Some(app), 502);
        w1.request(None, 404);
        w1.error(ErrorReason::NoRoute);
        w2.error(ErrorReason::UpstreamConnect);
        w2.error(ErrorReason::NoRoute);
        w1.connection_opened();
        w2.connection_opened();
        w2.connection_opened();
        w2.connection_closed();
        let snap = m.data_plane_snapshot();
        assert_eq!(snap.workers, 2);
        assert_eq!(snap.route_requests("default/app", StatusClass::Success), 2);
        assert_eq!(
            snap.route_requests("default/app", StatusClass::ServerError),
            1
        );
        assert_eq!(snap.error_count(ErrorReason::NoRoute), 2);
        assert_eq!(snap.connections_active, 2);
        assert_eq!(snap.connections_accepted, 3);

        let text = m.encode().expect("encode");
        assert_eq!(
            line_value(
                &text,
                "arc_requests_total{route=\"default/app\",status_class=\"2xx\"}"
            )
            .as_deref(),
            Some("2")
        );
        assert_eq!(
            line_value(
                &text,
                "arc_requests_total{route=\"-\",status_class=\"4xx\"}"
            )
            .as_deref(),
            Some("1")
        );
        assert_eq!(
            line_value(&text, "arc_errors_total{reason=\"no_route\"}").as_deref(),
            Some("2")
        );
        assert_eq!(
            line_value(&text, "arc_errors_total{reason=\"upstream_timeout\"}").as_deref(),
            Some("0")
        );
        assert_eq!(
            line_value(&text, "arc_connections_active").as_deref(),
            Some("2")
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn control_metrics_export() {
        let m = Metrics::new();
        m.control().config_reloaded(ReloadResult::Success);
        m.control().config_reloaded(ReloadResult::Success);
        m.control().config_reloaded(ReloadResult::Failure);
        m.control().io_driver_selected(IoDriver::Epoll);
        m.control()
            .routing_table_swapped(7, Duration::from_millis(250));
        let text = m.encode().expect("encode");
        assert_eq!(
            line_value(&text, "arc_config_reload_total{result=\"success\"}").as_deref(),
            Some("2")
        );
        assert_eq!(
            line_value(&text, "arc_config_reload_total{result=\"failure\"}").as_deref(),
            Some("1")
        );
        assert_eq!(
            line_value(&text, "arc_io_driver{driver=\"epoll\"}").as_deref(),
            Some("1")
        );
        assert_eq!(
            line_value(&text, "arc_io_driver{driver=\"io_uring\"}").as_deref(),
            Some("0")
        );
        assert_eq!(
            line_value(&text, "arc_routing_table_version").as_deref(),
            Some("7")
        );
        assert_eq!(
            line_value(&text, "arc_routing_table_compile_seconds").as_deref(),
            Some("0.25")
        );
        assert_eq!(m.control().config_reloads(ReloadResult::Success), 2);
    }

    #[test]
    fn extra_metrics_can_be_registered() {
        let m = Metrics::new();
        let events: Family<[(&'static str, &'static str); 1], Counter> = Family::default();
        m.register(
            "arc_kubernetes_watch_events",
            "Watch events",
            events.clone(),
        );
        events.get_or_create(&[("kind", "Ingress")]).inc();
        let text = m.encode().expect("encode");
        assert_eq!(
            line_value(&text, "arc_kubernetes_watch_events_total{kind=\"Ingress\"}").as_deref(),
            Some("1")
        );
    }

    #[test]
    fn xdp_series_are_exported_with_zeros_and_never_go_backwards() {
        let m = Metrics::new();
        let text = m.encode().unwrap();
        assert_eq!(line_value(&text, "arc_xdp_enabled").as_deref(), Some("0"));
        for action in XdpAction::ALL {
            let series = format!("arc_xdp_packets_total{{action=\"{action}\"}}");
            assert_eq!(line_value(&text, &series).as_deref(), Some("0"), "{series}");
        }
        m.xdp().set_enabled(true);
        m.xdp().set_packets(XdpAction::Denied, 7);
        m.xdp().set_packets(XdpAction::Denied, 5);
        let text = m.encode().unwrap();
        assert_eq!(line_value(&text, "arc_xdp_enabled").as_deref(), Some("1"));
        assert_eq!(
            line_value(&text, "arc_xdp_packets_total{action=\"denied\"}").as_deref(),
            Some("7")
        );
    }
}
