//! Arc as a standalone reverse proxy, end to end on loopback: the real `runtime::Server` with
//! real backends and clients, under each io driver.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arc_gateway::config;
use arc_gateway::metrics::ErrorReason;
use arc_gateway::proxy::core::IDLE_GRACE;

use common::ca::TestCa;
use common::{Driver, backend, connect, per_driver, read_response};

type Arc1 = common::server::Running;

fn start(
    driver: Driver,
    extra_yaml: &str,
    upstream: std::net::SocketAddr,
    dir_files: &[(&str, String)],
) -> Arc1 {
    let dir = common::temp_dir("standalone");
    for (name, content) in dir_files {
        std::fs::write(dir.join(name), content).expect("write fixture");
    }
    // The read timeout only bounds a stuck exchange (no test here waits for it); as long as the
    // clients' own timeout, so that a machine loaded by parallel test binaries cannot turn a
    // slow backend into a 504.
    let yaml = format!(
        "node: {{workers: 2}}\n\
         {driver}\
         listeners:\n  - {{name: http, bind: '127.0.0.1:0', protocol: http}}\n  - {{name: https, bind: '127.0.0.1:0', protocol: https}}\n\
         lifecycle: {{drain_timeout: 2s}}\n\
         upstreams:\n  - {{name: app, addr: '{upstream}', read_timeout: 10s}}\n  - {{name: down, addr: '127.0.0.1:1', connect_timeout: 1s}}\n\
         routes:\n  - {{host: app.example.com, path: /, upstream: app}}\n  - {{host: down.example.com, path: /, upstream: down}}\n  - {{path: /, path_type: Exact, direct_response: {{status: 200, body: \"Arc is running\\n\"}}}}\n\
         {extra_yaml}",
        driver = common::server::driver_yaml(driver),
    );
    let arc = common::server::start_in(dir, &yaml);
    assert!(arc.health.readiness().is_ready());
    arc
}

const GET: &str = "GET /x HTTP/1.1\r\nHost: app.example.com\r\n\r\n";

fn keep_alive_reuses_upstream_connections(driver: Driver) {
    let b = backend("b1");
    let arc = start(driver, "", b.addr, &[]);
    let mut c = connect(arc.http());
    let mut buf = Vec::new();
    for _ in 0..5 {
        c.write_all(GET.as_bytes()).unwrap();
        let (head, _) = read_response(&mut c, &mut buf).expect("response");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("X-Backend: b1\r\n"));
    }
    assert_eq!(b.requests.load(Ordering::SeqCst), 5);
    assert!(
        b.connections.load(Ordering::SeqCst) <= 2,
        "pooled: {}",
        b.connections.load(Ordering::SeqCst)
    );
}

/// Responses around the 64 KiB buffering bound follow each other on one keep-alive connection:
/// a response whose last bytes arrive while the client buffer is full still ends.
fn large_keep_alive_responses_in_sequence(driver: Driver) {
    let b = backend("b1");
    let arc = start(driver, "", b.addr, &[]);
    let mut c = connect(arc.http());
    let mut buf = Vec::new();
    for n in (60 * 1024..=68 * 1024).step_by(512) {
        c.write_all(format!("GET /len/{n} HTTP/1.1\r\nHost: app.example.com\r\n\r\n").as_bytes())
            .unwrap();
        let (head, body) =
            read_response(&mut c, &mut buf).unwrap_or_else(|| panic!("no response for /len/{n}"));
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert_eq!(body.len(), n);
    }
}

