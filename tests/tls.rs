//! In-memory TLS tests: a rustls client talks to Arc's `TlsSession` through byte buffers only.
//! Certificates are generated at test time with rcgen under a test CA that the client trusts.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_gateway::proxy::tls::{
    self, CertError, CertOrigin, CertResolver, CertStore, LoadedCert, TlsAcceptor,
    TlsAcceptorConfig, TlsError, TlsSession,
};
use common::ca::TestCa;
use common::tls::pem;
use common::{ScratchDir, pattern};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{
    AlertDescription, ClientConfig, ClientConnection, HandshakeKind, ProtocolVersion, RootCertStore,
};

// ---------------------------------------------------------------------------------------------
// Certificate fixtures

/// Splits one DER TLV off the front: (tag, contents, rest). Test inputs are well formed.
fn der_tlv(bytes: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = bytes[0];
    let (len, header) = if bytes[1] < 0x80 {
        (usize::from(bytes[1]), 2)
    } else {
        let count = usize::from(bytes[1] & 0x7f);
        let len = bytes[2..2 + count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, 2 + count)
    };
    (tag, &bytes[header..header + len], &bytes[header + len..])
}

/// The algorithm-specific key inside a PKCS#8 PrivateKeyInfo (PKCS#1 for RSA, SEC1 for EC).
fn pkcs8_inner(pkcs8: &[u8]) -> Vec<u8> {
    let (_, info, _) = der_tlv(pkcs8);
    let (_, _version, rest) = der_tlv(info);
    let (_, _alg, rest) = der_tlv(rest);
    let (tag, key, _) = der_tlv(rest);
    assert_eq!(tag, 0x04);
    key.to_vec()
}

// ---------------------------------------------------------------------------------------------
// Handshake plumbing

const MAX_ROUNDS: usize = 200;

fn acceptor(resolver: &Arc<CertResolver>) -> TlsAcceptor {
    TlsAcceptor::new(&TlsAcceptorConfig::default(), Arc::clone(resolver)).unwrap()
}

fn client_config(
    roots: RootCertStore,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn both_versions() -> Vec<&'static rustls::SupportedProtocolVersion> {
    vec![&rustls::version::TLS13, &rustls::version::TLS12]
}

/// A client accepting any certificate ([`common::tls::AcceptAnyCert`]), offering http/1.1.
fn any_cert_client(enable_sni: bool) -> Arc<ClientConfig> {
    let mut config = common::tls::accept_any_client();
    config.enable_sni = enable_sni;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A client and a server session joined by in-memory pipes.
struct Pair {
    client: ClientConnection,
    server: TlsSession,
    /// Client → server ciphertext not yet consumed by the server.
    to_server: Vec<u8>,
    /// Scratch buffers reused across rounds.
    to_client: Vec<u8>,
    server_plain: Vec<u8>,
    /// Largest piece of ciphertext handed to `feed` at once.
    piece: usize,
}

impl Pair {
    fn new(config: Arc<ClientConfig>, sni: &str, server: TlsSession) -> Self {
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        Self {
            client: ClientConnection::new(config, name).unwrap(),
            server,
            to_server: Vec::new(),
            to_client: Vec::new(),
            server_plain: Vec::new(),
            piece: usize::MAX,
        }
    }

    /// Moves bytes both ways once. Returns whether anything moved.
    fn round(&mut self) -> Result<bool, PumpError> {
        let mut moved = false;
        while self.client.wants_write() {
            let n = self.client.write_tls(&mut self.to_server).unwrap();
            moved |= n > 0;
        }
        while !self.to_server.is_empty() {
            let end = self.to_server.len().min(self.piece);
            let used = self
                .server
                .feed(&self.to_server[..end])
                .map_err(PumpError::Server)?;
            self.to_server.drain(..used);
            moved |= used > 0;
            let got = self
                .server
                .read_plaintext(&mut self.server_plain)
                .map_err(PumpError::Server)?;
            moved |= got > 0;
            if used == 0 && got == 0 {
                break;
            }
        }
        self.to_client.clear();
        self.server.write_ciphertext(&mut self.to_client);
        if !self.to_client.is_empty() {
            moved = true;
            let mut rest = &self.to_client[..];
            while !rest.is_empty() {
                self.client.read_tls(&mut rest).unwrap();
                self.client
                    .process_new_packets()
                    .map_err(PumpError::Client)?;
            }
        }
        Ok(moved)
    }

    /// Pumps until nothing moves (bounded).
    fn settle(&mut self) -> Result<(), PumpError> {
        for _ in 0..MAX_ROUNDS {
            if !self.round()? {
                return Ok(());
            }
        }
        panic!("connection did not settle in {MAX_ROUNDS} rounds");
    }

    fn handshake(&mut self) -> Result<(), PumpError> {
        self.settle()?;
        assert!(!self.client.is_handshaking(), "client still handshaking");
        assert!(self.server.handshake_complete(), "server still handshaking");
        Ok(())
    }

    fn presented_leaf(&self) -> CertificateDer<'static> {
        self.client.peer_certificates().unwrap()[0]
            .clone()
            .into_owned()
    }

    fn client_read_all(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match std::io::Read::read(&mut self.client.reader(), &mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("client read: {e}"),
            }
        }
        out
    }
}

