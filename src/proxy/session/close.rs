//! How a downstream connection ends: the flush/linger state machine both io drivers step.
//!
//! After `CloseDownstream { flush: true, .. }` the driver writes what the handler still holds
//! (bounded by the flush timeout), then shuts down its sending side and keeps reading and
//! discarding what the client still sends until the client's EOF or the lingering time, so
//! bytes arriving after the close do not make the kernel answer with a reset that destroys the
//! response. A close without `flush` (or a handler that closed without asking) ends at once;
//! one without `linger` (the client can send nothing more) ends once flushed.
//!
//! The driver records the handler's request ([`Closing::request`]), starts the close when the
//! handler reports closed ([`Closing::begin`]), reports what it sees of the socket
//! ([`CloseFacts`]) and carries out the [`CloseStep`] it gets back: writes, the one
//! `shutdown`, the discarding reads, the free. Time is an argument; a step past the current
//! deadline says [`CloseStep::Free`].
//!
//! Shape: the state lives inline in every connection, idle ones included, so it is small —
//! one deadline for the current phase (the flush deadline, then the end of the linger) and
//! three flags — and generic over how the driver stores an instant ([`Stamp`]): the io_uring
//! driver keeps its per-connection deadlines in 8 bytes.

use std::time::{Duration, Instant};

/// How a driver stores an instant in per-connection state.
pub trait Stamp: Copy {
    fn from_instant(t: Instant) -> Self;
    fn instant(self) -> Instant;
}

impl Stamp for Instant {
    fn from_instant(t: Instant) -> Self {
        t
    }

    fn instant(self) -> Instant {
        self
    }
}

/// What the driver sees of a closing connection's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseFacts {
    /// Output (the handler's, or bytes the driver holds for it) still waits to be sent.
    pub output_pending: bool,
    /// The socket can still be written (no error seen).
    pub socket_ok: bool,
    /// The socket can still be read: no error, no EOF from the client yet.
    pub read_open: bool,
}

/// What the driver does next with a closing connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseStep {
    /// Write the remaining output; step again on progress, or at `until` at the latest.
    Flush { until: Instant },
    /// The output is out: shut down the sending side when `shutdown` (once, on the first such
    /// step), read and discard what the client sends, free on its EOF or at `until`.
    Linger { until: Instant, shutdown: bool },
    /// Close the socket and free the connection.
    Free,
}

/// The close of one downstream connection: what the handler asked for and, once the handler
/// closed, where the close stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closing<T = Instant> {
    flush: bool,
    linger: bool,
    /// The output is out and the sending side shut down: `until` ends the linger.
    lingering: bool,
    /// Set when the close began: the end of the current phase.
    until: Option<T>,
}

impl<T: Stamp> Default for Closing<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Stamp> Closing<T> {
    /// An open connection: no close asked for yet (a handler that closes without asking
    /// closes like `flush: false`).
    pub fn new() -> Self {
        Closing {
            flush: false,
            linger: true,
            lingering: false,
            until: None,
        }
    }

    /// The handler asked for a close (`Action::CloseDownstream`).
    pub fn request(&mut self, flush: bool, linger: bool) {
        self.flush = flush;
        self.linger = linger;
    }

    /// The handler reports closed at `now`: the close begins and the flush deadline starts.
    /// True the first time only.
    pub fn begin(&mut self, now: Instant, flush_timeout: Duration) -> bool {
        if self.until.is_some() {
            return false;
        }
        self.until = Some(T::from_instant(now + flush_timeout));
        true
    }

    /// The close began: the handler hears nothing more, only the socket is served.
    pub fn started(&self) -> bool {
        self.until.is_some()
    }

    /// The close asked for a flush (an abortive close stops reading at once).
    pub fn graceful(&self) -> bool {
        self.flush
    }

    /// The instant the current phase ends, once the close began (the driver's timer).
    pub fn deadline(&self) -> Option<Instant> {
        self.until.map(Stamp::instant)
    }

