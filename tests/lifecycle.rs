//! Lifecycle of the real `arc-gateway` binary under steady load, for each io driver: 50 hot
//! reloads, a rejected reload, a drain with slow downloads in flight, a binary upgrade old →
//! new process, upgrades whose new process fails after adopting the sockets (late, or exiting
//! before "go"), an upgrade to the configured `lifecycle.upgrade_binary`, a reloaded
//! `lifecycle.drain_timeout` (up and down) applied by the next drain, and the systemd
//! notifications (a fake `NOTIFY_SOCKET` bound by the test) including the watchdog that stops
//! when a worker is wedged.
//!
//! The load is bounded in threads, rate and time; it counts requests sent, answered correctly,
//! failed, reset and refused. The client never retries (as most HTTP clients do not for a
//! POST): a keep-alive connection closed under a request is a failed request, so "nothing
//! lost" means nothing lost for such a client (SPEC §5).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{Driver, IO_TIMEOUT, find, free_port, per_driver, serial};

// ---- backend ----

/// A loopback HTTP/1.1 backend: `/slow/<ms>` answers 64 KiB spread over `<ms>`,
/// `/delay/<ms>` answers `ok` after `<ms>`, `/ws` becomes an echo tunnel, anything else
/// answers `ok` at once.
struct Backend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
}

