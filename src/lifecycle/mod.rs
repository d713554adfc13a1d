//! The process lifecycle of a running Arc: signals, hot reload, graceful drain, zero-downtime
//! binary upgrade, systemd notifications and watchdog.
//!
//! [`Process::start`] brings up the admin server and the data plane (adopting the listening
//! sockets of a previous process when it was started by an upgrade), tells systemd it is ready
//! and starts the watchdog; [`Process::run`] then reacts to signals until the process drains:
//!
//! - **SIGHUP** — hot reload: `RELOADING=1` (with `MONOTONIC_USEC`), re-read and validate the
//!   file, swap routes, upstreams, limits, certificates and the log level without touching open
//!   connections (restart-required keys are named in a warning and keep their values; a bad
//!   file is rejected whole with every error logged and counted), then `READY=1`.
//! - **SIGTERM / SIGINT** — drain: `STOPPING=1`, `/readyz` 503 at once, listeners stop
//!   accepting, idle keep-alive connections close (once quiet for a second, so an active
//!   client's next request is answered with `Connection: close` instead of racing the close),
//!   busy ones finish their response with `Connection: close`, tunnels keep going until
//!   `lifecycle.drain_timeout`, then exit 0.
//! - **SIGUSR2** — upgrade: start `lifecycle.upgrade_binary`, or else the binary this process
//!   was started from (resolved at start, so a package that replaced the file starts the new
//!   version), with the same arguments, hand it every listening socket and the admin socket
//!   ([`handoff`]), wait until it reports ready (at most `lifecycle.upgrade_timeout`), answer
//!   "go", send `MAINPID=<new>`, then drain as above. The new process runs its workers with
//!   accepting paused and does not serve the admin socket until "go", so until then every new
//!   connection waits in the shared listen queues: if the new process fails or is late, it is
//!   killed having accepted nothing, the reason is logged and this one keeps serving (and
//!   accepting what queued). A second SIGUSR2 while an upgrade runs is refused with a log line.
//!
//! Design: the decisions (what to notify, when to drain) live here on the control-plane tokio
//! runtime; the workers only learn "drain" through their stop signal and the proxy core's
//! drain rules, and show liveness through heartbeats ([`watchdog`]).

#![forbid(unsafe_code)]

pub mod debug;
pub mod handoff;
pub mod notify;
pub mod watchdog;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{AdminError, AdminServer, HealthState};
use crate::admin::{ControlCommand, ControlToken, ControlView};
use crate::config::{self, Config};
use crate::controller::{self, ControllerHandle, KubeMetrics, Update};
use crate::logging::{AccessLog, LoggingError, LoggingHandle};
use crate::metrics::{Metrics, ReloadResult};
use crate::runtime::{Server, StartError};

use handoff::{HandoffError, HandoffListener, Handover, Inherited, ReadyChannel};
use notify::Notifier;

/// Longest wait of a new process for its parent's sockets.
pub const HANDOFF_RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait of a new process, once it reported ready, for its parent's "go" (the parent
/// answers at once; silence means it gave up and this process must exit).
pub const HANDOFF_GO_TIMEOUT: Duration = Duration::from_secs(10);
/// Slack on top of `lifecycle.drain_timeout` for the workers to return after their deadline.
const DRAIN_SLACK: Duration = Duration::from_secs(2);

