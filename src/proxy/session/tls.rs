//! Downstream TLS for both io drivers: a [`ConnHandler`] layer that sits between the driver
//! and the real handler on https listeners.
//!
//! The driver moves ciphertext only (it treats the layer as the handler: `downstream_out` is
//! ciphertext, received bytes are ciphertext); this layer runs the handshake before the real handler
//! exists (creating it with `ConnInfo { tls: true, sni }` once the handshake completes),
//! feeds received ciphertext through [`TlsSession::feed`] / [`TlsSession::read_plaintext`]
//! while the handler wants to read, moves the handler's output through
//! [`TlsSession::write_plaintext`] / [`TlsSession::write_ciphertext`] into the ciphertext the
//! driver sends, queues `close_notify` once a flushed close has no plaintext left, and sends a
//! best-effort alert when the session fails. Plain listeners use [`Layer::Plain`], which only
//! forwards.
//!
//! Buffers: a connection holds its ciphertext buffers only while bytes wait in them, and its
//! plaintext buffer only inside a callback. Emptied buffers go to a small per-thread spare list
//! (each worker runs on its own thread, so nothing is shared between workers) and the next
//! connection takes them from there: an idle TLS connection keeps no buffer of this layer, and
//! a busy one allocates none.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use crate::proxy::io::{Action, ConnHandler, ConnInfo, Interest, PoolKey, UpstreamError};
use crate::proxy::tls::{TlsError, TlsSession};

/// Most ciphertext kept waiting for the socket before the handler's plaintext is left where
/// it is (the handler's own buffer bounds it).
const CIPHER_OUT_HIGH: usize = 64 * 1024;
/// Least ciphertext lent to the driver instead of copied (`lend_downstream_out`): below it a
/// copy is cheaper than swapping buffers.
const LEND_MIN: usize = 16 * 1024;
/// Rounds of "deliver input, move output" per callback (each round is bounded by itself).
const ROUNDS: usize = 8;
/// Spare buffers kept per thread, and the largest capacity worth keeping.
const SPARE_MAX: usize = 64;
const SPARE_BUF_MAX: usize = 128 * 1024;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer, a spare one when there is one.
fn take_buf() -> Vec<u8> {
    SPARE
        .with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.pop()))
        .unwrap_or_default()
}

/// Gives an emptied buffer back for reuse (or frees it).
fn give_buf(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > SPARE_BUF_MAX {
        return;
    }
    buf.clear();
    SPARE.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut()
            && s.len() < SPARE_MAX
        {
            s.push(buf);
        }
    });
}

/// Gives `buf` back when it is empty, leaving an unallocated one in its place.
fn release_if_empty(buf: &mut Vec<u8>) {
    if buf.is_empty() && buf.capacity() > 0 {
        give_buf(std::mem::take(buf));
    }
}

