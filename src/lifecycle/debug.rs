//! Debug controls that only an explicit operator action turns on: nothing here is reachable
//! unless the named environment variable is set when the process starts, and using one logs a
//! warning. They exist so tests can prove failure handling (a wedged worker stops the systemd
//! watchdog) against the real binary.

use std::time::Duration;

/// `ARC_DEBUG_WEDGE_WORKER0_AFTER=<milliseconds>`: worker 0 stops turning its event loop that
/// long after start, as a wedged worker would.
pub const WEDGE_ENV: &str = "ARC_DEBUG_WEDGE_WORKER0_AFTER";

/// The requested wedge delay, if the operator set [`WEDGE_ENV`] to a number of milliseconds.
pub fn wedge_after_from_env() -> Option<Duration> {
    let v = std::env::var(WEDGE_ENV).ok()?;
    match v.trim().parse::<u64>() {
        Ok(ms) => {
            tracing::warn!(
                after_ms = ms,
                "{WEDGE_ENV} is set: worker 0 will wedge on purpose (debug control)"
            );
            Some(Duration::from_millis(ms))
        }
        Err(_) => {
            tracing::warn!(value = %v, "{WEDGE_ENV} is not a number of milliseconds; ignored");
            None
        }
    }
}

/// `ARC_DEBUG_UPGRADE_READY_DELAY=<milliseconds>`: a process started by an upgrade waits that
/// long before reporting ready to its parent (so tests can act while an upgrade is under way).
pub const UPGRADE_READY_DELAY_ENV: &str = "ARC_DEBUG_UPGRADE_READY_DELAY";

/// The requested readiness delay, if the operator set [`UPGRADE_READY_DELAY_ENV`].
pub fn upgrade_ready_delay_from_env() -> Option<Duration> {
    let v = std::env::var(UPGRADE_READY_DELAY_ENV).ok()?;
    let ms = v.trim().parse::<u64>().ok()?;
    tracing::warn!(
        delay_ms = ms,
        "{UPGRADE_READY_DELAY_ENV} is set: readiness is reported late on purpose (debug control)"
    );
    Some(Duration::from_millis(ms))
}

/// `ARC_DEBUG_UPGRADE_EXIT_BEFORE_GO=1`: a process started by an upgrade adopts the sockets and
/// starts its workers (accepting paused), then exits with an error instead of reporting ready,
/// as a new version that fails after adoption would.
pub const UPGRADE_EXIT_BEFORE_GO_ENV: &str = "ARC_DEBUG_UPGRADE_EXIT_BEFORE_GO";

/// Whether the operator set [`UPGRADE_EXIT_BEFORE_GO_ENV`] to `1`.
pub fn upgrade_exit_before_go_from_env() -> bool {
    let set = std::env::var(UPGRADE_EXIT_BEFORE_GO_ENV).is_ok_and(|v| v.trim() == "1");
    if set {
        tracing::warn!(
            "{UPGRADE_EXIT_BEFORE_GO_ENV} is set: this upgraded process exits before go (debug control)"
        );
    }
    set
}
