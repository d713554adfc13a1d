//! Metrics of the Kubernetes controller: watch traffic, invalid objects, translate time,
//! leadership and status writes. Registered on the process [`Metrics`] by the controller.
//!
//! | exported | type | labels |
//! |---|---|---|
//! | `arc_kube_watch_events_total` | counter | `kind` |
//! | `arc_kube_watch_errors_total` | counter | `kind` |
//! | `arc_kube_invalid_objects` | gauge | |
//! | `arc_kube_translate_seconds` | gauge | |
//! | `arc_kube_leader` | gauge | |
//! | `arc_kube_status_writes_total` | counter | |

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::Metrics;

/// `kind` label: the watched kind (`Ingress`, `Service`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Kubernetes kind.
    pub kind: String,
}

/// Handles the controller writes.
#[derive(Debug, Default, Clone)]
pub struct KubeMetrics {
    watch_events: Family<KindLabels, Counter>,
    watch_errors: Family<KindLabels, Counter>,
    invalid_objects: Gauge,
    translate_seconds: Gauge<f64, AtomicU64>,
    leader: Gauge,
    status_writes: Counter,
}

impl KubeMetrics {
    /// Creates the handles and registers them on `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let m = KubeMetrics::default();
        metrics.register(
            "arc_kube_watch_events",
            "Watch events received, by kind",
            m.watch_events.clone(),
        );
        metrics.register(
            "arc_kube_watch_errors",
            "Watch errors (each is retried with backoff), by kind",
            m.watch_errors.clone(),
        );
        metrics.register(
            "arc_kube_invalid_objects",
            "Kubernetes objects not served because they are invalid",
            m.invalid_objects.clone(),
        );
        metrics.register(
            "arc_kube_translate_seconds",
            "Time the last translation of the watched objects took",
            m.translate_seconds.clone(),
        );
        metrics.register(
            "arc_kube_leader",
            "1 while this process holds the leader Lease",
            m.leader.clone(),
        );
        metrics.register(
            "arc_kube_status_writes",
            "Ingress status writes",
            m.status_writes.clone(),
        );
        m
    }

    /// Counts a watch event of `kind`.
    pub fn watch_event(&self, kind: &str) {
        self.watch_events
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    /// Counts a watch error of `kind`.
    pub fn watch_error(&self, kind: &str) {
        self.watch_errors
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    /// Sets the number of invalid objects.
    pub fn set_invalid_objects(&self, n: usize) {
        self.invalid_objects
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Records how long the last translation took.
    pub fn translated(&self, took: Duration) {
        self.translate_seconds.set(took.as_secs_f64());
    }

    /// Records leadership.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Counts a status write.
    pub fn status_written(&self) {
        self.status_writes.inc();
    }

    /// Invalid objects now.
    pub fn invalid_objects(&self) -> i64 {
        self.invalid_objects.get()
    }
}
