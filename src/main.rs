//! The `arc-gateway` binary: command line parsing and process start-up.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use arc_gateway::config;

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
    let _cfg = match config::load(path) {
        Ok(cfg) => cfg,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "arc-gateway: {}: configuration is valid, but serving traffic is not built yet; use --check",
        path.display()
    );
    ExitCode::FAILURE
}
