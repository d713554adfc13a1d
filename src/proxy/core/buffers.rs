//! The downstream buffers: bytes read from the client and not yet decoded, the request
//! decoder, the bytes queued for the client (and those lent to the driver), and the times the
//! connection went idle and a head started arriving. Also the bookkeeping of the client's
//! output the driver reports.

use std::time::Instant;

use crate::proxy::http1::RequestDecoder;

use super::snapshot::ConnLimits;
use super::{Active, LEND_MIN, UpState};

/// The client side's buffers.
pub(super) struct Downstream {
    pub(super) inbuf: Vec<u8>,
    pub(super) req: RequestDecoder,
    pub(super) out: Vec<u8>,
    pub(super) pos: usize,
    /// Bytes lent to the driver (`lend_downstream_out`) and not yet reported written; they
    /// were sent before anything now in `out`.
    pub(super) lent: usize,
    pub(super) idle_since: Instant,
    pub(super) head_started: Option<Instant>,
    /// The client closed its sending side.
    pub(super) eof: bool,
}

impl Downstream {
    pub(super) fn new(limits: ConnLimits, now: Instant) -> Self {
        Downstream {
            inbuf: Vec::new(),
            req: RequestDecoder::new(limits.codec, false),
            out: Vec::new(),
            pos: 0,
            lent: 0,
            idle_since: now,
            head_started: None,
            eof: false,
        }
    }
}

impl Active {
    pub(super) fn pending_down(&self) -> usize {
        self.down.out.len() - self.down.pos + self.down.lent
    }

    pub(super) fn downstream_out(&self) -> &[u8] {
        self.down.out.get(self.down.pos..).unwrap_or_default()
    }

    pub(super) fn lend_downstream_out(&mut self, buf: &mut Vec<u8>) -> bool {
        // Small writes are cheaper to copy than to swap buffers for.
        if self.down.lent > 0
            || self.down.pos > 0
            || self.down.out.len() < LEND_MIN
            || self.down.out.len() > u32::MAX as usize
            || !buf.is_empty()
        {
            return false;
        }
        std::mem::swap(&mut self.down.out, buf);
        self.down.lent = buf.len();
        true
    }

    pub(super) fn upstream_out(&self) -> &[u8] {
        if self.up.state == UpState::Connected {
            self.up.out.get(self.up.pos..).unwrap_or_default()
        } else {
            &[]
        }
    }
}