#[derive(Debug)]
enum PumpError {
    Server(TlsError),
    Client(rustls::Error),
}

struct Fixture {
    ca: TestCa,
    default: LoadedCert,
    resolver: Arc<CertResolver>,
    a: LoadedCert,
    b: LoadedCert,
    wildcard: LoadedCert,
}

fn fixture() -> Fixture {
    let ca = TestCa::new();
    let default = LoadedCert::generate_default().unwrap();
    let a = ca.loaded(&["a.example.com"]);
    let b = ca.loaded(&["b.example.org"]);
    let wildcard = ca.loaded(&["*.apps.example.net"]);
    let mut builder = CertStore::builder(default.clone());
    builder.add(&["a.example.com"], a.clone()).unwrap();
    builder.add(&["B.Example.ORG."], b.clone()).unwrap();
    builder.add::<&str>(&[], wildcard.clone()).unwrap();
    let resolver = CertResolver::new(builder.build());
    Fixture {
        ca,
        default,
        resolver,
        a,
        b,
        wildcard,
    }
}

fn leaf_of(cert: &LoadedCert) -> CertificateDer<'static> {
    cert.certified_key().cert[0].clone()
}

fn connect_verified(f: &Fixture, sni: &str) -> Pair {
    let config = client_config(f.ca.roots(), &both_versions(), &[b"http/1.1"]);
    let mut pair = Pair::new(config, sni, acceptor(&f.resolver).accept().unwrap());
    pair.handshake().unwrap();
    pair
}

// ---------------------------------------------------------------------------------------------
// SNI selection

#[test]
fn each_sni_name_gets_its_own_verified_certificate() {
    let f = fixture();
    let a = connect_verified(&f, "a.example.com");
    assert_eq!(a.presented_leaf(), leaf_of(&f.a));
    assert_eq!(a.server.sni(), Some("a.example.com"));

    let b = connect_verified(&f, "b.example.org");
    assert_eq!(b.presented_leaf(), leaf_of(&f.b));
    assert_ne!(leaf_of(&f.a), leaf_of(&f.b));
}

#[test]
fn sni_lookup_ignores_case() {
    let f = fixture();
    let pair = connect_verified(&f, "A.EXAMPLE.com");
    assert_eq!(pair.presented_leaf(), leaf_of(&f.a));
    assert_eq!(pair.server.sni(), Some("a.example.com"));
}

#[test]
fn wildcard_matches_exactly_one_label() {
    let f = fixture();
    let pair = connect_verified(&f, "shop.apps.example.net");
    assert_eq!(pair.presented_leaf(), leaf_of(&f.wildcard));

    let store = f.resolver.current();
    assert!(store.lookup("x.apps.example.net").is_some());
    assert!(store.lookup("apps.example.net").is_none());
    assert!(store.lookup("a.b.apps.example.net").is_none());
    assert!(store.lookup(".apps.example.net").is_none());
}

#[test]
fn unknown_sni_gets_the_default_certificate_which_does_not_verify() {
    let f = fixture();
    let mut pair = Pair::new(
        any_cert_client(true),
        "unknown.example.com",
        acceptor(&f.resolver).accept().unwrap(),
    );
    pair.handshake().unwrap();
    assert_eq!(pair.presented_leaf(), leaf_of(&f.default));
    assert_eq!(pair.server.sni(), Some("unknown.example.com"));

    // A verifying client refuses it.
    let config = client_config(f.ca.roots(), &both_versions(), &[b"http/1.1"]);
    let mut strict = Pair::new(
        config,
        "unknown.example.com",
        acceptor(&f.resolver).accept().unwrap(),
    );
    match strict.settle() {
        Err(PumpError::Client(rustls::Error::InvalidCertificate(_))) => {}
        other => panic!("expected the client to reject the default cert, got {other:?}"),
    }
}

