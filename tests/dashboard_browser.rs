//! The dashboard end to end in headless Chromium (driven by `tests/browser/dashboard.mjs` with
//! playwright-core): it loads from a running Arc, takes the token, shows the routes, shows the
//! request rate rising while load runs, and saves `target/dashboard.png`.
//!
//! Needs `chromium` (or `ARC_CHROMIUM=/path`), `node` and `npm install` in `tests/browser`
//! (`scripts/install-deps.sh` does both). Without them the test prints why and passes, unless
//! `ARC_REQUIRE_BROWSER=1` (CI), where it fails.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_gateway::admin::{AdminServer, ControlToken, ControlView, HealthState, shutdown_signal};
use arc_gateway::config;
use arc_gateway::logging::{self, AccessLog, LogTarget};
use arc_gateway::metrics::Metrics;
use arc_gateway::runtime::Server;

use common::{backend, connect, read_response};

const TOKEN: &str = "dashboard-test-token";
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// What the browser test needs, or why it cannot run.
fn prerequisites() -> Result<(PathBuf, PathBuf), String> {
    let chromium = match std::env::var_os("ARC_CHROMIUM") {
        Some(p) => Some(PathBuf::from(p)),
        None => ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .find_map(|n| on_path(n)),
    }
    .ok_or("no chromium on PATH (apt install chromium, or set ARC_CHROMIUM)")?;
    let node = on_path("node").ok_or("no node on PATH (apt install nodejs)")?;
    let module = manifest_dir().join("tests/browser/node_modules/playwright-core");
    if !module.is_dir() {
        return Err(format!(
            "{} missing (run `npm install --prefix tests/browser`)",
            module.display()
        ));
    }
    Ok((chromium, node))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("target"))
}

fn load(addr: std::net::SocketAddr, stop: &AtomicBool, sent: &AtomicU64) {
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let mut c = connect(addr);
    let mut buf = Vec::new();
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        if c.write_all(b"GET /load HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
            .is_err()
            || read_response(&mut c, &mut buf).is_none()
        {
            c = connect(addr);
            buf.clear();
            continue;
        }
        sent.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn dashboard_shows_routes_and_live_request_rate() {
    let (chromium, node) = match prerequisites() {
        Ok(p) => p,
        Err(why) => {
            if std::env::var("ARC_REQUIRE_BROWSER").as_deref() == Ok("1") {
                panic!("ARC_REQUIRE_BROWSER=1 but the browser test cannot run: {why}");
            }
            eprintln!("skipping the dashboard browser test: {why}");
            return;
        }
    };
    let b = backend("b1");
    let dir = common::temp_dir("dashboard");
    let path = dir.join("arc.yaml");
    std::fs::write(
        &path,
        format!(
            "node: {{workers: 1}}\nio_uring: {{enabled: false}}\n\
             listeners: [{{name: http, bind: \"127.0.0.1:0\", protocol: http}}]\n\
             upstreams: [{{name: app, addrs: [\"{}\"]}}]\n\
             routes:\n  - {{host: app.example.com, path: /, upstream: app}}\n  - {{path: /, direct_response: {{status: 200, body: ok}}}}\n\
             control_plane: {{auth_token: {TOKEN}}}\n\
             logging: {{output: {{path: \"{}\"}}}}\n",
            b.addr,
            dir.join("logs").display()
        ),
    )
    .expect("config");
    let cfg = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(HealthState::new());
    let access = Arc::new(
        AccessLog::start(
            Arc::new(
                LogTarget::from_config(&cfg.logging.output, logging::ACCESS_LOG_FILE)
                    .expect("log dir"),
            ),
            logging::access_policy(&cfg, metrics.routes()),
            1024,
            Arc::clone(&metrics),
        )
        .expect("access log"),
    );
    let control = Arc::new(ControlView::new(
        ControlToken::new(Some(TOKEN.into())),
        None,
    ));
    control.attach_access_log(Arc::clone(&access));
    let mut server = Server::start_with_access_log(
        cfg,
        &dir,
        Arc::clone(&metrics),
        Arc::clone(&health),
        Some(Arc::clone(&access)),
    )
    .unwrap_or_else(|e| panic!("start: {e}"));
    server.attach_control(Arc::clone(&control));
    let http = server.local_addrs()[0];

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let admin = rt
        .block_on(AdminServer::bind(
            "127.0.0.1:0".parse().expect("addr"),
            Arc::clone(&metrics),
            health,
        ))
        .expect("bind admin")
        .with_control(control);
    let admin_addr = admin.local_addr();
    let (stop_admin, stop_rx) = tokio::sync::watch::channel(false);
    let admin_thread =
        std::thread::spawn(move || rt.block_on(admin.serve(shutdown_signal(stop_rx))));

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let (l_stop, l_sent) = (Arc::clone(&stop), Arc::clone(&sent));
    let loader = std::thread::spawn(move || load(http, &l_stop, &l_sent));

    let screenshot = target_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let script = manifest_dir().join("tests/browser/dashboard.mjs");
    let result = run_browser(&node, &script, admin_addr, &screenshot, &chromium);

    stop.store(true, Ordering::SeqCst);
    let _ = loader.join();
    let _ = stop_admin.send(true);
    let _ = admin_thread.join();
    let _ = server.shutdown();
    access.stop();
    let _ = std::fs::remove_dir_all(&dir);

    let (status, stdout, stderr) = result;
    assert!(
        status,
        "browser run failed:\nstdout: {stdout}\nstderr: {stderr}"
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("result line");
    assert_eq!(seen["ok"], true, "{seen}");
    let routes: Vec<&str> = seen["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert!(
        routes.contains(&"routes[0]") && routes.contains(&"routes[1]"),
        "{seen}"
    );
    assert!(
        seen["backends"].to_string().contains("upstream: app"),
        "{seen}"
    );
    assert!(sent.load(Ordering::SeqCst) > 0);
    let png = std::fs::read(&screenshot).expect("screenshot saved");
    assert!(png.starts_with(b"\x89PNG"), "screenshot is a PNG");
    eprintln!("dashboard screenshot: {}", screenshot.display());
}

/// Runs the browser script with a deadline; (success, stdout, stderr).
fn run_browser(
    node: &Path,
    script: &Path,
    admin: std::net::SocketAddr,
    screenshot: &Path,
    chromium: &Path,
) -> (bool, String, String) {
    let mut child = Command::new(node)
        .arg(script)
        .arg(format!("http://{admin}/ui"))
        .arg(TOKEN)
        .arg("routes[0]")
        .arg(screenshot)
        .arg(chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let output = child.wait_with_output().ok();
    let (out, err) = output
        .map(|o| {
            (
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap_or_default();
    (status.is_some_and(|s| s.success()), out, err)
}
