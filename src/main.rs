//! The `arc-gateway` binary: command line parsing and process start-up.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use arc_gateway::config;
use arc_gateway::lifecycle;
use arc_gateway::logging;

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
    let opts = lifecycle::Options {
        exe,
        args: std::env::args_os().skip(1).collect(),
        logs: Some(logs),
        kubeconfig: kubeconfig.map(Path::to_path_buf),
    };
    match runtime.block_on(serve(path, cfg, opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "arc-gateway stopped");
            eprintln!("arc-gateway: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: a cause whose text an outer message
/// already quotes (most errors here name their source in their own message) is not repeated.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Runs the process (admin server, data plane, signals) until it has drained; see
/// [`lifecycle`] for SIGHUP (reload), SIGTERM/SIGINT (drain), SIGUSR1 (reopen the log files)
/// and SIGUSR2 (upgrade).
async fn serve(path: &Path, cfg: config::Config, opts: lifecycle::Options) -> anyhow::Result<()> {
    let process = lifecycle::Process::start(path, cfg, opts).await?;
    process.run().await?;
    Ok(())
}
