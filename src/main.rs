//! The `arc-gateway` binary: command line parsing and process start-up.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use arc_gateway::config;
use arc_gateway::lifecycle;

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
    // Resolved now: after a package replaced the file, /proc/self/exe names a deleted inode.
    let exe = std::env::current_exe().ok();
    let cfg = match config::load(path) {
        Ok(cfg) => cfg,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    let log_level = init_logging(&cfg.logging);
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
    let opts = lifecycle::Options {
        exe,
        args: std::env::args_os().skip(1).collect(),
        log_level,
        kubeconfig: kubeconfig.map(Path::to_path_buf),
    };
    match runtime.block_on(serve(path, cfg, opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "arc-gateway stopped");
            eprintln!("arc-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn level_filter(level: config::LogLevel) -> tracing_subscriber::filter::LevelFilter {
    use config::LogLevel;
    use tracing_subscriber::filter::LevelFilter;
    match level {
        LogLevel::Trace => LevelFilter::TRACE,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
    }
}

/// Installs the global subscriber; the returned hook changes its level on reload.
fn init_logging(logging: &config::Logging) -> Option<lifecycle::LogLevelHook> {
    use config::LogFormat;
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    fn install<S>(subscriber: S, level: LevelFilter) -> Option<lifecycle::LogLevelHook>
    where
        S: tracing::Subscriber + Send + Sync + 'static,
    {
        let (filter, handle) = tracing_subscriber::reload::Layer::new(level);
        match subscriber.with(filter).try_init() {
            Ok(()) => Some(Box::new(move |level| {
                let _ = handle.reload(level_filter(level));
            })),
            Err(e) => {
                eprintln!("arc-gateway: logging not initialised: {e}");
                None
            }
        }
    }

    let level = level_filter(logging.level);
    let to_stderr = logging.output.path == "stderr";
    let ansi = if to_stderr {
        std::io::IsTerminal::is_terminal(&std::io::stderr())
    } else {
        std::io::IsTerminal::is_terminal(&std::io::stdout())
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_ansi(ansi)
        .with_target(false)
        .with_thread_names(true);
    match (logging.format, to_stderr) {
        (LogFormat::Json, false) => {
            install(builder.json().with_writer(std::io::stdout).finish(), level)
        }
        (LogFormat::Json, true) => {
            install(builder.json().with_writer(std::io::stderr).finish(), level)
        }
        (LogFormat::Text, false) => install(builder.with_writer(std::io::stdout).finish(), level),
        (LogFormat::Text, true) => install(builder.with_writer(std::io::stderr).finish(), level),
    }
}

/// Runs the process (admin server, data plane, signals) until it has drained; see
/// [`lifecycle`] for SIGHUP (reload), SIGTERM/SIGINT (drain) and SIGUSR2 (upgrade).
async fn serve(path: &Path, cfg: config::Config, opts: lifecycle::Options) -> anyhow::Result<()> {
    let process = lifecycle::Process::start(path, cfg, opts).await?;
    process.run().await?;
    Ok(())
}