/// Why the process could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("{0}")]
    Start(#[from] StartError),
    #[error("{0}")]
    Admin(#[from] AdminError),
    #[error("{0}")]
    Handoff(#[from] HandoffError),
    #[error("observability.metrics_bind: {0}")]
    AdminAddress(String),
    #[error("cannot install the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("workers did not stop cleanly: {0}")]
    Workers(StartError),
    #[error("{0}")]
    Logging(#[from] LoggingError),
    #[error("Kubernetes: {0}")]
    Controller(#[from] crate::controller::ControllerError),
}

/// How a [`Process`] is set up besides its configuration.
#[derive(Default)]
pub struct Options {
    /// The binary an upgrade starts unless `lifecycle.upgrade_binary` names one; `None` (and
    /// no configured binary) turns upgrades off. Resolve it at start
    /// (`std::env::current_exe()`), before a package manager replaces the file.
    pub exe: Option<PathBuf>,
    /// Arguments the upgraded process gets (normally this process's own).
    pub args: Vec<std::ffi::OsString>,
    /// The process logs (installed by the binary): reloads apply `logging.*` to them, SIGUSR1
    /// reopens their files, and the access log writes through them. `None`: no access log.
    pub logs: Option<LoggingHandle>,
    /// Kubeconfig for the controller (`--kubeconfig`); `None`: `KUBECONFIG`, then in-cluster.
    pub kubeconfig: Option<PathBuf>,
}

struct Signals {
    hangup: Signal,
    terminate: Signal,
    interrupt: Signal,
    upgrade: Signal,
    reopen: Signal,
}

impl Signals {
    fn install() -> Result<Signals, LifecycleError> {
        let make = |kind: SignalKind, name: &'static str| {
            signal(kind).map_err(|source| LifecycleError::Signal {
                signal: name,
                source,
            })
        };
        Ok(Signals {
            hangup: make(SignalKind::hangup(), "SIGHUP")?,
            terminate: make(SignalKind::terminate(), "SIGTERM")?,
            interrupt: make(SignalKind::interrupt(), "SIGINT")?,
            upgrade: make(SignalKind::user_defined2(), "SIGUSR2")?,
            reopen: make(SignalKind::user_defined1(), "SIGUSR1")?,
        })
    }
}

/// Why the process drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainReason {
    /// SIGTERM or SIGINT: the service stops.
    Stop,
    /// An upgrade handed the service to a new process.
    Upgraded,
}

/// An upgrade under way: the blocking handoff task and its cancel flag.
struct UpgradeTask {
    task: JoinHandle<Result<u32, String>>,
    cancel: Arc<AtomicBool>,
}

/// A running Arc process (admin server, data plane, notifications, watchdog).
pub struct Process {
    path: PathBuf,
    server: Server,
    metrics: Arc<Metrics>,
    health: Arc<HealthState>,
    notifier: Notifier,
    signals: Signals,
    admin_stop: watch::Sender<bool>,
    admin_task: JoinHandle<()>,
    /// The admin socket, kept for an upgrade handoff.
    admin_socket: Option<std::net::TcpListener>,
    watchdog: Option<JoinHandle<()>>,
    upgrade: Option<UpgradeTask>,
    /// The Kubernetes controller (`kubernetes.enabled`).
    kube: Option<ControllerHandle>,
    /// The access log the workers feed (`logging.access_log.enabled` at start).
    access: Option<Arc<AccessLog>>,
    /// What the control API shows, and its token.
    control: Arc<ControlView>,
    token: ControlToken,
    /// Writes requested through the control API.
    commands: tokio::sync::mpsc::Receiver<ControlCommand>,
    opts: Options,
}

impl Process {
    /// Starts everything for `cfg` (loaded from `path`) and tells systemd it is ready. In a
    /// process started by an upgrade, adopts the parent's sockets and reports readiness to it
    /// instead (the parent then hands the service over with `MAINPID=`).
    pub async fn start(path: &Path, cfg: Config, opts: Options) -> Result<Process, LifecycleError> {
        // First, so a signal sent as soon as the process exists does not kill it.
        let signals = Signals::install()?;
        let notifier = Notifier::from_env();
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(HealthState::new());

        let inherited =
            tokio::task::spawn_blocking(|| Inherited::from_env(HANDOFF_RECEIVE_TIMEOUT))
                .await
                .map_err(|e| HandoffError::Protocol(format!("receiving task failed: {e}")))??;
        let (mut inherited_listeners, inherited_admin, ready_channel) = match inherited {
            Some(i) => {
                let (l, a, r) = i.into_parts();
                tracing::info!(
                    sockets = l.len(),
                    admin = a.is_some(),
                    "upgrade: adopted the listening sockets of the previous process"
                );
                (l, a, Some(r))
            }
            None => (Vec::new(), None, None),
        };

        let admin_addr: std::net::SocketAddr =
            config::validate::parse_socket_addr(&cfg.observability.metrics_bind)
                .map_err(LifecycleError::AdminAddress)?;
        let access = match (&opts.logs, cfg.logging.access_log.enabled) {
            (Some(logs), true) => Some(Arc::new(AccessLog::start(
                logs.access_target(),
                crate::logging::access_policy(&cfg, metrics.routes()),
                cfg.logging.access_log.buffer,
                Arc::clone(&metrics),
            )?)),
            _ => None,
        };
        let token = ControlToken::new(cfg.control_plane.auth_token.clone());
        let (command_tx, commands) = tokio::sync::mpsc::channel::<ControlCommand>(16);
        let control = Arc::new(ControlView::new(token.clone(), Some(command_tx)));
        if let Some(a) = &access {
            control.attach_access_log(Arc::clone(a));
        }
        let admin = match inherited_admin {
            Some(l) if l.local_addr().is_ok_and(|a| same_bind(a, admin_addr)) => {
                AdminServer::from_std(l, Arc::clone(&metrics), Arc::clone(&health))?
                    .with_control(Arc::clone(&control))
            }
            other => {
                if other.is_some() {
                    tracing::warn!(
                        address = %admin_addr,
                        "upgrade: observability.metrics_bind changed; binding it anew"
                    );
                }
                AdminServer::bind(admin_addr, Arc::clone(&metrics), Arc::clone(&health))
                    .await?
                    .with_control(Arc::clone(&control))
            }
        };
        tracing::info!(address = %admin.local_addr(), "admin server listening");
        let admin_socket = admin.listener_socket().ok();
        let (admin_stop, admin_stopped) = watch::channel(false);
        let mut admin_serve = Some(admin.serve(crate::admin::shutdown_signal(admin_stopped)));
        // In a process started by an upgrade the admin socket stays the parent's until "go".
        let early_admin = if ready_channel.is_none() {
            admin_serve.take().map(tokio::spawn)
        } else {
            None
        };

        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let kube_bootstrap = cfg.kubernetes.enabled.then(|| cfg.clone());
        let server = Server::start_adopting(
            cfg,
            &base,
            Arc::clone(&metrics),
            Arc::clone(&health),
            &mut inherited_listeners,
            access.clone(),
        );
        let mut server = match server {
            Ok(s) => s,
            Err(e) => {
                let _ = admin_stop.send(true);
                return Err(e.into());
            }
        };
        // A debug control of the process (never set unless the operator asks): read here, in
        // the room that owns the process, and handed to the workers' heartbeats.
        if let Some(after) = debug::wedge_after_from_env() {
            server.heartbeats().debug_wedge_worker0(after);
        }
        for l in &inherited_listeners {
            tracing::warn!(
                listener = %l.name,
                "upgrade: inherited socket matches no configured listener; closing it"
            );
        }
        drop(inherited_listeners);
        server.attach_control(Arc::clone(&control));
        let kube = match kube_bootstrap {
            Some(bootstrap) => {
                // Ready only once the controller installed its first complete table.
                health.set_first_sync_done(false);
                let client = match controller::client(opts.kubeconfig.as_deref()).await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = admin_stop.send(true);
                        return Err(e.into());
                    }
                };
                let namespace = controller::own_namespace();
                if let Err(e) = controller::refuse_placeholder_token(&client, &namespace).await {
                    let _ = admin_stop.send(true);
                    return Err(e.into());
                }
                let settings = controller::Settings {
                    namespace: controller::own_namespace(),
                    identity: controller::own_identity(),
                    bootstrap,
                    node: controller::own_node(),
                };
                tracing::info!(
                    namespace = %settings.namespace,
                    identity = %settings.identity,
                    "Kubernetes controller starting"
                );
                let handle = controller::start(client, settings, KubeMetrics::register(&metrics));
                // The control-plane token follows Secret arc-gateway-secret.
                tokio::spawn(token.clone().follow(handle.token()));
                Some(handle)
            }
            None => None,
        };
        tracing::info!(config = %path.display(), driver = server.driver().name(), "arc-gateway is serving");

        match ready_channel {
            Some(channel) => {
                if let Some(delay) = debug::upgrade_ready_delay_from_env() {
                    tokio::time::sleep(delay).await;
                }
                if let Err(e) = await_go(channel).await {
                    // Nothing was accepted: the parent's listen queues still hold every
                    // connection. Stop the paused workers and exit.
                    let _ = admin_stop.send(true);
                    if let Some(k) = kube {
                        k.shutdown().await;
                    }
                    let _ = tokio::task::spawn_blocking(move || server.shutdown()).await;
                    return Err(e.into());
                }
                server.resume_accepting();
                tracing::info!("upgrade: the previous process said go; accepting");
            }
            None => notifier.ready(),
        }
        let admin_task = match (early_admin, admin_serve) {
            (Some(t), _) => t,
            (None, Some(serve)) => tokio::spawn(serve),
            (None, None) => tokio::spawn(async {}),
        };
        health.set_liveness(Arc::new(watchdog::HeartbeatLiveness(server.heartbeats())));
        let watchdog = watchdog::interval_from_env().map(|interval| {
            tracing::info!(interval = ?interval, "systemd watchdog enabled");
            tokio::spawn(watchdog::run(notifier, interval, server.heartbeats()))
        });
        Ok(Process {
            path: path.to_path_buf(),
            server,
            metrics,
            health,
            notifier,
            signals,
            admin_stop,
            admin_task,
            admin_socket,
            watchdog,
            upgrade: None,
            kube,
            access,
            control,
            token,
            commands,
            opts,
        })
    }

    /// The process metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The readiness flags `/readyz` reports.
    pub fn health(&self) -> &Arc<HealthState> {
        &self.health
    }

    /// The running data plane.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Serves until a stop signal or a completed upgrade, then drains and returns.
    pub async fn run(mut self) -> Result<(), LifecycleError> {
        let reason = loop {
            tokio::select! {
                _ = self.signals.hangup.recv() => { self.reload(); }
                _ = self.signals.upgrade.recv() => self.start_upgrade(),
                done = wait_upgrade(&mut self.upgrade), if self.upgrade.is_some() => {
                    self.upgrade = None;
                    match done {
                        Ok(pid) => {
                            tracing::info!(pid, "upgrade: the new process serves; draining this one");
                            self.notifier.main_pid(pid);
                            break DrainReason::Upgraded;
                        }
                        Err(reason) => tracing::error!(
                            reason = %reason,
                            "upgrade failed; the new process was stopped and this one keeps serving"
                        ),
                    }
                }
                update = next_update(&mut self.kube) => self.apply_update(update),
                _ = self.signals.reopen.recv() => self.reopen_logs(),
                Some(cmd) = self.commands.recv() => match cmd {
                    ControlCommand::Reload { reply } => {
                        let result = self.reload_file();
                        self.control.record_reload("api", result.clone());
                        let _ = reply.send(result);
                    }
                    ControlCommand::SetEndpoint { upstream, endpoint, enabled, reply } => {
                        let version = self.server.set_endpoint(&upstream, endpoint, enabled);
                        tracing::info!(
                            upstream = %upstream,
                            endpoint = %endpoint,
                            enabled,
                            version,
                            "endpoint load balancing changed"
                        );
                        let _ = reply.send(Ok(version));
                    }
                    ControlCommand::Drain => break DrainReason::Stop,
                },
                _ = self.signals.terminate.recv() => break DrainReason::Stop,
                _ = self.signals.interrupt.recv() => break DrainReason::Stop,
            }
        };
        self.drain(reason).await
    }

    /// Re-reads the configuration file and applies it (see the module doc). Returns whether
    /// the new configuration was taken.
    pub fn reload(&mut self) -> bool {
        let result = self.reload_file();
        let taken = result.is_ok();
        self.control.record_reload("signal", result);
        taken
    }

    /// SIGUSR1: reopens the log files (after an external logrotate moved them).
    fn reopen_logs(&self) {
        if let Some(logs) = &self.opts.logs {
            match logs.reopen() {
                Ok(()) => tracing::info!("log files reopened"),
                Err(e) => tracing::error!(error = %e, "log files not reopened"),
            }
        }
    }

    /// Applies what a reload changes outside the data plane: logging settings and the token.
    fn after_reload(&self) {
        let cfg = self.server.config();
        if let Some(logs) = &self.opts.logs
            && let Err(e) = logs.apply(&cfg.logging)
        {
            tracing::warn!(error = %e, "logging settings not applied");
        }
        match (&cfg.control_plane.auth_token, &self.kube) {
            (Some(t), _) => self.token.set(Some(t.clone())),
            // Standalone, the file is the only source: a reload that removes the token switches
            // the control API off (it used to keep the old token until a restart).
            (None, None) => self.token.set(None),
            // In Kubernetes mode Secret `arc-gateway-secret` keeps supplying it.
            (None, Some(_)) => {}
        }
    }

    /// [`Process::reload`]: the new routing version, or why the file was rejected.
    fn reload_file(&mut self) -> Result<u64, String> {
        self.notifier.reloading();
        let base = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let loaded = config::load(&self.path).and_then(|new| {
            // Every unreadable certificate or key is named, not just the first.
            let problems = config::check_referenced_files(&new, &base);
            if problems.is_empty() {
                Ok(new)
            } else {
                Err(config::ConfigError {
                    origin: self.path.display().to_string(),
                    problems,
                })
            }
        });
        let taken = match loaded {
            Ok(new) => {
                // In Kubernetes mode the ConfigMap overrides the file (which then only
                // bootstraps `kubernetes.*` and the restart-required keys).
                let new = match &self.kube {
                    Some(k) => k.effective_config(new),
                    None => new,
                };
                match self.server.reload(new) {
                    Ok(changes) => {
                        self.after_reload();
                        tracing::info!(
                            config = %self.path.display(),
                            restart_required = changes.len(),
                            version = self.server.version(),
                            "configuration reloaded"
                        );
                        Ok(self.server.version())
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "configuration rejected; the old one keeps serving");
                        Err(e.to_string())
                    }
                }
            }
            Err(e) => {
                self.metrics
                    .control()
                    .config_reloaded(ReloadResult::Failure);
                for p in &e.problems {
                    tracing::error!(
                        config = %e.origin,
                        key = %p.key,
                        line = p.line,
                        problem = %p.message,
                        "configuration rejected; the old one keeps serving"
                    );
                }
                Err(e.to_string())
            }
        };
        self.notifier.ready();
        taken
    }

    /// Installs what the Kubernetes controller published: a new cluster state (routes,
    /// endpoints, certificates) or a new configuration from the ConfigMap.
    fn apply_update(&mut self, update: Update) {
        match update {
            Update::Cluster(state) => match self.server.publish(state) {
                Ok(v) => tracing::debug!(version = v, "routing table from the cluster installed"),
                Err(e) => tracing::error!(
                    error = %e,
                    "cluster state not installed; the old one keeps serving"
                ),
            },
            Update::Config(cfg) => {
                self.notifier.reloading();
                let result = match self.server.reload((*cfg).clone()) {
                    Ok(_) => {
                        self.after_reload();
                        tracing::info!("configuration from the ConfigMap applied");
                        Ok(self.server.version())
                    }
                    Err(e) => {
                        tracing::error!(
                            error = %e,
                            "configuration rejected; the old one keeps serving"
                        );
                        Err(e.to_string())
                    }
                };
                self.control.record_reload("kubernetes", result);
                self.notifier.ready();
            }
        }
    }

    fn start_upgrade(&mut self) {
        if self.upgrade.is_some() {
            tracing::warn!("SIGUSR2 refused: an upgrade is already in progress");
            return;
        }
        let lifecycle = &self.server.config().lifecycle;
        let configured = lifecycle.upgrade_binary.as_ref().map(PathBuf::from);
        let timeout = lifecycle.upgrade_timeout.get();
        let Some(exe) = configured.or_else(|| self.opts.exe.clone()) else {
            tracing::error!("SIGUSR2 refused: the binary path of this process is unknown");
            return;
        };
        let handover = match self.handover() {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "SIGUSR2 refused: cannot duplicate the listening sockets");
                return;
            }
        };
        tracing::info!(binary = %exe.display(), timeout = ?timeout, "upgrade: starting the new process");
        let args = self.opts.args.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancel);
        let task =
            tokio::task::spawn_blocking(move || upgrade(&exe, &args, &handover, timeout, &flag));
        self.upgrade = Some(UpgradeTask { task, cancel });
    }

    fn handover(&self) -> std::io::Result<Handover> {
        let listeners = self
            .server
            .listener_sockets()?
            .into_iter()
            .map(|(name, socket)| (name.to_string(), OwnedFd::from(socket)))
            .collect();
        let admin = match &self.admin_socket {
            Some(s) => Some(OwnedFd::from(s.try_clone()?)),
            None => None,
        };
        Ok(Handover { listeners, admin })
    }

    /// Drains (see the module doc) and returns once the workers finished or the deadline
    /// (`lifecycle.drain_timeout`) passed.
    pub async fn drain(mut self, reason: DrainReason) -> Result<(), LifecycleError> {
        if let Some(up) = self.upgrade.take() {
            // A stop during an upgrade: the new process must not outlive this one unasked.
            up.cancel.store(true, Ordering::Release);
            let _ = up.task.await;
        }
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
        if let Some(k) = self.kube.take() {
            // Watches stop and the Lease is handed back; traffic keeps the last table.
            k.shutdown().await;
        }
        let timeout = self.server.config().lifecycle.drain_timeout.get();
        match reason {
            DrainReason::Stop => {
                self.notifier.stopping();
                tracing::info!(deadline = ?timeout, "draining");
            }
            DrainReason::Upgraded => {
                tracing::info!(deadline = ?timeout, "draining after the upgrade");
            }
        }
        let started = Instant::now();
        self.server.begin_drain();
        // The handoff copies would keep the sockets open; the admin socket lives on in the new
        // process after an upgrade, which answers /readyz from now on.
        self.admin_socket = None;
        if reason == DrainReason::Upgraded {
            let _ = self.admin_stop.send(true);
        }
        let server = self.server;
        let joined = tokio::time::timeout(
            timeout + DRAIN_SLACK,
            tokio::task::spawn_blocking(move || server.join()),
        )
        .await;
        let result = match joined {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(LifecycleError::Workers(e)),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "joining the workers failed");
                Ok(())
            }
            Err(_) => {
                tracing::warn!(
                    deadline = ?timeout,
                    "drain deadline passed with connections still open; exiting"
                );
                Ok(())
            }
        };
        let _ = self.admin_stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.admin_task).await;
        if let Some(a) = &self.access {
            // Flushes what the workers queued.
            a.stop();
        }
        tracing::info!(took = ?started.elapsed(), "stopped");
        result
    }
}