    /// The next step at `now`, given what the socket looks like and the lingering time.
    /// Before [`Closing::begin`] there is nothing to step: [`CloseStep::Free`].
    pub fn step(&mut self, now: Instant, facts: CloseFacts, lingering: Duration) -> CloseStep {
        let Some(until) = self.until.map(Stamp::instant) else {
            return CloseStep::Free;
        };
        if !self.flush {
            return CloseStep::Free;
        }
        let can_linger = self.linger && facts.socket_ok && facts.read_open;
        if self.lingering {
            return if can_linger && now < until {
                CloseStep::Linger {
                    until,
                    shutdown: false,
                }
            } else {
                CloseStep::Free
            };
        }
        if facts.output_pending {
            return if facts.socket_ok && now < until {
                CloseStep::Flush { until }
            } else {
                CloseStep::Free
            };
        }
        if !can_linger || lingering.is_zero() {
            return CloseStep::Free;
        }
        let until = now + lingering;
        self.lingering = true;
        self.until = Some(T::from_instant(until));
        CloseStep::Linger {
            until: self.until.map_or(until, Stamp::instant),
            shutdown: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLUSH: Duration = Duration::from_secs(10);
    const LINGER: Duration = Duration::from_secs(2);

    fn facts(output_pending: bool, socket_ok: bool, read_open: bool) -> CloseFacts {
        CloseFacts {
            output_pending,
            socket_ok,
            read_open,
        }
    }

    fn begun(flush: bool, linger: bool, now: Instant) -> Closing {
        let mut c = Closing::new();
        c.request(flush, linger);
        assert!(c.begin(now, FLUSH));
        c
    }

    #[test]
    fn nothing_happens_before_the_handler_closes_and_a_close_begins_once() {
        let t0 = Instant::now();
        let mut c = Closing::<Instant>::new();
        assert!(!c.started() && !c.graceful());
        assert_eq!(c.deadline(), None);
        c.request(true, true);
        assert!(!c.started(), "asking is not closing");
        assert!(c.begin(t0, FLUSH));
        assert!(
            !c.begin(t0 + Duration::from_secs(1), FLUSH),
            "the deadline stays"
        );
        assert_eq!(c.deadline(), Some(t0 + FLUSH));
        assert!(c.started() && c.graceful());
    }

    #[test]
    fn an_abortive_close_frees_at_once() {
        let t0 = Instant::now();
        let mut c = begun(false, true, t0);
        assert_eq!(c.step(t0, facts(true, true, true), LINGER), CloseStep::Free);
        // A handler that closed without asking closes the same way.
        let mut c = Closing::<Instant>::new();
        c.begin(t0, FLUSH);
        assert_eq!(c.step(t0, facts(true, true, true), LINGER), CloseStep::Free);
    }

    #[test]
    fn a_flushed_close_writes_then_shuts_down_once_then_lingers_until_eof_or_time() {
        let t0 = Instant::now();
        let mut c = begun(true, true, t0);
        let until = t0 + FLUSH;
        assert_eq!(
            c.step(t0, facts(true, true, true), LINGER),
            CloseStep::Flush { until }
        );
        let t1 = t0 + Duration::from_millis(5);
        let linger_until = t1 + LINGER;
        assert_eq!(
            c.step(t1, facts(false, true, true), LINGER),
            CloseStep::Linger {
                until: linger_until,
                shutdown: true
            }
        );
        assert_eq!(c.deadline(), Some(linger_until));
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(
            c.step(t2, facts(false, true, true), LINGER),
            CloseStep::Linger {
                until: linger_until,
                shutdown: false
            },
            "the sending side is shut down once"
        );
        let mut at_eof = c;
        assert_eq!(
            at_eof.step(t2, facts(false, true, false), LINGER),
            CloseStep::Free,
            "the client's EOF ends the linger"
        );
        assert_eq!(
            c.step(linger_until, facts(false, true, true), LINGER),
            CloseStep::Free,
            "the lingering time is over"
        );
    }

    #[test]
    fn a_flush_ends_at_its_timeout_or_on_a_socket_error() {
        let t0 = Instant::now();
        let mut c = begun(true, true, t0);
        assert_eq!(
            c.step(t0 + FLUSH, facts(true, true, true), LINGER),
            CloseStep::Free,
            "a client that reads nothing does not hold the connection forever"
        );
        let mut c = begun(true, true, t0);
        assert_eq!(
            c.step(t0, facts(true, false, false), LINGER),
            CloseStep::Free
        );
        let mut c = begun(true, true, t0);
        assert_eq!(
            c.step(t0, facts(false, false, true), LINGER),
            CloseStep::Free
        );
    }

    #[test]
    fn no_linger_when_the_client_can_send_nothing_more_or_lingering_is_off() {
        let t0 = Instant::now();
        let mut c = begun(true, false, t0);
        assert_eq!(
            c.step(t0, facts(false, true, true), LINGER),
            CloseStep::Free
        );
        let mut c = begun(true, true, t0);
        assert_eq!(
            c.step(t0, facts(false, true, true), Duration::ZERO),
            CloseStep::Free
        );
        let mut c = begun(true, true, t0);
        assert_eq!(
            c.step(t0, facts(false, true, false), LINGER),
            CloseStep::Free,
            "the client's EOF was already read"
        );
    }

    /// A stamp with millisecond resolution, as a driver's compact deadline might be.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Millis(Instant, u64);

    impl Stamp for Millis {
        fn from_instant(t: Instant) -> Self {
            Millis(t, 0)
        }
        fn instant(self) -> Instant {
            self.0 + Duration::from_millis(self.1)
        }
    }

    #[test]
    fn deadlines_round_trip_through_the_drivers_stamp() {
        let t0 = Instant::now();
        let mut c = Closing::<Millis>::new();
        c.request(true, true);
        c.begin(t0, FLUSH);
        assert_eq!(c.deadline(), Some(t0 + FLUSH));
        assert_eq!(
            c.step(t0, facts(true, true, true), LINGER),
            CloseStep::Flush { until: t0 + FLUSH }
        );
        assert!(std::mem::size_of::<Closing<Instant>>() <= 24);
    }
}
