//! The io_uring driver on loopback: a small TCP relay handler (the `ConnHandler` below) between
//! std-thread clients and std-thread backends.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use arc_gateway::proxy::io::{
    Action, ConnHandler, ConnInfo, ConnLimit, Interest, PoolKey, PoolLimits, UpstreamError,
};
use arc_gateway::proxy::tls::{
    self as arc_tls, CertOrigin, CertResolver, CertStore, LoadedCert, TlsAcceptor,
    TlsAcceptorConfig,
};
use arc_gateway::proxy::uring;

#[path = "support/tls_records.rs"]
mod tls_records;
use arc_gateway::proxy::driver::{DriverError, DriverParams, DriverStats, Tuning};
use arc_gateway::proxy::listener::{BoundListener, ListenerSpec, bind_listener};
use arc_gateway::proxy::stop::StopHandle;
use tls_records::flight_and_response_are_single_records;

const CAP: usize = 64 * 1024;

/// Tests that move many megabytes take this so the memory figure of the back-pressure test
/// is not blurred by another bulk test running at the same time.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}
const IO_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- the relay handler

/// `(tls, sni)` of every handler made, shared with the test.
type Infos = Arc<Mutex<Vec<(bool, Option<String>)>>>;

#[derive(Clone)]
struct RelayCx {
    backend: SocketAddr,
    limits: PoolLimits,
    /// Request/response mode: release the upstream as reusable after each upstream line.
    line_mode: bool,
    /// Close when the client half-closes (else keep relaying the response direction).
    close_on_eof: bool,
    /// Answer `TIMEOUT` and close when the client sends nothing for this long.
    idle_timeout: Option<Duration>,
    errors: Arc<Mutex<Vec<UpstreamError>>>,
    reused: Arc<AtomicUsize>,
    /// `(tls, sni)` of every handler made.
    infos: Infos,
    /// Where the driver's pool publishes its idle counts.
    metrics: Arc<arc_gateway::metrics::Metrics>,
    /// Bytes buffered in either direction at which the handler stops wanting more.
    cap: usize,
}

impl RelayCx {
    fn new(backend: SocketAddr) -> Self {
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
            errors: Arc::default(),
            reused: Arc::default(),
            infos: Arc::default(),
            metrics: Arc::default(),
            cap: CAP,
        }
    }

    /// Idle pooled connections the driver's pool reports for the backend.
    fn idle(&self) -> i64 {
        self.metrics
            .pool_snapshot()
            .iter()
            .find(|p| p.endpoint == self.backend)
            .map_or(0, |p| p.idle)
    }
}

#[derive(PartialEq)]
enum Up {
    None,
    Connecting,
    Connected,
}

struct Relay {
    to_up: Vec<u8>,
    to_down: Vec<u8>,
    actions: VecDeque<Action>,
    up: Up,
    closed: bool,
    down_eof: bool,
    up_eof: bool,
    line_mode: bool,
    close_on_eof: bool,
    idle_timeout: Option<Duration>,
    deadline: Option<Instant>,
    cap: usize,
}

impl Relay {
    fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            self.actions.push_back(Action::CloseDownstream {
                flush: true,
                linger: true,
            });
        }
    }
}

impl ConnHandler for Relay {
    type Cx = RelayCx;

    fn pool_gauges(cx: &mut RelayCx) -> Option<arc_gateway::metrics::PoolGauges> {
        cx.metrics.register_worker().pool.take()
    }

    fn new(cx: &mut RelayCx, info: ConnInfo, now: Instant) -> Self {
        cx.infos
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((info.tls, info.sni.map(String::from)));
        Relay {
            to_up: Vec::new(),
            to_down: Vec::new(),
            actions: VecDeque::new(),
            up: Up::None,
            closed: false,
            down_eof: false,
            up_eof: false,
            line_mode: cx.line_mode,
            close_on_eof: cx.close_on_eof,
            idle_timeout: cx.idle_timeout,
            deadline: cx.idle_timeout.map(|t| now + t),
            cap: cx.cap,
        }
    }

    fn on_downstream_data(&mut self, cx: &mut RelayCx, data: &[u8], now: Instant) {
        self.to_up.extend_from_slice(data);
        self.deadline = self.idle_timeout.map(|t| now + t);
        if self.up == Up::None {
            self.up = Up::Connecting;
            self.actions.push_back(Action::ConnectUpstream {
                key: PoolKey {
                    endpoint: cx.backend,
                    upstream: Arc::from("test"),
                    tls: None,
                },
                limits: cx.limits,
            });
        }
    }

    fn on_downstream_eof(&mut self, _cx: &mut RelayCx, _now: Instant) {
        self.down_eof = true;
        if self.up == Up::None || self.close_on_eof {
            self.close();
        }
    }

    fn on_downstream_error(&mut self, _cx: &mut RelayCx, _now: Instant) {
        self.closed = true;
    }

