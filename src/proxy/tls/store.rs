//! Certificates and the immutable [`CertStore`] snapshot that maps SNI host names to them.
//!
//! A [`LoadedCert`] is one certificate chain with its private key, checked to belong together,
//! plus the facts the control API reports ([`CertInfo`]). It is built from PEM bytes (config
//! files now, Kubernetes `kubernetes.io/tls` Secrets later) or generated (the self-signed
//! default). A [`CertStore`] is built once per configuration change from loaded certificates
//! and never mutated; [`super::CertResolver`] swaps whole stores.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{provider, x509};

/// Largest PEM file read from disk; certificate chains and keys are a few KiB, so anything
/// bigger is a mistake (a wrong path), not a certificate.
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// Common name of the generated default certificate.
pub const DEFAULT_CERT_COMMON_NAME: &str = "Arc default certificate";

/// Where a certificate came from; named in every error and in [`CertInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertOrigin {
    /// PEM files from the config file (`tls.certificates[].cert` / `.key`).
    Files {
        /// Certificate chain file.
        cert: PathBuf,
        /// Private key file.
        key: PathBuf,
    },
    /// A `kubernetes.io/tls` Secret (`tls.crt` / `tls.key`).
    Secret {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
    },
    /// PEM bytes from elsewhere, described by the caller.
    Other(String),
    /// The self-signed certificate Arc generates for unmatched names.
    Generated,
}

impl CertOrigin {
    /// Names the certificate part of this origin (the file or the Secret key).
    fn cert_part(&self) -> String {
        match self {
            Self::Files { cert, .. } => cert.display().to_string(),
            Self::Secret { namespace, name } => format!("secret {namespace}/{name} (tls.crt)"),
            Self::Other(what) => format!("{what} (certificate)"),
            Self::Generated => "generated default certificate".to_owned(),
        }
    }

    /// Names the private key part of this origin.
    fn key_part(&self) -> String {
        match self {
            Self::Files { key, .. } => key.display().to_string(),
            Self::Secret { namespace, name } => format!("secret {namespace}/{name} (tls.key)"),
            Self::Other(what) => format!("{what} (private key)"),
            Self::Generated => "generated default certificate".to_owned(),
        }
    }
}

impl fmt::Display for CertOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Files { cert, key } => write!(f, "{} + {}", cert.display(), key.display()),
            Self::Secret { namespace, name } => write!(f, "secret {namespace}/{name}"),
            Self::Other(what) => f.write_str(what),
            Self::Generated => f.write_str("generated default certificate"),
        }
    }
}

/// Why a certificate could not be loaded or a store built. Each variant names the source
/// (file path or `secret namespace/name`) in `at`.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A PEM file could not be read.
    #[error("{at}: cannot read file: {error}")]
    Read {
        /// The file.
        at: String,
        /// The I/O error.
        #[source]
        error: std::io::Error,
    },
    /// A PEM file is larger than [`MAX_PEM_FILE_BYTES`].
    #[error("{at}: file is {size} bytes, more than the {MAX_PEM_FILE_BYTES} allowed for PEM")]
    TooLarge {
        /// The file.
        at: String,
        /// Its size.
        size: u64,
    },
    /// The PEM text itself is broken (bad base64, missing END line).
    #[error("{at}: malformed PEM: {detail}")]
    Pem {
        /// Where.
        at: String,
        /// What the PEM parser said.
        detail: String,
    },
    /// No `CERTIFICATE` block was found.
    #[error("{at}: no certificate found (expected a PEM \"CERTIFICATE\" block)")]
    NoCertificate {
        /// Where.
        at: String,
    },
    /// No private key block was found.
    #[error(
        "{at}: no private key found (expected PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\")"
    )]
    NoKey {
        /// Where.
        at: String,
    },
    /// A key was found but is of a kind Arc cannot use (encrypted, DSA, unknown curve...).
    #[error("{at}: unsupported private key type: {detail}")]
    UnsupportedKey {
        /// Where.
        at: String,
        /// What kind it is, as far as known.
        detail: String,
    },
    /// The private key does not belong to the first (leaf) certificate.
    #[error("{at}: private key does not match the certificate")]
    KeyMismatch {
        /// Where (both parts).
        at: String,
    },
    /// The leaf certificate is not valid DER X.509.
    #[error("{at}: malformed certificate: {detail}")]
    BadCertificate {
        /// Where.
        at: String,
        /// What is wrong.
        detail: String,
    },
    /// A host name given for a certificate is not a usable SNI name or wildcard.
    #[error("{at}: host {host:?} is not valid: {reason}")]
    BadHost {
        /// Which certificate the host was given for.
        at: String,
        /// The host as given.
        host: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A certificate entry has no host names, and its certificate has no DNS names to use.
    #[error("{at}: no host names given and the certificate has no DNS subject alternative names")]
    NoHosts {
        /// Which certificate.
        at: String,
    },
    /// The default certificate could not be generated.
    #[error("cannot generate the default certificate: {0}")]
    Generate(String),
}

