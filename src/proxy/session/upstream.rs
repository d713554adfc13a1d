//! The upstream leg as both io drivers run it: the reuse rule (when a released connection may
//! go back to the pool) and the upstream TLS handshake (start it after the TCP connect, feed it
//! ciphertext, tell when it completed or why it failed).
//!
//! The drivers keep their own socket records (an io_uring socket slot, an epoll upstream slot)
//! and report what they know of one as a [`LegState`]; the decisions are made here, once.

use std::time::{Duration, Instant};

use crate::proxy::io::{PoolKey, PoolLimits};
use crate::proxy::tls::TlsClient;

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

/// The one log line of a failed upstream TLS handshake.
pub fn log_handshake_failure(key: &PoolKey, error: &str) {
    tracing::warn!(upstream = %key.upstream, endpoint = %key.endpoint, error,
        "upstream TLS handshake failed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tls::{
        CertResolver, CertStore, LoadedCert, TlsAcceptor, TlsAcceptorConfig, UpstreamTls,
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

    #[test]
    fn a_handshake_runs_to_done_and_the_session_is_then_reusable_until_its_eof() {
        let now = Instant::now();
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
        // Moves bytes both ways until both sides are quiet.
        for _ in 0..16 {
            let out = client.pending_out().to_vec();
            client.sent(out.len());
            let mut rest = &out[..];
            while !rest.is_empty() {
                let used = server.feed(rest).unwrap();
                rest = &rest[used..];
            }
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
