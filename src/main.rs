//! The `arc-gateway` binary: command line parsing and process start-up.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use std::sync::Arc;

use arc_gateway::admin::{AdminServer, ControlCommand, ControlToken, ControlView, HealthState};
use arc_gateway::config;
use arc_gateway::logging::{self, AccessLog, LoggingHandle};
use arc_gateway::metrics::{Metrics, ReloadResult};
use arc_gateway::runtime::Server;

/// Arc: a Kubernetes Ingress controller with an embedded io_uring data plane.
#[derive(Debug, Parser)]
#[command(name = "arc-gateway", version, about)]
struct Cli {
    /// Configuration file (.yaml, .yml, .json or .toml).
    #[arg(long, short = 'c', value_name = "PATH", global = true)]
    config: Option<PathBuf>,

    /// Validate the configuration, print `ok` or every error, and exit; never binds a port.
    #[arg(long)]
    check: bool,

    /// Kubeconfig for the controller (default: in-cluster, then $KUBECONFIG).
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print version, git commit and what this host supports.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Version) => {
            println!("arc-gateway {}", env!("CARGO_PKG_VERSION"));
            println!(
                "commit: {}",
                option_env!("ARC_GIT_COMMIT").unwrap_or("unknown")
            );
            ExitCode::SUCCESS
        }
        None => {
            let Some(path) = cli.config.as_deref() else {
                eprintln!("arc-gateway: --config PATH is required (see --help)");
                return ExitCode::from(2);
            };
            if cli.check {
                check(path)
            } else {
                run(path, cli.kubeconfig.as_deref())
            }
        }
    }
}

/// `--check`: every problem of the file, or `ok`.
fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(cfg) => {
            let base = path.parent().unwrap_or(Path::new("."));
            let problems = config::check_referenced_files(&cfg, base);
            if problems.is_empty() {
                println!("ok");
                ExitCode::SUCCESS
            } else {
                let err = config::ConfigError {
                    origin: path.display().to_string(),
                    problems,
                };
                eprintln!("{err}");
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &Path, _kubeconfig: Option<&Path>) -> ExitCode {
    let cfg = match config::load(path) {
        Ok(cfg) => cfg,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    let logs = match logging::init(&cfg.logging) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("arc-gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("arc-gateway: cannot start the control-plane runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(path, cfg, logs)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "arc-gateway stopped");
            eprintln!("arc-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the admin server and the data plane until SIGTERM/SIGINT; SIGHUP reloads the file.
async fn serve(path: &Path, cfg: config::Config, logs: LoggingHandle) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use tokio::signal::unix::{SignalKind, signal};

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(HealthState::new());
    let admin_addr: std::net::SocketAddr =
        config::validate::parse_socket_addr(&cfg.observability.metrics_bind)
            .map_err(|m| anyhow::anyhow!("observability.metrics_bind: {m}"))?;
    let access = if cfg.logging.access_log.enabled {
        let policy = logging::access_policy(&cfg, metrics.routes());
        let buffer = cfg.logging.access_log.buffer;
        Some(Arc::new(AccessLog::start(
            logs.access_target(),
            policy,
            buffer,
            Arc::clone(&metrics),
        )?))
    } else {
        None
    };
    let token = ControlToken::new(cfg.control_plane.auth_token.clone());
    let (command_tx, mut commands) = tokio::sync::mpsc::channel::<ControlCommand>(16);
    let control = Arc::new(ControlView::new(token.clone(), Some(command_tx)));
    if let Some(a) = &access {
        control.attach_access_log(Arc::clone(a));
    }
    let admin = AdminServer::bind(admin_addr, Arc::clone(&metrics), Arc::clone(&health))
        .await?
        .with_control(Arc::clone(&control));
    tracing::info!(address = %admin.local_addr(), "admin server listening");
    let (stop_admin, admin_stopped) = tokio::sync::watch::channel(false);
    let admin_task = tokio::spawn(admin.serve(arc_gateway::admin::shutdown_signal(admin_stopped)));

    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut user1 =
        signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;

    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut server = Server::start_with_access_log(
        cfg,
        &base,
        Arc::clone(&metrics),
        Arc::clone(&health),
        access.clone(),
    )?;
    server.attach_control(Arc::clone(&control));
    tracing::info!(config = %path.display(), driver = server.driver().name(), "arc-gateway is serving");

    loop {
        tokio::select! {
            _ = hangup.recv() => {
                let result = reload(path, &mut server, &metrics, &logs, &token);
                control.record_reload("signal", result);
            }
            _ = user1.recv() => match logs.reopen() {
                Ok(()) => tracing::info!("log files reopened"),
                Err(e) => tracing::error!(error = %e, "log files not reopened"),
            },
            Some(cmd) = commands.recv() => match cmd {
                ControlCommand::Reload { reply } => {
                    let result = reload(path, &mut server, &metrics, &logs, &token);
                    control.record_reload("api", result.clone());
                    let _ = reply.send(result);
                }
                ControlCommand::SetEndpoint { upstream, endpoint, enabled, reply } => {
                    let version = server.set_endpoint(&upstream, endpoint, enabled);
                    tracing::info!(upstream = %upstream, endpoint = %endpoint, enabled, version, "endpoint load balancing changed");
                    let _ = reply.send(Ok(version));
                }
                ControlCommand::Drain => break,
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("draining");
    health.start_draining();
    tokio::task::spawn_blocking(move || server.shutdown())
        .await
        .context("joining the workers")??;
    if let Some(a) = &access {
        a.stop();
    }
    let _ = stop_admin.send(true);
    let _ = admin_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// Re-reads the configuration file and applies it; the new routing version, or why not.
fn reload(
    path: &Path,
    server: &mut Server,
    metrics: &Metrics,
    logs: &LoggingHandle,
    token: &ControlToken,
) -> Result<u64, String> {
    match config::load(path) {
        Ok(new) => match server.reload(new) {
            Ok(_) => {
                let cfg = server.config();
                if let Err(e) = logs.apply(&cfg.logging) {
                    tracing::warn!(error = %e, "logging settings not applied");
                }
                if let Some(t) = &cfg.control_plane.auth_token {
                    token.set(Some(t.clone()));
                }
                tracing::info!(config = %path.display(), version = server.version(), "configuration reloaded");
                Ok(server.version())
            }
            Err(e) => {
                tracing::error!(error = %e, "configuration rejected; the old one keeps serving");
                Err(e.to_string())
            }
        },
        Err(e) => {
            metrics.control().config_reloaded(ReloadResult::Failure);
            for p in &e.problems {
                tracing::error!(key = %p.key, line = p.line, problem = %p.message, "configuration rejected; the old one keeps serving");
            }
            Err(e.to_string())
        }
    }
}
