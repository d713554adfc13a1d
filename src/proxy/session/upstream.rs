//! The upstream leg as both io drivers run it: the reuse rule (when a released connection may
//! go back to the pool), the upstream TLS handshake (start it after the TCP connect, feed it
//! ciphertext, tell when it completed or why it failed) and the sealing of the handler's bytes
//! into records once it completed.
//!
//! The drivers keep their own socket records (an io_uring socket slot, an epoll upstream slot)
//! and report what they know of one as a [`LegState`]; the decisions are made here, once.

use std::time::{Duration, Instant};

use crate::proxy::io::{ConnHandler, PoolKey, PoolLimits};
use crate::proxy::tls::{TlsClient, TlsError};

/// What a driver knows about an upstream connection when its handler releases it.
#[derive(Clone, Copy)]
pub struct LegState<'a> {
    /// The TCP connect (and the TLS handshake, on HTTPS upstreams) completed.
    pub established: bool,
    /// An I/O error was seen on the socket.
    pub failed: bool,
    /// The upstream's EOF was seen.
    pub eof: bool,
    /// Bytes (or an EOF) arrived that the handler did not take.
    pub unread: bool,
    /// Bytes of a send are still in flight or waiting.
    pub unsent: bool,
    /// The client TLS session of an HTTPS upstream.
    pub tls: Option<&'a TlsClient>,
}

/// The reuse rule: a connection the handler released as `requested` reusable goes back to the
/// pool only when the worker is not draining and the connection is established, healthy,
/// drained both ways and (on HTTPS upstreams) its session is clean — no `close_notify`
/// received, no plaintext left over, no record still to send. A driver that can also look at
/// the socket (a readiness flag) checks liveness after this, only when this says yes.
pub fn reusable(requested: bool, draining: bool, leg: &LegState<'_>) -> bool {
    requested
        && !draining
        && leg.established
        && !leg.failed
        && !leg.eof
        && !leg.unread
        && !leg.unsent
        && leg
            .tls
            .is_none_or(|t| !t.at_eof() && t.plaintext().is_empty() && !t.wants_write())
}

/// Starts the client TLS session of an HTTPS upstream once its TCP connect succeeded, with
/// the instant its handshake must end by (the connect timeout bounds connect and handshake;
/// `None`: no bound). `Ok(None)` for a plain upstream; `Err` carries the reason to log.
pub fn start_tls(
    key: &PoolKey,
    limits: &PoolLimits,
    now: Instant,
) -> Result<Option<(TlsClient, Option<Instant>)>, String> {
    let Some(settings) = key.tls.as_ref() else {
        return Ok(None);
    };
    let client = settings.connect(key.endpoint).map_err(|e| e.to_string())?;
    let until = handshake_deadline(limits.connect_timeout, now);
    Ok(Some((client, until)))
}

/// The end of an upstream TLS handshake started at `now` (a zero timeout: unbounded).
fn handshake_deadline(timeout: Duration, now: Instant) -> Option<Instant> {
    (!timeout.is_zero()).then(|| now + timeout)
}

/// Where an upstream TLS handshake stands after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// More bytes are to be exchanged.
    Running,
    /// The handshake completed with this input: the handler hears `on_upstream_connected`.
    Done,
    /// The handshake failed; the reason is logged once ([`log_handshake_failure`]) and the
    /// handler hears `on_upstream_error(Tls)`.
    Failed(String),
}

/// Feeds ciphertext received during the handshake. Decrypted bytes that came with the last
/// handshake flight stay in the session for the driver to take as usual.
pub fn handshake_input(tls: &mut TlsClient, data: &[u8]) -> Handshake {
    match tls.on_ciphertext(data) {
        Err(e) => Handshake::Failed(e.to_string()),
        Ok(()) if tls.handshake_complete() => Handshake::Done,
        Ok(()) => Handshake::Running,
    }
}

/// Why a handshake failed when the upstream closed its side during it.
pub const CLOSED_DURING_HANDSHAKE: &str = "connection closed during the TLS handshake";
/// Why a handshake failed when it did not complete within the connect timeout.
pub const HANDSHAKE_TIMED_OUT: &str = "TLS handshake timed out";

