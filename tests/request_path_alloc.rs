//! The proxy core's request path allocates nothing once a keep-alive connection is warm: a
//! proxied request (head parsed, routed, forwarded with X-Forwarded-*, X-Request-ID and
//! traceparent, response head and body relayed, upstream released for reuse) and Arc's own
//! direct response are driven through `ConnHandler` the way an io driver does, and the global
//! allocator counts what the calling thread allocates meanwhile.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_gateway::metrics::Metrics;
use arc_gateway::proxy::core::{Conn, ConnLimits, IDLE_GRACE, Snapshot, UpstreamSpec, WorkerCx};
use arc_gateway::proxy::io::{Action, ConnHandler, ConnInfo, PoolLimits};
use arc_gateway::routing::{self, Backend, HostRules, PathType, RouteModel, RouteRule};
use arc_swap::ArcSwap;

use common::alloc::allocations_during;

const REQUEST: &[u8] = b"GET /api/items?id=7 HTTP/1.1\r\nHost: app.example.com\r\n\
User-Agent: bench/1.0\r\nAccept: */*\r\nAccept-Encoding: gzip\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\n\
Content-Length: 16\r\nConnection: keep-alive\r\n\r\n0123456789abcdef";
const DIRECT: &[u8] = b"GET / HTTP/1.1\r\nHost: other.example.com\r\n\r\n";

fn model() -> RouteModel {
    RouteModel {
        hosts: vec![
            HostRules {
                host: Some("app.example.com".into()),
                rules: vec![RouteRule::new(
                    "api",
                    "/api",
                    PathType::Prefix,
                    Backend::upstream("app"),
                )],
                ..Default::default()
            },
            HostRules {
                host: None,
                rules: vec![RouteRule::new(
                    "root",
                    "/",
                    PathType::Exact,
                    Backend::DirectResponse {
                        status: 200,
                        body: "Arc is running\n".into(),
                        content_type: "text/plain".into(),
                    },
                )],
                ..Default::default()
            },
        ],
        default_backend: None,
    }
}

/// One downstream connection and a stand-in for the driver around it.
struct Rig {
    cx: WorkerCx,
    conn: Conn,
    now: Instant,
    client: Vec<u8>,
    upstream: Vec<u8>,
    releases: usize,
    _metrics: Arc<Metrics>,
}

impl Rig {
    fn new() -> Rig {
        let metrics = Arc::new(Metrics::new());
        let endpoints = vec![
            SocketAddr::from(([10, 0, 0, 1], 8080)),
            SocketAddr::from(([10, 0, 0, 2], 8080)),
        ];
        let spec = UpstreamSpec {
            name: Arc::from("app"),
            endpoints,
            pool: PoolLimits {
                max_idle: 8,
                idle_timeout: Duration::from_secs(60),
                connect_timeout: Duration::from_secs(1),
            },
            read_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(5),
            tls: None,
        };
        let table = routing::compile(&model(), 1).table;
        let snapshot = Snapshot::new(table, vec![spec], ConnLimits::default())
            .with_route_ids(|n| metrics.routes().intern(n));
        let shared = Arc::new(ArcSwap::from_pointee(snapshot));
        let mut cx = WorkerCx::new(shared, metrics.register_worker(), 11);
        let now = Instant::now();
        let info = ConnInfo {
            peer: SocketAddr::from(([192, 0, 2, 7], 50000)),
            local: SocketAddr::from(([127, 0, 0, 1], 8080)),
            listener: 0,
            tls: false,
            sni: None,
        };
        let conn = Conn::new(&mut cx, info, now);
        Rig {
            cx,
            conn,
            now,
            client: Vec::with_capacity(64 * 1024),
            upstream: Vec::with_capacity(64 * 1024),
            releases: 0,
            _metrics: metrics,
        }
    }

    /// Carries out actions and moves output the way a driver does (bounded).
    fn pump(&mut self) {
        for _ in 0..100 {
            let mut progress = false;
            while let Some(action) = self.conn.poll_action() {
                progress = true;
                match action {
                    Action::ConnectUpstream { .. } => {
                        self.conn
                            .on_upstream_connected(&mut self.cx, true, self.now)
                    }
                    Action::ReleaseUpstream { reusable } => {
                        assert!(reusable, "a clean keep-alive upstream is pooled");
                        self.releases += 1;
                    }
                    Action::CloseDownstream { .. } => panic!("the connection must stay open"),
                }
            }
            let up = self.conn.upstream_out();
            if !up.is_empty() {
                let n = up.len();
                self.upstream.extend_from_slice(up);
                self.conn.upstream_written(&mut self.cx, n, self.now);
                progress = true;
            }
            let down = self.conn.downstream_out();
            if !down.is_empty() {
                let n = down.len();
                self.client.extend_from_slice(down);
                self.conn.downstream_written(&mut self.cx, n, self.now);
                progress = true;
            }
            if !progress {
                return;
            }
        }
        panic!("the connection did not settle");
    }

