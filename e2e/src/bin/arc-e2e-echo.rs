//! `arc-e2e-echo`: the echo backend as a process, for running inside a network namespace with
//! `ip netns exec NS arc-e2e-echo --name NAME --listen ADDR`. Prints `listening ADDR` once bound.

#![forbid(unsafe_code)]

use std::net::SocketAddr;

fn usage() -> ! {
    eprintln!("usage: arc-e2e-echo --name NAME --listen ADDR:PORT");
    std::process::exit(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut name = String::from("echo");
    let mut listen: Option<SocketAddr> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--name" => name = args.next().unwrap_or_else(|| usage()),
            "--listen" => listen = args.next().and_then(|v| v.parse().ok()).or_else(|| usage()),
            _ => usage(),
        }
    }
    let Some(addr) = listen else { usage() };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("arc-e2e-echo: binding {addr}: {e}");
            std::process::exit(1)
        }
    };
    match listener.local_addr() {
        Ok(a) => println!("listening {a}"),
        Err(e) => {
            eprintln!("arc-e2e-echo: {e}");
            std::process::exit(1)
        }
    }
    arc_e2e::echo::serve(listener, arc_e2e::echo::EchoState::new(&name)).await;
}
