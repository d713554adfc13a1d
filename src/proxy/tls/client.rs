//! TLS towards upstreams (`backend-protocol: HTTPS`, standalone `upstreams[].tls`), sans-IO.
//!
//! [`UpstreamTls`] is one upstream's client settings: the rustls [`ClientConfig`] (aws-lc-rs,
//! TLS 1.2 and 1.3, ALPN `http/1.1`), the name sent as SNI and checked in the certificate, and
//! whether the certificate is verified at all. It travels in the
//! [`PoolKey`](crate::proxy::io::PoolKey), so TLS and plain connections to one endpoint never
//! share a pool entry. [`TlsClient`] is the client side of one upstream connection over
//! in-memory buffers; the io drivers put it between the upstream socket and the handler the
//! same way they wrap downstream TLS, so the proxy core only ever sees plaintext. Nothing here
//! touches a socket.
//!
//! Verification: off (any certificate is accepted, handshake signatures are still checked)
//! mirrors ingress-nginx's default `proxy-ssl-verify off` for Kubernetes backends; on, the
//! chain is checked against configured CAs (a PEM file, or PEM bytes from a Secret) or the
//! system roots (loaded once per process with `rustls-native-certs`). An upstream may also
//! present a client certificate (mTLS) and may send no SNI while still verifying a name.
//!
//! Sessions are resumed (rustls' client cache, per [`ClientConfig`]). Settings without a CA
//! file share one configuration per content ([`UpstreamTlsCache`]) across routing snapshots,
//! so a snapshot that leaves an upstream's Secret unchanged leaves its sessions resumable.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::config::{ALPN_HTTP11, DEFAULT_SEND_BUFFER_LIMIT};
use super::provider;
use super::session::{TlsError, TlsSession};

/// What a configuration or an Ingress says about TLS to one upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTlsOptions {
    /// Name sent as SNI and checked in the certificate; `None` = the endpoint's address (no
    /// SNI). An IP address here also sends no SNI.
    pub server_name: Option<String>,
    /// Verify the upstream's certificate chain and name.
    pub verify: bool,
    /// PEM file of trusted CA certificates (only with `verify`); `None` = system roots.
    pub ca: Option<PathBuf>,
    /// Trusted CA certificates as PEM bytes (a Secret's `ca.crt`); takes precedence over
    /// `ca` (only with `verify`).
    pub ca_pem: Option<Arc<[u8]>>,
    /// Client certificate presented to the upstream (mTLS).
    pub client_cert: Option<ClientCertPem>,
    /// Send no SNI; `server_name` is still the name the certificate is checked against.
    pub no_sni: bool,
}

/// A client certificate chain and its private key, as PEM. Debug output never shows the key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientCertPem {
    /// PEM certificate chain, leaf first.
    pub chain: Arc<[u8]>,
    /// PEM private key of the leaf.
    pub key: Arc<[u8]>,
}

impl fmt::Debug for ClientCertPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertPem")
            .field("chain_bytes", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// SHA-256 of `data` (aws-lc-rs through rustls): identifies PEM contents in pool keys and
/// derives stable names without keeping or comparing the bytes.
pub fn digest(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Some(suite) = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256.tls13() {
        let h = suite.common.hash_provider.hash(data);
        for (o, b) in out.iter_mut().zip(h.as_ref()) {
            *o = *b;
        }
    }
    out
}

/// Parses a PEM CA bundle held in memory; at least one certificate must be usable.
pub fn parse_ca_pem(pem: &[u8]) -> Result<RootCertStore, UpstreamTlsError> {
    let err = |reason: String| UpstreamTlsError::CaPem { reason };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    roots_of(certs).map_err(err)
}

/// Parses a client certificate chain and key, checking that the key belongs to the leaf.
pub fn parse_client_cert(
    cert: &ClientCertPem,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), UpstreamTlsError> {
    let err = |reason: String| UpstreamTlsError::ClientCert { reason };
    let chain = CertificateDer::pem_slice_iter(&cert.chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("certificate: {e}")))?;
    if chain.is_empty() {
        return Err(err("no certificate in the PEM data".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&cert.key).map_err(|e| err(format!("key: {e}")))?;
    let signing = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| err(format!("key: {e}")))?;
    let certified = rustls::sign::CertifiedKey::new(chain.clone(), signing);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(err("the key does not match the certificate".into()));
        }
        // The key cannot tell its public half; nothing to compare.
        Err(rustls::Error::InconsistentKeys(_)) => {}
        Err(e) => return Err(err(format!("certificate: {e}"))),
    }
    Ok((chain, key))
}

