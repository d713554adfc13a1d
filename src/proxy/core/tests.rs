//! The proxy core driven by a simulated client and upstream, with virtual time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::*;
use crate::metrics::{ErrorReason, Metrics, StatusClass};
use crate::proxy::io::{Action, ConnHandler, ConnInfo, PoolLimits, UpstreamError};
use crate::routing::{self, Backend, HostRules, PathType, RouteModel, RouteRule};

const UP: &str = "app";

fn endpoint(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 9, 0, 1], port))
}

fn model() -> RouteModel {
    let mut tls_host = HostRules {
        host: Some("secure.example.com".into()),
        tls: true,
        ..Default::default()
    };
    let mut rule = RouteRule::new("secure", "/", PathType::Prefix, Backend::upstream(UP));
    rule.ssl_redirect = true;
    tls_host.rules.push(rule);
    RouteModel {
        hosts: vec![
            HostRules {
                host: Some("app.example.com".into()),
                rules: vec![RouteRule::new(
                    "api",
                    "/api",
                    PathType::Prefix,
                    Backend::upstream(UP),
                )],
                ..Default::default()
            },
            HostRules {
                host: Some("empty.example.com".into()),
                rules: vec![RouteRule::new(
                    "none",
                    "/",
                    PathType::Prefix,
                    Backend::upstream("empty"),
                )],
                ..Default::default()
            },
            HostRules {
                host: Some("old.example.com".into()),
                rules: vec![RouteRule::new(
                    "old",
                    "/",
                    PathType::Prefix,
                    Backend::Redirect {
                        location: "https://app.example.com/".into(),
                        code: 301,
                    },
                )],
                ..Default::default()
            },
            tls_host,
            HostRules {
                host: None,
                rules: vec![
                    RouteRule::new(
                        "root",
                        "/",
                        PathType::Exact,
                        Backend::DirectResponse {
                            status: 200,
                            body: "Arc is running\n".into(),
                            content_type: "text/plain".into(),
                        },
                    ),
                    RouteRule::new("any-host", "/h10", PathType::Prefix, Backend::upstream(UP)),
                ],
                ..Default::default()
            },
        ],
        default_backend: None,
    }
}

fn spec(name: &str, endpoints: Vec<SocketAddr>) -> UpstreamSpec {
    UpstreamSpec {
        name: Arc::from(name),
        endpoints,
        pool: PoolLimits {
            max_idle: 8,
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(1),
        },
        read_timeout: Duration::from_secs(5),
        send_timeout: Duration::from_secs(5),
        tls: None,
    }
}

struct Sim {
    metrics: Arc<Metrics>,
    cx: WorkerCx,
    conn: Conn,
    now: Instant,
    /// Bytes the client received.
    client: Vec<u8>,
    /// Bytes the current upstream connection received.
    upstream: Vec<u8>,
    connects: Vec<SocketAddr>,
    releases: Vec<bool>,
    closed: Option<bool>,
    /// The `linger` of the close, once closed.
    lingers: Option<bool>,
    /// Connect upstreams at once (as reused when `reuse`).
    auto_connect: bool,
    reuse: bool,
    /// The client reads everything at once.
    client_reads: bool,
}

/// A plain connection from `peer` to the test listener (127.0.0.1:8080, listener 0).
fn client_info(peer: SocketAddr) -> ConnInfo {
    ConnInfo {
        peer,
        local: SocketAddr::from(([127, 0, 0, 1], 8080)),
        listener: 0,
        tls: false,
        sni: None,
    }
}

/// The test model's snapshot, route metric ids interned in `metrics`.
fn test_snapshot(limits: ConnLimits, metrics: &Metrics) -> Snapshot {
    let table = routing::compile(&model(), 1).table;
    Snapshot::new(
        table,
        vec![
            spec(UP, vec![endpoint(1), endpoint(2)]),
            spec("empty", vec![]),
        ],
        limits,
    )
    .with_route_ids(|n| metrics.routes().intern(n))
}

impl Sim {
    fn new(limits: ConnLimits) -> Sim {
        Sim::with_tls(limits, false)
    }

    fn with_tls(limits: ConnLimits, tls: bool) -> Sim {
        let metrics = Arc::new(Metrics::new());
        let snapshot = test_snapshot(limits, &metrics);
        let shared = Arc::new(ArcSwap::from_pointee(snapshot));
        let mut cx = WorkerCx::new(shared, metrics.register_worker(), 7);
        let now = Instant::now();
        let info = ConnInfo {
            tls,
            ..client_info(SocketAddr::from(([192, 0, 2, 7], 50000)))
        };
        let conn = Conn::new(&mut cx, info, now);
        Sim {
            metrics,
            cx,
            conn,
            now,
            client: Vec::new(),
            upstream: Vec::new(),
            connects: Vec::new(),
            releases: Vec::new(),
            closed: None,
            lingers: None,
            auto_connect: true,
            reuse: false,
            client_reads: true,
        }
    }

    /// Carries out actions and moves bytes the way a driver would.
    fn pump(&mut self) {
        for _ in 0..1000 {
            let mut progress = false;
            while let Some(a) = self.conn.poll_action() {
                progress = true;
                match a {
                    Action::ConnectUpstream { key, .. } => {
                        self.connects.push(key.endpoint);
                        self.upstream.clear();
                        if self.auto_connect {
                            self.conn
                                .on_upstream_connected(&mut self.cx, self.reuse, self.now);
                        }
                    }
                    Action::ReleaseUpstream { reusable } => self.releases.push(reusable),
                    Action::CloseDownstream { flush, linger } => {
                        self.closed = Some(flush);
                        self.lingers = Some(linger);
                    }
                }
            }
            let up = self.conn.upstream_out().to_vec();
            if !up.is_empty() {
                self.upstream.extend_from_slice(&up);
                self.conn.upstream_written(&mut self.cx, up.len(), self.now);
                progress = true;
            }
            if self.client_reads {
                let down = self.conn.downstream_out().to_vec();
                if !down.is_empty() {
                    self.client.extend_from_slice(&down);
                    self.conn
                        .downstream_written(&mut self.cx, down.len(), self.now);
                    progress = true;
                }
            }
            if !progress {
                return;
            }
        }
        panic!("no quiescence");
    }

    fn send(&mut self, bytes: &[u8]) {
        self.conn.on_downstream_data(&mut self.cx, bytes, self.now);
        self.pump();
    }

    fn reply(&mut self, bytes: &[u8]) {
        self.conn.on_upstream_data(&mut self.cx, bytes, self.now);
        self.pump();
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        if self.conn.deadline().is_some_and(|t| t <= self.now) {
            self.conn.on_timer(&mut self.cx, self.now);
        }
        self.pump();
    }

    fn client_text(&self) -> String {
        String::from_utf8_lossy(&self.client).into_owned()
    }

    fn upstream_text(&self) -> String {
        String::from_utf8_lossy(&self.upstream).into_owned()
    }

    fn take_client(&mut self) -> String {
        let t = self.client_text();
        self.client.clear();
        t
    }

    fn errors(&self, r: ErrorReason) -> u64 {
        self.metrics.data_plane_snapshot().error_count(r)
    }
}

const GET_API: &[u8] =
    b"GET /api/items?x=1 HTTP/1.1\r\nHost: app.example.com\r\nUser-Agent: t\r\n\r\n";
const OK_5: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn direct_response_and_404() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(b"GET / HTTP/1.1\r\nHost: anything\r\n\r\n");
    let t = s.take_client();
    assert!(t.starts_with("HTTP/1.1 200 OK\r\n"), "{t}");
    assert!(t.contains("Content-Type: text/plain\r\n"));
    assert!(t.ends_with("\r\n\r\nArc is running\n"), "{t}");
    assert!(!t.contains("Connection: close"));
    // Host-less rule is Exact `/`: other paths are 404; a matched host never falls through.
    s.send(b"GET /other HTTP/1.1\r\nHost: anything\r\n\r\n");
    assert!(s.take_client().starts_with("HTTP/1.1 404 Not Found\r\n"));
    s.send(b"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n");
    assert!(s.take_client().starts_with("HTTP/1.1 404 "));
    assert_eq!(s.errors(ErrorReason::NoRoute), 2);
    assert!(s.connects.is_empty());
    assert_eq!(s.closed, None);
    let snap = s.metrics.data_plane_snapshot();
    assert_eq!(
        snap.route_requests("root", StatusClass::from_status(200)),
        1
    );
}

