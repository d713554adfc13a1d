//! TLS 1.3 full-handshake load (`arc-tlsload`): a fixed set of worker threads, each opening one
//! connection after another to the same address until a deadline. Every connection is a full
//! handshake (resumption disabled, no early data) followed by one HTTP/1.0 request whose
//! response is read to the end; a connection counts when the answer was a complete `200`.
//!
//! The client is rustls with the aws-lc-rs provider, as in Arc itself, and blocking sockets: the
//! benchmark pins it to one CPU, where threads that block in the kernel cost less than an event
//! loop would save. Threads are created once per run, never per connection.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{SupportedKxGroup, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use serde::Serialize;

/// How many distinct error messages a [`Report`] keeps.
pub const MAX_ERRORS: usize = 5;

/// Response bytes kept per connection to check the status line and find the end of the head;
/// the rest of the response is read and dropped.
const HEAD_LIMIT: usize = 4096;

/// Extra time a connection still in flight at the deadline may take before its socket
/// operations time out: the whole run ends by warm-up + duration + this.
const TAIL_GRACE: Duration = Duration::from_secs(1);

/// The one key-exchange group the client offers (a key share for it alone, so no
/// HelloRetryRequest and every server does the same work).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyExchange {
    /// X25519: what OpenSSL 3.0 clients and servers pick first.
    #[default]
    X25519,
    /// NIST P-256 ECDHE.
    Secp256r1,
    /// The X25519 + ML-KEM-768 hybrid (only servers that support it can complete).
    X25519Mlkem768,
}

impl KeyExchange {
    fn group(self) -> &'static dyn SupportedKxGroup {
        use rustls::crypto::aws_lc_rs::kx_group;
        match self {
            Self::X25519 => kx_group::X25519,
            Self::Secp256r1 => kx_group::SECP256R1,
            Self::X25519Mlkem768 => kx_group::X25519MLKEM768,
        }
    }
}

/// What to run: where to connect, what to ask for, how many workers and for how long.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Server address (the TCP connect target).
    pub addr: SocketAddr,
    /// Server name sent as SNI (none for an IP address) and as the Host header.
    pub sni: String,
    /// Request target of the one `GET` per connection.
    pub path: String,
    /// Worker threads, each with one connection at a time.
    pub concurrency: usize,
    /// Measured window, after the warm-up.
    pub duration: Duration,
    /// Time at the start whose completions are not counted.
    pub warmup: Duration,
    /// Upper bound of every socket operation (connect, read, write).
    pub io_timeout: Duration,
    /// The key-exchange group offered.
    pub key_exchange: KeyExchange,
}

/// The outcome of a run, printed by `arc-tlsload` as one JSON line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Connections whose complete `200` response arrived inside the measured window.
    pub handshakes: u64,
    /// Connections that ended inside the measured window with anything else (connect error,
    /// TLS alert, timeout, non-200, truncated response).
    pub failed: u64,
    /// Length of the measured window in seconds.
    pub seconds: f64,
    /// `handshakes / seconds`.
    pub rate: f64,
    /// The first [`MAX_ERRORS`] distinct failure messages of the measured window.
    pub errors: Vec<String>,
    /// Complete `200` exchanges over the whole process (warm-up and the tail after the
    /// deadline included): the divisor for server CPU measured around the whole process.
    pub completed_total: u64,
    /// Key-exchange group of the first successful connection (e.g. `X25519`).
    pub key_exchange: Option<String>,
    /// Cipher suite of the first successful connection.
    pub cipher_suite: Option<String>,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Zero workers.
    #[error("--concurrency must be at least 1")]
    NoWorkers,
    /// Empty measured window.
    #[error("--duration must be more than 0 seconds")]
    NoDuration,
    /// Zero socket timeout (the OS refuses it).
    #[error("--timeout must be more than 0 seconds")]
    NoTimeout,
    /// `--sni` is neither a DNS name nor an IP address.
    #[error("invalid --sni {0:?}: not a DNS name or an IP address")]
    ServerName(String),
    /// `--path` could not be sent as a request target.
    #[error("invalid --path {0:?}: must start with '/' and hold no spaces or control characters")]
    Path(String),
    /// rustls refused the client configuration.
    #[error("TLS client configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The OS refused a worker thread.
    #[error("cannot start worker thread: {0}")]
    Spawn(io::Error),
}