/// Why upstream TLS settings could not be turned into a client configuration.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    /// `server_name` is neither a DNS name nor an IP address.
    #[error("invalid upstream TLS server_name {0:?}")]
    BadServerName(String),
    /// The CA file could not be read or holds no usable certificate.
    #[error("cannot load upstream CA file {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
    /// The in-memory CA bundle (a Secret's `ca.crt`) holds no usable certificate.
    #[error("unusable upstream CA certificates: {reason}")]
    CaPem { reason: String },
    /// The client certificate or its key is unusable or they do not match.
    #[error("unusable upstream client certificate: {reason}")]
    ClientCert { reason: String },
    /// rustls refused the protocol versions or the verifier.
    #[error("cannot build the upstream TLS configuration: {0}")]
    Rustls(String),
}

/// One upstream's TLS client settings (see the module doc). Equality and hashing use the
/// settings, not the config's identity, so pools survive snapshot rebuilds.
#[derive(Clone)]
pub struct UpstreamTls {
    server_name: Option<Arc<str>>,
    verify: bool,
    ca: Option<Arc<Path>>,
    /// SHA-256 of the in-memory CA bundle.
    ca_digest: Option<[u8; 32]>,
    /// SHA-256 of the client chain and key.
    client_digest: Option<[u8; 32]>,
    sni: bool,
    config: Arc<ClientConfig>,
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .field("verify", &self.verify)
            .field("ca", &self.ca)
            .field("ca_pem", &self.ca_digest.is_some())
            .field("client_cert", &self.client_digest.is_some())
            .field("sni", &self.sni)
            .finish_non_exhaustive()
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.server_name == other.server_name
            && self.verify == other.verify
            && self.ca == other.ca
            && self.ca_digest == other.ca_digest
            && self.client_digest == other.client_digest
            && self.sni == other.sni
    }
}

impl Eq for UpstreamTls {}

impl Hash for UpstreamTls {
    fn hash<S: Hasher>(&self, state: &mut S) {
        self.server_name.hash(state);
        self.verify.hash(state);
        self.ca.hash(state);
        self.ca_digest.hash(state);
        self.client_digest.hash(state);
        self.sni.hash(state);
    }
}

impl UpstreamTls {
    /// Builds the client settings; reads the CA file (or the system roots, once) when verifying.
    pub fn new(opts: &UpstreamTlsOptions) -> Result<Self, UpstreamTlsError> {
        Self::build(opts, None)
    }

    /// [`UpstreamTls::new`] taking settings built from in-memory PEM (a Secret's CA bundle or
    /// client pair) from `cache` when the same contents were built before, and recording them
    /// there otherwise; see [`UpstreamTlsCache`].
    pub fn cached(
        opts: &UpstreamTlsOptions,
        cache: &mut UpstreamTlsCache,
    ) -> Result<Self, UpstreamTlsError> {
        Self::build(opts, Some(cache))
    }

    fn build(
        opts: &UpstreamTlsOptions,
        cache: Option<&mut UpstreamTlsCache>,
    ) -> Result<Self, UpstreamTlsError> {
        if let Some(name) = &opts.server_name {
            ServerName::try_from(name.as_str())
                .map_err(|_| UpstreamTlsError::BadServerName(name.clone()))?;
        }
        let ca_pem = opts.ca_pem.as_ref().filter(|_| opts.verify);
        let ca_digest = ca_pem.map(|p| digest(p));
        let client_digest = opts.client_cert.as_ref().map(|c| {
            let mut both = Vec::with_capacity(c.chain.len() + c.key.len() + 1);
            both.extend_from_slice(&c.chain);
            both.push(0);
            both.extend_from_slice(&c.key);
            digest(&both)
        });
        let shared = opts.client_cert.is_none() && !opts.no_sni;
        let build = || -> Result<Arc<ClientConfig>, UpstreamTlsError> {
            let client = opts
                .client_cert
                .as_ref()
                .map(parse_client_cert)
                .transpose()?;
            match (opts.verify, ca_pem, &opts.ca) {
                (false, _, _) if shared => no_verify_config(),
                (true, None, None) if shared => system_roots_config(),
                (false, _, _) => custom_config(Verifier::AcceptAny, client, opts.no_sni),
                (true, Some(pem), _) => {
                    custom_config(Verifier::Roots(parse_ca_pem(pem)?), client, opts.no_sni)
                }
                (true, None, Some(path)) => {
                    custom_config(Verifier::Roots(load_ca(path)?), client, opts.no_sni)
                }
                (true, None, None) => {
                    custom_config(Verifier::Roots(system_roots()), client, opts.no_sni)
                }
            }
        };
        // A CA file is read again on every build (a reload picks up a new file); everything
        // else is identified by its contents.
        let key = (ca_pem.is_some() || opts.ca.is_none() || !opts.verify).then_some(ConfigKey {
            verify: opts.verify,
            ca: ca_digest,
            client: client_digest,
            sni: !opts.no_sni,
        });
        let config = match (cache, key) {
            (Some(cache), Some(key)) => cache.get_or_build(key, build)?,
            _ => build()?,
        };
        Ok(Self {
            server_name: opts.server_name.as_deref().map(Arc::from),
            verify: opts.verify,
            ca: opts
                .ca
                .as_deref()
                .filter(|_| opts.verify && ca_pem.is_none())
                .map(Arc::from),
            ca_digest,
            client_digest,
            sni: !opts.no_sni,
            config,
        })
    }