#[test]
fn no_sni_gets_the_default_certificate() {
    let f = fixture();
    let mut pair = Pair::new(
        any_cert_client(false),
        "a.example.com",
        acceptor(&f.resolver).accept().unwrap(),
    );
    pair.handshake().unwrap();
    assert_eq!(pair.server.sni(), None);
    assert_eq!(pair.presented_leaf(), leaf_of(&f.default));
    let info = f.default.info();
    assert_eq!(info.common_name.as_deref(), Some("Arc default certificate"));
    assert!(info.dns_names.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Versions, ALPN, resumption

#[test]
fn tls12_and_tls13_are_each_negotiated_when_the_client_restricts_versions() {
    let f = fixture();
    for (version, expected) in [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let config = client_config(f.ca.roots(), &[version], &[b"http/1.1"]);
        let mut pair = Pair::new(
            config,
            "a.example.com",
            acceptor(&f.resolver).accept().unwrap(),
        );
        pair.handshake().unwrap();
        assert_eq!(pair.server.protocol_version(), Some(expected));
        assert_eq!(pair.client.protocol_version(), Some(expected));
        assert_eq!(pair.presented_leaf(), leaf_of(&f.a));
    }
}

#[test]
fn alpn_http11_is_negotiated_in_server_preference() {
    let f = fixture();
    let config = client_config(f.ca.roots(), &both_versions(), &[b"h2", b"http/1.1"]);
    let mut pair = Pair::new(
        config,
        "a.example.com",
        acceptor(&f.resolver).accept().unwrap(),
    );
    pair.handshake().unwrap();
    assert_eq!(pair.server.alpn(), Some(&b"http/1.1"[..]));
    assert_eq!(pair.client.alpn_protocol(), Some(&b"http/1.1"[..]));

    // With h2 listed first by the server, h2 wins.
    let settings = TlsAcceptorConfig {
        alpn_protocols: vec![tls::ALPN_H2.to_vec(), tls::ALPN_HTTP11.to_vec()],
        ..TlsAcceptorConfig::default()
    };
    let h2 = TlsAcceptor::new(&settings, Arc::clone(&f.resolver)).unwrap();
    let config = client_config(f.ca.roots(), &both_versions(), &[b"http/1.1", b"h2"]);
    let mut pair = Pair::new(config, "a.example.com", h2.accept().unwrap());
    pair.handshake().unwrap();
    assert_eq!(pair.server.alpn(), Some(&b"h2"[..]));
}

#[test]
fn client_without_alpn_is_served_without_alpn() {
    let f = fixture();
    let config = client_config(f.ca.roots(), &both_versions(), &[]);
    let mut pair = Pair::new(
        config,
        "a.example.com",
        acceptor(&f.resolver).accept().unwrap(),
    );
    pair.handshake().unwrap();
    assert_eq!(pair.server.alpn(), None);
}

#[test]
fn alpn_mismatch_fails_and_still_sends_the_fatal_alert() {
    let f = fixture();
    let config = client_config(f.ca.roots(), &both_versions(), &[b"h2"]);
    let mut pair = Pair::new(
        config,
        "a.example.com",
        acceptor(&f.resolver).accept().unwrap(),
    );
    let mut hello = Vec::new();
    pair.client.write_tls(&mut hello).unwrap();
    let err = pair.server.feed(&hello).unwrap_err();
    assert!(
        matches!(
            err,
            TlsError::Handshake(rustls::Error::NoApplicationProtocol)
        ),
        "{err:?}"
    );
    assert_eq!(pair.server.error(), Some(&err));
    // The alert is there to send, and the client understands it.
    let mut out = Vec::new();
    assert!(pair.server.write_ciphertext(&mut out) > 0);
    pair.client.read_tls(&mut &out[..]).unwrap();
    assert_eq!(
        pair.client.process_new_packets().unwrap_err(),
        rustls::Error::AlertReceived(AlertDescription::NoApplicationProtocol)
    );
    // The session stays failed.
    assert_eq!(pair.server.feed(b"more").unwrap_err(), err);
    assert_eq!(pair.server.write_plaintext(b"x").unwrap_err(), err);

    // The same through the pump: the server side reports it.
    let config = client_config(f.ca.roots(), &both_versions(), &[b"h2"]);
    let mut pair = Pair::new(
        config,
        "a.example.com",
        acceptor(&f.resolver).accept().unwrap(),
    );
    match pair.settle() {
        Err(PumpError::Server(TlsError::Handshake(rustls::Error::NoApplicationProtocol))) => {}
        other => panic!("expected an ALPN failure, got {other:?}"),
    }
}

#[test]
fn garbage_instead_of_a_client_hello_yields_an_alert() {
    let f = fixture();
    let mut session = acceptor(&f.resolver).accept().unwrap();
    let err = session
        .feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap_err();
    assert!(matches!(err, TlsError::Handshake(_)), "{err:?}");
    let mut out = Vec::new();
    session.write_ciphertext(&mut out);
    assert_eq!(
        out.first(),
        Some(&0x15),
        "an alert record is queued: {out:?}"
    );
}

#[test]
fn sessions_resume_with_tls13_tickets_and_tls12() {
    let f = fixture();
    let acceptor = acceptor(&f.resolver);
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = client_config(f.ca.roots(), &[version], &[b"http/1.1"]);
        let mut first = Pair::new(
            Arc::clone(&config),
            "a.example.com",
            acceptor.accept().unwrap(),
        );
        first.handshake().unwrap();
        assert_eq!(first.client.handshake_kind(), Some(HandshakeKind::Full));
        let mut second = Pair::new(config, "a.example.com", acceptor.accept().unwrap());
        second.handshake().unwrap();
        assert_eq!(
            second.client.handshake_kind(),
            Some(HandshakeKind::Resumed),
            "{version:?}"
        );
    }
}

/// A client session store that counts the TLS 1.3 tickets the server sent.
#[derive(Debug)]
struct CountingStore {
    inner: rustls::client::ClientSessionMemoryCache,
    tickets: AtomicUsize,
}

impl rustls::client::ClientSessionStore for CountingStore {
    fn set_kx_hint(&self, name: ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(name, group)
    }
    fn kx_hint(&self, name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(name)
    }
    fn set_tls12_session(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.inner.set_tls12_session(name, value)
    }
    fn tls12_session(
        &self,
        name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }
    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.inner.remove_tls12_session(name)
    }
    fn insert_tls13_ticket(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.tickets.fetch_add(1, Ordering::SeqCst);
        self.inner.insert_tls13_ticket(name, value)
    }
    fn take_tls13_ticket(
        &self,
        name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(name)
    }
}

