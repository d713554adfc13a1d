//! `arc-tlsload` against in-test servers on 127.0.0.1:0: a rustls server answering 200 (every
//! connection a full handshake, nothing resumed), one answering 503, a plain-TCP server, one
//! whose handshake signature does not match its certificate, and the binary's arguments and
//! JSON line.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use arc_bench_tools::tlsload::{self, KeyExchange, LoadSpec, Report};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::ServerConnection;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{HandshakeKind, ServerConfig};

/// Every server socket operation and the accept loop are bounded by this.
const SERVER_LIMIT: Duration = Duration::from_secs(20);

#[derive(Clone)]
enum Answer {
    /// TLS, then this status line, then close.
    Tls(Arc<ServerConfig>, &'static str),
    /// No TLS at all: a plain HTTP answer to whatever arrives.
    Plain,
}

#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    answered: AtomicU64,
    not_full: AtomicU64,
}

/// An accept loop on 127.0.0.1:0, a thread per connection, stopped on drop.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let (stop2, counts2) = (Arc::clone(&stop), Arc::clone(&counts));
        let accept = thread::spawn(move || {
            let until = Instant::now() + SERVER_LIMIT;
            while !stop2.load(Ordering::Relaxed) && Instant::now() < until {
                match listener.accept() {
                    Ok((sock, _)) => {
                        counts2.accepted.fetch_add(1, Ordering::Relaxed);
                        let (answer, counts) = (answer.clone(), Arc::clone(&counts2));
                        thread::spawn(move || serve(sock, answer, &counts));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        Self {
            addr,
            stop,
            counts,
            accept: Some(accept),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn serve(mut sock: TcpStream, answer: Answer, counts: &Counts) {
    let _ = sock.set_nonblocking(false);
    let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = sock.set_write_timeout(Some(Duration::from_secs(5)));
    match answer {
        Answer::Plain => {
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf);
            let _ = sock.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
            counts.answered.fetch_add(1, Ordering::Relaxed);
        }
        Answer::Tls(config, status) => {
            let Ok(mut conn) = ServerConnection::new(config) else {
                return;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            {
                let mut tls = rustls::Stream::new(&mut conn, &mut sock);
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if !head.starts_with(b"GET /b0 HTTP/1.0\r\nHost: bench.test\r\n") {
                    return;
                }
                // Counted before the answer leaves, so a client never sees more answers than
                // the counts hold.
                if conn_kind_not_full(tls.conn) {
                    counts.not_full.fetch_add(1, Ordering::Relaxed);
                }
                counts.answered.fetch_add(1, Ordering::Relaxed);
                let response = format!("{status}\r\nContent-Length: 0\r\n\r\n");
                if tls.write_all(response.as_bytes()).is_err() {
                    return;
                }
            }
            conn.send_close_notify();
            while conn.wants_write() {
                if conn.write_tls(&mut sock).is_err() {
                    return;
                }
            }
        }
    }
}

fn conn_kind_not_full(conn: &ServerConnection) -> bool {
    conn.handshake_kind() != Some(HandshakeKind::Full)
}

/// A self-signed ECDSA P-256 certificate for bench.test and its key.
fn cert_and_key() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec!["bench.test".to_string()]).expect("rcgen");
    let key = PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
    (ck.cert.der().clone(), key.into())
}

/// A TLS 1.3 server config with resumption available (tickets and a session cache), so a
/// client that tried to resume could.
fn server_config(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let signing = provider
        .key_provider
        .load_private_key(key)
        .expect("load key");
    let certified = CertifiedKey::new(vec![cert], signing);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.send_tls13_tickets = 2;
    Arc::new(config)
}

fn spec(addr: SocketAddr, secs: f64) -> LoadSpec {
    LoadSpec {
        addr,
        sni: "bench.test".into(),
        path: "/b0".into(),
        concurrency: 2,
        duration: Duration::from_secs_f64(secs),
        warmup: Duration::ZERO,
        io_timeout: Duration::from_secs(2),
        key_exchange: KeyExchange::X25519,
    }
}

fn run_bounded(spec: &LoadSpec) -> Report {
    let t0 = Instant::now();
    let report = tlsload::run(spec).expect("run");
    // Warm-up + duration + the one-second tail grace, with room for a slow machine.
    let bound = spec.warmup + spec.duration + Duration::from_secs(3);
    assert!(t0.elapsed() < bound, "run took {:?}", t0.elapsed());
    report
}

#[test]
fn every_connection_is_a_full_handshake_answered_200() {
    let (cert, key) = cert_and_key();
    let server = Server::start(Answer::Tls(server_config(cert, key), "HTTP/1.0 200 OK"));
    let report = run_bounded(&spec(server.addr, 1.0));
    assert!(report.handshakes > 0, "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(report.seconds, 1.0);
    assert!((report.rate - report.handshakes as f64).abs() < 1e-9);
    assert_eq!(report.key_exchange.as_deref(), Some("X25519"));
    assert!(
        report
            .cipher_suite
            .as_deref()
            .is_some_and(|s| s.starts_with("TLS13_")),
        "{report:?}"
    );
    let answered = server.counts.answered.load(Ordering::Relaxed);
    assert!(answered >= report.completed_total, "{answered} {report:?}");
    assert_eq!(server.counts.not_full.load(Ordering::Relaxed), 0);
}

#[test]
fn warm_up_completions_are_not_counted() {
    let (cert, key) = cert_and_key();
    let server = Server::start(Answer::Tls(server_config(cert, key), "HTTP/1.1 200 OK"));
    let mut s = spec(server.addr, 0.5);
    s.warmup = Duration::from_millis(500);
    let report = run_bounded(&s);
    assert!(report.handshakes > 0, "{report:?}");
    assert!(report.completed_total > report.handshakes, "{report:?}");
    assert_eq!(report.seconds, 0.5);
}

#[test]
fn non_200_answers_count_as_failed() {
    let (cert, key) = cert_and_key();
    let server = Server::start(Answer::Tls(
        server_config(cert, key),
        "HTTP/1.0 503 Service Unavailable",
    ));
    let report = run_bounded(&spec(server.addr, 0.5));
    assert_eq!(report.handshakes, 0, "{report:?}");
    assert_eq!(report.completed_total, 0, "{report:?}");
    assert!(report.failed > 0, "{report:?}");
    assert_eq!(report.rate, 0.0);
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert!(report.errors[0].contains("503"), "{report:?}");
}

#[test]
fn a_plain_tcp_server_fails_the_handshake() {
    let server = Server::start(Answer::Plain);
    let report = run_bounded(&spec(server.addr, 0.5));
    assert_eq!(report.handshakes, 0, "{report:?}");
    assert!(report.failed > 0, "{report:?}");
    assert!(
        report.errors.iter().all(|e| e.starts_with("handshake: ")),
        "{report:?}"
    );
}

#[test]
fn a_handshake_signature_not_made_by_the_certificate_key_is_refused() {
    // The certificate of one key, handshakes signed with another: chain and name are not
    // checked, the signature is.
    let (cert, _) = cert_and_key();
    let (_, other_key) = cert_and_key();
    let server = Server::start(Answer::Tls(
        server_config(cert, other_key),
        "HTTP/1.0 200 OK",
    ));
    let report = run_bounded(&spec(server.addr, 0.5));
    assert_eq!(report.handshakes, 0, "{report:?}");
    assert!(report.failed > 0, "{report:?}");
    assert!(
        report
            .errors
            .iter()
            .all(|e| e.starts_with("handshake: ") && e.contains("Signature")),
        "{report:?}"
    );
}

#[test]
fn connection_refused_is_counted_failed_within_the_duration() {
    // A port that was free a moment ago: nothing listens there.
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let report = run_bounded(&spec(addr, 0.3));
    assert_eq!(report.handshakes, 0);
    assert!(report.failed > 0);
    assert!(report.errors.iter().all(|e| e.starts_with("connect: ")));
}

#[test]
fn binary_prints_one_json_line() {
    let (cert, key) = cert_and_key();
    let server = Server::start(Answer::Tls(server_config(cert, key), "HTTP/1.0 200 OK"));
    let out = Command::new(env!("CARGO_BIN_EXE_arc-tlsload"))
        .args(["--connect", &server.addr.to_string(), "--sni", "bench.test"])
        .args(["--path", "/b0", "--concurrency", "2", "--duration", "0.5"])
        .output()
        .expect("run arc-tlsload");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let j: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert!(j["handshakes"].as_u64().is_some_and(|n| n > 0), "{j}");
    assert_eq!(j["failed"].as_u64(), Some(0), "{j}");
    assert_eq!(j["seconds"].as_f64(), Some(0.5), "{j}");
    assert!(j["rate"].as_f64().is_some_and(|r| r > 0.0), "{j}");
    assert_eq!(j["errors"].as_array().map(Vec::len), Some(0), "{j}");
    assert_eq!(j["key_exchange"].as_str(), Some("X25519"), "{j}");
}

#[test]
fn binary_refuses_bad_arguments() {
    let bin = env!("CARGO_BIN_EXE_arc-tlsload");
    let cases: [&[&str]; 4] = [
        &["--connect", "localhost:80", "--duration", "1"],
        &["--connect", "127.0.0.1:1", "--duration=-1"],
        &[
            "--connect",
            "127.0.0.1:1",
            "--duration",
            "1",
            "--concurrency",
            "0",
        ],
        &[
            "--connect",
            "127.0.0.1:1",
            "--duration",
            "1",
            "--path",
            "no-slash",
        ],
    ];
    for args in cases {
        let out = Command::new(bin)
            .args(args)
            .output()
            .expect("run arc-tlsload");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("invalid") || stderr.contains("must"),
            "{args:?}: {stderr}"
        );
    }
}
