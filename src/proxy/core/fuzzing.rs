//! Fuzz entry point for the whole connection state machine: a [`Conn`] driven through the
//! [`ConnHandler`] trait by a simulated driver that follows the driver contract
//! (`crate::proxy::io`), with a schedule decoded from the fuzz input — client bytes at
//! arbitrary splits, upstream bytes, upstream connect / error / EOF, downstream EOF and errors,
//! partial writes on both sides, drain, and virtual-time advances.
//!
//! [`conn`] must never panic on any input; it panics only when the handler breaks its side of
//! the contract:
//! - an action that is illegal in the current state (a second `ConnectUpstream` while one is
//!   attached or pending, a reusable `ReleaseUpstream` with none attached or before the
//!   connect finished or with request bytes still unsent, any action after `CloseDownstream`);
//! - `CloseDownstream` without `is_closed()` after it;
//! - buffers beyond their bound while the driver honours `interest()` (back-pressure);
//! - interest in reading the upstream with none connected;
//! - a connection that neither closes nor settles (no deadline) when time advances past every
//!   deadline.
//!
//! The simulated driver itself only does what a real one may do: upstream bytes are written
//! and delivered only once the upstream is connected, a side is read only while `interest()`
//! asks for it, and nothing is delivered after the handler closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::{Conn, ConnLimits, OUT_HIGH_WATER, Snapshot, UpstreamSpec, WorkerCx};
use crate::metrics::Metrics;
use crate::proxy::http1::Limits;
use crate::proxy::io::{Action, ConnHandler, ConnInfo, PoolLimits, UpstreamError};
use crate::routing::{self, Backend, HostRules, PathType, RouteModel, RouteRule};

/// Longest raw piece a single schedule step delivers.
const MAX_PIECE: usize = 127;

/// Most schedule steps taken from one input (keeps each run fast).
const MAX_STEPS: usize = 400;

/// Request fragments a schedule step may send instead of raw bytes (so the fuzzer reaches deep
/// states quickly); raw bytes come from the input itself.
const CLIENT_PIECES: &[&[u8]] = &[
    b"GET /api/x HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: any\r\n\r\n",
    b"POST /api/p HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5\r\n\r\n",
    b"hello",
    b"POST /api/c HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"5\r\nhello\r\n",
    b"0\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"PUT /api/e HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: empty.example.com\r\n\r\n",
    b"HEAD /r HTTP/1.1\r\nHost: old.example.com\r\n\r\n",
    b"GET /api/c HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
    b"GET /h10 HTTP/1.0\r\n\r\n",
    b"GET /api/x HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"\r\n",
    b"GET / HTTP/1.1\r\n",
];

/// Response fragments for the upstream side.
const UPSTREAM_PIECES: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"3\r\nabc\r\n",
    b"0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\nuntil close",
    b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    b"HTTP/1.1 500 Oops\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"xyz",
];

/// Virtual-time steps (ms) a schedule step may take: around the grace, drain and timeouts of
/// [`limits_for`].
const ADVANCES_MS: &[u64] = &[0, 1, 49, 51, 999, 1001, 2_000, 5_001, 10_001, 60_001];

/// Reads the fuzz input as a schedule.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let end = (self.pos + n).min(self.data.len());
        let out = self.data.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        out
    }
}

/// The model the connection routes with: upstream routes, an upstream without endpoints
/// (503), a redirect, a direct response and a TLS host with `ssl_redirect`.
fn model() -> RouteModel {
    let up = || Backend::upstream("app");
    let mut secure = RouteRule::new("secure", "/", PathType::Prefix, up());
    secure.ssl_redirect = true;
    RouteModel {
        hosts: vec![
            HostRules {
                host: Some("app.example.com".into()),
                rules: vec![
                    RouteRule::new("api", "/api", PathType::Prefix, up()),
                    RouteRule::new("ws", "/ws", PathType::Exact, up()),
                ],
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
            HostRules {
                host: Some("secure.example.com".into()),
                tls: true,
                rules: vec![secure],
                ..Default::default()
            },
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
                    RouteRule::new("h10", "/h10", PathType::Prefix, up()),
                ],
                ..Default::default()
            },
        ],
        default_backend: None,
    }
}

/// Connection limits picked by the first input byte (small limits and short timeouts too).
fn limits_for(sel: u8) -> ConnLimits {
    let base = ConnLimits::default();
    match sel % 4 {
        0 => base,
        1 => ConnLimits {
            codec: Limits {
                max_head: 256,
                max_headers: 8,
                max_body: Some(16),
            },
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(2),
            max_requests_per_connection: Some(3),
            max_connection_age: Some(Duration::from_secs(10)),
        },
        2 => ConnLimits {
            max_requests_per_connection: Some(1),
            ..base
        },
        _ => ConnLimits {
            codec: Limits {
                max_head: 4096,
                max_headers: 32,
                max_body: Some(1 << 16),
            },
            idle_timeout: Duration::from_secs(5),
            max_connection_age: Some(Duration::from_secs(2)),
            ..base
        },
    }
}