/// Why one connection did not count.
#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("handshake: {0}")]
    Handshake(io::Error),
    #[error("request: {0}")]
    Request(io::Error),
    #[error("response: {0}")]
    Response(io::Error),
    #[error("connection closed before the end of the response head ({0} bytes received)")]
    Truncated(usize),
    #[error("status is not HTTP/1.x 200: {0:?}")]
    Status(String),
}

/// Server-certificate check of a benchmark client: the bench serves a self-signed certificate,
/// so chain building and name matching are skipped, but the handshake signatures (the server's
/// CertificateVerify) are verified against the certificate's public key with the provider's
/// algorithms. The client thus does the work of a TLS 1.3 client apart from PKI path building.
#[derive(Debug)]
pub struct SignatureOnlyVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl SignatureOnlyVerifier {
    /// A verifier using these signature algorithms (normally the provider's).
    pub fn new(algorithms: WebPkiSupportedAlgorithms) -> Self {
        Self { algorithms }
    }
}

impl ServerCertVerifier for SignatureOnlyVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The client configuration of a run: aws-lc-rs, TLS 1.3 only, one key-exchange group,
/// [`SignatureOnlyVerifier`], resumption disabled (every connection a full handshake), no
/// early data.
pub fn client_config(key_exchange: KeyExchange) -> Result<Arc<ClientConfig>, LoadError> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![key_exchange.group()];
    let verifier = Arc::new(SignatureOnlyVerifier::new(
        provider.signature_verification_algorithms,
    ));
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    config.enable_early_data = false;
    Ok(Arc::new(config))
}

/// Runs the load described by `spec` and returns its counts. Blocks for warm-up + duration
/// (plus at most [`TAIL_GRACE`] for connections in flight at the deadline).
pub fn run(spec: &LoadSpec) -> Result<Report, LoadError> {
    if spec.concurrency == 0 {
        return Err(LoadError::NoWorkers);
    }
    if spec.duration.is_zero() {
        return Err(LoadError::NoDuration);
    }
    if spec.io_timeout.is_zero() {
        return Err(LoadError::NoTimeout);
    }
    if !valid_target(&spec.path) {
        return Err(LoadError::Path(spec.path.clone()));
    }
    let server_name = ServerName::try_from(spec.sni.clone())
        .map_err(|_| LoadError::ServerName(spec.sni.clone()))?;
    let config = client_config(spec.key_exchange)?;
    let request = format!("GET {} HTTP/1.0\r\nHost: {}\r\n\r\n", spec.path, spec.sni).into_bytes();

    let start = Instant::now();
    let window = Window {
        from: start + spec.warmup,
        until: start + spec.warmup + spec.duration,
    };
    let tallies = thread::scope(|scope| {
        let mut handles = Vec::with_capacity(spec.concurrency);
        for i in 0..spec.concurrency {
            let worker = Worker {
                addr: spec.addr,
                config: Arc::clone(&config),
                server_name: server_name.clone(),
                request: &request,
                io_timeout: spec.io_timeout,
                head: Vec::with_capacity(HEAD_LIMIT),
                buf: vec![0; 16 * 1024],
            };
            let handle = thread::Builder::new()
                .name(format!("tlsload-{i}"))
                .spawn_scoped(scope, move || worker.run(window))
                .map_err(LoadError::Spawn)?;
            handles.push(handle);
        }
        // A worker never panics on I/O data; a panic is a bug worth propagating as such.
        Ok::<_, LoadError>(
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect::<Vec<_>>(),
        )
    })?;

    let mut report = Report {
        handshakes: 0,
        failed: 0,
        seconds: spec.duration.as_secs_f64(),
        rate: 0.0,
        errors: Vec::new(),
        completed_total: 0,
        key_exchange: None,
        cipher_suite: None,
    };
    for t in tallies {
        report.handshakes += t.ok;
        report.failed += t.failed;
        report.completed_total += t.completed_total;
        for e in t.errors {
            if report.errors.len() < MAX_ERRORS && !report.errors.contains(&e) {
                report.errors.push(e);
            }
        }
        if report.key_exchange.is_none() {
            report.key_exchange = t.key_exchange;
            report.cipher_suite = t.cipher_suite;
        }
    }
    report.rate = report.handshakes as f64 / report.seconds;
    Ok(report)
}