fn backend() -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let (c, o) = (Arc::clone(&connections), Arc::clone(&open));
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { return };
            c.fetch_add(1, Ordering::SeqCst);
            o.fetch_add(1, Ordering::SeqCst);
            let o = Arc::clone(&o);
            thread::spawn(move || {
                serve_backend(s);
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Backend {
        addr,
        connections,
        open,
    }
}

fn serve_backend(mut s: TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut b = [0u8; 4096];
            match s.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&b[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        if path == "/ws" {
            // A WebSocket-style tunnel: 101, then echo raw bytes until the peer closes.
            if s
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                .is_err()
            {
                return;
            }
            let mut b = [0u8; 4096];
            loop {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&b[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        let ok = if let Some(ms) = path.strip_prefix("/slow/") {
            let ms: u64 = ms.parse().unwrap_or(0);
            let pieces = 16u64;
            let piece = vec![b's'; 4096];
            let mut ok = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 65536\r\n\r\n")
                .is_ok();
            for _ in 0..pieces {
                if !ok {
                    break;
                }
                thread::sleep(Duration::from_millis(ms / pieces));
                ok = s.write_all(&piece).is_ok();
            }
            ok
        } else if let Some(ms) = path.strip_prefix("/split/") {
            // The head first, the body `ms` later: a response whose head is out while its
            // exchange is still under way.
            let ok = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
                .is_ok();
            thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
            ok && s.write_all(b"ok").is_ok()
        } else {
            if let Some(ms) = path.strip_prefix("/delay/") {
                thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_ok()
        };
        if !ok {
            return;
        }
    }
}

// ---- client ----

#[derive(Debug)]
struct Response {
    status: u16,
    close: bool,
    body: Vec<u8>,
}

#[derive(Debug)]
enum ClientError {
    /// The connection ended before any byte of the response.
    ClosedBeforeResponse,
    Reset,
    /// Read through `Debug` in the load's error notes.
    #[allow(dead_code)]
    Other(String),
}

fn classify(e: &std::io::Error) -> ClientError {
    match e.kind() {
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            ClientError::Reset
        }
        _ => ClientError::Other(e.to_string()),
    }
}

fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Response, ClientError> {
    let mut got_any = !buf.is_empty();
    let end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        let mut b = [0u8; 16384];
        match s.read(&mut b) {
            Ok(0) if !got_any => return Err(ClientError::ClosedBeforeResponse),
            Ok(0) => return Err(ClientError::Other("EOF inside the head".into())),
            Ok(n) => {
                got_any = true;
                buf.extend_from_slice(&b[..n]);
            }
            Err(e) => return Err(classify(&e)),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    buf.drain(..end);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Other(format!("bad status line: {head}")))?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| ClientError::Other(format!("no content-length: {head}")))?;
    while buf.len() < len {
        let mut b = [0u8; 65536];
        match s.read(&mut b) {
            Ok(0) => return Err(ClientError::Other("EOF inside the body".into())),
            Ok(n) => buf.extend_from_slice(&b[..n]),
            Err(e) => return Err(classify(&e)),
        }
    }
    let body = buf.drain(..len).collect();
    Ok(Response {
        status,
        close: head.contains("\r\nconnection: close\r\n"),
        body,
    })
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

#[derive(Debug, Default)]
struct Stats {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    resets: AtomicU64,
    refused: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Totals {
    sent: u64,
    ok: u64,
    failed: u64,
    resets: u64,
    refused: u64,
}

impl Stats {
    fn totals(&self) -> Totals {
        Totals {
            sent: self.sent.load(Ordering::SeqCst),
            ok: self.ok.load(Ordering::SeqCst),
            failed: self.failed.load(Ordering::SeqCst),
            resets: self.resets.load(Ordering::SeqCst),
            refused: self.refused.load(Ordering::SeqCst),
        }
    }
}

/// Steady load: half the threads keep connections alive (up to 50 requests each), half open a
/// new connection per request; each thread pauses `pause` between requests.
struct Load {
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    threads: Vec<JoinHandle<()>>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl Load {
    fn start(addr: SocketAddr, threads: usize, pause: Duration, max: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let last_error = Arc::new(Mutex::new(None));
        let handles = (0..threads)
            .map(|i| {
                let (stop, stats, last) = (
                    Arc::clone(&stop),
                    Arc::clone(&stats),
                    Arc::clone(&last_error),
                );
                thread::spawn(move || {
                    client_loop(
                        addr,
                        i % 2 == 0,
                        pause,
                        Instant::now() + max,
                        &stop,
                        &stats,
                        &last,
                    )
                })
            })
            .collect();
        Load {
            stop,
            stats,
            threads: handles,
            last_error,
        }
    }

    fn totals(&self) -> Totals {
        self.stats.totals()
    }

    fn finish(self) -> (Totals, Option<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        let last = self.last_error.lock().map(|l| l.clone()).unwrap_or(None);
        (self.stats.totals(), last)
    }
}

fn client_loop(
    addr: SocketAddr,
    keep_alive: bool,
    pause: Duration,
    deadline: Instant,
    stop: &AtomicBool,
    stats: &Stats,
    last_error: &Mutex<Option<String>>,
) {
    let note = |e: String| {
        if let Ok(mut l) = last_error.lock() {
            *l = Some(e);
        }
    };
    let mut conn: Option<(TcpStream, Vec<u8>, u32)> = None;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        stats.sent.fetch_add(1, Ordering::Relaxed);
        // One attempt per request, whatever happens.
        'attempt: {
            if conn.is_none() {
                match connect(addr) {
                    Ok(s) => conn = Some((s, Vec::new(), 0)),
                    Err(e) => {
                        if e.kind() == ErrorKind::ConnectionRefused {
                            stats.refused.fetch_add(1, Ordering::Relaxed);
                        } else if matches!(classify(&e), ClientError::Reset) {
                            stats.resets.fetch_add(1, Ordering::Relaxed);
                        }
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        note(format!("connect: {e}"));
                        break 'attempt;
                    }
                }
            }
            let Some((s, buf, served)) = conn.as_mut() else {
                break 'attempt;
            };
            let reused = *served > 0;
            let result = s
                .write_all(b"GET /load HTTP/1.1\r\nHost: app.test\r\n\r\n")
                .map_err(|e| classify(&e))
                .and_then(|()| read_response(s, buf));
            match result {
                Ok(r) => {
                    *served += 1;
                    if r.status == 200 && r.body == b"ok" {
                        stats.ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        note(format!("status {} body {:?}", r.status, r.body));
                    }
                    if r.close || !keep_alive || *served >= 50 {
                        conn = None;
                    }
                    break 'attempt;
                }
                Err(e) => {
                    conn = None;
                    if matches!(e, ClientError::Reset) {
                        stats.resets.fetch_add(1, Ordering::Relaxed);
                    }
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    note(format!("{e:?} (reused: {reused})"));
                    break 'attempt;
                }
            }
        }
        thread::sleep(pause);
    }
}

// ---- fake systemd ----

/// A fake `NOTIFY_SOCKET`: records every datagram with its arrival time.
struct Systemd {
    path: PathBuf,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Systemd {
    fn bind(dir: &Path) -> Systemd {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let m = Arc::clone(&messages);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends when the test's directory (and so the socket file) is gone and the test
            // dropped its handle; bounded anyway.
            let until = Instant::now() + Duration::from_secs(300);
            while Instant::now() < until && Arc::strong_count(&m) > 1 {
                if let Ok(n) = sock.recv(&mut buf)
                    && let Ok(mut all) = m.lock()
                {
                    all.push((
                        Instant::now(),
                        String::from_utf8_lossy(&buf[..n]).into_owned(),
                    ));
                }
            }
        });
        Systemd { path, messages }
    }

    fn all(&self) -> Vec<(Instant, String)> {
        self.messages.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn count(&self, needle: &str) -> usize {
        self.all()
            .iter()
            .filter(|(_, m)| m.lines().any(|l| l == needle))
            .count()
    }

    /// Waits until `count(needle) >= n`.
    fn wait_count(&self, needle: &str, n: usize, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if self.count(needle) >= n {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn count_prefix(&self, prefix: &str) -> usize {
        self.all()
            .iter()
            .filter(|(_, m)| m.lines().any(|l| l.starts_with(prefix)))
            .count()
    }

    fn last_prefix(&self, prefix: &str) -> Option<String> {
        self.all().iter().rev().find_map(|(_, m)| {
            m.lines()
                .find_map(|l| l.strip_prefix(prefix).map(str::to_string))
        })
    }

    fn find_prefix(&self, prefix: &str) -> Option<String> {
        self.all().iter().find_map(|(_, m)| {
            m.lines()
                .find_map(|l| l.strip_prefix(prefix).map(str::to_string))
        })
    }
}

// ---- the process under test ----

/// The control token of every configuration written: the log check at the end of each test
/// ([`ArcProc`]'s drop) makes sure it never reaches the log.
const CONTROL_TOKEN: &str = "lifecycle-c0ntrol-t0ken-5b1e";

struct Variant {
    body: String,
    with_b: bool,
    level: &'static str,
    idle: u32,
}

struct ArcProc {
    child: Option<Child>,
    dir: PathBuf,
    config: PathBuf,
    http: SocketAddr,
    admin: SocketAddr,
    driver: Driver,
    app: SocketAddr,
    b: SocketAddr,
    systemd: Systemd,
    /// The `lifecycle:` mapping's contents in every config written.
    lifecycle: Mutex<String>,
}

impl ArcProc {
    fn start(driver: Driver, app: SocketAddr, b: SocketAddr, env: &[(&str, &str)]) -> Self {
        Self::start_with(driver, app, b, env, "drain_timeout: 5s")
    }

    /// [`ArcProc::start`] with `lifecycle: {<lifecycle>}` in the config.
    fn start_with(
        driver: Driver,
        app: SocketAddr,
        b: SocketAddr,
        env: &[(&str, &str)],
        lifecycle: &str,
    ) -> Self {
        let dir = common::temp_dir("lifecycle");
        let systemd = Systemd::bind(&dir);
        let mut p = ArcProc {
            child: None,
            config: dir.join("arc.yaml"),
            dir,
            http: SocketAddr::from(([127, 0, 0, 1], free_port())),
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
            driver,
            app,
            b,
            systemd,
            lifecycle: Mutex::new(lifecycle.to_string()),
        };
        p.write_config(&Variant {
            body: "v0".into(),
            with_b: true,
            level: "info",
            idle: 60,
        });
        let log = std::fs::File::create(p.dir.join("arc.log")).expect("log file");
        let mut cmd = common::arc_command();
        cmd.arg("--config")
            .arg(&p.config)
            .env("NOTIFY_SOCKET", &p.systemd.path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        p.child = Some(cmd.spawn().expect("spawn arc-gateway"));
        assert!(
            p.systemd.wait_count("READY=1", 1, Duration::from_secs(20)),
            "no READY=1; log:\n{}",
            p.log()
        );
        p
    }

    fn write_config(&self, v: &Variant) {
        let b_upstream = if v.with_b {
            format!("  - {{name: b, addr: '{}'}}\n", self.b)
        } else {
            String::new()
        };
        let b_route = if v.with_b {
            "  - {path: /b, path_type: Prefix, upstream: b}\n"
        } else {
            ""
        };
        let yaml = format!(
            "node: {{workers: 2}}\n\
             io_uring: {{enabled: {driver}}}\n\
             listeners:\n  - {{name: http, bind: '{http}', protocol: http}}\n\
             observability: {{metrics_bind: '{admin}'}}\n\
             control_plane: {{auth_token: '{CONTROL_TOKEN}'}}\n\
             lifecycle: {{{lifecycle}}}\n\
             logging: {{level: {level}, format: text, output: {{path: stderr}}}}\n\
             limits: {{idle_timeout: {idle}s}}\n\
             upstreams:\n  - {{name: app, addr: '{app}', read_timeout: 20s, pool: {{max_idle: 64, idle_timeout: 60s}}}}\n{b_upstream}\
             routes:\n  - {{path: /version, path_type: Exact, direct_response: {{status: 200, body: '{body}'}}}}\n{b_route}  - {{path: /, path_type: Prefix, upstream: app}}\n",
            driver = self.driver.uring_enabled(),
            http = self.http,
            admin = self.admin,
            level = v.level,
            idle = v.idle,
            app = self.app,
            body = v.body,
            lifecycle = self.lifecycle(),
        );
        // Written whole then renamed, as a config manager would.
        let tmp = self.dir.join("arc.yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write config");
        std::fs::rename(&tmp, &self.config).expect("rename config");
    }

    fn lifecycle(&self) -> String {
        self.lifecycle
            .lock()
            .map(|l| l.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Rewrites the config with `lifecycle: {<lifecycle>}` and reloads (SIGHUP), waiting for
    /// the reload's `READY=1`.
    fn reload_lifecycle(&self, lifecycle: &str) {
        if let Ok(mut l) = self.lifecycle.lock() {
            *l = lifecycle.to_string();
        }
        self.write_config(&Variant {
            body: "v0".into(),
            with_b: true,
            level: "info",
            idle: 60,
        });
        let before = self.systemd.count("READY=1");
        self.signal("HUP");
        assert!(
            self.systemd
                .wait_count("READY=1", before + 1, Duration::from_secs(10)),
            "reload not acknowledged; log:\n{}",
            self.log()
        );
        assert!(
            !self.log().contains("configuration rejected"),
            "{}",
            self.log()
        );
    }

    /// Waits until the log mentions `needle` at least `n` times.
    fn wait_log(&self, needle: &str, n: usize, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if self.log().matches(needle).count() >= n {
                return true;
            }
            thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    fn signal(&self, sig: &str) {
        signal(self.pid(), sig);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("arc.log")).unwrap_or_default()
    }

    /// Waits for the process to exit; its exit code.
    fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let until = Instant::now() + within;
        let child = self.child.as_mut()?;
        while Instant::now() < until {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn get(&self, addr: SocketAddr, path: &str) -> Option<Response> {
        let mut s = connect(addr).ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
        read_response(&mut s, &mut Vec::new()).ok()
    }

    fn metric(&self, name_and_labels: &str) -> Option<f64> {
        let mut s = connect(self.admin).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        common::sample(&text, name_and_labels)?.parse().ok()
    }
}

impl Drop for ArcProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The end of every test: the whole log (every process of an upgrade wrote to it) is
        // free of the token and key material. Skipped when the test already fails.
        let log = self.log();
        let _ = std::fs::remove_dir_all(&self.dir);
        if !thread::panicking() {
            common::secrets::Secrets::new()
                .value("control token", CONTROL_TOKEN)
                .assert_clean("arc-gateway log", &log);
        }
    }
}

fn signal(pid: i32, sig: &str) {
    if pid > 0 {
        let _ = Command::new("kill")
            .arg("-s")
            .arg(sig)
            .arg(pid.to_string())
            .status();
    }
}

fn process_gone(pid: i32, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            // A zombie (reparented, not yet reaped) has exited.
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z')) =>
            {
                return true;
            }
            Ok(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

fn assert_clean(what: &str, t: Totals, last: Option<String>, log: &str) {
    eprintln!("{what}: {t:?}");
    assert!(
        t.sent > 200,
        "{what}: too little load to prove anything: {t:?}"
    );
    assert_eq!(
        (t.failed, t.resets, t.refused),
        (0, 0, 0),
        "{what}: {t:?}, last error {last:?}; log:\n{log}"
    );
    assert_eq!(t.ok, t.sent, "{what}: {t:?}");
}

// ---- scenarios ----

fn fifty_hot_reloads_lose_nothing(driver: Driver) {
    let _g = serial();
    let app = backend();
    let b = backend();
    let mut p = ArcProc::start(driver, app.addr, b.addr, &[]);
    // Warm a pooled connection to b.
    assert_eq!(p.get(p.http, "/b").map(|r| r.status), Some(200));
    let load = Load::start(p.http, 6, Duration::from_millis(2), Duration::from_secs(60));
    thread::sleep(Duration::from_millis(300));
    let app_conns_before = app.connections.load(Ordering::SeqCst);
    for i in 1..=50u32 {
        p.write_config(&Variant {
            body: format!("v{i}"),
            with_b: i.is_multiple_of(2),
            level: if i.is_multiple_of(2) { "info" } else { "warn" },
            idle: 60 + i % 3,
        });
        p.signal("HUP");
        assert!(
            p.systemd
                .wait_count("READY=1", 1 + i as usize, Duration::from_secs(10)),
            "reload {i} not acknowledged; log:\n{}",
            p.log()
        );
        assert_eq!(
            p.get(p.http, "/version").map(|r| r.body),
            Some(format!("v{i}").into_bytes()),
            "reload {i} not in force"
        );
        thread::sleep(Duration::from_millis(40));
    }
    thread::sleep(Duration::from_millis(300));
    let (t, last) = load.finish();
    // A reload that closed a keep-alive connection under a request fails one here: the
    // client does not retry.
    assert_clean("50 hot reloads", t, last, &p.log());
    assert_eq!(p.systemd.count("RELOADING=1"), 50);
    assert!(
        p.systemd
            .all()
            .iter()
            .filter(|(_, m)| m.contains("RELOADING=1"))
            .all(|(_, m)| m.contains("MONOTONIC_USEC=")),
        "RELOADING=1 without MONOTONIC_USEC"
    );
    assert_eq!(
        p.metric("arc_config_reload_total{result=\"success\"}"),
        Some(50.0)
    );
    // The pool of the unchanged upstream survived: no reconnect storm.
    let new_app_conns = app.connections.load(Ordering::SeqCst) - app_conns_before;
    assert!(
        new_app_conns <= 24,
        "{new_app_conns} new upstream connections during 50 reloads"
    );
    // The last reload (50, even) keeps b; remove it and its pooled connections close.
    assert!(b.open.load(Ordering::SeqCst) > 0 || b.connections.load(Ordering::SeqCst) > 0);
    assert_eq!(p.get(p.http, "/b").map(|r| r.status), Some(200));
    p.write_config(&Variant {
        body: "gone".into(),
        with_b: false,
        level: "info",
        idle: 60,
    });
    p.signal("HUP");
    assert!(p.systemd.wait_count("READY=1", 52, Duration::from_secs(10)));
    let until = Instant::now() + Duration::from_secs(5);
    while b.open.load(Ordering::SeqCst) > 0 && Instant::now() < until {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        b.open.load(Ordering::SeqCst),
        0,
        "pooled connections of a removed upstream stay open"
    );
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
}

fn rejected_reload_keeps_serving(driver: Driver) {
    let _g = serial();
    let app = backend();
    let b = backend();
    let mut p = ArcProc::start(driver, app.addr, b.addr, &[]);
    let load = Load::start(p.http, 6, Duration::from_millis(2), Duration::from_secs(30));
    thread::sleep(Duration::from_millis(300));
    // Two errors at once: both are logged.
    std::fs::write(
        &p.config,
        format!(
            "node: {{workers: 2}}\nio_uring: {{enabled: {}}}\nlisteners:\n  - {{name: http, bind: '{}', protocol: http}}\nobservability: {{metrics_bind: '{}'}}\nbogus_key: 1\nmax_connections: lots\n",
            p.driver.uring_enabled(),
            p.http,
            p.admin
        ),
    )
    .expect("write bad config");
    p.signal("HUP");
    assert!(p.systemd.wait_count("READY=1", 2, Duration::from_secs(10)));
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        p.get(p.http, "/version").map(|r| r.body),
        Some(b"v0".to_vec()),
        "the old configuration keeps serving"
    );
    assert_eq!(
        p.metric("arc_config_reload_total{result=\"failure\"}"),
        Some(1.0)
    );
    let log = p.log();
    assert!(log.contains("bogus_key"), "{log}");
    assert!(log.contains("max_connections"), "{log}");
    // Unreadable certificate files: every one is named, the old configuration stays.
    p.write_config(&Variant {
        body: "tls".into(),
        with_b: true,
        level: "info",
        idle: 60,
    });
    let good = std::fs::read_to_string(&p.config).expect("config");
    std::fs::write(
        &p.config,
        format!("{good}tls:\n  certificates:\n    - {{hosts: [a.test], cert: missing-a.crt, key: missing-a.key}}\n    - {{hosts: [b.test], cert: missing-b.crt, key: missing-b.key}}\n"),
    )
    .expect("write config");
    p.signal("HUP");
    assert!(p.systemd.wait_count("READY=1", 3, Duration::from_secs(10)));
    assert_eq!(
        p.get(p.http, "/version").map(|r| r.body),
        Some(b"v0".to_vec())
    );
    assert_eq!(
        p.metric("arc_config_reload_total{result=\"failure\"}"),
        Some(2.0)
    );
    let log = p.log();
    for key in [
        "tls.certificates[0].cert",
        "tls.certificates[0].key",
        "tls.certificates[1].cert",
        "tls.certificates[1].key",
    ] {
        assert!(log.contains(key), "{key} not named: {log}");
    }
    // A restart-required change is named and keeps its running value; the rest applies.
    p.write_config(&Variant {
        body: "v1".into(),
        with_b: true,
        level: "info",
        idle: 60,
    });
    let good = std::fs::read_to_string(&p.config).expect("config");
    std::fs::write(&p.config, good.replace("workers: 2", "workers: 3")).expect("write");
    p.signal("HUP");
    assert!(p.systemd.wait_count("READY=1", 4, Duration::from_secs(10)));
    assert_eq!(
        p.get(p.http, "/version").map(|r| r.body),
        Some(b"v1".to_vec())
    );
    let log = p.log();
    assert!(
        log.contains("restart required") && log.contains("node.workers"),
        "{log}"
    );
    thread::sleep(Duration::from_millis(300));
    let (t, last) = load.finish();
    assert_clean("rejected reload", t, last, &p.log());
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
}

fn drain_finishes_slow_downloads(driver: Driver) {
    let _g = serial();
    let app = backend();
    let b = backend();
    let mut p = ArcProc::start(driver, app.addr, b.addr, &[]);
    let http = p.http;
    // Idle keep-alive connections (one request served each).
    let mut idle: Vec<(TcpStream, Vec<u8>)> = (0..4)
        .map(|_| {
            let mut s = connect(http).expect("connect");
            s.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
                .expect("write");
            let mut buf = Vec::new();
            let r = read_response(&mut s, &mut buf).expect("response");
            assert_eq!(r.status, 200);
            (s, buf)
        })
        .collect();
    // Slow downloads in flight (about 2.5 s each), and requests whose answer has not started.
    let downloads: Vec<JoinHandle<Result<Response, String>>> = (0..6)
        .map(|i| {
            thread::spawn(move || {
                let mut s = connect(http).map_err(|e| e.to_string())?;
                let path = if i % 2 == 0 {
                    "/slow/2500"
                } else {
                    "/delay/1500"
                };
                s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                    .map_err(|e| e.to_string())?;
                let r = read_response(&mut s, &mut Vec::new()).map_err(|e| format!("{e:?}"))?;
                // The connection ends after the response.
                let mut rest = [0u8; 16];
                match s.read(&mut rest) {
                    Ok(0) => Ok(r),
                    other => Err(format!(
                        "connection not closed after the response: {other:?}"
                    )),
                }
            })
        })
        .collect();
    // A WebSocket tunnel: it keeps working during the drain, until the hard deadline.
    let mut ws = connect(http).expect("connect");
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .expect("write");
    let mut ws_buf = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&ws_buf, b"\r\n\r\n") {
            break i + 4;
        }
        let mut b = [0u8; 1024];
        let n = ws.read(&mut b).expect("101");
        assert!(n > 0, "tunnel closed");
        ws_buf.extend_from_slice(&b[..n]);
    };
    assert!(ws_buf.starts_with(b"HTTP/1.1 101"));
    assert_eq!(ws_buf.len(), head_end);
    let echo = |ws: &mut TcpStream, msg: &[u8]| -> bool {
        if ws.write_all(msg).is_err() {
            return false;
        }
        let mut got = vec![0u8; msg.len()];
        ws.read_exact(&mut got).is_ok() && got == msg
    };
    assert!(echo(&mut ws, b"before"));
    thread::sleep(Duration::from_millis(400));
    let started = Instant::now();
    p.signal("TERM");
    assert!(
        p.systemd
            .wait_count("STOPPING=1", 1, Duration::from_secs(2))
    );
    // /readyz turns 503 at once.
    let mut readyz = None;
    while started.elapsed() < Duration::from_secs(1) {
        readyz = p.get(p.admin, "/readyz").map(|r| r.status);
        if readyz == Some(503) {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(readyz, Some(503));
    // Idle keep-alive connections are closed (a FIN, not a reset), quickly.
    for (s, _) in &mut idle {
        let mut b = [0u8; 16];
        let r = s.read(&mut b);
        assert!(matches!(r, Ok(0)), "idle connection: {r:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    for (i, d) in downloads.into_iter().enumerate() {
        let r = d
            .join()
            .expect("download thread")
            .unwrap_or_else(|e| panic!("download {i}: {e}; log:\n{}", p.log()));
        assert_eq!(r.status, 200);
        if i % 2 == 0 {
            assert_eq!(r.body.len(), 65536, "download {i} truncated");
        } else {
            // Answered after the drain began: it says so.
            assert!(r.close, "response {i} without Connection: close");
            assert_eq!(r.body, b"ok");
        }
    }
    // Downloads are done; the tunnel still runs (3 s into a 5 s drain).
    thread::sleep(Duration::from_secs(3).saturating_sub(started.elapsed()));
    assert!(
        echo(&mut ws, b"during drain"),
        "tunnel cut before the deadline"
    );
    assert_eq!(p.wait_exit(Duration::from_secs(8)), Some(0), "{}", p.log());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(4500) && took < Duration::from_millis(7500),
        "the hard deadline is 5 s; the drain took {took:?}"
    );
    // Cut at the deadline.
    let mut b = [0u8; 16];
    assert!(!matches!(ws.read(&mut b), Ok(n) if n > 0));
}

/// SPEC §5: eight keep-alive clients sending back to back (each sends its next request the
/// moment the previous answer is read) with a client that never retries: a SIGTERM drain loses
/// none of their requests. Every connection ends after an answer that says `Connection: close`,
/// and the process exits 0.
fn drain_loses_no_request_of_busy_keep_alive_clients(driver: Driver) {
    let _g = serial();
    let app = backend();
    let b = backend();
    let mut p = ArcProc::start(driver, app.addr, b.addr, &[]);
    let http = p.http;
    let clients: Vec<JoinHandle<(u64, Result<(), String>)>> = (0..8)
        .map(|_| {
            thread::spawn(move || {
                let mut s = match connect(http) {
                    Ok(s) => s,
                    Err(e) => return (0, Err(format!("connect: {e}"))),
                };
                let mut buf = Vec::new();
                let mut answered = 0u64;
                let until = Instant::now() + Duration::from_secs(30);
                while Instant::now() < until {
                    // Every other response's head reaches the client 20 ms before its body, so
                    // the drain finds connections between requests and inside responses.
                    let request: &[u8] = if answered.is_multiple_of(2) {
                        b"GET /split/20 HTTP/1.1\r\nHost: app.test\r\n\r\n"
                    } else {
                        b"GET /load HTTP/1.1\r\nHost: app.test\r\n\r\n"
                    };
                    if let Err(e) = s.write_all(request) {
                        return (
                            answered,
                            Err(format!("write after {answered} answers: {e}")),
                        );
                    }
                    match read_response(&mut s, &mut buf) {
                        Ok(r) if r.status == 200 && r.body == b"ok" => {
                            answered += 1;
                            if r.close {
                                return (answered, Ok(()));
                            }
                        }
                        Ok(r) => {
                            return (
                                answered,
                                Err(format!("status {} body {:?}", r.status, r.body)),
                            );
                        }
                        Err(e) => {
                            return (answered, Err(format!("{e:?} after {answered} answers")));
                        }
                    }
                }
                (
                    answered,
                    Err("the drain never closed the connection".into()),
                )
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    p.signal("TERM");
    let results: Vec<(u64, Result<(), String>)> = clients
        .into_iter()
        .map(|c| c.join().unwrap_or((0, Err("client panicked".into()))))
        .collect();
    let exit = p.wait_exit(Duration::from_secs(10));
    let log = p.log();
    for (i, (answered, r)) in results.iter().enumerate() {
        assert!(
            r.is_ok(),
            "client {i}: {r:?} ({answered} answered); all: {results:?}; log:\n{log}"
        );
        assert!(
            *answered > 1,
            "client {i} sent too little to prove anything: {results:?}"
        );
    }
    assert_eq!(exit, Some(0), "{log}");
}

fn binary_upgrade_loses_nothing(driver: Driver) {
    let _g = serial();
    let app = backend();
    let b = backend();
    // The new process reports ready 1 s late (holding the adopted sockets with accepting
    // paused meanwhile), so a second SIGUSR2 lands while the upgrade is under way.
    let mut p = ArcProc::start(
        driver,
        app.addr,
        b.addr,
        &[("ARC_DEBUG_UPGRADE_READY_DELAY", "1000")],
    );
    let load = Load::start(p.http, 6, Duration::from_millis(2), Duration::from_secs(60));
    thread::sleep(Duration::from_millis(500));

    // An upgrade whose new process cannot start: the old one keeps serving.
    let good = std::fs::read_to_string(&p.config).expect("config");
    std::fs::write(&p.config, format!("{good}bogus_key: 1\n")).expect("write");
    p.signal("USR2");
    let until = Instant::now() + Duration::from_secs(15);
    while !p.log().contains("upgrade failed") && Instant::now() < until {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(p.log().contains("upgrade failed"), "{}", p.log());
    assert_eq!(p.systemd.find_prefix("MAINPID="), None);
    assert_eq!(
        p.wait_exit(Duration::from_millis(100)),
        None,
        "old process left"
    );
    // The new process runs one worker where the old one ran two: it adopts both sockets of
    // the old reuse-port group, so nothing queued in either is lost.
    std::fs::write(&p.config, good.replace("workers: 2", "workers: 1")).expect("write config");
    thread::sleep(Duration::from_millis(300));

    // The real upgrade.
    let before = load.totals();
    p.signal("USR2");
    thread::sleep(Duration::from_millis(300));
    p.signal("USR2");
    let until = Instant::now() + Duration::from_secs(20);
    let mut new_pid = None;
    while new_pid.is_none() && Instant::now() < until {
        new_pid = p
            .systemd
            .find_prefix("MAINPID=")
            .and_then(|v| v.parse::<i32>().ok());
        thread::sleep(Duration::from_millis(20));
    }
    let new_pid = new_pid.unwrap_or_else(|| panic!("no MAINPID=; log:\n{}", p.log()));
    assert_ne!(new_pid, p.pid());
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0), "{}", p.log());
    // The new process serves everything from here on.
    thread::sleep(Duration::from_millis(800));
    assert_eq!(p.get(p.admin, "/readyz").map(|r| r.status), Some(200));
    let (t, last) = load.finish();
    let log = p.log();
    assert!(
        log.contains("SIGUSR2 refused: an upgrade is already in progress"),
        "{log}"
    );
    assert_eq!(
        log.matches("upgrade: starting the new process").count(),
        2,
        "{log}"
    );
    signal(new_pid, "TERM");
    assert!(
        process_gone(new_pid, Duration::from_secs(10)),
        "new process did not stop"
    );
    assert!(
        t.sent > before.sent + 100,
        "no load across the upgrade: {t:?}"
    );
    assert_clean("binary upgrade", t, last, &log);
}

/// The new process of an upgrade adopts the sockets and runs its workers, then fails: once
/// killed for being late (`lifecycle.upgrade_timeout` shorter than its readiness delay), once
/// exiting on its own before "go" (after the timeout was raised by a reload). New connections
/// keep arriving all the while; the old process keeps every one of them.
fn failed_upgrade_loses_no_connection(driver: Driver) {
    let _g = serial();
    let app = backend();
    let b = backend();
    let mut p = ArcProc::start_with(
        driver,
        app.addr,
        b.addr,
        &[
            ("ARC_DEBUG_UPGRADE_READY_DELAY", "2500"),
            ("ARC_DEBUG_UPGRADE_EXIT_BEFORE_GO", "1"),
        ],
        "drain_timeout: 5s, upgrade_timeout: 1s",
    );
    // Mostly new connections: each one a chance for the new process to take it.
    let load = Load::start(p.http, 8, Duration::from_millis(1), Duration::from_secs(60));
    thread::sleep(Duration::from_millis(300));

    // Late: killed after 1 s with its workers up (accepting paused) all that time.
    let before = load.totals();
    p.signal("USR2");
    assert!(
        p.wait_log("upgrade failed", 1, Duration::from_secs(10)),
        "{}",
        p.log()
    );
    let log = p.log();
    assert!(log.contains("timed out"), "{log}");
    assert!(
        log.contains("timeout=1s") || log.contains("timeout: 1s"),
        "{log}"
    );
    thread::sleep(Duration::from_millis(300));

    // Exits on its own after adoption (the timeout reloaded to 10 s lets it get that far).
    p.reload_lifecycle("drain_timeout: 5s, upgrade_timeout: 10s");
    p.signal("USR2");
    assert!(
        p.wait_log("upgrade failed", 2, Duration::from_secs(15)),
        "{}",
        p.log()
    );
    let log = p.log();
    assert!(log.contains("it exited"), "{log}");
    assert!(log.contains("exiting before go"), "{log}");
    thread::sleep(Duration::from_millis(500));

    assert_eq!(p.systemd.find_prefix("MAINPID="), None);
    assert_eq!(
        p.wait_exit(Duration::from_millis(100)),
        None,
        "old process left"
    );
    assert_eq!(p.get(p.admin, "/readyz").map(|r| r.status), Some(200));
    let (t, last) = load.finish();
    assert!(
        t.sent > before.sent + 500,
        "too little load across the failed upgrades: {t:?}"
    );
    assert_clean("failed upgrades", t, last, &p.log());
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
}

/// `lifecycle.upgrade_binary` (set by a reload) names the binary the upgrade starts.
fn upgrade_to_configured_binary(driver: Driver) {
    let _g = serial();
    let app = backend();
    let b = backend();
    let mut p = ArcProc::start(driver, app.addr, b.addr, &[]);
    let bin_dir = p.dir.join("next");
    std::fs::create_dir_all(&bin_dir).expect("bin dir");
    let next = bin_dir.join("arc-gateway-next");
    let original = Path::new(common::ARC_BIN);
    if std::fs::hard_link(original, &next).is_err() {
        std::fs::copy(original, &next).expect("copy the binary");
    }
    p.reload_lifecycle(&format!(
        "drain_timeout: 5s, upgrade_binary: '{}'",
        next.display()
    ));
    let load = Load::start(p.http, 6, Duration::from_millis(2), Duration::from_secs(60));
    thread::sleep(Duration::from_millis(300));
    p.signal("USR2");
    let until = Instant::now() + Duration::from_secs(20);
    let mut new_pid = None;
    while new_pid.is_none() && Instant::now() < until {
        new_pid = p
            .systemd
            .find_prefix("MAINPID=")
            .and_then(|v| v.parse::<i32>().ok());
        thread::sleep(Duration::from_millis(20));
    }
    let new_pid = new_pid.unwrap_or_else(|| panic!("no MAINPID=; log:\n{}", p.log()));
    let exe = std::fs::read_link(format!("/proc/{new_pid}/exe")).expect("exe of the new process");
    assert_eq!(exe, next, "the new process runs the configured binary");
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0), "{}", p.log());
    thread::sleep(Duration::from_millis(500));
    assert_eq!(p.get(p.admin, "/readyz").map(|r| r.status), Some(200));
    let (t, last) = load.finish();
    let log = p.log();
    signal(new_pid, "TERM");
    assert!(
        process_gone(new_pid, Duration::from_secs(10)),
        "new process did not stop"
    );
    assert_clean("upgrade to the configured binary", t, last, &log);
}

/// One slow download (64 KiB over `ms`) through `http`: the bytes of the body received.
fn slow_download(http: SocketAddr, ms: u64) -> JoinHandle<usize> {
    thread::spawn(move || {
        let Ok(mut s) = connect(http) else {
            return 0;
        };
        if s.write_all(format!("GET /slow/{ms} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .is_err()
        {
            return 0;
        }
        let mut all = Vec::new();
        let mut b = [0u8; 8192];
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            match s.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&b[..n]),
            }
            if all.len() >= 65536
                && find(&all, b"\r\n\r\n").is_some_and(|i| all.len() - i - 4 >= 65536)
            {
                break;
            }
        }
        find(&all, b"\r\n\r\n").map_or(0, |i| all.len() - i - 4)
    })
}

/// A reloaded `lifecycle.drain_timeout` is the one the workers use when a later drain starts,
/// whether it went up or down.
fn reloaded_drain_timeout_applies(driver: Driver) {
    let _g = serial();
    let app = backend();
    let b = backend();

    // 2 s → 6 s: a 4 s download started before the drain completes.
    let mut p = ArcProc::start_with(driver, app.addr, b.addr, &[], "drain_timeout: 2s");
    p.reload_lifecycle("drain_timeout: 6s");
    let download = slow_download(p.http, 4000);
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    p.signal("TERM");
    let got = download.join().expect("download thread");
    assert_eq!(got, 65536, "download cut; log:\n{}", p.log());
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0), "{}", p.log());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(3000) && took < Duration::from_millis(6500),
        "drain took {took:?}"
    );
    drop(p);

    // 6 s → 2 s: a 5 s download is cut at the new 2 s deadline.
    let mut p = ArcProc::start_with(driver, app.addr, b.addr, &[], "drain_timeout: 6s");
    p.reload_lifecycle("drain_timeout: 2s");
    let download = slow_download(p.http, 5000);
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0), "{}", p.log());
    let took = started.elapsed();
    let got = download.join().expect("download thread");
    assert!(got < 65536, "the download outlived the 2 s deadline");
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_millis(3500),
        "the reloaded deadline is 2 s; the drain took {took:?}; log:\n{}",
        p.log()
    );
}

fn systemd_notifications_and_watchdog(driver: Driver) {
    let _g = serial();
    let app = backend();
    let b = backend();
    let p = ArcProc::start(
        driver,
        app.addr,
        b.addr,
        &[
            ("WATCHDOG_USEC", "400000"),
            ("ARC_DEBUG_WEDGE_WORKER0_AFTER", "2000"),
        ],
    );
    let ready_at = p
        .systemd
        .all()
        .iter()
        .find(|(_, m)| m.contains("READY=1"))
        .map(|(t, _)| *t)
        .expect("READY");
    // Pings every 200 ms while the workers turn (idle ones too).
    assert!(
        p.systemd
            .wait_count("WATCHDOG=1", 5, Duration::from_secs(3))
    );
    assert_eq!(
        p.get(p.admin, "/healthz").map(|r| r.status),
        Some(200),
        "live before the wedge"
    );
    // Worker 0 wedges 2 s after start and counts as wedged 5 s later: pings stop.
    thread::sleep(Duration::from_secs(9).saturating_sub(ready_at.elapsed()));
    let pings: Vec<Instant> = p
        .systemd
        .all()
        .iter()
        .filter(|(_, m)| m.contains("WATCHDOG=1"))
        .map(|(t, _)| *t)
        .collect();
    let last = *pings.last().expect("pings");
    assert!(
        last.elapsed() >= Duration::from_millis(1200),
        "pings go on with a wedged worker (last {:?} ago)",
        last.elapsed()
    );
    assert!(
        pings.len() >= 15,
        "too few pings before the wedge: {}",
        pings.len()
    );
    let log = p.log();
    assert!(log.contains("wedged"), "{log}");
    // Liveness (SPEC §5): /healthz fails once a worker has not turned for 5 s, naming it.
    let health = p.get(p.admin, "/healthz").expect("/healthz answers");
    let body = String::from_utf8_lossy(&health.body).into_owned();
    assert_eq!(health.status, 503, "{body}");
    assert!(body.contains("worker(s) [0]"), "{body}");
    // Dropping `p` kills the process (its worker is wedged on purpose).
}

per_driver!(
    fifty_hot_reloads_lose_nothing,
    rejected_reload_keeps_serving,
    drain_finishes_slow_downloads,
    drain_loses_no_request_of_busy_keep_alive_clients,
    binary_upgrade_loses_nothing,
    failed_upgrade_loses_no_connection,
    upgrade_to_configured_binary,
    reloaded_drain_timeout_applies,
    systemd_notifications_and_watchdog,
);

// ---- soak (run by bench/soak.sh) ----

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// nginx in a private prefix, proxying to `app` with upstream keep-alive like Arc's pool.
struct Nginx {
    dir: PathBuf,
    conf: PathBuf,
}

impl Nginx {
    fn start(app: SocketAddr, port: u16) -> Nginx {
        let dir = std::env::temp_dir().join(format!("arc-soak-nginx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("logs")).expect("nginx dir");
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log warn;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{\n  access_log off;\n  keepalive_requests 1000;\n\
                 upstream app {{ server {app}; keepalive 64; }}\n\
                 server {{\n    listen 127.0.0.1:{port} reuseport;\n\
                 location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n  }}\n}}\n",
                d = dir.display()
            ),
        )
        .expect("nginx.conf");
        let n = Nginx { dir, conf };
        let ok = n.run(&[]);
        assert!(ok, "nginx did not start (is it installed?)");
        n
    }

    fn run(&self, extra: &[&str]) -> bool {
        Command::new("nginx")
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(&self.conf)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.run(&["-s", "quit"]);
        thread::sleep(Duration::from_millis(500));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Steady load for `ARC_SOAK_SECS` (default 120) against `ARC_SOAK_TARGET` (`arc-epoll`,
/// `arc-io_uring` or `nginx`) with a reload every `ARC_SOAK_RELOAD_MS` (default 500): SIGHUP for
/// Arc (every `ARC_SOAK_UPGRADE_EVERY`-th one, default 10, is a SIGUSR2 binary upgrade instead),
/// `nginx -s reload` for nginx. Prints the totals; fails when Arc lost anything.
#[test]
#[ignore = "minutes long; run by bench/soak.sh"]
fn soak() {
    let _g = serial();
    let secs = env_num("ARC_SOAK_SECS", 120);
    let every = Duration::from_millis(env_num("ARC_SOAK_RELOAD_MS", 500));
    let upgrade_every = env_num("ARC_SOAK_UPGRADE_EVERY", 10);
    let threads = usize::try_from(env_num("ARC_SOAK_THREADS", 8)).unwrap_or(8);
    let target = std::env::var("ARC_SOAK_TARGET").unwrap_or_else(|_| "arc-epoll".into());
    let app = backend();
    let b = backend();
    let duration = Duration::from_secs(secs);
    let (mut reloads, mut upgrades) = (0u64, 0u64);
    let totals;
    if target == "nginx" {
        let port = free_port();
        let nginx = Nginx::start(app.addr, port);
        thread::sleep(Duration::from_millis(500));
        let load = Load::start(
            SocketAddr::from(([127, 0, 0, 1], port)),
            threads,
            Duration::from_millis(2),
            duration + Duration::from_secs(30),
        );
        let until = Instant::now() + duration;
        while Instant::now() < until {
            thread::sleep(every);
            if nginx.run(&["-s", "reload"]) {
                reloads += 1;
            }
        }
        thread::sleep(Duration::from_secs(1));
        totals = load.finish();
    } else {
        let driver = if target == "arc-io_uring" {
            Driver::Uring
        } else {
            Driver::Epoll
        };
        let mut p = ArcProc::start(driver, app.addr, b.addr, &[]);
        let mut pid = p.pid();
        let load = Load::start(
            p.http,
            threads,
            Duration::from_millis(2),
            duration + Duration::from_secs(30),
        );
        let until = Instant::now() + duration;
        let mut n = 0u64;
        while Instant::now() < until {
            thread::sleep(every);
            n += 1;
            if upgrade_every > 0 && n.is_multiple_of(upgrade_every) {
                let before = p.systemd.count_prefix("MAINPID=");
                signal(pid, "USR2");
                let wait = Instant::now() + Duration::from_secs(30);
                while p.systemd.count_prefix("MAINPID=") == before && Instant::now() < wait {
                    thread::sleep(Duration::from_millis(10));
                }
                let new = p
                    .systemd
                    .last_prefix("MAINPID=")
                    .and_then(|v| v.parse::<i32>().ok());
                match new {
                    Some(new) if new != pid => {
                        assert!(
                            process_gone(pid, Duration::from_secs(15)),
                            "old process stays"
                        );
                        pid = new;
                        upgrades += 1;
                    }
                    _ => panic!("upgrade {n} did not complete; log:\n{}", p.log()),
                }
            } else {
                p.write_config(&Variant {
                    body: format!("v{n}"),
                    with_b: n.is_multiple_of(2),
                    level: "info",
                    idle: 60,
                });
                let before = p.systemd.count("READY=1");
                signal(pid, "HUP");
                assert!(
                    p.systemd
                        .wait_count("READY=1", before + 1, Duration::from_secs(10)),
                    "reload {n} not acknowledged"
                );
                reloads += 1;
            }
        }
        thread::sleep(Duration::from_secs(1));
        totals = load.finish();
        signal(pid, "TERM");
        assert!(process_gone(pid, Duration::from_secs(15)));
        let _ = p.wait_exit(Duration::from_secs(1));
    }
    let (t, last) = totals;
    println!(
        "SOAK target={target} seconds={secs} reloads={reloads} upgrades={upgrades} sent={} ok={} failed={} reset={} refused={} last_error={last:?}",
        t.sent, t.ok, t.failed, t.resets, t.refused
    );
    if target != "nginx" {
        assert_eq!((t.failed, t.resets, t.refused), (0, 0, 0), "{t:?} {last:?}");
    }
}