fn spec(name: &str, endpoints: Vec<SocketAddr>) -> UpstreamSpec {
    UpstreamSpec {
        name: Arc::from(name),
        endpoints,
        pool: PoolLimits {
            max_idle: 4,
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(1),
        },
        read_timeout: Duration::from_secs(5),
        send_timeout: Duration::from_secs(5),
        tls: None,
    }
}

/// The upstream leg as the simulated driver sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Up {
    None,
    Connecting,
    Connected,
}

/// A driver that follows the contract, checking the handler's side of it.
struct Driver {
    _metrics: Metrics,
    cx: WorkerCx,
    conn: Conn,
    now: Instant,
    up: Up,
    /// The client's EOF was delivered (a read returns 0 once).
    client_eof: bool,
    /// The current upstream's EOF was delivered.
    upstream_eof: bool,
    /// A `CloseDownstream` was seen.
    close_seen: bool,
    /// The client reads everything at once; else only what a write step lets through.
    client_reads: bool,
    /// The upstream accepts every byte at once; else only what a write step lets through.
    upstream_accepts: bool,
    /// Bound on either output buffer while reads follow `interest()`.
    out_bound: usize,
}

impl Driver {
    fn new(limits: ConnLimits, tls: bool, now: Instant) -> Driver {
        let metrics = Metrics::new();
        let table = routing::compile(&model(), 1).table;
        let snapshot = Snapshot::new(
            table,
            vec![
                spec(
                    "app",
                    vec![
                        SocketAddr::from(([10, 9, 0, 1], 80)),
                        SocketAddr::from(([10, 9, 0, 2], 80)),
                    ],
                ),
                spec("empty", vec![]),
            ],
            limits,
        )
        .with_route_ids(|n| metrics.routes().intern(n));
        let shared = Arc::new(ArcSwap::from_pointee(snapshot));
        let mut cx = WorkerCx::new(shared, metrics.register_worker(), 7);
        let info = ConnInfo {
            peer: SocketAddr::from(([192, 0, 2, 7], 50000)),
            local: SocketAddr::from(([127, 0, 0, 1], 8080)),
            listener: 0,
            tls,
            sni: None,
        };
        let conn = Conn::new(&mut cx, info, now);
        Driver {
            _metrics: metrics,
            cx,
            conn,
            now,
            up: Up::None,
            client_eof: false,
            upstream_eof: false,
            close_seen: false,
            client_reads: true,
            upstream_accepts: true,
            out_bound: OUT_HIGH_WATER + 2 * limits.codec.max_head + 4096,
        }
    }