/// The measured window: completions at or after `from` and before `until` count.
#[derive(Clone, Copy)]
struct Window {
    from: Instant,
    until: Instant,
}

impl Window {
    fn counts(&self, at: Instant) -> bool {
        at >= self.from && at < self.until
    }
}

/// One worker's counts.
#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    completed_total: u64,
    errors: Vec<String>,
    key_exchange: Option<String>,
    cipher_suite: Option<String>,
}

/// One worker thread: its connection settings and the buffers it reuses across connections.
struct Worker<'a> {
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    request: &'a [u8],
    io_timeout: Duration,
    head: Vec<u8>,
    buf: Vec<u8>,
}

impl Worker<'_> {
    fn run(mut self, window: Window) -> Tally {
        let mut tally = Tally::default();
        loop {
            let now = Instant::now();
            if now >= window.until {
                break;
            }
            let left = window.until.saturating_duration_since(now) + TAIL_GRACE;
            let timeout = self.io_timeout.min(left);
            let want_info = tally.key_exchange.is_none();
            let result = self.exchange(timeout, want_info);
            let done = Instant::now();
            match result {
                Ok(info) => {
                    tally.completed_total += 1;
                    if window.counts(done) {
                        tally.ok += 1;
                        if let Some((kx, suite)) = info {
                            tally.key_exchange = Some(kx);
                            tally.cipher_suite = Some(suite);
                        }
                    }
                }
                Err(e) if window.counts(done) => {
                    tally.failed += 1;
                    if tally.errors.len() < MAX_ERRORS {
                        let msg = e.to_string();
                        if !tally.errors.contains(&msg) {
                            tally.errors.push(msg);
                        }
                    }
                }
                Err(_) => {}
            }
        }
        tally
    }

    /// One connection: connect, full handshake, one request, the response to its end. Returns
    /// the negotiated group and suite when `want_info`.
    fn exchange(
        &mut self,
        timeout: Duration,
        want_info: bool,
    ) -> Result<Option<(String, String)>, ExchangeError> {
        let mut sock =
            TcpStream::connect_timeout(&self.addr, timeout).map_err(ExchangeError::Connect)?;
        sock.set_nodelay(true).map_err(ExchangeError::Connect)?;
        sock.set_read_timeout(Some(timeout))
            .map_err(ExchangeError::Connect)?;
        sock.set_write_timeout(Some(timeout))
            .map_err(ExchangeError::Connect)?;
        let mut conn = ClientConnection::new(Arc::clone(&self.config), self.server_name.clone())
            .map_err(|e| ExchangeError::Handshake(io::Error::other(e)))?;
        // Buffered until the handshake completes, then sent with the client's Finished.
        conn.writer()
            .write_all(self.request)
            .map_err(ExchangeError::Request)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)
                .map_err(ExchangeError::Handshake)?;
        }
        while conn.wants_write() {
            conn.write_tls(&mut sock).map_err(ExchangeError::Request)?;
        }
        let info = if want_info {
            conn.negotiated_key_exchange_group()
                .zip(conn.negotiated_cipher_suite())
                .map(|(g, s)| (format!("{:?}", g.name()), format!("{:?}", s.suite())))
        } else {
            None
        };

        self.head.clear();
        let mut head_end = None;
        loop {
            match rustls::Stream::new(&mut conn, &mut sock).read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => {
                    if head_end.is_none() {
                        let room = HEAD_LIMIT - self.head.len();
                        let data = self.buf.get(..n.min(room)).unwrap_or_default();
                        self.head.extend_from_slice(data);
                        head_end = find_head_end(&self.head);
                    }
                }
                // A server closing without close_notify after the whole head: the response
                // (HTTP/1.0, delimited by the close) is taken as complete.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && head_end.is_some() => break,
                Err(e) => return Err(ExchangeError::Response(e)),
            }
        }
        if head_end.is_none() {
            return Err(ExchangeError::Truncated(self.head.len()));
        }
        if !is_ok_status(&self.head) {
            let line = self.head.split(|&b| b == b'\r').next().unwrap_or_default();
            return Err(ExchangeError::Status(
                String::from_utf8_lossy(line).into_owned(),
            ));
        }
        Ok(info)
    }
}