/// What the control API reports about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Where it came from.
    pub origin: CertOrigin,
    /// Subject common name, if any.
    pub common_name: Option<String>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// Start of validity, Unix seconds (UTC).
    pub not_before_unix: i64,
    /// Expiry (`notAfter`), Unix seconds (UTC).
    pub not_after_unix: i64,
    /// Number of certificates in the chain served (leaf first).
    pub chain_len: usize,
}

impl CertInfo {
    /// Expiry as a [`SystemTime`].
    pub fn not_after(&self) -> SystemTime {
        unix_to_system_time(self.not_after_unix)
    }

    /// Start of validity as a [`SystemTime`].
    pub fn not_before(&self) -> SystemTime {
        unix_to_system_time(self.not_before_unix)
    }
}

fn unix_to_system_time(secs: i64) -> SystemTime {
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + magnitude
    } else {
        SystemTime::UNIX_EPOCH - magnitude
    }
}

/// One certificate chain with its matching private key, ready to hand to rustls.
/// Cheap to clone (two `Arc`s).
#[derive(Debug, Clone)]
pub struct LoadedCert {
    key: Arc<CertifiedKey>,
    info: Arc<CertInfo>,
}

impl LoadedCert {
    /// Loads a certificate chain (leaf first) and its private key (PKCS#8, PKCS#1 RSA or SEC1
    /// EC) from PEM bytes, checking that the key belongs to the leaf certificate.
    pub fn from_pem(
        origin: CertOrigin,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, CertError> {
        let chain = read_chain(&origin, cert_pem)?;
        let key = read_key(&origin, key_pem)?;
        Self::from_der(origin, chain, key)
    }

    /// Loads a certificate chain and key from two PEM files (they may be the same file).
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, CertError> {
        let cert_pem = read_pem_file(cert)?;
        let key_pem = read_pem_file(key)?;
        let origin = CertOrigin::Files {
            cert: cert.to_owned(),
            key: key.to_owned(),
        };
        Self::from_pem(origin, &cert_pem, &key_pem)
    }

    /// Builds from already-decoded DER parts.
    pub fn from_der(
        origin: CertOrigin,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, CertError> {
        let leaf = chain.first().ok_or_else(|| CertError::NoCertificate {
            at: origin.cert_part(),
        })?;
        let parsed = x509::parse(leaf).map_err(|e| CertError::BadCertificate {
            at: origin.cert_part(),
            detail: e.0.to_owned(),
        })?;
        let signing_key = provider().key_provider.load_private_key(key).map_err(|e| {
            CertError::UnsupportedKey {
                at: origin.key_part(),
                detail: e.to_string(),
            }
        })?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(CertError::KeyMismatch {
                    at: origin.to_string(),
                });
            }
            // The key cannot tell its public half; nothing to compare, rustls accepts that too.
            Err(rustls::Error::InconsistentKeys(_)) => {}
            Err(e) => {
                return Err(CertError::BadCertificate {
                    at: origin.cert_part(),
                    detail: e.to_string(),
                });
            }
        }
        let info = CertInfo {
            origin,
            common_name: parsed.common_name,
            dns_names: parsed.dns_names,
            ip_addresses: parsed.ip_addresses,
            not_before_unix: parsed.not_before,
            not_after_unix: parsed.not_after,
            chain_len: certified.cert.len(),
        };
        Ok(Self {
            key: Arc::new(certified),
            info: Arc::new(info),
        })
    }

    /// Generates the self-signed default certificate: ECDSA P-256, common name
    /// [`DEFAULT_CERT_COMMON_NAME`], no subject alternative names (it matches no name on
    /// purpose; clients that verify will reject it, as they should for an unknown host).
    pub fn generate_default() -> Result<Self, CertError> {
        let gen_err = |e: rcgen::Error| CertError::Generate(e.to_string());
        let key_pair =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
        let mut name = rcgen::DistinguishedName::new();
        name.push(rcgen::DnType::CommonName, DEFAULT_CERT_COMMON_NAME);
        params.distinguished_name = name;
        let cert = params.self_signed(&key_pair).map_err(gen_err)?;
        let key = PrivateKeyDer::Pkcs8(key_pair.serialize_der().into());
        Self::from_der(CertOrigin::Generated, vec![cert.der().clone()], key)
    }