    fn closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// Carries out the actions and writes what the peers accept, until nothing moves; then
    /// checks the state invariants.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut progress = false;
            while let Some(a) = self.conn.poll_action() {
                progress = true;
                assert!(!self.close_seen, "action after CloseDownstream: {a:?}");
                match a {
                    Action::ConnectUpstream { .. } => {
                        assert_eq!(self.up, Up::None, "ConnectUpstream with one attached");
                        self.up = Up::Connecting;
                        self.upstream_eof = false;
                    }
                    Action::ReleaseUpstream { reusable } => {
                        // After a failure the driver has dropped the upstream already and the
                        // handler's release is a no-op for it; only a *reusable* release of
                        // nothing would be a bug.
                        assert!(
                            self.up != Up::None || !reusable,
                            "reusable ReleaseUpstream with none attached"
                        );
                        if reusable {
                            assert_eq!(self.up, Up::Connected, "reusable before connected");
                            assert!(
                                self.conn.upstream_out().is_empty(),
                                "reusable release with unsent request bytes"
                            );
                        }
                        self.up = Up::None;
                    }
                    Action::CloseDownstream { .. } => {
                        self.close_seen = true;
                        assert!(self.conn.is_closed(), "CloseDownstream but not is_closed()");
                    }
                }
            }
            if self.closed() {
                // The driver flushes at most what is pending and frees the connection; it
                // makes no further callbacks.
                return;
            }
            if self.up == Up::Connected && self.upstream_accepts {
                let n = self.conn.upstream_out().len();
                if n > 0 {
                    self.conn.upstream_written(&mut self.cx, n, self.now);
                    progress = true;
                }
            }
            if self.client_reads {
                let n = self.conn.downstream_out().len();
                if n > 0 {
                    self.conn.downstream_written(&mut self.cx, n, self.now);
                    progress = true;
                }
            }
            if !progress {
                self.check();
                return;
            }
        }
        panic!("no quiescence");
    }

    /// Invariants that hold between callbacks.
    fn check(&self) {
        if self.closed() {
            return;
        }
        let interest = self.conn.interest();
        assert!(
            !interest.upstream_read || self.up == Up::Connected,
            "upstream read interest with the upstream {:?}",
            self.up
        );
        assert!(
            self.conn.downstream_out().len() <= self.out_bound,
            "downstream output {} over its bound {}",
            self.conn.downstream_out().len(),
            self.out_bound
        );
        assert!(
            self.conn.upstream_out().len() <= self.out_bound,
            "upstream output {} over its bound {}",
            self.conn.upstream_out().len(),
            self.out_bound
        );
    }

    /// Moves virtual time on by `d`, firing the timer when its deadline passed.
    fn advance(&mut self, d: Duration) {
        self.now += d;
        if self.conn.deadline().is_some_and(|t| t <= self.now) {
            self.conn.on_timer(&mut self.cx, self.now);
        }
        self.pump();
    }

    /// One schedule step; false when the input is used up.
    fn step(&mut self, input: &mut Input<'_>) -> bool {
        let Some(op) = input.byte() else {
            return false;
        };
        let arg = input.byte().unwrap_or(0);
        let now = self.now;
        match op % 14 {
            0..=2 => {
                if self.client_eof || !self.conn.interest().downstream_read {
                    return true;
                }
                let piece: Vec<u8> = if arg & 0x80 != 0 {
                    CLIENT_PIECES[usize::from(arg & 0x7f) % CLIENT_PIECES.len()].to_vec()
                } else {
                    input.bytes(usize::from(arg) % (MAX_PIECE + 1)).to_vec()
                };
                if !piece.is_empty() {
                    self.conn.on_downstream_data(&mut self.cx, &piece, now);
                }
            }
            3 | 4 => {
                if self.up != Up::Connected
                    || self.upstream_eof
                    || !self.conn.interest().upstream_read
                {
                    return true;
                }
                let piece: Vec<u8> = if arg & 0x80 != 0 {
                    UPSTREAM_PIECES[usize::from(arg & 0x7f) % UPSTREAM_PIECES.len()].to_vec()
                } else {
                    input.bytes(usize::from(arg) % (MAX_PIECE + 1)).to_vec()
                };
                if !piece.is_empty() {
                    self.conn.on_upstream_data(&mut self.cx, &piece, now);
                }
            }
            5 => {
                if self.up != Up::Connecting {
                    return true;
                }
                self.up = Up::Connected;
                self.conn
                    .on_upstream_connected(&mut self.cx, arg & 1 != 0, now);
            }
            6 => {
                if self.up == Up::None {
                    return true;
                }
                let err = match (self.up, arg % 4) {
                    (Up::Connecting, 0) => UpstreamError::Connect,
                    (Up::Connecting, 1) => UpstreamError::ConnectTimeout,
                    (_, 2) => UpstreamError::Tls,
                    _ => UpstreamError::Io,
                };
                // The driver drops a failed connection; the handler picks a new one if any.
                self.up = Up::None;
                self.conn.on_upstream_error(&mut self.cx, err, now);
            }
            7 => {
                // EOF is what a read returns: only while reading, once.
                if self.up != Up::Connected
                    || self.upstream_eof
                    || !self.conn.interest().upstream_read
                {
                    return true;
                }
                self.upstream_eof = true;
                self.conn.on_upstream_eof(&mut self.cx, now);
            }
            8 => {
                if arg & 3 == 0 {
                    self.conn.on_downstream_error(&mut self.cx, now);
                } else {
                    if self.client_eof || !self.conn.interest().downstream_read {
                        return true;
                    }
                    self.client_eof = true;
                    self.conn.on_downstream_eof(&mut self.cx, now);
                }
            }
            9 => {
                // The client reads only part of what is pending, then stops reading.
                self.client_reads = arg & 0x80 != 0;
                let pending = self.conn.downstream_out().len();
                let n = (usize::from(arg & 0x7f) * 61).min(pending);
                if n > 0 {
                    self.conn.downstream_written(&mut self.cx, n, now);
                }
            }
            10 => {
                self.upstream_accepts = arg & 0x80 != 0;
                if self.up == Up::Connected {
                    let pending = self.conn.upstream_out().len();
                    let n = (usize::from(arg & 0x7f) * 61).min(pending);
                    if n > 0 {
                        self.conn.upstream_written(&mut self.cx, n, now);
                    }
                }
            }
            11 | 12 => {
                let ms = ADVANCES_MS[usize::from(arg) % ADVANCES_MS.len()];
                self.advance(Duration::from_millis(ms));
                return true;
            }
            _ => {
                if !self.cx.is_draining() {
                    Conn::begin_drain(&mut self.cx);
                }
                self.conn.on_drain(&mut self.cx, now);
            }
        }
        self.pump();
        true
    }

    /// Both peers now read and accept everything and the driver times out a pending connect;
    /// time jumps to each deadline in turn. The connection must close, or settle with no
    /// deadline, within a bounded number of timer rounds.
    fn settle(&mut self) {
        self.client_reads = true;
        self.upstream_accepts = true;
        self.pump();
        for _ in 0..64 {
            if self.closed() {
                return;
            }
            if self.up == Up::Connecting {
                self.now += Duration::from_secs(1);
                self.up = Up::None;
                self.conn
                    .on_upstream_error(&mut self.cx, UpstreamError::ConnectTimeout, self.now);
                self.pump();
                continue;
            }
            let Some(t) = self.conn.deadline() else {
                return;
            };
            self.now = self.now.max(t) + Duration::from_millis(1);
            self.conn.on_timer(&mut self.cx, self.now);
            self.pump();
        }
        panic!(
            "the connection neither closed nor settled after 64 timer rounds (upstream {:?}, deadline in {:?})",
            self.up,
            self.conn
                .deadline()
                .map(|t| t.saturating_duration_since(self.now))
        );
    }
}

