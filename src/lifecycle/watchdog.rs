//! The systemd watchdog: `WATCHDOG=1` every half `WATCHDOG_USEC`, but only while every data-plane
//! worker turns its event loop. Workers stamp a heartbeat each turn (and turn at least every
//! [`crate::proxy::stop::HEARTBEAT_TICK`] when idle); a worker whose stamp is older than
//! [`STALL_LIMIT`] counts as wedged, pings stop, and systemd restarts the service after
//! `WatchdogSec`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proxy::stop::Heartbeats;

use super::notify::Notifier;

/// A worker that has not turned for this long is wedged.
pub const STALL_LIMIT: Duration = Duration::from_secs(5);

/// The watchdog interval systemd asks for, if any: `WATCHDOG_USEC`, honoured when
/// `WATCHDOG_PID` is unset or names this process.
pub fn interval_from_env() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}

/// Whether every worker turned within [`STALL_LIMIT`]; logs the wedged ones.
pub fn workers_alive(heartbeats: &Heartbeats, now: Instant) -> bool {
    let stalled = heartbeats.stalled(now, STALL_LIMIT);
    if stalled.is_empty() {
        return true;
    }
    tracing::error!(
        workers = ?stalled,
        stalled_for = ?heartbeats.oldest(now),
        "worker event loop wedged; withholding the systemd watchdog ping"
    );
    false
}

/// The workers' heartbeats as `/healthz` reads them: wedged past [`STALL_LIMIT`], the same
/// rule as the systemd watchdog.
pub struct HeartbeatLiveness(pub Arc<Heartbeats>);

impl crate::admin::WorkerLiveness for HeartbeatLiveness {
    fn wedged(&self, now: Instant) -> Option<(Vec<usize>, Duration)> {
        let stalled = self.0.stalled(now, STALL_LIMIT);
        (!stalled.is_empty()).then(|| (stalled, self.0.oldest(now)))
    }

    fn limit(&self) -> Duration {
        STALL_LIMIT
    }
}

/// Pings every `watchdog / 2` while the workers are alive; runs until the task is aborted.
pub async fn run(notifier: Notifier, watchdog: Duration, heartbeats: Arc<Heartbeats>) {
    let period = (watchdog / 2).max(Duration::from_millis(10));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if workers_alive(&heartbeats, Instant::now()) {
            notifier.watchdog();
        }
    }
}