#[test]
fn redirect_and_head_request() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(b"HEAD /x HTTP/1.1\r\nHost: old.example.com\r\n\r\n");
    let t = s.take_client();
    assert!(t.starts_with("HTTP/1.1 301 Moved Permanently\r\n"), "{t}");
    assert!(t.contains("Location: https://app.example.com/\r\n"), "{t}");
    assert!(t.ends_with("\r\n\r\n"), "HEAD gets no body: {t}");
}

#[test]
fn ssl_redirect_for_tls_hosts_on_plain_http_only() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(b"GET /a?b=1 HTTP/1.1\r\nHost: secure.example.com:8080\r\n\r\n");
    let t = s.take_client();
    assert!(t.starts_with("HTTP/1.1 308 Permanent Redirect\r\n"), "{t}");
    assert!(
        t.contains("Location: https://secure.example.com/a?b=1\r\n"),
        "{t}"
    );
    // ACME HTTP-01 challenges are never redirected.
    s.send(b"GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: secure.example.com\r\n\r\n");
    assert_eq!(s.connects.len(), 1);
    // Over TLS the same request is proxied.
    let mut s = Sim::with_tls(ConnLimits::default(), true);
    s.send(b"GET /a HTTP/1.1\r\nHost: secure.example.com\r\n\r\n");
    assert_eq!(s.connects.len(), 1);
    assert!(
        s.upstream_text().contains("X-Forwarded-Proto: https\r\n"),
        "{}",
        s.upstream_text()
    );
}

#[test]
fn proxies_with_forwarding_headers_and_keeps_alive() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(GET_API);
    assert_eq!(s.connects, vec![endpoint(1)]);
    let up = s.upstream_text();
    assert!(up.starts_with("GET /api/items?x=1 HTTP/1.1\r\n"), "{up}");
    assert!(up.contains("Host: app.example.com\r\n"));
    assert!(up.contains("X-Forwarded-For: 192.0.2.7\r\n"), "{up}");
    assert!(up.contains("X-Forwarded-Proto: http\r\n"));
    assert!(up.contains("X-Forwarded-Port: 8080\r\n"));
    assert!(up.contains("X-Request-ID: "));
    assert!(up.contains("traceparent: 00-"), "{up}");
    s.reply(OK_5);
    assert_eq!(
        s.take_client(),
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    );
    assert_eq!(s.releases, vec![true]);
    // Next request on the same connection goes to the next endpoint (round robin).
    s.send(GET_API);
    s.reply(OK_5);
    assert_eq!(s.connects, vec![endpoint(1), endpoint(2)]);
    assert_eq!(s.releases, vec![true, true]);
    assert_eq!(s.closed, None);
    let snap = s.metrics.data_plane_snapshot();
    assert_eq!(snap.route_requests("api", StatusClass::from_status(200)), 2);
}

#[test]
fn active_upstream_connections_are_counted_per_endpoint() {
    let mut s = Sim::new(ConnLimits::default());
    let active = |s: &Sim, port: u16| {
        s.metrics
            .pool_snapshot()
            .iter()
            .find(|p| p.endpoint == endpoint(port) && &*p.upstream == UP)
            .map_or(0, |p| p.active)
    };
    s.send(GET_API);
    assert_eq!(active(&s, 1), 1, "attached while the request is in flight");
    s.reply(OK_5);
    assert_eq!(active(&s, 1), 0, "released with the response");
    s.send(GET_API);
    assert_eq!((active(&s, 1), active(&s, 2)), (0, 1));
    // The client goes away mid-request: the connection is released and no longer counted.
    s.conn.on_downstream_error(&mut s.cx, s.now);
    s.pump();
    assert_eq!(active(&s, 2), 0);
    assert!(s.metrics.pool_snapshot().is_empty());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut s = Sim::new(ConnLimits::default());
    let mut two = GET_API.to_vec();
    two.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    two.extend_from_slice(GET_API);
    s.send(&two);
    // Only the first request went upstream; nothing answered yet.
    assert_eq!(s.connects.len(), 1);
    assert!(s.client.is_empty());
    s.reply(OK_5);
    // First response, then the local answer, then the third request goes upstream.
    let t = s.take_client();
    assert!(
        t.starts_with("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
        "{t}"
    );
    assert!(t.ends_with("Arc is running\n"), "{t}");
    assert_eq!(s.connects.len(), 2);
    s.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbye");
    assert!(s.take_client().ends_with("bye"));
}

#[test]
fn chunked_bodies_are_relayed_verbatim_both_ways() {
    let mut s = Sim::new(ConnLimits::default());
    let req =
        b"POST /api/up HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n";
    s.send(req);
    s.send(b"5;ext=1\r\nhello\r\n");
    s.send(b"0\r\nX-Trailer: t\r\n\r\n");
    let up = s.upstream_text();
    assert!(up.contains("Transfer-Encoding: chunked\r\n"), "{up}");
    assert!(
        up.ends_with("\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"),
        "{up}"
    );
    s.reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
    s.reply(b"0\r\n\r\n");
    let t = s.take_client();
    assert!(t.contains("Transfer-Encoding: chunked\r\n"), "{t}");
    assert!(t.ends_with("\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), "{t}");
    assert_eq!(s.releases, vec![true]);
}

#[test]
fn content_length_request_body_streams_upstream() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(b"PUT /api/x HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 10\r\n\r\n01234");
    assert!(s.upstream_text().ends_with("\r\n\r\n01234"));
    s.send(b"56789");
    assert!(s.upstream_text().ends_with("0123456789"));
    s.reply(OK_5);
    assert_eq!(s.releases, vec![true]);
}

#[test]
fn response_until_close_closes_the_client_connection() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(GET_API);
    s.reply(b"HTTP/1.1 200 OK\r\n\r\npartial");
    s.conn.on_upstream_eof(&mut s.cx, s.now);
    s.pump();
    let t = s.take_client();
    assert!(t.contains("Connection: close\r\n"), "{t}");
    assert!(t.ends_with("\r\n\r\npartial"));
    assert_eq!(s.releases, vec![false]);
    assert_eq!(s.closed, Some(true));
}

#[test]
fn connect_failures_map_to_502_and_504() {
    let mut s = Sim::new(ConnLimits::default());
    s.auto_connect = false;
    s.send(GET_API);
    s.conn
        .on_upstream_error(&mut s.cx, UpstreamError::Connect, s.now);
    s.pump();
    assert!(s.take_client().starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
    assert_eq!(s.errors(ErrorReason::UpstreamConnect), 1);
    s.send(GET_API);
    s.conn
        .on_upstream_error(&mut s.cx, UpstreamError::ConnectTimeout, s.now);
    s.pump();
    assert!(
        s.take_client()
            .starts_with("HTTP/1.1 504 Gateway Timeout\r\n")
    );
    assert_eq!(
        s.closed, None,
        "the client connection survives upstream failures"
    );
    // No endpoints: 503.
    s.send(b"GET / HTTP/1.1\r\nHost: empty.example.com\r\n\r\n");
    assert!(
        s.take_client()
            .starts_with("HTTP/1.1 503 Service Unavailable\r\n")
    );
    assert_eq!(s.errors(ErrorReason::NoEndpoints), 1);
}

#[test]
fn upstream_tls_failure_is_502_counted_as_upstream_tls() {
    let mut s = Sim::new(ConnLimits::default());
    s.auto_connect = false;
    s.send(GET_API);
    s.conn
        .on_upstream_error(&mut s.cx, UpstreamError::Tls, s.now);
    s.pump();
    assert!(s.take_client().starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
    assert_eq!(s.errors(ErrorReason::UpstreamTls), 1);
    assert_eq!(s.errors(ErrorReason::UpstreamConnect), 0);
    assert_eq!(s.closed, None, "the client connection survives");
}

#[test]
fn upstream_read_timeout_gives_504() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(GET_API);
    s.advance(Duration::from_secs(4));
    assert!(s.client.is_empty());
    s.advance(Duration::from_secs(2));
    assert!(s.take_client().starts_with("HTTP/1.1 504 "));
    assert_eq!(s.releases, vec![false]);
    assert_eq!(s.errors(ErrorReason::UpstreamTimeout), 1);
}

#[test]
fn stale_pooled_connection_is_replayed_on_a_fresh_one() {
    let mut s = Sim::new(ConnLimits::default());
    s.reuse = true;
    s.send(b"POST /api/x HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 3\r\n\r\nabc");
    let first = s.upstream_text();
    s.reuse = false;
    s.conn.on_upstream_eof(&mut s.cx, s.now);
    s.pump();
    assert_eq!(s.connects.len(), 2, "replayed on a new connection");
    assert_eq!(s.upstream_text(), first, "the same bytes are sent again");
    assert!(s.client.is_empty(), "the client sees no error");
    s.reply(OK_5);
    assert!(s.take_client().ends_with("hello"));
    // A fresh connection that fails is not replayed.
    s.send(GET_API);
    s.conn
        .on_upstream_error(&mut s.cx, UpstreamError::Io, s.now);
    s.pump();
    assert!(s.take_client().starts_with("HTTP/1.1 502 "));
}

#[test]
fn upstream_dying_mid_body_truncates_and_closes() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(GET_API);
    s.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-some");
    s.conn.on_upstream_eof(&mut s.cx, s.now);
    s.pump();
    assert!(s.client_text().ends_with("only-some"));
    assert_eq!(s.closed, Some(true));
    assert_eq!(s.releases, vec![false]);
}

#[test]
fn invalid_upstream_response_is_502() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(GET_API);
    s.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
    assert!(s.take_client().starts_with("HTTP/1.1 502 "));
    assert_eq!(s.errors(ErrorReason::UpstreamInvalidResponse), 1);
    assert_eq!(s.releases, vec![false]);
}