    /// The rustls view: chain plus signing key.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.key
    }

    /// What the control API reports about this certificate.
    pub fn info(&self) -> &CertInfo {
        &self.info
    }
}

fn read_pem_file(path: &Path) -> Result<Vec<u8>, CertError> {
    let at = || path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|error| CertError::Read { at: at(), error })?;
    if meta.len() > MAX_PEM_FILE_BYTES {
        return Err(CertError::TooLarge {
            at: at(),
            size: meta.len(),
        });
    }
    std::fs::read(path).map_err(|error| CertError::Read { at: at(), error })
}

fn pem_error(at: String, e: pem::Error) -> CertError {
    CertError::Pem {
        at,
        detail: e.to_string(),
    }
}

fn read_chain(
    origin: &CertOrigin,
    cert_pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(origin.cert_part(), e))?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            at: origin.cert_part(),
        });
    }
    Ok(chain)
}

/// PEM labels of private keys that exist in the wild but that Arc cannot load.
const UNSUPPORTED_KEY_LABELS: &[&str] = &[
    "ENCRYPTED PRIVATE KEY",
    "DSA PRIVATE KEY",
    "OPENSSH PRIVATE KEY",
];

fn read_key(origin: &CertOrigin, key_pem: &[u8]) -> Result<PrivateKeyDer<'static>, CertError> {
    match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => {
            let unsupported = UNSUPPORTED_KEY_LABELS.iter().find(|label| {
                let begin = format!("-----BEGIN {label}-----");
                key_pem
                    .windows(begin.len())
                    .any(|window| window == begin.as_bytes())
            });
            Err(match unsupported {
                Some(label) => CertError::UnsupportedKey {
                    at: origin.key_part(),
                    detail: format!("\"{label}\" keys are not supported"),
                },
                None => CertError::NoKey {
                    at: origin.key_part(),
                },
            })
        }
        Err(e) => Err(pem_error(origin.key_part(), e)),
    }
}

/// A host name or `*.suffix` wildcard, lower-cased and without a trailing dot.
fn normalize_host(at: &str, host: &str) -> Result<HostPattern, CertError> {
    let bad = |reason| CertError::BadHost {
        at: at.to_owned(),
        host: host.to_owned(),
        reason,
    };
    let lowered = host.trim_end_matches('.').to_ascii_lowercase();
    let (wildcard, name) = match lowered.strip_prefix("*.") {
        Some(suffix) => (true, suffix),
        None => (false, lowered.as_str()),
    };
    if name.is_empty() {
        return Err(bad("empty name"));
    }
    if name.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(bad("empty label"));
        }
        if label.len() > 63 {
            return Err(bad("label longer than 63 characters"));
        }
        if label == "*" || label.contains('*') {
            return Err(bad(
                "a wildcard may only be the whole leftmost label (\"*.example.com\")",
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad(
                "only letters, digits, '-' and '_' are allowed in labels",
            ));
        }
    }
    Ok(match wildcard {
        true => HostPattern::Wildcard(name.to_owned()),
        false => HostPattern::Exact(name.to_owned()),
    })
}

enum HostPattern {
    Exact(String),
    /// `*.suffix`, stored as the suffix.
    Wildcard(String),
}

/// One certificate of a store with the host patterns it serves.
#[derive(Debug, Clone)]
pub struct StoreEntry {
    /// Host names and `*.` wildcards, normalised (lower case, no trailing dot).
    pub hosts: Vec<String>,
    /// The certificate.
    pub cert: LoadedCert,
}

/// Immutable SNI → certificate map: exact names first, then one-label wildcards, else the
/// default certificate. Lookups are ASCII case-insensitive and ignore a trailing dot.
#[derive(Debug, Clone)]
pub struct CertStore {
    exact: HashMap<Box<str>, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<Box<str>, Arc<CertifiedKey>>,
    default: LoadedCert,
    entries: Vec<StoreEntry>,
    /// Host patterns that an earlier entry already claimed (first one wins).
    shadowed: Vec<(String, CertOrigin)>,
}

impl CertStore {
    /// Starts a store whose unmatched names get `default`.
    pub fn builder(default: LoadedCert) -> CertStoreBuilder {
        CertStoreBuilder {
            store: CertStore {
                exact: HashMap::new(),
                wildcard: HashMap::new(),
                default,
                entries: Vec::new(),
                shadowed: Vec::new(),
            },
        }
    }

