//! What happens after a forward attempt failed: try again, or answer which error.
//!
//! Today's rule is the stale-connection replay every keep-alive proxy needs: a pooled
//! connection the upstream had already closed fails before any response byte; the request is
//! replayed on a fresh connection when everything sent for it was kept ([`Attempt::replayable`])
//! and fewer than [`MAX_REPLAYS`] replays were made. Configured retries (`retry.*`, SPEC §9)
//! extend [`after_failure`] with their own conditions and budget.

use crate::metrics::ErrorReason;
use crate::proxy::io::UpstreamError;

/// Attempts of one request on reused connections that failed before any response byte.
pub const MAX_REPLAYS: u8 = 2;

/// A failed forward attempt, as the session saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub error: UpstreamError,
    /// The attempt ran on a pooled (reused) connection.
    pub reused: bool,
    /// Every byte sent upstream for the request is still held, so it can be sent again.
    pub replayable: bool,
    /// Replays already made for this request.
    pub replays: u8,
    /// Response bytes already reached the client.
    pub response_started: bool,
}

/// The answer of [`after_failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Send the request again on a fresh connection.
    Retry,
    /// Answer the client with this status (nothing was sent to it yet).
    Respond { status: u16, reason: ErrorReason },
    /// The response was cut short: end the connection so the client sees the truncation.
    Abort { reason: ErrorReason },
}

/// Decides what follows a failed attempt.
pub fn after_failure(a: &Attempt) -> AfterFailure {
    if a.response_started {
        return AfterFailure::Abort {
            reason: ErrorReason::UpstreamReset,
        };
    }
    if a.reused && a.error == UpstreamError::Io && a.replays < MAX_REPLAYS && a.replayable {
        return AfterFailure::Retry;
    }
    let (status, reason) = match a.error {
        UpstreamError::Connect => (502, ErrorReason::UpstreamConnect),
        UpstreamError::ConnectTimeout => (504, ErrorReason::UpstreamTimeout),
        UpstreamError::Io => (502, ErrorReason::UpstreamReset),
        UpstreamError::Tls => (502, ErrorReason::UpstreamTls),
    };
    AfterFailure::Respond { status, reason }
}