    fn on_upstream_connected(&mut self, cx: &mut RelayCx, reused: bool, _now: Instant) {
        self.up = Up::Connected;
        if reused {
            cx.reused.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_upstream_data(&mut self, _cx: &mut RelayCx, data: &[u8], _now: Instant) {
        self.to_down.extend_from_slice(data);
        if self.line_mode && self.to_down.ends_with(b"\n") && self.to_up.is_empty() {
            self.actions
                .push_back(Action::ReleaseUpstream { reusable: true });
            self.up = Up::None;
        }
    }

    fn on_upstream_eof(&mut self, _cx: &mut RelayCx, _now: Instant) {
        self.up_eof = true;
        self.close();
    }

    fn on_upstream_error(&mut self, cx: &mut RelayCx, err: UpstreamError, _now: Instant) {
        cx.errors.lock().expect("lock").push(err);
        self.to_down
            .extend_from_slice(format!("ERR {err:?}\n").as_bytes());
        self.close();
    }

    fn on_timer(&mut self, _cx: &mut RelayCx, now: Instant) {
        if self.deadline.is_some_and(|d| d <= now) {
            self.deadline = None;
            self.to_down.extend_from_slice(b"TIMEOUT\n");
            self.close();
        }
    }

    fn downstream_out(&self) -> &[u8] {
        &self.to_down
    }

    fn downstream_written(&mut self, _cx: &mut RelayCx, n: usize, _now: Instant) {
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
            downstream_read: !self.closed && !self.down_eof && self.to_up.len() < self.cap,
            upstream_read: !self.closed
                && self.up == Up::Connected
                && !self.up_eof
                && self.to_down.len() < self.cap,
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

struct Proxy {
    addr: SocketAddr,
    stop: StopHandle,
    stats: Arc<DriverStats>,
    thread: Option<JoinHandle<Result<(), DriverError>>>,
}

fn test_opts() -> Tuning {
    Tuning {
        uring_entries: 256,
        read_buffer: 16 * 1024,
        stop_grace: Duration::from_millis(300),
        close_flush_timeout: Duration::from_secs(2),
        ..Tuning::default()
    }
}

fn start_proxy(cx: RelayCx, max_connections: u64, tuning: Tuning) -> Proxy {
    start_proxy_on(cx, max_connections, tuning, None)
}

/// Starts one io_uring worker on a fresh loopback listener (TLS when `tls` is set).
fn start_proxy_on(
    cx: RelayCx,
    max_connections: u64,
    tuning: Tuning,
    tls: Option<Arc<TlsAcceptor>>,
) -> Proxy {
    let spec = ListenerSpec {
        index: 0,
        name: Arc::from("test"),
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls,
    };
    let socket = bind_listener(&spec).expect("bind");
    let addr = socket.local_addr().expect("addr");
    let (stop, mut signals) = StopHandle::new(1).expect("eventfd");
    let signal = signals.pop().expect("one signal");
    let stats = Arc::new(DriverStats::default());
    let params = DriverParams {
        worker: 0,
        listeners: vec![BoundListener { spec, socket }],
        conn_limit: Arc::new(ConnLimit::new(max_connections)),
        stop: signal,
        cx,
        tuning,
        stats: Arc::clone(&stats),
    };
    let thread = thread::spawn(move || uring::run::<Relay>(params));
    Proxy {
        addr,
        stop,
        stats,
        thread: Some(thread),
    }
}

impl Proxy {
    fn stat(&self, f: impl Fn(&DriverStats) -> &AtomicU64) -> u64 {
        f(&self.stats).load(Ordering::Relaxed)
    }

    /// Stops the driver and returns how long `run` took to return.
    fn shutdown(mut self) -> Duration {
        let t0 = Instant::now();
        self.stop.stop();
        let th = self.thread.take().expect("running");
        while !th.is_finished() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "driver did not stop"
            );
            thread::sleep(Duration::from_millis(5));
        }
        th.join().expect("driver thread").expect("driver result");
        t0.elapsed()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.stop();
    }
}

fn client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to proxy");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(10), "timed out: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// A std-thread backend: one thread per connection running `serve`, counting connections.
struct Backend {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Backend {
    fn start<F>(serve: F) -> Backend
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
                        let n = c.fetch_add(1, Ordering::Relaxed) + 1;
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

    fn echo() -> Backend {
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
    fn lines(close_after_reply: bool) -> Backend {
        Backend::start(move |s, n| {
            let mut w = s.try_clone().expect("clone");
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

    fn connections(&self) -> usize {
        self.conns.load(Ordering::Relaxed)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_line(s: &mut TcpStream) -> String {
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

fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

// ---------------------------------------------------------------- tests

#[test]
fn probe_reports_support_on_this_kernel() {
    let support = uring::probe().expect("io_uring is available on the test kernel");
    let text = support.to_string();
    assert!(text.starts_with("io_uring: available"), "{text}");
    // Linux 6.18 has all three; the driver relies on them being detected when present.
    assert!(support.single_issuer && support.defer_taskrun, "{text}");
    assert!(support.incremental_buffers, "{text}");
}

#[test]
fn many_concurrent_connections_are_relayed() {
    let _heavy = heavy();
    let backend = Backend::echo();
    let proxy = start_proxy(RelayCx::new(backend.addr), 10_000, test_opts());
    let clients: Vec<_> = (0..64u32)
        .map(|i| {
            let addr = proxy.addr;
            thread::spawn(move || {
                let mut s = client(addr);
                let payload: Vec<u8> = (0..200_000u32).map(|k| (k * 31 + i) as u8).collect();
                let mut r = s.try_clone().expect("clone");
                let expect = payload.clone();
                let reader = thread::spawn(move || {
                    let mut got = vec![0u8; expect.len()];
                    r.read_exact(&mut got).expect("echo back");
                    got == expect
                });
                s.write_all(&payload).expect("send");
                let ok = reader.join().expect("reader");
                s.shutdown(Shutdown::Both).ok();
                ok
            })
        })
        .collect();
    for c in clients {
        assert!(c.join().expect("client thread"), "payload came back intact");
    }
    assert_eq!(proxy.stat(|s| &s.accepted), 64);
    assert_eq!(backend.connections(), 64);
    wait_for("all connections closed", || {
        proxy.stat(|s| &s.accepted) == proxy.stat(|s| &s.closed)
    });
    proxy.shutdown();
}

/// `n` clients each send `req <i>` through a proxy whose upstream receive group is 4 buffers
/// of 64 KiB; the backend holds every answer until all `n` requests are in, then writes the
/// `len`-byte answers back to back (`parallel`: all at once, one writer thread per
/// connection). Checks every answer and returns how many receives ran out of buffers.
fn burst_of_answers(n: usize, len: usize, parallel: bool) -> u64 {
    let _heavy = heavy();
    let waiting: Arc<Mutex<Vec<(TcpStream, usize)>>> = Arc::default();
    let w = Arc::clone(&waiting);
    let backend = Backend::start(move |s, _| {
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let mut line = String::new();
        if r.read_line(&mut line).is_err() {
            return;
        }
        let Ok(i) = line.trim().trim_start_matches("req ").parse::<usize>() else {
            return;
        };
        let all = {
            let mut w = w.lock().expect("lock");
            w.push((s, i));
            if w.len() < n {
                return;
            }
            std::mem::take(&mut *w)
        };
        // The last request is in: every answer goes out.
        if parallel {
            let writers: Vec<_> = all
                .into_iter()
                .map(|(mut s, i)| thread::spawn(move || s.write_all(&response_bytes(i, len))))
                .collect();
            for w in writers {
                let _ = w.join();
            }
        } else {
            for (mut s, i) in all {
                let _ = s.write_all(&response_bytes(i, len));
            }
        }
    });
    let tuning = Tuning {
        read_buffer: 64 * 1024,
        ..test_opts()
    };
    let proxy = start_proxy(RelayCx::new(backend.addr), 10_000, tuning);
    let clients: Vec<_> = (0..n)
        .map(|i| {
            let addr = proxy.addr;
            thread::spawn(move || {
                let mut s = client(addr);
                s.write_all(format!("req {i}\n").as_bytes()).expect("send");
                let mut got = vec![0u8; len];
                s.read_exact(&mut got).expect("response");
                got == response_bytes(i, len)
            })
        })
        .collect();
    for c in clients {
        assert!(
            c.join().expect("client thread"),
            "response came back intact"
        );
    }
    assert_eq!(backend.connections(), n);
    let dry = proxy.stat(|s| &s.recv_no_buffer);
    proxy.shutdown();
    dry
}

/// 64 upstream responses of 2 KiB arrive in one burst against an upstream receive group of 4
/// buffers of 64 KiB. With incremental buffer consumption the small receives share buffers, so
/// no multishot receive runs out of buffers (without it, every receive beyond the fourth in a
/// batch ended with ENOBUFS and was armed again), and every byte arrives intact.
#[test]
fn response_burst_from_many_upstreams_shares_receive_buffers() {
    let support = uring::probe().expect("io_uring is available on the test kernel");
    assert!(support.incremental_buffers, "{support}");
    assert_eq!(
        burst_of_answers(64, 2048, false),
        0,
        "multishot receives ran out of provided buffers"
    );
}

/// 64 upstream responses of 96 KiB arrive at once (written in parallel) against an upstream
/// receive group of 4 buffers of 64 KiB: most multishot receives run out of buffers. Each such
/// socket waits for the turn's buffers to come back and is armed again a group's worth at a
/// time, so about one receive runs dry per buffer's worth of data (about 100 here). Armed again
/// at once, every starved socket failed again on every turn until its turn came: up to 700
/// wasted receives in this test, depending on how far the data piled up. Every byte arrives
/// intact.
#[test]
fn receives_that_run_out_of_buffers_wait_for_them_instead_of_storming() {
    const N: usize = 64;
    const RESPONSE: usize = 96 * 1024;
    let dry = burst_of_answers(N, RESPONSE, true);
    eprintln!("{N} bursts of {RESPONSE} bytes: {dry} receives ran out of buffers");
    assert!(
        dry <= 3 * N as u64,
        "{dry} receives ran out of buffers for {N} responses: starved sockets were armed \
         again before buffers came back"
    );
}

/// A handler that stops wanting bytes while the peer sends none (here after every message,
/// until it is passed on) costs no cancel and no re-arm: the receive stays armed. Bytes that
/// do arrive meanwhile are held back, the receive is cancelled then, and everything is
/// delivered once the handler wants it again: 100 echo rounds and then 200 messages sent back
/// to back all come back intact.
#[test]
fn a_paused_receive_is_cancelled_only_when_bytes_arrive() {
    const ROUNDS: u32 = 100;
    let _heavy = heavy();
    let backend = Backend::echo();
    let cx = RelayCx {
        cap: 1,
        ..RelayCx::new(backend.addr)
    };
    let proxy = start_proxy(cx, 100, test_opts());
    let mut s = client(proxy.addr);
    for r in 0..ROUNDS {
        // 1 KiB: receives fill the 16 KiB buffers exactly, so none is split in two completions
        // at a buffer's end (the second of which would meet the paused handler).
        let payload: Vec<u8> = (0..1024u32).map(|k| (k * 7 + r) as u8).collect();
        s.write_all(&payload).expect("send");
        let mut got = vec![0u8; payload.len()];
        s.read_exact(&mut got).expect("echo");
        assert!(got == payload, "round {r} came back intact");
    }
    let paused = proxy.stat(|st| &st.recv_paused);
    eprintln!("{ROUNDS} echo rounds with a handler that pauses after each: {paused} cancels");
    // Cancelling at each pause cost a cancel on each side in every round (2 * ROUNDS). A
    // message split over two completions could still meet the paused handler now and then.
    assert!(
        paused <= u64::from(ROUNDS) / 10,
        "{paused} receives cancelled in {ROUNDS} rounds where no bytes arrived while paused"
    );
    // Back to back: bytes arrive while the handler is paused, are held back and delivered.
    let mut w = s.try_clone().expect("clone");
    let all: Vec<u8> = (0..200 * 1500u32)
        .map(|k| (k * 13 + k / 1500) as u8)
        .collect();
    let expect = all.clone();
    let writer = thread::spawn(move || {
        for chunk in all.chunks(1500) {
            w.write_all(chunk).expect("send");
        }
    });
    let mut got = vec![0u8; expect.len()];
    s.read_exact(&mut got).expect("echo of the stream");
    writer.join().expect("writer");
    assert!(got == expect, "the stream came back intact");
    assert!(
        proxy.stat(|st| &st.recv_paused) > paused,
        "bytes arrived while the handler was paused, and its receive was cancelled"
    );
    drop(s);
    proxy.shutdown();
}

/// Echoes `rounds` exchanges on one new connection and checks every byte; the connection is
/// then closed.
fn echo_round_trips(addr: SocketAddr, tag: u32, rounds: u32) -> bool {
    let mut s = client(addr);
    for r in 0..rounds {
        let payload: Vec<u8> = (0..3000u32).map(|k| (k * 7 + tag * 13 + r) as u8).collect();
        if s.write_all(&payload).is_err() {
            return false;
        }
        let mut got = vec![0u8; payload.len()];
        if s.read_exact(&mut got).is_err() || got != payload {
            return false;
        }
    }
    s.shutdown(Shutdown::Both).is_ok()
}

/// Every socket (accepted and upstream) goes into the fixed file table, and slots are reused
/// safely: 200 connections one after another (each new socket takes the slot index the last
/// closed one left) exchange data intact. A slot reused before the previous socket's fixed
/// close ran would put the new connection's operations on the old socket.
#[test]
fn sockets_use_fixed_file_slots_and_reuse_them_safely() {
    let _heavy = heavy();
    let backend = Backend::echo();
    let proxy = start_proxy(RelayCx::new(backend.addr), 10_000, test_opts());
    for i in 0..200u32 {
        assert!(
            echo_round_trips(proxy.addr, i, 2),
            "connection {i} echoed intact"
        );
    }
    wait_for("all connections closed", || {
        proxy.stat(|s| &s.closed) == 200
    });
    let sockets = proxy.stat(|s| &s.accepted) + proxy.stat(|s| &s.upstream_connects);
    assert_eq!(proxy.stat(|s| &s.accepted), 200);
    assert_eq!(
        proxy.stat(|s| &s.fixed_files),
        sockets,
        "every socket was registered"
    );
    proxy.shutdown();
}

/// With a fixed file table of 4 slots, 32 concurrent connections (64 sockets) are relayed
/// intact: sockets beyond the table use their fds, side by side with registered ones.
#[test]
fn sockets_beyond_the_fixed_file_table_use_their_fds() {
    let _heavy = heavy();
    let backend = Backend::echo();
    let tuning = Tuning {
        uring_fixed_files: 4,
        ..test_opts()
    };
    let proxy = start_proxy(RelayCx::new(backend.addr), 10_000, tuning);
    let clients: Vec<_> = (0..32u32)
        .map(|i| {
            let addr = proxy.addr;
            thread::spawn(move || echo_round_trips(addr, i, 20))
        })
        .collect();
    for c in clients {
        assert!(c.join().expect("client thread"), "echoed intact");
    }
    let sockets = proxy.stat(|s| &s.accepted) + proxy.stat(|s| &s.upstream_connects);
    let fixed = proxy.stat(|s| &s.fixed_files);
    assert!(
        fixed >= 4 && fixed < sockets,
        "{fixed} of {sockets} sockets registered"
    );
    wait_for("all connections closed", || {
        proxy.stat(|s| &s.accepted) == proxy.stat(|s| &s.closed)
    });
    proxy.shutdown();
}

/// `len` bytes that differ per `i` and per position.
fn response_bytes(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|k| (k * 7 + i * 13) as u8).collect()
}

#[test]
fn slow_client_is_back_pressured_with_bounded_memory() {
    let _heavy = heavy();
    const TOTAL: u64 = 64 * 1024 * 1024;
    let sent = Arc::new(AtomicU64::new(0));
    let sent2 = Arc::clone(&sent);
    let backend = Backend::start(move |mut s, _| {
        let mut first = [0u8; 3];
        if s.read_exact(&mut first).is_err() {
            return;
        }
        let chunk: Vec<u8> = (0..64 * 1024).map(|k| (k % 251) as u8).collect();
        let mut left = TOTAL;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if s.write_all(&chunk[..n]).is_err() {
                return;
            }
            left -= n as u64;
            sent2.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    let proxy = start_proxy(RelayCx::new(backend.addr), 100, test_opts());
    let rss0 = rss_kib();
    let mut s = client(proxy.addr);
    s.write_all(b"go\n").expect("send");
    // Do not read for a while: the backend must stall on full buffers.
    thread::sleep(Duration::from_millis(1500));
    let stalled_at = sent.load(Ordering::Relaxed);
    thread::sleep(Duration::from_millis(500));
    let later = sent.load(Ordering::Relaxed);
    assert!(stalled_at > 0, "backend started sending");
    assert!(
        later < TOTAL / 2,
        "backend pushed {later} bytes into a client that reads nothing: not back-pressured"
    );
    assert!(
        later - stalled_at < 4 * 1024 * 1024,
        "backend kept sending while stalled ({stalled_at} -> {later})"
    );
    let rss_stalled = rss_kib();
    // Now read everything and check it.
    let mut got = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let mut pos = 0u64;
    let t0 = Instant::now();
    while got < TOTAL && t0.elapsed() < Duration::from_secs(60) {
        let n = s.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            assert_eq!(b, ((pos % (64 * 1024)) % 251) as u8, "byte {pos}");
            pos += 1;
        }
        got += n as u64;
    }
    assert_eq!(got, TOTAL, "all bytes arrived");
    let rss1 = rss_kib();
    eprintln!(
        "back-pressure: backend stalled at {stalled_at} bytes; RSS {rss0} KiB -> {rss_stalled} \
         KiB stalled -> {rss1} KiB after 64 MiB"
    );
    // The whole body never sits in the proxy (other tests run concurrently, hence the slack).
    assert!(
        rss1.saturating_sub(rss0) < 48 * 1024,
        "RSS grew by {} KiB",
        rss1 - rss0
    );
    drop(s);
    proxy.shutdown();
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn pooled_upstream_connection_is_reused() {
    let backend = Backend::lines(false);
    let mut cx = RelayCx::new(backend.addr);
    cx.line_mode = true;
    let reused = Arc::clone(&cx.reused);
    let gauges = cx.clone();
    let proxy = start_proxy(cx, 100, test_opts());
    let mut s = client(proxy.addr);
    s.write_all(b"one\n").expect("send");
    assert_eq!(read_line(&mut s), "OK 1\n");
    // The release is processed with the response; give the parked receive time to cancel.
    thread::sleep(Duration::from_millis(50));
    s.write_all(b"two\n").expect("send");
    assert_eq!(read_line(&mut s), "OK 1\n", "same backend connection");
    // A new downstream connection reuses it too.
    thread::sleep(Duration::from_millis(50));
    let mut s2 = client(proxy.addr);
    s2.write_all(b"three\n").expect("send");
    assert_eq!(read_line(&mut s2), "OK 1\n");
    assert_eq!(backend.connections(), 1, "backend saw one connection");
    assert_eq!(reused.load(Ordering::Relaxed), 2);
    assert_eq!(proxy.stat(|s| &s.pool_reused), 2);
    assert_eq!(proxy.stat(|s| &s.upstream_connects), 1);
    wait_for("the pool gauge shows the idle connection", || {
        gauges.idle() == 1
    });
    drop((s, s2));
    proxy.shutdown();
}

#[test]
fn stale_pooled_connection_is_detected_and_replaced() {
    let backend = Backend::lines(true);
    let mut cx = RelayCx::new(backend.addr);
    cx.line_mode = true;
    let errors = Arc::clone(&cx.errors);
    let gauges = cx.clone();
    let proxy = start_proxy(cx, 100, test_opts());
    let mut s = client(proxy.addr);
    s.write_all(b"one\n").expect("send");
    assert_eq!(read_line(&mut s), "OK 1\n");
    // The backend closed its side after answering: the armed idle receive sees it.
    wait_for("stale connection dropped", || {
        proxy.stat(|s| &s.pool_stale) == 1
    });
    wait_for("the pool gauge drops the stale connection", || {
        gauges.idle() == 0
    });
    s.write_all(b"two\n").expect("send");
    assert_eq!(
        read_line(&mut s),
        "OK 2\n",
        "a fresh backend connection served it"
    );
    assert!(errors.lock().expect("lock").is_empty(), "no request failed");
    assert_eq!(backend.connections(), 2);
    assert_eq!(proxy.stat(|s| &s.pool_reused), 0);
    drop(s);
    proxy.shutdown();
}

#[test]
fn refused_connect_is_an_upstream_error() {
    let cx = RelayCx::new(closed_port());
    let errors = Arc::clone(&cx.errors);
    let proxy = start_proxy(cx, 100, test_opts());
    let mut s = client(proxy.addr);
    s.write_all(b"x\n").expect("send");
    assert_eq!(read_line(&mut s), "ERR Connect\n");
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest).expect("eof"),
        0,
        "closed after flush"
    );
    assert_eq!(*errors.lock().expect("lock"), vec![UpstreamError::Connect]);
    assert_eq!(proxy.stat(|s| &s.upstream_connect_errors), 1);
    proxy.shutdown();
}

/// A loopback listener whose accept queue is full: further SYNs are dropped, so a connect
/// hangs. Returns None if this kernel completes the handshake anyway.
fn full_backlog_listener() -> Option<(socket2::Socket, Vec<TcpStream>, SocketAddr)> {
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

#[test]
fn connect_timeout_is_an_upstream_error() {
    let Some((_listener, _fillers, addr)) = full_backlog_listener() else {
        eprintln!("skipped: the kernel accepted every connect to a full backlog");
        return;
    };
    let mut cx = RelayCx::new(addr);
    cx.limits.connect_timeout = Duration::from_millis(300);
    let errors = Arc::clone(&cx.errors);
    let proxy = start_proxy(cx, 100, test_opts());
    let mut s = client(proxy.addr);
    let t0 = Instant::now();
    s.write_all(b"x\n").expect("send");
    assert_eq!(read_line(&mut s), "ERR ConnectTimeout\n");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "timed out after {took:?}"
    );
    assert_eq!(
        *errors.lock().expect("lock"),
        vec![UpstreamError::ConnectTimeout]
    );
    proxy.shutdown();
}

#[test]
fn max_connections_refuses_extra_connections_only() {
    let backend = Backend::echo();
    let proxy = start_proxy(RelayCx::new(backend.addr), 2, test_opts());
    let mut a = client(proxy.addr);
    let mut b = client(proxy.addr);
    for s in [&mut a, &mut b] {
        s.write_all(b"ping\n").expect("send");
        assert_eq!(read_line(s), "ping\n");
    }
    let mut c = client(proxy.addr);
    let mut buf = [0u8; 8];
    match c.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("third connection was served: {other:?}"),
    }
    assert_eq!(proxy.stat(|s| &s.refused), 1);
    assert_eq!(proxy.stat(|s| &s.accepted), 2);
    for s in [&mut a, &mut b] {
        s.write_all(b"again\n").expect("send");
        assert_eq!(read_line(s), "again\n", "existing connections unharmed");
    }
    // Closing one frees a slot.
    drop(a);
    wait_for("slot released", || proxy.stat(|s| &s.closed) == 1);
    let mut d = client(proxy.addr);
    d.write_all(b"late\n").expect("send");
    assert_eq!(read_line(&mut d), "late\n");
    drop((b, c, d));
    proxy.shutdown();
}

#[test]
fn half_close_keeps_the_response_direction_open() {
    let backend = Backend::start(|mut s, _| {
        let mut req = [0u8; 5];
        if s.read_exact(&mut req).is_ok() {
            thread::sleep(Duration::from_millis(150));
            let _ = s.write_all(b"world");
        }
    });
    let mut cx = RelayCx::new(backend.addr);
    cx.close_on_eof = false;
    let proxy = start_proxy(cx, 100, test_opts());
    let mut s = client(proxy.addr);
    s.write_all(b"hello").expect("send");
    s.shutdown(Shutdown::Write).expect("half close");
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read");
    assert_eq!(got, b"world");
    proxy.shutdown();
}

#[test]
fn graceful_stop_closes_listener_and_connections() {
    let backend = Backend::echo();
    let proxy = start_proxy(RelayCx::new(backend.addr), 100, test_opts());
    let addr = proxy.addr;
    let mut s = client(addr);
    s.write_all(b"ping\n").expect("send");
    assert_eq!(read_line(&mut s), "ping\n");
    let took = proxy.shutdown();
    // The open connection is closed at the end of the (300 ms) drain.
    assert!(took < Duration::from_secs(3), "stop took {took:?}");
    let mut buf = [0u8; 4];
    assert!(
        matches!(s.read(&mut buf), Ok(0) | Err(_)),
        "connection closed"
    );
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
        "listener closed"
    );
}

#[test]
fn idle_stop_is_prompt() {
    let proxy = start_proxy(RelayCx::new(closed_port()), 100, test_opts());
    thread::sleep(Duration::from_millis(50));
    let took = proxy.shutdown();
    assert!(took < Duration::from_millis(500), "stop took {took:?}");
}

#[test]
fn flushed_close_lingers_so_unread_client_bytes_do_not_reset_the_response() {
    let _heavy = heavy();
    let proxy = start_proxy(RelayCx::new(closed_port()), 100, test_opts());
    let mut s = client(proxy.addr);
    let mut w = s.try_clone().expect("clone");
    // The request plus bytes the proxy never asks for: closing with them unread would reset.
    let writer = thread::spawn(move || {
        let mut req = b"x\n".to_vec();
        req.resize(8 * 1024 * 1024, b'y');
        let _ = w.write_all(&req);
    });
    assert_eq!(read_line(&mut s), "ERR Connect\n");
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest)
            .expect("clean end of stream, not a reset"),
        0
    );
    writer.join().expect("writer");
    proxy.shutdown();
}

/// Rough figures for the closing note (run with `--ignored --nocapture`, release build).
#[test]
#[ignore]
fn measure_throughput_and_pooled_request_rate() {
    let _heavy = heavy();
    const TOTAL: u64 = 1024 * 1024 * 1024;
    let backend = Backend::start(|mut s, _| {
        let mut go = [0u8; 1];
        if s.read_exact(&mut go).is_err() {
            return;
        }
        let chunk = vec![7u8; 256 * 1024];
        let mut left = TOTAL;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if s.write_all(&chunk[..n]).is_err() {
                return;
            }
            left -= n as u64;
        }
    });
    let proxy = start_proxy(RelayCx::new(backend.addr), 100, Tuning::default());
    let mut s = client(proxy.addr);
    let t0 = Instant::now();
    s.write_all(b"g").expect("send");
    let mut buf = vec![0u8; 1024 * 1024];
    let mut got = 0u64;
    while got < TOTAL {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "early end");
        got += n as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "throughput: 1 GiB in {secs:.2} s = {:.2} GiB/s",
        TOTAL as f64 / secs / (1024.0 * 1024.0 * 1024.0)
    );
    drop(s);
    proxy.shutdown();

    let backend = Backend::lines(false);
    let mut cx = RelayCx::new(backend.addr);
    cx.line_mode = true;
    let proxy = start_proxy(cx, 100, Tuning::default());
    let mut s = client(proxy.addr);
    let n = 20_000;
    let t0 = Instant::now();
    for _ in 0..n {
        s.write_all(b"q\n").expect("send");
        let line = read_line(&mut s);
        assert!(line.starts_with("OK"), "{line}");
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "pooled request/response: {n} sequential round trips in {secs:.2} s = {:.0}/s, \
         backend connections {}",
        n as f64 / secs,
        backend.connections()
    );
    drop(s);
    proxy.shutdown();
}

#[test]
fn handler_deadline_fires_on_timer() {
    let backend = Backend::echo();
    let mut cx = RelayCx::new(backend.addr);
    cx.idle_timeout = Some(Duration::from_millis(800));
    let proxy = start_proxy(cx, 100, test_opts());
    let mut s = client(proxy.addr);
    let t0 = Instant::now();
    // Activity pushes the deadline back.
    for _ in 0..3 {
        thread::sleep(Duration::from_millis(200));
        s.write_all(b"tick\n").expect("send");
        assert_eq!(read_line(&mut s), "tick\n");
    }
    assert_eq!(read_line(&mut s), "TIMEOUT\n");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1350) && took < Duration::from_secs(5),
        "timer fired after {took:?}"
    );
    proxy.shutdown();
}

#[test]
fn sqpoll_ring_relays_too() {
    let support = uring::probe().expect("io_uring");
    if !support.sqpoll {
        eprintln!("skipped: this process may not create SQPOLL rings");
        return;
    }
    let backend = Backend::echo();
    let opts = Tuning {
        sqpoll: true,
        ..test_opts()
    };
    let proxy = start_proxy(RelayCx::new(backend.addr), 100, opts);
    for i in 0..4 {
        let mut s = client(proxy.addr);
        let msg = format!("sqpoll {i}\n");
        s.write_all(msg.as_bytes()).expect("send");
        assert_eq!(read_line(&mut s), msg);
    }
    proxy.shutdown();
}

// ---------------------------------------------------------------- TLS

/// A test CA, a leaf for `proxy.test` under it, the acceptor serving it, and a client config
/// trusting the CA.
fn tls_fixture() -> (Arc<TlsAcceptor>, Arc<rustls::ClientConfig>) {
    tls_fixture_with(&TlsAcceptorConfig::default())
}

/// [`tls_fixture`] with the listener's TLS settings given.
fn tls_fixture_with(settings: &TlsAcceptorConfig) -> (Arc<TlsAcceptor>, Arc<rustls::ClientConfig>) {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "io_uring test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["proxy.test".to_string()])
        .expect("params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf");
    let loaded = LoadedCert::from_pem(
        CertOrigin::Other("io_uring test".into()),
        leaf.pem().as_bytes(),
        leaf_key.serialize_pem().as_bytes(),
    )
    .expect("load leaf");
    let mut store = CertStore::builder(LoadedCert::generate_default().expect("default cert"));
    store.add(&["proxy.test"], loaded).expect("add leaf");
    let resolver = CertResolver::new(store.build());
    let acceptor = TlsAcceptor::new(settings, resolver).expect("acceptor");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(arc_tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(acceptor), Arc::new(client))
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls_client(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> TlsStream {
    let name = rustls::pki_types::ServerName::try_from("proxy.test").expect("name");
    let conn = rustls::ClientConnection::new(Arc::clone(config), name).expect("client");
    rustls::StreamOwned::new(conn, client(addr))
}

fn tls_read_line(c: &mut TlsStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while out.len() < 256 {
        match c.read(&mut b) {
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

#[test]
fn tls_listener_terminates_tls_and_relays_plaintext() {
    let backend = Backend::lines(false);
    let mut cx = RelayCx::new(backend.addr);
    cx.line_mode = true;
    let infos = Arc::clone(&cx.infos);
    let (acceptor, client_config) = tls_fixture();
    let proxy = start_proxy_on(cx, 100, test_opts(), Some(acceptor));

    let mut c = tls_client(proxy.addr, &client_config);
    c.write_all(b"REQ\n").expect("send");
    assert_eq!(tls_read_line(&mut c), "OK 1\n");
    c.write_all(b"REQ\n").expect("send");
    assert_eq!(
        tls_read_line(&mut c),
        "OK 1\n",
        "pooled upstream behind a TLS client"
    );
    assert_eq!(
        *infos.lock().unwrap_or_else(|e| e.into_inner()),
        vec![(true, Some("proxy.test".to_string()))]
    );
    // A clean TLS close from the client ends the connection, answered by close_notify.
    c.conn.send_close_notify();
    c.flush().expect("flush");
    let mut rest = Vec::new();
    let end = c.read_to_end(&mut rest);
    assert!(end.is_ok(), "the proxy closed with close_notify: {end:?}");
    assert!(rest.is_empty(), "no stray bytes: {rest:?}");
    wait_for("TLS connection closed", || proxy.stat(|s| &s.closed) == 1);
    proxy.shutdown();
}

#[test]
fn tls_bulk_echo_round_trips_in_order() {
    let _heavy = heavy();
    let backend = Backend::echo();
    let (acceptor, client_config) = tls_fixture();
    let proxy = start_proxy_on(RelayCx::new(backend.addr), 100, test_opts(), Some(acceptor));
    let mut c = tls_client(proxy.addr, &client_config);
    let chunk = 48 * 1024;
    let mut back = vec![0u8; chunk];
    for round in 0..40u32 {
        let data: Vec<u8> = (0..chunk as u32).map(|i| (i ^ round) as u8).collect();
        c.write_all(&data).expect("send");
        c.read_exact(&mut back).expect("echo");
        assert!(back == data, "round {round} came back different");
    }
    drop(c);
    proxy.shutdown();
}

#[test]
fn failed_tls_handshake_closes_only_that_connection() {
    let backend = Backend::lines(false);
    let mut cx = RelayCx::new(backend.addr);
    cx.line_mode = true;
    let infos = Arc::clone(&cx.infos);
    let (acceptor, client_config) = tls_fixture();
    let proxy = start_proxy_on(cx, 100, test_opts(), Some(acceptor));

    // A TLS client that stays open while the other one fails.
    let mut good = tls_client(proxy.addr, &client_config);
    good.write_all(b"REQ\n").expect("send");
    assert_eq!(tls_read_line(&mut good), "OK 1\n");

    let mut plain = client(proxy.addr);
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        got.first() == Some(&0x15) || got.is_empty(),
        "expected a TLS alert or nothing, got {got:?}"
    );
    assert_eq!(
        infos.lock().unwrap_or_else(|e| e.into_inner()).len(),
        1,
        "no handler was made for the failed handshake"
    );

    good.write_all(b"REQ\n").expect("send");
    assert_eq!(
        tls_read_line(&mut good),
        "OK 1\n",
        "the open TLS connection is unharmed"
    );
    let mut again = tls_client(proxy.addr, &client_config);
    again.write_all(b"REQ\n").expect("send");
    assert!(
        tls_read_line(&mut again).starts_with("OK "),
        "the worker still serves new TLS clients"
    );
    drop(good);
    drop(again);
    proxy.shutdown();
}

#[test]
fn stalled_tls_handshake_times_out() {
    let backend = Backend::echo();
    let (acceptor, _) = tls_fixture();
    let tuning = Tuning {
        tls_handshake_timeout: Duration::from_millis(300),
        ..test_opts()
    };
    let proxy = start_proxy_on(RelayCx::new(backend.addr), 100, tuning, Some(acceptor));
    let mut silent = client(proxy.addr);
    let t0 = Instant::now();
    let mut got = Vec::new();
    let _ = silent.read_to_end(&mut got);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    wait_for("connection freed", || proxy.stat(|s| &s.closed) == 1);
    proxy.shutdown();
}

#[test]
fn tls_flight_and_response_leave_as_single_records() {
    let backend = Backend::lines(false);
    let mut cx = RelayCx::new(backend.addr);
    cx.line_mode = true;
    let (acceptor, client_config) = tls_fixture_with(&TlsAcceptorConfig {
        session_cache_entries: 0,
        session_tickets: false,
        ..TlsAcceptorConfig::default()
    });
    let proxy = start_proxy_on(cx, 100, test_opts(), Some(acceptor));
    flight_and_response_are_single_records(proxy.addr, &client_config);
}