/// Makes sure `buf` has storage before bytes are appended (a spare one when there is one).
fn ensure_buf(buf: &mut Vec<u8>) {
    if buf.capacity() == 0 {
        *buf = take_buf();
    }
}

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
    /// Ciphertext lent to the driver (moved out of `cipher_out` with the buffer it was in) and
    /// not yet reported written: it counts as queued until `downstream_written` reports it.
    cipher_lent: usize,
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
    /// The handler of a newly accepted connection: the handler itself on a plain listener;
    /// with `session` (an https listener) the TLS layer in its handshake phase, which ends by
    /// `now + handshake_timeout` and creates the handler once the handshake completed.
    pub(crate) fn open(
        cx: &mut H::Cx,
        info: ConnInfo,
        session: Option<TlsSession>,
        now: Instant,
        handshake_timeout: Duration,
    ) -> Self {
        match session {
            None => Layer::Plain(H::new(cx, info, now)),
            Some(session) => Layer::tls(session, info, now + handshake_timeout),
        }
    }

    /// A TLS connection in its handshake phase.
    pub(crate) fn tls(session: TlsSession, info: ConnInfo, handshake_until: Instant) -> Self {
        Layer::Tls(Box::new(TlsLayer {
            session,
            inner: None,
            info: Some(info),
            handshake_until,
            cipher_in: Vec::new(),
            cipher_out: Vec::new(),
            cipher_lent: 0,
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
    /// Ciphertext not yet written to the socket: in `cipher_out` and lent to the driver.
    fn cipher_queued(&self) -> usize {
        self.cipher_out.len() + self.cipher_lent
    }

    /// Closes from this layer; `flush` sends what ciphertext is queued (an alert) first.
    fn close_self(&mut self, flush: bool) {
        if !self.closed {
            self.closed = true;
            self.pending = Some(Action::CloseDownstream {
                flush,
                linger: true,
            });
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
        ensure_buf(&mut self.cipher_out);
        self.session.write_ciphertext(&mut self.cipher_out);
        let flush = self.cipher_queued() > 0;
        self.close_self(flush);
    }

    /// Feeds received ciphertext; the rest waits in `cipher_in`.
    fn feed(&mut self, data: &[u8], cx: &mut H::Cx, now: Instant) {
        if !self.cipher_in.is_empty() {
            self.cipher_in.extend_from_slice(data);
            return;
        }
        match self.session.feed(data) {
            Ok(used) => {
                let rest = data.get(used..).unwrap_or_default();
                if !rest.is_empty() {
                    ensure_buf(&mut self.cipher_in);
                    self.cipher_in.extend_from_slice(rest);
                }
            }
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
        self.inner = Some(H::new(cx, info, now));
    }

    /// Hands decrypted input to the handler while it wants to read. True on progress.
    fn drive_in(&mut self, cx: &mut H::Cx, now: Instant) -> bool {
        let mut plain = take_buf();
        let progress = self.drive_in_with(&mut plain, cx, now);
        give_buf(plain);
        progress
    }

    fn drive_in_with(&mut self, plain: &mut Vec<u8>, cx: &mut H::Cx, now: Instant) -> bool {
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
            plain.clear();
            match self.session.read_plaintext(plain) {
                Ok(0) if self.session.peer_closed() => {
                    self.eof_delivered = true;
                    h.on_downstream_eof(cx, now);
                    return true;
                }
                Ok(0) => break,
                Ok(_) => {
                    h.on_downstream_data(cx, plain, now);
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
            let room = self.cipher_queued() < CIPHER_OUT_HIGH;
            if let Some(h) = self.inner.as_mut()
                && !self.close_queued
                && room
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
            if self.session.wants_write() {
                ensure_buf(&mut self.cipher_out);
                self.session.write_ciphertext(&mut self.cipher_out);
            }
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
            ensure_buf(&mut self.cipher_out);
            self.session.write_ciphertext(&mut self.cipher_out);
            progress = true;
        }
        progress
    }

    /// After every callback: finish the handshake, deliver input, move output, and give
    /// back the buffers that emptied.
    fn settle(&mut self, cx: &mut H::Cx, now: Instant) {
        self.finish_handshake(cx, now);
        for _ in 0..ROUNDS {
            let a = self.drive_in(cx, now);
            let b = self.pump_out(cx, now);
            if !a && !b {
                break;
            }
        }
        release_if_empty(&mut self.cipher_in);
        release_if_empty(&mut self.cipher_out);
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
                    ensure_buf(&mut t.cipher_out);
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
                t.cipher_lent = 0;
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
            Layer::Tls(t) => {
                // Records are sealed into `cipher_out` and sent from there: a large batch
                // moves to the driver with its buffer instead of being copied.
                if t.cipher_lent > 0
                    || t.broken
                    || t.cipher_out.len() < LEND_MIN
                    || t.cipher_out.len() > u32::MAX as usize
                    || !buf.is_empty()
                {
                    return false;
                }
                std::mem::swap(&mut t.cipher_out, buf);
                t.cipher_lent = buf.len();
                true
            }
        }
    }

    fn downstream_written(&mut self, cx: &mut H::Cx, n: usize, now: Instant) {
        match self {
            Layer::Plain(h) => h.downstream_written(cx, n, now),
            Layer::Tls(t) => {
                // Lent bytes go out first (the driver sends them before looking again).
                let lent = n.min(t.cipher_lent);
                t.cipher_lent -= lent;
                let n = n - lent;
                t.cipher_out.drain(..n.min(t.cipher_out.len()));
                // The handler saw its plaintext taken inside an earlier callback, before the
                // driver had collected that callback's actions (an upstream release, say), so
                // it could not yet settle into idleness then. Now that its bytes are on the
                // wire, report it (zero new bytes) so that it can.
                if t.cipher_queued() == 0
                    && let Some(h) = t.inner.as_mut()
                    && !h.is_closed()
                    && h.downstream_out().is_empty()
                {
                    h.downstream_written(cx, 0, now);
                }
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

    fn on_refused(cx: &mut H::Cx) {
        H::on_refused(cx);
    }

    fn endpoints_epoch(cx: &mut H::Cx) -> u64 {
        H::endpoints_epoch(cx)
    }

    fn keep_pooled(cx: &mut H::Cx, key: &PoolKey) -> bool {
        H::keep_pooled(cx, key)
    }

    fn pool_gauges(cx: &mut H::Cx) -> Option<crate::metrics::PoolGauges> {
        H::pool_gauges(cx)
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
                let mut action = t.inner.as_mut()?.poll_action()?;
                if let Action::CloseDownstream { flush, linger } = &mut action {
                    let flush = *flush;
                    // A TLS client may still send records the handler never sees (its own
                    // `close_notify` answering ours): the close always lingers.
                    *linger = true;
                    if t.broken {
                        // Only the alert is left to send.
                        return Some(Action::CloseDownstream {
                            flush: t.cipher_queued() > 0,
                            linger: true,
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
                        ensure_buf(&mut t.cipher_out);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tls::{
        CertResolver, CertStore, LoadedCert, TlsAcceptor, TlsAcceptorConfig, TlsClient, UpstreamTls,
    };
    use std::net::SocketAddr;

    /// Answers every complete request head with a fixed response.
    struct Answer {
        out: Vec<u8>,
        seen: Vec<u8>,
    }

    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    /// The answer to `GET /big`: 200 000 bytes of body, no two neighbouring bytes alike.
    fn big_response() -> Vec<u8> {
        let mut r = b"HTTP/1.1 200 OK\r\ncontent-length: 200000\r\n\r\n".to_vec();
        r.extend((0..200_000u32).map(|i| (i % 251) as u8));
        r
    }

    impl ConnHandler for Answer {
        type Cx = ();
        fn new(_: &mut (), _: ConnInfo, _: Instant) -> Self {
            Answer {
                out: Vec::new(),
                seen: Vec::new(),
            }
        }
        fn on_downstream_data(&mut self, _: &mut (), data: &[u8], _: Instant) {
            self.seen.extend_from_slice(data);
            if self.seen.ends_with(b"\r\n\r\n") {
                if self.seen.starts_with(b"GET /big ") {
                    self.out.extend_from_slice(&big_response());
                } else {
                    self.out.extend_from_slice(RESPONSE);
                }
                self.seen.clear();
            }
        }
        fn on_downstream_eof(&mut self, _: &mut (), _: Instant) {}
        fn on_downstream_error(&mut self, _: &mut (), _: Instant) {}
        fn on_upstream_connected(&mut self, _: &mut (), _: bool, _: Instant) {}
        fn on_upstream_data(&mut self, _: &mut (), _: &[u8], _: Instant) {}
        fn on_upstream_eof(&mut self, _: &mut (), _: Instant) {}
        fn on_upstream_error(&mut self, _: &mut (), _: UpstreamError, _: Instant) {}
        fn on_timer(&mut self, _: &mut (), _: Instant) {}
        fn downstream_out(&self) -> &[u8] {
            &self.out
        }
        fn downstream_written(&mut self, _: &mut (), n: usize, _: Instant) {
            self.out.drain(..n.min(self.out.len()));
        }
        fn upstream_out(&self) -> &[u8] {
            &[]
        }
        fn upstream_written(&mut self, _: &mut (), _: usize, _: Instant) {}
        fn poll_action(&mut self) -> Option<Action> {
            None
        }
        fn interest(&self) -> Interest {
            Interest {
                downstream_read: true,
                upstream_read: false,
            }
        }
        fn deadline(&self) -> Option<Instant> {
            None
        }
        fn is_closed(&self) -> bool {
            false
        }
        fn keep_pooled(_: &mut (), _: &PoolKey) -> bool {
            false
        }
    }

    /// Moves bytes both ways, copying the layer's output, until both sides are quiet.
    fn shuttle(layer: &mut Layer<Answer>, client: &mut TlsClient, now: Instant) {
        let mut cx = ();
        for _ in 0..32 {
            let up = client.pending_out().to_vec();
            client.sent(up.len());
            if !up.is_empty() {
                layer.on_downstream_data(&mut cx, &up, now);
            }
            let down = layer.downstream_out().to_vec();
            if !down.is_empty() {
                layer.downstream_written(&mut cx, down.len(), now);
                client.on_ciphertext(&down).unwrap();
            }
            if up.is_empty() && down.is_empty() {
                return;
            }
        }
        panic!("the exchange did not settle");
    }

    /// A TLS layer in its handshake phase and a client for it.
    fn tls_pair(now: Instant) -> (Layer<Answer>, TlsClient) {
        let cert = LoadedCert::generate_default().unwrap();
        let acceptor = TlsAcceptor::new(
            &TlsAcceptorConfig::default(),
            CertResolver::new(CertStore::with_default(cert)),
        )
        .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], 443));
        let info = ConnInfo {
            peer: addr,
            local: addr,
            listener: 0,
            tls: false,
            sni: None,
        };
        let layer = Layer::tls(
            acceptor.accept().unwrap(),
            info,
            now + Duration::from_secs(10),
        );
        let client = UpstreamTls::insecure(Some("arc.test"))
            .unwrap()
            .connect(addr)
            .unwrap();
        (layer, client)
    }

    #[test]
    fn large_ciphertext_is_lent_to_the_driver_not_copied() {
        let now = Instant::now();
        let (mut layer, mut client) = tls_pair(now);
        shuttle(&mut layer, &mut client, now);
        assert!(client.handshake_complete());
        let req = b"GET /big HTTP/1.1\r\nHost: arc.test\r\n\r\n";
        assert_eq!(client.encrypt(req).unwrap(), req.len());
        let up = client.pending_out().to_vec();
        client.sent(up.len());
        let mut cx = ();
        layer.on_downstream_data(&mut cx, &up, now);

        // Acts as the driver does: lends what it can, copies the rest, and reports each send
        // (lent bytes in two short sends) before it looks at the output again.
        let (mut lent, mut copied, mut got) = (0, 0, Vec::new());
        for _ in 0..64 {
            let mut buf = Vec::new();
            if layer.lend_downstream_out(&mut buf) {
                lent += 1;
                assert!(buf.len() >= LEND_MIN, "{}", buf.len());
                let Layer::Tls(t) = &layer else {
                    unreachable!()
                };
                assert_eq!(t.cipher_lent, buf.len());
                assert!(t.cipher_queued() <= CIPHER_OUT_HIGH + 2 * 16 * 1024);
                // Nothing lent is offered again.
                assert!(layer.downstream_out().len() < buf.len());
                let half = buf.len() / 2;
                for part in [&buf[..half], &buf[half..]] {
                    layer.downstream_written(&mut cx, part.len(), now);
                    client.on_ciphertext(part).unwrap();
                }
            } else {
                let down = layer.downstream_out().to_vec();
                if down.is_empty() {
                    break;
                }
                copied += 1;
                layer.downstream_written(&mut cx, down.len(), now);
                client.on_ciphertext(&down).unwrap();
            }
            client.take_plaintext(&mut got);
        }
        client.take_plaintext(&mut got);
        assert_eq!(got.len(), big_response().len());
        assert!(
            got == big_response(),
            "the response arrives intact and in order"
        );
        assert!(
            lent >= 3,
            "200 kB go out in lent batches: lent {lent}, copied {copied}"
        );
        assert_eq!(held(&layer), Some((0, 0)), "idle after the response");
        let Layer::Tls(t) = &layer else {
            unreachable!()
        };
        assert_eq!(t.cipher_lent, 0);

        // Small answers are still copied, and the connection goes on.
        let req = b"GET / HTTP/1.1\r\nHost: arc.test\r\n\r\n";
        assert_eq!(client.encrypt(req).unwrap(), req.len());
        let up = client.pending_out().to_vec();
        client.sent(up.len());
        layer.on_downstream_data(&mut cx, &up, now);
        assert!(!layer.lend_downstream_out(&mut Vec::new()));
        shuttle(&mut layer, &mut client, now);
        let mut small = Vec::new();
        client.take_plaintext(&mut small);
        assert_eq!(small, RESPONSE);
    }

    /// Ciphertext buffers the layer holds (capacity), or `None` for a plain layer.
    fn held(layer: &Layer<Answer>) -> Option<(usize, usize)> {
        match layer {
            Layer::Tls(t) => Some((t.cipher_in.capacity(), t.cipher_out.capacity())),
            Layer::Plain(_) => None,
        }
    }

    #[test]
    fn an_idle_tls_connection_holds_no_layer_buffer() {
        let now = Instant::now();
        let (mut layer, mut client) = tls_pair(now);
        let shuttle = |layer: &mut Layer<Answer>, client: &mut TlsClient| {
            shuttle(layer, client, now);
        };
        shuttle(&mut layer, &mut client);
        assert!(client.handshake_complete());
        assert_eq!(held(&layer), Some((0, 0)), "after the handshake");
        for round in 0..3 {
            let req = b"GET / HTTP/1.1\r\nHost: arc.test\r\n\r\n";
            assert_eq!(client.encrypt(req).unwrap(), req.len());
            shuttle(&mut layer, &mut client);
            let mut got = Vec::new();
            client.take_plaintext(&mut got);
            assert_eq!(got, RESPONSE, "round {round}");
            assert_eq!(held(&layer), Some((0, 0)), "idle after round {round}");
        }
        // The emptied buffers wait for the next connection of this thread.
        assert!(take_buf().capacity() > 0);
    }
}