/// Seals the handler's pending upstream bytes into the session's records (the driver sends
/// them from [`TlsClient::pending_out`]) and reports what the session took with
/// `upstream_written`. `Ok(true)` when bytes were taken. An error (the session refuses, which
/// happens only after a local close) ends the connection. Call it once the handshake completed.
pub fn seal_upstream<H: ConnHandler>(
    tls: &mut TlsClient,
    h: &mut H,
    cx: &mut H::Cx,
    now: Instant,
) -> Result<bool, TlsError> {
    match tls.encrypt(h.upstream_out())? {
        0 => Ok(false),
        n => {
            h.upstream_written(cx, n, now);
            Ok(true)
        }
    }
}

/// The one log line of a failed upstream TLS handshake.
pub fn log_handshake_failure(key: &PoolKey, error: &str) {
    tracing::warn!(upstream = %key.upstream, endpoint = %key.endpoint, error,
        "upstream TLS handshake failed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::io::UpstreamError;
    use crate::proxy::tls::{
        CertResolver, CertStore, LoadedCert, TlsAcceptor, TlsAcceptorConfig, TlsSession,
        UpstreamTls,
    };
    use std::net::SocketAddr;
    use std::sync::Arc;

    fn healthy() -> LegState<'static> {
        LegState {
            established: true,
            failed: false,
            eof: false,
            unread: false,
            unsent: false,
            tls: None,
        }
    }

    #[test]
    fn only_a_clean_established_connection_is_reused_and_never_while_draining() {
        let ok = healthy();
        assert!(reusable(true, false, &ok));
        assert!(!reusable(false, false, &ok), "the handler said no");
        assert!(!reusable(true, true, &ok), "the worker drains");
        let spoiled: [(&str, LegState<'_>); 5] = [
            (
                "not established",
                LegState {
                    established: false,
                    ..ok
                },
            ),
            ("failed", LegState { failed: true, ..ok }),
            ("eof", LegState { eof: true, ..ok }),
            ("unread bytes", LegState { unread: true, ..ok }),
            ("unsent bytes", LegState { unsent: true, ..ok }),
        ];
        for (what, leg) in spoiled {
            assert!(!reusable(true, false, &leg), "{what}");
        }
    }

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8443))
    }

    fn key(tls: Option<UpstreamTls>) -> PoolKey {
        PoolKey {
            endpoint: addr(),
            upstream: Arc::from("app"),
            tls,
        }
    }

    fn limits(connect_ms: u64) -> PoolLimits {
        PoolLimits {
            max_idle: 4,
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_millis(connect_ms),
        }
    }

    #[test]
    fn a_plain_upstream_has_no_handshake_and_a_zero_timeout_leaves_it_unbounded() {
        let now = Instant::now();
        assert!(matches!(start_tls(&key(None), &limits(100), now), Ok(None)));
        let tls = UpstreamTls::insecure(Some("arc.test")).unwrap();
        let Ok(Some((_, until))) = start_tls(&key(Some(tls.clone())), &limits(100), now) else {
            panic!("an HTTPS upstream starts a session");
        };
        assert_eq!(until, Some(now + Duration::from_millis(100)));
        let Ok(Some((_, until))) = start_tls(&key(Some(tls)), &limits(0), now) else {
            panic!("an HTTPS upstream starts a session");
        };
        assert_eq!(until, None);
    }

    /// A client session to an in-memory server, with the handshake run to its end (both
    /// sides quiet).
    fn handshaken(now: Instant) -> (TlsClient, TlsSession) {
        let cert = LoadedCert::generate_default().unwrap();
        let acceptor = TlsAcceptor::new(
            &TlsAcceptorConfig::default(),
            CertResolver::new(CertStore::with_default(cert)),
        )
        .unwrap();
        let mut server = acceptor.accept().unwrap();
        let tls = UpstreamTls::insecure(Some("arc.test")).unwrap();
        let Ok(Some((mut client, _))) = start_tls(&key(Some(tls)), &limits(1000), now) else {
            panic!("an HTTPS upstream starts a session");
        };
        let mut state = Handshake::Running;
        for _ in 0..16 {
            let out = client.pending_out().to_vec();
            client.sent(out.len());
            feed_all(&mut server, &out);
            let mut answer = Vec::new();
            server.write_ciphertext(&mut answer);
            if !answer.is_empty() {
                state = handshake_input(&mut client, &answer);
            }
            if out.is_empty() && answer.is_empty() {
                break;
            }
        }
        assert_eq!(state, Handshake::Done);
        (client, server)
    }

    fn feed_all(server: &mut TlsSession, mut rest: &[u8]) {
        while !rest.is_empty() {
            let used = server.feed(rest).unwrap();
            rest = &rest[used..];
        }
    }

    #[test]
    fn a_handshake_runs_to_done_and_the_session_is_then_reusable_until_its_eof() {
        let (mut client, mut server) = handshaken(Instant::now());
        let leg = LegState {
            tls: Some(&client),
            ..healthy()
        };
        assert!(reusable(true, false, &leg), "a clean session is reusable");

        server.close();
        let mut notify = Vec::new();
        server.write_ciphertext(&mut notify);
        assert_eq!(handshake_input(&mut client, &notify), Handshake::Done);
        let leg = LegState {
            tls: Some(&client),
            ..healthy()
        };
        assert!(!reusable(true, false, &leg), "close_notify received");
    }

    /// A handler that only has bytes for the upstream.
    struct Sender {
        out: Vec<u8>,
        written: usize,
    }

    impl ConnHandler for Sender {
        type Cx = ();
        fn new(_: &mut (), _: crate::proxy::io::ConnInfo, _: Instant) -> Self {
            Sender {
                out: Vec::new(),
                written: 0,
            }
        }
        fn on_downstream_data(&mut self, _: &mut (), _: &[u8], _: Instant) {}
        fn on_downstream_eof(&mut self, _: &mut (), _: Instant) {}
        fn on_downstream_error(&mut self, _: &mut (), _: Instant) {}
        fn on_upstream_connected(&mut self, _: &mut (), _: bool, _: Instant) {}
        fn on_upstream_data(&mut self, _: &mut (), _: &[u8], _: Instant) {}
        fn on_upstream_eof(&mut self, _: &mut (), _: Instant) {}
        fn on_upstream_error(&mut self, _: &mut (), _: UpstreamError, _: Instant) {}
        fn on_timer(&mut self, _: &mut (), _: Instant) {}
        fn downstream_out(&self) -> &[u8] {
            &[]
        }
        fn downstream_written(&mut self, _: &mut (), _: usize, _: Instant) {}
        fn upstream_out(&self) -> &[u8] {
            &self.out
        }
        fn upstream_written(&mut self, _: &mut (), n: usize, _: Instant) {
            self.out.drain(..n);
            self.written += n;
        }
        fn poll_action(&mut self) -> Option<crate::proxy::io::Action> {
            None
        }
        fn interest(&self) -> crate::proxy::io::Interest {
            crate::proxy::io::Interest::default()
        }
        fn deadline(&self) -> Option<Instant> {
            None
        }
        fn is_closed(&self) -> bool {
            false
        }
    }

    #[test]
    fn the_handlers_bytes_are_sealed_into_records_and_reported_written() {
        let now = Instant::now();
        let (mut client, mut server) = handshaken(now);
        let mut h = Sender {
            out: Vec::new(),
            written: 0,
        };
        assert_eq!(
            seal_upstream(&mut client, &mut h, &mut (), now).ok(),
            Some(false)
        );
        let req = b"GET / HTTP/1.1\r\nHost: arc.test\r\n\r\n";
        h.out.extend_from_slice(req);
        assert_eq!(
            seal_upstream(&mut client, &mut h, &mut (), now).ok(),
            Some(true)
        );
        assert_eq!(h.written, req.len());
        assert!(h.out.is_empty(), "the handler's bytes are taken");
        let records = client.pending_out().to_vec();
        assert!(!records.is_empty() && records.windows(4).all(|w| w != b"GET "));
        feed_all(&mut server, &records);
        let mut plain = Vec::new();
        server.read_plaintext(&mut plain).unwrap();
        assert_eq!(plain, req, "the upstream reads the request");
    }

    #[test]
    fn garbage_fails_the_handshake_with_a_reason() {
        let tls = UpstreamTls::insecure(Some("arc.test")).unwrap();
        let Ok(Some((mut client, _))) = start_tls(&key(Some(tls)), &limits(1000), Instant::now())
        else {
            panic!("an HTTPS upstream starts a session");
        };
        let Handshake::Failed(reason) = handshake_input(&mut client, b"HTTP/1.1 400 Bad\r\n\r\n")
        else {
            panic!("not TLS: the handshake fails");
        };
        assert!(!reason.is_empty());
    }
}
