//! Access-log records, drop counting, sampling and line fields.

use super::*;
use crate::logging::RotatingFile;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("arc-access-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn record(now: Instant, path: &str, route: Option<RouteMetricId>) -> AccessRecord {
    let mut log = RequestLog::new("192.0.2.7:40000".parse().expect("addr"), now);
    log.begin(now, "GET", "app.example.com", path, 0);
    log.read(80);
    *log.finish(now + Duration::from_millis(3), 200, route, 10)
        .expect("begun")
}

/// Starts a writer on a file, feeds `records` through one worker, stops and returns the lines.
fn written_lines(
    name: &str,
    policy: AccessPolicy,
    metrics: Arc<Metrics>,
    records: &[AccessRecord],
) -> Vec<serde_json::Value> {
    let dir = temp_dir(name);
    let path = dir.join("access.log");
    let target = Arc::new(LogTarget::file(
        RotatingFile::open(&path, 1 << 20, 1).expect("open"),
    ));
    let log = AccessLog::start(target, policy, records.len().max(1), metrics).expect("start");
    let worker = log.worker();
    for r in records {
        worker.push(r);
    }
    assert_eq!(worker.dropped(), 0);
    log.stop();
    let text = std::fs::read_to_string(&path).expect("read");
    let _ = std::fs::remove_dir_all(&dir);
    text.lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

#[test]
fn full_ring_drops_and_counts_without_blocking() {
    let log = AccessLog::unstarted(AccessPolicy::default(), 4);
    let worker = log.worker();
    let now = Instant::now();
    let rec = record(now, "/", None);
    let started = Instant::now();
    for _ in 0..10 {
        worker.push(&rec);
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "push never blocks"
    );
    assert_eq!(worker.dropped(), 6);
    assert_eq!(log.dropped(), 6);
    let other = log.worker();
    other.push(&rec);
    assert_eq!(other.dropped(), 0, "each worker has its own ring");
    assert_eq!(log.dropped(), 6);
}

#[test]
fn dropped_lines_reach_the_metric() {
    let metrics = Arc::new(Metrics::new());
    let log = AccessLog::unstarted(AccessPolicy::default(), 1);
    metrics.register(
        "arc_access_log_dropped",
        "test",
        log.shared.dropped_metric.clone(),
    );
    let worker = log.worker();
    let rec = record(Instant::now(), "/", None);
    for _ in 0..3 {
        worker.push(&rec);
    }
    let target = Arc::new(LogTarget::stderr());
    let log = AccessLog::spawn(log, target, Arc::clone(&metrics)).expect("spawn");
    log.stop();
    let text = metrics.encode().expect("encode");
    assert!(text.contains("arc_access_log_dropped_total 2"), "{text}");
}

#[test]
fn sampling_writes_the_configured_fraction() {
    let now = Instant::now();
    let records: Vec<_> = (0..100)
        .map(|i| record(now, &format!("/{i}"), None))
        .collect();
    let policy = AccessPolicy {
        sample: 0.25,
        ..AccessPolicy::default()
    };
    let lines = written_lines("sample", policy, Arc::new(Metrics::new()), &records);
    assert_eq!(lines.len(), 25);
}

#[test]
fn disabled_routes_and_disabled_log_write_nothing_but_keep_latency() {
    let metrics = Arc::new(Metrics::new());
    let quiet = metrics.routes().intern("routes[0]");
    let loud = metrics.routes().intern("routes[1]");
    let now = Instant::now();
    let records = [
        record(now, "/healthz", Some(quiet)),
        record(now, "/api", Some(loud)),
    ];
    let policy = AccessPolicy {
        disabled_routes: [quiet].into_iter().collect(),
        ..AccessPolicy::default()
    };
    let lines = written_lines("routes", policy, Arc::clone(&metrics), &records);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["route"], "routes[1]");
    assert_eq!(lines[0]["path"], "/api");

    let off = AccessPolicy {
        enabled: false,
        ..AccessPolicy::default()
    };
    assert!(written_lines("off", off, metrics, &records).is_empty());
}

#[test]
fn latency_totals_per_route() {
    let metrics = Arc::new(Metrics::new());
    let route = metrics.routes().intern("routes[0]");
    let target = Arc::new(LogTarget::file(
        RotatingFile::open(&temp_dir("lat").join("a.log"), 1 << 20, 1).expect("open"),
    ));
    let log = AccessLog::start(target, AccessPolicy::default(), 8, metrics).expect("start");
    let worker = log.worker();
    let now = Instant::now();
    worker.push(&record(now, "/", Some(route)));
    worker.push(&record(now, "/", Some(route)));
    let deadline = Instant::now() + Duration::from_secs(5);
    while log.written() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let lat = log.route_latency();
    let l = &lat[route.index()];
    assert_eq!(l.count, 2);
    assert!((l.sum_seconds - 0.006).abs() < 1e-9, "{l:?}");
    assert!((l.max_seconds - 0.003).abs() < 1e-9, "{l:?}");
}

