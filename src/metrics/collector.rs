//! Scrape-time aggregation: sums every worker's cells into a [`DataPlaneSnapshot`] and encodes
//! it through a prometheus-client [`Collector`].

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder,
    MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::labels::{ErrorReason, PoolResult, RefuseReason, StatusClass};
use super::worker::{
    DataPlaneSnapshot, HistogramSnapshot, LATENCY_BUCKETS, LATENCY_BUCKETS_NANOS, RouteRegistry,
    WorkerCells,
};

/// `route` label value of requests that matched no route (or were refused before routing).
pub const UNROUTED_ROUTE_LABEL: &str = "-";

/// The data plane's side of the metrics: every worker's cells and the route names.
#[derive(Debug, Default)]
pub(crate) struct DataPlane {
    workers: RwLock<Vec<Arc<WorkerCells>>>,
    pub(crate) routes: RouteRegistry,
}

impl DataPlane {
    pub(crate) fn add_worker(&self, cells: Arc<WorkerCells>) {
        self.workers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(cells);
    }

    pub(crate) fn snapshot(&self) -> DataPlaneSnapshot {
        let route_names = self.routes.names();
        let mut snap = DataPlaneSnapshot {
            route_counts: vec![[0; StatusClass::COUNT]; route_names.len()],
            route_names,
            ..DataPlaneSnapshot::default()
        };
        let workers = self
            .workers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for cells in &workers {
            cells.add_to(&mut snap);
        }
        snap
    }
}

/// A label set of one `(key, value)` pair.
struct One<V>(&'static str, V);

impl<V: EncodeLabelValue + Copy> EncodeLabelSet for One<V> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> fmt::Result {
        (self.0, self.1).encode(encoder.encode_label())
    }
}

/// `{route, status_class}` labels of `arc_requests_total`.
struct RouteLabels<'a> {
    route: &'a str,
    class: StatusClass,
}

impl EncodeLabelSet for RouteLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> fmt::Result {
        ("route", self.route).encode(encoder.encode_label())?;
        ("status_class", self.class).encode(encoder.encode_label())
    }
}

fn counter(encoder: &mut MetricEncoder<'_>, value: u64) -> fmt::Result {
    encoder.encode_counter::<NoLabelSet, u64, u64>(&value, None)
}

fn histogram(encoder: &mut MetricEncoder<'_>, snap: &HistogramSnapshot) -> fmt::Result {
    let mut buckets = [(0.0f64, 0u64); LATENCY_BUCKETS];
    for (i, slot) in buckets.iter_mut().enumerate() {
        let bound = LATENCY_BUCKETS_NANOS
            .get(i)
            .map_or(f64::INFINITY, |n| *n as f64 / 1e9);
        *slot = (bound, snap.buckets.get(i).copied().unwrap_or(0));
    }
    encoder.encode_histogram::<NoLabelSet>(snap.sum_seconds(), snap.count(), &buckets, None)
}

/// Encodes the data-plane families from a fresh [`DataPlaneSnapshot`] at each scrape.
#[derive(Debug)]
pub(crate) struct DataPlaneCollector {
    pub(crate) plane: Arc<DataPlane>,
}

impl Collector for DataPlaneCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let snap = self.plane.snapshot();

        {
            let mut m = encoder.encode_descriptor(
                "arc_requests",
                "Responses sent, by route and status class (route=\"-\": no route matched).",
                None,
                MetricType::Counter,
            )?;
            for class in StatusClass::ALL {
                let value = snap.unrouted_requests[class.index()];
                if value > 0 {
                    let labels = RouteLabels {
                        route: UNROUTED_ROUTE_LABEL,
                        class: *class,
                    };
                    counter(&mut m.encode_family(&labels)?, value)?;
                }
            }
            for (name, row) in snap.route_names.iter().zip(&snap.route_counts) {
                for class in StatusClass::ALL {
                    let value = row[class.index()];
                    if value > 0 {
                        let labels = RouteLabels {
                            route: name,
                            class: *class,
                        };
                        counter(&mut m.encode_family(&labels)?, value)?;
                    }
                }
            }
        }

        histogram(
            &mut encoder.encode_descriptor(
                "arc_request_duration",
                "Time from the first byte of a request to the end of its response.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?,
            &snap.request_duration,
        )?;
        histogram(
            &mut encoder.encode_descriptor(
                "arc_upstream_duration",
                "Time an upstream took, from sending the request to the end of its response.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?,
            &snap.upstream_duration,
        )?;

        encoder
            .encode_descriptor(
                "arc_connections_active",
                "Downstream connections open now.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&snap.connections_active)?;
        encoder
            .encode_descriptor(
                "arc_connections_idle",
                "Downstream connections idle between requests, holding no buffers.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&snap.connections_parked)?;
        counter(
            &mut encoder.encode_descriptor(
                "arc_connections_accepted",
                "Downstream connections accepted.",
                None,
                MetricType::Counter,
            )?,
            snap.connections_accepted,
        )?;

        {
            let mut m = encoder.encode_descriptor(
                "arc_connections_refused",
                "Downstream connections refused, by reason.",
                None,
                MetricType::Counter,
            )?;
            for reason in RefuseReason::ALL {
                let value = snap.connections_refused[reason.index()];
                counter(&mut m.encode_family(&One("reason", *reason))?, value)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "arc_errors",
                "Errors Arc answered itself or requests it gave up on, by reason.",
                None,
                MetricType::Counter,
            )?;
            for reason in ErrorReason::ALL {
                let value = snap.errors[reason.index()];
                counter(&mut m.encode_family(&One("reason", *reason))?, value)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "arc_upstream_pool",
                "Upstream connections taken from the per-worker pool (hit) or opened (miss).",
                None,
                MetricType::Counter,
            )?;
            for result in PoolResult::ALL {
                let value = snap.upstream_pool[result.index()];
                counter(&mut m.encode_family(&One("result", *result))?, value)?;
            }
        }
        encoder
            .encode_descriptor(
                "arc_workers",
                "Data-plane workers registered.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&(snap.workers as u64))?;
        Ok(())
    }
}