#[test]
fn malformed_and_smuggling_requests_get_400_and_close() {
    for bad in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let mut s = Sim::new(ConnLimits::default());
        s.send(bad);
        let t = s.take_client();
        assert!(t.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{t}");
        assert!(t.contains("Connection: close\r\n"));
        assert_eq!(s.closed, Some(true));
        assert!(s.connects.is_empty());
    }
}

#[test]
fn head_and_body_limits() {
    let limits = ConnLimits {
        codec: crate::proxy::http1::Limits {
            max_head: 1024,
            max_headers: 10,
            max_body: Some(4),
        },
        ..ConnLimits::default()
    };
    let mut s = Sim::new(limits);
    let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 2000));
    s.send(&big);
    assert!(s.take_client().starts_with("HTTP/1.1 431 "));
    let mut s = Sim::new(limits);
    s.send(b"POST /api HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5\r\n\r\n");
    assert!(s.take_client().starts_with("HTTP/1.1 413 "));
    assert_eq!(s.errors(ErrorReason::BodyTooLarge), 1);
}

#[test]
fn header_read_and_idle_timeouts() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(b"GET / HTTP/1.1\r\nHost: slow");
    s.advance(Duration::from_secs(9));
    assert_eq!(s.closed, None);
    s.advance(Duration::from_secs(2));
    assert!(s.take_client().starts_with("HTTP/1.1 408 "));
    assert_eq!(s.closed, Some(true));
    assert_eq!(s.errors(ErrorReason::HeaderReadTimeout), 1);

    let mut s = Sim::new(ConnLimits::default());
    s.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    s.take_client();
    s.advance(Duration::from_secs(59));
    assert_eq!(s.closed, None);
    s.advance(Duration::from_secs(2));
    assert_eq!(s.closed, Some(true));
    assert!(s.client.is_empty(), "an idle close sends nothing");
}

#[test]
fn back_pressure_bounds_buffers_when_the_client_does_not_read() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(GET_API);
    s.client_reads = false;
    s.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n");
    let chunk = vec![b'x'; 16 * 1024];
    let mut fed = 0;
    while s.conn.interest().upstream_read && fed < 10_000_000 {
        s.reply(&chunk);
        fed += chunk.len();
    }
    assert!(fed < 512 * 1024, "upstream reading must pause, fed {fed}");
    assert!(s.conn.downstream_out().len() < 256 * 1024);
    // The client reads: upstream reading resumes.
    s.client_reads = true;
    s.pump();
    assert!(s.conn.interest().upstream_read);
}

#[test]
fn expect_continue_is_answered_by_arc() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(b"POST /api HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(s.take_client(), "HTTP/1.1 100 Continue\r\n\r\n");
    assert!(!s.upstream_text().to_ascii_lowercase().contains("expect"));
    s.send(b"ok");
    s.reply(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        s.take_client(),
        "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
    );
}

#[test]
fn websocket_upgrade_becomes_a_tunnel() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(b"GET /api/ws HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n");
    let up = s.upstream_text();
    assert!(up.contains("Upgrade: websocket\r\n"), "{up}");
    assert!(
        up.to_ascii_lowercase().contains("connection: upgrade\r\n"),
        "{up}"
    );
    s.reply(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nserver-frame");
    let t = s.take_client();
    assert!(t.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{t}");
    assert!(t.ends_with("\r\n\r\nserver-frame"), "{t}");
    s.upstream.clear();
    s.send(b"\x81\x05hello");
    assert_eq!(s.upstream, b"\x81\x05hello");
    s.reply(b"more");
    assert_eq!(s.take_client(), "more");
    s.conn.on_upstream_eof(&mut s.cx, s.now);
    s.pump();
    assert_eq!(s.closed, Some(true));
}

#[test]
fn max_requests_per_connection_sends_connection_close() {
    let limits = ConnLimits {
        max_requests_per_connection: Some(2),
        ..ConnLimits::default()
    };
    let mut s = Sim::new(limits);
    s.send(GET_API);
    s.reply(OK_5);
    assert!(!s.take_client().contains("Connection: close"));
    s.send(GET_API);
    s.reply(OK_5);
    assert!(s.take_client().contains("Connection: close\r\n"));
    assert_eq!(s.closed, Some(true));
    assert_eq!(
        s.lingers,
        Some(true),
        "a close the client did not ask for lingers: its next request may be on the way"
    );
}

#[test]
fn max_connection_age_closes_after_the_current_response() {
    let limits = ConnLimits {
        max_connection_age: Some(Duration::from_secs(30)),
        ..ConnLimits::default()
    };
    let mut s = Sim::new(limits);
    s.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(!s.take_client().contains("Connection: close"));
    s.now += Duration::from_secs(31);
    s.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(s.take_client().contains("Connection: close\r\n"));
    assert_eq!(s.closed, Some(true));
}

#[test]
fn http10_keep_alive_and_close() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let t = s.take_client();
    assert!(t.contains("Connection: keep-alive\r\n"), "{t}");
    assert_eq!(s.closed, None);
    s.send(b"GET / HTTP/1.0\r\n\r\n");
    assert!(s.take_client().contains("Connection: close\r\n"));
    assert_eq!(s.closed, Some(true));
    assert_eq!(
        s.lingers,
        Some(false),
        "HTTP/1.0 without keep-alive sends nothing more"
    );
}

#[test]
fn request_without_host_names_the_endpoint_upstream() {
    // HTTP/1.0 without Host goes upstream as HTTP/1.1, which needs a non-empty Host.
    let mut s = Sim::new(ConnLimits::default());
    s.send(b"GET /h10 HTTP/1.0\r\n\r\n");
    let up = s.upstream_text();
    assert!(
        up.starts_with("GET /h10 HTTP/1.1\r\nHost: 10.9.0.1:"),
        "{up}"
    );
    assert!(!up.contains("\r\nHost: \r\n"), "{up}");
    // An empty Host is replaced the same way; a given one is kept.
    let mut s = Sim::new(ConnLimits::default());
    s.send(b"GET /h10 HTTP/1.1\r\nHost:\r\n\r\n");
    assert!(s.upstream_text().contains("\r\nHost: 10.9.0.1:"));
    let mut s = Sim::new(ConnLimits::default());
    s.send(b"GET /h10 HTTP/1.0\r\nHost: x.example\r\n\r\n");
    assert!(s.upstream_text().contains("\r\nHost: x.example\r\n"));
}