    /// Settings with verification off and an optional SNI name (Kubernetes backends).
    pub fn insecure(server_name: Option<&str>) -> Result<Self, UpstreamTlsError> {
        Self::new(&UpstreamTlsOptions {
            server_name: server_name.map(str::to_owned),
            verify: false,
            ..UpstreamTlsOptions::default()
        })
    }

    /// The configured SNI name, if any.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// Whether the certificate is verified.
    pub fn verifies(&self) -> bool {
        self.verify
    }

    /// Whether SNI is sent (the server name is then also the name verified).
    pub fn sends_sni(&self) -> bool {
        self.sni
    }

    /// Whether a client certificate is presented.
    pub fn has_client_cert(&self) -> bool {
        self.client_digest.is_some()
    }

    /// Starts the client side of a new connection to `endpoint`; the ClientHello is ready in
    /// [`TlsClient::pending_out`] at once.
    pub fn connect(&self, endpoint: SocketAddr) -> Result<TlsClient, TlsError> {
        let name = match self.server_name.as_deref() {
            Some(n) => ServerName::try_from(n.to_owned()).map_err(|_| {
                TlsError::Setup(rustls::Error::General(format!("bad server name {n:?}")))
            })?,
            None => ServerName::IpAddress(endpoint.ip().into()),
        };
        let session =
            TlsSession::client(Arc::clone(&self.config), name, DEFAULT_SEND_BUFFER_LIMIT)?;
        Ok(TlsClient {
            session,
            cipher_out: Vec::new(),
            plain: Vec::new(),
            eof: false,
        })
    }
}

/// What a client configuration is built from, apart from a CA file: verification, the digests
/// of the in-memory CA bundle and client pair, and whether SNI is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ConfigKey {
    verify: bool,
    ca: Option<[u8; 32]>,
    client: Option<[u8; 32]>,
    sni: bool,
}

/// Client configurations kept from one routing snapshot to the next (Kubernetes mode, where
/// every change in the cluster builds a new snapshot). An upstream whose Secret did not change
/// keeps its [`ClientConfig`], and with it the TLS sessions cached for resumption: the next
/// new connection to that backend resumes instead of running a full handshake, and the PEM is
/// not parsed again. A build starts with [`UpstreamTlsCache::begin`] and ends with
/// [`UpstreamTlsCache::sweep`], which drops what the build did not use.
#[derive(Debug, Default)]
pub struct UpstreamTlsCache {
    configs: std::collections::HashMap<ConfigKey, (Arc<ClientConfig>, u64)>,
    generation: u64,
}

impl UpstreamTlsCache {
    /// Starts a build: what it uses is kept by the next [`UpstreamTlsCache::sweep`].
    pub fn begin(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// Drops the configurations the build since [`UpstreamTlsCache::begin`] did not use.
    pub fn sweep(&mut self) {
        let current = self.generation;
        self.configs.retain(|_, (_, used)| *used == current);
    }

    /// How many configurations are kept.
    pub fn len(&self) -> usize {
        self.configs.len()
    }

    /// Whether no configuration is kept.
    pub fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }

    fn get_or_build(
        &mut self,
        key: ConfigKey,
        build: impl FnOnce() -> Result<Arc<ClientConfig>, UpstreamTlsError>,
    ) -> Result<Arc<ClientConfig>, UpstreamTlsError> {
        let current = self.generation;
        if let Some((config, used)) = self.configs.get_mut(&key) {
            *used = current;
            return Ok(Arc::clone(config));
        }
        let config = build()?;
        self.configs.insert(key, (Arc::clone(&config), current));
        Ok(config)
    }
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, UpstreamTlsError>
{
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| UpstreamTlsError::Rustls(e.to_string()))
}

fn finish(mut config: ClientConfig) -> Arc<ClientConfig> {
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Arc::new(config)
}

