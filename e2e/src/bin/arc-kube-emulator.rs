//! `arc-kube-emulator`: runs the Kubernetes API server emulator as a process until interrupted.
//! Writes the kubeconfig to `--kubeconfig PATH` (default `./kubeconfig`) and prints
//! `ready URL KUBECONFIG` once serving. Fault controls are reachable over HTTP under
//! `/_emulator/` with the same bearer token (see e2e/README.md).

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use arc_e2e::emulator::{Emulator, EmulatorConfig};

fn usage() -> ! {
    eprintln!(
        "usage: arc-kube-emulator [--kubeconfig PATH] [--listen 127.0.0.1:PORT] [--token TOKEN] [--retain EVENTS] [--bookmark-ms MS]"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut config = EmulatorConfig::default();
    let mut kubeconfig = PathBuf::from("kubeconfig");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--kubeconfig" => kubeconfig = PathBuf::from(value()),
            "--listen" => {
                config.bind = value().parse::<SocketAddr>().unwrap_or_else(|_| usage());
            }
            "--token" => config.token = Some(value()),
            "--retain" => config.retained_events = value().parse().unwrap_or_else(|_| usage()),
            "--bookmark-ms" => {
                config.bookmark_interval =
                    Duration::from_millis(value().parse().unwrap_or_else(|_| usage()));
            }
            _ => usage(),
        }
    }
    if !config.bind.ip().is_loopback() {
        eprintln!("arc-kube-emulator: refusing to listen on a non-loopback address");
        std::process::exit(2);
    }
    let dir = kubeconfig
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    config.dir = Some(dir);
    let emu = match Emulator::start_with(config).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("arc-kube-emulator: {e}");
            std::process::exit(1)
        }
    };
    if emu.kubeconfig_path() != kubeconfig.as_path()
        && let Err(e) = std::fs::rename(emu.kubeconfig_path(), &kubeconfig)
    {
        eprintln!("arc-kube-emulator: writing {}: {e}", kubeconfig.display());
        std::process::exit(1);
    }
    println!("ready {} {}", emu.url(), kubeconfig.display());
    let _ = tokio::signal::ctrl_c().await;
}
