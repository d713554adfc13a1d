//! The worker set: `node.workers` plain OS threads (`arc-worker-N`), each running the chosen io
//! driver over its own listener sockets, and the handle that stops them.
//!
//! Each worker owns one listener socket per configured listener ([`crate::proxy::listener`]),
//! one event loop, one upstream pool and one worker context `Cx`. Nothing here is touched per
//! request: [`ConnLimit`] once per connection, the stop signal ([`crate::proxy::stop`]) once
//! per shutdown, [`DriverStats`] once per connection by the owning worker only. The contract a
//! driver implements is [`crate::proxy::driver`]; this module is the only one that names the
//! drivers themselves.

#![forbid(unsafe_code)]

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::proxy::driver::{
    DriverEntry, DriverError, DriverKind, DriverParams, DriverStats, Tuning,
};
use crate::proxy::io::{ConnHandler, ConnLimit};
use crate::proxy::listener::{
    InheritedListener, ListenerError, ListenerSpec, adopt_all, socket_identity,
};
use crate::proxy::stop::{Heartbeats, StopHandle};

/// Why the worker set could not start or finished with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A listener socket could not be created, bound or put to listening.
    #[error(transparent)]
    Bind(#[from] ListenerError),
    /// Another resource of the worker set could not be made.
    #[error("cannot create {what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The requested driver is not compiled into this build.
    #[error("the {0} io driver is not available in this build")]
    DriverUnavailable(DriverKind),
    /// A worker's driver stopped with an error.
    #[error("worker {worker}: {source}")]
    Driver {
        worker: usize,
        #[source]
        source: DriverError,
    },
    /// A worker thread panicked.
    #[error("worker {0} panicked")]
    Panicked(usize),
}

/// The driver entry for `kind`, or an error when that driver is not part of this build.
pub fn driver_entry<H>(kind: DriverKind) -> Result<DriverEntry<H::Cx>, WorkerError>
where
    H: ConnHandler + 'static,
{
    match kind {
        DriverKind::Epoll => Ok(crate::proxy::epoll::run::<H>),
        DriverKind::Uring => Ok(crate::proxy::uring::run::<H>),
    }
}

/// The running workers: their threads, the stop handle, the addresses they serve.
pub struct WorkerSet {
    threads: Vec<JoinHandle<Result<(), DriverError>>>,
    /// A duplicate of every listener socket (same open socket), kept so a zero-downtime upgrade
    /// can hand them to the next process; dropped when the workers stop.
    handoff: std::sync::Mutex<Vec<InheritedListenerRef>>,
    stop: StopHandle,
    stats: Vec<Arc<DriverStats>>,
    local_addrs: Vec<SocketAddr>,
    driver: DriverKind,
}

#[derive(Debug)]
struct InheritedListenerRef {
    name: Arc<str>,
    socket: TcpListener,
}

/// What a [`WorkerSet`] is started with (besides the handler type and the `Cx` factory).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub driver: DriverKind,
    /// Number of worker threads (at least 1).
    pub workers: usize,
    pub listeners: Vec<ListenerSpec>,
    pub conn_limit: Arc<ConnLimit>,
    pub tuning: Tuning,
    /// Start with accepting paused until [`WorkerSet::resume_accepting`] (a process started by
    /// an upgrade, before its predecessor says "go").
    pub accept_paused: bool,
}

impl WorkerSet {
    /// Binds every listener once per worker, then starts `config.workers` threads named
    /// `arc-worker-N`, each running the chosen driver with the `Cx` that `make_cx(N)` builds
    /// on that thread. Bind errors are reported here, before any thread starts.
    pub fn spawn<H, F>(config: WorkerConfig, make_cx: F) -> Result<WorkerSet, WorkerError>
    where
        H: ConnHandler + 'static,
        H::Cx: 'static,
        F: Fn(usize) -> H::Cx + Send + Sync + 'static,
    {
        Self::spawn_adopting::<H, F>(config, &mut Vec::new(), make_cx)
    }

