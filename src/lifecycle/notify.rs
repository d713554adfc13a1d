//! systemd readiness protocol (`sd_notify`): what Arc tells the service manager and when.
//!
//! `READY=1` once serving; `RELOADING=1` with `MONOTONIC_USEC` before a reload and `READY=1`
//! after it (whether the new configuration was taken or rejected); `STOPPING=1` when drain
//! starts; `MAINPID=<pid>` when an upgrade handed the service to a new process; `WATCHDOG=1`
//! from the watchdog. Without `NOTIFY_SOCKET` every call is a no-op. Send errors are logged,
//! never fatal: the proxy keeps serving whatever the service manager does.

use sd_notify::NotifyState;

/// Sends state changes to the service manager named by `NOTIFY_SOCKET`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notifier {
    _private: (),
}

impl Notifier {
    /// A notifier for this process's environment.
    pub fn from_env() -> Notifier {
        Notifier { _private: () }
    }

    /// Whether a service manager listens (`NOTIFY_SOCKET` is set).
    pub fn enabled(&self) -> bool {
        std::env::var_os("NOTIFY_SOCKET").is_some()
    }

    fn send(&self, what: &'static str, states: &[NotifyState<'_>]) {
        if !self.enabled() {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!(notification = what, error = %e, "cannot notify the service manager");
        }
    }

    /// The process serves.
    pub fn ready(&self) {
        self.send("READY", &[NotifyState::Ready]);
    }

    /// A reload starts (`RELOADING=1` with the monotonic clock, as `Type=notify-reload`
    /// expects); follow with [`Notifier::ready`].
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send("RELOADING", &[NotifyState::Reloading, now]),
            Err(_) => self.send("RELOADING", &[NotifyState::Reloading]),
        }
    }

    /// Drain started: the process is going away.
    pub fn stopping(&self) {
        self.send("STOPPING", &[NotifyState::Stopping]);
    }

    /// The service continues in process `pid` (upgrade).
    pub fn main_pid(&self, pid: u32) {
        self.send("MAINPID", &[NotifyState::MainPid(pid)]);
    }

    /// Watchdog keep-alive.
    pub fn watchdog(&self) {
        self.send("WATCHDOG", &[NotifyState::Watchdog]);
    }

    /// Free-form status line (`systemctl status` shows it).
    pub fn status(&self, text: &str) {
        self.send("STATUS", &[NotifyState::Status(text)]);
    }
}
