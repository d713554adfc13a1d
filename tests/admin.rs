//! Admin server and metrics, end to end over loopback: endpoints, readiness transitions,
//! aggregation of several workers in the scrape, graceful shutdown, bind errors, and that the
//! hot-path increments never allocate.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_gateway::admin::{AdminError, AdminServer, HealthState, METRICS_BIND_KEY, shutdown_signal};
use arc_gateway::metrics::{
    ErrorReason, IoDriver, Metrics, PoolResult, RefuseReason, ReloadResult, StatusClass,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use common::alloc::allocations_during;
use common::sample;

#[global_allocator]
static ALLOC: common::alloc::CountingAlloc = common::alloc::CountingAlloc;

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client over a raw socket.

const IO_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("response has a head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let mut stream = tokio::time::timeout(IO_LIMIT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let req = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(IO_LIMIT, stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    parse_reply(&raw)
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path).await
}

struct Running {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    metrics: Arc<Metrics>,
    health: Arc<HealthState>,
}

async fn start() -> Running {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(HealthState::new());
    let server = AdminServer::bind(
        "127.0.0.1:0".parse().expect("addr"),
        Arc::clone(&metrics),
        Arc::clone(&health),
    )
    .await
    .expect("bind loopback port 0");
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(server.serve(shutdown_signal(rx)));
    Running {
        addr,
        stop,
        task,
        metrics,
        health,
    }
}

/// The value of the sample line starting with `series` followed by a space.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn healthz_and_unknown_paths() {
    let s = start().await;
    let r = get(s.addr, "/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "ok\n");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));

    let r = get(s.addr, "/nothing-here").await;
    assert_eq!(r.status, 404);

    let r = request(s.addr, "POST", "/metrics").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = request(s.addr, "PUT", "/readyz").await;
    assert_eq!(r.status, 405);

    let r = request(s.addr, "HEAD", "/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "", "HEAD carries no body");
    assert_eq!(r.header("content-length"), Some("3"));

    s.stop.send_replace(true);
    tokio::time::timeout(IO_LIMIT, s.task)
        .await
        .expect("stops in time")
        .expect("task");
}

#[tokio::test]
async fn readiness_transitions() {
    let s = start().await;
    let r = get(s.addr, "/readyz").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body,
        "not ready: config not loaded, workers not up, first sync not done\n"
    );

    s.health.set_config_loaded(true);
    let r = get(s.addr, "/readyz").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "not ready: workers not up, first sync not done\n");

    s.health.set_workers_up(true);
    s.health.set_first_sync_done(true);
    let r = get(s.addr, "/readyz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "ready\n");

    s.health.start_draining();
    let r = get(s.addr, "/readyz").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "not ready: draining\n");
    // Liveness is unaffected by drain.
    assert_eq!(get(s.addr, "/healthz").await.status, 200);
    s.stop.send_replace(true);
}