/// Two socket addresses name the same bind (port 0 in the configuration matches any port).
fn same_bind(bound: std::net::SocketAddr, configured: std::net::SocketAddr) -> bool {
    bound == configured || (configured.port() == 0 && bound.ip() == configured.ip())
}

/// In a process started by an upgrade: reports readiness to the parent and waits for its
/// "go". An error means this process must not accept anything and exits.
async fn await_go(channel: ReadyChannel) -> Result<(), HandoffError> {
    if debug::upgrade_exit_before_go_from_env() {
        return Err(HandoffError::Protocol(format!(
            "{} is set: exiting before go (debug control)",
            debug::UPGRADE_EXIT_BEFORE_GO_ENV
        )));
    }
    tokio::task::spawn_blocking(move || {
        channel.ready()?;
        tracing::info!("upgrade: told the previous process this one is ready; waiting for go");
        channel.wait_go(HANDOFF_GO_TIMEOUT)
    })
    .await
    .map_err(|e| HandoffError::Protocol(format!("readiness task failed: {e}")))?
}

/// The controller's next update, or never when not in Kubernetes mode.
async fn next_update(kube: &mut Option<ControllerHandle>) -> Update {
    match kube {
        Some(k) => k.next().await,
        None => std::future::pending().await,
    }
}

