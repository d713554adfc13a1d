//! The epoll driver on loopback: a small relay handler (connects to a test backend on the
//! client's first bytes, copies both ways through bounded buffers, releases the upstream as
//! reusable after a response line) against real backends on std threads.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

#[path = "support/tls_records.rs"]
mod tls_records;
use tls_records::flight_and_response_are_single_records;

use arc_gateway::proxy::driver::{DriverKind, Tuning};
use arc_gateway::proxy::io::{
    Action, ConnHandler, ConnInfo, ConnLimit, Interest, PoolKey, PoolLimits, UpstreamError,
};
use arc_gateway::proxy::listener::ListenerSpec;
use arc_gateway::proxy::tls::{
    self as arc_tls, CertOrigin, CertResolver, CertStore, LoadedCert, TlsAcceptor,
    TlsAcceptorConfig,
};
use arc_gateway::proxy::worker::{WorkerConfig, WorkerError, WorkerSet};

/// Tests run one at a time: the memory test reads the process RSS.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

const IO_TIMEOUT: Duration = Duration::from_secs(10);

// ---------- the relay handler ----------

struct Shared {
    backend: SocketAddr,
    limits: PoolLimits,
    /// A response ends with this byte: release the upstream as reusable.
    release_marker: Option<u8>,
    idle_timeout: Option<Duration>,
    /// Bound of each direction's buffer.
    cap: usize,
    max_buffered: AtomicUsize,
    connected_fresh: AtomicU64,
    connected_reused: AtomicU64,
    errors: Mutex<Vec<UpstreamError>>,
    /// (tls, sni) of every connection handed to a handler.
    infos: Mutex<Vec<(bool, Option<String>)>>,
}

impl Shared {
    fn new(backend: SocketAddr) -> Shared {
        Shared {
            backend,
            limits: PoolLimits {
                max_idle: 8,
                idle_timeout: Duration::from_secs(30),
                connect_timeout: Duration::from_secs(2),
            },
            release_marker: Some(b'\n'),
            idle_timeout: None,
            cap: 64 * 1024,
            max_buffered: AtomicUsize::new(0),
            connected_fresh: AtomicU64::new(0),
            connected_reused: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
            infos: Mutex::new(Vec::new()),
        }
    }
}

struct Cx {
    shared: Arc<Shared>,
}

#[derive(PartialEq)]
enum UpState {
    None,
    Connecting,
    Attached,
}

struct Relay {
    shared: Arc<Shared>,
    to_up: Vec<u8>,
    to_down: Vec<u8>,
    up: UpState,
    actions: VecDeque<Action>,
    closed: bool,
    last_activity: Instant,
}

impl Relay {
    fn note_buffered(&self) {
        let n = self.to_up.len().max(self.to_down.len());
        self.shared.max_buffered.fetch_max(n, Ordering::Relaxed);
    }

    fn close(&mut self, flush: bool) {
        if !self.closed {
            self.closed = true;
            self.actions.push_back(Action::CloseDownstream {
                flush,
                linger: true,
            });
        }
    }

    fn connect_if_needed(&mut self) {
        if self.up == UpState::None && !self.to_up.is_empty() && !self.closed {
            self.up = UpState::Connecting;
            self.actions.push_back(Action::ConnectUpstream {
                key: PoolKey {
                    endpoint: self.shared.backend,
                    upstream: Arc::from("test"),
                    tls: None,
                },
                limits: self.shared.limits,
            });
        }
    }
}

impl ConnHandler for Relay {
    type Cx = Cx;

    fn new(cx: &mut Cx, info: ConnInfo, now: Instant) -> Self {
        cx.shared
            .infos
            .lock()
            .unwrap()
            .push((info.tls, info.sni.map(String::from)));
        Relay {
            shared: Arc::clone(&cx.shared),
            to_up: Vec::new(),
            to_down: Vec::new(),
            up: UpState::None,
            actions: VecDeque::new(),
            closed: false,
            last_activity: now,
        }
    }