    /// One proxied request and its response.
    fn proxied(&mut self) {
        self.client.clear();
        self.upstream.clear();
        self.now += Duration::from_millis(1);
        self.conn
            .on_downstream_data(&mut self.cx, REQUEST, self.now);
        self.pump();
        self.conn.on_upstream_data(&mut self.cx, RESPONSE, self.now);
        self.pump();
    }

    /// The client stays quiet for the idle grace: the driver's timer parks a reused
    /// connection then (one that served a single request parked at once). Returns whether it
    /// was still waiting in the grace.
    fn idle_until_parked(&mut self) -> bool {
        self.now += IDLE_GRACE;
        let waited = !self.conn.is_parked();
        if waited {
            assert_eq!(self.conn.deadline(), Some(self.now), "the park time");
            self.conn.on_timer(&mut self.cx, self.now);
            self.pump();
        }
        assert!(self.conn.is_parked());
        waited
    }

    /// One request Arc answers itself.
    fn direct(&mut self) {
        self.client.clear();
        self.now += Duration::from_millis(1);
        self.conn.on_downstream_data(&mut self.cx, DIRECT, self.now);
        self.pump();
    }
}

#[test]
fn a_warm_keep_alive_connection_proxies_without_allocating() {
    let mut rig = Rig::new();
    // Warm-up: buffers grow to their working size, the round-robin cursor exists, the parsed
    // head storage is in place.
    for _ in 0..4 {
        rig.proxied();
    }
    let upstream = String::from_utf8_lossy(&rig.upstream).into_owned();
    assert!(upstream.starts_with("GET /api/items?id=7 HTTP/1.1\r\nHost: app.example.com\r\n"));
    assert!(
        upstream.contains("X-Forwarded-For: 192.0.2.7\r\n"),
        "{upstream}"
    );
    assert!(upstream.contains("X-Request-ID: "), "{upstream}");
    assert!(upstream.contains("traceparent: 00-"), "{upstream}");
    let client = String::from_utf8_lossy(&rig.client).into_owned();
    assert!(client.starts_with("HTTP/1.1 200 OK\r\n"), "{client}");
    assert!(client.ends_with("\r\n\r\n0123456789abcdef"), "{client}");
    assert!(!client.contains("Connection:"), "{client}");

    let rounds = 64;
    let allocations = allocations_during(|| {
        for _ in 0..rounds {
            rig.proxied();
        }
    });
    assert_eq!(rig.releases, 4 + rounds);
    assert!(rig.client.ends_with(b"0123456789abcdef"));
    assert_eq!(
        allocations, 0,
        "{allocations} allocations for {rounds} proxied requests"
    );
}

#[test]
fn a_keep_alive_connection_parking_between_requests_proxies_without_allocating() {
    // A client slower than the idle grace: the connection parks after every response and its
    // next request takes the worker's spare state back.
    let mut rig = Rig::new();
    for _ in 0..4 {
        rig.proxied();
        rig.idle_until_parked();
    }
    let rounds = 64;
    let mut waited = 0;
    let allocations = allocations_during(|| {
        for _ in 0..rounds {
            rig.proxied();
            waited += usize::from(rig.idle_until_parked());
        }
    });
    assert_eq!(
        waited, rounds,
        "each answer left the connection in the grace"
    );
    assert_eq!(rig.releases, 4 + rounds);
    assert!(rig.client.ends_with(b"0123456789abcdef"));
    assert_eq!(
        allocations, 0,
        "{allocations} allocations for {rounds} proxied requests with parking between"
    );
}

#[test]
fn a_warm_keep_alive_connection_answers_direct_responses_without_allocating() {
    let mut rig = Rig::new();
    for _ in 0..4 {
        rig.direct();
    }
    assert!(rig.client.ends_with(b"Arc is running\n"));
    let allocations = allocations_during(|| {
        for _ in 0..64 {
            rig.direct();
        }
    });
    assert!(rig.client.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert_eq!(
        allocations, 0,
        "{allocations} allocations for 64 direct answers"
    );
}

#[global_allocator]
static ALLOC: common::alloc::CountingAlloc = common::alloc::CountingAlloc;
