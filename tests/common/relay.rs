//! What the io driver tests run the drivers with: a small TCP relay [`ConnHandler`] ([`Relay`],
//! configured and observed through [`RelayCx`]), a harness that starts N workers of a driver
//! through the driver entry contract ([`DriverEntry`] / [`DriverParams`], exactly as the worker
//! set does) and stops them, std-thread backends, and line clients.
//!
//! The relay connects to `RelayCx::backend` on the client's first bytes and copies both ways
//! through buffers bounded by `cap`; in line mode it releases the upstream as reusable after
//! each upstream line, so the driver's pool is exercised. Upstream errors are answered as
//! `ERR <error>\n`, an idle client as `TIMEOUT\n`, both followed by a flushed close (or, for
//! an idle client with `idle_flush: false`, closed at once without flushing).

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use arc_gateway::metrics::{Metrics, PoolGauges};
use arc_gateway::proxy::driver::{
    DriverEntry, DriverError, DriverKind, DriverParams, DriverStats, Tuning,
};
use arc_gateway::proxy::io::{
    Action, ConnHandler, ConnInfo, ConnLimit, Interest, PoolKey, PoolLimits, UpstreamError,
};
use arc_gateway::proxy::listener::{ListenerSpec, bind_all};
use arc_gateway::proxy::stop::StopHandle;
use arc_gateway::proxy::tls::TlsAcceptor;
use arc_gateway::proxy::worker::driver_entry;

use super::tls::{PROXY_NAME, TlsStream, tls_over};

/// Client and backend socket timeouts: a broken test fails instead of hanging.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Bytes buffered in either direction at which the relay stops wanting more, by default.
pub const CAP: usize = 64 * 1024;

// ---------------------------------------------------------------- the relay handler

/// `(tls, sni)` of every handler made, shared with the test.
pub type Infos = Arc<Mutex<Vec<(bool, Option<String>)>>>;

/// How every [`Relay`] of a worker behaves, and what the test reads back.
#[derive(Clone)]
pub struct RelayCx {
    pub backend: SocketAddr,
    pub limits: PoolLimits,
    /// Request/response mode: release the upstream as reusable after each upstream line.
    pub line_mode: bool,
    /// Close when the client half-closes (else keep relaying the response direction).
    pub close_on_eof: bool,
    /// Answer `TIMEOUT` and close after this long without activity (bytes from the client or
    /// the upstream, bytes written to the client).
    pub idle_timeout: Option<Duration>,
    /// When the idle timeout fires: answer `TIMEOUT` and close flushed (true), or close at
    /// once without flushing and without an answer (false).
    pub idle_flush: bool,
    /// Bytes buffered in either direction at which the handler stops wanting more.
    pub cap: usize,
    /// Every upstream error reported to a handler.
    pub errors: Arc<Mutex<Vec<UpstreamError>>>,
    /// Upstream connections handed over fresh / from the pool.
    pub fresh: Arc<AtomicU64>,
    pub reused: Arc<AtomicU64>,
    /// The most bytes a handler held in one direction.
    pub max_buffered: Arc<AtomicUsize>,
    /// `(tls, sni)` of every handler made.
    pub infos: Infos,
    /// Where the driver's pool publishes its idle counts.
    pub metrics: Arc<Metrics>,
}

impl RelayCx {
    /// A byte relay (no line mode) to `backend` with 64 KiB bounds.
    pub fn new(backend: SocketAddr) -> Self {
        RelayCx {
            backend,
            limits: PoolLimits {
                max_idle: 8,
                idle_timeout: Duration::from_secs(30),
                connect_timeout: Duration::from_secs(5),
            },
            line_mode: false,
            close_on_eof: true,
            idle_timeout: None,
            idle_flush: true,
            cap: CAP,
            errors: Arc::default(),
            fresh: Arc::default(),
            reused: Arc::default(),
            max_buffered: Arc::default(),
            infos: Arc::default(),
            metrics: Arc::default(),
        }
    }

    /// [`RelayCx::new`] in line mode.
    pub fn lines(backend: SocketAddr) -> Self {
        RelayCx {
            line_mode: true,
            ..RelayCx::new(backend)
        }
    }

