//! The link between the supervisor and its workers: the stop request, the accept gate, the
//! stop grace in force, and the workers' heartbeats.
//!
//! The supervisor holds a [`StopHandle`]; each worker's driver receives one [`StopSignal`]
//! (shared flags plus the worker's own eventfd, which the driver polls in its event loop) and
//! stamps its heartbeat once per turn. Its own room because both the drivers (which obey a
//! signal) and the worker set (which makes the pair) use it.

#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Longest a driver's event loop may block before it turns again and stamps its heartbeat, so
/// an idle worker still shows it is alive.
pub const HEARTBEAT_TICK: Duration = Duration::from_millis(250);

/// Liveness of the workers: each worker stamps its slot once per event-loop turn (at least
/// every [`HEARTBEAT_TICK`]); the watchdog reads the oldest stamp. One relaxed store per turn.
#[derive(Debug)]
pub struct Heartbeats {
    epoch: Instant,
    /// Milliseconds since `epoch` of each worker's last turn.
    beats: Vec<AtomicU64>,
    /// Debug control: milliseconds since `epoch` after which worker 0 stops turning
    /// (`u64::MAX`: never). Only set through [`Heartbeats::debug_wedge_worker0`].
    wedge_at: AtomicU64,
}

impl Heartbeats {
    fn new(workers: usize) -> Heartbeats {
        Heartbeats {
            epoch: Instant::now(),
            beats: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            wedge_at: AtomicU64::new(u64::MAX),
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// How long ago the least recently turning worker last turned.
    pub fn oldest(&self, now: Instant) -> Duration {
        let now_ms = self.millis(now);
        let oldest = self
            .beats
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .min()
            .unwrap_or(now_ms);
        Duration::from_millis(now_ms.saturating_sub(oldest))
    }

    /// The workers whose last turn is older than `limit`.
    pub fn stalled(&self, now: Instant, limit: Duration) -> Vec<usize> {
        let now_ms = self.millis(now);
        let limit = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        self.beats
            .iter()
            .enumerate()
            .filter(|(_, b)| now_ms.saturating_sub(b.load(Ordering::Relaxed)) > limit)
            .map(|(i, _)| i)
            .collect()
    }

    /// Debug control for watchdog tests: worker 0 blocks inside its loop once `after` has
    /// passed, as a wedged worker would. Only the process wiring calls this, and only when the
    /// operator asked for it explicitly (see `lifecycle::debug`).
    pub fn debug_wedge_worker0(&self, after: Duration) {
        let at = self.millis(Instant::now() + after);
        self.wedge_at.store(at, Ordering::Relaxed);
    }

    fn beat(&self, worker: usize) {
        let now = self.millis(Instant::now());
        if let Some(b) = self.beats.get(worker) {
            b.store(now, Ordering::Relaxed);
        }
        if worker == 0 && now >= self.wedge_at.load(Ordering::Relaxed) {
            tracing::warn!(
                worker,
                "debug wedge: this worker stops turning (requested by ARC_DEBUG_WEDGE_WORKER0_AFTER)"
            );
            // Bounded so a forgotten debug process does not hold a thread forever.
            std::thread::sleep(Duration::from_secs(600));
        }
    }
}

/// Marks "no override" in [`Control::grace_ms`]: the driver's own `Tuning::stop_grace` applies.
const GRACE_UNSET: u64 = u64::MAX;

/// What the supervisor tells its workers besides "stop": whether they may accept yet, and the
/// stop grace in force (reloads change it while the workers run).
#[derive(Debug)]
struct Control {
    stop: AtomicBool,
    accepting: AtomicBool,
    /// Milliseconds, or [`GRACE_UNSET`].
    grace_ms: AtomicU64,
}

/// One worker's link to its supervisor: the stop request and the accept gate (shared flags
/// plus the worker's own eventfd, which becomes readable when either changes so the event
/// loop wakes from its wait), the stop grace in force, and the worker's heartbeat slot.
#[derive(Debug)]
pub struct StopSignal {
    flag: Arc<Control>,
    event: OwnedFd,
    heartbeats: Arc<Heartbeats>,
    worker: usize,
}

impl StopSignal {
    /// Stamps this worker's heartbeat; drivers call it once per event-loop turn and never
    /// block longer than [`HEARTBEAT_TICK`] between turns.
    pub fn beat(&self) {
        self.heartbeats.beat(self.worker);
    }

    /// True once stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.flag.stop.load(Ordering::Acquire)
    }

    /// True while the worker may accept new connections. A process started by an upgrade
    /// starts with accepting paused: it adopts the listening sockets but leaves every
    /// connection queued in them (for the previous process, should this one fail) until the
    /// previous process answers "go" ([`StopHandle::resume_accepting`]).
    pub fn accepting(&self) -> bool {
        self.flag.accepting.load(Ordering::Acquire)
    }

    /// The stop grace set by the supervisor after start ([`StopHandle::set_grace`]), read when
    /// the drain starts; `None`: the driver's `Tuning::stop_grace` applies.
    pub fn grace(&self) -> Option<Duration> {
        match self.flag.grace_ms.load(Ordering::Acquire) {
            GRACE_UNSET => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// The eventfd (non-blocking) to register for readability in the event loop.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.event.as_fd()
    }

    /// Drains the eventfd after it was seen readable (so a level-triggered poll goes quiet).
    pub fn clear(&self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.event, &mut buf);
    }
}

/// Requests every worker of a [`WorkerSet`] to stop, resumes their accepting, sets their stop
/// grace. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StopHandle {
    flag: Arc<Control>,
    wakers: Arc<Vec<OwnedFd>>,
    heartbeats: Arc<Heartbeats>,
}

