//! Downstream TLS for the io_uring driver: a [`ConnHandler`] layer that sits between the
//! driver and the real handler on https listeners.
//!
//! The driver moves ciphertext only; this layer runs the handshake before the real handler
//! exists (creating it with `ConnInfo { tls: true, sni }` once the handshake completes),
//! feeds received ciphertext through [`TlsSession::feed`] / [`TlsSession::read_plaintext`]
//! while the handler wants to read, moves the handler's output through
//! [`TlsSession::write_plaintext`] / [`TlsSession::write_ciphertext`] into the ciphertext the
//! driver sends, queues `close_notify` once a flushed close has no plaintext left, and sends a
//! best-effort alert when the session fails. Plain listeners use [`Layer::Plain`], which only
//! forwards.

use std::time::Instant;

use crate::proxy::io::{Action, ConnHandler, ConnInfo, Interest, UpstreamError};
use crate::proxy::tls::{TlsError, TlsSession};

/// Most ciphertext kept waiting for the socket before the handler's plaintext is left where
/// it is (the handler's own buffer bounds it).
const CIPHER_OUT_HIGH: usize = 64 * 1024;
/// Rounds of "deliver input, move output" per callback (each round is bounded by itself).
const ROUNDS: usize = 8;

/// The handler the driver runs for one downstream connection.
pub(crate) enum Layer<H> {
    /// A plain listener: the handler itself.
    Plain(H),
    /// An https listener: TLS around the handler.
    Tls(Box<TlsLayer<H>>),
}

/// TLS state of one downstream connection.
pub(crate) struct TlsLayer<H> {
    session: TlsSession,
    /// The real handler; `None` while the handshake runs (or after it failed).
    inner: Option<H>,
    /// What the handler is created with once the handshake completes.
    info: Option<ConnInfo>,
    /// End of the handshake phase.
    handshake_until: Instant,
    /// Ciphertext received but not yet taken by the session.
    cipher_in: Vec<u8>,
    /// Ciphertext for the socket; what the driver sees as `downstream_out`.
    cipher_out: Vec<u8>,
    /// Reused buffer for decrypted bytes.
    plain: Vec<u8>,
    /// The socket's EOF arrived (fed to the session once `cipher_in` is consumed).
    eof_pending: bool,
    eof_fed: bool,
    /// The handler was told about the end of input.
    eof_delivered: bool,
    /// The handler asked for a flushed close.
    close_flush: bool,
    /// `close_notify` was queued.
    close_queued: bool,
    /// The session failed: only its alert is still sent.
    broken: bool,
    /// Closed by this layer (failed or timed-out handshake, session failure).
    closed: bool,
    /// A close this layer asks the driver for.
    pending: Option<Action>,
}

impl<H: ConnHandler> Layer<H> {
    /// A TLS connection in its handshake phase.
    pub(crate) fn tls(session: TlsSession, info: ConnInfo, handshake_until: Instant) -> Self {
        Layer::Tls(Box::new(TlsLayer {
            session,
            inner: None,
            info: Some(info),
            handshake_until,
            cipher_in: Vec::new(),
            cipher_out: Vec::new(),
            plain: Vec::new(),
            eof_pending: false,
            eof_fed: false,
            eof_delivered: false,
            close_flush: false,
            close_queued: false,
            broken: false,
            closed: false,
            pending: None,
        }))
    }
}

impl<H: ConnHandler> TlsLayer<H> {
    /// Closes from this layer; `flush` sends what ciphertext is queued (an alert) first.
    fn close_self(&mut self, flush: bool) {
        if !self.closed {
            self.closed = true;
            self.pending = Some(Action::CloseDownstream { flush });
        }
    }