    /// Idle pooled connections the drivers' pools report for the backend.
    pub fn idle(&self) -> i64 {
        self.metrics
            .pool_snapshot()
            .iter()
            .filter(|p| p.endpoint == self.backend)
            .map(|p| p.idle)
            .sum()
    }

    pub fn errors(&self) -> Vec<UpstreamError> {
        lock(&self.errors).clone()
    }

    pub fn infos(&self) -> Vec<(bool, Option<String>)> {
        lock(&self.infos).clone()
    }
}

/// Locks `m`, also after a panicking test thread poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(PartialEq)]
enum Up {
    None,
    Connecting,
    Connected,
}

/// One relayed connection.
pub struct Relay {
    cx: RelayCx,
    to_up: Vec<u8>,
    to_down: Vec<u8>,
    actions: VecDeque<Action>,
    up: Up,
    closed: bool,
    down_eof: bool,
    up_eof: bool,
    deadline: Option<Instant>,
}

impl Relay {
    fn close(&mut self) {
        self.close_with(true);
    }

    fn close_with(&mut self, flush: bool) {
        if !self.closed {
            self.closed = true;
            self.actions.push_back(Action::CloseDownstream {
                flush,
                linger: true,
            });
        }
    }

    /// Any activity (client bytes, upstream bytes, bytes written to the client) pushes the idle
    /// deadline back.
    fn active(&mut self, now: Instant) {
        if !self.closed {
            self.deadline = self.cx.idle_timeout.map(|t| now + t);
        }
    }

    fn note_buffered(&self) {
        let n = self.to_up.len().max(self.to_down.len());
        self.cx.max_buffered.fetch_max(n, Ordering::Relaxed);
    }
}

impl ConnHandler for Relay {
    type Cx = RelayCx;

    fn pool_gauges(cx: &mut RelayCx) -> Option<PoolGauges> {
        cx.metrics.register_worker().pool.take()
    }

    fn new(cx: &mut RelayCx, info: ConnInfo, now: Instant) -> Self {
        lock(&cx.infos).push((info.tls, info.sni.map(String::from)));
        Relay {
            cx: cx.clone(),
            to_up: Vec::new(),
            to_down: Vec::new(),
            actions: VecDeque::new(),
            up: Up::None,
            closed: false,
            down_eof: false,
            up_eof: false,
            deadline: cx.idle_timeout.map(|t| now + t),
        }
    }

    fn on_downstream_data(&mut self, _cx: &mut RelayCx, data: &[u8], now: Instant) {
        self.to_up.extend_from_slice(data);
        self.note_buffered();
        self.active(now);
        if self.up == Up::None && !self.closed {
            self.up = Up::Connecting;
            self.actions.push_back(Action::ConnectUpstream {
                key: PoolKey {
                    endpoint: self.cx.backend,
                    upstream: Arc::from("test"),
                    tls: None,
                },
                limits: self.cx.limits,
            });
        }
    }

    fn on_downstream_eof(&mut self, _cx: &mut RelayCx, _now: Instant) {
        self.down_eof = true;
        if self.up == Up::None || self.cx.close_on_eof {
            self.close();
        }
    }

    fn on_downstream_error(&mut self, _cx: &mut RelayCx, _now: Instant) {
        self.closed = true;
    }

