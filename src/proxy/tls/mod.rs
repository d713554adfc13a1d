//! TLS termination for the data plane, sans-IO: certificates and the SNI map
//! ([`store`]), the hot-swappable resolver rustls calls per handshake ([`resolver`]), the
//! shared rustls server configuration ([`config`]) and the per-connection byte-driven session
//! the io drivers use ([`session`]), and the client side towards HTTPS upstreams ([`client`]). Crypto is rustls with the aws-lc-rs provider; TLS 1.2 and
//! 1.3 only. Arc code here touches no socket and reads no clock; rustls itself reads the wall
//! clock for session-ticket lifetimes and ticket-key rotation.

#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod resolver;
pub mod session;
pub mod store;
mod x509;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub use client::{
    ClientCertPem, TlsClient, UpstreamTls, UpstreamTlsCache, UpstreamTlsError, UpstreamTlsOptions,
};
pub use config::{
    ALPN_H2, ALPN_HTTP11, TlsAcceptor, TlsAcceptorConfig, TlsSetupError, server_config,
};
pub use resolver::CertResolver;
pub use session::{TlsError, TlsSession};
pub use store::{
    CertError, CertInfo, CertOrigin, CertStore, CertStoreBuilder, LoadedCert, StoreEntry,
};

/// The crypto provider every TLS object of Arc uses (aws-lc-rs), independent of any
/// process-wide default another library may install.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())))
}