    fn on_downstream_data(&mut self, _cx: &mut Cx, data: &[u8], now: Instant) {
        self.last_activity = now;
        self.to_up.extend_from_slice(data);
        self.note_buffered();
        self.connect_if_needed();
    }

    fn on_downstream_eof(&mut self, _cx: &mut Cx, _now: Instant) {
        self.close(true);
    }

    fn on_downstream_error(&mut self, _cx: &mut Cx, _now: Instant) {
        self.closed = true;
    }

    fn on_upstream_connected(&mut self, _cx: &mut Cx, reused: bool, _now: Instant) {
        self.up = UpState::Attached;
        let counter = if reused {
            &self.shared.connected_reused
        } else {
            &self.shared.connected_fresh
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn on_upstream_data(&mut self, _cx: &mut Cx, data: &[u8], now: Instant) {
        self.last_activity = now;
        self.to_down.extend_from_slice(data);
        self.note_buffered();
        if let Some(marker) = self.shared.release_marker
            && data.last() == Some(&marker)
            && self.to_up.is_empty()
        {
            self.up = UpState::None;
            self.actions
                .push_back(Action::ReleaseUpstream { reusable: true });
        }
    }

    fn on_upstream_eof(&mut self, _cx: &mut Cx, _now: Instant) {
        self.up = UpState::None;
        self.actions
            .push_back(Action::ReleaseUpstream { reusable: false });
        self.close(true);
    }

    fn on_upstream_error(&mut self, _cx: &mut Cx, err: UpstreamError, _now: Instant) {
        self.shared.errors.lock().unwrap().push(err);
        self.up = UpState::None;
        self.to_down
            .extend_from_slice(format!("ERR {err:?}\n").as_bytes());
        self.close(true);
    }

    fn on_timer(&mut self, _cx: &mut Cx, now: Instant) {
        if let Some(t) = self.shared.idle_timeout
            && now >= self.last_activity + t
        {
            self.close(false);
        }
    }

    fn downstream_out(&self) -> &[u8] {
        &self.to_down
    }

    fn downstream_written(&mut self, _cx: &mut Cx, n: usize, now: Instant) {
        self.last_activity = now;
        self.to_down.drain(..n);
    }

    fn upstream_out(&self) -> &[u8] {
        if self.up == UpState::Attached {
            &self.to_up
        } else {
            &[]
        }
    }

    fn upstream_written(&mut self, _cx: &mut Cx, n: usize, _now: Instant) {
        self.to_up.drain(..n);
    }

    fn poll_action(&mut self) -> Option<Action> {
        let action = self.actions.pop_front();
        if action.is_none() {
            self.connect_if_needed();
            return self.actions.pop_front();
        }
        action
    }

    fn interest(&self) -> Interest {
        Interest {
            downstream_read: !self.closed && self.to_up.len() < self.shared.cap,
            upstream_read: self.up == UpState::Attached && self.to_down.len() < self.shared.cap,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        self.shared.idle_timeout.map(|t| self.last_activity + t)
    }

    fn is_closed(&self) -> bool {
        self.closed
    }
}

// ---------- harness ----------

struct Proxy {
    set: WorkerSet,
    addr: SocketAddr,
}

fn start_with(
    shared: &Arc<Shared>,
    workers: usize,
    limit: u64,
    tuning: Tuning,
) -> Result<Proxy, WorkerError> {
    start_full(shared, workers, limit, tuning, None)
}

fn start_full(
    shared: &Arc<Shared>,
    workers: usize,
    limit: u64,
    tuning: Tuning,
    tls: Option<Arc<TlsAcceptor>>,
) -> Result<Proxy, WorkerError> {
    start_driver(DriverKind::Epoll, shared, workers, limit, tuning, tls)
}

fn start_driver(
    driver: DriverKind,
    shared: &Arc<Shared>,
    workers: usize,
    limit: u64,
    tuning: Tuning,
    tls: Option<Arc<TlsAcceptor>>,
) -> Result<Proxy, WorkerError> {
    let config = WorkerConfig {
        driver,
        workers,
        listeners: vec![ListenerSpec {
            index: 0,
            name: Arc::from("test"),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            tls,
        }],
        conn_limit: Arc::new(ConnLimit::new(limit)),
        tuning,
        accept_paused: false,
    };
    let shared = Arc::clone(shared);
    let set = WorkerSet::spawn::<Relay, _>(config, move |_| Cx {
        shared: Arc::clone(&shared),
    })?;
    let addr = set.local_addrs()[0];
    Ok(Proxy { set, addr })
}

/// Tuning for tests: a short stop grace so a client a test still holds does not delay it.
fn tuning() -> Tuning {
    Tuning {
        stop_grace: Duration::from_millis(500),
        ..Tuning::default()
    }
}

fn start(shared: &Arc<Shared>, workers: usize) -> Proxy {
    start_with(shared, workers, 10_000, tuning()).unwrap()
}

/// Stops the workers; with no client left open, stopping is quick.
fn finish(proxy: Proxy) {
    let t0 = Instant::now();
    proxy.set.stop();
    proxy.set.join().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        t0.elapsed()
    );
}

fn client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Sends one request line and reads one response line.
fn request(reader: &mut BufReader<TcpStream>) -> String {
    reader.get_mut().write_all(b"REQ\n").unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// A backend answering each line `REQ` with `OK <connection number>`; optionally closing
/// each connection a moment after its first answer. Accepts for at most 30 s.
struct LineBackend {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
}

fn line_backend(close_after_first: Option<Duration>) -> LineBackend {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&accepted);
    thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            match listener.accept() {
                Ok((stream, _)) => {
                    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                    thread::spawn(move || serve_lines(stream, n, close_after_first));
                }
                Err(_) => thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    LineBackend { addr, accepted }
}

fn serve_lines(stream: TcpStream, n: u64, close_after_first: Option<Duration>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|len| len > 0) {
        if writer.write_all(format!("OK {n}\n").as_bytes()).is_err() {
            return;
        }
        line.clear();
        if let Some(delay) = close_after_first {
            thread::sleep(delay);
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// A backend echoing every byte back, one thread per connection.
fn echo_backend() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            match listener.accept() {
                Ok((stream, _)) => {
                    thread::spawn(move || {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
                        let mut w = stream.try_clone().unwrap();
                        let mut r = stream;
                        let _ = std::io::copy(&mut r, &mut w);
                    });
                }
                Err(_) => thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    addr
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

// ---------- tests ----------

#[test]
fn relays_many_concurrent_connections() {
    let _g = serial();
    let shared = Arc::new(Shared::new(echo_backend()));
    let proxy = start(&shared, 2);
    let clients: Vec<_> = (0..64u32)
        .map(|id| {
            let addr = proxy.addr;
            thread::spawn(move || {
                let mut s = client(addr);
                let payload: Vec<u8> = (0..32 * 1024u32).map(|i| (i ^ id) as u8).collect();
                let mut w = s.try_clone().unwrap();
                let data = payload.clone();
                let writer = thread::spawn(move || w.write_all(&data).unwrap());
                let mut got = vec![0u8; payload.len()];
                s.read_exact(&mut got).unwrap();
                writer.join().unwrap();
                assert!(got == payload, "client {id} got different bytes back");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(proxy.set.total(|s| &s.accepted), 64);
    wait_until("all connections closed", || {
        proxy.set.total(|s| &s.closed) == 64
    });
    assert_eq!(shared.connected_fresh.load(Ordering::Relaxed), 64);
    finish(proxy);
}

#[test]
fn slow_client_holds_back_a_fast_backend_with_bounded_memory() {
    let _g = serial();
    const TOTAL: usize = 64 * 1024 * 1024;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let backend = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let sent_by_backend = Arc::clone(&sent);
    let backend_thread = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        // Read the request, or closing with it unread would reset the connection.
        let mut go = [0u8; 3];
        s.read_exact(&mut go).unwrap();
        let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        let mut left = TOTAL;
        while left > 0 {
            let n = left.min(chunk.len());
            s.write_all(&chunk[..n]).unwrap();
            left -= n;
            sent_by_backend.fetch_add(n, Ordering::Relaxed);
        }
    });
    let mut shared = Shared::new(backend);
    shared.release_marker = None;
    let shared = Arc::new(shared);
    let proxy = start(&shared, 1);
    let rss_before = vm_rss_kib();

    let mut c = client(proxy.addr);
    c.write_all(b"GO\n").unwrap();
    // The client reads nothing for a while: the backend must stall far short of the total.
    thread::sleep(Duration::from_millis(700));
    let stalled_at = sent.load(Ordering::Relaxed);
    assert!(
        stalled_at < 32 * 1024 * 1024,
        "backend was not held back: {stalled_at} bytes sent"
    );
    let rss_stalled = vm_rss_kib();

    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0usize;
    let mut expect_next = 0usize;
    let mut rss_peak = rss_stalled;
    while got < TOTAL {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "EOF after {got} bytes");
        let ok = buf[..n]
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (((expect_next + i) % (64 * 1024)) % 251) as u8);
        assert!(ok, "corrupt bytes in {n} bytes after {got}");
        expect_next = (expect_next + n) % (64 * 1024);
        got += n;
        if got % (8 * 1024 * 1024) < n {
            rss_peak = rss_peak.max(vm_rss_kib());
        }
    }
    backend_thread.join().unwrap();
    // The backend closes; the relay flushes and closes the client.
    assert_eq!(c.read(&mut buf).unwrap(), 0);

    let max_buffered = shared.max_buffered.load(Ordering::Relaxed);
    assert!(
        max_buffered <= shared.cap + 64 * 1024,
        "handler buffered {max_buffered} bytes"
    );
    let growth_kib = rss_peak.saturating_sub(rss_before);
    assert!(
        growth_kib < 16 * 1024,
        "RSS grew by {growth_kib} KiB while relaying 64 MiB"
    );
    eprintln!(
        "backpressure: backend stalled at {stalled_at} bytes; handler max buffer {max_buffered}; RSS growth {growth_kib} KiB"
    );
    finish(proxy);
}

#[test]
fn pooled_upstream_is_reused_across_requests_and_connections() {
    let _g = serial();
    let backend = line_backend(None);
    let shared = Arc::new(Shared::new(backend.addr));
    let proxy = start(&shared, 1);

    let mut a = BufReader::new(client(proxy.addr));
    assert_eq!(request(&mut a), "OK 1\n");
    assert_eq!(request(&mut a), "OK 1\n", "same upstream connection");
    drop(a);
    let mut b = BufReader::new(client(proxy.addr));
    assert_eq!(
        request(&mut b),
        "OK 1\n",
        "reused by another client connection"
    );

    assert_eq!(backend.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(shared.connected_fresh.load(Ordering::Relaxed), 1);
    assert_eq!(shared.connected_reused.load(Ordering::Relaxed), 2);
    assert_eq!(proxy.set.total(|s| &s.pool_reused), 2);
    assert_eq!(proxy.set.total(|s| &s.upstream_connects), 1);
    drop(b);
    finish(proxy);
}

#[test]
fn idle_pooled_connection_closed_by_backend_is_dropped_and_replaced() {
    let _g = serial();
    let backend = line_backend(Some(Duration::from_millis(50)));
    let shared = Arc::new(Shared::new(backend.addr));
    let proxy = start(&shared, 1);

    let mut a = BufReader::new(client(proxy.addr));
    assert_eq!(request(&mut a), "OK 1\n");
    // The backend closes the now idle pooled connection; the worker notices while idle.
    wait_until("stale pooled connection dropped", || {
        proxy.set.total(|s| &s.pool_stale) == 1
    });
    assert_eq!(
        request(&mut a),
        "OK 2\n",
        "fresh connection, request succeeds"
    );
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(proxy.set.total(|s| &s.pool_reused), 0);
    assert!(shared.errors.lock().unwrap().is_empty());
    drop(a);
    finish(proxy);
}

#[test]
fn refused_connect_is_reported_as_upstream_error() {
    let _g = serial();
    let closed = {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        l.local_addr().unwrap()
    };
    let shared = Arc::new(Shared::new(closed));
    let proxy = start(&shared, 1);
    let mut c = BufReader::new(client(proxy.addr));
    assert_eq!(request(&mut c), "ERR Connect\n");
    let mut rest = String::new();
    assert_eq!(c.read_line(&mut rest).unwrap(), 0, "closed after the error");
    assert_eq!(*shared.errors.lock().unwrap(), vec![UpstreamError::Connect]);
    assert_eq!(proxy.set.total(|s| &s.upstream_connect_errors), 1);
    drop(c);
    finish(proxy);
}

#[test]
fn connect_to_a_full_backlog_times_out() {
    let _g = serial();
    // A loopback listener that never accepts, with its accept queue filled: further SYNs are
    // dropped, so connecting hangs.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .unwrap();
    sock.listen(0).unwrap();
    let full: SocketAddr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(s) = TcpStream::connect_timeout(&full, Duration::from_millis(200)) {
            fillers.push(s);
        }
    }
    let mut shared = Shared::new(full);
    shared.limits.connect_timeout = Duration::from_millis(300);
    let shared = Arc::new(shared);
    let proxy = start(&shared, 1);
    let mut c = BufReader::new(client(proxy.addr));
    let t0 = Instant::now();
    assert_eq!(request(&mut c), "ERR ConnectTimeout\n");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "timeout after {took:?}"
    );
    assert_eq!(
        *shared.errors.lock().unwrap(),
        vec![UpstreamError::ConnectTimeout]
    );
    drop(fillers);
    drop(c);
    finish(proxy);
}

#[test]
fn max_connections_refuses_extra_connections_without_harming_open_ones() {
    let _g = serial();
    let backend = line_backend(None);
    let shared = Arc::new(Shared::new(backend.addr));
    let proxy = start_with(&shared, 1, 2, tuning()).unwrap();

    let mut a = BufReader::new(client(proxy.addr));
    let mut b = BufReader::new(client(proxy.addr));
    assert_eq!(request(&mut a), "OK 1\n");
    assert!(request(&mut b).starts_with("OK "));

    let mut c = client(proxy.addr);
    let mut buf = [0u8; 16];
    let r = c.read(&mut buf);
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "third connection was served: {r:?}"
    );
    assert_eq!(proxy.set.total(|s| &s.refused), 1);

    assert!(
        request(&mut a).starts_with("OK "),
        "open connection unharmed"
    );
    assert!(
        request(&mut b).starts_with("OK "),
        "open connection unharmed"
    );

    drop(a);
    wait_until("slot given back", || proxy.set.total(|s| &s.closed) == 1);
    let mut d = BufReader::new(client(proxy.addr));
    assert!(request(&mut d).starts_with("OK "), "a freed slot is usable");
    assert_eq!(proxy.set.total(|s| &s.refused), 1);
    drop((b, c, d));
    finish(proxy);
}

#[test]
fn handler_deadline_fires_on_timer() {
    let _g = serial();
    let backend = line_backend(None);
    let mut shared = Shared::new(backend.addr);
    shared.idle_timeout = Some(Duration::from_millis(200));
    let shared = Arc::new(shared);
    let proxy = start(&shared, 1);

    let mut c = BufReader::new(client(proxy.addr));
    assert_eq!(
        request(&mut c),
        "OK 1\n",
        "activity pushes the deadline back"
    );
    let t0 = Instant::now();
    let mut rest = String::new();
    assert_eq!(
        c.read_line(&mut rest).unwrap_or(0),
        0,
        "closed by the idle timer"
    );
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_secs(3),
        "idle close after {took:?}"
    );
    drop(c);
    finish(proxy);
}

#[test]
fn stop_closes_listeners_lets_work_finish_then_cuts_idle_connections() {
    let _g = serial();
    let backend = line_backend(None);
    let shared = Arc::new(Shared::new(backend.addr));
    let tuning = Tuning {
        stop_grace: Duration::from_millis(400),
        ..Tuning::default()
    };
    let proxy = start_with(&shared, 2, 100, tuning).unwrap();
    let addr = proxy.addr;
    let mut idle = BufReader::new(client(addr));
    assert!(request(&mut idle).starts_with("OK "));

    let t0 = Instant::now();
    let stopper = proxy.set.stop_handle();
    stopper.stop();
    // Within the grace period, an open connection is still served.
    assert!(request(&mut idle).starts_with("OK "), "served during grace");
    let joined = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&joined);
    let set = proxy.set;
    let joiner = thread::spawn(move || {
        let r = set.join();
        flag.store(true, Ordering::SeqCst);
        r
    });
    let mut rest = String::new();
    assert_eq!(
        idle.read_line(&mut rest).unwrap_or(0),
        0,
        "cut after the grace"
    );
    joiner.join().unwrap().unwrap();
    assert!(joined.load(Ordering::SeqCst));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(5),
        "stopped after {took:?}"
    );
    assert!(TcpStream::connect(addr).is_err(), "listeners are closed");
}

#[test]
fn uring_worker_set_serves_the_same_relay() {
    let _g = serial();
    if arc_gateway::proxy::uring::probe().is_err() {
        eprintln!("skipped: io_uring is not available to this process");
        return;
    }
    let backend = line_backend(None);
    let shared = Arc::new(Shared::new(backend.addr));
    let proxy = start_driver(DriverKind::Uring, &shared, 2, 100, tuning(), None).unwrap();
    assert_eq!(proxy.set.driver(), DriverKind::Uring);
    for _ in 0..4 {
        let mut c = BufReader::new(client(proxy.addr));
        assert!(request(&mut c).starts_with("OK "));
        assert!(request(&mut c).starts_with("OK "));
    }
    wait_until("all connections closed", || {
        proxy.set.total(|s| &s.closed) == 4
    });
    assert_eq!(proxy.set.total(|s| &s.accepted), 4);
    assert_eq!(
        proxy.set.total(|s| &s.upstream_connects) + proxy.set.total(|s| &s.pool_reused),
        8,
        "one upstream checkout per request, fresh or pooled"
    );
    assert!(
        proxy.set.total(|s| &s.pool_reused) > 0,
        "the io_uring workers reuse pooled upstreams"
    );
    finish(proxy);
}

// ---------- TLS ----------

/// A test CA, a leaf for `proxy.test` under it, the acceptor serving it, and a client config
/// trusting the CA.
fn tls_fixture() -> (Arc<TlsAcceptor>, Arc<rustls::ClientConfig>) {
    tls_fixture_with(&TlsAcceptorConfig::default())
}

/// [`tls_fixture`] with the listener's TLS settings given.
fn tls_fixture_with(settings: &TlsAcceptorConfig) -> (Arc<TlsAcceptor>, Arc<rustls::ClientConfig>) {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "epoll test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["proxy.test".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let loaded = LoadedCert::from_pem(
        CertOrigin::Other("epoll test".into()),
        leaf.pem().as_bytes(),
        leaf_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let mut store = CertStore::builder(LoadedCert::generate_default().unwrap());
    store.add(&["proxy.test"], loaded).unwrap();
    let resolver = CertResolver::new(store.build());
    let acceptor = TlsAcceptor::new(settings, resolver).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(arc_tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(acceptor), Arc::new(client))
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls_client(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> TlsStream {
    let name = rustls::pki_types::ServerName::try_from("proxy.test").unwrap();
    let conn = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
    rustls::StreamOwned::new(conn, client(addr))
}

#[test]
fn tls_listener_terminates_tls_and_relays_plaintext() {
    let _g = serial();
    let backend = line_backend(None);
    let shared = Arc::new(Shared::new(backend.addr));
    let (acceptor, client_config) = tls_fixture();
    let proxy = start_full(&shared, 1, 100, tuning(), Some(acceptor)).unwrap();

    let mut c = BufReader::new(tls_client(proxy.addr, &client_config));
    c.get_mut().write_all(b"REQ\n").unwrap();
    let mut line = String::new();
    c.read_line(&mut line).unwrap();
    assert_eq!(line, "OK 1\n");
    c.get_mut().write_all(b"REQ\n").unwrap();
    line.clear();
    c.read_line(&mut line).unwrap();
    assert_eq!(line, "OK 1\n", "pooled upstream behind a TLS client");
    assert_eq!(
        *shared.infos.lock().unwrap(),
        vec![(true, Some("proxy.test".to_string()))]
    );
    // A clean TLS close from the client ends the connection.
    c.get_mut().conn.send_close_notify();
    c.get_mut().flush().unwrap();
    wait_until("TLS connection closed", || {
        proxy.set.total(|s| &s.closed) == 1
    });
    finish(proxy);
}

#[test]
fn tls_bulk_echo_round_trips_in_order() {
    let _g = serial();
    let shared = Arc::new(Shared::new(echo_backend()));
    let (acceptor, client_config) = tls_fixture();
    let proxy = start_full(&shared, 1, 100, tuning(), Some(acceptor)).unwrap();
    let mut c = tls_client(proxy.addr, &client_config);
    let chunk = 48 * 1024;
    let mut back = vec![0u8; chunk];
    for round in 0..40u32 {
        let data: Vec<u8> = (0..chunk as u32).map(|i| (i ^ round) as u8).collect();
        c.write_all(&data).unwrap();
        c.read_exact(&mut back).unwrap();
        assert!(back == data, "round {round} came back different");
    }
    drop(c);
    finish(proxy);
}

#[test]
fn failed_tls_handshake_closes_only_that_connection() {
    let _g = serial();
    let backend = line_backend(None);
    let shared = Arc::new(Shared::new(backend.addr));
    let (acceptor, client_config) = tls_fixture();
    let proxy = start_full(&shared, 1, 100, tuning(), Some(acceptor)).unwrap();

    let mut plain = client(proxy.addr);
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        got.first() == Some(&0x15) || got.is_empty(),
        "expected a TLS alert or nothing, got {got:?}"
    );
    assert!(
        shared.infos.lock().unwrap().is_empty(),
        "no handler was made"
    );

    let mut c = BufReader::new(tls_client(proxy.addr, &client_config));
    c.get_mut().write_all(b"REQ\n").unwrap();
    let mut line = String::new();
    c.read_line(&mut line).unwrap();
    assert_eq!(line, "OK 1\n", "the worker still serves TLS clients");
    drop(c);
    finish(proxy);
}

#[test]
fn tls_flight_and_response_leave_as_single_records() {
    let _g = serial();
    let backend = line_backend(None);
    let shared = Arc::new(Shared::new(backend.addr));
    let (acceptor, client_config) = tls_fixture_with(&TlsAcceptorConfig {
        session_cache_entries: 0,
        session_tickets: false,
        ..TlsAcceptorConfig::default()
    });
    let proxy = start_full(&shared, 1, 100, tuning(), Some(acceptor)).unwrap();
    flight_and_response_are_single_records(proxy.addr, &client_config);
    finish(proxy);
}