    fn on_upstream_connected(&mut self, _cx: &mut RelayCx, reused: bool, _now: Instant) {
        self.up = Up::Connected;
        let counter = if reused {
            &self.cx.reused
        } else {
            &self.cx.fresh
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn on_upstream_data(&mut self, _cx: &mut RelayCx, data: &[u8], now: Instant) {
        self.active(now);
        self.to_down.extend_from_slice(data);
        self.note_buffered();
        if self.cx.line_mode && self.to_down.ends_with(b"\n") && self.to_up.is_empty() {
            self.actions
                .push_back(Action::ReleaseUpstream { reusable: true });
            self.up = Up::None;
        }
    }

    fn on_upstream_eof(&mut self, _cx: &mut RelayCx, _now: Instant) {
        self.up_eof = true;
        self.close();
    }

    fn on_upstream_error(&mut self, _cx: &mut RelayCx, err: UpstreamError, _now: Instant) {
        lock(&self.cx.errors).push(err);
        self.up = Up::None;
        self.to_down
            .extend_from_slice(format!("ERR {err:?}\n").as_bytes());
        self.close();
    }

    fn on_timer(&mut self, _cx: &mut RelayCx, now: Instant) {
        if self.deadline.is_some_and(|d| d <= now) {
            self.deadline = None;
            if self.cx.idle_flush {
                self.to_down.extend_from_slice(b"TIMEOUT\n");
                self.close();
            } else {
                self.close_with(false);
            }
        }
    }

    fn downstream_out(&self) -> &[u8] {
        &self.to_down
    }

    fn downstream_written(&mut self, _cx: &mut RelayCx, n: usize, now: Instant) {
        self.active(now);
        self.to_down.drain(..n.min(self.to_down.len()));
    }

    fn upstream_out(&self) -> &[u8] {
        if self.up == Up::Connected {
            &self.to_up
        } else {
            &[]
        }
    }

    fn upstream_written(&mut self, _cx: &mut RelayCx, n: usize, _now: Instant) {
        self.to_up.drain(..n.min(self.to_up.len()));
    }

    fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn interest(&self) -> Interest {
        Interest {
            downstream_read: !self.closed && !self.down_eof && self.to_up.len() < self.cx.cap,
            upstream_read: !self.closed
                && self.up == Up::Connected
                && !self.up_eof
                && self.to_down.len() < self.cx.cap,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn is_closed(&self) -> bool {
        self.closed
    }
}

// ---------------------------------------------------------------- harness

/// Tuning of the driver tests: a small ring, 16 KiB receive buffers, a short stop grace so a
/// client a test still holds does not delay it.
pub fn tuning() -> Tuning {
    Tuning {
        uring_entries: 256,
        read_buffer: 16 * 1024,
        stop_grace: Duration::from_millis(300),
        close_flush_timeout: Duration::from_secs(2),
        ..Tuning::default()
    }
}

/// What a test starts: `workers` worker threads of one driver on one loopback listener.
pub struct Setup {
    pub workers: usize,
    pub max_connections: u64,
    pub tuning: Tuning,
    pub tls: Option<Arc<TlsAcceptor>>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            workers: 1,
            max_connections: 10_000,
            tuning: tuning(),
            tls: None,
        }
    }
}

/// Running driver workers on one loopback address.
pub struct Proxy {
    pub addr: SocketAddr,
    stop: StopHandle,
    stats: Vec<Arc<DriverStats>>,
    threads: Vec<JoinHandle<Result<(), DriverError>>>,
}

/// Starts `kind`'s workers with [`Setup::default`] relaying with `cx`.
pub fn start(kind: DriverKind, cx: RelayCx) -> Proxy {
    start_with(kind, cx, Setup::default())
}

/// Starts `setup.workers` threads, each running `kind`'s [`DriverEntry`] on its own
/// `SO_REUSEPORT` socket of one loopback listener, as the worker set does.
pub fn start_with(kind: DriverKind, cx: RelayCx, setup: Setup) -> Proxy {
    let entry: DriverEntry<RelayCx> =
        driver_entry::<Relay>(kind).expect("the driver is part of this build");
    let spec = ListenerSpec {
        index: 0,
        name: Arc::from("test"),
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: setup.tls,
    };
    let workers = setup.workers.max(1);
    let bound = bind_all(&[spec], workers).expect("bind the listener");
    let addr = bound[0][0].spec.addr;
    let (stop, signals) = StopHandle::new(workers).expect("stop signals");
    let conn_limit = Arc::new(ConnLimit::new(setup.max_connections));
    let mut stats = Vec::new();
    let mut threads = Vec::new();
    for (worker, (listeners, signal)) in bound.into_iter().zip(signals).enumerate() {
        let s = Arc::new(DriverStats::default());
        stats.push(Arc::clone(&s));
        let params = DriverParams {
            worker,
            listeners,
            conn_limit: Arc::clone(&conn_limit),
            stop: signal,
            cx: cx.clone(),
            tuning: setup.tuning,
            stats: s,
        };
        let thread = thread::Builder::new()
            .name(format!("test-worker-{worker}"))
            .spawn(move || entry(params))
            .expect("spawn a worker thread");
        threads.push(thread);
    }
    Proxy {
        addr,
        stop,
        stats,
        threads,
    }
}

impl Proxy {
    /// A driver counter summed over the workers.
    pub fn stat(&self, f: impl Fn(&DriverStats) -> &AtomicU64) -> u64 {
        self.stats
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .sum()
    }

    pub fn stop_handle(&self) -> &StopHandle {
        &self.stop
    }

    /// Stops the workers and returns how long they took to return (each `Ok`).
    pub fn shutdown(mut self) -> Duration {
        let t0 = Instant::now();
        self.stop.stop();
        for th in std::mem::take(&mut self.threads) {
            while !th.is_finished() {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "driver did not stop"
                );
                thread::sleep(Duration::from_millis(5));
            }
            th.join().expect("driver thread").expect("driver result");
        }
        t0.elapsed()
    }

    /// Stops the workers; with no client left open, stopping is quick.
    pub fn finish(self) {
        let took = self.shutdown();
        assert!(took < Duration::from_secs(2), "stop took {took:?}");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.stop();
    }
}

// ---------------------------------------------------------------- clients

/// A plain client connection with timeouts.
pub fn client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to proxy");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s
}

