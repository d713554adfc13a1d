//! [`TlsSession`]: one TLS connection (server side towards clients, or client side towards an
//! upstream, see [`super::client`]) over in-memory buffers, for io drivers
//! that move raw bytes on their own threads (io_uring, epoll). The driver feeds ciphertext it
//! read from the socket, takes decrypted plaintext into its own reusable buffer, hands
//! plaintext to encrypt, and drains ciphertext to write to the socket. No I/O happens here.
//!
//! Buffering is bounded:
//! - incoming ciphertext: rustls holds at most one partial record (about 16 KiB; up to 64 KiB
//!   while a large handshake message is assembled). [`TlsSession::feed`] stops consuming when
//!   decrypted plaintext waiting to be taken reaches rustls' 16 KiB limit, and says how much it
//!   consumed: the driver keeps the rest and feeds it again after
//!   [`TlsSession::read_plaintext`]. So each `read_plaintext` appends at most about 32 KiB
//!   (the limit plus the last record decrypted).
//! - outgoing: plaintext written before the handshake completes and ciphertext not yet taken
//!   are each bounded by the send-buffer limit (`set_buffer_limit`, default 64 KiB);
//!   [`TlsSession::write_plaintext`] accepts less than offered when it is reached. Handshake
//!   messages and alerts are never refused, so a session always has its alert to send.

use std::io::{self, BufRead, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{
    AlertDescription, ClientConfig, ClientConnection, Connection, ProtocolVersion, ServerConfig,
    ServerConnection,
};

/// Why a TLS session cannot go on. After any of these except [`TlsError::Closed`], the driver
/// should still flush [`TlsSession::write_ciphertext`] (it may hold the fatal alert that tells
/// the peer why) and then close the socket.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TlsError {
    /// The session could not be created.
    #[error("cannot start a TLS session: {0}")]
    Setup(rustls::Error),
    /// The handshake failed (no common version, cipher or ALPN protocol, bad message...).
    #[error("TLS handshake failed: {0}")]
    Handshake(rustls::Error),
    /// The peer broke the protocol after the handshake (bad record, failed decryption...).
    #[error("TLS protocol error: {0}")]
    Protocol(rustls::Error),
    /// The peer sent a fatal alert.
    #[error("peer sent TLS alert {0:?}")]
    PeerAlert(AlertDescription),
    /// The transport ended without a `close_notify`: the data may have been cut short.
    #[error("connection closed without TLS close_notify")]
    Truncated,
    /// Plaintext was written after [`TlsSession::close`].
    #[error("TLS session is closed for writing")]
    Closed,
}

/// One TLS connection (server or client side), driven with bytes only.
#[derive(Debug)]
pub struct TlsSession {
    conn: Connection,
    failed: Option<TlsError>,
    transport_eof: bool,
    peer_closed: bool,
    close_sent: bool,
}

impl TlsSession {
    /// Starts a server session; `send_buffer_limit` bounds outgoing buffering (see module doc).
    pub fn new(config: Arc<ServerConfig>, send_buffer_limit: usize) -> Result<Self, TlsError> {
        let conn = ServerConnection::new(config).map_err(TlsError::Setup)?;
        Ok(Self::wrap(Connection::Server(conn), send_buffer_limit))
    }

    /// Starts a client session towards `server_name` (sent as SNI when it is a DNS name); the
    /// ClientHello is ready in [`write_ciphertext`](Self::write_ciphertext) at once.
    pub fn client(
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
        send_buffer_limit: usize,
    ) -> Result<Self, TlsError> {
        let conn = ClientConnection::new(config, server_name).map_err(TlsError::Setup)?;
        Ok(Self::wrap(Connection::Client(conn), send_buffer_limit))
    }

    fn wrap(mut conn: Connection, send_buffer_limit: usize) -> Self {
        conn.set_buffer_limit(Some(send_buffer_limit));
        Self {
            conn,
            failed: None,
            transport_eof: false,
            peer_closed: false,
            close_sent: false,
        }
    }