/// Two handshakes in a row from one client (with a counting session store) against a listener
/// with `settings`; returns how the second handshake went and how many TLS 1.3 tickets the
/// client received in all.
fn resume_twice(
    f: &Fixture,
    settings: &TlsAcceptorConfig,
    version: &'static rustls::SupportedProtocolVersion,
) -> (HandshakeKind, usize) {
    let acceptor = TlsAcceptor::new(settings, Arc::clone(&f.resolver)).unwrap();
    let store = Arc::new(CountingStore {
        inner: rustls::client::ClientSessionMemoryCache::new(16),
        tickets: AtomicUsize::new(0),
    });
    let mut config = ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(f.ca.roots())
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::store(store.clone());
    let config = Arc::new(config);
    let mut first = Pair::new(
        Arc::clone(&config),
        "a.example.com",
        acceptor.accept().unwrap(),
    );
    first.handshake().unwrap();
    assert_eq!(first.client.handshake_kind(), Some(HandshakeKind::Full));
    // Tickets follow the handshake: let them and some application data through.
    std::io::Write::write_all(&mut first.client.writer(), b"ping").unwrap();
    first.settle().unwrap();
    assert_eq!(first.server_plain, b"ping");
    let mut last = Pair::new(config, "a.example.com", acceptor.accept().unwrap());
    last.handshake().unwrap();
    let kind = last.client.handshake_kind().unwrap();
    (kind, store.tickets.load(Ordering::SeqCst))
}

#[test]
fn session_cache_alone_resumes_by_default() {
    let f = fixture();
    let settings = TlsAcceptorConfig::default();
    assert!(settings.session_cache_entries > 0 && !settings.session_tickets);
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let (kind, tickets) = resume_twice(&f, &settings, version);
        assert_eq!(kind, HandshakeKind::Resumed, "{version:?}");
        if version == &rustls::version::TLS13 {
            assert!(tickets > 0, "stateful TLS 1.3 tickets name cached sessions");
        }
    }
}

#[test]
fn stateless_tickets_alone_resume() {
    let f = fixture();
    let settings = TlsAcceptorConfig {
        session_cache_entries: 0,
        session_tickets: true,
        ..TlsAcceptorConfig::default()
    };
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let (kind, _) = resume_twice(&f, &settings, version);
        assert_eq!(kind, HandshakeKind::Resumed, "{version:?}");
    }
}

#[test]
fn resumption_off_sends_no_ticket_and_every_handshake_is_full() {
    let f = fixture();
    let settings = TlsAcceptorConfig {
        session_cache_entries: 0,
        session_tickets: false,
        ..TlsAcceptorConfig::default()
    };
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let (kind, tickets) = resume_twice(&f, &settings, version);
        assert_eq!(kind, HandshakeKind::Full, "{version:?}");
        assert_eq!(tickets, 0, "{version:?}: no NewSessionTicket may be sent");
    }
    // After the TLS 1.3 handshake the server has nothing more to send: the client's Finished
    // gets no answer until application data flows.
    let acceptor = TlsAcceptor::new(&settings, Arc::clone(&f.resolver)).unwrap();
    let config = client_config(f.ca.roots(), &[&rustls::version::TLS13], &[]);
    let mut pair = Pair::new(config, "a.example.com", acceptor.accept().unwrap());
    pair.handshake().unwrap();
    assert!(!pair.server.wants_write());
}

// ---------------------------------------------------------------------------------------------
// Hot swap

#[test]
fn swap_applies_to_new_handshakes_and_leaves_established_sessions_alone() {
    let f = fixture();
    let acceptor = acceptor(&f.resolver);
    let config = client_config(f.ca.roots(), &both_versions(), &[b"http/1.1"]);
    let mut before = Pair::new(
        Arc::clone(&config),
        "a.example.com",
        acceptor.accept().unwrap(),
    );
    before.handshake().unwrap();
    assert_eq!(before.presented_leaf(), leaf_of(&f.a));

    let renewed = f.ca.loaded(&["a.example.com"]);
    let mut builder = CertStore::builder(f.default.clone());
    builder.add(&["a.example.com"], renewed.clone()).unwrap();
    let old = f.resolver.swap(builder.build());
    assert_eq!(old.len(), 3);

    // A fresh client (no resumption state) gets the new certificate.
    let fresh = client_config(f.ca.roots(), &both_versions(), &[b"http/1.1"]);
    let mut after = Pair::new(fresh, "a.example.com", acceptor.accept().unwrap());
    after.handshake().unwrap();
    assert_eq!(after.presented_leaf(), leaf_of(&renewed));
    assert_ne!(leaf_of(&renewed), leaf_of(&f.a));

    // b.example.org is gone from the new store: default certificate now.
    let mut gone = Pair::new(
        any_cert_client(true),
        "b.example.org",
        acceptor.accept().unwrap(),
    );
    gone.handshake().unwrap();
    assert_eq!(gone.presented_leaf(), leaf_of(&f.default));

    // The session established before keeps working both ways.
    std::io::Write::write_all(&mut before.client.writer(), b"ping").unwrap();
    before.settle().unwrap();
    assert_eq!(before.server_plain, b"ping");
    assert_eq!(before.server.write_plaintext(b"pong").unwrap(), 4);
    before.settle().unwrap();
    assert_eq!(before.client_read_all(), b"pong");
}