/// Reads one response whose body is content-length or chunked, decoding chunks as they come
/// (a pattern body may contain any byte sequence, so the end is found by the framing only).
fn read_framed(c: &mut impl Read, buf: &mut Vec<u8>) -> (String, Vec<u8>) {
    let mut fill = |buf: &mut Vec<u8>| {
        let mut b = [0u8; 65536];
        let n = c.read(&mut b).expect("read");
        assert!(n > 0, "connection closed mid-response");
        buf.extend_from_slice(&b[..n]);
    };
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        fill(buf);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    let lower = head.to_ascii_lowercase();
    if let Some(n) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        while buf.len() < n {
            fill(buf);
        }
        return (head, buf.drain(..n).collect());
    }
    assert!(lower.contains("transfer-encoding: chunked"), "{head}");
    loop {
        // The body is complete once the chunks decode up to the last one.
        let mut at = 0;
        let mut done = None;
        while let Some(line) = buf[at..].windows(2).position(|w| w == b"\r\n") {
            let size = std::str::from_utf8(&buf[at..at + line])
                .ok()
                .and_then(|t| usize::from_str_radix(t, 16).ok())
                .unwrap_or_else(|| {
                    let near = &buf[at..buf.len().min(at + 160)];
                    panic!(
                        "chunk size line at body offset {at} of {}: {:?}\nhead: {head}",
                        buf.len(),
                        String::from_utf8_lossy(near)
                    )
                });
            let end = at + line + 2 + size + 2;
            if buf.len() < end {
                break;
            }
            at = end;
            if size == 0 {
                done = Some(end);
                break;
            }
        }
        if let Some(end) = done {
            let raw: Vec<u8> = buf.drain(..end).collect();
            return (head, common::dechunk(&raw).expect("valid chunked body"));
        }
        fill(buf);
    }
}

/// Bodies spanning many receive buffers, content-length and chunked, arrive byte for byte on
/// one keep-alive connection (sizes around the buffer and buffering bounds).
fn large_bodies_arrive_intact(driver: Driver) {
    // Bulk traffic in this process would blur the RSS figures of the memory tests.
    let _one = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    let b = backend("b1");
    let arc = start(driver, "", b.addr, &[]);
    let mut c = connect(arc.http());
    let mut buf = Vec::new();
    let sizes = [
        1,
        16 * 1024 - 1,
        16 * 1024 + 1,
        64 * 1024 - 200,
        64 * 1024,
        64 * 1024 + 1,
        130 * 1024 + 7,
        1 << 20,
    ];
    for kind in ["pattern", "pchunked"] {
        for n in sizes {
            c.write_all(
                format!("GET /{kind}/{n} HTTP/1.1\r\nHost: app.example.com\r\n\r\n").as_bytes(),
            )
            .unwrap();
            let (head, body) = read_framed(&mut c, &mut buf);
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
            assert_eq!(body.len(), n, "/{kind}/{n}");
            assert!(body == common::pattern(n), "/{kind}/{n}: body differs");
        }
    }
    assert!(buf.is_empty(), "no stray bytes after the responses");
}

/// Many connections fetch large bodies at once: more responses are in flight than the worker
/// has upstream receive buffers, so receives run out of buffers and are re-armed; every body
/// still arrives intact and the connections stay usable.
fn concurrent_large_bodies_survive_buffer_exhaustion(driver: Driver) {
    // Bulk traffic in this process would blur the RSS figures of the memory tests.
    let _one = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    let b = backend("b1");
    let arc = start(driver, "", b.addr, &[]);
    let addr = arc.http();
    let clients: Vec<_> = (0..48)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = connect(addr);
                let mut buf = Vec::new();
                for r in 0..4 {
                    let n = 200 * 1024 + i * 1031 + r * 17;
                    let kind = if (i + r) % 2 == 0 {
                        "pattern"
                    } else {
                        "pchunked"
                    };
                    c.write_all(
                        format!("GET /{kind}/{n} HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
                            .as_bytes(),
                    )
                    .unwrap();
                    let (head, body) = read_framed(&mut c, &mut buf);
                    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
                    assert!(
                        body == common::pattern(n),
                        "client {i} /{kind}/{n}: body differs"
                    );
                }
            })
        })
        .collect();
    for t in clients {
        t.join().expect("client thread");
    }
    assert_eq!(b.requests.load(Ordering::SeqCst), 48 * 4);
}

