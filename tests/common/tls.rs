//! TLS helpers shared by the test binaries: the accept-any-certificate verifier, the listener
//! fixture of the driver tests (a `proxy.test` certificate under a fresh [`TestCa`]), PEM and
//! base64 encoding, and record-level checks of what a server sends during a handshake.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_gateway::proxy::tls::{
    self as arc_tls, CertResolver, CertStore, LoadedCert, TlsAcceptor, TlsAcceptorConfig,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use super::ca::TestCa;

/// Accepts any certificate (but still checks handshake signatures), so tests can look at what
/// the server presented when it is not meant to verify (the default certificate).
#[derive(Debug)]
pub struct AcceptAnyCert;

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &arc_tls::provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &arc_tls::provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        arc_tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration (Arc's crypto provider, safe default versions) that accepts any
/// server certificate through [`AcceptAnyCert`].
pub fn accept_any_client() -> ClientConfig {
    ClientConfig::builder_with_provider(arc_tls::provider())
        .with_safe_default_protocol_versions()
        .expect("the provider supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert))
        .with_no_client_auth()
}

/// A client configuration (Arc's crypto provider, safe default versions) trusting `ca` only.
pub fn client_trusting(ca: &TestCa) -> Arc<ClientConfig> {
    Arc::new(
        ClientConfig::builder_with_provider(arc_tls::provider())
            .with_safe_default_protocol_versions()
            .expect("the provider supports the default protocol versions")
            .with_root_certificates(ca.roots())
            .with_no_client_auth(),
    )
}

/// The name the driver tests' listener certificate is issued for.
pub const PROXY_NAME: &str = "proxy.test";

/// A listener acceptor with `settings` serving a certificate for [`PROXY_NAME`] from a fresh
/// CA (and a generated default certificate for other names), and a client config trusting
/// that CA.
pub fn proxy_acceptor(settings: &TlsAcceptorConfig) -> (Arc<TlsAcceptor>, Arc<ClientConfig>) {
    let ca = TestCa::new();
    let mut store = CertStore::builder(LoadedCert::generate_default().expect("default cert"));
    store
        .add(&[PROXY_NAME], ca.loaded(&[PROXY_NAME]))
        .expect("add the leaf");
    let resolver = CertResolver::new(store.build());
    let acceptor = TlsAcceptor::new(settings, resolver).expect("acceptor");
    (Arc::new(acceptor), client_trusting(&ca))
}

/// A TLS client stream over a plain connection (the handshake runs on first use).
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS client for `name` over `sock`.
pub fn tls_over(sock: TcpStream, config: &Arc<ClientConfig>, name: &str) -> TlsStream {
    let name = ServerName::try_from(name.to_string()).expect("a valid server name");
    let conn = rustls::ClientConnection::new(Arc::clone(config), name).expect("client session");
    rustls::StreamOwned::new(conn, sock)
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// PEM text of `der` under `label` (64 columns).
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = base64(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

// ---------------------------------------------------------------- record-level checks

/// Reads from `sock` until `n` whole TLS records arrived (bounded by time) and returns their
/// (content type, length) and bytes; a partial record beyond them fails the test.
pub fn read_tls_records(sock: &mut TcpStream, n: usize) -> (Vec<(u8, usize)>, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let mut records = Vec::new();
        let mut pos = 0;
        while let Some(h) = bytes.get(pos..pos + 5) {
            let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
            if bytes.len() < pos + 5 + len {
                break;
            }
            records.push((h[0], len));
            pos += 5 + len;
        }
        if records.len() >= n && pos == bytes.len() {
            return (records, bytes);
        }
        assert!(Instant::now() < deadline, "got {records:?} of {n} records");
        match sock.read(&mut buf) {
            Ok(0) => panic!("closed after {records:?}"),
            Ok(k) => bytes.extend_from_slice(&buf[..k]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Hands received ciphertext to the client session.
pub fn client_takes(conn: &mut rustls::ClientConnection, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        conn.read_tls(&mut bytes).unwrap();
        conn.process_new_packets().unwrap();
    }
}

/// With resumption off, the server's handshake flight is ServerHello (plus a compatibility
/// ChangeCipherSpec) and ONE encrypted record; after the client's Finished no ticket follows;
/// a response leaves as one record.
pub fn flight_and_response_are_single_records(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_nodelay(true).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from(PROXY_NAME).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
    conn.write_tls(&mut sock).unwrap();
    let (first, bytes) = read_tls_records(&mut sock, 1);
    assert_eq!(first[0].0, 22, "ServerHello first: {first:?}");
    let (records, bytes) = if first.iter().any(|r| r.0 == 23) {
        (first, bytes)
    } else {
        let (more, rest) = read_tls_records(&mut sock, 1);
        let mut all = first;
        all.extend(more);
        let mut b = bytes;
        b.extend(rest);
        (all, b)
    };
    let encrypted: Vec<_> = records.iter().filter(|r| r.0 == 23).collect();
    assert_eq!(
        encrypted.len(),
        1,
        "the encrypted flight is one record: {records:?}"
    );
    client_takes(&mut conn, &bytes);
    assert!(!conn.is_handshaking());
    conn.writer().write_all(b"REQ\n").unwrap();
    while conn.wants_write() {
        conn.write_tls(&mut sock).unwrap();
    }
    let (records, bytes) = read_tls_records(&mut sock, 1);
    assert_eq!(
        records.len(),
        1,
        "no ticket, one response record: {records:?}"
    );
    client_takes(&mut conn, &bytes);
    let mut line = Vec::new();
    // Ends with WouldBlock once the plaintext is taken; what was read is kept.
    let _ = conn.reader().read_to_end(&mut line);
    assert_eq!(line, b"OK 1\n");
    // Nothing else follows (no NewSessionTicket).
    let mut buf = [0u8; 64];
    match sock.read(&mut buf) {
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut => {}
        other => panic!("unexpected bytes after the response: {other:?}"),
    }
}