// ---------------------------------------------------------------------------------------------
// Application data through TlsSession

#[test]
fn application_data_round_trips_in_small_pieces() {
    let f = fixture();
    for piece in [1, 5, 17] {
        let config = client_config(f.ca.roots(), &both_versions(), &[b"http/1.1"]);
        let mut pair = Pair::new(
            config,
            "a.example.com",
            acceptor(&f.resolver).accept().unwrap(),
        );
        pair.piece = piece;
        pair.handshake().unwrap();

        let request = pattern(3000);
        for chunk in request.chunks(100) {
            std::io::Write::write_all(&mut pair.client.writer(), chunk).unwrap();
            pair.round().unwrap();
        }
        pair.settle().unwrap();
        assert_eq!(pair.server_plain, request, "piece {piece}");

        let response = pattern(5000);
        for chunk in response.chunks(7) {
            assert_eq!(pair.server.write_plaintext(chunk).unwrap(), chunk.len());
        }
        pair.settle().unwrap();
        assert_eq!(pair.client_read_all(), response, "piece {piece}");
    }
}

#[test]
fn feed_stops_when_plaintext_waits_and_resumes_after_it_is_read() {
    let f = fixture();
    let mut pair = connect_verified(&f, "a.example.com");
    let big = pattern(200 * 1024);
    let mut writer_rounds = 0;
    let mut written = 0;
    while written < big.len() {
        written += std::io::Write::write(&mut pair.client.writer(), &big[written..]).unwrap();
        pair.client.write_tls(&mut pair.to_server).unwrap();
        writer_rounds += 1;
        assert!(writer_rounds < 10_000);
    }
    while pair.client.wants_write() {
        pair.client.write_tls(&mut pair.to_server).unwrap();
    }
    let ciphertext = std::mem::take(&mut pair.to_server);
    let consumed = pair.server.feed(&ciphertext).unwrap();
    assert!(consumed < ciphertext.len(), "feed must apply backpressure");

    let mut plain = Vec::new();
    let mut offset = consumed;
    let mut max_per_read = 0;
    let first = pair.server.read_plaintext(&mut plain).unwrap();
    max_per_read = max_per_read.max(first);
    for _ in 0..10_000 {
        if offset == ciphertext.len() {
            break;
        }
        offset += pair.server.feed(&ciphertext[offset..]).unwrap();
        let got = pair.server.read_plaintext(&mut plain).unwrap();
        max_per_read = max_per_read.max(got);
    }
    max_per_read = max_per_read.max(pair.server.read_plaintext(&mut plain).unwrap());
    assert_eq!(plain, big);
    assert!(
        max_per_read <= 33 * 1024,
        "one read returned {max_per_read} bytes"
    );
}

#[test]
fn send_buffer_limit_bounds_accepted_plaintext() {
    let f = fixture();
    let settings = TlsAcceptorConfig {
        send_buffer_limit: 1024,
        ..TlsAcceptorConfig::default()
    };
    let acceptor = TlsAcceptor::new(&settings, Arc::clone(&f.resolver)).unwrap();
    let config = client_config(f.ca.roots(), &both_versions(), &[b"http/1.1"]);
    let mut pair = Pair::new(config, "a.example.com", acceptor.accept().unwrap());
    pair.handshake().unwrap();

    let body = pattern(10_000);
    let accepted = pair.server.write_plaintext(&body).unwrap();
    assert!(accepted > 0 && accepted <= 1024, "accepted {accepted}");
    assert_eq!(pair.server.write_plaintext(&body[accepted..]).unwrap(), 0);
    let mut sent = accepted;
    for _ in 0..1000 {
        if sent == body.len() {
            break;
        }
        pair.round().unwrap();
        sent += pair.server.write_plaintext(&body[sent..]).unwrap();
    }
    pair.settle().unwrap();
    assert_eq!(pair.client_read_all(), body);
}

#[test]
fn close_notify_in_both_directions() {
    let f = fixture();
    let mut pair = connect_verified(&f, "a.example.com");
    std::io::Write::write_all(&mut pair.client.writer(), b"last words").unwrap();
    pair.client.send_close_notify();
    pair.settle().unwrap();
    assert_eq!(pair.server_plain, b"last words");
    assert!(pair.server.peer_closed());
    pair.server.feed_eof();
    assert_eq!(pair.server.read_plaintext(&mut Vec::new()), Ok(0));

    assert_eq!(pair.server.write_plaintext(b"bye").unwrap(), 3);
    pair.server.close();
    assert_eq!(pair.server.write_plaintext(b"more"), Err(TlsError::Closed));
    pair.settle().unwrap();
    assert_eq!(pair.client_read_all(), b"bye");
    let state = pair.client.process_new_packets().unwrap();
    assert!(state.peer_has_closed());
}