fn pipelined_requests_in_order(driver: Driver) {
    let b = backend("b1");
    let arc = start(driver, "", b.addr, &[]);
    let mut c = connect(arc.http());
    let pipeline = "GET /one HTTP/1.1\r\nHost: app.example.com\r\n\r\nGET / HTTP/1.1\r\nHost: other\r\n\r\nGET /three HTTP/1.1\r\nHost: app.example.com\r\n\r\n";
    c.write_all(pipeline.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let (h1, _) = read_response(&mut c, &mut buf).expect("1");
    let (h2, b2) = read_response(&mut c, &mut buf).expect("2");
    let (h3, _) = read_response(&mut c, &mut buf).expect("3");
    assert!(h1.contains("X-Path: /one\r\n"), "{h1}");
    assert_eq!(b2, b"Arc is running\n", "{h2}");
    assert!(h3.contains("X-Path: /three\r\n"), "{h3}");
}

fn chunked_both_ways(driver: Driver) {
    let b = backend("b1");
    let arc = start(driver, "", b.addr, &[]);
    let mut c = connect(arc.http());
    c.write_all(b"POST /echo HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let (head, body) = read_response(&mut c, &mut buf).expect("echo");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"abcdefg");
    c.write_all(b"GET /chunked HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .unwrap();
    let (head, body) = read_response(&mut c, &mut buf).expect("chunked");
    assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
    assert_eq!(body, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
}

/// Memory-measuring tests run one at a time: they read this process's RSS.
static MEMORY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn large_body_streams_with_bounded_memory(driver: Driver) {
    let _one = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    let b = backend("b1");
    let arc = start(driver, "", b.addr, &[]);
    let mut c = connect(arc.http());
    let size = 64 << 20;
    c.write_all(format!("GET /len/{size} HTTP/1.1\r\nHost: app.example.com\r\n\r\n").as_bytes())
        .unwrap();
    let before = common::rss_kib();
    let mut got = 0usize;
    let mut head_seen = false;
    let mut b4 = vec![0u8; 256 * 1024];
    let mut peak = before;
    while got < size {
        let n = c.read(&mut b4).expect("read body");
        assert!(n > 0, "closed early at {got}");
        if !head_seen {
            let text = &b4[..n];
            let i = text
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("head in first read");
            head_seen = true;
            got += n - (i + 4);
        } else {
            got += n;
        }
        peak = peak.max(common::rss_kib());
    }
    assert_eq!(got, size);
    // Client, proxy and backend share this process: 64 MiB flowed, the process grew by little.
    assert!(peak - before < 12 * 1024, "RSS grew {} KiB", peak - before);
}

fn slow_client_holds_back_the_upstream(driver: Driver) {
    let _one = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    let b = backend("b1");
    let arc = start(driver, "", b.addr, &[]);
    let mut c = connect(arc.http());
    let size = 32 << 20;
    c.write_all(format!("GET /len/{size} HTTP/1.1\r\nHost: app.example.com\r\n\r\n").as_bytes())
        .unwrap();
    let before = common::rss_kib();
    // The client reads nothing for a while: Arc must not buffer the body.
    std::thread::sleep(std::time::Duration::from_millis(700));
    let grown = common::rss_kib().saturating_sub(before);
    assert!(
        grown < 12 * 1024,
        "RSS grew {grown} KiB while the client was not reading"
    );
    let mut got = 0usize;
    let mut first = true;
    let mut buf = vec![0u8; 256 * 1024];
    while got < size {
        let n = c.read(&mut buf).expect("read body");
        assert!(n > 0, "closed early at {got}");
        if first {
            let i = buf[..n]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("head");
            got += n - (i + 4);
            first = false;
        } else {
            got += n;
        }
    }
    assert_eq!(got, size, "every byte arrives once the client reads");
}

fn upstream_dying_mid_response(driver: Driver) {
    let b = backend("b1");
    let arc = start(driver, "", b.addr, &[]);
    let mut c = connect(arc.http());
    c.write_all(b"GET /die HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    let _ = c.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.ends_with("partial"),
        "the client sees the truncation: {text}"
    );
    // The worker keeps serving.
    let mut c = connect(arc.http());
    c.write_all(GET.as_bytes()).unwrap();
    let (head, _) = read_response(&mut c, &mut Vec::new()).expect("after");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

fn errors_404_502(driver: Driver) {
    let b = backend("b1");
    let arc = start(driver, "", b.addr, &[]);
    let mut c = connect(arc.http());
    let mut buf = Vec::new();
    c.write_all(b"GET /nope HTTP/1.1\r\nHost: unknown\r\n\r\n")
        .unwrap();
    assert!(
        read_response(&mut c, &mut buf)
            .unwrap()
            .0
            .starts_with("HTTP/1.1 404 ")
    );
    c.write_all(b"GET / HTTP/1.1\r\nHost: down.example.com\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut c, &mut buf).unwrap();
    assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
    c.write_all(
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap();
    assert!(
        read_response(&mut c, &mut buf)
            .unwrap()
            .0
            .starts_with("HTTP/1.1 400 ")
    );
    let snap = arc.metrics.data_plane_snapshot();
    assert_eq!(snap.error_count(ErrorReason::NoRoute), 1);
    assert_eq!(snap.error_count(ErrorReason::UpstreamConnect), 1);
    assert_eq!(snap.error_count(ErrorReason::BadRequest), 1);
}

fn websocket_echo(driver: Driver) {
    let b = backend("b1");
    let arc = start(driver, "", b.addr, &[]);
    let mut c = connect(arc.http());
    c.write_all(b"GET /ws HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let (head, _) = read_response(&mut c, &mut buf).expect("101");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    for msg in [&b"\x81\x05hello"[..], b"\x81\x03abc", &[0x82; 3000]] {
        c.write_all(msg).unwrap();
        let mut echoed = std::mem::take(&mut buf);
        while echoed.len() < msg.len() {
            let mut b = [0u8; 4096];
            let n = c.read(&mut b).expect("echo");
            assert!(n > 0);
            echoed.extend_from_slice(&b[..n]);
        }
        assert_eq!(&echoed[..], msg);
    }
}

fn reload_swaps_routes_without_dropping_connections(driver: Driver) {
    let b = backend("b1");
    let mut arc = start(driver, "", b.addr, &[]);
    let mut c = connect(arc.http());
    let mut buf = Vec::new();
    c.write_all(b"GET /x HTTP/1.1\r\nHost: new.example.com\r\n\r\n")
        .unwrap();
    assert!(
        read_response(&mut c, &mut buf)
            .unwrap()
            .0
            .starts_with("HTTP/1.1 404")
    );
    let mut cfg = arc.server.as_ref().unwrap().config().clone();
    cfg.routes.insert(
        0,
        config::Route {
            host: Some("new.example.com".into()),
            path: "/".into(),
            path_type: config::PathType::Prefix,
            regex: false,
            upstream: Some("app".into()),
            direct_response: None,
            redirect: None,
            access_log: true,
        },
    );
    let changes = arc.server.as_mut().unwrap().reload(cfg).expect("reload");
    assert!(changes.is_empty());
    // Same client connection, new table.
    c.write_all(b"GET /x HTTP/1.1\r\nHost: new.example.com\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut c, &mut buf).unwrap();
    assert!(head.contains("X-Backend: b1"), "{head}");
}

fn max_connections_refuses_extra(driver: Driver) {
    let b = backend("b1");
    let arc = start(driver, "max_connections: 2\n", b.addr, &[]);
    let mut c1 = connect(arc.http());
    let mut c2 = connect(arc.http());
    let mut buf = Vec::new();
    for c in [&mut c1, &mut c2] {
        c.write_all(GET.as_bytes()).unwrap();
        assert!(
            read_response(c, &mut buf)
                .unwrap()
                .0
                .starts_with("HTTP/1.1 200")
        );
    }
    let mut c3 = connect(arc.http());
    let _ = c3.write_all(GET.as_bytes());
    let mut rest = Vec::new();
    let _ = c3.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "over the limit the connection is closed at once"
    );
    c1.write_all(GET.as_bytes()).unwrap();
    assert!(
        read_response(&mut c1, &mut buf)
            .unwrap()
            .0
            .starts_with("HTTP/1.1 200")
    );
}

fn pooled_connections_to_departed_endpoints_close(driver: Driver) {
    let a = backend("a");
    let b = backend("b");
    let mut arc = start(driver, "", a.addr, &[]);
    let mut c = connect(arc.http());
    c.write_all(GET.as_bytes()).unwrap();
    let (head, _) = read_response(&mut c, &mut Vec::new()).unwrap();
    assert!(head.contains("X-Backend: a"), "{head}");
    drop(c);
    assert_eq!(
        a.open.load(Ordering::SeqCst),
        1,
        "one pooled connection to a"
    );
    let mut cfg = arc.server.as_ref().unwrap().config().clone();
    cfg.upstreams[0].addr = Some(b.addr.to_string());
    arc.server.as_mut().unwrap().reload(cfg).expect("reload");
    // New traffic turns the workers' loops; the pooled connection to `a` is closed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while a.open.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
        let mut c = connect(arc.http());
        c.write_all(GET.as_bytes()).unwrap();
        let (head, _) = read_response(&mut c, &mut Vec::new()).unwrap();
        assert!(head.contains("X-Backend: b"), "{head}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        a.open.load(Ordering::SeqCst),
        0,
        "the departed endpoint's pooled connection closed"
    );
}

/// A TLS connection to `addr` for `name` (the handshake runs on first use).
fn tls_connect(
    config: Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
    name: &str,
) -> common::tls::TlsStream {
    common::tls::tls_over(connect(addr), &config, name)
}

/// Arc with a certificate for `app.example.com` from a new CA, and a client configuration
/// trusting that CA only.
fn start_with_app_certificate(
    driver: Driver,
    upstream: std::net::SocketAddr,
) -> (Arc1, Arc<rustls::ClientConfig>) {
    let ca = TestCa::new();
    let (crt, key) = ca.leaf(&["app.example.com"]);
    let arc = start(
        driver,
        "tls: {certificates: [{hosts: [app.example.com], cert: a.crt, key: a.key}]}\n",
        upstream,
        &[("a.crt", crt), ("a.key", key)],
    );
    (arc, common::tls::client_trusting(&ca))
}

fn tls_sni_and_default_certificate(driver: Driver) {
    let b = backend("b1");
    let ca = TestCa::new();
    let (a_crt, a_key) = ca.leaf(&["app.example.com"]);
    let (d_crt, d_key) = ca.leaf(&["down.example.com"]);
    let arc = start(
        driver,
        "tls: {certificates: [{hosts: [app.example.com], cert: a.crt, key: a.key}, {hosts: [down.example.com], cert: d.crt, key: d.key}]}\n",
        b.addr,
        &[
            ("a.crt", a_crt),
            ("a.key", a_key),
            ("d.crt", d_crt),
            ("d.key", d_key),
        ],
    );
    let config = common::tls::client_trusting(&ca);
    for name in ["app.example.com", "down.example.com"] {
        let mut tls = tls_connect(Arc::clone(&config), arc.listener(1), name);
        // The handshake verifies the presented certificate is the one for `name`.
        tls.write_all(
            format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let mut resp = Vec::new();
        let _ = tls.read_to_end(&mut resp);
        let text = String::from_utf8_lossy(&resp);
        if name == "app.example.com" {
            assert!(text.contains("X-Backend: b1"), "{text}");
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        } else {
            assert!(text.starts_with("HTTP/1.1 502"), "{text}");
        }
    }
    // An unknown name gets the generated default certificate, which this CA did not sign.
    let conn =
        rustls::ClientConnection::new(Arc::clone(&config), "other.example.com".try_into().unwrap())
            .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, connect(arc.listener(1)));
    let err = tls
        .write_all(b"GET / HTTP/1.1\r\nHost: other\r\n\r\n")
        .and_then(|_| tls.flush());
    let mut sink = [0u8; 16];
    let read = tls.read(&mut sink);
    assert!(
        err.is_err() || read.is_err(),
        "the default certificate is not trusted by the test CA"
    );
}

/// Reads at most 1 500 bytes per call and pauses 1 ms every 32 calls: a slow client.
struct SlowReader<R>(R, u32);

impl<R: Read> Read for SlowReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.1 += 1;
        if self.1.is_multiple_of(32) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let n = buf.len().min(1500);
        self.0.read(&mut buf[..n])
    }
}

/// Large bodies over TLS, content-length and chunked, arrive byte for byte on parallel
/// keep-alive connections, one of them read in small pieces with pauses: the TLS layer hands
/// its ciphertext to the socket both in large lent batches and in copies, around short writes.
fn large_bodies_over_tls_arrive_intact(driver: Driver) {
    // Bulk traffic in this process would blur the RSS figures of the memory tests.
    let _one = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    let b = backend("b1");
    let (arc, config) = start_with_app_certificate(driver, b.addr);
    let addr = arc.listener(1);
    let sizes = [16 * 1024 - 1, 64 * 1024 + 1, 300 * 1024 + 7, 1 << 20];
    let clients: Vec<_> = (0..6)
        .map(|i| {
            let config = Arc::clone(&config);
            std::thread::spawn(move || {
                let mut tls = tls_connect(config, addr, "app.example.com");
                let mut buf = Vec::new();
                for (r, n) in sizes.iter().enumerate() {
                    let n = n + i;
                    let kind = if (i + r) % 2 == 0 {
                        "pattern"
                    } else {
                        "pchunked"
                    };
                    tls.write_all(
                        format!("GET /{kind}/{n} HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
                            .as_bytes(),
                    )
                    .unwrap();
                    let (head, body) = if i == 0 {
                        read_framed(&mut SlowReader(&mut tls, 0), &mut buf)
                    } else {
                        read_framed(&mut tls, &mut buf)
                    };
                    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
                    assert_eq!(body.len(), n, "client {i} /{kind}/{n}");
                    assert!(
                        body == common::pattern(n),
                        "client {i} /{kind}/{n}: body differs"
                    );
                }
                assert!(
                    buf.is_empty(),
                    "client {i}: no stray bytes after the responses"
                );
            })
        })
        .collect();
    for t in clients {
        t.join().expect("client thread");
    }
    assert_eq!(b.requests.load(Ordering::SeqCst), 6 * sizes.len());
}

/// Asserts that reused idle connections parked no sooner than [`IDLE_GRACE`] after
/// `last_sent`, when the last of them was sent its request: the gauge counts that connection
/// only once it has been idle for the grace, which begins after its request arrived.
fn assert_parked_after_grace(last_sent: std::time::Instant, what: &str) {
    let waited = last_sent.elapsed();
    assert!(
        waited >= IDLE_GRACE,
        "{what}: parked {waited:?} after the last request, within the idle grace"
    );
}

/// Waits (bounded) until `arc_connections_idle` reads `want`; returns the last value read.
fn wait_parked(arc: &Arc1, want: i64) -> i64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let parked = arc.metrics.data_plane_snapshot().connections_parked;
        if parked == want || std::time::Instant::now() >= deadline {
            return parked;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Idle keep-alive connections give their buffers back (the `arc_connections_idle` gauge
/// counts them) and still serve what comes next: a plain request, two pipelined ones, and a
/// head split over two writes (a connection holding half a head is not idle).
fn idle_connections_release_buffers_and_serve_again(driver: Driver) {
    const N: usize = 300;
    let b = backend("b1");
    let arc = start(driver, "", b.addr, &[]);
    let mut conns: Vec<(std::net::TcpStream, Vec<u8>)> = Vec::with_capacity(N);
    for _ in 0..N {
        let mut c = connect(arc.http());
        let mut buf = Vec::new();
        c.write_all(GET.as_bytes()).unwrap();
        let (head, _) = read_response(&mut c, &mut buf).expect("first response");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        conns.push((c, buf));
    }
    assert_eq!(
        wait_parked(&arc, N as i64),
        N as i64,
        "every idle connection parked"
    );
    assert_eq!(
        arc.metrics.data_plane_snapshot().connections_active,
        N as i64
    );

    let (first, rest) = GET.as_bytes().split_at(10);
    let partial = 2 * N / 3..N;
    for (c, _) in &mut conns[partial.clone()] {
        c.write_all(first).unwrap();
    }
    let holding = (N - partial.len()) as i64;
    assert_eq!(
        wait_parked(&arc, holding),
        holding,
        "half a head keeps its buffer"
    );

    let mut last_sent = std::time::Instant::now();
    for (i, (c, buf)) in conns.iter_mut().enumerate() {
        last_sent = std::time::Instant::now();
        let requests = if partial.contains(&i) {
            c.write_all(rest).unwrap();
            1
        } else if i % 2 == 0 {
            c.write_all(format!("{GET}{GET}").as_bytes()).unwrap();
            2
        } else {
            c.write_all(GET.as_bytes()).unwrap();
            1
        };
        for _ in 0..requests {
            let (head, _) = read_response(c, buf).expect("response after idling");
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
            assert!(head.contains("X-Backend: b1\r\n"), "{head}");
        }
    }
    assert_eq!(
        wait_parked(&arc, N as i64),
        N as i64,
        "idle again after the second round"
    );
    // Reused now: they idle in the grace first.
    assert_parked_after_grace(last_sent, "second round");
    drop(conns);
    assert_eq!(
        wait_parked(&arc, 0),
        0,
        "closed connections are not counted"
    );
}

/// Idle keep-alive TLS connections park too: the TLS layer's hand-over of the response must
/// not leave the connection looking busy.
fn idle_tls_connections_park(driver: Driver) {
    const N: usize = 40;
    let b = backend("b1");
    let (arc, config) = start_with_app_certificate(driver, b.addr);
    let mut conns = Vec::with_capacity(N);
    for _ in 0..N {
        conns.push((
            tls_connect(Arc::clone(&config), arc.listener(1), "app.example.com"),
            Vec::new(),
        ));
    }
    for round in 0..2 {
        let mut last_sent = std::time::Instant::now();
        for (tls, buf) in &mut conns {
            last_sent = std::time::Instant::now();
            tls.write_all(GET.as_bytes()).unwrap();
            let (head, _) = read_response(tls, buf).expect("response");
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        }
        assert_eq!(
            wait_parked(&arc, N as i64),
            N as i64,
            "round {round}: every idle TLS connection parked"
        );
        if round > 0 {
            // Reused: they idle in the grace first (after one request they park at once).
            assert_parked_after_grace(last_sent, &format!("TLS round {round}"));
        }
    }
    drop(conns);
    assert_eq!(wait_parked(&arc, 0), 0);
}

/// Writes a byte every 10 ms after the response ended, for at most `window`: true once the
/// server's kernel answered one with a reset (the socket is closed, nothing reads it).
fn reset_within(c: &mut std::net::TcpStream, window: std::time::Duration) -> bool {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < window {
        if c.write_all(b"x").is_err() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

/// After `Connection: close` from the client, with its request read in full, nothing more can
/// come: the connection is closed at once. A close the client did not ask for (here the
/// per-connection request limit) keeps reading and discarding what still arrives, so a request
/// already on its way is not answered with a reset.
fn client_close_ends_without_lingering(driver: Driver) {
    let b = backend("b1");
    let arc = start(
        driver,
        "limits: {max_requests_per_connection: 1}\n",
        b.addr,
        &[],
    );
    let mut c = connect(arc.http());
    c.write_all(b"GET /x HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got)
        .expect("response, then a clean end of stream");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Connection: close\r\n"), "{text}");
    assert!(
        reset_within(&mut c, std::time::Duration::from_secs(1)),
        "bytes sent after the close were read and dropped: the server lingered"
    );

    let mut c = connect(arc.http());
    c.write_all(GET.as_bytes()).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got)
        .expect("response, then a clean end of stream");
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("Connection: close\r\n"), "{text}");
    assert!(
        !reset_within(&mut c, std::time::Duration::from_millis(500)),
        "a close the client did not ask for must linger"
    );
    assert_eq!(b.requests.load(Ordering::SeqCst), 2);
}

per_driver!(
    keep_alive_reuses_upstream_connections,
    large_keep_alive_responses_in_sequence,
    pipelined_requests_in_order,
    chunked_both_ways,
    large_body_streams_with_bounded_memory,
    large_bodies_arrive_intact,
    concurrent_large_bodies_survive_buffer_exhaustion,
    slow_client_holds_back_the_upstream,
    upstream_dying_mid_response,
    errors_404_502,
    websocket_echo,
    reload_swaps_routes_without_dropping_connections,
    max_connections_refuses_extra,
    pooled_connections_to_departed_endpoints_close,
    idle_connections_release_buffers_and_serve_again,
    tls_sni_and_default_certificate,
    large_bodies_over_tls_arrive_intact,
    idle_tls_connections_park,
    client_close_ends_without_lingering,
);
