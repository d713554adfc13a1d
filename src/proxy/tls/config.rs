//! Builds the shared rustls [`ServerConfig`] for the TLS listener: TLS 1.2 and 1.3 only,
//! the SNI [`CertResolver`], ALPN in server preference order, and session resumption as
//! configured: a bounded in-memory session cache (TLS 1.3 tickets that name a cached session,
//! TLS 1.2 session IDs; on by default) and/or stateless encrypted tickets (off by default).
//! With both off no resumption state is kept and no `NewSessionTicket` is sent. No 0-RTT data
//! is accepted (it is replayable).

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::ServerSessionMemoryCache;

use super::provider;
use super::resolver::CertResolver;
use super::session::{TlsError, TlsSession};

/// ALPN identifier of HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";
/// ALPN identifier of HTTP/2 (offered once the h2 codec exists).
pub const ALPN_H2: &[u8] = b"h2";

/// Default bound of the session cache, in sessions.
pub const DEFAULT_SESSION_CACHE_ENTRIES: usize = 10_000;
/// `NewSessionTicket` messages sent after a TLS 1.3 handshake when resumption is on (one per
/// parallel connection a client may resume; the same count OpenSSL sends).
pub const TLS13_TICKETS: usize = 2;
/// Default bound of buffered outgoing data per session, in bytes (see [`TlsSession`]).
pub const DEFAULT_SEND_BUFFER_LIMIT: usize = 64 * 1024;

/// Settings of the TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsAcceptorConfig {
    /// ALPN protocols in server preference order. A client that offers ALPN but none of these
    /// is refused with a `no_application_protocol` alert; a client that offers no ALPN is
    /// served (HTTP/1.1). Empty disables ALPN.
    pub alpn_protocols: Vec<Vec<u8>>,
    /// Maximum number of sessions kept in memory for resumption; 0 disables the cache.
    pub session_cache_entries: usize,
    /// Issue stateless session tickets (keys rotate every 6 hours inside rustls).
    pub session_tickets: bool,
    /// Bound on buffered outgoing plaintext and ciphertext per session.
    pub send_buffer_limit: usize,
}

impl Default for TlsAcceptorConfig {
    fn default() -> Self {
        Self {
            alpn_protocols: vec![ALPN_HTTP11.to_vec()],
            session_cache_entries: DEFAULT_SESSION_CACHE_ENTRIES,
            session_tickets: false,
            send_buffer_limit: DEFAULT_SEND_BUFFER_LIMIT,
        }
    }
}

impl TlsAcceptorConfig {
    /// True when clients can resume sessions (a cache or tickets are on).
    pub fn resumption(&self) -> bool {
        self.session_cache_entries > 0 || self.session_tickets
    }
}

/// Why a TLS server configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// rustls refused the protocol versions or the ticket key could not be made.
    #[error("cannot build the TLS server configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A listed ALPN protocol is empty or longer than 255 bytes.
    #[error("ALPN protocol {0:?} must be 1 to 255 bytes long")]
    BadAlpn(String),
}

/// Builds the server configuration shared by every TLS connection of a listener.
pub fn server_config(
    settings: &TlsAcceptorConfig,
    resolver: Arc<CertResolver>,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    if let Some(bad) = settings
        .alpn_protocols
        .iter()
        .find(|p| p.is_empty() || p.len() > 255)
    {
        return Err(TlsSetupError::BadAlpn(
            String::from_utf8_lossy(bad).into_owned(),
        ));
    }
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = settings.alpn_protocols.clone();
    config.session_storage = if settings.session_cache_entries == 0 {
        Arc::new(rustls::server::NoServerSessionStorage {})
    } else {
        ServerSessionMemoryCache::new(settings.session_cache_entries)
    };
    if settings.session_tickets {
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    }
    // Without resumption no ticket is sent: no ticket encryption or cache entry per
    // handshake, and no extra records for the client to read.
    config.send_tls13_tickets = if settings.resumption() {
        TLS13_TICKETS
    } else {
        0
    };
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

/// The per-listener factory of [`TlsSession`]s.
#[derive(Debug, Clone)]
pub struct TlsAcceptor {
    config: Arc<ServerConfig>,
    send_buffer_limit: usize,
}

impl TlsAcceptor {
    /// Builds the server configuration and keeps it for [`accept`](Self::accept).
    pub fn new(
        settings: &TlsAcceptorConfig,
        resolver: Arc<CertResolver>,
    ) -> Result<Self, TlsSetupError> {
        Ok(Self {
            config: server_config(settings, resolver)?,
            send_buffer_limit: settings.send_buffer_limit,
        })
    }

    /// Starts the server side of a new connection.
    pub fn accept(&self) -> Result<TlsSession, TlsError> {
        TlsSession::new(Arc::clone(&self.config), self.send_buffer_limit)
    }

    /// The shared rustls configuration.
    pub fn server_config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}