/// A request target that can be sent as is: starts with `/`, visible ASCII only.
fn valid_target(path: &str) -> bool {
    path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic())
}

/// Offset just past the `\r\n\r\n` that ends a response head, if present.
fn find_head_end(head: &[u8]) -> Option<usize> {
    head.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// Whether the response starts with an `HTTP/1.x 200` status line.
fn is_ok_status(head: &[u8]) -> bool {
    match (head.get(..7), head.get(7), head.get(8..12), head.get(12)) {
        (Some(b"HTTP/1."), Some(minor), Some(b" 200"), Some(end)) => {
            minor.is_ascii_digit() && (*end == b' ' || *end == b'\r')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LoadSpec {
        LoadSpec {
            addr: SocketAddr::from(([127, 0, 0, 1], 9)),
            sni: "bench.test".into(),
            path: "/b0".into(),
            concurrency: 1,
            duration: Duration::from_millis(10),
            warmup: Duration::ZERO,
            io_timeout: Duration::from_secs(1),
            key_exchange: KeyExchange::X25519,
        }
    }

    #[test]
    fn status_line_must_be_http1_200() {
        assert!(is_ok_status(b"HTTP/1.1 200 OK\r\n\r\n"));
        assert!(is_ok_status(b"HTTP/1.0 200\r\n\r\n"));
        assert!(!is_ok_status(b"HTTP/1.1 503 Service Unavailable\r\n\r\n"));
        assert!(!is_ok_status(b"HTTP/1.1 2000 OK\r\n"));
        assert!(!is_ok_status(b"HTTP/2 200\r\n"));
        assert!(!is_ok_status(b"HTTP/1.1 20"));
        assert!(!is_ok_status(b""));
    }

    #[test]
    fn head_end_is_after_the_blank_line() {
        assert_eq!(find_head_end(b"HTTP/1.0 200 OK\r\n\r\nbody"), Some(19));
        assert_eq!(find_head_end(b"HTTP/1.0 200 OK\r\nA: b\r\n"), None);
    }

    #[test]
    fn bad_specs_are_refused_before_any_connection() {
        let mut s = spec();
        s.concurrency = 0;
        assert!(matches!(run(&s), Err(LoadError::NoWorkers)));
        let mut s = spec();
        s.duration = Duration::ZERO;
        assert!(matches!(run(&s), Err(LoadError::NoDuration)));
        let mut s = spec();
        s.path = "/a b".into();
        assert!(matches!(run(&s), Err(LoadError::Path(_))));
        let mut s = spec();
        s.path = "b0".into();
        assert!(matches!(run(&s), Err(LoadError::Path(_))));
        let mut s = spec();
        s.sni = "bad name!".into();
        assert!(matches!(run(&s), Err(LoadError::ServerName(_))));
    }

    #[test]
    fn config_never_resumes_and_offers_one_group() {
        let config = client_config(KeyExchange::X25519).expect("config");
        assert!(!config.enable_early_data);
        assert_eq!(config.crypto_provider().kx_groups.len(), 1);
        assert_eq!(
            format!("{:?}", config.crypto_provider().kx_groups[0].name()),
            "X25519"
        );
    }
}
