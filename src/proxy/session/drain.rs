//! The drain sequence of a worker, as both io drivers run it.
//!
//! When the worker's stop signal fires the driver, once ([`Drain::begin`] says when):
//! 1. stops accepting (closes or cancels its listeners — the driver's business);
//! 2. closes its idle pooled upstream connections ([`crate::proxy::session::pool`]);
//! 3. calls `ConnHandler::begin_drain` (handlers created from now on are born draining), then
//!    `on_drain` on every open connection, carrying out the actions as after any callback;
//! 4. lets open connections finish for the grace (`StopSignal::grace`, read at that moment,
//!    else the configured stop grace), then cuts what is left ([`Drain::step`]).
//!
//! Time is an argument.

use std::time::{Duration, Instant};

/// Where a worker stands in its drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainStep {
    /// Not draining: serve as usual.
    Serving,
    /// Draining; connections are still finishing within the grace.
    Draining,
    /// Drained: no connection is open, the loop ends.
    Done,
    /// The grace is over with connections still open: close them, then end the loop.
    CutOff,
}

/// A worker's drain clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drain {
    until: Option<Instant>,
}

impl Drain {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts draining at `now` with `grace` (the stop signal's, if set) or `default_grace`.
    /// True the first time only: the driver runs the drain sequence then.
    pub fn begin(
        &mut self,
        now: Instant,
        grace: Option<Duration>,
        default_grace: Duration,
    ) -> bool {
        if self.until.is_some() {
            return false;
        }
        self.until = Some(now + grace.unwrap_or(default_grace));
        true
    }

    /// True once the drain started (nothing is accepted or pooled any more).
    pub fn is_draining(&self) -> bool {
        self.until.is_some()
    }

    /// The end of the grace, once draining (a wake-up for the driver's wait).
    pub fn deadline(&self) -> Option<Instant> {
        self.until
    }

    /// What to do at `now`, with `open` connections left.
    pub fn step(&self, now: Instant, open: bool) -> DrainStep {
        match self.until {
            None => DrainStep::Serving,
            Some(_) if !open => DrainStep::Done,
            Some(until) if now >= until => DrainStep::CutOff,
            Some(_) => DrainStep::Draining,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_begins_once_with_the_signal_grace_or_the_default() {
        let t0 = Instant::now();
        let mut d = Drain::new();
        assert!(!d.is_draining());
        assert_eq!(d.step(t0, true), DrainStep::Serving);
        assert_eq!(d.deadline(), None);
        assert!(d.begin(t0, Some(Duration::from_secs(3)), Duration::from_secs(10)));
        assert_eq!(d.deadline(), Some(t0 + Duration::from_secs(3)));
        assert!(
            !d.begin(t0 + Duration::from_secs(1), None, Duration::from_secs(10)),
            "a second stop does not move the deadline"
        );
        assert_eq!(d.deadline(), Some(t0 + Duration::from_secs(3)));
        let mut d = Drain::new();
        d.begin(t0, None, Duration::from_secs(10));
        assert_eq!(d.deadline(), Some(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn open_connections_finish_within_the_grace_then_are_cut() {
        let t0 = Instant::now();
        let mut d = Drain::new();
        d.begin(t0, Some(Duration::from_secs(5)), Duration::from_secs(10));
        assert_eq!(d.step(t0, true), DrainStep::Draining);
        assert_eq!(d.step(t0 + Duration::from_secs(4), false), DrainStep::Done);
        assert_eq!(d.step(t0 + Duration::from_secs(5), true), DrainStep::CutOff);
        assert_eq!(
            d.step(t0 + Duration::from_secs(6), false),
            DrainStep::Done,
            "nothing left to cut"
        );
    }
}