    /// The session failed: tell the handler, queue the alert, close after sending it.
    fn fail(&mut self, cx: &mut H::Cx, now: Instant) {
        if self.broken {
            return;
        }
        self.broken = true;
        if let Some(h) = self.inner.as_mut()
            && !h.is_closed()
        {
            h.on_downstream_error(cx, now);
        }
        self.session.write_ciphertext(&mut self.cipher_out);
        let flush = !self.cipher_out.is_empty();
        self.close_self(flush);
    }

    /// Feeds received ciphertext; the rest waits in `cipher_in`.
    fn feed(&mut self, data: &[u8], cx: &mut H::Cx, now: Instant) {
        if !self.cipher_in.is_empty() {
            self.cipher_in.extend_from_slice(data);
            return;
        }
        match self.session.feed(data) {
            Ok(used) => self
                .cipher_in
                .extend_from_slice(data.get(used..).unwrap_or_default()),
            Err(_) => self.fail(cx, now),
        }
    }

    /// Completes the handshake phase once the session says so, creating the handler.
    fn finish_handshake(&mut self, cx: &mut H::Cx, now: Instant) {
        if self.inner.is_some() || self.closed || !self.session.handshake_complete() {
            return;
        }
        let Some(mut info) = self.info.take() else {
            self.close_self(false);
            return;
        };
        info.tls = true;
        info.sni = self.session.sni().map(Box::from);
        // The client's Finished means the server flight went out: give back the buffers the
        // handshake grew (responses grow them to their own size), so an idle connection
        // does not keep a flight-sized buffer.
        if self.cipher_out.is_empty() {
            self.cipher_out = Vec::new();
        }
        if self.cipher_in.is_empty() {
            self.cipher_in = Vec::new();
        }
        self.inner = Some(H::new(cx, info, now));
    }

    /// Hands decrypted input to the handler while it wants to read. True on progress.
    fn drive_in(&mut self, cx: &mut H::Cx, now: Instant) -> bool {
        let mut progress = false;
        for _ in 0..ROUNDS * 8 {
            if self.broken {
                break;
            }
            let Some(h) = self.inner.as_mut() else {
                break;
            };
            if h.is_closed() || !h.interest().downstream_read || self.eof_delivered {
                break;
            }
            if !self.cipher_in.is_empty() {
                match self.session.feed(&self.cipher_in) {
                    Ok(used) => {
                        self.cipher_in.drain(..used.min(self.cipher_in.len()));
                    }
                    Err(_) => {
                        self.fail(cx, now);
                        return true;
                    }
                }
            }
            if self.cipher_in.is_empty() && self.eof_pending && !self.eof_fed {
                self.session.feed_eof();
                self.eof_fed = true;
            }
            self.plain.clear();
            match self.session.read_plaintext(&mut self.plain) {
                Ok(0) if self.session.peer_closed() => {
                    self.eof_delivered = true;
                    h.on_downstream_eof(cx, now);
                    return true;
                }
                Ok(0) => break,
                Ok(_) => {
                    h.on_downstream_data(cx, &self.plain, now);
                    progress = true;
                }
                Err(TlsError::Truncated) => {
                    // Most HTTP clients close without close_notify: an ordinary EOF.
                    self.eof_delivered = true;
                    h.on_downstream_eof(cx, now);
                    return true;
                }
                Err(_) => {
                    self.fail(cx, now);
                    return true;
                }
            }
        }
        progress
    }