#[tokio::test]
async fn scrape_sums_workers_on_different_threads() {
    let s = start().await;
    let app = s.metrics.routes().intern("default/app/0");
    let web = s.metrics.routes().intern("default/web/0");

    let handles: Vec<_> = (0..2u64)
        .map(|n| {
            let mut w = s.metrics.register_worker();
            std::thread::spawn(move || {
                w.reserve_routes(2);
                for _ in 0..1000 {
                    w.request(Some(app), 200);
                }
                for _ in 0..(n + 1) {
                    w.request(Some(web), 503);
                    w.error(ErrorReason::NoEndpoints);
                }
                w.request(None, 404);
                w.error(ErrorReason::NoRoute);
                w.connection_opened();
                w.connection_opened();
                w.connection_closed();
                w.connection_refused(RefuseReason::MaxConnections);
                w.upstream_pool(PoolResult::Hit);
                w.upstream_pool(PoolResult::Miss);
                w.upstream_pool(PoolResult::Hit);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("worker thread");
    }
    s.metrics.control().config_reloaded(ReloadResult::Failure);
    s.metrics.control().io_driver_selected(IoDriver::IoUring);
    s.metrics
        .control()
        .routing_table_swapped(42, Duration::from_millis(12));

    let r = get(s.addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let t = &r.body;
    let expect = [
        (
            "arc_requests_total{route=\"default/app/0\",status_class=\"2xx\"}",
            "2000",
        ),
        (
            "arc_requests_total{route=\"default/web/0\",status_class=\"5xx\"}",
            "3",
        ),
        ("arc_requests_total{route=\"-\",status_class=\"4xx\"}", "2"),
        ("arc_errors_total{reason=\"no_endpoints\"}", "3"),
        ("arc_errors_total{reason=\"no_route\"}", "2"),
        ("arc_errors_total{reason=\"bad_request\"}", "0"),
        ("arc_connections_accepted_total", "4"),
        ("arc_connections_active", "2"),
        (
            "arc_connections_refused_total{reason=\"max_connections\"}",
            "2",
        ),
        ("arc_connections_refused_total{reason=\"draining\"}", "0"),
        ("arc_upstream_pool_total{result=\"hit\"}", "4"),
        ("arc_upstream_pool_total{result=\"miss\"}", "2"),
        ("arc_workers", "2"),
        ("arc_config_reload_total{result=\"failure\"}", "1"),
        ("arc_config_reload_total{result=\"success\"}", "0"),
        ("arc_io_driver{driver=\"io_uring\"}", "1"),
        ("arc_io_driver{driver=\"epoll\"}", "0"),
        ("arc_routing_table_version", "42"),
        ("arc_routing_table_compile_seconds", "0.012"),
    ];
    for (series, value) in expect {
        assert_eq!(sample(t, series), Some(value), "{series} in\n{t}");
    }
    // Zero series of the per-route family are not exported.
    assert!(!t.contains("route=\"default/app/0\",status_class=\"5xx\""));
    // Counter families are typed under their registered names; samples carry `_total`.
    for family in [
        "arc_requests",
        "arc_errors",
        "arc_connections_accepted",
        "arc_connections_refused",
        "arc_upstream_pool",
        "arc_config_reload",
    ] {
        assert!(
            t.contains(&format!("# TYPE {family} counter\n")),
            "{family}"
        );
    }
    assert!(t.contains("# TYPE arc_request_duration_seconds histogram\n"));
    assert!(t.contains("# TYPE arc_io_driver gauge\n"));
    assert!(t.ends_with("# EOF\n"));
    assert!(
        t.lines()
            .filter(|l| l.starts_with("# HELP"))
            .all(|l| !l.ends_with("..")),
        "help texts end with a single period"
    );
    s.stop.send_replace(true);
}

#[tokio::test]
async fn histograms_in_the_scrape() {
    let s = start().await;
    let w1 = s.metrics.register_worker();
    let w2 = s.metrics.register_worker();
    w1.observe_request_duration(Duration::from_micros(300));
    w1.observe_request_duration(Duration::from_millis(2));
    w2.observe_request_duration(Duration::from_millis(2));
    w2.observe_request_duration(Duration::from_secs(70));
    w2.observe_upstream_duration(Duration::from_millis(1));

    let t = get(s.addr, "/metrics").await.body;
    let h = "arc_request_duration_seconds";
    let expect = [
        (format!("{h}_bucket{{le=\"0.0005\"}}"), "1"),
        (format!("{h}_bucket{{le=\"0.001\"}}"), "1"),
        (format!("{h}_bucket{{le=\"0.0025\"}}"), "3"),
        (format!("{h}_bucket{{le=\"60.0\"}}"), "3"),
        (format!("{h}_bucket{{le=\"+Inf\"}}"), "4"),
        (format!("{h}_count"), "4"),
        (format!("{h}_sum"), "70.0043"),
        (
            "arc_upstream_duration_seconds_bucket{le=\"0.001\"}".to_owned(),
            "1",
        ),
        ("arc_upstream_duration_seconds_count".to_owned(), "1"),
        ("arc_upstream_duration_seconds_sum".to_owned(), "0.001"),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&t, &series), Some(value), "{series} in\n{t}");
    }
    assert!(t.contains("# UNIT arc_request_duration_seconds seconds\n"));
    s.stop.send_replace(true);
}

#[tokio::test]
async fn graceful_shutdown_closes_idle_keepalive_and_listener() {
    let s = start().await;
    // An idle keep-alive connection that already completed one request.
    let mut idle = TcpStream::connect(s.addr).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(IO_LIMIT, idle.read(&mut buf))
        .await
        .expect("reply in time")
        .expect("read");
    assert_eq!(parse_reply(&buf[..n]).status, 200);

    s.stop.send_replace(true);
    tokio::time::timeout(IO_LIMIT, s.task)
        .await
        .expect("server stops well before the grace period")
        .expect("task");

    // The idle connection was closed by the server.
    let n = tokio::time::timeout(IO_LIMIT, idle.read(&mut buf))
        .await
        .expect("eof in time")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // The listener is gone.
    assert!(TcpStream::connect(s.addr).await.is_err());
}

#[tokio::test]
async fn dropping_the_sender_also_stops_the_server() {
    let s = start().await;
    assert_eq!(get(s.addr, "/healthz").await.status, 200);
    drop(s.stop);
    tokio::time::timeout(IO_LIMIT, s.task)
        .await
        .expect("stops in time")
        .expect("task");
}

#[tokio::test]
async fn bind_error_names_the_address_and_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let err = AdminServer::bind(addr, Arc::new(Metrics::new()), Arc::new(HealthState::new()))
        .await
        .expect_err("address in use");
    assert!(matches!(err, AdminError::Bind { addr: a, .. } if a == addr));
    let msg = err.to_string();
    assert!(msg.contains(&addr.to_string()), "{msg}");
    assert!(msg.contains(METRICS_BIND_KEY), "{msg}");
    assert_eq!(METRICS_BIND_KEY, "observability.metrics_bind");
}

#[test]
fn hot_path_does_not_allocate() {
    let metrics = Metrics::new();
    let routes: Vec<_> = (0..100)
        .map(|i| metrics.routes().intern(&format!("ns/ingress-{i}/0")))
        .collect();
    let mut w = metrics.register_worker();
    w.reserve_routes(metrics.routes().len());

    let n = allocations_during(|| {
        for i in 0..10_000u32 {
            let route = routes.get(i as usize % routes.len()).copied();
            w.connection_opened();
            w.upstream_pool(PoolResult::Hit);
            w.request_done(
                route,
                200 + (i % 4) as u16 * 100,
                Duration::from_micros(i.into()),
            );
            w.request(None, 404);
            w.observe_upstream_duration(Duration::from_micros(250));
            w.error(ErrorReason::UpstreamTimeout);
            w.connection_refused(RefuseReason::MaxConnections);
            w.connection_closed();
        }
    });
    assert_eq!(n, 0, "hot-path increments allocated");

    // The counter does see allocations: a route id beyond the reserved block grows it.
    for i in metrics.routes().len()..w.route_capacity() {
        metrics.routes().intern(&format!("ns/filler-{i}/0"));
    }
    let beyond = metrics.routes().intern("ns/new/0");
    assert_eq!(beyond.index(), w.route_capacity());
    let n = allocations_during(|| w.request(Some(beyond), 200));
    assert!(n > 0, "growth must be visible to the counting allocator");

    let snap = metrics.data_plane_snapshot();
    assert_eq!(snap.route_requests("ns/new/0", StatusClass::Success), 1);
    assert_eq!(snap.error_count(ErrorReason::UpstreamTimeout), 10_000);
    assert_eq!(snap.request_duration.count(), 10_000);
    assert_eq!(snap.connections_active, 0);
}
