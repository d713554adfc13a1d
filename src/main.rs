//! The `arc-gateway` binary: command line parsing and process start-up.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use std::sync::Arc;

use arc_gateway::admin::{AdminServer, HealthState};
use arc_gateway::config;
use arc_gateway::controller;
use arc_gateway::metrics::kube::KubeMetrics;
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
    /// Print the CustomResourceDefinitions (YAML) that `crds/` holds.
    Crdgen,
}

fn main() -> ExitCode {
    // rustls is built with both ring and aws-lc-rs here; kube's client needs a process default.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Version) => {
            println!("arc-gateway {}", env!("CARGO_PKG_VERSION"));
            println!(
                "commit: {}",
                option_env!("ARC_GIT_COMMIT").unwrap_or("unknown")
            );
            println!("xdp: {}", arc_gateway::xdp::support_summary());
            ExitCode::SUCCESS
        }
        Some(Command::Crdgen) => match arc_gateway::crd::crds_yaml() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("arc-gateway: {e}");
                ExitCode::FAILURE
            }
        },
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

fn run(path: &Path, kubeconfig: Option<&Path>) -> ExitCode {
    let cfg = match config::load(path) {
        Ok(cfg) => cfg,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(&cfg.logging);
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
    match runtime.block_on(serve(path, cfg, kubeconfig)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "arc-gateway stopped");
            eprintln!("arc-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(logging: &config::Logging) {
    use config::{LogFormat, LogLevel};
    let level = match logging.level {
        LogLevel::Trace => tracing::Level::TRACE,
        LogLevel::Debug => tracing::Level::DEBUG,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Error => tracing::Level::ERROR,
    };
    let to_stderr = logging.output.path == "stderr";
    let ansi = if to_stderr {
        std::io::IsTerminal::is_terminal(&std::io::stderr())
    } else {
        std::io::IsTerminal::is_terminal(&std::io::stdout())
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(ansi)
        .with_target(false)
        .with_thread_names(true);
    let result = match (logging.format, to_stderr) {
        (LogFormat::Json, false) => builder.json().with_writer(std::io::stdout).try_init(),
        (LogFormat::Json, true) => builder.json().with_writer(std::io::stderr).try_init(),
        (LogFormat::Text, false) => builder.with_writer(std::io::stdout).try_init(),
        (LogFormat::Text, true) => builder.with_writer(std::io::stderr).try_init(),
    };
    if let Err(e) = result {
        eprintln!("arc-gateway: logging not initialised: {e}");
    }
}

/// Runs the admin server and the data plane until SIGTERM/SIGINT; SIGHUP reloads the file.
async fn serve(path: &Path, cfg: config::Config, kubeconfig: Option<&Path>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use tokio::signal::unix::{SignalKind, signal};

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(HealthState::new());
    let admin_addr: std::net::SocketAddr =
        config::validate::parse_socket_addr(&cfg.observability.metrics_bind)
            .map_err(|m| anyhow::anyhow!("observability.metrics_bind: {m}"))?;
    let admin = AdminServer::bind(admin_addr, Arc::clone(&metrics), Arc::clone(&health)).await?;
    tracing::info!(address = %admin.local_addr(), "admin server listening");
    let (stop_admin, admin_stopped) = tokio::sync::watch::channel(false);
    let admin_task = tokio::spawn(admin.serve(arc_gateway::admin::shutdown_signal(admin_stopped)));

    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let kube_mode = cfg.kubernetes.enabled;
    let bootstrap = cfg.clone();
    let mut server = Server::start(cfg, &base, Arc::clone(&metrics), Arc::clone(&health))?;
    let mut kube = None;
    if kube_mode {
        // Ready only once the controller installed its first complete table.
        health.set_first_sync_done(false);
        let client = controller::client(kubeconfig).await?;
        let settings = controller::Settings {
            namespace: controller::own_namespace(),
            identity: controller::own_identity(),
            bootstrap,
        };
        tracing::info!(namespace = %settings.namespace, identity = %settings.identity, "Kubernetes controller starting");
        kube = Some(controller::start(
            client,
            settings,
            KubeMetrics::register(&metrics),
        ));
    }
    tracing::info!(config = %path.display(), driver = server.driver().name(), "arc-gateway is serving");

    loop {
        tokio::select! {
            _ = hangup.recv() => {
                match config::load(path) {
                    Ok(new) => match server.reload(match &kube {
                        Some(k) => k.effective_config(new),
                        None => new,
                    }) {
                        Ok(_) => tracing::info!(config = %path.display(), "configuration reloaded"),
                        Err(e) => tracing::error!(error = %e, "configuration rejected; the old one keeps serving"),
                    },
                    Err(e) => {
                        metrics.control().config_reloaded(ReloadResult::Failure);
                        for p in &e.problems {
                            tracing::error!(key = %p.key, line = p.line, problem = %p.message, "configuration rejected; the old one keeps serving");
                        }
                    }
                }
            }
            update = next_update(&mut kube) => match update {
                controller::Update::Cluster(state) => match server.publish(state) {
                    Ok(v) => tracing::debug!(version = v, "routing table from the cluster installed"),
                    Err(e) => tracing::error!(error = %e, "cluster state not installed; the old one keeps serving"),
                },
                controller::Update::Config(cfg) => match server.reload((*cfg).clone()) {
                    Ok(_) => tracing::info!("configuration from the ConfigMap applied"),
                    Err(e) => tracing::error!(error = %e, "configuration rejected; the old one keeps serving"),
                },
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("draining");
    if let Some(k) = kube {
        k.shutdown().await;
    }
    health.start_draining();
    tokio::task::spawn_blocking(move || server.shutdown())
        .await
        .context("joining the workers")??;
    let _ = stop_admin.send(true);
    let _ = admin_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// The controller's next update, or never when not in Kubernetes mode.
async fn next_update(kube: &mut Option<controller::ControllerHandle>) -> controller::Update {
    match kube {
        Some(k) => k.next().await,
        None => std::future::pending().await,
    }
}