    /// Moves the handler's plaintext into the session and the session's ciphertext into
    /// `cipher_out`; queues `close_notify` after a flushed close. True on progress.
    fn pump_out(&mut self, cx: &mut H::Cx, now: Instant) -> bool {
        let mut progress = false;
        if self.broken {
            return false;
        }
        for _ in 0..ROUNDS {
            let before = self.cipher_out.len();
            let mut moved = false;
            if let Some(h) = self.inner.as_mut()
                && !self.close_queued
                && self.cipher_out.len() < CIPHER_OUT_HIGH
            {
                let out = h.downstream_out();
                if !out.is_empty() {
                    match self.session.write_plaintext(out) {
                        Ok(0) => {}
                        Ok(n) => {
                            h.downstream_written(cx, n, now);
                            moved = true;
                        }
                        Err(_) => {
                            self.fail(cx, now);
                            return true;
                        }
                    }
                }
            }
            self.session.write_ciphertext(&mut self.cipher_out);
            let grew = self.cipher_out.len() > before;
            progress |= moved || grew;
            if !moved {
                break;
            }
        }
        let plain_done = self
            .inner
            .as_ref()
            .is_none_or(|h| h.downstream_out().is_empty());
        if self.close_flush && !self.close_queued && plain_done && self.inner.is_some() {
            self.close_queued = true;
            self.session.close();
            self.session.write_ciphertext(&mut self.cipher_out);
            progress = true;
        }
        progress
    }

    /// After every callback: finish the handshake, deliver input, move output.
    fn settle(&mut self, cx: &mut H::Cx, now: Instant) {
        self.finish_handshake(cx, now);
        for _ in 0..ROUNDS {
            let a = self.drive_in(cx, now);
            let b = self.pump_out(cx, now);
            if !a && !b {
                break;
            }
        }
    }
}

/// Forwards a call to the handler of either variant and settles the TLS layer afterwards.
macro_rules! forward {
    ($self:ident, $cx:ident, $now:ident, |$h:ident| $call:expr) => {
        match $self {
            Layer::Plain($h) => $call,
            Layer::Tls(t) => {
                if let Some($h) = t.inner.as_mut() {
                    $call;
                }
                t.settle($cx, $now);
            }
        }
    };
}

impl<H: ConnHandler> ConnHandler for Layer<H> {
    type Cx = H::Cx;

    fn new(cx: &mut H::Cx, info: ConnInfo, now: Instant) -> Self {
        Layer::Plain(H::new(cx, info, now))
    }

    fn on_downstream_data(&mut self, cx: &mut H::Cx, data: &[u8], now: Instant) {
        match self {
            Layer::Plain(h) => h.on_downstream_data(cx, data, now),
            Layer::Tls(t) => {
                if t.closed || t.broken {
                    return;
                }
                t.feed(data, cx, now);
                if t.inner.is_none() {
                    // Handshake messages to answer.
                    t.session.write_ciphertext(&mut t.cipher_out);
                }
                t.settle(cx, now);
            }
        }
    }

    fn on_downstream_eof(&mut self, cx: &mut H::Cx, now: Instant) {
        match self {
            Layer::Plain(h) => h.on_downstream_eof(cx, now),
            Layer::Tls(t) => {
                if t.inner.is_none() {
                    // The client left during the handshake.
                    t.close_self(false);
                    return;
                }
                t.eof_pending = true;
                t.settle(cx, now);
            }
        }
    }

    fn on_downstream_error(&mut self, cx: &mut H::Cx, now: Instant) {
        match self {
            Layer::Plain(h) => h.on_downstream_error(cx, now),
            Layer::Tls(t) => {
                // The socket failed: nothing more is sent on it.
                t.broken = true;
                t.cipher_out.clear();
                match t.inner.as_mut() {
                    Some(h) => h.on_downstream_error(cx, now),
                    None => t.close_self(false),
                }
            }
        }
    }

    fn on_upstream_connected(&mut self, cx: &mut H::Cx, reused: bool, now: Instant) {
        forward!(self, cx, now, |h| h.on_upstream_connected(cx, reused, now));
    }

    fn on_upstream_data(&mut self, cx: &mut H::Cx, data: &[u8], now: Instant) {
        forward!(self, cx, now, |h| h.on_upstream_data(cx, data, now));
    }

    fn on_upstream_eof(&mut self, cx: &mut H::Cx, now: Instant) {
        forward!(self, cx, now, |h| h.on_upstream_eof(cx, now));
    }

    fn on_upstream_error(&mut self, cx: &mut H::Cx, err: UpstreamError, now: Instant) {
        forward!(self, cx, now, |h| h.on_upstream_error(cx, err, now));
    }

