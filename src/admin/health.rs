//! Process health the rest of Arc reports and the admin server answers: readiness flags for
//! `/readyz`, and worker liveness for `/healthz` (a source the process wiring plugs in, so this
//! room never reaches into the workers).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Where `/healthz` learns whether the data-plane workers still turn their event loops.
pub trait WorkerLiveness: Send + Sync {
    /// The workers that have not turned for longer than the liveness limit, and how long the
    /// longest-silent one has been silent; `None` while every worker turns.
    fn wedged(&self, now: Instant) -> Option<(Vec<usize>, Duration)>;
    /// The limit a worker's silence is held against.
    fn limit(&self) -> Duration;
}

/// The answer of [`HealthState::liveness`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Every worker turns (or no source is plugged in yet: the process is starting).
    Alive,
    /// These workers have not turned for `silent` (over `limit`).
    Wedged {
        workers: Vec<usize>,
        silent: Duration,
        limit: Duration,
    },
}

impl fmt::Display for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Liveness::Alive => f.write_str("ok"),
            Liveness::Wedged {
                workers,
                silent,
                limit,
            } => write!(
                f,
                "wedged: worker(s) {workers:?} have not turned their event loop for {:.1}s (limit {}s)",
                silent.as_secs_f64(),
                limit.as_secs()
            ),
        }
    }
}

/// Readiness inputs, shared as `Arc<HealthState>`. All flags start false.
///
/// Who sets what: the config loader [`set_config_loaded`](Self::set_config_loaded), the
/// worker supervisor [`set_workers_up`](Self::set_workers_up), the Kubernetes controller
/// [`set_first_sync_done`](Self::set_first_sync_done) after its first complete table (a
/// standalone process sets it once its config file's table is installed), and the signal
/// handler [`start_draining`](Self::start_draining) on SIGTERM/SIGINT.
#[derive(Debug, Default)]
pub struct HealthState {
    config_loaded: AtomicBool,
    workers_up: AtomicBool,
    first_sync_done: AtomicBool,
    draining: AtomicBool,
    liveness: OnceLock<Arc<dyn WorkerLiveness>>,
}

impl fmt::Debug for dyn WorkerLiveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WorkerLiveness(limit {:?})", self.limit())
    }
}

impl HealthState {
    /// A state with nothing done yet (not ready).
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a valid configuration is loaded.
    pub fn set_config_loaded(&self, loaded: bool) {
        self.config_loaded.store(loaded, Ordering::Release);
    }

    /// Whether every data-plane worker is running.
    pub fn set_workers_up(&self, up: bool) {
        self.workers_up.store(up, Ordering::Release);
    }

    /// Whether the first routing table from the sources of truth has been installed.
    pub fn set_first_sync_done(&self, done: bool) {
        self.first_sync_done.store(done, Ordering::Release);
    }

    /// Enters drain: `/readyz` answers 503 from now on. There is no way back.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether drain has started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Plugs in the workers' liveness source (once; later calls are ignored: the workers live
    /// as long as the process).
    pub fn set_liveness(&self, source: Arc<dyn WorkerLiveness>) {
        let _ = self.liveness.set(source);
    }

    /// Whether the workers turn their event loops (`/healthz`).
    pub fn liveness(&self, now: Instant) -> Liveness {
        let Some(source) = self.liveness.get() else {
            return Liveness::Alive;
        };
        match source.wedged(now) {
            None => Liveness::Alive,
            Some((workers, silent)) => Liveness::Wedged {
                workers,
                silent,
                limit: source.limit(),
            },
        }
    }

    /// The current readiness with what is missing.
    pub fn readiness(&self) -> Readiness {
        Readiness {
            config_loaded: self.config_loaded.load(Ordering::Acquire),
            workers_up: self.workers_up.load(Ordering::Acquire),
            first_sync_done: self.first_sync_done.load(Ordering::Acquire),
            draining: self.is_draining(),
        }
    }
}

/// A copy of the readiness flags at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// A valid configuration is loaded.
    pub config_loaded: bool,
    /// Every worker is running.
    pub workers_up: bool,
    /// The first routing table is installed.
    pub first_sync_done: bool,
    /// Drain has started.
    pub draining: bool,
}

impl Readiness {
    /// Ready to take traffic: everything up and not draining.
    pub fn is_ready(&self) -> bool {
        self.config_loaded && self.workers_up && self.first_sync_done && !self.draining
    }
}

impl fmt::Display for Readiness {
    /// `ready`, or `not ready: ` followed by what is missing, comma-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ready() {
            return f.write_str("ready");
        }
        let missing = [
            (self.draining, "draining"),
            (!self.config_loaded, "config not loaded"),
            (!self.workers_up, "workers not up"),
            (!self.first_sync_done, "first sync not done"),
        ];
        f.write_str("not ready: ")?;
        let mut first = true;
        for (_, what) in missing.iter().filter(|(on, _)| *on) {
            if !first {
                f.write_str(", ")?;
            }
            f.write_str(what)?;
            first = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Option<(Vec<usize>, Duration)>);

    impl WorkerLiveness for Fixed {
        fn wedged(&self, _now: Instant) -> Option<(Vec<usize>, Duration)> {
            self.0.clone()
        }
        fn limit(&self) -> Duration {
            Duration::from_secs(5)
        }
    }

    #[test]
    fn liveness_reports_the_wedged_workers() {
        let h = HealthState::new();
        let now = Instant::now();
        assert_eq!(h.liveness(now), Liveness::Alive, "no source yet: starting");
        h.set_liveness(Arc::new(Fixed(Some((
            vec![0],
            Duration::from_millis(5300),
        )))));
        let l = h.liveness(now);
        assert_eq!(
            l.to_string(),
            "wedged: worker(s) [0] have not turned their event loop for 5.3s (limit 5s)"
        );
        // Set once: a second source is ignored.
        h.set_liveness(Arc::new(Fixed(None)));
        assert!(matches!(h.liveness(now), Liveness::Wedged { .. }));
        let alive = HealthState::new();
        alive.set_liveness(Arc::new(Fixed(None)));
        assert_eq!(alive.liveness(now), Liveness::Alive);
    }

    #[test]
    fn transitions() {
        let h = HealthState::new();
        let r = h.readiness();
        assert!(!r.is_ready());
        assert_eq!(
            r.to_string(),
            "not ready: config not loaded, workers not up, first sync not done"
        );
        h.set_config_loaded(true);
        h.set_workers_up(true);
        assert_eq!(h.readiness().to_string(), "not ready: first sync not done");
        h.set_first_sync_done(true);
        assert!(h.readiness().is_ready());
        assert_eq!(h.readiness().to_string(), "ready");
        h.start_draining();
        assert!(h.is_draining());
        assert_eq!(h.readiness().to_string(), "not ready: draining");
        h.set_workers_up(false);
        assert_eq!(
            h.readiness().to_string(),
            "not ready: draining, workers not up"
        );
    }
}
