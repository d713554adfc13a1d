//! Backends in a network namespace, reached from the host over the veth pair: the echo server
//! reports which backend answered and what it saw; backends are made to fail, stall and die.
//! Needs root: skips without it unless `ARC_REQUIRE_PRIVILEGED=1`.

use std::net::SocketAddr;
use std::time::Duration;

use arc_e2e::TestNet;
use arc_e2e::echo::Mode;
use arc_e2e::env::require_privileged;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request over a fresh connection; returns (status, body).
async fn http_get(
    addr: SocketAddr,
    path: &str,
    limit: Duration,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: backend.test\r\nX-Probe: 1\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let code: u16 = head.split_whitespace().nth(1).unwrap_or("0").parse()?;
        let body: serde_json::Value = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
        anyhow::Ok((code, body))
    };
    tokio::time::timeout(limit, fut).await?
}

fn netns_exists(name: &str) -> anyhow::Result<bool> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name)))
}

#[tokio::test]
async fn echo_backend_over_veth() -> anyhow::Result<()> {
    if !require_privileged("echo_backend_over_veth")? {
        return Ok(());
    }
    let net = TestNet::create()?;
    let ns_name = net.namespace().to_string();
    net.verify_route()?;
    let a = net.start_echo("backend-a", 0)?;
    let b = net.start_echo("backend-b", 0)?;
    assert_eq!(a.ip(), std::net::IpAddr::V4(net.backend_ip()));

    let (code, body) = http_get(a, "/hello?x=1", Duration::from_secs(5)).await?;
    assert_eq!(code, 200);
    assert_eq!(body["backend"], "backend-a");
    assert_eq!(body["path"], "/hello");
    assert_eq!(body["query"], "x=1");
    assert_eq!(body["headers"]["x-probe"], "1");
    // The backend saw the host's veth address: the request crossed the veth pair.
    let remote: SocketAddr = body["remote"].as_str().unwrap_or("").parse()?;
    assert_eq!(remote.ip(), std::net::IpAddr::V4(net.host_ip()));
    let (_, body) = http_get(b, "/", Duration::from_secs(5)).await?;
    assert_eq!(body["backend"], "backend-b");

    // The namespace is isolated: its loopback is not the host's.
    let host_only = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = host_only.local_addr()?.port();
    let probe = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns_name,
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/127.0.0.1/{port}"),
        ])
        .output()?;
    assert!(
        !probe.status.success(),
        "host loopback must not be reachable from the namespace"
    );

    net.set_mode("backend-a", Mode::Error(503));
    let (code, body) = http_get(a, "/", Duration::from_secs(5)).await?;
    assert_eq!((code, body["backend"].as_str()), (503, Some("backend-a")));

    net.set_mode("backend-a", Mode::Stall);
    let stalled = http_get(a, "/slow", Duration::from_millis(300)).await;
    assert!(stalled.is_err(), "a stalled backend does not answer");
    net.set_mode("backend-a", Mode::Normal);
    let (code, _) = http_get(a, "/", Duration::from_secs(5)).await?;
    assert_eq!(code, 200);
    assert_eq!(net.count("backend-a"), Some(4));

    assert!(net.kill("backend-a"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let dead = http_get(a, "/", Duration::from_secs(2)).await;
    assert!(dead.is_err(), "a killed backend refuses connections");
    let (code, _) = http_get(b, "/", Duration::from_secs(5)).await?;
    assert_eq!(code, 200, "the other backend keeps serving");

    drop(net);
    assert!(!netns_exists(&ns_name)?, "namespace removed on drop");
    Ok(())
}

#[tokio::test]
async fn echo_process_in_namespace() -> anyhow::Result<()> {
    if !require_privileged("echo_process_in_namespace")? {
        return Ok(());
    }
    let net = TestNet::create()?;
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_arc-e2e-echo"));
    let addr = net.spawn_echo_process(bin, "proc", 0)?;
    let (code, body) = http_get(addr, "/p", Duration::from_secs(5)).await?;
    assert_eq!((code, body["backend"].as_str()), (200, Some("proc")));
    let (code, _) = http_get(addr, "/__echo/error/502", Duration::from_secs(5)).await?;
    assert_eq!(code, 200);
    let (code, _) = http_get(addr, "/p", Duration::from_secs(5)).await?;
    assert_eq!(code, 502);
    assert!(net.kill("proc"));
    assert!(http_get(addr, "/p", Duration::from_secs(2)).await.is_err());
    Ok(())
}

#[test]
fn teardown_happens_when_a_test_panics() -> anyhow::Result<()> {
    if !require_privileged("teardown_happens_when_a_test_panics")? {
        return Ok(());
    }
    let name = std::sync::Mutex::new(String::new());
    let result = std::panic::catch_unwind(|| {
        let net = TestNet::create().unwrap_or_else(|e| panic!("create: {e}"));
        if let Ok(mut n) = name.lock() {
            *n = net.namespace().to_string();
        }
        panic!("simulated test failure");
    });
    assert!(result.is_err());
    let name = name.lock().map(|n| n.clone()).unwrap_or_default();
    assert!(!name.is_empty());
    assert!(!netns_exists(&name)?, "{name} still exists after the panic");
    Ok(())
}