#[test]
fn eof_without_close_notify_is_reported_as_truncation_after_pending_data() {
    let f = fixture();
    let mut pair = connect_verified(&f, "a.example.com");
    std::io::Write::write_all(&mut pair.client.writer(), b"partial").unwrap();
    while pair.client.wants_write() {
        pair.client.write_tls(&mut pair.to_server).unwrap();
    }
    let data = std::mem::take(&mut pair.to_server);
    assert_eq!(pair.server.feed(&data).unwrap(), data.len());
    pair.server.feed_eof();
    let mut plain = Vec::new();
    assert_eq!(pair.server.read_plaintext(&mut plain), Ok(7));
    assert_eq!(plain, b"partial");
    assert_eq!(
        pair.server.read_plaintext(&mut plain),
        Err(TlsError::Truncated)
    );
    assert!(!pair.server.peer_closed());
}

#[test]
fn corrupted_records_and_peer_alerts_are_mapped() {
    let f = fixture();
    let mut pair = connect_verified(&f, "a.example.com");
    // A corrupted record from the client: the server fails and answers bad_record_mac.
    std::io::Write::write_all(&mut pair.client.writer(), b"data").unwrap();
    let mut record = Vec::new();
    pair.client.write_tls(&mut record).unwrap();
    let last = record.len() - 1;
    record[last] ^= 0xff;
    let err = pair.server.feed(&record).unwrap_err();
    assert!(
        matches!(err, TlsError::Protocol(rustls::Error::DecryptError)),
        "{err:?}"
    );
    let mut alert = Vec::new();
    assert!(pair.server.write_ciphertext(&mut alert) > 0);
    pair.client.read_tls(&mut &alert[..]).unwrap();
    assert_eq!(
        pair.client.process_new_packets().unwrap_err(),
        rustls::Error::AlertReceived(AlertDescription::BadRecordMac)
    );

    // And the other way round: a fatal alert from the client maps to PeerAlert.
    let config = client_config(f.ca.roots(), &both_versions(), &[b"http/1.1"]);
    let mut second = Pair::new(
        config,
        "a.example.com",
        acceptor(&f.resolver).accept().unwrap(),
    );
    second.handshake().unwrap();
    let mut out = Vec::new();
    // Feed the client a corrupted server record so that it sends bad_record_mac to the server.
    second.server.write_plaintext(b"hello").unwrap();
    second.server.write_ciphertext(&mut out);
    let last = out.len() - 1;
    out[last] ^= 0xff;
    second.client.read_tls(&mut &out[..]).unwrap();
    assert!(second.client.process_new_packets().is_err());
    let mut client_alert = Vec::new();
    second.client.write_tls(&mut client_alert).unwrap();
    let err = second.server.feed(&client_alert).unwrap_err();
    assert_eq!(err, TlsError::PeerAlert(AlertDescription::BadRecordMac));
}

// ---------------------------------------------------------------------------------------------
// Loading certificates

fn secret(name: &str) -> CertOrigin {
    CertOrigin::Secret {
        namespace: "shop".to_owned(),
        name: name.to_owned(),
    }
}

#[test]
fn loads_pkcs8_pkcs1_and_sec1_keys() {
    let ca = TestCa::new();

    // ECDSA P-256: PKCS#8 and SEC1.
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (cert, pkcs8, ec) = ca.leaf_with(&["ec.example"], ec, None);
    LoadedCert::from_pem(secret("ec8"), cert.as_bytes(), pkcs8.as_bytes()).unwrap();
    let sec1 = pem("EC PRIVATE KEY", &pkcs8_inner(ec.serialized_der()));
    let loaded = LoadedCert::from_pem(secret("ec1"), cert.as_bytes(), sec1.as_bytes()).unwrap();
    assert_eq!(loaded.info().dns_names, vec!["ec.example".to_owned()]);

    // RSA: PKCS#8 and PKCS#1.
    let rsa = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let (cert, pkcs8, rsa) = ca.leaf_with(&["rsa.example"], rsa, None);
    LoadedCert::from_pem(secret("rsa8"), cert.as_bytes(), pkcs8.as_bytes()).unwrap();
    let pkcs1 = pem("RSA PRIVATE KEY", &pkcs8_inner(rsa.serialized_der()));
    let loaded = LoadedCert::from_pem(secret("rsa1"), cert.as_bytes(), pkcs1.as_bytes()).unwrap();

    // And the RSA certificate actually serves a handshake.
    let mut builder = CertStore::builder(LoadedCert::generate_default().unwrap());
    builder.add::<&str>(&[], loaded.clone()).unwrap();
    let resolver = CertResolver::new(builder.build());
    let config = client_config(ca.roots(), &both_versions(), &[b"http/1.1"]);
    let mut pair = Pair::new(config, "rsa.example", acceptor(&resolver).accept().unwrap());
    pair.handshake().unwrap();
    assert_eq!(pair.presented_leaf(), leaf_of(&loaded));

    // Ed25519 (PKCS#8) loads too.
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let (cert, pkcs8, _) = ca.leaf_with(&["ed.example"], ed, None);
    LoadedCert::from_pem(secret("ed"), cert.as_bytes(), pkcs8.as_bytes()).unwrap();
}