/// A TLS client of [`PROXY_NAME`] at `addr`.
pub fn tls_client(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> TlsStream {
    tls_over(client(addr), config, PROXY_NAME)
}

/// Reads one line (up to 256 bytes) byte by byte, so nothing after it is consumed; what
/// arrived before an end of stream or error otherwise.
pub fn read_line(s: &mut impl Read) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while out.len() < 256 {
        match s.read(&mut b) {
            Ok(1) => {
                out.push(b[0]);
                if b[0] == b'\n' {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `line` and reads one line back.
pub fn exchange(s: &mut (impl Read + Write), line: &str) -> String {
    s.write_all(line.as_bytes()).expect("send");
    read_line(s)
}

// ---------------------------------------------------------------- backends

/// A std-thread backend: one thread per connection running `serve`, counting connections.
/// Accepts until dropped (at most 120 s).
pub struct Backend {
    pub addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Backend {
    /// Serves each connection with `serve(stream, connection number from 1)`.
    pub fn start<F>(serve: F) -> Backend
    where
        F: Fn(TcpStream, usize) + Send + Sync + 'static,
    {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr");
        let conns = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, st, serve) = (Arc::clone(&conns), Arc::clone(&stop), Arc::new(serve));
        thread::spawn(move || {
            let t0 = Instant::now();
            while !st.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(120) {
                match l.accept() {
                    Ok((s, _)) => {
                        let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(IO_TIMEOUT));
                        let _ = s.set_write_timeout(Some(IO_TIMEOUT));
                        let serve = Arc::clone(&serve);
                        thread::spawn(move || serve(s, n));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Backend { addr, conns, stop }
    }

    /// Echoes every byte back.
    pub fn echo() -> Backend {
        Backend::start(|mut s, _| {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        })
    }

    /// Answers each line with `OK <connection number>`; closes after the first answer when
    /// `close_after_reply`.
    pub fn lines(close_after_reply: bool) -> Backend {
        Backend::start(move |s, n| {
            let Ok(mut w) = s.try_clone() else { return };
            let mut r = BufReader::new(s);
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|k| k > 0) {
                line.clear();
                if w.write_all(format!("OK {n}\n").as_bytes()).is_err() || close_after_reply {
                    return;
                }
            }
        })
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A loopback listener whose accept queue is full: further SYNs are dropped, so a connect
/// hangs. Keep the returned socket and connections alive while the test needs it. `None` when
/// this kernel completes the handshake anyway.
pub fn full_backlog_listener() -> Option<(socket2::Socket, Vec<TcpStream>, SocketAddr)> {
    use socket2::{Domain, Socket, Type};
    let l = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    l.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).ok()?;
    l.listen(0).ok()?;
    let addr = l.local_addr().ok()?.as_socket()?;
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => fillers.push(s),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Some((l, fillers, addr)),
            Err(_) => return None,
        }
    }
    None
}