/// Fuzz target: the connection state machine. The first byte picks the limits and whether the
/// connection arrived over TLS; the rest is the schedule (see the module doc). `base` is the
/// virtual clock's start (the caller reads the real clock once; this room never does).
pub fn conn(data: &[u8], base: Instant) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let mut d = Driver::new(limits_for(sel), sel & 4 != 0, base);
    d.pump();
    let mut input = Input { data: rest, pos: 0 };
    for _ in 0..MAX_STEPS {
        if d.closed() || !d.step(&mut input) {
            break;
        }
    }
    d.settle();
}

/// Seed schedules (first byte: the selector): ordinary exchanges, pipelining, timeouts,
/// upgrades, upstream failures and drain.
pub fn seeds() -> Vec<Vec<u8>> {
    // Op bytes (`op % 14`): 0 client piece, 3 upstream piece, 5 connected, 6 upstream error,
    // 7 upstream EOF, 8 client EOF/error, 9 client partial read, 10 upstream partial write,
    // 11 advance, 13 drain. An argument with the high bit picks a canned piece.
    let c = |i: u8| [0u8, 0x80 | i];
    let u = |i: u8| [3u8, 0x80 | i];
    let connected = [5u8, 0];
    let adv = |i: u8| [11u8, i];
    let cat = |parts: &[&[u8]]| -> Vec<u8> { parts.concat() };
    vec![
        cat(&[&[0], &c(0), &connected, &u(0), &c(1), &adv(9)]),
        cat(&[
            &[1],
            &c(2),
            &connected,
            &c(3),
            &u(0),
            &c(0),
            &connected,
            &u(1),
            &u(2),
            &u(3),
        ]),
        cat(&[&[0], &c(4), &c(5), &connected, &c(6), &u(4), &u(0), &adv(3)]),
        cat(&[
            &[0],
            &c(7),
            &connected,
            &u(5),
            &[0, 5],
            b"abcde",
            &[3, 3],
            b"xyz",
            &[7, 0],
        ]),
        cat(&[&[2], &c(8), &connected, &u(4), &c(3), &u(0), &[8, 1]]),
        cat(&[&[0], &c(0), &[6, 0], &connected, &[6, 3], &adv(5)]),
        cat(&[
            &[3],
            &c(9),
            &c(10),
            &c(12),
            &connected,
            &u(7),
            &[7, 0],
            &adv(6),
        ]),
        cat(&[
            &[0],
            &c(0),
            &c(0),
            &c(0),
            &[9, 1],
            &connected,
            &u(0),
            &u(0),
            &[13, 0],
            &adv(5),
        ]),
        cat(&[&[1], &[0, 20], b"GET /api/x HTTP/1.1\r\n", &adv(4), &adv(7)]),
        cat(&[
            &[4],
            &[0, 0x80 | 1],
            &c(13),
            &c(11),
            &connected,
            &[10, 3],
            &u(8),
        ]),
        cat(&[
            &[0],
            &c(2),
            &connected,
            &[10, 1],
            &u(9),
            &u(10),
            &u(11),
            &[8, 0],
        ]),
        cat(&[&[0], &c(1), &adv(1), &c(1), &adv(2), &adv(9), &adv(9)]),
    ]
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    /// The seeds plus deterministic mutations (schedules are byte strings: any mutation is a
    /// valid schedule).
    #[test]
    fn fuzz_conn_seeds_and_mutations() {
        let base = Instant::now();
        let seeds = super::seeds();
        let dict: &[&[u8]] = &[
            &[0, 0x80],
            &[3, 0x80],
            &[5, 0],
            &[11, 9],
            &[13, 0],
            &[9, 0],
            &[10, 0],
        ];
        crate::fuzz_smoke::run(&seeds, dict, 20_000, |data| super::conn(data, base));
    }
}