#[test]
fn cert_info_reports_names_and_expiry() {
    let ca = TestCa::new();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let (cert, key, _) = ca.leaf_with(
        &["www.example.com", "*.example.com", "192.0.2.7"],
        key,
        Some((2031, 5, 6)),
    );
    let dir = ScratchDir::new("tls-test");
    let cert_path = dir.write("tls.crt", cert.as_bytes());
    let key_path = dir.write("tls.key", key.as_bytes());
    let mut builder = CertStore::builder(LoadedCert::generate_default().unwrap());
    builder
        .add_files::<&str>(&[], &cert_path, &key_path)
        .unwrap();
    let store = builder.build();
    assert_eq!(
        store.entries()[0].hosts,
        vec!["www.example.com".to_owned(), "*.example.com".to_owned()],
        "hosts default to the DNS names of the certificate"
    );
    let loaded = store.entries()[0].cert.clone();
    assert!(Arc::ptr_eq(
        store.lookup("api.example.com").unwrap(),
        loaded.certified_key()
    ));
    let info = loaded.info();
    assert_eq!(
        info.dns_names,
        vec!["www.example.com".to_owned(), "*.example.com".to_owned()]
    );
    assert_eq!(
        info.ip_addresses,
        vec!["192.0.2.7".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(info.common_name.as_deref(), Some("www.example.com"));
    assert_eq!(info.not_after_unix, 1_935_792_000); // 2031-05-06T00:00:00Z
    assert_eq!(
        info.not_after(),
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_935_792_000)
    );
    assert!(info.not_before_unix < info.not_after_unix);
    assert_eq!(info.chain_len, 1);
    assert_eq!(
        info.origin,
        CertOrigin::Files {
            cert: cert_path,
            key: key_path
        }
    );
}

#[test]
fn chain_with_intermediate_is_kept_leaf_first() {
    let ca = TestCa::new();
    let (leaf, key) = ca.leaf(&["chain.example"]);
    let chain = format!("{leaf}{}", pem("CERTIFICATE", &ca.der));
    let loaded = LoadedCert::from_pem(secret("chain"), chain.as_bytes(), key.as_bytes()).unwrap();
    assert_eq!(loaded.info().chain_len, 2);
    assert_eq!(loaded.certified_key().cert[1], ca.der);
}

#[test]
fn bad_pem_inputs_name_their_source() {
    let ca = TestCa::new();
    let (cert, key) = ca.leaf(&["x.example"]);

    let mut builder = CertStore::builder(LoadedCert::generate_default().unwrap());
    let err = builder
        .add_pem(&["x.example"], secret("no-cert"), b"hello", key.as_bytes())
        .unwrap_err();
    assert!(builder.build().is_empty());
    assert!(matches!(err, CertError::NoCertificate { .. }), "{err:?}");
    assert!(
        err.to_string().contains("secret shop/no-cert (tls.crt)"),
        "{err}"
    );

    let err = LoadedCert::from_pem(secret("no-key"), cert.as_bytes(), cert.as_bytes()).unwrap_err();
    assert!(matches!(err, CertError::NoKey { .. }), "{err:?}");
    assert!(
        err.to_string().contains("secret shop/no-key (tls.key)"),
        "{err}"
    );

    let encrypted =
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
    let err =
        LoadedCert::from_pem(secret("enc"), cert.as_bytes(), encrypted.as_bytes()).unwrap_err();
    assert!(matches!(err, CertError::UnsupportedKey { .. }), "{err:?}");
    assert!(err.to_string().contains("ENCRYPTED PRIVATE KEY"), "{err}");

    let junk_key = pem("PRIVATE KEY", b"not a key at all");
    let err =
        LoadedCert::from_pem(secret("junk"), cert.as_bytes(), junk_key.as_bytes()).unwrap_err();
    assert!(matches!(err, CertError::UnsupportedKey { .. }), "{err:?}");
    assert!(err.to_string().contains("shop/junk"), "{err}");

    let broken = "-----BEGIN CERTIFICATE-----\nMIIB!!!!\n-----END CERTIFICATE-----\n";
    let err = LoadedCert::from_pem(secret("b64"), broken.as_bytes(), key.as_bytes()).unwrap_err();
    assert!(matches!(err, CertError::Pem { .. }), "{err:?}");
    assert!(err.to_string().contains("shop/b64"), "{err}");

    let unterminated = "-----BEGIN CERTIFICATE-----\nMIIB\n";
    let err =
        LoadedCert::from_pem(secret("cut"), unterminated.as_bytes(), key.as_bytes()).unwrap_err();
    assert!(matches!(err, CertError::Pem { .. }), "{err:?}");

    let not_x509 = pem("CERTIFICATE", b"\x30\x03\x02\x01\x01");
    let err = LoadedCert::from_pem(secret("der"), not_x509.as_bytes(), key.as_bytes()).unwrap_err();
    assert!(matches!(err, CertError::BadCertificate { .. }), "{err:?}");

    // Files: the message names the path that is wrong.
    let dir = ScratchDir::new("tls-test");
    let cert_path = dir.write("good.crt", cert.as_bytes());
    let empty_key = dir.write("empty.key", b"");
    let err = LoadedCert::from_files(&cert_path, &empty_key).unwrap_err();
    assert!(matches!(err, CertError::NoKey { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&empty_key.display().to_string()),
        "{err}"
    );

    let missing = dir.0.join("missing.crt");
    let err = LoadedCert::from_files(&missing, &empty_key).unwrap_err();
    assert!(matches!(err, CertError::Read { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    let huge = dir.write("huge.crt", vec![b'a'; 1024 * 1024 + 1]);
    let err = LoadedCert::from_files(&huge, &empty_key).unwrap_err();
    assert!(matches!(err, CertError::TooLarge { .. }), "{err:?}");
}

#[test]
fn key_that_does_not_match_the_certificate_is_refused() {
    let ca = TestCa::new();
    let (cert, _) = ca.leaf(&["m.example"]);
    let (_, other_key) = ca.leaf(&["m.example"]);
    let err = LoadedCert::from_pem(secret("mismatch"), cert.as_bytes(), other_key.as_bytes())
        .unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("secret shop/mismatch"), "{err}");
    assert!(err.to_string().contains("does not match"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Store construction

#[test]
fn store_rules_exact_before_wildcard_first_entry_wins_and_bad_hosts() {
    let ca = TestCa::new();
    let default = LoadedCert::generate_default().unwrap();
    let star = ca.loaded(&["*.example.com"]);
    let www = ca.loaded(&["www.example.com"]);
    let late = ca.loaded(&["www.example.com"]);
    let mut builder = CertStore::builder(default.clone());
    builder.add(&["*.Example.com"], star.clone()).unwrap();
    builder.add(&["www.example.com"], www.clone()).unwrap();
    builder
        .add(&["www.example.com", "late.example.com"], late.clone())
        .unwrap();

    for (host, reason) in [
        ("", "empty name"),
        ("*.", "wildcard"),
        ("*", "wildcard"),
        ("a..b", "empty label"),
        ("w*.example.com", "wildcard"),
        ("*.*.example.com", "wildcard"),
        ("exa mple.com", "letters"),
    ] {
        let err = builder.add(&[host], www.clone()).unwrap_err();
        match &err {
            CertError::BadHost { reason: r, .. } => assert!(r.contains(reason), "{host:?}: {r}"),
            other => panic!("{host:?}: {other:?}"),
        }
    }
    let no_names = LoadedCert::generate_default().unwrap();
    assert!(matches!(
        builder.add::<&str>(&[], no_names),
        Err(CertError::NoHosts { .. })
    ));

    let store = builder.build();
    assert_eq!(store.len(), 3, "failed adds leave no entry");
    let key = |c: &LoadedCert| Arc::clone(c.certified_key());
    assert!(Arc::ptr_eq(
        store.lookup("www.example.com").unwrap(),
        &key(&www)
    ));
    assert!(Arc::ptr_eq(
        store.lookup("WWW.example.com.").unwrap(),
        &key(&www)
    ));
    assert!(Arc::ptr_eq(
        store.lookup("api.example.com").unwrap(),
        &key(&star)
    ));
    assert!(Arc::ptr_eq(
        store.lookup("late.example.com").unwrap(),
        &key(&late)
    ));
    assert!(store.lookup("example.com").is_none());
    assert!(Arc::ptr_eq(store.resolve(None), &key(&default)));
    assert!(Arc::ptr_eq(
        store.resolve(Some("other.test")),
        &key(&default)
    ));
    assert_eq!(
        store.shadowed(),
        &[("www.example.com".to_owned(), late.info().origin.clone())]
    );
    assert_eq!(store.entries()[0].hosts, vec!["*.example.com".to_owned()]);
    assert!(!store.is_empty());
    assert!(CertStore::with_default(default).is_empty());
}

#[test]
fn server_config_refuses_bad_alpn() {
    let resolver = CertResolver::new(CertStore::with_default(
        LoadedCert::generate_default().unwrap(),
    ));
    let settings = TlsAcceptorConfig {
        alpn_protocols: vec![Vec::new()],
        ..TlsAcceptorConfig::default()
    };
    assert!(matches!(
        tls::server_config(&settings, resolver),
        Err(tls::TlsSetupError::BadAlpn(_))
    ));
}

#[test]
fn default_certificates_are_distinct_per_generation() {
    let a = LoadedCert::generate_default().unwrap();
    let b = LoadedCert::generate_default().unwrap();
    assert_ne!(leaf_of(&a), leaf_of(&b));
    assert_eq!(a.info().origin, CertOrigin::Generated);
}
