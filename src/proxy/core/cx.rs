//! The worker context: what one worker lends to every connection it drives — its view of the
//! routing snapshot, its metrics and access-log ring, its endpoint balancer, the drain flag and
//! the spare connection states parked connections give back. Never shared across workers.

use std::sync::Arc;

use crate::logging::AccessLogger;
use crate::metrics::WorkerMetrics;
use crate::proxy::exchange::Balancer;
use crate::proxy::io::PoolKey;

use super::snapshot::{ConnLimits, SharedSnapshot, Views};
use super::{Active, SPARE_MAX};

/// Worker-wide context lent to every connection of one worker (never shared across workers).
pub struct WorkerCx {
    pub(super) views: Views,
    pub metrics: WorkerMetrics,
    /// This worker's access-log ring (off unless [`WorkerCx::with_access_log`]).
    pub access: AccessLogger,
    /// Endpoint choice (round robin per upstream), per worker.
    pub(super) balancer: Balancer,
    pub(super) rng: u64,
    /// Set once the worker drains: every connection opened from now on closes after its first
    /// response.
    pub(super) draining: bool,
    /// States of parked connections kept for the next connection that becomes active. Boxed:
    /// a connection holds its state by pointer, and handing one over moves only that.
    #[allow(clippy::vec_box)]
    pub(super) spare: Vec<Box<Active>>,
    /// The limits the latest parked connection refers to.
    pub(super) parked_limits: Option<Arc<ConnLimits>>,
}

impl WorkerCx {
    pub fn new(shared: SharedSnapshot, metrics: WorkerMetrics, seed: u64) -> Self {
        WorkerCx {
            views: Views::new(shared),
            metrics,
            access: AccessLogger::off(),
            balancer: Balancer::default(),
            rng: seed | 1,
            draining: false,
            spare: Vec::new(),
            parked_limits: None,
        }
    }

    /// Whether the worker is draining.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Sends this worker's access-log records to `access`.
    pub fn with_access_log(mut self, access: AccessLogger) -> Self {
        self.access = access;
        self
    }

    /// The shared snapshot handle this worker reads from.
    pub fn shared(&self) -> &SharedSnapshot {
        self.views.shared()
    }

    pub(super) fn random(&mut self) -> u64 {
        // xorshift64*: request ids and trace ids need uniqueness, not secrecy.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Whether `key` is still an endpoint of its upstream in the latest snapshot, with the same
    /// TLS settings (a connection made plain, or with other SNI/verification, is not reused).
    pub(super) fn endpoint_current(&self, key: &PoolKey) -> bool {
        self.views
            .shared()
            .load()
            .upstreams
            .get(&*key.upstream)
            .is_some_and(|u| u.endpoints.contains(&key.endpoint) && u.tls == key.tls)
    }
}

impl WorkerCx {
    /// A state for a connection about to become active (a spare one when there is one).
    pub(super) fn take_spare(&mut self) -> Option<Box<Active>> {
        self.spare.pop()
    }

    pub(super) fn give_spare(&mut self, a: Box<Active>) {
        if self.spare.len() < SPARE_MAX {
            self.spare.push(a);
        }
    }

    /// The limits parked connections refer to: one shared copy per distinct value (they only
    /// change with a reload), so an idle connection keeps a pointer instead of its own copy.
    pub(super) fn shared_limits(&mut self, limits: &ConnLimits) -> Arc<ConnLimits> {
        match &self.parked_limits {
            Some(l) if **l == *limits => Arc::clone(l),
            _ => {
                let l = Arc::new(*limits);
                self.parked_limits = Some(Arc::clone(&l));
                l
            }
        }
    }

    /// Connection states kept for reuse by this worker (at most a small fixed number).
    pub fn spare_states(&self) -> usize {
        self.spare.len()
    }
}
