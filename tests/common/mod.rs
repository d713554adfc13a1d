//! The one home of the helpers shared by the integration tests (`tests/*.rs`): every test file
//! that needs one declares `mod common;` and uses it from here instead of keeping a copy.
//!
//! - this module: a loopback HTTP/1.1 [`backend`], a raw client ([`connect`],
//!   [`read_response`]), waiting ([`wait_until`]), ports ([`free_port`], [`closed_port`]),
//!   scratch directories ([`temp_dir`], [`ScratchDir`]), one-at-a-time tests ([`serial`]),
//!   process memory ([`rss_kib`]) and byte patterns;
//! - [`driver`]: the two io drivers as a test parameter and `per_driver!`, which turns scenarios
//!   written once into `epoll::*` and `io_uring::*` tests;
//! - [`relay`]: the relay handler, driver harness and line backends of the io driver tests
//!   (`driver_conformance.rs`, `uring_driver.rs`);
//! - [`server`]: Arc's data plane started in-process from a YAML configuration;
//! - [`tls`]: the accept-any-certificate verifier, client configs, the driver tests' listener
//!   certificate, PEM/base64, TLS record checks; [`ca`]: a test certificate authority;
//! - [`secrets`]: the check run at the end of every test on each captured Arc log: no token,
//!   no private key, no Secret value in it;
//! - [`alloc`]: the counting allocator type (each binary that counts declares the
//!   `#[global_allocator]` itself).
//!
//! Everything runs on std threads and sockets with timeouts, so no test can hang. Not every
//! binary uses every helper, hence `allow(dead_code)`.

#![allow(dead_code)]

pub mod alloc;
pub mod ca;
pub mod driver;
pub mod relay;
pub mod secrets;
pub mod server;
pub mod tls;

#[allow(unused_imports)]
pub use driver::Driver;
#[allow(unused_imports)]
pub(crate) use driver::per_driver;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A loopback HTTP/1.1 backend. Every response carries `X-Backend: <name>` and echoes the
/// request path in `X-Path`; `/len/N` answers N bytes, `/chunked` answers a chunked body,
/// `/pattern/N` answers N bytes of [`pattern`] (content-length), `/pchunked/N` the same as a
/// chunked body, `/die` sends a partial body then closes, `/echo` returns the request body,
/// `/ws` accepts a WebSocket-style upgrade and then echoes raw bytes.
pub struct Backend {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    /// Connections currently open (a connection's thread ends when the peer closes it).
    pub open: Arc<AtomicUsize>,
}

pub fn backend(name: &'static str) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
    let addr = listener.local_addr().expect("backend addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let (c, r, o) = (
        Arc::clone(&connections),
        Arc::clone(&requests),
        Arc::clone(&open),
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            c.fetch_add(1, Ordering::SeqCst);
            o.fetch_add(1, Ordering::SeqCst);
            let (r, o) = (Arc::clone(&r), Arc::clone(&o));
            std::thread::spawn(move || {
                serve_conn(stream, name, &r);
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Backend {
        addr,
        connections,
        requests,
        open,
    }
}

fn serve_conn(mut s: TcpStream, name: &str, requests: &AtomicUsize) {
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let mut buf = Vec::new();
    loop {
        let Some((head, body)) = read_request(&mut s, &mut buf) else {
            return;
        };
        requests.fetch_add(1, Ordering::SeqCst);
        let path = head
            .lines()
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("/")
            .to_string();
        let common = format!("X-Backend: {name}\r\nX-Path: {path}\r\n");
        let ok = if let Some(n) = path.strip_prefix("/len/") {
            let n: usize = n.parse().unwrap_or(0);
            let head = format!("HTTP/1.1 200 OK\r\n{common}Content-Length: {n}\r\n\r\n");
            if n <= 256 * 1024 {
                // Head and body in one write, as a sendfile server sends them: the proxy
                // receives the whole response in one burst.
                let mut all = head.into_bytes();
                all.resize(all.len() + n, b'z');
                s.write_all(&all).is_ok()
            } else {
                if s.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let chunk = vec![b'z'; 64 * 1024];
                let mut left = n;
                while left > 0 {
                    let k = left.min(chunk.len());
                    if s.write_all(&chunk[..k]).is_err() {
                        return;
                    }
                    left -= k;
                }
                true
            }
        } else if let Some(n) = path.strip_prefix("/pattern/") {
            // N bytes of a position-dependent pattern, written in uneven pieces.
            let n: usize = n.parse().unwrap_or(0);
            let head = format!("HTTP/1.1 200 OK\r\n{common}Content-Length: {n}\r\n\r\n");
            let body = pattern(n);
            s.write_all(head.as_bytes()).is_ok()
                && body
                    .chunks(7 * 1024 + 13)
                    .all(|piece| s.write_all(piece).is_ok())
        } else if let Some(n) = path.strip_prefix("/pchunked/") {
            // The same pattern as a chunked body with chunks of varying sizes.
            let n: usize = n.parse().unwrap_or(0);
            let head = format!("HTTP/1.1 200 OK\r\n{common}Transfer-Encoding: chunked\r\n\r\n");
            let body = pattern(n);
            let mut out = head.into_bytes();
            let mut at = 0;
            let mut size = 1;
            while at < n {
                let k = size.min(n - at);
                out.extend_from_slice(format!("{k:x}\r\n").as_bytes());
                out.extend_from_slice(&body[at..at + k]);
                out.extend_from_slice(b"\r\n");
                at += k;
                size = size * 3 + 1;
                if size > 100_000 {
                    size = 17;
                }
            }
            out.extend_from_slice(b"0\r\n\r\n");
            s.write_all(&out).is_ok()
        } else if path == "/chunked" {
            let r = format!(
                "HTTP/1.1 200 OK\r\n{common}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            );
            s.write_all(r.as_bytes()).is_ok()
        } else if path == "/die" {
            let r = format!("HTTP/1.1 200 OK\r\n{common}Content-Length: 1000\r\n\r\npartial");
            let _ = s.write_all(r.as_bytes());
            return;
        } else if path == "/ws" {
            let r = format!(
                "HTTP/1.1 101 Switching Protocols\r\n{common}Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            );
            if s.write_all(r.as_bytes()).is_err() {
                return;
            }
            let mut b = [0u8; 4096];
            if !buf.is_empty() && s.write_all(&buf).is_err() {
                return;
            }
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
        } else {
            let r = format!(
                "HTTP/1.1 200 OK\r\n{common}Content-Length: {}\r\n\r\n",
                body.len()
            );
            s.write_all(r.as_bytes()).is_ok() && s.write_all(&body).is_ok()
        };
        if !ok || head.to_ascii_lowercase().contains("connection: close") {
            return;
        }
    }
}

/// Reads one request (head + content-length or chunked body) from `s`, using `buf` for
/// leftovers. Returns the head text and the decoded body.
fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        let mut b = [0u8; 8192];
        match s.read(&mut b) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if let Some(cl) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        while buf.len() < cl {
            let mut b = [0u8; 65536];
            match s.read(&mut b) {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&b[..n]),
            }
        }
        body = buf.drain(..cl).collect();
    } else if lower.contains("transfer-encoding: chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = find(buf, b"\r\n") {
                    break i;
                }
                let mut b = [0u8; 8192];
                match s.read(&mut b) {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&b[..n]),
                }
            };
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&buf[..line_end])
                    .split(';')
                    .next()?
                    .trim(),
                16,
            )
            .ok()?;
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                let mut b = [0u8; 8192];
                match s.read(&mut b) {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&b[..n]),
                }
            }
            if size == 0 {
                buf.drain(..2);
                break;
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
        }
    }
    Some((head, body))
}

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A raw client connection with timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to arc");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s
}