    /// Feeds ciphertext read from the socket and processes every complete record. Returns how
    /// many bytes were consumed: fewer than given only when decrypted plaintext is waiting to
    /// be taken with [`read_plaintext`](Self::read_plaintext) (keep the rest and feed it
    /// again). Bytes after the peer's `close_notify` are discarded and count as consumed.
    pub fn feed(&mut self, ciphertext: &[u8]) -> Result<usize, TlsError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let mut rest = ciphertext;
        while !rest.is_empty() {
            if self.peer_closed {
                return Ok(ciphertext.len());
            }
            match self.conn.read_tls(&mut rest) {
                Ok(0) => return Ok(ciphertext.len()),
                Ok(_) => self.process()?,
                // rustls signals "received plaintext buffer full" with ErrorKind::Other.
                Err(e) if e.kind() == io::ErrorKind::Other => break,
                Err(_) => {
                    let err =
                        rustls::Error::InvalidMessage(rustls::InvalidMessage::MessageTooLarge);
                    return Err(self.fail(err));
                }
            }
        }
        Ok(ciphertext.len() - rest.len())
    }

    /// Tells the session the transport reached end of file. Pending plaintext can still be
    /// read; after that [`read_plaintext`](Self::read_plaintext) reports
    /// [`TlsError::Truncated`] unless the peer had sent `close_notify`.
    pub fn feed_eof(&mut self) {
        self.transport_eof = true;
    }

    /// Appends all decrypted plaintext to `out` and returns how many bytes were appended.
    /// `Ok(0)` means nothing is waiting: check [`peer_closed`](Self::peer_closed) for a clean
    /// end. After [`feed_eof`](Self::feed_eof) without `close_notify`, once everything is
    /// read, returns [`TlsError::Truncated`].
    pub fn read_plaintext(&mut self, out: &mut Vec<u8>) -> Result<usize, TlsError> {
        let mut total = 0;
        let mut reader = self.conn.reader();
        loop {
            let chunk = match reader.fill_buf() {
                Ok(chunk) => chunk,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Err(TlsError::Truncated),
            };
            let n = chunk.len();
            if n == 0 {
                break;
            }
            out.extend_from_slice(chunk);
            reader.consume(n);
            total += n;
        }
        if total == 0 && self.transport_eof && !self.peer_closed {
            return Err(TlsError::Truncated);
        }
        Ok(total)
    }

    /// Queues plaintext to be encrypted and returns how much was accepted: less than offered
    /// when the send-buffer limit is reached (drain [`write_ciphertext`](Self::write_ciphertext)
    /// first). Before the handshake completes the plaintext is held and sent right after it.
    pub fn write_plaintext(&mut self, plaintext: &[u8]) -> Result<usize, TlsError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        if self.close_sent {
            return Err(TlsError::Closed);
        }
        // Writing into rustls' in-memory buffers cannot fail with an I/O error.
        self.conn
            .writer()
            .write(plaintext)
            .map_err(|_| TlsError::Closed)
    }

    /// True when ciphertext (handshake, alerts, application data) waits to be sent.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Appends all ciphertext waiting to be sent to `out`; returns how many bytes.
    pub fn write_ciphertext(&mut self, out: &mut Vec<u8>) -> usize {
        let mut total = 0;
        while self.conn.wants_write() {
            match self.conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        total
    }

    /// Writes waiting ciphertext straight to `w` in one vectored write (every queued record,
    /// up to 64), without copying it into a buffer of the caller's; returns how many bytes `w`
    /// took. What `w` does not take stays queued for the next call.
    pub fn write_ciphertext_to(&mut self, w: &mut dyn Write) -> io::Result<usize> {
        if !self.conn.wants_write() {
            return Ok(0);
        }
        self.conn.write_tls(w)
    }

    /// Queues a `close_notify` alert (sent with the next [`write_ciphertext`](Self::write_ciphertext));
    /// no plaintext may be written afterwards.
    pub fn close(&mut self) {
        self.conn.send_close_notify();
        self.close_sent = true;
    }

    /// True once the handshake has completed.
    pub fn handshake_complete(&self) -> bool {
        !self.conn.is_handshaking()
    }

    /// True when the completed handshake resumed an earlier session.
    pub fn resumed(&self) -> bool {
        self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// The negotiated ALPN protocol, if any (known once the handshake completes).
    pub fn alpn(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// The SNI host name the client sent, if any (lower case); `None` on a client session.
    pub fn sni(&self) -> Option<&str> {
        match &self.conn {
            Connection::Server(c) => c.server_name(),
            Connection::Client(_) => None,
        }
    }

    /// The negotiated protocol version.
    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// True once the peer's `close_notify` has been received: no more plaintext will arrive
    /// (what was received before can still be read).
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// The error that ended this session, if one did.
    pub fn error(&self) -> Option<&TlsError> {
        self.failed.as_ref()
    }

    /// Runs rustls over the records read so far.
    fn process(&mut self) -> Result<(), TlsError> {
        match self.conn.process_new_packets() {
            Ok(state) => {
                self.peer_closed |= state.peer_has_closed();
                Ok(())
            }
            Err(err) => Err(self.fail(err)),
        }
    }

    fn fail(&mut self, err: rustls::Error) -> TlsError {
        let mapped = match err {
            rustls::Error::AlertReceived(alert) => TlsError::PeerAlert(alert),
            err if self.conn.is_handshaking() => TlsError::Handshake(err),
            err => TlsError::Protocol(err),
        };
        self.failed = Some(mapped.clone());
        mapped
    }
}