    /// [`WorkerSet::spawn`] that first adopts inherited listener sockets (see [`adopt_all`]).
    pub fn spawn_adopting<H, F>(
        config: WorkerConfig,
        inherited: &mut Vec<InheritedListener>,
        make_cx: F,
    ) -> Result<WorkerSet, WorkerError>
    where
        H: ConnHandler + 'static,
        H::Cx: 'static,
        F: Fn(usize) -> H::Cx + Send + Sync + 'static,
    {
        let entry = driver_entry::<H>(config.driver)?;
        let workers = config.workers.max(1);
        let bound = adopt_all(&config.listeners, workers, inherited)?;
        let mut handoff = Vec::new();
        let mut seen = Vec::new();
        for l in bound.iter().flatten() {
            // A socket shared by several workers is handed over once.
            if let Ok(meta) = socket_identity(&l.socket) {
                let id = meta;
                if seen.contains(&id) {
                    continue;
                }
                seen.push(id);
            }
            let socket = l.socket.try_clone().map_err(|source| WorkerError::Setup {
                what: "a handoff copy of a listener socket",
                source,
            })?;
            handoff.push(InheritedListenerRef {
                name: Arc::clone(&l.spec.name),
                socket,
            });
        }
        let local_addrs = bound
            .first()
            .map(|l| l.iter().map(|b| b.spec.addr).collect())
            .unwrap_or_default();
        let (stop, signals) = StopHandle::new(workers).map_err(|source| WorkerError::Setup {
            what: "eventfd for the stop signal",
            source,
        })?;
        if config.accept_paused {
            stop.pause_accepting();
        }
        let make_cx = Arc::new(make_cx);
        let mut set = WorkerSet {
            threads: Vec::with_capacity(workers),
            handoff: std::sync::Mutex::new(handoff),
            stop,
            stats: Vec::with_capacity(workers),
            local_addrs,
            driver: config.driver,
        };
        for (worker, (listeners, signal)) in bound.into_iter().zip(signals).enumerate() {
            let stats = Arc::new(DriverStats::default());
            set.stats.push(Arc::clone(&stats));
            let conn_limit = Arc::clone(&config.conn_limit);
            let tuning = config.tuning;
            let make_cx = Arc::clone(&make_cx);
            let spawned = std::thread::Builder::new()
                .name(format!("arc-worker-{worker}"))
                .spawn(move || {
                    let cx = make_cx(worker);
                    entry(DriverParams {
                        worker,
                        listeners,
                        conn_limit,
                        stop: signal,
                        cx,
                        tuning,
                        stats,
                    })
                });
            match spawned {
                Ok(handle) => set.threads.push(handle),
                Err(source) => {
                    set.stop.stop();
                    let _ = set.join_threads();
                    return Err(WorkerError::Setup {
                        what: "a worker thread",
                        source,
                    });
                }
            }
        }
        Ok(set)
    }

    /// The address each listener serves (ports resolved when the config said 0), in order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The driver the workers run.
    pub fn driver(&self) -> DriverKind {
        self.driver
    }

    /// A handle that stops the workers (for signal handlers, admin endpoints, tests).
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Asks every worker to stop (see [`DriverParams`] for what stopping means). The handoff
    /// copies of the listener sockets are closed too, so a listener no other process holds
    /// stops taking connections.
    pub fn stop(&self) {
        if let Ok(mut h) = self.handoff.lock() {
            h.clear();
        }
        self.stop.stop();
    }

    /// Lets workers started with accepting paused accept (see [`WorkerConfig::accept_paused`]).
    pub fn resume_accepting(&self) {
        self.stop.resume_accepting();
    }

    /// The stop grace the workers use from now on when the drain starts (a reloaded
    /// `lifecycle.drain_timeout`).
    pub fn set_stop_grace(&self, grace: Duration) {
        self.stop.set_grace(grace);
    }

    /// Fresh duplicates of every listener socket (listener name, socket), for handing to the
    /// next process of a zero-downtime upgrade. Empty once the workers were stopped.
    pub fn listener_sockets(&self) -> io::Result<Vec<(Arc<str>, TcpListener)>> {
        let Ok(h) = self.handoff.lock() else {
            return Ok(Vec::new());
        };
        h.iter()
            .map(|l| Ok((Arc::clone(&l.name), l.socket.try_clone()?)))
            .collect()
    }

    /// The workers' heartbeats (for the watchdog).
    pub fn heartbeats(&self) -> &Arc<Heartbeats> {
        self.stop.heartbeats()
    }

    /// Per-worker counters, in worker order.
    pub fn stats(&self) -> &[Arc<DriverStats>] {
        &self.stats
    }

    /// Sum of one counter over all workers.
    pub fn total(&self, pick: impl Fn(&DriverStats) -> &AtomicU64) -> u64 {
        self.stats.iter().map(|s| DriverStats::get(pick(s))).sum()
    }

    /// Waits for every worker to finish; the first error (in worker order) is returned.
    pub fn join(mut self) -> Result<(), WorkerError> {
        self.join_threads()
    }

    fn join_threads(&mut self) -> Result<(), WorkerError> {
        let mut first = Ok(());
        for (worker, handle) in self.threads.drain(..).enumerate() {
            let result = match handle.join() {
                Ok(Ok(())) => Ok(()),
                Ok(Err(source)) => Err(WorkerError::Driver { worker, source }),
                Err(_) => Err(WorkerError::Panicked(worker)),
            };
            if first.is_ok() {
                first = result;
            }
        }
        first
    }
}

impl Drop for WorkerSet {
    /// Stops and joins the workers if the owner did not.
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop.stop();
            let _ = self.join_threads();
        }
    }
}
