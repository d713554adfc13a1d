//! `arc-tlsload`: TLS 1.3 full handshakes per second against one address, for the benchmark's
//! handshake case. Prints one JSON line (see [`arc_bench_tools::tlsload::Report`]); exits 2 on
//! bad arguments, 1 when no connection completed in the measured window.

#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use arc_bench_tools::tlsload::{self, KeyExchange, LoadSpec};
use clap::Parser;

/// TLS 1.3 full-handshake load generator: N threads, each opening one connection after another
/// (fresh session, resumption off), sending `GET PATH HTTP/1.0` and reading the response to its
/// end. Counts connections answered with a complete 200 after the warm-up.
#[derive(Debug, Parser)]
#[command(name = "arc-tlsload", version)]
struct Args {
    /// Server address, IP:PORT.
    #[arg(long, value_name = "IP:PORT")]
    connect: SocketAddr,
    /// Server name sent as SNI and as the Host header.
    #[arg(long, default_value = "localhost")]
    sni: String,
    /// Request target.
    #[arg(long, default_value = "/")]
    path: String,
    /// Worker threads (connections in flight).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    duration: Duration,
    /// Seconds at the start whose completions are not counted.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "0")]
    warmup: Duration,
    /// Upper bound of every socket operation, in seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "5")]
    timeout: Duration,
    /// The one key-exchange group offered.
    #[arg(long, value_enum, default_value_t = KeyExchange::X25519)]
    kx: KeyExchange,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(v).map_err(|e| format!("{s:?}: {e}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let spec = LoadSpec {
        addr: args.connect,
        sni: args.sni,
        path: args.path,
        concurrency: args.concurrency,
        duration: args.duration,
        warmup: args.warmup,
        io_timeout: args.timeout,
        key_exchange: args.kx,
    };
    let report = match tlsload::run(&spec) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("arc-tlsload: {e}");
            return ExitCode::from(2);
        }
    };
    let line = match serde_json::to_string(&report) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("arc-tlsload: cannot encode the report: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = writeln!(std::io::stdout().lock(), "{line}") {
        eprintln!("arc-tlsload: cannot write the report: {e}");
        return ExitCode::FAILURE;
    }
    if report.handshakes == 0 {
        eprintln!(
            "arc-tlsload: no connection completed ({} failed): {}",
            report.failed,
            report.errors.first().map_or("no attempt finished", |e| e)
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