fn verifying_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, UpstreamTlsError> {
    Ok(finish(
        builder()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// Shared by every non-verifying upstream (the config does not depend on the server name).
fn no_verify_config() -> Result<Arc<ClientConfig>, UpstreamTlsError> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if let Some(c) = CONFIG.get() {
        return Ok(Arc::clone(c));
    }
    let config = finish(
        builder()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert))
            .with_no_client_auth(),
    );
    Ok(Arc::clone(CONFIG.get_or_init(|| config)))
}

/// How a non-shared configuration checks the server's certificate.
enum Verifier {
    AcceptAny,
    Roots(RootCertStore),
}

/// A configuration of its own: a client certificate, no SNI, or in-memory CAs.
fn custom_config(
    verifier: Verifier,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    no_sni: bool,
) -> Result<Arc<ClientConfig>, UpstreamTlsError> {
    let b = match verifier {
        Verifier::AcceptAny => builder()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert)),
        Verifier::Roots(roots) => builder()?.with_root_certificates(roots),
    };
    let mut config = match client {
        Some((chain, key)) => {
            b.with_client_auth_cert(chain, key)
                .map_err(|e| UpstreamTlsError::ClientCert {
                    reason: e.to_string(),
                })?
        }
        None => b.with_no_client_auth(),
    };
    config.enable_sni = !no_sni;
    Ok(finish(config))
}

/// The system roots, loaded once per process.
fn system_roots() -> RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!("no system CA certificates found: verified upstream TLS will fail");
            }
            roots
        })
        .clone()
}

/// Verification against the system roots, shared by every such upstream.
fn system_roots_config() -> Result<Arc<ClientConfig>, UpstreamTlsError> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if let Some(c) = CONFIG.get() {
        return Ok(Arc::clone(c));
    }
    let config = verifying_config(system_roots())?;
    Ok(Arc::clone(CONFIG.get_or_init(|| config)))
}

fn roots_of(certs: Vec<CertificateDer<'static>>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err("no CA certificate in the PEM data".into());
    }
    Ok(roots)
}

fn load_ca(path: &Path) -> Result<RootCertStore, UpstreamTlsError> {
    let err = |reason: String| UpstreamTlsError::Ca {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(err("no CA certificate in the file".into()));
    }
    Ok(roots)
}

/// Accepts any certificate (verification off) but still checks the handshake signatures, so
/// the session is at least bound to the key in the presented certificate.
#[derive(Debug)]
struct AcceptAnyCert;

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The client side of one upstream TLS connection, shaped like the handler's upstream side:
/// ciphertext from the socket goes in with [`on_ciphertext`](Self::on_ciphertext) and comes
/// out as [`plaintext`](Self::plaintext); the handler's bytes go in with
/// [`encrypt`](Self::encrypt) and leave as [`pending_out`](Self::pending_out) /
/// [`sent`](Self::sent). The driver moves bytes; this does the rest.
#[derive(Debug)]
pub struct TlsClient {
    session: TlsSession,
    /// Ciphertext not yet written to the socket.
    cipher_out: Vec<u8>,
    /// Decrypted bytes not yet handed to the handler.
    plain: Vec<u8>,
    /// The transport's EOF was seen.
    eof: bool,
}

impl TlsClient {
    /// True once the handshake has completed (the upstream counts as connected).
    pub fn handshake_complete(&self) -> bool {
        self.session.handshake_complete()
    }

    /// True when the completed handshake resumed an earlier session with this upstream.
    pub fn resumed(&self) -> bool {
        self.session.resumed()
    }