/// Reads one response (head + body by content-length, chunked, or until close) from a client
/// connection; `buf` keeps leftovers for pipelined responses.
pub fn read_response(s: &mut impl Read, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        let mut b = [0u8; 65536];
        match s.read(&mut b) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    let lower = head.to_ascii_lowercase();
    if head.starts_with("HTTP/1.1 101") {
        return Some((head, Vec::new()));
    }
    let cl = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let body;
    if let Some(cl) = cl {
        while buf.len() < cl {
            let mut b = [0u8; 65536];
            match s.read(&mut b) {
                Ok(0) | Err(_) => return Some((head, std::mem::take(buf))),
                Ok(n) => buf.extend_from_slice(&b[..n]),
            }
        }
        body = buf.drain(..cl).collect();
    } else if lower.contains("transfer-encoding: chunked") {
        loop {
            if let Some(i) = find(buf, b"0\r\n\r\n") {
                body = buf.drain(..i + 5).collect();
                break;
            }
            let mut b = [0u8; 65536];
            match s.read(&mut b) {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&b[..n]),
            }
        }
    } else {
        let mut b = [0u8; 65536];
        loop {
            match s.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&b[..n]),
            }
        }
        body = std::mem::take(buf);
    }
    Some((head, body))
}

/// Resident set size of this process in KiB (fails the test when it cannot be read, so a
/// memory bound is never checked against a zero).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .expect("VmRSS in /proc/self/status")
}

/// `n` bytes whose value depends on their position (a reordered or repeated piece shows).
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i % 251) as u8 ^ (i / 251 % 256) as u8)
        .collect()
}

/// Decodes a chunked body (as `read_response` returns it, up to and including the last chunk).
pub fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = find(body, b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&body[..line]).ok()?, 16).ok()?;
        body = body.get(line + 2..)?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// Polls `cond` every 5 ms until it holds; fails the test naming `what` after 10 s.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the tests of a binary that take it one at a time (held for the test's duration):
/// tests that read the process RSS, measure timing, or load the 2-core machine heavily.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A loopback port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    closed_port().port()
}

/// A loopback address nothing listens on (bound to port 0, then released): connecting to it is
/// refused.
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("addr")
}

/// A fresh empty directory `<tmp>/arc-<tag>-<pid>-<n>`, unique within this process; the caller
/// removes it (or not, to keep it for a failure's post-mortem).
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "arc-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A [`temp_dir`] removed when dropped.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> Self {
        Self(temp_dir(tag))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `name` in the directory; its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write a scratch file");
        path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The value of the exact `series` (name and labels as printed) in a Prometheus text scrape.
pub fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(str::trim)
}

/// The `arc-gateway` binary cargo built for these tests.
pub const ARC_BIN: &str = env!("CARGO_BIN_EXE_arc-gateway");

/// A command running the `arc-gateway` binary cargo built for these tests.
pub fn arc_command() -> std::process::Command {
    std::process::Command::new(ARC_BIN)
}