#[test]
fn client_connection_close_is_honoured_after_proxying() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(b"GET /api HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n");
    assert!(
        !s.upstream_text()
            .to_ascii_lowercase()
            .contains("connection: close")
    );
    s.reply(OK_5);
    let t = s.take_client();
    assert!(t.contains("Connection: close\r\n"), "{t}");
    assert_eq!(
        s.releases,
        vec![true],
        "the upstream connection stays reusable"
    );
    assert_eq!(s.closed, Some(true));
    assert_eq!(
        s.lingers,
        Some(false),
        "the client asked for the close and everything it sent was read: no lingering read"
    );
}

#[test]
fn a_new_snapshot_applies_to_the_next_request_only() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(GET_API);
    // Swap in a table where the API route is gone.
    let table = routing::compile(&RouteModel::default(), 2).table;
    let snapshot = Snapshot::new(table, vec![], ConnLimits::default());
    s.cx_swap(snapshot);
    s.reply(OK_5);
    assert!(
        s.take_client().ends_with("hello"),
        "the request in flight finishes"
    );
    s.send(GET_API);
    assert!(s.take_client().starts_with("HTTP/1.1 404 "));
}

impl Sim {
    fn cx_swap(&mut self, snapshot: Snapshot) {
        self.cx.shared().store(Arc::new(snapshot));
    }
}

#[test]
fn upstream_send_timeout_applies_while_the_upstream_does_not_read() {
    let mut s = Sim::new(ConnLimits::default());
    s.auto_connect = false;
    s.send(b"POST /api HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 3\r\n\r\nabc");
    s.conn.on_upstream_connected(&mut s.cx, false, s.now);
    // The driver could not write anything: the send timeout (5 s) runs.
    assert!(!s.conn.upstream_out().is_empty());
    assert_eq!(s.conn.deadline(), Some(s.now + Duration::from_secs(5)));
    s.now += Duration::from_secs(6);
    s.conn.on_timer(&mut s.cx, s.now);
    s.pump();
    assert!(s.take_client().starts_with("HTTP/1.1 504 "));
}

#[test]
fn departed_endpoints_are_not_pooled_and_refusals_are_counted() {
    let mut s = Sim::new(ConnLimits::default());
    let epoch = Conn::endpoints_epoch(&mut s.cx);
    let key = crate::proxy::io::PoolKey {
        endpoint: endpoint(1),
        upstream: Arc::from(UP),
        tls: None,
    };
    assert!(Conn::keep_pooled(&mut s.cx, &key));
    s.send(GET_API);
    // The endpoint leaves the table while the request is in flight.
    let table = routing::compile(&model(), 2).table;
    s.cx_swap(Snapshot::new(
        table,
        vec![spec(UP, vec![endpoint(2)])],
        ConnLimits::default(),
    ));
    assert_ne!(Conn::endpoints_epoch(&mut s.cx), epoch);
    assert!(!Conn::keep_pooled(&mut s.cx, &key));
    let current = crate::proxy::io::PoolKey {
        endpoint: endpoint(2),
        ..key.clone()
    };
    assert!(Conn::keep_pooled(&mut s.cx, &current));
    let other_tls = crate::proxy::io::PoolKey {
        tls: Some(crate::proxy::tls::UpstreamTls::insecure(None).unwrap()),
        ..current.clone()
    };
    assert!(
        !Conn::keep_pooled(&mut s.cx, &other_tls),
        "a connection with other TLS settings is not kept"
    );
    s.reply(OK_5);
    assert!(s.take_client().ends_with("hello"));
    assert_eq!(s.releases, vec![false], "not pooled: its endpoint is gone");

    Conn::on_refused(&mut s.cx);
    let text = s.metrics.encode().unwrap();
    assert!(
        text.contains("arc_connections_refused_total{reason=\"max_connections\"} 1"),
        "{text}"
    );
}

/// A response whose last body bytes arrive while the client's buffer is above the high-water
/// mark still ends once the client has read: the next request on the connection is proxied.
#[test]
fn response_ending_under_back_pressure_completes_once_the_client_reads() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(GET_API);
    s.client_reads = false;
    let body_len = 64 * 1024;
    s.reply(format!("HTTP/1.1 200 OK\r\nContent-Length: {body_len}\r\n\r\n").as_bytes());
    let chunk = vec![b'x'; 16 * 1024];
    for _ in 0..body_len / chunk.len() {
        s.reply(&chunk);
    }
    assert!(
        s.releases.is_empty(),
        "the client has not read the response yet"
    );
    s.client_reads = true;
    s.pump();
    assert_eq!(
        s.releases,
        [true],
        "the response ended and its connection is pooled"
    );
    let first = s.take_client();
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
    assert!(first.ends_with(&"x".repeat(1000)));
    // The same client connection carries a second exchange.
    s.upstream.clear();
    s.send(GET_API);
    assert!(
        s.upstream_text()
            .starts_with("GET /api/items?x=1 HTTP/1.1\r\n"),
        "{}",
        s.upstream_text()
    );
    s.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert!(s.take_client().ends_with("\r\n\r\nok"));
}

impl Sim {
    fn drain(&mut self) {
        <Conn as ConnHandler>::begin_drain(&mut self.cx);
        self.conn.on_drain(&mut self.cx, self.now);
        self.pump();
    }
}

#[test]
fn drain_closes_a_quiet_keep_alive_connection_at_once() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(GET_API);
    s.reply(OK_5);
    assert!(!s.take_client().contains("Connection: close"));
    s.advance(Duration::from_secs(2));
    assert_eq!(s.closed, None);
    s.drain();
    assert_eq!(s.closed, Some(true), "closed with a flush, not a reset");
    assert!(
        s.client.is_empty(),
        "nothing is written to an idle connection"
    );
}

#[test]
fn drain_answers_the_next_request_of_a_busy_keep_alive_client_with_close() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(GET_API);
    s.reply(OK_5);
    s.take_client();
    s.advance(Duration::from_millis(5));
    s.drain();
    assert_eq!(
        s.closed, None,
        "an active client is not cut under its next request"
    );
    s.advance(Duration::from_millis(5));
    s.send(GET_API);
    s.reply(OK_5);
    let t = s.take_client();
    assert!(t.contains("Connection: close\r\n"), "{t}");
    assert_eq!(s.closed, Some(true));
}

#[test]
fn drain_closes_an_idle_keep_alive_connection_once_quiet() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(GET_API);
    s.reply(OK_5);
    s.advance(Duration::from_millis(300));
    s.drain();
    assert_eq!(s.closed, None);
    let deadline = s.conn.deadline().expect("a deadline");
    assert!(deadline <= s.now + Duration::from_millis(700));
    s.advance(Duration::from_millis(600));
    assert_eq!(s.closed, None);
    s.advance(Duration::from_millis(200));
    assert_eq!(s.closed, Some(true));
    assert!(s.client.ends_with(b"hello"), "nothing more was written");
}

#[test]
fn drain_lets_the_request_in_flight_finish_with_connection_close() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(GET_API);
    assert_eq!(s.connects.len(), 1);
    s.drain();
    assert_eq!(s.closed, None, "the request in flight keeps its connection");
    s.advance(Duration::from_secs(2));
    s.reply(OK_5);
    let t = s.take_client();
    assert!(t.starts_with("HTTP/1.1 200 OK\r\n"), "{t}");
    assert!(t.contains("Connection: close\r\n"), "{t}");
    assert!(t.ends_with("hello"), "{t}");
    assert_eq!(s.closed, Some(true));
    // The upstream connection is still good: it goes back to the pool.
    assert_eq!(s.releases, vec![true]);
}

#[test]
fn drain_after_the_response_head_finishes_the_body_then_closes() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(GET_API);
    s.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
    s.drain();
    assert_eq!(s.closed, None);
    s.reply(b"world");
    let t = s.take_client();
    assert!(t.ends_with("helloworld"), "{t}");
    assert_eq!(s.closed, Some(true));
}

#[test]
fn drain_answers_pipelined_requests_only_up_to_the_current_one() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(GET_API);
    s.drain();
    s.send(GET_API);
    s.reply(OK_5);
    let t = s.take_client();
    assert_eq!(t.matches("HTTP/1.1 200").count(), 1, "{t}");
    assert!(t.contains("Connection: close\r\n"), "{t}");
    assert_eq!(s.connects.len(), 1);
    assert_eq!(s.closed, Some(true));
}