    fn on_timer(&mut self, cx: &mut H::Cx, now: Instant) {
        match self {
            Layer::Plain(h) => h.on_timer(cx, now),
            Layer::Tls(t) => match t.inner.as_mut() {
                None => {
                    if now >= t.handshake_until {
                        t.close_self(false);
                    }
                }
                Some(h) => {
                    h.on_timer(cx, now);
                    t.settle(cx, now);
                }
            },
        }
    }

    fn downstream_out(&self) -> &[u8] {
        match self {
            Layer::Plain(h) => h.downstream_out(),
            Layer::Tls(t) => &t.cipher_out,
        }
    }

    fn lend_downstream_out(&mut self, buf: &mut Vec<u8>) -> bool {
        match self {
            Layer::Plain(h) => h.lend_downstream_out(buf),
            Layer::Tls(_) => false,
        }
    }

    fn downstream_written(&mut self, cx: &mut H::Cx, n: usize, now: Instant) {
        match self {
            Layer::Plain(h) => h.downstream_written(cx, n, now),
            Layer::Tls(t) => {
                t.cipher_out.drain(..n.min(t.cipher_out.len()));
                t.settle(cx, now);
            }
        }
    }

    fn upstream_out(&self) -> &[u8] {
        match self {
            Layer::Plain(h) => h.upstream_out(),
            Layer::Tls(t) => t.inner.as_ref().map_or(&[], |h| h.upstream_out()),
        }
    }

    fn upstream_written(&mut self, cx: &mut H::Cx, n: usize, now: Instant) {
        forward!(self, cx, now, |h| h.upstream_written(cx, n, now));
    }

    fn begin_drain(cx: &mut H::Cx) {
        H::begin_drain(cx);
    }

    fn on_drain(&mut self, cx: &mut H::Cx, now: Instant) {
        // A handshake still running makes its handler later, born draining (`begin_drain`).
        forward!(self, cx, now, |h| h.on_drain(cx, now));
    }

    fn poll_action(&mut self) -> Option<Action> {
        match self {
            Layer::Plain(h) => h.poll_action(),
            Layer::Tls(t) => {
                if let Some(a) = t.pending.take() {
                    return Some(a);
                }
                let action = t.inner.as_mut()?.poll_action()?;
                if let Action::CloseDownstream { flush } = action {
                    if t.broken {
                        // Only the alert is left to send.
                        return Some(Action::CloseDownstream {
                            flush: !t.cipher_out.is_empty(),
                        });
                    }
                    t.close_flush = flush;
                    let plain_done = t
                        .inner
                        .as_ref()
                        .is_none_or(|h| h.downstream_out().is_empty());
                    if flush && plain_done && !t.close_queued {
                        t.close_queued = true;
                        t.session.close();
                        t.session.write_ciphertext(&mut t.cipher_out);
                    }
                }
                Some(action)
            }
        }
    }

    fn interest(&self) -> Interest {
        match self {
            Layer::Plain(h) => h.interest(),
            Layer::Tls(t) => match t.inner.as_ref() {
                None => Interest {
                    downstream_read: !t.closed,
                    upstream_read: false,
                },
                Some(h) => {
                    let i = h.interest();
                    Interest {
                        downstream_read: i.downstream_read
                            && !t.broken
                            && !t.eof_pending
                            && !t.eof_delivered,
                        upstream_read: i.upstream_read,
                    }
                }
            },
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self {
            Layer::Plain(h) => h.deadline(),
            Layer::Tls(t) => match t.inner.as_ref() {
                None if t.closed => None,
                None => Some(t.handshake_until),
                Some(h) => h.deadline(),
            },
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Layer::Plain(h) => h.is_closed(),
            Layer::Tls(t) => {
                (t.closed && t.pending.is_none()) || t.inner.as_ref().is_some_and(H::is_closed)
            }
        }
    }
}