    /// The negotiated ALPN protocol, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.session.alpn()
    }

    /// Takes ciphertext read from the socket; decrypted bytes collect in
    /// [`plaintext`](Self::plaintext). An error ends the connection (log it, then close).
    pub fn on_ciphertext(&mut self, data: &[u8]) -> Result<(), TlsError> {
        let mut rest = data;
        // Each round consumes at least one record or drains the plaintext that blocked it.
        for _ in 0..rest.len().saturating_add(2) {
            let used = self.session.feed(rest)?;
            rest = rest.get(used..).unwrap_or_default();
            self.session.read_plaintext(&mut self.plain)?;
            if rest.is_empty() {
                break;
            }
        }
        Ok(())
    }

    /// The socket reached end of file. A missing `close_notify` is treated as an ordinary
    /// end (many servers skip it; HTTP framing tells a cut response apart).
    pub fn on_eof(&mut self) {
        self.eof = true;
        self.session.feed_eof();
        let _ = self.session.read_plaintext(&mut self.plain);
    }

    /// True when no more plaintext will come: the peer sent `close_notify` or the transport
    /// ended.
    pub fn at_eof(&self) -> bool {
        self.eof || self.session.peer_closed()
    }

    /// Decrypted bytes waiting for the handler.
    pub fn plaintext(&self) -> &[u8] {
        &self.plain
    }

    /// Moves the waiting plaintext to the end of `out`.
    pub fn take_plaintext(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.plain);
        self.plain.clear();
    }

    /// The handler took `n` bytes of [`plaintext`](Self::plaintext).
    pub fn plaintext_taken(&mut self, n: usize) {
        self.plain.drain(..n.min(self.plain.len()));
    }

    /// Encrypts the handler's bytes; returns how many were accepted (less when the send buffer
    /// is full: write [`pending_out`](Self::pending_out) first).
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<usize, TlsError> {
        if plaintext.is_empty() {
            return Ok(0);
        }
        self.session.write_plaintext(plaintext)
    }

    /// Ciphertext to write to the socket (handshake, records, alerts).
    pub fn pending_out(&mut self) -> &[u8] {
        if self.session.wants_write() {
            self.session.write_ciphertext(&mut self.cipher_out);
        }
        &self.cipher_out
    }

    /// The socket took `n` bytes of [`pending_out`](Self::pending_out).
    pub fn sent(&mut self, n: usize) {
        self.cipher_out.drain(..n.min(self.cipher_out.len()));
    }

    /// True when ciphertext waits to be written.
    pub fn wants_write(&self) -> bool {
        !self.cipher_out.is_empty() || self.session.wants_write()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tls::{CertOrigin, CertResolver, CertStore, TlsAcceptor, TlsAcceptorConfig};

    struct Ca {
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
        pem: String,
    }

    fn ca() -> Ca {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A server session whose certificate names `name`, signed by `ca`.
    fn acceptor(ca: &Ca, name: &str) -> TlsAcceptor {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        let loaded = crate::proxy::tls::LoadedCert::from_pem(
            CertOrigin::Generated,
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
        )
        .unwrap();
        let resolver = CertResolver::new(CertStore::with_default(loaded));
        TlsAcceptor::new(&TlsAcceptorConfig::default(), resolver).unwrap()
    }

    /// Runs the handshake in memory; returns the client and server sessions.
    fn handshake(client: &mut TlsClient, server: &mut TlsSession) -> Result<(), TlsError> {
        for _ in 0..16 {
            let out = client.pending_out().to_vec();
            client.sent(out.len());
            if !out.is_empty() {
                let used = server.feed(&out)?;
                assert_eq!(used, out.len());
            }
            let mut back = Vec::new();
            server.write_ciphertext(&mut back);
            if !back.is_empty() {
                client.on_ciphertext(&back)?;
            }
            if client.handshake_complete() && server.handshake_complete() && !client.wants_write() {
                return Ok(());
            }
        }
        panic!("handshake did not finish");
    }

    fn ca_file(ca: &Ca) -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.path.join("ca.pem");
        std::fs::write(&path, &ca.pem).unwrap();
        (dir, path)
    }

    mod tempdir {
        /// A directory under the system temp dir, removed on drop.
        pub struct Dir {
            pub path: std::path::PathBuf,
        }
        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let path = std::env::temp_dir().join(format!(
                    "arc-upstream-tls-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&path).unwrap();
                Dir { path }
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }

    fn ep() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8443))
    }

    #[test]
    fn verified_handshake_sends_sni_and_alpn_then_carries_data_both_ways() {
        let ca = ca();
        let (_dir, path) = ca_file(&ca);
        let tls = UpstreamTls::new(&UpstreamTlsOptions {
            server_name: Some("app.internal".into()),
            verify: true,
            ca: Some(path),
            ..UpstreamTlsOptions::default()
        })
        .unwrap();
        let mut client = tls.connect(ep()).unwrap();
        let mut server = acceptor(&ca, "app.internal").accept().unwrap();
        handshake(&mut client, &mut server).unwrap();
        assert_eq!(server.sni(), Some("app.internal"));
        assert_eq!(client.alpn(), Some(ALPN_HTTP11));
        assert_eq!(server.alpn(), Some(ALPN_HTTP11));

        assert_eq!(client.encrypt(b"GET / HTTP/1.1\r\n\r\n").unwrap(), 18);
        let out = client.pending_out().to_vec();
        client.sent(out.len());
        server.feed(&out).unwrap();
        let mut got = Vec::new();
        server.read_plaintext(&mut got).unwrap();
        assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");

        server.write_plaintext(b"HTTP/1.1 200 OK\r\n").unwrap();
        let mut back = Vec::new();
        server.write_ciphertext(&mut back);
        client.on_ciphertext(&back).unwrap();
        assert_eq!(client.plaintext(), b"HTTP/1.1 200 OK\r\n");
        client.plaintext_taken(9);
        assert_eq!(client.plaintext(), b"200 OK\r\n");
        let mut rest = Vec::new();
        client.take_plaintext(&mut rest);
        assert_eq!(rest, b"200 OK\r\n");
        assert!(client.plaintext().is_empty());
        assert!(!client.at_eof());
        client.on_eof();
        assert!(client.at_eof());
    }

    #[test]
    fn verification_rejects_an_unknown_issuer_and_a_wrong_name() {
        let trusted = ca();
        let (_dir, path) = ca_file(&trusted);
        let tls = UpstreamTls::new(&UpstreamTlsOptions {
            server_name: Some("app.internal".into()),
            verify: true,
            ca: Some(path),
            ..UpstreamTlsOptions::default()
        })
        .unwrap();
        // Signed by another CA.
        let mut client = tls.connect(ep()).unwrap();
        let mut server = acceptor(&ca(), "app.internal").accept().unwrap();
        let err = handshake(&mut client, &mut server).unwrap_err();
        assert!(
            matches!(
                &err,
                TlsError::Handshake(rustls::Error::InvalidCertificate(_))
            ),
            "{err:?}"
        );
        // Right CA, wrong name.
        let mut client = tls.connect(ep()).unwrap();
        let mut server = acceptor(&trusted, "other.internal").accept().unwrap();
        let err = handshake(&mut client, &mut server).unwrap_err();
        assert!(
            matches!(
                &err,
                TlsError::Handshake(rustls::Error::InvalidCertificate(_))
            ),
            "{err:?}"
        );
    }

    #[test]
    fn verification_off_accepts_any_certificate_and_ip_endpoint_sends_no_sni() {
        let tls = UpstreamTls::insecure(None).unwrap();
        assert!(!tls.verifies());
        let mut client = tls.connect(ep()).unwrap();
        let mut server = acceptor(&ca(), "whatever.example").accept().unwrap();
        handshake(&mut client, &mut server).unwrap();
        assert_eq!(server.sni(), None, "an IP endpoint sends no SNI");

        let tls = UpstreamTls::insecure(Some("svc.ns.svc.cluster.local")).unwrap();
        let mut client = tls.connect(ep()).unwrap();
        let mut server = acceptor(&ca(), "whatever.example").accept().unwrap();
        handshake(&mut client, &mut server).unwrap();
        assert_eq!(server.sni(), Some("svc.ns.svc.cluster.local"));
    }

    #[test]
    fn settings_compare_by_value_and_bad_inputs_are_refused() {
        let a = UpstreamTls::insecure(Some("a.example")).unwrap();
        let b = UpstreamTls::insecure(Some("a.example")).unwrap();
        let c = UpstreamTls::insecure(Some("c.example")).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let hash = |t: &UpstreamTls| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            t.hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&a), hash(&b));

        assert!(matches!(
            UpstreamTls::insecure(Some("bad name!")),
            Err(UpstreamTlsError::BadServerName(_))
        ));
        let dir = tempdir::Dir::new();
        let empty = dir.path.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        for path in [empty, dir.path.join("missing.pem")] {
            let r = UpstreamTls::new(&UpstreamTlsOptions {
                server_name: None,
                verify: true,
                ca: Some(path),
                ..UpstreamTlsOptions::default()
            });
            assert!(matches!(r, Err(UpstreamTlsError::Ca { .. })), "{r:?}");
        }
    }

    /// A certificate for `name` signed by `ca`, as (chain PEM, key PEM).
    fn leaf(ca: &Ca, name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn in_memory(ca: &Ca, name: &str) -> UpstreamTlsOptions {
        UpstreamTlsOptions {
            server_name: Some(name.into()),
            verify: true,
            ca_pem: Some(Arc::from(ca.pem.as_bytes())),
            ..UpstreamTlsOptions::default()
        }
    }

    fn is_bad_cert(r: Result<(), TlsError>) -> bool {
        matches!(
            r,
            Err(TlsError::Handshake(rustls::Error::InvalidCertificate(_)))
        )
    }

    #[test]
    fn in_memory_ca_verifies_its_own_certificates_only() {
        let trusted = ca();
        let tls = UpstreamTls::new(&in_memory(&trusted, "app.internal")).unwrap();
        assert!(tls.verifies());
        let mut client = tls.connect(ep()).unwrap();
        let mut server = acceptor(&trusted, "app.internal").accept().unwrap();
        handshake(&mut client, &mut server).unwrap();
        assert_eq!(server.sni(), Some("app.internal"));

        let mut client = tls.connect(ep()).unwrap();
        let mut server = acceptor(&ca(), "app.internal").accept().unwrap();
        assert!(is_bad_cert(handshake(&mut client, &mut server)));
    }

    #[test]
    fn settings_of_unchanged_pem_are_kept_across_builds_and_their_sessions_resume() {
        let trusted = ca();
        let server = acceptor(&trusted, "app.internal");
        let connect = |tls: &UpstreamTls| {
            let mut client = tls.connect(ep()).unwrap();
            let mut session = server.accept().unwrap();
            handshake(&mut client, &mut session).unwrap();
            client.resumed()
        };
        // The same Secret contents in a fresh buffer, as every snapshot brings them.
        let opts = || UpstreamTlsOptions {
            ca_pem: Some(Arc::from(trusted.pem.as_bytes().to_vec())),
            ..in_memory(&trusted, "app.internal")
        };
        let mut cache = UpstreamTlsCache::default();
        cache.begin();
        let first = UpstreamTls::cached(&opts(), &mut cache).unwrap();
        cache.sweep();
        assert!(
            !connect(&first),
            "the first connection has nothing to resume"
        );

        cache.begin();
        let second = UpstreamTls::cached(&opts(), &mut cache).unwrap();
        cache.sweep();
        assert!(Arc::ptr_eq(&first.config, &second.config));
        assert_eq!(first, second);
        assert!(
            connect(&second),
            "the next build resumes the session of the last one"
        );
        assert_eq!(cache.len(), 1);

        // Without the cache every build starts with an empty session cache.
        let uncached = UpstreamTls::new(&opts()).unwrap();
        assert!(!Arc::ptr_eq(&first.config, &uncached.config));
        assert!(!connect(&uncached));

        // Another CA is other settings; a build without the old ones drops them.
        let other = ca();
        cache.begin();
        let changed = UpstreamTls::cached(&in_memory(&other, "app.internal"), &mut cache).unwrap();
        cache.sweep();
        assert!(!Arc::ptr_eq(&first.config, &changed.config));
        assert_eq!(cache.len(), 1);
        let mut client = changed.connect(ep()).unwrap();
        let mut session = server.accept().unwrap();
        assert!(is_bad_cert(handshake(&mut client, &mut session)));

        // A client pair is part of what is kept; a bad one is an error and keeps nothing.
        let (chain, key) = leaf(&trusted, "client.internal");
        let pair = |key: &str| UpstreamTlsOptions {
            client_cert: Some(ClientCertPem {
                chain: Arc::from(chain.as_bytes()),
                key: Arc::from(key.as_bytes()),
            }),
            ..opts()
        };
        cache.begin();
        let with_pair = UpstreamTls::cached(&pair(&key), &mut cache).unwrap();
        let again = UpstreamTls::cached(&pair(&key), &mut cache).unwrap();
        assert!(Arc::ptr_eq(&with_pair.config, &again.config));
        assert!(!Arc::ptr_eq(&with_pair.config, &first.config));
        let (_, other_key) = leaf(&trusted, "client.internal");
        assert!(matches!(
            UpstreamTls::cached(&pair(&other_key), &mut cache),
            Err(UpstreamTlsError::ClientCert { .. })
        ));
        cache.sweep();
        assert_eq!(cache.len(), 1);

        // A CA file is read again on every build: nothing of it is kept.
        let (_dir, path) = ca_file(&trusted);
        cache.begin();
        UpstreamTls::cached(
            &UpstreamTlsOptions {
                server_name: Some("app.internal".into()),
                verify: true,
                ca: Some(path),
                ..UpstreamTlsOptions::default()
            },
            &mut cache,
        )
        .unwrap();
        cache.sweep();
        assert!(cache.is_empty());
    }

    #[test]
    fn sni_off_sends_none_but_still_verifies_the_name() {
        let trusted = ca();
        let tls = UpstreamTls::new(&UpstreamTlsOptions {
            no_sni: true,
            ..in_memory(&trusted, "app.internal")
        })
        .unwrap();
        assert!(!tls.sends_sni());
        let mut client = tls.connect(ep()).unwrap();
        let mut server = acceptor(&trusted, "app.internal").accept().unwrap();
        handshake(&mut client, &mut server).unwrap();
        assert_eq!(server.sni(), None, "no SNI sent");

        let mut client = tls.connect(ep()).unwrap();
        let mut server = acceptor(&trusted, "other.internal").accept().unwrap();
        assert!(
            is_bad_cert(handshake(&mut client, &mut server)),
            "the name is checked without SNI"
        );

        // Verification off with SNI off: any certificate, no SNI.
        let tls = UpstreamTls::new(&UpstreamTlsOptions {
            server_name: Some("app.internal".into()),
            no_sni: true,
            ..UpstreamTlsOptions::default()
        })
        .unwrap();
        let mut client = tls.connect(ep()).unwrap();
        let mut server = acceptor(&ca(), "x.example").accept().unwrap();
        handshake(&mut client, &mut server).unwrap();
        assert_eq!(server.sni(), None);
    }

    /// A server that requires a client certificate signed by `client_ca`.
    fn mtls_server(server_ca: &Ca, client_ca: &Ca) -> TlsSession {
        let (chain, key) = leaf(server_ca, "app.internal");
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(client_ca.pem.as_bytes()).unwrap())
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap();
        TlsSession::new(Arc::new(config), DEFAULT_SEND_BUFFER_LIMIT).unwrap()
    }

    #[test]
    fn client_certificate_is_presented_when_configured() {
        let (server_ca, client_ca) = (ca(), ca());
        let (chain, key) = leaf(&client_ca, "client.internal");
        let cert = ClientCertPem {
            chain: Arc::from(chain.as_bytes()),
            key: Arc::from(key.as_bytes()),
        };
        for verify in [true, false] {
            let tls = UpstreamTls::new(&UpstreamTlsOptions {
                verify,
                client_cert: Some(cert.clone()),
                ..in_memory(&server_ca, "app.internal")
            })
            .unwrap();
            assert!(tls.has_client_cert());
            let mut client = tls.connect(ep()).unwrap();
            let mut server = mtls_server(&server_ca, &client_ca);
            handshake(&mut client, &mut server).unwrap();
        }
        // Without it the server refuses the handshake.
        let tls = UpstreamTls::new(&in_memory(&server_ca, "app.internal")).unwrap();
        let mut client = tls.connect(ep()).unwrap();
        let mut server = mtls_server(&server_ca, &client_ca);
        let r = (|| {
            handshake(&mut client, &mut server)?;
            // TLS 1.3: the server judges the client's certificate after the client finished.
            let mut back = Vec::new();
            server.write_ciphertext(&mut back);
            client.on_ciphertext(&back)?;
            let mut plain = Vec::new();
            server.read_plaintext(&mut plain)?;
            Ok::<_, TlsError>(())
        })();
        assert!(
            r.is_err(),
            "the server must refuse a client without certificate"
        );
    }

    #[test]
    fn in_memory_settings_compare_by_content_and_bad_pem_is_refused() {
        let (a, b) = (ca(), ca());
        let ta = UpstreamTls::new(&in_memory(&a, "x.internal")).unwrap();
        let ta2 = UpstreamTls::new(&in_memory(&a, "x.internal")).unwrap();
        let tb = UpstreamTls::new(&in_memory(&b, "x.internal")).unwrap();
        let no_sni = UpstreamTls::new(&UpstreamTlsOptions {
            no_sni: true,
            ..in_memory(&a, "x.internal")
        })
        .unwrap();
        assert_eq!(ta, ta2);
        assert_ne!(ta, tb);
        assert_ne!(ta, no_sni);
        let (chain, key) = leaf(&a, "c.internal");
        let with_cert = |chain: &str, key: &str| {
            UpstreamTls::new(&UpstreamTlsOptions {
                client_cert: Some(ClientCertPem {
                    chain: Arc::from(chain.as_bytes()),
                    key: Arc::from(key.as_bytes()),
                }),
                ..in_memory(&a, "x.internal")
            })
        };
        assert_ne!(ta, with_cert(&chain, &key).unwrap());

        let r = UpstreamTls::new(&UpstreamTlsOptions {
            ca_pem: Some(Arc::from(&b"not pem"[..])),
            ..in_memory(&a, "x.internal")
        });
        assert!(matches!(r, Err(UpstreamTlsError::CaPem { .. })), "{r:?}");
        let (_, other_key) = leaf(&a, "c.internal");
        let r = with_cert(&chain, &other_key);
        assert!(
            matches!(&r, Err(UpstreamTlsError::ClientCert { reason }) if reason.contains("does not match")),
            "{r:?}"
        );
        let r = with_cert("garbage", &key);
        assert!(
            matches!(r, Err(UpstreamTlsError::ClientCert { .. })),
            "{r:?}"
        );
        assert!(
            !format!(
                "{:?}",
                ClientCertPem {
                    chain: Arc::from(chain.as_bytes()),
                    key: Arc::from(key.as_bytes()),
                }
            )
            .contains("PRIVATE KEY")
        );
    }
}