#[test]
fn connection_opened_during_drain_gets_one_answer_then_closes() {
    let mut s = Sim::new(ConnLimits::default());
    <Conn as ConnHandler>::begin_drain(&mut s.cx);
    let info = client_info(SocketAddr::from(([192, 0, 2, 8], 50001)));
    s.conn = Conn::new(&mut s.cx, info.clone(), s.now);
    s.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let t = s.take_client();
    assert!(t.starts_with("HTTP/1.1 200 OK\r\n"), "{t}");
    assert!(t.contains("Connection: close\r\n"), "{t}");
    assert_eq!(s.closed, Some(true));

    // One that sends nothing gives up after a short grace, not after the idle timeout.
    s.closed = None;
    s.conn = Conn::new(&mut s.cx, info, s.now);
    assert!(s.conn.is_parked(), "no grace before the first request");
    let deadline = s.conn.deadline().expect("a deadline");
    assert!(deadline <= s.now + Duration::from_secs(1), "grace too long");
    s.advance(Duration::from_millis(500));
    assert_eq!(s.closed, None);
    s.advance(Duration::from_millis(600));
    assert_eq!(s.closed, Some(true));
}

#[test]
fn drain_leaves_websocket_tunnels_open() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(b"GET /api/ws HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n");
    s.reply(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    );
    s.take_client();
    s.drain();
    assert_eq!(s.closed, None);
    s.upstream.clear();
    s.send(b"frame");
    assert_eq!(s.upstream, b"frame");
    s.reply(b"back");
    assert_eq!(s.take_client(), "back");
    assert_eq!(s.closed, None);
}

/// A simulated connection whose worker sends access-log records to the returned ring.
fn logged_sim() -> (Sim, std::sync::mpsc::Receiver<crate::logging::AccessRecord>) {
    let mut s = Sim::new(ConnLimits::default());
    let (logger, rx) = crate::logging::AccessLogger::channel(16);
    s.cx.access = logger;
    (s, rx)
}

fn header_value<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_default()
}

#[test]
fn access_record_of_a_proxied_request() {
    let (mut s, rx) = logged_sim();
    s.advance(Duration::from_millis(1));
    s.send(GET_API);
    s.advance(Duration::from_millis(20));
    s.reply(OK_5);
    let rec = rx.try_recv().expect("one record");
    assert!(rx.try_recv().is_err(), "exactly one record");
    assert_eq!(rec.method(), "GET");
    assert_eq!(rec.host(), "app.example.com");
    assert_eq!(rec.path(), "/api/items?x=1");
    assert_eq!(rec.status, 200);
    assert_eq!(rec.client, SocketAddr::from(([192, 0, 2, 7], 50000)));
    assert_eq!(rec.bytes_in, GET_API.len() as u64);
    assert_eq!(rec.bytes_out, OK_5.len() as u64);
    assert_eq!(rec.duration, Duration::from_millis(20));
    assert_eq!(rec.upstream, Some(endpoint(1)));
    assert_eq!(rec.upstream_duration, Some(Duration::from_millis(20)));
    let up = s.upstream_text();
    assert_eq!(rec.request_id(), header_value(&up, "X-Request-ID: "));
    let traceparent = header_value(&up, "traceparent: ");
    assert_eq!(
        rec.trace_id.map(|t| format!("{t:032x}")).as_deref(),
        traceparent.get(3..35)
    );
    assert_eq!(rec.retries, 0);
    assert_eq!(rec.error, None);
    let name = rec.route.and_then(|r| s.metrics.routes().name(r));
    assert_eq!(name.as_deref(), Some("api"));
}