    /// A store holding only a default certificate.
    pub fn with_default(default: LoadedCert) -> Self {
        Self::builder(default).build()
    }

    /// The certificate for an SNI name: exact match, else `*.` match on everything after the
    /// first label, else none.
    pub fn lookup(&self, server_name: &str) -> Option<&Arc<CertifiedKey>> {
        let needs_folding =
            server_name.ends_with('.') || server_name.bytes().any(|b| b.is_ascii_uppercase());
        if needs_folding {
            let folded = server_name.trim_end_matches('.').to_ascii_lowercase();
            self.lookup_folded(&folded)
        } else {
            self.lookup_folded(server_name)
        }
    }

    fn lookup_folded(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        if let Some(key) = self.exact.get(name) {
            return Some(key);
        }
        let (first, suffix) = name.split_once('.')?;
        if first.is_empty() {
            return None;
        }
        self.wildcard.get(suffix)
    }

    /// The certificate to present for a handshake: the SNI match, else the default.
    pub fn resolve(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        server_name
            .and_then(|name| self.lookup(name))
            .unwrap_or(&self.default.key)
    }

    /// The default certificate.
    pub fn default_cert(&self) -> &LoadedCert {
        &self.default
    }

    /// The entries, in the order they were added.
    pub fn entries(&self) -> &[StoreEntry] {
        &self.entries
    }

    /// Host patterns that were not installed because an earlier entry claimed them, with the
    /// origin of the losing certificate.
    pub fn shadowed(&self) -> &[(String, CertOrigin)] {
        &self.shadowed
    }

    /// Number of entries (the default certificate is not counted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when only the default certificate is present.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Builds a [`CertStore`]; the first entry to claim a host pattern wins.
#[derive(Debug)]
pub struct CertStoreBuilder {
    store: CertStore,
}

impl CertStoreBuilder {
    /// Adds a certificate for `hosts` (exact names or `*.suffix`). With no hosts, the
    /// certificate's DNS subject alternative names are used. Fails without changing the builder
    /// when a host is invalid.
    pub fn add<S: AsRef<str>>(
        &mut self,
        hosts: &[S],
        cert: LoadedCert,
    ) -> Result<&mut Self, CertError> {
        let at = cert.info.origin.to_string();
        let given: Vec<&str> = if hosts.is_empty() {
            cert.info.dns_names.iter().map(String::as_str).collect()
        } else {
            hosts.iter().map(AsRef::as_ref).collect()
        };
        if given.is_empty() {
            return Err(CertError::NoHosts { at });
        }
        let patterns = given
            .iter()
            .map(|host| normalize_host(&at, host))
            .collect::<Result<Vec<_>, _>>()?;
        let mut installed = Vec::with_capacity(patterns.len());
        for pattern in patterns {
            let (map, name, shown) = match pattern {
                HostPattern::Exact(name) => {
                    let shown = name.clone();
                    (&mut self.store.exact, name, shown)
                }
                HostPattern::Wildcard(suffix) => {
                    let shown = format!("*.{suffix}");
                    (&mut self.store.wildcard, suffix, shown)
                }
            };
            match map.entry(name.into_boxed_str()) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    self.store
                        .shadowed
                        .push((shown.clone(), cert.info.origin.clone()));
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(Arc::clone(&cert.key));
                }
            }
            installed.push(shown);
        }
        self.store.entries.push(StoreEntry {
            hosts: installed,
            cert,
        });
        Ok(self)
    }

    /// Loads PEM bytes (see [`LoadedCert::from_pem`]) and adds them for `hosts`.
    pub fn add_pem<S: AsRef<str>>(
        &mut self,
        hosts: &[S],
        origin: CertOrigin,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<&mut Self, CertError> {
        let cert = LoadedCert::from_pem(origin, cert_pem, key_pem)?;
        self.add(hosts, cert)
    }

    /// Loads PEM files (see [`LoadedCert::from_files`]) and adds them for `hosts`: one
    /// `tls.certificates[]` entry of the config file.
    pub fn add_files<S: AsRef<str>>(
        &mut self,
        hosts: &[S],
        cert: &Path,
        key: &Path,
    ) -> Result<&mut Self, CertError> {
        let cert = LoadedCert::from_files(cert, key)?;
        self.add(hosts, cert)
    }

    /// Finishes the store.
    pub fn build(self) -> CertStore {
        self.store
    }
}
