//! Process health flags the rest of Arc flips and the admin server reports on `/readyz`.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

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