#[test]
fn access_records_of_rejected_requests() {
    let (mut s, rx) = logged_sim();
    s.send(b"GET /nothing HTTP/1.1\r\nHost: nowhere.example.com\r\n\r\n");
    let rec = rx.try_recv().expect("404 record");
    assert_eq!(rec.status, 404);
    assert_eq!(rec.error, Some(ErrorReason::NoRoute));
    assert_eq!(rec.path(), "/nothing");
    assert_eq!(rec.route, None);
    assert_eq!(rec.upstream, None);
    assert!(rec.bytes_out > 0);

    s.send(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
    let rec = rx.try_recv().expect("400 record");
    assert_eq!(rec.status, 400);
    assert_eq!(rec.error, Some(ErrorReason::BadRequest));
    assert_eq!(rec.path(), "", "no head was accepted");
}

#[test]
fn access_records_of_errored_requests() {
    let (mut s, rx) = logged_sim();
    s.auto_connect = false;
    s.send(GET_API);
    s.conn
        .on_upstream_error(&mut s.cx, UpstreamError::Connect, s.now);
    s.pump();
    let rec = rx.try_recv().expect("502 record");
    assert_eq!(rec.status, 502);
    assert_eq!(rec.error, Some(ErrorReason::UpstreamConnect));
    assert_eq!(rec.upstream, Some(endpoint(1)));

    s.auto_connect = true;
    s.send(GET_API);
    s.advance(Duration::from_secs(6));
    let rec = rx.try_recv().expect("504 record");
    assert_eq!(rec.status, 504);
    assert_eq!(rec.error, Some(ErrorReason::UpstreamTimeout));
    assert_eq!(rec.upstream, Some(endpoint(2)));
    assert_eq!(rec.upstream_duration, Some(Duration::from_secs(6)));
}

#[test]
fn a_full_access_ring_drops_and_counts_without_stalling_the_connection() {
    let mut s = Sim::new(ConnLimits::default());
    let (logger, rx) = crate::logging::AccessLogger::channel(2);
    s.cx.access = logger;
    for _ in 0..5 {
        s.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    assert_eq!(s.take_client().matches("HTTP/1.1 200 OK").count(), 5);
    assert_eq!(s.cx.access.dropped(), 3);
    assert_eq!(rx.try_iter().count(), 2);
}

#[test]
fn an_idle_connection_is_small() {
    // What an idle keep-alive connection costs the worker (the buffers and decoders of an
    // active one live in a separate, shared state).
    assert!(
        std::mem::size_of::<Conn>() <= 168,
        "idle connection state grew to {} bytes",
        std::mem::size_of::<Conn>()
    );
}

impl Sim {
    /// One proxied exchange (`GET_API` answered with `OK_5`), its answer taken by the client.
    fn exchange(&mut self) {
        self.send(GET_API);
        self.reply(OK_5);
        assert!(self.take_client().ends_with("hello"));
    }

    /// A connection whose client has reused it: its next answer leaves it idling in the
    /// grace instead of parking at once.
    fn reused(limits: ConnLimits) -> Sim {
        let mut s = Sim::new(limits);
        for _ in 1..GRACE_AFTER {
            s.exchange();
            assert!(s.conn.is_parked(), "not reused yet: parks at once");
        }
        s
    }
}

#[test]
fn idle_connections_park_and_give_their_state_back() {
    let mut s = Sim::new(ConnLimits::default());
    assert!(
        s.conn.is_parked(),
        "a new connection holds nothing until bytes arrive"
    );
    assert_eq!(s.metrics.data_plane_snapshot().connections_parked, 1);
    s.send(GET_API);
    assert!(!s.conn.is_parked());
    assert_eq!(s.metrics.data_plane_snapshot().connections_parked, 0);
    s.reply(OK_5);
    assert!(s.take_client().ends_with("hello"));
    assert!(
        s.conn.is_parked(),
        "answered and written after its first request: the connection parks at once"
    );
    assert_eq!(s.cx.spare_states(), 1);
    assert_eq!(s.metrics.data_plane_snapshot().connections_parked, 1);
    assert_eq!(
        s.conn.deadline(),
        Some(s.now + ConnLimits::default().idle_timeout)
    );

    // The next request takes the spare state back and is served as before; the connection
    // is reused now, so it idles in the grace before it parks again.
    s.send(GET_API);
    assert_eq!(s.cx.spare_states(), 0);
    assert_eq!(s.metrics.data_plane_snapshot().connections_parked, 0);
    s.reply(OK_5);
    assert!(s.take_client().ends_with("hello"));
    assert_eq!(s.connects.len(), 2);
    assert!(!s.conn.is_parked(), "answered: idle, within the grace");
    s.advance(IDLE_GRACE);
    assert!(s.conn.is_parked());
    assert_eq!(s.cx.spare_states(), 1);
    assert_eq!(s.metrics.data_plane_snapshot().connections_parked, 1);
}

#[test]
fn an_idle_connection_parks_only_after_the_grace() {
    let mut s = Sim::reused(ConnLimits::default());
    s.exchange();
    let answered = s.now;
    assert!(!s.conn.is_parked());
    assert_eq!(
        s.conn.deadline(),
        Some(answered + IDLE_GRACE),
        "the deadline is the park time while the connection waits in the grace"
    );
    // Short of the grace nothing happens, even when a timer fires early.
    s.advance(IDLE_GRACE - Duration::from_nanos(1));
    s.conn.on_timer(&mut s.cx, s.now);
    s.pump();
    assert!(!s.conn.is_parked());
    assert_eq!(s.conn.deadline(), Some(answered + IDLE_GRACE));
    assert_eq!(s.metrics.data_plane_snapshot().connections_parked, 0);
    assert_eq!(s.cx.spare_states(), 0);
    // The timer at the deadline parks it.
    s.advance(Duration::from_nanos(1));
    assert!(s.conn.is_parked());
    assert_eq!(s.metrics.data_plane_snapshot().connections_parked, 1);
    assert_eq!(s.cx.spare_states(), 1);
    assert_eq!(
        s.conn.deadline(),
        Some(answered + ConnLimits::default().idle_timeout),
        "parked: the idle timeout, counted from the answer"
    );
    assert_eq!(s.closed, None);
}

#[test]
fn requests_inside_the_grace_are_served_without_parking() {
    let mut s = Sim::reused(ConnLimits::default());
    assert_eq!(s.metrics.data_plane_snapshot().connections_parked, 1);
    // A keep-alive client sending a request every half grace, for many graces in all: the
    // connection never parks, so it never unparks either.
    for i in 0..20 {
        s.exchange();
        s.advance(IDLE_GRACE / 2);
        assert!(!s.conn.is_parked(), "request {i}");
        assert_eq!(s.metrics.data_plane_snapshot().connections_parked, 0);
        assert_eq!(s.cx.spare_states(), 0, "no state went back to the worker");
    }
    assert_eq!(s.connects.len(), 20 + GRACE_AFTER as usize - 1);
    // The grace counts from the last answer.
    s.advance(IDLE_GRACE / 2);
    assert!(s.conn.is_parked());
    assert_eq!(s.metrics.data_plane_snapshot().connections_parked, 1);
}

#[test]
fn the_idle_timeout_is_exact_inside_the_grace_and_when_parked() {
    // An idle timeout shorter than the grace closes the connection before it ever parks.
    let short = ConnLimits {
        idle_timeout: IDLE_GRACE / 2,
        ..ConnLimits::default()
    };
    let mut s = Sim::reused(short);
    s.exchange();
    let answered = s.now;
    assert!(!s.conn.is_parked());
    assert_eq!(s.conn.deadline(), Some(answered + IDLE_GRACE / 2));
    s.advance(IDLE_GRACE / 2 - Duration::from_nanos(1));
    assert_eq!(s.closed, None);
    s.advance(Duration::from_nanos(1));
    assert_eq!(s.closed, Some(true));
    assert!(!s.conn.is_parked());
    assert_eq!(s.metrics.data_plane_snapshot().connections_parked, 0);

    // A longer one: parks after the grace, closes at the timeout from the answer.
    let long = ConnLimits {
        idle_timeout: Duration::from_secs(3),
        ..ConnLimits::default()
    };
    let mut s = Sim::reused(long);
    s.exchange();
    let answered = s.now;
    s.advance(IDLE_GRACE);
    assert!(s.conn.is_parked());
    s.advance(Duration::from_secs(3) - IDLE_GRACE - Duration::from_nanos(1));
    assert_eq!(s.closed, None);
    s.advance(Duration::from_nanos(1));
    assert_eq!(s.now, answered + Duration::from_secs(3));
    assert_eq!(s.closed, Some(true));
    assert_eq!(s.metrics.data_plane_snapshot().connections_parked, 0);
}

#[test]
fn drain_inside_the_grace_parks_then_closes_once_quiet() {
    let mut s = Sim::reused(ConnLimits::default());
    s.exchange();
    let answered = s.now;
    s.advance(IDLE_GRACE / 5);
    s.drain();
    assert_eq!(s.closed, None);
    assert!(!s.conn.is_parked());
    assert_eq!(s.conn.deadline(), Some(answered + IDLE_GRACE));
    s.advance(IDLE_GRACE - IDLE_GRACE / 5);
    assert!(s.conn.is_parked(), "draining does not keep it from parking");
    assert_eq!(s.conn.deadline(), Some(answered + Duration::from_secs(1)));
    s.advance(Duration::from_secs(1) - IDLE_GRACE - Duration::from_nanos(1));
    assert_eq!(s.closed, None);
    s.advance(Duration::from_nanos(1));
    assert_eq!(s.closed, Some(true));
}

#[test]
fn a_parked_connection_woken_without_a_request_parks_again_at_once() {
    // Drain reaches every connection: a parked one takes a state for the call and gives it
    // back at once instead of holding it for a grace (10 000 idle connections would otherwise
    // all hold one together).
    let mut fresh = Sim::new(ConnLimits::default());
    assert_eq!(fresh.cx.spare_states(), 0);
    fresh.drain();
    assert_eq!(fresh.closed, None);
    assert!(fresh.conn.is_parked(), "a new connection stays parked");
    assert_eq!(fresh.cx.spare_states(), 1);
    assert_eq!(fresh.metrics.data_plane_snapshot().connections_parked, 1);

    let mut s = Sim::reused(ConnLimits::default());
    s.exchange();
    s.advance(IDLE_GRACE);
    assert!(s.conn.is_parked());
    assert_eq!(s.cx.spare_states(), 1);
    // Another connection holds the spare state, so the drained one wakes in a new one.
    let mut other = Conn::new(
        &mut s.cx,
        client_info(SocketAddr::from(([192, 0, 2, 9], 50002))),
        s.now,
    );
    other.on_downstream_data(&mut s.cx, b"GET / HTTP/1.1\r\n", s.now);
    assert_eq!(s.cx.spare_states(), 0);
    s.advance(Duration::from_millis(100));
    s.drain();
    assert_eq!(s.closed, None);
    assert!(s.conn.is_parked());
    assert_eq!(s.metrics.data_plane_snapshot().connections_parked, 1);
    assert_eq!(s.cx.spare_states(), 1);
    // A zero-byte settle point (what the TLS layer gives once its output is flushed) on a
    // connection in the grace does not park it early.
    let mut t = Sim::reused(ConnLimits::default());
    t.exchange();
    t.conn.downstream_written(&mut t.cx, 0, t.now);
    assert!(!t.conn.is_parked());
    assert_eq!(t.conn.deadline(), Some(t.now + IDLE_GRACE));
}

#[test]
fn a_partial_head_or_unwritten_response_keeps_the_connection_active() {
    let mut s = Sim::reused(ConnLimits::default());
    let (a, b) = GET_API.split_at(12);
    s.send(a);
    assert!(!s.conn.is_parked(), "half a head is buffered");
    s.send(b);
    s.client_reads = false;
    s.reply(OK_5);
    assert!(!s.conn.is_parked(), "the response is not written yet");
    // Time passing while the response waits does not count towards the grace.
    s.advance(2 * IDLE_GRACE);
    assert!(!s.conn.is_parked(), "the response is still not written");
    s.client_reads = true;
    s.pump();
    assert!(s.take_client().ends_with("hello"));
    assert_eq!(s.conn.deadline(), Some(s.now + IDLE_GRACE));
    s.advance(IDLE_GRACE);
    assert!(s.conn.is_parked());
}

#[test]
fn pipelined_requests_are_served_across_parking() {
    let mut s = Sim::new(ConnLimits::default());
    s.send(GET_API);
    s.reply(OK_5);
    s.take_client();
    assert!(s.conn.is_parked());
    let mut two = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    two.extend_from_slice(GET_API);
    s.send(&two);
    assert!(!s.conn.is_parked(), "the second request is under way");
    s.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbye");
    let t = s.take_client();
    assert!(t.starts_with("HTTP/1.1 200 OK\r\n"), "{t}");
    assert!(t.contains("Arc is running\n"), "{t}");
    assert!(t.ends_with("bye"), "{t}");
    s.advance(IDLE_GRACE);
    assert!(s.conn.is_parked());
}

#[test]
fn a_parked_connection_times_out_and_closes_when_drained() {
    let limits = ConnLimits {
        idle_timeout: Duration::from_secs(5),
        ..ConnLimits::default()
    };
    let mut s = Sim::reused(limits);
    s.exchange();
    let answered = s.now;
    s.advance(IDLE_GRACE);
    assert!(s.conn.is_parked());
    // The idle timeout counts from the answer, not from the park.
    assert_eq!(s.conn.deadline(), Some(answered + Duration::from_secs(5)));
    s.advance(Duration::from_secs(5) - IDLE_GRACE - Duration::from_nanos(1));
    assert!(s.conn.is_parked() && s.closed.is_none());
    s.advance(Duration::from_nanos(1));
    assert_eq!(s.now, answered + Duration::from_secs(5));
    assert_eq!(s.closed, Some(true));
    assert!(s.conn.is_closed());
    assert_eq!(s.metrics.data_plane_snapshot().connections_parked, 0);
    assert_eq!(s.metrics.data_plane_snapshot().connections_active, 0);

    let mut d = Sim::new(ConnLimits::default());
    d.send(GET_API);
    d.reply(OK_5);
    d.advance(Duration::from_secs(2));
    d.conn.on_drain(&mut d.cx, d.now);
    d.pump();
    assert_eq!(
        d.closed,
        Some(true),
        "quiet for longer than the drain grace: closes"
    );
}

#[test]
fn parked_connections_hand_their_access_record_back() {
    // The record storage of an idle connection returns to the worker with its spare state and
    // serves the next connection: each record must still name its own client and count only
    // its own bytes.
    let (mut s, rx) = logged_sim();
    let info = |last: u8| {
        client_info(SocketAddr::from((
            [192, 0, 2, last],
            40000 + u16::from(last),
        )))
    };
    let mut a = Conn::new(&mut s.cx, info(1), s.now);
    let mut b = Conn::new(&mut s.cx, info(2), s.now);
    let exchange = |c: &mut Conn, s: &mut Sim, path: &str, reused: bool| {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        c.on_downstream_data(&mut s.cx, req.as_bytes(), s.now);
        let n = c.downstream_out().len();
        assert!(n > 0);
        c.downstream_written(&mut s.cx, n, s.now);
        if reused {
            assert!(!c.is_parked(), "within the grace");
            s.now += IDLE_GRACE;
            assert_eq!(c.deadline(), Some(s.now));
            c.on_timer(&mut s.cx, s.now);
        }
        assert!(c.is_parked());
        let rec = rx.try_recv().expect("one record per request");
        (rec, req.len(), n)
    };
    for (round, path) in ["/one", "/two-two", "/3"].iter().enumerate() {
        let reused = round + 1 >= GRACE_AFTER as usize;
        for (c, peer) in [(&mut a, info(1).peer), (&mut b, info(2).peer)] {
            let (rec, bytes_in, bytes_out) = exchange(c, &mut s, path, reused);
            assert_eq!(rec.client, peer, "round {round}");
            assert_eq!(rec.path(), *path);
            assert_eq!(rec.bytes_in, bytes_in as u64);
            assert_eq!(rec.bytes_out, bytes_out as u64, "round {round}: {peer}");
        }
    }
    assert!(rx.try_recv().is_err());
}

#[test]
fn spare_states_are_bounded() {
    let mut s = Sim::new(ConnLimits::default());
    let info = client_info(SocketAddr::from(([192, 0, 2, 8], 50001)));
    // Many connections active at once, then all idle: only a bounded number of states stay,
    // whether they park at once (first request) or after the grace (reused).
    let mut conns: Vec<Conn> = (0..100)
        .map(|_| Conn::new(&mut s.cx, info.clone(), s.now))
        .collect();
    for round in 0..GRACE_AFTER {
        for c in &mut conns {
            c.on_downstream_data(&mut s.cx, b"GET / HTTP/1.1\r\nHost: x\r\n", s.now);
            assert!(!c.is_parked());
        }
        for c in &mut conns {
            c.on_downstream_data(&mut s.cx, b"\r\n", s.now);
            let n = c.downstream_out().len();
            assert!(n > 0);
            c.downstream_written(&mut s.cx, n, s.now);
            assert_eq!(c.is_parked(), round + 1 < GRACE_AFTER, "round {round}");
        }
        if round + 1 < GRACE_AFTER {
            assert!(s.cx.spare_states() <= 32, "{}", s.cx.spare_states());
            assert!(s.cx.spare_states() > 0);
        }
    }
    assert_eq!(
        s.cx.spare_states(),
        0,
        "reused connections idle in the grace"
    );
    s.now += IDLE_GRACE;
    for c in &mut conns {
        c.on_timer(&mut s.cx, s.now);
        assert!(c.is_parked());
    }
    assert!(s.cx.spare_states() <= 32, "{}", s.cx.spare_states());
    assert!(s.cx.spare_states() > 0);
}

#[test]
fn parked_connections_keep_their_limits_across_a_reload() {
    let limits = |secs| ConnLimits {
        idle_timeout: Duration::from_secs(secs),
        ..ConnLimits::default()
    };
    let mut s = Sim::new(limits(5));
    s.send(GET_API);
    s.reply(OK_5);
    assert!(s.conn.is_parked());
    let table = routing::compile(&model(), 2).table;
    s.cx_swap(Snapshot::new(
        table,
        vec![spec(UP, vec![endpoint(1), endpoint(2)])],
        limits(30),
    ));
    // Idle under the limits of its last request, as before the reload.
    assert_eq!(s.conn.deadline(), Some(s.now + Duration::from_secs(5)));
    s.advance(Duration::from_secs(1));
    s.send(GET_API);
    s.reply(OK_5);
    let answered = s.now;
    assert!(s.take_client().ends_with("hello"));
    s.advance(IDLE_GRACE);
    assert!(s.conn.is_parked());
    // The next request picked up the new limits.
    assert_eq!(s.conn.deadline(), Some(answered + Duration::from_secs(30)));
}

#[test]
fn a_close_lingers_unless_the_client_can_send_nothing_more() {
    const GET_API_CLOSE: &[u8] =
        b"GET /api HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n";
    // Bytes after the request that asked for the close: the client is still sending.
    let mut s = Sim::new(ConnLimits::default());
    let mut req = GET_API_CLOSE.to_vec();
    req.extend_from_slice(GET_API);
    s.send(&req);
    s.reply(OK_5);
    assert!(s.take_client().contains("Connection: close\r\n"));
    assert_eq!((s.closed, s.lingers), (Some(true), Some(true)));

    // Answered before the request body was read: the rest of the body is still coming.
    let mut s = Sim::new(ConnLimits::default());
    s.send(b"POST /api HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\nContent-Length: 100\r\n\r\nabc");
    s.reply(OK_5);
    assert_eq!((s.closed, s.lingers), (Some(true), Some(true)));

    // The same request read in full: nothing can follow.
    let mut s = Sim::new(ConnLimits::default());
    s.send(b"POST /api HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc");
    s.reply(OK_5);
    assert_eq!((s.closed, s.lingers), (Some(true), Some(false)));

    // A local answer (redirect) to a close request, read in full.
    let mut s = Sim::new(ConnLimits::default());
    s.send(b"GET / HTTP/1.1\r\nHost: old.example.com\r\nConnection: close\r\n\r\n");
    assert!(s.take_client().starts_with("HTTP/1.1 301"));
    assert_eq!((s.closed, s.lingers), (Some(true), Some(false)));

    // An idle keep-alive connection closed by its idle timeout: a request may be racing it.
    let mut s = Sim::new(ConnLimits::default());
    s.send(GET_API);
    s.reply(OK_5);
    s.take_client();
    s.now += Duration::from_secs(3600);
    s.conn.on_timer(&mut s.cx, s.now);
    s.pump();
    assert_eq!((s.closed, s.lingers), (Some(true), Some(true)));
}

/// A chunked body is relayed verbatim however the reads split it, a split inside the chunk
/// framing included (a read that ends with `1` of `1\r\n` must not lose the `1`).
#[test]
fn chunked_bodies_survive_every_read_split() {
    let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    let body: &[u8] = b"1\r\n\0\r\n4;e=x\r\nabcd\r\n10\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n";
    let resp = [&head[..], body].concat();
    for cut in 1..resp.len() {
        let mut s = Sim::new(ConnLimits::default());
        s.send(GET_API);
        s.reply(&resp[..cut]);
        s.reply(&resp[cut..]);
        let t = s.take_client();
        assert!(
            t.as_bytes().ends_with(body),
            "response split at {cut}: client got {t:?}"
        );
        assert_eq!(s.releases, vec![true], "response split at {cut}");
    }
    let req_head =
        b"POST /api/up HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n";
    let req = [&req_head[..], body].concat();
    for cut in 1..req.len() {
        let mut s = Sim::new(ConnLimits::default());
        s.send(&req[..cut]);
        s.send(&req[cut..]);
        let up = s.upstream_text();
        assert!(
            up.as_bytes().ends_with(body),
            "request split at {cut}: upstream got {up:?}"
        );
    }
}

mod pipeline {
    //! The HTTP/1.1 session through the exchange seam: route policies that wait or answer.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::proxy::exchange::{
        LocalResponse, Request, RequestPolicy, RouteView, StepState, Verdict,
    };

    /// Holds every request until `open_at`.
    #[derive(Debug)]
    struct Gate {
        open_at: Instant,
        calls: AtomicUsize,
    }

    impl RequestPolicy for Gate {
        fn name(&self) -> &'static str {
            "gate"
        }
        fn on_request<'a>(
            &'a self,
            _req: &Request<'a>,
            _route: &RouteView<'a>,
            _state: &mut StepState,
            now: Instant,
        ) -> Verdict<'a> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if now < self.open_at {
                Verdict::WaitUntil(self.open_at)
            } else {
                Verdict::Continue
            }
        }
    }

    /// Refuses requests without an `x-key` header.
    #[derive(Debug)]
    struct NeedsKey;

    impl RequestPolicy for NeedsKey {
        fn name(&self) -> &'static str {
            "needs-key"
        }
        fn on_request<'a>(
            &'a self,
            req: &Request<'a>,
            _route: &RouteView<'a>,
            _state: &mut StepState,
            _now: Instant,
        ) -> Verdict<'a> {
            if req.headers.get("X-Key") == Some(b"open".as_slice()) {
                Verdict::Continue
            } else {
                Verdict::Respond(LocalResponse {
                    status: 403,
                    content_type: "text/plain",
                    body: b"denied\n",
                    location: None,
                    error: None,
                })
            }
        }
    }

    fn with_policies(s: &mut Sim, route: &str, policies: Vec<Arc<dyn RequestPolicy>>) {
        let snap = test_snapshot(ConnLimits::default(), &s.metrics)
            .with_route_policies(route, policies)
            .expect("route exists");
        s.cx.shared().store(Arc::new(snap));
    }

    #[test]
    fn a_waiting_policy_holds_the_request_and_its_body_until_its_instant() {
        let mut s = Sim::new(ConnLimits::default());
        let open_at = s.now + Duration::from_millis(30);
        let gate = Arc::new(Gate {
            open_at,
            calls: AtomicUsize::new(0),
        });
        with_policies(&mut s, "api", vec![gate.clone()]);
        s.send(b"POST /api/x HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5\r\n\r\nhel");
        assert!(s.connects.is_empty(), "forwarded before the policy let it");
        assert!(s.client.is_empty());
        assert_eq!(s.conn.deadline(), Some(open_at));
        // More body while waiting stays buffered, nothing is sent anywhere.
        s.send(b"lo");
        assert!(s.connects.is_empty());
        s.advance(Duration::from_millis(10));
        assert!(s.connects.is_empty());
        s.advance(Duration::from_millis(20));
        assert_eq!(s.connects, vec![endpoint(1)]);
        let up = s.upstream_text();
        assert!(up.starts_with("POST /api/x HTTP/1.1\r\n"), "{up}");
        assert!(up.ends_with("\r\n\r\nhello"), "{up}");
        s.reply(OK_5);
        let t = s.take_client();
        assert!(t.starts_with("HTTP/1.1 200 OK\r\n"), "{t}");
        assert!(t.ends_with("hello"), "{t}");
        assert_eq!(gate.calls.load(Ordering::Relaxed), 2);
        assert_eq!(s.closed, None);
        // The next request on the connection runs the pipeline afresh (the gate is open now).
        s.send(GET_API);
        assert_eq!(s.connects.len(), 2);
        assert_eq!(gate.calls.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_refusing_policy_answers_locally_drops_the_body_and_keeps_the_connection() {
        let mut s = Sim::new(ConnLimits::default());
        with_policies(&mut s, "api", vec![Arc::new(NeedsKey)]);
        s.send(b"POST /api/x HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5\r\n\r\nhello");
        let t = s.take_client();
        assert!(t.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{t}");
        assert!(t.ends_with("\r\n\r\ndenied\n"), "{t}");
        assert!(s.connects.is_empty());
        assert_eq!(s.closed, None);
        s.send(b"GET /api/y HTTP/1.1\r\nHost: app.example.com\r\nX-Key: open\r\n\r\n");
        assert_eq!(s.connects, vec![endpoint(1)]);
        // Other routes are not affected.
        s.reply(OK_5);
        s.take_client();
        s.send(b"GET / HTTP/1.1\r\nHost: anything\r\n\r\n");
        assert!(s.take_client().starts_with("HTTP/1.1 200 OK\r\n"));
    }

    #[test]
    fn a_request_whose_client_half_closed_while_waiting_is_still_answered() {
        let mut s = Sim::new(ConnLimits::default());
        let open_at = s.now + Duration::from_millis(5);
        with_policies(
            &mut s,
            "api",
            vec![Arc::new(Gate {
                open_at,
                calls: AtomicUsize::new(0),
            })],
        );
        s.send(GET_API);
        s.conn.on_downstream_eof(&mut s.cx, s.now);
        s.pump();
        assert_eq!(s.closed, None, "closed under a waiting request");
        s.advance(Duration::from_millis(5));
        assert_eq!(s.connects, vec![endpoint(1)]);
        s.reply(OK_5);
        let t = s.take_client();
        assert!(t.starts_with("HTTP/1.1 200 OK\r\n"), "{t}");
        assert!(t.contains("Connection: close\r\n"), "{t}");
        assert_eq!(s.closed, Some(true));
    }

    #[test]
    fn a_truncated_body_whose_client_left_while_waiting_closes_without_an_answer() {
        let mut s = Sim::new(ConnLimits::default());
        let open_at = s.now + Duration::from_millis(5);
        with_policies(
            &mut s,
            "api",
            vec![Arc::new(Gate {
                open_at,
                calls: AtomicUsize::new(0),
            })],
        );
        s.send(b"POST /api/x HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 50\r\n\r\nhel");
        s.conn.on_downstream_eof(&mut s.cx, s.now);
        s.pump();
        s.advance(Duration::from_millis(5));
        assert_eq!(s.closed, Some(false));
        assert!(!s.client_text().starts_with("HTTP/1.1 200"));
    }

    #[test]
    fn policies_are_refused_beyond_the_limit_and_for_unknown_routes() {
        let metrics = Metrics::new();
        let many: Vec<Arc<dyn RequestPolicy>> = (0..=crate::proxy::exchange::MAX_ROUTE_POLICIES)
            .map(|_| Arc::new(NeedsKey) as Arc<dyn RequestPolicy>)
            .collect();
        let err = test_snapshot(ConnLimits::default(), &metrics)
            .with_route_policies("api", many)
            .expect_err("too many");
        assert!(err.contains("route api"), "{err}");
        let err = test_snapshot(ConnLimits::default(), &metrics)
            .with_route_policies("nope", vec![Arc::new(NeedsKey)])
            .expect_err("unknown route");
        assert!(err.contains("nope"), "{err}");
    }
}