async fn wait_upgrade(task: &mut Option<UpgradeTask>) -> Result<u32, String> {
    match task {
        Some(t) => match (&mut t.task).await {
            Ok(r) => r,
            Err(e) => Err(format!("the upgrade task failed: {e}")),
        },
        None => std::future::pending().await,
    }
}

/// Starts `exe`, hands it the sockets, waits (until `timeout`) for its readiness and answers
/// "go". Blocking; on failure the new process is killed and reaped, and the error says why.
fn upgrade(
    exe: &Path,
    args: &[std::ffi::OsString],
    handover: &Handover,
    timeout: Duration,
    cancel: &AtomicBool,
) -> Result<u32, String> {
    let listener = HandoffListener::bind().map_err(|e| e.to_string())?;
    let mut child = std::process::Command::new(exe)
        .args(args)
        .env(handoff::UPGRADE_SOCKET_ENV, listener.name())
        // systemd moves the watchdog to the new main process; the old pid must not stop it.
        .env_remove("WATCHDOG_PID")
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let pid = child.id();
    let until = Instant::now() + timeout;
    let mut exit_status = None;
    let mut alive = || {
        if cancel.load(Ordering::Acquire) {
            return false;
        }
        match child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                exit_status = Some(status);
                false
            }
            Err(_) => false,
        }
    };
    // "Go" right after readiness: from here on the new process accepts, and the caller stops
    // this one's accepting at once.
    let result = listener
        .hand_over(pid, handover, until, &mut alive)
        .and_then(|channel| {
            channel.wait_ready(until, &mut alive)?;
            channel.go()
        });
    match result {
        Ok(()) => Ok(pid),
        Err(e) => {
            let mut reason = format!("new process {pid}: {e}");
            let late = matches!(e, HandoffError::Timeout(..));
            if exit_status.is_none() && !late && !cancel.load(Ordering::Acquire) {
                // It may be exiting on its own (the channel closed first): say how it ended.
                let until = Instant::now() + Duration::from_millis(300);
                while exit_status.is_none() && Instant::now() < until {
                    match child.try_wait() {
                        Ok(Some(status)) => exit_status = Some(status),
                        Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                        Err(_) => break,
                    }
                }
            }
            if let Some(status) = exit_status {
                reason.push_str(&format!(" (it exited: {status})"));
            } else if cancel.load(Ordering::Acquire) {
                reason.push_str(" (cancelled by a stop signal)");
            }
            let _ = child.kill();
            let _ = child.wait();
            Err(reason)
        }
    }
}