impl StopHandle {
    /// Makes a handle and one [`StopSignal`] per worker (accepting, no grace override).
    pub fn new(workers: usize) -> io::Result<(StopHandle, Vec<StopSignal>)> {
        let flag = Arc::new(Control {
            stop: AtomicBool::new(false),
            accepting: AtomicBool::new(true),
            grace_ms: AtomicU64::new(GRACE_UNSET),
        });
        let heartbeats = Arc::new(Heartbeats::new(workers));
        let mut wakers = Vec::with_capacity(workers);
        let mut signals = Vec::with_capacity(workers);
        for worker in 0..workers {
            let fd = rustix::event::eventfd(
                0,
                rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC,
            )
            .map_err(io::Error::from)?;
            let dup = fd.try_clone()?;
            wakers.push(dup);
            signals.push(StopSignal {
                flag: Arc::clone(&flag),
                event: fd,
                heartbeats: Arc::clone(&heartbeats),
                worker,
            });
        }
        Ok((
            StopHandle {
                flag,
                wakers: Arc::new(wakers),
                heartbeats,
            },
            signals,
        ))
    }

    /// The workers' heartbeats (for the watchdog).
    pub fn heartbeats(&self) -> &Arc<Heartbeats> {
        &self.heartbeats
    }

    /// Sets the stop flag and wakes every worker. Idempotent.
    pub fn stop(&self) {
        self.flag.stop.store(true, Ordering::Release);
        self.wake();
    }

    fn wake(&self) {
        for fd in self.wakers.iter() {
            let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
        }
    }

    /// True once [`StopHandle::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.flag.stop.load(Ordering::Acquire)
    }

    /// Pauses accepting; takes effect when a worker starts (see [`StopSignal::accepting`]).
    pub fn pause_accepting(&self) {
        self.flag.accepting.store(false, Ordering::Release);
    }

    /// Lets paused workers accept and wakes them. Idempotent.
    pub fn resume_accepting(&self) {
        self.flag.accepting.store(true, Ordering::Release);
        self.wake();
    }

    /// True while the workers may accept.
    pub fn is_accepting(&self) -> bool {
        self.flag.accepting.load(Ordering::Acquire)
    }

    /// The stop grace the workers use when the drain starts from now on (a reloaded
    /// `lifecycle.drain_timeout`); overrides `Tuning::stop_grace`.
    pub fn set_grace(&self, grace: Duration) {
        let ms = u64::try_from(grace.as_millis())
            .unwrap_or(GRACE_UNSET - 1)
            .min(GRACE_UNSET - 1);
        self.flag.grace_ms.store(ms, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn accept_gate_and_grace_reach_every_signal() {
        let (handle, signals) = StopHandle::new(2).unwrap();
        assert!(signals.iter().all(|s| s.accepting() && s.grace().is_none()));
        handle.pause_accepting();
        assert!(signals.iter().all(|s| !s.accepting()));
        handle.set_grace(Duration::from_secs(6));
        assert!(
            signals
                .iter()
                .all(|s| s.grace() == Some(Duration::from_secs(6)))
        );
        let mut buf = [0u8; 8];
        handle.resume_accepting();
        for s in &signals {
            assert!(s.accepting());
            assert!(!s.is_stopped());
            // Resuming wakes the loop.
            assert_eq!(rustix::io::read(s.fd(), &mut buf), Ok(8));
        }
    }

    #[test]
    fn heartbeats_name_the_worker_that_stopped_turning() {
        let (handle, signals) = StopHandle::new(2).unwrap();
        let hb = Arc::clone(handle.heartbeats());
        for s in &signals {
            s.beat();
        }
        let now = Instant::now();
        assert!(hb.stalled(now, Duration::from_secs(1)).is_empty());
        std::thread::sleep(Duration::from_millis(30));
        signals[1].beat();
        let now = Instant::now();
        assert_eq!(hb.stalled(now, Duration::from_millis(20)), vec![0]);
        assert!(hb.oldest(now) >= Duration::from_millis(30));
        assert_eq!(
            hb.stalled(now + Duration::from_secs(10), Duration::from_secs(5)),
            vec![0, 1]
        );
    }

    #[test]
    fn stop_handle_wakes_every_signal() {
        let (handle, signals) = StopHandle::new(2).unwrap();
        assert!(signals.iter().all(|s| !s.is_stopped()));
        let mut buf = [0u8; 8];
        assert!(
            rustix::io::read(signals[0].fd(), &mut buf).is_err(),
            "not yet readable"
        );
        handle.stop();
        for s in &signals {
            assert!(s.is_stopped());
            assert_eq!(rustix::io::read(s.fd(), &mut buf), Ok(8));
        }
        assert!(handle.is_stopped());
    }
}
