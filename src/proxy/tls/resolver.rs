//! The SNI certificate resolver rustls calls on every handshake. It reads the current
//! [`CertStore`] from an [`ArcSwap`], so [`CertResolver::swap`] takes effect for the next
//! handshake on every worker at once, while established sessions keep the keys they already
//! negotiated.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::store::CertStore;

/// Picks the certificate for each handshake from the current [`CertStore`] snapshot.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertStore>,
}

impl CertResolver {
    /// A resolver serving `store` until the next [`swap`](Self::swap).
    pub fn new(store: CertStore) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(store),
        })
    }

    /// Installs a new snapshot for all future handshakes and returns the previous one.
    pub fn swap(&self, store: CertStore) -> Arc<CertStore> {
        self.current.swap(Arc::new(store))
    }

    /// The snapshot new handshakes currently use (for the control API).
    pub fn current(&self) -> Arc<CertStore> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let store = self.current.load();
        Some(Arc::clone(store.resolve(client_hello.server_name())))
    }
}