#[test]
fn line_carries_every_field() {
    let metrics = Arc::new(Metrics::new());
    let route = metrics.routes().intern("routes[2]");
    let now = Instant::now();
    let mut log = RequestLog::new("[2001:db8::1]:5000".parse().expect("addr"), now);
    log.begin(now, "POST", "api.example.com", "/v1/items?x=1", 0);
    log.read(120);
    log.proxied(
        "10.0.0.5:8080".parse().expect("addr"),
        b"0123456789abcdef0123456789abcdef",
        b"00-00000000000000000000000000000abc-00f067aa0ba902b7-01",
    );
    log.attempt(now + Duration::from_millis(1), 0);
    log.attempt(now + Duration::from_millis(2), 1);
    log.wrote(50);
    let rec = *log
        .finish(now + Duration::from_millis(11), 201, Some(route), 25)
        .expect("begun");
    let lines = written_lines("fields", AccessPolicy::default(), metrics, &[rec]);
    let l = &lines[0];
    assert_eq!(l["client"], "[2001:db8::1]:5000");
    assert_eq!(l["method"], "POST");
    assert_eq!(l["host"], "api.example.com");
    assert_eq!(l["path"], "/v1/items?x=1");
    assert_eq!(l["status"], 201);
    assert_eq!(l["bytes_in"], 120);
    assert_eq!(l["bytes_out"], 75);
    assert_eq!(l["duration_ms"], 11.0);
    assert_eq!(l["upstream"], "10.0.0.5:8080");
    assert_eq!(l["upstream_duration_ms"], 10.0, "from the first attempt");
    assert_eq!(l["route"], "routes[2]");
    assert_eq!(l["request_id"], "0123456789abcdef0123456789abcdef");
    assert_eq!(l["trace_id"], "00000000000000000000000000000abc");
    assert_eq!(l["retries"], 1);
    assert!(l["error"].is_null());
    let time = l["time"].as_str().expect("time");
    assert_eq!(time.len(), 24, "{time}");
    assert!(time.ends_with('Z'));
}

#[test]
fn error_record_names_the_reason() {
    let now = Instant::now();
    let mut log = RequestLog::new("127.0.0.1:1".parse().expect("addr"), now);
    log.begin(now, "GET", "h", "/x", 0);
    log.error(ErrorReason::NoRoute);
    let rec = *log.finish(now, 404, None, 0).expect("begun");
    let lines = written_lines(
        "error",
        AccessPolicy::default(),
        Arc::new(Metrics::new()),
        &[rec],
    );
    assert_eq!(lines[0]["error"], "no_route");
    assert!(lines[0]["route"].is_null());
    assert!(lines[0]["upstream"].is_null());
}

#[test]
fn next_request_on_a_connection_starts_clean() {
    let now = Instant::now();
    let mut log = RequestLog::new("127.0.0.1:1".parse().expect("addr"), now);
    log.begin(now, "GET", "h", "/a", 0);
    log.proxied("10.0.0.1:80".parse().expect("addr"), b"id", b"");
    log.error(ErrorReason::UpstreamReset);
    log.wrote(100);
    let _ = log.finish(now, 502, None, 0);
    log.begin(now, "GET", "h", "/b", 0);
    let rec = log.finish(now, 200, None, 7).expect("begun");
    assert_eq!(rec.path(), "/b");
    assert_eq!(rec.upstream, None);
    assert_eq!(rec.error, None);
    assert_eq!(rec.request_id(), "");
    assert_eq!(rec.bytes_out, 7);
}

#[test]
fn long_values_truncate_on_char_boundaries() {
    let now = Instant::now();
    let mut log = RequestLog::new("127.0.0.1:1".parse().expect("addr"), now);
    let path = format!("/{}", "é".repeat(400));
    log.begin(now, "GET", "host", &path, 0);
    let rec = log.finish(now, 200, None, 0).expect("begun");
    assert_eq!(rec.method(), "GET");
    assert_eq!(rec.host(), "host");
    assert!(path.starts_with(rec.path()));
    assert!(rec.path().len() <= TEXT_CAPACITY - 7);
    assert!(rec.path().len() > 400);
}

#[test]
fn rfc3339_dates() {
    let mut s = String::new();
    push_rfc3339(
        &mut s,
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
    );
    assert_eq!(s, "2026-11-18T11:06:40.123Z");
    s.clear();
    push_rfc3339(
        &mut s,
        SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400),
    );
    assert_eq!(s, "2000-02-29T00:00:00.000Z");
}

#[test]
fn an_unused_request_log_records_nothing() {
    let now = Instant::now();
    let mut log = RequestLog::new("127.0.0.1:1".parse().expect("addr"), now);
    log.read(10);
    log.wrote(10);
    log.error(ErrorReason::BadRequest);
    assert!(log.finish(now, 400, None, 0).is_none());
}
